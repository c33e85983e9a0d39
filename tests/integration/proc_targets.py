"""Code that the process-pool tests run in worker processes.

A spawned worker imports its function (or the class of its block) by name, so these live at
module level in an importable module rather than in the test file. pytest's default import mode
puts this folder (which has no ``__init__.py``) on ``sys.path`` to import the tests, and spawn
and forkserver hand the parent's ``sys.path`` to every child, so ``proc_targets`` imports there
too.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import aioflow as af

#: How long a worker waits at a barrier before giving up (a failure, never a timing assertion).
BARRIER_S = 30.0


def whoami(value: object) -> tuple[object, int]:
    return value, os.getpid()


def echo(value: object) -> object:
    return value


def xor_frame(frame: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    return frame ^ 1


def draw_in_place(frame: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """What a block that annotates its frame does: draw on the input, return it."""
    frame[:10, :10] = 255
    return frame


def views_of_input(frame: np.ndarray[Any, Any]) -> dict[str, Any]:
    """Parts of the input returned as they are: views of whatever memory the input lives in."""
    return {
        "whole": frame,
        "crop": frame[100:300, 200:600],
        "mirrored": frame[:, ::-1],
        "channel": frame[..., 1],
        "fresh": frame[:200] + 1,
    }


def checksums(value: list[np.ndarray[Any, Any]]) -> list[tuple[tuple[int, ...], str, float]]:
    """What the worker saw of each array: shape, dtype and the sum of its values."""
    return [(a.shape, a.dtype.str, float(a.astype(np.float64).sum())) for a in value]


def make_frame(seed: int) -> np.ndarray[Any, Any]:
    """A small input, a large result (larger than any segment the parent made so far)."""
    return np.full((1080, 1920, 3), seed % 256, dtype=np.uint8)


def die_on(value: object) -> tuple[object, int]:
    if value == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    if value == "exit3":
        os._exit(3)
    return value, os.getpid()


def frame_job(item: tuple[np.ndarray[Any, Any], str]) -> np.ndarray[Any, Any]:
    """``(frame, job)``: ``"same"`` returns the frame, ``"new"`` returns ``frame ^ 1``,
    ``"sigkill"`` kills this worker."""
    frame, job = item
    if job == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    return frame if job == "same" else frame ^ 1


def raise_value_error(value: object) -> None:
    raise ValueError(f"bad item {value!r}")


class TwoArgError(Exception):
    """Pickles, but cannot be unpickled: ``args`` holds one string, ``__init__`` wants two."""

    def __init__(self, a: object, b: object) -> None:
        super().__init__(f"{a}/{b}")


def raise_two_arg(value: object) -> None:
    raise TwoArgError(value, "b")


class LockedError(Exception):
    """Cannot be pickled at all."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()


def raise_locked(value: object) -> None:
    raise LockedError(f"locked {value!r}")


def return_lock(value: object) -> threading.Lock:
    return threading.Lock()


def count_up(n: int) -> Iterator[int]:
    yield from range(n)


def hang_on_path(value: object) -> int:
    """With a path: write our PID there and never return. Otherwise return our PID."""
    if isinstance(value, str):
        tmp = Path(value + ".tmp")
        tmp.write_text(str(os.getpid()))
        tmp.rename(value)  # atomic: the test never reads a half-written file
        while True:
            time.sleep(3600)
    return os.getpid()


def echo_or_hang_on_path(value: object) -> object:
    """With a path: as :func:`hang_on_path`. Otherwise the value itself."""
    if isinstance(value, str):
        hang_on_path(value)
    return value


def with_blob(value: object) -> dict[str, object]:
    """The value and a large bytearray made here (it crosses out of band, not as an array)."""
    return {"value": value, "blob": bytearray(b"x" * 100_000)}


def rendezvous(args: tuple[str, int]) -> int:
    """Arrive at a barrier in folder ``args[0]`` and wait until ``args[1]`` workers are there.

    Passes only if that many calls run at the same time, in different processes.
    """
    folder, expected = Path(args[0]), args[1]
    (folder / str(os.getpid())).touch()
    deadline = time.monotonic() + BARRIER_S
    while len(list(folder.iterdir())) < expected:
        if time.monotonic() > deadline:
            msg = f"only {len(list(folder.iterdir()))} of {expected} workers reached the barrier"
            raise TimeoutError(msg)
        time.sleep(0.005)
    return os.getpid()


def write(path: Path, text: str) -> None:
    path.write_text(text)


@dataclass
class Detection:
    label: str
    box: np.ndarray[Any, Any]
    mask: np.ndarray[Any, Any]


@af.block
def decorated(x: int) -> tuple[int, int]:
    return x, os.getpid()


class Recorder(af.Block):
    """Records in which processes ``setup`` ran; ``teardown`` leaves a file in ``out_dir``."""

    def __init__(self, out_dir: str, **options: Any) -> None:
        super().__init__(**options)
        self.out_dir = out_dir
        self.setup_pids: list[int] = []
        self.items = 0

    async def setup(self) -> None:
        await asyncio.sleep(0)
        self.setup_pids.append(os.getpid())

    async def process(self, item: Any) -> dict[str, Any]:
        await asyncio.sleep(0)
        self.items += 1
        return {"item": item, "pid": os.getpid(), "setup_pids": list(self.setup_pids)}

    async def teardown(self) -> None:
        write(Path(self.out_dir, f"teardown-{os.getpid()}"), str(self.items))


class Lingering(af.Block):
    """Leaves a file in ``out_dir`` as its setup starts (``setup-PID``), as each call starts
    (``call-PID``) and at its teardown (``teardown-PID``); its setup and its calls then take
    ``setup_s`` and ``call_s`` seconds: time for a test to kill the parent meanwhile."""

    def __init__(self, out_dir: str, setup_s: float, call_s: float, **options: Any) -> None:
        super().__init__(**options)
        self.out_dir = out_dir
        self.setup_s = setup_s
        self.call_s = call_s

    async def setup(self) -> None:
        write(Path(self.out_dir, f"setup-{os.getpid()}"), "")
        await asyncio.sleep(self.setup_s)

    async def process(self, item: Any) -> Any:
        write(Path(self.out_dir, f"call-{os.getpid()}"), "")
        await asyncio.sleep(self.call_s)
        return item

    async def teardown(self) -> None:
        write(Path(self.out_dir, f"teardown-{os.getpid()}"), "")


class Splitter(af.Block):
    async def process(self, item: Any) -> AsyncIterator[Any]:
        for part in item:
            await asyncio.sleep(0)
            yield part


class Doubler(af.Block):
    def process(self, item: Any) -> Any:
        return item * 2


class FailingSetup(af.Block):
    async def setup(self) -> None:
        raise RuntimeError("no model here")

    async def process(self, item: Any) -> Any:
        return item


class StuckTeardown(af.Block):
    """``teardown`` announces itself in ``out_dir`` and never ends."""

    def __init__(self, out_dir: str) -> None:
        super().__init__()
        self.out_dir = out_dir

    async def process(self, item: Any) -> int:
        return os.getpid()

    async def teardown(self) -> None:
        write(Path(self.out_dir, "teardown-started"), "")
        await asyncio.sleep(3600)


class FailingTeardown(af.Block):
    async def process(self, item: Any) -> Any:
        return item

    async def teardown(self) -> None:
        raise OSError("could not release the camera")


class WithLock(af.Block):
    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()

    async def process(self, item: Any) -> Any:
        return item


def ident(value: object) -> object:
    """The identity, for cancellation sweeps (issue 10, defect 1)."""
    return value


class AwaitsCancelledOn3(af.Block):
    """Item 3 awaits a future that someone else cancelled, in the worker's event loop: a
    CancelledError that is not a cancellation of the run (issue 10, defect 2)."""

    async def process(self, item: int) -> int:
        if item == 3:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            fut.cancel()
            await fut
        return item


class DeadLetters:
    """A dead-letter sink that pickles (a process block's options travel to its workers; the
    sink itself is called in the parent)."""

    def __init__(self) -> None:
        self.letters: list[tuple[Any, af.BlockError]] = []

    def __call__(self, item: Any, err: af.BlockError) -> None:
        self.letters.append((item, err))
