"""Where the detector's idle time goes in the many-cameras benchmark (a probe, not a benchmark).

Runs ``bench_cameras.py``'s sessions with the ``detect`` block's batch workers instrumented: for
each call, on the event loop, when its worker got a reorder slot, its first item, its batch, when
it handed the call to the thread and saw the result, and when the outputs had left; in the
thread, when the call began and ended. The gap between one call of a worker and its next is
then split into:

* ``result``: the call ended in its thread, the event loop had not yet seen it (loop latency);
* ``emit``: the outputs leaving (``out_wait``: of which waiting for room downstream);
* ``window``: waiting for a reorder slot (the other worker's older batch still running);
* ``input``: waiting for the first item (``fair_empty``: of which the fair queue was empty too,
  i.e. no frame to prepare; otherwise ``prepare`` had frames but had not finished one);
* ``form``: forming the batch on the loop;
* ``handoff``: the loop handed the call to the thread, the thread had not yet started it.

Each part is the share of the sessions' time (``sessions`` x the window) within the window, each
call clipped to it; ``thread`` is the calls running. The benchmark's figure counts from the
hand-off to the result seen (``handoff``, ``thread``, ``result``); the rest is its idle time.
It is printed with ``detector_busy_ended_calls``, the figure by the calls that ended in the
window alone (``statistics()``'s ``busy_s``).

``--configs`` compares variants of the flagship's live settings, alternating, one session each
per camera count and repetition: ``now`` (as committed), ``dq8`` (two batches queued in front of
the detector), ``fq8`` (two batches' room after it), ``wait`` (``max_wait=0.05`` on its
batches), ``one2`` (one detector session with two intra-op threads).

    python benchmarks/probe_detector.py [--cameras 8 32] [--seconds 20] [--repeat 2]
        [--configs now dq8 ...] [--json out.json]
    python benchmarks/probe_detector.py --window-sim 0.011 0.050
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_cameras as bc  # type: ignore[import-not-found]

import aioflow as af
from aioflow._engine.batched import BatchRunner, _readable_by
from aioflow._engine.cancelling import carrying_interrupts
from aioflow._engine.channel import ChannelClosed
from aioflow._engine.envelope import Envelope
from aioflow._engine.ordering import Sequencer
from aioflow.infer.onnx import OnnxModel
from examples.gates import app

perf = time.perf_counter
NAME = "detect"


class Calls:
    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []  # one per call, on the loop
        self.threads: dict[int, tuple[float, float]] = {}  # id(values) -> thread start, end
        self.lag: list[float] = []
        self.window: tuple[float, float] = (0.0, 0.0)


calls = Calls()
_process = OnnxModel.process


def timed_process(self: OnnxModel, item: Any) -> Any:
    t0 = perf()
    try:
        return _process(self, item)
    finally:
        if self.block_name == NAME:
            calls.threads[id(item)] = (t0, perf())


_run_general = BatchRunner.run


async def probed_run(self: BatchRunner, batch: af.Batch) -> None:
    rt = self.rt
    if rt.name != NAME or rt.opts.workers == 1 or batch.max_per_key is not None:
        await _run_general(self, batch)
        return
    workers = rt.opts.workers
    out_wait = [0.0]

    async def put(env: Envelope) -> None:
        if rt.out.full() and not rt.out.leaky:
            t = perf()
            await rt.out.put(env)
            out_wait[0] += perf() - t
        else:
            await rt.out.put(env)

    seq = Sequencer(workers * batch.max_size, put) if rt.opts.ordered else None
    async with asyncio.TaskGroup() as tg:
        for w in range(workers):
            tg.create_task(carrying_interrupts(worker(self, batch, seq, w, out_wait)))


async def worker(
    self: BatchRunner, batch: af.Batch, seq: Sequencer | None, w: int, out_wait: list[float]
) -> None:
    rt = self.rt
    inq = rt.inq
    fair = None
    loop = asyncio.get_running_loop()
    max_size = batch.max_size
    while True:
        t_start = perf()
        if seq is not None:
            await seq.acquire()
        t_acq = perf()
        if fair is None:
            # the fair queue: the input of the first block ("prepare")
            fair = next(r for r in reversed(rt_all) if r.name == "prepare").inq
        fair_empty_at_acq = not fair._buf
        det_empty = not inq._buf
        try:
            env = await inq.get()
        except ChannelClosed:
            if seq is not None:
                seq.release()
            return
        t_get = perf()
        envs: list[Envelope] = []
        numbers: list[int] = []
        taken = 0
        deadline = loop.time() + batch.max_wait
        while True:
            taken += 1
            n = seq.take() if seq is not None else -1
            envs.append(env)
            numbers.append(n)
            if taken >= max_size:
                break
            if not inq._buf and not await _readable_by(inq, deadline):
                break
            if seq is not None and not seq.try_acquire():
                break
            env = inq.get_nowait()
        t_formed = perf()
        ow0 = out_wait[0]
        row = {
            "w": w,
            "start": t_start,
            "acq": t_acq,
            "get": t_get,
            "formed": t_formed,
            "n": len(envs),
            "det_empty": det_empty,
            "fair_empty": fair_empty_at_acq,
        }
        current[asyncio.current_task()] = row
        await self._run(envs, numbers, seq)
        row["done"] = perf()
        row["out_wait"] = out_wait[0] - ow0
        calls.rows.append(row)


# Variants of the flagship's live settings to compare (module constants of examples/gates/app.py).
NOW = {k: getattr(app, k) for k in ("LIVE_DETECT_QUEUE", "LIVE_FIND_QUEUE", "DET_MAX_WAIT")}
CONFIGS: dict[str, dict[str, Any]] = {
    "now": NOW,
    "dq4": NOW | {"LIVE_DETECT_QUEUE": app.DET_BATCH},
    "dq8": NOW | {"LIVE_DETECT_QUEUE": 2 * app.DET_BATCH},
    "fq8": NOW | {"LIVE_FIND_QUEUE": 2 * app.DET_BATCH},
    "wait": NOW | {"DET_MAX_WAIT": 0.05},
    # one detector session with two intra-op threads (build(workers=(1, 2), threads=(2, 1)))
    "one2": NOW | {"workers": 1, "threads": 2},
}

current: dict[Any, dict[str, Any]] = {}  # worker task -> its call's row
rt_all: list[Any] = []
stat_calls: list[float] = []


async def lag_probe() -> None:
    """The event loop's latency: how late a 2 ms sleep wakes."""
    while True:
        t = perf()
        await asyncio.sleep(0.002)
        calls.lag.append(perf() - t - 0.002)


def install() -> None:
    from aioflow._engine import runner

    init = runner.BlockRuntime.__init__

    def init_probe(self: Any, *a: Any, **k: Any) -> None:
        init(self, *a, **k)
        rt_all.append(self)

    runner.BlockRuntime.__init__ = init_probe  # type: ignore[method-assign]
    call = runner.BlockRuntime._call

    async def call_probe(self: Any, value: Any, *extra: Any) -> Any:
        row = current.get(asyncio.current_task()) if self.name == NAME else None
        if row is None:
            return await call(self, value, *extra)
        t0 = perf()
        res = await call(self, value, *extra)
        row["handed"], row["res"] = t0, perf()
        row["thread"] = calls.threads.pop(id(value), (float("nan"), float("nan")))
        return res

    runner.BlockRuntime._call = call_probe  # type: ignore[method-assign]
    BatchRunner.run = probed_run  # type: ignore[method-assign]
    OnnxModel.process = timed_process  # type: ignore[method-assign]
    stats = af.Pipeline.statistics

    def stats_probe(self: Any, *a: Any, **k: Any) -> Any:
        stat_calls.append(perf())
        return stats(self, *a, **k)

    af.Pipeline.statistics = stats_probe  # type: ignore[method-assign]


def breakdown(t0: float, t1: float, workers: int) -> dict[str, Any]:
    """Each worker's time within [t0, t1], by what it was doing, as shares of ``workers`` x
    the window."""
    parts = dict.fromkeys(
        ("window", "input", "fair_empty", "form", "handoff", "thread", "result", "emit"), 0.0
    )
    out_wait = 0.0

    def add(part: str, a: float, b: float) -> float:
        d = max(0.0, min(b, t1) - max(a, t0))
        parts[part] += d
        return d

    n = 0
    sizes: list[int] = []
    for r in calls.rows:
        if "handed" not in r:
            continue
        ts, te = r["thread"]
        add("window", r["start"], r["acq"])
        d = add("input", r["acq"], r["get"])
        if r["fair_empty"]:
            parts["fair_empty"] += d
        add("form", r["get"], r["handed"])
        add("handoff", r["handed"], ts)
        add("thread", ts, te)
        add("result", te, r["res"])
        d = add("emit", r["res"], r["done"])
        if r["done"] > r["res"]:
            out_wait += r["out_wait"] * d / (r["done"] - r["res"])
        if t0 <= r["handed"] <= t1:
            n += 1
            sizes.append(r["n"])
    span = (t1 - t0) * workers
    out = {k: round(v / span, 4) for k, v in parts.items()}
    out["out_wait"] = round(out_wait / span, 4)
    out["metric_busy_clipped"] = round(
        (parts["handoff"] + parts["thread"] + parts["result"]) / span, 4
    )
    out["accounted"] = round(sum(v for k, v in parts.items() if k != "fair_empty") / span, 4)
    out["calls"] = n
    out["mean_batch"] = round(statistics.fmean(sizes), 2) if sizes else float("nan")
    out["mean_call_s"] = round(parts["thread"] / max(n, 1), 3)
    lag = sorted(calls.lag)
    out["loop_lag_p50_ms"] = round(1000 * lag[len(lag) // 2], 3) if lag else float("nan")
    out["loop_lag_p90_ms"] = round(1000 * lag[int(len(lag) * 0.9)], 3) if lag else float("nan")
    return out


def window_sim(low: float, high: float, runs: int = 5) -> dict[int, list[float]]:
    """What a reorder window one batch wider would give: a 2-worker ordered batch block (4 a
    batch, one batch queued, as the detector) whose calls sleep uniform(low, high) seconds, as
    the detector's calls varied on a loaded machine. Its utilisation with the engine's window
    (2 batches) and with 3 (the engine patched for the run: this is not what it does)."""
    import random

    from aioflow._engine import batched as engine

    results: dict[int, list[float]] = {0: [], 4: []}
    for seed in range(runs):
        for extra in results:
            rng = random.Random(seed)

            class Wide(Sequencer):
                def __init__(self, window: int, emit: Any, extra: int = extra) -> None:
                    super().__init__(window + extra, emit)

            engine.Sequencer = Wide  # type: ignore[misc]
            try:

                @af.block(batch=af.Batch(max_size=4, max_wait=0.0), workers=2, queue_size=4)
                def model(items: list[int], rng: random.Random = rng) -> list[int]:
                    time.sleep(rng.uniform(low, high))
                    return items

                pipe = af.Pipeline(model)
                t = perf()
                out = af.run(pipe.run(range(600)))
                wall = perf() - t
                assert out == list(range(600))
                results[extra].append(pipe.statistics()["model"].busy_s / (wall * 2))
            finally:
                engine.Sequencer = Sequencer  # type: ignore[misc]
    return results


async def main(args: argparse.Namespace) -> dict[str, Any]:
    install()
    build = app.build
    session_options: dict[str, int] = {}

    def build_with(**kw: Any) -> Any:
        kw.setdefault("workers", (session_options.get("workers", 2), 2))
        kw.setdefault("threads", (session_options.get("threads", 1), 1))
        return build(**kw)

    app.build = build_with  # type: ignore[assignment]
    lagger = asyncio.create_task(lag_probe())
    results: list[dict[str, Any]] = []
    orig_session = bc.session
    config: dict[str, Any] = {}

    async def session(*a: Any, **k: Any) -> dict[str, Any]:
        calls.rows.clear()
        calls.lag.clear()
        stat_calls.clear()
        current.clear()
        res = await orig_session(*a, **k)
        t0, t1 = stat_calls[0], stat_calls[1]
        row = (
            config
            | {
                "cameras": res["cameras"],
                "detector_busy": round(res["detector_busy"], 4),
                "detector_busy_ended_calls": round(res["detector_busy_ended_calls"], 4),
                "delivered_per_s": round(res["delivered_per_s"], 2),
                "age_p50_s": round(bc.summarise(res)["age_p50_s"], 2),
                "load": round(res["load_average"]["start"][0], 2),
                "sessions": res["detector_sessions"],
            }
            | breakdown(t0, t1, res["detector_sessions"])
        )
        print(json.dumps(row), flush=True)
        # every call, for a closer look (times in seconds from the window's start)
        row["calls_detail"] = [
            {
                k: (round(v - t0, 4) if isinstance(v, float) else v)
                for k, v in r.items()
                if k not in ("thread", "out_wait", "det_empty", "fair_empty")
            }
            | {"thread": [round(t - t0, 4) for t in r["thread"]]}
            for r in calls.rows
            if "handed" in r
        ]
        results.append(row)
        return res

    bc.session = session
    try:
        for _ in range(args.repeat):
            for name in args.configs:
                for n in args.cameras:
                    session_options.clear()
                    for k, v in CONFIGS[name].items():
                        if k in ("workers", "threads"):
                            session_options[k] = v
                        else:
                            setattr(app, k, v)
                    config.clear()
                    config["config"] = name
                    plan = bc.Plan(cameras=(n,), seconds=args.seconds, flood=0, churn=0)
                    await bc.measure(plan, log=lambda s: None)
    finally:
        lagger.cancel()
    return {"rows": results}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cameras", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--configs", nargs="+", default=["now"], choices=sorted(CONFIGS))
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--window-sim",
        type=float,
        nargs=2,
        metavar=("LOW", "HIGH"),
        help="instead: a model whose calls sleep uniform(LOW, HIGH) s, with a reorder window of "
        "2 batches (the engine's) and of 3",
    )
    args = parser.parse_args()
    if args.window_sim:
        for extra, busy in window_sim(*args.window_sim).items():
            print(
                f"window of {2 + extra // 4} batches: busy {statistics.median(busy):.3f} "
                f"(median of {len(busy)}: {', '.join(f'{b:.3f}' for b in busy)})"
            )
        sys.exit(0)
    res = af.run(main(args))
    if args.json:
        args.json.write_text(json.dumps(res, indent=1) + "\n")
    print(os.getloadavg())
