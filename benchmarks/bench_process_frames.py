"""Per-frame cost of a process call: aioflow's shared-memory pool against ProcessPoolExecutor.

One 1920x1080x3 uint8 frame (6.2 MB) goes to a worker process, which returns ``frame ^ 1`` (a new
array of the same size), and comes back. Both contenders do exactly that, one frame at a time, at
steady state (pool start and a warm-up excluded), on one worker process:

- aioflow: ``ProcessPool.call`` (the frame crosses through shared memory);
- baseline: ``loop.run_in_executor`` on a plain ``concurrent.futures.ProcessPoolExecutor``
  (the frame is pickled through a pipe both ways).

Rounds alternate between the two; each frame's round trip is timed and the medians over all
frames are reported, with their ratio. A single 6.2 MB memcpy is timed too, for scale.

    python benchmarks/bench_process_frames.py                 # 5 rounds of 100 frames each way
    python benchmarks/bench_process_frames.py --quick         # 2 rounds of 100 frames
    python benchmarks/bench_process_frames.py --json out.json # also save the figures
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

import aioflow as af
from aioflow._engine.processes import ProcessPool

SHAPE = (1080, 1920, 3)
WARMUP = 10


def flip(frame: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """The worker's job: a new array of the frame's size."""
    return frame ^ 1


async def time_pool(pool: ProcessPool, frame: np.ndarray[Any, Any], n: int) -> list[float]:
    times: list[float] = []
    expected = frame ^ 1
    for _ in range(n):
        t0 = time.perf_counter()
        out: Any = await pool.call(frame)
        times.append(time.perf_counter() - t0)
        if not np.array_equal(out, expected):
            msg = "ProcessPool returned a wrong frame"
            raise AssertionError(msg)
    return times


async def time_executor(
    executor: ProcessPoolExecutor, frame: np.ndarray[Any, Any], n: int
) -> list[float]:
    loop = asyncio.get_running_loop()
    times: list[float] = []
    expected = frame ^ 1
    for _ in range(n):
        t0 = time.perf_counter()
        out = await loop.run_in_executor(executor, flip, frame)
        times.append(time.perf_counter() - t0)
        if not np.array_equal(out, expected):
            msg = "ProcessPoolExecutor returned a wrong frame"
            raise AssertionError(msg)
    return times


def time_memcpy(frame: np.ndarray[Any, Any], n: int) -> float:
    dest = np.empty_like(frame)
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        np.copyto(dest, frame)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


async def measure(rounds: int, n: int) -> dict[str, Any]:
    frame = np.random.default_rng(0).integers(0, 256, SHAPE, dtype=np.uint8)
    pool = ProcessPool("bench_frames", 1, flip, "function")
    await pool.start()
    executor = ProcessPoolExecutor(max_workers=1)
    ours: list[float] = []
    theirs: list[float] = []
    rows: list[tuple[int, float, float]] = []
    try:
        await time_pool(pool, frame, WARMUP)
        await time_executor(executor, frame, WARMUP)
        for r in range(rounds):
            a = await time_pool(pool, frame, n)
            b = await time_executor(executor, frame, n)
            ours += a
            theirs += b
            rows.append((r + 1, statistics.median(a), statistics.median(b)))
    finally:
        executor.shutdown(wait=True)
        await pool.close()
    return {
        "rows": rows,
        "aioflow_ms": statistics.median(ours) * 1e3,
        "executor_ms": statistics.median(theirs) * 1e3,
        "aioflow_p90_ms": statistics.quantiles(ours, n=10)[-1] * 1e3,
        "executor_p90_ms": statistics.quantiles(theirs, n=10)[-1] * 1e3,
        "memcpy_ms": time_memcpy(frame, 50) * 1e3,
        "frames_each": len(ours),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    parser.add_argument("--frames", type=int, default=100, help="frames per round (default 100)")
    parser.add_argument("--quick", action="store_true", help="2 rounds")
    parser.add_argument("--json", help="write the results to this file")
    args = parser.parse_args()
    if args.quick:
        args.rounds = 2
    res = af.run(measure(args.rounds, args.frames))
    ratio = res["executor_ms"] / res["aioflow_ms"]

    print("1920x1080x3 uint8 frame, round trip through one worker process, uvloop")
    print(f"{'round':>5} {'aioflow ms':>11} {'executor ms':>12} {'ratio':>7}")
    for r, a, b in res["rows"]:
        print(f"{r:5d} {a * 1e3:11.2f} {b * 1e3:12.2f} {b / a:6.1f}x")
    print(
        f"{'all':>5} {res['aioflow_ms']:11.2f} {res['executor_ms']:12.2f} {ratio:6.1f}x"
        f"   (medians over {res['frames_each']} frames each)"
    )
    print(
        f"p90: aioflow {res['aioflow_p90_ms']:.2f} ms, executor {res['executor_p90_ms']:.2f} ms;"
        f" one 6.2 MB memcpy: {res['memcpy_ms']:.2f} ms"
    )
    if args.json:
        meta = {
            "python": sys.version.split()[0],
            "numpy": np.__version__,
            "platform": platform.platform(),
            "machine": platform.machine(),
            "aioflow": af.__version__,
            "date": time.strftime("%Y-%m-%d"),
        }
        results = {
            "frame_shape": list(SHAPE),
            "rounds": args.rounds,
            "frames_per_round": args.frames,
            "aioflow_ms_per_frame": res["aioflow_ms"],
            "executor_ms_per_frame": res["executor_ms"],
            "aioflow_p90_ms": res["aioflow_p90_ms"],
            "executor_p90_ms": res["executor_p90_ms"],
            "speedup": ratio,
            "memcpy_ms": res["memcpy_ms"],
            "rounds_ms": [
                {"round": r, "aioflow": a * 1e3, "executor": b * 1e3} for r, a, b in res["rows"]
            ],
        }
        with open(args.json, "w") as fh:
            json.dump({"meta": meta, "results": results}, fh, indent=2)


if __name__ == "__main__":
    main()
