"""Gate cameras: read the licence plate of every vehicle passing several cameras.

The flagship aioflow example (``make demo``). Without ``--source`` it generates camera videos
with their ground truth (``synth.py``, ``--level medium``), starts a webhook on loopback that
answers after a realistic delay, runs the pipeline of ``app.py`` and prints frames, fps,
per-block utilisation, what was left out and why, and the accuracy. With ``--source`` it reads
your footage instead: files, image folders, RTSP/HTTP URLs, cameras (anything
``video_source`` takes), one camera per URI.

    python examples/gates/run.py [--cameras 3] [--seconds 10] [--level medium] [--out out/gates]
    python examples/gates/run.py --source gate1.mp4 rtsp://cam2/stream --plate-format LL99LLL \\
        --events events.jsonl --ground-truth truth.json [--webhook http://host/events]
    python examples/gates/run.py --detect-rate 5     # detection on 5 frames/s of each camera

Cameras come and go while it runs: ``--control [HOST:]PORT`` serves ``GET /cameras`` (each
camera's state and figures), ``POST /cameras`` with ``{"uri": ..., "name": ...}`` and
``DELETE /cameras/{name}`` (the stand-in webhook's app serves them too); each camera's state
changes are printed, and ``--stall-after SECONDS`` reports a camera that sends no frame.

A camera that cannot be opened, or a live one lost for good (after ``video_source``'s
reconnection attempts), ends alone: the others go on, the plates it showed before are sent,
and the run exits with status 2 once the others are done, naming it (``on_fail="end"``).

Ctrl-C or SIGTERM stops it as the end of the footage would (the frames read go through, the
open tracks' events are sent, the videos finished; exit status 0); a second one quits at once.
An event the webhook refuses after its retries is kept in ``OUT/undelivered.jsonl``.

Memory: the service fixes glibc's malloc mmap threshold at 128 KiB (``--malloc-threshold``), so
frames are given back to the system when freed instead of staying in malloc's heaps as free
space, which cameras coming and going would otherwise make RSS creep by (docs/gates.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import math
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    # Run as a script: import the example as the package it is, never its modules as top-level
    # names (which a user's own ocr.py or track.py would shadow).
    sys.path[0] = str(Path(__file__).resolve().parents[2])

from aiohttp import web

import aioflow as af
from aioflow.io import video
from examples.gates import app, plates, roi, synth, track


def camera_routes(source: video.VideoSource) -> web.RouteTableDef:
    """The control endpoint: the cameras of a running ``source``, added and removed while the
    pipeline runs (a removed camera's tracks are closed and their events sent: the source
    ends its key, and the tracker's ``evict`` flushes it).

    - ``GET /cameras``: ``{name: its figures and state}``;
    - ``POST /cameras`` with ``{"uri": ..., "name": ...}`` (name optional): 201 and
      ``{"camera": name}`` once the camera has opened; 400 for a bad request or a name in use,
      422 when the camera cannot be opened;
    - ``DELETE /cameras/{name}``: 200 and its last figures; 404 for an unknown name.
    """
    routes = web.RouteTableDef()

    def figures(stats: video.StreamStatistics) -> dict[str, Any]:
        return dataclasses.asdict(stats)

    @routes.get("/cameras")
    async def list_cameras(request: web.Request) -> web.Response:
        return web.json_response({k: figures(v) for k, v in source.statistics().items()})

    @routes.post("/cameras")
    async def add_camera(request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"error": "expected a JSON object"}, status=400)
        if not isinstance(body, dict) or not isinstance(body.get("uri"), str | int):
            msg = 'expected {"uri": "...", "name": "..."} (name optional)'
            return web.json_response({"error": msg}, status=400)
        name = body.get("name")
        if name is not None and not isinstance(name, str):
            return web.json_response({"error": "name must be a string"}, status=400)
        try:
            camera = await source.add(body["uri"], name=name)
        except (ValueError, af.GraphError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        except video.VideoSourceError as exc:
            return web.json_response({"error": str(exc)}, status=422)
        return web.json_response({"camera": camera}, status=201)

    @routes.delete("/cameras/{name}")
    async def remove_camera(request: web.Request) -> web.Response:
        try:
            stats = await source.remove(request.match_info["name"])
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=404)
        return web.json_response(figures(stats))

    return routes


async def serve(
    web_app: web.Application, host: str = "127.0.0.1", port: int = 0
) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(web_app)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0]
    return runner, f"http://{bound[0]}:{bound[1]}"


async def serve_webhook(
    delay: float, source: video.VideoSource | None = None
) -> tuple[web.AppRunner, str, list[dict[str, Any]]]:
    """A stand-in for the gate-control service: answers each event after ``delay`` seconds
    (and, given the ``source``, serves :func:`camera_routes` too)."""
    received: list[dict[str, Any]] = []
    taken = 0

    async def handle(request: web.Request) -> web.Response:
        nonlocal taken
        event = await request.json()
        await asyncio.sleep(delay)
        taken += 1
        received.append(event)
        if len(received) > 2 * app.KEEP_EVENTS:  # (a live run: keep the latest)
            del received[: -app.KEEP_EVENTS]
        return web.json_response({"ok": True, "id": taken})

    web_app = web.Application()
    web_app.router.add_post("/events", handle)
    if source is not None:
        web_app.add_routes(camera_routes(source))
    runner, base = await serve(web_app)
    return runner, f"{base}/events", received


def print_status(event: video.StreamEvent) -> None:
    """Each camera's state changes, one line each (a service would alert on them)."""
    stats = event.statistics
    line = f"camera {event.stream}: {event.previous} -> {event.state}"
    if event.state in ("stalled", "removed", "ended", "failed"):
        age = "" if stats.frame_age is None else f", last frame {stats.frame_age:.1f} s ago"
        # A stream ends when its last frame is read, maybe before the pipeline took it.
        frames = stats.emitted + (stats.buffered if event.state == "ended" else 0)
        line += f" ({frames} frames, {stats.dropped} dropped{age})"
    if event.error is not None:
        line += f": {event.error}"
    print(line, flush=True)


@dataclass
class Result:
    """What one run did."""

    frames: int
    wall_s: float
    statistics: dict[str, af.BlockStatistics]
    summary: app.Summary
    received: list[dict[str, Any]]  # as received by the webhook (empty with an outside one)
    truth: dict[str, list[str]] | None
    answered: int
    bottleneck: af.Bottleneck | None = None
    out: Path = Path("out/gates")  # where the annotated videos (and undelivered events) went
    stopped_by: str | None = None  # the signal that stopped the run early (SIGINT, SIGTERM)
    failed: dict[str, str] = dataclasses.field(default_factory=dict)  # camera: why it failed

    @property
    def events(self) -> list[dict[str, Any]]:
        return self.summary.events

    @property
    def score(self) -> track.Score | None:
        return None if self.truth is None else track.score(self.events, self.truth)


async def run_pipeline(
    sources: list[str] | dict[str, str],
    out: Path,
    *,
    formats: tuple[plates.PlateFormat, ...] = (),
    events_file: Path | None = None,
    truth: dict[str, list[str]] | None = None,
    webhook: str | None = None,
    webhook_delay: float = 0.05,
    live: bool | None = None,
    track_rules: track.TrackRules = track.DEFAULT_TRACK_RULES,
    control: tuple[str, int] | None = None,
    stall_after: float | None = None,
    on_status: Any = None,
    detect_per_second: float | None = None,
    look_rules: roi.LookRules | None = roi.DEFAULT_LOOK_RULES,
    stop_on_signals: bool = False,
) -> Result:
    """Run the pipeline on ``sources`` (what ``video_source`` takes), POSTing to ``webhook`` or,
    when None, to a stand-in served on loopback. ``control``: (host, port) to serve the
    cameras' control endpoint on (:func:`camera_routes`; the stand-in serves it too).
    ``on_status``: called with each camera's :class:`~aioflow.io.video.StreamEvent`. A camera
    that fails (cannot be opened, or a live one lost for good) ends alone, the others go on
    (``on_fail="end"``); ``Result.failed`` names it.
    ``detect_per_second``, ``look_rules``: see ``app.build``. ``stop_on_signals``: SIGINT
    (Ctrl-C) and SIGTERM (a service manager stopping it) end the run as the end of the
    footage would (:func:`stop_on`); a second one cancels it at once."""
    runners: list[web.AppRunner] = []
    received: list[dict[str, Any]] = []
    errors: dict[str, str] = {}

    def status(event: video.StreamEvent) -> None:
        if event.state == "failed" and event.error is not None:
            errors[event.stream] = str(event.error)
        if on_status is not None:
            on_status(event)

    source = video.video_source(
        sources, live=live, stall_after=stall_after, on_status=status, on_fail="end"
    )
    summary = app.Summary()
    (out / app.UNDELIVERED).unlink(missing_ok=True)  # a previous run's
    stopped: list[str] = []
    handled = stop_on(source, stopped) if stop_on_signals else []
    try:
        if webhook is None:
            runner, webhook, received = await serve_webhook(webhook_delay, source)
            runners.append(runner)
            print(f"cameras: {webhook.removesuffix('/events')}/cameras", flush=True)
        if control is not None:
            control_app = web.Application()
            control_app.add_routes(camera_routes(source))
            runner, base = await serve(control_app, *control)
            runners.append(runner)
            print(f"cameras: {base}/cameras", flush=True)
        pipe = app.build(
            out=out,
            webhook=webhook,
            formats=formats,
            events_file=events_file,
            summary=summary,
            track_rules=track_rules,
            detect_per_second=detect_per_second,
            look_rules=look_rules,
        )
        t0 = time.perf_counter()
        # Streamed, not ``run()``: a live run goes on for months, and ``run()`` keeps every
        # output (the webhook's answers) until the end.
        answered = 0
        async with contextlib.aclosing(pipe.stream(source)) as answers:
            async for _ in answers:
                answered += 1
        wall = time.perf_counter() - t0
    finally:
        loop = asyncio.get_running_loop()
        for sig in handled:
            loop.remove_signal_handler(sig)
        for runner in runners:
            await runner.cleanup()
    stats = pipe.statistics()
    # The cameras that ended failed (one that POST /cameras could not open was refused there,
    # and is not the source's: it is not counted here).
    failed = {
        name: errors.get(name, "failed")
        for name, figures in source.statistics().items()
        if figures.state == "failed"
    }
    return Result(
        stats["prepare"].received,
        wall,
        stats,
        summary,
        received,
        truth,
        answered,
        pipe.bottleneck(),
        out,
        stopped[0] if stopped else None,
        failed,
    )


def stop_on(source: video.VideoSource, stopped: list[str]) -> list[signal.Signals]:
    """SIGINT and SIGTERM stop the run as the end of its footage would: the first closes the
    source (no frame is read after it), so the frames under way go through, the tracker
    closes every open track and sends its event, the annotated videos are finished and the
    summary printed; a service stopped by its manager loses none of what it read. A second
    signal cancels the run at once (the videos are still closed, the open tracks dropped).
    Appends the signal's name to ``stopped``; returns the signals handled (none where the loop
    cannot: not the main thread, or Windows)."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()

    def on_signal(sig: signal.Signals) -> None:
        if stopped:
            if task is not None:
                task.cancel()
            return
        stopped.append(sig.name)
        print(
            f"gates: {sig.name}: stopping: no new frame is read; the frames under way go "
            f"through, the open tracks are closed and their events sent ({sig.name} again to "
            "quit at once)",
            file=sys.stderr,
            flush=True,
        )
        source.close()

    handled = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, on_signal, sig)
        except (NotImplementedError, RuntimeError, ValueError):
            continue
        handled.append(sig)
    return handled


async def run_demo(
    out: Path,
    *,
    cameras: int = 3,
    seconds: float = 10.0,
    level: str = "medium",
    seed: int = 7,
    webhook_delay: float = 0.05,
    events_file: Path | None = None,
    formats: tuple[plates.PlateFormat, ...] | None = None,
    track_rules: track.TrackRules = track.DEFAULT_TRACK_RULES,
    detect_per_second: float | None = None,
    look_rules: roi.LookRules | None = roi.DEFAULT_LOOK_RULES,
    stop_on_signals: bool = False,
) -> Result:
    """Generate the videos, serve the webhook, run with ``formats`` (default: the formats the
    generator drew)."""
    videos, _, drawn = synth.make_dataset(
        out, cameras=cameras, seconds=seconds, level=level, seed=seed
    )
    truth = json.loads((out / "truth.json").read_text())
    return await run_pipeline(
        {cam: str(path) for cam, path in videos.items()},
        out,
        formats=plates.parse_formats(",".join(drawn)) if formats is None else formats,
        events_file=events_file,
        truth=truth,
        webhook_delay=webhook_delay,
        track_rules=track_rules,
        detect_per_second=detect_per_second,
        look_rules=look_rules,
        stop_on_signals=stop_on_signals,
    )


def report(result: Result) -> None:
    wall = result.wall_s
    print(f"\n{result.frames} frames in {wall:.1f} s: {result.frames / wall:.1f} frames/s")
    print(f"{'block':12} {'in':>6} {'out':>6} {'busy s':>7} {'util':>5} {'p50 ms':>7} {'batch':>5}")
    for name, rec in result.statistics.items():
        util = rec.busy_s / (wall * rec.workers)
        batch = f"{rec.mean_batch_size:.1f}" if rec.batches else ""
        print(
            f"{name:12} {rec.received:6d} {rec.emitted:6d} {rec.busy_s:7.1f} {util:5.0%} "
            f"{rec.latency_p50_s * 1e3:7.1f} {batch:>5}"
        )
    if result.bottleneck is not None:
        print(f"bottleneck: {result.bottleneck}")
    c = result.summary.counts
    if c.resized:
        print(f"\n{c.resized} frames resized to their camera's first frame size", end="")
    if c.not_looked:
        looked = c.frames - c.not_looked
        print(f"\ndetection on {looked} of {c.frames} frames ({c.not_looked} held)", end="")
    print(
        f"\n{c.boxes} text boxes: {c.at_edge} at the frame's edge, {c.not_plate_shape} not a "
        f"plate's shape, {c.not_plate_ground} without a plate's ground, {c.held} of still "
        f"text not read again\n{c.unread} crops unread, {c.off_format} reads fitting no plate "
        f"format (dropped)\n{c.tracks} tracks: {c.few_votes} with too few agreeing reads, "
        f"{c.static} not moving, {c.unsure} unsure of a look-alike (0 or O...), "
        f"{c.on_vehicle} above a plate on its vehicle, "
        f"{c.duplicates} duplicates, {c.events} events"
    )
    shown = None if result.truth is None else result.truth
    summary = result.summary
    undelivered, failed = summary.undelivered, summary.failed_posts
    print(
        f"\n{summary.sent} events ({result.answered} answered by the webhook"
        + (f", {failed} not delivered: {result.out / app.UNDELIVERED}" if failed else "")
        + ")"
        + ("" if summary.complete else f"; the latest {len(result.events)} listed")
    )
    if failed:
        print(
            f"warning: the webhook did not take {failed} "
            f"event{'s' if failed != 1 else ''}, kept in "
            f"{result.out / app.UNDELIVERED}: {undelivered[-1][1]}",
            file=sys.stderr,
        )
    for event in sorted(result.events, key=lambda e: (e["camera"], e["first_frame"])):
        verdict = ""
        if shown is not None:
            ok = any(plates.same_plate(event["plate"], p) for p in shown.get(event["camera"], []))
            verdict = " ok" if ok else " WRONG"
        print(
            f"  {event['camera']} frames {event['first_frame']:4d}-{event['last_frame']:4d}: "
            f"{event['plate']} ({event['reads']} reads, confidence {event['confidence']:.2f})"
            f"{verdict}"
        )
    if result.score is not None:
        print(f"accuracy: {result.score}")
        if not summary.complete:
            print(
                f"(scored on the latest {len(result.events)} events of {summary.sent}: "
                "score the events file for all of them)"
            )


async def main(args: argparse.Namespace) -> int:
    out = Path(args.out)
    events_file = Path(args.events) if args.events else None
    if events_file is not None:
        events_file.parent.mkdir(parents=True, exist_ok=True)
        events_file.write_text("")
    rules = track.TrackRules(early_votes=args.early)
    if args.source:
        truth = None
        if args.ground_truth:
            truth = load_truth(Path(args.ground_truth))
        result = await run_pipeline(
            args.source,
            out,
            formats=args.plate_format,
            events_file=events_file,
            truth=truth,
            webhook=args.webhook,
            webhook_delay=args.webhook_delay,
            track_rules=rules,
            control=args.control,
            stall_after=args.stall_after,
            on_status=print_status,
            detect_per_second=args.detect_rate,
            look_rules=None if args.whole_frames else roi.DEFAULT_LOOK_RULES,
            stop_on_signals=True,
        )
    else:
        print(
            f"generating {args.cameras} cameras x {args.seconds:g} s at {synth.FPS} fps, "
            f"level {args.level} ..."
        )
        result = await run_demo(
            out,
            cameras=args.cameras,
            seconds=args.seconds,
            level=args.level,
            seed=args.seed,
            webhook_delay=args.webhook_delay,
            events_file=events_file,
            formats=args.plate_format or None,
            track_rules=rules,
            detect_per_second=args.detect_rate,
            look_rules=None if args.whole_frames else roi.DEFAULT_LOOK_RULES,
            stop_on_signals=True,
        )
        if args.ground_truth:
            result.truth = load_truth(Path(args.ground_truth))
    if result.frames or not result.failed:  # (every camera failing: nothing to report)
        report(result)
        print(f"annotated videos: {out / 'annotated'}")
    if result.stopped_by is not None:
        print(f"stopped by {result.stopped_by}: the footage after it was not read")
    for camera, why in result.failed.items():
        print(f"gates: error: camera {camera} failed: {why}", file=sys.stderr)
    if result.failed:
        return 2
    score = result.score
    # The demo checks itself; a run on your footage fails only when you ask it to.
    bar = args.min_accuracy if args.min_accuracy is not None else None if args.source else 0.8
    if score is None or bar is None:
        return 0
    if result.stopped_by is not None:
        # The plates shown after the stop were never looked at, yet the ground truth lists
        # them: they count as missed above. A run stopped on purpose has not failed.
        print(f"accuracy not checked against {bar:.0%}: the plates after the stop count as missed")
        return 0
    return 0 if score.correct / max(score.shown, 1) >= bar else 1


def load_truth(path: Path) -> dict[str, list[str]]:
    """``{camera: [plate texts shown]}`` from a JSON file; SystemExit naming what is wrong."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        msg = f"--ground-truth {path}: {exc}"
        raise SystemExit(msg) from exc
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, list) and all(isinstance(p, str) for p in v)
        for k, v in data.items()
    ):
        msg = f"--ground-truth {path}: expected {{camera: [plate texts]}}, got {str(data)[:80]}"
        raise SystemExit(msg)
    return data


def address(text: str) -> tuple[str, int]:
    """``--control [HOST:]PORT`` (default host: loopback)."""
    host, _, port = text.rpartition(":")
    try:
        number = int(port)
    except ValueError:
        number = -1
    if not 0 <= number < 65536:
        msg = f"{text!r}: expected [HOST:]PORT"
        raise argparse.ArgumentTypeError(msg)
    return host or "127.0.0.1", number


def plate_formats(spec: str) -> tuple[plates.PlateFormat, ...]:
    try:
        return plates.parse_formats(spec)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def early_votes(text: str) -> int:
    """``--early N``: a whole number of reads, at least the ``min_votes`` an event needs."""
    least = track.DEFAULT_TRACK_RULES.min_votes
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < least:
        msg = f"{text!r}: a number of agreeing reads, at least {least}"
        raise argparse.ArgumentTypeError(msg)
    return n


def rate(text: str) -> float:
    """``--detect-rate F``: a number of frames per second, > 0."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not (math.isfinite(value) and value > 0):
        msg = f"{text!r}: a number of frames per second > 0"
        raise argparse.ArgumentTypeError(msg)
    return value


def parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=(__doc__ or "").splitlines()[0])
    p.add_argument(
        "--source",
        nargs="+",
        metavar="URI",
        help="video files, image folders, URLs or camera indexes, one camera each "
        "(default: generate the demo's videos)",
    )
    p.add_argument(
        "--plate-format",
        type=plate_formats,
        default=(),
        metavar="PATTERNS",
        help="comma-separated plate formats: L a letter, 9 a digit, A either, other characters "
        "fixed (e.g. LL99LLL,LLL999); default: any plausible plate (the demo passes the "
        "formats it generated)",
    )
    p.add_argument(
        "--events", metavar="FILE", help="write each event to FILE as a JSON line (a new file)"
    )
    p.add_argument(
        "--ground-truth", metavar="FILE", help="score the run against {camera: [plates]} JSON"
    )
    p.add_argument("--webhook", help="POST events there (default: a stand-in on loopback)")
    p.add_argument(
        "--control",
        type=address,
        metavar="[HOST:]PORT",
        help="serve GET/POST /cameras and DELETE /cameras/NAME there, to add and remove cameras "
        "while it runs (the stand-in webhook serves them too)",
    )
    p.add_argument(
        "--stall-after",
        type=float,
        metavar="SECONDS",
        help="report a camera that sent no frame for this long (stalled), and when it is back",
    )
    p.add_argument(
        "--early",
        type=early_votes,
        default=None,
        metavar="N",
        help="send a plate's event once N reads agree, while it is still in view (default: "
        "when its track closes, 0.5 s after the plate was last seen; early events cost some "
        "wrong events, see docs/gates.md)",
    )
    p.add_argument(
        "--whole-frames",
        action="store_true",
        help="show the detector the whole frame on every look (default: most looks show it a "
        "window of the frame around what moves, at up to the frame's own resolution; see "
        "docs/gates.md)",
    )
    p.add_argument(
        "--detect-rate",
        type=rate,
        default=None,
        metavar="F",
        help="run the detector on at most F frames per second of each camera (by the "
        "footage's own clock), holding its result for the frames in between; plates are read "
        "only on the frames looked at (default: every frame; see docs/gates.md)",
    )
    p.add_argument(
        "--malloc-threshold",
        type=malloc_threshold,
        default=MALLOC_THRESHOLD,
        metavar="BYTES",
        help="glibc's malloc gives blocks of this size or more (frames) back to the system "
        f"when freed, so RSS stays flat while cameras come and go (default {MALLOC_THRESHOLD}; "
        "0: glibc's own threshold, which rises to the largest block freed; see docs/gates.md)",
    )
    p.add_argument("--cameras", type=int, default=3)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--level", choices=list(synth.LEVELS), default="medium")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--out", default="out/gates")
    p.add_argument("--webhook-delay", type=float, default=0.05)
    p.add_argument(
        "--min-accuracy",
        type=float,
        default=None,
        help="with a ground truth: exit 1 below this share of plates read correctly "
        "(default: 0.8 for the demo's own clips, none with --source; not applied to a run "
        "stopped by a signal)",
    )
    return p


#: ``--malloc-threshold``'s default: blocks of 128 KiB or more (a 640x360 frame is 675 KiB) get
#: their own ``mmap`` from glibc's malloc, given back to the system when freed
MALLOC_THRESHOLD = 128 * 1024


def fix_malloc_threshold(size: int) -> bool:
    """Have glibc's malloc serve every block of ``size`` bytes or more with its own ``mmap``,
    returned to the system when freed (``mallopt(M_MMAP_THRESHOLD, size)``, what the
    environment variable ``MALLOC_MMAP_THRESHOLD_`` does when a process starts). False where
    the C library is not glibc (nothing changed), or where that variable is set (its value
    stands).

    glibc's threshold otherwise rises to the largest block freed, and frames, the detector's
    inputs and its maps are then carved out of malloc's heaps (one per thread, up to 8 per
    core): freed, they stay there as free space. A service whose cameras, and with them reader
    and decoder threads, come and go spreads that over more heaps, and its RSS creeps up while
    the bytes in use stay level (docs/gates.md, "Memory with cameras coming and going"). The
    price is fresh pages (page faults, zeroing) for each large block."""
    import ctypes
    import os

    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    m_mmap_threshold = -3
    return bool(mallopt(m_mmap_threshold, size) == 1)


def malloc_threshold(text: str) -> int:
    """``--malloc-threshold BYTES``: a whole number of bytes, 0 for glibc's own threshold."""
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 0 or n > 32 * 1024 * 1024:
        msg = f"{text!r}: a number of bytes from 0 (glibc's own threshold) to 33554432"
        raise argparse.ArgumentTypeError(msg)
    return n


def cli(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = parser(prog).parse_args(argv)
    if args.malloc_threshold:
        fix_malloc_threshold(args.malloc_threshold)
    try:
        return run_cli(args, prog)
    except (KeyboardInterrupt, asyncio.CancelledError):
        # A second Ctrl-C (or one before the run began): quit at once, without a traceback.
        print(f"{prog or 'gates'}: interrupted", file=sys.stderr)
        return 130


def run_cli(args: argparse.Namespace, prog: str | None) -> int:
    failed = False
    try:
        return af.run(main(args))
    except* af.BlockError as group:
        # A source that cannot be read (a block failing for good): say which, one line each.
        for err in group.exceptions:
            print(f"{prog or 'gates'}: error: {err}", file=sys.stderr)
        failed = True
    return 2 if failed else 1


if __name__ == "__main__":
    raise SystemExit(cli())
