"""The distributed mode's books: workers publish them, the caller merges them; each worker
serves its own metrics. Real redis-server, real worker processes."""

from __future__ import annotations

import asyncio
import re
import time

import aiohttp
import msgpack
import pytest
import redis.asyncio as aioredis
import redis_pipelines as rp
from conftest import Workers

import aioflow as af
from aioflow.stats import BlockStatistics
from aioflow.transport.redis import RedisTransport

pytestmark = pytest.mark.integration


async def _wait_for_books(url: str, pattern: str, count: int) -> None:
    client = aioredis.Redis.from_url(url)
    try:
        deadline = time.monotonic() + 30
        while len([k async for k in client.scan_iter(match=pattern)]) < count:
            assert time.monotonic() < deadline, f"fewer than {count} workers published books"
            await asyncio.sleep(0.05)
    finally:
        await client.aclose()


async def test_statistics_after_a_run_merge_the_books_of_both_workers(
    redis_url: str, redis_prefix: str, workers: Workers
) -> None:
    workers.start("chain", "double,inc,square")
    workers.start("chain", "double,inc,square")
    # Both workers serve before the run (each publishes its books as it starts).
    await _wait_for_books(redis_url, f"{redis_prefix}:chain:*:stats:*", 2)
    transport = RedisTransport(redis_url, prefix=redis_prefix)
    n = 400
    assert await rp.chain.run(range(n), transport=transport) == [(2 * x + 1) ** 2 for x in range(n)]
    stats = rp.chain.statistics()
    assert list(stats) == ["double", "inc", "square"]
    for name, stat in stats.items():
        assert stat.received == n, name
        assert stat.completed == n, name
        assert stat.emitted == n, name
        assert stat.balanced, stat
        assert stat.latency.count > 0, name
    # Two workers' books: inc has workers=4 in each process.
    assert stats["double"].workers == 2
    assert stats["inc"].workers == 8
    assert transport.statistics(rp.chain) == stats

    # Each worker's hash: one record per block, with a TTL (a dead worker's books age out).
    client = aioredis.Redis.from_url(redis_url)
    try:
        keys = [k async for k in client.scan_iter(match=f"{redis_prefix}:chain:*:stats:*")]
        assert len(keys) == 2
        received = 0
        for key in keys:
            assert 0 < await client.pttl(key) <= 15_000
            books = await client.hgetall(key)
            assert set(books) == {b"double", b"inc", b"square"}
            record = BlockStatistics.from_data(msgpack.unpackb(books[b"double"]))
            received += record.received
        assert received == n
    finally:
        await client.aclose()


async def test_local_blocks_keep_their_books_in_the_caller(
    redis_url: str, redis_prefix: str, workers: Workers
) -> None:
    workers.start("chain", "inc,square")
    transport = RedisTransport(redis_url, prefix=redis_prefix, local={"double"})
    await rp.chain.run(range(30), transport=transport)
    stats = rp.chain.statistics()
    assert stats["double"].received == 30  # the caller ran it
    assert stats["inc"].received == stats["square"].received == 30  # the worker did
    assert all(s.balanced for s in stats.values())
    assert rp.chain.bottleneck() is not None


async def test_a_service_sees_the_workers_books_while_it_runs(
    redis_url: str, redis_prefix: str, workers: Workers
) -> None:
    workers.start("chain", "double,inc,square")
    transport = RedisTransport(redis_url, prefix=redis_prefix)
    async with rp.chain.open(transport=transport) as running:
        answers = await asyncio.gather(*(running.submit(x) for x in range(50)))
        assert answers == [(2 * x + 1) ** 2 for x in range(50)]
        deadline = time.monotonic() + 10
        while running.statistics()["square"].completed < 50:
            assert time.monotonic() < deadline, running.statistics()
            await asyncio.sleep(0.1)
        stat = running.statistics()["square"]
        assert stat.received == 50
        assert stat.balanced


async def test_a_stopped_workers_books_age_out(
    redis_url: str, redis_prefix: str, workers: Workers
) -> None:
    extra = ("--stats-ttl", "1", "--stats-period", "0.2")
    proc = workers.start("chain", "double,inc,square", extra=extra)
    transport = RedisTransport(redis_url, prefix=redis_prefix)
    await rp.chain.run(range(10), transport=transport)
    assert rp.chain.statistics()["double"].received == 10
    proc.terminate()
    assert proc.wait(timeout=10) == 0
    pattern = f"{redis_prefix}:chain:*:stats:*"
    client = aioredis.Redis.from_url(redis_url)
    try:
        deadline = time.monotonic() + 10
        while [k async for k in client.scan_iter(match=pattern)]:
            assert time.monotonic() < deadline, "a stopped worker's books did not expire"
            await asyncio.sleep(0.1)
    finally:
        await client.aclose()
    # A new worker's books alone: the stopped one's are not counted any more.
    workers.start("chain", "double,inc,square", extra=extra)
    await rp.chain.run(range(5), transport=transport)
    stats = rp.chain.statistics()
    assert stats["double"].received == 5
    assert stats["double"].workers == 1


def _metrics_url(workers: Workers, proc: object) -> str:
    deadline = time.monotonic() + 20
    while True:
        found = re.search(r"metrics at (http://\S+)", workers.output(proc))  # type: ignore[arg-type]
        if found:
            return found.group(1)
        assert time.monotonic() < deadline, workers.output(proc)  # type: ignore[arg-type]
        time.sleep(0.05)


async def test_a_worker_serves_its_segments_metrics(
    redis_url: str, redis_prefix: str, workers: Workers
) -> None:
    proc = workers.start("chain", "double,inc", extra=("--metrics", "127.0.0.1:0"))
    workers.start("chain", "square")
    url = _metrics_url(workers, proc)
    assert url.startswith("http://127.0.0.1:")
    transport = RedisTransport(redis_url, prefix=redis_prefix)
    async with rp.chain.open(transport=transport) as running, aiohttp.ClientSession() as http:
        assert await asyncio.gather(*(running.submit(x) for x in range(20))) == [
            (2 * x + 1) ** 2 for x in range(20)
        ]
        async with http.get(url) as resp:
            assert resp.status == 200
            text = await resp.text()
    assert 'aioflow_items_received_total{block="double",pipeline="chain"} 20.0' in text
    assert 'aioflow_items_received_total{block="inc",pipeline="chain"} 20.0' in text
    assert 'block="square"' not in text  # another worker's segment
    proc.terminate()
    assert proc.wait(timeout=10) == 0
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientConnectionError):
            await http.get(url)


def test_books_travel_as_plain_data() -> None:
    stat = BlockStatistics(
        "b",
        received=5,
        completed=3,
        dropped=1,
        dropped_by={"overflow": 1},
        in_flight=1,
        batch_sizes={2: 1, 1: 1},
        latency=af.LatencyHistogram(bounds=(0.1, 1.0), counts=(2, 1, 0), sum_s=0.4),
    )
    data = msgpack.unpackb(msgpack.packb(stat.to_data()))
    assert BlockStatistics.from_data(data) == stat
    with pytest.raises(ValueError, match="not a BlockStatistics record"):
        BlockStatistics.from_data({"received": 3})
