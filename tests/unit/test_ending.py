"""Which keys a caller run's end ends (aioflow/transport/ending.py)."""

from __future__ import annotations

from aioflow.state import VERSION, Snapshot, decode, encode
from aioflow.transport.ending import Touches


def test_a_runs_end_ends_the_keys_only_it_touched_in_the_order_it_first_used_them() -> None:
    touches = Touches()
    touches.touch("b", "R", [3])
    touches.touch("a", "R", [5])
    touches.touch("b", "R", [7])  # (its first item stays the first)
    touches.touch(("t", 1), "R", [1, 2])
    touches.touch("shared", "R", [0])
    touches.touch("shared", "S", [9])
    touches.touch("theirs", "S", [1])
    assert touches.end("R", gone=set()) == [(("t", 1), [1, 2]), ("b", [3]), ("a", [5])]
    # S still uses "shared": it stays, now S's alone; S's end ends it.
    assert touches.end("R", gone=set()) == []
    assert touches.end("S", gone=set()) == [("theirs", [1]), ("shared", [9])]
    assert touches.by_key == {}


def test_a_key_shared_with_a_run_whose_caller_is_gone_ends_with_the_live_one() -> None:
    touches = Touches()
    touches.touch("k", "dead", [0])
    touches.touch("k", "R", [4])
    assert touches.others("R") == {"dead"}
    assert touches.end("R", gone={"dead"}) == [("k", [4])]


def test_the_touches_of_some_keys_go_to_a_snapshot_and_come_back() -> None:
    touches = Touches()
    touches.touch(("cam", 1), "R", [2])
    touches.touch("x", "R", [3])
    # (as a partition's snapshot writes them: the snapshot codec, tuple keys kept)
    snap = Snapshot(version=VERSION, pipeline="p", blocks={"": touches.pairs(lambda k: k != "x")})
    again = Touches()
    again.restore(decode(encode(snap))["blocks"][""])
    assert again.by_key == {("cam", 1): {"R": [2]}}
    touches.forget(lambda key: key == "x")
    assert list(touches.by_key) == [("cam", 1)]
