"""Building pipelines: composition, flattening, and the GraphErrors raised before anything runs."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

import pytest

import aioflow as af
from aioflow.testing import Recorder, ScriptedSource


async def wait_until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(2.0):
        while not condition():
            await asyncio.sleep(0.001)


@af.block
async def inc(x: int) -> int:
    return x + 1


@af.block
def double(x: int) -> int:
    return 2 * x


@af.block
async def neg(x: int) -> int:
    return -x


# -- GraphErrors before anything runs ---------------------------------------------------------


def test_empty_pipeline_is_a_graph_error() -> None:
    with pytest.raises(af.GraphError, match="empty"):
        af.Pipeline(name="nothing")


def test_a_stage_that_is_not_a_block_or_callable_is_a_graph_error() -> None:
    with pytest.raises(af.GraphError) as info:
        af.Pipeline(inc, 42, name="demo")
    message = str(info.value)
    assert "42" in message
    assert "stage 2" in message
    assert "'demo'" in message
    assert "block" in message  # what was expected


def test_a_block_class_instead_of_an_instance_is_a_graph_error() -> None:
    class Tracker(af.Block):
        async def process(self, item: Any) -> Any:
            return item

    with pytest.raises(af.GraphError, match=r"Tracker\(\)"):
        af.Pipeline(inc, Tracker)


def test_duplicate_names_are_a_graph_error() -> None:
    other = neg.with_options(name="inc")
    with pytest.raises(af.GraphError, match="'inc'"):
        af.Pipeline(inc, other)


def test_duplicate_names_inside_a_branch_are_a_graph_error() -> None:
    other = neg.with_options(name="double")
    with pytest.raises(af.GraphError, match="'double'"):
        af.Pipeline(af.branch(double, other))


def test_a_branch_member_named_like_a_top_level_block_is_a_graph_error() -> None:
    other = neg.with_options(name="inc")
    with pytest.raises(af.GraphError, match="'inc'"):
        af.Pipeline(inc, af.branch(double, other))


def test_the_same_block_object_twice_is_a_graph_error() -> None:
    with pytest.raises(af.GraphError, match="'inc'"):
        af.Pipeline(inc, double, inc)
    with pytest.raises(af.GraphError, match="'inc'"):
        af.Pipeline(inc, af.branch(inc, double))


def test_a_block_instance_in_another_live_pipeline_is_a_graph_error() -> None:
    rec = Recorder(name="rec")
    first = af.Pipeline(rec, name="first")
    with pytest.raises(af.GraphError) as info:
        af.Pipeline(inc, rec, name="second")
    message = str(info.value)
    assert "'rec'" in message
    assert "'first'" in message

    # Once the first pipeline is gone, the instance is free again. (The traceback in `info`
    # holds a frame that refers to `first`: let it go too.)
    del first, info
    gc.collect()
    assert af.Pipeline(inc, rec, name="third").stages[1] is rec


def test_a_block_instance_inside_a_branch_belongs_to_one_pipeline() -> None:
    rec = Recorder(name="rec")
    keep = af.Pipeline(af.branch(rec, double), name="first")
    with pytest.raises(af.GraphError, match="'rec'"):
        af.Pipeline(af.branch(rec, double), name="second")
    assert keep.blocks()[0] is rec


def test_a_pipeline_that_fails_to_build_does_not_claim_its_blocks() -> None:
    rec = Recorder(name="rec")
    with pytest.raises(af.GraphError):
        af.Pipeline(rec, 42)
    with pytest.raises(af.GraphError):
        af.Pipeline(rec, inc, inc)
    assert af.Pipeline(rec).stages == (rec,)


def test_graph_errors_are_raised_before_any_block_runs() -> None:
    rec = Recorder(name="rec")
    with pytest.raises(af.GraphError):
        af.Pipeline(rec, inc, inc)
    assert rec.setup_calls == 0
    assert rec.items == []


def test_a_function_block_may_serve_in_several_pipelines() -> None:
    first = af.Pipeline(inc, double, name="first")
    second = af.Pipeline(inc, neg, name="second")
    assert first.stages[0] is second.stages[0] is inc


# -- composition ------------------------------------------------------------------------------


async def test_block_rshift_block_builds_a_pipeline() -> None:
    pipe = inc >> double
    assert isinstance(pipe, af.Pipeline)
    assert pipe.stages == (inc, double)
    assert await pipe.run(range(3)) == [2, 4, 6]


async def test_pipeline_rshift_block_flattens() -> None:
    pipe = inc >> double >> neg
    assert pipe.stages == (inc, double, neg)
    assert await pipe.run([1, 2]) == [-4, -6]


async def test_pipeline_rshift_pipeline_flattens() -> None:
    pipe = af.Pipeline(inc, name="head") >> af.Pipeline(double, neg)
    assert pipe.stages == (inc, double, neg)
    assert pipe.name == "head"
    assert await pipe.run([0]) == [-2]


async def test_nested_pipelines_in_the_constructor_flatten() -> None:
    pipe = af.Pipeline(af.Pipeline(inc, double), neg)
    assert pipe.stages == (inc, double, neg)
    assert await pipe.run([3]) == [-8]


async def test_callable_rshift_block_wraps_the_callable() -> None:
    def square(x: int) -> int:
        return x * x

    pipe = square >> inc
    assert isinstance(pipe, af.Pipeline)
    first = pipe.stages[0]
    assert isinstance(first, af.Block)
    assert first.options.name == "square"
    assert await pipe.run([2, 3]) == [5, 10]


async def test_block_rshift_callable_wraps_the_callable() -> None:
    pipe = inc >> (lambda x: x * 100)
    assert isinstance(pipe.stages[1], af.Block)
    assert await pipe.run([0, 1]) == [100, 200]


async def test_block_rshift_branch() -> None:
    pipe = inc >> af.branch(double, neg)
    assert len(pipe.stages) == 2
    assert isinstance(pipe.stages[1], af.Branch)
    inputs = [0, 1, 5]
    assert await pipe.run(inputs) == [(2 * (x + 1), -(x + 1)) for x in inputs]


async def test_branch_rshift_block() -> None:
    @af.block
    async def total(pair: tuple[int, int]) -> int:
        return sum(pair)

    pipe = af.branch(double, neg) >> total
    inputs = [1, 2, 3]
    assert await pipe.run(inputs) == [2 * x - x for x in inputs]


async def test_plain_callables_are_wrapped_in_blocks() -> None:
    async def add_one(x: int) -> int:
        return x + 1

    def times_three(x: int) -> int:
        return x * 3

    pipe = af.Pipeline(add_one, times_three)
    assert [type(s) for s in pipe.stages] == [af.FunctionBlock, af.FunctionBlock]
    assert [b.options.name for b in pipe.blocks()] == ["add_one", "times_three"]
    assert [b.options.executor for b in pipe.blocks()] == ["async", "thread"]
    assert await pipe.run([1, 2]) == [6, 9]


async def test_callable_objects_and_partials_are_wrapped_by_their_kind() -> None:
    class Scaler:
        def __init__(self, k: int) -> None:
            self.k = k

        async def __call__(self, x: int) -> int:
            return x * self.k

    def mul(x: int, k: int) -> int:
        return x * k

    pipe = af.Pipeline(Scaler(3), functools.partial(mul, k=5))
    first, second = pipe.blocks()
    assert first.options.executor == "async"
    assert second.options.executor == "thread"
    assert len({b.options.name for b in pipe.blocks()}) == 2
    assert await pipe.run([1, 2]) == [15, 30]


def test_an_empty_branch_is_a_graph_error() -> None:
    with pytest.raises(af.GraphError, match="at least one member"):
        af.branch()


def test_a_block_class_inside_a_branch_is_a_graph_error() -> None:
    class Tracker(af.Block):
        async def process(self, item: Any) -> Any:
            return item

    with pytest.raises(af.GraphError, match=r"Tracker\(\)"):
        af.branch(double, Tracker)


def test_a_bad_branch_queue_size_is_a_graph_error() -> None:
    with pytest.raises(af.GraphError, match=r"'both'.*queue_size") as info:
        af.branch(double, neg, name="both", queue_size=0)
    assert "0" in str(info.value)


def test_a_bad_pipeline_name_is_a_graph_error() -> None:
    with pytest.raises(af.GraphError, match="name"):
        af.Pipeline(inc, name="")


def test_blocks_lists_every_block_in_order_branches_included() -> None:
    rec = Recorder(name="rec")
    pipe = af.Pipeline(inc, af.branch(double, neg >> rec), name="demo")
    assert pipe.blocks() == [inc, double, neg, rec]


def test_describe_shows_every_stage_in_order() -> None:
    pipe = af.Pipeline(inc, af.branch(double, neg, name="both"), Recorder(name="rec"))
    text = pipe.describe()
    assert "\n" not in text
    positions = [text.index(name) for name in ("inc", "both", "double", "neg", "rec")]
    assert positions == sorted(positions)
    assert pipe.describe() in repr(pipe)


# -- runs -------------------------------------------------------------------------------------


async def test_a_second_concurrent_run_is_a_graph_error_pointing_to_open() -> None:
    gate = asyncio.Event()
    rec = Recorder(name="rec")
    pipe = af.Pipeline(rec, name="svc")
    first = asyncio.create_task(pipe.run(ScriptedSource(range(3), gate={1: gate})))
    await wait_until(lambda: rec.items == [0])

    with pytest.raises(af.GraphError, match=r"open\(\)") as info:
        await pipe.run([10])
    assert "'svc'" in str(info.value)
    with pytest.raises(af.GraphError, match=r"open\(\)"):
        async for _ in pipe.stream([10]):
            pass
    with pytest.raises(af.GraphError, match=r"open\(\)"):
        async with pipe.open():
            pass

    # The refused calls did not disturb the first run.
    gate.set()
    assert await first == [0, 1, 2]
    assert rec.items == [0, 1, 2]
    assert rec.setup_calls == 1


async def test_a_pipeline_runs_again_after_a_run_ends() -> None:
    rec = Recorder(name="rec")
    pipe = af.Pipeline(inc, rec)
    assert await pipe.run([1, 2]) == [2, 3]
    assert await pipe.run([5]) == [6]
    assert [x async for x in pipe.stream([7, 8])] == [8, 9]
    async with pipe.open() as running:
        assert await running.submit(9) == 10
    assert rec.setup_calls == rec.teardown_calls == 4


async def test_a_pipeline_runs_again_after_a_failed_run() -> None:
    @af.block
    async def picky(x: int) -> int:
        if x < 0:
            raise ValueError("negative")
        return x

    pipe = af.Pipeline(picky)
    with pytest.raises(ExceptionGroup):
        await pipe.run([1, -1, 2])
    assert await pipe.run([3, 4]) == [3, 4]


async def test_a_pipeline_runs_again_after_a_cancelled_run() -> None:
    gate = asyncio.Event()
    rec = Recorder(name="rec")
    pipe = af.Pipeline(rec)
    task = asyncio.create_task(pipe.run(ScriptedSource(range(3), gate={1: gate})))
    await wait_until(lambda: rec.items == [0])
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await pipe.run([5, 6]) == [5, 6]


async def test_a_function_block_may_run_in_two_pipelines_at_once() -> None:
    # A function block is stateless: two pipelines built from the same function (both accepted
    # when built, see test_a_function_block_may_serve_in_several_pipelines) must be able to run
    # at the same time, as two services would.
    gate = asyncio.Event()

    @af.block
    async def wait_gate(x: int) -> int:
        await gate.wait()
        return x

    first = af.Pipeline(wait_gate, inc, name="first")
    second = af.Pipeline(wait_gate, neg, name="second")
    running = asyncio.create_task(first.run([1, 2]))
    try:
        await asyncio.sleep(0.01)  # `first` is now running, its wait_gate waiting on the gate
        gate.set()
        assert await second.run([3]) == [-3]
    finally:
        gate.set()
        assert await running == [2, 3]


# -- items that run() and stream() refuse before anything runs -------------------------------


async def start(pipe: af.Pipeline, method: str, items: Any) -> None:
    if method == "run":
        await pipe.run(items)
    else:
        pipe.stream(items)  # refused when called, before any iteration


@pytest.mark.parametrize("method", ["run", "stream"])
@pytest.mark.parametrize("items", ["clip.mp4", b"clip.mp4"])
async def test_run_and_stream_refuse_str_and_bytes_naming_a_list_or_a_source(
    method: str, items: str | bytes
) -> None:
    pipe = af.Pipeline(inc, name="cv")
    with pytest.raises(af.GraphError) as info:
        await start(pipe, method, items)
    message = str(info.value)
    assert f"pipe.{method}([{items!r}])" in message
    assert f"aioflow.io.video.video_source({items!r})" in message
    assert pipe.statistics()["inc"].received == 0


@pytest.mark.parametrize("method", ["run", "stream"])
async def test_run_and_stream_refuse_a_non_iterable_naming_a_list(method: str) -> None:
    pipe = af.Pipeline(inc, name="cv")
    bad: Any = 5
    with pytest.raises(af.GraphError) as info:
        await start(pipe, method, bad)
    assert f"{method}() needs an iterable or async iterable of items, got 5 (int)" in str(
        info.value
    )
    assert f"pipe.{method}([item])" in str(info.value)


async def test_run_given_a_source_function_uncalled_says_call_it() -> None:
    async def source() -> AsyncIterator[int]:
        yield 1

    bad: Any = source
    with pytest.raises(af.GraphError, match=r"call it: pipe\.run\(source\(\)\)"):
        await af.Pipeline(inc).run(bad)
    assert await af.Pipeline(inc).run(source()) == [2]


@pytest.mark.parametrize("method", ["run", "stream"])
async def test_a_coroutine_as_items_says_await_it_and_is_closed(method: str) -> None:
    # A coroutine that returns a list is a common slip; the error says what to do, and the
    # coroutine is closed (pytest turns a "never awaited" RuntimeWarning into an error).
    async def load() -> list[int]:
        return [1, 2]

    coro = load()
    bad: Any = coro
    with pytest.raises(af.GraphError, match=rf"await it first, pipe\.{method}\(await source"):
        await start(af.Pipeline(inc), method, bad)
    assert coro.cr_frame is None  # closed: it will never run


async def test_a_second_run_while_a_stream_is_left_open_names_aclosing() -> None:
    pipe = af.Pipeline(inc, name="cv")
    outs = pipe.stream([1, 2, 3])
    async for _ in outs:
        break  # left without closing the generator: the run is still under way
    with pytest.raises(af.GraphError, match="already running") as info:
        await pipe.run([1])
    assert "contextlib.aclosing(pipe.stream(items))" in str(info.value)
    await outs.aclose()
    assert await pipe.run([1]) == [2]


async def test_plain_for_over_stream_says_async_for() -> None:
    pipe = af.Pipeline(inc, name="cv")
    stream: Any = pipe.stream([1, 2])
    with pytest.raises(TypeError) as info:
        for _ in stream:
            pass
    assert "async for out in pipe.stream(items)" in str(info.value)
    with pytest.raises(TypeError, match="async for"):
        list(stream)
    # The refused stream never started, and the same object still runs with async for.
    assert [x async for x in stream] == [2, 3]


async def test_stream_is_still_an_async_generator_with_aclose() -> None:
    pipe = af.Pipeline(inc)
    stream = pipe.stream(range(100))
    assert isinstance(stream, AsyncGenerator)
    async with contextlib.aclosing(stream) as outputs:
        async for out in outputs:
            assert out == 1
            break
    # Leaving early stopped the run: the pipeline is free to run again.
    assert await pipe.run([1]) == [2]
