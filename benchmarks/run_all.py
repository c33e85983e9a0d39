"""Run the benchmark suite and save the results: ``make bench`` (quick) and ``make bench-full``.

* ``bench_peers.py``: per-item overhead against hand-written queues, pypeln, aiostream and
  streamz; the CV-shaped pipeline for every library;
* ``bench_cv_pipeline.py`` (part ``batching``): the CV-shaped pipeline with inference batched,
  against a hand-written batching loop and the machine's ceilings;
* ``bench_latency.py``: latency under load, blocking against leaky edges;
* ``bench_memory.py``: RSS after 10 thousand and 1 million items;
* ``bench_metrics.py``: per-item overhead with a Prometheus scraper polling every 100 ms.
* ``bench_soak.py``: a million frames (50 thousand in quick mode) through a flagship-shaped
  pipeline with planted faults: the books balance, RSS over time, nothing left behind.
* ``bench_process_frames.py``: a frame or a small object to a worker process and back, against
  ``ProcessPoolExecutor`` and a raw shared-memory ring.
* ``bench_gates_accuracy.py``: the gate-camera application's accuracy per difficulty level and
  its speed against its two models alone (only where ``make demo``'s packages are installed:
  OpenCV, onnxruntime and the rapidocr models).
* ``bench_cameras.py`` (part ``cameras``): 1 to 32 live cameras at 10 frames/s through the
  flagship pipeline: frames delivered per camera, drops, frame age, plates read, the detector's
  utilisation; one camera flooding at 30 frames/s; cameras added and removed every second
  (likewise only with ``make demo``'s packages).
* ``bench_redis_edge.py``: one Redis edge (a worker process serving an identity block) against
  a raw redis-py producer/consumer; ``bench_redis_scaleout.py``: a 20 ms block served by 1 and
  by 4 worker processes; part ``redis_keyed``: the edge of ``bench_redis_edge.py`` in front of
  a keyed block (its input in partitions). They use ``AIOFLOW_REDIS_URL``, or start a
  throwaway redis-server on loopback for the part (Debian's ``redis-server`` must be installed).
* ``bench_distributed_gates.py`` (part ``distributed_gates``): the flagship's ``make demo``
  pipeline run locally against ``examples/distributed/`` with 1 and 2 model workers per segment
  (needs both ``make demo``'s packages and Redis).

Each part writes ``benchmarks/results/<part>.json`` (``<part>_quick.json`` in quick mode) with
the machine, the versions of Python and of every library, and the date. ``benchmarks/report.py``
turns the files into ``docs/benchmarks.md`` and its plots.

    python benchmarks/run_all.py --quick          # under 3 minutes
    python benchmarks/run_all.py                  # the full suite, about 15 minutes
    python benchmarks/run_all.py --only latency   # one part
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_cv_pipeline  # noqa: E402
import bench_latency  # noqa: E402
import bench_memory  # noqa: E402
import bench_metrics  # noqa: E402
import bench_peers  # noqa: E402
import bench_process_frames  # noqa: E402
import bench_soak  # noqa: E402

PARTS = (
    "peers",
    "batching",
    "latency",
    "memory",
    "metrics",
    "soak",
    "process_frames",
    "gates_accuracy",
    "cameras",
    "redis_edge",
    "redis_scaleout",
    "redis_keyed",
    "distributed_gates",
)
PACKAGES = (
    "aioflow",
    "uvloop",
    "numpy",
    "pypeln",
    "aiostream",
    "streamz",
    "tornado",
    "psutil",
    "matplotlib",
)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip() or None


def environment(mode: str) -> dict[str, Any]:
    """What the figures depend on: the machine, the interpreter, every library's version."""
    import psutil

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "mode": mode,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_gb": round(psutil.virtual_memory().total / 1e9, 1),
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "git_commit": _git_commit(),
        "versions": versions,
    }


def gates_ready() -> bool:
    """Whether the gate-camera part can run: ``make demo``'s packages are installed."""
    return all(importlib.util.find_spec(m) is not None for m in ("cv2", "onnxruntime", "rapidocr"))


def redis_ready() -> bool:
    """Whether the Redis parts can run: redis-py is installed, and a server is given or can be
    started."""
    server = bool(os.environ.get("AIOFLOW_REDIS_URL")) or shutil.which("redis-server") is not None
    return server and importlib.util.find_spec("redis") is not None


def run_part(part: str, *, quick: bool, reps: int) -> dict[str, Any]:
    if part in ("redis_edge", "redis_scaleout", "redis_keyed"):
        import bench_redis_edge
        import bench_redis_scaleout

        with bench_redis_edge.redis_server() as url:
            if part == "redis_edge":
                return bench_redis_edge.run_part(url, quick=quick, reps=min(reps, 3))
            if part == "redis_keyed":
                return bench_redis_edge.run(url, quick=quick, reps=min(reps, 3), keyed=True)
            return bench_redis_scaleout.run(url, quick=quick)
    if part == "distributed_gates":
        import bench_distributed_gates

        return bench_distributed_gates.run(quick=quick, reps=min(reps, 2))
    if part == "gates_accuracy":
        import bench_gates_accuracy

        return bench_gates_accuracy.run_benchmark(quick=quick)
    if part == "cameras":
        import bench_cameras

        return bench_cameras.run_benchmark(quick=quick)
    if part == "peers":
        return bench_peers.run(quick=quick, reps=reps)
    if part == "batching":
        return bench_cv_pipeline.run(quick=quick, reps=reps)
    if part == "latency":
        return bench_latency.run(quick=quick, reps=reps)
    if part == "metrics":
        return bench_metrics.run(quick=quick, reps=reps)
    if part == "soak":
        return bench_soak.run(quick=quick)
    if part == "process_frames":
        return bench_process_frames.run(quick=quick, reps=None if quick else reps)
    return bench_memory.run(quick=quick)


def print_part(part: str, res: dict[str, Any]) -> None:
    if part in ("redis_edge", "redis_scaleout", "redis_keyed"):
        import bench_redis_edge
        import bench_redis_scaleout

        bench = bench_redis_scaleout if part == "redis_scaleout" else bench_redis_edge
        bench.print_results(res)
    elif part == "distributed_gates":
        import bench_distributed_gates

        bench_distributed_gates.print_results(res)
    elif part == "gates_accuracy":
        import bench_gates_accuracy

        bench_gates_accuracy.print_results(res["levels"])
    elif part == "cameras":
        import bench_cameras

        bench_cameras.print_results(res)
    elif part == "peers":
        bench_peers.print_overhead(res["overhead"])
        bench_peers.print_cv(res["cv"])
    elif part == "batching":
        bench_cv_pipeline.print_batching(res)
    elif part == "latency":
        bench_latency.print_latency(res)
    elif part == "metrics":
        bench_metrics.print_metrics(res)
    elif part == "soak":
        bench_soak.print_soak(res)
    elif part == "process_frames":
        bench_process_frames.print_frames(res)
    else:
        bench_memory.print_memory(res)


def headline(peers: dict[str, Any]) -> None:
    """The ratios the README quotes, and the overhead goals."""
    rows = peers["overhead"]["rows"]
    us = {(r["loop"], r["library"], r["stages"]): r["us_per_item_stage"] for r in rows}
    goals = {"hand-written": 2, "pypeln": 20, "streamz": 20, "aiostream": 10}
    print("aioflow is this many times faster per item and stage (goal in brackets):")
    for loop_name in bench_peers.LOOPS:
        for peer, target in goals.items():
            if (loop_name, peer, 1) not in us:
                continue
            ratios = [
                us[(loop_name, peer, k)] / us[(loop_name, "aioflow", k)] for k in bench_peers.STAGES
            ]
            cells = " / ".join(f"{r:.1f}x" for r in ratios)
            verdict = "met" if min(ratios) >= target else "NOT met"
            print(f"  {loop_name:8} vs {peer:13} K=1/3/10: {cells}  [>= {target}x: {verdict}]")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the quick mode, under 3 minutes")
    parser.add_argument("--only", choices=PARTS, nargs="+", help="run these parts only")
    parser.add_argument("--reps", type=int, default=5, help="alternating repetitions (>= 5)")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="where to write")
    args = parser.parse_args()
    mode = "quick" if args.quick else "full"
    args.out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    ready = {"gates_accuracy": gates_ready(), "redis_edge": redis_ready()}
    ready["cameras"] = ready["gates_accuracy"]
    ready["redis_scaleout"] = ready["redis_keyed"] = ready["redis_edge"]
    ready["distributed_gates"] = ready["redis_edge"] and ready["gates_accuracy"]
    parts = args.only or [p for p in PARTS if ready.get(p, True)]
    if not args.only and not ready["gates_accuracy"]:
        print(
            "gates_accuracy, cameras: skipped, they need make demo's packages "
            "(cv2, onnxruntime, rapidocr)"
        )
    if not args.only and not ready["redis_edge"]:
        print(
            "redis_edge, redis_scaleout, redis_keyed, distributed_gates: skipped, they need "
            "redis-py and redis-server"
        )
    for part in parts:
        meta = environment(mode)
        t0 = time.perf_counter()
        res = run_part(part, quick=args.quick, reps=args.reps)
        meta["elapsed_s"] = round(time.perf_counter() - t0, 1)
        meta["load_average_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
        path = args.out / (f"{part}_quick.json" if args.quick else f"{part}.json")
        with open(path, "w") as fh:
            json.dump({"meta": meta, **res}, fh, indent=1)
            fh.write("\n")
        print()
        print_part(part, res)
        if part == "peers":
            headline(res)
        shown = path.relative_to(HERE.parent) if path.is_relative_to(HERE.parent) else path
        print(f"({part}: {meta['elapsed_s']} s, saved to {shown})")
    print(f"\n{mode} suite: {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
