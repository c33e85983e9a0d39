"""The reorder window of a block with several workers and ``ordered=True``.

Items are numbered as they are taken from the block's input; results leave in number order. The
window has ``workers`` slots: a slot is taken before an item is read and given back only when that
item's outputs have left, so a block holds at most ``queue_size + workers`` items, those finished
but waiting for their turn included.

A worker whose item is at the head of the window may stream outputs directly (generators);
others buffer one output and then wait for their turn, so memory stays bounded however many
outputs one input makes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from .cancelling import checkpoint
from .envelope import Envelope

__all__ = ["ReorderWindow", "Sequencer"]


class ReorderWindow(Protocol):
    """What sending an item's outputs in order needs: :class:`Sequencer`, or the thread fast
    path's own window (:mod:`.pulling`)."""

    async def complete(self, seq: int, outputs: Sequence[Envelope]) -> None: ...


class Sequencer:
    """Numbers items on the way in and releases their outputs in that order."""

    __slots__ = ("_done", "_emit", "_head", "_next", "_slots", "_turn")

    def __init__(self, window: int, emit: Callable[[Envelope], Awaitable[object]]) -> None:
        self._slots = asyncio.Semaphore(window)
        self._emit = emit
        self._next = 0
        self._head = 0
        self._done: dict[int, Sequence[Envelope]] = {}
        self._turn: dict[int, asyncio.Future[None]] = {}

    async def acquire(self) -> None:
        """Wait for a free slot (call before reading an item)."""
        if self._slots.locked():
            checkpoint()  # (a cancellation that the user's code swallowed still ends the task)
        await self._slots.acquire()

    def try_acquire(self) -> bool:
        """Take a free slot if there is one, without waiting."""
        if self._slots.locked():
            return False
        self._slots._value -= 1  # what acquire() does when not locked, minus the await
        return True

    def release(self) -> None:
        """Give back a slot that was not used (the input ended)."""
        self._slots.release()

    def take(self) -> int:
        """Number the item just read. Call right after reading, with no await in between."""
        seq = self._next
        self._next = seq + 1
        return seq

    def is_head(self, seq: int) -> bool:
        return seq == self._head

    async def wait_turn(self, seq: int) -> None:
        """Wait until ``seq`` is at the head of the window."""
        if seq == self._head:
            return
        checkpoint()
        fut = asyncio.get_running_loop().create_future()
        self._turn[seq] = fut
        try:
            await fut
        finally:
            self._turn.pop(seq, None)

    async def complete(self, seq: int, outputs: Sequence[Envelope]) -> None:
        """Record the outputs of item ``seq``; if it is at the head, send everything that is
        ready, in order."""
        self._done[seq] = outputs
        if seq != self._head:
            return
        done = self._done
        emit = self._emit
        while self._head in done:
            for env in done.pop(self._head):
                await emit(env)
            self._head += 1
            self._slots.release()
            waiter = self._turn.get(self._head)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
                return
