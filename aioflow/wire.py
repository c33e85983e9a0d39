"""Record types that may travel between processes: a registry of named types.

A transport (``aioflow.transport``) writes items to another process without pickle, so it only
knows how to write plain data (None, bool, numbers, str, bytes, lists, tuples, dicts, numpy
arrays) and the record types registered here. A record travels as its *tag* and a dict of its
fields; the receiving side looks the tag up and rebuilds the object. Nothing named on the wire
is ever imported or called unless it was registered.

The registry lives in the core so that the extras need not import one another: the video
``Frame`` registers itself from :mod:`aioflow.io.video`, and the Redis transport reads the
registry without importing :mod:`aioflow.io`. A tag ``"aioflow.io._video_frame:Frame"`` that is not
registered yet in a process is resolved by importing that module, and only for modules of the
aioflow package itself (importing one of aioflow's own modules runs no code chosen by whoever
wrote the message); any other unknown tag is an error naming it.

Register your own dataclasses in the module that defines them::

    @dataclasses.dataclass
    class Detection:
        box: tuple[int, int, int, int]
        score: float

    aioflow.wire.register(Detection, tag="myapp.Detection")

A registered type may also have *variants*: other ways to write it that a codec uses when asked
(``MsgpackCodec(frames="jpeg")`` writes frames with the ``"jpeg"`` variant, which the video
``Frame`` registers). A variant has a tag of its own, so the receiving side rebuilds the object
whichever way it was written, with no option of its own.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = [
    "Record",
    "Variant",
    "lookup_tag",
    "lookup_type",
    "lookup_variant",
    "register",
    "register_variant",
]


@dataclasses.dataclass(frozen=True, slots=True)
class Record:
    """How one registered type is written and rebuilt."""

    cls: type
    tag: str
    to_fields: Callable[[Any], dict[str, Any]]
    from_fields: Callable[[dict[str, Any]], Any]


@dataclasses.dataclass(frozen=True, slots=True)
class Variant:
    """Another way to write a registered type (see :func:`register_variant`)."""

    cls: type
    name: str
    tag: str
    #: (object, the codec's options) -> dict of fields, or None to write the object as usual
    to_fields: Callable[[Any, Mapping[str, Any]], dict[str, Any] | None]


_by_type: dict[type, Record] = {}
_by_tag: dict[str, Record] = {}
_variants: dict[tuple[type, str], Variant] = {}


def register(
    cls: type,
    *,
    tag: str,
    to_fields: Callable[[Any], dict[str, Any]] | None = None,
    from_fields: Callable[[dict[str, Any]], Any] | None = None,
) -> None:
    """Let instances of ``cls`` travel: written as ``tag`` plus a dict of fields.

    Args:
        cls: the type (exactly this type: subclasses register themselves).
        tag: a stable name, the same in every process (``"module:Class"`` by convention).
        to_fields: object -> dict of field values (plain data or other registered records);
            defaults to the dataclass fields of ``cls``.
        from_fields: dict -> object; defaults to ``cls(**fields)``.

    Raises:
        TypeError: ``cls`` is not a dataclass and no ``to_fields`` was given.
        ValueError: ``tag`` is already registered for another type.
    """
    if to_fields is None:
        if not dataclasses.is_dataclass(cls):
            msg = f"{cls.__qualname__} is not a dataclass: pass to_fields= and from_fields="
            raise TypeError(msg)
        names = tuple(f.name for f in dataclasses.fields(cls))

        def to_fields(obj: Any) -> dict[str, Any]:
            return {name: getattr(obj, name) for name in names}

    if from_fields is None:

        def from_fields(fields: dict[str, Any]) -> Any:
            return cls(**fields)

    known = _by_tag.get(tag)
    if known is not None and known.cls is not cls:
        msg = f"wire tag {tag!r} is already registered for {known.cls.__qualname__}"
        raise ValueError(msg)
    record = Record(cls, tag, to_fields, from_fields)
    _by_type[cls] = record
    _by_tag[tag] = record


def register_variant(
    cls: type,
    name: str,
    *,
    tag: str,
    to_fields: Callable[[Any, Mapping[str, Any]], dict[str, Any] | None],
    from_fields: Callable[[dict[str, Any]], Any],
) -> None:
    """Another way to write instances of ``cls`` (already registered): a codec asked for the
    variant ``name`` writes them as ``tag`` plus ``to_fields(obj, options)`` (``options``: the
    codec's, such as ``{"quality": 90}``; None from ``to_fields`` means "not for this one,
    write it as usual"), and any process rebuilds them from ``tag`` with ``from_fields``.

    Raises:
        LookupError: ``cls`` is not registered.
        ValueError: ``tag`` is already registered for another type.
    """
    own = _by_type.get(cls)
    if own is None:
        msg = f"{cls.__qualname__} is not registered: aioflow.wire.register it first"
        raise LookupError(msg)
    if tag == own.tag:
        msg = f"a variant needs a tag of its own: {tag!r} is {cls.__qualname__}'s own tag"
        raise ValueError(msg)
    known = _by_tag.get(tag)
    if known is not None and known.cls is not cls:
        msg = f"wire tag {tag!r} is already registered for {known.cls.__qualname__}"
        raise ValueError(msg)
    _by_tag[tag] = Record(cls, tag, _write_only(tag), from_fields)
    _variants[cls, name] = Variant(cls, name, tag, to_fields)


def _write_only(tag: str) -> Callable[[Any], dict[str, Any]]:
    def to_fields(obj: Any) -> dict[str, Any]:
        msg = f"{tag!r} is a variant: it is written through its Variant, not its Record"
        raise TypeError(msg)

    return to_fields


def lookup_variant(cls: type, name: str) -> Variant | None:
    """The variant ``name`` registered for exactly ``cls``, or None."""
    return _variants.get((cls, name))


def lookup_type(cls: type) -> Record | None:
    """The record registered for exactly ``cls``, or None."""
    return _by_type.get(cls)


def lookup_tag(tag: str) -> Record:
    """The record registered under ``tag``.

    Raises:
        LookupError: nothing is registered under ``tag`` (after importing the module it names,
            for a module of the aioflow package).
    """
    record = _by_tag.get(tag)
    if record is not None:
        return record
    module, sep, _ = tag.partition(":")
    if sep and (module == "aioflow" or module.startswith("aioflow.")):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            msg = f"type {tag!r} cannot be rebuilt here: {exc}"
            raise LookupError(msg) from exc
        record = _by_tag.get(tag)
        if record is not None:
            return record
    msg = (
        f"type {tag!r} is not registered in this process: import the module that registers it "
        "(aioflow.wire.register) in the worker's pipeline module"
    )
    raise LookupError(msg)
