"""Blocks: the @af.block decorator, af.Block subclasses, and their options."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import itertools
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

import aioflow as af

# -- the decorator ----------------------------------------------------------------------------


def test_bare_decorator_makes_a_block_with_default_options() -> None:
    @af.block
    async def decode(x: int) -> int:
        return x

    assert isinstance(decode, af.Block)
    opts = decode.options
    assert opts.name == "decode"
    assert opts.workers == 1
    assert opts.executor == "async"
    assert opts.ordered is True
    assert opts.queue_size == 64
    assert opts.overflow == "block"
    assert opts.max_age is None
    assert opts.on_error == "raise"


def test_decorator_with_options_applies_them() -> None:
    retry = af.Retry(attempts=2, backoff=0.0)

    @af.block(
        name="svc",
        workers=4,
        ordered=False,
        queue_size=8,
        overflow="drop_oldest",
        max_age=0.5,
        on_error=retry,
        timeout=2.0,
    )
    async def call_service(x: int) -> int:
        return x

    opts = call_service.options
    assert opts.name == "svc"
    assert opts.workers == 4
    assert opts.ordered is False
    assert opts.queue_size == 8
    assert opts.overflow == "drop_oldest"
    assert opts.max_age == 0.5
    assert opts.on_error is retry
    assert opts.timeout == 2.0


def test_decorated_function_keeps_name_doc_and_signature() -> None:
    def resize(img: list[int], *, scale: float = 0.5) -> list[int]:
        """Resize an image."""
        return img

    blk = af.block(executor="thread", workers=2)(resize)
    assert blk.__name__ == "resize"
    assert blk.__doc__ == "Resize an image."
    assert inspect.signature(blk) == inspect.signature(resize)


async def test_decorated_functions_stay_callable_as_plain_functions() -> None:
    @af.block
    async def inc(x: int) -> int:
        return x + 1

    @af.block
    def double(x: int) -> int:
        return 2 * x

    @af.block
    async def split(x: list[int]) -> AsyncIterator[int]:
        for part in x:
            yield part

    @af.block
    def pairs(x: int) -> Iterator[int]:
        yield x
        yield x

    assert await inc(1) == 2
    assert double(3) == 6
    assert [part async for part in split([1, 2, 3])] == [1, 2, 3]
    assert list(pairs(7)) == [7, 7]


def test_decorating_a_block_again_is_a_graph_error() -> None:
    @af.block
    async def twice(x: int) -> int:
        return x

    with pytest.raises(af.GraphError, match="already a block"):
        af.block(twice)


def test_decorating_something_not_callable_is_a_graph_error() -> None:
    with pytest.raises(af.GraphError, match="42"):
        af.block(42)  # type: ignore[call-overload]


# -- option validation ------------------------------------------------------------------------

BAD_OPTIONS = [
    # option, bad value, a piece of "what was expected"
    ("workers", 0, "int >= 1"),
    ("workers", True, "int >= 1"),
    ("workers", 2.5, "int >= 1"),
    ("queue_size", 0, "int >= 1"),
    ("queue_size", None, "int >= 1"),
    ("overflow", "x", "drop_oldest"),
    ("max_age", -1, "seconds"),
    ("max_age", float("nan"), "seconds"),
    ("on_error", "ignore", "skip"),
    ("executor", "gpu", "thread"),
    ("ordered", "yes", "True or False"),
    ("timeout", 0, "seconds"),
    ("timeout", -0.5, "seconds"),
]


@pytest.mark.parametrize(("option", "value", "expected"), BAD_OPTIONS)
def test_bad_option_on_the_decorator_names_block_option_expected_and_found(
    option: str, value: object, expected: str
) -> None:
    async def detect(x: int) -> int:
        return x

    options: dict[str, Any] = {option: value}
    decorate = af.block(**options)
    with pytest.raises(af.GraphError) as info:
        decorate(detect)
    message = str(info.value)
    assert "'detect'" in message
    assert repr(option) in message or option in message
    assert expected in message
    assert repr(value) in message


@pytest.mark.parametrize(("option", "value", "expected"), BAD_OPTIONS)
def test_bad_option_on_a_block_subclass_names_block_option_expected_and_found(
    option: str, value: object, expected: str
) -> None:
    class Tracker(af.Block):
        async def process(self, item: Any) -> Any:
            return item

    with pytest.raises(af.GraphError) as info:
        Tracker(**{option: value})
    message = str(info.value)
    assert "'Tracker'" in message
    assert option in message
    assert expected in message
    assert repr(value) in message


def test_bad_option_as_a_class_attribute_is_refused_when_the_instance_is_made() -> None:
    class Tracker(af.Block):
        workers = 0

        async def process(self, item: Any) -> Any:
            return item

    with pytest.raises(af.GraphError, match=r"'Tracker'.*workers"):
        Tracker()


def test_an_empty_name_is_refused() -> None:
    async def f(x: int) -> int:
        return x

    with pytest.raises(af.GraphError, match="name"):
        af.block(name="")(f)


def test_executor_async_on_a_plain_function_is_a_graph_error() -> None:
    def resize(img: int) -> int:
        return img

    with pytest.raises(af.GraphError) as info:
        af.block(executor="async")(resize)
    message = str(info.value)
    assert "'resize'" in message
    assert "executor" in message


def test_executor_async_on_a_plain_generator_is_a_graph_error() -> None:
    def tiles(img: int) -> Iterator[int]:
        yield img

    with pytest.raises(af.GraphError, match="'tiles'"):
        af.block(executor="async")(tiles)


def test_executor_thread_on_a_coroutine_function_is_a_graph_error() -> None:
    async def detect(img: int) -> int:
        return img

    with pytest.raises(af.GraphError) as info:
        af.block(executor="thread")(detect)
    message = str(info.value)
    assert "'detect'" in message
    assert "executor" in message


def test_executor_thread_on_an_async_generator_is_a_graph_error() -> None:
    async def split(x: list[int]) -> AsyncIterator[int]:
        for part in x:
            yield part

    with pytest.raises(af.GraphError, match="'split'"):
        af.block(executor="thread")(split)


def test_executor_mismatch_on_a_block_subclass_is_a_graph_error() -> None:
    class Sync(af.Block):
        executor = "async"

        def process(self, item: Any) -> Any:
            return item

    class Async(af.Block):
        async def process(self, item: Any) -> Any:
            return item

    with pytest.raises(af.GraphError, match="'Sync'"):
        Sync()
    with pytest.raises(af.GraphError, match="'Async'"):
        Async(executor="thread")


def test_options_are_frozen() -> None:
    @af.block
    async def f(x: int) -> int:
        return x

    with pytest.raises(dataclasses.FrozenInstanceError):
        f.options.workers = 8  # type: ignore[misc]


# -- kinds ------------------------------------------------------------------------------------


async def test_coroutine_block_runs_on_the_event_loop_one_output_per_input() -> None:
    loop_thread = threading.get_ident()

    @af.block
    async def where(x: int) -> tuple[int, int]:
        return x, threading.get_ident()

    assert where.options.executor == "async"
    out = await af.Pipeline(where).run(range(3))
    assert [x for x, _ in out] == [0, 1, 2]
    assert {thread for _, thread in out} == {loop_thread}


async def test_async_generator_block_makes_zero_to_n_outputs_per_input() -> None:
    @af.block
    async def repeat(x: int) -> AsyncIterator[int]:
        for _ in range(x):
            yield x

    assert repeat.options.executor == "async"
    assert await af.Pipeline(repeat).run([0, 1, 2, 3]) == [1, 2, 2, 3, 3, 3]


async def test_plain_function_block_runs_off_the_event_loop() -> None:
    loop_thread = threading.get_ident()

    @af.block
    def where(x: int) -> tuple[int, int]:
        return x, threading.get_ident()

    assert where.options.executor == "thread"
    out = await af.Pipeline(where).run(range(3))
    assert [x for x, _ in out] == [0, 1, 2]
    assert loop_thread not in {thread for _, thread in out}


async def test_generator_block_runs_off_the_event_loop_zero_to_n_outputs() -> None:
    loop_thread = threading.get_ident()

    @af.block
    def repeat(x: int) -> Iterator[tuple[int, int]]:
        for _ in range(x):
            yield x, threading.get_ident()

    assert repeat.options.executor == "thread"
    out = await af.Pipeline(repeat).run([0, 1, 2, 3])
    assert [x for x, _ in out] == [1, 2, 2, 3, 3, 3]
    assert loop_thread not in {thread for _, thread in out}


async def test_block_subclass_with_a_plain_process_runs_off_the_event_loop() -> None:
    loop_thread = threading.get_ident()

    class Where(af.Block):
        def process(self, item: int) -> tuple[int, int]:
            return item, threading.get_ident()

    blk = Where()
    assert blk.options.executor == "thread"
    out = await af.Pipeline(blk).run(range(3))
    assert [x for x, _ in out] == [0, 1, 2]
    assert loop_thread not in {thread for _, thread in out}


async def test_block_subclass_with_an_async_generator_process_makes_several_outputs() -> None:
    class Split(af.Block):
        async def process(self, item: str) -> AsyncIterator[str]:
            for ch in item:
                yield ch

    blk = Split()
    assert blk.options.executor == "async"
    assert await af.Pipeline(blk).run(["ab", "", "c"]) == ["a", "b", "c"]


# -- af.Block subclasses ----------------------------------------------------------------------


def test_block_subclass_options_from_constructor_keywords() -> None:
    class Tracker(af.Block):
        async def process(self, item: Any) -> Any:
            return item

    blk = Tracker(workers=2, queue_size=8, name="trk", overflow="drop_newest")
    assert blk.options.name == "trk"
    assert blk.block_name == "trk"
    assert blk.options.workers == 2
    assert blk.options.queue_size == 8
    assert blk.options.overflow == "drop_newest"


def test_block_subclass_options_from_class_attributes() -> None:
    class Tracker(af.Block):
        name = "tracker"
        workers = 3
        ordered = False
        max_age = 0.25

        async def process(self, item: Any) -> Any:
            return item

    blk = Tracker()
    assert blk.options.name == "tracker"
    assert blk.options.workers == 3
    assert blk.options.ordered is False
    assert blk.options.max_age == 0.25


def test_constructor_keywords_override_class_attributes_and_subclasses_inherit_them() -> None:
    class Base(af.Block):
        workers = 3
        queue_size = 16

        async def process(self, item: Any) -> Any:
            return item

    class Child(Base):
        queue_size = 4

    assert Child().options.workers == 3
    assert Child().options.queue_size == 4
    assert Child(workers=1).options.workers == 1
    assert Child().options.name == "Child"


def test_block_subclass_name_defaults_to_the_class_name() -> None:
    class Tracker(af.Block):
        async def process(self, item: Any) -> Any:
            return item

    assert Tracker().options.name == "Tracker"


def test_unknown_option_on_a_block_subclass_is_a_graph_error() -> None:
    class Tracker(af.Block):
        async def process(self, item: Any) -> Any:
            return item

    with pytest.raises(af.GraphError) as info:
        Tracker(wrokers=2)
    message = str(info.value)
    assert "'Tracker'" in message
    assert "wrokers" in message


async def test_block_subclass_with_its_own_init_keeps_its_arguments() -> None:
    class Threshold(af.Block):
        def __init__(self, limit: int, **options: Any) -> None:
            super().__init__(**options)
            self.limit = limit

        async def process(self, item: int) -> bool:
            return item >= self.limit

    blk = Threshold(2, workers=2, name="thr")
    assert blk.limit == 2
    assert blk.options.name == "thr"
    assert blk.options.workers == 2
    assert await af.Pipeline(blk).run(range(4)) == [False, False, True, True]


def test_block_subclass_with_its_own_init_refuses_bad_options() -> None:
    class Threshold(af.Block):
        def __init__(self, limit: int, **options: Any) -> None:
            super().__init__(**options)
            self.limit = limit

        async def process(self, item: int) -> bool:
            return item >= self.limit

    with pytest.raises(af.GraphError, match=r"'Threshold'.*queue_size"):
        Threshold(2, queue_size=0)


async def test_block_subclass_setup_process_teardown_run_in_order() -> None:
    events: list[str] = []

    class Tracker(af.Block):
        async def setup(self) -> None:
            events.append("setup")
            self.seen = 0

        async def process(self, item: int) -> int:
            self.seen += 1
            events.append(f"process {item}")
            return self.seen

        async def teardown(self) -> None:
            events.append("teardown")

    assert await af.Pipeline(Tracker()).run([10, 20]) == [1, 2]
    assert events == ["setup", "process 10", "process 20", "teardown"]


# -- with_options -----------------------------------------------------------------------------


async def test_with_options_makes_an_independent_copy() -> None:
    @af.block(workers=2, queue_size=8)
    async def scale(x: int) -> int:
        return 10 * x

    small = scale.with_options(name="scale_small", workers=3)
    assert small is not scale
    assert small.options.name == "scale_small"
    assert small.options.workers == 3
    assert small.options.queue_size == 8  # unchanged options carry over
    assert scale.options.name == "scale"  # the original is untouched
    assert scale.options.workers == 2
    assert await small(2) == await scale(2)

    # Both may serve in one pipeline: they are two blocks.
    assert await af.Pipeline(scale, small).run([1, 2]) == [100, 200]


def test_with_options_validates_the_changes() -> None:
    @af.block
    async def scale(x: int) -> int:
        return x

    with pytest.raises(af.GraphError, match=r"'scale'.*workers"):
        scale.with_options(workers=0)
    with pytest.raises(af.GraphError, match="'scale'"):
        scale.with_options(executor="thread")
    assert scale.options.workers == 1


def test_with_options_keeps_an_explicit_executor() -> None:
    @af.block(executor="thread")
    def resize(x: int) -> int:
        return x

    copy = resize.with_options(name="resize_2")
    assert copy.options.executor == "thread"
    assert copy(5) == 5


# -- Retry ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"attempts": 0},
        {"attempts": -1},
        {"attempts": True},
        {"attempts": 2.5},
        {"backoff": -0.1},
        {"backoff": float("nan")},
        {"backoff": float("inf")},
        {"backoff": "1"},
        {"max_backoff": -1},
        {"max_backoff": float("nan")},
    ],
)
def test_retry_refuses_bad_values(kwargs: dict[str, Any]) -> None:
    option = next(iter(kwargs))
    with pytest.raises(af.GraphError, match=option):
        af.Retry(**kwargs)


def test_retry_delay_starts_at_backoff_and_doubles() -> None:
    retry = af.Retry(attempts=6, backoff=0.1, jitter=False)
    delays = [retry.delay(attempt) for attempt in range(1, 6)]
    assert delays[0] == pytest.approx(0.1)
    for before, after in itertools.pairwise(delays):
        assert after == pytest.approx(2 * before)


def test_retry_delay_with_jitter_stays_between_half_and_full_delay() -> None:
    retry = af.Retry(attempts=4, backoff=0.1, jitter=True)
    samples = [retry.delay(3) for _ in range(500)]
    full = 0.1 * 2**2
    assert all(full / 2 <= s <= full for s in samples)
    assert min(samples) < max(samples)  # jitter actually spreads the delays


@pytest.mark.parametrize("attempt", [6, 20, 100, 2000])
def test_retry_delay_never_exceeds_max_backoff(attempt: int) -> None:
    plain = af.Retry(attempts=attempt + 1, backoff=0.5, max_backoff=3.0, jitter=False)
    assert plain.delay(attempt) == pytest.approx(3.0)
    jittered = af.Retry(attempts=attempt + 1, backoff=0.5, max_backoff=3.0)
    assert 1.5 <= jittered.delay(attempt) <= 3.0


async def test_retry_option_retries_a_failing_item() -> None:
    calls: list[int] = []

    @af.block(on_error=af.Retry(attempts=3, backoff=0.0))
    async def flaky(x: int) -> int:
        calls.append(x)
        if len(calls) < 3:
            raise ConnectionError("try again")
        return x

    pipe = af.Pipeline(flaky)
    assert await pipe.run([7]) == [7]
    assert calls == [7, 7, 7]
    assert pipe.statistics()["flaky"].retried == 2


# -- Batch ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_size": 0},
        {"max_size": -4},
        {"max_size": True},
        {"max_size": 2.0},
        {"max_size": "8"},
        {"max_wait": -0.001},
        {"max_wait": float("nan")},
        {"max_wait": float("inf")},
        {"max_wait": True},
        {"max_wait": "0"},
    ],
)
def test_batch_refuses_bad_values(kwargs: dict[str, Any]) -> None:
    option = next(iter(kwargs))
    with pytest.raises(af.GraphError, match=option):
        af.Batch(**kwargs)


def test_batch_accepts_good_values() -> None:
    batch = af.Batch(max_size=8, max_wait=0)
    assert batch.max_size == 8
    assert batch.max_wait == 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        batch.max_size = 2  # type: ignore[misc]


# -- mistakes caught when the block is made, each saying what to write instead ---------------


def test_key_with_a_two_argument_function_but_no_state_says_pass_state() -> None:
    def count(det: dict[str, int], state: dict[str, int]) -> int:
        return len(state)

    with pytest.raises(af.GraphError) as info:
        af.block(key=lambda det: det["camera"])(count)
    message = str(info.value)
    assert "'count'" in message
    assert "state=" in message
    assert "@af.block(key=..., state=dict)" in message


def test_state_with_a_one_argument_function_says_add_the_state_parameter() -> None:
    def count(det: dict[str, int]) -> int:
        return 0

    with pytest.raises(af.GraphError) as info:
        af.block(key=lambda det: det["camera"], state=dict)(count)
    assert "'count'" in str(info.value)
    assert "def count(item, state)" in str(info.value)


def test_a_two_argument_function_without_key_says_use_key_and_state_or_partial() -> None:
    def scale(img: int, factor: int) -> int:
        return img * factor

    with pytest.raises(af.GraphError) as info:
        af.block(scale)
    message = str(info.value)
    assert "'scale'" in message
    assert "state=dict" in message
    assert "functools.partial" in message


def test_functions_the_block_can_call_with_one_item_stay_valid() -> None:
    def with_default(img: int, factor: int = 2) -> int:
        return img * factor

    def with_state(det: int, state: dict[str, int]) -> int:
        return det

    assert af.block(with_default).options.name == "with_default"
    assert af.block(functools.partial(lambda img, factor: img * factor, factor=3)).options.workers
    assert af.block(key=lambda det: det, state=dict)(with_state).options.state is dict
    assert af.block(batch=af.Batch(max_size=4))(lambda items: items).options.batch is not None


def test_block_subclass_without_process_fails_when_instantiated() -> None:
    class Tracker(af.Block):
        async def setup(self) -> None:
            self.tracks: dict[int, int] = {}

    with pytest.raises(af.GraphError) as info:
        Tracker()
    message = str(info.value)
    assert "Tracker does not define process()" in message
    assert "async def process(self, item)" in message


def test_block_subclass_without_process_and_super_init_fails_when_the_pipeline_is_built() -> None:
    class Tracker(af.Block):
        def __init__(self, limit: int) -> None:  # forgets super().__init__()
            self.limit = limit

    with pytest.raises(af.GraphError, match=r"Tracker does not define process\(\)"):
        af.Pipeline(Tracker(3))


def test_block_subclass_taking_state_without_key_says_pass_key() -> None:
    class Counter(af.Block):
        async def process(self, item: int, state: dict[str, int]) -> int:
            return item

    with pytest.raises(af.GraphError) as info:
        Counter()
    assert "Counter(key=lambda item: ...)" in str(info.value)
    assert Counter(key=lambda item: item).options.key is not None


@pytest.mark.parametrize(
    ("option", "suggestion"),
    [
        ("retry", "did you mean on_error=af.Retry("),
        ("retries", "did you mean on_error=af.Retry("),
        ("concurrency", "did you mean workers="),
        ("batch_size", "did you mean batch=af.Batch("),
        ("worker", "did you mean workers=...?"),
        ("queuesize", "did you mean queue_size=...?"),
        ("ordred", "did you mean ordered=...?"),
        ("on_eror", "did you mean on_error=...?"),
    ],
)
def test_unknown_option_of_the_decorator_names_the_closest_valid_one(
    option: str, suggestion: str
) -> None:
    async def call_service(x: int) -> int:
        return x

    make: Any = af.block  # the type checker rejects an unknown option; users without one do not
    with pytest.raises(af.GraphError) as info:
        make(**{option: 3})(call_service)
    message = str(info.value)
    assert f"unknown option {option!r}" in message
    assert suggestion in message


def test_unknown_option_of_a_block_subclass_names_the_closest_valid_one() -> None:
    class Tracker(af.Block):
        async def process(self, item: int) -> int:
            return item

    with pytest.raises(af.GraphError) as info:
        Tracker(retry=af.Retry(attempts=3))
    assert "did you mean on_error=af.Retry(attempts=3, backoff=0.1)?" in str(info.value)
    with pytest.raises(af.GraphError, match=r"'wokers' \(did you mean workers=\.\.\.\?\)"):
        Tracker(wokers=2)


def test_unknown_option_with_nothing_close_lists_the_options() -> None:
    with pytest.raises(af.GraphError) as info:
        af.block(lambda x: x, zzz=1)  # type: ignore[call-overload]
    message = str(info.value)
    assert "unknown option 'zzz';" in message
    assert "workers" in message
    assert "on_error" in message


async def test_a_typed_block_subclass_runs_like_an_untyped_one() -> None:
    class Threshold(af.Block[int, bool]):
        workers = 2
        queue_size = 4

        async def process(self, item: int) -> bool:
            return item > 1

    blk = Threshold(name="over_one")
    assert (blk.options.workers, blk.options.queue_size, blk.block_name) == (2, 4, "over_one")
    assert await af.Pipeline(blk).run([1, 2, 3]) == [False, True, True]
    assert af.Pipeline(Threshold()).blocks()[0].options.workers == 2
