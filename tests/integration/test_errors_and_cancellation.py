"""Errors reach whoever awaits the item; cancellation and early exits leave nothing behind.

Every check here is something a user of ``run()``, ``stream()`` or ``open()``/``submit()`` sees:
the exception they get and what it carries, which teardowns ran, and which tasks and threads are
still alive afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from conftest import only_block_error

import aioflow as af
from aioflow.testing import Recorder, ScriptedSource

pytestmark = pytest.mark.integration


# -- helpers ----------------------------------------------------------------------------------


class Hooked(af.Block):
    """A pass-through block that logs its lifecycle into a shared list."""

    def __init__(
        self,
        log: list[str],
        *,
        fail_setup: bool = False,
        hang_setup: bool = False,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.log = log
        self.fail_setup = fail_setup
        self.hang_setup = hang_setup

    async def setup(self) -> None:
        self.log.append(f"setup {self.block_name}")
        if self.fail_setup:
            raise RuntimeError(f"{self.block_name}: no camera")
        if self.hang_setup:
            await asyncio.Event().wait()
        self.log.append(f"ready {self.block_name}")

    async def process(self, item: Any) -> Any:
        self.log.append(f"process {self.block_name} {item!r}")
        return item

    async def teardown(self) -> None:
        await asyncio.sleep(0)  # a teardown that awaits must still run to the end
        self.log.append(f"teardown {self.block_name}")


def teardowns(log: list[str]) -> Counter[str]:
    return Counter(line.split(" ", 1)[1] for line in log if line.startswith("teardown "))


def aioflow_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("aioflow")]


def leftover_tasks(before: set[asyncio.Task[Any]]) -> set[asyncio.Task[Any]]:
    """Tasks alive now that were not alive at ``before`` (the current task aside)."""
    return {t for t in asyncio.all_tasks() if t not in before and t is not asyncio.current_task()}


async def wait_until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(10):
        while not condition():
            await asyncio.sleep(0.001)


async def collect(pipe: af.Pipeline, items: Any, into: list[Any]) -> None:
    """Consume ``pipe.stream(items)`` deterministically, appending each output to ``into``."""
    async with contextlib.aclosing(pipe.stream(items)) as outputs:
        async for out in outputs:
            into.append(out)


# -- on_error="raise" -------------------------------------------------------------------------


async def test_run_raises_a_group_of_block_errors_after_every_teardown() -> None:
    log: list[str] = []
    cause = ValueError("corrupt frame")
    calls: list[str] = []

    class Explode(af.Block):
        async def process(self, item: str) -> str:
            calls.append(item)
            await asyncio.sleep(0)
            if item == "frame-3":
                raise cause
            return item

        async def teardown(self) -> None:
            await asyncio.sleep(0)
            log.append("teardown explode")

    first = Hooked(log, name="first", workers=2)
    last = Hooked(log, name="last")
    pipe = af.Pipeline(first, Explode(name="explode"), last)
    items = [f"frame-{i}" for i in range(50)]

    with pytest.raises(ExceptionGroup) as info:
        await pipe.run(items)

    # Every teardown has run by the time the caller sees the error.
    assert teardowns(log) == {"first": 1, "explode": 1, "last": 1}
    err = only_block_error(info.value)
    assert err.block == "explode"
    assert err.item is not None
    assert "frame-3" in err.item
    assert err.attempt == 1
    assert err.__cause__ is cause
    assert "explode" in str(err)
    assert "frame-3" in str(err)
    # Every block stopped: nothing is processed after run() raised.
    seen = (len(log), len(calls))
    for _ in range(20):
        await asyncio.sleep(0)
    await asyncio.sleep(0.02)
    assert (len(log), len(calls)) == seen


async def test_stream_raises_a_group_of_block_errors_after_every_teardown() -> None:
    log: list[str] = []

    @af.block
    async def explode(x: int) -> int:
        if x == 7:
            raise KeyError(x)
        return x

    pipe = af.Pipeline(Hooked(log, name="first"), explode, Hooked(log, name="last"))
    got: list[int] = []

    with pytest.raises(ExceptionGroup) as info:
        await collect(pipe, range(100), got)

    assert teardowns(log) == {"first": 1, "last": 1}
    err = only_block_error(info.value)
    assert err.block == "explode"
    assert err.item == "7"
    assert isinstance(err.__cause__, KeyError)
    assert got == list(range(len(got)))
    assert len(got) <= 7


async def test_concurrent_failures_arrive_in_one_group() -> None:
    workers = 4
    entered = 0
    all_in = asyncio.Event()

    @af.block(workers=workers)
    async def always_fails(x: int) -> int:
        nonlocal entered
        entered += 1
        if entered == workers:
            all_in.set()
        await all_in.wait()  # four items fail together
        raise ValueError(f"bad item {x}")

    with pytest.raises(ExceptionGroup) as info:
        await af.Pipeline(always_fails).run(range(20))

    errors = [e for e in info.value.exceptions if isinstance(e, af.BlockError)]
    assert len(errors) == len(info.value.exceptions), info.value.exceptions  # all BlockErrors
    assert sorted(str(e.item) for e in errors) == ["0", "1", "2", "3"]
    assert {str(e.__cause__) for e in errors} == {f"bad item {i}" for i in range(4)}


# -- on_error="skip" --------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [1, 3])
async def test_skip_counts_logs_and_continues(
    workers: int, caplog: pytest.LogCaptureFixture
) -> None:
    @af.block(on_error="skip", workers=workers, name="fussy")
    async def fussy(x: int) -> int:
        await asyncio.sleep(0)
        if x % 4 == 0:
            raise ValueError(f"no multiples of four: {x}")
        return x

    pipe = af.Pipeline(fussy)
    with caplog.at_level(logging.WARNING, logger="aioflow"):
        outputs = await pipe.run(range(20))

    assert outputs == [x for x in range(20) if x % 4]
    stats = pipe.statistics()["fussy"]
    assert stats.skipped == 5
    assert stats.failed == 0
    assert stats.completed == 15
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 5
    assert all("fussy" in r.getMessage() for r in warnings)


# -- retries ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("executor", "workers"), [("async", 1), ("async", 3), ("thread", 2)])
async def test_retry_turns_a_flaky_function_into_a_success(executor: str, workers: int) -> None:
    lock = threading.Lock()
    calls: Counter[int] = Counter()

    def flaky_sync(x: int) -> int:
        with lock:
            calls[x] += 1
            n = calls[x]
        if n < 3:
            raise ConnectionError(f"try {n}")
        return x * 10

    async def flaky_async(x: int) -> int:
        await asyncio.sleep(0)
        return flaky_sync(x)

    fn = flaky_async if executor == "async" else flaky_sync
    blk = af.block(workers=workers, on_error=af.Retry(attempts=3, backoff=0.001), name="flaky")(fn)
    pipe = af.Pipeline(blk)

    outputs = await pipe.run(range(6))

    assert outputs == [x * 10 for x in range(6)]
    assert calls == dict.fromkeys(range(6), 3)
    stats = pipe.statistics()["flaky"]
    assert stats.retried == 12
    assert stats.completed == 6
    assert stats.failed == 0


@pytest.mark.parametrize(("executor", "workers"), [("async", 1), ("async", 3), ("thread", 2)])
async def test_retry_gives_up_after_the_last_attempt(executor: str, workers: int) -> None:
    calls: Counter[int] = Counter()

    def hopeless_sync(x: int) -> int:
        calls[x] += 1
        if x == 2:
            raise ConnectionError(f"attempt {calls[x]} failed")
        return x

    async def hopeless_async(x: int) -> int:
        return hopeless_sync(x)

    fn = hopeless_async if executor == "async" else hopeless_sync
    blk = af.block(workers=workers, on_error=af.Retry(attempts=3, backoff=0.001), name="hope")(fn)
    pipe = af.Pipeline(blk)

    with pytest.raises(ExceptionGroup) as info:
        await pipe.run(range(3))

    err = only_block_error(info.value)
    assert err.block == "hope"
    assert err.attempt == 3
    assert err.item == "2"
    assert isinstance(err.__cause__, ConnectionError)
    assert str(err.__cause__) == "attempt 3 failed"
    assert calls[2] == 3
    stats = pipe.statistics()["hope"]
    assert stats.retried == 2
    assert stats.failed == 1


def _gen_blocks(calls: Counter[int]) -> dict[str, tuple[af.Block, af.Block]]:
    retry = af.Retry(attempts=3, backoff=0.001)

    @af.block(on_error=retry, name="early")
    async def early_async(x: int) -> AsyncIterator[int]:
        calls[x] += 1
        if calls[x] == 1:
            raise OSError("not yet")
        yield x
        yield x + 100

    @af.block(on_error=retry, name="late")
    async def late_async(x: int) -> AsyncIterator[int]:
        calls[x] += 1
        yield x
        raise OSError("after the first output")

    @af.block(on_error=retry, name="early")
    def early_sync(x: int) -> Iterator[int]:
        calls[x] += 1
        if calls[x] == 1:
            raise OSError("not yet")
        yield x
        yield x + 100

    @af.block(on_error=retry, name="late")
    def late_sync(x: int) -> Iterator[int]:
        calls[x] += 1
        yield x
        raise OSError("after the first output")

    return {"async": (early_async, late_async), "sync": (early_sync, late_sync)}


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_generator_is_retried_when_it_failed_before_its_first_output(kind: str) -> None:
    calls: Counter[int] = Counter()
    early, _ = _gen_blocks(calls)[kind]
    pipe = af.Pipeline(early)

    outputs = await pipe.run(range(4))

    assert outputs == [v for x in range(4) for v in (x, x + 100)]
    assert calls == dict.fromkeys(range(4), 2)
    assert pipe.statistics()["early"].retried == 4


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_generator_is_not_retried_after_its_first_output(kind: str) -> None:
    calls: Counter[int] = Counter()
    _, late = _gen_blocks(calls)[kind]
    pipe = af.Pipeline(late)

    with pytest.raises(ExceptionGroup) as info:
        await pipe.run(range(4))

    err = only_block_error(info.value)
    assert err.block == "late"
    assert err.attempt == 1
    assert isinstance(err.__cause__, OSError)
    assert calls[0] == 1  # one call: its first output was already out when it failed
    assert pipe.statistics()["late"].retried == 0


# -- sources and setup ------------------------------------------------------------------------


async def test_a_failing_source_fails_the_run_with_a_block_error() -> None:
    recorder = Recorder(name="rec")
    unplugged = OSError("camera unplugged")
    source = ScriptedSource(range(10), fail_at=5, error=unplugged)

    with pytest.raises(ExceptionGroup) as info:
        await af.Pipeline(recorder).run(source)

    err = only_block_error(info.value)
    assert err.__cause__ is unplugged
    assert "camera unplugged" in str(err)
    assert recorder.teardown_calls == 1
    assert recorder.items == [0, 1, 2, 3, 4]


async def test_a_failing_source_fails_stream_too() -> None:
    recorder = Recorder(name="rec")
    source = ScriptedSource(range(10), fail_at=3, error=OSError("gone"))
    got: list[int] = []

    with pytest.raises(ExceptionGroup) as info:
        await collect(af.Pipeline(recorder), source, got)

    err = only_block_error(info.value)
    assert isinstance(err.__cause__, OSError)
    assert recorder.teardown_calls == 1
    assert got == [0, 1, 2][: len(got)]


async def test_setup_failure_tears_down_exactly_the_blocks_that_were_set_up() -> None:
    log: list[str] = []
    pipe = af.Pipeline(
        Hooked(log, name="a"),
        Hooked(log, name="b", fail_setup=True),
        Hooked(log, name="c"),
        Hooked(log, name="d", hang_setup=True),
    )

    async with asyncio.timeout(10):
        with pytest.raises(ExceptionGroup) as info:
            await pipe.run(range(5))

    err = only_block_error(info.value)
    assert err.block == "b"
    assert isinstance(err.__cause__, RuntimeError)
    assert "no camera" in str(err)
    # a and c finished setup: torn down once. b failed and d never finished setup: no teardown.
    assert teardowns(log) == {"a": 1, "c": 1}
    assert not any(line.startswith("process") for line in log)


async def test_setup_failure_in_open_raises_and_tears_down() -> None:
    log: list[str] = []
    pipe = af.Pipeline(Hooked(log, name="a"), Hooked(log, name="b", fail_setup=True))

    with pytest.raises(ExceptionGroup) as info:
        async with pipe.open() as running:
            await running.submit(1)

    assert only_block_error(info.value).block == "b"
    assert teardowns(log) == {"a": 1}


# -- cancellation -----------------------------------------------------------------------------


async def test_cancelling_run_tears_down_and_leaves_no_task_or_thread() -> None:
    before = asyncio.all_tasks()
    log: list[str] = []
    started = asyncio.Event()

    @af.block(workers=2, name="threaded")
    def threaded(x: int) -> int:
        return x

    class Stuck(af.Block):
        async def process(self, item: int) -> int:
            started.set()
            await asyncio.Event().wait()
            return item

        async def teardown(self) -> None:
            await asyncio.sleep(0)
            log.append("teardown stuck")

    pipe = af.Pipeline(Hooked(log, name="first"), threaded, Stuck(name="stuck", workers=3))
    task = asyncio.create_task(pipe.run(range(1000)))
    await started.wait()
    assert aioflow_threads()  # the thread block's pool is up

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert teardowns(log) == {"first": 1, "stuck": 1}
    assert leftover_tasks(before) == set()
    assert aioflow_threads() == []


async def test_cancelling_run_while_a_thread_call_runs_lets_it_finish() -> None:
    before = asyncio.all_tasks()
    log: list[str] = []
    entered = threading.Semaphore(0)
    release = threading.Event()
    finished: list[int] = []
    calls: list[int] = []

    @af.block(workers=2, name="blocking")
    def blocking(x: int) -> int:
        calls.append(x)
        entered.release()
        release.wait(10)
        finished.append(x)
        return x

    pipe = af.Pipeline(Hooked(log, name="first"), blocking, Hooked(log, name="last"))
    task = asyncio.create_task(pipe.run(range(100)))
    await wait_until(lambda: len(calls) == 2)

    task.cancel()
    await asyncio.sleep(0.05)
    # A thread cannot be interrupted: the run waits for the calls in progress to return.
    assert not task.done()
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert sorted(finished) == [0, 1]
    assert sorted(calls) == [0, 1]  # nothing new started after the cancellation
    assert teardowns(log) == {"first": 1, "last": 1}
    assert leftover_tasks(before) == set()
    assert aioflow_threads() == []


async def test_leaving_stream_early_stops_the_run_and_cleans_up() -> None:
    before = asyncio.all_tasks()
    log: list[str] = []

    @af.block(workers=2, name="threaded")
    def threaded(x: int) -> int:
        return x * 2

    source = ScriptedSource(range(10_000))
    pipe = af.Pipeline(Hooked(log, name="first"), threaded, Hooked(log, name="last"))
    got: list[int] = []

    async with contextlib.aclosing(pipe.stream(source)) as outputs:
        async for out in outputs:
            got.append(out)
            if len(got) == 5:
                break

    assert got == [0, 2, 4, 6, 8]
    assert teardowns(log) == {"first": 1, "last": 1}
    assert leftover_tasks(before) == set()
    assert aioflow_threads() == []
    pulled = source.yielded
    await asyncio.sleep(0.02)
    assert source.yielded == pulled  # the run stopped: nothing more is read
    assert pulled < 10_000


async def test_a_block_error_in_stream_does_not_cancel_the_consumers_awaits() -> None:
    failed = asyncio.Event()

    @af.block
    async def fails_at_3(x: int) -> int:
        if x == 3:
            failed.set()
            raise ValueError("three")
        return x

    pipe = af.Pipeline(fails_at_3)
    got: list[int] = []
    interrupted = False

    async def consume() -> None:
        nonlocal interrupted
        async with contextlib.aclosing(pipe.stream(range(10))) as outputs:
            async for out in outputs:
                got.append(out)
                if out == 0:
                    await failed.wait()
                    try:
                        # The run fails meanwhile; this await of the consumer's own must not
                        # be cancelled by it.
                        await asyncio.sleep(0.05)
                    except asyncio.CancelledError:
                        interrupted = True
                        raise

    with pytest.raises(ExceptionGroup) as info:
        await consume()

    assert not interrupted
    task = asyncio.current_task()
    assert task is not None
    assert task.cancelling() == 0
    assert only_block_error(info.value).block == "fails_at_3"
    assert got == [0, 1, 2][: len(got)]


# -- submit -----------------------------------------------------------------------------------


async def test_submit_failure_goes_to_its_caller_only() -> None:
    @af.block(workers=2, name="picky")
    async def picky(x: int) -> int:
        await asyncio.sleep(0)
        if x == 3:
            raise ValueError("three")
        return x * 10

    pipe = af.Pipeline(picky, Recorder(name="rec"))
    async with pipe.open() as running:
        results = await asyncio.gather(
            *(running.submit(i) for i in range(6)), return_exceptions=True
        )
        failure = results[3]
        assert isinstance(failure, af.BlockError)  # bare, not a group
        assert failure.block == "picky"
        assert failure.item == "3"
        assert isinstance(failure.__cause__, ValueError)
        assert [r for i, r in enumerate(results) if i != 3] == [0, 10, 20, 40, 50]
        # The service keeps running.
        assert not running.closed
        assert await running.submit(7) == 70

    stats = pipe.statistics()["picky"]
    assert stats.failed == 1
    assert stats.completed == 6


# -- timeout ----------------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [1, 3])
async def test_timeout_fails_a_hanging_coroutine(workers: int) -> None:
    calls: list[int] = []

    @af.block(timeout=0.05, workers=workers, name="hang")
    async def hang(x: int) -> int:
        calls.append(x)
        if x == 2:
            await asyncio.Event().wait()
        return x

    async with asyncio.timeout(10):
        with pytest.raises(ExceptionGroup) as info:
            await af.Pipeline(hang).run(range(5))

    err = only_block_error(info.value)
    assert err.block == "hang"
    assert err.item == "2"
    assert isinstance(err.__cause__, TimeoutError)


async def test_timeout_with_skip_drops_only_the_hanging_item() -> None:
    @af.block(timeout=0.05, on_error="skip", name="hang")
    async def hang(x: int) -> int:
        if x == 2:
            await asyncio.Event().wait()
        return x

    pipe = af.Pipeline(hang)
    async with asyncio.timeout(10):
        outputs = await pipe.run(range(5))

    assert outputs == [0, 1, 3, 4]
    assert pipe.statistics()["hang"].skipped == 1
