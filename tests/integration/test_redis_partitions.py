"""Keyed blocks in workers: per-key order and state across worker processes (partitions with
leases, snapshots in Redis), with real redis-server and real worker processes."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis_pipelines as rp
from conftest import Workers, pipeline_keys, serving, sigkill_a_holder, while_alive

import aioflow as af
from aioflow.state import decode
from aioflow.transport.partitions import partition_of, partition_streams
from aioflow.transport.redis import NoWorkerError, RedisTransport, connect

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KEYS = [f"cam{i}" for i in range(8)]
FAST = ("--lease-ttl", "1", "--snapshot-period", "0.2", "--log-level", "INFO")


def expected(n: int) -> list[tuple[str, int, int]]:
    """Item x is the (x // 8)-th of key cam{x % 8}: the running count of its key is x // 8 + 1."""
    return [(f"cam{x % 8}", x // 8, x // 8 + 1) for x in range(n)]


async def test_the_keyed_owner_sigkilled_mid_stream_hands_its_state_and_order_to_another(
    redis_url: str, redis_prefix: str, workers: Workers
) -> None:
    env = {"AIOFLOW_TEST_DELAY": "0.005"}
    procs = [workers.start("keyed", "count", env=env, extra=FAST) for _ in range(3)]
    keys = pipeline_keys(redis_prefix, "keyed")
    streams = partition_streams(keys.inbox("count"), 16)
    client = connect(redis_url)
    killed: list[subprocess.Popen[str]] = []  # SIGKILLed: no drain, no release; leases expire

    async def snapshot_counts() -> dict[str, int]:
        counts: dict[str, int] = {}
        for part in range(16):
            raw = await client.hget(f"{keys.base}:snap:count:{part}", "state")
            if raw:
                for key, state in decode(raw)["blocks"]["count"]:
                    assert partition_of(key, 16) == part
                    counts[key] = state["n"]
        return counts

    answered = asyncio.Event()
    in_redis: dict[str, int] = {}

    async def source() -> AsyncIterator[tuple[str, int]]:
        for x in range(1600):
            # Two of the three owners die holding items, the second after the first's
            # partitions were taken over; one is left.
            if (x >= 200 and not killed) or (x >= 900 and len(killed) == 1):
                await sigkill_a_holder(client, procs, streams, killed)
            yield f"cam{x % 8}", x // 8
        # Before the stream ends (its end evicts the keys), the state lives on in Redis:
        # within a snapshot period of the last item, every partition's snapshot counts every
        # item of its keys.
        await answered.wait()
        for _ in range(200):
            in_redis.update(await snapshot_counts())
            if in_redis == dict.fromkeys(KEYS, 200):
                break
            await asyncio.sleep(0.05)

    # The caller routes each item to its key's partition (count heads the only segment).
    transport = RedisTransport(redis_url, prefix=redis_prefix)
    outputs = []
    try:
        async for out in rp.keyed.stream(source(), transport=transport):
            outputs.append(out)
            if len(outputs) == 1600:
                answered.set()
        assert len(killed) == 2
        assert [p.wait() for p in killed] == [-signal.SIGKILL] * 2
        # Every output once, in input order; each key's running count goes 1, 2, 3, ... with
        # neither a reset (state lost) nor a jump (an item counted twice) nor a swap (order).
        assert outputs == expected(1600)
        survivor = next(p for p in procs if p.poll() is None)
        log = workers.output(survivor)
        assert "took over partition" in log
        assert "keys restored" in log
        assert in_redis == dict.fromkeys(KEYS, 200)
        # The run's end evicted its keys (as a local run's end does): the next snapshots
        # hold none of them.
        for _ in range(200):
            if not await snapshot_counts():
                break
            await asyncio.sleep(0.05)
        assert await snapshot_counts() == {}
    finally:
        await client.aclose()


async def test_a_worker_stalled_past_its_leases_takes_its_partitions_back_counting_each_item_once(
    redis_url: str, redis_prefix: str, workers: Workers
) -> None:
    # The only worker's loop stops for 2.5 s (leases of 1 s) while it holds items of several
    # partitions and its snapshot loop may be waiting on one: every lease expires under it.
    # It notices, lets its items finish, and takes its partitions back from their snapshots;
    # the entries after each snapshot's mark are processed again on the restored state, in
    # both blocks, never on top of the state it still held.
    env = {
        "AIOFLOW_TEST_DELAY": "0.002",
        "AIOFLOW_TEST_STALL_AT": "20",
        "AIOFLOW_TEST_STALL": "2.5",
    }
    proc = workers.start("twice", "count3,again", env=env, extra=FAST)

    async def source() -> AsyncIterator[tuple[str, int]]:
        for x in range(800):
            yield f"cam{x % 8}", x // 8

    transport = RedisTransport(redis_url, prefix=redis_prefix)
    outputs = [out async for out in rp.twice.stream(source(), transport=transport)]
    assert outputs == [(k, s, n, n) for k, s, n in expected(800)]
    log = workers.output(proc)
    # Noticed either by the lease loop's renewal or by a commit's fence, whichever ran first
    # after the stall: both say so in the same words.
    assert "lost the lease" in log
    assert "took over partition" in log


# Five worker processes start in it, two of them mid-stream, each in 5-9 s under a load of 15-20
# (the test took 40 s then): the guard against a hang is wider than the suite's 60 s.
@pytest.mark.timeout(120)
async def test_two_workers_never_process_one_partition_at_once_and_share_the_partitions(
    redis_url: str, redis_prefix: str, workers: Workers, tmp_path: Path
) -> None:
    trace = tmp_path / "trace.txt"
    env = {"AIOFLOW_TEST_DELAY": "0.003", "AIOFLOW_TEST_TRACE": str(trace)}
    # Leases that outlast a loaded machine's stalls (the renewals, every ttl / 3, came up to
    # 0.83 s apart under a load of 16: a lease of 1 s lapsed under 15-20, and an owner that
    # lost its lease while its items ran overlapped with the next). Handing partitions over
    # to a worker that joins does not wait for a lease to expire: it is released.
    extra = ("--lease-ttl", "5", "--snapshot-period", "0.1")
    workers.start("tagged", "tag")  # upstream worker: routes its outputs to count2's partitions
    first = workers.start("tagged", "count2", env=env, extra=extra)
    keys = pipeline_keys(redis_prefix, "tagged")
    used = {partition_of(key, 16) for key in KEYS}
    client = connect(redis_url)
    later: list[subprocess.Popen[str]] = []

    async def owns_used_partition(proc: subprocess.Popen[str]) -> bool:
        for part in used:
            owner = await client.get(f"{keys.base}:lease:count2:{part}")
            if owner is not None and f"-{proc.pid}-" in owner.decode():
                return True
        return False

    async def source() -> AsyncIterator[int]:
        for x in range(2400):
            if x in (600, 1200):
                # A worker joins mid-stream; the busy one hands it partitions (with their state).
                proc = workers.start("tagged", "count2", env=env, extra=extra)
                later.append(proc)
                while not await owns_used_partition(proc):
                    assert proc.poll() is None, workers.output(proc)
                    await asyncio.sleep(0.02)
            yield x

    transport = RedisTransport(redis_url, prefix=redis_prefix)
    try:
        outputs = [out async for out in rp.tagged.stream(source(), transport=transport)]
    finally:
        await client.aclose()
    assert outputs == expected(2400)
    # (pid, partition) intervals: within a partition, no two processes' intervals overlap.
    by_part: dict[int, list[tuple[float, float, int]]] = {}
    for line in trace.read_text().splitlines():
        pid, key, _seq, start, end = line.split()
        by_part.setdefault(partition_of(key, 16), []).append((float(start), float(end), int(pid)))
    for part, spans in by_part.items():
        latest: dict[int, float] = {}  # pid -> the end of its last item so far
        for start, end, pid in sorted(spans):
            for other, other_end in latest.items():
                if other != pid:
                    assert start >= other_end, f"partition {part}: {pid} and {other} at once"
            latest[pid] = max(end, latest.get(pid, end))
    # The partitions were shared: the workers that joined processed items too, and some
    # partition moved from one process to another.
    pids = {pid for spans in by_part.values() for _, _, pid in spans}
    assert {p.pid for p in later} <= pids
    assert any(len({pid for _, _, pid in spans}) > 1 for spans in by_part.values())
    assert first.poll() is None


async def test_a_keyed_worker_stopped_by_sigterm_snapshots_and_releases_its_partitions_at_once(
    redis_url: str, redis_prefix: str, workers: Workers
) -> None:
    env = {"AIOFLOW_TEST_DELAY": "0.005"}
    # Leases that would outlast the test: the next worker can only start at once if the
    # leaving one released them.
    extra = ("--lease-ttl", "300", "--log-level", "INFO")
    leaving = workers.start("keyed", "count", env=env, extra=extra)
    keys = pipeline_keys(redis_prefix, "keyed")
    client = connect(redis_url)
    transport = RedisTransport(redis_url, prefix=redis_prefix)
    items = [(f"cam{x % 8}", x // 8) for x in range(800)]
    outputs = []
    try:
        async for out in rp.keyed.stream(items, transport=transport):
            outputs.append(out)
            if len(outputs) == 200:
                leaving.send_signal(signal.SIGTERM)
                await asyncio.to_thread(leaving.wait, timeout=10)
                assert leaving.returncode == 0, workers.output(leaving)
                leases = [await client.get(f"{keys.base}:lease:count:{i}") for i in range(16)]
                assert leases == [None] * 16  # released, not left to expire
                nxt = workers.start("keyed", "count", env=env, extra=extra)
        assert outputs == expected(800)
        assert "keys restored" in workers.output(nxt)
    finally:
        await client.aclose()


async def test_a_keyed_block_without_state_survives_its_owner_sigkilled(
    redis_url: str, redis_prefix: str, workers: Workers
) -> None:
    env = {"AIOFLOW_TEST_DELAY": "0.005"}
    procs = [workers.start("lanes", "lane", env=env, extra=FAST) for _ in range(2)]
    streams = partition_streams(pipeline_keys(redis_prefix, "lanes").inbox("lane"), 16)
    client = connect(redis_url)
    killed: list[subprocess.Popen[str]] = []

    async def source() -> AsyncIterator[tuple[str, int]]:
        for x in range(1200):
            if x >= 300 and not killed:
                # (the streams were trimmed while it ran: nothing is lost)
                await sigkill_a_holder(client, procs, streams, killed)
            yield f"cam{x % 8}", x // 8

    transport = RedisTransport(redis_url, prefix=redis_prefix)
    try:
        outputs = [out async for out in rp.lanes.stream(source(), transport=transport)]
    finally:
        await client.aclose()
    assert outputs == [(f"cam{x % 8}", x // 8) for x in range(1200)]
    assert killed, "no worker held an item while the source ran"
    assert killed[0].wait() == -signal.SIGKILL
    survivor = next(p for p in procs if p is not killed[0])
    assert "took over partition" in workers.output(survivor)


async def test_an_item_that_kills_every_owner_of_its_partition_is_dead_lettered(
    redis_url: str, redis_prefix: str, workers: Workers
) -> None:
    deaths = 0
    extra = ("--max-deliveries", "2", "--lease-ttl", "0.5")

    async def keep_one_worker_alive() -> None:
        nonlocal deaths
        proc = workers.start("poisoned_keyed", "crash_keyed", extra=extra)
        while True:
            if proc.poll() is not None:
                deaths += 1
                proc = workers.start("poisoned_keyed", "crash_keyed", extra=extra)
            await asyncio.sleep(0.05)

    keeper = asyncio.create_task(keep_one_worker_alive())
    transport = RedisTransport(redis_url, prefix=redis_prefix)
    try:
        async with rp.poisoned_keyed.open(transport=transport) as running:
            assert await running.submit(1) == 1
            with pytest.raises(af.BlockError, match="delivered 3 times") as info:
                await running.submit(3)
            assert info.value.block == "crash_keyed"
            assert await running.submit(5) == 5  # the same key, after it: the service goes on
    finally:
        keeper.cancel()
        await asyncio.gather(keeper, return_exceptions=True)
    assert deaths == 2  # delivered, died; taken over, died; then dead-lettered, not run


async def test_a_keyed_block_inside_a_segment_keeps_order_and_state_across_its_workers(
    redis_url: str, redis_prefix: str, workers: Workers, tmp_path: Path
) -> None:
    # Two workers serve tag,count2 together: each splits its segment at the keyed count2, whose
    # input becomes partition streams that either worker's tag writes, in input order, and
    # whose owners are spread over the two.
    trace = tmp_path / "trace.txt"
    env = {"AIOFLOW_TEST_DELAY": "0.003", "AIOFLOW_TEST_TRACE": str(trace)}
    procs = [
        workers.start("tagged", "tag,count2", env=env, extra=("--lease-ttl", "1")) for _ in range(2)
    ]
    items = list(range(1600))
    local = await rp.tagged.run(items)
    assert local == expected(1600)
    # Both own partitions before the run: under load the second one started so late that the
    # first had taken all sixteen and processed every item alone.
    base = pipeline_keys(redis_prefix, "tagged").base
    client = connect(redis_url)
    try:
        while True:
            owners = [await client.get(f"{base}:lease:count2:{i}") for i in range(16)]
            if all(any(f"-{p.pid}-" in o.decode() for o in owners if o) for p in procs):
                break
            assert all(p.poll() is None for p in procs), [workers.output(p) for p in procs]
            await asyncio.sleep(0.05)
    finally:
        await client.aclose()
    transport = RedisTransport(redis_url, prefix=redis_prefix)
    outputs = await rp.tagged.run(items, transport=transport)
    # Each key's running count goes 1, 2, 3, ... in input order: what the local run gives.
    assert outputs == local
    pids = {int(line.split()[0]) for line in trace.read_text().splitlines()}
    assert pids == {p.pid for p in procs}  # both workers' count2 owned partitions
    assert all(p.poll() is None for p in procs)


async def test_an_owner_paused_past_its_lease_never_counts_an_item_twice_once_it_resumes(
    redis_url: str, redis_prefix: str, workers: Workers
) -> None:
    # Two workers serve tag,count2 (leases of 1 s). Three times mid-stream, the owner of cam0's
    # partition is frozen (SIGSTOP) holding items, until the other worker has taken the
    # partition over from its snapshot, then thawed (SIGCONT): it resumes believing it still
    # owns the partition for a moment, with items in flight and maybe a snapshot under way.
    # Whatever it does then must not reach the state the new owner keeps: each key's count
    # goes 1, 2, 3, ... with no jump, and every item is answered. (With its commits fenced
    # but not its reads, a read it had checked against the lease's time before it stopped was
    # sent after the takeover: what it delivered was never answered, and the run hung.)
    env = {"AIOFLOW_TEST_DELAY": "0.003"}
    procs = [workers.start("tagged", "tag,count2", env=env, extra=FAST) for _ in range(2)]
    base = pipeline_keys(redis_prefix, "tagged").base
    lease = f"{base}:lease:count2:{partition_of('cam0', 16)}"
    client = connect(redis_url)
    paused: list[int] = []

    def holder(value: bytes | None) -> subprocess.Popen[str] | None:
        return next((p for p in procs if value and f"-{p.pid}-" in value.decode()), None)

    async def pause_the_owner() -> None:
        owner = holder(await client.get(lease))
        if owner is None:
            return
        owner.send_signal(signal.SIGSTOP)
        try:
            while holder(await client.get(lease)) in (owner, None):
                assert all(p.poll() is None for p in procs), [workers.output(p) for p in procs]
                await asyncio.sleep(0.02)
        finally:
            owner.send_signal(signal.SIGCONT)
        paused.append(owner.pid)

    async def source() -> AsyncIterator[int]:
        for x in range(1600):
            if x in (400, 800, 1200):
                await pause_the_owner()
            yield x

    transport = RedisTransport(redis_url, prefix=redis_prefix)
    try:
        outputs = [out async for out in rp.tagged.stream(source(), transport=transport)]
    finally:
        await client.aclose()
    assert paused, "cam0's partition had no owner when the source paused it"
    assert outputs == expected(1600)
    assert all(p.poll() is None for p in procs)


async def test_a_keyed_block_inside_a_segment_survives_an_owner_sigkilled(
    redis_url: str, redis_prefix: str, workers: Workers
) -> None:
    env = {"AIOFLOW_TEST_DELAY": "0.005"}
    procs = [
        workers.start("tagged", "tag,count2", claim_idle=1.0, env=env, extra=FAST) for _ in range(2)
    ]
    streams = partition_streams(pipeline_keys(redis_prefix, "tagged").inbox("count2"), 16)
    client = connect(redis_url)
    killed: list[subprocess.Popen[str]] = []

    async def source() -> AsyncIterator[int]:
        for x in range(1600):
            if x >= 400 and not killed:
                # (both parts die: tag's entries and count2's partitions)
                await sigkill_a_holder(client, procs, streams, killed)
            yield x

    transport = RedisTransport(redis_url, prefix=redis_prefix)
    try:
        outputs = [out async for out in rp.tagged.stream(source(), transport=transport)]
    finally:
        await client.aclose()
    assert killed, "no worker held an item of count2 while the source ran"
    assert killed[0].wait() == -signal.SIGKILL
    # Every output once, in input order, each key's count continuous (no reset, no double).
    assert outputs == expected(1600)
    survivor = next(p for p in procs if p is not killed[0])
    assert "took over partition" in workers.output(survivor)


async def test_the_caller_finds_the_workers_of_a_keyed_block_inside_a_segment(
    redis_url: str, redis_prefix: str, workers: Workers
) -> None:
    # count2 takes 1.5 s per item, so the caller hears nothing for longer than a second and
    # looks for live workers: the one serving tag,count2 counts for count2's partitions.
    env = {"AIOFLOW_TEST_DELAY": "1.5"}
    extra = ("--stats-period", "0.2", "--stats-ttl", "1", "--log-level", "INFO")
    proc = workers.start("tagged", "tag,count2", env=env, extra=extra)
    await serving(workers, proc)  # (a worker still starting is no live worker yet)
    transport = RedisTransport(redis_url, prefix=redis_prefix, no_worker_timeout=1.0)
    assert await rp.tagged.run(range(8), transport=transport) == expected(8)

    async def kill_soon() -> None:
        await asyncio.sleep(0.7)  # tag has written the items to count2's partitions
        proc.kill()

    killer = asyncio.create_task(kill_soon())
    with pytest.raises(ExceptionGroup) as info:
        await rp.tagged.run(range(8, 16), transport=transport)
    await killer
    (err,) = info.value.exceptions
    assert isinstance(err, NoWorkerError)
    assert "no live worker serves block 'count2'" in str(err)


async def test_a_block_keyed_like_the_head_of_its_segment_has_its_state_carried_with_it(
    redis_url: str, redis_prefix: str, workers: Workers
) -> None:
    # again follows count3 in one segment, keyed by the same function: no split (count3's
    # partitions bring each key's items to one worker), and its state is in the snapshots.
    env = {"AIOFLOW_TEST_DELAY": "0.005"}
    procs = [workers.start("twice", "count3,again", env=env, extra=FAST) for _ in range(2)]
    keys = pipeline_keys(redis_prefix, "twice")
    streams = partition_streams(keys.inbox("count3"), 16)
    client = connect(redis_url)
    killed: list[subprocess.Popen[str]] = []

    found: set[str] = set()

    async def snapshotted() -> set[str]:
        names: set[str] = set()
        for part in range(16):
            raw = await client.hget(f"{keys.base}:snap:count3:{part}", "state")
            if raw:
                names |= {name for name, pairs in decode(raw)["blocks"].items() if pairs}
        return names

    async def source() -> AsyncIterator[tuple[str, int]]:
        for x in range(1200):
            if x >= 300 and not killed:
                await sigkill_a_holder(client, procs, streams, killed)
            if x == 1100:
                # Before the end of the run (which evicts the keys and empties the
                # snapshots): both blocks' states are in them.
                for _ in range(100):
                    found.update(await snapshotted())
                    if found == {"count3", "again"}:
                        break
                    await asyncio.sleep(0.1)
            yield f"cam{x % 8}", x // 8

    transport = RedisTransport(redis_url, prefix=redis_prefix)
    try:
        outputs = [out async for out in rp.twice.stream(source(), transport=transport)]
        assert killed, "no worker held an item while the source ran"
        assert outputs == [(k, s, n, n) for k, s, n in expected(1200)]
        survivor = next(p for p in procs if p is not killed[0])
        log = workers.output(survivor)
        assert "took over partition" in log
        assert "served as" not in log  # not split
        assert found == {"count3", "again"}
        # The run's end evicted every key, in both blocks (again's from the control stream, not
        # from an entry of the partitions): within a snapshot period, no snapshot holds one.
        for _ in range(200):
            if not await snapshotted():
                break
            await asyncio.sleep(0.05)
        assert not await snapshotted()
    finally:
        await client.aclose()


class CuttingProxy:
    """A TCP proxy on loopback between a caller and redis-server that, once armed, lets the
    next client write of an XADD to ``marker`` through to the server, then closes both sides
    without passing the server's reply back: a connection lost with the reply of a command
    the server did carry out (redis-py sends it again on a new connection)."""

    def __init__(self, upstream: str, marker: bytes) -> None:
        parts = urlsplit(upstream)
        self.upstream = parts
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 6379
        self.marker = marker
        self.armed = False
        self.cuts = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(self.host, self.port)
        mute = asyncio.Event()  # set: the server's bytes are not passed back any more

        async def down() -> None:
            while data := await up_reader.read(65536):
                if mute.is_set():
                    return
                writer.write(data)
                await writer.drain()

        task = asyncio.create_task(down())
        self._tasks.add(task)
        try:
            while data := await reader.read(65536):
                cut = self.armed and b"XADD" in data and self.marker in data
                if cut:
                    self.armed = False
                    mute.set()
                up_writer.write(data)
                await up_writer.drain()
                if cut:
                    await asyncio.sleep(0.3)  # the server carries it out and answers
                    self.cuts += 1
                    return
        except ConnectionError:
            pass
        finally:
            task.cancel()
            for w in (writer, up_writer):
                w.close()
            await asyncio.gather(task, return_exceptions=True)
            self._tasks.discard(task)


async def test_a_write_to_the_partitions_sent_twice_is_counted_once(
    redis_url: str, redis_prefix: str, workers: Workers
) -> None:
    # The caller's connection is lost after the server carried out its first write to the
    # partitions (their XADDs) and before the reply came back: redis-py sends the write again
    # on a new connection, and the items it holds are in their partition streams twice. The
    # owner took each copy as an item: a key's count went 1..k, then k+1..2k again for the
    # copies, and the items after them counted their earlier items twice (the running count
    # ('cam4', 12, 25) where 13 was due, once under a storm of killed connections). Now an
    # owner drops an item whose run and path it took already, and a takeover too (the items
    # taken are in the snapshot with the state).
    proc = workers.start("keyed", "count", extra=FAST)
    await serving(workers, proc)
    proxy = CuttingProxy(redis_url, b":in:count:p")
    server = await asyncio.start_server(proxy.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    at = proxy.upstream
    auth = at.netloc.rpartition("@")[0]
    url = urlunsplit(
        at._replace(netloc=f"{auth}@127.0.0.1:{port}" if auth else f"127.0.0.1:{port}")
    )
    try:
        transport = RedisTransport(url, prefix=redis_prefix)
        proxy.armed = True
        outputs = await rp.keyed.run(
            [(f"cam{x % 8}", x // 8) for x in range(200)], transport=transport
        )
    finally:
        server.close()
        await server.wait_closed()
    assert proxy.cuts == 1
    assert outputs == expected(200)
    assert proc.poll() is None, workers.output(proc)


async def test_a_key_that_refuses_to_be_hashed_or_shown_fails_only_its_item_in_a_worker(
    redis_url: str, redis_prefix: str, workers: Workers
) -> None:
    """A keyed block's key that can be hashed twice and then not, never compared, neither
    written nor shown (``redis_pipelines.Hostile``). The worker looked such keys up outside
    any guard: to note which run touched the key (its third hash raised), and to snapshot
    the partition's states (a dict of the keys; the key's partition by its ``repr``); it died
    with a traceback. Now each item is answered as in a local run (the first hostile key is
    served; the second fails as a BlockError naming the block, for comparing it with the
    first raises), and the worker goes on: snapshots, the run's end, the next items."""
    items = [1, -1, 2, -2, 3]

    async def answers(running: af.RunningPipeline) -> list[object]:
        found: list[object] = []
        for x in items:  # one at a time: the key of -1 is held when -2 comes
            try:
                found.append(await running.submit(x))
            except af.BlockError as err:
                # (a worker's error arrives as a RemoteError naming the exception's type)
                cause = err.__cause__
                found.append((err.block, getattr(cause, "type_name", type(cause).__name__)))
        return found

    async with rp.hostile.open() as running:
        local = await answers(running)
    assert local == [(1, 1), (-1, 1), (2, 1), ("tally", "RuntimeError"), (3, 2)]

    extra = ("--snapshot-period", "0.1", "--log-level", "INFO")
    proc = workers.start("hostile", "tally", extra=extra)
    transport = RedisTransport(redis_url, prefix=redis_prefix)
    async with rp.hostile.open(transport=transport) as running:
        assert await while_alive(workers, proc, answers(running)) == local
        # The partition holding the hostile key is snapshotted (every 0.1 s), or tried: its
        # state cannot be written, which the worker says once.
        while "cannot be written to a snapshot" not in workers.output(proc):
            assert proc.poll() is None, workers.output(proc)
            await asyncio.sleep(0.02)
        assert await running.submit(5) == (5, 3)
    # The run's end evicted its keys (but the hostile one, which cannot be found again).
    assert await rp.hostile.run([7], transport=transport) == [(7, 1)]
    assert proc.poll() is None
    assert "Traceback" not in workers.output(proc)
