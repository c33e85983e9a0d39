"""The flagship pipeline's speed: aioflow against a sequential loop and against its bound.

* bound: the two models alone, back to back on pre-decoded, pre-processed frames and crops, at
  the pipeline's batch sizes (on 2 CPU cores the models saturate the machine, so this is what
  any arrangement of the other steps can at best reach): the detector on every frame, the
  recogniser on every plate-like box;
* bound_read: the same, the recogniser only on the boxes the pipeline reads (text standing
  still is read on one frame in ten), the stricter bound;
* sequential: the same steps as the pipeline (still text skipped alike), one after the other
  for each frame (decode, prepare, detect, crop, recognise, decode text, track, annotate, write,
  POST each event to the webhook and wait for its answer);
* aioflow: ``examples/gates/run.py``'s pipeline;
* with ``--also-workers D,R``: the pipeline again with D detector and R recogniser sessions
  (``app.build(workers=...)``), in the same rotation, to compare a choice side by side.

The webhook answers after 50 ms, so that hiding IO shows. All three are timed with their models
loaded: the pipeline from the moment its two OnnxModel blocks have opened their sessions (its
source starts reading then), the others with sessions opened beforehand.

    python benchmarks/bench_gates.py [--cameras 3] [--seconds 10] [--level medium] [--reps 5]
        [--also-workers 2,1] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aioflow as af
from aioflow.infer.onnx import OnnxModel
from aioflow.io import video
from examples.gates import app, ocr, plates, run, synth, track


def sessions() -> tuple[Any, Any]:
    import onnxruntime as ort

    def make(name: str) -> Any:
        options = OnnxModel.default_session_options()
        return ort.InferenceSession(
            str(ocr.model_path(name)), options, providers=["CPUExecutionProvider"]
        )

    return make(ocr.DET_MODEL), make(ocr.REC_MODEL)


def decode_all(videos: dict[str, Path]) -> list[tuple[str, int, np.ndarray]]:
    frames = []
    for cam, path in videos.items():
        cap = cv2.VideoCapture(str(path))
        index = 0
        while True:
            ok, image = cap.read()
            if not ok:
                break
            frames.append((cam, index, image))
            index += 1
        cap.release()
    return frames


def plate_boxes(image: np.ndarray, prob: np.ndarray) -> list[ocr.Box]:
    """The boxes the pipeline recognises: the detector's, kept when plate-like."""
    return [b for b in ocr.boxes_from_map(prob, image.shape) if ocr.plate_like(image, b) is None]


def run_batches(session: Any, inputs: list[np.ndarray], size: int) -> list[np.ndarray]:
    """``inputs`` in batches of ``size``, one call per shape within a batch (as OnnxModel)."""
    outputs: list[np.ndarray] = [np.empty(0)] * len(inputs)
    for i in range(0, len(inputs), size):
        groups: dict[tuple[int, ...], list[int]] = {}
        for k in range(i, min(i + size, len(inputs))):
            groups.setdefault(inputs[k].shape, []).append(k)
        for ks in groups.values():
            out = session.run(None, {"x": np.stack([inputs[k] for k in ks])})[0]
            for k, o in zip(ks, out, strict=True):
                outputs[k] = o
    return outputs


def bound(
    det: Any,
    rec: Any,
    frames: list[tuple[str, int, np.ndarray]],
    decoder: ocr.CtcDecoder,
    formats: tuple[plates.PlateFormat, ...],
    *,
    skip_still: bool = False,
) -> float:
    """Frames per second of the two models alone on the pipeline's inputs, at its batch sizes:
    the detector on every frame, the recogniser on every plate-like box, or with
    ``skip_still`` only on those the pipeline reads (text standing still on one frame in ten),
    and again on the taller box of each read that may hide a Q (``look_again``)."""
    inputs = [ocr.det_input(image) for _, _, image in frames]
    crops = []
    still: dict[str, track.StillText] = {}
    for (cam, index, image), x in zip(frames, inputs, strict=True):
        prob = det.run(None, {"x": x[None]})[0][0, 0]
        boxes = plate_boxes(image, prob)
        if skip_still:
            held = still.setdefault(cam, track.StillText()).hold(index, [b.rect for b in boxes])
            boxes = [b for b, h in zip(boxes, held, strict=True) if not h]
        first = [ocr.rec_input(ocr.crop(image, b)) for b in boxes]
        crops.extend(first)
        for b, probs in zip(boxes, run_batches(rec, first, 16), strict=True):
            if ocr.may_hide_q(decoder(probs)[0], formats):
                crops.append(ocr.rec_input(ocr.crop(image, ocr.taller(b))))
    t0 = time.perf_counter()
    run_batches(det, inputs, 4)
    run_batches(rec, crops, 16)
    return len(frames) / (time.perf_counter() - t0)


async def sequential(
    det: Any,
    rec: Any,
    videos: dict[str, Path],
    out: Path,
    url: str,
    characters: list[str],
    formats: tuple[plates.PlateFormat, ...],
) -> float:
    decoder = ocr.CtcDecoder(characters)
    t0 = time.perf_counter()
    n = 0
    async with aiohttp.ClientSession() as session:
        for cam, path in videos.items():
            cap = cv2.VideoCapture(str(path))
            writer = cv2.VideoWriter(
                str(out / f"seq_{cam}.mp4"),
                cv2.VideoWriter_fourcc(*"mp4v"),
                synth.FPS,
                (synth.WIDTH, synth.HEIGHT),
            )
            state = track.CameraState()
            still = track.StillText()
            index = 0
            while True:
                ok, image = cap.read()
                if not ok:
                    break
                prob = det.run(None, {"x": ocr.det_input(image)[None]})[0][0, 0]
                boxes = plate_boxes(image, prob)
                held = still.hold(index, [b.rect for b in boxes])
                reads: list[track.Read] = [
                    (b.rect, None, 0.0) for b, h in zip(boxes, held, strict=True) if h
                ]
                boxes = [b for b, h in zip(boxes, held, strict=True) if not h]
                if boxes:
                    crops = [ocr.rec_input(ocr.crop(image, b)) for b in boxes]
                    firsts = [decoder.read_hinted(p) for p in run_batches(rec, crops, 16)]
                    again = [k for k, r in enumerate(firsts) if ocr.may_hide_q(r[0], formats)]
                    taller = [ocr.rec_input(ocr.crop(image, ocr.taller(boxes[k]))) for k in again]
                    seconds = dict(zip(again, run_batches(rec, taller, 16), strict=True))
                    for k, (b, (raw, conf, _, hints)) in enumerate(zip(boxes, firsts, strict=True)):
                        if k in seconds:
                            raw, hints = decoder.second_look(raw, hints, seconds[k])
                        reads.append((b.rect, plates.normalise(raw, formats), conf))
                labelled, events = track.update(state, cam, index, index / synth.FPS, reads)
                drawn = video.draw_boxes(
                    image, [r for _, r, _ in labelled], [t or "?" for _, _, t in labelled]
                )
                writer.write(drawn)
                for event in events:
                    async with session.post(url, json=event) as response:
                        await response.json()
                index += 1
                n += 1
            for t in list(state.tracks):
                if (event := track.close(state, cam, t)) is not None:
                    async with session.post(url, json=event) as response:
                        await response.json()
            writer.release()
            cap.release()
    return n / (time.perf_counter() - t0)


async def pipeline(
    out: Path,
    videos: dict[str, Path],
    url: str,
    formats: tuple[plates.PlateFormat, ...],
    summary: app.Summary | None = None,
    workers: tuple[int, int] | None = None,
    detect_per_second: float | None = None,
) -> float:
    """Frames per second of the pipeline, timed from the moment both models are loaded (the
    bound and the sequential loop time sessions opened beforehand too): the source yields its
    first frame only then, so every frame is decoded and processed inside the timed window."""
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

    started: list[float] = []

    async def frames() -> Any:
        await loaded.wait()
        started.append(time.perf_counter())
        async for frame in video.video_source({cam: str(p) for cam, p in videos.items()}):
            yield frame

    sessions = {} if workers is None else {"workers": workers}
    pipe = app.build(
        out=out,
        webhook=url,
        formats=formats,
        summary=summary,
        detect_per_second=detect_per_second,
        **sessions,
    )
    OnnxModel.setup = timed_setup  # type: ignore[method-assign]
    try:
        await pipe.run(frames())
    finally:
        OnnxModel.setup = setup  # type: ignore[method-assign]
    wall = time.perf_counter() - started[0]
    return pipe.statistics()["prepare"].received / wall


async def main(args: argparse.Namespace) -> None:
    out = Path(tempfile.mkdtemp(prefix="aioflow-bench-gates-"))
    videos, truth, drawn = synth.make_dataset(
        out, cameras=args.cameras, seconds=args.seconds, level=args.level
    )
    formats = plates.parse_formats(",".join(drawn))
    characters = OnnxModel.inspect(ocr.model_path(ocr.REC_MODEL)).metadata["character"].split("\n")
    det, rec = sessions()
    decoder = ocr.CtcDecoder(characters)
    frames = await asyncio.to_thread(decode_all, videos)
    runner, url, _ = await run.serve_webhook(0.05)
    rates: dict[str, list[float]] = {
        "bound": [],
        "bound_read": [],
        "sequential": [],
        "aioflow": [],
    }
    try:
        runs = {
            "bound": lambda: asyncio.to_thread(bound, det, rec, frames, decoder, formats),
            "bound_read": lambda: asyncio.to_thread(
                bound, det, rec, frames, decoder, formats, skip_still=True
            ),
            "sequential": lambda: sequential(det, rec, videos, out, url, characters, formats),
            "aioflow": lambda: pipeline(out, videos, url, formats),
        }
        if args.also_workers:
            also = args.also_workers
            rates[f"aioflow_workers_{also[0]}_{also[1]}"] = []
            runs[f"aioflow_workers_{also[0]}_{also[1]}"] = lambda: pipeline(
                out, videos, url, formats, workers=also
            )
        names = list(runs)
        for rep in range(args.reps):
            # Rotate the order so that a slow minute of the machine does not favour one variant.
            for name in names[rep % len(names) :] + names[: rep % len(names)]:
                rates[name].append(await runs[name]())
    finally:
        await runner.cleanup()
    med = {k: statistics.median(v) for k, v in rates.items()}
    # Each repetition's own ratio, so that the machine's minute-to-minute swings cancel out.
    ratios = {
        f"{name}_of_bound_read": statistics.median(
            a / b for a, b in zip(rates[name], rates["bound_read"], strict=True)
        )
        for name in rates
        if name.startswith("aioflow_workers")
    } | {
        "aioflow_of_bound": statistics.median(
            a / b for a, b in zip(rates["aioflow"], rates["bound"], strict=True)
        ),
        "aioflow_of_bound_read": statistics.median(
            a / b for a, b in zip(rates["aioflow"], rates["bound_read"], strict=True)
        ),
        "aioflow_vs_sequential": statistics.median(
            a / s for a, s in zip(rates["aioflow"], rates["sequential"], strict=True)
        ),
    }
    print(f"{len(frames)} frames, {len(truth)} plates, medians of {args.reps} (frames/s)")
    for name, rate in med.items():
        print(
            f"  {name:22} {rate:6.1f}   of bound {rate / med['bound']:5.2f}"
            f"   vs sequential {rate / med['sequential']:5.2f}x"
        )
    print(
        f"  per-repetition ratios (median): aioflow / bound {ratios['aioflow_of_bound']:.2f}, "
        f"aioflow / bound on the crops it reads {ratios['aioflow_of_bound_read']:.2f}, "
        f"aioflow / sequential {ratios['aioflow_vs_sequential']:.2f}x"
    )
    for name, ratio in ratios.items():
        if name.startswith("aioflow_workers"):
            print(f"  per-repetition ratio (median): {name} {ratio:.2f}")
    if args.json:
        write_results(
            args.json,
            {"frames": len(frames), "frames_per_s": med, "ratios": ratios, "runs": rates},
        )


def write_results(path: str, results: dict[str, Any]) -> None:
    """Writes ``results`` to the JSON file ``path``, behind what they were measured with
    (``meta``): once, after the measurements."""
    import onnxruntime

    meta = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "onnxruntime": onnxruntime.__version__,
        "opencv": cv2.__version__,
        "aioflow": af.__version__,
        "date": time.strftime("%Y-%m-%d"),
    }
    Path(path).write_text(json.dumps({"meta": meta, **results}, indent=2))


def sessions_pair(text: str) -> tuple[int, int]:
    """``"2,1"`` -> (2, 1): detector and recogniser sessions."""
    try:
        det, rec = (int(n) for n in text.split(","))
    except ValueError:
        det = rec = 0
    if det < 1 or rec < 1:
        msg = f"expected two session counts of at least 1, such as 2,1; got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return det, rec


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cameras", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--level", choices=list(synth.LEVELS), default="medium")
    parser.add_argument(
        "--also-workers",
        metavar="D,R",
        type=sessions_pair,
        help="also time the pipeline with D detector and R recogniser sessions",
    )
    parser.add_argument("--json")
    af.run(main(parser.parse_args()))
