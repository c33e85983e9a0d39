"""Leaky edges across streams: ``overflow="drop_oldest"`` / ``"drop_newest"`` and ``max_age``
on a block whose input is a Redis stream. Real redis-server, real worker processes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import redis_pipelines as rp
from conftest import Workers

import aioflow as af
from aioflow.stats import BlockStatistics
from aioflow.transport.codec import unpack_plain
from aioflow.transport.messages import GROUP, ItemMeta, Keys, graph_signature, pack_item
from aioflow.transport.redis import Client, RedisTransport, _Credit, connect, ensure_group

pytestmark = pytest.mark.integration


def _balanced(stat: BlockStatistics) -> bool:
    return (
        stat.received
        == (stat.completed + stat.dropped + stat.skipped + stat.failed + stat.in_flight)
        + stat.queue_depth
    )


@pytest.mark.parametrize(
    ("attr", "segments"),
    [("leaky", ["lag"]), ("leaky_behind", ["feed", "lag"])],
    ids=["caller-writes-the-leaky-edge", "a-worker-writes-the-leaky-edge"],
)
async def test_a_drop_oldest_edge_never_blocks_its_producer_and_keeps_the_newest(
    redis_url: str, redis_prefix: str, workers: Workers, attr: str, segments: list[str]
) -> None:
    pipe: af.Pipeline[int, int] = getattr(rp, attr)
    for blocks in segments:
        workers.start(attr, blocks)
    n = 200
    transport = RedisTransport(redis_url, prefix=redis_prefix)
    outputs = await pipe.run(range(n), transport=transport)
    stat = pipe.statistics()["lag"]
    dropped = n - len(outputs)
    # 200 items at 50 ms each would take 10 s behind a blocking edge: the source went on and
    # the stream's oldest entries were trimmed.
    assert dropped > 0
    # Every input is an output or a counted drop, and the block's books say why.
    assert stat.dropped == dropped
    assert stat.dropped_by == {"overflow": dropped}
    assert stat.completed == len(outputs)
    assert stat.received == n
    assert _balanced(stat)
    # The newest entries survive (queue_size 4); outputs stay in input order.
    assert outputs[-4:] == list(range(n - 4, n))
    assert outputs == sorted(set(outputs))


@pytest.mark.parametrize(
    ("attr", "segments"),
    [("leaky_bursts", ["lag"]), ("leaky_bursts_behind", ["feed", "lag"])],
    ids=["caller-writes-bursts", "a-worker-writes-bursts"],
)
async def test_a_trimmed_burst_answers_and_counts_every_item_it_carried(
    redis_url: str, redis_prefix: str, workers: Workers, attr: str, segments: list[str]
) -> None:
    # lag's queue_size of 32 makes its producers write bursts of 4 items per entry (8 entries
    # wait at most); a trimmed entry drops all 4, each answered and counted on its own.
    pipe: af.Pipeline[int, int] = getattr(rp, attr)
    for blocks in segments:
        workers.start(attr, blocks, env={"AIOFLOW_TEST_DELAY": "0.02"})
    n = 600
    transport = RedisTransport(redis_url, prefix=redis_prefix)
    outputs = await pipe.run(range(n), transport=transport)
    stat = pipe.statistics()["lag"]
    dropped = n - len(outputs)
    assert dropped > 0
    assert stat.dropped_by == {"overflow": dropped}
    assert stat.completed == len(outputs)
    assert stat.received == n
    assert _balanced(stat)
    assert outputs == sorted(set(outputs))  # nothing doubled, input order kept
    assert n - 1 in outputs  # drop_oldest keeps the newest


class _Edge:
    """A leaky stream written as a producer writes it (bursts, each followed by the trim) and
    read as a worker reads it (XREADGROUP, then XACK and XDEL of what it finished)."""

    def __init__(self, client: Client, stream: str, overflow: str) -> None:
        self.client = client
        self.stream = stream
        self.credit = _Credit(stream, 4, overflow=overflow, block="lag")

    async def write(self, values: range) -> list[int]:
        """Writes ``values``; returns the ones the trim dropped, in order."""
        pipe = self.client.pipeline(transaction=True)
        for x in values:
            meta = ItemMeta("run", (x,), "reply", "lag", "msgpack")
            pipe.xadd(self.stream, pack_item(meta, b""))
        self.credit.queue_check(pipe)
        replies = await self.client.guard(pipe.execute(raise_on_error=False))
        return sorted(meta["p"][0] for meta in self.credit.checked(replies[-1]))

    async def finish(self, count: int) -> list[int]:
        """Takes ``count`` entries, and acknowledges and deletes them; returns their items."""
        reply = await self.client.xreadgroup(GROUP, "w", {self.stream: ">"}, count=count)
        entries = reply[0][1] if reply else []
        if entries:
            ids = [eid for eid, _ in entries]
            await self.client.xack(self.stream, GROUP, *ids)
            await self.client.xdel(self.stream, *ids)
        return [unpack_plain(fields[b"m"])["p"][0] for _, fields in entries]


@pytest.mark.parametrize(
    ("overflow", "trimmed", "then_taken", "trimmed_then", "kept"),
    [
        ("drop_oldest", range(2, 10), [10], range(11, 16), [16, 17, 18, 19]),
        ("drop_newest", range(6, 14), [2], range(15, 20), [3, 4, 5, 14]),
    ],
)
async def test_a_trim_keeps_queue_size_waiting_entries_after_earlier_trims(
    redis_url: str,
    redis_prefix: str,
    overflow: str,
    trimmed: range,
    then_taken: list[int],
    trimmed_then: range,
    kept: list[int],
) -> None:
    # Deterministically what a worker behind a leaky edge meets (queue_size 4): it took items
    # before any trim, then a trim deleted the entries ahead of it. (From then on XINFO's lag
    # counts the deleted entries, redis/redis#13337: a trim that trusted it deleted every
    # waiting entry, the newest too, and the worker behind got nothing more.)
    client = connect(redis_url)
    edge = _Edge(client, f"{redis_prefix}:in:lag", overflow)
    try:
        await ensure_group(client, edge.stream)
        assert await edge.write(range(4)) == []
        assert await edge.finish(2) == [0, 1]
        assert await edge.write(range(4, 14)) == list(trimmed)
        assert await edge.finish(1) == then_taken
        assert await edge.write(range(14, 20)) == list(trimmed_then)
        # The edge keeps queue_size entries waiting; every item is an output or a counted drop.
        assert await edge.finish(100) == kept
        assert edge.credit.dropped == len(trimmed) + len(trimmed_then)
    finally:
        await client.aclose()


async def test_a_drop_oldest_edge_answers_each_submit_with_item_dropped(
    redis_url: str, redis_prefix: str, workers: Workers
) -> None:
    workers.start("leaky", "lag")
    transport = RedisTransport(redis_url, prefix=redis_prefix)
    async with rp.leaky.open(transport=transport) as running:
        results = await asyncio.gather(
            *(running.submit(x) for x in range(40)), return_exceptions=True
        )
    drops = [r for r in results if isinstance(r, af.ItemDropped)]
    assert drops
    assert {(d.reason, d.block) for d in drops} == {("overflow", "lag")}
    assert all(isinstance(r, af.ItemDropped) or r == x for x, r in enumerate(results))


async def test_a_drop_newest_edge_keeps_the_oldest_and_counts_the_rest(
    redis_url: str, redis_prefix: str, workers: Workers
) -> None:
    workers.start("leaky_newest", "lag", env={"AIOFLOW_TEST_DELAY": "0.2"})
    n = 100
    transport = RedisTransport(redis_url, prefix=redis_prefix)
    outputs = await rp.leaky_newest.run(range(n), transport=transport)
    stat = rp.leaky_newest.statistics()["lag"]
    assert outputs[:4] == [0, 1, 2, 3]
    assert n - 1 not in outputs
    assert stat.dropped_by == {"overflow": n - len(outputs)}
    assert stat.completed == len(outputs)
    assert _balanced(stat)


@pytest.mark.parametrize(
    ("attr", "before"),
    [("aging", None), ("aging_behind", "feed")],
    ids=["the-caller-writes-fresh's-input", "a-worker-writes-it-in-bursts"],
)
async def test_max_age_counts_from_the_caller_and_drops_what_waited_too_long(
    redis_url: str, redis_prefix: str, workers: Workers, attr: str, before: str | None
) -> None:
    # fresh has max_age=0.3 s. Items that waited in the stream for a worker that was not
    # there yet are stale when it reads them, although they are new to it; items sent once
    # it serves are not. Behind a feed segment, the items reach fresh's stream as bursts
    # written by feed's worker: each keeps the birth the caller gave it.
    pipe: af.Pipeline[int, int] = getattr(rp, attr)
    if before is not None:
        workers.start(attr, before)
    started = asyncio.Event()

    async def source() -> AsyncIterator[int]:
        for x in range(10):
            yield x
        await started.wait()
        for x in range(10, 20):
            await asyncio.sleep(0.05)
            yield x

    transport = RedisTransport(redis_url, prefix=redis_prefix)
    run = asyncio.create_task(pipe.run(source(), transport=transport))
    await asyncio.sleep(0.8)  # the first ten are older than max_age now
    worker = workers.start(
        attr, "fresh", env={"AIOFLOW_TEST_DELAY": "0.001"}, extra=("--log-level", "INFO")
    )
    while f"pipeline {pipe.name!r}" not in workers.output(worker):
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.5)  # (it has read the stale ones)
    started.set()
    outputs = await run
    stat = pipe.statistics()["fresh"]
    assert outputs  # the fresh ones went through
    assert outputs == [x for x in range(10, 20) if x in outputs]
    assert stat.dropped_by == {"stale": 20 - len(outputs)}
    assert stat.completed == len(outputs)
    assert _balanced(stat)


async def test_an_entry_trimmed_while_pending_is_acknowledged_and_counted_as_a_drop(
    redis_url: str, redis_prefix: str, workers: Workers
) -> None:
    graph_hash, _ = graph_signature("leaky", rp.leaky.stages)
    keys = Keys(redis_prefix, "leaky", graph_hash)
    inbox = keys.inbox("lag")
    client = connect(redis_url)
    try:
        await ensure_group(client, inbox)
        # A worker that died holding an entry, and the entry trimmed away since.
        entry = await client.xadd(inbox, {b"m": b"\x80", b"v": b""})
        await client.xreadgroup(GROUP, "ghost", {inbox: ">"}, count=1)
        await client.xdel(inbox, entry)
        assert (await client.xpending(inbox, GROUP))["pending"] == 1
        workers.start("leaky", "lag", claim_idle=0.2)
        deadline = time.monotonic() + 30
        while (await client.xpending(inbox, GROUP))["pending"]:
            assert time.monotonic() < deadline, "the trimmed entry stayed pending"
            await asyncio.sleep(0.05)
        # The worker's books count it as a drop of the block that would have read it.
        found: dict[str, int] = {}
        while not found:
            assert time.monotonic() < deadline, "no books count the trimmed entry"
            async for key in client.raw.scan_iter(match=keys.stats("*")):
                raw = await client.hget(key, "lag")
                if raw is not None:
                    found = dict(BlockStatistics.from_data(unpack_plain(raw)).dropped_by)
            await asyncio.sleep(0.05)
        assert found == {"trimmed": 1}
    finally:
        await client.aclose()
