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
from typing import Any, Literal

__all__ = [
    "LATENCY_BUCKETS",
    "BlockStatistics",
    "Bottleneck",
    "LatencyHistogram",
    "find_bottleneck",
    "merge_statistics",
    "percentile",
]

#: upper bounds (seconds) of the latency histograms' buckets, 100 us to 30 s, about three a
#: decade; fixed, so that the buckets of every block and every run add up
LATENCY_BUCKETS: tuple[float, ...] = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)

#: a block busier than this share of its workers' time is taken as the limit
BUSY_THRESHOLD = 0.7
#: a block waiting on a full output more than this share of the time has its limit downstream
BLOCKED_THRESHOLD = 0.5
#: where the outputs go after the last block (the caller of run/stream/submit)
CONSUMER = "<consumer>"
#: where the items come from before the first block
SOURCE = "<source>"


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
class LatencyHistogram:
    """Latencies counted in fixed buckets: a snapshot, as Prometheus histograms hold them.

    ``counts[i]`` is how many latencies fell in ``(bounds[i-1], bounds[i]]``; the last count,
    one more than there are bounds, is those above the top bound. ``sum_s`` is their total.

    >>> h = LatencyHistogram(bounds=(0.1, 1.0), counts=(2, 1, 0), sum_s=0.7)
    >>> h.count, h.cumulative(), round(h.mean, 3)
    (3, (2, 3, 3), 0.233)
    >>> h.quantile(0.5)
    0.1
    """

    bounds: tuple[float, ...] = LATENCY_BUCKETS
    counts: tuple[int, ...] = (0,) * (len(LATENCY_BUCKETS) + 1)
    sum_s: float = 0.0

    @property
    def count(self) -> int:
        """How many latencies were counted."""
        return sum(self.counts)

    @property
    def mean(self) -> float:
        """Their mean in seconds (0.0 when none)."""
        n = self.count
        return self.sum_s / n if n else 0.0

    def cumulative(self) -> tuple[int, ...]:
        """Counts at or below each bound, then the total (Prometheus's ``le`` buckets)."""
        total = 0
        out: list[int] = []
        for n in self.counts:
            total += n
            out.append(total)
        return tuple(out)

    def quantile(self, q: float) -> float:
        """An upper bound of the ``q``-quantile (0..1): the bound of the bucket that holds it
        (``inf`` when it is above the top bound; 0.0 when nothing was counted)."""
        n = self.count
        if not n:
            return 0.0
        rank = max(1, min(n, int(q * n + 0.999999)))
        for le, seen in zip((*self.bounds, float("inf")), self.cumulative(), strict=True):
            if seen >= rank:
                return le
        return float("inf")  # pragma: no cover (the last cumulative count is n)

    def as_dict(self) -> dict[str, Any]:
        """The histogram as plain data (``le`` bounds with cumulative counts)."""
        return {
            "buckets": dict(zip([*map(str, self.bounds), "+Inf"], self.cumulative(), strict=True)),
            "count": self.count,
            "sum_s": self.sum_s,
        }


@dataclass(frozen=True, slots=True)
class BlockStatistics:
    """A snapshot of one block's counters (see the module docstring for the books).

    Latencies are the block's own processing time per call (from the start of the call to its
    result; per batch for a batching block), over recent calls. ``busy_s`` sums the time its
    workers spent in calls, ``blocked_s`` the time they waited for room in a full output (both
    summed over workers), and ``wall_s`` is the time since the run began (until it ended).
    ``latency`` counts the same calls' times in fixed buckets since the run began (a
    :class:`LatencyHistogram`): every timed call, which is every call except on the fast path
    of a coroutine block with one worker and no timeout, where calls under 50 us are timed one
    in 32. ``batches`` and ``batch_sizes`` (size -> how many batches had it) describe dynamic
    batching; ``keys`` is the number of keys holding state now and ``evicted`` how many were
    evicted so far.
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
    blocked_s: float = 0.0
    wall_s: float = 0.0
    latency_p50_s: float = 0.0
    latency_p99_s: float = 0.0
    workers: int = 1
    batches: int = 0
    batch_sizes: Mapping[int, int] = field(default_factory=dict)
    keys: int = 0
    evicted: int = 0
    latency: LatencyHistogram = LatencyHistogram()

    @property
    def utilisation(self) -> float:
        """``busy_s / (wall_s * workers)``: the share of its workers' time the block spent in
        calls (0.0 before the run began)."""
        if self.wall_s <= 0.0:
            return 0.0
        return self.busy_s / (self.wall_s * self.workers)

    @property
    def blocked_ratio(self) -> float:
        """``blocked_s / (wall_s * workers)``: the share of its workers' time the block waited
        for room in a full output (the limit is downstream)."""
        if self.wall_s <= 0.0:
            return 0.0
        return self.blocked_s / (self.wall_s * self.workers)

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
        data["latency"] = self.latency.as_dict()
        return data

    def to_data(self) -> dict[str, Any]:
        """The record as plain data that goes through msgpack or JSON and back
        (:meth:`from_data`): str keys only, lists for tuples. The distributed mode's workers
        publish their books this way.

        >>> s = BlockStatistics("b", received=3, completed=3, batch_sizes={2: 1})
        >>> BlockStatistics.from_data(s.to_data()) == s
        True
        """
        # (not asdict(): its deep copies cost a worker that publishes its books often 4x more)
        data = {f: getattr(self, f) for f in _PLAIN_FIELDS}
        data["dropped_by"] = dict(self.dropped_by)
        data["batch_sizes"] = [[size, n] for size, n in self.batch_sizes.items()]
        data["latency"] = {
            "bounds": list(self.latency.bounds),
            "counts": list(self.latency.counts),
            "sum_s": self.latency.sum_s,
        }
        return data

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> BlockStatistics:
        """The record :meth:`to_data` wrote; fields it lacks keep their defaults, fields it does
        not know are ignored (a newer writer).

        Raises:
            ValueError: ``data`` is not such a record (no name, or a field of the wrong kind).
        """
        try:
            known = {f for f in cls.__dataclass_fields__ if f in data}
            values: dict[str, Any] = {f: data[f] for f in known}
            values["name"] = str(data["name"])
            if "dropped_by" in values:
                values["dropped_by"] = {str(k): int(v) for k, v in values["dropped_by"].items()}
            if "batch_sizes" in values:
                values["batch_sizes"] = {int(k): int(v) for k, v in values["batch_sizes"]}
            if "latency" in values:
                lat = values["latency"]
                values["latency"] = LatencyHistogram(
                    bounds=tuple(float(b) for b in lat["bounds"]),
                    counts=tuple(int(n) for n in lat["counts"]),
                    sum_s=float(lat["sum_s"]),
                )
            return cls(**values)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            msg = f"not a BlockStatistics record: {type(exc).__name__}: {exc}"
            raise ValueError(msg) from exc


def merge_statistics(name: str, records: Iterable[BlockStatistics]) -> BlockStatistics:
    """One block's books over several processes (the distributed mode's workers) as one record.

    Counters, times, ``workers``, ``keys``, the ``dropped_by`` and ``batch_sizes`` tallies and
    the latency histograms add up; ``wall_s`` is the longest (the processes run side by side, so
    ``utilisation`` stays a share of all their workers' time); ``latency_p50_s`` and
    ``latency_p99_s`` are the highest of the records' (a percentile cannot be summed: the worst
    process's is the honest bound; the summed ``latency`` histogram has the overall quantiles,
    to its buckets' precision). No records: a zero record.

    >>> a = BlockStatistics("b", received=2, completed=2, latency_p99_s=0.1, wall_s=1.0)
    >>> b = BlockStatistics("b", received=3, completed=3, latency_p99_s=0.3, wall_s=2.0)
    >>> m = merge_statistics("b", [a, b])
    >>> m.received, m.latency_p99_s, m.wall_s, m.workers
    (5, 0.3, 2.0, 2)
    """
    rows = list(records)
    if not rows:
        return BlockStatistics(name=name)
    summed = {
        f: sum(getattr(r, f) for r in rows)
        for f in (
            "received", "completed", "emitted", "dropped", "skipped", "dead_letters", "failed",
            "retried", "filtered", "in_flight", "queue_depth", "busy_s", "blocked_s", "workers",
            "batches", "keys", "evicted",
        )
    }  # fmt: skip
    dropped_by: dict[str, int] = {}
    sizes: dict[int, int] = {}
    for r in rows:
        for reason, n in r.dropped_by.items():
            dropped_by[reason] = dropped_by.get(reason, 0) + n
        for size, n in r.batch_sizes.items():
            sizes[size] = sizes.get(size, 0) + n
    hists = [r.latency for r in rows]
    latency = hists[0]
    if all(h.bounds == latency.bounds for h in hists):
        latency = LatencyHistogram(
            bounds=latency.bounds,
            counts=tuple(sum(c) for c in zip(*(h.counts for h in hists), strict=True)),
            sum_s=sum(h.sum_s for h in hists),
        )
    return BlockStatistics(
        name=name,
        dropped_by=dropped_by,
        batch_sizes=dict(sorted(sizes.items())),
        wall_s=max(r.wall_s for r in rows),
        latency_p50_s=max(r.latency_p50_s for r in rows),
        latency_p99_s=max(r.latency_p99_s for r in rows),
        latency=latency,
        **summed,
    )


#: the fields of a record that are plain values already
_PLAIN_FIELDS = tuple(
    f
    for f in BlockStatistics.__dataclass_fields__
    if f not in ("dropped_by", "batch_sizes", "latency")
)


@dataclass(frozen=True, slots=True)
class Bottleneck:
    """Which block limits the throughput of a run, and why.

    ``reason`` is one of:

    - ``"busy"``: ``block``'s workers are busy ``utilisation`` of the time; it is the limit
      (``limit == block``): give it more workers, batch it, or make it faster.
    - ``"blocked"``: ``block`` waits on a full output ``blocked_ratio`` of the time, so the
      limit is downstream: ``limit`` is the next stage (or ``"<consumer>"``, whoever reads the
      outputs).
    - ``"starved"``: no block is busy or blocked; ``block`` (the first) waits for input
      ``starved_ratio`` of the time: the limit is upstream, ``limit == "<source>"``.

    The ratios are shares of the block's workers' time (``wall_s * workers``) since the run
    began; ``throughput`` is the block's completed inputs per second over that time.
    """

    block: str
    reason: Literal["busy", "blocked", "starved"]
    limit: str
    utilisation: float
    blocked_ratio: float
    starved_ratio: float
    workers: int
    throughput: float
    wall_s: float

    @property
    def message(self) -> str:
        """One sentence for people, with the numbers."""
        share = "worker's" if self.workers == 1 else f"{self.workers} workers'"
        if self.reason == "busy":
            return (
                f"{self.block!r} limits throughput: busy {self.utilisation:.0%} of its {share} "
                f"time ({self.throughput:.1f} items/s); give it more workers or make it faster"
            )
        if self.reason == "blocked":
            where = "the consumer of the outputs" if self.limit == CONSUMER else repr(self.limit)
            return (
                f"the limit is downstream of {self.block!r}: it waits on a full output "
                f"{self.blocked_ratio:.0%} of its {share} time; {where} does not keep up "
                f"({self.throughput:.1f} items/s)"
            )
        return (
            f"the limit is upstream: the source; {self.block!r} waits for input "
            f"{self.starved_ratio:.0%} of its {share} time and no block is busy "
            f"({self.throughput:.1f} items/s)"
        )

    def __str__(self) -> str:
        return self.message

    def as_dict(self) -> dict[str, Any]:
        """The report as plain data, its message included."""
        data = asdict(self)
        data["message"] = self.message
        return data


def find_bottleneck(records: Mapping[str, BlockStatistics]) -> Bottleneck | None:
    """The :class:`Bottleneck` of a run from its statistics (in pipeline order), or None
    when nothing has run yet.

    The busiest block is the limit when it is busy more than 70% of its workers' time;
    otherwise the block waiting longest on a full output, if more than half the time, has its
    limit downstream; otherwise the pipeline waits for its source.
    """
    recs = [r for r in records.values() if r.wall_s > 0.0 and r.received > 0]
    if not recs:
        return None
    names = list(records)

    def report(
        rec: BlockStatistics, reason: Literal["busy", "blocked", "starved"], limit: str
    ) -> Bottleneck:
        return Bottleneck(
            block=rec.name,
            reason=reason,
            limit=limit,
            utilisation=rec.utilisation,
            blocked_ratio=rec.blocked_ratio,
            starved_ratio=max(0.0, 1.0 - rec.utilisation - rec.blocked_ratio),
            workers=rec.workers,
            throughput=rec.completed / rec.wall_s,
            wall_s=rec.wall_s,
        )

    busiest = max(recs, key=lambda r: r.utilisation)
    if busiest.utilisation >= BUSY_THRESHOLD:
        return report(busiest, "busy", busiest.name)
    blocked = max(recs, key=lambda r: r.blocked_ratio)
    if blocked.blocked_ratio >= BLOCKED_THRESHOLD:
        at = names.index(blocked.name)
        limit = names[at + 1] if at + 1 < len(names) else CONSUMER
        return report(blocked, "blocked", limit)
    return report(recs[0], "starved", SOURCE)
