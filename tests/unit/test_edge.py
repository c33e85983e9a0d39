"""The edge protocol: the in-process channel is one implementation of it."""

from __future__ import annotations

from aioflow._engine.channel import Channel
from aioflow._engine.edge import Edge, Transport


def test_the_channel_is_an_edge() -> None:
    edge: Edge[int] = Channel(4)
    assert isinstance(edge, Edge)


def test_the_redis_transport_is_a_transport() -> None:
    from aioflow.transport.redis import RedisTransport

    assert isinstance(RedisTransport("redis://localhost:6379/0"), Transport)
