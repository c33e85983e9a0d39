"""One Redis edge against a raw redis-py producer/consumer written for the job.

    scripts/with-services python benchmarks/bench_redis_edge.py [--n 20000] [--size 100] [--frame]

raw: a producer XADDs batches of 100 (pipelined) while a consumer reads XREADGROUP COUNT 100 and
XACKs each batch (pipelined), in one process. aioflow: ``pipe.run(items, transport=...)`` through
one worker process that serves an identity block: the items cross the input stream, and the
answers come back on the run's reply stream. Items are ``size`` bytes; ``BENCH_QUEUE`` sets the
block's ``queue_size`` (the stream's backlog bound, default 64). ``--frame`` sends 640x480x3
uint8 frames (numpy) instead of bytes; raw sends their bytes. For profiling, ``BENCH_WORKER_PY``
adds interpreter options to the worker (``-m cProfile -o w.prof``) and ``BENCH_WORKER_ARGS``
worker options (``--prefetch 8``).
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

import numpy as np
import redis.asyncio as aioredis

import aioflow as af
from aioflow.transport.redis import RedisTransport

HERE = Path(__file__).resolve().parent


@af.block(queue_size=int(os.environ.get("BENCH_QUEUE", "64")))
async def identity(x: Any) -> Any:
    return x


pipe = af.Pipeline(identity, name="edge_bench")


async def raw(url: str, n: int, payload: bytes) -> float:
    client = aioredis.Redis.from_url(url)
    stream = f"bench:raw:{uuid.uuid4().hex}"
    await client.xgroup_create(stream, "g", id="0", mkstream=True)

    async def produce() -> None:
        for start in range(0, n, 100):
            p = client.pipeline(transaction=False)
            for _ in range(min(100, n - start)):
                p.xadd(stream, {b"v": payload})
            await p.execute()

    async def consume() -> None:
        got = 0
        while got < n:
            reply = await client.xreadgroup("g", "c", {stream: ">"}, count=100, block=1000)
            if not reply:
                continue
            entries = reply[0][1]
            p = client.pipeline(transaction=False)
            p.xack(stream, "g", *[eid for eid, _ in entries])
            p.xdel(stream, *[eid for eid, _ in entries])
            await p.execute()
            got += len(entries)

    t0 = time.perf_counter()
    await asyncio.gather(produce(), consume())
    elapsed = time.perf_counter() - t0
    await client.delete(stream)
    await client.aclose()
    return n / elapsed


async def ours(url: str, n: int, payload: Any, prefix: str) -> float:
    transport = RedisTransport(url, prefix=prefix)
    await pipe.run([payload] * 10, transport=transport)  # warm: the worker is up
    t0 = time.perf_counter()
    out = await pipe.run([payload] * n, transport=transport)
    elapsed = time.perf_counter() - t0
    assert len(out) == n
    return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument(
        "--frame", action="store_true", help="640x480x3 uint8 frames (numpy) instead of bytes"
    )
    args = parser.parse_args()
    url = os.environ["AIOFLOW_REDIS_URL"]
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    item: Any
    if args.frame:
        item = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
        payload = item.tobytes()
    else:
        item = payload = os.urandom(args.size)
    size = len(payload)
    worker = subprocess.Popen(
        [
            sys.executable,
            *os.environ.get("BENCH_WORKER_PY", "").split(),
            "-m",
            "aioflow",
            "worker",
            "bench_redis_edge:pipe",
            "--redis",
            url,
            "--blocks",
            "identity",
            "--prefix",
            prefix,
            *os.environ.get("BENCH_WORKER_ARGS", "").split(),
        ],
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), str(HERE)])},
    )
    try:
        for _ in range(args.reps):
            r = af.run(raw(url, args.n, payload))
            a = af.run(ours(url, args.n, item, prefix))
            print(
                f"{size} B items: raw {r:,.0f}/s ({r * size / 1e6:,.0f} MB/s), "
                f"aioflow {a:,.0f}/s ({a * size / 1e6:,.0f} MB/s): {a / r:.2f} of raw",
                flush=True,
            )
    finally:
        worker.terminate()
        worker.wait()


if __name__ == "__main__":
    main()
