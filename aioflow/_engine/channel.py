"""Bounded channels: the edges between blocks.

A :class:`Channel` is a bounded FIFO with the waiting semantics of :class:`asyncio.Queue`
(``put`` waits while full, ``get`` waits while empty, waiters are served first come first
served) plus what a pipeline edge needs on top:

* writers waiting for room get it in turn: the slot a reader frees goes to the item of the
  writer that waited longest, put there as the reader takes (``put`` hands its item over while
  it waits), so a writer arriving in between finds the channel full and waits behind it.
  (asyncio.Queue wakes the waiting writer instead, and a newcomer may take the slot first,
  which sent the woken writer to the back: with a newcomer each time, it waited for as long as
  they kept coming.) A writer that does not wait costs the same as before;

* an overflow policy: ``"block"`` (backpressure), ``"drop_oldest"`` or ``"drop_newest"``;
* ``close()``: end of stream. Getters drain what is buffered, then get :class:`ChannelClosed`;
* counters (``received``, ``overflowed``) that feed the statistics of the block that reads it, and
  ``blocked_s`` (seconds writers spent waiting for room) for the block that writes it.

It is built on a :class:`collections.deque` with one future per *waiting* caller, so a put or get
that does not have to wait costs a few attribute lookups and no allocation. There is no unbounded
mode: the capacity is always a positive integer.

Items also move in *runs*: the source puts as many as fit at once (:meth:`Channel.extend_nowait`),
and a one-worker block hands on a run item by item but counts it once, at its end; meanwhile
:meth:`Channel.counted` (what statistics read) adds what the run has put (``uncounted``).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Generic, Literal, TypeVar

from .cancelling import checkpoint

__all__ = ["Channel", "ChannelClosed", "Overflow"]

T = TypeVar("T")
Overflow = Literal["block", "drop_oldest", "drop_newest"]

_perf = time.perf_counter
_ABSENT = object()


class ChannelClosed(Exception):
    """Raised by :meth:`Channel.get` once the channel is closed and empty, and by ``put`` on a
    closed channel."""


class Channel(Generic[T]):
    """A bounded FIFO channel.

    Args:
        capacity: how many items it holds (>= 1).
        overflow: what ``put`` does when full: wait (``"block"``), evict the oldest buffered
            item (``"drop_oldest"``) or discard the new one (``"drop_newest"``).
        on_drop: called with each item the overflow policy discards.
    """

    __slots__ = (
        "_buf",
        "_closed",
        "_getters",
        "_loop",
        "_offers",
        "_putters",
        "blocked_s",
        "capacity",
        "controls",
        "leaky",
        "on_drop",
        "overflow",
        "overflowed",
        "received",
        "superseded",
        "taking",
        "uncounted",
    )

    def __init__(
        self,
        capacity: int,
        *,
        overflow: Overflow = "block",
        on_drop: Callable[[T], None] | None = None,
    ) -> None:
        if capacity < 1:
            msg = f"channel capacity must be >= 1, got {capacity}"
            raise ValueError(msg)
        self._buf: deque[T] = deque()
        self._getters: deque[asyncio.Future[None]] = deque()
        self._putters: deque[asyncio.Future[None]] = deque()
        #: the items of writers waiting in :meth:`put`, by their future in ``_putters``: the
        #: one woken gets its item put for it (see :meth:`_wake_putter`)
        self._offers: dict[asyncio.Future[None], T] = {}
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self.capacity = capacity
        self.overflow = overflow
        self.leaky = overflow != "block"
        self.on_drop = on_drop
        #: items offered to this channel, dropped ones included
        self.received = 0
        #: items the overflow policy discarded
        self.overflowed = 0
        #: of ``received``, the control items (``af.EndOfKey``), counted by whoever puts one no
        #: later than it is buffered (see aioflow/_engine/controls.py)
        self.controls = 0
        #: of ``overflowed``, those a newer item of the same stream replaced (``serve="newest"``,
        #: :class:`~.fair.FairChannel`): counted as dropped for reason ``"superseded"``
        self.superseded = 0
        #: set while a writer hands items on in a run and counts them at its end: how many it
        #: has put meanwhile (see :meth:`counted`)
        self.uncounted: Callable[[], int] | None = None
        #: seconds writers waited for room, summed over writers (read only on the slow path)
        self.blocked_s = 0.0
        #: set while a thread block's own threads take items from this buffer (see
        #: aioflow/_engine/pulling.py): the lock they take them under, which a drop of the
        #: oldest item takes too (taking it out, and putting back a marker found there, is
        #: then one step for them)
        self.taking: threading.Lock | None = None

    def __len__(self) -> int:
        return len(self._buf)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<Channel {len(self._buf)}/{self.capacity} {self.overflow} {state}>"

    @property
    def closed(self) -> bool:
        return self._closed

    def counted(self) -> int:
        """``received``, with what a writer handing on a run has put and not counted yet:
        the count for statistics, exact at every moment."""
        uncounted = self.uncounted
        if uncounted is None:
            return self.received
        return self.received + uncounted()

    def full(self) -> bool:
        return len(self._buf) >= self.capacity

    def empty(self) -> bool:
        return not self._buf

    # -- waking ---------------------------------------------------------------------------------

    def _get_loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        return loop

    def _wake_getter(self) -> None:
        getters = self._getters
        while getters:
            fut = getters.popleft()
            if not fut.done():
                fut.set_result(None)
                return

    def _wake_putter(self) -> None:
        """Give the room there is to the writer that waited longest: the item of one waiting
        in :meth:`put` is put for it here, so that nobody takes its slot first; one waiting
        in :meth:`wait_writable` is woken."""
        putters = self._putters
        while putters:
            fut = putters.popleft()
            if fut.done():
                continue
            offers = self._offers
            if offers and fut in offers:
                if len(self._buf) >= self.capacity:
                    # The room went before this was called (a thread block's thread took an
                    # item and asked the loop to wake a writer; one that did not have to wait
                    # filled the slot meanwhile): the writer keeps its place.
                    putters.appendleft(fut)
                    return
                self.put_nowait(offers.pop(fut))
            fut.set_result(None)
            return

    # -- putting --------------------------------------------------------------------------------

    def put_nowait(self, item: T) -> bool:
        """Put ``item`` without waiting.

        Returns True when the item was buffered. With a leaky policy a full channel drops an item
        (the oldest, or this one) and reports it through ``on_drop``; with ``"block"`` a full
        channel raises :class:`asyncio.QueueFull`.
        """
        if self._closed:
            msg = "put on a closed channel"
            raise ChannelClosed(msg)
        buf = self._buf
        if len(buf) >= self.capacity:
            if self.overflow == "drop_oldest":
                self.received += 1
                if self.taking is not None:
                    with self.taking:  # (see ``taking``)
                        self._drop_oldest(item)
                    return True
                try:
                    old = buf.popleft()
                except IndexError:
                    # A block's worker thread took the last item meanwhile: there is room.
                    buf.append(item)
                    return True
                self.overflowed += 1
                buf.append(item)
                if self.on_drop is not None:
                    self.on_drop(old)
                return True
            if self.overflow == "drop_newest":
                self.received += 1
                self.overflowed += 1
                if self.on_drop is not None:
                    self.on_drop(item)
                return False
            raise asyncio.QueueFull
        self.received += 1
        buf.append(item)
        if self._getters:
            self._wake_getter()
        return True

    def _drop_oldest(self, item: T) -> None:
        """Put ``item`` in the full buffer in place of its oldest item, which is dropped (a
        marker found there is put back in its place: aioflow/_engine/controls.py). The same as
        the inline path of :meth:`put_nowait`, for a buffer that threads take from."""
        buf = self._buf
        try:
            old = buf.popleft()
        except IndexError:
            # A block's worker thread took the last item meanwhile: there is room.
            buf.append(item)
            return
        self.overflowed += 1
        buf.append(item)
        if self.on_drop is not None:
            self.on_drop(old)

    def extend_nowait(self, items: list[T]) -> None:
        """Put a run of items at once, without waiting: one count, one look for waiting
        getters (as many woken as there are items for them).

        With ``"block"`` the run must fit: when it does not, nothing is put and
        :class:`asyncio.QueueFull` is raised. A leaky channel applies its policy to each item,
        as :meth:`put_nowait` does.
        """
        if self._closed:
            msg = "put on a closed channel"
            raise ChannelClosed(msg)
        if self.leaky:
            for item in items:
                self.put_nowait(item)
            return
        buf = self._buf
        if len(buf) + len(items) > self.capacity:
            raise asyncio.QueueFull
        self.received += len(items)
        buf.extend(items)
        getters = self._getters
        if getters:
            for _ in range(min(len(items), len(getters))):
                self._wake_getter()

    async def put(self, item: T) -> bool:
        """Put ``item``, waiting while the channel is full (``"block"`` policy only)."""
        buf = self._buf
        if self.leaky:
            if len(buf) >= self.capacity:
                # Give the reader one chance to make room before the policy drops something:
                # a producer that never waits would otherwise drop nearly everything.
                await asyncio.sleep(0)
        elif len(buf) >= self.capacity and await self._wait_turn(item):
            return True
        return self.put_nowait(item)

    async def _wait_turn(self, item: T) -> bool:
        """Wait for room behind the writers already waiting, the item offered for the slot
        that frees in turn (see :meth:`_wake_putter`). True once it was put there; False when
        :meth:`put` is to put it itself (the channel is closed: that raises).

        Cancelled after its item was put, before it learnt so, it takes the item back (a
        cancelled put puts nothing), unless a reader has taken it already: then the item goes
        on, as if the cancellation came just after ``put`` returned."""
        buf = self._buf
        offers = self._offers
        putters = self._putters
        while len(buf) >= self.capacity and not self._closed:
            checkpoint()  # (a cancellation that the user's code swallowed still ends the task)
            fut = self._get_loop().create_future()
            putters.append(fut)
            offers[fut] = item
            if len(buf) < self.capacity:
                # A thread block's threads take items from this buffer themselves and wake a
                # waiting writer once they did: the one that made room just now looked before
                # this writer was there (the writer first in line takes the room).
                self._wake_putter()
            t0 = _perf()
            try:
                await fut
            except BaseException:
                fut.cancel()
                if offers.pop(fut, _ABSENT) is _ABSENT:
                    # Put in its turn, then cancelled before it learnt so: as with a writer
                    # woken to put, a cancelled put puts nothing, so the item is taken back
                    # if no reader has it yet (and the turn goes on).
                    self._take_back(item)
                if len(buf) < self.capacity and not self._closed:
                    # There is room (the item taken back, or a thread made it): pass it on.
                    self._wake_putter()
                raise
            finally:
                self.blocked_s += _perf() - t0
            if offers.pop(fut, _ABSENT) is _ABSENT:
                return True  # put in its turn
        return False

    def _take_back(self, item: T) -> None:
        """Take ``item``, put in its turn by :meth:`_wake_putter`, out of the buffer again,
        uncounted, if no reader took it yet (looked for from the newest end, where it went)."""
        buf = self._buf
        with self.taking or contextlib.nullcontext():  # (threads may take items meanwhile)
            for i in range(len(buf) - 1, -1, -1):
                if buf[i] is item:
                    del buf[i]
                    self.received -= 1
                    return

    async def wait_writable(self) -> None:
        """Wait until ``put_nowait`` would not block: there is room, or the channel is closed.

        A producer that waits here *before* fetching its next item never holds an item that has
        nowhere to go (a source reads ahead exactly as far as the channels hold).
        """
        buf = self._buf
        while len(buf) >= self.capacity and not self._closed and not self.leaky:
            checkpoint()  # (a cancellation that the user's code swallowed still ends the task)
            fut = self._get_loop().create_future()
            self._putters.append(fut)
            if len(buf) < self.capacity:
                # A thread block's threads take items from this buffer themselves (see
                # aioflow/_engine/pulling.py) and wake a waiting writer once they did: the
                # one that made room just now looked before this writer was there to wake.
                fut.set_result(None)
            t0 = _perf()
            try:
                await fut
            except BaseException:
                fut.cancel()
                # We were woken but will not put: pass the turn on.
                if len(buf) < self.capacity and not self._closed:
                    self._wake_putter()
                raise
            finally:
                self.blocked_s += _perf() - t0

    # -- getting --------------------------------------------------------------------------------

    def get_nowait(self) -> T:
        """Take the next item without waiting; :class:`asyncio.QueueEmpty` if there is none, or
        :class:`ChannelClosed` if there is none and never will be."""
        buf = self._buf
        if not buf:
            if self._closed:
                raise ChannelClosed
            raise asyncio.QueueEmpty
        item = buf.popleft()
        if self._putters:
            self._wake_putter()
        return item

    async def get(self) -> T:
        """Take the next item, waiting while the channel is empty. Raises
        :class:`ChannelClosed` at the end of the stream."""
        buf = self._buf
        while not buf:
            if self._closed:
                raise ChannelClosed
            checkpoint()
            fut = self._get_loop().create_future()
            self._getters.append(fut)
            try:
                await fut
            except BaseException:
                fut.cancel()
                if buf or self._closed:
                    self._wake_getter()
                raise
        item = buf.popleft()
        if self._putters:
            self._wake_putter()
        return item

    async def wait_readable(self) -> None:
        """Wait until an item is buffered or the channel is closed."""
        while not self._buf and not self._closed:
            checkpoint()
            fut = self._get_loop().create_future()
            self._getters.append(fut)
            try:
                await fut
            except BaseException:
                fut.cancel()
                if self._buf or self._closed:
                    self._wake_getter()
                raise

    def drain_nowait(self) -> list[T]:
        """Take every buffered item at once."""
        buf = self._buf
        items = list(buf)
        buf.clear()
        for _ in range(min(len(self._putters), self.capacity)):
            self._wake_putter()
        return items

    def close(self) -> None:
        """End of stream: getters drain what is buffered, then get :class:`ChannelClosed`.
        Waiting putters are woken and get :class:`ChannelClosed`."""
        if self._closed:
            return
        self._closed = True
        for fut in self._getters:
            if not fut.done():
                fut.set_result(None)
        self._getters.clear()
        for fut in self._putters:
            if not fut.done():
                fut.set_result(None)
        self._putters.clear()
