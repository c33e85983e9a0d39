"""Gate-camera footage from a generator the flagship never saw, and a score of it on that footage.

``examples/gates/`` is judged on footage from generators other than its own ``synth.py``. This
one was written without reading ``synth.py`` or the application's reading code (``plates``,
``track``, ``ocr``), from what gate cameras show, and differs from it on purpose:

- **plates**: drawn with Pillow's FreeType (TrueType faces under ``/usr/share/fonts`` where
  there are any, else ``ImageFont.load_default(size=...)``), never OpenCV's Hershey fonts. EU
  plates (white, or yellow as in the Netherlands) with a blue band on the left holding a ring
  of stars and a country code (``F``, ``NL``, ``D``; not part of the plate's text), British
  yellow rear and white front plates, black plates with white text, thin border lines, a
  hyphen or a space printed inside the text (``AB-123-CD``, ``AB12 CDE``). Formats
  ``LL99LLL``, ``LL-999-LL``, ``99-LLL-9``, ``LLL999``, ``999LLL``, ``LL999LL`` with all 26 letters
  (O, I and Q included). The ground truth is the text without separators; the formats given
  to the application are written as a user would, with the dashes the plates show.
- **vehicles**: cars and vans of different sizes crossing from either side in one or two
  lanes (sometimes two in view, sometimes one following another), or approaching the camera
  (the plate grows from small to large and leaves at the bottom), at different speeds; plates
  rotated up to 8 degrees and seen in perspective.
- **distractors**: a shop front, a street-name sign, a road sign, a house number, painted road
  text, model badges beside the plate (``320D``, ``XC90``), a country sticker, a dealer's name
  under the plate, a phone number on a van's back doors, and a CCTV timestamp overlay (OSD) in a
  corner (``2026-12-06 14:03:22 CAM 2``) that changes every second.
- **levels**: easy (clear, text 22-30 px), medium (some defocus, motion blur, JPEG artefacts,
  mild noise, text 16-22 px), hard (text 12-16 px, motion blur, low light with sensor noise,
  headlight glare, rain streaks).
- **cameras**: 640x360 to 1280x720, 10 to 25 frames/s, written as mp4 (``cv2.VideoWriter``)
  or as a folder of JPEG images.

    python benchmarks/foreign_gates.py make --seed 3 --level hard --out /tmp/foreign
    python benchmarks/foreign_gates.py score --seeds 1-5 --level medium [--modes formats none]
        [--keep DIR] [--json FILE] [--size 1920x1080] [--fps 30]

``make`` writes the clips, ``truth.json`` (``{camera: [plates]}``), ``formats.txt`` (the formats
drawn, as ``--plate-format`` takes them) and ``meta.json`` (per plate: when it is fully in view,
its text height, style, rotation; the distractor texts). ``score`` makes each seed's footage in a
temporary folder, runs the application as a user would (``python examples/gates/run.py --source
... --plate-format ... --events ... --ground-truth ...``, and once without ``--plate-format``),
reads the events file against the truth and prints the plates read correctly, the wrong events,
the duplicates, and for each missed plate and wrong event what happened. ``--size`` and
``--fps`` film every camera at one size and frame rate (each seed draws the same scene and
vehicles otherwise): footage at sizes and rates the drawn ones do not cover, such as 1920x1080
at 30 frames/s.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import random
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parents[1]
FONT_DIR = Path("/usr/share/fonts/truetype")

# Plate faces: condensed and mono sans faces, as plate fonts are; None is Pillow's own
# FreeType face (load_default(size=...)), so a machine without these fonts still draws plates.
PLATE_FACES = (
    "dejavu/DejaVuSansCondensed-Bold.ttf",
    "liberation/LiberationSansNarrow-Bold.ttf",
    "dejavu/DejaVuSansMono-Bold.ttf",
    "liberation/LiberationSans-Bold.ttf",
    "liberation/LiberationMono-Bold.ttf",
    None,
)
SCENE_FACES = (
    "dejavu/DejaVuSans-Bold.ttf",
    "dejavu/DejaVuSerif-Bold.ttf",
    "liberation/LiberationSans-Regular.ttf",
    "liberation/LiberationSerif-Bold.ttf",
    "dejavu/DejaVuSansCondensed.ttf",
    None,
)
OSD_FACES = ("dejavu/DejaVuSansMono.ttf", "liberation/LiberationMono-Regular.ttf", None)

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
DIGITS = "0123456789"


@dataclass(frozen=True)
class Format:
    name: str
    pattern: str  # as given to --plate-format
    layout: str  # as printed: L a letter, 9 a digit, anything else printed as is
    styles: tuple[str, ...]
    band: str | None  # the country code in the blue band, if the style has one


FORMATS = (
    Format("uk", "LL99LLL", "LL99 LLL", ("uk_yellow", "uk_white"), "UK"),
    Format("fr", "LL-999-LL", "LL-999-LL", ("eu_white",), "F"),
    Format("nl", "99-LLL-9", "99-LLL-9", ("eu_yellow",), "NL"),
    Format("old", "LLL999", "LLL 999", ("black", "white"), None),
    Format("rev", "999LLL", "999 LLL", ("black", "white", "eu_white"), "IRL"),
    Format("de", "LL999LL", "LL 999 LL", ("eu_white", "white"), "D"),
)


@dataclass(frozen=True)
class Level:
    text: tuple[float, float]  # plate text (capital) height, px
    rotation: float  # degrees, at most
    perspective: float  # keystone, at most (fraction of the side)
    defocus: tuple[float, float]  # gaussian sigma, px
    motion: tuple[float, float]  # motion blur length, px (clipped from exposure x speed)
    light: tuple[float, float]
    gamma: float
    noise: tuple[float, float]  # sensor noise sigma at full light, grey levels
    jpeg: tuple[int, int]
    glare: float  # probability that vehicles drive with their lights on (glare)
    rain: float  # probability that a camera sees rain


LEVELS = {
    "easy": Level((22, 30), 3, 0.06, (0.0, 0.4), (0, 1.5), (0.9, 1.1), 1.0, (1, 2), (85, 95), 0, 0),
    "medium": Level(
        (16, 22), 6, 0.12, (0.5, 0.9), (1, 4), (0.6, 0.95), 1.05, (3, 5), (40, 60), 0.2, 0.2
    ),
    "hard": Level(
        (12, 16), 8, 0.2, (0.6, 1.1), (3, 7), (0.35, 0.6), 1.0, (5, 7), (35, 50), 0.8, 0.7
    ),
}

RESOLUTIONS = ((640, 360), (800, 450), (960, 540), (1024, 576), (1280, 720))
FRAME_RATES = (10, 12, 15, 20, 25)
CAMERA_NAMES = ("north_gate", "south_gate", "yard_exit", "loading_bay", "car_park_in", "depot_2")
BODY_COLOURS = (
    (200, 200, 205),
    (235, 235, 235),
    (30, 30, 35),
    (40, 40, 150),  # BGR: red
    (140, 60, 20),  # blue
    (40, 90, 40),
    (110, 110, 115),
    (60, 160, 210),
    (20, 50, 90),
)
SHOPS = (
    "KEBAB 24",
    "PIZZA ROMA",
    "CAFE 7",
    "LAUNDRETTE",
    "MINIMART 24/7",
    "PHONE FIX",
    "BOOKS & MORE",
    "HAIR STUDIO 21",
)
STREETS = ("HIGH ST W1", "QUEENS RD SE15", "RUE DE LA PAIX", "MARKT 12", "STATION RD N4")
ROAD_SIGNS = ("A40 OXFORD", "M25 J14", "N7 PARIS", "P 2H", "A1 NORTH", "E40 GENT")
HOUSE_NUMBERS = ("17", "221B", "42A", "No 8", "136")
PAINTED = ("BUS LANE", "SLOW", "KEEP CLEAR", "STOP", "BUS 24", "ZONE 30")
BADGES = ("320D", "XC90", "A4", "C220", "V70", "GTI", "TDI", "3008", "E 300")
DEALERS = ("SMITHS MOTORS LEEDS", "AUTOHAUS KOCH", "GARAGE DU CENTRE", "VAN DER BERG AUTO")
VAN_NAMES = ("ACME PLUMBING", "FAST PARCELS", "J. BROWN & SONS", "CITY ELECTRICS")
PHONES = ("0161 496 0785", "TEL 0800 123 456", "020 7946 0321", "CALL 07700 900461")


def face(name: str | None, size: float) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    px = max(6, round(size))
    if name is not None and (FONT_DIR / name).exists():
        return ImageFont.truetype(str(FONT_DIR / name), px)
    return ImageFont.load_default(size=px)


def sized_face(name: str | None, cap: float) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """The face at the size whose capital letters are ``cap`` pixels high."""
    probe = face(name, 100)
    box = probe.getbbox("H")
    return face(name, 100 * cap / max(1, box[3] - box[1]))


def draw_text(
    draw: ImageDraw.ImageDraw,
    xy: tuple[float, float],
    text: str,
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont,
    fill: tuple[int, ...],
    **kw: Any,
) -> tuple[float, float, float, float]:
    """Draws text with its capitals' top-left at xy; returns the box drawn."""
    box = font.getbbox("H")
    x, y = xy[0], xy[1] - box[1]
    draw.text((x, y), text, font=font, fill=fill, **kw)
    b = draw.textbbox((x, y), text, font=font, stroke_width=kw.get("stroke_width", 0))
    return (b[0], b[1], b[2], b[3])


# -- plates ------------------------------------------------------------------------------------


def plate_text(fmt: Format, rng: random.Random) -> str:
    return "".join(
        rng.choice(LETTERS) if c == "L" else rng.choice(DIGITS) if c == "9" else c
        for c in fmt.layout
    )


def render_plate(printed: str, style: str, band: str | None, font_name: str | None) -> np.ndarray:
    """A plate as an RGBA image (Pillow's channel order), capitals 40 px high."""
    cap = 40.0
    font = sized_face(font_name, cap)
    track = 0.1 * cap
    widths = []
    for ch in printed:
        if ch == " ":
            widths.append(0.45 * cap)
        else:
            b = font.getbbox(ch)
            widths.append(b[2] - b[0])
    text_w = sum(widths) + track * (len(printed) - 1)
    has_band = style.startswith("eu") or (style.startswith("uk") and band is not None)
    band_w = 0.62 * cap if has_band else 0.0
    margin = 0.38 * cap
    plate_h = cap / 0.68
    plate_w = band_w + 2 * margin + text_w
    ground, ink = {
        "eu_white": ((242, 242, 236), (15, 15, 15)),
        "eu_yellow": ((250, 200, 25), (15, 15, 15)),
        "uk_yellow": ((252, 212, 10), (12, 12, 12)),
        "uk_white": ((246, 246, 246), (12, 12, 12)),
        "black": ((22, 22, 24), (232, 232, 225)),
        "white": ((238, 238, 232), (20, 20, 20)),
    }[style]
    w, h = math.ceil(plate_w), math.ceil(plate_h)
    img = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    radius = int(0.12 * cap)
    d.rounded_rectangle((0, 0, w - 1, h - 1), radius=radius, fill=(*ground, 255))
    if style != "uk_yellow" or band is None:  # a thin border line
        inset = int(0.07 * cap)
        d.rounded_rectangle(
            (inset, inset, w - 1 - inset, h - 1 - inset),
            radius=radius,
            outline=(*ink, 255),
            width=max(1, int(0.05 * cap)),
        )
    if has_band and band is not None:
        d.rounded_rectangle((0, 0, int(band_w), h - 1), radius=radius, fill=(0, 51, 153, 255))
        d.rectangle((int(band_w) - radius, 0, int(band_w), h - 1), fill=(0, 51, 153, 255))
        cx, cy, r = band_w / 2, 0.3 * h, 0.2 * h
        for k in range(12):  # the ring of stars
            a = 2 * math.pi * k / 12
            sx, sy = cx + r * math.cos(a), cy + r * math.sin(a)
            d.ellipse((sx - 1.6, sy - 1.6, sx + 1.6, sy + 1.6), fill=(255, 204, 0, 255))
        code_font = sized_face(font_name, 0.3 * cap if len(band) < 3 else 0.22 * cap)
        cb = code_font.getbbox(band)
        draw_text(d, (cx - (cb[2] - cb[0]) / 2, 0.66 * h), band, code_font, (255, 255, 255, 255))
    x = band_w + margin
    y = (h - cap) / 2
    for ch, cw in zip(printed, widths, strict=True):
        if ch != " ":
            b = font.getbbox(ch)
            d.text((x - b[0], y - font.getbbox("H")[1]), ch, font=font, fill=(*ink, 255))
        x += cw + track
    return np.asarray(img)


def warp_rgba(img: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Warps an RGBA image by the homography m onto a canvas holding all of it; returns the image
    and the translated homography (source -> canvas)."""
    h, w = img.shape[:2]
    corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32).reshape(-1, 1, 2)
    out = cv2.perspectiveTransform(corners, m).reshape(-1, 2)
    x0, y0 = np.floor(out.min(axis=0)) - 2
    x1, y1 = np.ceil(out.max(axis=0)) + 2
    shift = np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1]], np.float64)
    mm = shift @ m
    size = (int(x1 - x0), int(y1 - y0))
    warped = cv2.warpPerspective(
        img, mm, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )
    return warped, mm


def tilt(w: float, h: float, angle: float, yaw: float, pitch: float) -> np.ndarray:
    """A homography turning a w x h board by angle degrees and showing it in perspective: its left
    (yaw > 0) or right side shorter, its top (pitch > 0) narrower."""
    src = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32)
    dst = src.copy()
    if yaw > 0:
        dst[0, 1] += yaw * h / 2
        dst[3, 1] -= yaw * h / 2
    else:
        dst[1, 1] -= yaw * h / 2
        dst[2, 1] += yaw * h / 2
    dst[0, 0] += pitch * w / 2
    dst[1, 0] -= pitch * w / 2
    c = np.array([w / 2, h / 2], np.float32)
    a = math.radians(angle)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]], np.float32)
    dst = (dst - c) @ rot.T + c
    return np.asarray(cv2.getPerspectiveTransform(src, dst.astype(np.float32)), np.float64)


# -- vehicles ------------------------------------------------------------------------------


@dataclass
class Vehicle:
    plate: str  # the ground truth: letters and digits
    printed: str
    style: str
    font: str | None
    sprite: np.ndarray  # BGRA, at the scale where the plate's capitals are 40 px
    plate_quad: np.ndarray  # the plate's corners in the sprite
    lights: list[tuple[float, float]]  # headlights in the sprite, when they glare
    rotation: float
    lane: int
    mode: str
    start: float = 0.0
    duration: float = 0.0
    cap: float = 0.0  # the plate's capital height in the frame (at the end, when approaching)
    direction: int = 1
    y_bottom: float = 0.0
    x_path: tuple[float, float] = (0.0, 0.0)
    blur: float = 0.0
    texts: list[str] = field(default_factory=list)
    front: bool = False
    cache: dict[str, Any] = field(default_factory=dict)


def make_vehicle(
    fmt: Format, level: Level, rng: random.Random, *, front: bool, glare: bool
) -> Vehicle:
    printed = plate_text(fmt, rng)
    style = rng.choice(fmt.styles)
    if style == "uk_yellow" and front:
        style = "uk_white"
    band = fmt.band if style.startswith("eu") or rng.random() < 0.5 else None
    font_name = rng.choice(PLATE_FACES)
    plate = render_plate(printed, style, band, font_name)
    ph, pw = plate.shape[:2]
    angle = rng.uniform(-level.rotation, level.rotation)
    plate_img, pm = warp_rgba(plate, tilt(pw, ph, angle, 0, 0))
    van = rng.random() < 0.25
    body_w = pw * (rng.uniform(2.7, 3.2) if van else rng.uniform(2.3, 3.0))
    body_h = body_w * (rng.uniform(0.8, 0.95) if van else rng.uniform(0.5, 0.68))
    bw, bh = int(body_w), int(body_h)
    img = Image.new("RGBA", (bw, bh), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    colour = rng.choice(BODY_COLOURS)[::-1]
    wheel = int(0.12 * bh)
    d.rectangle((int(0.08 * bw), bh - wheel, int(0.25 * bw), bh - 1), fill=(15, 15, 15, 255))
    d.rectangle((int(0.75 * bw), bh - wheel, int(0.92 * bw), bh - 1), fill=(15, 15, 15, 255))
    roof = 0.0 if van else rng.uniform(0.1, 0.16) * bw
    d.polygon(
        [
            (roof, 0),
            (bw - roof, 0),
            (bw, 0.45 * bh),
            (bw, bh - wheel),
            (0, bh - wheel),
            (0, 0.45 * bh),
        ],
        fill=(*colour, 255),
    )
    glass = (40, 45, 55, 255) if not front else (70, 80, 95, 255)
    if van:
        d.line((bw / 2, 0.05 * bh, bw / 2, 0.62 * bh), fill=(20, 20, 20, 255), width=2)
        d.rectangle((0.1 * bw, 0.06 * bh, 0.45 * bw, 0.22 * bh), fill=glass)
        d.rectangle((0.55 * bw, 0.06 * bh, 0.9 * bw, 0.22 * bh), fill=glass)
    else:
        d.polygon(
            [
                (roof + 0.04 * bw, 0.06 * bh),
                (bw - roof - 0.04 * bw, 0.06 * bh),
                (bw - 0.1 * bw, 0.4 * bh),
                (0.1 * bw, 0.4 * bh),
            ],
            fill=glass,
        )
    bumper_top = bh - wheel - 0.2 * bh
    d.rectangle((0, bumper_top, bw, bh - wheel), fill=(35, 35, 38, 255))
    light = (250, 245, 225, 255) if front else (200, 30, 30, 255)
    ly = 0.48 * bh
    lw, lh = 0.14 * bw, 0.1 * bh
    d.rectangle((0.03 * bw, ly, 0.03 * bw + lw, ly + lh), fill=light)
    d.rectangle((0.97 * bw - lw, ly, 0.97 * bw, ly + lh), fill=light)
    lights = [(0.03 * bw + lw / 2, ly + lh / 2), (0.97 * bw - lw / 2, ly + lh / 2)] if glare else []
    texts = []
    if van:  # the firm's name and telephone number on the back doors
        name, phone = rng.choice(VAN_NAMES), rng.choice(PHONES)
        f1 = sized_face(rng.choice(SCENE_FACES), 0.055 * bh)
        f2 = sized_face(rng.choice(SCENE_FACES), 0.045 * bh)
        ink = (250, 250, 250, 255) if sum(colour) < 300 else (20, 20, 20, 255)
        for text, f, y in ((name, f1, 0.28 * bh), (phone, f2, 0.38 * bh)):
            b = f.getbbox(text)
            draw_text(d, (bw / 2 - (b[2] - b[0]) / 2, y), text, f, ink)
            texts.append(text)
    elif rng.random() < 0.6:  # a model badge beside where the plate goes
        badge = rng.choice(BADGES)
        f = sized_face(rng.choice(SCENE_FACES), 0.35 * 40)
        x = rng.choice((0.66, 0.12)) * bw
        draw_text(
            d,
            (x, 0.42 * bh),
            badge,
            f,
            (200, 200, 200, 255),
            stroke_width=1,
            stroke_fill=(60, 60, 60, 255),
        )
        texts.append(badge)
    # the plate, centred on the bumper (some off centre)
    px = bw / 2 - plate_img.shape[1] / 2 + rng.uniform(-0.06, 0.06) * bw
    py = bumper_top + 0.5 * (bh - wheel - bumper_top) - plate_img.shape[0] / 2 - 0.05 * bh
    pil_plate = Image.fromarray(plate_img, "RGBA")
    img.alpha_composite(pil_plate, (int(px), int(py)))
    if rng.random() < 0.5:  # the dealer's name under the plate
        dealer = rng.choice(DEALERS)
        f = sized_face(rng.choice(SCENE_FACES), 0.16 * 40)
        b = f.getbbox(dealer)
        draw_text(
            d,
            (
                bw / 2 - (b[2] - b[0]) / 2 + px - (bw / 2 - plate_img.shape[1] / 2),
                py + plate_img.shape[0] + 2,
            ),
            dealer,
            f,
            (230, 230, 230, 255),
        )
        texts.append(dealer)
    if rng.random() < 0.35:  # a country sticker (an oval) or a parking permit near the plate
        code = rng.choice(("D", "NL", "GB", "F", "P 24"))
        sx = (
            px + plate_img.shape[1] + 0.04 * bw
            if px + plate_img.shape[1] < 0.8 * bw
            else px - 0.16 * bw
        )
        sy = py - 0.02 * bh
        d.ellipse(
            (sx, sy, sx + 0.11 * bw, sy + 0.08 * bw),
            fill=(245, 245, 245, 255),
            outline=(10, 10, 10, 255),
            width=2,
        )
        f = sized_face(rng.choice(PLATE_FACES), 0.04 * bw)
        b = f.getbbox(code)
        draw_text(
            d, (sx + 0.055 * bw - (b[2] - b[0]) / 2, sy + 0.02 * bw), code, f, (10, 10, 10, 255)
        )
        texts.append(code)
    quad = cv2.perspectiveTransform(
        np.array([[0, 0], [pw, 0], [pw, ph], [0, ph]], np.float32).reshape(-1, 1, 2), pm
    ).reshape(-1, 2) + np.array([int(px), int(py)], np.float32)
    body = np.asarray(img)
    # the whole vehicle in perspective (seen a little from the side, and from above)
    yaw = rng.uniform(-level.perspective, level.perspective)
    pitch = rng.uniform(0, level.perspective * 0.6)
    sprite, vm = warp_rgba(body, tilt(bw, bh, 0, yaw, pitch))
    quad = cv2.perspectiveTransform(quad.reshape(-1, 1, 2).astype(np.float32), vm).reshape(-1, 2)
    if lights:
        pts = np.array(lights, np.float32).reshape(-1, 1, 2)
        lights = [tuple(p) for p in cv2.perspectiveTransform(pts, vm).reshape(-1, 2).tolist()]
    sprite = cv2.cvtColor(sprite, cv2.COLOR_RGBA2BGRA)
    plain = "".join(c for c in printed if c.isalnum())
    return Vehicle(
        plain,
        printed,
        style,
        font_name,
        sprite,
        quad,
        lights,
        angle,
        0,
        "front" if front else "rear",
        texts=texts,
        front=front,
    )


# -- the scene ---------------------------------------------------------------------------------


def make_background(
    w: int, h: int, rng: random.Random, road_top: float
) -> tuple[np.ndarray, list[str]]:
    img = Image.new("RGB", (w, h), (150, 160, 170))
    d = ImageDraw.Draw(img)
    texts: list[str] = []
    wall = tuple(rng.randint(90, 190) for _ in range(3))
    d.rectangle((0, 0, w, road_top), fill=wall)
    for wx in range(int(0.05 * w), w, int(0.12 * w)):  # windows
        d.rectangle((wx, 0.04 * h, wx + 0.06 * w, 0.14 * h), fill=(60, 70, 85))
    # a shop front with its name on a fascia board
    sx0 = rng.uniform(0.05, 0.45) * w
    sx1 = sx0 + rng.uniform(0.3, 0.45) * w
    fascia = (rng.randint(0, 120), rng.randint(0, 120), rng.randint(0, 120))
    d.rectangle((sx0, 0.17 * h, sx1, 0.26 * h), fill=fascia)
    shop = rng.choice(SHOPS)
    f = sized_face(rng.choice(SCENE_FACES), 0.045 * h)
    draw_text(d, (sx0 + 0.03 * w, 0.195 * h), shop, f, (250, 240, 200))
    texts.append(shop)
    d.rectangle((sx0, 0.26 * h, sx1, road_top - 0.02 * h), fill=(90, 110, 120))
    # a house number on a small blue board
    hx = sx1 + 0.04 * w if sx1 < 0.85 * w else sx0 - 0.1 * w
    number = rng.choice(HOUSE_NUMBERS)
    f = sized_face(rng.choice(SCENE_FACES), 0.03 * h)
    b = f.getbbox(number)
    d.rectangle(
        (hx, 0.19 * h, hx + b[2] - b[0] + 0.02 * w, 0.19 * h + 0.05 * h), fill=(120, 50, 20)
    )
    draw_text(d, (hx + 0.01 * w, 0.2 * h), number, f, (255, 255, 255))
    texts.append(number)
    # a street-name sign: white board, black letters, thin border
    street = rng.choice(STREETS)
    f = sized_face("dejavu/DejaVuSans-Bold.ttf", 0.028 * h)
    b = f.getbbox(street)
    tx = rng.uniform(0.02, 0.6) * w
    d.rectangle(
        (tx, 0.02 * h, tx + b[2] - b[0] + 0.03 * w, 0.08 * h),
        fill=(245, 245, 245),
        outline=(20, 20, 20),
        width=2,
    )
    draw_text(d, (tx + 0.015 * w, 0.035 * h), street, f, (20, 20, 20))
    texts.append(street)
    # pavement, road, lane line
    d.rectangle((0, road_top - 0.03 * h, w, road_top), fill=(160, 160, 155))
    d.rectangle((0, road_top, w, h), fill=(75, 75, 78))
    # a road sign on a pole: green or blue board, white or yellow text
    sign = rng.choice(ROAD_SIGNS)
    f = sized_face(rng.choice(SCENE_FACES), 0.035 * h)
    b = f.getbbox(sign)
    rx = rng.choice((0.02 * w, 0.98 * w - (b[2] - b[0]) - 0.03 * w))
    d.rectangle((rx + 0.01 * w, 0.2 * h, rx + 0.02 * w, road_top), fill=(120, 120, 120))
    board = rng.choice(((30, 110, 40), (160, 70, 20), (250, 250, 250)))
    ink = (250, 220, 0) if board[0] < 100 else (255, 255, 255) if board[0] < 200 else (0, 0, 0)
    d.rectangle(
        (rx, 0.1 * h, rx + b[2] - b[0] + 0.03 * w, 0.19 * h),
        fill=board,
        outline=(250, 250, 250),
        width=2,
    )
    draw_text(d, (rx + 0.015 * w, 0.125 * h), sign, f, ink)
    texts.append(sign)
    # painted road text, squashed as seen along the road
    painted = rng.choice(PAINTED)
    pf = sized_face(rng.choice(SCENE_FACES), 0.08 * h)
    pb = pf.getbbox(painted)
    layer = Image.new("L", (pb[2] - pb[0] + 8, int(0.1 * h) + 8), 0)
    draw_text(ImageDraw.Draw(layer), (4, 4), painted, pf, (255,))
    layer = layer.resize((layer.width, max(4, int(layer.height * 0.45))))
    px = int(rng.uniform(0.05, 0.95) * w - layer.width / 2)
    py = int(rng.uniform(road_top + 0.02 * h, h - layer.height - 2))
    colour = Image.new("RGB", layer.size, (230, 230, 220) if rng.random() < 0.7 else (230, 200, 40))
    img.paste(colour, (px, py), layer)
    texts.append(painted)
    arr = cv2.cvtColor(np.asarray(img), cv2.COLOR_RGB2BGR)
    return np.ascontiguousarray(arr), texts


def paste(frame: np.ndarray, sprite: np.ndarray, x: float, y: float) -> None:
    """Alpha-blends a BGRA sprite into frame with its top-left at (x, y)."""
    h, w = sprite.shape[:2]
    x0, y0 = round(x), round(y)
    fx0, fy0 = max(0, x0), max(0, y0)
    fx1, fy1 = min(frame.shape[1], x0 + w), min(frame.shape[0], y0 + h)
    if fx1 <= fx0 or fy1 <= fy0:
        return
    part = sprite[fy0 - y0 : fy1 - y0, fx0 - x0 : fx1 - x0].astype(np.float32)
    alpha = part[..., 3:4] / 255.0
    region = frame[fy0:fy1, fx0:fx1].astype(np.float32)
    frame[fy0:fy1, fx0:fx1] = (region * (1 - alpha) + part[..., :3] * alpha).astype(np.uint8)


def motion_blur(img: np.ndarray, length: float, vertical: bool = False) -> np.ndarray:
    n = round(length)
    if n < 2:
        return img
    k = np.zeros((n, n), np.float32)
    if vertical:
        k[:, n // 2] = 1.0 / n
    else:
        k[n // 2, :] = 1.0 / n
    return cv2.filter2D(img, -1, k)


@dataclass
class Camera:
    name: str
    width: int
    height: int
    fps: int
    mode: str
    as_images: bool
    level: Level
    rain: bool
    vehicles: list[Vehicle]
    background: np.ndarray
    texts: list[str]
    osd_corner: str
    osd_format: str
    osd_label: str
    start_time: dt.datetime
    defocus: float
    light: float
    noise: float
    jpeg: int


def side_lane(
    level: Level,
    formats: list[Format],
    rng: random.Random,
    seconds: float,
    w: int,
    fps: int,
    glare: bool,
    lane: int,
    caps: tuple[float, float],
    bottom_of: Any,
) -> list[Vehicle]:
    """The vehicles crossing one lane, all one way, one after another (never running into the
    one in front), each plate in view for at least 1.2 s and 9 frames."""
    direction = rng.choice((1, -1))
    t = rng.uniform(0.0, 1.5)
    out: list[Vehicle] = []
    tries = 0
    while tries < 30:
        tries += 1
        v = make_vehicle(rng.choice(formats), level, rng, front=False, glare=glare)
        v.lane, v.mode, v.direction = lane, "side", direction
        v.cap = rng.uniform(*caps)
        scale = v.cap / 40.0
        bottom = bottom_of(v, scale)
        if bottom is None:
            continue
        v.y_bottom = bottom
        vw = v.sprite.shape[1] * scale
        plate_w = float(np.ptp(v.plate_quad[:, 0])) * scale
        travel = w + vw
        need = max(1.2, 9 / fps)
        duration = max(rng.uniform(2.0, 4.2), need * travel / max(1.0, w - plate_w))
        v.duration = duration
        v.x_path = (-vw, float(w)) if direction > 0 else (float(w), -vw)
        start = t
        if out:  # the one in front must stay 20 px ahead while both are in view
            ahead = out[-1]
            aw = ahead.sprite.shape[1] * ahead.cap / 40.0
            while True:
                end = min(ahead.start + ahead.duration, start + duration)
                checks = [start, max(start, end)]
                if direction > 0:
                    ok = all(xpos(ahead, c) - (xpos(v, c, start) + vw) > 20 for c in checks)
                else:
                    ok = all(xpos(v, c, start) - (xpos(ahead, c) + aw) > 20 for c in checks)
                if ok:
                    break
                start += 0.1
        if start + duration > seconds - 0.2:
            break
        v.start = start
        speed = travel / duration
        v.blur = float(np.clip(speed / fps * rng.uniform(0.1, 0.3), *level.motion))
        out.append(v)
        t = start + rng.uniform(0.8, 3.0)
    return out


def plan_camera(
    name: str,
    level: Level,
    formats: list[Format],
    rng: random.Random,
    seconds: float,
    force: dict[str, Any] | None = None,
) -> Camera:
    """A camera's plan; ``force`` sets its ``size``, ``fps``, ``mode`` or ``images`` (after
    drawing them, so a seed draws the same vehicles and scene otherwise)."""
    force = force or {}
    w, h = rng.choice(RESOLUTIONS)
    fps = rng.choice(FRAME_RATES)
    mode = "approach" if rng.random() < 0.35 else "side"
    w, h = force.get("size", (w, h))
    fps = force.get("fps", fps)
    mode = force.get("mode", mode)
    road_top = rng.uniform(0.3, 0.38) * h
    background, texts = make_background(w, h, rng, road_top)
    lo, hi = level.text
    vehicles: list[Vehicle] = []
    glare = rng.random() < level.glare
    if mode == "side":
        near_bottom = h - rng.uniform(0.02, 0.06) * h
        near = side_lane(
            level,
            formats,
            rng,
            seconds,
            w,
            fps,
            glare,
            0,
            (lo + 0.3 * (hi - lo), hi),
            lambda v, s: near_bottom,
        )
        vehicles += near
        # a far lane when its plates can show above the near lane's roofs
        roofs = min((near_bottom - v.sprite.shape[0] * v.cap / 40 for v in near), default=h)

        def far_bottom(v: Vehicle, s: float) -> float | None:
            bottom = roofs - 3 + (v.sprite.shape[0] - v.plate_quad[:, 1].max()) * s
            bottom = min(bottom, near_bottom - 0.1 * h)
            return bottom if bottom - v.sprite.shape[0] * s > 0.04 * h else None

        if rng.random() < 0.8:
            vehicles += side_lane(
                level,
                formats,
                rng,
                seconds,
                w,
                fps,
                glare,
                1,
                (lo, lo + 0.7 * (hi - lo)),
                far_bottom,
            )
    else:
        t = rng.uniform(0.0, 1.0)
        while True:
            v = make_vehicle(rng.choice(formats), level, rng, front=True, glare=glare)
            v.mode = "approach"
            v.cap = rng.uniform(lo + 0.4 * (hi - lo), hi) * 1.15  # the largest, at the end
            v.duration = rng.uniform(2.8, 4.5)
            cx = rng.uniform(0.4, 0.6) * w
            v.x_path = (cx, cx + rng.uniform(-0.12, 0.12) * w)
            if t + v.duration > seconds - 0.2:
                break
            v.start = t
            v.blur = float(np.clip(rng.uniform(*level.motion) * 0.5, 0, None))
            vehicles.append(v)
            t += v.duration * rng.uniform(0.55, 1.1)
    return Camera(
        name=name,
        width=w,
        height=h,
        fps=fps,
        mode=mode,
        as_images=force.get("images", rng.random() < 0.25),
        level=level,
        rain=rng.random() < level.rain,
        vehicles=vehicles,
        background=background,
        texts=texts,
        osd_corner=rng.choice(("tl", "bl", "tr", "br")),
        osd_format=rng.choice(
            ("%Y-%m-%d %H:%M:%S {cam}", "%d/%m/%Y %H:%M:%S", "{cam} %Y-%m-%d %H:%M:%S")
        ),
        osd_label=rng.choice(("CAM 2", "CH03", "CAM 14", "GATE 1", "IPC 7")),
        start_time=dt.datetime(
            2026,
            rng.randint(1, 12),
            rng.randint(1, 28),
            rng.randint(0, 23),
            rng.randint(0, 59),
            rng.randint(0, 59),
        ),
        defocus=rng.uniform(*level.defocus),
        light=rng.uniform(*level.light),
        noise=rng.uniform(*level.noise),
        jpeg=rng.randint(*level.jpeg),
    )


def xpos(v: Vehicle, t: float, start: float | None = None) -> float:
    """The vehicle's left edge at time t (side mode)."""
    s = v.start if start is None else start
    f = (t - s) / v.duration
    return v.x_path[0] + f * (v.x_path[1] - v.x_path[0])


def place(v: Vehicle, t: float, cam: Camera) -> tuple[np.ndarray, float, float, float] | None:
    """The vehicle's sprite in the frame at time t, its top-left, and its scale; None when it
    is not in view."""
    f = (t - v.start) / v.duration
    if not 0.0 <= f <= 1.0:
        return None
    if v.mode == "side":
        scale = v.cap / 40.0
        sprite = v.cache.get("side")
        if sprite is None:
            sprite = cv2.resize(v.sprite, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            sprite = motion_blur(sprite, v.blur)
            v.cache["side"] = sprite
        return sprite, xpos(v, t), v.y_bottom - sprite.shape[0], scale
    # approaching: distance falls linearly, so the scale grows as 1/distance; the plate goes
    # from mid-frame to below the bottom edge
    d0, d1 = 3.0, 0.85
    dist = d0 + f * (d1 - d0)
    scale = v.cap / 40.0 / dist
    sprite = cv2.resize(v.sprite, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    sprite = motion_blur(sprite, v.blur * (1 + f), vertical=True)
    pq = v.plate_quad * scale
    pcx, pcy = pq[:, 0].mean(), pq[:, 1].mean()
    cx = v.x_path[0] + f * (v.x_path[1] - v.x_path[0])
    cy = cam.height * (0.42 + 0.72 * f**1.3)
    return sprite, cx - pcx, cy - pcy, scale


def plate_in_view(v: Vehicle, t: float, cam: Camera) -> float:
    """The plate's capital height in the frame at time t when the whole plate is in view, else 0."""
    where = place(v, t, cam)
    if where is None:
        return 0.0
    _, x, y, scale = where
    q = v.plate_quad * scale + np.array([x, y])
    if q[:, 0].min() < 1 or q[:, 1].min() < 1:
        return 0.0
    if q[:, 0].max() > cam.width - 2 or q[:, 1].max() > cam.height - 2:
        return 0.0
    return 40.0 * scale


class Osd:
    def __init__(self, cam: Camera, rng: random.Random) -> None:
        self.cam = cam
        self.font = sized_face(rng.choice(OSD_FACES), max(8.0, 0.028 * cam.height))
        self.cache: tuple[str, np.ndarray, np.ndarray] | None = None

    def text(self, t: float) -> str:
        now = self.cam.start_time + dt.timedelta(seconds=int(t))
        return now.strftime(self.cam.osd_format).replace("{cam}", self.cam.osd_label)

    def draw(self, frame: np.ndarray, t: float) -> None:
        text = self.text(t)
        if self.cache is None or self.cache[0] != text:
            b = self.font.getbbox(text)
            layer = Image.new("L", (b[2] + 6, b[3] + 6), 0)
            ImageDraw.Draw(layer).text(
                (3, 3), text, font=self.font, fill=255, stroke_width=1, stroke_fill=128
            )
            a = np.asarray(layer).astype(np.float32)
            ink = np.where(a > 200, 255.0, np.where(a > 0, 0.0, 0.0))
            alpha = np.clip(a / 128.0, 0, 1)
            self.cache = (text, ink, alpha)
        _, ink, alpha = self.cache
        h, w = ink.shape
        c = self.cam.osd_corner
        x = 6 if c[1] == "l" else frame.shape[1] - w - 6
        y = 6 if c[0] == "t" else frame.shape[0] - h - 6
        region = frame[y : y + h, x : x + w].astype(np.float32)
        a = alpha[..., None]
        frame[y : y + h, x : x + w] = (region * (1 - a) + ink[..., None] * a).astype(np.uint8)


def render(cam: Camera, seconds: float, out: Path, rng: random.Random) -> dict[str, Any]:
    """Writes the camera's clip; returns its description (the plates, when each is in view)."""
    n = round(seconds * cam.fps)
    nrng = np.random.default_rng(rng.randrange(2**32))
    noise_bank = [
        nrng.normal(0, 1, (cam.height, cam.width, 1)).astype(np.float32) for _ in range(4)
    ]
    osd = Osd(cam, rng)
    if cam.as_images:
        folder = out / cam.name
        folder.mkdir(parents=True, exist_ok=True)
        path = folder
        writer = None
    else:
        path = out / f"{cam.name}.mp4"
        writer = cv2.VideoWriter(
            str(path), cv2.VideoWriter_fourcc(*"mp4v"), cam.fps, (cam.width, cam.height)
        )
    lv = cam.level
    seen: dict[int, list[tuple[int, float]]] = {}
    grid: dict[str, np.ndarray] = {}
    order = sorted(range(len(cam.vehicles)), key=lambda i: (-cam.vehicles[i].lane, i))
    for k in range(n):
        t = k / cam.fps
        frame = cam.background.copy()
        lights: list[tuple[float, float, float, bool]] = []
        drawn = []
        for i in order:
            v = cam.vehicles[i]
            where = place(v, t, cam)
            if where is None:
                continue
            drawn.append((v.cap * (1 if v.mode == "side" else where[3] * 40 / v.cap), i, where))
        if cam.mode == "approach":  # the nearer (larger) in front
            drawn.sort(key=lambda d: d[0])
        for j, (_, i, (sprite, x, y, scale)) in enumerate(drawn):
            v = cam.vehicles[i]
            paste(frame, sprite, x, y)
            size = plate_in_view(v, t, cam)
            q = v.plate_quad * scale + np.array([x, y])
            hidden = any(  # a vehicle drawn over it covers part of the plate
                x2 < q[:, 0].max()
                and x2 + s2.shape[1] > q[:, 0].min()
                and y2 < q[:, 1].max()
                and y2 + s2.shape[0] > q[:, 1].min()
                for _, _, (s2, x2, y2, _) in drawn[j + 1 :]
            )
            if size > 0 and not hidden:
                seen.setdefault(i, []).append((k, size))
            for lx, ly in v.lights:
                lights.append((x + lx * scale, y + ly * scale, 40 * scale, v.front))
        img = frame.astype(np.float32)
        if cam.defocus > 0.3:
            img = cv2.GaussianBlur(img, (0, 0), cam.defocus)
        img = 255.0 * np.power(img / 255.0, lv.gamma) * cam.light
        if lights:  # headlight glare: a bright bloom around each lamp and a horizontal streak
            if "grid" not in grid:
                grid["grid"] = np.mgrid[0 : cam.height, 0 : cam.width].astype(np.float32)
            yy, xx = grid["grid"]
            glow = np.zeros((cam.height, cam.width, 3), np.float32)
            for lx, ly, cap, front in lights:
                s = 1.1 * cap / 0.68
                g = (230 if front else 110) * np.exp(
                    -((xx - lx) ** 2 + (yy - ly) ** 2) / (2 * s * s)
                )
                g += (60 if front else 25) * np.exp(
                    -((xx - lx) ** 2) / (2 * (6 * s) ** 2) - (yy - ly) ** 2 / (2 * (0.25 * s) ** 2)
                )
                tint = (0.9, 0.97, 1.0) if front else (0.3, 0.35, 1.0)  # BGR: white, red
                glow += g[..., None] * np.array(tint, np.float32)
            img += glow
        if cam.rain:
            streaks = np.zeros((cam.height, cam.width), np.float32)
            for _ in range(int(cam.width * cam.height / 3000)):
                x0, y0 = rng.uniform(0, cam.width), rng.uniform(0, cam.height)
                ln = rng.uniform(8, 22)
                cv2.line(streaks, (int(x0), int(y0)), (int(x0 + 0.25 * ln), int(y0 + ln)), 1.0, 1)
            img += 45 * cv2.GaussianBlur(streaks, (3, 3), 0)[..., None]
        sigma = cam.noise / max(0.35, cam.light) ** 0.5
        img += sigma * noise_bank[k % 4][np.roll(np.arange(cam.height), k * 7)] * np.float32(1)
        frame = np.clip(img, 0, 255).astype(np.uint8)
        osd.draw(frame, t)
        if writer is None:
            cv2.imwrite(str(path / f"{k:06d}.jpg"), frame, [cv2.IMWRITE_JPEG_QUALITY, cam.jpeg])
        else:
            _, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, cam.jpeg])
            writer.write(cv2.imdecode(buf, cv2.IMREAD_COLOR))
    if writer is not None:
        writer.release()
    plates = []
    for i, v in enumerate(cam.vehicles):
        frames = seen.get(i, [])
        plates.append(
            {
                "plate": v.plate,
                "printed": v.printed,
                "style": v.style,
                "font": v.font or "pillow-default",
                "mode": v.mode,
                "lane": v.lane,
                "rotation": round(v.rotation, 1),
                "first_frame": frames[0][0] if frames else None,
                "last_frame": frames[-1][0] if frames else None,
                "frames_in_view": len(frames),
                "cap_px": [round(min(s for _, s in frames), 1), round(max(s for _, s in frames), 1)]
                if frames
                else None,
                "blur_px": round(v.blur, 1),
                "texts": v.texts,
            }
        )
    return {
        "camera": cam.name,
        "source": str(path),
        "size": [cam.width, cam.height],
        "fps": cam.fps,
        "frames": n,
        "mode": cam.mode,
        "images": cam.as_images,
        "rain": cam.rain,
        "light": round(cam.light, 2),
        "noise": round(cam.noise, 1),
        "jpeg": cam.jpeg,
        "osd": osd.text(0),
        "texts": [*cam.texts, osd.text(0), cam.osd_label],
        "plates": plates,
    }


def make(
    out: Path,
    seed: int,
    level: str,
    cameras: int = 3,
    seconds: float = 12.0,
    force: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Writes a seed's footage under out; returns its description (also written as meta.json).
    ``force``: every camera's ``size``, ``fps`` or ``mode`` (``plan_camera``)."""
    rng = random.Random(f"foreign-{seed}-{level}")
    lv = LEVELS[level]
    out.mkdir(parents=True, exist_ok=True)
    formats = rng.sample(FORMATS, 3)
    names = rng.sample(CAMERA_NAMES, cameras)
    described = []
    for name in names:
        cam = plan_camera(name, lv, list(formats), rng, seconds, force)
        described.append(render(cam, seconds, out, rng))
    truth = {
        c["camera"]: [p["plate"] for p in sorted(c["plates"], key=lambda p: p["first_frame"] or 0)]
        for c in described
    }
    meta = {
        "seed": seed,
        "level": level,
        "formats": [f.pattern for f in formats],
        "cameras": described,
    }
    (out / "truth.json").write_text(json.dumps(truth, indent=1))
    (out / "formats.txt").write_text(",".join(f.pattern for f in formats) + "\n")
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    return meta


# -- scoring -----------------------------------------------------------------------------------


def plain(text: str) -> str:
    return re.sub(r"[^0-9A-Z]", "", text.upper())


def distance(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def judge(meta: dict[str, Any], events: list[dict[str, Any]]) -> dict[str, Any]:
    """Matches events to the plates shown, camera by camera."""
    correct = wrong = duplicates = 0
    shown = 0
    notes: list[str] = []
    for cam in meta["cameras"]:
        name = cam["camera"]
        mine = sorted((e for e in events if e["camera"] == name), key=lambda e: e["first_frame"])
        plates = cam["plates"]
        shown += len(plates)
        matched: set[int] = set()
        unmatched_events = []
        for e in mine:
            text = plain(e["plate"])
            hit = [i for i, p in enumerate(plates) if p["plate"] == text and i not in matched]
            if hit:
                matched.add(hit[0])
                correct += 1
            elif any(p["plate"] == text for p in plates):
                duplicates += 1
                notes.append(
                    f"  duplicate  {name}: {e['plate']} frames {e['first_frame']}-"
                    f"{e['last_frame']} ({e['reads']} reads)"
                )
            else:
                wrong += 1
                unmatched_events.append(e)
        for e in unmatched_events:
            text = plain(e["plate"])
            why = []
            for p in plates:
                if p["first_frame"] is None:
                    continue
                overlap = min(p["last_frame"], e["last_frame"]) - max(
                    p["first_frame"], e["first_frame"]
                )
                dd = distance(text, p["plate"])
                if dd <= 3 and overlap > -cam["fps"]:
                    why.append(
                        f"misread of {p['printed']} ({dd} apart, {p['style']}, "
                        f"cap {p['cap_px']} px, rot {p['rotation']})"
                    )
                for tx in p["texts"]:
                    if distance(text, plain(tx)) <= 2 or (text and text in plain(tx)):
                        why.append(f"vehicle text '{tx}' on {p['printed']}")
            for tx in cam["texts"]:
                if distance(text, plain(tx)) <= 2 or (len(text) >= 3 and text in plain(tx)):
                    why.append(f"scene text '{tx}'")
            notes.append(
                f"  wrong      {name}: {e['plate']} frames {e['first_frame']}-"
                f"{e['last_frame']} ({e['reads']} reads): "
                + ("; ".join(why) if why else "no plate or text near it")
            )
        for i, p in enumerate(plates):
            if i in matched:
                continue
            near = [
                e["plate"]
                for e in unmatched_events
                if p["first_frame"] is not None
                and e["first_frame"] <= p["last_frame"] + cam["fps"]
                and e["last_frame"] >= p["first_frame"] - cam["fps"]
            ]
            notes.append(
                f"  missed     {name}: {p['printed']} ({p['style']}, {p['mode']} lane {p['lane']},"
                f" cap {p['cap_px']} px, rot {p['rotation']}, blur {p['blur_px']} px, "
                f"frames {p['first_frame']}-{p['last_frame']}, {p['frames_in_view']} in view, "
                f"{cam['size'][0]}x{cam['size'][1]} at {cam['fps']}/s): "
                + (f"events near it: {', '.join(near)}" if near else "no event near it")
            )
    events_n = correct + wrong + duplicates
    return {
        "shown": shown,
        "correct": correct,
        "wrong": wrong,
        "duplicates": duplicates,
        "events": events_n,
        "notes": notes,
    }


def run_app(
    folder: Path, meta: dict[str, Any], with_formats: bool
) -> tuple[list[dict[str, Any]], str, float]:
    events = folder / ("events-formats.jsonl" if with_formats else "events-none.jsonl")
    events.unlink(missing_ok=True)
    cmd = [
        sys.executable,
        str(ROOT / "examples" / "gates" / "run.py"),
        "--source",
        *[c["source"] for c in meta["cameras"]],
        "--events",
        str(events),
        "--ground-truth",
        str(folder / "truth.json"),
        "--out",
        str(folder / ("app-formats" if with_formats else "app-none")),
    ]
    if with_formats:
        cmd += ["--plate-format", ",".join(meta["formats"])]
    t0 = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False)
    took = time.monotonic() - t0
    if done.returncode != 0:
        raise SystemExit(f"the application failed ({done.returncode}):\n{done.stderr[-3000:]}")
    lines = (
        [json.loads(x) for x in events.read_text().splitlines() if x.strip()]
        if events.exists()
        else []
    )
    return lines, done.stdout, took


def parse_seeds(text: str) -> list[int]:
    seeds: list[int] = []
    for part in text.split(","):
        if "-" in part:
            a, b = part.split("-")
            seeds.extend(range(int(a), int(b) + 1))
        else:
            seeds.append(int(part))
    return seeds


def score(args: argparse.Namespace) -> None:
    seeds = parse_seeds(args.seeds)
    totals = {
        m: {"shown": 0, "correct": 0, "wrong": 0, "duplicates": 0, "events": 0} for m in args.modes
    }
    results: list[dict[str, Any]] = []
    for seed in seeds:
        base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="foreign-gates-"))
        folder = base / f"{args.level}-{seed}"
        kept = folder / "meta.json"
        meta = json.loads(kept.read_text()) if args.keep and kept.exists() else None
        if meta is None or len(meta["cameras"]) != args.cameras:
            meta = make(folder, seed, args.level, args.cameras, args.seconds, forced(args))
        cams = ", ".join(
            f"{c['camera']} {c['size'][0]}x{c['size'][1]}@{c['fps']} {c['mode']}"
            f"{' jpg' if c['images'] else ''}{' rain' if c['rain'] else ''}"
            for c in meta["cameras"]
        )
        print(f"seed {seed} {args.level}: formats {','.join(meta['formats'])}; {cams}", flush=True)
        for mode in args.modes:
            events, stdout, took = run_app(folder, meta, mode == "formats")
            r = judge(meta, events)
            for k in totals[mode]:
                totals[mode][k] += r[k]
            print(
                f"  [{mode:7}] read {r['correct']}/{r['shown']}, wrong {r['wrong']}, "
                f"duplicates {r['duplicates']} ({took:.0f} s)",
                flush=True,
            )
            for note in r["notes"]:
                print("  " + note, flush=True)
            if args.verbose:
                print(stdout)
            results.append({"seed": seed, "mode": mode, **r})
    print(f"\n{args.level}, seeds {args.seeds}, {args.cameras} cameras x {args.seconds:g} s:")
    for mode, t in totals.items():
        ev = max(1, t["events"])
        print(
            f"  {mode:7}: read {t['correct']}/{t['shown']} = "
            f"{100 * t['correct'] / max(1, t['shown']):.1f}%,"
            f" wrong {t['wrong']} of {t['events']} events = {100 * t['wrong'] / ev:.1f}%,"
            f" duplicates {t['duplicates']} = {100 * t['duplicates'] / ev:.1f}%"
        )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"level": args.level, "seeds": seeds, "totals": totals, "runs": results}, indent=1
            )
        )


def forced(args: argparse.Namespace) -> dict[str, Any]:
    """What ``--size`` and ``--fps`` set for every camera (``plan_camera``'s ``force``)."""
    force: dict[str, Any] = {}
    if args.size:
        w, _, h = args.size.partition("x")
        force["size"] = (int(w), int(h))
    if args.fps:
        force["fps"] = args.fps
    return force


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    mk = sub.add_parser("make", help="write one seed's footage and its ground truth")
    mk.add_argument("--seed", type=int, required=True)
    mk.add_argument("--level", choices=list(LEVELS), default="medium")
    mk.add_argument("--out", required=True)
    mk.add_argument("--cameras", type=int, default=3)
    mk.add_argument("--seconds", type=float, default=12.0)
    mk.add_argument("--size", help="every camera this size, WxH (e.g. 1920x1080)")
    mk.add_argument("--fps", type=int, help="every camera at this frame rate")
    sc = sub.add_parser("score", help="run the application on fresh footage and score it")
    sc.add_argument("--seeds", default="1-5", help="e.g. 1-5 or 1,3,7")
    sc.add_argument("--level", choices=list(LEVELS), default="medium")
    sc.add_argument("--cameras", type=int, default=3)
    sc.add_argument("--seconds", type=float, default=12.0)
    sc.add_argument("--size", help="every camera this size, WxH (e.g. 1920x1080)")
    sc.add_argument("--fps", type=int, help="every camera at this frame rate")
    sc.add_argument("--modes", nargs="+", choices=("formats", "none"), default=["formats", "none"])
    sc.add_argument(
        "--keep", help="make the footage here and keep it (a seed made there before is reused)"
    )
    sc.add_argument("--json", help="write the figures and notes here")
    sc.add_argument("--verbose", action="store_true", help="print the application's output")
    args = parser.parse_args()
    if args.command == "make":
        meta = make(Path(args.out), args.seed, args.level, args.cameras, args.seconds, forced(args))
        for c in meta["cameras"]:
            print(
                f"{c['source']}: {c['size'][0]}x{c['size'][1]} at {c['fps']}/s, {c['mode']}, "
                f"plates {' '.join(p['printed'] for p in c['plates'])}"
            )
        print(f"formats {','.join(meta['formats'])}; truth {Path(args.out) / 'truth.json'}")
    else:
        score(args)


if __name__ == "__main__":
    main()
