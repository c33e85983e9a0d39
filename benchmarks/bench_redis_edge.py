"""One Redis edge against a raw redis-py producer/consumer written for the job.

    python benchmarks/bench_redis_edge.py [--n 20000] [--size 100] [--frame] [--deep | --q64]
        [--keyed]
    python benchmarks/run_all.py --only redis_edge [--quick]

raw: a producer XADDs batches of 100 (pipelined) while a consumer reads XREADGROUP COUNT 100 and
XACKs each batch (pipelined), in one process; nothing bounds what the producer writes ahead.
aioflow: ``pipe.run(items, transport=...)`` through one worker process that serves an identity
block: the items cross the input stream, and the answers come back on the run's reply stream.
Items are ``size`` bytes. The block keeps the default ``queue_size``, so the stream's backlog
bound is the Redis edges' default (1024 items, at most 64 MiB of them: 72 frames), unless
``BENCH_QUEUE`` sets one; ``--q64`` uses ``queue_size=64`` (the local default, and the Redis
one before), ``--deep`` ``queue_size=1024``. The bound counts the items between the caller's
XADD and the worker's XACK, so at a given round-trip time it caps the rate. Besides items/s,
each run reports the CPU time per item of every process involved (raw: its loop and Redis;
aioflow: the caller, the worker and Redis), a figure the load of a shared machine disturbs far
less than the rate. Uses the server of
``AIOFLOW_REDIS_URL``, or starts a throwaway redis-server on loopback (:func:`redis_server`).

``--keyed`` keys the identity block (16 keys, from the item's first byte): the block's input is
then a keyed edge's partitions, each read by the worker that holds its lease, and each answer
committed with the owner's fencing check (docs/distributed.md).

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
from aioflow.transport.redis import _Credit as Credit

HERE = Path(__file__).resolve().parent


#: BENCH_QUEUE: the blocks' queue_size (else they keep the default)
SIZED: dict[str, Any] = (
    {"queue_size": int(os.environ["BENCH_QUEUE"])} if os.environ.get("BENCH_QUEUE") else {}
)


async def _identity(x: bytes) -> bytes:
    return x


async def _shape_of(frame: np.ndarray[Any, Any]) -> tuple[int, ...]:
    return tuple(frame.shape)


identity = af.block(_identity, name="identity", **SIZED)
shape_of = af.block(_shape_of, name="shape_of", **SIZED)

pipe = af.Pipeline(identity, name="edge_bench")

#: --q64: the identity block with the local default's bound (the Redis default before)
q64_pipe = af.Pipeline(identity.with_options(queue_size=64), name="edge_bench_q64")

#: --deep: the same identity block with a bound deep enough for the round trip
deep_pipe = af.Pipeline(identity.with_options(queue_size=1024), name="edge_bench_deep")


def by_byte(x: bytes) -> int:
    """--keyed: 16 keys, from the item's first byte."""
    return x[0] % 16


#: --keyed: the identity block keyed (its input in partitions, each with an owner's lease)
keyed_pipe = af.Pipeline(identity.with_options(key=by_byte), name="edge_bench_keyed")

#: --frame: the frame crosses once (to the worker); the answer is its shape
frame_pipe = af.Pipeline(shape_of, name="edge_bench_frame")
frame_q64_pipe = af.Pipeline(shape_of.with_options(queue_size=64), name="edge_bench_frame_q64")


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
    q64: bool = False,
    keyed: bool = False,
) -> dict[str, Any]:
    """``reps`` alternating runs of raw and aioflow; items/s of each, medians and ratio."""
    n = n if n is not None else (200 if quick else 1_000) if frame else 2_000 if quick else 20_000
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
        (frame_q64_pipe, "frame_q64_pipe", "shape_of")
        if frame and q64
        else (frame_pipe, "frame_pipe", "shape_of")
        if frame
        else (keyed_pipe, "keyed_pipe", "identity")
        if keyed
        else (q64_pipe, "q64_pipe", "identity")
        if q64
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
            load = os.getloadavg()[0]
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
                    "load": round(load, 1),
                }
            )
    finally:
        worker.terminate()
        worker.wait()
        server.close()
    raw_med = statistics.median(x["raw_per_s"] for x in runs)
    ours_med = statistics.median(x["aioflow_per_s"] for x in runs)
    first = which.stages[0]
    assert isinstance(first, af.Block)
    bound = Credit.for_stage("", first)
    bound.fit([size])
    return {
        "items": n,
        "size": size,
        # the block's option ("default" when it kept it), and the stream's bound in items
        "queue_size": first.options.queue_size if first._aioflow_sized else "default",
        "bound": bound.items,
        "answer": "the frame's shape" if frame else "the item",
        "runs": runs,
        "raw_per_s": raw_med,
        "aioflow_per_s": ours_med,
        "of_raw": round(ours_med / raw_med, 3),
        "raw_cpu_us": statistics.median(x["raw_cpu_us"] for x in runs),
        "aioflow_cpu_us": statistics.median(x["aioflow_cpu_us"] for x in runs),
    }


def run_part(url: str, *, quick: bool, reps: int = 3) -> dict[str, Any]:
    """``run_all.py``'s part: 100-byte items with the Redis edge's default bound, and under
    ``q64`` at ``queue_size=64``; under ``frame`` and ``frame_q64`` the same for 640x480x3
    frames."""
    return {
        **run(url, quick=quick, reps=reps),
        "q64": run(url, quick=quick, reps=reps, q64=True),
        "frame": run(url, quick=quick, reps=reps, frame=True),
        "frame_q64": run(url, quick=quick, reps=reps, frame=True, q64=True),
    }


def print_results(res: dict[str, Any]) -> None:
    for part in (res, *(res[k] for k in ("q64", "frame", "frame_q64", "deep") if k in res)):
        print(f"queue_size {part['queue_size']} (bound: {part.get('bound', '?')} items):")
        for x in part["runs"]:
            r, a = x["raw_per_s"], x["aioflow_per_s"]
            mb = part["size"] / 1e6
            print(
                f"  {part['size']} B items: raw {r:,.0f}/s ({r * mb:,.0f} MB/s), aioflow "
                f"{a:,.0f}/s ({a * mb:,.0f} MB/s): {a / r:.2f} of raw; CPU per item (all "
                f"processes): raw {x['raw_cpu_us']:.1f} us, aioflow {x['aioflow_cpu_us']:.1f} us"
            )
        print(f"  median: {part['of_raw']:.2f} of raw")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument(
        "--frame", action="store_true", help="640x480x3 uint8 frames (numpy) instead of bytes"
    )
    parser.add_argument(
        "--deep", action="store_true", help="the identity block with queue_size=1024"
    )
    parser.add_argument("--q64", action="store_true", help="the block with queue_size=64")
    parser.add_argument(
        "--keyed", action="store_true", help="the block keyed (16 keys): its input in partitions"
    )
    parser.add_argument("--n", type=int, default=None, help="items (20000; frames: 1000)")
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
                q64=args.q64,
                keyed=args.keyed,
            )
        )


if __name__ == "__main__":
    main()
