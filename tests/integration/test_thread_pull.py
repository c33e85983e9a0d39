"""The one-worker thread block, whose thread takes items from its input itself.

Each test here is about something a user of a single-device block (one model, one thread) would
notice: the thread it runs on, order across failures and retries, the books under overload from
a live source, and a clean stop while a call is running.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator

import pytest

import aioflow as af

pytestmark = pytest.mark.integration


def books_balance(rec: af.BlockStatistics) -> bool:
    return rec.received == (
        rec.completed + rec.dropped + rec.skipped + rec.failed + rec.in_flight + rec.queue_depth
    )


async def test_setup_calls_and_teardown_share_one_thread() -> None:
    class Model(af.Block):
        def __init__(self) -> None:
            super().__init__(name="model")
            self.threads: set[int] = set()

        def setup(self) -> None:
            self.threads.add(threading.get_ident())

        def process(self, item: int) -> int:
            self.threads.add(threading.get_ident())
            return item * 2

        def teardown(self) -> None:
            self.threads.add(threading.get_ident())

    model = Model()
    out = await af.Pipeline(model).run(range(200))
    assert out == [i * 2 for i in range(200)]
    assert len(model.threads) == 1
    assert threading.get_ident() not in model.threads  # never the event loop's thread


async def test_a_retried_item_keeps_its_place_in_the_order() -> None:
    failures = {3: 2, 7: 1}  # item -> how many times it fails before succeeding

    @af.block(on_error=af.Retry(attempts=3, backoff=0.001))
    def flaky(item: int) -> int:
        if failures.get(item, 0) > 0:
            failures[item] -= 1
            msg = f"transient failure on {item}"
            raise RuntimeError(msg)
        time.sleep(0.0005)
        return item

    pipe = af.Pipeline(flaky)
    out = await pipe.run(range(50))
    assert out == list(range(50))
    rec = pipe.statistics()["flaky"]
    assert rec.retried == 3
    assert rec.completed == 50


async def test_skipped_items_leave_a_gap_and_the_rest_stays_in_order() -> None:
    @af.block(on_error="skip")
    def picky(item: int) -> int:
        if item % 10 == 4:
            msg = f"item {item} is bad"
            raise ValueError(msg)
        return item

    pipe = af.Pipeline(picky)
    out = await pipe.run(range(100))
    assert out == [i for i in range(100) if i % 10 != 4]
    rec = pipe.statistics()["picky"]
    assert rec.skipped == 10
    assert books_balance(rec)


async def test_a_generator_failing_midway_keeps_its_outputs_and_fails_the_run() -> None:
    @af.block
    def explode(item: int):  # type: ignore[no-untyped-def]
        yield item
        if item == 5:
            msg = "broke after one output"
            raise RuntimeError(msg)
        yield -item

    got: list[int] = []

    async def consume() -> None:
        async for x in af.Pipeline(explode).stream(range(10)):
            got.append(x)

    with pytest.raises(ExceptionGroup) as info:
        await consume()
    [err] = info.value.exceptions
    assert isinstance(err, af.BlockError)
    assert err.block == "explode"
    assert "broke after one output" in str(err)
    assert got[:11] == [0, 0, 1, -1, 2, -2, 3, -3, 4, -4, 5]


async def camera(frames: int, period: float) -> AsyncIterator[int]:
    for i in range(frames):
        await asyncio.sleep(period)
        yield i


@pytest.mark.parametrize("queue_size", [1, 3])
async def test_a_leaky_thread_block_under_overload_counts_every_drop(queue_size: int) -> None:
    @af.block(queue_size=queue_size, overflow="drop_oldest")
    def model(frame: int) -> int:
        time.sleep(0.003)  # slower than the camera
        return frame

    pipe = af.Pipeline(model)
    out = await pipe.run(camera(300, 0.0005))
    rec = pipe.statistics()["model"]
    assert out == sorted(out)  # newer frames only ever follow older ones
    assert rec.dropped_by.get("overflow", 0) > 0
    assert rec.received == 300
    assert rec.completed == len(out)
    assert rec.completed + rec.dropped == 300
    assert books_balance(rec)


async def test_max_age_is_checked_just_before_the_call() -> None:
    @af.block(max_age=0.004, queue_size=16)
    def model(frame: int) -> int:
        time.sleep(0.003)
        return frame

    pipe = af.Pipeline(model)
    out = await pipe.run(range(40))  # all 40 arrive at once: most age while waiting
    rec = pipe.statistics()["model"]
    assert rec.dropped_by.get("stale", 0) > 0
    assert rec.completed == len(out)
    assert rec.completed + rec.dropped == 40
    assert out == sorted(out)


async def test_leaving_the_stream_during_a_call_stops_the_thread() -> None:
    started = threading.Event()

    @af.block(name="slow_model")
    def slow(item: int) -> int:
        started.set()
        time.sleep(0.05)
        return item

    async with contextlib.aclosing(af.Pipeline(slow).stream(range(1000))) as outputs:
        first = await anext(outputs)
        assert first == 0
    assert started.is_set()
    assert not [t for t in threading.enumerate() if "slow_model" in t.name]


@pytest.mark.parametrize("workers", [1, 3])
async def test_a_consumer_that_stops_reading_holds_the_threads_back(workers: int) -> None:
    calls = 0
    lock = threading.Lock()

    @af.block(queue_size=2, workers=workers)
    def count(item: int) -> int:
        nonlocal calls
        with lock:
            calls += 1
        return item

    @af.block(queue_size=2)
    async def sink(item: int) -> int:
        await asyncio.sleep(0)
        return item

    pipe = count >> sink
    async with contextlib.aclosing(pipe.stream(range(10_000))) as outputs:
        await anext(outputs)
        previous = -1
        while calls != previous:  # until everything is full and the threads wait
            previous = calls
            await asyncio.sleep(0.05)
        # Taken by us 1, the output edge 64, sink 2 queued + 1 in hand, and count at most its
        # queue_size + workers (docs/guarantees.md): its threads hand each result to the loop
        # and go on with the next item until the loop pauses them, so the finished items
        # waiting for room may outnumber the threads while its input holds fewer (a run on a
        # loaded machine called 72 with 3 threads: 4 finished, 1 queued).
        held = pipe.statistics()["count"]
        assert held.in_flight + held.queue_depth <= 2 + workers
        assert 64 <= calls <= 1 + 64 + 2 + 1 + 2 + workers


# -- several workers --------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [2, 3])
async def test_several_threads_keep_input_order_whatever_each_call_takes(workers: int) -> None:
    @af.block(workers=workers)
    def uneven(item: int) -> int:
        time.sleep(0.004 if item % 3 == 0 else 0.0005)  # every third call is slow
        return item

    pipe = af.Pipeline(uneven)
    out = await pipe.run(range(120))
    assert out == list(range(120))
    rec = pipe.statistics()["uneven"]
    assert rec.completed == 120
    assert books_balance(rec)


async def test_several_threads_really_run_at_once() -> None:
    lock = threading.Lock()
    active = 0
    peak = 0

    @af.block(workers=3)
    def busy(item: int) -> int:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        time.sleep(0.003)
        with lock:
            active -= 1
        return item

    out = await af.Pipeline(busy).run(range(60))
    assert out == list(range(60))
    assert peak == 3


async def test_unordered_threads_let_fast_items_overtake_a_slow_one() -> None:
    release = threading.Event()

    @af.block(workers=2, ordered=False)
    def model(item: int) -> int:
        if item == 0:
            release.wait(5)  # item 0 is held until the others are out
        return item

    got: list[int] = []
    async for x in af.Pipeline(model).stream(range(6)):
        got.append(x)
        if len(got) == 5:
            release.set()
    assert got[:5] == [1, 2, 3, 4, 5]
    assert got[5] == 0


async def test_a_retry_on_one_thread_keeps_the_order_of_the_others() -> None:
    failed: set[int] = set()

    @af.block(workers=3, on_error=af.Retry(attempts=2, backoff=0.001))
    def flaky(item: int) -> int:
        time.sleep(0.0005)
        if item % 7 == 3 and item not in failed:
            failed.add(item)
            msg = f"transient failure on {item}"
            raise ConnectionError(msg)
        return item

    pipe = af.Pipeline(flaky)
    out = await pipe.run(range(70))
    assert out == list(range(70))
    rec = pipe.statistics()["flaky"]
    assert rec.retried == 10
    assert books_balance(rec)


async def test_a_slow_oldest_item_holds_the_other_threads_to_the_window() -> None:
    release = threading.Event()
    lock = threading.Lock()
    started: list[int] = []

    @af.block(workers=3)
    def model(item: int) -> int:
        with lock:
            started.append(item)
        if item == 0:
            release.wait(30)  # set by watch() below; the timeout only keeps a failure from hanging
        return item

    async def watch() -> None:
        while len(started) < 3:
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.05)  # time for a thread to take a fourth item, were it allowed
        with lock:
            assert sorted(started) == [0, 1, 2]  # the window: 3 items from the oldest unfinished
        release.set()

    pipe = af.Pipeline(model)
    async with asyncio.TaskGroup() as tg:
        tg.create_task(watch())
        run = tg.create_task(pipe.run(range(40)))
    assert run.result() == list(range(40))
    assert books_balance(pipe.statistics()["model"])


async def test_cancelling_while_threads_wait_for_the_window_leaves_no_thread() -> None:
    started = threading.Semaphore(0)

    # Item 0 fails at once and waits out a long backoff on the event loop; the threads that
    # finished items 1 and 2 wait for it, in their threads, until the run is cancelled.
    @af.block(name="windowed_model", workers=3, on_error=af.Retry(attempts=2, backoff=30))
    def model(item: int) -> int:
        started.release()
        if item == 0:
            msg = "transient failure on 0"
            raise ConnectionError(msg)
        return item

    pipe = af.Pipeline(model)
    run = asyncio.create_task(pipe.run(range(100)))
    for _ in range(3):
        while not started.acquire(blocking=False):
            await asyncio.sleep(0.005)
    for _ in range(500):  # until item 0's failure reached the loop and its backoff began
        if pipe.statistics()["windowed_model"].retried == 1:
            break
        await asyncio.sleep(0.01)
    assert pipe.statistics()["windowed_model"].retried == 1
    await asyncio.sleep(0.02)  # the threads that finished items 1 and 2 now wait for item 0
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(run, 5)
    assert not [t for t in threading.enumerate() if "windowed_model" in t.name]


async def test_the_oldest_item_retried_while_the_others_wait_for_the_window() -> None:
    tries: dict[int, int] = {}
    lock = threading.Lock()

    @af.block(workers=3, on_error=af.Retry(attempts=2, backoff=0.001))
    def flaky(item: int) -> int:
        with lock:
            tries[item] = tries.get(item, 0) + 1
            first = tries[item] == 1
        if item % 10 == 0 and first:
            time.sleep(0.01)  # the other threads finish theirs and wait for this one
            msg = f"transient failure on {item}"
            raise ConnectionError(msg)
        return item

    pipe = af.Pipeline(flaky)
    out = await pipe.run(range(50))
    assert out == list(range(50))
    rec = pipe.statistics()["flaky"]
    assert rec.retried == 5
    assert books_balance(rec)
