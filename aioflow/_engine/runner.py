"""Running one block: its input channel, counters, pool and workers.

A :class:`BlockRuntime` exists per block per run (:mod:`.supervisor` makes them and owns
their tasks). Its *lifecycle* runs setup, the workers and teardown, then closes its output; each
worker reads its input, calls the user's code directly and writes its output, waiting only when
the input is empty or the output full. Batched blocks run in :mod:`.batched`, thread
blocks without a timeout in :mod:`.pulling` (their threads feed themselves).

How an item ends is decided here: output, a counted drop (overflow, stale, filtered), a counted
skip, or a :class:`BlockError`. In ``run()``/``stream()`` a BlockError fails the run; an item
that carries a ticket (``submit()``, branch members) has the error delivered to its ticket and
the block goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine, Hashable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from types import CoroutineType
from typing import Any, cast

from ..batching import Batch
from ..block import Block, FunctionBlock, Retry
from ..control import EndOfKey
from ..errors import BlockError, describe, summarize
from ..stats import BlockStatistics, percentile
from .batched import BatchRunner
from .cancelling import (
    INTERRUPTS,
    as_failure,
    being_cancelled,
    carrying_interrupts,
    cause_of,
    checkpoint,
    describe_failure,
    from_sync,
)
from .channel import Channel, ChannelClosed
from .controls import hand_on, input_counts, is_control, keep_control
from .envelope import Envelope
from .executors import (
    call_in_thread,
    check_not_coroutine,
    shutdown_pool,
    thread_pool,
    wait_through_cancel,
)
from .fair import FairChannel
from .latency import LatencySamples
from .ordering import ReorderWindow, Sequencer
from .processes import ProcessPool
from .pulling import ThreadPuller

__all__ = ["BlockRuntime"]

logger = logging.getLogger("aioflow")

_LATENCY_SAMPLES = 1024
_NOTHING: Any = object()


def _one_stream(env: Envelope) -> Hashable:
    return None


_perf = time.perf_counter


def _started(
    loop: asyncio.AbstractEventLoop,
    started: asyncio.Future[None],
    fn: Callable[..., Any],
    args: tuple[Any, ...],
) -> Any:
    """Run ``fn(*args)`` in a worker thread, first telling the loop that it started."""
    loop.call_soon_threadsafe(_mark_started, started)
    return fn(*args)


def _checked(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in a worker thread, refused if it returned a coroutine
    (:func:`~.executors.check_not_coroutine`): checked in the thread, so that a result the run
    no longer waits for (cancelled meanwhile) is closed too."""
    result = fn(*args)
    check_not_coroutine(result)
    return result


def _mark_started(started: asyncio.Future[None]) -> None:
    if not started.done():
        started.set_result(None)


class PartialOutput(Exception):
    """A generator failed after making outputs: they are kept, and it is not retried."""

    def __init__(self, outputs: list[Any], error: Exception) -> None:
        super().__init__(outputs, error)
        self.outputs = outputs
        self.error = error


def _collect(
    fn: Callable[..., Iterable[Any]],
    value: Any,
    *extra: Any,
    stopped: Callable[[], bool] | None = None,
) -> list[Any]:
    """Run a plain generator to its end (in a worker thread); or, once ``stopped()`` says the
    run is ending, only to its next output: a thread cannot be interrupted, but a generator
    can be left between two outputs (and closed, so its ``finally`` runs here)."""
    outputs: list[Any] = []
    gen = fn(value, *extra)
    try:
        for output in gen:
            if output.__class__ is CoroutineType:
                check_not_coroutine(output, "yielded")
            outputs.append(output)
            if stopped is not None and stopped():
                break
    except BaseException as exc:  # (from_sync re-raises an interrupt)
        if outputs:
            raise PartialOutput(outputs, from_sync(exc)) from exc
        raise
    finally:
        close = getattr(gen, "close", None)
        if close is not None:
            close()
    return outputs


def _collect_until(
    abandoned: Callable[[], bool], fn: Callable[..., Iterable[Any]], value: Any, *extra: Any
) -> list[Any]:
    """:func:`_collect` for the general path, which learns that its call was abandoned
    through ``abandoned()``."""
    return _collect(fn, value, *extra, stopped=abandoned)


class BlockRuntime:
    """One block during one run: its input channel, counters, pool and workers."""

    def __init__(self, blk: Block, out: Channel[Envelope]) -> None:
        opts = blk.options
        self.block = blk
        self.name = opts.name
        self.opts = opts
        self.kind = blk._aioflow_kind
        self.procpool: ProcessPool | None = None
        if blk._aioflow_executor == "process":
            # In a worker process a generator's outputs come back together, as a list.
            self.kind = "generator" if self.kind in ("asyncgen", "generator") else "function"
        # Generators make 0..n outputs per input; other kinds exactly one per completed input,
        # so for them ``emitted`` is ``completed`` and the hot path counts once.
        self.one_to_many = self.kind in ("asyncgen", "generator")
        self.fn: Callable[[Any], Any] = blk.fn if isinstance(blk, FunctionBlock) else blk.process
        self.inq: Channel[Envelope]
        stream_key = opts.stream_key()
        if stream_key is not None or opts.serve == "newest":
            # Shared by stream (aioflow/_engine/fair.py); every other block keeps the plain
            # channel and its hot paths.
            self.inq = FairChannel(
                opts.queue_size,
                self._stream_of(stream_key),
                overflow=opts.overflow,
                per_key=opts.per_key,
                newest=opts.serve == "newest",
                on_drop=self._on_overflow,
                on_supersede=self._on_supersede,
                control=is_control,
                on_refuse=self._on_refused,
            )
        else:
            self.inq = Channel(opts.queue_size, overflow=opts.overflow, on_drop=self._on_overflow)
        self.out = out
        self.pool: ThreadPoolExecutor | None = None
        self.completed = 0
        #: while ``_serial`` runs: its output channel, whose ``received`` counted from
        #: ``handed_from`` (plus ``putting``, an item waiting for room) is what it completed
        self.handing: Channel[Envelope] | None = None
        self.handed_from = 0
        self.putting = 0
        #: while ``_serial`` hands on a run: the items taken from its input, and the items that
        #: ended without an output, when the run began (-1: no run under way)
        self.run_taken = -1
        self.run_ended = 0
        self.emitted = 0
        self.stale = 0
        self.skipped = 0
        self.dead_letters = 0
        self.failed = 0
        #: items skipped or failed where they were put, their stream key (``fair=``) having
        #: failed (counted apart: ``_serial`` reads ``skipped`` and ``failed`` as its own)
        self.refused_skipped = 0
        self.refused_failed = 0
        #: the errors of such items that nobody awaits, for the lifecycle to raise, and
        #: whether it was cancelled to do so (see ``_on_refused``)
        self.refusals: list[BlockError] = []
        self.refusal_cancel = False
        self.task: asyncio.Task[Any] | None = None
        #: the lifecycle takes items (between its setup and its end), or has stopped doing so
        self.working = False
        self.stopped = False
        self.retried = 0
        self.filtered = 0
        self.flushed = 0
        self.busy_s = 0.0
        # timed calls: recent samples (p50, p99) and bucket counts (the latency histogram)
        self.latencies = LatencySamples(_LATENCY_SAMPLES)
        self.batches = 0
        self.batch_sizes: dict[int, int] = {}
        self.lanes: dict[Hashable, _Lane] = {}
        self.evicted = 0
        #: control items (:class:`~aioflow.EndOfKey`) taken from the input: not items, so the
        #: statistics leave them out
        self.controls = 0
        #: the last stage: control items stop here (they never reach the caller)
        self.terminal = False
        #: ordered=False with several workers: the numbers of the items being processed, so
        #: that a control item waits for those taken before it (see ``_behind``)
        self.taken = 0
        self.open_items: set[int] = set()
        self.item_done: asyncio.Event | None = None
        #: keep keyed state at end of stream (it goes to a snapshot store) instead of evicting
        self.keep_state = False
        #: told of each item's key as it reaches the block (the distributed mode's workers
        #: note which caller runs touched which keys: aioflow/_engine/segment.py)
        self.on_key: Callable[[Hashable, Envelope], None] | None = None
        #: teardown errors made while the block was being cancelled (see ``_teardown_failed``),
        #: and the error of a plain setup that ended after the cancellation came
        self.teardown_errors: list[BlockError] = []
        #: whether the block's setup completed (then its teardown runs)
        self.set_up = False

    # -- statistics ---------------------------------------------------------------------------

    def record(self) -> BlockStatistics:
        inq = self.inq
        received, queued = input_counts(inq, self.controls)
        dropped_by: dict[str, int] = {}
        if inq.overflowed > inq.superseded:
            dropped_by["overflow"] = inq.overflowed - inq.superseded
        if inq.superseded:
            dropped_by["superseded"] = inq.superseded
        if self.stale:
            dropped_by["stale"] = self.stale
        dropped = inq.overflowed + self.stale
        skipped = self.skipped + self.refused_skipped
        failed = self.failed + self.refused_failed
        completed = self.completed
        if self.handing is not None:
            # The serial path counts its completed items as the outputs it handed on (see
            # ``_serial``): the same number, kept by the output channel at no extra cost.
            completed += self.handing.counted() - self.handed_from + self.putting
        finished = completed + skipped + failed + self.stale
        # Items taken from the input and not finished yet. Derived, so that the hot path keeps
        # no extra counter: taken = received - still queued - evicted by overflow.
        in_flight = received - queued - inq.overflowed - finished
        samples = sorted(self.latencies.recent)  # once: percentile() finds it sorted
        return BlockStatistics(
            name=self.name,
            received=received,
            completed=completed,
            emitted=(self.emitted if self.one_to_many else completed) + self.flushed,
            dropped=dropped,
            dropped_by=dropped_by,
            skipped=skipped,
            dead_letters=self.dead_letters,
            failed=failed,
            retried=self.retried,
            filtered=self.filtered,
            in_flight=in_flight,
            queue_depth=queued,
            busy_s=self.busy_s,
            blocked_s=self.out.blocked_s,
            latency_p50_s=percentile(samples, 0.5),
            latency_p99_s=percentile(samples, 0.99),
            workers=self.opts.workers,
            batches=self.batches,
            batch_sizes=dict(self.batch_sizes),
            keys=len(self.lanes),
            evicted=self.evicted,
            latency=self.latencies.snapshot(),
        )

    # -- item fates ---------------------------------------------------------------------------

    def _on_overflow(self, env: Envelope) -> None:
        if env.value.__class__ is EndOfKey:
            keep_control(self.inq, env, self._on_overflow)
            return
        if env.ticket is not None:
            env.ticket.drop("overflow", self.name)

    def _on_supersede(self, env: Envelope) -> None:
        if env.ticket is not None:
            env.ticket.drop("superseded", self.name)

    def _stream_of(self, key: Callable[[Any], Hashable] | None) -> Callable[[Envelope], Hashable]:
        """The stream of an item on the input (``None``: one stream). It runs where the item is
        put, in the block before; if it fails (or the key cannot be hashed or compared), the
        input refuses the item, which fails here (:meth:`_on_refused`)."""
        if key is None:
            return _one_stream

        def stream_of(env: Envelope) -> Hashable:
            return key(env.value)

        return stream_of

    def _on_refused(self, env: Envelope, exc: Exception) -> None:
        """The input refused ``env``: its stream key failed where it was put (in the block
        before, which must not fail for it). The item fails in this block, without a call:
        skipped, sent to the dead letters, or its error delivered to whoever awaits it; when
        nobody does, the error fails this block (the run) as an item's failure would."""
        err = BlockError(
            self.name,
            f"its stream key (fair=) failed: {describe_failure(exc)}",
            item=summarize(env.value),
        )
        err.__cause__ = cause_of(exc)
        try:
            self._give_up(env, env.value, exc, 1, refused=True, error=err)
        except BlockError as unclaimed:
            self._fail_later(unclaimed)

    def _fail_later(self, err: BlockError) -> None:
        """Fail the block with ``err``, made outside its tasks (see :meth:`_on_refused`): the
        lifecycle is cancelled and raises it instead, as ``asyncio.timeout`` raises
        TimeoutError. Before the block works, it raises it once it does; after (the block is
        stopping), it joins the block's other errors."""
        task = self.task
        if self.stopped or (task is not None and task.done()):
            self.teardown_errors.append(err)  # (reported with the run's end)
            return
        if not self.working or task is None:
            self.refusals.append(err)  # (raised once the setup has ended)
            return
        self.refusals.append(err)
        if not self.refusal_cancel:
            self.refusal_cancel = True
            task.cancel()

    def _refused_instead(self, exc: BaseException) -> BaseException:
        """What the lifecycle raises, having stopped on ``exc``: the errors of refused items
        that nobody awaits, in place of the cancellation :meth:`_fail_later` made, or beside
        ``exc``."""
        if self.refusal_cancel:
            self.refusal_cancel = False
            cast(asyncio.Task[Any], self.task).uncancel()
        errors = self.refusals
        if not errors:
            return exc
        self.refusals = []
        if isinstance(exc, asyncio.CancelledError):
            if not being_cancelled():
                return errors[0] if len(errors) == 1 else _group(self.name, errors)
        elif isinstance(exc, Exception):
            return _group(self.name, [exc, *errors])
        # The run is being cancelled (or interrupted): they are logged with its end.
        self.teardown_errors.extend(errors)
        return exc

    async def _pass(self, env: Envelope) -> None:
        """A control item taken from the input: send it on, unless this is the last stage."""
        self.controls += 1
        if hand_on(env, self.out, self.terminal):
            if self.handing is not None:
                self.handed_from += 1  # (``_serial`` counts what it hands on as completed)
            await self.out.put(env)

    def _control_outputs(self, env: Envelope) -> list[Envelope]:
        """The control item's own way on, for a reorder window (counted as taken)."""
        self.controls += 1
        return [env] if hand_on(env, self.out, self.terminal) else []

    def _drop_stale(self, env: Envelope) -> None:
        self.stale += 1
        if env.ticket is not None:
            env.ticket.drop("stale", self.name)

    def _error(self, exc: BaseException, item: Any, attempt: int) -> BlockError:
        err = BlockError(self.name, describe_failure(exc), item=summarize(item), attempt=attempt)
        err.__cause__ = cause_of(exc)
        return err

    def _give_up(
        self,
        env: Envelope,
        item: Any,
        exc: BaseException,
        attempt: int,
        *,
        refused: bool = False,
        error: BlockError | None = None,
    ) -> None:
        """The item failed for good: skip it or fail it, per ``on_error``. ``refused``: the
        input refused it (see :meth:`_on_refused`), which counts it apart; ``error``: the
        BlockError to report, if not the usual one."""
        err = error if error is not None else self._error(exc, item, attempt)
        dead_letter = self.opts.dead_letter
        if dead_letter is not None:
            try:
                dead_letter(item, err)
            # A broken sink must not hide the item's own error. (A sync call: a CancelledError
            # from it, or any BaseException but an interrupt, is the sink's own failure.)
            except BaseException as sink_exc:
                if isinstance(sink_exc, INTERRUPTS):
                    raise
                logger.error(
                    "block %r: the dead-letter sink failed (%s); the item fails instead",
                    self.name,
                    describe(sink_exc),
                    extra={"block": self.name},
                )
            else:
                self.dead_letters += 1
                self._skip(
                    env, err, attempt, "dead_letter", "sent to the dead-letter sink", refused
                )
                return
        if self.opts.on_error == "skip":
            self._skip(env, err, attempt, "skipped", "skipped", refused)
            return
        delivered = env.ticket is not None and env.ticket.fail(err)
        if delivered:
            logger.info("block %r failed an item: %s", self.name, err, extra={"block": self.name})
        # (counted after the log record: its handlers run while the block still holds the
        # item, as ``_uncounted`` assumes)
        if refused:
            self.refused_failed += 1
        else:
            self.failed += 1
        if not delivered:
            raise err

    def _skip(
        self,
        env: Envelope,
        err: BlockError,
        attempt: int,
        reason: str,
        what: str,
        refused: bool = False,
    ) -> None:
        """Log, count and end an item that failed for good but does not fail the run."""
        logger.warning(
            "block %r %s item %s after %d attempt(s): %s",
            self.name,
            what,
            err.item,
            attempt,
            err.message,
            extra={"block": self.name},
        )
        if refused:
            self.refused_skipped += 1
        else:
            self.skipped += 1
        if env.ticket is not None:
            env.ticket.drop(reason, self.name)

    async def _call(self, value: Any, *extra: Any) -> Any:
        """One call of the user's function, in the right place, with the timeout. ``extra``
        follows the item (a keyed block's state).

        A CancelledError that the user's code raised while this task is not being cancelled
        comes out as a :class:`~.cancelling.StrayCancel`, an item failure; a cancellation of the
        task goes through."""
        kind = self.kind
        timeout = self.opts.timeout
        try:
            if self.procpool is not None:
                # The pool starts the clock when a worker receives the item; a call past its
                # timeout has its worker killed and replaced.
                return await self.procpool.call(value, call_timeout=timeout)
            if kind == "coroutine":
                if timeout is None:
                    return await self.fn(value, *extra)
                async with asyncio.timeout(timeout):
                    return await self.fn(value, *extra)
            if kind == "generator":
                return await self._call_generator(value, extra, timeout)
            return await self._in_thread(_checked, (self.fn, value, *extra), timeout)
        except Exception:
            raise
        except BaseException as exc:  # a stray CancelledError or BaseException is a failure
            raise as_failure(exc) from None
        finally:
            checkpoint()  # the user's code swallowed a cancellation of the run: it goes on

    async def _call_generator(
        self, value: Any, extra: tuple[Any, ...], limit: float | None
    ) -> list[Any]:
        """A plain generator's outputs, collected in a thread. The thread cannot be
        interrupted, but the generator can be left between two outputs: once this call is
        abandoned (the run cancelled, the timeout passed) it stops at its next output and is
        closed, its ``finally`` running in the thread, rather than running to its end."""
        abandoned = threading.Event()
        try:
            return cast(
                list[Any],
                await self._in_thread(
                    _collect_until, (abandoned.is_set, self.fn, value, *extra), limit
                ),
            )
        except BaseException:
            abandoned.set()  # (no outputs were taken: whatever it makes now is dropped)
            raise

    async def _in_thread(
        self, fn: Callable[..., Any], args: tuple[Any, ...], limit: float | None
    ) -> Any:
        """``fn(*args)`` in the block's thread pool, failing with TimeoutError past ``limit``
        seconds (the block's ``timeout``) if any."""
        loop = asyncio.get_running_loop()
        if limit is None:
            return await loop.run_in_executor(self.pool, fn, *args)
        # The clock starts when a thread starts the call, not when it is queued: items
        # waiting behind a hung call are not failed by its timeout.
        started: asyncio.Future[None] = loop.create_future()
        fut = loop.run_in_executor(self.pool, _started, loop, started, fn, args)
        try:
            await asyncio.wait([started, fut], return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            fut.cancel()
            raise
        try:
            async with asyncio.timeout(limit):
                return await fut
        except TimeoutError:
            logger.warning(
                "block %r: a thread call took longer than timeout=%ss; it cannot be "
                "interrupted and is left to finish, its item fails",
                self.name,
                limit,
                extra={"block": self.name},
            )
            raise

    async def _retry(
        self, env: Envelope, exc: Exception, t0: float | None, extra: tuple[Any, ...] = ()
    ) -> Any:
        """After a failed first call: retry per policy; return the value, or ``_NOTHING`` when
        the item ended (skipped or failed and delivered). ``t0`` is when the failed call began,
        or None if the caller accounts for its time."""
        item = env.value
        policy = self.opts.on_error
        attempt = 1
        if isinstance(policy, Retry):
            while attempt < policy.attempts:
                self.retried += 1
                await asyncio.sleep(policy.delay(attempt))
                attempt += 1
                t0 = _perf()
                try:
                    value = await self._call(item, *extra)
                except PartialOutput:
                    raise  # the caller keeps its outputs and fails the item
                except Exception as again:
                    exc = again
                else:
                    dt = _perf() - t0
                    self.busy_s += dt
                    self.latencies.append(dt)
                    return value
        if t0 is not None:
            self.busy_s += _perf() - t0
        self._give_up(env, item, exc, attempt)
        return _NOTHING

    def _outputs(self, env: Envelope, values: list[Any]) -> list[Envelope]:
        """Wrap a call's outputs: reuse the input's envelope for the first, fork for the rest."""
        if not values:
            self.filtered += 1
            if env.ticket is not None:
                env.ticket.drop("filtered", self.name)
            return []
        env.value = values[0]
        envs = [env]
        ticket = env.ticket
        for value in values[1:]:
            if ticket is not None:
                ticket.fork()
            envs.append(Envelope(value, env.born, ticket))
        self.emitted += len(envs)
        return envs

    # -- lifecycle ----------------------------------------------------------------------------

    async def lifecycle(self, ready: Callable[[], None]) -> None:
        blk = self.block
        opts = self.opts
        if blk._aioflow_executor == "thread":
            self.pool = thread_pool(self.name, opts.workers)
        failure: BaseException | None = None
        in_process = blk._aioflow_executor == "process"
        self.task = asyncio.current_task()
        try:
            if in_process:
                # setup runs in each worker process, never here; teardown when the pool closes.
                # spawn, unless the program chose forkserver (never fork: it would copy the
                # running event loop and its threads into the worker).
                method = multiprocessing.get_start_method(allow_none=True)
                self.procpool = ProcessPool(
                    self.name,
                    opts.workers,
                    blk,
                    blk._aioflow_kind,
                    start_method="forkserver" if method == "forkserver" else "spawn",
                    zero_copy=opts.zero_copy,
                )
                try:
                    await self.procpool.start()
                except Exception as exc:
                    err = BlockError(self.name, describe(exc), phase="setup")
                    raise err from exc
            elif type(blk).setup is not Block.setup:
                if asyncio.iscoroutinefunction(blk.setup):
                    await self._setup()  # a cancellation interrupts it: it did not complete
                else:
                    # A thread cannot be interrupted: a plain setup running when the run is
                    # cancelled is waited for, and torn down if it completed.
                    await self._to_end(self._setup(), "setup")
            self.set_up = True
            ready()
            if self.refusals:  # (items refused while the block was being set up)
                raise asyncio.CancelledError
            self.working = True
            if opts.batch is not None:
                await self._run_batched(opts.batch)
            elif opts.key is not None:
                await self._run_keyed()
            elif (
                self.pool is not None
                and opts.timeout is None
                and self.kind in ("function", "generator")
            ):
                await ThreadPuller(self, _collect).run()
            elif opts.workers == 1:
                if self.kind == "coroutine" and opts.timeout is None:
                    await self._serial()
                else:
                    await self._worker(None)
            else:
                seq = Sequencer(opts.workers, self.out.put) if opts.ordered else None
                async with asyncio.TaskGroup() as tg:
                    for _ in range(opts.workers):
                        tg.create_task(carrying_interrupts(self._worker(seq)))
            self.working, self.stopped = False, True
            if self.refusals:  # (the cancellation that raises them had not come yet)
                raise asyncio.CancelledError
        except BaseException as exc:
            self.working, self.stopped = False, True
            failure = self._refused_instead(exc)
            if failure is exc:
                raise
            raise failure from failure.__cause__  # (a BlockError keeps its cause)
        finally:
            try:
                if self.procpool is not None:
                    await self._close_processes(failure)
                elif self.set_up and type(blk).teardown is not Block.teardown:
                    await self._teardown(failure)
            finally:
                if self.pool is not None:
                    await shutdown_pool(self.pool)
        self.out.close()

    async def _setup(self) -> None:
        await self._hook(self.block.setup, "setup")
        self.set_up = True

    async def _to_end(self, coro: Coroutine[Any, Any, None], phase: str) -> None:
        """Run ``coro`` (a setup or teardown) to its end, even if this task is cancelled
        meanwhile, and raise what it raised; a cancellation that came meanwhile is re-raised
        once it ended (what it raised is then kept with ``teardown_errors``).

        A second cancellation does not abandon it either: a hook that never returns holds the
        end of the run, as a thread call that never returns does."""
        task = asyncio.get_running_loop().create_task(
            carrying_interrupts(coro), name=f"aioflow:{self.name}:{phase}"
        )
        try:
            await wait_through_cancel(task)
        except asyncio.CancelledError:
            exc = task.exception()
            if isinstance(exc, BlockError):
                self.teardown_errors.append(exc)
            elif exc is not None:
                raise exc from None  # an interrupt stops the run all the same
            raise
        task.result()

    async def _hook(self, hook: Callable[[], Any], phase: str) -> None:
        try:
            if asyncio.iscoroutinefunction(hook):
                await hook()
            else:
                await call_in_thread(hook, self.pool)
        except BaseException as raised:
            exc = as_failure(raised)  # a cancellation of the run goes on up
            err = BlockError(self.name, describe_failure(exc), phase=phase)
            raise err from cause_of(exc)

    async def _close_processes(self, failure: BaseException | None) -> None:
        pool = cast(ProcessPool, self.procpool)
        try:
            await pool.close()
        except Exception as exc:
            err = BlockError(self.name, describe(exc), phase="teardown")
            err.__cause__ = exc
            self._teardown_failed(err, failure)

    async def _teardown(self, failure: BaseException | None) -> None:
        try:
            # Releasing a camera or a model must not be cut short: a cancellation that lands
            # meanwhile waits for the teardown to end (a teardown that never returns holds the
            # end of the run).
            await self._to_end(self._hook(self.block.teardown, "teardown"), "teardown")
        except BlockError as err:
            self._teardown_failed(err, failure)

    def _teardown_failed(self, err: BlockError, failure: BaseException | None) -> None:
        """Teardown failed with ``err`` after the block ended with ``failure`` (None when it
        ended well): raise both, or keep ``err`` for the supervisor."""
        if failure is None:
            raise err
        if isinstance(failure, Exception):
            raise ExceptionGroup(f"block {self.name!r} failed", [failure, err]) from None
        # Cancelled: because another block failed, or because the run was. The cancellation
        # goes on; the supervisor puts ``err`` in the run's group, or logs it when the run
        # itself was cancelled. Never dropped.
        self.teardown_errors.append(err)

    async def _serial(self) -> None:
        """The fast path: one worker, a coroutine function, no timeout.

        Items go through in *runs*: with ``n`` items waiting in the input and room for ``m`` in
        the output, ``min(n, m)`` items are taken, processed and handed on one after the other,
        without looking at either channel's level in between. Both numbers can only grow while
        the run goes on, even when the function suspends meanwhile: this worker is its input's
        only reader (a leaky writer evicts one item only to put one) and its output's only
        writer. So a run never finds its input empty nor overfills its output, and every item
        is still taken from the input only when its turn comes (the bound holds) and handed on
        as soon as it is made (the next block can start on it; a waiting writer is woken).

        The books cost nothing per item: the output channel counts a run's items once, at its
        end (statistics read meanwhile add what :meth:`_uncounted` derives), and
        ``completed`` is read off that count (see :meth:`record`). Reading the clock costs as
        much as a trivial block, so busy time is measured per burst of back-to-back items, and
        the latency is sampled: every call is timed while calls are slow (> 50 us), one in 32
        or so while they are fast. A timed call, and an item that must wait for room in the
        output, go by themselves, between runs. Nor does a run look at each item for control
        items unless its input may hold one (see aioflow/_engine/controls.py).
        """
        inq = self.inq
        buf = inq._buf
        putters = inq._putters
        take = buf.popleft
        out = self.out
        obuf = out._buf
        getters = out._getters
        hand = obuf.append
        ocap = out.capacity
        fn = self.fn
        lat = self.latencies
        max_age = self.opts.max_age
        aging = max_age is not None
        age_limit = max_age if max_age is not None else 0.0
        overtaking = inq.leaky or inq.__class__ is not Channel
        perf = _perf
        skip = 0  # calls to leave untimed before the next timed one
        slow = False
        # -1, or while the run's item under way fails: the items that had ended without an
        # output before it (its own failure may be counted before it raises)
        ended_before = -1
        self.handed_from = out.received
        self.putting = 0
        self.handing = out
        out.uncounted = self._uncounted
        t_burst = perf()
        try:
            while True:
                n = len(buf)
                if not n:
                    if inq._closed:
                        return  # every item taken
                    self.busy_s += perf() - t_burst
                    await inq.wait_readable()
                    t_burst = perf()
                    continue
                room = ocap - len(obuf)
                if room <= 0 or slow or not skip:
                    # One item by itself, timed.
                    env = take()
                    if putters:
                        inq._wake_putter()
                    if env.value.__class__ is EndOfKey:
                        await self._pass(env)
                        continue
                    if aging and perf() - env.born > age_limit:
                        self._drop_stale(env)
                        continue
                    t0 = perf()
                    try:
                        value = await fn(env.value)
                    except BaseException as raised:
                        exc = as_failure(raised)  # a cancellation of the run goes on up
                        self.busy_s += perf() - t_burst
                        value = await self._retry(env, exc, None)
                        t_burst = perf()
                        if value is _NOTHING:
                            continue
                    else:
                        t1 = perf()
                        dt = t1 - t0
                        lat.append(dt)
                        self.busy_s += t1 - t_burst
                        t_burst = t1
                        slow = dt > 5e-5
                        skip = 0 if slow else 32
                    env.value = value
                    if room > 0:
                        hand(env)
                        out.received += 1
                        if getters:
                            out._wake_getter()
                    else:
                        # The output is full: wait for room (or let the policy of a leaky
                        # output decide), the item counted as completed meanwhile.
                        self.busy_s += perf() - t_burst
                        self.putting = 1
                        if out.leaky:
                            await out.put(env)
                        else:
                            # Waits for room, then puts (``put`` would have the item put
                            # for it in its turn, counted by ``out`` while ``putting`` still
                            # counts it here: this block is the only writer of its output,
                            # so there is no turn to keep).
                            await out.wait_writable()
                            out.put_nowait(env)
                        self.putting = 0
                        t_burst = perf()
                    continue
                run = n if n < room else room
                skip = skip - run if skip > run else 0
                self.run_taken = inq.counted() - n - inq.overflowed
                self.run_ended = self.skipped + self.failed + self.stale
                # Items are looked at only while a control item may be among them: when the
                # input holds one (it counted more than were taken), or when items can overtake
                # each other there (a leaky or fair edge).
                look = overtaking or inq.controls != self.controls
                check = look or aging
                # Each item is still taken only when its turn comes: ``islice`` stops after
                # ``run`` calls of ``take`` (and never calls it again), in C, as a loop over
                # ``range(run)`` calling it would in bytecode.
                for env in islice(iter(take, None), run):
                    if putters:
                        inq._wake_putter()
                    if check:
                        if look and env.value.__class__ is EndOfKey:
                            # Not an item: handed on as it is, and not counted as completed.
                            self.controls += 1
                            if not hand_on(env, out, self.terminal):
                                self.run_ended -= 1  # (taken, not handed on: see _uncounted)
                                continue
                            self.handed_from += 1
                            hand(env)
                            if getters:
                                out._wake_getter()
                            continue
                        if aging and perf() - env.born > age_limit:
                            self._drop_stale(env)
                            continue
                    try:
                        env.value = await fn(env.value)
                    except BaseException as raised:
                        ended_before = self.skipped + self.failed + self.stale
                        exc = as_failure(raised)  # a cancellation of the run goes on up
                        self.busy_s += perf() - t_burst
                        value = await self._retry(env, exc, None)
                        ended_before = -1
                        t_burst = perf()
                        if value is _NOTHING:
                            continue
                        env.value = value
                    hand(env)
                    if getters:
                        out._wake_getter()
                # Counted at the run's end: every item taken was handed on but those that ended
                # otherwise (stale, skipped, failed, or a control item ending here).
                ended = self.skipped + self.failed + self.stale - self.run_ended
                out.received += run - ended
                self.run_taken = -1
        except ChannelClosed:
            self.busy_s += perf() - t_burst
            return
        finally:
            # From here on the counts are kept item by item again.
            if self.run_taken >= 0:
                # A run cut short by the item under way, which was not handed on: of the items
                # the run took before it, those that did not end otherwise were.
                if ended_before < 0:
                    ended_before = self.skipped + self.failed + self.stale
                out.received += self._run_taken() - 1 - (ended_before - self.run_ended)
            out.uncounted = None
            self.run_taken = -1
            self.completed += out.received - self.handed_from + self.putting
            self.putting = 0
            self.handing = None

    def _uncounted(self) -> int:
        """The items that the run under way has handed on and not counted yet.

        Statistics are read while the run is suspended in, or calling out to, the block's
        function, its retries, its dead-letter sink or its log handlers: each time while it
        holds one item whose end is not counted yet. So of the items the run has taken, those
        handed on are the rest, less those that ended otherwise (stale, skipped, failed).
        """
        if self.run_taken < 0:
            return 0
        ended = self.skipped + self.failed + self.stale - self.run_ended
        return self._run_taken() - ended - 1

    def _run_taken(self) -> int:
        """The items the run under way has taken from the input, the one under way included:
        those the input counted, less those still buffered or dropped there and those taken
        before the run."""
        inq = self.inq
        return inq.counted() - len(inq._buf) - inq.overflowed - self.run_taken

    async def _worker(self, seq: Sequencer | None) -> None:
        """The general worker: any kind of function, ordered or not."""
        inq = self.inq
        max_age = self.opts.max_age
        unordered = seq is None and self.opts.workers > 1
        while True:
            if seq is not None:
                await seq.acquire()
            try:
                env = await inq.get()
            except ChannelClosed:
                if seq is not None:
                    seq.release()
                return
            n = seq.take() if seq is not None else -1
            if env.value.__class__ is EndOfKey:
                if seq is not None:
                    await seq.complete(n, self._control_outputs(env))
                else:
                    await self._behind(env)
                continue
            if max_age is not None and _perf() - env.born > max_age:
                self._drop_stale(env)
                if seq is not None:
                    await seq.complete(n, ())
                continue
            if unordered:
                mine = self.taken
                self.taken = mine + 1
                self.open_items.add(mine)
                try:
                    await self._process(env, seq, n, ())
                finally:
                    self.open_items.discard(mine)
                    if self.item_done is not None:
                        self.item_done.set()
                continue
            await self._process(env, seq, n, ())

    async def _behind(self, env: Envelope) -> None:
        """Send a control item on behind every item taken before it (``ordered=False`` with
        several workers: those may still be in other workers' hands)."""
        mine = self.taken
        while self.open_items and min(self.open_items) < mine:
            done = self.item_done
            if done is None or done.is_set():
                done = self.item_done = asyncio.Event()
            await done.wait()
        await self._pass(env)

    async def _process(
        self, env: Envelope, seq: Sequencer | None, n: int, extra: tuple[Any, ...]
    ) -> None:
        """Process one item and send its outputs on (through the reorder window if any)."""
        if self.kind == "asyncgen":
            await self._run_asyncgen(env, seq, n, extra)
            return
        t0 = _perf()
        try:
            value = await self._call(env.value, *extra)
        except Exception as exc:
            await self._after_failure(env, exc, t0, seq, n, extra)
            return
        dt = _perf() - t0
        self.busy_s += dt
        self.latencies.append(dt)
        await self._send(env, value, seq, n)

    async def _send(self, env: Envelope, value: Any, seq: ReorderWindow | None, n: int) -> None:
        """A call completed: send its output(s) on, through the reorder window if any."""
        self.completed += 1
        if self.kind == "generator":
            envs = self._outputs(env, value)
        else:
            env.value = value
            envs = [env]
        if seq is not None:
            await seq.complete(n, envs)
        else:
            for e in envs:
                await self.out.put(e)

    async def _after_failure(
        self,
        env: Envelope,
        exc: Exception,
        t0: float,
        seq: ReorderWindow | None = None,
        n: int = -1,
        extra: tuple[Any, ...] = (),
    ) -> None:
        """The first call for ``env`` raised ``exc``: keep a generator's partial outputs, or
        retry, skip or fail per ``on_error``; send on whatever came of it."""
        if isinstance(exc, PartialOutput):
            await self._partial(env, seq, n, exc, t0)
            return
        try:
            value = await self._retry(env, exc, t0, extra)
        except PartialOutput as partial:
            await self._partial(env, seq, n, partial, _perf())
            return
        if value is _NOTHING:
            if seq is not None:
                await seq.complete(n, ())
            return
        await self._send(env, value, seq, n)

    async def _partial(
        self, env: Envelope, seq: ReorderWindow | None, n: int, partial: PartialOutput, t0: float
    ) -> None:
        """A plain generator failed after some outputs: send those on, then fail the item (as
        an async generator would have), without retrying."""
        self.busy_s += _perf() - t0
        item = env.value
        ticket = env.ticket
        envs: list[Envelope] = []
        for value in partial.outputs:
            if ticket is not None:
                ticket.fork()
            envs.append(Envelope(value, env.born, ticket))
        self.emitted += len(envs)
        try:
            self._give_up(env, item, partial.error, 1)
        finally:
            if seq is not None:
                await seq.complete(n, envs)
            else:
                for e in envs:
                    await self.out.put(e)

    # -- batching -----------------------------------------------------------------------------

    async def _run_batched(self, batch: Batch) -> None:
        await BatchRunner(self).run(batch)

    # -- keyed state --------------------------------------------------------------------------

    async def _run_keyed(self) -> None:
        opts = self.opts
        seq = Sequencer(opts.workers, self.out.put) if opts.ordered and opts.workers > 1 else None
        hold = asyncio.Semaphore(opts.workers) if seq is None else None
        stopping = asyncio.Event()
        async with asyncio.TaskGroup() as tg:
            workers = [
                tg.create_task(carrying_interrupts(self._keyed_worker(seq, hold)))
                for _ in range(opts.workers)
            ]
            if opts.evict_after is not None:
                tg.create_task(carrying_interrupts(self._evictor(stopping)))
            await asyncio.wait(workers)
            # Not cancel(): an eviction under way must finish and hand its flush on.
            stopping.set()
        # End of stream: every key is evicted, so its hook can flush what it holds; unless the
        # state is being kept in a store to resume from, where the keys live on.
        if not self.keep_state:
            for key, lane in list(self.lanes.items()):
                await self._evict(key, lane)

    async def _keyed_worker(self, seq: Sequencer | None, hold: asyncio.Semaphore | None) -> None:
        inq = self.inq
        key_fn = cast(Callable[[Any], Hashable], self.opts.key)
        max_age = self.opts.max_age
        lanes = self.lanes
        while True:
            if seq is not None:
                await seq.acquire()
            else:
                await cast(asyncio.Semaphore, hold).acquire()
            try:
                env = await inq.get()
            except ChannelClosed:
                if seq is not None:
                    seq.release()
                else:
                    cast(asyncio.Semaphore, hold).release()
                return
            n = seq.take() if seq is not None else -1
            value = env.value
            if value.__class__ is EndOfKey:
                # The key ended: its state goes once its earlier items are done (in its lane).
                # The key function is not called: the marker names the key itself.
                key = value.key
                try:
                    # (compares the marker's key with the keys held: it may refuse)
                    lane = lanes.get(key)
                except BaseException as exc:  # sync: never a cancellation
                    try:
                        self._end_key_failed(env, key, from_sync(exc))
                    finally:
                        await self._finish_keyed(seq, hold, n)
                    continue
                if lane is None or lane.ended:  # no state held for it here: it only passes
                    await self._end_key_outputs(env, [], seq, hold, n)
                    continue
            else:
                if max_age is not None and _perf() - env.born > max_age:
                    self._drop_stale(env)
                    await self._finish_keyed(seq, hold, n)
                    continue
                try:
                    key = key_fn(value)
                    # Finding the key's lane compares it with the keys held, which a user's
                    # key may refuse (an __eq__ that raises): that fails the item too.
                    lane = lanes.get(key)
                    if lane is None or lane.ended:
                        lane = lanes[key] = _Lane()
                except BaseException as exc:  # sync: never a cancellation
                    try:
                        self._give_up(env, value, from_sync(exc), 1)
                    finally:
                        await self._finish_keyed(seq, hold, n)
                    continue
                if self.on_key is not None:
                    self.on_key(key, env)
            if lane.busy:
                # Another worker holds this key: it takes this item after its current one.
                lane.backlog.append((env, n))
                continue
            lane.busy = True
            try:
                while True:
                    if env.value.__class__ is EndOfKey:
                        flushed = await self._flush_key(key, lane)
                        await self._end_key_outputs(env, flushed, seq, hold, n)
                        lane.state = _NOTHING
                        if not lane.backlog:
                            self._forget(key, lane)
                            break
                        # Items of the key that came after its end: the lane goes on with a new
                        # state (left in place: no need to find the key again).
                        env, n = lane.backlog.popleft()
                        continue
                    extra: tuple[Any, ...] = ()
                    failed: Exception | None = None
                    if self.block._aioflow_stateful:
                        if lane.state is _NOTHING:
                            try:
                                lane.state = self._new_state(key)
                            except BaseException as exc:  # sync: not a cancel
                                failed = from_sync(exc)
                        extra = (lane.state,)
                    if failed is None:
                        await self._process(env, seq, n, extra)
                        if hold is not None:
                            hold.release()
                    else:
                        # create_state() failed: the item fails (per on_error), and the key
                        # tries again with its next item.
                        try:
                            self._give_up(env, env.value, failed, 1)
                        finally:
                            await self._finish_keyed(seq, hold, n)
                    if not lane.backlog:
                        break
                    env, n = lane.backlog.popleft()
            finally:
                lane.busy = False
                lane.idle_since = _perf()

    def _end_key_failed(self, env: Envelope, key: Any, exc: Exception) -> None:
        """An ``af.EndOfKey`` whose key refused to be found among the keys held (its
        ``__hash__`` or ``__eq__`` raised): the key's state cannot be ended, which its
        ``submit()`` caller is told; with nobody awaiting it, the block fails. It is not an
        item, so ``on_error`` does not apply, nor do the item counts."""
        self.controls += 1  # (taken, not handed on)
        err = BlockError(
            self.name,
            f"af.EndOfKey: finding its key among the keys held raised {describe_failure(exc)}",
            item=summarize(key),
        )
        err.__cause__ = cause_of(exc)
        if env.ticket is None or not env.ticket.fail(err):
            raise err

    def _forget(self, key: Hashable, lane: _Lane) -> bool:
        """Take ``lane`` (of ``key``) out of :attr:`lanes`, if it is there. Finding it hashes
        and compares the key again, which a user's key may refuse now even if it did not when
        the lane was made (an ``__eq__`` that fails against some keys, a ``__hash__`` that
        fails the next time): then the lane is left in place marked ended (the next item of
        its key gets a new one; the evictions pass it by) and a warning names the block. Never
        raises (but an interrupt); False when the lane was left in place."""
        lanes = self.lanes
        try:
            if lanes.get(key) is lane:
                del lanes[key]
            return True
        except BaseException as exc:
            error = from_sync(exc)
        lane.ended = True
        logger.warning(
            "block %r: a key's state ended, but finding the key %s to forget it raised %s; "
            "it is left in place, ended",
            self.name,
            summarize(key),
            describe_failure(error),
            extra={"block": self.name},
        )
        return False

    async def _finish_keyed(
        self, seq: Sequencer | None, hold: asyncio.Semaphore | None, n: int
    ) -> None:
        if seq is not None:
            await seq.complete(n, ())
        elif hold is not None:
            hold.release()

    async def _end_key_outputs(
        self,
        env: Envelope,
        flushed: list[Envelope],
        seq: Sequencer | None,
        hold: asyncio.Semaphore | None,
        n: int,
    ) -> None:
        """Send on what ending a key made (its evict() outputs), then the marker itself."""
        envs = flushed + self._control_outputs(env)
        if seq is not None:
            await seq.complete(n, envs)
            return
        for e in envs:
            await self.out.put(e)
        cast(asyncio.Semaphore, hold).release()

    async def _flush_key(self, key: Hashable, lane: _Lane) -> list[Envelope]:
        """Evict ``lane`` (the key's earlier items are done): its evict() outputs, as
        envelopes. The lane stays in place meanwhile, so that items of the key that arrive
        during the hook wait behind it."""
        self.evicted += 1
        blk = self.block
        if isinstance(blk, FunctionBlock) or lane.state is _NOTHING:
            return []
        outputs = await self._evict_hook(key, lane.state)
        envs = [Envelope(value, _perf(), None) for value in outputs or ()]
        self.flushed += len(envs)
        return envs

    async def _evict_hook(self, key: Hashable, state: Any) -> Iterable[Any] | None:
        blk = self.block
        try:
            hook: Callable[[Hashable, Any], Any] = blk.evict
            if asyncio.iscoroutinefunction(hook):
                outputs: Iterable[Any] | None = await hook(key, state)
            else:
                outputs = await call_in_thread(lambda: hook(key, state), self.pool)
        except BaseException as raised:
            exc = as_failure(raised)  # a cancellation of the run goes on up
            err = BlockError(self.name, describe_failure(exc), item=summarize(key), phase="evict")
            raise err from cause_of(exc)
        return outputs

    def _new_state(self, key: Hashable) -> Any:
        blk = self.block
        if isinstance(blk, FunctionBlock):
            factory = cast(Callable[[], Any], self.opts.state)
            return factory()
        return blk.create_state(key)

    async def _evictor(self, stopping: asyncio.Event) -> None:
        ttl = cast(float, self.opts.evict_after)
        period = max(ttl / 4, 0.005)
        while not stopping.is_set():
            try:
                async with asyncio.timeout(period):
                    await stopping.wait()
                return
            except TimeoutError:
                pass
            now = _perf()
            for key, lane in list(self.lanes.items()):
                if not lane.busy and not lane.backlog and now - lane.idle_since >= ttl:
                    await self._evict(key, lane)

    async def _evict(self, key: Hashable, lane: _Lane) -> None:
        """Evict ``lane``, the key's (taken from :attr:`lanes`): flush its state."""
        if lane.ended:
            return  # (its state ended already: see _forget)
        left = not self._forget(key, lane)
        try:
            outputs = await self.evict_outputs(key, lane)
        finally:
            if left:
                lane.state = _NOTHING  # (left in place: no snapshot takes it)
        for value in outputs:
            self.flushed += 1
            await self.out.put(Envelope(value, _perf(), None))

    async def evict_outputs(self, key: Hashable, lane: _Lane) -> list[Any]:
        """Count ``key`` (its ``lane`` already taken out of :attr:`lanes`) as evicted and
        return what the block's ``evict`` hook makes of its state (nothing for a function
        block or a key without state).

        Raises:
            BlockError: the hook failed (``phase="evict"``).
        """
        self.evicted += 1
        blk = self.block
        if isinstance(blk, FunctionBlock) or lane.state is _NOTHING:
            return []
        return list(await self._evict_hook(key, lane.state) or ())

    async def _run_asyncgen(
        self, env: Envelope, seq: Sequencer | None, n: int, extra: tuple[Any, ...] = ()
    ) -> None:
        """Run an async generator block on one item, streaming its outputs in order."""
        item = env.value
        policy = self.opts.on_error
        attempts = policy.attempts if isinstance(policy, Retry) else 1
        out = self.out
        attempt = 0
        while True:
            attempt += 1
            produced = 0
            held: list[Envelope] = []
            t0 = _perf()
            try:
                agen = self.fn(item, *extra)
                async with (
                    _deadline(self.opts.timeout) as deadline,
                    contextlib.aclosing(agen),
                ):
                    async for value in agen:
                        checkpoint()  # (the generator may have swallowed a cancellation)
                        produced += 1
                        # Each output is one more way the item ends; the item's own unit stays
                        # with the generator until it finishes, so a caller waiting on the item
                        # cannot be answered before the last output exists.
                        if env.ticket is not None:
                            env.ticket.fork()
                        if produced == 1:
                            e = env
                            e.value = value
                        else:
                            e = Envelope(value, env.born, env.ticket)
                        self.emitted += 1
                        # Waiting for the next block is not the generator's time: the timeout
                        # is paused meanwhile.
                        async with _paused(deadline):
                            if seq is None or seq.is_head(n):
                                # Nor is it busy time: the wait for room is left out of the
                                # clock (it shows as the output's blocked time instead).
                                t_put = _perf()
                                for h in held:
                                    await out.put(h)
                                held.clear()
                                await out.put(e)
                                t0 += _perf() - t_put
                            else:
                                held.append(e)
                                self.busy_s += _perf() - t0
                                await seq.wait_turn(n)
                                t0 = _perf()
                                for h in held:
                                    await out.put(h)
                                held.clear()
            except BaseException as raised:
                exc = as_failure(raised)  # a cancellation of the run goes on up
                self.busy_s += _perf() - t0
                if produced == 0 and attempt < attempts:
                    self.retried += 1
                    await asyncio.sleep(cast(Retry, policy).delay(attempt))
                    continue
                self._give_up(env, item, exc, attempt)
                if seq is not None:
                    await seq.complete(n, held)
                else:
                    for h in held:
                        await out.put(h)
                return
            dt = _perf() - t0
            self.busy_s += dt
            self.latencies.append(dt)
            self.completed += 1
            if produced == 0:
                self.filtered += 1
                if env.ticket is not None:
                    env.ticket.drop("filtered", self.name)
            elif env.ticket is not None:
                env.ticket.release()
            if seq is not None:
                await seq.complete(n, held)
            else:
                for h in held:
                    await out.put(h)
            return


def _deadline(
    seconds: float | None,
) -> contextlib.AbstractAsyncContextManager[asyncio.Timeout | None]:
    """``asyncio.timeout(seconds)``, or nothing when None."""
    if seconds is None:
        return contextlib.nullcontext()
    return asyncio.timeout(seconds)


@contextlib.asynccontextmanager
async def _paused(deadline: asyncio.Timeout | None) -> AsyncIterator[None]:
    """Stop the clock of ``deadline`` (if any) for the duration of the block."""
    if deadline is None or deadline.when() is None:
        yield
        return
    loop = asyncio.get_running_loop()
    remaining = cast(float, deadline.when()) - loop.time()
    deadline.reschedule(None)
    try:
        yield
    finally:
        deadline.reschedule(loop.time() + remaining)


def _group(name: str, errors: Sequence[Exception]) -> ExceptionGroup[Exception]:
    return ExceptionGroup(f"block {name!r} failed", list(errors))


class _Lane:
    """One key of a keyed block: its state and the items waiting for the key."""

    __slots__ = ("backlog", "busy", "ended", "idle_since", "state")

    def __init__(self) -> None:
        self.backlog: deque[tuple[Envelope, int]] = deque()
        self.busy = False
        #: its key's state ended, but the key refused to be found to take it out of the lanes
        #: (see ``BlockRuntime._forget``): as good as absent
        self.ended = False
        self.state: Any = _NOTHING
        self.idle_since = _perf()
