"""Latency under load: the CV-shaped pipeline fed by a live source, at 80% and 150% of its
bottleneck rate.

The pipeline is the one of ``bench_cv_pipeline.py``: IO 2 ms (4 workers) -> 2 ms of numpy in a
thread (2 workers) -> 4 ms single-device "inference" (1 thread) -> IO 1 ms (4 workers). Its
bottleneck rate (the *bound*) is measured first, in the same run: the inference step alone, back
to back.

Items arrive on a schedule (periodic, or Poisson with the same mean rate), drawn from a seeded
generator so that every variant of one repetition gets the same arrivals. An item's latency runs
from its *scheduled* arrival to the moment the consumer gets its output, so time spent waiting
for a source that backpressure held back counts (no coordinated omission).

* ``unloaded``: periodic at 20% of the bound (each item meets an empty pipeline);
* ``periodic 80%`` and ``Poisson 80%``: the pipeline keeps up;
* ``periodic 150%`` and ``Poisson 150%``: overload, with
  - ``block``: the default edges (backpressure reaches the source, which falls behind);
  - ``drop_oldest``: the inference block's input is ``queue_size=1, overflow="drop_oldest"``;
  - ``drop_oldest + max_age``: its input is ``queue_size=4, overflow="drop_oldest"`` and it
    has ``max_age=0.010``: it never starts on an item older than 10 ms, and a stale item at the
    head of its queue leaves the next one ready;
* ``..., 2 ms sleep``: the same with the numpy step replaced by a 2 ms ``time.sleep`` in its
  thread (no CPU used): it shows what CPU contention on the machine adds to the tail.

aioflow runs each; the hand-written pipeline of ``bench_cv_pipeline.py`` runs the same scenarios
with plain ``asyncio.Queue`` edges (its leaky variant drops the oldest item at every full queue,
the queue before inference holding 1). Reported: p50 / p99 latency, drops, and the throughput
over the last 90% of the arrival window as a fraction of the bound. The books are checked: every
arrival is an output or a counted drop.

    python benchmarks/bench_latency.py            # 5 s per scenario, 5 repetitions
    python benchmarks/bench_latency.py --quick    # 0.6 s per scenario
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_cv_pipeline as cv
import uvloop

import aioflow as af
from aioflow.stats import percentile

START_S = 0.02  # the first arrival, after the pipeline has started
MAX_AGE_S = 0.010  # the budget for max_age: an item older than this is not worth inferring


@dataclass(frozen=True)
class Scenario:
    name: str
    arrivals: str  # "periodic" or "poisson"
    load: float  # mean arrival rate as a fraction of the bound
    edges: str  # "block", "drop_oldest", "drop_oldest+max_age"
    cpu: str = "numpy"  # the middle step: "numpy" (2 ms of CPU) or "sleep" (2 ms, no CPU)


SCENARIOS = (
    Scenario("unloaded", "periodic", 0.2, "block"),
    Scenario("periodic 80%", "periodic", 0.8, "block"),
    Scenario("Poisson 80%", "poisson", 0.8, "block"),
    Scenario("periodic 150%, block", "periodic", 1.5, "block"),
    Scenario("periodic 150%, drop_oldest", "periodic", 1.5, "drop_oldest"),
    Scenario("periodic 150%, drop_oldest + max_age", "periodic", 1.5, "drop_oldest+max_age"),
    Scenario("Poisson 150%, block", "poisson", 1.5, "block"),
    Scenario("Poisson 150%, drop_oldest", "poisson", 1.5, "drop_oldest"),
    Scenario("Poisson 150%, drop_oldest + max_age", "poisson", 1.5, "drop_oldest+max_age"),
    Scenario("unloaded, 2 ms sleep", "periodic", 0.2, "block", "sleep"),
    Scenario("periodic 150%, drop_oldest, 2 ms sleep", "periodic", 1.5, "drop_oldest", "sleep"),
)

SYSTEMS = ("aioflow", "hand-written")


def schedule(kind: str, rate: float, duration: float, seed: int) -> list[float]:
    """Arrival times in seconds from the start."""
    rng = random.Random(seed)
    times = []
    t = START_S
    while t < START_S + duration:
        times.append(t)
        t += rng.expovariate(rate) if kind == "poisson" else 1 / rate
    return times


@dataclass
class Outcome:
    latencies: list[float]
    done_at: list[float]  # completion times, seconds from the start
    drops: dict[str, int]
    numbers: list[int]  # the outputs' item numbers, in the order of ``latencies``


# -- aioflow ----------------------------------------------------------------------------------


# By item number: when the middle step finished with the item (it then travels to the model's
# queue) and when the model started on it. The difference is the item's wait in front of the
# model: hand-off to the event loop, time in the queue, hand-off to the model's thread.
READY: dict[int, float] = {}
STARTED: dict[int, float] = {}


def numpy_step(x: tuple[int, float]) -> tuple[int, float]:
    cv.cpu_step(0)
    READY[x[0]] = time.perf_counter()
    return x


def sleep_step(x: tuple[int, float]) -> tuple[int, float]:
    time.sleep(0.002)  # as long as the numpy step, without using the CPU
    READY[x[0]] = time.perf_counter()
    return x


def model(x: tuple[int, float]) -> tuple[int, float]:
    STARTED[x[0]] = time.perf_counter()
    cv.infer_one(0)
    return x


def waits(numbers: list[int]) -> list[float]:
    """Each output's wait in front of the model, in seconds."""
    return [STARTED[i] - READY[i] for i in numbers]


CPU_STEPS: dict[str, Callable[[Any], Any]] = {"numpy": numpy_step, "sleep": sleep_step}


def aioflow_pipeline(edges: str, cpu: str = "numpy") -> af.Pipeline:
    leaky: dict[str, Any] = {}
    if edges == "drop_oldest":
        leaky = {"queue_size": 1, "overflow": "drop_oldest"}
    elif edges == "drop_oldest+max_age":
        leaky = {"queue_size": 4, "overflow": "drop_oldest", "max_age": MAX_AGE_S}
    return af.Pipeline(
        af.block(name="io_in", workers=4)(cv.io_in),
        af.block(name="cpu", workers=2)(CPU_STEPS[cpu]),
        af.block(name="infer", workers=1, **leaky)(model),
        af.block(name="io_out", workers=4)(cv.io_out),
        name=f"latency-{edges}-{cpu}",
    )


async def run_aioflow(pipe: af.Pipeline, times: list[float]) -> Outcome:
    t0 = time.perf_counter()

    async def arrivals() -> AsyncIterator[tuple[int, float]]:
        for i, t in enumerate(times):
            delay = t0 + t - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            yield i, t0 + t

    latencies, done_at, numbers = [], [], []
    async for i, due in pipe.stream(arrivals()):
        now = time.perf_counter()
        latencies.append(now - due)
        done_at.append(now - t0)
        numbers.append(i)
    drops: dict[str, int] = {}
    for rec in pipe.statistics().values():
        for reason, count in rec.dropped_by.items():
            drops[reason] = drops.get(reason, 0) + count
    return Outcome(latencies, done_at, drops, numbers)


# -- hand-written -----------------------------------------------------------------------------


async def run_handwritten(leaky: bool, times: list[float], cpu_step: str = "numpy") -> Outcome:
    """``bench_cv_pipeline.handwritten`` with a live source; ``leaky``: every put drops the
    oldest item of a full queue, and the queue before inference holds 1."""
    loop = asyncio.get_running_loop()
    stop = object()
    sizes = [64, 64, 1 if leaky else 64, 64, 64]
    q = [asyncio.Queue[Any](maxsize=size) for size in sizes]
    cpu_pool, gpu_pool = ThreadPoolExecutor(2), ThreadPoolExecutor(1)
    latencies: list[float] = []
    done_at: list[float] = []
    numbers: list[int] = []
    dropped = 0
    t0 = time.perf_counter()

    async def put(queue: asyncio.Queue[Any], x: Any) -> None:
        nonlocal dropped
        if not leaky:
            await queue.put(x)
            return
        while queue.full():
            queue.get_nowait()
            dropped += 1
        queue.put_nowait(x)

    async def source() -> None:
        for i, t in enumerate(times):
            delay = t0 + t - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await put(q[0], (i, t0 + t))
        await q[0].put(stop)

    async def stage(i: int, fn: Callable[[Any], Awaitable[Any]], width: int) -> None:
        async def worker() -> None:
            while True:
                x = await q[i].get()
                if x is stop:
                    await q[i].put(stop)  # let the sibling workers see it
                    return
                await put(q[i + 1], await fn(x))

        async with asyncio.TaskGroup() as tg:
            for _ in range(width):
                tg.create_task(worker())
        await q[i + 1].put(stop)

    async def cpu(x: Any) -> Any:
        return await loop.run_in_executor(cpu_pool, CPU_STEPS[cpu_step], x)

    async def infer(x: Any) -> Any:
        return await loop.run_in_executor(gpu_pool, model, x)

    async def sink() -> None:
        while (x := await q[4].get()) is not stop:
            now = time.perf_counter()
            latencies.append(now - x[1])
            done_at.append(now - t0)
            numbers.append(x[0])

    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(source())
            tg.create_task(stage(0, cv.io_in, 4))
            tg.create_task(stage(1, cpu, 2))
            tg.create_task(stage(2, infer, 1))
            tg.create_task(stage(3, cv.io_out, 4))
            tg.create_task(sink())
    finally:
        cpu_pool.shutdown()
        gpu_pool.shutdown()
    return Outcome(latencies, done_at, {"overflow": dropped} if dropped else {}, numbers)


# -- driver -----------------------------------------------------------------------------------


async def measure_bound(n: int) -> float:
    t0 = time.perf_counter()
    out = await cv.bound(n)
    if out != list(range(n)):
        msg = "bound: wrong outputs"
        raise AssertionError(msg)
    return n / (time.perf_counter() - t0)


async def run_all(duration: float, reps: int) -> dict[str, Any]:
    bound_runs = [await measure_bound(200) for _ in range(3)]
    bound = statistics.median(bound_runs)
    pipes = {(s.edges, s.cpu): aioflow_pipeline(s.edges, s.cpu) for s in SCENARIOS}
    # max_age is aioflow's: the hand-written pipeline runs every other scenario.
    cases = [
        (sys_, s)
        for s in SCENARIOS
        for sys_ in SYSTEMS
        if not (sys_ == "hand-written" and "max_age" in s.edges)
    ]
    samples: dict[tuple[str, str], list[dict[str, float]]] = {
        (sys_, s.name): [] for sys_, s in cases
    }
    for rep in range(reps):
        order = cases[rep % len(cases) :] + cases[: rep % len(cases)]
        for sys_, s in order:
            # Arrivals depend on the repetition and the scenario only: both systems of one
            # repetition see the same schedule.
            seed = rep * 1000 + SCENARIOS.index(s)
            times = schedule(s.arrivals, s.load * bound, duration, seed)
            READY.clear()
            STARTED.clear()
            if sys_ == "aioflow":
                res = await run_aioflow(pipes[(s.edges, s.cpu)], times)
            else:
                res = await run_handwritten(s.edges != "block", times, s.cpu)
            dropped = sum(res.drops.values())
            if len(res.latencies) + dropped != len(times):
                msg = (
                    f"{sys_} {s.name}: {len(times)} arrivals but {len(res.latencies)} outputs "
                    f"and {dropped} drops"
                )
                raise AssertionError(msg)
            # Throughput over the last 90% of the arrival window (the first 10% fills queues).
            lo, hi = START_S + 0.1 * duration, START_S + duration
            done = sum(1 for t in res.done_at if lo <= t < hi)
            wait = waits(res.numbers)
            # What the latency would be without the wait in front of the model.
            rest = [lat - w for lat, w in zip(res.latencies, wait, strict=True)]
            samples[(sys_, s.name)].append(
                {
                    "arrivals": len(times),
                    "outputs": len(res.latencies),
                    "dropped": dropped,
                    "overflow": res.drops.get("overflow", 0),
                    "stale": res.drops.get("stale", 0),
                    "p50_ms": percentile(res.latencies, 0.5) * 1e3,
                    "p99_ms": percentile(res.latencies, 0.99) * 1e3,
                    "max_ms": max(res.latencies) * 1e3,
                    "wait_p50_ms": percentile(wait, 0.5) * 1e3,
                    "wait_p99_ms": percentile(wait, 0.99) * 1e3,
                    "without_wait_p99_ms": percentile(rest, 0.99) * 1e3,
                    "throughput": done / (hi - lo),
                }
            )
            gc.collect()
    rows = []
    for (sys_, name), runs in samples.items():
        s = next(sc for sc in SCENARIOS if sc.name == name)
        med = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
        rows.append(
            {
                "system": sys_,
                "scenario": name,
                "arrivals_kind": s.arrivals,
                "load": s.load,
                "edges": s.edges,
                "cpu_step": s.cpu,
                **med,
                "of_bound": med["throughput"] / bound,
                "runs": runs,
            }
        )
    return {
        "bound_items_per_s": bound,
        "bound_runs": bound_runs,
        "duration_s": duration,
        "reps": reps,
        "max_age_s": MAX_AGE_S,
        "rows": rows,
        "goal": goal(rows),
    }


def goal(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Under 150% overload with leaky edges: p99 <= 1.5x the unloaded latency (its p50), and
    throughput >= 0.95 of the bound."""
    by = {(r["system"], r["scenario"]): r for r in rows}
    unloaded_of = {s.cpu: s.name for s in SCENARIOS if s.load < 0.5}
    out: dict[str, Any] = {}
    for sys_ in SYSTEMS:
        for s in SCENARIOS:
            r = by.get((sys_, s.name))
            if s.edges == "block" or r is None:
                continue
            unloaded = by[(sys_, unloaded_of[s.cpu])]["p50_ms"]
            out[f"{sys_}: {s.name}"] = {
                "p99_over_unloaded": r["p99_ms"] / unloaded,
                "of_bound": r["of_bound"],
                "met": r["p99_ms"] <= 1.5 * unloaded and r["of_bound"] >= 0.95,
            }
    return out


def run(*, quick: bool, reps: int = 5) -> dict[str, Any]:
    cv._DATA = cv.calibrate()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(run_all(0.6 if quick else 5.0, reps))


def print_latency(res: dict[str, Any]) -> None:
    print(
        f"latency under load: bound {res['bound_items_per_s']:.1f} items/s, "
        f"{res['duration_s']} s per scenario, medians of {res['reps']}"
    )
    print(
        f"  {'system':13} {'scenario':36} {'p50 ms':>7} {'p99 ms':>7} {'dropped':>8}"
        f" {'of bound':>9}"
    )
    for r in res["rows"]:
        print(
            f"  {r['system']:13} {r['scenario']:36} {r['p50_ms']:7.1f} {r['p99_ms']:7.1f}"
            f" {r['dropped'] / r['arrivals']:7.0%} {r['of_bound']:9.2f}"
        )
    for name, v in res["goal"].items():
        print(
            f"  goal ({name}): p99 {v['p99_over_unloaded']:.2f}x unloaded p50, "
            f"{v['of_bound']:.2f} of bound: {'met' if v['met'] else 'NOT met'}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="0.6 s per scenario")
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    print_latency(run(quick=args.quick, reps=args.reps))


if __name__ == "__main__":
    main()
