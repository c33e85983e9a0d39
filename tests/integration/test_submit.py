"""``pipe.open()`` and ``running.submit(item)``: request/response through a running pipeline.

Every test holds slow stages with :class:`asyncio.Event` gates and watches counters, never the
clock, except the ``max_age`` test, whose subject is time.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from conftest import books_balance, wait_until

import aioflow as af
from aioflow.testing import Recorder

pytestmark = pytest.mark.integration


async def test_submit_returns_the_output_of_its_item() -> None:
    @af.block
    async def inc(x: int) -> int:
        return x + 1

    @af.block
    def double(x: int) -> int:
        return 2 * x

    async with (inc >> double).open() as running:
        assert await running.submit(3) == 8
        assert await running.submit(10) == 22
        assert await running.submit(-1) == 0


async def test_a_thousand_concurrent_callers_each_get_their_own_answer() -> None:
    rng = random.Random(20240611)
    delays = [rng.choice((0.0, 0.0, 0.0002, 0.001)) for _ in range(1000)]

    @af.block(workers=4)
    async def triple(x: int) -> int:
        await asyncio.sleep(delays[x])
        return 3 * x

    @af.block(workers=3, ordered=False, queue_size=8)
    def add_seven(x: int) -> int:
        return x + 7

    @af.block(workers=5, ordered=False, queue_size=16)
    async def square(x: int) -> int:
        await asyncio.sleep(delays[(x * 7) % 1000])
        return x * x

    async def caller(i: int) -> tuple[int, int]:
        await asyncio.sleep(delays[-i] / 2)
        return i, await running.submit(i)

    pipe = af.Pipeline(triple, add_seven, square, name="thousand")
    async with pipe.open() as running:
        answers = await asyncio.gather(*(caller(i) for i in range(1000)))
        stats = running.statistics()

    # (3x + 7)^2 is different for every x >= 0: a caller given another's answer is caught.
    assert answers == [(i, (3 * i + 7) ** 2) for i in range(1000)]
    for name in ("triple", "add_seven", "square"):
        assert stats[name].received == stats[name].completed == 1000
        assert stats[name].in_flight == stats[name].queue_depth == 0


@af.block(executor="thread")
def thread_parts(x: int) -> Iterator[int]:
    for i in range(x):
        yield x + 100 * i


@af.block
async def async_parts(x: int) -> AsyncIterator[int]:
    for i in range(x):
        yield x + 100 * i


@af.block
async def fetched_parts(x: int) -> AsyncIterator[int]:
    # Each part takes some waiting to produce (a paged HTTP response, frames of a clip...).
    for i in range(x):
        if i:
            await asyncio.sleep(0.001)
        yield x + 100 * i


@pytest.mark.parametrize(
    "parts",
    [thread_parts, async_parts, fetched_parts],
    ids=["thread-generator", "async-generator", "async-generator-awaiting"],
)
@pytest.mark.parametrize("last", [True, False], ids=["last", "then-a-block"])
async def test_a_generator_making_several_outputs_makes_submit_return_a_list(
    parts: af.FunctionBlock[[int], object], last: bool
) -> None:
    @af.block
    async def inc(x: int) -> int:
        return x + 1

    stages: list[object] = [parts] if last else [parts, inc]
    bump = 0 if last else 1
    async with af.Pipeline(*stages, name="parts").open() as running:
        three, one, four = await asyncio.gather(
            running.submit(3), running.submit(1), running.submit(4)
        )
        assert three == [3 + bump, 103 + bump, 203 + bump]
        assert one == 1 + bump  # one output: the value itself, not a list
        assert four == [4 + bump, 104 + bump, 204 + bump, 304 + bump]
        assert await running.submit(2) == [2 + bump, 102 + bump]


async def test_a_filtered_item_raises_item_dropped_naming_the_filter() -> None:
    @af.block
    async def inc(x: int) -> int:
        return x + 1

    @af.block
    async def keep_even(x: int) -> AsyncIterator[int]:
        if x % 2 == 0:
            yield x

    async with (inc >> keep_even).open() as running:
        with pytest.raises(af.ItemDropped) as info:
            await running.submit(4)
        assert info.value.reason == "filtered"
        assert info.value.block == "keep_even"
        assert await running.submit(5) == 6
        assert running.statistics()["keep_even"].completed == 2


async def test_a_skipped_item_raises_item_dropped_skipped() -> None:
    @af.block(on_error="skip")
    async def picky(x: int) -> int:
        if x == 13:
            msg = "unlucky"
            raise ValueError(msg)
        return x * 2

    @af.block
    def inc(x: int) -> int:
        return x + 1

    async with (picky >> inc).open() as running:
        with pytest.raises(af.ItemDropped) as info:
            await running.submit(13)
        assert info.value.reason == "skipped"
        assert info.value.block == "picky"
        assert await running.submit(12) == 25
        stats = running.statistics()
    assert stats["picky"].skipped == 1
    assert stats["inc"].received == 1


async def test_drop_newest_overflow_raises_item_dropped_for_the_dropped_caller() -> None:
    entered = asyncio.Event()
    release = asyncio.Event()

    @af.block(queue_size=1, overflow="drop_newest")
    async def camera(x: int) -> int:
        entered.set()
        await release.wait()
        return x * 10

    @af.block
    async def inc(x: int) -> int:
        return x + 1

    async with (camera >> inc).open() as running:
        first = asyncio.create_task(running.submit(1))
        await entered.wait()  # item 1 is being processed
        second = asyncio.create_task(running.submit(2))
        await wait_until(lambda: running.statistics()["camera"].queue_depth == 1, "2 queued")

        with pytest.raises(af.ItemDropped) as info:
            await running.submit(3)  # the queue is full: this one is dropped
        assert info.value.reason == "overflow"
        assert info.value.block == "camera"

        release.set()
        assert await first == 11
        assert await second == 21
        stats = running.statistics()["camera"]
    assert stats.received == 3
    assert stats.dropped == 1
    assert dict(stats.dropped_by) == {"overflow": 1}
    assert stats.completed == 2


async def test_a_failing_item_fails_only_its_own_caller() -> None:
    @af.block
    async def inc(x: int) -> int:
        return x + 1

    @af.block(workers=3)
    async def check(x: int) -> int:
        await asyncio.sleep(0)
        if x == 8:
            msg = "corrupt frame"
            raise ValueError(msg)
        return x

    @af.block(executor="thread", workers=2)
    def double(x: int) -> int:
        return 2 * x

    async with af.Pipeline(inc, check, double, name="svc").open() as running:
        results = await asyncio.gather(
            *(running.submit(i) for i in range(20)), return_exceptions=True
        )
        for i, result in enumerate(results):
            if i == 7:
                assert isinstance(result, af.BlockError)
                assert not isinstance(result, BaseExceptionGroup)
                assert result.block == "check"
                assert isinstance(result.__cause__, ValueError)
                assert "corrupt frame" in str(result)
            else:
                assert result == 2 * (i + 1)

        # The pipeline keeps serving, failures included.
        with pytest.raises(af.BlockError) as info:
            await running.submit(7)
        assert info.value.block == "check"
        assert await running.submit(100) == 202
        assert not running.closed
        assert running.statistics()["check"].failed == 2
    # Leaving the block did not raise: the failures were delivered to their callers.


async def test_submit_waits_under_backpressure_and_the_pipeline_stays_bounded() -> None:
    release = asyncio.Event()

    @af.block(queue_size=2)
    async def first(x: int) -> int:
        return x

    @af.block(queue_size=3, workers=2)
    async def slow(x: int) -> int:
        await release.wait()
        return x + 1

    # Per block: queue_size + workers.
    bound = (2 + 1) + (3 + 2)
    async with (first >> slow).open() as running:
        tasks = [asyncio.create_task(running.submit(i)) for i in range(50)]

        def full() -> bool:
            stats = running.statistics()
            return (
                stats["slow"].in_flight == 2
                and stats["slow"].queue_depth == 3
                and stats["first"].queue_depth == 2
            )

        await wait_until(full, "both blocks full")
        for _ in range(50):  # give anything beyond the bound every chance to get in
            await asyncio.sleep(0)
        accepted = running.statistics()["first"].received
        assert accepted <= bound
        assert not any(task.done() for task in tasks)

        release.set()
        assert await asyncio.gather(*tasks) == [i + 1 for i in range(50)]


async def test_stop_drains_items_in_flight_then_submit_raises_pipeline_closed() -> None:
    release = asyncio.Event()

    @af.block(workers=2)
    async def slow(x: int) -> int:
        await release.wait()
        return -x

    @af.block
    def inc(x: int) -> int:
        return x + 1

    async with (slow >> inc).open() as running:
        tasks = [asyncio.create_task(running.submit(i)) for i in range(6)]
        await wait_until(lambda: running.statistics()["slow"].received == 6, "6 accepted")

        stopping = asyncio.create_task(running.stop())
        await wait_until(lambda: running.closed, "stop() began")
        with pytest.raises(af.PipelineClosed):
            await running.submit(99)  # stopping: no new items
        for _ in range(20):
            await asyncio.sleep(0)
        assert not stopping.done()  # stop() waits for the items in flight
        assert not any(task.done() for task in tasks)

        release.set()
        await stopping
        assert [task.result() for task in tasks] == [1 - i for i in range(6)]
        with pytest.raises(af.PipelineClosed):
            await running.submit(100)  # stopped
    assert running.closed


async def test_leaving_the_async_with_block_drains() -> None:
    release = asyncio.Event()

    @af.block(workers=2)
    async def slow(x: int) -> int:
        await release.wait()
        return x * 5

    pipe = af.Pipeline(slow, name="drain")
    async with pipe.open() as running:
        tasks = [asyncio.create_task(running.submit(i)) for i in range(6)]
        await wait_until(lambda: running.statistics()["slow"].received == 6, "6 accepted")
        # Opened only once the exit has begun: the exit must wait for these items.
        asyncio.get_running_loop().call_soon(release.set)

    assert all(task.done() for task in tasks)
    assert [task.result() for task in tasks] == [i * 5 for i in range(6)]
    assert pipe.statistics()["slow"].completed == 6
    with pytest.raises(af.PipelineClosed):
        await running.submit(1)


class BrokenCamera(af.Block):
    async def setup(self) -> None:
        msg = "camera not found"
        raise OSError(msg)

    async def process(self, item: int) -> int:
        return item


async def test_a_setup_failure_makes_open_raise_without_yielding() -> None:
    recorder = Recorder()
    pipe = af.Pipeline(recorder, BrokenCamera(), name="cam")
    entered_body = []

    for _attempt in range(2):  # a failed open leaves the pipeline free to be opened again
        with pytest.raises(ExceptionGroup) as info:
            async with pipe.open():
                entered_body.append(True)
        errors = info.value.exceptions
        assert len(errors) == 1
        error = errors[0]
        assert isinstance(error, af.BlockError)
        assert error.block == "BrokenCamera"
        assert error.phase == "setup"
        assert isinstance(error.__cause__, OSError)

    assert entered_body == []
    # Teardown ran for every block whose setup completed.
    assert recorder.teardown_calls == recorder.setup_calls


async def test_statistics_are_live_while_items_are_held() -> None:
    release = asyncio.Event()

    @af.block(workers=2, queue_size=8)
    async def held(x: int) -> int:
        await release.wait()
        return x

    @af.block
    async def tail(x: int) -> int:
        return x + 1

    async with (held >> tail).open() as running:
        tasks = [asyncio.create_task(running.submit(i)) for i in range(5)]
        await wait_until(
            lambda: (
                running.statistics()["held"].received == 5
                and running.statistics()["held"].in_flight == 2
            ),
            "5 received, 2 in flight",
        )
        stats = running.statistics()
        assert stats["held"].in_flight == 2
        assert stats["held"].queue_depth == 3
        assert stats["held"].completed == 0
        assert stats["tail"].received == 0
        assert books_balance(stats)

        release.set()
        assert await asyncio.gather(*tasks) == [1, 2, 3, 4, 5]
        stats = running.statistics()
        assert stats["held"].completed == 5
        assert stats["held"].in_flight == stats["held"].queue_depth == 0
        assert stats["tail"].completed == stats["tail"].emitted == 5
        assert books_balance(stats)


async def test_a_pipeline_object_cannot_be_opened_twice_at_once() -> None:
    @af.block
    async def inc(x: int) -> int:
        return x + 1

    pipe = af.Pipeline(inc, name="once")
    async with pipe.open() as running:
        with pytest.raises(af.GraphError, match="submit"):
            async with pipe.open():
                pass
        with pytest.raises(af.GraphError):
            await pipe.run([1, 2])
        assert await running.submit(1) == 2  # the first one is unharmed

    async with pipe.open() as again:  # after it ended, it may be opened again
        assert await again.submit(2) == 3


async def test_cancelling_one_caller_leaves_the_others_and_the_pipeline_working() -> None:
    release = asyncio.Event()

    @af.block(workers=2, queue_size=1)
    async def held(x: int) -> int:
        await release.wait()
        return x * 2

    @af.block
    async def inc(x: int) -> int:
        return x + 1

    async with (held >> inc).open() as running:
        tasks = [asyncio.create_task(running.submit(i)) for i in range(6)]
        await wait_until(
            lambda: (
                running.statistics()["held"].in_flight == 2
                and running.statistics()["held"].queue_depth == 1
            ),
            "held block full",
        )
        tasks[0].cancel()  # its item is being processed
        tasks[5].cancel()  # it waits for room in the queue
        await asyncio.sleep(0)
        release.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)

        assert isinstance(results[0], asyncio.CancelledError)
        assert isinstance(results[5], asyncio.CancelledError)
        assert results[1:5] == [i * 2 + 1 for i in range(1, 5)]
        assert await running.submit(10) == 21
        assert not running.closed
        stats = running.statistics()
        assert stats["held"].in_flight == stats["held"].queue_depth == 0
        assert books_balance(stats)


async def test_max_age_counts_from_the_submit_call() -> None:
    max_age = 0.25
    entered = asyncio.Event()
    release = asyncio.Event()
    release.set()

    @af.block(queue_size=1, max_age=max_age)
    async def fresh_only(x: int) -> int:
        entered.set()
        await release.wait()
        return x

    async with af.Pipeline(fresh_only, name="live").open() as running:
        # Open for longer than max_age: a new item is still young.
        await asyncio.sleep(max_age * 1.5)
        assert await running.submit(0) == 0

        release.clear()
        entered.clear()
        first = asyncio.create_task(running.submit(1))
        await entered.wait()  # 1 passed the age check and is held
        queued = asyncio.create_task(running.submit(2))
        await wait_until(lambda: running.statistics()["fresh_only"].queue_depth == 1, "2 queued")
        waiting = asyncio.create_task(running.submit(3))  # queue full: waits to get in
        await asyncio.sleep(max_age * 1.5)
        release.set()

        assert await first == 1
        with pytest.raises(af.ItemDropped) as info:
            await queued
        assert (info.value.reason, info.value.block) == ("stale", "fresh_only")
        # Item 3 entered the queue only now, but its age counts from its submit() call.
        with pytest.raises(af.ItemDropped) as info:
            await waiting
        assert (info.value.reason, info.value.block) == ("stale", "fresh_only")
        stats = running.statistics()["fresh_only"]
    assert stats.dropped_by == {"stale": 2}
    assert stats.completed == 2


async def _a_caller_waits_for_room_while_later_ones_arrive(
    pipe: af.Pipeline[int, Any], order: list[int], gates: dict[int, asyncio.Event]
) -> None:
    """Item 0 taken by block ``held`` (whose calls wait for ``gates[x]``), 1 queued, caller 2
    waiting for room; then, eight times, a slot frees and a new caller arrives in the same
    turn of the loop. Caller 2 must be served before every later one."""
    async with pipe.open() as running:
        callers = [asyncio.ensure_future(running.submit(0))]
        await wait_until(lambda: order == [0], "item 0 taken")
        callers.append(asyncio.ensure_future(running.submit(1)))  # fills the queue
        await wait_until(lambda: running.statistics()["held"].queue_depth == 1, "1 queued")
        waiting = asyncio.ensure_future(running.submit(2))  # waits for room
        for _ in range(5):  # (it is waiting once the loop has nothing else to do)
            await asyncio.sleep(0)
        assert not waiting.done()
        for later in range(3, 11):
            # A slot frees, and a new caller arrives in the same turn.
            gates[order[-1]].set()
            callers.append(asyncio.ensure_future(running.submit(later)))
            await wait_until(lambda later=later: len(order) == later - 1, "the next item taken")
        for gate in gates.values():
            gate.set()
        assert await waiting == 2
        assert await asyncio.gather(*callers) == [0, 1, *range(3, 11)]
    assert order == list(range(11)), order
    assert books_balance(pipe.statistics())


@pytest.mark.parametrize("executor", ["async", "thread"])
async def test_a_caller_waiting_for_room_is_not_overtaken_by_later_callers(executor: str) -> None:
    """Callers waiting for room in the first block's queue get in first come, first served.
    A caller woken when a slot freed lost it to a caller that arrived in the same turn of the
    loop, and went to the back of those waiting: with a new caller arriving each time a slot
    freed, the first caller waited for as long as callers kept coming (here it was served
    after all eight later ones)."""
    order: list[int] = []
    gates = {x: asyncio.Event() for x in range(12)}
    loop = asyncio.get_running_loop()

    async def held(x: int) -> int:
        order.append(x)
        await gates[x].wait()
        return x

    def held_in_thread(x: int) -> int:
        order.append(x)
        asyncio.run_coroutine_threadsafe(gates[x].wait(), loop).result()
        return x

    fn: Any = held if executor == "async" else held_in_thread
    pipe = af.Pipeline(af.block(name="held", queue_size=1, executor=executor)(fn))
    await _a_caller_waits_for_room_while_later_ones_arrive(pipe, order, gates)


async def test_a_caller_waiting_for_room_in_a_fair_queue_is_not_overtaken() -> None:
    """The same through a block whose queue is shared by stream and blocks when full
    (``fair=`` with ``Batch(max_per_key=)``): a caller woken when a slot freed lost it to a
    caller arriving in the same turn of the loop, and waited behind it again."""
    order: list[int] = []
    gates = {x: asyncio.Event() for x in range(12)}

    async def held(xs: list[int]) -> list[int]:
        order.extend(xs)
        await gates[xs[0]].wait()
        return xs

    blk = af.block(
        name="held",
        queue_size=1,
        ordered=False,
        fair=lambda x: x % 2,
        batch=af.Batch(max_size=1, max_wait=0, max_per_key=1),
    )(held)
    pipe = af.Pipeline(blk)
    await _a_caller_waits_for_room_while_later_ones_arrive(pipe, order, gates)
