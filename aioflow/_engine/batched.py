"""Running a batched block: collect items into batches, call, and send each result on.

:class:`BatchRunner` does for a block with ``batch=af.Batch(...)`` what the workers of
:mod:`.runner` do for others: it reads the block's input, honours ``max_age`` per item,
keeps order through the reorder window when there are several workers, applies ``on_error`` and
keeps the block's counters. What stays per item is described in ``docs/batching.md``.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, cast

from ..batching import Batch
from ..block import Retry
from ..errors import BlockError
from .cancelling import carrying_interrupts
from .channel import ChannelClosed
from .envelope import Envelope
from .ordering import Sequencer

if TYPE_CHECKING:
    from .runner import BlockRuntime

__all__ = ["BatchLengthError", "BatchRunner"]

_perf = time.perf_counter


class BatchLengthError(ValueError):
    """A batch function returned the wrong number of results (not retried: it is a bug)."""


class BatchRunner:
    """The workers of one batched block during one run."""

    def __init__(self, rt: BlockRuntime) -> None:
        self.rt = rt

    async def run(self, batch: Batch) -> None:
        rt = self.rt
        workers = rt.opts.workers
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
                if max_age is not None and _perf() - env.born > max_age:
                    rt._drop_stale(env)
                    if seq is not None:
                        await seq.complete(n, ())
                else:
                    envs.append(env)
                    numbers.append(n)
                if taken >= max_size:
                    break
                if not inq._buf:
                    if inq.closed or max_wait == 0:
                        break
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    try:
                        async with asyncio.timeout(remaining):
                            await inq.wait_readable()
                    except TimeoutError:
                        break
                    if not inq._buf:
                        break
                if seq is not None and not seq.try_acquire():
                    break
                env = inq.get_nowait()
            if envs:
                await self._run(envs, numbers, seq)

    async def _run(self, envs: list[Envelope], numbers: list[int], seq: Sequencer | None) -> None:
        """Call the function on a batch. A raised exception fails the call, and so every item
        still to do; an exception *returned* in an item's place (``asyncio.gather(...,
        return_exceptions=True)`` style) fails that item only. Either way ``af.Retry`` calls the
        function again on the failed items."""
        rt = self.rt
        values = [env.value for env in envs]
        policy = rt.opts.on_error
        attempts = policy.attempts if isinstance(policy, Retry) else 1
        # Per item: its result, or the exception that failed it.
        outcome: list[Any] = [None] * len(envs)
        pending = list(range(len(envs)))
        attempt = 0
        returned = False
        t0 = _perf()
        while True:
            attempt += 1
            try:
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
