"""``aioflow.io.http``: HTTP blocks against real aiohttp servers on 127.0.0.1.

Every service here is a real ``aiohttp.web`` server on an ephemeral loopback port that records
each request when it arrives (the server's clock, the body, the client's port). Tests assert what
the server saw: how many requests, how far apart, over how many connections. None asserts how
long the client took.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import gc
import json
import math
import random
import socket
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

import aioflow as af
from aioflow.io import http

pytestmark = pytest.mark.integration

FAST = af.Retry(attempts=3, backoff=0.001, jitter=False)


# -- a recording service ----------------------------------------------------------------------


@dataclass
class Arrival:
    """One request as the server saw it arrive."""

    at: float  # time.time() on the server when the handler started
    mono: float  # time.monotonic() then: for durations (the wall clock may be slewed)
    method: str
    path: str
    query: dict[str, str]
    body: bytes
    content_type: str
    headers: dict[str, str]
    client_port: int


Handler = Callable[[web.Request, "Service"], Awaitable[web.StreamResponse]]


@dataclass
class Service:
    """A scripted web service: ``handler(request, service)`` answers; arrivals are recorded."""

    handler: Handler
    base: str = ""
    arrivals: list[Arrival] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)  # frees hanging handlers
    active: int = 0
    max_active: int = 0

    def url(self, path: str = "/") -> str:
        return self.base + path

    def count(self, path: str) -> int:
        return sum(1 for a in self.arrivals if a.path == path)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.arrivals.append(
            Arrival(
                at=time.time(),
                mono=time.monotonic(),
                method=request.method,
                path=request.path,
                query=dict(request.query),
                body=body,
                content_type=request.content_type,
                headers=dict(request.headers),
                client_port=peer[1] if peer else -1,
            )
        )
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            return await self.handler(request, self)
        finally:
            self.active -= 1

    async def hang(self) -> web.Response:
        """Never answer (until the test ends): a service that is up but stuck."""
        await self.release.wait()
        return web.Response(text="too late")


@contextlib.asynccontextmanager
async def serve(handler: Handler, *, sock: socket.socket | None = None) -> AsyncIterator[Service]:
    """Run ``handler`` as a web service on 127.0.0.1 (a free port, or ``sock``)."""
    service = Service(handler)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", service._handle)
    runner = web.AppRunner(app, shutdown_timeout=2.0)
    await runner.setup()
    try:
        site: web.BaseSite = (
            web.SockSite(runner, sock) if sock is not None else web.TCPSite(runner, "127.0.0.1", 0)
        )
        await site.start()
        host, port = runner.addresses[0][:2]
        service.base = f"http://{host}:{port}"
        yield service
    finally:
        service.release.set()
        await runner.cleanup()


async def echo(request: web.Request, service: Service) -> web.Response:
    """Answer with the request's body and content type."""
    arrival = service.arrivals[-1]
    if arrival.content_type == "application/json":
        return web.json_response({"echo": json.loads(arrival.body), "path": request.path})
    if arrival.content_type.startswith("text/"):
        return web.Response(text="echo: " + arrival.body.decode())
    return web.Response(body=arrival.body[::-1], content_type="application/octet-stream")


def cause(err: BaseException) -> http.HttpError:
    """The HttpError behind a BlockError."""
    assert isinstance(err, af.BlockError), err
    exc = err.__cause__
    assert isinstance(exc, http.HttpError), repr(exc)
    return exc


async def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Let the test run until ``condition()`` holds; fail rather than hang if it never does."""
    for _ in range(2000):
        if condition():
            return
        await asyncio.sleep(0.001)
    msg = f"never happened: {what}"
    raise AssertionError(msg)


# -- bodies and responses ---------------------------------------------------------------------


async def test_post_sends_dicts_and_lists_as_json_and_emits_the_parsed_answers_in_order() -> None:
    async with serve(echo) as svc:
        blk = http.post(svc.url("/describe"), workers=4)
        items: list[Any] = [{"frame": i, "boxes": [[1, 2, 3, 4]]} for i in range(20)]
        items.append([1, "two", None])
        out = await af.Pipeline(blk).run(items)
    assert out == [{"echo": item, "path": "/describe"} for item in items]
    assert {a.content_type for a in svc.arrivals} == {"application/json"}
    assert len(svc.arrivals) == 21
    assert blk.responses_by_status == {200: 21}
    assert blk.requests == 21


async def test_bytes_and_text_bodies_and_each_response_mode() -> None:
    async with serve(echo) as svc:
        auto = http.post(svc.url("/raw"), name="auto")
        out = await af.Pipeline(auto).run([b"\x00\x01jpeg", "hello", {"k": 1}])
        assert out == [b"gepj\x01\x00", "echo: hello", {"echo": {"k": 1}, "path": "/raw"}]
        assert sorted(a.content_type for a in svc.arrivals) == [
            "application/json",
            "application/octet-stream",
            "text/plain",
        ]

        # {"a": 1} goes as JSON and comes back as text; the text goes as text and comes back
        # as bytes; the bytes go as bytes and come back, reversed, in a full Response.
        as_text = http.post(svc.url("/t"), response="text", name="as_text")
        as_bytes = http.post(svc.url("/b"), response="bytes", name="as_bytes")
        as_full = http.post(svc.url("/f"), response="full", name="as_full")
        (full,) = await af.Pipeline(as_text, as_bytes, as_full).run([{"a": 1}])
        text = json.dumps({"echo": {"a": 1}, "path": "/t"})
        assert isinstance(full, http.Response)
        assert full.status == 200
        assert full.headers["Content-Type"] == "application/octet-stream"
        assert full.body == f"echo: {text}".encode()[::-1]
        assert full.url == svc.url("/f")

        # "json" parses whatever the content type says.
        async def json_as_text(request: web.Request, service: Service) -> web.Response:
            return web.Response(text='{"label": "cat"}', content_type="text/plain")

    async with serve(json_as_text) as svc2:
        forced = http.get(svc2.url("/label"), response="json")
        plain = http.get(svc2.url("/label"), response="auto", name="plain")
        assert await af.Pipeline(forced).run([None]) == [{"label": "cat"}]
        assert await af.Pipeline(plain).run([None]) == ['{"label": "cat"}']


async def test_a_body_that_is_not_json_fails_the_item_with_the_status_and_an_excerpt() -> None:
    async def broken(request: web.Request, service: Service) -> web.Response:
        return web.Response(text="<html>oops</html>", content_type="application/json")

    async with serve(broken) as svc:
        blk = http.post(svc.url("/j"), retry=FAST)
        with pytest.raises(ExceptionGroup) as info:
            await af.Pipeline(blk).run([{"x": 1}])
    exc = cause(info.value.exceptions[0])
    assert exc.status == 200
    assert "<html>oops</html>" in exc.body
    assert len(svc.arrivals) == 1  # a parse error is not retried: the answer would be the same


async def test_build_get_params_url_items_and_request_items() -> None:
    async with serve(echo) as svc:
        built = http.post(
            build=lambda item: {
                "url": svc.url(f"/cams/{item['cam']}"),
                "json": {"n": item["n"]},
                "headers": {"X-Camera": str(item["cam"])},
            },
            headers={"Authorization": "Bearer t0ken"},
        )
        out = await af.Pipeline(built).run([{"cam": 7, "n": 1}, {"cam": 8, "n": 2}])
        assert out == [{"echo": {"n": 1}, "path": "/cams/7"}, {"echo": {"n": 2}, "path": "/cams/8"}]
        assert sorted(a.headers["X-Camera"] for a in svc.arrivals) == ["7", "8"]
        assert {a.headers["Authorization"] for a in svc.arrivals} == {"Bearer t0ken"}

        svc.arrivals.clear()
        lookup = http.get(svc.url("/plates"), response="bytes")
        await af.Pipeline(lookup).run([{"plate": "AB-123"}, None])
        assert sorted((a.method, len(a.query), a.query) for a in svc.arrivals) == [
            ("GET", 0, {}),
            ("GET", 1, {"plate": "AB-123"}),
        ]

        svc.arrivals.clear()
        fetch = http.get(response="bytes")  # no url: each item is one
        await af.Pipeline(fetch).run([svc.url("/a"), svc.url("/b")])
        custom = http.post(svc.url("/default"), name="custom")
        (answer,) = await af.Pipeline(custom).run(
            [http.Request(url=svc.url("/other"), method="PUT", json=[1])]
        )
        assert answer == {"echo": [1], "path": "/other"}
        assert sorted((a.method, a.path) for a in svc.arrivals) == [
            ("GET", "/a"),
            ("GET", "/b"),
            ("PUT", "/other"),
        ]


async def test_an_item_that_cannot_be_sent_fails_without_a_request() -> None:
    async with serve(echo) as svc:
        blk = http.post(svc.url("/x"), retry=FAST)
        async with af.Pipeline(blk).open() as running:
            with pytest.raises(af.BlockError) as info:
                await running.submit({1, 2, 3})  # a set is not JSON
            assert await running.submit({"ok": True}) == {"echo": {"ok": True}, "path": "/x"}
    assert isinstance(info.value.__cause__, TypeError)
    assert "JSON" in str(info.value)
    assert "build=" in str(info.value)
    assert len(svc.arrivals) == 1


async def test_a_batching_block_posts_each_batch_as_one_json_list() -> None:
    async def batch_endpoint(request: web.Request, service: Service) -> web.Response:
        frames = json.loads(service.arrivals[-1].body)
        return web.json_response([f * 10 for f in frames])

    async with serve(batch_endpoint) as svc:
        blk = http.post(svc.url("/batch"), batch=af.Batch(max_size=5, max_wait=3600.0), workers=1)
        out = await af.Pipeline(blk).run(range(12))
    assert out == [i * 10 for i in range(12)]
    assert [json.loads(a.body) for a in svc.arrivals] == [
        [0, 1, 2, 3, 4],
        [5, 6, 7, 8, 9],
        [10, 11],
    ]


# -- retries ----------------------------------------------------------------------------------


async def test_a_flaky_service_is_retried_to_success() -> None:
    failures_left: dict[str, int] = {}

    async def flaky(request: web.Request, service: Service) -> web.Response:
        key = service.arrivals[-1].body.decode()
        left = failures_left.setdefault(key, 2)
        if left:
            failures_left[key] = left - 1
            return web.Response(status=503, text="warming up")
        return web.json_response({"ok": key})

    async with serve(flaky) as svc:
        blk = http.post(svc.url("/geo"), retry=af.Retry(attempts=3, backoff=0.001), workers=4)
        pipe = af.Pipeline(blk)
        out = await pipe.run([f"cam{i}" for i in range(6)])
    assert out == [{"ok": f"cam{i}"} for i in range(6)]
    assert len(svc.arrivals) == 18  # 2 failures and 1 success for each item
    assert blk.retried == 12
    assert blk.responses_by_status == {503: 12, 200: 6}
    stats = pipe.statistics()["http_post"]
    assert stats.completed == 6
    assert stats.failed == 0
    assert blk.breaker.state == "closed"
    assert blk.breaker.opened == 0


async def test_a_flaky_service_fails_the_item_once_the_attempts_run_out() -> None:
    async def down(request: web.Request, service: Service) -> web.Response:
        return web.Response(status=502, text="bad gateway: upstream is gone")

    async with serve(down) as svc:
        blk = http.post(svc.url("/geo"), retry=af.Retry(attempts=4, backoff=0.001))
        with pytest.raises(ExceptionGroup) as info:
            await af.Pipeline(blk).run([{"cam": 1}])
    (err,) = info.value.exceptions
    exc = cause(err)
    assert len(svc.arrivals) == 4
    assert exc.status == 502
    assert exc.attempts == 4
    assert exc.retryable
    assert "upstream is gone" in exc.body
    # The BlockError names the block, the URL and the status.
    assert "http_post" in str(err)
    assert svc.url("/geo") in str(err)
    assert "502" in str(err)


async def test_retry_after_in_seconds_and_as_a_date_is_waited_out() -> None:
    waits = {"seconds": "1", "date": ""}

    async def limited(request: web.Request, service: Service) -> web.Response:
        key = service.arrivals[-1].body.decode()
        if service.count(f"/{key}") > 1:
            return web.Response(text=f"{key} ok")
        if key == "date":
            # An HTTP-date has whole seconds: ask for the next whole second at least 0.5 s away.
            when = math.ceil(time.time() + 0.5)
            waits["date"] = email.utils.formatdate(when, usegmt=True)
            return web.Response(status=503, headers={"Retry-After": waits["date"]})
        return web.Response(status=429, headers={"Retry-After": waits["seconds"]})

    async with serve(limited) as svc:
        blk = http.post(
            build=lambda key: {"url": svc.url(f"/{key}"), "data": key},
            retry=af.Retry(attempts=2, backoff=0.001),
            workers=2,
        )
        out = await af.Pipeline(blk).run(["seconds", "date"])
    assert out == ["seconds ok", "date ok"]
    first = {a.path: a.mono for a in svc.arrivals[::-1]}  # earliest arrival per path
    second = {a.path: a.mono for a in svc.arrivals}  # latest arrival per path
    assert second["/seconds"] - first["/seconds"] >= 1.0
    second = {a.path: a.at for a in svc.arrivals}  # the date is on the wall clock
    asked_until = email.utils.parsedate_to_datetime(waits["date"]).timestamp()
    assert second["/date"] >= asked_until
    assert blk.responses_by_status == {429: 1, 503: 1, 200: 2}


async def test_a_retry_after_beyond_max_backoff_fails_at_once() -> None:
    async def limited(request: web.Request, service: Service) -> web.Response:
        return web.Response(status=429, text="quota exceeded", headers={"Retry-After": "3600"})

    async with serve(limited) as svc:
        blk = http.post(svc.url("/q"), retry=af.Retry(attempts=5, backoff=0.001, max_backoff=10))
        async with af.Pipeline(blk).open() as running:
            with pytest.raises(af.BlockError) as info:
                await running.submit({"n": 1})
    exc = cause(info.value)
    assert len(svc.arrivals) == 1
    assert exc.status == 429
    assert exc.retry_after == 3600.0
    assert "Retry-After 3600 s" in str(info.value)


@pytest.mark.parametrize("status", [400, 404, 422])
async def test_a_client_error_fails_at_once_without_a_retry(status: int) -> None:
    async def refuse(request: web.Request, service: Service) -> web.Response:
        return web.json_response({"detail": "no such camera"}, status=status)

    async with serve(refuse) as svc:
        blk = http.post(svc.url("/cams/99"), retry=af.Retry(attempts=5, backoff=0.001))
        async with af.Pipeline(blk).open() as running:
            with pytest.raises(af.BlockError) as info:
                await running.submit({"cam": 99})
            assert running.statistics()["http_post"].failed == 1
    exc = cause(info.value)
    assert len(svc.arrivals) == 1  # the server saw one request: no retry
    assert exc.status == status
    assert not exc.retryable
    assert exc.attempts == 1
    assert "no such camera" in exc.body
    assert f"{svc.url('/cams/99')}: {status}" in str(info.value)
    assert blk.retried == 0
    assert blk.breaker.consecutive_failures == 0


async def test_a_slow_service_times_out_and_is_retried() -> None:
    async def sluggish(request: web.Request, service: Service) -> web.Response:
        if len(service.arrivals) <= 2:
            return await service.hang()
        return web.Response(text="finally")

    async with serve(sluggish) as svc:
        blk = http.post(svc.url("/ocr"), timeout=0.2, retry=FAST)
        out = await af.Pipeline(blk).run([b"frame"])
    assert out == ["finally"]
    assert len(svc.arrivals) == 3
    assert blk.timeouts == 2
    assert blk.retried == 2


async def test_a_stuck_service_exhausts_the_retries_and_the_item_goes_to_the_dead_letters() -> None:
    async def stuck_for_one(request: web.Request, service: Service) -> web.Response:
        if service.arrivals[-1].body == b"bad":
            return await service.hang()
        return web.Response(text="ok")

    dead: list[tuple[Any, af.BlockError]] = []
    async with serve(stuck_for_one) as svc:
        blk = http.post(
            svc.url("/ocr"),
            timeout=0.2,
            retry=af.Retry(attempts=2, backoff=0.001),
            dead_letter=lambda item, err: dead.append((item, err)),
            workers=2,
        )
        pipe = af.Pipeline(blk)
        out = await pipe.run([b"a", b"bad", b"c"])  # the run does not fail
        async with pipe.open() as running:
            with pytest.raises(af.ItemDropped) as dropped:
                await running.submit(b"bad")
    assert out == ["ok", "ok"]
    assert [item for item, _ in dead] == [b"bad", b"bad"]
    exc = cause(dead[0][1])
    assert exc.status is None
    assert "no response within 0.2 s" in str(exc)
    assert exc.attempts == 2
    assert dropped.value.reason == "dead_letter"
    assert sum(1 for a in svc.arrivals if a.body == b"bad") == 4  # 2 attempts, twice
    stats = pipe.statistics()["http_post"]
    assert stats.dead_letters == 1
    assert stats.failed == 0
    assert stats.balanced


# -- circuit breaker --------------------------------------------------------------------------


def state(breaker: http.CircuitBreaker) -> str:
    """The breaker's state, read afresh (a plain read would be narrowed by type checkers)."""
    return breaker.state


def bound_port() -> socket.socket:
    """A socket bound to a free loopback port and not listening: connections are refused,
    nobody else can take the port, and a server can start on it later."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock


async def test_a_down_service_opens_the_circuit_and_later_items_fail_fast() -> None:
    sock = bound_port()
    port = sock.getsockname()[1]
    blk = http.post(
        f"http://127.0.0.1:{port}/detect",
        retry=af.Retry(attempts=2, backoff=0.001),
        breaker=http.Breaker(consecutive=4, cooldown=3600.0),
    )
    async with af.Pipeline(blk).open() as running:
        errors: list[http.HttpError] = []
        for i in range(4):
            with pytest.raises(af.BlockError) as info:
                await running.submit({"frame": i})
            errors.append(cause(info.value))
        # Items 0 and 1 were refused twice each: 4 failures in a row opened the circuit.
        assert [e.attempts for e in errors[:2]] == [2, 2]
        assert all("connection failed" in str(e) for e in errors[:2])
        assert blk.connection_errors == 4
        assert blk.breaker.state == "open"
        assert [type(e) for e in errors[2:]] == [http.CircuitOpenError] * 2

        # The service comes back on the same port, but the circuit is open: nothing is sent.
        with sock:
            async with serve(echo, sock=sock) as svc:
                for i in range(5):
                    with pytest.raises(af.BlockError) as info:
                        await running.submit({"frame": i})
                    assert isinstance(info.value.__cause__, http.CircuitOpenError)
                assert svc.arrivals == []
        assert blk.requests == 4
        assert blk.rejected == 7
        assert "circuit open (4 failures in a row)" in str(info.value)
        stats = blk.http_statistics()
        assert stats.breaker == "open"
        assert stats.breaker_opened == 1
        assert stats.rejected == 7


async def test_a_retry_the_open_breaker_refuses_counts_as_rejected_not_retried() -> None:
    async def down(request: web.Request, service: Service) -> web.Response:
        return web.Response(status=503, text="overloaded")

    async with serve(down) as svc:
        blk = http.post(
            svc.url("/geo"),
            retry=af.Retry(attempts=5, backoff=0.001),
            breaker=http.Breaker(consecutive=3, cooldown=3600.0),
        )
        async with af.Pipeline(blk).open() as running:
            # Item 0: three 503s (two of them retries) open the circuit; its fourth attempt is
            # refused by the breaker and never sent.
            with pytest.raises(af.BlockError) as info:
                await running.submit({"cam": 0})
            refused = info.value.__cause__
            assert isinstance(refused, http.CircuitOpenError)
            assert refused.attempts == 3
            # Item 1: refused at its first attempt.
            with pytest.raises(af.BlockError) as info:
                await running.submit({"cam": 1})
            assert isinstance(info.value.__cause__, http.CircuitOpenError)
            stats = blk.http_statistics()
    assert len(svc.arrivals) == 3
    assert stats.requests == 3
    assert stats.responses_by_status == {503: 3}
    assert stats.retried == 2  # the requests sent again: arrivals after the first
    assert stats.rejected == 2  # the refused retry of item 0, and item 1
    assert stats.breaker_opened == 1
    assert stats.as_dict()["retried"] == 2


async def test_the_circuit_half_opens_after_the_cooldown_and_a_good_probe_closes_it() -> None:
    sock = bound_port()
    port = sock.getsockname()[1]
    blk = http.post(
        f"http://127.0.0.1:{port}/detect", breaker=http.Breaker(consecutive=3, cooldown=0.3)
    )
    async with af.Pipeline(blk).open() as running:
        for i in range(3):
            with pytest.raises(af.BlockError):
                await running.submit({"frame": i})
        assert blk.breaker.state == "open"
        with sock:
            async with serve(echo, sock=sock) as svc:
                await wait_until(lambda: blk.breaker.state == "half_open", "the cool-down ended")
                # The probe goes through, succeeds, and closes the circuit.
                assert await running.submit({"frame": 3}) == {
                    "echo": {"frame": 3},
                    "path": "/detect",
                }
                assert state(blk.breaker) == "closed"
                more = await asyncio.gather(*(running.submit({"frame": i}) for i in range(4, 9)))
                assert [m["echo"]["frame"] for m in more] == [4, 5, 6, 7, 8]
                assert len(svc.arrivals) == 6
    assert blk.breaker.opened == 1


async def test_a_failed_probe_opens_the_circuit_again() -> None:
    async def down(request: web.Request, service: Service) -> web.Response:
        return web.Response(status=500)

    async with serve(down) as svc:
        blk = http.post(svc.url("/x"), breaker=http.Breaker(consecutive=2, cooldown=0.2))
        async with af.Pipeline(blk).open() as running:
            for i in range(2):
                with pytest.raises(af.BlockError):
                    await running.submit(i)
            await wait_until(lambda: blk.breaker.state == "half_open", "the cool-down ended")
            with pytest.raises(af.BlockError) as info:
                await running.submit(2)  # the probe: sent, fails
            assert cause(info.value).status == 500
            assert blk.breaker.state == "open"
            assert blk.breaker.opened == 2
            with pytest.raises(af.BlockError) as info:
                await running.submit(3)
            assert isinstance(info.value.__cause__, http.CircuitOpenError)
    assert len(svc.arrivals) == 3


async def test_sporadic_failures_never_open_the_breaker_with_the_defaults() -> None:
    # One request in five fails, at random: whether attempt k of item i fails is drawn once,
    # from a seeded generator, so runs of failures come as chance makes them and the test
    # replays the same draws every time.
    rng = random.Random(5)
    fails = [[rng.random() < 0.2 for _ in range(6)] for _ in range(400)]
    assert not any(all(f) for f in fails)  # (with 6 attempts, every item gets through)

    async def one_in_five(request: web.Request, service: Service) -> web.Response:
        body = service.arrivals[-1].body
        attempt = sum(1 for a in service.arrivals if a.body == body) - 1
        n = json.loads(body)
        if fails[n][attempt]:
            return web.Response(status=503, text="hiccup")
        return web.json_response({"n": n})

    async with serve(one_in_five) as svc:
        blk = http.post(svc.url("/score"), retry=af.Retry(attempts=6, backoff=0.001), workers=8)
        out = await af.Pipeline(blk).run(range(400))
    assert out == [{"n": i} for i in range(400)]
    failures = blk.responses_by_status[503]
    assert 0.15 < failures / blk.requests < 0.25  # about one request in five failed
    assert blk.breaker.opened == 0
    assert blk.rejected == 0


def test_the_default_breaker_rides_out_random_failures_and_trips_on_an_outage() -> None:
    now = [0.0]
    rng = random.Random(20240611)

    # One request in five fails, at random, for 200,000 requests: never opens.
    breaker = http.CircuitBreaker(http.DEFAULT_BREAKER, clock=lambda: now[0])
    for _ in range(200_000):
        breaker.record(breaker.acquire(), ok=rng.random() >= 0.2)
    assert breaker.opened == 0
    assert breaker.state == "closed"

    # One in four: still never.
    breaker = http.CircuitBreaker(http.DEFAULT_BREAKER, clock=lambda: now[0])
    for _ in range(100_000):
        breaker.record(breaker.acquire(), ok=rng.random() >= 1 / 4)
    assert breaker.opened == 0

    # An outage: every request fails. Open after exactly `consecutive` requests.
    breaker = http.CircuitBreaker(http.DEFAULT_BREAKER, clock=lambda: now[0])
    sent = 0
    while breaker.state == "closed":
        breaker.record(breaker.acquire(), ok=False)
        sent += 1
    assert sent == http.DEFAULT_BREAKER.consecutive == 15
    assert breaker.acquire() is None
    assert breaker.rejected == 1

    # A service failing 70% of the time, without long runs of failures: the rate opens it.
    pattern = [False, False, True] * 2 + [False, True, False, True]
    breaker = http.CircuitBreaker(http.DEFAULT_BREAKER, clock=lambda: now[0])
    for i in range(100):
        breaker.record(breaker.acquire(), ok=pattern[i % len(pattern)])
    assert breaker.state == "open"
    assert "in the last 100 requests" in breaker.last_reason

    # Cool-down over: one probe at a time.
    now[0] += http.DEFAULT_BREAKER.cooldown
    assert state(breaker) == "half_open"
    probe = breaker.acquire()
    assert probe is not None
    assert breaker.acquire() is None
    breaker.record(probe, ok=True)
    assert state(breaker) == "closed"


# -- session, connections, options ------------------------------------------------------------


async def test_the_session_is_closed_after_the_run_however_it_ends() -> None:
    async def answer(request: web.Request, service: Service) -> web.Response:
        if service.arrivals[-1].body == b"404":
            return web.Response(status=404)
        return web.Response(text="ok")

    sessions: list[aiohttp.ClientSession] = []
    async with serve(answer) as svc:
        blk = http.post(svc.url("/x"))

        def build(item: bytes) -> http.Request:
            assert blk.session is not None
            sessions.append(blk.session)
            return http.Request(data=item)

        blk.build = build
        pipe = af.Pipeline(blk)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert await pipe.run([b"a", b"b"]) == ["ok", "ok"]
            with pytest.raises(ExceptionGroup):
                await pipe.run([b"c", b"404", b"d"])
            stream = pipe.stream([b"e"] * 50)
            assert await anext(stream) == "ok"
            await stream.aclose()  # leaving early cancels the run

            # A session of your own: the block closes it too, and adds its headers.
            def own_session() -> aiohttp.ClientSession:
                session = aiohttp.ClientSession(headers={"X-Client": "fleet-7"})
                sessions.append(session)
                return session

            own = http.post(svc.url("/x"), session=own_session, headers={"X-Api-Key": "k"})
            assert await af.Pipeline(own).run([b"f"]) == ["ok"]
            gc.collect()
    assert len({id(s) for s in sessions}) == 4  # one session per run
    assert svc.arrivals[-1].headers["X-Client"] == "fleet-7"
    assert svc.arrivals[-1].headers["X-Api-Key"] == "k"
    assert all(s.closed for s in sessions)
    assert blk.session is None
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []


async def test_connections_are_limited_to_workers_and_reused() -> None:
    async def slow(request: web.Request, service: Service) -> web.Response:
        await asyncio.sleep(0.005)
        return web.Response(text="ok")

    async with serve(slow) as svc:
        blk = http.post(svc.url("/x"), workers=3)
        await af.Pipeline(blk).run([b"x"] * 60)
    assert svc.max_active == 3  # three at a time ...
    assert len({a.client_port for a in svc.arrivals}) == 3  # ... over three kept-alive connections


def test_block_options_pass_through_and_bad_arguments_are_graph_errors() -> None:
    blk = http.post(
        "http://127.0.0.1:9/x",
        name="geocode",
        workers=5,
        queue_size=7,
        ordered=False,
        max_age=2.0,
        on_error="skip",
    )
    opts = blk.options
    assert (opts.name, opts.workers, opts.queue_size, opts.ordered, opts.max_age) == (
        "geocode",
        5,
        7,
        False,
        2.0,
    )
    assert opts.on_error == "skip"
    assert opts.executor == "async"
    assert opts.timeout is None
    assert isinstance(blk, af.Block)
    assert blk.breaker.state == "closed"

    with pytest.raises(af.GraphError, match=r"retry=af\.Retry"):
        http.post("http://127.0.0.1:9/x", on_error=af.Retry(attempts=3))
    with pytest.raises(af.GraphError, match="url must be"):
        http.post("ftp://127.0.0.1/x")
    with pytest.raises(af.GraphError, match="response must be"):
        http.post("http://127.0.0.1:9/x", response="xml")
    with pytest.raises(af.GraphError, match="timeout must be"):
        http.post("http://127.0.0.1:9/x", timeout=0)
    with pytest.raises(af.GraphError, match="unknown option"):
        http.post("http://127.0.0.1:9/x", retries=3)
    with pytest.raises(af.GraphError, match="consecutive"):
        http.Breaker(consecutive=0)
    with pytest.raises(af.GraphError, match="names must be unique"):
        af.Pipeline(http.post("http://127.0.0.1:9/a"), http.post("http://127.0.0.1:9/b"))


def test_retry_after_values() -> None:
    assert http.parse_retry_after("7") == 7.0
    assert http.parse_retry_after(" 0.25 ") == 0.25
    assert http.parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert http.parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412490.0) == 0.0
    assert http.parse_retry_after("-3") is None
    assert http.parse_retry_after("soon") is None
    assert http.parse_retry_after(None) is None
