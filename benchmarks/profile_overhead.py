"""The per-item overhead workload under a sampling profiler: K trivial async stages on uvloop.

Run it under py-spy (``pip install py-spy``, in the ``dev`` extra) to see where a trivial
pipeline spends its time; ``docs/benchmarks.md`` shows the flame graphs of K = 3 made this way,
before and after the hot path was thinned (issue 16):

    py-spy record -r 2000 -f flamegraph -o flame.svg -- python benchmarks/profile_overhead.py
    PYTHONPATH=../main py-spy record ... -- python benchmarks/profile_overhead.py  # other tree
"""

from __future__ import annotations

import argparse
import time

import uvloop

import aioflow as af


async def inc(x: int) -> int:
    return x + 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--stages", type=int, default=3)
    parser.add_argument("--reps", type=int, default=20)
    args = parser.parse_args()
    n, k = args.n, args.stages
    pipe = af.Pipeline(*[af.block(name=f"inc{i}")(inc) for i in range(k)], name=f"k{k}")
    t0 = time.perf_counter()
    for _ in range(args.reps):
        out = uvloop.run(pipe.run(range(n)))
        if len(out) != n or out[-1] != n - 1 + k:
            msg = f"wrong output: {len(out)} items"
            raise AssertionError(msg)
    us = (time.perf_counter() - t0) / (args.reps * n * k) * 1e6
    print(f"{us:.3f} us/item/stage ({af.__file__})")


if __name__ == "__main__":
    main()
