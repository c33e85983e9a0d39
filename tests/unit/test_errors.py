"""Errors: the hierarchy, what BlockError says, pickling, and item summaries."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import aioflow as af
from aioflow.errors import describe, summarize


@pytest.mark.parametrize(
    "error",
    [af.GraphError, af.BlockError, af.ItemDropped, af.ExecutorError, af.PipelineClosed],
)
def test_every_error_derives_from_aioflow_error(error: type[Exception]) -> None:
    assert issubclass(error, af.AioflowError)
    assert issubclass(af.AioflowError, Exception)


def test_errors_are_distinct() -> None:
    errors = [af.GraphError, af.BlockError, af.ItemDropped, af.ExecutorError, af.PipelineClosed]
    for error in errors:
        for other in errors:
            if error is not other:
                assert not issubclass(error, other)


def test_block_error_str_names_block_item_and_attempt() -> None:
    err = af.BlockError("resize", "ValueError: bad frame", item="Frame(7)", attempt=3)
    text = str(err)
    assert "'resize'" in text
    assert "ValueError: bad frame" in text
    assert "Frame(7)" in text
    assert "attempt 3" in text
    assert err.block == "resize"
    assert err.item == "Frame(7)"
    assert err.attempt == 3
    assert err.phase == "process"


def test_block_error_str_of_a_first_attempt_does_not_mention_attempts() -> None:
    text = str(af.BlockError("resize", "boom", item="1"))
    assert "'resize'" in text
    assert "attempt" not in text


def test_block_error_str_of_a_setup_failure_names_the_phase() -> None:
    text = str(af.BlockError("model", "OSError: no such file", phase="setup"))
    assert "'model'" in text
    assert "setup" in text
    assert "OSError: no such file" in text


def test_block_error_pickles() -> None:
    err = af.BlockError("detect", "RuntimeError: cuda", item="ndarray(...)", attempt=2)
    copy = pickle.loads(pickle.dumps(err))
    assert type(copy) is af.BlockError
    assert (copy.block, copy.message, copy.item, copy.attempt, copy.phase) == (
        err.block,
        err.message,
        err.item,
        err.attempt,
        err.phase,
    )
    assert str(copy) == str(err)


def test_block_error_of_a_phase_pickles() -> None:
    err = af.BlockError("model", "OSError: gone", phase="teardown")
    copy = pickle.loads(pickle.dumps(err))
    assert copy.phase == "teardown"
    assert copy.item is None
    assert str(copy) == str(err)


def test_item_dropped_pickles() -> None:
    err = af.ItemDropped("stale", "detect")
    copy = pickle.loads(pickle.dumps(err))
    assert type(copy) is af.ItemDropped
    assert (copy.reason, copy.block) == ("stale", "detect")
    assert str(copy) == str(err)
    assert "'detect'" in str(err)
    assert "stale" in str(err)


async def test_a_failing_block_raises_a_group_of_block_errors_with_the_cause() -> None:
    boom = ValueError("bad value 3")

    @af.block
    async def picky(x: int) -> int:
        if x == 3:
            raise boom
        return x

    with pytest.raises(ExceptionGroup) as info:
        await af.Pipeline(picky).run(range(5))
    errors = info.value.exceptions
    assert len(errors) == 1
    err = errors[0]
    assert isinstance(err, af.BlockError)
    assert err.block == "picky"
    assert err.item == "3"
    assert err.__cause__ is boom
    assert "'picky'" in str(err)
    assert "bad value 3" in str(err)

    copy = pickle.loads(pickle.dumps(err))
    assert str(copy) == str(err)


# -- summarize --------------------------------------------------------------------------------


def test_summarize_describes_an_array_by_shape_and_dtype() -> None:
    frame = np.zeros((480, 640, 3), dtype=np.uint8)
    text = summarize(frame)
    assert "(480, 640, 3)" in text
    assert "uint8" in text
    assert "ndarray" in text
    assert len(text) < 80


def test_summarize_does_not_print_array_values() -> None:
    arr = np.arange(10_000, dtype=np.float32).reshape(100, 100) + 12345.5
    text = summarize(arr)
    assert "12345" not in text
    assert "float32" in text
    assert "(100, 100)" in text


@pytest.mark.parametrize(
    "item",
    [
        "x" * 10_000,
        b"\x00" * 10_000,
        list(range(10_000)),
        tuple(range(10_000)),
        {i: str(i) * 100 for i in range(1_000)},
        [[i] * 1000 for i in range(1000)],
        [[[["x" * 100] * 10] * 10] * 10] * 10,
    ],
)
def test_summarize_truncates_long_things(item: object) -> None:
    # The summary goes into every BlockError and log record: it must stay about one line long,
    # however big or deep the item is.
    text = summarize(item)
    assert len(text) <= 300
    assert "..." in text


def test_summarize_shows_short_things_whole() -> None:
    assert summarize(42) == repr(42)
    assert summarize("cat") == repr("cat")
    assert summarize([1, 2]) == repr([1, 2])


def test_summarize_survives_a_broken_repr() -> None:
    class Broken:
        def __repr__(self) -> str:
            raise RuntimeError("no repr for you")

    text = summarize(Broken())
    assert "Broken" in text


class _AttributesRaise:
    """An item (a proxy, a lazy record) whose attribute lookups raise something other than
    AttributeError."""

    def __getattr__(self, name: str) -> object:
        msg = f"no {name} here"
        raise RuntimeError(msg)

    def __repr__(self) -> str:
        return "Proxy()"


class _ShapeNotASequence:
    shape = 5  # something else's "shape": not a tuple of ints
    dtype = "weird"

    def __repr__(self) -> str:
        return "Odd()"


@pytest.mark.parametrize(
    ("item", "expected"),
    [(_AttributesRaise(), "Proxy()"), (_ShapeNotASequence(), "Odd()")],
    ids=["getattr_raises", "shape_not_a_sequence"],
)
def test_summarize_survives_attributes_that_are_not_an_arrays(item: object, expected: str) -> None:
    assert summarize(item) == expected


def test_summarize_survives_a_broken_repr_and_broken_attributes() -> None:
    class Hopeless(_AttributesRaise):
        def __repr__(self) -> str:
            raise RuntimeError("no repr either")

    assert "Hopeless" in summarize(Hopeless())


class _StrRaises(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str for you")


def test_describe_survives_an_exception_whose_str_raises() -> None:
    text = describe(_StrRaises())
    assert text.startswith("_StrRaises: ")
    assert "str() raised RuntimeError" in text
