"""A CV-shaped pipeline: how close does aioflow get to the bottleneck bound?

Steps per item: IO 2 ms (``asyncio.sleep``) -> 2 ms of GIL-releasing numpy in a thread block ->
4 ms single-device "inference" (``time.sleep`` in a one-worker thread block) -> IO 1 ms.

* bound: the inference step alone, back to back (the slowest step sets the pace);
* sequential: the four steps one after the other per item, a plain loop;
* hand-written: one task per stage, ``asyncio.Queue(64)`` edges, thread steps via
  ``run_in_executor``, IO steps with 4 tasks each;
* aioflow: the same steps as blocks;
* aioflow batched: inference batched (4 ms + 0.5 ms per item, up to 8 per call) and the
  upstream blocks widened.

    python benchmarks/bench_cv_pipeline.py [--items 500] [--reps 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

import aioflow as af

_DATA = np.zeros(1)


def calibrate(target_s: float = 0.002) -> np.ndarray:
    """An array whose np.sort takes about ``target_s`` (np.sort releases the GIL)."""
    size = 20_000
    rng = np.random.default_rng(0)
    while True:
        data = rng.random(size)
        t0 = time.perf_counter()
        for _ in range(5):
            np.sort(data)
        dt = (time.perf_counter() - t0) / 5
        if dt >= target_s:
            return data
        size = int(size * max(1.2, target_s / max(dt, 1e-6)))


def cpu_step(x: int) -> int:
    np.sort(_DATA)  # about 2 ms of work with the GIL released
    return x


def infer_one(x: int) -> int:
    time.sleep(0.004)
    return x


def infer_batch(xs: list[int]) -> list[int]:
    time.sleep(0.004 + 0.0005 * len(xs))
    return list(xs)


async def io_in(x: int) -> int:
    await asyncio.sleep(0.002)
    return x


async def io_out(x: int) -> int:
    await asyncio.sleep(0.001)
    return x


async def bound(n: int) -> list[int]:
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(1) as pool:
        return [await loop.run_in_executor(pool, infer_one, i) for i in range(n)]


async def sequential(n: int) -> list[int]:
    loop = asyncio.get_running_loop()
    out = []
    with ThreadPoolExecutor(2) as pool:
        for i in range(n):
            x = await io_in(i)
            x = await loop.run_in_executor(pool, cpu_step, x)
            x = await loop.run_in_executor(pool, infer_one, x)
            out.append(await io_out(x))
    return out


async def handwritten(n: int) -> list[int]:
    """What people write today: queues, tasks, sentinels. Order is not kept by the wide stages,
    so outputs are sorted at the end for the check."""
    loop = asyncio.get_running_loop()
    stop = object()
    q = [asyncio.Queue[Any](maxsize=64) for _ in range(5)]
    cpu_pool = ThreadPoolExecutor(2)
    gpu_pool = ThreadPoolExecutor(1)
    out: list[int] = []

    async def source() -> None:
        for i in range(n):
            await q[0].put(i)
        await q[0].put(stop)

    async def stage(i: int, fn: Callable[[Any], Any], width: int) -> None:
        done = 0

        async def worker() -> None:
            nonlocal done
            while True:
                x = await q[i].get()
                if x is stop:
                    await q[i].put(stop)  # let the sibling workers see it
                    return
                await q[i + 1].put(await fn(x))

        async with asyncio.TaskGroup() as tg:
            for _ in range(width):
                tg.create_task(worker())
        await q[i + 1].put(stop)
        del done

    async def in_thread(pool: ThreadPoolExecutor, fn: Callable[[int], int], x: int) -> int:
        return await loop.run_in_executor(pool, fn, x)

    async def sink() -> None:
        while (x := await q[4].get()) is not stop:
            out.append(x)

    async with asyncio.TaskGroup() as tg:
        tg.create_task(source())
        tg.create_task(stage(0, io_in, 4))
        tg.create_task(stage(1, lambda x: in_thread(cpu_pool, cpu_step, x), 2))
        tg.create_task(stage(2, lambda x: in_thread(gpu_pool, infer_one, x), 1))
        tg.create_task(stage(3, io_out, 4))
        tg.create_task(sink())
    cpu_pool.shutdown()
    gpu_pool.shutdown()
    return sorted(out)


def aioflow_pipeline() -> af.Pipeline:
    return af.Pipeline(
        af.block(name="io_in", workers=4)(io_in),
        af.block(name="cpu", workers=2)(cpu_step),
        af.block(name="infer", workers=1)(infer_one),
        af.block(name="io_out", workers=4)(io_out),
        name="cv",
    )


def aioflow_batched() -> af.Pipeline:
    return af.Pipeline(
        af.block(name="io_in", workers=16)(io_in),
        af.block(name="cpu", workers=4)(cpu_step),
        af.block(name="infer", batch=af.Batch(max_size=8, max_wait=0.0))(infer_batch),
        af.block(name="io_out", workers=16)(io_out),
        name="cv_batched",
    )


def timed(fn: Callable[[], Coroutine[Any, Any, list[int]]], n: int) -> float:
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        t0 = time.perf_counter()
        out = runner.run(fn())
        dt = time.perf_counter() - t0
    if out != list(range(n)):
        msg = f"wrong outputs ({len(out)} items)"
        raise AssertionError(msg)
    return n / dt


def main() -> None:
    global _DATA
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=500)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--json", help="write the results to this file")
    args = parser.parse_args()
    n = args.items
    _DATA = calibrate()
    pipe = aioflow_pipeline()
    batched = aioflow_batched()
    variants: dict[str, Callable[[], Coroutine[Any, Any, list[int]]]] = {
        "bound": lambda: bound(n),
        "sequential": lambda: sequential(n),
        "hand-written": lambda: handwritten(n),
        "aioflow": lambda: pipe.run(range(n)),
        "aioflow batched": lambda: batched.run(range(n)),
    }
    rates: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.reps):
        for name, fn in variants.items():
            rates[name].append(timed(fn, n))
    med = {k: statistics.median(v) for k, v in rates.items()}
    print(f"{n} items, medians of {args.reps} alternating repetitions (items/s)")
    for name in variants:
        print(
            f"  {name:16} {med[name]:8.1f}   of bound {med[name] / med['bound']:5.2f}"
            f"   vs sequential {med[name] / med['sequential']:5.2f}x"
        )
    infer = batched.statistics()["infer"]
    print(f"  batched inference: mean batch {infer.mean_batch_size:.1f}, {infer.batches} batches")
    if args.json:
        meta = {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "numpy": np.__version__,
            "aioflow": af.__version__,
            "date": time.strftime("%Y-%m-%d"),
        }
        with open(args.json, "w") as fh:
            json.dump({"meta": meta, "items": n, "items_per_s": med, "runs": rates}, fh, indent=2)


if __name__ == "__main__":
    main()
