"""``af.branch(a, b, ...)``: fan-out to every member, fan-in to one tuple per input, in order."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
from conftest import books_balance

import aioflow as af

pytestmark = pytest.mark.integration


@af.block
async def inc(x: int) -> int:
    return x + 1


@af.block
def double(x: int) -> int:
    return 2 * x


@af.block
async def neg(x: int) -> int:
    return -x


async def test_branch_emits_one_tuple_per_input_in_argument_and_input_order() -> None:
    pipe = af.Pipeline(af.branch(inc, double, neg), name="fan")
    assert await pipe.run(range(50)) == [(x + 1, 2 * x, -x) for x in range(50)]


async def test_branch_keeps_order_with_members_of_different_speeds_and_workers() -> None:
    rng = random.Random(99)
    delays = [rng.choice((0.0, 0.0, 0.0005, 0.002)) for _ in range(200)]

    @af.block(workers=4)
    async def slow(x: int) -> int:
        await asyncio.sleep(delays[x])
        return x * 10

    @af.block(workers=3, ordered=False)
    async def jittery(x: int) -> str:
        await asyncio.sleep(delays[199 - x])
        return f"#{x}"

    @af.block(executor="thread", workers=2)
    def fast(x: int) -> int:
        return x

    pipe = af.Pipeline(af.branch(slow, jittery, fast), name="speeds")
    outputs = await pipe.run(range(200))
    assert outputs == [(x * 10, f"#{x}", x) for x in range(200)]


async def test_a_pipeline_can_be_a_branch_member() -> None:
    pipe = af.Pipeline(af.branch(inc >> double, neg), name="chained")
    assert await pipe.run(range(10)) == [(2 * (x + 1), -x) for x in range(10)]
    assert {"inc", "double", "neg"} <= set(pipe.statistics())


@af.block
async def odd_only(x: int) -> AsyncIterator[int]:
    if x % 2:
        yield x


@af.block
async def drop_all(x: int) -> AsyncIterator[int]:
    if x < 0:
        yield x


@af.block(on_error="skip")
async def skip_threes(x: int) -> int:
    if x % 3 == 0:
        msg = "multiple of three"
        raise ValueError(msg)
    return x


@pytest.mark.parametrize(
    ("member", "kept"),
    [
        (odd_only, lambda x: x % 2 == 1),
        (drop_all, lambda x: False),
        (skip_threes, lambda x: x % 3 != 0),
    ],
    ids=["filter-some", "filter-all", "skip"],
)
async def test_a_member_making_no_output_drops_the_tuple_and_counts_it(
    member: af.FunctionBlock[[int], object], kept: Callable[[int], bool]
) -> None:
    pipe = af.Pipeline(af.branch(inc, member, name="pair"), name="drops")
    outputs = await pipe.run(range(21))  # returns: the join never waits for the missing value

    expected_inputs = [x for x in range(21) if kept(x)]
    assert outputs == [(x + 1, x) for x in expected_inputs]
    stats = pipe.statistics()
    pair = stats["pair"]
    missing = 21 - len(expected_inputs)
    assert pair.received == 21
    assert pair.emitted == len(expected_inputs)
    assert pair.dropped == missing
    assert pair.dropped_by.get("incomplete", 0) == missing
    assert pair.in_flight == pair.queue_depth == 0
    assert books_balance(stats)


async def test_a_member_filter_in_submit_mode_raises_item_dropped_incomplete() -> None:
    pipe = af.Pipeline(af.branch(inc, odd_only, name="pair"), name="svc")
    async with pipe.open() as running:
        with pytest.raises(af.ItemDropped) as info:
            await running.submit(4)
        assert info.value.reason == "incomplete"
        assert info.value.block == "pair"
        assert await running.submit(5) == (6, 5)
        assert running.statistics()["pair"].dropped_by == {"incomplete": 1}


@af.block(executor="thread")
def twice_on_two(x: int) -> Iterator[int]:
    yield x
    if x == 2:
        yield x


@af.block
async def twice_on_two_async(x: int) -> AsyncIterator[int]:
    yield x
    if x == 2:
        await asyncio.sleep(0.001)  # the second output takes some work to make
        yield x


TWICE = pytest.mark.parametrize(
    "twice",
    [twice_on_two, twice_on_two_async],
    ids=["thread-generator", "async-generator"],
)


@TWICE
async def test_a_member_making_two_outputs_is_a_block_error_naming_branch_and_member(
    twice: af.FunctionBlock[[int], object],
) -> None:
    pipe = af.Pipeline(af.branch(inc, twice, name="pair"), name="strict")
    with pytest.raises(ExceptionGroup) as info:
        await pipe.run(range(5))
    errors = info.value.exceptions
    assert all(isinstance(e, af.BlockError) for e in errors)
    pair_errors = [e for e in errors if isinstance(e, af.BlockError) and e.block == "pair"]
    assert len(pair_errors) == 1
    assert twice.options.name in str(pair_errors[0])
    assert "2 outputs" in str(pair_errors[0])


@TWICE
async def test_a_member_making_two_outputs_fails_only_that_submit(
    twice: af.FunctionBlock[[int], object],
) -> None:
    pipe = af.Pipeline(af.branch(inc, twice, name="pair"), name="strict")
    async with pipe.open() as running:
        results = await asyncio.gather(
            *(running.submit(x) for x in range(5)), return_exceptions=True
        )
        error = results[2]
        assert isinstance(error, af.BlockError)
        assert not isinstance(error, BaseExceptionGroup)
        assert error.block == "pair"
        assert twice.options.name in str(error)
        assert [r for i, r in enumerate(results) if i != 2] == [(1, 0), (2, 1), (4, 3), (5, 4)]
        assert await running.submit(7) == (8, 7)


@af.block
async def fragile(x: int) -> int:
    if x == 3:
        msg = "bad frame"
        raise ValueError(msg)
    return x


async def test_a_failing_member_fails_run_with_a_group_naming_the_member() -> None:
    pipe = af.Pipeline(af.branch(inc, fragile, name="pair"), name="fails")
    with pytest.raises(ExceptionGroup) as info:
        await pipe.run(range(10))
    errors = info.value.exceptions
    assert all(isinstance(e, af.BlockError) for e in errors)
    mine = [e for e in errors if isinstance(e, af.BlockError) and e.block == "fragile"]
    assert len(mine) == 1
    assert isinstance(mine[0].__cause__, ValueError)
    assert "bad frame" in str(mine[0])


async def test_a_failing_member_in_submit_mode_fails_only_that_caller() -> None:
    pipe = af.Pipeline(af.branch(inc, fragile, name="pair"), name="svc")
    async with pipe.open() as running:
        results = await asyncio.gather(
            *(running.submit(x) for x in range(6)), return_exceptions=True
        )
        error = results[3]
        assert isinstance(error, af.BlockError)
        assert not isinstance(error, BaseExceptionGroup)
        assert error.block == "fragile"
        assert isinstance(error.__cause__, ValueError)
        assert [r for i, r in enumerate(results) if i != 3] == [(x + 1, x) for x in (0, 1, 2, 4, 5)]
        assert await running.submit(10) == (11, 10)
        assert not running.closed


async def test_nested_branches() -> None:
    inner = af.branch(double, neg, name="inner")
    pipe = af.Pipeline(af.branch(inc, inner, name="outer"), name="nested")
    assert await pipe.run(range(20)) == [(x + 1, (2 * x, -x)) for x in range(20)]
    stats = pipe.statistics()
    assert stats["outer"].emitted == stats["inner"].emitted == 20
    assert books_balance(stats)


async def test_branch_between_other_blocks() -> None:
    @af.block
    async def pre(x: int) -> int:
        return x + 1

    @af.block(workers=2)
    async def a(x: int) -> int:
        await asyncio.sleep(0)
        return x * 2

    @af.block(executor="thread")
    def b(x: int) -> int:
        return x * 3

    @af.block
    async def post(pair: tuple[int, int]) -> int:
        return pair[0] + pair[1]

    pipe = pre >> af.branch(a, b) >> post
    assert await pipe.run(range(30)) == [5 * (x + 1) for x in range(30)]
    stats = pipe.statistics()
    assert stats["pre"].emitted == stats["post"].received == stats["post"].emitted == 30
    assert books_balance(stats)

    async with pipe.open() as running:
        assert await running.submit(3) == 20


async def test_branch_member_names_are_unique_across_the_whole_pipeline() -> None:
    @af.block(name="inc")
    async def another_inc(x: int) -> int:
        return x + 1

    with pytest.raises(af.GraphError, match="inc"):
        af.Pipeline(inc, af.branch(another_inc, neg))
    with pytest.raises(af.GraphError, match="inc"):
        af.Pipeline(af.branch(inc, double), af.branch(neg, another_inc))
    with pytest.raises(af.GraphError, match="inc"):
        af.Pipeline(af.branch(inc, another_inc))
    with pytest.raises(af.GraphError, match="inc"):
        af.Pipeline(af.branch(neg, af.branch(double, inc)), another_inc)
    with pytest.raises(af.GraphError, match="inc"):
        af.Pipeline(inc, af.branch(inc, neg))  # the same block inside and outside
