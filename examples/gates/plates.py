"""Plate formats as configuration: which reads are plates, and fixing look-alike characters.

A format is written as the plate reads, position by position: ``L`` a letter, ``9`` a digit,
``A`` either; any other character is fixed (``-`` or a space is printed on some plates but the
recogniser may not see it, so non-alphanumeric fixed characters are optional in a read and put
back in the result; a fixed letter or digit must be read). Several formats are separated by
commas: ``LL99LLL,LLL999``.

A read is fitted to each format of its length (fixed separators left out). Where a format says a
position holds a letter and the read has a digit that looks like one (0/O, 1/I, 8/B, 5/S, 2/Z,
6/G), the digit becomes that letter, and the other way round; nothing else is changed, and at
most ``MAX_CHANGES`` (2) characters are: a read that fits a format only by changing 3 or more
(``2026-10-2``, a timestamp, as ``ZO-261-OZ``; ``0590082``, ``059 QOB`` with a badge beside it,
as ``OS-900-BZ``) is a read of something else. (Over 8,300 reads of the other generator's plates
that fitted a format and gave the plate shown, none needed more than 2 changes, 34 needed 2; of
the reads that fitted one and gave no plate shown, 106 needed 3 to 5.) Where the read shows
separators, the formats whose groups end there come first (``group_ends``: where a format prints
its separators or, written without any, where it turns from letters to digits or back):
``MY17 10B`` is LL99LLL's ``MY17IOB``, not LL999LL's ``MY171OB``, which would split the digits its
plate prints as one group. Then the format needing the fewest such changes wins; a read that
fits no format, or fits two formats equally well with different letters or digits, is not a
plate (the caller counts it), unless the separators read (``50-0XQ-1``) are where just one of
them prints its separators (``99-LLL-9`` rather than ``999LLL``): the recogniser reads printed
separators almost without fail. Formats that differ only in their separators (``LL-999-LL`` and
``LL999LL``) read one plate, written as the first of them given writes it.

Without formats, any plausible plate is accepted as read: 5 to 10 letters and digits with at
least one of each. Plates worldwide run from 2 to 10 characters, but most have both kinds and 5
or more, and a rule that admits all-letter words would turn every shop sign into a plate, one
that admits 4 characters every car's model badge (``320D``, ``XC90``, ``C220``, ``E 300``),
which is read as surely as the plate and rides on a moving car (give the formats for shorter
plates). The plates of 9 or 10 (India's ``MH12AB1234``, Russia's ``A123BC777``) hold 4 digits
or more; a line of 9 or 10 with one or two is words (``J. BROWN & SONS`` on a van read
``BROWN6SONS``), so those need 3.

Without formats, the separators the recogniser reads (a dash or a space printed between a
plate's groups: ``36-IUO-6``, ``OPQ 234``) say which kind a look-alike is where the plate's
groups leave no doubt (``group_kinds``): plates group their letters and their digits.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

# Characters the recogniser may confuse on a plate: the digit and the letter it looks like.
LOOK_ALIKE = (("0", "O"), ("1", "I"), ("8", "B"), ("5", "S"), ("2", "Z"), ("6", "G"))
TO_LETTER = dict(LOOK_ALIKE)
TO_DIGIT = {c: d for d, c in LOOK_ALIKE}
MIN_LENGTH, MAX_LENGTH = 5, 10
# A plausible plate longer than this holds ``LONG_DIGITS`` digits or more (``plausible``).
LONG, LONG_DIGITS = 8, 3
# The most look-alike characters a read may have changed to fit a format (``PlateFormat.fit``).
MAX_CHANGES = 2
# Printed between a plate's groups (``AB-123-CD``, ``AB12 CDE``); the recogniser reads them.
SEPARATORS = "- "
# Look-alikes drawn alike in many plate fonts: a recogniser's sure read of one says little.
ONE_GLYPH = frozenset("0O1I")
# A look-alike drawn apart from its twin (8/B...) read as one form with this share of the pair's
# probability is of that kind, for the plate's groups (``group_kinds``).
SURE_FORM = 0.9
# Per character of a read: the recogniser's probabilities of the digit and of the letter form of
# a look-alike character, or None for a character without a look-alike.
Evidence = tuple[tuple[float, float] | None, ...]


def _alnum(text: str) -> str:
    return "".join(c for c in text.upper() if c.isascii() and c.isalnum())


@dataclass(frozen=True)
class PlateFormat:
    """One format, such as ``LL99LLL``; see the module's docstring for the notation."""

    pattern: str

    def __post_init__(self) -> None:
        if not self.pattern or not any(c in "L9A" or c.isalnum() for c in self.pattern):
            msg = f"plate format {self.pattern!r}: needs at least one position (L, 9 or A)"
            raise ValueError(msg)
        for c in self.pattern:
            if not (c.isascii() and c.isprintable()):
                msg = f"plate format {self.pattern!r}: unexpected character {c!r}"
                raise ValueError(msg)

    @property
    def positions(self) -> str:
        """The pattern without its optional separators: what a read must match."""
        return "".join(c for c in self.pattern if c.isalnum())

    def fit(self, text: str) -> tuple[str, int] | None:
        """The read fitted to this format and the number of characters changed, or None (no
        fit, or one changing more than ``MAX_CHANGES`` characters)."""
        read = _alnum(text)
        positions = self.positions
        if len(read) != len(positions):
            return None
        out: list[str] = []
        changes = 0
        for kind, c in zip(positions, read, strict=True):
            if kind == "L":
                fixed = TO_LETTER.get(c, c)
                ok = fixed.isalpha()
            elif kind == "9":
                fixed = TO_DIGIT.get(c, c)
                ok = fixed.isdigit()
            elif kind == "A":
                fixed, ok = c, True
            else:  # a fixed letter or digit: read as is, or as its look-alike
                fixed = kind
                ok = c == kind or TO_LETTER.get(c) == kind or TO_DIGIT.get(c) == kind
            if not ok:
                return None
            changes += fixed != c
            out.append(fixed)
        if changes > MAX_CHANGES:
            return None  # the recogniser disagrees with the format too often: another text
        # Put the separators back where the pattern has them.
        result = iter(out)
        plate = "".join(c if not c.isalnum() else next(result) for c in self.pattern)
        return plate, changes


def parse_formats(spec: str | None) -> tuple[PlateFormat, ...]:
    """``"LL99LLL,LLL999"`` -> two formats; None or ``""`` -> none (any plausible plate).

    Letters other than ``L`` and ``A`` are fixed characters, so ``LLL999`` and ``BXX9`` differ:
    the second's plates start with ``B``. Raises ValueError naming the bad pattern.
    """
    if not spec:
        return ()
    formats = []
    for part in spec.split(","):
        if not part.strip():
            msg = f"plate format list {spec!r}: an empty pattern (two commas, or a trailing one)"
            raise ValueError(msg)
        formats.append(PlateFormat(part.strip()))
    return tuple(formats)


def plausible(text: str) -> bool:
    """A plate of no given format: 5-10 letters and digits, at least one of each, and over
    ``LONG`` characters, ``LONG_DIGITS`` digits or more."""
    return (
        MIN_LENGTH <= len(text) <= MAX_LENGTH
        and text.isascii()
        and text.isalnum()
        and any(c.isalpha() for c in text)
        and any(c.isdigit() for c in text)
        and (len(text) <= LONG or sum(c.isdigit() for c in text) >= LONG_DIGITS)
    )


def normalise(text: str, formats: tuple[PlateFormat, ...]) -> str | None:
    """The plate a raw read shows, or None when it is not one (see the module's docstring)."""
    read = _alnum(text)
    if not formats:
        return read if plausible(read) else None
    seen = frozenset(b for b in breaks(text) if b < len(read))  # (between characters)
    fits = [
        (f, fmt) for fmt in formats if (f := fmt.fit(read)) is not None and not refutes(seen, fmt)
    ]
    if not fits:
        return None
    # The separators read say where the plate's groups end: a format whose groups end there
    # explains the read better than one that would split a group (``MY17 10B`` is LL99LLL's
    # ``MY17IOB``, not LL999LL's ``MY171OB``, which fits it with no change).
    placed = [(f, fmt) for f, fmt in fits if seen <= group_ends(fmt)]
    fits = placed or fits
    fewest = min(changes for (_, changes), _ in fits)
    best = [(plate, fmt) for (plate, changes), fmt in fits if changes == fewest]
    # Formats that differ only in their separators (``LL-999-LL`` and ``LL999LL``) give one
    # plate: the first format given writes it.
    if len({_alnum(plate) for plate, _ in best}) == 1:
        return best[0][0]
    # Two formats read two plates: the separators read, where there are any, say which format
    # the plate was printed in (``50-0XQ-1`` is 99-LLL-9's 50-OXQ-1, not 999LLL's 500XQI).
    printed = [plate for plate, fmt in best if seen and breaks(fmt.pattern) == seen]
    return printed[0] if len({_alnum(plate) for plate in printed}) == 1 else None


def refutes(seen: frozenset[int], fmt: PlateFormat) -> bool:
    """Whether a read with separators ``seen`` (``breaks``) cannot be a plate of ``fmt``: the
    format prints separators, and the read shows one where it prints none. ``TH47 0KJ`` (a
    British plate, its O read as a 0) is not LL-999-LL's ``TH-470-KJ``, which fits it with no
    change where LL99LLL needs one. A format written without separators says nothing of them,
    and a separator the read missed refutes nothing (faint dashes are missed, not made up)."""
    printed = breaks(fmt.pattern)
    return bool(printed) and not seen <= printed


def group_ends(fmt: PlateFormat) -> frozenset[int]:
    """Where ``fmt``'s plates may print a separator (as ``breaks`` counts): where it prints
    them, or, written without any, where it changes from letters to digits or back (``LL99LLL``:
    after 2 and 4; an ``A`` position changes nothing). Plates print separators between their
    groups, and their groups are runs of one kind on most formats; a separator inside a run
    (``AB 12 345``) is printed by formats that say so (``LL 99 999``)."""
    printed = breaks(fmt.pattern)
    if printed:
        return printed

    def kind(c: str) -> str:
        return "A" if c == "A" else "9" if c.isdigit() else "L"

    kinds = [kind(c) for c in fmt.positions]
    return frozenset(
        i + 1 for i, (a, b) in enumerate(itertools.pairwise(kinds)) if "A" not in (a, b) and a != b
    )


def breaks(text: str) -> frozenset[int]:
    """Where ``text`` (a read or a pattern) prints a separator: after how many of its letters
    and digits (``50-0XQ-1``, ``99-LLL-9``: after 2 and 5)."""
    out = set()
    n = 0
    for c in text:
        if c.isascii() and c.isalnum():
            n += 1
        elif n:
            out.add(n)
    return frozenset(out)


def fold(text: str) -> str:
    """The read with each look-alike letter replaced by its digit (``OLTM98`` -> ``0LTM98``):
    reads of one plate that differ only in look-alikes fold to one text."""
    return "".join(TO_DIGIT.get(c, c) for c in text)


def same_plate(a: str, b: str) -> bool:
    """Plates compare by their letters and digits only (``AB-123`` is ``AB123``)."""
    return _alnum(a) == _alnum(b)


def _look_alike(c: str) -> bool:
    return c in TO_LETTER or c in TO_DIGIT


def group_kinds(raw: str, evidence: Evidence = ()) -> tuple[str | None, ...]:
    """Per letter or digit of a read (separators left out): ``"L"`` or ``"9"`` where the
    plate's groups, as the separators the recogniser read split it, say which kind a look-alike
    is, else None.

    Plates group their letters and their digits, and print a dash or a space between groups.
    A group between two separators holds one kind on every plate format we know of (``AB-123-CD``,
    ``99-LLL-9``, ``B-AB 1234``, ``1-ABC-123``), so its look-alikes take the kind of its other
    characters when those (one at least) are all of one kind: ``36-IU0-6`` is ``36-IUO-6``. The
    groups at either end may mix kinds (``WD52 JKB``, ``AB 123CD``, ``ABC 12A``), so there only
    a group's one look-alike takes the kind of all its others (``0PQ 234`` is ``OPQ 234``;
    ``WD02 JKB``, two look-alikes, says nothing). A read without a separator says nothing.

    A group of look-alikes only says nothing by itself; there, and in a group at either end
    with more than one look-alike, ``evidence`` (per character of ``raw``, as
    ``CtcDecoder.read`` gives it) speaks for the look-alikes drawn apart from their twins in
    plate fonts (8/B, 5/S, 2/Z, 6/G; not 0/O or 1/I): one the recogniser read as one form with
    ``SURE_FORM`` of the pair's probability counts as a character of that kind. ``BI 354 0B``,
    its B's read surely, is ``BI 354 OB``; ``482 0LZ``, its Z read surely, is ``482 OLZ``
    (``WD02 JKB`` still says nothing: its 2 read surely is a digit beside two letters).
    """
    upper = raw.upper()
    spans: list[list[int]] = []
    for i, c in enumerate(upper):
        if c.isascii() and c.isalnum():
            if i == 0 or not (upper[i - 1].isascii() and upper[i - 1].isalnum()):
                spans.append([])
            spans[-1].append(i)
    out: list[str | None] = []
    for i, span in enumerate(spans):
        group = [upper[j] for j in span]
        sure = {"9" if c.isdigit() else "L" for c in group if not _look_alike(c)}
        alike = [j for j in span if _look_alike(upper[j])]
        middle = 0 < i < len(spans) - 1
        if not sure or (not middle and len(alike) > 1):
            # All look-alikes, or an end group with several: those read surely, if any, say
            # which kind they are.
            seen = {
                j: _sure_form(upper[j], evidence[j] if j < len(evidence) else None) for j in alike
            }
            sure |= {k for k in seen.values() if k is not None}
            alike = [j for j in alike if seen[j] is None]
        kind = None
        if len(spans) > 1 and len(sure) == 1 and (middle or len(alike) == 1):
            kind = next(iter(sure))
        out += [kind if j in alike else None for j in span]
    return tuple(out)


def _sure_form(c: str, seen: tuple[float, float] | None) -> str | None:
    """``"9"`` or ``"L"`` where the recogniser was sure of a look-alike drawn apart from its
    twin (``group_kinds``), else None."""
    if c in ONE_GLYPH or seen is None or sum(seen) <= 0:
        return None
    share = (seen[0] if c.isdigit() else seen[1]) / sum(seen)
    return ("9" if c.isdigit() else "L") if share >= SURE_FORM else None


def grouped(raw: str, evidence: Evidence) -> Evidence:
    """The recogniser's evidence (per character of ``raw``, separators included) for the read's
    letters and digits, with what the groups say (``group_kinds``) taken in: a ``0``/``O`` or
    ``1``/``I`` (one glyph in many plate fonts) takes the group's kind outright; another
    look-alike's evidence is averaged with it, so that a recogniser sure of the other form
    leaves the read a toss-up (no event) rather than a guess either way."""
    kinds = iter(group_kinds(raw, evidence))
    out: list[tuple[float, float] | None] = []
    for i, c in enumerate(raw.upper()):
        if not (c.isascii() and c.isalnum()):
            continue
        seen = evidence[i] if i < len(evidence) else None
        kind = next(kinds)
        if kind is None:
            out.append(seen)
            continue
        told = (1.0, 0.0) if kind == "9" else (0.0, 1.0)
        total = sum(seen) if seen is not None else 0.0
        if c in ONE_GLYPH or seen is None or total <= 0:
            out.append(told)
        else:
            out.append(((seen[0] / total + told[0]) / 2, (seen[1] / total + told[1]) / 2))
    return tuple(out)
