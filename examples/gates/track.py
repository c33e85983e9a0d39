"""Per-camera plate tracking with voting: one event per plate per pass.

Each frame's reads (a box, the plate it shows or None, the recogniser's confidence and, without
plate formats, its evidence for each look-alike character) join the camera's tracks: a read
goes to the track whose box, moved on by the track's last step, overlaps it most (IoU; or lies
close along its way, see ``match``), preferring a track whose leading plate it agrees with; a
confident track does not take another plate's read, unless the track is moving, its last box
was read as a plate, and the box lies right where that plate went on the frame after
(``follows``: one plate read another way, not another plate; two tracks of it would give two
events). A track unseen for ``patience_s`` seconds
of the stream (or ``patience_frames`` frames) is closed and becomes an event only when

* ``min_votes`` of its reads agree on the plate: reads that differ only in look-alikes (0/O,
  1/I...) are one *reading* (``plates.fold``); the reading with the highest summed confidence
  wins, reads of a part of it (cut short at either end, ``cut_short``: ``PH51`` of
  ``1PPH51``) counting for it, so a part is never a plate of its own (but a part one
  character shorter read from boxes as wide is the same text, the longer reading a mark at its
  edge taken in: the two compete, ``Track.same_text``, and where the part was read on larger
  boxes, the longer counts for it, ``Track.marked``; so it does where the longer reading's
  last character stood apart from the rest on most of its reads, a mark past the plate's end,
  ``Track.beyond``); failing that,
  ``min_consensus`` reads within one character of what their characters agree on, each
  character read by ``min_votes`` reads at least and by most of them (``Track.consensus``).
  One or two misread frames, a sign misread twice, or reads split two and two between two
  characters make no event; nor does a reading one of whose characters the reads within two
  characters of it (cut short or taking in one more) contest as much as they back it
  (``Track.contested``);
* each look-alike position is the digit or the letter as the recogniser's evidence summed over
  the reads says; where that evidence is a near toss-up (over ``max_doubt`` for the form not
  chosen), the learnt plate shapes (``Shapes``, without formats) settle it, and failing them
  the track is held as unsure, and sent only if shapes learnt later settle it (``settle``).
  Without formats, a plate read in a shape (letters and digits) the site's events never had,
  one look-alike from a shape they had ``min_seen`` times, is held alike (``Shapes.novel``)
  when that look-alike may be a misread: a ``0``/``O`` or ``1``/``I`` (one glyph in many plate
  fonts), or another whose evidence was not sure (``Shapes.sure_below``); two of these count
  as one;
* without formats, ``min_votes`` of its reads were of a box on a plate's ground
  (``ocr.on_a_board``), or the plate is in a shape (``kinds_of``) that ``Shapes.min_seen``
  events had: a black plate on a car as dark as it is read off its ground, and so is text on a
  van; held as unsure until the site's plates have taught the shape (``recheck``);
* the box travelled at least ``min_travel`` of its own heights from its first sighting, on two
  sightings at least, both its edges moving the same way (``moved``), and as far summed
  sighting by sighting (``Track.drift``; a step whose two edges moved by amounts far apart is
  another box in its place, not a move: ``glide``; nor is a box within the span the track's
  boxes covered before, a part of the text seen before: ``advance``): text that stays put (a
  sign, a shop front, a painted marking, a sign the detector sometimes cuts short or a passing
  car's box joins once, a sign that passing vehicles uncover from one side and cover from the
  other, or seen in parts between them, or whose box a passing van's lettering joins) is not a
  passing vehicle;
* no other track that moved with it (the same vehicle: its offset steady as seen or at the
  vehicle's scale, as a vehicle coming closer grows, or a line of lettering boxed in pieces
  staying within its span, and within ``VEHICLE_WIDTHS`` plate widths across,
  ``same_vehicle``) and whose reads agree on a plate sat lower: the plate is a vehicle's
  lowest text, lettering on the body, model badges and stickers ride above (unless it is a
  plate too, the car behind's: on its own ground, its box as rigid as a board's, ``rigid``,
  and of a plate's size and shape; without formats, one of the lower plate's size waits,
  held as unsure, until the site sends its shape);
* no letter O of the plate (not made a Q by ``Track.tails``; without formats, no 0 either)
  was seen with a hint of a Q's tail (``ocr.Q_HINT``), or as a Q, on ``HINT_SHARE`` of its
  reads (and ``HINT_READS``): a Q whose tail blur took away, or an O of a font that draws a
  trace of one, which cannot be told apart (held as unsure); nor an I (without formats, a 1)
  with a hint of a J (``ocr.J_HINT``) on ``J_SHARE`` of its reads: a J whose hook blur took
  away (held as unsure);
* no event of the same camera gave the same plate, or one a character apart (changed or
  missing, or the plate cut short) with as many votes or more, within the last ``dedupe_s``
  seconds, and no track still open has such a plate with more votes: a track broken by a few
  missed frames, or split by a misread or by two boxes on one plate, is one pass.

Every read and track left out is counted in ``Counts``.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from . import plates

Rect = tuple[int, int, int, int]
# A letter O that this many of a track's reads saw as a Q, and this share of its reads of the
# plate's length, is a Q (``Track.tails``).
TAIL_READS = 2
TAIL_SHARE = 0.25
# A letter O (not made a Q by ``tails``) that this share of the track's reads of its plate, and
# this many, saw with a hint of a Q's tail (``ocr.Q_HINT``) or as a Q may be a Q the blur took
# the tail off, or an O whose font draws one: the track is held as unsure
# (``Track.faint_tail``). A trade, as the hint tells the two apart only in some fonts: on the
# other generator's clips most true O's show it on 0-4% of their reads, but some fonts' O on
# 27-100% (FO-708-VT 27%, EO65 ONB 60%, XO-738-RH all), and a blurred Q read as an O shows it
# on 14-96%. Held-out seeds 45-47 (medium): 2 wrong events became misses, 1 O plate was held.
HINT_SHARE = 0.15
HINT_READS = 2
# An I (without formats, a 1 too) that this share of the track's reads of its plate, and
# ``HINT_READS``, saw with a hint of a J (``ocr.J_HINT``) may be a J whose hook the blur took
# away: the track is held as unsure (``Track.faint_j``). On the other generator's hard clips
# (seeds 14-17) a J read as an I on 30 reads showed it on 63% (``SJ 772 TU``); the I's of 16
# plates on 0-8% of their reads.
J_SHARE = 0.4
# A read counts for or against a reading's characters (``Track.contested``) when it differs
# from it in this many characters at most: a blurred plate's reads scatter, each differing from
# the others in a character or two, and a character that they show otherwise as often as the
# leading reading shows it is a guess (UY-809-BQ, 13 px text under 5.5 px of motion blur, read
# UY-889-BO on 3 of 9 frames, its fifth character also a 9 on 3, a 0 on 2 and a 6 on 1). Reads
# further apart are of some other text or too blurred to say anything.
CONTEST_CHANGES = 2
# How far across (in plate widths) two texts on one vehicle's back or front can lie apart:
# a plate is about 0.52 m wide, the widest vehicles 2.55 m (``same_vehicle``).
VEHICLE_WIDTHS = 2.5
# A reading's parts (reads of it cut short) count for it when read at most this many times as
# often as it (``Track.key``).
PART_RATIO = 4
# A part of a reading read from boxes as wide for their height as the reading's, less this
# share of a character (``Track.same_text``), is a read of the same text.
NARROWER = 0.5
# A part of a reading one character shorter, read at least half as often as it and from
# boxes this many times as high (their mean), is the plate, and the reading the plate with a
# mark beside it (``Track.marked``).
LARGER = 1.2
# Two plates' text is of one height within this factor (``same_size``); a plate's text above
# another's, further away, is at most this factor as high (``no_larger``).
SAME_SIZE = 1.5
# How far a plate's box shape (its width over its height) may stray from its median and still
# be a board's (``rigid``) ...
RIGID = 0.2
# ... or its width alone, crossing the view (cut short by the frame's edge as it comes in).
RIGID_WIDTH = 1 / 3
# A still text (read in place, not moved) takes a box read as nothing only where this share of
# the box lies within the span its boxes covered (``update``).
STILL_INSIDE = 0.5
# How far above a plate, in its widths, another plate of that size or smaller is the car
# behind's rather than a badge or a sticker on the same vehicle (``far_above``).
FAR_ABOVE = 1.0


def iou(a: Rect, b: Rect) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def inside(rect: Rect, span: Rect) -> float:
    """The share of ``rect``'s area that lies within ``span``."""
    ix = max(0, min(rect[2], span[2]) - max(rect[0], span[0]))
    iy = max(0, min(rect[3], span[3]) - max(rect[1], span[1]))
    area = (rect[2] - rect[0]) * (rect[3] - rect[1])
    return ix * iy / area if area > 0 else 0.0


def centre(r: Rect) -> tuple[float, float]:
    return (r[0] + r[2]) / 2, (r[1] + r[3]) / 2


def match(rect: Rect, predicted: Rect, gap: int, young: bool = True) -> float:
    """How well a box continues a track: the overlap (IoU) with where the track should be now,
    or, for a box that moved further than its overlap shows (a small plate going fast, whose
    track has no speed yet: ``young``, seen once), a weak match when its centre is within one
    box width along and half a box height across of the prediction in the next two frames.
    A track seen twice or more knows its speed, and a sign's (none) does not reach out to a
    box beside it: a van's lettering passing in front of ``N7 PARIS``, its box 227 px to the
    side and three times as wide, took the sign's track over, which then moved, and the sign
    went out as a plate (the other generator's medium seed 29, without formats)."""
    overlap = iou(rect, predicted)
    if overlap > 0.1 or gap > 2 or not young:
        return overlap
    (cx, cy), (px, py) = centre(rect), centre(predicted)
    width = max(rect[2] - rect[0], predicted[2] - predicted[0], 1)
    height = max(rect[3] - rect[1], predicted[3] - predicted[1], 1)
    h_ratio = (rect[3] - rect[1]) / max(predicted[3] - predicted[1], 1)
    if abs(cx - px) < width and abs(cy - py) <= 0.5 * height and 0.67 <= h_ratio <= 1.5:
        return 0.1 + 0.1 * (1 - abs(cx - px) / width)
    return overlap


def follows(rect: Rect, predicted: Rect, gap: int) -> bool:
    """Whether a box surely continues a track whatever it reads: on the frame right after the
    track's last one, it covers most of where the track should be now (IoU 0.5 or more). Two
    plates cannot take each other's place from one frame to the next; one plate read two ways
    (``LY65DJF`` and ``LY6503F``: a D and a J the recogniser sometimes takes for a 0 and a 3)
    does."""
    return gap == 1 and iou(rect, predicted) >= 0.5


def shift(a0: int, a1: int, b0: int, b1: int) -> float:
    """How far an interval (a box's two edges along one axis) moved from ``a0..a1`` to
    ``b0..b1``, with its sign: the smaller shift of its two edges when both shifted the same
    way, else none."""
    d0, d1 = b0 - a0, b1 - a1
    if d0 * d1 <= 0:
        return 0.0
    return float(min(abs(d0), abs(d1))) * (1.0 if d0 > 0 else -1.0)


def glide(a0: int, a1: int, b0: int, b1: int, slack: float) -> float:
    """``shift``, but none when the two edges shifted by amounts more than ``slack`` (a box
    height) and half the larger apart: not the box moving but another one, of another shape,
    in its place (a sign's box, its left part hidden by a passing car and the van's lettering
    beside it taken in: 37 px at one edge, 111 at the other, KEBAB24 sent as moving)."""
    d0, d1 = b0 - a0, b1 - a1
    if abs(d0 - d1) > max(slack, 0.5 * max(abs(d0), abs(d1))):
        return 0.0
    return shift(a0, a1, b0, b1)


def advance(before: Rect, rect: Rect, extent: Rect, slack: float) -> tuple[float, float]:
    """How far a box moved from the sighting before, along each axis (``glide``); none along
    an axis where it lies within the span the track's boxes covered so far (``extent``): it
    is a part of the text seen before, not the text moved. A sign that a passing vehicle
    covers from one side and the next uncovers from the other (``N7 PARIS`` seen as its
    middle, then as its left half: a shift of 43 px, both edges the same way, with the sign
    standing still; the other generator's medium seed 53) did not move."""
    x0, y0, x1, y1 = extent
    dx = (
        0.0
        if x0 <= rect[0] and rect[2] <= x1
        else glide(before[0], before[2], rect[0], rect[2], slack)
    )
    dy = (
        0.0
        if y0 <= rect[1] and rect[3] <= y1
        else glide(before[1], before[3], rect[1], rect[3], slack)
    )
    return dx, dy


def moved(origin: Rect, rect: Rect) -> float:
    """How far a box moved from ``origin``: along each axis, the smaller shift of its two edges
    when both shifted the same way, else none. A box that only grew or shrank on one side (the
    detector cut a sign's text short, or its height flickered) did not move."""
    dx = shift(origin[0], origin[2], rect[0], rect[2])
    dy = shift(origin[1], origin[3], rect[1], rect[3])
    return float((dx * dx + dy * dy) ** 0.5)


def near_miss(a: str, b: str) -> bool:
    """Whether two reads may be one plate: one character changed, one missing, or the one
    the other cut short at either end (``EET7`` of ``FLEET7``). Separators do not count: with
    formats a read is written as the format it fits prints it, and one plate read two ways
    may fit two formats (``RJ77 QBZ`` read ``RJ-770-BZ``: ``LL-999-LL``)."""
    a, b = plates._alnum(a), plates._alnum(b)
    if a == b:
        return True
    if len(a) == len(b):
        return sum(x != y for x, y in zip(a, b, strict=True)) == 1
    short, long = sorted((a, b), key=len)
    if short in long:
        return True
    return len(long) - len(short) == 1 and any(
        long[:i] + long[i + 1 :] == short for i in range(len(long))
    )


def cut_short(short: str, long: str) -> bool:
    """``short`` is ``long`` with characters missing at either end or both (a proper part of
    it): the detector's box cut the plate's edge, or left a few characters of it out (a small
    plate's box often holds only ``PH51`` of ``1PPH51``)."""
    return len(short) < len(long) and short in long


@dataclass(frozen=True)
class TrackRules:
    """The tracker's rules (see the module's docstring)."""

    patience_s: float = 0.5
    patience_frames: int = 50  # also closes a track, for streams whose clock stands still
    min_votes: int = 3
    min_consensus: int = 4  # reads behind a reading pieced together character by character
    max_doubt: float = 0.4  # the most of the evidence a look-alike left unchosen may hold
    hold_s: float = 60.0  # how long an unsure track waits for the learnt shapes to settle it
    # Send a track's event while it is still open, once this many reads agree and every other
    # rule holds (None: when it closes).
    early_votes: int | None = None
    min_travel: float = 1.0  # box heights
    dedupe_s: float = 3.0


DEFAULT_TRACK_RULES = TrackRules()


@dataclass
class Counts:
    """What the pipeline looked at and left out, per camera (summed for the printed summary)."""

    frames: int = 0
    resized: int = 0  # frames of another size than their camera's first, resized to it
    boxes: int = 0  # text boxes the detector found
    at_edge: int = 0  # boxes touching the frame's edge (the text may be cut off)
    not_plate_shape: int = 0  # boxes of no plate's shape or size
    not_plate_ground: int = 0  # boxes without a plate's even, contrasting ground
    unread: int = 0  # crops the recogniser read no plate character in
    off_format: int = 0  # reads that fit no plate format (or no plausible plate)
    held: int = 0  # boxes of text standing still, not read again (StillText)
    not_looked: int = 0  # frames the detector did not look at (``detect_per_second``)
    tracks: int = 0
    few_votes: int = 0  # tracks closed without min_votes agreeing reads
    static: int = 0  # tracks whose text did not move
    on_vehicle: int = 0  # tracks of text riding above a plate on the same vehicle
    # tracks whose reads left a look-alike (0 or O...) undecided, or read off a plate's
    # ground in a shape no plate had (held until the learnt shapes settle them)
    unsure: int = 0
    duplicates: int = 0  # tracks of a plate an event was already sent for
    events: int = 0

    def add(self, other: Counts) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class StillText:
    """Per camera: which text boxes have stood still long enough to be read only now and then.

    A box that sits where a box sat in the frame before (its centre within ``tolerance`` of
    its height, its size within 30%) for ``still_frames`` frames in a row is read on one frame
    in ``every``; on the others it is held: the tracker sees the box, which keeps its track
    alive, but no read. Signs and shop fronts then cost the recogniser a tenth; a car that
    stops at the gate is still read (and was read as it drove up).

    ``hold(..., at=t, still_s=s)`` (live cameras, where the frames looked at are far apart) also
    takes a box as still once it has sat in place for ``s`` seconds of the camera's clock, seen
    on two looks or more: with 32 cameras a camera is looked at every 2-3 s, so 5 looks take
    12 s or more, and until then every sign was read on every look (``build(live_queue=...)``).
    """

    still_frames: int = 5
    every: int = 10
    tolerance: float = 0.15
    # box, frames still, frame, when it came to sit there (the camera's clock; 0 without ``at``)
    boxes: list[tuple[Rect, int, int, float]] = field(default_factory=list)
    looks: int = 0  # frames looked at so far (the frame number to use when sampling)

    def hold(
        self, frame: int, rects: list[Rect], *, at: float = 0.0, still_s: float | None = None
    ) -> list[bool]:
        previous = [b for b in self.boxes if frame - b[2] <= 2]
        now: list[tuple[Rect, int, int, float]] = []
        out = []
        for rect in rects:
            h = max(rect[3] - rect[1], 1)
            (cx, cy), area = centre(rect), (rect[2] - rect[0]) * h
            match = None
            for old in previous:
                (ox, oy), r = centre(old[0]), old[0]
                old_area = (r[2] - r[0]) * max(r[3] - r[1], 1)
                if (
                    abs(cx - ox) <= self.tolerance * h
                    and abs(cy - oy) <= self.tolerance * h
                    and 0.7 <= area / max(old_area, 1) <= 1.3
                ):
                    match = old
                    break
            still, since = 0, at
            if match is not None:
                previous.remove(match)
                still, since = match[1] + 1, match[3]
            now.append((rect, still, frame, since))
            long_enough = still >= self.still_frames or (
                still_s is not None and still >= 1 and at - since >= still_s
            )
            out.append(long_enough and still % self.every != 0)
        self.boxes = now
        return out


@dataclass
class Track:
    ident: int
    rect: Rect
    first_frame: int
    last_frame: int
    first_time: float
    last_time: float
    # Per reading (a read folded: look-alike letters as their digits, ``plates.fold``): the
    # reads, their summed confidence, and per position the summed evidence of the digit and of
    # the letter form where the position holds a look-alike.
    votes: Counter[str] = field(default_factory=Counter)
    # Of those votes, the reads of a box on a plate's ground (``ocr.on_a_board``).
    grounded: Counter[str] = field(default_factory=Counter)
    confidence: dict[str, float] = field(default_factory=dict)
    forms: dict[str, list[list[float]]] = field(default_factory=dict)
    # Per reading: per position, the reads that saw a hint of a Q's tail there (``ocr.Q_HINT``).
    hints: dict[str, list[int]] = field(default_factory=dict)
    reads: int = 0
    # the box's last move per frame: along each axis, the smaller shift of its two edges when
    # both moved the same way (``shift``; a box cut short by something passing in front of
    # it moved one edge only: no speed)
    step: tuple[float, float] = (0.0, 0.0)
    origin: Rect = (0, 0, 0, 0)
    # The two farthest the box got from where it was first seen; it travelled as far as the
    # nearer of them: one stray box joining the track (a passing car's text next to a sign)
    # does not make it move.
    farthest: tuple[float, float] = (0.0, 0.0)
    # The box's moves from sighting to sighting where both its edges moved the same way,
    # summed with their signs (``shift``): a sign that a passing vehicle uncovers from one
    # side and the next covers from the other has one edge moving at a time, and none of it
    # adds up, where its first and last boxes (each a part of it) lie apart.
    drift: tuple[float, float] = (0.0, 0.0)
    # The span the box covered so far (the union of its boxes): along an axis, a box lying
    # within it is a part of the text seen before, not the text moved (``update``).
    extent: Rect = (0, 0, 0, 0)
    height: float = 0.0  # the largest box height
    path: dict[int, Rect] = field(default_factory=dict)  # frame: box
    sent: str | None = None  # the reading its event went out for while it was open (early)
    last_seen: int = -1  # the frame of its last sighting before this one (``drift``)
    last_read: int = -1  # the last frame its box was read as a plate on
    # Per reading: the number of boxes it was read on, their summed heights and their summed
    # aspects (width over height); None in a track restored from a snapshot taken before
    # tracks kept them.
    sizes: dict[str, tuple[int, float, float]] | None = None
    # Per reading: the reads whose last character stood apart from the rest (``add``); None
    # in a track restored from a snapshot taken before tracks kept them.
    apart: Counter[str] | None = None

    @property
    def travel(self) -> float:
        """How far the box moved: the second farthest it got from where it was first seen, and
        no further than its moves summed sighting to sighting (``drift``) took it."""
        return min(self.farthest[1], math.hypot(*self.drift))

    def add(
        self,
        text: str,
        confidence: float,
        evidence: plates.Evidence = (),
        grounded: bool = True,
        hints: tuple[int, ...] = (),
        box: Rect | None = None,
        apart: bool = False,
    ) -> None:
        """Count one read of the plate: its reading's vote and confidence, and at each
        look-alike position the recogniser's evidence for the digit and the letter (the read's
        own character counting fully when the read carries no evidence). ``grounded``: the box
        read stood on a plate's ground. ``hints``: the places, among its letters and digits,
        of the 0's and O's read with a hint of a Q's tail. ``box``: the box read. ``apart``:
        its last character stood apart from the rest (``ocr.CtcDecoder.set_apart``)."""
        key = plates.fold(text)
        if apart:
            if self.apart is None:
                self.apart = Counter()
            self.apart[key] += 1
        if box is not None:
            if self.sizes is None:
                self.sizes = {}
            height = max(box[3] - box[1], 1)
            n, tall, wide = self.sizes.get(key, (0, 0.0, 0.0))
            self.sizes[key] = (n + 1, tall + height, wide + (box[2] - box[0]) / height)
        if hints:
            places = [i for i, c in enumerate(text) if c.isalnum()]
            counted = self.hints.setdefault(key, [0] * len(key))
            for place in hints:
                if place < len(places):
                    counted[places[place]] += 1
        self.votes[key] += 1
        if grounded:
            self.grounded[key] += 1
        self.confidence[key] = self.confidence.get(key, 0.0) + confidence
        forms = self.forms.setdefault(key, [[0.0, 0.0] for _ in key])
        for i, c in enumerate(text):
            if c not in plates.TO_LETTER and c not in plates.TO_DIGIT:
                continue
            seen = evidence[i] if i < len(evidence) else None
            digit, letter = seen if seen is not None else (float(c.isdigit()), float(c.isalpha()))
            total = digit + letter
            if total > 0:
                forms[i][0] += digit / total
                forms[i][1] += letter / total

    @property
    def key(self) -> str | None:
        """The reading the reads agree on: the one with the highest summed confidence,
        counting for it also the reads of it cut short at either end (``cut_short``): a part
        of a plate read whole on the same track is that plate's, not a plate of its own."""
        if not self.votes:
            return None

        def weight(t: str) -> tuple[float, int]:
            # A part counts for a whole read at least a quarter as often: a plate read whole
            # on 38 frames and once with a mark beside it taken in (an EU plate's country
            # code, a sticker: ``8421PJ1``) is the plate read whole, not a part of that one
            # read; ``PH51`` read 3 times and ``1PPH51`` once stays a part of the whole.
            support = self.confidence[t] + sum(
                c
                for u, c in self.confidence.items()
                if cut_short(u, t)
                and self.votes[u] <= PART_RATIO * self.votes[t]
                and not self.same_text(u, t)
                and not self.beyond(u, t)
            )
            # A reading with a mark beside it (``marked``, ``beyond``) counts for the plate.
            support += sum(
                c for u, c in self.confidence.items() if self.marked(t, u) or self.beyond(t, u)
            )
            return support, self.votes[t]

        return max(self.votes, key=weight)

    def _mean(self, reading: str) -> tuple[float, float] | None:
        """The mean height and aspect of the boxes ``reading`` was read on."""
        sizes = self.sizes
        if sizes is None or reading not in sizes:
            return None
        n, tall, wide = sizes[reading]
        return tall / n, wide / n

    def same_text(self, part: str, whole: str) -> bool:
        """Whether reading ``part`` (``whole`` cut short by one character) is a read of the same
        text as ``whole``, not of the plate cut short: read 3 times or more, from boxes as wide for
        their height as ``whole``'s (their mean aspect, within ``NARROWER`` of a character of
        ``whole``'s). A box that cut a plate short is narrower by the characters it left out
        (``7KP58`` of ``67KP58``: aspect 3.5 against 4.2); where the box is as wide, the
        longer reading took in a mark at the text's edge on some frames and the shorter left
        it out (``67-KPS-8`` on an EU plate, read ``167KPS8`` on 5 frames, its band taken for a
        1, and ``67KPS8`` on 19, both at aspect 4.2; the other generator's hard seed 9 without
        formats, held out). The two then compete as any two readings do."""
        if (
            self.votes[part] < 3
            or not cut_short(part, whole)
            or len(plates._alnum(whole)) != len(plates._alnum(part)) + 1
        ):
            return False
        mine, theirs = self._mean(part), self._mean(whole)
        if mine is None or theirs is None:
            return False
        return mine[1] >= theirs[1] * (1 - NARROWER / len(plates._alnum(whole)))

    def marked(self, part: str, whole: str) -> bool:
        """Whether reading ``whole`` is the plate ``part`` with a mark beside it read as one
        more character: a read of the same text (``same_text``), one character longer (not
        beside a dash: a plate prints a group of one as ``93-LEB-0``), ``part`` read at least
        half as often as ``whole`` and from boxes ``LARGER`` times as high or more (their
        mean). Seen small, a sticker or a badge right beside a plate merges into a glyph;
        seen larger, it is told apart (``AUD 435`` on a black plate, a round badge at its
        right: ``AUD4358`` on 18 reads of boxes 21 px high on average, ``AUD435`` on 17 of
        boxes 27 px high as the car came closer; the other generator's medium seed 61 without
        formats, held out)."""
        if len(whole) != len(part) + 1 or not self.same_text(part, whole):
            return False
        if "-" in (whole[1] if whole[1:] == part else whole[-2]):
            return False
        n, m = self.votes[part], self.votes[whole]
        mine, theirs = self._mean(part), self._mean(whole)
        if mine is None or theirs is None:
            return False  # (same_text has both)
        return 2 * n >= m and mine[0] >= LARGER * theirs[0]

    def beyond(self, part: str, whole: str) -> bool:
        """Whether reading ``whole`` is the plate ``part`` with a mark beyond its end read as
        one more character: ``part`` read 3 times or more, and ``whole``'s last character set
        apart from the rest (``ocr.DETACHED``) on half of its reads or more. A country sticker
        beside a plate (``09-ONS-4`` with an ``F`` oval 1.5 characters past its end, the other
        generator's medium seed 62 without formats, held out: ``09ONS4F`` on 13 reads, all set
        apart, ``09ONS4`` on 8) is read into it wherever the detector's box takes it in; the
        box then grows by a character and the gap, as one that cut the plate short grows by
        the character left out, so only the gap tells them apart. A plate whose last group the
        read sets apart when it misses the dash before it (``62-LAA-3``) has the dash read on
        most of its reads."""
        apart = self.apart
        if (
            apart is None
            or len(whole) != len(part) + 1
            or whole[:-1] != part
            or self.votes[part] < 3
        ):
            return False
        return 2 * apart[whole] >= self.votes[whole]

    @property
    def text(self) -> str | None:
        """The plate the reads agree on: the leading reading, each look-alike position the
        digit or the letter as the recogniser's evidence summed over the reads says."""
        key = self.key
        return None if key is None else resolve(key, self.forms[key])

    def doubt(self, settled: list[str | None] | None = None) -> float:
        """How unsure the leading reading's look-alike positions are (see ``doubt``)."""
        key = self.key
        return 0.0 if key is None else doubt(self.forms[key], settled)

    def consensus(self, min_reads: int = 1) -> tuple[str, int, float, list[list[float]]] | None:
        """For a track whose reads never agree whole, the reading their characters agree on:
        over the reads of the leading reading's length, each position's character as most of
        the reads say, by count and by summed confidence, and ``min_reads`` of them at least
        (None when a position has no such character: two reads of an ``M`` and two of an ``H``
        are a toss-up, not a read), with the number of reads that differ from it in one
        position at most, their summed confidence and their evidence for its look-alikes. A
        plate read ``EL2936``, ``LE2936``, ``LL2934``, ``LL2036`` is ``LL2936`` four times."""
        if not self.votes:
            return None
        length = len(self.key or "")
        same = [k for k in self.votes if len(k) == length]
        total = sum(self.confidence[k] for k in same)
        reads = sum(self.votes[k] for k in same)
        chars = []
        for i in range(length):
            weights: dict[str, float] = {}
            counts: Counter[str] = Counter()
            for k in same:
                weights[k[i]] = weights.get(k[i], 0.0) + self.confidence[k]
                counts[k[i]] += self.votes[k]
            c = max(weights, key=lambda x: weights[x])
            if 2 * weights[c] <= total or 2 * counts[c] <= reads or counts[c] < min_reads:
                return None
            chars.append(c)
        key = "".join(chars)
        near = [k for k in same if sum(a != b for a, b in zip(k, key, strict=True)) <= 1]
        forms = [[0.0, 0.0] for _ in key]
        for k in near:
            for i, f in enumerate(self.forms[k]):
                if k[i] == key[i]:
                    forms[i][0] += f[0]
                    forms[i][1] += f[1]
        return key, sum(self.votes[k] for k in near), sum(self.confidence[k] for k in near), forms

    def contested(self, key: str) -> bool:
        """Whether some character of ``key`` is a toss-up: over the track's reads within
        ``CONTEST_CHANGES`` characters of it (of its length, or one character longer or
        shorter at either end, as a box that cut the plate short or took in a mark beside it
        reads), those showing another character at a position weigh (in summed confidence) as
        much as those showing its own. Four reads of ``L034E5`` are contested by two of
        ``L034E8`` and two of ``L034E8H``: the plate's sixth character is an 8 as often as a
        5."""
        n = len(key)
        support = [0.0] * n
        against = [0.0] * n
        for read, weight in self.confidence.items():
            if len(read) == n + 1:  # one character more at either end
                options = [(read[:-1], 0), (read[1:], 0)]
            elif len(read) == n - 1:  # cut short at either end
                options = [(read, 0), (read, 1)]
            else:
                options = [(read, 0)] if len(read) == n else []
            fits = [
                (sum(c != key[at + i] for i, c in enumerate(text)), text, at)
                for text, at in options
            ]
            if not fits:
                continue
            changed, text, at = min(fits)
            if changed > CONTEST_CHANGES:
                continue
            for i, c in enumerate(text):
                if c == key[at + i]:
                    support[at + i] += weight
                else:
                    against[at + i] += weight
        return any(0 < a >= b for a, b in zip(against, support, strict=True))

    def tails(self, key: str, text: str) -> str:
        """``text`` with a ``Q`` for each letter ``O`` that ``TAIL_READS`` reads or more of the
        track saw with its tail: reads of ``key``'s length that differ from it only where it
        has an O (or 0) and they a Q. Blur, low resolution and the recogniser's prior take a
        Q's short tail away and leave an O (``10-MQH-9`` read ``10MOH9`` on 5 frames of 7, the
        other two ``10MQH9``); none of them draws a tail on an O."""
        if "O" not in text:
            return text
        need = max(TAIL_READS, TAIL_SHARE * self.reads_of(key))
        tailed, _ = self.q_reads(key)
        return "".join("Q" if c == "O" and tailed[i] >= need else c for i, c in enumerate(text))

    def reads_of(self, key: str) -> int:
        """How many of the track's reads are of the plate of reading ``key``: of its length and
        within ``CONTEST_CHANGES`` characters of it (a Q where it has a 0 is no change). A read
        of other text of that length in the track's boxes (``121TE03`` once, among eight reads
        of ``PE94GQK`` as the car came closer) is not a read of the plate: counted, it would
        raise the share of reads that a Q's tail must be seen on."""
        n = len(key)
        total = 0
        for read, count in self.votes.items():
            if len(read) != n:
                continue
            changed = sum(
                a != b and not (a == "Q" and b == "0") for a, b in zip(read, key, strict=True)
            )
            if changed <= CONTEST_CHANGES:
                total += count
        return total

    def q_reads(self, key: str) -> tuple[list[int], int]:
        """Per place of reading ``key``, how many of the track's reads saw a Q where it has an
        O (or 0) and agree with it elsewhere; and how many such reads there are."""
        tailed = [0] * len(key)
        reads = 0
        for read, n in self.votes.items():
            if len(read) != len(key) or read == key:
                continue
            diff = [i for i, (a, b) in enumerate(zip(read, key, strict=True)) if a != b]
            if all(read[i] == "Q" and key[i] == "0" for i in diff):
                reads += n
                for i in diff:
                    tailed[i] += n
        return tailed, reads

    def faint_tail(self, key: str, text: str, digits: bool = False) -> bool:
        """Whether a letter O of ``text`` (the plate of reading ``key``, after ``tails``) was
        seen with a hint of a Q's tail, or as a Q, on ``HINT_SHARE`` of the reads of ``key`` (and
        those that read a Q there) and on ``HINT_READS`` or more: an O or a Q the reads cannot
        tell apart (``ZF-156-TQ`` read ``ZF-156-TO`` on 14 frames, 2 with the hint, and as a Q
        on 3: too few to make it a Q). ``digits`` (no format given, which would make the
        place a digit's): a 0 too, as a blurred Q may be read (``OQ75 ICE`` read ``0075ICE`` on
        24 frames). Of 670 reads of a 0 that was a 0, none showed the hint, on the other
        generator's clips; of 70 of a Q read as an O, 43 did; of 178 of an O, 2."""
        kinds = "O0" if digits else "O"
        if not any(c in kinds for c in text):
            return False
        hinted = self.hints.get(key, [0] * len(key))
        tailed, tails = self.q_reads(key)
        need = max(HINT_READS, HINT_SHARE * (self.votes[key] + tails))
        return any(
            c in kinds and h + t >= need for c, h, t in zip(text, hinted, tailed, strict=False)
        )

    def faint_j(self, key: str, text: str, digits: bool = False) -> bool:
        """Whether an I of ``text`` (the plate of reading ``key``; ``digits``, no format given:
        a 1 too) was seen with a hint of a J (``ocr.J_HINT``) on ``J_SHARE`` of the reads of
        ``key`` and on ``HINT_READS`` or more: a J whose hook blur took away, which the reads
        cannot tell from an I (``SJ 772 TU`` read ``SI772TU`` on 30 frames, 19 with the hint)."""
        kinds = "I1" if digits else "I"
        if not any(c in kinds for c in text):
            return False
        hinted = self.hints.get(key, [0] * len(key))
        need = max(HINT_READS, J_SHARE * self.votes[key])
        return any(c in kinds and h >= need for c, h in zip(text, hinted, strict=False))

    def on_ground(self, key: str) -> int:
        """The reads of ``key`` (or within one character of it, of its length) whose box stood
        on a plate's ground."""
        return sum(
            n
            for k, n in self.grounded.items()
            if len(k) == len(key) and sum(a != b for a, b in zip(k, key, strict=True)) <= 1
        )

    def decided(self, rules: TrackRules) -> str | None:
        """The track's plate when enough reads agree on it, else None."""
        key = self.key
        return self.text if key is not None and self.votes[key] >= rules.min_votes else None

    def predicted(self, frame: int) -> Rect:
        gap = frame - self.last_frame
        dx, dy = self.step[0] * gap, self.step[1] * gap
        x0, y0, x1, y1 = self.rect
        return int(x0 + dx), int(y0 + dy), int(x1 + dx), int(y1 + dy)


def resolve(key: str, forms: list[list[float]]) -> str:
    """A reading's plate: each look-alike position the digit or the letter, as the evidence
    summed in ``forms`` says."""
    return "".join(
        plates.TO_LETTER[c] if c in plates.TO_LETTER and f[1] > f[0] else c
        for c, f in zip(key, forms, strict=True)
    )


def doubt(forms: list[list[float]], settled: list[str | None] | None = None) -> float:
    """How unsure a reading's look-alike positions are: the largest share of the evidence that
    went to the form not chosen (0: every read agreed, 0.5: a toss-up), leaving out the
    positions ``settled`` says are settled otherwise."""
    return max(
        (
            min(f) / sum(f)
            for i, f in enumerate(forms)
            if sum(f) > 0 and (settled is None or settled[i] is None)
        ),
        default=0.0,
    )


def settle(kinds: list[str | None], forms: list[list[float]], allowed: float) -> list[str | None]:
    """The look-alike positions the learnt shapes settle (``Shapes.kinds``): only those where
    the reads' evidence leaves the form not chosen more than ``allowed`` of it. Where the reads
    agree, they stand even against the shapes: a site may have two formats that differ in one
    position (``LLL999`` and ``LL9999``), and the shapes know the second only once they have
    seen a plate of it without a look-alike there, so until then they would turn every
    ``ZJ2954`` into ``ZJZ954``."""
    return [
        kind if kind is not None and sum(f) > 0 and min(f) / sum(f) > allowed else None
        for kind, f in zip(kinds, forms, strict=True)
    ]


def kinds_of(text: str) -> str:
    """A plate's shape as read: ``L`` a letter, ``9`` a digit (``0LTM98`` -> ``9LLL99``)."""
    return "".join("9" if c.isdigit() else "L" if c.isalpha() else c for c in text)


def shape(key: str) -> str:
    """A reading's shape: ``L`` a letter, ``9`` a digit, ``?`` a look-alike (either)."""
    return "".join(
        "?" if c in plates.TO_LETTER else "9" if c.isdigit() else "L" if c.isalpha() else c
        for c in key
    )


# Look-alikes drawn alike in many plate fonts: a recogniser's sure read of one says little.
AMBIGUOUS = frozenset("0O1I")


@dataclass
class Shapes:
    """The plate shapes read so far, to settle look-alike characters when no format is given.

    Each event's reading adds its shape (letters, digits, and ``?`` where a look-alike leaves
    the kind open, so only what the recogniser could tell apart is learnt). A later plate's
    look-alike position may take the kind the learnt shapes agree on there: those of its
    length that match it wherever both are sure, ``min_seen`` of them at least, none saying
    the other kind. A site sees a few formats again and again, so the plates read plainly
    teach how the others read: after ``7MRX29`` and ``4KTR73``, a plate whose reads leave its
    first character in doubt between ``O`` and ``0`` reads ``0LTM98``. The shapes settle only
    such doubts (``settle``): where the reads agree, they stand.

    It also keeps each event's shape as read (``read_as``: ``L`` a letter, ``9`` a digit). A
    plate the recogniser reads surely in a shape never sent, while one look-alike the other
    way gives a shape sent ``min_seen`` times, is either the first plate of a new format or a
    digit read surely as its letter (the recogniser often takes a leading ``0`` or ``8`` before
    letters for an ``O`` or a ``B``): ``novel`` says so when the look-alike is one the
    recogniser may have been wrong about, and the tracker holds it as unsure until an event of
    its shape has been sent. A ``B``, ``S``, ``Z`` or ``G`` (or their digits) read on every
    frame with no trace of the other form is taken as read: a site often has two formats one
    look-alike apart (``LLL999`` and ``LL9999``), and holding those would hold the first plate
    of the second format, and with it every later one.
    """

    min_seen: int = 2
    sure_below: float = 0.02  # the evidence for the other form that leaves a look-alike sure
    seen: Counter[str] = field(default_factory=Counter)
    read_as: Counter[str] = field(default_factory=Counter)  # the events' shapes as read
    # The tracks of every camera of the site held until the shapes settle them (``recheck``),
    # each with its camera and that camera's state; and the shapes learnt when they were
    # last looked at.
    held: list[tuple[str, CameraState, Track]] = field(default_factory=list)
    checked: int = 0

    def __getstate__(self) -> dict[str, Any]:
        # A snapshot keeps what was learnt, not the held tracks: they refer to the states of
        # every camera, which a snapshot of one camera's state would copy, and a copy released
        # later would send another camera's event twice.
        return {**self.__dict__, "held": [], "checked": 0}

    @property
    def learnt(self) -> int:
        """How many shapes were learnt: a change says to look at the held tracks again."""
        return self.seen.total()

    def learn(self, key: str, text: str | None = None) -> None:
        self.seen[shape(key)] += 1
        if text is not None:
            self.read_as[kinds_of(text)] += 1

    def novel(self, text: str, forms: list[list[float]] | None = None) -> bool:
        """Whether ``text`` is in a shape no event had while one look-alike of it the other
        way (a digit for a letter or a letter for a digit) gives a shape ``min_seen`` had,
        the look-alike being one the reads may have mistaken: a ``0``/``O`` or ``1``/``I``
        (one glyph in many plate fonts, which is why most countries leave O and I off their
        plates), or another pair where the reads' evidence (``forms``, the summed [digit,
        letter] per position) gave the other form ``sure_below`` of it or more. A ``B`` the
        recogniser never saw as an ``8`` on a dozen frames is a B: holding it would hold
        every plate of a site's second format whose look-alike flips it to the first. Two
        such look-alikes the other way count as one: a group printed ``IO`` reads ``10`` as
        surely as one ``O`` reads ``0``, and blur that takes a G for a 6 takes the G beside
        it too."""
        mine = kinds_of(text)
        if self.read_as[mine]:
            return False

        def flip(kinds: str, i: int) -> str:
            return kinds[:i] + ("9" if kinds[i] == "L" else "L") + kinds[i + 1 :]

        ambiguous: list[int] = []
        for i, c in enumerate(text):
            f = forms[i] if forms is not None else None
            doubtful = (
                c in AMBIGUOUS or f is None or sum(f) <= 0 or min(f) / sum(f) >= self.sure_below
            )
            if doubtful and (c in plates.TO_LETTER or c in plates.TO_DIGIT):
                if self.read_as[flip(mine, i)] >= self.min_seen:
                    return True
                ambiguous.append(i)
        # Two of them both the other way: ``ZZ 105 IO`` read ``ZZ10510`` on most frames where
        # the site sends ``LL999LL``; ``TR 058 GG`` under 6.6 px of motion blur read
        # ``TR05866`` on 10 frames, the G's given 30-36% of the evidence.
        return any(
            self.read_as[flip(flip(mine, i), j)] >= self.min_seen
            for n, i in enumerate(ambiguous)
            for j in ambiguous[n + 1 :]
        )

    def kinds(self, key: str) -> list[str | None]:
        """Per position of ``key``: ``"L"`` or ``"9"`` where the learnt shapes settle a
        look-alike, else None."""
        mine = shape(key)
        fits = [
            (s, n)
            for s, n in self.seen.items()
            if len(s) == len(mine)
            and all(a == b or "?" in (a, b) for a, b in zip(s, mine, strict=True))
        ]
        # A shape tells only when it is sure where this one is sure on half the positions or
        # more: shapes that are mostly look-alikes fit anything.
        fits = [
            (s, n)
            for s, n in fits
            if 2 * sum("?" not in (a, b) for a, b in zip(s, mine, strict=True)) >= len(mine)
        ]
        out: list[str | None] = []
        for i, kind in enumerate(mine):
            if kind != "?":
                out.append(None)
                continue
            letter = sum(n for s, n in fits if s[i] == "L")
            digit = sum(n for s, n in fits if s[i] == "9")
            out.append(
                "L"
                if letter >= self.min_seen and not digit
                else "9"
                if digit >= self.min_seen and not letter
                else None
            )
        return out


@dataclass
class CameraState:
    """Everything the tracker keeps for one camera."""

    tracks: list[Track] = field(default_factory=list)
    next_id: int = 0
    recent: dict[str, tuple[float, int]] = field(default_factory=dict)  # plate: (time, votes)
    closed: list[Track] = field(default_factory=list)  # decided tracks of the last dedupe_s
    counts: Counts = field(default_factory=Counts)
    # Without plate formats: the shapes learnt from the plates read (``Shapes``), which the
    # cameras of one site share; None (with formats): the reads' own look-alikes stand.
    shapes: Shapes | None = None
    looked: int | None = None  # the last frame fed to ``update``
    now: float = 0.0  # and its time


# A box, its plate (None: not one), the recogniser's confidence and, optionally, its evidence
# for each look-alike character (``plates.Evidence``), whether the box stood on a plate's
# ground (``ocr.on_a_board``; True when left out), the places of the 0's and O's read with
# a hint of a Q's tail (``ocr.CtcDecoder.read_hinted``) and whether its last character stood
# apart from the rest (``ocr.CtcDecoder.set_apart``; False when left out).
Read = (
    tuple[Rect, str | None, float]
    | tuple[Rect, str | None, float, plates.Evidence]
    | tuple[Rect, str | None, float, plates.Evidence, bool]
    | tuple[Rect, str | None, float, plates.Evidence, bool, tuple[int, ...]]
    | tuple[Rect, str | None, float, plates.Evidence, bool, tuple[int, ...], bool]
)


def update(
    state: CameraState,
    camera: str,
    frame: int,
    time: float,
    reads: list[Read],
    rules: TrackRules = DEFAULT_TRACK_RULES,
) -> tuple[list[tuple[int, Rect, str | None]], list[dict[str, Any]]]:
    """Feed one frame's reads; return (the frame's labelled boxes, events of closed tracks)."""
    state.looked = frame
    state.now = time
    labelled: list[tuple[int, Rect, str | None]] = []
    free = list(state.tracks)
    for read in reads:
        rect, text, conf = read[0], read[1], read[2]
        evidence: plates.Evidence = read[3] if len(read) >= 4 else ()  # type: ignore[misc]
        grounded: bool = read[4] if len(read) >= 5 else True  # type: ignore[misc]
        hints: tuple[int, ...] = read[5] if len(read) >= 6 else ()  # type: ignore[misc]
        apart: bool = read[6] if len(read) == 7 else False  # type: ignore[misc]
        key = plates.fold(text) if text is not None else None
        best: Track | None = None
        best_score = 0.1
        for track in free:
            predicted = track.predicted(frame)
            score = match(rect, predicted, frame - track.last_frame, len(track.path) < 2)
            leader = track.key
            if (
                key is None
                and leader is not None
                and track.votes[leader] >= rules.min_votes
                and track.travel < rules.min_travel * track.height
                and track.extent[2] > track.extent[0]  # (kept since snapshots had it)
                and inside(rect, track.extent) < STILL_INSIDE
            ):
                # Text read in place, not moved (a sign), does not take a box read as nothing
                # that lies mostly outside the span its boxes covered: a vehicle passing in
                # front, whose box then moves on. Taken, the sign's track moved with it, came
                # back and was read in place again, and the sign went out as a plate
                # (KEBAB24, the other generator's medium seed 87). A plate read standing at
                # a barrier and driving off unread still takes its boxes: it starts slowly,
                # each box mostly within the span of those before.
                continue
            if key is not None and leader is not None:
                if key == leader:
                    score += 0.5
                elif (
                    track.votes[leader] >= rules.min_votes
                    and not near_miss(key, leader)
                    and not (
                        track.travel >= rules.min_travel * track.height
                        and track.last_read == track.last_frame
                        and follows(rect, predicted, frame - track.last_frame)
                    )
                ):
                    # A confident track does not take another plate's read: the car that just
                    # left and the one coming in through the same spot are different tracks.
                    # But a box right where a moving track's plate was read going, on the
                    # frame after, is the same plate read another way: two tracks of it would
                    # be two events. (Not so for text standing still: a plate passing over a
                    # painted marking is not the marking; nor after a box read as nothing,
                    # which may be the next car's plate coming into view.)
                    continue
            if score > best_score:
                best, best_score = track, score
        if best is None:
            best = Track(state.next_id, rect, frame, frame, time, time, origin=rect, extent=rect)
            state.next_id += 1
            state.counts.tracks += 1
            state.tracks.append(best)
        else:
            free.remove(best)
            gap = max(frame - best.last_frame, 1)
            old = best.rect
            best.step = (
                shift(old[0], old[2], rect[0], rect[2]) / gap,
                shift(old[1], old[3], rect[1], rect[3]) / gap,
            )
        best.rect = rect
        best.last_frame, best.last_time = frame, time
        best.reads += 1
        far = moved(best.origin, rect)
        step = best.path.get(best.last_seen) if best.path else None
        if best.extent[2] <= best.extent[0]:
            # A track restored from a snapshot taken before tracks kept their span: it starts
            # at the box seen last.
            best.extent = step if step is not None else rect
        if step is not None:
            slack = max(best.height, float(rect[3] - rect[1]))
            dx, dy = advance(step, rect, best.extent, slack)
            best.drift = (best.drift[0] + dx, best.drift[1] + dy)
        best.extent = (
            min(best.extent[0], rect[0]),
            min(best.extent[1], rect[1]),
            max(best.extent[2], rect[2]),
            max(best.extent[3], rect[3]),
        )
        best.last_seen = frame
        if far > best.farthest[1]:
            best.farthest = (max(far, best.farthest[0]), min(far, best.farthest[0]))
        best.height = max(best.height, float(rect[3] - rect[1]))
        best.path[frame] = rect
        if text is not None:
            best.add(text, conf, evidence, grounded, hints, rect, apart)
            best.last_read = frame
        labelled.append((best.ident, rect, best.text))
    events = []
    if rules.early_votes is not None:
        for track in state.tracks:
            if track.sent is None and track.last_frame == frame:
                event = close(state, camera, track, rules, early=True)
                if event is not None:
                    events.append(event)
    for track in list(state.tracks):
        gap = frame - track.last_frame
        if gap > 0 and (time - track.last_time >= rules.patience_s or gap >= rules.patience_frames):
            state.tracks.remove(track)
            event = close(state, camera, track, rules)
            if event is not None:
                events.append(event)
    events += recheck(state.shapes, rules)
    return labelled, events


def recheck(shapes: Shapes | None, rules: TrackRules = DEFAULT_TRACK_RULES) -> list[dict[str, Any]]:
    """The events of held tracks (of any camera of the site) that the plates read since they
    were held have settled; a track held for over ``hold_s`` of its camera's time is let go.
    Called after each frame and when a camera's stream ends: a camera may end before the
    others have read the plates that settle its held tracks."""
    if shapes is None or not shapes.held or shapes.learnt == shapes.checked:
        return []
    shapes.checked = shapes.learnt
    events = []
    for entry in list(shapes.held):
        camera, state, track = entry
        if state.now - track.last_time > rules.hold_s:
            shapes.held.remove(entry)
        elif (event := close(state, camera, track, rules, retry=True)) is not None:
            shapes.held.remove(entry)
            events.append(event)
    return events


def coast(state: CameraState, frame: int) -> list[tuple[int, Rect, str | None]]:
    """The labelled boxes of a frame nobody looked for plates on (sample-and-hold): each track
    seen on the last frame fed to ``update``, where its last step puts it on ``frame``, with
    its plate so far. Nothing changes: a guess drawn is not a sighting, so the tracks neither
    move, nor gain a read, nor count the frame as one they were missed on."""
    return [
        (t.ident, t.predicted(frame), t.text)
        for t in state.tracks
        if state.looked is not None and t.last_frame == state.looked
    ]


def close(
    state: CameraState,
    camera: str,
    track: Track,
    rules: TrackRules = DEFAULT_TRACK_RULES,
    *,
    retry: bool = False,
    early: bool = False,
) -> dict[str, Any] | None:
    """The event of a finished track, or None (counted) when the rules leave it out. A track
    left unsure by look-alikes is held in ``Shapes.held`` when shapes are learnt, and closed
    again (``retry``) once they have changed. ``early``: the same rules on a track still open,
    which gives its event now when they all hold (``early_votes`` agreeing reads), else None
    (nothing counted: the track is decided when it closes)."""
    key = track.key
    counts = state.counts
    if track.sent is not None and not early and (key is None or near_miss(key, track.sent)):
        # Its event went out early: the pass is over. (Had another plate taken the track over
        # since, it is decided as any other track.)
        state.recent[track.sent] = (track.last_time, track.votes[track.sent])
        state.closed.append(track)
        return None
    if key is None:
        counts.few_votes += 1
        return None
    votes, confidence, forms = track.votes[key], track.confidence[key], track.forms[key]
    if early and (rules.early_votes is None or votes < max(rules.early_votes, rules.min_votes)):
        return None
    if votes < rules.min_votes:
        # Reads that never agree whole may still agree character by character.
        agreed = track.consensus(rules.min_votes)
        if agreed is None or agreed[1] < rules.min_consensus:
            counts.few_votes += 1
            return None
        key, votes, confidence, forms = agreed
    if track.contested(key):
        if not early:
            counts.few_votes += 1
        return None
    if track.travel < rules.min_travel * track.height:
        if not early:
            counts.static += 1
        return None
    text = resolve(key, forms)
    # Early, the evidence has yet to pile up: half the doubt allowed at the close.
    allowed = rules.max_doubt / (2 if early else 1)
    settled = None
    if state.shapes is not None:
        # No format given: the shapes of the plates read so far settle the look-alikes that the
        # reads leave in doubt, never one the reads agree on (``settle``).
        settled = settle(state.shapes.kinds(key), forms, allowed)
        text = "".join(
            t if kind is None else plates.TO_LETTER[c] if kind == "L" else c
            for t, c, kind in zip(text, key, settled, strict=True)
        )
    if doubt(forms, settled) > allowed or (
        state.shapes is not None and state.shapes.novel(text, forms)
    ):
        # The reads split between a digit and its look-alike letter, or agree on a shape that
        # one look-alike away is a shape the site sees: a guess, not a read.
        if not retry and not early:
            counts.unsure += 1
            if state.shapes is not None:
                state.shapes.held.append((camera, state, track))
        return None
    if (
        state.shapes is not None
        and track.on_ground(key) < rules.min_votes
        and state.shapes.read_as[kinds_of(text)] < state.shapes.min_seen
    ):
        # Read mostly off a plate's ground (a black plate on a car as dark as it, or text
        # painted on a van), too few reads on it to be a plate by themselves, and no format
        # given: a plate only in a shape that plates read on their ground had (``min_seen``
        # events), else held as unsure until they have.
        if not retry and not early:
            counts.unsure += 1
            state.shapes.held.append((camera, state, track))
        return None
    text = track.tails(key, text)
    digits = state.shapes is not None
    if track.faint_tail(key, text, digits=digits) or track.faint_j(key, text, digits=digits):
        # An O (or, without formats, a 0) that many reads saw with a faint Q's tail: blur takes
        # a Q's tail away (PI38 SWQ read PI38SWO on 28 frames), and one font draws a trace of
        # one on its O (XO-738-RH). So for an I a J's hook (SJ 772 TU read SI772TU). A guess
        # either way: held as unsure, never sent.
        if not retry and not early:
            counts.unsure += 1
        return None
    if retry:
        counts.unsure -= 1
    # What was decided within dedupe_s before this track: kept for as long as a held track
    # may still be decided (``hold_s``), which looks back from its own time.
    horizon = rules.dedupe_s + rules.hold_s
    for plate, (seen, _seen_votes) in list(state.recent.items()):
        if state.now - seen > horizon:
            del state.recent[plate]
    state.closed = [t for t in state.closed if state.now - t.last_time <= horizon]
    recent = {
        plate: (seen, v)
        for plate, (seen, v) in state.recent.items()
        if track.first_time - seen <= rules.dedupe_s
    }
    # Without formats, whether this plate's shape was sent ``min_seen`` times.
    learnt = state.shapes is None or state.shapes.read_as[kinds_of(text)] >= state.shapes.min_seen

    def under(other: Track, learnt: bool) -> bool:
        return (
            other is not track
            and track.first_time - other.last_time <= rules.dedupe_s
            and (lead := other.decided(rules)) is not None
            # The text below must be a plate by its own ground (``min_votes`` reads on one): read
            # off it, it proves nothing (a dealer's name under a plate; a black plate on a car as
            # dark, which may be another car's, level with this one in the lane in front).
            and other.on_ground(plates.fold(lead)) >= rules.min_votes
            # And two texts that both are plates by their ground, their text of one size, this one
            # fitting a format given (or, without formats, in a shape ``min_seen`` events had), are
            # two plates: a vehicle shows one at each end, and a car following another, or level
            # with it in the next lane, moves with it. Coming towards the camera, the car behind is
            # further away: its plate smaller, and a plate width or more higher up (XS48 YTK 1.5
            # widths above PKG 515, 0.45 of its height), where a badge (320D) or a sticker sits
            # close to the plate. (Lettering on a board above a van's plate, FLEET7, is of the
            # plate's size too; it fits no format and no plate's shape.) Without formats, a plate
            # clearly smaller than the one below it (``further``) and a plate width or more above it
            # is the car behind's even in a shape no event had yet: the first plate of a format at a
            # site is often that of a car following another (XS48 YTK again, 13 px against PKG 515's
            # 29-35, the site's first LL99LLL). A plate is a board, boxed whole: a line of a van's
            # lettering boxed in pieces that change from frame to frame is not one, whatever it
            # reads (``rigid``: ``BROWN & SONS`` read ``WN65ONS``, which fits LL99LLL, 1.2 plate
            # widths above the van's plate).
            and not (
                track.on_ground(key) >= rules.min_votes
                and rigid(track)
                and (
                    (further(track, other) and far_above(track, other))
                    or (
                        (
                            same_size(track, other)
                            or (no_larger(track, other) and far_above(track, other))
                        )
                        and learnt
                    )
                )
            )
            and same_vehicle(track, other)
            and lower(other, track)
        )

    others = [*state.tracks, *state.closed]
    below = [other for other in others if under(other, learnt)]
    if below and not learnt and not any(under(other, True) for other in others):
        # Without formats, a plate of another's size riding above it in a shape the site has
        # not sent twice yet: lettering, or the plate of a car level with that one in the far
        # lane. Held as unsure until the site sends its shape (then sent: ``YFE 856`` level
        # with ``AJ 010 LA``, the other generator's medium seed 64, went out or not by
        # whether another camera had sent two plates of its shape by then), not dropped.
        if early:
            return None
        if not retry and state.shapes is not None:
            state.shapes.held.append((camera, state, track))
        counts.unsure += 1  # (a retry had taken its count back above)
        return None
    if early and below:
        return None
    if not early:
        state.closed.append(track)
    if below:
        # Text riding on a vehicle above another plausible plate on it: lettering on the
        # body, a sticker; the plate is the lowest text of a vehicle.
        counts.on_vehicle += 1
        return None
    seen_same = recent.get(key)
    if seen_same is None and (told := plates.fold(text)) != key:
        # The plate as sent, its Q's told from the O's by their tails (``Track.tails``): one
        # plate split into two tracks, one of which saw the tails, is one event (``059 QOB``
        # read ``059 Q0B`` on 3 frames, then ``059 00B`` on 5 with a Q now and then).
        seen_same = recent.get(told)
    similar = [v for p, (_, v) in recent.items() if near_miss(p, key) and v >= votes]
    # A track still open on the same plate (the detector split one plate into two boxes for a
    # few frames, or read it cut short) with more votes will send the event.
    similar += [
        t.votes[o]
        for t in state.tracks
        if t is not track and (o := t.key) is not None and near_miss(o, key) and t.votes[o] > votes
    ]
    if early and (seen_same is not None or similar):
        return None
    if seen_same is not None or similar:
        counts.duplicates += 1
        if seen_same is not None:
            state.recent[key] = (max(track.last_time, seen_same[0]), max(votes, seen_same[1]))
        return None
    before = state.recent.get(key)
    state.recent[key] = (max(track.last_time, before[0]) if before else track.last_time, votes)
    if state.shapes is not None:
        state.shapes.learn(key, text)
    if early:
        track.sent = key
    counts.events += 1
    return {
        "camera": camera,
        "plate": text,
        "first_frame": track.first_frame,
        "last_frame": track.last_frame,
        "time": round(track.first_time, 3),
        "reads": votes,
        "confidence": round(confidence / votes, 3),
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


def where(track: Track, frame: int) -> tuple[float, float, float, float] | None:
    """A track's box centre, bottom and width on ``frame``: as seen, or, between two
    sightings, where its motion from the one to the other put it (linear); None outside its
    sightings. A detector finds small text (a van's lettering, a plate in the far lane) on some
    frames only, so two texts on one vehicle are often seen on different frames."""
    box = track.path.get(frame)
    if box is not None:
        (cx, cy), bottom = centre(box), float(box[3])
        return cx, cy, bottom, float(box[2] - box[0])
    frames = sorted(track.path)
    if not frames or not frames[0] < frame < frames[-1]:
        return None
    after = next(f for f in frames if f > frame)
    before = max(f for f in frames if f < frame)
    t = (frame - before) / (after - before)
    a, b = track.path[before], track.path[after]
    (ax, ay), (bx, by) = centre(a), centre(b)
    wa, wb = a[2] - a[0], b[2] - b[0]
    return ax + t * (bx - ax), ay + t * (by - ay), a[3] + t * (b[3] - a[3]), wa + t * (wb - wa)


Where = tuple[float, float, float, float]


def together(a: Track, b: Track) -> list[tuple[int, Where, Where]]:
    """The frames where one of the two was seen and the other seen or between two of its
    sightings (``where``), with where each was."""
    out = []
    for f in sorted(a.path.keys() | b.path.keys()):
        pa, pb = where(a, f), where(b, f)
        if pa is not None and pb is not None:
            out.append((f, pa, pb))
    return out


def same_vehicle(a: Track, b: Track) -> bool:
    """Whether two tracks moved together (one vehicle): over the frames either was seen in
    while the other was in view (``together``), at least half the shorter one's frames (and
    3), their offset within half a box height of its median on three frames in four, while
    they travelled more than that. The offset is taken as seen, and also at the vehicle's
    scale (divided by the two boxes' widths, relative to their median): a vehicle coming
    towards the camera grows, and the offset between two texts on it grows with it (a badge
    0.6 plate widths right of the plate stays there while the plate doubles in size).

    And they lie within ``VEHICLE_WIDTHS`` plate widths of each other across (their centres,
    the lower box's width, medians over those frames): a plate is half a metre wide and
    centred on a vehicle's back or front, which is under 2.6 m wide (the widest lorries), so
    text further to the side is on another vehicle, such as one driving level with it in the
    other lane.

    A line of lettering that the detector finds in pieces (``TEL 0800`` on one frame,
    ``123 456`` on the next) has its box's centre jump along the line; its pieces stay within
    the line's span, which keeps its place on the vehicle: the two moved together too when one
    track's boxes, relative to the other's centre, lay within a span as wide as its widest box
    (and the slack) on three frames in four, with the rows as above."""
    common = together(a, b)
    if len(common) < max(3, min(len(a.path), len(b.path)) // 2):
        return False
    limit = 0.5 * max(a.height, b.height)
    if a.travel <= limit:
        return False
    middle = len(common) // 2
    across = sorted(abs(pb[0] - pa[0]) for _, pa, pb in common)[middle]
    # The plate's width: the lower box's (the plate is the vehicle's lowest text).
    b_lower = sum(pb[2] - pa[2] for _, pa, pb in common) > 0
    plate = sorted(pb[3] if b_lower else pa[3] for _, pa, pb in common)[middle]
    if across > VEHICLE_WIDTHS * plate:
        return False
    widths = [pa[3] + pb[3] for _, pa, pb in common]
    typical = sorted(widths)[len(widths) // 2]
    for scales in ([1.0] * len(common), [typical / max(w, 1.0) for w in widths]):
        dx = [(pb[0] - pa[0]) * s for (_, pa, pb), s in zip(common, scales, strict=True)]
        dy = [(pb[1] - pa[1]) * s for (_, pa, pb), s in zip(common, scales, strict=True)]
        mx, my = sorted(dx)[len(dx) // 2], sorted(dy)[len(dy) // 2]
        level = [abs(y - my) <= limit for y in dy]
        steady = sum(abs(x - mx) <= limit and ok for x, ok in zip(dx, level, strict=True))
        if steady >= 0.75 * len(common):
            return True
        # A line of lettering that the detector finds in pieces (``TEL 0800`` on one frame,
        # ``123 456`` on the next) has its box's centre jump along the line; the pieces stay
        # within the line's span, which keeps its place on the vehicle.
        pairs = [(pa, pb) for _, pa, pb in common]
        for pieces in (pairs, [(pb, pa) for pa, pb in pairs]):
            spans = [
                ((cut[0] - cut[3] / 2 - at[0]) * s, (cut[0] + cut[3] / 2 - at[0]) * s)
                for (cut, at), s in zip(pieces, scales, strict=True)
            ]
            line = max(right - left for left, right in spans)
            steady = max(
                sum(
                    ok and start - limit <= left and right <= start + line + limit
                    for (left, right), ok in zip(spans, level, strict=True)
                )
                for start, _ in spans
            )
            if steady >= 0.75 * len(common):
                return True
    return False


def heights(a: Track, b: Track) -> list[tuple[int, int]]:
    """The two tracks' box heights on the frames both were seen on, or their largest boxes'
    where there are none."""
    pairs = [
        (ra[3] - ra[1], rb[3] - rb[1])
        for f, ra in a.path.items()
        if (rb := b.path.get(f)) is not None
    ]
    return pairs or [(round(a.height), round(b.height))]


def text_sizes(a: Track, b: Track) -> list[tuple[float, float]]:
    """How large ``a``'s text is against ``b``'s, on the frames both were seen on (or their
    largest boxes where there are none), two ways: the ratio of their boxes' heights, and of
    their widths per character (of each one's reading, where both have one; else the heights'
    ratio again). Each measure overstates a plate's text in its own way: the box of a plate
    tilted in the image is taller than its text (``112 QYO`` tilted 6 degrees: boxes 39 px high
    for 19 px capitals, 1.6 times those of the plate level with it below), and a plate's band
    widens its box; the smaller of the two is its text's size."""
    n_a = len(plates._alnum(a.key or ""))
    n_b = len(plates._alnum(b.key or ""))
    out = []
    for f, ra in a.path.items():
        rb = b.path.get(f)
        if rb is None:
            continue
        tall = max(ra[3] - ra[1], 1) / max(rb[3] - rb[1], 1)
        if n_a and n_b:
            wide = (max(ra[2] - ra[0], 1) / n_a) / (max(rb[2] - rb[0], 1) / n_b)
            out.append((tall, wide))
        else:
            out.append((tall, tall))
    if not out:
        tall = max(round(a.height), 1) / max(round(b.height), 1)
        out.append((tall, tall))
    return out


def same_size(a: Track, b: Track) -> bool:
    """Whether ``a``'s text is of ``b``'s size (within ``SAME_SIZE`` either way, the median
    over ``text_sizes``, each frame's smaller measure): two plates' text, where a model
    badge's or a sticker's is smaller and a van's lettering larger."""
    ratios = sorted(max(r, 1 / r) for r in (min(pair) for pair in text_sizes(a, b)))
    return ratios[len(ratios) // 2] <= SAME_SIZE


def far_above(a: Track, b: Track) -> bool:
    """Whether ``a`` sat ``FAR_ABOVE`` of ``b``'s widths or more above ``b`` (their centres,
    the median over the frames both were in view): a plate of the car behind, where a badge or
    a sticker sits within a plate width of its own plate."""
    rows = sorted((pb[1] - pa[1]) / max(pb[3], 1.0) for _, pa, pb in together(a, b))
    return bool(rows) and rows[len(rows) // 2] >= FAR_ABOVE


def no_larger(a: Track, b: Track) -> bool:
    """Whether ``a``'s text is at most ``SAME_SIZE`` times as large as ``b``'s (the median over
    ``text_sizes``, each frame's smaller measure): a plate further away than another is
    smaller, never larger than the same size."""
    ratios = sorted(min(pair) for pair in text_sizes(a, b))
    return ratios[len(ratios) // 2] <= SAME_SIZE


def rigid(track: Track) -> bool:
    """Whether the track's box kept its shape: its width over its height within ``RIGID`` of
    the median, or its width alone within ``RIGID_WIDTH`` of it, on three boxes in four (True
    with fewer than 3 boxes). A plate is a board, whose text the detector boxes whole, at any
    distance in one shape; it boxes a line of a van's lettering in pieces that change from
    frame to frame (``BROWN & SONS`` boxed 43 to 252 px wide and 25 to 29 high over 18 frames,
    8 of them within a third of the median width, read ``WN65ONS`` on 3). The width alone: a
    plate crossing the view keeps its size while the height of its box wavers with the blur
    (``JBM 539``, a black plate level with ``GTO 016`` in the next lane, boxed 111 to 125 px
    wide on 10 frames of 11 and 13 to 30 high: the other generator's medium seed 76 at 6
    frames/s, held out) and while the frame's edge cuts it as it comes in (``830 VOI``, boxed
    49 and 65 px wide coming in, then 75 to 94: hard seed 14, held out); coming towards the
    camera it grows, in one shape."""
    boxes = list(track.path.values())
    if len(boxes) < 3:
        return True
    for size, within in (
        ([(r[2] - r[0]) / max(r[3] - r[1], 1) for r in boxes], RIGID),
        ([float(r[2] - r[0]) for r in boxes], RIGID_WIDTH),
    ):
        middle = sorted(size)[len(size) // 2]
        if sum(abs(a - middle) <= within * middle for a in size) >= 0.75 * len(size):
            return True
    return False


def further(a: Track, b: Track) -> bool:
    """Whether ``a``'s text is at most ``1 / SAME_SIZE`` times as high as ``b``'s (the median
    over ``heights``): of a plate further away, not of one the same distance off."""
    ratios = sorted(ha / max(hb, 1) for ha, hb in heights(a, b))
    return ratios[len(ratios) // 2] * SAME_SIZE <= 1


def lower(a: Track, b: Track) -> bool:
    """Whether ``a``'s box sat lower in the frames both were in view (``together``)."""
    return sum(pa[2] - pb[2] for _, pa, pb in together(a, b)) > 0


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
