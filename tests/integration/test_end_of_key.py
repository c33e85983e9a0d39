"""``af.EndOfKey``: one key ends while the others go on.

A source yields ``af.EndOfKey(key)`` after a key's last item (``video_source`` does when a stream
is removed). Every keyed block drops that key's state once its earlier items are done, calling
``evict`` and emitting its outputs right there; no user function ever sees the marker, the
statistics do not count it, and the caller never gets it. Checked through every kind of stage
that can stand before a keyed block.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Hashable
from typing import Any

import pytest
import redis_pipelines as rp
from conftest import Workers, wait_until

import aioflow as af
from aioflow.transport.redis import RedisTransport

pytestmark = pytest.mark.integration

Item = tuple[str, int]


class Tracker(af.Block):
    """Counts each camera's items; its evict() flushes ("end", camera, count)."""

    key = staticmethod(lambda item: item[0])

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.seen: list[Any] = []
        self.evicted: list[Hashable] = []

    def create_state(self, camera: Hashable) -> list[int]:
        return [0]

    async def process(self, item: Item, state: list[int]) -> Item:
        assert not isinstance(item, af.EndOfKey)
        self.seen.append(item)
        await asyncio.sleep(0.002 if item[1] % 3 == 0 else 0)  # calls overlap, finish unordered
        state[0] += 1
        return item

    async def evict(self, camera: Hashable, state: list[int]) -> list[Any]:
        self.evicted.append(camera)
        return [("end", camera, state[0])]


def cameras(rounds: int, ends: dict[int, str]) -> list[Any]:
    """Rounds of one item per camera ("gate", "hall"); after round r, EndOfKey(ends[r])."""
    items: list[Any] = []
    for i in range(rounds):
        items += [("gate", i), ("hall", i)]
        if i in ends:
            items.append(af.EndOfKey(ends[i]))
    return items


def check_flush(out: list[Any], camera: str, after: int) -> None:
    """The camera's flush counts its items up to round ``after`` and leaves right after the
    last of them (per-key order); the camera's later items started a new state."""
    flushes = [i for i, o in enumerate(out) if o[0] == "end" and o[1] == camera]
    first = flushes[0]
    assert out[first] == ("end", camera, after + 1)
    before = [o for o in out[:first] if o[0] == camera]
    assert before == [(camera, i) for i in range(after + 1)]


def identity(x: Any) -> Any:
    assert not isinstance(x, af.EndOfKey)  # the marker never reaches user code
    return x


async def async_identity(x: Any) -> Any:
    assert not isinstance(x, af.EndOfKey)
    await asyncio.sleep(0.001 if x[1] % 2 else 0)
    return x


async def generator(x: Any) -> AsyncIterator[Any]:
    assert not isinstance(x, af.EndOfKey)
    yield x


def batch_identity(xs: list[Any]) -> list[Any]:
    assert not any(isinstance(x, af.EndOfKey) for x in xs)
    return list(xs)


STAGES: dict[str, Any] = {
    "serial coroutine": lambda: [af.block(async_identity, name="before")],
    "coroutine, 3 workers": lambda: [af.block(async_identity, name="before", workers=3)],
    "thread, 3 workers": lambda: [af.block(identity, name="before", executor="thread", workers=3)],
    "thread, 1 worker": lambda: [af.block(identity, name="before", executor="thread")],
    "async generator": lambda: [af.block(generator, name="before")],
    "batch (thread)": lambda: [af.block(batch_identity, name="before", batch=af.Batch(4, 0.01))],
    "batch, 2 workers": lambda: [
        af.block(batch_identity, name="before", batch=af.Batch(4, 0.01), workers=2)
    ],
    "branch": lambda: [
        af.branch(af.block(identity, name="b1"), af.block(async_identity, name="b2")),
        af.block(lambda pair: pair[0], name="before"),
    ],
}


@pytest.mark.parametrize("stage", list(STAGES))
@pytest.mark.parametrize("tracker_workers", [1, 2])
async def test_a_keyed_block_evicts_a_key_where_it_ended(stage: str, tracker_workers: int) -> None:
    tracker = Tracker(workers=tracker_workers)
    pipe = af.Pipeline(*STAGES[stage](), tracker, name="cams")
    items = cameras(30, {9: "gate", 19: "hall"})
    out = await pipe.run(items)

    assert not any(isinstance(o, af.EndOfKey) for o in out)  # the caller gets items only
    check_flush(out, "gate", 9)
    check_flush(out, "hall", 19)
    # Each camera came back after its end: its later items form a new state, flushed at the end.
    assert out.count(("end", "gate", 20)) == 1
    assert out.count(("end", "hall", 10)) == 1
    assert [o for o in out if o[0] != "end"] == [i for i in items if isinstance(i, tuple)]
    assert tracker.evicted.count("gate") == 2
    assert tracker.evicted.count("hall") == 2
    for name, rec in pipe.statistics().items():  # markers are not items: the books hold
        assert rec.received == rec.completed + rec.dropped + rec.skipped + rec.failed, name
        assert (rec.in_flight, rec.queue_depth) == (0, 0), name
    rec = pipe.statistics()["Tracker"]
    assert (rec.received, rec.evicted, rec.emitted, rec.keys) == (60, 4, 64, 0)


BEFORE_SERIAL: dict[str, Any] = {
    **STAGES,
    "keyed, 2 workers": lambda: [
        af.block(async_identity, name="before", key=lambda item: item[0], workers=2)
    ],
    "every": lambda: [
        af.every(af.block(async_identity, name="sampled"), n=2, key=lambda item: item[0]),
    ],
}


@pytest.mark.parametrize("stage", list(BEFORE_SERIAL))
async def test_a_serial_block_behind_any_stage_hands_the_marker_on_unseen(stage: str) -> None:
    """A one-worker coroutine block takes its input in runs without looking at each item while
    no marker waits there: every kind of stage that hands one on must say so."""
    seen: list[Any] = []

    async def after(x: Any) -> Any:
        seen.append(x)
        assert not isinstance(x, af.EndOfKey)
        return x.item if isinstance(x, af.Held) else x

    tracker = Tracker()
    serial = af.block(after, name="after", queue_size=4)  # runs start and stop often
    pipe = af.Pipeline(*BEFORE_SERIAL[stage](), serial, tracker, name="cams")
    items = cameras(30, {9: "gate", 19: "hall"})
    out = await pipe.run(items)

    assert not any(isinstance(x, af.EndOfKey) for x in seen)
    check_flush(out, "gate", 9)
    check_flush(out, "hall", 19)
    assert tracker.evicted.count("gate") == 2
    rec = pipe.statistics()["after"]
    assert (rec.received, rec.completed, rec.in_flight, rec.queue_depth) == (60, 60, 0, 0)


async def test_a_submitted_marker_passes_a_serial_block_unseen() -> None:
    seen: list[Any] = []

    async def first(x: Any) -> Any:
        seen.append(x)
        return x

    tracker = Tracker()
    async with af.Pipeline(af.block(first), tracker).open() as running:
        assert await running.submit(("gate", 0)) == ("gate", 0)
        with pytest.raises(af.ItemDropped):  # the marker makes no output of its own
            await running.submit(af.EndOfKey("gate"))
        assert await running.submit(("gate", 1)) == ("gate", 1)
        assert tracker.evicted == ["gate"]
    assert seen == [("gate", 0), ("gate", 1)]


async def test_the_key_function_never_sees_the_marker_and_unknown_keys_pass() -> None:
    calls: list[Any] = []

    def by_camera(item: Any) -> str:
        calls.append(item)
        return str(item["camera"])  # breaks on anything but a dict

    @af.block(key=by_camera, state=list)
    def remember(item: dict[str, Any], state: list[int]) -> int:
        state.append(item["i"])
        return len(state)

    items: list[Any] = [{"camera": "gate", "i": 0}, {"camera": "gate", "i": 1}]
    items += [af.EndOfKey("gate"), af.EndOfKey("nobody"), {"camera": "gate", "i": 2}]
    pipe = af.Pipeline(remember)
    assert await pipe.run(items) == [1, 2, 1]  # a new state after the end
    assert not any(isinstance(c, af.EndOfKey) for c in calls)
    assert pipe.statistics()["remember"].evicted == 2  # gate mid-stream, gate again at the end


async def test_a_marker_survives_a_leaky_edge_that_drops_items() -> None:
    release = asyncio.Event()

    class Slow(Tracker):
        async def process(self, item: Item, state: list[int]) -> Item:
            await release.wait()
            state[0] += 1
            return item

    slow = Slow(queue_size=2, overflow="drop_oldest")

    async def source() -> AsyncIterator[Any]:
        for i in range(10):
            yield ("gate", i)
        yield af.EndOfKey("gate")
        for i in range(10):
            yield ("hall", i)  # these push the marker to the head of the full queue, and out
            await asyncio.sleep(0)
        release.set()

    pipe = af.Pipeline(slow)
    out = await pipe.run(source())
    assert slow.evicted == ["gate", "hall"]  # gate's end was kept: evicted mid-stream
    gate_end = next(o for o in out if o[:2] == ("end", "gate"))
    assert out.index(gate_end) < out.index(next(o for o in out if o[0] == "hall"))
    rec = pipe.statistics()["Slow"]
    assert rec.dropped_by["overflow"] > 0  # items were dropped, the marker was not
    assert rec.received == 20 == rec.completed + rec.dropped


async def test_end_of_key_needs_a_hashable_key() -> None:
    with pytest.raises(TypeError, match="hashable"):
        af.EndOfKey(["gate"])


async def test_a_marker_crosses_redis_edges_and_never_reaches_the_caller(
    redis_url: str, redis_prefix: str, workers: Workers
) -> None:
    for name in ("double", "inc", "square"):
        workers.start("chain", name)
    transport = RedisTransport(redis_url, prefix=redis_prefix)
    items: list[Any] = [1, 2, af.EndOfKey("cam"), 3, af.EndOfKey(("site", 4)), 5]
    local = await rp.chain.run(items)
    assert local == [9, 25, 49, 121]
    assert await rp.chain.run(items, transport=transport) == local


async def test_a_keyed_block_in_a_worker_ends_the_key_in_the_partition_that_holds_it(
    redis_url: str, redis_prefix: str, workers: Workers
) -> None:
    workers.start("keyed", "count")  # keyed by item[0], partitioned by key across Redis streams
    transport = RedisTransport(redis_url, prefix=redis_prefix)
    items: list[Any] = [("a", 0), ("b", 0), ("a", 1), af.EndOfKey("a"), ("a", 2), ("b", 1)]
    expected = [("a", 0, 1), ("b", 0, 1), ("a", 1, 2), ("a", 2, 1), ("b", 1, 2)]
    assert await rp.keyed.run(items) == expected  # "a" counts from 1 again after its end
    assert await rp.keyed.run(items, transport=transport) == expected


@pytest.mark.parametrize(
    "options",
    [
        {"fair": True, "overflow": "drop_oldest"},
        {"per_key": 1, "overflow": "drop_oldest"},
        {"serve": "newest", "overflow": "drop_oldest"},
        {"fair": True, "overflow": "drop_newest"},
    ],
    ids=["fair", "per_key", "newest", "fair-drop_newest"],
)
async def test_a_marker_is_never_dropped_by_an_edge_shared_by_streams(
    options: dict[str, Any],
) -> None:
    release = asyncio.Event()

    class Slow(Tracker):
        async def process(self, item: Item, state: list[int]) -> Item:
            await release.wait()
            state[0] += 1
            return item

    slow = Slow(queue_size=2, **options)

    async def source() -> AsyncIterator[Any]:
        for i in range(10):
            yield ("gate", i)
        yield af.EndOfKey("gate")
        for i in range(10):
            yield ("hall", i)  # the edge is full: by stream, items are dropped, never the marker
            await asyncio.sleep(0)
        release.set()

    pipe = af.Pipeline(slow)
    out = await pipe.run(source())
    assert slow.evicted == ["gate", "hall"]  # gate's end arrived behind gate's last items
    gate_end = next(o for o in out if o[:2] == ("end", "gate"))
    gate_items = [o for o in out if o[0] == "gate"]
    assert all(out.index(o) < out.index(gate_end) for o in gate_items)
    assert gate_end == ("end", "gate", len(gate_items))
    rec = pipe.statistics()["Slow"]
    assert rec.dropped > 0  # items were dropped, the marker was not
    assert rec.received == 20 == rec.completed + rec.dropped
    assert (rec.in_flight, rec.queue_depth) == (0, 0)


async def test_a_marker_leaves_a_batch_capped_per_stream_behind_its_keys_items() -> None:
    seen: list[Any] = []

    def batch_identity_capped(xs: list[Any]) -> list[Any]:
        assert not any(isinstance(x, af.EndOfKey) for x in xs)
        seen.append(list(xs))
        return list(xs)

    first = af.block(
        batch_identity_capped,
        name="before",
        batch=af.Batch(4, 0.01, max_per_key=2),
        fair=lambda item: item[0],
        ordered=False,
    )
    tracker = Tracker()
    out = await af.Pipeline(first, tracker).run(cameras(12, {5: "gate"}))
    check_flush(out, "gate", 5)
    assert all(sum(1 for x in b if x[0] == cam) <= 2 for b in seen for cam in ("gate", "hall"))


@pytest.mark.parametrize("overflow", ["block", "drop_oldest"])
async def test_statistics_read_while_a_thread_blocks_threads_take_markers_and_items(
    overflow: str,
) -> None:
    """A thread block's own threads take items from its input while the event loop reads the
    statistics (a /metrics scrape does, at any moment) or a leaky edge puts a marker back: the
    reader never fails on a buffer that changed under it, and every item and marker is
    accounted for. (A scrape once failed with 'deque mutated during iteration'.)"""
    import sys

    @af.block(workers=2, queue_size=256, overflow=overflow)  # type: ignore[call-overload]
    def touch(item: Item) -> Item:
        return item

    n = 20_000
    errors: list[BaseException] = []

    async def source() -> AsyncIterator[Any]:
        for i in range(n):
            yield ("cam", i)
            if i % 50 == 49:
                yield af.EndOfKey("cam")
            if i % 512 == 0:
                await asyncio.sleep(0)

    pipe = af.Pipeline(touch)
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads switch as often as they can: the race shows at once
    try:

        async def scrape(running: asyncio.Task[list[Any]]) -> int:
            reads = 0
            while not running.done():
                try:
                    pipe.statistics()
                except BaseException as exc:  # the failure this test is about
                    errors.append(exc)
                    raise
                reads += 1
                await asyncio.sleep(0)
            return reads

        running = asyncio.create_task(pipe.run(source()))
        reads = await scrape(running)
        out = await running
    finally:
        sys.setswitchinterval(switch)
    assert not errors
    assert reads > 100
    rec = pipe.statistics()["touch"]
    assert rec.received == n == len(out) + rec.dropped
    assert not any(isinstance(o, af.EndOfKey) for o in out)


async def test_a_marker_behind_an_item_retried_in_an_unordered_thread_block_goes_on() -> None:
    """An unordered thread block with several workers holds a marker back until the items
    taken before it have finished. An item whose call failed and was retried has finished once
    the retry is done: the marker then goes on, and the keyed block after it ends the key.
    (The failed item was never counted as finished: the marker waited for it forever, and its
    ``submit()`` caller with it.)"""
    retrying = threading.Event()
    go_on = threading.Event()

    def flaky(item: Item) -> Item:
        if item == ("gate", 3):
            if not retrying.is_set():
                retrying.set()
                msg = "a transient failure"
                raise RuntimeError(msg)
            go_on.wait(10)  # the retry ends once the marker has been taken (see below)
        return item

    before = af.block(
        flaky,
        name="before",
        executor="thread",
        workers=2,
        ordered=False,
        on_error=af.Retry(attempts=2, backoff=0.001),
    )
    tracker = Tracker()
    async with af.Pipeline(before, tracker).open() as running:
        first = asyncio.create_task(running.submit(("gate", 3)))
        await wait_until(retrying.is_set, "the first call failed")
        marker = asyncio.create_task(running.submit(af.EndOfKey("gate")))
        # An item put after the marker may overtake it (unordered): once it is through, the
        # marker has been taken too, and waits for the retried item.
        assert await running.submit(("hall", 1)) == ("hall", 1)
        go_on.set()
        assert await first == ("gate", 3)
        await wait_until(marker.done, "the marker went on")
        with pytest.raises(af.ItemDropped):  # the marker makes no output of its own
            await marker
        assert tracker.evicted == ["gate"]
    rec = running.statistics()["before"]
    assert (rec.received, rec.completed, rec.retried) == (2, 2, 1)


async def test_stale_items_batched_with_a_marker_by_a_thread_are_dropped_not_called() -> None:
    """A one-worker batched thread block takes its batches itself; one that holds a marker goes
    back to the event loop, which sends the marker on between the items. ``max_age`` still
    holds for the items of that batch: those older than it are dropped as stale, never called.
    (They were called: the thread looked at their age only for batches without a marker.)"""
    max_age = 0.25
    release = asyncio.Event()
    fresh = asyncio.Event()
    seen: list[int] = []

    async def hold(x: int) -> int:
        if x == 0:
            await release.wait()
        return x

    def budget(xs: list[int]) -> list[int]:
        seen.extend(xs)
        return list(xs)

    pipe = af.Pipeline(
        af.block(hold, name="hold"),
        af.block(budget, name="budget", batch=af.Batch(8, 0), max_age=max_age),
    )

    async def source() -> AsyncIterator[Any]:
        for i in range(5):
            yield i
        yield af.EndOfKey("cam")
        await fresh.wait()
        for i in range(5, 10):
            yield i

    async def drive() -> None:
        # Items 0..4 and the marker wait behind the held item 0 until the items are older than
        # the budget, then reach the batched block together.
        await asyncio.sleep(max_age + 0.1)
        release.set()
        await wait_until(lambda: pipe.statistics()["budget"].received == 5, "items arrived")
        await wait_until(lambda: pipe.statistics()["budget"].in_flight == 0, "items ended")
        fresh.set()

    async with asyncio.TaskGroup() as tg:
        tg.create_task(drive())
        outputs = await pipe.run(source())

    assert outputs == [5, 6, 7, 8, 9]
    assert seen == [5, 6, 7, 8, 9]  # the function never ran for a stale item
    rec = pipe.statistics()["budget"]
    assert (rec.received, rec.completed, rec.dropped_by) == (10, 5, {"stale": 5})
