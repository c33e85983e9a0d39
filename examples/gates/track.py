"""Per-camera plate tracking with voting: one event per passing plate.

A read is fitted to the plate format first (``ocr.correct``), then associated with a track of the
same camera by box overlap (IoU) and text: a plate in the other lane never overlaps, and a read
that agrees with a track's leading text is preferred. A track unseen for ``patience`` frames is
closed and its plate decided by a vote over its reads; the end of the stream closes the rest.
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


@dataclass
class Track:
    ident: int
    rect: Rect
    first_frame: int
    last_frame: int
    votes: Counter[str] = field(default_factory=Counter)
    reads: int = 0

    @property
    def text(self) -> str | None:
        return self.votes.most_common(1)[0][0] if self.votes else None


@dataclass
class CameraState:
    """Everything the tracker keeps for one camera (JSON-able, for snapshots)."""

    tracks: list[Track] = field(default_factory=list)
    next_id: int = 0


def update(
    state: CameraState,
    camera: str,
    frame: int,
    reads: list[tuple[Rect, str | None]],
    *,
    patience: int = 3,
    min_votes: int = 2,
) -> tuple[list[tuple[int, Rect, str | None]], list[dict[str, Any]]]:
    """Feed one frame's reads; return (the frame's labelled boxes, events of closed tracks)."""
    labelled: list[tuple[int, Rect, str | None]] = []
    free = list(state.tracks)
    for rect, text in reads:
        best: Track | None = None
        best_score = 0.15
        for track in free:
            score = iou(rect, track.rect)
            leader = track.text
            if text is not None and leader is not None:
                if text == leader:
                    score += 0.5
                elif track.votes[leader] >= min_votes:
                    # A confident track does not take another plate's read: the car that just
                    # left and the one coming in through the same spot are different tracks.
                    score -= 0.5
            if score > best_score:
                best, best_score = track, score
        if best is None:
            best = Track(state.next_id, rect, frame, frame)
            state.next_id += 1
            state.tracks.append(best)
        else:
            free.remove(best)
        best.rect = rect
        best.last_frame = frame
        best.reads += 1
        if text is not None:
            best.votes[text] += 1
        labelled.append((best.ident, rect, best.text))
    events = []
    for track in list(state.tracks):
        if frame - track.last_frame >= patience:
            state.tracks.remove(track)
            event = close(camera, track, min_votes)
            if event is not None:
                events.append(event)
    return labelled, events


def close(camera: str, track: Track, min_votes: int = 2) -> dict[str, Any] | None:
    """The event of a finished track, or None when too few reads agree."""
    text = track.text
    if text is None or track.votes[text] < min_votes:
        return None
    return {
        "camera": camera,
        "plate": text,
        "votes": track.votes[text],
        "reads": track.reads,
        "first_frame": track.first_frame,
        "last_frame": track.last_frame,
    }


def score(events: list[dict[str, Any]], truth: list[dict[str, Any]]) -> tuple[int, int, int]:
    """(plates read correctly, plates shown, wrong or duplicate events)."""
    unmatched = list(truth)
    correct = 0
    wrong = 0
    for event in events:
        match = next(
            (
                t
                for t in unmatched
                if t["camera"] == event["camera"] and t["text"] == event["plate"]
            ),
            None,
        )
        if match is None:
            wrong += 1
        else:
            unmatched.remove(match)
            correct += 1
    return correct, len(truth), wrong
