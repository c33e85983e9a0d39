"""A seeded sweep of faults a user's outside tester would inject, and what must hold after each.

``test_random_faults`` and ``test_random_cancellation`` cover random pipelines under plain
faults (a ValueError, an unpicklable item, a worker killing itself, a source failing) and
cancellation at random moments. This sweep adds what they leave out:

- *hostile items and exceptions*: items whose ``repr``, ``str`` and attribute lookups raise
  (what the error-message builder reads), items whose ``__reduce__`` raises (a process block
  cannot send them, batched or not) or whose ``__del__`` raises, exceptions whose ``__str__``
  raises, exceptions that
  pickle in a worker process but cannot be unpickled here, exceptions with ``__notes__`` that
  is not a list, a batch function returning one result too few, generators raising after an
  output, arrays of odd dtypes, strides and shapes (0-size, 0-d, byte-swapped, unaligned,
  object, structured, broadcast, a 1080p frame) that must come back from a process block
  intact;
- *more ways of leaving*: a run under ``asyncio.timeout``, runs under timeouts of 0 to 5 ms again
  and again on the same pipeline, a ``stream()`` consumer cancelled after some outputs, leaving
  ``stream()`` early with and without ``aclosing`` (then only the garbage collector closes the
  generator), streaming the same pipeline again right after a ``break``, ``open()`` with
  ``submit()`` callers cancelled at random moments while the others must still get their own
  answers, cancellation while a setup runs and while a teardown runs;
- *process workers killed* with SIGKILL from outside at random moments (often mid-batch),
  beside the items that make a worker kill itself; batches that wait for more items while
  callers are cancelled;
- the mix: async, thread and process blocks with several workers, ordered and not, ``key=``,
  ``af.Batch`` (async, thread and process), ``af.branch``, generators (async and thread),
  ``af.Block`` subclasses with setup/teardown on the loop, in a thread and in worker
  processes, leaky edges (``drop_oldest``, ``max_age``), ``on_error="skip"`` and
  ``af.Retry``.

After every run, however it ended: the caller got its outputs, an ``ExceptionGroup`` of
``BlockError`` s naming a block of the pipeline (in the message too) with the user's
exception (or an ``ExecutorError``) as cause and a message that can be printed, or the
cancellation it asked for; every block's books balance (``received == completed + dropped +
skipped + failed + in_flight + queue_depth``), and after a run that reached its end each stage
received what the one before emitted; every setup that completed had one teardown, which ran to
its end; no task, thread, child process or ``/dev/shm/aioflow*`` segment is left; what came out
is what went in (ints and odd arrays intact).

The seeds are fixed: a failure is reproduced by its test id.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import glob
import multiprocessing
import os
import random
import signal
import sys
import tempfile
import threading
import traceback
import uuid
import weakref
from collections import Counter
from collections.abc import AsyncIterator, Hashable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from sweep_targets import (
    FAULTS,
    AsyncLife,
    DelRaises,
    Marker,
    NeedsTwo,
    ProcLife,
    ReduceRaises,
    ReprRaises,
    StrRaises,
    ThreadLife,
    async_batch_fn,
    async_gen,
    async_step,
    batch_fn,
    camera,
    life_counts,
    odd_arrays,
    proc_batch,
    proc_step,
    same,
    thread_gen,
    thread_step,
    value,
)

import aioflow as af

pytestmark = pytest.mark.integration

#: Only a hang takes this long (the machine is shared: slowness is not what this catches).
BOUND_S = 30.0

#: The seeds of the suite; ``AIOFLOW_SWEEP_SEEDS=1-500`` sweeps others (a soak run by hand).
SEEDS = tuple(range(1, 25))
if os.environ.get("AIOFLOW_SWEEP_SEEDS"):
    _low, _, _high = os.environ["AIOFLOW_SWEEP_SEEDS"].partition("-")
    SEEDS = tuple(range(int(_low), int(_high or _low) + 1))

IN_PROCESS = (
    "async",
    "thread",
    "gen_async",
    "gen_thread",
    "batch_async",
    "batch_thread",
    "keyed_async",
    "keyed_thread",
    "life_async",
    "life_thread",
    "branch",
    "leaky",
)
PROCESS = ("process", "process_batch", "process_life")
MODES = (
    "complete",
    "timeout",
    "timeouts",
    "stream_cancel",
    "stream_break",
    "stream_dropped",
    "stream_reuse",
    "open",
    "cancel_in_setup",
    "cancel_in_teardown",
)


class SourceBoom(Exception):
    """What a failing source raises."""


# -- building -------------------------------------------------------------------------------


@dataclass
class Plan:
    pipe: af.Pipeline
    stages: list[str]  # top-level names, in order
    names: set[str]  # every block name, branch members included
    kinds: list[str]
    lossless: bool  # no leaky edge
    mult: int  # outputs per clean item (generators double)
    counts: dict[str, int]  # what the in-process life blocks did
    folder: str  # where ProcLife workers record their setups and teardowns
    prefix: str
    has_process: bool
    has_life: bool


def _on_error(rng: random.Random) -> dict[str, Any]:
    choice = rng.choice(("raise", "raise", "skip", "retry"))
    if choice == "skip":
        return {"on_error": "skip"}
    if choice == "retry":
        return {"on_error": af.Retry(attempts=2, backoff=0.001)}
    return {}


def build(rng: random.Random, folder: str, *, processes: bool, life: bool) -> Plan:
    """A pipeline of two to four random stages; ``processes``: one of them runs in worker
    processes; ``life``: one is a block with setup and teardown on the loop or in a thread."""
    prefix = f"fs{uuid.uuid4().hex[:6]}_"
    counts: dict[str, int] = {}
    lock = threading.Lock()
    n = rng.randint(2, 4)
    kinds = [rng.choice(IN_PROCESS) for _ in range(n)]
    places = rng.sample(range(n), 2)
    if life and not any(k.startswith("life") for k in kinds):
        kinds[places[0]] = rng.choice(("life_async", "life_thread"))
    if processes:
        kinds[places[1]] = rng.choice(PROCESS)
    stages: list[Any] = []
    names: set[str] = set()
    top: list[str] = []
    lossless = True
    mult = 1
    for i, kind in enumerate(kinds):
        name = f"{prefix}{i}_{kind}"
        top.append(name)
        names.add(name)
        opts: dict[str, Any] = {
            "name": name,
            "queue_size": rng.randint(1, 6),
            "ordered": rng.random() < 0.7,
            "workers": rng.randint(1, 3),
        } | _on_error(rng)
        # (a longer wait keeps items sitting in a batch while callers are cancelled or a
        # worker is killed)
        batch = af.Batch(max_size=rng.randint(2, 5), max_wait=rng.choice((0.002, 0.03)))
        if kind == "async":
            stages.append(af.block(**opts)(async_step))
        elif kind == "thread":
            stages.append(af.block(executor="thread", **opts)(thread_step))
        elif kind == "gen_async":
            mult *= 2
            stages.append(af.block(**opts)(async_gen))
        elif kind == "gen_thread":
            mult *= 2
            stages.append(af.block(executor="thread", **opts)(thread_gen))
        elif kind == "batch_async":
            stages.append(af.block(batch=batch, **opts)(async_batch_fn))
        elif kind == "batch_thread":
            stages.append(af.block(executor="thread", batch=batch, **opts)(batch_fn))
        elif kind == "keyed_async":
            stages.append(af.block(key=camera, **opts)(async_step))
        elif kind == "keyed_thread":
            stages.append(af.block(executor="thread", key=camera, **opts)(thread_step))
        elif kind == "life_async":
            stages.append(AsyncLife(counts, lock, **opts))
        elif kind == "life_thread":
            stages.append(ThreadLife(counts, lock, executor="thread", **opts))
        elif kind == "branch":
            left = af.block(name=f"{name}_l", **_on_error(rng))(async_step)
            right = af.block(name=f"{name}_r", executor="thread", workers=2)(thread_step)
            names |= {f"{name}_l", f"{name}_r"}
            stages.append(af.branch(left, right, name=name))
        elif kind == "leaky":
            lossless = False
            leak = rng.choice(({"overflow": "drop_oldest"}, {"max_age": 0.003}))
            stages.append(af.block(**(opts | leak | {"queue_size": rng.randint(1, 2)}))(async_step))
        elif kind == "process":
            opts["workers"] = rng.randint(1, 2)
            stages.append(af.block(executor="process", **opts)(proc_step))
        elif kind == "process_batch":
            opts["workers"] = 1
            stages.append(af.block(executor="process", batch=batch, **opts)(proc_batch))
        elif kind == "process_life":
            opts["workers"] = rng.randint(1, 2)
            stages.append(ProcLife(folder, executor="process", **opts))
        else:  # pragma: no cover - the lists above hold only these kinds
            msg = f"unknown kind {kind!r}"
            raise AssertionError(msg)
    return Plan(
        pipe=af.Pipeline(*stages, name=prefix),
        stages=top,
        names=names,
        kinds=kinds,
        lossless=lossless,
        mult=mult,
        counts=counts,
        folder=folder,
        prefix=prefix,
        has_process=processes,
        has_life=any(k.startswith("life") for k in kinds),
    )


# -- the input ------------------------------------------------------------------------------


def hostile_items(rng: random.Random) -> list[Any]:
    """One to three hostile items: a fault marker, an item whose repr/str/attributes raise, an
    unpicklable lock, one whose ``__reduce__`` raises, one whose ``__del__`` raises, or an odd
    array."""
    found: list[Any] = []
    for _ in range(rng.randint(1, 3)):
        pick = rng.random()
        if pick < 0.45:
            found.append(Marker(rng.choice(FAULTS), rng.randrange(1000)))
        elif pick < 0.57:
            found.append(ReprRaises(rng.randrange(1000)))
        elif pick < 0.63:
            found.append(threading.Lock())
        elif pick < 0.7:
            found.append(ReduceRaises(rng.randrange(1000)))
        elif pick < 0.77:
            found.append(DelRaises(rng.randrange(1000)))
        else:
            found.append(rng.choice(odd_arrays())[1])
    return found


@dataclass
class Source:
    items: list[Any]
    fail_after: int | None
    is_async: bool
    hang: bool  # an async source that hangs after its items (until cancelled)
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
        if self.hang:
            await asyncio.Event().wait()

    def __call__(self) -> Any:
        return self._async() if self.is_async else self._sync()


# -- driving --------------------------------------------------------------------------------


@dataclass
class Outcome:
    outputs: list[Any] = field(default_factory=list)
    error: BaseException | None = None
    cancelled: bool = False
    ended: bool = False  # the run reached the end of its stream
    answers: list[tuple[Any, Any]] = field(default_factory=list)  # open(): (item, what it got)
    session_cancelled: bool = False


async def drive(plan: Plan, source: Source, mode: str, rng: random.Random) -> Outcome:
    out = Outcome()
    pipe = plan.pipe
    try:
        if mode == "complete":
            out.outputs = await pipe.run(source())
            out.ended = True
        elif mode == "timeout":
            async with asyncio.timeout(rng.uniform(0.001, 0.15)):
                out.outputs = await pipe.run(source())
                out.ended = True
        elif mode == "timeouts":
            await repeated_timeouts(pipe, source, rng, out)
        elif mode == "stream_cancel":
            await stream_cancelled(pipe, source, rng.randint(0, 12), out)
        elif mode in ("stream_break", "stream_dropped"):
            await stream_left(pipe, source, rng.randint(0, 12), out, closing=mode == "stream_break")
        elif mode == "stream_reuse":
            await stream_reused(pipe, source, rng, out)
        elif mode == "open":
            await drive_open(plan, source, rng, out)
        else:
            await cancel_in_hook(plan, source, mode, out)
    except asyncio.CancelledError:
        # Ours (a cancellation the test made) never reaches here: each is caught where made.
        raise
    except TimeoutError:
        assert mode == "timeout"
        out.cancelled = True
    except BaseException as exc:  # checked by the caller
        out.error = exc
    return out


async def stream_cancelled(pipe: af.Pipeline, source: Source, k: int, out: Outcome) -> None:
    """A consumer of ``stream()`` cancelled once it has ``k`` outputs."""
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
    try:
        await task
    except asyncio.CancelledError:
        out.cancelled = True


async def stream_left(
    pipe: af.Pipeline, source: Source, k: int, out: Outcome, *, closing: bool
) -> None:
    """Leave ``stream()`` after ``k`` outputs: with ``aclosing``, or by dropping the generator
    (the garbage collector, through the loop's async-generator hooks, closes it)."""
    if closing:
        async with contextlib.aclosing(pipe.stream(source())) as stream:
            async for y in stream:
                out.outputs.append(y)
                if len(out.outputs) >= k:
                    out.cancelled = True
                    return
        out.ended = True
        return
    stream = pipe.stream(source())
    try:
        async for y in stream:
            out.outputs.append(y)
            if len(out.outputs) >= k:
                out.cancelled = True
                break
        else:
            out.ended = True
    finally:
        del stream
        gc.collect()  # the loop's finalizer hook schedules its aclose() as a task


async def repeated_timeouts(
    pipe: af.Pipeline, source: Source, rng: random.Random, out: Outcome
) -> None:
    """``run()`` under ``asyncio.timeout`` of 0 to 5 ms, again and again on the same pipeline
    (the cancellation lands at whatever the run awaits then), until one run ends (or fails)."""
    for _ in range(rng.randint(2, 8)):
        source.pulled = 0
        try:
            async with asyncio.timeout(rng.uniform(0, 0.005)):
                out.outputs = await pipe.run(source())
        except TimeoutError:
            out.cancelled = True
            continue
        out.ended = True
        return


async def stream_reused(
    pipe: af.Pipeline, source: Source, rng: random.Random, out: Outcome
) -> None:
    """Leave ``stream()`` by ``break`` after some outputs, then stream the same pipeline again
    to its end. Left with ``aclosing``, the pipeline is free at once; left by a bare
    ``break``, the generator is closed by the loop later, and until then a new run is refused
    with a GraphError that says to use ``aclosing``."""
    k = rng.randint(0, 12)
    closing = rng.random() < 0.6
    if closing:
        async with contextlib.aclosing(pipe.stream(source())) as stream:
            async for _ in stream:
                k -= 1
                if k < 0:
                    out.cancelled = True  # (the first run: its process workers are killed)
                    break
    else:
        async for _ in pipe.stream(source()):
            k -= 1
            if k < 0:
                out.cancelled = True
                break
    source.pulled = 0
    for _ in range(int(BOUND_S / 0.005)):
        refused = ""
        try:
            out.outputs = [y async for y in pipe.stream(source())]
        except af.GraphError as exc:
            refused = str(exc)
        if not refused:
            out.ended = True
            return
        assert not closing, f"the pipeline was not free after aclosing: {refused}"
        assert "aclosing" in refused, refused
        await asyncio.sleep(0.005)  # the loop closes the first run's generator meanwhile
        source.pulled = 0
    msg = "the pipeline was never free again after a stream() left by break"
    raise AssertionError(msg)


async def drive_open(plan: Plan, source: Source, rng: random.Random, out: Outcome) -> None:
    """``open()``: concurrent callers, some cancelled at random moments (before or while they
    wait); the session is cancelled at a random moment or left normally."""
    cancel_session = rng.random() < 0.3
    loop = asyncio.get_running_loop()

    async def session() -> None:
        async with plan.pipe.open() as running:
            sem = asyncio.Semaphore(rng.randint(1, 12))
            callers: list[asyncio.Task[Any]] = []
            for x in source.items:
                await sem.acquire()
                caller = asyncio.create_task(running.submit(x))
                caller.add_done_callback(lambda _: sem.release())
                callers.append(caller)
                roll = rng.random()
                if roll < 0.08:
                    caller.cancel()
                elif roll < 0.2:
                    loop.call_later(rng.uniform(0, 0.004), caller.cancel)
            got = await asyncio.gather(*callers, return_exceptions=True)
            out.answers = list(zip(source.items, got, strict=True))
        out.ended = True

    task = asyncio.create_task(session())
    if cancel_session:
        await asyncio.wait([task], timeout=rng.uniform(0.001, 0.1))
        if not task.done():
            task.cancel()
            out.session_cancelled = True
    try:
        await task
    except asyncio.CancelledError:
        out.cancelled = True


async def cancel_in_hook(plan: Plan, source: Source, mode: str, out: Outcome) -> None:
    """Cancel ``run()`` as soon as a setup (or a teardown) of a life block begins."""
    begun = "setup_begun" if mode == "cancel_in_setup" else "teardown_begun"
    task = asyncio.create_task(plan.pipe.run(source()))
    for _ in range(int(BOUND_S / 0.0005)):
        if task.done() or plan.counts.get(begun, 0) > 0:
            break
        await asyncio.sleep(0.0005)
    task.cancel()
    try:
        out.outputs = await task
        out.ended = True
    except asyncio.CancelledError:
        out.cancelled = True


async def kill_workers(rng: random.Random) -> int:
    """SIGKILL random worker processes at random moments; how many."""
    killed = 0
    for _ in range(rng.randint(1, 2)):
        await asyncio.sleep(rng.uniform(0.0, 0.2))
        children = [p for p in multiprocessing.active_children() if p.pid is not None]
        if children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(rng.choice(children).pid, signal.SIGKILL)  # type: ignore[arg-type]
                killed += 1
    return killed


# -- checking -------------------------------------------------------------------------------

#: What a BlockError's cause may be: the user's exceptions, what a worker process could not
#: send back or died of, a batch's wrong length, a hostile item's attribute (a key function).
CAUSES = (ValueError, StrRaises, NeedsTwo, asyncio.CancelledError, af.ExecutorError, RuntimeError)


def check_block_error(err: BaseException, plan: Plan) -> None:
    assert isinstance(err, af.BlockError), f"not a BlockError: {err!r}"
    assert err.block in plan.names | {"<source>"}, err.block
    text = str(err)  # the message can be printed, and names the block
    assert repr(err.block) in text, text
    repr(err)
    cause = err.__cause__
    assert cause is not None, text
    if err.block == "<source>":
        assert isinstance(cause, SourceBoom), text
        return
    assert isinstance(cause, CAUSES), f"{text}: cause {cause!r}"
    assert not isinstance(cause, TypeError), f"{text}: a TypeError hid the user's exception"


def check_error(exc: BaseException, plan: Plan, *, faulty: bool, desc: str) -> None:
    assert faulty, f"a run with no fault failed ({desc}): {exc!r}"
    assert isinstance(exc, ExceptionGroup), f"not an ExceptionGroup ({desc}): {exc!r}"
    "".join(traceback.format_exception(exc))  # the whole report can be printed
    for err in exc.exceptions:
        check_block_error(err, plan)


def check_answers(out: Outcome, plan: Plan, *, faulty: bool) -> None:
    """What each ``submit()`` caller got: its own output, or an error of its own."""
    for x, answer in out.answers:
        if isinstance(answer, af.BlockError):
            assert faulty, f"submit({x!r}) failed with no fault: {answer}"
            check_block_error(answer, plan)
        elif isinstance(answer, BaseException):
            assert isinstance(
                answer, af.ItemDropped | af.PipelineClosed | asyncio.CancelledError
            ), f"submit({x!r}) raised {answer!r}"
            if isinstance(answer, af.PipelineClosed):
                assert out.session_cancelled or faulty, f"submit({x!r}): {answer}"
            if isinstance(answer, af.ItemDropped) and type(x) is int:
                assert not plan.lossless or faulty, f"submit({x!r}): {answer}"
        elif type(x) is int:
            outputs = answer if isinstance(answer, list) else [answer]
            if plan.lossless:
                assert [value(y) for y in outputs] == [x] * plan.mult, (x, answer)
            else:  # a leaky edge may have dropped some of a generator's outputs (counted)
                assert [value(y) for y in outputs] == [x] * len(outputs), (x, answer)
                assert 1 <= len(outputs) <= plan.mult, (x, answer)


def check_outputs(outputs: list[Any], items: list[Any], plan: Plan, *, faulty: bool) -> None:
    """What came out is what went in: ints (each as many times as the generators make), and
    hostile items intact (odd arrays with their dtype, shape and values)."""
    got = Counter(value(y) for y in outputs if type(value(y)) is int)
    clean = Counter({x: plan.mult for x in items if type(x) is int})
    if plan.lossless and not faulty:
        assert got == clean
    else:
        assert got <= clean, got - clean
    others = [x for x in items if type(x) is not int]
    for y in outputs:
        v = value(y)
        if type(v) is not int:
            assert any(same(x, v) for x in others), f"came out altered: {type(v).__name__}"


def check_books(plan: Plan, *, ended: bool, pulled: int | None) -> None:
    stats = plan.pipe.statistics()
    for name, rec in stats.items():
        assert rec.balanced, f"books of {name} do not balance: {rec}"
        if ended:
            assert rec.in_flight == rec.queue_depth == 0, rec
    for before, after in zip(plan.stages, plan.stages[1:], strict=False):
        made, got = stats[before].emitted, stats[after].received
        if ended:
            assert got == made, f"{before} emitted {made}, {after} received {got}"
        else:
            assert got <= made, f"{before} emitted {made}, {after} received {got}"
    if pulled is not None:
        first = stats[plan.stages[0]].received
        assert first == pulled if ended else first <= pulled, (first, pulled)


def check_lifecycles(plan: Plan, *, clean_end: bool) -> None:
    counts = plan.counts
    assert counts.get("setup", 0) == counts.get("teardown", 0), counts
    assert counts.get("teardown_begun", 0) == counts.get("teardown", 0), counts
    setups, teardowns = life_counts(plan.folder)
    assert teardowns <= setups, (setups, teardowns)
    if clean_end:  # no worker was killed: each ran its teardown
        assert teardowns == setups, (setups, teardowns)


async def wait_for_nothing_left(tasks: set[asyncio.Task[Any]]) -> set[asyncio.Task[Any]]:
    """The tasks of the run still alive after a bounded wait (a generator dropped without
    ``aclosing`` is closed by a task the loop starts when the collector finds it)."""
    left: set[asyncio.Task[Any]] = set()
    for _ in range(int(BOUND_S / 0.005)):
        left = {t for t in asyncio.all_tasks() if t not in tasks and not t.done()}
        if not left and not multiprocessing.active_children():
            break
        await asyncio.sleep(0.005)
    return left


async def check_nothing_left(
    plan: Plan, tasks: set[asyncio.Task[Any]], threads: set[threading.Thread]
) -> None:
    left = await wait_for_nothing_left(tasks)
    assert left == set(), f"tasks left behind: {left}"
    extra = [t.name for t in threading.enumerate() if t not in threads and t.is_alive()]
    assert extra == [], f"threads left behind: {extra}"
    assert multiprocessing.active_children() == []
    assert glob.glob(f"/dev/shm/aioflow_{plan.prefix}*") == []


# -- the sweep ------------------------------------------------------------------------------


def describe(x: Any) -> str:
    if type(x) is Marker:
        return x.what
    shape = getattr(x, "shape", None) if type(x) is not ReprRaises else None
    return type(x).__name__ + (f"{shape}" if shape is not None else "")


async def scenario(seed: int) -> None:
    """One seed's scenario. Items whose ``__del__`` raises are reported to
    ``sys.unraisablehook`` wherever their last reference goes: that, and nothing else, may
    be reported meanwhile."""
    unraised: list[Any] = []
    hook = sys.unraisablehook
    sys.unraisablehook = unraised.append
    try:
        await _scenario(seed)
        gc.collect()
    finally:
        sys.unraisablehook = hook
    for report in unraised:
        assert isinstance(report.exc_value, RuntimeError), report
        assert "no deleting" in str(report.exc_value), report


async def _scenario(seed: int) -> None:
    rng = random.Random(seed)
    processes = rng.random() < 0.35
    mode = rng.choice(MODES)
    with tempfile.TemporaryDirectory() as folder:
        plan = build(rng, folder, processes=processes, life=mode.startswith("cancel_in"))
        items: list[Any] = list(range(rng.randint(5, 40)))
        hostile = rng.random() < 0.75
        if hostile:
            for x in hostile_items(rng):
                items.insert(rng.randrange(len(items) + 1), x)
        is_async = rng.random() < 0.5
        fails = mode != "open" and rng.random() < 0.15
        source = Source(
            items,
            fail_after=rng.randrange(len(items) + 1) if fails else None,
            is_async=is_async,
            hang=is_async and mode == "timeout" and rng.random() < 0.5,
        )
        kill = processes and rng.random() < 0.4
        faulty = hostile or fails or kill
        desc = (
            f"seed={seed} kinds={plan.kinds} mode={mode} kill={kill} fail_after="
            f"{source.fail_after} hostile={[describe(x) for x in items if type(x) is not int]}"
        )

        tasks = asyncio.all_tasks()
        threads = set(threading.enumerate())
        run = asyncio.create_task(drive(plan, source, mode, rng))
        killer = asyncio.create_task(kill_workers(rng)) if kill else None
        done, _ = await asyncio.wait([run], timeout=BOUND_S)
        if killer is not None:
            killer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await killer
        assert done, f"the run hung: {desc}"
        out = run.result()

        if out.error is not None:
            check_error(out.error, plan, faulty=faulty, desc=desc)
        else:
            assert out.ended or out.cancelled, desc
        check_answers(out, plan, faulty=faulty)
        if out.ended and out.error is None and mode != "open":
            check_outputs(out.outputs, items[: source.pulled], plan, faulty=faulty)
        await check_nothing_left(plan, tasks, threads)
        check_books(plan, ended=out.ended, pulled=source.pulled if mode != "open" else None)
        dies = any(type(x) is Marker and x.what == "die" for x in items)
        # (a run cancelled before one that ended, as in "timeouts", killed process workers)
        clean_end = out.ended and not out.cancelled and not kill and not dies
        check_lifecycles(plan, clean_end=clean_end)

        # The same pipeline runs again, clean, and computes the reference.
        before = life_counts(folder)
        clean = list(range(20))
        again = await asyncio.wait_for(plan.pipe.run(clean), BOUND_S)
        check_outputs(again, clean, plan, faulty=False)
        check_books(plan, ended=True, pulled=len(clean))
        await check_nothing_left(plan, tasks, threads)
        check_lifecycles(plan, clean_end=False)
        after = life_counts(folder)
        assert after[0] - before[0] == after[1] - before[1], (before, after)


@pytest.mark.parametrize("seed", SEEDS)
async def test_fault_sweep(seed: int) -> None:
    await scenario(seed)


# -- what the sweep found, one case each ------------------------------------------------------


async def test_a_hostile_item_failing_in_open_fails_only_its_caller() -> None:
    """An item whose attribute lookups raise failed in a keyed block (its key function read an
    attribute): building the error's item summary raised too, and that stopped the whole
    service: every caller got PipelineClosed."""
    stage = af.block(name="per_camera", key=camera, workers=2)(async_step)
    pipe = af.Pipeline(stage)
    async with pipe.open() as running:
        answers = await asyncio.gather(
            *(running.submit(x) for x in (1, ReprRaises(2), 3)), return_exceptions=True
        )
        assert await running.submit(4) == 4  # the service goes on
    assert answers[0] == 1
    assert answers[2] == 3
    err = answers[1]
    assert isinstance(err, af.BlockError), repr(err)
    assert err.block == "per_camera"
    assert isinstance(err.__cause__, RuntimeError)
    assert "ReprRaises" in str(err)  # the item, summarized without its repr
    assert pipe.statistics()["per_camera"].failed == 1
    assert pipe.statistics()["per_camera"].balanced


@pytest.mark.parametrize("executor", ["async", "thread", "process"])
async def test_an_exception_whose_str_raises_is_a_block_error_naming_the_block(
    executor: str,
) -> None:
    """Describing such an exception raised: run() got a bare RuntimeError (no block named), and
    a worker process died of it (the item failed as 'worker died')."""
    name = f"strict_{uuid.uuid4().hex[:6]}"
    if executor == "async":
        stage: af.Block[Any, Any] = af.block(name=name)(async_step)
    else:
        fn = thread_step if executor == "thread" else proc_step
        stage = af.block(name=name, executor="thread" if executor == "thread" else "process")(fn)
    pipe = af.Pipeline(stage)
    with pytest.raises(ExceptionGroup) as caught:
        await pipe.run([1, Marker("str_raises", 0), 2])
    (err,) = caught.value.exceptions
    assert isinstance(err, af.BlockError), repr(err)
    assert err.block == name
    assert isinstance(err.__cause__, StrRaises)
    assert "StrRaises" in str(err)
    assert pipe.statistics()[name].balanced
    assert glob.glob(f"/dev/shm/aioflow_{name}*") == []


async def test_an_exception_from_a_worker_with_notes_that_are_no_list_keeps_its_type() -> None:
    """Adding the remote traceback as a note raised TypeError for an exception whose
    ``__notes__`` is not a list: the item failed with that TypeError instead of the user's
    ValueError."""
    name = f"noted_{uuid.uuid4().hex[:6]}"
    pipe = af.Pipeline(af.block(name=name, executor="process")(proc_step))
    with pytest.raises(ExceptionGroup) as caught:
        await pipe.run([1, Marker("bad_notes", 5), 2])
    (err,) = caught.value.exceptions
    assert isinstance(err, af.BlockError), repr(err)
    assert err.block == name
    assert isinstance(err.__cause__, ValueError), repr(err.__cause__)
    assert "notes of marker 5" in str(err)
    assert pipe.statistics()[name].balanced


async def test_an_every_key_raising_an_exception_whose_str_raises_fails_only_the_item() -> None:
    """af.every's key function: its failure message printed the exception itself, so one whose
    ``__str__`` raises ended the run with a bare RuntimeError naming no block."""

    def strict_camera(x: Any) -> int:
        if type(x) is Marker:
            raise StrRaises
        return 0

    inner = af.block(name="detect")(async_step)
    pipe = af.Pipeline(af.every(inner, n=1, key=strict_camera, name="sampled"))
    with pytest.raises(ExceptionGroup) as caught:
        await pipe.run([1, Marker("x", 0), 2])
    (err,) = caught.value.exceptions
    assert isinstance(err, af.BlockError), repr(err)
    assert err.block == "sampled"
    assert isinstance(err.__cause__, StrRaises)
    assert "StrRaises" in str(err)
    async with pipe.open() as running:
        answers = await asyncio.gather(
            *(running.submit(x) for x in (1, Marker("x", 1), 2)), return_exceptions=True
        )
    assert isinstance(answers[1], af.BlockError)
    held = [answers[0], answers[2]]
    assert [h.item for h in held if isinstance(h, af.Held)] == [1, 2], held


class _Incomparable:
    """A key whose ``==`` raises (hashable, so it passes the hash check)."""

    def __hash__(self) -> int:
        return 1

    def __eq__(self, other: object) -> bool:
        msg = "keys of this kind cannot be compared"
        raise RuntimeError(msg)


@pytest.mark.parametrize("executor", ["async", "thread"])
async def test_a_key_that_cannot_be_compared_fails_its_item_not_the_run(executor: str) -> None:
    """Looking up the key's lane compared it with the keys held: that raised outside the
    guard around the key function, so the run ended with bare RuntimeErrors naming no block
    (in open(), the whole service stopped)."""
    if executor == "async":
        stage: af.Block[Any, Any] = af.block(name="keyed", key=lambda x: _Incomparable())(
            async_step
        )
    else:
        stage = af.block(name="keyed", executor="thread", key=lambda x: _Incomparable())(
            thread_step
        )
    pipe = af.Pipeline(stage)
    with pytest.raises(ExceptionGroup) as caught:
        await pipe.run([1, 2, 3])
    for err in caught.value.exceptions:
        assert isinstance(err, af.BlockError), repr(err)
        assert err.block == "keyed"
        assert isinstance(err.__cause__, RuntimeError)
    assert pipe.statistics()["keyed"].balanced
    async with pipe.open() as running:
        answers = await asyncio.gather(
            *(running.submit(x) for x in (1, 2, 3)), return_exceptions=True
        )
        # The first key was held alone: its item went through; the others failed alone.
        assert answers[0] == 1
        assert all(isinstance(a, af.BlockError) for a in answers[1:]), answers
        with pytest.raises(af.BlockError):  # still serving: not PipelineClosed
            await running.submit(4)
    rec = pipe.statistics()["keyed"]
    assert (rec.completed, rec.balanced) == (1, True)


async def test_an_every_key_that_cannot_be_compared_fails_its_item_not_the_run() -> None:
    """The same for af.every: finding the key's schedule raised outside the guard around the
    key function."""
    inner = af.block(name="detect")(async_step)
    pipe = af.Pipeline(af.every(inner, n=2, key=lambda x: _Incomparable(), name="sampled"))
    async with pipe.open() as running:
        answers = await asyncio.gather(
            *(running.submit(x) for x in (1, 2, 3)), return_exceptions=True
        )
    assert isinstance(answers[0], af.Held), answers
    for err in answers[1:]:
        assert isinstance(err, af.BlockError), repr(err)
        assert err.block == "sampled"
        assert isinstance(err.__cause__, RuntimeError)
    assert all(rec.balanced for rec in pipe.statistics().values())


async def _swallows(x: Any) -> Any:
    """A block's code that swallows the run's cancellation (a common slip: ``except
    BaseException``, a library's retry loop) and returns as if nothing happened."""
    try:
        await asyncio.sleep(0.002)
    except asyncio.CancelledError:
        return x
    return x


async def _swallows_gen(x: Any) -> AsyncIterator[Any]:
    yield await _swallows(x)


async def _swallows_batch(xs: list[Any]) -> list[Any]:
    return [await _swallows(x) for x in xs]


SWALLOWING: dict[str, Any] = {
    "async": lambda: af.block(name="sw", queue_size=4)(_swallows),
    "workers": lambda: af.block(name="sw", workers=3)(_swallows),
    "unordered": lambda: af.block(name="sw", workers=2, ordered=False)(_swallows),
    "keyed": lambda: af.block(name="sw", workers=2, key=lambda x: x % 2)(_swallows),
    "generator": lambda: af.block(name="sw", workers=2)(_swallows_gen),
    "batch": lambda: af.block(name="sw", batch=af.Batch(max_size=3, max_wait=0.002))(
        _swallows_batch
    ),
    "branch": lambda: af.branch(
        af.block(name="sw1")(_swallows), af.block(name="sw2", workers=2)(_swallows), name="sw"
    ),
    "every": lambda: af.every(af.block(name="sw1")(_swallows), n=2, key=lambda x: x % 2),
}


@pytest.mark.parametrize("kind", list(SWALLOWING))
async def test_a_run_whose_code_swallows_the_cancellation_still_ends(kind: str) -> None:
    """asyncio delivers a cancellation once: a block whose code swallowed it went on with the
    next item, then waited for input that never came (the source was cancelled), and the
    cancelled run never ended, nor did the task awaiting it. The engine's waits and the
    return from the user's call check again."""
    tasks = asyncio.all_tasks()
    pipe = af.Pipeline(SWALLOWING[kind](), af.block(name="after", workers=2)(_swallows))
    run = asyncio.create_task(pipe.run(range(10_000)))
    await wait_until_received(pipe, "after", 3)
    run.cancel()
    done, _ = await asyncio.wait([run], timeout=BOUND_S)
    assert done, f"the cancelled run of a {kind} block that swallows cancellations never ended"
    assert run.cancelled()
    assert await wait_for_nothing_left(tasks) == set()
    for name, rec in pipe.statistics().items():
        assert rec.balanced, (name, rec)


async def wait_until_received(pipe: af.Pipeline, name: str, count: int) -> None:
    for _ in range(int(BOUND_S / 0.001)):
        if pipe.statistics()[name].received >= count:
            return
        await asyncio.sleep(0.001)
    msg = f"{name} never received {count} items"
    raise AssertionError(msg)


#: How a thread generator block runs: the fast path (its threads take their items themselves)
#: with one or two workers, and the general path (``timeout=``, ``key=``, and an item retried
#: after its first call failed).
THREAD_GENERATORS: dict[str, dict[str, Any]] = {
    "fast": {},
    "fast_workers": {"workers": 2},
    "timeout": {"timeout": 60.0},
    "timeout_workers": {"timeout": 60.0, "workers": 2},
    "keyed": {"key": lambda x: x % 2},
    "keyed_workers": {"key": lambda x: x % 2, "workers": 2},
    "retried": {"on_error": af.Retry(attempts=2, backoff=0.001)},
}


@pytest.mark.parametrize("how", list(THREAD_GENERATORS))
async def test_cancelling_a_thread_generator_stops_it_at_its_next_output(how: str) -> None:
    """A thread cannot be interrupted, but a generator running in one can be left between two
    outputs. Cancelling the run let the generator of the item under way run to its very end
    (a camera's frames, a long video's chunks: the cancellation waited for all of them); the
    fast path was fixed first, the general path (timeout=, key=, a retry) still ran them all."""
    options = THREAD_GENERATORS[how]
    workers = options.get("workers", 1)
    chunks_per_item = 300
    started = threading.Event()
    yielded: list[int] = []
    closed: list[int] = []
    calls: Counter[int] = Counter()

    def chunks(x: int) -> Iterator[int]:
        calls[x] += 1
        if "on_error" in options and calls[x] == 1:
            msg = f"item {x} fails its first call, before any output"
            raise ValueError(msg)
        try:
            for i in range(chunks_per_item):
                started.set()
                threading.Event().wait(0.005)
                yielded.append(i)
                yield i
        finally:
            closed.append(x)

    stage = af.block(name="chunks", executor="thread", **options)(chunks)
    pipe = af.Pipeline(stage)
    run = asyncio.create_task(pipe.run(range(3)))
    for _ in range(int(BOUND_S / 0.001)):
        if started.is_set():
            break
        await asyncio.sleep(0.001)
    run.cancel()
    done, _ = await asyncio.wait([run], timeout=BOUND_S)
    assert done, "the cancelled run never ended"
    assert run.cancelled()
    # Each generator under way stopped at its next output and was closed (its finally ran)
    # before run() returned; no item's generator ran to its end, none started after.
    assert len(closed) <= workers, closed
    assert len(yielded) < chunks_per_item, len(yielded)
    assert pipe.statistics()["chunks"].balanced


async def test_a_thread_generator_past_its_timeout_stops_at_its_next_output() -> None:
    """The item of a thread generator past its ``timeout=`` fails, and its outputs are
    dropped: the generator ran on to its end all the same, holding a thread of the block (and
    the end of the run) for nothing. It now stops at its next output and is closed."""
    yielded: list[int] = []
    closed = threading.Event()

    def chunks(x: int) -> Iterator[int]:
        try:
            for i in range(300):
                threading.Event().wait(0.005)
                yielded.append(i)
                yield i
        finally:
            closed.set()

    stage = af.block(name="chunks", executor="thread", timeout=0.05, on_error="skip")(chunks)
    pipe = af.Pipeline(stage)
    assert await asyncio.wait_for(pipe.run([1]), BOUND_S) == []
    rec = pipe.statistics()["chunks"]
    assert (rec.skipped, rec.balanced) == (1, True)
    # run() returned once the block's thread was joined: the generator had stopped by then.
    assert closed.is_set()
    assert len(yielded) < 300, len(yielded)


class _Touchy:
    """A stream key that hashes once and then refuses: its ``__hash__`` raises from its second
    call on (past the check the engine made), and its ``__eq__`` always."""

    def __init__(self) -> None:
        self.hashes = 0

    def __hash__(self) -> int:
        self.hashes += 1
        if self.hashes > 1:
            msg = "hashed once already"
            raise RuntimeError(msg)
        return 0  # (the hash of stream 0: they are compared)

    def __eq__(self, other: object) -> bool:
        msg = "keys of this kind cannot be compared"
        raise RuntimeError(msg)


def _camera_or_touchy(x: Any) -> Any:
    """A ``fair=`` key: the camera of an int, a key that refuses for a marker."""
    if type(x) is Marker:
        return _Incomparable() if x.what == "eq" else _Touchy()
    return x % 2


@pytest.mark.parametrize("first", [True, False])
async def test_a_fair_key_that_cannot_be_compared_fails_its_item_naming_the_block(
    first: bool,
) -> None:
    """A ``fair=`` key whose ``==`` (or second ``__hash__``) raises: finding its stream ran
    where the item was put, outside any guard, so the run failed with the error put on the
    block before (or on ``<source>``, naming no block of the pipeline); in open() the callers
    got a bare RuntimeError. The item fails in the block whose edge computes the key now, as
    a BlockError naming it, and the others go on."""
    gate = asyncio.Event()

    async def held(x: Any) -> Any:
        await gate.wait()  # every item is queued (its stream found) before any leaves
        return x

    def stages(**options: Any) -> list[af.Block[Any, Any]]:
        fair = af.block(
            name="fair", queue_size=16, overflow="drop_oldest", fair=_camera_or_touchy, **options
        )(held)
        return [fair] if first else [af.block(name="before", workers=2)(async_step), fair]

    # When the markers come, streams 0 and 1 hold items: the markers' keys are compared.
    items: list[Any] = [0, 1, 2, 3, Marker("eq", 1), Marker("hash", 0), 4, 5]

    async def gated(work: Any, pipe: af.Pipeline) -> Any:
        gate.clear()
        task = asyncio.ensure_future(work)
        for _ in range(int(BOUND_S / 0.001)):
            if task.done() or pipe.statistics()["fair"].received >= len(items):
                break
            await asyncio.sleep(0.001)
        gate.set()
        return await task

    pipe = af.Pipeline(*stages())
    with pytest.raises(ExceptionGroup) as caught:
        await gated(pipe.run(items), pipe)
    errors = caught.value.exceptions
    assert len(errors) == 2, errors
    for err in errors:
        assert isinstance(err, af.BlockError), repr(err)
        assert err.block == "fair", err
        assert isinstance(err.__cause__, RuntimeError)
        assert "stream key" in str(err)
    assert all(rec.balanced for rec in pipe.statistics().values())

    async with pipe.open() as running:
        answers = await gated(
            asyncio.gather(*(running.submit(x) for x in items), return_exceptions=True), pipe
        )
        assert await running.submit(6) == 6  # the service goes on
    for x, answer in zip(items, answers, strict=True):
        if type(x) is Marker:
            assert isinstance(answer, af.BlockError), (x, answer)
            assert answer.block == "fair"
        else:
            assert answer == x, (x, answer)
    rec = pipe.statistics()["fair"]
    assert (rec.failed, rec.completed, rec.balanced) == (2, 7, True)

    # With on_error="skip" the run goes on to its end, the two items skipped and counted.
    skipping = af.Pipeline(*stages(on_error="skip"))
    assert await gated(skipping.run(items), skipping) == [0, 1, 2, 3, 4, 5]
    rec = skipping.statistics()["fair"]
    assert (rec.skipped, rec.completed, rec.balanced) == (2, 6, True)


class _Fickle:
    """A camera key that goes bad with use: hashing one object works twice (finding its
    lane, making it) and raises from then on; comparing raises once ``refusing`` is set."""

    refusing = False

    def __init__(self, camera: int) -> None:
        self.camera = camera
        self.hashes = 0

    def __hash__(self) -> int:
        self.hashes += 1
        if self.hashes > 2:
            msg = f"camera {self.camera}: hashed twice already"
            raise RuntimeError(msg)
        return hash(self.camera)

    def __eq__(self, other: object) -> bool:
        if _Fickle.refusing:
            msg = "keys of this kind cannot be compared any more"
            raise RuntimeError(msg)
        return type(other) is _Fickle and other.camera == self.camera


class _CameraTotals(af.Block):
    """Counts each camera's items; its evict() flushes ("end", camera, count)."""

    key = staticmethod(lambda x: _Fickle(x % 2) if type(x) is int else x)

    def create_state(self, camera: Hashable) -> list[int]:
        return [0]

    async def process(self, item: Any, state: list[int]) -> Any:
        await asyncio.sleep(0)
        state[0] += 1
        return item

    async def evict(self, camera: Any, state: list[int]) -> list[Any]:
        return [("end", camera.camera, state[0])]


@pytest.mark.parametrize("workers", [1, 2])
async def test_a_key_refusing_at_clean_up_leaves_the_run_and_the_flushes_whole(
    workers: int,
) -> None:
    """Taking a key's lane out at the end (evicting it) hashed and compared the key again,
    outside any guard: a key that refused then (its ``__hash__`` failing the next time) ended
    the run with a bare RuntimeError naming no block, its flush lost. The lane is left in
    place now, ended, its flush made, and a warning names the block."""
    pipe = af.Pipeline(_CameraTotals(name="totals", workers=workers))
    out = await asyncio.wait_for(pipe.run(range(6)), BOUND_S)
    assert sorted(x for x in out if type(x) is int) == list(range(6))
    assert sorted(x for x in out if type(x) is tuple) == [("end", 0, 3), ("end", 1, 3)]
    rec = pipe.statistics()["totals"]
    assert (rec.evicted, rec.balanced) == (2, True)


async def test_an_end_of_key_whose_key_cannot_be_compared_fails_naming_the_block() -> None:
    """``af.EndOfKey(key)`` finds its key's lane by comparing it with the keys held, outside
    any guard: a key whose ``==`` raised ended the run with a bare RuntimeError naming no
    block, and in open() stopped the service (every caller got PipelineClosed). The marker
    fails now (its submit() caller gets a BlockError naming the block, and in run() the run
    fails with it); the key's state is kept, and flushed at the end."""
    _Fickle.refusing = False
    pipe = af.Pipeline(_CameraTotals(name="totals"))
    try:
        async with pipe.open() as running:
            assert await running.submit(1) == 1
            assert await running.submit(3) == 3  # (a second object, equal: compared)
            _Fickle.refusing = True
            with pytest.raises(af.BlockError) as caught:
                await running.submit(af.EndOfKey(_Fickle(1)))
            assert caught.value.block == "totals"
            assert isinstance(caught.value.__cause__, RuntimeError)
            assert "EndOfKey" in str(caught.value)
            _Fickle.refusing = False
            assert await running.submit(2) == 2  # the service goes on
        rec = pipe.statistics()["totals"]
        assert (rec.completed, rec.evicted, rec.balanced) == (3, 2, True)
        _Fickle.refusing = True  # (item 5's key finds no other: it is never compared)
        with pytest.raises(ExceptionGroup) as group:
            await pipe.run([5, af.EndOfKey(_Fickle(1))])
        (err,) = group.value.exceptions
        assert isinstance(err, af.BlockError), repr(err)
        assert err.block == "totals"
    finally:
        _Fickle.refusing = False


async def test_an_every_key_that_hashes_once_fails_its_item_not_the_run() -> None:
    """af.every kept a new key's schedule outside the guard around finding it: a key whose
    ``__hash__`` raised the second time ended the service with a bare RuntimeError."""
    inner = af.block(name="detect")(async_step)
    key = lambda x: _Touchy() if x == 1 else "cam"  # noqa: E731
    pipe = af.Pipeline(af.every(inner, n=2, key=key, name="sampled"))
    async with pipe.open() as running:
        answers = await asyncio.gather(
            *(running.submit(x) for x in (0, 1, 2)), return_exceptions=True
        )
        assert isinstance(await running.submit(3), af.Held)  # the service goes on
    err = answers[1]
    assert isinstance(err, af.BlockError), repr(err)
    assert err.block == "sampled"
    assert isinstance(err.__cause__, RuntimeError)
    assert [type(a) for a in (answers[0], answers[2])] == [af.Held, af.Held], answers


async def test_an_item_that_cannot_be_pickled_fails_alone_in_a_process_batch() -> None:
    """A process block's batch is sent to its worker whole: one item whose ``__reduce__``
    raised failed the whole batch, each of its items with "the item cannot be sent", and in
    open() callers whose items were fine got that error (one caller's failure reached
    others). The items that can be sent go now, and only the other fails."""
    stage = af.block(name="batched", executor="process", batch=af.Batch(max_size=4, max_wait=0.05))(
        proc_batch
    )
    pipe = af.Pipeline(stage)
    async with pipe.open() as running:
        answers = await asyncio.gather(
            *(running.submit(x) for x in (1, ReduceRaises(2), 3, 4)), return_exceptions=True
        )
    assert [answers[0], answers[2], answers[3]] == [1, 3, 4], answers
    err = answers[1]
    assert isinstance(err, af.BlockError), repr(err)
    assert err.block == "batched"
    assert isinstance(err.__cause__, af.ExecutorError)
    assert "cannot be sent" in str(err)
    rec = pipe.statistics()["batched"]
    assert (rec.completed, rec.failed, rec.balanced) == (3, 1, True)
    with pytest.raises(ExceptionGroup) as caught:
        await pipe.run([1, ReduceRaises(2), 3])
    (err,) = caught.value.exceptions
    assert isinstance(err, af.BlockError), repr(err)
    assert pipe.statistics()["batched"].failed == 1


class _SlowToStart(af.Block):
    """A block with ``fair=`` whose setup takes a moment: items reach its edge meanwhile."""

    def __init__(self, events: list[str], **options: Any) -> None:
        super().__init__(**options)
        self.events = events

    async def setup(self) -> None:
        await asyncio.sleep(0.05)
        self.events.append("setup")

    async def process(self, item: Any) -> Any:
        return item

    async def teardown(self) -> None:
        self.events.append("teardown")


async def test_a_fair_key_refused_while_the_block_sets_up_fails_the_run_once_it_is_up() -> None:
    """An item refused by the edge (its ``fair=`` key cannot be compared) while the block is
    still being set up: its error waits for the setup to end (a setup is not cut short), then
    fails the run, naming the block, and the block is torn down."""
    events: list[str] = []
    stage = _SlowToStart(
        events, name="fair", queue_size=8, overflow="drop_oldest", fair=_camera_or_touchy
    )
    pipe = af.Pipeline(stage)
    with pytest.raises(ExceptionGroup) as caught:
        await asyncio.wait_for(pipe.run([0, 1, 2, 3, Marker("eq", 1), 4]), BOUND_S)
    (err,) = caught.value.exceptions
    assert isinstance(err, af.BlockError), repr(err)
    assert err.block == "fair"
    assert isinstance(err.__cause__, RuntimeError)
    assert events == ["setup", "teardown"]
    assert pipe.statistics()["fair"].balanced


async def test_a_finished_run_keeps_none_of_its_outputs() -> None:
    """run() reuses the envelopes of outputs it has handed over for the items it reads next,
    and kept up to 256 of them, outputs inside, with the finished run that the pipeline keeps
    for its statistics: a caller that dropped the outputs (camera frames, megabytes each)
    still had 126 of 300 held for as long as the Pipeline object lived."""

    class Frame:
        pass

    pipe = af.Pipeline(af.block(name="step")(async_step))
    frames = [Frame() for _ in range(300)]
    alive = [weakref.ref(f) for f in frames]
    outputs = await pipe.run(frames)
    assert len(outputs) == 300
    del frames, outputs
    gc.collect()
    assert sum(ref() is not None for ref in alive) == 0
    assert pipe.statistics()["step"].completed == 300  # (the run's books are still there)
