"""FairChannel: a leaky edge shared by streams (fair=, per_key=, serve="newest")."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Hashable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aioflow._engine.channel import Overflow
from aioflow._engine.fair import NOTHING, FairChannel

Item = tuple[str, int]


def stream(item: Item) -> Hashable:
    return item[0]


def make(
    capacity: int,
    *,
    overflow: Overflow = "drop_oldest",
    per_key: int | None = None,
    newest: bool = False,
) -> tuple[FairChannel[Item], list[Item], list[Item]]:
    dropped: list[Item] = []
    superseded: list[Item] = []
    ch = FairChannel(
        capacity,
        stream,
        overflow=overflow,
        per_key=per_key,
        newest=newest,
        on_drop=dropped.append,
        on_supersede=superseded.append,
    )
    return ch, dropped, superseded


def drain(ch: FairChannel[Item]) -> list[Item]:
    out = []
    while len(ch):
        out.append(ch.get_nowait())
    return out


def test_a_full_queue_drops_the_oldest_of_the_stream_holding_the_most() -> None:
    ch, dropped, _ = make(4)
    for item in [("a", 0), ("b", 0), ("a", 1), ("a", 2)]:
        ch.put_nowait(item)
    ch.put_nowait(("b", 1))  # full: "a" holds 3, so "a" loses its oldest
    assert dropped == [("a", 0)]
    # Served in turn ("a" came first), each stream's items oldest first.
    assert drain(ch) == [("a", 1), ("b", 0), ("a", 2), ("b", 1)]
    assert (ch.received, ch.overflowed, ch.superseded) == (5, 1, 0)


def test_a_flooding_stream_takes_every_drop_and_a_quiet_one_none() -> None:
    ch, dropped, _ = make(8)
    quiet = 0
    for i in range(200):
        ch.put_nowait(("flood", i))
        if i % 10 == 0:
            ch.put_nowait(("quiet", quiet))
            quiet += 1
        if i % 5 == 0:
            ch.get_nowait()  # a slow reader
    assert {item[0] for item in dropped} == {"flood"}
    assert ch.overflowed == len(dropped) > 150


def test_the_plain_policy_would_drop_the_quiet_stream() -> None:
    """The same traffic through the unfair policy: the quiet stream loses items (so the test
    above can fail)."""
    from aioflow._engine.channel import Channel

    dropped: list[Item] = []
    ch: Channel[Item] = Channel(8, overflow="drop_oldest", on_drop=dropped.append)
    for i in range(200):
        ch.put_nowait(("flood", i))
        if i % 10 == 0:
            ch.put_nowait(("quiet", i))
        if i % 5 == 0:
            ch.get_nowait()
    assert any(item[0] == "quiet" for item in dropped)


def test_ties_go_to_the_stream_of_the_new_item() -> None:
    ch, dropped, _ = make(4)
    for item in [("a", 0), ("a", 1), ("b", 0), ("b", 1)]:
        ch.put_nowait(item)
    ch.put_nowait(("b", 2))  # 2 and 2: "b" is pushing, "b" loses
    assert dropped == [("b", 0)]
    ch.put_nowait(("c", 0))  # "c" holds nothing: the first stream to hold the most loses
    assert dropped == [("b", 0), ("a", 0)]
    assert drain(ch) == [("a", 1), ("b", 1), ("c", 0), ("b", 2)]  # in turn: a, b, c, b


def test_per_key_caps_each_stream_before_the_queue_is_full() -> None:
    ch, dropped, _ = make(10, per_key=2)
    for i in range(5):
        ch.put_nowait(("a", i))
    ch.put_nowait(("b", 0))
    assert dropped == [("a", 0), ("a", 1), ("a", 2)]
    assert drain(ch) == [("a", 3), ("b", 0), ("a", 4)]
    assert ch.superseded == 0  # counted as overflow


def test_per_key_with_drop_newest_keeps_a_streams_first_items() -> None:
    ch, dropped, _ = make(10, overflow="drop_newest", per_key=2)
    kept = [ch.put_nowait(("a", i)) for i in range(4)]
    assert kept == [True, True, False, False]
    assert dropped == [("a", 2), ("a", 3)]
    assert drain(ch) == [("a", 0), ("a", 1)]


def test_drop_newest_discards_the_newest_of_the_largest_stream() -> None:
    ch, dropped, _ = make(4, overflow="drop_newest")
    for item in [("a", 0), ("a", 1), ("a", 2), ("b", 0)]:
        ch.put_nowait(item)
    assert ch.put_nowait(("b", 1)) is True  # "a" holds 3 > 2: its newest goes
    assert dropped == [("a", 2)]
    assert ch.put_nowait(("a", 3)) is False  # "a" would hold 3 again: the new item goes
    assert dropped == [("a", 2), ("a", 3)]
    assert drain(ch) == [("a", 0), ("b", 0), ("a", 1), ("b", 1)]


def test_newest_keeps_one_item_per_stream_counted_as_superseded() -> None:
    ch, dropped, superseded = make(8, newest=True)
    for item in [("a", 0), ("b", 0), ("a", 1), ("a", 2), ("b", 1), ("c", 0)]:
        ch.put_nowait(item)
    assert superseded == [("a", 0), ("a", 1), ("b", 0)]
    assert dropped == []
    assert (ch.overflowed, ch.superseded) == (3, 3)
    # Served in turn: each stream where it joined ("a" first: its newer items kept its place).
    assert drain(ch) == [("a", 2), ("b", 1), ("c", 0)]


def test_newest_with_more_streams_than_room_drops_the_stalest_stream() -> None:
    ch, dropped, superseded = make(2, newest=True)
    for item in [("a", 0), ("b", 0), ("a", 1), ("c", 0)]:
        ch.put_nowait(item)
    assert superseded == [("a", 0)]
    assert dropped == [("b", 0)]  # its newest item is the oldest here: it is the overflow
    assert drain(ch) == [("a", 1), ("c", 0)]


def test_take_capped_skips_streams_at_their_cap_and_keeps_the_rest_in_order() -> None:
    ch, _, _ = make(16, overflow="block")
    for i in range(6):
        ch.put_nowait(("a", i))
    ch.put_nowait(("b", 0))
    counts: dict[Hashable, int] = {}
    batch = []
    while (item := ch.take_capped(counts, 2)) is not NOTHING:
        batch.append(item)
    assert batch == [("a", 0), ("b", 0), ("a", 1)]  # in turn, "a" then capped
    # (counted by the buffer's own stream objects, which carry the keys)
    assert {stream.key: n for stream, n in counts.items()} == {"a": 2, "b": 1}  # type: ignore[attr-defined]
    assert drain(ch) == [("a", 2), ("a", 3), ("a", 4), ("a", 5)]


def test_block_policy_never_drops_and_raises_queue_full() -> None:
    ch, dropped, _ = make(2, overflow="block")
    ch.put_nowait(("a", 0))
    ch.put_nowait(("a", 1))
    with pytest.raises(asyncio.QueueFull):
        ch.put_nowait(("a", 2))
    assert dropped == []
    assert ch.received == 2


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_writer_waiting_for_room_gets_the_freed_slot_before_a_newcomer() -> None:
    ch, _, _ = make(1, overflow="block")
    ch.put_nowait(("a", 0))
    first = asyncio.create_task(ch.put(("b", 0)))
    await settle()
    assert not first.done()
    assert ch.take_capped({}, 1) == ("a", 0)  # the slot goes to `first`, its item put now...
    with pytest.raises(asyncio.QueueFull):
        ch.put_nowait(("c", 0))  # ...so a newcomer finds the channel full
    late = asyncio.create_task(ch.put(("c", 0)))  # and waits behind it
    await settle()
    assert first.done()
    assert not late.done()
    assert ch.get_nowait() == ("b", 0)  # its turn: `late` is put
    await settle()
    assert late.done()
    assert drain(ch) == [("c", 0)]
    assert ch.received == 3


async def test_a_put_cancelled_after_its_item_was_put_takes_it_back() -> None:
    ch, _, _ = make(2, overflow="block")
    ch.put_nowait(("a", 0))
    ch.put_nowait(("a", 1))
    first = asyncio.create_task(ch.put(("b", 0)))
    await settle()
    assert ch.get_nowait() == ("a", 0)  # ("b", 0) is put in its turn...
    first.cancel()  # ...and its writer cancelled before it learns so: a cancelled put puts nothing
    await settle()
    assert first.cancelled()
    assert ch.buffer.streams() == {"a": 1}
    assert ch.received == 2
    ch.put_nowait(("c", 0))  # the room is there again, and the streams' books are whole
    assert drain(ch) == [("a", 1), ("c", 0)]
    assert ch.buffer.streams() == {}


async def test_a_getter_waiting_on_an_empty_channel_is_woken_by_a_put() -> None:
    ch, _, _ = make(4, newest=True)
    getter = asyncio.create_task(ch.get())
    await asyncio.sleep(0)
    ch.put_nowait(("a", 0))
    assert await asyncio.wait_for(getter, 1) == ("a", 0)


# -- any traffic --------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    cap=st.integers(1, 6),
    per_key=st.one_of(st.none(), st.integers(1, 3)),
    newest=st.booleans(),
    ops=st.lists(st.one_of(st.sampled_from("abc"), st.just("get")), max_size=60),
)
def test_books_order_and_bounds_hold_for_any_traffic(
    cap: int, per_key: int | None, newest: bool, ops: list[str]
) -> None:
    """Whatever is put and taken: the queue never holds more than its capacity nor a stream
    more than its share; nothing is lost (every item is taken, dropped or still queued); each
    stream's items come out in order, and streams are served in turn: the stream that has
    waited longest since it got items or was last served goes next (a model of the turn kept
    from what each stream holds; a stream whose item was replaced keeps its place)."""
    if newest:
        per_key = None
    ch, dropped, superseded = make(cap, per_key=per_key, newest=newest)
    taken: list[Item] = []
    put: list[Item] = []
    turn: list[Hashable] = []  # the model: streams with items, the next to serve first
    for n, op in enumerate(ops):
        if op == "get":
            if len(ch):
                item = ch.get_nowait()
                taken.append(item)
                assert item[0] == turn.pop(0)
                if item[0] in ch.buffer.streams():
                    turn.append(item[0])
            continue
        item = (op, n)
        put.append(item)
        ch.put_nowait(item)
        held = ch.buffer.streams()
        turn = [key for key in turn if key in held]
        turn += [key for key in held if key not in turn]
        assert len(ch) <= cap
        limit = 1 if newest else per_key
        if limit is not None:
            assert max(ch.buffer.streams().values()) <= limit
    left = drain(ch)
    assert sorted(taken + dropped + superseded + left) == sorted(put)
    assert ch.received == len(put)
    assert ch.overflowed == len(dropped) + len(superseded)
    for key in "abc":
        out = [item for item in taken + left if item[0] == key]
        assert out == sorted(out)  # each stream in its order


def test_a_thread_taking_while_the_loop_puts_loses_nothing() -> None:
    """The thread fast paths take straight from the buffer: its lock keeps the books."""
    ch, dropped, _ = make(16, per_key=4)
    taken: list[Item] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set() or len(ch):
            try:
                taken.append(ch._buf.popleft())
            except IndexError:
                pass

    thread = threading.Thread(target=reader)
    thread.start()
    put = 0
    try:
        for i in range(20_000):
            ch.put_nowait((f"s{i % 7}", i))
            put += 1
    finally:
        stop.set()
        thread.join()
    assert len(taken) + len(dropped) == put
    by_stream: dict[str, list[int]] = {}
    for name, i in taken:
        by_stream.setdefault(name, []).append(i)
    assert all(v == sorted(v) for v in by_stream.values())


def test_channel_repr_says_what_it_is() -> None:
    ch, _, _ = make(3, newest=True)
    ch.put_nowait(("a", 0))
    assert repr(ch) == "<FairChannel 1/3 drop_oldest open>"


async def test_a_put_that_would_supersede_lets_a_waiting_reader_take_first() -> None:
    """A producer that never waits: the reader still gets every item it is ready for, and
    only what arrives while it is busy is superseded."""
    ch, _, superseded = make(8, newest=True)
    taken: list[Item] = []

    async def reader() -> None:
        while True:
            taken.append(await ch.get())

    task = asyncio.create_task(reader())
    await asyncio.sleep(0)
    for i in range(20):
        await ch.put(("a", i))
    await asyncio.sleep(0)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert taken == [("a", i) for i in range(20)]
    assert superseded == []


# -- served in turn -----------------------------------------------------------------------------


def test_a_flooding_stream_gets_an_equal_share_of_a_slow_reader_not_less() -> None:
    """A stream flooding the queue keeps only its newest items queued; served oldest first
    across streams it would get the fewest through. Served in turn, each stream with queued
    items gets one item per round: over any window the counts differ by at most one."""
    ch, dropped, _ = make(12)
    served: list[str] = []
    for i in range(3000):
        ch.put_nowait(("flood", i))
        if i % 10 == 0:  # two steadier streams, each faster than the reader's share of it
            ch.put_nowait(("b", i))
        if i % 12 == 0:
            ch.put_nowait(("c", i))
        if i % 6 == 0:  # the slow reader
            served.append(ch.get_nowait()[0])
    window = served[100:]  # past the start, every stream always has items queued
    counts = {name: window.count(name) for name in ("flood", "b", "c")}
    assert max(counts.values()) - min(counts.values()) <= 1, counts
    for start in range(0, len(window) - 30, 30):  # and so in every stretch of ten rounds
        part = window[start : start + 30]
        assert {part.count(name) for name in ("flood", "b", "c")} == {10}
    assert dropped  # the flood is still dropped, by stream


def test_the_oldest_first_order_would_starve_the_flooding_stream() -> None:
    """The same traffic, served oldest first across streams (what a plain queue holding the
    kept items would give): the flooding stream gets far fewer than its share (so the test
    above can fail)."""
    ch, _, _ = make(12)
    served: list[str] = []
    for i in range(3000):
        ch.put_nowait(("flood", i))
        if i % 10 == 0:
            ch.put_nowait(("b", i))
        if i % 12 == 0:
            ch.put_nowait(("c", i))
        if i % 6 == 0:
            oldest = min(ch.buffer, key=lambda item: item[1])
            queued = list(ch.buffer)
            ch.buffer.clear()
            for item in queued:
                if item is not oldest:
                    ch.buffer.append(item)
            served.append(oldest[0])
    window = served[100:]
    assert window.count("flood") < window.count("b") / 2


def test_each_stream_keeps_its_order_while_served_in_turn() -> None:
    ch, _, _ = make(100)
    for i in range(10):
        ch.put_nowait(("a", i))
    for i in range(3):
        ch.put_nowait(("b", i))
    out = drain(ch)
    assert out[:6] == [("a", 0), ("b", 0), ("a", 1), ("b", 1), ("a", 2), ("b", 2)]
    assert out[6:] == [("a", i) for i in range(3, 10)]


def test_a_stream_that_gets_items_again_joins_the_end_of_the_turn() -> None:
    ch, _, _ = make(100)
    for item in [("a", 0), ("a", 1), ("b", 0), ("c", 0)]:
        ch.put_nowait(item)
    assert ch.get_nowait() == ("a", 0)  # "a" goes behind "b" and "c"
    assert ch.get_nowait() == ("b", 0)  # "b" has nothing left: it leaves the turn
    ch.put_nowait(("b", 1))  # ... and joins its end again, behind "a"
    assert drain(ch) == [("c", 0), ("a", 1), ("b", 1)]


def is_control(item: Item) -> bool:
    return item[0] == "end"


def make_with_controls(capacity: int) -> tuple[FairChannel[Item], list[Item]]:
    dropped: list[Item] = []
    ch = FairChannel(capacity, stream, on_drop=dropped.append, control=is_control)
    return ch, dropped


def test_a_control_item_leaves_after_every_item_put_before_it() -> None:
    """An end-of-key marker of stream "a" must not overtake "a"'s items: while it is queued,
    items leave in arrival order up to it, then in turn again."""
    ch, _ = make_with_controls(100)
    for item in [("a", 0), ("a", 1), ("a", 2), ("b", 0), ("end", 0), ("b", 1), ("a", 3)]:
        ch.put_nowait(item)
    out = drain(ch)
    assert out.index(("end", 0)) == 4
    assert sorted(out[:4]) == [("a", 0), ("a", 1), ("a", 2), ("b", 0)]
    assert out[5:] == [("a", 3), ("b", 1)]  # in turn again: "a" was served longer ago (a2)


def test_take_capped_keeps_a_control_item_behind_the_items_before_it() -> None:
    ch, _ = make_with_controls(100)
    for item in [("a", 0), ("a", 1), ("a", 2), ("end", 0), ("b", 0)]:
        ch.put_nowait(item)
    counts: dict[Hashable, int] = {}
    batch = []
    while (item := ch.take_capped(counts, 2)) is not NOTHING:
        batch.append(item)
    # "a" is capped at 2; "b" is not, but the marker waits for a2, and b0 waits for the marker
    # (items put after a control item do not pass it while it waits)
    assert batch == [("a", 0), ("a", 1), ("b", 0)]
    assert drain(ch) == [("a", 2), ("end", 0)]


def test_a_thread_taking_by_popleft_is_served_in_turn() -> None:
    """The thread fast paths take straight from the buffer (``popleft``): in turn there too."""
    ch, _, _ = make(100)
    for name, n in [("a", 6), ("b", 3), ("c", 3)]:
        for i in range(n):
            ch.put_nowait((name, i))
    taken: list[Item] = []

    def reader() -> None:
        while len(ch):
            taken.append(ch._buf.popleft())

    thread = threading.Thread(target=reader)
    thread.start()
    thread.join()
    assert [name for name, _ in taken] == list("abc" * 3 + "aaa")
    assert [i for name, i in taken if name == "a"] == list(range(6))


class _Touchy:
    """A stream key that refuses: its ``__eq__`` raises, and its ``__hash__`` too from its
    ``hashes``-th call on (a key that hashed once may still fail the next time)."""

    def __init__(self, hashes: int = 1_000_000) -> None:
        self.hashes = hashes

    def __hash__(self) -> int:
        self.hashes -= 1
        if self.hashes < 0:
            msg = "no more hashes"
            raise RuntimeError(msg)
        return hash("a")  # (the hash of stream "a": they are compared)

    def __eq__(self, other: object) -> bool:
        msg = "keys of this kind cannot be compared"
        raise RuntimeError(msg)


def test_an_item_whose_stream_key_refuses_is_refused_and_the_buffer_stays_whole() -> None:
    """Finding a stream compared the user's key inside the buffer's tables, part-way through
    changing them; the error went to whoever put the item (the block before, or the source,
    which then failed the run). The item is refused now, nothing else changes, and the
    streams go on as before."""
    keys: dict[str, Any] = {"t": _Touchy(), "h": _Touchy(hashes=1), "k": "boom"}

    def key(item: Item) -> Hashable:
        found = keys.get(item[0], item[0])
        if found == "boom":
            msg = "the key function fails"
            raise ValueError(msg)
        return found

    refused: list[tuple[Item, Exception]] = []
    dropped: list[Item] = []
    ch = FairChannel(
        3,
        key,
        per_key=2,
        on_drop=dropped.append,
        on_refuse=lambda item, exc: refused.append((item, exc)),
    )
    for item in [("a", 0), ("t", 0), ("b", 0), ("h", 0), ("a", 1), ("k", 0), ("a", 2)]:
        ch.put_nowait(item)
    assert [item for item, _ in refused] == [("t", 0), ("h", 0), ("k", 0)]
    assert [type(exc) for _, exc in refused] == [RuntimeError, RuntimeError, ValueError]
    assert dropped == [("a", 0)]  # per_key=2: "a" holds its two newest
    assert ch.buffer.streams() == {"a": 2, "b": 1}
    # ("a", 1) took the turn of the item it pushed out, ahead of "b"
    assert drain(ch) == [("a", 1), ("b", 0), ("a", 2)]
    assert ch.buffer.streams() == {}
    ch.put_nowait(("b", 1))  # the buffer is whole: streams come and go as before
    assert drain(ch) == [("b", 1)]


def test_without_on_refuse_a_refusing_key_raises_to_the_putter_and_changes_nothing() -> None:
    ch = FairChannel(3, lambda item: _Touchy() if item[0] == "t" else item[0])
    ch.put_nowait(("a", 0))
    with pytest.raises(RuntimeError, match="cannot be compared"):
        ch.put_nowait(("t", 0))
    assert drain(ch) == [("a", 0)]
