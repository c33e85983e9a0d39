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
import logging
import uuid
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
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
from .._engine.segment import sub_pipeline
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
    pack_item,
    pack_reply,
    read_meta,
    reply_answers,
)
from .partitions import DEFAULT_PARTITIONS, Router, agree_count, keyed_block

if TYPE_CHECKING:
    from ..pipeline import Pipeline

__all__ = [
    "RedisConnectionError",
    "RedisError",
    "Client",
    "NoWorkerError",
    "RedisTransport",
    "ResponseError",
    "backlog",
    "connect",
    "ensure_group",
    "queue_drop_notices",
    "redact",
    "wire",
]

logger = logging.getLogger("aioflow.transport")

_BATCH = 100
#: values longer than this (bytes) are handed to redis-py as memoryviews (see wire())
_BIG = 64 * 1024
_READ_SIZE = 1024 * 1024
#: reply entries a caller reads between two trims of its reply stream
_TRIM_EVERY = 200
#: seconds between two readings of the workers' books by a caller
BOOKS_PERIOD = 0.5
WAKE = {b"m": pack_plain({"k": "wake"}), b"v": b""}


def wire(fields: dict[bytes, bytes]) -> dict[bytes, Any]:
    """``fields`` as written to Redis: a large value goes as a memoryview, which redis-py sends
    as it is (its hiredis packer would copy it into the command, slowly for megabytes)."""
    value = fields.get(b"v")
    if value is not None and len(value) > _BIG:
        return {**fields, b"v": memoryview(value)}
    return fields


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


class Client:
    """A redis-py asyncio client whose commands can always be cancelled.

    redis-py can swallow a cancellation that lands while a command waits for its reply (its read
    timeout absorbs it: redis/redis-py#2028, #2551), and a cancelled run would then hang. Each
    command here runs in a task of its own that the caller waits for: cancelling the caller
    always raises in the caller, and the command's task is cancelled and collected on
    :meth:`aclose`. Commands are the client's methods (``await client.xadd(...)``); a pipeline's
    ``execute()`` goes through :meth:`guard`.
    """

    def __init__(self, url: str) -> None:
        self.raw = aioredis.Redis.from_url(
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
        self._calls: set[asyncio.Task[Any]] = set()

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
        return task.result()

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._calls.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: an abandoned command's error is not news

    async def aclose(self) -> None:
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
    pending entries (delivered, not acknowledged). XLEN would count acknowledged ones too."""
    try:
        groups = await client.xinfo_groups(stream)
    except ResponseError:
        return 0  # no stream yet
    found = _group_backlog(groups)
    # (None: Redis cannot tell, entries were deleted out of order: be cautious)
    return found if found is not None else int(await client.xlen(stream))


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
    """Items wait for a segment that no worker serves (``no_worker_timeout``)."""


#: Trims a leaky edge's stream (atomically, so that no worker reads an entry as it goes): while
#: more than ARGV[2] entries wait undelivered, delete the oldest (drop_oldest) or the newest
#: (drop_newest) of them. Entries delivered to a worker (pending) are never touched: their
#: worker answers for them. Returns {waiting, pending, id1, {m fields of id1}, id2, ...}: the
#: producer tells the trimmed items' callers.
#: The entries waiting are counted as XLEN minus pending (workers delete what they acknowledge,
#: in the same MULTI), never from XINFO's lag: after entries ahead of the group were deleted
#: (this script's own trims) Redis reports a lag that still counts them (7.0.15 does; see
#: redis/redis#13337), and trusting it a trim deleted every waiting entry, the newest too.
#: (A pending entry deleted by other hands makes the count low: fewer are trimmed until the
#: reclaimer acknowledges it, never one too many.)
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
local waiting = math.max(0, redis.call('XLEN', stream) - pending)
local out = {waiting, pending}
local excess = waiting - capacity
if excess <= 0 then return out end
local entries
if ARGV[3] == 'drop_newest' then
  entries = redis.call('XREVRANGE', stream, '+', '(' .. last, 'COUNT', excess)
else
  entries = redis.call('XRANGE', stream, '(' .. last, '+', 'COUNT', excess)
end
for _, e in ipairs(entries) do
  local metas = {}
  local fields = e[2]
  for i = 1, #fields, 2 do
    if string.sub(fields[i], 1, 1) == 'm' then
      metas[#metas + 1] = fields[i]
      metas[#metas + 1] = fields[i + 1]
    end
  end
  redis.call('XDEL', stream, e[1])
  out[#out + 1] = e[1]
  out[#out + 1] = metas
end
out[1] = waiting - #entries
return out
"""


class _Credit:
    """How many more items a producer may write to a stream before it looks again.

    A leaky edge (the reading block's ``overflow`` is ``"drop_oldest"`` or ``"drop_newest"``)
    never makes its producer wait: each burst of writes is followed by :data:`TRIM_SCRIPT`,
    which deletes the undelivered entries beyond ``capacity``; :meth:`checked` returns the
    metas of the items they carried, whose callers the producer tells
    (:func:`queue_drop_notices`), and :attr:`dropped` counts them for the reading block's books.
    """

    __slots__ = ("block", "capacity", "credit", "dropped", "overflow", "stream")

    def __init__(
        self, stream: str, capacity: int, *, overflow: str = "block", block: str = ""
    ) -> None:
        self.stream = stream
        self.capacity = capacity
        self.credit = 0
        self.overflow = overflow
        #: the block that reads the stream (its books count the drops)
        self.block = block
        #: items this producer trimmed from the stream
        self.dropped = 0

    @property
    def leaky(self) -> bool:
        return self.overflow != "block"

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

    def queue_check(self, pipe: Any) -> None:
        """Read the backlog in ``pipe`` after its writes (no round trip of its own), or trim
        the stream of a leaky edge; pass the reply to :meth:`checked`."""
        if self.leaky:
            pipe.eval(TRIM_SCRIPT, 1, self.stream, GROUP, self.capacity, self.overflow)
        else:
            pipe.xinfo_groups(self.stream)

    def checked(self, reply: Any) -> list[dict[str, Any]]:
        """Take :meth:`queue_check`'s reply; returns the metas of the items a leaky edge's
        trim dropped (for :func:`queue_drop_notices`)."""
        if self.leaky:
            if isinstance(reply, BaseException):
                # The writes went through; the next burst's trim catches up.
                logger.warning("trimming %s failed: %s", self.stream, reply)
                return []
            dropped: list[dict[str, Any]] = []
            for i in range(2, len(reply) - 1, 2):
                fields = reply[i + 1]
                dropped.extend(item_metas(dict(zip(fields[::2], fields[1::2], strict=True))))
            self.dropped += len(dropped)
            return dropped
        found = None if isinstance(reply, BaseException) else _group_backlog(reply)
        # Not known (an error, or Redis cannot tell): the next take() asks again.
        self.credit = 0 if found is None else self.capacity - found
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


def queue_drop_notices(
    pipe: Any, codec: Codec, metas: Iterable[Mapping[str, Any]], block: str, reason: str
) -> int:
    """Tell the callers of dropped items (:meth:`_Credit.checked`) that ``block`` dropped them
    for ``reason``: adds to ``pipe`` an ``out`` answer with no outputs to each item's reply
    stream, as a worker answers for an item its segment dropped (a reply stream that is gone,
    its run over, is not made again). Returns how many."""
    empty = codec.encode([])
    count = 0
    for meta in metas:
        path, reply = meta.get("p"), meta.get("to")
        if not isinstance(path, list) or not isinstance(reply, str):
            continue
        answer = pack_reply(path, "out", empty, reason=reason, block=block)
        pipe.xadd(reply, answer, nomkstream=True)
        count += 1
    return count


class _Plan:
    """Which stages of a pipeline run in the caller and which in workers."""

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
        remote = [i for i, n in enumerate(names) if n not in local]
        if remote and remote != list(range(remote[0], remote[-1] + 1)):
            msg = (
                f"pipeline {pipeline.name!r}: the blocks kept local ({sorted(local)}) must be at "
                "the start or the end of the pipeline, so that the remote blocks are consecutive"
            )
            raise GraphError(msg)
        self.stages = stages
        self.first = remote[0] if remote else len(stages)
        self.last = remote[-1] if remote else -1
        self.remote = bool(remote)

    @property
    def head(self) -> tuple[Block | Branch, ...]:
        return self.stages[: self.first]

    @property
    def tail(self) -> tuple[Block | Branch, ...]:
        return self.stages[self.last + 1 :]


def _stage_name(stage: Block | Branch) -> str:
    return stage.name if isinstance(stage, Branch) else stage.options.name


def stage_capacity(stage: Block | Branch) -> int:
    """The ``queue_size`` of a stage's input edge (the bound of its stream's backlog)."""
    return stage.queue_size if isinstance(stage, Branch) else stage.options.queue_size


def stage_overflow(stage: Block | Branch) -> str:
    """The ``overflow`` policy of a stage's input edge (a branch's is ``"block"``)."""
    return "block" if isinstance(stage, Branch) else stage.options.overflow


class RedisTransport:
    """Runs a pipeline's blocks in worker processes, with Redis Streams as the edges between.

    Args:
        url: ``redis://[:password@]host:port/db`` or ``rediss://...`` (TLS). The password is
            never logged.
        local: names of stages the caller runs itself (at the start or end of the pipeline:
            ``local={"decode"}``); every other stage runs in workers.
        codec: how items are written (default :class:`~aioflow.transport.codec.MsgpackCodec`;
            workers must use the same).
        prefix: the first part of every key (several deployments on one Redis).
        no_worker_timeout: seconds after which a run fails with :class:`NoWorkerError` when
            items wait and no worker ever took one from the first remote stream (None: wait;
            a warning naming the block is logged after a second either way).
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
        """Outputs of ``pipeline`` over ``items``, in order (``pipe.stream(transport=)``)."""
        plan = _Plan(pipeline, self.local)
        if not plan.remote:
            async for out in sub_pipeline(pipeline, plan.stages, pipeline.name).stream(items):
                yield out
            return
        source: Iterable[Any] | AsyncIterable[Any] = items
        session = _Session(self, pipeline, plan, ordered=True)
        books = self._books[pipeline.name] = _Books(pipeline, session)
        if plan.head:
            books.head = sub_pipeline(pipeline, plan.head, pipeline.name)
            source = books.head.stream(items)
        remote = session.results(source)
        try:
            if plan.tail:
                tail = books.tail = sub_pipeline(pipeline, plan.tail, pipeline.name)
                async with contextlib.aclosing(tail.stream(remote)) as outs:
                    async for out in outs:
                        yield out
            else:
                async for out in remote:
                    yield out
        finally:
            await remote.aclose()

    @contextlib.asynccontextmanager
    async def open(self, pipeline: Pipeline) -> AsyncIterator[RemoteRunning]:
        """A running service of ``pipeline`` for ``submit()`` (``pipe.open(transport=)``)."""
        plan = _Plan(pipeline, self.local)
        if plan.head or plan.tail or not plan.remote:
            msg = (
                f"pipeline {pipeline.name!r}: open(transport=) runs every block in workers in "
                "this version; local= is supported by run() and stream()"
            )
            raise GraphError(msg)
        session = _Session(self, pipeline, plan, ordered=False)
        self._books[pipeline.name] = _Books(pipeline, session)
        task = asyncio.create_task(session.supervise(None), name=f"aioflow:{pipeline.name}:redis")
        running = RemoteRunning(pipeline, session, task)
        try:
            await session.started
            if task.done():
                task.result()
            yield running
        except BaseException:
            task.cancel()
            await wait_finished(task)
            raise
        await running.stop()


class _Pending:
    """One input's answers: the paths still open, and the outputs found so far."""

    __slots__ = ("block", "error", "future", "open", "outs", "reason")

    def __init__(self, idx: int, future: asyncio.Future[Any] | None) -> None:
        self.open: set[tuple[int, ...]] = {(idx,)}
        self.outs: list[tuple[tuple[int, ...], list[Any]]] = []
        self.future = future
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

    def outputs(self) -> list[Any]:
        self.outs.sort(key=lambda pair: pair[0])
        return [out for _, outs in self.outs for out in outs]


class _Session:
    """One run (or one open service) of a pipeline on Redis, seen from the caller."""

    def __init__(
        self, transport: RedisTransport, pipeline: Pipeline, plan: _Plan, *, ordered: bool
    ) -> None:
        self.transport = transport
        self.pipeline = pipeline
        self.name = pipeline.name
        self.codec = transport.codec
        graph_hash, self.graph_doc = graph_signature(pipeline.name, pipeline.stages)
        self.graph_hash = graph_hash
        self.keys = Keys(transport.prefix, pipeline.name, graph_hash)
        first, last = plan.stages[plan.first], plan.stages[plan.last]
        self.first_name = _stage_name(first)
        self.end = _stage_name(last)
        self.inbox = self.keys.inbox(self.first_name)
        self.run_id = uuid.uuid4().hex
        self.reply = self.keys.reply(self.run_id)
        window = transport.window
        if window is None:
            window = 64 + PipelineRun.chain_capacity(plan.stages[plan.first : plan.last + 1])
        self.window = asyncio.Semaphore(window)
        self.credit = _Credit(
            self.inbox,
            stage_capacity(first),
            overflow=stage_overflow(first),
            block=self.first_name,
        )
        #: the Redis server's clock: items carry their birth on it (max_age across machines)
        self.clock = ServerClock()
        #: a keyed first remote block: each item goes to its key's partition stream
        self.keyed = keyed_block(first)
        self.router: Router | None = None
        #: set when answers come (the first stream's backlog may have shrunk)
        self.progress = asyncio.Event()
        self.ordered = ordered
        self.client: Any = None
        self.started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.sendq: asyncio.Queue[tuple[int, dict[bytes, bytes]] | None] = asyncio.Queue(
            maxsize=_BATCH
        )
        self.pending: dict[int, _Pending] = {}
        self.next_idx = 0
        self.sent_all = False
        # ordered mode (run/stream): finished inputs wait here for their turn
        self.done: dict[int, _Pending] = {}
        self.next_out = 0
        self.out: Channel[_Pending] = Channel(window)
        self.failure: BaseException | None = None
        self.no_worker_since: float | None = None
        #: set whenever no input is waiting for answers
        self.drained = asyncio.Event()
        #: the remote blocks' books, merged over the workers (read every BOOKS_PERIOD)
        self.remote_names = stage_names(plan.stages[plan.first : plan.last + 1])
        self.books = {name: BlockStatistics(name=name) for name in self.remote_names}

    # -- the caller's side ----------------------------------------------------------------------

    async def send(self, value: Any, future: asyncio.Future[Any] | None) -> int:
        """Queue ``value`` for the first remote stage; returns its index."""
        await self.window.acquire()
        idx = self.next_idx
        self.next_idx += 1
        pend = self.pending[idx] = _Pending(idx, future)
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
        meta = ItemMeta(
            self.run_id, (idx,), self.reply, self.end, self.codec.name, self.clock.now()
        )
        if self.keyed is not None:
            self.route(idx, value)
        await self.sendq.put((idx, pack_item(meta, body)))
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
        # The drops this caller made on a leaky first edge count in that block's books.
        own = self.credit.books()
        if own is not None:
            records.setdefault(own.name, []).append(own)
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
        await client.xadd(self.reply, WAKE)
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
        while True:
            first = await queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < _BATCH and not queue.empty():
                nxt = queue.get_nowait()
                if nxt is None:
                    await self._write(client, batch)
                    return
                batch.append(nxt)
            await self._write(client, batch)

    def route(self, idx: int, value: Any) -> None:
        if self.router is None:  # (send() before _register(): not possible, kept safe)
            msg = f"pipeline {self.name!r}: an item was sent before the session registered"
            raise RuntimeError(msg)
        self.router.assign(idx, value)

    async def _write_partitioned(
        self, client: Any, router: Router, batch: list[tuple[int, dict[bytes, bytes]]]
    ) -> None:
        routed = [(router.assigned(idx), fields) for idx, fields in batch]
        counts: dict[int, int] = {}
        for part, _ in routed:
            counts[part] = counts.get(part, 0) + 1
        await router.reserve(client, counts, self.progress)
        pipe = client.pipeline(transaction=False)
        for part, fields in routed:
            pipe.xadd(router.streams[part], wire(fields))
        for reply in await client.guard(pipe.execute(raise_on_error=False)):
            if isinstance(reply, Exception):
                raise reply

    async def _write(self, client: Any, batch: list[tuple[int, dict[bytes, bytes]]]) -> None:
        if self.router is not None:
            await self._write_partitioned(client, self.router, batch)
            return
        start = 0
        while start < len(batch):
            n = await self.credit.take(client, len(batch) - start, self.progress)
            pipe = client.pipeline(transaction=False)
            for _, fields in batch[start : start + n]:
                pipe.xadd(self.inbox, wire(fields))
            self.credit.queue_check(pipe)
            replies = await client.guard(pipe.execute(raise_on_error=False))
            for reply in replies[:-1]:
                if isinstance(reply, Exception):
                    raise reply
            dropped = self.credit.checked(replies[-1])
            if dropped:
                await self._dropped(client, dropped)
            start += n

    async def _dropped(self, client: Any, metas: list[dict[str, Any]]) -> None:
        """Items a leaky first edge trimmed: this run's are answered here, other callers' on
        their reply streams."""
        others = [meta for meta in metas if meta.get("r") != self.run_id]
        empty = self.codec.encode([])
        for meta in metas:
            path = meta.get("p")
            if meta.get("r") == self.run_id and isinstance(path, list):
                self._answer(
                    pack_reply(path, "out", empty, reason="overflow", block=self.first_name)
                )
        self.progress.set()
        pipe = client.pipeline(transaction=False)
        if queue_drop_notices(pipe, self.codec, others, self.first_name, "overflow"):
            await client.guard(pipe.execute(raise_on_error=False))

    async def _receiver(self) -> None:
        client = self.client
        last = "0-0"
        unread = 0  # entries read since the reply stream was last trimmed
        while True:
            if self.sent_all and not self.pending and self.ordered:
                return
            reply = await client.xread({self.reply: last}, count=1000, block=1000)
            if not reply:
                if self.pending:
                    await self._check_workers()
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

    async def _check_workers(self) -> None:
        """Answers are awaited and none came for a second: has any worker ever taken an item
        from the first remote stream? (Redis lists a consumer once it has read.) Warn once;
        fail after the transport's ``no_worker_timeout``."""
        consumers = 0
        # (a keyed first block: whoever owns partition 0 reads its stream)
        watched = self.inbox if self.router is None else self.router.streams[0]
        for group in await self.client.xinfo_groups(watched):
            if group.get("name") in (GROUP, GROUP.encode()):
                consumers = int(group.get("consumers") or 0)
        if consumers:
            self.no_worker_since = None
            return
        now = asyncio.get_running_loop().time()
        msg = (
            f"pipeline {self.name!r}: no worker has taken an item for block {self.first_name!r} "
            f"(stream {self.inbox}); start one: python -m aioflow worker MODULE:PIPELINE "
            f"--redis URL --blocks {self.first_name}[,NEXT...]"
        )
        if self.no_worker_since is None:
            self.no_worker_since = now
            logger.warning("%s", msg)
            return
        timeout = self.transport.no_worker_timeout
        if timeout is not None and now - self.no_worker_since >= timeout:
            raise NoWorkerError(f"{msg}; gave up after {timeout:g} s")

    def _answer(self, fields: Mapping[bytes, bytes]) -> None:
        try:
            meta = read_meta(fields)
            if meta.get("k") == "wake":
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
        elif kind == "err":
            pend.error = error_from_data(meta.get("e"))
            complete = True
        if complete:
            pend.open.clear()
            self._finish(idx, pend)

    def _finish(self, idx: int, pend: _Pending) -> None:
        del self.pending[idx]
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
            if len(outputs) == 1:
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
    """``pipe.open(transport=...)``: submit items to a pipeline whose blocks run in workers."""

    def __init__(self, pipeline: Pipeline, session: _Session, task: asyncio.Task[None]) -> None:
        self.pipeline = pipeline
        self._session = session
        self._task = task
        self._closing = False

    @property
    def name(self) -> str:
        return self.pipeline.name

    @property
    def closed(self) -> bool:
        return self._closing or self._task.done()

    async def submit(self, item: Any) -> Any:
        """Send ``item`` through the workers and return its output (a list for several).

        Raises:
            ItemDropped: the pipeline made no output for it.
            BlockError: the item failed (its cause a ``RemoteError``: type and message).
            PipelineClosed: the service is stopping or stopped.
        """
        if self.closed:
            msg = f"pipeline {self.name!r} is not accepting items: it is stopping or stopped"
            raise PipelineClosed(msg)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        await self._session.send(item, future)
        return await future

    def statistics(self) -> dict[str, BlockStatistics]:
        """The workers' books per block, merged over every live worker (see
        :meth:`RedisTransport.statistics`), as last read (every half second)."""
        return dict(self._session.books)

    async def stop(self) -> None:
        """Wait for the submitted items' answers, then stop."""
        self._closing = True
        session = self._session
        if session.pending and not self._task.done():
            session.drained.clear()
            await asyncio.wait(
                [self._task, asyncio.ensure_future(session.drained.wait())],
                return_when=asyncio.FIRST_COMPLETED,
            )
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await wait_finished(self._task)

    def __repr__(self) -> str:
        return f"<RemoteRunning {self.name!r} {'closed' if self.closed else 'open'}>"


def _names(pipeline: Pipeline) -> list[str]:
    return stage_names(pipeline.stages)


def _glob_escape(text: str) -> str:
    """``text`` matched literally by a Redis glob pattern (SCAN MATCH)."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


class _Books:
    """The books of one run through the transport: its local blocks' and the workers'."""

    def __init__(self, pipeline: Pipeline, session: _Session) -> None:
        self.pipeline = pipeline
        self.session = session
        self.head: Pipeline | None = None
        self.tail: Pipeline | None = None

    def statistics(self) -> dict[str, BlockStatistics]:
        found: dict[str, BlockStatistics] = dict(self.session.books)
        for part in (self.head, self.tail):
            if part is not None:
                found.update(part.statistics())
        return {name: found.get(name, BlockStatistics(name=name)) for name in _names(self.pipeline)}
