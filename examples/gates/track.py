"""Per-camera plate tracking with voting: one event per plate per pass.

Each frame's reads (a box, the plate it shows or None, the recogniser's confidence) join the
camera's tracks: a read goes to the track whose box, moved on by the track's last step, overlaps
it most (IoU), preferring a track whose leading plate it agrees with; a confident track does not
take another plate's read. A track unseen for ``patience_s`` seconds of the stream is closed and
becomes an event only when

* ``min_votes`` of its reads agree on the plate (the plate with the highest summed confidence
  wins): one misread frame, or a sign misread once, makes no event;
* the box travelled at least ``min_travel`` of its own heights between its first and last read:
  text that stays put (a sign, a shop front, a painted marking) is not a passing vehicle;
* no event of the same camera gave the same plate, or one differing in a single character with
  more votes, within the last ``dedupe_s`` seconds: a track broken by a few missed frames, or
  split by a misread, is one pass.

Every read and track left out is counted in ``Counts``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

Rect = tuple[int, int, int, int]


def iou(a: Rect, b: Rect) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def centre(r: Rect) -> tuple[float, float]:
    return (r[0] + r[2]) / 2, (r[1] + r[3]) / 2


def near_miss(a: str, b: str) -> bool:
    """Same length, one character apart."""
    return len(a) == len(b) and sum(x != y for x, y in zip(a, b, strict=True)) == 1


@dataclass(frozen=True)
class TrackRules:
    """The tracker's rules (see the module's docstring)."""

    patience_s: float = 0.5
    min_votes: int = 2
    min_travel: float = 1.0  # box heights
    dedupe_s: float = 3.0


DEFAULT_TRACK_RULES = TrackRules()


@dataclass
class Counts:
    """What the pipeline looked at and left out, per camera (summed for the printed summary)."""

    frames: int = 0
    boxes: int = 0  # text boxes the detector found
    not_plate_shape: int = 0  # boxes of no plate's shape or size
    not_plate_ground: int = 0  # boxes without a plate's even, contrasting ground
    unread: int = 0  # crops the recogniser read no plate character in
    off_format: int = 0  # reads that fit no plate format (or no plausible plate)
    tracks: int = 0
    few_votes: int = 0  # tracks closed without min_votes agreeing reads
    static: int = 0  # tracks whose text did not move
    duplicates: int = 0  # tracks of a plate an event was already sent for
    events: int = 0

    def add(self, other: Counts) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class Track:
    ident: int
    rect: Rect
    first_frame: int
    last_frame: int
    first_time: float
    last_time: float
    votes: Counter[str] = field(default_factory=Counter)
    confidence: dict[str, float] = field(default_factory=dict)
    reads: int = 0
    step: tuple[float, float] = (0.0, 0.0)  # the box's last move per frame
    origin: tuple[float, float] = (0.0, 0.0)
    travel: float = 0.0  # the farthest the box got from where it was first seen
    height: float = 0.0  # the largest box height

    @property
    def text(self) -> str | None:
        if not self.votes:
            return None
        return max(self.votes, key=lambda t: (self.confidence[t], self.votes[t]))

    def predicted(self, frame: int) -> Rect:
        gap = frame - self.last_frame
        dx, dy = self.step[0] * gap, self.step[1] * gap
        x0, y0, x1, y1 = self.rect
        return int(x0 + dx), int(y0 + dy), int(x1 + dx), int(y1 + dy)


@dataclass
class CameraState:
    """Everything the tracker keeps for one camera."""

    tracks: list[Track] = field(default_factory=list)
    next_id: int = 0
    recent: dict[str, tuple[float, int]] = field(default_factory=dict)  # plate: (time, votes)
    counts: Counts = field(default_factory=Counts)


Read = tuple[Rect, str | None, float]  # box, plate (None: not one), confidence


def update(
    state: CameraState,
    camera: str,
    frame: int,
    time: float,
    reads: list[Read],
    rules: TrackRules = DEFAULT_TRACK_RULES,
) -> tuple[list[tuple[int, Rect, str | None]], list[dict[str, Any]]]:
    """Feed one frame's reads; return (the frame's labelled boxes, events of closed tracks)."""
    labelled: list[tuple[int, Rect, str | None]] = []
    free = list(state.tracks)
    for rect, text, conf in reads:
        best: Track | None = None
        best_score = 0.1
        for track in free:
            score = iou(rect, track.predicted(frame))
            leader = track.text
            if text is not None and leader is not None:
                if text == leader:
                    score += 0.5
                elif track.votes[leader] >= rules.min_votes:
                    # A confident track does not take another plate's read: the car that just
                    # left and the one coming in through the same spot are different tracks.
                    score -= 0.5
            if score > best_score:
                best, best_score = track, score
        if best is None:
            best = Track(state.next_id, rect, frame, frame, time, time, origin=centre(rect))
            state.next_id += 1
            state.counts.tracks += 1
            state.tracks.append(best)
        else:
            free.remove(best)
            gap = max(frame - best.last_frame, 1)
            (ox, oy), (nx, ny) = centre(best.rect), centre(rect)
            best.step = ((nx - ox) / gap, (ny - oy) / gap)
        best.rect = rect
        best.last_frame, best.last_time = frame, time
        best.reads += 1
        cx, cy = centre(rect)
        best.travel = max(
            best.travel, ((cx - best.origin[0]) ** 2 + (cy - best.origin[1]) ** 2) ** 0.5
        )
        best.height = max(best.height, float(rect[3] - rect[1]))
        if text is not None:
            best.votes[text] += 1
            best.confidence[text] = best.confidence.get(text, 0.0) + conf
        labelled.append((best.ident, rect, best.text))
    events = []
    for track in list(state.tracks):
        if time - track.last_time >= rules.patience_s and frame > track.last_frame:
            state.tracks.remove(track)
            event = close(state, camera, track, rules)
            if event is not None:
                events.append(event)
    return labelled, events


def close(
    state: CameraState, camera: str, track: Track, rules: TrackRules = DEFAULT_TRACK_RULES
) -> dict[str, Any] | None:
    """The event of a finished track, or None (counted) when the rules leave it out."""
    text = track.text
    counts = state.counts
    if text is None or track.votes[text] < rules.min_votes:
        counts.few_votes += 1
        return None
    if track.travel < rules.min_travel * track.height:
        counts.static += 1
        return None
    votes = track.votes[text]
    for plate, (seen, _seen_votes) in list(state.recent.items()):
        if track.first_time - seen > rules.dedupe_s:
            del state.recent[plate]
    seen_same = state.recent.get(text)
    similar = [v for p, (_, v) in state.recent.items() if near_miss(p, text) and v >= votes]
    if seen_same is not None or similar:
        counts.duplicates += 1
        if seen_same is not None:
            state.recent[text] = (track.last_time, max(votes, seen_same[1]))
        return None
    state.recent[text] = (track.last_time, votes)
    counts.events += 1
    return {
        "camera": camera,
        "plate": text,
        "first_frame": track.first_frame,
        "last_frame": track.last_frame,
        "time": round(track.first_time, 3),
        "reads": votes,
        "confidence": round(track.confidence[text] / votes, 3),
    }


@dataclass(frozen=True)
class Score:
    """A run scored against the plates each camera showed."""

    shown: int
    correct: int  # plates with an event that read them exactly
    wrong: int  # events of a plate the camera did not show
    duplicates: int  # further events of a plate already read
    events: int

    def __str__(self) -> str:
        return (
            f"{self.correct}/{self.shown} plates read correctly "
            f"({self.correct / max(self.shown, 1):.0%}), {self.wrong} wrong events, "
            f"{self.duplicates} duplicates (of {self.events} events)"
        )


def score(events: list[dict[str, Any]], truth: dict[str, list[str]]) -> Score:
    """Score events against ``{camera: [plates shown]}``; plates compare by letters and digits
    only. A plate shown twice needs two events."""

    def key(text: str) -> str:
        return "".join(c for c in text.upper() if c.isalnum())

    remaining = {cam: Counter(key(p) for p in plates) for cam, plates in truth.items()}
    read: dict[str, Counter[str]] = {cam: Counter() for cam in truth}
    correct = wrong = duplicates = 0
    for event in sorted(events, key=lambda e: (str(e["camera"]), e["first_frame"])):
        cam, plate = str(event["camera"]), key(str(event["plate"]))
        if remaining.get(cam, Counter())[plate] > 0:
            remaining[cam][plate] -= 1
            read[cam][plate] += 1
            correct += 1
        elif read.get(cam, Counter())[plate] > 0:
            duplicates += 1
        else:
            wrong += 1
    shown = sum(len(p) for p in truth.values())
    return Score(shown, correct, wrong, duplicates, len(events))
