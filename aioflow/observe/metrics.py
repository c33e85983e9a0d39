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
from prometheus_client.core import Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

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


_Labels = tuple[tuple[str, str], ...]
#: one sample: its name, its labels sorted by name, its value
_Sample = tuple[str, _Labels, float]
#: one metric family: name, type, help, and its samples in the order the text format lists them
_Family = tuple[str, str, str, list[_Sample]]
#: how prometheus_client writes a number (``+Inf``, Go's exponents)
_number: Callable[[float], str] = floatToGoString

_DROPPED_HELP = (
    "Items dropped at the block's input, by reason (overflow, superseded, stale, incomplete)."
)
_QUANTILE_HELP = (
    "The block's processing time per call over its recent calls, by quantile "
    "(per batch for a batching block)."
)
_BLOCK_LATENCY_HELP = (
    "The block's processing time per call, since the run began (per batch for a "
    "batching block). Every timed call: on the fast path of a coroutine block with "
    "one worker and no timeout, calls under 50 us are timed one in 32."
)
_BATCH_HELP = "Items per batch (blocks with af.Batch)."
_E2E_HELP = (
    "End-to-end latency of each output: from when its item entered the pipeline "
    "(the source yielded it, or submit() was called) to when the output was handed "
    "to the caller."
)
_RUN_HELP = "Seconds since the run began (until it ended)."


def _histogram(
    samples: list[_Sample],
    name: str,
    labels: _Labels,
    buckets: list[tuple[str, float]],
    total: float,
) -> None:
    """A histogram's samples as prometheus_client lists them: ``_bucket`` (with ``le`` in its
    place among the sorted labels), ``_count``, ``_sum``."""
    at = sum(1 for key, _ in labels if key < "le")
    head, tail = labels[:at], labels[at:]
    bucket = name + "_bucket"
    for le, n in buckets:
        samples.append((bucket, (*head, ("le", le), *tail), n))
    samples.append((name + "_count", labels, buckets[-1][1]))
    samples.append((name + "_sum", labels, total))


def _families(source: StatisticsSource) -> list[_Family]:
    pipeline = source.name
    records = source.statistics()
    at: dict[str, _Labels] = {name: (("block", name), ("pipeline", pipeline)) for name in records}
    families: list[_Family] = []
    for metric, doc, read in _COUNTERS:
        samples: list[_Sample] = [
            (metric + "_total", at[name], float(read(r))) for name, r in records.items()
        ]
        families.append((metric, "counter", doc, samples))
    dropped: list[_Sample] = []
    for name, rec in records.items():
        for reason, n in rec.dropped_by.items():
            dropped.append(("aioflow_items_dropped_total", (*at[name], ("reason", reason)), n))
    families.append(("aioflow_items_dropped", "counter", _DROPPED_HELP, dropped))
    for metric, doc, read in _GAUGES:
        samples = [(metric, at[name], float(read(r))) for name, r in records.items()]
        families.append((metric, "gauge", doc, samples))
    quantiles: list[_Sample] = []
    block_latency: list[_Sample] = []
    batch: list[_Sample] = []
    run_wall = 0.0
    for name, rec in records.items():
        labels = at[name]
        quantiles.append(
            ("aioflow_latency_seconds", (*labels, ("quantile", "0.5")), rec.latency_p50_s)
        )
        quantiles.append(
            ("aioflow_latency_seconds", (*labels, ("quantile", "0.99")), rec.latency_p99_s)
        )
        _histogram(
            block_latency,
            "aioflow_block_latency_seconds",
            labels,
            _latency_buckets(rec.latency),
            rec.latency.sum_s,
        )
        if rec.batch_sizes:
            total = float(sum(s * n for s, n in rec.batch_sizes.items()))
            _histogram(batch, "aioflow_batch_size", labels, _batch_buckets(rec.batch_sizes), total)
        run_wall = max(run_wall, rec.wall_s)
    families.append(("aioflow_latency_seconds", "gauge", _QUANTILE_HELP, quantiles))
    families.append(
        ("aioflow_block_latency_seconds", "histogram", _BLOCK_LATENCY_HELP, block_latency)
    )
    families.append(("aioflow_batch_size", "histogram", _BATCH_HELP, batch))
    whole = source.latency()
    e2e: list[_Sample] = []
    _histogram(
        e2e,
        "aioflow_pipeline_latency_seconds",
        (("pipeline", pipeline),),
        _latency_buckets(whole),
        whole.sum_s,
    )
    families.append(("aioflow_pipeline_latency_seconds", "histogram", _E2E_HELP, e2e))
    run: list[_Sample] = [("aioflow_run_seconds", (("pipeline", pipeline),), run_wall)]
    families.append(("aioflow_run_seconds", "gauge", _RUN_HELP, run))
    return families


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class PipelineCollector(Collector):
    """A collector that reads ``source.statistics()`` at every scrape.

    :meth:`text` writes the same metrics in the text format directly, several times faster
    than :func:`render` (prometheus_client's generic writer): the metrics server uses it.

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
        for name, kind, doc, samples in _families(self.source):
            family = Metric(name, doc, kind)
            for sample, labels, value in samples:
                family.add_sample(sample, dict(labels), value)
            yield family

    def text(self) -> str:
        """The metrics in the Prometheus text format 0.0.4, exactly as
        ``render(registry(source))`` writes them."""
        out: list[str] = []
        escaped: dict[_Labels, str] = {}
        values: dict[str, str] = {}
        for name, kind, doc, samples in _families(self.source):
            shown = name + "_total" if kind == "counter" else name
            doc_text = doc.replace("\\", "\\\\").replace("\n", "\\n")
            out.append(f"# HELP {shown} {doc_text}\n# TYPE {shown} {kind}\n")
            for sample, labels, value in samples:
                text = escaped.get(labels)
                if text is None:
                    parts = []
                    for k, v in labels:
                        e = values.get(v)
                        if e is None:
                            e = values[v] = _escape(v)
                        parts.append(f'{k}="{e}"')
                    text = escaped[labels] = ",".join(parts)
                out.append(f"{sample}{{{text}}} {_number(value)}\n")
        return "".join(out)


def registry(source: StatisticsSource) -> CollectorRegistry:
    """A new :class:`~prometheus_client.CollectorRegistry` (not the global one) holding a
    :class:`PipelineCollector` for ``source``."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(PipelineCollector(source))
    return reg


def render(reg: CollectorRegistry) -> bytes:
    """The registry's metrics in the Prometheus text format (:data:`CONTENT_TYPE`)."""
    return generate_latest(reg)
