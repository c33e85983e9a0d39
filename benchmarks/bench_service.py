"""The service example under load: one shared pipeline with dynamic batching against a naive
handler that runs the same model once per request.

- ``pipeline``: ``examples/service.py`` as it is: each handler ``await running.submit(image)``,
  and the model block batches concurrent requests (``af.Batch(max_size=16, max_wait=0.005)``).
- ``naive``: the same model, same decoding, one call per request in a thread
  (``await asyncio.to_thread(model.predict, image[None])``), which is what a handler without a
  pipeline does.

Each server runs in a process of its own, on uvloop, on 127.0.0.1; the load generator is another
process: an aiohttp client holding ``--concurrency`` connections, each sending the next request
as soon as the last is answered, until ``--requests`` answers or ``--duration`` seconds. It
checks every answer against the model's own output for that image. The two servers alternate,
``--reps`` times, and we report medians.

    python benchmarks/bench_service.py                   # 64 connections, 3000 requests, 3 reps
    python benchmarks/bench_service.py --quick           # 1000 requests, 1 rep
    python benchmarks/bench_service.py --json out.json   # also save the figures
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

import aiohttp  # noqa: E402
import numpy as np  # noqa: E402
import service  # noqa: E402
from aiohttp import web  # noqa: E402

import aioflow as af  # noqa: E402

MODES = ("pipeline", "naive")
DISTINCT_IMAGES = 64


# -- the servers ------------------------------------------------------------------------------


def make_naive_app() -> web.Application:
    """The same service without a pipeline: the model runs once per request, in a thread."""
    model = service.Classifier()

    async def predict(request: web.Request) -> web.Response:
        try:
            image = service.decode_image(await request.read())
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        answers = await asyncio.to_thread(model.predict, image[None])
        return web.json_response(answers[0])

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"ready": True, "calls": model.calls})

    app = web.Application()
    app.router.add_post("/predict", predict)
    app.router.add_get("/health", health)
    return app


async def serve(mode: str) -> None:
    """Serve ``mode`` on a free port; print the port; stop on SIGINT/SIGTERM."""
    app = service.make_app() if mode == "pipeline" else make_naive_app()
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"PORT {runner.addresses[0][1]}", flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


# -- the load generator -----------------------------------------------------------------------


async def load(base: str, concurrency: int, requests: int, duration: float) -> dict[str, Any]:
    """Send requests over ``concurrency`` connections; return throughput and latencies."""
    images = np.random.default_rng(0).integers(
        0, 256, size=(DISTINCT_IMAGES, *service.SHAPE), dtype=np.uint8
    )
    expected = service.Classifier(overhead=0.0).predict(images)
    bodies = [img.tobytes() for img in images]
    latencies: list[float] = []
    errors = 0
    sent = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as client:
        # Warm up: connections open, the model's first calls made.
        for i in range(concurrency):
            async with client.post(f"{base}/predict", data=bodies[i % DISTINCT_IMAGES]) as r:
                await r.read()
        async with client.get(f"{base}/health") as r:
            before = await r.json()
        deadline = time.perf_counter() + duration

        async def worker() -> None:
            nonlocal errors, sent
            while sent < requests and time.perf_counter() < deadline:
                i = sent % DISTINCT_IMAGES
                sent += 1
                t0 = time.perf_counter()
                async with client.post(f"{base}/predict", data=bodies[i]) as resp:
                    body = await resp.json()
                    ok = resp.status == 200 and body == expected[i]
                latencies.append(time.perf_counter() - t0)
                errors += not ok

        t0 = time.perf_counter()
        async with asyncio.TaskGroup() as tg:
            for _ in range(concurrency):
                tg.create_task(worker())
        elapsed = time.perf_counter() - t0
        async with client.get(f"{base}/health") as r:
            after = await r.json()
    latencies.sort()
    result: dict[str, Any] = {
        "requests": len(latencies),
        "errors": errors,
        "elapsed_s": elapsed,
        "rps": len(latencies) / elapsed,
        "p50_ms": statistics.median(latencies) * 1e3,
        "p99_ms": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] * 1e3,
    }
    if "blocks" in after:
        cls_after, cls_before = after["blocks"]["classify"], before["blocks"]["classify"]
        images_done = cls_after["completed"] - cls_before["completed"]
        calls = cls_after["batches"] - cls_before["batches"]
        result["model_calls"] = calls
        result["mean_batch"] = images_done / calls if calls else 0.0
    else:
        result["model_calls"] = after["calls"] - before["calls"]
        result["mean_batch"] = 1.0
    return result


# -- the driver -------------------------------------------------------------------------------


def run_once(mode: str, args: argparse.Namespace) -> dict[str, Any]:
    """Start the ``mode`` server, load it from another process, stop it; the load's figures."""
    me = [sys.executable, str(Path(__file__).resolve())]
    server = subprocess.Popen(
        [*me, "--serve", mode], stdout=subprocess.PIPE, text=True, cwd=ROOT, env=os.environ
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        if not line.startswith("PORT "):
            msg = f"the {mode} server did not start: {line!r}"
            raise RuntimeError(msg)
        base = f"http://127.0.0.1:{int(line.split()[1])}"
        proc = subprocess.run(
            [
                *me,
                "--load",
                base,
                "--concurrency",
                str(args.concurrency),
                "--requests",
                str(args.requests),
                "--duration",
                str(args.duration),
            ],
            capture_output=True,
            text=True,
            timeout=args.duration + 120,
            check=True,
        )
        result: dict[str, Any] = json.loads(proc.stdout)
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    if result["errors"]:
        msg = f"{mode}: {result['errors']} wrong or failed answers"
        raise AssertionError(msg)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=64, help="connections (default 64)")
    parser.add_argument("--requests", type=int, default=3000, help="per run (default 3000)")
    parser.add_argument("--duration", type=float, default=20.0, help="longest run, seconds")
    parser.add_argument("--reps", type=int, default=3, help="alternating runs of each (3)")
    parser.add_argument("--quick", action="store_true", help="1000 requests, 1 rep")
    parser.add_argument("--json", help="write the results to this file")
    parser.add_argument("--serve", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--load", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        af.run(serve(args.serve))
        return
    if args.load:
        result = af.run(load(args.load, args.concurrency, args.requests, args.duration))
        print(json.dumps(result))
        return
    if args.quick:
        args.requests, args.reps = 1000, 1

    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    print(
        f"{args.concurrency} connections, up to {args.requests} requests or {args.duration:g} s "
        f"per run, {args.reps} alternating runs each; model overhead "
        f"{service.CALL_OVERHEAD_S * 1e3:g} ms per call"
    )
    print(f"{'run':>4} {'server':9} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'batch':>6}")
    for rep in range(args.reps):
        order = MODES if rep % 2 == 0 else MODES[::-1]
        for mode in order:
            r = run_once(mode, args)
            runs[mode].append(r)
            print(
                f"{rep + 1:4d} {mode:9} {r['rps']:8.0f} {r['p50_ms']:8.1f} {r['p99_ms']:8.1f} "
                f"{r['mean_batch']:6.1f}"
            )
    summary: dict[str, dict[str, float]] = {}
    for mode in MODES:
        summary[mode] = {
            key: statistics.median(r[key] for r in runs[mode])
            for key in ("rps", "p50_ms", "p99_ms", "mean_batch")
        }
    p, n = summary["pipeline"], summary["naive"]
    print("medians:")
    for mode in MODES:
        s = summary[mode]
        print(
            f"  {mode:9} {s['rps']:8.0f} req/s  p50 {s['p50_ms']:6.1f} ms  "
            f"p99 {s['p99_ms']:6.1f} ms  mean batch {s['mean_batch']:.1f}"
        )
    print(
        f"pipeline/naive: {p['rps'] / n['rps']:.1f}x the throughput, "
        f"p50 latency {n['p50_ms'] / p['p50_ms']:.1f}x lower"
    )
    if args.json:
        import uvloop

        meta = {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "aioflow": af.__version__,
            "aiohttp": aiohttp.__version__,
            "numpy": np.__version__,
            "uvloop": getattr(uvloop, "__version__", "?"),
            "date": time.strftime("%Y-%m-%d"),
            "concurrency": args.concurrency,
            "requests": args.requests,
            "duration_s": args.duration,
            "reps": args.reps,
            "model_overhead_s": service.CALL_OVERHEAD_S,
        }
        with open(args.json, "w") as fh:
            json.dump({"meta": meta, "summary": summary, "runs": runs}, fh, indent=2)


if __name__ == "__main__":
    main()
