"""Running ``af.every``: sample some items of each key through a stage, hold the result for the
rest.

Every input gets a *slot*, queued in its lane: one lane for all keys (``ordered=True``) or one per
key. A sampled item's copy goes to the wrapped chain with a ticket that settles its slot; a held
item's slot is settled at once. A lane's settled head leaves into the outbox, and that is where
its result is decided: lanes keep each key's input order, so the key's latest result at that
moment is the one of its latest sampled item before it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Coroutine, Hashable
from typing import TYPE_CHECKING, Any

from ..control import EndOfKey
from ..errors import BlockError, describe, summarize
from ..graph import _label_chain
from ..sampling import Every, Held
from ..stats import BlockStatistics
from .branching import JoinRuntime
from .cancelling import INTERRUPTS
from .channel import Channel, ChannelClosed
from .controls import hand_on
from .envelope import Envelope, Ticket

if TYPE_CHECKING:
    from .supervisor import PipelineRun

__all__ = ["EveryRuntime"]

logger = logging.getLogger("aioflow")


class _Key:
    """What the stage knows of one key: when to sample next, and its latest result."""

    __slots__ = (
        "countdown",
        "has_result",
        "lane",
        "last_t",
        "result",
        "result_seq",
        "result_t",
        "seen",
    )

    def __init__(self, lane: deque[_Slot]) -> None:
        self.lane = lane
        self.seen = 0  # items of this key so far
        self.countdown = 0  # items until the next sample (n=)
        self.last_t: float | None = None  # the clock of the last sampled item (per_second=)
        self.has_result = False
        self.result: Any = None
        self.result_seq = 0
        self.result_t = 0.0


class _Slot:
    """One input, waiting for its turn (and, when sampled, for its result)."""

    __slots__ = ("control", "env", "error", "key", "outputs", "sampled", "seq", "settled", "t")

    def __init__(self, env: Envelope, key: _Key | None, seq: int, t: float) -> None:
        self.env = env
        # None: the item's key or clock failed (``error`` says how); on an af.EndOfKey going
        # around the stage unordered, the ended key's stand-in for its later items (or None)
        self.key = key
        self.seq = seq
        self.t = t
        self.sampled = False
        self.settled = True
        self.outputs: list[Any] = []
        self.error: BlockError | None = None
        self.control = False  # an af.EndOfKey going around the stage


class _SampleTicket(Ticket):
    """The ticket of a sampled item's copy in the wrapped chain."""

    __slots__ = ("runtime", "slot")

    def __init__(self, runtime: EveryRuntime, slot: _Slot) -> None:
        super().__init__()
        self.runtime = runtime
        self.slot = slot

    def output(self, value: Any) -> None:
        self.slot.outputs.append(value)
        self._settle()

    def drop(self, reason: str, block: str) -> None:
        logger.debug(
            "every %r: the sampled item was dropped (%s in %r)",
            self.runtime.name,
            reason,
            block,
            extra={"block": self.runtime.name},
        )
        self._settle()

    def release(self) -> None:
        self._settle()

    def fail(self, error: BlockError) -> bool:
        if self.slot.env.ticket is None:
            return False  # nobody waits for this item: the error fails the run where it is
        if self.slot.error is None:
            self.slot.error = error
        self._settle()
        return True

    def _settle(self) -> None:
        self.pending -= 1
        if self.pending > 0:
            return
        slot = self.slot
        slot.settled = True
        self.runtime.pump(slot.key.lane if slot.key is not None else None)


class EveryRuntime(JoinRuntime):
    """An ``af.every`` stage during one run: the sampler, the wrapped chain, the ordered join."""

    dropped_as = "no_result"  # no result for the item's key yet

    def __init__(self, ev: Every[Any, Any], out: Channel[Envelope], run: PipelineRun) -> None:
        super().__init__(ev.name, ev.queue_size, out)
        self.every = ev
        chain = ev.members[0]
        self.member_out: Channel[Envelope] = Channel(64)
        self.member_in = run.build_chain(chain, self.member_out)
        # Outstanding inputs, held ones included: enough to keep the chain full, never unbounded.
        self.window = asyncio.Semaphore(run.chain_capacity(chain) + 1)
        self.keys: dict[Hashable, _Key] = {}
        self.lane: deque[_Slot] = deque()  # the one lane when ordered
        self.outbox: deque[tuple[_Slot, Any]] = deque()
        self.outstanding = 0
        self.period = 1.0 / ev.per_second if ev.per_second is not None else None

    def record(self) -> BlockStatistics:
        return self._record(keys=sum(1 for k in self.keys.values() if k.has_result))

    def coroutines(self) -> list[Coroutine[Any, Any, None]]:
        return [self._fanout(), self._sink(self.member_out), self._join()]

    # -- sampling -------------------------------------------------------------------------------

    def _end_key(self, env: Envelope) -> None:
        """A key ended (``af.EndOfKey``): the marker goes around the stage in its place in the
        key's lane, and the key's schedule and held result are forgotten, so its later items
        (a stream added again) start afresh: their first item is sampled and none gets the
        old result."""
        k = env.value.key
        try:
            # (compares the marker's key with the keys held: a user's key may refuse)
            old = self.keys.pop(k, None)
        except BaseException as exc:
            if isinstance(exc, INTERRUPTS):
                raise
            self._refused_key(k, exc)
            old = None
        lane = self.lane if self.every.ordered else (old.lane if old is not None else deque())
        slot = _Slot(env, None, 0, 0.0)
        if old is not None and not self.every.ordered:
            # the key's later items queue behind the marker, in the same lane; the marker's
            # key is forgotten when it leaves with none behind it (``pump``)
            slot.key = _Key(lane)
            try:
                self.keys[k] = slot.key
            except BaseException as exc:
                if isinstance(exc, INTERRUPTS):
                    raise
                self._refused_key(k, exc)
        slot.control = True
        lane.append(slot)
        self.pump(lane)

    def _refused_key(self, k: Any, exc: BaseException) -> None:
        """An ended key (``af.EndOfKey``) refused to be found among the keys held (its
        ``__hash__`` or ``__eq__`` raised): what is held for it stays (its later items go on
        with it), and a warning names the stage."""
        logger.warning(
            "every %r: af.EndOfKey(%s): finding the key among the keys held raised %s; what is "
            "held for it stays",
            self.name,
            summarize(k),
            describe(exc),
            extra={"block": self.name},
        )

    def _admit(self, env: Envelope) -> tuple[_Slot, bool]:
        """A slot for ``env``, queued in its lane; whether its item is to be sampled."""
        ev = self.every
        value = env.value
        which = "key"
        try:
            k = ev.key(value) if ev.key is not None else None
            # (finding the key's schedule compares it with the keys held: a user's key may
            # refuse, with an __eq__ that raises)
            key = self.keys.get(k)
            which = "clock"
            t = float(ev.clock(value)) if ev.clock is not None else env.born
            if key is None:
                which = "key"  # (keeping it hashes and compares it again)
                key = self.keys[k] = _Key(self.lane if ev.ordered else deque())
        except BaseException as exc:  # the user's key or clock: this item fails, in its turn
            if isinstance(exc, INTERRUPTS):
                raise
            error = BlockError(
                self.name,
                f"its {which} function raised {describe(exc)}",
                item=summarize(value),
            )
            error.__cause__ = exc
            slot = _Slot(env, None, 0, 0.0)
            slot.error = error
            lane = self.lane if ev.ordered else deque()
            lane.append(slot)
            self.pump(lane)
            return slot, False
        slot = _Slot(env, key, key.seen, t)
        key.seen += 1
        if self.period is not None:
            last = key.last_t
            # (a clock that went back, say a stream restarted, starts the count again)
            # (and a nanosecond of slack: frames 0.1 s apart are 0.2 s apart at the second)
            due = last is None or t - last >= self.period - 1e-9 or t < last
        else:
            due = key.countdown <= 0
        # (The schedule never depends on results: they come later than the items behind, and
        # which items go through the stage must not depend on timing.)
        if due:
            key.last_t = t
            key.countdown = (ev.n or 1) - 1
            slot.sampled = True
            slot.settled = False
        else:
            key.countdown -= 1
        key.lane.append(slot)
        if not slot.sampled:
            self.pump(key.lane)
        return slot, slot.sampled

    async def _fanout(self) -> None:
        window = self.window
        try:
            while True:
                try:
                    env = await self.inq.get()
                except ChannelClosed:
                    return
                await window.acquire()
                self.outstanding += 1
                if env.value.__class__ is EndOfKey:
                    self._end_key(env)
                    continue
                slot, sampled = self._admit(env)
                if sampled:
                    copy = Envelope(env.value, env.born, _SampleTicket(self, slot))
                    await self.member_in.put(copy)
        finally:
            self.member_in.close()
            self.fanout_done = True
            self._poke()

    # -- the join -------------------------------------------------------------------------------

    def pump(self, lane: deque[_Slot] | None) -> None:
        """Move the settled head of ``lane`` to the outbox, deciding each item's result."""
        if lane is None:
            return
        moved = False
        ended: _Slot | None = None
        while lane and lane[0].settled:
            slot = lane.popleft()
            self.outbox.append((slot, self._outcome(slot)))
            moved = True
            if slot.control and slot.key is not None:
                ended = slot
        if ended is not None and not lane:
            # An ended key's stand-in (unordered) that no item came to: gone with the marker,
            # so that keys that end (removed cameras) leave nothing behind.
            k = ended.env.value.key
            try:
                if ended.key is self.keys.get(k) and ended.key is not None and ended.key.seen == 0:
                    del self.keys[k]
            except BaseException as exc:
                if isinstance(exc, INTERRUPTS):
                    raise
                self._refused_key(k, exc)
        if moved:
            self._poke()

    def _outcome(self, slot: _Slot) -> Any:
        """A :class:`Held`, a :class:`BlockError`, None (no result: dropped), or the control
        item itself."""
        if slot.control:
            return slot.env.value
        if slot.error is not None:
            return slot.error
        key = slot.key
        assert key is not None  # (a slot without a key has its error)
        if slot.sampled and slot.outputs:
            if len(slot.outputs) > 1:
                inner = _label_chain(self.every.members[0])
                return BlockError(
                    self.name,
                    f"its stage {inner!r} made {len(slot.outputs)} outputs for one sampled item; "
                    "it must make exactly 1",
                    item=summarize(slot.env.value),
                )
            key.has_result = True
            key.result = slot.outputs[0]
            key.result_seq = slot.seq
            key.result_t = slot.t
            return Held(slot.env.value, key.result, 0, 0.0)
        if not key.has_result:
            return None
        return Held(slot.env.value, key.result, slot.seq - key.result_seq, slot.t - key.result_t)

    async def _join(self) -> None:
        loop = asyncio.get_running_loop()
        outbox = self.outbox
        while True:
            while not outbox:
                if self.fanout_done and self.outstanding == 0:
                    self.out.close()
                    return
                self._wake = loop.create_future()
                await self._wake
                self._wake = None
            slot, outcome = outbox.popleft()
            self.outstanding -= 1
            self.window.release()
            env = slot.env
            if slot.control:
                self.controls += 1
                if hand_on(env, self.out, self.terminal):
                    await self.out.put(env)
            elif isinstance(outcome, BlockError):
                self.failed += 1
                if env.ticket is None or not env.ticket.fail(outcome):
                    raise outcome
            elif outcome is None:
                self.dropped += 1
                logger.debug(
                    "every %r dropped an item: no result for its key yet",
                    self.name,
                    extra={"block": self.name},
                )
                if env.ticket is not None:
                    env.ticket.drop("no_result", self.name)
            else:
                self.completed += 1
                env.value = outcome
                await self.out.put(env)
