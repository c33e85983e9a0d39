"""Property: any chain of blocks computes what a plain loop computes, and its books balance.

Hypothesis draws pipelines of 1-5 blocks (coroutines with tiny delays, thread functions, async
generator filters and flat-maps, blocks that fail on some values with ``on_error="skip"``) with
random ``workers``, ``ordered`` and ``queue_size``, and 0-60 integer inputs. Each example runs in
its own event loop (``af.run`` on uvloop or ``asyncio.run``), since hypothesis drives plain
functions.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import aioflow as af
from aioflow.testing import ScriptedSource

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KINDS = ("async", "thread", "filter", "flatmap", "skip_async", "skip_thread")


@dataclass(frozen=True)
class Spec:
    """One drawn block: what it computes and how it runs."""

    kind: str
    param: int  # 2..5: shapes the function (multiplier, modulus...)
    delay: float  # seconds to sleep on some items (0: never)
    workers: int
    ordered: bool
    queue_size: int


specs = st.builds(
    Spec,
    kind=st.sampled_from(KINDS),
    param=st.integers(2, 5),
    delay=st.sampled_from((0.0, 0.0, 0.001, 0.002)),
    workers=st.integers(1, 4),
    ordered=st.booleans(),
    queue_size=st.integers(1, 8),
)


def reference(spec: Spec, x: int) -> list[int]:
    """The outputs a block makes for ``x``, computed directly (a skip makes none)."""
    p = spec.param
    if spec.kind == "async":
        return [(x * p + 1) % 1009]
    if spec.kind == "thread":
        return [x + p]
    if spec.kind == "filter":
        return [x] if x % p else []
    if spec.kind == "flatmap":
        return [x * 3 + i for i in range(x % 3)]
    # skip_async / skip_thread: fail on some values, skipped
    return [] if x % p == 1 else [x + 1]


def sequential(blocks: list[Spec], inputs: list[int]) -> list[int]:
    values = list(inputs)
    for spec in blocks:
        values = [y for x in values for y in reference(spec, x)]
    return values


def slow_on(spec: Spec, x: int) -> bool:
    # Only some items wait, so that workers > 1 really finish out of input order.
    return bool(spec.delay) and x % 3 == spec.param % 3


def make_block(index: int, spec: Spec) -> af.FunctionBlock[Any, Any]:
    options: dict[str, Any] = {
        "name": f"b{index}_{spec.kind}",
        "workers": spec.workers,
        "ordered": spec.ordered,
        "queue_size": spec.queue_size,
    }
    if spec.kind.startswith("skip"):
        options["on_error"] = "skip"

    async def pause(x: int) -> None:
        if slow_on(spec, x):
            await asyncio.sleep(spec.delay)

    def outputs(x: int) -> list[int]:
        result = reference(spec, x)
        if spec.kind.startswith("skip") and not result:
            msg = f"scripted failure on {x}"
            raise ValueError(msg)
        return result

    if spec.kind in ("async", "skip_async"):

        async def coroutine_fn(x: int) -> int:
            await pause(x)
            return outputs(x)[0]

        return af.block(**options)(coroutine_fn)

    if spec.kind in ("thread", "skip_thread"):

        def thread_fn(x: int) -> int:
            if slow_on(spec, x):
                time.sleep(spec.delay)
            return outputs(x)[0]

        return af.block(**options)(thread_fn)

    async def generator_fn(x: int) -> AsyncIterator[int]:
        await pause(x)
        for i, y in enumerate(outputs(x)):
            if i:
                await asyncio.sleep(0)
            yield y

    return af.block(**options)(generator_fn)


async def run_pipeline(
    blocks: list[Spec], inputs: list[int], async_source: bool
) -> tuple[list[int], dict[str, af.BlockStatistics], list[str]]:
    made = [make_block(i, spec) for i, spec in enumerate(blocks)]
    pipe = af.Pipeline(*made, name="property")
    source: Iterator[int] | ScriptedSource = (
        ScriptedSource(inputs) if async_source else iter(inputs)
    )
    outputs = await pipe.run(source)
    return outputs, pipe.statistics(), [blk.options.name for blk in made]


@settings(max_examples=60, deadline=None)
@given(
    blocks=st.lists(specs, min_size=1, max_size=5),
    inputs=st.lists(st.integers(0, 500), max_size=60),
    use_uvloop=st.booleans(),
    async_source=st.booleans(),
)
def test_random_pipelines_compute_the_reference_and_balance_their_books(
    blocks: list[Spec], inputs: list[int], use_uvloop: bool, async_source: bool
) -> None:
    main = run_pipeline(blocks, inputs, async_source)
    outputs, stats, names = af.run(main) if use_uvloop else asyncio.run(main)

    expected = sequential(blocks, inputs)
    if all(spec.ordered for spec in blocks):
        assert outputs == expected
    else:
        assert Counter(outputs) == Counter(expected)

    assert list(stats) == names
    upstream_emitted = len(inputs)
    values = list(inputs)
    for spec, name in zip(blocks, names, strict=True):
        s = stats[name]
        made = [reference(spec, x) for x in values]
        values = [y for ys in made for y in ys]
        assert s.emitted == len(values), s
        if spec.kind.startswith("skip"):
            assert s.skipped == made.count([]), s
        assert s.received == (
            s.completed + s.dropped + s.skipped + s.failed + s.in_flight + s.queue_depth
        ), s
        assert s.in_flight == 0, s
        assert s.queue_depth == 0, s
        assert s.received == upstream_emitted, s
        upstream_emitted = s.emitted
    assert stats[names[-1]].emitted == len(outputs)
