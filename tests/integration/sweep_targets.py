"""What ``test_fault_sweep`` sends to worker processes: hostile items, the exceptions user code
raises, and the stage functions and blocks (a spawned worker imports them by name).

An item carries its fault: a :class:`Marker` names what a stage does with it (every stage
that sees it, in every executor), so one item behaves the same wherever it lands.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import aioflow as af


class StrRaises(Exception):
    """A user's exception whose ``__str__`` raises: the message builder must cope."""

    def __str__(self) -> str:
        msg = "no str for you"
        raise RuntimeError(msg)


class NeedsTwo(Exception):
    """A user's exception that pickles but cannot be unpickled (its ``__init__`` takes two
    arguments, ``args`` holds one): from a worker process it arrives as an ExecutorError."""

    def __init__(self, a: object, b: object) -> None:
        super().__init__(f"{a}/{b}")


class ReprRaises:
    """A hostile item: ``repr``, ``str`` and every missing attribute raise."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __repr__(self) -> str:
        msg = "no repr for you"
        raise RuntimeError(msg)

    __str__ = __repr__

    def __getattr__(self, name: str) -> Any:
        msg = f"no attribute {name!r} here"
        raise RuntimeError(msg)

    def __eq__(self, other: object) -> bool:
        return type(other) is ReprRaises and other.n == self.n

    def __hash__(self) -> int:
        return hash(self.n)


class ReduceRaises:
    """A hostile item that cannot be pickled: its ``__reduce__`` raises (a process block
    cannot send it to a worker). Compared by its number, so that it can be found again."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __reduce__(self) -> Any:
        msg = "no pickling for you"
        raise RuntimeError(msg)

    def __eq__(self, other: object) -> bool:
        return type(other) is ReduceRaises and other.n == self.n

    def __hash__(self) -> int:
        return hash(self.n)


class DelRaises:
    """A hostile item whose ``__del__`` raises (Python reports it to ``sys.unraisablehook``,
    wherever the last reference goes)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __del__(self) -> None:
        msg = f"no deleting item {self.n} quietly"
        raise RuntimeError(msg)

    def __eq__(self, other: object) -> bool:
        return type(other) is DelRaises and other.n == self.n

    def __hash__(self) -> int:
        return hash(self.n)


@dataclass(frozen=True)
class Marker:
    """An item that makes every stage seeing it do ``what``:

    - ``"raise"``: ValueError;
    - ``"str_raises"``: :class:`StrRaises`;
    - ``"needs_two"``: :class:`NeedsTwo`;
    - ``"bad_notes"``: a ValueError whose ``__notes__`` is not a list;
    - ``"cancel"``: a CancelledError of the user's own (an item failure);
    - ``"die"``: a worker process kills itself with SIGKILL (other stages pass it on);
    - ``"wrong_batch"``: a batch holding it returns one result too few;
    - ``"gen_raise"``: a generator raises after its first output (other stages: ValueError).
    """

    what: str
    n: int


#: The exceptions a stage raises for the markers (the causes a BlockError may carry).
FAULTS = (
    "raise",
    "str_raises",
    "needs_two",
    "bad_notes",
    "cancel",
    "die",
    "wrong_batch",
    "gen_raise",
)


def act(x: Any, *, in_process: bool = False, generator: bool = False) -> Any:
    """What a stage does with ``x``: raise what a marker asks for, else return ``x``."""
    if type(x) is not Marker:
        return x
    what = x.what
    if what == "raise":
        msg = f"stage refuses marker {x.n}"
        raise ValueError(msg)
    if what == "str_raises":
        raise StrRaises
    if what == "needs_two":
        raise NeedsTwo(x.n, "b")
    if what == "bad_notes":
        exc = ValueError(f"notes of marker {x.n}")
        exc.__notes__ = ("a tuple, not a list",)  # type: ignore[assignment]
        raise exc
    if what == "cancel":
        raise asyncio.CancelledError
    if what == "die" and in_process:
        os.kill(os.getpid(), signal.SIGKILL)
    if what == "gen_raise" and not generator:
        msg = f"marker {x.n} fails a plain stage"
        raise ValueError(msg)
    return x


def value(x: Any) -> Any:
    """The item inside a branch's tuple."""
    while type(x) is tuple and x:
        x = x[0]
    return x


# -- in worker processes -------------------------------------------------------------------


def proc_step(x: Any) -> Any:
    """A process block's function."""
    return act(value(x), in_process=True)


def proc_batch(xs: list[Any]) -> list[Any]:
    """A batched process block's function (it takes a moment: a worker killed from outside
    is often killed mid-batch)."""
    time.sleep(0.002)
    out = [act(value(x), in_process=True) for x in xs]
    if any(type(x) is Marker and x.what == "wrong_batch" for x in out):
        return out[:-1]
    return out


class ProcLife(af.Block):
    """A process block with setup and teardown recorded as files in ``folder``."""

    def __init__(self, folder: str, **options: Any) -> None:
        super().__init__(**options)
        self.folder = folder

    async def setup(self) -> None:
        await asyncio.sleep(0)
        _touch(self.folder, "setup")

    async def process(self, item: Any) -> Any:
        return act(value(item), in_process=True)

    async def teardown(self) -> None:
        await asyncio.sleep(0)
        _touch(self.folder, "teardown")


def _touch(folder: str, what: str) -> None:
    Path(folder, f"{what}-{os.getpid()}").touch()


def life_counts(folder: str) -> tuple[int, int]:
    """(setups, teardowns) that :class:`ProcLife` workers recorded in ``folder``."""
    names = os.listdir(folder)
    return (
        sum(n.startswith("setup-") for n in names),
        sum(n.startswith("teardown-") for n in names),
    )


# -- in this process -----------------------------------------------------------------------


class Life(af.Block):
    """A block with setup and teardown that count themselves in ``counts`` (async methods on
    the loop, or plain ones in the block's thread)."""

    def __init__(self, counts: dict[str, int], lock: threading.Lock, **options: Any) -> None:
        super().__init__(**options)
        self.counts = counts
        self.lock = lock

    def _count(self, what: str) -> None:
        with self.lock:
            self.counts[what] = self.counts.get(what, 0) + 1


class AsyncLife(Life):
    async def setup(self) -> None:
        self._count("setup_begun")
        await asyncio.sleep(0.002)
        self._count("setup")

    async def process(self, item: Any) -> Any:
        await asyncio.sleep(0)
        return act(value(item))

    async def teardown(self) -> None:
        self._count("teardown_begun")
        await asyncio.sleep(0.002)
        self._count("teardown")


class ThreadLife(Life):
    def setup(self) -> None:  # (plain: in the block's thread)
        self._count("setup_begun")
        time.sleep(0.002)
        self._count("setup")

    def process(self, item: Any) -> Any:
        return act(value(item))

    def teardown(self) -> None:
        self._count("teardown_begun")
        time.sleep(0.002)
        self._count("teardown")


async def async_step(x: Any) -> Any:
    await asyncio.sleep(0)
    return act(value(x))


def thread_step(x: Any) -> Any:
    return act(value(x))


async def async_gen(x: Any) -> AsyncIterator[Any]:
    """Two outputs per input; a ``gen_raise`` marker fails after the first."""
    v = value(x)
    yield act(v, generator=True)
    await asyncio.sleep(0)
    if type(v) is Marker and v.what == "gen_raise":
        msg = f"marker {v.n} fails after one output"
        raise ValueError(msg)
    yield v


def thread_gen(x: Any) -> Iterator[Any]:
    """A thread generator: two outputs per input, as :func:`async_gen`."""
    v = value(x)
    yield act(v, generator=True)
    if type(v) is Marker and v.what == "gen_raise":
        msg = f"marker {v.n} fails after one output"
        raise ValueError(msg)
    yield v


def batch_fn(xs: list[Any]) -> list[Any]:
    """A batched stage's function (``wrong_batch`` makes it return one result too few)."""
    out = [act(value(x)) for x in xs]
    if any(type(x) is Marker and x.what == "wrong_batch" for x in out):
        return out[:-1]
    return out


async def async_batch_fn(xs: list[Any]) -> list[Any]:
    await asyncio.sleep(0)
    return batch_fn(xs)


def camera(x: Any) -> int:
    """A key function: hostile items make it raise (their ``__getattr__``)."""
    v = value(x)
    if type(v) is ReprRaises:
        return int(v.camera)  # raises RuntimeError
    if isinstance(v, int) and not isinstance(v, bool):
        return v % 3
    return 7


# -- odd arrays ----------------------------------------------------------------------------


def odd_arrays() -> list[tuple[str, Any]]:
    """Arrays a process block must send and return intact (values, dtype, shape)."""
    big = 16 * 1024
    return [
        ("big_endian", np.arange(big, dtype=">f8")),
        ("strided", np.arange(big * 4, dtype=np.int32)[::3]),
        ("reversed", np.arange(big, dtype=np.int64)[::-1]),
        ("fortran", np.asfortranarray(np.arange(big * 2, dtype=np.float32).reshape(128, -1))),
        ("transposed", np.arange(300 * 400, dtype=np.uint16).reshape(300, 400)[::2, ::3].T),
        ("empty", np.zeros((0, 50_000), np.float64)),
        ("scalar", np.array(3.5)),
        ("objects", np.array([None, 1, "a"] * 5000, dtype=object)),
        ("structured", np.zeros(8000, dtype=[("a", "<i4"), ("b", ">f8"), ("c", "S3")])),
        ("datetimes", np.arange(20_000).astype("datetime64[ms]")),
        ("text", np.array(["héllo"] * 8000)),
        ("unaligned", np.frombuffer(bytes(400_001), dtype=np.uint8)[1:].view(np.float64)),
        ("broadcast", np.broadcast_to(np.arange(500.0), (400, 500))),
        ("read_only", np.frombuffer(bytes(100_000), dtype=np.uint8)),
        ("nested", {"a": [np.arange(60_000.0)[::2]], "b": (np.ones((200, 200, 3), np.uint8),)}),
        ("frame", np.full((1080, 1920, 3), 7, np.uint8)),
    ]


def same(a: Any, b: Any) -> bool:
    """Whether ``b`` is ``a`` come back: same type, dtype, shape and values."""
    if isinstance(a, np.ndarray):
        if type(b) is not np.ndarray or a.dtype != b.dtype or a.shape != b.shape:
            return False
        return bool(np.array_equal(a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(map(same, a, b))
    return type(a) is type(b) and bool(a == b)
