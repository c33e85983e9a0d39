"""Every ```python block in README.md and docs/*.md runs as a program and exits with status 0.

The docs promise that each Python example is complete and runnable, and each one asserts what it
claims, so a change in behaviour that makes the docs wrong fails here. A block goes to a file of
its own and runs in a fresh interpreter (``sys.executable``) with the repository root as the
working directory and first on ``sys.path``, so it uses this checkout of aioflow.

A block whose fence is directly preceded by the line ``<!-- no-run -->`` is only compiled, not run:
keep that for examples that cannot run here (one that needs a network service or workers on other
machines), never for a slow or failing one.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NO_RUN = "<!-- no-run -->"
TIMEOUT_S = 60
_OPEN = re.compile(r"^(?P<indent>[ \t]*)```python[ \t]*$")
_CLOSE = re.compile(r"^[ \t]*```[ \t]*$")


@dataclass(frozen=True)
class CodeBlock:
    path: str  # relative to the repository root
    index: int  # 1-based among the file's python blocks
    line: int  # 1-based line of the opening fence
    code: str
    run: bool

    @property
    def label(self) -> str:
        return f"{self.path} block {self.index} (line {self.line})"


def extract_blocks(text: str, path: str) -> list[CodeBlock]:
    """The ```python blocks of a Markdown text, in order.

    Raises:
        ValueError: a ```python fence is never closed (the rest of the page would be code).
    """
    lines = text.splitlines()
    blocks: list[CodeBlock] = []
    i = 0
    while i < len(lines):
        opening = _OPEN.match(lines[i])
        if opening is None:
            i += 1
            continue
        indent = len(opening.group("indent"))
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines) and not _CLOSE.match(lines[i]):
            body.append(lines[i][indent:] if lines[i][:indent].isspace() else lines[i])
            i += 1
        if i == len(lines):
            msg = f"{path}: the ```python fence on line {start + 1} is never closed"
            raise ValueError(msg)
        previous = lines[start - 1].strip() if start > 0 else ""
        blocks.append(
            CodeBlock(
                path=path,
                index=len(blocks) + 1,
                line=start + 1,
                code="\n".join(body) + "\n",
                run=previous != NO_RUN,
            )
        )
        i += 1
    return blocks


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def collect() -> list[CodeBlock]:
    blocks: list[CodeBlock] = []
    for file in doc_files():
        if file.exists():
            rel = file.relative_to(ROOT).as_posix()
            blocks.extend(extract_blocks(file.read_text(encoding="utf-8"), rel))
    return blocks


BLOCKS = collect()


def _params(*, run: bool) -> list[object]:
    return [pytest.param(b, id=f"{b.path}#{b.index}") for b in BLOCKS if b.run is run]


def _numbered(code: str) -> str:
    return "\n".join(f"{n:4d} | {line}" for n, line in enumerate(code.splitlines(), 1))


def _tail(text: str, limit: int = 4000) -> str:
    return text if len(text) <= limit else "...\n" + text[-limit:]


@pytest.mark.timeout(TIMEOUT_S + 30)
@pytest.mark.parametrize("blk", _params(run=True))
def test_python_block_runs(blk: CodeBlock, tmp_path: Path) -> None:
    stem = re.sub(r"\W", "_", Path(blk.path).stem)
    script = tmp_path / f"{stem}_block{blk.index}.py"
    script.write_text(blk.code, encoding="utf-8")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    try:
        proc = subprocess.run(
            [sys.executable, str(script)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(
            f"{blk.label} did not finish within {TIMEOUT_S} s\n"
            f"--- code ---\n{_numbered(blk.code)}\n"
            f"--- stdout ---\n{_tail(str(exc.stdout or ''))}\n"
            f"--- stderr ---\n{_tail(str(exc.stderr or ''))}",
            pytrace=False,
        )
    if proc.returncode != 0:
        pytest.fail(
            f"{blk.label} exited with status {proc.returncode}\n"
            f"--- code ---\n{_numbered(blk.code)}\n"
            f"--- stdout ---\n{_tail(proc.stdout)}\n"
            f"--- stderr ---\n{_tail(proc.stderr)}",
            pytrace=False,
        )


@pytest.mark.parametrize("blk", _params(run=False))
def test_python_block_marked_no_run_compiles(blk: CodeBlock) -> None:
    # An example that cannot run here (it needs a service on another machine) is still code a
    # reader copies: it must at least be valid Python (top-level await allowed, as in a REPL).
    import ast

    try:
        compile(blk.code, blk.label, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    except SyntaxError as exc:
        pytest.fail(f"{blk.label} is not valid Python: {exc}\n{_numbered(blk.code)}", pytrace=False)


def test_docs_have_python_blocks() -> None:
    # Guards the test above: a broken extractor or a moved docs folder would otherwise make it
    # pass by running nothing.
    assert (ROOT / "docs" / "index.md").exists(), "docs/index.md is missing"
    per_file = {b.path for b in BLOCKS}
    assert "README.md" in per_file, "no ```python block found in README.md"
    assert any(p.startswith("docs/") for p in per_file), "no ```python block found in docs/"
    skipped = [b.label for b in BLOCKS if not b.run]
    assert len(skipped) <= len(BLOCKS) // 4, f"too many blocks marked {NO_RUN}: {skipped}"


def test_extract_blocks_finds_fences_and_markers() -> None:
    text = "\n".join(
        [
            "# Title",
            "```python",
            "print(1)",
            "```",
            "```sh",
            "make test",
            "```",
            NO_RUN,
            "```python",
            "import socket",
            "```",
            "- a list item:",
            "  ```python",
            "  x = 2",
            "  ```",
        ]
    )
    blocks = extract_blocks(text, "page.md")
    assert [(b.index, b.line, b.code, b.run) for b in blocks] == [
        (1, 2, "print(1)\n", True),
        (2, 9, "import socket\n", False),
        (3, 13, "x = 2\n", True),
    ]
    with pytest.raises(ValueError, match="line 2 is never closed"):
        extract_blocks("text\n```python\nprint(1)\n", "broken.md")


# -- docs/guarantees.md cites tests that exist --------------------------------------------------

_CITED = re.compile(r"`(test_\w+)`")
_DEFINED = re.compile(r"^\s*(?:async\s+)?def\s+(test_\w+)\s*\(", re.MULTILINE)


def defined_tests() -> set[str]:
    """The name of every test function under tests/."""
    names: set[str] = set()
    for path in (ROOT / "tests").rglob("test_*.py"):
        names.update(_DEFINED.findall(path.read_text(encoding="utf-8")))
    return names


def test_every_test_cited_in_the_guarantees_exists() -> None:
    text = (ROOT / "docs" / "guarantees.md").read_text(encoding="utf-8")
    cited = _CITED.findall(text)
    # Guards the check below: a changed citation style would otherwise make it pass on nothing.
    assert len(cited) >= 50, f"only {len(cited)} tests cited in docs/guarantees.md"
    missing = sorted(set(cited) - defined_tests())
    assert missing == [], f"docs/guarantees.md cites tests that do not exist: {missing}"


def test_the_guarantees_are_linked_from_the_index_and_the_readme() -> None:
    for page in ("docs/index.md", "README.md"):
        assert "guarantees.md" in (ROOT / page).read_text(encoding="utf-8"), page
