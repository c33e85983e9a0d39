"""The cost of being watched: per-item overhead with a Prometheus scraper polling every 100 ms.

K trivial async blocks (the hot path, where any cost shows most), N items, uvloop, in one process,
one pipeline and one metrics server (``aioflow.observe.Server``, what ``running.serve_metrics()``
starts) for the whole measurement, and a scraper in another process that GETs ``/metrics`` every
100 ms, as Prometheus would:

* ``plain``: ``pipe.run(range(N))`` with the scraper paused (SIGSTOP);
* ``scraped``: the same with the scraper polling (SIGCONT).

Goal: the scraped time within 3% of the plain one. On a shared machine two runs a few seconds
apart differ by more than that, so the method is made robust to the noise rather than hoping
for a quiet machine:

* each run is timed in CPU seconds of this process (``time.process_time``) as well as on the
  wall clock. The scrapes are answered on this process's event loop, so their cost is in its
  CPU time, while other programs on a busy machine show up only in the wall time (they take
  the CPU away; they do not make this process do more work). The verdict is on CPU time; the
  wall-clock figures are reported beside it;
* many short repetitions in ABBA order (plain, scraped, scraped, plain, ...), each scraped run
  compared with the plain run next to it in time (the pair's ratio): slow drifts of the
  machine cancel within a pair;
* the median of the pairs' ratios, with a 95% confidence interval (distribution-free, from the
  order statistics) and the interquartile range: bursts hit single pairs, which the median
  ignores.

The cost of one scrape on the loop is also measured directly: its time x 10 scrapes a second is
the share of the loop the scraper takes.

    python benchmarks/bench_metrics.py [--items 250000] [--stages 3] [--quads 16]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import signal
import statistics
import sys
import time
from typing import Any

import uvloop

import aioflow as af
from aioflow.observe import PipelineCollector, Server

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


async def timed_run(pipe: af.Pipeline, n: int) -> tuple[float, float]:
    """Seconds of (CPU time of this process, wall clock) one run of ``n`` items took."""
    c0 = time.process_time()
    t0 = time.perf_counter()
    out = await pipe.run(range(n))
    dt = time.perf_counter() - t0
    dc = time.process_time() - c0
    assert len(out) == n
    return dc, dt


async def scrape_cost(stages: int) -> float:
    """Seconds one scrape holds the event loop (read the statistics and write the text, as the
    server does), after a run has filled every block's latency samples: the loop time a
    scraper takes, 10 times a second."""
    pipe = pipeline(stages)
    await pipe.run(range(50_000))
    collector = PipelineCollector(pipe)
    costs = []
    for _ in range(200):
        t0 = time.perf_counter()
        collector.text()
        costs.append(time.perf_counter() - t0)
    return statistics.median(costs)


def median_ci(values: list[float], level: float = 0.95) -> tuple[float, float]:
    """A distribution-free confidence interval of the median: the order statistics whose ranks
    a Binomial(n, 1/2) puts the median between with probability >= ``level``."""
    xs = sorted(values)
    n = len(xs)
    tail = (1.0 - level) / 2
    k = 0  # the largest k with P(Binomial(n, 1/2) <= k - 1) <= tail
    cdf = 0.0
    while k < n:
        nxt = cdf + math.comb(n, k) / 2**n
        if nxt > tail:
            break
        cdf = nxt
        k += 1
    if k == 0:  # too few pairs for that level: the whole range
        return xs[0], xs[-1]
    return xs[k - 1], xs[n - k]


class Scraper:
    """A scraper process polling ``url`` every 100 ms, that can be paused and resumed."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.scrapes = 0
        self.proc: asyncio.subprocess.Process | None = None
        self.reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", SCRAPER, self.url, stdout=asyncio.subprocess.PIPE
        )
        assert self.proc.stdout is not None
        await self.proc.stdout.readline()  # it scraped once: it is polling
        self.reader = asyncio.create_task(self._count())

    async def _count(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        while await self.proc.stdout.readline():
            self.scrapes += 1

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    async def stop(self) -> None:
        assert self.proc is not None
        assert self.reader is not None
        self.proc.send_signal(signal.SIGCONT)
        self.proc.terminate()
        await self.proc.wait()
        await self.reader


async def measure(n: int, stages: int, quads: int) -> dict[str, Any]:
    load_before = os.getloadavg()
    cost = await scrape_cost(stages)
    pipe = pipeline(stages)
    await timed_run(pipe, n // 5)  # warm up
    cpu: dict[str, list[float]] = {"plain": [], "scraped": []}
    wall: dict[str, list[float]] = {"plain": [], "scraped": []}
    ratios: list[float] = []  # CPU time, scraped / plain, per pair
    wall_ratios: list[float] = []
    scrapes: list[int] = []
    async with Server(pipe, dashboard=False) as server:
        scraper = Scraper(server.metrics_url)
        await scraper.start()
        try:
            for _ in range(quads):
                pair: dict[str, tuple[float, float]] = {}
                for name in ("plain", "scraped", "scraped", "plain"):
                    if name == "plain":
                        scraper.pause()
                    else:
                        scraper.resume()
                    await asyncio.sleep(0.02)  # the signal has landed
                    before = scraper.scrapes
                    dc, dt = await timed_run(pipe, n)
                    cpu[name].append(dc)
                    wall[name].append(dt)
                    if name == "scraped":
                        scrapes.append(scraper.scrapes - before)
                    pair[name] = (dc, dt)
                    if len(pair) == 2:  # (plain, scraped), then (scraped, plain)
                        ratios.append(pair["scraped"][0] / pair["plain"][0])
                        wall_ratios.append(pair["scraped"][1] / pair["plain"][1])
                        pair = {}
        finally:
            await scraper.stop()
    med = statistics.median(ratios)
    low, high = median_ci(ratios)
    q1, _, q3 = statistics.quantiles(ratios, n=4)
    wall_med = statistics.median(wall_ratios)
    wall_low, wall_high = median_ci(wall_ratios)
    us = {name: statistics.median(ts) / n / stages * 1e6 for name, ts in cpu.items()}
    wall_us = {name: statistics.median(ts) / n / stages * 1e6 for name, ts in wall.items()}
    return {
        "items": n,
        "stages": stages,
        "pairs": len(ratios),
        "method": "ABBA repetitions; median of per-pair ratios scraped/plain of CPU time",
        "us_per_item_stage": us,
        "overhead": med - 1,
        "overhead_ci95": [low - 1, high - 1],
        "overhead_iqr": [q1 - 1, q3 - 1],
        "pair_ratios": ratios,
        "wall_us_per_item_stage": wall_us,
        "wall_overhead": wall_med - 1,
        "wall_overhead_ci95": [wall_low - 1, wall_high - 1],
        "wall_pair_ratios": wall_ratios,
        "run_s_median": statistics.median(wall["plain"]),
        "scrapes_per_run_median": statistics.median(scrapes),
        "scrape_cost_s": cost,
        "loop_share_at_10_per_s": cost * 10,
        "load_average_before": list(load_before),
        "load_average_after": list(os.getloadavg()),
        "goal": GOAL,
        "met": med - 1 <= GOAL,
        "confirmed": high - 1 <= GOAL,
    }


def run(*, quick: bool, reps: int) -> dict[str, Any]:
    """For ``run_all.py``: ``reps`` is a floor on the ABBA quads (each gives two pairs)."""
    quads = max(reps, 8 if quick else 16)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(measure(250_000, 3, quads))


def print_metrics(res: dict[str, Any]) -> None:
    us = res["us_per_item_stage"]
    low, high = res["overhead_ci95"]
    q1, q3 = res["overhead_iqr"]
    if res["confirmed"]:
        verdict = "met, confirmed by the interval"
    elif res["met"]:
        verdict = "met by the median, not confirmed by the interval"
    else:
        verdict = "NOT met"
    wall_low, wall_high = res["wall_overhead_ci95"]
    print(
        f"metrics overhead, {res['stages']} trivial async blocks, {res['items']} items a run "
        f"({res['run_s_median']:.2f} s), uvloop, {res['pairs']} ABBA pairs:\n"
        f"  CPU time: plain {us['plain']:.3f} us per item per stage, scraped every 100 ms "
        f"{us['scraped']:.3f} (~{res['scrapes_per_run_median']:.0f} scrapes a run)\n"
        f"  overhead: median of pair ratios {res['overhead']:+.1%} "
        f"(95% CI {low:+.1%}..{high:+.1%}, IQR {q1:+.1%}..{q3:+.1%})  "
        f"[<= +{res['goal']:.0%}: {verdict}]\n"
        f"  wall clock: median of pair ratios {res['wall_overhead']:+.1%} "
        f"(95% CI {wall_low:+.1%}..{wall_high:+.1%}; the machine's noise is in it)\n"
        f"  one scrape holds the loop {res['scrape_cost_s'] * 1e3:.2f} ms: "
        f"{res['loop_share_at_10_per_s']:.2%} of the loop's time at 10 scrapes a second; "
        f"load average {res['load_average_before'][0]:.1f} -> "
        f"{res['load_average_after'][0]:.1f}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=250_000)
    parser.add_argument("--stages", type=int, default=3)
    parser.add_argument("--quads", type=int, default=16, help="ABBA quads (two pairs each)")
    args = parser.parse_args()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        print_metrics(runner.run(measure(args.items, args.stages, args.quads)))
