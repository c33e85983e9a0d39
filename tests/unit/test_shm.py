"""How values are cut for shared memory (``_engine/shm.py``), in one process, no workers.

A value is pickled with its large arrays left out as parts, the parts are written into a buffer
that stands for a segment, and the value is rebuilt from it: as views (what a worker gets) or as
private copies (what the caller gets). The process pools' own tests cover the same paths across
real processes.
"""

from __future__ import annotations

import gc
import pickle
import threading
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from aioflow._engine import shm


class Item:
    def __init__(self) -> None:
        self.frame = np.zeros((100, 100))


def through(value: object, *, copy: bool) -> tuple[Any, list[shm.Part], bytearray]:
    data, parts = shm.dumps(value)
    layout, end = shm.plan(parts)
    segment = bytearray(max(end, 1))
    shm.write(memoryview(segment), parts, layout)
    return shm.loads(data, memoryview(segment), layout, copy=copy), parts, segment


def test_large_arrays_leave_the_pickle_whatever_their_strides_and_small_ones_stay() -> None:
    frame = np.arange(480 * 640 * 3, dtype=np.uint32).reshape(480, 640, 3)
    value: dict[str, Any] = {
        "crop": frame[10:300, 20:500],
        "mirrored": frame[:, ::-1, 0],
        "fortran": np.asfortranarray(frame[..., 1]),
        "small": np.arange(10),
        "nested": [(frame[::3, ::2],)],
    }
    out, parts, _ = through(value, copy=True)
    assert len(parts) == 4  # every large array, none of the small one
    for key in ("crop", "mirrored", "fortran"):
        assert np.array_equal(out[key], value[key])
        assert out[key].dtype == value[key].dtype
    assert out["fortran"].flags.f_contiguous
    assert np.array_equal(out["nested"][0][0], value["nested"][0][0])
    assert np.array_equal(out["small"], value["small"])


def test_views_live_in_the_segment_and_copies_do_not() -> None:
    frame = np.ones((300, 400), dtype=np.float64)
    views, _, segment = through(frame, copy=False)
    copies, _, _ = through(frame, copy=True)
    segment[:8] = np.float64(5).tobytes()
    assert views[0, 0] == 5  # a worker's input lives in the segment
    assert copies[0, 0] == 1
    assert copies.flags.writeable
    assert copies.flags.owndata


def test_an_array_that_lies_in_the_request_segment_is_referenced_not_copied() -> None:
    segment = bytearray(1 << 20)
    request = memoryview(segment)
    start = shm.address(request)
    frame = np.ndarray((200, 300, 3), np.uint8, buffer=request, offset=128)
    frame[...] = np.arange(200 * 300 * 3).reshape(200, 300, 3) % 251
    result = {"same": frame, "mirrored": frame[:, ::-1], "new": frame + 1}
    data, parts = shm.dumps(result, resident=(start, start + len(segment)))
    assert len(parts) == 1  # only the new array needs a place of its own
    layout, end = shm.plan(parts)
    response = bytearray(end)
    shm.write(memoryview(response), parts, layout)
    out = shm.loads(data, memoryview(response), layout, copy=True, request=request)
    expected = {"same": frame.copy(), "mirrored": frame[:, ::-1].copy(), "new": frame + 1}
    frame[...] = 0  # the next call overwrites the request segment
    for key, want in expected.items():
        assert np.array_equal(out[key], want)


def test_an_aioflow_pickle_read_elsewhere_fails_clearly() -> None:
    data, _ = shm.dumps(np.zeros(100_000))
    with pytest.raises(pickle.UnpicklingError, match="only be read by aioflow's process pools"):
        pickle.loads(data)


def test_the_pickler_recovers_from_a_failure_and_keeps_nothing_alive() -> None:
    with pytest.raises(TypeError):
        shm.dumps({"a": np.zeros(100_000), "lock": threading.Lock()})

    item = Item()
    ref = weakref.ref(item)
    out, _, _ = through([item, "x"], copy=True)
    assert np.array_equal(out[0].frame, item.frame)
    assert out[1] == "x"
    del item, out
    gc.collect()
    assert ref() is None  # the reused pickler's memo was cleared


def test_arrays_whose_elements_are_not_plain_bytes_stay_in_the_pickle() -> None:
    strings = np.array([f"plate {i}" for i in range(10_000)], dtype=np.dtypes.StringDType())
    objects = np.array([{"i": i} for i in range(10_000)], dtype=object)
    stamps = np.arange(0, 10_000, dtype="datetime64[ms]")
    out, parts, _ = through([strings, objects, stamps], copy=True)
    assert len(parts) == 1  # only the datetimes: plain bytes
    assert out[0].dtype == strings.dtype
    assert np.array_equal(out[0], strings)
    assert list(out[1]) == list(objects)
    assert np.array_equal(out[2], stamps)


class PicklesThroughAioflow:
    """An object whose ``__reduce__`` itself goes through ``shm.dumps`` (the pickler is
    re-entered in the same thread)."""

    def __init__(self, inner: object) -> None:
        self.inner = inner

    def __reduce__(self) -> tuple[Any, ...]:
        data, parts = shm.dumps(self.inner)
        return (dict, ([("pickled", bool(data)), ("parts", len(parts))],))


def test_a_dump_inside_a_dump_does_not_disturb_the_outer_one() -> None:
    frame = np.full((200, 200), 3, dtype=np.int64)
    value = {"first": frame, "nested": PicklesThroughAioflow(np.zeros((300, 300))), "last": frame}
    out, parts, _ = through(value, copy=True)
    assert len(parts) == 1  # the outer dump's own array, once (the second is a memo hit)
    assert np.array_equal(out["first"], frame)
    assert out["last"] is out["first"]
    assert out["nested"] == {"pickled": True, "parts": 1}


def test_a_lent_segment_counts_as_lent_while_any_view_of_its_arrays_lives() -> None:
    frame = np.arange(300 * 400 * 3, dtype=np.uint8).reshape(300, 400, 3)
    data, parts = shm.dumps({"frame": frame})
    layout, end = shm.plan(parts)
    segment = shm.Segment("unit_lend", "0q", end)
    try:
        shm.write(segment.buf, parts, layout)
        root = segment.lend()
        value = shm.loads(data, root, layout, copy=False, frozen=True)
        del root
        assert segment.lent()
        out = value["frame"]
        assert np.array_equal(out, frame)
        assert not out.flags.writeable
        with pytest.raises(ValueError, match="read-only"):
            out[0, 0, 0] = 1
        corner = out[:10, :10].T  # a view of a view keeps the lease too
        del value, out
        assert segment.lent()
        del corner
        assert not segment.lent()
        root = segment.lend()  # built on, but nothing kept: not lent
        shm.loads(data, root, layout, copy=False, frozen=True)
        del root
        assert not segment.lent()
    finally:
        segment.destroy()


def test_destroying_a_segment_that_a_lent_array_still_views_unlinks_it_quietly() -> None:
    data, parts = shm.dumps(np.full((200, 200), 7, dtype=np.int32))
    layout, end = shm.plan(parts)
    segment = shm.Segment("unit_lend", "1q", end)
    shm.write(segment.buf, parts, layout)
    out = shm.loads(data, segment.lend(), layout, copy=False, frozen=True)
    name = segment.name
    segment.destroy()
    segment.destroy()  # idempotent
    del segment
    gc.collect()  # SharedMemory.__del__ runs: it must not fail to close the mapping again
    assert not (Path("/dev/shm") / name).exists()
    assert (out == 7).all()  # the mapping lives on with the array


def test_frozen_copies_are_read_only_and_the_callers_own() -> None:
    frame = np.ones((200, 300), dtype=np.float32)
    data, parts = shm.dumps([frame])
    layout, end = shm.plan(parts)
    buf = bytearray(end)
    shm.write(memoryview(buf), parts, layout)
    (out,) = shm.loads(data, memoryview(buf), layout, copy=True, frozen=True)
    buf[:] = bytes(end)  # the segment reused
    assert np.array_equal(out, frame)
    assert not out.flags.writeable


def test_a_bare_array_crosses_as_a_bare_one_whatever_its_layout_and_role() -> None:
    """A bare array (a frame, the common value) takes a shorter road than the pickler: the
    same results, views or copies, strides, order, request-resident and read-only rules."""
    frame = np.arange(300 * 400 * 3, dtype=np.uint16).reshape(300, 400, 3)
    for value in (frame, frame[::2, ::-1], np.asfortranarray(frame[..., 0])):
        out, parts, segment = through(value, copy=True)
        assert len(parts) == 1
        assert np.array_equal(out, value)
        assert out.dtype == value.dtype
        assert out.flags.writeable
        assert out.flags.owndata
        assert out.flags.f_contiguous == (value.flags.f_contiguous and not value.flags.c_contiguous)
        view, _, segment = through(value, copy=False)
        segment[:2] = np.uint16(9).tobytes()
        assert view.flat[0] == 9  # a worker's input lives in the segment
    records = np.zeros(10_000, dtype=[("x", "f8"), ("y", "i4")])  # not a short dtype: pickled
    out, parts, _ = through(records, copy=True)
    assert len(parts) == 1
    assert np.array_equal(out, records)

    request = bytearray(1 << 20)
    start = shm.address(memoryview(request))
    resident = np.ndarray((200, 300, 3), np.uint8, buffer=request, offset=64)
    resident[...] = 7
    data, parts = shm.dumps(resident[:, ::-1], resident=(start, start + len(request)))
    assert parts == []  # referenced where it lies
    copied = shm.loads(
        data, memoryview(b""), (), copy=True, request=memoryview(request), frozen=True
    )
    lent = shm.loads(data, memoryview(b""), (), copy=False, request=shm.lend(memoryview(request)),
                     lent_request=True)  # fmt: skip
    resident[0, -1, 0] = 8
    assert copied[0, 0, 0] == 7
    assert not copied.flags.writeable
    assert lent[0, 0, 0] == 8
    assert not lent.flags.writeable
    with pytest.raises(pickle.UnpicklingError, match="only be read by aioflow's process pools"):
        shm.loads(data, memoryview(b""), (), copy=True)  # no request segment to read it from
