"""Telling a cancellation of the run from a ``CancelledError`` that a block's own code raised.

A :class:`asyncio.CancelledError` reaches the engine in two ways. Either the run (or the task of
one of its blocks) is being cancelled: the task's :meth:`~asyncio.Task.cancelling` count is
above zero, and the error must travel up untouched. Or the user's code raised it while nobody was
cancelling the run: it awaited a future that someone else cancelled, called ``.result()`` on a
cancelled future, or raised it by hand. That one is an item failure like any other exception
(a :class:`~aioflow.errors.BlockError`, a skip, a retry, a dead letter); were it let through,
the worker's task would end as *cancelled*, which a :class:`asyncio.TaskGroup` takes as a quiet
exit: the run would be cut short without a word, or hang waiting for the item.

The engine catches every ``BaseException`` around user code and passes the error through
:func:`as_failure`, which re-raises a real cancellation (and an interrupt) and wraps a stray one,
or any other ``BaseException`` that is not an ``Exception``, in :class:`StrayCancel`, an
``Exception`` that the ordinary failure paths handle. The
:class:`~aioflow.errors.BlockError` made from it carries the original ``CancelledError`` as its
``__cause__``.

A ``KeyboardInterrupt`` or ``SystemExit`` raised by the user's code (on the loop, or in a block's
thread, whose future then holds it) is neither: it stops the run. It must not reach the
:class:`asyncio.Task` machinery bare, which re-raises it out of the event loop (leaving the run's
tasks pending and its caller with a ``GeneratorExit``). Every task of the run runs its coroutine
through :func:`carrying_interrupts`, which turns it into :class:`Interrupted`, an ``Exception``
that the run's task groups handle like a failure (every other block is cancelled and torn down);
the caller of the run then raises the interrupt itself, bare.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from ..errors import describe

__all__ = [
    "INTERRUPTS",
    "Interrupted",
    "StrayCancel",
    "as_failure",
    "being_cancelled",
    "carrying_interrupts",
    "checkpoint",
    "cause_of",
    "describe_failure",
    "from_sync",
]

T = TypeVar("T")


class Interrupted(Exception):
    """A ``KeyboardInterrupt`` or ``SystemExit`` from the user's code, on its way to the caller
    of the run (which raises :attr:`error`, bare)."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(error)
        self.error = error

    def __str__(self) -> str:
        return f"the run was stopped by {describe(self.error)}"


async def carrying_interrupts(coro: Coroutine[Any, Any, T]) -> T:
    """Await ``coro``; a ``KeyboardInterrupt`` or ``SystemExit`` it raises comes out as
    :class:`Interrupted`. For the coroutine of every task the run starts."""
    try:
        return await coro
    except (KeyboardInterrupt, SystemExit) as exc:
        raise Interrupted(exc) from exc


#: What the user's code may raise that is never an item failure: ``KeyboardInterrupt`` and
#: ``SystemExit`` stop the run (see :class:`Interrupted`); ``GeneratorExit`` is a coroutine being
#: closed. Every other ``BaseException`` (a stray ``CancelledError``, a library's own
#: ``BaseException`` subclass such as pytest's ``Failed``) fails its item like an ``Exception``.
INTERRUPTS = (KeyboardInterrupt, SystemExit, GeneratorExit)


class StrayCancel(Exception):
    """A ``BaseException`` that is not an ``Exception`` raised by a block's code, as an item
    failure: a ``CancelledError`` while its task was not being cancelled, or a
    ``BaseException`` subclass of the user's or a library's (not one of :data:`INTERRUPTS`)."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(error)
        self.error = error

    def __str__(self) -> str:
        if not isinstance(self.error, asyncio.CancelledError):
            return describe(self.error)
        return (
            f"{describe(self.error)} raised by the block's own code while the run was not "
            "being cancelled"
        )


def being_cancelled() -> bool:
    """Whether the current task has a cancellation request pending (it is being cancelled)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def checkpoint() -> None:
    """Raise ``CancelledError`` when the current task is being cancelled. asyncio delivers a
    cancellation once, at the next await: user code that swallows it (``except
    CancelledError: return x``, a ``try``/``except BaseException``) would leave a block's task
    running on after the run was cancelled, waiting for items that never come, and the run
    would never end. Each wait of the engine (channels, the reorder window) and each return
    from a call of the user's code checks again, so the cancellation still ends the task."""
    task = asyncio.current_task()
    if task is not None and task.cancelling() > 0:
        raise asyncio.CancelledError


def as_failure(exc: BaseException) -> Exception:
    """``exc`` as an item failure. A ``CancelledError`` while the current task is being
    cancelled, and an interrupt (``KeyboardInterrupt``, ``SystemExit``, ``GeneratorExit``: see
    :data:`INTERRUPTS`), is re-raised; any other ``BaseException`` is wrapped."""
    if isinstance(exc, Exception):
        return exc
    if isinstance(exc, INTERRUPTS) or (
        isinstance(exc, asyncio.CancelledError) and being_cancelled()
    ):
        raise exc
    return StrayCancel(exc)


def from_sync(exc: BaseException) -> Exception:
    """``exc``, raised by the user's synchronous code (in a worker thread, or a plain call on the
    loop), as an item failure. Nobody cancels synchronous code, so a CancelledError from it is
    always the user's own; an interrupt (:data:`INTERRUPTS`) is re-raised."""
    if isinstance(exc, Exception):
        return exc
    if isinstance(exc, INTERRUPTS):
        raise exc
    return StrayCancel(exc)


def cause_of(exc: BaseException) -> BaseException:
    """The exception the user's code raised (the ``CancelledError`` inside a StrayCancel)."""
    return exc.error if isinstance(exc, StrayCancel) else exc


def describe_failure(exc: BaseException) -> str:
    """:func:`~aioflow.errors.describe`, saying so when a CancelledError was the user's own."""
    return str(exc) if isinstance(exc, StrayCancel) else describe(exc)
