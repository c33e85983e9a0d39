"""Per-item overhead: aioflow against a hand-written asyncio.Queue pipeline.

K trivial async stages (``x + 1``), N items, on uvloop (and the default loop with --loops both).
The hand-written pipeline is what people write today: one task per stage,
``asyncio.Queue(maxsize=64)`` edges, a sentinel at the end, outputs collected in a list. Both run
in the same process, alternating, and we report the median of the repetitions.

    python benchmarks/bench_overhead.py                 # N=100000, K=3 and 10, 7 repetitions
    python benchmarks/bench_overhead.py --quick         # N=20000, 5 repetitions
    python benchmarks/bench_overhead.py --json out.json # also save the figures
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
from typing import Any

# The hand-written baseline and the trivial stage are the peer suite's, so that both
# benchmarks measure exactly the same pipeline.
from bench_peers import handwritten, inc

import aioflow as af


def make_aioflow(k: int) -> af.Pipeline:
    blocks = [af.block(name=f"inc{i}")(inc) for i in range(k)]
    return af.Pipeline(*blocks, name=f"bench{k}")


async def aioflow_run(n: int, k: int, pipe: af.Pipeline) -> list[int]:
    return await pipe.run(range(n))


def timed(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
    coro: Callable[[], Coroutine[Any, Any, list[int]]],
    n: int,
    k: int,
) -> float:
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        t0 = time.perf_counter()
        out = runner.run(coro())
        dt = time.perf_counter() - t0
    if len(out) != n or out[0] != k or out[-1] != n - 1 + k:
        msg = f"wrong output: {len(out)} items, first {out[:1]}, last {out[-1:]}"
        raise AssertionError(msg)
    return dt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--stages", type=int, nargs="+", default=[3, 10])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="N=20000, 5 repetitions")
    parser.add_argument("--loops", choices=["uvloop", "asyncio", "both"], default="uvloop")
    parser.add_argument("--json", help="write the results to this file")
    args = parser.parse_args()
    if args.quick:
        args.n, args.reps = 20_000, 5
    import uvloop

    loops: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {}
    if args.loops in ("uvloop", "both"):
        loops["uvloop"] = uvloop.new_event_loop
    if args.loops in ("asyncio", "both"):
        loops["asyncio"] = asyncio.new_event_loop

    results: list[dict[str, Any]] = []
    print(f"N={args.n}, medians of {args.reps} alternating repetitions")
    print(
        f"{'loop':8} {'K':>3} {'hand-written':>14} {'aioflow':>10} {'ratio':>7}   (us/item/stage)"
    )
    for loop_name, factory in loops.items():
        for k in args.stages:
            pipe = make_aioflow(k)
            hw: list[float] = []
            ours: list[float] = []
            for _ in range(args.reps):
                hw.append(timed(factory, lambda k=k: handwritten(args.n, k), args.n, k))
                ours.append(
                    timed(factory, lambda k=k, p=pipe: aioflow_run(args.n, k, p), args.n, k)
                )
            stats = pipe.statistics()
            assert all(r.received == args.n and r.emitted == args.n for r in stats.values())
            hw_us = statistics.median(hw) / (args.n * k) * 1e6
            our_us = statistics.median(ours) / (args.n * k) * 1e6
            ratio = hw_us / our_us
            ratios = sorted(h / o for h, o in zip(hw, ours, strict=True))
            print(
                f"{loop_name:8} {k:3d} {hw_us:14.3f} {our_us:10.3f} {ratio:6.2f}x"
                f"   (pairwise ratios {ratios[0]:.2f}..{ratios[-1]:.2f})"
            )
            results.append(
                {
                    "loop": loop_name,
                    "stages": k,
                    "n": args.n,
                    "reps": args.reps,
                    "handwritten_us_per_item_stage": hw_us,
                    "aioflow_us_per_item_stage": our_us,
                    "speedup": ratio,
                }
            )
    if args.json:
        meta = {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "machine": platform.machine(),
            "aioflow": af.__version__,
            "uvloop": uvloop.__version__,
            "date": time.strftime("%Y-%m-%d"),
        }
        with open(args.json, "w") as fh:
            json.dump({"meta": meta, "results": results}, fh, indent=2)


if __name__ == "__main__":
    main()
