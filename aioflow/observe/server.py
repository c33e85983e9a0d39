"""The HTTP side of observing a pipeline: ``/metrics``, the live dashboard, its event stream.

:func:`add_routes` mounts the routes on any :class:`aiohttp.web.Application` (a service that
already runs one serves its pipeline's metrics itself); :class:`Server` runs a small aiohttp
server of its own for :meth:`aioflow.RunningPipeline.serve_metrics` and the command line.

Routes (under an optional prefix):

- ``GET /metrics``: the Prometheus text format (:mod:`aioflow.observe.metrics`).
- ``GET /``: the dashboard page (plain HTML, CSS and JavaScript shipped in the package; no CDN).
- ``GET /events``: server-sent events, one JSON snapshot of the statistics per ``interval``
  seconds (``?interval=0.5`` by default, 0.05 to 10).
- ``GET /static/...``: the page's script and style sheet.

With ``token``, the data routes (``/metrics``, ``/events``) want ``Authorization: Bearer TOKEN``
(or ``?token=TOKEN``: open the page as ``/?token=TOKEN`` and it passes the token on to its event
stream) and answer 401 otherwise; the page and its assets hold no figures.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

from aiohttp import web

from ..stats import find_bottleneck
from .metrics import CONTENT_TYPE, PipelineCollector, StatisticsSource

__all__ = ["Server", "add_routes", "snapshot"]

logger = logging.getLogger("aioflow")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_CLOSING = web.AppKey("aioflow_closing", list[asyncio.Event])
_STATIC = {
    "dashboard.js": "text/javascript",
    "dashboard.css": "text/css",
}


def snapshot(source: StatisticsSource) -> dict[str, Any]:
    """The statistics as plain data, as the event stream sends them: the pipeline's name, the
    time, each block's record (with ``utilisation`` and ``blocked_ratio``) in pipeline order,
    the bottleneck report, and the end-to-end latency (count, mean, p50 and p99)."""
    records = source.statistics()
    blocks = []
    for rec in records.values():
        data = rec.as_dict()
        data["utilisation"] = rec.utilisation
        data["blocked_ratio"] = rec.blocked_ratio
        data["dropped_by"] = {str(k): v for k, v in rec.dropped_by.items()}
        data["batch_sizes"] = {str(k): v for k, v in rec.batch_sizes.items()}
        blocks.append(data)
    report = find_bottleneck(records)
    whole = source.latency()
    return {
        "pipeline": source.name,
        "time": time.time(),
        "blocks": blocks,
        "bottleneck": None if report is None else report.as_dict(),
        # end to end; a quantile is the upper bound of its bucket, null above the top one
        "latency": {
            "count": whole.count,
            "mean_s": whole.mean,
            "p50_s": _finite(whole.quantile(0.5)),
            "p99_s": _finite(whole.quantile(0.99)),
        },
    }


def _finite(x: float) -> float | None:
    """``x``, or None for infinity (JSON has no infinity)."""
    return None if math.isinf(x) else x


def _static(name: str) -> bytes:
    return resources.files(__package__).joinpath("static", name).read_bytes()


def _guard(token: str | None, handler: Handler) -> Handler:
    if token is None:
        return handler
    expected = token.encode()

    async def guarded(request: web.Request) -> web.StreamResponse:
        given = request.query.get("token", "")
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            given = auth[len("Bearer ") :]
        if not hmac.compare_digest(given.encode(), expected):
            raise web.HTTPUnauthorized(
                text="aioflow: this endpoint wants Authorization: Bearer TOKEN\n",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return await handler(request)

    return guarded


def add_routes(
    app: web.Application,
    source: StatisticsSource,
    *,
    prefix: str = "",
    token: str | None = None,
    dashboard: bool = True,
) -> None:
    """Mount ``/metrics`` (and, with ``dashboard``, ``/``, ``/events`` and ``/static/...``)
    for ``source`` on ``app``, under ``prefix`` (like ``"/aioflow"``).

    Args:
        app: the application, before it starts.
        source: a :class:`~aioflow.RunningPipeline` (or a :class:`~aioflow.Pipeline`: its
            current or last run).
        prefix: a path the routes go under; empty for the root.
        token: if given, ``/metrics`` and ``/events`` want ``Authorization: Bearer TOKEN``.
        dashboard: whether to mount the dashboard and its event stream.

    >>> from aiohttp import web
    >>> import aioflow as af
    >>> from aioflow.observe import add_routes
    >>> app = web.Application()
    >>> add_routes(app, af.Pipeline(lambda x: x, name="demo"), prefix="/aioflow")
    """
    prefix = prefix.rstrip("/")
    collector = PipelineCollector(source)
    if _CLOSING not in app:
        closing: list[asyncio.Event] = []
        app[_CLOSING] = closing

        async def on_shutdown(app: web.Application) -> None:
            for event in closing:
                event.set()

        app.on_shutdown.append(on_shutdown)
    closing_events = app[_CLOSING]

    async def metrics(request: web.Request) -> web.Response:
        # the collector's own writer: the same text as render(registry(source)), faster
        body = collector.text().encode()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    app.router.add_get(prefix + "/metrics", _guard(token, metrics))
    if not dashboard:
        return
    page = _static("index.html")
    assets = {name: _static(name) for name in _STATIC}

    async def index(request: web.Request) -> web.Response:
        return web.Response(body=page, content_type="text/html", charset="utf-8")

    async def asset(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in assets:
            raise web.HTTPNotFound
        return web.Response(body=assets[name], content_type=_STATIC[name], charset="utf-8")

    async def events(request: web.Request) -> web.StreamResponse:
        try:
            interval = min(10.0, max(0.05, float(request.query.get("interval", "0.5"))))
        except ValueError:
            raise web.HTTPBadRequest(text="interval must be a number of seconds\n") from None
        resp = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await resp.prepare(request)
        stop = asyncio.Event()
        closing_events.append(stop)
        try:
            while not stop.is_set():
                data = json.dumps(snapshot(source), separators=(",", ":"))
                await resp.write(f"data: {data}\n\n".encode())
                try:
                    await asyncio.wait_for(stop.wait(), interval)
                except TimeoutError:
                    pass
        except ConnectionResetError:
            pass  # the page went away
        finally:
            closing_events.remove(stop)
        return resp

    # The page and its assets hold no figures: only the data routes want the token.
    app.router.add_get(prefix + "/", index)
    app.router.add_get(prefix + "/events", _guard(token, events))
    app.router.add_get(prefix + "/static/{name}", asset)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Server:
    """A small aiohttp server of its own serving :func:`add_routes` for ``source``.

    Args:
        source: a :class:`~aioflow.RunningPipeline` or :class:`~aioflow.Pipeline`.
        host: where to listen; loopback by default. Any other address is reachable from other
            machines: give a ``token`` then (a warning is logged without one).
        port: the port; 0 picks a free one (see :attr:`url`).
        token: if given, ``/metrics`` and ``/events`` want ``Authorization: Bearer TOKEN``.
        dashboard: whether to serve the dashboard at ``/``.

    Use it as ``async with Server(...) as server:`` or call :meth:`start` and :meth:`close`.
    """

    def __init__(
        self,
        source: StatisticsSource,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        dashboard: bool = True,
    ) -> None:
        self.source = source
        self.host = host
        self.port = port
        self.token = token
        self.dashboard = dashboard
        self._runner: web.AppRunner | None = None
        #: ``http://HOST:PORT/`` once started
        self.url = ""

    @property
    def metrics_url(self) -> str:
        return self.url + "metrics"

    async def start(self) -> str:
        """Listen; return :attr:`url`."""
        if not _is_loopback(self.host) and self.token is None:
            logger.warning(
                "pipeline %r: metrics served on %s without a token; anyone who can reach "
                "this address can read them",
                self.source.name,
                self.host,
            )
        app = web.Application()
        add_routes(app, self.source, token=self.token, dashboard=self.dashboard)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        host, port = runner.addresses[0][:2]
        self.port = port
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{port}/"
        logger.info(
            "pipeline %r: metrics at %s, dashboard at %s",
            self.source.name,
            self.metrics_url,
            self.url,
        )
        return self.url

    async def close(self) -> None:
        """Stop listening and end the event streams; the port is free again."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        for event in runner.app[_CLOSING]:
            event.set()
        await runner.cleanup()

    async def __aenter__(self) -> Server:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
