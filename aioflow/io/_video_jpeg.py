"""JPEG for frames on the wire: the ``"jpeg"`` variant of :class:`~._video_frame.Frame`.

``MsgpackCodec(frames="jpeg")`` (:mod:`aioflow.transport.codec`) writes a frame's image as JPEG
through the variant :mod:`._video_frame` registers; the functions here do the OpenCV work, so
that the frame's own module (and a process that never meets a JPEG frame) needs no OpenCV.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

try:
    import cv2
except ImportError as exc:  # pragma: no cover - depends on the environment
    msg = "JPEG frames on the wire need OpenCV: pip install aioflow[cv]"
    raise ImportError(msg) from exc

__all__ = ["DEFAULT_QUALITY", "decode_image", "encode_image"]

#: OpenCV's own default
DEFAULT_QUALITY = 95


def encode_image(image: Any, options: Mapping[str, Any]) -> bytes | None:
    """``image`` as JPEG bytes at ``options["quality"]``; None for an image JPEG cannot hold
    as it is (not uint8, not ``(h, w)`` or ``(h, w, 3)``): the frame then travels raw."""
    if not (
        isinstance(image, np.ndarray)
        and image.dtype == np.uint8
        and (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3))
        and image.shape[0] > 0
        and image.shape[1] > 0
    ):
        return None
    quality = int(options.get("quality", DEFAULT_QUALITY))
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 image of these shapes
        msg = f"OpenCV could not encode a {image.shape} image as JPEG"
        raise ValueError(msg)
    return bytes(data)


def decode_image(data: Any, shape: tuple[int, ...]) -> Any:
    """The image ``data`` holds, checked against the ``shape`` it was written with."""
    if not isinstance(data, bytes):
        msg = f"a JPEG frame's image must be bytes, found {type(data).__name__}"
        raise TypeError(msg)
    flags = cv2.IMREAD_GRAYSCALE if len(shape) == 2 else cv2.IMREAD_COLOR
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if image is None:
        msg = f"not a JPEG image ({len(data)} bytes)"
        raise ValueError(msg)
    if tuple(image.shape) != tuple(shape):
        msg = f"the JPEG image is {tuple(image.shape)}, the frame said {tuple(shape)}"
        raise ValueError(msg)
    return image
