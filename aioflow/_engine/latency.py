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

from ..stats import LATENCY_BUCKETS, LatencyHistogram
from .envelope import Envelope

__all__ = ["Buckets", "LatencySamples"]


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

    def add_many(self, dt: float, n: int) -> None:
        """Count ``n`` latencies of ``dt`` (one timed, standing for untimed ones beside it)."""
        self.counts[bisect_left(LATENCY_BUCKETS, dt)] += n
        self.sum_s += dt * n

    def add_outputs(self, now: float, envs: Sequence[Envelope]) -> None:
        """Count the end-to-end latency of outputs handed over together at ``now`` (``run()``
        takes every output waiting at once).

        Reading every output's stamp would cost a few percent of a trivial pipeline's time
        (measured), so only the first and the last output's are read. Outputs leave in the
        order their items entered (unless a block has ``ordered=False``), so the latencies of
        those handed over together lie between the first's and the last's: when those two fall
        in one bucket, all do, and are counted there at once; otherwise (rarely: the buckets
        are 2 to 3 times apart) each output is counted on its own. The sum takes the mean of
        the two for each of the outputs counted at once (exact when their items entered
        together, as items fetched together from a plain iterable do).
        """
        n = len(envs)
        if not n:
            return
        oldest = now - envs[0].born
        newest = now - envs[-1].born
        at = bisect_left(LATENCY_BUCKETS, oldest)
        if at == bisect_left(LATENCY_BUCKETS, newest):
            self.counts[at] += n
            self.sum_s += (oldest + newest) * 0.5 * n
            return
        for env in envs:
            self.add(now - env.born)

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
