"""Snapshots of keyed state: the codec, the file store, and restoring a pipeline from them."""

from __future__ import annotations

import base64
import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import aioflow as af
from aioflow.state import MAX_DEPTH, FileStore, Snapshot, decode, encode


def snap(blocks: dict[str, list[list[Any]]]) -> Snapshot:
    return Snapshot(version=1, pipeline="p", blocks=blocks)


def test_codec_round_trips_arrays_tuples_and_non_string_keys() -> None:
    state = {
        "track": np.arange(12, dtype=np.float32).reshape(3, 4),
        "ids": (1, "a", (2.5, None)),
        "by_frame": {7: "x", (1, 2): [True, False]},
        "count": np.int64(3),
    }
    original = snap({"tracker": [[("cam", 0), state], [5, {"n": 1}]]})

    back = decode(encode(original))

    key, restored = back["blocks"]["tracker"][0]
    assert key == ("cam", 0)  # tuples stay tuples: keys stay hashable
    np.testing.assert_array_equal(restored["track"], state["track"])
    assert restored["track"].dtype == np.float32
    assert restored["ids"] == (1, "a", (2.5, None))
    assert restored["by_frame"] == {7: "x", (1, 2): [True, False]}
    assert restored["count"] == 3
    assert back["blocks"]["tracker"][1] == [5, {"n": 1}]


def test_codec_writes_plain_json_without_pickle() -> None:
    data = encode(snap({"b": [["k", {"a": np.zeros(2, np.uint8)}]]}))
    doc = json.loads(data)  # any JSON reader can read it
    assert doc["version"] == 1
    assert b"pickle" not in data


def test_unsupported_state_names_the_block_and_type() -> None:
    with pytest.raises(af.SnapshotError, match=r"block 'tracker'.*set"):
        encode(snap({"tracker": [["k", {1, 2}]]}))


@pytest.mark.parametrize(
    ("data", "match"),
    [(b"not json", "not a snapshot"), (b'{"version": 9, "blocks": {}}', "version 1 expected")],
)
def test_decode_refuses_what_is_not_a_snapshot(data: bytes, match: str) -> None:
    with pytest.raises(af.SnapshotError, match=match):
        decode(data)


async def test_file_store_saves_atomically_and_loads(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "sub" / "state.json")
    assert await store.load() is None

    await store.save(snap({"b": [["k", 1]]}))
    await store.save(snap({"b": [["k", 2]]}))

    loaded = await store.load()
    assert loaded is not None
    assert loaded["blocks"]["b"] == [["k", 2]]
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["state.json"]  # no temp left


class Counter(af.Block):
    """Counts items per camera; its state is a dict with an array."""

    key = staticmethod(lambda item: item[0])

    def create_state(self, key: Any) -> dict[str, Any]:
        return {"n": 0, "last": np.zeros(2, np.int64)}

    async def process(self, item: tuple[str, int], state: dict[str, Any]) -> tuple[str, int]:
        state["n"] += 1
        state["last"] = np.array([item[1], state["n"]])
        return (item[0], state["n"])

    async def evict(self, key: Any, state: dict[str, Any]) -> list[Any]:
        return [("final", key, state["n"])]


async def test_snapshot_and_restore_continue_the_counts() -> None:
    pipe = af.Pipeline(Counter(name="count"), name="cams")
    async with pipe.open() as running:
        assert [await running.submit(("a", i)) for i in range(3)] == [("a", 1), ("a", 2), ("a", 3)]
        await running.submit(("b", 9))
        saved = running.snapshot()

    assert saved["pipeline"] == "cams"
    states = dict(saved["blocks"]["count"])
    assert states["a"]["n"] == 3
    np.testing.assert_array_equal(states["b"]["last"], [9, 1])

    async with pipe.open(restore=saved) as running:
        assert await running.submit(("a", 0)) == ("a", 4)
        assert await running.submit(("c", 0)) == ("c", 1)


async def test_a_snapshot_is_a_copy_not_the_live_state() -> None:
    pipe = af.Pipeline(Counter(name="count"))
    async with pipe.open() as running:
        await running.submit(("a", 1))
        saved = running.snapshot()
        await running.submit(("a", 2))
    assert saved["blocks"]["count"][0][1]["n"] == 1


async def test_a_store_resumes_across_runs_and_keeps_keys(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "state.json")
    pipe = af.Pipeline(Counter(name="count"))
    async with pipe.open(store=store) as running:
        await running.submit(("a", 1))
        await running.submit(("a", 2))
    # With a store the keys live on: no end-of-stream eviction, the state is saved instead.
    assert pipe.statistics()["count"].evicted == 0
    assert (tmp_path / "state.json").exists()

    async with pipe.open(store=store) as running:
        assert await running.submit(("a", 3)) == ("a", 3)
    saved = await store.load()
    assert saved is not None
    assert saved["blocks"]["count"][0][1]["n"] == 3


async def test_without_a_store_the_end_of_stream_evicts_and_flushes() -> None:
    pipe = af.Pipeline(Counter(name="count"))
    outputs = await pipe.run([("a", 1), ("b", 2), ("a", 3)])
    assert outputs[:3] == [("a", 1), ("b", 1), ("a", 2)]
    assert sorted(outputs[3:]) == [("final", "a", 2), ("final", "b", 1)]
    assert pipe.statistics()["count"].evicted == 2


async def test_restoring_state_for_an_unknown_block_is_a_graph_error() -> None:
    pipe = af.Pipeline(Counter(name="count"))
    with pytest.raises(af.GraphError, match="'missing'"):
        async with pipe.open(restore=snap({"missing": [["a", {"n": 1}]]})):
            pass
    # The failed open left the pipeline usable.
    async with pipe.open() as running:
        assert await running.submit(("a", 1)) == ("a", 1)


def _doc(blocks: object, **top: object) -> bytes:
    return json.dumps({"version": 1, "pipeline": "p", "blocks": blocks, **top}).encode()


def _array(data: str, dtype: object = "<f4", shape: object = (2,)) -> dict[str, object]:
    shape = list(shape) if isinstance(shape, tuple) else shape
    return {"__ndarray__": data, "dtype": dtype, "shape": shape}


EIGHT_BYTES = base64.b64encode(bytes(8)).decode()


# Each of these escaped as the exception in the comment before: the docs promise SnapshotError,
# and the message must say what was wrong and where.
@pytest.mark.parametrize(
    ("data", "where", "what"),
    [
        (b'{"version": 1, "blocks": {}}', "the document", "'pipeline' is missing"),  # KeyError
        (_doc([]), "blocks", "expected an object, found a list"),  # AttributeError
        (_doc({"t": 5}), "blocks.t", "found an integer"),  # TypeError
        (_doc({"t": [["k", 1, 2]]}), r"blocks.t\[0\]", "pair, found a list of 3"),  # ValueError
        (_doc({"t": [[[1, 2], {}]]}), r"blocks.t\[0\].key", "hashable, found a list"),  # restore
        (_doc({"t": [["k", {"__dict__": [[[1], 2]]}]]}), r"__dict__\[0\].key", "hashable"),
        (_doc({"t": [["a", 1], ["a", 2]]}), r"blocks.t\[1\].key", "'a' appears twice"),
        (
            _doc({"t": [["k", {"tracks": [0, 1, 2, _array("!!!")]}]]}),  # binascii.Error
            r"blocks.t\[0\].state.tracks\[3\].__ndarray__",
            "not valid base64",
        ),
        (
            _doc({"t": [["k", _array(EIGHT_BYTES, "<f4", (3,))]]}),  # ValueError (reshape)
            r"blocks.t\[0\].state",
            "shape \\[3\\] of '<f4' needs 12 bytes, the data holds 8",
        ),
        (
            _doc({"t": [["k", _array(EIGHT_BYTES, "|O8", (1,))]]}),  # object dtype: pickle
            r"blocks.t\[0\].state.dtype",
            "'\\|O8' is not a dtype a snapshot holds",
        ),
        (_doc({"t": [["k", {"__ndarray__": ""}]]}), "state", "'dtype' is missing"),  # KeyError
        (_doc({"t": [["k", {"__tuple__": 5}]]}), r"state.__tuple__", "found an integer"),
        (_doc({"t": [["k", {"__dict__": [1]}]]}), r"__dict__\[0\]", "pair, found an integer"),
        (_doc({"t": [["k", 1]]}, extra=1), "extra", "unexpected member"),
        (_doc({}, pipeline=None), "pipeline", "expected a string, found null"),
        (b'{"version": true, "pipeline": "p", "blocks": {}}', "version 1 expected", "True"),
        (b"[" * 100_000 + b"]" * 100_000, "not a snapshot", "nested too deeply"),  # RecursionError
        (_doc({"t": [["k", "DEEP"]]}).replace(b'"DEEP"', b"[" * 150 + b"]" * 150), "", "deeper"),
        (
            b'{"version": 1, "pipeline": "p", "blocks": {"t": [["k", 1' + b"0" * 5000 + b"]]}}",
            "not a snapshot",
            "digits",
        ),  # ValueError (int too long)
    ],
)
def test_a_tampered_snapshot_is_a_snapshot_error_saying_where(
    data: bytes, where: str, what: str
) -> None:
    with pytest.raises(af.SnapshotError, match=f"{where}.*{what}"):
        decode(data)


def test_the_codec_refuses_on_writing_what_it_would_refuse_on_reading() -> None:
    nested: list[Any] = []
    deep = nested
    for _ in range(150):
        deep.append([])
        deep = deep[0]
    loop: list[Any] = []
    loop.append(loop)
    for state, what in [
        (nested, "deeper than 100 levels"),
        (loop, "containing itself"),
        (np.array([object()]), "dtype object"),
        (np.zeros(2, dtype=[("a", "<i4")]), "dtype"),
        (10**5000, "too large"),
    ]:
        with pytest.raises(af.SnapshotError, match=f"block 't', key 'k'.*{what}"):
            encode(snap({"t": [["k", state]]}))


async def test_a_bad_snapshot_restores_nothing_and_leaves_the_last_run_as_it_was() -> None:
    pipe = af.Pipeline(Counter(name="count"), Counter(name="again"))
    async with pipe.open() as running:
        assert await running.submit(("a", 1)) == ("a", 1)
        good = running.snapshot()
    before = pipe.statistics()
    assert before["count"].keys == 0
    assert before["count"].evicted == 1

    unknown = snap({"count": good["blocks"]["count"], "missing": [["a", {"n": 1}]]})
    with pytest.raises(af.GraphError, match="'missing'"):
        async with pipe.open(restore=unknown):
            pass
    unhashable = snap({"count": good["blocks"]["count"] + [[["b"], {"n": 1}]]})
    with pytest.raises(af.SnapshotError, match=r"blocks.count\[1\].key: .*hashable"):
        async with pipe.open(restore=unhashable):
            pass
    # No half-restored run replaced the last one: its statistics are as they were.
    assert pipe.statistics() == before

    async with pipe.open(restore=good) as running:  # and the good snapshot still restores
        assert await running.submit(("a", 2)) == ("a", 2)


async def test_a_tampered_store_file_fails_the_open_and_stays_as_it_was(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "state.json")
    pipe = af.Pipeline(Counter(name="count"))
    async with pipe.open(store=store) as running:
        await running.submit(("a", 1))
    doc = json.loads(store.path.read_bytes())
    doc["blocks"]["count"][0][1]["last"]["dtype"] = "|O8"  # would need pickle to read
    tampered = json.dumps(doc).encode()
    store.path.write_bytes(tampered)
    before = pipe.statistics()

    with pytest.raises(af.SnapshotError, match=r"blocks.count\[0\].state.last.dtype") as info:
        async with pipe.open(store=store):
            pass
    assert str(info.value).startswith(f"snapshot file {str(store.path)!r}: not a valid snapshot")
    assert store.path.read_bytes() == tampered  # not overwritten by an empty snapshot
    assert pipe.statistics() == before


def test_nesting_up_to_the_limit_round_trips_and_one_more_level_fails_both_ways() -> None:
    def nest(levels: int, make: Any) -> Any:
        value: Any = np.arange(3)  # a leaf in the deepest container does not count
        for _ in range(levels):
            value = make(value)
        return value

    for make in (lambda v: [v], lambda v: (v,), lambda v: {"k": v}, lambda v: {1: v}):
        deepest = nest(MAX_DEPTH + 1, make)  # the state itself is at depth 0
        data = encode(snap({"t": [["k", deepest]]}))
        back = decode(data)["blocks"]["t"][0][1]
        assert encode(snap({"t": [["k", back]]})) == data
        with pytest.raises(af.SnapshotError, match=f"deeper than {MAX_DEPTH} levels"):
            encode(snap({"t": [["k", make(deepest)]]}))
        # The same document with the state wrapped in one more list, written by hand.
        text = data.replace(b'[["k",', b'[["k",[', 1).replace(b"]]}}", b"]]]}}", 1)
        with pytest.raises(af.SnapshotError, match=f"deeper than {MAX_DEPTH} levels"):
            decode(text)


# -- keys that refuse to be hashed or compared by the time a snapshot is taken ------------------


class _SouringCamera(tuple[str, int]):
    """A camera key, plain data a snapshot carries (a tuple), whose ``__hash__`` and ``==``
    raise once ``sour`` is set: a user's key that goes bad with use."""

    sour = False

    def __hash__(self) -> int:
        if _SouringCamera.sour:
            msg = "keys of this kind cannot be hashed any more"
            raise RuntimeError(msg)
        return tuple.__hash__(self)

    def __eq__(self, other: object) -> bool:
        if _SouringCamera.sour:
            msg = "keys of this kind cannot be compared any more"
            raise RuntimeError(msg)
        return tuple.__eq__(self, other)


class _SouringCounter(Counter):
    key = staticmethod(lambda item: _SouringCamera((item[0], 0)))


@pytest.fixture
def souring() -> Any:
    _SouringCamera.sour = False
    yield
    _SouringCamera.sour = False


@pytest.mark.usefixtures("souring")
async def test_a_snapshot_of_keys_that_refuse_to_be_hashed_holds_their_state() -> None:
    """A snapshot copies the keys held as they are: it needs neither their ``__hash__`` nor
    their ``==``, so a key that refuses them by then is written like any other (the run goes
    on), where the snapshot raised the key's own RuntimeError."""
    pipe = af.Pipeline(_SouringCounter(name="count"))
    async with pipe.open() as running:
        for item in [("a", 1), ("b", 2), ("a", 3)]:
            await running.submit(item)
        _SouringCamera.sour = True
        saved = running.snapshot()
        _SouringCamera.sour = False
        assert await running.submit(("a", 4)) == ("a", 3)
    states = {key: state["n"] for key, state in saved["blocks"]["count"]}
    assert states == {("a", 0): 2, ("b", 0): 1}


@pytest.mark.usefixtures("souring")
async def test_a_store_saves_the_state_of_keys_that_refuse_to_be_hashed(tmp_path: Path) -> None:
    """The store's snapshot at the end of ``open()`` too: every key's state is saved, where
    the open() ended with the key's RuntimeError and the store kept nothing."""
    store = FileStore(tmp_path / "state.json")
    pipe = af.Pipeline(_SouringCounter(name="count"))
    async with pipe.open(store=store) as running:
        for item in [("a", 1), ("b", 2), ("a", 3)]:
            await running.submit(item)
        _SouringCamera.sour = True
    _SouringCamera.sour = False
    saved = await store.load()
    assert saved is not None
    states = {key: state["n"] for key, state in saved["blocks"]["count"]}
    assert states == {("a", 0): 2, ("b", 0): 1}


async def test_a_key_that_refuses_to_be_hashed_and_cannot_be_written_names_the_block() -> None:
    """A key a snapshot cannot carry is a SnapshotError naming the block and the key's type,
    also when the key refuses to be hashed by then (not the key's own error)."""
    switch = threading.Event()

    class Camera:
        def __init__(self, name: str) -> None:
            self.name = name

        def __hash__(self) -> int:
            if switch.is_set():
                msg = "keys of this kind cannot be hashed any more"
                raise RuntimeError(msg)
            return hash(self.name)

        def __eq__(self, other: object) -> bool:
            if switch.is_set():
                msg = "keys of this kind cannot be compared any more"
                raise RuntimeError(msg)
            return isinstance(other, Camera) and other.name == self.name

    class Cameras(Counter):
        key = staticmethod(lambda item: Camera(item[0]))

    pipe = af.Pipeline(Cameras(name="count"))
    async with pipe.open() as running:
        await running.submit(("a", 1))
        switch.set()
        with pytest.raises(af.SnapshotError, match=r"block 'count': cannot write a Camera"):
            running.snapshot()
        switch.clear()


class _Unshown(str):
    """A camera name (plain data a snapshot carries) whose ``repr`` raises."""

    def __repr__(self) -> str:
        msg = "this key cannot be shown"
        raise RuntimeError(msg)


class _UnshownCounter(Counter):
    key = staticmethod(lambda item: _Unshown(item[0]))


async def test_a_store_saves_the_state_of_keys_whose_repr_raises(tmp_path: Path) -> None:
    """Writing a snapshot does not call the keys' ``repr`` (it is needed only for a message):
    a key whose ``repr`` raises is saved like any other, where the store's save at the end of
    ``open()`` raised the key's own RuntimeError and kept nothing."""
    store = FileStore(tmp_path / "state.json")
    pipe = af.Pipeline(_UnshownCounter(name="count"))
    async with pipe.open(store=store) as running:
        for item in [("a", 1), ("b", 2), ("a", 3)]:
            await running.submit(item)
    saved = await store.load()
    assert saved is not None
    assert {str(key): state["n"] for key, state in saved["blocks"]["count"]} == {"a": 2, "b": 1}


def test_a_state_that_cannot_be_written_names_its_key_also_when_its_repr_raises() -> None:
    """The message still comes, naming the block, when the key cannot show itself."""
    snap: Snapshot = {
        "version": 1,
        "pipeline": "p",
        "blocks": {"count": [(_Unshown("a"), {"n": object()})]},
    }
    with pytest.raises(af.SnapshotError, match=r"block 'count', key <a _Unshown whose repr"):
        encode(snap)
