"""Running a coroutine on a uvloop event loop."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from .errors import GraphError

__all__ = ["loop_factory", "run"]

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """``uvloop.new_event_loop`` where uvloop is installed (not on Windows), else asyncio's."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - Windows
        return asyncio.new_event_loop
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(main: Coroutine[Any, Any, T], *, debug: bool | None = None) -> T:
    """Run ``main`` to completion on a fresh uvloop event loop (``asyncio.Runner``).

    The entry point for scripts: ``af.run(main())``. Inside an already running loop, ``await``
    pipelines directly instead.

    Raises:
        GraphError: ``main`` is not a coroutine, or an event loop is already running in this
            thread (say ``await`` instead).

    >>> async def answer() -> int:
    ...     return 42
    >>> run(answer())
    42
    """
    target: object = main  # checked at run time too: users call this without a type checker
    if not inspect.iscoroutine(target):
        what = "a coroutine function" if inspect.iscoroutinefunction(target) else "it"
        msg = (
            f"af.run() needs a coroutine, got {target!r} ({type(target).__name__}); call "
            f"{what} first: af.run(main())"
        )
        raise GraphError(msg)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        main.close()  # never started: close it so it does not warn "never awaited"
        msg = (
            "af.run() was called inside a running event loop (an async function, a notebook, "
            "a web server); there, await the coroutine instead: `await pipe.run(items)` rather "
            "than `af.run(pipe.run(items))`"
        )
        raise GraphError(msg)
    with asyncio.Runner(debug=debug, loop_factory=loop_factory()) as runner:
        return runner.run(main)
