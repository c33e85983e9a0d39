"""The backlog bound of a Redis edge as producers write to it (real redis-server, real worker
processes): the caller checks the bound and writes its entries in one atomic step, so several
producers racing for the same stream never push it past ``queue_size``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis_pipelines as rp
from conftest import Workers

import aioflow as af
from aioflow.transport.codec import MsgpackCodec
from aioflow.transport.messages import GROUP, Keys, graph_signature, parse_entry
from aioflow.transport.partitions import partition_streams
from aioflow.transport.redis import (
    APPEND_SCRIPT,
    GUARD_SCRIPT,
    REDIS_QUEUE_BYTES,
    REDIS_QUEUE_SIZE,
    UNDO_SCRIPT,
    Commands,
    RedisTransport,
    ResponseError,
    backlog,
    connect,
    ensure_group,
    stage_capacity,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@af.block(queue_size=256)
async def held(x: int) -> int:
    return x


#: no worker serves it: the caller fills its stream up to the bound and waits
unserved = af.Pipeline(held, name="unserved")


@contextlib.asynccontextmanager
async def backlogs(redis_url: str, *streams: str, every: float = 0.001) -> AsyncIterator[list[int]]:
    """The backlog of each of ``streams``, sampled every ``every`` s while the body runs."""
    client = connect(redis_url)
    seen: list[int] = []

    async def watch() -> None:
        while True:
            for stream in streams:
                seen.append(await backlog(client, stream))
            await asyncio.sleep(every)

    watcher = asyncio.create_task(watch())
    try:
        yield seen
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        await client.aclose()


async def test_the_append_script_writes_only_the_entries_that_fit_under_the_bound(
    redis_url: str, redis_prefix: str
) -> None:
    client = connect(redis_url)
    stream = f"{redis_prefix}:append"
    try:
        await ensure_group(client, stream)
        for i in range(6):
            await client.xadd(stream, {b"v": str(i).encode()})
        # 4 delivered (pending), 2 waiting: a backlog of 6 entries.
        await client.xreadgroup(GROUP, "reader", {stream: ">"}, count=4)
        append = client.raw.register_script(APPEND_SCRIPT)

        def offer(n: int) -> list[bytes | int]:
            args: list[bytes | int] = [GROUP, 8, n]
            for i in range(n):
                args += [2, b"v", f"new{i}".encode()]
            return args

        got = await client.guard(append(keys=[stream], args=offer(5)))
        assert got[:2] == [2, 8]
        assert got[2:] == [eid for eid, _ in (await client.xrange(stream))[-2:]]  # their ids
        assert await backlog(client, stream) == 8
        assert await client.guard(append(keys=[stream], args=offer(3))) == [0, 8]
        # Acknowledged and deleted (as a worker does): room for 3 more.
        pending = await client.xpending_range(stream, GROUP, "-", "+", 3)
        ids = [row["message_id"] for row in pending]
        await client.xack(stream, GROUP, *ids)
        await client.xdel(stream, *ids)
        assert (await client.guard(append(keys=[stream], args=offer(5))))[:2] == [3, 8]
        entries = await client.xrange(stream)
        assert [f[b"v"] for _, f in entries][-5:] == [b"new0", b"new1", b"new0", b"new1", b"new2"]
    finally:
        await client.delete(stream)
        await client.aclose()


async def test_the_guard_script_runs_a_commit_whole_or_not_at_all_under_the_bound(
    redis_url: str, redis_prefix: str
) -> None:
    # A worker's commit: outputs to the next stream and the acknowledgement of its input, in
    # one step that runs only while the outputs fit under the next stream's bound.
    client = connect(redis_url)
    inbox, outbox = f"{redis_prefix}:guard-in", f"{redis_prefix}:guard-out"
    try:
        for stream in (inbox, outbox):
            await ensure_group(client, stream)
        taken = await client.xadd(inbox, {b"v": b"x"})
        await client.xreadgroup(GROUP, "worker", {inbox: ">"}, count=1)
        for i in range(6):
            await client.xadd(outbox, {b"v": str(i).encode()})
        guard = client.raw.register_script(GUARD_SCRIPT)

        def commit(outputs: int) -> list[Any]:
            commands = Commands()
            for i in range(outputs):
                commands.xadd(outbox, {b"v": f"out{i}".encode()})
            commands.xack(inbox, GROUP, taken)
            commands.xdel(inbox, taken)
            # (0: no leases to check, as for a worker that owns no partition)
            return [GROUP, 8, outputs, 0, commands.count, *commands.args]

        # 6 waiting + 3 would pass the bound of 8: nothing runs, the input stays pending.
        assert await client.guard(guard(keys=[outbox], args=commit(3))) == [0, [6]]
        assert await client.xlen(outbox) == 6
        assert (await client.xpending(inbox, GROUP))["pending"] == 1
        # 2 fit: the outputs are written and the input acknowledged and deleted together.
        assert await client.guard(guard(keys=[outbox], args=commit(2))) == [1, [8]]
        assert [f[b"v"] for _, f in await client.xrange(outbox)][-2:] == [b"out0", b"out1"]
        assert (await client.xpending(inbox, GROUP))["pending"] == 0
        assert await client.xlen(inbox) == 0
    finally:
        await client.delete(inbox, outbox)
        await client.aclose()


async def test_two_callers_racing_for_a_slow_segment_never_push_its_backlog_past_queue_size(
    redis_url: str, redis_prefix: str, workers: Workers
) -> None:
    # The callers run `fast` themselves and write straight to crawl's stream (queue_size 8,
    # a block that takes 20 ms an item): two producers of one stream, each told by Redis how
    # much room is left in the same step as its writes.
    workers.start("backpressure", "crawl")
    other = af.Pipeline(rp.fast.with_options(), rp.crawl.with_options(), name="backpressure")
    graph_hash, _ = graph_signature("backpressure", rp.backpressure.stages)
    assert graph_signature("backpressure", other.stages)[0] == graph_hash  # the same streams
    stream = Keys(redis_prefix, "backpressure", graph_hash).inbox("crawl")

    def transport() -> RedisTransport:
        return RedisTransport(redis_url, prefix=redis_prefix, local={"fast"})

    async with backlogs(redis_url, stream, every=0.002) as seen:
        first, second = await asyncio.gather(
            rp.backpressure.run(range(60), transport=transport()),
            other.run(range(100, 160), transport=transport()),
        )
    assert first == [10 * x for x in range(60)]
    assert second == [10 * x for x in range(100, 160)]
    assert max(seen) <= 8, f"crawl's stream held {max(seen)} entries, queue_size is 8"
    assert max(seen) >= 6  # it did fill up: the bound, not the callers, held them back


async def test_three_workers_feeding_a_slow_segment_never_push_its_backlog_past_queue_size(
    redis_url: str, redis_prefix: str, workers: Workers
) -> None:
    # Three workers of `fast` all write to crawl's stream (queue_size 8, 20 ms an item, one
    # worker): each worker's writes check the bound and write in one atomic step, so the room
    # one worker saw free is never taken by another as well. (When a worker checked, then
    # wrote, the three took the same freed room and the stream held 9 to 11 entries.)
    for _ in range(3):
        workers.start("backpressure", "fast")
    workers.start("backpressure", "crawl")
    graph_hash, _ = graph_signature("backpressure", rp.backpressure.stages)
    stream = Keys(redis_prefix, "backpressure", graph_hash).inbox("crawl")
    async with backlogs(redis_url, stream) as seen, asyncio.timeout(60):
        outputs = await rp.backpressure.run(
            range(300), transport=RedisTransport(redis_url, prefix=redis_prefix)
        )
    assert outputs == [10 * x for x in range(300)]  # every item, once, in order
    books = rp.backpressure.statistics()
    assert books["fast"].completed == books["crawl"].completed == 300
    assert max(seen) <= 8, f"crawl's stream held {max(seen)} entries, queue_size is 8"
    assert max(seen) >= 6  # it did fill up: the bound held the workers back


async def test_entries_trimmed_before_any_worker_took_them_end_as_counted_drops_not_a_hang(
    redis_url: str, redis_prefix: str, workers: Workers
) -> None:
    # crawl (20 ms an item, queue_size 8) takes 2 items ahead, so its stream holds entries no
    # worker took yet; someone else's XTRIM deletes them all once the caller wrote every item.
    workers.start("backpressure", "crawl", extra=("--prefetch", "2"))
    graph_hash, _ = graph_signature("backpressure", rp.backpressure.stages)
    stream = Keys(redis_prefix, "backpressure", graph_hash).inbox("crawl")
    client = connect(redis_url)
    transport = RedisTransport(redis_url, prefix=redis_prefix, local={"fast"})
    trimmed: list[int] = []

    async def trim_when_all_written() -> None:
        while True:
            try:
                info = await client.xinfo_stream(stream)
            except ResponseError:  # the stream does not exist yet
                info = {}
            if int(info.get("entries-added", 0)) >= 30:
                trimmed.append(await client.xtrim(stream, maxlen=0, approximate=False))
                return
            await asyncio.sleep(0.005)

    trimmer = asyncio.create_task(trim_when_all_written())
    try:
        async with asyncio.timeout(30):  # (before: the run waited forever for their answers)
            outputs = await rp.backpressure.run(range(30), transport=transport)
        await trimmer
    finally:
        trimmer.cancel()
        await asyncio.gather(trimmer, return_exceptions=True)
        await client.aclose()
    assert trimmed[0] >= 1
    assert outputs == sorted(outputs)
    assert set(outputs) <= {10 * x for x in range(30)}
    books = rp.backpressure.statistics()["crawl"]
    # Every input is accounted for: answered, or dropped as trimmed (and counted).
    assert books.dropped_by.get("trimmed", 0) == 30 - len(outputs) >= 1
    assert books.received == books.completed + books.dropped == 30


async def test_entries_trimmed_mid_run_while_later_ones_are_read_also_end_as_counted_drops(
    redis_url: str, redis_prefix: str, workers: Workers
) -> None:
    # The same, but the trim comes mid-run: the caller writes more entries after it, the
    # worker reads those, and Redis' last delivered id passes the deleted ones. The remote
    # leg is one block (crawl): a deleted entry that is not pending and not answered was lost.
    worker = workers.start(
        "backpressure", "crawl", extra=("--prefetch", "2", "--log-level", "INFO")
    )
    while "pipeline 'backpressure'" not in workers.output(worker):  # not serving yet
        await asyncio.sleep(0.02)
    graph_hash, _ = graph_signature("backpressure", rp.backpressure.stages)
    stream = Keys(redis_prefix, "backpressure", graph_hash).inbox("crawl")
    client = connect(redis_url)
    transport = RedisTransport(redis_url, prefix=redis_prefix, local={"fast"})
    trimmed: list[int] = []

    async def trim_once_entries_wait() -> None:
        while True:
            added = (await client.xinfo_stream(stream))["entries-added"]
            groups = await client.xinfo_groups(stream)
            lag = next((g["lag"] for g in groups if g["name"] == GROUP.encode()), None)
            # 16 written (so at least 8 read and answered: the bound is 8), 4 or more waiting
            # behind the ones the worker holds.
            if added >= 16 and (lag or 0) >= 4:
                trimmed.append(await client.xtrim(stream, maxlen=0, approximate=False))
                return
            await asyncio.sleep(0.005)

    trimmer = asyncio.create_task(trim_once_entries_wait())
    try:
        async with asyncio.timeout(30):
            outputs = await rp.backpressure.run(range(60), transport=transport)
        await trimmer
    finally:
        trimmer.cancel()
        await asyncio.gather(trimmer, return_exceptions=True)
        await client.aclose()
    assert trimmed[0] >= 1
    assert outputs == sorted(outputs)
    assert 10 * 59 in outputs  # items written after the trim went through
    books = rp.backpressure.statistics()["crawl"]
    assert books.dropped_by.get("trimmed", 0) == 60 - len(outputs) >= 1
    assert books.received == books.completed + books.dropped == 60


async def test_a_stream_whose_worker_is_away_fills_to_its_bound_with_full_bursts(
    redis_url: str, redis_prefix: str
) -> None:
    # queue_size 256: bursts of 32 items, so the stream takes 8 entries. The caller takes its
    # items 100 at a time; a short burst at the end of each hundred would take an entry of its
    # own, and the stream would hold fewer items than its bound while no worker reads it.
    graph_hash, _ = graph_signature("unserved", unserved.stages)
    stream = Keys(redis_prefix, "unserved", graph_hash).inbox("held")
    client = connect(redis_url)
    run = asyncio.create_task(
        unserved.run(range(1000), transport=RedisTransport(redis_url, prefix=redis_prefix))
    )
    codec = MsgpackCodec()
    try:
        sizes: list[int] = []
        for _ in range(300):
            sizes = [len(parse_entry(f, codec).metas) for _, f in await client.xrange(stream)]
            if len(sizes) >= 8:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # the bound holds: nothing more is written meanwhile
        sizes = [len(parse_entry(f, codec).metas) for _, f in await client.xrange(stream)]
        assert sizes == [32] * 8, f"entries of {sizes} items, not 8 full bursts of 32"
        assert not run.done()
    finally:
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)
        await client.aclose()


async def test_the_undo_script_takes_back_the_large_entries_that_pass_the_bound(
    redis_url: str, redis_prefix: str
) -> None:
    # Frame-sized values go by XADD; in the same MULTI the script deletes again the newest of
    # them while the backlog passes the bound (a caller keeps what fits, a worker's commit is
    # whole or not at all).
    client = connect(redis_url)
    stream = f"{redis_prefix}:undo"
    frame = b"f" * 100_000
    try:
        await ensure_group(client, stream)
        for _ in range(3):
            await client.xadd(stream, {b"v": frame})

        async def offer(n: int, mode: str) -> tuple[list[Any], list[Any]]:
            pipe = client.pipeline(transaction=True)
            for _ in range(n):
                pipe.xadd(stream, {b"v": frame})
            pipe.eval(UNDO_SCRIPT, 1, stream, GROUP, 4, n, mode)
            replies = await client.guard(pipe.execute())
            return replies[:-1], replies[-1]

        ids, check = await offer(3, "some")  # 3 waiting, bound 4: one of three stays
        assert check == [1, 4]
        assert [eid for eid, _ in await client.xrange(stream)][-1] == ids[0]
        assert await backlog(client, stream) == 4
        _, check = await offer(1, "all")
        assert check == [0, 4]
        assert await client.xlen(stream) == 4
        # Read and acknowledged (as a worker does): a commit of two fits again, whole.
        read = await client.xreadgroup(GROUP, "reader", {stream: ">"}, count=2)
        done = [eid for eid, _ in read[0][1]]
        await client.xack(stream, GROUP, *done)
        await client.xdel(stream, *done)
        _, check = await offer(2, "all")
        assert check == [2, 4]
    finally:
        await client.delete(stream)
        await client.aclose()


async def test_three_workers_feeding_frame_sized_values_to_a_slow_block_never_pass_its_bound(
    redis_url: str, redis_prefix: str, workers: Workers
) -> None:
    # Values over 64 KiB (frames) are not written through a script (it would cost Redis two
    # more copies of each): the bound is checked in the MULTI of the XADDs, which takes back
    # what passes it. Three workers of `blob` write 100 kB values to crawl_blob's stream
    # (queue_size 4, 20 ms an item). (Checked, then written, they overshot by the room each
    # saw free.)
    for _ in range(3):
        workers.start("big_backpressure", "blob")
    workers.start("big_backpressure", "crawl_blob")
    graph_hash, _ = graph_signature("big_backpressure", rp.big_backpressure.stages)
    stream = Keys(redis_prefix, "big_backpressure", graph_hash).inbox("crawl_blob")
    async with backlogs(redis_url, stream) as seen, asyncio.timeout(60):
        outputs = await rp.big_backpressure.run(
            range(150), transport=RedisTransport(redis_url, prefix=redis_prefix)
        )
    assert outputs == [x % 256 + 100_000 for x in range(150)]  # every item, once, in order
    books = rp.big_backpressure.statistics()
    assert books["blob"].completed == books["crawl_blob"].completed == 150
    assert max(seen) <= 4, f"crawl_blob's stream held {max(seen)} entries, queue_size is 4"
    assert max(seen) >= 3  # it did fill up: the bound held the workers back


async def test_two_callers_writing_frame_sized_values_to_a_slow_block_never_pass_its_bound(
    redis_url: str, redis_prefix: str, workers: Workers
) -> None:
    # The callers run `blob` themselves and write its 100 kB values straight to crawl_blob's
    # stream (queue_size 4, 20 ms an item): large values go by XADD in a MULTI whose script
    # takes back what passes the bound, offered as the answers free room (refilled by halves),
    # so a caller's view of the room can be old when the other took it.
    workers.start("big_backpressure", "crawl_blob")
    other = af.Pipeline(
        rp.blob.with_options(), rp.crawl_blob.with_options(), name="big_backpressure"
    )
    graph_hash, _ = graph_signature("big_backpressure", rp.big_backpressure.stages)
    assert graph_signature("big_backpressure", other.stages)[0] == graph_hash  # the same streams
    stream = Keys(redis_prefix, "big_backpressure", graph_hash).inbox("crawl_blob")

    def transport() -> RedisTransport:
        return RedisTransport(redis_url, prefix=redis_prefix, local={"blob"})

    async with backlogs(redis_url, stream) as seen, asyncio.timeout(60):
        first, second = await asyncio.gather(
            rp.big_backpressure.run(range(60), transport=transport()),
            other.run(range(100, 160), transport=transport()),
        )
    assert first == [x % 256 + 100_000 for x in range(60)]  # every item, once, in order
    assert second == [x % 256 + 100_000 for x in range(100, 160)]
    assert max(seen) <= 4, f"crawl_blob's stream held {max(seen)} entries, queue_size is 4"
    assert max(seen) >= 3  # it did fill up: the bound, not the callers, held them back


async def test_three_workers_feeding_a_slow_keyed_segment_never_pass_a_partitions_bound(
    redis_url: str, redis_prefix: str, workers: Workers
) -> None:
    # crawl_keyed's input is 16 partitions of 2 entries each (queue_size 8); three workers of
    # `feed` write to them, each commit checking the partitions' bounds and writing in one
    # step (GUARD_SCRIPT over the partitions it writes to).
    for _ in range(3):
        workers.start("keyed_backpressure", "feed")
    workers.start("keyed_backpressure", "crawl_keyed")
    graph_hash, _ = graph_signature("keyed_backpressure", rp.keyed_backpressure.stages)
    inbox = Keys(redis_prefix, "keyed_backpressure", graph_hash).inbox("crawl_keyed")
    streams = partition_streams(inbox, 16)
    async with backlogs(redis_url, *streams) as seen, asyncio.timeout(60):
        outputs = await rp.keyed_backpressure.run(
            range(150), transport=RedisTransport(redis_url, prefix=redis_prefix)
        )
    # every item once, in order, and each key's count kept across the segment's items
    assert outputs == [(x, x // 2 + 1) for x in range(150)]
    assert max(seen) <= 2, f"a partition held {max(seen)} entries, its bound is 2"
    assert max(seen) == 2  # they did fill up: the bound held the workers back


def test_a_block_that_kept_the_default_queue_size_gets_the_deeper_redis_bound() -> None:
    assert stage_capacity(rp.kept) == REDIS_QUEUE_SIZE == 1024
    assert stage_capacity(rp.kept.with_options(name="renamed")) == REDIS_QUEUE_SIZE
    # A queue_size the user chose is kept exactly, the default's value too.
    assert stage_capacity(rp.kept.with_options(queue_size=64)) == 64
    assert stage_capacity(rp.crawl) == 8
    # A leaky edge keeps its queue_size: it says how many of the newest items wait.
    assert stage_capacity(rp.kept.with_options(overflow="drop_oldest")) == 64


async def _fill_unserved(
    redis_url: str, redis_prefix: str, value: Any, total: int
) -> tuple[list[int], int]:
    """Runs ``unsized`` with no worker: the caller fills its stream until the bound holds it;
    returns the items per entry there, and how many items the source gave."""
    graph_hash, _ = graph_signature("unsized", rp.unsized.stages)
    stream = Keys(redis_prefix, "unsized", graph_hash).inbox("kept")
    client = connect(redis_url)
    pulled = 0

    def source() -> Any:
        nonlocal pulled
        for _ in range(total):
            pulled += 1
            yield value

    run = asyncio.create_task(
        rp.unsized.run(source(), transport=RedisTransport(redis_url, prefix=redis_prefix))
    )
    codec = MsgpackCodec()
    try:
        sizes: list[int] = []
        before: list[int] = []
        async with asyncio.timeout(60):
            while not sizes or sizes != before:  # until it stops growing
                before = sizes
                await asyncio.sleep(0.5)
                entries = await client.xrange(stream)
                sizes = [len(parse_entry(f, codec).metas) for _, f in entries]
        assert not run.done()
        return sizes, pulled
    finally:
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)
        await client.aclose()


async def test_a_default_redis_edge_holds_1024_small_items_and_backpressure_reaches_the_source(
    redis_url: str, redis_prefix: str
) -> None:
    # No worker: the caller writes bursts of 100 items (burst_size(1024)), 10 entries, and
    # then waits; the source is not read beyond what the caller holds (its window and queue).
    sizes, pulled = await _fill_unserved(redis_url, redis_prefix, 7, 20_000)
    assert sizes == [100] * 10
    assert pulled < 2_000


async def test_a_default_redis_edge_keeps_large_items_to_its_byte_budget(
    redis_url: str, redis_prefix: str
) -> None:
    # 300 kB items: 1024 of them would be 300 MB in Redis; the default edge keeps 64 MiB,
    # 223 items, in entries of up to 3 (a burst stops at 1 MiB): 74 entries.
    value = b"x" * 300_000
    sizes, pulled = await _fill_unserved(redis_url, redis_prefix, value, 5_000)
    assert len(sizes) == REDIS_QUEUE_BYTES // len(value) // 3 == 74
    assert max(sizes) == 3
    assert sum(sizes) <= REDIS_QUEUE_BYTES // len(value)
    assert pulled < 1_000
