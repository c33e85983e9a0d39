"""Per-item ``timeout=``: a hung call is given up on, its item fails (or is skipped), and the run
goes on.

A thread cannot be interrupted: the hung call is left to finish, and the run ends only after it
has, so no thread outlives the run. Each hung call here blocks on an event that the test sets
once aioflow has given up on it (seen in the statistics), so the timeout really fired first.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from conftest import wait_until

import aioflow as af

pytestmark = pytest.mark.integration


def aioflow_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("aioflow")]


def timeout_warnings(caplog: pytest.LogCaptureFixture, block: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "aioflow"
        and r.levelno == logging.WARNING
        and block in r.getMessage()
        and "timeout" in r.getMessage()
    ]


class Hang:
    """A thread call that blocks until released (or 5 s, so that a broken test cannot hang)."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.finished = threading.Event()
        self.released = False

    def __call__(self) -> None:
        self.started.set()
        self.released = self.release.wait(5)
        self.finished.set()

    async def release_when(self, condition: Callable[[], bool], what: str) -> None:
        try:
            await wait_until(condition, what)
        finally:
            self.release.set()


async def test_a_hung_call_fails_its_item_with_timeout_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="aioflow")
    hang = Hang()

    @af.block(executor="thread", timeout=0.05)
    def detect(x: int) -> int:
        if x == 2:
            hang()
        return 10 * x

    pipe = af.Pipeline(detect)
    async with asyncio.timeout(10), asyncio.TaskGroup() as tg:
        tg.create_task(
            hang.release_when(lambda: pipe.statistics()["detect"].failed == 1, "item 2 failed")
        )
        with pytest.raises(ExceptionGroup) as info:
            await pipe.run(range(5))

    assert len(info.value.exceptions) == 1
    err = info.value.exceptions[0]
    assert isinstance(err, af.BlockError)
    assert err.block == "detect"
    assert err.item == "2"
    assert isinstance(err.__cause__, TimeoutError)
    assert timeout_warnings(caplog, "detect")
    # The call could not be interrupted; the run waited for it and left no thread behind.
    assert hang.released
    assert hang.finished.is_set()
    assert aioflow_threads() == []


async def test_skip_gives_up_on_a_hung_call_and_the_stream_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="aioflow")
    hang = Hang()

    @af.block(executor="thread", workers=2, timeout=0.1, on_error="skip")
    def detect(x: int) -> int:
        if x == 2:
            hang()
        return 10 * x

    pipe = af.Pipeline(detect)
    async with asyncio.timeout(10), asyncio.TaskGroup() as tg:
        tg.create_task(
            hang.release_when(lambda: pipe.statistics()["detect"].skipped == 1, "item 2 skipped")
        )
        outputs = await pipe.run(range(6))

    assert outputs == [0, 10, 30, 40, 50]
    stats = pipe.statistics()["detect"]
    assert stats.skipped == 1
    assert stats.completed == 5
    assert stats.failed == 0
    assert stats.balanced
    assert timeout_warnings(caplog, "detect")
    assert hang.released
    assert hang.finished.is_set()
    assert aioflow_threads() == []


async def test_items_queued_behind_a_hung_call_are_not_failed_by_its_timeout() -> None:
    hang = Hang()

    @af.block(executor="thread", timeout=0.1, on_error="skip")
    def detect(x: int) -> int:
        if x == 0:
            hang()
        return 10 * x

    async def release_later() -> None:
        await wait_until(lambda: pipe.statistics()["detect"].skipped >= 1, "item 0 skipped")
        # Outlast the timeout of item 1, which waits for the only thread: its call has not
        # even started, so it cannot have taken too long.
        await asyncio.sleep(0.3)
        hang.release.set()

    pipe = af.Pipeline(detect)
    async with asyncio.timeout(10), asyncio.TaskGroup() as tg:
        tg.create_task(release_later())
        outputs = await pipe.run(range(6))

    assert outputs == [10, 20, 30, 40, 50]
    stats = pipe.statistics()["detect"]
    assert stats.skipped == 1
    assert stats.completed == 5
    assert hang.finished.is_set()
    assert aioflow_threads() == []


async def test_the_caller_of_a_hung_call_gets_timeout_error_and_others_are_answered() -> None:
    hang = Hang()

    @af.block(executor="thread", workers=2, timeout=0.1)
    def detect(x: int) -> int:
        if x == 2:
            hang()
        return 10 * x

    async with af.Pipeline(detect).open() as running:
        async with asyncio.timeout(5):
            hung = asyncio.create_task(running.submit(2))
            await wait_until(hang.started.is_set, "the call of item 2 started")
            assert await running.submit(3) == 30  # the other worker still serves
            with pytest.raises(af.BlockError) as info:
                await hung
            hang.release.set()
            assert await running.submit(4) == 40  # the service keeps running
        stats = running.statistics()["detect"]

    assert info.value.block == "detect"
    assert isinstance(info.value.__cause__, TimeoutError)
    assert stats.failed == 1
    assert stats.completed == 2
    assert hang.released
    assert hang.finished.is_set()
    assert aioflow_threads() == []


async def test_retry_calls_again_after_a_timeout() -> None:
    hang = Hang()
    lock = threading.Lock()
    calls: Counter[int] = Counter()

    @af.block(
        executor="thread",
        workers=2,
        timeout=0.1,
        on_error=af.Retry(attempts=2, backoff=0.001),
    )
    def detect(x: int) -> int:
        with lock:
            calls[x] += 1
            first = calls[x] == 1
        if x == 2 and first:
            hang()
        return 10 * x

    pipe = af.Pipeline(detect)
    async with asyncio.timeout(10), asyncio.TaskGroup() as tg:
        tg.create_task(
            hang.release_when(lambda: pipe.statistics()["detect"].completed == 5, "all done")
        )
        outputs = await pipe.run(range(5))

    assert outputs == [0, 10, 20, 30, 40]
    assert calls[2] == 2
    stats = pipe.statistics()["detect"]
    assert stats.retried == 1
    assert stats.failed == 0
    assert stats.completed == 5
    assert hang.released  # the first call was still hung when its retry succeeded
    assert hang.finished.is_set()
    assert aioflow_threads() == []


async def test_a_coroutine_past_its_timeout_is_cancelled_and_its_item_fails() -> None:
    cancelled = asyncio.Event()

    @af.block(timeout=0.05)
    async def fetch(x: int) -> int:
        if x == 1:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.set()
                raise
        return x

    with pytest.raises(ExceptionGroup) as info:
        async with asyncio.timeout(10):
            await af.Pipeline(fetch).run(range(3))

    assert len(info.value.exceptions) == 1
    err: Any = info.value.exceptions[0]
    assert isinstance(err, af.BlockError)
    assert err.block == "fetch"
    assert isinstance(err.__cause__, TimeoutError)
    assert cancelled.is_set()  # unlike a thread, a coroutine is interrupted at the timeout
