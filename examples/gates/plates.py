"""Plate formats as configuration: which reads are plates, and fixing look-alike characters.

A format is written as the plate reads, position by position: ``L`` a letter, ``9`` a digit,
``A`` either; any other character is fixed (``-`` or a space is printed on some plates but the
recogniser may not see it, so non-alphanumeric fixed characters are optional in a read and put
back in the result; a fixed letter or digit must be read). Several formats are separated by
commas: ``LL99LLL,LLL999``.

A read is fitted to each format of its length (fixed separators left out). Where a format says a
position holds a letter and the read has a digit that looks like one (0/O, 1/I, 8/B, 5/S, 2/Z,
6/G), the digit becomes that letter, and the other way round; nothing else is changed. The format
needing the fewest such changes wins; a read that fits no format, or fits two formats equally
well with different results, is not a plate (the caller counts it).

Without formats, any plausible plate is accepted as read: 4 to 10 letters and digits with at
least one of each. Plates worldwide run from 2 to 10 characters, but most have both kinds, and
a rule that admits all-letter words would turn every shop sign into a plate.
"""

from __future__ import annotations

from dataclasses import dataclass

# Characters the recogniser may confuse on a plate: the digit and the letter it looks like.
LOOK_ALIKE = (("0", "O"), ("1", "I"), ("8", "B"), ("5", "S"), ("2", "Z"), ("6", "G"))
TO_LETTER = dict(LOOK_ALIKE)
TO_DIGIT = {c: d for d, c in LOOK_ALIKE}
MIN_LENGTH, MAX_LENGTH = 4, 10
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
        """The read fitted to this format and the number of characters changed, or None."""
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
    """A plate of no given format: 4-10 letters and digits, at least one of each."""
    return (
        MIN_LENGTH <= len(text) <= MAX_LENGTH
        and text.isascii()
        and text.isalnum()
        and any(c.isalpha() for c in text)
        and any(c.isdigit() for c in text)
    )


def normalise(text: str, formats: tuple[PlateFormat, ...]) -> str | None:
    """The plate a raw read shows, or None when it is not one (see the module's docstring)."""
    read = _alnum(text)
    if not formats:
        return read if plausible(read) else None
    fits = [f for fmt in formats if (f := fmt.fit(read)) is not None]
    if not fits:
        return None
    fewest = min(changes for _, changes in fits)
    best = {plate for plate, changes in fits if changes == fewest}
    return best.pop() if len(best) == 1 else None


def fold(text: str) -> str:
    """The read with each look-alike letter replaced by its digit (``OLTM98`` -> ``0LTM98``):
    reads of one plate that differ only in look-alikes fold to one text."""
    return "".join(TO_DIGIT.get(c, c) for c in text)


def same_plate(a: str, b: str) -> bool:
    """Plates compare by their letters and digits only (``AB-123`` is ``AB123``)."""
    return _alnum(a) == _alnum(b)
