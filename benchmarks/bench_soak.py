"""Soak: a million synthetic frames through a flagship-shaped pipeline with planted faults.

The pipeline has the flagship demo's shape on small synthetic frames (24x32 RGB, so that it runs
on 2 cores): an async decode, a keyed tracker with per-camera state, a thread block that fails
now and then and is retried (``af.Retry``), a process block (2 workers, frames by shared memory)
that fails now and then and skips (``on_error="skip"``), a batched "detector" in a thread whose
batches fail now and then (skipped), and a publisher behind a leaky edge
(``overflow="drop_oldest"``) that stalls now and then.

What it checks, in a fresh interpreter:

* the books balance exactly: every input ends as an output, a counted drop, a counted skip
  (outputs + drops + skips + filtered == inputs, no failures), and every block's
  ``received == completed + dropped + skipped + failed + in_flight + queue_depth``;
* RSS (this process, and this process plus its worker processes), sampled every half second,
  stays flat: the growth from the first tenth of the run to the end;
* nothing is left: no thread, no child process, no ``/dev/shm/aioflow*`` segment.

    python benchmarks/bench_soak.py             # 1,000,000 items
    python benchmarks/bench_soak.py --quick     # 50,000 items
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from typing import Any

import numpy as np

import aioflow as af

MB = 1024 * 1024
CAMERAS = 8
H, W = 24, 32
#: One item in this many fails, per kind of fault (primes, so the faults rarely coincide).
RETRY_EVERY = 997  # the thread block: the first attempt fails, the second succeeds
SKIP_EVERY = 1009  # the process block: the item fails and is skipped
BATCH_EVERY = 10007  # the batched block: the batch holding the item fails, all of it skipped
STALL_EVERY = 4999  # the publisher stalls 2 ms: its leaky queue drops the oldest frames

#: How many items the two modes push through.
ITEMS = {"quick": 50_000, "full": 1_000_000}


# -- the blocks (module level: the process block's function is imported by its workers) ------


def features(item: dict[str, Any]) -> dict[str, Any]:
    """The process block: a reduction of the frame, computed in a worker process."""
    if item["index"] % SKIP_EVERY == 0:
        msg = f"corrupt frame {item['index']}"
        raise ValueError(msg)
    frame = item["frame"]
    return {**item, "frame": frame[::2, ::2].copy(), "level": int(frame[0, 0, 0])}


class Tracker(af.Block):
    """Per-camera state: the last index seen and a running count (in order per camera)."""

    def create_state(self, key: Any) -> dict[str, int]:
        return {"last": -1, "count": 0}

    async def process(self, item: dict[str, Any], state: dict[str, int]) -> dict[str, Any]:
        if item["index"] <= state["last"]:
            msg = f"camera {item['camera']}: frame {item['index']} after {state['last']}"
            raise AssertionError(msg)  # per-key order broken: the soak fails
        state["last"] = item["index"]
        state["count"] += 1
        return {**item, "seen": state["count"]}


def build() -> af.Pipeline:
    import asyncio
    import threading

    @af.block(name="soak_decode")
    async def decode(index: int) -> dict[str, Any]:
        frame = np.full((H, W, 3), index % 251, np.uint8)
        return {"index": index, "camera": index % CAMERAS, "frame": frame}

    tried: set[int] = set()
    lock = threading.Lock()

    @af.block(
        name="soak_normalise",
        executor="thread",
        workers=2,
        on_error=af.Retry(attempts=3, backoff=0.0001),
    )
    def normalise(item: dict[str, Any]) -> dict[str, Any]:
        index = item["index"]
        if index % RETRY_EVERY == 0:
            with lock:
                first = index not in tried
                tried.add(index)
            if first:
                msg = f"flaky read of frame {index}"
                raise OSError(msg)
        return item

    @af.block(
        name="soak_detect",
        executor="thread",
        batch=af.Batch(max_size=16, max_wait=0.002),
        on_error="skip",
    )
    def detect(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if any(it["index"] % BATCH_EVERY == 0 for it in items):
            msg = "the detector failed on a batch"
            raise RuntimeError(msg)
        return [{**it, "boxes": int(it["frame"].mean() > 100)} for it in items]

    @af.block(name="soak_publish", queue_size=4, overflow="drop_oldest")
    async def publish(item: dict[str, Any]) -> int:
        if item["index"] % STALL_EVERY == 0:
            await asyncio.sleep(0.002)  # the webhook is slow for a moment
        return int(item["index"])

    return af.Pipeline(
        decode,
        Tracker(name="soak_track", key=lambda item: item["camera"], workers=4),
        normalise,
        af.block(name="soak_features", executor="process", workers=2, on_error="skip")(features),
        detect,
        publish,
        name="soak",
    )


# -- one run, in a fresh interpreter ------------------------------------------------------------


def child(n: int) -> dict[str, Any]:
    import asyncio
    import gc
    import glob
    import logging
    import multiprocessing
    import threading
    import time

    import psutil

    logging.getLogger("aioflow").setLevel(logging.ERROR)  # skips log a warning each
    proc = psutil.Process()
    threads_before = set(threading.enumerate())
    pipe = build()
    samples: list[dict[str, float | None]] = []
    outputs = 0

    def rss_total() -> int:
        total = proc.memory_info().rss
        for kid in proc.children(recursive=True):
            try:
                total += kid.memory_info().rss
            except psutil.Error:
                pass
        return total

    async def sample(t0: float) -> None:
        while True:
            samples.append(
                {
                    "t_s": time.perf_counter() - t0,
                    "items": outputs,
                    "rss_mb": proc.memory_info().rss / MB,
                    "rss_with_workers_mb": rss_total() / MB,
                }
            )
            await asyncio.sleep(0.5)

    async def main() -> float:
        nonlocal outputs
        t0 = time.perf_counter()
        sampler = asyncio.create_task(sample(t0))
        try:
            async for _ in pipe.stream(range(n)):
                outputs += 1
        finally:
            sampler.cancel()
            try:
                await sampler
            except asyncio.CancelledError:
                pass
        return time.perf_counter() - t0

    gc.collect()
    rss_before = proc.memory_info().rss / MB
    elapsed = af.run(main())
    gc.collect()
    rss_after = proc.memory_info().rss / MB
    # The workers have exited by now: the last sample has this process only.
    samples.append(
        {"t_s": elapsed, "items": outputs, "rss_mb": rss_after, "rss_with_workers_mb": None}
    )

    stats = {name: s.as_dict() for name, s in pipe.statistics().items()}
    dropped = sum(s["dropped"] for s in stats.values())
    skipped = sum(s["skipped"] for s in stats.values())
    filtered = sum(s["filtered"] for s in stats.values())
    failed = sum(s["failed"] for s in stats.values())
    unbalanced = [name for name, s in pipe.statistics().items() if not s.balanced]
    idle = all(s["in_flight"] == 0 and s["queue_depth"] == 0 for s in stats.values())
    books = {
        "inputs": n,
        "outputs": outputs,
        "dropped": dropped,
        "skipped": skipped,
        "filtered": filtered,
        "failed": failed,
        "retried": sum(s["retried"] for s in stats.values()),
        "balance": outputs + dropped + skipped + filtered + failed == n
        and failed == 0
        and not unbalanced
        and idle,
        "unbalanced_blocks": unbalanced,
    }
    leaks = {
        "threads": [t.name for t in threading.enumerate() if t not in threads_before],
        "processes": [p.name for p in multiprocessing.active_children()],
        "shm_segments": glob.glob("/dev/shm/aioflow_soak*"),
    }
    # RSS growth: from the end of the first tenth of the run (pools started, caches warm) to
    # the end of the run.
    warm = [s for s in samples if (s["items"] or 0) >= n // 10] or samples
    return {
        "items": n,
        "elapsed_s": elapsed,
        "items_per_s": n / elapsed,
        "rss_before_mb": rss_before,
        "rss_after_mb": rss_after,
        "rss_peak_mb": max(float(s["rss_mb"] or 0) for s in samples),
        "rss_growth_mb": float(samples[-1]["rss_mb"] or 0) - float(warm[0]["rss_mb"] or 0),
        "books": books,
        "leaks": leaks,
        "statistics": stats,
        "samples": samples,
    }


def measure(n: int) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", str(n)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        msg = f"the soak run failed (exit code {proc.returncode}):\n{proc.stderr[-4000:]}"
        raise RuntimeError(msg)
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def run(*, quick: bool) -> dict[str, Any]:
    res = measure(ITEMS["quick" if quick else "full"])
    clean = not any(res["leaks"].values())
    res["goal"] = {
        "books_balance": res["books"]["balance"],
        "nothing_left": clean,
        "rss_growth_limit_mb": 20,
        "met": res["books"]["balance"] and clean and res["rss_growth_mb"] <= 20,
    }
    return res


def print_soak(res: dict[str, Any]) -> None:
    b = res["books"]
    print(f"soak: {res['items']:,} items in {res['elapsed_s']:.1f} s ({res['items_per_s']:,.0f}/s)")
    print(
        f"  books: {b['outputs']:,} outputs + {b['dropped']:,} dropped + {b['skipped']:,} "
        f"skipped + {b['filtered']:,} filtered + {b['failed']:,} failed = "
        f"{b['outputs'] + b['dropped'] + b['skipped'] + b['filtered'] + b['failed']:,} "
        f"of {b['inputs']:,} inputs ({'balance' if b['balance'] else 'DO NOT balance'}); "
        f"{b['retried']:,} retries"
    )
    print(
        f"  RSS: {res['rss_before_mb']:.1f} MB before, {res['rss_after_mb']:.1f} MB after, "
        f"peak {res['rss_peak_mb']:.1f} MB, growth after warm-up {res['rss_growth_mb']:+.1f} MB"
    )
    left = {k: v for k, v in res["leaks"].items() if v}
    print(f"  left behind: {left or 'nothing'}")
    print(f"  goal: {'met' if res['goal']['met'] else 'NOT met'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="50,000 items")
    parser.add_argument("--json", help="also write the result here")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child)))
        return
    res = run(quick=args.quick)
    print_soak(res)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=1)


if __name__ == "__main__":
    main()
