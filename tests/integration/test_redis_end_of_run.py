"""The end of a caller's run for keyed blocks in workers: each key's ``evict()`` runs at the end
of the caller's stream and its outputs reach the caller where a local run puts them (after the
items' outputs), with real redis-server and real worker processes."""

from __future__ import annotations

import pytest
import redis_pipelines as rp
from conftest import Workers

from aioflow.transport.redis import RedisTransport

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
