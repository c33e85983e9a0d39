"""What the distributed mode writes to its streams: items carry their birth for ``max_age``."""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from typing import cast

import pytest

import aioflow as af
from aioflow.transport.codec import MsgpackCodec, pack_plain, unpack_plain
from aioflow.transport.messages import (
    EntryError,
    ItemMeta,
    Keys,
    MessageError,
    graph_signature,
    item_metas,
    pack_burst,
    pack_item,
    parse_entry,
    parse_item,
)

CODEC = MsgpackCodec()


def test_an_items_birth_time_travels_with_it() -> None:
    meta = ItemMeta("run1", (4, 1), "reply", "last", "msgpack", 1_733_400_000.25)
    back, value = parse_item(pack_item(meta, CODEC.encode([1, 2])), CODEC)
    assert back == meta
    assert value == [1, 2]
    # Without one (an older caller), max_age counts from the worker's receipt.
    old = ItemMeta("run1", (4,), "reply", "last", "msgpack")
    assert parse_item(pack_item(old, CODEC.encode(0)), CODEC)[0].born is None


def test_a_birth_time_that_is_not_a_number_is_a_malformed_message() -> None:
    meta = {"r": "run1", "p": [0], "to": "reply", "end": "last", "c": "msgpack", "t": "noon"}
    with pytest.raises(MessageError, match="birth time is a str"):
        parse_item({b"m": pack_plain(meta), b"v": CODEC.encode(0)}, CODEC)


def test_an_entry_whose_reply_stream_is_not_its_runs_is_refused_whole() -> None:
    keys = Keys("p", "pipe", "h")
    good = pack_item(ItemMeta("run1", (0,), keys.reply("run1"), "last", "msgpack"), b"\x01")
    assert parse_entry(good, CODEC, keys).values == [1]
    for reply in ("p:pipe:graph", keys.reply("run2"), keys.inbox("a")):
        bad = pack_item(ItemMeta("run1", (0,), reply, "last", "msgpack"), b"\x01")
        with pytest.raises(EntryError, match="is not its run's") as info:
            parse_entry(bad, CODEC, keys)
        assert info.value.metas == []  # nobody to answer: the reply stream is not to be trusted


def test_the_metas_of_every_item_an_entry_carries_are_found() -> None:
    one = pack_item(ItemMeta("r", (0,), "to", "end", "msgpack"), b"")
    assert [m["p"] for m in item_metas(one)] == [[0]]
    several = {
        b"m": pack_plain({"p": [1]}),
        b"v": b"",
        b"m1": pack_plain({"p": [2]}),
        b"v1": b"",
        b"m2": b"\xc1",  # unreadable: left out
        b"meta": pack_plain({"p": [9]}),  # not an item's field
    }
    assert sorted(m["p"] for m in item_metas(several)) == [[1], [2]]


def _keyed_pipeline(module: str) -> af.Pipeline[int, int]:
    """The pipeline of a file ``app.py`` as Python sees it when ``module`` loads it."""
    namespace: dict[str, object] = {"__name__": module}
    exec("def plate_key(x):\n    return x % 3\n", namespace)
    key = cast("Callable[[int], int]", namespace["plate_key"])

    @af.block(key=key)
    async def track(x: int) -> int:
        return x

    return af.Pipeline(track, name="gates")


def test_a_caller_running_its_file_as_a_script_has_its_workers_graph_hash(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # `python app.py` (functions in __main__) and `aioflow worker app:pipe` (in app) agree;
    # so does a worker importing the same file as pkg.app.
    script = types.ModuleType("__main__")
    script.__file__ = "/srv/gates/app.py"
    monkeypatch.setitem(sys.modules, "__main__", script)
    caller = graph_signature("gates", _keyed_pipeline("__main__").stages)[0]
    assert caller == graph_signature("gates", _keyed_pipeline("app").stages)[0]
    assert caller == graph_signature("gates", _keyed_pipeline("pkg.app").stages)[0]
    # A key function of another name is another graph.
    other = types.ModuleType("__main__")
    other.__file__ = "/srv/gates/other.py"
    monkeypatch.setitem(sys.modules, "__main__", other)
    assert graph_signature("gates", _keyed_pipeline("__main__").stages)[0] != caller


def test_every_item_of_a_burst_keeps_its_own_birth_time() -> None:
    values = [CODEC.encode(x) for x in range(3)]
    paths = [(0,), (1,), (2, 1)]
    apart = parse_entry(
        pack_burst("r", "to", "end", "msgpack", paths, values, [5.0, 6.5, 7]), CODEC
    )
    assert [m.born for m in apart.metas] == [5.0, 6.5, 7.0]
    assert apart.values == [0, 1, 2]
    # Items born together share one number in the header; unknown births stay unknown.
    same = pack_burst("r", "to", "end", "msgpack", paths, values, [5.0, 5.0, 5.0])
    assert [m.born for m in parse_entry(same, CODEC).metas] == [5.0, 5.0, 5.0]
    assert unpack_plain(same[b"m"])["t"] == 5.0  # one number, not a list
    unknown = pack_burst("r", "to", "end", "msgpack", paths, values)
    assert [m.born for m in parse_entry(unknown, CODEC).metas] == [None, None, None]
    # A burst of one is the plain entry, its birth included.
    single = pack_burst("r", "to", "end", "msgpack", [(3,)], [values[0]], [9.5])
    assert parse_item(single, CODEC)[0].born == 9.5


def test_a_bursts_birth_times_that_do_not_match_its_items_are_a_malformed_entry() -> None:
    header = {"r": "r", "b": [[0], [1]], "to": "to", "end": "end", "c": "msgpack"}
    for t in ([1.0], [1.0, "noon"], "noon", True):
        fields = {b"m": pack_plain({**header, "t": t}), b"v": CODEC.encode(0), b"v1": b""}
        with pytest.raises(EntryError, match="birth time"):
            parse_entry(fields, CODEC)


def test_the_metas_of_every_item_of_a_burst_are_found() -> None:
    burst = pack_burst(
        "r", "to", "end", "msgpack", [(0,), (1,), (1, 2)], [b"", b"", b""], [1.0, 2.0, 3.0]
    )
    metas = item_metas(burst)
    assert [m["p"] for m in metas] == [[0], [1], [1, 2]]
    assert {(m["r"], m["to"]) for m in metas} == {("r", "to")}
    assert all("b" not in m for m in metas)
