"""Leaky edges across streams: ``overflow="drop_oldest"`` / ``"drop_newest"`` and ``max_age``
on a block whose input is a Redis stream. Real redis-server, real worker processes."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import AsyncIterator

import pytest
import redis_pipelines as rp
from conftest import Workers, pipeline_keys, serving, sigkill_a_holder

import aioflow as af
from aioflow.stats import BlockStatistics
from aioflow.transport.codec import MsgpackCodec, unpack_plain
from aioflow.transport.messages import GROUP, ItemMeta, pack_item
from aioflow.transport.partitions import partition_streams
from aioflow.transport.redis import (
    Client,
    RedisTransport,
    Trims,
    _Credit,
    connect,
    ensure_group,
)

pytestmark = pytest.mark.integration


def _balanced(stat: BlockStatistics) -> bool:
    return (
        stat.received
        == (stat.completed + stat.dropped + stat.skipped + stat.failed + stat.in_flight)
        + stat.queue_depth
    )


async def _held_by_a_ghost_then_trimmed(client: Client, stream: str) -> None:
    """An entry of ``stream`` that a worker which has died was holding, deleted since (a trim or
    other hands)."""
    await ensure_group(client, stream)
    entry = await client.xadd(stream, {b"m": b"\x80", b"v": b""})
    await client.xreadgroup(GROUP, "ghost", {stream: ">"}, count=1)
    await client.xdel(stream, entry)


async def _acknowledged_and_counted(client: Client, stream: str, stats: str, block: str) -> None:
    """Waits (30 s at most) until nothing of ``stream`` is pending and the books of a worker
    (``stats``: the pattern of their hashes) count a drop of ``block``; asserts that it is one,
    counted as trimmed."""
    deadline = time.monotonic() + 30
    while (await client.xpending(stream, GROUP))["pending"]:
        assert time.monotonic() < deadline, "the trimmed entry stayed pending"
        await asyncio.sleep(0.05)
    found: dict[str, int] = {}
    while not found:
        assert time.monotonic() < deadline, "no books count the trimmed entry"
        async for key in client.raw.scan_iter(match=stats):
            raw = await client.hget(key, block)
            if raw is not None:
                found = dict(BlockStatistics.from_data(unpack_plain(raw)).dropped_by)
        await asyncio.sleep(0.05)
    assert found == {"trimmed": 1}


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


async def test_a_worker_killed_between_its_trim_and_the_answers_loses_no_item(
    redis_url: str, redis_prefix: str, workers: Workers
) -> None:
    # The feed worker writes bursts to lag's leaky stream; the first time its trim finds
    # entries beyond the bound it is SIGKILLed, before it deletes them and answers their
    # callers. Those entries stay (a trim only finds; the delete and the answers go together),
    # so the next trim or the lag block answers every item: the run ends, nothing lost or
    # doubled. (When the trim deleted at once, their items were never answered and the run
    # waited for them for good.)
    env = {"AIOFLOW_TEST_DELAY": "0.02"}
    info = ("--log-level", "INFO")
    dying = workers.start(
        "leaky_bursts_behind",
        "feed",
        env={**env, "AIOFLOW_TEST_DIE_BEFORE_DROP": "1"},
        extra=info,
    )
    lag = workers.start("leaky_bursts_behind", "lag", env=env, extra=info)
    await serving(workers, dying)
    await serving(workers, lag)
    n = 600
    transport = RedisTransport(redis_url, prefix=redis_prefix)
    run = asyncio.create_task(rp.leaky_bursts_behind.run(range(n), transport=transport))
    try:
        assert await asyncio.to_thread(dying.wait, 30) == -signal.SIGKILL
        # Another feed worker takes over what the dead one held and goes on.
        workers.start("leaky_bursts_behind", "feed", claim_idle=0.5, env=env, extra=info)
        outputs = await asyncio.wait_for(asyncio.shield(run), 30)
    finally:
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)
    assert outputs == sorted(set(outputs))
    assert n - 1 in outputs
    stat = rp.leaky_bursts_behind.statistics()["lag"]
    # The dead worker dropped nothing: every item lag's stream carried is an output of lag
    # or a drop counted by the worker that trimmed it.
    assert stat.received == n
    assert stat.completed == len(outputs)
    assert stat.dropped == stat.dropped_by["overflow"] == n - len(outputs)


async def test_a_trim_deletes_and_answers_only_entries_no_reader_took_meanwhile(
    redis_url: str, redis_prefix: str
) -> None:
    client = connect(redis_url)
    stream = f"{redis_prefix}:edge"
    try:
        await ensure_group(client, stream)
        edge = _Edge(client, stream, "drop_oldest")
        # Ten entries: the trim finds the oldest 6 beyond the bound of 4...
        pipe = client.pipeline(transaction=True)
        for x in range(10):
            meta = ItemMeta("run", (x,), f"{redis_prefix}:reply", "lag", "msgpack")
            pipe.xadd(stream, pack_item(meta, b""))
        edge.credit.queue_check(pipe)
        replies = await client.guard(pipe.execute(raise_on_error=False))
        found = Trims()
        found.add(edge.credit, edge.credit.checked(replies[-1]))
        assert [meta["p"][0] for _, metas in found.found[0][1] for meta in metas] == [
            0,
            1,
            2,
            3,
            4,
            5,
        ]
        # ...and deleted nothing yet: a producer killed now leaves all 10 for the reader.
        assert await client.xlen(stream) == 10
        # A reader takes the two oldest meanwhile: they are its to answer.
        assert await edge.finish(2) == [0, 1]
        await client.xadd(f"{redis_prefix}:reply", {b"m": b"\x80", b"v": b""})
        metas = await found.drop(client, MsgpackCodec(), "lag")
        assert [meta["p"][0] for meta in metas] == [2, 3, 4, 5]
        assert edge.credit.dropped == 4
        # Each item deleted got one answer, on its caller's reply stream, saying why.
        answers = await client.xrange(f"{redis_prefix}:reply")
        told = [unpack_plain(fields[b"m"]) for _, fields in answers[1:]]
        assert [(m["p"], m["k"], m["reason"], m["block"]) for m in told] == [
            ([x], "out", "overflow", "lag") for x in (2, 3, 4, 5)
        ]
        assert await edge.finish(10) == [6, 7, 8, 9]
    finally:
        await client.aclose()


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
        found = Trims()
        found.add(self.credit, self.credit.checked(replies[-1]))
        if not found:
            return []
        metas = await found.drop(self.client, MsgpackCodec(), "lag")
        return sorted(meta["p"][0] for meta in metas)

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
    [("aging", None), ("aging_behind", "feed"), ("aging_keyed", None)],
    ids=[
        "the-caller-writes-fresh's-input",
        "a-worker-writes-it-in-bursts",
        "a-keyed-fresh's-partitions",
    ],
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
    keys = pipeline_keys(redis_prefix, "leaky")
    inbox = keys.inbox("lag")
    client = connect(redis_url)
    try:
        # A worker that died holding an entry, and the entry trimmed away since.
        await _held_by_a_ghost_then_trimmed(client, inbox)
        assert (await client.xpending(inbox, GROUP))["pending"] == 1
        workers.start("leaky", "lag", claim_idle=0.2)
        # The worker's books count it as a drop of the block that would have read it.
        await _acknowledged_and_counted(client, inbox, keys.stats("*"), "lag")
    finally:
        await client.aclose()


# A leaky keyed block heading a remote segment: its input is partition streams (2 here, of
# ceil(queue_size 8 / 2) = 4 entries each), and each partition is leaky with that bound.
TWO = ("--partitions", "2")


@pytest.mark.parametrize(
    ("attr", "segments"),
    [("leaky_keyed", ["lag_keyed"]), ("leaky_keyed_behind", ["feed", "lag_keyed"])],
    ids=["caller-writes-the-partitions", "a-worker-writes-the-partitions"],
)
async def test_a_leaky_keyed_block_trims_each_partition_and_counts_every_drop(
    redis_url: str, redis_prefix: str, workers: Workers, attr: str, segments: list[str]
) -> None:
    pipe: af.Pipeline[int, int] = getattr(rp, attr)
    for blocks in segments:
        workers.start(attr, blocks, extra=TWO)
    n = 200
    transport = RedisTransport(redis_url, prefix=redis_prefix, partitions=2)
    outputs = await pipe.run(range(n), transport=transport)
    stat = pipe.statistics()["lag_keyed"]
    dropped = n - len(outputs)
    # 200 items at 50 ms each would take 10 s behind waiting producers: the source went on
    # and each partition's oldest entries were trimmed.
    assert dropped > 0
    assert stat.dropped_by == {"overflow": dropped}
    assert stat.completed == len(outputs)
    assert stat.received == n
    assert _balanced(stat)
    # Each partition keeps its newest 4 (one key each: the 4 newest of each parity).
    assert outputs[-8:] == list(range(n - 8, n))
    assert outputs == sorted(set(outputs))


async def test_a_drop_newest_keyed_block_keeps_the_oldest_of_each_partition(
    redis_url: str, redis_prefix: str, workers: Workers
) -> None:
    workers.start("leaky_keyed_newest", "lag_keyed", env={"AIOFLOW_TEST_DELAY": "0.2"}, extra=TWO)
    n = 100
    transport = RedisTransport(redis_url, prefix=redis_prefix, partitions=2)
    outputs = await rp.leaky_keyed_newest.run(range(n), transport=transport)
    stat = rp.leaky_keyed_newest.statistics()["lag_keyed"]
    assert outputs[:8] == list(range(8))
    assert n - 1 not in outputs
    assert n - 2 not in outputs
    assert stat.dropped_by == {"overflow": n - len(outputs)}
    assert stat.completed == len(outputs)
    assert _balanced(stat)


async def test_a_leaky_keyed_block_answers_each_dropped_submit_with_item_dropped(
    redis_url: str, redis_prefix: str, workers: Workers
) -> None:
    workers.start("leaky_keyed", "lag_keyed", extra=TWO)
    transport = RedisTransport(redis_url, prefix=redis_prefix, partitions=2)
    async with rp.leaky_keyed.open(transport=transport) as running:
        results = await asyncio.gather(
            *(running.submit(x) for x in range(40)), return_exceptions=True
        )
    drops = [r for r in results if isinstance(r, af.ItemDropped)]
    assert drops
    assert {(d.reason, d.block) for d in drops} == {("overflow", "lag_keyed")}
    assert all(isinstance(r, af.ItemDropped) or r == x for x, r in enumerate(results))


async def test_trims_in_front_of_a_keyed_block_keep_its_state_across_an_owner_sigkilled(
    redis_url: str, redis_prefix: str, workers: Workers
) -> None:
    # The producer trims what no owner took; the owner snapshots its state with a mark and a
    # next owner processes again what the group delivered after it: trimmed entries are never
    # among those, so each key's count goes 1, 2, 3, ... over the items that were not dropped.
    env = {"AIOFLOW_TEST_DELAY": "0.01"}
    extra = (*TWO, "--lease-ttl", "1", "--snapshot-period", "0.2", "--log-level", "INFO")
    procs = [workers.start("lossy", "lossy_count", env=env, extra=extra) for _ in range(2)]
    keys = pipeline_keys(redis_prefix, "lossy")
    streams = partition_streams(keys.inbox("lossy_count"), 2)
    client = connect(redis_url)
    killed: list[subprocess.Popen[str]] = []

    async def source() -> AsyncIterator[int]:
        for x in range(600):
            if x >= 200 and not killed:
                await sigkill_a_holder(client, procs, streams, killed)
            if x % 20 == 0:
                await asyncio.sleep(0.01)  # (a source that does not finish before the kill)
            yield x

    transport = RedisTransport(redis_url, prefix=redis_prefix, partitions=2)
    try:
        # Both workers serve, and the partitions are owned, before the source starts: a leaky
        # edge never makes its producer wait, so under load the source went through its 600
        # items while the workers were still starting, and none held an item to be killed.
        for proc in procs:
            await serving(workers, proc)
        leases = [f"{keys.base}:lease:lossy_count:{part}" for part in (0, 1)]
        while None in [await client.get(lease) for lease in leases]:
            assert all(p.poll() is None for p in procs), [workers.output(p) for p in procs]
            await asyncio.sleep(0.02)
        outputs = [out async for out in rp.lossy.stream(source(), transport=transport)]
    finally:
        await client.aclose()
    assert killed, "no worker held an item while the source ran"
    assert killed[0].wait() == -signal.SIGKILL
    xs = [x for _, x, _ in outputs]
    assert xs == sorted(set(xs))  # every output once, in input order
    for key in (0, 1):
        counts = [n for k, _, n in outputs if k == key]
        assert counts == list(range(1, len(counts) + 1))
    dropped = 600 - len(outputs)
    assert dropped > 0
    # The caller trimmed them all (it writes the partitions), and counts them.
    assert rp.lossy.statistics()["lossy_count"].dropped_by.get("overflow") == dropped


async def test_a_partition_entry_deleted_while_pending_is_acknowledged_at_the_takeover(
    redis_url: str, redis_prefix: str, workers: Workers
) -> None:
    keys = pipeline_keys(redis_prefix, "leaky_keyed")
    stream = partition_streams(keys.inbox("lag_keyed"), 2)[1]
    client = connect(redis_url)
    try:
        await client.set(f"{keys.base}:partitions:lag_keyed", 2)
        # An owner that died holding an entry of partition 1, deleted since by other hands.
        await _held_by_a_ghost_then_trimmed(client, stream)
        workers.start("leaky_keyed", "lag_keyed", extra=TWO)
        await _acknowledged_and_counted(client, stream, keys.stats("*"), "lag_keyed")
    finally:
        await client.aclose()


async def test_a_takeover_counts_again_every_item_its_dead_owner_processed_in_a_leaky_block(
    redis_url: str, redis_prefix: str, workers: Workers
) -> None:
    """The owner of a leaky keyed block processed 30 items of a key, with no snapshot yet,
    and was SIGKILLed: the next owner restores nothing and processes the 30 entries again for
    the key's state. It handed them to the block all at once, whose input (8 items, and
    overflow="drop_oldest") dropped most of them, and the key's count went back. Each entry
    taken over now goes in alone."""
    extra = (*TWO, "--lease-ttl", "1", "--snapshot-period", "600", "--log-level", "INFO")
    first = workers.start("lossy", "lossy_count", extra=extra)
    await serving(workers, first)
    transport = RedisTransport(redis_url, prefix=redis_prefix, partitions=2)
    async with rp.lossy.open(transport=transport) as running:
        counts = [(await running.submit(x))[2] for x in range(0, 60, 2)]  # one at a time
        assert counts == list(range(1, 31))
        first.kill()
        assert first.wait() == -signal.SIGKILL
        second = workers.start("lossy", "lossy_count", extra=extra)
        await serving(workers, second)
        assert await running.submit(60) == (0, 60, 31)


async def test_a_takeover_counts_again_the_items_its_dead_owner_processed_however_old(
    redis_url: str, redis_prefix: str, workers: Workers
) -> None:
    """A keyed block with max_age: the next owner replays the entries its dead owner
    processed (no snapshot yet) to rebuild the key's state. They are older than max_age by
    then (the lease of 1 s had to run out first), but they are not stale input: their answers
    went out, and dropping them would lose them from the state."""
    extra = (*TWO, "--lease-ttl", "1", "--snapshot-period", "600", "--log-level", "INFO")
    first = workers.start("staling", "stale_count", extra=extra)
    await serving(workers, first)
    transport = RedisTransport(redis_url, prefix=redis_prefix, partitions=2)
    async with rp.staling.open(transport=transport) as running:
        counts = [(await running.submit(x))[2] for x in range(0, 20, 2)]
        assert counts == list(range(1, 11))
        first.kill()
        assert first.wait() == -signal.SIGKILL
        second = workers.start("staling", "stale_count", extra=extra)
        while "took over partition" not in workers.output(second):  # (then 20 is fresh)
            assert second.poll() is None, workers.output(second)
            await asyncio.sleep(0.02)
        assert await running.submit(20) == (0, 20, 11)
        stats = running.statistics()
    assert stats["stale_count"].dropped == 0
