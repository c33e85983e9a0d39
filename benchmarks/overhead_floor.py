"""The floor of aioflow's design for the per-item overhead, beside aioflow itself.

K trivial async stages (``x + 1``), N items, on uvloop, as in ``bench_overhead.py``. *floor* is
the least a pipeline built the way aioflow's is can do: one task per stage, each edge a deque of
envelopes bounded at ``queue_size``, a stage that finds items waiting takes a whole run of them
(as many as wait and fit downstream), awaits the function on each and appends it downstream, and
one future per wait, woken once per run. It keeps no books, looks at no control item, times
nothing, honours no ``max_age``, catches no error and cannot be cancelled cleanly: what is left
between it and aioflow is what those cost. Each repetition times both in one fresh interpreter,
alternating which goes first; the CPU time of the process is the clock (the steadier one on a
shared machine). Medians over the repetitions:

    python benchmarks/overhead_floor.py                 # K = 3, queue_size 64
    python benchmarks/overhead_floor.py --queue-size 256
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
from collections import deque
from collections.abc import Awaitable, Callable
from itertools import islice
from pathlib import Path
from typing import Any


async def inc(x: int) -> int:
    return x + 1


class _Env:
    __slots__ = ("born", "value")

    def __init__(self, value: Any) -> None:
        self.value = value
        self.born = 0.0


class _Edge:
    def __init__(self) -> None:
        self.buf: deque[_Env] = deque()
        self.getter: asyncio.Future[None] | None = None
        self.putter: asyncio.Future[None] | None = None
        self.closed = False


def _wake(fut: asyncio.Future[None] | None) -> None:
    if fut is not None and not fut.done():
        fut.set_result(None)


async def _stage(
    inq: _Edge, out: _Edge, fn: Callable[[Any], Awaitable[Any]], capacity: int
) -> None:
    buf, obuf = inq.buf, out.buf
    take, hand = buf.popleft, obuf.append
    loop = asyncio.get_running_loop()
    while True:
        n = len(buf)
        if not n:
            if inq.closed:
                out.closed = True
                _wake(out.getter)
                return
            inq.getter = loop.create_future()
            await inq.getter
            inq.getter = None
            continue
        room = capacity - len(obuf)
        if room <= 0:
            out.putter = loop.create_future()
            await out.putter
            out.putter = None
            continue
        run = n if n < room else room
        for env in islice(iter(take, None), run):
            env.value = await fn(env.value)
            hand(env)
        _wake(inq.putter)
        _wake(out.getter)


async def floor_run(n: int, k: int, capacity: int) -> list[int]:
    """``n`` items through ``k`` stages built as described above; the outputs, in order."""
    loop = asyncio.get_running_loop()
    edges = [_Edge() for _ in range(k + 1)]
    stages = [
        asyncio.ensure_future(_stage(edges[i], edges[i + 1], inc, capacity)) for i in range(k)
    ]
    first, last = edges[0], edges[k]
    items = iter(range(n))

    async def source() -> None:
        buf = first.buf
        while True:
            room = capacity - len(buf)
            if room <= 0:
                first.putter = loop.create_future()
                await first.putter
                first.putter = None
                continue
            put = 0
            for x in islice(items, room):
                buf.append(_Env(x))
                put += 1
            _wake(first.getter)
            if put < room:
                break
        first.closed = True
        _wake(first.getter)

    feeding = asyncio.ensure_future(source())
    results: list[int] = []
    buf = last.buf
    while True:
        while buf:
            results.append(buf.popleft().value)
        _wake(last.putter)
        if last.closed and not buf:
            break
        last.getter = loop.create_future()
        await last.getter
        last.getter = None
    await asyncio.gather(feeding, *stages)
    return results


CHILD = r"""
import asyncio, json, sys, time
import uvloop
sys.path.insert(0, sys.argv[1])
from overhead_floor import floor_run, inc
import aioflow as af

n, k, q, first = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
pipe = af.Pipeline(
    *[af.block(name=f"inc{i}", queue_size=q)(inc) for i in range(k)], name="overhead"
)
variants = {"floor": lambda: floor_run(n, k, q), "aioflow": lambda: pipe.run(range(n))}
order = ["floor", "aioflow"] if first == "floor" else ["aioflow", "floor"]
best = {v: float("inf") for v in variants}
for _ in range(3):
    for v in order:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            c0 = time.process_time()
            out = runner.run(variants[v]())
            cpu = time.process_time() - c0
        if len(out) != n or out[-1] != n - 1 + k:
            raise AssertionError(f"{v}: wrong output ({len(out)} items)")
        best[v] = min(best[v], cpu / (n * k) * 1e6)
print(json.dumps(best))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--stages", type=int, default=3)
    parser.add_argument("--queue-size", type=int, default=64)
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args()
    here = str(Path(__file__).resolve().parent)
    rows: dict[str, list[float]] = {"floor": [], "aioflow": []}
    for rep in range(args.reps):
        first = "floor" if rep % 2 == 0 else "aioflow"
        cmd = [sys.executable, "-c", CHILD, here, str(args.n), str(args.stages)]
        out = subprocess.run(
            [*cmd, str(args.queue_size), first], check=True, capture_output=True, text=True
        ).stdout
        best = json.loads(out)
        for v, us in best.items():
            rows[v].append(us)
        print(f"rep {rep + 1}: floor {best['floor']:.3f}, aioflow {best['aioflow']:.3f} us")
    floor, aio = statistics.median(rows["floor"]), statistics.median(rows["aioflow"])
    ratios = sorted(a / f for a, f in zip(rows["aioflow"], rows["floor"], strict=True))
    print(
        f"K={args.stages}, queue_size {args.queue_size}, CPU us per item and stage (medians of "
        f"{args.reps}): floor {floor:.3f}, aioflow {aio:.3f}, aioflow / floor "
        f"{statistics.median(ratios):.2f} ({ratios[0]:.2f}..{ratios[-1]:.2f})"
    )


if __name__ == "__main__":
    main()
