"""Ordering, concurrency, bounded memory, backpressure, overflow and age budgets.

These tests run real pipelines on the event loop and on thread pools. They never time anything:
concurrency is measured with counters, stalls are observed with events and statistics.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Literal

import pytest

import aioflow as af
from aioflow.testing import Recorder, ScriptedSource

pytestmark = pytest.mark.integration

OUTPUT_EDGE = 64  # capacity of the edge after the last block (DESIGN.md, "Bounds")


def capacity(*blocks: af.Block) -> int:
    """The documented read-ahead bound of a chain: sum of queue_size + workers, plus the
    output edge."""
    return sum(b.options.queue_size + b.options.workers for b in blocks) + OUTPUT_EDGE


async def wait_for(condition: Callable[[], bool], what: str) -> None:
    """Wait (on the loop, without blocking it) until ``condition()`` holds."""
    try:
        async with asyncio.timeout(10):
            while not condition():
                await asyncio.sleep(0.001)
    except TimeoutError:
        pytest.fail(f"gave up waiting for: {what}")


async def settle(turns: int = 50) -> None:
    """Let every runnable task take many more steps (so a missing bound would show)."""
    for _ in range(turns):
        await asyncio.sleep(0)
    await asyncio.sleep(0.02)


class Gauge:
    """Counts the calls in progress (thread-safe) and remembers the most at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.active = 0
        self.peak = 0
        self.finished: list[int] = []

    def enter(self) -> None:
        with self._lock:
            self.active += 1
            self.peak = max(self.peak, self.active)

    def leave(self, item: int) -> None:
        with self._lock:
            self.active -= 1
            self.finished.append(item)


def random_delays(n: int, seed: int, most: float) -> list[float]:
    rng = random.Random(seed)
    return [rng.uniform(0.0, most) for _ in range(n)]


def make_delayed_block(
    executor: Literal["async", "thread"],
    delays: list[float],
    gauge: Gauge,
    *,
    ordered: bool,
    workers: int,
) -> af.Block:
    if executor == "async":

        async def delayed(x: int) -> int:
            gauge.enter()
            try:
                await asyncio.sleep(delays[x])
                return x
            finally:
                gauge.leave(x)

        return af.block(workers=workers, ordered=ordered)(delayed)

    def delayed_sync(x: int) -> int:
        gauge.enter()
        try:
            time.sleep(delays[x])
            return x
        finally:
            gauge.leave(x)

    return af.block(workers=workers, ordered=ordered, name="delayed")(delayed_sync)


# -- order and concurrency --------------------------------------------------------------------


@pytest.mark.parametrize("executor", ["async", "thread"])
async def test_ordered_outputs_keep_input_order_with_random_delays(
    executor: Literal["async", "thread"],
) -> None:
    n = 40
    gauge = Gauge()
    blk = make_delayed_block(
        executor, random_delays(n, seed=1, most=0.004), gauge, ordered=True, workers=4
    )

    outputs = await af.Pipeline(blk).run(range(n))

    assert outputs == list(range(n))
    # The items really overlapped: more than one was in the block's function at once ...
    assert 1 < gauge.peak <= 4
    # ... and they did finish out of order, which the block put back in order.
    assert gauge.finished != list(range(n))
    assert sorted(gauge.finished) == list(range(n))


@pytest.mark.parametrize("executor", ["async", "thread"])
async def test_unordered_outputs_come_in_completion_order(
    executor: Literal["async", "thread"],
) -> None:
    n = 40
    gauge = Gauge()
    blk = make_delayed_block(
        executor, random_delays(n, seed=2, most=0.004), gauge, ordered=False, workers=4
    )

    outputs = await af.Pipeline(blk).run(range(n))

    assert sorted(outputs) == list(range(n))
    assert outputs != list(range(n))
    if executor == "async":
        # On the loop the finishing order is exact: outputs leave as their items finish.
        # (Threads race between finishing and handing back, so only the test below pins it.)
        assert outputs == gauge.finished
    assert 1 < gauge.peak <= 4


async def test_unordered_thread_block_emits_in_completion_order() -> None:
    # Thread i returns only once the output of item i + 1 has been seen downstream, so the items
    # provably finish 3, 2, 1, 0, and all four threads are busy at once.
    n = 4
    seen = [threading.Event() for _ in range(n)]

    @af.block(workers=n, ordered=False, name="reverse")
    def reverse(x: int) -> int:
        if x + 1 < n and not seen[x + 1].wait(10):
            msg = f"item {x + 1} was never emitted while item {x} was in the block"
            raise AssertionError(msg)
        return x

    @af.block(name="observe")
    async def observe(x: int) -> int:
        seen[x].set()
        return x

    outputs = await af.Pipeline(reverse, observe).run(range(n))

    assert outputs == [3, 2, 1, 0]


@pytest.mark.parametrize(("ordered", "expected"), [(True, [0, 1, 2, 3]), (False, [3, 2, 1, 0])])
async def test_order_when_later_items_provably_finish_first(
    ordered: bool, expected: list[int]
) -> None:
    # Item i waits until item i + 1 has finished: completion order is exactly 3, 2, 1, 0, which
    # is only possible if all four items are in the block at once.
    n = 4
    done = [asyncio.Event() for _ in range(n)]

    @af.block(workers=n, ordered=ordered)
    async def reverse(x: int) -> int:
        if x + 1 < n:
            await done[x + 1].wait()
        done[x].set()
        return x

    async with asyncio.timeout(10):
        outputs = await af.Pipeline(reverse).run(range(n))

    assert outputs == expected


async def test_workers_process_several_items_at_once() -> None:
    workers = 4
    gauge = Gauge()
    all_in = asyncio.Event()

    @af.block(workers=workers)
    async def rendezvous(x: int) -> int:
        gauge.enter()
        try:
            if gauge.active == workers:
                all_in.set()
            # Without `workers` items in flight together this never returns.
            await all_in.wait()
            return x
        finally:
            gauge.leave(x)

    async with asyncio.timeout(10):
        outputs = await af.Pipeline(rendezvous).run(range(12))

    assert outputs == list(range(12))
    assert gauge.peak == workers


# -- bounds -----------------------------------------------------------------------------------


async def test_ordered_block_holds_at_most_queue_size_plus_workers() -> None:
    # The head item is stuck; the others finish at once and must wait in the reorder window.
    # They count against the bound, so the block stops reading after queue_size + workers.
    gate = asyncio.Event()

    @af.block(workers=3, queue_size=4, name="window")
    async def window(x: int) -> int:
        if x == 0:
            await gate.wait()
        return x

    after = Recorder(name="after")
    pipe = af.Pipeline(window, after)
    source = ScriptedSource(range(300))
    held: list[int] = []
    depth_plus_flight: list[int] = []
    stop = asyncio.Event()

    async def sample() -> None:
        while not stop.is_set():
            stats = pipe.statistics()
            held.append(stats["window"].received - stats["after"].received)
            depth_plus_flight.append(stats["window"].queue_depth + stats["window"].in_flight)
            await asyncio.sleep(0)

    async with asyncio.TaskGroup() as tg:
        sampler = tg.create_task(sample())
        run = tg.create_task(pipe.run(source))
        await wait_for(lambda: pipe.statistics()["window"].queue_depth == 4, "queue filled")
        await settle()
        stalled_at = source.yielded
        await settle()
        assert source.yielded == stalled_at  # the source waits while the block is full
        assert max(held) == 4 + 3  # full, and not one item more
        gate.set()
        outputs = await run
        stop.set()
        await sampler

    assert outputs == list(range(300))
    assert max(held) <= 4 + 3
    assert max(depth_plus_flight) <= 4 + 3


async def test_unordered_block_holds_at_most_queue_size_plus_workers() -> None:
    gate = asyncio.Event()

    @af.block(workers=3, queue_size=4, ordered=False, name="window")
    async def window(x: int) -> int:
        if x == 0:
            await gate.wait()
        await asyncio.sleep(0)
        return x

    after = Recorder(name="after")
    pipe = af.Pipeline(window, after)
    held: list[int] = []
    stop = asyncio.Event()

    async def sample() -> None:
        while not stop.is_set():
            stats = pipe.statistics()
            held.append(stats["window"].received - stats["after"].received)
            await asyncio.sleep(0)

    async with asyncio.TaskGroup() as tg:
        sampler = tg.create_task(sample())
        run = tg.create_task(pipe.run(ScriptedSource(range(200))))
        # The stuck head item does not hold up the others when order does not matter.
        await wait_for(lambda: pipe.statistics()["after"].received == 199, "others passed")
        gate.set()
        outputs = await run
        stop.set()
        await sampler

    assert outputs == [*range(1, 200), 0]
    assert 1 < max(held) <= 4 + 3


async def test_items_handed_on_in_runs_keep_order_bounds_and_books_at_every_moment() -> None:
    # A one-worker async block hands items on in runs: as many as wait in its input and fit
    # in its output, one after the other, and counts them at the end of the run. Here calls
    # suspend halfway through such runs, fail (skipped) or fail once (retried), and a sampler
    # reads the books at every turn of the loop: at every moment a block has an item in flight
    # exactly while it holds one (suspended in its call, or waiting to retry it), holds at most
    # queue_size + 1 items, and balances; and the outputs keep their order.
    retried: set[int] = set()
    holding = {"first": False, "second": False, "third": False, "after": False}

    @af.block(queue_size=8, name="first")
    async def first(x: int) -> int:
        if x % 5 == 0:
            holding["first"] = True
            await asyncio.sleep(0)
            holding["first"] = False
        return x

    @af.block(queue_size=8, name="second", on_error="skip")
    async def second(x: int) -> int:
        if x % 13 == 0:
            raise ValueError(f"{x} is unlucky")
        return x

    @af.block(queue_size=8, name="third", on_error=af.Retry(attempts=2, backoff=0.0))
    async def third(x: int) -> int:
        holding["third"] = True  # until a call returns: a failed one is retried
        if x % 7 == 0 and x not in retried:
            retried.add(x)
            raise ValueError(f"{x} fails once")
        if x % 3 == 0:
            await asyncio.sleep(0)
        holding["third"] = False
        return x

    after = Recorder(name="after", queue_size=8)
    pipe = af.Pipeline(first, second, third, after)
    names = list(holding)
    held: dict[str, list[int]] = {name: [] for name in names}
    wrong: list[tuple[str, bool, af.BlockStatistics]] = []
    seen_holding = dict.fromkeys(names, 0)
    stop = asyncio.Event()

    async def sample() -> None:
        while not stop.is_set():
            stats = pipe.statistics()
            for name, nxt in itertools.pairwise(names):
                # taken in and not handed on, skipped items aside
                held[name].append(stats[name].received - stats[nxt].received - stats[name].skipped)
            for name in names:
                seen_holding[name] += holding[name]
                if stats[name].in_flight != holding[name] or not stats[name].balanced:
                    wrong.append((name, holding[name], stats[name]))
            await asyncio.sleep(0)

    n = 2000
    async with asyncio.TaskGroup() as tg:
        sampler = tg.create_task(sample())
        outputs = await pipe.run(ScriptedSource(range(n)))
        stop.set()
        await sampler

    assert outputs == [x for x in range(n) if x % 13]
    assert wrong == []
    for name in names[:-1]:
        assert max(held[name]) <= 8 + 1, name
    # The sampler did look while items were held, in every block that suspends.
    assert seen_holding["first"] > 10
    assert seen_holding["third"] > 10
    stats = pipe.statistics()
    assert stats["second"].skipped == len(range(0, n, 13))
    assert stats["third"].retried == len([x for x in range(0, n, 7) if x % 13])
    assert all(s.in_flight == s.queue_depth == 0 for s in stats.values())


@pytest.mark.parametrize("end", ["failure", "cancellation"])
async def test_a_run_cut_short_counts_the_items_it_handed_on(end: str) -> None:
    # The one-worker async path counts a run's outputs at its end. A run that an item's failure
    # (counted before it is raised, after retries that succeeded for earlier items) or the
    # run's cancellation cuts short counts exactly those handed on before that item.
    stuck = asyncio.Event()

    @af.block(name="first")
    async def first(x: int) -> int:
        return x

    tried: set[int] = set()

    @af.block(name="second", on_error=af.Retry(attempts=2, backoff=0.0))
    async def second(x: int) -> int:
        if x % 10 == 5 and x not in tried:
            tried.add(x)
            raise ValueError(f"{x} fails once")
        if x == 37:
            if end == "cancellation":
                stuck.set()
                await asyncio.Event().wait()
            raise ValueError("37 always fails")
        return x

    pipe = af.Pipeline(first, second)
    task = asyncio.create_task(pipe.run(range(100)))
    if end == "failure":
        with pytest.raises(ExceptionGroup):
            await task
    else:
        await stuck.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    rec = pipe.statistics()["second"]
    assert rec.completed == 37  # items 0..36, in the single first item's wake and a run
    assert rec.retried == (5 if end == "failure" else 4)  # 5, 15, 25, 35 (and 37 once more)
    assert rec.failed == (1 if end == "failure" else 0)
    assert rec.balanced


async def test_read_ahead_from_source_is_bounded_by_the_sum_of_capacities() -> None:
    # A consumer that stops reading: every edge fills up, then the source must wait.
    first = af.block(workers=2, queue_size=5, name="first")(_identity_async)
    second = af.block(workers=1, queue_size=3, name="second")(_identity_async)
    pipe = af.Pipeline(first, second)
    source = ScriptedSource(range(1000))
    resume = asyncio.Event()
    got: list[int] = []

    async def consume() -> None:
        async with contextlib.aclosing(pipe.stream(source)) as outputs:
            async for out in outputs:
                got.append(out)
                if len(got) == 1:
                    await resume.wait()

    async with asyncio.TaskGroup() as tg:
        consumer = tg.create_task(consume())
        await wait_for(lambda: len(got) == 1, "first output")
        await wait_for(lambda: pipe.statistics()["first"].queue_depth == 5, "edges full")
        await settle()
        read_ahead = source.yielded - len(got)
        in_blocks = pipe.statistics()["first"].received
        assert read_ahead <= capacity(first, second), (
            f"source read {read_ahead} items ahead of the consumer; the bound is "
            f"{capacity(first, second)}; {source.yielded - in_blocks} pulled but not in a block"
        )
        resume.set()
        await consumer

    assert got == list(range(1000))


async def test_slow_last_block_makes_the_source_wait() -> None:
    gauge = Gauge()

    @af.block(queue_size=8, name="fast")
    async def fast(x: int) -> int:
        return x

    @af.block(workers=2, queue_size=4, name="slow")
    async def slow(x: int) -> int:
        gauge.enter()
        try:
            await asyncio.sleep(0.001)
            return x
        finally:
            gauge.leave(x)

    pipe = af.Pipeline(fast, slow)
    source = ScriptedSource(range(300))
    read_ahead: list[int] = []
    stop = asyncio.Event()

    async def sample() -> None:
        while not stop.is_set():
            read_ahead.append(source.yielded - len(gauge.finished))
            await asyncio.sleep(0)

    async with asyncio.TaskGroup() as tg:
        sampler = tg.create_task(sample())
        outputs = await pipe.run(source)
        stop.set()
        await sampler

    assert outputs == list(range(300))
    # The source ran ahead of the slow block only as far as the edges allow.
    assert max(read_ahead) <= capacity(fast, slow)
    # It did run ahead (the edges filled), so the bound above was really exercised.
    assert max(read_ahead) > 8


# -- overflow ---------------------------------------------------------------------------------


def _overflow_pipeline(
    overflow: Literal["drop_newest", "drop_oldest"],
) -> tuple[af.Pipeline, list[int], Callable[[], AsyncIterator[int]]]:
    """A block stuck on item 0 while a source offers items 1..9 to its queue of 2."""
    started = asyncio.Event()
    exhausted = asyncio.Event()
    calls: list[int] = []

    @af.block(queue_size=2, overflow=overflow, name="leaky")
    async def leaky(x: int) -> int:
        calls.append(x)
        if x == 0:
            started.set()
            await exhausted.wait()
        return x

    async def source() -> AsyncIterator[int]:
        yield 0
        await started.wait()
        for i in range(1, 10):
            yield i
            await asyncio.sleep(0)  # a paced source: the block gets every chance to read
        exhausted.set()

    return af.Pipeline(leaky), calls, source


@pytest.mark.parametrize(
    ("overflow", "kept"), [("drop_newest", [0, 1, 2]), ("drop_oldest", [0, 8, 9])]
)
async def test_overflow_policies_drop_and_count(
    overflow: Literal["drop_newest", "drop_oldest"], kept: list[int]
) -> None:
    pipe, calls, source = _overflow_pipeline(overflow)

    async with asyncio.timeout(10):
        outputs = await pipe.run(source())

    assert outputs == kept
    assert calls == kept  # dropped items never reached the function
    stats = pipe.statistics()["leaky"]
    assert stats.received == 10
    assert stats.dropped == 7
    assert stats.dropped_by == {"overflow": 7}
    assert stats.completed == 3
    assert stats.balanced


# -- max_age ----------------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [1, 3])
async def test_stale_items_are_dropped_before_the_block_works_on_them(workers: int) -> None:
    max_age = 0.25
    release = asyncio.Event()
    fresh = asyncio.Event()
    seen: list[int] = []

    @af.block(name="hold")
    async def hold(x: int) -> int:
        if x == 0:
            await release.wait()
        return x

    @af.block(max_age=max_age, workers=workers, name="budget")
    async def budget(x: int) -> int:
        seen.append(x)
        return x

    pipe = af.Pipeline(hold, budget)

    async def source() -> AsyncIterator[int]:
        for i in range(5):
            yield i
        await fresh.wait()
        for i in range(5, 10):
            yield i

    async def drive() -> None:
        # Items 0..4 sit behind the stuck item 0 until they are older than the budget.
        await asyncio.sleep(max_age + 0.1)
        release.set()
        await wait_for(lambda: pipe.statistics()["budget"].dropped == 5, "stale drops")
        fresh.set()

    async with asyncio.TaskGroup() as tg:
        tg.create_task(drive())
        outputs = await pipe.run(source())

    assert outputs == [5, 6, 7, 8, 9]
    assert seen == [5, 6, 7, 8, 9]  # the function never ran for a stale item
    stats = pipe.statistics()["budget"]
    assert stats.received == 10
    assert stats.dropped_by == {"stale": 5}
    assert stats.dropped == 5
    assert stats.completed == 5
    assert stats.balanced


async def _identity_async(x: int) -> int:
    return x
