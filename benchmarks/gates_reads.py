"""Record what the flagship's tracker is given, then replay it through the tracker's rules.

``record`` generates a level's clips for each seed (as ``bench_gates_accuracy.py`` does), runs
the pipeline's steps up to the tracker one frame at a time (detection, plate checks, text
standing still, recognition, CTC decoding) and pickles, per frame, each box's raw read, its
confidence and its look-alike evidence, with the clips' plate formats and ground truth.
``replay`` feeds those reads through ``track.update`` as the pipeline would (with the formats or
without), scores them, and prints the wrong events with the reads behind them, so a change to
the tracker's rules can be checked on many seeds in seconds instead of minutes per seed. The
reads are the models' own; only the cameras' interleaving (which decides which shapes are
learnt first without formats) is fixed here, round-robin by frame (``--orders`` tries others).

    python benchmarks/gates_reads.py record DIR --level hard --seeds 51 52 53 54 55
    python benchmarks/gates_reads.py replay DIR/*.pkl [--orders 5] [--show] [--no-groups]
        [--json benchmarks/results/gates_reads.json --label "hard, seeds 81-85 (held out)"]
"""

from __future__ import annotations

import argparse
import json
import pickle
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench_gates

from aioflow.infer.onnx import OnnxModel
from examples.gates import ocr, plates, synth, track


def record(folder: Path, level: str, seeds: list[int], cameras: int, seconds: float) -> None:
    det, rec = bench_gates.sessions()
    characters = OnnxModel.inspect(ocr.model_path(ocr.REC_MODEL)).metadata["character"]
    decoder = ocr.CtcDecoder(characters.split("\n"))
    folder.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        out = Path(tempfile.mkdtemp(prefix=f"aioflow-gates-{level}-"))
        videos, _, drawn = synth.make_dataset(
            out, cameras=cameras, seconds=seconds, seed=seed, level=level
        )
        truth = json.loads((out / "truth.json").read_text())
        frames: list[dict[str, Any]] = []
        still: dict[str, track.StillText] = {}
        for cam, index, image in bench_gates.decode_all(videos):
            prob = det.run(None, {"x": ocr.det_input(image)[None]})[0][0, 0]
            boxes = []
            for box in ocr.boxes_from_map(prob, image.shape):
                if ocr.plate_shape(image.shape, box) is None:
                    cut = ocr.crop(image, box)
                    board = ocr.on_a_board(image, box, cut)
                    boxes.append((box, ocr.rec_input(cut), board))
            rects = [b.rect for b, _, _ in boxes]
            hold = still.setdefault(cam, track.StillText()).hold(index, rects)
            reads = []
            for (box, x, board), h in zip(boxes, hold, strict=True):
                if not h:
                    probs = rec.run(None, {"x": x[None]})[0][0]
                    raw, confidence, evidence = decoder.read(probs)
                    apart = decoder.set_apart(probs)
                    reads.append((box.rect, raw, confidence, evidence, board, apart))
            # (a box off the plate-ground rule standing still is not read, nor held: app.py)
            held = [b.rect for (b, _, board), h in zip(boxes, hold, strict=True) if h and board]
            frames.append(
                {
                    "camera": cam,
                    "frame": index,
                    "time": index / synth.FPS,
                    "reads": reads,
                    "held": held,
                }
            )
        path = folder / f"{level}-{seed}.pkl"
        path.write_bytes(
            pickle.dumps(
                {"level": level, "seed": seed, "drawn": drawn, "truth": truth, "frames": frames}
            )
        )
        print(f"recorded {path}: {len(frames)} frames", flush=True)


def replay(
    data: dict[str, Any],
    formats: tuple[plates.PlateFormat, ...],
    order: int = 0,
    rules: track.TrackRules = track.DEFAULT_TRACK_RULES,
    grouped: bool = True,
) -> tuple[list[dict[str, Any]], track.Score, dict[str, list[tuple[int, str, str, float]]]]:
    """The events the tracker sends from the recorded reads, their score, and per camera the
    reads it was given (frame, raw, plate, confidence). ``order`` 0: the cameras' frames
    round-robin; else a random interleaving (seeded by ``order``) keeping each camera's order.
    ``grouped``: without formats, take in what the separators read say of the look-alikes
    (``plates.grouped``), as the pipeline does; False: the recogniser's evidence alone."""
    per_cam: dict[str, list[dict[str, Any]]] = {}
    for f in data["frames"]:
        per_cam.setdefault(f["camera"], []).append(f)
    if order == 0:
        longest = max(len(v) for v in per_cam.values())
        sequence = [fs[i] for i in range(longest) for fs in per_cam.values() if i < len(fs)]
    else:
        rng = random.Random(order)
        queues = {c: list(fs) for c, fs in per_cam.items()}
        sequence = []
        while queues:
            cam = rng.choice(sorted(queues))
            sequence.append(queues[cam].pop(0))
            if not queues[cam]:
                del queues[cam]
    shapes = track.Shapes() if not formats else None
    states: dict[str, track.CameraState] = {}
    events: list[dict[str, Any]] = []
    seen: dict[str, list[tuple[int, str, str, float]]] = {}
    for f in sequence:
        cam = f["camera"]
        state = states.setdefault(cam, track.CameraState(shapes=shapes))
        reads: list[track.Read] = []
        for rect, raw, confidence, evidence, *rest in f["reads"]:
            board = rest[0] if rest else True  # (recordings before the flag kept only these)
            apart = rest[1] if len(rest) > 1 else False  # (and before this one)
            text = plates.normalise(raw, formats)
            if not board and text is None:
                continue  # off the plate-ground rule and no plate: counted, not a read (app.py)
            if not formats and text and grouped:
                evidence = plates.grouped(raw, evidence)
            elif not formats and text:
                evidence = tuple(e for c, e in zip(raw, evidence, strict=False) if c.isalnum())
            kept = evidence if not formats and text else ()
            if text is None or len(plates._alnum(text)) != len(plates._alnum(raw)):
                apart = False  # (its last character is not the plate's: app.py)
            reads.append((rect, text, confidence, kept, board, (), apart))
            seen.setdefault(cam, []).append((f["frame"], raw, text or "-", confidence))
        reads += [(rect, None, 0.0) for rect in f["held"]]
        _, new = track.update(state, cam, f["frame"], f["time"], reads, rules)
        events += new
    for cam, state in states.items():
        events += [e for t in list(state.tracks) if (e := track.close(state, cam, t, rules))]
        events += track.recheck(shapes, rules)
    return events, track.score(events, data["truth"]), seen


def main(args: argparse.Namespace) -> None:
    if args.command == "record":
        record(Path(args.folder), args.level, args.seeds, args.cameras, args.seconds)
        return
    totals: dict[str, list[int]] = {}
    seeds: list[int] = []
    for path in args.files:
        data = pickle.loads(Path(path).read_bytes())
        seeds.append(data["seed"])
        for mode, formats in (
            ("formats", plates.parse_formats(",".join(data["drawn"]))),
            ("any", ()),
        ):
            for order in range(args.orders):
                events, score, seen = replay(data, formats, order, grouped=not args.no_groups)
                t = totals.setdefault(f"{data['level']} {mode}", [0, 0, 0, 0, 0])
                for i, v in enumerate(
                    (score.shown, score.correct, score.wrong, score.duplicates, score.events)
                ):
                    t[i] += v
                truth = data["truth"]
                wrong = [
                    e
                    for e in events
                    if not any(plates.same_plate(e["plate"], p) for p in truth[e["camera"]])
                ]
                for e in wrong:
                    print(f"{data['level']} seed {data['seed']} {mode} order {order}: wrong {e}")
                    if args.show:
                        for fr, raw, text, conf in seen[e["camera"]]:
                            if e["first_frame"] - 2 <= fr <= e["last_frame"] + 2:
                                print(f"    {fr:4d} {raw:12} {text:10} {conf:.2f}")
    for name, (shown, correct, n_wrong, dup, n_events) in sorted(totals.items()):
        print(
            f"{name:16} read {correct}/{shown} = {correct / max(shown, 1):.1%}  "
            f"wrong {n_wrong}/{n_events} = {n_wrong / max(n_events, 1):.1%}  duplicates {dup}"
        )
    if args.json:
        save(Path(args.json), args.label or "", seeds, totals)


def save(path: Path, label: str, seeds: list[int], totals: dict[str, list[int]]) -> None:
    """Add (or replace) the entry ``label`` of the results file ``path``: per level and mode,
    the plates shown, read correctly, wrong events, duplicates and events
    (``benchmarks/report.py`` tabulates them)."""
    results = json.loads(path.read_text()) if path.exists() else {"entries": []}
    entry = {
        "label": label,
        "seeds": sorted(set(seeds)),
        "date": time.strftime("%Y-%m-%d"),
        "totals": {
            name: dict(zip(("shown", "correct", "wrong", "duplicates", "events"), t, strict=True))
            for name, t in sorted(totals.items())
        },
    }
    results["entries"] = [e for e in results["entries"] if e["label"] != label] + [entry]
    path.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("record")
    r.add_argument("folder")
    r.add_argument("--level", choices=list(synth.LEVELS), default="hard")
    r.add_argument("--seeds", type=int, nargs="+", default=[51, 52, 53, 54, 55])
    r.add_argument("--cameras", type=int, default=3)
    r.add_argument("--seconds", type=float, default=10.0)
    p = sub.add_parser("replay")
    p.add_argument("files", nargs="+")
    p.add_argument("--orders", type=int, default=1)
    p.add_argument("--show", action="store_true")
    p.add_argument(
        "--no-groups",
        action="store_true",
        help="leave out what the separators read say of look-alikes (plates.grouped), as before",
    )
    p.add_argument("--json", help="add the totals to this results file, under --label")
    p.add_argument("--label", help="what the totals are (the rules, the seeds)")
    main(parser.parse_args())
