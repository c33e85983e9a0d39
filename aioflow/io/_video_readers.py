"""The reader threads behind :func:`aioflow.io.video.video_source` (private).

One thread per stream opens the source (a file or network stream through ``cv2.VideoCapture``,
or an image folder), decodes frames and hands them to the consumer through the stream's small
buffer in :class:`Hub`. Everything the threads share with the consumer is guarded by the hub's
one lock, held only for buffer and counter updates, never across decoding or waiting, so the
event loop that takes frames never waits on a decode.

- not live: a full buffer makes the reader wait (backpressure), nothing is dropped;
- live: the buffer keeps the newest frames, dropping (and counting) the oldest; a lost camera or
  network stream is reopened with backoff (``af.Retry``) until it gives up with a
  :class:`VideoSourceError` naming it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, cast

import numpy as np

try:
    import cv2
except ImportError as exc:  # pragma: no cover - depends on the environment
    msg = "aioflow.io.video needs OpenCV: pip install aioflow[cv]"
    raise ImportError(msg) from exc

from .. import EndOfKey, Retry
from ._video_frame import Frame, Image, VideoSourceError

__all__ = [
    "ALIVE",
    "DEFAULT_RECONNECT",
    "IMAGE_EXTENSIONS",
    "Hub",
    "Kind",
    "Options",
    "Spec",
    "StatusCallback",
    "Stream",
    "StreamEvent",
    "StreamState",
    "StreamStatistics",
    "Subscriber",
    "read_stream",
]

StreamState = Literal[
    "idle",
    "opening",
    "running",
    "stalled",
    "reconnecting",
    "ended",
    "failed",
    "removed",
    "closed",
]

DEFAULT_RECONNECT = Retry(attempts=10, backoff=0.5, max_backoff=10.0)
"""Reconnect a lost live stream up to 10 times in a row, waiting 0.5 s, 1 s, 2 s ... 10 s."""

IMAGE_EXTENSIONS = frozenset(
    {".bmp", ".jpeg", ".jpg", ".jp2", ".pbm", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp"}
)
"""The file extensions (lower case) an image folder is read for; other files are ignored."""

Kind = Literal["path", "camera", "url"]
logger = logging.getLogger("aioflow")
ALIVE = ("opening", "running", "stalled", "reconnecting")
_RATE_WINDOW = 5.0  # seconds of recent frames the live rates (fps_read, fps_emitted) cover
_EVENTS_KEPT = 1024  # events an events() iterator holds for a consumer that falls behind
_WAIT_SLICE = 0.5  # a reader waiting for room re-checks `stop` this often (a collected source)
# A file that ends this far before the frame count its header declares is truncated: more than
# 2 frames and more than 2% short (some containers only estimate the count, from the duration).
_SHORT_FRAMES = 2
_SHORT_FRACTION = 0.02


@dataclass(frozen=True, slots=True)
class StreamStatistics:
    """What one stream of a :class:`VideoSource` did so far.

    Attributes:
        stream: the stream id.
        uri: the source as given.
        live: whether it is read live (newest frames kept, the rest dropped).
        state: ``"idle"`` (not started), ``"opening"``, ``"running"``, ``"stalled"`` (running,
            but no frame for ``stall_after`` seconds), ``"reconnecting"``, ``"ended"`` (end of
            file, or ``stop=``), ``"failed"``, ``"removed"`` (by ``source.remove()``),
            ``"closed"``.
        read: frames taken from the source (from ``start=`` on).
        emitted: frames handed to the consumer.
        dropped: live frames discarded because newer ones came before the consumer took them.
        skipped: frames left out by ``fps=``.
        buffered: frames waiting in the buffer.
        reconnects: successful reconnections of a lost live stream.
        truncated: the file ended well before the frame count its header declares (cut short
            or damaged); the frames that could be read were delivered, and a warning was
            logged on the ``"aioflow"`` logger with both numbers.
        unreadable: files of an image folder that do not decode as images (damaged, cut
            short, not images): each left out with a warning naming it, the stream going on.
        fps_read: frames read per second over the last few seconds (0.0 when none came).
        fps_emitted: frames handed to the consumer per second, likewise.
        frame_age: seconds since the newest frame was read (None before the first).

    The books balance: ``read == emitted + dropped + skipped + unreadable + buffered``.
    (Frames still buffered when a stream is removed are counted as dropped.)
    """

    stream: str
    uri: str
    live: bool
    state: StreamState
    read: int
    emitted: int
    dropped: int
    skipped: int
    buffered: int
    reconnects: int
    truncated: bool
    fps_read: float = 0.0
    fps_emitted: float = 0.0
    frame_age: float | None = None
    unreadable: int = 0


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """A change of one stream's state, with its figures at that moment.

    Delivered by ``source.events()`` and to ``video_source(..., on_status=)``.

    Attributes:
        stream: the stream id.
        state: the new state: ``"opening"``, ``"running"``, ``"stalled"``, ``"reconnecting"``,
            ``"ended"``, ``"failed"``, ``"removed"`` or ``"closed"``.
        previous: the state before.
        time: when it changed (``time.time()``).
        statistics: the stream's :class:`StreamStatistics` then (rates, drops, reconnects,
            frame age).
        error: with ``"failed"``: the :class:`VideoSourceError`; otherwise None.
    """

    stream: str
    state: StreamState
    previous: StreamState
    time: float
    statistics: StreamStatistics
    error: VideoSourceError | None = None


@dataclass(frozen=True, slots=True)
class Options:
    buffer: int | None
    realtime: bool
    fps: float | None
    resize: tuple[int, int] | None
    start: int
    stop: int | None
    reconnect: Retry | None
    open_timeout: float
    read_timeout: float
    image_fps: float
    stall_after: float | None = None
    on_fail: Literal["raise", "end"] = "raise"


@dataclass(frozen=True, slots=True)
class Spec:
    stream: str
    uri: str
    target: str | int
    kind: Kind
    live: bool

    @property
    def native_live(self) -> bool:
        """A camera or network stream read live: it reconnects and is stamped by the clock."""
        return self.live and self.kind != "path"


# -- captures: one opened source, read in its reader thread ----------------------------------


class _Capture(Protocol):
    meta: dict[str, Any]

    def grab(self) -> bool: ...
    def position(self, index: int) -> float: ...
    def retrieve(self) -> tuple[Image | None, dict[str, Any]]: ...
    def release(self) -> None: ...


def _as_bgr(image: Any) -> Image:
    img = cast(Image, image)
    if img.ndim == 2:
        return cast(Image, cv2.cvtColor(img, cv2.COLOR_GRAY2BGR))
    if img.shape[2] == 4:
        return cast(Image, cv2.cvtColor(img, cv2.COLOR_BGRA2BGR))
    return img


def _positive(value: float) -> float | None:
    return value if math.isfinite(value) and value > 0 else None


class _CvCapture:
    """A file, camera or network stream through ``cv2.VideoCapture``."""

    def __init__(self, cap: cv2.VideoCapture, spec: Spec) -> None:
        self.cap = cap
        self.fps = _positive(cap.get(cv2.CAP_PROP_FPS))
        count = _positive(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        self.meta = {
            "uri": spec.uri,
            "fps": self.fps,
            "width": int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
            "height": int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
            "live": spec.live,
            "frame_count": int(count) if count is not None and spec.kind == "path" else None,
        }
        self.last = -math.inf

    def grab(self) -> bool:
        return bool(self.cap.grab())

    def position(self, index: int) -> float:
        # The container's timestamp of the grabbed frame; where it is missing or goes backwards
        # (some streams report 0 throughout), the nominal one.
        seconds = self.cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
        if not (math.isfinite(seconds) and seconds > self.last):
            seconds = index / self.fps if self.fps else float(index)
        self.last = seconds
        return seconds

    def retrieve(self) -> tuple[Image | None, dict[str, Any]]:
        ok, image = self.cap.retrieve()
        return (_as_bgr(image) if ok and image is not None else None), {}

    def release(self) -> None:
        self.cap.release()


def _natural_key(path: Path) -> list[Any]:
    # frame2.png before frame10.png; ties broken by the plain name, so the order is total.
    parts = re.split(r"(\d+)", path.name)
    return [(0, int(p), p) if p.isdigit() else (1, 0, p) for p in parts]


#: ``retrieve()``'s extra for a file of an image folder that does not decode: why
_UNREADABLE = "unreadable"


class _FolderCapture:
    """The image files of a folder, in natural name order, as the frames of a stream."""

    def __init__(self, spec: Spec, files: list[Path], fps: float) -> None:
        self.spec = spec
        self.files = files
        self.fps = fps
        self.pos = -1
        self.meta = {
            "uri": spec.uri,
            "fps": fps,
            "width": None,
            "height": None,
            "live": spec.live,
            "frame_count": len(files),
        }

    def grab(self) -> bool:
        self.pos += 1
        return self.pos < len(self.files)

    def position(self, index: int) -> float:
        return index / self.fps

    def retrieve(self) -> tuple[Image | None, dict[str, Any]]:
        path = self.files[self.pos]
        try:
            image = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_COLOR)
        except (OSError, cv2.error) as err:  # gone meanwhile, unreadable, or OpenCV refused it
            return None, {"path": str(path), _UNREADABLE: f"{type(err).__name__}: {err}"}
        if image is None:
            return None, {"path": str(path), _UNREADABLE: "it does not decode as an image"}
        img = _as_bgr(image)
        return img, {"path": str(path), "width": img.shape[1], "height": img.shape[0]}

    def release(self) -> None:
        self.files = []


def _open(spec: Spec, opts: Options) -> _Capture:
    """Open one source (in its reader thread). Raises VideoSourceError naming it."""

    def fail(reason: str) -> VideoSourceError:
        return VideoSourceError(spec.uri, spec.stream, reason)

    try:
        if spec.kind == "url":
            params = [
                cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
                round(opts.open_timeout * 1000),
                cv2.CAP_PROP_READ_TIMEOUT_MSEC,
                round(opts.read_timeout * 1000),
            ]
            cap = cv2.VideoCapture(str(spec.target), cv2.CAP_FFMPEG, params)
            reason = f"cannot connect, or no video there (open timeout {opts.open_timeout:g} s)"
        elif spec.kind == "camera":
            cap = cv2.VideoCapture(spec.target)  # an index, or a device path
            reason = "no camera there, or it is busy"
        else:
            path = Path(str(spec.target))
            if path.is_dir():
                files = sorted(
                    (p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS),
                    key=_natural_key,
                )
                if not files:
                    exts = ", ".join(sorted(IMAGE_EXTENSIONS))
                    raise fail(f"the folder holds no image files ({exts})")
                return _FolderCapture(spec, files, opts.image_fps)
            if not path.exists() and "%" not in path.name:  # `img_%04d.png`: OpenCV's sequences
                raise fail("no such file or folder")
            cap = cv2.VideoCapture(str(path))
            reason = "OpenCV cannot open it as a video (unknown format, or no decoder for it)"
    except cv2.error as exc:
        raise fail(f"OpenCV failed to open it: {str(exc).strip()}") from exc
    if not cap.isOpened():
        cap.release()
        raise fail(reason)
    return _CvCapture(cap, spec)


# -- the reader thread ------------------------------------------------------------------------


def _rate(times: deque[float], now: float) -> float:
    """Frames per second over the recent ``times`` (monotonic), 0.0 when none are recent."""
    while times and now - times[0] > _RATE_WINDOW:
        times.popleft()
    if len(times) < 2:
        return 0.0
    span = max(now - times[0], times[-1] - times[0])
    return (len(times) - 1) / span if span > 0 else 0.0


class Stream:
    """One stream's buffer, state and counters; shared by its reader thread and the consumer
    under the hub's lock.

    ``frames`` holds ``(seq, Frame)`` in reading order, and at the end of a removed stream an
    ``(seq, EndOfKey)`` that the consumer hands on as the stream's last entry."""

    def __init__(self, spec: Spec, capacity: int, lock: threading.Lock) -> None:
        self.spec = spec
        self.capacity = capacity
        self.frames: deque[tuple[int, Frame | EndOfKey]] = deque()
        self.space = threading.Condition(lock)
        #: this stream's reader stops (closing the source sets every stream's)
        self.stop = threading.Event()
        self.state: StreamState = "idle"
        self.error: VideoSourceError | None = None
        self.read = self.emitted = self.dropped = self.skipped = self.reconnects = 0
        self.truncated = False
        self.unreadable = 0
        #: remove() was asked for it; added by add() and still opening (its failure is
        #: add()'s to raise, not the iteration's)
        self.removed = False
        self.adding = False
        self.ended_by_failure = False  # on_fail="end": its EndOfKey went out
        self.thread: threading.Thread | None = None
        self.exited: asyncio.Future[None] | None = None
        #: monotonic times of recent frames read and emitted (the live rates), of the newest
        #: frame read, and since when the stream is quiet (the watchdog)
        self.read_times: deque[float] = deque()
        self.emit_times: deque[float] = deque()
        self.last_read: float | None = None
        self.quiet_since = time.monotonic()

    def statistics(self) -> StreamStatistics:
        spec = self.spec
        now = time.monotonic()
        return StreamStatistics(
            stream=spec.stream,
            uri=spec.uri,
            live=spec.live,
            state=self.state,
            read=self.read,
            emitted=self.emitted,
            dropped=self.dropped,
            skipped=self.skipped,
            buffered=sum(1 for _, f in self.frames if isinstance(f, Frame)),
            reconnects=self.reconnects,
            truncated=self.truncated,
            fps_read=_rate(self.read_times, now),
            fps_emitted=_rate(self.emit_times, now),
            frame_age=None if self.last_read is None else now - self.last_read,
            unreadable=self.unreadable,
        )


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


StatusCallback = Callable[[StreamEvent], object]


class Subscriber:
    """One ``events()`` iterator: its events (the newest ``_EVENTS_KEPT``) and its waiter."""

    def __init__(self) -> None:
        self.events: deque[StreamEvent] = deque(maxlen=_EVENTS_KEPT)
        self.waiter: asyncio.Future[None] | None = None
        self.lost = 0  # events dropped because the consumer fell behind

    def push(self, event: StreamEvent) -> None:
        if len(self.events) == self.events.maxlen:
            self.lost += 1
        self.events.append(event)
        waiter, self.waiter = self.waiter, None
        if waiter is not None:
            _resolve(waiter)


class Hub:
    """What the reader threads and the consumer share. The threads hold this, never the
    :class:`VideoSource`, so a forgotten source can be collected (and then stops them)."""

    def __init__(
        self, specs: list[Spec], opts: Options, on_status: StatusCallback | None = None
    ) -> None:
        self.opts = opts
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.streams = [self.new_stream(spec) for spec in specs]
        self.loop: asyncio.AbstractEventLoop | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.seq = 0
        # Status events: made under the lock (in any thread), delivered on the loop.
        self.on_status = on_status
        self.subscribers: list[Subscriber] = []
        self.pending: list[StreamEvent] = []
        self.dispatching = False
        self.events_over = False
        self.watchdog: asyncio.TimerHandle | None = None

    def new_stream(self, spec: Spec) -> Stream:
        return Stream(spec, self.opts.buffer or (1 if spec.live else 4), self.lock)

    def stop_all(self) -> None:
        """Stop every reader (lock-free: also from ``__del__``)."""
        self.stop.set()
        for st in list(self.streams):
            st.stop.set()

    def wake_locked(self) -> None:
        """Wake the consumer if it waits (call with the lock held)."""
        waiter, self.waiter = self.waiter, None
        if waiter is not None and self.loop is not None:
            self._call(_resolve, waiter)

    def _call(self, fn: Any, *args: Any) -> None:
        assert self.loop is not None
        try:
            self.loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop is closed: nobody waits any more
            pass

    # -- status events ------------------------------------------------------------------------

    def set_state_locked(
        self, st: Stream, state: StreamState, error: VideoSourceError | None = None
    ) -> None:
        """Change a stream's state and publish the event (call with the lock held)."""
        previous = st.state
        if previous == state:
            return
        st.state = state
        if state in ("running", "stalled"):
            st.quiet_since = time.monotonic()
        if not (self.on_status is not None or self.subscribers):
            return
        event = StreamEvent(st.spec.stream, state, previous, time.time(), st.statistics(), error)
        self.pending.append(event)
        if not self.dispatching and self.loop is not None:
            self.dispatching = True
            self._call(self.dispatch)

    def dispatch(self) -> None:
        """Deliver the pending events, in order (on the loop)."""
        with self.lock:
            events, self.pending = self.pending, []
            self.dispatching = False
        callback = self.on_status
        for event in events:
            for sub in self.subscribers:
                sub.push(event)
            if callback is not None:
                try:
                    callback(event)
                except Exception:  # a broken callback must not stop the stream
                    logger.exception(
                        "video source: on_status callback failed on %r (%s)",
                        event.stream,
                        event.state,
                        extra={"stream": event.stream},
                    )

    def end_events(self) -> None:
        """The source closed: deliver what is left, then end every events() iterator."""
        self.dispatch()
        self.events_over = True
        for sub in self.subscribers:
            waiter, sub.waiter = sub.waiter, None
            if waiter is not None:
                _resolve(waiter)

    def watch(self) -> None:
        """The watchdog's tick (on the loop): a running stream with no frame for
        ``stall_after`` seconds turns ``"stalled"`` (it turns ``"running"`` again with its
        next frame)."""
        limit = self.opts.stall_after
        loop = self.loop
        if limit is None or loop is None or self.stop.is_set():
            return
        now = time.monotonic()
        with self.lock:
            for st in self.streams:
                if not st.spec.live and len(st.frames) >= st.capacity:
                    st.quiet_since = now  # a file waiting for the consumer is not silent
                elif st.state == "running" and now - st.quiet_since >= limit:
                    self.set_state_locked(st, "stalled")
        self.watchdog = loop.call_later(min(limit / 4, 1.0), self.watch)

    # -- called by the reader threads ---------------------------------------------------------

    def fail(self, st: Stream, err: VideoSourceError) -> None:
        with self.lock:
            st.error = err
            self.set_state_locked(st, "failed", err)
            self.wake_locked()

    def put(self, st: Stream, frame: Frame) -> bool:
        """Hand a frame to the consumer; False when the stream is stopping."""
        with self.lock:
            if st.spec.live:
                if len(st.frames) >= st.capacity:
                    st.frames.popleft()
                    st.dropped += 1
            else:
                while len(st.frames) >= st.capacity and not st.stop.is_set():
                    st.space.wait(_WAIT_SLICE)
            if st.stop.is_set():
                return False
            st.read += 1
            now = time.monotonic()
            st.read_times.append(now)
            st.last_read = st.quiet_since = now
            if st.state == "stalled":
                self.set_state_locked(st, "running")
            self.seq += 1
            st.frames.append((self.seq, frame))
            self.wake_locked()
            return True

    def exited(self, st: Stream) -> None:
        with self.lock:
            if st.state in ALIVE:
                if st.removed:
                    state: StreamState = "removed"
                elif st.stop.is_set():
                    state = "closed"
                else:
                    state = "ended"
                self.set_state_locked(st, state)
            self.wake_locked()
            if st.exited is not None:
                self._call(_resolve, st.exited)


def read_stream(hub: Hub, st: Stream) -> None:
    """The body of a stream's reader thread: open, read until the end, report."""
    spec = st.spec
    try:
        cap = _open(spec, hub.opts)
        with hub.lock:
            hub.set_state_locked(st, "running")
            hub.wake_locked()
        _pump(hub, st, cap)
    except VideoSourceError as err:
        hub.fail(st, err)
    except Exception as exc:  # an OpenCV error mid-stream: the consumer must hear of it
        reason = f"reading failed: {type(exc).__name__}: {exc}"
        failure = VideoSourceError(spec.uri, spec.stream, reason)
        failure.__cause__ = exc
        hub.fail(st, failure)
    finally:
        hub.exited(st)


def _pump(hub: Hub, st: Stream, cap: _Capture) -> None:
    """Read frames into the stream's buffer until the end, ``stop=``, or the source closes.
    Releases the capture (and any that replaced it on reconnection) however it ends."""
    held = [cap]  # the capture to release at the end (none while reconnecting)
    try:
        _read_frames(hub, st, held)
    finally:
        for c in held:
            c.release()


def _read_frames(hub: Hub, st: Stream, held: list[_Capture]) -> None:
    cap = held[0]
    opts = hub.opts
    spec = st.spec
    native = spec.native_live
    pace = opts.realtime or (spec.live and not native)  # a file read "live" plays at its speed
    period = 1.0 / opts.fps if opts.fps else None
    due = -math.inf
    origin: tuple[float, float] | None = None  # (stream time, monotonic time) of the first frame
    meta = cap.meta
    index = 0
    failures = 0  # reconnection attempts since the last frame
    grabbed = False
    stopping = st.stop
    while not stopping.is_set():
        if opts.stop is not None and index >= opts.stop:
            return
        image: Image | None = None
        extra: dict[str, Any] = {}
        ok = cap.grab()
        if ok and index >= opts.start:
            stamp = time.time() if native else cap.position(index)
            clock = time.monotonic() if native else stamp
            if period is not None and clock + 1e-6 < due:
                with hub.lock:
                    st.read += 1
                    st.skipped += 1
                    st.last_read = st.quiet_since = time.monotonic()
                index += 1
                grabbed = True
                failures = 0
                continue
            image, extra = cap.retrieve()
            ok = image is not None
            if not ok and _UNREADABLE in extra:
                # A damaged file among a folder's images: left out, counted, and named.
                logger.warning(
                    "video source %r (stream %r): left out %s: %s",
                    spec.uri,
                    spec.stream,
                    extra.get("path"),
                    extra[_UNREADABLE],
                    extra={"stream": spec.stream, "path": extra.get("path")},
                )
                with hub.lock:
                    st.read += 1
                    st.unreadable += 1
                    st.last_read = st.quiet_since = time.monotonic()
                index += 1
                continue
        if not ok:
            if not native:
                if not grabbed:
                    raise VideoSourceError(spec.uri, spec.stream, "opened, but no frame decodes")
                _check_complete(hub, st, index, meta.get("frame_count"))
                return
            held.clear()  # _reconnect releases it
            reopened = _reconnect(hub, st, cap, failures)
            if reopened is None:
                return
            cap, failures = reopened
            held.append(cap)
            meta = cap.meta
            continue
        grabbed = True
        failures = 0
        i = index
        index += 1
        if image is None:  # a frame before `start=`: grabbed, not decoded
            continue
        if period is not None:
            due = clock + period if due + period <= clock else due + period
        if opts.resize is not None and (image.shape[1], image.shape[0]) != opts.resize:
            w, h = opts.resize
            shrink = w * h < image.shape[0] * image.shape[1]
            interp = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
            image = cast(Image, cv2.resize(image, opts.resize, interpolation=interp))
        if pace:
            now = time.monotonic()
            if origin is None:
                origin = (stamp, now)
            elif stopping.wait(max(0.0, origin[1] + (stamp - origin[0]) - now)):
                return
        info = dict(meta)
        if extra:
            info.update(extra)
        if not hub.put(st, Frame(image, spec.stream, i, stamp, info)):
            return


def _check_complete(hub: Hub, st: Stream, frames: int, declared: int | None) -> None:
    """At the end of a file: warn, and flag the stream, if it ended well before the frame count
    its header declares (a file cut short, or damaged part way)."""
    if declared is None or declared - frames <= max(_SHORT_FRAMES, declared * _SHORT_FRACTION):
        return
    with hub.lock:
        st.truncated = True
    spec = st.spec
    logger.warning(
        "video source %r (stream %r): the file ended after %d of the %d frames it declares: "
        "it is truncated or damaged, and the stream ends there",
        spec.uri,
        spec.stream,
        frames,
        declared,
        extra={"stream": spec.stream, "frames_read": frames, "frames_declared": declared},
    )


def _reconnect(hub: Hub, st: Stream, cap: _Capture, failures: int) -> tuple[_Capture, int] | None:
    """Reopen a lost live stream with backoff. Returns the new capture and the attempt count,
    None when the source is closing; raises VideoSourceError when it gives up."""
    spec = st.spec
    policy = hub.opts.reconnect
    cap.release()
    if policy is None:
        raise VideoSourceError(spec.uri, spec.stream, "the stream ended (reconnect=None)")
    with hub.lock:
        hub.set_state_locked(st, "reconnecting")
    last = "the stream ended"
    while failures < policy.attempts:
        failures += 1
        if st.stop.wait(policy.delay(failures)):
            return None
        try:
            new = _open(spec, hub.opts)
        except VideoSourceError as err:
            last = err.reason
            continue
        with hub.lock:
            st.reconnects += 1
            hub.set_state_locked(st, "running")
        return new, failures
    reason = f"lost, and {policy.attempts} reconnection attempts in a row failed (last: {last})"
    raise VideoSourceError(spec.uri, spec.stream, reason)
