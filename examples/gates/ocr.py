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
import itertools
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from aioflow import wire

from . import plates

DET_MODEL = "PP-OCRv6_det_small.onnx"
REC_MODEL = "PP-OCRv6_rec_small.onnx"
SHA256 = {
    DET_MODEL: "090f04abcd9d9a7498bc4ebf677e4cb9bdce1fe4197ddb7e529f1ef44e1ff94f",
    REC_MODEL: "6f327246b50388f3c176ae304bd95767ea6dc0c9ae92153ef8cbe210b3c14884",
}
DET_WIDTH = 480  # the detector's input width; its height follows the frame's aspect
DET_TALLEST = 2  # ... up to this many times its width (``det_size``)
REC_HEIGHT = 48
# Crops keep their aspect: resized to 48 px high, then padded on the right to the next of these
# widths, so that crops of similar width batch together (OnnxModel runs one call per shape).
REC_WIDTHS = (128, 192, 256, 320)
PLATE_CHARS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
# A 0 or O read with at least this mean probability of a Q over its time steps is a Q whose
# tail the blur left faint (``CtcDecoder.read``). Some fonts' O draws a Q's trace of 0.03-0.08
# on every frame (``XO-738-RH``): 0.05 sent it as ``XQ-738-RH``.
Q_TAIL = 0.08
#: A 0 or O read with less of a Q's probability than ``Q_TAIL`` but at least this much shows a
#: hint of a Q's tail (``CtcDecoder.read_hinted``). Recorded on the other generator's clips:
#: the O's of most fonts show under 0.005 on 96-100% of their reads, Q's blurred by 4 px into
#: an O show 0.01 or more on 58-62%, and one font's O (XO-738-RH) on all of its reads: a track
#: whose O shows the hint on many reads is held as unsure (``track.HINT_SHARE``).
Q_HINT = 0.01
#: An I or a 1 read with at least this mean probability of a J over its time steps shows a
#: hint of a J (``CtcDecoder.read_hinted``): blur takes a J's hook away. Recorded on the other
#: generator's hard clips (seeds 14-17): a J read as an I showed 0.03 or more on 75% of 24
#: reads (``SJ 772 TU``, sent as ``SI772TU``); an I read as an I on 1% of 305, and a plate's
#: I on 8% of its reads at most (``track.J_SHARE``).
J_HINT = 0.03
#: The second look at a plate read with a 0 or an O (``taller``, ``CtcDecoder.second_look``): its
#: box grown to this many times its height, about its middle. The detector's box hugs the
#: text, and a Q's tail, which hangs below the line, falls out of it (``QN 391 UR`` read
#: ``ON391UR``, the Q's probability 0.000-0.001 on all 18 of its reads, 0.82-0.97 in the taller
#: box on the same frames; the O's of the same clips showed less of it there, not more).
TALL = 1.35
#: In the taller box, the hint of a tail starts here: a Q's tail is in the box there, and shows
#: as a Q on most reads, 0.02 or more of a Q's probability on most of the rest where blur takes
#: it away (``OQ75 ICE`` blurred by 4 px: a Q on 4 reads of 26, 0.015-0.07 on the others); an
#: O of one font shows a trace of 0.002-0.03 there, 0.01 or more on 5 reads of 30, which held
#: ``UD-139-QO`` as unsure (the other generator's medium seed 55, held out), 0.02 or more on 2.
Q_HINT_TALL = 0.02
#: The last letter or digit read stands apart from the text before it when it starts this many
#: times the text's pitch after the one before it (the median step between the starts of its
#: letters and digits, in the recogniser's time steps), with no separator read between them:
#: a mark beyond the plate's edge (a country sticker, ``09-ONS-4`` read ``09-ONS-4F`` with
#: its ``F`` oval at 2.5-2.75 pitches; ``XRS 053`` read ``XRS 0530`` with a ``D`` at 2.5).
#: The last character of a plate starts 0.75-1.75 pitches after the one before it (5,954 of
#: 5,976 reads recorded on 10 seeds of both generators; a few blurred reads up to 3.5), 1.25-2
#: across a space read, up to 2.5 across a dash (``62-LAA-3``): so a read set apart counts only
#: where the track reads the plate without it too, on most reads (``track.Track.beyond``).
DETACHED = 2.25


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


def det_size(shape: tuple[int, ...], width: int = DET_WIDTH) -> tuple[int, int]:
    """(W, H) of the detector's input for frames of ``shape``: ``width`` wide (a multiple of
    32), as high as the frame's aspect makes it, rounded to a multiple of 32; a frame taller
    than ``DET_TALLEST`` times its width (a portrait phone video is 1.8) is fitted into
    ``DET_TALLEST * width`` high instead, narrower, so that an image of odd shape (16x10000)
    does not make the detector an input of millions of pixels."""
    height, across = shape[0], shape[1]
    tallest = DET_TALLEST * width
    if height * width > tallest * across:
        return max(32, round(tallest * across / height / 32) * 32), round(tallest)
    return width, max(32, round(width * height / across / 32) * 32)


def det_input(
    image: np.ndarray,
    width: int = DET_WIDTH,
    window: tuple[int, int, int, int] | None = None,
) -> np.ndarray:
    """The detector's input for a frame: all of it, or the part ``window`` (x0, y0, x1, y1)
    shows, resized to the same input size (``det_size`` of the whole frame)."""
    size = det_size(image.shape, width)
    interpolation = cv2.INTER_AREA
    if window is not None:
        x0, y0, x1, y1 = window
        image = image[y0:y1, x0:x1]
        if x1 - x0 < size[0]:  # a window shown larger than its pixels: interpolated
            interpolation = cv2.INTER_LINEAR
    return normalise(cv2.resize(image, size, interpolation=interpolation))


@dataclass(frozen=True)
class Box:
    """A text box in frame coordinates: the four corners of a rotated rectangle."""

    points: np.ndarray  # 4x2 float32, clockwise from top-left

    @property
    def rect(self) -> tuple[int, int, int, int]:
        x0, y0 = self.points.min(axis=0)
        x1, y1 = self.points.max(axis=0)
        return int(x0), int(y0), int(x1), int(y1)


# A box travels between the worker processes of ``examples/distributed`` (msgpack, no pickle).
wire.register(Box, tag="examples.gates.ocr:Box")


def boxes_from_map(
    prob: np.ndarray,
    frame_shape: tuple[int, ...],
    *,
    threshold: float = 0.3,
    min_area: float = 60.0,
    grow: float = 1.6,
    window: tuple[int, int, int, int] | None = None,
) -> list[Box]:
    """Text boxes from a detection probability map (HxW), in frame coordinates.

    Contours of the thresholded map, their minimum-area rectangles grown a little (instead of
    pyclipper's "unclip": the map is tighter than the text). ``window``: the part of the frame
    (x0, y0, x1, y1) the map was made from, when not all of it.
    """
    mask = (prob > threshold).astype(np.uint8)
    contours, _ = cv2.findContours(mask, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    ox, oy, x1, y1 = window if window is not None else (0, 0, frame_shape[1], frame_shape[0])
    sy = (y1 - oy) / prob.shape[0]
    sx = (x1 - ox) / prob.shape[1]
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
        pts[:, 0] = pts[:, 0] * sx + ox
        pts[:, 1] = pts[:, 1] * sy + oy
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
    """The box's pixels, straightened, 48 px high and as wide as the box's aspect makes it
    (at most the widest of ``REC_WIDTHS``: a longer line is squeezed)."""
    top = float(np.linalg.norm(box.points[1] - box.points[0]))
    side = float(np.linalg.norm(box.points[3] - box.points[0]))
    width = int(np.clip(round(REC_HEIGHT * top / max(side, 1.0)), 16, REC_WIDTHS[-1]))
    dst = np.array([[0, 0], [width, 0], [width, REC_HEIGHT], [0, REC_HEIGHT]], dtype=np.float32)
    matrix = cv2.getPerspectiveTransform(box.points, dst)
    return cv2.warpPerspective(
        image,
        matrix,
        (width, REC_HEIGHT),
        flags=cv2.INTER_AREA if side > 2 * REC_HEIGHT else cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )


def may_hide_q(raw: str, formats: tuple[plates.PlateFormat, ...]) -> bool:
    """Whether a read may be a plate with a Q read as an O or a 0: it shows a plate (fitted to
    a format, where there are formats) with an O in it, or, without formats, a 0 or an O."""
    text = plates.normalise(raw, formats)
    if text is None:
        return False
    return "O" in text if formats else ("O" in text or "0" in text)


def taller(box: Box, times: float = TALL) -> Box:
    """``box`` grown to ``times`` its height, as much above as below (its width unchanged)."""
    p = box.points.astype(np.float32)
    grow = (times - 1.0) / 2
    left, right = (p[3] - p[0]) * grow, (p[2] - p[1]) * grow
    return Box(np.array([p[0] - left, p[1] - right, p[2] + right, p[3] + left], dtype=np.float32))


def rec_input(crop_bgr: np.ndarray) -> np.ndarray:
    """The recogniser's input: the normalised crop, padded on the right with zeros (mid grey,
    as PaddleOCR pads) to the next width in ``REC_WIDTHS``."""
    width = crop_bgr.shape[1]
    bucket = next((w for w in REC_WIDTHS if w >= width), REC_WIDTHS[-1])
    x = np.zeros((3, REC_HEIGHT, bucket), np.float32)
    x[:, :, :width] = normalise(crop_bgr)
    return x


class CtcDecoder:
    """Greedy CTC decoding restricted to the characters a plate can hold and the separators
    printed between its groups (``plates.SEPARATORS``: a dash, a space)."""

    def __init__(
        self, characters: list[str], allowed: str = PLATE_CHARS + plates.SEPARATORS
    ) -> None:
        # class 0: blank; class i + 1: characters[i]; the last class: space
        self.classes = ["", *characters, " "]
        keep = [0] + [i + 1 for i, c in enumerate(characters) if c in allowed]
        if " " in allowed and " " not in characters:
            keep.append(len(self.classes) - 1)
        self.keep = np.array(keep)
        column = {self.classes[k]: j for j, k in enumerate(keep)}
        self.q = column.get("Q")
        self.j = column.get("J")
        # For each character with a look-alike: the columns of its digit and its letter form.
        self.pairs = {
            c: (column[d], column[letter])
            for d, letter in plates.LOOK_ALIKE
            if d in column and letter in column
            for c in (d, letter)
        }

    def __call__(self, probs: np.ndarray) -> tuple[str, float]:
        """Text and mean confidence from one [T, classes] probability matrix."""
        text, confidence, _ = self.read(probs)
        return text, confidence

    def read(self, probs: np.ndarray) -> tuple[str, float, plates.Evidence]:
        """:meth:`read_hinted` without the hints."""
        text, confidence, evidence, _ = self.read_hinted(probs)
        return text, confidence, evidence

    def read_hinted(self, probs: np.ndarray) -> tuple[str, float, plates.Evidence, tuple[int, ...]]:
        """Text (with the separators read: ``36-IUO-6``, ``OPQ 234``), the mean confidence of
        its letters and digits and, for each character that has a look-alike (0/O, 1/I, 8/B,
        5/S, 2/Z, 6/G), how much the recogniser saw each of the two: its probabilities of the
        digit and of the letter, averaged over the time steps the character spans (None for
        the other characters and the separators). A 0 or O that the recogniser also saw as a
        Q (``Q_TAIL`` of its probability, where a 0 or an O gets almost none) is a Q: blur
        and low resolution take a Q's short tail away, and the recogniser, sure of no tail,
        reads an O or a 0 (``QQ-616-QR`` read ``00-616-QR`` with Q at 0.13-0.30). The hints:
        the places, among the text's letters and digits, of the 0's and O's that the recogniser
        saw as a Q ``Q_HINT`` of its probability or more (a tail too faint to decide), and of the
        I's and 1's it saw as a J ``J_HINT`` of its probability or more (a hook blurred away)."""
        sub = probs[:, self.keep]
        best = sub.argmax(axis=1)
        conf = sub.max(axis=1)
        text: list[str] = []
        scores: list[float] = []
        evidence: list[tuple[float, float] | None] = []
        hinted: list[bool] = []
        previous = -1
        start = 0
        for t, k in enumerate([*best.tolist(), -1]):
            if k == previous:
                continue
            if previous > 0:  # a character's run ends at t
                c = self.classes[self.keep[previous]]
                hint = False
                if c in "0O" and self.q is not None:
                    tail = sub[start:t, self.q].mean()
                    if tail >= Q_TAIL:
                        c = "Q"
                    hint = Q_HINT <= tail < Q_TAIL
                elif c in "I1" and self.j is not None:
                    hint = sub[start:t, self.j].mean() >= J_HINT
                text.append(c)
                hinted.append(hint)
                if c.isalnum():
                    scores.append(float(conf[start]))
                pair = self.pairs.get(c)
                if pair is None:
                    evidence.append(None)
                else:
                    mean = sub[start:t, list(pair)].mean(axis=0)
                    evidence.append((float(mean[0]), float(mean[1])))
            previous, start = k, t
        # A separator read before the first character or after the last is no separator.
        while text and not text[0].isalnum():
            text.pop(0)
            evidence.pop(0)
            hinted.pop(0)
        while text and not text[-1].isalnum():
            text.pop()
            evidence.pop()
            hinted.pop()
        places = [hint for c, hint in zip(text, hinted, strict=True) if c.isalnum()]
        hints = tuple(i for i, hint in enumerate(places) if hint)
        confidence = float(np.mean(scores)) if scores else 0.0
        return "".join(text), confidence, tuple(evidence), hints

    def set_apart(self, probs: np.ndarray) -> bool:
        """Whether the last letter or digit the greedy read of ``probs`` finds stands apart
        from the text before it (``DETACHED``): the read's last character is then a mark
        beyond the plate's edge, or the plate's own last group with its separator missed."""
        best = probs[:, self.keep].argmax(axis=1).tolist()
        starts: list[tuple[str, int]] = []  # each character read (a separator too), its start
        previous = -1
        for t, k in enumerate(best):
            if k != previous and k > 0:
                starts.append((self.classes[self.keep[k]], t))
            previous = k
        while starts and not starts[-1][0].isalnum():
            starts.pop()
        if len(starts) < 2 or not starts[-2][0].isalnum():
            return False
        steps = [
            b - a
            for (c, a), (d, b) in itertools.pairwise(starts[:-1])
            if c.isalnum() and d.isalnum()
        ]
        if len(steps) < 3:
            return False
        return starts[-1][1] - starts[-2][1] >= DETACHED * float(np.median(steps))

    def tails(self, probs: np.ndarray) -> list[tuple[str, float]]:
        """Per letter or digit read in ``probs``: the character and the mean probability of a
        Q over its time steps."""
        sub = probs[:, self.keep]
        best = sub.argmax(axis=1).tolist()
        out: list[tuple[str, float]] = []
        previous, start = -1, 0
        for t, k in enumerate([*best, -1]):
            if k == previous:
                continue
            if previous > 0:
                c = self.classes[self.keep[previous]]
                if c.isalnum():
                    q = float(sub[start:t, self.q].mean()) if self.q is not None else 0.0
                    out.append((c, q))
            previous, start = k, t
        return out

    def second_look(
        self, raw: str, hints: tuple[int, ...], probs: np.ndarray
    ) -> tuple[str, tuple[int, ...]]:
        """``raw`` and its hints (``read_hinted``) with each 0 or O decided by the read of the
        same box grown taller (``taller``), whose ``probs`` show a Q's tail or its absence where
        the first box cut it off: a Q there (``Q_TAIL`` of its probability) is a Q, under
        ``Q_HINT_TALL`` an O or a 0 without a hint, in between a hint. Where the second read does
        not match the first letter for letter (a taller box takes in more: an EU plate's
        country code at the foot of its band), the first read stands."""
        again = self.tails(probs)
        places = [i for i, c in enumerate(raw) if c.isalnum()]
        if len(again) != len(places):
            return raw, hints
        out = list(raw)
        kept = set(hints)
        for n, (i, (c, q)) in enumerate(zip(places, again, strict=True)):
            first = raw[i]
            if first not in "0O":
                if plates.fold(c) != plates.fold(first) and not (first == "Q" and c in "0O"):
                    return raw, hints  # another reading of the box: nothing to compare
                continue
            if c not in "0OQ":
                return raw, hints
            if c == "Q" or q >= Q_TAIL:
                out[i] = "Q"
                kept.discard(n)
            elif q < Q_HINT_TALL:
                kept.discard(n)
            else:
                kept.add(n)
        return "".join(out), tuple(sorted(kept))


@dataclass(frozen=True)
class PlateRules:
    """What a text box must look like to be read as a plate (``plate_like``).

    Shape: the detector's boxes are text lines, so a plate's line of 4-10 characters (each
    0.5-0.9 of the text's height wide, with the gaps between them, the space or dash many plates
    print between groups, and an EU plate's country band beside them) makes a box 1.3 to 11
    times as wide as high (its height about the text's): ten characters of a wide font with a
    separator come to 10.5. The bounds leave room for perspective; a box under 8 px high holds
    no readable text, and a plate's text stays within 30 degrees of level.

    Ground: a plate is a board, so the text stands out from its ground (Otsu's larger class of
    the crop) by ``min_contrast`` grey levels, and the ground ends a little beyond the text: in
    the bands from 0.6 to 1.0 box heights above and below the box, at most ``max_surface`` of
    the pixels have the ground's colour. Text painted on a wider surface (lettering on a van's
    side, markings on the road, a word on a wall) fails this; so does a plate as dark as the
    car around it (a black plate on a black car), which the pipeline reads all the same where
    plate formats are given, counting the read only where it fits one (``app.build``).
    """

    min_aspect: float = 1.3
    max_aspect: float = 11.0
    min_height_px: float = 8.0
    max_tilt_deg: float = 30.0
    min_contrast: float = 20.0
    max_surface: float = 0.8


DEFAULT_PLATE_RULES = PlateRules()


def plate_like(image: np.ndarray, box: Box, rules: PlateRules = DEFAULT_PLATE_RULES) -> str | None:
    """None when ``box`` may hold a plate's text, else why not: ``"edge"`` (it touches the
    frame's edge), ``"shape"`` or ``"ground"``."""
    why = plate_shape(image.shape, box, rules)
    if why is None and not on_a_board(image, box, crop(image, box), rules):
        why = "ground"
    return why


def plate_shape(
    shape: tuple[int, ...], box: Box, rules: PlateRules = DEFAULT_PLATE_RULES
) -> str | None:
    """The geometric half of ``plate_like``: ``"edge"``, ``"shape"`` or None."""
    p = box.points
    top = float(np.linalg.norm(p[1] - p[0]))
    side = float(np.linalg.norm(p[3] - p[0]))
    x0, y0, x1, y1 = box.rect
    height, width = shape[:2]
    if x0 < 1 or y0 < 1 or x1 > width - 2 or y1 > height - 2:
        return "edge"  # the text may go on beyond the frame: read it once fully in view
    if side < 1.0:
        return "shape"
    tilt = abs(float(np.degrees(np.arctan2(p[1][1] - p[0][1], p[1][0] - p[0][0]))))
    if (
        not rules.min_aspect <= top / side <= rules.max_aspect
        or side < rules.min_height_px
        or min(tilt, 180 - tilt) > rules.max_tilt_deg
    ):
        return "shape"
    return None


def on_a_board(
    image: np.ndarray, box: Box, crop_bgr: np.ndarray, rules: PlateRules = DEFAULT_PLATE_RULES
) -> bool:
    """Whether the text stands out from a ground that ends near it (see PlateRules)."""
    grey = cv2.cvtColor(crop_bgr, cv2.COLOR_BGR2GRAY)
    _, binary = cv2.threshold(grey, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    light = binary > 0
    ground = light if light.mean() >= 0.5 else ~light
    if ground.all():
        return False
    contrast = abs(float(grey[ground].mean()) - float(grey[~ground].mean()))
    if contrast < rules.min_contrast:
        return False
    colour = crop_bgr[ground].astype(np.float32).mean(axis=0)
    x0, y0, x1, y1 = box.rect
    h = y1 - y0
    bands = [
        image[max(y0 - h, 0) : max(y0 - int(0.6 * h), 0), max(x0, 0) : max(x1, 0)],
        image[y1 + int(0.6 * h) : y1 + h, max(x0, 0) : max(x1, 0)],
    ]
    pixels = np.concatenate([b.reshape(-1, 3) for b in bands]).astype(np.float32)
    if len(pixels) == 0:
        return True
    like = np.linalg.norm(pixels - colour, axis=1) < 0.5 * contrast
    return bool(like.mean() <= rules.max_surface)
