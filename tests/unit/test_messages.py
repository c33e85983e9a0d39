"""What the distributed mode writes to its streams: items carry their birth for ``max_age``."""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from typing import cast

import pytest

import aioflow as af
from aioflow.transport.codec import MsgpackCodec, pack_plain
from aioflow.transport.messages import (
    ItemMeta,
    MessageError,
    graph_signature,
    item_metas,
    pack_item,
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
