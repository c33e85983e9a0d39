"""Moving values to and from worker processes: pickle protocol 5 with buffers in shared memory.

A value bound for a worker process is pickled with protocol 5 and a ``buffer_callback``, so that
every large contiguous buffer inside it (numpy arrays, however deeply nested in dicts, lists,
tuples or objects) is left *out of band*: the pickle holds only a reference to it. The buffers
are copied into a shared-memory :class:`Segment` at 64-byte aligned offsets (a :data:`Layout`),
and only the small pickle and the layout cross the pipe. The receiver rebuilds the value with
``pickle.loads(data, buffers=...)``:

- the worker passes memoryview slices of the segment (:func:`views`): zero copies, the arrays it
  gets live in the segment for the duration of the call;
- the parent passes private copies (:func:`copies`, one memcpy per buffer), because the segment
  is reused by the next call and the caller may keep the result.

Everything else crosses the pipe as a *message* (:func:`message`; the parent cuts them out of
its reads with a :class:`MessageReader`, the worker uses a :class:`Link`): a header with two
lengths, a small pickled control tuple, and a tail of bytes (the value's pickle, and its buffers
too when no segment holds them). Exceptions cross as :data:`PackedError`: pickled when they can
be, and always with their description and traceback text.

Segments are created (and unlinked) only by the parent, which owns them; their names start with
``aioflow``. A worker attaches with :func:`attach`, which maps the segment without registering it
with :mod:`multiprocessing.resource_tracker`: on Python < 3.13 ``SharedMemory(name)`` registers
every attachment, and since spawned workers share the parent's tracker (a set of names), a
worker's register/unregister pair would erase the parent's own registration, so the parent's
unlink would then make the tracker print a ``KeyError``, and a crashed parent's segments would
no longer be cleaned up.
"""

from __future__ import annotations

import asyncio
import importlib
import mmap
import os
import pickle
import re
import secrets
import socket
import struct
import traceback
from collections.abc import Sequence
from multiprocessing.shared_memory import SharedMemory
from typing import Any

from ..errors import ExecutorError, describe

__all__ = [
    "ALIGN",
    "HEADER",
    "INLINE_LIMIT",
    "PREFIX",
    "Attachment",
    "Layout",
    "Link",
    "MessageReader",
    "PackedError",
    "Segment",
    "attach",
    "copies",
    "dumps",
    "message",
    "pack_exception",
    "plan",
    "unpack_exception",
    "views",
    "write",
]

#: Every segment name starts with this, so that leaks are easy to find in ``/dev/shm``.
PREFIX = "aioflow"
#: Offsets of buffers in a segment are multiples of this: aligned for any dtype and for SIMD.
ALIGN = 64
#: Buffers smaller than this stay inside the pickle: a shared-memory copy only pays off for
#: large buffers, and small arrays would otherwise force a segment into existence.
INLINE_LIMIT = 32 * 1024
#: Segments grow in steps of this, so that slightly varying payloads do not replace them often.
_GRANULE = 1 << 20

#: Where each out-of-band buffer lies: ``(offset, length)`` pairs, in pickling order.
Layout = tuple[tuple[int, int], ...]


# -- values ----------------------------------------------------------------------------------


def dumps(value: object) -> tuple[bytes, list[pickle.PickleBuffer]]:
    """Pickle ``value``, leaving its large buffers out of band.

    Returns the pickle and the out-of-band buffers, which the caller must ship (in a segment or
    inline) in the same order. Raises whatever :func:`pickle.dumps` raises for an unpicklable
    value.
    """
    buffers: list[pickle.PickleBuffer] = []

    def out_of_band(buf: pickle.PickleBuffer) -> bool:
        try:
            with buf.raw() as raw:
                small = raw.nbytes < INLINE_LIMIT
        except BufferError:  # not contiguous: cannot be copied flat, keep it in the pickle
            return True
        if small:
            return True  # true means "in band"
        buffers.append(buf)
        return False

    data = pickle.dumps(value, protocol=5, buffer_callback=out_of_band)
    return data, buffers


def plan(buffers: Sequence[pickle.PickleBuffer], start: int = 0) -> tuple[Layout, int]:
    """Place ``buffers`` one after another from ``start``, each at an aligned offset.

    Returns the layout and the end of the last buffer (the size a segment needs).
    """
    layout: list[tuple[int, int]] = []
    end = start
    for buf in buffers:
        offset = -(-end // ALIGN) * ALIGN
        with buf.raw() as raw:
            length = raw.nbytes
        layout.append((offset, length))
        end = offset + length
    return tuple(layout), end


def write(dest: memoryview, buffers: Sequence[pickle.PickleBuffer], layout: Layout) -> None:
    """Copy ``buffers`` into ``dest`` where ``layout`` says (one memcpy each)."""
    for buf, (offset, length) in zip(buffers, layout, strict=True):
        with buf.raw() as raw, dest[offset : offset + length] as target:
            target[:] = raw


def views(src: memoryview, layout: Layout) -> list[memoryview]:
    """Zero-copy views of the buffers in ``src``: valid only while ``src`` is not reused."""
    return [src[offset : offset + length] for offset, length in layout]


def copies(src: memoryview, layout: Layout) -> list[bytearray]:
    """Private, writable copies of the buffers in ``src`` (one memcpy each)."""
    out: list[bytearray] = []
    for offset, length in layout:
        with src[offset : offset + length] as part:
            out.append(bytearray(part))
    return out


# -- segments --------------------------------------------------------------------------------


def _safe(text: str) -> str:
    """``text`` reduced to characters every platform accepts in a shared-memory name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)[:24] or "block"


class Segment:
    """A shared-memory segment created and owned by this process (the pool's parent side).

    Its name is ``aioflow_<block>_<slot><role>_<random>``; :meth:`destroy` closes and unlinks it,
    and may be called more than once.
    """

    def __init__(self, block: str, tag: str, size: int) -> None:
        size = max(_GRANULE, -(-size // _GRANULE) * _GRANULE)
        while True:
            name = f"{PREFIX}_{_safe(block)}_{tag}_{secrets.token_hex(4)}"
            try:
                self._shm: SharedMemory | None = SharedMemory(name=name, create=True, size=size)
            except FileExistsError:  # pragma: no cover - 32 random bits collided
                continue
            break
        self.name = name
        self.size = size
        self.buf: memoryview = memoryview(b"")
        if self._shm.buf is not None:
            self.buf = self._shm.buf

    def fits(self, size: int) -> bool:
        return size <= self.size

    def destroy(self) -> None:
        """Close and unlink the segment (idempotent)."""
        shm, self._shm = self._shm, None
        if shm is None:
            return
        self.buf = memoryview(b"")
        try:
            shm.close()
        except BufferError:  # a view is still alive somewhere: the mapping goes with it
            pass
        try:
            shm.unlink()
        except FileNotFoundError:
            pass

    @staticmethod
    def grown(current: Segment | None, block: str, tag: str, size: int) -> Segment:
        """``current`` if ``size`` bytes fit in it, else a new, larger segment (``current`` is
        destroyed). Growth is by at least a quarter so that creeping sizes settle quickly."""
        if current is not None and current.fits(size):
            return current
        if current is not None:
            size = max(size, current.size + current.size // 4)
            current.destroy()
        return Segment(block, tag, size)


class Attachment:
    """A worker's mapping of a segment the parent created (see :func:`attach`)."""

    def __init__(self, name: str, mapping: mmap.mmap | SharedMemory) -> None:
        self.name = name
        self._mapping = mapping
        view = memoryview(mapping) if isinstance(mapping, mmap.mmap) else mapping.buf
        if view is None:  # pragma: no cover - only after close()
            msg = f"shared memory segment {name!r} is closed"
            raise ValueError(msg)
        self.buf: memoryview = view

    def close(self) -> None:
        """Unmap. A view the user kept alive (an input array stored beyond its call) keeps the
        mapping alive instead: the parent has unlinked the name, the memory goes with the view."""
        try:
            self.buf.release()
            self._mapping.close()
        except BufferError:
            pass


def attach(name: str) -> Attachment:
    """Map the segment ``name`` without registering it with the resource tracker."""
    if os.name != "posix":  # pragma: no cover - Windows: no resource tracker for segments
        return Attachment(name, SharedMemory(name=name))
    # No public API maps a POSIX segment without tracking it before Python 3.13 (track=False);
    # _posixshmem is what SharedMemory itself uses.
    posixshmem: Any = importlib.import_module("_posixshmem")
    fd: int = posixshmem.shm_open("/" + name, os.O_RDWR, mode=0o600)
    try:
        mapping = mmap.mmap(fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)
    return Attachment(name, mapping)


# -- messages and exceptions ------------------------------------------------------------------

#: A message starts with the length of its control part (u32) and of its tail (u64).
HEADER = struct.Struct("!IQ")


def message(control: tuple[Any, ...], tail: bytes | bytearray | memoryview = b"") -> bytes:
    """One message, ready to send: header, pickled ``control``, ``tail``."""
    head = pickle.dumps(control, protocol=5)
    return b"".join((HEADER.pack(len(head), len(tail)), head, tail))


class MessageReader:
    """Cuts the messages out of a byte stream that arrives in chunks of any size."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, chunk: bytes) -> list[tuple[tuple[Any, ...], bytes]]:
        """Add ``chunk``; return the messages now complete, as ``(control, tail)``."""
        buf = self._buf
        buf += chunk
        out: list[tuple[tuple[Any, ...], bytes]] = []
        while len(buf) >= HEADER.size:
            n_control, n_tail = HEADER.unpack_from(buf)
            start = HEADER.size + n_control
            if len(buf) < start + n_tail:
                break
            out.append((pickle.loads(buf[HEADER.size : start]), bytes(buf[start : start + n_tail])))
            del buf[: start + n_tail]
        return out


class Link:
    """The worker's end of the pipe, read and written on the worker's event loop."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self._sock = sock
        self._loop = asyncio.get_running_loop()

    async def _exactly(self, n: int) -> bytearray | None:
        buf = bytearray(n)
        got = 0
        with memoryview(buf) as view:
            while got < n:
                k = await self._loop.sock_recv_into(self._sock, view[got:])
                if k == 0:
                    return None
                got += k
        return buf

    async def recv(self) -> tuple[tuple[Any, ...], bytearray] | None:
        """The next message, or None when the parent is gone."""
        head = await self._exactly(HEADER.size)
        if head is None:
            return None
        n_control, n_tail = HEADER.unpack(head)
        control = await self._exactly(n_control)
        tail = await self._exactly(n_tail) if n_tail else bytearray()
        if control is None or tail is None:
            return None
        return pickle.loads(control), tail

    async def send(self, control: tuple[Any, ...], tail: bytes | bytearray = b"") -> None:
        await self._loop.sock_sendall(self._sock, message(control, tail))


#: An exception as it crosses: (its pickle or None, "Type: message", the traceback text).
PackedError = tuple[bytes | None, str, str]


def pack_exception(exc: BaseException) -> PackedError:
    """``exc`` ready to cross: pickled if it can be, and described in any case."""
    text = "".join(traceback.format_exception(exc))
    try:
        blob: bytes | None = pickle.dumps(exc, protocol=5)
    except Exception:
        blob = None
    return blob, describe(exc), text


def unpack_exception(packed: PackedError, where: str) -> BaseException:
    """The exception re-created, with the remote traceback as a note; an ExecutorError carrying
    its description when it could not be pickled there or unpickled here."""
    blob, summary, text = packed
    reason = "it cannot be pickled"
    if blob is not None:
        try:
            exc = pickle.loads(blob)
        except Exception as load_error:
            reason = f"it cannot be unpickled: {describe(load_error)}"
        else:
            if isinstance(exc, BaseException):
                exc.add_note(f"remote traceback, in {where}:\n{text.rstrip()}")
                return exc
            reason = f"it unpickled as a {type(exc).__name__}"
    err = ExecutorError(f"{summary} (raised in {where}; it could not be sent back: {reason})")
    err.add_note(f"remote traceback:\n{text.rstrip()}")
    return err
