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
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from .. import GraphError, Retry
from ._video_frame import Frame, VideoSourceError
from ._video_readers import (
    DEFAULT_RECONNECT,
    Hub,
    Kind,
    Options,
    Spec,
    Stream,
    StreamStatistics,
    read_stream,
)

__all__ = ["SourceLike", "VideoSource", "video_source"]

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

    ``statistics()`` reports per stream what was read, emitted, dropped and skipped, and how
    often a live stream was reconnected.
    """

    def __init__(self, specs: list[Spec], opts: Options) -> None:
        self._hub = Hub(specs, opts)
        self._state: Literal["new", "running", "closed"] = "new"

    @property
    def streams(self) -> tuple[str, ...]:
        """The stream ids, in the order the sources were given."""
        return tuple(st.spec.stream for st in self._hub.streams)

    @property
    def dropped(self) -> int:
        """Live frames dropped as stale, over all streams."""
        with self._hub.lock:
            return sum(st.dropped for st in self._hub.streams)

    @property
    def reconnects(self) -> int:
        """Successful reconnections of lost live streams, over all streams."""
        with self._hub.lock:
            return sum(st.reconnects for st in self._hub.streams)

    def statistics(self) -> dict[str, StreamStatistics]:
        """``{stream id: StreamStatistics}``, a consistent snapshot."""
        with self._hub.lock:
            return {st.spec.stream: st.statistics() for st in self._hub.streams}

    def __aiter__(self) -> VideoSource:
        return self

    async def __anext__(self) -> Frame:
        hub = self._hub
        if self._state == "new":
            await self._start()
        elif self._state == "closed":
            raise StopAsyncIteration
        loop = hub.loop
        assert loop is not None
        while True:
            with hub.lock:
                item = self._take_locked()
                if item is None:
                    waiter = self._waiter_locked(loop)
            if isinstance(item, Frame):
                return item
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

    def _take_locked(self) -> Frame | VideoSourceError | object | None:
        """The next frame (the one that arrived first, over all streams), the error of a failed
        stream, _END when every stream ended, or None (wait)."""
        best: Stream | None = None
        ended = True
        for st in self._hub.streams:
            if st.frames:
                ended = False
                if best is None or st.frames[0][0] < best.frames[0][0]:
                    best = st
            elif st.error is not None:
                return st.error
            elif st.state != "ended":
                ended = False
        if best is not None:
            frame = best.frames.popleft()[1]
            best.emitted += 1
            best.space.notify()
            return frame
        return _END if ended else None

    async def _start(self) -> None:
        hub = self._hub
        loop = asyncio.get_running_loop()
        hub.loop = loop
        self._state = "running"
        for st in hub.streams:
            st.state = "opening"
            st.exited = loop.create_future()
            st.thread = threading.Thread(
                target=read_stream,
                args=(hub, st),
                name=f"aioflow-video[{st.spec.stream}]",
                daemon=True,
            )
        for st in hub.streams:
            assert st.thread is not None
            st.thread.start()
        # Wait until every stream opened, so that a source that cannot open fails here, at the
        # start, rather than after the others produced frames.
        while True:
            with hub.lock:
                failed = [st.error for st in hub.streams if st.error is not None]
                if failed or not any(st.state == "opening" for st in hub.streams):
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
        (``open_timeout`` while connecting) for a network stream. Safe to call more than once.
        """
        hub = self._hub
        if self._state == "new":
            self._state = "closed"
            return
        self._state = "closed"
        hub.stop.set()
        with hub.lock:
            for st in hub.streams:
                st.space.notify_all()
        cancelled = False
        for st in hub.streams:
            if st.exited is not None:
                try:
                    await wait_through_cancel(st.exited)
                except asyncio.CancelledError:
                    cancelled = True  # wait for the other threads too, then re-raise
            if st.thread is not None:
                st.thread.join()  # it signalled as its last act: this returns at once
        if cancelled:
            raise asyncio.CancelledError

    async def __aenter__(self) -> VideoSource:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __del__(self, _warn: Any = warnings.warn) -> None:
        hub = getattr(self, "_hub", None)
        if hub is not None and getattr(self, "_state", None) == "running" and not hub.stop.is_set():
            hub.stop.set()  # the readers see it within _WAIT_SLICE (or a read timeout)
            _warn(
                f"unclosed {self!r}: close it with `await source.aclose()` or `async with`",
                ResourceWarning,
                source=self,
            )

    def __repr__(self) -> str:
        return f"<VideoSource {', '.join(self.streams)} ({self._state})>"


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

    Returns:
        A :class:`VideoSource` (an async iterator of :class:`Frame`, with ``statistics()``).
        The merged iteration ends once every stream ended; a live stream ends only at
        ``stop=``, so with one the iteration runs until closed.

    Raises:
        GraphError: a bad option, or no sources (at once).
        VideoSourceError: (from the iteration) a source cannot be opened (at the first
            ``__anext__``), or a live source was lost for good. It names the source.

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
    )
    specs: list[Spec] = []
    taken: set[str] = {k for k, _ in items if k is not None}
    for given, source in items:
        uri, target, kind = _classify(source)
        if given is None:
            base = _derive_id(uri, target, kind)
            stream, n = base, 1
            while stream in taken:
                n += 1
                stream = f"{base}-{n}"
        else:
            stream = given
        taken.add(stream)
        if live is not None:
            is_live = live
        elif kind == "url":
            is_live = urlsplit(uri).scheme.lower() in _LIVE_SCHEMES
        else:
            is_live = kind == "camera"
        specs.append(Spec(stream, uri, target, kind, is_live))
    return VideoSource(specs, opts)
