"""What the distributed mode writes to its streams, and where.

Stream keys (``P`` is the prefix, ``aioflow`` unless set; ``H`` a hash of the pipeline's graph)::

    P:{pipeline}:{H}:in:{block}     the input stream of the first block of a segment
    P:{pipeline}:{H}:reply:{run}    one caller's replies (one stream per run, deleted after it;
                                    a TTL the live caller renews: REPLY_TTL)
    P:{pipeline}:{H}:dead           the dead-letter stream
    P:{pipeline}:graph              the graph the latest caller runs (a worker checks it)
    P:{pipeline}:{H}:stats:{worker} a hash: block name -> that worker's BlockStatistics record
                                    (msgpack of ``BlockStatistics.to_data()``), with a TTL
    P:{pipeline}:{H}:in:{block}:p{i}  partition i of a keyed block's input; its lease, snapshot,
                                    partition count and members: :mod:`.partitions`
    P:{pipeline}:{H}:ctl:{worker}   one worker's control stream (the ends of runs for the keyed
                                    blocks inside its segment)

An item entry has two fields: ``m`` (msgpack: the run id, the item's *path*, the reply stream,
the last remote block, the codec's name) and ``v`` (the item, written by the codec). A *burst*
entry carries several items of one run that a producer had ready at once (one ``XADD`` for
them all): its ``m`` has the same run, reply stream, last block and codec, and the list of the
items' paths under ``b`` instead of one path under ``p``; the items are the fields ``v``,
``v1``, ``v2``... in the order of their paths. An ``m`` may carry ``t``, when the input was
born (the Redis server's clock, for ``max_age``): one number, or in a burst whose items were
born apart a list of one per path. A worker answers every item of a burst on its
own (outputs, error or dead letter); acknowledgement, reclaim and the delivery count work per
entry. A path is
the input's index in its run, followed by one position per fan-out: when a segment makes ``n != 1``
outputs from an item it also tells the caller (a ``split`` reply), and its outputs carry the
path plus their position. The last remote segment answers each path with an ``out`` reply (its
outputs, possibly none) or an ``err`` reply (the error as data: block, item summary, exception
type and message; never a pickled exception).

The end of a caller's run (:mod:`.ending`) is an entry with an ``m`` and no ``v``: ``k`` is
``end``, with the run, its reply stream, the last remote block, the codec, ``base`` (the index
its flush's paths start with) and, to a control stream, ``blk`` and ``part``; ``drop`` when
the run failed (its keys go without ``evict``). A worker answers it ``flushed`` (``part``, and
the ``paths`` of the flush's outputs, which it answers as items), and tells a run's caller
``holds`` (``block``, ``worker``) when it first holds keys of the run for a keyed block inside
its segment.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from ..block import Block
from ..errors import AioflowError, BlockError
from ..graph import Branch
from ..sampling import Every
from .codec import Codec, CodecError, pack_plain, unpack_plain

__all__ = [
    "GROUP",
    "Entry",
    "EntryError",
    "ItemMeta",
    "Keys",
    "MessageError",
    "RemoteError",
    "ServerClock",
    "check_reply",
    "error_from_data",
    "error_to_data",
    "graph_signature",
    "item_metas",
    "pack_burst",
    "pack_item",
    "pack_reply",
    "parse_entry",
    "parse_item",
    "read_meta",
    "reply_answers",
    "value_field",
]

#: the consumer group every segment's workers share on their input stream
GROUP = "aioflow"


class MessageError(AioflowError):
    """An entry of a stream is not a message of this version of aioflow, or cannot be read."""


class RemoteError(Exception):
    """The cause of a :class:`~aioflow.BlockError` raised in another process: its exception's
    type name and message, as text (exceptions never travel as objects)."""

    def __init__(self, type_name: str, message: str) -> None:
        self.type_name = type_name
        self.message = message
        super().__init__(type_name, message)

    def __str__(self) -> str:
        return f"{self.type_name}: {self.message}" if self.message else self.type_name


class Keys:
    """The Redis keys of one pipeline graph."""

    def __init__(self, prefix: str, pipeline: str, graph_hash: str) -> None:
        self.prefix = prefix
        self.base = f"{prefix}:{pipeline}:{graph_hash}"
        self.graph = f"{prefix}:{pipeline}:graph"
        self.dead = f"{self.base}:dead"

    def inbox(self, block: str) -> str:
        return f"{self.base}:in:{block}"

    def reply(self, run: str) -> str:
        return f"{self.base}:reply:{run}"

    def stats(self, worker: str) -> str:
        """The hash of one worker's books (``*`` matches them all)."""
        return f"{self.base}:stats:{worker}"


def _module_tail(module: str) -> str:
    """The last part of a function's module name, the same in a caller and its workers.

    A caller that runs its pipeline's file as a script (``python app.py``) sees the functions
    it defines in ``__main__``, where its workers (``aioflow worker app:pipe``) import them from
    ``app``, or from ``pkg.app``: the last part of the name is what both agree on.
    """
    if module == "__main__":
        main = sys.modules.get("__main__")
        spec = getattr(main, "__spec__", None)
        if spec is not None and spec.name and spec.name != "__main__":
            module = spec.name  # python -m pkg.app
        else:
            path = getattr(main, "__file__", None)
            if isinstance(path, str):
                module = os.path.splitext(os.path.basename(path))[0]
    return module.rpartition(".")[2]


def _option_text(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if callable(value) and hasattr(value, "__qualname__"):
        return f"{_module_tail(getattr(value, '__module__', None) or '?')}.{value.__qualname__}"
    return repr(value)


def _stage_doc(stage: Block | Branch) -> Any:
    if isinstance(stage, Branch):
        doc: dict[str, Any] = {
            "branch": stage.name,
            "queue_size": stage.queue_size,
            "members": [[_stage_doc(s) for s in member] for member in stage.members],
        }
        if isinstance(stage, Every):
            doc["every"] = {
                option: _option_text(getattr(stage, option))
                for option in ("n", "per_second", "key", "clock", "ordered")
            }
        return doc
    opts = stage.options
    doc = {f.name: _option_text(getattr(opts, f.name)) for f in fields(opts)}
    doc["kind"] = stage._aioflow_kind
    return doc


def graph_signature(name: str, stages: Sequence[Block | Branch]) -> tuple[str, str]:
    """``(hash, description)`` of a pipeline: block names, order, kinds and options."""
    doc = json.dumps({"pipeline": name, "stages": [_stage_doc(s) for s in stages]}, sort_keys=True)
    return hashlib.sha256(doc.encode()).hexdigest()[:16], doc


@dataclass(frozen=True, slots=True)
class ItemMeta:
    """Where an item comes from and where its answers go."""

    run: str
    path: tuple[int, ...]
    reply: str
    #: the last block that runs remotely; after it, outputs go to the reply stream
    end: str
    codec: str
    #: when the input entered the pipeline, in seconds on the Redis server's clock (for
    #: ``max_age``; :class:`ServerClock`); None when not known
    born: float | None = None


def pack_item(meta: ItemMeta, value: bytes) -> dict[bytes, bytes]:
    doc: dict[str, Any] = {
        "r": meta.run,
        "p": list(meta.path),
        "to": meta.reply,
        "end": meta.end,
        "c": meta.codec,
    }
    if meta.born is not None:
        doc["t"] = meta.born
    return {b"m": pack_plain(doc), b"v": value}


def value_field(position: int) -> bytes:
    """The field of the item at ``position`` in an entry: ``v``, ``v1``, ``v2``..."""
    return b"v%d" % position if position else b"v"


def pack_burst(
    run: str,
    reply: str,
    end: str,
    codec: str,
    paths: Sequence[Sequence[int]],
    values: Sequence[bytes],
    borns: Sequence[float | None] | None = None,
) -> dict[bytes, bytes]:
    """One entry for several items of one run (one item: the plain :func:`pack_item` entry).
    ``borns``: each item's birth time (:attr:`ItemMeta.born`), written under ``t`` as one
    number when they all agree, else as a list of one per item; absent when none is known."""
    if len(paths) == 1:
        born = borns[0] if borns else None
        return pack_item(ItemMeta(run, tuple(paths[0]), reply, end, codec, born), values[0])
    doc: dict[str, Any] = {
        "r": run,
        "b": [list(p) for p in paths],
        "to": reply,
        "end": end,
        "c": codec,
    }
    if borns is not None and any(born is not None for born in borns):
        first = borns[0]
        doc["t"] = first if all(born == first for born in borns) else list(borns)
    fields = {b"m": pack_plain(doc)}
    for position, value in enumerate(values):
        fields[value_field(position)] = value
    return fields


@dataclass(frozen=True, slots=True)
class Entry:
    """The items of one stream entry (one, or a burst): each item's meta, and either its
    decoded value or, in ``errors`` under its position, why it does not decode."""

    metas: list[ItemMeta]
    values: list[Any]
    errors: dict[int, str]


class EntryError(MessageError):
    """A whole entry cannot be used. ``metas`` lists its items when its header could be read
    (their callers can be told); it is empty when not even that could."""

    def __init__(self, message: str, metas: Sequence[ItemMeta] = ()) -> None:
        super().__init__(message)
        self.metas = list(metas)


def _is_path(path: Any) -> bool:
    return (
        isinstance(path, list)
        and bool(path)
        and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in path)
    )


def parse_entry(fields: Mapping[bytes, bytes], codec: Codec, keys: Keys | None = None) -> Entry:
    """The items of a stream entry, one or a burst. An item that does not decode is reported
    in :attr:`Entry.errors`; the others are unaffected. With ``keys``, the entry's reply stream
    must be its run's of that graph (:meth:`Keys.reply`): answers go nowhere else.

    Raises:
        EntryError: the entry's header is malformed, names another reply stream, or is
            written by another codec.
    """
    try:
        meta = read_meta(fields)
    except MessageError as exc:
        raise EntryError(str(exc)) from exc.__cause__
    burst = "b" in meta
    try:
        run, reply, end, name = meta["r"], meta["to"], meta["end"], meta["c"]
        paths = meta["b"] if burst else [meta["p"]]
    except KeyError as exc:
        msg = f"malformed item message: no {exc.args[0]!r} field"
        raise EntryError(msg) from None
    if not (
        isinstance(run, str)
        and isinstance(reply, str)
        and isinstance(end, str)
        and isinstance(name, str)
        and isinstance(paths, list)
        and paths
        and all(_is_path(p) for p in paths)
    ):
        msg = "malformed item message: bad run, path, reply, end or codec field"
        raise EntryError(msg)
    check_reply(keys, run, reply)
    borns = _births(meta.get("t"), len(paths))
    metas = [
        ItemMeta(run, tuple(p), reply, end, name, born)
        for p, born in zip(paths, borns, strict=True)
    ]
    if name != codec.name:
        msg = (
            f"refused an item written with the {name!r} codec: this process reads only "
            f"{codec.name!r}"
        )
        raise EntryError(msg, metas)
    values: list[Any] = []
    errors: dict[int, str] = {}
    for position in range(len(metas)):
        value = fields.get(value_field(position))
        if not isinstance(value, bytes):
            errors[position] = (
                f"malformed item message: no {value_field(position).decode()!r} field"
            )
            values.append(None)
            continue
        try:
            values.append(codec.decode(value))
        except CodecError as exc:
            errors[position] = f"the item does not decode: {exc}"
            values.append(None)
    return Entry(metas, values, errors)


def check_reply(keys: Keys | None, run: str, reply: str) -> None:
    """Whether ``reply`` is run ``run``'s reply stream of the graph of ``keys`` (a caller
    always answers there). An entry written by hand could name any key (a string, another
    pipeline's stream): writing answers there would fail, or feed someone else.

    Raises:
        EntryError: it is not.
    """
    if keys is not None and reply != keys.reply(run):
        msg = (
            f"malformed item message: its reply stream {reply!r} is not its run's "
            f"({keys.reply(run)!r})"
        )
        raise EntryError(msg)


def parse_item(fields: Mapping[bytes, bytes], codec: Codec) -> tuple[ItemMeta, Any]:
    """The meta and the decoded item of a one-item stream entry.

    Raises:
        MessageError: the entry is malformed, a burst, written by another codec, or does not
            decode.
    """
    entry = parse_entry(fields, codec)
    if len(entry.metas) != 1:
        msg = f"a burst of {len(entry.metas)} items where one item was expected"
        raise MessageError(msg)
    if entry.errors:
        raise MessageError(entry.errors[0])
    return entry.metas[0], entry.values[0]


def _is_birth(value: Any) -> bool:
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool))


def _births(t: Any, n: int) -> list[float | None]:
    """The birth times of an entry's ``n`` items from its meta's ``t``: absent, one number
    for them all, or (a burst whose items were born apart) a list of one per item.

    Raises:
        EntryError: ``t`` is none of these.
    """
    if isinstance(t, list):
        if len(t) != n or not all(_is_birth(x) for x in t):
            msg = f"malformed item message: its birth times are not {n} numbers"
            raise EntryError(msg)
        return [None if x is None else float(x) for x in t]
    if not _is_birth(t):
        msg = f"malformed item message: its birth time is a {type(t).__name__}, not a number"
        raise EntryError(msg)
    return [None if t is None else float(t)] * n


def item_metas(fields: Mapping[bytes, bytes]) -> list[dict[str, Any]]:
    """The metas of the items an entry carries, one plain dict each (run ``r``, path ``p``,
    reply stream ``to``...): a burst's ``m`` (paths under ``b``) gives one per path; fields
    ``m1``, ``m2``... count as further items. Unreadable ones are left out."""
    metas: list[dict[str, Any]] = []
    for key in sorted(k for k in fields if isinstance(k, bytes) and k[:1] == b"m"):
        if key != b"m" and not key[1:].isdigit():
            continue
        try:
            meta = read_meta({b"m": fields[key]})
        except MessageError:
            continue
        paths = meta.pop("b", None)
        if not isinstance(paths, list):
            metas.append(meta)
            continue
        for path in paths:
            metas.append({**meta, "p": path})
    return metas


class ServerClock:
    """Seconds on the Redis server's clock, read locally: the one clock every process of a
    distributed pipeline shares, so an item's age (``max_age``) does not depend on the clocks
    of the machines agreeing. :meth:`sync` measures the offset (``TIME``, halfway through the
    round trip) against this process's monotonic clock."""

    __slots__ = ("offset",)

    def __init__(self) -> None:
        self.offset = time.time() - time.monotonic()  # until the first sync

    async def sync(self, client: Any) -> None:
        t0 = time.monotonic()
        sec, usec = await client.time()
        t1 = time.monotonic()
        self.offset = int(sec) + int(usec) / 1e6 - (t0 + t1) / 2

    def now(self) -> float:
        return time.monotonic() + self.offset

    def age(self, born: float) -> float:
        """Seconds since ``born`` (a :meth:`now` reading, possibly of another process)."""
        return max(0.0, self.now() - born)


def read_meta(fields: Mapping[bytes, bytes]) -> dict[str, Any]:
    raw = fields.get(b"m")
    if not isinstance(raw, bytes):
        msg = "malformed message: no 'm' field"
        raise MessageError(msg)
    try:
        meta = unpack_plain(raw)
    except CodecError as exc:
        msg = f"malformed message: 'm' is {exc}"
        raise MessageError(msg) from exc
    if not isinstance(meta, dict):
        msg = f"malformed message: 'm' is a {type(meta).__name__}, not a map"
        raise MessageError(msg)
    return meta


def pack_reply(
    path: Sequence[int], kind: str, value: bytes = b"", **extra: Any
) -> dict[bytes, bytes]:
    """A reply entry: ``kind`` is ``out`` (value: the outputs), ``split`` (``n``), ``err``
    (``e``: the error as data), or for the end of a run ``flushed`` and ``holds``."""
    return {b"m": pack_plain({"p": list(path), "k": kind, **extra}), b"v": value}


def reply_answers(fields: Mapping[bytes, bytes]) -> list[Mapping[bytes, bytes]]:
    """The answers a reply entry carries: a worker writes the answers of a burst to one caller
    in one entry, as fields ``m``/``v``, ``m1``/``v1``, ``m2``/``v2``..."""
    if b"m1" not in fields:
        return [fields]
    answers: list[Mapping[bytes, bytes]] = [
        {b"m": fields.get(b"m", b""), b"v": fields.get(b"v", b"")}
    ]
    i = 1
    while (meta := fields.get(b"m%d" % i)) is not None:
        answers.append({b"m": meta, b"v": fields.get(b"v%d" % i, b"")})
        i += 1
    return answers


def error_to_data(err: BlockError) -> dict[str, Any]:
    cause = err.__cause__
    if isinstance(cause, RemoteError):
        type_name, message = cause.type_name, cause.message
    elif cause is not None:
        type_name, message = type(cause).__name__, str(cause)
    else:
        type_name, message = type(err).__name__, err.message
    return {
        "block": err.block,
        "message": err.message,
        "item": err.item,
        "attempt": err.attempt,
        "phase": err.phase,
        "type": type_name,
        "text": message,
    }


def error_from_data(data: Any) -> BlockError:
    """The :class:`BlockError` an ``err`` reply describes, its cause a :class:`RemoteError`."""
    if not isinstance(data, dict):
        data = {}
    item = data.get("item")
    attempt = data.get("attempt")
    err = BlockError(
        str(data.get("block", "<remote>")),
        str(data.get("message", "failed in a worker (no details)")),
        item=item if isinstance(item, str) else None,
        attempt=attempt if isinstance(attempt, int) and attempt >= 1 else 1,
        phase=str(data.get("phase", "process")),
    )
    err.__cause__ = RemoteError(str(data.get("type", "Exception")), str(data.get("text", "")))
    return err
