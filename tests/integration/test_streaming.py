"""Long and endless streams, reruns, pipelines side by side, generators, and the books.

What a user streaming video through aioflow relies on: every output arrives, in order; an endless
source is read only as far ahead as the edges hold; a pipeline object can run again; several
pipelines share one loop; and the statistics account for every item.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

import aioflow as af
from aioflow.testing import Recorder

pytestmark = pytest.mark.integration

OUTPUT_EDGE = 64  # capacity of the edge after the last block (DESIGN.md, "Bounds")


def capacity(*blocks: af.Block) -> int:
    """The documented read-ahead bound: sum of queue_size + workers, plus the output edge."""
    return sum(b.options.queue_size + b.options.workers for b in blocks) + OUTPUT_EDGE


class Naturals:
    """An endless async source that counts what was pulled from it."""

    def __init__(self) -> None:
        self.pulled = 0

    async def __aiter__(self) -> AsyncIterator[int]:
        i = 0
        while True:
            self.pulled += 1
            yield i
            i += 1


# -- volume -----------------------------------------------------------------------------------


async def test_a_hundred_thousand_items_through_three_blocks_arrive_in_order() -> None:
    n = 100_000

    @af.block
    async def inc(x: int) -> int:
        return x + 1

    @af.block(workers=2)
    async def double(x: int) -> int:
        return 2 * x

    @af.block(queue_size=16)
    async def dec(x: int) -> int:
        return x - 1

    pipe = inc >> double >> dec
    outputs = await pipe.run(range(n))

    assert len(outputs) == n
    assert outputs == [2 * (x + 1) - 1 for x in range(n)]
    stats = pipe.statistics()
    assert [stats[name].completed for name in ("inc", "double", "dec")] == [n, n, n]


# -- endless sources --------------------------------------------------------------------------


async def quiet(source: Naturals) -> None:
    """Wait until the pipeline stops reading from ``source`` (every edge is full)."""
    async with asyncio.timeout(10):
        while True:
            pulled = source.pulled
            for _ in range(50):
                await asyncio.sleep(0)
            await asyncio.sleep(0.01)
            if source.pulled == pulled:
                return


@pytest.mark.parametrize("n", [10, 3_000])
async def test_stream_over_an_endless_source_reads_a_bounded_distance_ahead(n: int) -> None:
    @af.block(queue_size=8)
    async def square(x: int) -> int:
        return x * x

    @af.block(workers=3, queue_size=4)
    async def neg(x: int) -> int:
        await asyncio.sleep(0)
        return -x

    source = Naturals()
    pipe = af.Pipeline(square, neg)
    got: list[int] = []
    ahead: dict[int, int] = {}

    async with contextlib.aclosing(pipe.stream(source)) as outputs:
        async for out in outputs:
            got.append(out)
            if len(got) in (1, n):
                # The consumer pauses: the pipeline reads ahead as far as it ever will.
                await quiet(source)
                ahead[len(got)] = source.pulled - len(got)
            if len(got) == n:
                break

    assert got == [-(x * x) for x in range(n)]
    # However many items went through, the source is read no further ahead than the edges
    # hold: memory does not grow with the length of the stream.
    assert ahead[n] == ahead[1]
    assert ahead[n] <= capacity(square, neg), (ahead, capacity(square, neg))
    pulled = source.pulled
    await asyncio.sleep(0.02)
    assert source.pulled == pulled  # the run stopped with the consumer


# -- reruns and neighbours --------------------------------------------------------------------


async def test_a_pipeline_runs_again_after_it_finished_with_fresh_statistics() -> None:
    @af.block
    async def inc(x: int) -> int:
        return x + 1

    rec = Recorder(name="rec")
    pipe = af.Pipeline(inc, rec)

    assert await pipe.run(range(10)) == list(range(1, 11))
    first = pipe.statistics()
    assert first["inc"].received == 10
    assert first["rec"].emitted == 10

    got = [out async for out in pipe.stream(range(3))]
    assert got == [1, 2, 3]
    second = pipe.statistics()
    assert second["inc"].received == 3
    assert second["inc"].completed == 3
    assert second["rec"].received == 3
    assert second["rec"].emitted == 3
    assert rec.setup_calls == rec.teardown_calls == 2

    async with pipe.open() as running:
        assert await running.submit(41) == 42
    assert pipe.statistics()["inc"].received == 1
    assert rec.setup_calls == rec.teardown_calls == 3


async def test_a_pipeline_runs_again_after_a_failed_run() -> None:
    fail = True

    @af.block
    async def sometimes(x: int) -> int:
        if fail and x == 2:
            raise ValueError("first run fails")
        return x

    pipe = af.Pipeline(sometimes)
    with pytest.raises(ExceptionGroup):
        await pipe.run(range(5))
    assert pipe.statistics()["sometimes"].failed == 1

    fail = False
    assert await pipe.run(range(5)) == [0, 1, 2, 3, 4]
    stats = pipe.statistics()["sometimes"]
    assert stats.failed == 0
    assert stats.received == stats.completed == 5


async def test_two_pipelines_run_at_once_on_one_loop() -> None:
    ping = asyncio.Event()
    pong = asyncio.Event()

    @af.block
    async def left(x: int) -> int:
        if x == 5:
            ping.set()
            await pong.wait()  # needs the other pipeline to be running right now
        return x

    @af.block
    async def right(x: int) -> int:
        if x == 5:
            await ping.wait()
            pong.set()
        return -x

    @af.block(workers=2, name="shared_name")
    def left_thread(x: int) -> int:
        return x * 10

    @af.block(workers=2, name="shared_name")
    def right_thread(x: int) -> int:
        return x * 100

    p1 = af.Pipeline(left, left_thread, name="p1")
    p2 = af.Pipeline(right, right_thread, name="p2")
    async with asyncio.timeout(10):
        out1, out2 = await asyncio.gather(p1.run(range(10)), p2.run(range(10)))

    assert out1 == [x * 10 for x in range(10)]
    assert out2 == [-x * 100 for x in range(10)]
    assert p1.statistics()["shared_name"].completed == 10
    assert p2.statistics()["shared_name"].completed == 10


# -- generators -------------------------------------------------------------------------------


def expand(x: int) -> list[tuple[int, int]]:
    """Filter multiples of 3; flat-map the rest into 1..4 outputs."""
    if x % 3 == 0:
        return []
    return [(x, k) for k in range(x % 4 + 1)]


class Peak:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.active = 0
        self.peak = 0

    def enter(self) -> None:
        with self._lock:
            self.active += 1
            self.peak = max(self.peak, self.active)

    def leave(self) -> None:
        with self._lock:
            self.active -= 1


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_generator_blocks_flat_map_and_filter_in_order_with_workers(kind: str) -> None:
    n = 60
    rng = random.Random(7)
    delays = [rng.uniform(0, 0.002) for _ in range(n)]
    peak = Peak()

    def explode_sync(x: int) -> Iterator[tuple[int, int]]:
        peak.enter()
        try:
            for out in expand(x):
                time.sleep(delays[x] / 2)
                yield out
            time.sleep(delays[x] / 2)
        finally:
            peak.leave()

    async def explode_async(x: int) -> AsyncIterator[tuple[int, int]]:
        peak.enter()
        try:
            for out in expand(x):
                await asyncio.sleep(delays[x] / 2)
                yield out
            await asyncio.sleep(delays[x] / 2)
        finally:
            peak.leave()

    fn: Any = explode_sync if kind == "sync" else explode_async
    blk = af.block(workers=4, name="explode")(fn)
    pipe = af.Pipeline(blk, Recorder(name="rec"))

    outputs = await pipe.run(range(n))

    assert outputs == [out for x in range(n) for out in expand(x)]
    assert 1 < peak.peak <= 4
    stats = pipe.statistics()
    assert stats["explode"].received == n
    assert stats["explode"].completed == n
    assert stats["explode"].emitted == len(outputs)
    assert stats["rec"].received == len(outputs)


# -- the books --------------------------------------------------------------------------------


async def test_statistics_books_balance_after_filters_drops_and_skips() -> None:
    n = 300
    exhausted = asyncio.Event()

    async def source() -> AsyncIterator[int]:
        for i in range(n):
            yield i
        exhausted.set()

    @af.block(workers=2, name="spread")
    async def spread(x: int) -> AsyncIterator[int]:
        if x % 5 == 0:
            return  # filtered
        yield x
        if x % 7 == 0:
            yield x + 1000  # flat-mapped

    @af.block(workers=3, on_error="skip", name="picky")
    def picky(x: int) -> int:
        if x % 11 == 0:
            raise ValueError("no multiples of 11")
        return x

    leaky_calls = 0

    @af.block(queue_size=2, overflow="drop_newest", name="leaky")
    async def leaky(x: int) -> int:
        nonlocal leaky_calls
        leaky_calls += 1
        if leaky_calls == 1:
            await exhausted.wait()  # stuck while most of the stream arrives: overflow drops
        if x % 4 == 0:
            await asyncio.sleep(0.003)  # makes these items older than the next block's budget
        return x

    @af.block(max_age=0.002, name="budget")
    async def budget(x: int) -> int:
        return x

    sink = Recorder(name="sink")
    pipe = af.Pipeline(spread, picky, leaky, budget, sink)
    names = ["spread", "picky", "leaky", "budget", "sink"]

    async with asyncio.timeout(10):
        outputs = await pipe.run(source())

    stats = pipe.statistics()
    assert list(stats) == names
    for name in names:
        s = stats[name]
        assert s.received == (
            s.completed + s.dropped + s.skipped + s.failed + s.in_flight + s.queue_depth
        ), s
        assert s.in_flight == 0, s
        assert s.queue_depth == 0, s
        assert s.dropped == sum(s.dropped_by.values()), s
    for upstream, downstream in itertools.pairwise(names):
        assert stats[downstream].received == stats[upstream].emitted, (upstream, downstream)
    assert stats["spread"].received == n
    assert stats["sink"].emitted == len(outputs)
    assert outputs == sink.items
    # Each way an item can end really happened in this run.
    spread_outputs = [v for x in range(n) if x % 5 for v in ([x, x + 1000] if x % 7 == 0 else [x])]
    assert stats["spread"].completed == n
    assert stats["spread"].emitted == len(spread_outputs)
    assert stats["picky"].skipped == sum(1 for v in spread_outputs if v % 11 == 0)
    assert stats["leaky"].dropped_by.get("overflow", 0) > 0
    assert stats["budget"].dropped_by.get("stale", 0) > 0
