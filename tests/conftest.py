"""Shared test configuration: every async test runs on asyncio's default loop and on uvloop;
the Redis server of the suite."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable, Iterator, Mapping

import pytest
import uvloop


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


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
