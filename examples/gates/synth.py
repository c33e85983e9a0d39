"""Synthetic gate-camera videos with licence plates, and their ground truth.

Each camera films a gate: vehicles (a dark body carrying a plate) drive through the frame, one
after another, in one of two lanes and either direction. Plates read ``KTR4821`` (three letters,
four digits; O, I and Q are left out, as on real plates, since they read as 0, 1 and 0). The
frames get what real cameras add: a textured background, sensor noise, motion blur and JPEG
compression. The ground truth lists every plate with the frames where it is fully in view.

    python examples/gates/synth.py out/           # writes cam0.mp4 ... and truth.json
"""

from __future__ import annotations

import json
import string
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

WIDTH, HEIGHT, FPS = 640, 360, 10
LETTERS = "".join(c for c in string.ascii_uppercase if c not in "OIQ")
PLATE_W, PLATE_H = 150, 40
PLATE_FORMAT = r"^[A-HJ-NPR-Z]{3}[0-9]{4}$"


@dataclass(frozen=True)
class Passage:
    """One plate driving through one camera's view."""

    camera: str
    text: str
    first_frame: int  # first frame with the plate fully in view
    last_frame: int  # last frame with the plate fully in view
    lane_y: int
    direction: int  # +1 left to right, -1 right to left


def plate_text(rng: np.random.Generator) -> str:
    letters = "".join(rng.choice(list(LETTERS), 3))
    digits = "".join(rng.choice(list("0123456789"), 4))
    return letters + digits


def background(rng: np.random.Generator) -> np.ndarray:
    """A road scene: a gradient sky/wall, a road band, some static clutter."""
    img = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    top = rng.integers(60, 200, 3)
    bottom = rng.integers(40, 120, 3)
    for y in range(HEIGHT):
        t = y / HEIGHT
        img[y] = (top * (1 - t) + bottom * t).astype(np.uint8)
    cv2.rectangle(img, (0, 150), (WIDTH, 330), (70, 70, 75), -1)  # road
    for x in range(0, WIDTH, 80):
        cv2.line(img, (x, 240), (x + 40, 240), (200, 200, 200), 3)  # lane marks
    for _ in range(6):  # posts, signs, bushes
        x, y = int(rng.integers(0, WIDTH)), int(rng.integers(0, 140))
        colour = tuple(int(c) for c in rng.integers(0, 255, 3))
        cv2.rectangle(img, (x, y), (x + int(rng.integers(10, 60)), y + 30), colour, -1)
    return img


def draw_vehicle(img: np.ndarray, text: str, cx: int, lane_y: int, body: tuple[int, ...]) -> None:
    x0, y0 = cx - PLATE_W // 2, lane_y - PLATE_H // 2
    cv2.rectangle(img, (x0 - 60, y0 - 50), (x0 + PLATE_W + 60, y0 + PLATE_H + 25), body, -1)
    cv2.rectangle(img, (x0, y0), (x0 + PLATE_W, y0 + PLATE_H), (235, 235, 235), -1)
    cv2.rectangle(img, (x0, y0), (x0 + PLATE_W, y0 + PLATE_H), (20, 20, 20), 2)
    font = cv2.FONT_HERSHEY_DUPLEX
    scale = 0.8
    (tw, th), _ = cv2.getTextSize(text, font, scale, 2)
    org = (x0 + (PLATE_W - tw) // 2, y0 + (PLATE_H + th) // 2)
    cv2.putText(img, text, org, font, scale, (15, 15, 15), 2, cv2.LINE_AA)


def degrade(img: np.ndarray, rng: np.random.Generator, blur: int) -> np.ndarray:
    if blur > 1:
        kernel = np.zeros((blur, blur), np.float32)
        kernel[blur // 2, :] = 1.0 / blur  # horizontal motion blur
        img = cv2.filter2D(img, -1, kernel)
    noise = rng.normal(0, 5, img.shape)
    img = np.clip(img.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    ok, jpeg = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 60])
    assert ok
    return cv2.imdecode(jpeg, cv2.IMREAD_COLOR)


def make_camera(
    camera: str, path: Path, *, seconds: float, seed: int, fourcc: str = "mp4v"
) -> list[Passage]:
    """Write one camera's video; return its passages."""
    rng = np.random.default_rng(seed)
    frames = int(seconds * FPS)
    base = background(rng)
    passages: list[Passage] = []
    schedule: list[tuple[int, str, int, int, int, tuple[int, ...]]] = []
    start = int(rng.integers(2, 8))
    while True:
        speed = int(rng.integers(32, 44))  # pixels per frame
        span = (WIDTH + PLATE_W + 160) // speed + 1
        if start + span >= frames:
            break
        lane_y = int(rng.choice([205, 280]))
        direction = int(rng.choice([-1, 1]))
        body = tuple(int(c) for c in rng.integers(20, 160, 3))
        schedule.append((start, plate_text(rng), speed, lane_y, direction, body))
        start += span - 8 + int(rng.integers(0, 4))
    positions: dict[int, list[tuple[int, str, int, tuple[int, ...]]]] = {}
    for t0, text, speed, lane_y, direction, body in schedule:
        full: list[int] = []
        for k in range(frames - t0):
            travel = -PLATE_W // 2 - 80 + k * speed
            cx = travel if direction > 0 else WIDTH - travel
            if (cx < -PLATE_W - 80 or cx > WIDTH + PLATE_W + 80) and k > 0:
                break
            positions.setdefault(t0 + k, []).append((cx, text, lane_y, body))
            if PLATE_W // 2 + 4 <= cx <= WIDTH - PLATE_W // 2 - 4:
                full.append(t0 + k)
        if full:
            passages.append(Passage(camera, text, full[0], full[-1], lane_y, direction))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), FPS, (WIDTH, HEIGHT))
    if not writer.isOpened():
        msg = f"cannot write {path} with fourcc {fourcc}"
        raise RuntimeError(msg)
    try:
        for i in range(frames):
            img = base.copy()
            for cx, text, lane_y, body in positions.get(i, []):
                draw_vehicle(img, text, cx, lane_y, body)
            writer.write(degrade(img, rng, blur=int(rng.integers(1, 6))))
    finally:
        writer.release()
    return passages


def make_dataset(
    folder: Path, *, cameras: int = 3, seconds: float = 10.0, seed: int = 7
) -> tuple[dict[str, Path], list[Passage]]:
    """Write ``cameras`` videos and ``truth.json`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    videos: dict[str, Path] = {}
    truth: list[Passage] = []
    for c in range(cameras):
        camera = f"cam{c}"
        path = folder / f"{camera}.mp4"
        truth.extend(make_camera(camera, path, seconds=seconds, seed=seed * 100 + c))
        videos[camera] = path
    (folder / "truth.json").write_text(json.dumps([asdict(p) for p in truth], indent=1))
    return videos, truth


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "out/gates")
    vids, passages = make_dataset(out)
    print(f"wrote {len(vids)} videos and {len(passages)} plates to {out}")
