"""Blocks with ``executor="process"`` inside real pipelines.

``test_processes.py`` checks the process pool on its own; here the pool runs where users meet it:
in ``run()``, ``open()``/``submit()``, with ``on_error``, ``dead_letter``, ``batch`` and
cancellation. Each check is something a user would notice: the outputs and their order, the PID
their code saw, the files their setup and teardown wrote, the error they caught, the statistics,
and whether any process or ``/dev/shm`` segment outlives the run. Worker code lives in
``proc_pipeline_targets`` (spawned workers import it by name). Nothing asserts on durations.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import secrets
from pathlib import Path
from typing import Any

import numpy as np
import proc_pipeline_targets as targets
import pytest

import aioflow as af

pytestmark = pytest.mark.integration


# -- helpers ----------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _quiet_aioflow_warnings(caplog: pytest.LogCaptureFixture) -> None:
    # Skips and dead letters are logged at WARNING; the tests read the statistics instead.
    caplog.set_level(logging.ERROR, logger="aioflow")


def unique(name: str) -> str:
    """A block name no other run shares, so that its processes and segments are only ours."""
    return f"{name}_{secrets.token_hex(3)}"


def children(block: str) -> list[multiprocessing.process.BaseProcess]:
    """This process's live worker processes of ``block`` (named ``aioflow[<block>]-N``)."""
    return [p for p in multiprocessing.active_children() if p.name.startswith(f"aioflow[{block}]")]


def segments(block: str) -> list[str]:
    """The shared-memory segments of ``block`` in ``/dev/shm``."""
    return sorted(p.name for p in Path("/dev/shm").glob(f"aioflow_{block}_*"))


def exists(pid: int) -> bool:
    """Whether a process with this PID exists (a zombie included)."""
    return Path(f"/proc/{pid}").exists()


def marker_files(folder: Path, prefix: str) -> dict[int, str]:
    """PID -> text of the files ``<prefix>-<pid>`` that worker processes left in ``folder``."""
    return {int(p.name.split("-")[1]): p.read_text() for p in folder.glob(f"{prefix}-*")}


async def wait_for_file(path: Path) -> None:
    while not os.path.exists(path):  # noqa: ASYNC240 - a local stat, polled
        await asyncio.sleep(0.01)


def killer(name: str, **options: Any) -> af.FunctionBlock[..., Any]:
    """A process block that kills its worker on the item ``KILL``."""
    return af.block(name=name, executor="process", **options)(targets.die_on_kill)


# -- where the work runs ----------------------------------------------------------------------


async def test_outputs_are_correct_and_in_order_and_computed_in_two_other_processes(
    tmp_path: Path,
) -> None:
    # The first two items meet at a barrier: it opens only if two worker processes run them at
    # the same time. The rest go through without waiting.
    items = [(0, str(tmp_path)), (1, str(tmp_path))] + [(n, None) for n in range(2, 20)]
    pipe = af.Pipeline(targets.square)  # decorated at module level: workers=2
    out = await pipe.run(items)

    assert [value for value, _ in out] == [n * n for n in range(20)]
    pids = {pid for _, pid in out}
    assert len(pids) == 2
    assert os.getpid() not in pids
    assert out[0][1] != out[1][1]  # the two calls at the barrier: two processes
    assert children("square") == []


async def test_a_block_sets_up_once_in_each_worker_never_here_and_tears_down_at_the_end(
    tmp_path: Path,
) -> None:
    probe = targets.SetupProbe(str(tmp_path), name="probe", executor="process", workers=2)
    out = await af.Pipeline(probe).run(range(12))

    assert [item for item, _, _ in out] == list(range(12))
    setups = marker_files(tmp_path, "setup")
    assert len(setups) == 2  # one process per worker slot
    assert all(text == "setup\n" for text in setups.values())  # once in each
    assert os.getpid() not in setups  # never in the parent
    assert not hasattr(probe, "setup_pid")  # the parent's instance was not set up either
    for _, pid, setup_pid in out:
        assert pid == setup_pid  # each item saw the setup of its own process
        assert pid in setups
    # teardown ran in each worker when the pool closed, before run() returned
    teardowns = marker_files(tmp_path, "teardown")
    assert teardowns.keys() == setups.keys()
    assert sum(int(count) for count in teardowns.values()) == 12


# -- a worker that dies -----------------------------------------------------------------------


async def test_a_killed_worker_fails_only_its_item_which_skip_drops_and_is_replaced() -> None:
    pipe = af.Pipeline(killer("skipper", on_error="skip"))
    items = [0, 1, 2, targets.KILL, 4, 5, 6]
    out = await pipe.run(items)

    assert [value for value, _ in out] == [0, 1, 2, 4, 5, 6]
    before = {pid for value, pid in out if value < 3}
    after = {pid for value, pid in out if value > 3}
    assert len(before) == 1
    assert len(after) == 1
    assert before != after  # the killed worker was replaced by a new process
    assert not exists(before.pop())
    rec = pipe.statistics()["skipper"]
    assert (rec.skipped, rec.failed, rec.completed) == (1, 0, 6)
    assert rec.balanced


async def test_a_killed_worker_under_raise_fails_the_run_with_executor_error_as_cause() -> None:
    pipe = af.Pipeline(killer("raiser"))
    with pytest.raises(ExceptionGroup) as info:
        await pipe.run([0, targets.KILL, 2])

    errors = info.value.exceptions
    assert len(errors) == 1
    err = errors[0]
    assert isinstance(err, af.BlockError)
    assert err.block == "raiser"
    assert err.item == repr(targets.KILL)
    assert isinstance(err.__cause__, af.ExecutorError)
    assert "SIGKILL" in str(err.__cause__)
    assert pipe.statistics()["raiser"].failed == 1
    assert children("raiser") == []


async def test_retry_runs_an_item_again_on_a_new_worker_after_a_kill(tmp_path: Path) -> None:
    marker = tmp_path / "killed"
    blk = af.block(name="retrier", executor="process", on_error=af.Retry(attempts=2, backoff=0))(
        targets.die_the_first_time
    )
    pipe = af.Pipeline(blk)
    out = await pipe.run([(str(marker), 7)])

    killed_pid = int(marker.read_text())
    assert len(out) == 1
    value, pid = out[0]
    assert value == 7
    assert pid != killed_pid
    assert not exists(killed_pid)
    rec = pipe.statistics()["retrier"]
    assert (rec.retried, rec.completed, rec.failed) == (1, 1, 0)


async def test_an_item_whose_worker_died_goes_to_the_dead_letter_sink() -> None:
    dead: list[tuple[Any, af.BlockError]] = []
    pipe = af.Pipeline(
        killer("lettered", dead_letter=lambda item, err: dead.append((item, err)), workers=2)
    )
    out = await pipe.run([0, targets.KILL, 2, 3])

    assert [value for value, _ in out] == [0, 2, 3]
    assert len(dead) == 1
    item, err = dead[0]
    assert item == targets.KILL
    assert err.block == "lettered"
    assert isinstance(err.__cause__, af.ExecutorError)
    rec = pipe.statistics()["lettered"]
    assert (rec.dead_letters, rec.skipped, rec.failed, rec.completed) == (1, 1, 0, 3)


async def test_in_submit_mode_only_the_caller_of_the_killed_item_gets_the_error() -> None:
    pipe = af.Pipeline(killer("served", workers=2))
    async with pipe.open() as running:
        answers = await asyncio.gather(
            *(running.submit(item) for item in (0, targets.KILL, 2, 3)),
            return_exceptions=True,
        )
        err = answers[1]
        assert isinstance(err, af.BlockError)  # bare, not in a group
        assert isinstance(err.__cause__, af.ExecutorError)
        assert [a[0] for a in answers if not isinstance(a, BaseException)] == [0, 2, 3]
        # still serving, on the replacement worker
        value, pid = await running.submit(4)
        assert value == 4
        assert pid != os.getpid()
        assert running.statistics()["served"].failed == 1
    assert children("served") == []


async def test_a_timeout_kills_a_hung_worker_and_only_its_item_fails() -> None:
    # The model takes 0.5 s to load, longer than the 0.25 s timeout of a call. The hung call is
    # killed at its deadline; the items after it wait for the replacement worker to load its
    # model. That wait is not their call's time (as with threads, whose clock starts when a
    # thread starts the call), so they must not time out.
    blk = targets.SlowStart(
        0.5, name="slow_start", executor="process", timeout=0.25, on_error="skip"
    )
    pipe = af.Pipeline(blk)
    out = await pipe.run(["a", "hang", "b", "c"])

    assert [value for value, _ in out] == ["a", "b", "c"]
    assert out[0][1] != out[1][1]  # the hung worker was killed and replaced
    rec = pipe.statistics()["slow_start"]
    assert (rec.skipped, rec.completed) == (1, 3)


# -- what crosses ----------------------------------------------------------------------------


async def test_full_hd_frames_round_trip_exactly() -> None:
    rng = np.random.default_rng(7)
    frames = [rng.integers(0, 256, size=(1080, 1920, 3), dtype=np.uint8) for _ in range(4)]
    originals = [f.copy() for f in frames]
    name = unique("frames")
    blk = af.block(name=name, executor="process", workers=2)(targets.frame_facts)
    out = await af.Pipeline(blk).run({"id": i, "frame": f} for i, f in enumerate(frames))

    assert [o["id"] for o in out] == [0, 1, 2, 3]
    for o, frame in zip(out, originals, strict=True):
        assert o["pid"] != os.getpid()
        for key, expected in (("frame", frame), ("inverted", 255 - frame)):
            got = o[key]
            assert got.dtype == np.uint8
            assert got.shape == (1080, 1920, 3)
            assert np.array_equal(got, expected)
        assert o["sum"] == int(frame.sum(dtype=np.uint64))
    for frame, original in zip(frames, originals, strict=True):
        assert np.array_equal(frame, original)  # the caller's frames are untouched
    assert segments(name) == []


async def test_a_process_block_takes_batches() -> None:
    blk = af.block(name="batched", executor="process", batch=af.Batch(max_size=4, max_wait=0))(
        targets.squares_of_batch
    )
    pipe = af.Pipeline(blk)
    # The 12 items are all queued while the worker process starts, so every batch is full.
    out = await pipe.run(range(12))

    assert [square for square, _, _ in out] == [n * n for n in range(12)]
    assert {size for _, size, _ in out} == {4}
    assert os.getpid() not in {pid for _, _, pid in out}
    rec = pipe.statistics()["batched"]
    assert rec.batches == 3
    assert rec.batch_sizes == {4: 3}
    assert rec.completed == 12


@pytest.mark.parametrize("workers", [1, 2])
async def test_zero_copy_frames_reach_the_next_blocks_read_only_and_intact(workers: int) -> None:
    rng = np.random.default_rng(8)
    frames = [rng.integers(0, 256, size=(1080, 1920, 3), dtype=np.uint8) for _ in range(8)]
    name = unique("lend")
    blk = af.block(name=name, executor="process", workers=workers, zero_copy=True)(
        targets.frame_facts
    )

    @af.block(name="checksum")
    def checksum(out: dict[str, Any]) -> dict[str, Any]:  # a thread, as users write them
        return {**out, "seen": int(out["inverted"].sum(dtype=np.uint64))}

    out = await af.Pipeline(blk, checksum).run({"id": i, "frame": f} for i, f in enumerate(frames))

    assert [o["id"] for o in out] == list(range(8))
    for o, frame in zip(out, frames, strict=True):  # all held at once: none overwritten
        assert np.array_equal(o["frame"], frame)
        assert np.array_equal(o["inverted"], 255 - frame)
        assert o["seen"] == int((255 - frame).sum(dtype=np.uint64))
        assert not o["frame"].flags.writeable
        assert not o["inverted"].flags.writeable
    assert segments(name) == []


async def test_writing_to_a_zero_copy_result_fails_the_block_that_writes_with_a_clear_error() -> (
    None
):
    name = unique("lend")
    blk = af.block(name=name, executor="process", zero_copy=True)(targets.frame_facts)

    @af.block(name="annotate")
    def annotate(out: dict[str, Any]) -> dict[str, Any]:
        out["frame"][:10, :10] = 0  # drawing on a lent frame: it must be copied first
        return out

    frame = np.ones((480, 640, 3), dtype=np.uint8)
    with pytest.raises(ExceptionGroup) as info:
        await af.Pipeline(blk, annotate).run([{"id": 0, "frame": frame}])
    err = info.value.exceptions[0]
    assert isinstance(err, af.BlockError)
    assert "annotate" in str(err)
    assert isinstance(err.__cause__, ValueError)
    assert "read-only" in str(err.__cause__)
    assert segments(name) == []


# -- cancellation ----------------------------------------------------------------------------


async def test_cancelling_a_run_leaves_no_worker_process_and_no_segment(tmp_path: Path) -> None:
    name = unique("hang")
    frame = np.zeros((512, 512, 3), dtype=np.uint8)  # large enough to travel in a segment
    markers = [tmp_path / "first", tmp_path / "second"]
    items = [{"frame": frame, "marker": str(m)} for m in markers]
    items += [{"frame": frame, "marker": None} for _ in range(10)]
    blk = af.block(name=name, executor="process", workers=2)(targets.hang_with_frame)
    task = asyncio.create_task(af.Pipeline(blk).run(items))

    for marker in markers:  # both workers are stuck in a call
        await wait_for_file(marker)
    pids = [int(m.read_text()) for m in markers]
    assert sorted(p.pid for p in children(name)) == sorted(pids)
    assert segments(name) != []

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert children(name) == []
    assert multiprocessing.active_children() == []
    assert [pid for pid in pids if exists(pid)] == []  # killed and reaped, not even zombies
    assert segments(name) == []


# -- what is refused before anything runs ------------------------------------------------------


def test_a_lambda_is_a_graph_error_naming_the_block_when_the_pipeline_is_built() -> None:
    scale = af.block(name="scale", executor="process")(lambda x: 2 * x)
    with pytest.raises(af.GraphError) as info:
        af.Pipeline(scale)
    message = str(info.value)
    assert message.startswith("block 'scale': executor='process' needs a module-level function")
    # What was found: the user wrote a lambda, not "a FunctionBlock instance".
    assert "found a lambda" in message
    assert children("scale") == []


def test_a_closure_is_a_graph_error_naming_the_block_when_the_pipeline_is_built() -> None:
    def local(x: int) -> int:
        return x

    closure = af.block(executor="process")(local)
    with pytest.raises(af.GraphError) as info:
        af.Pipeline(closure)
    message = str(info.value)
    assert message.startswith("block 'local': executor='process' needs a module-level function")
    assert "defined inside another function" in message
    assert children("local") == []


def test_key_with_a_process_executor_is_a_graph_error(tmp_path: Path) -> None:
    with pytest.raises(af.GraphError, match=r"block 'die_on_kill'.*key=.*executor='process'"):
        af.block(executor="process", key=str)(targets.die_on_kill)
    with pytest.raises(af.GraphError, match=r"block 'keyed_probe'.*key=.*executor='process'"):
        targets.SetupProbe(str(tmp_path), name="keyed_probe", executor="process", key=str)


def test_zero_copy_without_a_process_executor_is_a_graph_error() -> None:
    with pytest.raises(af.GraphError, match=r"block 'frame_facts': option 'zero_copy' needs "):
        af.block(zero_copy=True)(targets.frame_facts)
    with pytest.raises(af.GraphError, match=r"zero_copy.*found executor='thread'"):
        af.block(executor="thread", zero_copy=True)(targets.frame_facts)
    with pytest.raises(af.GraphError, match=r"option 'zero_copy' must be True or False"):
        af.block(executor="process", zero_copy=1)(targets.frame_facts)
    with pytest.raises(af.GraphError, match=r"did you mean zero_copy=True"):
        af.block(executor="process", zerocopy=True)(targets.frame_facts)
