"""The distributed mode as an outside tester breaks it (real redis-server, real worker
processes): hand-written hostile entries, services opened and closed at once, workers killed
and restarted while items flow, connections dropped by the server, a caller killed."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import msgpack
import pytest
import redis
import redis.asyncio as aioredis
import redis_pipelines as rp
from conftest import HERE, ROOT, Workers, block_errors, books_balance, pipeline_keys, serving

import aioflow as af
from aioflow.transport.redis import REPLY_TTL, RedisTransport, ReplyStreamLost

pytestmark = pytest.mark.integration


async def test_hand_written_entries_become_dead_letters_naming_block_and_reason(
    redis_url: str, redis_prefix: str, workers: Workers
) -> None:
    transport = RedisTransport(redis_url, prefix=redis_prefix)
    async with rp.chain.open(transport=transport):  # the graph and the streams, as a caller
        pass
    keys = pipeline_keys(redis_prefix, "chain")
    inbox = keys.inbox("double")
    meta = {"r": "x", "p": [0], "to": keys.reply("x"), "end": "square", "c": "msgpack"}
    three = msgpack.packb(3)
    # (hostile entry, what its dead letter's reason says)
    hostile: list[tuple[dict[bytes, bytes], str]] = [
        ({b"x": b"y"}, "no 'm' field"),
        ({b"m": msgpack.packb(meta), b"v": msgpack.packb([1, 2, 3])[:2]}, "does not decode"),
        ({b"m": msgpack.packb({**meta, "c": "zstd"}), b"v": three}, "'zstd' codec"),
        ({b"m": msgpack.packb({**meta, "p": "x"}), b"v": three}, "bad run, path"),
        ({b"m": msgpack.packb({**meta, "r": 5}), b"v": three}, "bad run, path"),
        ({b"m": msgpack.packb(meta), b"v": b"\x00" * 8_000_000}, "does not decode"),
        ({b"m": b"\x91" * 100_000 + b"\x00", b"v": three}, "'m' is not msgpack"),
        ({b"m": msgpack.packb({**meta, "t": "yesterday"}), b"v": three}, "birth time is a str"),
        # A reply stream that is not the run's: a string key (XADD there failed the worker's
        # whole commit, and the worker exited), or a stream of the pipeline's own.
        ({b"m": msgpack.packb({**meta, "to": keys.graph}), b"v": three}, "reply stream"),
        ({b"m": msgpack.packb({**meta, "to": inbox}), b"v": three}, "reply stream"),
        # A burst of 3 paths carrying 2 values: the third alone is dead.
        (
            {b"m": msgpack.packb({**meta, "b": [[0], [1], [2]]}), b"v": three, b"v1": three},
            "no 'v2' field",
        ),
    ]
    client = aioredis.Redis.from_url(redis_url)
    try:
        for fields, _ in hostile:
            await client.xadd(inbox, fields)
        proc = workers.start("chain", "double,inc,square")
        deadline = time.monotonic() + 30
        while await client.xlen(keys.dead) < len(hostile) and time.monotonic() < deadline:
            assert proc.poll() is None, workers.output(proc)
            await asyncio.sleep(0.05)
        dead = await client.xrange(keys.dead)
        # Nothing is left in the stream or pending: every entry was acknowledged.
        assert await client.xlen(inbox) == 0
        assert (await client.xpending(inbox, "aioflow"))["pending"] == 0
    finally:
        await client.aclose()
    assert len(dead) == len(hostile), [f[b"reason"] for _, f in dead]
    by_entry = {fields[b"entry"]: fields for _, fields in dead}
    assert len(by_entry) == len(hostile)
    reasons = sorted(fields[b"reason"].decode() for fields in by_entry.values())
    for _, expected in hostile:
        assert any(expected in reason for reason in reasons), (expected, reasons)
    assert {fields[b"block"] for fields in by_entry.values()} == {b"double"}
    assert {fields[b"stream"] for fields in by_entry.values()} == {inbox.encode()}
    # The worker survived them all and still serves.
    assert proc.poll() is None, workers.output(proc)
    assert await rp.chain.run(range(5), transport=transport) == [(2 * x + 1) ** 2 for x in range(5)]


async def test_a_service_opened_and_closed_at_once_never_raises(
    redis_url: str, redis_prefix: str
) -> None:
    # close() wakes the receiver with a write; the receiver could see the flags first, end
    # the session and close the client under that write: a bare CancelledError came out of
    # `async with open()` in about half of 30 tries (no worker is needed: nothing is sent).
    transport = RedisTransport(redis_url, prefix=redis_prefix)
    for _ in range(50):
        async with rp.chain.open(transport=transport) as running:
            assert running.statistics() is not None


async def leftovers(url: str, prefix: str) -> dict[str, list[str]]:
    """The keys of ``prefix`` by kind (``in``, ``reply``, ``stats``...)."""
    client = aioredis.Redis.from_url(url)
    try:
        found: dict[str, list[str]] = {}
        async for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            name = key.decode()
            parts = name.split(":")
            kind = parts[3] if len(parts) > 3 else parts[-1]
            found.setdefault(kind, []).append(name)
        return found
    finally:
        await client.aclose()


async def test_workers_killed_and_stopped_at_random_while_items_flow_lose_and_double_nothing(
    redis_url: str, redis_prefix: str, workers: Workers
) -> None:
    # Seeded churn: two workers of one segment serve while, every 0.2-0.6 s, one of them at
    # random is SIGKILLed (holding items or not: mid-item, mid-burst, mid-commit) or
    # SIGTERMed, and a replacement starts first so that the segment is never left unserved.
    rng = random.Random(20261206)
    env = {"AIOFLOW_TEST_DELAY": "0.004"}

    def start() -> subprocess.Popen[str]:
        info = ("--log-level", "INFO")
        return workers.start("slowpipe", "first,slow", claim_idle=0.5, env=env, extra=info)

    live = [start(), start()]
    stopped: list[subprocess.Popen[str]] = []
    killed: list[subprocess.Popen[str]] = []

    async def churn() -> None:
        for _ in range(8):
            await asyncio.sleep(rng.uniform(0.2, 0.6))
            victim = live.pop(rng.randrange(len(live)))
            live.append(start())
            if rng.random() < 0.6:
                victim.kill()  # (possibly still starting: it held nothing yet)
                killed.append(victim)
            else:
                # (A worker signalled while Python still imports dies of the signal: SIGTERM
                # goes to one that serves, which must stop with status 0.)
                await serving(workers, victim)
                victim.send_signal(signal.SIGTERM)
                stopped.append(victim)

    transport = RedisTransport(redis_url, prefix=redis_prefix)
    churner = asyncio.create_task(churn())
    try:
        outputs = [out async for out in rp.slowpipe.stream(range(2000), transport=transport)]
        await churner
    finally:
        churner.cancel()
        await asyncio.gather(churner, return_exceptions=True)
    assert outputs == [2 * x + 1 for x in range(2000)]  # none lost, none doubled, in order
    assert killed
    assert stopped
    stats = rp.slowpipe.statistics()
    assert books_balance(stats), stats
    for proc in stopped:  # SIGTERM: out within grace (3 s) and a margin, status 0
        await asyncio.to_thread(proc.wait, timeout=10)
        assert proc.returncode == 0, workers.output(proc)
    for proc in killed:
        await asyncio.to_thread(proc.wait, timeout=10)
        assert proc.returncode == -signal.SIGKILL
    keys = pipeline_keys(redis_prefix, "slowpipe")
    client = aioredis.Redis.from_url(redis_url)
    try:
        # The killed workers' consumers (their entries taken over) are deleted by the live
        # ones within 4 x claim_idle, and the live ones delete their own when they stop: a
        # group does not list every worker ever started.
        async def consumers() -> list[str]:
            found = await client.xinfo_consumers(keys.inbox("first"), "aioflow")
            return [c["name"].decode() for c in found]

        pids = [f"-{proc.pid}-" for proc in live]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if all(any(pid in name for pid in pids) for name in await consumers()):
                break
            await asyncio.sleep(0.1)
        assert all(any(pid in name for pid in pids) for name in await consumers())
        for proc in live:
            await serving(workers, proc)
            proc.send_signal(signal.SIGTERM)
        for proc in live:
            await asyncio.to_thread(proc.wait, timeout=10)
            assert proc.returncode == 0, workers.output(proc)
        assert await consumers() == []
        # Nothing waits or is pending in the segment's stream; the run's reply stream is gone.
        assert await client.xlen(keys.inbox("first")) == 0
        assert (await client.xpending(keys.inbox("first"), "aioflow"))["pending"] == 0
        # Left: the stream, the graph, and the books of the workers, which expire.
        left = await leftovers(redis_url, redis_prefix)
        assert set(left) == {"in", "graph", "stats"}, left
        for key in left["stats"]:
            assert await client.ttl(key) > 0
    finally:
        await client.aclose()


async def test_connections_dropped_by_the_server_mid_run_are_reopened_nothing_lost(
    redis_url: str, redis_prefix: str, workers: Workers
) -> None:
    # CLIENT KILL drops every connection of the callers and the workers (a proxy restarting,
    # a network blip) 10 times at seeded moments, mid-read, mid-write, mid-commit, while two
    # runs go on: one through a plain segment (a read reply lost with its connection leaves
    # entries delivered to a live worker that never saw them: taken over after claim_idle),
    # one through a keyed block (leases renewed, snapshots written, per-key state and order).
    rng = random.Random(7)
    env = {"AIOFLOW_TEST_DELAY": "0.003"}
    info = ("--log-level", "INFO")
    keyed = ("--lease-ttl", "1", "--snapshot-period", "0.2", *info)
    procs = [
        *(
            workers.start("slowpipe", "first,slow", claim_idle=1.0, env=env, extra=info)
            for _ in range(2)
        ),
        *(workers.start("keyed", "count", claim_idle=1.0, env=env, extra=keyed) for _ in range(2)),
    ]
    for proc in procs:
        await serving(workers, proc)
    admin = aioredis.Redis.from_url(redis_url)
    drops = 0

    async def drop_connections() -> None:
        nonlocal drops
        # (Blips: the storm is the next test's.)
        for _ in range(10):
            await asyncio.sleep(rng.uniform(0.15, 0.4))
            drops += await admin.execute_command(
                "CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"
            )

    transport = RedisTransport(redis_url, prefix=redis_prefix)
    dropper = asyncio.create_task(drop_connections())
    cams = [(f"cam{x % 8}", x // 8) for x in range(1200)]
    try:
        plain, counted = await asyncio.gather(
            rp.slowpipe.run(range(2000), transport=transport),
            rp.keyed.run(cams, transport=transport),
        )
        await dropper
    finally:
        dropper.cancel()
        await asyncio.gather(dropper, return_exceptions=True)
        await admin.aclose()
    assert drops >= 10 * 4  # (every time, at least one connection of each worker)
    assert plain == [2 * x + 1 for x in range(2000)]
    # Each key's running count goes 1, 2, 3, ...: no state lost, no item counted twice.
    assert counted == [(f"cam{x % 8}", x // 8, x // 8 + 1) for x in range(1200)]
    assert books_balance(rp.slowpipe.statistics())
    assert books_balance(rp.keyed.statistics())
    for proc in procs:
        assert proc.poll() is None, workers.output(proc)


async def test_a_storm_of_killed_connections_loses_nothing_and_no_worker_exits(
    redis_url: str, redis_prefix: str, workers: Workers
) -> None:
    # A thread of its own (a plain redis-py client, never killed: SKIPME) kills every other
    # connection (callers' and workers') every 20-200 ms while two runs go on, one through
    # a plain segment and one through a keyed block. A connection redis-py takes from its
    # pool and finds closed was reopened once outside its retries: killed again in that
    # moment, the command failed and a worker exited (status 1) or the caller's run failed
    # with the ConnectionError. Now the checkout retries too, within the same budget.
    rng = random.Random(11)
    env = {"AIOFLOW_TEST_DELAY": "0.003"}
    info = ("--log-level", "INFO")
    keyed = ("--lease-ttl", "1", "--snapshot-period", "0.2", *info)
    procs = [
        *(
            workers.start("slowpipe", "first,slow", claim_idle=1.0, env=env, extra=info)
            for _ in range(2)
        ),
        *(workers.start("keyed", "count", claim_idle=1.0, env=env, extra=keyed) for _ in range(2)),
    ]
    for proc in procs:
        await serving(workers, proc)
    stop = threading.Event()
    kills: list[int] = []

    def storm() -> None:
        admin = redis.Redis.from_url(redis_url)
        try:
            while not stop.wait(rng.uniform(0.02, 0.2)):
                kills.append(admin.client_kill_filter(_type="normal", skipme=True))
        finally:
            admin.close()

    transport = RedisTransport(redis_url, prefix=redis_prefix)
    stormer = threading.Thread(target=storm, name="storm")
    stormer.start()
    cams = [(f"cam{x % 8}", x // 8) for x in range(600)]
    rounds = 0
    try:
        # Round after round until the storm has killed 20 times (a storm, not a blip), however
        # fast the runs go: each round must come out whole.
        while len(kills) < 20 and rounds < 20:
            rounds += 1
            plain, counted = await asyncio.gather(
                rp.slowpipe.run(range(1000), transport=transport),
                rp.keyed.run(cams, transport=transport),
            )
            assert plain == [2 * x + 1 for x in range(1000)], rounds
            assert counted == [(f"cam{x % 8}", x // 8, x // 8 + 1) for x in range(600)], rounds
            assert books_balance(rp.slowpipe.statistics())
            assert books_balance(rp.keyed.statistics())
    finally:
        stop.set()
        await asyncio.to_thread(stormer.join)
    assert len(kills) >= 20, kills
    assert sum(kills) >= 40, kills  # (connections of the workers, the callers...)
    for proc in procs:
        assert proc.poll() is None, workers.output(proc)


CALLER = """
import sys

import redis_pipelines as rp

import aioflow as af
from aioflow.transport.redis import RedisTransport


async def main() -> None:
    transport = RedisTransport(sys.argv[1], prefix=sys.argv[2])
    async for out in rp.slowpipe.stream(range(100_000), transport=transport):
        print(out, flush=True)


af.run(main())
"""


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
async def test_a_caller_killed_mid_run_leaves_the_workers_serving_the_next_caller(
    redis_url: str, redis_prefix: str, workers: Workers, sig: signal.Signals
) -> None:
    env = {"AIOFLOW_TEST_DELAY": "0.004"}
    procs = [workers.start("slowpipe", "first,slow", env=env) for _ in range(2)]
    path = os.pathsep.join([str(ROOT), str(HERE), os.environ.get("PYTHONPATH", "")])
    caller = await asyncio.to_thread(
        subprocess.Popen,
        [sys.executable, "-c", CALLER, redis_url, redis_prefix],
        env={**os.environ, "PYTHONPATH": path},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert caller.stdout is not None
        got = [await asyncio.to_thread(caller.stdout.readline) for _ in range(300)]
        assert got == [f"{2 * x + 1}\n" for x in range(300)]
    finally:
        caller.send_signal(sig)  # mid-run: items in the streams, answers on their way
        await asyncio.to_thread(caller.wait, timeout=10)
        caller.stdout.close()
    # A new caller (the restarted one) gets its whole run, exact, from the same workers.
    transport = RedisTransport(redis_url, prefix=redis_prefix)
    assert await rp.slowpipe.run(range(500), transport=transport) == [2 * x + 1 for x in range(500)]
    keys = pipeline_keys(redis_prefix, "slowpipe")
    client = aioredis.Redis.from_url(redis_url)
    try:
        # What the dead caller had written is worked off (answered to nobody), not left.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and await client.xlen(keys.inbox("first")):
            await asyncio.sleep(0.05)
        assert await client.xlen(keys.inbox("first")) == 0
        assert (await client.xpending(keys.inbox("first"), "aioflow"))["pending"] == 0
        # Left: the dead caller's reply stream (nobody could delete it), with the answers to
        # its items, but it expires (REPLY_TTL after the caller's last renewal); the stream
        # and the graph; the workers' books, which expire too.
        left = await leftovers(redis_url, redis_prefix)
        assert set(left) == {"in", "graph", "stats", "reply"}, left
        (orphan,) = left["reply"]
        assert await client.xlen(orphan) > 0
        assert 0 < await client.ttl(orphan) <= REPLY_TTL
    finally:
        await client.aclose()
    for proc in procs:
        assert proc.poll() is None, workers.output(proc)


async def test_a_reply_stream_is_renewed_while_its_caller_lives_and_a_lost_one_fails_the_run(
    redis_url: str, redis_prefix: str, workers: Workers, monkeypatch: pytest.MonkeyPatch
) -> None:
    import aioflow.transport.redis as transport_module

    monkeypatch.setattr(transport_module, "REPLY_TTL", 0.5)  # renewed every 25 ms
    workers.start("slowpipe", "first,slow", env={"AIOFLOW_TEST_DELAY": "0.02"})
    transport = RedisTransport(redis_url, prefix=redis_prefix)
    # A run about three times as long as the TTL: renewed, never expired.
    assert await rp.slowpipe.run(range(600), transport=transport) == [2 * x + 1 for x in range(600)]
    # The stream gone under a live run (as when the TTL ran out while the caller stalled):
    # answers were dropped, so the run fails saying why instead of waiting forever.
    client = aioredis.Redis.from_url(redis_url)

    async def lose_the_reply_stream() -> None:
        async for out in rp.slowpipe.stream(range(10_000), transport=transport):
            if out == 21:
                reply = [k async for k in client.scan_iter(match=f"{redis_prefix}:*:reply:*")]
                await client.delete(*reply)

    try:
        with pytest.raises(ExceptionGroup) as info:
            await lose_the_reply_stream()
    finally:
        await client.aclose()
    (err,) = info.value.exceptions
    assert isinstance(err, ReplyStreamLost), repr(err)
    assert "reply stream" in str(err)


@pytest.fixture
def volatile_redis(tmp_path: Path) -> Iterator[tuple[str, Callable[[], None]]]:
    """A redis-server of this test's own without persistence, and ``restart()``: it comes
    back on the same port empty (streams, groups, books, everything gone)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    args = [
        shutil.which("redis-server") or "redis-server",
        *("--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"),
        *("--dir", str(tmp_path)),
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

    def restart() -> None:
        server[-1].kill()
        server[-1].wait(timeout=10)
        time.sleep(0.3)
        start()

    start()
    try:
        yield f"redis://127.0.0.1:{port}/0", restart
    finally:
        server[-1].kill()
        server[-1].wait()


async def test_a_redis_server_that_comes_back_empty_fails_the_run_saying_so_not_a_hang(
    volatile_redis: tuple[str, Callable[[], None]], redis_prefix: str
) -> None:
    # Without persistence a restart loses the items in the streams and the answers: the run
    # cannot finish. It fails naming what happened (before: it waited for them forever);
    # the workers come back to the empty server and serve the next run.
    url, restart = volatile_redis
    workers = Workers(url, redis_prefix)
    try:
        env = {"AIOFLOW_TEST_DELAY": "0.01"}
        procs = [workers.start("slowpipe", "first,slow", env=env) for _ in range(2)]
        transport = RedisTransport(url, prefix=redis_prefix)

        async def run_through_a_restart() -> None:
            async for out in rp.slowpipe.stream(range(5000), transport=transport):
                if out == 201:
                    await asyncio.to_thread(restart)

        with pytest.raises(ExceptionGroup) as info:
            await asyncio.wait_for(run_through_a_restart(), timeout=60)
        (err,) = info.value.exceptions
        assert isinstance(err, ReplyStreamLost), repr(err)
        assert "lost its data" in str(err)
        assert await rp.slowpipe.run(range(50), transport=transport) == [
            2 * x + 1 for x in range(50)
        ]
        for proc in procs:
            assert proc.poll() is None, workers.output(proc)
    finally:
        workers.stop()
        for log in workers.logs:
            log.close()


async def test_a_hanging_item_times_out_in_the_worker_and_the_others_go_on(
    redis_url: str, redis_prefix: str, workers: Workers
) -> None:
    proc = workers.start("hanging", "hang_on_3")
    transport = RedisTransport(redis_url, prefix=redis_prefix)
    async with rp.hanging.open(transport=transport) as running:
        found = await asyncio.gather(*(running.submit(x) for x in range(8)), return_exceptions=True)
    err = found[3]
    assert isinstance(err, af.BlockError), repr(err)
    assert err.block == "hang_on_3"
    assert "TimeoutError" in str(err.__cause__), repr(err.__cause__)
    assert [x for i, x in enumerate(found) if i != 3] == [0, 1, 2, 4, 5, 6, 7]
    stats = rp.hanging.statistics()["hang_on_3"]
    assert (stats.completed, stats.failed, stats.in_flight) == (7, 1, 0)
    assert proc.poll() is None, workers.output(proc)


async def test_a_block_that_fails_every_item_fails_each_caller_and_keeps_serving(
    redis_url: str, redis_prefix: str, workers: Workers
) -> None:
    proc = workers.start("refusing", "always_fail")
    transport = RedisTransport(redis_url, prefix=redis_prefix)
    with pytest.raises(ExceptionGroup) as info:
        await rp.refusing.run(range(50), transport=transport)
    errors = block_errors(info.value)
    assert errors
    assert all(e.block == "always_fail" and "refused" in str(e.__cause__) for e in errors)
    async with rp.refusing.open(transport=transport) as running:
        found = await asyncio.gather(
            *(running.submit(x) for x in range(20)), return_exceptions=True
        )
    assert all(
        isinstance(e, af.BlockError) and f"refused: {x}" in str(e.__cause__)
        for x, e in enumerate(found)
    )
    stats = rp.refusing.statistics()
    assert books_balance(stats)
    assert stats["always_fail"].failed >= 20
    assert stats["always_fail"].completed == 0
    assert proc.poll() is None, workers.output(proc)
