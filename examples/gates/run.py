"""Gate cameras: read the licence plate of every vehicle passing several cameras.

The flagship aioflow example (``make demo``). It generates the camera videos with their ground
truth, starts a webhook on loopback that answers after a realistic delay, and runs:

    video_source(cameras)            decode, one reader thread per camera
    >> prepare                       resize and normalise for the detector (2 threads)
    >> detect                        PP-OCR text detection, OnnxModel, batched, 2 sessions
    >> find_plates                   boxes from the probability map, one item per plate crop
    >> recognize                     PP-OCR text recognition, OnnxModel, batched across crops
    >> read_text                     CTC decoding, fitted to the plate format
    >> regroup                       the reads of one frame back together (keyed by camera)
    >> track                         per-camera tracker: one vote-decided read per plate
    >> annotate >> record            boxes and plates drawn, one video per camera
    >> events >> webhook             each plate event POSTed to the webhook

and prints frames, fps, per-block utilisation and accuracy (plates read correctly / plates
shown). Run: ``python examples/gates/run.py [--cameras 3] [--seconds 10] [--out out/gates]``.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ocr
import synth
import track
from aiohttp import web

import aioflow as af
from aioflow.infer.onnx import OnnxModel
from aioflow.io import http, video


def build(
    out: Path,
    webhook: str,
    characters: list[str],
    *,
    threads: tuple[int, int] = (1, 1),
    workers: tuple[int, int] = (2, 1),
) -> af.Pipeline:
    """The pipeline; ``threads``: onnxruntime's intra-op threads per session for detection and
    recognition, ``workers``: their sessions (calls at once).

    Single-thread sessions, two for the detector: on 2 cores shared with decoding, drawing and
    encoding, a two-thread session stalls whenever one of its threads is preempted (each
    operator waits for its slowest thread), so it made 0.77-0.92 of the models-alone bound from
    run to run; single-thread sessions made 0.92-0.99 (``benchmarks/bench_gates.py``)."""
    decoder = ocr.CtcDecoder(characters)

    @af.block(workers=2)
    def prepare(frame: video.Frame) -> dict[str, Any]:
        return {"frame": frame, "x": ocr.det_input(frame.image)}

    detect = OnnxModel(
        ocr.model_path(ocr.DET_MODEL),
        batch=af.Batch(max_size=4, max_wait=0.0),
        intra_op_num_threads=threads[0],
        workers=workers[0],
        select="x",
        merge=lambda item, prob: {"frame": item["frame"], "prob": prob[0]},
        name="detect",
    )

    @af.block(workers=2)
    def find_plates(item: dict[str, Any]) -> Any:
        """One item per text box (with its crop), or one empty item for a frame with none."""
        frame = item["frame"]
        boxes = ocr.boxes_from_map(item["prob"], frame.image.shape)
        if not boxes:
            yield {"frame": frame, "k": 0, "n": 0}
            return
        for k, box in enumerate(boxes):
            x = ocr.rec_input(ocr.crop(frame.image, box))
            yield {"frame": frame, "k": k, "n": len(boxes), "box": box, "x": x}

    recognize = OnnxModel(
        ocr.model_path(ocr.REC_MODEL),
        batch=af.Batch(max_size=16, max_wait=0.002),
        intra_op_num_threads=threads[1],
        workers=workers[1],
        select="x",  # a frame without boxes selects nothing and passes through
        merge=lambda item, probs: {**item, "x": None, "probs": probs},
        name="recognize",
    )

    @af.block(workers=2)
    def read_text(item: dict[str, Any]) -> dict[str, Any]:
        if item["n"] == 0:
            return item
        raw, _confidence = decoder(item["probs"])
        return {**item, "probs": None, "raw": raw, "text": ocr.correct(raw)}

    def camera(item: dict[str, Any]) -> str:
        return str(item["frame"].stream)

    @af.block(key=camera, state=list)
    async def regroup(item: dict[str, Any], pending: list[tuple[Any, str | None]]) -> Any:
        """Crops of one frame arrive together and in order: gather them into one record."""
        if item["n"]:
            pending.append((item["box"].rect, item["text"]))
            if item["k"] < item["n"] - 1:
                return
        yield {"frame": item["frame"], "reads": list(pending)}
        pending.clear()

    class PlateTracker(af.Block):
        """One vote-decided read per passing plate, per camera."""

        key = staticmethod(camera)

        def create_state(self, key: Any) -> track.CameraState:
            return track.CameraState()

        async def process(self, item: dict[str, Any], state: track.CameraState) -> Any:
            frame = item["frame"]
            labelled, events = track.update(state, frame.stream, frame.index, item["reads"])
            return {"frame": frame, "labelled": labelled, "events": events}

        async def evict(self, key: Any, state: track.CameraState) -> list[dict[str, Any]]:
            # End of the stream: the plates still in view are decided now.
            events = [e for t in state.tracks if (e := track.close(str(key), t)) is not None]
            return [{"frame": None, "labelled": [], "events": events}]

    @af.block(workers=2)
    def annotate(item: dict[str, Any]) -> dict[str, Any]:
        frame = item["frame"]
        if frame is None:
            return item
        boxes = [rect for _, rect, _ in item["labelled"]]
        labels = [text or "?" for _, _, text in item["labelled"]]
        image = video.draw_boxes(frame.image, boxes, labels, color=(0, 200, 255))
        image = video.draw_text(image, f"{frame.stream} #{frame.index}", (8, 8), copy=False)
        return {**item, "frame": frame.with_image(image)}

    class Recorder(video.VideoWriter):
        """The library's writer, for records that carry a frame (or none, at the end)."""

        key = staticmethod(lambda item: item["frame"].stream if item["frame"] else "")

        def process(self, item: dict[str, Any]) -> dict[str, Any]:  # type: ignore[override]
            if item["frame"] is not None:
                super().process(item["frame"])
            return item

    @af.block
    async def events(item: dict[str, Any]) -> Any:
        for event in item["events"]:
            yield event

    webhook_block = http.post(webhook, retry=af.Retry(attempts=3, backoff=0.05), name="webhook")

    return af.Pipeline(
        prepare,
        detect,
        find_plates,
        recognize,
        read_text,
        regroup,
        PlateTracker(name="track"),
        annotate,
        Recorder(str(out / "annotated" / "{stream}.mp4"), fps=synth.FPS, name="record"),
        events,
        webhook_block,
        name="gates",
    )


async def serve_webhook(delay: float) -> tuple[web.AppRunner, str, list[dict[str, Any]]]:
    """A stand-in for the gate-control service: answers each event after ``delay`` seconds."""
    received: list[dict[str, Any]] = []

    async def handle(request: web.Request) -> web.Response:
        event = await request.json()
        await asyncio.sleep(delay)
        received.append(event)
        return web.json_response({"ok": True, "id": len(received)})

    app = web.Application()
    app.router.add_post("/events", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}/events", received


@dataclass
class Result:
    """What one run of the demo did."""

    frames: int
    wall_s: float
    statistics: dict[str, af.BlockStatistics]
    events: list[dict[str, Any]]  # as received by the webhook
    truth: list[synth.Passage]
    answered: int

    @property
    def accuracy(self) -> tuple[int, int, int]:
        """(plates read correctly, plates shown, wrong events)."""
        truth = [{"camera": p.camera, "text": p.text} for p in self.truth]
        return track.score(self.events, truth)


async def run_demo(
    out: Path, *, cameras: int = 3, seconds: float = 10.0, webhook_delay: float = 0.05
) -> Result:
    """Generate the videos, serve the webhook, run the pipeline."""
    videos, truth = synth.make_dataset(out, cameras=cameras, seconds=seconds)
    characters = OnnxModel.inspect(ocr.model_path(ocr.REC_MODEL)).metadata["character"]
    runner, url, received = await serve_webhook(webhook_delay)
    try:
        pipe = build(out, url, characters.split("\n"))
        source = video.video_source({cam: str(path) for cam, path in videos.items()})
        t0 = time.perf_counter()
        answers = await pipe.run(source)
        wall = time.perf_counter() - t0
    finally:
        await runner.cleanup()
    stats = pipe.statistics()
    return Result(stats["prepare"].received, wall, stats, received, truth, len(answers))


async def main(args: argparse.Namespace) -> int:
    out = Path(args.out)
    print(f"generating {args.cameras} cameras x {args.seconds:g} s at {synth.FPS} fps ...")
    result = await run_demo(
        out, cameras=args.cameras, seconds=args.seconds, webhook_delay=args.webhook_delay
    )
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
    truth = {(p.camera, p.text) for p in result.truth}
    print(f"\nwebhook received {len(result.events)} events ({result.answered} answered)")
    for event in sorted(result.events, key=lambda e: (e["camera"], e["first_frame"])):
        ok = (event["camera"], event["plate"]) in truth
        print(
            f"  {event['camera']} frames {event['first_frame']:3d}-{event['last_frame']:3d}: "
            f"{event['plate']} ({event['votes']}/{event['reads']} votes) {'ok' if ok else 'WRONG'}"
        )
    correct, shown, wrong = result.accuracy
    print(
        f"accuracy: {correct}/{shown} plates read correctly ({correct / max(shown, 1):.0%}), "
        f"{wrong} wrong events"
    )
    print(f"annotated videos: {out / 'annotated'}")
    return 0 if correct / max(shown, 1) >= args.min_accuracy else 1


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cameras", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--out", default="out/gates")
    parser.add_argument("--webhook-delay", type=float, default=0.05)
    parser.add_argument(
        "--min-accuracy",
        type=float,
        default=0.8,
        help="exit 1 below this share of plates read correctly",
    )
    return parser.parse_args()


if __name__ == "__main__":
    raise SystemExit(af.run(main(parse())))
