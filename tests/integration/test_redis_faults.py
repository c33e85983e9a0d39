"""The distributed mode when workers die, stop, or fall behind (real redis-server, real
worker processes)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis_pipelines as rp
from conftest import Workers, while_alive

import aioflow as af
from aioflow.transport.messages import GROUP, Keys, graph_signature
from aioflow.transport.redis import RedisTransport, ResponseError, backlog, connect

pytestmark = [pytest.mark.integration, pytest.mark.slow]


async def test_sigkill_a_worker_three_times_nothing_lost_nothing_doubled_order_kept(
    redis_url: str, redis_prefix: str, workers: Workers
) -> None:
    env = {"AIOFLOW_TEST_DELAY": "0.01"}
    info = ("--log-level", "INFO")

    def start() -> subprocess.Popen[str]:
        return workers.start("slowpipe", "first,slow", claim_idle=0.5, env=env, extra=info)

    steady = start()
    graph_hash, _ = graph_signature("slowpipe", rp.slowpipe.stages)
    inbox = Keys(redis_prefix, "slowpipe", graph_hash).inbox("first")
    client = connect(redis_url)
    ready = [asyncio.Event() for _ in range(3)]

    async def pending_of(proc: subprocess.Popen[str]) -> int:
        # (Redis lists a consumer once it has read something.)
        for consumer in await client.xinfo_consumers(inbox, "aioflow"):
            if f"-{proc.pid}-" in consumer["name"].decode():
                return int(consumer["pending"])
        return 0

    async def killer() -> None:
        for round_ in range(3):
            victim = start()
            while "pipeline 'slowpipe'" not in workers.output(victim):  # not serving yet
                await asyncio.sleep(0.02)
            ready[round_].set()  # the source goes on once the victim serves
            while not await pending_of(victim):
                await asyncio.sleep(0.005)
            victim.kill()  # SIGKILL mid-stream, holding items: another worker must take them
            await asyncio.to_thread(victim.wait)

    async def source() -> AsyncIterator[int]:
        for x in range(1200):
            if x % 400 == 0:
                await ready[x // 400].wait()
            yield x

    transport = RedisTransport(redis_url, prefix=redis_prefix)
    kills = asyncio.create_task(killer())
    try:
        outputs = [out async for out in rp.slowpipe.stream(source(), transport=transport)]
        await kills
    finally:
        kills.cancel()
        await asyncio.gather(kills, return_exceptions=True)
        await client.aclose()
    assert steady.poll() is None
    assert [p.returncode for p in workers.procs[1:]] == [-signal.SIGKILL] * 3
    assert outputs == [2 * x + 1 for x in range(1200)]
    # The killed workers' pending items were taken over by the live one.
    assert "took over entry" in workers.output(steady)


async def test_sigterm_stops_a_busy_worker_with_status_0_and_its_items_finish_elsewhere(
    redis_url: str, redis_prefix: str, workers: Workers
) -> None:
    env = {"AIOFLOW_TEST_DELAY": "0.2"}
    leaving = workers.start("slowpipe", "first,slow", claim_idle=1.0, env=env)
    transport = RedisTransport(redis_url, prefix=redis_prefix)
    items = list(range(60))
    outputs = []
    async for out in rp.slowpipe.stream(items, transport=transport):
        outputs.append(out)
        if len(outputs) == 5:
            leaving.send_signal(signal.SIGTERM)
            # The bound the docs promise (grace 3 s, then in-flight items stay pending).
            await asyncio.to_thread(leaving.wait, timeout=5)
            assert leaving.returncode == 0, workers.output(leaving)
            workers.start("slowpipe", "first,slow", claim_idle=1.0, env=env)
    assert outputs == [2 * x + 1 for x in items]


async def test_backpressure_keeps_the_slow_segments_backlog_at_its_queue_size(
    redis_url: str, redis_prefix: str, workers: Workers
) -> None:
    workers.start("backpressure", "fast")
    workers.start("backpressure", "crawl")
    transport = RedisTransport(redis_url, prefix=redis_prefix)
    graph_hash, _ = graph_signature("backpressure", rp.backpressure.stages)
    keys = Keys(redis_prefix, "backpressure", graph_hash)
    client = connect(redis_url)
    seen = {"fast": 0, "crawl": 0}

    async def watch() -> None:
        while True:
            for block in seen:
                seen[block] = max(seen[block], await backlog(client, keys.inbox(block)))
            await asyncio.sleep(0.005)

    watcher = asyncio.create_task(watch())
    try:
        outputs = await rp.backpressure.run(range(120), transport=transport)
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        await client.aclose()
    assert outputs == [10 * x for x in range(120)]
    # crawl's queue_size is 8: its stream never holds more, and it did fill up.
    assert 6 <= seen["crawl"] <= 8
    assert seen["fast"] <= 64


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[tuple[str, Callable[[], None], Callable[[], None]]]:
    """A redis-server of this test's own (append-only file in a temporary folder), with
    ``stop()`` and ``start()`` to restart it on the same port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"redis://127.0.0.1:{port}/0"
    args = [
        shutil.which("redis-server") or "redis-server",
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--appendonly",
        "yes",
        "--save",
        "",
        "--dir",
        str(tmp_path),
    ]
    server: list[subprocess.Popen[bytes]] = []

    def start() -> None:
        server.append(subprocess.Popen(args, stdout=subprocess.DEVNULL))
        for _ in range(200):
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.02)
        pytest.fail(f"redis-server did not start on port {port}")

    def stop() -> None:
        proc = server[-1]
        proc.send_signal(signal.SIGTERM)  # shutdown: the append-only file is flushed
        proc.wait(timeout=30)

    start()
    try:
        yield url, stop, start
    finally:
        if server[-1].poll() is None:
            server[-1].kill()
            server[-1].wait()


async def test_a_redis_restart_mid_run_is_survived_and_nothing_is_lost(
    own_redis: tuple[str, Callable[[], None], Callable[[], None]], redis_prefix: str
) -> None:
    url, stop, start = own_redis
    workers = Workers(url, redis_prefix)
    env = {"AIOFLOW_TEST_DELAY": "0.005"}
    try:
        workers.start("slowpipe", "first,slow", env=env)
        workers.start("slowpipe", "first,slow", env=env)
        transport = RedisTransport(url, prefix=redis_prefix)
        outputs = []
        async for out in rp.slowpipe.stream(range(1000), transport=transport):
            outputs.append(out)
            if len(outputs) == 300:
                await asyncio.to_thread(stop)
                await asyncio.sleep(1.0)
                await asyncio.to_thread(start)
        assert outputs == [2 * x + 1 for x in range(1000)]
        assert all(proc.poll() is None for proc in workers.procs), [
            workers.output(p) for p in workers.procs
        ]
    finally:
        workers.stop()
        for log in workers.logs:
            log.close()


async def test_sigterm_stops_a_worker_whose_redis_is_down_with_status_0(
    own_redis: tuple[str, Callable[[], None], Callable[[], None]], redis_prefix: str
) -> None:
    # A worker retrying a lost connection (up to ~40 s of backoff) must still stop when its
    # supervisor says so: after grace + a margin it leaves what it holds pending.
    url, stop, _ = own_redis
    workers = Workers(url, redis_prefix)
    try:
        proc = workers.start("slowpipe", "first,slow")
        transport = RedisTransport(url, prefix=redis_prefix)
        assert await rp.slowpipe.run(range(5), transport=transport) == [1, 3, 5, 7, 9]
        await asyncio.to_thread(stop)
        await asyncio.sleep(1.0)  # the worker's read has failed and it is retrying
        assert proc.poll() is None, workers.output(proc)
        proc.send_signal(signal.SIGTERM)
        # (not a timing check: without the deadline the worker retried for ~40 s)
        await asyncio.to_thread(proc.wait, timeout=15)
        assert proc.returncode == 0, workers.output(proc)
        assert "leaving what it holds pending" in workers.output(proc)
    finally:
        workers.stop()
        for log in workers.logs:
            log.close()


async def test_an_item_that_kills_every_worker_is_dead_lettered_after_max_deliveries(
    redis_url: str, redis_prefix: str, workers: Workers
) -> None:
    deaths = 0

    def start() -> subprocess.Popen[str]:
        return workers.start(
            "poisoned", "crash_on_3", claim_idle=0.3, extra=("--max-deliveries", "2")
        )

    async def keep_one_worker_alive() -> None:
        nonlocal deaths
        proc = start()
        while True:
            if proc.poll() is not None:
                deaths += 1
                proc = start()
            await asyncio.sleep(0.05)

    keeper = asyncio.create_task(keep_one_worker_alive())
    transport = RedisTransport(redis_url, prefix=redis_prefix)
    try:
        async with rp.poisoned.open(transport=transport) as running:
            assert await running.submit(1) == 1
            with pytest.raises(af.BlockError, match="delivered 3 times") as info:
                await running.submit(3)
            assert info.value.block == "crash_on_3"
            assert await running.submit(4) == 4  # the service goes on
    finally:
        keeper.cancel()
        await asyncio.gather(keeper, return_exceptions=True)
    assert deaths == 2  # delivered, died; taken over, died; then dead-lettered, not run
    graph_hash, _ = graph_signature("poisoned", rp.poisoned.stages)
    client = connect(redis_url)
    try:
        dead = await client.xrange(Keys(redis_prefix, "poisoned", graph_hash).dead)
    finally:
        await client.aclose()
    assert len(dead) == 1
    assert b"more than max_deliveries=2" in dead[0][1][b"reason"]


@pytest.mark.parametrize(
    ("attr", "blocks", "inbox", "first", "then", "expected"),
    [
        ("slowpipe", "first,slow", "first", range(40), range(8), [2 * x + 1 for x in range(8)]),
        (
            "keyed",
            "count",
            "count:p*",
            [(f"cam{x % 4}", x // 4) for x in range(40)],
            [(f"late{x % 2}", x // 2) for x in range(6)],
            [(f"late{x % 2}", x // 2, x // 2 + 1) for x in range(6)],
        ),
    ],
    ids=["plain", "keyed"],
)
async def test_a_worker_goes_on_serving_after_a_finished_runs_keys_are_deleted_under_it(
    redis_url: str,
    redis_prefix: str,
    workers: Workers,
    attr: str,
    blocks: str,
    inbox: str,
    first: Iterable[Any],
    then: Iterable[Any],
    expected: list[Any],
) -> None:
    """A run ends while a worker still holds items of it, and the run's keys are deleted (a
    clean-up at its end). The worker's blocked read ended with ``UNBLOCKED`` and its
    heartbeat's XCLAIM of the entries in flight with ``NOGROUP``; both raised, and the worker
    died with a traceback. It goes on now: its streams are made again, and it serves the next
    run."""
    env = {"AIOFLOW_TEST_DELAY": "1.5"}
    # (--prefetch 4: the items held fill the worker, which stops reading while they run: then
    # its heartbeat, not its read, meets the deleted stream first)
    extra = ("--prefetch", "4", "--log-level", "INFO")
    proc = workers.start(attr, blocks, claim_idle=0.3, env=env, extra=extra)
    pipe = getattr(rp, attr)
    graph_hash, _ = graph_signature(attr, pipe.stages)
    pattern = Keys(redis_prefix, attr, graph_hash).inbox(inbox)
    client = connect(redis_url)

    async def held() -> bool:
        """Whether the worker holds entries, and is not waiting in a read for more."""
        for found in await client.raw.client_list():
            if "b" in found["flags"] and found["cmd"] == "xreadgroup":
                return False
        async for stream in client.raw.scan_iter(match=pattern):
            with contextlib.suppress(ResponseError):  # (no group yet)
                if (await client.xpending(stream, GROUP))["pending"]:
                    return True
        return False

    try:
        run = asyncio.create_task(
            pipe.run(first, transport=RedisTransport(redis_url, prefix=redis_prefix))
        )
        while not await held():
            assert not run.done(), run
            await asyncio.sleep(0.01)
        run.cancel()  # the run ends (its caller cleans its own keys up) ...
        await asyncio.gather(run, return_exceptions=True)
        # ... and its keys are deleted, under the items the worker still works on.
        found = [key async for key in client.raw.scan_iter(match=f"{redis_prefix}:*")]
        await client.delete(*found)
        transport = RedisTransport(redis_url, prefix=redis_prefix)
        outputs = await while_alive(workers, proc, pipe.run(then, transport=transport))
    finally:
        await client.aclose()
    assert outputs == expected
    assert proc.poll() is None
    assert "Traceback" not in workers.output(proc)
