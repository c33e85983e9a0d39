"""Channels shared by streams: fair drops, service in turn, per-stream capacity, newest first.

A block that reads several live streams (cameras) through one leaky edge should not let a
flooding stream push out a quiet one. A :class:`FairChannel` knows each item's *stream* (a key
computed when the item is put) and, when it must drop, drops from the stream holding the most
queued items:

* ``drop_oldest`` on a full channel evicts the oldest item of the largest stream (ties go to
  the stream of the new item when it already has items queued: the stream pushing is the one
  that loses);
* ``drop_newest`` discards the newest item of the largest stream, counting the new one (ties:
  the new item);
* ``per_key=n`` holds at most ``n`` items of one stream: an item over that evicts its stream's
  oldest (``drop_oldest``) or is discarded (``drop_newest``);
* ``newest=True`` (``serve="newest"``) is ``per_key=1`` whose evictions are counted as
  *superseded*, not as overflow: each stream keeps only its newest item. A superseded item's
  successor keeps its stream's turn (below), so a flooding camera is not sent to the back of the
  line by each of its own frames.

Streams are *served in turn* (round robin): the stream that has waited longest for its turn,
among those with a queued item, gives its oldest item, and then waits behind the others. Each
stream with queued items thus gets an equal share of the consumer whatever its rate: dropping
fairly is not enough, since a flooding stream's queued items are always its newest and, served
oldest first across streams, it would get the fewest items through. A stream that gets an item
while it has none queued joins the end of the turn. Each stream's items leave oldest first
(per-stream order holds); global input order *across* streams does not. Control items (see
:class:`StreamBuffer`) leave once every item put before them has left: while one is queued,
items are served in arrival order up to it.

A stream is found by its key once per put, in one guarded place: a user's key may refuse to be
hashed or compared (an ``__eq__`` that raises), which fails that item (``refuse``) and never the
buffer or whoever put the item. Past that point a stream is a :class:`_Stream` of the buffer's
own, hashed and compared by identity, so no user code runs while the buffer is being changed.

Every operation is O(1) in the number of streams (:class:`StreamBuffer`) but
:meth:`StreamBuffer.take_capped` (O(streams)); the plain :class:`~.channel.Channel` is
untouched, so blocks without these options pay nothing.

The runner's fast paths read a channel's buffer directly (``_buf``: ``popleft``, ``append``,
``len``), some from the block's own threads. :class:`StreamBuffer` offers that much of a
deque's interface, applies the policy in ``append`` too (whoever appends, drops are counted),
and takes a lock around every change, so a thread taking an item never races the event loop
putting one.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Iterable, Iterator
from typing import Any, Generic, TypeVar, cast

from .cancelling import checkpoint, from_sync
from .channel import Channel, ChannelClosed, Overflow

__all__ = ["FairChannel", "StreamBuffer"]

T = TypeVar("T")


class _Stream:
    """A stream: its key (the user's) and that key's hash. Hashed and compared by identity:
    the buffer's own tables never call the key's ``__hash__`` or ``__eq__``."""

    __slots__ = ("hash", "key")

    def __init__(self, key: Hashable, hashed: int) -> None:
        self.key = key
        self.hash = hashed


class _Entry:
    """One queued item: its stream, its arrival number, and whether it is still queued (the
    arrival order keeps entries taken out of its middle until they reach its front)."""

    __slots__ = ("item", "key", "live", "seq")

    def __init__(self, item: Any, key: _Stream, seq: int) -> None:
        self.item = item
        self.key = key
        self.seq = seq
        self.live = True


class StreamBuffer(Generic[T]):
    """The buffer of a :class:`FairChannel`: items in arrival order, and per stream.

    ``order`` holds every entry in arrival order (entries taken out of its middle stay there,
    marked dead, until they reach its front or a compaction); ``lanes`` the live entries of each
    stream, oldest first; ``turn`` the streams with queued items in service order (the next to
    serve first); ``sizes`` the streams by how many items they hold (a count changes by one at a
    time, so the largest is found in O(1)); ``controls`` how many control items are queued.
    """

    __slots__ = (
        "_controls",
        "_dead",
        "_lanes",
        "_live",
        "_lock",
        "_order",
        "_seq",
        "_sizes",
        "_streams",
        "_top",
        "_turn",
        "capacity",
        "control",
        "key",
        "leaky",
        "newest",
        "overflow",
        "per_key",
        "refuse",
        "report",
    )

    def __init__(
        self,
        capacity: int,
        key: Callable[[T], Hashable],
        *,
        overflow: Overflow,
        per_key: int | None,
        newest: bool,
        report: Callable[[T, bool], None],
        control: Callable[[T], bool] | None = None,
        refuse: Callable[[T, Exception], None] | None = None,
    ) -> None:
        self.capacity = capacity
        #: whether an item is a control item (``af.EndOfKey``): it belongs to no stream, is
        #: never dropped (it may go over the capacity: control items are few and small) and
        #: leaves in arrival order, once every item put before it has left
        self.control = control
        self.key = key
        self.overflow = overflow
        self.leaky = overflow != "block"
        self.per_key = 1 if newest else per_key
        self.newest = newest
        #: called (outside the lock) with each item the policy discarded, and whether a newer
        #: item of its stream superseded it
        self.report = report
        #: called (outside the lock) with an item whose stream could not be found (its key
        #: function, or its key's ``__hash__`` or ``__eq__``, raised) and the error; the item is
        #: not kept. None: the error is raised to whoever puts the item.
        self.refuse = refuse
        self._order: deque[_Entry] = deque()
        self._lanes: dict[_Stream, deque[_Entry]] = {}
        #: the streams that have a lane, by their key's hash
        self._streams: dict[int, list[_Stream]] = {}
        # An OrderedDict, not a dict: taking its first key and moving it to the end over and
        # over stays O(1) (a dict's first key is found past the slots its deletions left).
        self._turn: OrderedDict[_Stream, None] = OrderedDict()
        self._controls = 0
        self._sizes: dict[int, dict[_Stream, None]] = {}
        self._top = 0
        self._live = 0
        self._dead = 0
        self._seq = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self._live

    def __bool__(self) -> bool:
        return self._live > 0

    def __iter__(self) -> Iterator[T]:
        with self._lock:
            items = [e.item for e in self._order if e.live]
        return iter(items)

    def streams(self) -> dict[Hashable, int]:
        """How many items each stream holds now, by the streams' keys."""
        with self._lock:
            held = [(stream.key, len(lane)) for stream, lane in self._lanes.items()]
        return dict(held)

    def _find(self, key: Hashable) -> _Stream:
        """The stream of ``key`` (call under the lock): the one held whose key is ``key`` or
        equal to it, as a dict would find it, or a new one (it is held once it has a lane).
        The only place the key's ``__hash__`` and ``__eq__`` run: what they raise goes up."""
        hashed = hash(key)
        held = self._streams.get(hashed)
        if held is not None:
            for stream in held:
                other = stream.key
                if other is key or other == key:
                    return stream
        return _Stream(key, hashed)

    # -- the counts -------------------------------------------------------------------------

    def _grew(self, key: _Stream, size: int) -> None:
        """Stream ``key`` went from ``size - 1`` to ``size`` items."""
        sizes = self._sizes
        if size > 1:
            bucket = sizes[size - 1]
            del bucket[key]
            if not bucket:
                del sizes[size - 1]
        sizes.setdefault(size, {})[key] = None
        if size > self._top:
            self._top = size

    def _shrank(self, key: _Stream, size: int) -> None:
        """Stream ``key`` went from ``size + 1`` to ``size`` items."""
        sizes = self._sizes
        bucket = sizes[size + 1]
        del bucket[key]
        if not bucket:
            del sizes[size + 1]
            if self._top == size + 1:
                self._top = size  # the stream itself is there now (or nothing is left)
        if size:
            sizes.setdefault(size, {})[key] = None

    # -- adding and removing (under the lock) ---------------------------------------------------

    def _add(self, item: T, key: _Stream) -> None:
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = deque()
            self._streams.setdefault(key.hash, []).append(key)
            if key not in self._turn:  # (it is when the item it replaces kept its turn)
                self._turn[key] = None
        entry = _Entry(item, key, self._seq)
        self._seq += 1
        lane.append(entry)
        self._order.append(entry)
        self._live += 1
        self._grew(key, len(lane))

    def _unlink(self, entry: _Entry, lane: deque[_Entry], *, keep_turn: bool = False) -> None:
        """``entry`` has left ``lane``: forget it (it stays dead in ``order`` for now). A stream
        left with no items leaves the turn, unless ``keep_turn`` (an item of it comes next)."""
        entry.live = False
        self._live -= 1
        key = entry.key
        if not lane:
            del self._lanes[key]
            held = self._streams[key.hash]
            if len(held) == 1:
                del self._streams[key.hash]
            else:
                held.remove(key)  # (compared by identity)
            if not keep_turn:
                del self._turn[key]
        self._shrank(key, len(lane))

    def _served(self, entry: _Entry) -> None:
        """``entry``, the oldest of its stream, is taken: its stream waits behind the others."""
        key = entry.key
        lane = self._lanes[key]
        lane.popleft()
        self._unlink(entry, lane)
        if lane:
            self._turn.move_to_end(key)
        if self._order[0] is entry:
            self._order.popleft()
        else:
            self._buried()

    def _evict(self, key: _Stream, *, newest: bool = False, keep_turn: bool = False) -> T:
        """Take the oldest (or newest) item of stream ``key`` out of the middle."""
        lane = self._lanes[key]
        entry = lane.pop() if newest else lane.popleft()
        self._unlink(entry, lane, keep_turn=keep_turn)
        self._buried()
        item: T = entry.item
        return item

    def _buried(self) -> None:
        """One more dead entry in ``order``; past as many as there are live ones, rebuild it
        (amortised O(1): once per that many removals)."""
        self._dead += 1
        if self._dead > 32 and self._dead > self._live:
            self._order = deque(e for e in self._order if e.live)
            self._dead = 0

    def _largest(self) -> _Stream:
        """The stream holding the most items (ties: the first to reach that many)."""
        return next(iter(self._sizes[self._top]))

    # -- the deque's interface ------------------------------------------------------------------

    def offer(self, item: T) -> bool:
        """Add ``item`` by the policy; True if it was kept. What the policy discards is
        reported (after the lock is released)."""
        if self.control is not None and self.control(item):
            with self._lock:
                entry = _Entry(item, _CONTROL, self._seq)
                self._seq += 1
                self._order.append(entry)
                self._live += 1
                self._controls += 1
            return True
        try:
            found = self.key(item)
        except BaseException as exc:
            return self._refused(item, exc)
        dropped: Any = _NONE
        superseded = False
        kept = True
        failed: BaseException | None = None
        with self._lock:
            try:
                key = self._find(found)
            except BaseException as exc:
                failed = exc  # (nothing has changed here yet)
            else:
                lane = self._lanes.get(key)
                held = len(lane) if lane is not None else 0
                per_key = self.per_key
                if per_key is not None and held >= per_key:
                    if self.overflow == "drop_newest":
                        dropped, kept = item, False
                    else:
                        # The new item takes the evicted one's place in the turn.
                        dropped = self._evict(key, keep_turn=True)
                        superseded = self.newest
                elif self._live >= self.capacity and self.leaky:
                    # The largest stream loses an item, counting the new one in its stream;
                    # ties go to the stream the new item belongs to, if it has items here.
                    if self.overflow == "drop_newest":
                        if held + 1 >= self._top:
                            dropped, kept = item, False
                        else:
                            dropped = self._evict(self._largest(), newest=True)
                    elif held and held >= self._top:
                        dropped = self._evict(key, keep_turn=True)
                    else:
                        dropped = self._evict(self._largest())
                if kept:
                    self._add(item, key)
        if failed is not None:
            return self._refused(item, failed)
        if dropped is not _NONE:
            self.report(dropped, superseded)
        return kept

    def _refused(self, item: T, exc: BaseException) -> bool:
        """The stream of ``item`` could not be found: the user's key function, or its key's
        ``__hash__`` or ``__eq__``, raised ``exc``. The item is not kept; ``refuse`` decides
        its fate (an interrupt goes on up, as does everything when there is no ``refuse``)."""
        error = from_sync(exc)
        if self.refuse is None:
            raise exc
        self.refuse(item, error)
        return False

    def would_drop(self, item: T) -> bool:
        """Whether putting ``item`` now would drop an item (its own stream's, or the largest
        stream's when full)."""
        if self.control is not None and self.control(item):
            return False
        if self._live >= self.capacity:
            return True
        if self.per_key is None:
            return False
        try:
            found = self.key(item)
            with self._lock:
                lane = self._lanes.get(self._find(found))
        except BaseException as exc:
            from_sync(exc)  # (an interrupt goes on up)
            return False  # it is refused when it is put
        return lane is not None and len(lane) >= self.per_key

    def append(self, item: T) -> None:
        """Add ``item`` by the policy (a fast path that appends directly drops as a put does)."""
        self.offer(item)

    def extend(self, items: Iterable[T]) -> None:
        for item in items:
            self.offer(item)

    def popleft(self) -> T:
        """Take the next item: the oldest of the stream whose turn it is, or, while a control
        item is queued, the oldest item (IndexError if there is none)."""
        with self._lock:
            if self._controls:
                first: T = self._take_oldest()
                return first
            turn = self._turn
            if not turn:
                msg = "pop from an empty StreamBuffer"
                raise IndexError(msg)
            entry = self._lanes[next(iter(turn))][0]
            self._served(entry)
        item: T = entry.item
        return item

    def _take_oldest(self) -> Any:
        """Take the oldest item (a control item is queued: serve in arrival order up to it)."""
        order = self._order
        while True:
            entry = order.popleft()  # IndexError when empty, as a deque's
            if entry.live:
                break
            self._dead -= 1
        if entry.key is _CONTROL:
            entry.live = False
            self._live -= 1
            self._controls -= 1
            return entry.item
        order.appendleft(entry)  # _served takes it off the front
        self._served(entry)
        return entry.item

    def withdraw(self, item: T) -> bool:
        """Take ``item`` (the very object) out again if it is still queued, looked for from the
        newest end, where it went; True if it was. For a put cancelled after its item was put
        for it (see :meth:`~.channel.Channel._take_back`): rare, O(items queued)."""
        with self._lock:
            for entry in reversed(self._order):
                if entry.live and entry.item is item:
                    break
            else:
                return False
            key = entry.key
            if key is _CONTROL:
                entry.live = False
                self._live -= 1
                self._controls -= 1
            else:
                lane = self._lanes[key]
                lane.remove(entry)  # (entries compare by identity)
                self._unlink(entry, lane)
            self._buried()
        return True

    def take_capped(self, counts: dict[Any, int], cap: int) -> Any:
        """Take the oldest item of the first stream in turn that has fewer than ``cap`` items
        in ``counts`` (and count it there), or return :data:`NOTHING`. While a control item is
        queued: the oldest such item, or the control item once nothing was put before it.
        O(streams)."""
        with self._lock:
            best: _Entry | None = None
            if self._controls:
                order = self._order
                while not order[0].live:
                    order.popleft()
                    self._dead -= 1
                if order[0].key is _CONTROL:
                    # A control item leaves once everything put before it has left.
                    return self._take_oldest()
                for key, lane in self._lanes.items():
                    if counts.get(key, 0) < cap:
                        head = lane[0]
                        if best is None or head.seq < best.seq:
                            best = head
            else:
                for key in self._turn:
                    if counts.get(key, 0) < cap:
                        best = self._lanes[key][0]
                        break
            if best is None:
                return NOTHING
            self._served(best)
        counts[best.key] = counts.get(best.key, 0) + 1
        return best.item

    def clear(self) -> None:
        with self._lock:
            self._order.clear()
            self._lanes.clear()
            self._streams.clear()
            self._turn.clear()
            self._sizes.clear()
            self._top = self._live = self._dead = self._controls = 0


_NONE: Any = object()
#: the "stream" of control items: they are in the arrival order only, in no stream
_CONTROL: Any = object()
#: what :meth:`StreamBuffer.take_capped` returns when no stream may give an item
NOTHING: Any = object()


class FairChannel(Channel[T]):
    """A :class:`~.channel.Channel` whose items belong to streams (see the module's docstring).

    Args:
        capacity: how many items it holds (>= 1).
        key: the stream of an item (the user's function).
        overflow: ``"drop_oldest"`` or ``"drop_newest"`` (by stream), or ``"block"`` (never
            drops; the streams then only serve :meth:`take_capped`, for batches capped per
            stream).
        per_key: the most items of one stream it holds, or None.
        newest: keep only the newest item of each stream (``serve="newest"``).
        on_drop: called with each item the overflow policy discards.
        on_supersede: called with each item a newer item of its stream replaced.
        control: whether an item is a control item (never dropped, in no stream: see
            :class:`StreamBuffer`).
        on_refuse: called with an item whose stream could not be found (``key``, or the
            key's ``__hash__`` or ``__eq__``, raised) and the error, as an item failure; the
            item is not kept. None: the error goes to whoever puts the item.
    """

    __slots__ = ("on_supersede",)

    def __init__(
        self,
        capacity: int,
        key: Callable[[T], Hashable],
        *,
        overflow: Overflow = "drop_oldest",
        per_key: int | None = None,
        newest: bool = False,
        on_drop: Callable[[T], None] | None = None,
        on_supersede: Callable[[T], None] | None = None,
        control: Callable[[T], bool] | None = None,
        on_refuse: Callable[[T, Exception], None] | None = None,
    ) -> None:
        super().__init__(capacity, overflow=overflow, on_drop=on_drop)
        self.on_supersede = on_supersede
        self._buf = StreamBuffer(  # type: ignore[assignment]  # a deque's interface, by streams
            capacity,
            key,
            overflow=overflow,
            per_key=per_key,
            newest=newest,
            report=self._dropped,
            control=control,
            refuse=on_refuse,
        )

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<FairChannel {len(self._buf)}/{self.capacity} {self.overflow} {state}>"

    @property
    def buffer(self) -> StreamBuffer[T]:
        return cast(StreamBuffer[T], self._buf)

    def _dropped(self, item: T, superseded: bool) -> None:
        self.overflowed += 1
        if superseded:
            self.superseded += 1
            if self.on_supersede is not None:
                self.on_supersede(item)
        elif self.on_drop is not None:
            self.on_drop(item)

    def put_nowait(self, item: T) -> bool:
        """Put ``item`` without waiting, dropping by stream as the policy says; True when it
        was kept. With ``"block"`` a full channel raises :class:`asyncio.QueueFull`."""
        if self._closed:
            msg = "put on a closed channel"
            raise ChannelClosed(msg)
        if not self.leaky and len(self._buf) >= self.capacity:
            raise asyncio.QueueFull
        self.received += 1
        kept = self.buffer.offer(item)
        if kept and self._getters:
            self._wake_getter()
        return kept

    async def put(self, item: T) -> bool:
        """Put ``item``: wait while full (``"block"``), or, where the policy would drop an
        item, give the reader one chance to take one first (as a plain leaky channel does when
        full): a producer that never waits would otherwise supersede nearly everything."""
        if not self.leaky:
            # Behind the writers already waiting, first come, first served (as a plain
            # channel's put: the slot a reader frees goes to the writer first in line).
            if len(self._buf) >= self.capacity and await self._wait_turn(item):
                return True
        elif self.buffer.would_drop(item):
            await asyncio.sleep(0)
        return self.put_nowait(item)

    def _take_back(self, item: T) -> None:
        """Take ``item``, put in its turn by :meth:`_wake_putter`, out again, uncounted, if no
        reader took it yet (a cancelled put puts nothing)."""
        if self.buffer.withdraw(item):
            self.received -= 1

    def take_capped(self, counts: dict[Hashable, int], cap: int) -> Any:
        """Take the next item (in turn) whose stream has fewer than ``cap`` items in ``counts``
        (a batch being formed), counting it there; :data:`NOTHING` when no stream may give one."""
        item = self.buffer.take_capped(counts, cap)
        if item is not NOTHING and self._putters:
            self._wake_putter()
        return item

    async def wait_put(self) -> None:
        """Wait until the next item is put (or the channel is closed), whatever is buffered."""
        if self._closed:
            return
        checkpoint()  # (a cancellation that the user's code swallowed still ends the task)
        fut = self._get_loop().create_future()
        self._getters.append(fut)
        try:
            await fut
        except BaseException:
            fut.cancel()
            # Woken but leaving: pass the turn on to a getter that may take what is there.
            if self._buf or self._closed:
                self._wake_getter()
            raise
