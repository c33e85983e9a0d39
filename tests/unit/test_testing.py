"""The test doubles users get in ``aioflow.testing``, used in real pipelines."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable

import pytest

import aioflow as af
from aioflow.testing import Recorder, ScriptedSource


async def wait_until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(2.0):
        while not condition():
            await asyncio.sleep(0.001)


class Stamp(af.Block):
    """Records when each item reached it (loop time)."""

    def __init__(self) -> None:
        super().__init__(name="stamp")
        self.times: list[float] = []

    async def process(self, item: object) -> object:
        self.times.append(asyncio.get_running_loop().time())
        return item


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


# -- ScriptedSource ---------------------------------------------------------------------------


async def test_scripted_source_yields_its_items_through_a_pipeline() -> None:
    src = ScriptedSource(["a", "b", "c"])
    assert await af.Pipeline(Recorder()).run(src) == ["a", "b", "c"]
    assert src.yielded == 3
    assert src.finished


async def test_scripted_source_counts_across_iterations() -> None:
    src = ScriptedSource(range(4))
    pipe = af.Pipeline(Recorder())
    assert await pipe.run(src) == [0, 1, 2, 3]
    assert await pipe.run(src) == [0, 1, 2, 3]
    assert src.yielded == 8
    assert src.finished


async def test_scripted_source_delay_paces_every_item() -> None:
    stamp = Stamp()
    src = ScriptedSource(range(4), delay=0.03)
    assert await af.Pipeline(stamp).run(src) == [0, 1, 2, 3]
    # Timers may fire up to a millisecond early on some loops.
    assert all(gap >= 0.025 for gap in gaps(stamp.times)), gaps(stamp.times)


async def test_scripted_source_pauses_before_the_given_item() -> None:
    stamp = Stamp()
    src = ScriptedSource(range(4), pauses={2: 0.1})
    assert await af.Pipeline(stamp).run(src) == [0, 1, 2, 3]
    between = gaps(stamp.times)
    assert between[1] >= 0.09  # item 1 -> item 2
    assert between[1] == max(between)


async def test_scripted_source_fail_at_raises_the_error_instead_of_the_item() -> None:
    error = OSError("camera unplugged")
    src = ScriptedSource(range(10), fail_at=4, error=error)
    rec = Recorder()
    with pytest.raises(ExceptionGroup) as info:
        await af.Pipeline(rec).run(src)
    errors = info.value.exceptions
    assert len(errors) == 1
    err = errors[0]
    assert isinstance(err, af.BlockError)
    assert err.phase == "source"
    assert err.__cause__ is error
    assert src.yielded == 4
    assert not src.finished
    assert rec.items == list(range(len(rec.items)))  # whatever got through came in order
    assert len(rec.items) <= 4
    assert rec.setup_calls == rec.teardown_calls == 1


async def test_scripted_source_fail_at_without_an_error_raises_runtime_error() -> None:
    src = ScriptedSource(range(3), fail_at=0)
    with pytest.raises(ExceptionGroup) as info:
        await af.Pipeline(Recorder()).run(src)
    cause = info.value.exceptions[0].__cause__
    assert isinstance(cause, RuntimeError)
    assert src.yielded == 0


async def test_scripted_source_gate_holds_an_item_until_the_event_is_set() -> None:
    gate = asyncio.Event()
    src = ScriptedSource(range(6), gate={3: gate})
    rec = Recorder()
    got: list[int] = []
    async with contextlib.aclosing(af.Pipeline(rec).stream(src)) as outputs:
        async for out in outputs:
            got.append(out)
            if len(got) == 3:
                await asyncio.sleep(0.02)  # plenty of time for the source, were it free
                assert src.yielded == 3
                assert rec.items == [0, 1, 2]
                gate.set()
    assert got == list(range(6))
    assert src.finished


# -- Recorder ---------------------------------------------------------------------------------


async def test_recorder_passes_items_through_and_records_them() -> None:
    rec = Recorder()
    assert rec.options.name == "recorder"
    assert await af.Pipeline(rec).run(["x", "y", "z"]) == ["x", "y", "z"]
    assert rec.items == ["x", "y", "z"]
    assert rec.setup_calls == 1
    assert rec.teardown_calls == 1
    assert rec.active == 0


async def test_recorder_counts_setup_and_teardown_per_run() -> None:
    rec = Recorder()
    pipe = af.Pipeline(rec)
    await pipe.run([1])
    await pipe.run([2])
    assert rec.setup_calls == rec.teardown_calls == 2
    assert rec.items == [1, 2]


async def test_recorder_runs_setup_before_the_first_submit() -> None:
    rec = Recorder()
    async with af.Pipeline(rec).open() as running:
        assert rec.setup_calls == 1
        assert rec.teardown_calls == 0
        assert await running.submit(5) == 5
    assert rec.teardown_calls == 1


async def test_recorder_tears_down_after_a_downstream_failure() -> None:
    @af.block
    async def explode(x: int) -> int:
        raise ValueError(f"no {x}")

    rec = Recorder()
    with pytest.raises(ExceptionGroup):
        await af.Pipeline(rec, explode).run(range(3))
    assert rec.setup_calls == rec.teardown_calls == 1


async def test_recorder_tears_down_after_cancellation() -> None:
    rec = Recorder(delay=10)
    task = asyncio.create_task(af.Pipeline(rec).run([1, 2]))
    await wait_until(lambda: rec.active == 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert rec.setup_calls == rec.teardown_calls == 1
    assert rec.items == []
    assert rec.active == 0


async def test_recorder_max_active_reaches_its_workers() -> None:
    rec = Recorder(workers=3, delay=0.02)
    items = list(range(6))
    assert await af.Pipeline(rec).run(items) == items
    assert rec.max_active == 3
    assert sorted(rec.items) == items


async def test_recorder_with_one_worker_processes_one_at_a_time() -> None:
    rec = Recorder(delay=0.005)
    items = list(range(5))
    assert await af.Pipeline(rec).run(items) == items
    assert rec.max_active == 1
    assert rec.items == items


async def test_two_named_recorders_see_the_same_stream() -> None:
    first = Recorder(name="first")
    second = Recorder(name="second")
    src = ScriptedSource(range(5), delay=0.001)
    assert await af.Pipeline(first, second).run(src) == list(range(5))
    assert first.items == second.items == list(range(5))
