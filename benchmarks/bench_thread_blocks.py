"""Per-item cost of thread blocks: what a plain ``def`` block costs beyond its own work.

K trivial plain functions (``lambda x: x``) in a row, N items, on uvloop, side by side in one
process, the order rotating each repetition:

* ``aioflow, workers=1``: each block's thread takes its next item itself (``_engine/pulling.py``);
* ``aioflow, workers=2``: the general path, one ``run_in_executor`` per item and worker;
* ``hand-written``: one task per stage reading an ``asyncio.Queue(64)`` and awaiting
  ``loop.run_in_executor`` on a one-thread pool per stage, what people write by hand.

Reported: microseconds per item per stage (medians), and the ratios.

    python benchmarks/bench_thread_blocks.py [--items 20000] [--stages 3] [--reps 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import uvloop

import aioflow as af


def identity(x: Any) -> Any:
    return x


async def with_aioflow(n: int, stages: int, workers: int) -> float:
    blocks = [af.block(identity, name=f"s{i}", workers=workers) for i in range(stages)]
    pipe = af.Pipeline(*blocks)
    t0 = time.perf_counter()
    out = await pipe.run(range(n))
    dt = time.perf_counter() - t0
    if out != list(range(n)):
        msg = "aioflow: wrong outputs"
        raise AssertionError(msg)
    return dt


async def handwritten(n: int, stages: int) -> float:
    loop = asyncio.get_running_loop()
    stop = object()
    queues = [asyncio.Queue[Any](64) for _ in range(stages + 1)]
    pools = [ThreadPoolExecutor(1) for _ in range(stages)]
    out: list[Any] = []

    async def source() -> None:
        for i in range(n):
            await queues[0].put(i)
        await queues[0].put(stop)

    def stage(i: int) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            while (x := await queues[i].get()) is not stop:
                await queues[i + 1].put(await loop.run_in_executor(pools[i], identity, x))
            await queues[i + 1].put(stop)

        return run

    async def sink() -> None:
        while (x := await queues[stages].get()) is not stop:
            out.append(x)

    t0 = time.perf_counter()
    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(source())
            for i in range(stages):
                tg.create_task(stage(i)())
            tg.create_task(sink())
    finally:
        for pool in pools:
            pool.shutdown()
    dt = time.perf_counter() - t0
    if out != list(range(n)):
        msg = "hand-written: wrong outputs"
        raise AssertionError(msg)
    return dt


async def main(args: argparse.Namespace) -> None:
    n, k = args.items, args.stages
    variants: dict[str, Callable[[], Awaitable[float]]] = {
        "aioflow, workers=1": lambda: with_aioflow(n, k, 1),
        "aioflow, workers=2": lambda: with_aioflow(n, k, 2),
        "hand-written": lambda: handwritten(n, k),
    }
    names = list(variants)
    times: dict[str, list[float]] = {name: [] for name in names}
    await with_aioflow(1000, k, 1)  # warm up
    for rep in range(args.reps):
        for name in names[rep % len(names) :] + names[: rep % len(names)]:
            times[name].append(await variants[name]())
    per = {name: statistics.median(ts) / n / k * 1e6 for name, ts in times.items()}
    print(f"{k} trivial thread blocks, {n} items, uvloop, medians of {args.reps}")
    for name, us in per.items():
        ratio = per["hand-written"] / us
        print(f"  {name:20} {us:7.2f} us per item per stage   {ratio:5.1f}x hand-written")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--stages", type=int, default=3)
    parser.add_argument("--reps", type=int, default=5)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main(parser.parse_args()))
