"""Snapshots of keyed state: the codec, the file store, and restoring a pipeline from them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import aioflow as af
from aioflow.state import FileStore, Snapshot, decode, encode


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
