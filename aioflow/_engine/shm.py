"""Moving values to and from worker processes: pickle protocol 5 with arrays in shared memory.

A value bound for a worker process is pickled (:func:`dumps`) with every numpy array of
:data:`INLINE_LIMIT` bytes or more, however deeply nested in dicts, lists, tuples or objects,
left *out of band*: the pickle holds only the array's dtype, shape and order, and the array
itself is a *part*. The parts are copied into a shared-memory :class:`Segment` at 64-byte aligned
offsets (a :data:`Layout`) in one pass each (:func:`write`; a non-contiguous array is gathered
by that same pass), and only the small pickle and the layout cross the pipe. Other objects that
offer pickle buffers (array subclasses, other libraries) go out of band the same way when they
are contiguous. The receiver rebuilds the value with :func:`loads`:

- the worker gets arrays that are views of the segment: zero copies, valid for the duration
  of the call (the next call reuses the segment);
- the parent gets private copies (one pass each), because the segment is reused by the next
  call and the caller may keep the result.

A worker's result may hold arrays that already lie in the request segment (a block that draws
on its input frame and returns it): :func:`dumps` then references them there instead of
copying them into the response segment, and the parent copies them out of the request segment.
So a frame that goes there and back costs one copy each way. A bare array (a frame, the
common value) skips the pickler both ways: its "pickle" is a short header after a prefix that
fails clearly when anything but :func:`loads` reads it (a tenth of the pickler's time, which
counted for a tenth of a 1920x1080x3 frame's round trip).

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
import io
import mmap
import os
import pickle
import re
import secrets
import socket
import struct
import threading
import traceback
import weakref
from collections import deque
from collections.abc import Sequence
from multiprocessing.shared_memory import SharedMemory
from typing import Any, Literal

import numpy as np

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
    "Part",
    "address",
    "attach",
    "dumps",
    "lend",
    "loads",
    "message",
    "pack_exception",
    "plan",
    "send",
    "unpack_exception",
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

#: Where each out-of-band part lies: ``(offset, length, is_array)``, in pickling order.
Layout = tuple[tuple[int, int, bool], ...]


# -- values ----------------------------------------------------------------------------------

#: What goes out of band: a numpy array (copied with its own strides) or a pickle buffer.
Part = Any


class _Reading(threading.local):
    """What :func:`loads` is rebuilding, for :func:`_rebuild_array` (one per thread)."""

    source: Any = None
    layout: Layout = ()
    request: Any = None
    copy = True
    frozen = False
    #: whether arrays of the request segment are lent (views) rather than copied
    lent_request = False


_reading = _Reading()


def _not_reading() -> pickle.UnpicklingError:
    msg = "an aioflow shared-memory pickle can only be read by aioflow's process pools"
    return pickle.UnpicklingError(msg)


def _rebuild_array(index: int, dtype: Any, shape: tuple[int, ...], fortran: bool) -> Any:
    """An array kept out of band, rebuilt from the part ``index`` (see :func:`loads`)."""
    source = _reading.source
    if source is None:
        raise _not_reading()
    order: Literal["C", "F"] = "F" if fortran else "C"
    offset = _reading.layout[index][0]
    array = np.ndarray(shape, dtype, buffer=source, offset=offset, order=order)
    return _finish(array)


def _finish(view: Any) -> Any:
    """``view`` as :func:`loads` was asked to return it: itself, a copy, a read-only copy."""
    if not _reading.copy:
        return view  # read-only already when the source is (a lent result)
    array = view.copy(order="K")
    if _reading.frozen:
        array.flags.writeable = False
    return array


def _rebuild_resident(
    offset: int, dtype: Any, shape: tuple[int, ...], strides: tuple[int, ...]
) -> Any:
    """An array of a result that lies in the request segment, copied out of it."""
    request = _reading.request
    if request is None:
        raise _not_reading()
    view = np.ndarray(shape, dtype, buffer=request, offset=offset, strides=strides)
    if _reading.lent_request:
        return view  # read-only: the request is a lent root (see lend)
    array = view.copy(order="K")  # the request segment is reused by the next call
    if _reading.frozen:
        array.flags.writeable = False
    return array


def address(buf: memoryview) -> int:
    """Where ``buf``'s memory starts in this process (for :func:`dumps`'s ``resident``)."""
    if not buf.nbytes:
        return 0
    start: int = np.frombuffer(buf, dtype=np.uint8).__array_interface__["data"][0]
    return start


#: Kinds of dtype whose elements are plain bytes (not objects, not numpy 2's variable-width
#: strings, whose elements point elsewhere): arrays of these can be rebuilt on a raw buffer.
_PLAIN_KINDS = frozenset("biufcmMSUV")


def _dtype(array: Any) -> Any:
    """The array's dtype as its short string (``'|u1'``) when that says everything: cheaper to
    pickle than the dtype itself. Structured, sub-array and annotated dtypes travel whole."""
    dtype = array.dtype
    if dtype.fields is None and dtype.subdtype is None and dtype.metadata is None:
        return dtype.str
    return dtype


def _fortran(array: Any) -> bool:
    flags = array.flags
    return bool(flags.f_contiguous and not flags.c_contiguous)


class _Pickler(pickle.Pickler):
    """Protocol 5, with numpy arrays of :data:`INLINE_LIMIT` bytes or more left out of band.

    An array is recorded as a part and pickled as a reference to it (its dtype, shape and
    order, not its data), whatever its strides: :func:`write` copies a non-contiguous one into
    the segment in one pass, where pickle would have copied it into the pickle. Other objects
    that offer pickle buffers (array subclasses, other libraries) go out of band through
    ``buffer_callback`` when they are contiguous and large.
    """

    def __init__(self) -> None:
        self.file = io.BytesIO()
        super().__init__(self.file, protocol=5, buffer_callback=self._buffer)
        self._parts: list[Part] = []
        self._resident: tuple[int, int] | None = None
        self.busy = False

    def dump_value(
        self, value: object, resident: tuple[int, int] | None
    ) -> tuple[bytes, list[Part]]:
        file = self.file
        file.seek(0)
        file.truncate()
        parts: list[Part] = []
        self._parts = parts
        self._resident = resident
        self.busy = True
        try:
            self.dump(value)
        finally:
            self.busy = False
            self.clear_memo()  # the memo holds the value: do not keep it alive
            self._parts = []
        return file.getvalue(), parts

    def _buffer(self, buf: pickle.PickleBuffer) -> bool:
        try:
            with buf.raw() as raw:
                small = raw.nbytes < INLINE_LIMIT
        except BufferError:  # not contiguous: cannot be copied flat, keep it in the pickle
            return True
        if small:
            return True  # true means "in band"
        self._parts.append(buf)
        return False

    def reducer_override(self, obj: Any) -> Any:
        if (
            type(obj) is not np.ndarray
            or obj.nbytes < INLINE_LIMIT
            or obj.dtype.kind not in _PLAIN_KINDS
            or obj.dtype.hasobject
        ):
            return NotImplemented
        if self._resident is not None:
            start = _inside(obj, *self._resident)
            if start is not None:
                return _rebuild_resident, (start, _dtype(obj), obj.shape, obj.strides)
        self._parts.append(obj)
        return _rebuild_array, (len(self._parts) - 1, _dtype(obj), obj.shape, _fortran(obj))


def _inside(array: Any, low: int, high: int) -> int | None:
    """The offset from ``low`` of ``array``'s first element when all its memory lies in
    ``[low, high)``, else None."""
    start: int = array.__array_interface__["data"][0]
    first = last = start
    for n, stride in zip(array.shape, array.strides, strict=True):
        if stride < 0:
            first += (n - 1) * stride
        else:
            last += (n - 1) * stride
    if low <= first and last + array.itemsize <= high:
        return start - low
    return None


def dumps(value: object, *, resident: tuple[int, int] | None = None) -> tuple[bytes, list[Part]]:
    """Pickle ``value``, leaving its large arrays and buffers out of band.

    Returns the pickle and the out-of-band parts, which the caller must ship (in a segment, or
    inline in the pipe) at the offsets :func:`plan` gives, with :func:`write`. ``resident`` is
    the address range of the request segment, in a worker: an array of the result that lies
    in it (the input itself, or a part of it, returned) is referenced there, not copied. Raises
    whatever :func:`pickle.dumps` raises for an unpicklable value.
    """
    if type(value) is np.ndarray:  # a bare frame, the common case: no pickler at all
        bare = _dumps_bare(value, resident)
        if bare is not None:
            return bare
    pickler: _Pickler | None = getattr(_picklers, "pickler", None)
    if pickler is None:  # one per thread, reused: making one costs more than a small pickle
        pickler = _picklers.pickler = _Pickler()
    if pickler.busy:  # called again from inside a dump (an object's __reduce__): a fresh one
        return _Pickler().dump_value(value, resident)
    return pickler.dump_value(value, resident)


_picklers = threading.local()


def _outside() -> Any:
    """What a bare array's pickle calls when read by anything but :func:`loads`."""
    raise _not_reading()


class _Outside:
    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return _outside, ()


#: A bare array's pickle (see :func:`_dumps_bare`) starts with this complete pickle, which
#: fails clearly when anything but :func:`loads` reads it; the array's header follows it.
_BARE = pickle.dumps(_Outside(), protocol=5)


def _dumps_bare(array: Any, resident: tuple[int, int] | None) -> tuple[bytes, list[Part]] | None:
    """:func:`dumps` of a bare array, in a tenth of the pickler's time: ``_BARE`` and the
    header ``("A", dtype, shape, fortran)`` (the array is the one part) or, for an array that
    lies in the request segment, ``("R", offset, dtype, shape, strides)`` (no part). None
    when the array is not one the pickler would leave out of band with a short dtype."""
    dtype = array.dtype
    if (
        array.nbytes < INLINE_LIMIT
        or dtype.kind not in _PLAIN_KINDS
        or dtype.hasobject
        or dtype.fields is not None
        or dtype.subdtype is not None
        or dtype.metadata is not None
    ):
        return None
    if resident is not None:
        start = _inside(array, *resident)
        if start is not None:
            lying = ("R", start, dtype.str, array.shape, array.strides)
            return _BARE + pickle.dumps(lying, protocol=5), []
    header = ("A", dtype.str, array.shape, _fortran(array))
    return _BARE + pickle.dumps(header, protocol=5), [array]


def _loads_bare(
    data: bytes | bytearray | memoryview,
    source: Any,
    layout: Layout,
    *,
    copy: bool,
    request: Any,
    lent_request: bool,
    frozen: bool,
) -> Any:
    """:func:`loads` of what :func:`_dumps_bare` wrote, with the same semantics."""
    header = pickle.loads(data[len(_BARE) :])
    if header[0] == "R":
        _, offset, dtype, shape, strides = header
        if request is None:
            raise _not_reading()
        view = np.ndarray(shape, dtype, buffer=request, offset=offset, strides=strides)
        if lent_request:
            return view
    else:
        _, dtype, shape, fortran = header
        order: Literal["C", "F"] = "F" if fortran else "C"
        view = np.ndarray(shape, dtype, buffer=source, offset=layout[0][0], order=order)
        if not copy:
            return view
    array = view.copy(order="K")
    if frozen:
        array.flags.writeable = False
    return array


def plan(parts: Sequence[Part], start: int = 0) -> tuple[Layout, int]:
    """Place ``parts`` one after another from ``start``, each at an aligned offset.

    Returns the layout and the end of the last part (the size a segment needs).
    """
    layout: list[tuple[int, int, bool]] = []
    end = start
    for part in parts:
        offset = -(-end // ALIGN) * ALIGN
        if isinstance(part, pickle.PickleBuffer):
            with part.raw() as raw:
                length = raw.nbytes
            layout.append((offset, length, False))
        else:
            length = part.nbytes
            layout.append((offset, length, True))
        end = offset + length
    return tuple(layout), end


def write(dest: memoryview, parts: Sequence[Part], layout: Layout) -> None:
    """Copy ``parts`` into ``dest`` where ``layout`` says (one pass each, strides included)."""
    for part, (offset, length, is_array) in zip(parts, layout, strict=True):
        if is_array:
            order: Literal["C", "F"] = "F" if _fortran(part) else "C"
            target = np.ndarray(part.shape, part.dtype, buffer=dest, offset=offset, order=order)
            np.copyto(target, part, casting="no")
            continue
        with part.raw() as raw, dest[offset : offset + length] as view:
            view[:] = raw


def loads(
    data: bytes | bytearray | memoryview,
    source: Any,
    layout: Layout,
    *,
    copy: bool,
    request: Any = None,
    lent_request: bool = False,
    frozen: bool = False,
) -> Any:
    """Rebuild a value that :func:`dumps` pickled, its parts read from ``source``.

    ``source`` and ``request`` are buffers (a memoryview, or a flat ``uint8`` array).
    ``copy=False``: arrays are views of ``source`` (or of ``request``), valid only until it is
    reused; a worker reads its input so, and the parent reads a lent result so from a
    read-only :func:`lend` root, whose arrays are then read-only too. ``copy=True`` (the
    parent): every array and buffer is a private copy (one pass each), read-only when
    ``frozen``. ``request`` is the parent's view of the request segment, for arrays of a result
    that lie in it: they are copied (read-only when ``frozen``) unless ``lent_request``, when
    ``request`` is a :func:`lend` root too. Other buffers than arrays are copied unless
    ``copy`` is false and not ``frozen`` (a worker's input).
    """
    if data[: len(_BARE)] == _BARE:
        return _loads_bare(
            data,
            source,
            layout,
            copy=copy,
            request=request,
            lent_request=lent_request,
            frozen=frozen,
        )
    keep = not copy and not frozen
    buffers: list[Any] = [source[o : o + n] for o, n, is_array in layout if not is_array]
    if not keep:
        buffers = [bytearray(b) for b in buffers]
    reading = _reading
    saved = (reading.source, reading.layout, reading.request, reading.copy, reading.frozen,
             reading.lent_request)  # fmt: skip
    reading.source, reading.layout, reading.request = source, layout, request
    reading.copy, reading.frozen, reading.lent_request = copy, frozen, lent_request
    try:
        return pickle.loads(data, buffers=buffers)
    finally:  # restored, not cleared: an unpickled object may call loads itself
        (reading.source, reading.layout, reading.request, reading.copy, reading.frozen,
         reading.lent_request) = saved  # fmt: skip


def lend(buf: memoryview) -> Any:
    """A read-only ``uint8`` array over ``buf`` for :func:`loads` to build lent arrays on.

    Every array built on it (and every view of those) keeps alive one object made for this
    call, ``root.base``: a weak reference to it says when the caller has let go of all of them
    (see :meth:`Segment.lend`).
    """
    return np.frombuffer(buf.toreadonly(), dtype=np.uint8)


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
        self._lease: weakref.ref[Any] | None = None

    def fits(self, size: int) -> bool:
        return size <= self.size

    def lend(self) -> Any:
        """A read-only root over the segment to build lent arrays on (see :func:`lend`); the
        segment counts as :meth:`lent` for as long as any array built on it is alive."""
        root = lend(self.buf)
        self._lease = weakref.ref(root.base)
        return root

    def lent(self) -> bool:
        """Whether arrays lent from this segment are still alive: then it must not be reused."""
        lease = self._lease
        return lease is not None and lease() is not None

    def destroy(self) -> None:
        """Close and unlink the segment (idempotent)."""
        shm, self._shm = self._shm, None
        if shm is None:
            return
        self.buf = memoryview(b"")
        try:
            shm.close()
        except BufferError:
            # A lent array is still alive: the mapping stays until it goes, and the name is
            # unlinked now. Forgotten here, or SharedMemory.__del__ would fail to close it again.
            shm.__dict__.update(_buf=None, _mmap=None)
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
        #: the address range the mapping occupies here (see :func:`dumps`'s ``resident``)
        self.span = (address(view), address(view) + view.nbytes)

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

    def feed(self, chunk: bytes) -> list[tuple[tuple[Any, ...], bytearray]]:
        """Add ``chunk``; return the messages now complete, as ``(control, tail)``."""
        buf = self._buf
        buf += chunk
        out: list[tuple[tuple[Any, ...], bytearray]] = []
        while len(buf) >= HEADER.size:
            n_control, n_tail = HEADER.unpack_from(buf)
            start = HEADER.size + n_control
            if len(buf) < start + n_tail:
                break
            # A bytearray: arrays rebuilt on a tail that carries them inline are writable.
            out.append((pickle.loads(buf[HEADER.size : start]), buf[start : start + n_tail]))
            del buf[: start + n_tail]
        return out


#: How much one read of the parent's socket asks for.
_READ_SIZE = 1 << 16


class Link:
    """The worker's end of the pipe, read and written on the worker's event loop.

    The socket is watched for as long as the link lives (not once per message, which costs
    two ``epoll_ctl`` calls and a future on uvloop): what arrives is cut into messages at once
    and waits in a queue until :meth:`recv` takes it.
    """

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self._sock = sock
        self._loop = asyncio.get_running_loop()
        self._reader = MessageReader()
        self._messages: deque[tuple[tuple[Any, ...], bytearray]] = deque()
        self._eof = False
        self._waiter: asyncio.Future[None] | None = None
        self._loop.add_reader(sock.fileno(), self._on_readable)

    def _on_readable(self) -> None:
        while not self._eof:
            try:
                chunk = self._sock.recv(_READ_SIZE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                chunk = b""
            try:
                if chunk:
                    self._messages.extend(self._reader.feed(chunk))
            except Exception:  # garbage on the pipe: treated as the parent gone
                chunk = b""
            if not chunk:
                self.close()
                break
            if len(chunk) < _READ_SIZE:  # drained: another read would only raise EAGAIN
                break
        waiter = self._waiter
        if waiter is not None and not waiter.done() and (self._messages or self._eof):
            waiter.set_result(None)

    def close(self) -> None:
        """Stop watching the socket (the caller closes it)."""
        if not self._eof:
            self._eof = True
            self._loop.remove_reader(self._sock.fileno())

    async def recv(self) -> tuple[tuple[Any, ...], bytearray] | None:
        """The next message, or None when the parent is gone."""
        if not self._messages:
            self._on_readable()  # it is usually there already: no trip through the loop
        while not self._messages:
            if self._eof:
                return None
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._messages.popleft()

    async def send(self, control: tuple[Any, ...], tail: bytes | bytearray = b"") -> None:
        await send(self._sock, message(control, tail))


async def send(sock: socket.socket, data: bytes) -> None:
    """``loop.sock_sendall`` on a non-blocking socket, without its cost when the socket takes
    everything at once (a control message does): uvloop's costs tens of microseconds."""
    try:
        sent = sock.send(data)
    except (BlockingIOError, InterruptedError):
        sent = 0
    if sent < len(data):
        with memoryview(data) as view:
            await asyncio.get_running_loop().sock_sendall(sock, view[sent:])


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
                try:
                    exc.add_note(f"remote traceback, in {where}:\n{text.rstrip()}")
                except TypeError:  # its __notes__ is no list: the user's error stays as it is
                    pass
                return exc
            reason = f"it unpickled as a {type(exc).__name__}"
    err = ExecutorError(f"{summary} (raised in {where}; it could not be sent back: {reason})")
    err.add_note(f"remote traceback:\n{text.rstrip()}")
    return err
