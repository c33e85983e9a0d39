"""Gate cameras, distributed: the flagship pipeline with its models in worker processes.

One command: starts a throwaway ``redis-server`` on a free loopback port (unless ``--redis URL``
names one), starts one worker process per segment of ``app.SEGMENTS``
(``python -m aioflow worker examples.distributed.app:pipeline --blocks ...``), generates the
demo's clips, runs the caller (decoding and ``prepare`` at the start, the tracker and the events
at the end: ``app.LOCAL``) and prints what ``make demo`` prints. The workers and the server are
stopped however the run ends (SIGTERM, then SIGKILL after a grace period).

    python examples/distributed/run.py [--redis redis://host:6379/0] [--cameras 3] [--seconds 10]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parents[2])

try:
    import redis
except ImportError:  # the [redis] extra is missing (make demo's .venv has only [cv,onnx])
    sys.stderr.write(
        "examples/distributed/run.py needs the redis extra: "
        ".venv/bin/pip install -e '.[redis]' (make test's .venv has it)\n"
    )
    raise SystemExit(2) from None

import aioflow as af
from aioflow.io import video
from aioflow.transport.codec import MsgpackCodec
from aioflow.transport.redis import RedisTransport
from examples.distributed import app
from examples.gates import app as gates
from examples.gates import plates, synth
from examples.gates import run as demo

ROOT = Path(__file__).resolve().parents[2]
#: seconds a process gets to exit after SIGTERM before it is killed
GRACE = 10.0
#: seconds the workers get to start (import onnxruntime, load the models, reach Redis)
START_TIMEOUT = 120.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop(proc: subprocess.Popen[bytes], what: str) -> None:
    """SIGTERM, wait up to ``GRACE`` seconds, then SIGKILL; always reaps the process."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(GRACE)
        except subprocess.TimeoutExpired:
            print(
                f"{what} (pid {proc.pid}) ignored SIGTERM for {GRACE:g} s: killed", file=sys.stderr
            )
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def redis_server(url: str | None) -> Iterator[str]:
    """``url``, or a throwaway redis-server on a free loopback port (no persistence)."""
    if url is not None:
        yield url
        return
    binary = shutil.which("redis-server")
    if binary is None:
        msg = "redis-server is not installed (apt install redis-server), and no --redis URL given"
        raise SystemExit(msg)
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="aioflow-redis-") as folder:
        proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                folder,
            ],
            stdout=subprocess.DEVNULL,
        )
        try:
            url = f"redis://127.0.0.1:{port}/0"
            client = redis.Redis.from_url(url)
            deadline = time.monotonic() + 10
            while True:
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        msg = f"redis-server did not start on port {port}"
                        raise SystemExit(msg) from None
                    time.sleep(0.05)
            client.close()
            print(f"redis-server on {url} (pid {proc.pid})", flush=True)
            yield url
        finally:
            stop(proc, "redis-server")


@contextlib.contextmanager
def workers(
    url: str,
    prefix: str,
    env: dict[str, str],
    codec_args: tuple[str, ...] = (),
    per_segment: int = 1,
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``per_segment`` worker processes per segment, ready (publishing their books) when this
    yields."""
    procs: list[subprocess.Popen[bytes]] = []
    pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, **env, "PYTHONPATH": pythonpath}
    try:
        for segment in [s for s in app.SEGMENTS for _ in range(per_segment)]:
            cmd = [
                sys.executable, "-m", "aioflow", "worker", "examples.distributed.app:pipeline",
                "--redis", url, "--blocks", ",".join(segment), "--prefix", prefix, *codec_args,
            ]  # fmt: skip
            procs.append(subprocess.Popen(cmd, env=env, cwd=ROOT))
            print(f"worker {','.join(segment)} (pid {procs[-1].pid})", flush=True)
        wait_ready(url, prefix, procs)
        print(f"{len(procs)} workers ready", flush=True)
        yield procs
    finally:
        for proc in procs:
            stop(proc, "worker")
        client = redis.Redis.from_url(url)
        with contextlib.suppress(redis.RedisError):
            keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
            if keys:
                client.delete(*keys)
        client.close()


def wait_ready(url: str, prefix: str, procs: list[subprocess.Popen[bytes]]) -> None:
    """Until every worker has published its books; SystemExit if one exits first."""
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + START_TIMEOUT
    try:
        while len(list(client.scan_iter(match=f"{prefix}:*:stats:*"))) < len(procs):
            for proc in procs:
                if proc.poll() is not None:
                    msg = f"worker pid {proc.pid} exited with status {proc.returncode}"
                    raise SystemExit(msg)
            if time.monotonic() > deadline:
                msg = f"the workers did not start within {START_TIMEOUT:g} s"
                raise SystemExit(msg)
            time.sleep(0.1)
    finally:
        client.close()


async def run_caller(
    url: str, prefix: str, videos: dict[str, str], out: Path,
    formats: tuple[plates.PlateFormat, ...], truth: dict[str, list[str]], webhook_delay: float,
    codec: MsgpackCodec | None = None,
) -> demo.Result:  # fmt: skip
    """The caller's side: the pipeline of ``app`` with the transport; the rest as the demo's."""
    runner, webhook, received = await demo.serve_webhook(webhook_delay)
    summary = gates.Summary()
    try:
        pipe = gates.build(out=out, webhook=webhook, formats=formats, summary=summary)
        transport = RedisTransport(url, local=app.LOCAL, prefix=prefix, codec=codec)
        source = video.video_source(videos)
        t0 = time.perf_counter()
        answers = await pipe.run(source, transport=transport)
        wall = time.perf_counter() - t0
    finally:
        await runner.cleanup()
    stats = pipe.statistics()
    return demo.Result(
        stats["prepare"].received, wall, stats, summary, received, truth, len(answers),
        pipe.bottleneck(),
    )  # fmt: skip


def _terminate(signum: int, frame: FrameType | None) -> None:
    # Once: a second SIGTERM must not cut the stopping of the workers and the server short.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise SystemExit(128 + signum)


def main(args: argparse.Namespace) -> int:
    if args.workers < 1:
        raise SystemExit(f"run.py: error: --workers must be at least 1, got {args.workers}")
    out = Path(args.out)
    print(
        f"generating {args.cameras} cameras x {args.seconds:g} s at {synth.FPS} fps, "
        f"level {args.level} ..."
    )
    videos, _, drawn = synth.make_dataset(
        out, cameras=args.cameras, seconds=args.seconds, level=args.level, seed=args.seed
    )
    truth = json.loads((out / "truth.json").read_text())
    env = {app.ENV_OUT: str(out.resolve()), app.ENV_FORMATS: ",".join(drawn)}
    os.environ.update(env)  # the caller builds the workers' pipeline: the same graph hash
    prefix = f"aioflow-gates-{uuid.uuid4().hex[:8]}"
    signal.signal(signal.SIGTERM, _terminate)  # stop the workers and the server on SIGTERM too
    # Frames on the wire: raw (lossless, the default) or JPEG, the same on every side.
    codec = MsgpackCodec(frames=args.frames, jpeg_quality=args.jpeg_quality)
    codec_args = ("--frames", args.frames, "--jpeg-quality", str(args.jpeg_quality))
    with redis_server(args.redis) as url, workers(url, prefix, env, codec_args, args.workers):
        result = af.run(
            run_caller(
                url, prefix, {cam: str(p) for cam, p in videos.items()}, out.resolve(),
                plates.parse_formats(",".join(drawn)), truth, args.webhook_delay, codec,
            )
        )  # fmt: skip
    demo.report(result)
    print(f"annotated videos: {out / 'annotated'}")
    score = result.score
    if score is None:
        return 1
    return 0 if score.correct / max(score.shown, 1) >= args.min_accuracy else 1


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--redis", help="a Redis server's URL (default: start a throwaway one)")
    p.add_argument("--cameras", type=int, default=3)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--level", choices=list(synth.LEVELS), default="medium")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--out", default="out/distributed")
    p.add_argument("--webhook-delay", type=float, default=0.05)
    p.add_argument("--min-accuracy", type=float, default=0.8)
    p.add_argument(
        "--frames",
        choices=["raw", "jpeg"],
        default="raw",
        help="frames on the wire: raw (lossless, default) or jpeg (about 10x fewer bytes)",
    )
    p.add_argument("--jpeg-quality", type=int, default=90)
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes per segment (default 1; a keyed segment shares its partitions)",
    )
    return p


if __name__ == "__main__":
    raise SystemExit(main(parser().parse_args()))
