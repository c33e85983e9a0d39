"""The :class:`Frame` record that video sources emit, and the video errors.

Kept apart from the OpenCV code so that a frame (or an error about one) can be made, pickled and
inspected without OpenCV. The public names are re-exported by :mod:`aioflow.io.video`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from .. import AioflowError
from ..wire import register, register_variant

__all__ = ["Frame", "Image", "VideoError", "VideoSourceError", "VideoWriterError"]

Image = npt.NDArray[np.uint8]
"""An image as OpenCV holds it: ``(height, width, 3)`` uint8, channels in BGR order."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded video frame and where it came from.

    Attributes:
        image: the pixels, ``(height, width, 3)`` uint8 in BGR order (OpenCV's layout).
        stream: the id of the stream the frame belongs to (``"cam1"``, a file's stem, ...).
        index: the 0-based position of the frame in its stream. Frames a live source dropped
            (stale) or skipped (``fps=``) leave gaps; a file read from ``start=10`` begins at 10.
        timestamp: seconds. For a file or image folder: the frame's position in the stream
            (from the container's timestamps, else ``index / fps``). For a live source: the
            wall-clock time (``time.time()``) when the frame was captured.
        meta: facts about the stream: ``uri``, ``fps`` (None when unknown), ``width`` and
            ``height`` (of the source, before any ``resize=``), ``live``, ``frame_count``
            (files; None when unknown), and ``path`` for a frame from an image folder.

    The record is frozen; :meth:`replace` and :meth:`with_image` make changed copies for blocks
    that transform frames. ``meta`` is a fresh dict per frame, so changing it affects no other
    frame. Frames pickle (numpy arrays included), so they travel to process blocks.

    >>> import numpy as np
    >>> frame = Frame(np.zeros((2, 3, 3), np.uint8), "cam", 0, 0.0)
    >>> frame.with_image(np.ones((4, 4, 3), np.uint8)).shape
    (4, 4, 3)
    """

    image: Image
    stream: str
    index: int
    timestamp: float
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, ...]:
        """The image's shape, ``(height, width, 3)``."""
        return tuple(self.image.shape)

    @property
    def width(self) -> int:
        """The image's width in pixels."""
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        """The image's height in pixels."""
        return int(self.image.shape[0])

    def replace(self, **changes: Any) -> Frame:
        """A copy with some fields changed: ``frame.replace(stream="left", meta={...})``."""
        return dataclasses.replace(self, **changes)

    def with_image(self, image: Image) -> Frame:
        """A copy with another image (a resized, annotated or filtered one); the rest is kept."""
        return dataclasses.replace(self, image=image)

    def __repr__(self) -> str:
        shape = "x".join(map(str, self.image.shape))
        return (
            f"Frame(stream={self.stream!r}, index={self.index}, "
            f"timestamp={self.timestamp:.3f}, image={shape} {self.image.dtype})"
        )


class VideoError(AioflowError):
    """Base of the errors of :mod:`aioflow.io.video`."""


class VideoSourceError(VideoError):
    """A video source cannot be opened, or a live one was lost and could not be reconnected.

    Attributes:
        uri: the source as given (a path, a URL, a camera index as text).
        stream: the stream id it was given or derived.
        reason: what went wrong, in words.
    """

    def __init__(self, uri: str, stream: str, reason: str) -> None:
        self.uri = uri
        self.stream = stream
        self.reason = reason
        super().__init__(uri, stream, reason)

    def __str__(self) -> str:
        return f"video source {self.uri!r} (stream {self.stream!r}): {self.reason}"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.uri, self.stream, self.reason))


class VideoWriterError(VideoError):
    """A video file cannot be written (no encoder for the fourcc, a path that cannot be made).

    Attributes:
        path: the file.
        stream: the stream whose frames were to go there.
        reason: what went wrong, in words.
    """

    def __init__(self, path: str, stream: str, reason: str) -> None:
        self.path = path
        self.stream = stream
        self.reason = reason
        super().__init__(path, stream, reason)

    def __str__(self) -> str:
        return f"video file {self.path!r} (stream {self.stream!r}): {self.reason}"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.path, self.stream, self.reason))


# Frames travel between processes (the Redis transport) as a tagged record, without pickle.
register(Frame, tag="aioflow.io._video_frame:Frame")


def _jpeg_fields(frame: Frame, options: Mapping[str, Any]) -> dict[str, Any] | None:
    from . import _video_jpeg  # OpenCV, only where frames are written as JPEG

    data = _video_jpeg.encode_image(frame.image, options)
    if data is None:
        return None
    return {
        "jpeg": data,
        "shape": tuple(frame.image.shape),
        "stream": frame.stream,
        "index": frame.index,
        "timestamp": frame.timestamp,
        "meta": frame.meta,
    }


def _from_jpeg(fields: dict[str, Any]) -> Frame:
    from . import _video_jpeg

    shape = fields.pop("shape")
    image = _video_jpeg.decode_image(fields.pop("jpeg"), tuple(shape))
    return Frame(image, **fields)


# ... and, with MsgpackCodec(frames="jpeg"), with their image as JPEG (lossy, ~10x smaller).
register_variant(
    Frame,
    "jpeg",
    tag="aioflow.io._video_frame:Frame.jpeg",
    to_fields=_jpeg_fields,
    from_fields=_from_jpeg,
)
