"""Dynamic batching options.

``af.Batch(max_size, max_wait)``: the block's function receives a list of up to ``max_size`` items;
once it holds one item it waits at most ``max_wait`` seconds for more (``max_wait=0`` takes what is
ready). It returns a list of equal length.
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

    >>> Batch(max_size=8, max_wait=0.0).max_size
    8
    """

    max_size: int = 16
    max_wait: float = 0.005

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
