"""The shape of a pipeline: a chain of stages, where a stage is a block or a branch.

:class:`Graph` turns what the user passed (blocks, plain callables, nested pipelines, branches)
into a flat, validated chain, and raises :class:`GraphError` for everything that can be known
before running: an empty pipeline, something that is not a block, duplicate names, one block
instance used twice, a :class:`Block` instance that belongs to another pipeline.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, overload

from ._engine.shipping import check_picklable
from .block import Block, FunctionBlock, In, Out, PlainStage, Stage, block
from .errors import GraphError

if TYPE_CHECKING:
    from .pipeline import Pipeline

__all__ = ["Branch", "Graph", "branch", "iter_blocks"]

A = TypeVar("A")
C = TypeVar("C")
B1 = TypeVar("B1")
B2 = TypeVar("B2")
B3 = TypeVar("B3")
B4 = TypeVar("B4")
B5 = TypeVar("B5")
B6 = TypeVar("B6")


def _describe(obj: object) -> str:
    text = repr(obj)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(obj).__name__})"


class Graph(Stage[In, Out]):
    """A validated chain of stages. Base of :class:`~aioflow.Pipeline`."""

    _stages: tuple[Block | Branch, ...]
    name: str

    def __init__(self, *stages: object, name: str = "pipeline") -> None:
        if not isinstance(name, str) or not name:
            msg = f"pipeline name must be a non-empty str, got {name!r}"
            raise GraphError(msg)
        self.name = name
        if not stages:
            msg = (
                f"pipeline {name!r} is empty: pass at least one block, for example "
                "af.Pipeline(decode, detect)"
            )
            raise GraphError(msg)
        flat: list[Block | Branch] = []
        absorbed: list[Graph] = []
        for position, stage in enumerate(stages, 1):
            flat.extend(
                _normalize(
                    stage, f"stage {position} of pipeline {name!r}", absorbed, f"stage{position}"
                )
            )
        self._stages = tuple(flat)
        _validate(self._stages, name)
        self._claim(absorbed)

    def _claim(self, absorbed: Sequence[Graph]) -> None:
        me = weakref.ref(self)
        for blk in iter_blocks(self._stages):
            if isinstance(blk, FunctionBlock):
                continue  # stateless: a function may serve in several pipelines
            owner_ref = blk._aioflow_owner
            owner = owner_ref() if owner_ref is not None else None
            if owner is not None and owner is not self and not any(owner is g for g in absorbed):
                msg = (
                    f"block {blk.options.name!r} ({type(blk).__name__} instance) already "
                    f"belongs to pipeline {owner.name!r}; a Block instance keeps state, so it "
                    f"belongs to one pipeline: create another instance for pipeline {self.name!r}"
                )
                raise GraphError(msg)
        for blk in iter_blocks(self._stages):
            if not isinstance(blk, FunctionBlock):
                blk._aioflow_owner = me

    @property
    def stages(self) -> tuple[Block | Branch, ...]:
        """The top-level stages, nested pipelines flattened."""
        return self._stages

    def blocks(self) -> list[Block]:
        """Every block, those inside branches included, in pipeline order."""
        return list(iter_blocks(self._stages))

    def describe(self) -> str:
        """A one-line text picture of the pipeline."""
        return " >> ".join(_label(s) for s in self._stages)


def _label(stage: Block | Branch) -> str:
    if isinstance(stage, Branch):
        inner = " | ".join(" >> ".join(_label(s) for s in member) for member in stage.members)
        return f"{stage.name}[{inner}]"
    return stage.options.name


def _normalize(
    obj: object, where: str, absorbed: list[Graph], place: str = ""
) -> list[Block | Branch]:
    if isinstance(obj, Graph):
        absorbed.append(obj)
        return list(obj._stages)
    if isinstance(obj, Block | Branch):
        return [obj]
    if isinstance(obj, type) and issubclass(obj, Block):
        msg = f"{where} is the class {obj.__name__}; pass an instance: {obj.__name__}()"
        raise GraphError(msg)
    if callable(obj):
        name = getattr(obj, "__name__", None)
        if name == "<lambda>":
            # Unnamed lambdas would all be "<lambda>": name each after its place instead.
            return [block(name=f"<lambda>:{place}")(obj)]
        return [block(obj)]
    msg = (
        f"{where} is {_describe(obj)}; expected a block (an @af.block function or an af.Block "
        "instance), a plain callable, af.branch(...) or a Pipeline"
    )
    raise GraphError(msg)


def iter_blocks(stages: Sequence[Block | Branch]) -> Iterator[Block]:
    for stage in stages:
        if isinstance(stage, Branch):
            for member in stage.members:
                yield from iter_blocks(member)
        else:
            yield stage


def _iter_named(stages: Sequence[Block | Branch]) -> Iterator[tuple[str, object]]:
    for stage in stages:
        if isinstance(stage, Branch):
            yield stage.name, stage
            for member in stage.members:
                yield from _iter_named(member)
        else:
            yield stage.options.name, stage


def _validate(stages: Sequence[Block | Branch], pipeline: str) -> None:
    seen_names: dict[str, object] = {}
    seen_ids: dict[int, str] = {}
    for name, stage in _iter_named(stages):
        if id(stage) in seen_ids:
            msg = (
                f"block {name!r} appears twice in pipeline {pipeline!r}; a block runs in one "
                "place. For a second copy of a function block use "
                f"{name}.with_options(name='{name}_2'); for an af.Block make another instance"
            )
            raise GraphError(msg)
        seen_ids[id(stage)] = name
        if name in seen_names:
            msg = (
                f"two blocks are named {name!r} in pipeline {pipeline!r}; names must be unique "
                "(they label errors, logs and statistics): pass name='...' to one of them"
            )
            raise GraphError(msg)
        seen_names[name] = stage
        if isinstance(stage, Block) and stage.options.executor == "process":
            # Checked here rather than when decorated: a module-level function is bound to its
            # name only after its decorator ran.
            check_picklable(name, stage)


class Branch(Stage[In, Out]):
    """Fan-out / fan-in: every member gets every item; one tuple per input comes out.

    Made by :func:`branch`. For type checkers ``Branch[In, tuple[B1, B2, ...]]``: the members'
    common input, and the tuple of their outputs.
    """

    def __init__(
        self,
        *members: object,
        name: str | None = None,
        queue_size: int = 64,
    ) -> None:
        if not members:
            msg = "af.branch() needs at least one member, for example af.branch(detect, classify)"
            raise GraphError(msg)
        chains: list[tuple[Block | Branch, ...]] = []
        for position, member in enumerate(members, 1):
            absorbed: list[Graph] = []
            where = f"member {position} of af.branch()"
            chains.append(tuple(_normalize(member, where, absorbed, f"member{position}")))
        self.members: tuple[tuple[Block | Branch, ...], ...] = tuple(chains)
        if name is None:
            name = "branch(" + ",".join(_label_chain(c) for c in self.members) + ")"
        if not isinstance(name, str) or not name:
            msg = f"af.branch(): name must be a non-empty str, got {name!r}"
            raise GraphError(msg)
        if isinstance(queue_size, bool) or not isinstance(queue_size, int) or queue_size < 1:
            msg = f"branch {name!r}: option 'queue_size' must be an int >= 1, got {queue_size!r}"
            raise GraphError(msg)
        self.name = name
        self.queue_size = queue_size

    @overload
    def __rshift__(self, other: Stage[Out, C]) -> Pipeline[In, C]: ...
    @overload
    def __rshift__(self, other: PlainStage[Out]) -> Pipeline[In, Any]: ...
    def __rshift__(self, other: object) -> Pipeline[Any, Any]:
        from .pipeline import compose

        return compose(self, other)

    def __rrshift__(self, other: PlainStage[Any]) -> Pipeline[Any, Out]:
        from .pipeline import compose

        return compose(other, self)

    def __repr__(self) -> str:
        return f"<branch {self.name!r} of {len(self.members)}>"


def _label_chain(chain: Sequence[Block | Branch]) -> str:
    return ">>".join(s.name if isinstance(s, Branch) else s.options.name for s in chain)


@overload
def branch(
    m1: Stage[A, B1], /, *, name: str | None = None, queue_size: int = 64
) -> Branch[A, tuple[B1]]: ...


@overload
def branch(
    m1: Stage[A, B1], m2: Stage[A, B2], /, *, name: str | None = None, queue_size: int = 64
) -> Branch[A, tuple[B1, B2]]: ...


@overload
def branch(
    m1: Stage[A, B1],
    m2: Stage[A, B2],
    m3: Stage[A, B3],
    /,
    *,
    name: str | None = None,
    queue_size: int = 64,
) -> Branch[A, tuple[B1, B2, B3]]: ...


@overload
def branch(
    m1: Stage[A, B1],
    m2: Stage[A, B2],
    m3: Stage[A, B3],
    m4: Stage[A, B4],
    /,
    *,
    name: str | None = None,
    queue_size: int = 64,
) -> Branch[A, tuple[B1, B2, B3, B4]]: ...


@overload
def branch(
    m1: Stage[A, B1],
    m2: Stage[A, B2],
    m3: Stage[A, B3],
    m4: Stage[A, B4],
    m5: Stage[A, B5],
    /,
    *,
    name: str | None = None,
    queue_size: int = 64,
) -> Branch[A, tuple[B1, B2, B3, B4, B5]]: ...


@overload
def branch(
    m1: Stage[A, B1],
    m2: Stage[A, B2],
    m3: Stage[A, B3],
    m4: Stage[A, B4],
    m5: Stage[A, B5],
    m6: Stage[A, B6],
    /,
    *,
    name: str | None = None,
    queue_size: int = 64,
) -> Branch[A, tuple[B1, B2, B3, B4, B5, B6]]: ...


@overload
def branch(
    m1: PlainStage[Any],
    /,
    *members: Stage[Any, Any] | PlainStage[Any],
    name: str | None = None,
    queue_size: int = 64,
) -> Branch[Any, tuple[Any, ...]]: ...


@overload
def branch(
    m1: Stage[Any, Any],
    m2: PlainStage[Any],
    /,
    *members: Stage[Any, Any] | PlainStage[Any],
    name: str | None = None,
    queue_size: int = 64,
) -> Branch[Any, tuple[Any, ...]]: ...


@overload
def branch(
    m1: Stage[Any, Any],
    m2: Stage[Any, Any],
    m3: PlainStage[Any],
    /,
    *members: Stage[Any, Any] | PlainStage[Any],
    name: str | None = None,
    queue_size: int = 64,
) -> Branch[Any, tuple[Any, ...]]: ...


@overload
def branch(
    m1: Stage[Any, Any],
    m2: Stage[Any, Any],
    m3: Stage[Any, Any],
    m4: PlainStage[Any],
    /,
    *members: Stage[Any, Any] | PlainStage[Any],
    name: str | None = None,
    queue_size: int = 64,
) -> Branch[Any, tuple[Any, ...]]: ...


@overload
def branch(
    m1: Stage[Any, Any],
    m2: Stage[Any, Any],
    m3: Stage[Any, Any],
    m4: Stage[Any, Any],
    m5: PlainStage[Any],
    /,
    *members: Stage[Any, Any] | PlainStage[Any],
    name: str | None = None,
    queue_size: int = 64,
) -> Branch[Any, tuple[Any, ...]]: ...


@overload
def branch(
    m1: Stage[Any, Any],
    m2: Stage[Any, Any],
    m3: Stage[Any, Any],
    m4: Stage[Any, Any],
    m5: Stage[Any, Any],
    m6: PlainStage[Any],
    /,
    *members: Stage[Any, Any] | PlainStage[Any],
    name: str | None = None,
    queue_size: int = 64,
) -> Branch[Any, tuple[Any, ...]]: ...


@overload
def branch(
    m1: Stage[Any, Any],
    m2: Stage[Any, Any],
    m3: Stage[Any, Any],
    m4: Stage[Any, Any],
    m5: Stage[Any, Any],
    m6: Stage[Any, Any],
    m7: PlainStage[Any],
    /,
    *members: Stage[Any, Any] | PlainStage[Any],
    name: str | None = None,
    queue_size: int = 64,
) -> Branch[Any, tuple[Any, ...]]: ...


@overload
def branch(
    m1: Stage[Any, Any],
    m2: Stage[Any, Any],
    m3: Stage[Any, Any],
    m4: Stage[Any, Any],
    m5: Stage[Any, Any],
    m6: Stage[Any, Any],
    m7: Stage[Any, Any],
    /,
    *members: Stage[Any, Any] | PlainStage[Any],
    name: str | None = None,
    queue_size: int = 64,
) -> Branch[Any, tuple[Any, ...]]: ...


def branch(*members: Any, name: str | None = None, queue_size: int = 64) -> Branch[Any, Any]:
    """Send each item to every member and emit one tuple per input.

    A member is a block, a callable or a Pipeline. The tuple holds one value per member, in
    argument order, and tuples leave in input order. A member must make exactly one output per
    input: when a member makes none (it filtered, dropped or skipped the item) the tuple is
    dropped and counted in the branch's statistics (``dropped_by["incomplete"]``); several
    outputs are a :class:`BlockError`.

    Typed: members ``A -> B1``, ``A -> B2`` make a ``Branch[A, tuple[B1, B2]]`` (typed overloads
    for up to six members); a plain callable among them makes it ``Branch[Any, tuple[Any, ...]]``.

    >>> import aioflow as af
    >>> b = af.branch(lambda x: x + 1, lambda x: x * 2, name="both")
    >>> b.name
    'both'
    """
    return Branch(*members, name=name, queue_size=queue_size)
