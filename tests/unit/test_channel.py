"""Channel: the bounded FIFO edges between blocks."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from aioflow._engine.channel import Channel, ChannelClosed


async def settle(turns: int = 10) -> None:
    """Let every ready task run (a few loop iterations)."""
    for _ in range(turns):
        await asyncio.sleep(0)


def contents(ch: Channel[Any]) -> list[Any]:
    """Everything buffered, taken without waiting (empties the channel)."""
    items = []
    while not ch.empty():
        items.append(ch.get_nowait())
    return items


# -- FIFO and waiting -------------------------------------------------------------------------


async def test_items_come_out_in_the_order_they_went_in() -> None:
    ch: Channel[int] = Channel(8)
    for i in range(8):
        await ch.put(i)
    assert len(ch) == 8
    assert ch.full()
    assert [await ch.get() for _ in range(8)] == list(range(8))
    assert ch.empty()


async def test_put_waits_while_full_and_resumes_when_a_getter_takes() -> None:
    ch: Channel[str] = Channel(2)
    ch.put_nowait("a")
    ch.put_nowait("b")
    putter = asyncio.create_task(ch.put("c"))
    await settle()
    assert not putter.done()
    assert len(ch) == 2

    assert await ch.get() == "a"
    await settle()
    assert putter.done()
    assert putter.result() is True
    assert contents(ch) == ["b", "c"]


async def test_waiting_putters_are_served_first_come_first_served() -> None:
    ch: Channel[str] = Channel(1)
    ch.put_nowait("first")
    putters = [asyncio.create_task(ch.put(name)) for name in ("p1", "p2", "p3")]
    await settle()
    assert not any(p.done() for p in putters)

    taken = []
    for _ in range(4):
        taken.append(await ch.get())
        await settle()
    assert taken == ["first", "p1", "p2", "p3"]
    assert all(p.done() for p in putters)


async def test_get_waits_while_empty() -> None:
    ch: Channel[str] = Channel(4)
    getter = asyncio.create_task(ch.get())
    await settle()
    assert not getter.done()

    ch.put_nowait("x")
    assert await asyncio.wait_for(getter, 1) == "x"


async def test_waiting_getters_are_served_first_come_first_served() -> None:
    ch: Channel[int] = Channel(4)
    getters = [asyncio.create_task(ch.get()) for _ in range(3)]
    await settle()
    for i in range(3):
        ch.put_nowait(i)
    assert await asyncio.gather(*getters) == [0, 1, 2]


# -- close ------------------------------------------------------------------------------------


async def test_close_lets_getters_drain_then_raises_channel_closed() -> None:
    ch: Channel[int] = Channel(4)
    ch.put_nowait(1)
    ch.put_nowait(2)
    ch.close()
    assert ch.closed
    assert await ch.get() == 1
    assert ch.get_nowait() == 2
    with pytest.raises(ChannelClosed):
        await ch.get()
    with pytest.raises(ChannelClosed):
        ch.get_nowait()


async def test_close_wakes_waiting_getters_with_channel_closed() -> None:
    ch: Channel[int] = Channel(4)
    getters = [asyncio.create_task(ch.get()) for _ in range(2)]
    await settle()
    ch.close()
    results = await asyncio.gather(*getters, return_exceptions=True)
    assert all(isinstance(r, ChannelClosed) for r in results), results


async def test_close_is_idempotent() -> None:
    ch: Channel[int] = Channel(2)
    ch.put_nowait(1)
    ch.close()
    ch.close()
    assert await ch.get() == 1
    with pytest.raises(ChannelClosed):
        await ch.get()


@pytest.mark.parametrize("overflow", ["block", "drop_oldest", "drop_newest"])
async def test_put_on_a_closed_channel_raises(overflow: Any) -> None:
    ch: Channel[int] = Channel(2, overflow=overflow)
    ch.close()
    with pytest.raises(ChannelClosed):
        await ch.put(1)
    with pytest.raises(ChannelClosed):
        ch.put_nowait(1)
    assert len(ch) == 0
    assert ch.received == 0


async def test_close_wakes_waiting_putters_with_channel_closed_and_keeps_their_items_out() -> None:
    ch: Channel[str] = Channel(1)
    ch.put_nowait("kept")
    putter = asyncio.create_task(ch.put("late"))
    await settle()
    assert not putter.done()

    ch.close()
    with pytest.raises(ChannelClosed):
        await asyncio.wait_for(putter, 1)
    assert contents(ch) == ["kept"]


# -- overflow policies ------------------------------------------------------------------------


async def test_drop_oldest_evicts_the_oldest_item_and_reports_it() -> None:
    dropped: list[int] = []
    ch: Channel[int] = Channel(2, overflow="drop_oldest", on_drop=dropped.append)
    assert ch.put_nowait(1) is True
    assert ch.put_nowait(2) is True
    assert ch.put_nowait(3) is True  # buffered; 1 made room
    assert await ch.put(4) is True  # does not wait: a leaky channel never blocks the producer
    assert dropped == [1, 2]
    assert ch.received == 4
    assert ch.overflowed == 2
    assert contents(ch) == [3, 4]


async def test_drop_newest_discards_the_new_item_and_reports_it() -> None:
    dropped: list[int] = []
    ch: Channel[int] = Channel(2, overflow="drop_newest", on_drop=dropped.append)
    assert ch.put_nowait(1) is True
    assert ch.put_nowait(2) is True
    assert ch.put_nowait(3) is False
    assert await ch.put(4) is False
    assert dropped == [3, 4]
    assert ch.received == 4
    assert ch.overflowed == 2
    assert contents(ch) == [1, 2]


@pytest.mark.parametrize("overflow", ["drop_oldest", "drop_newest"])
async def test_leaky_channels_count_drops_without_a_callback(overflow: Any) -> None:
    ch: Channel[int] = Channel(3, overflow=overflow)
    for i in range(10):
        await ch.put(i)
    assert ch.received == 10
    assert ch.overflowed == 7
    assert len(ch) == 3


async def test_block_policy_counts_every_item_received_and_none_overflowed() -> None:
    ch: Channel[int] = Channel(1)
    putters = [asyncio.create_task(ch.put(i)) for i in range(5)]
    got = [await ch.get() for _ in range(5)]
    await asyncio.gather(*putters)
    assert got == list(range(5))
    assert ch.received == 5
    assert ch.overflowed == 0


# -- cancellation -----------------------------------------------------------------------------


async def test_a_woken_getter_that_is_cancelled_passes_its_turn_on() -> None:
    ch: Channel[str] = Channel(4)
    first = asyncio.create_task(ch.get())
    second = asyncio.create_task(ch.get())
    await settle()

    ch.put_nowait("item")  # wakes `first`...
    first.cancel()  # ...which is cancelled before it can take the item
    await settle()

    assert first.cancelled()
    assert second.done()
    assert second.result() == "item"


async def test_a_cancelled_waiting_getter_does_not_swallow_a_later_wake_up() -> None:
    ch: Channel[str] = Channel(4)
    gone = asyncio.create_task(ch.get())
    await settle()
    gone.cancel()
    await settle()
    assert gone.cancelled()

    waiting = asyncio.create_task(ch.get())
    await settle()
    ch.put_nowait("item")
    assert await asyncio.wait_for(waiting, 1) == "item"


async def test_a_woken_putter_that_is_cancelled_passes_its_turn_on() -> None:
    ch: Channel[str] = Channel(1)
    ch.put_nowait("old")
    first = asyncio.create_task(ch.put("first"))
    second = asyncio.create_task(ch.put("second"))
    await settle()
    assert not first.done()
    assert not second.done()

    assert ch.get_nowait() == "old"  # wakes `first`...
    first.cancel()  # ...which is cancelled before it can put
    await settle()

    assert first.cancelled()
    assert second.done()
    assert contents(ch) == ["second"]


async def test_a_cancelled_waiting_putter_does_not_put_its_item() -> None:
    ch: Channel[str] = Channel(1)
    ch.put_nowait("old")
    gone = asyncio.create_task(ch.put("gone"))
    kept = asyncio.create_task(ch.put("kept"))
    await settle()
    gone.cancel()
    await settle()

    assert await ch.get() == "old"
    await settle()
    assert kept.done()
    assert contents(ch) == ["kept"]
    assert ch.received == 2


# -- construction and the nowait pair ---------------------------------------------------------


@pytest.mark.parametrize("capacity", [0, -1])
def test_capacity_below_one_is_refused(capacity: int) -> None:
    with pytest.raises(ValueError, match=str(capacity)):
        Channel(capacity)


async def test_get_nowait_on_an_empty_open_channel_raises_queue_empty() -> None:
    ch: Channel[int] = Channel(1)
    with pytest.raises(asyncio.QueueEmpty):
        ch.get_nowait()


async def test_put_nowait_on_a_full_blocking_channel_raises_queue_full() -> None:
    ch: Channel[int] = Channel(1)
    ch.put_nowait(1)
    with pytest.raises(asyncio.QueueFull):
        ch.put_nowait(2)
    assert contents(ch) == [1]
    assert ch.received == 1


async def test_get_nowait_makes_room_for_a_waiting_putter() -> None:
    ch: Channel[int] = Channel(1)
    ch.put_nowait(1)
    putter = asyncio.create_task(ch.put(2))
    await settle()
    assert ch.get_nowait() == 1
    await settle()
    assert putter.done()
    assert ch.get_nowait() == 2


# -- runs -------------------------------------------------------------------------------------


async def test_a_run_put_at_once_wakes_as_many_waiting_getters_as_it_has_items() -> None:
    ch: Channel[int] = Channel(8)
    getters = [asyncio.create_task(ch.get()) for _ in range(3)]
    await settle()
    ch.extend_nowait([1, 2])
    await settle()
    assert [g.result() for g in getters[:2]] == [1, 2]  # first come, first served
    assert not getters[2].done()
    ch.extend_nowait([3, 4, 5])
    await settle()
    assert getters[2].result() == 3
    assert contents(ch) == [4, 5]
    assert ch.received == 5


async def test_a_run_that_does_not_fit_a_blocking_channel_puts_nothing() -> None:
    ch: Channel[int] = Channel(3)
    ch.put_nowait(0)
    with pytest.raises(asyncio.QueueFull):
        ch.extend_nowait([1, 2, 3])
    ch.extend_nowait([1, 2])
    assert contents(ch) == [0, 1, 2]
    assert ch.received == 3


@pytest.mark.parametrize(
    ("overflow", "kept", "dropped"),
    [("drop_oldest", [2, 3, 4], [0, 1]), ("drop_newest", [0, 1, 2], [3, 4])],
)
async def test_a_run_into_a_leaky_channel_drops_by_its_policy(
    overflow: Any, kept: list[int], dropped: list[int]
) -> None:
    lost: list[int] = []
    ch: Channel[int] = Channel(3, overflow=overflow, on_drop=lost.append)
    ch.extend_nowait([0, 1, 2, 3, 4])
    assert contents(ch) == kept
    assert lost == dropped
    assert (ch.received, ch.overflowed) == (5, 2)


async def test_a_run_into_a_closed_channel_raises() -> None:
    ch: Channel[int] = Channel(3)
    ch.close()
    with pytest.raises(ChannelClosed):
        ch.extend_nowait([1])


async def test_a_writer_arriving_as_a_slot_frees_finds_it_taken_by_the_one_waiting() -> None:
    ch: Channel[str] = Channel(1)
    ch.put_nowait("old")
    first = asyncio.create_task(ch.put("first"))
    await settle()
    assert ch.get_nowait() == "old"  # the slot goes to `first`, its item put right away...
    with pytest.raises(asyncio.QueueFull):
        ch.put_nowait("late")  # ...so a newcomer finds the channel full
    late = asyncio.create_task(ch.put("late"))  # and waits behind it
    await settle()
    assert first.done()
    assert not late.done()
    assert len(ch) == 1
    assert ch.get_nowait() == "first"  # its turn: `late` is put
    await settle()
    assert late.done()
    assert contents(ch) == ["late"]


async def test_a_putter_cancelled_after_a_reader_took_its_item_leaves_it_taken() -> None:
    ch: Channel[str] = Channel(1)
    ch.put_nowait("old")
    first = asyncio.create_task(ch.put("first"))
    await settle()
    assert ch.get_nowait() == "old"  # `first` is put in its turn...
    assert ch.get_nowait() == "first"  # ...and read before its writer learns so
    first.cancel()
    await settle()
    assert first.cancelled()
    assert (ch.received, contents(ch)) == (2, [])
