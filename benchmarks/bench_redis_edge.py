"""One Redis edge against a raw redis-py producer/consumer written for the job.

    python benchmarks/bench_redis_edge.py [--n 20000] [--size 100] [--frame] [--deep]
    python benchmarks/run_all.py --only redis_edge [--quick]

raw: a producer XADDs batches of 100 (pipelined) while a consumer reads XREADGROUP COUNT 100 and
XACKs each batch (pipelined), in one process; nothing bounds what the producer writes ahead.
aioflow: ``pipe.run(items, transport=...)`` through one worker process that serves an identity
block: the items cross the input stream, and the answers come back on the run's reply stream.
Items are ``size`` bytes; ``BENCH_QUEUE`` sets the block's ``queue_size`` (the stream's backlog
bound, default 64). The bound counts the items between the caller's XADD and the worker's XACK,
so at a given round-trip time it caps the rate; ``--deep`` uses ``queue_size=1024`` to compare
with raw's unbounded producer. Besides items/s, each run reports the CPU time per item of every
process involved (raw: its loop and Redis; aioflow: the caller, the worker and Redis), a figure
the load of a shared machine disturbs far less than the rate. Uses the server of
``AIOFLOW_REDIS_URL``, or starts a throwaway redis-server on loopback (:func:`redis_server`).

``--frame`` sends 640x480x3 uint8 frames (numpy) instead of bytes (raw sends their bytes), to a
block that answers with the frame's shape: each frame crosses Redis once, as raw's bytes do (an
identity block would send every frame back as its answer, two crossings against raw's one).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import redis
import redis.asyncio as aioredis

import aioflow as af
from aioflow.transport.redis import RedisTransport

HERE = Path(__file__).resolve().parent


@af.block(queue_size=int(os.environ.get("BENCH_QUEUE", "64")))
async def identity(x: bytes) -> bytes:
    return x


pipe = af.Pipeline(identity, name="edge_bench")


@af.block(queue_size=int(os.environ.get("BENCH_QUEUE", "64")))
async def shape_of(frame: np.ndarray[Any, Any]) -> tuple[int, ...]:
    return tuple(frame.shape)


#: --deep: the same identity block with a bound deep enough for the round trip
deep_pipe = af.Pipeline(identity.with_options(queue_size=1024), name="edge_bench_deep")

#: --frame: the frame crosses once (to the worker); the answer is its shape
frame_pipe = af.Pipeline(shape_of, name="edge_bench_frame")


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


async def ours(url: str, n: int, payload: Any, prefix: str, which: af.Pipeline = pipe) -> float:
    transport = RedisTransport(url, prefix=prefix)
    await which.run([payload] * 10, transport=transport)  # warm: the worker is up
    t0 = time.perf_counter()
    out = await which.run([payload] * n, transport=transport)
    elapsed = time.perf_counter() - t0
    assert len(out) == n
    return n / elapsed


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """``AIOFLOW_REDIS_URL`` when set, else a throwaway redis-server on a free loopback port
    (as ``scripts/with-services`` starts one), stopped on the way out."""
    url = os.environ.get("AIOFLOW_REDIS_URL")
    if url:
        yield url
        return
    binary = shutil.which("redis-server")
    if binary is None:
        msg = "redis-server is not installed (apt install redis-server) and AIOFLOW_REDIS_URL unset"
        raise SystemExit(msg)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="aioflow-bench-redis-") as folder:
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
             "no", "--dir", folder],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            url = f"redis://127.0.0.1:{port}/0"
            client = redis.Redis.from_url(url)
            for _ in range(200):
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    time.sleep(0.05)
            client.close()
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def run(
    url: str,
    *,
    quick: bool,
    reps: int = 3,
    n: int | None = None,
    size: int = 100,
    frame: bool = False,
    deep: bool = False,
) -> dict[str, Any]:
    """``reps`` alternating runs of raw and aioflow; items/s of each, medians and ratio."""
    n = n if n is not None else 2_000 if quick else 20_000
    reps = 1 if quick else reps
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    item: Any
    if frame:
        item = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
        payload = item.tobytes()
        size = len(payload)
    else:
        item = payload = os.urandom(size)
    which, target, block = (
        (frame_pipe, "frame_pipe", "shape_of")
        if frame
        else (deep_pipe, "deep_pipe", "identity")
        if deep
        else (pipe, "pipe", "identity")
    )
    worker = subprocess.Popen(
        [sys.executable, "-m", "aioflow", "worker", f"bench_redis_edge:{target}", "--redis", url,
         "--blocks", block, "--prefix", prefix],
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), str(HERE)])},
    )  # fmt: skip
    runs = []
    server = redis.Redis.from_url(url)
    proc = psutil.Process(worker.pid)

    def cpu() -> float:
        """CPU seconds so far of this process (raw's loop, or aioflow's caller), the Redis
        server and the worker (idle while raw runs)."""
        info = server.info("cpu")
        times = proc.cpu_times()
        return (
            time.process_time()
            + info["used_cpu_user"]
            + info["used_cpu_sys"]
            + times.user
            + times.system
        )

    try:
        # The worker is up before the first rep: its start (an interpreter importing aioflow)
        # would otherwise take a core from raw's first rep.
        af.run(ours(url, 10, item, prefix, which))
        for _ in range(reps):
            c0 = cpu()
            r = af.run(raw(url, n, payload))
            c1 = cpu()
            a = af.run(ours(url, n, item, prefix, which))
            c2 = cpu()
            runs.append(
                {
                    "raw_per_s": round(r, 1),
                    "aioflow_per_s": round(a, 1),
                    "raw_cpu_us": round((c1 - c0) / n * 1e6, 2),
                    "aioflow_cpu_us": round((c2 - c1) / n * 1e6, 2),
                }
            )
    finally:
        worker.terminate()
        worker.wait()
        server.close()
    raw_med = statistics.median(x["raw_per_s"] for x in runs)
    ours_med = statistics.median(x["aioflow_per_s"] for x in runs)
    return {
        "items": n,
        "size": size,
        "queue_size": which.stages[0].options.queue_size,
        "answer": "the frame's shape" if frame else "the item",
        "runs": runs,
        "raw_per_s": raw_med,
        "aioflow_per_s": ours_med,
        "of_raw": round(ours_med / raw_med, 3),
        "raw_cpu_us": statistics.median(x["raw_cpu_us"] for x in runs),
        "aioflow_cpu_us": statistics.median(x["aioflow_cpu_us"] for x in runs),
    }


def run_part(url: str, *, quick: bool, reps: int = 3) -> dict[str, Any]:
    """``run_all.py``'s part: 100-byte items at the default ``queue_size`` (64), and under
    ``deep`` at 1024."""
    return {**run(url, quick=quick, reps=reps), "deep": run(url, quick=quick, reps=reps, deep=True)}


def print_results(res: dict[str, Any]) -> None:
    for x in res["runs"]:
        r, a = x["raw_per_s"], x["aioflow_per_s"]
        mb = res["size"] / 1e6
        print(
            f"{res['size']} B items: raw {r:,.0f}/s ({r * mb:,.0f} MB/s), aioflow {a:,.0f}/s "
            f"({a * mb:,.0f} MB/s): {a / r:.2f} of raw; CPU per item (all processes): raw "
            f"{x['raw_cpu_us']:.1f} us, aioflow {x['aioflow_cpu_us']:.1f} us"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument(
        "--frame", action="store_true", help="640x480x3 uint8 frames (numpy) instead of bytes"
    )
    parser.add_argument(
        "--deep", action="store_true", help="the identity block with queue_size=1024"
    )
    args = parser.parse_args()
    with redis_server() as url:
        print_results(
            run(
                url,
                quick=False,
                reps=args.reps,
                n=args.n,
                size=args.size,
                frame=args.frame,
                deep=args.deep,
            )
        )


if __name__ == "__main__":
    main()
