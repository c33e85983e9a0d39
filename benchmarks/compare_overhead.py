"""Per-item overhead of two checkouts of aioflow, side by side: the one to judge and a baseline.

K trivial async stages (``x + 1``), N items, on uvloop: the same workload as
``bench_overhead.py``. Each repetition starts one fresh interpreter per checkout (the order
alternates), and each interpreter times, in turn, the hand-written ``asyncio.Queue`` pipeline,
aioflow and the sequential loop (the best of 3 each). The checkouts are compared through their
ratio to the hand-written pipeline timed in the same interpreter, so that a machine that is
busier for one of them than for the other does not decide the comparison. Both the wall time
and the process's CPU time are recorded: on a small shared machine the CPU time is the steadier
of the two.

    python benchmarks/compare_overhead.py --baseline ../main           # this checkout vs main
    python benchmarks/compare_overhead.py --baseline ../main --json benchmarks/results/hotpath.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

CHILD = r"""
import asyncio, json, sys, time
import uvloop
sys.path.insert(0, sys.argv[1])
from bench_peers import handwritten, inc, sequential
import aioflow as af

n, k = int(sys.argv[2]), int(sys.argv[3])
pipe = af.Pipeline(*[af.block(name=f"inc{i}")(inc) for i in range(k)], name="overhead")

def timed(make):
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        w0, c0 = time.perf_counter(), time.process_time()
        out = runner.run(make())
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    if len(out) != n or out[-1] != n - 1 + k:
        raise AssertionError(f"wrong output: {len(out)} items")
    return wall / (n * k) * 1e6, cpu / (n * k) * 1e6

variants = {
    "hand-written": lambda: handwritten(n, k),
    "aioflow": lambda: pipe.run(range(n)),
    "sequential": lambda: sequential(n, k),
}
best = {v: [float("inf"), float("inf")] for v in variants}
for _ in range(3):
    for v, make in variants.items():
        wall, cpu = timed(make)
        best[v] = [min(best[v][0], wall), min(best[v][1], cpu)]
print(json.dumps({"file": af.__file__, "us": best}))
"""


def git_commit(path: Path) -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(path), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.strip()


def measure(tree: Path, n: int, k: int) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(tree))
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(HERE), str(n), str(k)],
        env=env,
        capture_output=True,
        text=True,
        cwd="/",
    )
    if proc.returncode:
        msg = f"measuring {tree} failed:\n{proc.stderr}"
        raise RuntimeError(msg)
    result: dict[str, Any] = json.loads(proc.stdout)
    if not Path(result["file"]).resolve().is_relative_to(tree.resolve()):
        msg = f"{tree}: imported aioflow from {result['file']} instead"
        raise RuntimeError(msg)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, help="the other checkout (a directory)")
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--stages", type=int, default=3)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--json", help="write the results to this file")
    args = parser.parse_args()
    trees = {"baseline": Path(args.baseline).resolve(), "this": ROOT}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
    load = os.getloadavg()[0]
    for rep in range(args.reps):
        order = list(trees) if rep % 2 == 0 else list(reversed(trees))
        for name in order:
            runs[name].append(measure(trees[name], args.n, args.stages)["us"])
    summary: dict[str, dict[str, float]] = {}
    print(f"K={args.stages}, N={args.n}, uvloop, medians of {args.reps} alternating processes")
    head = f"{'':9} {'clock':5} {'aioflow':>8} {'hand-wr.':>9} {'seq.':>6} {'ratio':>6}"
    print(head + "  (us/item/stage)")
    for name, rs in runs.items():
        for i, clock in enumerate(("wall", "cpu")):
            row = {
                v: statistics.median(r[v][i] for r in rs)
                for v in ("aioflow", "hand-written", "sequential")
            }
            ratios = [r["hand-written"][i] / r["aioflow"][i] for r in rs]
            row["ratio"] = statistics.median(ratios)
            row["ratio_min"], row["ratio_max"] = min(ratios), max(ratios)
            summary[f"{name}_{clock}"] = row
            print(
                f"{name:9} {clock:5} {row['aioflow']:8.3f} {row['hand-written']:9.3f} "
                f"{row['sequential']:6.3f} {row['ratio']:5.2f}x "
                f"({row['ratio_min']:.2f}..{row['ratio_max']:.2f})"
            )
    if args.json:
        import uvloop

        meta = {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "cores": os.cpu_count(),
            "load_average": round(load, 1),
            "uvloop": uvloop.__version__,
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "this": git_commit(ROOT),
            "baseline": git_commit(trees["baseline"]),
        }
        data = {
            "meta": meta,
            "stages": args.stages,
            "n": args.n,
            "reps": args.reps,
            "summary": summary,
            "runs": runs,
        }
        with open(args.json, "w") as fh:
            json.dump(data, fh, indent=2)


if __name__ == "__main__":
    main()
