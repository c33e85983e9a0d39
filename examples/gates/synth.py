"""Synthetic gate-camera videos with licence plates, distractor text, and their ground truth.

Each camera films a gate: vehicles (a body carrying a plate, some with lettering on the body)
drive through the frame one after another, in one of two lanes and either direction. A run draws
a few plate formats (``LLL9999``, ``LL99LLL``, ``LLL999``, ... in the notation of
``examples.gates.plates``) and every plate follows one of them; plates are white or yellow, in
one of four Hershey fonts (letters without I, O and Q, as on most real plates), slightly
rotated and seen in perspective. The scene holds text that
is not a plate: road signs, shop fronts and markings painted on the road. The frames get what
real cameras add: uneven light, sensor noise, motion blur and JPEG compression, each stronger
at a harder level (``LEVELS``). The ground truth lists every plate with the frames where it is
fully in view.

    python -m examples.gates.synth out/ --level hard   # cam0.mp4 ..., truth.json, formats.txt
"""

from __future__ import annotations

import argparse
import json
import string
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

WIDTH, HEIGHT, FPS = 640, 360, 10
FORMAT_POOL = ("LLL9999", "LL99LLL", "LLL999", "999LLL", "L999LLL", "LL9999", "9LLL99")
FONTS = (
    cv2.FONT_HERSHEY_SIMPLEX,
    cv2.FONT_HERSHEY_DUPLEX,
    cv2.FONT_HERSHEY_COMPLEX,
    cv2.FONT_HERSHEY_TRIPLEX,
)
PLATE_COLOURS = ((235, 235, 235), (40, 200, 240))  # BGR: white, yellow
SIGNS = ("STOP", "EXIT 12", "SPEED 30", "GATE 3", "NO ENTRY", "P 2H", "WAY OUT", "A40")
SHOPS = ("CAFE", "PHARMACY", "OPEN 24H", "HOTEL", "SALE 50", "BAKERY", "TYRES 4U", "DINER")
ROAD = ("SLOW", "BUS", "STOP", "30", "KEEP CLEAR")
LIVERY = ("TAXI", "DHL", "PIZZA", "FLEET 7", "ACME", "SCHOOL BUS")


@dataclass(frozen=True)
class Level:
    """How hard the footage is."""

    text_px: tuple[int, int]  # plate text height in pixels (near lane; the far lane is 0.8x)
    blur: tuple[int, int]  # horizontal motion blur, kernel length in pixels
    perspective: float  # corner displacement of the plate, as a share of its height
    rotation: float  # degrees, either way
    light: tuple[float, float]  # brightness factor
    noise: float  # sensor noise, grey levels (sigma), doubled in the dark
    jpeg: int  # JPEG quality of every frame


LEVELS = {
    "easy": Level((20, 26), (1, 3), 0.0, 2.0, (0.85, 1.1), 3.0, 85),
    "medium": Level((15, 21), (1, 5), 0.15, 4.0, (0.6, 1.0), 5.0, 60),
    "hard": Level((13, 18), (2, 6), 0.3, 6.0, (0.4, 0.75), 6.0, 45),
    # Past what the demo claims: text a few pixels high, smeared over half a character, in the
    # dark. docs/gates.md reports how far it still gets.
    "extreme": Level((12, 16), (3, 7), 0.3, 6.0, (0.35, 0.7), 7.0, 40),
}


@dataclass(frozen=True)
class Passage:
    """One plate driving through one camera's view."""

    camera: str
    text: str
    first_frame: int  # first frame with the plate fully in view
    last_frame: int  # last frame with the plate fully in view
    lane_y: int
    direction: int  # +1 left to right, -1 right to left


def draw_formats(rng: np.random.Generator, n: int = 3) -> tuple[str, ...]:
    return tuple(str(f) for f in rng.choice(FORMAT_POOL, n, replace=False))


# As on most real plates, no I, O or Q: they read as 1, 0 and 0 (in a position the format says
# is a letter, the reader would still fix 1 and 0 to I and O).
LETTERS = "".join(c for c in string.ascii_uppercase if c not in "IOQ")


def plate_text(rng: np.random.Generator, pattern: str) -> str:
    pools = {"L": LETTERS, "9": string.digits}
    return "".join(str(rng.choice(list(pools[c]))) if c in pools else c for c in pattern)


def text_image(
    text: str,
    text_px: float,
    font: int,
    ink: tuple[int, ...],
    ground: tuple[int, ...],
    *,
    border: bool = True,
) -> np.ndarray:
    """A board (plate or sign): ``text`` ``text_px`` high, centred, with a margin around it."""
    thickness = max(1, round(text_px / 9))
    (_, base_h), _ = cv2.getTextSize("0", font, 1.0, thickness)
    scale = text_px / base_h
    (tw, th), _ = cv2.getTextSize(text, font, scale, thickness)
    pad_x, pad_y = round(0.45 * th), round(0.3 * th)
    img = np.full((th + 2 * pad_y, tw + 2 * pad_x, 3), ground, np.uint8)
    cv2.putText(img, text, (pad_x, pad_y + th), font, scale, ink, thickness, cv2.LINE_AA)
    if border:
        cv2.rectangle(img, (0, 0), (img.shape[1] - 1, img.shape[0] - 1), (25, 25, 25), 1)
    return img


def paste(frame: np.ndarray, board: np.ndarray, quad: np.ndarray) -> None:
    """Warp ``board`` onto the quadrilateral ``quad`` (4x2, clockwise from top-left) of frame."""
    x0, y0 = np.floor(quad.min(axis=0)).astype(int)
    x1, y1 = np.ceil(quad.max(axis=0)).astype(int) + 1
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, frame.shape[1]), min(y1, frame.shape[0])
    if cx1 <= cx0 or cy1 <= cy0:
        return
    h, w = board.shape[:2]
    src = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32)
    dst = (quad - [cx0, cy0]).astype(np.float32)
    matrix = cv2.getPerspectiveTransform(src, dst)
    size = (cx1 - cx0, cy1 - cy0)
    warped = cv2.warpPerspective(board, matrix, size, flags=cv2.INTER_LINEAR)
    mask = cv2.warpPerspective(np.full((h, w), 255, np.uint8), matrix, size) > 127
    frame[cy0:cy1, cx0:cx1][mask] = warped[mask]


def quad_at(
    cx: float, cy: float, w: float, h: float, angle: float, skew: tuple[float, float]
) -> np.ndarray:
    """A w x h rectangle centred at (cx, cy), rotated by ``angle`` degrees, its right side
    ``skew[0]`` and top ``skew[1]`` (shares of h) shrunk as if seen at an angle."""
    corners = np.array([[-w / 2, -h / 2], [w / 2, -h / 2], [w / 2, h / 2], [-w / 2, h / 2]])
    s, t = skew
    corners[[1, 2] if s > 0 else [0, 3], 1] *= 1 - abs(s)  # the far side looks shorter
    corners[[0, 1], 0] *= 1 - t  # and the far edge narrower
    a = np.radians(angle)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]], np.float32)
    quad: np.ndarray = (corners @ rot.T + np.array([cx, cy])).astype(np.float32)
    return quad


@dataclass
class Vehicle:
    text: str
    plate: np.ndarray
    livery: np.ndarray | None
    body: tuple[int, ...]
    angle: float
    skew: tuple[float, float]
    speed: int
    lane_y: int
    direction: int
    start: int


def background(rng: np.random.Generator) -> np.ndarray:
    """A road scene: a gradient wall, a road band with lane marks, posts and bushes, signs and
    shop fronts with text, and text painted on the road."""
    img = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    top = rng.integers(60, 200, 3)
    bottom = rng.integers(40, 120, 3)
    for row in range(HEIGHT):
        t = row / HEIGHT
        img[row] = (top * (1 - t) + bottom * t).astype(np.uint8)
    cv2.rectangle(img, (0, 150), (WIDTH, 330), (70, 70, 75), -1)  # road
    for mark in range(0, WIDTH, 80):
        cv2.line(img, (mark, 243), (mark + 40, 243), (200, 200, 200), 3)  # lane marks
    for _ in range(4):  # posts, bushes
        px, py = int(rng.integers(0, WIDTH)), int(rng.integers(0, 120))
        colour = tuple(int(c) for c in rng.integers(0, 255, 3))
        cv2.rectangle(img, (px, py), (px + int(rng.integers(10, 60)), py + 30), colour, -1)
    # A shop front and two signs above the road, text painted on the road.
    shop = str(rng.choice(SHOPS))
    board = text_image(
        shop,
        float(rng.uniform(16, 26)),
        int(rng.choice(FONTS)),
        tuple(int(c) for c in rng.integers(200, 255, 3)),
        tuple(int(c) for c in rng.integers(20, 120, 3)),
        border=False,
    )
    h, w = board.shape[:2]
    x = float(rng.uniform(w / 2, WIDTH - w / 2))
    paste(img, board, quad_at(x, 30 + h / 2, w, h, 0.0, (0.0, 0.0)))
    for sign in rng.choice(SIGNS, 2, replace=False):
        board = text_image(
            str(sign), float(rng.uniform(12, 20)), int(rng.choice(FONTS)), (20, 20, 20), (230,) * 3
        )
        h, w = board.shape[:2]
        x, y = float(rng.uniform(w / 2, WIDTH - w / 2)), float(rng.uniform(70, 140 - h / 2))
        paste(img, board, quad_at(x, y, w, h, float(rng.uniform(-5, 5)), (0.1, 0.0)))
    paint = text_image(
        str(rng.choice(ROAD)), 34.0, cv2.FONT_HERSHEY_SIMPLEX, (215, 215, 215), (70, 70, 75)
    )
    h, w = paint.shape[:2]
    x = float(rng.uniform(w / 2, WIDTH - w / 2))
    # Painted text is long and flat as the camera sees it: the top narrower than the bottom.
    paste(img, paint, quad_at(x, 312, w * 1.2, h * 0.55, 0.0, (0.0, 0.25)))
    return img


def draw_vehicle(img: np.ndarray, v: Vehicle, cx: float) -> None:
    ph, pw = v.plate.shape[:2]
    x0, y0 = int(cx - pw / 2), int(v.lane_y - ph / 2)
    body_w, body_h = int(0.45 * pw), int(1.4 * ph)
    cv2.rectangle(
        img, (x0 - body_w, y0 - body_h), (x0 + pw + body_w, y0 + ph + ph // 2), v.body, -1
    )
    shade = tuple(max(0, c - 40) for c in v.body)  # windscreen
    cv2.rectangle(img, (x0 - body_w // 2, y0 - body_h), (x0 + pw + body_w // 2, y0 - ph), shade, -1)
    if v.livery is not None:
        lh, lw = v.livery.shape[:2]
        side = x0 - body_w // 2 + lw // 2 if v.direction > 0 else x0 + pw + body_w // 2 - lw // 2
        quad = quad_at(side, y0 - ph // 2 - lh // 2, lw, lh, 0.0, (0.0, 0.0))
        paste(img, v.livery, quad)
    paste(img, v.plate, quad_at(cx, v.lane_y, pw, ph, v.angle, v.skew))


def degrade(img: np.ndarray, rng: np.random.Generator, level: Level, light: float) -> np.ndarray:
    blur = int(rng.integers(level.blur[0], level.blur[1] + 1))
    if blur > 1:
        kernel = np.zeros((blur, blur), np.float32)
        kernel[blur // 2, :] = 1.0 / blur  # horizontal motion blur
        img = cv2.filter2D(img, -1, kernel)
    noise = rng.normal(0, level.noise * (2.0 if light < 0.5 else 1.0), img.shape)
    out = np.clip(img.astype(np.float32) * light + noise, 0, 255).astype(np.uint8)
    ok, jpeg = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, level.jpeg])
    if not ok:
        msg = "cannot encode a frame as JPEG"
        raise RuntimeError(msg)
    return np.asarray(cv2.imdecode(jpeg, cv2.IMREAD_COLOR))


def make_camera(
    camera: str,
    path: Path,
    *,
    seconds: float,
    seed: int,
    formats: tuple[str, ...],
    level: Level,
    fourcc: str = "mp4v",
) -> list[Passage]:
    """Write one camera's video; return its passages."""
    rng = np.random.default_rng(seed)
    frames = int(seconds * FPS)
    base = background(rng)
    light = float(rng.uniform(*level.light))
    vehicles: list[Vehicle] = []
    start = int(rng.integers(2, 8))
    while True:
        lane_y = int(rng.choice([205, 280]))
        text_px = float(rng.uniform(*level.text_px)) * (0.8 if lane_y < 243 else 1.0)
        text = plate_text(rng, str(rng.choice(formats)))
        plate = text_image(
            text,
            text_px,
            int(rng.choice(FONTS)),
            (15, 15, 15),
            PLATE_COLOURS[int(rng.integers(0, len(PLATE_COLOURS)))],
        )
        body = tuple(int(c) for c in rng.integers(20, 160, 3))
        livery = None
        if rng.random() < 0.3:
            livery = text_image(
                str(rng.choice(LIVERY)),
                text_px * 0.9,
                int(rng.choice(FONTS)),
                (240,) * 3,
                body,
                border=False,
            )
        speed = int(rng.integers(28, 44))  # pixels per frame
        pw = plate.shape[1]
        span = (WIDTH + 2 * pw + 120) // speed + 1
        if start + span >= frames:
            break
        skew = (float(rng.uniform(-level.perspective, level.perspective)), 0.0)
        angle = float(rng.uniform(-level.rotation, level.rotation))
        direction = int(rng.choice([-1, 1]))
        vehicles.append(
            Vehicle(text, plate, livery, body, angle, skew, speed, lane_y, direction, start)
        )
        start += span - 8 + int(rng.integers(0, 4))
    positions: dict[int, list[tuple[Vehicle, float]]] = {}
    passages: list[Passage] = []
    for v in vehicles:
        pw = v.plate.shape[1]
        full: list[int] = []
        for k in range(frames - v.start):
            travel = -pw - 60 + k * v.speed
            cx = travel if v.direction > 0 else WIDTH - travel
            if (cx < -2 * pw or cx > WIDTH + 2 * pw) and k > 0:
                break
            positions.setdefault(v.start + k, []).append((v, cx))
            if pw // 2 + 4 <= cx <= WIDTH - pw // 2 - 4:
                full.append(v.start + k)
        if full:
            passages.append(Passage(camera, v.text, full[0], full[-1], v.lane_y, v.direction))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*fourcc), FPS, (WIDTH, HEIGHT))
    if not writer.isOpened():
        msg = f"cannot write {path} with fourcc {fourcc}"
        raise RuntimeError(msg)
    try:
        for i in range(frames):
            img = base.copy()
            for v, cx in positions.get(i, []):
                draw_vehicle(img, v, cx)
            writer.write(degrade(img, rng, level, light))
    finally:
        writer.release()
    return passages


def make_dataset(
    folder: Path,
    *,
    cameras: int = 3,
    seconds: float = 10.0,
    seed: int = 7,
    level: str = "medium",
) -> tuple[dict[str, Path], list[Passage], tuple[str, ...]]:
    """Write ``cameras`` videos into ``folder`` with ``truth.json`` (``{camera: [plates]}``,
    what ``--ground-truth`` reads), ``passages.json`` (each plate's frames) and
    ``formats.txt`` (the formats drawn, as ``--plate-format`` takes them)."""
    if level not in LEVELS:
        msg = f"unknown level {level!r}: expected one of {', '.join(LEVELS)}"
        raise ValueError(msg)
    folder.mkdir(parents=True, exist_ok=True)
    formats = draw_formats(np.random.default_rng(seed))
    videos: dict[str, Path] = {}
    truth: list[Passage] = []
    for c in range(cameras):
        camera = f"cam{c}"
        path = folder / f"{camera}.mp4"
        truth.extend(
            make_camera(
                camera,
                path,
                seconds=seconds,
                seed=seed * 100 + c,
                formats=formats,
                level=LEVELS[level],
            )
        )
        videos[camera] = path
    shown = {cam: [p.text for p in truth if p.camera == cam] for cam in videos}
    (folder / "truth.json").write_text(json.dumps(shown, indent=1))
    (folder / "passages.json").write_text(json.dumps([asdict(p) for p in truth], indent=1))
    (folder / "formats.txt").write_text(",".join(formats) + "\n")
    return videos, truth, formats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default="out/gates")
    parser.add_argument("--cameras", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--level", choices=list(LEVELS), default="medium")
    args = parser.parse_args()
    out = Path(args.out)
    vids, passages, formats = make_dataset(
        out, cameras=args.cameras, seconds=args.seconds, seed=args.seed, level=args.level
    )
    print(f"wrote {len(vids)} videos and {len(passages)} plates ({','.join(formats)}) to {out}")


if __name__ == "__main__":
    main()
