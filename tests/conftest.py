"""Shared test configuration: every async test runs on asyncio's default loop and on uvloop;
the Redis server of the suite; the watchdogs that turn a hung test into a failure."""

from __future__ import annotations

import asyncio
import faulthandler
import functools
import inspect
import os
import sys
import threading
import uuid
from collections.abc import Callable, Coroutine, Generator, Iterator, Mapping
from typing import Any

import pytest
import uvloop


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


# -- hung tests fail, never stall the run ------------------------------------------------------
#
# pytest-timeout (the `timeout` ini option, or @pytest.mark.timeout) interrupts a test with
# SIGALRM. uvloop runs its loop in C and never lets that signal's Python handler raise into the
# test: a test hung on uvloop stalled the whole suite until CI's own limit killed it, with no
# word of which test or where. So every async test also gets a loop watchdog: when its own
# limit passes, a thread wakes the test's loop (call_soon_threadsafe works on every loop),
# prints every task's stack and cancels the test, which fails saying so. And should even the
# loop be stuck (a blocking call on it), faulthandler dumps every thread's stack and ends the
# run a while later: a failure with a trace, not a silent stall.

_HARD_STOP_EXTRA_S = 60.0
_STDERR = pytest.StashKey[int]()


def pytest_configure(config: pytest.Config) -> None:
    # The terminal's stderr, not the capture's (global capture is suspended here): what
    # faulthandler writes on the way out must reach CI's log.
    config.stash[_STDERR] = os.dup(2)


def pytest_unconfigure(config: pytest.Config) -> None:
    fd = config.stash.get(_STDERR, None)
    if fd is not None:
        os.close(fd)


def _time_limit(item: pytest.Item) -> float:
    marker = item.get_closest_marker("timeout")
    if marker is not None:
        value = marker.kwargs.get("timeout", marker.args[0] if marker.args else None)
        if value is not None:
            return float(value)
    return float(item.config.getini("timeout") or 0)


def _watched(
    test: Callable[..., Coroutine[Any, Any, Any]], limit: float
) -> Callable[..., Coroutine[Any, Any, Any]]:
    @functools.wraps(test)
    async def run(*args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        expired = threading.Event()

        def expire() -> None:
            if task.done():
                return
            expired.set()
            print(f"\n-- the test ran past {limit:g} s; its loop's tasks:", file=sys.stderr)
            for other in asyncio.all_tasks(loop):
                other.print_stack(limit=12, file=sys.stderr)
            task.cancel(f"the test ran past its {limit:g} s")

        timer = threading.Timer(limit, loop.call_soon_threadsafe, (expire,))
        timer.daemon = True
        timer.start()
        try:
            return await test(*args, **kwargs)
        except asyncio.CancelledError as exc:
            if expired.is_set():
                raise pytest.fail.Exception(
                    f"timed out: the test ran past its {limit:g} s on {type(loop).__name__} "
                    "(the loop watchdog cancelled it; the stacks of its tasks are in stderr)"
                ) from exc
            raise
        finally:
            timer.cancel()

    return run


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None]:
    limit = _time_limit(item)
    if limit > 0:
        # The last resort: setup, call and teardown together get twice the limit and a minute.
        faulthandler.dump_traceback_later(
            2 * limit + _HARD_STOP_EXTRA_S, exit=True, file=item.config.stash[_STDERR]
        )
    try:
        return (yield)
    finally:
        if limit > 0:
            faulthandler.cancel_dump_traceback_later()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None]:
    test = getattr(item, "obj", None)
    limit = _time_limit(item)
    if limit <= 0 or not inspect.iscoroutinefunction(test):
        return (yield)
    assert isinstance(item, pytest.Function)
    item.obj = _watched(test, limit)
    try:
        return (yield)
    finally:
        item.obj = test


@pytest.fixture
def redis_url() -> str:
    """The Redis server of the suite (``make test`` starts one: scripts/with-services)."""
    url = os.environ.get("AIOFLOW_REDIS_URL")
    if not url:
        pytest.fail(
            "AIOFLOW_REDIS_URL is not set: run the suite with `make test`, or by hand under "
            "`scripts/with-services env PYTHONPATH=$PWD .venv/bin/python -m pytest ...`, which "
            "start a throwaway redis-server"
        )
    return url


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    import redis

    prefix = f"aioflow-test-{uuid.uuid4().hex[:10]}"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


# -- the GPU tests: deselected unless asked for (-m gpu), never silently ----------------------

_GPU_DESELECTED = pytest.StashKey[int]()


def pytest_deselected(items: list[pytest.Item]) -> None:
    if not items:
        return
    config = items[0].config
    gpu = sum(1 for item in items if item.get_closest_marker("gpu") is not None)
    config.stash[_GPU_DESELECTED] = config.stash.get(_GPU_DESELECTED, 0) + gpu


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    count = terminalreporter.config.stash.get(_GPU_DESELECTED, 0)
    if count:
        terminalreporter.write_line(
            f"{count} gpu test(s) deselected (-m 'not gpu'): they need a CUDA GPU; "
            "run `make test-gpu` on a machine with one"
        )
