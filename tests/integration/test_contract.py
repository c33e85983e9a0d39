"""The public API contract of DESIGN.md, checked as a user would, with a running pipeline: only
``import aioflow as af`` and the extras' namespaces, one test per promise, named after it.

The promises that need no event loop are in ``tests/unit/test_api_contract.py``."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import uvloop

import aioflow as af

pytestmark = pytest.mark.integration


def books_balance(stats: dict[str, af.BlockStatistics]) -> None:
    for name, s in stats.items():
        assert s.received == (
            s.completed + s.dropped + s.skipped + s.failed + s.in_flight + s.queue_depth
        ), (name, s)


def only_block_error(group: BaseExceptionGroup[Any]) -> af.BlockError:
    assert len(group.exceptions) == 1, group.exceptions
    err = group.exceptions[0]
    assert isinstance(err, af.BlockError), repr(err)
    return err


async def wait_until(condition: Callable[[], bool]) -> None:
    """Let the pipeline run until ``condition()`` holds (fail rather than hang)."""
    for _ in range(2000):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("never happened")


@af.block
async def inc(x: int) -> int:
    return x + 1


# -- the user's view ---------------------------------------------------------------------------


async def test_run_returns_outputs_in_order_from_an_iterable_or_an_async_iterable() -> None:
    @af.block(workers=4)
    async def jitter(x: int) -> int:
        await asyncio.sleep(0.002 * ((7 * x) % 5))
        return x

    pipe = af.Pipeline(inc, jitter, name="demo")

    async def agen() -> AsyncIterator[int]:
        for x in range(30):
            yield x

    assert await pipe.run(range(30)) == list(range(1, 31))
    assert await pipe.run(agen()) == list(range(1, 31))


async def test_rshift_pipeline_runs_like_the_pipeline_it_equals() -> None:
    @af.block(executor="thread", workers=2)
    def resize(x: int) -> int:
        return x * 10

    composed = inc >> resize >> (lambda x: x - 1)
    assert isinstance(composed, af.Pipeline)
    assert await composed.run(range(5)) == [(x + 1) * 10 - 1 for x in range(5)]


async def test_thread_block_runs_in_its_own_threads_off_the_loop() -> None:
    loop_thread = threading.get_ident()

    @af.block(executor="thread", workers=2)
    def where(x: int) -> int:
        return threading.get_ident()

    idents = await af.Pipeline(where).run(range(10))
    assert loop_thread not in idents
    assert len(set(idents)) <= 2


@pytest.mark.parametrize(
    "options",
    [{}, {"workers": 2}, {"timeout": 5.0}, {"key": lambda x: x % 2}],
    ids=["one thread", "two threads", "timeout", "keyed"],
)
async def test_a_thread_block_returning_a_coroutine_fails_its_item_clearly(
    options: dict[str, Any],
) -> None:
    # A lambda calling a coroutine function is a plain function: it runs in a thread, where
    # nothing awaits what it returns. Handed on, the coroutine would never run (and Python
    # warns of it, far from the cause): each item fails, naming the block and what to do.
    async def double(x: int) -> int:
        return 2 * x

    fetch = af.block(lambda x: double(x), name="fetch", **options)
    with pytest.raises(ExceptionGroup) as caught:
        await af.Pipeline(fetch).run([1, 2, 3])
    # (With two threads, both may have failed an item before the run stopped.)
    assert 1 <= len(caught.value.exceptions) <= options.get("workers", 1)
    for err in caught.value.exceptions:
        assert isinstance(err, af.BlockError)
        assert err.block == "fetch"
        assert isinstance(err.__cause__, TypeError)
        assert "returned a coroutine" in str(err)
        assert "async def" in str(err)

    skipping = af.block(lambda x: double(x), name="fetch", on_error="skip", **options)
    pipe = af.Pipeline(skipping)
    assert await pipe.run([1, 2, 3]) == []
    stats = pipe.statistics()
    assert stats["fetch"].skipped == 3
    books_balance(stats)


async def test_a_coroutine_returned_to_a_cancelled_run_is_closed_too() -> None:
    # The run is cancelled while the thread call runs (the general path: a timeout set); the
    # call then returns a coroutine nobody waits for. It is closed in the thread: Python's
    # "never awaited" warning, far from the cause, does not come.
    async def double(x: int) -> int:
        return 2 * x

    def slow(x: int) -> Any:
        time.sleep(0.1)
        return double(x)

    unraisable: list[Any] = []
    hook = sys.unraisablehook
    sys.unraisablehook = unraisable.append
    try:
        run = asyncio.ensure_future(af.Pipeline(af.block(slow, timeout=5.0)).run([1]))
        await asyncio.sleep(0.02)
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run
        await asyncio.sleep(0.2)  # the thread's call returns
        gc.collect()
    finally:
        sys.unraisablehook = hook
    assert unraisable == []


async def test_a_thread_generator_yielding_a_coroutine_fails_its_item_after_its_outputs() -> None:
    # The same mistake in a plain generator (it runs in a thread): the outputs yielded before
    # the coroutine go on, then the item fails, naming the block.
    async def double(x: int) -> int:
        return 2 * x

    @af.block(name="split", on_error="skip")
    def split(x: int) -> Iterator[Any]:
        yield x
        yield double(x)

    pipe = af.Pipeline(split)
    assert await pipe.run([1, 2]) == [1, 2]
    stats = pipe.statistics()
    assert stats["split"].skipped == 2

    @af.block(name="split")
    def failing(x: int) -> Iterator[Any]:
        yield double(x)

    with pytest.raises(ExceptionGroup) as caught:
        await af.Pipeline(failing).run([1])
    err = only_block_error(caught.value)
    assert err.block == "split"
    assert "yielded a coroutine" in str(err)


async def test_async_generator_block_makes_zero_to_n_outputs() -> None:
    @af.block
    async def split(x: list[int]) -> AsyncIterator[int]:
        for part in x:
            yield part

    assert await af.Pipeline(split).run([[1, 2], [], [3]]) == [1, 2, 3]
    stats = af.Pipeline(split)
    await stats.run([[1, 2], [], [3]])
    s = stats.statistics()["split"]
    assert (s.received, s.completed, s.emitted) == (3, 3, 3)


async def test_stateful_block_runs_setup_process_teardown_once_each() -> None:
    calls: list[str] = []

    class Tracker(af.Block):
        async def setup(self) -> None:
            calls.append("setup")
            self.total = 0

        async def process(self, item: int) -> int:
            self.total += item
            return self.total

        async def teardown(self) -> None:
            calls.append("teardown")

    assert await af.Pipeline(Tracker()).run([1, 2, 3]) == [1, 3, 6]
    assert calls == ["setup", "teardown"]


async def test_stream_yields_outputs_in_order() -> None:
    pipe = af.Pipeline(inc)
    assert [out async for out in pipe.stream(range(10))] == list(range(1, 11))


async def test_leaving_stream_early_stops_the_run_and_tears_down() -> None:
    torn: list[bool] = []
    taken = 0

    class Slowish(af.Block):
        async def process(self, item: int) -> int:
            return item

        async def teardown(self) -> None:
            torn.append(True)

    def endless() -> Iterator[int]:
        nonlocal taken
        while True:
            taken += 1
            yield taken

    pipe = af.Pipeline(Slowish())
    async with contextlib.aclosing(pipe.stream(endless())) as outs:
        async for out in outs:
            if out == 5:
                break
    assert torn == [True]
    before = taken
    await asyncio.sleep(0.05)
    assert taken == before  # nothing reads the source any more
    assert await pipe.run([1]) == [1]  # and the pipeline is free to run again


async def test_open_submit_statistics_stop() -> None:
    pipe = af.Pipeline(inc, name="svc")
    async with pipe.open() as running:
        assert await running.submit(1) == 2
        results = await asyncio.gather(*(running.submit(x) for x in range(20)))
        assert results == [x + 1 for x in range(20)]
        stats = running.statistics()
        assert set(stats) == {"inc"}
        assert stats["inc"].received == 21
        await running.stop()
        with pytest.raises(af.AioflowError):
            await running.submit(3)
    assert pipe.statistics()["inc"].completed == 21


async def test_leaving_open_drains_items_in_flight() -> None:
    gate = asyncio.Event()

    @af.block(workers=4)
    async def slow(x: int) -> int:
        await gate.wait()
        return x * 2

    pipe = af.Pipeline(slow)
    async with pipe.open() as running:
        pending = [asyncio.ensure_future(running.submit(x)) for x in range(4)]
        await asyncio.sleep(0.01)
        asyncio.get_running_loop().call_later(0.02, gate.set)
    assert [p.result() for p in pending] == [0, 2, 4, 6]


async def test_pipe_statistics_after_a_run_is_the_last_runs_mapping() -> None:
    @af.block
    async def evens(x: int) -> AsyncIterator[int]:
        if x % 2 == 0:
            yield x

    pipe = af.Pipeline(inc, evens, name="s")
    await pipe.run(range(10))
    stats = pipe.statistics()
    assert list(stats) == ["inc", "evens"]
    assert stats["inc"].received == stats["inc"].completed == stats["inc"].emitted == 10
    assert stats["evens"].received == 10
    assert stats["evens"].emitted == 5
    books_balance(stats)


async def test_af_run_runs_on_a_uvloop_loop() -> None:
    async def which() -> type:
        return type(asyncio.get_running_loop())

    def in_thread() -> type:
        return af.run(which())

    loop_type = await asyncio.to_thread(in_thread)
    assert issubclass(loop_type, uvloop.Loop)


# -- options at work ---------------------------------------------------------------------------


async def test_several_workers_keep_output_order_by_default() -> None:
    @af.block(workers=4)
    async def call_service(x: int) -> int:
        await asyncio.sleep(0.001 * (10 - x % 10))
        return x

    assert await af.Pipeline(call_service).run(range(40)) == list(range(40))


async def test_workers_is_how_many_items_are_in_flight_at_once() -> None:
    active = 0
    most = 0

    @af.block(workers=4)
    async def call_service(x: int) -> int:
        nonlocal active, most
        active += 1
        most = max(most, active)
        await asyncio.sleep(0.005)
        active -= 1
        return x

    assert await af.Pipeline(call_service).run(range(20)) == list(range(20))
    assert most == 4


async def test_key_processes_one_item_of_a_key_at_a_time_in_order() -> None:
    active: dict[int, int] = {}
    seen: dict[int, list[int]] = {}
    overlap = []

    @af.block(workers=4, key=lambda item: item[0])
    async def per_camera(item: tuple[int, int]) -> tuple[int, int]:
        cam, n = item
        active[cam] = active.get(cam, 0) + 1
        overlap.append(active[cam])
        await asyncio.sleep(0.001 * ((n * 3) % 4))
        seen.setdefault(cam, []).append(n)
        active[cam] -= 1
        return item

    items = [(n % 3, n) for n in range(30)]
    assert await af.Pipeline(per_camera).run(items) == items
    assert max(overlap) == 1
    assert seen == {cam: [n for c, n in items if c == cam] for cam in range(3)}


async def test_on_error_skip_counts_and_continues() -> None:
    @af.block(on_error="skip")
    async def picky(x: int) -> int:
        if x % 3 == 0:
            raise ValueError(x)
        return x

    pipe = af.Pipeline(picky)
    assert await pipe.run(range(9)) == [1, 2, 4, 5, 7, 8]
    s = pipe.statistics()["picky"]
    assert (s.skipped, s.failed, s.completed) == (3, 0, 6)
    books_balance(pipe.statistics())


async def test_batch_block_gets_lists_and_returns_lists_of_equal_length() -> None:
    sizes: list[int] = []

    @af.block(batch=af.Batch(max_size=4, max_wait=0.005))
    async def model(xs: list[int]) -> list[int]:
        sizes.append(len(xs))
        return [x * 2 for x in xs]

    assert await af.Pipeline(model).run(range(10)) == [x * 2 for x in range(10)]
    assert max(sizes) <= 4
    assert sum(sizes) == 10


async def test_batch_function_returning_the_wrong_number_is_a_block_error_naming_both() -> None:
    @af.block(batch=af.Batch(max_size=3, max_wait=0.01))
    def model(xs: list[int]) -> list[int]:
        return xs[:-1]

    with pytest.raises(ExceptionGroup) as info:
        await af.Pipeline(model).run([1, 2, 3])
    # one BlockError per item of the batch: every item's failure is delivered
    errors = info.value.exceptions
    assert sorted(e.item for e in errors) == ["1", "2", "3"]  # type: ignore[union-attr]
    for err in errors:
        assert isinstance(err, af.BlockError)
        assert err.block == "model"
        assert "returned 2 results for a batch of 3 items" in str(err)


@pytest.mark.parametrize("overflow", ["drop_oldest", "drop_newest"])
async def test_leaky_overflow_drops_are_counted_in_the_receiving_block(overflow: str) -> None:
    gate = asyncio.Event()

    @af.block(queue_size=2, overflow=overflow)
    async def slow(x: int) -> int:
        await gate.wait()
        return x

    async def source() -> AsyncIterator[int]:
        for x in range(20):
            yield x
        gate.set()

    pipe = af.Pipeline(slow)
    outputs = await pipe.run(source())
    s = pipe.statistics()["slow"]
    assert s.received == 20
    assert s.dropped == 20 - len(outputs) > 0
    assert s.dropped_by == {"overflow": s.dropped}
    if overflow == "drop_newest":
        assert outputs[:1] == [0]
    else:
        assert outputs[-1] == 19
    books_balance(pipe.statistics())


# -- precise semantics -------------------------------------------------------------------------


async def test_statistics_record_fields_are_named_as_documented() -> None:
    pipe = af.Pipeline(inc)
    await pipe.run(range(3))
    s = pipe.statistics()["inc"]
    ints = ("received", "completed", "emitted", "dropped", "skipped", "failed", "retried")
    ints += ("in_flight", "queue_depth")
    for field in ints:
        assert isinstance(getattr(s, field), int), field
    for field in ("busy_s", "latency_p50_s", "latency_p99_s"):
        assert isinstance(getattr(s, field), float), field
    assert isinstance(s.dropped_by, dict | type(s.dropped_by))
    assert dict(s.dropped_by) == {}
    assert (s.received, s.completed, s.emitted) == (3, 3, 3)
    with pytest.raises(AttributeError):
        s.received = 5  # type: ignore[misc]  # a frozen record


async def test_books_balance_while_running_and_after() -> None:
    gate = asyncio.Event()

    @af.block(workers=2, queue_size=3)
    async def held(x: int) -> int:
        await gate.wait()
        return x

    pipe = af.Pipeline(inc, held)
    async with pipe.open() as running:
        pending = [asyncio.ensure_future(running.submit(x)) for x in range(5)]
        for _ in range(500):
            stats = running.statistics()
            if stats["held"].in_flight == 2 and stats["held"].queue_depth == 3:
                break
            await asyncio.sleep(0.002)
        stats = running.statistics()
        assert stats["held"].in_flight == 2
        assert stats["held"].queue_depth == 3
        books_balance(stats)
        gate.set()
        await asyncio.gather(*pending)
    books_balance(pipe.statistics())


async def test_a_block_holds_at_most_queue_size_plus_workers_items() -> None:
    gate = asyncio.Event()
    read = 0

    @af.block(queue_size=3, workers=2)
    async def first(x: int) -> int:
        return x

    @af.block(queue_size=4, workers=1)
    async def held(x: int) -> int:
        await gate.wait()
        return x

    async def source() -> AsyncIterator[int]:
        nonlocal read
        for x in range(100):
            read += 1
            yield x

    pipe = af.Pipeline(first, held)
    task = asyncio.ensure_future(pipe.run(source()))
    last = -1
    while last != read:  # until the source stops being read
        last = read
        await asyncio.sleep(0.05)
    stats = pipe.statistics()
    for name, blk in (("first", first), ("held", held)):
        s = stats[name]
        assert s.in_flight + s.queue_depth <= blk.options.queue_size + blk.options.workers
    assert (stats["held"].in_flight, stats["held"].queue_depth) == (1, 4)  # it is full
    # read ahead from the source: bounded by the sum over blocks
    assert read <= (3 + 2) + (4 + 1), read
    gate.set()
    assert await task == list(range(100))


async def test_max_age_counts_from_when_the_source_yielded() -> None:
    @af.block(executor="thread")
    def slow(x: int) -> int:
        threading.Event().wait(0.7)
        return x

    @af.block(max_age=0.5)
    async def fresh_only(x: int) -> int:
        return x

    async def late_source() -> AsyncIterator[int]:
        await asyncio.sleep(0.7)  # before yielding: not part of the item's age
        yield 1

    stale = af.Pipeline(slow, fresh_only)
    assert await stale.run([1]) == []
    s = stale.statistics()["fresh_only"]
    assert (s.received, s.dropped, dict(s.dropped_by)) == (1, 1, {"stale": 1})

    young = af.Pipeline(fresh_only)
    assert await young.run(late_source()) == [1]
    assert young.statistics()["fresh_only"].dropped == 0


async def test_max_age_counts_from_submit() -> None:
    @af.block
    async def slow(x: int) -> int:
        await asyncio.sleep(0.7 if x else 0)
        return x

    @af.block(max_age=0.5)
    async def fresh_only(x: int) -> int:
        return x

    async with af.Pipeline(slow, fresh_only).open() as running:
        await asyncio.sleep(0.7)  # the service was open a while: that is not the item's age
        assert await running.submit(0) == 0
        with pytest.raises(af.ItemDropped) as info:
            await running.submit(1)
        assert info.value.reason == "stale"
        assert info.value.block == "fresh_only"


async def test_submit_awaits_backpressure_instead_of_failing() -> None:
    gate = asyncio.Event()

    @af.block(queue_size=1)
    async def slow(x: int) -> int:
        await gate.wait()
        return x

    async with af.Pipeline(slow).open() as running:
        callers = [asyncio.ensure_future(running.submit(x)) for x in range(4)]
        await wait_until(lambda: running.statistics()["slow"].queue_depth == 1)
        await asyncio.sleep(0.02)  # the other two callers stay waiting for room
        s = running.statistics()["slow"]
        assert (s.received, s.in_flight, s.queue_depth) == (2, 1, 1)  # the others wait for room
        assert not any(c.done() for c in callers)
        gate.set()
        assert await asyncio.gather(*callers) == [0, 1, 2, 3]


async def test_pipe_statistics_during_a_run_is_the_current_runs_mapping() -> None:
    gate = asyncio.Event()

    @af.block
    async def held(x: int) -> int:
        await gate.wait()
        return x

    pipe = af.Pipeline(held)
    assert pipe.statistics()["held"].received == 0  # before any run: zeros
    task = asyncio.ensure_future(pipe.run([1, 2]))
    await wait_until(lambda: pipe.statistics()["held"].queue_depth == 1)
    s = pipe.statistics()["held"]
    assert (s.received, s.in_flight, s.queue_depth) == (2, 1, 1)
    gate.set()
    assert await task == [1, 2]
    assert pipe.statistics()["held"].completed == 2


async def test_submit_returns_a_list_for_several_outputs() -> None:
    @af.block
    async def split(x: int) -> AsyncIterator[int]:
        for n in range(x):
            yield n

    async with af.Pipeline(split).open() as running:
        assert await running.submit(3) == [0, 1, 2]
        assert await running.submit(1) == 0


async def test_submit_raises_item_dropped_filtered() -> None:
    @af.block
    async def evens(x: int) -> AsyncIterator[int]:
        if x % 2 == 0:
            yield x

    async with af.Pipeline(evens).open() as running:
        with pytest.raises(af.ItemDropped) as info:
            await running.submit(3)
        assert info.value.reason == "filtered"
        assert info.value.block == "evens"
        assert await running.submit(4) == 4


async def test_submit_raises_item_dropped_skipped() -> None:
    @af.block(on_error="skip")
    async def picky(x: int) -> int:
        if x == 3:
            raise ValueError(x)
        return x

    async with af.Pipeline(picky).open() as running:
        with pytest.raises(af.ItemDropped) as info:
            await running.submit(3)
        assert info.value.reason == "skipped"
        assert info.value.block == "picky"


async def test_submit_raises_item_dropped_by_overflow() -> None:
    gate = asyncio.Event()

    @af.block(queue_size=1, overflow="drop_newest")
    async def slow(x: int) -> int:
        await gate.wait()
        return x

    async with af.Pipeline(slow).open() as running:
        first = asyncio.ensure_future(running.submit(0))  # in process
        await asyncio.sleep(0.02)
        second = asyncio.ensure_future(running.submit(1))  # queued
        await asyncio.sleep(0.02)
        with pytest.raises(af.ItemDropped) as info:
            await running.submit(2)  # no room: the newest is dropped
        assert info.value.reason == "overflow"
        gate.set()
        assert await first == 0
        assert await second == 1


async def test_submit_raises_the_bare_block_error_and_others_are_not_affected() -> None:
    @af.block(workers=4)
    async def fragile(x: int) -> int:
        await asyncio.sleep(0.001)
        if x == 2:
            msg = "bad frame"
            raise ValueError(msg)
        return x

    async with af.Pipeline(fragile).open() as running:
        results = await asyncio.gather(
            *(running.submit(x) for x in range(5)), return_exceptions=True
        )
        err = results[2]
        assert isinstance(err, af.BlockError)
        assert not isinstance(err, BaseExceptionGroup)
        assert isinstance(err.__cause__, ValueError)
        assert err.block == "fragile"
        assert [r for i, r in enumerate(results) if i != 2] == [0, 1, 3, 4]
        assert await running.submit(7) == 7  # the service keeps running


async def test_run_raises_a_group_of_block_errors_with_cause_block_item_attempt() -> None:
    @af.block
    async def detect(x: int) -> int:
        if x == 3:
            msg = "no model"
            raise RuntimeError(msg)
        return x

    with pytest.raises(ExceptionGroup) as info:
        await af.Pipeline(inc, detect).run(range(10))
    err = only_block_error(info.value)
    assert err.block == "detect"
    assert err.item == "3"  # the item detect got: inc made 3 from 2
    assert err.attempt == 1
    assert isinstance(err.__cause__, RuntimeError)
    assert str(err.__cause__) == "no model"
    assert "detect" in str(err)


async def test_stream_raises_a_group_of_block_errors() -> None:
    @af.block
    async def detect(x: int) -> int:
        if x == 3:
            raise KeyError(x)
        return x

    got: list[int] = []

    async def consume() -> None:
        async for out in af.Pipeline(detect).stream(range(10)):
            got.append(out)

    with pytest.raises(ExceptionGroup) as info:
        await consume()
    err = only_block_error(info.value)
    assert err.block == "detect"
    assert isinstance(err.__cause__, KeyError)
    assert got == [0, 1, 2]


async def test_several_concurrent_failures_arrive_as_one_group() -> None:
    both = asyncio.Barrier(2)

    @af.block(workers=2)
    async def fragile(x: int) -> int:
        await both.wait()
        raise ValueError(x)

    with pytest.raises(ExceptionGroup) as info:
        await af.Pipeline(fragile).run([1, 2])
    assert len(info.value.exceptions) == 2
    assert all(isinstance(e, af.BlockError) for e in info.value.exceptions)
    assert sorted(e.__cause__.args[0] for e in info.value.exceptions) == [1, 2]  # type: ignore[union-attr]


async def test_retry_attempts_count_the_first_call() -> None:
    calls: list[int] = []

    @af.block(on_error=af.Retry(attempts=3, backoff=0.001))
    async def flaky(x: int) -> int:
        calls.append(x)
        raise ConnectionError(x)

    pipe = af.Pipeline(flaky)
    with pytest.raises(ExceptionGroup) as info:
        await pipe.run([7])
    err = only_block_error(info.value)
    assert calls == [7, 7, 7]
    assert err.attempt == 3
    assert isinstance(err.__cause__, ConnectionError)
    s = pipe.statistics()["flaky"]
    assert (s.retried, s.failed) == (2, 1)


async def test_retry_succeeds_on_a_later_attempt() -> None:
    calls = 0

    @af.block(on_error=af.Retry(attempts=3, backoff=0.001))
    async def flaky(x: int) -> int:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ConnectionError
        return x

    assert await af.Pipeline(flaky).run([5]) == [5]
    assert calls == 3


async def test_generator_block_is_retried_only_before_its_first_output() -> None:
    calls: list[int] = []

    @af.block(on_error=af.Retry(attempts=3, backoff=0.001))
    async def parts(x: int) -> AsyncIterator[int]:
        calls.append(x)
        if x == 1:
            raise ConnectionError("before any output")
        yield x
        raise ConnectionError("after an output")

    with pytest.raises(ExceptionGroup) as early:
        await af.Pipeline(parts).run([1])
    assert calls == [1, 1, 1]
    assert only_block_error(early.value).attempt == 3

    calls.clear()
    with pytest.raises(ExceptionGroup) as late:
        await af.Pipeline(parts).run([2])
    assert calls == [2]  # it had emitted: not retried
    assert only_block_error(late.value).attempt == 1


async def test_teardown_runs_once_for_every_block_whose_setup_completed_on_error() -> None:
    log: list[str] = []

    class Stage(af.Block):
        def __init__(self, fail_setup: bool = False, **options: Any) -> None:
            super().__init__(**options)
            self.fail_setup = fail_setup

        async def setup(self) -> None:
            if self.fail_setup:
                raise RuntimeError("no camera")
            log.append(f"setup {self.options.name}")

        async def process(self, item: int) -> int:
            if item == 2:
                raise ValueError(item)
            return item

        async def teardown(self) -> None:
            log.append(f"teardown {self.options.name}")

    with pytest.raises(ExceptionGroup):
        await af.Pipeline(Stage(name="a"), Stage(name="b")).run(range(5))
    assert sorted(log) == ["setup a", "setup b", "teardown a", "teardown b"]

    log.clear()
    with pytest.raises(ExceptionGroup) as info:
        await af.Pipeline(Stage(name="a"), Stage(fail_setup=True, name="b")).run(range(5))
    assert "teardown b" not in log
    assert log.count("teardown a") == log.count("setup a") <= 1
    assert any(isinstance(e, af.BlockError) and e.block == "b" for e in info.value.exceptions)


async def test_cancelling_the_awaiting_task_tears_down_and_leaves_no_task() -> None:
    started = asyncio.Event()
    torn: list[str] = []

    class Hang(af.Block):
        async def process(self, item: int) -> int:
            started.set()
            await asyncio.sleep(3600)
            return item

        async def teardown(self) -> None:
            torn.append("hang")

    @af.block(executor="thread")
    def resize(x: int) -> int:
        return x

    before = asyncio.all_tasks()
    threads_before = threading.active_count()
    task = asyncio.ensure_future(af.Pipeline(resize, Hang()).run(range(100)))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert torn == ["hang"]
    assert asyncio.all_tasks() - before - {asyncio.current_task()} == set()
    for _ in range(200):  # the block's thread pool is joined
        if threading.active_count() <= threads_before:
            break
        await asyncio.sleep(0.005)
    assert threading.active_count() <= threads_before


async def test_cancelled_error_raised_by_user_code_is_an_item_failure() -> None:
    @af.block
    async def awaits_a_cancelled_future(x: int) -> int:
        if x == 1:
            fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            fut.cancel()
            return await fut
        return x

    @af.block(executor="thread")
    def raises_it_in_a_thread(x: int) -> int:
        if x == 1:
            raise asyncio.CancelledError
        return x

    for blk in (awaits_a_cancelled_future, raises_it_in_a_thread):
        with pytest.raises(ExceptionGroup) as info:
            await af.Pipeline(blk).run(range(3))
        err = only_block_error(info.value)
        assert err.block == blk.options.name
        assert isinstance(err.__cause__, asyncio.CancelledError)
    async with af.Pipeline(raises_it_in_a_thread).open() as running:
        with pytest.raises(af.BlockError):
            await running.submit(1)
        assert await running.submit(2) == 2  # not taken as the end of the run


async def test_cancelling_a_thread_block_lets_the_running_call_return_and_skips_queued() -> None:
    running = threading.Event()
    release = threading.Event()
    done: list[int] = []

    @af.block(executor="thread", workers=1)
    def blocking(x: int) -> int:
        running.set()
        release.wait(5)
        done.append(x)
        return x

    task = asyncio.ensure_future(af.Pipeline(blocking).run(range(10)))
    await asyncio.to_thread(running.wait, 5)
    task.cancel()
    await asyncio.sleep(0.02)
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert done == [0]  # the running call returned; the queued ones never started


async def test_a_second_concurrent_run_is_a_graph_error_pointing_to_open_and_submit() -> None:
    gate = asyncio.Event()

    @af.block
    async def held(x: int) -> int:
        await gate.wait()
        return x

    pipe = af.Pipeline(held)
    first = asyncio.ensure_future(pipe.run([1]))
    await asyncio.sleep(0.01)
    with pytest.raises(af.GraphError) as info:
        await pipe.run([2])
    assert "open()" in str(info.value)
    assert "submit(" in str(info.value)
    with pytest.raises(af.GraphError):
        async with pipe.open():
            pass
    with pytest.raises(af.GraphError):
        async for _ in pipe.stream([3]):
            pass
    gate.set()
    assert await first == [1]


async def test_run_while_open_is_a_graph_error() -> None:
    pipe = af.Pipeline(inc)
    async with pipe.open() as running:
        with pytest.raises(af.GraphError, match=r"open\(\)"):
            await pipe.run([1])
        assert await running.submit(1) == 2


async def test_a_pipeline_runs_again_after_a_run() -> None:
    pipe = af.Pipeline(inc)
    assert await pipe.run(range(3)) == [1, 2, 3]
    assert await pipe.run(range(2)) == [1, 2]
    assert pipe.statistics()["inc"].received == 2  # the last run's figures
    with pytest.raises(ExceptionGroup):
        await pipe.run(["x"])  # a failed run ...
    assert await pipe.run([5]) == [6]  # ... leaves it runnable too
    async with pipe.open() as running:
        assert await running.submit(1) == 2


async def test_a_function_block_may_serve_in_two_pipelines() -> None:
    a = af.Pipeline(inc, name="a")
    b = af.Pipeline(inc, lambda x: x * 2, name="b")
    assert await a.run([1]) == [2]
    assert await b.run([1]) == [4]


async def test_a_block_error_never_cancels_the_stream_consumers_own_awaits() -> None:
    @af.block
    async def detect(x: int) -> int:
        if x == 1:
            raise ValueError(x)
        return x

    slept: list[bool] = []

    async def consume() -> None:
        async for out in af.Pipeline(detect).stream(range(5)):
            if out == 0:
                await asyncio.sleep(0.1)  # item 1 fails meanwhile
                slept.append(True)  # ...and this await was not cancelled

    with pytest.raises(ExceptionGroup) as info:
        await consume()
    assert slept == [True]
    assert only_block_error(info.value).block == "detect"


# -- extras: aioflow.io.video ------------------------------------------------------------------


async def test_frame_index_is_0_based_per_stream_and_a_list_tags_stream_ids(
    tmp_path: Path,
) -> None:
    from aioflow.io.video import Frame, video_source

    counts = {"door": 3, "gate": 5}
    for name, n in counts.items():
        (tmp_path / name).mkdir()
        for i in range(n):
            image = np.full((8, 8, 3), i * 10, np.uint8)
            cv2.imwrite(str(tmp_path / name / f"{i:02d}.png"), image)

    source = video_source([tmp_path / "door", tmp_path / "gate"])
    assert {k: v.live for k, v in source.statistics().items()} == {"door": False, "gate": False}
    frames = await af.Pipeline(lambda f: f).run(source)
    assert all(isinstance(f, Frame) for f in frames)
    for name, n in counts.items():
        mine = [f for f in frames if f.stream == name]
        assert [f.index for f in mine] == list(range(n))
        assert [int(f.image[0, 0, 0]) for f in mine] == [i * 10 for i in range(n)]


def test_video_source_live_none_decides_by_the_uri_and_true_false_override(
    tmp_path: Path,
) -> None:
    from aioflow.io.video import video_source

    def live(src: Any, **kw: Any) -> dict[str, bool]:
        source = video_source(src, **kw)
        try:
            return {k: v.live for k, v in source.statistics().items()}
        finally:
            source.close()

    (tmp_path / "stills").mkdir()
    assert live("rtsp://10.0.0.5/cam1") == {"cam1": True}
    assert live("http://10.0.0.5/feed.mjpg") == {"feed": True}
    assert live(0) == {"camera0": True}
    assert live(tmp_path / "clip.mp4") == {"clip": False}
    assert live(tmp_path / "stills") == {"stills": False}
    assert live("rtsp://10.0.0.5/cam1", live=False) == {"cam1": False}
    assert live(tmp_path / "stills", live=True) == {"stills": True}
