"""Quickstart: a realistic multi-step pipeline.

Simulated cameras produce frames; each frame goes through
  fetch (IO, async, 4 in flight)  ->  blur (CPU, numpy in a 2-thread pool)
  ->  Motion (stateful: compares each camera's frame to that camera's previous one)
  ->  alert (async generator: emits only frames with motion)

and the script prints the alerts, the speed-up over a plain sequential loop, and per-block
statistics. Run it with `make demo` or `python examples/quickstart.py`.

The pipeline (`pipe`) and its items (`refs`) are module-level names, so the command line can
load them from the repository's root folder:

    python -m aioflow graph examples.quickstart:pipe --format mermaid
    python -m aioflow run examples.quickstart:pipe --items examples.quickstart:refs --dashboard
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np

import aioflow as af

CAMERAS = 3
FRAMES_PER_CAMERA = 40
IO_DELAY = 0.004  # a network round trip


def make_frame(camera: int, index: int) -> np.ndarray:
    """A 120x160 grey frame with a bright square that moves every 8th frame."""
    rng = np.random.default_rng(camera)  # static sensor noise per camera
    frame = rng.integers(0, 20, size=(120, 160), dtype=np.uint8)
    x = 10 + 12 * (index // 8)
    frame[40:60, x : x + 20] = 250
    return frame


@af.block(workers=4)
async def fetch(ref: tuple[int, int]) -> dict[str, Any]:
    """IO step: pretend to download the frame."""
    camera, index = ref
    await asyncio.sleep(IO_DELAY)
    return {"camera": camera, "index": index, "image": make_frame(camera, index)}


@af.block(workers=2)
def blur(item: dict[str, Any]) -> dict[str, Any]:
    """CPU step in threads: a 5x5 box blur (numpy releases the GIL)."""
    img = item["image"].astype(np.float32)
    k = 5
    padded = np.pad(img, k // 2, mode="edge")
    acc = np.zeros_like(img)
    for dy in range(k):
        for dx in range(k):
            acc += padded[dy : dy + img.shape[0], dx : dx + img.shape[1]]
    return {**item, "image": acc / (k * k)}


class Motion(af.Block):
    """Stateful step: the mean absolute difference to the camera's previous frame."""

    async def setup(self) -> None:
        self.previous: dict[int, np.ndarray] = {}

    async def process(self, item: dict[str, Any]) -> dict[str, Any]:
        prev = self.previous.get(item["camera"])
        self.previous[item["camera"]] = item["image"]
        score = 0.0 if prev is None else float(np.abs(item["image"] - prev).mean())
        return {"camera": item["camera"], "index": item["index"], "motion": score}

    async def teardown(self) -> None:
        self.previous.clear()


@af.block
async def alert(item: dict[str, Any]):  # type: ignore[no-untyped-def]
    """Filter: only frames with motion go on."""
    if item["motion"] > 1.0:
        yield item


def refs() -> list[tuple[int, int]]:
    """The frames to fetch: (camera, index) for every camera, interleaved."""
    return [(c, i) for i in range(FRAMES_PER_CAMERA) for c in range(CAMERAS)]


pipe = af.Pipeline(fetch, blur, Motion(name="motion"), alert, name="quickstart")


async def sequential() -> list[dict[str, Any]]:
    motion = Motion(name="motion_seq")
    await motion.setup()
    out = []
    for ref in refs():
        item = await fetch(ref)
        item = blur(item)
        item = await motion.process(item)
        async for a in alert(item):
            out.append(a)
    return out


async def main() -> None:
    t0 = time.perf_counter()
    alerts = await pipe.run(refs())
    t_pipe = time.perf_counter() - t0

    t0 = time.perf_counter()
    expected = await sequential()
    t_seq = time.perf_counter() - t0
    assert alerts == expected, "the pipeline must give what the sequential loop gives"

    n = len(refs())
    print(f"{n} frames from {CAMERAS} cameras, {len(alerts)} motion alerts")
    for a in alerts[:6]:
        print(f"  camera {a['camera']} frame {a['index']:2d}: motion {a['motion']:.1f}")
    print(
        f"pipeline: {t_pipe:.2f} s ({n / t_pipe:.0f} frames/s); "
        f"sequential loop: {t_seq:.2f} s; speed-up {t_seq / t_pipe:.1f}x"
    )
    print(
        f"{'block':10} {'received':>8} {'emitted':>8} {'filtered':>8} {'busy s':>7} {'p50 ms':>7}"
    )
    for name, rec in pipe.statistics().items():
        print(
            f"{name:10} {rec.received:8d} {rec.emitted:8d} {rec.filtered:8d} "
            f"{rec.busy_s:7.3f} {rec.latency_p50_s * 1e3:7.2f}"
        )
    print("bottleneck:", pipe.bottleneck())


if __name__ == "__main__":
    af.run(main())
