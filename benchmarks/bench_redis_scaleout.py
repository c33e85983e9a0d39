"""Scale-out: a segment whose block waits 20 ms per item (a simulated device), served by 1 and
by 4 worker processes.

    python benchmarks/bench_redis_scaleout.py [--n 400]
    python benchmarks/run_all.py --only redis_scaleout [--quick]

Uses the server of ``AIOFLOW_REDIS_URL``, or starts a throwaway redis-server on loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from bench_redis_edge import redis_server

import aioflow as af
from aioflow.transport.redis import RedisTransport

HERE = Path(__file__).resolve().parent


@af.block
async def device(x: int) -> int:
    await asyncio.sleep(0.02)  # one item at a time on the simulated device
    return x


pipe = af.Pipeline(device, name="scaleout_bench")


def measure(url: str, n: int, workers: int) -> float:
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), str(HERE)])}
    command = [sys.executable, "-m", "aioflow", "worker", "bench_redis_scaleout:pipe"]
    procs = [
        subprocess.Popen(
            [*command, "--redis", url, "--blocks", "device", "--prefix", prefix], env=env
        )
        for _ in range(workers)
    ]
    try:
        transport = RedisTransport(url, prefix=prefix)
        af.run(pipe.run(range(4 * workers), transport=transport))  # every worker is up
        t0 = time.perf_counter()
        out = af.run(pipe.run(range(n), transport=transport))
        elapsed = time.perf_counter() - t0
        assert out == list(range(n))
        return n / elapsed
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait()


def run(url: str, *, quick: bool, n: int | None = None) -> dict[str, Any]:
    """Items/s through 1 and through 4 worker processes of the 20 ms block."""
    n = n if n is not None else 100 if quick else 400
    one = measure(url, n, 1)
    four = measure(url, n, 4)
    return {
        "items": n,
        "ms_per_item": 20,
        "one_per_s": round(one, 1),
        "four_per_s": round(four, 1),
        "ratio": round(four / one, 2),
    }


def print_results(res: dict[str, Any]) -> None:
    print(
        f"20 ms/item: 1 worker {res['one_per_s']:.1f} items/s, 4 workers "
        f"{res['four_per_s']:.1f} items/s: {res['ratio']:.2f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=400)
    args = parser.parse_args()
    with redis_server() as url:
        print_results(run(url, quick=False, n=args.n))


if __name__ == "__main__":
    main()
