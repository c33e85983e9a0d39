"""Burst entries: several items of one run in one stream entry (real redis-server, real worker
processes). Every item of a burst is answered on its own; acknowledgement, reclaim and dead
letters work per entry, and nothing is lost or doubled at the caller."""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

import msgpack
import pytest
import redis_pipelines as rp
from conftest import Workers

from aioflow.transport.codec import MsgpackCodec
from aioflow.transport.messages import (
    Keys,
    error_from_data,
    graph_signature,
    pack_burst,
    parse_entry,
    reply_answers,
)
from aioflow.transport.redis import RedisTransport, _Credit, burst_size, connect, cut_bursts

pytestmark = pytest.mark.integration


async def _answers(client: Any, stream: str, wanted: int) -> dict[tuple[int, ...], Any]:
    """``{path: (kind, meta, value)}`` of the answers on ``stream``, once ``wanted`` came."""
    found: dict[tuple[int, ...], Any] = {}
    deadline = time.monotonic() + 30
    while len(found) < wanted and time.monotonic() < deadline:
        found.clear()
        for _, fields in await client.xrange(stream):
            for answer in reply_answers(fields):
                meta = msgpack.unpackb(answer[b"m"])
                if meta.get("k") != "wake":
                    found[tuple(meta["p"])] = (meta["k"], meta, answer[b"v"])
        await asyncio.sleep(0.05)
    return found


async def test_a_burst_with_one_malformed_item_answers_the_others_and_dead_letters_that_one(
    redis_url: str, redis_prefix: str, workers: Workers
) -> None:
    graph_hash, _ = graph_signature("chain", rp.chain.stages)
    keys = Keys(redis_prefix, "chain", graph_hash)
    codec = MsgpackCodec()
    reply = keys.reply("hand-made")
    client = connect(redis_url)
    try:
        await client.xadd(reply, {b"m": msgpack.packb({"k": "wake"}), b"v": b""})
        burst = pack_burst(
            "hand-made",
            reply,
            "square",
            "msgpack",
            [(0,), (1,), (2,)],
            [codec.encode(3), b"\xc1 not msgpack", codec.encode(5)],
        )
        await client.set(keys.graph, graph_hash)
        await client.xadd(keys.inbox("double"), burst)
        proc = workers.start("chain", "double,inc,square")
        answers = await _answers(client, reply, 3)
        dead = await client.xrange(keys.dead)
    finally:
        await client.aclose()
    # The good items of the burst are answered as if sent alone...
    assert answers[(0,)][0] == "out"
    assert codec.decode(answers[(0,)][2]) == [(2 * 3 + 1) ** 2]
    assert answers[(2,)][0] == "out"
    assert codec.decode(answers[(2,)][2]) == [(2 * 5 + 1) ** 2]
    # ...the bad one is an error for its caller, naming the block and why...
    kind, meta, _ = answers[(1,)]
    assert kind == "err"
    err = error_from_data(meta["e"])
    assert err.block == "double"
    assert "does not decode" in str(err)
    # ...and a dead letter of that item alone, with its position and its bytes.
    assert len(dead) == 1
    letter = dead[0][1]
    assert letter[b"position"] == b"1"
    assert letter[b"original_v"] == b"\xc1 not msgpack"
    assert b"does not decode" in letter[b"reason"]
    assert proc.poll() is None  # the worker survived it
    transport = RedisTransport(redis_url, prefix=redis_prefix)
    assert await rp.chain.run(range(4), transport=transport) == [1, 9, 25, 49]


def test_a_burst_entry_reads_back_as_its_items_in_order() -> None:
    codec = MsgpackCodec()
    fields = pack_burst("run", "to", "end", "msgpack", [(4,), (5, 1)], [codec.encode("a"), b""])
    entry = parse_entry(fields, codec)
    assert [m.path for m in entry.metas] == [(4,), (5, 1)]
    assert entry.values[0] == "a"
    assert set(entry.errors) == {1}  # empty bytes are not a msgpack item
    assert "does not decode" in entry.errors[1]


@pytest.mark.slow
async def test_a_burst_entry_of_a_sigkilled_worker_is_taken_over_nothing_lost_nothing_doubled(
    redis_url: str, redis_prefix: str, workers: Workers
) -> None:
    env = {"AIOFLOW_TEST_DELAY": "0.3"}
    info = ("--log-level", "INFO")
    victim = workers.start("slowpipe", "first,slow", env=env, extra=info)
    graph_hash, _ = graph_signature("slowpipe", rp.slowpipe.stages)
    inbox = Keys(redis_prefix, "slowpipe", graph_hash).inbox("first")
    client = connect(redis_url)
    transport = RedisTransport(redis_url, prefix=redis_prefix)
    items = list(range(60))
    while "pipeline 'slowpipe'" not in workers.output(victim):  # not serving yet
        await asyncio.sleep(0.02)
    run = asyncio.create_task(rp.slowpipe.run(items, transport=transport))
    try:
        # Wait until the victim holds an entry of several items, then kill it.
        held: list[int] = []
        deadline = time.monotonic() + 30
        while not any(n > 1 for n in held) and time.monotonic() < deadline:
            rows = await client.xpending_range(inbox, "aioflow", "-", "+", 100)
            held = []
            for row in rows:
                for _, fields in await client.xrange(inbox, row["message_id"], row["message_id"]):
                    held.append(len(parse_entry(fields, MsgpackCodec()).metas))
            await asyncio.sleep(0.01)
        assert any(n > 1 for n in held), held
        victim.kill()
        await asyncio.to_thread(victim.wait)
        steady = workers.start("slowpipe", "first,slow", claim_idle=0.5, env=env, extra=info)
        outputs = await asyncio.wait_for(run, 60)
    finally:
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)
        await client.aclose()
    assert victim.returncode == -signal.SIGKILL
    assert outputs == [2 * x + 1 for x in items]  # each once, in order
    assert "took over entry" in workers.output(steady)


def test_small_items_share_entries_and_frames_go_alone_within_the_same_item_bound() -> None:
    credit = _Credit("stream", 64, burst_size(64))
    small = [(i, b"x" * 100) for i in range(20)]
    assert [len(b) for b in cut_bursts(small, credit.fit(len(v) for _, v in small))] == [8, 8, 4]
    assert credit.capacity * credit.burst == 64  # 8 entries of 8 items
    frames = [(i, bytes(640 * 480 * 3)) for i in range(3)]
    assert [len(b) for b in cut_bursts(frames, credit.fit(len(v) for _, v in frames))] == [1, 1, 1]
    assert (credit.capacity, credit.burst) == (64, 1)  # 64 entries of one frame
