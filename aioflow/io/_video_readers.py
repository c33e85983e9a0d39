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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, cast

import numpy as np

try:
    import cv2
except ImportError as exc:  # pragma: no cover - depends on the environment
    msg = "aioflow.io.video needs OpenCV: pip install aioflow[cv]"
    raise ImportError(msg) from exc

from .. import Retry
from ._video_frame import Frame, Image, VideoSourceError

__all__ = [
    "ALIVE",
    "DEFAULT_RECONNECT",
    "IMAGE_EXTENSIONS",
    "Hub",
    "Kind",
    "Options",
    "Spec",
    "Stream",
    "StreamState",
    "StreamStatistics",
    "read_stream",
]

StreamState = Literal["idle", "opening", "running", "reconnecting", "ended", "failed", "closed"]

DEFAULT_RECONNECT = Retry(attempts=10, backoff=0.5, max_backoff=10.0)
"""Reconnect a lost live stream up to 10 times in a row, waiting 0.5 s, 1 s, 2 s ... 10 s."""

IMAGE_EXTENSIONS = frozenset(
    {".bmp", ".jpeg", ".jpg", ".jp2", ".pbm", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp"}
)
"""The file extensions (lower case) an image folder is read for; other files are ignored."""

Kind = Literal["path", "camera", "url"]
logger = logging.getLogger("aioflow")
ALIVE = ("opening", "running", "reconnecting")
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
        state: ``"idle"`` (not started), ``"opening"``, ``"running"``, ``"reconnecting"``,
            ``"ended"`` (end of file, or ``stop=``), ``"failed"``, ``"closed"``.
        read: frames taken from the source (from ``start=`` on).
        emitted: frames handed to the consumer.
        dropped: live frames discarded because newer ones came before the consumer took them.
        skipped: frames left out by ``fps=``.
        buffered: frames waiting in the buffer.
        reconnects: successful reconnections of a lost live stream.
        truncated: the file ended well before the frame count its header declares (cut short
            or damaged); the frames that could be read were delivered, and a warning was
            logged on the ``"aioflow"`` logger with both numbers.

    The books balance: ``read == emitted + dropped + skipped + buffered``.
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
        image = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            reason = f"cannot decode image file {str(path)!r}"
            raise VideoSourceError(self.spec.uri, self.spec.stream, reason)
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


class Stream:
    """One stream's buffer, state and counters; shared by its reader thread and the consumer
    under the hub's lock."""

    def __init__(self, spec: Spec, capacity: int, lock: threading.Lock) -> None:
        self.spec = spec
        self.capacity = capacity
        self.frames: deque[tuple[int, Frame]] = deque()
        self.space = threading.Condition(lock)
        self.state: StreamState = "idle"
        self.error: VideoSourceError | None = None
        self.read = self.emitted = self.dropped = self.skipped = self.reconnects = 0
        self.truncated = False
        self.thread: threading.Thread | None = None
        self.exited: asyncio.Future[None] | None = None

    def statistics(self) -> StreamStatistics:
        spec = self.spec
        return StreamStatistics(
            stream=spec.stream,
            uri=spec.uri,
            live=spec.live,
            state=self.state,
            read=self.read,
            emitted=self.emitted,
            dropped=self.dropped,
            skipped=self.skipped,
            buffered=len(self.frames),
            reconnects=self.reconnects,
            truncated=self.truncated,
        )


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class Hub:
    """What the reader threads and the consumer share. The threads hold this, never the
    :class:`VideoSource`, so a forgotten source can be collected (and then stops them)."""

    def __init__(self, specs: list[Spec], opts: Options) -> None:
        self.opts = opts
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.streams = [
            Stream(spec, opts.buffer or (1 if spec.live else 4), self.lock) for spec in specs
        ]
        self.loop: asyncio.AbstractEventLoop | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.seq = 0

    def wake_locked(self) -> None:
        """Wake the consumer if it waits (call with the lock held)."""
        waiter, self.waiter = self.waiter, None
        if waiter is not None and self.loop is not None:
            self._call(_resolve, waiter)

    def _call(self, fn: Any, fut: asyncio.Future[None]) -> None:
        assert self.loop is not None
        try:
            self.loop.call_soon_threadsafe(fn, fut)
        except RuntimeError:  # the loop is closed: nobody waits any more
            pass

    def fail(self, st: Stream, err: VideoSourceError) -> None:
        with self.lock:
            st.error = err
            st.state = "failed"
            self.wake_locked()

    def put(self, st: Stream, frame: Frame) -> bool:
        """Hand a frame to the consumer; False when the source is closing."""
        with self.lock:
            if st.spec.live:
                if len(st.frames) >= st.capacity:
                    st.frames.popleft()
                    st.dropped += 1
            else:
                while len(st.frames) >= st.capacity and not self.stop.is_set():
                    st.space.wait(_WAIT_SLICE)
            if self.stop.is_set():
                return False
            st.read += 1
            self.seq += 1
            st.frames.append((self.seq, frame))
            self.wake_locked()
            return True

    def exited(self, st: Stream) -> None:
        with self.lock:
            if st.state in ALIVE:
                st.state = "closed" if self.stop.is_set() else "ended"
            self.wake_locked()
            if st.exited is not None:
                self._call(_resolve, st.exited)


def read_stream(hub: Hub, st: Stream) -> None:
    """The body of a stream's reader thread: open, read until the end, report."""
    spec = st.spec
    try:
        cap = _open(spec, hub.opts)
        with hub.lock:
            st.state = "running"
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
    stopping = hub.stop
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
                index += 1
                grabbed = True
                failures = 0
                continue
            image, extra = cap.retrieve()
            ok = image is not None
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
        st.state = "reconnecting"
    last = "the stream ended"
    while failures < policy.attempts:
        failures += 1
        if hub.stop.wait(policy.delay(failures)):
            return None
        try:
            new = _open(spec, hub.opts)
        except VideoSourceError as err:
            last = err.reason
            continue
        with hub.lock:
            st.state = "running"
            st.reconnects += 1
        return new, failures
    reason = f"lost, and {policy.attempts} reconnection attempts in a row failed (last: {last})"
    raise VideoSourceError(spec.uri, spec.stream, reason)
