"""JPEG for video frames on the wire: ``MsgpackCodec(frames="jpeg")`` (real OpenCV)."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from aioflow import wire
from aioflow.io.video import Frame
from aioflow.transport.codec import CodecError, MsgpackCodec, codec_named


def _scene(height: int = 720, width: int = 1280) -> np.ndarray:
    """A camera-like picture: smooth shading, edges, text and a little sensor noise."""
    ys, xs = np.mgrid[0:height, 0:width]
    image = np.dstack(
        [(xs * 200 // width), (ys * 180 // height), ((xs + ys) * 120 // (width + height))]
    ).astype(np.uint8)
    cv2.rectangle(image, (width // 4, height // 3), (width // 2, height // 2), (30, 200, 90), -1)
    cv2.circle(image, (3 * width // 4, height // 2), height // 6, (220, 40, 40), 4)
    cv2.putText(image, "AB 123 CD", (width // 5, 3 * height // 4), 0, 2.0, (255, 255, 255), 4)
    noise = np.random.default_rng(0).normal(0, 3, image.shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8)


def _frame(image: np.ndarray) -> Frame:
    return Frame(image, "gate-2", 41, 1.64, {"fps": 25.0, "live": False})


def test_a_jpeg_frame_comes_back_with_its_shape_dtype_fields_and_close_pixels() -> None:
    image = _scene()
    frame = _frame(image)
    raw = MsgpackCodec().encode(frame)
    data = MsgpackCodec(frames="jpeg", jpeg_quality=90).encode(frame)
    back = MsgpackCodec().decode(data)  # the receiver needs no option of its own
    assert isinstance(back, Frame)
    assert back.image.shape == (720, 1280, 3)
    assert back.image.dtype == np.uint8
    assert (back.stream, back.index, back.timestamp, back.meta) == (
        "gate-2",
        41,
        1.64,
        {"fps": 25.0, "live": False},
    )
    assert cv2.PSNR(back.image, image) > 35.0
    assert len(data) < len(raw) / 5


def test_raw_stays_the_default_and_is_lossless() -> None:
    frame = _frame(_scene(90, 160))
    back = MsgpackCodec().decode(MsgpackCodec().encode(frame))
    assert np.array_equal(back.image, frame.image)


def test_lower_quality_makes_fewer_bytes_and_more_error() -> None:
    image = _scene()
    frame = _frame(image)
    high = MsgpackCodec(frames="jpeg", jpeg_quality=95).encode(frame)
    low = MsgpackCodec(frames="jpeg", jpeg_quality=30).encode(frame)
    assert len(low) < len(high)
    codec = MsgpackCodec()
    assert cv2.PSNR(codec.decode(low).image, image) < cv2.PSNR(codec.decode(high).image, image)


def test_grey_frames_go_as_jpeg_and_other_images_go_raw() -> None:
    codec = MsgpackCodec(frames="jpeg")
    grey = _frame(_scene(90, 160)[:, :, 0].copy())
    back = codec.decode(codec.encode(grey))
    assert back.image.shape == (90, 160)
    # JPEG cannot hold a float image or four channels as they are: these travel raw, exactly.
    for image in (np.linspace(0, 1, 90 * 160 * 3).reshape(90, 160, 3), np.zeros((9, 16, 4))):
        frame = _frame(image.astype(image.dtype))
        back = codec.decode(codec.encode(frame))
        assert back.image.dtype == image.dtype
        assert np.array_equal(back.image, image)


def test_frames_inside_other_items_go_as_jpeg_too() -> None:
    frame = _frame(_scene(180, 320))
    codec = MsgpackCodec(frames="jpeg")
    item = {"frames": [frame, frame], "boxes": np.ones((3, 4), np.float32)}
    data = codec.encode(item)
    back = codec.decode(data)
    assert [f.image.shape for f in back["frames"]] == [(180, 320, 3)] * 2
    assert np.array_equal(back["boxes"], item["boxes"])  # other arrays stay raw
    assert len(data) < frame.image.nbytes


def test_a_corrupt_jpeg_frame_is_a_codec_error() -> None:
    codec = MsgpackCodec(frames="jpeg")
    data = bytearray(codec.encode(_frame(_scene(90, 160))))
    start = bytes(data).index(b"\xff\xd8")  # the JPEG's start-of-image marker
    data[start : start + 400] = b"\x00" * 400
    with pytest.raises(CodecError, match="cannot rebuild"):
        codec.decode(bytes(data))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"frames": "png"}, "frames must be 'raw' or 'jpeg'"),
        ({"frames": "jpeg", "jpeg_quality": 101}, "jpeg_quality must be an int from 0 to 100"),
        ({"jpeg_quality": 90.0}, "jpeg_quality must be an int"),
    ],
)
def test_bad_options_are_refused_naming_them(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MsgpackCodec(**options)  # type: ignore[arg-type]


def test_the_workers_codec_by_name_takes_the_frames_option() -> None:
    codec = codec_named("msgpack", frames="jpeg", jpeg_quality=80)
    assert isinstance(codec, MsgpackCodec)
    assert (codec.frames, codec.jpeg_quality) == ("jpeg", 80)
    with pytest.raises(ValueError, match="needs the msgpack codec"):
        codec_named("pickle", frames="jpeg")


def test_a_variant_needs_its_type_registered_first_and_a_tag_of_its_own() -> None:
    @dataclasses.dataclass
    class Shot:
        image: np.ndarray

    def to_fields(obj: Shot, options: object) -> dict[str, object]:
        return {}

    with pytest.raises(LookupError, match="not registered"):
        wire.register_variant(
            Shot, "jpeg", tag="tests.jpeg:Shot.jpeg", to_fields=to_fields, from_fields=dict
        )
    wire.register(Shot, tag="tests.jpeg:Shot")
    with pytest.raises(ValueError, match="needs a tag of its own"):
        wire.register_variant(
            Shot, "jpeg", tag="tests.jpeg:Shot", to_fields=to_fields, from_fields=dict
        )
    with pytest.raises(ValueError, match="already registered for Frame"):
        wire.register_variant(
            Shot,
            "jpeg",
            tag="aioflow.io._video_frame:Frame.jpeg",
            to_fields=to_fields,
            from_fields=dict,
        )
    # Nothing was changed: a Shot still travels as itself.
    back = MsgpackCodec(frames="jpeg").decode(MsgpackCodec(frames="jpeg").encode(Shot(np.ones(3))))
    assert isinstance(back, Shot)
