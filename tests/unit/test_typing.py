"""What type checkers see of aioflow, checked by running them.

``tests/typing/check_types.py`` holds the typing contract: ``assert_type`` lines for the types users
get, and deliberate mistakes marked ``# type: ignore[code]``. Both checkers run with unused ignores
as errors, so a mistake that stops being reported fails here as surely as a wrong type.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHECK = ROOT / "tests" / "typing" / "check_types.py"
BIN = Path(sys.executable).parent


def run(*args: str | Path, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def pyright() -> str:
    found = shutil.which("pyright", path=str(BIN)) or shutil.which("pyright")
    assert found is not None, "pyright is a dev dependency: pip install -e '.[dev]'"
    return found


@pytest.mark.timeout(240)
def test_typing_contract_holds_under_mypy_strict(tmp_path: Path) -> None:
    done = run(
        sys.executable,
        "-m",
        "mypy",
        "--strict",
        "--warn-unused-ignores",
        "--cache-dir",
        tmp_path / "cache",
        CHECK,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Success: no issues found in 1 source file" in done.stdout


@pytest.mark.timeout(240)
def test_typing_contract_holds_under_pyright() -> None:
    done = run(pyright(), "-p", ROOT / "tests" / "typing" / "pyrightconfig.json", cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 errors" in done.stdout


USER_SCRIPT = """\
from typing import assert_type

import aioflow as af


@af.block
async def inc(x: int) -> int:
    return x + 1


pipe = inc >> af.Pipeline(lambda x: x)
assert_type(af.Pipeline(inc), af.Pipeline[int, int])
assert_type(af.run(af.Pipeline(inc).run([1, 2])), list[int])
"""


def makefile_install_arguments() -> list[str]:
    """The arguments of the Makefile's dev install (``pip install ...``), as ``make`` runs it."""
    for line in (ROOT / "Makefile").read_text().splitlines():
        if "pip install" in line and "-e '.[dev]'" in line:
            words = shlex.split(line.split("pip install", 1)[1])
            editable = {"$(EDITABLE)": "--config-settings editable_mode=compat"}
            text = " ".join(editable.get(w, w) for w in words)
            assert "$(" not in text, f"a Makefile variable the test does not know: {text}"
            return shlex.split(text)
    raise AssertionError("the Makefile has no `pip install -e '.[dev]'` line")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_script_outside_the_repo_finds_aioflow_types_through_the_makefile_install(
    tmp_path: Path,
) -> None:
    # A fresh environment holding aioflow as `make` installs it (without its dependencies: the
    # point is how a type checker finds aioflow itself).
    venv = tmp_path / "venv"
    made = run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    args = makefile_install_arguments()
    installed = run(
        sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", *args, cwd=ROOT
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr

    user = tmp_path / "project"
    user.mkdir()
    (user / "script.py").write_text(textwrap.dedent(USER_SCRIPT))
    mypy = run(
        sys.executable,
        "-m",
        "mypy",
        "--strict",
        "--no-incremental",
        "--python-executable",
        python,
        "script.py",
        cwd=user,
    )
    assert "Cannot find implementation or library stub" not in mypy.stdout, mypy.stdout
    assert mypy.returncode == 0, mypy.stdout + mypy.stderr

    checked = run(pyright(), "--pythonpath", python, "script.py", cwd=user)
    assert "could not be resolved" not in checked.stdout, checked.stdout
    assert checked.returncode == 0, checked.stdout + checked.stderr
