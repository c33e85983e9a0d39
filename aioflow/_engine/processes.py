"""Process pools: blocks with ``executor="process"``.

A :class:`ProcessPool` runs one block's code in ``workers`` worker processes. It is not a
:class:`~concurrent.futures.ProcessPoolExecutor`: each worker *slot* is its own
:class:`multiprocessing.Process` with its own duplex pipe (a socket pair), because a worker that
dies (SIGKILL, ``os._exit``, a segfault in native code) must fail only the item it held, and the
slot must get a replacement worker, where a broken ``ProcessPoolExecutor`` fails every call.

How it fits together:

- **Workers** are started with ``spawn`` (default) or ``forkserver``; never ``fork``, which would
  copy the event loop and its threads. A worker runs an event loop of its own, so that an
  :class:`~aioflow.block.Block`'s async ``setup`` / ``process`` / ``teardown`` run there: ``setup``
  once when the worker starts (never in the parent: each worker has its own copy of the block and
  of its state), ``teardown`` when the pool closes. A plain function is called directly.
- **Data**: numpy arrays anywhere in a value cross in shared memory, not in the pipe (see
  :mod:`.shm`). Each slot has a request and a response segment, created by the parent,
  grown when a payload does not fit, unlinked when the pool closes or the worker is replaced.
- **The event loop never blocks**: each slot's socket and its process's ``sentinel`` are watched
  with ``loop.add_reader``; replies, setup results and deaths arrive as callbacks that resolve
  futures, so the pool owns no task. ``Process.start()`` (which forks and writes to a pipe) runs
  in a short-lived thread, joined before the call returns.
- **Death**: the sentinel says a worker exited; whatever it sent before is read first, then a
  call still waiting fails with :class:`~aioflow.errors.ExecutorError` (naming the block, the
  worker and its exit code) and a replacement worker is started in that slot.
- **Cancellation**: a call running in another process cannot be interrupted, and waiting for it
  would let a stuck item hold the pipeline's shutdown hostage, so cancelling a call *kills its
  worker* (SIGKILL); the slot gets a replacement (started by the next call that needs the slot)
  and that worker's ``teardown`` does not run. A call cancelled while it waits for a free slot or
  for a worker's ``setup`` kills nothing. ``close()`` is safe to cancel: it then kills every
  worker, waits for their exit and unlinks every segment before re-raising.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import multiprocessing
import os
import pickle
import signal
import socket
import warnings
from collections import deque
from collections.abc import Callable
from multiprocessing.context import ForkServerContext, SpawnContext
from multiprocessing.process import BaseProcess
from typing import Any, Final

from ..block import Block, FunctionBlock
from ..errors import ExecutorError, GraphError, describe
from ..loop import loop_factory
from . import shm
from .cancelling import INTERRUPTS
from .executors import call_in_thread
from .shipping import ByName, ship

__all__ = ["ProcessPool"]

logger = logging.getLogger("aioflow")

_KINDS: Final = ("function", "generator", "coroutine", "asyncgen")
_START_METHODS: Final = ("spawn", "forkserver")
#: How much one read of a worker's socket asks for: replies are small, their arrays are in
#: shared memory.
_READ_SIZE: Final = 1 << 16
#: What ``_run`` returns when the worker was dead before it could read the request.
_UNDELIVERED: Final = object()
#: With ``zero_copy``: how many of a worker's segments results may hold at once. Past it,
#: results are copied (read-only all the same), so that a caller keeping every result (a list
#: of outputs) does not make a segment per result.
_LEND_LIMIT: Final = 4


def _death(worker: _Worker, when: str) -> str:
    """``worker process 1 of block 'x' died (exit code -9) <when>; killed by SIGKILL``."""
    code = worker.exitcode
    text = f"{worker.describe()} died (exit code {'unknown' if code is None else code}) {when}"
    if code is not None and code < 0:
        try:
            text += f"; it was killed by {signal.Signals(-code).name}"
        except ValueError:
            pass
    return text


# -- the worker process -------------------------------------------------------------------------


async def _invoke(fn: Callable[[Any], Any], kind: str, value: Any) -> Any:
    if kind == "generator":
        return list(fn(value))
    if kind == "asyncgen":
        return [out async for out in fn(value)]
    result = fn(value)
    if inspect.isawaitable(result):
        result = await result
    return result


async def _hook(method: Callable[[], Any]) -> None:
    result = method()
    if inspect.isawaitable(result):
        await result


def _unsendable(name: str, exc: Exception) -> ExecutorError:
    """The error of an item (or a batch of items) that cannot be sent to a worker: pickling it
    raised ``exc``. Marked so (see :func:`is_unsendable`)."""
    error = ExecutorError(f"block {name!r}: the item cannot be sent to a worker: {describe(exc)}")
    error.__cause__ = exc
    error._aioflow_unsendable = True  # type: ignore[attr-defined]
    return error


def is_unsendable(exc: BaseException) -> bool:
    """Whether ``exc`` says that the item (or batch) could not be sent to a worker."""
    return getattr(exc, "_aioflow_unsendable", False) is True


def unsendable(name: str, values: list[Any]) -> dict[int, ExecutorError]:
    """Which of ``values`` (a batch that could not be sent whole) cannot be sent, by index,
    each with its own error: so that the others can go."""
    found: dict[int, ExecutorError] = {}
    for i, value in enumerate(values):
        try:
            shm.dumps(value)
        except Exception as exc:
            found[i] = _unsendable(name, exc)
    return found


class _Server:
    """What a worker process does: setup, then calls until asked to close, then teardown."""

    def __init__(self, link: shm.Link, block: str, index: int) -> None:
        self.link = link
        self.block = block
        self.index = index
        self.request: shm.Attachment | None = None
        #: the parent's segments this worker has mapped, by name (the parent says which go)
        self.attached: dict[str, shm.Attachment] = {}

    def _attach(self, name: str | None) -> shm.Attachment | None:
        if name is None:
            return None
        attached = self.attached.get(name)
        if attached is None:
            attached = self.attached[name] = shm.attach(name)
        return attached

    def _forget(self, names: tuple[str, ...]) -> None:
        for name in names:
            attached = self.attached.pop(name, None)
            if attached is not None:
                attached.close()

    async def serve(self, payload: bytes, kind: str) -> None:
        blk: Block | None = None
        try:
            target: Any = pickle.loads(payload)
            if isinstance(target, ByName):
                target = target.resolve()
            if isinstance(target, Block) and not isinstance(target, FunctionBlock):
                blk = target
                fn: Callable[[Any], Any] = target.process
                await _hook(target.setup)
            else:
                fn = target.fn if isinstance(target, FunctionBlock) else target
        # Nothing cancels this process's tasks (the parent kills instead), so a CancelledError
        # here is the user's code's own: it is sent back like any other exception, as is any
        # BaseException but an interrupt (which ends this worker only).
        except BaseException as exc:
            if isinstance(exc, INTERRUPTS):
                raise
            await self.link.send(("setup_error", os.getpid(), shm.pack_exception(exc)))
            return
        closing = False
        try:
            # (Inside: a parent gone before it hears of the setup still has the teardown run.)
            await self.link.send(("ready", os.getpid()))
            closing = await self._calls(fn, kind)
        finally:
            failure: shm.PackedError | None = None
            if blk is not None:
                try:
                    await _hook(blk.teardown)
                except BaseException as exc:
                    if isinstance(exc, INTERRUPTS):
                        raise
                    failure = shm.pack_exception(exc)
            self.request = None
            self._forget(tuple(self.attached))
            if closing:
                await self.link.send(("closed", failure))

    async def _calls(self, fn: Callable[[Any], Any], kind: str) -> bool:
        """Serve calls; True when the parent asked to close, False when it is gone."""
        while True:
            message = await self.link.recv()
            if message is None:
                return False
            control, tail = message
            if control[0] == "close":
                return True
            _, request, response_name, n_data, layout, inline, forget = control
            self._forget(forget)
            self.request = self._attach(request)
            response = self._attach(response_name)
            source = memoryview(tail) if inline or self.request is None else self.request.buf
            try:
                with memoryview(tail) as data:
                    value = shm.loads(data[:n_data], source, layout, copy=False)
                result = await _invoke(fn, kind, value)
            except BaseException as exc:
                if isinstance(exc, INTERRUPTS):
                    raise
                await self.link.send(("error", shm.pack_exception(exc)))
                continue
            finally:
                value = None  # the input's arrays are views of a segment the next call reuses
            await self._reply(result, response)
            del result

    async def _reply(self, result: Any, response: shm.Attachment | None) -> None:
        request = self.request
        # Arrays of the result that lie in the request segment (the input, returned) are
        # referenced there: the parent copies them out, and nothing is copied here.
        resident = request.span if request is not None else None
        try:
            data, parts = shm.dumps(result, resident=resident)
        except Exception as exc:
            msg = (
                f"block {self.block!r}: the result ({type(result).__name__}) cannot be sent back "
                f"from worker process {self.index}: {describe(exc)}"
            )
            await self.link.send(("error", shm.pack_exception(ExecutorError(msg))))
            return
        layout, end = shm.plan(parts)
        if not parts or (response is not None and end <= len(response.buf)):
            if parts and response is not None:
                shm.write(response.buf, parts, layout)
            await self.link.send(("ok", len(data), layout, False), data)
            return
        # No segment, or too small: send the parts in the pipe; the parent grows the segment.
        layout, end = shm.plan(parts, start=len(data))
        tail = bytearray(end)
        tail[: len(data)] = data
        with memoryview(tail) as view:
            shm.write(view, parts, layout)
        await self.link.send(("ok", len(data), layout, True), tail)


def _worker_main(sock: socket.socket, payload: bytes, kind: str, block: str, index: int) -> None:
    """Entry point of a worker process."""
    # Ctrl-C reaches the whole process group; the parent decides when its workers stop (it
    # cancels, closes the pool and so runs teardown), so the workers ignore it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    async def main() -> None:
        link = shm.Link(sock)
        try:
            await _Server(link, block, index).serve(payload, kind)
        except ConnectionError:
            # The parent is gone (killed, or stopped by a signal it does not handle) while this
            # worker had something to tell it: nobody is left to answer, and a traceback on
            # the terminal the two shared would only blame the worker. (The teardown ran.)
            pass
        finally:
            link.close()

    try:
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            runner.run(main())
    finally:
        sock.close()


# -- the parent's side --------------------------------------------------------------------------


class _Worker:
    """One worker process, seen from the parent, from start to exit.

    Everything it learns arrives through :meth:`_on_readable` and :meth:`_on_exit`, loop
    callbacks that resolve futures; the futures always get results (never exceptions), so none
    is ever left "never retrieved".
    """

    def __init__(self, block: str, index: int, process: BaseProcess, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        self.block = block
        self.index = index
        self.process = process
        self.sock = sock
        self.pid: int | None = None
        self.exitcode: int | None = None
        self.dead = False
        #: resolved when setup finished (or failed, see ``setup_error``) or the worker died
        self.ready: asyncio.Future[None] = loop.create_future()
        self.setup_error: BaseException | None = None
        #: the reply to the call in flight; None as result means the worker died
        self.reply: asyncio.Future[tuple[tuple[Any, ...], bytearray] | None] | None = None
        self.teardown_error: shm.PackedError | None = None
        self.exited: asyncio.Future[None] = loop.create_future()
        #: every shared-memory segment of this worker: each call takes one for the request
        #: and one for the response among those not lent (see ProcessPool's ``zero_copy``)
        self.segments: list[shm.Segment] = []
        #: names of segments destroyed since the last call: the worker unmaps them
        self.forgotten: list[str] = []
        #: size of the largest result that did not fit in the response segment
        self.response_hint = 0
        self._loop = loop
        self._reader = shm.MessageReader()
        self._reading = False

    def describe(self) -> str:
        return f"worker process {self.index} of block {self.block!r}"

    def take(self, size: int, tag: str, other: shm.Segment | None = None) -> shm.Segment:
        """A segment of at least ``size`` bytes that no lent array uses and that is not
        ``other``: the first that fits, else one of them grown, else a new one."""
        usable = [i for i, seg in enumerate(self.segments) if seg is not other and not seg.lent()]
        for i in usable:
            if self.segments[i].fits(size):
                return self.segments[i]
        if usable:
            i = usable[0]
            self.forgotten.append(self.segments[i].name)
            grown = shm.Segment.grown(self.segments[i], self.block, tag, size)
            self.segments[i] = grown
            return grown
        segment = shm.Segment(self.block, tag, size)
        self.segments.append(segment)
        return segment

    def lent(self) -> int:
        """How many of this worker's segments lent arrays still use."""
        return sum(seg.lent() for seg in self.segments)

    def destroy_segments(self) -> None:
        for segment in self.segments:
            segment.destroy()
        self.segments.clear()

    def watch(self) -> None:
        self.sock.setblocking(False)
        self._loop.add_reader(self.sock.fileno(), self._on_readable)
        self._loop.add_reader(self.process.sentinel, self._on_exit)
        self._reading = True

    def kill(self) -> None:
        if not self.dead:
            self.process.kill()

    def _stop_reading(self) -> None:
        if self._reading:
            self._loop.remove_reader(self.sock.fileno())
            self._reading = False

    def _on_readable(self) -> None:
        while True:
            try:
                chunk = self.sock.recv(_READ_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                chunk = b""
            if not chunk:  # EOF: the worker is exiting; its sentinel will tell when it is gone
                self._stop_reading()
                return
            try:
                messages = self._reader.feed(chunk)
            except Exception:  # garbage on the pipe: this worker cannot be trusted any more
                logger.exception("%s sent a message that cannot be read", self.describe())
                self._stop_reading()
                self.kill()
                return
            for control, tail in messages:
                self._dispatch(control, tail)
            if len(chunk) < _READ_SIZE:  # drained: another read would only raise EAGAIN
                return

    def _dispatch(self, control: tuple[Any, ...], tail: bytearray) -> None:
        op = control[0]
        if op in ("ready", "setup_error"):
            self.pid = control[1]
            if op == "setup_error":
                self.setup_error = self.unpack(control[2])
            if not self.ready.done():
                self.ready.set_result(None)
        elif op in ("ok", "error"):
            if self.reply is not None and not self.reply.done():
                self.reply.set_result((control, tail))
        elif op == "closed":
            self.teardown_error = control[1]

    def _on_exit(self) -> None:
        if self.dead:
            return
        if self._reading:
            self._on_readable()  # what it sent before exiting counts
            self._stop_reading()
        self._loop.remove_reader(self.process.sentinel)
        # The sentinel closes as the process exits; reaping it takes microseconds at most.
        self.process.join()
        self.exitcode = self.process.exitcode
        self.dead = True
        self.sock.close()
        self.destroy_segments()
        if self.exitcode is not None:
            self.process.close()
        if not self.ready.done():
            self.setup_error = ExecutorError(_death(self, "during setup"))
            self.ready.set_result(None)
        if self.reply is not None and not self.reply.done():
            self.reply.set_result(None)
        self.exited.set_result(None)

    def unpack(self, packed: shm.PackedError) -> BaseException:
        return shm.unpack_exception(packed, f"{self.describe()} (pid {self.pid})")


class _Slot:
    def __init__(self, index: int) -> None:
        self.index = index
        self.worker: _Worker | None = None


class ProcessPool:
    """Worker processes for one block (``executor="process"``).

    Args:
        name: the block's name: in errors, process names (``aioflow[<name>]-N``), segment names.
        workers: how many worker processes (slots), each with its own pipe and segments.
        target: a module-level function, or an :class:`~aioflow.block.Block` instance whose
            ``setup`` / ``process`` / ``teardown`` (async or not) run in each worker.
        kind: ``"function"``, ``"generator"`` (the worker returns the list of outputs),
            ``"coroutine"`` or ``"asyncgen"`` (list of outputs).
        start_method: ``"spawn"`` (default) or ``"forkserver"``.
        close_timeout: seconds :meth:`close` gives the workers' teardown before killing them.
        zero_copy: return the arrays of a result (those of :data:`.shm.INLINE_LIMIT` bytes or
            more) as read-only views of the worker's shared memory instead of copies. A segment
            a result's arrays lie in is not reused while any of them (or any view of them) is
            alive; beyond ``_LEND_LIMIT`` such segments per worker, results are read-only
            copies.

    Raises:
        GraphError: ``target`` cannot be sent to a worker (see :meth:`check_picklable`), or a
            bad ``workers``, ``kind`` or ``start_method``.

    Arrays a worker receives are views of a shared-memory segment that the next call reuses:
    copy one that the block keeps beyond the call. Results come back as private copies, or
    lent read-only views with ``zero_copy``.

    Typical use (``square`` must be importable by the workers, so defined in a module)::

        pool = ProcessPool("square", 2, square, "function")
        await pool.start()
        try:
            print(await pool.call(3))
        finally:
            await pool.close()
    """

    def __init__(
        self,
        name: str,
        workers: int,
        target: object,
        kind: str,
        *,
        start_method: str | None = None,
        close_timeout: float = 10.0,
        zero_copy: bool = False,
    ) -> None:
        method = start_method or "spawn"
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            msg = f"block {name!r}: a process pool needs workers >= 1, got {workers!r}"
            raise GraphError(msg)
        if kind not in _KINDS:
            msg = f"block {name!r}: kind must be one of {', '.join(_KINDS)}, got {kind!r}"
            raise GraphError(msg)
        if method not in _START_METHODS:
            msg = f"block {name!r}: start_method must be 'spawn' or 'forkserver', got {method!r}"
            raise GraphError(msg)
        self._name = name
        self._kind = kind
        self._zero_copy = zero_copy
        self._payload = ship(name, target)
        self._ctx: SpawnContext | ForkServerContext = (
            multiprocessing.get_context("forkserver")
            if method == "forkserver"
            else multiprocessing.get_context("spawn")
        )
        self._close_timeout = close_timeout
        self._slots = [_Slot(i) for i in range(1, workers + 1)]
        self._free: deque[_Slot] = deque(self._slots)
        self._waiters: deque[asyncio.Future[_Slot]] = deque()
        self._busy = 0
        self._idle: asyncio.Future[None] | None = None
        self._workers: set[_Worker] = set()  # every started process not yet reaped
        self._spawns: set[asyncio.Future[None]] = set()  # Process.start() calls under way
        self._state = "new"  # -> "open" -> "closing" -> "closed"
        self._closed: asyncio.Future[None] | None = None

    @staticmethod
    def check_picklable(name: str, target: object) -> None:
        """Raise :class:`~aioflow.errors.GraphError` if ``target`` cannot be sent to a spawned
        worker: a lambda, a function defined inside another function (a closure), a function
        defined interactively, or a block with an attribute that cannot be pickled."""
        ship(name, target)

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start every worker and wait until each has finished ``setup``.

        Raises the exception ``setup`` raised in a worker (with the remote traceback as a note;
        an :class:`ExecutorError` when it cannot be sent back) after closing the pool.
        """
        if self._state != "new":
            msg = f"block {self._name!r}: the process pool was already started"
            raise ExecutorError(msg)
        self._state = "open"
        try:
            for slot in self._slots:
                await self._spawn(slot)
            for slot in self._slots:
                if slot.worker is not None:
                    await asyncio.shield(slot.worker.ready)
        except BaseException:
            self._state = "closing"
            await self._kill_all()
            self._state = "closed"
            raise
        failures = [
            s.worker.setup_error
            for s in self._slots
            if s.worker is not None and s.worker.setup_error is not None
        ]
        if failures:
            first = failures[0]
            if len(failures) > 1:
                first.add_note(f"setup also failed in {len(failures) - 1} other worker process(es)")
            try:
                await self.close()
            except Exception as exc:
                first.add_note(f"closing the other workers failed too: {describe(exc)}")
            raise first

    async def close(self) -> None:
        """Run ``teardown`` in every worker, let them exit (killing those that take longer than
        ``close_timeout``), unlink every segment. Calls waiting for a slot fail; calls in flight
        finish first. Idempotent; if cancelled, kills the workers and cleans up before
        re-raising. Raises the exception ``teardown`` raised, if any (an ExceptionGroup when
        several workers failed)."""
        if self._state in ("new", "closed"):
            self._state = "closed"
            return
        if self._closed is not None:  # another close() is in progress: wait for it
            await asyncio.shield(self._closed)
            return
        loop = asyncio.get_running_loop()
        self._closed = loop.create_future()
        self._state = "closing"
        failures: list[BaseException] = []
        try:
            while self._waiters:
                waiter = self._waiters.popleft()
                if not waiter.done():
                    waiter.set_exception(self._closed_error())
            if self._busy:
                self._idle = loop.create_future()
                await self._idle
            live = [w for w in self._workers if not w.dead]
            for w in live:
                try:
                    await loop.sock_sendall(w.sock, shm.message(("close",)))
                except OSError:  # it is exiting already
                    pass
            if live:
                await asyncio.wait([w.exited for w in live], timeout=self._close_timeout)
            failures = [w.unpack(w.teardown_error) for w in live if w.teardown_error is not None]
        finally:
            await self._kill_all()
            self._state = "closed"
            self._closed.set_result(None)
        if len(failures) == 1:
            raise failures[0]
        if failures:
            msg = f"teardown failed in {len(failures)} worker processes of block {self._name!r}"
            raise BaseExceptionGroup(msg, failures)

    async def _kill_all(self) -> None:
        """Kill every process (those being started included) and wait, through cancellation,
        until each is reaped and its segments unlinked."""
        cancelled = False
        while True:
            for w in self._workers:
                w.kill()
            waits = [w.exited for w in self._workers if not w.exited.done()]
            waits += [f for f in self._spawns if not f.done()]
            if not waits:
                break
            try:
                await asyncio.shield(asyncio.gather(*waits))
            except asyncio.CancelledError:
                cancelled = True
        self._workers.clear()
        if cancelled:
            raise asyncio.CancelledError

    def _closed_error(self) -> ExecutorError:
        return ExecutorError(f"block {self._name!r}: the process pool is closed")

    def __del__(self, _warn: Callable[..., None] = warnings.warn) -> None:
        workers = [w for w in getattr(self, "_workers", ()) if not w.dead]
        if workers:
            _warn(f"unclosed process pool of block {self._name!r}", ResourceWarning, source=self)
            for w in workers:
                w.kill()
                w.destroy_segments()

    # -- calls ----------------------------------------------------------------------------------

    async def call(self, value: object, *, call_timeout: float | None = None) -> object:
        """Run one call on a free worker (waiting, first come first served, when all are busy).

        ``call_timeout`` bounds the call itself, from when a ready worker receives the item: waiting
        for a free slot or for a replacement worker's setup does not count. A call that runs
        past it raises :class:`TimeoutError` and its worker is killed and replaced.

        Raises:
            Exception: what the user's code raised, re-created here with the remote traceback
                as a note.
            ExecutorError: the worker died while processing this item (a replacement is
                started), the exception or the item could not be pickled, or the pool is
                closed.
        """
        if self._state != "open":
            raise (
                self._closed_error()
                if self._state != "new"
                else ExecutorError(f"block {self._name!r}: the process pool is not started")
            )
        try:
            data, parts = shm.dumps(value)
        except Exception as exc:
            raise _unsendable(self._name, exc) from exc
        slot = await self._acquire()
        try:
            for _ in range(2):
                worker = await self._ready(slot)
                if call_timeout is None:
                    result = await self._run(slot, worker, data, parts)
                else:
                    async with asyncio.timeout(call_timeout):
                        result = await self._run(slot, worker, data, parts)
                if result is not _UNDELIVERED:
                    return result
        finally:
            self._release(slot)
        msg = f"block {self._name!r}: two worker processes in a row died before reading the item"
        raise ExecutorError(msg)

    async def _acquire(self) -> _Slot:
        if self._free and not self._waiters:
            self._busy += 1
            return self._free.popleft()
        waiter: asyncio.Future[_Slot] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._release(waiter.result())  # handed a slot just as we were cancelled
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            raise

    def _release(self, slot: _Slot) -> None:
        if self._state == "open":
            while self._waiters:
                waiter = self._waiters.popleft()
                if not waiter.done():
                    waiter.set_result(slot)  # handed over: stays busy
                    return
        self._busy -= 1
        self._free.append(slot)
        if self._busy == 0 and self._idle is not None and not self._idle.done():
            self._idle.set_result(None)

    async def _spawn(self, slot: _Slot) -> _Worker:
        """Start a worker process in ``slot``; its ``ready`` future says when setup is done."""
        ours, theirs = socket.socketpair()
        process = self._ctx.Process(
            target=_worker_main,
            args=(theirs, self._payload, self._kind, self._name, slot.index),
            name=f"aioflow[{self._name}]-{slot.index}",
            # Daemonic, so that an interpreter exiting without close() kills rather than waits.
            daemon=True,
        )
        worker = _Worker(self._name, slot.index, process, ours)
        spawned = asyncio.get_running_loop().create_future()
        self._spawns.add(spawned)
        try:
            await call_in_thread(process.start)  # forks and writes a pipe: not on the loop
        finally:
            theirs.close()  # the child has its own copy; ours would hide its EOF
            if process.pid is None:
                ours.close()
            else:
                self._workers = {w for w in self._workers if not w.dead}
                self._workers.add(worker)
                worker.watch()
                slot.worker = worker
                if self._state != "open":  # closed meanwhile: close() waits for this one
                    worker.kill()
            self._spawns.discard(spawned)
            spawned.set_result(None)
        return worker

    async def _ready(self, slot: _Slot) -> _Worker:
        """The slot's worker once its setup is done, replacing a dead one (once: a worker that
        keeps dying right after setup fails the call instead of looping)."""
        for _ in range(2):
            current = slot.worker
            if current is None or current.dead:  # killed by a cancellation, or died while idle
                if self._state != "open":
                    raise self._closed_error()
                current = await self._spawn(slot)
            worker: _Worker = current
            await asyncio.shield(worker.ready)
            if worker.setup_error is not None:
                slot.worker = None
                msg = f"{worker.describe()} was replaced and its setup failed"
                raise ExecutorError(
                    f"{msg}: {describe(worker.setup_error)}"
                ) from worker.setup_error
            if not worker.dead:
                return worker
        raise ExecutorError(_death(worker, "right after its setup"))

    async def _run(
        self, slot: _Slot, worker: _Worker, data: bytes, parts: list[shm.Part]
    ) -> object:
        layout, end = shm.plan(parts)
        tag = str(slot.index)
        request: shm.Segment | None = None
        response: shm.Segment | None = None
        if parts:
            request = worker.take(end, tag + "q")
            shm.write(request.buf, parts, layout)
        if parts or worker.response_hint:
            # Results are often the size of the input (a frame in, a frame out).
            response = worker.take(max(end, worker.response_hint), tag + "r", request)
        forget = tuple(worker.forgotten)
        worker.forgotten.clear()
        control = (
            "call",
            request.name if request is not None else None,
            response.name if response is not None else None,
            len(data),
            layout,
            False,
            forget,
        )
        loop = asyncio.get_running_loop()
        reply = worker.reply = loop.create_future()
        delivered = True
        try:
            try:
                await shm.send(worker.sock, shm.message(control, data))
            except OSError:  # the worker is gone: its sentinel resolves the reply
                delivered = False
            answer = await reply
        except asyncio.CancelledError:
            # Awaiting the reply cancelled it, unless it had arrived: then the worker is idle.
            if reply.cancelled() or not reply.done() or reply.result() is None:
                slot.worker = None  # the next call on this slot starts a replacement
                worker.kill()
            raise
        finally:
            worker.reply = None
        if answer is None:
            if not delivered:  # it died idle, before this item: try again on a replacement
                slot.worker = None
                return _UNDELIVERED
            raise await self._died(slot, worker)
        (op, *rest), tail = answer
        if op == "error":
            raise worker.unpack(rest[0])
        n_data, layout, inline = rest
        try:
            with memoryview(tail) as pickled:
                return self._result(
                    worker, pickled[:n_data], layout, tail if inline else None, request, response
                )
        except Exception as exc:
            msg = f"block {self._name!r}: the result cannot be unpickled here: {describe(exc)}"
            raise ExecutorError(msg) from exc

    def _result(
        self,
        worker: _Worker,
        pickled: memoryview,
        layout: shm.Layout,
        tail: bytearray | None,
        request: shm.Segment | None,
        response: shm.Segment | None,
    ) -> object:
        """The worker's result rebuilt here: copies, since the segments are reused by the next
        call and the caller keeps the result; with ``zero_copy``, read-only views of the
        segments, which then stay out of use for as long as any of those views lives (copies,
        read-only too, once ``_LEND_LIMIT`` segments of this worker are lent)."""
        inline = tail is not None
        zero_copy = self._zero_copy
        if inline:
            worker.response_hint = max(worker.response_hint, layout[-1][0] + layout[-1][1])
        if not zero_copy or worker.lent() >= _LEND_LIMIT:
            source: Any = memoryview(tail) if tail is not None else None
            if source is None:
                source = response.buf if response is not None else memoryview(b"")
            elif zero_copy:
                source = source.toreadonly()
            return shm.loads(
                pickled,
                source,
                layout,
                copy=not inline,
                request=request.buf if request is not None else None,
                frozen=zero_copy,
            )
        if tail is not None:
            source = memoryview(tail).toreadonly()  # private to this result: nothing to lend
        else:
            source = response.lend() if response is not None else memoryview(b"")
        root = request.lend() if request is not None else None
        value = shm.loads(pickled, source, layout, copy=False, request=root, lent_request=True)
        del source, root  # now a segment counts as lent only if the value holds a view of it
        return value

    async def _died(self, slot: _Slot, worker: _Worker) -> ExecutorError:
        slot.worker = None
        if self._state != "open":
            return ExecutorError(
                f"block {self._name!r}: the process pool was closed while worker process "
                f"{slot.index} was processing the item"
            )
        err = ExecutorError(_death(worker, "while processing the item"))
        try:
            await self._spawn(slot)
        except Exception as exc:
            err.add_note(f"starting a replacement failed ({describe(exc)}); the next call retries")
        return err
