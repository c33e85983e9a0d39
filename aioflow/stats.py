"""Per-block statistics.

:class:`BlockStatistics` is a frozen snapshot of one block's counters. The books balance for every
block at every moment::

    received == completed + dropped + skipped + failed + in_flight + queue_depth

``completed`` counts inputs processed without error (with 0..n outputs, ``filtered`` of them with
none); ``emitted`` counts outputs; ``skipped`` counts failed items that were skipped or handed to
the dead-letter sink (``dead_letters`` of them).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["BlockStatistics", "percentile"]


def percentile(samples: Iterable[float], q: float) -> float:
    """The ``q``-quantile (0..1) of ``samples`` by the nearest-rank method; 0.0 when empty.

    >>> percentile([1.0, 2.0, 3.0, 4.0], 0.5)
    2.0
    """
    ordered = sorted(samples)
    if not ordered:
        return 0.0
    rank = max(0, min(len(ordered) - 1, int(q * len(ordered) + 0.999999) - 1))
    return ordered[rank]


@dataclass(frozen=True, slots=True)
class BlockStatistics:
    """A snapshot of one block's counters (see the module docstring for the books).

    Latencies are the block's own processing time per call (from the start of the call to its
    result; per batch for a batching block), over recent calls. ``batches`` and ``batch_sizes``
    (size -> how many batches had it) describe dynamic batching; ``keys`` is the number of keys
    holding state now and ``evicted`` how many were evicted so far.
    """

    name: str
    received: int = 0
    completed: int = 0
    emitted: int = 0
    dropped: int = 0
    dropped_by: Mapping[str, int] = field(default_factory=dict)
    skipped: int = 0
    dead_letters: int = 0
    failed: int = 0
    retried: int = 0
    filtered: int = 0
    in_flight: int = 0
    queue_depth: int = 0
    busy_s: float = 0.0
    latency_p50_s: float = 0.0
    latency_p99_s: float = 0.0
    workers: int = 1
    batches: int = 0
    batch_sizes: Mapping[int, int] = field(default_factory=dict)
    keys: int = 0
    evicted: int = 0

    @property
    def mean_batch_size(self) -> float:
        """Mean items per batch (0.0 for a block without batching)."""
        if not self.batches:
            return 0.0
        return sum(size * n for size, n in self.batch_sizes.items()) / self.batches

    @property
    def balanced(self) -> bool:
        """Whether the books balance (they always should)."""
        return self.received == (
            self.completed
            + self.dropped
            + self.skipped
            + self.failed
            + self.in_flight
            + self.queue_depth
        )

    def as_dict(self) -> dict[str, Any]:
        """The record as a plain dict (for JSON, logs, dashboards)."""
        data = asdict(self)
        data["dropped_by"] = dict(self.dropped_by)
        data["batch_sizes"] = dict(self.batch_sizes)
        return data
