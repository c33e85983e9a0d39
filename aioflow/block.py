"""Blocks: the steps of a pipeline, and their options.

A block is made either with the :func:`block` decorator (from a coroutine function, an async
generator, a plain function or a generator) or by subclassing :class:`Block` (stateful blocks with
``setup`` / ``process`` / ``teardown``). Both carry a validated, frozen :class:`BlockOptions`.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import math
import random
from collections.abc import (
    AsyncIterator,
    Callable,
    Coroutine,
    Hashable,
    Iterable,
    Iterator,
    Sequence,
)
from dataclasses import dataclass, fields, replace
from types import CodeType
from typing import (
    TYPE_CHECKING,
    Any,
    Concatenate,
    Generic,
    Literal,
    ParamSpec,
    Protocol,
    TypeAlias,
    TypeVar,
    overload,
)

from .batching import Batch
from .errors import BlockError, GraphError

if TYPE_CHECKING:
    from .pipeline import Pipeline

__all__ = [
    "Block",
    "BlockOptions",
    "ExecutorName",
    "FunctionBlock",
    "Kind",
    "OnError",
    "PlainStage",
    "Retry",
    "ServeName",
    "Stage",
    "block",
]

P = ParamSpec("P")
R = TypeVar("R")
A = TypeVar("A")
B = TypeVar("B")
C = TypeVar("C")
T_contra = TypeVar("T_contra", contravariant=True)

# A stage's item types: ``In`` what it takes, ``Out`` what it emits. They default to Any (PEP 696)
# so that an untyped ``class Tracker(af.Block)`` stays valid under ``mypy --strict``; the
# defaults exist for type checkers only (Python 3.11's TypeVar has none).
if TYPE_CHECKING:
    import typing_extensions

    In = typing_extensions.TypeVar("In", contravariant=True, default=Any)
    Out = typing_extensions.TypeVar("Out", covariant=True, default=Any)
else:
    In = TypeVar("In", contravariant=True)
    Out = TypeVar("Out", covariant=True)

ExecutorName = Literal["async", "thread", "process"]
Kind = Literal["coroutine", "asyncgen", "function", "generator"]
OverflowName = Literal["block", "drop_oldest", "drop_newest"]
ServeName = Literal["oldest", "newest"]


@dataclass(frozen=True, slots=True)
class Retry:
    """Retry a failing item.

    Args:
        attempts: how many calls in all, the first included (>= 1).
        backoff: the delay in seconds before the first retry; it doubles after each attempt.
        max_backoff: the longest delay.
        jitter: spread each delay uniformly over [delay/2, delay] so that items failing together
            do not retry in lockstep.

    After the last attempt the item fails as with ``on_error="raise"``. A generator block is
    retried only if it failed before its first output.

    >>> Retry(attempts=3, backoff=0.1, jitter=False).delay(2)
    0.2
    """

    attempts: int = 3
    backoff: float = 0.1
    max_backoff: float = 30.0
    jitter: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int):
            msg = f"Retry: attempts must be an int >= 1, got {self.attempts!r}"
            raise GraphError(msg)
        if self.attempts < 1:
            msg = (
                "Retry: attempts must be an int >= 1 (it counts the first call), "
                f"got {self.attempts}"
            )
            raise GraphError(msg)
        for label, value in (("backoff", self.backoff), ("max_backoff", self.max_backoff)):
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or value < 0
            ):
                msg = f"Retry: {label} must be a number of seconds >= 0, got {value!r}"
                raise GraphError(msg)

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        doublings = min(attempt - 1, 64)  # past that the cap has long been reached
        base = min(self.backoff * 2.0**doublings, self.max_backoff)
        if self.jitter:
            return base * (0.5 + random.random() / 2)
        return base


OnError = Literal["raise", "skip"] | Retry


class _DefaultSize(int):
    """The default ``queue_size`` of :func:`block` (64), told apart from a 64 the user chose:
    a Redis edge has a deeper default (:data:`aioflow.transport.redis.REDIS_QUEUE_SIZE`)."""

    __slots__ = ()


_DEFAULT_QUEUE_SIZE = _DefaultSize(64)

_EXECUTORS = ("async", "thread", "process")
_OVERFLOWS = ("block", "drop_oldest", "drop_newest")
_SERVES = ("oldest", "newest")


@dataclass(frozen=True, slots=True)
class BlockOptions:
    """The validated options of one block. See the docs page "Blocks" for each option."""

    name: str
    workers: int = 1
    executor: ExecutorName | None = None
    ordered: bool = True
    queue_size: int = 64
    overflow: OverflowName = "block"
    max_age: float | None = None
    on_error: OnError = "raise"
    batch: Batch | None = None
    key: Callable[[Any], Hashable] | None = None
    timeout: float | None = None
    state: Callable[[], Any] | None = None
    evict_after: float | None = None
    dead_letter: Callable[[Any, BlockError], Any] | None = None
    zero_copy: bool = False
    fair: bool | Callable[[Any], Hashable] | None = None
    per_key: int | None = None
    serve: ServeName = "oldest"

    def __post_init__(self) -> None:
        name = self.name
        if not isinstance(name, str) or not name:
            msg = f"block option 'name' must be a non-empty str, got {name!r}"
            raise GraphError(msg)

        def bad(option: str, expected: str, found: object) -> GraphError:
            return GraphError(
                f"block {name!r}: option {option!r} must be {expected}, got {found!r}"
            )

        for option in ("workers", "queue_size"):
            value = getattr(self, option)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise bad(option, "an int >= 1", value)
        if self.executor is not None and self.executor not in _EXECUTORS:
            raise bad("executor", "one of 'async', 'thread', 'process'", self.executor)
        if not isinstance(self.ordered, bool):
            raise bad("ordered", "True or False", self.ordered)
        if self.overflow not in _OVERFLOWS:
            raise bad("overflow", "one of 'block', 'drop_oldest', 'drop_newest'", self.overflow)
        for option in ("max_age", "timeout", "evict_after"):
            value = getattr(self, option)
            if value is not None and (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or value <= 0
            ):
                raise bad(option, "None or a number of seconds > 0", value)
        if not (self.on_error in ("raise", "skip") or isinstance(self.on_error, Retry)):
            raise bad("on_error", "'raise', 'skip' or af.Retry(attempts, backoff)", self.on_error)
        if self.batch is not None and not isinstance(self.batch, Batch):
            raise bad("batch", "None or af.Batch(max_size, max_wait)", self.batch)
        if self.key is not None and not callable(self.key):
            raise bad("key", "None or a callable item -> key", self.key)
        if self.dead_letter is not None and not callable(self.dead_letter):
            raise bad("dead_letter", "None or a callable (item, error)", self.dead_letter)
        if not isinstance(self.zero_copy, bool):
            raise bad("zero_copy", "True or False", self.zero_copy)
        if self.zero_copy and self.executor != "process":
            found = (
                "no executor (the default: a thread or the event loop)"
                if self.executor is None
                else f"executor={self.executor!r}"
            )
            msg = (
                f"block {name!r}: option 'zero_copy' needs executor='process' (it lends a worker "
                "process's results from shared memory instead of copying them); found "
                f"{found}, whose results are never copied"
            )
            raise GraphError(msg)
        if self.state is not None and not callable(self.state):
            raise bad("state", "None or a callable that makes a new state", self.state)
        if self.key is None:
            for option in ("state", "evict_after"):
                if getattr(self, option) is not None:
                    msg = (
                        f"block {name!r}: option {option!r} needs key=...: state is kept per "
                        "key (per camera, per stream); found key=None"
                    )
                    raise GraphError(msg)
        if self.batch is not None and self.key is not None:
            msg = (
                f"block {name!r}: options 'batch' and 'key' cannot be combined: a keyed block "
                "processes one item of a key at a time; batch in a block before or after it"
            )
            raise GraphError(msg)
        self._check_streams(bad)

    def _check_streams(self, bad: Callable[[str, str, object], GraphError]) -> None:
        """``fair``, ``per_key``, ``serve`` and ``Batch(max_per_key=)``: the options that share
        the input by stream."""
        name = self.name
        fair = self.fair
        if not (fair is None or isinstance(fair, bool) or callable(fair)):
            raise bad("fair", "None, True (use key=) or a callable item -> stream key", fair)
        per_key = self.per_key
        if per_key is not None and (
            isinstance(per_key, bool) or not isinstance(per_key, int) or per_key < 1
        ):
            raise bad("per_key", "None or an int >= 1", per_key)
        if self.serve not in _SERVES:
            raise bad("serve", "'oldest' or 'newest'", self.serve)
        if fair is True and self.key is None:
            msg = (
                f"block {name!r}: fair=True shares the input by the block's key=, found "
                "key=None; give the stream of an item instead: fair=lambda item: item.stream"
            )
            raise GraphError(msg)
        if per_key is not None and self.stream_key() is None:
            msg = (
                f"block {name!r}: option 'per_key' needs the stream of each item: "
                "fair=lambda item: item.stream (or key= on a keyed block); found neither"
            )
            raise GraphError(msg)
        if per_key is not None and per_key > self.queue_size:
            msg = (
                f"block {name!r}: option 'per_key' ({per_key}) caps one stream's share of the "
                f"queue, so it must be <= queue_size ({self.queue_size})"
            )
            raise GraphError(msg)
        capped = self.batch is not None and self.batch.max_per_key is not None
        if capped:
            if not callable(fair):
                msg = (
                    f"block {name!r}: option 'batch' has max_per_key, which needs the stream of "
                    f"each item: fair=lambda item: item.stream; found fair={fair!r}"
                )
                raise GraphError(msg)
            if self.ordered:
                msg = (
                    f"block {name!r}: option 'batch' has max_per_key: an item of a quiet stream "
                    "can then leave before an older item of a busy stream that waits for the "
                    "next batch, so outputs cannot keep global input order; set ordered=False "
                    "(each stream keeps its order)"
                )
                raise GraphError(msg)
        if self.serve == "newest":
            if self.overflow != "drop_oldest":
                msg = (
                    f"block {name!r}: serve='newest' drops the older items of a stream when a "
                    "newer one comes, so it needs overflow='drop_oldest' (a leaky edge); found "
                    f"overflow={self.overflow!r}"
                )
                raise GraphError(msg)
            if per_key is not None:
                msg = (
                    f"block {name!r}: serve='newest' keeps one item per stream already; "
                    f"per_key={per_key} does not apply"
                )
                raise GraphError(msg)
        elif self.overflow == "block":
            if per_key is not None:
                msg = (
                    f"block {name!r}: option 'per_key' drops a stream's items over its share, "
                    "so it needs a leaky edge: overflow='drop_oldest' (or 'drop_newest'); "
                    "found overflow='block'"
                )
                raise GraphError(msg)
            if fair and not capped:
                msg = (
                    f"block {name!r}: option 'fair' decides which stream loses an item when the "
                    "queue is full, and with overflow='block' nothing is dropped: use "
                    "overflow='drop_oldest' (or batch=af.Batch(..., max_per_key=n) to cap a "
                    "stream's items per batch)"
                )
                raise GraphError(msg)

    def stream_key(self) -> Callable[[Any], Hashable] | None:
        """The stream of an item on this block's input, if its input is shared by stream: the
        ``fair`` callable, else the block's ``key`` (when ``fair=True``, ``per_key`` or
        ``serve="newest"`` asks for streams), else None."""
        fair = self.fair
        if callable(fair) and not isinstance(fair, bool):
            return fair
        if fair is True or self.per_key is not None or self.serve == "newest":
            return self.key
        return None

    def with_changes(self, **changes: Any) -> BlockOptions:
        return replace(self, **changes)


OPTION_NAMES: tuple[str, ...] = tuple(f.name for f in fields(BlockOptions))

# Options people guess from other libraries, and what aioflow calls them.
_GUESSES: dict[str, str] = {
    "retry": "on_error=af.Retry(attempts=3, backoff=0.1)",
    "retries": "on_error=af.Retry(attempts=3, backoff=0.1)",
    "max_retries": "on_error=af.Retry(attempts=3, backoff=0.1)",
    "attempts": "on_error=af.Retry(attempts=3, backoff=0.1)",
    "concurrency": "workers=4",
    "max_workers": "workers=4",
    "num_workers": "workers=4",
    "parallelism": "workers=4",
    "batch_size": "batch=af.Batch(max_size=16, max_wait=0.005)",
    "max_batch_size": "batch=af.Batch(max_size=16, max_wait=0.005)",
    "maxsize": "queue_size=64",
    "buffer": "queue_size=64",
    "buffer_size": "queue_size=64",
    "capacity": "queue_size=64",
    "ttl": "max_age=0.5",
    "deadline": "max_age=0.5",
    "latest": 'serve="newest"',
    "latest_only": 'serve="newest"',
    "keep_latest": 'serve="newest"',
    "conflate": 'serve="newest"',
    "lifo": 'serve="newest"',
    "newest_first": 'serve="newest"',
    "fairness": "fair=lambda item: item.camera",
    "per_stream": "per_key=2",
    "max_per_stream": "per_key=2",
    "max_per_key": "per_key=2 (or batch=af.Batch(16, 0.005, max_per_key=2))",
    "max_same_source_frames": "batch=af.Batch(16, 0.005, max_per_key=2)",
    "by": "key=lambda item: item.camera",
    "group_by": "key=lambda item: item.camera",
    "partition": "key=lambda item: item.camera",
    "zerocopy": "zero_copy=True",
    "shared_memory": "zero_copy=True",
    "copy": "zero_copy=True",
}


def unknown_options_error(name: str, unknown: Iterable[str]) -> GraphError:
    """The error for options a block does not have, each with the closest valid one."""
    parts = []
    for option in sorted(unknown):
        if option in _GUESSES:
            parts.append(f"{option!r} (did you mean {_GUESSES[option]}?)")
            continue
        close = difflib.get_close_matches(option, OPTION_NAMES, n=1, cutoff=0.6)
        if close:
            parts.append(f"{option!r} (did you mean {close[0]}=...?)")
        else:
            parts.append(repr(option))
    msg = (
        f"block {name!r}: unknown option {', '.join(parts)}; the options are "
        f"{', '.join(OPTION_NAMES)}"
    )
    return GraphError(msg)


def kind_of(fn: Callable[..., Any]) -> Kind:
    """What sort of callable ``fn`` is: how the runner must call it."""
    target: Any = fn
    if not (inspect.isfunction(target) or inspect.ismethod(target)) and not isinstance(
        target, functools.partial
    ):
        call = getattr(type(target), "__call__", None)  # noqa: B004 - we want the method
        if call is not None and (inspect.isfunction(call) or inspect.ismethod(call)):
            target = call
    if inspect.isasyncgenfunction(target):
        return "asyncgen"
    if inspect.iscoroutinefunction(target):
        return "coroutine"
    if inspect.isgeneratorfunction(target):
        return "generator"
    return "function"


def _check_kind(opts: BlockOptions, kind: Kind) -> None:
    if opts.batch is not None and kind in ("asyncgen", "generator"):
        found = "an async generator" if kind == "asyncgen" else "a generator"
        msg = (
            f"block {opts.name!r}: option 'batch' needs a function that takes a list and returns "
            f"a list of equal length; found {found}"
        )
        raise GraphError(msg)


def _resolve_executor(
    name: str, kind: Kind, executor: ExecutorName | None, *, subclass: bool = False
) -> ExecutorName:
    is_async = kind in ("coroutine", "asyncgen")
    if executor == "process" and subclass:
        return executor  # a Block's async or plain methods run on a loop in each worker
    if executor is None:
        return "async" if is_async else "thread"
    if executor == "async" and not is_async:
        msg = (
            f"block {name!r}: executor='async' needs a coroutine function or async generator, "
            f"found a plain {'generator' if kind == 'generator' else 'function'}; a plain call "
            "would block the event loop: use executor='thread' (the default) or make it async"
        )
        raise GraphError(msg)
    if executor in ("thread", "process") and is_async:
        hint = (
            "for async code in worker processes, subclass af.Block"
            if executor == "process"
            else "async blocks run on the event loop"
        )
        msg = (
            f"block {name!r}: executor={executor!r} needs a plain function, found "
            f"{'an async generator' if kind == 'asyncgen' else 'a coroutine function'}; "
            f"{hint}: drop the executor option or make it a plain def"
        )
        raise GraphError(msg)
    return executor


class Stage(Generic[In, Out]):
    """What a pipeline is made of: a block, an ``af.branch(...)`` or a pipeline, typed by the
    items it takes (``In``) and emits (``Out``). The types are for type checkers only:
    ``a >> b`` is a type error when ``a``'s ``Out`` is not ``b``'s ``In``."""

    __slots__ = ()


class _Function(Protocol[T_contra]):
    """A plain function or lambda used as a stage (wrapped with default options): it takes the
    item; its output is typed Any, because an ``async def`` is awaited and a generator is
    iterated. (``__code__`` is what tells it from a block, which is callable too.)"""

    @property
    def __code__(self) -> CodeType: ...

    def __call__(self, item: T_contra, /) -> Any: ...


# A plain callable a pipeline accepts as a stage: its output is typed Any.
PlainStage: TypeAlias = _Function[T_contra] | functools.partial[Any]


class Block(Stage[In, Out]):
    """Base class of stateful blocks.

    Override ``process`` (a coroutine, async generator, plain function or generator) and, where
    needed, ``setup`` (runs once before the first item: load a model, open a connection) and
    ``teardown`` (runs exactly once after the last item, also after an error or cancellation,
    whenever ``setup`` completed).

    Options are keyword arguments of the constructor or class attributes::

        class Tracker(af.Block):
            workers = 1

            async def setup(self) -> None:
                self.tracks = {}

            async def process(self, item):
                ...

        Tracker(queue_size=8)

    A subclass with its own ``__init__`` calls ``super().__init__(**options)``.
    """

    _aioflow_options: BlockOptions
    _aioflow_kind: Kind
    _aioflow_executor: ExecutorName
    _aioflow_stateful: bool = False
    _aioflow_sized: bool = True
    _aioflow_owner: Any = None
    _aioflow_running: Any = None

    def __init__(self, **options: Any) -> None:
        self._configure(options)

    def _configure(self, options: dict[str, Any]) -> None:
        cls = type(self)
        unknown = set(options) - set(OPTION_NAMES)
        if unknown:
            raise unknown_options_error(str(options.get("name", cls.__name__)), unknown)
        merged: dict[str, Any] = {}
        for klass in reversed(cls.__mro__):
            if klass in (Block, FunctionBlock, Stage, Generic, object):
                continue
            for option in OPTION_NAMES:
                if option not in klass.__dict__:
                    continue
                value = klass.__dict__[option]
                if isinstance(value, staticmethod):
                    merged[option] = value.__func__
                elif option in ("key", "state", "fair") and inspect.isfunction(value):
                    # `key = lambda item: ...` in a class body: a function of the item, unless
                    # it is written as a method `def key(self, item)`.
                    arity = _positional_arity(value)
                    merged[option] = getattr(self, option) if arity >= 2 else value
                elif value is not None and not callable(getattr(value, "__get__", None)):
                    merged[option] = value
        merged.update(options)
        merged.setdefault("name", cls.__name__)
        if getattr(self.process, "__func__", None) is Block.process:
            msg = (
                f"block {merged['name']!r}: {cls.__name__} does not define process(); an "
                f"af.Block subclass overrides it: `async def process(self, item): return ...` "
                "(or a plain def for blocking code, or a generator for 0..n outputs per item)"
            )
            raise GraphError(msg)
        kind = kind_of(self.process)
        opts = BlockOptions(**merged)
        if opts.key is None and _required_positional(self.process) >= 2:
            msg = (
                f"block {opts.name!r}: {cls.__name__}.process() takes (item, state) but the "
                "block has no key=: state is kept per key; pass "
                f"{cls.__name__}(key=lambda item: ...) (or set `key` in the class), or give "
                "process() one argument"
            )
            raise GraphError(msg)
        _check_kind(opts, kind)
        executor = _resolve_executor(opts.name, kind, opts.executor, subclass=True)
        if opts.key is not None and executor == "process":
            msg = (
                f"block {opts.name!r}: key=... with executor='process' is not supported: items "
                "of one key may reach different worker processes, so per-key state would split; "
                "use executor='thread' for a keyed block"
            )
            raise GraphError(msg)
        self._aioflow_kind = kind
        self._aioflow_executor = executor
        self._aioflow_options = opts.with_changes(executor=executor)
        self._aioflow_stateful = opts.key is not None and _positional_arity(self.process) >= 2
        #: whether the user chose ``queue_size`` (a Redis edge has a deeper default otherwise)
        self._aioflow_sized = "queue_size" in merged

    @property
    def options(self) -> BlockOptions:
        """This block's validated options."""
        try:
            return self._aioflow_options
        except AttributeError:  # a subclass __init__ that did not call super().__init__()
            self._configure({})
            return self._aioflow_options

    @property
    def block_name(self) -> str:
        """The block's name: unique in its pipeline, used in errors, logs and metrics."""
        return self.options.name

    def setup(self, *args: Any, **kwargs: Any) -> Any:
        """Prepare (load models, open connections). Runs once, before the first item.

        Override as ``async def setup(self)`` (runs on the event loop) or plain
        ``def setup(self)`` (runs in the block's thread pool: a slow model load does not block
        the loop). The ``*args`` signature lets either override type-check.
        """
        return None

    def process(self, *args: Any, **kwargs: Any) -> Any:
        """Process one item and return its output: override as ``process(self, item)``, or
        ``process(self, item, state)`` for a keyed block with per-key state.

        Override it as ``async def`` (runs on the event loop), plain ``def`` (runs in the
        block's thread pool), or a generator of either kind (0..n outputs per item). (The
        ``*args`` signature lets any of these overrides type-check.)
        """
        msg = f"{type(self).__name__} must override process()"
        raise NotImplementedError(msg)

    def teardown(self, *args: Any, **kwargs: Any) -> Any:
        """Release what ``setup`` took. Runs once after the last item, however the run ends.

        ``async def`` or plain ``def``, as ``setup``.
        """
        return None

    def create_state(self, key: Hashable) -> Any:
        """With ``key=``: make the state of a key seen for the first time (default: ``{}``).

        When ``process`` takes two arguments, ``process(item, state)`` gets this state.
        """
        return {}

    async def evict(self, key: Hashable, state: Any) -> Iterable[Any] | None:
        """With ``key=``: a key's state is being dropped, because it was idle for
        ``evict_after`` seconds, because the source said the key ended
        (:class:`~aioflow.EndOfKey`, such as a removed video stream) or because the stream
        ended. Return the outputs to emit (a tracker flushes the tracks it holds), or None."""
        return None

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
        opts = self.options
        return f"<{type(self).__name__} block {opts.name!r} {opts.executor} workers={opts.workers}>"


class FunctionBlock(Block[In, Out], Generic[P, R, In, Out]):
    """A block made from a function by :func:`block`.

    Calling it calls the function, so a decorated function stays usable (and testable) as plain
    code. For type checkers it is ``FunctionBlock[P, R, In, Out]``: ``P`` and ``R`` the
    function's parameters and return type (what a direct call takes and returns), ``In`` and
    ``Out`` the items the block takes and emits (``async def f(x: A) -> B``: ``A`` and ``B``).
    Annotate a block as ``af.Block[A, B]`` where only its items matter.
    """

    fn: Callable[P, R]
    __name__: str
    __qualname__: str
    __wrapped__: Callable[P, R]

    def __init__(self, fn: Callable[P, R], **options: Any) -> None:
        target: object = fn  # checked at run time too: users call this without a type checker
        if not callable(target):
            msg = f"af.block() needs a callable, got {fn!r} ({type(fn).__name__})"
            raise GraphError(msg)
        self.fn = fn
        functools.update_wrapper(self, fn)
        options.setdefault("name", getattr(fn, "__name__", None) or type(fn).__name__)
        name = options["name"]
        unknown = set(options) - set(OPTION_NAMES)
        if unknown:
            raise unknown_options_error(str(name), unknown)
        kind = kind_of(fn)
        opts = BlockOptions(**options)
        _check_kind(opts, kind)
        _check_state_arguments(opts, fn)
        executor = _resolve_executor(opts.name, kind, opts.executor)
        if opts.key is not None and executor == "process":
            msg = (
                f"block {opts.name!r}: key=... with executor='process' is not supported: items "
                "of one key may reach different worker processes, so per-key state would split; "
                "use executor='thread' for a keyed block"
            )
            raise GraphError(msg)
        self._aioflow_kind = kind
        self._aioflow_executor = executor
        self._aioflow_options = opts.with_changes(executor=executor)
        self._aioflow_stateful = opts.state is not None
        self._aioflow_sized = "queue_size" in options

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.fn(*args, **kwargs)

    def with_options(self, **changes: Any) -> FunctionBlock[P, R, In, Out]:
        """A new block running the same function with some options changed, for example a
        second copy under another name: ``resize.with_options(name="resize_small")``."""
        current = {
            f.name: getattr(self._aioflow_options, f.name)
            for f in fields(BlockOptions)
            if f.name != "executor"
        }
        if "executor" in changes or self._aioflow_options.executor != _default_executor(
            self._aioflow_kind
        ):
            current["executor"] = changes.pop("executor", self._aioflow_options.executor)
        if not self._aioflow_sized:
            del current["queue_size"]  # (still the default: a Redis edge may choose its own)
        current.update(changes)
        copy: FunctionBlock[P, R, In, Out] = FunctionBlock(self.fn, **current)
        return copy

    def __repr__(self) -> str:
        opts = self._aioflow_options
        return f"<block {opts.name!r} {self._aioflow_kind} {opts.executor} workers={opts.workers}>"


def _positional_arity(fn: Callable[..., Any]) -> int:
    """How many positional arguments ``fn`` takes (bound methods: without self)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return 1
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params):
        return 2
    return sum(1 for p in params if p.kind in kinds)


def _required_positional(fn: Callable[..., Any]) -> int:
    """How many positional arguments ``fn`` needs (those without a default; bound methods:
    without self)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return 1
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sum(1 for p in params if p.kind in kinds and p.default is inspect.Parameter.empty)


def _check_state_arguments(opts: BlockOptions, fn: Callable[..., Any]) -> None:
    """A function block is called as ``fn(item)``, or ``fn(item, state)`` with ``state=``:
    a function that cannot take that call would fail on every item, so it fails here."""
    name = opts.name
    if opts.state is not None:
        if _positional_arity(fn) < 2:
            msg = (
                f"block {name!r}: with state= the function is called as fn(item, state), but "
                "it takes one argument; add the state parameter: "
                f"`def {name}(item, state): ...`"
            )
            raise GraphError(msg)
        return
    if opts.batch is None and _required_positional(fn) >= 2:
        if opts.key is not None:
            msg = (
                f"block {name!r}: the function takes (item, state) but state= is not given, so "
                "it would be called with the item alone; pass a factory that makes a new key's "
                "state: @af.block(key=..., state=dict)"
            )
        else:
            msg = (
                f"block {name!r}: the function needs {_required_positional(fn)} arguments but a "
                "block calls it with one item; for per-key state write "
                "@af.block(key=lambda item: ..., state=dict); for fixed extra arguments bind "
                "them first with functools.partial or give them defaults"
            )
        raise GraphError(msg)


def _default_executor(kind: Kind) -> ExecutorName:
    return "async" if kind in ("coroutine", "asyncgen") else "thread"


class _Decorator(Protocol):
    """What ``block(...)`` with options returns, for type checkers: a function ``(x: A) -> B``
    (a coroutine function, an async generator or generator of ``B``, or a plain function)
    becomes a block typed ``A -> B``."""

    @overload
    def __call__(
        self, fn: Callable[Concatenate[A, P], Coroutine[Any, Any, B]], /
    ) -> FunctionBlock[Concatenate[A, P], Coroutine[Any, Any, B], A, B]: ...
    @overload
    def __call__(
        self, fn: Callable[Concatenate[A, P], AsyncIterator[B]], /
    ) -> FunctionBlock[Concatenate[A, P], AsyncIterator[B], A, B]: ...
    @overload
    def __call__(
        self, fn: Callable[Concatenate[A, P], Iterator[B]], /
    ) -> FunctionBlock[Concatenate[A, P], Iterator[B], A, B]: ...
    @overload
    def __call__(
        self, fn: Callable[Concatenate[A, P], B], /
    ) -> FunctionBlock[Concatenate[A, P], B, A, B]: ...
    def __call__(self, fn: Callable[..., Any], /) -> FunctionBlock[..., Any, Any, Any]: ...


class _BatchDecorator(Protocol):
    """What ``block(batch=...)`` returns, for type checkers: a function
    ``(items: list[A]) -> list[B]`` (async or plain) becomes a block typed ``A -> B``."""

    @overload
    def __call__(
        self, fn: Callable[Concatenate[list[A], P], Coroutine[Any, Any, Sequence[B]]], /
    ) -> FunctionBlock[Concatenate[list[A], P], Coroutine[Any, Any, Sequence[B]], A, B]: ...
    @overload
    def __call__(
        self, fn: Callable[Concatenate[list[A], P], Sequence[B]], /
    ) -> FunctionBlock[Concatenate[list[A], P], Sequence[B], A, B]: ...
    def __call__(self, fn: Callable[..., Any], /) -> FunctionBlock[..., Any, Any, Any]: ...


class _StateDecorator(Protocol):
    """What ``block(key=..., state=...)`` returns, for type checkers: a function
    ``(x: A, state) -> B`` becomes a block typed ``A -> B``."""

    @overload
    def __call__(
        self, fn: Callable[Concatenate[A, Any, P], Coroutine[Any, Any, B]], /
    ) -> FunctionBlock[Concatenate[A, Any, P], Coroutine[Any, Any, B], A, B]: ...
    @overload
    def __call__(
        self, fn: Callable[Concatenate[A, Any, P], AsyncIterator[B]], /
    ) -> FunctionBlock[Concatenate[A, Any, P], AsyncIterator[B], A, B]: ...
    @overload
    def __call__(
        self, fn: Callable[Concatenate[A, Any, P], Iterator[B]], /
    ) -> FunctionBlock[Concatenate[A, Any, P], Iterator[B], A, B]: ...
    @overload
    def __call__(
        self, fn: Callable[Concatenate[A, Any, P], B], /
    ) -> FunctionBlock[Concatenate[A, Any, P], B, A, B]: ...
    def __call__(self, fn: Callable[..., Any], /) -> FunctionBlock[..., Any, Any, Any]: ...


@overload
def block(
    fn: Callable[Concatenate[A, P], Coroutine[Any, Any, B]], /
) -> FunctionBlock[Concatenate[A, P], Coroutine[Any, Any, B], A, B]: ...


@overload
def block(
    fn: Callable[Concatenate[A, P], AsyncIterator[B]], /
) -> FunctionBlock[Concatenate[A, P], AsyncIterator[B], A, B]: ...


@overload
def block(
    fn: Callable[Concatenate[A, P], Iterator[B]], /
) -> FunctionBlock[Concatenate[A, P], Iterator[B], A, B]: ...


@overload
def block(fn: Callable[Concatenate[A, P], B], /) -> FunctionBlock[Concatenate[A, P], B, A, B]: ...


@overload
def block(
    *,
    name: str | None = None,
    workers: int = 1,
    executor: ExecutorName | None = None,
    ordered: bool = True,
    queue_size: int = _DEFAULT_QUEUE_SIZE,
    overflow: OverflowName = "block",
    max_age: float | None = None,
    on_error: OnError = "raise",
    batch: None = None,
    key: Callable[[Any], Hashable] | None = None,
    timeout: float | None = None,
    state: None = None,
    evict_after: float | None = None,
    dead_letter: Callable[[Any, BlockError], Any] | None = None,
    zero_copy: bool = False,
    fair: bool | Callable[[Any], Hashable] | None = None,
    per_key: int | None = None,
    serve: ServeName = "oldest",
) -> _Decorator: ...


@overload
def block(  # type: ignore[overload-overlap]  # (a `Batch | None` value takes the last)
    *,
    name: str | None = None,
    workers: int = 1,
    executor: ExecutorName | None = None,
    ordered: bool = True,
    queue_size: int = _DEFAULT_QUEUE_SIZE,
    overflow: OverflowName = "block",
    max_age: float | None = None,
    on_error: OnError = "raise",
    batch: Batch,
    key: Callable[[Any], Hashable] | None = None,
    timeout: float | None = None,
    state: None = None,
    evict_after: float | None = None,
    dead_letter: Callable[[Any, BlockError], Any] | None = None,
    zero_copy: bool = False,
    fair: bool | Callable[[Any], Hashable] | None = None,
    per_key: int | None = None,
    serve: ServeName = "oldest",
) -> _BatchDecorator: ...


@overload
def block(  # type: ignore[overload-overlap]  # (a `... | None` state takes the last)
    *,
    name: str | None = None,
    workers: int = 1,
    executor: ExecutorName | None = None,
    ordered: bool = True,
    queue_size: int = _DEFAULT_QUEUE_SIZE,
    overflow: OverflowName = "block",
    max_age: float | None = None,
    on_error: OnError = "raise",
    batch: None = None,
    key: Callable[[Any], Hashable] | None = None,
    timeout: float | None = None,
    state: Callable[[], Any],
    evict_after: float | None = None,
    dead_letter: Callable[[Any, BlockError], Any] | None = None,
    zero_copy: bool = False,
    fair: bool | Callable[[Any], Hashable] | None = None,
    per_key: int | None = None,
    serve: ServeName = "oldest",
) -> _StateDecorator: ...


@overload
def block(
    *,
    name: str | None = None,
    workers: int = 1,
    executor: ExecutorName | None = None,
    ordered: bool = True,
    queue_size: int = _DEFAULT_QUEUE_SIZE,
    overflow: OverflowName = "block",
    max_age: float | None = None,
    on_error: OnError = "raise",
    batch: Batch | None = None,
    key: Callable[[Any], Hashable] | None = None,
    timeout: float | None = None,
    state: Callable[[], Any] | None = None,
    evict_after: float | None = None,
    dead_letter: Callable[[Any, BlockError], Any] | None = None,
    zero_copy: bool = False,
    fair: bool | Callable[[Any], Hashable] | None = None,
    per_key: int | None = None,
    serve: ServeName = "oldest",
) -> Callable[[Callable[P, R]], FunctionBlock[P, R]]: ...


def block(
    fn: Callable[P, R] | None = None,
    /,
    *,
    name: str | None = None,
    workers: int = 1,
    executor: ExecutorName | None = None,
    ordered: bool = True,
    queue_size: int = _DEFAULT_QUEUE_SIZE,
    overflow: OverflowName = "block",
    max_age: float | None = None,
    on_error: OnError = "raise",
    batch: Batch | None = None,
    key: Callable[[Any], Hashable] | None = None,
    timeout: float | None = None,
    state: Callable[[], Any] | None = None,
    evict_after: float | None = None,
    dead_letter: Callable[[Any, BlockError], Any] | None = None,
    zero_copy: bool = False,
    fair: bool | Callable[[Any], Hashable] | None = None,
    per_key: int | None = None,
    serve: ServeName = "oldest",
    **unknown: Any,
) -> Any:
    """Make a pipeline block from a function.

    Works bare (``@af.block``) or with options (``@af.block(workers=4)``). The function may be a
    coroutine function or async generator (run on the event loop), or a plain function or
    generator (run in the block's own thread pool). Generators emit 0..n outputs per input.

    Args:
        name: unique in a pipeline; defaults to the function's name.
        workers: how many items this block processes at once (>= 1).
        executor: ``"async"``, ``"thread"`` (defaults follow the function's kind).
        ordered: keep input order in the outputs even with several workers (default True).
        queue_size: capacity of the block's input edge (default 64).
        overflow: ``"block"`` (backpressure), ``"drop_oldest"`` or ``"drop_newest"``.
        fair: share a leaky input between streams: a callable item -> stream key (``True``: the
            block's ``key``). A full queue then drops from the stream holding the most items,
            so a flooding camera cannot push out a quiet one, and the block takes the streams'
            items in turn (each stream in order; global input order across streams is given
            up), so each gets an equal share of the block.
        per_key: with a stream key (``fair`` or ``key``) and a leaky ``overflow``: the most
            items of one stream the queue holds; the stream's oldest (or, with
            ``"drop_newest"``, its new item) is dropped past that.
        serve: ``"oldest"`` (default: first in, first out) or ``"newest"``: with
            ``overflow="drop_oldest"``, each stream keeps only its newest item (older ones are
            dropped as ``"superseded"``), so a live block always works on the freshest frame
            of each stream, streams in turn, each stream's order kept.
        max_age: drop (count as stale) an item older than this many seconds since it entered
            the pipeline, before spending work on it.
        on_error: ``"raise"``, ``"skip"`` or ``af.Retry(attempts, backoff)``.
        timeout: give up on a call that takes longer than this many seconds (the item fails
            with ``TimeoutError`` as cause; a thread call cannot be interrupted and is left to
            finish).
        batch: ``af.Batch(max_size, max_wait)``: the function takes a list of items and returns
            a list of results of equal length.
        key: a callable item -> key. Items of one key are processed one at a time, in arrival
            order; different keys in parallel up to ``workers``.
        state: with ``key``: a factory (``dict``, ``list``, a class) making the state of a new
            key; the function is then called as ``fn(item, state)``.
        evict_after: with ``key``: drop a key's state after this many idle seconds.
        dead_letter: a callable ``(item, error)`` that receives each item that failed for good
            (after its retries) instead of failing the run: it is counted as skipped (and in
            ``dead_letters``); ``submit()`` raises ``ItemDropped("dead_letter")``. Called on the
            event loop, so it must not block (append to a list, ``put_nowait`` on a queue).
        zero_copy: with ``executor="process"``: the arrays of a result (32 KiB or more) come
            back as read-only views of the worker's shared memory instead of copies, which
            saves a copy of each frame. Each view stays valid for as long as it is referenced:
            the memory is reused only once every view of it is gone (writing to one raises
            ``ValueError``; ``arr.copy()`` makes a writable one).

    Raises:
        GraphError: an option is unknown (the message names the closest valid one) or has a
            bad value, the executor does not fit the function, or the function cannot take the
            call the block makes (``fn(item)``, or ``fn(item, state)`` with ``state=``).

    >>> @block(workers=2)
    ... async def double(x: int) -> int:
    ...     return 2 * x
    >>> double.options.workers
    2
    """
    options: dict[str, Any] = {
        "workers": workers,
        "executor": executor,
        "ordered": ordered,
        "queue_size": queue_size,
        "overflow": overflow,
        "max_age": max_age,
        "on_error": on_error,
        "batch": batch,
        "key": key,
        "timeout": timeout,
        "state": state,
        "evict_after": evict_after,
        "dead_letter": dead_letter,
        "zero_copy": zero_copy,
        "fair": fair,
        "per_key": per_key,
        "serve": serve,
    }
    if name is not None:
        options["name"] = name
    if queue_size is _DEFAULT_QUEUE_SIZE:
        del options["queue_size"]  # (not chosen: a Redis edge may choose a deeper default)
    options.update(unknown)  # the block names them, with the closest valid option

    def decorate(func: Callable[P, R]) -> FunctionBlock[P, R]:  # (typed by the overloads)
        target: object = func
        if isinstance(target, Block):
            msg = f"@af.block applied to {func!r}, which is already a block"
            raise GraphError(msg)
        return FunctionBlock(func, **options)

    if fn is not None:
        return decorate(fn)
    return decorate
