"""Snapshots of keyed state, their codec, and where they are kept.

A snapshot is plain data::

    {"version": 1, "pipeline": "gates",
     "blocks": {"tracker": [[key, state], [key, state], ...]}}

States are built from JSON types plus tuples and numpy arrays; :func:`encode` writes them as JSON
(arrays as base64 with dtype and shape, tuples tagged so keys stay hashable) and :func:`decode`
reads them back. No pickle: a snapshot file can be read by any version of the code and cannot run
code when loaded.

A :class:`StateStore` keeps the latest snapshot. ``pipe.open(store=FileStore(path))`` restores
from it when the pipeline starts and writes a new snapshot, atomically, when it drains.
"""

from __future__ import annotations

import base64
import json
import os
import re
import tempfile
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, TypedDict, cast, runtime_checkable

import numpy as np

from .errors import SnapshotError

__all__ = ["MAX_DEPTH", "FileStore", "Snapshot", "SnapshotError", "StateStore", "decode", "encode"]

VERSION = 1


class Snapshot(TypedDict):
    """Every stateful block's keyed state: ``blocks[name]`` is a list of ``[key, state]``."""

    version: int
    pipeline: str
    blocks: dict[str, list[list[Any]]]


@runtime_checkable
class StateStore(Protocol):
    """Where the latest snapshot of a pipeline is kept."""

    async def load(self) -> Snapshot | None:
        """The latest snapshot, or None if there is none yet."""
        ...

    async def save(self, snapshot: Snapshot) -> None:
        """Keep ``snapshot`` as the latest, atomically: a reader sees the old or the new one."""
        ...


MAX_DEPTH = 100
"""How deeply a state (or key) may nest lists, tuples and dicts. Deeper is a SnapshotError, on
writing and on reading, so a tampered file nested thousands deep cannot exhaust the stack."""

_MAX_INT_BITS = 14_000  # under Python's 4300-digit limit on int <-> str: JSON can carry it back
_TAGS = frozenset({"__ndarray__", "__tuple__", "__dict__"})
_PLAIN = frozenset({str, float, bool, type(None)})  # JSON values that need no check
_TOP = ("version", "pipeline", "blocks")
# Array element kinds a snapshot carries: booleans, numbers, dates and fixed-size text. Never
# "O" (objects: their bytes are pointers, and reading them back would need pickle) nor "V"
# (raw or structured records: the dtype string does not say what the bytes hold).
_ARRAY_KINDS = frozenset("biufcmMSU")
_DTYPE = re.compile(r"[<>|=]?[biufcmMSU][1-9][0-9]{0,5}(\[[0-9]{0,9}[A-Za-z]{1,3}\])?")
_MAX_DIMS = 32


class _KeyPath:
    """Where a key's state is, for an error message: ``block 'count', key ('cam', 1)``. Built
    only when a message needs it (a snapshot holds many keys, and a key's ``repr`` is the
    user's code, which may be slow or raise)."""

    __slots__ = ("block", "key")

    def __init__(self, block: str, key: Any) -> None:
        self.block = block
        self.key = key

    def __str__(self) -> str:
        try:
            shown = repr(self.key)
        except Exception:  # the user's __repr__: the message must still come
            shown = f"<a {type(self.key).__name__} whose repr failed>"
        return f"block {self.block!r}, key {shown}"


def _to_json(obj: Any, where: str | _KeyPath, depth: int = 0) -> Any:
    # ``depth``: how many lists, tuples and dicts hold ``obj``. Only containers count against
    # MAX_DEPTH (a scalar or an array may sit in the deepest one), as in _from_json.
    if depth > MAX_DEPTH and isinstance(obj, list | tuple | dict):
        msg = f"{where}: state nested deeper than {MAX_DEPTH} levels (or containing itself)"
        raise SnapshotError(msg)
    if obj is None or isinstance(obj, bool | str):
        return obj
    if isinstance(obj, int):
        if obj.bit_length() > _MAX_INT_BITS:
            msg = f"{where}: an int of {obj.bit_length()} bits is too large for a snapshot"
            raise SnapshotError(msg)
        return obj
    if isinstance(obj, float):
        return obj
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in _ARRAY_KINDS:
            msg = (
                f"{where}: cannot write a numpy array of dtype {obj.dtype} into a snapshot; "
                "arrays must hold booleans, numbers, dates or fixed-size text (not objects "
                "or records)"
            )
            raise SnapshotError(msg)
        data = np.ascontiguousarray(obj)
        return {
            "__ndarray__": base64.b64encode(data.tobytes()).decode("ascii"),
            "dtype": data.dtype.str,
            "shape": list(data.shape),
        }
    if isinstance(obj, np.generic):
        return _to_json(obj.item(), where, depth)
    if isinstance(obj, tuple):
        return {"__tuple__": [_to_json(v, where, depth + 1) for v in obj]}
    if isinstance(obj, list):
        return [_to_json(v, where, depth + 1) for v in obj]
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj) and not (obj.keys() & _TAGS):
            return {k: _to_json(v, where, depth + 1) for k, v in obj.items()}
        return {
            "__dict__": [
                [_to_json(k, where, depth + 1), _to_json(v, where, depth + 1)]
                for k, v in obj.items()
            ]
        }
    msg = (
        f"{where}: cannot write a {type(obj).__name__} into a snapshot; state must be built "
        "from None, bool, int, float, str, list, tuple, dict and numpy arrays"
    )
    raise SnapshotError(msg)


# -- reading: every part of the document is checked before anything is built from it ----------


def _member(path: str, name: str) -> str:
    """The path of member ``name`` of the object at ``path``: ``a.b``, or ``a["odd name"]``."""
    if name.isidentifier():
        return f"{path}.{name}" if path else name
    return f"{path}[{json.dumps(name)}]"


def _kind(value: Any) -> str:
    """What a JSON value is, in words."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"  # (a hand-made snapshot given to restore=)


def _bad(path: str, problem: str) -> SnapshotError:
    return SnapshotError(f"not a valid snapshot: {path or 'the document'}: {problem}")


def _only(obj: dict[str, Any], allowed: tuple[str, ...], path: str) -> None:
    """Refuse members other than ``allowed``, and missing ones."""
    for name in obj:
        if name not in allowed:
            expected = ", ".join(repr(a) for a in allowed)
            raise _bad(_member(path, name), f"unexpected member (expected only {expected})")
    for name in allowed:
        if name not in obj:
            raise _bad(path, f"the member {name!r} is missing")


def _list(value: Any, path: str, what: str = "a list") -> list[Any]:
    if not isinstance(value, list):
        raise _bad(path, f"expected {what}, found {_kind(value)}")
    return value


def _key(value: Any, path: str, seen: dict[Any, int], index: int) -> None:
    """Refuse a key that cannot be a dict key, or repeats an earlier one."""
    try:
        earlier = seen.setdefault(value, index)
    except TypeError:
        raise _bad(path, f"a key must be hashable, found {_kind(value)}") from None
    if earlier != index:
        raise _bad(path, f"the key {value!r} appears twice (also at [{earlier}])")


def _decode_array(obj: dict[str, Any], path: str) -> np.ndarray[Any, Any]:
    _only(obj, ("__ndarray__", "dtype", "shape"), path)
    data, dtype_text, shape = obj["__ndarray__"], obj["dtype"], obj["shape"]
    if not isinstance(data, str):
        raise _bad(f"{path}.__ndarray__", f"expected base64 text, found {_kind(data)}")
    try:
        raw = base64.b64decode(data, validate=True)
    except ValueError as exc:  # binascii.Error: bad characters or padding
        raise _bad(f"{path}.__ndarray__", f"not valid base64 ({exc})") from None
    if not isinstance(dtype_text, str):
        raise _bad(f"{path}.dtype", f"expected a numpy dtype string, found {_kind(dtype_text)}")
    if _DTYPE.fullmatch(dtype_text) is None:
        raise _bad(
            f"{path}.dtype",
            f"{dtype_text!r} is not a dtype a snapshot holds (booleans, numbers, dates or "
            "fixed-size text, such as '<f4' or '|u1'; never objects or records)",
        )
    try:
        dtype = np.dtype(dtype_text)
    except (TypeError, ValueError) as exc:
        raise _bad(f"{path}.dtype", f"{dtype_text!r} is not a numpy dtype ({exc})") from None
    if dtype.kind not in _ARRAY_KINDS or dtype.itemsize == 0:
        raise _bad(f"{path}.dtype", f"{dtype_text!r} is not a dtype a snapshot holds")
    _list(shape, f"{path}.shape", "a list of sizes")
    if len(shape) > _MAX_DIMS:
        raise _bad(f"{path}.shape", f"{len(shape)} dimensions, at most {_MAX_DIMS} allowed")
    size = 1
    for i, dim in enumerate(shape):
        if isinstance(dim, bool) or not isinstance(dim, int) or not 0 <= dim < 2**62:
            raise _bad(f"{path}.shape[{i}]", f"expected a size >= 0, found {dim!r}")
        size *= dim
    if size * dtype.itemsize != len(raw):
        raise _bad(
            path,
            f"shape {shape} of {dtype_text!r} needs {size * dtype.itemsize} bytes, "
            f"the data holds {len(raw)}",
        )
    if dtype.kind == "b" and raw.strip(b"\x00\x01"):
        raise _bad(f"{path}.__ndarray__", "a boolean array holds bytes other than 0 and 1")
    try:
        array = np.frombuffer(raw, dtype=dtype).reshape(shape).copy()
        if dtype.kind == "U" and array.size:
            codes = np.frombuffer(raw, dtype=dtype.str[0] + "u4")
            if int(codes.max()) > 0x10FFFF:
                raise _bad(f"{path}.__ndarray__", "text holds a code point beyond U+10FFFF")
    except (TypeError, ValueError) as exc:  # what numpy refuses past the checks above
        raise _bad(path, f"not a valid array ({exc})") from None
    return array


def _small(value: Any) -> bool:
    return type(value) is int and value.bit_length() <= _MAX_INT_BITS


def _from_json(obj: Any, path: str, depth: int = 0) -> Any:
    """The value ``obj`` (parsed JSON) stands for; a SnapshotError naming the path if it is
    not one that :func:`_to_json` could have written."""
    if depth > MAX_DEPTH and (
        isinstance(obj, list) or (isinstance(obj, dict) and "__ndarray__" not in obj)
    ):
        raise _bad(path, f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(obj, int) and not isinstance(obj, bool) and obj.bit_length() > _MAX_INT_BITS:
        raise _bad(path, f"an integer of {obj.bit_length()} bits is too large")
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    # Strings, floats, booleans and null stand for themselves: kept as they are, without
    # building their path (a big state has many; decoding stays about as fast as json.loads).
    if isinstance(obj, list):
        return [
            v if type(v) in _PLAIN or _small(v) else _from_json(v, f"{path}[{i}]", depth + 1)
            for i, v in enumerate(obj)
        ]
    if not isinstance(obj, dict):
        raise _bad(path, f"expected a JSON value, found {_kind(obj)}")
    tags = obj.keys() & _TAGS
    if not tags:
        return {
            k: v if type(v) in _PLAIN or _small(v) else _from_json(v, _member(path, k), depth + 1)
            for k, v in obj.items()
        }
    if "__ndarray__" in tags:
        return _decode_array(obj, path)
    if "__tuple__" in tags:
        _only(obj, ("__tuple__",), path)
        inner = f"{path}.__tuple__"
        items = _list(obj["__tuple__"], inner)
        return tuple(
            v if type(v) in _PLAIN or _small(v) else _from_json(v, f"{inner}[{i}]", depth + 1)
            for i, v in enumerate(items)
        )
    _only(obj, ("__dict__",), path)
    inner = f"{path}.__dict__"
    out: dict[Any, Any] = {}
    seen: dict[Any, int] = {}
    for i, entry in enumerate(_list(obj["__dict__"], inner, "a list of [key, value] pairs")):
        at = f"{inner}[{i}]"
        if not isinstance(entry, list) or len(entry) != 2:
            raise _bad(at, f"expected a [key, value] pair, found {_describe_pair(entry)}")
        key = _from_json(entry[0], f"{at}.key", depth + 1)
        _key(key, f"{at}.key", seen, i)
        out[key] = _from_json(entry[1], f"{at}.value", depth + 1)
    return out


def _describe_pair(value: Any) -> str:
    if isinstance(value, list | tuple):
        return f"a list of {len(value)}"
    return _kind(value)


def _version(doc: Mapping[str, Any]) -> None:
    found = doc.get("version")
    if isinstance(found, bool) or not isinstance(found, int) or found != VERSION:
        shown = "none" if "version" not in doc else repr(found)
        msg = f"snapshot version {VERSION} expected, found {shown}"
        raise SnapshotError(msg)


def encode(snapshot: Snapshot) -> bytes:
    """Write ``snapshot`` as JSON bytes (numpy arrays and tuples included).

    Raises:
        SnapshotError: a state holds something a snapshot cannot carry (the message names
            the block and the key), or nests deeper than :data:`MAX_DEPTH`.

    >>> snap = {"version": 1, "pipeline": "p", "blocks": {"t": [[(1, "a"), {"n": 2}]]}}
    >>> decode(encode(snap)) == snap
    True
    """
    doc = {
        "version": snapshot["version"],
        "pipeline": snapshot["pipeline"],
        "blocks": {
            name: [
                [_to_json(k, f"block {name!r}"), _to_json(s, _KeyPath(name, k))] for k, s in pairs
            ]
            for name, pairs in snapshot["blocks"].items()
        },
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def decode(data: bytes) -> Snapshot:
    """Read a snapshot written by :func:`encode`.

    The whole document is checked before anything is built from it: its version, the type of
    every member, every array (base64 data, dtype, shape and byte count), every key (hashable,
    not repeated), and how deeply it nests.

    Raises:
        SnapshotError: ``data`` is not a snapshot, or one of another version. The message says
            what is wrong and where, as a path into the document
            (``blocks.tracker[3].state.tracks: expected a list, found an object``).

    >>> decode(b'{"version": 1, "pipeline": "p", "blocks": {"t": [["k", [1, 2]]]}}')
    {'version': 1, 'pipeline': 'p', 'blocks': {'t': [['k', [1, 2]]]}}
    """
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as exc:  # bad JSON or UTF-8, a huge int, deep nesting
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        msg = f"not a snapshot: {reason}"
        raise SnapshotError(msg) from exc
    if not isinstance(doc, dict):
        msg = f"not a snapshot: expected a JSON object, found {_kind(doc)}"
        raise SnapshotError(msg)
    _version(doc)
    _only(doc, _TOP, "")
    pipeline = doc["pipeline"]
    if not isinstance(pipeline, str):
        raise _bad("pipeline", f"expected a string, found {_kind(pipeline)}")
    blocks_doc = doc["blocks"]
    if not isinstance(blocks_doc, dict):
        raise _bad("blocks", f"expected an object, found {_kind(blocks_doc)}")
    blocks: dict[str, list[list[Any]]] = {}
    for name, pairs_doc in blocks_doc.items():
        at = _member("blocks", name)
        pairs: list[list[Any]] = []
        seen: dict[Any, int] = {}
        for i, pair in enumerate(_list(pairs_doc, at, "a list of [key, state] pairs")):
            where = f"{at}[{i}]"
            if not isinstance(pair, list) or len(pair) != 2:
                raise _bad(where, f"expected a [key, state] pair, found {_describe_pair(pair)}")
            key = _from_json(pair[0], f"{where}.key")
            _key(key, f"{where}.key", seen, i)
            pairs.append([key, _from_json(pair[1], f"{where}.state")])
        blocks[name] = pairs
    return Snapshot(version=VERSION, pipeline=pipeline, blocks=blocks)


def check_restorable(snapshot: object) -> Snapshot:
    """Check the outline of a snapshot given to ``pipe.open(restore=...)`` (decoded, or made
    by hand): its version, and for each block a list of ``[key, state]`` pairs with hashable,
    distinct keys. Returns it; raises :class:`SnapshotError` naming the path otherwise, before
    any state is restored."""
    if not isinstance(snapshot, dict):
        msg = f"not a snapshot: expected a dict, found {_kind(snapshot)}"
        raise SnapshotError(msg)
    _version(snapshot)
    blocks = snapshot.get("blocks")
    if not isinstance(blocks, dict):
        raise _bad("blocks", f"expected a dict, found {_kind(blocks)}")
    for name, pairs in blocks.items():
        if not isinstance(name, str):
            raise _bad("blocks", f"a block name must be a string, found {_kind(name)}")
        at = _member("blocks", name)
        if not isinstance(pairs, list | tuple):
            raise _bad(at, f"expected a list of [key, state] pairs, found {_kind(pairs)}")
        seen: dict[Any, int] = {}
        for i, pair in enumerate(pairs):
            if not isinstance(pair, list | tuple) or len(pair) != 2:
                raise _bad(
                    f"{at}[{i}]", f"expected a [key, state] pair, found {_describe_pair(pair)}"
                )
            _key(pair[0], f"{at}[{i}].key", seen, i)
    return cast(Snapshot, snapshot)


def make_snapshot(pipeline: str, blocks: Mapping[str, Sequence[tuple[Hashable, Any]]]) -> Snapshot:
    """A snapshot of the given ``(key, state)`` pairs, deep-copied through the codec (so it is
    writable and later changes to the live state do not leak into it). The keys are copied as
    they are, never hashed or compared (a user's key may refuse to be by now).

    A thread block may change a state while it is copied; the copy is then tried again, and
    after a few tries it fails with a :class:`SnapshotError` rather than a half-updated state.
    """
    for _ in range(5):
        try:
            snap = Snapshot(
                version=VERSION,
                pipeline=pipeline,
                blocks={name: [[k, s] for k, s in pairs] for name, pairs in blocks.items()},
            )
            return decode(encode(snap))
        except RuntimeError as exc:  # "dictionary changed size during iteration"
            last = exc
    msg = (
        f"pipeline {pipeline!r}: a keyed state kept changing while it was copied ({last}); "
        "take snapshots between items, or let a store take one when the pipeline drains"
    )
    raise SnapshotError(msg) from last


class FileStore:
    """Keeps the latest snapshot in one file, replaced atomically (write, fsync, rename).

    >>> import tempfile, asyncio
    >>> store = FileStore(tempfile.mkdtemp() + "/state.json")
    >>> asyncio.run(store.load()) is None
    True
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    async def load(self) -> Snapshot | None:
        import asyncio

        return await asyncio.to_thread(self.load_sync)

    async def save(self, snapshot: Snapshot) -> None:
        import asyncio

        data = encode(snapshot)
        await asyncio.to_thread(self._write, data)

    def load_sync(self) -> Snapshot | None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            return decode(data)
        except SnapshotError as exc:
            msg = f"snapshot file {str(self.path)!r}: {exc}"
            raise SnapshotError(msg) from exc

    def _write(self, data: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with _suppress_oserror():
                os.unlink(tmp)
            raise

    def __repr__(self) -> str:
        return f"<FileStore {str(self.path)!r}>"


class _suppress_oserror:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return exc[0] is not None and issubclass(exc[0], OSError)  # type: ignore[arg-type]
