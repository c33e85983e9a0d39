"""Pipelines the Redis tests run in worker processes (imported by name by the workers)."""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING

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
async def crash_on_3(x: int) -> int:
    if x == 3:
        os._exit(1)  # the worker process dies holding the item
    return x


poisoned = af.Pipeline(crash_on_3, name="poisoned")


# Leaky edges across streams: a slow block behind a drop_oldest / drop_newest / max_age edge.
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


@af.block(max_age=0.3)
async def fresh(x: int) -> int:
    await asyncio.sleep(_lag_delay())
    return x


aging = af.Pipeline(fresh, name="aging")


# Frames on the wire (MsgpackCodec(frames="jpeg") / --frames jpeg).
@af.block
async def brighten(frame: Frame) -> Frame:
    return frame.with_image(np.clip(frame.image.astype(np.int16) + 10, 0, 255).astype(np.uint8))


framepipe = af.Pipeline(brighten, name="framepipe")


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
