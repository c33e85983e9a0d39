"""Process pools with real worker processes: where code runs, what crosses, what dies, what stays.

Every check is something a user of ``executor="process"`` would notice: the PID their code saw,
the arrays they got back, the exception they caught, the files their teardown wrote, and whether
any process or ``/dev/shm`` segment outlives the pool. Worker code lives in ``proc_targets``
(spawned workers import it by name). Nothing here asserts on durations; where two calls must
overlap, a file barrier proves it.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
import proc_targets
import pytest

import aioflow as af
from aioflow._engine.processes import ProcessPool

pytestmark = pytest.mark.integration

START_METHODS = ["spawn", "forkserver"]


# -- helpers ----------------------------------------------------------------------------------


def segments(block: str) -> list[str]:
    """This block's shared-memory segments, as ``/dev/shm`` lists them."""
    return sorted(p.name for p in Path("/dev/shm").glob(f"aioflow_{block}_*"))


def exists(pid: int) -> bool:
    """Whether any process (a zombie included) has this PID."""
    return Path(f"/proc/{pid}").exists()


def pool_children(block: str) -> list[str]:
    return [
        p.name for p in multiprocessing.active_children() if p.name.startswith(f"aioflow[{block}]")
    ]


def spawned_children() -> list[int]:
    """PIDs of this process's children started by spawn, read from /proc (the resource
    tracker and the forkserver run other code and do not count)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:  # exited meanwhile
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == os.getpid() and b"spawn_main" in cmdline:
            found.append(int(entry.name))
    return found


def assert_gone(block: str, pids: list[int]) -> None:
    """No process of this pool remains (not even a zombie), and no segment."""
    assert pool_children(block) == []
    assert [pid for pid in pids if exists(pid)] == []
    assert spawned_children() == []
    assert segments(block) == []


async def wait_for_file(path: Path) -> None:
    while not os.path.exists(path):  # noqa: ASYNC240 - a local stat, polled
        await asyncio.sleep(0.01)


def teardown_files(folder: Path) -> dict[int, int]:
    """PID -> items processed, from the files the Recorder's teardown writes."""
    return {int(p.name.split("-")[1]): int(p.read_text()) for p in folder.glob("teardown-*")}


def same(a: Any, b: Any) -> bool:
    """Deep equality, arrays compared by dtype, shape and contents."""
    if isinstance(a, np.ndarray):
        return (
            isinstance(b, np.ndarray)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and np.array_equal(a, b)
        )
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return (
            type(a) is type(b)
            and len(a) == len(b)
            and all(same(x, y) for x, y in zip(a, b, strict=True))
        )
    if isinstance(a, proc_targets.Detection):
        return isinstance(b, proc_targets.Detection) and same(vars(a), vars(b))
    return bool(a == b)


@pytest.fixture
async def open_pool() -> AsyncIterator[Callable[..., Any]]:
    """Start pools for a test and close them however it ends."""
    pools: list[ProcessPool] = []

    async def make(*args: Any, **kwargs: Any) -> ProcessPool:
        pool = ProcessPool(*args, **kwargs)
        pools.append(pool)
        await pool.start()
        return pool

    yield make
    for pool in pools:
        await pool.close()


# -- where code runs --------------------------------------------------------------------------


@pytest.mark.parametrize("start_method", START_METHODS)
async def test_a_function_runs_in_another_process(
    open_pool: Callable[..., Any], start_method: str
) -> None:
    pool = await open_pool("who", 1, proc_targets.whoami, "function", start_method=start_method)
    value, pid = await pool.call("x")
    assert value == "x"
    assert pid != os.getpid()
    await pool.close()
    assert_gone("who", [pid])


async def test_calls_queue_for_a_busy_worker_and_all_complete(
    open_pool: Callable[..., Any],
) -> None:
    pool = await open_pool("queue", 1, proc_targets.whoami, "function")
    results = await asyncio.gather(*(pool.call(i) for i in range(8)))
    assert [value for value, _ in results] == list(range(8))
    assert len({pid for _, pid in results}) == 1


async def test_two_workers_run_two_calls_at_once(
    open_pool: Callable[..., Any], tmp_path: Path
) -> None:
    pool = await open_pool("pair", 2, proc_targets.rendezvous, "function")
    # Each call waits in its worker until both have arrived: they can only both return if
    # they ran at the same time, in two processes.
    pids = await asyncio.gather(pool.call((str(tmp_path), 2)), pool.call((str(tmp_path), 2)))
    assert len(set(pids)) == 2
    assert os.getpid() not in pids


async def test_block_setup_runs_once_in_each_worker_and_teardown_at_close(
    tmp_path: Path,
) -> None:
    block = proc_targets.Recorder(str(tmp_path), workers=2)
    pool = ProcessPool("recorder", 2, block, "coroutine")
    await pool.start()
    try:
        outputs: list[Any] = await asyncio.gather(*(pool.call(i) for i in range(6)))
    finally:
        await pool.close()
    assert [out["item"] for out in outputs] == list(range(6))
    for out in outputs:
        assert out["setup_pids"] == [out["pid"]]  # setup ran once, in this very process
        assert out["pid"] != os.getpid()
    assert block.setup_pids == []  # never in the parent
    teardowns = teardown_files(tmp_path)
    assert len(teardowns) == 2  # each worker tore down at close
    assert {out["pid"] for out in outputs} <= set(teardowns)
    assert sum(teardowns.values()) == 6
    assert_gone("recorder", list(teardowns))


@pytest.mark.parametrize(
    ("target", "kind", "value", "expected"),
    [
        (proc_targets.count_up, "generator", 3, [0, 1, 2]),
        (proc_targets.Splitter(), "asyncgen", "abc", ["a", "b", "c"]),
        (proc_targets.Doubler(), "function", 21, 42),
        (proc_targets.decorated, "function", 7, 7),
        (proc_targets.decorated.fn, "function", 8, 8),
    ],
    ids=["generator", "asyncgen-block", "sync-block", "decorated-block", "decorated-fn"],
)
async def test_every_kind_of_target_runs(
    open_pool: Callable[..., Any], target: object, kind: str, value: object, expected: object
) -> None:
    pool = await open_pool("kinds", 1, target, kind)
    out = await pool.call(value)
    if isinstance(out, tuple):  # decorated: (x, pid)
        out, pid = out
        assert pid != os.getpid()
    assert out == expected


# -- what crosses -----------------------------------------------------------------------------


async def test_arrays_in_nested_values_round_trip_through_shared_memory(
    open_pool: Callable[..., Any],
) -> None:
    rng = np.random.default_rng(7)
    frame = rng.integers(0, 256, (1080, 1920, 3), dtype=np.uint8)
    value = {
        "frame": frame,
        "depth": rng.random((480, 640), dtype=np.float32),
        "fortran": np.asfortranarray(rng.random((300, 200))),
        "strided": frame[::2, ::3, 0],  # not contiguous: travels inside the pickle
        "small": np.arange(5, dtype=np.int16),
        "scalar": np.float64(2.5),
        "nested": [
            (np.zeros((0, 3), dtype=np.uint8), "label"),
            {"ids": np.arange(100_000, dtype=np.int64)},
        ],
        "detection": proc_targets.Detection(
            "car", np.array([1.0, 2.0, 3.0, 4.0]), rng.integers(0, 2, (256, 256), dtype=np.bool_)
        ),
    }
    pool = await open_pool("arrays", 1, proc_targets.echo, "function")
    assert segments("arrays") == []  # made when a payload first needs them
    first = await pool.call(value)
    assert same(first, value)
    names = segments("arrays")
    assert len(names) == 2  # one request and one response segment for the one worker
    other = {"frame": frame ^ 0xFF}
    second = await pool.call(other)
    assert same(second, other)
    # The first result is the caller's own: the reused segment did not change it.
    assert same(first, value)
    first["frame"][0, 0, 0] ^= 1  # and it is writable
    await pool.close()
    assert segments("arrays") == []


async def test_a_frame_through_the_worker_comes_back_computed(
    open_pool: Callable[..., Any],
) -> None:
    pool = await open_pool("xor", 1, proc_targets.xor_frame, "function")
    frames = [np.full((1080, 1920, 3), i, dtype=np.uint8) for i in range(3)]
    for frame in frames:
        out = await pool.call(frame)
        assert out.shape == frame.shape
        assert out.dtype == np.uint8
        assert np.array_equal(out, frame ^ 1)


async def test_a_result_larger_than_the_segments_comes_back(
    open_pool: Callable[..., Any],
) -> None:
    pool = await open_pool("grows", 1, proc_targets.make_frame, "function")
    for seed in (1, 2, 3):  # the first one does not fit anywhere; later ones use the segment
        out = await pool.call(seed)
        assert out.shape == (1080, 1920, 3)
        assert (out == seed).all()
    assert len(segments("grows")) == 1  # a response segment, sized by the first result
    await pool.close()
    assert segments("grows") == []


async def test_a_payload_larger_than_the_segments_then_smaller_again_comes_back(
    open_pool: Callable[..., Any],
) -> None:
    pool = await open_pool("resize", 1, proc_targets.xor_frame, "function")
    rng = np.random.default_rng(3)
    shapes = [(480, 640, 3), (1080, 1920, 3), (240, 320, 3), (1080, 1920, 3), (1, 1, 3)]
    for shape in shapes:
        frame = rng.integers(0, 256, shape, dtype=np.uint8)
        out = await pool.call(frame)
        assert out.shape == shape
        assert np.array_equal(out, frame ^ 1)
    # Grown once to the largest payload, then reused: one request and one response segment.
    assert len(segments("resize")) == 2


async def test_non_contiguous_arrays_arrive_intact_and_come_back_contiguous(
    open_pool: Callable[..., Any],
) -> None:
    rng = np.random.default_rng(5)
    frame = rng.integers(0, 256, (1080, 1920, 3), dtype=np.uint8)
    floats = rng.random((600, 800))
    arrays = [
        frame[100:700, 300:1500],  # a crop: rows with gaps between them
        frame[::2, ::3],
        frame[:, ::-1],  # negative strides
        frame[..., 2],
        floats.T,  # Fortran order
        floats[::-2, 1::4],
        np.broadcast_to(np.arange(1920, dtype=np.int32), (100, 1920)),  # zero strides
    ]
    pool = await open_pool("strided", 1, proc_targets.checksums, "function")
    seen = await pool.call(arrays)
    assert seen == [(a.shape, a.dtype.str, float(a.astype(np.float64).sum())) for a in arrays]
    echo = await open_pool("strided_echo", 1, proc_targets.echo, "function")
    back = await echo.call(arrays)
    for original, out in zip(arrays, back, strict=True):
        assert same(out, original)
        assert out.flags.writeable
    assert segments("strided_echo")  # they crossed in shared memory, not in the pipe


async def test_many_arrays_of_every_kind_in_one_item(open_pool: Callable[..., Any]) -> None:
    rng = np.random.default_rng(11)
    dtypes = [np.uint8, np.int16, np.float16, np.float32, np.float64, np.complex64, np.bool_]
    arrays = [(rng.random((64 + i, 257)) * 100).astype(dtypes[i % len(dtypes)]) for i in range(60)]
    points = np.zeros(5000, dtype=[("x", np.float32), ("y", np.float32), ("id", np.int64)])
    points["id"] = np.arange(5000)
    value = {
        "arrays": arrays,
        "points": points,  # a structured dtype
        "empty": np.zeros((0, 1920, 3), dtype=np.uint8),
        "scalar": np.array(7.5),
        "tuple": tuple(arrays[:3]),
    }
    pool = await open_pool("many", 1, proc_targets.echo, "function")
    for _ in range(2):
        assert same(await pool.call(value), value)


async def test_results_never_alias_a_segment_that_the_next_call_overwrites(
    open_pool: Callable[..., Any],
) -> None:
    frames = [np.full((1080, 1920, 3), i, dtype=np.uint8) for i in range(3)]
    for target in (proc_targets.echo, proc_targets.xor_frame, proc_targets.views_of_input):
        name = f"alias_{target.__name__}"
        pool = await open_pool(name, 1, target, "function")
        first = await pool.call(frames[0])
        expected = target(frames[0].copy())
        await pool.call(frames[1])
        await pool.call(frames[2])
        assert same(first, expected)


async def test_a_frame_drawn_on_in_place_comes_back_drawn_and_the_callers_is_untouched(
    open_pool: Callable[..., Any],
) -> None:
    pool = await open_pool("draw", 1, proc_targets.draw_in_place, "function")
    frame = np.zeros((1080, 1920, 3), dtype=np.uint8)
    out = await pool.call(frame)
    assert (out[:10, :10] == 255).all()
    assert out[10:].sum() == 0
    assert frame.sum() == 0  # the worker drew on its copy in shared memory
    out[0, 0, 0] = 1  # the result is the caller's own, and writable


async def test_views_of_the_input_come_back_with_their_values(
    open_pool: Callable[..., Any],
) -> None:
    pool = await open_pool("views", 1, proc_targets.views_of_input, "function")
    frame = np.random.default_rng(2).integers(0, 250, (1080, 1920, 3), dtype=np.uint8)
    out = await pool.call(frame)
    assert same(out, proc_targets.views_of_input(frame))


async def test_a_result_that_cannot_be_pickled_fails_with_executor_error(
    open_pool: Callable[..., Any],
) -> None:
    pool = await open_pool("lockresult", 1, proc_targets.return_lock, "function")
    with pytest.raises(af.ExecutorError, match=r"block 'lockresult': the result \(lock\) cannot"):
        await pool.call(1)
    with pytest.raises(af.ExecutorError):  # the worker is still there, and still fails
        await pool.call(2)


async def test_an_item_that_cannot_be_pickled_fails_with_executor_error(
    open_pool: Callable[..., Any],
) -> None:
    pool = await open_pool("lockitem", 1, proc_targets.whoami, "function")
    with pytest.raises(af.ExecutorError, match=r"block 'lockitem': the item cannot be sent"):
        await pool.call(threading.Lock())
    assert (await pool.call(1))[0] == 1


# -- what dies --------------------------------------------------------------------------------


@pytest.mark.parametrize("start_method", START_METHODS)
@pytest.mark.parametrize(("item", "code"), [("sigkill", -9), ("exit3", 3)])
async def test_a_dead_worker_fails_only_its_call_and_is_replaced(
    open_pool: Callable[..., Any], start_method: str, item: str, code: int
) -> None:
    pool = await open_pool("mortal", 2, proc_targets.die_on, "function", start_method=start_method)
    before = await asyncio.gather(pool.call("a"), pool.call("b"))
    results: tuple[Any, ...] = await asyncio.gather(
        pool.call("c"), pool.call(item), pool.call("d"), return_exceptions=True
    )
    assert results[0][0] == "c"
    assert results[2][0] == "d"
    err = results[1]
    assert isinstance(err, af.ExecutorError)
    assert f"of block 'mortal' died (exit code {code}) while processing the item" in str(err)
    # Later calls succeed, the replacement included.
    after = await asyncio.gather(*(pool.call(i) for i in range(4)))
    assert [value for value, _ in after] == list(range(4))
    pids = {pid for _, pid in before} | {pid for _, pid in after}
    assert len({pid for _, pid in after} - {pid for _, pid in before}) == 1  # one new worker
    await pool.close()
    assert_gone("mortal", list(pids))


async def test_a_worker_that_dies_while_idle_is_replaced_without_failing_a_call(
    open_pool: Callable[..., Any],
) -> None:
    pool = await open_pool("idle", 1, proc_targets.whoami, "function")
    _, first = await pool.call(1)
    os.kill(first, signal.SIGKILL)
    while exists(first):  # reaped: the pool has seen it die
        await asyncio.sleep(0.01)
    value, second = await pool.call(2)
    assert value == 2
    assert second != first


async def test_a_user_exception_keeps_its_type_and_gets_the_remote_traceback(
    open_pool: Callable[..., Any],
) -> None:
    pool = await open_pool("raiser", 1, proc_targets.raise_value_error, "function")
    with pytest.raises(ValueError, match=r"bad item 7") as info:
        await pool.call(7)
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert "remote traceback" in notes
    assert "Traceback (most recent call last)" in notes
    assert "raise_value_error" in notes  # the worker's frame
    with pytest.raises(ValueError, match=r"bad item 8"):  # the worker survived it
        await pool.call(8)


@pytest.mark.parametrize(
    ("target", "text"),
    [
        (proc_targets.raise_two_arg, "TwoArgError: 9/b"),
        (proc_targets.raise_locked, "LockedError: locked 9"),
    ],
    ids=["cannot-unpickle", "cannot-pickle"],
)
async def test_an_exception_that_cannot_come_back_is_an_executor_error(
    open_pool: Callable[..., Any], target: object, text: str
) -> None:
    pool = await open_pool("badexc", 1, target, "function")
    with pytest.raises(af.ExecutorError, match=text) as info:
        await pool.call(9)
    assert "Traceback" in "\n".join(getattr(info.value, "__notes__", []))


async def test_a_setup_error_fails_start_and_leaves_nothing(tmp_path: Path) -> None:
    pool = ProcessPool("nosetup", 2, proc_targets.FailingSetup(), "coroutine")
    with pytest.raises(RuntimeError, match="no model here") as info:
        await pool.start()
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert "remote traceback" in notes
    assert "setup also failed in 1 other worker" in notes
    assert pool_children("nosetup") == []
    assert segments("nosetup") == []
    await pool.close()  # still fine


async def test_a_teardown_error_is_raised_by_close_after_cleanup() -> None:
    pool = ProcessPool("badteardown", 1, proc_targets.FailingTeardown(), "coroutine")
    await pool.start()
    await pool.call(np.zeros((512, 512), dtype=np.uint8))
    with pytest.raises(OSError, match="could not release the camera"):
        await pool.close()
    assert pool_children("badteardown") == []
    assert segments("badteardown") == []
    await pool.close()  # idempotent


#: A script whose process block is killed out from under: its parent is the test's to kill.
ORPHANING = """
import sys

import proc_targets

import aioflow as af

if __name__ == "__main__":
    out, setup_s, call_s, name = sys.argv[1:]
    block = proc_targets.Lingering(
        out, float(setup_s), float(call_s), name=name, executor="process", workers=2
    )
    af.run(af.Pipeline(block).run(range(8)))
"""


def running(pid: int) -> bool:
    """Whether ``pid`` is a process that has not exited (a zombie nobody reaps has)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.parametrize("when", ["setup", "call"])
def test_workers_whose_parent_is_killed_tear_down_and_exit_without_a_traceback(
    tmp_path: Path, when: str
) -> None:
    # The parent killed (SIGKILL, or a SIGTERM its script does not handle) while its workers
    # set up or run a call: each finishes what it is doing, runs its teardown and exits
    # quietly, as nobody is left to answer. Before, a worker with something to send back
    # printed a BrokenPipeError traceback on the terminal it shared with the parent, and one
    # whose setup ended after the parent had gone skipped its teardown.
    out = tmp_path / "files"
    out.mkdir()
    script = tmp_path / "parent.py"
    script.write_text(ORPHANING)
    name = f"orphan{os.getpid()}{when}"
    setup_s, call_s = ("1.5", "0") if when == "setup" else ("0", "1.5")
    log = tmp_path / "stderr.txt"
    here = Path(__file__).parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(here.parent.parent), str(here)])}
    with log.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, str(script), str(out), setup_s, call_s, name],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,  # its own process group: whatever is left is killed after
        )
    try:
        deadline = time.monotonic() + 60
        while len(list(out.glob(f"{when}-*"))) < 2:  # both workers in their setup or a call
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the workers did not start"
            time.sleep(0.01)
        proc.kill()
        proc.wait()
        pids = sorted(int(p.name.split("-")[1]) for p in out.glob("setup-*"))
        while any(running(pid) for pid in pids):
            assert time.monotonic() < deadline, f"workers {pids} outlived their parent"
            time.sleep(0.05)
        assert sorted(int(p.name.split("-")[1]) for p in out.glob("teardown-*")) == pids
        assert "Traceback" not in log.read_text(), log.read_text()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        for path in Path("/dev/shm").glob(f"aioflow_{name}_*"):
            path.unlink()  # a parent killed cannot unlink its segments


# -- what cannot be sent ----------------------------------------------------------------------


def test_unpicklable_targets_fail_the_check_with_a_graph_error() -> None:
    scale = 3

    def closure(x: int) -> int:
        return x * scale

    cases: list[tuple[object, str]] = [
        (lambda x: x, "found a lambda"),
        (closure, "defined inside another function"),
        (proc_targets.WithLock(), "found a WithLock instance"),
    ]
    for target, found in cases:
        with pytest.raises(af.GraphError) as info:
            ProcessPool.check_picklable("heavy", target)
        message = str(info.value)
        assert message.startswith("block 'heavy': executor='process' needs a module-level function")
        assert found in message
        assert "cannot be pickled" in message
        with pytest.raises(af.GraphError):
            ProcessPool("heavy", 1, target, "function")
    # A block in a pipeline points back at it (a weak reference): that link is not sent.
    recorder = proc_targets.Recorder("/tmp")
    af.Pipeline(recorder, name="holder")
    ProcessPool.check_picklable("heavy", recorder)
    ProcessPool.check_picklable("heavy", recorder.process)
    ProcessPool.check_picklable("heavy", proc_targets.whoami)
    ProcessPool.check_picklable("heavy", proc_targets.decorated)
    ProcessPool.check_picklable("heavy", proc_targets.Recorder("/tmp"))


# -- cancellation and closing -----------------------------------------------------------------


async def test_cancelling_a_call_kills_its_worker_and_the_slot_recovers(tmp_path: Path) -> None:
    pool = ProcessPool("cancelme", 1, proc_targets.hang_on_path, "function")
    await pool.start()
    try:
        await pool.call(np.zeros((1024, 1024), dtype=np.uint8))  # make segments exist
        assert len(segments("cancelme")) == 2
        pid_file = tmp_path / "pid"
        task = asyncio.create_task(pool.call(str(pid_file)))
        await wait_for_file(pid_file)
        stuck = int(pid_file.read_text())
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        replacement: Any = await pool.call(None)  # a new worker in the same slot
        assert replacement != stuck
    finally:
        await pool.close()
    assert_gone("cancelme", [stuck, replacement])


async def test_cancelling_the_caller_of_a_pool_in_use_leaves_no_process_or_segment(
    tmp_path: Path,
) -> None:
    async def use() -> None:
        pool = ProcessPool("owner", 2, proc_targets.hang_on_path, "function")
        await pool.start()
        try:
            await pool.call(np.zeros((1024, 1024), dtype=np.uint8))
            await pool.call(str(tmp_path / "pid"))
        finally:
            await pool.close()

    task = asyncio.create_task(use())
    await wait_for_file(tmp_path / "pid")
    stuck = int((tmp_path / "pid").read_text())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert_gone("owner", [stuck])


async def test_cancelling_close_kills_the_workers_and_unlinks_the_segments(tmp_path: Path) -> None:
    pool = ProcessPool("stuck", 1, proc_targets.StuckTeardown(str(tmp_path)), "coroutine")
    await pool.start()
    pid: Any = await pool.call(np.zeros((1024, 1024), dtype=np.uint8))
    assert len(segments("stuck")) == 2
    closer = asyncio.create_task(pool.close())
    await wait_for_file(tmp_path / "teardown-started")
    closer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closer
    assert_gone("stuck", [pid])
    await pool.close()  # idempotent


async def test_calls_fail_after_close(open_pool: Callable[..., Any]) -> None:
    pool = await open_pool("closed", 1, proc_targets.whoami, "function")
    await pool.close()
    await pool.close()
    with pytest.raises(af.ExecutorError, match=r"block 'closed': the process pool is closed"):
        await pool.call(1)


# -- zero_copy: results lent from shared memory -------------------------------------------------


def frame(seed: int) -> np.ndarray[Any, Any]:
    return np.random.default_rng(seed).integers(0, 256, (1080, 1920, 3), dtype=np.uint8)


def expected_job(value: np.ndarray[Any, Any], job: str) -> np.ndarray[Any, Any]:
    return value if job == "same" else value ^ 1


@pytest.mark.parametrize("job", ["same", "new"])
async def test_zero_copy_results_are_right_and_read_only(
    open_pool: Callable[..., Any], job: str
) -> None:
    pool = await open_pool(f"lend_{job}", 1, proc_targets.frame_job, "function", zero_copy=True)
    for seed in range(3):
        value = frame(seed)
        out = await pool.call((value, job))
        assert same(out, expected_job(value, job))
        assert not out.flags.writeable
        with pytest.raises(ValueError, match="read-only"):
            out[0, 0, 0] = 1
        with pytest.raises(ValueError, match="WRITEABLE"):
            out.flags.writeable = True
        mine = out.copy()  # the way to a writable one
        mine[0, 0, 0] ^= 1
        assert same(out, expected_job(value, job))  # the copy is the caller's own


@pytest.mark.parametrize("job", ["same", "new"])
async def test_a_held_zero_copy_result_is_never_overwritten_by_later_calls(
    open_pool: Callable[..., Any], job: str
) -> None:
    name = f"hold_{job}"
    pool = await open_pool(name, 1, proc_targets.frame_job, "function", zero_copy=True)
    first = await pool.call((frame(0), job))
    corner = first[:100, :100]  # a view outlives the array it came from
    del first
    held = [await pool.call((frame(i), job)) for i in range(1, 12)]  # past the lending limit
    for _ in range(5):
        await pool.call((frame(99), job))
    assert same(corner, expected_job(frame(0), job)[:100, :100])
    for i, out in enumerate(held, start=1):
        assert same(out, expected_job(frame(i), job))
        assert not out.flags.writeable  # copies past the limit are read-only as well
    # Held results do not make segments without bound: at most 4 lent, 2 in use.
    assert len(segments(name)) <= 6
    del corner, held
    for _ in range(3):  # let go of everything: the pool settles back on two segments
        await pool.call((frame(5), job))
    assert len(segments(name)) <= 6


async def test_zero_copy_arrays_of_every_kind_and_other_buffers_come_back_equal(
    open_pool: Callable[..., Any],
) -> None:
    arrays = [
        np.arange(100_000, dtype=np.float32).reshape(250, 400),
        np.asfortranarray(np.arange(60_000, dtype=np.int64).reshape(200, 300)),
        np.arange(200_000, dtype=np.uint8)[::2],
        np.zeros(10, dtype=np.int16),  # small: inline in the pickle
    ]
    pool = await open_pool("lendmany", 1, proc_targets.with_blob, "function", zero_copy=True)
    out = await pool.call(arrays)
    assert same(out["value"], arrays)
    assert all(not a.flags.writeable for a in out["value"][:3])
    again = await pool.call(arrays[:1])  # reuses the segment the blob was in: it was copied
    assert same(again["value"], arrays[:1])
    assert out["blob"] == bytearray(b"x" * 100_000)


async def test_closing_a_zero_copy_pool_while_results_are_held_unlinks_every_segment(
    open_pool: Callable[..., Any],
) -> None:
    pool = await open_pool("lendclose", 2, proc_targets.frame_job, "function", zero_copy=True)
    held = await asyncio.gather(*(pool.call((frame(i), "new")) for i in range(4)))
    await pool.close()
    assert_gone("lendclose", [])  # segments unlinked; the memory goes with the last view
    for i, out in enumerate(held):
        assert same(out, frame(i) ^ 1)


async def test_a_killed_zero_copy_worker_loses_no_held_result_and_is_replaced(
    open_pool: Callable[..., Any],
) -> None:
    name = "lendkill"
    pool = await open_pool(name, 1, proc_targets.frame_job, "function", zero_copy=True)
    kept = [await pool.call((frame(i), job)) for i, job in enumerate(["same", "new"])]
    with pytest.raises(af.ExecutorError, match="died"):
        await pool.call((frame(7), "sigkill"))
    after = await pool.call((frame(3), "new"))  # the replacement worker
    assert same(after, frame(3) ^ 1)
    assert same(kept[0], frame(0))
    assert same(kept[1], frame(1) ^ 1)
    # The dead worker's segments are unlinked although results still view them.
    assert len(segments(name)) <= 3


async def test_cancelling_a_zero_copy_call_keeps_held_results_and_the_slot_recovers(
    tmp_path: Path,
) -> None:
    pool = ProcessPool(
        "lendcancel", 1, proc_targets.echo_or_hang_on_path, "function", zero_copy=True
    )
    await pool.start()
    try:
        lent = await pool.call(frame(0))
        pid_file = tmp_path / "pid"
        task = asyncio.create_task(pool.call(str(pid_file)))
        await wait_for_file(pid_file)
        stuck = int(pid_file.read_text())
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        again = await pool.call(frame(1))  # a new worker in the same slot
        assert same(again, frame(1))
        assert same(lent, frame(0))
    finally:
        await pool.close()
    assert_gone("lendcancel", [stuck])
    assert same(lent, frame(0))
