"""af.run(): a script's entry point, and the mistakes it turns into a clear error."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import aioflow as af


@af.block
async def inc(x: int) -> int:
    return x + 1


def test_run_runs_a_pipeline_from_a_script() -> None:
    assert af.run(af.Pipeline(inc).run([1, 2])) == [2, 3]


async def test_run_inside_a_running_loop_says_await_instead() -> None:
    pipe = af.Pipeline(inc)
    with pytest.raises(af.GraphError) as info:
        af.run(pipe.run([1, 2]))  # closed unstarted: no "never awaited" warning (an error here)
    message = str(info.value)
    assert "inside a running event loop" in message
    assert "`await pipe.run(items)`" in message
    # The refused call left the pipeline untouched.
    assert await pipe.run([1, 2]) == [2, 3]


def test_run_given_a_coroutine_function_says_call_it() -> None:
    async def main() -> int:
        return 1

    bad: Any = main
    with pytest.raises(
        af.GraphError, match=r"call a coroutine function first: af\.run\(main\(\)\)"
    ):
        af.run(bad)


def test_run_works_again_after_a_refusal_and_leaves_no_loop_set() -> None:
    async def answer() -> int:
        await asyncio.sleep(0)
        return 42

    assert af.run(answer()) == 42
    with pytest.raises(RuntimeError):
        asyncio.get_running_loop()
