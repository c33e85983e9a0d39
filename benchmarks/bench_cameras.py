"""Many live cameras on one machine: the flagship pipeline with 1 to 32 cameras at 10 frames/s.

Each camera plays a clip of ``examples/gates/synth.py`` (640x360, 10 frames/s, level medium,
the plate formats given as ``make demo`` gives them) through ``video_source(..., live=True)``:
a file read live plays at its own pace, as a camera would, and keeps only its newest frame when
the pipeline does not take it in time. The pipeline is ``examples.gates.app.build(live_queue=n)``:
its first block's input is a fair leaky queue (``overflow="drop_oldest"``, ``fair=`` by camera,
``n`` = 2 frames per camera, at least 8), so once the cameras send more than the detector can take,
frames are dropped there, the busiest camera's first. Eight distinct clips are generated (seeds
61-68); camera ``i`` plays clip ``i % 8``.

Each session runs ``--seconds`` of wall time from the first frame (longer in a sweep where the
cameras are many: long enough for each to expect ``--min-frames`` delivered frames at the previous
session's rate, so that one frame more or less does not decide the fairness ratio), then closes the
source and lets the pipeline drain. It reports, per camera: frames delivered to the tracker per
second (those that reached it before the close: the ones drained after it count in the books, not in
the rate), the fraction of the camera's frames that never got there (dropped by the source's buffer
or the fair queue), the p50/p99 age of a frame when the tracker takes it (from the moment the
camera's clock says it was shot: the earliest a frame left the source, less its timestamp, is the
camera's start), and the plates read correctly (``track.score`` against the clip's ground truth,
counting only the plates that passed completely before the end); for the machine: the detector's
utilisation over the window (its busy time / window / sessions: ``statistics()``'s ``busy_s``, which
counts a call when it ends, plus the calls still in progress at the window's edges as far as they
had run), RSS and the load average.

Sessions:

* ``sweep``: 1, 2, 4, 8, 16, 32 cameras (``--cameras``);
* ``flood``: ``--flood N`` cameras for ``--flood-seconds`` (60: each camera gets 1-2 frames/s,
  and the longer session keeps one frame more or less from moving the ratio), the first one a
  30 frames/s camera (its clip with each frame written three times, so its plates move as fast
  in time);
* ``churn``: ``--churn N`` cameras run ``--churn-seconds``; every second a camera is added
  (``source.add()``) and the one added ``CHURN_LIFETIME`` seconds earlier removed
  (``source.remove()``), so ``N + CHURN_LIFETIME`` cameras run at a time; the books are checked
  (every frame each camera's source handed on reached the tracker or is one of the fair
  queue's counted drops, each camera's frames reach the tracker in order), nothing is left
  (reader threads, other threads, tasks), and RSS is sampled every half second while the
  cameras run (start, end, peak, the mean and the slope over the second half);
* ``steady``: the same load without churn: ``N + CHURN_LIFETIME`` cameras for as long, the fair
  queue sized as churn's. RSS grows in every session while the pipeline fills, churn or not, so
  churn's level over the second half is compared with this one's. Steady and churn sessions
  alternate, ``--churn-repeats`` of each (steady, churn, steady, churn, ...), each in a fresh
  process of its own (the benchmark runs itself with a hidden ``--churn-part``), so that none
  inherits the malloc heaps the sessions before it grew; the RSS criterion is the median over
  the pairs of churn's level less its steady session's, and every churn session's books and
  leftovers are checked;
* ``hold``: with ``--detect-rate F``, the sweep again with ``build(detect_per_second=F)``
  (sample-and-hold: detection at most F times a second per camera).

Every session runs with glibc's malloc mmap threshold fixed at 128 KiB, as the flagship's
``run.py`` runs (``--malloc-threshold``: frames are given back to the system when freed);
``--mmap-threshold 0`` runs them with glibc's own threshold instead, which rises to the largest
block freed and keeps freed frames in malloc's heaps.

The clips are kept in ``$TMPDIR/aioflow-bench-cameras/`` for the next run. The machine's load
(other work on it) moves every figure here: the load average at the start and end of each
session is in the results.

    python benchmarks/bench_cameras.py [--quick] [--cameras 1 2 4 8 16 32] [--seconds 20]
        [--flood 8] [--flood-seconds 60] [--churn 8] [--churn-seconds 60] [--churn-repeats 2]
        [--detect-rate 5] [--no-sweep] [--clips 8] [--mmap-threshold BYTES]
        [--json benchmarks/results/cameras.json]
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import psutil  # type: ignore[import-untyped]

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aioflow as af
from aioflow.infer.onnx import OnnxModel
from aioflow.io import video
from examples.gates import app, plates, run, synth, track

SCRIPT = Path(__file__).resolve()
MB = 1024 * 1024
FPS = synth.FPS
FLOOD_FPS = 30
CLIPS = 8  # distinct clips; camera i plays clip i % CLIPS
SEED = 61
LEVEL = "medium"
CHURN_LIFETIME = 3  # seconds a churn camera lives (one added and one removed every second)
QUEUE_PER_CAMERA = 2
MIN_QUEUE = 8

#: The goals of issue 14.
GOAL_BUSY = 0.95  # the detector's utilisation once the cameras outnumber what it serves
GOAL_FAIR = 0.9  # the slowest camera's delivered frames/s over the fastest's
GOAL_READ = 0.95  # plates read correctly with sample-and-hold
RSS_TOLERANCE_MB = 50.0  # churn's RSS level over the same load's without churn (median of pairs)


# -- the footage ------------------------------------------------------------------------------


@dataclass
class Clips:
    """The generated clips: ``paths[k]`` plays ``passages[k]``; ``flood``: clip 0 at 30 fps."""

    folder: Path
    seconds: float
    formats: tuple[str, ...]
    paths: list[Path] = field(default_factory=list)
    passages: list[list[synth.Passage]] = field(default_factory=list)
    flood: Path | None = None

    def path(self, camera: int) -> Path:
        return self.paths[camera % len(self.paths)]

    def truth(self, camera: int, seconds: float) -> tuple[list[str], list[str]]:
        """The plates camera ``camera`` showed completely within its first ``seconds``, and
        those it was still showing then (neither counted shown nor wrong when read)."""
        shown, partial = [], []
        for p in self.passages[camera % len(self.passages)]:
            if (p.last_frame + 1) / FPS <= seconds:
                shown.append(p.text)
            elif p.first_frame / FPS < seconds:
                partial.append(p.text)
        return shown, partial


def clips_folder(seconds: float) -> Path:
    """Where the clips of this length are kept between runs (they take minutes to make on a
    busy machine, and the same seeds make the same clips)."""
    return Path(tempfile.gettempdir()) / "aioflow-bench-cameras" / f"seed{SEED}-{seconds:g}s"


def make_clips(folder: Path, seconds: float, *, flood: bool, count: int = CLIPS) -> Clips:
    """``count`` clips in ``folder``, made unless already there (each with its passages in a
    JSON file written once the video is complete)."""
    folder.mkdir(parents=True, exist_ok=True)
    formats = synth.draw_formats(np.random.default_rng(SEED))
    clips = Clips(folder, seconds, formats)
    for k in range(count):
        path, truth = folder / f"clip{k}.mp4", folder / f"clip{k}.json"
        if truth.exists() and path.exists():
            passages = [synth.Passage(**p) for p in json.loads(truth.read_text())]
        else:
            passages = synth.make_camera(
                f"clip{k}",
                path,
                seconds=seconds,
                seed=SEED * 100 + k,
                formats=formats,
                level=synth.LEVELS[LEVEL],
            )
            truth.write_text(json.dumps([asdict(p) for p in passages]))
        clips.passages.append(passages)
        clips.paths.append(path)
    if flood:
        clips.flood = folder / "flood.mp4"
        if not clips.flood.exists():
            partial = folder / "flood.partial.mp4"
            triple(clips.paths[0], partial, FLOOD_FPS // FPS)
            partial.rename(clips.flood)
    return clips


def triple(src: Path, dst: Path, times: int) -> None:
    """``src`` at ``times`` its frame rate, each frame written ``times`` times."""
    cap = cv2.VideoCapture(str(src))
    writer = cv2.VideoWriter(
        str(dst), cv2.VideoWriter.fourcc(*"mp4v"), FPS * times, (synth.WIDTH, synth.HEIGHT)
    )
    try:
        while True:
            ok, image = cap.read()
            if not ok:
                break
            for _ in range(times):
                writer.write(image)
    finally:
        writer.release()
        cap.release()


# -- one session ------------------------------------------------------------------------------


@dataclass
class Probe:
    """What the benchmark sees of a session: when each frame left the source and reached the
    tracker (``track.update`` is wrapped for the session), and the machine's samples."""

    left: dict[str, float] = field(default_factory=dict)  # camera -> min(left - timestamp)
    offsets: dict[str, list[float]] = field(default_factory=dict)  # camera -> left - timestamp
    tracked: dict[str, list[tuple[int, float, float]]] = field(default_factory=dict)
    rss: list[tuple[float, int]] = field(default_factory=list)

    def on_track(self, camera: str, index: int, stamp: float) -> None:
        self.tracked.setdefault(camera, []).append((index, stamp, time.monotonic()))


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def has_detect_rate() -> bool:
    return "detect_per_second" in inspect.signature(app.build).parameters


def check_detect_rate(rate: float | None) -> None:
    if rate is not None and not has_detect_rate():
        msg = (
            "--detect-rate needs examples.gates.app.build(detect_per_second=...) (sample-and-hold "
            "detection), which this checkout's build() does not take"
        )
        raise SystemExit(msg)


def leftover_threads(before: set[int]) -> list[str]:
    return sorted(t.name for t in threading.enumerate() if t.ident not in before and t.is_alive())


async def session(
    clips: Clips,
    url: str,
    cameras: dict[str, tuple[Path, int]],
    seconds: float,
    *,
    detect_rate: float | None = None,
    churn: int = 0,
    queue: int | None = None,
) -> dict[str, Any]:
    """Run the pipeline on ``cameras`` (``{name: (clip, clip number)}``) for ``seconds`` of
    wall time; with ``churn``, keep that many extra cameras coming and going meanwhile."""
    proc = psutil.Process()
    threads_before = {t.ident for t in threading.enumerate() if t.ident is not None}
    tasks_before = len(asyncio.all_tasks())
    load_start = os.getloadavg()
    probe = Probe()
    out = Path(tempfile.mkdtemp(prefix="aioflow-bench-cameras-"))
    summary = app.Summary()
    n_cameras = len(cameras) + min(churn, CHURN_LIFETIME)
    live_queue = queue or max(MIN_QUEUE, QUEUE_PER_CAMERA * n_cameras)
    options: dict[str, Any] = {"live_queue": live_queue}
    if detect_rate is not None:
        options["detect_per_second"] = detect_rate
    pipe = app.build(
        out=out,
        webhook=url,
        formats=plates.parse_formats(",".join(clips.formats)),
        summary=summary,
        **options,
    )
    source = video.video_source({n: str(p) for n, (p, _) in cameras.items()}, live=True)
    clip_of = {n: k for n, (_, k) in cameras.items()}

    # The models load before the cameras start (a live service starts its cameras once it can
    # serve them), as bench_gates.py times the pipeline.
    loop = asyncio.get_running_loop()
    loaded = asyncio.Event()
    waiting = 2  # the detector and the recogniser
    setup = OnnxModel.setup

    def one_loaded() -> None:
        nonlocal waiting
        waiting -= 1
        if waiting == 0:
            loaded.set()

    def timed_setup(model: OnnxModel) -> None:
        setup(model)
        loop.call_soon_threadsafe(one_loaded)

    # Every frame that reaches the tracker, looked at or held (sample-and-hold: a held frame
    # goes to ``track.coast``, not ``track.update``): its block's ``process`` is wrapped.
    tracker = next(b for b in pipe.blocks() if b.options.name == "track")
    process = tracker.process

    async def tracked(item: dict[str, Any], state: track.CameraState) -> Any:
        frame = item["frame"]
        probe.on_track(str(frame.stream), frame.index, frame.timestamp)
        return await process(item, state)

    started = asyncio.Event()
    t0 = 0.0

    async def frames() -> AsyncIterator[Any]:
        nonlocal t0
        await loaded.wait()
        async for item in source:
            if isinstance(item, video.Frame):
                now = time.monotonic()
                if not started.is_set():
                    t0 = now
                    started.set()
                offset = now - item.timestamp
                probe.offsets.setdefault(item.stream, []).append(offset)
                if offset < probe.left.get(item.stream, float("inf")):
                    probe.left[item.stream] = offset
            yield item

    removed: dict[str, video.StreamStatistics] = {}
    churned: list[str] = []

    async def churner() -> None:
        live: list[str] = []
        for i in range(churn):
            name = f"churn{i}"
            k = (len(cameras) + i) % len(clips.paths)
            await source.add(str(clips.paths[k]), name=name)
            clip_of[name] = k
            churned.append(name)
            live.append(name)
            if len(live) > CHURN_LIFETIME:
                gone = live.pop(0)
                removed[gone] = await source.remove(gone)
            await asyncio.sleep(max(0.0, t0 + i + 1 - time.monotonic()))
        for gone in live:
            removed[gone] = await source.remove(gone)

    # The detector's calls in progress, by thread: when each began. ``busy_s`` counts a call
    # when it ends, so read alone at the window's edges it leaves out the calls still running
    # at its end (with two sessions and calls of 0.4-8 s, 1-35% of a 20 s window, by chance).
    # The window's busy time counts them up to its edge, as a device's utilisation would.
    detector = next((b for b in pipe.blocks() if b.options.name == "detect"), None)
    running: dict[int, float] = {}
    if detector is not None:
        detect_process = detector.process

        def timed_detect(items: Any) -> Any:
            me = threading.get_ident()
            running[me] = time.perf_counter()
            try:
                return detect_process(items)
            finally:
                del running[me]

        detector.process = timed_detect  # type: ignore[method-assign]

    busy: dict[str, float] = {}

    def detect_busy() -> tuple[float, float]:
        """The detector's busy time so far: the calls ended, and those plus the ones in
        progress (as far as they have run)."""
        stats = pipe.statistics()
        if "detect" not in stats:
            return float("nan"), float("nan")
        now = time.perf_counter()
        ended = stats["detect"].busy_s
        return ended, ended + sum(now - t for t in list(running.values()))

    async def conduct() -> None:
        await started.wait()
        busy["start_ended"], busy["start"] = detect_busy()
        if churn:
            await churner()
        await asyncio.sleep(max(0.0, t0 + seconds - time.monotonic()))
        busy["end_ended"], busy["end"] = detect_busy()
        busy["closed"] = time.monotonic()
        busy["window"] = busy["closed"] - t0
        source.close()

    async def sample() -> None:
        while True:
            probe.rss.append((time.monotonic(), proc.memory_info().rss))
            await asyncio.sleep(0.5)

    OnnxModel.setup = timed_setup  # type: ignore[method-assign,assignment]
    tracker.process = tracked  # type: ignore[method-assign]
    wall0 = time.monotonic()
    try:
        async with asyncio.TaskGroup() as tg:
            sampler = tg.create_task(sample())
            conductor = tg.create_task(conduct())
            try:
                await pipe.run(frames())
            finally:
                conductor.cancel()
                sampler.cancel()
    finally:
        OnnxModel.setup = setup  # type: ignore[method-assign]
        del tracker.process  # (the instance's wrapper: the class's method again)
        if detector is not None:
            del detector.process
        shutil.rmtree(out, ignore_errors=True)
    wall = time.monotonic() - wall0
    await asyncio.sleep(0.2)  # the webhook server's connection handlers close
    stats = pipe.statistics()
    src = source.statistics()
    src.update(removed)
    window = busy.get("window", seconds)
    closed = busy.get("closed", float("inf"))
    workers = stats["detect"].workers if "detect" in stats else 1
    per_camera = {}
    for name, st in src.items():
        rows = probe.tracked.get(name, [])
        origin = probe.left.get(name, 0.0)
        # How late frames left the source (its reader behind the camera's clock, or frames
        # waiting in its buffer): the part of the age before the pipeline.
        lags = [o - origin for o in probe.offsets.get(name, [])]
        ages = [arrived - (origin + stamp) for _, stamp, arrived in rows]
        lived = window if name not in churned else max(st.read / FPS, 1e-9)
        fps = FLOOD_FPS if name == "flood" else FPS
        shown, partial = clips.truth(clip_of[name], lived)
        events = [
            e
            for e in summary.events
            if e["camera"] == name and not any(plates.same_plate(e["plate"], p) for p in partial)
        ]
        score = track.score(events, {name: shown})
        indexes = [i for i, _, _ in rows]
        # The rate counts the frames that reached the tracker while the cameras ran: those
        # drained after the close (every camera's frames in flight then) are in the books,
        # not in the rate, which they would inflate by as many as a camera had in flight.
        in_window = sum(1 for _, _, arrived in rows if arrived <= closed)
        per_camera[name] = {
            "fps": fps,
            "read": st.read,
            "emitted": st.emitted,
            "source_dropped": st.dropped,
            "buffered": st.buffered,
            "delivered": len(rows),
            "delivered_in_window": in_window,
            "delivered_per_s": in_window / lived,
            "dropped_fraction": 1 - len(rows) / st.read if st.read else 0.0,
            "in_order": indexes == sorted(set(indexes)),
            "age_p50_s": percentile(ages, 50),
            "age_p99_s": percentile(ages, 99),
            "source_lag_p50_s": percentile(lags, 50),
            "plates_shown": score.shown,
            "plates_correct": score.correct,
            "plates_wrong": score.wrong,
            "churn": name in churned,
        }
    emitted = sum(c["emitted"] for c in per_camera.values())
    delivered = sum(c["delivered"] for c in per_camera.values())
    # The fair queue is the first block's input: ``prepare``, or with sample-and-hold
    # ``admit`` (in front of ``sample``, whose ``prepare`` takes only the frames looked at).
    first = stats["admit"] if "admit" in stats else stats["prepare"]
    books = {
        "emitted_by_source": emitted,
        "received_by_first_block": first.received,
        "dropped_by_fair_queue": first.dropped,
        "dropped_by": dict(first.dropped_by),
        "delivered_to_tracker": delivered,
        "every_block_balanced": all(rec.balanced for rec in stats.values()),
    }
    books["balance"] = (
        emitted == first.received
        and emitted - delivered == first.dropped
        and books["every_block_balanced"]
        and all(c["in_order"] for c in per_camera.values())
    )
    # RSS while the cameras ran (from the first frame to the source's closing; the models'
    # loading before and the drain after are left out), and its slope over the second half.
    rss = [(t - t0, r / MB) for t, r in probe.rss if t0 <= t <= t0 + window]
    half = [(t, r) for t, r in rss if t >= window / 2]
    slope = 0.0
    if len(half) >= 4:
        xs, ys = [t for t, _ in half], [r for _, r in half]
        slope = float(np.polyfit(xs, ys, 1)[0]) * 60
    readers = [s.stream for s in src.values() if s.state not in ("ended", "removed", "closed")]
    return {
        "cameras": len(cameras),
        "churned": len(churned),
        "seconds": round(window, 2),
        "wall_s": round(wall, 2),
        "pid": os.getpid(),
        "live_queue": live_queue,
        "detect_per_second": detect_rate,
        "detector_busy": (busy["end"] - busy["start"]) / (window * workers)
        if "end" in busy
        else float("nan"),
        # the same, counting only the calls that ended within the window (the figure before
        # the calls in progress at its edges were counted)
        "detector_busy_ended_calls": (busy["end_ended"] - busy["start_ended"]) / (window * workers)
        if "end" in busy
        else float("nan"),
        "detector_sessions": workers,
        "delivered_per_s": sum(c["delivered_in_window"] for c in per_camera.values()) / window,
        "per_camera": per_camera,
        "books": books,
        "rss_mb": {
            "start": rss[0][1] if rss else float("nan"),
            "end": rss[-1][1] if rss else float("nan"),
            "peak": max((r / MB for _, r in probe.rss), default=float("nan")),
            # the level once the pipeline is full (its queues, the models' arenas)
            "second_half_mean": statistics.fmean(r for _, r in half) if half else float("nan"),
            "slope_mb_per_min_second_half": slope,
        },
        "left_over": {
            "threads": leftover_threads(threads_before),
            "tasks": len(asyncio.all_tasks()) - tasks_before,
            "readers": readers,
        },
        "load_average": {"start": list(load_start), "end": list(os.getloadavg())},
    }


def summarise(res: dict[str, Any]) -> dict[str, Any]:
    """The figures across a session's cameras (churn cameras left out)."""
    cams = [c for c in res["per_camera"].values() if not c["churn"]]
    rates = [c["delivered_per_s"] for c in cams]
    shown = sum(c["plates_shown"] for c in cams)
    correct = sum(c["plates_correct"] for c in cams)
    return {
        "cameras": res["cameras"],
        "delivered_per_s": res["delivered_per_s"],
        "delivered_per_camera_min": min(rates),
        "delivered_per_camera_max": max(rates),
        "fairness": min(rates) / max(rates) if max(rates) > 0 else 0.0,
        "dropped_fraction_mean": statistics.fmean(c["dropped_fraction"] for c in cams),
        "age_p50_s": statistics.median(c["age_p50_s"] for c in cams),
        "age_p99_s": max(c["age_p99_s"] for c in cams),
        "source_lag_p50_s": statistics.median(c["source_lag_p50_s"] for c in cams),
        "plates_shown": shown,
        "plates_correct": correct,
        "plates_wrong": sum(c["plates_wrong"] for c in cams),
        "read_share": correct / shown if shown else float("nan"),
        "detector_busy": res["detector_busy"],
        "detector_busy_ended_calls": res["detector_busy_ended_calls"],
        "rss_peak_mb": res["rss_mb"]["peak"],
        "load_average_start": res["load_average"]["start"][0],
    }


# -- the benchmark ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    cameras: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
    seconds: float = 20.0
    flood: int = 8
    # Longer than the sweep's: with 8 cameras each gets 1-2 frames/s, and over 20 s one frame
    # more or less is 3-5% of the slowest/fastest ratio.
    flood_seconds: float = 60.0
    churn: int = 8
    churn_seconds: float = 60.0
    # pairs of sessions, steady then churn, each session in a fresh process (see churn_part)
    churn_repeats: int = 2
    detect_rate: float | None = None
    # A sweep's session runs longer than ``seconds`` where needed for each camera to expect this
    # many delivered frames (from the previous session's total rate), up to the clips' length:
    # the fair queue serves the cameras in turn, so their counts differ by one frame, and with
    # 32 cameras at 0.4 frames/s each over 20 s (7 or 8 frames) that one frame alone put the
    # slowest/fastest ratio at 0.875. With 20 frames it is at most 5%.
    min_frames: int = 20
    max_seconds: float = 60.0  # the longest a sweep's session runs for min_frames
    sweep: bool = True
    clips: int = CLIPS
    steady: bool = True  # the same load without churn before each churn session (RSS to compare)
    # glibc's M_MMAP_THRESHOLD in bytes, set for the run as the flagship's run.py sets it
    # (0 or None: glibc's default, a threshold that rises to the largest block freed)
    mmap_threshold: int | None = run.MALLOC_THRESHOLD


QUICK = Plan(
    cameras=(1, 4),
    seconds=6.0,
    flood=4,
    flood_seconds=6.0,
    churn=4,
    churn_seconds=8.0,
    churn_repeats=1,
    max_seconds=8.0,
)


def set_mmap_threshold(size: int) -> None:
    """Fix glibc malloc's mmap threshold at ``size`` bytes for this process, as the flagship's
    ``run.py`` does (``run.fix_malloc_threshold``; 0: leave glibc's own, which rises to the
    largest block freed)."""
    if size and not run.fix_malloc_threshold(size):
        msg = (
            f"--mmap-threshold {size}: not set (the C library is not glibc, or "
            "MALLOC_MMAP_THRESHOLD_ is set in the environment)"
        )
        raise SystemExit(msg)


def clip_seconds(plan: Plan) -> float:
    """How long the clips are: the longest session's seconds and 4 more."""
    return (
        max(
            plan.seconds,
            plan.churn_seconds if plan.churn else 0.0,
            plan.flood_seconds if plan.flood else 0.0,
            plan.max_seconds if plan.sweep or plan.detect_rate is not None else 0.0,
        )
        + 4.0
    )


def churned_cameras(plan: Plan) -> int:
    """How many cameras a churn session adds (and removes): one a second."""
    return max(0, int(plan.churn_seconds) - CHURN_LIFETIME)


def steady_cameras(plan: Plan) -> int:
    """A steady session's cameras: as many as a churn session runs at a time."""
    return plan.churn + min(churned_cameras(plan), CHURN_LIFETIME)


def cameras_of(clips: Clips, n: int) -> dict[str, tuple[Path, int]]:
    return {f"cam{i}": (clips.path(i), i % len(clips.paths)) for i in range(n)}


async def churn_part(plan: Plan, part: str, length: float) -> dict[str, Any]:
    """One ``steady`` or ``churn`` session, for its own process (``--churn-part``): the
    clips of ``length`` seconds, as the benchmark's process made them."""
    if plan.mmap_threshold is not None:
        set_mmap_threshold(plan.mmap_threshold)
    clips = await asyncio.to_thread(
        make_clips, clips_folder(length), length, flood=False, count=plan.clips
    )
    runner, url, _ = await run.serve_webhook(0.05)
    try:
        if part == "steady":
            res = await session(
                clips, url, cameras_of(clips, steady_cameras(plan)), plan.churn_seconds
            )
        else:
            res = await session(
                clips,
                url,
                cameras_of(clips, plan.churn),
                plan.churn_seconds,
                churn=churned_cameras(plan),
            )
    finally:
        await runner.cleanup()
    return res | {"summary": summarise(res)}


async def churn_in_child(plan: Plan, part: str, length: float) -> dict[str, Any]:
    """``churn_part`` run in a fresh process (this file, ``--churn-part``): a session run after
    others in the same process starts with the malloc heaps they grew, and its RSS says as much
    about them as about itself."""
    plan_json = json.dumps(plan.__dict__ | {"cameras": list(plan.cameras)})
    with tempfile.TemporaryDirectory(prefix="aioflow-bench-cameras-") as tmp:
        out = Path(tmp) / f"{part}.json"
        args = [sys.executable, str(SCRIPT), "--churn-part", part]
        args += ["--plan", plan_json, "--clip-seconds", repr(length), "--json", str(out)]
        proc = await asyncio.create_subprocess_exec(*args, stdout=subprocess.DEVNULL)
        try:
            rc = await proc.wait()
        except BaseException:  # cancelled or interrupted: the session's process goes too
            if proc.returncode is None:
                proc.kill()
                await asyncio.shield(proc.wait())
            raise
        if rc != 0 or not out.exists():
            msg = f"the {part} session's process exited with status {rc} (its errors above)"
            raise RuntimeError(msg)
        res: dict[str, Any] = json.loads(out.read_text())
    return res


async def measure(
    plan: Plan, log: Callable[[str], None] = lambda s: print(s, flush=True)
) -> dict[str, Any]:
    check_detect_rate(plan.detect_rate)
    if plan.mmap_threshold is not None:
        set_mmap_threshold(plan.mmap_threshold)
    length = clip_seconds(plan)
    folder = clips_folder(length)
    t = time.perf_counter()
    clips = await asyncio.to_thread(
        make_clips, folder, length, flood=plan.flood > 0, count=plan.clips
    )
    log(f"{plan.clips} clips of {length:.0f} s generated in {time.perf_counter() - t:.0f} s")
    runner, url, _ = await run.serve_webhook(0.05)
    result: dict[str, Any] = {"plan": plan.__dict__ | {"cameras": list(plan.cameras)}}

    def cams(n: int) -> dict[str, tuple[Path, int]]:
        return cameras_of(clips, n)

    async def sweep(rate: float | None) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for n in plan.cameras:
            seconds = plan.seconds
            if rows:  # long enough for min_frames per camera at the last session's rate
                total = rows[-1]["summary"]["delivered_per_s"]
                if total > 0:
                    seconds = max(seconds, plan.min_frames * n / total)
                seconds = min(seconds, max(plan.seconds, plan.max_seconds))
            res = await session(clips, url, cams(n), seconds, detect_rate=rate)
            row = summarise(res)
            rows.append(res | {"summary": row})
            log(line(row))
        return rows

    try:
        if plan.sweep:
            log("sweep (every frame detected):")
            result["sweep"] = await sweep(None)
        if plan.detect_rate is not None:
            log(f"sample-and-hold, detection at {plan.detect_rate:g} per second per camera:")
            result["hold"] = await sweep(plan.detect_rate)
        if plan.flood:
            assert clips.flood is not None
            flooded = cams(plan.flood)
            del flooded["cam0"]  # its clip, at 30 frames/s
            flooded = {"flood": (clips.flood, 0)} | flooded
            res = await session(clips, url, flooded, plan.flood_seconds)
            result["flood"] = res | {"summary": summarise(res)}
            log(f"flood (one camera at {FLOOD_FPS} frames/s):")
            log(line(result["flood"]["summary"]))
    finally:
        await runner.cleanup()
    if plan.churn:
        # Steady and churn alternate, each session in a fresh process: neither starts with the
        # heaps that the sessions before it grew (in one process, the sweep's and the flood's,
        # and the steady session's for the churn session just after it).
        runs: list[dict[str, Any]] = []
        for i in range(plan.churn_repeats):
            pair: dict[str, Any] = {}
            if plan.steady:
                log(
                    f"steady {i + 1}/{plan.churn_repeats}: {steady_cameras(plan)} cameras, "
                    f"{plan.churn_seconds:g} s, no churn (to compare; a fresh process):"
                )
                pair["steady"] = await churn_in_child(plan, "steady", length)
                log(line(pair["steady"]["summary"]))
                log(churn_line(pair["steady"]))
            log(
                f"churn {i + 1}/{plan.churn_repeats}: {plan.churn} cameras, one added and one "
                f"removed every second, {CHURN_LIFETIME} of them alive (a fresh process):"
            )
            pair["churn"] = await churn_in_child(plan, "churn", length)
            log(line(pair["churn"]["summary"]))
            log(churn_line(pair["churn"]))
            runs.append(pair)
        result["churn_runs"] = runs
    result["goals"] = goals(result)
    return result


def served(rows: list[dict[str, Any]]) -> int:
    """The largest camera count whose cameras all got (nearly) every frame."""
    ok = [r["cameras"] for r in rows if r["summary"]["dropped_fraction_mean"] <= 0.05]
    return max(ok, default=0)


def goals(result: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "sweep" in result:
        rows = result["sweep"]
        n = served(rows)
        beyond = [r["summary"] for r in rows if r["cameras"] > n]
        out["cameras_served_every_frame"] = n
        out["detector_busy_beyond"] = {
            "goal": GOAL_BUSY,
            "measured": {r["cameras"]: r["detector_busy"] for r in beyond},
            "met": all(r["detector_busy"] >= GOAL_BUSY for r in beyond),
        }
        out["fairness"] = {
            "goal": GOAL_FAIR,
            "measured": {r["cameras"]: r["summary"]["fairness"] for r in rows},
            "met": all(r["summary"]["fairness"] >= GOAL_FAIR for r in rows),
        }
        full = [r["cameras"] for r in rows if r["summary"]["read_share"] >= GOAL_READ]
        out["cameras_at_full_accuracy"] = max(full, default=0)
    if "flood" in result:
        s = result["flood"]["summary"]
        out["fairness_flood"] = {"goal": GOAL_FAIR, "measured": s["fairness"]}
        out["fairness_flood"]["met"] = s["fairness"] >= GOAL_FAIR
    if "hold" in result:
        rows = result["hold"]
        n = served(rows)
        within = [r["summary"] for r in rows if r["cameras"] <= n]
        out["hold"] = {
            "cameras_served_every_frame": n,
            "goal": GOAL_READ,
            "read_share": {r["cameras"]: r["read_share"] for r in within},
            "met": bool(within) and all(r["read_share"] >= GOAL_READ for r in within),
            "cameras_at_full_accuracy": max(
                (r["cameras"] for r in rows if r["summary"]["read_share"] >= GOAL_READ),
                default=0,
            ),
        }
    if result.get("churn_runs"):
        runs = result["churn_runs"]
        churns = [p["churn"] for p in runs]
        ch: dict[str, Any] = {
            "sessions": len(churns),
            # every churn session's books balance and none leaves anything behind
            "books_balance": all(c["books"]["balance"] for c in churns),
            "nothing_left": all(nothing_left(c["left_over"]) for c in churns),
            "rss_slope_mb_per_min": statistics.median(
                c["rss_mb"]["slope_mb_per_min_second_half"] for c in churns
            ),
        }
        pairs = []
        for p in runs:
            c = p["churn"]["rss_mb"]
            row = {
                "rss_level_mb": c["second_half_mean"],
                "rss_slope_mb_per_min": c["slope_mb_per_min_second_half"],
                "rss_growth_mb": c["end"] - c["start"],
            }
            if "steady" in p:
                st = p["steady"]["rss_mb"]
                row["rss_level_steady_mb"] = st["second_half_mean"]
                row["rss_slope_steady_mb_per_min"] = st["slope_mb_per_min_second_half"]
                row["rss_growth_steady_mb"] = st["end"] - st["start"]
                row["rss_level_diff_mb"] = c["second_half_mean"] - st["second_half_mean"]
            pairs.append(row)
        ch["pairs"] = pairs
        if all("rss_level_diff_mb" in row for row in pairs):
            # Flat: with churn, RSS once the pipeline is full (the mean over the second half) is
            # no higher than the same load's without churn (as many cameras at a time, the
            # same fair queue), give or take RSS_TOLERANCE_MB: the median over the pairs, each
            # session in a fresh process. Not the growth from the first frame: RSS then is that
            # of an empty pipeline over whatever the allocator held before (in one full run,
            # when both ran in the benchmark's process, the steady session started at 1160 MB
            # and churn, just after it, at 985 MB; they ended at 1314 and 1260 MB, and churn's
            # "growth" was 122 MB the larger).
            ch["rss_slope_steady_mb_per_min"] = statistics.median(
                row["rss_slope_steady_mb_per_min"] for row in pairs
            )
            ch["rss_level_diff_mb"] = statistics.median(row["rss_level_diff_mb"] for row in pairs)
            ch["rss_tolerance_mb"] = RSS_TOLERANCE_MB
            ch["rss_flat"] = ch["rss_level_diff_mb"] <= RSS_TOLERANCE_MB
        ch["met"] = ch["books_balance"] and ch["nothing_left"] and ch.get("rss_flat", True)
        out["churn"] = ch
    return out


def nothing_left(left: dict[str, Any]) -> bool:
    return not left["threads"] and left["tasks"] <= 0 and not left["readers"]


def line(s: dict[str, Any]) -> str:
    return (
        f"  {s['cameras']:3d} cameras: {s['delivered_per_s']:5.1f} frames/s delivered, per camera "
        f"{s['delivered_per_camera_min']:4.1f}-{s['delivered_per_camera_max']:4.1f} (fair "
        f"{s['fairness']:.2f}), dropped {s['dropped_fraction_mean']:4.0%}, age p50 "
        f"{s['age_p50_s']:.2f} s p99 {s['age_p99_s']:.2f} s, read {s['plates_correct']}/"
        f"{s['plates_shown']} ({s['read_share']:.0%}), detector busy {s['detector_busy']:.2f} "
        f"({s.get('detector_busy_ended_calls', float('nan')):.2f} by ended calls), RSS "
        f"{s['rss_peak_mb']:.0f} MB, load {s['load_average_start']:.1f}"
    )


def churn_line(res: dict[str, Any]) -> str:
    b, r, left = res["books"], res["rss_mb"], res["left_over"]
    return (
        f"  {res['churned']} cameras added and removed; books "
        f"{'balance' if b['balance'] else 'DO NOT balance'} ({b['emitted_by_source']} frames "
        f"handed on = {b['delivered_to_tracker']} tracked + {b['dropped_by_fair_queue']} dropped "
        f"by the fair queue); RSS {r['start']:.0f} -> {r['end']:.0f} MB, slope "
        f"{r['slope_mb_per_min_second_half']:+.1f} MB/min; left over: "
        f"{left if any(left.values()) else 'nothing'}"
    )


def print_results(res: dict[str, Any]) -> None:
    for part in ("sweep", "hold"):
        if part in res:
            print(f"{part}:")
            for row in res[part]:
                print(line(row["summary"]))
    if "flood" in res:
        print("flood:")
        print(line(res["flood"]["summary"]))
    for i, pair in enumerate(res.get("churn_runs", [])):
        for part in ("steady", "churn"):
            if part in pair:
                print(f"{part} {i + 1}:")
                print(line(pair[part]["summary"]))
                print(churn_line(pair[part]))
    print("goals:", json.dumps(res["goals"], default=str))


def run_benchmark(*, quick: bool, detect_rate: float | None = None) -> dict[str, Any]:
    """For ``benchmarks/run_all.py``: the sample-and-hold sweep runs at 2 detections per second
    and camera where ``build()`` takes ``detect_per_second``."""
    if detect_rate is None and has_detect_rate():
        detect_rate = 5.0
    plan = QUICK if quick else Plan()
    plan = Plan(**(plan.__dict__ | {"detect_rate": detect_rate}))
    return af.run(measure(plan))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="1 and 4 cameras, 6 s each; 8 s of churn"
    )
    parser.add_argument("--cameras", type=int, nargs="+", help="camera counts of the sweep")
    parser.add_argument("--seconds", type=float, help="seconds per session (default 20)")
    parser.add_argument(
        "--min-frames",
        type=int,
        help="a sweep's session runs until each camera expects this many frames (default 20)",
    )
    parser.add_argument("--flood", type=int, help="cameras of the flood session (0: none)")
    parser.add_argument(
        "--flood-seconds", type=float, help="seconds of the flood session (default 60)"
    )
    parser.add_argument("--churn", type=int, help="steady cameras of the churn session (0: none)")
    parser.add_argument("--churn-seconds", type=float, help="seconds of churn (default 60)")
    parser.add_argument(
        "--churn-repeats",
        type=int,
        help="pairs of steady and churn sessions, each in a fresh process (default 2; quick 1)",
    )
    parser.add_argument(
        "--detect-rate", type=float, help="also the sweep with build(detect_per_second=F)"
    )
    parser.add_argument(
        "--no-sweep", dest="sweep", action="store_false", help="leave out the plain sweep"
    )
    parser.add_argument("--clips", type=int, help=f"distinct clips (default {CLIPS})")
    parser.add_argument(
        "--mmap-threshold",
        type=int,
        metavar="BYTES",
        help="glibc malloc's M_MMAP_THRESHOLD for the run (default: the flagship's, "
        f"{run.MALLOC_THRESHOLD}, as examples/gates/run.py sets it; 0: glibc's own, which "
        "rises to the largest block freed)",
    )
    parser.add_argument("--json", type=Path, help="write the results there")
    # One steady or churn session in this process (the benchmark runs itself so: churn_in_child)
    parser.add_argument("--churn-part", choices=("steady", "churn"), help=argparse.SUPPRESS)
    parser.add_argument("--plan", help=argparse.SUPPRESS)
    parser.add_argument("--clip-seconds", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.churn_part:
        if not (args.plan and args.clip_seconds and args.json):
            parser.error("--churn-part needs --plan, --clip-seconds and --json")
        given_plan = json.loads(args.plan)
        part_plan = Plan(**(given_plan | {"cameras": tuple(given_plan["cameras"])}))
        part = af.run(churn_part(part_plan, args.churn_part, args.clip_seconds))
        args.json.write_text(json.dumps(part, default=str) + "\n")
        return
    base = QUICK if args.quick else Plan()
    given = {
        "cameras": tuple(args.cameras) if args.cameras else None,
        "seconds": args.seconds,
        "min_frames": args.min_frames,
        "flood": args.flood,
        "flood_seconds": args.flood_seconds,
        "churn": args.churn,
        "churn_seconds": args.churn_seconds,
        "churn_repeats": args.churn_repeats,
        "detect_rate": args.detect_rate,
        "clips": args.clips,
        "mmap_threshold": args.mmap_threshold,
    }
    plan = Plan(**(base.__dict__ | {k: v for k, v in given.items() if v is not None}))
    plan = Plan(**(plan.__dict__ | {"sweep": args.sweep}))
    check_detect_rate(plan.detect_rate)
    res = af.run(measure(plan))
    print()
    print_results(res)
    if args.json:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import run_all  # type: ignore[import-not-found]

        meta = run_all.environment("quick" if args.quick else "full")
        meta["load_average_at_end"] = list(os.getloadavg())
        args.json.write_text(json.dumps({"meta": meta, **res}, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
