"""Pipelines the Redis tests run in worker processes (imported by name by the workers)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any

import numpy as np

import aioflow as af

if TYPE_CHECKING:
    from aioflow.io.video import Frame  # (not imported at run time: OpenCV is slow to load)


@af.block
async def double(x: int) -> int:
    return 2 * x


@af.block(workers=4)
async def inc(x: int) -> int:
    return x + 1


@af.block
async def square(x: int) -> int:
    return x * x


chain = af.Pipeline(double, inc, square, name="chain")


@af.block
async def explode(x: int):  # type: ignore[no-untyped-def]
    for i in range(x % 3):
        yield (x, i)


@af.block
async def label(pair: tuple[int, int]) -> str:
    return f"{pair[0]}.{pair[1]}"


@af.block
async def fail_on_7(x: int) -> int:
    if x == 7:
        raise ValueError(f"seven is not allowed: {x}")
    return x


fanout = af.Pipeline(explode, label, name="fanout")
failing = af.Pipeline(fail_on_7, inc.with_options(name="after"), name="failing")


@af.block
async def held_pair(held: af.Held[int, int]) -> tuple[int, int, int]:
    return held.item, held.result, held.age_items


# sample-and-hold in a worker: the Held outputs travel to the next segment
sampled = af.Pipeline(
    inc.with_options(name="feed"),
    af.every(square.with_options(name="sq"), n=3, key=lambda x: x % 2, name="every3"),
    held_pair,
    name="sampled",
)


@af.block(workers=8)
async def slow(x: int) -> int:
    await asyncio.sleep(float(os.environ.get("AIOFLOW_TEST_DELAY", "0.002")))
    return x + 1


slowpipe = af.Pipeline(double.with_options(name="first"), slow, name="slowpipe")


# The same name as `chain`, another graph: a worker of it must refuse to serve chain's callers.
chain_v2 = af.Pipeline(
    double.with_options(name="double"),
    inc.with_options(workers=2),
    square.with_options(name="square"),
    name="chain",
)


@af.block
async def fast(x: int) -> int:
    return x


@af.block(queue_size=8)
async def crawl(x: int) -> int:
    await asyncio.sleep(0.02)
    return x * 10


backpressure = af.Pipeline(fast, crawl, name="backpressure")


@af.block
async def blob(x: int) -> bytes:
    """A value over 64 KiB (written as frames are: XADD, and the bound checked in the same
    MULTI)."""
    return bytes([x % 256]) * 100_000


@af.block(queue_size=4)
async def crawl_blob(b: bytes) -> int:
    await asyncio.sleep(0.02)
    return b[0] + len(b)


# fast workers feed a slow block frame-sized values; its stream holds 4 entries of one each
big_backpressure = af.Pipeline(blob, crawl_blob, name="big_backpressure")


# A keyed slow block: its input is 16 partitions of max(2, ceil(8 / 16)) = 2 entries each
# (parity: keys 0 and 1).
@af.block(key=lambda x: x % 2, state=dict, queue_size=8)
async def crawl_keyed(x: int, state: dict[str, int]) -> tuple[int, int]:
    await asyncio.sleep(0.02)
    state["n"] = state.get("n", 0) + 1
    return x, state["n"]


# (feed's input holds entries of one item: a worker writes an entry's outputs to the
# partitions whole, with its acknowledgement, so one entry of 100 would pass a bound of 2)
keyed_backpressure = af.Pipeline(
    fast.with_options(name="feed", queue_size=8), crawl_keyed, name="keyed_backpressure"
)


@af.block
async def kept(x: Any) -> int:
    """A block that kept the default queue_size: on Redis its edge is deeper."""
    return len(x) if isinstance(x, bytes) else int(x)


unsized = af.Pipeline(kept, name="unsized")


@af.block
async def crash_on_3(x: int) -> int:
    if x == 3:
        os._exit(1)  # the worker process dies holding the item
    return x


poisoned = af.Pipeline(crash_on_3, name="poisoned")


# Leaky edges across streams: a slow block behind a drop_oldest / drop_newest / max_age edge.
if os.environ.get("AIOFLOW_TEST_DIE_BEFORE_DROP"):
    # Fault injection: this worker is SIGKILLed the first time its trim of the next stream
    # has found entries beyond the bound, before it deletes them and answers their callers.
    import signal

    from aioflow.transport import redis as _transport

    async def _die(*args: Any, **kwargs: Any) -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    _transport.Trims.drop = _die  # type: ignore[assignment,method-assign]


def _lag_delay() -> float:
    return float(os.environ.get("AIOFLOW_TEST_DELAY", "0.05"))


@af.block(queue_size=4, overflow="drop_oldest")
async def lag(x: int) -> int:
    await asyncio.sleep(_lag_delay())
    return x


leaky = af.Pipeline(lag, name="leaky")
leaky_behind = af.Pipeline(
    fast.with_options(name="feed"), lag.with_options(name="lag"), name="leaky2"
)
leaky_newest = af.Pipeline(
    lag.with_options(name="lag", overflow="drop_newest"), name="leaky_newest"
)
# queue_size 32: producers write bursts of 4 items per entry (burst_size), 8 entries waiting
leaky_bursts = af.Pipeline(lag.with_options(name="lag", queue_size=32), name="leaky3")
leaky_bursts_behind = af.Pipeline(
    fast.with_options(name="feed"), lag.with_options(name="lag", queue_size=32), name="leaky4"
)


def parity(x: int) -> int:
    return x % 2  # (keys 0 and 1 land in partitions 0 and 1 of 2)


# A leaky keyed block: its input is two partitions of ceil(8 / 2) = 4 entries each.
@af.block(key=parity, queue_size=8, overflow="drop_oldest")
async def lag_keyed(x: int) -> int:
    await asyncio.sleep(_lag_delay())
    return x


leaky_keyed = af.Pipeline(lag_keyed, name="leaky_keyed")
leaky_keyed_behind = af.Pipeline(fast.with_options(name="feed"), lag_keyed, name="leaky_keyed2")
leaky_keyed_newest = af.Pipeline(
    lag_keyed.with_options(overflow="drop_newest"), name="leaky_keyed_newest"
)


@af.block(key=parity, state=dict, queue_size=8, overflow="drop_oldest", workers=2)
async def lossy_count(x: int, state: dict[str, int]) -> tuple[int, int, int]:
    """A running count of the items of a key that were not dropped."""
    await asyncio.sleep(_lag_delay())
    state["n"] = state.get("n", 0) + 1
    return parity(x), x, state["n"]


lossy = af.Pipeline(lossy_count, name="lossy")


@af.block(key=parity, state=dict, max_age=0.5)
async def stale_count(x: int, state: dict[str, int]) -> tuple[int, int, int]:
    """A running count of the items of a key that were fresh enough (max_age) to run."""
    state["n"] = state.get("n", 0) + 1
    return parity(x), x, state["n"]


staling = af.Pipeline(stale_count, name="staling")


@af.block(max_age=0.3)
async def fresh(x: int) -> int:
    await asyncio.sleep(_lag_delay())
    return x


aging = af.Pipeline(fresh, name="aging")
# the feed worker writes fresh's input as bursts (queue_size 64: 8 items per entry)
aging_behind = af.Pipeline(fast.with_options(name="feed"), fresh, name="aging2")
# keyed: fresh's input is partitions, one item per entry
aging_keyed = af.Pipeline(fresh.with_options(key=parity), name="aging_keyed")


# Frames on the wire (MsgpackCodec(frames="jpeg") / --frames jpeg).
@af.block
async def brighten(frame: Frame) -> Frame:
    return frame.with_image(np.clip(frame.image.astype(np.int16) + 10, 0, 255).astype(np.uint8))


framepipe = af.Pipeline(brighten, name="framepipe")


@af.block(key=lambda item: item[0], state=dict, workers=4)
async def count(item: tuple[str, int], state: dict[str, int]) -> tuple[str, int, int]:
    """A running count per key: the n-th item of a key (in the block's sequence) gets n."""
    key, seq = item
    trace = os.environ.get("AIOFLOW_TEST_TRACE")
    start = time.monotonic()
    await asyncio.sleep(float(os.environ.get("AIOFLOW_TEST_DELAY", "0.002")))
    state["n"] = state.get("n", 0) + 1
    if trace:
        # Who processed which key when (CLOCK_MONOTONIC is the same clock in every process).
        line = f"{os.getpid()} {key} {seq} {start} {time.monotonic()}\n"
        await asyncio.to_thread(_append, trace, line)
    return key, seq, state["n"]


def _append(path: str, line: str) -> None:
    with open(path, "a") as fh:
        fh.write(line)


# queue_size=64: the tests of the keyed count2 behind it kill a worker once the source has
# given 400 of its items, which the bound of tag's stream paces (the Redis default, 1024,
# would let the caller take them all before count2 holds any)
@af.block(queue_size=64)
async def tag(x: int) -> tuple[str, int]:
    return f"cam{x % 8}", x // 8


keyed = af.Pipeline(count, name="keyed")
tagged = af.Pipeline(tag, count.with_options(name="count2"), name="tagged")


def by_camera(item: tuple[str, int]) -> str:
    return item[0]


#: whether this process stalled already (AIOFLOW_TEST_STALL: once, not again when replayed)
_stalled: list[bool] = []


@af.block(key=by_camera, state=dict, workers=2)
async def again(item: tuple[str, int, int], state: dict[str, int]) -> tuple[str, int, int, int]:
    """A second running count per key, after a block keyed by the same function in its
    segment: its items come from that block's partitions, its state goes with their snapshots.

    With ``AIOFLOW_TEST_STALL=SECONDS`` and ``AIOFLOW_TEST_STALL_AT=SEQ``, the worker's whole
    loop stops once, at item SEQ of cam0 (a synchronous sleep: a process starved of CPU):
    its leases expire while it lives and holds items, and it takes its partitions back."""
    at = os.environ.get("AIOFLOW_TEST_STALL_AT")
    if at is not None and not _stalled and item[0] == "cam0" and item[1] == int(at):
        _stalled.append(True)
        time.sleep(float(os.environ.get("AIOFLOW_TEST_STALL", "2")))  # noqa: ASYNC251 - the point
    state["n"] = state.get("n", 0) + 1
    return (*item, state["n"])


twice = af.Pipeline(count.with_options(name="count3", key=by_camera), again, name="twice")


@af.block(key=lambda item: item[0], workers=4)
async def lane(item: tuple[str, int]) -> tuple[str, int]:
    """Keyed without a state: per-key order only (its partitions are not paused to snapshot)."""
    await asyncio.sleep(float(os.environ.get("AIOFLOW_TEST_DELAY", "0.002")))
    return item


lanes = af.Pipeline(lane, name="lanes")


@af.block(key=lambda x: x % 2)
async def crash_keyed(x: int) -> int:
    if x == 3:
        os._exit(1)  # the owner of 3's partition dies holding it, each time
    return x


poisoned_keyed = af.Pipeline(crash_keyed, name="poisoned_keyed")


# Blocks kept local in the middle (RedisTransport(local=...)): remote, caller, remote.
@af.block
async def spread(x: int):  # type: ignore[no-untyped-def]
    for i in range(x % 3):  # 0, 1 or 2 outputs
        yield x * 10 + i


@af.block
async def keep_odd(x: int):  # type: ignore[no-untyped-def]
    if x == 501:
        raise ValueError(f"{x} is not allowed")
    if x % 2:
        yield x
        if x % 4 == 3:
            yield -x


@af.block(workers=2)
async def show(x: int) -> str:
    return f"<{x}>"


sandwich = af.Pipeline(spread, keep_odd, show, name="sandwich")
layers = af.Pipeline(
    double.with_options(name="l1"),
    inc.with_options(name="l2"),
    square.with_options(name="l3"),
    inc.with_options(name="l4"),
    double.with_options(name="l5"),
    name="layers",
)


# The end of a run in workers: a keyed block whose evict() emits a summary per key.
def camera_of(item: tuple[str, int]) -> str:
    return item[0]


class Tally(af.Block[tuple[str, int], tuple[str, int, int]]):
    """A running count per key; when a key ends (the end of the stream), its total."""

    key = staticmethod(camera_of)
    workers = 2

    async def process(self, item: tuple[str, int], state: dict[str, int]) -> tuple[str, int, int]:
        await asyncio.sleep(float(os.environ.get("AIOFLOW_TEST_DELAY", "0.001")))
        state["n"] = state.get("n", 0) + 1
        return item[0], item[1], state["n"]

    async def evict(self, key: Hashable, state: dict[str, int]) -> list[tuple[str, int, int]]:
        await asyncio.sleep(float(os.environ.get("AIOFLOW_TEST_EVICT_DELAY", "0")))
        return [("total", -1, state["n"]), (str(key), -1, state["n"])]


@af.block
async def cam_of(x: int) -> tuple[str, int]:
    return f"cam{x % 5}", x // 5


@af.block
async def present(item: tuple[str, int, int]):  # type: ignore[no-untyped-def]
    if item[1] < 0:  # a summary: two lines
        yield f"{item[0]}={item[2]}"
        yield "--"
    else:
        yield f"{item[0]}#{item[1]}:{item[2]}"


tallied = af.Pipeline(Tally(name="tally"), name="tallied")
tallied_between = af.Pipeline(cam_of, Tally(name="tally"), present, name="tallied2")
# tally inside a segment (served as --blocks cam_of,tally): not partitioned
tallied_inside = af.Pipeline(cam_of, Tally(name="tally"), present, name="tallied3")


@af.block(timeout=0.3, workers=4)
async def hang_on_3(x: int) -> int:
    """Hangs on item 3 (a device that never answers); its timeout= gives up on it."""
    if x == 3:
        await asyncio.sleep(3600)
    return x


hanging = af.Pipeline(hang_on_3, name="hanging")


@af.block
async def always_fail(x: int) -> int:
    raise RuntimeError(f"refused: {x}")


refusing = af.Pipeline(always_fail, name="refusing")


class Hostile:
    """A key a block can find twice (its lane looked up, then made) and then not: its
    ``__hash__`` raises from its third call on, its ``==`` always; msgpack cannot write it and
    its ``repr`` raises (no partition by its bytes nor by its text)."""

    def __init__(self) -> None:
        self.hashes = 0

    def __hash__(self) -> int:
        self.hashes += 1
        if self.hashes > 2:
            msg = "this key was hashed twice already"
            raise RuntimeError(msg)
        return 7

    def __eq__(self, other: object) -> bool:
        msg = "keys of this kind cannot be compared"
        raise RuntimeError(msg)

    def __repr__(self) -> str:
        msg = "keys of this kind cannot be shown"
        raise RuntimeError(msg)


def hostile_key(x: int) -> Hashable:
    """A hostile key (:class:`Hostile`) for a negative item, its parity for the others."""
    return Hostile() if x < 0 else x % 2


@af.block(key=hostile_key, state=dict)
async def tally(x: int, state: dict[str, int]) -> tuple[int, int]:
    state["n"] = state.get("n", 0) + 1
    return x, state["n"]


hostile = af.Pipeline(tally, name="hostile")
