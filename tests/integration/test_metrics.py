"""Prometheus metrics and the bottleneck report of a running pipeline, over real HTTP on
loopback."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

import aioflow as af
from aioflow.observe import PipelineCollector, add_routes, registry, render
from aioflow.stats import BlockStatistics

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def assert_matches(samples: Samples, pipeline: str, records: Mapping[str, BlockStatistics]) -> None:
    """Every metric of every block equals its field of the statistics record."""
    fields = {
        "aioflow_items_received_total": "received",
        "aioflow_items_completed_total": "completed",
        "aioflow_items_emitted_total": "emitted",
        "aioflow_items_filtered_total": "filtered",
        "aioflow_items_skipped_total": "skipped",
        "aioflow_dead_letters_total": "dead_letters",
        "aioflow_items_failed_total": "failed",
        "aioflow_retries_total": "retried",
        "aioflow_busy_seconds_total": "busy_s",
        "aioflow_blocked_seconds_total": "blocked_s",
        "aioflow_batches_total": "batches",
        "aioflow_keys_evicted_total": "evicted",
        "aioflow_queue_depth": "queue_depth",
        "aioflow_in_flight": "in_flight",
        "aioflow_workers": "workers",
        "aioflow_keys": "keys",
    }
    for name, rec in records.items():
        labels = {"pipeline": pipeline, "block": name}
        for metric, field in fields.items():
            assert value(samples, metric, **labels) == pytest.approx(getattr(rec, field)), (
                name,
                metric,
            )
        assert value(samples, "aioflow_busy_ratio", **labels) == pytest.approx(rec.utilisation)
        assert value(samples, "aioflow_blocked_ratio", **labels) == pytest.approx(rec.blocked_ratio)
        assert value(samples, "aioflow_latency_seconds", **labels, quantile="0.5") == (
            pytest.approx(rec.latency_p50_s)
        )
        assert value(samples, "aioflow_latency_seconds", **labels, quantile="0.99") == (
            pytest.approx(rec.latency_p99_s)
        )
        for reason, n in rec.dropped_by.items():
            assert value(samples, "aioflow_items_dropped_total", **labels, reason=reason) == n
        if rec.batches:
            assert value(samples, "aioflow_batch_size_count", **labels) == rec.batches
            assert value(samples, "aioflow_batch_size_sum", **labels) == sum(
                size * n for size, n in rec.batch_sizes.items()
            )
            for le in (1, 2, 4, 8, 16, 1024):
                at_most = sum(n for size, n in rec.batch_sizes.items() if size <= le)
                assert value(samples, "aioflow_batch_size_bucket", **labels, le=f"{le}.0") == (
                    at_most
                )
        assert_histogram(samples, "aioflow_block_latency_seconds", labels, rec.latency)


def assert_histogram(
    samples: Samples, metric: str, labels: Mapping[str, str], hist: af.LatencyHistogram
) -> None:
    """A Prometheus histogram's buckets, count and sum equal the statistics' histogram."""
    les = [*map(repr, hist.bounds), "+Inf"]
    for le, n in zip(les, hist.cumulative(), strict=True):
        assert value(samples, f"{metric}_bucket", **labels, le=le) == n, (metric, labels, le)
    assert value(samples, f"{metric}_count", **labels) == hist.count
    assert value(samples, f"{metric}_sum", **labels) == pytest.approx(hist.sum_s)


async def test_every_metric_equals_the_statistics_after_a_run() -> None:
    @af.block(on_error="skip")
    def check(x: int) -> int:
        if x % 10 == 3:
            raise ValueError("ends in 3")
        return x

    @af.block
    async def evens(x: int):  # type: ignore[no-untyped-def]
        if x % 2 == 0:
            yield x
            yield x

    calls: dict[int, int] = {}

    @af.block(on_error=af.Retry(attempts=2, backoff=0.0))
    async def flaky(x: int) -> int:
        calls[x] = calls.get(x, 0) + 1
        if x % 7 == 0 and calls[x] == 1:
            raise RuntimeError("once")
        return x

    @af.block(batch=af.Batch(max_size=8, max_wait=0.001))
    async def batched(xs: list[int]) -> list[int]:
        return xs

    pipe = af.Pipeline(check, evens, flaky, batched, name="books")
    await pipe.run(range(100))
    records = pipe.statistics()
    assert records["check"].skipped == 10
    assert records["evens"].filtered > 0
    assert records["flaky"].retried > 0
    assert records["batched"].batches > 0
    samples = parse(render(registry(pipe)).decode())
    assert_matches(samples, "books", records)
    whole = pipe.latency()
    assert whole.count == records["batched"].emitted > 0
    assert_histogram(samples, "aioflow_pipeline_latency_seconds", {"pipeline": "books"}, whole)


async def test_live_gauges_and_drops_match_while_items_wait() -> None:
    gate = asyncio.Event()

    @af.block(workers=2, queue_size=3, overflow="drop_newest")
    async def held(x: int) -> int:
        await gate.wait()
        return x

    pipe = af.Pipeline(held, name="held")
    async with pipe.open() as running:
        url = await running.serve_metrics()
        waiting = [asyncio.create_task(running.submit(i)) for i in range(8)]
        await asyncio.sleep(0.05)
        # 2 in the workers, 3 queued, 3 dropped by overflow: nothing moves until the gate opens
        async with aiohttp.ClientSession() as http, http.get(url) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/plain")
            samples = parse(await resp.text())
        records = running.statistics()
        assert records["held"].in_flight == 2
        assert records["held"].queue_depth == 3
        assert records["held"].dropped_by == {"overflow": 3}
        assert_matches(samples, "held", records)
        gate.set()
        results = await asyncio.gather(*waiting, return_exceptions=True)
    assert sum(isinstance(r, af.ItemDropped) for r in results) == 3


async def test_fifty_concurrent_scrapes_while_the_pipeline_runs_at_full_speed() -> None:
    @af.block
    async def inc(x: int) -> int:
        return x + 1

    @af.block(workers=2)
    def double(x: int) -> int:
        return 2 * x

    n = 100_000
    pipe = af.Pipeline(inc, double, name="fast")
    async with pipe.open() as running:
        url = await running.serve_metrics()
        feeding = asyncio.create_task(pipe_feed(running, n))
        seen: list[float] = []
        async with aiohttp.ClientSession() as http:

            async def scrape() -> None:
                async with http.get(url) as resp:
                    assert resp.status == 200
                    samples = parse(await resp.text())
                    received = value(
                        samples, "aioflow_items_received_total", pipeline="fast", block="inc"
                    )
                    emitted = value(
                        samples, "aioflow_items_emitted_total", pipeline="fast", block="double"
                    )
                    assert 0 <= emitted <= received <= n
                    seen.append(received)

            for _ in range(3):
                await asyncio.gather(*(scrape() for _ in range(50)))
        await feeding
        done = running.statistics()
    assert len(seen) == 150
    assert done["double"].emitted == n
    assert any(0 < r < n for r in seen), "the scrapes should have seen the run in progress"


async def pipe_feed(running: af.RunningPipeline, n: int) -> None:
    sem = asyncio.Semaphore(256)

    async def one(i: int) -> None:
        async with sem:
            assert await running.submit(i) == 2 * (i + 1)

    await asyncio.gather(*(one(i) for i in range(n)))


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


async def test_the_server_stops_when_open_exits_and_the_port_is_free() -> None:
    pipe = af.Pipeline(lambda x: x, name="brief")
    async with pipe.open() as running:
        url = await running.serve_metrics()
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        assert not port_is_free(port)
        assert await running.submit(1) == 1
    assert port_is_free(port)
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientConnectionError):
            await http.get(url)


async def test_the_server_stops_when_the_body_of_open_raises() -> None:
    pipe = af.Pipeline(lambda x: x, name="brief")
    urls: list[str] = []

    async def body() -> None:
        async with pipe.open() as running:
            urls.append(await running.serve_metrics(port=0))
            raise KeyError("the body failed")

    with pytest.raises(KeyError):
        await body()
    url = urls[0]
    assert port_is_free(int(url.rsplit(":", 1)[1].split("/")[0]))


async def test_a_token_is_enforced() -> None:
    pipe = af.Pipeline(lambda x: x, name="secret")
    async with pipe.open() as running:
        url = await running.serve_metrics(token="s3cret")
        base = url.removesuffix("metrics")
        async with aiohttp.ClientSession() as http:
            for path in ("metrics", "events"):
                async with http.get(base + path) as resp:
                    assert resp.status == 401, path
                async with http.get(base + path, headers={"Authorization": "Bearer nope"}) as r:
                    assert r.status == 401, path
            async with http.get(url, headers={"Authorization": "Bearer s3cret"}) as resp:
                assert resp.status == 200
                assert "aioflow_items_received_total" in await resp.text()
            async with http.get(url + "?token=s3cret") as resp:
                assert resp.status == 200
            # the page holds no figures; it passes ?token= on to its event stream
            async with http.get(base) as resp:
                assert resp.status == 200


async def test_serve_metrics_on_a_stopped_pipeline_is_refused() -> None:
    pipe = af.Pipeline(lambda x: x, name="gone")
    async with pipe.open() as running:
        await running.stop()
        with pytest.raises(af.PipelineClosed, match="gone"):
            await running.serve_metrics()


async def test_the_routes_mount_on_a_users_own_app() -> None:
    from aiohttp import web

    pipe = af.Pipeline(lambda x: x * 3, name="mine")
    async with pipe.open() as running:
        app = web.Application()
        add_routes(app, running, prefix="/aioflow")
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        try:
            port = runner.addresses[0][1]
            assert await running.submit(2) == 6
            async with aiohttp.ClientSession() as http:
                async with http.get(f"http://127.0.0.1:{port}/aioflow/metrics") as resp:
                    samples = parse(await resp.text())
                async with http.get(f"http://127.0.0.1:{port}/aioflow/") as resp:
                    assert resp.status == 200
                    assert "<html" in await resp.text()
        finally:
            await runner.cleanup()
    name = next(iter(pipe.statistics()))
    assert value(samples, "aioflow_items_emitted_total", pipeline="mine", block=name) == 1


def test_import_aioflow_and_open_do_not_load_prometheus_client() -> None:
    code = (
        "import sys, aioflow as af\n"
        "async def main():\n"
        "    async with af.Pipeline(lambda x: x).open() as running:\n"
        "        await running.submit(1)\n"
        "af.run(main())\n"
        "print(sorted(m for m in sys.modules if m.startswith(('prometheus_client', "
        "'aioflow.observe'))))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


# -- the bottleneck report ----------------------------------------------------------------------


async def test_a_busy_block_is_reported_as_the_limit() -> None:
    @af.block
    async def quick(x: int) -> int:
        return x

    @af.block
    async def slow(x: int) -> int:
        await asyncio.sleep(0.002)
        return x

    pipe = af.Pipeline(quick, slow, name="busy")
    await pipe.run(range(150))
    report = pipe.bottleneck()
    assert report is not None
    assert (report.block, report.reason, report.limit) == ("slow", "busy", "slow")
    assert report.utilisation > 0.7
    assert "'slow' limits throughput" in report.message
    assert pipe.statistics()["quick"].blocked_s > 0


async def test_a_slow_consumer_shows_as_a_limit_downstream() -> None:
    @af.block(queue_size=2)
    async def quick(x: int) -> int:
        return x

    pipe = af.Pipeline(quick, name="consumer")
    # (the output after the last block holds 64: the consumer falls behind after those)
    async for _ in pipe.stream(range(400)):
        await asyncio.sleep(0.001)
    report = pipe.bottleneck()
    assert report is not None
    assert (report.block, report.reason, report.limit) == ("quick", "blocked", "<consumer>")
    assert report.blocked_ratio > 0.5
    assert "the consumer of the outputs" in report.message


async def test_a_slow_source_shows_as_starved() -> None:
    @af.block
    async def quick(x: int) -> int:
        return x

    async def trickle():  # type: ignore[no-untyped-def]
        for i in range(40):
            await asyncio.sleep(0.003)
            yield i

    pipe = af.Pipeline(quick, name="starved")
    await pipe.run(trickle())
    report = pipe.bottleneck()
    assert report is not None
    assert (report.reason, report.limit) == ("starved", "<source>")
    assert report.starved_ratio > 0.5
    assert report.as_dict()["message"].startswith("the limit is upstream")


def test_no_report_before_any_run() -> None:
    assert af.Pipeline(lambda x: x).bottleneck() is None


# -- latency histograms -------------------------------------------------------------------------


async def test_a_sleeping_blocks_latencies_land_in_the_buckets_above_its_sleep() -> None:
    @af.block
    def nap(x: int) -> int:  # a thread block: time.sleep lasts at least what it was asked
        time.sleep(0.003)
        return x

    @af.block
    async def wait(x: int) -> int:  # the serial fast path: a slow call is always timed
        await asyncio.sleep(0.002)
        return x

    pipe = af.Pipeline(nap, wait, name="naps")
    out = await pipe.run(range(40))
    assert out == list(range(40))
    records = pipe.statistics()
    hist = records["nap"].latency
    assert hist.count == records["nap"].completed == 40
    below = dict(zip(hist.bounds, hist.cumulative(), strict=False))
    assert below[0.0025] == 0  # every call slept 3 ms: none at or below 2.5 ms
    assert hist.sum_s >= 40 * 0.003
    assert hist.quantile(0.0) >= 0.005  # the bucket of the fastest call ends at 5 ms or later
    assert records["wait"].latency.count == records["wait"].completed == 40
    # end to end: every output took the 3 ms nap at least
    whole = pipe.latency()
    assert whole.count == 40
    assert dict(zip(whole.bounds, whole.cumulative(), strict=False))[0.0025] == 0
    assert_histogram(
        parse(render(registry(pipe)).decode()),
        "aioflow_block_latency_seconds",
        {"pipeline": "naps", "block": "nap"},
        hist,
    )


async def test_a_fast_coroutine_blocks_calls_are_sampled_one_in_32() -> None:
    @af.block
    async def quick(x: int) -> int:
        return x

    pipe = af.Pipeline(quick, name="quick")
    await pipe.run(range(3200))
    rec = pipe.statistics()["quick"]
    # calls under 50 us are timed one in 32 (a slow one, and the one after it, always)
    assert 0 < rec.latency.count < rec.completed // 4
    assert pipe.latency().count == 3200  # end to end, every output counts


async def test_end_to_end_latency_counts_every_output_of_stream_and_submit() -> None:
    @af.block
    async def twice(x: int):  # type: ignore[no-untyped-def]
        yield x
        yield x

    pipe = af.Pipeline(twice, name="twice")
    got = [x async for x in pipe.stream(range(30))]
    assert len(got) == 60
    assert pipe.latency().count == 60
    async with pipe.open() as running:
        assert running.latency().count == 0  # a new run, a new histogram
        outs = await asyncio.gather(*(running.submit(i) for i in range(5)))
        assert outs == [[i, i] for i in range(5)]
        whole = running.latency()
        assert whole.count == 10
        url = await running.serve_metrics()
        async with aiohttp.ClientSession() as http, http.get(url) as resp:
            samples = parse(await resp.text())
        assert_histogram(samples, "aioflow_pipeline_latency_seconds", {"pipeline": "twice"}, whole)


async def test_submit_latency_includes_the_wait_for_a_busy_block() -> None:
    gate = asyncio.Event()

    @af.block
    async def held(x: int) -> int:
        await gate.wait()
        return x

    async with af.Pipeline(held, name="held").open() as running:
        waiting = asyncio.gather(*(running.submit(i) for i in range(3)))
        await asyncio.sleep(0.03)
        gate.set()
        assert await waiting == [0, 1, 2]
        whole = running.latency()
    assert whole.count == 3
    # each waited for the gate 30 ms at least: nothing at or below 25 ms
    assert dict(zip(whole.bounds, whole.cumulative(), strict=False))[0.025] == 0


async def test_a_branch_reports_its_time_blocked_on_a_full_output() -> None:
    @af.block
    async def left(x: int) -> int:
        return x

    @af.block
    async def right(x: int) -> int:
        return -x

    pipe = af.Pipeline(af.branch(left, right, name="both"), name="branchy")
    async for _ in pipe.stream(range(300)):
        await asyncio.sleep(0.001)  # a slow consumer: the branch's output fills up
    records = pipe.statistics()
    assert records["both"].blocked_s > 0
    samples = parse(render(registry(pipe)).decode())
    assert value(
        samples, "aioflow_blocked_seconds_total", pipeline="branchy", block="both"
    ) == pytest.approx(records["both"].blocked_s)


async def test_the_servers_fast_text_is_exactly_what_prometheus_client_writes() -> None:
    # Names with a quote, a backslash and a newline test the escaping.
    @af.block(name='odd "name"\\')
    async def odd(x: int) -> int:
        return x

    @af.block(batch=af.Batch(max_size=4), queue_size=2, overflow="drop_oldest")
    async def batched(xs: list[int]) -> list[int]:
        await asyncio.sleep(0.001)
        return xs

    pipe = af.Pipeline(odd, batched, name="two\nlines")
    await pipe.run(range(200))
    assert pipe.statistics()["batched"].dropped > 0  # a reason label is in the text too
    text = PipelineCollector(pipe).text()
    assert text == render(registry(pipe)).decode()
    assert 'block="odd \\"name\\"\\\\"' in text
    assert 'pipeline="two\\nlines"' in text


async def test_a_generator_waiting_on_a_slow_next_block_is_not_counted_busy() -> None:
    # An async generator block's clock must not run while it waits for room downstream: else
    # a trivial flat-map in front of the real limit would look like the bottleneck.
    @af.block
    async def fan_out(x: int) -> AsyncIterator[int]:
        for k in range(3):
            yield x * 3 + k

    @af.block(queue_size=1)
    async def slow(x: int) -> int:
        await asyncio.sleep(0.004)
        return x

    pipe = af.Pipeline(fan_out, slow, name="flatmap")
    out = await pipe.run(range(20))
    assert out == list(range(60))
    stats = pipe.statistics()
    assert stats["fan_out"].utilisation < 0.5, stats["fan_out"]
    assert stats["slow"].utilisation > 0.7, stats["slow"]
    report = pipe.bottleneck()
    assert report is not None
    assert report.block == "slow"
