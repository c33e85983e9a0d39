"""The public surface: ``aioflow.__all__`` is sorted, complete and honest."""

from __future__ import annotations

import inspect

import pytest

import aioflow as af


def test_all_is_a_sorted_tuple_without_duplicates() -> None:
    assert isinstance(af.__all__, tuple)
    assert list(af.__all__) == sorted(af.__all__)
    assert len(set(af.__all__)) == len(af.__all__)


def test_every_name_in_all_exists() -> None:
    missing = [name for name in af.__all__ if not hasattr(af, name)]
    assert missing == []


def test_every_public_class_and_function_is_in_all() -> None:
    public = sorted(
        name
        for name, value in vars(af).items()
        if not name.startswith("_")
        and (inspect.isclass(value) or inspect.isfunction(value))
        and getattr(value, "__module__", "").split(".")[0] == "aioflow"
    )
    assert public  # the check below must have something to check
    missing = [name for name in public if name not in af.__all__]
    assert missing == []


@pytest.mark.parametrize(
    "name",
    [
        "block",
        "Block",
        "Pipeline",
        "branch",
        "Batch",
        "Retry",
        "run",
        "AioflowError",
        "GraphError",
        "BlockError",
        "ItemDropped",
        "ExecutorError",
        "BlockStatistics",
        "Bottleneck",
        "LatencyHistogram",
    ],
)
def test_design_names_are_exported(name: str) -> None:
    assert name in af.__all__
    assert getattr(af, name) is not None


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from aioflow import *", namespace)
    namespace.pop("__builtins__")
    assert set(namespace) == set(af.__all__)
