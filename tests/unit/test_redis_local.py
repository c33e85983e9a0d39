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
