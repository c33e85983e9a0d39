"""A CV-shaped pipeline: how close does aioflow get to the bottleneck bound?

Steps per item: IO 2 ms (``asyncio.sleep``) -> 2 ms of GIL-releasing numpy in a thread block ->
4 ms single-device "inference" (``time.sleep`` in a one-worker thread block) -> IO 1 ms.

The unbatched pipeline against its peers is ``bench_peers.py``'s part. This script measures
batching (the ``batching`` part of ``run_all.py``), side by side in one run:

* sequential: the four steps one after the other per item, a plain loop;
* aioflow batched: inference batched (4 ms + 0.5 ms per item, up to 8 per call, ``max_wait=0``)
  and the upstream blocks widened (IO 16, numpy 4 threads);
* hand-written batched: the hand-written ``asyncio.Queue`` pipeline with the same widths, its
  model stage taking every item ready (up to 8) after each call, the batch run through
  ``run_in_executor``;
* the ceilings of the batched pipeline: the numpy step alone on 4 threads, back to back (what
  the machine's cores allow upstream of the model), and the model alone on full batches of 8;
* the same three with the numpy step replaced by a 2 ms ``time.sleep`` (no CPU used): the
  model is then the bottleneck.

    python benchmarks/bench_cv_pipeline.py [--quick] [--reps 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
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


def sleep_step(x: int) -> int:
    time.sleep(0.002)  # as long as the numpy step, without using the CPU
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


async def sequential(n: int, step: Callable[[int], int] | None = None) -> list[int]:
    loop = asyncio.get_running_loop()
    step = step or cpu_step
    out = []
    with ThreadPoolExecutor(2) as pool:
        for i in range(n):
            x = await io_in(i)
            x = await loop.run_in_executor(pool, step, x)
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


async def handwritten_batched(
    n: int, step: Callable[[int], int] | None = None, max_size: int = 8
) -> list[int]:
    """The hand-written pipeline with ``aioflow_batched``'s widths; its model stage waits for
    one item, takes every other one ready (up to ``max_size``) and runs the batch in its thread.
    Outputs are sorted at the end, as for ``handwritten``."""
    loop = asyncio.get_running_loop()
    step = step or cpu_step
    stop = object()
    q = [asyncio.Queue[Any](maxsize=64) for _ in range(5)]
    cpu_pool = ThreadPoolExecutor(4)
    gpu_pool = ThreadPoolExecutor(1)
    out: list[int] = []

    async def source() -> None:
        for i in range(n):
            await q[0].put(i)
        await q[0].put(stop)

    async def stage(i: int, fn: Callable[[Any], Any], width: int) -> None:
        async def worker() -> None:
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

    async def cpu(x: int) -> int:
        return await loop.run_in_executor(cpu_pool, step, x)

    async def model() -> None:
        src, dst = q[2], q[3]
        done = False
        while not done:
            batch = [await src.get()]
            while len(batch) < max_size and not src.empty():
                batch.append(src.get_nowait())
            if batch[-1] is stop:
                batch.pop()
                done = True
            if batch:
                for y in await loop.run_in_executor(gpu_pool, infer_batch, batch):
                    await dst.put(y)
        await dst.put(stop)

    async def sink() -> None:
        while (x := await q[4].get()) is not stop:
            out.append(x)

    async with asyncio.TaskGroup() as tg:
        tg.create_task(source())
        tg.create_task(stage(0, io_in, 16))
        tg.create_task(stage(1, cpu, 4))
        tg.create_task(model())
        tg.create_task(stage(3, io_out, 16))
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


def aioflow_batched(step: Callable[[int], int] | None = None) -> af.Pipeline:
    return af.Pipeline(
        af.block(name="io_in", workers=16)(io_in),
        af.block(name="cpu", workers=4)(step or cpu_step),
        af.block(name="infer", batch=af.Batch(max_size=8, max_wait=0.0))(infer_batch),
        af.block(name="io_out", workers=16)(io_out),
        name="cv_batched",
    )


async def numpy_alone(n: int) -> list[int]:
    """The numpy step alone on 4 threads, back to back: the most the machine's cores let the
    batched pipeline's upstream deliver."""
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(4) as pool:
        return list(
            await asyncio.gather(*(loop.run_in_executor(pool, cpu_step, i) for i in range(n)))
        )


async def model_alone(n: int, max_size: int = 8) -> list[int]:
    """The batched model alone on full batches, back to back: the model's own ceiling."""
    loop = asyncio.get_running_loop()
    out: list[int] = []
    with ThreadPoolExecutor(1) as pool:
        for i in range(0, n, max_size):
            out += await loop.run_in_executor(
                pool, infer_batch, list(range(i, min(n, i + max_size)))
            )
    return out


SLEEP = ", 2 ms sleep"


def batching_variants(
    n: int,
) -> tuple[dict[str, Callable[[], Awaitable[list[int]]]], dict[str, af.Pipeline]]:
    pipes = {
        "aioflow batched": aioflow_batched(),
        f"aioflow batched{SLEEP}": aioflow_batched(sleep_step),
    }
    variants: dict[str, Callable[[], Awaitable[list[int]]]] = {
        "sequential": lambda: sequential(n),
        "numpy step alone, 4 threads": lambda: numpy_alone(n),
        "model alone, batches of 8": lambda: model_alone(n),
        "aioflow batched": lambda: pipes["aioflow batched"].run(range(n)),
        "hand-written batched": lambda: handwritten_batched(n),
        f"sequential{SLEEP}": lambda: sequential(n, sleep_step),
        f"aioflow batched{SLEEP}": lambda: pipes[f"aioflow batched{SLEEP}"].run(range(n)),
        f"hand-written batched{SLEEP}": lambda: handwritten_batched(n, sleep_step),
    }
    return variants, pipes


async def batching_on_loop(n: int, reps: int) -> dict[str, Any]:
    variants, pipes = batching_variants(n)
    names = list(variants)
    rates: dict[str, list[float]] = {v: [] for v in names}
    batch_sizes: dict[str, list[float]] = {name: [] for name in pipes}
    for rep in range(reps):
        order = names[rep % len(names) :] + names[: rep % len(names)]
        for v in order:
            t0 = time.perf_counter()
            out = await variants[v]()
            dt = time.perf_counter() - t0
            if out != list(range(n)):
                msg = f"{v}: wrong outputs ({len(out)} items)"
                raise AssertionError(msg)
            rates[v].append(n / dt)
            if v in pipes:
                batch_sizes[v].append(pipes[v].statistics()["infer"].mean_batch_size)
            gc.collect()
    med = {v: statistics.median(r) for v, r in rates.items()}
    seq = {v: med[f"sequential{SLEEP}" if v.endswith(SLEEP) else "sequential"] for v in names}
    pairs = {
        "numpy": ("aioflow batched", "hand-written batched"),
        "sleep": (f"aioflow batched{SLEEP}", f"hand-written batched{SLEEP}"),
    }
    return {
        "items": n,
        "reps": reps,
        "items_per_s": med,
        "vs_sequential": {v: med[v] / seq[v] for v in names},
        # aioflow over the hand-written loop, per repetition (the two ran back to back).
        "aioflow_over_handwritten": {
            k: [a / h for a, h in zip(rates[af_], rates[hw], strict=True)]
            for k, (af_, hw) in pairs.items()
        },
        "mean_batch": {v: statistics.median(b) for v, b in batch_sizes.items()},
        "runs": rates,
    }


def run(*, quick: bool, reps: int = 5) -> dict[str, Any]:
    global _DATA
    _DATA = calibrate()
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(batching_on_loop(150 if quick else 500, reps))


def print_batching(res: dict[str, Any]) -> None:
    print(f"batching, {res['items']} items, medians of {res['reps']} (items/s)")
    for v, rate in res["items_per_s"].items():
        extra = f"   mean batch {res['mean_batch'][v]:.1f}" if v in res["mean_batch"] else ""
        print(f"  {v:36} {rate:8.1f}   vs sequential {res['vs_sequential'][v]:5.2f}x{extra}")
    for k, ratios in res["aioflow_over_handwritten"].items():
        print(
            f"  aioflow / hand-written batched ({k}): median {statistics.median(ratios):.3f}, "
            f"runs {', '.join(f'{r:.2f}' for r in ratios)}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="150 items")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--json", help="write the results to this file")
    args = parser.parse_args()
    res = run(quick=args.quick, reps=args.reps)
    print_batching(res)
    if args.json:
        meta = {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "numpy": np.__version__,
            "aioflow": af.__version__,
            "date": time.strftime("%Y-%m-%d"),
        }
        with open(args.json, "w") as fh:
            json.dump({"meta": meta, **res}, fh, indent=2)


if __name__ == "__main__":
    main()
