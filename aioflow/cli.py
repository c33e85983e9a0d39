"""The command line: ``aioflow {run,graph,worker,bench}`` (or ``python -m aioflow ...``).

* ``graph MODULE:PIPELINE`` prints a pipeline's stages and their options, or its diagram
  (``--format mermaid`` or ``dot``).
* ``run MODULE:PIPELINE`` feeds items through a pipeline (JSON lines from stdin or ``--input``,
  ``--items MODULE:ITERABLE``, or ``--video URI``), prints each output as a JSON line, then the
  statistics and the bottleneck report on stderr; ``--metrics HOST:PORT`` and ``--dashboard``
  serve the metrics and the live dashboard while it runs.
* ``bench`` measures the per-item overhead of trivial stages against a hand-written
  ``asyncio.Queue`` pipeline on this machine.
* ``worker MODULE:NAME --redis URL --blocks A,B`` serves consecutive blocks of a pipeline for the
  distributed mode (Redis Streams edges; needs ``pip install aioflow[redis]``); see
  :mod:`aioflow.transport.worker`.

``MODULE:PIPELINE`` names a :class:`~aioflow.Pipeline` (or a function returning one) importable
from the current folder, like ``examples.quickstart:pipe``. Mistakes in what is typed (a module
or name that does not exist, a file path given as a module, a missing input file, a line that is
not JSON) are one line on stderr and exit status 2; an exception raised by the user's own code
keeps its traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import os
import signal
import statistics
import sys
import time
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Coroutine,
    Iterable,
    Iterator,
    Sequence,
    Sized,
)
from pathlib import Path
from typing import Any, TextIO

from .block import Block
from .graph import Branch
from .loop import loop_factory
from .loop import run as run_main
from .pipeline import Pipeline
from .sampling import Every
from .stats import LATENCY_BUCKETS

__all__ = ["host_port", "main"]

PROG = "aioflow"


class UsageError(Exception):
    """A mistake in what the user typed: reported as one line, exit status 2."""


# -- finding the user's objects -------------------------------------------------------------------


def _on_path() -> None:
    """Put the current folder first on ``sys.path`` (``python -m`` does; a console script does
    not), so ``MODULE`` is found where the user stands."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)


def _resolve(target: str, what: str) -> Any:
    """The object named by ``MODULE:NAME`` (dotted names inside the module allowed)."""
    module_name, colon, attr = target.partition(":")
    if not colon or not module_name or not attr:
        msg = f"expected MODULE:{what} (like examples.quickstart:pipe), got {target!r}"
        raise UsageError(msg)
    if module_name.endswith(".py") or "/" in module_name or os.sep in module_name:
        dotted = module_name.removesuffix(".py").strip("/\\").replace("/", ".")
        dotted = dotted.replace(os.sep, ".")
        msg = (
            f"{module_name!r} is a file path; name the module instead, as Python imports it "
            f"from the current folder: {dotted}:{attr}"
        )
        raise UsageError(msg)
    _on_path()
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing and (module_name == missing or module_name.startswith(missing + ".")):
            msg = (
                f"no module named {module_name!r} in the current folder ({os.getcwd()}) "
                "or on the Python path"
            )
            raise UsageError(msg) from None
        raise  # the user's module imports something missing: their traceback
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            found = sorted(
                n for n, v in vars(module).items() if isinstance(v, Pipeline) and n[:1] != "_"
            )
            hint = f" (pipelines there: {', '.join(found)})" if found else ""
            msg = f"module {module_name!r} has no {attr!r}{hint}"
            raise UsageError(msg) from None
    return obj


def load(target: str) -> Pipeline:
    """The pipeline named by ``MODULE:NAME`` (a Pipeline, or a callable returning one)."""
    obj = _resolve(target, "PIPELINE")
    if not isinstance(obj, Pipeline | Block) and callable(obj):
        obj = obj()  # a factory function: its errors are the user's, with their traceback
    if not isinstance(obj, Pipeline):
        msg = f"{target} is a {type(obj).__name__}, not an aioflow Pipeline"
        raise UsageError(msg)
    return obj


def load_items(target: str) -> Iterable[Any] | AsyncIterable[Any]:
    """The items named by ``MODULE:NAME``: an iterable, an async iterable, or a callable
    returning one."""
    obj = _resolve(target, "ITERABLE")
    if not isinstance(obj, Iterable | AsyncIterable) and callable(obj):
        obj = obj()
    if not isinstance(obj, Iterable | AsyncIterable) or isinstance(obj, str | bytes):
        msg = f"{target} is a {type(obj).__name__}, not an iterable of items"
        raise UsageError(msg)
    return obj


# -- graph ----------------------------------------------------------------------------------------


def describe(pipe: Pipeline, out: TextIO) -> None:
    out.write(f"pipeline {pipe.name!r}: {pipe.describe()}\n")

    def stage(s: Block | Branch, indent: str) -> None:
        if isinstance(s, Every):
            rate = f"n={s.n}" if s.n is not None else f"per_second={s.per_second}"
            keyed = ", keyed" if s.key is not None else ""
            out.write(f"{indent}every {s.name!r} ({rate}{keyed}, queue_size={s.queue_size})\n")
            for inner in s.members[0]:
                stage(inner, indent + "  ")
            return
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
        if o.stream_key() is not None:
            extras.append("fair")
        if o.per_key is not None:
            extras.append(f"per_key={o.per_key}")
        if o.serve != "oldest":
            extras.append(f"serve={o.serve!r}")
        out.write(
            f"{indent}{o.name}: {s._aioflow_kind} on {o.executor}, workers={o.workers}, "
            f"queue_size={o.queue_size}, ordered={o.ordered}"
            + (", " + ", ".join(extras) if extras else "")
            + "\n"
        )

    for s in pipe.stages:
        stage(s, "  ")


def _node_label(s: Block) -> str:
    o = s.options
    label = f"{o.name}<br/>{o.executor} x{o.workers}"
    if o.batch is not None:
        label += f", batch {o.batch.max_size}"
    if o.overflow != "block":
        label += f", {o.overflow}"
    if o.serve != "oldest":
        label += f", serve {o.serve}"
    elif o.stream_key() is not None:
        label += ", fair"
    return label


def diagram(pipe: Pipeline, fmt: str, out: TextIO) -> None:
    """Write the pipeline's graph as Mermaid (``flowchart LR``) or Graphviz ``dot``."""
    nodes: list[tuple[str, str, str]] = []  # (id, label, shape: box or diamond)
    edges: list[tuple[str, str]] = []

    def new(label: str, shape: str) -> str:
        nid = f"n{len(nodes)}"
        nodes.append((nid, label, shape))
        return nid

    def chain(stages: Sequence[Block | Branch], start: str) -> str:
        prev = start
        for s in stages:
            if isinstance(s, Branch):
                fork = new(f"{s.name} (fan-out)", "diamond")
                edges.append((prev, fork))
                join = new(f"{s.name} (join)", "diamond")
                for member in s.members:
                    edges.append((chain(member, fork), join))
                prev = join
            else:
                nid = new(_node_label(s), "box")
                edges.append((prev, nid))
                prev = nid
        return prev

    source = new("source", "round")
    sink = new("outputs", "round")
    edges.append((chain(pipe.stages, source), sink))
    if fmt == "mermaid":
        out.write("flowchart LR\n")
        for nid, label, shape in nodes:
            text = label.replace('"', "'")
            opener, closer = {"box": ("[", "]"), "diamond": ("{", "}"), "round": ("(", ")")}[shape]
            out.write(f'    {nid}{opener}"{text}"{closer}\n')
        for a, b in edges:
            out.write(f"    {a} --> {b}\n")
        return
    out.write(f"digraph {json.dumps(pipe.name)} {{\n    rankdir=LR;\n")
    for nid, label, shape in nodes:
        text = json.dumps(label.replace("<br/>", "\\n")).replace("\\\\n", "\\n")
        gv = {"box": "box", "diamond": "diamond", "round": "ellipse"}[shape]
        out.write(f"    {nid} [label={text}, shape={gv}];\n")
    for a, b in edges:
        out.write(f"    {a} -> {b};\n")
    out.write("}\n")


# -- run ------------------------------------------------------------------------------------------


async def _lines(stream: TextIO, where: str) -> AsyncIterator[Any]:
    loop = asyncio.get_running_loop()
    number = 0
    while True:
        line = await loop.run_in_executor(None, stream.readline)
        if not line:
            return
        number += 1
        if line.strip():
            try:
                yield json.loads(line)
            except json.JSONDecodeError as exc:
                msg = f"{where} line {number}: not JSON ({exc.msg} at column {exc.colno})"
                raise UsageError(msg) from None


class Progress:
    """A one-line progress display on stderr: items in, outputs, rate, the busiest block."""

    def __init__(self, pipe: Pipeline, total: int | None, out: TextIO) -> None:
        self.pipe = pipe
        self.total = total
        self.out = out
        self.t0 = time.perf_counter()
        self.shown = False

    def clear(self) -> None:
        if self.shown:
            self.out.write("\r\033[K")
            self.shown = False

    def draw(self, outputs: int) -> None:
        records = self.pipe.statistics()
        if not records:
            return
        taken = next(iter(records.values())).received
        elapsed = max(time.perf_counter() - self.t0, 1e-9)
        if self.total:
            done = min(taken, self.total)
            width = 24
            filled = int(width * done / self.total)
            head = f"[{'#' * filled}{'.' * (width - filled)}] {done}/{self.total}"
        else:
            head = f"{taken} items"
        busiest = max(records.values(), key=lambda r: r.utilisation)
        line = (
            f"{head}  {outputs} outputs  {taken / elapsed:.0f} items/s  "
            f"busiest: {busiest.name} {busiest.utilisation:.0%}"
        )
        self.out.write("\r\033[K" + line)
        self.out.flush()
        self.shown = True


async def _tick(progress: Progress, counter: list[int]) -> None:
    while True:
        await asyncio.sleep(0.2)
        progress.draw(counter[0])


class Terminated(Exception):
    """``aioflow run`` got SIGTERM: the run was cancelled (its blocks torn down)."""


@contextlib.contextmanager
def _terminate_cancels() -> Iterator[None]:
    """SIGTERM (a service manager's stop, ``kill``) cancels the task running this, as Ctrl-C
    does under ``asyncio.Runner``, so the run is cancelled as a run is: every block whose
    setup completed is torn down and the executors are shut down. Without it the process
    died at once, teardowns unrun (a video writer's file left without its index). Raises
    ``Terminated`` in place of the cancellation it caused."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    terminated: list[bool] = []

    def on_sigterm() -> None:
        terminated.append(True)
        if task is not None:
            task.cancel()

    try:
        loop.add_signal_handler(signal.SIGTERM, on_sigterm)
    except (NotImplementedError, RuntimeError, ValueError):  # Windows, or not the main thread
        yield
        return
    try:
        yield
    except asyncio.CancelledError:
        if not terminated:
            raise
        raise Terminated from None
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


async def run_pipeline(
    pipe: Pipeline,
    items: Iterable[Any] | AsyncIterable[Any],
    out: TextIO,
    *,
    total: int | None = None,
    progress: bool = False,
    serve: tuple[str, int] | None = None,
    token: str | None = None,
) -> int:
    """Stream ``items`` through ``pipe``, writing each output as a JSON line; then the
    statistics and the bottleneck report on stderr. Returns the number of outputs.

    Raises:
        Terminated: SIGTERM cancelled the run (its blocks were torn down first).
    """
    err = sys.stderr
    counter = [0]
    bar = Progress(pipe, total, err) if progress else None
    with _terminate_cancels():
        async with contextlib.AsyncExitStack() as stack:
            if serve is not None:
                from .observe import Server

                server = await stack.enter_async_context(
                    Server(pipe, host=serve[0], port=serve[1], token=token)
                )
                err.write(f"metrics: {server.metrics_url}  dashboard: {server.url}\n")
                err.flush()
            async with asyncio.TaskGroup() as tg:
                ticker = tg.create_task(_tick(bar, counter)) if bar is not None else None
                try:
                    async with contextlib.aclosing(pipe.stream(items)) as outputs:
                        async for output in outputs:
                            if bar is not None:
                                bar.clear()
                            out.write(json.dumps(output, default=repr) + "\n")
                            counter[0] += 1
                finally:
                    if ticker is not None:
                        ticker.cancel()
                    if bar is not None:
                        bar.clear()
    out.flush()
    for name, record in pipe.statistics().items():
        err.write(
            f"{name}: received {record.received}, emitted {record.emitted}, "
            f"dropped {record.dropped}, skipped {record.skipped}, busy {record.busy_s:.3f} s "
            f"({record.utilisation:.0%}), blocked on output {record.blocked_s:.3f} s\n"
        )
    report = pipe.bottleneck()
    if report is not None:
        err.write(f"bottleneck: {report.message}\n")
    whole = pipe.latency()
    if whole.count:
        err.write(
            f"end to end: {whole.count} outputs, mean {_ms(whole.mean)}, "
            f"p50 {_at_most(whole.quantile(0.5))}, p99 {_at_most(whole.quantile(0.99))}\n"
        )
    return counter[0]


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms"


def _at_most(bound: float) -> str:
    """A quantile read from a histogram: the upper bound of its bucket."""
    if bound == float("inf"):
        return f"over {LATENCY_BUCKETS[-1]:g} s"
    return f"<= {bound * 1e3:g} ms"


def _user_error(group: BaseExceptionGroup[BaseException]) -> UsageError | None:
    """The UsageError a source raised inside the run (it arrives as a BlockError's cause)."""
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            found = _user_error(exc)
            if found is not None:
                return found
        elif isinstance(exc.__cause__, UsageError):
            return exc.__cause__
    return None


def _metrics_server(source: Any, host: str, port: int, token: str | None) -> Any:
    """The worker's ``--metrics`` server (transport/ does not import observe/ itself)."""
    from .observe import Server

    return Server(source, host=host, port=port, token=token)


def host_port(text: str) -> tuple[str, int]:
    """``HOST:PORT`` as ``(host, port)`` (``--metrics``; an empty host is loopback)."""
    host, colon, port = text.rpartition(":")
    if not colon or not port.isdigit():
        msg = f"expected HOST:PORT (like 127.0.0.1:9100), got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return host.strip("[]") or "127.0.0.1", int(port)


def _command_run(args: argparse.Namespace) -> int:
    sources = [s for s in (args.input, args.items, args.video) if s is not None]
    if len(sources) > 1:
        msg = "give one of --input, --items and --video"
        raise UsageError(msg)
    pipe = load(args.target)
    total: int | None = None
    items: Iterable[Any] | AsyncIterable[Any]
    with contextlib.ExitStack() as stack:
        if args.items is not None:
            items = load_items(args.items)
            if isinstance(items, Sized):
                total = len(items)
        elif args.video is not None:
            try:
                from .io.video import video_source
            except ImportError as exc:
                raise UsageError(str(exc)) from None
            uri = args.video
            if "://" not in uri and not uri.isdigit() and not Path(uri).exists():
                msg = f"--video {uri}: no such file or folder"
                raise UsageError(msg)
            items = video_source(uri)
        elif args.input is not None and args.input != "-":
            path = Path(args.input)
            if not path.is_file():
                msg = f"--input {args.input}: no such file"
                raise UsageError(msg)
            with path.open() as fh:
                total = sum(1 for line in fh if line.strip())
            fh = stack.enter_context(path.open())
            items = _lines(fh, args.input)
        else:
            items = _lines(sys.stdin, "stdin")
        show = args.progress
        if show is None:
            show = total is not None and sys.stdout.isatty() and sys.stderr.isatty()
        serve = args.metrics
        if serve is None and args.dashboard:
            serve = ("127.0.0.1", 0)
        try:
            run_main(
                run_pipeline(
                    pipe,
                    items,
                    sys.stdout,
                    total=total,
                    progress=show,
                    serve=serve,
                    token=args.token,
                )
            )
        except BaseExceptionGroup as group:
            found = _user_error(group)
            if found is not None:
                raise found from None
            raise
    return 0


# -- bench ----------------------------------------------------------------------------------------


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


# -- the parser -----------------------------------------------------------------------------------

_RAW = argparse.RawDescriptionHelpFormatter

GRAPH_EXAMPLE = """\
examples:
  aioflow graph examples.quickstart:pipe
  aioflow graph examples.quickstart:pipe --format mermaid > pipeline.mmd
  aioflow graph examples.service:pipeline --format dot | dot -Tsvg > pipeline.svg
"""

RUN_EXAMPLE = """\
examples:
  aioflow run examples.quickstart:pipe --items examples.quickstart:refs
  printf '1\\n2\\n3\\n' | aioflow run mypipe:pipe
  aioflow run mypipe:pipe --input items.jsonl --dashboard
  aioflow run detect:pipe --video clip.mp4 --metrics 127.0.0.1:9100

Outputs go to stdout as JSON lines; statistics and the bottleneck report go to stderr.
"""

BENCH_EXAMPLE = """\
example:
  aioflow bench --n 20000 --stages 3 10 --reps 3
"""

WORKER_EXAMPLE = """\
example:
  aioflow worker examples.quickstart:pipe --redis redis://127.0.0.1:6379/0 --blocks lookup

'aioflow worker --help' after the command name shows every option of the worker
(it needs aioflow[redis]).
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Run, draw and measure aioflow pipelines.",
        epilog="example:\n  aioflow run examples.quickstart:pipe --items examples.quickstart:refs\n"
        "\n'aioflow COMMAND --help' tells more about each command.",
        formatter_class=_RAW,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p_graph = commands.add_parser(
        "graph",
        help="print a pipeline's stages and options, or its diagram",
        description="Print a pipeline's stages and their options, or its diagram.",
        epilog=GRAPH_EXAMPLE,
        formatter_class=_RAW,
    )
    p_graph.add_argument(
        "target",
        metavar="MODULE:PIPELINE",
        help="a Pipeline, or a function returning one, importable from the current folder",
    )
    p_graph.add_argument(
        "--format",
        choices=("text", "mermaid", "dot"),
        default="text",
        help="text (stages and options, the default), mermaid (a flowchart for Markdown) "
        "or dot (Graphviz)",
    )
    p_run = commands.add_parser(
        "run",
        help="run items through a pipeline, outputs as JSON lines",
        description="Run items through a pipeline and print each output as a JSON line.",
        epilog=RUN_EXAMPLE,
        formatter_class=_RAW,
    )
    p_run.add_argument(
        "target",
        metavar="MODULE:PIPELINE",
        help="a Pipeline, or a function returning one, importable from the current folder",
    )
    p_run.add_argument(
        "--input",
        metavar="FILE",
        help="a file of JSON lines, one item each ('-' or none of --input, --items, --video: "
        "stdin)",
    )
    p_run.add_argument(
        "--items",
        metavar="MODULE:ITERABLE",
        help="an iterable or async iterable of items (or a function returning one)",
    )
    p_run.add_argument(
        "--video",
        metavar="URI",
        help="a video file, folder of images, camera index or stream URL: its frames are the "
        "items (needs aioflow[cv])",
    )
    p_run.add_argument(
        "--metrics",
        metavar="HOST:PORT",
        type=host_port,
        help="serve Prometheus metrics at http://HOST:PORT/metrics and the dashboard at / "
        "while it runs (port 0 picks a free one)",
    )
    p_run.add_argument(
        "--dashboard",
        action="store_true",
        help="serve the live dashboard (on a free loopback port unless --metrics says where) "
        "and print its address",
    )
    p_run.add_argument(
        "--token",
        help="with --metrics or --dashboard: requests must carry 'Authorization: Bearer TOKEN' "
        "(or ?token=TOKEN)",
    )
    p_run.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="a progress line on stderr (default: for finite inputs when stdout and stderr "
        "are terminals)",
    )
    p_bench = commands.add_parser(
        "bench",
        help="per-item overhead against hand-written queues",
        description="Measure the per-item overhead of trivial stages against a hand-written "
        "asyncio.Queue pipeline on this machine.",
        epilog=BENCH_EXAMPLE,
        formatter_class=_RAW,
    )
    p_bench.add_argument("--n", type=int, default=50_000, help="items per run (default 50000)")
    p_bench.add_argument(
        "--stages", type=int, nargs="+", default=[3, 10], help="pipeline lengths (default 3 10)"
    )
    p_bench.add_argument("--reps", type=int, default=5, help="repetitions (default 5)")
    p_worker = commands.add_parser(
        "worker",
        help="serve consecutive blocks of a pipeline from Redis Streams (distributed mode)",
        description="Serve consecutive blocks of a pipeline for the distributed mode: read "
        "their input stream, run them, write their outputs on (needs aioflow[redis]).",
        epilog=WORKER_EXAMPLE,
        formatter_class=_RAW,
        add_help=False,
    )
    p_worker.add_argument(
        "args",
        nargs=argparse.REMAINDER,
        help="MODULE:PIPELINE --redis URL --blocks NAME[,NAME...] and the worker's options",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["worker"]:
        # The worker parses its own arguments: argparse's REMAINDER takes nothing when the first
        # one is an option, so `aioflow worker --help` would be refused as unrecognized here.
        return _command_worker(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        if args.command == "graph":
            pipe = load(args.target)
            if args.format == "text":
                describe(pipe, sys.stdout)
            else:
                diagram(pipe, args.format, sys.stdout)
            return 0
        if args.command == "run":
            return _command_run(args)
        if args.command == "bench":
            bench(args.n, args.stages, args.reps, sys.stdout)
            return 0
    except UsageError as exc:
        sys.stderr.write(f"{PROG} {args.command}: error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write(f"{PROG} {args.command}: interrupted\n")
        return 130
    except Terminated:
        sys.stderr.write(f"{PROG} {args.command}: terminated (SIGTERM)\n")
        return 128 + signal.SIGTERM
    return _command_worker(args.args)


def _command_worker(argv: Sequence[str]) -> int:
    try:
        from .transport import worker
    except ImportError as exc:  # the [redis] extra is missing: one line saying what to install
        sys.stderr.write(f"{PROG} worker: {exc}\n")
        return 2
    return worker.main(argv, load, host_port=host_port, serve_metrics=_metrics_server)
