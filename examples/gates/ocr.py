"""Pre- and post-processing for the PP-OCR detection and recognition models.

The two ONNX models and the character list are the files shipped in the ``rapidocr`` wheel
(Apache-2.0); we only use the model files and run them with aioflow's blocks.

* Detection: input ``x`` [N, 3, H, W] float32, BGR, ``x / 127.5 - 1``, H and W multiples of 32;
  output: a text probability map [N, 1, H, W].
* Recognition: input [N, 3, 48, W] float32 (same normalisation), output [N, W/8, 18710]
  softmaxed: class 0 is the CTC blank, class i+1 is dictionary entry i (the model's
  ``metadata_props["character"]``), the last class is a space.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

DET_MODEL = "PP-OCRv6_det_small.onnx"
REC_MODEL = "PP-OCRv6_rec_small.onnx"
SHA256 = {
    DET_MODEL: "090f04abcd9d9a7498bc4ebf677e4cb9bdce1fe4197ddb7e529f1ef44e1ff94f",
    REC_MODEL: "6f327246b50388f3c176ae304bd95767ea6dc0c9ae92153ef8cbe210b3c14884",
}
DET_SIZE = (480, 256)  # W, H: multiples of 32 (640x352 reads no better here, at 1.7x the cost)
REC_HEIGHT = 48
REC_WIDTH = 192  # crops are resized to this fixed width so that they batch together
PLATE_CHARS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def model_path(name: str) -> Path:
    """Where the ``rapidocr`` wheel put a model; checked against its pinned SHA-256."""
    try:
        folder = importlib.resources.files("rapidocr") / "models"
    except ModuleNotFoundError as exc:
        msg = "the demo needs the PP-OCR models: pip install --no-deps rapidocr==3.10.0"
        raise SystemExit(msg) from exc
    path = Path(str(folder / name))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != SHA256[name]:
        msg = f"{path}: SHA-256 {digest} is not the pinned {SHA256[name]}"
        raise SystemExit(msg)
    return path


def normalise(bgr: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 BGR -> 3xHxW float32 in [-1, 1]."""
    return (bgr.astype(np.float32) / 127.5 - 1.0).transpose(2, 0, 1)


def det_input(image: np.ndarray) -> np.ndarray:
    return normalise(cv2.resize(image, DET_SIZE, interpolation=cv2.INTER_LINEAR))


@dataclass(frozen=True)
class Box:
    """A text box in frame coordinates: the four corners of a rotated rectangle."""

    points: np.ndarray  # 4x2 float32, clockwise from top-left

    @property
    def rect(self) -> tuple[int, int, int, int]:
        x0, y0 = self.points.min(axis=0)
        x1, y1 = self.points.max(axis=0)
        return int(x0), int(y0), int(x1), int(y1)


def boxes_from_map(
    prob: np.ndarray,
    frame_shape: tuple[int, ...],
    *,
    threshold: float = 0.3,
    min_area: float = 60.0,
    grow: float = 1.6,
) -> list[Box]:
    """Text boxes from a detection probability map (HxW), in frame coordinates.

    Contours of the thresholded map, their minimum-area rectangles grown a little (instead of
    pyclipper's "unclip": the map is tighter than the text).
    """
    mask = (prob > threshold).astype(np.uint8)
    contours, _ = cv2.findContours(mask, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    sy = frame_shape[0] / prob.shape[0]
    sx = frame_shape[1] / prob.shape[1]
    boxes = []
    for contour in contours:
        if cv2.contourArea(contour) < min_area:
            continue
        (cx, cy), (w, h), angle = cv2.minAreaRect(contour)
        if w < h:
            w, h, angle = h, w, angle + 90
        if h < 4:
            continue
        w, h = w + h * (grow - 1.0), h * grow
        pts = cv2.boxPoints(((cx, cy), (w, h), angle))
        pts[:, 0] *= sx
        pts[:, 1] *= sy
        boxes.append(Box(order_points(pts)))
    boxes.sort(key=lambda b: (b.rect[1], b.rect[0]))
    return boxes


def order_points(pts: np.ndarray) -> np.ndarray:
    """Corners ordered top-left, top-right, bottom-right, bottom-left."""
    s = pts.sum(axis=1)
    d = np.diff(pts, axis=1).ravel()
    return np.array(
        [pts[np.argmin(s)], pts[np.argmin(d)], pts[np.argmax(s)], pts[np.argmax(d)]],
        dtype=np.float32,
    )


def crop(image: np.ndarray, box: Box) -> np.ndarray:
    """The box's pixels, straightened and resized to the recogniser's input size (48 x 192)."""
    dst = np.array(
        [[0, 0], [REC_WIDTH, 0], [REC_WIDTH, REC_HEIGHT], [0, REC_HEIGHT]], dtype=np.float32
    )
    matrix = cv2.getPerspectiveTransform(box.points, dst)
    return cv2.warpPerspective(
        image,
        matrix,
        (REC_WIDTH, REC_HEIGHT),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )


def rec_input(crop_bgr: np.ndarray) -> np.ndarray:
    return normalise(crop_bgr)


class CtcDecoder:
    """Greedy CTC decoding restricted to the characters a plate can hold."""

    def __init__(self, characters: list[str], allowed: str = PLATE_CHARS) -> None:
        # class 0: blank; class i + 1: characters[i]; the last class: space
        self.classes = ["", *characters, " "]
        keep = [0] + [i + 1 for i, c in enumerate(characters) if c in allowed]
        self.keep = np.array(keep)

    def __call__(self, probs: np.ndarray) -> tuple[str, float]:
        """Text and mean confidence from one [T, classes] probability matrix."""
        sub = probs[:, self.keep]
        best = sub.argmax(axis=1)
        conf = sub.max(axis=1)
        text = []
        scores = []
        previous = -1
        for t, k in enumerate(best):
            if k != previous and k != 0:
                text.append(self.classes[self.keep[k]])
                scores.append(float(conf[t]))
            previous = k
        return "".join(text), float(np.mean(scores)) if scores else 0.0


# Letters and digits that look alike, for correcting a read against the plate format.
TO_LETTER = {"0": "D", "1": "J", "2": "Z", "4": "A", "5": "S", "6": "G", "7": "T", "8": "B"}
TO_DIGIT = {
    "D": "0",
    "J": "1",
    "Z": "2",
    "A": "4",
    "S": "5",
    "G": "6",
    "T": "7",
    "B": "8",
    "O": "0",
    "I": "1",
    "Q": "0",
    "U": "0",
    "L": "1",
}
PLATE_RE = re.compile(r"^[A-HJ-NPR-Z]{3}[0-9]{4}$")


def correct(text: str) -> str | None:
    """Fit a raw read to the plate format (3 letters, 4 digits), or None if it cannot."""
    text = text.replace(" ", "")
    if len(text) != 7:
        return None
    fixed = "".join(TO_LETTER.get(c, c) for c in text[:3]) + "".join(
        TO_DIGIT.get(c, c) for c in text[3:]
    )
    return fixed if PLATE_RE.match(fixed) else None
