"""Running a branch: fan-out to every member, an ordered join of their results.

Each input gets a *slot*; each member receives its own copy of the item carrying a ticket that
is told how that copy ended (an output, a drop, a failure), so the join never waits for a result
that will not come. Slots leave in input order, as one tuple, or as a counted drop ("incomplete")
when a member made no output.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, ClassVar

from ..control import EndOfKey
from ..errors import BlockError, summarize
from ..graph import Branch
from ..stats import BlockStatistics
from .channel import Channel, ChannelClosed
from .controls import hand_on, input_counts
from .envelope import Envelope, Ticket

if TYPE_CHECKING:
    from .supervisor import PipelineRun

__all__ = ["BranchRuntime", "JoinRuntime"]

logger = logging.getLogger("aioflow")


class JoinRuntime:
    """A stage that sends its items through member chains and joins their results (a branch,
    ``af.every``) during one run: its input, its output, its books, the join's wake-up.

    Its books: ``received`` counts the items taken from the input and those queued there
    (control items left out), each of which ends ``completed``, ``failed`` or ``dropped`` (for
    the one reason :attr:`dropped_as`), or is in flight meanwhile.
    """

    #: the reason the stage drops an item for, in its books
    dropped_as: ClassVar[str]

    def __init__(self, name: str, queue_size: int, out: Channel[Envelope]) -> None:
        self.name = name
        self.out = out
        self.inq: Channel[Envelope] = Channel(queue_size)
        self.fanout_done = False
        self._wake: asyncio.Future[None] | None = None
        self.completed = 0
        self.dropped = 0
        self.failed = 0
        #: control items taken (:class:`~aioflow.EndOfKey`: not items, so the statistics leave
        #: them out); the last stage stops them
        self.controls = 0
        self.terminal = False

    def _record(self, *, workers: int = 1, keys: int = 0) -> BlockStatistics:
        received, queued = input_counts(self.inq, self.controls)
        in_flight = received - queued - self.completed - self.dropped - self.failed
        return BlockStatistics(
            name=self.name,
            received=received,
            completed=self.completed,
            emitted=self.completed,
            dropped=self.dropped,
            dropped_by={self.dropped_as: self.dropped} if self.dropped else {},
            failed=self.failed,
            in_flight=in_flight,
            queue_depth=queued,
            blocked_s=self.out.blocked_s,
            workers=workers,
            keys=keys,
        )

    def _poke(self) -> None:
        """Wakes the join."""
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    async def _sink(self, ch: Channel[Envelope]) -> None:
        """Hands each output of a member chain (``ch``) to the ticket of the copy it came of."""
        while True:
            try:
                env = await ch.get()
            except ChannelClosed:
                return
            ticket = env.ticket
            assert ticket is not None  # members' copies always carry one
            ticket.output(env.value)


class _Slot:
    """One input of a branch, waiting for every member's result."""

    __slots__ = ("env", "error", "missing", "reason", "values")

    def __init__(self, env: Envelope, members: int) -> None:
        self.env = env
        self.values: list[Any] = [None] * members
        self.missing = members
        self.reason: str | None = None
        self.error: BlockError | None = None


class _MemberTicket(Ticket):
    """The ticket of one branch member's copy of an item."""

    __slots__ = ("branch", "index", "outputs", "reason", "slot")

    def __init__(self, branch: BranchRuntime, slot: _Slot, index: int) -> None:
        super().__init__()
        self.branch = branch
        self.slot = slot
        self.index = index
        self.outputs: list[Any] = []
        self.reason: str | None = None

    def output(self, value: Any) -> None:
        self.outputs.append(value)
        self._settle()

    def drop(self, reason: str, block: str) -> None:
        if self.reason is None:
            self.reason = f"{reason} in {block!r}"
        self._settle()

    def release(self) -> None:
        self._settle()

    def fail(self, error: BlockError) -> bool:
        if self.slot.env.ticket is None:
            return False
        if self.slot.error is None:
            self.slot.error = error
        self._settle()
        return True

    def _settle(self) -> None:
        self.pending -= 1
        if self.pending > 0:
            return
        slot = self.slot
        if slot.error is None:
            if len(self.outputs) == 1:
                slot.values[self.index] = self.outputs[0]
            elif not self.outputs:
                if slot.reason is None:
                    slot.reason = self.reason or "no output"
            else:
                member = self.branch.member_names[self.index]
                slot.error = BlockError(
                    self.branch.name,
                    f"member {member!r} made {len(self.outputs)} outputs for one input; "
                    "a branch member must make exactly 1",
                    item=summarize(slot.env.value),
                )
        slot.missing -= 1
        if slot.missing == 0:
            self.branch.slot_ready(slot)


class BranchRuntime(JoinRuntime):
    """A branch during one run: fan-out, member chains, and an ordered join."""

    dropped_as = "incomplete"  # a member made no output

    def __init__(self, br: Branch, out: Channel[Envelope], run: PipelineRun) -> None:
        super().__init__(br.name, br.queue_size, out)
        self.branch = br
        self.member_outs: list[Channel[Envelope]] = []
        self.member_ins: list[Channel[Envelope]] = []
        self.member_names = [
            ">>".join(s.name if isinstance(s, Branch) else s.options.name for s in chain)
            for chain in br.members
        ]
        capacity = 0
        for chain in br.members:
            member_out: Channel[Envelope] = Channel(64)
            self.member_outs.append(member_out)
            self.member_ins.append(run.build_chain(chain, member_out))
            capacity = max(capacity, run.chain_capacity(chain))
        # Outstanding inputs: enough to keep every member chain full, never unbounded.
        self.window = asyncio.Semaphore(capacity + 1)
        self.slots: deque[_Slot] = deque()

    def record(self) -> BlockStatistics:
        return self._record(workers=len(self.member_ins))

    def coroutines(self) -> list[Coroutine[Any, Any, None]]:
        coros: list[Coroutine[Any, Any, None]] = [self._fanout(), self._join()]
        coros.extend(self._sink(ch) for ch in self.member_outs)
        return coros

    def slot_ready(self, slot: _Slot) -> None:
        if self.slots and self.slots[0] is slot:
            self._poke()

    async def _fanout(self) -> None:
        window = self.window
        try:
            while True:
                try:
                    env = await self.inq.get()
                except ChannelClosed:
                    return
                await window.acquire()
                if env.value.__class__ is EndOfKey:
                    # A control item goes around the members (their keyed blocks do not see
                    # it), in its place among the joined items.
                    slot = _Slot(env, 0)
                    self.slots.append(slot)
                    self._poke()
                    continue
                slot = _Slot(env, len(self.member_ins))
                self.slots.append(slot)
                for index, member_in in enumerate(self.member_ins):
                    copy = Envelope(env.value, env.born, _MemberTicket(self, slot, index))
                    await member_in.put(copy)
        finally:
            for member_in in self.member_ins:
                member_in.close()
            self.fanout_done = True
            self._poke()

    async def _join(self) -> None:
        loop = asyncio.get_running_loop()
        slots = self.slots
        while True:
            while not (slots and slots[0].missing == 0):
                if self.fanout_done and not slots:
                    self.out.close()
                    return
                self._wake = loop.create_future()
                await self._wake
                self._wake = None
            slot = slots.popleft()
            self.window.release()
            env = slot.env
            if env.value.__class__ is EndOfKey:
                self.controls += 1
                if hand_on(env, self.out, self.terminal):
                    await self.out.put(env)
            elif slot.error is not None:
                self.failed += 1
                if env.ticket is None or not env.ticket.fail(slot.error):
                    raise slot.error
            elif slot.reason is not None:
                self.dropped += 1
                logger.debug(
                    "branch %r dropped an item: %s",
                    self.name,
                    slot.reason,
                    extra={"block": self.name},
                )
                if env.ticket is not None:
                    env.ticket.drop("incomplete", self.name)
            else:
                self.completed += 1
                env.value = tuple(slot.values)
                await self.out.put(env)
