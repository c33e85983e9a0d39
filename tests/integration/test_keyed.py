"""Keyed blocks: ``key=`` (one item of a key at a time, keys in parallel), per-key state and
its eviction.

The running example is a tracker fed by several cameras: each camera's frames must be seen in
order and one at a time, cameras overlap, and a camera's state is flushed when it goes quiet or
the stream ends. Overlap is shown with an active-call count and gates, never with the clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Hashable, Iterable
from operator import itemgetter
from typing import Any

import pytest
from conftest import wait_until

import aioflow as af
from aioflow._engine.segment import KeyedLanes
from aioflow.testing import Recorder

pytestmark = pytest.mark.integration

KINDS = ["async", "thread"]
Frame = tuple[Any, int]  # (camera, index within the camera's stream)
camera = itemgetter(0)


# -- helpers ----------------------------------------------------------------------------------


def interleaved(cameras: int, per_camera: int, seed: int) -> list[Frame]:
    """Rounds of one frame per camera, the cameras in a random order each round."""
    rng = random.Random(seed)
    frames: list[Frame] = []
    for index in range(per_camera):
        order = list(range(cameras))
        rng.shuffle(order)
        frames.extend((cam, index) for cam in order)
    return frames


def per_camera(frames: Iterable[Frame]) -> dict[Any, list[int]]:
    seen: dict[Any, list[int]] = defaultdict(list)
    for cam, index in frames:
        seen[cam].append(index)
    return dict(seen)


class Activity:
    """Calls in progress, overall and per camera. Thread-safe: thread blocks use it too."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.active = 0
        self.max_active = 0
        self.per_camera: Counter[Any] = Counter()
        self.max_per_camera = 0
        self.order: dict[Any, list[int]] = defaultdict(list)
        self.overlapped = threading.Event()

    def enter(self, frame: Frame) -> None:
        with self.lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            self.per_camera[frame[0]] += 1
            self.max_per_camera = max(self.max_per_camera, self.per_camera[frame[0]])
            self.order[frame[0]].append(frame[1])
            if self.active >= 2:
                self.overlapped.set()

    def leave(self, frame: Frame) -> None:
        with self.lock:
            self.active -= 1
            self.per_camera[frame[0]] -= 1


class Tracker(af.Block):
    """Holds each camera's frame indices; flushes them as one track when the camera is evicted."""

    def __init__(self, **options: Any) -> None:
        options.setdefault("name", "tracker")
        super().__init__(**options)
        self.created: list[Any] = []
        self.flushed: list[Any] = []

    def create_state(self, key: Hashable) -> list[int]:
        self.created.append(key)
        return []

    async def process(self, frame: Frame, track: list[int]) -> Frame:
        track.append(frame[1])
        return frame

    async def evict(self, key: Hashable, state: Any) -> list[Any]:
        self.flushed.append(key)
        return [("track", key, tuple(state))]


# -- one frame of a camera at a time, cameras in parallel -----------------------------------


@pytest.mark.parametrize("ordered", [True, False], ids=["ordered", "unordered"])
@pytest.mark.parametrize("kind", KINDS)
async def test_each_camera_is_processed_in_order_one_frame_at_a_time(
    kind: str, ordered: bool
) -> None:
    cameras, frames_each, workers = 8, 10, 4
    frames = interleaved(cameras, frames_each, seed=11)
    rng = random.Random(7)
    delays = {frame: rng.uniform(0, 0.002) for frame in frames}
    first = frames[0]
    activity = Activity()

    async def on_loop(frame: Frame) -> Frame:
        activity.enter(frame)
        try:
            if frame == first:  # goes on only once another camera's frame runs beside it
                await wait_until(activity.overlapped.is_set, "two cameras in flight")
            await asyncio.sleep(delays[frame])
            return frame
        finally:
            activity.leave(frame)

    def in_thread(frame: Frame) -> Frame:
        activity.enter(frame)
        try:
            if frame == first and not activity.overlapped.wait(5):
                msg = "no other camera ran beside the first"
                raise RuntimeError(msg)
            time.sleep(delays[frame])
            return frame
        finally:
            activity.leave(frame)

    fn = on_loop if kind == "async" else in_thread
    blk = af.block(name="detect", key=camera, workers=workers, ordered=ordered)(fn)
    pipe = af.Pipeline(blk)
    async with asyncio.timeout(10):
        outputs = await pipe.run(frames)

    expected = {cam: list(range(frames_each)) for cam in range(cameras)}
    assert activity.order == expected  # processed in arrival order per camera
    assert activity.max_per_camera == 1  # never two frames of one camera at once
    assert 2 <= activity.max_active <= workers  # cameras overlap, up to `workers`
    if ordered:
        assert outputs == frames
    else:
        assert sorted(outputs) == sorted(frames)
        assert per_camera(outputs) == expected
    stats = pipe.statistics()["detect"]
    assert stats.received == stats.completed == len(frames)
    assert stats.balanced


async def test_ordered_outputs_keep_input_order_when_a_later_camera_finishes_first() -> None:
    b_done = asyncio.Event()

    @af.block(key=camera, workers=2)
    async def detect(frame: Frame) -> Frame:
        if frame == ("a", 0):
            async with asyncio.timeout(5):
                await b_done.wait()
        elif frame == ("b", 0):
            b_done.set()
        return frame

    frames: list[Frame] = [("a", 0), ("b", 0), ("a", 1), ("b", 1)]
    async with asyncio.timeout(10):
        assert await af.Pipeline(detect).run(frames) == frames


async def test_unordered_outputs_of_other_cameras_do_not_wait_for_a_slow_one() -> None:
    release = asyncio.Event()

    @af.block(key=camera, workers=4, ordered=False)
    async def detect(frame: Frame) -> Frame:
        if frame == ("slow", 0):
            async with asyncio.timeout(5):
                await release.wait()
        return frame

    frames: list[Frame] = [("slow", 0), *(("fast", i) for i in range(6)), ("slow", 1)]
    got: list[Frame] = []
    async with asyncio.timeout(10):
        async with contextlib.aclosing(af.Pipeline(detect).stream(frames)) as outputs:
            async for out in outputs:
                got.append(out)
                if out == ("fast", 5):
                    release.set()  # every fast frame came out while the slow one was held

    assert got == [*(("fast", i) for i in range(6)), ("slow", 0), ("slow", 1)]


# -- per-key state ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
async def test_function_state_is_made_per_camera_and_kept_between_its_frames(kind: str) -> None:
    made: list[int] = []

    def new_state() -> list[int]:
        made.append(1)
        return []

    async def on_loop(frame: Frame, seen: list[int]) -> tuple[Any, list[int]]:
        seen.append(frame[1])
        return frame[0], list(seen)

    def in_thread(frame: Frame, seen: list[int]) -> tuple[Any, list[int]]:
        seen.append(frame[1])
        return frame[0], list(seen)

    fn = on_loop if kind == "async" else in_thread
    blk = af.block(name="count", key=camera, state=new_state, workers=3)(fn)
    pipe = af.Pipeline(blk)
    frames = interleaved(3, 4, seed=3)
    async with pipe.open() as running:
        async with asyncio.timeout(5):
            answers = await asyncio.gather(*(running.submit(f) for f in frames))
        live = running.statistics()["count"]

    assert answers == [(cam, list(range(index + 1))) for cam, index in frames]
    assert len(made) == 3  # one state per camera, made on its first frame
    assert live.keys == 3
    after = pipe.statistics()["count"]
    assert after.keys == 0  # the end of the stream evicts every camera
    assert after.evicted == 3


@pytest.mark.parametrize("kind", KINDS)
async def test_a_block_subclass_gets_the_state_its_create_state_made(kind: str) -> None:
    class Counting(af.Block):
        def __init__(self, **options: Any) -> None:
            super().__init__(**options)
            self.created: list[Any] = []

        def create_state(self, key: Hashable) -> dict[str, Any]:
            self.created.append(key)
            return {"camera": key, "frames": 0}

    class OnLoop(Counting):
        async def process(self, frame: Frame, state: dict[str, Any]) -> tuple[Any, int, int]:
            state["frames"] += 1
            return state["camera"], frame[1], state["frames"]

    class InThread(Counting):
        def process(self, frame: Frame, state: dict[str, Any]) -> tuple[Any, int, int]:
            state["frames"] += 1
            return state["camera"], frame[1], state["frames"]

    counting = (OnLoop if kind == "async" else InThread)(name="counting", key=camera, workers=2)
    frames = interleaved(4, 5, seed=5)
    async with asyncio.timeout(10):
        outputs = await af.Pipeline(counting).run(frames)

    assert outputs == [(cam, index, index + 1) for cam, index in frames]
    assert sorted(counting.created) == [0, 1, 2, 3]


# -- eviction -------------------------------------------------------------------------------


async def test_every_camera_is_evicted_at_the_end_and_its_flush_goes_downstream() -> None:
    tracker = Tracker(key=camera, workers=2)
    sink = Recorder(name="sink")
    pipe = af.Pipeline(tracker, sink)
    frames = interleaved(3, 4, seed=1)
    async with asyncio.timeout(10):
        outputs = await pipe.run(frames)

    n = len(frames)
    tracks = [("track", cam, (0, 1, 2, 3)) for cam in range(3)]
    assert outputs[:n] == frames
    assert sorted(outputs[n:]) == tracks
    assert sorted(sink.items[n:]) == tracks  # the next block processed the flushed tracks
    assert sorted(tracker.flushed) == [0, 1, 2]
    stats = pipe.statistics()
    assert stats["tracker"].evicted == 3
    assert stats["tracker"].keys == 0
    assert stats["sink"].received == n + 3


async def test_an_idle_camera_is_evicted_mid_stream_and_its_flush_comes_out() -> None:
    tracker = Tracker(key=camera, evict_after=0.02)
    flushed = asyncio.Event()

    async def frames() -> AsyncIterator[Frame]:
        yield ("a", 0)
        yield ("a", 1)
        async with asyncio.timeout(5):
            await flushed.wait()  # camera "a" stays quiet until its track came out
        yield ("b", 0)
        yield ("a", 2)

    pipe = af.Pipeline(tracker)
    got: list[Any] = []
    async with asyncio.timeout(10):
        async with contextlib.aclosing(pipe.stream(frames())) as outputs:
            async for out in outputs:
                got.append(out)
                if out[0] == "track":
                    flushed.set()

    assert got[:3] == [("a", 0), ("a", 1), ("track", "a", (0, 1))]
    assert [g for g in got[3:] if g[0] != "track"] == [("b", 0), ("a", 2)]
    # "a" came back after its eviction: a fresh state, flushed on its own.
    assert sorted(g for g in got[3:] if g[0] == "track") == [
        ("track", "a", (2,)),
        ("track", "b", (0,)),
    ]
    assert tracker.created == ["a", "b", "a"]
    stats = pipe.statistics()["tracker"]
    assert stats.evicted == 3
    assert stats.keys == 0


async def test_only_idle_cameras_are_evicted() -> None:
    entered = asyncio.Event()
    release = asyncio.Event()

    class SlowTracker(Tracker):
        async def process(self, frame: Frame, track: list[int]) -> Frame:
            if frame == ("b", 0):
                entered.set()
                async with asyncio.timeout(5):
                    await release.wait()
            return await super().process(frame, track)

    tracker = SlowTracker(key=camera, evict_after=0.02, workers=2)
    pipe = af.Pipeline(tracker)
    async with pipe.open() as running:
        async with asyncio.timeout(5):
            assert await running.submit(("a", 0)) == ("a", 0)
            busy = asyncio.create_task(running.submit(("b", 0)))
            await entered.wait()
        await wait_until(lambda: running.statistics()["tracker"].evicted >= 1, "a evicted")
        stats = running.statistics()["tracker"]
        assert stats.evicted == 1
        assert stats.keys == 1  # "b" is busy, not idle: its state stays
        assert tracker.flushed == ["a"]
        release.set()
        async with asyncio.timeout(5):
            assert await busy == ("b", 0)
            assert await running.submit(("a", 1)) == ("a", 1)

    assert tracker.created == ["a", "b", "a"]
    assert sorted(tracker.flushed) == ["a", "a", "b"]
    assert pipe.statistics()["tracker"].evicted == 3
    assert pipe.statistics()["tracker"].keys == 0


@pytest.mark.parametrize("stall", ["downstream-busy", "evict-hook-awaits"])
async def test_a_flush_under_way_when_the_stream_ends_still_reaches_downstream(stall: str) -> None:
    hook_began = asyncio.Event()
    hook_gate = asyncio.Event()
    sink_gate = asyncio.Event()
    source_done = asyncio.Event()

    class SlowFlush(Tracker):
        async def evict(self, key: Hashable, state: Any) -> list[Any]:
            hook_began.set()
            if stall == "evict-hook-awaits":
                async with asyncio.timeout(5):
                    await hook_gate.wait()  # writing the track somewhere takes a while
            return await super().evict(key, state)

    @af.block(queue_size=1)
    async def sink(x: Any) -> Any:
        if stall == "downstream-busy":
            async with asyncio.timeout(5):
                await sink_gate.wait()
        return x

    async def frames() -> AsyncIterator[Frame]:
        yield ("a", 0)
        yield ("a", 1)
        async with asyncio.timeout(5):
            await hook_began.wait()  # camera "a" went idle; its flush is under way
        source_done.set()

    async def unblock_after_the_end() -> None:
        await source_done.wait()
        await asyncio.sleep(0.02)  # let the end of the stream reach the tracker first
        hook_gate.set()
        sink_gate.set()

    tracker = SlowFlush(key=camera, evict_after=0.01)
    pipe = af.Pipeline(tracker, sink)
    async with asyncio.timeout(10), asyncio.TaskGroup() as tg:
        tg.create_task(unblock_after_the_end())
        outputs = await pipe.run(frames())

    assert outputs == [("a", 0), ("a", 1), ("track", "a", (0, 1))]
    stats = pipe.statistics()
    assert stats["tracker"].evicted == 1
    assert stats["sink"].received == stats["tracker"].emitted == 3


# -- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "option"),
    [
        ({"state": list}, "state"),
        ({"evict_after": 1.0}, "evict_after"),
        ({"key": camera, "batch": af.Batch(max_size=4, max_wait=0.01)}, "batch"),
    ],
    ids=["state-without-key", "evict_after-without-key", "key-with-batch"],
)
def test_options_that_need_a_key_or_clash_with_it_are_graph_errors(
    options: dict[str, Any], option: str
) -> None:
    async def detect(frame: Frame) -> Frame:
        return frame

    with pytest.raises(af.GraphError) as info:
        af.block(name="detect", **options)(detect)
    assert "detect" in str(info.value)
    assert option in str(info.value)

    with pytest.raises(af.GraphError) as info:
        Tracker(name="tracker", **options)
    assert "tracker" in str(info.value)
    assert option in str(info.value)


def camera_of(frame: dict[str, Any]) -> Any:
    return frame["camera"]


def unlabelled_frames() -> list[dict[str, Any]]:
    return [{"camera": 0, "i": 0}, {"i": 1}, {"camera": 1, "i": 2}, {"camera": 0, "i": 3}]


@pytest.mark.parametrize("ordered", [True, False], ids=["ordered", "unordered"])
@pytest.mark.parametrize("kind", KINDS)
async def test_a_failing_key_function_skips_only_its_item(kind: str, ordered: bool) -> None:
    async def on_loop(frame: dict[str, Any]) -> int:
        return int(frame["i"])

    def in_thread(frame: dict[str, Any]) -> int:
        return int(frame["i"])

    fn = on_loop if kind == "async" else in_thread
    blk = af.block(name="detect", key=camera_of, on_error="skip", workers=2, ordered=ordered)(fn)
    pipe = af.Pipeline(blk)
    async with asyncio.timeout(10):
        outputs = await pipe.run(unlabelled_frames())
    assert (outputs if ordered else sorted(outputs)) == [0, 2, 3]
    stats = pipe.statistics()["detect"]
    assert stats.skipped == 1
    assert stats.completed == 3
    assert stats.balanced


async def test_a_failing_key_function_fails_the_run_with_its_cause() -> None:
    @af.block(key=camera_of)
    async def detect(frame: dict[str, Any]) -> int:
        return int(frame["i"])

    with pytest.raises(ExceptionGroup) as info:
        async with asyncio.timeout(10):
            await af.Pipeline(detect).run(unlabelled_frames())
    assert len(info.value.exceptions) == 1
    err = info.value.exceptions[0]
    assert isinstance(err, af.BlockError)
    assert err.block == "detect"
    assert isinstance(err.__cause__, KeyError)


async def test_a_failing_key_function_fails_only_its_callers_submit() -> None:
    @af.block(key=camera_of, workers=2)
    async def detect(frame: dict[str, Any]) -> int:
        return int(frame["i"])

    async with af.Pipeline(detect).open() as running:
        async with asyncio.timeout(5):
            results = await asyncio.gather(
                *(running.submit(f) for f in unlabelled_frames()), return_exceptions=True
            )
            assert await running.submit({"camera": 2, "i": 9}) == 9

    assert results[0] == 0
    assert results[2:] == [2, 3]
    err = results[1]
    assert isinstance(err, af.BlockError), repr(err)
    assert err.block == "detect"
    assert isinstance(err.__cause__, KeyError)


async def test_a_key_restored_while_its_lane_sends_on_others_outputs_takes_the_snapshot() -> None:
    # The distributed mode's takeover (aioflow/transport/partitions.py) restores a partition's
    # keys when none of its items is in flight; a key's lane can still be busy then: its task
    # finished the key's item, and as the head of the block's order it sends on the outputs of
    # the items after it, held up downstream. Its state is a leftover of an earlier ownership:
    # it must be replaced by the snapshot's, or the items processed again after the snapshot
    # would count twice.
    release_a = asyncio.Event()
    hold_b = asyncio.Event()

    @af.block(key=camera, state=dict, workers=8)
    async def count(item: Frame, state: dict[str, int]) -> tuple[Any, int]:
        if item[0] == "a":
            await release_a.wait()  # a (first in) finishes last: its task sends the others on
        state["n"] = state.get("n", 0) + 1
        return item[0], state["n"]

    @af.block(queue_size=1)
    async def gate(item: tuple[Any, int]) -> tuple[Any, int]:
        if item[0] == "b":
            await hold_b.wait()
        return item

    def is_a(key: Hashable) -> bool:
        return key == "a"

    async with asyncio.timeout(10), af.Pipeline(count, gate).open() as running:
        lanes = KeyedLanes(running, "count")
        tasks = []
        for key in "abcdefgh":
            tasks.append(asyncio.create_task(running.submit((key, 0))))
            await asyncio.sleep(0)
        while sum(1 for _, s in lanes.states(lambda k: True) if "n" in s) < 7:
            await asyncio.sleep(0.001)
        release_a.set()
        assert await tasks[0] == ("a", 1)  # a's item is through the whole pipeline
        assert lanes.drop(is_a) == 0  # its lane is still busy (sending b... on, held by gate)
        lanes.restore([["a", {"n": 10}]], is_a)  # a snapshot that counted 10 items of a
        hold_b.set()
        assert [await t for t in tasks[1:]] == [(key, 1) for key in "bcdefgh"]
        assert await running.submit(("a", 1)) == ("a", 11)


# -- keys that go bad while their lanes are cleaned up ---------------------------------------


class _Camera:
    """A camera key that every camera shares a hash with (so finding one compares it with the
    others), whose ``__hash__`` and ``==`` raise once ``switch`` is set: a user's key that
    goes bad with use."""

    def __init__(self, camera: int, switch: threading.Event) -> None:
        self.camera = camera
        self.switch = switch

    def __hash__(self) -> int:
        if self.switch.is_set():
            msg = "keys of this kind cannot be hashed any more"
            raise RuntimeError(msg)
        return 0

    def __eq__(self, other: object) -> bool:
        if self.switch.is_set():
            msg = "keys of this kind cannot be compared any more"
            raise RuntimeError(msg)
        return isinstance(other, _Camera) and other.camera == self.camera


def _souring_totals(executor: str, workers: int, **options: Any) -> af.Block[Any, Any]:
    """A keyed block counting each camera's items whose keys refuse to be compared from its
    first evict() on (hashed or compared); evict() flushes ("end", camera, count)."""
    switch = threading.Event()

    class Totals(af.Block):
        key = staticmethod(lambda x: _Camera(x % 3, switch))

        def create_state(self, camera: Hashable) -> list[int]:
            return [0]

    if executor == "async":

        class AsyncTotals(Totals):
            async def process(self, item: Any, state: list[int]) -> Any:
                state[0] += 1
                return item

            async def evict(self, camera: Any, state: list[int]) -> list[Any]:
                switch.set()
                return [("end", camera.camera, state[0])]

        return AsyncTotals(name="totals", workers=workers, **options)

    class ThreadTotals(Totals):
        def process(self, item: Any, state: list[int]) -> Any:
            state[0] += 1
            return item

        def evict(self, camera: Any, state: list[int]) -> list[Any]:
            switch.set()
            return [("end", camera.camera, state[0])]

    return ThreadTotals(name="totals", workers=workers, executor="thread", **options)


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("executor", ["async", "thread"])
@pytest.mark.parametrize("how", ["end_of_stream", "evict_after", "end_of_key"])
async def test_keys_that_refuse_while_their_lanes_are_cleaned_up_leave_the_run_whole(
    how: str, executor: str, workers: int
) -> None:
    """Each way a key's lane is taken out (the end of the stream, ``evict_after``, an
    ``af.EndOfKey``) finds the key among those held, comparing it with them: a key whose
    ``__hash__`` or ``==`` raises by then must neither fail nor hang the run. Every camera's
    flush comes out, with its count, and the books balance."""
    pipe = af.Pipeline(
        _souring_totals(
            executor, workers, **({"evict_after": 0.02} if how == "evict_after" else {})
        )
    )

    async def source() -> AsyncIterator[Any]:
        for x in range(6):
            yield x
        if how == "evict_after":
            # The cameras go idle and are evicted mid-stream: the first eviction turns the
            # keys bad, the others must still take their lanes out (or leave them) and flush.
            await wait_until(lambda: pipe.statistics()["totals"].evicted >= 3, "all evicted")
        elif how == "end_of_key":
            # Found while the keys still compare; its flush turns the keys held bad, then the
            # lane is taken out (the marker's key, still good, compared with them), and at the
            # end the other cameras' lanes too.
            yield af.EndOfKey(_Camera(0, threading.Event()))

    out = await asyncio.wait_for(pipe.run(source()), 20)
    assert sorted(x for x in out if type(x) is int) == list(range(6))
    assert sorted(x for x in out if type(x) is tuple) == [("end", c, 2) for c in range(3)]
    rec = pipe.statistics()["totals"]
    assert (rec.completed, rec.evicted, rec.balanced) == (6, 3, True)
