"""Partitions: a keyed block's per-key order and state across worker processes.

A segment whose first block is keyed (``key=``) does not read one stream shared by all its
workers: its input is split into a fixed number of *partitions*, one stream each::

    P:{pipeline}:{H}:in:{block}:p{i}          partition i's stream (i in 0..count-1)
    P:{pipeline}:{H}:lease:{block}:{i}        its owner's lease: the worker's name and the
                                              ownership's number (a fencing token), with a TTL
    P:{pipeline}:{H}:snap:{block}:{i}         its state: a hash {state: snapshot, mark: entry id}
    P:{pipeline}:{H}:partitions:{block}       how many partitions (the first writer decides)
    P:{pipeline}:{H}:members:{block}          live workers of the segment (sorted set, by expiry)

* **Routing.** A producer (the caller, or the worker of the segment before) computes the block's
  key of each item, and writes it to the stream of partition ``hash(key) % count`` (a stable
  hash of the key's msgpack bytes, the same in every process). All of a key's items are in one
  stream, in the order they were written.
* **Ownership.** A partition is read by one worker at a time: the one holding its lease
  (``SET NX PX``, renewed every ``ttl / 3`` seconds by a compare-and-set script). Each worker
  takes free partitions up to its fair share (``ceil(count / live workers)``) and hands over
  those beyond it, so that a worker that starts later gets work.
* **Fencing.** The lease's value is a token of one ownership (the worker's name and how many
  times it took the partition). A read checks, in the same script, that the leases of the
  partitions it reads hold their tokens (:meth:`Owner.read`), and every commit of a
  partition's entries (their outputs, answers and acknowledgement) that the lease still holds
  the token under which they were taken: an owner that stalled past its lease (its process
  stopped, starved of CPU) and resumes with items in flight writes none of them, and stops
  reading the partition; its next owner processes them again on the state it restored. The
  snapshot, the renewal and the release check the token too.
* **Order.** Each entry's items go into the block after those of the partition's entry before
  it (the worker puts each entry's items from a task of its own, and tasks that wait for room
  in the block's input take it in no set order).
* **State.** Every ``snapshot_period`` seconds, and when it hands a partition over or stops, the
  owner stops reading that partition, lets its items in flight finish (acknowledged), and writes
  the state of the partition's keys with the snapshot codec (:mod:`aioflow.state`; JSON, no
  pickle) together with the *mark*, the last entry it took from the stream, and trims the
  stream up to the mark: one script, run only while the lease is still its own. Entries after
  the mark stay in the stream, acknowledged or not.
* **Takeover.** A worker that gets a partition whose owner died (the lease expired) restores the
  snapshot, then processes again, in stream order, every entry after the mark up to the last
  one the group delivered (acknowledged ones whose effect on the state was not in the snapshot,
  and the dead owner's pending ones, which it claims one at a time, each run alone: they are
  suspects of its death), before it reads new ones. The state then counts every item once, and
  each key's items go through the block in order. Their outputs may go downstream twice (at
  least once, as everywhere inside); the caller keeps one answer per item.
* **Repeats.** A producer's write sent twice (redis-py sends a command again when its reply was
  lost with its connection) puts its items in the partition twice: the owner remembers the
  last :data:`SEEN` items (run, path) of each partition, with the snapshot, and drops repeats.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import random
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from redis.exceptions import ResponseError

from .._engine.segment import KeyedLanes
from ..block import Block
from ..control import EndOfKey
from ..errors import SnapshotError
from ..graph import Branch
from ..state import VERSION, Snapshot, decode, encode
from ..stats import BlockStatistics
from .codec import pack_plain
from .ending import Touches
from .messages import GROUP, Keys, MessageError, read_meta

if TYPE_CHECKING:
    from .redis import Trims, _Credit

__all__ = [
    "DEFAULT_PARTITIONS",
    "Owner",
    "Router",
    "agree_count",
    "keyed_block",
    "partition_of",
    "partition_streams",
]

logger = logging.getLogger("aioflow.worker")

#: partitions of a keyed segment's input unless the first writer chose otherwise
DEFAULT_PARTITIONS = 16
#: the items (run, path) a partition remembers having taken: a write repeated within them (a
#: producer's write whose reply was lost with its connection, sent again by redis-py's
#: retry) is acknowledged without running, so that a key's state does not count it twice
SEEN = 256

_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""

_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""

# KEYS: lease, snapshot hash, stream. ARGV: owner, state, mark, trim id ('' for none), release,
# the runs that touched the keys.
_SNAPSHOT = """
if redis.call('get', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('hset', KEYS[2], 'state', ARGV[2], 'mark', ARGV[3], 'runs', ARGV[6])
if ARGV[4] ~= '' then
  redis.call('xtrim', KEYS[3], 'MINID', ARGV[4])
end
if ARGV[5] == '1' then
  redis.call('del', KEYS[1])
end
return 1
"""


# A fenced read (no BLOCK: a script cannot block). KEYS: the partition streams. ARGV: group,
# consumer, count, then each stream's lease key and token. Reads only if every lease holds its
# token: {1, the XREADGROUP reply}, {0, the indexes (from 1) of the leases lost}, or, with
# nothing to read, {2, each stream's last id} (to wait for newer ones with a plain XREAD).
_READ = """
local lost = {}
for i = 1, #KEYS do
  if redis.call('GET', ARGV[2 + 2 * i]) ~= ARGV[3 + 2 * i] then lost[#lost + 1] = i end
end
if #lost > 0 then return {0, lost} end
local args = {'XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[3], 'STREAMS'}
for i = 1, #KEYS do args[#args + 1] = KEYS[i] end
for i = 1, #KEYS do args[#args + 1] = '>' end
local found = redis.call(unpack(args))
if found then return {1, found} end
local tails = {}
for i = 1, #KEYS do
  local last = redis.call('XREVRANGE', KEYS[i], '+', '-', 'COUNT', 1)
  if last[1] then tails[i] = last[1][1] else tails[i] = '0-0' end
end
return {2, tails}
"""


def partition_of(key: Hashable, count: int) -> int:
    """The partition of ``key``: the same in every process (Python's ``hash()`` of a str is
    not: it is salted per process). Never raises: a key that msgpack cannot write goes by its
    ``repr``, or by its type when that raises too."""
    try:
        data = pack_plain(key)
    except Exception:
        try:
            data = repr(key).encode()
        except Exception:  # (a key that cannot be written nor shown: one partition per type)
            data = type(key).__qualname__.encode()
    digest = hashlib.blake2b(data, digest_size=8).digest()
    return int.from_bytes(digest, "big") % count


def keyed_block(stage: Block | Branch | None) -> Block | None:
    """``stage`` if it is a keyed block (its segment's input is partitioned), else None."""
    if isinstance(stage, Block) and stage.options.key is not None:
        return stage
    return None


def partition_streams(inbox: str, count: int) -> list[str]:
    """The streams of a keyed segment's input (``inbox`` is its unpartitioned stream's key)."""
    return [f"{inbox}:p{i}" for i in range(count)]


async def agree_count(client: Any, keys: Keys, block: str, wanted: int) -> int:
    """The number of partitions of ``block``'s input: the first process to ask decides (every
    producer and worker must route alike); a process that wanted another number is told."""
    key = f"{keys.base}:partitions:{block}"
    await client.set(key, wanted, nx=True)
    found = int(await client.get(key))
    if found != wanted:
        logger.warning(
            "block %r: its input has %d partitions (set by the first caller or worker), not "
            "the %d asked for here; using %d",
            block,
            found,
            wanted,
            found,
        )
    return found


class Router:
    """A producer's side: each item to its key's partition stream, each stream bounded.

    Each partition's backlog is bounded by ``ceil(queue_size / count)`` (at least 2), so that
    the partitions together hold about the block's ``queue_size`` (a block that kept the
    default: the Redis edges' deeper one and its byte budget, shared alike). A blocking
    block's producers check a partition's bound and write to it in one step (a script), so
    that several of them never pass it together. A leaky block
    (``overflow="drop_oldest"`` or ``"drop_newest"``) makes each partition leaky with that
    bound: the producer never waits, and trims the entries of the partitions it wrote to that
    no owner has taken beyond it (:meth:`queue_trims`, :meth:`trimmed`).
    """

    def __init__(self, block: Block, inbox: str, count: int, credit: type[_Credit]) -> None:
        opts = block.options
        self.block = opts.name
        self._key = opts.key
        self.count = count
        self.streams = partition_streams(inbox, count)
        capacity, budget = credit.bound_of(block)
        cap = max(2, math.ceil(capacity / count))
        share = None if budget is None else math.ceil(budget / count)
        self.credits = [
            credit(
                stream,
                cap,
                overflow=opts.overflow,
                block=opts.name,
                partitioned=True,
                budget=share,
            )
            for stream in self.streams
        ]
        self.leaky = opts.overflow != "block"
        self._assigned: dict[int, int] = {}

    def partition(self, value: Any) -> int:
        """The partition of an item. A key function that fails sends it to partition 0: the
        block's worker computes the key again and reports the error for the item."""
        assert self._key is not None
        if value.__class__ is EndOfKey:  # to the partition that holds the key it ends
            return partition_of(value.key, self.count)
        try:
            return partition_of(self._key(value), self.count)
        except Exception:
            return 0

    def assign(self, idx: int, value: Any) -> None:
        """Remember the partition of the caller's item ``idx`` until it is written."""
        self._assigned[idx] = self.partition(value)

    def assigned(self, idx: int) -> int:
        return self._assigned.pop(idx, 0)

    def fit(self, part: int, size: int) -> None:
        """An item of ``size`` bytes goes to partition ``part`` (its bound under a byte
        budget)."""
        self.credits[part].fit((size,))

    async def wait_room(
        self,
        client: Any,
        counts: Mapping[int, int],
        progress: asyncio.Event | None = None,
        *,
        every: bool = False,
    ) -> None:
        """Wait until, as far as this producer knows, one of the partitions in ``counts`` has
        room for as many more entries as ``counts`` says or half its bound (the fewer), or
        with ``every`` until each of them has room for all of them (or is empty). The write
        that follows checks again, atomically. Asks Redis while it waits, 2 ms in and then at
        intervals doubling to 50 ms (``progress``, when set, ends a wait early)."""
        from .redis import backlog  # (redis.py imports this module)

        def lacking() -> list[int]:
            found = []
            for part, wanted in counts.items():
                credit = self.credits[part]
                need = min(wanted, credit.capacity if every else max(1, credit.capacity // 2))
                if credit.credit < need:
                    found.append(part)
            return found

        def enough(short: list[int]) -> bool:
            return not short or (not every and len(short) < len(counts))

        delay = 0.002
        short = lacking()
        while not enough(short):
            for part in short:
                self.credits[part].measured(await backlog(client, self.streams[part]))
            short = lacking()
            if enough(short):
                return
            if progress is None:
                await asyncio.sleep(delay)
            else:
                progress.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await progress.wait()
            delay = min(delay * 2, 0.05)

    def queue_trims(self, pipe: Any, parts: Iterable[int]) -> int:
        """A leaky block's: the trim of each partition in ``parts`` (written to in ``pipe``),
        after the writes; returns how many replies they add at the end of ``pipe``'s."""
        if not self.leaky:
            return 0
        found = sorted(set(parts))
        for part in found:
            self.credits[part].queue_check(pipe)
        return len(found)

    def trimmed(self, found: Trims, parts: Iterable[int], replies: Sequence[Any]) -> None:
        """Add to ``found`` the entries that :meth:`queue_trims`'s trims (their ``replies``)
        found beyond each partition's bound."""
        for part, reply in zip(sorted(set(parts)), replies, strict=True):
            credit = self.credits[part]
            found.add(credit, credit.checked(reply))

    def books(self) -> BlockStatistics | None:
        """The keyed block's books of the drops this producer made, or None before any."""
        n = sum(credit.dropped for credit in self.credits)
        if not n:
            return None
        return BlockStatistics(
            name=self.block, received=n, dropped=n, dropped_by={"overflow": n}, workers=0
        )


@dataclass(eq=False)
class _Part:
    index: int
    stream: str
    owned: bool = False
    #: replayed after a takeover: the reader may read new entries
    ready: bool = False
    #: being snapshotted: the reader leaves it alone until its items in flight are done
    paused: bool = False
    #: the entries taken and not finished, each with the lease token it was taken under
    in_flight: dict[bytes, str] = field(default_factory=dict)
    #: the lease's value while this worker owns it (one ownership: :meth:`Owner.lease_token`)
    token: str = ""
    #: (loop time) until when the lease is surely ours: read only before that, less a margin
    valid_until: float = 0.0
    #: the last entry taken from the stream, and that entry at the last snapshot
    last: bytes | None = None
    snapped: bytes | None = None
    #: keys of a follower changed without an entry of the partition (the end of a run evicted
    #: them): the next snapshot must be written even if no entry was taken since the last
    changed: bool = False
    #: how many times this worker took the partition: a snapshot started under one ownership
    #: must not be written under the next (the lease's check cannot tell them apart)
    epoch: int = 0
    #: held by a takeover and by a snapshot's write: the one never runs inside the other (a
    #: snapshot written during a takeover would trim the entries it is about to process again)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: the last SEEN items (run, path) taken, oldest first (:meth:`Owner.repeat`)
    seen: dict[tuple[str, tuple[int, ...]], None] = field(default_factory=dict)


def token(part: int, entry_id: bytes) -> bytes:
    """A worker's name for an entry of a partition stream (ids repeat across streams)."""
    return b"%d/%s" % (part, entry_id)


def untoken(tok: bytes) -> tuple[int, bytes]:
    part, _, entry_id = tok.partition(b"/")
    return int(part), entry_id


def _after(entry_id: bytes) -> str:
    """The smallest id after ``entry_id`` (XTRIM MINID keeps it and what follows)."""
    ms, _, seq = entry_id.decode().partition("-")
    return f"{ms}-{int(seq or 0) + 1}"


def _id_key(entry_id: bytes) -> tuple[int, int]:
    ms, _, seq = entry_id.partition(b"-")
    return int(ms), int(seq or 0)


def _before(entry_id: bytes) -> bytes:
    """The largest id before ``entry_id``."""
    ms, seq = _id_key(entry_id)
    if seq > 0:
        return b"%d-%d" % (ms, seq - 1)
    return b"%d-%d" % (ms - 1, 2**64 - 1)


#: what the owner hands the worker to process: (token, fields, deliveries)
Entry = tuple[bytes, dict[bytes, bytes], int]


class Owner:
    """A worker's side: the partitions it owns, their leases, snapshots and takeovers.

    Args:
        keys: the graph's keys.
        block: the keyed block that heads the segment.
        inbox: its unpartitioned input stream's key (the partitions' streams derive from it).
        count: the number of partitions (:func:`agree_count`).
        consumer: this worker's name (the leases' value).
        lanes: the block's per-key lanes in the running segment.
        ttl: seconds a lease lasts without renewal: how long a dead owner's partitions wait.
        snapshot_period: seconds between two snapshots of a partition that took new items.
        process: called with the entries to process again after a takeover, in stream order.
        followers: the lanes of the blocks after ``block`` in the segment keyed by the same
            function (their items come from its partitions, so each key's are in this worker
            too): snapshotted, restored and dropped with the partition, as ``block``'s.
    """

    def __init__(
        self,
        keys: Keys,
        block: str,
        inbox: str,
        count: int,
        consumer: str,
        lanes: KeyedLanes,
        *,
        ttl: float,
        snapshot_period: float,
        pipeline: str,
        process: Callable[[list[Entry]], Awaitable[None]],
        followers: Mapping[str, KeyedLanes] | None = None,
    ) -> None:
        self.block = block
        self.count = count
        self.consumer = consumer
        self.lanes = lanes
        self.followers = dict(followers or {})
        #: whether a block of the partition keeps a state per key (else no pause to snapshot)
        self.stateful = lanes.stateful or any(f.stateful for f in self.followers.values())
        self.ttl_ms = max(1, int(ttl * 1000))
        self.snapshot_period = snapshot_period
        self.pipeline = pipeline
        self._process = process
        self.parts = [_Part(i, s) for i, s in enumerate(partition_streams(inbox, count))]
        self._by_stream = {p.stream.encode(): p for p in self.parts}
        self._lease = [f"{keys.base}:lease:{block}:{i}" for i in range(count)]
        self._snap = [f"{keys.base}:snap:{block}:{i}" for i in range(count)]
        self.members = f"{keys.base}:members:{block}"
        #: partitions in the reader's current XREADGROUP
        self.reading: set[int] = set()
        self._settled = asyncio.Event()
        #: counters for the log and tests
        self.taken_over = 0
        self.snapshots = 0
        #: entries deleted while pending, acknowledged at a takeover (the worker's books)
        self.trimmed = 0
        self._unwritable = False
        # A read blocks 0.1 s at most; the lease is renewed every ttl / 3.
        self._margin = max(0.15, ttl / 4)
        #: partitions beyond this worker's fair share, to hand over
        self.excess = 0
        #: which caller runs touched which keys (:mod:`.ending`); snapshotted with the state,
        #: so that a new owner ends the same runs' keys
        self.touched = Touches()
        self._untouchable = False
        #: items dropped as repeats of one taken already (:meth:`repeat`)
        self.repeats = 0
        #: set (and replaced) whenever an entry of a partition is finished
        self._progress = asyncio.Event()
        self._read_script: Any = None

    # -- the reader's side ----------------------------------------------------------------------

    def readable(self) -> dict[str, str]:
        """``{stream: ">"}`` of the partitions the reader may read now: owned, and with a
        lease that lasts past the read (with a margin), so that whatever a read delivers was
        delivered before the lease could expire, and a next owner's takeover sees it."""
        limit = asyncio.get_running_loop().time() + self._margin
        return {
            p.stream: ">"
            for p in self.parts
            if p.owned and p.ready and not p.paused and p.valid_until > limit
        }

    async def read(self, client: Any, streams: dict[str, str], count: int) -> Any:
        """Read new entries of ``streams`` (partitions this worker owns) only while each lease
        still holds this ownership's token, in one script: a read checked against the time
        the lease lasts could still be carried out after it lapsed (the process stopped
        between the check and the send), and deliver to it entries its next owner, which
        took over before, would never see. When there is nothing to read, waits up to 0.1 s
        for newer entries (a plain XREAD, which delivers nothing) and returns None."""
        parts = [self._by_stream[s.encode()] for s in streams]
        args: list[Any] = [GROUP, self.consumer, count]
        for p in parts:
            args += [self._lease[p.index], p.token]
        if self._read_script is None:
            self._read_script = client.raw.register_script(_READ)
        reply = await client.guard(self._read_script(keys=list(streams), args=args))
        kind = int(reply[0])
        if kind == 0:
            self.fenced_out((parts[int(i) - 1].index, parts[int(i) - 1].token) for i in reply[1])
            return None
        if kind == 2:
            tails = dict(zip(streams, reply[1], strict=True))
            with contextlib.suppress(ResponseError):
                await client.xread(tails, count=1, block=100)
            return None
        return [
            (stream, [(eid, dict(zip(fv[::2], fv[1::2], strict=True))) for eid, fv in entries])
            for stream, entries in reply[1]
        ]

    def begin_read(self, streams: dict[str, str]) -> None:
        self.reading = {self._by_stream[s.encode()].index for s in streams}

    def end_read(self) -> None:
        self.reading = set()
        self._settled.set()

    def entries(self, reply: Any) -> list[Entry]:
        """The entries of an XREADGROUP reply over partition streams, as tokens."""
        found: list[Entry] = []
        for stream, entries in reply or ():
            part = self._by_stream[stream if isinstance(stream, bytes) else stream.encode()]
            if not part.owned:
                # Lost while the read was under way: its next owner processes these (they were
                # delivered before the lease expired, so its takeover claims them).
                continue
            for entry_id, fields in entries:
                found.append((token(part.index, entry_id), fields, 1))
        return found

    def repeat(self, tok: bytes, fields: Mapping[bytes, bytes]) -> bool:
        """Whether the item of entry ``tok`` is one its partition took already: the same
        run and path among the last :data:`SEEN` (a producer's write sent twice: redis-py
        sends a pipeline, a transaction or a script again when its reply was lost with its
        connection, and what it had done is done twice). Else it is noted. Called in stream
        order, as the entries are dispatched; the notes are snapshotted with the state (a
        takeover drops the repeats that follow its mark of items before it)."""
        if b"v" not in fields or not self.stateful or self._unwritable:
            # (No item: the end of a run. Or no state to count an item twice, and a snapshot
            # whose mark is the oldest entry in flight, which the items taken would not match.)
            return False
        try:
            meta = read_meta(fields)
            run, path = meta["r"], meta["p"]
        except (MessageError, KeyError):
            return False  # (the block reports it)
        if not isinstance(run, str) or not isinstance(path, list):
            return False
        if not all(isinstance(i, int) for i in path):
            return False
        seen = self.parts[untoken(tok)[0]].seen
        key = (run, tuple(path))
        if key in seen:
            self.repeats += 1
            return True
        seen[key] = None
        if len(seen) > SEEN:
            del seen[next(iter(seen))]
        return False

    def dispatched(self, tok: bytes) -> None:
        part, entry_id = untoken(tok)
        p = self.parts[part]
        p.in_flight[tok] = p.token
        p.last = entry_id

    def finished(self, tok: bytes) -> None:
        part, _ = untoken(tok)
        p = self.parts[part]
        p.in_flight.pop(tok, None)
        self._progress.set()
        self._progress = asyncio.Event()
        if not p.in_flight:
            self._settled.set()
            if not p.owned:
                # Lost or handed over while items were in flight: its keys are another's now.
                self._forget(part)

    async def wait_before(self, tok: bytes) -> None:
        """Wait until every entry of ``tok``'s partition taken before it is finished (its
        items through the block and acknowledged)."""
        part, entry_id = untoken(tok)
        p = self.parts[part]
        mine = _id_key(entry_id)
        while any(_id_key(untoken(t)[1]) < mine for t in p.in_flight):
            await self._progress.wait()

    # -- the end of a caller's run ----------------------------------------------------------------

    def touched_by(self, part: int, run: str) -> list[tuple[Hashable, dict[str, list[int]]]]:
        """The keys of partition ``part`` that ``run`` touched, with every run that did."""
        return self.touched.of_run(run, self._in(part))

    def end_run(self, part: int, run: str, gone: set[str]) -> list[tuple[Hashable, list[int]]]:
        """:meth:`.Touches.end` for the keys of partition ``part``."""
        return self.touched.end(run, gone, self._in(part))

    def queue_acks(self, pipe: Any, tokens: list[bytes]) -> None:
        """Acknowledge entries of partition streams in ``pipe``. They are not deleted: the
        next snapshot trims them (a new owner processes again those after the last one)."""
        by_part: dict[int, list[bytes]] = {}
        for tok in tokens:
            part, entry_id = untoken(tok)
            by_part.setdefault(part, []).append(entry_id)
        for part, ids in by_part.items():
            pipe.xack(self.parts[part].stream, GROUP, *ids)

    def holds(self, tok: bytes, epoch: int) -> bool:
        """Whether ``tok``'s partition is still this worker's, in the ownership ``epoch``."""
        part, _ = untoken(tok)
        p = self.parts[part]
        return p.owned and p.epoch == epoch

    def lease_token(self, epoch: int) -> str:
        """The lease's value for this worker's ownership number ``epoch`` of a partition: its
        name (the workers' tools find an owner by it) and the number, so that the tokens of
        two ownerships, even this worker's, differ."""
        return f"{self.consumer}#{epoch}"

    def fence(self, tokens: Iterable[bytes]) -> list[tuple[int, str]]:
        """The (partition, lease token) under which the entries ``tokens`` in flight were
        taken, each once, in a stable order: what a commit of them checks
        (:data:`~aioflow.transport.redis.FENCE_SCRIPT`)."""
        found: set[tuple[int, str]] = set()
        for tok in tokens:
            part, _ = untoken(tok)
            lease = self.parts[part].in_flight.get(tok)
            if lease is not None:
                found.add((part, lease))
        return sorted(found)

    def fence_args(self, pairs: Sequence[tuple[int, str]]) -> list[Any]:
        """``pairs`` (:meth:`fence`) as a fenced script's arguments: their count, then each
        lease's key and token."""
        args: list[Any] = [len(pairs)]
        for part, lease in pairs:
            args += [self._lease[part], lease]
        return args

    def fenced_out(self, lost: Iterable[tuple[int, str]]) -> None:
        """A commit found these leases held by another token: the ownerships are over (the
        worker stalled past the lease and another took the partition, or it lapsed). The
        partition is no longer read here; its entries in flight are dropped unwritten as they
        finish, and its next owner processes them again."""
        for part, lease in lost:
            p = self.parts[part]
            if not (p.owned and p.token == lease):
                continue
            p.owned = p.ready = False
            logger.warning(
                "worker %s: lost the lease of partition %d of %r (a commit found it lapsed: "
                "was the worker stalled for %.1f s?); the outputs of its items in flight are "
                "not written here, its next owner processes them again",
                self.consumer,
                part,
                self.block,
                self.ttl_ms / 1000,
            )

    async def claim(self, client: Any, tok: bytes) -> None:
        """Claim the entry ``tok`` the last owner held, which a takeover processes again now
        (its delivery count goes up). One acknowledged meanwhile (by an owner that stalled
        past its lease) is not claimed, and processed again all the same."""
        part, entry_id = untoken(tok)
        await client.xclaim(self.parts[part].stream, GROUP, self.consumer, 0, [entry_id])

    def stream_of(self, tok: bytes) -> tuple[str, bytes]:
        part, entry_id = untoken(tok)
        return self.parts[part].stream, entry_id

    # -- leases ---------------------------------------------------------------------------------

    async def lease_loop(self, client: Any) -> None:
        """Renew the leases and take free partitions up to the fair share (handing over is
        :meth:`snapshot_loop`'s: it waits for items in flight, which must not delay renewals)."""
        period = max(0.05, self.ttl_ms / 3000)
        while True:
            await self.tick(client)
            await asyncio.sleep(period)

    async def tick(self, client: Any) -> None:
        sec, usec = await client.time()
        now = int(sec) * 1000 + int(usec) // 1000
        pipe = client.pipeline(transaction=True)
        pipe.zadd(self.members, {self.consumer: now + self.ttl_ms})
        pipe.zremrangebyscore(self.members, "-inf", now)
        pipe.zcard(self.members)
        live = int((await client.guard(pipe.execute()))[-1])
        share = math.ceil(self.count / max(1, live))
        held = [p for p in self.parts if p.owned]
        loop = asyncio.get_running_loop()
        sent = loop.time()  # (before the renewal: the lease lasts at least ttl from here)
        pipe = client.pipeline(transaction=False)
        for p in held:
            pipe.eval(_RENEW, 1, self._lease[p.index], p.token, self.ttl_ms)
        renewed = await client.guard(pipe.execute()) if held else []
        for p, ok in zip(held, renewed, strict=True):
            if ok and p.owned:
                p.valid_until = sent + self.ttl_ms / 1000
                continue
            if not ok and p.owned:
                p.owned = p.ready = False
                logger.warning(
                    "worker %s: lost the lease of partition %d of %r (it expired: was the worker "
                    "stalled for %.1f s?); its items in flight may be processed again elsewhere",
                    self.consumer,
                    p.index,
                    self.block,
                    self.ttl_ms / 1000,
                )
                if not p.in_flight:
                    self._forget(p.index)
        owned = [p for p in self.parts if p.owned]
        # Another worker joined: hand it partitions (the snapshot loop does, one at a time).
        self.excess = max(0, len(owned) - share)
        # (A partition lost here with items still in flight waits for them: taking it back now
        # would process them a second time on top of their own effect on the state.)
        # Nor one a read under way may still deliver from (lost while the loop stalled): its
        # entries are dropped as the read ends, for the takeover to process; taken back at
        # once, they would also be processed as they come.
        free = [
            p for p in self.parts if not p.owned and not p.in_flight and p.index not in self.reading
        ]
        random.shuffle(free)  # workers starting together do not all race for partition 0
        for p in free:
            if len(owned) >= share:
                break
            async with p.lock:
                if p.owned or p.in_flight or p.index in self.reading:
                    continue  # (changed while a snapshot's write held the lock)
                sent = loop.time()
                tok = self.lease_token(p.epoch + 1)
                if await client.set(self._lease[p.index], tok, nx=True, px=self.ttl_ms):
                    p.owned = True
                    p.epoch += 1
                    p.token = tok
                    p.valid_until = sent + self.ttl_ms / 1000
                    owned.append(p)
                    await self.take_over(client, p)

    async def take_over(self, client: Any, p: _Part) -> None:
        """Restore ``p``'s state and process again what its last owner left after its mark."""
        want = self._in(p.index)
        self._forget(p.index)
        saved = await client.hgetall(self._snap[p.index])
        mark = saved.get(b"mark") or None
        state = saved.get(b"state")
        self._restore_runs(p.index, saved.get(b"runs"))
        restored = 0
        # The partition's keys hold exactly the snapshot's states, in every block, even a key
        # whose lane is still busy here from an earlier ownership (its state would count the
        # entries after the mark, processed again below, twice).
        blocks: dict[str, Any] = {}
        if state:
            try:
                snap = decode(state)
            except SnapshotError as exc:
                logger.error(
                    "worker %s: the state of partition %d of %r cannot be read; its keys start "
                    "afresh: %s",
                    self.consumer,
                    p.index,
                    self.block,
                    exc,
                )
            else:
                blocks = snap["blocks"]
                restored = len(blocks.get(self.block, []))
        self.lanes.restore(blocks.get(self.block, []), want)
        for name, lanes in self.followers.items():
            lanes.restore(blocks.get(name, []), want)
        last_delivered = b"0-0"
        try:
            groups = await client.xinfo_groups(p.stream)
        except ResponseError as exc:
            if "no such key" not in str(exc):
                raise
            groups = []  # deleted (a run's keys cleaned up): nothing delivered to process again
        for group in groups:
            if group.get("name") in (GROUP, GROUP.encode()):
                found = group.get("last-delivered-id")
                last_delivered = found if isinstance(found, bytes) else str(found).encode()
        replay: list[Entry] = []
        if last_delivered != b"0-0":
            lo = b"(" + mark if mark else b"-"
            entries = await client.xrange(p.stream, min=lo, max=last_delivered)
            ids = [eid for eid, _ in entries]
            rows = await client.xpending_range(p.stream, GROUP, lo, last_delivered, len(ids) + 1000)
            # The entries the last owner held are claimed one at a time, each as it runs
            # (:meth:`claim`: alone, as a suspect), so their delivery is the next one; those
            # it acknowledged are processed again for the state only (delivery 1).
            counts = {row["message_id"]: int(row["times_delivered"]) + 1 for row in rows}
            # Pending entries deleted since (by other hands: a producer's trim never deletes
            # what the group delivered) are acknowledged, and counted in the block's books.
            present = set(ids)
            gone = [eid for eid in counts if eid not in present]
            if gone:
                await client.xack(p.stream, GROUP, *gone)
                self.trimmed += len(gone)
            replay = [(token(p.index, eid), f, counts.get(eid, 1)) for eid, f in entries]
        p.last = p.snapped = mark
        if replay or restored:
            self.taken_over += 1
            logger.info(
                "worker %s: took over partition %d of %r: %d keys restored, %d entries after "
                "the snapshot processed again",
                self.consumer,
                p.index,
                self.block,
                restored,
                len(replay),
            )
        if replay:
            await self._process(replay)
        p.ready = True

    # -- snapshots ------------------------------------------------------------------------------

    async def snapshot_loop(self, client: Any) -> None:
        """Hand over the partitions beyond the fair share; snapshot the others on a cadence."""
        loop = asyncio.get_running_loop()
        due = loop.time() + self.snapshot_period
        while True:
            await asyncio.sleep(min(self.snapshot_period, self.ttl_ms / 3000))
            if self.excess > 0:
                owned = [p for p in self.parts if p.owned and p.ready]
                if owned:
                    self.excess -= 1
                    await self.snapshot(client, owned[-1], release=True)
            if loop.time() < due:
                continue
            due = loop.time() + self.snapshot_period
            for p in self.parts:
                if p.owned and p.ready and (p.last != p.snapped or p.changed):
                    await self.snapshot(client, p)

    async def snapshot(self, client: Any, p: _Part, *, release: bool = False) -> bool:
        """Write ``p``'s state at a moment when every item taken from it is done; with
        ``release``, give up its lease in the same script. False if the lease was lost."""
        epoch = p.epoch
        if not release and (self._unwritable or not self.stateful):
            # No state to carry over: no need to stop the partition; keep from its oldest
            # entry in flight on (a next owner processes those again).
            async with p.lock:
                if p.epoch != epoch or not (p.owned and p.ready):
                    return False
                return await self._write_snapshot(client, p, release=False, carry=False)
        p.paused = True
        try:
            while True:
                while p.index in self.reading or p.in_flight:
                    self._settled.clear()
                    await self._settled.wait()
                async with p.lock:
                    if p.epoch != epoch or not (p.owned and p.ready):
                        # Lost while its items finished (and maybe taken again since: that
                        # takeover restored the state to write, from the last snapshot).
                        return False
                    if p.index in self.reading or p.in_flight:
                        continue
                    return await self._write_snapshot(client, p, release=release)
        finally:
            p.paused = False

    async def _write_snapshot(
        self, client: Any, p: _Part, *, release: bool, carry: bool = True
    ) -> bool:
        want = self._in(p.index)
        last = taken = p.last
        p.changed = False  # (the state is read below, before any wait)
        trim = _after(last) if last else ""
        state = b""
        if not carry:
            if p.in_flight:
                oldest = min((untoken(t)[1] for t in p.in_flight), key=_id_key)
                last, trim = _before(oldest), oldest.decode()
        else:
            try:
                blocks = {
                    name: [[k, s] for k, s in lanes.states(want)]
                    for name, lanes in ((self.block, self.lanes), *self.followers.items())
                }
                snap = Snapshot(version=VERSION, pipeline=self.pipeline, blocks=blocks)
                state = encode(snap)
            except SnapshotError as exc:
                if not self._unwritable:
                    logger.warning(
                        "worker %s: the state of block %r cannot be written to a snapshot, so a "
                        "worker that takes over one of its partitions starts its keys afresh "
                        "(per-key order still holds): %s",
                        self.consumer,
                        self.block,
                        exc,
                    )
                    self._unwritable = True
        mark = last or b"0-0"
        runs = self._runs_of(p.index)
        done = await client.eval(
            _SNAPSHOT,
            3,
            self._lease[p.index],
            self._snap[p.index],
            p.stream,
            p.token,
            state,
            mark,
            trim,
            "1" if release else "0",
            runs,
        )
        if not done:  # the lease expired meanwhile: another worker may own it now
            p.owned = p.ready = False
            if not p.in_flight:
                self._forget(p.index)
            return False
        # (What was taken when the state was read: a takeover's entries may be dispatched
        # while the script runs.)
        p.snapped = taken
        self.snapshots += 1
        if release:
            p.owned = p.ready = False
            self._forget(p.index)
            logger.info(
                "worker %s: handed over partition %d of %r", self.consumer, p.index, self.block
            )
        return True

    async def drain(self, client: Any) -> None:
        """Stopping: snapshot and release every partition whose items are all done; release
        the others as they are (their next owner processes again what follows the mark)."""
        for p in self.parts:
            if not p.owned:
                continue
            if p.ready and not p.in_flight and p.index not in self.reading:
                await self._write_snapshot(client, p, release=True)
            else:
                await client.eval(_RELEASE, 1, self._lease[p.index], p.token)
                p.owned = p.ready = False
        await client.zrem(self.members, self.consumer)

    def followers_changed(self, keys: Iterable[Hashable]) -> None:
        """A follower's ``keys`` were evicted or dropped outside the partitions' entries (a
        run's end, from the control stream): their partitions' next snapshots must say so, or
        a next owner would restore the keys of a run that has ended."""
        for key in keys:
            p = self.parts[partition_of(key, self.count)]
            if p.owned:
                p.changed = True

    def _drop(self, want: Callable[[Hashable], bool]) -> None:
        """Forget the keys ``want`` accepts, in every block of the partition."""
        self.lanes.drop(want)
        for lanes in self.followers.values():
            lanes.drop(want)

    def owned(self) -> list[int]:
        return [p.index for p in self.parts if p.owned]

    def _forget(self, part: int) -> None:
        """Drop the idle keys of partition ``part``, and which runs touched its keys (another
        worker owns it now, or is about to)."""
        want = self._in(part)
        self._drop(want)
        self.touched.forget(want)
        self.parts[part].seen.clear()

    def _runs_of(self, part: int) -> bytes:
        """Which runs touched the keys of partition ``part``, for its snapshot (the snapshot
        codec: keys as the state's keys are written)."""
        pairs = self.touched.pairs(self._in(part))
        # The items taken (the repeats to drop after a takeover), run by run in their order.
        seen: dict[str, list[list[int]]] = {}
        if self.stateful and not self._unwritable:  # (a snapshot of the state, at its mark)
            for run, path in self.parts[part].seen:
                seen.setdefault(run, []).append(list(path))
        if not pairs and not seen:
            return b""
        blocks: dict[str, Any] = {"": pairs}
        if seen:
            blocks["seen"] = [[run, paths] for run, paths in seen.items()]
        try:
            return encode(Snapshot(version=VERSION, pipeline=self.pipeline, blocks=blocks))
        except SnapshotError as exc:
            if not self._untouchable:
                logger.warning(
                    "worker %s: the keys of block %r cannot be written to a snapshot, so a worker "
                    "that takes over one of its partitions does not evict them at the end of the "
                    "runs that touched them: %s",
                    self.consumer,
                    self.block,
                    exc,
                )
                self._untouchable = True
            return b""

    def _restore_runs(self, part: int, raw: bytes | None) -> None:
        if not raw:
            return
        try:
            blocks = decode(raw)["blocks"]
            pairs = blocks.get("", [])
            seen = self.parts[part].seen
            for run, paths in blocks.get("seen", []):
                for path in paths:
                    seen[(str(run), tuple(int(i) for i in path))] = None
        except (SnapshotError, TypeError, ValueError) as exc:
            logger.error(
                "worker %s: which runs touched the keys of partition %d of %r cannot be read; "
                "their runs' ends will not evict them: %s",
                self.consumer,
                part,
                self.block,
                exc,
            )
            return
        self.touched.restore(pairs)

    def _in(self, part: int) -> Callable[[Hashable], bool]:
        count = self.count

        def want(key: Hashable) -> bool:
            return partition_of(key, count) == part

        return want
