"""Video in and out of pipelines, on OpenCV: sources, writers, JPEG, drawing.

Install with ``pip install aioflow[cv]`` (it brings ``opencv-python-headless``)::

    import aioflow as af
    from aioflow.io import video

    @af.block
    def annotate(frame: video.Frame) -> video.Frame:          # runs in a thread
        return frame.with_image(video.draw_boxes(frame.image, [(10, 10, 60, 40)], ["car"]))

    pipe = af.Pipeline(annotate, video.VideoWriter("out/{stream}.mp4"))
    await pipe.run(video.video_source({"left": "left.mp4", "right": "right.mp4"}))

- :func:`video_source` (an async iterator of :class:`Frame`) reads files, image folders, cameras
  and RTSP/HTTP streams, each decoded in its own thread; live streams keep only the newest
  frames (the drops are counted) and reconnect with backoff.
- :class:`VideoWriter` writes each stream's frames to its own file and passes them on.
- :func:`jpeg_encode` is a thread block from frames (or arrays) to JPEG bytes;
  :func:`encode_jpeg` / :func:`decode_jpeg` are the plain functions.
- :func:`draw_boxes` and :func:`draw_text` annotate images (on a copy, unless ``copy=False``).

Errors: :class:`VideoSourceError` (a source that cannot open or was lost for good; it names the
source) and :class:`VideoWriterError`, both :class:`VideoError`, an :class:`aioflow.AioflowError`.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np

try:
    import cv2
except ImportError as exc:  # pragma: no cover - depends on the environment
    msg = "aioflow.io.video needs OpenCV: pip install aioflow[cv]"
    raise ImportError(msg) from exc

from .. import Block, FunctionBlock, GraphError
from ._video_frame import Frame, Image, VideoError, VideoSourceError, VideoWriterError
from ._video_readers import (
    DEFAULT_RECONNECT,
    IMAGE_EXTENSIONS,
    StreamEvent,
    StreamState,
    StreamStatistics,
)
from ._video_sources import SourceLike, VideoSource, video_source

__all__ = (
    "Color",
    "DEFAULT_RECONNECT",
    "Frame",
    "IMAGE_EXTENSIONS",
    "Image",
    "SourceLike",
    "StreamEvent",
    "StreamState",
    "StreamStatistics",
    "VideoError",
    "VideoSource",
    "VideoSourceError",
    "VideoWriter",
    "VideoWriterError",
    "decode_jpeg",
    "draw_boxes",
    "draw_text",
    "encode_jpeg",
    "jpeg_encode",
    "video_source",
)

Color = tuple[int, int, int]
"""A colour as OpenCV takes it: (blue, green, red), each 0..255."""

Box = Sequence[float]


def _stream_of(frame: Frame) -> str:
    return frame.stream


def _check_image(image: object, what: str) -> Image:
    if not isinstance(image, np.ndarray):
        msg = f"{what}: expected an image (numpy array) or a Frame, got {type(image).__name__}"
        raise TypeError(msg)
    if image.dtype != np.uint8 or not (
        image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3))
    ):
        msg = (
            f"{what}: expected a uint8 image of shape (height, width, 3) or (height, width), "
            f"got shape {image.shape} dtype {image.dtype}"
        )
        raise ValueError(msg)
    return cast(Image, image)


# -- writing video files ----------------------------------------------------------------------

# Characters a stream id may not bring into a file name: path separators (both kinds, whatever
# the platform), NUL and the other control characters.
_UNSAFE = {ord(c): "_" for c in "/\\" + "".join(map(chr, range(32))) + "\x7f"}


def _file_name(stream: str) -> str:
    """``stream`` as one plain file name: path separators, NUL and control characters become
    ``_``, and an id of dots only (``.``, ``..``) becomes underscores, so that it names a file
    in the folder it is put in and never another folder (``"../../etc"`` -> ``".._.._etc"``).

    >>> _file_name("gate/north"), _file_name(".."), _file_name("cam 7")
    ('gate_north', '__', 'cam 7')
    """
    name = str(stream).translate(_UNSAFE)
    if not name.strip("."):
        name = "_" * len(name) if name else "_"
    return name


class VideoWriter(Block):
    """A block that writes each stream's frames to its own video file and passes them on.

    One ``cv2.VideoWriter`` per stream, opened on the stream's first frame (creating missing
    folders), written in the block's thread pool, and released when the stream ends (an
    ``af.EndOfKey``, such as a camera removed from its ``video_source``: its file is complete
    then, and a service whose cameras come and go holds no writer for a camera gone) and in
    ``teardown`` however the run ends, so the files are complete. A stream that comes back
    under the same id writes a new file, numbered (``gate7-2.mp4``, ``gate7-3.mp4``...).
    Frames of a size other than the file's are resized to it.

    Args:
        path_pattern: the file of each stream; ``{stream}`` is replaced by the stream id,
            made a plain file name (path separators and control characters as ``_``, an id
            of dots only as underscores): an id from outside, such as a camera added by name
            over HTTP, never writes outside the folder (``../../x`` is ``.._.._x``).
        fps: the files' frame rate; default: the stream's (``frame.meta["fps"]``), else 25.
        fourcc: the codec's four-character code: ``"mp4v"`` (``.mp4``), ``"MJPG"`` (``.avi``),
            ``"XVID"``, ... (what the OpenCV build can encode).
        size: ``(width, height)`` of the files; default: the stream's first frame.
        **options: block options (``name=``, default ``"video_writer"``; ``queue_size=``, ...).
            It is keyed by stream: with ``workers=N``, N streams are written in parallel, each
            in order.

    Attributes:
        paths: ``{stream id: Path}`` of the files opened in the current or last run (a
            stream's latest file).
        written: ``{stream id: frames written}`` in the current or last run (over all its
            files).

    Raises:
        GraphError: a bad argument (at once).
        VideoWriterError: (as the cause of a BlockError) a file cannot be opened for writing,
            or two streams would write the same file.

    >>> writer = VideoWriter("out/{stream}.avi", fourcc="MJPG", fps=10)
    >>> writer.block_name
    'video_writer'
    """

    key = staticmethod(_stream_of)

    def __init__(
        self,
        path_pattern: str | os.PathLike[str] = "{stream}.mp4",
        *,
        fps: float | None = None,
        fourcc: str = "mp4v",
        size: tuple[int, int] | None = None,
        **options: Any,
    ) -> None:
        options.setdefault("name", "video_writer")
        super().__init__(**options)
        name = self.block_name

        def bad(what: str, expected: str, found: object) -> GraphError:
            return GraphError(f"block {name!r}: {what} must be {expected}, got {found!r}")

        pattern = os.fspath(path_pattern)
        try:
            pattern.format(stream="s")
        except (IndexError, KeyError, ValueError) as exc:
            raise bad("path_pattern", "a path with at most a {stream} field", pattern) from exc
        if fps is not None and (
            isinstance(fps, bool) or not isinstance(fps, int | float) or not 0 < fps < 1e4
        ):
            raise bad("fps", "None or a number of frames per second > 0", fps)
        if not isinstance(fourcc, str) or len(fourcc) != 4:
            raise bad("fourcc", "a four-character code such as 'mp4v' or 'MJPG'", fourcc)
        if size is not None and (
            not isinstance(size, tuple)
            or len(size) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)
        ):
            raise bad("size", "None or (width, height) in pixels", size)
        self.path_pattern = pattern
        self.fps = fps
        self.fourcc = fourcc
        self.size = size
        self.paths: dict[str, Path] = {}
        self.written: dict[str, int] = {}
        self._writers: dict[str, tuple[cv2.VideoWriter, tuple[int, int]]] = {}
        self._closed: set[Path] = set()  # files of streams that ended (not to be reused)

    async def setup(self) -> None:
        self.paths = {}
        self.written = {}
        self._writers = {}
        self._closed = set()

    def _open(self, frame: Frame) -> tuple[cv2.VideoWriter, tuple[int, int]]:
        stream = frame.stream
        path = Path(self.path_pattern.format(stream=_file_name(stream)))
        for other, used in self.paths.items():
            if used == path and other != stream:
                reason = f"already written by stream {other!r}: put {{stream}} in path_pattern"
                raise VideoWriterError(str(path), stream, reason)
        if stream in self.paths:  # the stream ended and came back: a new file, numbered
            taken = set(self.paths.values()) | self._closed
            n = 2
            while (again := path.with_stem(f"{path.stem}-{n}")) in taken:
                n += 1
            path = again
        size = self.size or (frame.width, frame.height)
        meta_fps = frame.meta.get("fps")
        fps = self.fps or (float(meta_fps) if isinstance(meta_fps, int | float) else 25.0)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise VideoWriterError(str(path), stream, f"cannot make its folder: {exc}") from exc
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*self.fourcc), fps, size)
        if not writer.isOpened():
            writer.release()
            reason = (
                f"OpenCV cannot write it with fourcc {self.fourcc!r} "
                "(no such encoder, or it does not fit the file extension)"
            )
            raise VideoWriterError(str(path), stream, reason)
        self.paths[stream] = path
        self.written.setdefault(stream, 0)
        self._writers[stream] = (writer, size)
        return writer, size

    # ``state`` (the key's, unused: the writers live in ``_writers``) makes the block keep a
    # lane per stream, whose end (``af.EndOfKey``) calls ``evict``. A subclass that overrides
    # ``process`` takes it too, to keep that.
    def process(self, frame: Frame, state: Any = None) -> Frame:
        """Write ``frame`` to its stream's file (in the block's thread) and return it."""
        item: object = frame  # checked at run time: a pipeline may hand it anything
        if not isinstance(item, Frame):
            msg = f"VideoWriter takes Frames (from video_source), got {type(item).__name__}"
            raise TypeError(msg)
        entry = self._writers.get(frame.stream)
        writer, size = entry if entry is not None else self._open(frame)
        image = _check_image(frame.image, "VideoWriter")
        if image.ndim == 2 or image.shape[2] == 1:
            image = cast(Image, cv2.cvtColor(image, cv2.COLOR_GRAY2BGR))
        if (image.shape[1], image.shape[0]) != size:
            image = cast(Image, cv2.resize(image, size, interpolation=cv2.INTER_AREA))
        writer.write(image)
        self.written[frame.stream] += 1
        return frame

    # Plain defs: they run in the block's thread pool, since releasing a writer finishes the
    # file (blocking IO).
    def evict(self, key: Hashable, state: Any) -> None:  # type: ignore[override]
        """The stream ``key`` ended: release its writer, so that its file is complete now."""
        entry = self._writers.pop(str(key), None)
        if entry is not None:
            self._closed.add(self.paths[str(key)])
            entry[0].release()

    def teardown(self) -> None:
        """Release every writer, so that each file is complete and playable."""
        writers, self._writers = self._writers, {}
        for writer, _ in writers.values():
            writer.release()


# -- JPEG -------------------------------------------------------------------------------------


def _check_quality(quality: object, where: str) -> int:
    if isinstance(quality, bool) or not isinstance(quality, int) or not 0 <= quality <= 100:
        msg = f"{where}: quality must be an int from 0 to 100, got {quality!r}"
        raise GraphError(msg)
    return quality


def encode_jpeg(image: Image | Frame, quality: int = 90) -> bytes:
    """Encode an image (or a Frame's image) as JPEG bytes. Blocking: call it from a thread.

    Raises:
        TypeError, ValueError: not a uint8 image.
        GraphError: quality outside 0..100.

    >>> import numpy as np
    >>> encode_jpeg(np.zeros((8, 8, 3), np.uint8))[:2]
    b'\\xff\\xd8'
    """
    q = _check_quality(quality, "encode_jpeg")
    pixels = image.image if isinstance(image, Frame) else image
    img = _check_image(pixels, "encode_jpeg")
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, q])
    if not ok:  # pragma: no cover - OpenCV fails only on images it cannot hold
        msg = f"encode_jpeg: OpenCV could not encode an image of shape {img.shape}"
        raise ValueError(msg)
    return buf.tobytes()


def decode_jpeg(data: bytes | bytearray | memoryview) -> Image:
    """Decode JPEG (or PNG, ...) bytes to a BGR image. Blocking: call it from a thread.

    Raises:
        ValueError: the bytes are not an image OpenCV can decode.
    """
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        msg = f"decode_jpeg: {len(data)} bytes that do not decode as an image"
        raise ValueError(msg)
    return cast(Image, image)


def jpeg_encode(
    quality: int = 90, *, name: str = "jpeg_encode", workers: int = 2, **options: Any
) -> FunctionBlock[[Image | Frame], bytes]:
    """A block that encodes each frame (or image) as JPEG bytes, in its own thread pool.

    OpenCV releases the GIL while encoding, so ``workers`` threads encode in parallel.

    Args:
        quality: JPEG quality, 0..100.
        name: the block's name.
        workers: threads encoding at once.
        **options: other block options (``queue_size=``, ``on_error=``, ...).

    Raises:
        GraphError: a bad quality or block option.

    >>> block = jpeg_encode(quality=80)
    >>> block.options.executor, block.options.workers
    ('thread', 2)
    """
    q = _check_quality(quality, f"block {name!r}")

    def encode(item: Image | Frame) -> bytes:
        return encode_jpeg(item, q)

    return FunctionBlock(encode, name=name, workers=workers, executor="thread", **options)


# -- drawing ----------------------------------------------------------------------------------


def _canvas(image: Image, copy: bool, what: str) -> Image:
    img = _check_image(image, what)
    if img.ndim != 3 or img.shape[2] != 3:
        msg = f"{what}: expected a (height, width, 3) BGR image, got shape {img.shape}"
        raise ValueError(msg)
    if copy:
        return img.copy()
    if not (img.flags.c_contiguous and img.flags.writeable):
        msg = f"{what}: copy=False needs a writeable, C-contiguous array; pass copy=True"
        raise ValueError(msg)
    return img


def _text_color(background: Color) -> Color:
    b, g, r = background
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 140 else (255, 255, 255)


def _put_label(
    img: Image,
    text: str,
    x: int,
    y: int,
    color: Color,
    background: Color | None,
    scale: float,
    thickness: int,
) -> None:
    """Draw ``text`` with its top-left corner at (x, y), on a filled box when ``background``."""
    font = cv2.FONT_HERSHEY_SIMPLEX
    (w, h), baseline = cv2.getTextSize(text, font, scale, thickness)
    pad = 2
    if background is not None:
        cv2.rectangle(img, (x, y), (x + w + 2 * pad, y + h + baseline + 2 * pad), background, -1)
    cv2.putText(img, text, (x + pad, y + pad + h), font, scale, color, thickness, cv2.LINE_AA)


def draw_boxes(
    image: Image,
    boxes: Sequence[Box] | np.ndarray[Any, Any],
    labels: Sequence[str] | None = None,
    *,
    color: Color | Sequence[Color] = (0, 255, 0),
    thickness: int = 2,
    font_scale: float = 0.5,
    copy: bool = True,
) -> Image:
    """Draw rectangles, each with an optional label, on an image.

    Args:
        image: a ``(height, width, 3)`` uint8 BGR image.
        boxes: ``(x1, y1, x2, y2)`` corners in pixels (floats are rounded), as a sequence or
            an ``(N, 4)`` array.
        labels: one text per box, drawn on a filled tag of the box's colour above its top-left
            corner (inside the box when there is no room above).
        color: one BGR colour for all boxes, or one per box.
        thickness: line thickness in pixels.
        font_scale: the labels' size.
        copy: True (default): draw on a copy and return it, leaving ``image`` untouched.
            False: draw on ``image`` itself (it must be writeable and C-contiguous) and
            return it.

    Raises:
        TypeError, ValueError: not a BGR uint8 image, a box without 4 numbers, or as many
            labels or colours as boxes.

    >>> import numpy as np
    >>> out = draw_boxes(np.zeros((20, 20, 3), np.uint8), [(2, 2, 10, 10)], color=(0, 0, 255))
    >>> out[2, 5].tolist()
    [0, 0, 255]
    """
    img = _canvas(image, copy, "draw_boxes")
    corners = np.asarray(boxes, dtype=np.float64)
    if corners.size == 0:
        return img
    if corners.ndim != 2 or corners.shape[1] != 4 or not np.isfinite(corners).all():
        msg = f"draw_boxes: boxes must be (x1, y1, x2, y2) numbers, got an array of {corners.shape}"
        raise ValueError(msg)
    n = len(corners)
    if labels is not None and len(labels) != n:
        msg = f"draw_boxes: {n} boxes but {len(labels)} labels"
        raise ValueError(msg)
    if len(color) and isinstance(color[0], int | float | np.integer | np.floating):
        colors = [cast(Color, tuple(int(c) for c in cast(Color, color)))] * n
    else:
        colors = [cast(Color, tuple(int(c) for c in cast(Color, each))) for each in color]
        if len(colors) != n:
            msg = f"draw_boxes: {n} boxes but {len(colors)} colours"
            raise ValueError(msg)
    for i, (x1, y1, x2, y2) in enumerate(np.rint(corners).astype(np.int64).tolist()):
        cv2.rectangle(img, (x1, y1), (x2, y2), colors[i], thickness)
        if labels is not None and labels[i]:
            _, h = cv2.getTextSize(labels[i], cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)[0]
            tag_h = h + 8
            top = y1 - tag_h if y1 - tag_h >= 0 else y1
            _put_label(img, labels[i], x1, top, _text_color(colors[i]), colors[i], font_scale, 1)
    return img


def draw_text(
    image: Image,
    text: str,
    origin: tuple[int, int] = (0, 0),
    *,
    color: Color = (255, 255, 255),
    background: Color | None = (0, 0, 0),
    font_scale: float = 0.5,
    thickness: int = 1,
    copy: bool = True,
) -> Image:
    """Write a line of text on an image.

    Args:
        image: a ``(height, width, 3)`` uint8 BGR image.
        text: the text (OpenCV's Hershey font: ASCII only).
        origin: ``(x, y)`` of the text's top-left corner, in pixels.
        color: the text's BGR colour.
        background: a BGR colour to fill the text's box with first, or None for none.
        font_scale: the text's size.
        thickness: the strokes' thickness.
        copy: True (default): draw on a copy and return it. False: draw on ``image`` itself.

    Raises:
        TypeError, ValueError: not a BGR uint8 image (or copy=False on a read-only one).

    >>> import numpy as np
    >>> out = draw_text(np.zeros((30, 80, 3), np.uint8), "hi", (0, 0), background=(255, 0, 0))
    >>> out[0, 0].tolist()
    [255, 0, 0]
    """
    img = _canvas(image, copy, "draw_text")
    x, y = (round(v) for v in origin)
    _put_label(img, text, x, y, color, background, font_scale, thickness)
    return img
