"""Per-item overhead counted, not timed: instructions and mispredicted branches per item and
stage under valgrind, for one checkout or several side by side.

On a small shared machine the timings of ``compare_overhead.py`` move by a few percent from one
run to the next; valgrind's counts do not (within about 0.5%), so a change of 1-2% shows here
that no timing could settle. Each checkout runs the K-stage trivial pipeline of
``bench_overhead.py`` twice under ``valgrind --tool=callgrind`` (N small and N large, after a
warm-up run), and the difference of the two runs divided by the extra items and the stages is
what one item costs in one stage: start-up and imports cancel out. The branch figures come from
valgrind's simple predictor model: a direction, not a measurement of the CPU.

    python benchmarks/count_overhead.py . ../main          # this checkout and main
    python benchmarks/count_overhead.py . --stages 1 --no-branches

It takes about a minute per checkout (two or three with the branch model).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

WORK = r"""
import sys, uvloop
import aioflow as af
async def inc(x):
    return x + 1
n, k = int(sys.argv[1]), int(sys.argv[2])
pipe = af.Pipeline(*[af.block(name=f"inc{i}")(inc) for i in range(k)], name="count")
uvloop.run(pipe.run(range(1000)))
out = uvloop.run(pipe.run(range(n)))
if len(out) != n or out[-1] != n - 1 + k:
    raise AssertionError(f"wrong output: {len(out)} items")
"""

FIELDS = {
    "instructions": r"I\s+refs:\s+([\d,]+)",
    "cond_mispredicts": r"Mispredicts:\s+[\d,]+\s+\(\s*([\d,]+) cond",
    "ind_mispredicts": r"cond \+\s*([\d,]+) ind",
}


def count(tree: Path, script: Path, n: int, k: int, branches: bool) -> dict[str, int]:
    env = dict(os.environ, PYTHONPATH=str(tree), PYTHONHASHSEED="0", OPENBLAS_NUM_THREADS="1")
    cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"]
    if branches:
        cmd.append("--branch-sim=yes")
    proc = subprocess.run(
        [*cmd, sys.executable, str(script), str(n), str(k)],
        env=env,
        capture_output=True,
        text=True,
        cwd="/",
    )
    if proc.returncode:
        msg = f"counting {tree} failed:\n{proc.stderr[-2000:]}"
        raise RuntimeError(msg)
    found = {}
    for name, pattern in FIELDS.items():
        match = re.search(pattern, proc.stderr)
        if match:
            found[name] = int(match.group(1).replace(",", ""))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trees", nargs="+", help="checkouts (directories holding aioflow/)")
    parser.add_argument("--stages", type=int, default=3)
    parser.add_argument("--small", type=int, default=5_000)
    parser.add_argument("--large", type=int, default=25_000)
    parser.add_argument("--no-branches", action="store_true", help="skip the branch model")
    args = parser.parse_args()
    k = args.stages
    per = (args.large - args.small) * k
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "work.py"
        script.write_text(WORK)
        print(f"K={k}, per item and stage, runs of {args.large} less runs of {args.small} items")
        print(f"{'checkout':40} {'instr.':>8} {'cond.mis':>9} {'ind.mis':>8}")
        for tree in args.trees:
            path = Path(tree).resolve()
            a = count(path, script, args.small, k, not args.no_branches)
            b = count(path, script, args.large, k, not args.no_branches)
            row = {name: (b[name] - a[name]) / per for name in a}
            print(
                f"{str(path)[-40:]:40} {row['instructions']:8.0f} "
                f"{row.get('cond_mispredicts', float('nan')):9.2f} "
                f"{row.get('ind_mispredicts', float('nan')):8.2f}"
            )


if __name__ == "__main__":
    main()
