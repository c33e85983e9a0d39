"""One run of a pipeline: its channels, its runtimes, and the task that owns them all.

:class:`PipelineRun` wires a :class:`~.channel.Channel` in front of every stage and one
after the last, feeds the source in, and its :meth:`PipelineRun.supervise` coroutine runs every
block's lifecycle in one :class:`asyncio.TaskGroup`, so that a failure or a cancellation reaches
every task of the run. The blocks themselves run in :mod:`.runner`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterable, Coroutine, Hashable, Iterable, Sequence
from dataclasses import replace
from itertools import islice
from sys import getrefcount
from typing import Any

from ..block import Block
from ..control import EndOfKey
from ..errors import BlockError, GraphError, PipelineClosed, describe, summarize
from ..graph import Branch
from ..sampling import Every
from ..stats import BlockStatistics
from .branching import BranchRuntime
from .cancelling import (
    Interrupted,
    as_failure,
    being_cancelled,
    carrying_interrupts,
    cause_of,
    describe_failure,
)
from .channel import Channel, ChannelClosed
from .envelope import Envelope, SubmitTicket
from .holding import EveryRuntime
from .latency import Buckets
from .runner import _NOTHING, BlockRuntime, _Lane

__all__ = ["PipelineRun", "log_unraised", "result_of", "stage_names", "wait_finished"]

logger = logging.getLogger("aioflow")

_perf = time.perf_counter
_SPARE = 256  # envelopes kept for reuse, at most


Runtime = BlockRuntime | BranchRuntime | EveryRuntime


class PipelineRun:
    """The channels, runtimes and tasks of one run of a pipeline."""

    def __init__(self, stages: tuple[Block | Branch, ...], name: str) -> None:
        self.name = name
        self.runtimes: list[Runtime] = []
        self.output: Channel[Envelope] = Channel(64)
        self.input = self.build_chain(stages, self.output)
        self.order = stage_names(stages)
        self.blocks = [rt for rt in self.runtimes if isinstance(rt, BlockRuntime)]
        for rt in self.runtimes:
            # Control items (af.EndOfKey) stop at the last stage: the caller gets items only.
            rt.terminal = rt.out is self.output
        self._unready = len(self.blocks)
        # Done when every block's setup completed, or when the run ended before that.
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._unready == 0:
            self.ready.set_result(None)
        self.tickets: set[SubmitTicket] = set()
        self.finished = False
        #: open() mode: outputs that belong to no submitted item (evict() flushes)
        self.unclaimed = 0
        #: when the run began and (once it has) ended, for the records' ``wall_s``
        self.started = _perf()
        self.stopped: float | None = None
        #: end-to-end latency of every output, counted where it is handed to the caller
        self.latency = Buckets()
        #: envelopes of outputs that ``run()`` has taken, for the source to reuse (see
        #: :meth:`recycle`)
        self.spare: list[Envelope] = []

    def build_chain(
        self, stages: tuple[Block | Branch, ...], out: Channel[Envelope]
    ) -> Channel[Envelope]:
        """Make the runtimes of ``stages`` writing to ``out``; return the chain's input."""
        built: list[Runtime] = []
        nxt = out
        for stage in reversed(stages):
            rt: Runtime
            if isinstance(stage, Every):
                rt = EveryRuntime(stage, nxt, self)
            elif isinstance(stage, Branch):
                rt = BranchRuntime(stage, nxt, self)
            else:
                rt = BlockRuntime(stage, nxt)
            built.append(rt)
            nxt = rt.inq
        self.runtimes.extend(reversed(built))
        return nxt

    @staticmethod
    def chain_capacity(stages: tuple[Block | Branch, ...]) -> int:
        total = 0
        for stage in stages:
            if isinstance(stage, Branch):
                total += stage.queue_size + max(
                    PipelineRun.chain_capacity(m) for m in stage.members
                )
            else:
                total += stage.options.queue_size + stage.options.workers
        return total

    def statistics(self) -> dict[str, BlockStatistics]:
        """Records in pipeline order (a branch before its members)."""
        by_name = {rt.name: rt for rt in self.runtimes}
        wall = (self.stopped if self.stopped is not None else _perf()) - self.started
        return {name: replace(by_name[name].record(), wall_s=wall) for name in self.order}

    def states(self) -> dict[str, list[tuple[Hashable, Any]]]:
        """The keyed state of every stateful block (live objects): ``(key, state)`` pairs.
        Pairs, not a dict: the keys are not hashed or compared again (a user's key may refuse
        to be by now, and a snapshot needs neither)."""
        return {
            rt.name: [
                (k, lane.state) for k, lane in list(rt.lanes.items()) if lane.state is not _NOTHING
            ]
            for rt in self.blocks
            if rt.block._aioflow_stateful
        }

    def restore(self, blocks: dict[str, list[list[Any]]]) -> None:
        """Start from saved keyed state: ``{block name: [[key, state], ...]}``."""
        by_name = {rt.name: rt for rt in self.blocks}
        for name in blocks:  # every name checked before any state is set: all or nothing
            rt = by_name.get(name)
            if rt is None or not rt.block._aioflow_stateful:
                stateful = sorted(n for n, r in by_name.items() if r.block._aioflow_stateful)
                msg = (
                    f"pipeline {self.name!r}: the snapshot holds state for block {name!r}, "
                    f"which is not a stateful keyed block here (stateful blocks: {stateful})"
                )
                raise GraphError(msg)
        for name, pairs in blocks.items():
            rt = by_name[name]
            for key, state in pairs:
                lane = rt.lanes[key] = _Lane()
                lane.state = state

    def recycle(self, envs: list[Envelope]) -> None:
        """Keep the envelopes of outputs that have been handed over, for :meth:`feed` to reuse
        (a few at most). Only an envelope that nothing else refers to is kept: ``envs`` itself,
        the loop and ``getrefcount`` hold the only references to it."""
        spare = self.spare
        if len(spare) >= _SPARE or self.finished:
            return  # (once the run has ended nothing reuses them: they would keep outputs)
        keep = spare.append
        for env in envs:
            if getrefcount(env) == 3:
                keep(env)

    def _mark_ready(self) -> None:
        self._unready -= 1
        if self._unready == 0 and not self.ready.done():
            self.ready.set_result(None)

    async def supervise(self, *extra: Coroutine[Any, Any, None]) -> None:
        """Run every task of the pipeline in one TaskGroup; raise one flat ExceptionGroup.

        It holds every error: those the tasks raised and the teardown errors of blocks that were
        cancelled because another failed. When the run itself is cancelled, the cancellation
        goes on and those teardown errors are logged, each one.
        """
        if logger.isEnabledFor(logging.INFO):
            self._log_start()
        outcome = "failed"
        try:
            async with asyncio.TaskGroup() as tg:
                for rt in self.runtimes:
                    if isinstance(rt, BlockRuntime):
                        tg.create_task(
                            _guarded(self._lifecycle(rt), rt.name),
                            name=f"aioflow:{rt.name}",
                        )
                    else:
                        for coro in rt.coroutines():
                            tg.create_task(_guarded(coro, rt.name), name=f"aioflow:{rt.name}")
                for coro in extra:
                    tg.create_task(_guarded(coro, self.name), name=f"aioflow:{self.name}")
        except BaseExceptionGroup as group:
            leaves = [*_leaves(group), *self._teardown_errors()]
            interrupt = next((e for e in leaves if isinstance(e, Interrupted)), None)
            if interrupt is not None:
                # KeyboardInterrupt / SystemExit from a block's code: every block has been
                # cancelled and torn down; the caller raises the interrupt itself (result_of),
                # and what else failed meanwhile is logged, each one.
                outcome = "interrupted"
                self._log_beside(interrupt.error, leaves)
                self._abort(interrupt)
                raise interrupt from None
            if all(isinstance(e, asyncio.CancelledError) for e in leaves):
                outcome = "cancelled"
            self._abort(group)
            raise BaseExceptionGroup(f"pipeline {self.name!r} failed", leaves) from None
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                outcome = "cancelled"
            self._log_beside(exc, self._teardown_errors())
            self._abort(exc)
            raise
        else:
            held = self._teardown_errors()  # (only a cancelled block keeps one, so never here)
            if held:
                raise ExceptionGroup(f"pipeline {self.name!r} failed", held)
            outcome = "finished"
        finally:
            self.finished = True
            # The spare envelopes still hold outputs the caller has (up to _SPARE of them):
            # the pipeline keeps this run for its statistics, not its outputs.
            self.spare.clear()
            self.stopped = _perf()
            if not self.ready.done():
                self.ready.set_result(None)
            self.output.close()
            self.input.close()
            self._abort(None)
            if logger.isEnabledFor(logging.INFO):
                self._log_stop(outcome)

    def _log_beside(self, stopped_by: BaseException, errors: Sequence[BaseException]) -> None:
        """Log each of ``errors``, made while the run stopped on ``stopped_by`` (which its
        caller raises instead)."""
        for err in errors:
            if isinstance(err, (Interrupted, asyncio.CancelledError)):
                continue
            block = getattr(err, "block", None)
            logger.error(
                "pipeline %r stopped (%s); block %r: %s",
                self.name,
                type(stopped_by).__name__,
                block,
                err,
                exc_info=err,
                extra={"block": block} if block is not None else None,
            )

    # -- logging (records carry ``pipeline``, and ``block`` where a block is concerned) --------

    def _log_start(self) -> None:
        parts = []
        for rt in self.runtimes:
            if isinstance(rt, BlockRuntime):
                o = rt.opts
                parts.append(f"{rt.name} ({o.executor} x{o.workers})")
            else:
                parts.append(f"{rt.name} ({'every' if isinstance(rt, EveryRuntime) else 'branch'})")
        n = len(self.blocks)
        logger.info(
            "pipeline %r: starting %d block%s: %s",
            self.name,
            n,
            "" if n == 1 else "s",
            ", ".join(parts),
            extra={"pipeline": self.name},
        )

    def _log_stop(self, outcome: str) -> None:
        records = self.statistics()
        first = next(iter(records.values()), None)
        logger.info(
            "pipeline %r: %s after %.3f s: %d items in, %d out, %d dropped, %d skipped, %d failed",
            self.name,
            outcome,
            (self.stopped or _perf()) - self.started,
            first.received if first is not None else 0,
            self.output.received,
            sum(r.dropped for r in records.values()),
            sum(r.skipped for r in records.values()),
            sum(r.failed for r in records.values()),
            extra={"pipeline": self.name},
        )

    async def _lifecycle(self, rt: BlockRuntime) -> None:
        """A block's lifecycle, told at DEBUG: started, set up, ended and why."""
        extra = {"pipeline": self.name, "block": rt.name}
        debug = logger.isEnabledFor(logging.DEBUG)
        if debug:
            o = rt.opts
            logger.debug(
                "block %r: starting (%s, %s x%d, queue_size=%d)",
                rt.name,
                rt.kind,
                o.executor,
                o.workers,
                o.queue_size,
                extra=extra,
            )

        def ready() -> None:
            if debug:
                logger.debug("block %r: set up, taking items", rt.name, extra=extra)
            self._mark_ready()

        try:
            await rt.lifecycle(ready)
        except BaseException as exc:
            if debug:
                why = "cancelled" if isinstance(exc, asyncio.CancelledError) else "failed"
                logger.debug("block %r: %s, torn down", rt.name, why, extra=extra)
            raise
        if debug:
            rec = rt.record()
            logger.debug(
                "block %r: end of stream, torn down (received %d, emitted %d, busy %.3f s)",
                rt.name,
                rec.received,
                rec.emitted,
                rec.busy_s,
                extra=extra,
            )

    def _teardown_errors(self) -> list[BlockError]:
        """Take the teardown errors that cancelled blocks kept."""
        errors: list[BlockError] = []
        for rt in self.blocks:
            errors.extend(rt.teardown_errors)
            rt.teardown_errors.clear()
        return errors

    def _abort(self, cause: BaseException | None) -> None:
        """Fail every ``submit()`` still waiting: the pipeline will not answer it."""
        for ticket in list(self.tickets):
            if ticket.future.done():
                continue
            if isinstance(cause, Interrupted):
                # As for the caller of run(): the interrupt itself, bare.
                ticket.future.set_exception(cause.error)
                continue
            err = PipelineClosed(f"pipeline {self.name!r} stopped before the item finished")
            err.__cause__ = cause
            ticket.future.set_exception(err)
        self.tickets.clear()

    async def feed(self, items: Iterable[Any] | AsyncIterable[Any]) -> None:
        """Put ``items`` into the pipeline, then end the stream.

        The next item is fetched only once the first edge has room for it, so the source reads
        ahead exactly as far as the pipeline holds, and a live frame is never stamped and then
        kept waiting here. Each item is stamped with the time it was fetched; a plain iterable
        yields bursts without the loop turning, so it is read in runs of as many items as the
        edge has room for (at most 64), each run stamped once (exact to a few microseconds) and
        put in at once.
        """
        ch = self.input
        buf = ch._buf
        cap = ch.capacity
        leaky = ch.leaky
        perf = _perf
        source: Any = None
        try:
            if isinstance(items, AsyncIterable):
                source = aiter(items)
                async for x in source:
                    env = Envelope(x, perf(), None)
                    if x.__class__ is EndOfKey:
                        ch.controls += 1  # (before it is buffered: see controls.py)
                    if leaky:
                        await ch.put(env)
                        continue
                    ch.received += 1
                    buf.append(env)
                    if ch._getters:
                        ch._wake_getter()
                    if len(buf) >= cap:
                        await ch.wait_writable()
                        if ch.closed:
                            return
            elif leaky:
                source = iter(items)
                for x in source:
                    if x.__class__ is EndOfKey:
                        ch.controls += 1
                    await ch.put(Envelope(x, perf(), None))
            else:
                source = iter(items)
                new = object.__new__
                spare = self.spare
                reuse = spare.pop
                while True:
                    room = cap - len(buf)
                    if room <= 0:
                        await ch.wait_writable()
                        if ch.closed:
                            return
                        continue
                    # A run: as many items as fit, at most 64 for one reading of the clock.
                    want = room if room < 64 else 64
                    now = perf()
                    run: list[Envelope] = []
                    add = run.append
                    try:
                        for x in islice(source, want):
                            # (an Envelope without the call of its __init__: a third cheaper,
                            # and one that run() has handed over cheaper still)
                            env = reuse() if spare else new(Envelope)
                            env.value = x
                            env.born = now
                            env.ticket = None
                            add(env)
                            if x.__class__ is EndOfKey:
                                ch.controls += 1
                    except BaseException:
                        if run and not ch.closed:
                            ch.extend_nowait(run)  # what came before the error goes in
                        raise
                    ch.extend_nowait(run)
                    if len(run) < want:
                        break  # the source ended
        except ChannelClosed:
            return
        except BaseException as raised:
            exc = as_failure(raised)  # a cancellation of the run goes on up
            err = BlockError("<source>", describe_failure(exc), phase="source")
            raise err from cause_of(exc)
        finally:
            # A run that stops early closes the source (a camera generator's `finally` runs).
            await self._close_source(source)
        ch.close()

    async def _close_source(self, source: Any) -> None:
        """Close ``source``; its own cleanup failing is a BlockError of the source, like any
        other error of it (raised instead of what the feed was raising: that one is its
        ``__context__``)."""
        try:
            await _close_source(source)
        except BaseException as raised:
            exc = as_failure(raised)  # a cancellation of the run goes on up
            err = BlockError(
                "<source>", f"closing the source failed: {describe_failure(exc)}", phase="source"
            )
            raise err from cause_of(exc)

    async def sink_tickets(self) -> None:
        """``open()`` mode: hand each output to the ticket of its item."""
        out = self.output
        while True:
            try:
                env = await out.get()
            except ChannelClosed:
                return
            self.latency.add(_perf() - env.born)
            ticket = env.ticket
            if ticket is not None:
                ticket.output(env.value)
            else:
                # Made by no submitted item (a keyed block's evict() flush): nobody awaits it.
                self.unclaimed += 1
                logger.debug(
                    "pipeline %r: an output of no submitted item (%s) has no caller",
                    self.name,
                    summarize(env.value),
                )


async def _guarded(coro: Coroutine[Any, Any, None], name: str) -> None:
    """Run one task of the run; a CancelledError that ends it while nobody is cancelling it (the
    user's, slipped past the block's own handling) fails the run instead of ending the task
    quietly, which a TaskGroup would take as a normal exit. A KeyboardInterrupt or SystemExit
    comes out as :class:`~.cancelling.Interrupted` (see :func:`result_of`)."""
    try:
        await carrying_interrupts(coro)
    except asyncio.CancelledError as exc:
        if being_cancelled():
            raise
        msg = f"{describe(exc)} ended the task while the run was not being cancelled"
        raise BlockError(name, msg) from exc


def result_of(task: asyncio.Task[None]) -> None:
    """``task.result()`` of the run's task, done; when a KeyboardInterrupt or SystemExit from
    a block's code stopped the run, that exception itself, bare, as Python raises it."""
    try:
        task.result()
    except Interrupted as carried:
        error = carried.error
    else:
        return
    raise error


def log_unraised(task: asyncio.Task[Any], name: str, raising: BaseException | None = None) -> None:
    """Log, each one, the errors of the run's ``task`` that its caller cannot raise because it
    leaves with an exception of its own (``raising``: a cancellation, the body of ``open()``,
    a ``stream()`` consumer leaving); this also keeps asyncio from logging "Task exception was
    never retrieved"."""
    if not task.done() or task.cancelled():
        return
    exc = task.exception()
    if exc is None or exc is raising:
        return
    if isinstance(exc, Interrupted) and exc.error is raising:
        return  # the caller (a submit() in the body of open()) raises the interrupt itself
    for err in _leaves(exc) if isinstance(exc, BaseExceptionGroup) else (exc,):
        block = getattr(err, "block", None)
        logger.error(
            "pipeline %r stopped on its caller's exception; it also failed: %s",
            name,
            err,
            exc_info=err,
            extra={"block": block} if block is not None else None,
        )


async def _close_source(source: Any) -> None:
    aclose = getattr(source, "aclose", None)
    if aclose is not None:
        await aclose()
        return
    close = getattr(source, "close", None)
    if close is not None:
        close()


def stage_names(stages: tuple[Block | Branch, ...]) -> list[str]:
    """Every stage's name in pipeline order, a branch before its members."""
    names: list[str] = []
    for stage in stages:
        if isinstance(stage, Branch):
            names.append(stage.name)
            for member in stage.members:
                names.extend(stage_names(member))
        else:
            names.append(stage.options.name)
    return names


def _leaves(group: BaseExceptionGroup[BaseException]) -> Iterable[BaseException]:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc


async def wait_finished(task: asyncio.Task[Any]) -> None:
    """Wait until ``task`` is done, even if the caller is cancelled meanwhile (the cancellation
    is re-raised afterwards): a run is never left half torn down."""
    cancelled = False
    while not task.done():
        try:
            await asyncio.wait([task])
        except asyncio.CancelledError:
            cancelled = True
            task.cancel()
    if cancelled:
        raise asyncio.CancelledError
