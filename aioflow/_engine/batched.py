"""Running a batched block: collect items into batches, call, and send each result on.

:class:`BatchRunner` does for a block with ``batch=af.Batch(...)`` what the workers of
:mod:`.runner` do for others: it reads the block's input, honours ``max_age`` per item,
keeps order through the reorder window when there are several workers, applies ``on_error`` and
keeps the block's counters. What stays per item is described in ``docs/batching.md``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any, cast

from ..batching import Batch
from ..block import Retry
from ..control import EndOfKey
from ..errors import BlockError
from .cancelling import carrying_interrupts, from_sync
from .channel import Channel, ChannelClosed
from .envelope import Envelope
from .fair import NOTHING, FairChannel
from .ordering import Sequencer
from .processes import is_unsendable, unsendable

if TYPE_CHECKING:
    from .runner import BlockRuntime

__all__ = ["BatchLengthError", "BatchRunner"]

_perf = time.perf_counter
_EMPTY = "empty"  # no batch to take now: the input is empty, or max_wait has to run on the loop
_PAUSE = "pause"  # the output is full
_STOPPED = "stopped"  # the run is ending
_CONTROL: Any = object()  # in place of a call's outcome: the batch holds a control item

# A batch the thread could not finish by itself: its items, and the function's outcome (the
# exception it raised, or what it returned), and when the call began.
_Unfinished = tuple[list[Envelope], Any, float]


async def _readable_by(inq: Channel[Envelope], deadline: float) -> bool:
    """Whether an item is in ``inq`` by ``deadline`` (the loop's clock): waits for one until
    then; False at once when the input is closed or the deadline has passed (``max_wait=0``)."""
    if inq._buf:
        return True
    remaining = deadline - asyncio.get_running_loop().time()
    if inq.closed or remaining <= 0:
        return False
    try:
        async with asyncio.timeout(remaining):
            await inq.wait_readable()
    except TimeoutError:
        return False
    return bool(inq._buf)


class BatchLengthError(ValueError):
    """A batch function returned the wrong number of results (not retried: it is a bug)."""


class BatchRunner:
    """The workers of one batched block during one run."""

    def __init__(self, rt: BlockRuntime) -> None:
        self.rt = rt

    async def run(self, batch: Batch) -> None:
        rt = self.rt
        workers = rt.opts.workers
        if batch.max_per_key is not None:
            # (ordered=False: BlockOptions requires it)
            if workers == 1:
                await self._capped_worker(batch, batch.max_per_key)
                return
            async with asyncio.TaskGroup() as tg:
                for _ in range(workers):
                    tg.create_task(
                        carrying_interrupts(self._capped_worker(batch, batch.max_per_key))
                    )
            return
        if (
            workers == 1
            and rt.pool is not None
            and rt.procpool is None
            and rt.kind == "function"
            and rt.opts.timeout is None
        ):
            await BatchPuller(self, batch).run()
            return
        seq = (
            Sequencer(workers * batch.max_size, rt.out.put)
            if rt.opts.ordered and workers > 1
            else None
        )
        if workers == 1:
            await self._worker(batch, seq)
            return
        async with asyncio.TaskGroup() as tg:
            for _ in range(workers):
                tg.create_task(carrying_interrupts(self._worker(batch, seq)))

    async def _worker(self, batch: Batch, seq: Sequencer | None) -> None:
        """Collect up to ``max_size`` items, waiting at most ``max_wait`` once one is held, and
        run them in one call."""
        rt = self.rt
        inq = rt.inq
        max_size = batch.max_size
        max_wait = batch.max_wait
        max_age = rt.opts.max_age
        loop = asyncio.get_running_loop()
        while True:
            if seq is not None:
                await seq.acquire()
            try:
                env = await inq.get()
            except ChannelClosed:
                if seq is not None:
                    seq.release()
                return
            envs: list[Envelope] = []
            numbers: list[int] = []
            taken = 0
            deadline = loop.time() + max_wait
            while True:
                taken += 1
                n = seq.take() if seq is not None else -1
                if (
                    max_age is not None
                    and _perf() - env.born > max_age
                    and env.value.__class__ is not EndOfKey
                ):
                    rt._drop_stale(env)
                    if seq is not None:
                        await seq.complete(n, ())
                else:
                    envs.append(env)
                    numbers.append(n)
                if taken >= max_size:
                    break
                if not inq._buf and not await _readable_by(inq, deadline):
                    break
                if seq is not None and not seq.try_acquire():
                    break
                env = inq.get_nowait()
            if envs:
                await self._run(envs, numbers, seq)

    async def _capped_worker(self, batch: Batch, cap: int) -> None:
        """:meth:`_worker` for ``Batch(max_per_key=cap)``: each batch takes the oldest items
        whose stream has fewer than ``cap`` in it; the others stay queued, in order, for a later
        batch. Once the batch holds one item it waits up to ``max_wait`` for more that fit."""
        rt = self.rt
        inq = cast(FairChannel[Envelope], rt.inq)
        max_size = batch.max_size
        max_wait = batch.max_wait
        max_age = rt.opts.max_age
        loop = asyncio.get_running_loop()
        while True:
            await inq.wait_readable()
            counts: dict[Hashable, int] = {}
            env = inq.take_capped(counts, cap)
            if env is NOTHING:
                if inq.closed and not len(inq):
                    return
                continue  # another worker took it
            envs: list[Envelope] = []
            taken = 0
            deadline = loop.time() + max_wait
            while True:
                taken += 1
                if (
                    max_age is not None
                    and _perf() - env.born > max_age
                    and env.value.__class__ is not EndOfKey
                ):
                    rt._drop_stale(env)
                else:
                    envs.append(env)
                if taken >= max_size:
                    break
                env = inq.take_capped(counts, cap)
                while env is NOTHING:
                    # Nothing here may join this batch (or nothing is here): wait for the next
                    # item up to the deadline.
                    remaining = deadline - loop.time()
                    if inq.closed or max_wait == 0 or remaining <= 0:
                        break
                    try:
                        async with asyncio.timeout(remaining):
                            await inq.wait_put()
                    except TimeoutError:
                        break
                    env = inq.take_capped(counts, cap)
                    if env is NOTHING and len(inq):
                        inq._wake_getter()  # not for this batch: another worker may take it
                if env is NOTHING:
                    break
            if envs:
                await self._run(envs, [-1] * len(envs), None)

    async def _run(
        self,
        envs: list[Envelope],
        numbers: list[int],
        seq: Sequencer | None,
        first: tuple[Any, float] | None = None,
    ) -> None:
        """Call the function on a batch. A raised exception fails the call, and so every item
        still to do; an exception *returned* in an item's place (``asyncio.gather(...,
        return_exceptions=True)`` style) fails that item only. Either way ``af.Retry`` calls the
        function again on the failed items. ``first``: the first call was already made (by a
        :class:`BatchPuller` thread): what it returned or raised, and when it began."""
        rt = self.rt
        if first is None and any(env.value.__class__ is EndOfKey for env in envs):
            await self._split(envs, numbers, seq)
            return
        values = [env.value for env in envs]
        policy = rt.opts.on_error
        attempts = policy.attempts if isinstance(policy, Retry) else 1
        # Per item: its result, or the exception that failed it.
        outcome: list[Any] = [None] * len(envs)
        pending = list(range(len(envs)))
        attempt = 0
        returned = False
        t0 = _perf() if first is None else first[1]
        while True:
            attempt += 1
            try:
                if first is not None and attempt == 1:
                    results = first[0]
                    if isinstance(results, BaseException):
                        raise results
                else:
                    results = await rt._call([values[i] for i in pending])
                if not isinstance(results, list | tuple) or len(results) != len(pending):
                    found = (
                        f"{len(results)} results"
                        if isinstance(results, list | tuple)
                        else f"a {type(results).__name__}"
                    )
                    msg = (
                        f"the batch function returned {found} for a batch of {len(pending)} "
                        "items; it must return a list with one result per item"
                    )
                    raise BatchLengthError(msg)
            except Exception as exc:
                if is_unsendable(exc) and len(pending) > 1:
                    # A process block's batch goes whole: the items that cannot be sent fail
                    # alone, and the others go, in the same attempt.
                    alone = unsendable(rt.name, [values[i] for i in pending])
                    if 0 < len(alone) < len(pending):
                        for j, error in alone.items():
                            outcome[pending[j]] = error
                        pending = [i for j, i in enumerate(pending) if j not in alone]
                        attempt -= 1
                        continue
                if attempt < attempts and not isinstance(exc, BatchLengthError):
                    rt.retried += 1
                    await asyncio.sleep(cast(Retry, policy).delay(attempt))
                    continue
                for i in pending:
                    outcome[i] = exc
                break
            returned = True
            failed = []
            for i, result in zip(pending, results, strict=True):
                outcome[i] = result
                if isinstance(result, BaseException):
                    failed.append(i)
            if failed and attempt < attempts:
                rt.retried += 1
                await asyncio.sleep(cast(Retry, policy).delay(attempt))
                pending = failed
                continue
            break
        dt = _perf() - t0
        rt.busy_s += dt
        if returned:
            rt.latencies.append(dt)
            size = len(envs)
            rt.batches += 1
            rt.batch_sizes[size] = rt.batch_sizes.get(size, 0) + 1
        undelivered: list[BlockError] = []
        for env, value, result in zip(envs, values, outcome, strict=True):
            if isinstance(result, BaseException):
                try:
                    rt._give_up(env, value, result, attempt)
                except BlockError as err:  # "raise" with nobody to deliver to
                    undelivered.append(err)
            else:
                rt.completed += 1
                env.value = result
        if seq is not None:
            for n, env, result in zip(numbers, envs, outcome, strict=True):
                await seq.complete(n, () if isinstance(result, BaseException) else (env,))
        else:
            for env, result in zip(envs, outcome, strict=True):
                if not isinstance(result, BaseException):
                    await rt.out.put(env)
        if len(undelivered) == 1:
            raise undelivered[0] from undelivered[0].__cause__
        if undelivered:  # several items of the batch failed: each one is reported
            msg = f"block {rt.name!r}: {len(undelivered)} items of a batch failed"
            raise ExceptionGroup(msg, undelivered)

    async def _split(self, envs: list[Envelope], numbers: list[int], seq: Sequencer | None) -> None:
        """A batch with control items among its items: the items on either side of each are
        called as batches of their own, and the control item goes on between them."""
        rt = self.rt
        start = 0
        for i, env in enumerate(envs):
            if env.value.__class__ is not EndOfKey:
                continue
            if start < i:
                await self._run(envs[start:i], numbers[start:i], seq)
            outputs = rt._control_outputs(env)
            if seq is not None:
                await seq.complete(numbers[i], outputs)
            else:
                for e in outputs:
                    await rt.out.put(e)
            start = i + 1
        if start < len(envs):
            await self._run(envs[start:], numbers[start:], seq)


class BatchPuller:
    """A batched thread block with one worker (no ``timeout``) whose thread takes its batches
    itself.

    The general path forms each batch on the event loop and hands it to the thread with
    ``run_in_executor``: between two calls the device waits while the result travels to the
    loop, the loop wakes, forms the next batch and the thread wakes again (a fraction of a
    millisecond on an idle machine, more on a busy one). Here the thread, once a call returns,
    hands the results to the loop with ``call_soon_threadsafe`` and takes the next batch
    straight from the block's input: everything ready, up to ``max_size`` (with ``max_wait >
    0``, only a full batch: a shorter one goes back to the loop, which waits up to ``max_wait``
    for more as the general path does). The loop steps in when the input is empty, when the
    output is full, and when a call fails (retries, skips, dead letters and per-item errors
    take the general path, :meth:`BatchRunner._run`, from the call that failed).

    Order, ``max_age`` (checked as the batch is taken, one with a marker too), the block's bound
    (a thread takes no batch while the outputs on their way or waiting would not fit the output)
    and every counter (updated on the event loop) hold as on the general path.
    """

    def __init__(self, runner: BatchRunner, batch: Batch) -> None:
        self.runner = runner
        self.rt = runner.rt
        self.max_size = batch.max_size
        self.max_wait = batch.max_wait
        # Under ``lock``: outputs handed to the loop. On the loop: outputs taken in, outputs
        # that found the output channel full (sent on by the driver, in order).
        self.lock = threading.Lock()
        # A drop of the input's oldest item takes it too: the thread takes the batch it counted
        # (and never the items behind a marker that the drop took out to put back).
        self.rt.inq.taking = self.lock
        self.sent = 0
        self.received = 0
        self.held: deque[Envelope] = deque()
        self.stopping = False

    async def run(self) -> None:
        try:
            await self._drive()
        finally:
            self.stopping = True

    def _blocked(self) -> bool:
        """Whether the thread must not take another batch now: outputs wait for room, or the
        ones on their way overfill the output. Like the general path, the thread may run one
        batch whose outputs then wait for room (in ``held``, sent on by the driver)."""
        if self.held:
            return True
        out = self.rt.out
        return not out.leaky and len(out._buf) + self.sent - self.received > out.capacity

    async def _drive(self) -> None:
        rt = self.rt
        inq = rt.inq
        buf = inq._buf
        loop = asyncio.get_running_loop()
        while True:
            if self.held:
                # Outputs wait for room. (Nothing else holds the thread back here: the results
                # it handed over before returning have all been taken in by now.)
                await self._flush()
                continue
            if not buf:
                if inq.closed:
                    return
                await inq.wait_readable()
                continue
            if self.max_wait > 0 and len(buf) < self.max_size:
                await self._collect()
                continue
            result = await loop.run_in_executor(rt.pool, self._pull, loop)
            if isinstance(result, tuple):
                envs, outcome, t0 = result
                await self._flush()  # what came before the failed batch leaves first
                first = None if outcome is _CONTROL else (outcome, t0)
                await self.runner._run(envs, [-1] * len(envs), None, first)

    async def _collect(self) -> None:
        """One batch the general way: hold the first item, wait up to ``max_wait`` for more."""
        rt = self.rt
        inq = rt.inq
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait
        envs: list[Envelope] = []
        max_age = rt.opts.max_age
        while len(envs) < self.max_size:
            if not inq._buf and not await _readable_by(inq, deadline):
                break
            env = inq.get_nowait()
            if (
                max_age is not None
                and _perf() - env.born > max_age
                and env.value.__class__ is not EndOfKey
            ):
                rt._drop_stale(env)
            else:
                envs.append(env)
        if envs:
            await self.runner._run(envs, [-1] * len(envs), None)

    async def _flush(self) -> None:
        held = self.held
        put = self.rt.out.put
        while held:
            await put(held[0])
            held.popleft()

    # -- in the block's thread ----------------------------------------------------------------

    def _pull(self, loop: asyncio.AbstractEventLoop) -> str | _Unfinished:
        """Take and run batches until the input has none ready, the output is full, a call
        fails or the run stops."""
        rt = self.rt
        inq = rt.inq
        buf = inq._buf
        fn = rt.fn
        max_size = self.max_size
        need = max_size if self.max_wait > 0 else 1
        max_age = rt.opts.max_age
        call = loop.call_soon_threadsafe
        lock = self.lock
        perf = _perf
        while not self.stopping:
            with lock:
                if self._blocked():
                    return _PAUSE
                if len(buf) < need:
                    return _EMPTY
                envs = [buf.popleft() for _ in range(min(len(buf), max_size))]
            if inq._putters:
                call(inq._wake_putter)
            if max_age is not None:
                now = perf()
                stale = [
                    env
                    for env in envs
                    if now - env.born > max_age and env.value.__class__ is not EndOfKey
                ]
                if stale:
                    call(self._stale, stale)
                    envs = [
                        env
                        for env in envs
                        if now - env.born <= max_age or env.value.__class__ is EndOfKey
                    ]
                    if not envs:
                        continue
            if any(env.value.__class__ is EndOfKey for env in envs):
                return envs, _CONTROL, 0.0  # the loop sends it on between the items
            t0 = perf()
            try:
                results = fn([env.value for env in envs])
            except BaseException as exc:  # (from_sync re-raises an interrupt)
                return envs, from_sync(exc), t0
            dt = perf() - t0
            if (
                not isinstance(results, list | tuple)
                or len(results) != len(envs)
                or any(isinstance(r, BaseException) for r in results)
            ):
                return envs, results, t0
            with lock:
                self.sent += len(envs)
            call(self._deliver, envs, results, dt)
        return _STOPPED

    # -- on the event loop --------------------------------------------------------------------

    def _stale(self, envs: list[Envelope]) -> None:
        for env in envs:
            self.rt._drop_stale(env)

    def _deliver(
        self, envs: list[Envelope], results: list[Any] | tuple[Any, ...], dt: float
    ) -> None:
        self.received += len(envs)
        if self.stopping:
            return  # the run was cancelled while the call ran: nobody reads the output
        rt = self.rt
        rt.busy_s += dt
        rt.latencies.append(dt)
        rt.batches += 1
        size = len(envs)
        rt.batch_sizes[size] = rt.batch_sizes.get(size, 0) + 1
        rt.completed += size
        out = rt.out
        held = self.held
        for env, result in zip(envs, results, strict=True):
            env.value = result
            if held or (not out.leaky and len(out._buf) >= out.capacity):
                held.append(env)
            else:
                out.put_nowait(env)
