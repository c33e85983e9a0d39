"""The public :class:`Pipeline`: build once, then ``run``, ``stream`` or ``open`` it."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Callable,
    Coroutine,
    Iterable,
)
from operator import attrgetter
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, NoReturn, TypeVar, overload

from ._engine.channel import ChannelClosed
from ._engine.edge import Transport
from ._engine.envelope import Envelope, SubmitTicket
from ._engine.supervisor import PipelineRun, log_unraised, result_of, stage_names, wait_finished
from .block import FunctionBlock, In, Out, PlainStage, Stage
from .control import EndOfKey
from .errors import GraphError, PipelineClosed
from .graph import Graph, iter_blocks
from .state import Snapshot, StateStore, check_restorable, make_snapshot
from .stats import BlockStatistics, Bottleneck, LatencyHistogram, find_bottleneck

_value = attrgetter("value")  # an envelope's value, read in C

if TYPE_CHECKING:
    from .observe.server import Server

__all__ = ["Pipeline", "RunningPipeline"]

C = TypeVar("C")
T = TypeVar("T")
T0 = TypeVar("T0")
T1 = TypeVar("T1")
T2 = TypeVar("T2")
T3 = TypeVar("T3")
T4 = TypeVar("T4")
T5 = TypeVar("T5")
T6 = TypeVar("T6")
T7 = TypeVar("T7")
T8 = TypeVar("T8")


def _check_items(pipeline: str, method: str, items: object) -> None:
    """Raise :class:`GraphError` for ``items`` that ``run()``/``stream()`` must not iterate:
    a str or bytes (it would run one character at a time) or something not iterable."""
    if isinstance(items, str | bytes | bytearray | memoryview):
        kind = type(items).__name__
        msg = (
            f"pipeline {pipeline!r}: {method}() got a {kind} ({_short(items)}), which would run "
            f"one {'character' if kind == 'str' else 'byte'} at a time; pass a list of items, "
            f"pipe.{method}([{_short(items)}]), or a source that yields them, such as "
            f"aioflow.io.video.video_source({_short(items)}) for a video file or stream"
        )
        raise GraphError(msg)
    if isinstance(items, AsyncIterable | Iterable) or hasattr(type(items), "__getitem__"):
        return
    if callable(items):
        hint = f"call it: pipe.{method}(source()) rather than pipe.{method}(source)"
    elif inspect.iscoroutine(items):
        # Closed here, as it will never run: no "never awaited" warning on top of this error.
        items.close()
        hint = (
            f"await it first, pipe.{method}(await source()), or make the source an async "
            "generator (`yield` items instead of returning them)"
        )
    else:
        hint = f"for a single item pass a list: pipe.{method}([item])"
    msg = (
        f"pipeline {pipeline!r}: {method}() needs an iterable or async iterable of items, got "
        f"{_short(items)} ({type(items).__name__}); {hint}"
    )
    raise GraphError(msg)


def _short(obj: object) -> str:
    text = repr(obj)
    return text if len(text) <= 40 else text[:37] + "..."


class Pipeline(Graph[In, Out]):
    """A chain of blocks connected by bounded queues.

    Args:
        *stages: blocks (``@af.block`` functions, ``af.Block`` instances), plain callables
            (wrapped with default options), nested pipelines (flattened) and ``af.branch(...)``.
        name: the pipeline's name, used in errors and logs.

    ``a >> b >> c`` builds the same pipeline as ``Pipeline(a, b, c)``.

    For type checkers a pipeline is ``Pipeline[In, Out]``: the first block's input, the last
    block's output (``run()`` returns ``list[Out]``). Stages whose types do not meet are a type
    error; a plain callable among the stages types the pipeline ``Pipeline[Any, Any]`` (with
    ``>>``: its output ``Any``).

    Raises:
        GraphError: the pipeline is empty, a stage is not a block, two blocks share a name, a
            block is used twice, or an ``af.Block`` instance belongs to another pipeline.

    >>> import aioflow as af
    >>> @af.block
    ... async def inc(x: int) -> int:
    ...     return x + 1
    >>> pipe = af.Pipeline(inc, name="demo")
    >>> af.run(pipe.run([1, 2, 3]))
    [2, 3, 4]
    """

    @overload
    def __init__(
        self: Pipeline[T0, T1], s1: Stage[T0, T1], /, *, name: str = "pipeline"
    ) -> None: ...
    @overload
    def __init__(
        self: Pipeline[T0, T2], s1: Stage[T0, T1], s2: Stage[T1, T2], /, *, name: str = "pipeline"
    ) -> None: ...
    @overload
    def __init__(
        self: Pipeline[T0, T3],
        s1: Stage[T0, T1],
        s2: Stage[T1, T2],
        s3: Stage[T2, T3],
        /,
        *,
        name: str = "pipeline",
    ) -> None: ...
    @overload
    def __init__(
        self: Pipeline[T0, T4],
        s1: Stage[T0, T1],
        s2: Stage[T1, T2],
        s3: Stage[T2, T3],
        s4: Stage[T3, T4],
        /,
        *,
        name: str = "pipeline",
    ) -> None: ...
    @overload
    def __init__(
        self: Pipeline[T0, T5],
        s1: Stage[T0, T1],
        s2: Stage[T1, T2],
        s3: Stage[T2, T3],
        s4: Stage[T3, T4],
        s5: Stage[T4, T5],
        /,
        *,
        name: str = "pipeline",
    ) -> None: ...
    @overload
    def __init__(
        self: Pipeline[T0, T6],
        s1: Stage[T0, T1],
        s2: Stage[T1, T2],
        s3: Stage[T2, T3],
        s4: Stage[T3, T4],
        s5: Stage[T4, T5],
        s6: Stage[T5, T6],
        /,
        *,
        name: str = "pipeline",
    ) -> None: ...
    @overload
    def __init__(
        self: Pipeline[T0, T7],
        s1: Stage[T0, T1],
        s2: Stage[T1, T2],
        s3: Stage[T2, T3],
        s4: Stage[T3, T4],
        s5: Stage[T4, T5],
        s6: Stage[T5, T6],
        s7: Stage[T6, T7],
        /,
        *,
        name: str = "pipeline",
    ) -> None: ...
    @overload
    def __init__(
        self: Pipeline[T0, T8],
        s1: Stage[T0, T1],
        s2: Stage[T1, T2],
        s3: Stage[T2, T3],
        s4: Stage[T3, T4],
        s5: Stage[T4, T5],
        s6: Stage[T5, T6],
        s7: Stage[T6, T7],
        s8: Stage[T7, T8],
        /,
        *,
        name: str = "pipeline",
    ) -> None: ...
    @overload
    def __init__(
        self: Pipeline[Any, Any],
        s1: PlainStage[Any],
        /,
        *stages: Stage[Any, Any] | PlainStage[Any],
        name: str = "pipeline",
    ) -> None: ...
    @overload
    def __init__(
        self: Pipeline[Any, Any],
        s1: Stage[Any, Any],
        s2: PlainStage[Any],
        /,
        *stages: Stage[Any, Any] | PlainStage[Any],
        name: str = "pipeline",
    ) -> None: ...
    @overload
    def __init__(
        self: Pipeline[Any, Any],
        s1: Stage[Any, Any],
        s2: Stage[Any, Any],
        s3: PlainStage[Any],
        /,
        *stages: Stage[Any, Any] | PlainStage[Any],
        name: str = "pipeline",
    ) -> None: ...
    @overload
    def __init__(
        self: Pipeline[Any, Any],
        s1: Stage[Any, Any],
        s2: Stage[Any, Any],
        s3: Stage[Any, Any],
        s4: PlainStage[Any],
        /,
        *stages: Stage[Any, Any] | PlainStage[Any],
        name: str = "pipeline",
    ) -> None: ...
    @overload
    def __init__(
        self: Pipeline[Any, Any],
        s1: Stage[Any, Any],
        s2: Stage[Any, Any],
        s3: Stage[Any, Any],
        s4: Stage[Any, Any],
        s5: PlainStage[Any],
        /,
        *stages: Stage[Any, Any] | PlainStage[Any],
        name: str = "pipeline",
    ) -> None: ...
    @overload
    def __init__(
        self: Pipeline[Any, Any],
        s1: Stage[Any, Any],
        s2: Stage[Any, Any],
        s3: Stage[Any, Any],
        s4: Stage[Any, Any],
        s5: Stage[Any, Any],
        s6: PlainStage[Any],
        /,
        *stages: Stage[Any, Any] | PlainStage[Any],
        name: str = "pipeline",
    ) -> None: ...
    @overload
    def __init__(
        self: Pipeline[Any, Any],
        s1: Stage[Any, Any],
        s2: Stage[Any, Any],
        s3: Stage[Any, Any],
        s4: Stage[Any, Any],
        s5: Stage[Any, Any],
        s6: Stage[Any, Any],
        s7: PlainStage[Any],
        /,
        *stages: Stage[Any, Any] | PlainStage[Any],
        name: str = "pipeline",
    ) -> None: ...
    @overload
    def __init__(
        self: Pipeline[Any, Any],
        s1: Stage[Any, Any],
        s2: Stage[Any, Any],
        s3: Stage[Any, Any],
        s4: Stage[Any, Any],
        s5: Stage[Any, Any],
        s6: Stage[Any, Any],
        s7: Stage[Any, Any],
        s8: PlainStage[Any],
        /,
        *stages: Stage[Any, Any] | PlainStage[Any],
        name: str = "pipeline",
    ) -> None: ...
    @overload
    def __init__(
        self: Pipeline[Any, Any],
        s1: Stage[Any, Any],
        s2: Stage[Any, Any],
        s3: Stage[Any, Any],
        s4: Stage[Any, Any],
        s5: Stage[Any, Any],
        s6: Stage[Any, Any],
        s7: Stage[Any, Any],
        s8: Stage[Any, Any],
        s9: PlainStage[Any],
        /,
        *stages: Stage[Any, Any] | PlainStage[Any],
        name: str = "pipeline",
    ) -> None: ...
    @overload
    def __init__(
        self: Pipeline[Any, Any],
        s1: Stage[Any, Any],
        s2: Stage[Any, Any],
        s3: Stage[Any, Any],
        s4: Stage[Any, Any],
        s5: Stage[Any, Any],
        s6: Stage[Any, Any],
        s7: Stage[Any, Any],
        s8: Stage[Any, Any],
        s9: Stage[Any, Any],
        /,
        *stages: Stage[Any, Any] | PlainStage[Any],
        name: str = "pipeline",
    ) -> None: ...
    def __init__(self, *stages: object, name: str = "pipeline") -> None:
        super().__init__(*stages, name=name)
        self._run: PipelineRun | None = None
        # the transport of the current or last run when it ran through one (its books)
        self._transport: Transport | None = None
        self._active = False

    @overload
    def __rshift__(self, other: Stage[Out, C]) -> Pipeline[In, C]: ...
    @overload
    def __rshift__(self, other: PlainStage[Out]) -> Pipeline[In, Any]: ...
    def __rshift__(self, other: object) -> Pipeline[Any, Any]:
        return compose(self, other, name=self.name)

    def __rrshift__(self, other: PlainStage[Any]) -> Pipeline[Any, Out]:
        return compose(other, self, name=self.name)

    def __repr__(self) -> str:
        return f"<Pipeline {self.name!r}: {self.describe()}>"

    # -- runs ---------------------------------------------------------------------------------

    def _begin(self, restore: Snapshot | None = None) -> PipelineRun:
        self._check_idle()
        # Function blocks keep no state and may serve several pipelines at once; a Block
        # instance's state belongs to one run.
        blocks = [b for b in iter_blocks(self.stages) if not isinstance(b, FunctionBlock)]
        for blk in blocks:
            if blk._aioflow_running is not None and blk._aioflow_running is not self:
                msg = (
                    f"block {blk.options.name!r} is already running in another pipeline; a "
                    "Block instance belongs to one pipeline: create another instance"
                )
                raise GraphError(msg)
        run = PipelineRun(self.stages, self.name)
        if restore is not None:  # all or nothing, before this run replaces the last one
            run.restore(check_restorable(restore)["blocks"])
        for blk in blocks:
            blk._aioflow_running = self
        self._active = True
        self._run = run
        self._transport = None
        return run

    def _check_idle(self) -> None:
        if self._active:
            msg = (
                f"pipeline {self.name!r} is already running; a Pipeline object runs once at a "
                "time. For concurrent callers, open it once and share it: "
                "`async with pipe.open() as running: await running.submit(item)`. A "
                "stream() left by `break` ends when its generator is closed: iterate it "
                "inside `async with contextlib.aclosing(pipe.stream(items)) as outs:`"
            )
            raise GraphError(msg)

    def _end(self) -> None:
        for blk in iter_blocks(self.stages):  # (function blocks are never marked)
            if blk._aioflow_running is self:
                blk._aioflow_running = None
        self._active = False

    async def run(
        self, items: Iterable[In] | AsyncIterable[In], *, transport: Transport | None = None
    ) -> list[Out]:
        """Run the pipeline over ``items`` and return every output, in order.

        Returns once every block has finished and torn down. With ``transport``
        (``aioflow.transport.redis.RedisTransport(url)``) the blocks run in worker processes
        (``python -m aioflow worker``) and the outputs are the same.

        Raises:
            ExceptionGroup: of :class:`BlockError`, if a block failed (after every block
                stopped and every teardown ran); catch with ``except* af.BlockError``.
            GraphError: the pipeline is already running, or ``items`` is a ``str``, ``bytes``
                or not iterable.
        """
        _check_items(self.name, "run", items)
        if transport is not None:
            return [out async for out in self.stream(items, transport=transport)]
        run = self._begin()
        try:
            sup = asyncio.create_task(run.supervise(run.feed(items)), name=f"aioflow:{self.name}")
            results: list[Out] = []
            out = run.output
            buf = out._buf
            latency = run.latency
            perf = time.perf_counter
            try:
                while True:
                    if buf:
                        envs = out.drain_nowait()
                        latency.add_outputs(perf(), envs)
                        results.extend(map(_value, envs))
                        run.recycle(envs)
                    elif out.closed:
                        break
                    else:
                        await out.wait_readable()
            except BaseException:
                sup.cancel()
                try:
                    await wait_finished(sup)
                finally:
                    log_unraised(sup, self.name)
                raise
            await wait_finished(sup)
            result_of(sup)
            return results
        finally:
            self._end()

    def stream(
        self, items: Iterable[In] | AsyncIterable[In], *, transport: Transport | None = None
    ) -> AsyncGenerator[Out, None]:
        """Run the pipeline over ``items``, yielding outputs in order as they come.

        An async generator: consume it with ``async for`` (a plain ``for`` raises a
        ``TypeError`` saying so). Memory stays bounded however long ``items`` is: a slow
        consumer makes the source wait. Leaving the loop early stops the run and cleans up;
        wrap it in ``contextlib.aclosing(...)`` to have that happen at once rather than when the
        generator is collected.

        Raises:
            ExceptionGroup: of :class:`BlockError`, if a block failed.
            GraphError: at once (when called), if ``items`` is a ``str``, ``bytes`` or not
                iterable; when iterated, if the pipeline is already running.
        """
        _check_items(self.name, "stream", items)
        if transport is not None:
            return _Stream(self._remote_stream(items, transport), self.name)
        return _Stream(self._stream(items), self.name)

    async def _remote_stream(
        self, items: Iterable[Any] | AsyncIterable[Any], transport: Transport
    ) -> AsyncGenerator[Any, None]:
        self._check_idle()
        self._active = True
        self._run = None  # the transport gathers the books (the workers keep them)
        self._transport = transport
        try:
            async with contextlib.aclosing(transport.stream(self, items)) as outs:
                async for out in outs:
                    yield out
        finally:
            self._active = False

    async def _stream(self, items: Iterable[Any] | AsyncIterable[Any]) -> AsyncGenerator[Any, None]:
        run = self._begin()
        sup = asyncio.create_task(run.supervise(run.feed(items)), name=f"aioflow:{self.name}")
        finished = False
        # End-to-end latency: reading the clock for every output would cost a trivial pipeline
        # about 10% of its time (measured), so while outputs come fast (under 50 us apart) the
        # clock is read for one in 16, which counts for itself and the 15 before it.
        latency = run.latency
        perf = time.perf_counter
        skip = owed = 0
        dt = 0.0
        last = perf()
        try:
            out = run.output
            while True:
                try:
                    env = out.get_nowait()
                except asyncio.QueueEmpty:
                    try:
                        env = await out.get()
                    except ChannelClosed:
                        break
                except ChannelClosed:
                    break
                if owed < skip:
                    owed += 1
                else:
                    now = perf()
                    dt = now - env.born
                    owed += 1
                    latency.add_many(dt, owed)
                    skip = 15 if now - last < owed * 5e-5 else 0
                    owed = 0
                    last = now
                yield env.value
            finished = True
        finally:
            if owed:  # counted with the last one timed
                latency.add_many(dt, owed)
            if not finished:
                sup.cancel()
            try:
                await wait_finished(sup)
            finally:
                if not finished:
                    log_unraised(sup, self.name)
                self._end()
        result_of(sup)

    @contextlib.asynccontextmanager
    async def open(
        self,
        *,
        restore: Snapshot | None = None,
        store: StateStore | None = None,
        transport: Transport | None = None,
    ) -> AsyncIterator[RunningPipeline[In, Out]]:
        """Start the pipeline as a service for :meth:`RunningPipeline.submit`.

        Waits for every block's ``setup`` before yielding. Leaving the block drains: items in
        flight finish and their callers get their answers. If the body raises, the pipeline is
        cancelled instead.

        Args:
            restore: a snapshot (from :meth:`RunningPipeline.snapshot`) to start the keyed
                blocks' state from.
            store: a :class:`~aioflow.state.StateStore` (``FileStore(path)``): the pipeline
                starts from its latest snapshot (unless ``restore`` is given) and, when it
                drains, writes a new one, atomically. Keys then live on instead of being
                evicted at the end.
            transport: run the blocks in worker processes
                (``aioflow.transport.redis.RedisTransport(url)``); the object yielded has the
                same ``submit``, ``statistics`` and ``stop``.

        Raises:
            SnapshotError: the snapshot (or the store's file) is not a valid snapshot.
            GraphError: it holds state for a block that is not a stateful keyed block here.
                Either way nothing was restored and nothing started.

        >>> import aioflow as af
        >>> async def main() -> int:
        ...     async with af.Pipeline(lambda x: x * 10).open() as running:
        ...         return await running.submit(4)
        >>> af.run(main())
        40
        """
        if transport is not None:
            if restore is not None or store is not None:
                msg = f"pipeline {self.name!r}: restore= and store= do not apply with transport="
                raise GraphError(msg)
            self._check_idle()
            self._active = True
            self._run = None
            self._transport = transport
            try:
                async with transport.open(self) as remote:
                    yield remote
            finally:
                self._active = False
            return
        if restore is None and store is not None:
            restore = await store.load()
        run = self._begin(restore)
        try:
            if store is not None:
                for rt in run.blocks:
                    rt.keep_state = True
            sup = asyncio.create_task(
                run.supervise(run.sink_tickets()), name=f"aioflow:{self.name}"
            )
            running: RunningPipeline[In, Out] = RunningPipeline(self, run, sup)
            try:
                await run.ready
                if sup.done():
                    result_of(sup)  # setup failed: raise its group
                    msg = f"pipeline {self.name!r} stopped before it was ready"
                    raise PipelineClosed(msg)
                yield running
            except BaseException as exc:
                running._closing = True
                await running._close_servers()
                sup.cancel()
                try:
                    await wait_finished(sup)
                finally:
                    log_unraised(sup, self.name, raising=exc)
                raise
            await running._close_servers()
            await running.stop()
            if store is not None:
                await store.save(running.snapshot())
        finally:
            self._end()

    def statistics(self) -> dict[str, BlockStatistics]:
        """``{block name: BlockStatistics}`` of the current or last run (zeros before any).

        After a run through a transport, the transport's books: the blocks kept local from this
        process, the remote ones merged over the workers (``docs/distributed.md``)."""
        books = getattr(self._transport, "statistics", None)
        if self._run is None and books is not None:
            result: dict[str, BlockStatistics] = books(self)
            return result
        if self._run is None:
            return {name: BlockStatistics(name=name) for name in stage_names(self.stages)}
        return self._run.statistics()

    def bottleneck(self) -> Bottleneck | None:
        """Which block limits the current or last run, and why (None before any run): see
        :class:`~aioflow.stats.Bottleneck`."""
        return find_bottleneck(self.statistics())

    def latency(self) -> LatencyHistogram:
        """End-to-end latency of the current or last run's outputs (empty before any): see
        :meth:`RunningPipeline.latency`."""
        if self._run is None:
            return LatencyHistogram()
        return self._run.latency.snapshot()


def compose(*stages: object, name: str = "pipeline") -> Pipeline[Any, Any]:
    """``Pipeline(*stages, name=name)`` for stages whose types are not known statically (what
    ``a >> b`` builds once its overloads have typed the result)."""
    make: Callable[..., Pipeline[Any, Any]] = Pipeline
    return make(*stages, name=name)


class _Stream(AsyncGenerator[T, None]):
    """What ``stream()`` returns: its async generator, and an error that says ``async for``
    when a plain ``for`` (or ``list()``) tries to iterate it."""

    __slots__ = ("_agen", "_name")

    def __init__(self, agen: AsyncGenerator[T, None], name: str) -> None:
        self._agen = agen
        self._name = name

    def __aiter__(self) -> AsyncGenerator[T, None]:
        # `async for` then drives the native generator itself, at native speed.
        return self._agen

    def __anext__(self) -> Coroutine[Any, Any, T]:
        return self._agen.__anext__()

    def asend(self, value: None, /) -> Coroutine[Any, Any, T]:
        return self._agen.asend(value)

    def athrow(
        self, typ: Any, val: Any = None, tb: TracebackType | None = None, /
    ) -> Coroutine[Any, Any, T]:
        if val is None and tb is None:
            return self._agen.athrow(typ)
        return self._agen.athrow(typ, val, tb)

    def aclose(self) -> Coroutine[Any, Any, None]:
        return self._agen.aclose()

    def __iter__(self) -> NoReturn:
        msg = (
            f"pipeline {self._name!r}: stream() is an async generator; iterate it with "
            "`async for out in pipe.stream(items): ...` inside an async function, or collect "
            "every output with `outputs = await pipe.run(items)`"
        )
        raise TypeError(msg)

    def __repr__(self) -> str:
        return f"<stream of pipeline {self._name!r}>"


class RunningPipeline(Generic[In, Out]):
    """An open pipeline: ``submit`` items concurrently, read live statistics, ``stop``."""

    def __init__(
        self, pipeline: Pipeline[In, Out], run: PipelineRun, task: asyncio.Task[None]
    ) -> None:
        self.pipeline = pipeline
        self._run = run
        self._task = task
        self._closing = False
        self._servers: list[Server] = []

    @property
    def name(self) -> str:
        return self.pipeline.name

    @property
    def closed(self) -> bool:
        """True once ``stop()`` began or the pipeline failed."""
        return self._closing or self._run.finished

    async def submit(self, item: In) -> Out:
        """Send ``item`` through the pipeline and return its output.

        Waits while the first block's queue is full (backpressure). Returns a list when the
        pipeline made several outputs from the item.

        Raises:
            ItemDropped: the pipeline made no output (filtered, dropped, skipped).
            BlockError: the item failed; other items and callers are not affected.
            PipelineClosed: the pipeline is stopping or stopped.
        """
        run = self._run
        if self._closing or run.finished:
            msg = f"pipeline {self.name!r} is not accepting items: it is stopping or stopped"
            raise PipelineClosed(msg)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        ticket = SubmitTicket(future)
        env = Envelope(item, time.perf_counter(), ticket)
        tickets = run.tickets
        tickets.add(ticket)
        try:
            try:
                if item.__class__ is EndOfKey:
                    run.input.controls += 1  # (before it is buffered: see _engine/controls.py)
                await run.input.put(env)
            except ChannelClosed:
                msg = f"pipeline {self.name!r} is not accepting items: it is stopping or stopped"
                raise PipelineClosed(msg) from None
            except BaseException:
                # Cancelled while it waited for room: its item may have been put in its turn
                # all the same (Channel._wait_turn), and nobody awaits its answer now, as when
                # a caller is cancelled while it awaits the output.
                future.cancel()
                raise
            output: Out = await future  # (a list when the item made several: typed as one)
            return output
        finally:
            tickets.discard(ticket)
            # A caller that left on its own PipelineClosed (the input closed while it waited
            # for room) may have had its future failed too: that error is the same news, and
            # must not be logged as "Future exception was never retrieved".
            if future.done() and not future.cancelled():
                future.exception()

    def statistics(self) -> dict[str, BlockStatistics]:
        """Live ``{block name: BlockStatistics}``."""
        return self._run.statistics()

    def bottleneck(self) -> Bottleneck | None:
        """Which block limits throughput now, and why: busy near all of its workers' time,
        waiting on a full output (the limit is downstream) or starved (the limit is the
        source); None before any item arrived. See :class:`~aioflow.stats.Bottleneck`."""
        return find_bottleneck(self._run.statistics())

    def latency(self) -> LatencyHistogram:
        """End-to-end latency of every output so far, counted in fixed buckets: from when its
        item entered the pipeline (the source yielded it, or ``submit()`` was called) to when
        the output was handed to the caller (``run()``'s list, ``stream()``'s consumer, the
        ``submit()`` future). Its ``count`` is the number of outputs.

        >>> import aioflow as af
        >>> async def main() -> int:
        ...     async with af.Pipeline(lambda x: x * 10).open() as running:
        ...         await running.submit(4)
        ...         return running.latency().count
        >>> af.run(main())
        1
        """
        return self._run.latency.snapshot()

    async def serve_metrics(
        self, host: str = "127.0.0.1", port: int = 0, *, token: str | None = None
    ) -> str:
        """Serve Prometheus metrics and the live dashboard while the pipeline is open; return
        the metrics URL, ``http://HOST:PORT/metrics`` (the dashboard is at ``/``).

        The server stops when the ``open()`` block exits, and its port is free again.

        Args:
            host: where to listen. Loopback by default; any other address is reachable from
                other machines: give a ``token`` then.
            port: 0 picks a free port.
            token: if given, the metrics and the event stream want
                ``Authorization: Bearer TOKEN`` (or ``?token=TOKEN``).

        To serve the metrics from an aiohttp app of your own instead, mount them with
        :func:`aioflow.observe.add_routes`.

        >>> import aioflow as af
        >>> async def main() -> str:
        ...     async with af.Pipeline(lambda x: x, name="demo").open() as running:
        ...         url = await running.serve_metrics()
        ...         return url.rsplit(":", 1)[0]
        >>> af.run(main())
        'http://127.0.0.1'
        """
        if self.closed:
            msg = f"pipeline {self.name!r} is stopping or stopped: no metrics to serve"
            raise PipelineClosed(msg)
        # Imported here: the core never loads prometheus-client or the dashboard until asked.
        from .observe.server import Server

        server = Server(self, host=host, port=port, token=token)
        await server.start()
        self._servers.append(server)
        return server.metrics_url

    async def _close_servers(self) -> None:
        servers, self._servers = self._servers, []
        for server in servers:
            await server.close()

    def snapshot(self) -> Snapshot:
        """Every keyed block's per-key state, as plain data (no pickle): write it with
        :func:`aioflow.state.encode`, start from it with ``pipe.open(restore=snapshot)``.

        Raises:
            SnapshotError: a state holds something the codec cannot write.
        """
        return make_snapshot(self.name, self._run.states())

    async def stop(self) -> None:
        """Stop accepting items, let those in flight finish, tear down. Raises what failed."""
        if not self._closing:
            self._closing = True
            self._run.input.close()
        try:
            await wait_finished(self._task)
        except BaseException:
            log_unraised(self._task, self.name)
            raise
        result_of(self._task)

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<RunningPipeline {self.name!r} {state}>"
