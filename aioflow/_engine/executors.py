"""Where blocks run when they do not run on the event loop.

Every thread aioflow starts is started here and joined here. A thread block owns a
:class:`~concurrent.futures.ThreadPoolExecutor` sized to its ``workers``, created when the run
starts and joined when it ends. A thread call cannot be interrupted: on cancellation, queued calls
are cancelled and running ones are left to return; the run ends only once they have, so no thread
outlives it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from types import CoroutineType
from typing import Any, TypeVar

__all__ = [
    "call_in_thread",
    "check_not_coroutine",
    "shutdown_pool",
    "thread_pool",
    "wait_through_cancel",
]

T = TypeVar("T")


def check_not_coroutine(result: Any, made: str = "returned") -> None:
    """Raise a TypeError if a thread block's plain function returned (or its generator
    yielded: ``made``) a coroutine, a lambda calling a coroutine function, say: nothing in its
    thread can await it, and handed on as an output it would never run. The coroutine is
    closed, so Python does not warn of it. (The item's :class:`~aioflow.BlockError` names the
    block.)"""
    if result.__class__ is CoroutineType:
        result.close()
        msg = (
            f"the function {made} a coroutine, which nothing would await: a plain function "
            "runs in a thread; make the block a coroutine function (async def, awaiting what "
            "it calls) to run it on the event loop"
        )
        raise TypeError(msg)


def thread_pool(block: str, workers: int) -> ThreadPoolExecutor:
    """A pool of ``workers`` threads for one block, named after it."""
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"aioflow[{block}]")


async def wait_through_cancel(fut: asyncio.Future[Any]) -> None:
    """Wait for ``fut`` even if we are cancelled meanwhile; re-raise the cancellation after.

    A cancellation that arrives in the same loop turn as ``fut``'s completion is a cancellation
    all the same: it is kept, never dropped because ``fut`` happens to be done by then.
    """
    cancellation: asyncio.CancelledError | None = None
    while not fut.done():
        try:
            await asyncio.shield(fut)
        except asyncio.CancelledError as exc:
            cancellation = exc
    if cancellation is not None:
        raise cancellation


async def shutdown_pool(pool: ThreadPoolExecutor) -> None:
    """Cancel queued calls, wait (without blocking the loop) for running ones, join the threads."""
    pool.shutdown(wait=False, cancel_futures=True)
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def join() -> None:
        pool.shutdown(wait=True)
        loop.call_soon_threadsafe(_set_done, done)

    joiner = threading.Thread(target=join, name="aioflow-pool-join", daemon=True)
    joiner.start()
    try:
        await wait_through_cancel(done)
    finally:
        if done.done():
            joiner.join()


def _set_done(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


async def call_in_thread(fn: Callable[[], T], pool: ThreadPoolExecutor | None = None) -> T:
    """Run a blocking call off the event loop: in ``pool`` when given, else in a short-lived
    pool of one thread that is joined before returning."""
    loop = asyncio.get_running_loop()
    if pool is not None:
        return await loop.run_in_executor(pool, fn)
    own = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aioflow-call")
    try:
        return await loop.run_in_executor(own, fn)
    finally:
        await shutdown_pool(own)
