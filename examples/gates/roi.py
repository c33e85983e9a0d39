"""Where the detector looks: the part of a frame where the scene moves, at full resolution.

The detector sees a fixed-size input (``ocr.det_size``: 480 px wide). A whole HD frame squeezed
into it makes 12-16 px plate text 4-6 px high, too small to be found. Plates are on moving
vehicles, so a gate camera tells where to look: this module finds where the scene moved since
the camera's last look (a difference of small grey frames, ``MOTION_WIDTH`` px wide) and picks
a *window* of the frame around the motion, of the detector input's aspect, which ``prepare``
resizes to the same input: the detector's cost per frame is unchanged, but a window a third of
the frame's width shows the plate three times as large. Rules (``Looker.window``):

- **Whole frame** on a camera's first look, every ``whole_every``-th look after it, when
  nothing moved, and when the motion is so spread out that a window around it would show the
  frame at nearly its whole-frame scale (``min_gain``): a plate standing still (a car waiting
  at the barrier), a sign, a car in a second lane are found there as before.
- **A window around the motion** otherwise: the bounding box of the moving blobs (blobs under
  ``min_blob`` of the frame, such as a changing timestamp, rain or noise, are left out), grown
  by ``margin`` of its size each side, widened to the input's aspect, never closer than
  ``max_zoom`` times the frame's own pixels (enlarging adds no detail), moved inside the frame.
- **Boxes found there**: mapped back to frame coordinates; a box touching the window's edge
  inside the frame may be text cut off by the window and is dropped as the frame's edge is.
- **What the window did not show** (``Looker.carry``): a box of the last whole-frame look that
  lies where nothing moved since and outside the window is still there, so it goes to the
  tracker as seen (without a read), as text standing still does: signs keep their tracks and
  their ``StillText`` count, and a parked car's plate stays in view.

State is per camera and guarded by a lock: ``prepare`` runs in two threads.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import cv2
import numpy as np

from aioflow import wire

MOTION_WIDTH = 160  # the small grey frames compared, px wide
MAX_CAMERAS = 1024  # cameras remembered (a camera removed long ago is forgotten)


@dataclass(frozen=True)
class Window:
    """A part of a frame, (x0, y0, x1, y1) in frame pixels; ``whole`` when it is all of it."""

    x0: int
    y0: int
    x1: int
    y1: int
    whole: bool

    @property
    def rect(self) -> tuple[int, int, int, int]:
        return self.x0, self.y0, self.x1, self.y1

    def cuts(self, rect: tuple[int, int, int, int], shape: tuple[int, ...], pad: int = 2) -> bool:
        """Whether ``rect`` touches one of the window's edges that lie inside the frame of
        ``shape`` (text there may go on beyond the window; the frame's own edges are
        ``ocr.plate_shape``'s to judge)."""
        x0, y0, x1, y1 = rect
        height, width = shape[:2]
        return (
            (self.x0 > 0 and x0 < self.x0 + pad)
            or (self.y0 > 0 and y0 < self.y0 + pad)
            or (self.x1 < width and x1 > self.x1 - 1 - pad)
            or (self.y1 < height and y1 > self.y1 - 1 - pad)
        )


# A window travels between the worker processes of ``examples/distributed`` (msgpack, no pickle).
wire.register(Window, tag="examples.gates.roi:Window")


@dataclass(frozen=True)
class LookRules:
    """How ``Looker`` picks the detector's window (see the module's docstring)."""

    whole_every: int = 4  # a whole-frame look on every n-th look of a camera
    threshold: float = 10.0  # grey levels of change, on the small frames, that count as motion
    min_blob: float = 0.002  # a moving blob under this share of the frame is not a vehicle
    margin: float = 0.25  # the window's margin around the motion, of its size, each side
    max_zoom: float = 1.5  # the window never shows the frame larger than this
    min_gain: float = 1.25  # a window must show the frame this much larger than a whole look

    def __post_init__(self) -> None:
        if self.whole_every < 1:
            msg = f"LookRules: whole_every must be >= 1, got {self.whole_every!r}"
            raise ValueError(msg)
        if self.max_zoom <= 0 or self.min_gain < 1:
            msg = f"LookRules: max_zoom must be > 0 and min_gain >= 1, got {self!r}"
            raise ValueError(msg)


DEFAULT_LOOK_RULES = LookRules()


@dataclass
class CameraLooks:
    small: np.ndarray | None = None  # the last look's small grey frame
    moved: np.ndarray | None = None  # where it moved since the last whole look (small, bool)
    looks: int = 0


def small_grey(image: np.ndarray) -> np.ndarray:
    height = max(8, round(MOTION_WIDTH * image.shape[0] / image.shape[1]))
    grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    small = cv2.resize(grey, (MOTION_WIDTH, height), interpolation=cv2.INTER_AREA)
    return cv2.GaussianBlur(small, (3, 3), 0)


class Looker:
    """Per camera: where the detector looks on each frame (``window``), and what a window
    leaves unseen but still there (``carry``)."""

    def __init__(self, rules: LookRules = DEFAULT_LOOK_RULES) -> None:
        self.rules = rules
        self._cameras: dict[str, CameraLooks] = {}
        self._lock = threading.Lock()

    def forget(self, camera: str) -> None:
        with self._lock:
            self._cameras.pop(camera, None)

    def window(
        self, camera: str, image: np.ndarray, input_size: tuple[int, int]
    ) -> tuple[Window, np.ndarray | None]:
        """The part of ``image`` the detector looks at, for an input ``input_size`` (W, H), and
        where the scene moved since the camera's last whole look (the small mask ``carry``
        takes; None for a whole look)."""
        small = small_grey(image)
        height, width = image.shape[:2]
        with self._lock:
            cam = self._cameras.setdefault(camera, CameraLooks())
            if len(self._cameras) > MAX_CAMERAS:  # cameras removed long ago: forgotten
                del self._cameras[next(iter(self._cameras))]
            previous, cam.small = cam.small, small
            look, cam.looks = cam.looks, cam.looks + 1
            window = None
            if previous is not None and previous.shape == small.shape:
                mask = self._motion(small, previous)
                cam.moved = mask if cam.moved is None else cam.moved | mask
                if look % self.rules.whole_every != 0:
                    window = self._around(mask, (height, width), input_size, look)
            if window is None:
                cam.moved = np.zeros(small.shape, dtype=bool)
                return Window(0, 0, width, height, whole=True), None
            return window, cam.moved

    def _motion(self, small: np.ndarray, previous: np.ndarray) -> np.ndarray:
        mask = (cv2.absdiff(small, previous) > self.rules.threshold).astype(np.uint8)
        # Thin streaks (rain) and speckle (noise) open away; a vehicle's edges stay.
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((2, 2), np.uint8))
        return cv2.dilate(mask, np.ones((3, 3), np.uint8)) > 0

    def _around(
        self,
        mask: np.ndarray,
        shape: tuple[int, int],
        input_size: tuple[int, int],
        look: int,
    ) -> Window | None:
        """A window around the moving blobs, or None (look at the whole frame)."""
        rules = self.rules
        n, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
        big = rules.min_blob * mask.size
        height, width = shape
        sx, sy = width / mask.shape[1], height / mask.shape[0]
        boxes = [
            (
                stats[i][cv2.CC_STAT_LEFT] * sx,
                stats[i][cv2.CC_STAT_TOP] * sy,
                (stats[i][cv2.CC_STAT_LEFT] + stats[i][cv2.CC_STAT_WIDTH]) * sx,
                (stats[i][cv2.CC_STAT_TOP] + stats[i][cv2.CC_STAT_HEIGHT]) * sy,
            )
            for i in range(1, n)
            if stats[i][cv2.CC_STAT_AREA] >= big
        ]
        if not boxes:
            return None
        # All the motion in one window if it fits; else the vehicles in turn (blobs whose
        # margins overlap are one), a different one on each look.
        groups = [_union(boxes)]
        if self._scale(groups[0], input_size) * rules.min_gain > _frame_scale(shape, input_size):
            # A vehicle's front and back edges are two blobs close together: merged.
            pad = 0.02 * width
            padded = [(x0 - pad, y0 - pad, x1 + pad, y1 + pad) for x0, y0, x1, y1 in boxes]
            groups = sorted(_merge(padded))
            groups = [self._grow(groups[look % len(groups)])]
        else:
            groups = [self._grow(groups[0])]
        x0, y0, x1, y1 = groups[0]
        scale = max((x1 - x0) / input_size[0], (y1 - y0) / input_size[1], 1.0 / rules.max_zoom)
        if scale * rules.min_gain > _frame_scale(shape, input_size):
            return None
        w, h = input_size[0] * scale, input_size[1] * scale
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        wx0 = round(min(max(cx - w / 2, 0.0), width - w))
        wy0 = round(min(max(cy - h / 2, 0.0), height - h))
        wx1, wy1 = min(width, wx0 + round(w)), min(height, wy0 + round(h))
        return Window(wx0, wy0, wx1, wy1, whole=False)

    def _grow(self, box: Box) -> Box:
        x0, y0, x1, y1 = box
        mx, my = self.rules.margin * (x1 - x0), self.rules.margin * (y1 - y0)
        return x0 - mx, y0 - my, x1 + mx, y1 + my

    def _scale(self, box: Box, input_size: tuple[int, int]) -> float:
        x0, y0, x1, y1 = self._grow(box)
        return max((x1 - x0) / input_size[0], (y1 - y0) / input_size[1], 1 / self.rules.max_zoom)


Box = tuple[float, float, float, float]


def _union(boxes: list[Box]) -> Box:
    return (
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    )


def _merge(boxes: list[Box]) -> list[Box]:
    """Overlapping boxes merged, until none overlap."""
    out = list(boxes)
    merged = True
    while merged:
        merged = False
        for i in range(len(out)):
            for j in range(i + 1, len(out)):
                a, b = out[i], out[j]
                if a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]:
                    out[i] = _union([a, b])
                    del out[j]
                    merged = True
                    break
            if merged:
                break
    return out


def _frame_scale(shape: tuple[int, int], input_size: tuple[int, int]) -> float:
    """Frame pixels per input pixel on a whole-frame look."""
    return max(shape[1] / input_size[0], shape[0] / input_size[1])


def carry(
    window: Window,
    moved: np.ndarray | None,
    rects: list[tuple[int, int, int, int]],
    shape: tuple[int, ...],
) -> list[tuple[int, int, int, int]]:
    """Of ``rects`` (the boxes of the camera's last whole-frame look), those a window left
    unseen that are still there: outside the window, where nothing moved since that look
    (``moved``: the small motion mask the window came with)."""
    if window.whole or moved is None:
        return []
    sy, sx = moved.shape[0] / shape[0], moved.shape[1] / shape[1]
    out = []
    for rect in rects:
        x0, y0, x1, y1 = rect
        if x1 > window.x0 and x0 < window.x1 and y1 > window.y0 and y0 < window.y1:
            continue  # the window shows it (or what replaced it)
        mx0, my0 = int(x0 * sx), int(y0 * sy)
        mx1, my1 = int(np.ceil(x1 * sx)) + 1, int(np.ceil(y1 * sy)) + 1
        if not moved[my0:my1, mx0:mx1].any():
            out.append(rect)
    return out
