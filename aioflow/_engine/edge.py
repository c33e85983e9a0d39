"""The edge protocol: what the runner asks of the queue in front of a block.

Edges are one protocol with two implementations. Inside a process every edge is a
:class:`~.channel.Channel`: the runner's hot loops also read its buffer directly (``_buf``,
``_getters``), which is why a channel is the only edge a runner is built with. Between
processes an edge is a Redis stream (:mod:`aioflow.transport.redis`); it meets the runner at a
segment's boundary, never inside its loops: a worker puts what it reads from a stream into the
segment's input edge through the methods below (:func:`~.segment.submit_outcome`), and writes
each item's outputs downstream once the segment has answered for it. So the runner does not know
whether the items it reads came from the caller's process or from another machine.

:class:`Transport` is the other side of that seam: what ``Pipeline.run(..., transport=)``,
``stream`` and ``open`` hand a pipeline to when its blocks run elsewhere.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterable, Iterable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

if TYPE_CHECKING:
    from ..pipeline import Pipeline

__all__ = ["Edge", "Transport"]

T = TypeVar("T")


@runtime_checkable
class Edge(Protocol[T]):
    """A bounded FIFO between two stages, with end of stream and an overflow policy."""

    capacity: int
    #: True for a leaky overflow policy ("drop_oldest", "drop_newest")
    leaky: bool
    #: items offered, dropped ones included
    received: int
    #: items the overflow policy discarded
    overflowed: int

    @property
    def closed(self) -> bool: ...

    def __len__(self) -> int: ...

    def put_nowait(self, item: T) -> bool: ...

    async def put(self, item: T) -> bool: ...

    async def wait_writable(self) -> None: ...

    def get_nowait(self) -> T: ...

    async def get(self) -> T: ...

    async def wait_readable(self) -> None: ...

    def drain_nowait(self) -> list[T]: ...

    def close(self) -> None: ...


@runtime_checkable
class Transport(Protocol):
    """Runs a pipeline whose blocks live in other processes (``pipe.run(..., transport=)``).

    Each method gets the :class:`~aioflow.Pipeline` and behaves as the pipeline's own method of
    the same name (``run`` collects what ``stream`` yields): ``open`` yields an object with
    ``submit``, ``statistics`` and ``stop``.
    """

    def stream(
        self, pipeline: Pipeline, items: Iterable[Any] | AsyncIterable[Any]
    ) -> AsyncGenerator[Any, None]:
        """The outputs, in input order."""
        ...

    def open(self, pipeline: Pipeline) -> AbstractAsyncContextManager[Any]: ...
