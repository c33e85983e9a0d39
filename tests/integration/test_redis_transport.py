"""The distributed mode on a real redis-server, with real worker processes."""

from __future__ import annotations

import asyncio
import contextlib
import pickle
import signal
import time
from pathlib import Path

import msgpack
import pytest
import redis.asyncio as aioredis
import redis_pipelines as rp
from conftest import Workers

import aioflow as af
from aioflow.transport.messages import RemoteError
from aioflow.transport.redis import NoWorkerError, RedisTransport

pytestmark = pytest.mark.integration


@pytest.mark.slow
async def test_ten_thousand_items_through_three_workers_equal_the_local_run(
    redis_url: str, redis_prefix: str, workers: Workers
) -> None:
    for name in ("double", "inc", "square"):
        workers.start("chain", name)
    transport = RedisTransport(redis_url, prefix=redis_prefix)
    items = list(range(10_000))
    remote = await rp.chain.run(items, transport=transport)
    assert remote == await rp.chain.run(items)


async def test_flat_maps_and_filters_keep_input_order(
    redis_url: str, redis_prefix: str, workers: Workers
) -> None:
    workers.start("fanout", "explode")
    workers.start("fanout", "label")
    transport = RedisTransport(redis_url, prefix=redis_prefix)
    items = list(range(200))
    remote = [out async for out in rp.fanout.stream(items, transport=transport)]
    assert remote == await rp.fanout.run(items)
    assert remote[:3] == ["1.0", "2.0", "2.1"]


async def test_an_every_stage_in_a_worker_samples_and_holds_as_it_does_locally(
    redis_url: str, redis_prefix: str, workers: Workers
) -> None:
    workers.start("sampled", "every3")  # feed and held_pair stay in the caller
    transport = RedisTransport(redis_url, prefix=redis_prefix, local={"feed", "held_pair"})
    items = list(range(40))
    remote = await rp.sampled.run(items, transport=transport)
    assert remote == await rp.sampled.run(items)
    # x+1 by parity; every 3rd of each parity squared, the two after it hold that square
    assert remote[:8] == [
        (1, 1, 0),
        (2, 4, 0),
        (3, 1, 1),
        (4, 4, 1),
        (5, 1, 2),
        (6, 4, 2),
        (7, 49, 0),
        (8, 64, 0),
    ]


async def test_blocks_kept_local_run_in_the_caller(
    redis_url: str, redis_prefix: str, workers: Workers
) -> None:
    workers.start("chain", "inc,square")
    transport = RedisTransport(redis_url, prefix=redis_prefix, local={"double"})
    await rp.chain.run(range(7))
    assert await rp.chain.run(range(50), transport=transport) == [
        (2 * x + 1) ** 2 for x in range(50)
    ]
    # This run's books of the block run locally, not the local run's before (7 + 50).
    assert rp.chain.statistics()["double"].received == 50


async def test_an_error_reaches_the_caller_as_a_block_error_naming_block_and_item(
    redis_url: str, redis_prefix: str, workers: Workers
) -> None:
    workers.start("failing", "fail_on_7,after")
    transport = RedisTransport(redis_url, prefix=redis_prefix)
    with pytest.raises(ExceptionGroup) as info:
        await rp.failing.run(range(20), transport=transport)
    (err,) = info.value.exceptions
    assert isinstance(err, af.BlockError)
    assert err.block == "fail_on_7"
    assert err.item == "7"
    assert isinstance(err.__cause__, RemoteError)
    assert str(err.__cause__) == "ValueError: seven is not allowed: 7"


async def test_submit_answers_each_caller_with_outputs_drops_and_errors(
    redis_url: str, redis_prefix: str, workers: Workers
) -> None:
    workers.start("fanout", "explode,label")
    transport = RedisTransport(redis_url, prefix=redis_prefix)
    async with rp.fanout.open(transport=transport) as running:
        one, two, none = await asyncio.gather(
            running.submit(1), running.submit(5), running.submit(3), return_exceptions=True
        )
    assert one == "1.0"
    assert two == ["5.0", "5.1"]
    assert isinstance(none, af.ItemDropped)
    assert none.reason == "filtered"
    assert none.block == "explode"

    workers.start("failing", "fail_on_7,after")
    async with rp.failing.open(transport=transport) as running:
        assert await running.submit(6) == 7
        with pytest.raises(af.BlockError, match="seven is not allowed"):
            await running.submit(7)
        assert await running.submit(8) == 9  # other items are not affected


async def test_malformed_and_pickle_messages_go_to_the_dead_letter_stream_and_run_nothing(
    redis_url: str, redis_prefix: str, workers: Workers, tmp_path: Path
) -> None:
    proof = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self) -> tuple[object, ...]:
            return (open, (str(proof), "w"))

    transport = RedisTransport(redis_url, prefix=redis_prefix)
    # Register the graph and the streams as a caller would, then write the bad entries.
    async with rp.chain.open(transport=transport):
        pass
    from aioflow.transport.messages import Keys, graph_signature

    graph_hash, _ = graph_signature("chain", rp.chain.stages)
    keys = Keys(redis_prefix, "chain", graph_hash)
    client = aioredis.Redis.from_url(redis_url)
    # (a reply stream of the pipeline's: one elsewhere is refused before anything else)
    meta = {"r": "x", "p": [0], "to": keys.reply("x"), "end": "square"}
    bad = [
        {b"m": b"\xc1not msgpack", b"v": b""},
        {b"m": msgpack.packb({**meta, "c": "pickle"}), b"v": pickle.dumps(Exploit())},
        {b"m": msgpack.packb({**meta, "c": "msgpack"}), b"v": pickle.dumps(Exploit())},
        {b"m": msgpack.packb({"r": 1}), b"v": b""},
    ]
    try:
        for fields in bad:
            await client.xadd(keys.inbox("double"), fields)
        workers.start("chain", "double,inc,square")
        deadline = time.monotonic() + 20
        while await client.xlen(keys.dead) < len(bad) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        dead = await client.xrange(keys.dead)
    finally:
        await client.aclose()
    assert len(dead) == len(bad)
    reasons = [fields[b"reason"].decode() for _, fields in dead]
    assert "'m' is not msgpack" in reasons[0]
    assert "refused an item written with the 'pickle' codec" in reasons[1]
    assert "the item does not decode" in reasons[2]
    assert "no 'p' field" in reasons[3] or "malformed item message" in reasons[3]
    assert not proof.exists()
    # The worker survived them all and still serves.
    assert await rp.chain.run(range(5), transport=transport) == [(2 * x + 1) ** 2 for x in range(5)]


async def test_a_worker_whose_pipeline_differs_exits_2_saying_so(
    redis_url: str, redis_prefix: str, workers: Workers
) -> None:
    transport = RedisTransport(redis_url, prefix=redis_prefix)
    async with rp.chain.open(transport=transport):
        proc = workers.start("chain_v2", "double")
        await asyncio.to_thread(proc.wait, timeout=30)
    err = workers.output(proc)
    assert proc.returncode == 2
    assert "differs from the one its callers run" in err


def test_a_worker_given_blocks_that_are_not_a_segment_exits_2(
    redis_url: str, workers: Workers
) -> None:
    proc = workers.start("chain", "double,square")
    proc.wait(timeout=30)
    err = workers.output(proc)
    assert proc.returncode == 2
    assert "not consecutive stages" in err
    assert "['double', 'inc', 'square']" in err


def test_the_password_is_never_shown() -> None:
    transport = RedisTransport("rediss://user:hunter2@example.com:6380/1")
    assert "hunter2" not in repr(transport)
    assert repr(transport) == "<RedisTransport rediss://user:***@example.com:6380/1>"


async def test_a_worker_never_prints_the_password_of_its_url(
    redis_url: str, redis_prefix: str, workers: Workers
) -> None:
    # This server has no password; redis-py then ignores the one given, which lets the test
    # look at everything a worker with a password in its URL logs.
    workers.url = redis_url.replace("redis://", "redis://:hunter2@")
    proc = workers.start("chain", "double,inc,square", extra=("--log-level", "INFO"))
    transport = RedisTransport(workers.url, prefix=redis_prefix)
    assert await rp.chain.run(range(3), transport=transport) == [1, 9, 25]
    proc.send_signal(signal.SIGTERM)
    await asyncio.to_thread(proc.wait, timeout=30)
    err = workers.output(proc)
    assert proc.returncode == 0
    assert "hunter2" not in err
    assert "redis://:***@" in err


async def test_without_a_worker_the_caller_warns_naming_the_block_then_gives_up(
    redis_url: str, redis_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    transport = RedisTransport(redis_url, prefix=redis_prefix, no_worker_timeout=1.0)
    with pytest.raises(ExceptionGroup) as info:
        await rp.chain.run(range(3), transport=transport)
    (err,) = info.value.exceptions
    assert isinstance(err, NoWorkerError)
    assert "no worker has taken an item for block 'double'" in str(err)
    assert "--blocks double" in str(err)
    assert any("no worker has taken an item" in r.getMessage() for r in caplog.records)


async def test_leaving_the_stream_early_or_cancelling_the_run_leaves_no_task_behind(
    redis_url: str, redis_prefix: str, workers: Workers
) -> None:
    workers.start("slowpipe", "first,slow", env={"AIOFLOW_TEST_DELAY": "0.05"})
    transport = RedisTransport(redis_url, prefix=redis_prefix)
    before = asyncio.all_tasks()
    async with contextlib.aclosing(rp.slowpipe.stream(range(1000), transport=transport)) as outs:
        async for out in outs:
            if out == 7:  # the output of item 3
                break
    assert asyncio.all_tasks() == before

    run = asyncio.create_task(rp.slowpipe.run(range(1000), transport=transport))
    await asyncio.sleep(1.0)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert asyncio.all_tasks() == before
    # The pipeline object is free for another run.
    assert await rp.slowpipe.run(range(3), transport=transport) == [1, 3, 5]
