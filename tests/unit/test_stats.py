"""Statistics: percentiles, the per-block record, and ``pipe.statistics()``."""

from __future__ import annotations

import dataclasses
import itertools
import json
import random
from collections.abc import AsyncIterator

import pytest

import aioflow as af
from aioflow._engine.envelope import Envelope
from aioflow._engine.latency import Buckets
from aioflow.stats import LATENCY_BUCKETS, percentile
from aioflow.testing import Recorder

# -- percentile -------------------------------------------------------------------------------


def test_percentile_of_nothing_is_zero() -> None:
    assert percentile([], 0.5) == 0.0
    assert percentile(iter(()), 0.99) == 0.0


def test_percentile_of_one_sample_is_that_sample() -> None:
    for q in (0.0, 0.5, 0.99, 1.0):
        assert percentile([7.5], q) == 7.5


def test_percentile_uses_the_nearest_rank_of_unsorted_samples() -> None:
    # 1..100 shuffled: the nearest-rank q-quantile is the ceil(q * 100)-th smallest, i.e. q * 100.
    samples = [float(i) for i in range(1, 101)]
    random.Random(1).shuffle(samples)
    assert percentile(samples, 0.5) == 50.0
    assert percentile(samples, 0.07) == 7.0
    assert percentile(samples, 0.99) == 99.0
    assert percentile(samples, 1.0) == 100.0
    assert percentile(samples, 0.0) == 1.0


def test_percentile_is_always_one_of_the_samples() -> None:
    samples = [0.3, 0.1, 0.2, 0.5]
    for q in (0.0, 0.1, 0.25, 0.26, 0.5, 0.75, 0.9, 1.0):
        assert percentile(samples, q) in samples
    assert percentile(samples, 0.25) == 0.1
    assert percentile(samples, 0.26) == 0.2


def test_percentile_does_not_change_its_input() -> None:
    samples = [3.0, 1.0, 2.0]
    percentile(samples, 0.5)
    assert samples == [3.0, 1.0, 2.0]


# -- BlockStatistics --------------------------------------------------------------------------


def test_a_fresh_record_is_all_zeros_and_balanced() -> None:
    record = af.BlockStatistics(name="decode")
    assert record.received == record.completed == record.emitted == 0
    assert record.dropped == record.skipped == record.failed == record.retried == 0
    assert record.in_flight == record.queue_depth == 0
    assert record.busy_s == record.latency_p50_s == record.latency_p99_s == 0.0
    assert dict(record.dropped_by) == {}
    assert record.balanced


def test_balanced_holds_when_every_received_item_is_accounted_for() -> None:
    record = af.BlockStatistics(
        name="b",
        received=20,
        completed=10,
        emitted=30,  # outputs do not enter the books: a generator makes several per input
        dropped=3,
        dropped_by={"overflow": 2, "stale": 1},
        skipped=2,
        failed=1,
        in_flight=1,
        queue_depth=3,
    )
    assert record.balanced


@pytest.mark.parametrize(
    "field", ["completed", "dropped", "skipped", "failed", "in_flight", "queue_depth"]
)
def test_balanced_fails_when_one_count_is_off(field: str) -> None:
    good = af.BlockStatistics(
        name="b",
        received=10,
        completed=4,
        dropped=1,
        skipped=1,
        failed=1,
        in_flight=1,
        queue_depth=2,
    )
    assert good.balanced
    bad = dataclasses.replace(good, **{field: getattr(good, field) + 1})
    assert not bad.balanced


def test_a_record_is_frozen() -> None:
    record = af.BlockStatistics(name="b")
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.received = 1  # type: ignore[misc]


def test_as_dict_has_every_documented_field_and_is_json_ready() -> None:
    record = af.BlockStatistics(
        name="detect",
        received=5,
        completed=3,
        emitted=3,
        dropped=2,
        dropped_by={"stale": 2},
        busy_s=0.25,
        latency_p50_s=0.01,
        latency_p99_s=0.05,
    )
    data = record.as_dict()
    documented = {
        "received",
        "completed",
        "emitted",
        "dropped",
        "dropped_by",
        "skipped",
        "failed",
        "retried",
        "in_flight",
        "queue_depth",
        "busy_s",
        "latency_p50_s",
        "latency_p99_s",
    }
    assert documented <= set(data)
    assert data["name"] == "detect"
    assert data["received"] == 5
    assert data["dropped_by"] == {"stale": 2}
    assert type(data["dropped_by"]) is dict
    assert json.loads(json.dumps(data)) == data


def test_as_dict_is_a_copy() -> None:
    record = af.BlockStatistics(name="b", dropped=1, dropped_by={"overflow": 1})
    data = record.as_dict()
    data["dropped_by"]["overflow"] = 99
    data["received"] = 99
    assert record.dropped_by["overflow"] == 1
    assert record.received == 0


# -- pipe.statistics() ------------------------------------------------------------------------


@af.block
async def inc(x: int) -> int:
    return x + 1


@af.block
def double(x: int) -> int:
    return 2 * x


@af.block
async def evens(x: int) -> AsyncIterator[int]:
    if x % 2 == 0:
        yield x


def test_statistics_before_any_run_has_a_zero_record_per_block_branch_included() -> None:
    pipe = af.Pipeline(inc, evens, af.branch(double, Recorder(name="rec"), name="both"))
    stats = pipe.statistics()
    assert set(stats) == {"inc", "both", "double", "rec", "evens"}
    for name, record in stats.items():
        assert record == af.BlockStatistics(name=name)
        assert record.balanced


def test_statistics_before_any_run_names_an_unnamed_branch() -> None:
    br = af.branch(double, inc)
    pipe = af.Pipeline(br)
    assert set(pipe.statistics()) == {br.name, "double", "inc"}


async def test_statistics_after_a_run_count_every_item_and_balance() -> None:
    pipe = af.Pipeline(inc, evens, af.branch(double, Recorder(name="rec"), name="both"))
    before = set(pipe.statistics())
    items = list(range(10))
    outputs = await pipe.run(items)
    stats = pipe.statistics()
    assert set(stats) == before
    for record in stats.values():
        assert record.balanced, record
        assert record.in_flight == record.queue_depth == 0
        assert record.completed == record.received
    assert stats["inc"].received == stats["evens"].received == len(items)
    assert stats["evens"].emitted == stats["both"].received == len(outputs)
    assert stats["both"].emitted == len(outputs)
    assert stats["double"].received == stats["rec"].received == len(outputs)
    assert 0 < len(outputs) < len(items)


# -- latency histograms -------------------------------------------------------------------------


def test_an_empty_histogram_counts_nothing() -> None:
    h = af.LatencyHistogram()
    assert h.bounds == LATENCY_BUCKETS
    assert h.count == 0
    assert h.mean == 0.0
    assert h.quantile(0.99) == 0.0
    assert h.cumulative() == (0,) * (len(LATENCY_BUCKETS) + 1)


def test_the_buckets_are_fixed_ascending_from_100_us_to_30_s() -> None:
    assert LATENCY_BUCKETS[0] == 0.0001
    assert LATENCY_BUCKETS[-1] == 30.0
    assert list(LATENCY_BUCKETS) == sorted(set(LATENCY_BUCKETS))
    # log-spaced: 2 to 3 times apart, never more
    assert all(2.0 <= b / a <= 3.0 for a, b in itertools.pairwise(LATENCY_BUCKETS))


def test_histogram_quantiles_are_the_bounds_of_the_buckets_holding_them() -> None:
    # 90 calls in (0.5 ms, 1 ms], 9 in (5 ms, 10 ms], 1 above 30 s
    counts = [0] * (len(LATENCY_BUCKETS) + 1)
    counts[LATENCY_BUCKETS.index(0.001)] = 90
    counts[LATENCY_BUCKETS.index(0.01)] = 9
    counts[-1] = 1
    h = af.LatencyHistogram(counts=tuple(counts), sum_s=90 * 0.0008 + 9 * 0.008 + 40.0)
    assert h.count == 100
    assert h.quantile(0.5) == 0.001
    assert h.quantile(0.9) == 0.001
    assert h.quantile(0.95) == 0.01
    assert h.quantile(1.0) == float("inf")
    assert h.mean == pytest.approx(h.sum_s / 100)
    assert h.cumulative()[-1] == 100


def test_a_records_latency_histogram_is_in_as_dict_as_cumulative_buckets() -> None:
    counts = [0] * (len(LATENCY_BUCKETS) + 1)
    counts[3] = 2  # (0.5 ms, 1 ms]
    rec = af.BlockStatistics(name="b", latency=af.LatencyHistogram(counts=tuple(counts)))
    data = rec.as_dict()["latency"]
    assert data["count"] == 2
    assert data["buckets"]["0.0005"] == 0
    assert data["buckets"]["0.001"] == 2
    assert data["buckets"]["+Inf"] == 2
    assert json.loads(json.dumps(data)) == data


def test_handed_over_outputs_land_in_the_buckets_of_their_own_latencies() -> None:
    # Outputs leave in the order their items entered: stamps ascend. Bursts of items share a
    # stamp, as the feed makes them; the handovers below straddle bucket bounds or not.
    rng = random.Random(7)
    for _ in range(300):
        stamps = sorted(rng.uniform(0.0, 0.05) for _ in range(rng.randint(1, 4)))
        borns = sorted(rng.choice(stamps) for _ in range(rng.randint(1, 64)))
        now = 0.05 + rng.uniform(0.0, 0.02)
        envs = [Envelope(i, born, None) for i, born in enumerate(borns)]
        counted = Buckets()
        counted.add_outputs(now, envs)
        one_by_one = Buckets()
        for born in borns:
            one_by_one.add(now - born)
        assert counted.counts == one_by_one.counts
        assert counted.snapshot().count == len(envs)
        if len(set(borns)) == 1:
            assert counted.sum_s == pytest.approx(one_by_one.sum_s)
