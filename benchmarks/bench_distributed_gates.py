"""The flagship distributed: ``make demo``'s pipeline run locally against the same pipeline with
its models in worker processes (``examples/distributed/``), with 1 and 2 workers per segment.

    python benchmarks/bench_distributed_gates.py [--reps 2] [--cameras 3] [--seconds 10]
    python benchmarks/run_all.py --only distributed_gates [--quick]

Each variant runs as a user runs it, in a process of its own, on the same generated clips (the
demo's: level medium, seed 7): ``examples/gates/run.py`` (local) and
``examples/distributed/run.py --workers N`` (a throwaway redis-server, the workers, the caller;
or the server of ``AIOFLOW_REDIS_URL``). The variants take turns, the order rotated each
repetition, so that the machine's load falls on each alike. From each run's own report: frames/s
(frames over the pipeline's wall time: the local run from its first frame, the distributed one
from the moment every worker is up), each block's busy time over that wall time (where the time
goes), and the accuracy line. The figure to compare is the median per variant.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

VARIANTS = ("local", "workers_1", "workers_2")
_RATE = re.compile(r"^(\d+) frames in ([\d.]+) s: ([\d.]+) frames/s", re.M)
_BLOCK = re.compile(r"^(\w+)\s+(\d+)\s+(\d+)\s+([\d.]+)\s+(\d+)%", re.M)
_ACCURACY = re.compile(r"^accuracy: (.*)$", re.M)
_CORRECT = re.compile(r"(\d+)/(\d+) plates read correctly")


def command(variant: str, out: Path, cameras: int, seconds: float, url: str | None) -> list[str]:
    common = ["--cameras", str(cameras), "--seconds", f"{seconds:g}", "--out", str(out)]
    if variant == "local":
        return [sys.executable, str(ROOT / "examples/gates/run.py"), *common]
    workers = variant.removeprefix("workers_")
    extra = ["--redis", url] if url else []
    script = str(ROOT / "examples/distributed/run.py")
    return [sys.executable, script, *common, "--workers", workers, *extra]


def parse(text: str) -> dict[str, Any]:
    """The figures of one run's printed report."""
    rate = _RATE.search(text)
    if rate is None:
        msg = f"no 'frames in ... s' line in the run's output:\n{text[-3000:]}"
        raise RuntimeError(msg)
    frames, wall = int(rate.group(1)), float(rate.group(2))
    busy = {m.group(1): float(m.group(4)) for m in _BLOCK.finditer(text)}
    accuracy = _ACCURACY.search(text)
    line = accuracy.group(1) if accuracy else ""
    correct = _CORRECT.search(line)
    return {
        "frames": frames,
        "wall_s": wall,
        "frames_per_s": frames / wall,
        "busy_s": busy,
        "accuracy": line,
        "plates_correct": int(correct.group(1)) if correct else None,
        "plates_shown": int(correct.group(2)) if correct else None,
    }


def one(variant: str, cameras: int, seconds: float, url: str | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"aioflow-bench-dgates-{variant}-") as folder:
        cmd = command(variant, Path(folder), cameras, seconds, url)
        load = os.getloadavg()[0]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=900)
        elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        msg = f"{variant} exited {proc.returncode}:\n{(proc.stdout + proc.stderr)[-3000:]}"
        raise RuntimeError(msg)
    return parse(proc.stdout) | {"load_average_start": load, "process_s": round(elapsed, 1)}


def run(*, quick: bool, reps: int | None = None, cameras: int = 3, seconds: float = 10.0,
        url: str | None = None) -> dict[str, Any]:  # fmt: skip
    """Every variant ``reps`` times, taking turns; medians per variant."""
    if quick:
        reps, cameras, seconds = 1, 1, 3.0
    reps = reps or 2
    url = url or os.environ.get("AIOFLOW_REDIS_URL")
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
    for rep in range(reps):
        order = VARIANTS[rep % len(VARIANTS) :] + VARIANTS[: rep % len(VARIANTS)]
        for variant in order:
            res = one(variant, cameras, seconds, url)
            runs[variant].append(res)
            print(
                f"  rep {rep + 1} {variant:9}: {res['frames_per_s']:5.1f} frames/s "
                f"(load {res['load_average_start']:.1f}); {res['accuracy']}",
                flush=True,
            )
    median = {v: statistics.median(r["frames_per_s"] for r in rs) for v, rs in runs.items()}
    return {
        "cameras": cameras,
        "seconds": seconds,
        "reps": reps,
        "runs": runs,
        "frames_per_s": median,
        "of_local": {v: median[v] / median["local"] for v in VARIANTS},
    }


def print_results(res: dict[str, Any]) -> None:
    for v in VARIANTS:
        rs = res["runs"][v]
        cells = ", ".join(f"{r['frames_per_s']:.1f}" for r in rs)
        print(
            f"{v:9}: {res['frames_per_s'][v]:5.1f} frames/s (runs {cells}), "
            f"{res['of_local'][v]:.2f} of local"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--cameras", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--quick", action="store_true", help="1 camera x 3 s, once each")
    args = parser.parse_args()
    print_results(run(quick=args.quick, reps=args.reps, cameras=args.cameras, seconds=args.seconds))


if __name__ == "__main__":
    main()
