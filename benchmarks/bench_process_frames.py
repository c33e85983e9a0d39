"""Round trip of a value through a worker process: aioflow, ProcessPoolExecutor, a raw ring.

A value goes to a worker process, which hands it to a function, and the function's result comes
back. Three values: a 640x480x3 and a 1920x1080x3 ``uint8`` frame, and a small object (a dict of
a few numbers and strings). Two jobs for the frames:

- ``same``: the function returns the frame it was given (as a block that draws on the frame in
  place does): the cost of moving the frame there and back, nothing else;
- ``new``: the function returns ``frame ^ 1``, a new frame of the same size (one more pass
  over the frame in the worker, and a result that the transport has to move).

Four contenders, each with one worker process, at steady state (start-up and a warm-up
excluded), one call at a time, every result checked (and let go of before the next call):

- ``aioflow``: ``ProcessPool.call``, what a block with ``executor="process"`` runs (results
  copied out of shared memory: the caller's own);
- ``zero_copy``: the same with ``zero_copy=True`` (``@af.block(executor="process",
  zero_copy=True)``): results are read-only views of the worker's shared memory, lent until
  the caller lets go of them;
- ``executor``: ``loop.run_in_executor`` on a ``concurrent.futures.ProcessPoolExecutor``
  (everything pickled through a pipe both ways);
- ``ring``: a raw shared-memory peer written here: two pre-allocated segments (one each way),
  the array header through a socket that is also the wake-up, the caller blocking on it (no
  event loop). The frame is copied into the request segment, the worker runs the function on
  a view of it and copies the result into the response segment, and the caller copies the
  result out (the result must not alias a segment that the next call overwrites): what a
  hand-written transport with aioflow's guarantees costs.

Within each round the contenders take turns of a few calls; the order rotates each round. Each
call's round trip is timed and the medians over all calls are reported. One memcpy of each
frame is timed too, for scale.

    python benchmarks/bench_process_frames.py                  # 5 rounds
    python benchmarks/bench_process_frames.py --quick          # 2 rounds, fewer calls
    python benchmarks/bench_process_frames.py --json out.json  # also save the figures
"""

from __future__ import annotations

import argparse
import asyncio
import json
import mmap
import multiprocessing
import os
import pickle
import platform
import socket
import statistics
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

import aioflow as af
from aioflow._engine.processes import ProcessPool

CONTENDERS = ("aioflow", "zero_copy", "executor", "ring")
#: (case name, frame shape or None for the small object, job)
CASES: tuple[tuple[str, tuple[int, ...] | None, str], ...] = (
    ("small object", None, "same"),
    ("640x480x3, same", (480, 640, 3), "same"),
    ("640x480x3, new", (480, 640, 3), "new"),
    ("1920x1080x3, same", (1080, 1920, 3), "same"),
    ("1920x1080x3, new", (1080, 1920, 3), "new"),
)
#: calls per contender and round: (full, quick); the executor's 1080p calls take tens of ms
CALLS = {"small object": (400, 100), "640x480x3": (100, 40), "1920x1080x3": (60, 25)}
WARMUP = 5
#: calls in a row for one contender, before the next one's turn
TURN = 5
SMALL = {"camera": 3, "frame": 1234, "label": "car", "box": (10.0, 20.0, 110.0, 80.0), "score": 0.9}


def same(value: Any) -> Any:
    """The ``same`` job: the value it was given."""
    return value


def new(frame: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """The ``new`` job: a new frame of the same size."""
    return frame ^ 1


JOBS: dict[str, Callable[[Any], Any]] = {"same": same, "new": new}


def expected(value: Any, job: str) -> Any:
    return value ^ 1 if job == "new" else value


def check(name: str, out: Any, want: Any) -> None:
    ok = np.array_equal(out, want) if isinstance(want, np.ndarray) else out == want
    if not ok:
        msg = f"{name} returned a wrong result"
        raise AssertionError(msg)


# -- the raw shared-memory ring ---------------------------------------------------------------

_LEN = struct.Struct("!I")


def _send(sock: socket.socket, blob: bytes) -> None:
    sock.sendall(_LEN.pack(len(blob)) + blob)


def _recv(sock: socket.socket) -> bytes:
    head = sock.recv(_LEN.size, socket.MSG_WAITALL)
    if len(head) < _LEN.size:
        raise EOFError
    (n,) = _LEN.unpack(head)
    return sock.recv(n, socket.MSG_WAITALL) if n else b""


def _ring_worker(sock: socket.socket, request: str, response: str) -> None:
    """The ring's worker: a header in, the function on a view of the request segment, the
    result copied into the response segment, a header out."""
    maps = []
    for path in (request, response):
        with open(path, "r+b") as fh:
            maps.append(mmap.mmap(fh.fileno(), 0))
    req, resp = maps
    try:
        while True:
            try:
                header = pickle.loads(_recv(sock))
            except EOFError:
                return
            job, payload = header
            if payload[0] == "object":
                _send(sock, pickle.dumps(("object", JOBS[job](payload[1])), protocol=5))
                continue
            _, shape, dtype = payload
            out = JOBS[job](np.ndarray(shape, dtype, buffer=req))
            np.ndarray(out.shape, out.dtype, buffer=resp)[...] = out
            _send(sock, pickle.dumps(("array", out.shape, out.dtype.str), protocol=5))
            del out
    finally:
        sock.close()


class Ring:
    """The caller's side of the ring: one worker process, one segment each way."""

    def __init__(self, size: int) -> None:
        self._paths: list[str] = []
        self._maps: list[mmap.mmap] = []
        for _ in range(2):
            fd, path = tempfile.mkstemp(prefix="bench_ring_", dir="/dev/shm")
            os.ftruncate(fd, size)
            self._maps.append(mmap.mmap(fd, size))
            os.close(fd)
            self._paths.append(path)
        for m in self._maps:  # pre-touched: no page faults in the timed calls
            m.write(b"\0" * size)
        self._req, self._resp = self._maps
        ours, theirs = socket.socketpair()
        self._sock = ours
        ctx = multiprocessing.get_context("spawn")
        self._proc = ctx.Process(target=_ring_worker, args=(theirs, *self._paths), daemon=True)
        self._proc.start()
        theirs.close()

    def call(self, job: str, value: Any) -> Any:
        if isinstance(value, np.ndarray):
            np.ndarray(value.shape, value.dtype, buffer=self._req)[...] = value
            payload: tuple[Any, ...] = ("array", value.shape, value.dtype.str)
        else:
            payload = ("object", value)
        _send(self._sock, pickle.dumps((job, payload), protocol=5))
        reply = pickle.loads(_recv(self._sock))
        if reply[0] == "object":
            return reply[1]
        _, shape, dtype = reply
        return np.ndarray(shape, dtype, buffer=self._resp).copy()

    def close(self) -> None:
        self._sock.close()
        self._proc.join(10)
        for m in self._maps:
            m.close()
        for path in self._paths:
            os.unlink(path)


# -- the contenders ---------------------------------------------------------------------------


async def time_calls(
    name: str, call: Callable[[Any], Any], value: Any, want: Any, n: int
) -> list[float]:
    times: list[float] = []
    for _ in range(n):
        t0 = time.perf_counter()
        out = call(value)
        if asyncio.isfuture(out) or asyncio.iscoroutine(out):
            out = await out
        times.append(time.perf_counter() - t0)
        check(name, out, want)
        del out
    return times


def time_memcpy(frame: np.ndarray[Any, Any], n: int = 30) -> float:
    dest = np.empty_like(frame)
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        np.copyto(dest, frame)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


async def measure(rounds: int, quick: bool) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    rng = np.random.default_rng(0)
    largest = max(int(np.prod(shape)) for _, shape, _ in CASES if shape is not None)
    pools = {
        (job, lend): ProcessPool(f"bench_{job}", 1, fn, "function", zero_copy=lend)
        for job, fn in JOBS.items()
        for lend in (False, True)
    }
    for pool in pools.values():
        await pool.start()
    executor = ProcessPoolExecutor(max_workers=1)
    ring = Ring(largest)
    rows: list[dict[str, Any]] = []
    try:
        for case, shape, job in CASES:
            value: Any = SMALL if shape is None else rng.integers(0, 256, shape, dtype=np.uint8)
            want = expected(value, job)
            fn = JOBS[job]
            calls: dict[str, Callable[[Any], Any]] = {
                "aioflow": pools[job, False].call,
                "zero_copy": pools[job, True].call,
                "executor": lambda v, fn=fn: loop.run_in_executor(executor, fn, v),  # type: ignore[misc]
                "ring": lambda v, job=job: ring.call(job, v),  # type: ignore[misc]
            }
            n = CALLS[case.split(",")[0]][1 if quick else 0]
            times: dict[str, list[float]] = {c: [] for c in CONTENDERS}
            per_round: dict[str, list[float]] = {c: [] for c in CONTENDERS}
            for c in CONTENDERS:
                await time_calls(c, calls[c], value, want, WARMUP)
            for r in range(rounds):
                k = r % len(CONTENDERS)
                order = CONTENDERS[k:] + CONTENDERS[:k]  # rotate who goes first
                got: dict[str, list[float]] = {c: [] for c in CONTENDERS}
                # Short turns, so that a burst of load on the shared machine hits all three.
                for _ in range(0, n, TURN):
                    for c in order:
                        got[c] += await time_calls(c, calls[c], value, want, TURN)
                for c in CONTENDERS:
                    times[c] += got[c]
                    per_round[c].append(statistics.median(got[c]) * 1e3)
            row: dict[str, Any] = {"case": case, "calls_each": len(times["aioflow"])}
            for c in CONTENDERS:
                row[f"{c}_ms"] = statistics.median(times[c]) * 1e3
                row[f"{c}_p90_ms"] = statistics.quantiles(times[c], n=10)[-1] * 1e3
                row[f"{c}_rounds_ms"] = per_round[c]
            if shape is not None:
                row["memcpy_ms"] = time_memcpy(value) * 1e3
            rows.append(row)
    finally:
        ring.close()
        executor.shutdown(wait=True)
        for pool in pools.values():
            await pool.close()
    return {"rounds": rounds, "rows": rows}


def run(*, quick: bool, reps: int | None = None) -> dict[str, Any]:
    """For ``run_all.py``: the figures, ready to save."""
    rounds = reps or (2 if quick else 5)
    res: dict[str, Any] = af.run(measure(rounds, quick))
    return res


def print_frames(res: dict[str, Any]) -> None:
    print(f"Round trip through one worker process, medians over {res['rounds']} rounds (ms):")
    print(
        f"{'case':20} {'aioflow':>8} {'zero_copy':>9} {'executor':>9} {'ring':>7} {'memcpy':>7}"
        f" {'executor/zc':>12} {'ring/zc':>8}"
    )
    for row in res["rows"]:
        memcpy = f"{row['memcpy_ms']:7.3f}" if "memcpy_ms" in row else f"{'':7}"
        print(
            f"{row['case']:20} {row['aioflow_ms']:8.3f} {row['zero_copy_ms']:9.3f}"
            f" {row['executor_ms']:9.3f} {row['ring_ms']:7.3f} {memcpy}"
            f" {row['executor_ms'] / row['zero_copy_ms']:11.1f}x"
            f" {row['ring_ms'] / row['zero_copy_ms']:7.2f}x"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, help="alternating rounds (default 5, quick 2)")
    parser.add_argument("--quick", action="store_true", help="2 rounds, fewer calls")
    parser.add_argument("--json", help="write the results to this file")
    args = parser.parse_args()
    res = run(quick=args.quick, reps=args.rounds)
    print_frames(res)
    if args.json:
        meta = {
            "python": sys.version.split()[0],
            "numpy": np.__version__,
            "platform": platform.platform(),
            "aioflow": af.__version__,
            "date": time.strftime("%Y-%m-%d"),
        }
        with open(args.json, "w") as fh:
            json.dump({"meta": meta, **res}, fh, indent=1)


if __name__ == "__main__":
    main()
