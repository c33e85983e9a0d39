"""The API reference (docs/reference.md, rendered by mkdocstrings) covers every public name, and
the examples in docstrings, which it shows, run and print what they claim."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import re
from pathlib import Path

import pytest

import aioflow as af

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "docs" / "reference.md"


def documented() -> set[str]:
    return set(re.findall(r"^::: ([\w.]+)$", REFERENCE.read_text(), flags=re.MULTILINE))


def test_every_public_name_is_in_the_api_reference() -> None:
    names = documented()
    missing = [n for n in af.__all__ if n != "__version__" and f"aioflow.{n}" not in names]
    assert missing == []


def test_every_reference_entry_names_something_that_exists() -> None:
    for path in documented():
        module, _, attr = path.rpartition(".")
        try:
            importlib.import_module(path)
        except ImportError:
            assert hasattr(importlib.import_module(module), attr), path


def modules_with_examples() -> list[str]:
    submodules = pkgutil.walk_packages(af.__path__, "aioflow.")
    names = ["aioflow", *sorted(m.name for m in submodules if not m.name.endswith("__main__"))]
    finder = doctest.DocTestFinder()
    return [
        name
        for name in names
        if any(t.examples for t in finder.find(importlib.import_module(name)))
    ]


MODULES = modules_with_examples()


def test_docstring_examples_are_found() -> None:
    # Guards the test below: a broken finder would otherwise leave nothing to run.
    assert {"aioflow", "aioflow.block", "aioflow.pipeline", "aioflow.loop"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str) -> None:
    module = importlib.import_module(name)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in doctest.DocTestFinder().find(module):
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.attempted > 0
    assert result.failed == 0


def test_every_docs_page_is_in_the_site_navigation() -> None:
    nav = (ROOT / "mkdocs.yml").read_text()
    listed = set(re.findall(r":\s*([\w/-]+\.md)\s*$", nav, flags=re.MULTILINE))
    pages = {p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md")}
    assert sorted(pages - listed) == []
