"""Dynamic batching: ``batch=af.Batch(max_size, max_wait)``.

The batch function gets lists and returns lists of equal length; everything else stays per item:
order, drops, skips, errors and the answer each ``submit()`` caller gets. No test reads the
clock to decide what a batch holds. Either ``max_wait`` is so long that a batch closes only when
it is full or the stream ends, or the first call is held on a gate while the next items queue up
behind it, so each later batch takes exactly what is ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from conftest import block_errors, wait_until

import aioflow as af

pytestmark = pytest.mark.integration

#: A max_wait no test waits out: a batch closes only when full or at the end of the stream.
LONG = 3600.0
KINDS = ["async", "thread"]


# -- helpers ----------------------------------------------------------------------------------


def batched(
    kind: str, fn: Callable[[list[int]], list[int]], **options: Any
) -> af.FunctionBlock[..., Any]:
    """A batched block named ``embed`` that runs ``fn`` on the event loop or in its threads."""

    async def on_loop(items: list[int]) -> list[int]:
        return fn(items)

    def in_thread(items: list[int]) -> list[int]:
        return fn(items)

    options.setdefault("name", "embed")
    return af.block(**options)(on_loop if kind == "async" else in_thread)


def names_number(text: str, number: int) -> bool:
    return re.search(rf"(?<![\d-]){number}(?!\d)", text) is not None


class Held:
    """Holds the first call of a batch function until released, so that items queue behind it."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()

    async def first_call(self) -> None:
        if not self.gate.is_set():
            self.entered.set()
            await self.gate.wait()

    async def wait_entered(self) -> None:
        async with asyncio.timeout(5):
            await self.entered.wait()


class InFlight:
    """Counts calls in progress across threads and the loop; ``both`` is set once two overlap."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.active = 0
        self.max_active = 0
        self.both = threading.Event()

    def enter(self) -> None:
        with self.lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            if self.active >= 2:
                self.both.set()

    def leave(self) -> None:
        with self.lock:
            self.active -= 1


async def wait_event(event: threading.Event, what: str) -> None:
    await wait_until(event.is_set, what)


# -- what a batch holds -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
async def test_batches_are_cut_at_max_size_in_input_order(kind: str) -> None:
    seen: list[list[int]] = []

    def times_ten(items: list[int]) -> list[int]:
        seen.append(list(items))
        return [10 * x for x in items]

    pipe = af.Pipeline(batched(kind, times_ten, batch=af.Batch(max_size=4, max_wait=LONG)))
    async with asyncio.timeout(10):  # the last, partial batch must not wait out max_wait
        outputs = await pipe.run(range(10))

    assert outputs == [10 * x for x in range(10)]
    assert seen == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    stats = pipe.statistics()["embed"]
    assert stats.batches == 3
    assert stats.batch_sizes == {4: 2, 2: 1}
    assert stats.mean_batch_size == pytest.approx(10 / 3)
    assert stats.received == stats.completed == stats.emitted == 10
    assert stats.balanced


async def test_a_block_subclass_gets_lists_too() -> None:
    class Model(af.Block):
        batch = af.Batch(max_size=4, max_wait=LONG)  # an option given as a class attribute

        async def setup(self) -> None:
            self.scale = 3
            self.sizes: list[int] = []

        async def process(self, items: list[int]) -> list[int]:
            self.sizes.append(len(items))
            return [self.scale * x for x in items]

    model = Model()
    pipe = af.Pipeline(model)
    async with asyncio.timeout(10):
        assert await pipe.run(range(6)) == [3 * x for x in range(6)]
    assert model.sizes == [4, 2]
    assert pipe.statistics()["Model"].batch_sizes == {4: 1, 2: 1}


async def test_a_held_item_waits_for_more_until_the_batch_is_full() -> None:
    seen: list[list[int]] = []

    @af.block(batch=af.Batch(max_size=3, max_wait=LONG))
    async def embed(items: list[int]) -> list[int]:
        seen.append(list(items))
        return [10 * x for x in items]

    async with af.Pipeline(embed).open() as running:
        first = asyncio.create_task(running.submit(1))
        await wait_until(lambda: running.statistics()["embed"].in_flight == 1, "item 1 taken")
        await asyncio.sleep(0.02)
        assert seen == []  # one item held: the block waits for more rather than calling
        rest = [asyncio.create_task(running.submit(x)) for x in (2, 3)]
        async with asyncio.timeout(5):
            assert await asyncio.gather(first, *rest) == [10, 20, 30]
    assert seen == [[1, 2, 3]]


@pytest.mark.parametrize("max_wait", [0.0, 0.02], ids=["max_wait=0", "max_wait=20ms"])
async def test_a_lone_item_does_not_wait_for_a_full_batch(max_wait: float) -> None:
    seen: list[list[int]] = []

    @af.block(batch=af.Batch(max_size=8, max_wait=max_wait))
    async def embed(items: list[int]) -> list[int]:
        seen.append(list(items))
        return [x + 1 for x in items]

    async with af.Pipeline(embed).open() as running:
        async with asyncio.timeout(5):
            assert await running.submit(41) == 42
            assert await running.submit(7) == 8
    assert seen == [[41], [7]]


async def test_max_wait_zero_takes_every_ready_item_up_to_max_size() -> None:
    held = Held()
    seen: list[list[int]] = []

    @af.block(batch=af.Batch(max_size=3, max_wait=0))
    async def embed(items: list[int]) -> list[int]:
        seen.append(list(items))
        await held.first_call()
        return [10 * x for x in items]

    async with af.Pipeline(embed).open() as running:
        first = asyncio.create_task(running.submit(0))
        await held.wait_entered()
        queued = [asyncio.create_task(running.submit(x)) for x in range(1, 6)]
        await wait_until(lambda: running.statistics()["embed"].queue_depth == 5, "5 queued")
        stats = running.statistics()["embed"]
        assert stats.in_flight == 1
        assert stats.balanced
        held.gate.set()
        async with asyncio.timeout(5):
            answers = await asyncio.gather(first, *queued)
        stats = running.statistics()["embed"]

    assert answers == [10 * x for x in range(6)]
    assert seen == [[0], [1, 2, 3], [4, 5]]
    assert stats.batches == 3
    assert stats.batch_sizes == {1: 1, 3: 1, 2: 1}
    assert stats.mean_batch_size == pytest.approx(2.0)


# -- several batches in flight, order -------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
async def test_workers_run_several_batches_at_once(kind: str) -> None:
    flight = InFlight()

    async def on_loop(items: list[int]) -> list[int]:
        flight.enter()
        try:
            # The first batch waits for a second one to start: only overlap lets it go on.
            await wait_event(flight.both, "two batches in flight")
            return [10 * x for x in items]
        finally:
            flight.leave()

    def in_thread(items: list[int]) -> list[int]:
        flight.enter()
        try:
            if not flight.both.wait(5):
                msg = "only one batch was ever in flight"
                raise RuntimeError(msg)
            return [10 * x for x in items]
        finally:
            flight.leave()

    fn = on_loop if kind == "async" else in_thread
    blk = af.block(name="embed", workers=2, batch=af.Batch(max_size=2, max_wait=LONG))(fn)
    pipe = af.Pipeline(blk)
    async with asyncio.timeout(10):
        outputs = await pipe.run(range(8))

    assert outputs == [10 * x for x in range(8)]
    assert flight.max_active == 2
    stats = pipe.statistics()["embed"]
    assert sum(size * n for size, n in stats.batch_sizes.items()) == 8
    assert max(stats.batch_sizes) <= 2
    assert stats.batches == sum(stats.batch_sizes.values())


@pytest.mark.parametrize("kind", KINDS)
async def test_ordered_outputs_keep_input_order_when_a_later_batch_finishes_first(
    kind: str,
) -> None:
    other_done = threading.Event()

    async def on_loop(items: list[int]) -> list[int]:
        if 0 in items:
            await wait_event(other_done, "another batch finished")
        else:
            other_done.set()
        return [10 * x for x in items]

    def in_thread(items: list[int]) -> list[int]:
        if 0 in items:
            if not other_done.wait(5):
                msg = "no other batch finished meanwhile"
                raise RuntimeError(msg)
        else:
            other_done.set()
        return [10 * x for x in items]

    fn = on_loop if kind == "async" else in_thread
    blk = af.block(name="embed", workers=3, batch=af.Batch(max_size=2, max_wait=LONG))(fn)
    async with asyncio.timeout(10):
        outputs = await af.Pipeline(blk).run(range(12))
    assert outputs == [10 * x for x in range(12)]


@pytest.mark.parametrize("kind", KINDS)
async def test_unordered_outputs_leave_as_their_batch_finishes(kind: str) -> None:
    released = threading.Event()

    async def on_loop(items: list[int]) -> list[int]:
        if 0 in items:
            await wait_event(released, "an output of another batch reached the consumer")
        return [10 * x for x in items]

    def in_thread(items: list[int]) -> list[int]:
        if 0 in items and not released.wait(5):
            msg = "no output of another batch reached the consumer"
            raise RuntimeError(msg)
        return [10 * x for x in items]

    fn = on_loop if kind == "async" else in_thread
    blk = af.block(
        name="embed", workers=3, ordered=False, batch=af.Batch(max_size=2, max_wait=LONG)
    )(fn)
    got: list[int] = []
    async with asyncio.timeout(10):
        async with contextlib.aclosing(af.Pipeline(blk).stream(range(12))) as outputs:
            async for out in outputs:
                got.append(out)
                released.set()  # the batch of item 0 is still held: this came from another

    assert got[0] != 0
    assert sorted(got) == [10 * x for x in range(12)]


# -- errors stay per item ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
async def test_a_wrong_number_of_results_is_a_block_error_naming_both_numbers(kind: str) -> None:
    def drop_last(items: list[int]) -> list[int]:
        return [x + 1 for x in items][:-1]

    pipe = af.Pipeline(batched(kind, drop_last, batch=af.Batch(max_size=3, max_wait=LONG)))
    with pytest.raises(ExceptionGroup) as info:
        async with asyncio.timeout(10):
            await pipe.run([100, 101, 102])

    errors = block_errors(info.value)
    assert errors
    for err in errors:
        assert err.block == "embed"
        text = str(err)
        assert "embed" in text
        assert names_number(text, 2), text  # what was found
        assert names_number(text, 3), text  # what was expected
    stats = pipe.statistics()["embed"]
    assert stats.failed == 3  # every item of the batch failed, none silently lost
    assert stats.completed == 0
    assert stats.balanced


@pytest.mark.parametrize("kind", KINDS)
async def test_skip_counts_each_item_of_a_failing_batch(kind: str) -> None:
    def fragile(items: list[int]) -> list[int]:
        if 4 in items:
            msg = "corrupt frame in batch"
            raise ValueError(msg)
        return [10 * x for x in items]

    blk = batched(kind, fragile, batch=af.Batch(max_size=3, max_wait=LONG), on_error="skip")
    pipe = af.Pipeline(blk)
    async with asyncio.timeout(10):
        outputs = await pipe.run(range(9))

    assert outputs == [0, 10, 20, 60, 70, 80]
    stats = pipe.statistics()["embed"]
    assert stats.skipped == 3
    assert stats.completed == 6
    assert stats.failed == 0
    assert stats.emitted == 6
    assert stats.balanced


@pytest.mark.parametrize("failure", ["raises", "wrong-length"])
async def test_every_caller_of_a_failing_batch_gets_the_error(failure: str) -> None:
    held = Held()
    cause = ValueError("negative frame")

    @af.block(batch=af.Batch(max_size=3, max_wait=0))
    async def embed(items: list[int]) -> list[int]:
        await held.first_call()
        if any(x < 0 for x in items):
            if failure == "raises":
                raise cause
            return [0]
        return [10 * x for x in items]

    async with af.Pipeline(embed).open() as running:
        first = asyncio.create_task(running.submit(100))
        await held.wait_entered()
        doomed = [asyncio.create_task(running.submit(x)) for x in (-7, 11, 12)]
        await wait_until(lambda: running.statistics()["embed"].queue_depth == 3, "3 queued")
        held.gate.set()
        async with asyncio.timeout(5):
            assert await first == 1000
            results = await asyncio.gather(*doomed, return_exceptions=True)
            # The service keeps running for the next caller.
            assert await running.submit(5) == 50
        stats = running.statistics()["embed"]

    assert len(results) == 3
    for item, result in zip((-7, 11, 12), results, strict=True):
        assert isinstance(result, af.BlockError), repr(result)
        assert result.block == "embed"
        assert result.item == str(item)
        if failure == "raises":
            assert result.__cause__ is cause
        else:
            assert names_number(str(result), 1), str(result)
            assert names_number(str(result), 3), str(result)
    assert stats.failed == 3
    assert stats.completed == 2
    assert stats.balanced


@pytest.mark.parametrize("kind", KINDS)
async def test_retry_calls_the_whole_batch_again(kind: str) -> None:
    calls: list[list[int]] = []

    def flaky(items: list[int]) -> list[int]:
        calls.append(list(items))
        if len(calls) == 1:
            msg = "GPU busy"
            raise ConnectionError(msg)
        return [10 * x for x in items]

    blk = batched(
        kind,
        flaky,
        batch=af.Batch(max_size=4, max_wait=LONG),
        on_error=af.Retry(attempts=3, backoff=0.001),
    )
    pipe = af.Pipeline(blk)
    async with asyncio.timeout(10):
        outputs = await pipe.run(range(4))

    assert outputs == [0, 10, 20, 30]
    assert calls == [[0, 1, 2, 3], [0, 1, 2, 3]]
    stats = pipe.statistics()["embed"]
    assert stats.completed == 4
    assert stats.failed == 0
    assert stats.retried >= 1
    assert stats.balanced


async def test_a_batch_that_keeps_failing_fails_each_item_after_the_last_attempt() -> None:
    calls: list[list[int]] = []
    cause = ConnectionError("GPU gone")

    @af.block(batch=af.Batch(max_size=2, max_wait=LONG), on_error=af.Retry(2, backoff=0.001))
    async def embed(items: list[int]) -> list[int]:
        calls.append(list(items))
        raise cause

    pipe = af.Pipeline(embed)
    with pytest.raises(ExceptionGroup) as info:
        async with asyncio.timeout(10):
            await pipe.run([5, 6])

    assert calls == [[5, 6], [5, 6]]
    errors = block_errors(info.value)
    assert errors
    for err in errors:
        assert err.block == "embed"
        assert err.attempt == 2
        assert err.__cause__ is cause
    stats = pipe.statistics()["embed"]
    assert stats.failed == 2
    assert stats.balanced


# -- an exception returned in an item's place fails that item alone --------------------------


@pytest.mark.parametrize("kind", KINDS)
async def test_a_returned_exception_skips_only_its_item(kind: str) -> None:
    def check(items: list[str]) -> list[Any]:
        return [ValueError(f"{x} is corrupt") if x.startswith("bad") else x.upper() for x in items]

    fn: Any = check
    if kind == "async":

        async def acheck(items: list[str]) -> list[Any]:
            return check(items)

        fn = acheck
    blk = af.block(fn, name="check", batch=af.Batch(max_size=4, max_wait=LONG), on_error="skip")
    pipe = af.Pipeline(blk)
    out = await pipe.run(["a", "bad1", "b", "c", "d", "bad2", "e"])
    assert out == ["A", "B", "C", "D", "E"]
    stats = pipe.statistics()["check"]
    assert stats.skipped == 2
    assert stats.completed == 5
    assert stats.batches == 2
    assert stats.balanced


async def test_gather_with_return_exceptions_is_a_batch_function() -> None:
    async def fetch(x: int) -> int:
        await asyncio.sleep(0)
        if x == 3:
            msg = "404 for item 3"
            raise LookupError(msg)
        return x * 10

    @af.block(batch=af.Batch(max_size=6, max_wait=LONG))  # the six calls make one batch
    async def fetch_all(items: list[int]) -> list[Any]:
        return await asyncio.gather(*(fetch(x) for x in items), return_exceptions=True)

    async with af.Pipeline(fetch_all).open() as running:
        results = await asyncio.gather(
            *(running.submit(x) for x in range(6)), return_exceptions=True
        )
    assert [r for i, r in enumerate(results) if i != 3] == [0, 10, 20, 40, 50]
    err = results[3]
    assert isinstance(err, af.BlockError)
    assert err.block == "fetch_all"
    assert isinstance(err.__cause__, LookupError)
    assert "404 for item 3" in str(err)
    assert running.statistics()["fetch_all"].batch_sizes == {6: 1}


async def test_retry_calls_again_with_the_failed_items_only() -> None:
    calls: list[list[int]] = []

    @af.block(batch=af.Batch(max_size=4, max_wait=LONG), on_error=af.Retry(3, backoff=0.001))
    def flaky(items: list[int]) -> list[Any]:
        calls.append(list(items))
        # item 1 fails twice, item 2 once; the others work the first time
        fails = {1: 2, 2: 1}
        return [
            TimeoutError(f"item {x} timed out")
            if sum(x in c for c in calls) <= fails.get(x, 0)
            else x
            for x in items
        ]

    pipe = af.Pipeline(flaky)
    out = await pipe.run([0, 1, 2, 3])
    assert out == [0, 1, 2, 3]
    assert calls == [[0, 1, 2, 3], [1, 2], [1]]
    stats = pipe.statistics()["flaky"]
    assert stats.retried == 2
    assert stats.completed == 4
    assert stats.batches == 1
    assert stats.balanced


async def test_returned_exceptions_fail_the_run_each_with_its_item() -> None:
    @af.block(batch=af.Batch(max_size=4, max_wait=LONG))
    def strict(items: list[int]) -> list[Any]:
        return [ValueError(f"odd: {x}") if x % 2 else x for x in items]

    pipe = af.Pipeline(strict)
    with pytest.raises(ExceptionGroup) as info:
        await pipe.run([0, 1, 2, 3])
    errors = block_errors(info.value)
    assert sorted(str(e.__cause__) for e in errors) == ["odd: 1", "odd: 3"]
    assert all(e.block == "strict" and e.attempt == 1 for e in errors)
    stats = pipe.statistics()["strict"]
    assert stats.failed == 2
    assert stats.completed == 2


async def test_a_returned_exception_goes_to_the_dead_letter_sink_alone() -> None:
    letters: list[tuple[Any, af.BlockError]] = []

    @af.block(
        batch=af.Batch(max_size=4, max_wait=LONG),
        dead_letter=lambda item, err: letters.append((item, err)),
    )
    def parse(items: list[str]) -> list[Any]:
        return [int(x) if x.isdigit() else ValueError(f"not a number: {x!r}") for x in items]

    pipe = af.Pipeline(parse)
    out = await pipe.run(["1", "two", "3"])
    assert out == [1, 3]
    assert [item for item, _ in letters] == ["two"]
    assert "not a number: 'two'" in str(letters[0][1])
    stats = pipe.statistics()["parse"]
    assert stats.dead_letters == 1
    assert stats.balanced


async def test_overflow_drops_are_counted_per_item() -> None:
    held = Held()
    seen: list[list[int]] = []

    @af.block(
        batch=af.Batch(max_size=8, max_wait=0),
        queue_size=2,
        overflow="drop_newest",
    )
    async def embed(items: list[int]) -> list[int]:
        seen.append(list(items))
        await held.first_call()
        return [10 * x for x in items]

    async with af.Pipeline(embed).open() as running:
        first = asyncio.create_task(running.submit(0))
        await held.wait_entered()
        later = [asyncio.create_task(running.submit(x)) for x in range(1, 6)]
        await wait_until(lambda: running.statistics()["embed"].received == 6, "6 received")
        held.gate.set()
        async with asyncio.timeout(5):
            results = await asyncio.gather(first, *later, return_exceptions=True)
        stats = running.statistics()["embed"]

    assert results[:3] == [0, 10, 20]
    for dropped in results[3:]:
        assert isinstance(dropped, af.ItemDropped), repr(dropped)
        assert dropped.reason == "overflow"
        assert dropped.block == "embed"
    assert seen == [[0], [1, 2]]
    assert stats.dropped == 3
    assert stats.dropped_by == {"overflow": 3}
    assert stats.completed == 3
    assert stats.batch_sizes == {1: 1, 2: 1}
    assert stats.mean_batch_size == pytest.approx(1.5)
    assert stats.balanced


# -- a thread that takes its next batch itself -----------------------------------------------


class ThreadGate:
    """Holds the first call of a thread batch function until released."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.gate = threading.Event()

    def first_call(self) -> None:
        if not self.gate.is_set():
            self.entered.set()
            assert self.gate.wait(10), "the test never released the first call"


async def test_a_thread_takes_every_ready_item_as_its_call_returns() -> None:
    held = ThreadGate()
    seen: list[list[int]] = []
    threads: set[int] = set()

    @af.block(batch=af.Batch(max_size=3, max_wait=0))
    def embed(items: list[int]) -> list[int]:
        seen.append(list(items))
        threads.add(threading.get_ident())
        held.first_call()
        return [10 * x for x in items]

    async with af.Pipeline(embed).open() as running:
        first = asyncio.create_task(running.submit(0))
        await wait_event(held.entered, "first call entered")
        queued = [asyncio.create_task(running.submit(x)) for x in range(1, 8)]
        await wait_until(lambda: running.statistics()["embed"].queue_depth == 7, "7 queued")
        held.gate.set()
        async with asyncio.timeout(5):
            answers = await asyncio.gather(first, *queued)
        stats = running.statistics()["embed"]

    # The device is never kept waiting for the loop: each call takes what was ready.
    assert answers == [10 * x for x in range(8)]
    assert seen == [[0], [1, 2, 3], [4, 5, 6], [7]]
    assert len(threads) == 1
    assert stats.batch_sizes == {1: 2, 3: 2}
    assert stats.completed == stats.emitted == 8
    assert stats.balanced


async def test_a_thread_takes_only_full_batches_and_leaves_a_short_one_to_max_wait() -> None:
    held = ThreadGate()
    seen: list[list[int]] = []

    @af.block(batch=af.Batch(max_size=3, max_wait=LONG))
    def embed(items: list[int]) -> list[int]:
        seen.append(list(items))
        held.first_call()
        return [x + 1 for x in items]

    async with af.Pipeline(embed).open() as running:
        firsts = [asyncio.create_task(running.submit(x)) for x in range(3)]
        await wait_event(held.entered, "first call entered")
        queued = [asyncio.create_task(running.submit(x)) for x in range(3, 7)]
        await wait_until(lambda: running.statistics()["embed"].queue_depth == 4, "4 queued")
        held.gate.set()
        # 3, 4, 5 make a full batch; 6 alone waits for more rather than being called alone.
        await wait_until(lambda: len(seen) == 2, "the full batch called")
        await wait_until(lambda: running.statistics()["embed"].in_flight == 1, "6 held")
        await asyncio.sleep(0.02)
        assert seen == [[0, 1, 2], [3, 4, 5]]
        last = [asyncio.create_task(running.submit(x)) for x in (7, 8)]
        async with asyncio.timeout(5):
            answers = await asyncio.gather(*firsts, *queued, *last)
        stats = running.statistics()["embed"]

    assert answers == [x + 1 for x in range(9)]
    assert seen == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    assert stats.batch_sizes == {3: 3}
    assert stats.balanced


async def test_a_thread_drops_the_items_that_went_stale_while_its_call_ran() -> None:
    held = ThreadGate()
    seen: list[list[int]] = []

    @af.block(batch=af.Batch(max_size=8, max_wait=0), max_age=0.05)
    def embed(items: list[int]) -> list[int]:
        seen.append(list(items))
        held.first_call()
        return [-x for x in items]

    async with af.Pipeline(embed).open() as running:
        first = asyncio.create_task(running.submit(1))
        await wait_event(held.entered, "first call entered")
        stale = [asyncio.create_task(running.submit(x)) for x in (2, 3)]
        await wait_until(lambda: running.statistics()["embed"].queue_depth == 2, "2 queued")
        await asyncio.sleep(0.1)  # both are now older than max_age
        held.gate.set()
        async with asyncio.timeout(5):
            results = await asyncio.gather(first, *stale, return_exceptions=True)
            assert await running.submit(4) == -4
        stats = running.statistics()["embed"]

    assert results[0] == -1
    for dropped in results[1:]:
        assert isinstance(dropped, af.ItemDropped), repr(dropped)
        assert dropped.reason == "stale"
    assert seen == [[1], [4]]
    assert stats.dropped_by == {"stale": 2}
    assert stats.completed == 2
    assert stats.balanced


@pytest.mark.parametrize("failure", ["raised", "returned"])
async def test_a_failing_batch_in_the_thread_fails_its_items_only_in_order(failure: str) -> None:
    def embed(items: list[int]) -> list[Any]:
        if failure == "raised" and 13 in items:
            msg = "batch with 13"
            raise ValueError(msg)
        return [ValueError(f"{x} is bad") if x == 13 else x * 2 for x in items]

    blk = af.block(embed, name="embed", batch=af.Batch(max_size=4, max_wait=0), on_error="skip")
    pipe = af.Pipeline(blk, af.block(name="slow_sink", queue_size=1)(_yield_once))
    async with asyncio.timeout(10):
        out = await pipe.run(range(40))

    stats = pipe.statistics()["embed"]
    skipped = {13} if failure == "returned" else set()
    if failure == "raised":
        # The batch holding 13 is skipped whole; which items it held depends on what was ready.
        assert stats.skipped == 40 - len(out) >= 1
        skipped = set(range(40)) - {x // 2 for x in out}
        assert 13 in skipped
    assert out == [2 * x for x in range(40) if x not in skipped]
    assert stats.completed + stats.skipped == 40
    assert stats.balanced
    assert pipe.statistics()["slow_sink"].balanced


async def _yield_once(x: int) -> int:
    await asyncio.sleep(0)
    return x


async def test_a_thread_never_overfills_a_slow_output_and_keeps_order() -> None:
    def embed(items: list[int]) -> list[int]:
        return [x + 1000 for x in items]

    blk = af.block(embed, name="embed", batch=af.Batch(max_size=8, max_wait=0))
    pipe = af.Pipeline(blk, af.block(name="slow_sink", queue_size=1)(_yield_once))
    async with asyncio.timeout(10):
        out = await pipe.run(range(300))
    assert out == [x + 1000 for x in range(300)]
    for stats in pipe.statistics().values():
        assert stats.received == stats.completed == stats.emitted == 300
        assert stats.balanced


# -- graph errors ---------------------------------------------------------------------------


def split_frames(items: list[int]) -> Iterator[int]:
    yield from items


async def split_frames_async(items: list[int]) -> AsyncIterator[int]:
    for x in items:
        yield x


@pytest.mark.parametrize(
    "fn", [split_frames, split_frames_async], ids=["generator", "async-generator"]
)
def test_a_generator_cannot_batch(fn: Callable[..., Any]) -> None:
    with pytest.raises(af.GraphError) as info:
        af.block(name="splitter", batch=af.Batch(max_size=4, max_wait=0.01))(fn)
    assert "splitter" in str(info.value)
    assert "batch" in str(info.value)


def test_a_block_subclass_with_a_generator_cannot_batch() -> None:
    class Splitter(af.Block):
        def process(self, items: list[int]) -> Iterator[int]:
            yield from items

    with pytest.raises(af.GraphError) as info:
        Splitter(batch=af.Batch(max_size=4, max_wait=0.01))
    assert "Splitter" in str(info.value)
    assert "batch" in str(info.value)
