"""What the integration tests share: waiting for a condition of a running pipeline, the books
of every block, the block errors of an exception group, and the worker processes of the
distributed mode, started for real (``python -m aioflow worker``)."""

from __future__ import annotations

import asyncio
import fcntl
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

import pytest

import aioflow as af

if TYPE_CHECKING:
    from aioflow.transport.messages import Keys
    from aioflow.transport.redis import Client

T = TypeVar("T")

HERE = Path(__file__).parent
ROOT = HERE.parent.parent


async def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Let the pipeline run until ``condition()`` holds; fail rather than hang if it never does."""
    for _ in range(5000):
        if condition():
            return
        await asyncio.sleep(0.001)
    msg = f"never happened: {what}"
    raise AssertionError(msg)


def books_balance(stats: Mapping[str, af.BlockStatistics]) -> bool:
    """Whether every block's books balance: each item received is completed, dropped, skipped,
    failed, in flight or queued."""
    return all(
        s.received == s.completed + s.dropped + s.skipped + s.failed + s.in_flight + s.queue_depth
        for s in stats.values()
    )


def block_errors(group: BaseExceptionGroup[Any]) -> list[af.BlockError]:
    """The leaves of ``group``, checked to be BlockErrors."""
    leaves: list[af.BlockError] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            leaves.extend(block_errors(exc))
        else:
            assert isinstance(exc, af.BlockError), repr(exc)
            leaves.append(exc)
    return leaves


def only_block_error(group: BaseExceptionGroup[Any]) -> af.BlockError:
    """The one exception of ``group``, checked to be a BlockError."""
    assert len(group.exceptions) == 1, group.exceptions
    err = group.exceptions[0]
    assert isinstance(err, af.BlockError), repr(err)
    return err


def child_log() -> IO[str]:
    """A temporary file for a child process's stderr, to read with :func:`read_log` while the
    child writes to it.

    The child writes through the same open file, so it shares the file's offset with the
    parent. Read by seek(0) and read(), a line the child wrote between the two went to offset
    0, over the first ones (a worker's "blocks" line overwritten by its next line, 1 ms later,
    and serving() waited for it for good: the likely hang of stop 27's CI). Now the child
    appends (O_APPEND: every write goes to the end) and the parent reads without moving the
    offset (pread)."""
    log = tempfile.TemporaryFile("w+")  # noqa: SIM115 - the caller closes it
    flags = fcntl.fcntl(log.fileno(), fcntl.F_GETFL)
    fcntl.fcntl(log.fileno(), fcntl.F_SETFL, flags | os.O_APPEND)
    return log


def read_log(log: IO[str]) -> str:
    """What was written to ``log`` (a :func:`child_log`) so far, its offset left alone."""
    fd = log.fileno()
    return os.pread(fd, os.fstat(fd).st_size, 0).decode(errors="replace")


class Workers:
    """Starts workers of the test pipelines (``tests/integration/redis_pipelines.py``) and stops
    every one of them at the end of the test."""

    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        self.prefix = prefix
        self.procs: list[subprocess.Popen[str]] = []
        self.logs: list[IO[str]] = []

    def output(self, proc: subprocess.Popen[str]) -> str:
        """What ``proc`` wrote to stderr so far."""
        return read_log(self.logs[self.procs.index(proc)])

    def start(
        self,
        pipeline: str,
        blocks: str,
        *,
        claim_idle: float = 30.0,
        env: dict[str, str] | None = None,
        extra: tuple[str, ...] = (),
    ) -> subprocess.Popen[str]:
        # stderr goes to a file: a pipe nobody reads would fill up and stall a chatty worker.
        log = child_log()
        self.logs.append(log)
        path = os.pathsep.join([str(ROOT), str(HERE), os.environ.get("PYTHONPATH", "")])
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "aioflow",
                "worker",
                f"redis_pipelines:{pipeline}",
                "--redis",
                self.url,
                "--blocks",
                blocks,
                "--prefix",
                self.prefix,
                "--claim-idle",
                str(claim_idle),
                *extra,
            ],
            env={**os.environ, "PYTHONPATH": path, **(env or {})},
            stdout=subprocess.DEVNULL,
            stderr=log,
            text=True,
        )
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def serving(workers: Workers, proc: subprocess.Popen[str]) -> None:
    """Wait until the worker ``proc`` (started with ``--log-level INFO``) serves: a caller with
    a short ``no_worker_timeout`` would otherwise give up on a worker still starting."""
    deadline = asyncio.get_running_loop().time() + 30
    while "blocks" not in workers.output(proc):
        assert proc.poll() is None, workers.output(proc)
        assert asyncio.get_running_loop().time() < deadline, (
            f"the worker did not say it serves in 30 s:\n{workers.output(proc)}"
        )
        await asyncio.sleep(0.02)


async def while_alive(workers: Workers, proc: subprocess.Popen[str], work: Awaitable[T]) -> T:
    """Await ``work``, failing at once (with the worker's log) if the worker ``proc`` dies."""
    task = asyncio.ensure_future(work)
    try:
        while not task.done():
            assert proc.poll() is None, workers.output(proc)
            await asyncio.wait({task}, timeout=0.05)
        return task.result()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.fixture
def workers(redis_url: str, redis_prefix: str) -> Iterator[Workers]:
    started = Workers(redis_url, redis_prefix)
    try:
        yield started
    finally:
        started.stop()
        # Shown only when the test fails (pytest's captured output of its teardown): what
        # each worker logged, the tail, for a failure or a timeout that names no worker.
        for n, (proc, log) in enumerate(zip(started.procs, started.logs, strict=True)):
            tail = read_log(log)[-4000:]
            cmd = [str(arg) for arg in proc.args] if isinstance(proc.args, list) else ["?"] * 9
            what = f"{cmd[4]} --blocks {cmd[8]}"
            print(f"-- worker {n} ({what}), status {proc.returncode}:")
            print(tail)
            log.close()


def pipeline_keys(prefix: str, attr: str) -> Keys:
    """The Redis keys of the test pipeline ``redis_pipelines.<attr>`` (as its workers name it)."""
    import redis_pipelines as rp

    from aioflow.transport.messages import Keys, graph_signature

    graph_hash, _ = graph_signature(attr, getattr(rp, attr).stages)
    return Keys(prefix, attr, graph_hash)


async def sigkill_a_holder(
    client: Client,
    procs: Sequence[subprocess.Popen[str]],
    streams: Sequence[str],
    killed: list[subprocess.Popen[str]],
) -> None:
    """SIGKILLs the first of ``procs`` not in ``killed`` that holds an entry of one of ``streams``
    (its consumer, named after its pid, has entries pending) and adds it to ``killed``; kills
    none when none holds one. No drain, no release: what it held waits for others to take it."""
    from aioflow.transport.messages import GROUP

    for proc in procs:
        if proc in killed:
            continue
        for stream in streams:
            for consumer in await client.xinfo_consumers(stream, GROUP):
                if f"-{proc.pid}-" in consumer["name"].decode() and consumer["pending"]:
                    proc.kill()
                    killed.append(proc)
                    return
