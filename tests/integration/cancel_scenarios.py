"""Random pipelines cancelled at random moments, and the checks made after each.

Used by ``test_random_cancellation`` in the test process, and (for pipelines with process
blocks) in a child interpreter that the test can kill if a run hangs, so that a hang never takes
the test session with it. Process blocks use :class:`fault_targets.SlowLife` (a spawned worker
imports its class by name).
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import itertools
import multiprocessing
import os
import tempfile
import threading
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import uvloop
from fault_targets import SlowLife, ident
from hypothesis import strategies as st

import aioflow as af

#: Every run ends within this many seconds of its cancellation (a generous bound: the machine
#: running the suite is shared; a hang is what this catches, not slowness).
BOUND_S = 15.0

IN_PROCESS = (
    "async",
    "thread",
    "generator",
    "batch_async",
    "batch_thread",
    "keyed",
    "branch",
    "every",
    "life_async",
)
#: A block whose plain (sync) setup and teardown run in its thread pool.
THREAD_LIFE = ("life_thread",)
WITH_PROCESSES = ("process", "process_life")


@dataclass(frozen=True)
class BlockSpec:
    kind: str
    workers: int
    queue_size: int
    delay: float  # of a slow setup/teardown (life blocks), or per item


@dataclass(frozen=True)
class Scenario:
    blocks: tuple[BlockSpec, ...]
    mode: str  # "run", "stream" or "open"
    items: int | None  # None: an endless source
    moment: float | str  # seconds after the start, or "setup" / "teardown": while one runs
    use_uvloop: bool


def block_specs(kinds: tuple[str, ...]) -> st.SearchStrategy[BlockSpec]:
    return st.builds(
        BlockSpec,
        kind=st.sampled_from(kinds),
        workers=st.integers(1, 3),
        queue_size=st.integers(1, 8),
        delay=st.sampled_from((0.0, 0.0, 0.001, 0.005, 0.02)),
    )


def scenarios(kinds: tuple[str, ...], *, max_blocks: int = 4) -> st.SearchStrategy[Scenario]:
    return st.builds(
        Scenario,
        blocks=st.lists(block_specs(kinds), min_size=1, max_size=max_blocks).map(tuple),
        mode=st.sampled_from(("run", "stream", "open")),
        items=st.one_of(st.none(), st.integers(0, 300)),
        moment=st.one_of(
            st.floats(0.0, 0.03, allow_nan=False), st.sampled_from(("setup", "teardown"))
        ),
        use_uvloop=st.booleans(),
    )


def process_scenarios() -> st.SearchStrategy[Scenario]:
    """Pipelines with at least one process block among the others."""
    return scenarios(IN_PROCESS + THREAD_LIFE + WITH_PROCESSES, max_blocks=3).filter(
        lambda s: any(b.kind in WITH_PROCESSES for b in s.blocks)
    )


# -- building -------------------------------------------------------------------------------


@dataclass
class Record:
    """What the in-process life blocks did, by block: setups that finished, teardowns that
    began, teardowns that finished."""

    setups: Counter[str] = field(default_factory=Counter)
    teardowns_begun: Counter[str] = field(default_factory=Counter)
    teardowns: Counter[str] = field(default_factory=Counter)
    in_setup: asyncio.Event = field(default_factory=asyncio.Event)
    in_teardown: asyncio.Event = field(default_factory=asyncio.Event)


class AsyncLife(af.Block):
    """Slow async setup and teardown, recorded."""

    def __init__(self, record: Record, delay: float, **options: Any) -> None:
        super().__init__(**options)
        self.record = record
        self.delay = delay

    async def setup(self) -> None:
        self.record.in_setup.set()
        await asyncio.sleep(self.delay)
        self.record.setups[self.block_name] += 1

    async def process(self, item: Any) -> Any:
        await asyncio.sleep(0)
        return item

    async def teardown(self) -> None:
        self.record.in_teardown.set()
        self.record.teardowns_begun[self.block_name] += 1
        await asyncio.sleep(self.delay)
        self.record.teardowns[self.block_name] += 1


class ThreadLife(af.Block):
    """Slow setup and teardown in a thread (plain methods), recorded."""

    def __init__(
        self, record: Record, delay: float, loop: asyncio.AbstractEventLoop, **options: Any
    ) -> None:
        super().__init__(**options)
        self.record = record
        self.delay = delay
        self.loop = loop
        self.lock = threading.Lock()

    def setup(self) -> None:  # type: ignore[override]
        self.loop.call_soon_threadsafe(self.record.in_setup.set)
        threading.Event().wait(self.delay)
        with self.lock:
            self.record.setups[self.block_name] += 1

    def process(self, item: Any) -> Any:
        return item

    def teardown(self) -> None:  # type: ignore[override]
        self.loop.call_soon_threadsafe(self.record.in_teardown.set)
        with self.lock:
            self.record.teardowns_begun[self.block_name] += 1
        threading.Event().wait(self.delay)
        with self.lock:
            self.record.teardowns[self.block_name] += 1


def _sleepy(delay: float) -> Any:
    async def step(x: Any) -> Any:
        await asyncio.sleep(delay)
        return x

    return step


def build(
    scenario: Scenario, record: Record, folder: str, prefix: str
) -> tuple[af.Pipeline, list[str]]:
    """The pipeline of ``scenario``, and the names of its process blocks."""
    loop = asyncio.get_running_loop()
    stages: list[Any] = []
    process_names: list[str] = []
    for i, spec in enumerate(scenario.blocks):
        name = f"{prefix}{i}_{spec.kind}"
        opts: dict[str, Any] = {
            "name": name,
            "workers": spec.workers,
            "queue_size": spec.queue_size,
        }
        kind = spec.kind
        if kind == "async":
            stages.append(af.block(**opts)(_sleepy(spec.delay / 10)))
        elif kind == "thread":
            stages.append(af.block(executor="thread", **opts)(lambda x: x))
        elif kind == "generator":

            async def twice(x: Any) -> AsyncIterator[Any]:
                yield x
                await asyncio.sleep(0)
                yield x

            stages.append(af.block(**opts)(twice))
        elif kind == "batch_async":

            async def batch_async(xs: list[Any]) -> list[Any]:
                await asyncio.sleep(0)
                return xs

            stages.append(af.block(batch=af.Batch(max_size=4, max_wait=0.002), **opts)(batch_async))
        elif kind == "batch_thread":
            stages.append(
                af.block(executor="thread", batch=af.Batch(max_size=4, max_wait=0.002), **opts)(
                    list
                )
            )
        elif kind == "keyed":
            stages.append(af.block(key=lambda x: repr(x)[-1], **opts)(_sleepy(0)))
        elif kind == "branch":
            left = af.block(name=name + "_l")(_sleepy(0))
            right = af.block(executor="thread", name=name + "_r")(lambda x: x)
            stages.append(af.branch(left, right, name=name))
        elif kind == "every":
            inner = af.block(name=name + "_s", workers=spec.workers)(_sleepy(spec.delay / 10))
            stages.append(af.every(inner, n=3, key=lambda x: hash(repr(x)) % 2, name=name))
        elif kind == "life_async":
            stages.append(AsyncLife(record, spec.delay, **opts))
        elif kind == "life_thread":
            stages.append(ThreadLife(record, spec.delay, loop, executor="thread", **opts))
        elif kind == "process":
            stages.append(af.block(executor="process", **opts)(ident))
            process_names.append(name)
        elif kind == "process_life":
            opts["workers"] = min(spec.workers, 2)
            stages.append(SlowLife(folder, delay=spec.delay, executor="process", **opts))
            process_names.append(name)
        else:  # pragma: no cover - the strategies make only the kinds above
            msg = f"unknown kind {kind!r}"
            raise AssertionError(msg)
    return af.Pipeline(*stages, name=prefix), process_names


# -- running and checking -------------------------------------------------------------------


def source(scenario: Scenario) -> Iterator[int]:
    if scenario.items is None:
        return itertools.count()
    return iter(range(scenario.items))


async def drive(pipe: af.Pipeline, scenario: Scenario) -> None:
    if scenario.mode == "run":
        await pipe.run(source(scenario))
    elif scenario.mode == "stream":
        async with contextlib.aclosing(pipe.stream(source(scenario))) as outputs:
            async for _ in outputs:
                pass
    else:
        async with pipe.open() as running:
            sem = asyncio.Semaphore(8)

            async def one(x: int) -> None:
                try:
                    await running.submit(x)
                finally:
                    sem.release()

            async with asyncio.TaskGroup() as tg:
                for x in source(scenario):
                    await sem.acquire()  # at most 8 callers at once
                    tg.create_task(one(x))


async def cancel_and_check(scenario: Scenario) -> None:
    """Run ``scenario``, cancel it at its moment, and check that nothing is left behind."""
    # Block names start with the prefix, and so do the names of their shared-memory segments.
    prefix = f"{os.environ.get('CANCEL_SWEEP_PREFIX', 'rc')}{uuid.uuid4().hex[:6]}_"
    record = Record()
    threads = set(threading.enumerate())
    tasks = asyncio.all_tasks()
    with tempfile.TemporaryDirectory() as folder:
        pipe, _ = build(scenario, record, folder, prefix)
        task = asyncio.create_task(drive(pipe, scenario))
        moment = scenario.moment
        if isinstance(moment, float):
            await asyncio.wait([task], timeout=moment)
        else:
            event = record.in_setup if moment == "setup" else record.in_teardown
            waiter = asyncio.create_task(event.wait())
            # Cancel as soon as a (recorded) setup or teardown runs. Without such a block, or
            # when no teardown will come (an endless source), cancel after a moment.
            reachable = any(b.kind.startswith("life") for b in scenario.blocks) and (
                moment == "setup" or scenario.items is not None
            )
            await asyncio.wait(
                [task, waiter],
                timeout=BOUND_S if reachable else 0.01,
                return_when="FIRST_COMPLETED",
            )
            waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiter
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=BOUND_S)
        assert done, f"the run did not end within {BOUND_S} s of its cancellation: {scenario}"
        if not task.cancelled():
            task.result()  # it ended before the cancellation: then it must have succeeded

        left = {t for t in asyncio.all_tasks() if t not in tasks}
        assert left == set(), f"tasks left behind: {left}"
        extra = [t.name for t in threading.enumerate() if t not in threads and t.is_alive()]
        assert extra == [], f"threads left behind: {extra}"
        assert multiprocessing.active_children() == []
        assert glob.glob(f"/dev/shm/aioflow_{prefix}*") == []
        # Every setup that finished had exactly one teardown, which ran to its end, even when
        # the cancellation came while it ran.
        assert record.setups == record.teardowns, (record.setups, record.teardowns)
        assert record.teardowns_begun == record.teardowns, record
        for stats in pipe.statistics().values():
            assert stats.balanced, stats


def run_scenario(scenario: Scenario) -> None:
    """One scenario on a fresh event loop of the kind it names."""
    factory = uvloop.new_event_loop if scenario.use_uvloop else asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(cancel_and_check(scenario))
