"""Memory: does a long stream grow the process? RSS after N items through a 10-block pipeline.

Each size runs in a fresh interpreter (a subprocess), so one run's garbage cannot hide in
another's figures: 10 trivial async blocks, ``pipe.stream(range(N))`` consumed and counted (the
outputs are not kept), on uvloop. The child reports its RSS before the run (aioflow and uvloop
imported), after it (after ``gc.collect()``), and its peak RSS. The sizes alternate over the
repetitions; we report medians.

    python benchmarks/bench_memory.py            # 10k, 100k, 1M items, 3 repetitions
    python benchmarks/bench_memory.py --quick    # 10k and 1M items, 1 repetition
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from typing import Any

BLOCKS = 10
MB = 1024 * 1024


def peak_rss() -> int:
    """The process's peak RSS in bytes: VmHWM on Linux (``ru_maxrss`` would carry the parent's
    peak over from before ``exec``), ``ru_maxrss`` elsewhere."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB elsewhere
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def child(n: int) -> dict[str, Any]:
    import gc
    import time

    import psutil

    import aioflow as af

    async def inc(x: int) -> int:
        return x + 1

    pipe = af.Pipeline(*[af.block(name=f"inc{i}")(inc) for i in range(BLOCKS)], name="memory")

    async def main() -> int:
        count = 0
        async for _ in pipe.stream(range(n)):
            count += 1
        return count

    proc = psutil.Process()
    gc.collect()
    before = proc.memory_info().rss
    t0 = time.perf_counter()
    count = af.run(main())
    elapsed = time.perf_counter() - t0
    if count != n or any(r.emitted != n for r in pipe.statistics().values()):
        msg = f"memory run: {count} outputs for {n} items"
        raise AssertionError(msg)
    gc.collect()
    after = proc.memory_info().rss
    peak = peak_rss()
    return {
        "items": n,
        "rss_before_mb": before / MB,
        "rss_after_mb": after / MB,
        "peak_rss_mb": peak / MB,
        "elapsed_s": elapsed,
    }


def measure(n: int) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", str(n)],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def run(*, quick: bool, reps: int | None = None) -> dict[str, Any]:
    sizes = [10_000, 1_000_000] if quick else [10_000, 100_000, 1_000_000]
    reps = reps or (1 if quick else 3)
    runs: dict[int, list[dict[str, Any]]] = {n: [] for n in sizes}
    for rep in range(reps):
        order = sizes if rep % 2 == 0 else sizes[::-1]
        for n in order:
            runs[n].append(measure(n))
    rows = []
    for n, rs in runs.items():
        med = {k: statistics.median(r[k] for r in rs) for k in rs[0] if k != "items"}
        rows.append({"items": n, **med, "runs": rs})
    small, large = rows[0], rows[-1]
    growth = large["rss_after_mb"] - small["rss_after_mb"]
    return {
        "blocks": BLOCKS,
        "reps": reps,
        "rows": rows,
        "growth_mb": growth,
        "goal": {"limit_mb": 20, "met": growth <= 20},
    }


def print_memory(res: dict[str, Any]) -> None:
    print(f"memory: {res['blocks']} blocks, medians of {res['reps']} (MB)")
    print(f"  {'items':>9} {'before':>8} {'after':>8} {'peak':>8} {'time s':>7}")
    for r in res["rows"]:
        print(
            f"  {r['items']:9d} {r['rss_before_mb']:8.1f} {r['rss_after_mb']:8.1f}"
            f" {r['peak_rss_mb']:8.1f} {r['elapsed_s']:7.2f}"
        )
    verdict = "met" if res["goal"]["met"] else "NOT met"
    print(f"  growth from the smallest to the largest run: {res['growth_mb']:+.1f} MB ({verdict})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10k and 1M items, 1 repetition")
    parser.add_argument("--reps", type=int)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child)))
        return
    print_memory(run(quick=args.quick, reps=args.reps))


if __name__ == "__main__":
    main()
