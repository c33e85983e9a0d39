"""A poison pill (an item that kills its worker process) fails alone: the items sent with it
(one burst entry, concurrent submit()s) or held beside it in the same worker are answered
(real redis-server, real worker processes that really die: os._exit)."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import msgpack
import pytest
import redis_pipelines as rp
from conftest import Workers, only_block_error, pipeline_keys

import aioflow as af
from aioflow.transport.redis import RedisTransport, connect

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: (pipeline, block, worker options): the pill is item 3 of 0..7
PLAIN = ("poisoned", "crash_on_3", ("--claim-idle", "0.3", "--max-deliveries", "2"))
KEYED = ("poisoned_keyed", "crash_keyed", ("--lease-ttl", "0.5", "--max-deliveries", "2"))
CASES = [pytest.param(PLAIN, id="plain"), pytest.param(KEYED, id="keyed")]


@asynccontextmanager
async def one_worker_alive(
    workers: Workers, pipeline: str, block: str, extra: tuple[str, ...]
) -> AsyncIterator[Callable[[], int]]:
    """Keep one worker of ``block`` serving: a new one as soon as the last died. Yields a
    function that says how many died so far."""
    deaths = 0

    def start() -> subprocess.Popen[str]:
        return workers.start(pipeline, block, extra=("--log-level", "INFO", *extra))

    async def keep() -> None:
        nonlocal deaths
        proc = start()
        while True:
            if proc.poll() is not None:
                deaths += 1
                proc = start()
            await asyncio.sleep(0.05)

    keeper = asyncio.create_task(keep())
    try:
        yield lambda: deaths
    finally:
        keeper.cancel()
        await asyncio.gather(keeper, return_exceptions=True)


async def dead_letter_paths(redis_url: str, redis_prefix: str, pipeline: str) -> list[object]:
    """The path of each item in the dead-letter stream (a burst's: its list of paths)."""
    client = connect(redis_url)
    try:
        dead = await client.xrange(pipeline_keys(redis_prefix, pipeline).dead)
    finally:
        await client.aclose()
    found: list[object] = []
    for _, fields in dead:
        meta = msgpack.unpackb(fields[b"original_m"])
        found.append(meta.get("p", meta.get("b")))
    return found


@pytest.mark.parametrize("case", CASES)
async def test_a_poison_pill_among_concurrent_submits_fails_alone(
    redis_url: str, redis_prefix: str, workers: Workers, case: tuple[str, str, tuple[str, ...]]
) -> None:
    # Eight concurrent submit()s go in one burst entry (plain) or one entry each in the
    # partitions of their keys (keyed: 1, 3, 5, 7 share one); item 3 kills every worker that
    # runs it. Before the quarantine, the items sent or held with it were delivered again with
    # it and reached max_deliveries too: all eight failed "delivered 3 times".
    pipeline, block, extra = case
    pipe = getattr(rp, pipeline)
    transport = RedisTransport(redis_url, prefix=redis_prefix)
    async with (
        one_worker_alive(workers, pipeline, block, extra) as deaths,
        pipe.open(transport=transport) as running,
    ):
        found = await asyncio.gather(*(running.submit(x) for x in range(8)), return_exceptions=True)
    pill = found[3]
    assert isinstance(pill, af.BlockError), repr(pill)
    assert pill.block == block
    assert "delivered 3 times" in str(pill)
    assert [x for i, x in enumerate(found) if i != 3] == [0, 1, 2, 4, 5, 6, 7], found
    assert deaths() >= 2
    # The pill alone went to the dead-letter stream, not the entry it came in.
    assert await dead_letter_paths(redis_url, redis_prefix, pipeline) == [[3]]


@pytest.mark.parametrize("case", CASES)
async def test_a_poison_pill_in_a_run_fails_the_run_with_its_own_error(
    redis_url: str, redis_prefix: str, workers: Workers, case: tuple[str, str, tuple[str, ...]]
) -> None:
    # run() stops at the first failure: it is the pill's (before, the first item of the
    # pill's burst failed first, with the pill's error), and nothing else is dead-lettered.
    pipeline, block, extra = case
    pipe = getattr(rp, pipeline)
    transport = RedisTransport(redis_url, prefix=redis_prefix)
    async with one_worker_alive(workers, pipeline, block, extra):
        with pytest.raises(ExceptionGroup) as info:
            await pipe.run(range(8), transport=transport)
        # The same workers serve the next run, which holds no pill.
        assert await pipe.run([0, 1, 2, 4, 5], transport=transport) == [0, 1, 2, 4, 5]
    err = only_block_error(info.value)
    assert err.block == block
    assert err.item == "3"
    assert "delivered 3 times" in str(err)
    assert await dead_letter_paths(redis_url, redis_prefix, pipeline) == [[3]]
