"""Video sources: frames from files, image folders, cameras and network streams.

:func:`video_source` returns a :class:`VideoSource`, an async iterator of
:class:`~aioflow.io.video.Frame`. Each stream is decoded in its own thread (``aioflow-video[id]``,
see :mod:`aioflow.io._video_readers`), started on the first ``__anext__`` and joined when the
iteration ends, fails or is closed, so decoding never runs on the event loop and no thread
outlives the iteration.

Between each reader thread and the consumer sits a small buffer per stream:

- **not live** (files, folders): ``buffer`` frames of read-ahead; a full buffer makes the reader
  wait (backpressure), so a file is read exactly as fast as the pipeline takes it;
- **live** (cameras, network streams): the reader keeps pace with the source and the buffer
  keeps only the newest ``buffer`` frames; older ones are dropped and counted, so a slow pipeline
  always gets a recent frame rather than a backlog.

The public names are re-exported by :mod:`aioflow.io.video`; see there for the usage notes.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import threading
import time
import warnings
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, cast
from urllib.parse import urlsplit

from .. import EndOfKey, GraphError, Retry
from ._video_frame import Frame, VideoSourceError
from ._video_readers import (
    DEFAULT_RECONNECT,
    Hub,
    Kind,
    Options,
    Spec,
    StatusCallback,
    Stream,
    StreamEvent,
    StreamStatistics,
    Subscriber,
    read_stream,
)

__all__ = ["SourceLike", "StreamEvent", "VideoSource", "video_source"]

SourceLike = str | os.PathLike[str] | int
"""A path (file, folder, ``img_%04d.png`` pattern), a URL, or a camera index (``0`` or ``"0"``)."""

_LIVE_SCHEMES = frozenset(
    {"http", "https", "mms", "mmsh", "rtmp", "rtmps", "rtp", "rtsp", "rtsps", "srt", "tcp", "udp"}
)

# -- the consumer side ------------------------------------------------------------------------

_END = object()


async def wait_through_cancel(fut: asyncio.Future[None]) -> None:
    """Wait for ``fut`` even if cancelled meanwhile; re-raise the cancellation afterwards."""
    cancelled = False
    while not fut.done():
        try:
            await asyncio.shield(fut)
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError


class VideoSource:
    """An async iterator of :class:`Frame` over one or several video streams.

    Made by :func:`video_source`. Iterate it once (``async for``, or hand it to
    ``pipe.run``/``pipe.stream``, which close it when the run ends). Reader threads start on
    the first ``__anext__``; they are stopped and joined when the iteration ends (every stream
    ended), raises, or is closed with :meth:`aclose` (or by leaving ``async with``).

    Streams come and go while it runs: :meth:`add` starts a new stream (its own reader, frame
    index from 0 and statistics), :meth:`remove` stops one. A pipeline that reads the source
    goes on meanwhile; the source object you passed to ``pipe.run``/``pipe.stream`` (or fed
    to ``running.submit``) is the one to call them on. A removed stream's last entry is an
    :class:`aioflow.EndOfKey` of its stream id, behind its last frame: keyed blocks drop that
    stream's state (calling ``evict``); a pipeline never returns it, but iterating the source
    yourself you see it (skip it with ``isinstance(item, af.EndOfKey)``).

    The iteration ends once it holds streams and every one of them ended (end of file,
    ``stop=``). With no streams at all (every one removed) it waits for :meth:`add`, until
    :meth:`close` or :meth:`aclose`.

    ``statistics()`` reports per stream what was read, emitted, dropped and skipped, how often
    a live stream was reconnected, its recent rates and the age of its newest frame;
    :meth:`events` (or ``on_status=``) tells each change of a stream's state.
    """

    def __init__(
        self,
        specs: list[Spec],
        opts: Options,
        *,
        live: bool | None = None,
        on_status: StatusCallback | None = None,
    ) -> None:
        self._hub = Hub(specs, opts, on_status)
        self._live = live
        self._state: Literal["new", "running", "closed"] = "new"
        self._closing = False

    @property
    def streams(self) -> tuple[str, ...]:
        """The ids of the streams it holds now (removed ones leave), in the order they came."""
        with self._hub.lock:
            return tuple(st.spec.stream for st in self._hub.streams if not st.removed)

    @property
    def dropped(self) -> int:
        """Live frames dropped as stale, over the streams it holds."""
        with self._hub.lock:
            return sum(st.dropped for st in self._hub.streams)

    @property
    def reconnects(self) -> int:
        """Successful reconnections of lost live streams, over the streams it holds."""
        with self._hub.lock:
            return sum(st.reconnects for st in self._hub.streams)

    def statistics(self) -> dict[str, StreamStatistics]:
        """``{stream id: StreamStatistics}`` of the streams it holds, a consistent snapshot
        (a removed stream's last figures come with its ``"removed"`` event)."""
        with self._hub.lock:
            return {st.spec.stream: st.statistics() for st in self._hub.streams if not st.removed}

    def events(self) -> AsyncIterator[StreamEvent]:
        """Each change of a stream's state from now on, as a :class:`StreamEvent`.

        ``async for event in source.events(): ...``: the iteration ends once the source is
        closed and its last events were delivered. Each call makes an iterator of its own;
        one that falls more than 1024 events behind loses the oldest.
        """
        return _Events(self._hub)

    # -- adding and removing streams ----------------------------------------------------------

    async def add(
        self, uri: SourceLike, *, name: str | None = None, live: bool | None = None
    ) -> str:
        """Start another stream; return its id.

        On a running source its reader starts at once and this returns once the stream has
        opened; its frames join the iteration, numbered from 0. Before the first
        ``__anext__`` it is added to those that start then.

        Args:
            uri: as a source of :func:`video_source`.
            name: the stream id; default: derived from ``uri``, made unique (``-2``...).
            live: as :func:`video_source`'s; default: the source's ``live=``.

        Raises:
            GraphError: a bad ``uri`` or ``live``.
            ValueError: ``name`` is already a stream of this source.
            VideoSourceError: the source is closed, or (running) the stream cannot be
                opened; the stream is then discarded and the iteration goes on.
        """
        given_live: object = live
        if given_live is not None and not isinstance(given_live, bool):
            msg = f"VideoSource.add: live must be None, True or False, got {live!r}"
            raise GraphError(msg)
        hub = self._hub
        with hub.lock:
            taken = {st.spec.stream for st in hub.streams if not st.removed}
            spec = _spec(uri, name, self._live if live is None else live, taken)
            if self._state == "closed" or self._closing:
                raise VideoSourceError(spec.uri, spec.stream, "the source is closed")
            st = hub.new_stream(spec)
            hub.streams.append(st)
            if self._state == "new":
                return spec.stream
            st.adding = True
        loop = hub.loop
        assert loop is not None
        self._launch(st, loop)
        while True:
            with hub.lock:
                if st.state not in ("idle", "opening") or self._is_closed():
                    st.adding = False
                    error = st.error
                    if error is None and self._is_closed():
                        error = VideoSourceError(spec.uri, spec.stream, "the source closed")
                    if error is not None:
                        st.error = None  # add() raises it: the iteration does not
                        if st in hub.streams:
                            hub.streams.remove(st)
                    break
                waiter = self._waiter_locked(loop)
            await waiter
        if error is not None:
            await self._join(st)
            raise error
        return spec.stream

    async def remove(self, name: str) -> StreamStatistics:
        """Stop the stream ``name`` and take it out; return its last statistics.

        Its reader is stopped and joined (a reader busy in a blocking OpenCV call finishes it
        first: at most ``read_timeout`` for a silent network stream), its capture released;
        frames read but not yet taken are dropped (counted). If it delivered frames, an
        ``af.EndOfKey(name)`` follows its last frame in the iteration, so that keyed blocks
        end its state. The other streams go on meanwhile. The name is free again at once: a
        stream added under it later starts afresh.

        Raises:
            ValueError: no stream of that name.
        """
        hub = self._hub
        with hub.lock:
            st = next((s for s in hub.streams if s.spec.stream == name and not s.removed), None)
            if st is None:
                names = ", ".join(repr(s.spec.stream) for s in hub.streams if not s.removed)
                msg = f"VideoSource.remove: no stream {name!r} (streams: {names or 'none'})"
                raise ValueError(msg)
            st.removed = True
            st.stop.set()
            st.space.notify_all()
        cancelled = False
        try:
            await self._join(st)
        except asyncio.CancelledError:
            cancelled = True  # the stream is out all the same; then the cancellation goes on
        with hub.lock:
            dropped = sum(1 for _, f in st.frames if isinstance(f, Frame))
            st.frames.clear()
            st.dropped += dropped
            st.error = None
            hub.set_state_locked(st, "removed")
            if st.emitted and not st.ended_by_failure:
                hub.seq += 1
                st.frames.append((hub.seq, EndOfKey(name)))  # taken out with it
            elif st in hub.streams:
                hub.streams.remove(st)
            hub.wake_locked()
            stats = st.statistics()
        if cancelled:
            raise asyncio.CancelledError
        return stats

    def close(self) -> None:
        """Ask the iteration to end: it ends at its next step (frames not yet taken are left
        out) and stops the readers; a pipeline reading it finishes as at the end of a file.
        Returns at once; :meth:`aclose` also waits for the readers to exit."""
        hub = self._hub
        with hub.lock:
            self._closing = True
            hub.wake_locked()
            if hub.loop is None:
                self._state = "closed"

    def _is_closed(self) -> bool:
        # (a method: mypy would narrow the attribute across the awaits that change it)
        return self._state == "closed"

    # -- iteration ----------------------------------------------------------------------------

    def __aiter__(self) -> VideoSource:
        return self

    async def __anext__(self) -> Frame:
        hub = self._hub
        if self._state == "new" and not self._closing:
            await self._start()
        loop = hub.loop
        while True:
            if self._state == "closed":
                raise StopAsyncIteration
            if self._closing:
                await self.aclose()
                raise StopAsyncIteration
            assert loop is not None
            with hub.lock:
                item = self._take_locked()
                if item is None:
                    waiter = self._waiter_locked(loop)
            if isinstance(item, Frame):
                return item
            if isinstance(item, EndOfKey):
                # (typed as Frame: a pipeline takes it in its stride, see the class docstring)
                return cast(Frame, item)
            if item is _END:
                await self.aclose()
                raise StopAsyncIteration
            if isinstance(item, VideoSourceError):
                await self.aclose()
                raise item
            await waiter

    def _waiter_locked(self, loop: asyncio.AbstractEventLoop) -> asyncio.Future[None]:
        # A future the next reader event resolves; shared by concurrent consumers. One that a
        # cancelled consumer left behind is done, and replaced.
        waiter = self._hub.waiter
        if waiter is None or waiter.done():
            waiter = self._hub.waiter = loop.create_future()
        return waiter

    def _take_locked(self) -> Frame | EndOfKey | VideoSourceError | object | None:
        """The next frame (the one that arrived first, over all streams) or a removed stream's
        EndOfKey, the error of a failed stream, _END when every stream ended, or None (wait).
        With ``on_fail="end"`` a failed stream counts as ended, behind an EndOfKey of its id
        if it delivered frames."""
        best: Stream | None = None
        ended = True
        streams = self._hub.streams
        for st in streams:
            if st.frames:
                ended = False
                if best is None or st.frames[0][0] < best.frames[0][0]:
                    best = st
            elif st.error is not None and not st.adding:
                if self._hub.opts.on_fail == "raise":
                    return st.error
                # on_fail="end": the stream ended with its failure; the others go on.
                if st.emitted and not st.ended_by_failure:
                    st.ended_by_failure = True
                    return EndOfKey(st.spec.stream)
            elif st.state != "ended":
                ended = False
        if best is not None:
            entry = best.frames.popleft()[1]
            if isinstance(entry, EndOfKey):
                streams.remove(best)  # its last entry: the stream is gone
                return entry
            best.emitted += 1
            best.emit_times.append(time.monotonic())
            best.space.notify()
            return entry
        return _END if ended and streams else None

    def _launch(self, st: Stream, loop: asyncio.AbstractEventLoop) -> None:
        """Start a stream's reader thread (call on the loop)."""
        hub = self._hub
        with hub.lock:
            hub.set_state_locked(st, "opening")
        st.exited = loop.create_future()
        st.thread = threading.Thread(
            target=read_stream,
            args=(hub, st),
            name=f"aioflow-video[{st.spec.stream}]",
            daemon=True,
        )
        st.thread.start()

    async def _join(self, st: Stream) -> None:
        """Wait (without blocking the loop) until the stream's reader exited."""
        if st.exited is not None:
            await wait_through_cancel(st.exited)
        if st.thread is not None:
            st.thread.join()  # it signalled as its last act: this returns at once

    async def _start(self) -> None:
        hub = self._hub
        loop = asyncio.get_running_loop()
        hub.loop = loop
        self._state = "running"
        with hub.lock:
            initial = list(hub.streams)
        for st in initial:
            self._launch(st, loop)
        if hub.opts.stall_after is not None:
            hub.watchdog = loop.call_later(min(hub.opts.stall_after / 4, 1.0), hub.watch)
        # Wait until every stream opened, so that a source that cannot open fails here, at the
        # start, rather than after the others produced frames.
        while True:
            with hub.lock:
                failed = [st.error for st in initial if st.error is not None]
                if hub.opts.on_fail == "end":
                    failed = []  # the failed streams end; the others go on
                if failed or not any(st.state == "opening" for st in initial):
                    break
                waiter = self._waiter_locked(loop)
            await waiter
        if failed:
            await self.aclose()
            first = failed[0]
            for other in failed[1:]:
                first.add_note(f"also: {other}")
            raise first

    async def aclose(self) -> None:
        """Stop the reader threads and wait (without blocking the loop) until they exited.

        A reader busy in a blocking OpenCV call finishes it first: at most ``read_timeout``
        (``open_timeout`` while connecting) for a network stream. Ends every :meth:`events`
        iterator once the last events were delivered. Safe to call more than once, and from
        another task than the one iterating (which then ends).
        """
        hub = self._hub
        if self._state == "new":
            self._state = "closed"
            hub.events_over = True
            return
        if self._state == "closed":
            return
        self._state = "closed"
        if hub.watchdog is not None:
            hub.watchdog.cancel()
            hub.watchdog = None
        hub.stop_all()
        with hub.lock:
            streams = list(hub.streams)
            for st in streams:
                st.space.notify_all()
            hub.wake_locked()  # a consumer waiting in another task ends
        cancelled = False
        for st in streams:
            try:
                await self._join(st)
            except asyncio.CancelledError:
                cancelled = True  # wait for the other threads too, then re-raise
        hub.end_events()
        if cancelled:
            raise asyncio.CancelledError

    async def __aenter__(self) -> VideoSource:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __del__(self, _warn: Any = warnings.warn) -> None:
        hub = getattr(self, "_hub", None)
        if hub is not None and getattr(self, "_state", None) == "running" and not hub.stop.is_set():
            hub.stop_all()  # the readers see it within _WAIT_SLICE (or a read timeout)
            _warn(
                f"unclosed {self!r}: close it with `await source.aclose()` or `async with`",
                ResourceWarning,
                source=self,
            )

    def __repr__(self) -> str:
        return f"<VideoSource {', '.join(self.streams)} ({self._state})>"


class _Events:
    """The iterator :meth:`VideoSource.events` returns (subscribed when made)."""

    def __init__(self, hub: Hub) -> None:
        self._hub = hub
        self._sub = Subscriber()
        if hub.events_over:
            self._done = True
        else:
            self._done = False
            hub.subscribers.append(self._sub)

    def __aiter__(self) -> _Events:
        return self

    async def __anext__(self) -> StreamEvent:
        sub = self._sub
        while not sub.events:
            if self._done or self._hub.events_over:
                self._leave()
                raise StopAsyncIteration
            sub.waiter = asyncio.get_running_loop().create_future()
            await sub.waiter
        return sub.events.popleft()

    async def aclose(self) -> None:
        """Stop listening."""
        self._leave()

    def _leave(self) -> None:
        self._done = True
        if self._sub in self._hub.subscribers:
            self._hub.subscribers.remove(self._sub)


# -- construction -----------------------------------------------------------------------------


def _classify(source: object) -> tuple[str, str | int, Kind]:
    if isinstance(source, bool) or not isinstance(source, str | os.PathLike | int):
        msg = (
            "video_source: a source must be a path, a URL or a camera index (int or '0'), "
            f"got {source!r} ({type(source).__name__})"
        )
        raise GraphError(msg)
    if isinstance(source, int):
        return str(source), source, "camera"
    text = os.fspath(source)
    if not isinstance(text, str):
        msg = f"video_source: a path must be text, got {text!r}"
        raise GraphError(msg)
    if text.strip().isdigit():
        return text, int(text.strip()), "camera"
    if "://" in text:
        scheme = urlsplit(text).scheme.lower()
        if scheme == "file":
            return text, urlsplit(text).path, "path"
        return text, text, "url"
    if text.startswith("/dev/video"):
        return text, text, "camera"
    return text, str(Path(text).expanduser()), "path"


def _derive_id(uri: str, target: str | int, kind: Kind) -> str:
    if kind == "camera":
        name = f"camera{target}" if isinstance(target, int) else Path(str(target)).name
    elif kind == "url":
        parts = urlsplit(uri)
        segments = [s for s in parts.path.split("/") if s]
        name = Path(segments[-1]).stem if segments else (parts.hostname or "")
    else:
        path = Path(str(target))
        name = path.stem or path.name or Path(os.path.abspath(path)).name
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "video"


def _number(option: str, value: object, *, minimum: float, allow_zero: bool = False) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < minimum
        or (value == minimum and not allow_zero)
    ):
        rel = ">=" if allow_zero else ">"
        msg = f"video_source: option {option!r} must be a number {rel} {minimum:g}, got {value!r}"
        raise GraphError(msg)
    return float(value)


def _index(option: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        msg = f"video_source: option {option!r} must be an int >= {minimum}, got {value!r}"
        raise GraphError(msg)
    return value


def _spec(source: object, name: str | None, live: bool | None, taken: set[str]) -> Spec:
    """The spec of one stream: its id (``name``, or derived and made unique against
    ``taken``) and whether it is read live."""
    uri, target, kind = _classify(source)
    if name is None:
        base = _derive_id(uri, target, kind)
        stream, n = base, 1
        while stream in taken:
            n += 1
            stream = f"{base}-{n}"
    else:
        if not isinstance(name, str) or not name:
            msg = f"video_source: stream ids must be non-empty strings, got {name!r}"
            raise GraphError(msg)
        if name in taken:
            msg = f"video_source: there is already a stream {name!r}"
            raise ValueError(msg)
        stream = name
    if live is not None:
        is_live = live
    elif kind == "url":
        is_live = urlsplit(uri).scheme.lower() in _LIVE_SCHEMES
    else:
        is_live = kind == "camera"
    return Spec(stream, uri, target, kind, is_live)


def video_source(
    uri_or_list: SourceLike | Sequence[SourceLike] | Mapping[str, SourceLike],
    *,
    live: bool | None = None,
    buffer: int | None = None,
    realtime: bool = False,
    fps: float | None = None,
    resize: tuple[int, int] | None = None,
    start: int = 0,
    stop: int | None = None,
    reconnect: Retry | None = DEFAULT_RECONNECT,
    open_timeout: float = 10.0,
    read_timeout: float = 10.0,
    image_fps: float = 25.0,
    stall_after: float | None = None,
    on_status: StatusCallback | None = None,
    on_fail: Literal["raise", "end"] = "raise",
) -> VideoSource:
    """Frames from video files, image folders, cameras and network streams.

    Args:
        uri_or_list: one source, a list of sources (merged into one iteration, each frame
            tagged with its stream id), or a dict ``{stream id: source}``. A source is a video
            file path, an image folder (its image files in natural name order, one frame
            each), an OpenCV image-sequence pattern (``img_%04d.png``), a URL
            (``rtsp://``, ``http://``, ...) or a camera index (``0``, ``"0"``, ``/dev/video0``).
            Stream ids of a list are derived (file stem, folder name, last URL segment,
            ``camera0``) and made unique with ``-2``, ``-3``.
        live: None decides by the source: URLs and cameras are live, files and folders are
            not. True or False overrides for every source. Live: read at the source's pace,
            keep only the newest ``buffer`` frames and count the drops; a lost camera or URL is
            reconnected. Not live: read as fast as the consumer takes frames, never dropping;
            the end of the file ends the stream. A file read live plays at its own speed.
        buffer: frames held per stream: the read-ahead of a file (default 4), the newest frames
            kept of a live stream (default 1).
        realtime: pace files and folders to their frame rate (as if they were cameras) while
            still dropping nothing.
        fps: deliver at most this many frames per second of the stream's clock (its position
            for files, wall-clock time for live streams); the others are skipped undecoded and
            counted as ``skipped``.
        resize: ``(width, height)``: resize every frame (in the reader thread).
        start: the index of the first frame to deliver (earlier frames are read and left out).
        stop: the index at which a stream ends (exclusive), live streams included.
        reconnect: how a lost live stream is reopened: ``af.Retry(attempts, backoff,
            max_backoff)``; ``attempts`` counts the reopenings in a row without a frame before
            the stream fails. None: a lost stream fails at once. A live source that cannot be
            opened at the start fails at once either way.
        open_timeout: seconds to wait for a network stream to open.
        read_timeout: seconds a network stream may stay silent before it counts as lost. It is
            also how long closing can take while a reader waits on a silent stream.
        image_fps: the nominal frame rate of an image folder (for timestamps and pacing).
        stall_after: a watchdog: a running stream that delivers no frame for this many
            seconds turns ``"stalled"`` (an event), and ``"running"`` again with its next
            frame. None (default): no watchdog.
        on_status: called on the event loop with each :class:`StreamEvent` (a stream's
            state changed), as :meth:`VideoSource.events` yields them. Keep it short; what
            it raises is logged, never raised.
        on_fail: what a stream that fails (it cannot be opened, or a live stream was lost
            for good) does to the others. ``"raise"`` (default): the iteration raises its
            :class:`VideoSourceError`, at the start or when the failure comes, and every
            stream stops (a pipeline reading it fails). ``"end"``: the stream ends as a file
            does, after the frames it read, with an ``af.EndOfKey`` of its id if it
            delivered any (keyed blocks end its state), and the others go on: many cameras
            where one may be down. Its ``"failed"`` event (``on_status=``, :meth:`events`)
            carries the error, and ``statistics()`` keeps it in state ``"failed"``; the
            iteration ends once every stream ended or failed, and never raises for one.
            A stream :meth:`VideoSource.add` cannot open raises there either way.

    Returns:
        A :class:`VideoSource` (an async iterator of :class:`Frame`, with ``statistics()``).
        The merged iteration ends once every stream ended; a live stream ends only at
        ``stop=``, so with one the iteration runs until closed.

    Raises:
        GraphError: a bad option, or no sources (at once).
        VideoSourceError: (from the iteration, with ``on_fail="raise"``) a source cannot be
            opened (at the first ``__anext__``), or a live source was lost for good. It names
            the source.

    >>> import aioflow as af
    >>> from aioflow.io.video import video_source
    >>> async def count(path: str) -> int:
    ...     return len(await af.Pipeline(lambda frame: frame.index).run(video_source(path)))
    """
    # Checked at run time too: scripts call this without a type checker.
    given: object = uri_or_list
    if isinstance(given, str | os.PathLike | int):
        items: list[tuple[str | None, object]] = [(None, given)]
    elif isinstance(given, Mapping):
        items = list(given.items())
        for key, _ in items:
            if not isinstance(key, str) or not key:
                msg = f"video_source: stream ids must be non-empty strings, got {key!r}"
                raise GraphError(msg)
    elif isinstance(given, Sequence):
        items = [(None, v) for v in given]
    else:
        msg = (
            "video_source: expected a source, a list of sources or a dict {stream id: source}, "
            f"got {given!r}"
        )
        raise GraphError(msg)
    if not items:
        msg = "video_source: no sources given"
        raise GraphError(msg)
    flags: dict[str, object] = {"live": live, "realtime": realtime}
    for option, value in flags.items():
        if not (isinstance(value, bool) or (option == "live" and value is None)):
            expected = "None, True or False" if option == "live" else "True or False"
            msg = f"video_source: option {option!r} must be {expected}, got {value!r}"
            raise GraphError(msg)
    if buffer is not None:
        _index("buffer", buffer, 1)
    if fps is not None:
        _number("fps", fps, minimum=0)
    size: object = resize
    if size is not None and (
        not isinstance(size, tuple)
        or len(size) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)
    ):
        msg = f"video_source: option 'resize' must be (width, height) in pixels, got {size!r}"
        raise GraphError(msg)
    _index("start", start, 0)
    if stop is not None and _index("stop", stop, 0) <= start:
        msg = f"video_source: option 'stop' must be greater than start={start}, got {stop}"
        raise GraphError(msg)
    policy: object = reconnect
    if policy is not None and not isinstance(policy, Retry):
        msg = (
            "video_source: option 'reconnect' must be None or af.Retry(attempts, backoff), "
            f"got {policy!r}"
        )
        raise GraphError(msg)
    opts = Options(
        buffer=buffer,
        realtime=realtime,
        fps=fps,
        resize=resize,
        start=start,
        stop=stop,
        reconnect=reconnect,
        open_timeout=_number("open_timeout", open_timeout, minimum=0),
        read_timeout=_number("read_timeout", read_timeout, minimum=0),
        image_fps=_number("image_fps", image_fps, minimum=0),
        stall_after=None if stall_after is None else _number("stall_after", stall_after, minimum=0),
        on_fail=on_fail,
    )
    if on_fail not in ("raise", "end"):
        msg = f"video_source: option 'on_fail' must be 'raise' or 'end', got {on_fail!r}"
        raise GraphError(msg)
    callback: object = on_status
    if callback is not None and not callable(callback):
        msg = f"video_source: option 'on_status' must be None or a callable, got {on_status!r}"
        raise GraphError(msg)
    specs: list[Spec] = []
    named = {k for k, _ in items if k is not None}
    taken: set[str] = set()
    for given, source in items:
        spec = _spec(source, given, live, taken | (named if given is None else set()))
        taken.add(spec.stream)
        specs.append(spec)
    return VideoSource(specs, opts, live=live, on_status=on_status)
