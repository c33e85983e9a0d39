"""Fuzzing the snapshot reader: whatever a file holds, ``decode`` returns a valid snapshot or raises
``SnapshotError``, never anything else, and a pipeline restores all of it or nothing.

Hypothesis runs derandomized (the same examples on every run, so a failure reproduces) over
(a) valid snapshots with one mutation each (a member deleted or added, a value replaced, wrapped
or truncated, nesting past the limit, huge numbers, NaN, bad base64, dtype strings such as ``'O'``
that would need pickle, shapes that do not fit the data, a repeated key), (b) arbitrary JSON, bare
or framed as a snapshot, and (c) arbitrary bytes.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import aioflow as af
from aioflow.state import MAX_DEPTH, FileStore, Snapshot, decode, encode

FUZZ = settings(
    max_examples=300,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

STATE: dict[str, Any] = {
    "boxes": np.arange(12, dtype=np.float32).reshape(3, 4),
    "mask": np.array([True, False, True]),
    "pixels": np.zeros((2, 2), np.uint8),
    "count": np.array(7, np.int64),  # 0-d
    "names": np.array(["gate", "hall"]),
    "seen": np.array(["2026-01-01T00:00"], dtype="datetime64[ns]"),
    "ids": (1, "a", (2.5, None)),
    "by_frame": {7: "x", (1, 2): [True, False], "__tuple__": 1},
    "history": [[1, 2], {"score": float("nan"), "peak": float("inf")}],
    "label": "person",
}
VALID = Snapshot(
    version=1,
    pipeline="p",
    blocks={"tracker": [[("cam", 0), STATE], ["cam1", {"n": 3}], [5, [1, 2.5]]]},
)
VALID_DOC = json.loads(encode(VALID))

DTYPES = [
    "O", "|O", "|O8", "<V8", "|V4", "<f3", "|S0", "", "i4,f8", "<U99999999", "float64", ">f8",
    "<c16", "|b1", "<M8[ns]", "<M8[xyz]", "a", "<f16", "(2,)i4", "[('a','<i4')]", "<f4", "|u1",
]  # fmt: skip
NAMES = ["__tuple__", "__dict__", "__ndarray__", "dtype", "shape", "version", "blocks", "x"]
# Placeholders spliced into the text: json.dumps would recurse too deep, or refuse a huge int.
DEEP = "\x00deep\x00"
HUGE = {"\x00huge1\x00": "1" + "0" * 4250, "\x00huge2\x00": "-" + "9" * 4400}

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from([*HUGE, 2**63, -1, 0])
    | st.floats()  # NaN and infinities included
    | st.text(max_size=6)
    | st.sampled_from([*NAMES, *DTYPES, "AAAA", "!!", base64.b64encode(bytes(12)).decode()])
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(NAMES) | st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=16,
)


def dump(doc: Any) -> str:
    text = json.dumps(doc)
    for placeholder, number in HUGE.items():
        text = text.replace(json.dumps(placeholder), number)
    return text


def spots(node: Any) -> list[tuple[Any, Any]]:
    """Every (container, key or index) in a parsed document, in a fixed order."""
    found: list[tuple[Any, Any]] = []
    if isinstance(node, dict):
        for k, v in node.items():
            found.append((node, k))
            found.extend(spots(v))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            found.append((node, i))
            found.extend(spots(v))
    return found


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid snapshot's JSON with one (or two) mutations."""
    doc = copy.deepcopy(VALID_DOC)
    deep_levels: int | None = None
    for _ in range(draw(st.integers(1, 2))):
        ops = ["delete", "replace", "wrap", "truncate", "base64", "dtype", "shape", "deep"]
        op = draw(st.sampled_from([*ops, "add", "repeat"]))
        places = spots(doc)
        aimed = {"base64": "__ndarray__", "dtype": "dtype", "shape": "shape"}.get(op)
        if aimed is not None:  # at an array's member, if one is left
            places = [(c, k) for c, k in places if k == aimed] or places
        parent, key = places[draw(st.integers(0, len(places) - 1))]
        value = parent[key]
        if op == "delete":
            del parent[key]
        elif op == "replace":
            parent[key] = draw(json_values)
        elif op == "wrap":
            parent[key] = draw(
                st.sampled_from([[value], {"__tuple__": value}, {"__dict__": value}, {"x": value}])
            )
        elif op == "truncate" and isinstance(value, str):
            parent[key] = value[: draw(st.integers(0, max(0, len(value) - 1)))]
        elif op == "base64" and isinstance(value, str):
            parent[key] = draw(st.sampled_from([value + "A", value[:-2], "@" + value[1:], "=="]))
        elif op == "dtype" and key == "dtype":
            parent[key] = draw(st.sampled_from(DTYPES))
        elif op == "shape" and key == "shape":
            parent[key] = draw(st.lists(st.integers(-2, 2**64) | st.booleans(), max_size=40))
        elif op == "deep" and deep_levels is None:
            deep_levels = draw(st.sampled_from([MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1, 5000]))
            parent[key] = DEEP
        elif op == "add" and isinstance(value, dict):
            value[draw(st.sampled_from(NAMES))] = draw(json_values)
        elif op == "repeat" and isinstance(value, list) and value:
            value.append(copy.deepcopy(value[0]))
    text = dump(doc)
    if deep_levels is not None:
        wrap = draw(st.sampled_from([("[", "]"), ('{"__tuple__":[', "]}"), ('{"k":', "}")]))
        nest = wrap[0] * deep_levels + "1" + wrap[1] * deep_levels
        text = text.replace(json.dumps(DEEP), nest)
    data = text.encode()
    if draw(st.integers(0, 9)) == 0:  # a file cut short
        data = data[: len(data) - draw(st.integers(1, len(data)))]
    return data


framed = st.fixed_dictionaries(
    {
        "version": st.just(1) | json_values,
        "pipeline": st.just("p") | json_values,
        "blocks": st.dictionaries(
            st.text(max_size=4),
            st.lists(st.lists(json_values, max_size=3), max_size=3) | json_values,
            max_size=3,
        )
        | json_values,
    }
).map(lambda doc: dump(doc).encode())
arrays = st.fixed_dictionaries(
    {
        "__ndarray__": st.sampled_from(["", "AAAA", "AAAAAAAAAAA=", "!!"]) | json_values,
        "dtype": st.sampled_from(DTYPES) | json_values,
        "shape": st.lists(st.integers(-1, 5), max_size=3) | json_values,
    }
).map(lambda arr: dump({"version": 1, "pipeline": "p", "blocks": {"t": [["k", arr]]}}))


def read(data: bytes) -> Snapshot | None:
    """Decode ``data``; None if it is a SnapshotError. Anything else fails the test."""
    try:
        snap = decode(data)
    except af.SnapshotError:
        return None
    # What decodes is a valid snapshot: it writes again, and reads back as the same.
    again = encode(snap)
    assert encode(decode(again)) == again
    return snap


def test_the_unmutated_snapshot_reads_back() -> None:
    snap = read(encode(VALID))
    assert snap is not None
    [key, state] = snap["blocks"]["tracker"][0]
    assert key == ("cam", 0)
    np.testing.assert_array_equal(state["seen"], STATE["seen"])


@FUZZ
@given(mutated())
def test_a_mutated_snapshot_decodes_or_is_a_snapshot_error(data: bytes) -> None:
    read(data)


@FUZZ
@given(json_values.map(lambda doc: dump(doc).encode()) | framed | arrays.map(str.encode))
def test_any_json_document_decodes_or_is_a_snapshot_error(data: bytes) -> None:
    read(data)


@FUZZ
@given(st.binary(max_size=64))
def test_any_bytes_decode_or_are_a_snapshot_error(data: bytes) -> None:
    read(data)


class Keep(af.Block):
    """A keyed block whose state is whatever the snapshot gave it."""

    key = staticmethod(lambda item: item[0])

    async def process(self, item: tuple[Any, Any], state: dict[str, Any]) -> Any:
        state["last"] = item[1]
        return item


def pairs_bytes(snap: Snapshot, block: str) -> bytes:
    return encode(Snapshot(version=1, pipeline="", blocks={"t": snap["blocks"].get(block, [])}))


async def restore_from(store: FileStore) -> tuple[bool, Any, Any]:
    """Open a pipeline on ``store``; (whether it opened, statistics before, after or restored)."""
    pipe = af.Pipeline(Keep(name="tracker"), name="p")
    await pipe.run([("a", 1), ("b", 2)])
    before = pipe.statistics()
    try:
        async with pipe.open(store=store) as running:
            restored = running.snapshot()
    except (af.SnapshotError, af.GraphError):
        return False, before, pipe.statistics()
    return True, before, restored


@settings(FUZZ, max_examples=100)
@given(mutated())
def test_a_pipeline_restores_all_of_a_mutated_file_or_nothing(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "state.json"
        path.write_bytes(data)
        opened, before, after = asyncio.run(restore_from(FileStore(path)))
        if not opened:
            # Nothing restored, nothing started, nothing written: all as it was.
            assert after == before
            assert path.read_bytes() == data
            return
    expected = decode(data)
    assert set(expected["blocks"]) <= {"tracker"}
    assert pairs_bytes(after, "tracker") == pairs_bytes(expected, "tracker")  # all of it
