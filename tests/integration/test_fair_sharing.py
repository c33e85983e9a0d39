"""Many streams through one block: fair drops (``fair=``, ``per_key=``), newest first
(``serve="newest"``) and batches capped per stream (``af.Batch(max_per_key=)``).

No test reads the clock to decide what happens. A *tick* is a burst of frames from each camera
put while the slow block is held on a gate; the gate then lets a set number of calls through,
and the source waits until they are done before the next tick. So what each camera loses
depends only on the policy.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from conftest import wait_until

import aioflow as af

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Frame:
    camera: str
    index: int  # position in its camera's stream
    seq: int  # position in the merged input


def camera_of(frame: Frame) -> str:
    return frame.camera


class Gate:
    """Lets ``n`` calls of the slow block through per tick; counts them."""

    def __init__(self) -> None:
        self.permits = asyncio.Semaphore(0)
        self.done = 0
        self.open = False

    async def through(self) -> None:
        if not self.open:
            await self.permits.acquire()
        self.done += 1

    async def tick(self, n: int) -> None:
        start = self.done
        for _ in range(n):
            self.permits.release()
        await wait_until(lambda: self.done >= start + n, f"{n} calls through the gate")

    def release_all(self) -> None:
        self.open = True
        for _ in range(10_000):
            self.permits.release()


async def cameras(
    gate: Gate, rates: dict[str, int], ticks: int, served_per_tick: int
) -> AsyncIterator[Frame]:
    """Each tick, ``rates[camera]`` frames of each camera, interleaved evenly; then the gate
    lets ``served_per_tick`` calls through."""
    seq = 0
    counts = dict.fromkeys(rates, 0)
    most = max(rates.values())
    for _ in range(ticks):
        for step in range(most):
            for name, rate in rates.items():
                # this camera's frames spread over the tick
                if (step + 1) * rate // most > step * rate // most:
                    yield Frame(name, counts[name], seq)
                    counts[name] += 1
                    seq += 1
        await gate.tick(served_per_tick)
    gate.release_all()


async def flood(**options: Any) -> tuple[list[Frame], af.BlockStatistics]:
    """A 30-frames-per-tick camera and a 5-frames-per-tick one into a slow block that serves 12
    frames a tick (more than twice the quiet camera's rate: its fair share covers it)."""
    gate = Gate()

    @af.block(queue_size=12, overflow="drop_oldest", **options)
    async def detect(frame: Frame) -> Frame:
        await gate.through()
        return frame

    pipe = af.Pipeline(detect)
    out = await pipe.run(cameras(gate, {"busy": 30, "quiet": 5}, ticks=20, served_per_tick=12))
    return out, pipe.statistics()["detect"]


def delivered(out: list[Frame], camera: str) -> int:
    return sum(1 for f in out if f.camera == camera)


async def test_a_flooding_camera_takes_the_drops_and_a_quiet_one_loses_nothing() -> None:
    out, rec = await flood(fair=camera_of)
    assert delivered(out, "quiet") == 100  # every frame of the quiet camera
    assert delivered(out, "busy") < 600
    assert rec.dropped_by == {"overflow": 700 - len(out)}
    assert rec.received == 700
    assert rec.balanced
    for cam in ("busy", "quiet"):  # each camera in its order (cameras are served in turn)
        frames = [f.index for f in out if f.camera == cam]
        assert frames == sorted(frames)


async def test_a_flooding_camera_gets_its_share_of_the_block_not_less() -> None:
    """Three cameras, all faster than their share of a slow block (30, 10 and 10 frames a tick;
    it serves 6): each gets the same number of frames through. Served oldest first, the
    flooding camera would get the fewest: its queued frames are always its newest, pushed out
    by its own next ones before their turn comes."""
    gate = Gate()

    @af.block(queue_size=12, overflow="drop_oldest", fair=camera_of)
    async def detect(frame: Frame) -> Frame:
        await gate.through()
        return frame

    pipe = af.Pipeline(detect)
    rates = {"busy": 30, "b": 10, "c": 10}
    out = await pipe.run(cameras(gate, rates, ticks=20, served_per_tick=6))
    rec = pipe.statistics()["detect"]
    # The 20 ticks, each camera its third; then what was queued at the end, served in turn.
    counts = {cam: delivered(out, cam) for cam in rates}
    assert max(counts.values()) - min(counts.values()) <= 1, counts
    assert rec.dropped_by == {"overflow": 1000 - len(out)}
    assert rec.balanced
    for cam in rates:
        frames = [f.index for f in out if f.camera == cam]
        assert frames == sorted(frames)


async def test_without_fair_the_flooding_camera_pushes_the_quiet_one_out() -> None:
    out, rec = await flood()
    assert delivered(out, "quiet") < 60  # what fair= is for
    assert rec.balanced


async def test_per_key_shares_the_queue_of_a_keyed_block_by_its_key() -> None:
    """A tracker keyed by camera, each camera at most 3 queued frames (the queue is never
    full): the quiet camera keeps all its frames, each camera's frames stay in order."""
    gate = Gate()
    seen: dict[str, list[int]] = {}

    @af.block(queue_size=10, overflow="drop_oldest", key=camera_of, per_key=3)
    async def track(frame: Frame) -> Frame:
        await gate.through()
        seen.setdefault(frame.camera, []).append(frame.index)
        return frame

    pipe = af.Pipeline(track)
    out = await pipe.run(cameras(gate, {"busy": 30, "quiet": 2}, ticks=10, served_per_tick=5))
    rec = pipe.statistics()["track"]
    assert delivered(out, "quiet") == 20
    assert all(v == sorted(v) for v in seen.values())
    assert rec.balanced
    assert rec.dropped_by["overflow"] == 320 - len(out) > 200


async def test_fair_true_uses_the_blocks_key() -> None:
    out, rec = await flood(fair=True, key=camera_of)
    assert delivered(out, "quiet") == 100
    assert rec.balanced


async def test_a_thread_block_shares_its_queue_fairly_too() -> None:
    """A plain function (its threads take items themselves, racing the loop's puts): the same
    books, the quiet camera served, the busy one's frames in order. (The quiet camera's 10
    frames fit in its share of the queue even if the thread takes nothing meanwhile: a thread
    waiting for the GIL may well not.)"""
    release = threading.Event()

    @af.block(queue_size=32, overflow="drop_oldest", fair=camera_of, executor="thread")
    def detect(frame: Frame) -> Frame:
        release.wait(10)
        return frame

    async def frames() -> AsyncIterator[Frame]:
        seq = 0
        for i in range(300):
            yield Frame("busy", i, seq)
            seq += 1
            if i % 30 == 0:
                yield Frame("quiet", i // 30, seq)
                seq += 1
            if i == 60:
                release.set()
            await asyncio.sleep(0)
        release.set()

    pipe = af.Pipeline(detect)
    out = await pipe.run(frames())
    rec = pipe.statistics()["detect"]
    assert rec.balanced
    assert rec.received == 310
    assert delivered(out, "quiet") == 10
    busy = [f.index for f in out if f.camera == "busy"]
    assert busy == sorted(busy)


# -- newest first ---------------------------------------------------------------------------------


async def test_serve_newest_works_on_the_freshest_frame_of_each_camera() -> None:
    """While the block is busy, each camera's older frames are superseded by its newest;
    cameras are served in turn, a camera whose frame was superseded keeping its place ("a"
    queued first), each camera in order."""
    entered = asyncio.Event()
    release = asyncio.Event()

    @af.block(queue_size=8, overflow="drop_oldest", serve="newest", key=camera_of)
    async def track(frame: Frame) -> tuple[str, int]:
        entered.set()
        await release.wait()
        return frame.camera, frame.index

    async def frames() -> AsyncIterator[Frame]:
        yield Frame("a", 0, 0)
        await entered.wait()  # a0 is being processed; the rest queue behind it
        seq = 1
        for i in range(1, 5):
            for cam in ("a", "b"):
                if cam == "b" and i == 4:
                    continue  # b's newest is b2, older than a4
                yield Frame(cam, i if cam == "a" else i - 1, seq)
                seq += 1
        release.set()

    pipe = af.Pipeline(track)
    out = await pipe.run(frames())
    rec = pipe.statistics()["track"]
    assert out == [("a", 0), ("a", 4), ("b", 2)]
    assert rec.dropped_by == {"superseded": 5}  # a1, a2, a3, b0, b1
    assert rec.balanced


async def test_serve_newest_on_a_plain_block_keeps_the_single_newest_item() -> None:
    entered = asyncio.Event()
    release = asyncio.Event()

    @af.block(queue_size=4, overflow="drop_oldest", serve="newest", max_age=60)
    async def detect(i: int) -> int:
        entered.set()
        await release.wait()
        return i

    async def frames() -> AsyncIterator[int]:
        yield 0
        await entered.wait()
        for i in range(1, 10):
            yield i
        release.set()

    pipe = af.Pipeline(detect)
    assert await pipe.run(frames()) == [0, 9]
    assert pipe.statistics()["detect"].dropped_by == {"superseded": 8}


async def test_submit_of_a_superseded_item_raises_item_dropped_superseded() -> None:
    entered = asyncio.Event()
    release = asyncio.Event()

    @af.block(queue_size=4, overflow="drop_oldest", serve="newest", key=camera_of)
    async def track(frame: Frame) -> int:
        entered.set()
        await release.wait()
        return frame.index

    async with af.Pipeline(track).open() as running:
        first = asyncio.create_task(running.submit(Frame("a", 0, 0)))
        await entered.wait()
        older = asyncio.create_task(running.submit(Frame("a", 1, 1)))
        await wait_until(lambda: running.statistics()["track"].queue_depth == 1, "a1 queued")
        newer = asyncio.create_task(running.submit(Frame("a", 2, 2)))
        with pytest.raises(af.ItemDropped) as info:
            await older
        assert (info.value.reason, info.value.block) == ("superseded", "track")
        release.set()
        assert await first == 0
        assert await newer == 2
        rec = running.statistics()["track"]
    assert rec.dropped_by == {"superseded": 1}
    assert rec.balanced


# -- batches capped per stream ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["async", "thread"])
async def test_a_batch_holds_at_most_max_per_key_items_of_one_stream(kind: str) -> None:
    """Twelve frames of a busy camera queue ahead of two of a quiet one while a batch is held:
    the next batch takes two of each, the busy camera's others wait for later batches, in
    order. (``max_wait=0``: a batch takes what is ready and may join it.)"""
    entered = threading.Event()
    release = threading.Event()
    batches: list[list[tuple[str, int]]] = []

    def run(frames: list[Frame]) -> list[Frame]:
        batches.append([(f.camera, f.index) for f in frames])
        return frames

    options: dict[str, Any] = {
        "batch": af.Batch(4, 0, max_per_key=2),
        "fair": camera_of,
        "ordered": False,
        "queue_size": 32,
    }
    if kind == "async":

        @af.block(**options)
        async def detect(frames: list[Frame]) -> list[Frame]:
            if not batches:
                entered.set()
                await asyncio.to_thread(release.wait, 10)
            return run(frames)

    else:

        @af.block(**options)
        def detect(frames: list[Frame]) -> list[Frame]:
            if not batches:
                entered.set()
                release.wait(10)
            return run(frames)

    async def frames() -> AsyncIterator[Frame]:
        yield Frame("busy", 0, 0)
        yield Frame("busy", 1, 1)
        await wait_until(entered.is_set, "the first batch held")
        for i in range(2, 14):
            yield Frame("busy", i, i)
        yield Frame("quiet", 0, 14)
        yield Frame("quiet", 1, 15)
        release.set()

    pipe = af.Pipeline(detect)
    out = await pipe.run(frames())
    assert len(out) == 16
    assert batches[0] == [("busy", 0), ("busy", 1)]
    assert batches[1] == [("busy", 2), ("quiet", 0), ("busy", 3), ("quiet", 1)]  # in turn
    for batch in batches:
        for cam in ("busy", "quiet"):
            assert sum(1 for c, _ in batch if c == cam) <= 2
    busy = [i for batch in batches for c, i in batch if c == "busy"]
    assert busy == list(range(14))  # each stream in order
    rec = pipe.statistics()["detect"]
    assert rec.balanced
    assert rec.completed == 16
    assert rec.batch_sizes == {2: 6, 4: 1}


async def test_a_capped_batch_waits_for_items_that_may_join_it() -> None:
    """With a long max_wait, a batch holding two frames of the busy camera does not close on
    the busy camera's queued frames: it waits for the quiet camera's, and closes when full."""
    batches: list[list[tuple[str, int]]] = []

    @af.block(batch=af.Batch(4, 3600, max_per_key=2), fair=camera_of, ordered=False, queue_size=16)
    async def detect(frames: list[Frame]) -> list[Frame]:
        batches.append([(f.camera, f.index) for f in frames])
        return frames

    pipe = af.Pipeline(detect)

    async def frames() -> AsyncIterator[Frame]:
        for i in range(4):
            yield Frame("busy", i, i)
        # the batch took busy 0 and 1; busy 2 and 3 wait in the queue
        await wait_until(lambda: pipe.statistics()["detect"].queue_depth == 2, "two taken")
        yield Frame("busy", 4, 4)  # wakes the batch, which cannot take it
        await asyncio.sleep(0)
        yield Frame("quiet", 0, 5)
        await asyncio.sleep(0)
        yield Frame("quiet", 1, 6)

    out = await pipe.run(frames())
    assert batches[0] == [("busy", 0), ("busy", 1), ("quiet", 0), ("quiet", 1)]
    assert batches[1] == [("busy", 2), ("busy", 3)]  # the end of the stream closes it
    assert batches[2:] == [[("busy", 4)]]
    assert len(out) == 7


async def test_submit_of_an_item_a_fair_queue_dropped_raises_item_dropped_overflow() -> None:
    entered = asyncio.Event()
    release = asyncio.Event()

    @af.block(queue_size=2, overflow="drop_oldest", fair=camera_of)
    async def detect(frame: Frame) -> int:
        entered.set()
        await release.wait()
        return frame.index

    async with af.Pipeline(detect).open() as running:
        first = asyncio.create_task(running.submit(Frame("busy", 0, 0)))
        await entered.wait()
        b1 = asyncio.create_task(running.submit(Frame("busy", 1, 1)))
        b2 = asyncio.create_task(running.submit(Frame("busy", 2, 2)))
        await wait_until(lambda: running.statistics()["detect"].queue_depth == 2, "2 queued")
        quiet = asyncio.create_task(running.submit(Frame("quiet", 0, 3)))
        with pytest.raises(af.ItemDropped) as info:
            await b1  # the busy camera held the most: its oldest made room
        assert (info.value.reason, info.value.block) == ("overflow", "detect")
        release.set()
        assert [await first, await b2, await quiet] == [0, 2, 0]
        rec = running.statistics()["detect"]
    assert rec.dropped_by == {"overflow": 1}
    assert rec.balanced


# -- options --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"fair": 3, "overflow": "drop_oldest"}, "option 'fair' must be"),
        (
            {"fair": True, "overflow": "drop_oldest"},
            "fair=True shares the input by the block's key",
        ),
        ({"per_key": 0, "overflow": "drop_oldest", "fair": camera_of}, "'per_key' must be"),
        ({"per_key": 2, "overflow": "drop_oldest"}, "'per_key' needs the stream of each item"),
        ({"per_key": 2, "fair": camera_of}, "needs a leaky edge"),
        ({"per_key": 99, "overflow": "drop_oldest", "fair": camera_of}, "<= queue_size"),
        ({"fair": camera_of}, "with overflow='block' nothing is dropped"),
        ({"serve": "latest", "overflow": "drop_oldest"}, "option 'serve' must be"),
        ({"serve": "newest"}, "needs overflow='drop_oldest'"),
        ({"serve": "newest", "overflow": "drop_newest"}, "needs overflow='drop_oldest'"),
        (
            {"serve": "newest", "overflow": "drop_oldest", "per_key": 2, "fair": camera_of},
            "keeps one item per stream already",
        ),
        ({"batch": af.Batch(4, 0.01, max_per_key=2), "ordered": False}, "max_per_key, which"),
        (
            {"batch": af.Batch(4, 0.01, max_per_key=2), "fair": camera_of},
            "set ordered=False",
        ),
    ],
)
def test_bad_stream_options_are_graph_errors_naming_the_block(
    options: dict[str, Any], says: str
) -> None:
    with pytest.raises(af.GraphError, match=r"block 'detect'") as info:

        @af.block(name="detect", **options)
        def detect(x: Any) -> Any:
            return x

    assert says in str(info.value)


@pytest.mark.parametrize("bad", [0, 5, True, 1.5])
def test_batch_max_per_key_is_validated(bad: Any) -> None:
    with pytest.raises(af.GraphError, match="max_per_key must be None or an int from 1 to"):
        af.Batch(4, 0.01, max_per_key=bad)


def test_a_guessed_option_name_points_to_serve_newest() -> None:
    with pytest.raises(af.GraphError, match=r"did you mean serve=\"newest\""):
        af.block(latest_only=True)(lambda x: x)


def test_a_block_subclass_takes_fair_as_a_class_attribute() -> None:
    class Detect(af.Block):
        overflow = "drop_oldest"
        fair = camera_of
        per_key = 2

        async def process(self, frame: Frame) -> Frame:
            return frame

    opts = Detect().options
    assert opts.stream_key() is camera_of
    assert opts.per_key == 2
