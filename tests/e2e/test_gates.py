"""End to end: the flagship gate-camera application, real video and real models.

The demo test runs a short generated clip at the demo's level (medium: 12-21 px text, up to 5 px
motion blur, perspective, dim light, JPEG 60, signs and shop fronts in view) and requires at
least 5 of every 6 plates read, at most one wrong event and no duplicate: a clear regression in
decoding, cropping, batching or tracking fails it, a single unlucky plate does not. The other
tests run the command line on footage it did not make, and the plate-format rules alone.
"""

from __future__ import annotations

import asyncio
import json
import pickle
import socket
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import cv2
import numpy as np
import pytest

import aioflow as af
from aioflow.io import video
from examples.gates import app, ocr, plates, run, synth, track

# These run the example applications as subprocesses: 20-40 s each on a quiet 2-core machine,
# several times that on a loaded one. The suite's 60 s hang guard would fail them there.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gate_cameras_read_the_plates(tmp_path: Path) -> None:
    events_file = tmp_path / "events.jsonl"
    result = af.run(
        run.run_demo(tmp_path, cameras=2, seconds=6.0, webhook_delay=0.05, events_file=events_file)
    )

    score = result.score
    assert score is not None
    assert score.shown >= 4, f"the clip should show several plates, it showed {score.shown}"
    assert score.correct * 6 >= score.shown * 5, f"{score}: {result.events}"
    assert score.wrong <= 1, f"{score}: {result.events}"
    assert score.duplicates == 0, f"{score}: {result.events}"
    # The signs and shop fronts in view were seen and left out, and the books say so.
    counts = result.summary.counts
    assert counts.frames == 2 * 6 * 10
    assert counts.boxes > counts.events

    stats = result.statistics
    frames = 2 * 6 * 10
    assert result.frames == frames
    # Every frame reached the tracker, every event the webhook and the file.
    assert stats["track"].received == frames
    assert stats["webhook"].emitted == len(result.events) == result.answered
    assert len(result.received) == len(result.events)
    lines = [json.loads(line) for line in events_file.read_text().splitlines()]
    assert lines == result.events
    for event in lines:
        assert set(event) == {
            "camera",
            "plate",
            "first_frame",
            "last_frame",
            "time",
            "reads",
            "confidence",
        }
    for record in stats.values():
        assert record.balanced
        assert record.in_flight == 0
        assert record.queue_depth == 0
        assert record.failed == 0
        assert record.skipped == 0
    # Both models really ran batched.
    assert stats["detect"].mean_batch_size > 1
    assert stats["recognize"].batches > 0
    # One annotated video per camera, every frame written.
    for camera in ("cam0", "cam1"):
        assert (tmp_path / "annotated" / f"{camera}.mp4").stat().st_size > 10_000
    assert not [t for t in threading.enumerate() if t.name.startswith("aioflow")]


def clip_with_sign(path: Path, plate: str, sign: str, frames: int = 24, enter: int = 0) -> None:
    """A gate clip the demo did not make: a white sign that reads like a plate stays put on a
    wall, one car carrying ``plate`` (yellow, another font) drives through from frame ``enter``
    (it is out of the picture 25 frames later)."""
    rng = np.random.default_rng(3)
    scene = np.full((360, 640, 3), (90, 110, 120), np.uint8)
    cv2.rectangle(scene, (0, 170), (640, 340), (70, 70, 72), -1)
    board = synth.text_image(sign, 22, cv2.FONT_HERSHEY_DUPLEX, (20, 20, 20), (235, 235, 235))
    h, w = board.shape[:2]
    synth.paste(scene, board, synth.quad_at(420, 80, w, h, 0.0, (0.0, 0.0)))
    tag = synth.text_image(plate, 22, cv2.FONT_HERSHEY_COMPLEX, (15, 15, 15), (40, 200, 240))
    th, tw = tag.shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 10, (640, 360))
    for i in range(frames):
        image = scene.copy()
        cx = 40 + (i - enter) * 26 if i >= enter else -1000
        cv2.rectangle(image, (cx - 110, 200), (cx + 110, 300), (40, 60, 150), -1)
        synth.paste(image, tag, synth.quad_at(cx, 265, tw, th, 2.0, (0.05, 0.0)))
        noisy = np.clip(image + rng.normal(0, 3, image.shape), 0, 255).astype(np.uint8)
        writer.write(noisy)
    writer.release()


@pytest.mark.slow
def test_command_line_reads_other_footage_and_ignores_a_sign(tmp_path: Path) -> None:
    clip = tmp_path / "gate_north.mp4"
    clip_with_sign(clip, "ABC123", "KTR482")
    truth = tmp_path / "truth.json"
    truth.write_text(json.dumps({"gate_north": ["ABC123"]}))
    events = tmp_path / "events.jsonl"
    done = subprocess.run(
        [
            sys.executable,
            "examples/gates/run.py",
            "--source",
            str(clip),
            "--plate-format",
            "LLL999,LL99LLL",
            "--events",
            str(events),
            "--ground-truth",
            str(truth),
            "--out",
            str(tmp_path / "out"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    # The camera is named as video_source names a file (its stem); the sign, which fits the
    # format as well as the plate does but never moves, makes no event.
    assert [(e["camera"], e["plate"]) for e in lines] == [("gate_north", "ABC123")], done.stdout
    assert lines[0]["reads"] >= 2
    assert "1/1 plates read correctly (100%), 0 wrong events, 0 duplicates" in done.stdout
    assert "1 not moving" in done.stdout
    assert (tmp_path / "out" / "annotated" / "gate_north.mp4").stat().st_size > 10_000


def test_plate_formats_parse_and_fix_look_alikes_by_position() -> None:
    formats = plates.parse_formats("LL99LLL,LLL999")
    assert [f.pattern for f in formats] == ["LL99LLL", "LLL999"]
    # A digit read where the format says letter, and the other way round, is its look-alike.
    assert plates.normalise("AB12CDE", formats) == "AB12CDE"
    assert plates.normalise("A812CDE", formats) == "AB12CDE"
    assert plates.normalise("ABI2CD6", formats) == "AB12CDG"
    assert plates.normalise("5O2210", formats) == "SOZ210"
    # Two changes at most: a read that fits only by changing three or more is of something
    # else (a timestamp 2026-10-2 as ZO-261-OZ; 059 QOB read with a badge beside it, 0590082,
    # as OS-900-BZ: footage from another generator, medium seed 26, a wrong event). Reads of
    # the plates shown that fitted a format needed 2 at most.
    assert plates.normalise("5O2Z10", formats) is None
    assert plates.normalise("2026-10-2", plates.parse_formats("LL-999-LL")) is None
    assert plates.normalise("0590082", plates.parse_formats("LL999LL,999LLL")) is None
    assert plates.normalise("059Q0B", plates.parse_formats("LL999LL,999LLL")) == "059QOB"
    # Fixed separators are optional in a read and put back; fixed characters must be read.
    assert plates.normalise("AB123", plates.parse_formats("LL-999")) == "AB-123"
    assert plates.normalise("XB123", plates.parse_formats("BL999")) is None
    assert plates.normalise("8X123", plates.parse_formats("BL999")) == "BX123"
    # Reads that fit no format are dropped, never coerced.
    assert plates.normalise("AB12CD", formats) is None  # no format of six with that shape
    assert plates.normalise("ABCDEFG", formats) is None  # no look-alike for C, D, E, F
    assert plates.normalise("EXIT12", formats) is None
    assert plates.normalise("A7C123", formats) is None  # 7 is no letter's look-alike
    for bad in ("LL99,,L9", "", " ,LL"):
        if bad:
            with pytest.raises(ValueError, match="plate format"):
                plates.parse_formats(bad)
    assert plates.parse_formats("") == ()


def test_formats_that_differ_only_in_separators_read_one_plate() -> None:
    # A site whose plates are printed with dashes and without (LL-999-LL and LL999LL): every
    # read fitted both equally well, two results, and was dropped as fitting two formats, so
    # none of these plates was ever read (footage from another generator, easy seed 7: 8 of 14
    # missed with the formats). The two are one plate, written as the first format writes it.
    formats = plates.parse_formats("LL-999-LL,LL999LL")
    assert plates.normalise("QR 729 NF", formats) == "QR-729-NF"
    assert plates.normalise("QR729NF", plates.parse_formats("LL999LL,LL-999-LL")) == "QR729NF"
    assert plates.normalise("A0995NV", formats) == "AO-995-NV"
    # Two formats that read different letters or digits still make no plate.
    assert plates.normalise("88123", plates.parse_formats("L9999,9L999")) is None  # B8123? 8B123?


def test_the_separators_read_say_which_of_two_fitting_formats_a_plate_is_in() -> None:
    # 50-0XQ-1 fits 999LLL as 500XQI and 99-LLL-9 as 50OXQ1, one look-alike changed each: it
    # was dropped as fitting two formats on every frame, and the plate never read (another
    # generator's medium seed 18, where it was read without the formats). The recogniser
    # reads printed separators almost without fail: the dashes are where 99-LLL-9 prints them.
    formats = plates.parse_formats("LL999LL,999LLL,99-LLL-9")
    assert plates.normalise("50-0XQ-1", formats) == "50-OXQ-1"
    assert plates.normalise("50 0XQ 1", formats) == "50-OXQ-1"  # a space where the dash is
    # Without separators nothing says which.
    assert plates.normalise("500XQ1", formats) is None
    # A dash where 99-LLL-9 prints none says it is not that format's: 999LLL, written without
    # separators, is left (printed as 500 XQI).
    assert plates.normalise("500-XQ1", formats) == "500XQI"


def test_a_separator_where_a_format_prints_none_refutes_that_format() -> None:
    # A British TH47 OKJ, its O read as a 0 on all 34 reads as 'TH47 0KJ', fitted LL-999-LL
    # as TH-470-KJ with no change where LL99LLL needs one, and went out as a wrong event (the
    # other generator's easy seed 46). The space after the 4th character is where LL-999-LL
    # prints no separator: that format is not this plate's.
    formats = plates.parse_formats("LL-999-LL,LL99LLL,LLL999")
    assert plates.normalise("TH47 0KJ", formats) == "TH47OKJ"
    # Read without its separator, or with those LL-999-LL prints, it still fits that format.
    assert plates.normalise("TH470KJ", formats) == "TH-470-KJ"
    assert plates.normalise("EP-440-ZQ", formats) == "EP-440-ZQ"
    assert plates.normalise("EP-440-ZQ.", formats) == "EP-440-ZQ"  # (not between characters)
    # The only format given, refuted: the read fits none (counted), never coerced into it.
    assert plates.normalise("TH47 0KJ", plates.parse_formats("LL-999-LL")) is None
    # A format written without separators says nothing of them.
    assert plates.normalise("TH47 0KJ", plates.parse_formats("LL99LLL")) == "TH47OKJ"


def test_without_a_format_any_plausible_plate_is_accepted_as_read() -> None:
    assert plates.normalise("AB12CDE", ()) == "AB12CDE"
    assert plates.normalise("ab 123", ()) == "AB123"  # case and spaces are not the plate
    assert plates.normalise("5O2Z10", ()) == "5O2Z10"  # no format: nothing to correct by
    assert plates.normalise("STOP", ()) is None  # no digit: a word, not a plate
    assert plates.normalise("2024", ()) is None  # no letter
    assert plates.normalise("A1", ()) is None  # too short
    assert plates.normalise("ABCDEF1234567", ()) is None  # too long
    # The longest plates (9 or 10) hold 4 digits or more; 9 or 10 with one or two are words:
    # J. BROWN & SONS on a van, its plate too blurred to read, went out as BROWN6SONS.
    assert plates.normalise("MH 12 AB 1234", ()) == "MH12AB1234"
    assert plates.normalise("A123BC777", ()) == "A123BC777"
    assert plates.normalise("KA01AB123", ()) == "KA01AB123"
    assert plates.normalise("BROWN6SONS", ()) is None
    assert plates.normalise("SMITH5 LTD", ()) is None
    assert plates.normalise("AB 12 CD", ()) == "AB12CD"  # 8 or fewer: one digit will do
    assert plates.normalise("HH AB 1", ()) == "HHAB1"


def test_without_a_format_a_model_badge_is_no_plate() -> None:
    # A car's model badge is 2-4 letters and digits, read as surely as its plate and riding
    # on a moving car: where the plate was not found (a black plate on a black car), the car's
    # C220 went out as a plate (footage from another generator, easy seed 4). Without a format
    # a plate has 5 characters at least; a shorter one needs its format.
    for badge in ("C220", "320D", "XC90", "E 300"):
        assert plates.normalise(badge, ()) is None
    assert plates.normalise("AB 123", ()) == "AB123"
    assert plates.normalise("C220", plates.parse_formats("L999")) == "C220"


def test_ground_truth_scoring_counts_correct_wrong_and_duplicates() -> None:
    truth = {"cam0": ["AB12CDE", "KTR482"], "cam1": ["XY-123"]}
    events = [
        {"camera": "cam0", "plate": "AB12CDE", "first_frame": 3},
        {"camera": "cam0", "plate": "AB12CDE", "first_frame": 30},  # the same pass again
        {"camera": "cam0", "plate": "KTR483", "first_frame": 40},  # a near miss
        {"camera": "cam1", "plate": "XY123", "first_frame": 5},  # separators do not count
        {"camera": "cam1", "plate": "AB12CDE", "first_frame": 9},  # the other camera's plate
    ]
    score = track.score(events, truth)
    assert (score.shown, score.correct, score.wrong, score.duplicates) == (3, 2, 2, 1)
    assert str(score) == (
        "2/3 plates read correctly (67%), 2 wrong events, 1 duplicates (of 5 events)"
    )


def test_tracker_makes_one_event_per_pass_of_a_moving_plate() -> None:
    state = track.CameraState()
    events = []
    # A plate crossing the view, read on most frames, lost for two frames midway.
    for i in range(20):
        x = 20 * i
        reads: list[track.Read] = []
        if i not in (8, 9, 10, 11, 12, 13):
            text = "AB12CDE" if i % 5 else "AB12CDF"  # every fifth read one character off
            reads.append(((x, 100, x + 120, 130), text, 0.9))
        reads.append(((500, 20, 600, 50), "EXIT12", 0.95))  # a sign: read every frame
        events += track.update(state, "cam", i, i / 10, reads)[1]
    for t in list(state.tracks):
        if (event := track.close(state, "cam", t)) is not None:
            events.append(event)
    assert [e["plate"] for e in events] == ["AB12CDE"]
    assert state.counts.static == 1
    assert state.counts.duplicates >= 1  # the pass, broken by the gap, gave one event


def test_lettering_riding_above_a_plate_makes_no_event() -> None:
    state = track.CameraState()
    events = []
    for i in range(12):
        x = 30 * i
        reads: list[track.Read] = [
            # On the van's side, above its plate: read off a plate's ground (the van's paint
            # all round it), as ``ocr.on_a_board`` finds lettering on a wide surface.
            ((x, 60, x + 90, 80), "FLEET7", 0.99, (), False),
            ((x + 20, 120, x + 120, 140), "AB12CDE", 0.9),
        ]
        events += track.update(state, "cam", i, i / 10, reads)[1]
    for t in list(state.tracks):
        if (event := track.close(state, "cam", t)) is not None:
            events.append(event)
    assert [e["plate"] for e in events] == ["AB12CDE"]
    assert state.counts.on_vehicle == 1


def test_a_smaller_plate_above_coming_towards_the_camera_is_the_car_behind() -> None:
    # Two cars coming towards the camera one behind the other in one lane: the one behind is
    # further away, so its plate is higher in the frame and smaller (13 px against 29), and
    # the two move down together. Both are plates on their own ground, fitting a format:
    # two events (footage from another generator, easy seed 22: XS48 YTK 1.5 plate widths
    # behind PKG 515 was dropped as lettering on the first car). Text above the plate and
    # larger than it that fits a format (a van's door lettering) is still lettering, as is
    # smaller text close to the plate (a badge: test_gates_footage.py). Without formats the
    # same, though the site has sent no plate of XS48 YTK's shape yet (it was dropped then
    # even after the rule held with formats: easy seed 22 without them).
    formats = plates.parse_formats("LLL999,LL99LLL")
    # Without formats, each look-alike read surely (digit, letter): S and G letters, 8, 5, 1
    # digits.
    sure = {
        "S": (0.0, 0.99),
        "G": (0.0, 0.99),
        "8": (0.99, 0.0),
        "5": (0.99, 0.0),
        "1": (0.99, 0.0),
    }
    for given, upper, height, expected in (
        (formats, "XS48YTK", 13, ["PKG515", "XS48YTK"]),
        (formats, "XS48YTK", 60, ["PKG515"]),
        ((), "XS48YTK", 13, ["PKG515", "XS48YTK"]),
        ((), "XS48YTK", 60, ["PKG515"]),
    ):
        state = track.CameraState(shapes=None if given else track.Shapes())
        events = []
        for i in range(16):
            top = 240 + 5 * i
            reads: list[track.Read] = [
                (rect, text, 0.99, tuple(sure.get(c) for c in text) if not given else ())
                for rect, text in (
                    ((400, top, 400 + 6 * height, top + height), upper),
                    ((430, 450 + 6 * i, 575, 479 + 6 * i), "PKG515"),
                )
            ]
            reads = [(r, plates.normalise(t, given), *rest) for r, t, *rest in reads]
            events += track.update(state, "cam", i, i / 20, reads)[1]
        for t in list(state.tracks):
            if (event := track.close(state, "cam", t)) is not None:
                events.append(event)
        assert sorted(e["plate"] for e in events) == expected
        assert state.counts.on_vehicle == 2 - len(expected)


@pytest.mark.parametrize("formats", ["999LLL,LLL999", ""])
def test_a_tilted_plate_level_with_another_in_the_next_lane_is_a_plate(formats: str) -> None:
    # Two cars crossing the view side by side, one in each lane, at one speed (the other
    # generator's medium seed 60, held out): 112 QYO in the far lane, 2.8 plate widths above
    # CVC 381, tilted 6 degrees, so its box was 39 px high for capitals of 19 px, 1.6 times
    # CVC 381's box. It moved with CVC 381 and sat above it, larger by its boxes' height: a
    # van's lettering, not a plate. By its width per character it is of CVC 381's size (1.16).
    given = plates.parse_formats(formats)
    state = track.CameraState(shapes=None if given else track.Shapes())
    if state.shapes is not None:
        for n, plate in enumerate(["512QRT", "774KLM"]):  # the site's shape, learnt
            events = _pass(state, [(plate, 0.99, ())] * 6, start=100 * n)
    events = []
    for i in range(24):
        x = 1100 - 20 * i
        # (Without formats: its 1's read surely as digits, its O as a letter.)
        sure = ((0.99, 0.0), (0.99, 0.0), None, None, None, (0.0, 0.99))
        reads: list[track.Read] = [
            ((x + 20, 210, x + 165, 249), "112QYO", 0.97, () if given else sure),
            ((x, 563, x + 125, 588), "CVC381", 0.99, ()),
        ]
        reads = [(r, plates.normalise(t, given), *rest) for r, t, *rest in reads]
        events += track.update(state, "cam", 500 + i, 50 + i / 20, reads)[1]
    events += _close_all(state)
    assert sorted(e["plate"] for e in events) == ["112QYO", "CVC381"]
    assert state.counts.on_vehicle == 0


# Two plates crossing the view level with each other, one in each lane: their boxes as the
# detector gave them, and their reads (None: read as nothing). JBM 539 above GTO 016 (the
# other generator's medium seed 76 at 6 frames/s, held out):
_Box = tuple[int, int, int, int] | None
_Level = list[tuple[int, _Box, str | None, _Box, str | None]]
JBM_539: _Level = [
    (7, None, None, (879, 486, 997, 519), "GTO016"),
    (8, None, None, (818, 486, 935, 520), "GTO016"),
    (9, None, None, (757, 486, 876, 520), "GTO016"),
    (11, None, None, (633, 485, 752, 519), "GTO016"),
    (12, (545, 176, 666, 206), "JBM539", (570, 487, 690, 521), "GTO016"),
    (13, (490, 188, 604, 201), "JBM539", (508, 486, 629, 520), "GTO016"),
    (14, (434, 180, 546, 201), None, None, None),
    (15, (373, 178, 489, 203), "JBM539", None, None),
    (16, (311, 176, 433, 205), "JBM539", (324, 488, 440, 519), "GTO016"),
    (17, (262, 179, 373, 205), None, (263, 487, 378, 520), "GTO016"),
    (18, (200, 177, 318, 205), "JBM539", (199, 486, 316, 521), "GTO016"),
    (19, (140, 178, 260, 205), "JBM539", (137, 486, 255, 521), "GTO016"),
    (20, (80, 176, 203, 207), "JBM539", (75, 486, 195, 521), "GTO016"),
    (21, (20, 176, 145, 206), "JBM539", (13, 486, 133, 522), "GTO016"),
    (22, (4, 179, 87, 204), None, (6, 494, 70, 519), None),
]
# 830 VOI above 110 PQA coming in at the right edge of a 1280x720 frame (hard seed 14 at 25
# frames/s, held out):
VOI_830: _Level = [
    (175, (1226, 457, 1275, 475), None, (1176, 611, 1269, 641), "110PQA"),
    (176, (1207, 457, 1272, 475), None, (1158, 614, 1249, 637), "110PQA"),
    (177, (1180, 457, 1269, 475), "830VOI", (1134, 614, 1228, 637), "110PQA"),
    (178, (1159, 457, 1253, 475), "830VOI", (1113, 614, 1209, 637), "110PQA"),
    (179, None, None, (1093, 611, 1180, 640), "110PQA"),
    (180, None, None, (1072, 611, 1154, 640), None),
    (181, None, None, (1053, 609, 1133, 642), None),
    (182, None, None, (1033, 614, 1116, 637), "110PQA"),
    (183, None, None, (1009, 614, 1097, 637), "110PQA"),
    (184, None, None, (988, 614, 1068, 637), None),
    (185, (1002, 457, 1077, 475), "830VOI", (966, 614, 1054, 637), "110PQA"),
    (186, None, None, (951, 618, 1027, 636), None),
    (187, None, None, (927, 618, 1003, 636), None),
    (188, None, None, (905, 613, 988, 638), "110PQA"),
    (189, None, None, (887, 618, 965, 636), None),
    (190, None, None, (865, 614, 950, 637), "110PQA"),
    (191, None, None, (891, 608, 938, 634), None),
    (192, None, None, (820, 614, 908, 637), "110PQA"),
    (193, None, None, (802, 618, 875, 636), None),
    (194, (791, 455, 881, 476), "830VOI", (775, 612, 873, 637), "110PQA"),
    (195, None, None, (756, 618, 843, 636), "110PQA"),
    (196, None, None, (737, 613, 822, 638), "110PQA"),
    (197, (723, 455, 814, 476), "830VOI", (713, 612, 809, 637), "110PQA"),
    (198, None, None, (694, 612, 780, 639), "110PQA"),
    (199, None, None, (672, 612, 759, 639), "110PQA"),
    (200, None, None, (649, 614, 737, 637), "110PQA"),
    (201, None, None, (630, 613, 716, 639), "110PQA"),
    (202, (688, 448, 734, 476), None, None, None),
    (204, None, None, (566, 614, 654, 637), "110PQA"),
    (205, None, None, (548, 618, 629, 636), "110PQA"),
    (208, None, None, (481, 614, 569, 637), "110PQA"),
    (210, (424, 456, 513, 476), "830VOI", None, None),
    (211, None, None, (418, 618, 501, 636), "110PQA"),
    (212, None, None, (396, 618, 480, 636), "110PQA"),
    (213, None, None, (378, 618, 448, 636), None),
    (219, None, None, (248, 610, 337, 639), "110PQA"),
]


@pytest.mark.parametrize("given", [True, False], ids=["formats", "none"])
@pytest.mark.parametrize(
    ("clip", "fps", "formats", "learnt", "expected"),
    [
        (JBM_539, 6, "999LLL,LLL999,LL999LL", ["QRT512", "KLM774"], ["GTO016", "JBM539"]),
        (VOI_830, 25, "LL999LL,LL99LLL,999LLL", ["512QRT", "774KLM"], ["110PQA", "830VOI"]),
    ],
    ids=["JBM539", "830VOI"],
)
def test_a_plate_level_with_another_whose_box_wavers_is_a_plate(
    clip: _Level, fps: int, formats: str, learnt: list[str], expected: list[str], given: bool
) -> None:
    # The upper plate moved with the lower one, of its size, on its own ground: the plate of
    # a car level with the other. JBM 539's box kept its width (111-125 px on 10 frames of 11)
    # while the detector's height for it wavered with the blur (13-30 px: aspects 3.3 to 8.8,
    # 8 of 11 within a fifth of the median); 830 VOI's box was cut by the frame's edge as it
    # came in (49 and 65 px wide, then 75-94) and once boxed in part (46). Both were taken
    # for lettering boxed in pieces riding above the other plate, and dropped. A line of
    # lettering boxed in pieces changes its width (``track.rigid``;
    # test_a_board_keeps_its_width_where_lettering_boxed_in_pieces_does_not).
    fmts = plates.parse_formats(formats) if given else ()
    state = track.CameraState(shapes=None if given else track.Shapes())
    if state.shapes is not None:
        for n, plate in enumerate(learnt):  # the site's shape, learnt
            _pass(state, [(plate, 0.99, ())] * 6, start=100 * n)
    # (Without formats, the look-alikes read surely: digits as digits, letters as letters.)
    digit, letter = (0.99, 0.0), (0.0, 0.99)
    sure = dict.fromkeys("0123456789", digit) | dict.fromkeys("ABGIMOQSTZ", letter)
    events = []
    for frame, upper, upper_text, lower, lower_text in clip:
        reads: list[track.Read] = []
        for rect, text in ((upper, upper_text), (lower, lower_text)):
            if rect is None:
                continue
            evidence = () if given or text is None else tuple(sure.get(c) for c in text)
            folded = None if text is None else plates.normalise(text, fmts)
            reads.append((rect, folded, 0.97, evidence))
        events += track.update(state, "cam", 500 + frame, 50 + frame / fps, reads)[1]
    events += _close_all(state)
    assert sorted(e["plate"] for e in events) == expected
    assert state.counts.on_vehicle == 0


def test_a_board_keeps_its_width_where_lettering_boxed_in_pieces_does_not() -> None:
    def boxed(widths: list[int], heights: list[int]) -> track.Track:
        t = track.Track(1, (0, 0, 1, 1), 0, 0, 0.0, 0.0)
        t.path = {
            i: (10 * i, 100, 10 * i + w, 100 + h)
            for i, (w, h) in enumerate(zip(widths, heights, strict=True))
        }
        return t

    # ``J. BROWN & SONS`` on a van, boxed in pieces over 18 frames (the other generator's medium
    # seed 53; read WN65ONS on 3 of them): no board, its shape nor its width kept.
    brown = [46, 57, 67, 111, 168, 153, 69, 78, 61, 43, 58, 56, 140, 117, 164, 162, 252, 70]
    assert not track.rigid(boxed(brown, [25, 27, 29, 26] * 4 + [28, 25]))
    # JBM 539: its width kept, its height wavering.
    jbm = [121, 114, 112, 116, 122, 111, 118, 120, 123, 125, 83]
    assert track.rigid(boxed(jbm, [30, 13, 21, 25, 29, 26, 28, 27, 31, 30, 25]))
    # A plate coming towards the camera grows, in one shape.
    assert track.rigid(boxed([40, 50, 62, 78, 97, 121], [10, 12, 15, 19, 24, 30]))


def test_a_plate_level_with_another_in_a_shape_not_sent_yet_waits_for_its_shape() -> None:
    # No format. Two cars side by side at one speed, one in each lane: the far lane's plate
    # straight above the near one's, of its size, in a shape the site had not sent twice. It
    # may be a van's lettering, so it is not sent yet; but it was dropped, and so sent or not
    # by whether another camera had sent two plates of its shape by the time it closed
    # (YFE 856 above AJ 010 LA, the other generator's medium seed 64: missed in one run, sent
    # in the next). Now it is held as unsure, and sent once the site sends its shape.
    shapes = track.Shapes()
    gate = track.CameraState(shapes=shapes)
    events = []
    for i in range(24):
        x = 1100 - 20 * i
        reads: list[track.Read] = [
            ((x + 20, 220, x + 145, 245), "YFE347", 0.99),
            ((x, 563, x + 125, 588), "AJ743LA", 0.99),
        ]
        events += track.update(gate, "gate", 500 + i, 50 + i / 20, reads)[1]
    for t in list(gate.tracks):
        gate.tracks.remove(t)
        if (event := track.close(gate, "gate", t)) is not None:
            events.append(event)
    assert [e["plate"] for e in events] == ["AJ743LA"]
    assert (gate.counts.unsure, gate.counts.on_vehicle) == (1, 0)
    # Another camera of the site sends two plates of its shape (LLL999): it goes out, with
    # its own camera and frames.
    other = track.CameraState(shapes=shapes)
    sent = _pass(other, [("MKH473", 0.99, ())] * 6, start=600)
    sent += _pass(other, [("WXP374", 0.99, ())] * 6, start=700)
    sent += track.recheck(shapes)  # (as the tracker does after each frame)
    assert [(e["camera"], e["plate"], e["first_frame"]) for e in sent] == [
        ("cam", "MKH473", 600),
        ("cam", "WXP374", 700),
        ("gate", "YFE347", 500),
    ]
    assert (gate.counts.unsure, gate.counts.on_vehicle) == (0, 0)


def test_text_sizes_of_a_box_with_no_width_or_height_are_measured_without_failing() -> None:
    # A detector box rounded to nothing across one axis: the size rules take it as 1 px.
    flat = track.Track(1, (5, 5, 5, 5), 1, 1, 0.1, 0.1, Counter({"AB123": 3}))
    plate = track.Track(2, (0, 0, 60, 12), 1, 1, 0.1, 0.1, Counter({"KX52VRT": 3}))
    flat.confidence, plate.confidence = {"AB123": 2.9}, {"KX52VRT": 2.9}
    flat.path, plate.path = {1: (5, 5, 5, 5)}, {1: (0, 0, 60, 12)}
    assert not track.same_size(flat, plate)
    assert track.no_larger(flat, plate)
    assert not track.no_larger(plate, flat)


def test_a_sign_whose_box_another_text_takes_over_for_a_moment_is_not_moving() -> None:
    # A shop sign read on every frame, its box still but for a pixel of jitter; then, as a
    # van passes in front of it, twice a box of another shape in its place: the sign's left
    # part hidden, the van's lettering beside it taken in (its left edge 37 px to the right,
    # its right edge 111), read as no plate. Both edges moved right, but by amounts far apart:
    # another box, not the sign moving. (The other generator's easy seed 43 without formats
    # sent KEBAB24 so.)
    state = track.CameraState()
    events = []
    for i in range(44):
        reads: list[track.Read] = []
        if i < 36:
            jitter = i % 3 - 1
            reads.append(((309 + jitter, 85, 445 + jitter, 107), "KEBAB24", 0.99))
        elif i == 36:
            reads.append(((346, 82, 556, 104), None, 0.98))
        elif i == 38:
            reads.append(((344, 87, 563, 111), None, 0.98))
        events += track.update(state, "cam", i, i / 10, reads)[1]
    for t in list(state.tracks):
        state.tracks.remove(t)
        if (event := track.close(state, "cam", t)) is not None:
            events.append(event)
    assert events == []
    assert state.counts.static == 1


def test_still_text_is_read_now_and_then_moving_text_every_frame() -> None:
    still = track.StillText(still_frames=5, every=10)
    held = [
        still.hold(i, [(500, 20, 600, 50), (30 * i, 100, 30 * i + 120, 130)]) for i in range(30)
    ]
    sign = [h[0] for h in held]
    plate = [h[1] for h in held]
    assert not any(plate)
    assert sign[:5] == [False] * 5  # read until it has stood still for 5 frames
    assert sum(not h for h in sign[5:]) == 2  # then one frame in ten: frames 10 and 20


def test_live_a_sign_looked_at_seconds_apart_is_held_from_its_second_look() -> None:
    # Live with 32 cameras, a camera is looked at every 2-3 s: a sign in place on two looks
    # has stood still for seconds, and is read on one look in 10 from then on, not only
    # after 5 looks (12 s or more). A plate moving between the looks is read on every look.
    still = track.StillText(still_frames=5, every=10)
    held = [
        still.hold(
            look,
            [(500, 20, 600, 50), (30 * look, 100, 30 * look + 120, 130)],
            at=2.5 * look,
            still_s=app.LIVE_STILL_S,
        )
        for look in range(21)
    ]
    sign = [h[0] for h in held]
    assert sign[:2] == [False, True]  # read on the first look, held on the second
    assert [look for look, h in enumerate(sign) if not h] == [0, 10, 20]
    assert not any(h[1] for h in held)
    # Looked at 0.3 s apart (4 cameras), it takes 5 looks, as it always did.
    close = track.StillText(still_frames=5, every=10)
    assert [
        close.hold(i, [(500, 20, 600, 50)], at=0.3 * i, still_s=app.LIVE_STILL_S)[0]
        for i in range(6)
    ] == [False] * 5 + [True]
    # Without still_s (every frame, or sampled) it still takes 5 looks, whatever the clock says.
    counted = track.StillText(still_frames=5, every=10)
    assert [counted.hold(i, [(500, 20, 600, 50)], at=2.5 * i)[0] for i in range(6)] == [
        False
    ] * 5 + [True]


def test_a_small_fast_plate_stays_one_track_and_the_other_lane_another() -> None:
    state = track.CameraState()
    # Frame 1: the plate moved 50 px, more than its 60 px box overlaps; the other lane's plate
    # sits 80 px lower.
    track.update(state, "cam", 0, 0.0, [((0, 100, 60, 114), "AB12CDE", 0.9)])
    labelled, _ = track.update(
        state,
        "cam",
        1,
        0.1,
        [((50, 101, 110, 115), "AB12CDE", 0.9), ((40, 180, 100, 194), "XY34ZZZ", 0.9)],
    )
    first, other = labelled
    assert first[0] == 0
    assert first[2] == "AB12CDE"
    assert other[0] == 1


def test_a_long_runs_summary_keeps_the_latest_events_and_counts_them_all() -> None:
    # A live run goes on for months: its summary keeps the latest events (the events file and
    # the webhook have them all) and counts every one, so its memory stays bounded.
    summary = app.Summary(keep=40)
    for n in range(1000):
        summary.add({"plate": f"AB{n:03d}CD"})
        summary.add_undelivered({"plate": f"AB{n:03d}CD"}, "503")
        assert len(summary.events) <= 50
        assert len(summary.undelivered) <= 50
    assert (summary.sent, summary.failed_posts) == (1000, 1000)
    assert summary.events[-40:] == [{"plate": f"AB{n:03d}CD"} for n in range(960, 1000)]
    assert summary.undelivered[-1] == ({"plate": "AB999CD"}, "503")
    assert not summary.complete
    everything = app.Summary(keep=None)
    for n in range(1000):
        everything.add({"plate": f"AB{n:03d}CD"})
    assert len(everything.events) == everything.sent == 1000
    assert everything.complete


def test_a_source_that_is_not_video_is_one_error_line_and_status_2(tmp_path: Path) -> None:
    bogus = tmp_path / "gate_south.mp4"
    bogus.write_text("not a video")
    done = subprocess.run(
        [sys.executable, "examples/gates/run.py", "--source", str(bogus), "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, done.stderr
    assert str(bogus) in errors[0]
    assert "Traceback" not in done.stderr


Reading = tuple[str, float, plates.Evidence]  # text, confidence, evidence


def _close_all(state: track.CameraState) -> list[dict[str, object]]:
    """Close the camera's open tracks, as the tracker does when they close; their events."""
    events = []
    for t in list(state.tracks):
        state.tracks.remove(t)
        if (event := track.close(state, "cam", t)) is not None:
            events.append(event)
    return events


def _pass(
    state: track.CameraState, reads: list[Reading], start: int = 0
) -> list[dict[str, object]]:
    """Feed one plate crossing the view, one read per frame, and close what is left."""
    events = []
    for i, (text, confidence, evidence) in enumerate(reads):
        rect = (25 * i, 100, 25 * i + 100, 120)
        read: track.Read = (rect, text, confidence, evidence)
        events += track.update(state, "cam", start + i, (start + i) / 10, [read])[1]
    events += _close_all(state)
    return events


def test_without_formats_a_read_off_a_plates_ground_counts_in_a_shape_the_site_has_read() -> None:
    # No format given. A black plate on a car as dark as it is off the plate-ground rule on
    # every frame: its reads prove nothing by themselves (a phone number cut short on a van's
    # doors reads as surely), so its track is held as unsure. Another camera of the site then
    # reads two plates of its shape (LLL999) on their ground: the held track is decided, with
    # its own camera. Off-ground text in a shape no plate had stays unsent.
    shapes = track.CameraState(shapes=track.Shapes()).shapes
    assert shapes is not None
    dark = track.CameraState(shapes=shapes)
    events = []
    for n, text in enumerate(["FXR639", "CALL077"]):
        for i in range(6):
            rect = (25 * i, 100 + 60 * n, 25 * i + 100, 120 + 60 * n)
            read: track.Read = (rect, text, 0.99, (), False)
            events += track.update(dark, "dark", i, i / 10, [read])[1]
    events += track.update(dark, "dark", 40, 4.0, [])[1]
    assert events == []
    assert dark.counts.unsure == 2
    # A snapshot of the state keeps what was learnt, not the tracks held (other cameras').
    assert pickle.loads(pickle.dumps(dark)).shapes.held == []
    light = track.CameraState(shapes=shapes)
    events = _pass(light, [("KLM205", 0.95, ())] * 6)
    events += _pass(light, [("PDR964", 0.95, ())] * 6, start=100)
    events += track.recheck(shapes)
    assert [(e["camera"], e["plate"]) for e in events] == [
        ("cam", "KLM205"),
        ("cam", "PDR964"),
        ("dark", "FXR639"),
    ]
    assert dark.counts.unsure == 1  # CALL077: still held


def test_look_alikes_are_voted_per_character_by_the_recognisers_evidence() -> None:
    # No format: the reads differ only in 0 or O at the first position; the recogniser saw a
    # 0 more often and more surely. One event, with the 0, not one per spelling.
    reads: list[Reading] = []
    for i in range(8):
        seen = (0.8, 0.2) if i % 3 else (0.45, 0.55)  # every third read leans to O
        text = "0LTM98" if i % 3 else "OLTM98"
        evidence = (seen, None, None, None, None, (1.0, 0.0))
        reads.append((text, 0.9, evidence))
    events = _pass(track.CameraState(shapes=track.Shapes()), reads)
    assert [e["plate"] for e in events] == ["0LTM98"]
    assert events[0]["reads"] == 8


def test_a_sticker_read_into_a_plate_past_a_gap_is_left_out() -> None:
    # A country sticker 1.5 characters past a plate's end (09-ONS-4 and an F oval, the other
    # generator's medium seed 62 without formats, held out): read 09ONS4F, its F set apart by
    # the gap, where the detector's box took it in (13 frames), 09ONS4 where it did not (8).
    # The votes sent 09ONS4F. The plate is the reading without the mark.
    reads = [(f"09ONS4{'F' if i % 3 else ''}", 0.99, (), True, (), i % 3 > 0) for i in range(21)]
    events = _pass_flags(track.CameraState(), reads)
    assert [e["plate"] for e in events] == ["09ONS4"]
    # Its last group's dash missed on a few reads (62-LAA-3 read 62-LAA 3, set apart), and the
    # box cutting the 3 off on a few: the plate is read whole.
    reads = [("62LAA3" if i % 4 else "62LAA", 0.99, (), True, (), i % 8 == 1) for i in range(20)]
    assert [e["plate"] for e in _pass_flags(track.CameraState(), reads)] == ["62LAA3"]
    # Without the gap, the longer reading stands as before (a box that cut the plate short).
    reads = [(f"09ONS4{'F' if i % 3 else ''}", 0.99, (), True, (), False) for i in range(21)]
    assert [e["plate"] for e in _pass_flags(track.CameraState(), reads)] == ["09ONS4F"]


def _pass_flags(
    state: track.CameraState,
    reads: list[tuple[str, float, plates.Evidence, bool, tuple[int, ...], bool]],
) -> list[dict[str, object]]:
    """``_pass`` with each read's flags (its ground, hints, and its last character apart)."""
    events = []
    for i, (text, confidence, evidence, board, hints, apart) in enumerate(reads):
        rect = (25 * i, 100, 25 * i + 100, 120)
        read: track.Read = (rect, text, confidence, evidence, board, hints, apart)
        events += track.update(state, "cam", i, i / 10, [read])[1]
    events += _close_all(state)
    return events


def test_two_look_alikes_that_flip_a_plate_into_the_sites_shape_are_a_guess() -> None:
    # No format. The site sent two LL999LL plates. ZZ 105 IO, its last group an I and an O in
    # a face that draws them as a 1 and a 0, read ZZ10510 on most frames (LL99999, a shape
    # never sent) and went out so (the other generator's medium seed 62, held out): held as
    # unsure, no event. A plate whose two 1/0 flip to no shape the site sent is sent.
    state = track.CameraState(shapes=track.Shapes())
    sent = []
    for n, plate in enumerate(["YY745CG", "SH623HI"]):
        sent += _pass(state, [(plate, 0.99, ()) for _ in range(8)], start=40 * n)
    assert [e["plate"] for e in sent] == ["YY745CG", "SH623HI"]
    # The Z's seen as letters only, the 1's and 0's as digits (a trace of the letters).
    evidence = ((0.0, 1.0), (0.0, 1.0), None, (0.97, 0.03), (1.0, 0.0), (0.98, 0.02), None)
    reads: list[Reading] = [("ZZ10510", 0.9, evidence) for _ in range(12)]
    assert _pass(state, reads, start=100) == []
    assert state.counts.unsure == 1
    reads = [("ZZ1023", 0.9, ()) for _ in range(12)]
    assert [e["plate"] for e in _pass(state, reads, start=140)] == ["ZZ1023"]
    # Any two look-alikes the evidence left in doubt: TR 058 GG under 6.6 px of motion blur
    # read TR05866 on 10 frames, the G's given 30-36% of the evidence (the other generator's
    # hard seed 13, held out), and went out so: a guess, held. The same read with the 6's
    # sure (under 2% for a G) is a plate of its own shape, sent.
    unsure = state.counts.unsure
    doubtful = (None, None, (1.0, 0.0), (1.0, 0.0), (1.0, 0.0), (0.7, 0.3), (0.64, 0.36))
    reads = [("TR05866", 0.9, doubtful) for _ in range(10)]
    assert _pass(state, reads, start=180) == []
    assert state.counts.unsure == unsure + 1
    sure = (None, None, (1.0, 0.0), (1.0, 0.0), (1.0, 0.0), (0.995, 0.005), (0.99, 0.01))
    reads = [("TR05866", 0.9, sure) for _ in range(10)]
    assert [e["plate"] for e in _pass(state, reads, start=220)] == ["TR05866"]


def test_a_q_whose_tail_some_reads_saw_is_a_q_and_one_stray_tail_is_not() -> None:
    # With formats (99-LLL-9 fitted: a letter O or Q in the middle). A blurred Q loses its
    # tail: read 10MOH9 on 5 frames and 10MQH9 on 2. Nothing draws a tail on an O, so two
    # reads of it make the plate 10MQH9, where the votes alone sent 10MOH9 (footage from
    # another generator, hard seed 1). One stray Q read on an O plate changes nothing.
    reads: list[Reading] = [("10MQH9" if i in (2, 5) else "10MOH9", 0.9, ()) for i in range(7)]
    assert [e["plate"] for e in _pass(track.CameraState(), reads)] == ["10MQH9"]
    reads = [("10MQH9" if i == 3 else "10MOH9", 0.9, ()) for i in range(7)]
    assert [e["plate"] for e in _pass(track.CameraState(), reads)] == ["10MOH9"]
    # Nor do two among many: the recogniser gives a true O a trace of Q now and then (2 reads
    # of 20 of AX97JOZ saw a Q), so the Q needs a quarter of the reads besides.
    reads = [("10MQH9" if i in (4, 11) else "10MOH9", 0.9, ()) for i in range(20)]
    assert [e["plate"] for e in _pass(track.CameraState(), reads)] == ["10MOH9"]
    # A read of other text that the track's box took in once is not a read of the plate: it
    # does not raise the share. PE94 GQK coming closer (the other generator's hard seed 11)
    # read PE94GOK on 6 frames, PE94GQK on 2, and 121TE03 once while 6 px high: held as
    # unsure (2 of 9 is under a quarter), where 2 of its 8 reads of the plate are a quarter.
    reads = [("121TE03", 0.6, ())] + [
        ("PE94GQK" if i in (3, 6) else "PE94GOK", 0.95, ()) for i in range(8)
    ]
    assert [e["plate"] for e in _pass(track.CameraState(), reads)] == ["PE94GQK"]


def test_an_o_that_many_reads_saw_with_a_faint_q_tail_is_held_as_unsure() -> None:
    # PI38 SWQ blurred by 4 px: read PI38SWO on 28 frames, the Q's tail too faint to decide on
    # all but 3 (Q 0.01-0.08 on 58% of the reads), and sent as PI38SWO (other generator,
    # medium seed 41); one font's O shows as much on every read (XO-738-RH). An O or a Q:
    # held as unsure, no event. An O with the hint on a few reads (0-4% of a true O's reads
    # in most fonts) is an O.
    def crossing(hinted: set[int], n: int = 20) -> tuple[list[dict[str, object]], int]:
        state = track.CameraState()
        events = []
        for i in range(n):
            rect = (25 * i, 100, 25 * i + 100, 120)
            hints = (6,) if i in hinted else ()
            read: track.Read = (rect, "PI38SWO", 0.95, (), True, hints)
            events += track.update(state, "cam", i, i / 10, [read])[1]
        events += _close_all(state)
        return events, state.counts.unsure

    events, unsure = crossing(set(range(0, 20, 2)))  # half the reads
    assert (events, unsure) == ([], 1)
    events, unsure = crossing({3, 11})  # two of 20
    assert ([e["plate"] for e in events], unsure) == (["PI38SWO"], 0)
    # A hint where the plate has no O (the reads agree on a 0 there) holds nothing.
    state = track.CameraState()
    for i in range(8):
        read: track.Read = ((25 * i, 100, 25 * i + 100, 120), "PI38SW0", 0.95, (), True, (6,))
        track.update(state, "cam", i, i / 10, [read])
    [open_track] = state.tracks
    assert not open_track.faint_tail("PI38SW0", "PI38SW0")


def test_an_o_that_reads_saw_as_a_q_or_with_its_faint_tail_is_held_as_unsure() -> None:
    # ZF-156-TQ and 46-UQD-5 blurred by 4 px on a 640x360 camera at 10 frames/s (the other
    # generator's medium seed 45): the first read ZF-156-TO on 14 frames, 2 of them with the
    # hint, and ZF-156-TQ on 3 (too few to make it a Q); the second 46-UOD-5 on 11, 2 with the
    # hint. Both went out with an O, two wrong events. The reads that saw a Q count with those
    # that saw its hint, and 15% of them (2 or more) hold the plate as unsure.
    def crossing(text: str, hinted: set[int], as_q: set[int], n: int) -> tuple[list[str], int]:
        state = track.CameraState()
        events = []
        place = text.replace("-", "").index("O")
        for i in range(n):
            rect = (25 * i, 100, 25 * i + 100, 120)
            seen = text.replace("O", "Q") if i in as_q else text
            hints = (place,) if i in hinted else ()
            read: track.Read = (rect, seen, 0.95, (), True, hints)
            events += track.update(state, "cam", i, i / 10, [read])[1]
        events += _close_all(state)
        return [str(e["plate"]) for e in events], state.counts.unsure

    assert crossing("ZF-156-TO", {2, 9}, {4, 7, 12}, 17) == ([], 1)
    assert crossing("46-UOD-5", {3, 8}, set(), 11) == ([], 1)
    # One hint, or one read as a Q, is not enough: a true O shows either now and then.
    assert crossing("46-UOD-5", {3}, set(), 11) == (["46-UOD-5"], 0)
    assert crossing("ZF-156-TO", set(), {4}, 17) == (["ZF-156-TO"], 0)


def _hinted_crossing(
    text: str,
    place: int,
    hinted: set[int],
    shapes: track.Shapes | None,
    evidence: plates.Evidence = (),
) -> tuple[list[str], int]:
    """A plate read ``text`` on 20 frames crossing the view, the decoder's hint at ``place`` on
    the reads ``hinted``: the plates sent and the tracks held as unsure."""
    state = track.CameraState(shapes=shapes)
    events = []
    for i in range(20):
        rect = (25 * i, 100, 25 * i + 100, 120)
        hints = (place,) if i in hinted else ()
        read: track.Read = (rect, text, 0.95, evidence, True, hints)
        events += track.update(state, "cam", i, i / 10, [read])[1]
    events += _close_all(state)
    return [str(e["plate"]) for e in events], state.counts.unsure


def test_without_formats_a_zero_that_many_reads_saw_with_a_faint_q_tail_is_held() -> None:
    # OQ75 ICE blurred by 4 px, read 0075ICE on 24 frames, its Q's tail faint on most of them,
    # and sent so without formats (other generator, medium seed 44: a wrong event): with no
    # format to make the place a digit's, a 0 seen with the hint may be a Q as an O may (on
    # that generator's clips, none of 670 reads of a true 0 showed it). Held as unsure; the same
    # plate with no hint is sent. With formats a 0 stays a digit, the hint says nothing.
    sure = {"0": (0.99, 0.0), "5": (0.99, 0.0), "I": (0.0, 0.99)}
    evidence = tuple(sure.get(c) for c in "0075ICE")

    def crossing(hinted: set[int], shapes: track.Shapes | None) -> tuple[list[str], int]:
        return _hinted_crossing("0075ICE", 1, hinted, shapes, evidence)

    assert crossing(set(range(0, 20, 2)), track.Shapes()) == ([], 1)
    assert crossing(set(), track.Shapes()) == (["0075ICE"], 0)
    assert crossing(set(range(0, 20, 2)), None) == (["0075ICE"], 0)


def test_a_plate_whose_reads_split_between_look_alikes_makes_no_event() -> None:
    reads: list[Reading] = []
    for i in range(8):
        text = "0LTM98" if i % 2 else "OLTM98"
        seen = (0.55, 0.45) if i % 2 else (0.45, 0.55)
        evidence = (seen, None, None, None, None, (1.0, 0.0))
        reads.append((text, 0.9, evidence))
    state = track.CameraState(shapes=track.Shapes())
    assert _pass(state, reads) == []
    assert state.counts.unsure == 1


def test_plates_read_plainly_teach_the_shape_of_the_others() -> None:
    # No format: two plates of shape 9LLL99 without look-alikes, then one whose first
    # character the recogniser leaves in doubt between O and 0 (its reads alone would hold it
    # as unsure). The shapes say it is a digit: 0LTM98.
    state = track.CameraState(shapes=track.Shapes())
    events = []
    for n, plate in enumerate(["7MRX49", "4KTR73", "OLTM98"]):
        evidence = tuple(
            (0.45, 0.55) if c == "O" else (1.0, 0.0) if c in "98" else None for c in plate
        )
        events += _pass(state, [(plate, 0.95, evidence)] * 6, start=100 * n)
    assert [e["plate"] for e in events] == ["7MRX49", "4KTR73", "0LTM98"]
    # A camera without learnt shapes (or with plate formats given) keeps the read.
    alone = _pass(track.CameraState(), [("OLTM98", 0.95, ())] * 6)
    assert [e["plate"] for e in alone] == ["OLTM98"]


def _sure(plate: str) -> plates.Evidence:
    """The recogniser's evidence for a plate read surely as it is written."""
    return tuple(
        None
        if c not in plates.TO_LETTER and c not in plates.TO_DIGIT
        else (0.0, 1.0)
        if c.isalpha()
        else (1.0, 0.0)
        for c in plate
    )


def test_learnt_shapes_do_not_overturn_a_look_alike_the_reads_agree_on() -> None:
    # No format: two plates of shape LLL999 teach that a 6-character plate has a letter third,
    # but this site also has LL9999 plates, none seen yet. The recogniser reads the third
    # character of ZJ2954 as a 2 on every frame, surely (never a trace of a Z): it is sent as
    # read, not turned into ZJZ954.
    state = track.CameraState(shapes=track.Shapes())
    events = []
    for n, plate in enumerate(["XKR347", "MVT743", "ZJ2954"]):
        events += _pass(state, [(plate, 0.95, _sure(plate))] * 6, start=100 * n)
    assert [e["plate"] for e in events] == ["XKR347", "MVT743", "ZJ2954"]
    assert state.counts.unsure == 0
    # A 1 where the shapes say a letter is another matter: 1 and I are one glyph in many plate
    # fonts, so the recogniser's sureness says little, and ZJ1954 (a shape never sent, one
    # look-alike from one sent twice) is held as unsure...
    state = track.CameraState(shapes=track.Shapes())
    events = []
    for n, plate in enumerate(["XKR347", "MVT743", "ZJ1954"]):
        events += _pass(state, [(plate, 0.95, _sure(plate))] * 6, start=100 * n)
    assert [e["plate"] for e in events] == ["XKR347", "MVT743"]
    assert state.counts.unsure == 1
    # ... until a plate of its shape without a look-alike there (TX4973) shows the site has
    # LL9999 plates: the next frame sends it as read.
    events += _pass(state, [("TX4973", 0.95, _sure("TX4973"))] * 6, start=300)
    events += track.update(state, "cam", 400, 40.0, [])[1]
    assert [e["plate"] for e in events] == ["XKR347", "MVT743", "TX4973", "ZJ1954"]
    assert state.counts.unsure == 0


def test_a_plate_read_in_a_shape_the_site_never_shows_is_held_not_sent() -> None:
    # No format: the site's 6-character plates are 9LLL99. A plate starting with a 0 that the
    # recogniser reads as an O on every frame, surely (OCYE96: LLLL99), is one look-alike
    # from that shape: no event, rather than a wrong one.
    state = track.CameraState(shapes=track.Shapes())
    events = []
    for n, plate in enumerate(["7MRX49", "4KTR73", "OCYE96"]):
        events += _pass(state, [(plate, 0.95, _sure(plate))] * 6, start=100 * n)
    assert [e["plate"] for e in events] == ["7MRX49", "4KTR73"]
    assert state.counts.unsure == 1


def test_reads_that_never_agree_whole_agree_character_by_character() -> None:
    # A small plate read differently on each frame: each character is read by 3 reads of 4.
    reads: list[Reading] = [(text, 0.9, ()) for text in ["EL2936", "LE2936", "LL2934", "LL2036"]]
    events = _pass(track.CameraState(), reads)
    assert [(e["plate"], e["reads"]) for e in events] == [("LL2936", 4)]
    # Two reads of an M and two of an H in one position: a toss-up, not a plate, however
    # much surer the recogniser was of the H.
    split: list[Reading] = [("M702ZWA", 0.92, ())] * 2 + [("H702ZWA", 0.96, ())] * 2
    state = track.CameraState()
    assert _pass(state, split) == []
    assert state.counts.few_votes == 1


def test_a_plate_whose_reads_split_on_one_character_makes_no_event() -> None:
    # Four reads of L034E5, but the box cut the plate short: two reads of L034E8 and two of
    # the whole L034E8H put an 8 where the four put a 5. That character is a toss-up.
    reads: list[Reading] = [
        ("L034E8H", 0.99, ()),
        ("L034E", 0.9, ()),
        ("L034E5", 0.9, ()),
        ("L034E8H", 0.99, ()),
        ("L034E5", 0.9, ()),
        ("L034E8", 0.91, ()),
        ("L034E", 0.9, ()),
        ("L034E5", 0.9, ()),
        ("L034E8", 0.91, ()),
        ("L034E5", 0.9, ()),
    ]
    state = track.CameraState()
    assert _pass(state, reads) == []
    assert state.counts.few_votes == 1
    # A plate misread now and then still reads: 4 reads of AB12CDE against 2 of AB12CDF.
    mostly: list[Reading] = [("AB12CDE", 0.9, ())] * 4 + [("AB12CDF", 0.9, ())] * 2
    assert [e["plate"] for e in _pass(track.CameraState(), mostly)] == ["AB12CDE"]


def test_a_blurred_plate_whose_reads_scatter_on_a_character_makes_no_event() -> None:
    # UY 809 BQ under 5.5 px of motion blur on 13 px text (the other generator's hard seed 7):
    # three reads of UY889BO, the others each differing from it in one character or two, and
    # at its fifth character a 0 on two frames, a 6 on one, a 9 on one: as many reads show
    # another character there as show the 8. A guess, not a read (UY-889-BO was sent).
    reads: list[Reading] = [
        ("UY889BO", 0.8, ()),
        ("UY699BN", 0.7, ()),
        ("UY809BO", 0.8, ()),
        ("UY889BO", 0.8, ()),
        ("UY699SO", 0.7, ()),
        ("UY809BQ", 0.8, ()),
        ("UY869BO", 0.8, ()),
        ("UY889BO", 0.8, ()),
        ("UY899DO", 0.8, ()),
    ]
    state = track.CameraState()
    assert _pass(state, reads) == []
    assert state.counts.few_votes == 1
    # A plate read right on most frames, a character or two off now and then, still reads.
    mostly: list[Reading] = [("UY809BQ", 0.8, ())] * 5 + reads[:4]
    assert [e["plate"] for e in _pass(track.CameraState(), mostly)] == ["UY809BQ"]


def test_a_plate_read_in_part_on_its_own_track_is_not_a_plate_of_its_own() -> None:
    # A small plate whose box held only its last five characters on three frames, surely read,
    # and the whole plate on three, read a little less surely: the parts are the plate's
    # reads, not a plate 12CDE.
    reads: list[Reading] = [("12CDE", 0.97, ())] * 3 + [("AB12CDE", 0.8, ())] * 3
    assert [(e["plate"], e["reads"]) for e in _pass(track.CameraState(), reads)] == [("AB12CDE", 3)]
    # Read whole once only, the plate is a guess: no event rather than its part.
    part: list[Reading] = [("KR47", 0.99, ())] * 4 + [("5WKR47", 0.95, ())]
    state = track.CameraState()
    assert _pass(state, part) == []
    assert state.counts.few_votes == 1
    assert track.cut_short("KR47", "5WKR47")
    assert track.cut_short("5WKR4", "5WKR47")
    assert not track.cut_short("KR74", "5WKR47")
    assert not track.cut_short("5WKR47", "5WKR47")


def test_a_plate_read_whole_on_most_frames_is_not_lost_to_one_read_with_a_mark_beside_it() -> None:
    # An EU plate read whole (42IPJ1) on 18 frames and once with its country band's code taken
    # in (8421PJ1), as foreign footage showed: the one longer read used to take the whole
    # track's support (its part read 18 times counting for it) and, read once, made no event.
    texts = ["42IPJ1"] * 9 + ["8421PJ1"] + ["42IPJ1"] * 9 + ["421PJ"]
    state = track.CameraState()
    events = _pass(state, [(t, 0.99, ()) for t in texts])
    assert [(e["plate"], e["reads"]) for e in events] == [("42IPJ1", 18)]
    # So with a format: the longer read fits none and is dropped anyway.
    formats = plates.parse_formats("99-LLL-9")
    assert plates.normalise("8421PJ1", formats) is None


def _boxes(
    state: track.CameraState, reads: list[tuple[str, int, float]], down: int = 0
) -> list[dict[str, object]]:
    """Feed one plate through the view, one read per frame: its text, its box's height and
    its box's width over its height (``down``: px per frame the box moves down, as a plate
    coming towards the camera does; it moves left as well), and close what is left."""
    events = []
    for i, (text, h, aspect) in enumerate(reads):
        x, y = 600 - 20 * i, 100 + down * i
        rect = (x, y, x + round(h * aspect), y + h)
        read: track.Read = (rect, text, 0.95, ())
        events += track.update(state, "cam", i, i / 10, [read])[1]
    return events + _close_all(state)


def test_a_mark_beside_a_plate_read_as_one_more_character_on_some_frames_is_not_the_plate() -> None:
    # A black plate AUD 435 coming towards the camera, a round badge right of it (the other
    # generator's medium seed 61 without formats, held out). On its first 18 frames, boxes
    # 16-26 px high, the badge merged into an 8 (AUD4358); on the next 17, boxes 20-32 px high,
    # it was told apart and the plate read alone, from boxes as wide for their height. The
    # part counted for the longer reading (as a plate cut short by its box) and AUD4358 went
    # out. The part is the same text, told apart where seen larger: the plate.
    badge = [("AUD4358", 16 + i // 2, 4.4) for i in range(18)]
    badge += [("AUD435", 20 + i * 12 // 16, 4.3) for i in range(17)]
    events = _boxes(track.CameraState(), badge, down=12)
    assert [(e["plate"], e["reads"]) for e in events] == [("AUD435", 17)]
    # An EU plate crossing the view (hard seed 9, held out): its band taken for a 1 on 5
    # frames, 167KPS8, and the plate read alone on 19 from boxes of the same size: the two
    # readings compete (the part no longer counting for the longer), and the plate wins.
    band = [("67KPS8", 30, 4.2)] * 10 + [("167KPS8", 30, 4.2)] * 5 + [("67KPS8", 30, 4.2)] * 9
    events = _boxes(track.CameraState(), band)
    assert [(e["plate"], e["reads"]) for e in events] == [("67KPS8", 19)]
    # A box that cut the plate short is narrower by what it left out: that part still counts
    # for the whole plate (7KPS8 of 67KPS8, aspect 3.5 against 4.2).
    cut = [("67KPS8", 30, 4.2)] * 5 + [("7KPS8", 30, 3.5)] * 12
    events = _boxes(track.CameraState(), cut)
    assert [(e["plate"], e["reads"]) for e in events] == [("67KPS8", 5)]
    # A part read less than half as often as the longer reading is no plate with a mark
    # beside it, even seen larger.
    events = _boxes(track.CameraState(), badge[:-9], down=12)
    assert [e["plate"] for e in events] == ["AUD4358"]
    # Nor is the last group of a plate that prints a group of one (93-LEB-0) a mark.
    dashed = [("93-LEB-0", h, a) for _, h, a in badge[:18]]
    dashed += [("93-LEB", h, a) for _, h, a in badge[18:]]
    events = _boxes(track.CameraState(), dashed, down=12)
    assert [e["plate"] for e in events] == ["93-LEB-0"]


def test_a_plate_read_two_ways_frame_after_frame_is_one_track_and_one_event() -> None:
    # One plate crossing the view, its D and J taken for a 0 and a 3 on some frames: two
    # readings two characters apart, the first read three times before the other appears.
    texts = ["XY6503F"] * 3 + ["XY65DJF", "XY65DJF", "XY6503F", "XY65DJF"] + ["XY65DJF"] * 3
    state = track.CameraState()
    events = _pass(state, [(t, 0.95, ()) for t in texts])
    assert [(e["plate"], e["reads"]) for e in events] == [("XY65DJF", 6)]
    assert state.counts.tracks == 1
    # Another plate through the same spot, not on the very next frame (the first plate's
    # track missed a frame), is another vehicle: its own track and its own event.
    state = track.CameraState()
    events = []
    for i in range(12):
        reads: list[track.Read] = []
        if i < 5:
            reads.append(((25 * i, 100, 25 * i + 100, 120), "XY6503F", 0.95))
        elif i > 5:
            reads.append(((25 * i, 100, 25 * i + 100, 120), "KM40RTU", 0.95))
        events += track.update(state, "cam", i, i / 10, reads)[1]
    events += [e for t in list(state.tracks) if (e := track.close(state, "cam", t)) is not None]
    assert sorted(e["plate"] for e in events) == ["KM40RTU", "XY6503F"]
    assert state.counts.tracks == 2
    # Nor when a box read as nothing (the other car's plate coming into view) joined the first
    # track on the frame between: the next box, right where that one was going, is the other
    # car's plate, coming the other way.
    state = track.CameraState()
    events = []
    for i in range(12):
        if i < 5:
            reads = [((25 * i, 100, 25 * i + 100, 120), "XY6503F", 0.95)]
        elif i == 5:
            reads = [((105, 100, 205, 120), None, 0.0)]
        else:
            x = 100 - 25 * (i - 6)
            reads = [((x, 100, x + 100, 120), "KM40RTU", 0.95)]
        events += track.update(state, "cam", i, i / 10, reads)[1]
    events += [e for t in list(state.tracks) if (e := track.close(state, "cam", t)) is not None]
    assert sorted(e["plate"] for e in events) == ["KM40RTU", "XY6503F"]
    assert state.counts.tracks == 2
    assert track.follows((25, 100, 125, 120), (24, 101, 124, 121), 1)
    assert not track.follows((25, 100, 125, 120), (24, 101, 124, 121), 2)
    assert not track.follows((85, 100, 185, 120), (24, 101, 124, 121), 1)


def test_a_plate_read_in_two_formats_shapes_is_one_track_and_one_event() -> None:
    # RJ77QBZ (LL99LLL) with its Q read as a 0 on 4 frames fits LL-999-LL as RJ-770-BZ; then a
    # frame without a box, then the Q read. The reads are written as their formats print them,
    # but they are one character apart, one plate: one track, one event, the reading most
    # reads gave (footage from another generator, hard seed 5: two events, one wrong).
    formats = plates.parse_formats("LL99LLL,LL-999-LL")
    raws = ["RJ770BZ"] * 4 + [None] + ["RJ77QBZ"] * 8
    state = track.CameraState()
    events = []
    for i, raw in enumerate(raws):
        x = 800 - 22 * i
        reads: list[track.Read] = []
        if raw is not None:
            text = plates.normalise(raw, formats)
            assert text is not None
            reads.append(((x, 460, x + 120, 486), text, 0.9))
        events += track.update(state, "cam", 100 + i, (100 + i) / 25, reads)[1]
    events += [e for t in list(state.tracks) if (e := track.close(state, "cam", t)) is not None]
    assert [e["plate"] for e in events] == ["RJ77QBZ"]
    assert state.counts.tracks == 1


def test_one_plate_split_into_two_tracks_one_seeing_its_q_is_one_event() -> None:
    # 059 QOB coming closer: one track read it 059Q0B 3 times, then the box moved off it and a
    # second track read it with the Q's tail mostly lost, 059 00B, and the Q twice (its tail:
    # a Q, Track.tails). The two tracks' keys differ in that character, and the second has
    # more votes; but the plate it sends is the first's: one event (footage from another
    # generator, medium seed 26: two events of 059QOB).
    formats = plates.parse_formats("LL999LL,999LLL")
    state = track.CameraState()
    events = []
    raws = ["059Q0B"] * 3 + [None] + ["05900B", "05900B", "059Q0B", "05900B", "059Q0B", "05900B"]
    for i, raw in enumerate(raws):
        reads: list[track.Read] = []
        if raw is not None:
            x = 100 + 40 * i if i < 3 else 600 + 40 * i
            text = plates.normalise(raw, formats)
            reads.append(((x, 300 + 20 * i, x + 80, 314 + 20 * i), text, 0.95))
        events += track.update(state, "cam", i, i / 10, reads)[1]
    events += _close_all(state)
    assert [e["plate"] for e in events] == ["059QOB"]
    assert state.counts.duplicates == 1


def test_a_sign_does_not_take_over_a_wide_box_passing_beside_it() -> None:
    # No format. A street sign (N7 PARIS) read in place for 21 frames; then a van passes in
    # front, and the detector finds the van's lettering beside where the sign was, a box three
    # times as wide with its centre 227 px to the side, not read. The sign's track, which
    # knows its speed (none), must not take it: taken, the track moved 140 px, and the sign
    # went out as a plate (footage from another generator, medium seed 29).
    state = track.CameraState(shapes=track.Shapes())
    events = []
    for i in range(24):
        if i < 21:
            reads: list[track.Read] = [((16, 39, 106, 60), "N7PARIS", 1.0)]
        else:
            x = 158 - 14 * (i - 21)
            reads = [((x, 47, x + 257, 74), None, 0.0)]
        events += track.update(state, "cam", i, i / 10, reads)[1]
    events += _close_all(state)
    assert events == []
    assert state.counts.static == 1


def test_a_sign_cut_short_by_a_passing_van_does_not_set_off_at_its_speed() -> None:
    # No format. A shop sign (MART 247) read in place; a van passing in front covers its left
    # part, and its box, read MART24, is cut short on the one frame: its centre jumped 48 px
    # right, one edge in, the other out. That is no motion: a track's speed is taken from its
    # box's edges moving the same way. Taken from the centre, the sign's track was predicted
    # 340 px to the right 7 frames later, took a house number's box there, moved, and went
    # out as a plate (footage from another generator, medium seed 27).
    state = track.CameraState(shapes=track.Shapes())
    events = []
    for i in range(43):
        reads: list[track.Read] = []
        if i < 30:
            reads.append(((360, 135, 729, 176), "MART247", 1.0))
        elif i == 30:
            reads.append(((483, 137, 703, 171), "MART24", 1.0))
        elif i >= 37:
            reads.append(((799, 137, 869, 169), None, 0.0))
        events += track.update(state, "cam", i, i / 15, reads)[1]  # 15 frames/s
    events += _close_all(state)
    assert events == []
    assert state.counts.static >= 1


def test_a_sign_whose_box_is_cut_short_now_and_then_is_not_moving() -> None:
    state = track.CameraState()
    events = []
    for i in range(30):
        # The detector sometimes finds only the sign's first word: its right edge jumps.
        rect = (330, 84, 367 if i % 4 == 0 else 418, 99 + i % 2)
        events += track.update(state, "cam", i, i / 10, [(rect, "SPEED30", 0.9)])[1]
    for t in list(state.tracks):
        if (event := track.close(state, "cam", t)) is not None:
            events.append(event)
    assert events == []
    assert state.counts.static >= 1


def test_a_sign_uncovered_by_one_vehicle_and_covered_by_the_next_is_not_moving() -> None:
    # A shop sign (KEBAB 24) behind the traffic: a van leaving uncovers it from the right to
    # the left, the next one covers it from the right. The first box (its last letters) and
    # the last (its first letters) lie 110 px apart with both edges moved the same way, but
    # no box ever moved: one edge at a time did.
    boxes = [(189, 87, 225, 107), (133, 87, 225, 107), (98, 87, 225, 107)]
    boxes += [(73, 87, 225, 107)] * 25
    boxes += [(72, 85, 207, 107), (72, 85, 175, 107), (72, 85, 149, 107), (72, 84, 116, 110)]
    state = track.CameraState()
    events = []
    for i, rect in enumerate(boxes):
        events += track.update(state, "cam", i, i / 12, [(rect, "KEBAB24", 0.99)])[1]
    events += _close_all(state)
    assert events == []
    assert state.counts.static == 1
    # A plate passing in front of it moves box by box: sent.
    assert [e["plate"] for e in _pass(track.CameraState(), [("AB12CDE", 0.9, ())] * 6)] == [
        "AB12CDE"
    ]


def test_a_sign_does_not_follow_a_vehicle_passing_in_front_of_it() -> None:
    # No format. A shop sign (KEBAB 24) read in place on a 10 frames/s camera, boxed as the
    # detector found it (footage from another generator, medium seed 87, raining): a vehicle
    # passes in front, and for 14 frames the only box near the sign is the vehicle's, read as
    # nothing, first beside the sign (a third of it within the sign's span) and then going
    # down and away. Then the sign is read in place again. Taken by the sign's track, those
    # boxes moved it 73 px, and the sign went out as a plate.
    boxes: list[tuple[track.Rect, str | None]] = [((248, 67, 344, 88), "KEBAB24")] * 35
    for i in range(14):
        boxes.append(((286 + i // 3, 81 + 5 * i, 386 + 4 * i, 95 + 5 * i), None))
    boxes += [((249, 66, 344, 87), "KEBAB24")] * 6 + [((250, 68, 344, 86), None)] * 4
    state = track.CameraState(shapes=track.Shapes())
    events = []
    for i, (rect, text) in enumerate(boxes):
        events += track.update(state, "cam", i, i / 10, [(rect, text, 1.0 if text else 0.0)])[1]
    events += _close_all(state)
    assert events == []
    # (the sign's track, left while the vehicle is in front, and the one of it seen again)
    assert state.counts.static == 2


def test_a_plate_read_standing_and_driving_off_unread_is_sent() -> None:
    # A car stands at a barrier, its plate read on 12 frames; the barrier lifts and it drives
    # off, slowly at first, its plate too blurred to read. Its track takes the boxes it leaves
    # by (each mostly within the span of those before) and moves: one pass, one event.
    boxes: list[tuple[track.Rect, str | None]] = [((300, 200, 400, 230), "AB12CDE")] * 12
    x = 300
    for i in range(15):
        x += 3 * (i + 1)
        boxes.append(((x, 200, x + 100, 230), None))
    state = track.CameraState()
    events = []
    for i, (rect, text) in enumerate(boxes):
        events += track.update(state, "cam", i, i / 10, [(rect, text, 0.9 if text else 0.0)])[1]
    events += _close_all(state)
    assert [e["plate"] for e in events] == ["AB12CDE"]
    assert state.counts.static == 0


def test_a_sign_seen_in_parts_as_vehicles_pass_in_front_is_not_moving() -> None:
    # No format. A street sign (N7 PARIS) behind the traffic, boxed as the detector found it
    # (footage from another generator, medium seed 53): uncovered from the right by a car
    # leaving, whole for a while, then seen as its middle (a car in front of each end) and
    # then as its left half. From the middle to the left half both edges moved left, 60 and
    # 43 px: a shift, but the box stayed within the span the sign's boxes had covered. Taken
    # as a move, the sign travelled 1.4 of its heights and went out as a plate.
    boxes = [(99, 63, 160, 86), (55, 63, 160, 86), (35, 63, 158, 86)]
    boxes += [(29, 62, 160, 89)] * 8 + [(31, 63, 160, 86)] * 17
    boxes += [(72, 60, 161, 92), (31, 63, 160, 86), (29, 61, 160, 89)]
    boxes += [(89, 63, 151, 88), (29, 62, 108, 89), (35, 65, 72, 87)]
    state = track.CameraState(shapes=track.Shapes())
    events = []
    for i, rect in enumerate(boxes):
        text = "N7PARIS" if i % 5 == 0 else None
        events += track.update(state, "cam", i, i / 25, [(rect, text, 1.0)])[1]
    events += _close_all(state)
    assert events == []
    assert state.counts.static == 1


def test_a_track_restored_from_a_snapshot_without_its_span_still_moves() -> None:
    # Camera state snapshotted before tracks kept the span their boxes covered (``extent``),
    # their boxes' sizes per reading (``sizes``) and their reads set apart (``apart``) comes
    # back with the empty defaults: the track's span starts at its last box, and a plate
    # driving on (to the left, towards (0, 0)) is sent as before, not taken for text standing
    # within a span from (0, 0).
    state = track.CameraState()
    events = []
    for i in range(2):
        rect = (600 - 10 * i, 100, 700 - 10 * i, 130)
        events += track.update(state, "cam", i, i / 10, [(rect, "AB12CDE", 0.9)])[1]
    [moving] = state.tracks
    del moving.extent  # as unpickled from the older snapshot: the class's default
    del moving.sizes  # (nor did they keep their boxes' sizes per reading)
    del moving.apart
    assert moving.extent == (0, 0, 0, 0)
    assert moving.sizes is None
    assert moving.apart is None
    for i in range(2, 12):
        rect = (600 - 10 * i, 100, 700 - 10 * i, 130)
        read: track.Read = (rect, "AB12CDE", 0.9, (), True, (), i % 2 == 0)
        events += track.update(state, "cam", i, i / 10, [read])[1]
    events += _close_all(state)
    assert [e["plate"] for e in events] == ["AB12CDE"]


@pytest.mark.parametrize("formats", ["LL99LLL,LLL999", ""])
def test_a_line_of_lettering_the_detector_boxes_in_pieces_rides_on_its_vehicle(
    formats: str,
) -> None:
    # A van crossing the view, its lettering (J. BROWN & SONS) a plate width above its plate,
    # of the plate's height, on the van's plain paint (a plate's ground by ``ocr.on_a_board``).
    # The detector finds the line in pieces that change from frame to frame: its box's
    # centre jumps along the line, while the pieces stay within the line's span (the other
    # generator's medium seeds 51 and 53). Three pieces read WN65ONS, which fits LL99LLL.
    # Lettering on the van, not a plate: the van's plate is the one event, with the formats
    # (where two plates of one size, one above the other, may be a car following another:
    # but the lettering's box does not keep its width as a plate's board does) and without.
    given = plates.parse_formats(formats) if formats else ()
    state = track.CameraState(shapes=None if given else track.Shapes())
    pieces = [(0, 110), (110, 220), (30, 200), (0, 220), (60, 140), (150, 220), (20, 90)]
    events = []
    for i in range(24):
        x = 40 + 16 * i
        left, right = pieces[i % len(pieces)]
        reads: list[track.Read] = [
            ((x + 20 + left, 160, x + 20 + right, 180), "WN65ONS" if i % 8 == 3 else None, 0.9),
            ((x + 70, 300, x + 190, 320), "KV69TQE", 0.99),
        ]
        reads = [(r, t and plates.normalise(t, given), c) for r, t, c in reads]
        events += track.update(state, "cam", i, i / 25, reads)[1]
    events += _close_all(state)
    assert [e["plate"] for e in events] == ["KV69TQE"]
    assert state.counts.on_vehicle == 1


def test_the_decoder_reports_its_evidence_for_look_alike_characters() -> None:
    characters = list("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ")
    decoder = ocr.CtcDecoder(characters)
    classes = len(characters) + 2  # blank, the characters, space
    probs = np.zeros((5, classes), np.float32)
    column = {c: i + 1 for i, c in enumerate(characters)}
    probs[0, column["O"]], probs[0, column["0"]] = 0.6, 0.4  # an O, nearly a 0
    probs[1, 0] = 1.0  # blank
    probs[2, column["K"]] = 1.0
    probs[3, column["7"]] = 0.9
    probs[3, 0] = 0.1
    probs[4, column["7"]] = 1.0
    text, confidence, evidence = decoder.read(probs)
    assert text == "OK7"
    assert evidence[0] == pytest.approx((0.4, 0.6))
    assert evidence[1:] == (None, None)
    assert decoder(probs) == (text, confidence)


def test_the_decoder_keeps_the_separators_printed_between_a_plates_groups() -> None:
    # A dash and a space (the last class) read between groups stay in the text, without
    # evidence; one read before the first character or after the last is dropped.
    characters = list("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ-")
    decoder = ocr.CtcDecoder(characters)
    column = {c: i + 1 for i, c in enumerate(characters)}
    column[" "] = len(characters) + 1
    read = " 36-IU0 6-"
    probs = np.zeros((len(read), len(characters) + 2), np.float32)
    for t, c in enumerate(read):
        probs[t, column[c]] = 1.0
    probs[6, column["O"]], probs[6, column["0"]] = 0.3, 0.7
    text, confidence, evidence = decoder.read(probs)
    assert text == "36-IU0 6"
    assert confidence == pytest.approx(sum([1.0] * 5 + [0.7]) / 6)  # of the letters and digits
    assert len(evidence) == len(text)
    assert evidence[2] is None  # the separators
    assert evidence[6] is None
    assert evidence[5] == pytest.approx((0.7, 0.3))


def test_the_decoder_tells_a_last_character_standing_apart_from_the_text() -> None:
    # Time steps as the recogniser reads 09-ONS-4 with an F country sticker past its end
    # (the other generator's medium seed 62): its letters and digits 3-4 steps apart, the F 10
    # steps after the 4 with nothing read between. Across a dash read, or at the text's pitch,
    # the last character is the plate's.
    characters = list("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ-")
    decoder = ocr.CtcDecoder(characters)
    column = {c: i + 1 for i, c in enumerate(characters)}

    def probs(placed: list[tuple[int, str]], steps: int = 40) -> np.ndarray:
        out = np.zeros((steps, len(characters) + 2), np.float32)
        out[:, 0] = 1.0  # blank
        for t, c in placed:
            out[t, 0], out[t, column[c]] = 0.0, 1.0
        return out

    plate = [(4, "0"), (7, "9"), (10, "-"), (13, "O"), (17, "N"), (21, "S"), (24, "-"), (27, "4")]
    assert decoder.set_apart(probs([*plate, (37, "F")]))
    assert decoder.read(probs([*plate, (37, "F")]))[0] == "09-ONS-4F"
    assert not decoder.set_apart(probs(plate))
    assert not decoder.set_apart(probs([*plate, (31, "F")]))  # at 1 pitch: the plate's
    assert not decoder.set_apart(probs([*plate, (32, "-"), (37, "F")]))  # a dash read
    assert not decoder.set_apart(probs([(4, "A"), (8, "B"), (20, "C")]))  # too short to tell


def test_a_zero_the_recogniser_also_saw_as_a_q_is_a_q() -> None:
    # Blur takes a Q's tail away: the recogniser reads QQ-616-QR as 00-616-QR, sure of the
    # 0s but giving a Q 0.13-0.30 of each (footage from another generator, medium seed 10),
    # where a 0 or an O gets almost none (a Q at 0.08 or more on 0.4% of true O reads, never
    # on a 0's). Such a 0 is a Q; a 0 with a trace of Q (0.01) stays a 0, and so does an O
    # with the trace some fonts' O always draws (0.03-0.08: XO-738-RH, easy seed 28).
    characters = list("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ")
    decoder = ocr.CtcDecoder(characters)
    column = {c: i + 1 for i, c in enumerate(characters)}
    probs = np.zeros((7, len(characters) + 2), np.float32)
    probs[0, column["0"]], probs[0, column["Q"]] = 0.8, 0.2
    probs[1, 0] = 1.0
    probs[2, column["0"]], probs[2, column["Q"]] = 0.99, 0.01
    probs[3, 0] = 1.0
    probs[4, column["O"]], probs[4, column["Q"]] = 0.88, 0.12
    probs[5, 0] = 1.0
    probs[6, column["O"]], probs[6, column["Q"]] = 0.94, 0.06
    text, _, evidence = decoder.read(probs)
    assert text == "Q0QO"
    assert evidence[0] is None  # no look-alike of a digit
    assert evidence[1] == pytest.approx((0.99, 0.0))


def test_the_second_look_decides_the_zeros_and_os_where_it_reads_the_same_text() -> None:
    # The read of the box grown taller (ocr.taller) decides each 0 or O of the first read:
    # a Q there is a Q, a faint tail a hint, none an O without a hint. Where it reads other
    # characters (a taller box takes in more: an EU band's country code), the first stands.
    characters = list("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ-")
    decoder = ocr.CtcDecoder(characters)
    column = {c: i + 1 for i, c in enumerate(characters)}

    def probs(read: str, q: dict[int, float]) -> np.ndarray:
        out = np.zeros((2 * len(read), len(characters) + 2), np.float32)
        for t, c in enumerate(read):
            out[2 * t, column[c]] = 1.0 - q.get(t, 0.0)
            out[2 * t, column["Q"]] += q.get(t, 0.0)
            out[2 * t + 1, 0] = 1.0  # a blank between characters
        return out

    first = ("PO-0O8", (1, 3))  # hints on the first O and the last O
    assert decoder.second_look(*first, probs("PO0O8", {1: 0.9, 3: 0.03})) == ("PQ-0O8", (3,))
    assert decoder.second_look(*first, probs("PQ0O8", {})) == ("PQ-0O8", ())
    assert decoder.second_look(*first, probs("P00O8", {2: 0.2})) == ("PO-QO8", ())
    # In the taller box a Q's tail is in view: a trace under Q_HINT_TALL (0.02), as one font
    # draws on its O (UD-139-QO: 0.002-0.03), is no hint there, though it would be in the
    # first box (Q_HINT, 0.01).
    assert decoder.second_look(*first, probs("PO0O8", {3: 0.015})) == ("PO-0O8", ())
    assert decoder.second_look(*first, probs("PO0O8", {1: 0.025})) == ("PO-0O8", (1,))
    # B for 8 is one character read two ways: still the same text.
    assert decoder.second_look(*first, probs("POQOB", {})) == ("PO-QO8", ())
    for other in ["NPO0O8", "PO0O", "PA0O8", "PO0Z8"]:
        assert decoder.second_look(*first, probs(other, {})) == first


def _sure_read(read: str) -> tuple[ocr.CtcDecoder, dict[str, int], np.ndarray]:
    """A decoder, its columns, and probabilities reading ``read`` surely, one step a
    character (to be changed by the test)."""
    characters = list("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ-")
    column = {c: i + 1 for i, c in enumerate(characters)}
    probs = np.zeros((len(read), len(characters) + 2), np.float32)
    for t, c in enumerate(read):
        probs[t, column[c]] = 1.0
    return ocr.CtcDecoder(characters), column, probs


def test_the_decoder_names_the_zeros_and_os_with_a_faint_q_tail() -> None:
    # Between Q_HINT (0.01) and Q_TAIL (0.08) of a Q's probability: a tail too faint to make
    # the character a Q, named by its place among the read's letters and digits (separators
    # left out); below it, none.
    decoder, column, probs = _sure_read("P-O0O")
    probs[2, column["O"]], probs[2, column["Q"]] = 0.97, 0.03  # a faint tail
    probs[3, column["0"]], probs[3, column["Q"]] = 0.995, 0.005  # none to speak of
    probs[4, column["O"]], probs[4, column["Q"]] = 0.85, 0.15  # a Q
    text, _, _, hints = decoder.read_hinted(probs)
    assert (text, hints) == ("P-O0Q", (1,))


def test_the_decoder_names_the_is_and_ones_with_a_hint_of_a_j() -> None:
    # J_HINT (0.03) of a J's probability or more on an I or a 1: a J whose hook blur took away.
    decoder, column, probs = _sure_read("SI1I")
    probs[1, column["I"]], probs[1, column["J"]] = 0.94, 0.06  # a hint
    probs[2, column["1"]], probs[2, column["J"]] = 0.96, 0.04  # a hint
    probs[3, column["I"]], probs[3, column["J"]] = 0.995, 0.005  # none to speak of
    text, _, _, hints = decoder.read_hinted(probs)
    assert (text, hints) == ("SI1I", (1, 2))


def test_an_i_that_many_reads_saw_with_a_hint_of_a_j_is_held_as_unsure() -> None:
    # SJ 772 TU under motion blur (the other generator's hard seed 14): read SI772TU on 30
    # frames, the J's probability 0.03 or more at the I on 19 of them, and sent so, with the
    # formats and without: a wrong event. The I's of 16 other plates on those clips showed it
    # on 0-8% of their reads. An I that 40% of the reads saw with the hint: held as unsure.
    def crossing(hinted: set[int], shapes: track.Shapes | None) -> tuple[list[str], int]:
        return _hinted_crossing("SI772TU", 1, hinted, shapes)

    for shapes in (None, track.Shapes()):
        assert crossing(set(range(0, 20, 3)) | {1, 2, 4, 5}, shapes) == ([], 1)  # 11 of 20
        assert crossing({3, 11}, shapes)[0] == ["SI772TU"]  # 2 of 20: an I


def test_the_groups_a_plate_prints_say_which_kind_a_look_alike_is() -> None:
    # A group between two separators holds one kind: 36-IU0-6 is 36-IUO-6, however sure the
    # recogniser was of the 0 (one glyph in many plate fonts). An end group says so only of
    # its one look-alike (0PQ 234 is OPQ 234): end groups may mix kinds, and UK plates'
    # first group (WD02) does. A read without a separator says nothing.
    assert plates.group_kinds("36-IU0-6") == (None, "9", "L", None, "L", None)
    assert plates.group_kinds("0PQ 234") == ("L", None, None, "9", None, None)
    assert plates.group_kinds("WD02 JKB") == (None,) * 6 + ("L",)
    assert plates.group_kinds("A0 189 DX") == (None, "L", "9", "9", None, None, None)
    assert plates.group_kinds("7ABC123") == (None,) * 7
    evidence = (None, (1.0, 0.0), None, (0.2, 0.8), None, (0.9, 0.1), None, (1.0, 0.0))
    assert plates.grouped("36-IU0-6", evidence) == (
        None,
        (1.0, 0.0),
        (0.0, 1.0),  # the I
        None,
        (0.0, 1.0),  # the 0, an O
        (1.0, 0.0),
    )
    # A B or an 8 is drawn apart: the group's word is averaged with the recogniser's, so a
    # recogniser sure of an 8 in a letter group leaves a toss-up (no event), not a guess.
    assert plates.grouped("AB-C8D-12", (None, (0.0, 1.0), None, None, (1.0, 0.0))) == (
        None,
        (0.0, 1.0),
        None,
        (0.5, 0.5),
        None,
        None,
        None,
    )


def test_a_group_of_look_alikes_takes_the_kind_of_those_read_surely() -> None:
    # BI 354 OB (DejaVu Sans Mono, footage from another generator, medium seed 48) read
    # BI 354 0B on most frames: each end group holds only look-alikes, so the groups said
    # nothing and BI3540B went out without formats. A B is drawn apart from an 8 in plate
    # fonts, and the recogniser was sure of both B's: they make their groups letters. A 0 or
    # an O, one glyph in many fonts, says nothing however sure; nor does an unsure B.
    sure_b, unsure_b = (0.01, 0.98), (0.4, 0.6)
    evidence = (sure_b, (0.1, 0.9), None, None, (0.9, 0.05), None, None, (0.95, 0.01), sure_b)
    assert plates.group_kinds("BI 354 0B", evidence) == (None, "L", None, "9", None, "L", None)
    grouped = plates.grouped("BI 354 0B", evidence)
    assert grouped[1] == (0.0, 1.0)  # the I
    assert grouped[5] == (0.0, 1.0)  # the 0, an O
    unsure = (unsure_b, *evidence[1:8], unsure_b)
    assert plates.group_kinds("BI 354 0B", unsure) == (None, None, None, "9", None, None, None)
    assert plates.group_kinds("BI 354 0B") == (None, None, None, "9", None, None, None)
    # A group with a character that is no look-alike decides as before: an 8 read surely
    # among letters is averaged with them (a toss-up), not taken as a digit.
    assert plates.group_kinds("AB-C8D-12", (None, sure_b, None, None, (1.0, 0.0))) == (
        (None, "L", None, "L", None, None, None)
    )


def test_an_end_group_with_look_alikes_read_surely_says_which_kind_its_last_one_is() -> None:
    # 482 OLZ, a black plate on an approaching camera (footage from another generator, easy
    # seed 62, held out), read 482 0LZ on all of its 42 frames: its end group holds two
    # look-alikes, the O and the Z, and said nothing, so 4820LZ went out without formats. The
    # recogniser was sure of the Z, which is drawn apart from a 2: with the L, it makes the
    # group letters, and the 0 (one glyph with the O) an O.
    evidence = (None, (1.0, 0.0), (0.98, 0.02), None, (0.9, 0.1), None, (0.02, 0.98))
    assert plates.group_kinds("482 0LZ", evidence) == (None, None, None, "L", None, None)
    assert plates.grouped("482 0LZ", evidence)[3] == (0.0, 1.0)
    # An unsure Z says nothing, nor does an end group that reads mixed: WD02 JKB's 2 read
    # surely is a digit beside two letters (British plates' first group mixes kinds).
    unsure_z = (*evidence[:6], (0.4, 0.6))
    assert plates.group_kinds("482 0LZ", unsure_z) == (None,) * 6
    wd02 = (None, None, (0.9, 0.1), (0.99, 0.01), None, None, None, (0.05, 0.95))
    assert plates.group_kinds("WD02 JKB", wd02) == (None,) * 6 + ("L",)


def test_the_separators_read_choose_the_format_whose_groups_end_there() -> None:
    # MY17 IOB, a British plate in Pillow's own face, its I read as a 1 (medium seed 49):
    # MY171OB fits LL999LL with no change, where LL99LLL needs one, and went out as a wrong
    # event with the formats given. The space read after MY17 is where LL99LLL's groups end
    # (letters to digits and back), inside LL999LL's digits.
    formats = plates.parse_formats("LL999LL,99-LLL-9,LL99LLL")
    assert plates.group_ends(formats[0]) == {2, 5}
    assert plates.group_ends(formats[1]) == {2, 5}  # where it prints its dashes
    assert plates.group_ends(formats[2]) == {2, 4}
    assert plates.group_ends(plates.PlateFormat("LLA999")) == set()  # A: either kind
    assert plates.normalise("MY17 10B", formats) == "MY17IOB"
    assert plates.normalise("MY17 1OB", formats) == "MY17IOB"
    # Without a separator read, the fewest changes win, as before; so with one that no
    # format places (the only format fitting stands: a Danish AB 12 345 given as LL99999).
    assert plates.normalise("MY171OB", formats) == "MY171OB"
    assert plates.normalise("AB 12 345", plates.parse_formats("LL99999")) == "AB12345"


def test_a_look_alike_in_a_group_of_letters_is_a_letter_without_a_format() -> None:
    # No format. A Dutch plate 36-IUO-6 whose O the recogniser reads as a 0 on every frame,
    # leaning 0 (0.52-0.9): the votes alone sent 36IU06 (footage from another generator,
    # medium seed 2). The dashes it read put the O among letters: 36IUO6.
    reads: list[Reading] = []
    for i in range(12):
        o = (0.6 + 0.03 * (i % 4), 0.4 - 0.03 * (i % 4))
        evidence = (None, (1.0, 0.0), None, (0.3, 0.7), None, o, None, (1.0, 0.0))
        reads.append(("36IU06", 0.9, plates.grouped("36-IU0-6", evidence)))
    events = _pass(track.CameraState(shapes=track.Shapes()), reads)
    assert [e["plate"] for e in events] == ["36IUO6"]


def test_a_plate_held_as_unsure_is_sent_once_later_plates_settle_its_look_alike() -> None:
    state = track.CameraState(shapes=track.Shapes())
    split: list[Reading] = []
    for i in range(8):
        text = "0LTM98" if i % 2 else "OLTM98"
        seen = (0.55, 0.45) if i % 2 else (0.45, 0.55)
        split.append((text, 0.9, (seen, None, None, None, None, (1.0, 0.0))))
    events = _pass(state, split)
    assert events == []
    assert state.counts.unsure == 1
    for n, plate in enumerate(["7MRX49", "4KTR73"]):
        evidence = tuple((1.0, 0.0) if c in "98" else None for c in plate)
        events += _pass(state, [(plate, 0.95, evidence)] * 6, start=100 * (n + 1))
    # The next frame looks at the held track again: the two plates say it starts with a digit.
    events += track.update(state, "cam", 300, 30.0, [])[1]
    assert [e["plate"] for e in events] == ["7MRX49", "4KTR73", "0LTM98"]
    assert events[-1]["first_frame"] == 0
    assert state.counts.unsure == 0


def test_with_early_events_the_event_goes_out_once_the_plate_is_sure_and_once_per_pass() -> None:
    state = track.CameraState()
    early = track.TrackRules(early_votes=5)
    sent_at = []
    for i in range(20):
        reads: list[track.Read] = [((25 * i, 100, 25 * i + 100, 120), "AB12CDE", 0.9)]
        for event in track.update(state, "cam", i, i / 10, reads, early)[1]:
            sent_at.append((i, event))
    after = []
    for t in list(state.tracks):
        if (event := track.close(state, "cam", t, early)) is not None:
            after.append(event)
    # Sent on the frame its fifth agreeing read came in, while the plate is still in view;
    # closing the track sends nothing more.
    assert [(i, e["plate"], e["last_frame"], e["reads"]) for i, e in sent_at] == [
        (4, "AB12CDE", 4, 5)
    ]
    assert after == []
    assert state.counts.events == 1
    assert state.counts.duplicates == 0
    # By default the same pass gives its event when the track closes.
    late = track.CameraState()
    events = []
    for i in range(20):
        reads = [((25 * i, 100, 25 * i + 100, 120), "AB12CDE", 0.9)]
        events += track.update(late, "cam", i, i / 10, reads)[1]
    assert events == []
    closed = [e for t in list(late.tracks) if (e := track.close(late, "cam", t)) is not None]
    assert [e["last_frame"] for e in closed] == [19]


def test_a_sign_joined_once_by_another_box_is_not_moving() -> None:
    state = track.CameraState()
    events = []
    for i in range(30):
        rect = (440, 81, 544, 99)
        if i == 29:
            rect = (408, 81, 431, 95)  # a passing car's text, close enough to join the track
        events += track.update(state, "cam", i, i / 10, [(rect, "SPEED30", 0.95)])[1]
    for t in list(state.tracks):
        if (event := track.close(state, "cam", t)) is not None:
            events.append(event)
    assert events == []
    assert state.counts.static == 1


@pytest.mark.slow
def test_cameras_are_added_and_removed_through_the_control_endpoint_while_it_runs(
    tmp_path: Path,
) -> None:
    clip_with_sign(tmp_path / "gate_a.mp4", "ABC123", "KTR482", frames=150)
    clip_with_sign(tmp_path / "gate_b.mp4", "XYZ789", "KTR482")
    # gate_c's car comes only at frame 120; the camera is removed long before that (the
    # pipeline reads some 15 frames a second), so no event of its plate may go out.
    clip_with_sign(tmp_path / "gate_c.mp4", "DEF456", "KTR482", frames=150, enter=120)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = f"http://127.0.0.1:{port}/cameras"
    statuses: list[tuple[str, str]] = []

    async def main() -> tuple[run.Result, dict[str, Any]]:
        task = asyncio.create_task(
            run.run_pipeline(
                [str(tmp_path / "gate_a.mp4")],
                tmp_path / "out",
                formats=plates.parse_formats("LLL999"),
                truth={"gate_a": ["ABC123"], "gate_b": ["XYZ789"]},
                control=("127.0.0.1", port),
                on_status=lambda ev: statuses.append((ev.stream, ev.state)),
            )
        )
        seen: dict[str, Any] = {}
        async with aiohttp.ClientSession() as http:
            for _ in range(200):  # until the endpoint is up and gate_a runs
                try:
                    async with http.get(base) as r:
                        cams = await r.json()
                    if cams.get("gate_a", {}).get("state") == "running":
                        break
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.05)
            body = {"uri": str(tmp_path / "gate_b.mp4"), "name": "gate_b"}
            async with http.post(base, json=body) as r:
                seen["add"] = (r.status, await r.json())
            async with http.post(base, json=body) as r:  # the name is taken
                seen["again"] = r.status
            async with http.post(base, json={"uri": str(tmp_path / "nothing.mp4")}) as r:
                seen["bad"] = r.status
            body = {"uri": str(tmp_path / "gate_c.mp4"), "name": "gate_c"}
            async with http.post(base, json=body) as r:
                seen["add_c"] = r.status
            async with http.get(base) as r:
                seen["listed"] = sorted(await r.json())
            async with http.delete(f"{base}/gate_c") as r:
                seen["removed"] = (r.status, await r.json())
            async with http.delete(f"{base}/gate_c") as r:
                seen["removed_again"] = r.status
        return await task, seen

    result, seen = af.run(main())
    assert seen["add"] == (201, {"camera": "gate_b"})
    assert (seen["again"], seen["bad"], seen["add_c"]) == (400, 422, 201)
    assert seen["listed"] == ["gate_a", "gate_b", "gate_c"]
    status, last = seen["removed"]
    assert status == 200
    assert last["stream"] == "gate_c"
    assert seen["removed_again"] == 404
    # The camera added while it ran was read like the first; the one removed ended cleanly
    # (its frames up to then went through, no event of its plate was invented).
    assert [(e["camera"], e["plate"]) for e in sorted(result.events, key=str)] == [
        ("gate_a", "ABC123"),
        ("gate_b", "XYZ789"),
    ]
    stats = result.statistics
    assert stats["track"].received == result.frames == 150 + 24 + last["emitted"]
    assert all(rec.balanced and rec.in_flight == 0 for rec in stats.values())
    assert ("gate_c", "removed") in statuses
    assert ("gate_b", "ended") in statuses
    assert not [t for t in threading.enumerate() if t.name.startswith("aioflow")]


def run_app(
    tmp_path: Path, frames: Callable[[], AsyncIterator[Any]], summary: app.Summary, **options: Any
) -> dict[str, af.BlockStatistics]:
    """The flagship's pipeline (``app.build``, format ``LLL999``, a webhook on loopback that
    answers at once) run over ``frames()``; its statistics."""

    async def main() -> dict[str, af.BlockStatistics]:
        runner, url, _ = await run.serve_webhook(0.0)
        try:
            pipe = app.build(
                out=tmp_path / "out",
                webhook=url,
                formats=plates.parse_formats("LLL999"),
                summary=summary,
                **options,
            )
            await pipe.run(frames())
        finally:
            await runner.cleanup()
        return pipe.statistics()

    return af.run(main())


@pytest.mark.slow
def test_detection_at_a_set_rate_holds_the_frames_between_and_still_reads_the_plates(
    tmp_path: Path,
) -> None:
    # One camera's 2.4 s clip (24 frames at 10 fps) twice, as if the camera had been removed
    # and added again in between (an af.EndOfKey after each pass), detection at 5 frames/s.
    clip = tmp_path / "gate_north.mp4"
    clip_with_sign(clip, "ABC123", "KTR482")
    summary = app.Summary()

    async def frames() -> Any:
        for _ in range(2):
            async for frame in video.video_source(str(clip)):
                yield frame
            yield af.EndOfKey("gate_north")

    stats = run_app(tmp_path, frames, summary, detect_per_second=5)
    # Detection ran on every other frame by the clip's own clock (0.2 s apart), whatever
    # the speed it was read at: 12 frames a pass; every frame still came out, one record each.
    assert stats["detect"].received == stats["find_plates"].emitted == 2 * 12
    assert stats["sample"].received == stats["sample"].emitted == 2 * 24
    assert stats["track"].received == 2 * 24
    # (and one record more per end of the camera: the tracker's flush)
    assert stats["track"].emitted == stats["record"].received == 2 * 24 + 2
    counts = summary.counts
    assert (counts.frames, counts.not_looked) == (2 * 24, 2 * 12)
    # The plate is read once per pass, from the frames looked at only; the sign, read until
    # it had stood still for 5 looks, then now and then, made no event.
    assert [(e["camera"], e["plate"]) for e in summary.events] == [("gate_north", "ABC123")] * 2
    assert all(3 <= e["reads"] <= 12 for e in summary.events), summary.events
    assert counts.held > 0
    # The camera's end reached the tracker (it flushed and forgot the camera, so the second
    # pass was read afresh, not taken for a duplicate of the first).
    assert stats["track"].evicted == 2
    assert counts.duplicates == 0
    for record in stats.values():
        assert record.balanced
        assert record.in_flight == record.queue_depth == record.failed == 0


@pytest.mark.slow
def test_live_sample_and_hold_keeps_each_cameras_order_and_queues_frames_only_in_the_fair_queue(
    tmp_path: Path,
) -> None:
    # Live with detection at a set rate: the fair queue (``admit``) is the one place where
    # frames wait; behind it every queue is short, the sampling stage's too (with 64 frames
    # there and in ``unpack``, 8 cameras' frames were 5-8 s old at the tracker), and a frame
    # waits only for its own camera's look. Two cameras, each plate read, each camera's frames
    # at the tracker in order, the books balanced.
    clips = {"gate_north": tmp_path / "north.mp4", "gate_south": tmp_path / "south.mp4"}
    clip_with_sign(clips["gate_north"], "ABC123", "KTR482")
    clip_with_sign(clips["gate_south"], "XYZ789", "KTR482")
    summary = app.Summary()
    seen: dict[str, list[int]] = {}

    async def main() -> af.Pipeline:
        runner, url, _ = await run.serve_webhook(0.0)
        try:
            pipe = app.build(
                out=tmp_path / "out",
                webhook=url,
                formats=plates.parse_formats("LLL999"),
                summary=summary,
                detect_per_second=5,
                live_queue=64,  # deep enough that this test drops nothing itself
            )
            tracker = next(b for b in pipe.blocks() if b.options.name == "track")
            process = tracker.process

            async def tracked(item: dict[str, Any], state: Any) -> Any:
                seen.setdefault(item["frame"].stream, []).append(item["frame"].index)
                return await process(item, state)

            tracker.process = tracked  # type: ignore[method-assign]
            source = video.video_source({k: str(v) for k, v in clips.items()})
            await pipe.run(source)
        finally:
            await runner.cleanup()
        return pipe

    pipe = af.run(main())
    (admit, sample, *_rest) = pipe.stages
    assert isinstance(admit, af.Block)
    assert admit.options.queue_size == 64
    assert isinstance(sample, af.Every)
    assert sample.queue_size <= app.LIVE_QUEUE
    assert not sample.ordered
    names = [b.options.name for b in pipe.blocks()]
    for block in pipe.blocks()[1 : names.index("record") + 1]:  # (after it: events only)
        assert block.options.queue_size <= max(app.LIVE_QUEUE, app.LIVE_REC_BATCH), block
    assert seen == {cam: list(range(24)) for cam in clips}
    assert sorted((e["camera"], e["plate"]) for e in summary.events) == [
        ("gate_north", "ABC123"),
        ("gate_south", "XYZ789"),
    ]
    stats = pipe.statistics()
    assert stats["detect"].received == 2 * 12  # every other frame of each camera
    assert stats["admit"].dropped == 0
    for record in stats.values():
        assert record.balanced
        assert record.in_flight == record.queue_depth == record.failed == 0


@pytest.mark.slow
def test_live_and_sampled_a_sign_looked_at_far_apart_is_held_once_still_for_long(
    tmp_path: Path,
) -> None:
    # Live and sampled at 5 looks a second, with more cameras than the detector serves at that
    # rate the frames that get through are looked at one by one, far apart: here every 9th
    # frame (0.9 s). 5 looks would take 4.5 s; the sign is held once it has sat still for
    # 1.5 s over two looks (the third look on), as without sampling, so it is not read on
    # every look.
    clip = tmp_path / "gate_north.mp4"
    clip_with_sign(clip, "ABC123", "KTR482", frames=45)
    summary = app.Summary()

    async def frames() -> Any:
        async for frame in video.video_source(str(clip)):
            if frame.index % 9 == 0:
                yield frame

    # live_queue=64: deep enough that this test drops nothing itself
    stats = run_app(tmp_path, frames, summary, detect_per_second=5, live_queue=64)
    assert stats["detect"].received == stats["track"].received == 5  # each frame a look
    assert summary.counts.held >= 3  # the sign on the third, fourth and fifth looks
    assert all(e["plate"] != "KTR482" for e in summary.events)
    for record in stats.values():
        assert record.balanced


def test_a_frame_not_looked_at_shows_the_tracks_where_they_move_and_changes_none() -> None:
    state = track.CameraState()
    # Looks on frames 0, 4 and 8: a plate moving 10 px a frame to the right, and a sign.
    for frame in (0, 4, 8):
        x = 10 * frame
        reads: list[track.Read] = [((x, 100, x + 80, 120), "AB12CDE", 0.9)]
        if frame < 8:
            reads.append(((500, 20, 600, 50), "EXIT12", 0.95))
        track.update(state, "cam", frame, frame / 10, reads)
    before = [(t.ident, t.rect, t.reads, t.last_frame) for t in state.tracks]
    # Frame 10, not looked at: the plate is drawn where it should be by now, the sign, not
    # seen at the last look, is not drawn; and nothing was seen, so no track changed.
    assert track.coast(state, 10) == [(0, (100, 100, 180, 120), "AB12CDE")]
    assert [(t.ident, t.rect, t.reads, t.last_frame) for t in state.tracks] == before
    assert track.coast(track.CameraState(), 3) == []


def test_the_detect_rate_option_takes_a_positive_rate() -> None:
    assert run.parser().parse_args(["--detect-rate", "2.5"]).detect_rate == 2.5
    assert run.parser().parse_args([]).detect_rate is None
    for bad in ("0", "-1", "nan", "fast"):
        with pytest.raises(SystemExit):
            run.parser().parse_args(["--detect-rate", bad])
    with pytest.raises(ValueError, match="detect_per_second must be a number > 0"):
        app.build(detect_per_second=0)


@pytest.mark.slow
def test_live_a_sign_seen_on_every_third_frame_is_still_read_only_now_and_then(
    tmp_path: Path,
) -> None:
    # Live (build(live_queue=...)), the fair queue drops frames once the cameras send more than
    # the detector takes: the frames looked at are several frame numbers apart. Here every third
    # frame of a 36-frame clip gets through (12 looks). The sign stands still across looks, so
    # after 5 looks it is held, not read again on every look; the car is read as it passes.
    clip = tmp_path / "gate_north.mp4"
    clip_with_sign(clip, "ABC123", "KTR482", frames=36)
    summary = app.Summary()

    async def frames() -> Any:
        async for frame in video.video_source(str(clip)):
            if frame.index % 3 == 0:
                yield frame

    # live_queue=64: deep enough that this test drops nothing itself
    stats = run_app(tmp_path, frames, summary, live_queue=64)
    assert stats["prepare"].received == stats["track"].received == 12
    assert stats["prepare"].dropped == 0
    counts = summary.counts
    assert counts.held > 0  # the sign, once it had stood still for 5 looks
    assert [(e["camera"], e["plate"]) for e in summary.events] == [("gate_north", "ABC123")]
    for record in stats.values():
        assert record.balanced
