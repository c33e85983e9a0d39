"""Random pipelines under random faults, as a user's outside tester would inject them.

Each seed builds a pipeline that mixes the kinds of stage (async, thread and process blocks,
batches, keyed blocks with state and eviction, branches, ``af.every``, generators and filters,
unordered blocks, leaky edges with ``drop_oldest``/``drop_newest``/``max_age``/``fair``, retries,
``on_error="skip"`` and dead letters), feeds it hostile items (``None``, NaN, a huge int, bytes,
unhashable and unpicklable objects, a large array, items that make a stage raise, return what
cannot be pickled or a batch of the wrong length, a worker process kill itself), lets the source
fail, kills process workers from outside with SIGKILL, and stops the caller at a random moment
(``asyncio.wait_for``, cancelling a consumer task after some outputs, leaving ``stream()``
early, cancelling ``submit()`` callers and the ``open()`` session).

After every run, however it ended, it checks what a user relies on:

- the caller got its outputs, an ``ExceptionGroup`` of ``BlockError`` naming a block of the
  pipeline (or ``<source>``) with the cause attached, or the cancellation it asked for, and
  never waited on a hang (a generous bound that only a hang exceeds);
- the books balance for every block, and what a stage emitted is what the next one received
  (nothing lost between stages);
- every teardown ran once per setup, and every keyed state made was evicted at the end;
- no task, thread, worker process or shared-memory segment of the run is left;
- the same pipeline object runs again, clean, and computes the reference.

The seeds are fixed (``SEEDS``), so a failure is reproduced by its test id.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import math
import multiprocessing
import os
import random
import signal
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Hashable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from random_fault_targets import LibraryStop, plain, poke, raise_library_stop

import aioflow as af

pytestmark = pytest.mark.integration

#: A run ends within this many seconds of its end being asked for; only a hang exceeds it.
BOUND_S = 30.0

#: The seeds of the quick variants; ``SLOW_SEEDS`` run more items and more process blocks.
SEEDS = (1, 2, 3, 5, 8, 13, 21, 34, 55, 89)
SLOW_SEEDS = (144, 233, 377, 610)
#: The seeds of the variant with threads racing the loop: ``SEEDS``, and 49 (an async generator
#: block before a thread generator block, in ``open()``: it hung on a lost wake-up)
RACING_SEEDS = (*SEEDS, 49)

KINDS = (
    "async",
    "thread",
    "process",
    "batch",
    "keyed",
    "gen",
    "filter",
    "branch",
    "every",
    "leaky",
)
MODES = ("complete", "wait_for", "cancel_after_outputs", "leave_stream", "open")


class SourceBoom(Exception):
    """What a failing source raises."""


def _key(x: Any) -> Hashable:
    """The key (camera) of an item; unhashable hostile items make it raise TypeError."""
    return hash(plain(x)) % 3


@dataclass
class Record:
    """What the stages did, for the checks after the run."""

    setups: Counter[str] = field(default_factory=Counter)
    teardowns: Counter[str] = field(default_factory=Counter)
    states: Counter[str] = field(default_factory=Counter)
    evicted: Counter[str] = field(default_factory=Counter)
    dead: Counter[str] = field(default_factory=Counter)
    flaky_seen: set[tuple[str, str]] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)


def check(v: Any, name: str, record: Record) -> None:
    """Raise what the item ``v`` asks a stage named ``name`` to raise."""
    if not isinstance(v, str):
        return
    if v == "raise":
        msg = f"{name} refuses 'raise'"
        raise ValueError(msg)
    if v == "cancelled_error":
        raise asyncio.CancelledError  # a user's own CancelledError: an item failure
    if v == "library_stop":
        raise LibraryStop(name)  # a BaseException, not an interrupt: an item failure
    if v == "keyboard_interrupt":
        raise KeyboardInterrupt
    if v == "system_exit":
        raise SystemExit(3)
    if v.startswith("flaky"):
        with record.lock:
            first = (name, v) not in record.flaky_seen
            record.flaky_seen.add((name, v))
        if first:
            msg = f"{name}: {v} fails once"
            raise ConnectionError(msg)


class Keyed(af.Block):
    """A keyed block with per-key state, setup/teardown and eviction, all recorded."""

    def __init__(self, record: Record, **options: Any) -> None:
        super().__init__(**options)
        self.record = record

    async def setup(self) -> None:
        await asyncio.sleep(0)
        self.record.setups[self.block_name] += 1

    def create_state(self, key: Hashable) -> Any:
        self.record.states[self.block_name] += 1
        return {"n": 0}

    async def process(self, item: Any, state: Any) -> Any:
        v = plain(item)
        check(v, self.block_name, self.record)
        state["n"] += 1
        await asyncio.sleep(0)
        return v

    async def evict(self, key: Hashable, state: Any) -> None:
        self.record.evicted[self.block_name] += 1

    async def teardown(self) -> None:
        await asyncio.sleep(0)
        self.record.teardowns[self.block_name] += 1


@dataclass
class Plan:
    """A built pipeline and what the checks need to know about it."""

    pipe: af.Pipeline
    stages: list[str]  # top-level stage names, in order
    names: set[str]  # every block name, members included
    kinds: list[str]
    lossless: bool  # clean items all come out (no leaky edge)
    ordered: bool  # outputs keep input order
    mult: int  # outputs per clean item (generators)
    filters: bool  # multiples of 5 are filtered out
    has_process: bool
    record: Record
    prefix: str
    caps: dict[str, int]  # how many items each plain top-level block may hold

    def expected(self, items: list[int]) -> list[int]:
        out: list[int] = []
        for x in items:
            if self.filters and x % 5 == 0:
                continue
            out.extend([x] * self.mult)
        return out


def _on_error(rng: random.Random, name: str, record: Record) -> dict[str, Any]:
    choice = rng.choice(("raise", "raise", "skip", "retry", "dead_letter"))
    if choice == "skip":
        return {"on_error": "skip"}
    if choice == "retry":
        return {"on_error": af.Retry(attempts=3, backoff=0.001)}
    if choice == "dead_letter":

        def sink(item: Any, err: af.BlockError) -> None:
            assert err.block == name
            record.dead[name] += 1

        return {"dead_letter": sink, "on_error": rng.choice(("raise", "skip"))}
    return {}


def member(rng: random.Random, name: str, record: Record, kind: str) -> af.Block[Any, Any]:
    """A block inside a branch or an ``af.every``: one output per input."""
    opts = {"name": name, "workers": rng.randint(1, 3)} | _on_error(rng, name, record)
    if kind == "process":
        opts.pop("dead_letter", None)
        return af.block(executor="process", **opts)(poke)
    if kind == "batch":

        async def batched(xs: list[Any]) -> list[Any]:
            vs = [plain(x) for x in xs]
            for v in vs:
                check(v, name, record)
            await asyncio.sleep(0)
            return vs

        return af.block(batch=af.Batch(max_size=3, max_wait=0.002), **opts)(batched)
    if kind == "thread":

        def threaded(x: Any) -> Any:
            v = plain(x)
            check(v, name, record)
            return v

        return af.block(executor="thread", **opts)(threaded)

    async def step(x: Any) -> Any:
        v = plain(x)
        check(v, name, record)
        await asyncio.sleep(0)
        return v

    return af.block(**opts)(step)


def build(rng: random.Random, *, slow: bool, racing: bool = False) -> Plan:
    """A random pipeline. ``racing``: its leaky stages run in threads (the engine's fast path,
    whose threads take their items from the leaky edge themselves), drawn as they would be
    otherwise."""
    prefix = f"rf{uuid.uuid4().hex[:6]}_"
    record = Record()
    n = rng.randint(2, 5 if slow else 4)
    kinds = [rng.choice(KINDS) for _ in range(n)]
    if slow and not {"process", "branch", "every"} & set(kinds):
        kinds[rng.randrange(n)] = "process"
    stages: list[Any] = []
    names: set[str] = set()
    top: list[str] = []
    lossless = ordered = True
    mult = 1
    filters = False
    for i, kind in enumerate(kinds):
        name = f"{prefix}{i}_{kind}"
        top.append(name)
        names.add(name)
        unordered = rng.random() < 0.3
        opts: dict[str, Any] = {
            "name": name,
            "queue_size": rng.randint(1, 8),
            "ordered": not unordered,
        }
        if unordered and kind not in ("leaky", "filter"):
            ordered = False
        delay = rng.choice((0.0, 0.0, 0.0005, 0.002))

        if kind == "async":
            opts |= _on_error(rng, name, record)

            async def step(x: Any, name: str = name, delay: float = delay) -> Any:
                v = plain(x)
                check(v, name, record)
                await asyncio.sleep(delay)
                return v

            stages.append(af.block(workers=rng.randint(1, 4), **opts)(step))
        elif kind == "thread":
            opts |= _on_error(rng, name, record)

            def tstep(x: Any, name: str = name, delay: float = delay) -> Any:
                v = plain(x)
                check(v, name, record)
                time.sleep(delay)
                return v

            stages.append(af.block(executor="thread", workers=rng.randint(2, 3), **opts)(tstep))
        elif kind == "process":
            opts |= _on_error(rng, name, record)
            stages.append(af.block(executor="process", workers=rng.randint(1, 2), **opts)(poke))
        elif kind == "batch":
            opts |= _on_error(rng, name, record)
            batch = af.Batch(max_size=rng.randint(2, 8), max_wait=0.002)

            def bstep(xs: list[Any], name: str = name) -> Any:
                vs = [plain(x) for x in xs]
                for v in vs:
                    check(v, name, record)
                if any(isinstance(v, str) and v == "short_batch" for v in vs):
                    return vs[:-1]  # the wrong number of results: a BlockError naming both
                if any(isinstance(v, str) and v == "batch_not_list" for v in vs):
                    return 42
                return vs

            if rng.random() < 0.5:
                stages.append(
                    af.block(executor="thread", workers=rng.randint(1, 2), batch=batch, **opts)(
                        bstep
                    )
                )
            else:

                async def abstep(xs: list[Any], bstep: Any = bstep) -> Any:
                    await asyncio.sleep(0)
                    return bstep(xs)

                stages.append(af.block(batch=batch, **opts)(abstep))
        elif kind == "keyed":
            opts |= _on_error(rng, name, record)
            evict_after = rng.choice((None, 0.003, 0.05))
            stages.append(
                Keyed(record, key=_key, workers=rng.randint(1, 3), evict_after=evict_after, **opts)
            )
        elif kind == "gen":
            opts |= _on_error(rng, name, record)
            k = rng.randint(1, 4)
            mult *= k

            async def gen(x: Any, name: str = name, k: int = k) -> AsyncIterator[Any]:
                v = plain(x)
                for j in range(k):
                    yield v
                    await asyncio.sleep(0)
                    if j == 0:
                        check(v, name, record)  # half-way: after the first output

            stages.append(af.block(workers=rng.randint(1, 3), **opts)(gen))
        elif kind == "filter":
            filters = True
            opts["ordered"] = True

            def keep(x: Any, name: str = name) -> Iterator[Any]:
                v = plain(x)
                check(v, name, record)
                if not (isinstance(v, int) and v % 5 == 0):
                    yield v

            stages.append(af.block(executor="thread", **opts)(keep))
        elif kind == "branch":
            mkinds = [rng.choice(("async", "thread", "process")) for _ in range(rng.randint(2, 3))]
            members = [member(rng, f"{name}_{j}_{k}", record, k) for j, k in enumerate(mkinds)]
            names |= {m.options.name for m in members}
            stages.append(af.branch(*members, name=name))
        elif kind == "every":
            ikind = rng.choice(("async", "thread", "process", "batch"))
            inner = member(rng, f"{name}_s_{ikind}", record, ikind)
            names.add(inner.options.name)
            stages.append(af.every(inner, n=rng.randint(2, 3), key=_key, name=name))
        elif kind == "leaky":
            lossless = False
            opts |= _on_error(rng, name, record)
            policy = rng.choice(("drop_oldest", "drop_newest", "max_age", "fair"))
            opts["queue_size"] = rng.randint(1, 3)
            if policy == "max_age":
                opts["max_age"] = 0.002
            elif policy == "fair":
                opts |= {"overflow": "drop_oldest", "fair": _key}
            else:
                opts["overflow"] = policy

            async def slow(x: Any, name: str = name) -> Any:
                v = plain(x)
                check(v, name, record)
                await asyncio.sleep(0.001)
                return v

            def tslow(x: Any, name: str = name) -> Any:
                v = plain(x)
                check(v, name, record)
                time.sleep(0.001)
                return v

            workers = rng.randint(1, 2)
            if racing:
                kinds[i] = "leaky_thread"
                stages.append(af.block(executor="thread", workers=workers, **opts)(tslow))
            else:
                stages.append(af.block(workers=workers, **opts)(slow))
        else:  # pragma: no cover - KINDS lists only the kinds above
            msg = f"unknown kind {kind!r}"
            raise AssertionError(msg)
    return Plan(
        pipe=af.Pipeline(*stages, name=prefix),
        stages=top,
        names=names,
        kinds=kinds,
        lossless=lossless,
        ordered=ordered,
        mult=mult,
        filters=filters,
        has_process=any(n.endswith("_process") for n in names),
        record=record,
        prefix=prefix,
        caps=caps(stages, kinds),
    )


#: The capacity of the output after the last block (the engine's, not an option).
FINAL_OUTPUT = 64


def caps(stages: list[Any], kinds: list[str]) -> dict[str, int]:
    """How many items each plain top-level block may hold: ``queue_size + workers`` (a batch
    per worker for a batched block). A plain thread block (the engine's fast path, whose threads
    take their items themselves) hands each result to the event loop while its thread goes on
    with the next item; until the loop takes it, the statistics count that result as still in
    the block, and it is charged to the capacity of the block's output instead: so those may
    hold as many more as the next queue takes."""
    found = {}
    for i, st in enumerate(stages):
        if not isinstance(st, af.Block):
            continue
        opts = st.options
        cap = opts.queue_size + opts.workers * (opts.batch.max_size if opts.batch else 1)
        if kinds[i] in ("thread", "filter", "leaky_thread"):
            nxt = stages[i + 1] if i + 1 < len(stages) else None
            cap += nxt.options.queue_size if isinstance(nxt, af.Block) else FINAL_OUTPUT
        found[opts.name] = cap
    return found


# -- the hostile input ------------------------------------------------------------------------

HOSTILE: tuple[Callable[[], Any], ...] = (
    lambda: None,
    lambda: math.nan,
    lambda: 10**400,
    lambda: "text",
    lambda: b"\x00bytes",
    lambda: [1, 2],  # unhashable: a key function raises TypeError
    lambda: {"a": 1},
    lambda: threading.Lock(),  # unpicklable: a process block cannot take it
    lambda: np.zeros((256, 256, 3), np.uint8),  # by shared memory to a process block
    lambda: "raise",
    lambda: "flaky1",
    lambda: "flaky2",
    lambda: "cancelled_error",
    lambda: "library_stop",
    lambda: "short_batch",
    lambda: "batch_not_list",
    lambda: "die",
    lambda: "unpicklable_result",
)


@dataclass
class Source:
    """The input: clean ints with hostile items among them; it may fail after some items."""

    items: list[Any]
    fail_after: int | None
    is_async: bool
    pulled: int = 0

    def _sync(self) -> Iterator[Any]:
        for i, x in enumerate(self.items):
            if i == self.fail_after:
                msg = f"the source fails after {i} items"
                raise SourceBoom(msg)
            self.pulled += 1
            yield x

    async def _async(self) -> AsyncIterator[Any]:
        for x in self._sync():
            yield x
            await asyncio.sleep(0)

    def __call__(self) -> Any:
        return self._async() if self.is_async else self._sync()


def make_source(rng: random.Random, *, hostile: bool, count: int, mode: str) -> Source:
    items: list[Any] = list(range(count))
    if hostile:
        for _ in range(rng.randint(1, 4)):
            items.insert(rng.randrange(len(items) + 1), rng.choice(HOSTILE)())
    fail_after = rng.randrange(len(items) + 1) if hostile and rng.random() < 0.25 else None
    if mode == "open":
        fail_after = None  # submit() callers hand their own items in
    return Source(items, fail_after, rng.random() < 0.5)


# -- driving ----------------------------------------------------------------------------------


@dataclass
class Outcome:
    outputs: list[Any] = field(default_factory=list)
    error: BaseException | None = None
    cancelled: bool = False  # the caller was cancelled (as the test asked)
    ended: bool = False  # the run reached the end of its stream
    answers: list[Any] = field(default_factory=list)  # open(): what each submit() got


async def drive(plan: Plan, source: Source, mode: str, rng: random.Random) -> Outcome:
    out = Outcome()
    pipe = plan.pipe
    try:
        if mode == "complete":
            out.outputs = await pipe.run(source())
            out.ended = True
        elif mode == "wait_for":
            out.outputs = await asyncio.wait_for(pipe.run(source()), rng.uniform(0.001, 0.08))
            out.ended = True
        elif mode == "cancel_after_outputs":
            k = rng.randint(0, 20)
            reached = asyncio.Event()

            async def consume() -> None:
                async for y in pipe.stream(source()):
                    out.outputs.append(y)
                    if len(out.outputs) >= k:
                        reached.set()
                out.ended = True

            task = asyncio.create_task(consume())
            waiter = asyncio.create_task(reached.wait())
            await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiter
            await task
        elif mode == "leave_stream":
            k = rng.randint(0, 20)
            async with contextlib.aclosing(pipe.stream(source())) as stream:
                async for y in stream:
                    out.outputs.append(y)
                    if len(out.outputs) >= k:
                        break
                else:
                    out.ended = True
        else:
            await drive_open(plan, source, rng, out)
    except asyncio.CancelledError:
        out.cancelled = True
    except TimeoutError:
        assert mode == "wait_for"
        out.cancelled = True
    except BaseException as exc:  # checked by the caller
        out.error = exc
    return out


async def drive_open(plan: Plan, source: Source, rng: random.Random, out: Outcome) -> None:
    """``open()``: concurrent ``submit()`` callers, some cancelled at random moments; the session
    itself is cancelled at a random moment, or left normally."""
    cancel_session = rng.random() < 0.5
    session_moment = rng.uniform(0.001, 0.05)

    async def session() -> None:
        async with plan.pipe.open() as running:
            sem = asyncio.Semaphore(rng.randint(1, 16))
            callers: list[asyncio.Task[Any]] = []

            xs = source.items  # (a caller's own items: the source does not fail here)
            for x in xs:
                await sem.acquire()
                callers.append(asyncio.create_task(running.submit(x)))
                # (a callback: a caller cancelled before it starts runs no code of its own)
                callers[-1].add_done_callback(lambda _: sem.release())
                if rng.random() < 0.1:
                    callers[-1].cancel()
                elif rng.random() < 0.1:
                    victim = callers[-1]
                    asyncio.get_running_loop().call_later(rng.uniform(0, 0.003), victim.cancel)
            done = await asyncio.gather(*callers, return_exceptions=True)
            out.answers = list(zip(xs, done, strict=True))

    task = asyncio.create_task(session())
    if cancel_session:
        await asyncio.wait([task], timeout=session_moment)
        task.cancel()
    await task


async def kill_workers(rng: random.Random, plan: Plan) -> int:
    """SIGKILL random process-block workers at random moments; how many it killed."""
    killed = 0
    for _ in range(rng.randint(1, 3)):
        await asyncio.sleep(rng.uniform(0.0, 0.03))
        children = [p for p in multiprocessing.active_children() if p.pid is not None]
        if children:
            victim = rng.choice(children)
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim.pid, signal.SIGKILL)  # type: ignore[arg-type]
                killed += 1
    return killed


# -- checking ---------------------------------------------------------------------------------


def check_error(exc: BaseException, plan: Plan, *, faulty: bool) -> None:
    """The error of a failed run names a block of this pipeline and carries its cause."""
    assert faulty, f"a run with no fault failed: {exc!r}"
    assert isinstance(exc, ExceptionGroup), f"not a group: {exc!r}"
    for err in exc.exceptions:
        assert isinstance(err, af.BlockError), f"not a BlockError: {err!r}"
        assert err.block in plan.names | {"<source>"}, err.block
        assert err.__cause__ is not None, err
        if err.block == "<source>":
            assert isinstance(err.__cause__, SourceBoom), err
            assert err.phase == "source"


def check_answer(x: Any, answer: Any) -> None:
    """What one ``submit()`` caller got."""
    if isinstance(answer, af.BlockError):
        assert answer.__cause__ is not None
    elif isinstance(answer, BaseException):
        assert isinstance(answer, af.ItemDropped | af.PipelineClosed | asyncio.CancelledError), (
            f"submit({x!r}) raised {answer!r}"
        )
    elif isinstance(x, int):
        values = answer if isinstance(answer, list) else [answer]
        assert all(plain(v) == x for v in values), (x, answer)


COUNTS = (
    "received",
    "completed",
    "emitted",
    "dropped",
    "skipped",
    "dead_letters",
    "failed",
    "retried",
    "in_flight",
    "queue_depth",
)


def check_moment(plan: Plan) -> None:
    """What holds at every moment of a run: the books balance, no count is negative, and a
    block holds at most ``queue_size + workers`` items."""
    for name, rec in plan.pipe.statistics().items():
        assert rec.balanced, (name, rec)
        negative = {c: getattr(rec, c) for c in COUNTS if getattr(rec, c) < 0}
        assert not negative, (name, negative, rec)
        cap = plan.caps.get(name)
        if cap is not None:
            assert rec.in_flight + rec.queue_depth <= cap, (name, cap, rec)


async def watch(plan: Plan, errors: list[BaseException], period: float = 0.001) -> None:
    """Check :func:`check_moment` every ``period`` seconds (0: at every turn of the event loop)
    until cancelled; keep what failed (a statistics read that raises too)."""
    while True:
        try:
            check_moment(plan)
        except (AssertionError, RuntimeError) as exc:
            errors.append(exc)
            return
        await asyncio.sleep(period)


def check_books(plan: Plan, pulled: int | None, *, ended: bool) -> None:
    """Every block's books balance. After a run that ended (end of stream), what a stage
    emitted is what the next received; after an error or a cancellation the outputs made and
    not handed on yet (waiting for room, or for their turn) are gone with the run, so the next
    received at most as many."""
    check_moment(plan)
    stats = plan.pipe.statistics()
    if ended:
        for name, rec in stats.items():
            assert rec.in_flight == rec.queue_depth == 0, (name, rec)
    for before, after in zip(plan.stages, plan.stages[1:], strict=False):
        made, got = stats[before].emitted, stats[after].received
        if ended:
            assert got == made, f"{before} emitted {made} items but {after} received {got}"
        else:
            assert got <= made, f"{before} emitted {made} items but {after} received {got}"
    if pulled is not None:
        first = stats[plan.stages[0]].received
        assert first == pulled if ended else first <= pulled, (first, pulled)
    for name, count in plan.record.dead.items():
        assert stats[name].dead_letters == count, (name, stats[name].dead_letters, count)


def check_nothing_left(
    plan: Plan, tasks: set[asyncio.Task[Any]], threads: set[threading.Thread]
) -> None:
    left = {t for t in asyncio.all_tasks() if t not in tasks and not t.done()}
    assert left == set(), f"tasks left behind: {left}"
    extra = [t.name for t in threading.enumerate() if t not in threads and t.is_alive()]
    assert extra == [], f"threads left behind: {extra}"
    assert multiprocessing.active_children() == []
    assert glob.glob(f"/dev/shm/aioflow_{plan.prefix}*") == []
    record = plan.record
    assert record.setups == record.teardowns, (record.setups, record.teardowns)


async def scenario(seed: int, *, slow: bool, racing: bool = False) -> None:
    """One seed's scenario. ``racing``: leaky stages run in threads, and the statistics are
    checked at every turn of the event loop (the caller sets a short switch interval)."""
    rng = random.Random(seed)
    plan = build(rng, slow=slow, racing=racing)
    mode = rng.choice(MODES)
    hostile = rng.random() < 0.7
    source = make_source(
        rng, hostile=hostile, count=rng.randint(20, 200 if slow else 80), mode=mode
    )
    kill = plan.has_process and rng.random() < 0.6
    faulty = hostile or kill
    desc = f"seed={seed} kinds={plan.kinds} mode={mode} kill={kill}"
    hostile_items = [x for x in source.items if not isinstance(x, int) or isinstance(x, bool)]
    desc += f" hostile={hostile_items!r:.200} fail_after={source.fail_after}"

    tasks = asyncio.all_tasks()
    threads = set(threading.enumerate())
    moments: list[BaseException] = []
    watcher = asyncio.create_task(watch(plan, moments, 0.0 if racing else 0.001))
    run = asyncio.create_task(drive(plan, source, mode, rng))
    killer = asyncio.create_task(kill_workers(rng, plan)) if kill else None
    done, _ = await asyncio.wait([run], timeout=BOUND_S)
    watcher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watcher
    assert not moments, (desc, moments)
    if killer is not None:
        killer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await killer
    assert done, f"the run hung: {desc}"
    out = run.result()

    if out.error is not None:
        check_error(out.error, plan, faulty=faulty)
    for x, answer in out.answers:
        check_answer(x, answer)
    if out.ended and mode in ("complete", "wait_for"):
        # A complete run: every clean item came out (or was dropped by a leaky edge).
        clean = [x for x in source.items[: source.pulled] if type(x) is int]
        got = Counter(plain(y) for y in out.outputs if type(plain(y)) is int)
        expected = Counter(plan.expected(clean))
        if plan.lossless and not faulty:
            assert got == expected, desc
        else:
            assert got <= expected, (desc, got - expected)
    check_books(plan, source.pulled if mode != "open" else None, ended=out.ended)
    check_nothing_left(plan, tasks, threads)
    if out.ended:
        # The stream ended: every keyed state made was evicted.
        assert plan.record.states == plan.record.evicted, (desc, plan.record)

    # The same pipeline runs again, clean, and computes the reference.
    plan.record.flaky_seen.clear()
    plan.record.dead.clear()
    clean_items = list(range(30))
    try:
        again = await asyncio.wait_for(plan.pipe.run(clean_items), BOUND_S)
    except TimeoutError:
        pytest.fail(f"the clean rerun hung: {desc}")
    values = [plain(y) for y in again]
    expected_again = plan.expected(clean_items)
    if plan.lossless:
        if plan.ordered:
            assert values == expected_again, desc
        else:
            assert sorted(values) == sorted(expected_again), desc
    else:
        assert Counter(values) <= Counter(expected_again), desc
    check_books(plan, len(clean_items), ended=True)
    check_nothing_left(plan, tasks, threads)


@pytest.mark.parametrize("seed", SEEDS)
async def test_random_faults_leave_answers_balanced_books_and_nothing_behind(seed: int) -> None:
    await scenario(seed, slow=False)


@pytest.mark.parametrize("seed", RACING_SEEDS)
async def test_random_faults_with_threads_racing_the_loop(seed: int) -> None:
    """The same scenarios with the leaky stages run in threads, the interpreter switching
    threads as often as it can and the statistics read at every turn of the event loop: a race
    between a thread block's threads and the loop (reading or changing what they take items
    from) shows as a failed read, books that do not balance, a hang or a lost item."""
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        await scenario(seed, slow=False, racing=True)
    finally:
        sys.setswitchinterval(switch)


@pytest.mark.slow
@pytest.mark.parametrize("seed", SLOW_SEEDS)
async def test_random_faults_with_process_blocks_and_more_items(seed: int) -> None:
    await scenario(seed, slow=True)


# -- KeyboardInterrupt and SystemExit from the user's code --------------------------------------

INTERRUPT_SEEDS = (4, 7, 12, 24, 27)


async def _interrupted(plan: Plan, items: list[Any], mode: str) -> list[Any]:
    if mode == "run":
        return await plan.pipe.run(items)
    if mode == "stream":
        return [y async for y in plan.pipe.stream(items)]
    async with plan.pipe.open() as running:
        outs: list[Any] = []
        for x in items:
            with contextlib.suppress(af.ItemDropped):
                outs.append(await running.submit(x))
        return outs


@pytest.mark.parametrize("seed", INTERRUPT_SEEDS)
def test_an_interrupt_from_a_random_stage_reaches_the_caller_bare_and_the_pipeline_runs_again(
    seed: int,
) -> None:
    """A KeyboardInterrupt or SystemExit raised by a stage's code stops the run: the exception
    itself reaches the caller (and, as in any asyncio program, leaves the event loop), every
    setup is torn down, nothing is left, and the pipeline object runs again on a new loop."""
    rng = random.Random(seed)
    plan = build(rng, slow=False)
    mode = rng.choice(("run", "stream", "open"))
    exc_type: type[BaseException] = rng.choice((KeyboardInterrupt, SystemExit))
    items: list[Any] = list(range(rng.randint(5, 40)))
    marker = "keyboard_interrupt" if exc_type is KeyboardInterrupt else "system_exit"
    items.insert(rng.randrange(len(items) + 1), marker)
    desc = f"seed={seed} kinds={plan.kinds} mode={mode} {marker} at {items.index(marker)}"
    threads = set(threading.enumerate())
    in_process = [k for k in plan.kinds if k != "process"]
    # The run is the loop's main task, awaited bare: a task of the test's own between (such as
    # asyncio.wait_for's) would re-raise the interrupt again when the runner closes. A hang is
    # caught by the suite's per-test timeout.
    with asyncio.Runner() as runner:
        try:
            runner.run(_interrupted(plan, items, mode))
        except exc_type:
            pass  # (process blocks pass the marker on: it is raised on the loop or a thread)
        else:
            # The item never reached a stage that raises (a leaky edge dropped it first).
            assert not plan.lossless or not in_process, desc
    assert plan.record.setups == plan.record.teardowns, (desc, plan.record)
    extra = [t.name for t in threading.enumerate() if t not in threads and t.is_alive()]
    assert extra == [], f"threads left behind: {extra} ({desc})"
    assert multiprocessing.active_children() == []
    for name, rec in plan.pipe.statistics().items():
        assert rec.balanced, (desc, name, rec)

    clean = list(range(20))
    with asyncio.Runner() as runner:
        again = runner.run(asyncio.wait_for(plan.pipe.run(clean), BOUND_S))
    values = [plain(y) for y in again]
    if plan.lossless:
        assert sorted(values) == sorted(plan.expected(clean)), desc
    else:
        assert Counter(values) <= Counter(plan.expected(clean)), desc
    assert plan.record.setups == plan.record.teardowns, (desc, plan.record)


# -- regressions found by the random faults ---------------------------------------------------


def _library_stop_block(kind: str, **options: Any) -> af.Block[Any, Any]:
    """A block whose code raises ``LibraryStop`` (a ``BaseException``, not an ``Exception``,
    as pytest's ``Failed``) for the item 3."""

    def stop(x: Any) -> None:
        if x == 3:
            raise LibraryStop("the library gave up on 3")

    if kind == "process":
        return af.block(executor="process", name="b", **options)(raise_library_stop)
    if kind == "thread":

        def threaded(x: Any) -> Any:
            stop(x)
            return x

        return af.block(executor="thread", name="b", **options)(threaded)
    if kind == "generator":

        async def gen(x: Any) -> AsyncIterator[Any]:
            stop(x)
            yield x

        return af.block(name="b", **options)(gen)
    if kind == "thread_generator":

        def tgen(x: Any) -> Iterator[Any]:
            stop(x)
            yield x

        return af.block(executor="thread", name="b", **options)(tgen)
    if kind == "batch":

        async def batch(xs: list[Any]) -> list[Any]:
            for x in xs:
                stop(x)
            return xs

        return af.block(name="b", batch=af.Batch(max_size=1, max_wait=0.001), **options)(batch)

    async def step(x: Any) -> Any:
        stop(x)
        await asyncio.sleep(0)
        return x

    return af.block(name="b", **options)(step)


LIBRARY_STOP_KINDS = ("async", "thread", "generator", "thread_generator", "batch", "process")


@pytest.mark.parametrize("kind", LIBRARY_STOP_KINDS)
async def test_a_base_exception_from_user_code_is_an_item_failure_naming_the_block(
    kind: str,
) -> None:
    """A ``BaseException`` subclass that is not an interrupt (a library's own, as pytest's
    ``Failed``) used to escape as a bare ``BaseExceptionGroup`` naming no block, ignore
    ``on_error`` and, in ``open()``, stop the whole service: every caller got
    ``PipelineClosed``. It is an item failure like any other exception."""
    pipe = af.Pipeline(_library_stop_block(kind))
    with pytest.raises(ExceptionGroup) as caught:
        await pipe.run(range(6))
    (err,) = caught.value.exceptions
    assert isinstance(err, af.BlockError)
    assert err.block == "b"
    assert err.phase == "process"
    assert err.item == "3"
    assert isinstance(err.__cause__, LibraryStop)
    assert pipe.statistics()["b"].failed == 1

    async with pipe.open() as running:
        answers = await asyncio.gather(
            *(running.submit(x) for x in range(6)), return_exceptions=True
        )
        assert await running.submit(10) in (10, [10])  # the service goes on
    failure = answers.pop(3)
    assert isinstance(failure, af.BlockError)
    assert isinstance(failure.__cause__, LibraryStop)
    assert [a[0] if isinstance(a, list) else a for a in answers] == [0, 1, 2, 4, 5]

    skipping = af.Pipeline(_library_stop_block(kind, on_error="skip"))
    assert await skipping.run(range(6)) == [0, 1, 2, 4, 5]
    assert skipping.statistics()["b"].skipped == 1


async def test_a_base_exception_from_setup_teardown_or_source_is_a_block_error() -> None:
    class FailingSetup(af.Block):
        async def setup(self) -> None:
            raise LibraryStop("no model")

        async def process(self, item: Any) -> Any:
            return item

    class FailingTeardown(af.Block):
        def process(self, item: Any) -> Any:
            return item

        def teardown(self) -> None:  # type: ignore[override]  # (in the block's thread)
            raise LibraryStop("device busy")

    def failing_source() -> Iterator[int]:
        yield 1
        raise LibraryStop("camera gone")

    async def errors(pipe: af.Pipeline, items: Any) -> list[tuple[str, str]]:
        with pytest.raises(ExceptionGroup) as caught:
            await pipe.run(items)
        found = []
        for err in caught.value.exceptions:
            assert isinstance(err, af.BlockError)
            assert isinstance(err.__cause__, LibraryStop)
            found.append((err.block, err.phase))
        return found

    assert await errors(af.Pipeline(FailingSetup()), range(3)) == [("FailingSetup", "setup")]
    assert await errors(af.Pipeline(FailingTeardown(executor="thread")), range(3)) == [
        ("FailingTeardown", "teardown")
    ]
    stage = af.block(name="s")(_sleepless)
    assert await errors(af.Pipeline(stage), failing_source()) == [("<source>", "source")]


async def _sleepless(x: Any) -> Any:
    return x


async def test_a_base_exception_from_a_dead_letter_sink_or_an_every_key_fails_only_the_item() -> (
    None
):
    """A dead-letter sink, or ``af.every``'s key function, raising a ``BaseException`` that is
    not an interrupt used to stop the whole run (a bare ``BaseExceptionGroup``; in ``open()``
    every caller got ``PipelineClosed``). The sink failing fails the item with its own error
    (logged), the key failing fails the item, as an ``Exception`` from them does."""

    def sink(item: Any, err: af.BlockError) -> None:
        raise LibraryStop("the dead-letter queue is gone")

    @af.block(name="b", dead_letter=sink)
    async def refuse_two(x: int) -> int:
        if x == 2:
            raise ValueError("bad frame")
        return x

    def camera(x: int) -> int:
        if x == 2:
            raise LibraryStop("no camera for 2")
        return 0

    @af.block(name="s")
    async def detect(x: int) -> int:
        return x

    for stage, cause in (
        (refuse_two, ValueError),
        (af.every(detect, n=2, key=camera, name="b"), LibraryStop),
    ):
        pipe = af.Pipeline(stage)
        with pytest.raises(ExceptionGroup) as caught:
            await pipe.run(range(4))
        (err,) = caught.value.exceptions
        assert isinstance(err, af.BlockError)
        assert err.block == "b"
        assert isinstance(err.__cause__, cause)
        async with pipe.open() as running:
            answers = await asyncio.gather(
                *(running.submit(x) for x in range(4)), return_exceptions=True
            )
        assert isinstance(answers[2], af.BlockError)
        assert isinstance(answers[2].__cause__, cause)
        assert [plain(a) for i, a in enumerate(answers) if i != 2] == [0, 1, 3]
