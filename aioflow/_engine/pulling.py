"""The thread fast path: thread blocks whose threads take their items themselves.

The general path hands each item to one of the block's threads with ``run_in_executor`` and
waits for the result on the event loop: between two calls the thread idles while the result
travels to the loop, the loop wakes, a worker takes the next item and the thread wakes again.
That costs tens of microseconds per item on an idle machine and hundreds on a busy one: a few
percent of throughput for a 4 ms model call and, under overload, a longer wait for the item
behind it.

Here each of the block's threads runs a loop of its own: it takes the next item straight from
the block's input (a :class:`collections.deque`; a lock numbers the items as they are taken),
calls the user's function, and hands the result to the event loop with
``call_soon_threadsafe`` while it goes on with the next item. The event loop puts outputs back
in input order (unless ``ordered=False``) and steps in only when the input runs empty (it waits
for the next item, then restarts the thread's loop), when the output is full (it waits for
room), and when a call fails (retries, skips and dead letters take the general path, on a thread
of the same pool). A thread held by the reorder window alone (the oldest unfinished item is
still in another thread's call) waits in its thread and is woken by the thread that finishes
that item: no trip through the event loop, which on a busy machine left it idle for
milliseconds.

What the general path guarantees holds here too: order, a block holds at most
``queue_size + workers`` items (queued, in a call, or finished and waiting for their turn),
``max_age`` is checked just before the call, every counter is updated on the event loop, and
with ``workers=1`` setup, calls and teardown run on one thread.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from types import CoroutineType
from typing import TYPE_CHECKING, Any

from ..control import EndOfKey
from .cancelling import carrying_interrupts, from_sync
from .envelope import Envelope
from .executors import check_not_coroutine

if TYPE_CHECKING:
    from .runner import BlockRuntime

__all__ = ["ThreadPuller"]

_perf = time.perf_counter
_EMPTY = "empty"  # the input ran dry
_PAUSE = "pause"  # the output or the reorder window is full
_STOPPED = "stopped"  # the run is ending
_STALE: Any = object()  # in place of a result: the item was older than max_age

_Failure = tuple[Envelope, Exception, float, int]


class ThreadPuller:
    """Runs one thread block (a plain function or generator, no ``timeout``, not keyed, not
    batched) with self-feeding threads."""

    def __init__(self, rt: BlockRuntime, collect: Callable[..., list[Any]]) -> None:
        self.rt = rt
        self.collect = collect
        self.workers = rt.opts.workers
        self.ordered = rt.opts.ordered and self.workers > 1
        # Under ``lock`` (threads and loop): items taken and numbered, results handed to the
        # loop, and (ordered) the numbers not finished yet, which open the reorder window.
        self.lock = threading.Lock()
        # A drop of the input's oldest item takes it too: a thread never takes the item behind
        # a marker that the drop took out to put back.
        rt.inq.taking = self.lock
        # Signalled (under ``lock``) when the oldest unfinished item finishes and when the run
        # stops: a thread held only by the reorder window waits on it, in the thread.
        self.window_open = threading.Condition(self.lock)
        self.taken = 0
        self.sent = 0
        self.unfinished: set[int] = set()
        # Numbers in ``unfinished`` also without ordering when several threads run: a control
        # item waits for the items taken before it (``parked``, on the loop, in number order).
        self.track = self.ordered or self.workers > 1
        self.parked: deque[tuple[int, list[Envelope]]] = deque()
        # On the loop: results taken in, finished items waiting for their turn, outputs that
        # found the output channel full (sent on by the drivers, in order).
        self.received = 0
        self.ready: dict[int, list[Envelope]] = {}
        self.next_out = 0
        self.held: deque[Envelope] = deque()
        self.flushing = asyncio.Lock()
        self.progress = asyncio.Event()
        self.stopping = False

    async def run(self) -> None:
        try:
            if self.workers == 1:
                await self._drive()
            else:
                async with asyncio.TaskGroup() as tg:
                    for _ in range(self.workers):
                        tg.create_task(carrying_interrupts(self._drive()))
        finally:
            with self.lock:
                self.stopping = True
                self.window_open.notify_all()

    def _blocked(self) -> bool:
        """Whether a thread must not take another item now (call under ``lock``): outputs wait
        for room, the results on their way would overfill the output, or the reorder window is
        full. Like a worker of the general path, a thread may finish one item that then waits
        for room."""
        return self._output_blocked() or self._window_full()

    def _output_blocked(self) -> bool:
        """Outputs wait for room, or the results on their way would overfill the output (call
        under ``lock``): only the event loop can change that."""
        if self.held:
            return True
        out = self.rt.out
        return not out.leaky and len(out._buf) + self.sent - self.received > out.capacity

    def _window_full(self) -> bool:
        """The reorder window is full (call under ``lock``): the oldest unfinished item is in
        another thread's call, or in the loop's failure handling; both signal ``window_open``
        when it finishes."""
        if not self.ordered:
            return False
        oldest = min(self.unfinished) if self.unfinished else self.taken
        return self.taken - oldest >= self.workers

    def _finished(self, n: int) -> None:
        """Item ``n`` is no longer in a call (call under ``lock``)."""
        self.unfinished.discard(n)
        if self.ordered and (not self.unfinished or n < min(self.unfinished)):
            self.window_open.notify_all()

    async def _drive(self) -> None:
        """Keep one thread of the pool running :meth:`_pull`, and do what it cannot."""
        rt = self.rt
        inq = rt.inq
        buf = inq._buf
        loop = asyncio.get_running_loop()
        while True:
            if self.held:
                async with self.flushing:
                    await self._flush()
                continue
            with self.lock:
                blocked = self._blocked()
            if blocked:
                # Results on their way, or an earlier item still in a call: wait for them.
                self.progress.clear()
                await self.progress.wait()
                continue
            if not buf:
                if inq.closed:
                    return
                await inq.wait_readable()
                continue
            result = await loop.run_in_executor(rt.pool, self._pull, loop)
            if not isinstance(result, tuple):
                continue
            env, exc, t0, n = result
            if self.ordered:
                await rt._after_failure(env, exc, t0, self, n)
            else:
                async with self.flushing:
                    await self._flush()  # what came before the failed item leaves first
                try:
                    await rt._after_failure(env, exc, t0, None, n)
                finally:
                    # Finished (its outputs sent on): a control item parked behind it goes on.
                    with self.lock:
                        self._finished(n)
                if self.parked:
                    self._unpark()

    async def _flush(self) -> None:
        held = self.held
        put = self.rt.out.put
        while held:
            await put(held[0])
            held.popleft()
        self.progress.set()

    # -- in the block's threads ---------------------------------------------------------------

    def _pull(self, loop: asyncio.AbstractEventLoop) -> str | _Failure:
        """Take and process items until the input is empty, the output or the reorder window
        full, a call fails or the run stops."""
        rt = self.rt
        inq = rt.inq
        buf = inq._buf
        fn = rt.fn
        collect = self.collect if rt.kind == "generator" else None
        max_age = rt.opts.max_age
        call = loop.call_soon_threadsafe
        deliver = self._deliver
        lock = self.lock
        track = self.track
        unfinished = self.unfinished
        perf = _perf
        window_open = self.window_open
        while True:
            with lock:
                # Held by the reorder window alone: wait here for the oldest item to finish
                # (a thread-to-thread signal) rather than go back to the loop, which would
                # have to wake and start this thread again (two wake-ups that, on a busy
                # machine, leave the thread idle for milliseconds).
                while self._window_full() and not self._output_blocked() and not self.stopping:
                    window_open.wait()
                if self.stopping:
                    return _STOPPED
                if self._output_blocked():
                    return _PAUSE
                try:
                    env = buf.popleft()
                except IndexError:
                    return _EMPTY
                n = self.taken
                self.taken = n + 1
                if env.value.__class__ is EndOfKey:
                    # Not an item: it goes on, in its turn, without a call.
                    self.sent += 1
                    call(self._control, env, n)
                    continue
                if track:
                    unfinished.add(n)
            if inq._putters:
                call(inq._wake_putter)
            if max_age is not None and perf() - env.born > max_age:
                value: Any = _STALE
                dt = 0.0
            else:
                t0 = perf()
                try:
                    value = (
                        collect(fn, env.value, stopped=self._stopped)
                        if collect is not None
                        else fn(env.value)
                    )
                    if value.__class__ is CoroutineType:
                        check_not_coroutine(value)
                except BaseException as exc:  # (from_sync re-raises an interrupt)
                    return env, from_sync(exc), t0, n
                dt = perf() - t0
            with lock:
                self.sent += 1
                self._finished(n)
            call(deliver, env, value, dt, n)

    def _stopped(self) -> bool:
        """Whether the run is ending (read by a generator's thread between two outputs)."""
        return self.stopping

    # -- on the event loop --------------------------------------------------------------------

    def _control(self, env: Envelope, n: int) -> None:
        self.received += 1
        envs = self.rt._control_outputs(env)
        if self.ordered or self.workers == 1:
            self._done(n, envs)  # (one thread: everything before it was handed over first)
            return
        self.parked.append((n, envs))
        self._unpark()

    def _unpark(self) -> None:
        """Send on the parked control items whose earlier items have all finished."""
        parked = self.parked
        while parked:
            n, envs = parked[0]
            with self.lock:
                oldest = min(self.unfinished) if self.unfinished else self.taken
            if oldest < n:
                return
            parked.popleft()
            self._place(envs)

    def _deliver(self, env: Envelope, value: Any, dt: float, n: int) -> None:
        self.received += 1
        rt = self.rt
        if value is _STALE:
            rt._drop_stale(env)
            envs: list[Envelope] = []
        else:
            rt.busy_s += dt
            rt.latencies.append(dt)
            rt.completed += 1
            if rt.one_to_many:
                envs = rt._outputs(env, value)
            else:
                env.value = value
                envs = [env]
        self._done(n, envs)

    def _done(self, n: int, envs: list[Envelope]) -> None:
        """Item ``n`` finished with these outputs: place them, in input order if ordered."""
        self.progress.set()
        if self.stopping:
            return  # the run was cancelled while the call ran: nobody reads the output
        if not self.ordered:
            self._place(envs)
            if self.parked:
                self._unpark()
            return
        ready = self.ready
        ready[n] = envs
        while self.next_out in ready:
            self._place(ready.pop(self.next_out))
            self.next_out += 1

    def _place(self, envs: list[Envelope]) -> None:
        out = self.rt.out
        held = self.held
        for e in envs:
            if held or (not out.leaky and len(out._buf) >= out.capacity):
                held.append(e)
            else:
                out.put_nowait(e)

    async def complete(self, seq: int, outputs: Sequence[Envelope]) -> None:
        """The reorder window's side of :class:`~.ordering.Sequencer`, for the general
        path's failure handling (retries, skips, partial outputs) of item ``seq``."""
        with self.lock:
            self._finished(seq)
        self._done(seq, list(outputs))
        if self.held:
            async with self.flushing:
                await self._flush()
