"""Prometheus metrics of a pipeline, read from its statistics when scraped.

:class:`PipelineCollector` is a ``prometheus_client`` collector: it keeps nothing itself and
turns the pipeline's :meth:`~aioflow.RunningPipeline.statistics` into metric families at each
scrape, so the pipeline's hot path pays nothing for being watched. :func:`registry` puts one on a
:class:`~prometheus_client.CollectorRegistry` of its own (never the global ``REGISTRY``: two
pipelines in one process, or two runs, never collide), and :func:`render` writes the text
exposition format.

Every family is prefixed ``aioflow_`` and labelled ``pipeline`` and ``block``:

>>> import aioflow as af
>>> from aioflow.observe.metrics import registry, render
>>> def inc(x: int) -> int:
...     return x + 1
>>> pipe = af.Pipeline(inc, name="demo")
>>> _ = af.run(pipe.run([1, 2, 3]))
>>> text = render(registry(pipe)).decode()
>>> 'aioflow_items_received_total{block="inc",pipeline="demo"} 3.0' in text
True
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Protocol

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from ..stats import BlockStatistics, LatencyHistogram

__all__ = [
    "BATCH_BUCKETS",
    "CONTENT_TYPE",
    "PipelineCollector",
    "StatisticsSource",
    "registry",
    "render",
]

#: the content type of :func:`render`'s output (Prometheus text format 0.0.4)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_LABELS = ("pipeline", "block")


class StatisticsSource(Protocol):
    """What the collector reads: a :class:`~aioflow.Pipeline` or a
    :class:`~aioflow.RunningPipeline` (anything with a name and live statistics)."""

    @property
    def name(self) -> str: ...

    def statistics(self) -> Mapping[str, BlockStatistics]: ...

    def latency(self) -> LatencyHistogram: ...


# (metric name without _total, help, the record's field) for the plain counters
_COUNTERS: tuple[tuple[str, str, Callable[[BlockStatistics], float]], ...] = (
    (
        "aioflow_items_received",
        "Items offered to the block's input, drops included.",
        lambda r: r.received,
    ),
    (
        "aioflow_items_completed",
        "Inputs the block processed without error (0..n outputs each).",
        lambda r: r.completed,
    ),
    ("aioflow_items_emitted", "Outputs the block made.", lambda r: r.emitted),
    ("aioflow_items_filtered", "Inputs completed with no output.", lambda r: r.filtered),
    (
        "aioflow_items_skipped",
        "Items that failed and were skipped (on_error='skip' or a dead-letter sink).",
        lambda r: r.skipped,
    ),
    (
        "aioflow_dead_letters",
        "Failed items handed to the dead-letter sink.",
        lambda r: r.dead_letters,
    ),
    ("aioflow_items_failed", "Items that failed for good.", lambda r: r.failed),
    ("aioflow_retries", "Calls retried after a failure (af.Retry).", lambda r: r.retried),
    (
        "aioflow_busy_seconds",
        "Seconds the block's workers spent in calls, summed over workers.",
        lambda r: r.busy_s,
    ),
    (
        "aioflow_blocked_seconds",
        "Seconds the block's workers waited for room in a full output "
        "(the limit was downstream), summed over workers.",
        lambda r: r.blocked_s,
    ),
    ("aioflow_batches", "Batches the block called (af.Batch).", lambda r: r.batches),
    ("aioflow_keys_evicted", "Per-key states evicted (keyed blocks).", lambda r: r.evicted),
)

_GAUGES: tuple[tuple[str, str, Callable[[BlockStatistics], float]], ...] = (
    ("aioflow_queue_depth", "Items waiting in the block's input queue.", lambda r: r.queue_depth),
    ("aioflow_in_flight", "Items the block is processing now.", lambda r: r.in_flight),
    ("aioflow_workers", "The block's workers option.", lambda r: r.workers),
    (
        "aioflow_busy_ratio",
        "busy_seconds / (wall time of the run x workers): 1.0 is a block "
        "whose every worker is always busy.",
        lambda r: r.utilisation,
    ),
    (
        "aioflow_blocked_ratio",
        "blocked_seconds / (wall time of the run x workers).",
        lambda r: r.blocked_ratio,
    ),
    ("aioflow_keys", "Keys holding state now (keyed blocks).", lambda r: r.keys),
)


#: the batch-size histogram's bucket bounds: powers of two, the same at every scrape (a bucket
#: set that changed between scrapes would break rate() and histogram_quantile())
BATCH_BUCKETS: tuple[int, ...] = tuple(2**i for i in range(11))


def _batch_buckets(sizes: Mapping[int, int]) -> list[tuple[str, float]]:
    """Cumulative histogram buckets at :data:`BATCH_BUCKETS` (1 to 1024) and ``+Inf``."""
    buckets = [
        (str(float(le)), float(sum(n for s, n in sizes.items() if s <= le))) for le in BATCH_BUCKETS
    ]
    buckets.append(("+Inf", float(sum(sizes.values()))))
    return buckets


def _latency_buckets(hist: LatencyHistogram) -> list[tuple[str, float]]:
    """Cumulative ``le`` buckets of a latency histogram, ``+Inf`` last."""
    bounds = [repr(float(b)) for b in hist.bounds]
    return list(zip([*bounds, "+Inf"], map(float, hist.cumulative()), strict=True))


class PipelineCollector(Collector):
    """A collector that reads ``source.statistics()`` at every scrape.

    Args:
        source: a :class:`~aioflow.Pipeline` (its current or last run) or a
            :class:`~aioflow.RunningPipeline`.
    """

    def __init__(self, source: StatisticsSource) -> None:
        self.source = source

    def describe(self) -> list[Metric]:
        # Registering must not read statistics (nothing may be running yet).
        return []

    def collect(self) -> Iterator[Metric]:
        pipeline = self.source.name
        records = self.source.statistics()
        counters = [CounterMetricFamily(n, h, labels=_LABELS) for n, h, _ in _COUNTERS]
        gauges = [GaugeMetricFamily(n, h, labels=_LABELS) for n, h, _ in _GAUGES]
        dropped = CounterMetricFamily(
            "aioflow_items_dropped",
            "Items dropped at the block's input, by reason (overflow, stale, incomplete).",
            labels=(*_LABELS, "reason"),
        )
        latency = GaugeMetricFamily(
            "aioflow_latency_seconds",
            "The block's processing time per call over its recent calls, by quantile "
            "(per batch for a batching block).",
            labels=(*_LABELS, "quantile"),
        )
        block_latency = HistogramMetricFamily(
            "aioflow_block_latency_seconds",
            "The block's processing time per call, since the run began (per batch for a "
            "batching block). Every timed call: on the fast path of a coroutine block with "
            "one worker and no timeout, calls under 50 us are timed one in 32.",
            labels=_LABELS,
        )
        batch = HistogramMetricFamily(
            "aioflow_batch_size", "Items per batch (blocks with af.Batch).", labels=_LABELS
        )
        e2e = HistogramMetricFamily(
            "aioflow_pipeline_latency_seconds",
            "End-to-end latency of each output: from when its item entered the pipeline "
            "(the source yielded it, or submit() was called) to when the output was handed "
            "to the caller.",
            labels=("pipeline",),
        )
        wall = GaugeMetricFamily(
            "aioflow_run_seconds",
            "Seconds since the run began (until it ended).",
            labels=("pipeline",),
        )
        run_wall = 0.0
        for name, rec in records.items():
            labels = [pipeline, name]
            for family, (_, _, read) in zip(counters, _COUNTERS, strict=True):
                family.add_metric(labels, float(read(rec)))
            for gauge, (_, _, read) in zip(gauges, _GAUGES, strict=True):
                gauge.add_metric(labels, float(read(rec)))
            for reason, n in rec.dropped_by.items():
                dropped.add_metric([*labels, reason], float(n))
            latency.add_metric([*labels, "0.5"], rec.latency_p50_s)
            latency.add_metric([*labels, "0.99"], rec.latency_p99_s)
            block_latency.add_metric(labels, _latency_buckets(rec.latency), rec.latency.sum_s)
            if rec.batch_sizes:
                total = float(sum(s * n for s, n in rec.batch_sizes.items()))
                batch.add_metric(labels, _batch_buckets(rec.batch_sizes), total)
            run_wall = max(run_wall, rec.wall_s)
        wall.add_metric([pipeline], run_wall)
        whole = self.source.latency()
        e2e.add_metric([pipeline], _latency_buckets(whole), whole.sum_s)
        yield from counters
        yield dropped
        yield from gauges
        yield latency
        yield block_latency
        yield batch
        yield e2e
        yield wall


def registry(source: StatisticsSource) -> CollectorRegistry:
    """A new :class:`~prometheus_client.CollectorRegistry` (not the global one) holding a
    :class:`PipelineCollector` for ``source``."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(PipelineCollector(source))
    return reg


def render(reg: CollectorRegistry) -> bytes:
    """The registry's metrics in the Prometheus text format (:data:`CONTENT_TYPE`)."""
    return generate_latest(reg)
