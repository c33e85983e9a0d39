"""Where the flagship's CPU goes, in figures that a busy machine does not swamp.

Wall-clock frames/s on a shared machine measure its load more than the pipeline; these do not
as much. For one run of ``examples/gates``'s pipeline on the bench's clips:

* CPU milliseconds per frame of each step: thread CPU time (``time.thread_time``) of each
  model's ``Session.run`` and of the example's own functions, and of each thread as a whole
  (the event loop's too); what no Python thread ran is the native threads' (FFmpeg's decoders);
* the crops read after the last frame was detected, and the frames written after it: work left
  to the end of the stream, when only the steps after the detector can use the cores;
* how busy two quiet cores would be: every 10 ms, how many of the process's threads are running
  or waiting for a core (``/proc``), the mean of min(that, 2) / 2. The sampling thread takes
  CPU too (about 8 ms per frame on the 2-core machine), left out of the whole process's figure.

    python benchmarks/profile_gates.py [--workers 2,2] [--formats/--no-formats] [--reps 1]

Linux only (``/proc``). ``docs/gates.md`` (where the time goes) quotes it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_gates
import onnxruntime as ort

import aioflow as af
from aioflow.io import video
from examples.gates import app, ocr, plates, run, synth, track

LOCK = threading.Lock()
STEPS: defaultdict[str, float] = defaultdict(float)  # step: CPU seconds
THREADS: defaultdict[str, float] = defaultdict(float)  # thread name: CPU seconds
CALLS: list[tuple[str, float, float, int]] = []  # model, start, end, batch size
WRITES: list[float] = []  # when each frame was written
_inside = threading.local()
SAMPLER = "profile-sampler"


def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` with its thread CPU time added to ``STEPS[name]`` (the outermost timed call only)."""

    def call(*args: Any, **kwargs: Any) -> Any:
        if getattr(_inside, "on", False):
            return fn(*args, **kwargs)
        _inside.on = True
        t0 = time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            _inside.on = False
            with LOCK:
                STEPS[name] += time.thread_time() - t0

    return call


def instrument() -> None:
    for module, names in (
        (ocr, ("det_input", "boxes_from_map", "plate_shape", "crop", "on_a_board", "rec_input")),
        (plates, ("normalise",)),
        (track, ("update", "close")),
        (video, ("draw_boxes", "draw_text")),
    ):
        for name in names:
            setattr(
                module,
                name,
                timed(f"{module.__name__.rsplit('.', 1)[-1]}.{name}", getattr(module, name)),
            )
    ocr.CtcDecoder.read = timed("ocr.CtcDecoder.read", ocr.CtcDecoder.read)  # type: ignore[method-assign]
    track.StillText.hold = timed("track.StillText.hold", track.StillText.hold)  # type: ignore[method-assign]
    write = video.VideoWriter.process

    def process(self: video.VideoWriter, frame: Any) -> Any:
        WRITES.append(time.perf_counter())
        return write(self, frame)

    video.VideoWriter.process = timed("record (encoding)", process)  # type: ignore[method-assign]
    session_run = ort.InferenceSession.run

    def run_model(self: Any, outputs: Any, feeds: dict[str, Any], *args: Any, **kw: Any) -> Any:
        x = next(iter(feeds.values()))
        model = "recogniser" if x.shape[2] == ocr.REC_HEIGHT else "detector"
        t0, c0 = time.perf_counter(), time.thread_time()
        try:
            return session_run(self, outputs, feeds, *args, **kw)
        finally:
            with LOCK:
                STEPS[f"{model} (Session.run)"] += time.thread_time() - c0
                CALLS.append((model, t0, time.perf_counter(), int(x.shape[0])))

    ort.InferenceSession.run = run_model  # type: ignore[method-assign]
    thread_run = threading.Thread.run

    def run_thread(self: threading.Thread) -> None:
        t0 = time.thread_time()
        try:
            thread_run(self)
        finally:
            with LOCK:
                THREADS[re.sub(r"_\d+$", "", self.name)] += time.thread_time() - t0

    threading.Thread.run = run_thread  # type: ignore[method-assign]


class Busy:
    """Every 10 ms, the number of this process's threads running or waiting for a core."""

    def __init__(self) -> None:
        self.samples: list[int] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._sample, name=SAMPLER, daemon=True)

    def _sample(self) -> None:
        me = str(threading.get_native_id())
        while not self.stop.wait(0.01):
            n = 0
            for tid in os.listdir("/proc/self/task"):
                try:
                    stat = Path(f"/proc/self/task/{tid}/stat").read_text()
                except OSError:
                    continue
                n += tid != me and stat[stat.rindex(")") + 2] == "R"
            self.samples.append(n)

    def cores(self) -> float:
        return sum(min(n, 2) for n in self.samples) / max(len(self.samples), 1) / 2


async def profile(args: argparse.Namespace) -> list[dict[str, Any]]:
    folder = Path(tempfile.mkdtemp(prefix="aioflow-profile-gates-"))
    videos, _, drawn = synth.make_dataset(folder, cameras=3, seconds=10.0, level=args.level)
    formats = plates.parse_formats(",".join(drawn)) if args.formats else ()
    runner, url, _ = await run.serve_webhook(0.05)
    rows = []
    try:
        for _ in range(args.reps):
            for table in (STEPS, THREADS):
                table.clear()
            CALLS.clear()
            WRITES.clear()
            busy = Busy()
            summary = app.Summary()
            loop0, cpu0 = time.thread_time(), time.process_time()
            busy.thread.start()
            await bench_gates.pipeline(folder, videos, url, formats, summary, workers=args.workers)
            busy.stop.set()
            busy.thread.join()
            loop, cpu = time.thread_time() - loop0, time.process_time() - cpu0
            await asyncio.sleep(0.5)  # the pools' threads have ended and counted themselves
            frames = summary.counts.frames
            ms = 1000 / frames
            last = max(end for model, _, end, _ in CALLS if model == "detector")
            named = sum(THREADS.values()) + loop
            rows.append(
                {
                    "frames": frames,
                    "events": len(summary.events),
                    "cpu_ms_per_frame": {
                        # The sampler's own reading of /proc is not the pipeline's.
                        "whole process (less the sampler)": (cpu - THREADS[SAMPLER]) * ms,
                        **{k: v * ms for k, v in sorted(STEPS.items())},
                        **{f"thread {k}": v * ms for k, v in sorted(THREADS.items())},
                        "thread event loop": loop * ms,
                        "native threads (not Python's)": (cpu - named) * ms,
                    },
                    "crops_read": sum(n for m, _, _, n in CALLS if m == "recogniser"),
                    "crops_read_after_last_detection": sum(
                        n for m, start, _, n in CALLS if m == "recogniser" and start >= last
                    ),
                    "frames_written_after_last_detection": sum(w >= last for w in WRITES),
                    "cores_busy_share": busy.cores(),
                }
            )
    finally:
        await runner.cleanup()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=bench_gates.sessions_pair, default=None, metavar="D,R")
    parser.add_argument("--formats", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--level", choices=list(synth.LEVELS), default="medium")
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--json")
    args = parser.parse_args()
    instrument()
    rows = af.run(profile(args))
    for row in rows:
        for name, value in row["cpu_ms_per_frame"].items():
            print(f"  {name:40} {value:7.2f} ms/frame")
        print(
            f"  crops read after the last detection: {row['crops_read_after_last_detection']}"
            f" of {row['crops_read']}; frames written after it:"
            f" {row['frames_written_after_last_detection']} of {row['frames']};"
            f" cores busy: {row['cores_busy_share']:.3f} of 2 cores"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
