"""A worker of the distributed mode: serves one segment of a pipeline from its Redis stream.

``python -m aioflow worker MODULE:PIPELINE --redis URL --blocks NAME[,NAME...]``

The worker runs its segment (consecutive stages of the pipeline) with the same engine as a local
run: a pipeline of those stages, opened as a service, in-process channels inside. Around it:

* a reader takes entries from the segment's input stream with ``XREADGROUP`` in the group every
  worker of the segment shares, as many as the segment has room for;
* the items of an entry (one, or a burst: see :mod:`~aioflow.transport.messages`) go through
  the segment together (:func:`~aioflow._engine.segment.submit_outcomes`); their outputs go to
  the next segment's stream (as burst entries too), or to the caller's reply stream after the
  last remote block, and the input entry is acknowledged (and deleted) in the same ``MULTI`` as
  the last of those writes, once every item of it is answered: an item is never acknowledged
  before its outputs are safe downstream;
* a reclaimer takes over entries another worker left pending longer than ``claim_idle`` seconds
  (it died) with ``XAUTOCLAIM``, one at a time, each run alone in the worker (quarantine: it may
  be what killed the other, and then kills nothing else); a burst is first split into entries
  of one item each; an entry delivered more than ``max_deliveries`` times goes to the
  dead-letter stream, and its caller gets an error;
* a heartbeat re-claims the worker's own in-flight entries so that live work is not taken over;
* the segment's books (its blocks' :class:`~aioflow.BlockStatistics`) are published to the hash
  ``P:{pipeline}:{H}:stats:{worker}`` every ``stats_period`` seconds, in the same ``MULTI`` as
  the writes that leave the worker idle (so a caller that got its last answer reads books that
  count it), and at exit; the hash expires ``stats_ttl`` seconds after the last publication, so
  a dead worker's books age out. Callers merge the books of all live workers;
* an entry that does not decode (malformed, or written by another codec such as pickle) goes to
  the dead-letter stream with the reason; nothing in it runs, and its items' callers, when its
  header names them, get an error each. An item of a burst that does not decode goes there
  alone (with its position) and its caller gets an error; the rest of the burst runs;
* a segment headed by a keyed block reads instead the partitions of its input it holds the lease
  of, snapshots their keys' state to Redis, and takes over those of a worker that died
  (:mod:`aioflow.transport.partitions`); a worker before a keyed segment routes its outputs to
  their key's partition, one item per entry (partition streams are not burst), and writes them
  in the order of its input stream (oldest entry first, whichever worker holds it), so that a
  key's items reach the partition in the order they reached the segment;
* a keyed block past the first of the segment splits it there: the parts are served side by
  side, each as a segment of its own, so that the keyed block's input is partitioned (a block
  keyed by the same function as its part's head stays in that part: its state goes with the
  head's snapshots).

``--metrics HOST:PORT`` serves the segment's own Prometheus metrics (and dashboard) at
``http://HOST:PORT/metrics`` while the worker runs (:class:`aioflow.observe.Server`; loopback
unless told otherwise, port 0 picks a free one, the address is printed on stderr).

SIGTERM or SIGINT: stop reading, let in-flight items finish for a few seconds, leave the rest
pending (another worker reclaims them), exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import functools
import itertools
import logging
import os
import signal
import socket
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, cast

from .._engine.segment import KeyedLanes, Outcome, sub_pipeline, submit_outcomes
from .._engine.supervisor import PipelineRun
from ..errors import BlockError, PipelineClosed, summarize
from ..graph import Branch
from ..stats import BlockStatistics, LatencyHistogram, merge_statistics
from .codec import Codec, CodecError, codec_named, pack_plain
from .ending import Touches
from .messages import (
    GROUP,
    EntryError,
    ItemMeta,
    Keys,
    MessageError,
    ServerClock,
    check_reply,
    error_to_data,
    graph_signature,
    pack_burst,
    pack_item,
    pack_reply,
    parse_entry,
    read_meta,
    value_field,
)
from .partitions import (
    DEFAULT_PARTITIONS,
    Entry,
    Owner,
    Router,
    agree_count,
    keyed_block,
    partition_streams,
    token,
    untoken,
)
from .redis import (
    _BIG,
    FENCE_SCRIPT,
    GUARD_SCRIPT,
    UNDO_SCRIPT,
    Commands,
    RedisConnectionError,
    RedisError,
    ResponseError,
    Trims,
    burst_size,
    connect,
    cut_bursts,
    ensure_group,
    redact,
    stage_capacity,
    stage_depth,
    stage_overflow,
    wire,
)
from .redis import _Credit as Credit

if TYPE_CHECKING:
    from ..block import Block
    from ..pipeline import Pipeline, RunningPipeline

__all__ = ["SegmentMismatch", "Worker", "main"]

logger = logging.getLogger("aioflow.worker")

_BATCH = 100
#: seconds of work a worker of a fast segment takes ahead (see Worker._adapt)
PREFETCH_WORK = 0.02
#: exit status of a worker whose pipeline or blocks do not match
EXIT_MISMATCH = 2
#: How many runs ended with ``drop`` a worker remembers (:meth:`Worker._dropped`)
_DROPPED_RUNS = 4096
#: Deletes, in the group ARGV[1] of each stream of KEYS, the consumers that hold no entry
#: (pending 0) and either are ARGV[2] (a worker leaving) or have been idle for ARGV[3] ms at
#: least (a worker killed, its entries taken over) and are not ARGV[4] (the caller's own).
#: Atomic: no consumer takes an entry between the look and the delete, so nothing pending is
#: ever dropped (DELCONSUMER drops a consumer's pending entries). Returns how many went.
REAP_SCRIPT = """
local gone = 0
for _, key in ipairs(KEYS) do
  local ok, consumers = pcall(redis.call, 'XINFO', 'CONSUMERS', key, ARGV[1])
  if ok then
    for _, c in ipairs(consumers) do
      local f = {}
      for i = 1, #c, 2 do f[c[i]] = c[i + 1] end
      local name = f['name']
      if tonumber(f['pending']) == 0 and name ~= ARGV[4] and
         (name == ARGV[2] or tonumber(f['idle']) >= tonumber(ARGV[3])) then
        redis.call('XGROUP', 'DELCONSUMER', key, ARGV[1], name)
        gone = gone + 1
      end
    end
  end
end
return gone
"""
#: Splits the burst ARGV[2] of stream KEYS[1] (group ARGV[1]), pending with consumer ARGV[3],
#: into ARGV[4] entries of one item each: for each, ARGV holds its ``m``, its ``v`` and the
#: ``m`` of the ``moved`` answer that tells its caller (reply stream KEYS[2]) the new entry's
#: id (as that answer's ``v``). Acknowledges and deletes the burst in the same step. Returns
#: 0, writing nothing, when the burst is no longer pending with ARGV[3].
SPLIT_SCRIPT = """
local row = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if #row == 0 or row[1][2] ~= ARGV[3] then
  return 0
end
local n = tonumber(ARGV[4])
local note = {}
for i = 0, n - 1 do
  local at = 5 + 3 * i
  local id = redis.call('XADD', KEYS[1], '*', 'm', ARGV[at], 'v', ARGV[at + 1])
  local suffix = ''
  if i > 0 then suffix = tostring(i) end
  table.insert(note, 'm' .. suffix)
  table.insert(note, ARGV[at + 2])
  table.insert(note, 'v' .. suffix)
  table.insert(note, id)
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
redis.call('XADD', KEYS[2], 'NOMKSTREAM', '*', unpack(note))
return n
"""


class MetricsServer(Protocol):
    """What :class:`Worker` needs of a metrics server (:class:`aioflow.observe.Server` is one)."""

    metrics_url: str

    async def __aenter__(self) -> Any: ...

    async def __aexit__(self, *exc: object) -> bool | None: ...


#: Makes the server of ``metrics=``: ``(statistics source, host, port, token)``. The CLI passes
#: one built on :class:`aioflow.observe.Server`: ``transport/`` does not import ``observe/``
#: (each optional part builds on the core alone).
ServeMetrics = Callable[[Any, str, int, "str | None"], MetricsServer]


class _Slots:
    """How many more items the worker may take: the reader and the reclaimer share it (neither
    holds slots while it waits on Redis, so neither starves the other)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.free = size
        self._freed = asyncio.Event()
        self._freed.set()

    def take(self, n: int) -> None:
        self.free -= n
        if self.free < 1:
            self._freed.clear()

    def release(self, n: int = 1) -> None:
        self.free += n
        if self.free > 0:
            self._freed.set()

    def resize(self, size: int) -> None:
        self.free += size - self.size
        self.size = size
        if self.free > 0:
            self._freed.set()
        else:
            self._freed.clear()

    async def wait_free(self) -> None:
        await self._freed.wait()


class _Abandon(Exception):
    """Leave the segment by cancelling it: items still in it stay pending in Redis."""


class SegmentMismatch(Exception):
    """The worker cannot serve: its blocks are not a segment of the pipeline, or the pipeline
    differs from the one the callers run."""


def _concurrency(stages: Sequence[Block | Branch]) -> int:
    """Items the stages work on at once (``workers``, times the batch size when batched)."""
    total = 0
    for stage in stages:
        if isinstance(stage, Branch):
            total += max(_concurrency(member) for member in stage.members)
        else:
            opts = stage.options
            total += opts.workers * (opts.batch.max_size if opts.batch is not None else 1)
    return total


def _stage_name(stage: Block | Branch) -> str:
    return stage.name if isinstance(stage, Branch) else stage.options.name


def _cuts(stages: Sequence[Block | Branch]) -> list[int]:
    """Where a segment splits into parts: at each keyed block past its first stage, unless it
    is keyed by the same function as the keyed block heading its part (that block's partitions
    bring each key's items to one worker already, and its snapshots carry both states)."""
    cuts: list[int] = []
    head = keyed_block(stages[0]) if stages else None
    key = head.options.key if head is not None else None
    for i, stage in enumerate(stages):
        blk = keyed_block(stage)
        if i and blk is not None and blk.options.key is not key:
            cuts.append(i)
            key = blk.options.key
    return cuts


#: what an output carries to the next segment besides its bytes: its path, its input's birth
#: (:attr:`ItemMeta.born`) and its partition there (0 unless that segment is keyed)
_Child = tuple[tuple[int, ...], float | None, int]


@dataclass
class _Done:
    """What to write for one input entry, acknowledged in the same transaction."""

    entry: bytes
    downstream: list[dict[bytes, bytes]] = field(default_factory=list)
    replies: list[dict[bytes, bytes]] = field(default_factory=list)
    reply_to: str = ""
    dead: list[dict[bytes, bytes]] = field(default_factory=list)
    #: the partition of each ``downstream`` entry when the next segment is keyed
    routes: list[int] = field(default_factory=list)
    #: items the entry carries (the worker's slots it holds)
    items: int = 1
    #: False for the first part of an entry's outputs, written before the rest (and the ack)
    ack: bool = True
    #: taken under a lease that was lost before it was written: nothing of it is written
    fenced: bool = False


class _FencedOut(Exception):
    """A keyed block owner's commit refused: these (partition, lease token) are not its own
    any more (:data:`~aioflow.transport.redis.FENCE_SCRIPT`)."""

    def __init__(self, lost: list[tuple[int, str]]) -> None:
        super().__init__(lost)
        self.lost = lost


class Worker:
    """Serves the stages ``blocks`` of ``pipeline`` from Redis.

    Args:
        pipeline: the whole pipeline (the same definition as the callers').
        blocks: names of consecutive top-level stages of it.
        url: the Redis URL.
        claim_idle: seconds an entry may stay pending with another worker before this one
            takes it over (that worker is presumed dead).
        max_deliveries: deliveries after which an entry goes to the dead-letter stream.
        codec: the codec's name (``"msgpack"``; ``"pickle"`` only if you trust every writer).
        frames: how the worker writes video frames on: ``"raw"`` (lossless, the default) or
            ``"jpeg"`` (see :class:`~aioflow.transport.codec.MsgpackCodec`); it reads both.
        jpeg_quality: with ``frames="jpeg"``: 0 to 100.
        prefix: the key prefix (the transport's ``prefix``).
        grace: seconds in-flight items get to finish after SIGTERM before they are left pending.
        stats_period: seconds between publications of the segment's books to Redis.
        stats_ttl: seconds the published books outlive the worker's last publication.
        metrics: ``(host, port)`` to serve the segment's Prometheus metrics on while it runs.
        token: with ``metrics``: the bearer token requests must carry.
        serve_metrics: with ``metrics``: makes the server (``python -m aioflow worker`` passes
            one built on :class:`aioflow.observe.Server`).
        partitions: when a keyed block heads a segment (this one, or the next): how many
            partitions its input has, unless the first caller or worker chose already.
        lease_ttl: seconds a partition's lease lasts without renewal: how long the partitions
            of a worker that died wait for another owner.
        snapshot_period: seconds between two snapshots of a partition's keyed state.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        blocks: Sequence[str],
        url: str,
        *,
        claim_idle: float = 30.0,
        max_deliveries: int = 5,
        codec: str = "msgpack",
        frames: str = "raw",
        jpeg_quality: int = 90,
        prefix: str = "aioflow",
        grace: float = 3.0,
        consumer: str | None = None,
        prefetch: int | None = None,
        stats_period: float = 0.5,
        stats_ttl: float = 15.0,
        metrics: tuple[str, int] | None = None,
        token: str | None = None,
        serve_metrics: ServeMetrics | None = None,
        partitions: int = DEFAULT_PARTITIONS,
        lease_ttl: float = 10.0,
        snapshot_period: float = 1.0,
    ) -> None:
        stages = pipeline.stages
        names = [_stage_name(s) for s in stages]
        wanted = list(blocks)
        if not wanted or wanted[0] not in names:
            msg = (
                f"--blocks {','.join(wanted)}: {wanted[:1]} is not a stage of pipeline "
                f"{pipeline.name!r} (stages: {names})"
            )
            raise SegmentMismatch(msg)
        first = names.index(wanted[0])
        if names[first : first + len(wanted)] != wanted:
            msg = (
                f"--blocks {','.join(wanted)} are not consecutive stages of pipeline "
                f"{pipeline.name!r} (stages in order: {names})"
            )
            raise SegmentMismatch(msg)
        self.pipeline = pipeline
        self.name = pipeline.name
        self.stages = stages[first : first + len(wanted)]
        self.blocks = wanted
        self.last = wanted[-1]
        nxt = first + len(wanted)
        self.next_name = names[nxt] if nxt < len(stages) else None
        self.url = url
        self.claim_idle = claim_idle
        self.max_deliveries = max_deliveries
        self.codec: Codec = codec_named(codec, frames=frames, jpeg_quality=jpeg_quality)
        self.grace = grace
        self.graph_hash, _ = graph_signature(pipeline.name, stages)
        self.keys = Keys(prefix, pipeline.name, self.graph_hash)
        self.inbox = self.keys.inbox(wanted[0])
        #: the most items a producer puts in one entry of the input stream
        self.in_burst = burst_size(stage_capacity(self.stages[0]))
        self.outbox = self.keys.inbox(self.next_name) if self.next_name else None
        self.credit: Credit | None = None
        if self.outbox is not None:
            self.credit = Credit.for_stage(self.outbox, stages[nxt])
        #: the Redis server's clock, on which items carry their birth (max_age)
        self.clock = ServerClock()
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        # Items taken from Redis ahead of the segment: enough to keep its workers busy, few
        # enough to leave the rest to the other workers of the segment (a worker that took a
        # whole backlog would leave them idle).
        # Fast blocks (the books show each item takes well under PREFETCH_WORK seconds) get more,
        # up to the segment's capacity: reading 8 at a time, a worker of a fast block would
        # spend its time waiting on Redis round trips (see _adapt).
        # (a Redis edge's default bound is deeper than the block's queue_size: stage_depth)
        capacity = PipelineRun.chain_capacity(self.stages) + stage_depth(self.stages[0])
        self.prefetch = prefetch or max(
            1, min(capacity, 256, max(8, 4 * _concurrency(self.stages)))
        )
        leaky = stage_overflow(self.stages[0]) != "block"
        if prefetch is None and leaky:
            # A leaky edge keeps its backlog in Redis, where the newest entries replace the
            # oldest: items taken ahead would wait here instead, and grow old.
            self.prefetch = max(1, _concurrency(self.stages[:1]))
        self.base_prefetch = self.prefetch
        self.max_prefetch = (
            self.prefetch if prefetch or leaky else max(self.prefetch, min(capacity, 256))
        )
        self._slots: _Slots | None = None
        self._books_lock = asyncio.Lock()
        self.stopping = asyncio.Event()
        self.stats_period = stats_period
        self.stats_ttl = max(stats_ttl, 2 * stats_period)
        self.stats_key = self.keys.stats(self.consumer)
        #: the segment while it runs (its books are published); None before and after
        self.running: RunningPipeline | None = None
        if metrics is not None and serve_metrics is None:
            raise ValueError("metrics= needs serve_metrics= (the server to run)")
        self.metrics = metrics
        self.token = token
        self.serve_metrics = serve_metrics
        #: ``http://HOST:PORT/metrics`` once served
        self.metrics_url = ""
        self.in_flight: set[bytes] = set()
        # A keyed block heading this segment: its input is partitioned, each partition read by
        # one worker at a time (aioflow/transport/partitions.py); likewise for the next segment.
        if partitions < 1:
            msg = f"partitions must be >= 1, got {partitions}"
            raise SegmentMismatch(msg)
        self.partitions = partitions
        self.lease_ttl = lease_ttl
        self.snapshot_period = snapshot_period
        self.keyed = keyed_block(self.stages[0])
        #: a keyed block heading the segment that drops items when its input is full
        self._leaky_keyed = self.keyed is not None and self.keyed.options.overflow != "block"
        self.next_keyed = keyed_block(stages[nxt]) if nxt < len(stages) else None
        self.owner: Owner | None = None
        #: the keyed block's lanes when it heads this segment (partitioned)
        self.lanes: KeyedLanes | None = None
        #: keyed blocks inside the segment (not its head): their lanes and which runs touched
        #: their keys; a run's end reaches them on this worker's control stream (_control)
        self.inner: dict[str, tuple[KeyedLanes, Touches]] = {}
        self.control = f"{self.keys.base}:ctl:{self.consumer}"
        #: (run, block) told to the run's caller: this worker holds keys of it for the block
        self._announced: set[tuple[str, str]] = set()
        #: (reply stream, block) to tell, with the next write
        self._holds: list[tuple[str, str]] = []
        self._guard_script: Any = None
        self._fence_script: Any = None
        #: a keyed block owner's: per partition, the future set once the items of the last
        #: entry dispatched are in the segment (the next entry's go in after them)
        self._turns: dict[int, asyncio.Future[None]] = {}
        self._reap_script: Any = None
        self._client: Any = None
        self.router: Router | None = None
        self._part_count = 0
        #: counters for the log and tests
        self.acked = 0
        self.dead_letters = 0
        self.trimmed = 0
        self._items: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        # Quarantine: an entry delivered again (its worker died holding it, maybe of it) runs
        # alone in this worker, so that a poison pill takes no other entry with it.
        #: a read of the input is under way (what it brings is dispatched as it ends)
        self._reading = False
        #: a suspect is held (or about to be): nothing else is read or dispatched
        self._isolating = False
        #: a keyed segment's entries taken over, in stream order, waiting for their turn
        #: behind a suspect: (token, fields, deliveries, the partition's epoch)
        self._gate: collections.deque[tuple[bytes, dict[bytes, bytes], int, int]]
        self._gate = collections.deque()
        self._gated = asyncio.Event()
        #: of those, the entries their last owner acknowledged (answered): they run again for
        #: the state only, and are not stale however long ago they were born (max_age)
        self._answered: set[bytes] = set()
        #: the runs whose end this worker took with ``drop`` (their caller cancelled or failed),
        #: newest last: their items that come after it are acknowledged and not run (an
        #: earlier segment still sent them on, or they waited in the input while the end came
        #: by the control stream), so that they touch no key again (:data:`_DROPPED_RUNS`)
        self._dropped_runs: dict[str, None] = {}
        #: set when the worker may have become quiet (a read ended, an entry was written)
        self._settle = asyncio.Event()
        #: set when reading may go on (a quarantine ended)
        self._turn = asyncio.Event()
        #: the flusher writes in input order (finished entries may wait for older ones)
        self._ordered = False
        #: counters for the log and tests: entries run alone, bursts split
        self.isolated = 0
        self.split_bursts = 0
        self._split_script: Any = None
        self._tg: asyncio.TaskGroup
        #: a keyed block past the segment's first splits it there: each part (from one keyed
        #: block to the next) is served as a segment of its own, side by side in this process,
        #: so that the keyed block's input is partitioned as when it heads a segment (per-key
        #: order and state across the workers that serve the segment)
        self.parts: list[Worker] = []
        cuts = _cuts(self.stages)
        if cuts:
            bounds = [0, *cuts, len(wanted)]
            for lo, hi in itertools.pairwise(bounds):
                part = Worker(
                    pipeline,
                    wanted[lo:hi],
                    url,
                    claim_idle=claim_idle,
                    max_deliveries=max_deliveries,
                    codec=codec,
                    frames=frames,
                    jpeg_quality=jpeg_quality,
                    prefix=prefix,
                    grace=grace,
                    # (a consumer, a lease holder and a stats hash each: the no-worker check
                    # finds every part's books under the name it reads its streams with)
                    consumer=self.consumer if lo == 0 else f"{self.consumer}/{wanted[lo]}",
                    prefetch=prefetch,
                    stats_period=stats_period,
                    stats_ttl=stats_ttl,
                    partitions=partitions,
                    lease_ttl=lease_ttl,
                    snapshot_period=snapshot_period,
                )
                part.stopping = self.stopping
                self.parts.append(part)

    async def check_graph(self, client: Any) -> None:
        """Raise :class:`SegmentMismatch` if the callers run another version of the pipeline."""
        current = await client.get(self.keys.graph)
        if current is None:
            await client.set(self.keys.graph, self.graph_hash, nx=True)
            return
        theirs = current.decode() if isinstance(current, bytes) else str(current)
        if theirs != self.graph_hash:
            msg = (
                f"pipeline {self.name!r} here (graph {self.graph_hash}) differs from the one its "
                f"callers run (graph {theirs}): block names, order or options changed. Start the "
                "worker with the callers' version of the code"
            )
            raise SegmentMismatch(msg)

    async def serve(self) -> None:
        """Serve until :attr:`stopping` is set (SIGTERM, SIGINT) or the task is cancelled."""
        if self.parts:
            await self._serve_parts()
            return
        client = connect(self.url)
        try:
            await self.check_graph(client)
            await ensure_group(client, self.inbox)
            await self.clock.sync(client)
            if self.outbox is not None:
                await ensure_group(client, self.outbox)
            await self._partition(client)
            logger.info(
                "worker %s: pipeline %r, blocks %s, on %s (graph %s)",
                self.consumer,
                self.name,
                ",".join(self.blocks),
                redact(self.url),
                self.graph_hash,
            )
            segment = sub_pipeline(
                self.pipeline, self.stages, f"{self.name}[{','.join(self.blocks)}]"
            )
            try:
                with contextlib.suppress(_Abandon):
                    async with segment.open() as running, contextlib.AsyncExitStack() as stack:
                        self.running = running
                        if self.metrics is not None:
                            source = _SegmentSource(self.name, [self])
                            await self._serve_metrics(stack, source)
                        await self._serve(client, running)
            finally:
                if self.running is not None:
                    # The final books (the segment has stopped: nothing in flight any more).
                    with contextlib.suppress(RedisError, OSError):
                        await asyncio.shield(self._publish(client))
                if self.inner:
                    with contextlib.suppress(RedisError, OSError):
                        await asyncio.shield(client.delete(self.control))
        finally:
            await client.aclose()

    async def _partition(self, client: Any) -> None:
        """Agree on the partitions of a keyed input (this segment's, the next one's)."""
        if self.keyed is not None:
            self._part_count = await agree_count(
                client, self.keys, self.keyed.options.name, self.partitions
            )
            for stream in partition_streams(self.inbox, self._part_count):
                await ensure_group(client, stream)
        if self.next_keyed is not None and self.outbox is not None:
            count = await agree_count(
                client, self.keys, self.next_keyed.options.name, self.partitions
            )
            self.router = Router(self.next_keyed, self.outbox, count, Credit)
            for stream in self.router.streams:
                await ensure_group(client, stream)

    async def _serve_parts(self) -> None:
        """Serve a segment split at its keyed blocks: its parts side by side, until stopped
        together. One part's failure stops the others and is raised as a lone worker's."""
        logger.info(
            "worker %s: blocks %s served as %s (a keyed block's input is partitioned)",
            self.consumer,
            ",".join(self.blocks),
            " | ".join(",".join(part.blocks) for part in self.parts),
        )
        try:
            async with contextlib.AsyncExitStack() as stack:
                if self.metrics is not None:
                    await self._serve_metrics(stack, _SegmentSource(self.name, self.parts))
                async with asyncio.TaskGroup() as tg:
                    for part in self.parts:
                        tg.create_task(part.serve(), name=f"aioflow:part:{part.blocks[0]}")
        except BaseExceptionGroup as group:
            raise _first_error(group) from None

    async def _serve_metrics(
        self, stack: contextlib.AsyncExitStack, source: _SegmentSource
    ) -> None:
        assert self.metrics is not None
        assert self.serve_metrics is not None
        host, port = self.metrics
        server = self.serve_metrics(source, host, port, self.token)
        await stack.enter_async_context(server)
        self.metrics_url = server.metrics_url
        sys.stderr.write(f"aioflow worker {self.consumer}: metrics at {server.metrics_url}\n")
        sys.stderr.flush()

    def books(self) -> dict[str, bytes]:
        """The segment's books as the stats hash holds them (block name -> msgpack record)."""
        if self.running is None:
            return {}
        stats = self.running.statistics()
        self._adapt(stats.values())
        first = next(iter(stats), None)
        n = self.trimmed + (self.owner.trimmed if self.owner is not None else 0)
        if n and first is not None:
            # Entries deleted while pending (acknowledged by the reclaimer, or at a takeover)
            # were this block's.
            gone = BlockStatistics(
                name=first, received=n, dropped=n, dropped_by={"trimmed": n}, workers=0
            )
            stats[first] = merge_statistics(first, [stats[first], gone])
        for drops in (
            self.credit.books() if self.credit is not None else None,
            self.router.books() if self.router is not None else None,
        ):
            if drops is not None:
                # The drops this worker made on the leaky edge to the next segment: a record
                # of the next block holding only them (the caller merges it with that block's).
                stats[drops.name] = drops
        return {name: pack_plain(stat.to_data()) for name, stat in stats.items()}

    def _adapt(self, stats: Iterable[BlockStatistics]) -> None:
        """Take as many items ahead as the segment finishes in about PREFETCH_WORK seconds
        (its slowest block's busy time per item and worker), between the default prefetch and
        the segment's capacity; a slow block keeps the default, so the other workers of the
        segment still get their share."""
        if self.max_prefetch <= self.base_prefetch or self._slots is None:
            return
        per_item = 0.0
        for stat in stats:
            if stat.completed:
                per_item = max(per_item, stat.busy_s / stat.completed / max(1, stat.workers))
        wanted = int(PREFETCH_WORK / per_item) if per_item > 0 else self.max_prefetch
        size = max(self.base_prefetch, min(self.max_prefetch, wanted))
        self._slots.resize(size)
        self.prefetch = size

    def _queue_books(self, pipe: Any) -> None:
        pipe.hset(self.stats_key, mapping=self.books())
        pipe.pexpire(self.stats_key, int(self.stats_ttl * 1000))

    async def _publish(self, client: Any) -> None:
        async with self._books_lock:
            pipe = client.pipeline(transaction=True)
            self._queue_books(pipe)
            await client.guard(pipe.execute())

    async def _publisher(self, client: Any) -> None:
        while True:
            await self._publish(client)
            await asyncio.sleep(self.stats_period)

    async def _serve(self, client: Any, running: RunningPipeline) -> None:
        self._client = client
        slots = self._slots = _Slots(self.prefetch)
        done: asyncio.Queue[_Done] = asyncio.Queue(maxsize=self.max_prefetch)
        owner = self.owner = self._owner(running, done, slots)
        self._watch(running)
        # Outputs to a keyed block's partitions, and to a leaky edge, leave in the order of
        # this segment's input: a key's items reach their partition in order, and the entries
        # a leaky edge keeps (the newest, or the oldest) hold the newest (oldest) items. The
        # entries of a worker finish in any order (several wait for room in the segment's
        # input and take it in no set order): written as they finished, a burst of older items
        # came last, the trim kept it, and the newest 200 items of 600 were all dropped.
        flusher = self._flusher
        leaky_next = self.credit is not None and self.credit.leaky
        if (self.router is not None or leaky_next) and owner is None:
            flusher = self._ordered_flusher
            self._ordered = True
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            helpers = [
                tg.create_task(flusher(client, done, slots), name="aioflow:flush"),
                tg.create_task(self._publisher(client), name="aioflow:books"),
                tg.create_task(self._reaper(client), name="aioflow:reap"),
            ]
            if self.inner:
                helpers.append(
                    tg.create_task(self._control(client, running, done), name="aioflow:ctl")
                )
            if owner is None:
                helpers += [
                    tg.create_task(
                        self._reclaimer(client, running, done, slots), name="aioflow:claim"
                    ),
                    tg.create_task(self._heartbeat(client), name="aioflow:heartbeat"),
                ]
            else:
                # A partition's pending entries wait for its next owner (the lease), not for
                # an idle time: only the owner may process them, in order.
                helpers += [
                    tg.create_task(owner.lease_loop(client), name="aioflow:leases"),
                    tg.create_task(owner.snapshot_loop(client), name="aioflow:snapshots"),
                    tg.create_task(
                        self._gatekeeper(client, owner, running, done, slots), name="aioflow:gate"
                    ),
                ]
            try:
                if owner is None:
                    await self._reader(client, running, done, slots)
                else:
                    await self._partition_reader(client, owner, running, done, slots)
                # Stopping: in-flight items get a grace period, then stay pending for others.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.grace):
                        await self._idle.wait()
            finally:
                for task in (*helpers, *self._items):
                    task.cancel()
        if owner is not None:
            # Snapshot and release the partitions whose items are done, release the others.
            await owner.drain(client)
        # Leaving: this worker's consumer goes from its group(s) where it holds nothing (a
        # group keeps every consumer that ever read until deleted: one per worker started).
        with contextlib.suppress(RedisError, OSError):
            await asyncio.shield(self._reap(client, leaving=True))
        if self.in_flight:
            logger.warning(
                "worker %s: %d items left pending for other workers",
                self.consumer,
                len(self.in_flight),
            )
            # Leave the segment by cancellation rather than waiting for its items to drain.
            raise _Abandon

    # -- reading ------------------------------------------------------------------------------

    def _owner(
        self, running: RunningPipeline, done: asyncio.Queue[_Done], slots: _Slots
    ) -> Owner | None:
        if self.keyed is None:
            return None
        name = self.keyed.options.name
        lanes = self.lanes = KeyedLanes(running, name)
        lanes.keep()  # the keys' state lives on in Redis when this worker stops
        followers = {}
        for stage in self.stages[1:]:
            blk = keyed_block(stage)
            if blk is not None and blk.options.key is self.keyed.options.key:
                followers[blk.options.name] = KeyedLanes(running, blk.options.name)
                followers[blk.options.name].keep()

        async def process(entries: list[Entry]) -> None:
            # A takeover's entries, in stream order: those the last owner held (delivered
            # again) each run alone, the others as they come (the gatekeeper), and no new
            # entry is read before they are all dispatched.
            for tok, fields, deliveries in entries:
                self._gate.append((tok, fields, deliveries, self._epoch(tok)))
                if deliveries == 1:  # (acknowledged by the last owner: not pending)
                    self._answered.add(tok)
            self._gated.set()

        return Owner(
            self.keys,
            name,
            self.inbox,
            self._part_count,
            self.consumer,
            lanes,
            ttl=self.lease_ttl,
            snapshot_period=self.snapshot_period,
            pipeline=self.name,
            process=process,
            followers=followers,
        )

    async def _partition_reader(
        self,
        client: Any,
        owner: Owner,
        running: RunningPipeline,
        done: asyncio.Queue[_Done],
        slots: _Slots,
    ) -> None:
        """Read the partitions this worker owns (each in its stream's order)."""
        stop = self.stopping
        while not stop.is_set():
            while slots.free < 1:  # (a takeover's replay may take slots after the wake-up)
                await slots.wait_free()
            if self._isolating or self._gate:
                await self._wait_turn()
                continue
            streams = owner.readable()
            if not streams:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.05):
                        await stop.wait()
                continue
            owner.begin_read(streams)
            self._reading = True  # (no await since the check above: a quarantine waits)
            try:
                connects = client.connects
                try:
                    # Short blocks: a partition to be snapshotted waits for this read to end.
                    reply = await owner.read(client, streams, slots.free)
                except ResponseError as exc:
                    if not _stream_gone(exc):
                        raise
                    # Deleted (a run's keys cleaned up at its end, or by hand): made again.
                    logger.info(
                        "worker %s: partition streams of %r were deleted; made again",
                        self.consumer,
                        owner.block,
                    )
                    for stream in streams:
                        await ensure_group(client, stream)
                    continue
                if client.connects != connects:
                    # A connection was opened meanwhile: this read may have been sent again
                    # after its reply was lost with its connection, and the entries it
                    # delivered are this worker's, pending, unseen (before the ones the
                    # second read brought). They come first, in stream order: its pending
                    # entries not in flight.
                    reply = await client.xreadgroup(
                        GROUP, self.consumer, dict.fromkeys(streams, "0")
                    )
                    reply = [
                        (stream, [e for e in found if e[1] and self._unseen(stream, e[0])])
                        for stream, found in reply or ()
                    ]
                entries = owner.entries(reply)
                slots.take(len(entries))
                for tok, fields, deliveries in entries:
                    self._dispatch(tok, fields, running, done, deliveries)
            finally:
                self._reading = False
                self._settle.set()
                owner.end_read()

    async def _reader(
        self,
        client: Any,
        running: RunningPipeline,
        done: asyncio.Queue[_Done],
        slots: _Slots,
    ) -> None:
        stop = self.stopping
        while not stop.is_set():
            while slots.free < 1:  # (an entry's burst may take slots after the wake-up)
                await slots.wait_free()
            if self._isolating:
                await self._wait_turn()
                continue
            # Entries, not items: a burst holds up to in_burst items, and a worker that took a
            # burst per free slot would leave the segment's other workers idle.
            n = -(-slots.free // self.in_burst)
            self._reading = True  # (no await since the check above: a quarantine waits)
            try:
                reply = await client.xreadgroup(
                    GROUP, self.consumer, {self.inbox: ">"}, count=n, block=500
                )
            except ResponseError as exc:
                if not _stream_gone(exc):
                    raise
                reply = None
            finally:
                self._reading = False
                self._settle.set()
            if reply is None:
                # The stream or its group is gone: deleted (a run's keys cleaned up at its end,
                # or by hand). Made again at id 0: the next runs' items are read.
                logger.info(
                    "worker %s: input stream %s was deleted; made again", self.consumer, self.inbox
                )
                await ensure_group(client, self.inbox)
                continue
            entries = reply[0][1] if reply else []
            slots.take(len(entries))
            for entry_id, fields in entries:
                self._dispatch(entry_id, fields, running, done, 1)

    def _dispatch(
        self,
        entry_id: bytes,
        fields: dict[bytes, bytes],
        running: RunningPipeline,
        done: asyncio.Queue[_Done],
        deliveries: int,
    ) -> None:
        self.in_flight.add(entry_id)
        repeat = False
        if self.owner is not None:
            repeat = self.owner.repeat(entry_id, fields)
            self.owner.dispatched(entry_id)
        self._idle.clear()
        if repeat:
            # Taken already (a producer's write sent twice): acknowledged, not run again.
            task = self._tg.create_task(done.put(_Done(entry_id)))
        else:
            turn = None
            if self.owner is not None:
                # A partition's items go into the segment in stream order: one task per entry
                # puts them, and tasks waiting for room in a full input take it in no set
                # order (a later item of a key went through the keyed block first).
                part, _ = untoken(entry_id)
                after = self._turns.get(part)
                mine = self._turns[part] = asyncio.get_running_loop().create_future()
                turn = (after, mine)
            task = self._tg.create_task(
                self._handle(entry_id, fields, running, done, deliveries, turn)
            )
        self._items.add(task)
        task.add_done_callback(self._item_done)

    def _item_done(self, task: asyncio.Task[None]) -> None:
        self._items.discard(task)
        self._settle.set()

    # -- quarantine -----------------------------------------------------------------------------

    def _quiet(self) -> bool:
        """Whether this worker holds no entry but a suspect could be alone: no read under way,
        no entry in flight. (A worker that writes in input order may hold finished entries
        waiting for an older one, maybe the very suspect: those are not waited for.)"""
        if self._reading:
            return False
        return not self._items if self._ordered else not self.in_flight

    async def _wait_quiet(self) -> None:
        while not self._quiet():
            self._settle.clear()
            await self._settle.wait()

    async def _wait_turn(self) -> None:
        """Wait while a quarantine holds reads back (or the worker stops)."""
        stop = self.stopping
        while (self._isolating or self._gate) and not stop.is_set():
            self._turn.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.1):
                    await self._turn.wait()

    def _unseen(self, stream: Any, entry_id: bytes) -> bool:
        """Whether this worker's pending entry ``entry_id`` of a partition ``stream`` is not
        in flight (its read's reply was lost)."""
        assert self.owner is not None
        name = stream if isinstance(stream, str) else stream.decode()
        part = next(p for p in self.owner.parts if p.stream == name)
        return token(part.index, entry_id) not in self.in_flight

    def _suspect(self, deliveries: int) -> bool:
        """An entry delivered before (a worker died holding it) and not yet due to the
        dead-letter stream: it may be what killed that worker, so it runs alone."""
        return 1 < deliveries <= self.max_deliveries

    def _epoch(self, tok: bytes) -> int:
        assert self.owner is not None
        part, _ = untoken(tok)
        return self.owner.parts[part].epoch

    async def _gatekeeper(
        self,
        client: Any,
        owner: Owner,
        running: RunningPipeline,
        done: asyncio.Queue[_Done],
        slots: _Slots,
    ) -> None:
        """Dispatch a keyed segment's taken-over entries in stream order: each one its last
        owner held (delivered again) alone, when nothing else is in flight, claimed only then
        (so that the entries after it, still the dead owner's, are not held, and not counted
        delivered again, if it kills this worker too); the others as they come."""
        while True:
            while not self._gate:
                self._turn.set()
                self._gated.clear()
                await self._gated.wait()
            tok, fields, deliveries, epoch = self._gate[0]
            alone = self._suspect(deliveries)
            # A leaky keyed block (overflow="drop_oldest"/"drop_newest") drops items from its
            # input when it is full, and a takeover hands it every entry after the mark at once
            # (of every partition taken over): the entries its last owner processed, which
            # the restored state must count again, were dropped there, and the key's count went
            # back. So each goes in alone there too, reads held, as a suspect does.
            serial = alone or self._leaky_keyed
            if serial:
                self._isolating = True
                await self._wait_quiet()
            try:
                self._gate.popleft()
                if not owner.holds(tok, epoch):
                    self._answered.discard(tok)
                    continue  # lost meanwhile: its next owner processes it
                if alone:
                    await owner.claim(client, tok)
                    if not owner.holds(tok, epoch):
                        self._answered.discard(tok)
                        continue  # lost while it was claimed (its state is restored again)
                    self.isolated += 1
                    logger.info(
                        "worker %s: entry %s of %s delivered %d times runs alone (quarantine)",
                        self.consumer,
                        tok.decode(),
                        self.inbox,
                        deliveries,
                    )
                slots.take(1)
                self._dispatch(tok, fields, running, done, deliveries)
                if serial:
                    await self._wait_quiet()
            finally:
                if serial:
                    self._isolating = False

    async def _handle(
        self,
        entry_id: bytes,
        fields: dict[bytes, bytes],
        running: RunningPipeline,
        done: asyncio.Queue[_Done],
        deliveries: int,
        turn: tuple[asyncio.Future[None] | None, asyncio.Future[None]] | None = None,
    ) -> None:
        """Run the items of one entry (one, or a burst) and queue what to write for it: every
        item answered on its own, the entry acknowledged once all are. ``turn``: a partition
        entry's (the previous entry's future, its own): its items go into the segment after
        the previous entry's, and its own is set once they are in."""
        if turn is None:
            await self._run_entry(entry_id, fields, running, done, deliveries)
            return
        after, mine = turn

        def put() -> None:
            if not mine.done():
                mine.set_result(None)

        try:
            await self._run_entry(
                entry_id,
                fields,
                running,
                done,
                deliveries,
                after=None if after is None or after.done() else asyncio.shield(after),
                put=put,
            )
        finally:
            put()
            if self._turns.get(untoken(entry_id)[0]) is mine:
                del self._turns[untoken(entry_id)[0]]

    async def _run_entry(
        self,
        entry_id: bytes,
        fields: dict[bytes, bytes],
        running: RunningPipeline,
        done: asyncio.Queue[_Done],
        deliveries: int,
        *,
        after: Awaitable[Any] | None = None,
        put: Callable[[], None] | None = None,
    ) -> None:
        # An entry a takeover runs again for the state only was answered already: not stale.
        answered = bool(self._answered) and entry_id in self._answered
        if answered:
            self._answered.discard(entry_id)
        if self.owner is not None and b"v" not in fields:
            # No item: the end of a caller's run (docs/distributed.md, "The end of a run").
            with contextlib.suppress(MessageError):
                meta = read_meta(fields)
                if meta.get("k") == "end":
                    # It waits for the entries before it to finish, not for its turn; the
                    # entries after it wait for it (``put`` when it returns), so that a run
                    # that comes after this one (its caller cancelled, or the next run of a
                    # caller) never reaches a key before this run's end took it out.
                    await self._end_run(entry_id, fields, meta, running, done, deliveries)
                    return
        try:
            entry = parse_entry(fields, self.codec, self.keys)
        except EntryError as exc:
            logger.warning(
                "worker %s: entry %s of %s goes to the dead-letter stream: %s",
                self.consumer,
                entry_id.decode(),
                self.inbox,
                exc,
            )
            item = self._dead(entry_id, fields, str(exc))
            self._refuse(item, exc.metas, f"its input cannot be read: {exc}")
            await done.put(item)
            return
        metas = entry.metas
        if len(metas) > 1 and self._slots is not None:
            self._slots.take(len(metas) - 1)  # (the reader took one per entry)
        if deliveries > self.max_deliveries:
            reason = (
                f"delivered {deliveries} times without finishing (more than max_deliveries="
                f"{self.max_deliveries}): a worker died on it each time?"
            )
            item = self._dead(entry_id, fields, reason, items=len(metas))
            self._refuse(item, metas, reason, entry.values)
            await done.put(item)
            return
        item = _Done(entry_id, reply_to=metas[0].reply, items=len(metas))
        for position, reason in entry.errors.items():
            logger.warning(
                "worker %s: item %d of entry %s of %s goes to the dead-letter stream: %s",
                self.consumer,
                position,
                entry_id.decode(),
                self.inbox,
                reason,
            )
            item.dead.append(self._dead_item(entry_id, fields, position, reason))
            self._refuse(item, [metas[position]], f"its input cannot be read: {reason}")
        good = [i for i in range(len(metas)) if i not in entry.errors]
        if after is not None:
            # Its turn: the partition's entries before it are in the segment, and a run's
            # end before it has taken that run's keys out. Only then are its keys noted as its
            # run's (noted as soon as read, a run started after another's cancellation took
            # that run's keys as shared with it, and went on with their state).
            await after
            after = None
        if self._dropped_runs and all(meta.run in self._dropped_runs for meta in metas):
            await done.put(item)  # acknowledged, not run: its caller is gone
            return
        if self.owner is not None and self.lanes is not None:
            # Which runs touched which keys: a run's end evicts the keys only it touched.
            key_of = self.lanes.key
            for i in good:
                try:
                    key = key_of(entry.values[i])
                    # (a user's key may refuse to be hashed or compared, any time)
                    self.owner.touched.touch(key, metas[i].run, list(metas[i].path))
                except Exception:  # the block reports it for the item, if it fails there
                    continue
        # Each item's age since it entered the pipeline (max_age counts across machines).
        clock = self.clock
        births = [None if answered else metas[i].born for i in good]
        ages = [0.0 if born is None else clock.age(born) for born in births]
        # Keyed blocks inside the segment note which run each item is of (see _watch).
        tags = [(metas[i].run, metas[i].path, metas[i].reply) for i in good] if self.inner else None
        try:
            outcomes = await submit_outcomes(
                running, [entry.values[i] for i in good], ages, tags, after=after, put=put
            )
        except PipelineClosed:
            return  # stopping: the entry stays pending for another worker
        children: list[tuple[_Child, bytes]] = []
        for i, outcome in zip(good, outcomes, strict=True):
            if isinstance(outcome, BlockError):
                item.replies.append(pack_reply(metas[i].path, "err", e=error_to_data(outcome)))
            else:
                self._answer(item, metas[i], outcome, children)
        self._send_on(item, metas[0], children)
        await done.put(item)

    def _send_on(self, item: _Done, first: ItemMeta, children: list[tuple[_Child, bytes]]) -> None:
        """Add the outputs in ``children`` (of run ``first.run``) to what ``item`` writes to
        the next segment."""
        if children and self.router is not None:
            # A keyed next segment: one output per entry of its key's partition stream.
            for (path, born, part), body in children:
                child = dataclasses.replace(first, path=path, born=born)
                item.downstream.append(pack_item(child, body))
                item.routes.append(part)
                self.router.fit(part, len(body))
        elif children and self.credit is not None:
            # The outputs go on as burst entries too (one run: one meta per entry), each
            # with its input's birth.
            size = self.credit.fit(len(body) for _, body in children)
            for burst in cut_bursts(children, size):
                item.downstream.append(
                    pack_burst(
                        first.run,
                        first.reply,
                        first.end,
                        first.codec,
                        [path for (path, _, _), _ in burst],
                        [body for _, body in burst],
                        [born for (_, born, _), _ in burst],
                    )
                )

    async def _end_run(
        self,
        entry_id: bytes,
        fields: dict[bytes, bytes],
        meta: dict[str, Any],
        running: RunningPipeline,
        done: asyncio.Queue[_Done],
        deliveries: int,
    ) -> None:
        """A caller's run ended (an ``end`` entry in one of this segment's partitions): evict
        the keys of the partition that only that run touched, as a local run's end of stream
        evicts every key, and send what their ``evict`` hooks return on through the rest of
        the pipeline, tagged for the caller (``flushed``: the paths it is to wait for)."""
        owner, lanes = self.owner, self.lanes
        assert owner is not None
        assert lanes is not None
        part, _ = untoken(entry_id)
        try:
            run, reply, end, codec = (str(meta[f]) for f in ("r", "to", "end", "c"))
            base = int(meta["base"])
            check_reply(self.keys, run, reply)
        except (KeyError, TypeError, ValueError, EntryError) as exc:
            item = self._dead(entry_id, fields, f"malformed end-of-run message: {exc!r}")
            await done.put(item)
            return
        drop = bool(meta.get("drop"))
        item = _Done(entry_id, reply_to=reply)
        if deliveries > self.max_deliveries:
            reason = (
                f"the end of run {run} in partition {part} was delivered {deliveries} times "
                f"without finishing (more than max_deliveries={self.max_deliveries}): did its "
                "evict() kill each worker?"
            )
            item = self._dead(entry_id, fields, reason)
            item.reply_to = reply
            if not drop:
                err = BlockError(self.blocks[0], reason, phase="evict")
                item.replies.append(pack_reply((base,), "err", e=error_to_data(err)))
            await done.put(item)
            return
        # The run's items of this partition taken before this entry are through the block.
        await owner.wait_before(entry_id)
        touched = owner.touched_by(part, run)
        gone = await self._gone({r for _, runs in touched for r in runs} - {run})
        ending = owner.end_run(part, run, gone)
        if drop:
            # The run failed or stopped early: as in a local run, its keys go without evict().
            self._dropped(run)
            lanes.drop(_key_set(key for key, _ in ending).__contains__)
            await done.put(item)
            return
        logger.info(
            "worker %s: run %s ended: %d keys of partition %d of %r evicted",
            self.consumer,
            run,
            len(ending),
            part,
            self.blocks[0],
        )
        firsts = {id(key): first for key, first in ending}
        try:
            evicted = await lanes.evict([key for key, _ in ending], (run, (base,), reply))
        except BlockError as err:
            item.replies.append(pack_reply((base,), "err", e=error_to_data(err)))
            await done.put(item)
            return
        except PipelineClosed:
            return  # stopping: the entry stays pending for the partition's next owner
        self._flush_out(item, evicted, firsts, ItemMeta(run, (base,), reply, end, codec), part)
        await done.put(item)

    def _watch(self, running: RunningPipeline) -> None:
        """Note which runs touch which keys of the keyed blocks inside the segment."""
        for stage in self.stages[1:]:
            if keyed_block(stage) is None:
                continue
            name = cast("Block", stage).options.name
            lanes = KeyedLanes(running, name)
            touches = Touches()
            self.inner[name] = (lanes, touches)

            def seen(key: Any, tag: Any, name: str = name, touches: Touches = touches) -> None:
                if tag is None:
                    return
                run, path, reply = tag
                # (Called outside the block's guard: never raises. A user's key that refuses
                # to be hashed or compared again is not noted, and so not evicted at its run's
                # end, as a local run's end cannot take such a key out either.)
                with contextlib.suppress(Exception):
                    touches.touch(key, run, list(path))
                if (run, name) not in self._announced:
                    self._announced.add((run, name))
                    self._holds.append((reply, name))

            lanes.watch(seen)

    async def _control(
        self, client: Any, running: RunningPipeline, done: asyncio.Queue[_Done]
    ) -> None:
        """Read this worker's control stream: the ends of runs for keyed blocks inside the
        segment (the caller writes one to each worker that told it it holds keys)."""
        last: Any = "0-0"
        while True:
            reply = await client.xread({self.control: last}, count=100, block=1000)
            for _stream, entries in reply or ():
                for entry_id, fields in entries:
                    last = entry_id
                    try:
                        meta = read_meta(fields)
                    except MessageError as exc:
                        logger.error("worker %s: a control entry ignored: %s", self.consumer, exc)
                        continue
                    if meta.get("k") == "end":
                        await self._end_inner(meta, done)
                await client.xdel(self.control, *(eid for eid, _ in entries))

    def _dropped(self, run: str) -> None:
        """Caller run ``run`` ended with ``drop``: its items that come later are not run."""
        self._dropped_runs[run] = None
        while len(self._dropped_runs) > _DROPPED_RUNS:
            del self._dropped_runs[next(iter(self._dropped_runs))]

    async def _end_inner(self, meta: dict[str, Any], done: asyncio.Queue[_Done]) -> None:
        """A caller's run ended, for a keyed block inside the segment: as :meth:`_end_run`
        for the keys this worker holds (``part``: this worker's place in the caller's list)."""
        try:
            run, reply, end, codec, name = (str(meta[f]) for f in ("r", "to", "end", "c", "blk"))
            base, part = int(meta["base"]), int(meta["part"])
            check_reply(self.keys, run, reply)
        except (KeyError, TypeError, ValueError, EntryError) as exc:
            logger.error("worker %s: a malformed end of a run ignored: %r", self.consumer, exc)
            return
        item = _Done(b"", reply_to=reply, items=0, ack=False)
        found = self.inner.get(name)
        self._announced.discard((run, name))
        if found is None:
            item.replies.append(pack_reply((base,), "flushed", part=part, paths=[]))
            await done.put(item)
            return
        lanes, touches = found
        gone = await self._gone(touches.others(run))
        ending = touches.end(run, gone)
        if self.owner is not None and name in self.owner.followers:
            # Its state goes with the head's partitions: their snapshots must drop the keys.
            self.owner.followers_changed(key for key, _ in ending)
        if meta.get("drop"):
            self._dropped(run)
            lanes.drop(_key_set(key for key, _ in ending).__contains__)
            return
        logger.info(
            "worker %s: run %s ended: %d keys of %r evicted", self.consumer, run, len(ending), name
        )
        try:
            evicted = await lanes.evict([key for key, _ in ending], (run, (base,), reply))
        except BlockError as err:
            item.replies.append(pack_reply((base,), "err", e=error_to_data(err)))
            await done.put(item)
            return
        except PipelineClosed:
            return  # stopping: its keys go with this worker (the caller sees it gone)
        # Two workers may hold one key (its items went to both): the worker's place tells
        # their flushes apart.
        firsts = {id(key): [*first, part] for key, first in ending}
        self._flush_out(item, evicted, firsts, ItemMeta(run, (base,), reply, end, codec), part)
        await done.put(item)

    async def _gone(self, runs: set[str]) -> set[str]:
        """Which of ``runs`` have ended without telling (their caller deleted its reply
        stream): they no longer hold a key."""
        if not runs:
            return set()
        others = sorted(runs)
        pipe = self._client.pipeline(transaction=False)
        for other in others:
            pipe.exists(self.keys.reply(other))
        found = await self._client.guard(pipe.execute())
        return {other for other, n in zip(others, found, strict=True) if not n}

    def _flush_out(
        self,
        item: _Done,
        evicted: list[tuple[Any, list[Outcome | BlockError]]],
        firsts: dict[int, list[int]],
        meta: ItemMeta,
        part: int,
    ) -> None:
        """Add what ``evict()`` made of the keys to ``item``: the outputs at paths under the
        run's new index ``meta.path``, after a ``flushed`` answer that lists those paths.
        ``firsts``: the path of each key's first item, by the key's ``id()`` (the keys
        ``evicted`` names are the objects asked for; a user's key may refuse to be hashed
        again)."""
        base = meta.path[0]
        born = self.clock.now()
        paths: list[list[int]] = []
        children: list[tuple[_Child, bytes]] = []
        outs: list[dict[bytes, bytes]] = []
        for key, outcomes in evicted:
            for j, outcome in enumerate(outcomes):
                path = (base, *firsts[id(key)], j)
                paths.append(list(path))
                child = dataclasses.replace(meta, path=path, born=born)
                if isinstance(outcome, BlockError):
                    outs.append(pack_reply(path, "err", e=error_to_data(outcome)))
                    continue
                self._answer(item, child, outcome, children)
        # The caller learns which paths to wait for before (or with) their answers.
        item.replies[:0] = [pack_reply((base,), "flushed", part=part, paths=paths), *outs]
        self._send_on(item, dataclasses.replace(meta, born=born), children)

    def _refuse(
        self,
        item: _Done,
        metas: Sequence[ItemMeta],
        reason: str,
        values: Sequence[Any] | None = None,
    ) -> None:
        """Tell the callers of ``metas`` that their items failed here with ``reason``."""
        for position, meta in enumerate(metas):
            shown = summarize(values[position]) if values is not None else None
            err = BlockError(self.blocks[0], reason, item=shown)
            item.replies.append(pack_reply(meta.path, "err", e=error_to_data(err)))
            item.reply_to = meta.reply

    def _answer(
        self,
        item: _Done,
        meta: ItemMeta,
        outcome: Outcome,
        children: list[tuple[_Child, bytes]],
    ) -> None:
        """Add one item's outputs to what its entry writes: its reply, or ((path, birth,
        partition), bytes) pairs to ``children`` for the next segment."""
        outputs = outcome.outputs
        extra: dict[str, Any] = {}
        if not outputs:
            extra = {"reason": outcome.reason, "block": outcome.block}
        downstream: list[tuple[_Child, bytes]] = []
        try:
            if self.last == meta.end or self.outbox is None:
                if self.last != meta.end:
                    msg = (
                        f"this worker's blocks ({','.join(self.blocks)}) go past {meta.end!r}, "
                        "the caller's last remote block: start workers whose blocks end there"
                    )
                    raise MessageError(msg)
                item.replies.append(
                    pack_reply(meta.path, "out", self.codec.encode(outputs), **extra)
                )
                return
            if meta.end in self.blocks:
                msg = (
                    f"this worker's blocks ({','.join(self.blocks)}) go past {meta.end!r}, "
                    "the caller's last remote block: start workers whose blocks end there"
                )
                raise MessageError(msg)
            for j, out in enumerate(outputs):
                path = meta.path if len(outputs) == 1 else (*meta.path, j)
                part = self.router.partition(out) if self.router is not None else 0
                downstream.append(((path, meta.born, part), self.codec.encode(out)))
        except (CodecError, MessageError) as exc:
            err = BlockError(self.last, f"its output cannot be sent on: {exc}")
            item.replies.append(pack_reply(meta.path, "err", e=error_to_data(err)))
            return
        if len(outputs) != 1:
            item.replies.append(pack_reply(meta.path, "split", n=len(outputs), **extra))
        children.extend(downstream)

    def _dead(
        self, entry_id: bytes, fields: dict[bytes, bytes], reason: str, *, items: int = 1
    ) -> _Done:
        """The whole entry to the dead-letter stream (all its fields, as ``original_*``)."""
        dead = self._dead_header(entry_id, reason)
        for key, value in fields.items():
            if isinstance(key, bytes) and key[:1] in (b"m", b"v"):
                dead[b"original_" + key] = value
        return _Done(entry_id, dead=[dead], items=items)

    def _dead_item(
        self, entry_id: bytes, fields: dict[bytes, bytes], position: int, reason: str
    ) -> dict[bytes, bytes]:
        """One item of an entry to the dead-letter stream: the entry's ``m``, the item's
        position in it and its value (as ``original_v``)."""
        dead = self._dead_header(entry_id, reason)
        dead[b"position"] = str(position).encode()
        for key, name in ((b"m", b"original_m"), (value_field(position), b"original_v")):
            value = fields.get(key)
            if isinstance(value, bytes):
                dead[name] = value
        return dead

    def _dead_header(self, entry_id: bytes, reason: str) -> dict[bytes, bytes]:
        stream, entry = self.inbox, entry_id
        if self.owner is not None:
            stream, entry = self.owner.stream_of(entry_id)
        return {
            b"stream": stream.encode(),
            b"entry": entry,
            b"block": self.blocks[0].encode(),
            b"reason": reason.encode(),
            b"worker": self.consumer.encode(),
        }

    # -- writing ------------------------------------------------------------------------------

    async def _flusher(self, client: Any, done: asyncio.Queue[_Done], slots: _Slots) -> None:
        while True:
            batch = [await done.get()]
            while len(batch) < _BATCH and not done.empty():
                batch.append(done.get_nowait())
            await self._flush(client, batch, slots)

    async def _ordered_flusher(
        self, client: Any, done: asyncio.Queue[_Done], slots: _Slots
    ) -> None:
        """The flusher of a worker whose outputs go to a keyed block's partitions or to a
        leaky edge: it writes what its input entries made in the order of its input stream,
        oldest first, whichever worker of the segment holds the entries before them (it waits
        for those to be written), so that a key's items reach their partition in the order
        they reached this segment, and a leaky edge's trim keeps the newest items (or the
        oldest). (Several workers finish a segment's items in any order; the keyed block, and
        the trim, would see them so.)"""
        held: dict[bytes, _Done] = {}
        flushes: list[_Done] = []  # the flushes of a keyed block inside the segment

        def hold(item: _Done) -> None:
            if item.entry:
                held[item.entry] = item
            else:
                flushes.append(item)  # (_end_inner: no input entry to wait for)

        delay = 0.0
        while True:
            if not held and not flushes:
                hold(await done.get())
            elif delay:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        hold(await done.get())
            while not done.empty():
                hold(done.get_nowait())
            if flushes:
                batch, flushes[:] = flushes[:], []
                await self._flush(client, batch, slots)
            if not held:
                continue
            ready = await self._in_order(client, held)
            if not ready:
                delay = min(max(2 * delay, 0.002), 0.05)
                continue
            delay = 0.0
            await self._flush(client, [held.pop(entry) for entry in ready[:_BATCH]], slots)

    async def _in_order(self, client: Any, held: dict[bytes, _Done]) -> list[bytes]:
        """The entries of ``held`` that may be written now, oldest first: those that are, one
        after another, the input stream's oldest entries, and those no longer in it (another
        worker took one over while this one was slow, and wrote it: written again, at least
        once, as any taken-over entry)."""
        mine = sorted(held, key=_id_key)
        head = [eid for eid, _ in await client.xrange(self.inbox, "-", "+", count=len(mine))]
        ready: list[bytes] = []
        j = 0
        for entry in mine:
            if j < len(head) and entry == head[j]:
                j += 1
            elif j < len(head) and _id_key(entry) > _id_key(head[j]):
                break  # an older entry is still to be written (by this worker or another)
            ready.append(entry)
        return ready

    async def _flush(self, client: Any, batch: list[_Done], slots: _Slots) -> None:
        # The writes that leave the worker idle carry its books along.
        idle = self.in_flight <= {item.entry for item in batch}
        await self._write(client, batch, books=idle)
        for item in batch:
            if not item.entry:
                continue  # the flush of a keyed block inside the segment (_end_inner)
            self.in_flight.discard(item.entry)
            if self.owner is not None:
                self.owner.finished(item.entry)
            slots.release(item.items)
        if not self.in_flight:
            self._idle.set()
        self._settle.set()

    async def _write(self, client: Any, batch: list[_Done], *, books: bool = False) -> None:
        if self.router is not None and not self.router.leaky:
            await self._write_parts(client, self.router, batch, books=books)
            return
        if self.router is not None:
            # A leaky keyed next segment never waits: its partitions are trimmed after.
            await self._commit(client, batch, books=books)
            return
        credit = self.credit
        if credit is None or self.outbox is None:
            await self._commit(client, batch, books=books)
            return
        queue = list(batch)
        while queue:
            # Backpressure: never put more into the next stream than its backlog bound. An
            # entry whose outputs do not all fit has some written now and the rest, with its
            # acknowledgement, later (a worker that dies between writes them twice: at least
            # once, and the caller drops the repeats).
            wanted = sum(len(item.downstream) for item in queue)
            allowed = await credit.take(client, wanted) if wanted else 0
            chunk: list[_Done] = []
            count = 0
            head: _Done | None = None
            k = 0
            for item in queue:
                n = len(item.downstream)
                if count + n > allowed:
                    k = allowed - count
                    if k:
                        # Its answers (a split) go with its first outputs: the caller must
                        # know of the outputs before their own answers can come.
                        head = item
                        part = _Done(item.entry, item.downstream[:k], item.replies, item.reply_to)
                        part.ack = False
                        chunk.append(part)
                        count += k
                    break
                chunk.append(item)
                count += n
            whole = len(chunk) - (head is not None)
            last = whole == len(queue)
            credit.credit += allowed - count
            if not await self._commit(client, chunk, books=books and last):
                continue  # others filled the stream first: wait for room (take) and offer again
            del queue[:whole]
            if head is not None:
                head.downstream, head.replies = head.downstream[k:], []

    async def _write_parts(
        self, client: Any, router: Router, batch: list[_Done], *, books: bool
    ) -> None:
        """Backpressure per partition of the next (keyed) segment (one item per entry): the
        longest run of ``batch``'s entries whose outputs fit each partition's room as last
        seen (at least the first, once each partition it writes to has room for its outputs,
        or is empty) is committed with :data:`GUARD_SCRIPT`, which checks the partitions'
        bounds and writes in one step; a commit refused (others filled a partition first)
        waits and offers again. An entry's outputs go whole, with its acknowledgement: written
        twice (a worker that died between two parts of them), they would be counted twice by
        the keyed block's state. So an entry with more outputs for one partition than it holds
        waits until that partition is empty, and passes the bound by the rest."""
        queue = list(batch)
        while queue:
            first: dict[int, int] = {}
            for route in queue[0].routes:
                first[route] = first.get(route, 0) + 1
            if first:
                await router.wait_room(client, first, every=True)
            counts: dict[int, int] = {}
            k = 0
            for item in queue:
                trial = dict(counts)
                for route in item.routes:
                    trial[route] = trial.get(route, 0) + 1
                if k and any(n > router.credits[p].credit for p, n in trial.items()):
                    break
                counts = trial
                k += 1
            last = k == len(queue)
            if await self._commit(client, queue[:k], books=books and last, parts=counts):
                del queue[:k]

    async def _commit(
        self,
        client: Any,
        chunk: list[_Done],
        *,
        books: bool = False,
        parts: dict[int, int] | None = None,
    ) -> bool:
        """Write ``chunk`` (:meth:`_commit_now`, or :meth:`_commit_parts` with the entries it
        adds to each partition, ``parts``); False when the next stream's bound let none of it
        in."""
        commit = (
            self._commit_now
            if parts is None
            else functools.partial(self._commit_parts, parts=parts)
        )
        while True:
            try:
                if books:
                    # Books go out in the order they were read: a publication of older books
                    # (from the publisher, on another connection) must not land after these.
                    async with self._books_lock:
                        return await commit(client, chunk, books=True)
                return await commit(client, chunk)
            except _FencedOut as out:
                self._fenced_out(chunk, out.lost)

    def _fence(self, chunk: list[_Done]) -> tuple[list[tuple[int, str]], list[Any]]:
        """The leases a keyed block owner's commit of ``chunk`` checks, and their arguments for
        :data:`_LUA_FENCE` (none for another worker)."""
        if self.owner is None:
            return [], [0]
        pairs = self.owner.fence(item.entry for item in chunk if item.entry and not item.fenced)
        return pairs, self.owner.fence_args(pairs)

    def _fenced_out(self, chunk: list[_Done], lost: list[tuple[int, str]]) -> None:
        """The entries of ``chunk`` taken under the leases ``lost`` write nothing (their
        partitions' next owners process them again); the others are committed again."""
        assert self.owner is not None
        gone = set(lost)
        for item in chunk:
            if not item.entry or item.fenced:
                continue
            if set(self.owner.fence([item.entry])) & gone:
                item.fenced = True
                item.downstream, item.replies, item.dead, item.routes = [], [], [], []
                item.ack = False
        self.owner.fenced_out(gone)

    @staticmethod
    def _lost(pairs: list[tuple[int, str]], indexes: Any) -> _FencedOut:
        return _FencedOut([pairs[int(i) - 1] for i in indexes])

    async def _guarded(self, client: Any, keys: list[str], args: list[Any]) -> list[Any]:
        """Run :data:`GUARD_SCRIPT`; returns its reply with the backlogs as ints."""
        if self._guard_script is None:
            self._guard_script = client.raw.register_script(GUARD_SCRIPT)
        reply = await client.guard(self._guard_script(keys=keys, args=args))
        return [int(reply[0]), [int(found) for found in reply[1]], *reply[2:]]

    def _committed(
        self,
        reply: list[Any],
        holds: int,
        acked: int,
        dead: int,
        fence: list[tuple[int, str]] | None = None,
    ) -> bool:
        """Book a guarded commit's ``reply``: False when it did not run (raises
        :class:`_FencedOut` when a lease was lost)."""
        if reply[0] == -1:
            raise self._lost(fence or [], reply[2])
        if not reply[0]:
            return False
        del self._holds[:holds]  # (more may have come meanwhile)
        self.acked += acked
        self.dead_letters += dead
        if len(reply) > 2:
            failed = reply[2]
            raise ResponseError(failed.decode() if isinstance(failed, bytes) else str(failed))
        return True

    async def _commit_parts(
        self, client: Any, chunk: list[_Done], *, parts: dict[int, int], books: bool = False
    ) -> bool:
        """Write ``chunk`` to a keyed next segment's partitions with :data:`GUARD_SCRIPT`,
        if its ``parts`` (entries per partition) fit under their bounds."""
        router = self.router
        assert router is not None
        commands = Commands()
        holds = len(self._holds)
        acked, dead = self._queue_commit(commands, chunk, books=books)
        keys = sorted(parts)
        args: list[Any] = [GROUP]
        for part in keys:
            args += [router.credits[part].capacity, parts[part]]
        fence, fence_args = self._fence(chunk)
        args += [*fence_args, commands.count, *commands.args]
        reply = await self._guarded(client, [router.streams[part] for part in keys], args)
        for part, found in zip(keys, reply[1], strict=True):
            router.credits[part].measured(found)
        return self._committed(reply, holds, acked, dead, fence)

    def _queue_commit(
        self, pipe: Any, chunk: list[_Done], *, books: bool, outputs: Any = None
    ) -> tuple[int, int]:
        """Queue in ``pipe`` (a MULTI, or :class:`Commands` for :data:`GUARD_SCRIPT`) what
        ``chunk`` writes: the caller's holds, outputs (in ``outputs`` when given),
        answers, dead letters, acknowledgements and the books. Returns (entries
        acknowledged, dead letters)."""
        sink = pipe if outputs is None else outputs
        for reply_to, block in self._holds:
            # Before the answers of the items that made the keys: the caller knows of every
            # worker holding keys of its run before it sees the run answered.
            hold = pack_reply((0,), "holds", block=block, worker=self.consumer)
            pipe.xadd(reply_to, hold, nomkstream=True)
        ids = []
        dead = 0
        # The answers of a burst to one caller go in one entry (fields m, v, m1, v1, ...).
        answers: dict[str, dict[bytes, bytes]] = {}
        router = self.router
        for item in chunk:
            for k, fields in enumerate(item.downstream):
                stream = self.outbox if router is None else router.streams[item.routes[k]]
                sink.xadd(stream, wire(fields))
            if item.replies:
                entry = answers.setdefault(item.reply_to, {})
                for fields in item.replies:
                    _append_answer(entry, fields)
            for letter in item.dead:
                pipe.xadd(self.keys.dead, letter, maxlen=100_000, approximate=True)
                dead += 1
            if item.ack:
                ids.append(item.entry)
        for reply_to, entry in answers.items():
            pipe.xadd(reply_to, _wire_all(entry), nomkstream=True)
        if ids and self.owner is not None:
            self.owner.queue_acks(pipe, ids)
        elif ids:
            pipe.xack(self.inbox, GROUP, *ids)
            pipe.xdel(self.inbox, *ids)
        if books:
            self._queue_books(pipe)
        return len(ids), dead

    async def _commit_now(self, client: Any, chunk: list[_Done], *, books: bool = False) -> bool:
        router = self.router
        credit = self.credit if router is None else None
        adds = sum(len(item.downstream) for item in chunk) if credit is not None else 0
        if credit is not None and adds and not credit.leaky:
            # The next stream's bound is checked and the chunk written in one step (several
            # workers of a segment never take the same room), by GUARD_SCRIPT, or for large
            # values (frames: a script's arguments cost Redis two more copies of each) by
            # XADD and UNDO_SCRIPT in one MULTI, as the caller writes them.
            outbox = self.outbox
            assert outbox is not None
            commands = Commands()
            holds = len(self._holds)
            acked, dead = self._queue_commit(commands, chunk, books=books)
            fence, fence_args = self._fence(chunk)
            if commands.largest <= _BIG:
                args = [GROUP, credit.capacity, adds, *fence_args, commands.count, *commands.args]
                reply = await self._guarded(client, [outbox], args)
                credit.measured(reply[1][0])
                return self._committed(reply, holds, acked, dead, fence)
            # Large outputs (frames) go by XADD, and UNDO_SCRIPT, in the same MULTI, takes
            # them back when they pass the bound; the rest of the commit runs only if not.
            pipe = client.pipeline(transaction=True)
            rest = Commands()
            acked, dead = self._queue_commit(rest, chunk, books=books, outputs=pipe)
            pipe.eval(
                UNDO_SCRIPT,
                1,
                self.outbox,
                GROUP,
                credit.capacity,
                adds,
                "all",
                *fence_args,
                rest.count,
                *rest.args,
            )
            replies = await client.guard(pipe.execute(raise_on_error=False))
            check = replies.pop()
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply
            if isinstance(check, Exception):
                raise check
            credit.measured(int(check[1]))
            if int(check[0]) == -1:
                raise self._lost(fence, check[2])
            ran = [int(check[0]) > 0, None, *check[2:]]
            return self._committed(ran, holds, acked, dead)
        pipe = client.pipeline(transaction=True)
        if self.owner is not None:
            # A keyed block's owner writes only while it holds the leases its entries were
            # taken under (a script: a MULTI cannot refuse), then the trims, if any.
            commands = Commands()
            holds = len(self._holds)
            acked, dead = self._queue_commit(commands, chunk, books=books)
            fence, fence_args = self._fence(chunk)
            if self._fence_script is None:
                self._fence_script = client.raw.register_script(FENCE_SCRIPT)
            args = [*fence_args, commands.count, *commands.args]
            reply = await client.guard(self._fence_script(keys=[], args=args))
            if int(reply[0]) == -1:
                raise self._lost(fence, reply[1])
            del self._holds[:holds]
            if len(reply) > 1:
                failed = reply[1]
                raise ResponseError(failed.decode() if isinstance(failed, bytes) else str(failed))
        else:
            acked, dead = self._queue_commit(pipe, chunk, books=books)
            self._holds.clear()
        if credit is not None:
            credit.queue_check(pipe)  # the next stream's backlog, in the same round trip
        parts = [part for item in chunk for part in item.routes]
        trims = router.queue_trims(pipe, parts) if router is not None else 0
        replies = await client.guard(pipe.execute(raise_on_error=False)) if len(pipe) else []
        self.acked += acked
        self.dead_letters += dead
        found = Trims()
        if credit is not None:
            found.add(credit, credit.checked(replies.pop()))
        if trims and router is not None:  # (a leaky keyed next block: its partitions trimmed)
            router.trimmed(found, parts, replies[len(replies) - trims :])
            del replies[len(replies) - trims :]
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        if found:
            # Entries a leaky next edge holds beyond its bound: deleted, and their items'
            # callers told, in one step (killed before it, this worker leaves them in the
            # stream for the next trim), with books that count the drops when these writes
            # leave the worker idle.
            block = router.block if router is not None else self.next_name or ""
            await found.drop(client, self.codec, block, books=self._queue_books if books else None)
        return True

    # -- taking over ----------------------------------------------------------------------------

    async def _reclaimer(
        self,
        client: Any,
        running: RunningPipeline,
        done: asyncio.Queue[_Done],
        slots: _Slots,
    ) -> None:
        """Take over the entries other workers left pending longer than ``claim_idle`` (they
        died, maybe of one of them): one at a time, each alone in this worker (reads paused
        until nothing else is in flight, nothing else read while it runs), so that a poison
        pill kills no entry but itself; a burst is first split into entries of one item each
        (:meth:`_split`)."""
        idle_ms = max(1, int(self.claim_idle * 1000))
        period = max(0.05, self.claim_idle / 2)
        while not self.stopping.is_set():
            await asyncio.sleep(period)
            cursor: Any = "0-0"
            while not self.stopping.is_set():
                try:
                    # (A look first: a worker with nothing to take over does not pause its
                    # reads.)
                    if not await client.xpending_range(
                        self.inbox, GROUP, "-", "+", 1, idle=idle_ms
                    ):
                        break
                except ResponseError as exc:
                    if not _stream_gone(exc):
                        raise
                    break  # deleted: nothing to take over (the reader makes it again)
                self._isolating = True
                try:
                    await self._wait_quiet()
                    cursor = await self._take_over_one(
                        client, running, done, slots, idle_ms, cursor
                    )
                except ResponseError as exc:
                    if not _stream_gone(exc):
                        raise
                    break  # deleted meanwhile, with what was to be taken over
                finally:
                    self._isolating = False
                    self._turn.set()
                if cursor in ("0-0", b"0-0"):
                    break

    async def _take_over_one(
        self,
        client: Any,
        running: RunningPipeline,
        done: asyncio.Queue[_Done],
        slots: _Slots,
        idle_ms: int,
        cursor: Any,
    ) -> Any:
        """Claim one idle entry (``XAUTOCLAIM ... COUNT 1`` from ``cursor``) and run it alone,
        split it, or dead-letter it; returns the next cursor."""
        cursor, claimed, deleted = await _autoclaim(
            client, self.inbox, self.consumer, idle_ms, cursor, 1
        )
        if deleted:
            # Trimmed away while pending (a leaky edge): acknowledged and counted.
            await client.xack(self.inbox, GROUP, *deleted)
            self.trimmed += len(deleted)
        for eid, fields in claimed:
            if eid in self.in_flight:
                continue
            counts = await _deliveries(client, self.inbox, [eid])
            deliveries = counts.get(eid, 1)
            logger.info(
                "worker %s: took over entry %s of %s (delivery %d)",
                self.consumer,
                eid.decode(),
                self.inbox,
                deliveries,
            )
            # (A worker that feeds a keyed block writes in input order, and split items
            # would be at the end of the stream: there a burst runs alone, whole.)
            if deliveries > 1 and not self._ordered and await self._split(client, eid, fields):
                continue
            slots.take(1)
            self._dispatch(eid, fields, running, done, deliveries)
            if self._suspect(deliveries):
                self.isolated += 1
                await self._wait_quiet()  # (alone until it is written, or this worker dies)
        return cursor

    async def _split(self, client: Any, entry_id: bytes, fields: dict[bytes, bytes]) -> bool:
        """A burst delivered again is not run: its items go back to the input stream as
        entries of one item each (same run, path, reply stream and birth), written in one
        script with the burst's acknowledgement, so that only the item that killed a worker
        reaches ``max_deliveries``, not those that came with it. The caller learns each
        item's new entry (a ``moved`` answer, in the same script). False when ``entry_id``
        is no burst (or not a readable one: it runs, and is dead-lettered, as it is)."""
        try:
            meta = read_meta(fields)
        except MessageError:
            return False
        paths = meta.get("b")
        if not isinstance(paths, list) or len(paths) < 2:
            return False
        try:
            entry = parse_entry(fields, self.codec, self.keys)
        except EntryError:
            return False
        args: list[Any] = [GROUP, entry_id, self.consumer, len(entry.metas)]
        for position, item in enumerate(entry.metas):
            value = fields.get(value_field(position))
            if not isinstance(value, bytes):
                return False  # (a malformed burst: its item is dead-lettered as it runs)
            single = pack_item(item, value)
            note = pack_reply(item.path, "moved", s=self.inbox, old=entry_id.decode())
            args += [single[b"m"], single[b"v"], note[b"m"]]
        if self._split_script is None:
            self._split_script = client.raw.register_script(SPLIT_SCRIPT)
        keys = [self.inbox, entry.metas[0].reply]
        if not int(await client.guard(self._split_script(keys=keys, args=args))):
            return False  # (no longer this worker's: another took it over meanwhile)
        self.split_bursts += 1
        logger.info(
            "worker %s: burst %s of %s (%d items) delivered again: split into entries of one "
            "item each",
            self.consumer,
            entry_id.decode(),
            self.inbox,
            len(entry.metas),
        )
        return True

    def _streams_read(self) -> list[str]:
        """The streams this worker reads with the group: its input, or its partitions."""
        if self.keyed is not None:
            return partition_streams(self.inbox, self._part_count)
        return [self.inbox]

    async def _reap(self, client: Any, *, leaving: bool = False) -> int:
        """Delete the consumers of this worker's input groups that hold nothing and are gone:
        this one when ``leaving``, and those idle for ``4 * claim_idle`` (killed workers,
        whose entries were taken over). Returns how many went."""
        if self._reap_script is None:
            self._reap_script = client.raw.register_script(REAP_SCRIPT)
        idle_ms = max(1, int(4 * self.claim_idle * 1000))
        own = self.consumer if leaving else ""
        keep = "" if leaving else self.consumer
        args = [GROUP, own, idle_ms, keep]
        gone = await client.guard(self._reap_script(keys=self._streams_read(), args=args))
        return int(gone)

    async def _reaper(self, client: Any) -> None:
        """Every ``2 * claim_idle`` seconds, delete the consumers of killed workers that hold
        nothing any more (:meth:`_reap`): without it a group lists every worker ever started."""
        period = max(0.1, 2 * self.claim_idle)
        while True:
            await asyncio.sleep(period)
            if gone := await self._reap(client):
                logger.info(
                    "worker %s: %d consumers of stopped workers deleted from %s",
                    self.consumer,
                    gone,
                    self.inbox,
                )

    async def _heartbeat(self, client: Any) -> None:
        """Keep this worker's in-flight entries from looking idle (taken over while alive)."""
        period = max(0.05, self.claim_idle / 3)
        synced = asyncio.get_running_loop().time()
        while True:
            await asyncio.sleep(period)
            if asyncio.get_running_loop().time() - synced > 60:
                # The local clock drifts from the server's (max_age reads it).
                await self.clock.sync(client)
                synced = asyncio.get_running_loop().time()
            ids = list(self.in_flight)
            try:
                for start in range(0, len(ids), 500):
                    await client.xclaim(
                        self.inbox, GROUP, self.consumer, 0, ids[start : start + 500], justid=True
                    )
            except ResponseError as exc:
                if not _stream_gone(exc):
                    raise
                # The input stream was deleted under its entries in flight (their run ended
                # and its keys were cleaned up): nobody can take them over, nothing to keep.


class _SegmentSource:
    """The segment's books under the pipeline's own name (the metrics' ``pipeline`` label is
    the same in every worker and in the caller): those of its parts when it is split."""

    def __init__(self, name: str, parts: Sequence[Worker]) -> None:
        self.name = name
        self._parts = parts

    def statistics(self) -> dict[str, BlockStatistics]:
        found: dict[str, BlockStatistics] = {}
        for part in self._parts:
            if part.running is not None:
                found.update(part.running.statistics())
        return found

    def latency(self) -> LatencyHistogram:
        # A split segment has no latency of its own from end to end: its parts' histograms
        # add up (each counts its items' time through that part).
        hists = [part.running.latency() for part in self._parts if part.running is not None]
        if not hists:
            return LatencyHistogram()
        first = hists[0]
        counts = [sum(found) for found in zip(*(h.counts for h in hists), strict=True)]
        return LatencyHistogram(first.bounds, tuple(counts), sum(h.sum_s for h in hists))


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first error of ``group`` that is not a cancellation (nested groups flattened)."""
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        else:
            leaves.append(exc)

    walk(group)
    return next((e for e in leaves if not isinstance(e, asyncio.CancelledError)), leaves[0])


def _key_set(keys: Iterable[Any]) -> set[Any]:
    """The set of ``keys``, but those that refuse to be hashed or compared (a user's key)."""
    found: set[Any] = set()
    for key in keys:
        with contextlib.suppress(Exception):
            found.add(key)
    return found


def _stream_gone(exc: ResponseError) -> bool:
    """Whether ``exc`` says that a stream, or its consumer group, does not exist: deleted
    (``NOGROUP``; ``UNBLOCKED`` ends a read blocked on a stream deleted meanwhile; ``no such
    key`` is XINFO's)."""
    text = str(exc)
    return "NOGROUP" in text or "UNBLOCKED" in text or "no such key" in text


async def _autoclaim(
    client: Any, stream: str, consumer: str, idle_ms: int, cursor: Any, count: int
) -> tuple[Any, list[tuple[bytes, dict[bytes, bytes]]], list[bytes]]:
    reply = await client.xautoclaim(stream, GROUP, consumer, idle_ms, cursor, count=count)
    nxt = reply[0]
    claimed = [(eid, fields) for eid, fields in reply[1] if fields is not None]
    deleted = list(reply[2]) if len(reply) > 2 else []
    deleted += [eid for eid, fields in reply[1] if fields is None]
    return nxt, claimed, deleted


async def _deliveries(client: Any, stream: str, ids: list[bytes]) -> dict[bytes, int]:
    """How many times each entry was delivered (XPENDING over their range)."""
    lo, hi = min(ids, key=_id_key), max(ids, key=_id_key)
    rows = await client.xpending_range(stream, GROUP, lo, hi, len(ids) + 1000)
    wanted = set(ids)
    counts: dict[bytes, int] = {}
    for row in rows:
        eid = row["message_id"]
        if eid in wanted:
            counts[eid] = int(row["times_delivered"])
    return counts


def _append_answer(entry: dict[bytes, bytes], fields: dict[bytes, bytes]) -> None:
    """Add one answer (``m``, ``v``) to a reply entry: the first as ``m``/``v``, the next ones
    as ``m1``/``v1``, ``m2``/``v2``... (:func:`~aioflow.transport.messages.reply_answers`)."""
    n = len(entry) // 2
    suffix = str(n).encode() if n else b""
    entry[b"m" + suffix] = fields[b"m"]
    entry[b"v" + suffix] = fields.get(b"v", b"")


def _wire_all(entry: dict[bytes, bytes]) -> dict[bytes, Any]:
    """A reply entry with its large values as memoryviews (see :func:`~.redis.wire`)."""
    return {k: memoryview(v) if len(v) > _BIG else v for k, v in entry.items()}


def _id_key(entry_id: bytes) -> tuple[int, int]:
    ms, _, seq = entry_id.partition(b"-")
    return int(ms), int(seq or 0)


# -- the command line -------------------------------------------------------------------------


def main(
    argv: Sequence[str],
    load: Callable[[str], Pipeline],
    *,
    host_port: Callable[[str], tuple[str, int]],
    serve_metrics: ServeMetrics,
) -> int:
    """``python -m aioflow worker ...``; ``load`` resolves ``MODULE:PIPELINE``; the CLI passes
    the parser of ``HOST:PORT`` and the metrics server (nothing here imports the CLI or
    ``aioflow.observe``)."""

    parser = argparse.ArgumentParser(
        prog="python -m aioflow worker",
        description="serve consecutive blocks of a pipeline from Redis Streams",
    )
    parser.add_argument("target", help="MODULE:NAME of the Pipeline (the callers' definition)")
    parser.add_argument("--redis", required=True, help="redis:// or rediss:// URL")
    parser.add_argument("--blocks", required=True, help="NAME[,NAME...]: consecutive stages")
    parser.add_argument("--claim-idle", type=float, default=30.0)
    parser.add_argument("--max-deliveries", type=int, default=5)
    parser.add_argument("--codec", default="msgpack", choices=["msgpack", "pickle"])
    parser.add_argument(
        "--frames",
        default="raw",
        choices=["raw", "jpeg"],
        help="how video frames are written on (default raw, lossless; jpeg: about 10x smaller)",
    )
    parser.add_argument(
        "--jpeg-quality", type=int, default=90, help="with --frames jpeg: 0-100 (default 90)"
    )
    parser.add_argument("--prefix", default="aioflow")
    parser.add_argument("--grace", type=float, default=3.0)
    parser.add_argument(
        "--prefetch",
        type=int,
        default=None,
        help="items taken ahead (default: 4 x workers, >= 8, more for a fast segment)",
    )
    parser.add_argument(
        "--stats-period", type=float, default=0.5, help="seconds between publications of the books"
    )
    parser.add_argument(
        "--stats-ttl", type=float, default=15.0, help="seconds the books outlive the worker"
    )
    parser.add_argument(
        "--metrics",
        metavar="HOST:PORT",
        type=host_port,
        help="serve this worker's Prometheus metrics at http://HOST:PORT/metrics while it runs "
        "(port 0 picks a free one; the address is printed on stderr)",
    )
    parser.add_argument(
        "--token", help="with --metrics: requests must carry 'Authorization: Bearer TOKEN'"
    )
    parser.add_argument(
        "--partitions",
        type=int,
        default=DEFAULT_PARTITIONS,
        help="partitions of a keyed block's input (the first caller or worker decides)",
    )
    parser.add_argument(
        "--lease-ttl",
        type=float,
        default=10.0,
        help="seconds a partition's lease lasts unrenewed (how long a dead owner's wait)",
    )
    parser.add_argument(
        "--snapshot-period",
        type=float,
        default=1.0,
        help="seconds between snapshots of a keyed block's state to Redis",
    )
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(list(argv))
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    pipeline = load(args.target)
    try:
        worker = Worker(
            pipeline,
            [b for b in args.blocks.split(",") if b],
            args.redis,
            claim_idle=args.claim_idle,
            max_deliveries=args.max_deliveries,
            codec=args.codec,
            frames=args.frames,
            jpeg_quality=args.jpeg_quality,
            prefix=args.prefix,
            grace=args.grace,
            prefetch=args.prefetch,
            stats_period=args.stats_period,
            stats_ttl=args.stats_ttl,
            metrics=args.metrics,
            token=args.token,
            serve_metrics=serve_metrics,
            partitions=args.partitions,
            lease_ttl=args.lease_ttl,
            snapshot_period=args.snapshot_period,
        )
    except SegmentMismatch as exc:
        sys.stderr.write(f"aioflow worker: {exc}\n")
        return EXIT_MISMATCH
    except ValueError as exc:  # a bad codec option (--jpeg-quality 200)
        parser.error(str(exc))
    from ..loop import run as run_main

    try:
        run_main(_serve_until_signalled(worker))
    except SegmentMismatch as exc:
        sys.stderr.write(f"aioflow worker: {exc}\n")
        return EXIT_MISMATCH
    except (RedisConnectionError, RedisError, OSError) as exc:
        sys.stderr.write(f"aioflow worker: Redis at {redact(args.redis)}: {exc}\n")
        return 1
    return 0


#: seconds a stopping worker gets on top of its grace to write its last books and leave
STOP_MARGIN = 1.5


async def _serve_until_signalled(worker: Worker) -> None:
    """Serve until SIGTERM/SIGINT, then stop within ``grace`` + :data:`STOP_MARGIN` seconds.

    The stop is checked between Redis commands; a command retrying a lost connection (the
    server down, up to about 40 s of backoff) would keep the worker past any deadline a
    supervisor gives it. So once signalled, the worker is cancelled when it has not stopped by
    then: what it held stays pending in Redis for another worker (at-least-once), as after a
    kill, and the process still exits 0 as a stopped worker does."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stopping.set)
    serving = asyncio.ensure_future(worker.serve())
    stopping = asyncio.ensure_future(worker.stopping.wait())
    try:
        await asyncio.wait([serving, stopping], return_when=asyncio.FIRST_COMPLETED)
        if not serving.done():
            done, _ = await asyncio.wait([serving], timeout=worker.grace + STOP_MARGIN)
            if not done:
                logger.warning(
                    "worker %s: not stopped %.1f s after the signal (Redis unreachable?): "
                    "leaving what it holds pending for other workers",
                    worker.consumer,
                    worker.grace + STOP_MARGIN,
                )
                # Cancelled again while it is not done: its cleanup may wait on Redis too.
                for _ in range(20):
                    serving.cancel()
                    await asyncio.wait([serving], timeout=0.25)
                    if serving.done():
                        break
                return
        await serving
    finally:
        stopping.cancel()
        if not serving.done():
            serving.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await serving
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
