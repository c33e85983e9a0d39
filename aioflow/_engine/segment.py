"""Running a segment of a pipeline on behalf of another process.

A worker of the distributed mode feeds the items it reads from a stream into an open pipeline of
its blocks and needs, per item, exactly what became of it: every output (a list, however many),
or the reason it made none, or its error. :func:`submit_outcome` is ``submit()`` with that
answer; :func:`sub_pipeline` builds the pipeline of some of a pipeline's stages.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from ..control import EndOfKey
from ..errors import BlockError, PipelineClosed, describe, summarize
from ..graph import iter_blocks
from .channel import ChannelClosed
from .envelope import Envelope, SubmitTicket

if TYPE_CHECKING:
    from ..block import Block
    from ..graph import Branch
    from ..pipeline import Pipeline, RunningPipeline

__all__ = ["KeyedLanes", "Outcome", "sub_pipeline", "submit_outcome", "submit_outcomes"]

logger = logging.getLogger("aioflow")


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one item: its outputs, or (none) the reason and the block."""

    outputs: list[Any]
    reason: str | None = None
    block: str | None = None


class _OutcomeTicket(SubmitTicket):
    __slots__ = ("tag",)

    def __init__(self, future: asyncio.Future[Any], tag: Any = None) -> None:
        super().__init__(future)
        #: what the caller of :func:`submit_outcomes` said the item is (for
        #: :meth:`KeyedLanes.watch`)
        self.tag = tag

    def _settle(self) -> None:
        self.pending -= 1
        if self.pending > 0 or self.future.done():
            return
        reason = None if self.outputs else (self.reason or "filtered")
        self.future.set_result(Outcome(list(self.outputs), reason, self.block))


async def submit_outcome(running: RunningPipeline, item: Any, *, age: float = 0.0) -> Outcome:
    """Send ``item`` through ``running`` and return its :class:`Outcome`.

    ``age``: seconds since the item entered the pipeline elsewhere (in another process), which
    ``max_age`` counts from.

    Raises:
        BlockError: the item failed (the pipeline goes on).
        PipelineClosed: the pipeline is stopping or stopped.
    """
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
            if item.__class__ is EndOfKey:
                run.input.controls += 1  # (before it is buffered: see controls.py)
            await run.input.put(Envelope(item, time.perf_counter() - age, ticket))
        except ChannelClosed:
            msg = f"pipeline {running.name!r} is not accepting items: it is stopping or stopped"
            raise PipelineClosed(msg) from None
        return await future
    finally:
        tickets.discard(ticket)


async def submit_outcomes(
    running: RunningPipeline,
    items: Sequence[Any],
    ages: Sequence[float] | None = None,
    tags: Sequence[Any] | None = None,
    *,
    after: Awaitable[Any] | None = None,
    put: Callable[[], None] | None = None,
) -> list[Outcome | BlockError]:
    """Send ``items`` through ``running`` together and return what became of each, in order:
    its :class:`Outcome`, or the :class:`BlockError` it failed with (the others go on). One
    call for a burst of items: no task per item. ``ages``: each item's seconds since it
    entered the pipeline elsewhere (see :func:`submit_outcome`). ``tags``: what each item is,
    for whoever :meth:`KeyedLanes.watch`-es a keyed block (the item's outputs keep its tag).
    ``after``: awaited before the first item is put in; ``put``: called once all are in (a
    caller that submits from several tasks keeps their items in its order with them: tasks
    that wait for room in a full input take it in no set order).

    Raises:
        PipelineClosed: the pipeline is stopping or stopped.
    """
    run = running._run
    if running.closed:
        msg = f"pipeline {running.name!r} is not accepting items: it is stopping or stopped"
        raise PipelineClosed(msg)
    loop = asyncio.get_running_loop()
    tickets = run.tickets
    mine: list[_OutcomeTicket] = []
    try:
        if after is not None:
            await after
        for position, item in enumerate(items):
            ticket = _OutcomeTicket(loop.create_future(), None if tags is None else tags[position])
            tickets.add(ticket)
            mine.append(ticket)
            age = 0.0 if ages is None else ages[position]
            try:
                if item.__class__ is EndOfKey:
                    run.input.controls += 1
                await run.input.put(Envelope(item, time.perf_counter() - age, ticket))
            except ChannelClosed:
                msg = f"pipeline {running.name!r} is not accepting items: it is stopping or stopped"
                raise PipelineClosed(msg) from None
        if put is not None:
            put()
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


class KeyedLanes:
    """The per-key lanes of one keyed block of a running segment: what the distributed mode's
    partitions snapshot, restore and drop (``aioflow/transport/partitions.py``)."""

    def __init__(self, running: RunningPipeline, name: str) -> None:
        found = [rt for rt in running._run.blocks if rt.name == name]
        if not found:
            msg = f"no block {name!r} in pipeline {running.name!r}"
            raise KeyError(msg)
        self._rt = found[0]
        self._running = running
        #: whether the block keeps a state per key (``state=`` or ``create_state``)
        self.stateful = bool(self._rt.block._aioflow_stateful)

    @property
    def key(self) -> Callable[[Any], Hashable]:
        """The block's key function."""
        return cast("Callable[[Any], Hashable]", self._rt.opts.key)

    def watch(self, seen: Callable[[Hashable, Any], None]) -> None:
        """Call ``seen(key, tag)`` as each item reaches the block: its key, and the tag its
        input was submitted with (:func:`submit_outcomes`; None when it has none)."""

        def on_key(key: Hashable, env: Envelope) -> None:
            ticket = env.ticket
            seen(key, ticket.tag if isinstance(ticket, _OutcomeTicket) else None)

        self._rt.on_key = on_key

    async def evict(
        self, keys: Sequence[Hashable], tag: Any = None
    ) -> list[tuple[Hashable, list[Outcome | BlockError]]]:
        """End ``keys`` as the end of a stream ends every key of a local run: take each idle
        one out of the block, call its ``evict`` hook, and send what the hook returns through
        the rest of the segment, as a local run sends its end-of-stream flush. Returns, per key
        evicted (in ``keys``' order; a key the block does not hold, or one still busy, is left
        out), what became of each of its outputs in the rest of the segment. ``tag``: the
        outputs' tag, as :func:`submit_outcomes`' (a later watched block sees it).

        Raises:
            BlockError: a hook failed (the keys after it are evicted without their hook).
            PipelineClosed: the segment is stopping or stopped.
        """
        rt = self._rt
        lanes = rt.lanes
        taken = []
        for key in keys:
            try:
                # (finding a user's key hashes and compares it, which it may refuse: it is left
                # in place then, as a local run's end leaves it, see BlockRuntime._forget)
                lane = lanes.get(key)
                if lane is None or lane.ended or lane.busy or lane.backlog:
                    continue
                del lanes[key]
            except Exception as exc:
                _refused(rt.name, key, exc)
                continue
            taken.append((key, lane))
        run = self._running._run
        loop = asyncio.get_running_loop()
        found: list[tuple[Hashable, list[Outcome | BlockError]]] = []
        mine: list[_OutcomeTicket] = []
        try:
            per_key: list[tuple[Hashable, list[_OutcomeTicket]]] = []
            for key, lane in taken:
                tickets: list[_OutcomeTicket] = []
                for value in await rt.evict_outputs(key, lane):
                    ticket = _OutcomeTicket(loop.create_future(), tag)
                    run.tickets.add(ticket)
                    mine.append(ticket)
                    tickets.append(ticket)
                    rt.flushed += 1
                    try:
                        await rt.out.put(Envelope(value, time.perf_counter(), ticket))
                    except ChannelClosed:
                        msg = f"pipeline {self._running.name!r} is stopping or stopped"
                        raise PipelineClosed(msg) from None
                per_key.append((key, tickets))
            for key, tickets in per_key:
                outcomes: list[Outcome | BlockError] = []
                for ticket in tickets:
                    try:
                        outcomes.append(await ticket.future)
                    except BlockError as err:
                        outcomes.append(err)
                found.append((key, outcomes))
            return found
        finally:
            for ticket in mine:
                run.tickets.discard(ticket)
                future = ticket.future
                if not future.done():
                    future.cancel()
                elif not future.cancelled():
                    future.exception()  # retrieved: nobody else will look

    def keep(self) -> None:
        """Keep the keys when the segment ends instead of evicting them: their state lives on
        in Redis for the partition's next owner."""
        self._rt.keep_state = True

    def states(self, want: Callable[[Hashable], bool]) -> list[tuple[Hashable, Any]]:
        """``(key, state)`` of every key ``want`` accepts (keys without a state yet left
        out). The keys are not hashed again (a user's key may refuse to be, any time); a key
        ``want`` raises for is left out."""
        from .runner import _NOTHING

        found = []
        for key, lane in list(self._rt.lanes.items()):
            if lane.state is _NOTHING or lane.ended:
                continue
            try:
                wanted = want(key)
            except Exception as exc:
                _refused(self._rt.name, key, exc)
                continue
            if wanted:
                found.append((key, lane.state))
        return found

    def restore(self, pairs: Sequence[Sequence[Any]], want: Callable[[Hashable], bool]) -> None:
        """Make the keys ``want`` accepts hold exactly the states of the ``[key, state]``
        pairs: each pair's key its state, every other key none (an idle one is taken out).

        A lane still busy gets its state replaced too: the caller restores keys none of whose
        items are in the block (a partition taken over with nothing in flight), so a busy lane
        is only finishing its part of other keys' items (sending their outputs on in order)
        and its state is a leftover of an earlier ownership, which would otherwise count the
        items processed again after the snapshot a second time."""
        from .runner import _NOTHING, _Lane

        name = self._rt.name
        lanes = self._rt.lanes
        given: dict[Hashable, Any] = {key: state for key, state in pairs}  # noqa: C416
        for key, lane in list(lanes.items()):
            try:
                # (a user's key may refuse to be hashed or compared: it is not among the
                # snapshot's, whose keys were written and read back)
                if not want(key) or key in given:
                    continue
            except Exception as exc:
                _refused(name, key, exc)
            if lane.busy or lane.backlog:
                lane.state = _NOTHING
            else:
                _take_out(lanes, key, lane)
        for key, state in given.items():
            try:
                found = lanes.get(key)
                if found is None or found.ended:
                    found = lanes[key] = _Lane()
            except Exception as exc:  # (compared with a key held that refuses)
                _refused(name, key, exc)
                continue
            found.state = state

    def drop(self, want: Callable[[Hashable], bool]) -> int:
        """Forget the idle keys ``want`` accepts (another worker owns them now); how many."""
        lanes = self._rt.lanes
        gone = 0
        for key, lane in list(lanes.items()):
            if lane.busy or lane.backlog:
                continue
            try:
                if not want(key):
                    continue
            except Exception as exc:
                _refused(self._rt.name, key, exc)
                continue
            _take_out(lanes, key, lane)
            gone += 1
        return gone


def _take_out(lanes: dict[Hashable, Any], key: Hashable, lane: Any) -> None:
    """Take the idle ``lane`` of ``key`` out of ``lanes``; a key that refuses to be found
    (its ``__hash__`` or ``__eq__`` raises now) leaves it in place, ended and without state,
    as a local run does (``BlockRuntime._forget``)."""
    from .runner import _NOTHING

    try:
        if lanes.get(key) is lane:
            del lanes[key]
        return
    except Exception:
        pass
    lane.ended = True
    lane.state = _NOTHING


def _refused(block: str, key: object, exc: Exception) -> None:
    logger.warning(
        "block %r: finding the key %s among the keys held raised %s; it is left as it is",
        block,
        summarize(key),
        describe(exc),
        extra={"block": block},
    )
