"""Blocks kept in the caller anywhere in a distributed pipeline (``RedisTransport(local=...)``),
and the caller's check that every remote segment has a live worker (real redis-server, real
worker processes)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import pytest
import redis_pipelines as rp
from conftest import Workers, serving

import aioflow as af
from aioflow.transport.messages import RemoteError
from aioflow.transport.redis import NoWorkerError, RedisTransport

pytestmark = pytest.mark.integration

BOOK_FIELDS = ("received", "completed", "emitted", "dropped", "skipped", "failed")


async def answers(pipe: af.Pipeline, items: list[int], transport: Any = None) -> list[Any]:
    """What ``submit()`` gives for each item, concurrently: the output, or for an item that
    made none ``("dropped", reason, block)``, or for a failure ``("failed", block, item)``."""

    async def one(running: Any, item: int) -> Any:
        try:
            return await running.submit(item)
        except af.ItemDropped as drop:
            return ("dropped", drop.reason, drop.block)
        except af.BlockError as err:
            return ("failed", err.block, err.item)

    async with pipe.open(transport=transport) as running:
        return list(await asyncio.gather(*(one(running, x) for x in items)))


async def test_a_block_kept_local_in_the_middle_runs_in_the_caller_with_the_local_results(
    redis_url: str, redis_prefix: str, workers: Workers
) -> None:
    workers.start("sandwich", "spread")
    workers.start("sandwich", "show")
    transport = RedisTransport(redis_url, prefix=redis_prefix, local={"keep_odd"})
    items = list(range(50))
    expected = await rp.sandwich.run(items)
    local_books = rp.sandwich.statistics()
    # (flat-maps and filters on both sides of the local block)
    assert "<51>" in expected
    assert "<-51>" in expected

    assert await rp.sandwich.run(items, transport=transport) == expected
    books = rp.sandwich.statistics()
    # The first run through these workers: every block's books equal the local run's, the
    # middle one counted by the caller, the others gathered from the workers.
    for name in ("spread", "keep_odd", "show"):
        for field in BOOK_FIELDS:
            assert getattr(books[name], field) == getattr(local_books[name], field), (name, field)
    assert books["keep_odd"].workers == local_books["keep_odd"].workers

    assert [out async for out in rp.sandwich.stream(items, transport=transport)] == expected

    wanted = [0, 1, 2, 5, 8, 13, 50, 17]  # none, filtered, one, two outputs, a failure (50)
    local = await answers(rp.sandwich, wanted)
    assert local[0] == ("dropped", "filtered", "spread")
    assert local[1] == ("dropped", "filtered", "keep_odd")
    assert local[3] == ["<51>", "<-51>"]
    assert local[6] == ("failed", "keep_odd", "501")
    assert await answers(rp.sandwich, wanted, transport) == local


async def test_an_error_in_a_middle_local_block_fails_the_run_as_the_local_run_does(
    redis_url: str, redis_prefix: str, workers: Workers
) -> None:
    workers.start("sandwich", "spread")
    workers.start("sandwich", "show")
    transport = RedisTransport(redis_url, prefix=redis_prefix, local={"keep_odd"})
    items = list(range(60))
    with pytest.raises(ExceptionGroup) as local_info:
        await rp.sandwich.run(items)
    with pytest.raises(ExceptionGroup) as info:
        await rp.sandwich.run(items, transport=transport)
    (local_err,) = local_info.value.exceptions
    (err,) = info.value.exceptions
    assert isinstance(err, af.BlockError)
    assert (err.block, err.item) == (local_err.block, local_err.item) == ("keep_odd", "501")
    # It ran here: its cause is the exception itself, not a RemoteError.
    assert isinstance(err.__cause__, ValueError)
    assert str(err.__cause__) == "501 is not allowed"

    # A failing remote block after the local one reaches the caller the same way.
    with pytest.raises(ExceptionGroup) as info:
        async for _ in rp.sandwich.stream(items, transport=transport):
            pass
    (err,) = info.value.exceptions
    assert (err.block, err.item) == ("keep_odd", "501")


async def test_several_local_parts_alternate_with_remote_ones(
    redis_url: str, redis_prefix: str, workers: Workers
) -> None:
    for name in ("l1", "l3", "l5"):
        workers.start("layers", name)
    transport = RedisTransport(redis_url, prefix=redis_prefix, local={"l2", "l4"})
    items = list(range(300))
    expected = [2 * ((2 * x + 1) ** 2 + 1) for x in items]
    assert await rp.layers.run(items, transport=transport) == expected
    books = rp.layers.statistics()
    assert books["l2"].received == books["l4"].received == 300
    assert books["l3"].emitted == 300
    # Leaving the stream early stops every part, here and in the run's tasks.
    before = asyncio.all_tasks()
    async with contextlib.aclosing(rp.layers.stream(range(10_000), transport=transport)) as outs:
        async for out in outs:
            if out == expected[5]:
                break
    assert asyncio.all_tasks() == before
    async with rp.layers.open(transport=transport) as running:
        assert await asyncio.gather(*(running.submit(x) for x in items[:40])) == expected[:40]
        assert running.statistics()["l4"].completed == 40

    # A local part at the start and at the end too: caller, workers, caller, workers, caller.
    around = RedisTransport(redis_url, prefix=redis_prefix, local={"l2", "l4", "l1", "l5"})
    workers.start("layers", "l3")
    assert await rp.layers.run(items, transport=around) == expected
    assert await answers(rp.layers, items[:10], around) == expected[:10]


async def test_a_later_segment_without_a_worker_fails_the_run_naming_its_block(
    redis_url: str, redis_prefix: str, workers: Workers, caplog: pytest.LogCaptureFixture
) -> None:
    # Nobody serves inc,square. (The worker of double serves before the run starts: the first
    # segment would be found without a worker otherwise, rightly.)
    await serving(workers, workers.start("chain", "double", extra=("--log-level", "INFO")))
    transport = RedisTransport(redis_url, prefix=redis_prefix, no_worker_timeout=1.0)
    with pytest.raises(ExceptionGroup) as info:
        await rp.chain.run(range(20), transport=transport)
    (err,) = info.value.exceptions
    assert isinstance(err, NoWorkerError)
    assert "no worker has taken an item for block 'inc'" in str(err)
    assert "--blocks inc" in str(err)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("block 'inc'" in m for m in warned)
    assert not any("block 'double'" in m for m in warned)  # that one has its worker

    # The same behind a block kept local: the segment after it is checked too.
    transport = RedisTransport(redis_url, prefix=redis_prefix, local={"inc"}, no_worker_timeout=1.0)
    with pytest.raises(ExceptionGroup) as info:
        await rp.chain.run(range(20), transport=transport)
    (err,) = info.value.exceptions
    assert isinstance(err, NoWorkerError)
    assert "block 'square'" in str(err)


@pytest.mark.slow
async def test_all_workers_of_a_segment_killed_mid_run_warn_then_fail_after_the_timeout(
    redis_url: str, redis_prefix: str, workers: Workers, caplog: pytest.LogCaptureFixture
) -> None:
    env = {"AIOFLOW_TEST_DELAY": "0.05"}
    books = ("--stats-period", "0.2", "--stats-ttl", "1", "--log-level", "INFO")
    steady = workers.start("slowpipe", "first", extra=books)
    doomed = [workers.start("slowpipe", "slow", env=env, extra=books) for _ in range(2)]
    for proc in (steady, *doomed):
        await serving(workers, proc)
    transport = RedisTransport(redis_url, prefix=redis_prefix, no_worker_timeout=2.0)
    outputs: list[int] = []

    async def consume() -> None:
        async for out in rp.slowpipe.stream(range(2000), transport=transport):
            outputs.append(out)
            if len(outputs) == 20:
                for proc in doomed:
                    proc.kill()  # SIGKILL: every worker of the segment, holding items
                for proc in doomed:
                    await asyncio.to_thread(proc.wait)

    with pytest.raises(ExceptionGroup) as info:
        await consume()
    (err,) = info.value.exceptions
    assert isinstance(err, NoWorkerError)
    assert "no live worker serves block 'slow'" in str(err)
    assert "gave up after 2 s" in str(err)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("no live worker serves block 'slow'" in m for m in warned)
    assert outputs == [2 * x + 1 for x in range(len(outputs))]  # what came, came in order
    assert 20 <= len(outputs) < 2000


async def test_errors_of_remote_blocks_around_a_local_one_name_block_and_item(
    redis_url: str, redis_prefix: str, workers: Workers
) -> None:
    workers.start("failing", "fail_on_7")
    transport = RedisTransport(redis_url, prefix=redis_prefix, local={"after"})
    with pytest.raises(ExceptionGroup) as info:
        await rp.failing.run(range(20), transport=transport)
    (err,) = info.value.exceptions
    assert (err.block, err.item) == ("fail_on_7", "7")
    assert isinstance(err.__cause__, RemoteError)

    # And a local block before the remote ones: its own error, flat, as the local run raises it.
    workers.start("failing", "after")
    transport = RedisTransport(redis_url, prefix=redis_prefix, local={"fail_on_7"})
    with pytest.raises(ExceptionGroup) as info:
        await rp.failing.run(range(20), transport=transport)
    (err,) = info.value.exceptions
    assert (err.block, err.item) == ("fail_on_7", "7")
    assert isinstance(err.__cause__, ValueError)
