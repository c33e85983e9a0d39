"""Scale-out: a segment whose block waits 20 ms per item (a simulated device), served by 1 and
by 4 worker processes.

    scripts/with-services python benchmarks/bench_redis_scaleout.py [--n 400]

Not part of ``make bench`` yet.
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=400)
    args = parser.parse_args()
    url = os.environ["AIOFLOW_REDIS_URL"]
    one = measure(url, args.n, 1)
    four = measure(url, args.n, 4)
    ratio = four / one
    print(f"20 ms/item: 1 worker {one:.1f} items/s, 4 workers {four:.1f} items/s: {ratio:.2f}x")


if __name__ == "__main__":
    main()
