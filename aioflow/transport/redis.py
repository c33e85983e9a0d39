"""Redis Streams edges: one pipeline across processes and machines.

Install with ``pip install aioflow[redis]``. The caller runs::

    outputs = await pipe.run(items, transport=RedisTransport("redis://host:6379/0"))

and workers serve the blocks (``python -m aioflow worker app:pipe --redis URL --blocks a,b``).
Each *segment* (consecutive blocks one worker runs) reads its input stream with a consumer group;
inside a segment the edges stay in-process channels. See ``docs/distributed.md``.

This is the only module of aioflow that imports redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import uuid
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Collection,
    Iterable,
    Mapping,
)
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

try:
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry as _RedisRetry
    from redis.backoff import ExponentialBackoff
    from redis.exceptions import AuthenticationError, AuthorizationError, RedisError, ResponseError
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError
except ImportError as exc:  # pragma: no cover - depends on the environment
    _msg = (
        "aioflow.transport.redis needs redis: pip install aioflow[redis] "
        "(quoted in zsh: pip install 'aioflow[redis]')"
    )
    raise ImportError(_msg) from exc

from .._engine.channel import Channel, ChannelClosed
from .._engine.segment import Outcome, sub_pipeline, submit_outcome
from .._engine.supervisor import PipelineRun, stage_names, wait_finished
from ..block import Block
from ..errors import (
    AioflowError,
    BlockError,
    GraphError,
    ItemDropped,
    PipelineClosed,
    describe,
    summarize,
)
from ..graph import Branch
from ..stats import BlockStatistics, merge_statistics
from .codec import Codec, CodecError, MsgpackCodec, pack_plain, unpack_plain
from .messages import (
    GROUP,
    ItemMeta,
    Keys,
    MessageError,
    ServerClock,
    error_from_data,
    graph_signature,
    item_metas,
    pack_burst,
    pack_item,
    pack_reply,
    read_meta,
    reply_answers,
)
from .partitions import DEFAULT_PARTITIONS, Router, agree_count, keyed_block, partition_streams

if TYPE_CHECKING:
    from ..pipeline import Pipeline, RunningPipeline

__all__ = [
    "RedisConnectionError",
    "RedisError",
    "Client",
    "ClientClosedError",
    "NoWorkerError",
    "REPLY_TTL",
    "RedisTransport",
    "ReplyStreamLost",
    "ResponseError",
    "backlog",
    "burst_size",
    "connect",
    "cut_bursts",
    "ensure_group",
    "Trims",
    "redact",
    "wire",
]

logger = logging.getLogger("aioflow.transport")

_BATCH = 100
#: values longer than this (bytes) are handed to redis-py as memoryviews (see wire())
_BIG = 64 * 1024
_READ_SIZE = 1024 * 1024
#: a burst entry stops growing past this many bytes (a frame goes alone)
_BURST_BYTES = 1024 * 1024
#: reply entries a caller reads between two trims of its reply stream
_TRIM_EVERY = 200
#: most entries a caller looks for at once when answers stop coming (_check_trimmed)
_TRIM_CHECK = 1000
#: seconds between two readings of the workers' books by a caller
BOOKS_PERIOD = 0.5
#: The bound of a blocking Redis edge (items) whose block kept the default ``queue_size``:
#: the bound counts every item between the producer's write and the reader's
#: acknowledgement, so at a given round trip it caps the rate (64 items per cycle of caller,
#: worker and four hops through Redis reach about half of a raw producer's rate; 1024 pass
#: it: docs/distributed.md#speed). A block's own ``queue_size=`` is kept exactly.
REDIS_QUEUE_SIZE = 1024
#: ... and for large items the most bytes such an edge keeps in Redis: 64 MiB, about 72
#: 640x480x3 frames (1024 of them would be 900 MB of the server's memory). The items' size
#: is that of the largest of a write.
REDIS_QUEUE_BYTES = 64 * 1024 * 1024
#: the fewest items the byte budget leaves a default edge (items larger than 8 MiB)
_MIN_DEPTH = 8
WAKE = {b"m": pack_plain({"k": "wake"}), b"v": b""}


def wire(fields: dict[bytes, bytes]) -> dict[bytes, Any]:
    """``fields`` as written to Redis: a large value goes as a memoryview, which redis-py sends
    as it is (its hiredis packer would copy it into the command, slowly for megabytes)."""
    if any(len(value) > _BIG for value in fields.values()):
        return {k: memoryview(v) if len(v) > _BIG else v for k, v in fields.items()}
    return fields


def burst_size(capacity: int) -> int:
    """Most items a producer puts in one entry of a stream whose reader's ``queue_size`` is
    ``capacity``: an eighth of it (at most 100), so that the bound on the stream's entries,
    ``capacity // burst``, still bounds its items by ``capacity`` and leaves several entries
    in flight at once."""
    return max(1, min(_BATCH, capacity // 8))


def redact(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for logs and messages)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


class ClientClosedError(RedisConnectionError):
    """A command of a :class:`Client` that :meth:`Client.aclose` cancelled on its way."""


async def _checkout_failed(error: Exception) -> None:
    """(The pool has put the connection back already, to be reopened at the next try.)"""


class _CheckoutRetryPool(aioredis.ConnectionPool):
    """A connection pool whose checkout is retried as the commands are.

    redis-py retries a command that fails on its connection, with its ``retry`` (backoff and
    budget), but a connection it takes from the pool and finds closed (the server dropped it:
    a ``CLIENT KILL``, a proxy or server restart) is reopened once, outside those retries, at
    checkout (``ensure_connection``): dropped again in that moment, the command failed at
    once, and a worker exited. Here a failed checkout is tried again with the same backoff,
    within the same budget.
    """

    #: connections opened so far, the first time or again: a command that failed on its
    #: connection is sent again on the next one, and what it had done may have been done
    connects = 0

    def make_connection(self) -> Any:
        conn = super().make_connection()  # type: ignore[no-untyped-call]
        conn.register_connect_callback(self._connected)
        return conn

    def _connected(self, conn: Any) -> None:
        self.connects += 1

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        checkout: Callable[..., Awaitable[Any]] = super().get_connection
        retry: _RedisRetry = self.connection_kwargs["retry"]
        return await retry.call_with_retry(lambda: checkout(*args, **kwargs), _checkout_failed)


class Client:
    """A redis-py asyncio client whose commands can always be cancelled.

    redis-py can swallow a cancellation that lands while a command waits for its reply (its read
    timeout absorbs it: redis/redis-py#2028, #2551), and a cancelled run would then hang. Each
    command here runs in a task of its own that the caller waits for: cancelling the caller
    always raises in the caller, and the command's task is cancelled and collected on
    :meth:`aclose`. Commands are the client's methods (``await client.xadd(...)``); a pipeline's
    ``execute()`` goes through :meth:`guard`. A command that :meth:`aclose` cancels under a
    caller who is not being cancelled raises :class:`ClientClosedError` (a redis-py
    ``ConnectionError``), never a bare ``CancelledError`` in a task nobody cancelled.
    """

    def __init__(self, url: str) -> None:
        pool = _CheckoutRetryPool.from_url(
            url,
            retry=_RedisRetry(
                ExponentialBackoff(cap=1.0, base=0.02),
                retries=40,
                supported_errors=(RedisConnectionError, RedisTimeoutError, OSError),
                # A wrong password or missing rights do not get better by waiting.
                is_retryable=lambda exc: (
                    not isinstance(exc, AuthenticationError | AuthorizationError)
                ),
            ),
            retry_on_error=[RedisConnectionError, RedisTimeoutError, OSError],
            socket_timeout=30,
            # Frames are ~1 MB: read them in few calls rather than 64 KiB at a time.
            socket_read_size=_READ_SIZE,
        )
        self.raw = aioredis.Redis.from_pool(pool)
        self._calls: set[asyncio.Task[Any]] = set()
        self._closed = False

    @property
    def connects(self) -> int:
        """Connections opened so far (the first time or again, after one was lost): when it
        changed during a command, the command may have been sent twice."""
        return int(getattr(self.raw.connection_pool, "connects", 0))

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.raw, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            return await self.guard(method(*args, **kwargs))

        return call

    def pipeline(self, *, transaction: bool) -> Any:
        return self.raw.pipeline(transaction=transaction)

    async def guard(self, aw: Any) -> Any:
        task = asyncio.ensure_future(aw)
        self._calls.add(task)
        task.add_done_callback(self._done)
        try:
            await asyncio.wait([task])
        except asyncio.CancelledError:
            task.cancel()
            raise
        if task.cancelled() and self._closed:
            # (aclose() cancelled it: the run is ending while this command was on its way)
            msg = "the Redis client was closed while the command ran"
            raise ClientClosedError(msg)
        return task.result()

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._calls.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: an abandoned command's error is not news

    async def aclose(self) -> None:
        self._closed = True
        calls = list(self._calls)
        for task in calls:
            task.cancel()
        if calls:
            # A command that swallowed its cancellation still ends with its blocking timeout.
            await asyncio.wait(calls, timeout=5)
        await self.raw.aclose()


def connect(url: str) -> Client:
    """A :class:`Client` for ``url`` (``redis://`` or ``rediss://``) that retries connection
    errors with exponential backoff (a restarting server is waited for)."""
    return Client(url)


async def ensure_group(client: Any, stream: str) -> None:
    """Create the consumer group of ``stream`` (and the stream) at id 0, so that items written
    before any worker started are read; both sides call it, so an existing group is fine."""
    try:
        await client.xgroup_create(stream, GROUP, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


async def backlog(client: Any, stream: str) -> int:
    """Entries of ``stream`` not yet acknowledged: the group's lag (never delivered) plus its
    pending entries (delivered, not acknowledged), or XLEN when that is fewer.

    XLEN alone would count acknowledged entries too where they stay (a keyed block's
    partitions keep them until a snapshot; elsewhere workers delete what they acknowledge).
    The lag alone is wrong once entries past the group's last delivered one were deleted
    (:data:`UNDO_SCRIPT`, a trim): Redis reports none until the group reads past them, and
    then (7.0.15) a lag that still counts them, for good (redis/redis#13337), which would hold
    a producer back forever. Both count every entry not acknowledged, so the fewer is right.
    """
    pipe = client.pipeline(transaction=False)
    pipe.xinfo_groups(stream)
    pipe.xlen(stream)
    groups, length = await client.guard(pipe.execute(raise_on_error=False))
    if isinstance(groups, ResponseError):
        return 0  # no stream yet
    if isinstance(groups, BaseException):
        raise groups
    found = _group_backlog(groups)
    return int(length) if found is None else min(found, int(length))


def _group_backlog(groups: Any) -> int | None:
    """The group's lag plus pending from an XINFO GROUPS reply; None when it cannot tell."""
    for group in groups:
        name = group.get("name")
        if name in (GROUP, GROUP.encode()):
            lag = group.get("lag")
            if lag is None:
                return None
            return int(lag) + int(group.get("pending") or 0)
    return None


class NoWorkerError(AioflowError):
    """Items wait for a segment that no live worker serves (``no_worker_timeout``); the
    message names the segment's first block."""


class ReplyStreamLost(AioflowError):
    """The caller's reply stream is gone under a live run: it expired (the caller gave no
    sign of life for :data:`REPLY_TTL` seconds: its event loop stalled?), or the Redis server
    lost its data (restarted without persistence), and answers written meanwhile were
    dropped. The run fails rather than wait for them."""


#: Seconds a caller's reply stream outlives the caller's last sign of life. A caller that
#: ends deletes it; one killed (SIGKILL, a SIGTERM it does not handle, a lost machine) cannot,
#: and its stream, with the answers to its items still in the streams, would stay for good. A
#: live caller renews the TTL every ``REPLY_TTL / 20`` seconds.
REPLY_TTL = 300.0


#: Finds what a leaky edge's trim deletes: while more than ARGV[2] entries wait undelivered, the
#: oldest (drop_oldest) or the newest (drop_newest) of them. Entries delivered to a worker
#: (pending) are never touched: their worker answers for them. Returns {waiting, pending, id1,
#: {m fields of id1}, id2, ...}, and deletes nothing: the producer deletes them and answers their
#: callers in one step (:data:`DROP_SCRIPT`), so that a producer killed between the two leaves
#: the entries in the stream (the next trim finds them again) rather than items deleted that
#: nobody answers.
#: The entries waiting are counted as XLEN minus pending (workers delete what they acknowledge,
#: in the same MULTI), never from XINFO's lag: after entries ahead of the group were deleted
#: (this script's own trims) Redis reports a lag that still counts them (7.0.15 does; see
#: redis/redis#13337), and trusting it a trim deleted every waiting entry, the newest too.
#: (A pending entry deleted by other hands makes the count low: fewer are trimmed until the
#: reclaimer acknowledges it, never one too many.)
#: With ARGV[4] == '1' the stream is a keyed block's partition, where acknowledged entries stay
#: until the owner's next snapshot: the entries after the group's last delivered one are read
#: instead (at most ARGV[2] of them kept, besides those deleted). Its owner never sees those it
#: deletes (a takeover processes again only entries the group delivered).
TRIM_SCRIPT = """
local stream, group = KEYS[1], ARGV[1]
local capacity = tonumber(ARGV[2])
local ok, groups = pcall(redis.call, 'XINFO', 'GROUPS', stream)
if not ok then return {-1, 0} end
local last, pending
for _, g in ipairs(groups) do
  local f = {}
  for i = 1, #g, 2 do f[g[i]] = g[i + 1] end
  if f['name'] == group then
    last, pending = f['last-delivered-id'], tonumber(f['pending'])
  end
end
if last == nil then return {-1, 0} end
local waiting, entries
local after = '(' .. last
if ARGV[4] == '1' then
  -- A keyed block's partition keeps acknowledged entries until its owner's next snapshot
  -- (a next owner processes again those after the mark), so XLEN - pending counts them too:
  -- the waiting entries are read instead, those after the last delivered (no more than
  -- capacity are kept, besides the ones to delete).
  local kept
  if ARGV[3] == 'drop_newest' then
    kept = redis.call('XRANGE', stream, after, '+', 'COUNT', capacity)
    if #kept < capacity then return {#kept, pending} end
    entries = redis.call('XRANGE', stream, '(' .. kept[#kept][1], '+')
  else
    kept = redis.call('XREVRANGE', stream, '+', after, 'COUNT', capacity)
    if #kept < capacity then return {#kept, pending} end
    entries = redis.call('XRANGE', stream, after, '(' .. kept[#kept][1])
  end
  waiting = #kept + #entries
else
  waiting = math.max(0, redis.call('XLEN', stream) - pending)
  local excess = waiting - capacity
  if excess <= 0 then return {waiting, pending} end
  if ARGV[3] == 'drop_newest' then
    entries = redis.call('XREVRANGE', stream, '+', after, 'COUNT', excess)
  else
    entries = redis.call('XRANGE', stream, after, '+', 'COUNT', excess)
  end
end
local out = {waiting, pending}
for _, e in ipairs(entries) do
  local metas = {}
  local fields = e[2]
  for i = 1, #fields, 2 do
    if string.sub(fields[i], 1, 1) == 'm' then
      metas[#metas + 1] = fields[i]
      metas[#metas + 1] = fields[i + 1]
    end
  end
  out[#out + 1] = e[1]
  out[#out + 1] = metas
end
out[1] = waiting - #entries
return out
"""


#: Lua: ``backlog_of(stream, group)``, the entries of ``stream`` that ``group`` has not
#: acknowledged, as :func:`backlog` counts them: lag + pending, or XLEN when that is fewer.
#: Shared by the caller's and the workers' bounded writes.
_LUA_BACKLOG = """local function backlog_of(stream, group)
  local length = redis.call('XLEN', stream)
  local ok, groups = pcall(redis.call, 'XINFO', 'GROUPS', stream)
  if ok then
    for _, g in ipairs(groups) do
      local f = {}
      for i = 1, #g, 2 do f[g[i]] = g[i + 1] end
      if f['name'] == group and f['lag'] then
        return math.min(length, tonumber(f['lag']) + tonumber(f['pending']))
      end
    end
  end
  return length
end
"""


#: The backlog of KEYS[1] for the group ARGV[1] (:func:`backlog`), read in a producer's
#: pipeline after its writes.
BACKLOG_SCRIPT = _LUA_BACKLOG + "return backlog_of(KEYS[1], ARGV[1])\n"


#: Writes entries to a stream only as far as its backlog bound allows, atomically (no other
#: producer writes between the check and the writes): the backlog is the group's lag plus its
#: pending entries (XLEN when Redis cannot tell the lag), as :func:`backlog` reads it; while it
#: is under ARGV[2] entries, the next of the ARGV[3] entries is appended (each given as its
#: number of field-and-value arguments, then those). Returns {written, backlog after, the
#: ids of the entries written...}. Being
#: one command, it also wakes a worker blocked on the stream once, with every entry written
#: (pipelined XADDs wake it at the first, and it reads one entry at a time). Used for items up
#: to 64 KiB: Redis copies a script's arguments twice more than an XADD's, which for frames
#: tripled its CPU per frame (2.3 against 0.8 ms); those go by :data:`UNDO_SCRIPT`.
APPEND_SCRIPT = (
    """
local stream, group = KEYS[1], ARGV[1]
local capacity = tonumber(ARGV[2])
"""
    + _LUA_BACKLOG
    + """local backlog = backlog_of(stream, group)
local count = tonumber(ARGV[3])
local out = {0, 0}
local written, at = 0, 4
while written < count and backlog + written < capacity do
  local n = tonumber(ARGV[at])
  out[#out + 1] = redis.call('XADD', stream, '*', unpack(ARGV, at + 1, at + n))
  written = written + 1
  at = at + n + 1
end
out[1], out[2] = written, backlog + written
return out
"""
)


#: Lua: ``run_commands(at)``, the commands recorded by :class:`Commands` from ARGV[at] on (how
#: many, then each as its number of arguments, then those), each with pcall (one that fails
#: does not stop the others, as in a MULTI); returns the first error, or nil.
_LUA_RUN = """local function run_commands(at)
  local failed = nil
  local count = tonumber(ARGV[at])
  at = at + 1
  for _ = 1, count do
    local n = tonumber(ARGV[at])
    local reply = redis.pcall(unpack(ARGV, at + 1, at + n))
    if failed == nil and type(reply) == 'table' and reply['err'] then failed = reply['err'] end
    at = at + n + 1
  end
  return failed
end
"""

#: Deletes the entries a trim found (:data:`TRIM_SCRIPT`) and answers their items' callers, in
#: one step. KEYS are the streams; ARGV[1] the group; then per stream the number of its entries
#: and per entry its id, the number n of its answers and n triples (reply stream, ``m``, ``v``).
#: An entry is deleted only if it is still there undelivered (a reader may have taken it since,
#: or another producer's trim deleted it): only then do its answers go, to reply streams that
#: exist (a run that has ended is not answered). Then :data:`_LUA_RUN`'s commands (the
#: producer's books, counting every entry found) run if every entry found was deleted. Returns
#: {1 or 0 (the commands ran), the 1-based numbers of the entries deleted, in ARGV's order}.
DROP_SCRIPT = (
    _LUA_RUN
    + """local function newer(a, b)
  local a1, a2 = string.match(a, '^(%d+)-(%d+)$')
  local b1, b2 = string.match(b, '^(%d+)-(%d+)$')
  a1, a2, b1, b2 = tonumber(a1), tonumber(a2), tonumber(b1), tonumber(b2)
  return a1 > b1 or (a1 == b1 and a2 > b2)
end
local group = ARGV[1]
local at, number, all = 2, 0, true
local deleted = {}
for k = 1, #KEYS do
  local stream = KEYS[k]
  local last = nil
  local ok, groups = pcall(redis.call, 'XINFO', 'GROUPS', stream)
  if ok then
    for _, g in ipairs(groups) do
      local f = {}
      for i = 1, #g, 2 do f[g[i]] = g[i + 1] end
      if f['name'] == group then last = f['last-delivered-id'] end
    end
  end
  local count = tonumber(ARGV[at])
  at = at + 1
  for _ = 1, count do
    local id, n = ARGV[at], tonumber(ARGV[at + 1])
    at = at + 2
    number = number + 1
    if last ~= nil and newer(id, last) and redis.call('XDEL', stream, id) == 1 then
      deleted[#deleted + 1] = number
      for j = 0, n - 1 do
        local base = at + 3 * j
        redis.pcall('XADD', ARGV[base], 'NOMKSTREAM', '*', 'm', ARGV[base + 1], 'v', ARGV[base + 2])
      end
    else
      all = false
    end
    at = at + 3 * n
  end
end
local ran = 0
if all then
  run_commands(at)
  ran = 1
end
return {ran, deleted}
"""
)

#: The fence of a keyed block's owner (:mod:`.partitions`): from ARGV[at], a count, then that
#: many pairs of a partition's lease key and the token under which the commit's entries were
#: taken (none when the arguments end there). Returns the pairs (from 1) whose lease holds
#: another value now, and where the arguments after them start. (The leases are not in
#: KEYS: as the commands', a single server's keys.)
_LUA_FENCE = """local function fence_check(at)
  local n = tonumber(ARGV[at])
  local lost = {}
  if n == nil then return lost, at end
  for i = 1, n do
    if redis.call('GET', ARGV[at + 2 * i - 1]) ~= ARGV[at + 2 * i] then lost[#lost + 1] = i end
  end
  return lost, at + 2 * n + 1
end
"""

#: A keyed block owner's commit whose outputs go to no bounded stream (answers, a leaky next
#: stream): the fence (:data:`_LUA_FENCE`) from ARGV[1], then the commands
#: (:data:`_LUA_RUN`), run only if every lease still holds its token. Returns {1} (or {1, the
#: first error of a command}), or {-1, the pairs lost} when nothing ran.
FENCE_SCRIPT = (
    _LUA_RUN
    + _LUA_FENCE
    + """local lost, at = fence_check(1)
if #lost > 0 then return {-1, lost} end
local failed = run_commands(at)
if failed then return {1, failed} end
return {1}
"""
)

#: Runs a worker's commit (its outputs to the next segment's streams KEYS, its answers, its
#: acknowledgements) only if the outputs fit under those streams' backlog bounds, atomically,
#: as :data:`APPEND_SCRIPT` does the caller's writes: after ARGV[1] (the group), two numbers
#: per key: its bound (entries) and how many entries the commands add to it; then the fence
#: of a keyed block's owner (:data:`_LUA_FENCE`: a count of 0 for another worker); then the
#: commands (:data:`_LUA_RUN`). With a lease lost, nothing runs: it returns {-1, {the
#: backlogs}, the pairs lost}. KEYS are one stream, or the partitions of a keyed next block
#: that the commit writes to. Nothing runs when, for any key, the backlog plus those entries
#: would pass the bound, unless that stream is empty (one input's outputs more than a
#: partition holds go when it is empty): the worker waits and offers again; the outputs and
#: the acknowledgement of their input stay together, and no other producer writes between the
#: check and the writes. Returns {1 if it ran else 0, {the backlog of each key after}, the
#: first error of a command if any}.
GUARD_SCRIPT = (
    _LUA_BACKLOG
    + _LUA_RUN
    + _LUA_FENCE
    + """local group = ARGV[1]
local found, fits = {}, true
for i = 1, #KEYS do
  local capacity, adds = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
  local backlog = backlog_of(KEYS[i], group)
  found[i] = backlog
  if adds > 0 and backlog > 0 and backlog + adds > capacity then fits = false end
end
local lost, at = fence_check(2 * #KEYS + 2)
if #lost > 0 then return {-1, found, lost} end
if not fits then return {0, found} end
for i = 1, #KEYS do found[i] = found[i] + tonumber(ARGV[2 * i + 1]) end
local failed = run_commands(at)
if failed then return {1, found, failed} end
return {1, found}
"""
)


#: The bound for large values (over 64 KiB: frames), which go by XADD (a script's arguments
#: cost Redis two more copies of each, 3x its CPU per frame): runs in the same MULTI right
#: after the XADDs of ARGV[3] entries to KEYS[1], so that nothing runs between the writes and
#: this check: while the backlog passes the bound ARGV[2], the newest of those entries (the
#: stream's last ones) are deleted again, all of them when ARGV[4] is 'all' (a worker's
#: commit: then the commands that follow, from ARGV[5] on (:data:`_LUA_RUN`), do not run
#: either; unless the stream was empty: one input's outputs go then), else down to the
#: bound (the caller writes the rest later). A worker's commit ('all') has the fence of a keyed
#: block's owner (:data:`_LUA_FENCE`) at ARGV[5], before its commands: with a lease lost, its
#: entries are deleted and nothing else runs ({-1, the backlog after, the pairs lost}).
#: Several producers never pass the bound together;
#: a producer that offered more than there was room for (its view of the room was old)
#: wasted the transfer of what is deleted. Returns {entries kept, the backlog after, the
#: first error of a command}.
#: (The deleted entries, past the group's last delivered one, make Redis report no lag until
#: the group reads past them: :data:`_LUA_BACKLOG` counts XLEN meanwhile, exact on a stream
#: whose readers delete what they acknowledge; never used on a keyed block's partitions,
#: which keep acknowledged entries.)
UNDO_SCRIPT = (
    _LUA_BACKLOG
    + _LUA_RUN
    + _LUA_FENCE
    + """local stream, group = KEYS[1], ARGV[1]
local capacity, adds = tonumber(ARGV[2]), tonumber(ARGV[3])
local backlog = backlog_of(stream, group)
local excess = 0
local at = 5
if ARGV[4] == 'all' then
  local lost
  lost, at = fence_check(5)
  if #lost > 0 then
    if adds > 0 then
      local ids = {}
      for _, e in ipairs(redis.call('XREVRANGE', stream, '+', '-', 'COUNT', adds)) do
        ids[#ids + 1] = e[1]
      end
      redis.call('XDEL', stream, unpack(ids))
    end
    return {-1, backlog - adds, lost}
  end
end
if adds > 0 and backlog > capacity then
  if ARGV[4] ~= 'all' then
    excess = math.min(adds, backlog - capacity)
  elseif backlog - adds > 0 then
    excess = adds
  end
end
if excess > 0 then
  local ids = {}
  for _, e in ipairs(redis.call('XREVRANGE', stream, '+', '-', 'COUNT', excess)) do
    ids[#ids + 1] = e[1]
  end
  redis.call('XDEL', stream, unpack(ids))
  backlog = backlog - excess
end
if ARGV[4] == 'all' and excess > 0 then return {0, backlog} end
local failed = nil
if #ARGV >= at then failed = run_commands(at) end
if failed then return {adds - excess, backlog, failed} end
return {adds - excess, backlog}
"""
)


#: A caller's writes to a keyed block's partitions, atomically bounded: KEYS are the
#: partition streams, ARGV[1] the group, then each key's bound (entries), then the entries,
#: each as the index of its key (from 1), its number of field-and-value arguments, and those.
#: An entry is written while its partition has room; once one of a partition is refused, so
#: are the later ones of that partition (a key's items keep their order). Returns {{the id of
#: each entry written, or 0}, {each key's room left}}.
PARTITION_SCRIPT = (
    _LUA_BACKLOG
    + """local group = ARGV[1]
local room = {}
for i = 1, #KEYS do room[i] = tonumber(ARGV[1 + i]) - backlog_of(KEYS[i], group) end
local ids = {}
local at = #KEYS + 2
while at <= #ARGV do
  local k, n = tonumber(ARGV[at]), tonumber(ARGV[at + 1])
  if room[k] > 0 then
    ids[#ids + 1] = redis.call('XADD', KEYS[k], '*', unpack(ARGV, at + 2, at + 1 + n))
    room[k] = room[k] - 1
  else
    room[k] = 0
    ids[#ids + 1] = 0
  end
  at = at + n + 2
end
return {ids, room}
"""
)


class Commands:
    """Redis commands recorded for :data:`GUARD_SCRIPT`, queued with the names and arguments
    of a redis-py pipeline's (those a worker's commit uses)."""

    __slots__ = ("args", "count", "largest")

    def __init__(self) -> None:
        self.args: list[Any] = []
        self.count = 0
        #: the longest value among the arguments (bytes)
        self.largest = 0

    def _add(self, *args: Any) -> None:
        self.args.append(len(args))
        self.args.extend(args)
        self.count += 1
        for arg in args:
            if isinstance(arg, bytes | bytearray | memoryview) and len(arg) > self.largest:
                self.largest = len(arg)

    def xadd(
        self,
        name: str,
        fields: Mapping[bytes, Any],
        *,
        maxlen: int | None = None,
        approximate: bool = False,
        nomkstream: bool = False,
    ) -> None:
        args: list[Any] = ["XADD", name]
        if nomkstream:
            args.append("NOMKSTREAM")
        if maxlen is not None:
            args += ["MAXLEN", "~" if approximate else "=", maxlen]
        args.append("*")
        for pair in fields.items():
            args.extend(pair)
        self._add(*args)

    def xack(self, name: str, group: str, *ids: Any) -> None:
        self._add("XACK", name, group, *ids)

    def xdel(self, name: str, *ids: Any) -> None:
        self._add("XDEL", name, *ids)

    def hset(self, name: str, *, mapping: Mapping[Any, Any]) -> None:
        args: list[Any] = ["HSET", name]
        for pair in mapping.items():
            args.extend(pair)
        self._add(*args)

    def pexpire(self, name: str, ms: int) -> None:
        self._add("PEXPIRE", name, ms)


def cut_bursts(pairs: list[tuple[Any, bytes]], size: int) -> list[list[tuple[Any, bytes]]]:
    """``pairs`` (an item's path or index, its bytes) cut into the items of burst entries: at
    most ``size`` each and, past an entry's first item, at most :data:`_BURST_BYTES`."""
    bursts: list[list[tuple[Any, bytes]]] = []
    current: list[tuple[Any, bytes]] = []
    nbytes = 0
    for pair in pairs:
        if current and (len(current) >= size or nbytes + len(pair[1]) > _BURST_BYTES):
            bursts.append(current)
            current, nbytes = [], 0
        current.append(pair)
        nbytes += len(pair[1])
    if current:
        bursts.append(current)
    return bursts


class _Credit:
    """How many more entries a producer may write to a stream before it looks again.

    The bound is ``capacity`` items; a producer that writes up to ``burst`` items per entry
    gets ``capacity // burst`` entries (the backlog Redis reports counts entries). Large items
    make smaller bursts (:meth:`fit`).

    A leaky edge (the reading block's ``overflow`` is ``"drop_oldest"`` or ``"drop_newest"``)
    never makes its producer wait: each burst of writes is followed by :data:`TRIM_SCRIPT`,
    which finds the undelivered entries beyond the same entry bound; :meth:`checked` returns
    them with the metas of every item they carry (each item of a trimmed burst), and
    :meth:`Trims.drop` deletes them and tells those items' callers in one step;
    :attr:`dropped` counts them, in items, for the reading block's books.
    """

    __slots__ = (
        "block",
        "budget",
        "burst",
        "capacity",
        "credit",
        "depth",
        "dropped",
        "items",
        "known",
        "max_burst",
        "overflow",
        "partitioned",
        "stream",
    )

    def __init__(
        self,
        stream: str,
        capacity: int,
        burst: int = 1,
        *,
        overflow: str = "block",
        block: str = "",
        partitioned: bool = False,
        budget: int | None = None,
    ) -> None:
        self.stream = stream
        #: a keyed block's partition stream: acknowledged entries stay until a snapshot
        self.partitioned = partitioned
        #: the bound in items, and (a default Redis edge) the most bytes it keeps: the bound
        #: for the items at hand (``items``) is then the fewer (:meth:`fit`)
        self.depth = capacity
        self.budget = budget
        self.items = capacity
        self.max_burst = self.burst = burst
        self.capacity = max(1, capacity // burst)
        self.credit = 0
        #: whether ``credit`` came from Redis yet (else the first wait asks at once)
        self.known = False
        self.overflow = overflow
        #: the block that reads the stream (its books count the drops)
        self.block = block
        #: items this producer trimmed from the stream
        self.dropped = 0

    @property
    def leaky(self) -> bool:
        return self.overflow != "block"

    @staticmethod
    def bound_of(stage: Block | Branch) -> tuple[int, int | None]:
        """The bound of ``stage``'s input edge: items (:func:`stage_capacity`) and bytes
        (:func:`stage_budget`)."""
        return stage_capacity(stage), stage_budget(stage)

    @classmethod
    def for_stage(cls, stream: str, stage: Block | Branch) -> _Credit:
        """The credit of a producer writing ``stream``, the input of ``stage``."""
        capacity = stage_capacity(stage)
        return cls(
            stream,
            capacity,
            burst_size(capacity),
            overflow=stage_overflow(stage),
            block=_stage_name(stage),
            budget=stage_budget(stage),
        )

    def fit(self, sizes: Iterable[int]) -> int:
        """The burst size for items of these sizes (bytes): large items go fewer per entry
        (a frame alone), and the stream then gets as many more entries. Under a byte budget
        the bound shrinks for large items (:data:`REDIS_QUEUE_BYTES`)."""
        largest = max(1, max(sizes, default=1))
        items = self.items
        if self.budget is not None:
            items = min(self.depth, max(_MIN_DEPTH, self.budget // largest))
        burst = max(1, min(self.max_burst, _BURST_BYTES // largest))
        if burst != self.burst or items != self.items:
            before = self.capacity
            self.burst = burst
            self.items = items
            self.capacity = max(1, items // burst)
            self.credit += self.capacity - before
        return burst

    async def take(self, client: Any, wanted: int, progress: asyncio.Event | None = None) -> int:
        """Wait until the stream's backlog is under its capacity; return how many of
        ``wanted`` may be written now (>= 1). ``progress``, when given, is set when the
        backlog may have shrunk (answers came): the wait ends then rather than at its timeout.
        A leaky edge never waits: all of ``wanted`` may go (the trim follows the writes)."""
        if self.leaky:
            return wanted
        delay = 0.002
        while self.credit < 1:
            if progress is not None:
                progress.clear()
            self.credit = self.capacity - await backlog(client, self.stream)
            if self.credit < 1:
                if progress is None:
                    await asyncio.sleep(delay)
                else:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(delay):
                            await progress.wait()
                delay = min(delay * 2, 0.05)
        n = min(wanted, self.credit)
        self.credit -= n
        return n

    async def room(self, client: Any, wanted: int, progress: asyncio.Event) -> int:
        """How many of ``wanted`` entries to offer :data:`APPEND_SCRIPT` (which writes only
        those that still fit): once half the bound is free (all of ``wanted`` when that is
        less), all the room there is. Waits for that much room without asking Redis while
        answers come (:meth:`freed` counts the entries they free, and ``progress`` is set), so
        that a full stream is refilled by halves at least, not an entry at a time, and a worker
        can work on one half while the other is written: each write, each worker's read and
        each acknowledgement carries several entries (the round trips, not the bytes, are what
        an edge pays for at a small ``queue_size``). More than half is offered when it is free:
        a fast worker answers a whole window at once (it reads both halves before it is done
        with the first), and writing it back in one go saves a round trip of the caller and
        one of the worker per window. Asks Redis (:func:`backlog`) at first, and while the
        room stays short, 2 ms into the wait and then at intervals doubling to 50 ms: room
        that other producers' entries free, or that answers from a later segment tell of long
        after the acknowledgement here, is seen that way; from the second such look on, any
        room is taken (the answers that would tell of more may be far off)."""
        half = max(1, self.capacity // 2)
        need = min(wanted, half)
        loop = asyncio.get_running_loop()
        delay = 0.002
        poll_at = loop.time() if not self.known else loop.time() + delay
        while self.credit < need:
            progress.clear()
            timeout = poll_at - loop.time()
            if timeout > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await progress.wait()
                if self.credit >= need:
                    break
            if loop.time() >= poll_at:
                self.measured(await backlog(client, self.stream))
                if self.credit >= 1 and delay >= 0.004:
                    # Answers do not tell of this room (a later segment answers, or others
                    # write): waiting longer for half would leave the stream run dry.
                    break
                delay = min(delay * 2, 0.05)
                poll_at = loop.time() + delay
        return max(0, min(wanted, self.credit))

    def measured(self, found: int) -> None:
        """The stream's backlog is ``found`` entries (read from Redis just now)."""
        self.credit = self.capacity - found
        self.known = True

    def freed(self, n: int) -> None:
        """``n`` entries this producer wrote were acknowledged (their items answered)."""
        self.credit = min(self.capacity, self.credit + n)

    def queue_check(self, pipe: Any) -> None:
        """Read the backlog in ``pipe`` after its writes (no round trip of its own), or trim
        the stream of a leaky edge; pass the reply to :meth:`checked`."""
        if self.leaky:
            pipe.eval(
                TRIM_SCRIPT,
                1,
                self.stream,
                GROUP,
                self.capacity,
                self.overflow,
                "1" if self.partitioned else "0",
            )
        else:
            pipe.eval(BACKLOG_SCRIPT, 1, self.stream, GROUP)

    def checked(self, reply: Any) -> list[tuple[bytes, list[dict[str, Any]]]]:
        """Take :meth:`queue_check`'s reply; returns the entries a leaky edge's trim found
        beyond the bound, each with the metas of the items it carries, for :class:`Trims` to
        delete and answer."""
        if self.leaky:
            if isinstance(reply, BaseException):
                # The writes went through; the next burst's trim catches up.
                logger.warning("trimming %s failed: %s", self.stream, reply)
                return []
            found: list[tuple[bytes, list[dict[str, Any]]]] = []
            for i in range(2, len(reply) - 1, 2):
                fields = reply[i + 1]
                metas = item_metas(dict(zip(fields[::2], fields[1::2], strict=True)))
                found.append((reply[i], metas))
            return found
        # Not known (an error): the next take() asks again.
        self.credit = 0 if isinstance(reply, BaseException) else self.capacity - int(reply)
        return []

    def books(self) -> BlockStatistics | None:
        """The reading block's books of the drops this producer made (merged with the
        workers' records of that block), or None before any."""
        if not self.dropped:
            return None
        n = self.dropped
        return BlockStatistics(
            name=self.block, received=n, dropped=n, dropped_by={"overflow": n}, workers=0
        )


class Trims:
    """The entries a producer's trims found beyond their leaky edges' bounds
    (:meth:`_Credit.checked`): :meth:`drop` deletes them and answers their items' callers in one
    step (:data:`DROP_SCRIPT`)."""

    __slots__ = ("found",)

    def __init__(self) -> None:
        self.found: list[tuple[_Credit, list[tuple[bytes, list[dict[str, Any]]]]]] = []

    def add(self, credit: _Credit, entries: list[tuple[bytes, list[dict[str, Any]]]]) -> None:
        if entries:
            self.found.append((credit, entries))

    def __bool__(self) -> bool:
        return bool(self.found)

    async def drop(
        self,
        client: Any,
        codec: Codec,
        block: str,
        *,
        local_run: str | None = None,
        books: Callable[[Any], None] | None = None,
    ) -> list[dict[str, Any]]:
        """Delete the entries found that are still there undelivered and tell their items'
        callers that ``block`` dropped them (``overflow``), in one step; the items of run
        ``local_run`` get no answer there (its caller, the producer, answers them itself).
        ``books`` queues the producer's books on the commands it is given: they count the drops
        and go in the same step, or just after when a reader took some entry meanwhile. Returns
        the metas of the items dropped; each credit's ``dropped`` counts them."""
        empty = codec.encode([])
        keys: list[str] = []
        args: list[Any] = [GROUP]
        entries: list[tuple[_Credit, list[dict[str, Any]]]] = []
        for credit, found in self.found:
            keys.append(credit.stream)
            args.append(len(found))
            for entry, metas in found:
                entries.append((credit, metas))
                notices = []
                for meta in metas:
                    path, reply = meta.get("p"), meta.get("to")
                    ours = local_run is not None and meta.get("r") == local_run
                    if isinstance(path, list) and isinstance(reply, str) and not ours:
                        answer = pack_reply(path, "out", empty, reason="overflow", block=block)
                        notices.append((reply, answer))
                args += [entry, len(notices)]
                for reply, answer in notices:
                    args += [reply, answer[b"m"], answer[b"v"]]
                credit.dropped += len(metas)  # (for the books; taken back if it stays)
        self.found = []
        commands = Commands()
        if books is not None:
            books(commands)
        args += [commands.count, *commands.args]
        ran, deleted = await client.guard(client.raw.eval(DROP_SCRIPT, len(keys), *keys, *args))
        went = {int(number) for number in deleted}
        dropped: list[dict[str, Any]] = []
        for number, (credit, metas) in enumerate(entries, 1):
            if number in went:
                dropped += metas
            else:
                credit.dropped -= len(metas)  # a reader took it, or another producer's trim
        if not int(ran) and books is not None:
            pipe = client.pipeline(transaction=True)
            books(pipe)
            await client.guard(pipe.execute())
        return dropped


@dataclasses.dataclass(frozen=True, slots=True)
class _Part:
    """Consecutive stages of a pipeline that run in one place: the caller (``local``), or
    workers (a *leg*: one or more segments, answered on the caller's reply stream)."""

    local: bool
    stages: tuple[Block | Branch, ...]


class _Plan:
    """Which stages of a pipeline run in the caller and which in workers: alternating parts,
    in pipeline order (``a >> b >> c`` with ``local={"b"}``: workers, caller, workers)."""

    def __init__(self, pipeline: Pipeline, local: Collection[str]) -> None:
        stages = pipeline.stages
        names = [_stage_name(s) for s in stages]
        unknown = sorted(set(local) - set(names))
        if unknown:
            msg = (
                f"pipeline {pipeline.name!r}: local={unknown} names no top-level stage "
                f"(stages: {names})"
            )
            raise GraphError(msg)
        self.stages = stages
        self.parts: list[_Part] = []
        for stage, name in zip(stages, names, strict=True):
            here = name in local
            if self.parts and self.parts[-1].local == here:
                last = self.parts[-1]
                self.parts[-1] = _Part(here, (*last.stages, stage))
            else:
                self.parts.append(_Part(here, (stage,)))
        self.remote = any(not part.local for part in self.parts)


def _stage_name(stage: Block | Branch) -> str:
    return stage.name if isinstance(stage, Branch) else stage.options.name


def stage_capacity(stage: Block | Branch) -> int:
    """The bound (items) of a stage's input stream's backlog: its ``queue_size``, unless it is
    a block that kept the default on a blocking edge: then :data:`REDIS_QUEUE_SIZE` (and
    :func:`stage_budget`). A leaky edge keeps its ``queue_size`` (it says how many of the
    newest items are kept, and never slows its producer), and so does a keyed block."""
    if isinstance(stage, Branch):
        return stage.queue_size
    if stage_budget(stage) is not None:
        return REDIS_QUEUE_SIZE
    return stage.options.queue_size


def stage_budget(stage: Block | Branch) -> int | None:
    """The byte budget of a stage's input stream (:data:`REDIS_QUEUE_BYTES`) when its bound is
    the Redis default (:func:`stage_capacity`), else None (its ``queue_size`` is exact). A
    keyed block's partitions share the bound and the budget alike (:class:`.partitions.Router`)."""
    if isinstance(stage, Branch) or stage.options.overflow != "block":
        return None
    return None if stage._aioflow_sized else REDIS_QUEUE_BYTES


def stage_depth(stage: Block | Branch) -> int:
    """How many more items than its ``queue_size`` a stage's Redis input edge may hold (the
    caller's window and a worker's read-ahead grow by as much)."""
    size = stage.queue_size if isinstance(stage, Branch) else stage.options.queue_size
    return max(0, stage_capacity(stage) - size)


def stage_overflow(stage: Block | Branch) -> str:
    """The ``overflow`` policy of a stage's input edge (a branch's is ``"block"``)."""
    return "block" if isinstance(stage, Branch) else stage.options.overflow


def warn_shared_by_stream(leg: Iterable[Block | Branch]) -> list[str]:
    """Warn about each remote block whose input is shared by stream (``fair=``, ``per_key=``,
    ``serve="newest"``, ``Batch(max_per_key=)``): a block heading a segment reads a Redis
    stream, whose trim drops the oldest (or newest) entries of every stream alike and whose
    workers take entries as they come. So the sharing holds only among the items a worker has
    read (docs/distributed.md). Returns the blocks warned about."""
    warned = []
    for stage in leg:
        if isinstance(stage, Branch):
            continue
        opts = stage.options
        capped = opts.batch is not None and opts.batch.max_per_key is not None
        if opts.stream_key() is None and opts.serve == "oldest" and not capped:
            continue
        warned.append(opts.name)
        logger.warning(
            "block %r: fair=, per_key=, serve='newest' and Batch(max_per_key=) share its input "
            "by stream only within each worker: where it heads a segment its input is a Redis "
            "stream, trimmed and read first in, first out across streams (docs/distributed.md)",
            opts.name,
        )
    return warned


class RedisTransport:
    """Runs a pipeline's blocks in worker processes, with Redis Streams as the edges between.

    Args:
        url: ``redis://[:password@]host:port/db`` or ``rediss://...`` (TLS). The password is
            never logged.
        local: names of top-level stages the caller runs itself, anywhere in the pipeline
            (``local={"decode"}``; ``local={"track"}`` between two remote parts); every other
            stage runs in workers.
        codec: how items are written (default :class:`~aioflow.transport.codec.MsgpackCodec`;
            workers must use the same).
        prefix: the first part of every key (several deployments on one Redis).
        no_worker_timeout: seconds after which a run fails with :class:`NoWorkerError` when
            items wait in the stream of a remote segment that no live worker serves (none
            ever read it, or the books of all that did expired) and no answer came meanwhile
            (None: wait; a warning naming the block is logged after a second either way).
        window: most inputs in flight per run (sent and not yet answered); default: the sum of
            the remote stages' ``queue_size`` plus 64.
        partitions: how many partitions the input of a keyed block that heads a segment has
            (each read by one worker at a time, so that its per-key order and state hold across
            workers; ``docs/distributed.md``), unless a worker or caller chose already.

    >>> transport = RedisTransport("redis://:secret@localhost:6379/0")
    >>> transport
    <RedisTransport redis://:***@localhost:6379/0>
    """

    def __init__(
        self,
        url: str,
        *,
        local: Collection[str] = (),
        codec: Codec | None = None,
        prefix: str = "aioflow",
        window: int | None = None,
        no_worker_timeout: float | None = None,
        partitions: int = DEFAULT_PARTITIONS,
    ) -> None:
        if isinstance(local, str):
            msg = f"local= takes a collection of stage names, got the str {local!r}"
            raise TypeError(msg)
        self.url = url
        self.local = frozenset(local)
        self.codec = codec if codec is not None else MsgpackCodec()
        self.prefix = prefix
        self.window = window
        self.no_worker_timeout = no_worker_timeout
        if isinstance(partitions, bool) or not isinstance(partitions, int) or partitions < 1:
            msg = f"partitions must be an int >= 1, got {partitions!r}"
            raise ValueError(msg)
        self.partitions = partitions
        # pipeline name -> the books of its current or last run through this transport
        self._books: dict[str, _Books] = {}

    def __repr__(self) -> str:
        return f"<RedisTransport {redact(self.url)}>"

    def statistics(self, pipeline: Pipeline) -> dict[str, BlockStatistics]:
        """``{block: BlockStatistics}`` of the current or last run of ``pipeline`` through this
        transport (what ``pipe.statistics()`` shows after ``run(transport=)``): the blocks kept
        local from the caller's own books, the remote ones merged over the live workers'
        published books (:func:`~aioflow.stats.merge_statistics`). Zeros before any run."""
        books = self._books.get(pipeline.name)
        if books is None:
            return {name: BlockStatistics(name=name) for name in _names(pipeline)}
        return books.statistics()

    async def stream(
        self, pipeline: Pipeline, items: Iterable[Any] | AsyncIterable[Any]
    ) -> AsyncGenerator[Any, None]:
        """Outputs of ``pipeline`` over ``items``, in order (``pipe.stream(transport=)``).

        Each part of the plan streams the outputs of the one before: a local part is a pipeline
        of its stages run here, a remote one a :class:`_Session` whose workers answer on this
        run's reply stream."""
        plan = _Plan(pipeline, self.local)
        books = self._books[pipeline.name] = _Books(pipeline)
        failure = _FirstFailure()
        source: Iterable[Any] | AsyncIterable[Any] = items
        chain: list[AsyncGenerator[Any, None]] = []
        for part in plan.parts:
            if part.local:
                sub = sub_pipeline(pipeline, part.stages, pipeline.name)
                books.local.append(sub)
                outs = sub.stream(source)
            else:
                session = _Session(self, pipeline, part.stages, ordered=True)
                books.sessions.append(session)
                outs = session.results(source)
            source = failure.tap(outs)
            chain.append(source)
        first: BaseExceptionGroup[BaseException] | None = None
        try:
            async for out in chain[-1]:
                yield out
        except BaseExceptionGroup as group:
            # A part's failure reaches the parts after it as their source's error (wrapped
            # once per part): raise it as it first came out, as the local run would.
            first = failure.first
            if first is None or first is group:
                raise
        finally:
            # The last closes the ones before it as it stops (each closes its source); closing
            # them all here, last first, also covers a consumer that left early.
            for outs in reversed(chain):
                await outs.aclose()
        if first is not None:
            # (raised here, not in the except clause: there, the wrapping group would become
            # its __context__, and that group holds it: a cycle that tracebacks recurse into)
            raise first

    @contextlib.asynccontextmanager
    async def open(self, pipeline: Pipeline) -> AsyncIterator[RemoteRunning]:
        """A running service of ``pipeline`` for ``submit()`` (``pipe.open(transport=)``)."""
        plan = _Plan(pipeline, self.local)
        books = self._books[pipeline.name] = _Books(pipeline)
        parts: list[_Session | RunningPipeline] = []
        tasks: list[asyncio.Task[None]] = []
        async with contextlib.AsyncExitStack() as stack:
            try:
                for part in plan.parts:
                    if part.local:
                        sub = sub_pipeline(pipeline, part.stages, pipeline.name)
                        books.local.append(sub)
                        parts.append(await stack.enter_async_context(sub.open()))
                        continue
                    session = _Session(self, pipeline, part.stages, ordered=False)
                    books.sessions.append(session)
                    task = asyncio.create_task(
                        session.supervise(None), name=f"aioflow:{pipeline.name}:redis"
                    )
                    tasks.append(task)
                    parts.append(session)
                    await session.started
                    if task.done():
                        task.result()
                running = RemoteRunning(pipeline, parts, tasks, books)
                yield running
            except BaseException:
                for task in tasks:
                    task.cancel()
                for task in tasks:
                    await wait_finished(task)
                raise
            await running.stop()


class _FirstFailure:
    """Remembers the first exception group that came out of a chain of generators."""

    def __init__(self) -> None:
        self.first: BaseExceptionGroup[BaseException] | None = None

    async def tap(self, outs: AsyncGenerator[Any, None]) -> AsyncGenerator[Any, None]:
        async with contextlib.aclosing(outs):
            try:
                async for out in outs:
                    yield out
            except BaseExceptionGroup as group:
                if self.first is None:
                    self.first = group
                raise


class _Pending:
    """One input's answers: the paths still open, and the outputs found so far."""

    __slots__ = ("block", "error", "future", "idx", "open", "outcome", "outs", "reason")

    def __init__(
        self, idx: int, future: asyncio.Future[Any] | None, *, outcome: bool = False
    ) -> None:
        self.idx = idx
        self.open: set[tuple[int, ...]] = {(idx,)}
        self.outs: list[tuple[tuple[int, ...], list[Any]]] = []
        self.future = future
        #: the future gets the item's Outcome (every output, or the reason for none)
        self.outcome = outcome
        self.error: BlockError | None = None
        self.reason: str | None = None
        self.block: str | None = None

    def final(self, path: tuple[int, ...], outputs: list[Any], meta: dict[str, Any]) -> bool:
        if path not in self.open:
            return False  # a redelivered item's second answer
        self.open.discard(path)
        if outputs:
            self.outs.append((path, outputs))
        elif self.reason is None:
            self.reason = str(meta.get("reason") or "filtered")
            self.block = str(meta.get("block") or "pipeline")
        return not self.open

    def split(self, path: tuple[int, ...], n: int, meta: dict[str, Any]) -> bool:
        if path not in self.open:
            return False
        self.open.discard(path)
        self.open.update((*path, j) for j in range(n))
        if n == 0 and self.reason is None:
            self.reason = str(meta.get("reason") or "filtered")
            self.block = str(meta.get("block") or "pipeline")
        return not self.open

    def flushed(self, part: int, paths: list[tuple[int, ...]]) -> bool:
        """The owner of partition ``part`` ended its keys for the run: their outputs will come
        at ``paths`` (a repeat, after a takeover, is ignored)."""
        marker = (self.idx, -1 - part)
        if marker not in self.open:
            return False
        self.open.discard(marker)
        self.open.update(paths)
        return not self.open

    def outputs(self) -> list[Any]:
        self.outs.sort(key=lambda pair: pair[0])
        return [out for _, outs in self.outs for out in outs]


class _Session:
    """One run (or one open service) of a pipeline on Redis, seen from the caller."""

    def __init__(
        self,
        transport: RedisTransport,
        pipeline: Pipeline,
        leg: tuple[Block | Branch, ...],
        *,
        ordered: bool,
    ) -> None:
        self.transport = transport
        self.pipeline = pipeline
        self.name = pipeline.name
        self.codec = transport.codec
        graph_hash, self.graph_doc = graph_signature(pipeline.name, pipeline.stages)
        self.graph_hash = graph_hash
        self.keys = Keys(transport.prefix, pipeline.name, graph_hash)
        first, last = leg[0], leg[-1]
        self.first_name = _stage_name(first)
        self.end = _stage_name(last)
        #: the leg's top-level stages: a segment of its workers starts at one of them
        self.leg_names = [_stage_name(stage) for stage in leg]
        self.inbox = self.keys.inbox(self.first_name)
        self.run_id = uuid.uuid4().hex
        self.reply = self.keys.reply(self.run_id)
        window = transport.window
        if window is None:
            window = 64 + PipelineRun.chain_capacity(leg) + sum(map(stage_depth, leg))
        self.window = asyncio.Semaphore(window)
        self.credit = _Credit.for_stage(self.inbox, first)
        #: the Redis server's clock: items carry their birth on it (max_age across machines)
        self.clock = ServerClock()
        warn_shared_by_stream(leg)
        #: a keyed first remote block: each item goes to its key's partition stream
        self.keyed = keyed_block(first)
        self.router: Router | None = None
        #: set when answers come (the first stream's backlog may have shrunk)
        self.progress = asyncio.Event()
        self.ordered = ordered
        self.client: Any = None
        self.append_script: Any = None
        self.partition_script: Any = None
        self.started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.sendq: asyncio.Queue[tuple[int, bytes, float] | None] = asyncio.Queue(maxsize=_BATCH)
        self.pending: dict[int, _Pending] = {}
        #: the entry (its id) of the first stream each unanswered input went in (a blocking
        #: edge, not partitioned): an entry deleted before any worker took it is found by
        #: :meth:`_check_trimmed`
        self.entry_of: dict[int, bytes] = {}
        #: how many items of each entry written by APPEND_SCRIPT are unanswered: an entry whose
        #: items are all answered was acknowledged, and frees room in the stream
        #: (:meth:`_Credit.freed`)
        self.entry_left: dict[bytes, int] = {}
        #: inputs answered as dropped because their entry was deleted unread (XTRIM, XDEL)
        self.trimmed = 0
        self.next_idx = 0
        self.sent_all = False
        # ordered mode (run/stream): finished inputs wait here for their turn
        self.done: dict[int, _Pending] = {}
        self.next_out = 0
        self.out: Channel[_Pending] = Channel(window)
        self.failure: BaseException | None = None
        #: since when a segment of this leg has had items waiting and no live worker
        self.no_worker_since: float | None = None
        #: the blocks heading such segments, warned about (once per outage)
        self.warned: set[str] = set()
        #: set whenever no input is waiting for answers
        self.drained = asyncio.Event()
        #: the keyed blocks of the leg whose keys this run has yet to end (in leg order; see
        #: _end_next), and whether every end asked for was answered
        self.to_end = [_stage_name(s) for s in leg if keyed_block(s) is not None]
        self.ended = not self.to_end
        #: ends started, and the paths their flushes announced (a flush's outputs are items
        #: the next keyed block may hold keys of)
        self.ends_started = 0
        self.end_paths = 0
        #: per keyed block inside a segment: the workers that hold keys of this run (in the
        #: order they said so); and per end under way for such a block, its holders
        self.holders: dict[str, dict[str, None]] = {}
        self.holder_waits: dict[int, list[str]] = {}
        #: open(): set by close(); then the run ends once every submitted item is answered
        self.closing = False
        #: open(): what the ends of the leg's keyed blocks made, once closed
        self.end_outcomes: list[asyncio.Future[Any]] = []
        #: the remote blocks' books, merged over the workers (read every BOOKS_PERIOD)
        self.remote_names = stage_names(leg)
        self.books = {name: BlockStatistics(name=name) for name in self.remote_names}

    # -- the caller's side ----------------------------------------------------------------------

    async def send(
        self, value: Any, future: asyncio.Future[Any] | None, *, outcome: bool = False
    ) -> int:
        """Queue ``value`` for the first remote stage; returns its index. ``future`` (open())
        gets the answer as ``submit()`` returns it, or with ``outcome`` its :class:`Outcome`."""
        await self.window.acquire()
        idx = self.next_idx
        self.next_idx += 1
        pend = self.pending[idx] = _Pending(idx, future, outcome=outcome)
        try:
            body = self.codec.encode(value)
        except CodecError as exc:
            err = BlockError(
                self.first_name, f"the item cannot be sent: {exc}", item=summarize(value)
            )
            err.__cause__ = exc
            pend.error = err
            pend.open.clear()
            self._finish(idx, pend)
            return idx
        if self.keyed is not None:
            self.route(idx, value)
        await self.sendq.put((idx, body, self.clock.now()))
        return idx

    async def results(self, items: Iterable[Any] | AsyncIterable[Any]) -> AsyncGenerator[Any, None]:
        """Run the session over ``items``; yield outputs in input order."""
        task = asyncio.create_task(self.supervise(items), name=f"aioflow:{self.name}:redis")
        finished = False
        try:
            out = self.out
            while True:
                try:
                    pend = await out.get()
                except ChannelClosed:
                    break
                self.window.release()
                if pend.error is not None:
                    raise BaseExceptionGroup(f"pipeline {self.name!r} failed", [pend.error])
                for value in pend.outputs():
                    yield value
            finished = True
        finally:
            if not finished:
                task.cancel()
            await wait_finished(task)
        if self.failure is not None:
            if not task.cancelled() and task.exception() is not None:
                # (retrieved: the failure says what went wrong; the task's own error, if
                # any, came of stopping on it)
                logger.debug("pipeline %r: stopping: %r", self.name, task.exception())
            raise self.failure
        task.result()

    # -- the tasks --------------------------------------------------------------------------------

    async def supervise(self, items: Iterable[Any] | AsyncIterable[Any] | None) -> None:
        self.client = connect(self.transport.url)
        try:
            await self._register()
            if not self.started.done():
                self.started.set_result(None)
            async with asyncio.TaskGroup() as tg:
                sender = tg.create_task(self._sender(), name=f"aioflow:{self.name}:send")
                reader = tg.create_task(self._book_reader(), name=f"aioflow:{self.name}:books")
                feeder = None
                if items is not None:
                    feeder = tg.create_task(self._feed(items), name=f"aioflow:{self.name}:feed")
                await self._receiver()
                sender.cancel()
                reader.cancel()
                if feeder is not None:
                    feeder.cancel()
        except BaseException as exc:
            self._fail_all(exc)  # (results() raises it from the task)
            raise
        finally:
            if not self.started.done():
                self.started.set_result(None)
            self.out.close()
            with contextlib.suppress(RedisError, OSError):
                await asyncio.shield(self._cleanup())

    async def _cleanup(self) -> None:
        try:
            with contextlib.suppress(RedisError, OSError):
                await self._drop_keys()
            # The books as the run ends: a worker publishes them with the writes that leave it
            # idle, so they count every item answered.
            with contextlib.suppress(RedisError, OSError):
                await self.read_books()
            await self.client.delete(self.reply)
        finally:
            await self.client.aclose()

    async def _book_reader(self) -> None:
        loop = asyncio.get_running_loop()
        synced = loop.time()
        while True:
            await asyncio.sleep(BOOKS_PERIOD)
            await self.read_books()
            if loop.time() - synced > 60:
                # A long service: the local clock drifts from the server's (items' birth).
                await self.clock.sync(self.client)
                synced = loop.time()

    async def read_books(self) -> None:
        """Read every live worker's published books of this graph and merge them per block."""
        client = self.client
        pattern = _glob_escape(self.keys.stats("")) + "*"
        keys: list[bytes] = []
        cursor: Any = 0
        while True:
            cursor, found = await client.scan(cursor, match=pattern, count=500)
            keys.extend(found)
            if int(cursor) == 0:
                break
        records: dict[str, list[BlockStatistics]] = {}
        for key in keys:
            for field_name, raw in (await client.hgetall(key)).items():
                try:
                    stat = BlockStatistics.from_data(unpack_plain(raw))
                except (CodecError, ValueError) as exc:
                    logger.warning(
                        "pipeline %r: books of block %r in %s ignored: %s",
                        self.name,
                        field_name,
                        key,
                        exc,
                    )
                    continue
                records.setdefault(stat.name, []).append(stat)
        # The drops this caller made on a leaky first edge count in that block's books, and
        # so do the inputs it answered as dropped because their entries were deleted unread.
        for own in (self.credit.books(), self.router.books() if self.router else None):
            if own is not None:
                records.setdefault(own.name, []).append(own)
        if self.trimmed:
            n = self.trimmed
            gone = BlockStatistics(
                name=self.first_name, received=n, dropped=n, dropped_by={"trimmed": n}, workers=0
            )
            records.setdefault(self.first_name, []).append(gone)
        self.books = {
            name: merge_statistics(name, records.get(name, ())) for name in self.remote_names
        }

    async def _register(self) -> None:
        client = self.client
        await client.set(self.keys.graph, self.graph_hash)
        await ensure_group(client, self.inbox)
        await self.clock.sync(client)
        if self.keyed is not None:
            count = await agree_count(client, self.keys, self.first_name, self.transport.partitions)
            self.router = Router(self.keyed, self.inbox, count, _Credit)
            for stream in self.router.streams:
                await ensure_group(client, stream)
        # The reply stream exists from the start: workers write to it with NOMKSTREAM, so the
        # late answers of a run that ended (and deleted it) do not make it again.
        pipe = client.pipeline(transaction=True)  # (never one without the TTL)
        pipe.xadd(self.reply, WAKE)
        pipe.pexpire(self.reply, int(REPLY_TTL * 1000))
        await client.guard(pipe.execute())
        logger.debug(
            "pipeline %r: run %s on %s, graph %s",
            self.name,
            self.run_id,
            redact(self.transport.url),
            self.graph_hash,
        )

    async def _feed(self, items: Iterable[Any] | AsyncIterable[Any]) -> None:
        try:
            if isinstance(items, AsyncIterable):
                async for value in items:
                    await self.send(value, None)
            else:
                for value in items:
                    await self.send(value, None)
        except Exception as exc:
            if isinstance(exc, BaseExceptionGroup):
                raise
            err = BlockError("<source>", describe(exc), phase="source")
            raise err from exc
        finally:
            if isinstance(items, AsyncIterable):
                aclose = getattr(items, "aclose", None)
                if aclose is not None:
                    await aclose()
        self.sent_all = True
        await self.sendq.put(None)
        # Wake the receiver, which may be waiting for replies that all came already.
        await self.client.xadd(self.reply, WAKE)

    async def _sender(self) -> None:
        client = self.client
        queue = self.sendq
        # Items queued and not yet written, oldest first: a write that the stream's bound cuts
        # short leaves the rest here, topped up with newer items before the next write, so that
        # every write carries full bursts (a batch's tail written on its own would cost a round
        # trip of the caller, and one of the worker, for a few items).
        batch: list[tuple[int, bytes, float]] = []
        more = True
        while more or batch:
            if not batch:
                first = await queue.get()
                if first is None:
                    return
                batch.append(first)
            while more and len(batch) < _BATCH and not queue.empty():
                nxt = queue.get_nowait()
                if nxt is None:
                    more = False
                else:
                    batch.append(nxt)
            written = await self._write(client, batch, more=more)
            del batch[:written]

    def route(self, idx: int, value: Any) -> None:
        if self.router is None:  # (send() before _register(): not possible, kept safe)
            msg = f"pipeline {self.name!r}: an item was sent before the session registered"
            raise RuntimeError(msg)
        self.router.assign(idx, value)

    async def _write_partitioned(
        self, client: Any, router: Router, batch: list[tuple[int, bytes, float]]
    ) -> None:
        """A keyed first block's items, one per entry of their partition's stream (its owner
        reads them in order; the worker's burst-aware reader takes them as one-item entries)."""
        routed = [
            (
                router.assigned(idx),
                pack_item(
                    ItemMeta(self.run_id, (idx,), self.reply, self.end, self.codec.name, born),
                    body,
                ),
            )
            for idx, body, born in batch
        ]
        if not router.leaky:
            await self._write_parts(client, router, routed)
            return
        counts: dict[int, int] = {}
        for part, _ in routed:
            counts[part] = counts.get(part, 0) + 1
        pipe = client.pipeline(transaction=False)
        for part, fields in routed:
            pipe.xadd(router.streams[part], wire(fields))
        trims = router.queue_trims(pipe, counts)  # a leaky keyed block: never waits, trims
        replies = await client.guard(pipe.execute(raise_on_error=False))
        for reply in replies[: len(replies) - trims]:
            if isinstance(reply, Exception):
                raise reply
        if trims:
            found = Trims()
            router.trimmed(found, counts, replies[len(replies) - trims :])
            await self._dropped(client, found)

    async def _write_parts(
        self, client: Any, router: Router, routed: list[tuple[int, dict[bytes, bytes]]]
    ) -> None:
        """Write ``routed`` (partition, entry) with :data:`PARTITION_SCRIPT`: each partition's
        bound is checked and its entries written in one step (several producers never pass
        it together); those refused go again, in their order, once there is room."""
        script = self.partition_script
        if script is None:
            script = self.partition_script = client.raw.register_script(PARTITION_SCRIPT)
        while routed:
            counts: dict[int, int] = {}
            largest: dict[int, int] = {}
            for part, fields in routed:
                counts[part] = counts.get(part, 0) + 1
                size = max(len(value) for value in fields.values())
                largest[part] = max(largest.get(part, 0), size)
            for part, size in largest.items():
                router.credits[part].fit((size,))
            await router.wait_room(client, counts, self.progress)
            parts = sorted(counts)
            index = {part: i for i, part in enumerate(parts, 1)}
            args: list[Any] = [GROUP, *(router.credits[part].capacity for part in parts)]
            for part, fields in routed:
                args += [index[part], 2 * len(fields)]
                for pair in fields.items():
                    args.extend(pair)
            ids, rooms = await client.guard(
                script(keys=[router.streams[part] for part in parts], args=args)
            )
            for part, room in zip(parts, rooms, strict=True):
                credit = router.credits[part]
                credit.measured(credit.capacity - int(room))
            routed = [pair for pair, entry in zip(routed, ids, strict=True) if entry == 0]

    async def _write(
        self, client: Any, batch: list[tuple[int, bytes, float]], *, more: bool = False
    ) -> int:
        """Write ``batch`` as burst entries (as many items per entry as the stream's bound
        allows), as fast as the stream's backlog lets; each item keeps its birth time. Returns
        how many of its items (the first ones) were written: all of them, except on a blocking
        edge when ``more`` (more items may follow), where one write is made, of the items
        the stream has room for."""
        if self.router is not None:
            await self._write_partitioned(client, self.router, batch)
            return len(batch)
        if not self.credit.leaky and all(len(body) <= _BIG for _, body, _ in batch):
            return await self._append(client, batch, more=more)
        # A leaky edge's writes are followed by its trim; large items (frames) are written by
        # XADD (through a script, Redis copies each value twice more: 3x its CPU per frame),
        # in a MULTI with UNDO_SCRIPT, which takes back what passes the bound. On a blocking
        # edge they are offered as _append offers small items (room(): by halves, counting
        # the entries the answers free), not after asking Redis for the backlog whenever the
        # credit ran out: that cost the caller a round trip for every two frames, and a
        # MULTI for every three or four.
        credit = self.credit
        start = 0
        while start < len(batch):
            rest = batch[start:]
            sizes = (len(body) for _, body, _ in rest)
            bursts = cut_bursts(
                [((idx, born), body) for idx, body, born in rest], credit.fit(sizes)
            )
            if credit.leaky:
                n = await credit.take(client, len(bursts), self.progress)
            else:
                n = await credit.room(client, len(bursts), self.progress)
                if n < 1:
                    continue
            pipe = client.pipeline(transaction=not credit.leaky)
            for burst in bursts[:n]:
                fields = pack_burst(
                    self.run_id,
                    self.reply,
                    self.end,
                    self.codec.name,
                    [(idx,) for (idx, _), _ in burst],
                    [body for _, body in burst],
                    [born for (_, born), _ in burst],
                )
                pipe.xadd(self.inbox, wire(fields))
            if credit.leaky:
                credit.queue_check(pipe)
            else:
                pipe.eval(UNDO_SCRIPT, 1, self.inbox, GROUP, credit.capacity, n, "some")
            replies = await client.guard(pipe.execute(raise_on_error=False))
            check = replies.pop()
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply
            if credit.leaky:
                start += sum(len(burst) for burst in bursts[:n])
                found = Trims()
                found.add(credit, credit.checked(check))  # (the trimmer answers)
                await self._dropped(client, found)
                continue
            if isinstance(check, Exception):
                raise check
            kept = int(check[0])
            credit.measured(int(check[1]))
            for burst, entry in zip(bursts[:kept], replies, strict=False):
                self.entry_left[entry] = len(burst)
                for (idx, _), _ in burst:
                    self.entry_of[idx] = entry
                start += len(burst)
        return len(batch)

    async def _append(
        self, client: Any, batch: list[tuple[int, bytes, float]], *, more: bool = False
    ) -> int:
        """Write ``batch`` to a blocking edge with :data:`APPEND_SCRIPT`: the bound is checked
        and the entries written in one round trip, atomically (:meth:`_Credit.room` says how
        many to offer). Writes all of ``batch``, or with ``more`` makes one such write (its
        entries may be none, when others filled the stream first); returns how many items
        were written."""
        credit = self.credit
        script = self.append_script
        if script is None:
            script = self.append_script = client.raw.register_script(APPEND_SCRIPT)
        start = 0
        while start < len(batch):
            rest = batch[start:]
            sizes = (len(body) for _, body, _ in rest)
            size = credit.fit(sizes)
            bursts = cut_bursts([((idx, born), body) for idx, body, born in rest], size)
            if more and len(bursts) > 1 and len(bursts[-1]) < size:
                # A short last burst waits for the items that fill it: it would take one of
                # the stream's entries for a few items.
                bursts.pop()
            n = await credit.room(client, len(bursts), self.progress)
            args: list[Any] = [GROUP, credit.capacity, n]
            for burst in bursts[:n]:
                fields = wire(
                    pack_burst(
                        self.run_id,
                        self.reply,
                        self.end,
                        self.codec.name,
                        [(idx,) for (idx, _), _ in burst],
                        [body for _, body in burst],
                        [born for (_, born), _ in burst],
                    )
                )
                args.append(2 * len(fields))
                for pair in fields.items():
                    args.extend(pair)
            reply = await client.guard(script(keys=[self.inbox], args=args))
            credit.measured(int(reply[1]))
            for burst, entry in zip(bursts, reply[2:], strict=False):
                self.entry_left[entry] = len(burst)
                for (idx, _), _ in burst:
                    self.entry_of[idx] = entry
                start += len(burst)
            if more:
                break
        return start

    async def _dropped(self, client: Any, found: Trims) -> None:
        """Entries a leaky first edge holds beyond its bound: deleted, other callers' items
        answered on their reply streams (:meth:`Trims.drop`), and this run's answered here."""
        if not found:
            return
        empty = self.codec.encode([])
        for meta in await found.drop(client, self.codec, self.first_name, local_run=self.run_id):
            path = meta.get("p")
            if meta.get("r") == self.run_id and isinstance(path, list):
                self._answer(
                    pack_reply(path, "out", empty, reason="overflow", block=self.first_name)
                )
        self.progress.set()

    # -- the end of the run ------------------------------------------------------------------

    async def _end_next(self) -> bool:
        """Every input is answered: end the run's keys at the next keyed block of the leg, as
        a local run's end of stream evicts every key of a keyed block (and the next keyed
        block's after the flush reached it). One ``end`` entry goes to each partition of the
        block's input, after the run's items; each partition's owner evicts the keys that
        only this run touched, calls ``evict`` and sends the outputs on with paths under a
        new index (after the inputs'), then says which paths to wait for (``flushed``).
        Returns False when no keyed block is left to end."""
        while self.to_end:
            if self.next_idx == self.ends_started and not self.end_paths:
                break  # nothing reached the leg (no input, no flush before): no key to end
            name = self.to_end.pop(0)
            count = await self._partition_count(name)
            holders: list[str] = []
            if count is None:
                # Inside a segment: each worker that holds keys of the run for it ends them.
                holders = list(self.holders.get(name, ()))
                if not holders:
                    continue
                count = len(holders)
            await self.window.acquire()
            base = self.next_idx
            self.next_idx += 1
            future: asyncio.Future[Any] | None = None
            if not self.ordered:
                future = asyncio.get_running_loop().create_future()
                self.end_outcomes.append(future)
            self.ends_started += 1
            pend = self.pending[base] = _Pending(base, future, outcome=True)
            pend.open = {(base, -1 - part) for part in range(count)}
            self.drained.clear()
            if holders:
                self.holder_waits[base] = holders
                await self._write_control_ends(name, holders, base, drop=False)
            else:
                await self._write_ends(name, count, base, drop=False)
            return True
        self.ended = True
        return False

    async def _partition_count(self, name: str) -> int | None:
        """How many partitions ``name``'s input has, when it heads a segment (its input is
        partitioned); None when it does not (no live worker heads a segment with it)."""
        if name == self.first_name and self.router is not None:
            return self.router.count
        client = self.client
        found = await client.get(f"{self.keys.base}:partitions:{name}")
        if found is None:
            return None
        sec, usec = await client.time()
        now = int(sec) * 1000 + int(usec) // 1000
        if not await client.zcount(f"{self.keys.base}:members:{name}", now, "+inf"):
            return None
        return int(found)

    async def _write_ends(self, name: str, count: int, base: int, *, drop: bool) -> None:
        inbox = self.keys.inbox(name)
        doc = {
            "k": "end",
            "r": self.run_id,
            "to": self.reply,
            "end": self.end,
            "c": self.codec.name,
            "base": base,
        }
        if drop:
            doc["drop"] = True
        fields = {b"m": pack_plain(doc)}
        pipe = self.client.pipeline(transaction=False)
        for stream in partition_streams(inbox, count):
            pipe.xadd(stream, fields)
        await self.client.guard(pipe.execute())

    async def _write_control_ends(
        self, name: str, holders: list[str], base: int, *, drop: bool
    ) -> None:
        """The end of the run for ``name``, a keyed block inside a segment: to the control
        stream of each worker that holds keys of it (``part``: its place in ``holders``)."""
        pipe = self.client.pipeline(transaction=False)
        for part, worker in enumerate(holders):
            doc = {
                "k": "end",
                "r": self.run_id,
                "to": self.reply,
                "end": self.end,
                "c": self.codec.name,
                "base": base,
                "blk": name,
                "part": part,
            }
            if drop:
                doc["drop"] = True
            pipe.xadd(f"{self.keys.base}:ctl:{worker}", {b"m": pack_plain(doc)}, maxlen=10_000)
        await self.client.guard(pipe.execute())

    async def _lost_holders(self) -> None:
        """No answer came for a while: a worker that holds keys of an end under way and has
        stopped (its books expired) will not answer; its keys went with it."""
        client = self.client
        for base, holders in list(self.holder_waits.items()):
            pend = self.pending.get(base)
            if pend is None:
                del self.holder_waits[base]
                continue
            for part, worker in enumerate(holders):
                if (base, -1 - part) not in pend.open:
                    continue
                if await client.exists(self.keys.stats(worker)):
                    continue
                logger.warning(
                    "pipeline %r: worker %s, which held keys of this run, has stopped: what "
                    "their evict() would have made at the end of the run is lost",
                    self.name,
                    worker,
                )
                if pend.flushed(part, []):
                    pend.open.clear()
                    del self.holder_waits[base]
                    self._finish(base, pend)
                    break

    async def _drop_keys(self) -> None:
        """The run failed or stopped before its end: its keys in the workers go without
        ``evict`` (as a local run's keys go with it); nobody waits for the answer."""
        if self.ended or self.next_idx == 0:
            return
        for name in self.to_end:
            count = await self._partition_count(name)
            if count is not None:
                await self._write_ends(name, count, self.next_idx, drop=True)
            elif holders := list(self.holders.get(name, ())):
                await self._write_control_ends(name, holders, self.next_idx, drop=True)
        self.ended = True

    async def close(self) -> None:
        """open(): no more items; end the run once every submitted one is answered (the
        session's task then returns)."""
        self.closing = True
        self.sent_all = True
        # The receiver may be waiting for replies. It may also have seen the flags and ended
        # the session already, closing the client under this write: then nobody needs it.
        with contextlib.suppress(ClientClosedError):
            await self.client.xadd(self.reply, WAKE)

    async def _receiver(self) -> None:
        client = self.client
        last = "0-0"
        unread = 0  # entries read since the reply stream was last trimmed
        clock = asyncio.get_running_loop().time
        renew = clock() + REPLY_TTL / 20
        idle = False  # answers are awaited and none came for a while
        while True:
            ending = self.sent_all and not self.pending and (self.ordered or self.closing)
            if ending and (self.failure is not None or not await self._end_next()):
                return
            if idle or clock() >= renew:
                # The stream outlives this caller by REPLY_TTL at most (killed, it cannot
                # delete it); gone already, answers may have been dropped: fail, not hang.
                if not await client.pexpire(self.reply, int(REPLY_TTL * 1000)):
                    msg = (
                        f"pipeline {self.name!r}: the run's reply stream {self.reply} is gone: "
                        f"it expired (no sign of this caller for {REPLY_TTL:g} s: a stalled "
                        "event loop?) or the Redis server lost its data (restarted without "
                        "persistence?); answers written to it meanwhile were dropped"
                    )
                    raise ReplyStreamLost(msg)
                renew = clock() + REPLY_TTL / 20
                idle = False
            # (Waits of at most a quarter of the TTL: the renewal above comes in time.)
            wait_ms = min(1000, int(REPLY_TTL * 250))
            reply = await client.xread({self.reply: last}, count=1000, block=wait_ms)
            if not reply:
                if self.pending:
                    await self._check_trimmed(last)
                    await self._check_workers()
                    idle = True
                continue
            self.no_worker_since = None
            entries = reply[0][1]
            for _entry_id, fields in entries:
                for answer in reply_answers(fields):
                    self._answer(answer)
            last = entries[-1][0]
            self.progress.set()
            # Read entries are not needed again: keep the reply stream short for long services.
            unread += len(entries)
            if unread >= _TRIM_EVERY:
                await client.xtrim(self.reply, minid=last, approximate=False)
                unread = 0
            if self.ordered and self.failure is not None:
                return

    async def _check_trimmed(self, read: Any) -> None:
        """Answers are awaited and none came for a second: were entries of the first stream
        deleted (an outside ``XTRIM`` or ``XDEL``) before any worker took them? Their inputs
        will never be answered: answer each as dropped (reason ``"trimmed"``, counted in the
        first block's books) so that the run ends. An entry a worker holds (pending) is its
        worker's to answer. One that is neither there nor pending was never delivered when
        it lies past the group's last delivered id; behind it, it may have been read,
        acknowledged and passed on to a later segment, except when this leg is one stage (its
        worker answers in the same ``MULTI`` as it acknowledges, and every answer written
        before this look has been read: ``read`` is the last reply entry read)."""
        ids = sorted(set(self.entry_of.values()), key=_id_key)[:_TRIM_CHECK]
        if not ids:
            return
        pipe = self.client.pipeline(transaction=True)  # (one moment: nothing moves between)
        pipe.xinfo_groups(self.inbox)
        pipe.xrevrange(self.reply, count=1)
        for entry in ids:
            pipe.xrange(self.inbox, entry, entry, count=1)
            pipe.xpending_range(self.inbox, GROUP, entry, entry, 1)
        groups, newest, *found = await self.client.guard(pipe.execute(raise_on_error=False))
        if isinstance(groups, Exception) or isinstance(newest, Exception):
            return  # (the stream itself is gone: nothing tells what was read)
        if newest and _id_key(newest[0][0]) > _id_key(read):
            return  # answers came meanwhile: read them first
        delivered = next(
            (
                g.get("last-delivered-id")
                for g in groups
                if g.get("name") in (GROUP, GROUP.encode())
            ),
            None,
        )
        if delivered is None:
            return
        one_stage = len(self.leg_names) == 1
        gone = {
            entry
            for entry, rows, pending in zip(ids, found[::2], found[1::2], strict=True)
            if not rows and not pending and (one_stage or _id_key(entry) > _id_key(delivered))
        }
        if not gone:
            return
        lost = [idx for idx, entry in self.entry_of.items() if entry in gone]
        logger.warning(
            "pipeline %r: %d items were deleted from %s before a worker answered them (XTRIM or "
            "XDEL by someone else?): answered as dropped",
            self.name,
            len(lost),
            self.inbox,
        )
        empty = self.codec.encode([])
        self.trimmed += len(lost)
        for idx in lost:
            self._answer(pack_reply((idx,), "out", empty, reason="trimmed", block=self.first_name))
        self.progress.set()

    async def _check_workers(self) -> None:
        """Answers are awaited and none came for a second: does every segment of this leg
        with items waiting have a live worker? Warn once per segment without one; fail after
        the transport's ``no_worker_timeout`` (answers coming again reset the clock)."""
        if self.holder_waits:
            await self._lost_holders()
        stuck = await self._stuck_segments()
        if not stuck:
            self.no_worker_since = None
            self.warned.clear()
            return
        for block, msg in stuck:
            if block not in self.warned:
                self.warned.add(block)
                logger.warning("%s", msg)
        now = asyncio.get_running_loop().time()
        if self.no_worker_since is None:
            self.no_worker_since = now
            return
        timeout = self.transport.no_worker_timeout
        if timeout is not None and now - self.no_worker_since >= timeout:
            raise NoWorkerError(f"{stuck[0][1]}; gave up after {timeout:g} s")

    async def _stuck_segments(self) -> list[tuple[str, str]]:
        """``(block, message)`` for each stream of this leg that has entries waiting (lag or
        pending) and no live consumer: none ever read it, or every one that did has stopped
        publishing its books (a worker refreshes them every ``--stats-period`` and they expire
        ``--stats-ttl`` after: a worker killed with SIGKILL counts as gone once they have).
        The streams are the input streams of the leg's stages found in Redis (those where a
        segment starts: the caller or the segment before writes there), a keyed block's
        partition streams (``in:{block}:p{i}``) included."""
        client = self.client
        found: list[tuple[str, str]] = []
        for block, stream in await self._leg_streams():
            try:
                groups = await client.xinfo_groups(stream)
            except ResponseError:
                continue  # gone meanwhile
            if not any(g.get("name") in (GROUP, GROUP.encode()) for g in groups):
                continue
            waiting = await backlog(client, stream)
            if waiting < 1:
                continue
            consumers = await client.xinfo_consumers(stream, GROUP)
            start = (
                f"start one: python -m aioflow worker MODULE:PIPELINE --redis URL "
                f"--blocks {block}[,NEXT...]"
            )
            if not consumers:
                found.append(
                    (
                        block,
                        f"pipeline {self.name!r}: no worker has taken an item for block "
                        f"{block!r} (stream {stream}, {waiting} waiting); {start}",
                    )
                )
                continue
            names = [_text(c.get("name", "")) for c in consumers]
            if await client.exists(*(self.keys.stats(n) for n in names)):
                continue  # a live worker serves it
            found.append(
                (
                    block,
                    f"pipeline {self.name!r}: no live worker serves block {block!r} (stream "
                    f"{stream}, {waiting} waiting): the {len(names)} that read it have "
                    f"stopped (their books expired); {start}",
                )
            )
        return found

    async def _leg_streams(self) -> list[tuple[str, str]]:
        """``(block, stream)`` of every input stream of this leg's stages that exists: one
        SCAN of this graph's input streams (only while no answer comes)."""
        prefix = self.keys.inbox("")
        heads = {self.keys.inbox(name): name for name in self.leg_names}
        found: set[tuple[str, str]] = set()  # (SCAN may return a key twice)
        cursor: Any = 0
        while True:
            cursor, keys = await self.client.scan(
                cursor, match=_glob_escape(prefix) + "*", count=500
            )
            for key in keys:
                stream = _text(key)
                base, sep, part = stream.rpartition(":p")
                block = heads.get(stream)
                if block is None and sep and part.isdigit():
                    block = heads.get(base)  # a partition of a keyed block's input
                if block is not None:
                    found.add((block, stream))
            if int(cursor) == 0:
                break
        order = {name: i for i, name in enumerate(self.leg_names)}
        return sorted(found, key=lambda pair: (order[pair[0]], pair[1]))

    def _answer(self, fields: Mapping[bytes, bytes]) -> None:
        try:
            meta = read_meta(fields)
            if meta.get("k") == "wake":
                return
            if meta.get("k") == "holds":
                # A worker holds keys of this run for a keyed block inside its segment.
                holders = self.holders.setdefault(str(meta["block"]), {})
                holders[str(meta["worker"])] = None
                return
            path = tuple(meta["p"])
            kind = meta["k"]
            idx = path[0]
        except (MessageError, KeyError, TypeError, IndexError) as exc:
            logger.error("pipeline %r: an unreadable reply was ignored: %s", self.name, exc)
            return
        pend = self.pending.get(idx)
        if pend is None:
            return  # answered already (a redelivery) or not ours
        if kind == "moved":
            self._moved(idx, meta, fields)
            return
        complete = False
        if kind == "out":
            try:
                outputs = self.codec.decode(fields.get(b"v", b""))
                if not isinstance(outputs, list):
                    msg = f"a reply's outputs are a {type(outputs).__name__}, not a list"
                    raise CodecError(msg)
            except CodecError as exc:
                pend.error = BlockError(self.end, f"its outputs cannot be read: {exc}")
                complete = True
            else:
                complete = pend.final(path, outputs, meta)
        elif kind == "split":
            complete = pend.split(path, int(meta.get("n", 0)), meta)
        elif kind == "flushed":
            try:
                paths = [tuple(int(i) for i in p) for p in meta.get("paths", ())]
                complete = pend.flushed(int(meta["part"]), paths)
                self.end_paths += len(paths)
            except (KeyError, TypeError, ValueError) as exc:
                logger.error("pipeline %r: an unreadable reply was ignored: %s", self.name, exc)
                return
        elif kind == "err":
            pend.error = error_from_data(meta.get("e"))
            complete = True
        if complete:
            pend.open.clear()
            self._finish(idx, pend)

    def _moved(self, idx: int, meta: Mapping[str, Any], fields: Mapping[bytes, bytes]) -> None:
        """A worker split a burst delivered again into entries of one item each (a poison
        pill's quarantine: docs/distributed.md): item ``idx`` of the first stream is in entry
        ``v`` now, which :meth:`_check_trimmed` looks for instead of the burst, gone."""
        old = str(meta.get("old", "")).encode()
        if meta.get("s") != self.inbox or self.entry_of.get(idx) != old:
            return  # (a later stream's burst, or not the entry this caller wrote)
        self.entry_of[idx] = bytes(fields.get(b"v", b""))
        left = self.entry_left.get(old)
        if left is None:
            return
        if left > 1:
            self.entry_left[old] = left - 1
            return
        del self.entry_left[old]
        self.credit.freed(1)  # (the burst's room: its items' entries are not this writer's)
        self.progress.set()

    def _finish(self, idx: int, pend: _Pending) -> None:
        del self.pending[idx]
        entry = self.entry_of.pop(idx, None)
        if entry in self.entry_left:
            left = self.entry_left[entry] - 1
            if left:
                self.entry_left[entry] = left
            else:
                del self.entry_left[entry]
                self.credit.freed(1)
                # Wake the sender with the first room freed, not after every answer read: it
                # is then queued ahead of the tasks that the later outputs wake (their
                # consumers, the source), and the worker gets its next items sooner.
                self.progress.set()
        if not self.pending:
            self.drained.set()
        future = pend.future
        if future is not None:
            self.window.release()
            if future.done():
                return
            if pend.error is not None:
                future.set_exception(pend.error)
                return
            outputs = pend.outputs()
            if pend.outcome:
                reason = None if outputs else (pend.reason or "filtered")
                future.set_result(Outcome(outputs, reason, pend.block))
            elif len(outputs) == 1:
                future.set_result(outputs[0])
            elif outputs:
                future.set_result(outputs)
            else:
                future.set_exception(
                    ItemDropped(pend.reason or "filtered", pend.block or "pipeline")
                )
            return
        if pend.error is not None and self.failure is None:
            # run()/stream() stop at the first failure, as a local run does.
            self.out.put_nowait(pend)
            self.failure = BaseExceptionGroup(f"pipeline {self.name!r} failed", [pend.error])
            self.out.close()
            return
        if self.failure is not None:
            return  # the run stopped at a failure: later answers (of one reply burst) go
        self.done[idx] = pend
        while self.next_out in self.done:
            self.out.put_nowait(self.done.pop(self.next_out))
            self.next_out += 1

    def _fail_all(self, cause: BaseException) -> None:
        for pend in self.pending.values():
            if pend.future is not None and not pend.future.done():
                err = PipelineClosed(f"pipeline {self.name!r} stopped before the item finished")
                err.__cause__ = cause
                pend.future.set_exception(err)
        self.pending.clear()


class RemoteRunning:
    """``pipe.open(transport=...)``: submit items to a pipeline whose blocks run in workers,
    and in this process those kept local (``local=``), wherever they are in the pipeline."""

    def __init__(
        self,
        pipeline: Pipeline,
        parts: list[_Session | RunningPipeline],
        tasks: list[asyncio.Task[None]],
        books: _Books,
    ) -> None:
        self.pipeline = pipeline
        self._parts = parts
        self._tasks = tasks
        self._books = books
        self._closing = False
        self._active = 0  # submit() calls under way
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def name(self) -> str:
        return self.pipeline.name

    @property
    def closed(self) -> bool:
        return self._closing or any(task.done() for task in self._tasks)

    async def submit(self, item: Any) -> Any:
        """Send ``item`` through the pipeline and return its output (a list for several).

        Raises:
            ItemDropped: the pipeline made no output for it.
            BlockError: the item failed (in a worker: its cause a ``RemoteError``, type and
                message).
            PipelineClosed: the service is stopping or stopped.
        """
        if self.closed:
            msg = f"pipeline {self.name!r} is not accepting items: it is stopping or stopped"
            raise PipelineClosed(msg)
        self._active += 1
        self._idle.clear()
        try:
            outcome = await self._through(0, item)
        finally:
            self._active -= 1
            if not self._active:
                self._idle.set()
        outputs = outcome.outputs
        if len(outputs) == 1:
            return outputs[0]
        if outputs:
            return outputs
        raise ItemDropped(outcome.reason or "filtered", outcome.block or "pipeline")

    async def _through(self, k: int, value: Any) -> Outcome:
        """What becomes of ``value`` in parts ``k`` onwards: each output of a part goes
        through the parts after it; the outputs come back in order."""
        part = self._parts[k]
        if isinstance(part, _Session):
            future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
            await part.send(value, future, outcome=True)
            outcome = await future
        else:
            outcome = await submit_outcome(part, value)
        if k + 1 == len(self._parts) or not outcome.outputs:
            return outcome
        if len(outcome.outputs) == 1:
            return await self._through(k + 1, outcome.outputs[0])
        # Every output's fate is awaited (none is left running); the first failure in output
        # order is the item's, as a local run's first failing output fails its submit().
        found = await asyncio.gather(
            *(self._through(k + 1, out) for out in outcome.outputs), return_exceptions=True
        )
        outputs: list[Any] = []
        reason = block = None
        for sub in found:
            if isinstance(sub, BaseException):
                raise sub
            outputs.extend(sub.outputs)
            if not sub.outputs and reason is None:
                reason, block = sub.reason, sub.block
        if outputs:
            return Outcome(outputs)
        return Outcome([], reason, block)

    def statistics(self) -> dict[str, BlockStatistics]:
        """``{block: BlockStatistics}``: the blocks kept local live from this process, the
        others merged over every live worker (see :meth:`RedisTransport.statistics`), as last
        read (every half second)."""
        return self._books.statistics()

    async def stop(self) -> None:
        """Wait for the submitted items' answers, end the run (keyed blocks in workers evict
        the keys it used), then stop.

        Raises:
            ExceptionGroup: a keyed block's ``evict()`` failed (as a local ``open()`` does).
        """
        self._closing = True
        tasks = self._tasks
        if self._active and not any(task.done() for task in tasks):
            idle = asyncio.ensure_future(self._idle.wait())
            try:
                await asyncio.wait([*tasks, idle], return_when=asyncio.FIRST_COMPLETED)
            finally:
                idle.cancel()
        errors: list[BlockError] = []
        try:
            if not any(task.done() for task in tasks):
                errors = await self._end()
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await wait_finished(task)
        if errors:
            raise ExceptionGroup(f"pipeline {self.name!r} failed", errors)

    async def _end(self) -> list[BlockError]:
        """The end of the run, part by part: each remote part ends its keyed blocks' keys,
        and what their ``evict()`` makes goes through the parts after it, as a local
        ``open()`` sends its end-of-stream flush on; it reaches no caller (nobody submitted
        it). Returns the errors of those outputs."""
        errors: list[BlockError] = []
        sessions = [part for part in self._parts if isinstance(part, _Session)]
        by_session = dict(zip(sessions, self._tasks, strict=True))
        for k, part in enumerate(self._parts):
            if not isinstance(part, _Session):
                continue
            task = by_session[part]
            await part.close()
            await asyncio.wait([task])
            if task.cancelled() or task.exception() is not None:
                break  # (its error is the task's, as before)
            outputs: list[Any] = []
            for future in part.end_outcomes:
                try:
                    outputs.extend(future.result().outputs)
                except BlockError as err:
                    errors.append(err)
            if k + 1 < len(self._parts):
                found = await asyncio.gather(
                    *(self._through(k + 1, out) for out in outputs), return_exceptions=True
                )
                for sub in found:
                    if isinstance(sub, BlockError):
                        errors.append(sub)
                    elif isinstance(sub, BaseException):
                        raise sub
        return errors

    def __repr__(self) -> str:
        return f"<RemoteRunning {self.name!r} {'closed' if self.closed else 'open'}>"


def _names(pipeline: Pipeline) -> list[str]:
    return stage_names(pipeline.stages)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _id_key(entry_id: Any) -> tuple[int, int]:
    """A stream entry id (``b"1700000000000-3"``) as numbers, for comparing ids."""
    ms, _, seq = _text(entry_id).partition("-")
    return int(ms), int(seq or 0)


def _glob_escape(text: str) -> str:
    """``text`` matched literally by a Redis glob pattern (SCAN MATCH)."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


class _Books:
    """The books of one run through the transport: its local parts' and the workers'."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        #: the pipelines of the parts run here, and the sessions of those run in workers
        self.local: list[Pipeline] = []
        self.sessions: list[_Session] = []

    def statistics(self) -> dict[str, BlockStatistics]:
        found: dict[str, BlockStatistics] = {}
        for session in self.sessions:
            found.update(session.books)
        for part in self.local:
            found.update(part.statistics())
        return {name: found.get(name, BlockStatistics(name=name)) for name in _names(self.pipeline)}
