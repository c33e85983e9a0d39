"""Races between the event loop and a thread block's own threads.

A thread block without a timeout takes its items from its input itself (aioflow/_engine/pulling.py,
and a one-worker batched thread block: aioflow/_engine/batched.py): its threads pop the input's
buffer while the event loop puts items there, waits there for room, drops from it when the edge is
leaky, and reads it for the statistics. Each test here runs such a block flat out with the
interpreter switching threads as often as it can (``sys.setswitchinterval(1e-6)``), so that a
race between the two sides shows within a run, and checks what a user would notice: the run ends,
without an exception, every item accounted for, and the statistics read meanwhile make sense.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import sys
from collections.abc import AsyncIterator, Hashable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

import aioflow as af

pytestmark = pytest.mark.integration

#: Only a hang takes this long (seconds).
BOUND_S = 30.0


@contextmanager
def switching_often() -> Iterator[None]:
    """Threads switch as often as the interpreter allows while the block runs."""
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(switch)


class Finalized:
    """Garbage in a reference cycle whose ``__del__`` is Python code: the collector runs it
    wherever an allocation starts a collection (in 3.11 right there, within a C call such as
    ``tuple()``), and the interpreter may switch threads meanwhile. Each leaves another for the
    next collection, while ``chain`` holds."""

    chain = False

    def __init__(self) -> None:
        self.me = self

    def __del__(self) -> None:
        if Finalized.chain:
            Finalized()


@contextmanager
def collecting_often() -> Iterator[None]:
    """The garbage collector runs a finalizer every few allocations (see :class:`Finalized`):
    wherever the engine allocates, the interpreter may switch to a block's thread."""
    thresholds = gc.get_threshold()
    gc.set_threshold(5)
    Finalized.chain = True
    Finalized()
    try:
        yield
    finally:
        Finalized.chain = False
        gc.set_threshold(*thresholds)


async def flood(n: int, marker_every: int = 0, key: Any = "cam") -> AsyncIterator[Any]:
    """``n`` numbered items as fast as the edge takes them (a marker after every
    ``marker_every``-th), giving the loop a turn now and then."""
    for i in range(n):
        yield i
        if marker_every and i % marker_every == marker_every - 1:
            yield af.EndOfKey(key)
        if i % 256 == 255:
            await asyncio.sleep(0)


async def ended(run: asyncio.Task[list[Any]]) -> list[Any]:
    """The outputs of ``run``, failing rather than hanging (a generous bound: a run here takes
    a second or two)."""
    done, _ = await asyncio.wait([run], timeout=BOUND_S)
    if not done:
        run.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await run
        pytest.fail("the run hung")
    return run.result()


async def test_a_source_waiting_for_room_before_a_thread_block_is_woken_by_its_threads() -> None:
    """The source finds the thread block's input full and waits for room, while the block's
    threads take the items there: the thread that makes room wakes it, however the two
    interleave. (A thread that took the last item just before the source started to wait found
    no one to wake, and the run hung with the input empty.)"""

    @af.block(executor="thread", workers=4, queue_size=1)
    def touch(x: int) -> int:
        return x

    n = 5000
    pipe = af.Pipeline(touch)
    with switching_often():
        out = await ended(asyncio.create_task(pipe.run(flood(n))))
    assert out == list(range(n))


@pytest.mark.parametrize("kind", ["function, 4 workers", "generator, 2 workers"])
async def test_statistics_read_while_threads_take_markers_never_count_below_zero(
    kind: str,
) -> None:
    """Statistics read at any moment (a /metrics scrape) while a thread block's threads take
    items and markers from its input: nothing is counted below zero, and the books balance.
    (The queue depth was the queue's length less the markers a snapshot of it held a moment
    before: the threads took some in between, and it read -1 or -2.)"""

    def touch(x: int) -> int:
        return x

    def one(x: int) -> Iterator[int]:
        yield x

    blocks = {
        "function, 4 workers": lambda: af.block(touch, executor="thread", workers=4),
        "generator, 2 workers": lambda: af.block(one, workers=2),
    }
    blk = blocks[kind]()
    name = blk.options.name
    n = 5000
    pipe = af.Pipeline(blk, af.block(touch, name="after"))
    wrong: list[af.BlockStatistics] = []
    reads = 0

    async def scrape(run: asyncio.Task[list[Any]]) -> None:
        nonlocal reads
        while not run.done():
            rec = pipe.statistics()[name]
            reads += 1
            if min(rec.queue_depth, rec.in_flight) < 0 or not rec.balanced:
                wrong.append(rec)
            await asyncio.sleep(0)

    with switching_often():
        run = asyncio.create_task(pipe.run(flood(n, marker_every=2)))
        await scrape(run)
        out = await ended(run)
    assert out == list(range(n))
    assert reads > 100
    assert wrong == []


async def test_statistics_read_while_the_collector_runs_finalizers_never_fail() -> None:
    """Statistics read while a thread block's threads take items and markers, with the garbage
    collector running Python finalizers as often as it can: copying the input to count its
    markers never meets a buffer changed under it. (``tuple()`` of a deque allocates the tuple
    after it starts iterating: a collection there ran a finalizer, a thread took an item, and
    the read failed with 'deque mutated during iteration'.)"""

    def touch(x: int) -> int:
        return x

    n = 5000
    pipe = af.Pipeline(af.block(touch, executor="thread", workers=4), af.block(touch, name="after"))
    errors: list[BaseException] = []
    with collecting_often(), switching_often():
        run = asyncio.create_task(pipe.run(flood(n, marker_every=2)))
        while not run.done():
            try:
                pipe.statistics()
            except RuntimeError as exc:  # what this test is about
                errors.append(exc)
            await asyncio.sleep(0)
        out = await ended(run)
    assert errors == []
    assert out == list(range(n))


class Segments(af.Block):
    """Keyed by one camera: holds the items since the last marker; the marker's evict() flushes
    them as ("end", items)."""

    key = staticmethod(lambda item: "cam")

    def __init__(self) -> None:
        super().__init__(name="segments", queue_size=4096)

    def create_state(self, key: Hashable) -> list[int]:
        return []

    async def process(self, item: int, state: list[int]) -> int:
        state.append(item)
        return item

    async def evict(self, key: Hashable, state: list[int]) -> list[Any]:
        return [("end", list(state))]


def check_segments(out: list[Any], n: int, every: int) -> None:
    """Items leave in order, and each flush holds items of one segment (those between two
    markers), which no other flush holds: no item overtook a marker, nor a marker an item."""
    items = [o for o in out if not isinstance(o, tuple)]
    assert items == sorted(items)
    assert all(0 <= i < n for i in items)
    flushed = [o[1] for o in out if isinstance(o, tuple)]
    assert sorted(i for f in flushed for i in f) == items
    mixed = [f for f in flushed if len({i // every for i in f}) > 1]
    assert mixed == []
    firsts = [f[0] // every for f in flushed]
    assert len(firsts) == len(set(firsts))


@pytest.mark.parametrize(
    "stage",
    [
        "thread, 2 workers",
        "thread, 1 worker",
        "generator thread, 3 workers",
        "batch (thread)",
    ],
)
async def test_a_marker_put_back_on_a_drop_oldest_edge_is_not_overtaken_by_the_blocks_threads(
    stage: str,
) -> None:
    """A full ``drop_oldest`` edge whose oldest entry is a marker keeps the marker and drops the
    item behind it. Meanwhile the block's threads take items from that edge: none of them may
    take an item put after the marker before the marker (the keyed block after it would count
    that item into the ended key's state)."""

    def identity(x: int) -> int:
        return x

    def one(x: int) -> Iterator[int]:
        yield x

    def batch_identity(xs: list[int]) -> list[int]:
        return list(xs)

    leaky: dict[str, Any] = {"queue_size": 4, "overflow": "drop_oldest", "name": "model"}
    blocks = {
        "thread, 2 workers": lambda: af.block(identity, executor="thread", workers=2, **leaky),
        "thread, 1 worker": lambda: af.block(identity, executor="thread", **leaky),
        "generator thread, 3 workers": lambda: af.block(one, workers=3, **leaky),
        "batch (thread)": lambda: af.block(batch_identity, batch=af.Batch(4, 0), **leaky),
    }
    n, every = 20_000, 3
    pipe = af.Pipeline(blocks[stage](), Segments())
    with switching_often():
        out = await ended(asyncio.create_task(pipe.run(flood(n, marker_every=every))))
    check_segments(out, n, every)
    rec = pipe.statistics()["model"]
    assert rec.received == n == rec.completed + rec.dropped
