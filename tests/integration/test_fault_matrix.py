"""The fault matrix: one test per way a pipeline can fail, and what its user sees.

Each cell plants one fault (an exception in user code, a worker process killed, a hung thread, a
consumer leaving early, a web service down, a camera lost) and checks the three things a user of
the pipeline can observe: which exception reaches ``run()`` / ``submit()`` (a ``BlockError``
naming the block with the user's exception as ``__cause__``, grouped for ``run()``), that the
statistics books balance for every block (``received == completed + dropped + skipped + failed
+ in_flight + queue_depth``), and that nothing is left behind (task, thread, child process,
``/dev/shm/aioflow*`` segment; every setup that finished had its teardown).

Code that runs in worker processes, and the scripts of the interrupt cells, live in
``fault_targets`` (a spawned worker imports by name).
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from aiohttp import web
from conftest import only_block_error
from fault_targets import FaultyWorker

import aioflow as af
from aioflow.io import http
from aioflow.io.video import video_source

pytestmark = pytest.mark.integration

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
#: A bound on every run here: a hang fails the test instead of stalling the suite.
BOUND_S = 20.0
#: The bound of the cells that hang today (issue 10 defect 2): short, so that they fail fast.
SHORT_BOUND_S = 3.0


# -- what a user can observe ------------------------------------------------------------------


def unique(prefix: str) -> str:
    """A block name no other test (or helper running tests beside us) uses: segments in
    /dev/shm carry the block's name, so the leak check looks only at ours."""
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def assert_books_balance(pipe: af.Pipeline) -> None:
    for name, stats in pipe.statistics().items():
        assert stats.balanced, f"books of {name!r} do not balance: {stats}"


def assert_nothing_left(pipe: af.Pipeline, threads_before: set[threading.Thread]) -> None:
    """No thread, child process or shared-memory segment of the run is left."""
    extra = [t.name for t in threading.enumerate() if t not in threads_before and t.is_alive()]
    assert extra == [], f"threads left behind: {extra}"
    assert multiprocessing.active_children() == []
    for name in pipe.statistics():
        assert glob.glob(f"/dev/shm/aioflow_{name}*") == []


class Lifecycle(af.Block):
    """A pass-through block whose setups and teardowns land in ``log``; ``fault`` (an exception
    instance) is raised in ``where``: setup, process (on item 3), teardown, batch (the batch
    holding 3) or generator (after item 3's first output)."""

    def __init__(
        self, log: list[str], where: str = "", fault: BaseException | None = None, **options: Any
    ) -> None:
        super().__init__(**options)
        self.log = log
        self.where = where
        self.fault = fault

    def _maybe(self, where: str) -> None:
        if self.where == where and self.fault is not None:
            raise self.fault

    async def setup(self) -> None:
        await asyncio.sleep(0)
        self._maybe("setup")
        self.log.append(f"setup {self.block_name}")

    async def teardown(self) -> None:
        await asyncio.sleep(0)
        self.log.append(f"teardown {self.block_name}")
        self._maybe("teardown")


class AsyncLife(Lifecycle):
    async def process(self, item: Any) -> Any:
        await asyncio.sleep(0)
        if item == 3:
            self._maybe("process")
        return item


class ThreadLife(Lifecycle):
    def process(self, item: Any) -> Any:
        if item == 3:
            self._maybe("process")
        return item


class AsyncBatchLife(Lifecycle):
    async def process(self, items: list[Any]) -> list[Any]:
        await asyncio.sleep(0)
        if 3 in items:
            self._maybe("batch")
        return items


class ThreadBatchLife(Lifecycle):
    def process(self, items: list[Any]) -> list[Any]:
        if 3 in items:
            self._maybe("batch")
        return items


class AsyncGenLife(Lifecycle):
    async def process(self, item: Any) -> AsyncIterator[Any]:
        yield item
        await asyncio.sleep(0)
        if item == 3:
            self._maybe("generator")
        yield -item


class ThreadGenLife(Lifecycle):
    def process(self, item: Any) -> Iterator[Any]:
        yield item
        if item == 3:
            self._maybe("generator")
        yield -item


def faulty(executor: str, where: str, log: list[str], fault: BaseException) -> Lifecycle:
    if where == "batch":
        cls: type[Lifecycle] = AsyncBatchLife if executor == "async" else ThreadBatchLife
        return cls(log, where, fault, name="faulty", batch=af.Batch(max_size=4, max_wait=0.001))
    if where == "generator":
        cls = AsyncGenLife if executor == "async" else ThreadGenLife
    else:
        cls = AsyncLife if executor == "async" else ThreadLife
    return cls(log, where, fault, name="faulty")


WHERE = ["setup", "process", "teardown", "batch", "generator"]
EXECUTORS = ["async", "thread"]


# -- exceptions raised by user code -----------------------------------------------------------


@pytest.mark.parametrize("executor", EXECUTORS)
@pytest.mark.parametrize("where", WHERE)
async def test_a_value_error_in_user_code_reaches_run_as_a_block_error(
    executor: str, where: str
) -> None:
    log: list[str] = []
    fault = ValueError("planted")
    first = AsyncLife(log, name="first")
    last = ThreadLife(log, name="last")
    pipe = af.Pipeline(first, faulty(executor, where, log, fault), last)
    threads = set(threading.enumerate())

    with pytest.raises(ExceptionGroup) as info:
        async with asyncio.timeout(BOUND_S):
            await pipe.run(range(100))

    if where == "batch":
        # Every item of the failed batch fails, each with its own BlockError.
        errors = list(info.value.exceptions)
        assert 1 <= len(errors) <= 4
        assert all(isinstance(e, af.BlockError) for e in errors), errors
        assert "3" in [e.item for e in errors]
    else:
        errors = [only_block_error(info.value)]
    for err in errors:
        assert err.block == "faulty"
        assert err.__cause__ is fault
        assert err.phase == (where if where in ("setup", "teardown") else "process")
    if where in ("process", "generator"):
        assert errors[0].item == "3"
    # Every block whose setup finished was torn down, once.
    setups = sorted(line.split()[1] for line in log if line.startswith("setup "))
    downs = sorted(line.split()[1] for line in log if line.startswith("teardown "))
    assert setups == downs
    assert "faulty" in setups or where == "setup"
    assert_books_balance(pipe)
    assert_nothing_left(pipe, threads)


@pytest.mark.parametrize("executor", EXECUTORS)
@pytest.mark.parametrize("where", ["process", "batch", "generator"])
async def test_a_value_error_reaches_its_submit_caller_only(executor: str, where: str) -> None:
    log: list[str] = []
    fault = ValueError("planted")
    pipe = af.Pipeline(faulty(executor, where, log, fault), name="service")
    async with pipe.open() as running:
        async with asyncio.timeout(BOUND_S):
            with pytest.raises(af.BlockError) as info:
                await running.submit(3)
            answer = await running.submit(5)
    assert info.value.__cause__ is fault
    assert answer in (5, [5, -5])  # a generator block answers with both its outputs
    assert log == ["setup faulty", "teardown faulty"]
    assert_books_balance(pipe)


@pytest.mark.parametrize("executor", EXECUTORS)
@pytest.mark.parametrize("where", WHERE)
async def test_a_cancelled_error_from_user_code_is_a_block_error_not_the_end_of_the_run(
    executor: str, where: str
) -> None:
    log: list[str] = []
    fault = asyncio.CancelledError("a future someone else cancelled")
    pipe = af.Pipeline(AsyncLife(log, name="first"), faulty(executor, where, log, fault))

    with pytest.raises(ExceptionGroup) as info:
        async with asyncio.timeout(SHORT_BOUND_S):
            await pipe.run(range(100))

    if where == "batch":
        # As with any exception: every item of the failed batch fails, each with its own error.
        errors = list(info.value.exceptions)
        assert 1 <= len(errors) <= 4
        assert all(isinstance(e, af.BlockError) for e in errors), errors
    else:
        errors = [only_block_error(info.value)]
    for err in errors:
        assert err.block == "faulty"
        assert err.__cause__ is fault
    setups = sorted(line.split()[1] for line in log if line.startswith("setup "))
    downs = sorted(line.split()[1] for line in log if line.startswith("teardown "))
    assert setups == downs
    assert_books_balance(pipe)


def run_interrupt_script(
    executor: str, where: str, exc: str, mode: str = "run"
) -> subprocess.CompletedProcess[str]:
    """A user's script (``asyncio.run(main())``) whose block raises ``exc`` in ``where``, driven
    by ``run()``, ``stream()`` or ``submit()`` (``mode``)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(HERE)])}
    code = (
        "import fault_targets; fault_targets.interrupted_script("
        f"{executor!r}, {where!r}, {exc!r}, {mode!r})"
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("exc", ["KeyboardInterrupt", "SystemExit"])
@pytest.mark.parametrize("executor", EXECUTORS)
@pytest.mark.parametrize("where", WHERE)
def test_keyboard_interrupt_and_system_exit_from_user_code_stop_the_run_after_teardown(
    executor: str, where: str, exc: str
) -> None:
    """Not an item failure: the exception stops the run and reaches the caller of ``run()``
    itself (bare, as asyncio delivers it), after every block that was set up was torn down; the
    script then ends as Python ends on that exception."""
    check_interrupted(run_interrupt_script(executor, where, exc), where, exc, "run")


@pytest.mark.parametrize("exc", ["KeyboardInterrupt", "SystemExit"])
@pytest.mark.parametrize("executor", EXECUTORS)
@pytest.mark.parametrize("where", ["setup", "process"])
@pytest.mark.parametrize("mode", ["stream", "submit"])
def test_keyboard_interrupt_and_system_exit_reach_stream_and_submit_callers_bare(
    mode: str, executor: str, where: str, exc: str
) -> None:
    """The same for a ``stream()`` consumer and a ``submit()`` caller in ``open()``: the bare
    exception, after every teardown; nothing else is logged."""
    proc = run_interrupt_script(executor, where, exc, mode)
    check_interrupted(proc, where, exc, mode)
    assert "also failed" not in proc.stderr, proc.stderr
    assert "stopped (" not in proc.stderr, proc.stderr


def check_interrupted(
    proc: subprocess.CompletedProcess[str], where: str, exc: str, mode: str
) -> None:
    lines = proc.stdout.splitlines()
    # Python ends on an uncaught KeyboardInterrupt by killing itself with SIGINT.
    assert proc.returncode == (-signal.SIGINT if exc == "KeyboardInterrupt" else 4), proc.stderr
    assert lines[-1] == f"{mode} raised {exc}", proc.stdout
    setups = sorted(line.split()[1] for line in lines if line.startswith("setup "))
    if where == "setup":
        setups.remove("b")  # its setup raised: it never finished, so no teardown
    downs = sorted(line.split()[1] for line in lines if line.startswith("teardown "))
    assert setups == downs, proc.stdout
    assert "never retrieved" not in proc.stderr
    assert "destroyed but it is pending" not in proc.stderr


# -- a source whose cleanup fails, a keyed state that cannot be made -------------------------


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_a_source_whose_cleanup_fails_fails_the_run_with_a_block_error_naming_it(
    kind: str,
) -> None:
    """A block fails, the run stops and closes the camera source, whose own cleanup raises:
    that error too reaches the group as a BlockError of the source, with the user's exception
    as ``__cause__``, never bare."""
    cleanup = OSError("the camera did not close")
    fault = ValueError("planted")

    async def camera() -> AsyncIterator[int]:
        # Never suspends: the run's cancellation lands in the feed, which then closes it.
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            raise cleanup

    def sync_camera() -> Iterator[int]:
        try:
            yield from range(1_000_000)
        finally:
            raise cleanup

    @af.block(name="detect")
    async def detect(x: int) -> int:
        await asyncio.sleep(0)
        if x == 3:
            raise fault
        return x

    pipe = af.Pipeline(detect)
    with pytest.raises(ExceptionGroup) as info:
        async with asyncio.timeout(BOUND_S):
            await pipe.run(camera() if kind == "async" else sync_camera())

    errors = list(info.value.exceptions)
    assert all(isinstance(e, af.BlockError) for e in errors), errors
    by_block = {e.block: e for e in errors}
    assert set(by_block) == {"detect", "<source>"}
    assert by_block["detect"].__cause__ is fault
    source_error = by_block["<source>"]
    assert source_error.phase == "source"
    assert source_error.__cause__ is cleanup
    assert "closing the source failed: OSError: the camera did not close" in str(source_error)
    assert_books_balance(pipe)


class Tracks(af.Block):
    """A keyed tracker whose state cannot be made for camera "broken"."""

    def create_state(self, key: Any) -> list[int]:
        if key == "broken":
            msg = f"no calibration for camera {key!r}"
            raise ValueError(msg)
        return []

    async def process(self, item: tuple[str, int], state: list[int]) -> int:
        state.append(item[1])
        return len(state)


async def test_a_create_state_error_fails_the_run_with_a_block_error_naming_the_block() -> None:
    pipe = af.Pipeline(Tracks(name="tracks", key=lambda item: item[0]))
    items = [("a", 0), ("a", 1), ("broken", 2), ("a", 3)]

    with pytest.raises(ExceptionGroup) as info:
        async with asyncio.timeout(BOUND_S):
            await pipe.run(items)

    err = only_block_error(info.value)
    assert err.block == "tracks"
    assert isinstance(err.__cause__, ValueError)
    assert "no calibration for camera 'broken'" in str(err)
    assert err.item is not None
    assert "broken" in err.item
    assert_books_balance(pipe)


async def test_a_create_state_error_is_an_item_failure_per_on_error() -> None:
    """With ``on_error="skip"`` the item is skipped and counted, the other keys go on, and a
    ``submit()`` caller of that item gets ``ItemDropped`` (skip) or the bare BlockError."""
    skip = af.Pipeline(Tracks(name="tracks", key=lambda item: item[0], on_error="skip"))
    async with asyncio.timeout(BOUND_S):
        out = await skip.run([("a", 0), ("broken", 1), ("a", 2), ("broken", 3), ("b", 4)])
    assert out == [1, 2, 1]
    stats = skip.statistics()["tracks"]
    assert (stats.completed, stats.skipped, stats.failed) == (3, 2, 0)
    assert stats.balanced

    fail = af.Pipeline(Tracks(name="tracks", key=lambda item: item[0]))
    async with asyncio.timeout(BOUND_S), fail.open() as running:
        with pytest.raises(af.BlockError) as info:
            await running.submit(("broken", 0))
        assert await running.submit(("a", 1)) == 1
    assert info.value.block == "tracks"
    assert isinstance(info.value.__cause__, ValueError)


# -- worker processes that die ----------------------------------------------------------------


def pids(folder: Path, event: str) -> set[str]:
    """The PIDs of the worker processes that left ``<event>-<pid>`` files in ``folder``."""
    return {p.name.split("-")[1] for p in folder.glob(f"{event}-*")}


def shm_of(name: str) -> list[str]:
    return glob.glob(f"/dev/shm/aioflow_{name}*")


@pytest.mark.parametrize("how", ["sigkill", "exit", "segfault"])
async def test_a_worker_dying_during_setup_fails_the_run_with_an_executor_error(
    how: str, tmp_path: Path
) -> None:
    name = unique("setupdeath")
    blk = FaultyWorker(str(tmp_path), on_setup=how, name=name, executor="process")
    pipe = af.Pipeline(blk)
    threads = set(threading.enumerate())

    with pytest.raises(ExceptionGroup) as info:
        async with asyncio.timeout(BOUND_S):
            await pipe.run(range(10))

    err = only_block_error(info.value)
    assert err.block == name
    assert err.phase == "setup"
    assert isinstance(err.__cause__, af.ExecutorError)
    assert "during setup" in str(err.__cause__)
    assert pids(tmp_path, "teardown") == set()  # no setup finished: no teardown
    assert pipe.statistics()[name].completed == 0
    assert_books_balance(pipe)
    assert_nothing_left(pipe, threads)


@pytest.mark.parametrize("how", ["sigkill", "exit", "segfault"])
async def test_a_worker_dying_mid_item_fails_only_that_item(how: str, tmp_path: Path) -> None:
    name = unique("itemdeath")
    blk = FaultyWorker(
        str(tmp_path), on_item=3, how=how, name=name, executor="process", on_error="skip"
    )
    pipe = af.Pipeline(blk)
    threads = set(threading.enumerate())

    async with asyncio.timeout(BOUND_S):
        out = await pipe.run(range(8))

    assert out == [0, 1, 2, 4, 5, 6, 7]
    stats = pipe.statistics()[name]
    assert (stats.completed, stats.skipped, stats.failed) == (7, 1, 0)
    # The dead worker was replaced; the replacement set up and tore down; the dead one could
    # not tear down.
    setups = pids(tmp_path, "setup")
    downs = pids(tmp_path, "teardown")
    assert len(setups) == 2
    assert len(downs) == 1
    assert downs < setups
    assert_books_balance(pipe)
    assert_nothing_left(pipe, threads)


@pytest.mark.parametrize("how", ["sigkill", "segfault"])
async def test_a_worker_dying_mid_item_reaches_run_and_submit_as_executor_error(
    how: str, tmp_path: Path
) -> None:
    name = unique("deathraise")
    blk = FaultyWorker(str(tmp_path), on_item=3, how=how, name=name, executor="process")
    pipe = af.Pipeline(blk)
    with pytest.raises(ExceptionGroup) as info:
        async with asyncio.timeout(BOUND_S):
            await pipe.run(range(8))
    err = only_block_error(info.value)
    assert isinstance(err.__cause__, af.ExecutorError)
    assert "while processing the item" in str(err.__cause__)
    assert_books_balance(pipe)

    async with pipe.open() as running:
        async with asyncio.timeout(BOUND_S):
            with pytest.raises(af.BlockError) as single:
                await running.submit(3)
            assert await running.submit(4) == 4  # the slot has a new worker
    assert isinstance(single.value.__cause__, af.ExecutorError)
    assert_books_balance(pipe)
    assert multiprocessing.active_children() == []
    assert shm_of(name) == []


@pytest.mark.parametrize("exc", ["keyboard_interrupt", "system_exit"])
async def test_an_interrupt_in_a_worker_process_ends_that_worker_only(
    exc: str, tmp_path: Path
) -> None:
    """A worker is a process of its own: KeyboardInterrupt or SystemExit raised there ends that
    worker (its teardown runs, as Python runs ``finally`` blocks on the way out) and fails its
    item with ExecutorError; the parent is not interrupted."""
    name = unique("workerexit")
    blk = FaultyWorker(
        str(tmp_path), on_item=3, how=exc, name=name, executor="process", on_error="skip"
    )
    pipe = af.Pipeline(blk)
    async with asyncio.timeout(BOUND_S):
        out = await pipe.run(range(6))
    assert out == [0, 1, 2, 4, 5]
    assert pipe.statistics()[name].skipped == 1
    setups = pids(tmp_path, "setup")
    downs = pids(tmp_path, "teardown")
    assert setups == downs
    assert len(setups) == 2
    assert_books_balance(pipe)
    assert multiprocessing.active_children() == []
    assert shm_of(name) == []


# -- a hung thread ----------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def release_when(
    event: threading.Event, condition: Callable[[], bool]
) -> AsyncIterator[None]:
    """Set ``event`` (freeing a hung thread) once ``condition()`` holds, or on the way out."""

    async def watch() -> None:
        while not condition():
            await asyncio.sleep(0.005)
        event.set()

    watcher = asyncio.create_task(watch())
    try:
        yield
    finally:
        event.set()
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


async def test_a_thread_hung_past_its_timeout_fails_its_item_and_the_stream_goes_on() -> None:
    release = threading.Event()

    @af.block(executor="thread", timeout=0.2, on_error="skip", workers=2)
    def sometimes_stuck(x: int) -> int:
        if x == 3:
            release.wait(BOUND_S)  # stuck in code that cannot be interrupted
        return x

    pipe = af.Pipeline(sometimes_stuck)
    threads = set(threading.enumerate())
    # run() returns once its threads are joined, so once the hung call returns: let it go
    # when every other item is through.
    done = lambda: pipe.statistics()["sometimes_stuck"].completed == 9  # noqa: E731
    async with asyncio.timeout(BOUND_S), release_when(release, done):
        out = await pipe.run(range(10))
    assert out == [0, 1, 2, 4, 5, 6, 7, 8, 9]
    stats = pipe.statistics()["sometimes_stuck"]
    assert (stats.completed, stats.skipped) == (9, 1)
    assert_books_balance(pipe)
    assert_nothing_left(pipe, threads)  # the pool was joined once the hung call returned


async def test_a_thread_hung_past_its_timeout_fails_the_run_with_timeout_error() -> None:
    release = threading.Event()

    @af.block(executor="thread", timeout=0.2)
    def stuck(x: int) -> int:
        if x == 2:
            release.wait(BOUND_S)
        return x

    pipe = af.Pipeline(stuck)
    failed = lambda: pipe.statistics()["stuck"].failed == 1  # noqa: E731
    with pytest.raises(ExceptionGroup) as info:
        async with asyncio.timeout(BOUND_S), release_when(release, failed):
            await pipe.run(range(5))
    err = only_block_error(info.value)
    assert isinstance(err.__cause__, TimeoutError)
    assert err.item == "2"
    assert_books_balance(pipe)


# -- a consumer leaving early -----------------------------------------------------------------


@pytest.mark.parametrize("executor", EXECUTORS)
async def test_a_stream_consumer_leaving_early_stops_the_run_and_tears_down(
    executor: str,
) -> None:
    log: list[str] = []
    pipe = af.Pipeline(
        AsyncLife(log, name="first"),
        faulty(executor, "none", log, ValueError("never raised")),
        ThreadLife(log, name="last"),
    )
    threads = set(threading.enumerate())
    tasks = asyncio.all_tasks()
    seen: list[int] = []
    async with asyncio.timeout(BOUND_S):
        async with contextlib.aclosing(pipe.stream(range(10**9))) as outputs:
            async for out in outputs:
                seen.append(out)
                if len(seen) == 20:
                    break
    assert seen == list(range(20))
    assert sorted(line for line in log if line.startswith("teardown")) == [
        "teardown faulty",
        "teardown first",
        "teardown last",
    ]
    assert asyncio.all_tasks() - tasks == set()
    assert_books_balance(pipe)
    assert_nothing_left(pipe, threads)


# -- the webhook ------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def webhook(mode: str) -> AsyncIterator[str]:
    """The URL of a webhook that is down (connections refused), slow (never answers in time) or
    failing (503 for every request)."""
    if mode == "down":
        with socket_bound() as port:
            yield f"http://127.0.0.1:{port}/events"
        return
    release = asyncio.Event()

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        if mode == "slow":
            await release.wait()
        return web.Response(status=503, text="overloaded")

    app = web.Application()
    app.router.add_post("/events", handle)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}/events"
    finally:
        release.set()
        await runner.cleanup()


@contextlib.contextmanager
def socket_bound() -> Iterator[int]:
    """A loopback port that is bound but not listening: every connection is refused."""
    import socket

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


@pytest.mark.parametrize("mode", ["down", "slow", "5xx"])
async def test_a_failing_webhook_fails_the_items_with_an_http_error(mode: str) -> None:
    async with webhook(mode) as url:
        blk = http.post(url, timeout=0.2, retry=af.Retry(attempts=2, backoff=0.001), name="hook")
        pipe = af.Pipeline(blk)
        with pytest.raises(ExceptionGroup) as info:
            async with asyncio.timeout(BOUND_S):
                await pipe.run([{"event": 1}])
        err = only_block_error(info.value)
        assert err.block == "hook"
        assert isinstance(err.__cause__, http.HttpError)
        assert err.__cause__.attempts == 2
        hs = blk.http_statistics()
        if mode == "down":
            assert hs.connection_errors == 2
        elif mode == "slow":
            assert hs.timeouts == 2
        else:
            assert hs.responses_by_status == {503: 2}
            assert err.__cause__.status == 503
        assert hs.retried == 1
        assert_books_balance(pipe)

        # As a service: each caller gets its own error; the service stays up; skip drops.
        skipping = af.Pipeline(
            http.post(url, timeout=0.2, on_error="skip", breaker=None, name="hook2")
        )
        async with skipping.open() as running:
            async with asyncio.timeout(BOUND_S):
                with pytest.raises(af.ItemDropped) as dropped:
                    await running.submit({"event": 2})
        assert dropped.value.reason == "skipped"
        assert skipping.statistics()["hook2"].skipped == 1
        assert_books_balance(skipping)


# -- a camera lost mid-run --------------------------------------------------------------------


class Camera:
    """An MJPEG camera on loopback (``/cam.mjpg``) that can be unplugged and plugged back on the
    same port; the right half of each frame says which plug-in sent it (50 per generation)."""

    def __init__(self) -> None:
        self.port = 0
        self.generation = 0
        self.runner: web.AppRunner | None = None
        self.stopping = asyncio.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/cam.mjpg"

    async def plug(self) -> None:
        self.generation += 1
        self.stopping = asyncio.Event()
        app = web.Application()
        app.router.add_get("/cam.mjpg", self.stream)
        self.runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        self.port = self.runner.addresses[0][1]

    async def unplug(self) -> None:
        self.stopping.set()
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    async def stream(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(
            headers={"Content-Type": "multipart/x-mixed-replace; boundary=frame"}
        )
        await resp.prepare(request)
        img = np.zeros((48, 64, 3), np.uint8)
        img[:, 32:] = 50 * self.generation
        ok, buf = cv2.imencode(".jpg", img)
        assert ok
        data = buf.tobytes()
        head = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(data)
        stopping = self.stopping
        with contextlib.suppress(ConnectionError):
            while not stopping.is_set():
                await resp.write(head + data + b"\r\n")
                await asyncio.sleep(0.005)
        return resp


async def test_a_live_camera_lost_mid_run_is_reconnected_with_backoff_and_counted() -> None:
    camera = Camera()
    await camera.plug()
    generations: list[int] = []
    second = asyncio.Event()

    @af.block
    async def look(frame: Any) -> int:
        gen = round(float(frame.image[:, 32:].mean()) / 50)
        generations.append(gen)
        if gen == 2:
            second.set()
        return gen

    threads = set(threading.enumerate())
    retry = af.Retry(attempts=50, backoff=0.01, max_backoff=0.05)
    source = video_source(camera.url, reconnect=retry, read_timeout=2)
    pipe = af.Pipeline(look, name="live")
    task = asyncio.create_task(pipe.run(source))
    try:
        async with asyncio.timeout(BOUND_S):
            while len(generations) < 5:
                await asyncio.sleep(0.005)
            await camera.unplug()  # the camera dies mid-run
            while source.statistics()["cam"].state != "reconnecting":
                await asyncio.sleep(0.005)
            await camera.plug()  # and comes back on the same address
            await second.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        task.cancel()
        await camera.unplug()
    stats = source.statistics()["cam"]
    assert stats.reconnects >= 1
    assert generations[0] == 1
    assert generations[-1] == 2
    assert generations == sorted(generations)  # the pipeline never saw the first camera again
    assert_books_balance(pipe)
    assert_nothing_left(pipe, threads)
