"""The gate-camera pipeline: frames in, one event per passing plate out.

    source (video_source)            frames of every camera
    >> prepare                       the part of the frame to look at (a window around what
                                     moves, or all of it: roi.py), resized and normalised
                                     for the detector (2 threads)
    >> detect                        PP-OCR text detection, OnnxModel, batched, 2 sessions
    >> find_plates                   boxes from the probability map, kept when plate-like
                                     (those off the plate-ground rule too: their reads count
                                     where they fit a format, or without formats a shape
                                     plates on their ground had), cropped at their own aspect
       (with ``detect_per_second``: these three run inside ``af.every`` on some frames of
       each camera, named ``sample``; ``unpack`` marks the frames in between as not looked at)
    >> split                         one item per crop; text standing still read now and then
    >> recognize                     PP-OCR text recognition, OnnxModel, batched by width
    >> read_text                     CTC decoding; the read fitted to the plate formats
    >> regroup                       the reads of one frame back together (keyed by camera)
    >> track                         per-camera tracker: votes, motion, one event per pass
    >> annotate >> record            boxes and plates drawn, one video per camera
    >> events >> write_events        each event appended to a JSON-lines file (optional)
    >> webhook                       and POSTed (retried; refused for good: undelivered.jsonl)

``pipeline()`` builds it with its defaults (``python -m aioflow graph
examples.gates.app:pipeline``); ``build()`` takes every option. Importing this module loads
nothing and starts nothing.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2

import aioflow as af
from aioflow.infer.onnx import OnnxModel
from aioflow.io import http, video

from . import ocr, plates, roi, track

DET_BATCH = 4  # frames per detector call
# How long a detector batch short of DET_BATCH frames waits for more: none (a partial batch
# goes at once). 0.05 s filled the batches live but the detector was no busier
# (benchmarks/probe_detector.py).
DET_MAX_WAIT = 0.0
REC_BATCH = 16  # crops per recogniser call
LIVE_QUEUE = 4  # the input queue of each block after detection, with build(live_queue=...)
# Live (build(live_queue=...)), the queues behind the fair queue are short: by Little's law a
# frame's age is the frames in flight over the rate, and frames that wait there only grow old
# (in the fair queue a newer frame of the camera replaces them). With the detector's queue at
# two batches and the recogniser's batches at 16 crops, 8 cameras' frames were 5-7 s old at the
# tracker; at one batch and 8 crops 3 s, and more frames went through (bench_cameras.py, the
# two side by side under a load of 13-14).
LIVE_DETECT_QUEUE = DET_BATCH  # the detector's input queue: one batch ready while two run
# The webhook's retries: an event is POSTed up to 5 times over about 3 s (0.2 s doubling, each
# delay drawn between half and all of it), so a gate service that restarts or answers 503 for a
# moment loses nothing; an event still refused then goes to ``out/undelivered.jsonl`` and the
# run goes on (the cameras keep being read: a service down for a while costs its events, not
# the plates read meanwhile). After 15 failures in a row the webhook's circuit breaker sends
# events there at once for 5 s, rather than making each wait for its retries.
WEBHOOK_RETRY = af.Retry(attempts=5, backoff=0.2, max_backoff=2.0)
UNDELIVERED = "undelivered.jsonl"  # under ``out``: {"event": ..., "error": ...} per line
LIVE_REC_BATCH = 8  # crops per recogniser call, and its queue
# find_plates' input queue, live: the detector's output. Two batches (8) took away the detector's
# waits for room there (0.1-0.3% of its time) but not its waits for the reorder window, the larger
# part (benchmarks/probe_detector.py); the frames would wait 4 more items.
LIVE_FIND_QUEUE = LIVE_QUEUE
# Live, every frame detected: text that has sat in place this long (of the camera's clock) is
# still, however few looks that took (StillText). 5 looks take about that long with 4 cameras
# (their rule, unchanged there: at 0.5 s they read 2.0 crops a look instead of 2.3, a car
# stopping at the gate held sooner), 12 s or more with 32.
LIVE_STILL_S = 1.5


def video_stream(frame: video.Frame) -> str:
    """The camera a frame comes from (what a fair queue shares by)."""
    return frame.stream


@dataclass
class CameraText(track.StillText):
    """Per camera: its text standing still (``track.StillText``) and the plate-like boxes of its
    last whole-frame look, which a look at a window carries where nothing moved
    (``roi.carry``)."""

    whole: list[track.Rect] = field(default_factory=list)


#: How many of the latest events (and of the undelivered ones) a ``Summary`` keeps in memory:
#: a service that runs for months sends millions; the events file and the webhook have them all.
KEEP_EVENTS = 10_000


@dataclass
class Summary:
    """What a run decided, filled in as it goes: the events and the counts of what was left out
    (the tracker adds each camera's counts when the camera's stream ends).

    ``events`` holds the latest ``keep`` events (None: all), ``sent`` counts them all; the same
    for ``undelivered`` and ``failed_posts``, so that a live run's memory stays bounded."""

    events: list[dict[str, Any]] = field(default_factory=list)
    counts: track.Counts = field(default_factory=track.Counts)
    # Events the webhook did not take after the retries (``UNDELIVERED``): with their error.
    undelivered: list[tuple[dict[str, Any], str]] = field(default_factory=list)
    keep: int | None = KEEP_EVENTS
    sent: int = 0  # events, all of them (``events`` may hold only the latest)
    failed_posts: int = 0  # undelivered events, all of them

    def add(self, event: dict[str, Any]) -> None:
        """Count ``event`` and keep it (dropping the oldest kept beyond ``keep``)."""
        self.sent += 1
        self.events.append(event)
        _trim(self.events, self.keep)

    def add_undelivered(self, event: dict[str, Any], error: str) -> None:
        """Count an event the webhook did not take, and keep it with its error."""
        self.failed_posts += 1
        self.undelivered.append((event, error))
        _trim(self.undelivered, self.keep)

    @property
    def complete(self) -> bool:
        """Whether ``events`` holds every event of the run."""
        return len(self.events) == self.sent


def _trim(kept: list[Any], keep: int | None) -> None:
    # Trimmed by a quarter at a time past the bound: a del per event would copy the list each
    # time.
    if keep is not None and len(kept) > keep + max(keep // 4, 1):
        del kept[: len(kept) - keep]


def build(
    *,
    out: Path = Path("out/gates"),
    webhook: str = "http://127.0.0.1:8080/events",
    formats: tuple[plates.PlateFormat, ...] = (),
    events_file: Path | None = None,
    summary: Summary | None = None,
    det_width: int = ocr.DET_WIDTH,
    plate_rules: ocr.PlateRules = ocr.DEFAULT_PLATE_RULES,
    track_rules: track.TrackRules = track.DEFAULT_TRACK_RULES,
    threads: tuple[int, int] = (1, 1),
    workers: tuple[int, int] = (2, 2),
    detect_per_second: float | None = None,
    live_queue: int | None = None,
    look_rules: roi.LookRules | None = roi.DEFAULT_LOOK_RULES,
) -> af.Pipeline:
    """The pipeline. ``formats``: the plate formats to accept (none: any plausible plate);
    ``events_file``: append each event there as a JSON line; ``summary``: filled in with the
    events and counts; ``threads``: onnxruntime's intra-op threads per session for detection
    and recognition, ``workers``: their sessions (calls at once).

    ``detect_per_second``: None (the default) looks at every frame. A number F runs the
    detector (with ``prepare`` and ``find_plates``) on at most F frames per second of each
    camera, by the frames' own timestamps (so a file read faster than real time samples the
    frames a live camera would), through ``af.every`` (its record: ``sample``; the detector's
    record counts the frames it looked at). A frame in between is *held*: it still goes all
    the way through, one record per frame, but makes no reads, and the tracker does not take
    the last detection's boxes as seen on it (plates move: those boxes are where the plates
    were, not where they are). It carries its tracks instead: its annotated frame shows each
    plate seen at the last look where its track's motion puts it now, with its plate so far;
    tracks close and events go out on the frames looked at. Recognition runs only on what the
    detector found, and there only on text that is new or moving (``StillText`` counts looks,
    not frames, then).
    ``look_rules``: where the detector looks (``roi.py``): on most looks at a window of the
    frame around what moved, at up to the frame's own resolution, resized to the detector's
    usual input (so its cost per frame is unchanged); the whole frame on a camera's first look,
    on every ``whole_every``-th, and when nothing moves. None: the whole frame on every look.

    ``live_queue``: None (default) processes every frame, the source waiting for the
    pipeline (files). An int ``n`` serves live cameras when they send more than the detector
    can take: the first block's input holds at most ``n`` frames and, when full, drops the
    oldest frame of the camera holding the most (``overflow="drop_oldest"`` with ``fair=`` by
    camera), so one camera flooding the machine cannot push the others out; the detector's
    input then holds one batch and every block after it a few items (the recogniser one batch
    of 8 crops, not 16), so that frames wait in that one fair queue rather than age in the long
    first-in-first-out queues behind it: a block that falls behind holds the detector back at
    once, and the fair queue drops (``benchmarks/bench_cameras.py``).

    Single-thread sessions, two per model: on 2 cores shared with decoding, drawing and
    encoding, a two-thread session stalls whenever one of its threads is preempted (each
    operator waits for its slowest thread), so it made 0.77-0.92 of the models-alone bound from
    run to run; single-thread sessions made 0.92-0.99 (``benchmarks/bench_gates.py``). Two for
    the recogniser too: with one, the detector's two sessions took two thirds of the cores,
    ran ahead by as much as the queues between them hold (64 items each), and left about a
    third of the crops to be read after the last frame was detected, by one session on one
    core while the other core idled."""
    report = summary if summary is not None else Summary()
    rec_path = ocr.model_path(ocr.REC_MODEL)
    characters = OnnxModel.inspect(rec_path).metadata["character"].split("\n")
    decoder = ocr.CtcDecoder(characters)

    if live_queue is not None and (
        isinstance(live_queue, bool) or not isinstance(live_queue, int) or live_queue < 1
    ):
        msg = f"gates pipeline: live_queue must be None or an int >= 1, got {live_queue!r}"
        raise af.GraphError(msg)
    # Live: the one queue where frames wait is the first; the others are short.
    leaky: dict[str, Any] = {}
    detect_queue: dict[str, Any] = {}
    short: dict[str, Any] = {}
    rec_queue: dict[str, Any] = {}
    find_queue: dict[str, Any] = {}
    rec_batch = REC_BATCH
    if live_queue is not None:
        leaky = {"queue_size": live_queue, "overflow": "drop_oldest", "fair": video_stream}
        detect_queue = {"queue_size": LIVE_DETECT_QUEUE}
        short = {"queue_size": LIVE_QUEUE}
        find_queue = {"queue_size": LIVE_FIND_QUEUE}
        rec_batch = LIVE_REC_BATCH
        rec_queue = {"queue_size": rec_batch}

    looker = roi.Looker(look_rules) if look_rules is not None else None

    # Sampled, the fair leaky queue goes in front of the sampling stage (``admit`` below):
    # inside it, a dropped frame would be a missed look rather than a frame shed.
    # Where the detector looks depends on the camera's previous look (roi.Looker), so a
    # camera's frames are prepared one at a time, in order (key=): with two workers taking a
    # camera's frames at once, a frame could be compared with a later one and the window
    # chosen by chance. Cameras still go side by side.
    in_order = {"key": video_stream} if looker is not None else {}

    # Each camera's frame size: its first frame's. The tracker, the still text and the
    # windows keep places in pixels, so a frame of another size (a camera whose resolution
    # changed, a folder of images of several sizes) is resized to it, and counted.
    sizes: dict[str, tuple[int, int]] = {}

    def first_size(frame: video.Frame) -> video.Frame:
        height, width = frame.image.shape[:2]
        size = sizes.setdefault(frame.stream, (width, height))
        if size == (width, height):
            return frame
        shrink = width * height > size[0] * size[1]
        image = cv2.resize(
            frame.image, size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
        )
        return frame.replace(image=image, meta={**frame.meta, "resized_from": (width, height)})

    @af.block(workers=2, **in_order, **(leaky if detect_per_second is None else short))
    def prepare(frame: video.Frame) -> dict[str, Any]:
        frame = first_size(frame)
        image = frame.image
        if looker is None:
            return {"frame": frame, "x": ocr.det_input(image, det_width), "window": None}
        size = ocr.det_size(image.shape, det_width)
        window, moved = looker.window(frame.stream, image, size)
        part = None if window.whole else window.rect
        x = ocr.det_input(image, det_width, part)
        return {"frame": frame, "x": x, "window": window, "moved": moved}

    detect = OnnxModel(
        ocr.model_path(ocr.DET_MODEL),
        batch=af.Batch(max_size=DET_BATCH, max_wait=DET_MAX_WAIT),
        **detect_queue,
        intra_op_num_threads=threads[0],
        workers=workers[0],
        select="x",
        merge=lambda item, prob: {**item, "x": None, "prob": prob[0]},
        name="detect",
    )

    @af.block(workers=2, **find_queue)
    def find_plates(item: dict[str, Any]) -> dict[str, Any]:
        """The frame's plate-like text boxes, each with its recogniser input, and the counts
        of the boxes left out."""
        frame, window = item["frame"], item["window"]
        part = None if window is None or window.whole else window.rect
        found = ocr.boxes_from_map(item["prob"], frame.image.shape, window=part)
        dropped = {"boxes": len(found), "edge": 0, "shape": 0, "ground": 0}
        boxes = []
        for box in found:
            why = ocr.plate_shape(frame.image.shape, box, plate_rules)
            if why is None and part is not None and window.cuts(box.rect, frame.image.shape):
                why = "edge"  # text that may go on beyond the window
            if why is None:
                cut = ocr.crop(frame.image, box)
                # A box off the plate-ground rule is read all the same, so that a black plate
                # on a car as dark as it is read: with formats its read counts only where it
                # fits one (PlateTracker), without them only in a shape that plates read on
                # their ground had (track.close; docs/gates.md, *ground*).
                board = ocr.on_a_board(frame.image, box, cut, plate_rules)
                boxes.append((box, ocr.rec_input(cut), board))
                continue
            dropped[why] += 1
        return {
            "frame": frame,
            "boxes": boxes,
            "dropped": dropped,
            "looked": True,
            "window": window,
            "moved": item.get("moved"),
        }

    looking: list[Any] = [prepare, detect, find_plates]
    if detect_per_second is not None:
        rate: object = detect_per_second  # (typed float, but callers pass anything)
        if (
            isinstance(rate, bool)
            or not isinstance(rate, int | float)
            or not math.isfinite(rate)
            or rate <= 0
        ):
            msg = f"build(): detect_per_second must be a number > 0 or None, got {rate!r}"
            raise ValueError(msg)

        nothing = {"boxes": 0, "edge": 0, "shape": 0, "ground": 0}

        @af.block(**short)
        async def unpack(held: af.Held[video.Frame, dict[str, Any]]) -> dict[str, Any]:
            """A frame the detector looked at goes on with its plates; a frame in between
            goes on alone, marked as not looked at. The held result (the last look's boxes)
            is not passed on: on this frame the plates are elsewhere."""
            if held.fresh:
                return held.result
            frame = first_size(held.item)
            return {"frame": frame, "boxes": [], "dropped": nothing, "looked": False}

        # The camera's own clock: a file read faster than real time (or a live camera whose
        # frames queued) samples the frames 1/F seconds apart in the footage.
        sample = af.every(
            af.Pipeline(prepare, detect, find_plates),
            per_second=rate,
            key=lambda frame: frame.stream,
            clock=lambda frame: frame.timestamp,
            name="sample",
            # Live, the frames wait in the fair queue (``admit``), where a newer frame of the
            # camera replaces them, not in a first-in-first-out queue behind it: with the
            # default 64 frames here and in ``unpack``, frames of 8 cameras that sent more
            # than the detector took were 5-8 s old at the tracker (bench_cameras.py). And a
            # frame waits only for its own camera's look, not for the looks of the others
            # (every block after this one keeps each camera's order, none needs more).
            **short,
            ordered=live_queue is None,
        )
        looking = [sample, unpack]
        if live_queue is not None:

            @af.block(**leaky)
            def admit(frame: video.Frame) -> video.Frame:
                """The live cameras' one fair leaky queue, ahead of the sampling."""
                return frame

            looking.insert(0, admit)
        # A track is closed when unseen for ``patience_s`` of the stream; it can be seen only on
        # a look, so at a rate where that is a single sampling period or less (0.5 s: 2 looks a
        # second) one missed detection would end it, where every frame tolerates several.
        # Never fewer than one: it is closed once unseen for one and a half periods, at the
        # second look that misses it.
        patience = max(track_rules.patience_s, 1.5 / rate)
        track_rules = dataclasses.replace(track_rules, patience_s=patience)

    def camera(item: dict[str, Any]) -> str:
        return str(item["frame"].stream)

    # Live, a box is also still once it has sat in place for this long (see ``split``). Live
    # and sampled, never sooner than the looks at the set rate take to count it still (5
    # looks: 1 s at 5 looks a second, 2.5 s at 2): there it changes only what happens once
    # the cameras ask for more looks than the detector serves. Then the frames that get
    # through are looked at one by one, 1-2 s apart with 8 cameras, and signs read on every
    # look made the recogniser as busy as the detector (bench_cameras.py --detect-rate 5).
    live_still_s: float | None = None
    if live_queue is not None:
        live_still_s = LIVE_STILL_S
        if detect_per_second is not None:
            live_still_s = max(LIVE_STILL_S, track.StillText.still_frames / detect_per_second)

    @af.block(key=camera, state=CameraText, **short)
    async def split(record: dict[str, Any], still: CameraText) -> Any:
        """One item per box to read, or one empty item for a frame with none (or one the
        detector did not look at). Text that has not moved for a while (a sign) is read again
        only now and then (``StillText``): its box goes to the tracker as held, without a
        read. A look at a window of the frame also holds the boxes of the last whole look
        that are still there, unseen (``roi.carry``)."""
        frame, boxes, looked = record["frame"], record["boxes"], record["looked"]
        common = {"frame": frame, "dropped": record["dropped"], "looked": looked}
        if not looked:
            yield {**common, "n": 0, "k": 0, "held": []}
            return
        window = record.get("window")
        carried: list[track.Rect] = []
        if window is not None:
            if window.whole:
                still.whole = [box.rect for box, _, board in boxes if board]
            else:
                carried = roi.carry(window, record["moved"], still.whole, frame.image.shape)
        # Sampled, or live (the fair queue drops frames once the cameras send more than the
        # detector takes), StillText counts the frames looked at: "still for 5 looks, read on
        # one look in 10". Frame numbers jump between looks there (by 3 to 30 with 4 to 32
        # cameras), so by frame number no box would ever stand still and every sign would be
        # read on every look: the recogniser then read twice the crops and held the detector
        # back (benchmarks/bench_cameras.py). Every frame looked at, the two are the same.
        look = frame.index if detect_per_second is None and live_queue is None else still.looks
        still.looks += 1
        # Live and every frame detected, the looks at a camera are the further apart the more
        # cameras share the detector (2-3 s with 32): 5 looks took the whole session there, and
        # the signs read on every look made the recogniser the slowest step (the detector 0.66
        # busy, waiting for room 60% of the time). So a box is also still once it has sat in
        # place for LIVE_STILL_S of the camera's clock, on 2 looks or more.
        rects = [box.rect for box, _, _ in boxes]
        hold = still.hold(look, rects + carried, at=frame.timestamp, still_s=live_still_s)
        hold = hold[: len(boxes)]
        # A box off the ground rule that stands still goes nowhere: unread, nothing says it
        # is a plate.
        held = [b.rect for (b, _, board), h in zip(boxes, hold, strict=True) if h and board]
        held += carried
        fresh = [(box, x, board) for (box, x, board), h in zip(boxes, hold, strict=True) if not h]
        common.update(n=len(fresh), held=held)
        if not fresh:
            yield {**common, "k": 0}
            return
        for k, (box, x, board) in enumerate(fresh):
            yield {**common, "k": k, "box": box, "x": x, "board": board}

    recognize = OnnxModel(
        rec_path,
        batch=af.Batch(max_size=rec_batch, max_wait=0.002),
        **rec_queue,
        intra_op_num_threads=threads[1],
        workers=workers[1],
        select="x",  # a frame without boxes selects nothing and passes through
        merge=lambda item, probs: {**item, "x": None, "probs": probs},
        name="recognize",
    )

    @af.block(workers=2, **short)
    def read_text(item: dict[str, Any]) -> dict[str, Any]:
        """The read; for one that may hide a Q in a 0 or an O, the input of a second look at
        the box grown taller (``look_again``)."""
        if item["n"] == 0:
            return item
        raw, confidence, evidence, hints = decoder.read_hinted(item["probs"])
        again = None
        if ocr.may_hide_q(raw, formats):
            box = ocr.taller(item["box"])
            again = ocr.rec_input(ocr.crop(item["frame"].image, box))
        return {
            **item,
            "probs": None,
            "raw": raw,
            "confidence": confidence,
            "evidence": evidence,
            "hints": hints,
            "apart": decoder.set_apart(item["probs"]),
            "again": again,
        }

    # A Q's tail hangs below the line, out of the detector's box: a 0 or an O read is looked
    # at again in a taller box (``ocr.TALL``), which shows the tail or its absence.
    look_again = OnnxModel(
        rec_path,
        batch=af.Batch(max_size=rec_batch, max_wait=0.002),
        **rec_queue,
        intra_op_num_threads=threads[1],
        workers=1,
        select="again",  # a read without a 0 or an O passes through
        merge=lambda item, probs: {**item, "again": None, "probs": probs},
        name="look_again",
    )

    @af.block(**short)
    async def plate_text(item: dict[str, Any]) -> dict[str, Any]:
        """The plate the read shows (fitted to the formats), with what the second look said."""
        if item["n"] == 0:
            return item
        raw, evidence, hints = item["raw"], item["evidence"], item["hints"]
        if item.get("probs") is not None:
            raw, hints = decoder.second_look(raw, hints, item["probs"])
            evidence = tuple(None if c == "Q" else e for c, e in zip(raw, evidence, strict=True))
        text = plates.normalise(raw, formats)
        # Without formats the read is the plate as read, so the recogniser's evidence for each
        # look-alike character goes with it (the tracker weighs it across the track's reads),
        # with what the plate's groups (the separators read) say of it; a format has already
        # said which kind each position holds.
        evidence = plates.grouped(raw, evidence) if not formats and text is not None else ()
        # The faint Q tails, and a last character set apart, go with the plate where its
        # letters and digits are the read's.
        apart = item.get("apart", False)
        if text is None or len(plates._alnum(text)) != len(plates._alnum(raw)):
            hints, apart = (), False
        return {
            **item,
            "probs": None,
            "raw": raw,
            "text": text,
            "evidence": evidence,
            "hints": hints,
            "apart": apart,
        }

    @af.block(key=camera, state=list, **short)
    async def regroup(item: dict[str, Any], pending: list[dict[str, Any]]) -> Any:
        """Crops of one frame arrive together and in order: gather them into one record."""
        if item["n"]:
            pending.append(item)
            if item["k"] < item["n"] - 1:
                return
        yield {
            "frame": item["frame"],
            "reads": list(pending),
            "held": item["held"],
            "dropped": item["dropped"],
            "looked": item["looked"],
        }
        pending.clear()

    # Without formats, the cameras learn plate shapes together (``track.Shapes``): a site's
    # cameras see the same few formats.
    shapes = track.Shapes() if not formats else None

    class PlateTracker(af.Block):
        """One event per passing plate, per camera (``track.py``)."""

        key = staticmethod(camera)

        def create_state(self, key: Any) -> track.CameraState:
            return track.CameraState(shapes=shapes)

        async def process(self, item: dict[str, Any], state: track.CameraState) -> Any:
            frame = item["frame"]
            counts = state.counts
            counts.frames += 1
            if "resized_from" in frame.meta:
                counts.resized += 1
            if not item["looked"]:
                # A frame the detector did not look at: nothing was seen on it, so no track is
                # matched, moved, missed or closed; it shows the plates seen at the last look
                # where their motion puts them now (``track.coast``).
                counts.not_looked += 1
                return {"frame": frame, "labelled": track.coast(state, frame.index), "events": []}
            counts.boxes += item["dropped"]["boxes"]
            counts.at_edge += item["dropped"]["edge"]
            counts.not_plate_shape += item["dropped"]["shape"]
            counts.not_plate_ground += item["dropped"]["ground"]
            reads: list[track.Read] = []
            for read in item["reads"]:
                if not read["board"] and read["text"] is None:
                    counts.not_plate_ground += 1  # off the ground rule, and fits no format
                    continue
                if read["text"] is None:
                    if read["raw"]:
                        counts.off_format += 1
                    else:
                        counts.unread += 1
                reads.append(
                    (
                        read["box"].rect,
                        read["text"],
                        read["confidence"],
                        read["evidence"],
                        read["board"],
                        read.get("hints", ()),
                        read.get("apart", False),
                    )
                )
            counts.held += len(item["held"])
            reads += [(rect, None, 0.0) for rect in item["held"]]
            labelled, events = track.update(
                state, frame.stream, frame.index, frame.timestamp, reads, track_rules
            )
            return {"frame": frame, "labelled": labelled, "events": events}

        async def evict(self, key: Any, state: track.CameraState) -> list[dict[str, Any]]:
            # End of the stream: the plates still in view are decided now.
            events = [
                e
                for t in list(state.tracks)
                if (e := track.close(state, str(key), t, track_rules)) is not None
            ]
            # Held tracks, this camera's or another's, that the plates just decided settle.
            events += track.recheck(shapes, track_rules)
            report.counts.add(state.counts)
            return [{"frame": None, "labelled": [], "events": events}]

    @af.block(workers=2, **short)
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
        """The library's writer (at each stream's own frame rate), for records that carry a
        frame (or none, at the end). A camera that ends (removed) has its file closed then
        (``VideoWriter.evict``)."""

        key = staticmethod(lambda item: item["frame"].stream if item["frame"] else "")  # type: ignore[assignment]

        def process(self, item: dict[str, Any], state: Any = None) -> dict[str, Any]:  # type: ignore[override]
            if item["frame"] is not None:
                super().process(item["frame"], state)
            return item

    @af.block
    async def events(item: dict[str, Any]) -> Any:
        for event in item["events"]:
            report.add(event)
            yield event

    @af.block(workers=1)
    def write_events(event: dict[str, Any]) -> dict[str, Any]:
        """Append the event to the events file as one JSON line (in a thread: file IO)."""
        if events_file is not None:
            with events_file.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(event) + "\n")
        return event

    def undeliverable(event: dict[str, Any], error: BaseException) -> None:
        """An event the webhook refused for good: kept, with why, and the run goes on."""
        cause = error.__cause__ if error.__cause__ is not None else error
        report.add_undelivered(event, str(cause))
        out.mkdir(parents=True, exist_ok=True)
        with (out / UNDELIVERED).open("a", encoding="utf-8") as fh:
            fh.write(json.dumps({"event": event, "error": str(cause)}) + "\n")

    webhook_block = http.post(
        webhook, retry=WEBHOOK_RETRY, dead_letter=undeliverable, name="webhook"
    )

    return af.Pipeline(
        *looking,
        split,
        recognize,
        read_text,
        look_again,
        plate_text,
        regroup,
        PlateTracker(name="track", **short),
        annotate,
        Recorder(str(out / "annotated" / "{stream}.mp4"), name="record", **short),
        events,
        write_events,
        webhook_block,
        name="gates",
    )


def pipeline() -> af.Pipeline:
    """The pipeline with its defaults: any plausible plate, events POSTed to
    ``http://127.0.0.1:8080/events``, annotated videos under ``out/gates``."""
    return build()
