"""Worker code for ``test_process_blocks.py``: what process blocks run inside real pipelines.

A spawned worker imports its function (or unpickles its block, importing the block's class) by
name, so these live at module level in an importable module, not in the test file. pytest puts
this folder (no ``__init__.py``) on ``sys.path`` to import the tests, and spawned workers start
with the parent's ``sys.path``, so they import ``proc_pipeline_targets`` too.

Nothing here measures time. Where two calls must overlap, a barrier of files proves it; where a
worker must die, it kills itself with SIGKILL, as the OOM killer or a crashing native library
would.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np

import aioflow as af

#: A call that waits at a barrier gives up after this long (a failure, never a timing assertion).
BARRIER_S = 30.0
#: The item that makes a worker kill itself.
KILL = "kill"


def _mark(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically: a reader never sees half a file."""
    tmp = Path(f"{path}.tmp")
    tmp.write_text(text)
    tmp.rename(path)


def _meet(folder: str, expected: int) -> None:
    """Arrive at the barrier in ``folder``; return once ``expected`` processes have arrived."""
    (Path(folder) / str(os.getpid())).touch()
    deadline = time.monotonic() + BARRIER_S
    while len(list(Path(folder).iterdir())) < expected:
        if time.monotonic() > deadline:
            arrived = len(list(Path(folder).iterdir()))
            msg = f"only {arrived} of {expected} worker processes reached the barrier"
            raise TimeoutError(msg)
        time.sleep(0.005)


@af.block(executor="process", workers=2)
def square(item: tuple[int, str | None]) -> tuple[int, int]:
    """``(n, barrier)`` -> ``(n * n, pid)``; with a barrier folder, first wait for 2 workers."""
    n, barrier = item
    if barrier is not None:
        _meet(barrier, 2)
    return n * n, os.getpid()


def die_on_kill(item: object) -> tuple[object, int]:
    """``(item, pid)``; the item ``KILL`` makes the worker kill itself."""
    if item == KILL:
        os.kill(os.getpid(), signal.SIGKILL)
    return item, os.getpid()


def die_the_first_time(item: tuple[str, int]) -> tuple[int, int]:
    """``(marker, n)`` -> ``(n, pid)``. The first call (no marker file yet) leaves its PID in
    the marker and kills its worker; a retry finds the marker and returns."""
    marker, n = item
    if not os.path.exists(marker):
        _mark(marker, str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    return n, os.getpid()


def frame_facts(item: dict[str, Any]) -> dict[str, Any]:
    """Sends the frame back as received, with a computed copy and a checksum made here."""
    frame = item["frame"]
    return {
        "id": item["id"],
        "frame": frame,
        "inverted": 255 - frame,
        "sum": int(frame.sum(dtype=np.uint64)),
        "pid": os.getpid(),
    }


def squares_of_batch(items: list[int]) -> list[tuple[int, int, int]]:
    """A batch function: ``(n * n, size of the batch, pid)`` per item."""
    return [(n * n, len(items), os.getpid()) for n in items]


def hang_with_frame(item: dict[str, Any]) -> int:
    """With a marker path: leave our PID there and never return. Otherwise return the PID."""
    if item["marker"] is not None:
        _mark(item["marker"], str(os.getpid()))
        while True:
            time.sleep(3600)
    return os.getpid()


class SetupProbe(af.Block):
    """Leaves files in ``folder``: ``setup-<pid>`` (a line per setup run in that process) and
    ``teardown-<pid>`` (how many items that process handled)."""

    def __init__(self, folder: str, **options: Any) -> None:
        super().__init__(**options)
        self.folder = folder

    def setup(self) -> None:  # type: ignore[override]  # a plain def setup is allowed too
        self.setup_pid = os.getpid()
        self.items = 0
        with Path(self.folder, f"setup-{os.getpid()}").open("a") as fh:
            fh.write("setup\n")

    async def process(self, item: int) -> tuple[int, int, int]:
        self.items += 1
        return item, os.getpid(), self.setup_pid

    async def teardown(self) -> None:
        _mark(Path(self.folder, f"teardown-{os.getpid()}"), str(self.items))


class SlowStart(af.Block):
    """A block whose setup takes ``setup_s`` (a model loading) and whose call hangs on the
    item ``"hang"``."""

    def __init__(self, setup_s: float, **options: Any) -> None:
        super().__init__(**options)
        self.setup_s = setup_s

    def setup(self) -> None:  # type: ignore[override]  # a plain def setup is allowed too
        time.sleep(self.setup_s)

    def process(self, item: object) -> tuple[object, int]:
        if item == "hang":
            while True:
                time.sleep(3600)
        return item, os.getpid()
