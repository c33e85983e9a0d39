"""Code that the fault-matrix and random-cancellation tests run in worker processes.

A spawned worker imports its block's class by name, so these live at module level in an
importable module (see ``proc_targets``). Workers cannot append to the test's lists, so they
leave files in a folder the test names: ``setup-<pid>`` when a setup finished and
``teardown-<pid>`` when a teardown finished.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aioflow as af


def die(how: str) -> None:
    """End this process the way ``how`` says, or raise what it names."""
    if how == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif how == "exit":
        os._exit(3)
    elif how == "segfault":
        ctypes.string_at(0)  # reads address 0: SIGSEGV in native code
    elif how == "value_error":
        raise ValueError("worker says no")
    elif how == "keyboard_interrupt":
        raise KeyboardInterrupt
    elif how == "system_exit":
        raise SystemExit(4)
    time.sleep(3600)  # "hang": a worker stuck in native code


def touch(folder: str, name: str, *, first: bool = False) -> bool:
    """Leave the file ``name`` in ``folder``; with ``first``, only if it is not there yet
    (True when this call made it)."""
    path = Path(folder, name)
    if first and path.exists():
        return False
    path.touch()
    return True


class FaultyWorker(af.Block):
    """A process block: its first ``setup`` dies by ``on_setup`` (once: a marker file says it
    did), and the item equal to ``on_item`` dies by ``how``. Setups and teardowns leave files in
    ``folder``."""

    def __init__(
        self,
        folder: str,
        *,
        on_setup: str | None = None,
        on_item: object = None,
        how: str = "sigkill",
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.folder = folder
        self.on_setup = on_setup
        self.on_item = on_item
        self.how = how

    async def setup(self) -> None:
        await asyncio.sleep(0)
        if self.on_setup is not None and touch(self.folder, "setup-died", first=True):
            die(self.on_setup)
        touch(self.folder, f"setup-{os.getpid()}")

    async def process(self, item: Any) -> Any:
        if item == self.on_item:
            die(self.how)
        return item

    async def teardown(self) -> None:
        touch(self.folder, f"teardown-{os.getpid()}")


class SlowLife(af.Block):
    """A process block with a slow ``setup`` and ``teardown`` (``delay`` seconds each), for
    cancellation at random moments. Files in ``folder`` record both."""

    def __init__(self, folder: str, *, delay: float = 0.0, **options: Any) -> None:
        super().__init__(**options)
        self.folder = folder
        self.delay = delay

    async def setup(self) -> None:
        await asyncio.sleep(self.delay)
        touch(self.folder, f"setup-{os.getpid()}")

    async def process(self, item: Any) -> Any:
        return item

    async def teardown(self) -> None:
        await asyncio.sleep(self.delay)
        touch(self.folder, f"teardown-{os.getpid()}")


def ident(x: object) -> object:
    return x


# -- KeyboardInterrupt / SystemExit raised by user code, run as a script ------------------------


def _raise(exc: str) -> None:
    if exc == "KeyboardInterrupt":
        raise KeyboardInterrupt
    raise SystemExit(4)


def interrupted_script(executor: str, where: str, exc: str, mode: str = "run") -> None:
    """What ``python -c`` runs for one interrupt cell: a user script whose block ``b`` raises
    ``exc`` in ``where`` (setup, process, teardown, batch, generator), then a block ``after``.

    It drives the pipeline with ``pipe.run()``, ``pipe.stream()`` or ``open()`` + one
    ``submit()`` at a time (``mode``), prints one line per lifecycle event and, when the call
    raises, which exception reached it; then it lets the exception end the script, as a
    user's script would.
    """

    def say(line: str) -> None:
        print(line, flush=True)

    on_thread = executor == "thread"

    class Interrupting(af.Block):
        async def setup(self) -> None:
            say("setup b")
            if where == "setup":
                _raise(exc)

        async def teardown(self) -> None:
            say("teardown b")
            if where == "teardown":
                _raise(exc)

    class AsyncB(Interrupting):
        async def process(self, item: Any) -> Any:
            await asyncio.sleep(0)
            if where == "process" and item == 3:
                _raise(exc)
            return item

    class ThreadB(Interrupting):
        def process(self, item: Any) -> Any:
            if where == "process" and item == 3:
                _raise(exc)
            return item

    class BatchB(Interrupting):
        def process(self, items: list[Any]) -> list[Any]:
            if 3 in items:
                _raise(exc)
            return items

    class AsyncBatchB(Interrupting):
        async def process(self, items: list[Any]) -> list[Any]:
            await asyncio.sleep(0)
            if 3 in items:
                _raise(exc)
            return items

    class AsyncGenB(Interrupting):
        async def process(self, item: Any) -> AsyncIterator[Any]:
            yield item
            await asyncio.sleep(0)
            if item == 3:
                _raise(exc)  # half-way: after the item's first output
            yield -item

    class GenB(Interrupting):
        def process(self, item: Any) -> Iterator[Any]:
            yield item
            if item == 3:
                _raise(exc)
            yield -item

    blk: af.Block
    if where == "batch":
        batch = af.Batch(max_size=4, max_wait=0.001)
        blk = BatchB(name="b", batch=batch) if on_thread else AsyncBatchB(name="b", batch=batch)
    elif where == "generator":
        blk = GenB(name="b") if on_thread else AsyncGenB(name="b")
    else:
        blk = ThreadB(name="b") if on_thread else AsyncB(name="b")

    class After(af.Block):
        async def setup(self) -> None:
            say("setup after")

        def process(self, item: Any) -> Any:
            return item

        async def teardown(self) -> None:
            say("teardown after")

    async def drive(pipe: af.Pipeline) -> None:
        if mode == "run":
            await pipe.run(range(100))
        elif mode == "stream":
            async for _ in pipe.stream(range(100)):
                pass
        else:
            async with pipe.open() as running:
                for x in range(100):
                    await running.submit(x)

    async def main() -> None:
        pipe = af.Pipeline(blk, After(name="after", executor="thread"))
        try:
            await drive(pipe)
        except BaseException as caught:
            say(f"{mode} raised {type(caught).__name__}")
            raise
        say(f"{mode} returned")

    asyncio.run(main())
