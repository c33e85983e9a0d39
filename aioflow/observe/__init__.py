"""Watching a pipeline run: Prometheus metrics, a live dashboard, and the server for both.

Most users call :meth:`aioflow.RunningPipeline.serve_metrics` (or ``python -m aioflow run ...
--metrics HOST:PORT``). A service that already runs an aiohttp app mounts the same routes on
it with :func:`add_routes`::

    async with pipe.open() as running:
        app = web.Application()
        add_routes(app, running, prefix="/aioflow")   # /aioflow/metrics, /aioflow/ ...

prometheus-client is imported here and nowhere else in aioflow.
"""

from __future__ import annotations

from .metrics import CONTENT_TYPE, PipelineCollector, StatisticsSource, registry, render
from .server import Server, add_routes, snapshot

__all__ = (
    "CONTENT_TYPE",
    "PipelineCollector",
    "Server",
    "StatisticsSource",
    "add_routes",
    "registry",
    "render",
    "snapshot",
)
