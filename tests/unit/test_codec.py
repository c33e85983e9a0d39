"""The transport's codec: plain data, numpy arrays, tuples and registered records, no pickle."""

from __future__ import annotations

import dataclasses
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import aioflow
from aioflow import wire
from aioflow.transport.codec import CodecError, MsgpackCodec, PickleCodec, PickleCodecWarning

CODEC = MsgpackCodec()

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=20)
)
keys = st.none() | st.booleans() | st.integers() | st.text(max_size=10)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=4).map(tuple)
        | st.dictionaries(keys | st.tuples(keys, keys), inner, max_size=4)
    ),
    max_leaves=20,
)
dtypes = (
    hnp.boolean_dtypes()
    | hnp.integer_dtypes(endianness="=")
    | hnp.unsigned_integer_dtypes(endianness="=")
    | hnp.floating_dtypes(endianness="=")
    | hnp.complex_number_dtypes(endianness="=")
)
arrays = hnp.arrays(dtypes, hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5))


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray):
        return (
            isinstance(b, np.ndarray)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and np.array_equal(a, b, equal_nan=a.dtype.kind in "fc")
        )
    if type(a) is not type(b):
        return False
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


@given(values)
def test_plain_data_round_trips_with_its_types(value: Any) -> None:
    assert _same(CODEC.decode(CODEC.encode(value)), value)


@given(arrays)
def test_numpy_arrays_round_trip_with_dtype_and_shape(array: np.ndarray[Any, Any]) -> None:
    back = CODEC.decode(CODEC.encode(array))
    assert _same(back, array)
    back[...] = back  # writable, as a block may expect
    assert back.flags.writeable


def test_non_contiguous_arrays_and_numpy_scalars_round_trip() -> None:
    view = np.arange(24, dtype=np.int16).reshape(4, 6)[:, ::2].T
    assert _same(CODEC.decode(CODEC.encode(view)), np.ascontiguousarray(view))
    for scalar in (np.float32(1.5), np.int64(-3), np.bool_(True), np.uint8(200)):
        back = CODEC.decode(CODEC.encode(scalar))
        assert type(back) is type(scalar)
        assert back == scalar


_FRAME = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)

#: arrays of 64 KiB and more (frames), which the codec writes and reads around msgpack
LARGE = [
    _FRAME,
    _FRAME[::2, ::-1],  # strided, negative steps
    _FRAME[:, :, 1],  # a channel of a frame
    np.asfortranarray(_FRAME),
    _FRAME.transpose(2, 0, 1),
    np.arange(40_000, dtype=">i4").reshape(200, 200),  # not in the machine's byte order
    np.linspace(0, 1, 70_000, dtype=np.float16),
    np.arange(20_000).astype("M8[s]"),
    np.zeros((1, 1, 65_536), dtype=bool),
    np.full((300, 300), 1 + 2j, dtype=np.complex64),
]


@pytest.mark.parametrize("array", LARGE, ids=lambda a: f"{a.dtype.str}{a.shape}{a.strides}")
def test_large_arrays_round_trip_alone_and_inside_items(array: np.ndarray[Any, Any]) -> None:
    import msgpack

    before = array.copy()
    data = CODEC.encode(array)
    # The bytes msgpack itself writes: older and newer processes read each other's frames.
    body = msgpack.packb(
        [array.dtype.str, list(array.shape), np.ascontiguousarray(array).tobytes()]
    )
    assert data == msgpack.packb(msgpack.ExtType(1, body))
    for item in (data, CODEC.encode({"frame": (7, array)})):
        back = CODEC.decode(item)
        if isinstance(back, dict):
            number, back = back["frame"]
            assert number == 7
        assert _same(back, array)
        assert back.flags.c_contiguous
        back[...] = 0  # a copy of its own, writable, as a block may expect
        assert not np.shares_memory(back, array)
    assert _same(array, before)  # (the original is untouched)


def test_a_large_array_written_wrong_is_refused() -> None:
    import msgpack

    def ext(parts: list[Any], extra: bytes = b"") -> bytes:
        return bytes(msgpack.packb(msgpack.ExtType(1, msgpack.packb(parts) + extra)))

    pixels = bytes(640 * 480 * 3)
    with pytest.raises(CodecError, match=r"needs 921600 bytes, found 921599"):
        CODEC.decode(ext(["|u1", [480, 640, 3], pixels[1:]]))
    with pytest.raises(CodecError, match="refused array dtype"):
        CODEC.decode(ext(["|O", [115_200], pixels]))
    with pytest.raises(CodecError, match="shape must be a list of ints"):
        CODEC.decode(ext(["|u1", [480, -640, -3], pixels]))
    with pytest.raises(CodecError, match=r"expected \[dtype, shape, bytes\]"):
        CODEC.decode(ext(["|u1", [480, 640, 3], pixels, 1]))
    with pytest.raises(CodecError):  # bytes after the array, inside its extension
        CODEC.decode(ext(["|u1", [480, 640, 3], pixels], b"\x00"))
    whole = CODEC.encode(_FRAME)
    for bad in (whole[:-1], whole + b"\x00", whole[:6] + b"\x92" + whole[7:]):
        with pytest.raises(CodecError):
            CODEC.decode(bad)


def test_object_and_structured_arrays_are_refused() -> None:
    with pytest.raises(CodecError, match="object and structured dtypes need pickle"):
        CODEC.encode({"boxes": np.array([object()])})
    with pytest.raises(CodecError, match="object and structured dtypes need pickle"):
        CODEC.encode(np.zeros(2, dtype=[("x", "i4"), ("y", "f4")]))


def test_an_unknown_type_is_refused_naming_it() -> None:
    class Thing:
        pass

    with pytest.raises(CodecError, match=r"cannot write a .*Thing: items must be built from"):
        CODEC.encode([1, Thing()])


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",
        b"\x92\x01",  # an array of 2 with one element
        CODEC.encode(1) + b"extra",
        b"\xc7\x03\x01abc",  # an array extension that is not [dtype, shape, bytes]
        b"\xc7\x01\x63x",  # an unknown extension type
        pickle.dumps({"a": 1}),
    ],
)
def test_bad_bytes_raise_codec_error_and_nothing_else(data: bytes) -> None:
    with pytest.raises(CodecError):
        CODEC.decode(data)


def test_an_array_whose_bytes_do_not_match_its_shape_is_refused() -> None:
    import msgpack

    body = msgpack.packb(["<f4", [2, 2], b"\x00" * 12])
    with pytest.raises(CodecError, match=r"needs 16 bytes, found 12"):
        CODEC.decode(msgpack.packb(msgpack.ExtType(1, body)))
    body = msgpack.packb(["|O", [1], b"\x00" * 8])
    with pytest.raises(CodecError, match="refused array dtype"):
        CODEC.decode(msgpack.packb(msgpack.ExtType(1, body)))


def test_an_unregistered_record_tag_is_refused_without_importing_it() -> None:
    import msgpack

    body = msgpack.packb(["os:system", {"command": "true"}])
    with pytest.raises(CodecError, match="'os:system' is not registered"):
        CODEC.decode(msgpack.packb(msgpack.ExtType(3, body)))


@dataclasses.dataclass(frozen=True)
class Detection:
    box: tuple[int, int, int, int]
    score: float
    mask: np.ndarray[Any, Any]


def test_registered_dataclasses_round_trip() -> None:
    wire.register(Detection, tag="tests.test_codec:Detection")
    det = Detection((1, 2, 3, 4), 0.5, np.ones((2, 2), np.uint8))
    back = CODEC.decode(CODEC.encode([det]))[0]
    assert isinstance(back, Detection)
    assert back.box == (1, 2, 3, 4)
    assert back.score == 0.5
    assert _same(back.mask, det.mask)


def test_a_video_frame_is_rebuilt_in_a_process_that_never_imported_aioflow_io() -> None:
    from aioflow.io._video_frame import Frame

    frame = Frame(np.arange(18, dtype=np.uint8).reshape(2, 3, 3), "cam1", 7, 0.25, {"fps": 25})
    data = CODEC.encode({"frame": frame})
    code = (
        "import sys\n"
        "from aioflow.transport.codec import MsgpackCodec\n"
        "assert 'aioflow.io' not in sys.modules\n"
        "frame = MsgpackCodec().decode(sys.stdin.buffer.read())['frame']\n"
        "print(type(frame).__name__, frame.stream, frame.index, frame.timestamp, frame.meta,"
        " frame.image.sum())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        input=data,
        capture_output=True,
        cwd=Path(aioflow.__file__).parent.parent,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().split() == ["Frame", "cam1", "7", "0.25", "{'fps':", "25}", "153"]


def test_the_pickle_codec_is_opt_in_and_warns() -> None:
    with pytest.warns(PickleCodecWarning, match="can run code"):
        codec = PickleCodec()
    assert codec.decode(codec.encode({"a": {1, 2}})) == {"a": {1, 2}}
    with pytest.raises(CodecError, match="not a pickle"):
        codec.decode(b"garbage")
