"""Video frames through a worker as JPEG (``MsgpackCodec(frames="jpeg")``, ``--frames jpeg``):
real redis-server, real worker process, real OpenCV."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import redis_pipelines as rp
from conftest import Workers

from aioflow.io.video import Frame
from aioflow.transport.codec import MsgpackCodec
from aioflow.transport.redis import RedisTransport

pytestmark = pytest.mark.integration


def _frames(n: int) -> list[Frame]:
    frames = []
    for i in range(n):
        image = np.zeros((360, 640, 3), np.uint8)
        image[:] = (40 + 3 * i, 90, 160)
        cv2.rectangle(image, (50 + 10 * i, 60), (250 + 10 * i, 200), (0, 220, 255), -1)
        cv2.putText(image, f"CAM {i:02d}", (300, 300), 0, 1.5, (255, 255, 255), 3)
        frames.append(Frame(image, "cam", i, i / 25, {"fps": 25.0}))
    return frames


async def test_frames_go_through_a_worker_as_jpeg_and_come_back_close_in_order(
    redis_url: str, redis_prefix: str, workers: Workers
) -> None:
    workers.start("framepipe", "brighten", extra=("--frames", "jpeg", "--jpeg-quality", "90"))
    frames = _frames(12)
    expected = [np.clip(f.image.astype(np.int16) + 10, 0, 255).astype(np.uint8) for f in frames]
    for codec in (MsgpackCodec(), MsgpackCodec(frames="jpeg", jpeg_quality=90)):
        transport = RedisTransport(redis_url, prefix=redis_prefix, codec=codec)
        outputs = await rp.framepipe.run(frames, transport=transport)
        assert [(f.stream, f.index, f.meta) for f in outputs] == [
            ("cam", i, {"fps": 25.0}) for i in range(12)
        ]
        for out, want in zip(outputs, expected, strict=True):
            assert out.image.shape == want.shape
            assert out.image.dtype == np.uint8
            assert cv2.PSNR(out.image, want) > 35.0
        # The worker wrote its outputs as JPEG (--frames jpeg), even to a raw caller: lossy.
        assert not all(np.array_equal(o.image, w) for o, w in zip(outputs, expected, strict=True))


def test_a_worker_given_a_bad_jpeg_quality_exits_2_naming_it(workers: Workers) -> None:
    proc = workers.start(
        "framepipe", "brighten", extra=("--frames", "jpeg", "--jpeg-quality", "200")
    )
    assert proc.wait(timeout=30) == 2
    assert "jpeg_quality must be an int from 0 to 100, got 200" in workers.output(proc)
