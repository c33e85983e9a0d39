"""Every module imports alone in a fresh interpreter, and ``import aioflow`` stays light."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import aioflow

PACKAGE_DIR = Path(aioflow.__file__).parent
REPO_ROOT = PACKAGE_DIR.parent


def _module_names() -> list[str]:
    names = []
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = path.relative_to(REPO_ROOT).with_suffix("").parts
        if "__pycache__" in parts:
            continue
        if parts[-1] == "__main__":
            continue  # importing it runs the CLI, by design
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names.append(".".join(parts))
    return names


MODULES = _module_names()


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=30,
        check=False,
    )


def test_the_core_modules_are_found() -> None:
    expected = {
        "aioflow",
        "aioflow.block",
        "aioflow._engine.channel",
        "aioflow.graph",
        "aioflow._engine.runner",
    }
    assert expected <= set(MODULES)


@pytest.mark.parametrize("module", MODULES)
def test_module_imports_alone_in_a_fresh_interpreter(module: str) -> None:
    proc = _python(f"import {module}")
    if proc.returncode != 0:
        # The one acceptable failure: an optional extra that is not installed, reported as an
        # ImportError that says how to install it.
        last_line = proc.stderr.strip().splitlines()[-1]
        assert "ImportError" in last_line or "ModuleNotFoundError" in last_line, proc.stderr
        assert "pip install aioflow[" in last_line, proc.stderr


def test_import_aioflow_does_not_import_optional_backends() -> None:
    proc = _python(
        "import sys, aioflow\n"
        "print(sorted(m for m in ('redis', 'onnxruntime', 'cv2') if m in sys.modules))"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_import_aioflow_imports_no_extra_subpackage() -> None:
    proc = _python(
        "import sys, aioflow\n"
        "extras = ('aioflow.io', 'aioflow.infer', 'aioflow.transport', 'aioflow.cli')\n"
        "print(sorted(m for m in sys.modules if m.startswith(extras)))"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


SUBPACKAGES = ("io", "infer", "transport", "observe")


def _imported_modules(path: Path) -> set[str]:
    """Every module a file imports, lazy imports inside functions included, as absolute names."""
    import ast

    package = ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts[:-1])
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            found.add(name)
            found.update(f"{name}.{alias.name}" for alias in node.names)
    return found


@pytest.mark.parametrize("sub", SUBPACKAGES)
def test_a_subpackage_imports_neither_its_siblings_nor_the_cli(sub: str) -> None:
    """DESIGN's house rule: io/, infer/, transport/ and observe/ build on the core's public API
    and do not import one another; nothing imports ``cli``."""
    banned = tuple(f"aioflow.{other}" for other in (*SUBPACKAGES, "cli") if other != sub)
    offenders = {
        str(path.relative_to(REPO_ROOT)): sorted(
            m for m in _imported_modules(path) if m == banned or m.startswith(banned)
        )
        for path in sorted((PACKAGE_DIR / sub).rglob("*.py"))
    }
    assert {p: ms for p, ms in offenders.items() if ms} == {}
