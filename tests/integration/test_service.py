"""The service example (``examples/service.py``) on a real server on 127.0.0.1.

Concurrent requests share one pipeline and its dynamic batching; malformed input is refused
before it reaches the model; a shutdown answers the requests in flight. The service runs under
``web.AppRunner`` on an ephemeral loopback port; every check reads answers, the ``/health``
endpoint or the running pipeline, never the clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp import web
from conftest import wait_until

import aioflow as af

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("service_example", ROOT / "examples/service.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and pickling look modules up by name
    spec.loader.exec_module(module)
    return module


service = load_example()


@contextlib.asynccontextmanager
async def running_service(
    app: web.Application,
) -> AsyncIterator[tuple[web.AppRunner, str, aiohttp.ClientSession]]:
    """The app on a free port of 127.0.0.1, and a client session for it."""
    runner = web.AppRunner(app, shutdown_timeout=10.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        base = f"http://127.0.0.1:{runner.addresses[0][1]}"
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200)) as client:
            yield runner, base, client
    finally:
        if runner.server is not None:
            await runner.cleanup()


def random_images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)


async def post_image(
    client: aiohttp.ClientSession, base: str, image: np.ndarray, *, as_json: bool = False
) -> tuple[int, Any]:
    if as_json:
        resp = await client.post(f"{base}/predict", json={"image": image.tolist()})
    else:
        resp = await client.post(f"{base}/predict", data=image.tobytes())
    async with resp:
        return resp.status, await resp.json()


async def test_a_thousand_concurrent_requests_are_all_answered_and_batched() -> None:
    model = service.Classifier()
    images = random_images(1000, seed=7)
    expected = await asyncio.to_thread(model.predict, images)
    model.calls = 0
    async with running_service(service.make_app(model)) as (_, base, client):
        answers = await asyncio.gather(
            *(post_image(client, base, img, as_json=i % 25 == 0) for i, img in enumerate(images))
        )
        async with client.get(f"{base}/health") as resp:
            assert resp.status == 200
            health = await resp.json()
    assert [status for status, _ in answers] == [200] * 1000
    assert [body for _, body in answers] == expected  # each caller got its own image's answer
    assert health["ready"] is True
    classify = health["blocks"]["classify"]
    assert classify["received"] == classify["completed"] == 1000
    assert classify["failed"] == 0
    assert classify["mean_batch_size"] > 1  # concurrent requests shared model calls
    assert model.calls == classify["batches"] < 1000


async def test_malformed_images_get_400_and_never_reach_the_model() -> None:
    async with running_service(service.make_app()) as (runner, base, client):
        bad_requests: list[dict[str, Any]] = [
            {"data": b"\x00" * 100},
            {"json": {"pixels": [0] * 3072}},
            {"json": {"image": [[0, 0, 0]] * 10}},
            {"json": {"image": [300] * 3072}},
            {"json": {"image": "not pixels"}},
            {"json": {"image": [0.5] * 3072}},
            {"data": b"{not json", "headers": {"Content-Type": "application/json"}},
        ]
        for kwargs in bad_requests:
            async with client.post(f"{base}/predict", **kwargs) as resp:
                assert resp.status == 400, kwargs
                assert "error" in await resp.json()
        status, answer = await post_image(client, base, random_images(1, seed=1)[0])
        running = runner.app[service.RUNNING]
        assert running.statistics()["classify"].received == 1
    assert status == 200
    assert answer["label"] in service.LABELS


class GatedClassifier(service.Classifier):  # type: ignore[misc,name-defined]
    """The example's model, held on a gate: requests stay in flight until the test opens it."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.fail_on_black = False

    def predict(self, images: np.ndarray) -> list[dict[str, Any]]:
        self.gate.wait(timeout=10)  # never forever: a failing test must still end
        if self.fail_on_black and not images.any():
            msg = "model crashed on a black frame"
            raise RuntimeError(msg)
        result: list[dict[str, Any]] = super().predict(images)
        return result


async def test_shutdown_stops_accepting_and_answers_the_requests_in_flight() -> None:
    model = GatedClassifier()
    images = random_images(40, seed=3)
    expected = service.Classifier().predict(images)
    app = service.make_app(model)
    try:
        async with running_service(app) as (runner, base, client):
            in_flight = [asyncio.create_task(post_image(client, base, img)) for img in images]
            running = app[service.RUNNING]
            await wait_until(
                lambda: running.statistics()["classify"].received == 40, "40 requests submitted"
            )
            shutdown = asyncio.create_task(runner.cleanup())
            await wait_until(lambda: not runner.addresses, "the server stopped listening")
            with pytest.raises(aiohttp.ClientConnectionError):
                await post_image(client, base, images[0])  # a new request: refused
            assert not running.closed  # the pipeline still serves the requests in flight
            model.gate.set()
            answers = await asyncio.gather(*in_flight)
            await shutdown
    finally:
        model.gate.set()
    assert answers == [(200, body) for body in expected]
    assert running.closed  # and then it drained and stopped
    stats = running.statistics()["classify"]
    assert stats.completed == 40
    assert stats.in_flight == stats.queue_depth == 0


async def test_a_model_failure_answers_500_and_the_service_goes_on() -> None:
    model = GatedClassifier()
    model.gate.set()
    model.fail_on_black = True
    app = service.make_app(model, batch=af.Batch(max_size=1, max_wait=0.0))
    async with running_service(app) as (_, base, client):
        black = np.zeros((32, 32, 3), dtype=np.uint8)
        status, body = await post_image(client, base, black)
        assert status == 500
        assert "model crashed on a black frame" in body["error"]
        status, body = await post_image(client, base, random_images(1, seed=5)[0])
        assert status == 200
        async with client.get(f"{base}/health") as resp:
            health = await resp.json()
    assert health["blocks"]["classify"]["failed"] == 1
    assert health["ready"] is True
