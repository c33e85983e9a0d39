"""Errors raised by aioflow.

Every error aioflow raises derives from :class:`AioflowError`::

    AioflowError
    ├── GraphError          the pipeline is built wrong (bad option, duplicate name, ...);
    │                       raised before anything runs
    ├── BlockError          a block failed on an item (or in setup/teardown); the user's
    │                       exception is ``__cause__``
    ├── ItemDropped         ``submit()``: the pipeline made no output for this item
    │                       (filtered, dropped by overflow or age, skipped)
    ├── ExecutorError       an executor could not run the call (a worker process died, ...);
    │                       arrives as the ``__cause__`` of a BlockError
    ├── PipelineClosed      ``submit()`` on a pipeline that is stopping or stopped
    └── SnapshotError       keyed state cannot be written to or read from a snapshot

``run()`` and ``stream()`` raise an :class:`ExceptionGroup` of :class:`BlockError`; catch with
``except* af.BlockError``. ``submit()`` raises the bare :class:`BlockError` of its own item.
"""

from __future__ import annotations

import reprlib
from typing import Any

__all__ = [
    "AioflowError",
    "BlockError",
    "ExecutorError",
    "GraphError",
    "ItemDropped",
    "PipelineClosed",
    "SnapshotError",
    "describe",
    "summarize",
]

_MAX_SUMMARY = 120


class _Repr(reprlib.Repr):
    def repr_ndarray(self, obj: Any, level: int) -> str:
        # Arrays nested in an item (a frame in a dict) are described, never printed.
        return f"ndarray(shape={tuple(obj.shape)}, dtype={obj.dtype})"


_repr = _Repr()
_repr.maxstring = 60
_repr.maxother = 60
_repr.maxlist = 4
_repr.maxdict = 4
_repr.maxtuple = 4


def summarize(item: object) -> str:
    """A short, safe description of ``item`` for error messages and logs.

    Arrays are described by type, shape and dtype rather than printed.

    >>> summarize(list(range(100)))
    '[0, 1, 2, 3, ...]'
    """
    # Called while reporting another error: whatever the item does (attributes that raise, a
    # "shape" that is no tuple, a broken __repr__) must not replace that error with its own.
    try:
        shape = getattr(item, "shape", None)
        dtype = getattr(item, "dtype", None)
        if shape is not None and dtype is not None:
            return f"{type(item).__name__}(shape={tuple(shape)}, dtype={dtype})"
    except Exception:  # not an array after all: described by its repr below
        pass
    try:
        text = _repr.repr(item)
    except Exception:
        return f"<{type(item).__name__} object>"
    # reprlib bounds each level, not the whole: nested containers can still be long.
    if len(text) > _MAX_SUMMARY:
        text = text[: _MAX_SUMMARY - 3] + "..."
    return text


def describe(exc: BaseException) -> str:
    """``"ValueError: message"``, or just the type name when the message is empty."""
    try:
        text = str(exc)
    except Exception as err:  # a broken __str__ must not hide the error it describes
        text = f"<str() raised {type(err).__name__}>"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class AioflowError(Exception):
    """Base class of every error raised by aioflow."""


class GraphError(AioflowError):
    """The pipeline or one of its blocks is built wrong.

    Raised when a block is decorated or instantiated, or when a pipeline is assembled or started,
    never half-way through a run. The message names the block, what was expected and what was
    found.
    """


class BlockError(AioflowError):
    """A block failed.

    Attributes:
        block: the block's name.
        item: a short summary of the item (``None`` for setup/teardown failures).
        attempt: which attempt failed (1-based; greater than 1 after retries).
        phase: ``"process"``, ``"setup"``, ``"teardown"`` or ``"source"``.

    The user's exception is ``__cause__``.
    """

    def __init__(
        self,
        block: str,
        message: str,
        *,
        item: str | None = None,
        attempt: int = 1,
        phase: str = "process",
    ) -> None:
        self.block = block
        self.item = item
        self.attempt = attempt
        self.phase = phase
        self.message = message
        super().__init__(block, message)

    def __str__(self) -> str:
        where = f"block {self.block!r}"
        if self.phase != "process":
            where += f" ({self.phase})"
        text = f"{where} failed: {self.message}"
        if self.item is not None:
            text += f" [item {self.item}"
            if self.attempt > 1:
                text += f", attempt {self.attempt}"
            text += "]"
        return text

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild_block_error,
            (self.block, self.message, self.item, self.attempt, self.phase),
        )


def _rebuild_block_error(
    block: str, message: str, item: str | None, attempt: int, phase: str
) -> BlockError:
    return BlockError(block, message, item=item, attempt=attempt, phase=phase)


class ItemDropped(AioflowError):
    """``submit()`` found no output for its item.

    Attributes:
        reason: ``"filtered"``, ``"overflow"``, ``"superseded"`` (a newer item of its stream
            replaced it, ``serve="newest"``), ``"stale"``, ``"skipped"``, ``"dead_letter"`` or
            ``"incomplete"`` (a branch member made no output).
        block: the name of the block where the item ended.
    """

    def __init__(self, reason: str, block: str) -> None:
        self.reason = reason
        self.block = block
        super().__init__(reason, block)

    def __str__(self) -> str:
        return f"item dropped by block {self.block!r}: {self.reason}"

    def __reduce__(self) -> tuple[Any, ...]:
        return (ItemDropped, (self.reason, self.block))


class ExecutorError(AioflowError):
    """An executor could not complete a call (for example, its worker process died)."""


class PipelineClosed(AioflowError):
    """The pipeline is not accepting items: it is stopping, stopped, or failed."""


class SnapshotError(AioflowError):
    """A snapshot cannot be written or read (unsupported type, corrupt file, wrong version)."""
