"""What a type checker sees of aioflow: checked by mypy --strict --warn-unused-ignores (and
pyright) from tests/unit/test_typing.py and ``make typecheck``; never run.

Each ``assert_type`` line states a type a user gets. Each line ending in ``# type: ignore[code]``
is a mistake the checker must report: with ``--warn-unused-ignores``, a line that stops failing
fails the check.
"""

# pyright: reportUnnecessaryTypeIgnoreComment=true

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any, assert_type

import aioflow as af
from aioflow.block import Stage


class Frame:
    index: int = 0


class Event:
    label: str = ""


# -- function blocks: typed by the item they take and what they emit ---------------------------


@af.block
async def decode(data: bytes) -> Frame:
    return Frame()


@af.block(workers=4)
async def detect(frame: Frame) -> list[Event]:
    return [Event()]


@af.block
async def split(events: list[Event]) -> AsyncIterator[Event]:
    for event in events:
        yield event


@af.block(executor="thread")
def labels(event: Event) -> Iterator[str]:
    yield event.label


@af.block
def length(text: str, *, scale: int = 1) -> int:
    return len(text) * scale


@af.block(batch=af.Batch(max_size=8))
async def embed(frames: list[Frame]) -> list[float]:
    return [0.0 for _ in frames]


@af.block(batch=af.Batch(max_size=8), executor="thread")
def embed_sync(frames: list[Frame]) -> list[float]:
    return [0.0 for _ in frames]


@af.block(key=lambda event: event.label, state=dict)
def count(event: Event, state: dict[str, int]) -> int:
    state["n"] = state.get("n", 0) + 1
    return state["n"]


@af.block(key=lambda event: event.label, state=dict)
async def count_async(event: Event, state: dict[str, int]) -> tuple[str, int]:
    return event.label, len(state)


@af.block(queue_size=4, overflow="drop_oldest", fair=lambda frame: frame.index, per_key=2)
async def shared(frame: Frame) -> Frame:
    return frame


@af.block(overflow="drop_oldest", serve="newest", key=lambda event: event.label)
async def freshest(event: Event) -> str:
    return event.label


@af.block(batch=af.Batch(8, 0.005, max_per_key=2), fair=lambda f: f.index, ordered=False)
async def embed_fair(frames: list[Frame]) -> list[float]:
    return [0.0 for _ in frames]


assert_type(af.Pipeline(shared), af.Pipeline[Frame, Frame])
assert_type(af.Pipeline(freshest), af.Pipeline[Event, str])
assert_type(af.Pipeline(embed_fair), af.Pipeline[Frame, float])
af.block(serve="latest")  # type: ignore[call-overload]  # "oldest" or "newest"
af.block(per_key="2")  # type: ignore[call-overload]

first: af.Block[bytes, Frame] = decode
second: af.Block[Frame, list[Event]] = detect
assert_type(af.Pipeline(split), af.Pipeline[list[Event], Event])
assert_type(af.Pipeline(labels), af.Pipeline[Event, str])
assert_type(af.Pipeline(length), af.Pipeline[str, int])
assert_type(af.Pipeline(embed), af.Pipeline[Frame, float])
assert_type(af.Pipeline(embed_sync), af.Pipeline[Frame, float])
assert_type(af.Pipeline(count), af.Pipeline[Event, int])
assert_type(af.Pipeline(count_async), af.Pipeline[Event, tuple[str, int]])
wrong: af.Block[str, Frame] = decode  # type: ignore[assignment]

# A decorated function stays callable with its own signature.
call = assert_type(decode(b""), Coroutine[Any, Any, Frame])
call.close()
assert_type(length("abc", scale=2), int)
length("abc", scale="2")  # type: ignore[arg-type]
assert_type(count(Event(), {}), int)
renamed: af.Block[bytes, Frame] = decode.with_options(name="decode_2")
assert_type(decode.with_options(name="decode_2")(b"x"), Coroutine[Any, Any, Frame]).close()


# -- Block subclasses: generic; an untyped one stays valid and Any-typed ----------------------


class Tracker(af.Block[Frame, Event]):
    async def process(self, item: Frame) -> Event:
        return Event()


class Untyped(af.Block):
    async def process(self, item: Any) -> Any:
        return item


tracker: af.Block[Frame, Event] = Tracker()
assert_type(af.Pipeline(Tracker()), af.Pipeline[Frame, Event])
assert_type(af.Pipeline(Untyped()), af.Pipeline[Any, Any])


# -- composition: a >> b is Pipeline[A, C]; a mismatch is an error -----------------------------

assert_type(decode >> Tracker(), af.Pipeline[bytes, Event])
assert_type(decode >> detect >> split >> labels >> length, af.Pipeline[bytes, int])
assert_type(af.Pipeline(decode, detect, split, labels, length), af.Pipeline[bytes, int])
assert_type(af.Pipeline(decode, Tracker(), name="cv"), af.Pipeline[bytes, Event])
assert_type(decode >> Untyped() >> length, af.Pipeline[bytes, int])
assert_type(af.Pipeline(decode, Untyped(), length), af.Pipeline[bytes, int])
assert_type(af.Pipeline(decode, detect) >> split, af.Pipeline[bytes, Event])
assert_type(decode >> af.Pipeline(detect, split), af.Pipeline[bytes, Event])
assert_type(af.Pipeline(af.Pipeline(decode), detect), af.Pipeline[bytes, list[Event]])

# Past eight stages the constructor is typed Any (``>>`` stays typed however long the chain).
nine = [Untyped() for _ in range(9)]
assert_type(af.Pipeline(*nine), af.Pipeline[Any, Any])
assert_type(
    af.Pipeline(nine[0], nine[1], nine[2], nine[3], nine[4], nine[5], nine[6], nine[7], nine[8]),
    af.Pipeline[Any, Any],
)

decode >> length  # type: ignore[operator]
detect >> labels  # type: ignore[operator]
af.Pipeline(decode, detect) >> labels  # type: ignore[operator]
af.Pipeline(decode, length)  # type: ignore[misc]
af.Pipeline(decode, Tracker(), split)  # type: ignore[misc]
af.Pipeline(Tracker)  # type: ignore[call-overload]  # the class, not an instance
af.Pipeline(decode, 42)  # type: ignore[call-overload]


# -- plain functions and lambdas: accepted, typed Any from there on ---------------------------


def to_text(frame: Frame) -> str:
    return str(frame.index)


async def to_text_async(frame: Frame) -> str:
    return str(frame.index)


assert_type(decode >> to_text, af.Pipeline[bytes, Any])
assert_type(decode >> to_text_async, af.Pipeline[bytes, Any])
assert_type(decode >> (lambda frame: frame.index), af.Pipeline[bytes, Any])
assert_type(decode >> functools.partial(to_text), af.Pipeline[bytes, Any])
assert_type((lambda data: data) >> decode, af.Pipeline[Any, Frame])
assert_type(decode >> to_text >> length, af.Pipeline[bytes, int])
assert_type(af.Pipeline(decode, to_text, length), af.Pipeline[Any, Any])
assert_type(af.Pipeline(lambda x: x), af.Pipeline[Any, Any])
decode >> length.__wrapped__  # type: ignore[operator]  # the function takes a str


# -- branch: the tuple of its members' outputs ------------------------------------------------


@af.block
async def classify(frame: Frame) -> str:
    return "cat"


both = af.branch(detect, classify)
assert_type(both, af.Branch[Frame, tuple[list[Event], str]])
assert_type(decode >> both, af.Pipeline[bytes, tuple[list[Event], str]])
assert_type(
    af.branch(Tracker(), classify, detect), af.Branch[Frame, tuple[Event, str, list[Event]]]
)
assert_type(af.branch(classify), af.Branch[Frame, tuple[str]])
assert_type(af.branch(classify, lambda f: f.index), af.Branch[Any, tuple[Any, ...]])
decode >> af.branch(length, classify)  # type: ignore[arg-type]  # length takes a str
branch_stage: Stage[Frame, tuple[list[Event], str]] = both


# -- every: sample-and-hold, one Held(item, result, ...) per input ----------------------------

sampled = af.every(detect, n=5, key=lambda f: f.index)
assert_type(sampled, af.Every[Frame, list[Event]])
assert_type(decode >> sampled, af.Pipeline[bytes, af.Held[Frame, list[Event]]])
assert_type(af.every(classify, per_second=2.5).name, str)
assert_type(af.every(lambda f: f.index, n=2), af.Every[Any, Any])
every_stage: Stage[Frame, af.Held[Frame, list[Event]]] = sampled
af.every(detect, n=5, key=lambda b: b.decode())  # type: ignore[attr-defined]  # a Frame, not bytes
af.every(detect, 5)  # type: ignore[call-overload]  # options are keyword-only


@af.block
async def draw(held: af.Held[Frame, list[Event]]) -> str:
    assert_type(held.item, Frame)
    assert_type(held.result, list[Event])
    assert_type(held.age_items, int)
    assert_type(held.age_s, float)
    assert_type(held.fresh, bool)
    return ""


assert_type(decode >> sampled >> draw, af.Pipeline[bytes, str])
sampled >> length  # type: ignore[operator]  # length takes a str, not a Held


# -- running: run() is list[C], stream() yields C, submit() returns C --------------------------

pipe = decode >> detect >> split


async def main() -> None:
    assert_type(await pipe.run([b"a", b"b"]), list[Event])
    await pipe.run(["not bytes"])  # type: ignore[list-item]
    async for event in pipe.stream([b"a"]):
        assert_type(event, Event)
    async with pipe.open() as running:
        assert_type(running, af.RunningPipeline[bytes, Event])
        assert_type(await running.submit(b"a"), Event)
        await running.submit("a")  # type: ignore[arg-type]
    for _ in pipe.stream([b"a"]):  # type: ignore[attr-defined]
        pass


assert_type(af.run(pipe.run([b"a"])), list[Event])


# -- options: an unknown option is an error ---------------------------------------------------

af.block(retry=3)  # type: ignore[call-overload]
