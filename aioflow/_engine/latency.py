"""Counting latencies as they happen: fixed buckets for the histograms, recent samples for the
percentiles.

A :class:`Buckets` counts latencies in the fixed buckets of
:data:`~aioflow.stats.LATENCY_BUCKETS` (a bisect into a short tuple and an increment);
:class:`LatencySamples` is a block's: it also keeps the recent samples its p50 and p99 are read
from, and is appended to wherever the block's runtime times a call (only on the path that is
timed already). The run's :class:`Buckets` counts end-to-end latencies: from when an item
entered the pipeline (``Envelope.born``) to when its output was handed to the caller.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from collections.abc import Iterator, Sequence
from itertools import groupby
from operator import attrgetter

from ..stats import LATENCY_BUCKETS, LatencyHistogram
from .envelope import Envelope

__all__ = ["Buckets", "LatencySamples"]

_born = attrgetter("born")


class Buckets:
    """Latencies counted in fixed buckets since the run began."""

    __slots__ = ("counts", "sum_s")

    def __init__(self) -> None:
        # counts[i]: latencies in (LATENCY_BUCKETS[i-1], LATENCY_BUCKETS[i]]; the last, above
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.sum_s = 0.0

    def add(self, dt: float) -> None:
        self.counts[bisect_left(LATENCY_BUCKETS, dt)] += 1
        self.sum_s += dt

    def add_outputs(self, now: float, envs: Sequence[Envelope]) -> None:
        """Count the end-to-end latency of outputs handed over together at ``now``.

        Items fetched together from a plain iterable share one ``born`` stamp (the feed reads
        the clock once per burst), so consecutive outputs with the same stamp have the same
        latency and are counted with one bisect: exact, and a few tens of nanoseconds an item.
        """
        counts = self.counts
        total = 0.0
        if len(envs) < 2 or envs[0].born != envs[1].born:  # stamped one by one
            for env in envs:
                dt = now - env.born
                counts[bisect_left(LATENCY_BUCKETS, dt)] += 1
                total += dt
            self.sum_s += total
            return
        for born, same in groupby(map(_born, envs)):
            n = len(list(same))
            dt = now - born
            counts[bisect_left(LATENCY_BUCKETS, dt)] += n
            total += dt * n
        self.sum_s += total

    def snapshot(self) -> LatencyHistogram:
        return LatencyHistogram(LATENCY_BUCKETS, tuple(self.counts), self.sum_s)


class LatencySamples(Buckets):
    """A block's timed calls: bucket counts since the run began, and the recent samples."""

    __slots__ = ("recent",)

    def __init__(self, keep: int) -> None:
        super().__init__()
        self.recent: deque[float] = deque(maxlen=keep)

    def append(self, dt: float) -> None:
        self.recent.append(dt)
        self.counts[bisect_left(LATENCY_BUCKETS, dt)] += 1
        self.sum_s += dt

    def __iter__(self) -> Iterator[float]:
        return iter(self.recent)

    def __len__(self) -> int:
        return len(self.recent)
