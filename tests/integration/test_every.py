"""``af.every(stage, n=..., per_second=..., key=...)``: sample-and-hold.

Only the sampled items of each key go through the stage; every input leaves as one ``af.Held``
with the latest result of its key, in order, and nothing is lost on the way.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import os
import threading
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from typing import Any

import proc_targets
import pytest
from conftest import books_balance

import aioflow as af
from aioflow.testing import ScriptedSource

pytestmark = pytest.mark.integration

Item = tuple[str, int]  # (camera, frame index)


def camera(item: Item) -> str:
    return item[0]


def interleaved(counts: dict[str, int]) -> list[Item]:
    """Frames of several cameras, interleaved round-robin (cameras of unequal lengths)."""
    streams = [[(cam, i) for i in range(n)] for cam, n in counts.items()]
    return [f for group in itertools.zip_longest(*streams) for f in group if f is not None]


def expected(frames: list[Item], n: int) -> list[tuple[Item, Item, int]]:
    """(frame, the frame its result comes from, age in items) for every nth frame of each key."""
    out = []
    for frame in frames:
        sampled = frame[1] - frame[1] % n
        out.append((frame, (frame[0], sampled), frame[1] - sampled))
    return out


async def test_every_nth_item_of_each_key_goes_through_the_stage_the_rest_hold_its_result() -> None:
    calls: list[Item] = []

    @af.block
    async def detect(frame: Item) -> str:
        calls.append(frame)
        return f"boxes of {frame}"

    frames = interleaved({"a": 10, "b": 7})
    pipe = af.Pipeline(af.every(detect, n=3, key=camera, name="sampled"), name="cams")
    outputs = await pipe.run(frames)

    assert [h.item for h in outputs] == frames  # one output per input, in input order
    assert [(h.item, h.result, h.age_items) for h in outputs] == [
        (frame, f"boxes of {source}", age) for frame, source, age in expected(frames, 3)
    ]
    assert [h.fresh for h in outputs] == [f[1] % 3 == 0 for f in frames]
    assert sorted(calls) == sorted(f for f in frames if f[1] % 3 == 0)  # only sampled frames

    stats = pipe.statistics()
    assert stats["detect"].received == stats["detect"].completed == len(calls) == 4 + 3
    assert stats["sampled"].received == stats["sampled"].emitted == len(frames)
    assert stats["sampled"].keys == 2
    assert books_balance(stats)


async def test_n_1_runs_the_stage_on_every_item_and_no_key_means_one_stream() -> None:
    pipe = af.Pipeline(af.every(lambda x: x * 10, n=1), name="all")
    outputs = await pipe.run(range(20))
    assert [(h.item, h.result, h.fresh, h.age_s) for h in outputs] == [
        (x, x * 10, True, 0.0) for x in range(20)
    ]

    one = af.Pipeline(af.every(lambda x: x * 10, n=4), name="one")
    held = await one.run(range(10))
    assert [h.result for h in held] == [0, 0, 0, 0, 40, 40, 40, 40, 80, 80]


async def test_held_items_wait_for_their_samples_result_from_a_slow_stage_with_workers() -> None:
    delays = {("a", 0): 0.02, ("b", 0): 0.0, ("a", 2): 0.0, ("b", 2): 0.015, ("a", 4): 0.005}

    @af.block(workers=3)
    async def detect(frame: Item) -> str:
        await asyncio.sleep(delays.get(frame, 0.001))
        return f"r{frame}"

    frames = interleaved({"a": 9, "b": 8})
    pipe = af.every(detect, n=2, key=camera) >> (lambda h: (h.item, h.result, h.age_items))
    outputs = await pipe.run(frames)
    assert outputs == [(f, f"r{src}", age) for f, src, age in expected(frames, 2)]


async def test_unordered_keeps_only_per_key_order_a_slow_key_does_not_hold_back_another() -> None:
    release_a = asyncio.Event()

    # (the stage's own order counts too: ordered=False there, and a worker free for b)
    @af.block(workers=4, ordered=False)
    async def detect(frame: Item) -> str:
        if frame[0] == "a":
            await release_a.wait()
        return f"r{frame}"

    frames = interleaved({"a": 4, "b": 6})
    pipe = af.Pipeline(af.every(detect, n=2, key=camera, ordered=False), name="live")
    seen: list[af.Held[Item, str]] = []
    async for held in pipe.stream(frames):
        seen.append(held)
        if sum(1 for h in seen if h.item[0] == "b") == 6:
            release_a.set()  # every frame of b came out while a's first detection was stuck
    assert [h.item for h in seen[:6]] == [("b", i) for i in range(6)]
    for cam, count in (("a", 4), ("b", 6)):
        mine = [h for h in seen if h.item[0] == cam]
        assert [h.item for h in mine] == [(cam, i) for i in range(count)]
        assert [h.result for h in mine] == [f"r{(cam, i - i % 2)}" for i in range(count)]


async def test_per_second_samples_by_the_clock_of_each_key() -> None:
    # (camera, index, timestamp): a at 10 fps, b at 4 fps, sampled at most 2 per second each
    frames = [("a", i, i * 0.1) for i in range(12)] + [("b", i, i * 0.25) for i in range(6)]
    frames.sort(key=lambda f: f[2])

    @af.block
    async def stamp(frame: tuple[str, int, float]) -> float:
        return frame[2]

    pipe = af.Pipeline(
        af.every(stamp, per_second=2, key=lambda f: f[0], clock=lambda f: f[2]), name="rate"
    )
    outputs = await pipe.run(frames)
    assert [h.item for h in outputs] == frames
    sampled = {(h.item[0], h.item[1]) for h in outputs if h.fresh}
    assert sampled == {("a", 0), ("a", 5), ("a", 10), ("b", 0), ("b", 2), ("b", 4)}
    for h in outputs:
        assert h.result == pytest.approx(h.item[2] - h.age_s)  # the age is by the same clock
        assert 0.0 <= h.age_s < 0.5
    assert pipe.statistics()["stamp"].received == 6


async def test_per_second_by_the_time_items_entered_spaces_the_samples() -> None:
    rate = 20.0  # one sample per 50 ms at most
    source = ScriptedSource(range(30), delay=0.01)
    pipe = af.Pipeline(af.every(lambda x: x, per_second=rate, name="paced"), name="wall")
    outputs = await pipe.run(source)
    assert [h.item for h in outputs] == list(range(30))
    fresh = [h.item for h in outputs if h.fresh]
    assert fresh[0] == 0
    assert 1 <= len(fresh) < 30  # 10 ms apart at least: never every item
    for h in outputs:
        assert h.result == h.item - h.age_items  # held from the latest sample before it
        assert 0.0 <= h.age_s < 1 / rate  # older than the period would have been sampled


async def test_the_wrapped_block_keeps_its_options_thread_executor_and_batches() -> None:
    sizes: list[int] = []
    lock = threading.Lock()

    @af.block(executor="thread", workers=2, batch=af.Batch(max_size=4, max_wait=0.01))
    def detect(frames: list[Item]) -> list[str]:
        with lock:
            sizes.append(len(frames))
        return [f"r{f}" for f in frames]

    frames = interleaved({"a": 20, "b": 20, "c": 20})
    pipe = af.Pipeline(af.every(detect, n=5, key=camera), name="batched")
    outputs = await pipe.run(frames)
    assert [(h.item, h.result) for h in outputs] == [
        (f, f"r{src}") for f, src, _ in expected(frames, 5)
    ]
    assert sum(sizes) == 12
    assert pipe.statistics()["detect"].received == 12


async def test_the_wrapped_block_may_run_in_worker_processes() -> None:
    whoami = af.block(executor="process", workers=2, name="whoami")(proc_targets.whoami)
    pipe = af.Pipeline(af.every(whoami, n=4, key=lambda x: hash(x) % 3), name="procs")
    outputs = await pipe.run(range(24))
    assert [h.item for h in outputs] == list(range(24))
    for i, h in enumerate(outputs):
        value, pid = h.result
        assert value == i - 3 * h.age_items  # the key's latest sample: 3 items apart
        assert pid != os.getpid()
    assert [h.item for h in outputs if h.fresh] == [0, 1, 2, 12, 13, 14]
    assert pipe.statistics()["whoami"].received == 6


# -- errors ---------------------------------------------------------------------------------------


@af.block
async def fragile(frame: Item) -> str:
    if frame[1] in (0, 4) and frame[0] == "a":
        msg = f"detector failed on {frame}"
        raise ValueError(msg)
    return f"r{frame}"


async def test_in_run_a_failing_sampled_item_fails_the_run_naming_the_block() -> None:
    pipe = af.Pipeline(af.every(fragile, n=2, key=camera), name="fails")
    with pytest.raises(ExceptionGroup) as info:
        await pipe.run(interleaved({"a": 6, "b": 6}))
    errors = info.value.exceptions
    assert all(isinstance(e, af.BlockError) for e in errors)
    assert [e.block for e in errors if isinstance(e, af.BlockError)] == ["fragile"]
    assert isinstance(errors[0].__cause__, ValueError)


def held(result: object) -> af.Held[Item, str]:
    assert isinstance(result, af.Held)
    return result


async def test_in_submit_a_failure_goes_to_its_caller_held_items_keep_the_previous_result() -> None:
    pipe = af.Pipeline(af.every(fragile, n=2, key=camera, name="hold"), name="svc")
    frames = interleaved({"a": 8, "b": 4})
    async with pipe.open() as running:
        results = await asyncio.gather(*(running.submit(f) for f in frames), return_exceptions=True)
        by_frame = dict(zip(frames, results, strict=True))
        statistics = running.statistics()

    # a0 (sampled) fails for its caller; a1, held behind it, has no result yet: dropped
    assert isinstance(by_frame[("a", 0)], af.BlockError)
    assert by_frame[("a", 0)].block == "fragile"
    dropped = by_frame[("a", 1)]
    assert isinstance(dropped, af.ItemDropped)
    assert (dropped.reason, dropped.block) == ("no_result", "hold")
    # the schedule goes on: a2 is sampled as due
    a2 = by_frame[("a", 2)]
    assert isinstance(a2, af.Held)
    assert (a2.result, a2.fresh) == ("r('a', 2)", True)
    # a4 fails; a5, held behind it, gets the previous result (of a2), three frames old
    assert isinstance(by_frame[("a", 4)], af.BlockError)
    a5 = by_frame[("a", 5)]
    assert isinstance(a5, af.Held)
    assert (a5.result, a5.age_items, a5.fresh) == ("r('a', 2)", 3, False)
    # then a6 is sampled as due, and a7 holds it; b never noticed
    a6, a7 = held(by_frame[("a", 6)]), held(by_frame[("a", 7)])
    assert [(r.result, r.age_items) for r in (a6, a7)] == [
        ("r('a', 6)", 0),
        ("r('a', 6)", 1),
    ]
    assert [held(by_frame[("b", i)]).result for i in range(4)] == [
        "r('b', 0)",
        "r('b', 0)",
        "r('b', 2)",
        "r('b', 2)",
    ]

    hold, inner = statistics["hold"], statistics["fragile"]
    assert inner.failed == 2
    assert inner.received == 4 + 2  # a0 a2 a4 a6, b0 b2
    assert (hold.failed, hold.dropped, hold.dropped_by) == (2, 1, {"no_result": 1})
    assert hold.emitted == len(frames) - 3
    assert books_balance(statistics)


async def test_a_skipped_sample_holds_the_previous_result_or_drops_and_counts_before_any() -> None:
    @af.block(on_error="skip")
    async def flaky(x: int) -> str:
        if x in (0, 6):
            msg = "no detections this time"
            raise RuntimeError(msg)
        return f"r{x}"

    pipe = af.Pipeline(af.every(flaky, n=3, name="hold"), name="skips")
    outputs = await pipe.run(range(10))
    # 0 (sampled, skipped) and 1, 2 have no result yet: dropped; 6 (sampled, skipped) and the
    # two behind it keep the result of 3; the schedule goes on: 9 is sampled as due
    assert [(h.item, h.result, h.age_items, h.fresh) for h in outputs] == [
        (3, "r3", 0, True),
        (4, "r3", 1, False),
        (5, "r3", 2, False),
        (6, "r3", 3, False),
        (7, "r3", 4, False),
        (8, "r3", 5, False),
        (9, "r9", 0, True),
    ]
    stats = pipe.statistics()
    assert (stats["flaky"].received, stats["flaky"].skipped) == (4, 2)
    assert stats["hold"].dropped_by == {"no_result": 3}
    assert (stats["hold"].received, stats["hold"].emitted) == (10, 7)
    assert books_balance(stats)


@af.block
async def twice_on_two(x: int) -> AsyncIterator[int]:
    yield x
    if x == 2:
        yield x


async def test_a_stage_making_two_outputs_for_a_sample_is_a_block_error_naming_every() -> None:
    pipe = af.Pipeline(af.every(twice_on_two, n=2, name="hold"), name="strict")
    with pytest.raises(ExceptionGroup) as info:
        await pipe.run(range(6))
    (error,) = info.value.exceptions
    assert isinstance(error, af.BlockError)
    assert error.block == "hold"
    assert "twice_on_two" in str(error)
    assert "2 outputs" in str(error)


async def test_a_failing_key_function_fails_that_item_naming_every() -> None:
    def key(x: int) -> int:
        if x == 3:
            msg = "no stream id"
            raise KeyError(msg)
        return x % 2

    pipe = af.Pipeline(af.every(lambda x: x, n=2, key=key, name="hold"), name="keys")
    with pytest.raises(ExceptionGroup) as info:
        await pipe.run(range(6))
    (error,) = info.value.exceptions
    assert isinstance(error, af.BlockError)
    assert error.block == "hold"
    assert isinstance(error.__cause__, KeyError)
    assert "key function" in str(error)

    async with pipe.open() as running:
        with pytest.raises(af.BlockError, match="key function"):
            await running.submit(3)
        assert (await running.submit(5)).result == 5

    def clock(x: int) -> float:
        if x == 2:
            msg = "no timestamp"
            raise ValueError(msg)
        return x / 10

    timed = af.every(lambda x: x, per_second=1, key=key, clock=clock, name="timed")
    with pytest.raises(ExceptionGroup) as info:
        await af.Pipeline(timed).run(range(3))
    (error,) = info.value.exceptions
    assert isinstance(error, af.BlockError)
    assert "its clock function raised ValueError: no timestamp" in str(error)


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({}, "exactly one of n="),
        ({"n": 2, "per_second": 5}, "exactly one of n="),
        ({"n": 0}, "'n' must be an int >= 1, got 0"),
        ({"n": True}, "'n' must be an int >= 1, got True"),
        ({"n": 2.5}, "'n' must be an int >= 1, got 2.5"),
        ({"per_second": 0}, "'per_second' must be a finite number > 0, got 0"),
        ({"per_second": float("inf")}, "'per_second' must be a finite number > 0, got inf"),
        ({"n": 2, "key": "stream"}, "'key' must be a callable"),
        ({"n": 2, "clock": 3.0}, "'clock' must be a callable"),
        ({"n": 2, "ordered": "yes"}, "'ordered' must be a bool"),
        ({"n": 2, "queue_size": 0}, "'queue_size' must be an int >= 1"),
    ],
)
def test_bad_options_are_graph_errors_naming_the_stage(
    options: dict[str, Any], needle: str
) -> None:
    with pytest.raises(af.GraphError, match="every\\(fragile\\)") as info:
        af.every(fragile, **options)
    assert needle in str(info.value)


def test_what_is_not_a_stage_is_a_graph_error() -> None:
    with pytest.raises(af.GraphError, match=r"the stage of af\.every\(\) is 42"):
        af.every(42, n=2)  # type: ignore[call-overload]


def test_name_defaults_from_the_stage_and_describe_shows_the_rate() -> None:
    ev = af.every(fragile, n=3, key=camera)
    assert ev.name == "every(fragile)"
    pipe = af.Pipeline(ev, name="p")
    assert list(pipe.statistics()) == ["every(fragile)", "fragile"]

    @af.block(name="fragile")
    async def show(held: af.Held[Item, str]) -> str:
        return held.result

    with pytest.raises(af.GraphError, match="two blocks are named 'fragile'"):
        af.Pipeline(af.every(fragile, n=2), show)


# -- bounds, cancellation, books ------------------------------------------------------------------


class Stuck(af.Block[Any, Any]):
    """A detector that blocks on its first item until released, and records its teardown."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.release = asyncio.Event()
        self.started = asyncio.Event()
        self.torn_down = 0

    async def process(self, item: Any) -> Any:
        self.started.set()
        await self.release.wait()
        return item

    async def teardown(self) -> None:
        self.torn_down += 1


def endless() -> Iterator[int]:
    yield from itertools.count()


async def test_a_stuck_stage_bounds_read_ahead_and_cancelling_leaves_nothing_behind() -> None:
    stuck = Stuck()
    taken = 0

    def counted() -> Iterator[int]:
        nonlocal taken
        for x in endless():
            taken += 1
            yield x

    pipe = af.Pipeline(af.every(stuck, n=10, name="hold"), name="bounded")
    before = asyncio.all_tasks()
    task = asyncio.create_task(pipe.run(counted()))
    await stuck.started.wait()
    for _ in range(200):  # let the source read as far as the bounds allow
        await asyncio.sleep(0)
    read_ahead = taken
    await asyncio.sleep(0.05)
    assert taken == read_ahead  # it stopped: the held items wait within bounds
    # its input edge (64), its window of outstanding items (the stage's 64 + 1 worker, + 1),
    # and the one item the source holds while it waits
    assert taken <= 64 + (64 + 1 + 1) + 1

    stats = pipe.statistics()
    assert books_balance(stats)
    assert stats["hold"].emitted == 0  # all wait for the first result (none is ever missing)

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert stuck.torn_down == 1
    assert {t for t in asyncio.all_tasks() if t not in before} == set()
    assert books_balance(pipe.statistics())


async def test_stream_left_early_cleans_up_and_the_books_balance() -> None:
    stuck = Stuck()
    stuck.release.set()
    pipe = af.Pipeline(af.every(stuck, n=3, name="hold"), name="early")
    before = asyncio.all_tasks()
    seen = []
    stream = pipe.stream(endless())
    async for held in stream:
        seen.append(held.item)
        if len(seen) == 25:
            break
    await stream.aclose()
    assert seen == list(range(25))
    assert stuck.torn_down == 1
    assert {t for t in asyncio.all_tasks() if t not in before} == set()
    assert books_balance(pipe.statistics())


@pytest.mark.parametrize("ordered", [True, False])
async def test_keys_that_end_leave_nothing_behind_in_a_long_run(ordered: bool) -> None:
    """Cameras that come and go for a long time (each ends with ``af.EndOfKey``) cost the stage
    no memory per camera gone: its per-key schedule, lane and result go with the marker."""
    cameras = 6000

    async def comings_and_goings() -> AsyncIterator[Any]:
        for i in range(cameras):
            yield (f"cam{i}", 0)
            yield (f"cam{i}", 1)
            yield af.EndOfKey(f"cam{i}")

    pipe = af.Pipeline(
        af.every(lambda item: item[1], n=2, key=camera, ordered=ordered, name="sampled"),
        name="churn",
    )
    traced: dict[int, int] = {}
    tracemalloc.start()
    try:
        seen = 0
        async for held in pipe.stream(comings_and_goings()):
            assert held.item[1] == 0 or held.age_items == 1
            seen += 1
            if seen in (2 * cameras // 10, 2 * cameras):
                gc.collect()
                traced[seen] = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert seen == 2 * cameras
    # 5400 cameras came and went between the two measures; a stand-in of ~700 bytes left for
    # each (a key's lane and schedule) would be 3.8 MB.
    grown = traced[2 * cameras] - traced[2 * cameras // 10]
    assert grown < 400_000, f"{grown} bytes more after 5400 more cameras came and went"
    assert books_balance(pipe.statistics())
    assert pipe.statistics()["sampled"].keys == 0


async def test_every_between_other_blocks_and_in_submit_mode() -> None:
    @af.block
    async def decode(x: int) -> Item:
        return ("ab"[x % 2], x // 2)

    @af.block
    async def detect(frame: Item) -> int:
        return frame[1] * 100

    @af.block
    async def draw(held: af.Held[Item, int]) -> str:
        return f"{held.item[0]}{held.item[1]}:{held.result}+{held.age_items}"

    pipe = decode >> af.every(detect, n=2, key=camera) >> draw
    outputs = await pipe.run(range(8))
    assert outputs == [
        "a0:0+0",
        "b0:0+0",
        "a1:0+1",
        "b1:0+1",
        "a2:200+0",
        "b2:200+0",
        "a3:200+1",
        "b3:200+1",
    ]
    async with pipe.open() as running:
        assert await running.submit(0) == "a0:0+0"
        assert await running.submit(2) == "a1:0+1"
        assert await running.submit(4) == "a2:200+0"
    assert books_balance(pipe.statistics())


@pytest.mark.parametrize("ordered", [True, False])
async def test_a_key_that_ends_starts_afresh_and_its_end_reaches_the_keyed_block_after(
    ordered: bool,
) -> None:
    """``af.EndOfKey`` (a removed camera) goes around the stage in its place: the key's held
    result is forgotten (a camera added again is sampled afresh, never given the old result),
    and a keyed block after the stage evicts the key behind its last frames."""
    calls: list[Item] = []

    @af.block
    async def detect(frame: Item) -> str:
        assert not isinstance(frame, af.EndOfKey)
        calls.append(frame)
        return f"boxes of {frame}"

    flushed: list[tuple[str, int]] = []

    class Track(af.Block):
        key = staticmethod(lambda held: held.item[0])

        def create_state(self, cam: Any) -> list[int]:
            return [0]

        async def process(self, held: af.Held[Item, str], state: list[int]) -> Any:
            state[0] += 1
            return (held.item, held.result)

        async def evict(self, cam: Any, state: list[int]) -> list[Any]:
            flushed.append((cam, state[0]))
            return [("end", cam, state[0])]

    items: list[Any] = [("a", 0), ("b", 0), ("a", 1), ("b", 1), ("a", 2)]
    items += [af.EndOfKey("a"), ("b", 2), ("a", 10), ("a", 11)]
    pipe = af.Pipeline(
        af.every(detect, n=5, key=camera, ordered=ordered, name="sampled"), Track(), name="cams"
    )
    out = await pipe.run(items)
    assert ("a", 10) in calls  # a's first frame after its end was sampled again
    results = {o[0]: o[1] for o in out if o[0] != "end"}
    assert results[("a", 11)] == "boxes of ('a', 10)"  # not the result of ('a', 0)
    assert results[("b", 2)] == "boxes of ('b', 0)"  # b was not touched
    a_end = out.index(("end", "a", 3))
    assert [o[0] for o in out[:a_end] if o[0] != "end" and o[0][0] == "a"] == [
        ("a", 0),
        ("a", 1),
        ("a", 2),
    ]
    assert sorted(flushed) == [("a", 2), ("a", 3), ("b", 3)]
    assert books_balance(pipe.statistics())
    assert pipe.statistics()["sampled"].received == 8
