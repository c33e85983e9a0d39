"""``RedisTransport(local=...)`` checked before anything connects."""

from __future__ import annotations

import pytest

import aioflow as af
from aioflow.transport.redis import RedisTransport


@af.block
async def a(x: int) -> int:
    return x


@af.block
async def b(x: int) -> int:
    return x


async def test_local_naming_no_stage_is_a_graph_error_before_connecting() -> None:
    pipe = af.Pipeline(a, b, name="ab")
    # (nothing listens on port 1: the error must come before any connection)
    transport = RedisTransport("redis://127.0.0.1:1/0", local={"b", "nope"})
    with pytest.raises(af.GraphError, match=r"local=\['nope'\] names no top-level stage"):
        await pipe.run([1], transport=transport)
    with pytest.raises(af.GraphError, match="names no top-level stage"):
        async with pipe.open(transport=transport):
            pass


async def test_every_block_kept_local_runs_in_the_caller_without_redis() -> None:
    pipe = af.Pipeline(a, b, name="ab2")
    transport = RedisTransport("redis://127.0.0.1:1/0", local={"a", "b"})
    assert await pipe.run(range(5), transport=transport) == [0, 1, 2, 3, 4]
    assert pipe.statistics()["b"].received == 5
    async with pipe.open(transport=transport) as running:
        assert await running.submit(7) == 7


async def test_a_remote_block_shared_by_stream_warns_that_redis_shares_it_only_in_a_worker(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """fair=, per_key=, serve='newest' and Batch(max_per_key=) cannot act on a Redis stream
    (trimmed and read first in, first out): said when the run starts, not ignored."""
    import logging

    from aioflow.transport.redis import _Session

    @af.block(overflow="drop_oldest", fair=lambda x: x % 2)
    async def fair(x: int) -> int:
        return x

    @af.block(overflow="drop_oldest", serve="newest")
    async def newest(x: int) -> int:
        return x

    pipe = af.Pipeline(a, fair, newest, name="shared")
    transport = RedisTransport("redis://127.0.0.1:1/0")
    with caplog.at_level(logging.WARNING, logger="aioflow.transport"):
        _Session(transport, pipe, pipe.stages, ordered=True)  # (connects only when it runs)
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 2
    assert warned[0].startswith("block 'fair': fair=, per_key=")
    assert warned[1].startswith("block 'newest':")
    assert all("only within each worker" in m for m in warned)
