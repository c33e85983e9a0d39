"""Running a segment of a pipeline on behalf of another process.

A worker of the distributed mode feeds the items it reads from a stream into an open pipeline of
its blocks and needs, per item, exactly what became of it: every output (a list, however many),
or the reason it made none, or its error. :func:`submit_outcome` is ``submit()`` with that
answer; :func:`sub_pipeline` builds the pipeline of some of a pipeline's stages.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import BlockError, PipelineClosed
from ..graph import iter_blocks
from .channel import ChannelClosed
from .envelope import Envelope, SubmitTicket

if TYPE_CHECKING:
    import asyncio

    from ..block import Block
    from ..graph import Branch
    from ..pipeline import Pipeline, RunningPipeline

__all__ = ["Outcome", "sub_pipeline", "submit_outcome", "submit_outcomes"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one item: its outputs, or (none) the reason and the block."""

    outputs: list[Any]
    reason: str | None = None
    block: str | None = None


class _OutcomeTicket(SubmitTicket):
    __slots__ = ()

    def _settle(self) -> None:
        self.pending -= 1
        if self.pending > 0 or self.future.done():
            return
        reason = None if self.outputs else (self.reason or "filtered")
        self.future.set_result(Outcome(list(self.outputs), reason, self.block))


async def submit_outcome(running: RunningPipeline, item: Any) -> Outcome:
    """Send ``item`` through ``running`` and return its :class:`Outcome`.

    Raises:
        BlockError: the item failed (the pipeline goes on).
        PipelineClosed: the pipeline is stopping or stopped.
    """
    import asyncio

    run = running._run
    if running.closed:
        msg = f"pipeline {running.name!r} is not accepting items: it is stopping or stopped"
        raise PipelineClosed(msg)
    future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
    ticket = _OutcomeTicket(future)
    tickets = run.tickets
    tickets.add(ticket)
    try:
        try:
            await run.input.put(Envelope(item, time.perf_counter(), ticket))
        except ChannelClosed:
            msg = f"pipeline {running.name!r} is not accepting items: it is stopping or stopped"
            raise PipelineClosed(msg) from None
        return await future
    finally:
        tickets.discard(ticket)


async def submit_outcomes(
    running: RunningPipeline, items: Sequence[Any]
) -> list[Outcome | BlockError]:
    """Send ``items`` through ``running`` together and return what became of each, in order:
    its :class:`Outcome`, or the :class:`BlockError` it failed with (the others go on). One
    call for a burst of items: no task per item.

    Raises:
        PipelineClosed: the pipeline is stopping or stopped.
    """
    import asyncio

    run = running._run
    if running.closed:
        msg = f"pipeline {running.name!r} is not accepting items: it is stopping or stopped"
        raise PipelineClosed(msg)
    loop = asyncio.get_running_loop()
    tickets = run.tickets
    mine: list[_OutcomeTicket] = []
    try:
        for item in items:
            ticket = _OutcomeTicket(loop.create_future())
            tickets.add(ticket)
            mine.append(ticket)
            try:
                await run.input.put(Envelope(item, time.perf_counter(), ticket))
            except ChannelClosed:
                msg = f"pipeline {running.name!r} is not accepting items: it is stopping or stopped"
                raise PipelineClosed(msg) from None
        found: list[Outcome | BlockError] = []
        for ticket in mine:
            try:
                found.append(await ticket.future)
            except BlockError as err:
                found.append(err)
        return found
    finally:
        for ticket in mine:
            tickets.discard(ticket)
            future = ticket.future
            if not future.done():
                future.cancel()
            elif not future.cancelled():
                future.exception()  # retrieved: nobody else will look


def sub_pipeline(pipeline: Pipeline, stages: Sequence[Block | Branch], name: str) -> Pipeline:
    """A pipeline of some of ``pipeline``'s stages (a segment of it, or the caller's local part).

    The stages' ``af.Block`` instances stay ``pipeline``'s: they are lent to the new pipeline
    (which checks and runs them like any other) without changing owner.
    """
    from ..pipeline import Pipeline

    blocks = list(iter_blocks(stages))
    owners = [blk._aioflow_owner for blk in blocks]
    for blk in blocks:
        blk._aioflow_owner = None
    try:
        return Pipeline(*stages, name=name)
    finally:
        for blk, owner in zip(blocks, owners, strict=True):
            blk._aioflow_owner = owner
