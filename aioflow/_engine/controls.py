"""Control items on the edges: how the stages tell them from items, count them and hand them on.

A control item (:class:`~aioflow.EndOfKey`) is not an item: no block's function gets it, the
statistics leave it out, and every stage hands it on in its place behind the items taken before
it (the last stage ends it). A leaky edge never drops one.

Each edge counts the control items put into it (``Channel.controls``). Whoever puts one counts it,
no later than it enters the edge's buffer: a source or a caller's item (the feed, ``submit()``)
and a stage handing one on (:func:`hand_on`). Control items enter a pipeline at its sources
only: a block's function must not return one. The count lets the serial path
(:meth:`.runner.BlockRuntime._serial`) take a run of items without looking at each: while it has
taken as many control items as its input counted, none waits there. (A count that comes early only
makes it look.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from ..control import EndOfKey
from .channel import Channel
from .envelope import Envelope

__all__ = ["hand_on", "input_counts", "is_control", "keep_control", "snapshot"]


def is_control(env: Envelope) -> bool:
    """Whether ``env`` carries a control item."""
    return env.value.__class__ is EndOfKey


def hand_on(env: Envelope, out: Channel[Envelope], terminal: bool) -> bool:
    """A stage took the control item ``env`` from its input: count it on ``out`` and return True,
    for the caller to put it there; at the last stage (``terminal``) it ends instead (False:
    the caller never returns it)."""
    if terminal:
        if env.ticket is not None:
            env.ticket.release()
        return False
    out.controls += 1
    return True


def snapshot(buf: Iterable[Envelope]) -> list[Envelope]:
    """A copy of a channel's buffer, which a thread block's threads may be taking items from
    meanwhile (:mod:`.pulling`): iterating a deque that changes raises.

    ``list()`` copies a deque in one C call, under the GIL, and makes its list before it starts
    iterating. (``tuple()`` makes its tuple after: an allocation there can start a garbage
    collection, which runs Python finalizers, during which the interpreter may switch to a
    thread that takes an item.) Should the buffer change all the same, it copies again."""
    while True:
        try:
            return list(buf)
        except RuntimeError:  # (changed while copied)
            continue


def input_counts(inq: Channel[Envelope], controls_taken: int) -> tuple[int, int]:
    """The items a stage has received and those still queued in its input ``inq``, control
    items left out (``controls_taken``: those the stage took)."""
    if inq.controls > controls_taken:  # (none can be queued otherwise: skip the look)
        # One snapshot for both counts: a thread block's threads take items from this buffer
        # themselves (:mod:`.pulling`) while the event loop reads the statistics, so its length
        # read after a look at its markers would count markers taken meanwhile.
        queued = snapshot(inq._buf)
        queued_controls = 0
        for env in queued:
            if env.value.__class__ is EndOfKey:
                queued_controls += 1
        queued_items = len(queued) - queued_controls
    else:
        queued_controls = 0
        queued_items = len(inq)
    # (exact while a block before it hands on a run: see Channel.counted)
    received = inq.counted() - controls_taken - queued_controls
    return received, queued_items


def keep_control(
    inq: Channel[Envelope], env: Envelope, on_drop: Callable[[Envelope], None]
) -> None:
    """A leaky channel's policy dropped a control item: put it back where it belongs.

    A control item is not an item and must not be lost (a key would keep its state). The
    oldest item behind it is dropped instead (``drop_oldest``: it was the oldest, so every item
    before it has been taken); one refused on arrival (``drop_newest``) goes in over the
    capacity: control items are few and small.
    """
    buf = inq._buf
    inq.overflowed -= 1
    if inq.overflow == "drop_newest":
        buf.append(env)
        if inq._getters:
            inq._wake_getter()
        return
    buf.appendleft(env)
    # By identity, on a snapshot: a thread block's threads may take items from the front of
    # this buffer meanwhile (:mod:`.pulling`), so an index could point at another item by the
    # time it is deleted. ``remove`` finds the victim by identity (an Envelope has no ``__eq__``)
    # in one call; a victim already taken by a thread is no longer there to drop.
    for victim in snapshot(buf)[1:]:
        if victim.value.__class__ is not EndOfKey:
            try:
                buf.remove(victim)
            except ValueError:
                continue  # a thread took it meanwhile: look at the next one
            inq.overflowed += 1
            on_drop(victim)
            return
