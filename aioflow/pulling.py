"""The thread fast path: a one-worker thread block whose thread takes its items itself.

The general path hands each item to the block's thread with ``run_in_executor`` and waits for
the result on the event loop: between two calls the thread idles while the result travels to
the loop, the loop wakes, the worker takes the next item and the thread wakes again. On a busy
machine those two wake-ups cost hundreds of microseconds per item, which is a few percent of
throughput for a 4 ms model call and, under overload, a longer wait for the item behind it.

Here the thread runs a loop of its own: it takes the next item straight from the block's input
(a :class:`collections.deque`, whose ``popleft`` is atomic), calls the user's function, and
hands the result to the event loop with ``call_soon_threadsafe`` while it goes on with the next
item. The loop is involved only when the input runs empty (it waits for the next item, then
restarts the thread's loop), when the output is full (it waits for room), and when a call fails
(retries, skips and dead letters take the general path, on the same thread).

What the general path guarantees holds here too: outputs leave in input order, a block holds at
most ``queue_size + 1`` items, ``max_age`` is checked just before the call, every counter is
updated on the event loop, and setup, calls and teardown run on the same thread.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .envelope import Envelope

if TYPE_CHECKING:
    from .runner import BlockRuntime

__all__ = ["ThreadPuller"]

_perf = time.perf_counter
_EMPTY = "empty"  # the input ran dry
_PAUSE = "pause"  # the output is full
_STOPPED = "stopped"  # the run is ending


class ThreadPuller:
    """Runs one thread block (``workers=1``, a plain function or generator, no timeout)."""

    def __init__(self, rt: BlockRuntime, collect: Callable[..., list[Any]]) -> None:
        self.rt = rt
        self.collect = collect
        #: results the thread handed to the loop, and those the loop has taken in
        self.sent = 0
        self.taken = 0
        #: outputs that found the output channel full, in order; sent on by :meth:`run`
        self.held: deque[Envelope] = deque()
        self.stopping = False

    async def run(self) -> None:
        rt = self.rt
        inq = rt.inq
        buf = inq._buf
        loop = asyncio.get_running_loop()
        try:
            while True:
                await self._flush()
                if not buf:
                    if inq.closed:
                        return
                    await inq.wait_readable()
                    continue
                result = await loop.run_in_executor(rt.pool, self._pull, loop)
                if isinstance(result, tuple):
                    env, exc, t0 = result
                    await self._flush()  # what came before the failed item leaves first
                    await rt._after_failure(env, exc, t0)
        finally:
            self.stopping = True

    async def _flush(self) -> None:
        held = self.held
        put = self.rt.out.put
        while held:
            await put(held[0])
            held.popleft()

    # -- in the block's thread ----------------------------------------------------------------

    def _pull(self, loop: asyncio.AbstractEventLoop) -> str | tuple[Envelope, Exception, float]:
        """Take and process items until the input is empty, the output full, a call fails or
        the run stops."""
        rt = self.rt
        inq = rt.inq
        buf = inq._buf
        out = rt.out
        obuf = out._buf
        capacity = out.capacity
        leaky = out.leaky
        fn = rt.fn
        collect = self.collect if rt.kind == "generator" else None
        max_age = rt.opts.max_age
        call = loop.call_soon_threadsafe
        deliver = self._deliver
        held = self.held
        perf = _perf
        while not self.stopping:
            # Like a worker of the general path, the thread may finish one item that then waits
            # for room (held); it takes the next only once everything before it has a place.
            if held or (not leaky and len(obuf) + self.sent - self.taken > capacity):
                return _PAUSE
            try:
                env = buf.popleft()
            except IndexError:
                return _EMPTY
            if inq._putters:
                call(inq._wake_putter)
            if max_age is not None and perf() - env.born > max_age:
                self.sent += 1
                call(self._stale, env)
                continue
            t0 = perf()
            try:
                value = collect(fn, env.value) if collect is not None else fn(env.value)
            except Exception as exc:
                return env, exc, t0
            self.sent += 1
            call(deliver, env, value, perf() - t0)
        return _STOPPED

    # -- on the event loop --------------------------------------------------------------------

    def _stale(self, env: Envelope) -> None:
        self.taken += 1
        self.rt._drop_stale(env)

    def _deliver(self, env: Envelope, value: Any, dt: float) -> None:
        self.taken += 1
        rt = self.rt
        rt.busy_s += dt
        rt.latencies.append(dt)
        rt.completed += 1
        if self.stopping:
            return  # the run was cancelled while the call ran: nobody reads the output
        if rt.one_to_many:
            envs = rt._outputs(env, value)
        else:
            env.value = value
            envs = [env]
        out = rt.out
        held = self.held
        for e in envs:
            if held or (not out.leaky and len(out._buf) >= out.capacity):
                held.append(e)
            else:
                out.put_nowait(e)
