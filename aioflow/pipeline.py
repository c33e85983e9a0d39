"""The public :class:`Pipeline`: build once, then ``run``, ``stream`` or ``open`` it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Iterable
from typing import Any

from ._engine.channel import ChannelClosed
from ._engine.edge import Transport
from ._engine.envelope import Envelope, SubmitTicket
from ._engine.supervisor import PipelineRun, stage_names, wait_finished
from .block import FunctionBlock
from .errors import GraphError, PipelineClosed
from .graph import Graph, iter_blocks
from .state import Snapshot, StateStore, make_snapshot
from .stats import BlockStatistics

__all__ = ["Pipeline", "RunningPipeline"]


class Pipeline(Graph):
    """A chain of blocks connected by bounded queues.

    Args:
        *stages: blocks (``@af.block`` functions, ``af.Block`` instances), plain callables
            (wrapped with default options), nested pipelines (flattened) and ``af.branch(...)``.
        name: the pipeline's name, used in errors and logs.

    ``a >> b >> c`` builds the same pipeline as ``Pipeline(a, b, c)``.

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

    def __init__(self, *stages: object, name: str = "pipeline") -> None:
        super().__init__(*stages, name=name)
        self._run: PipelineRun | None = None
        self._active = False

    def __rshift__(self, other: object) -> Pipeline:
        return Pipeline(self, other, name=self.name)

    def __rrshift__(self, other: object) -> Pipeline:
        return Pipeline(other, self, name=self.name)

    def __repr__(self) -> str:
        return f"<Pipeline {self.name!r}: {self.describe()}>"

    # -- runs ---------------------------------------------------------------------------------

    def _begin(self) -> PipelineRun:
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
        for blk in blocks:
            blk._aioflow_running = self
        self._active = True
        self._run = run
        return run

    def _check_idle(self) -> None:
        if self._active:
            msg = (
                f"pipeline {self.name!r} is already running; a Pipeline object runs once at a "
                "time. For concurrent callers, open it once and share it: "
                "`async with pipe.open() as running: await running.submit(item)`"
            )
            raise GraphError(msg)

    def _end(self) -> None:
        for blk in iter_blocks(self.stages):  # (function blocks are never marked)
            if blk._aioflow_running is self:
                blk._aioflow_running = None
        self._active = False

    async def run(
        self, items: Iterable[Any] | AsyncIterable[Any], *, transport: Transport | None = None
    ) -> list[Any]:
        """Run the pipeline over ``items`` and return every output, in order.

        Returns once every block has finished and torn down. With ``transport``
        (``aioflow.transport.redis.RedisTransport(url)``) the blocks run in worker processes
        (``python -m aioflow worker``) and the outputs are the same.

        Raises:
            ExceptionGroup: of :class:`BlockError`, if a block failed (after every block
                stopped and every teardown ran); catch with ``except* af.BlockError``.
            GraphError: the pipeline is already running.
        """
        if transport is not None:
            return [out async for out in self.stream(items, transport=transport)]
        run = self._begin()
        try:
            sup = asyncio.create_task(run.supervise(run.feed(items)), name=f"aioflow:{self.name}")
            results: list[Any] = []
            out = run.output
            buf = out._buf
            try:
                while True:
                    if buf:
                        results.extend([env.value for env in out.drain_nowait()])
                    elif out.closed:
                        break
                    else:
                        await out.wait_readable()
            except BaseException:
                sup.cancel()
                await wait_finished(sup)
                raise
            await wait_finished(sup)
            sup.result()
            return results
        finally:
            self._end()

    async def stream(
        self, items: Iterable[Any] | AsyncIterable[Any], *, transport: Transport | None = None
    ) -> AsyncGenerator[Any, None]:
        """Run the pipeline over ``items``, yielding outputs in order as they come.

        Memory stays bounded however long ``items`` is: a slow consumer makes the source wait.
        Leaving the loop early stops the run and cleans up; wrap it in
        ``contextlib.aclosing(...)`` to have that happen at once rather than when the generator
        is collected.

        Raises:
            ExceptionGroup: of :class:`BlockError`, if a block failed.
        """
        if transport is not None:
            self._check_idle()
            self._active = True
            self._run = None  # the workers keep the books: no stale local ones
            try:
                async with contextlib.aclosing(transport.stream(self, items)) as outs:
                    async for out in outs:
                        yield out
            finally:
                self._active = False
            return
        run = self._begin()
        sup = asyncio.create_task(run.supervise(run.feed(items)), name=f"aioflow:{self.name}")
        finished = False
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
                yield env.value
            finished = True
        finally:
            if not finished:
                sup.cancel()
            try:
                await wait_finished(sup)
            finally:
                self._end()
        sup.result()

    @contextlib.asynccontextmanager
    async def open(
        self,
        *,
        restore: Snapshot | None = None,
        store: StateStore | None = None,
        transport: Transport | None = None,
    ) -> AsyncIterator[RunningPipeline]:
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
            try:
                async with transport.open(self) as remote:
                    yield remote
            finally:
                self._active = False
            return
        if restore is None and store is not None:
            restore = await store.load()
        run = self._begin()
        try:
            if restore is not None:
                run.restore(restore["blocks"])
            if store is not None:
                for rt in run.blocks:
                    rt.keep_state = True
            sup = asyncio.create_task(
                run.supervise(run.sink_tickets()), name=f"aioflow:{self.name}"
            )
            running = RunningPipeline(self, run, sup)
            try:
                await run.ready
                if sup.done():
                    sup.result()  # setup failed: raise its group
                    msg = f"pipeline {self.name!r} stopped before it was ready"
                    raise PipelineClosed(msg)
                yield running
            except BaseException:
                running._closing = True
                sup.cancel()
                await wait_finished(sup)
                raise
            await running.stop()
            if store is not None:
                await store.save(running.snapshot())
        finally:
            self._end()

    def statistics(self) -> dict[str, BlockStatistics]:
        """``{block name: BlockStatistics}`` of the current or last run (zeros before any)."""
        if self._run is None:
            return {name: BlockStatistics(name=name) for name in stage_names(self.stages)}
        return self._run.statistics()


class RunningPipeline:
    """An open pipeline: ``submit`` items concurrently, read live statistics, ``stop``."""

    def __init__(self, pipeline: Pipeline, run: PipelineRun, task: asyncio.Task[None]) -> None:
        self.pipeline = pipeline
        self._run = run
        self._task = task
        self._closing = False

    @property
    def name(self) -> str:
        return self.pipeline.name

    @property
    def closed(self) -> bool:
        """True once ``stop()`` began or the pipeline failed."""
        return self._closing or self._run.finished

    async def submit(self, item: Any) -> Any:
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
                await run.input.put(env)
            except ChannelClosed:
                msg = f"pipeline {self.name!r} is not accepting items: it is stopping or stopped"
                raise PipelineClosed(msg) from None
            return await future
        finally:
            tickets.discard(ticket)

    def statistics(self) -> dict[str, BlockStatistics]:
        """Live ``{block name: BlockStatistics}``."""
        return self._run.statistics()

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
        await wait_finished(self._task)
        self._task.result()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<RunningPipeline {self.name!r} {state}>"
