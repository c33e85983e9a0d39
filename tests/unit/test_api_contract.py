"""The public API contract of DESIGN.md, checked as a user would: only ``import aioflow as af``
and the extras' namespaces, one test per promise, named after it. These need no event loop;
the promises that need a run are in ``tests/integration/test_contract.py``."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import aioflow as af

ROOT = Path(__file__).resolve().parent.parent.parent


async def _coro(x: Any) -> Any:
    return x


def _plain(x: Any) -> Any:
    return x


# -- block options: validated when the decorator runs, GraphError naming block and option ----

BAD_OPTIONS: list[tuple[str, Any]] = [
    ("workers", 0),
    ("workers", -1),
    ("workers", 1.5),
    ("workers", True),
    ("queue_size", 0),
    ("queue_size", "64"),
    ("overflow", "x"),
    ("executor", "gpu"),
    ("ordered", "yes"),
    ("ordered", 1),
    ("max_age", -1),
    ("max_age", "1s"),
    ("on_error", "x"),
    ("on_error", 3),
    ("batch", 16),
    ("batch", {"max_size": 16}),
    ("key", "camera"),
    ("name", ""),
    ("name", 7),
]


@pytest.mark.parametrize(("option", "value"), BAD_OPTIONS, ids=lambda v: repr(v))
def test_bad_option_raises_graph_error_naming_block_and_option_at_decoration(
    option: str, value: Any
) -> None:
    def cam_step(x: Any) -> Any:
        return x

    with pytest.raises(af.GraphError) as info:
        af.block(**{option: value})(cam_step)
    text = str(info.value)
    assert option in text
    if option != "name":  # a bad name cannot be named; the option is
        assert "cam_step" in text


@pytest.mark.parametrize(("option", "value"), BAD_OPTIONS, ids=lambda v: repr(v))
def test_bad_option_of_a_block_subclass_raises_when_instantiated(option: str, value: Any) -> None:
    class Tracker(af.Block):
        async def process(self, item: Any) -> Any:
            return item

    with pytest.raises(af.GraphError) as info:
        Tracker(**{option: value})
    text = str(info.value)
    assert option in text
    if option != "name":
        assert "Tracker" in text


@pytest.mark.parametrize(("option", "value"), BAD_OPTIONS, ids=lambda v: repr(v))
def test_bad_option_as_a_class_attribute_raises_when_instantiated(option: str, value: Any) -> None:
    # A class attribute named `key` or `name` would shadow methods/properties users rely on
    # differently; the other options are plain values.
    attrs = {option: value}
    Tracker = type(
        "Tracker",
        (af.Block,),
        {**attrs, "process": lambda self, item: item},
    )
    with pytest.raises(af.GraphError) as info:
        Tracker()
    text = str(info.value)
    assert option in text


def test_unknown_option_raises_graph_error_naming_it() -> None:
    def resize(x: Any) -> Any:
        return x

    with pytest.raises(af.GraphError, match="resize") as info:
        af.block(wrokers=2)(resize)  # type: ignore[call-overload]
    assert "wrokers" in str(info.value)


def test_options_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        af.block(_plain, 2)  # type: ignore[call-overload]


def test_good_options_are_kept() -> None:
    key = lambda x: x  # noqa: E731
    blk = af.block(
        workers=3,
        queue_size=5,
        overflow="drop_oldest",
        executor="thread",
        max_age=0.5,
        on_error=af.Retry(attempts=2, backoff=0.01),
        ordered=False,
        name="resizer",
    )(_plain)
    o = blk.options
    assert (o.name, o.workers, o.queue_size, o.overflow, o.executor, o.max_age, o.ordered) == (
        "resizer",
        3,
        5,
        "drop_oldest",
        "thread",
        0.5,
        False,
    )
    assert o.on_error == af.Retry(attempts=2, backoff=0.01)
    keyed = af.block(key=key)(_coro)
    assert keyed.options.key is key
    batched = af.block(batch=af.Batch(max_size=16, max_wait=0.005))(_plain)
    assert batched.options.batch == af.Batch(max_size=16, max_wait=0.005)


def test_option_defaults_are_as_documented() -> None:
    o = af.block(_coro).options
    assert o.workers == 1
    assert o.ordered is True
    assert o.queue_size == 64
    assert o.overflow == "block"
    assert o.max_age is None
    assert o.on_error == "raise"
    assert o.batch is None
    assert o.key is None


def test_name_defaults_to_function_or_class_name() -> None:
    async def decode(x: Any) -> Any:
        return x

    class Tracker(af.Block):
        async def process(self, item: Any) -> Any:
            return item

    assert af.block(decode).options.name == "decode"
    assert Tracker().options.name == "Tracker"


@pytest.mark.parametrize(
    ("fn", "expected"),
    [(_coro, "async"), (_plain, "thread")],
    ids=["coroutine", "plain"],
)
def test_default_executor_by_kind(fn: Callable[..., Any], expected: str) -> None:
    assert af.block(fn).options.executor == expected


def test_default_executor_of_generators() -> None:
    async def agen(x: Any) -> AsyncIterator[Any]:
        yield x

    def gen(x: Any) -> Iterator[Any]:
        yield x

    assert af.block(agen).options.executor == "async"
    assert af.block(gen).options.executor == "thread"


def test_executor_async_on_a_plain_function_is_a_graph_error() -> None:
    def resize(x: Any) -> Any:
        return x

    with pytest.raises(af.GraphError, match="resize") as info:
        af.block(executor="async")(resize)
    assert "executor" in str(info.value)


def test_executor_thread_on_a_coroutine_function_is_a_graph_error() -> None:
    async def call_service(x: Any) -> Any:
        return x

    with pytest.raises(af.GraphError, match="call_service") as info:
        af.block(executor="thread")(call_service)
    assert "executor" in str(info.value)


def test_executor_process_on_a_coroutine_function_is_a_graph_error() -> None:
    # "executor='process' runs plain functions": a coroutine function is not one.
    async def call_service(x: Any) -> Any:
        return x

    with pytest.raises(af.GraphError, match="call_service"):
        af.block(executor="process")(call_service)


def test_executor_thread_on_an_async_generator_is_a_graph_error() -> None:
    async def split(x: Any) -> AsyncIterator[Any]:
        yield x

    with pytest.raises(af.GraphError, match="split"):
        af.block(executor="thread")(split)


# -- a process block whose function cannot go to a worker: GraphError before anything runs ----


def test_process_block_from_a_lambda_is_a_graph_error_before_running() -> None:
    blk = af.block(executor="process")(lambda x: x)
    with pytest.raises(af.GraphError) as info:
        af.Pipeline(blk)  # when the pipeline is built, not when it runs
    assert "<lambda>" in str(info.value)
    assert "process" in str(info.value)


def test_process_block_from_a_nested_function_is_a_graph_error_before_running() -> None:
    def heavy(img: Any) -> Any:
        return img

    with pytest.raises(af.GraphError, match="heavy"):
        af.Pipeline(af.block(executor="process", workers=2)(heavy))


def test_process_block_subclass_that_cannot_be_pickled_is_a_graph_error() -> None:
    class Local(af.Block):  # a class defined in a function cannot be pickled
        def process(self, item: Any) -> Any:
            return item

    with pytest.raises(af.GraphError, match="Local"):
        af.Pipeline(Local(executor="process"))


# -- Block subclasses: options as class attributes, as kwargs, own __init__ ------------------


class Tracker(af.Block):
    async def setup(self) -> None:
        self.seen = 0

    async def process(self, item: Any) -> Any:
        self.seen += 1
        return item

    async def teardown(self) -> None:
        pass


def test_block_subclass_takes_options_as_constructor_kwargs() -> None:
    t = Tracker(workers=2, queue_size=8, name="trk", executor="async")
    assert (t.options.workers, t.options.queue_size, t.options.name, t.options.executor) == (
        2,
        8,
        "trk",
        "async",
    )


def test_block_subclass_takes_options_as_class_attributes() -> None:
    class Slow(af.Block):
        workers = 3
        queue_size = 5
        overflow = "drop_oldest"
        max_age = 2.0

        def process(self, item: Any) -> Any:
            return item

    o = Slow().options
    assert (o.workers, o.queue_size, o.overflow, o.max_age, o.executor) == (
        3,
        5,
        "drop_oldest",
        2.0,
        "thread",
    )
    # constructor keywords win over class attributes
    assert Slow(workers=1).options.workers == 1


def test_block_subclass_name_and_key_as_class_attributes() -> None:
    class PerCamera(af.Block):
        name = "per_camera"

        def key(self, item: tuple[str, int]) -> str:
            return item[0]

        async def process(self, item: Any) -> Any:
            return item

    blk = PerCamera()
    assert blk.options.name == "per_camera"
    assert blk.options.key is not None
    assert blk.options.key(("cam1", 3)) == "cam1"
    assert PerCamera(name="door").options.name == "door"


def test_block_subclass_with_own_init_keeps_its_arguments_and_takes_options() -> None:
    class Scaler(af.Block):
        def __init__(self, factor: int, **options: Any) -> None:
            super().__init__(**options)
            self.factor = factor

        async def process(self, item: int) -> int:
            return item * self.factor

    s = Scaler(3, workers=2, name="x3")
    assert s.factor == 3
    assert (s.options.workers, s.options.name) == (2, "x3")
    with pytest.raises(af.GraphError, match="workers"):
        Scaler(3, workers=0)


# -- composition --------------------------------------------------------------------------------


def test_rshift_composition_equals_pipeline() -> None:
    @af.block
    async def decode(x: Any) -> Any:
        return x

    @af.block(executor="thread")
    def resize(x: Any) -> Any:
        return x

    t = Tracker()
    composed = decode >> resize >> t
    assert isinstance(composed, af.Pipeline)
    assert [b.options.name for b in composed.blocks()] == ["decode", "resize", "Tracker"]
    same = af.Pipeline(decode, resize, Tracker())
    assert composed.describe() == same.describe() == "decode >> resize >> Tracker"
    # and a stage can be a plain callable on either side
    assert [b.options.name for b in (_plain >> af.block(_coro)).blocks()] == ["_plain", "_coro"]


def test_pipeline_names_must_be_unique() -> None:
    async def step(x: Any) -> Any:
        return x

    with pytest.raises(af.GraphError, match="step"):
        af.Pipeline(af.block(step), af.block(step))


def test_a_block_used_twice_in_one_pipeline_is_a_graph_error() -> None:
    blk = af.block(_coro)
    with pytest.raises(af.GraphError, match="_coro"):
        af.Pipeline(blk, blk)


def test_a_block_instance_belongs_to_one_pipeline() -> None:
    t = Tracker(name="trk")
    first = af.Pipeline(t, name="first")
    with pytest.raises(af.GraphError, match="trk"):
        af.Pipeline(t, name="second")
    assert first.blocks() == [t]


def test_branch_members_follow_the_same_rules() -> None:
    blk = af.block(_coro)
    with pytest.raises(af.GraphError):
        af.Pipeline(af.branch(blk, blk))


def test_stream_is_an_async_generator_and_a_plain_for_says_async_for() -> None:
    outs = af.Pipeline(_coro, name="p").stream([1, 2])
    assert isinstance(outs, AsyncGenerator)
    with pytest.raises(TypeError, match="async for"):
        list(outs)  # type: ignore[call-overload]


def test_a_str_as_items_is_a_graph_error_when_stream_is_called() -> None:
    pipe = af.Pipeline(_coro, name="p")
    with pytest.raises(af.GraphError, match="str"):
        pipe.stream("frames.mp4")


# -- options objects and the error hierarchy ---------------------------------------------------


def test_error_hierarchy() -> None:
    for exc in (af.GraphError, af.BlockError, af.ItemDropped, af.ExecutorError):
        assert issubclass(exc, af.AioflowError)
    assert issubclass(af.AioflowError, Exception)


def test_batch_and_retry_take_the_documented_arguments() -> None:
    b = af.Batch(max_size=16, max_wait=0.005)
    assert (b.max_size, b.max_wait) == (16, 0.005)
    r = af.Retry(attempts=3, backoff=0.1)
    assert (r.attempts, r.backoff) == (3, 0.1)


@pytest.mark.parametrize(
    "make",
    [
        lambda: af.Batch(max_size=0, max_wait=0.005),
        lambda: af.Batch(max_size=4, max_wait=-1),
        lambda: af.Retry(attempts=0, backoff=0.1),
        lambda: af.Retry(attempts=3, backoff=-1),
    ],
    ids=["batch-size-0", "batch-wait-negative", "retry-attempts-0", "retry-backoff-negative"],
)
def test_bad_batch_or_retry_is_a_graph_error(make: Callable[[], object]) -> None:
    with pytest.raises(af.GraphError):
        make()


def test_retry_delay_starts_at_backoff_and_doubles() -> None:
    r = af.Retry(attempts=4, backoff=0.1, jitter=False)
    assert [r.delay(n) for n in (1, 2, 3)] == pytest.approx([0.1, 0.2, 0.4])
    jittered = af.Retry(attempts=4, backoff=0.1)
    assert all(0.05 <= jittered.delay(1) <= 0.1 for _ in range(50))


# -- imports: `import aioflow` imports no optional extra; a missing extra names its pip line ---


def _python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        timeout=60,
        check=False,
    )


def test_import_aioflow_imports_no_optional_extra() -> None:
    code = (
        "import sys, aioflow as af\n"
        "import aioflow.io, aioflow.infer, aioflow.transport, aioflow.io.http\n"
        "heavy = ['redis', 'onnxruntime', 'cv2', 'onnx', 'msgpack']\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    done = _python(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("module", "backend", "extra"),
    [
        ("aioflow.transport.redis", "redis", "redis"),
        ("aioflow.infer.onnx", "onnxruntime", "onnx"),
        ("aioflow.io.video", "cv2", "cv"),
    ],
)
def test_missing_extra_raises_import_error_naming_pip_install(
    module: str, backend: str, extra: str, tmp_path: Path
) -> None:
    # A module that raises on import hides the installed backend, as a missing one would.
    (tmp_path / f"{backend}.py").write_text("raise ImportError('not installed')\n")
    code = (
        f"try:\n    import {module}\nexcept ImportError as exc:\n    print(exc)\n"
        "else:\n    print('imported')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])},
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert f"pip install aioflow[{extra}]" in done.stdout, done.stdout


# -- the CLI: python -m aioflow run | graph | worker | bench -------------------------------------


def test_cli_has_run_graph_worker_bench_and_each_shows_its_help() -> None:
    helps: dict[str, str] = {}
    for command in ("run", "graph", "worker", "bench"):
        done = subprocess.run(
            [sys.executable, "-m", "aioflow", command, "--help"],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, (command, done.stderr)
        helps[command] = done.stdout
    for command, text in helps.items():
        assert text.startswith("usage:"), (command, text)
        assert command in text.splitlines()[0], (command, text)
    assert "--redis" in helps["worker"]  # the worker's own options
    assert "--blocks" in helps["worker"]
