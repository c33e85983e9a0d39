"""What travels on the edges: an :class:`Envelope` around each item, and the tickets that follow
an item's fate.

An envelope is made once, when the item enters the pipeline, and reused by every 1:1 block on the
way (only its ``value`` changes), so the per-item cost of the bookkeeping is one small object.
``born`` stamps the entry time (for ``max_age``); ``ticket`` is ``None`` in ``run()`` and
``stream()`` and, for ``submit()`` and branch members, an object told of every way the item ends:
outputs, drops, failures. A generator block that makes several outputs from one item *forks* the
ticket, so the ticket knows when the last descendant has ended.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..errors import BlockError, ItemDropped

__all__ = ["Envelope", "SubmitTicket", "Ticket"]


class Ticket:
    """Follows one item and its descendants through the pipeline.

    ``pending`` counts the envelopes of this item still in the pipeline. Every envelope ends by
    exactly one of :meth:`output`, :meth:`drop` or :meth:`fail`; :meth:`fork` adds one.
    """

    __slots__ = ("pending",)

    def __init__(self) -> None:
        self.pending = 1

    def fork(self) -> None:
        self.pending += 1

    def output(self, value: Any) -> None:
        raise NotImplementedError

    def drop(self, reason: str, block: str) -> None:
        raise NotImplementedError

    def release(self) -> None:
        """One envelope's unit ends without an outcome of its own (its outputs carry their own
        units)."""
        raise NotImplementedError

    def fail(self, error: BlockError) -> bool:
        """Deliver ``error`` to whoever waits for this item; False if nobody does (the error
        must then fail the run)."""
        raise NotImplementedError


class Envelope:
    """One item in flight."""

    __slots__ = ("born", "ticket", "value")

    def __init__(self, value: Any, born: float, ticket: Ticket | None) -> None:
        self.value = value
        self.born = born
        self.ticket = ticket

    def __repr__(self) -> str:
        return f"<Envelope {self.value!r}>"


class SubmitTicket(Ticket):
    """The ticket of one ``submit()`` call: resolves the caller's future when the item ends."""

    __slots__ = ("block", "future", "outputs", "reason")

    def __init__(self, future: asyncio.Future[Any]) -> None:
        super().__init__()
        self.future = future
        self.outputs: list[Any] = []
        self.reason: str | None = None
        self.block: str | None = None

    def output(self, value: Any) -> None:
        self.outputs.append(value)
        self._settle()

    def drop(self, reason: str, block: str) -> None:
        if self.reason is None:
            self.reason = reason
            self.block = block
        self._settle()

    def release(self) -> None:
        self._settle()

    def fail(self, error: BlockError) -> bool:
        self.pending -= 1
        if not self.future.done():
            self.future.set_exception(error)
        return True

    def _settle(self) -> None:
        self.pending -= 1
        if self.pending > 0 or self.future.done():
            return
        outputs = self.outputs
        if len(outputs) == 1:
            self.future.set_result(outputs[0])
        elif outputs:
            self.future.set_result(list(outputs))
        else:
            self.future.set_exception(
                ItemDropped(self.reason or "filtered", self.block or "pipeline")
            )
