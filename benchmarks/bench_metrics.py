"""The cost of being watched: per-item overhead with a Prometheus scraper polling every 100 ms.

K trivial async blocks (the hot path, where any cost shows most), N items, uvloop, in one process:

* ``plain``: ``pipe.run(range(N))``;
* ``scraped``: the same while the pipeline's metrics server (``aioflow.observe.Server``, what
  ``running.serve_metrics()`` starts) answers a scraper in another process that GETs
  ``/metrics`` every 100 ms, as Prometheus would.

The two alternate, medians of the repetitions. Goal: the scraped figure within 3% of the plain one
(the collector reads ``statistics()`` only when scraped; the hot path keeps no extra counter).
On a busy machine the run-to-run noise exceeds 3%, so the cost of one scrape on the loop is also
measured directly: its time x 10 scrapes a second is the share of the loop the scraper takes.

    python benchmarks/bench_metrics.py [--items 300000] [--stages 3] [--reps 7]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from typing import Any

import uvloop

import aioflow as af
from aioflow.observe import Server, registry, render

GOAL = 0.03
SCRAPER = """
import sys, time, urllib.request
url, n = sys.argv[1], 0
while True:
    t0 = time.monotonic()
    with urllib.request.urlopen(url) as resp:
        resp.read()
    n += 1
    print(n, flush=True)
    time.sleep(max(0.0, 0.1 - (time.monotonic() - t0)))
"""


async def inc(x: int) -> int:
    return x + 1


def pipeline(stages: int) -> af.Pipeline:
    return af.Pipeline(*[af.block(inc, name=f"inc{i}") for i in range(stages)], name="bench")


async def plain(n: int, stages: int) -> float:
    pipe = pipeline(stages)
    t0 = time.perf_counter()
    out = await pipe.run(range(n))
    dt = time.perf_counter() - t0
    assert len(out) == n
    return dt


async def scraped(n: int, stages: int) -> tuple[float, int]:
    pipe = pipeline(stages)
    async with Server(pipe, dashboard=False) as server:
        scraper = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            SCRAPER,
            server.metrics_url,
            stdout=asyncio.subprocess.PIPE,
        )
        assert scraper.stdout is not None
        await scraper.stdout.readline()  # it scraped once: it is polling
        try:
            t0 = time.perf_counter()
            out = await pipe.run(range(n))
            dt = time.perf_counter() - t0
        finally:
            scraper.terminate()
            rest = await scraper.stdout.read()
            await scraper.wait()
    assert len(out) == n
    scrapes = len(rest.split()) - 1  # during the run, roughly
    return dt, scrapes


async def scrape_cost(stages: int) -> float:
    """Seconds one scrape holds the event loop (collect and render), after a run has filled
    every block's latency samples: the loop time a scraper takes, 10 times a second."""
    pipe = pipeline(stages)
    await pipe.run(range(50_000))
    reg = registry(pipe)
    costs = []
    for _ in range(200):
        t0 = time.perf_counter()
        render(reg)
        costs.append(time.perf_counter() - t0)
    return statistics.median(costs)


async def measure(n: int, stages: int, reps: int) -> dict[str, Any]:
    await plain(n // 10, stages)  # warm up
    cost = await scrape_cost(stages)
    times: dict[str, list[float]] = {"plain": [], "scraped": []}
    scrapes: list[int] = []
    for rep in range(reps):
        order = ("plain", "scraped") if rep % 2 == 0 else ("scraped", "plain")
        for name in order:
            if name == "plain":
                times["plain"].append(await plain(n, stages))
            else:
                dt, k = await scraped(n, stages)
                times["scraped"].append(dt)
                scrapes.append(k)
    us = {name: statistics.median(ts) / n / stages * 1e6 for name, ts in times.items()}
    best = {name: min(ts) / n / stages * 1e6 for name, ts in times.items()}
    overhead = us["scraped"] / us["plain"] - 1
    return {
        "items": n,
        "stages": stages,
        "reps": reps,
        "us_per_item_stage": us,
        "overhead": overhead,
        "us_per_item_stage_best": best,
        "overhead_best": best["scraped"] / best["plain"] - 1,
        "scrapes_per_run_median": statistics.median(scrapes),
        "scrape_cost_s": cost,
        "loop_share_at_10_per_s": cost * 10,
        "goal": GOAL,
        "met": overhead <= GOAL,
    }


def run(*, quick: bool, reps: int) -> dict[str, Any]:
    """For ``run_all.py``."""
    n = 150_000 if quick else 400_000
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(measure(n, 3, max(reps, 9)))


def print_metrics(res: dict[str, Any]) -> None:
    us = res["us_per_item_stage"]
    verdict = "met" if res["met"] else "NOT met"
    print(
        f"metrics overhead, {res['stages']} trivial async blocks, {res['items']} items, uvloop, "
        f"medians of {res['reps']}:\n"
        f"  plain {us['plain']:.3f} us per item per stage, scraped every 100 ms "
        f"{us['scraped']:.3f} (~{res['scrapes_per_run_median']:.0f} scrapes a run): "
        f"{res['overhead']:+.1%}  [<= +{res['goal']:.0%}: {verdict}]; best of each: "
        f"{res['overhead_best']:+.1%}\n"
        f"  one scrape holds the loop {res['scrape_cost_s'] * 1e3:.2f} ms: "
        f"{res['loop_share_at_10_per_s']:.2%} of the loop's time at 10 scrapes a second"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=300_000)
    parser.add_argument("--stages", type=int, default=3)
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        print_metrics(runner.run(measure(args.items, args.stages, args.reps)))
