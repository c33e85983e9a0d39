"""The command line: ``python -m aioflow {run,graph,worker,bench}``.

* ``graph MODULE:NAME`` prints a pipeline's stages and their options.
* ``run MODULE:NAME`` feeds JSON lines (stdin or ``--input``) through a pipeline and prints each
  output as a JSON line, then the statistics on stderr.
* ``bench`` measures the per-item overhead of trivial stages against a hand-written
  ``asyncio.Queue`` pipeline on this machine.
* ``worker MODULE:NAME --redis URL --blocks A,B`` serves consecutive blocks of a pipeline for the
  distributed mode (Redis Streams edges; needs ``pip install aioflow[redis]``); see
  :mod:`aioflow.transport.worker`.

``MODULE:NAME`` names a :class:`~aioflow.Pipeline` (or a function returning one) importable from
the current directory, like ``examples.quickstart:pipe``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import statistics
import sys
import time
from collections.abc import AsyncIterator, Coroutine, Sequence
from typing import Any, TextIO

from .block import Block
from .graph import Branch
from .loop import loop_factory
from .loop import run as run_main
from .pipeline import Pipeline

__all__ = ["main"]


def load(target: str) -> Pipeline:
    """The pipeline named by ``MODULE:NAME`` (a Pipeline, or a callable returning one)."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        msg = f"expected MODULE:NAME (like examples.quickstart:pipe), got {target!r}"
        raise SystemExit(msg)
    if "" not in sys.path:
        sys.path.insert(0, "")
    module = importlib.import_module(module_name)
    obj: Any = module
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not isinstance(obj, Pipeline | Block) and callable(obj):
        obj = obj()  # a factory function
    if not isinstance(obj, Pipeline):
        msg = f"{target} is a {type(obj).__name__}, not an aioflow Pipeline"
        raise SystemExit(msg)
    return obj


def describe(pipe: Pipeline, out: TextIO) -> None:
    out.write(f"pipeline {pipe.name!r}: {pipe.describe()}\n")

    def stage(s: Block | Branch, indent: str) -> None:
        if isinstance(s, Branch):
            out.write(f"{indent}branch {s.name!r} (queue_size={s.queue_size})\n")
            for number, member in enumerate(s.members, 1):
                out.write(f"{indent}  member {number}:\n")
                for inner in member:
                    stage(inner, indent + "    ")
            return
        o = s.options
        extras = [
            f"{name}={getattr(o, name)!r}"
            for name in ("overflow", "max_age", "on_error", "batch", "timeout")
            if getattr(o, name) not in (None, "block", "raise")
        ]
        if o.key is not None:
            extras.append("keyed")
        out.write(
            f"{indent}{o.name}: {s._aioflow_kind} on {o.executor}, workers={o.workers}, "
            f"queue_size={o.queue_size}, ordered={o.ordered}"
            + (", " + ", ".join(extras) if extras else "")
            + "\n"
        )

    for s in pipe.stages:
        stage(s, "  ")


async def _lines(stream: TextIO) -> AsyncIterator[Any]:
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, stream.readline)
        if not line:
            return
        if line.strip():
            yield json.loads(line)


async def run_pipeline(pipe: Pipeline, source: TextIO, out: TextIO) -> int:
    count = 0
    async for output in pipe.stream(_lines(source)):
        out.write(json.dumps(output, default=repr) + "\n")
        count += 1
    out.flush()
    for name, record in pipe.statistics().items():
        sys.stderr.write(
            f"{name}: received {record.received}, emitted {record.emitted}, "
            f"dropped {record.dropped}, skipped {record.skipped}, busy {record.busy_s:.3f} s\n"
        )
    return count


async def _inc(x: int) -> int:
    return x + 1


async def _handwritten(n: int, k: int) -> list[int]:
    stop = object()
    queues: list[asyncio.Queue[Any]] = [asyncio.Queue(maxsize=64) for _ in range(k + 1)]
    results: list[int] = []

    async def source() -> None:
        for i in range(n):
            await queues[0].put(i)
        await queues[0].put(stop)

    async def stage(i: int) -> None:
        while (x := await queues[i].get()) is not stop:
            await queues[i + 1].put(await _inc(x))
        await queues[i + 1].put(stop)

    async def sink() -> None:
        while (x := await queues[k].get()) is not stop:
            results.append(x)

    async with asyncio.TaskGroup() as tg:
        tg.create_task(source())
        for i in range(k):
            tg.create_task(stage(i))
        tg.create_task(sink())
    return results


def _timed(coro: Coroutine[Any, Any, list[Any]], n: int) -> float:
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        t0 = time.perf_counter()
        result = runner.run(coro)
        elapsed = time.perf_counter() - t0
    if len(result) != n:
        msg = f"wrong number of outputs: {len(result)} of {n}"
        raise SystemExit(msg)
    return elapsed


def bench(n: int, stages: Sequence[int], reps: int, out: TextIO) -> None:
    from .block import block

    out.write(f"N={n}, medians of {reps} alternating repetitions, us per item per stage\n")
    for k in stages:
        pipe = Pipeline(*[block(name=f"inc{i}")(_inc) for i in range(k)], name=f"bench{k}")
        hand: list[float] = []
        ours: list[float] = []
        for _ in range(reps):
            hand.append(_timed(_handwritten(n, k), n))
            ours.append(_timed(pipe.run(range(n)), n))
        h = statistics.median(hand) / (n * k) * 1e6
        a = statistics.median(ours) / (n * k) * 1e6
        out.write(f"  K={k:2d}: hand-written {h:.3f}, aioflow {a:.3f}: {h / a:.2f}x\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aioflow", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p_graph = commands.add_parser("graph", help="print a pipeline's stages and options")
    p_graph.add_argument("target", help="MODULE:NAME of a Pipeline")
    p_run = commands.add_parser("run", help="run JSON lines through a pipeline")
    p_run.add_argument("target", help="MODULE:NAME of a Pipeline")
    p_run.add_argument("--input", help="a file of JSON lines (default: stdin)")
    p_bench = commands.add_parser("bench", help="per-item overhead against hand-written queues")
    p_bench.add_argument("--n", type=int, default=50_000)
    p_bench.add_argument("--stages", type=int, nargs="+", default=[3, 10])
    p_bench.add_argument("--reps", type=int, default=5)
    p_worker = commands.add_parser(
        "worker", help="serve blocks of a pipeline from Redis", add_help=False
    )
    p_worker.add_argument("args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)

    if args.command == "graph":
        describe(load(args.target), sys.stdout)
        return 0
    if args.command == "run":
        pipe = load(args.target)
        if args.input:
            with open(args.input) as fh:
                run_main(run_pipeline(pipe, fh, sys.stdout))
        else:
            run_main(run_pipeline(pipe, sys.stdin, sys.stdout))
        return 0
    if args.command == "bench":
        bench(args.n, args.stages, args.reps, sys.stdout)
        return 0
    try:
        from .transport import worker
    except ImportError as exc:  # the [redis] extra is missing: one line saying what to install
        sys.stderr.write(f"aioflow worker: {exc}\n")
        return 2
    return worker.main(args.args, load)
