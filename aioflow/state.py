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
import tempfile
from collections.abc import Hashable
from pathlib import Path
from typing import Any, Protocol, TypedDict, runtime_checkable

import numpy as np

from .errors import SnapshotError

__all__ = ["FileStore", "Snapshot", "SnapshotError", "StateStore", "decode", "encode"]

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


def _to_json(obj: Any, where: str) -> Any:
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    if isinstance(obj, np.ndarray):
        data = np.ascontiguousarray(obj)
        return {
            "__ndarray__": base64.b64encode(data.tobytes()).decode("ascii"),
            "dtype": data.dtype.str,
            "shape": list(data.shape),
        }
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, tuple):
        return {"__tuple__": [_to_json(v, where) for v in obj]}
    if isinstance(obj, list):
        return [_to_json(v, where) for v in obj]
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj) and not (
            obj.keys() & {"__ndarray__", "__tuple__", "__dict__"}
        ):
            return {k: _to_json(v, where) for k, v in obj.items()}
        return {"__dict__": [[_to_json(k, where), _to_json(v, where)] for k, v in obj.items()]}
    msg = (
        f"{where}: cannot write a {type(obj).__name__} into a snapshot; state must be built "
        "from None, bool, int, float, str, list, tuple, dict and numpy arrays"
    )
    raise SnapshotError(msg)


def _from_json(obj: Any) -> Any:
    if isinstance(obj, list):
        return [_from_json(v) for v in obj]
    if isinstance(obj, dict):
        if "__ndarray__" in obj:
            raw = base64.b64decode(obj["__ndarray__"])
            return np.frombuffer(raw, dtype=np.dtype(obj["dtype"])).reshape(obj["shape"]).copy()
        if "__tuple__" in obj:
            return tuple(_from_json(v) for v in obj["__tuple__"])
        if "__dict__" in obj:
            return {_from_json(k): _from_json(v) for k, v in obj["__dict__"]}
        return {k: _from_json(v) for k, v in obj.items()}
    return obj


def encode(snapshot: Snapshot) -> bytes:
    """Write ``snapshot`` as JSON bytes (numpy arrays and tuples included).

    >>> snap = {"version": 1, "pipeline": "p", "blocks": {"t": [[(1, "a"), {"n": 2}]]}}
    >>> decode(encode(snap)) == snap
    True
    """
    doc = {
        "version": snapshot["version"],
        "pipeline": snapshot["pipeline"],
        "blocks": {
            name: [
                [_to_json(k, f"block {name!r}"), _to_json(s, f"block {name!r}, key {k!r}")]
                for k, s in pairs
            ]
            for name, pairs in snapshot["blocks"].items()
        },
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def decode(data: bytes) -> Snapshot:
    """Read a snapshot written by :func:`encode`."""
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        msg = f"not a snapshot: {exc}"
        raise SnapshotError(msg) from exc
    if not isinstance(doc, dict) or doc.get("version") != VERSION:
        found = doc.get("version") if isinstance(doc, dict) else type(doc).__name__
        msg = f"snapshot version {VERSION} expected, found {found!r}"
        raise SnapshotError(msg)
    blocks = {
        name: [[_from_json(k), _from_json(s)] for k, s in pairs]
        for name, pairs in doc["blocks"].items()
    }
    return Snapshot(version=VERSION, pipeline=str(doc["pipeline"]), blocks=blocks)


def make_snapshot(pipeline: str, blocks: dict[str, dict[Hashable, Any]]) -> Snapshot:
    """A snapshot of the given states, deep-copied through the codec (so it is writable and
    later changes to the live state do not leak into it).

    A thread block may change a state while it is copied; the copy is then tried again, and
    after a few tries it fails with a :class:`SnapshotError` rather than a half-updated state.
    """
    for _ in range(5):
        try:
            snap = Snapshot(
                version=VERSION,
                pipeline=pipeline,
                blocks={
                    name: [[k, s] for k, s in list(states.items())]
                    for name, states in blocks.items()
                },
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
        return decode(data)

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
