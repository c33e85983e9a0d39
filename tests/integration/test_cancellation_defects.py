"""Regression tests for the engine's cancellation and shutdown defects (issue 10: 1, 2, 4, 5).

1. A cancellation that lands in the same loop turn as a thread's completion was dropped, so
   cancelling a run while its process worker started hung ``run()`` and leaked the worker.
2. A ``CancelledError`` raised by the user's code (not a cancellation of the run) ended a worker's
   task quietly: the run was cut short without an error, or hung.
4. When the body of ``open()`` raised, asyncio logged "Future exception was never retrieved" for
   callers that had their ``PipelineClosed``.
5. When two teardowns failed, only the first reached the ExceptionGroup.

Every run here is bounded by ``asyncio.timeout`` so that a hang fails the test instead of stalling
the suite.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gc
import logging
import multiprocessing
import threading
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import proc_targets
import pytest

import aioflow as af
from aioflow._engine.executors import wait_through_cancel

pytestmark = pytest.mark.integration

#: Bound on one run: far above what any run here needs, so only a hang reaches it.
GUARD_S = 20.0


def children(block: str) -> list[str]:
    return [
        p.name for p in multiprocessing.active_children() if p.name.startswith(f"aioflow[{block}]")
    ]


def segments(block: str) -> list[str]:
    return sorted(p.name for p in Path("/dev/shm").glob(f"aioflow_{block}_*"))


def never_retrieved(records: list[logging.LogRecord]) -> list[str]:
    return [r.getMessage() for r in records if "never retrieved" in r.getMessage()]


# -- 1. a cancellation landing with a thread's completion ------------------------------------


async def test_a_cancellation_arriving_with_the_awaited_completion_is_kept() -> None:
    """The exact race: the future completes and the waiter is cancelled in the same loop turn."""
    fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    waiter = asyncio.create_task(wait_through_cancel(fut))
    await asyncio.sleep(0)  # the waiter now waits on the future
    fut.set_result(None)
    waiter.cancel()
    done, _ = await asyncio.wait([waiter], timeout=GUARD_S)
    assert done
    assert waiter.cancelled(), "the cancellation was swallowed"


async def test_cancelling_a_run_while_its_process_worker_starts_never_hangs() -> None:
    """Cancel a run with a process block 0-12 ms after it starts (while the worker starts):
    every run ends cancelled, and no worker process and no segment of the block is left."""
    name = "cancel_sweep"
    pipe = af.Pipeline(af.block(executor="process", name=name)(proc_targets.ident))

    def frames() -> Iterator[np.ndarray[Any, Any]]:
        for i in range(1000):
            yield np.full(4096, i % 256, dtype=np.uint8)  # arrays travel in shared memory

    for step in range(25):
        delay = step * 0.0005
        task = asyncio.create_task(pipe.run(frames()))
        await asyncio.sleep(delay)
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=GUARD_S)
        if not done:
            task.cancel()  # unstick it so that the test can clean up, then fail
            await asyncio.wait([task], timeout=GUARD_S)
            pytest.fail(f"run() hung after a cancellation {delay * 1000:.1f} ms after its start")
        assert task.cancelled(), f"cancelled at {delay * 1000:.1f} ms, got {task!r}"
        assert children(name) == [], f"a worker process outlived the run ({delay * 1000} ms)"
        assert segments(name) == [], f"a segment outlived the run ({delay * 1000} ms)"
    # The pipeline still runs after all that.
    async with asyncio.timeout(GUARD_S):
        assert len(await pipe.run(frames())) == 1000
    assert children(name) == []
    assert segments(name) == []


# -- 2. a CancelledError raised by the user's code is an item failure -------------------------


async def _await_cancelled() -> None:
    """Await a future that someone else cancelled."""
    fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    fut.cancel()
    await fut


def _run_cancelled_coroutine() -> None:
    """A thread runs a coroutine of its own, which awaits a cancelled future: asyncio.run()
    raises asyncio's CancelledError in the thread."""
    asyncio.run(_await_cancelled())


def _result_of_cancelled() -> None:
    """``.result()`` of a cancelled concurrent future, from a thread."""
    fut: concurrent.futures.Future[None] = concurrent.futures.Future()
    fut.cancel()
    fut.result()


CANCELLED = (asyncio.CancelledError, concurrent.futures.CancelledError)
KINDS = ("async", "thread", "thread_timeout", "asyncgen", "batched", "process")


class Faulty:
    """Makes a block of one kind whose item 3 raises a CancelledError (only on its first
    attempt when ``once``), and remembers what the block was called with."""

    def __init__(self, kind: str, *, once: bool) -> None:
        self.kind = kind
        self.once = once
        self.tries: Counter[int] = Counter()
        self.batches: list[list[int]] = []

    def fails(self, x: int) -> bool:
        self.tries[x] += 1
        return x == 3 and (not self.once or self.tries[x] == 1)

    def block(self, **options: Any) -> Any:
        kind = self.kind
        name = f"faulty_{kind}"
        if kind == "async":

            async def coro(x: int) -> int:
                if self.fails(x):
                    await _await_cancelled()
                return x

            return af.block(name=name, **options)(coro)
        if kind in ("thread", "thread_timeout"):

            def plain(x: int) -> int:
                if self.fails(x):
                    if kind == "thread":
                        _run_cancelled_coroutine()
                    else:
                        _result_of_cancelled()
                return x

            timeout = 30.0 if kind == "thread_timeout" else None
            return af.block(name=name, executor="thread", timeout=timeout, **options)(plain)
        if kind == "asyncgen":

            async def agen(x: int) -> AsyncIterator[int]:
                if self.fails(x):
                    await _await_cancelled()
                yield x

            return af.block(name=name, **options)(agen)
        if kind == "batched":

            async def batch(xs: list[int]) -> list[int]:
                self.batches.append(list(xs))
                if [x for x in xs if self.fails(x)]:
                    await _await_cancelled()
                return xs

            return af.block(name=name, batch=af.Batch(max_size=2, max_wait=0), **options)(batch)
        assert kind == "process"
        return proc_targets.AwaitsCancelledOn3(name=name, executor="process", **options)

    def failed_items(self) -> list[int]:
        """The items that failed with item 3: its batch, or item 3 alone."""
        if self.kind == "batched":
            return next(b for b in self.batches if 3 in b)
        return [3]


def _cases() -> list[Any]:
    cases = []
    for kind in KINDS:
        for on_error in ("raise", "skip", "retry", "dead_letter"):
            if kind == "process" and on_error == "retry":
                continue  # the worker process fails item 3 every time (its own memory)
            for workers in (1, 4):
                if kind == "process" and workers > 1:
                    continue  # spawning is slow; the pool's side does not depend on it
                cases.append(
                    pytest.param(kind, on_error, workers, id=f"{kind}-{on_error}-w{workers}")
                )
    return cases


def _is_cancelled_failure(err: BaseException, block: str) -> bool:
    return (
        isinstance(err, af.BlockError)
        and err.block == block
        and isinstance(err.__cause__, CANCELLED)
        and "CancelledError" in str(err)
    )


@pytest.mark.parametrize(("kind", "on_error", "workers"), _cases())
async def test_a_cancelled_error_from_user_code_is_an_item_failure(
    kind: str, on_error: str, workers: int, caplog: pytest.LogCaptureFixture
) -> None:
    faulty = Faulty(kind, once=on_error == "retry")
    letters = proc_targets.DeadLetters()
    options: dict[str, Any] = {"workers": workers}
    if on_error == "retry":
        options["on_error"] = af.Retry(attempts=2, backoff=0)
    elif on_error == "dead_letter":
        options["dead_letter"] = letters
    else:
        options["on_error"] = on_error
    blk = faulty.block(**options)
    name = blk.options.name
    pipe = af.Pipeline(blk)
    if on_error == "raise":
        with pytest.raises(ExceptionGroup) as info:
            async with asyncio.timeout(GUARD_S):
                await pipe.run(range(10))
        errors = info.value.exceptions
        assert errors
        assert all(_is_cancelled_failure(err, name) for err in errors), errors
        assert {err.item for err in errors} <= {str(x) for x in faulty.failed_items()}
        assert pipe.statistics()[name].failed >= 1
        return
    async with asyncio.timeout(GUARD_S):
        out = await pipe.run(range(10))
    rec = pipe.statistics()[name]
    assert rec.in_flight == 0
    assert rec.queue_depth == 0
    assert rec.balanced
    if on_error == "retry":
        assert out == list(range(10))
        assert rec.retried == 1
        assert rec.completed == 10
        return
    lost = faulty.failed_items()
    assert out == [x for x in range(10) if x not in lost]
    assert rec.skipped == len(lost)
    if on_error == "skip":  # the skip is logged with the user's CancelledError as the reason
        skips = [r.getMessage() for r in caplog.records if "skipped item" in r.getMessage()]
        assert len(skips) == len(lost)
        assert all("CancelledError raised by the block's own code" in m for m in skips), skips
    if on_error == "dead_letter":
        assert sorted(item for item, _ in letters.letters) == lost
        assert all(_is_cancelled_failure(err, name) for _, err in letters.letters)
        assert rec.dead_letters == len(lost)


@pytest.mark.parametrize(
    ("kind", "workers"),
    [(kind, workers) for kind in KINDS for workers in (1, 4) if kind != "process" or workers == 1],
)
async def test_a_cancelled_error_from_user_code_goes_to_its_submit_caller_only(
    kind: str, workers: int
) -> None:
    blk = Faulty(kind, once=False).block(workers=workers)
    name = blk.options.name
    async with asyncio.timeout(GUARD_S), af.Pipeline(blk).open() as running:
        with pytest.raises(af.BlockError) as info:
            await running.submit(3)
        assert _is_cancelled_failure(info.value, name)
        assert await running.submit(4) == 4
        with pytest.raises(af.BlockError):
            await running.submit(3)
        assert await asyncio.gather(*(running.submit(x) for x in (5, 6, 7, 8))) == [5, 6, 7, 8]
        rec = running.statistics()[name]
        assert rec.failed == 2
        assert rec.in_flight == 0


async def test_a_cancelled_error_from_the_source_fails_the_run() -> None:
    async def source() -> AsyncIterator[int]:
        yield 1
        await _await_cancelled()
        yield 2

    @af.block
    async def ident(x: int) -> int:
        return x

    with pytest.raises(ExceptionGroup) as info:
        async with asyncio.timeout(GUARD_S):
            await af.Pipeline(ident).run(source())
    (err,) = info.value.exceptions
    assert isinstance(err, af.BlockError)
    assert err.block == "<source>"
    assert isinstance(err.__cause__, asyncio.CancelledError)


async def test_cancelling_a_run_is_still_a_cancellation_with_user_cancels_around() -> None:
    """The other side of the line: a real cancellation stays one."""
    started = asyncio.Event()

    @af.block(on_error="skip")
    async def hang(x: int) -> int:
        started.set()
        await asyncio.Event().wait()
        return x

    task = asyncio.create_task(af.Pipeline(hang).run(range(10)))
    async with asyncio.timeout(GUARD_S):
        await started.wait()
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=GUARD_S)
    assert done
    assert task.cancelled()


# -- 4. open(): no "Future exception was never retrieved" -------------------------------------


async def _serve_then_fail(pipe: af.Pipeline, callers: list[asyncio.Task[Any]]) -> None:
    """Open ``pipe``, start 40 submit() callers, raise once items are in the block."""
    async with asyncio.timeout(GUARD_S), pipe.open() as running:
        callers.extend(asyncio.create_task(running.submit(i)) for i in range(40))
        # Some items in the block, some queued, most callers waiting for room.
        while running.statistics()["slow"].received < 3:
            await asyncio.sleep(0.001)
        raise RuntimeError("the service failed")


async def test_a_failing_open_body_logs_nothing_for_callers_that_got_pipeline_closed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    gate = asyncio.Event()

    @af.block(queue_size=2)
    async def slow(x: int) -> int:
        await gate.wait()
        return x

    pipe = af.Pipeline(slow)
    callers: list[asyncio.Task[Any]] = []

    with caplog.at_level(logging.ERROR, logger="asyncio"):
        with pytest.raises(RuntimeError, match="the service failed"):
            await _serve_then_fail(pipe, callers)
        results = await asyncio.gather(*callers, return_exceptions=True)
        assert len(results) == 40
        assert all(isinstance(r, af.PipelineClosed) for r in results), results
        del results, callers, pipe
        gc.collect()
        await asyncio.sleep(0)  # the loop runs exception handlers scheduled by finalizers
        gc.collect()
    assert never_retrieved(caplog.records) == []


# -- 5. every teardown error reaches the group ------------------------------------------------


class Steady(af.Block):
    """A block whose teardown succeeds; ``fail_on`` makes process() fail on that item."""

    def __init__(self, log: list[str], *, fail_on: int | None = None, **options: Any) -> None:
        super().__init__(**options)
        self.log = log
        self.fail_on = fail_on

    async def setup(self) -> None:
        self.log.append(f"setup {self.block_name}")

    async def process(self, item: int) -> int:
        if item == self.fail_on:
            raise ValueError(f"bad item {item}")
        await asyncio.sleep(0)
        return item

    async def teardown(self) -> None:
        self.log.append(f"teardown {self.block_name}")


class BrokenTeardown(Steady):
    async def teardown(self) -> None:
        await asyncio.sleep(0)
        self.log.append(f"teardown {self.block_name}")
        raise OSError(f"{self.block_name}: could not release the camera")


class SyncBrokenTeardown(Steady):
    def teardown(self) -> None:  # type: ignore[override]  # a sync teardown runs in a thread
        self.log.append(f"teardown {self.block_name}")
        raise OSError(f"{self.block_name}: could not release the camera")


def _teardown_errors(group: BaseExceptionGroup[Any]) -> set[str]:
    return {
        err.block
        for err in _leaves(group)
        if isinstance(err, af.BlockError) and err.phase == "teardown"
    }


def _leaves(group: BaseExceptionGroup[Any]) -> Iterator[BaseException]:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc


def _three(log: list[str], *, fail_on: int | None = None) -> af.Pipeline:
    return af.Pipeline(
        Steady(log, fail_on=fail_on, name="steady"),
        BrokenTeardown(log, name="broken_a"),
        SyncBrokenTeardown(log, name="broken_b"),
    )


def _torn_down(log: list[str]) -> Counter[str]:
    return Counter(line.split(" ", 1)[1] for line in log if line.startswith("teardown "))


ALL_THREE = Counter({"steady": 1, "broken_a": 1, "broken_b": 1})


async def test_every_teardown_error_reaches_the_group_at_end_of_stream() -> None:
    log: list[str] = []
    with pytest.raises(ExceptionGroup) as info:
        async with asyncio.timeout(GUARD_S):
            await _three(log).run(range(5))
    assert _teardown_errors(info.value) == {"broken_a", "broken_b"}
    assert all(isinstance(err, af.BlockError) for err in _leaves(info.value))
    assert _torn_down(log) == ALL_THREE


async def test_every_teardown_error_reaches_the_group_after_a_process_error() -> None:
    log: list[str] = []
    with pytest.raises(ExceptionGroup) as info:
        async with asyncio.timeout(GUARD_S):
            await _three(log, fail_on=2).run(range(50))
    leaves = list(_leaves(info.value))
    assert _teardown_errors(info.value) == {"broken_a", "broken_b"}
    failed = [e for e in leaves if isinstance(e, af.BlockError) and e.phase != "teardown"]
    assert [(e.block, e.item) for e in failed] == [("steady", "2")]
    assert isinstance(failed[0].__cause__, ValueError)
    assert _torn_down(log) == ALL_THREE


async def test_every_teardown_error_reaches_the_group_with_process_blocks() -> None:
    """A process block's teardown runs in its workers; its error joins the others."""
    log: list[str] = []
    pipe = af.Pipeline(
        proc_targets.FailingTeardown(executor="process", name="proc_broken"),
        BrokenTeardown(log, name="broken_a"),
    )
    with pytest.raises(ExceptionGroup) as info:
        async with asyncio.timeout(GUARD_S):
            await pipe.run(range(5))
    assert _teardown_errors(info.value) == {"proc_broken", "broken_a"}
    assert children("proc_broken") == []


async def test_cancelling_a_run_runs_every_teardown_and_logs_each_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """On cancellation the caller gets CancelledError (the cancellation propagates, as with a
    TaskGroup); each teardown error is logged at ERROR on the "aioflow" logger."""
    log: list[str] = []

    async def endless() -> AsyncIterator[int]:
        i = 0
        while True:
            yield i
            i += 1
            await asyncio.sleep(0.001)

    caplog.set_level(logging.ERROR)
    task = asyncio.create_task(_three(log).run(endless()))
    async with asyncio.timeout(GUARD_S):
        while sum(line.startswith("setup ") for line in log) < 3:
            await asyncio.sleep(0.001)
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=GUARD_S)
    assert done
    assert task.cancelled()
    assert _torn_down(log) == ALL_THREE
    teardown_logs = [
        r for r in caplog.records if r.name == "aioflow" and "teardown" in r.getMessage()
    ]
    assert sorted(getattr(r, "block", None) for r in teardown_logs) == ["broken_a", "broken_b"]
    gc.collect()
    await asyncio.sleep(0)
    assert never_retrieved(caplog.records) == []


async def test_an_error_raised_while_the_run_is_cancelled_is_logged_not_left_unretrieved(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A source whose cleanup fails while the run is being cancelled: the caller gets its
    CancelledError, and the cleanup's error is logged once on "aioflow", never left to asyncio's
    "Task exception was never retrieved"."""
    fed = asyncio.Event()

    async def camera() -> AsyncIterator[int]:
        try:
            i = 0
            while True:
                yield i
                fed.set()
                i += 1
                await asyncio.sleep(0.001)
        finally:
            raise OSError("the camera did not close")

    @af.block
    async def ident(x: int) -> int:
        return x

    caplog.set_level(logging.ERROR)
    task = asyncio.create_task(af.Pipeline(ident).run(camera()))
    async with asyncio.timeout(GUARD_S):
        await fed.wait()
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=GUARD_S)
    assert done
    assert task.cancelled()
    del task
    gc.collect()
    await asyncio.sleep(0)
    assert never_retrieved(caplog.records) == []
    logged = [
        r
        for r in caplog.records
        if r.name == "aioflow" and "the camera did not close" in r.getMessage()
    ]
    assert len(logged) == 1


# -- a thread generator on the general path, cancelled --------------------------------------

#: A thread generator block on the general path: ``timeout=``, ``key=`` (with a state too), an
#: item being retried after its first call failed, and these together; one or two workers.
GENERAL_THREAD_GENERATORS: dict[str, dict[str, Any]] = {
    "timeout": {"timeout": 60.0},
    "timeout_workers": {"timeout": 60.0, "workers": 2},
    "keyed": {"key": lambda x: x % 2},
    "keyed_workers_unordered": {"key": lambda x: x % 2, "workers": 2, "ordered": False},
    "keyed_state_timeout": {"key": lambda x: x % 2, "state": list, "timeout": 60.0},
    "retried": {"on_error": af.Retry(attempts=3, backoff=0.001)},
    "retried_timeout_keyed": {
        "on_error": af.Retry(attempts=3, backoff=0.001),
        "timeout": 60.0,
        "key": lambda x: x % 2,
    },
}

#: Chunks one item's generator would make if nothing stopped it.
CHUNKS = 500


class _Chunks:
    """A sync generator function that records what it made and whether its ``finally`` ran:
    item 0 makes one chunk, the others :data:`CHUNKS` of 2 ms each. With ``fail_first``, each
    item's first call fails before any output (so the item is retried)."""

    def __init__(self, *, fail_first: bool) -> None:
        self.fail_first = fail_first
        self.started = threading.Event()  # a long generator is making chunks
        self.yielded = 0
        self.calls: Counter[int] = Counter()
        self.finished: list[int] = []  # items whose finally ran
        self.lock = threading.Lock()

    def __call__(self, x: int, *state: Any) -> Iterator[int]:
        with self.lock:
            self.calls[x] += 1
            first = self.calls[x] == 1
        if self.fail_first and first:
            msg = f"item {x} fails its first call, before any output"
            raise ValueError(msg)
        try:
            for i in range(CHUNKS if x else 1):
                if x:
                    self.started.set()
                threading.Event().wait(0.002)
                with self.lock:
                    self.yielded += 1
                yield i
        finally:
            with self.lock:
                self.finished.append(x)


def _chunk_block(how: str) -> tuple[af.Block[Any, Any], _Chunks]:
    options = GENERAL_THREAD_GENERATORS[how]
    gen = _Chunks(fail_first="on_error" in options)
    fn = gen.__call__ if "state" not in options else _with_state(gen)
    return af.block(name="chunks", executor="thread", **options)(fn), gen


def _with_state(gen: _Chunks) -> Any:
    def chunks(x: int, state: list[Any]) -> Iterator[int]:
        yield from gen(x, state)

    return chunks


async def _wait_started(gen: _Chunks) -> None:
    for _ in range(int(GUARD_S / 0.001)):
        if gen.started.is_set():
            return
        await asyncio.sleep(0.001)
    msg = "the generator never started"
    raise AssertionError(msg)


def _check_stopped(gen: _Chunks, pipe: af.Pipeline, workers: int) -> None:
    # Each long generator under way stopped at its next output, its finally ran before the
    # run ended, and none ran to its end (the run's items would make 1501 chunks).
    with gen.lock:
        yielded, finished = gen.yielded, [x for x in gen.finished if x]
    assert yielded < CHUNKS, yielded
    assert 1 <= len(finished) <= workers, finished
    assert pipe.statistics()["chunks"].balanced


@pytest.mark.parametrize("how", list(GENERAL_THREAD_GENERATORS))
async def test_cancelling_run_stops_a_general_path_thread_generator_at_its_next_output(
    how: str,
) -> None:
    """Cancel the task awaiting ``run()`` while a thread generator block on the general path
    (timeout=, key=, a retry) is making chunks: the generator under way stops at its next
    output and its ``finally`` runs before ``run()`` ends, rather than running to its end."""
    stage, gen = _chunk_block(how)
    pipe = af.Pipeline(stage)
    run = asyncio.create_task(pipe.run(range(4)))
    await _wait_started(gen)
    run.cancel()
    done, _ = await asyncio.wait([run], timeout=GUARD_S)
    assert done, "the cancelled run never ended"
    assert run.cancelled()
    _check_stopped(gen, pipe, GENERAL_THREAD_GENERATORS[how].get("workers", 1))


@pytest.mark.parametrize("how", list(GENERAL_THREAD_GENERATORS))
async def test_leaving_stream_stops_a_general_path_thread_generator_at_its_next_output(
    how: str,
) -> None:
    """The same when the consumer leaves ``async for`` over ``stream()`` (after the first
    output, once a long generator is under way): closing the stream ends the run, and the
    generator under way stops at its next output."""
    stage, gen = _chunk_block(how)
    pipe = af.Pipeline(stage)

    async def consume() -> list[Any]:
        taken = []
        async with contextlib.aclosing(pipe.stream(range(4))) as outputs:
            async for out in outputs:
                taken.append(out)
                await _wait_started(gen)
                break
        return taken

    assert await asyncio.wait_for(consume(), GUARD_S) == [0]
    _check_stopped(gen, pipe, GENERAL_THREAD_GENERATORS[how].get("workers", 1))
