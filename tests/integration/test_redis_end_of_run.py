"""The end of a caller's run for keyed blocks in workers: each key's ``evict()`` runs at the end
of the caller's stream and its outputs reach the caller where a local run puts them (after the
items' outputs), with real redis-server and real worker processes."""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import subprocess
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis_pipelines as rp
from conftest import Workers, serving

import aioflow as af
from aioflow.transport.messages import Keys, graph_signature
from aioflow.transport.partitions import partition_of
from aioflow.transport.redis import RedisTransport, connect

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FAST = ("--lease-ttl", "1", "--snapshot-period", "0.2")


def cams(n: int, cameras: int = 5, name: str = "cam") -> list[tuple[str, int]]:
    return [(f"{name}{x % cameras}", x // cameras) for x in range(n)]


@pytest.mark.parametrize("n_workers", [1, 2])
async def test_a_keyed_head_segment_flushes_every_key_at_the_end_as_the_local_run_does(
    redis_url: str, redis_prefix: str, workers: Workers, n_workers: int
) -> None:
    for _ in range(n_workers):
        workers.start("tallied", "tally", extra=FAST)
    items = cams(200)
    local = await rp.tallied.run(items)
    transport = RedisTransport(redis_url, prefix=redis_prefix)
    remote = await rp.tallied.run(items, transport=transport)
    assert remote == local
    assert local[-10:] == [
        ("total", -1, 40),
        ("cam0", -1, 40),
        ("total", -1, 40),
        ("cam1", -1, 40),
        ("total", -1, 40),
        ("cam2", -1, 40),
        ("total", -1, 40),
        ("cam3", -1, 40),
        ("total", -1, 40),
        ("cam4", -1, 40),
    ]
    # The keys went with the run: a second run counts from 1 again, as locally.
    again = await rp.tallied.run(items, transport=transport)
    assert again == local


@pytest.mark.parametrize("n_workers", [1, 2])
async def test_the_flush_goes_on_through_the_next_segments_to_the_caller(
    redis_url: str, redis_prefix: str, workers: Workers, n_workers: int
) -> None:
    # cam_of routes to tally's partitions from its own worker; the summaries that tally's
    # evict() returns go through present (another segment, two outputs each) to the caller.
    workers.start("tallied_between", "cam_of")
    for _ in range(n_workers):
        workers.start("tallied_between", "tally", extra=FAST)
    workers.start("tallied_between", "present")
    local = await rp.tallied_between.run(range(300))
    transport = RedisTransport(redis_url, prefix=redis_prefix)
    remote = [out async for out in rp.tallied_between.stream(range(300), transport=transport)]
    assert remote == local
    assert remote[-4:] == ["total=60", "--", "cam4=60", "--"]


async def test_a_callers_end_leaves_the_keys_another_live_caller_is_using(
    redis_url: str, redis_prefix: str, workers: Workers
) -> None:
    workers.start("tallied", "tally", extra=FAST)
    workers.start("tallied", "tally", extra=FAST)
    first, second = rp.tallied, af.Pipeline(rp.Tally(name="tally"), name="tallied")
    transport = RedisTransport(redis_url, prefix=redis_prefix)
    # A and B use different keys, and share one ("shared": a documented limit).
    a_items = [("shared", 0), *cams(100, name="a"), ("shared", 1)]
    b_items = [*cams(60, cameras=3, name="b"), ("shared", 2)]
    half = asyncio.Event()
    b_done = asyncio.Event()

    async def a_source() -> AsyncIterator[tuple[str, int]]:
        for x, item in enumerate(a_items):
            if x == 50:
                half.set()
                await b_done.wait()  # A's keys are live in the workers while B ends
            yield item

    async def run_b() -> list[Any]:
        await half.wait()
        try:
            return await second.run(b_items, transport=transport)
        finally:
            b_done.set()

    a_out, b_out = await asyncio.gather(first.run(a_source(), transport=transport), run_b())
    local_a = await first.run(a_items)
    local_b = await second.run(b_items[:-1])
    # B's end evicted B's own keys, as its local run does; "shared", which A still used, stayed
    # (B's item of it counted after A's first).
    assert b_out == [*local_b[:60], ("shared", 2, 2), *local_b[60:]]
    # A's keys went on counting across B's end, and A's end evicted them and "shared" (which
    # counted B's item too).
    assert local_a[101:104] == [("shared", 1, 2), ("total", -1, 2), ("shared", -1, 2)]
    shared = [("shared", 1, 3), ("total", -1, 3), ("shared", -1, 3)]
    assert a_out == [*local_a[:101], *shared, *local_a[104:]]


async def test_owners_sigkilled_mid_stream_and_at_the_end_still_give_the_flush_once(
    redis_url: str, redis_prefix: str, workers: Workers
) -> None:
    # A slow evict(): the owner killed when the items are all answered dies with the end of
    # the run in hand (or just before it); its partitions' next owner ends their keys.
    env = {"AIOFLOW_TEST_DELAY": "0.003", "AIOFLOW_TEST_EVICT_DELAY": "0.3"}
    extra = (*FAST, "--log-level", "INFO")
    procs = [workers.start("tallied", "tally", env=env, extra=extra) for _ in range(3)]
    graph_hash, _ = graph_signature("tallied", rp.tallied.stages)
    keys = Keys(redis_prefix, "tallied", graph_hash)
    used = sorted({partition_of(f"cam{i}", 16) for i in range(5)})
    client = connect(redis_url)
    killed: list[subprocess.Popen[str]] = []

    async def kill_an_owner() -> None:
        # The partitions hold the caller's items (1024 over 16 of them), so every item may be
        # in Redis before the first owner killed has had its partitions taken over: the second
        # kill waits until a live worker owns a partition in use.
        while True:
            for part in used:
                owner = await client.get(f"{keys.base}:lease:tally:{part}")
                for proc in procs:
                    if proc in killed or owner is None or f"-{proc.pid}-" not in owner.decode():
                        continue
                    proc.kill()  # SIGKILL: no drain, no release; its leases must expire
                    killed.append(proc)
                    return
            await asyncio.sleep(0.02)

    async def source() -> AsyncIterator[tuple[str, int]]:
        for x, item in enumerate(cams(600)):
            if x == 200:
                await kill_an_owner()
            yield item

    transport = RedisTransport(redis_url, prefix=redis_prefix)
    remote = []
    try:
        async for out in rp.tallied.stream(source(), transport=transport):
            remote.append(out)
            if len(remote) == 600:
                await kill_an_owner()  # the items are answered: the run's end is under way
    finally:
        await client.aclose()
    assert len(killed) == 2
    assert [p.wait() for p in killed] == [-signal.SIGKILL] * 2
    # Every output once, in order, the flush included: each key's total counts its items once.
    assert remote == await rp.tallied.run(cams(600))
    survivor = next(p for p in procs if p not in killed)
    assert "took over partition" in workers.output(survivor)


async def test_closing_an_open_service_ends_its_keys_in_the_workers(
    redis_url: str, redis_prefix: str, workers: Workers
) -> None:
    workers.start("tallied_between", "cam_of")
    workers.start("tallied_between", "tally", extra=FAST)
    pipe = rp.tallied_between
    # present runs in the caller: the flush goes through it on close, as in a local open().
    transport = RedisTransport(redis_url, prefix=redis_prefix, local={"present"})
    async with pipe.open(transport=transport) as running:
        assert await running.submit(0) == "cam0#0:1"
        assert await running.submit(5) == "cam0#1:2"
        assert await running.submit(1) == "cam1#0:1"
    # The close evicted cam0 and cam1 (evict() ran: 2 summaries of 2 lines each went through
    # present), so a later run counts them from 1 again and flushes only its own.
    books = pipe.statistics()
    assert books["tally"].evicted == 2
    assert books["present"].received == 3 + 4
    assert await pipe.run([10, 6], transport=transport) == [
        "cam0#2:1",
        "cam1#1:1",
        "total=1",
        "--",
        "cam0=1",
        "--",
        "total=1",
        "--",
        "cam1=1",
        "--",
    ]


async def test_an_empty_run_has_no_key_to_end_and_needs_no_worker(
    redis_url: str, redis_prefix: str
) -> None:
    transport = RedisTransport(redis_url, prefix=redis_prefix, no_worker_timeout=2)
    assert await rp.tallied.run([], transport=transport) == await rp.tallied.run([]) == []


async def test_a_keyed_block_inside_a_segment_flushes_at_the_end_from_each_worker_holding_keys(
    redis_url: str, redis_prefix: str, workers: Workers
) -> None:
    # One worker of [cam_of, tally]: it holds every key, so the run is the local run.
    first = workers.start("tallied_inside", "cam_of,tally")
    workers.start("tallied_inside", "present")
    pipe = rp.tallied_inside
    transport = RedisTransport(redis_url, prefix=redis_prefix)
    local = await pipe.run(range(300))
    assert await pipe.run(range(300), transport=transport) == local
    # Two workers of it: each holds part of each key's items (state is per worker inside a
    # segment); both flush at the end, after every item, and the totals add up.
    workers.start("tallied_inside", "cam_of,tally")
    outs = await pipe.run(range(3000), transport=transport)
    items, flush = outs[:3000], outs[3000:]
    assert [line.split(":")[0] for line in items] == [f"cam{x % 5}#{x // 5}" for x in range(3000)]
    assert flush
    assert not any("#" in line for line in flush)
    totals: dict[str, int] = {}
    for line in flush:
        if line.startswith("cam"):
            cam, n = line.split("=")
            totals[cam] = totals.get(cam, 0) + int(n)
    assert totals == {f"cam{i}": 600 for i in range(5)}
    assert first.poll() is None


@pytest.mark.parametrize(
    ("attr", "segments"),
    [
        ("keyed", ["count", "count"]),
        ("tagged", ["tag", "count2", "count2"]),
        ("tagged", ["tag,count2", "tag,count2"]),
    ],
    ids=["caller-writes-the-partitions", "a-worker-writes-the-partitions", "inside-a-segment"],
)
async def test_a_run_after_cancelled_ones_starts_every_key_afresh(
    redis_url: str, redis_prefix: str, workers: Workers, attr: str, segments: list[str]
) -> None:
    # Runs cancelled at moments picked at random (seeded), one after the other, then a run to
    # the end: as locally, a cancelled run's keys go with it (without evict), so the last run
    # counts each key from 1. Before, their state went on into the next runs (a count of 141
    # for a key's first item): the next run's items were noted as sharing the keys as soon as
    # a worker read them, before the cancelled run's end went by, and items of the cancelled
    # run that an earlier segment sent on after its end touched its keys again.
    rng = random.Random(20261206)
    env = {"AIOFLOW_TEST_DELAY": "0.003"}
    procs = [
        workers.start(attr, blocks, env=env, extra=("--log-level", "INFO")) for blocks in segments
    ]
    for proc in procs:
        await serving(workers, proc)
    pipe: af.Pipeline[Any, Any] = getattr(rp, attr)
    items = cams(2000) if attr == "keyed" else list(range(2000))
    transport = RedisTransport(redis_url, prefix=redis_prefix)
    for _ in range(3):
        run = asyncio.create_task(pipe.run(items, transport=transport))
        await asyncio.sleep(rng.uniform(0.05, 0.6))
        run.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await run
    outputs = await asyncio.wait_for(pipe.run(items[:40], transport=transport), 30)
    counts: dict[str, list[int]] = {}
    for key, _seq, n in sorted(outputs, key=lambda out: (out[0], out[1])):
        counts.setdefault(key, []).append(n)
    assert counts == {key: list(range(1, len(ns) + 1)) for key, ns in counts.items()}
    assert sum(map(len, counts.values())) == 40
