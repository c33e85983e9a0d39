"""Dynamic batching options.

``af.Batch(max_size, max_wait)``: the block's function receives a list of up to ``max_size`` items;
once it holds one item it waits at most ``max_wait`` seconds for more (``max_wait=0`` takes what is
ready). It returns a list of equal length. ``max_per_key`` caps the items of one stream (the
block's ``fair=`` key) in one batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import GraphError

__all__ = ["Batch"]


@dataclass(frozen=True, slots=True)
class Batch:
    """Dynamic batching for a block.

    Args:
        max_size: the most items in one call (>= 1).
        max_wait: seconds to wait for more items once one is held (>= 0).
        max_per_key: the most items of one stream in one batch (1..max_size), or None. The
            stream of an item is the block's ``fair=`` key; the items over the cap wait for a
            later batch, each stream's order kept (the block needs ``ordered=False``: a quiet
            stream's item may leave before a busy stream's older one).

    >>> Batch(max_size=8, max_wait=0.0).max_size
    8
    >>> Batch(8, 0.005, max_per_key=2).max_per_key
    2
    """

    max_size: int = 16
    max_wait: float = 0.005
    max_per_key: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.max_size, bool) or not isinstance(self.max_size, int):
            msg = f"Batch: max_size must be an int >= 1, got {self.max_size!r}"
            raise GraphError(msg)
        if self.max_size < 1:
            msg = f"Batch: max_size must be an int >= 1, got {self.max_size}"
            raise GraphError(msg)
        if (
            isinstance(self.max_wait, bool)
            or not isinstance(self.max_wait, int | float)
            or not math.isfinite(self.max_wait)
            or self.max_wait < 0
        ):
            msg = f"Batch: max_wait must be a number of seconds >= 0, got {self.max_wait!r}"
            raise GraphError(msg)
        cap = self.max_per_key
        if cap is not None and (
            isinstance(cap, bool) or not isinstance(cap, int) or not 1 <= cap <= self.max_size
        ):
            msg = (
                f"Batch: max_per_key must be None or an int from 1 to max_size "
                f"({self.max_size}), got {cap!r}"
            )
            raise GraphError(msg)
