"""An image classifier served over HTTP, with one shared pipeline and dynamic batching.

Every request handler does ``await running.submit(image)`` on one pipeline, opened in the aiohttp
app's ``cleanup_ctx``: concurrent requests meet in the model block, which runs them in batches
(``af.Batch(max_size=16, max_wait=0.005)``). The model costs a fixed overhead per call plus a
little per image, as an inference runtime does, so batching pays: see
``benchmarks/bench_service.py``.

Endpoints:

- ``POST /predict``: an image of 32x32 RGB pixels, as 3072 raw bytes (``application/octet-stream``)
  or as JSON ``{"image": [...]}`` (nested 32x32x3 or flat, integers 0..255); the answer is JSON
  ``{"label": "cat", "class": 3, "score": 0.41}``. A malformed image gets a 400.
- ``GET /health``: ``{"ready": true, "blocks": {...}}`` with the pipeline's statistics; 503 once
  the service is stopping.
- ``GET /aioflow/metrics``: Prometheus metrics per block; ``GET /aioflow/``: the live dashboard
  (mounted with ``aioflow.observe.add_routes`` on this app, see docs/observability.md).

The pipeline alone: ``python -m aioflow graph examples.service:pipeline``.

Shutting down (Ctrl-C or SIGTERM) is graceful: the server stops accepting connections, the
requests in flight get their answers, then the pipeline drains and the model is released.

    python examples/service.py               # serves on http://127.0.0.1:8080
    python examples/service.py --port 9000
    python examples/service.py --selftest    # serve on a free port, fire requests, check, exit
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import statistics
import sys
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import numpy as np
from aiohttp import web

import aioflow as af
from aioflow.observe import add_routes

SHAPE = (32, 32, 3)
PIXELS = 32 * 32 * 3
LABELS = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
CALL_OVERHEAD_S = 0.002  # per call into the runtime, whatever the batch size
MAX_BATCH = 16
MAX_WAIT_S = 0.005


class Classifier:
    """A small two-layer perceptron over 32x32 RGB images: 3072 -> 256 -> 10 classes.

    ``predict`` stands in for an inference runtime on one accelerator: calls run one at a time
    (a lock), each pays a fixed ``overhead`` (transfer and launch; a sleep here, which releases
    the GIL like a GPU wait) plus the matrix products, about 0.1 ms per image.

    Args:
        seed: the seed of the random weights (same seed, same model).
        overhead: seconds of fixed cost per call.
    """

    def __init__(self, seed: int = 0, *, overhead: float = CALL_OVERHEAD_S) -> None:
        rng = np.random.default_rng(seed)
        self.w1 = rng.standard_normal((PIXELS, 256), dtype=np.float32) / np.sqrt(PIXELS)
        self.b1 = rng.standard_normal(256, dtype=np.float32) * 0.1
        self.w2 = rng.standard_normal((256, len(LABELS)), dtype=np.float32) / 16.0
        self.overhead = overhead
        self.calls = 0
        self._device = threading.Lock()

    def predict(self, images: np.ndarray) -> list[dict[str, Any]]:
        """Classify a batch of images (shape ``(n, 32, 32, 3)``, uint8): one answer each."""
        with self._device:
            self.calls += 1
            time.sleep(self.overhead)
            x = images.reshape(len(images), PIXELS).astype(np.float32) / 255.0 - 0.5
            # einsum computes in this thread alone. A BLAS matmul (x @ w1) would start threads
            # of its own, one per core, and on a small machine they fight the event loop for
            # the cores: ten times slower under load.
            hidden = np.maximum(np.einsum("bi,ij->bj", x, self.w1) + self.b1, 0.0)
            logits = np.einsum("bi,ij->bj", hidden, self.w2)
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        probs /= probs.sum(axis=1, keepdims=True)
        best = probs.argmax(axis=1)
        return [
            {"label": LABELS[c], "class": int(c), "score": round(float(p[c]), 6)}
            for c, p in zip(best, probs, strict=True)
        ]


class ClassifierBlock(af.Block):
    """The pipeline's model block: loads the model in ``setup``, classifies in batches in its
    own thread (numpy releases the GIL, the event loop stays free)."""

    def __init__(self, model: Classifier | None = None, **options: Any) -> None:
        options.setdefault("name", "classify")
        options.setdefault("batch", af.Batch(max_size=MAX_BATCH, max_wait=MAX_WAIT_S))
        super().__init__(**options)
        self.given = model
        self.model: Classifier | None = None

    async def setup(self) -> None:
        # "Load the weights" off the event loop, unless a model was given.
        self.model = self.given or await asyncio.to_thread(Classifier)

    async def teardown(self) -> None:
        self.model = None  # release the model

    def process(self, images: list[np.ndarray]) -> list[dict[str, Any]]:
        assert self.model is not None  # set in setup
        return self.model.predict(np.stack(images))


def decode_image(body: bytes | None = None, pixels: object = None) -> np.ndarray:
    """An image from raw bytes or from a JSON list of pixel values.

    Raises:
        ValueError: not 32x32x3 values in 0..255.
    """
    if body is not None:
        if len(body) != PIXELS:
            msg = f"expected {PIXELS} bytes (32x32 RGB), got {len(body)}"
            raise ValueError(msg)
        return np.frombuffer(body, dtype=np.uint8).reshape(SHAPE)
    try:
        values = np.asarray(pixels)
    except (TypeError, ValueError) as exc:  # ragged lists
        msg = "'image' must be a list of integers 0..255"
        raise ValueError(msg) from exc
    if values.dtype.kind not in "iu":  # floats, strings, objects
        msg = f"'image' must be a list of integers 0..255, got {values.dtype.name} values"
        raise ValueError(msg)
    if values.size != PIXELS or values.shape not in ((PIXELS,), SHAPE):
        msg = f"'image' must hold 32x32x3 = {PIXELS} values, got shape {values.shape}"
        raise ValueError(msg)
    if values.min() < 0 or values.max() > 255:
        msg = "'image' values must be integers 0..255"
        raise ValueError(msg)
    return values.astype(np.uint8).reshape(SHAPE)


RUNNING = web.AppKey("running", af.RunningPipeline)
STOPPING = web.AppKey("stopping", asyncio.Event)


def pipeline(model: Classifier | None = None, *, batch: af.Batch | None = None) -> af.Pipeline:
    """The service's pipeline: one batching model block (``python -m aioflow graph
    examples.service:pipeline`` draws it)."""
    block = ClassifierBlock(model, batch=batch or af.Batch(max_size=MAX_BATCH, max_wait=MAX_WAIT_S))
    return af.Pipeline(block, name="classifier")


def make_app(model: Classifier | None = None, *, batch: af.Batch | None = None) -> web.Application:
    """The service: ``/predict`` and ``/health``, the pipeline opened in ``cleanup_ctx``.

    Args:
        model: the classifier (default: a new ``Classifier()``, made in the block's setup).
        batch: the model block's batching (default ``af.Batch(16, 0.005)``).
    """
    app = web.Application()
    app[STOPPING] = asyncio.Event()
    pipe = pipeline(model, batch=batch)
    # Prometheus metrics at /aioflow/metrics and the live dashboard at /aioflow/, served by
    # this app itself (the routes read the pipeline's current run at each request).
    add_routes(app, pipe, prefix="/aioflow")

    async def pipeline_ctx(app: web.Application) -> AsyncIterator[None]:
        async with pipe.open() as running:  # every setup() ran: the model is loaded
            app[RUNNING] = running
            yield
            # Shutdown: the server stopped accepting and answered the requests in flight;
            # leaving the block drains what is left and releases the model.

    async def on_shutdown(app: web.Application) -> None:
        app[STOPPING].set()

    app.cleanup_ctx.append(pipeline_ctx)
    app.on_shutdown.append(on_shutdown)
    app.router.add_post("/predict", predict)
    app.router.add_get("/health", health)
    return app


async def predict(request: web.Request) -> web.Response:
    """``POST /predict``: classify one image."""
    try:
        if request.content_type == "application/json":
            payload = await request.json()
            if not isinstance(payload, dict) or "image" not in payload:
                raise ValueError('expected a JSON object {"image": [...]}')
            image = decode_image(pixels=payload["image"])
        else:
            image = decode_image(await request.read())
    except ValueError as exc:  # json.JSONDecodeError included
        return web.json_response({"error": str(exc)}, status=400)
    try:
        answer = await request.app[RUNNING].submit(image)
    except (af.PipelineClosed, af.ItemDropped) as exc:
        return web.json_response({"error": str(exc)}, status=503)
    except af.BlockError as exc:
        return web.json_response({"error": str(exc)}, status=500)
    return web.json_response(answer)


async def health(request: web.Request) -> web.Response:
    """``GET /health``: ready or not, and a summary of the pipeline's statistics."""
    running = request.app[RUNNING]
    ready = not running.closed and not request.app[STOPPING].is_set()
    blocks = {
        name: {
            "received": rec.received,
            "completed": rec.completed,
            "failed": rec.failed,
            "in_flight": rec.in_flight,
            "queue_depth": rec.queue_depth,
            "batches": rec.batches,
            "mean_batch_size": round(rec.mean_batch_size, 3),
            "latency_p50_s": rec.latency_p50_s,
            "latency_p99_s": rec.latency_p99_s,
        }
        for name, rec in running.statistics().items()
    }
    return web.json_response({"ready": ready, "blocks": blocks}, status=200 if ready else 503)


# -- running it -------------------------------------------------------------------------------


async def serve(port: int) -> None:
    """Serve on 127.0.0.1 until SIGINT or SIGTERM, then shut down gracefully."""
    runner = web.AppRunner(make_app(), handle_signals=False, shutdown_timeout=10.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    print(
        f"serving on http://127.0.0.1:{port} (POST /predict, GET /health, dashboard at "
        "/aioflow/); Ctrl-C stops"
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
        print("stopping: answering the requests in flight, then draining the pipeline")
    finally:
        # Stops accepting, waits for the handlers in flight (up to shutdown_timeout), then
        # runs cleanup_ctx: the pipeline drains and the model is released.
        await runner.cleanup()
    print("stopped")


@contextlib.asynccontextmanager
async def started(app: web.Application) -> AsyncIterator[tuple[web.AppRunner, str]]:
    """Run ``app`` on a free port of 127.0.0.1; yield the runner and the base URL."""
    runner = web.AppRunner(app, shutdown_timeout=10.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        yield runner, f"http://127.0.0.1:{port}"
    finally:
        if runner.server is not None:  # not shut down yet
            await runner.cleanup()


async def selftest(n: int = 400) -> bool:
    """Serve on a free port, send ``n`` concurrent requests, check every answer, then check
    that a shutdown with requests in flight answers them all. True if all went well."""
    model = Classifier()
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(n, *SHAPE), dtype=np.uint8)
    expected = model.predict(images)
    model.calls = 0
    ok = True
    app = make_app(model)
    async with started(app) as (runner, base), aiohttp.ClientSession() as client:

        async def ask(i: int) -> tuple[int, Any, float]:
            t0 = time.perf_counter()
            if i % 2:
                resp = await client.post(f"{base}/predict", json={"image": images[i].tolist()})
            else:
                resp = await client.post(f"{base}/predict", data=images[i].tobytes())
            async with resp:
                return resp.status, await resp.json(), time.perf_counter() - t0

        t0 = time.perf_counter()
        results = await asyncio.gather(*(ask(i) for i in range(n)))
        elapsed = time.perf_counter() - t0
        wrong = [
            i for i, (status, body, _) in enumerate(results) if (status, body) != (200, expected[i])
        ]
        latencies = sorted(r[2] for r in results)
        async with client.get(f"{base}/health") as resp:
            health_body = await resp.json()
        cls = health_body["blocks"]["classify"]
        print(
            f"{n} concurrent requests in {elapsed:.2f} s ({n / elapsed:.0f} req/s), "
            f"latency p50 {statistics.median(latencies) * 1e3:.1f} ms, "
            f"p99 {latencies[int(0.99 * (n - 1))] * 1e3:.1f} ms"
        )
        print(
            f"model calls: {model.calls} for {n} images "
            f"(mean batch {cls['mean_batch_size']}); wrong answers: {len(wrong)}"
        )
        ok &= not wrong and cls["completed"] == n and cls["mean_batch_size"] > 1

        bad = await client.post(f"{base}/predict", data=b"too short")
        print("a malformed image gets", bad.status, (await bad.json())["error"])
        ok &= bad.status == 400

        # Graceful shutdown: requests in flight when it begins still get their answers.
        in_flight = [asyncio.create_task(ask(i)) for i in range(100)]
        running = app[RUNNING]
        while running.statistics()["classify"].received < n + 100:  # noqa: ASYNC110 - polls a count
            await asyncio.sleep(0.001)
        await runner.cleanup()  # stop accepting, answer those in flight, drain
        late = await asyncio.gather(*in_flight)
        answered = sum(
            1 for i, (status, body, _) in enumerate(late) if (status, body) == (200, expected[i])
        )
        print(f"shutdown with 100 requests in flight: {answered} answered correctly")
        ok &= answered == 100 and running.closed
    print("selftest", "passed" if ok else "FAILED")
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8080, help="port on 127.0.0.1 (default 8080)")
    parser.add_argument(
        "--selftest", action="store_true", help="serve on a free port, send requests, exit"
    )
    args = parser.parse_args()
    if args.selftest:
        sys.exit(0 if af.run(selftest()) else 1)
    af.run(serve(args.port))


if __name__ == "__main__":
    main()
