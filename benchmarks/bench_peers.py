"""aioflow against its peers: per-item overhead, and efficiency on a CV-shaped pipeline.

Overhead: K trivial async stages (``x + 1``), N items, for every library on the same event loop
(one loop per loop kind, every variant run on it in turn, the order rotated each repetition):

* ``sequential``: ``for`` over the items, ``await`` each stage in turn (the floor: no pipelining);
* ``hand-written``: one task per stage, ``asyncio.Queue(64)`` edges, a sentinel at the end;
* ``aioflow``: ``Pipeline(*K blocks).run(range(N))``;
* ``pypeln``: ``pl.task.map(inc, stage, workers=1, maxsize=64)`` chained, async-generator source;
* ``aiostream``: ``stream.iterate(source) | pipe.map(inc, task_limit=2)`` chained
  (``task_limit=1`` runs each stage inline, one item at a time: no pipelining, shown for
  reference as ``aiostream (task_limit=1)``);
* ``streamz``: ``Stream(asynchronous=True).map_async(inc)`` chained, ``await source.emit(x)``.

Every output list is checked (every value present, and whether the order was kept). The fast
variants run N items, the slow peers N/5 (each run still takes tens of milliseconds or more, so
start-up costs stay in the noise); both are recorded.

CV-shaped pipeline (``bench_cv_pipeline.py``): IO 2 ms -> 2 ms of GIL-releasing numpy in a thread
-> 4 ms single-device "inference" in a one-thread pool -> IO 1 ms, for every library, as
items/s and as a fraction of the bound (the inference step alone, back to back). Two more aioflow
rows: inference at ``workers=2`` behind a lock (the next call waits in its thread, not on the
event loop), and inference batched.

    python benchmarks/bench_peers.py            # full: N=100000, 500 CV items, 5 repetitions
    python benchmarks/bench_peers.py --quick    # N=20000, 150 CV items, uvloop only for peers
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_cv_pipeline as cv
import uvloop

import aioflow as af

_SENTINEL = object()
STAGES = (1, 3, 10)
LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "uvloop": uvloop.new_event_loop,
    "asyncio": asyncio.new_event_loop,
}
# The peers are 10-100x slower per item: they run fewer items (recorded with the results).
SLOW = ("pypeln", "aiostream", "aiostream (task_limit=1)", "streamz")


async def inc(x: int) -> int:
    return x + 1


async def agen(n: int) -> AsyncIterator[int]:
    for i in range(n):
        yield i


# -- overhead: one function per library --------------------------------------------------------


async def sequential(n: int, k: int) -> list[int]:
    out = []
    for i in range(n):
        x = i
        for _ in range(k):
            x = await inc(x)
        out.append(x)
    return out


async def handwritten(n: int, k: int) -> list[int]:
    queues: list[asyncio.Queue[Any]] = [asyncio.Queue(maxsize=64) for _ in range(k + 1)]
    results: list[int] = []

    async def source() -> None:
        q = queues[0]
        for i in range(n):
            await q.put(i)
        await q.put(_SENTINEL)

    async def stage(i: int) -> None:
        qin, qout = queues[i], queues[i + 1]
        while True:
            x = await qin.get()
            if x is _SENTINEL:
                await qout.put(_SENTINEL)
                return
            await qout.put(await inc(x))

    async def sink() -> None:
        q = queues[k]
        while True:
            x = await q.get()
            if x is _SENTINEL:
                return
            results.append(x)

    async with asyncio.TaskGroup() as tg:
        tg.create_task(source())
        for i in range(k):
            tg.create_task(stage(i))
        tg.create_task(sink())
    return results


_AIOFLOW: dict[int, af.Pipeline] = {}


async def aioflow_run(n: int, k: int) -> list[int]:
    pipe = _AIOFLOW.get(k)
    if pipe is None:
        pipe = _AIOFLOW[k] = af.Pipeline(
            *[af.block(name=f"inc{i}")(inc) for i in range(k)], name=f"overhead{k}"
        )
    out = await pipe.run(range(n))
    if not all(r.received == n and r.emitted == n for r in pipe.statistics().values()):
        msg = f"aioflow statistics do not balance: {pipe.statistics()}"
        raise AssertionError(msg)
    return out


async def pypeln_run(n: int, k: int) -> list[int]:
    import pypeln as pl

    stage: Any = agen(n)
    for _ in range(k):
        stage = pl.task.map(inc, stage, workers=1, maxsize=64)
    return list(await stage)


async def aiostream_run(n: int, k: int, task_limit: int = 2) -> list[int]:
    from aiostream import pipe, stream

    xs: Any = stream.iterate(agen(n))
    for _ in range(k):
        xs = xs | pipe.map(inc, task_limit=task_limit)
    return list(await stream.list(xs))


async def aiostream_inline(n: int, k: int) -> list[int]:
    return await aiostream_run(n, k, task_limit=1)


async def streamz_run(n: int, k: int) -> list[int]:
    return await streamz_pipeline(n, [(inc, 1)] * k)


async def streamz_pipeline(n: int, steps: list[tuple[Callable[[Any], Awaitable[Any]], int]]) -> Any:
    """``map_async`` nodes chained; ``await source.emit(i)`` for each item; the run ends when the
    sink has every output. streamz has no end-of-stream, so the nodes' worker tasks are cancelled
    at the end (they would wait for more input forever)."""
    import streamz

    out: list[Any] = []
    done = asyncio.Event()

    def collect(x: Any) -> None:
        out.append(x)
        if len(out) == n:
            done.set()

    source = streamz.Stream(asynchronous=True)
    node = source
    nodes = []
    for fn, parallelism in steps:
        node = node.map_async(fn, parallelism=parallelism)
        nodes.append(node)
    node.sink(collect)
    for i in range(n):
        await source.emit(i)
    await done.wait()
    tasks = [nd.work_task[1] for nd in nodes if nd.work_task]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return out


OVERHEAD: dict[str, Callable[[int, int], Awaitable[list[int]]]] = {
    "sequential": sequential,
    "hand-written": handwritten,
    "aioflow": aioflow_run,
    "pypeln": pypeln_run,
    "aiostream": aiostream_run,
    "aiostream (task_limit=1)": aiostream_inline,
    "streamz": streamz_run,
}


def check(name: str, out: list[int], expected: range) -> bool:
    """Every expected value exactly once; returns whether the order was kept."""
    if out == list(expected):
        return True
    if sorted(out) != list(expected):
        msg = f"{name}: wrong outputs ({len(out)} items, expected {len(expected)})"
        raise AssertionError(msg)
    return False


async def settle(name: str) -> None:
    """Between runs: no task may be left behind, and garbage is collected outside the timings."""
    await asyncio.sleep(0)
    current = asyncio.current_task()
    left = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
    if left:
        msg = f"{name} left {len(left)} tasks running: {left[:3]}"
        raise AssertionError(msg)
    gc.collect()


async def overhead_on_loop(
    loop_name: str, variants: list[str], n_fast: int, n_slow: int, reps: int
) -> list[dict[str, Any]]:
    samples: dict[tuple[str, int], list[float]] = {(v, k): [] for v in variants for k in STAGES}
    ordered: dict[str, bool] = {}
    # Warm-up: imports, first-call costs.
    for v in variants:
        check(v, await OVERHEAD[v](200, 2), range(2, 202))
        await settle(v)
    for rep in range(reps):
        order = variants[rep % len(variants) :] + variants[: rep % len(variants)]
        for k in STAGES:
            for v in order:
                n = n_slow if v in SLOW else n_fast
                t0 = time.perf_counter()
                out = await OVERHEAD[v](n, k)
                dt = time.perf_counter() - t0
                ordered[v] = check(v, out, range(k, n + k)) and ordered.get(v, True)
                samples[(v, k)].append(dt / (n * k) * 1e6)
                await settle(v)
    rows = []
    for (v, k), us in samples.items():
        rows.append(
            {
                "loop": loop_name,
                "library": v,
                "stages": k,
                "items": n_slow if v in SLOW else n_fast,
                "reps": reps,
                "us_per_item_stage": statistics.median(us),
                "runs_us": us,
                "ordered": ordered[v],
            }
        )
    return rows


def run_overhead(*, quick: bool, reps: int) -> dict[str, Any]:
    n_fast, n_slow = (20_000, 4_000) if quick else (100_000, 20_000)
    rows: list[dict[str, Any]] = []
    for loop_name, factory in LOOPS.items():
        variants = list(OVERHEAD)
        if quick and loop_name != "uvloop":
            variants = ["sequential", "hand-written", "aioflow"]
        with asyncio.Runner(loop_factory=factory) as runner:
            rows += runner.run(overhead_on_loop(loop_name, variants, n_fast, n_slow, reps))
    return {"stages": list(STAGES), "items_fast": n_fast, "items_slow": n_slow, "rows": rows}


# -- the CV-shaped pipeline, per library --------------------------------------------------------


class Pools:
    """The thread pools of one run: 2 threads for the numpy step, 1 for the single device."""

    def __init__(self) -> None:
        self.cpu = ThreadPoolExecutor(2)
        self.gpu = ThreadPoolExecutor(1)

    async def cpu_step(self, x: int) -> int:
        return await asyncio.get_running_loop().run_in_executor(self.cpu, cv.cpu_step, x)

    async def infer(self, x: int) -> int:
        return await asyncio.get_running_loop().run_in_executor(self.gpu, cv.infer_one, x)

    def close(self) -> None:
        self.cpu.shutdown()
        self.gpu.shutdown()


async def cv_pypeln(n: int) -> list[int]:
    import pypeln as pl

    pools = Pools()
    try:
        stage: Any = pl.task.map(cv.io_in, agen(n), workers=4, maxsize=64)
        stage = pl.task.map(pools.cpu_step, stage, workers=2, maxsize=64)
        stage = pl.task.map(pools.infer, stage, workers=1, maxsize=64)
        stage = pl.task.map(cv.io_out, stage, workers=4, maxsize=64)
        return list(await stage)
    finally:
        pools.close()


async def cv_aiostream(n: int) -> list[int]:
    from aiostream import pipe, stream

    pools = Pools()
    try:
        xs = (
            stream.iterate(agen(n))
            | pipe.map(cv.io_in, task_limit=4)
            | pipe.map(pools.cpu_step, task_limit=2)
            # task_limit=2 with a one-thread pool: one call on the device, the next one ready
            # (task_limit=1 would make this stage wait for its input after every item).
            | pipe.map(pools.infer, task_limit=2)
            | pipe.map(cv.io_out, task_limit=4)
        )
        return list(await stream.list(xs))
    finally:
        pools.close()


async def cv_streamz(n: int) -> list[int]:
    pools = Pools()
    try:
        steps = [(cv.io_in, 4), (pools.cpu_step, 2), (pools.infer, 1), (cv.io_out, 4)]
        return list(await streamz_pipeline(n, steps))
    finally:
        pools.close()


_DEVICE = threading.Lock()


def infer_locked(x: int) -> int:
    with _DEVICE:  # one call at a time on the device; the other worker waits here, ready
        return cv.infer_one(x)


def aioflow_locked() -> af.Pipeline:
    """aioflow with the inference block at ``workers=2`` behind a lock: the next call waits on
    the lock in its thread instead of on an event-loop round trip."""
    return af.Pipeline(
        af.block(name="io_in", workers=4)(cv.io_in),
        af.block(name="cpu", workers=2)(cv.cpu_step),
        af.block(name="infer", workers=2)(infer_locked),
        af.block(name="io_out", workers=4)(cv.io_out),
        name="cv_locked",
    )


def cv_variants(n: int) -> dict[str, Callable[[], Awaitable[list[int]]]]:
    pipe = cv.aioflow_pipeline()
    locked = aioflow_locked()
    batched = cv.aioflow_batched()
    return {
        "bound": lambda: cv.bound(n),
        "sequential": lambda: cv.sequential(n),
        "hand-written": lambda: cv.handwritten(n),
        "aioflow": lambda: pipe.run(range(n)),
        "aioflow, infer workers=2 + lock": lambda: locked.run(range(n)),
        "aioflow batched": lambda: batched.run(range(n)),
        "pypeln": lambda: cv_pypeln(n),
        "aiostream": lambda: cv_aiostream(n),
        "streamz": lambda: cv_streamz(n),
    }


async def cv_on_loop(n: int, reps: int) -> dict[str, Any]:
    variants = cv_variants(n)
    names = list(variants)
    rates: dict[str, list[float]] = {v: [] for v in names}
    ordered: dict[str, bool] = {}
    for rep in range(reps):
        order = names[rep % len(names) :] + names[: rep % len(names)]
        for v in order:
            t0 = time.perf_counter()
            out = await variants[v]()
            dt = time.perf_counter() - t0
            ordered[v] = check(v, out, range(n)) and ordered.get(v, True)
            rates[v].append(n / dt)
            await settle(v)
    med = {v: statistics.median(r) for v, r in rates.items()}
    return {
        "items": n,
        "reps": reps,
        "items_per_s": med,
        "of_bound": {v: med[v] / med["bound"] for v in names},
        "vs_sequential": {v: med[v] / med["sequential"] for v in names},
        "ordered": ordered,
        "runs": rates,
    }


def run_cv(*, quick: bool, reps: int) -> dict[str, Any]:
    cv._DATA = cv.calibrate()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(cv_on_loop(150 if quick else 500, reps))


def run(*, quick: bool, reps: int = 5) -> dict[str, Any]:
    return {
        "overhead": run_overhead(quick=quick, reps=reps),
        "cv": run_cv(quick=quick, reps=reps),
    }


# -- printing ---------------------------------------------------------------------------------


def print_overhead(res: dict[str, Any]) -> None:
    print(
        f"per-item overhead, us per item per stage (medians; N={res['items_fast']}, "
        f"peers N={res['items_slow']})"
    )
    table: dict[tuple[str, str], dict[int, float]] = {}
    for row in res["rows"]:
        table.setdefault((row["loop"], row["library"]), {})[row["stages"]] = row[
            "us_per_item_stage"
        ]
    print(f"  {'loop':8} {'library':26}" + "".join(f"{'K=' + str(k):>9}" for k in STAGES))
    for (loop_name, lib), per_k in table.items():
        cells = "".join(f"{per_k[k]:9.3f}" for k in STAGES)
        print(f"  {loop_name:8} {lib:26}{cells}")


def print_cv(res: dict[str, Any]) -> None:
    print(f"CV-shaped pipeline, {res['items']} items, medians of {res['reps']} (items/s)")
    for v, rate in res["items_per_s"].items():
        order = "" if res["ordered"][v] else "  (order not kept)"
        print(
            f"  {v:32} {rate:8.1f}   of bound {res['of_bound'][v]:5.2f}"
            f"   vs sequential {res['vs_sequential'][v]:5.2f}x{order}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer items, peers on uvloop only")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--only", choices=["overhead", "cv"])
    args = parser.parse_args()
    if args.only != "cv":
        print_overhead(run_overhead(quick=args.quick, reps=args.reps))
    if args.only != "overhead":
        print_cv(run_cv(quick=args.quick, reps=args.reps))


if __name__ == "__main__":
    main()
