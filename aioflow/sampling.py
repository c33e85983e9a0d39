"""Sample-and-hold: run an expensive stage on some items of each stream, hold its latest result
for the items in between.

``af.every(detect, n=5, key=camera)`` sends every 5th item of each camera through ``detect`` and
emits one :class:`Held` per input: the item, the latest result of its key, and that result's age.
It is what DeepStream calls ``interval`` on nvinfer (there: *skip* N frames, so ``interval=4`` is
``n=5`` here), Savant ``inference_interval``, and Roboflow's InferencePipeline ``max_fps``
(``per_second=`` here).

The running side is :mod:`aioflow._engine.holding`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, overload

from .block import Block, PlainStage, Stage
from .errors import GraphError
from .graph import Branch, Graph, _label_chain, _normalize
from .wire import register

__all__ = ["Every", "Held", "every"]

A = TypeVar("A")
R = TypeVar("R")
T_co = TypeVar("T_co", covariant=True)
R_co = TypeVar("R_co", covariant=True)


@dataclass(frozen=True, slots=True)
class Held(Generic[T_co, R_co]):
    """One output of :func:`every`: an item with the latest result of its key.

    Attributes:
        item: the input item itself (the current frame).
        result: the wrapped stage's result for the latest sampled item of the same key at or
            before this one (this item's own result when it was sampled).
        age_items: items of this key since the one ``result`` was computed from (0: this one).
        age_s: seconds between that item and this one, by the stage's clock (the time each item
            entered the pipeline, or ``clock(item)``).

    >>> h = Held(item="frame 7", result=["car"], age_items=2, age_s=0.08)
    >>> h.fresh, h.result
    (False, ['car'])
    """

    item: T_co
    result: R_co
    age_items: int = 0
    age_s: float = 0.0

    @property
    def fresh(self) -> bool:
        """Whether ``result`` was computed from this very item."""
        return self.age_items == 0


# (so that a Held travels to the next segment in the distributed mode, without pickle)
register(Held, tag="aioflow.sampling:Held")


class Every(Branch[A, Held[A, R]]):
    """A sample-and-hold stage, made by :func:`every`.

    It is a :class:`Branch` of one member (the wrapped stage) that sends only the sampled items
    to it; for type checkers an ``Every[A, R]`` is a ``Stage[A, Held[A, R]]``.
    """

    # Branch's constructor is not called: its checks and messages speak of af.branch().
    def __init__(
        self,
        stage: object,
        /,
        *,
        n: int | None = None,
        per_second: float | None = None,
        key: Callable[[Any], Hashable] | None = None,
        clock: Callable[[Any], float] | None = None,
        ordered: bool = True,
        name: str | None = None,
        queue_size: int = 64,
    ) -> None:
        absorbed: list[Graph] = []
        chain = tuple(_normalize(stage, "the stage of af.every()", absorbed, "every"))
        self.members: tuple[tuple[Block | Branch, ...], ...] = (chain,)
        if name is None:
            name = f"every({_label_chain(chain)})"
        if not isinstance(name, str) or not name:
            msg = f"af.every(): name must be a non-empty str, got {name!r}"
            raise GraphError(msg)
        where = f"af.every() {name!r}"
        if (n is None) == (per_second is None):
            msg = (
                f"{where}: pass exactly one of n= (every Nth item of each key) and per_second= "
                f"(at most F items per second of each key), found n={n!r}, "
                f"per_second={per_second!r}"
            )
            raise GraphError(msg)
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            msg = f"{where}: option 'n' must be an int >= 1, got {n!r}"
            raise GraphError(msg)
        if per_second is not None and (
            isinstance(per_second, bool)
            or not isinstance(per_second, int | float)
            or not math.isfinite(per_second)
            or per_second <= 0
        ):
            msg = f"{where}: option 'per_second' must be a finite number > 0, got {per_second!r}"
            raise GraphError(msg)
        callables: tuple[tuple[str, object], ...] = (("key", key), ("clock", clock))
        for option, value in callables:
            if value is not None and not callable(value):
                msg = (
                    f"{where}: option {option!r} must be a callable of the item or None, "
                    f"got {value!r}"
                )
                raise GraphError(msg)
        flag: object = ordered  # (typed bool, but users pass anything)
        if not isinstance(flag, bool):
            msg = f"{where}: option 'ordered' must be a bool, got {ordered!r}"
            raise GraphError(msg)
        if isinstance(queue_size, bool) or not isinstance(queue_size, int) or queue_size < 1:
            msg = f"{where}: option 'queue_size' must be an int >= 1, got {queue_size!r}"
            raise GraphError(msg)
        self.name = name
        self.queue_size = queue_size
        self.n = n
        self.per_second = per_second
        self.key = key
        self.clock = clock
        self.ordered = ordered

    def __repr__(self) -> str:
        rate = f"n={self.n}" if self.n is not None else f"per_second={self.per_second}"
        return f"<every {self.name!r} {rate}>"


@overload
def every(
    stage: Stage[A, R],
    /,
    *,
    n: int | None = None,
    per_second: float | None = None,
    key: Callable[[A], Hashable] | None = None,
    clock: Callable[[A], float] | None = None,
    ordered: bool = True,
    name: str | None = None,
    queue_size: int = 64,
) -> Every[A, R]: ...


@overload
def every(
    stage: PlainStage[Any],
    /,
    *,
    n: int | None = None,
    per_second: float | None = None,
    key: Callable[[Any], Hashable] | None = None,
    clock: Callable[[Any], float] | None = None,
    ordered: bool = True,
    name: str | None = None,
    queue_size: int = 64,
) -> Every[Any, Any]: ...


def every(
    stage: Any,
    /,
    *,
    n: int | None = None,
    per_second: float | None = None,
    key: Callable[[Any], Hashable] | None = None,
    clock: Callable[[Any], float] | None = None,
    ordered: bool = True,
    name: str | None = None,
    queue_size: int = 64,
) -> Every[Any, Any]:
    """Sample-and-hold: run ``stage`` on some items of each key, hold its result for the rest.

    Per key (``key(item)``; one stream when ``key`` is None) an item is *sampled* when it is the
    key's first, when ``n`` items have passed since the last sampled one (``n=1``: every item),
    or, with ``per_second``, when at least ``1/per_second`` seconds have passed since the last
    sampled one by the clock (the time the item entered the pipeline, or ``clock(item)``, such
    as a frame's own timestamp). Only sampled items go through ``stage``, which keeps all its
    options (workers, executor, batch, on_error, ...). Pass exactly one of ``n`` and
    ``per_second``.

    Every input makes one :class:`Held` output: ``Held(item, result, age_items, age_s)``, where
    ``result`` is that of the latest sampled item of the key at or before it. An item waits for
    that result (items of one key leave in input order; with ``ordered=True``, the default, all
    items do), so no item is ever emitted without a result.

    When a sampled item makes no result (its stage failed, skipped, filtered or dropped it):
    a failure goes to whoever waits for that item, as anywhere (``run()`` raises); the items
    held behind it, and the sampled item itself when it was not failed, get the key's previous
    result (older, ``age_items`` counting from it), or, before the key has any, are dropped and
    counted (``dropped_by["no_result"]``). The schedule does not change: the key's next sample
    is the one due anyway (which items are sampled never depends on timing).
    ``stage`` must make exactly one output per sampled item; several are a ``BlockError``.

    Statistics: the stage's own records count only the sampled items; the ``every`` stage's
    record counts every input (``keys``: the keys it holds a result for).

    Raises:
        GraphError: a bad option (naming the stage), or ``stage`` is not a stage.

    >>> import aioflow as af
    >>> frames = [("a", 0), ("b", 0), ("a", 1), ("b", 1), ("a", 2)]
    >>> out = af.run(
    ...     af.Pipeline(af.every(lambda f: f"seen {f}", n=2, key=lambda f: f[0])).run(frames)
    ... )
    >>> last, fourth = out[-1], out[3]
    >>> (last.item, last.result, last.age_items)
    (('a', 2), "seen ('a', 2)", 0)
    >>> (fourth.item, fourth.result, fourth.age_items)
    (('b', 1), "seen ('b', 0)", 1)
    """
    return Every(
        stage,
        n=n,
        per_second=per_second,
        key=key,
        clock=clock,
        ordered=ordered,
        name=name,
        queue_size=queue_size,
    )
