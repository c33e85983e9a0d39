"""Where the gate-camera detector looks (``examples/gates/roi.py``), on frames drawn here."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from examples.gates import ocr, roi

SIZE = (1280, 720)  # an HD camera's frame (W, H)
INPUT = ocr.det_size((SIZE[1], SIZE[0]))  # the detector's input for it


def scene(car_x: int | None, clock: int = 0, seed: int = 0) -> np.ndarray:
    """A street with a sign, a timestamp overlay showing ``clock`` and, when ``car_x`` is given,
    a car (a 240x120 box with a plate) there; sensor noise."""
    rng = np.random.default_rng(seed)
    image = np.full((SIZE[1], SIZE[0], 3), (90, 110, 120), np.uint8)
    cv2.rectangle(image, (0, 300), (SIZE[0], SIZE[1]), (70, 70, 72), -1)
    cv2.rectangle(image, (900, 80), (1100, 130), (235, 235, 235), -1)
    cv2.putText(image, "EXIT 12", (915, 118), cv2.FONT_HERSHEY_SIMPLEX, 1.2, (20, 20, 20), 2)
    cv2.putText(
        image, f"CAM 1 12:00:{clock:02d}", (20, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255,) * 3, 2
    )
    if car_x is not None:
        cv2.rectangle(image, (car_x, 420), (car_x + 240, 540), (40, 60, 150), -1)
        cv2.rectangle(image, (car_x + 80, 500), (car_x + 160, 520), (240, 240, 240), -1)
    noise = rng.normal(0, 4, image.shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8)


def test_a_moving_car_is_looked_at_closer_and_every_fourth_look_is_whole() -> None:
    looker = roi.Looker()
    windows = [looker.window("cam", scene(100 + 30 * i, seed=i), INPUT)[0] for i in range(9)]
    # The first look has nothing to compare with: the whole frame.
    assert windows[0].whole
    for i, w in enumerate(windows[1:], 1):
        if i % 4 == 0:  # every fourth look: the whole frame, for what stands still
            assert w.whole, i
            continue
        assert not w.whole, i
        car = (100 + 30 * i, 420, 100 + 30 * i + 240, 540)
        # The window holds the car, is of the detector input's aspect, inside the frame, and
        # shows it at least 1.25 times as large as the whole frame would.
        assert w.x0 <= car[0], (i, w)
        assert w.y0 <= car[1], (i, w)
        assert w.x1 >= car[2], (i, w)
        assert w.y1 >= car[3], (i, w)
        assert 0 <= w.x0 < w.x1 <= SIZE[0]
        assert 0 <= w.y0 < w.y1 <= SIZE[1]
        assert (w.x1 - w.x0) / (w.y1 - w.y0) == pytest.approx(INPUT[0] / INPUT[1], rel=0.02)
        assert SIZE[0] / (w.x1 - w.x0) >= 1.25, (i, w)


def test_a_changing_timestamp_and_noise_alone_leave_the_whole_frame() -> None:
    looker = roi.Looker()
    windows = [looker.window("cam", scene(None, clock=i, seed=i), INPUT)[0] for i in range(6)]
    assert all(w.whole for w in windows)


def test_a_window_is_never_closer_than_the_zoom_bound() -> None:
    # A small moving thing: the window does not blow it up past 1.5 times its pixels.
    looker = roi.Looker()
    for i in range(3):
        image = np.full((SIZE[1], SIZE[0], 3), 100, np.uint8)
        cv2.rectangle(image, (600 + 10 * i, 300), (660 + 10 * i, 340), (250, 250, 250), -1)
        window, _ = looker.window("cam", image, INPUT)
    assert not window.whole
    assert window.x1 - window.x0 == pytest.approx(INPUT[0] / 1.5, abs=2)


def test_boxes_cut_by_the_window_and_boxes_carried_where_nothing_moved() -> None:
    looker = roi.Looker()
    looker.window("cam", scene(100, seed=0), INPUT)
    window, moved = looker.window("cam", scene(130, seed=1), INPUT)
    assert not window.whole
    assert moved is not None
    # A box across the window's left edge (inside the frame) may be text it cut off.
    assert window.cuts((window.x0 - 5, 450, window.x0 + 60, 470), (SIZE[1], SIZE[0]))
    assert not window.cuts((window.x0 + 20, 450, window.x0 + 80, 470), (SIZE[1], SIZE[0]))
    # Of the last whole look's boxes: the sign (outside the window, nothing moved there) is
    # carried; the plate where the car was (it moved) and a box inside the window are not.
    sign, plate_before = (900, 80, 1100, 130), (180, 500, 260, 520)
    inside = (window.x0 + 20, window.y0 + 20, window.x0 + 60, window.y0 + 30)
    assert sign[0] > window.x1 or sign[3] < window.y0
    carried = roi.carry(window, moved, [sign, plate_before, inside], (SIZE[1], SIZE[0]))
    assert carried == [sign]


def test_boxes_from_a_window_land_where_the_text_is_in_the_frame() -> None:
    # A map made from the window (x0, y0)-(x1, y1): a blob at the map's centre is a box at the
    # window's centre in frame coordinates.
    prob = np.zeros((INPUT[1], INPUT[0]), np.float32)
    cy, cx = INPUT[1] // 2, INPUT[0] // 2
    prob[cy - 5 : cy + 5, cx - 40 : cx + 40] = 1.0
    window = (400, 300, 400 + INPUT[0], 300 + INPUT[1])  # the frame's own pixels
    (box,) = ocr.boxes_from_map(prob, (SIZE[1], SIZE[0]), window=window)
    x0, y0, x1, y1 = box.rect
    assert (x0 + x1) / 2 == pytest.approx(400 + cx, abs=2)
    assert (y0 + y1) / 2 == pytest.approx(300 + cy, abs=2)
    assert x1 - x0 == pytest.approx(80 + 10 * 0.6, abs=3)


def test_look_rules_reject_nonsense() -> None:
    with pytest.raises(ValueError, match="whole_every"):
        roi.LookRules(whole_every=0)
    with pytest.raises(ValueError, match="max_zoom"):
        roi.LookRules(max_zoom=0)


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ((720, 1280), (480, 256)),  # landscape: 480 wide, the height by the aspect
        ((1920, 1080), (480, 864)),  # a portrait phone video: 480 wide too
        ((10000, 16), (32, 960)),  # a strip: fitted into twice the width's height
        ((16, 10000), (480, 32)),
        ((1, 1), (480, 480)),
    ],
)
def test_the_detectors_input_stays_small_whatever_the_frames_shape(
    shape: tuple[int, int], expected: tuple[int, int]
) -> None:
    # A 16x10000 image once made a 480x300,000 input: minutes of the detector on one frame.
    width, height = ocr.det_size(shape)
    assert (width, height) == expected
    assert width % 32 == 0
    assert height % 32 == 0
    assert width * height <= 2 * ocr.DET_WIDTH**2
    x = ocr.det_input(np.zeros((*shape, 3), np.uint8))
    assert x.shape == (3, height, width)
