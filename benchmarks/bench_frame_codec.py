"""Bytes and codec time per video frame on the wire: raw against JPEG (``MsgpackCodec(frames=)``).

    python benchmarks/bench_frame_codec.py [--size 1280x720] [--frames 40]

The frames are the flagship demo's (``examples/gates/synth.py``, 640x360 BGR) scaled to
``--size``, so the picture is the demo's; a camera's own frames have more fine detail and noise,
which JPEG keeps fewer bytes of. Prints, per codec, the median bytes of one encoded
``aioflow.io.video.Frame``, the median encode and decode times, and the PSNR of the decoded image
against the original (dB; 99 stands for identical).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from aioflow.io.video import Frame
from aioflow.transport.codec import MsgpackCodec
from examples.gates import synth


def frames(size: tuple[int, int], count: int) -> list[np.ndarray]:
    with tempfile.TemporaryDirectory() as tmp:
        videos, _, _ = synth.make_dataset(Path(tmp), cameras=1, seconds=count / synth.FPS, seed=7)
        cap = cv2.VideoCapture(str(next(iter(videos.values()))))
        images = []
        while True:
            ok, image = cap.read()
            if not ok:
                break
            images.append(cv2.resize(image, size, interpolation=cv2.INTER_LINEAR))
        cap.release()
    return images


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--frames", type=int, default=40)
    args = parser.parse_args()
    width, height = (int(n) for n in args.size.split("x"))
    images = frames((width, height), args.frames)
    codecs = [MsgpackCodec()] + [MsgpackCodec(frames="jpeg", jpeg_quality=q) for q in (95, 90, 75)]
    print(f"{len(images)} frames of {width}x{height}")
    print(f"{'codec':<50} {'bytes':>9} {'encode ms':>10} {'decode ms':>10} {'PSNR dB':>8}")
    for codec in codecs:
        sizes, enc, dec, psnr = [], [], [], []
        for i, image in enumerate(images):
            frame = Frame(image, "cam0", i, i / synth.FPS, {"fps": float(synth.FPS)})
            t0 = time.perf_counter()
            data = codec.encode(frame)
            t1 = time.perf_counter()
            back = codec.decode(data)
            t2 = time.perf_counter()
            sizes.append(len(data))
            enc.append(t1 - t0)
            dec.append(t2 - t1)
            psnr.append(min(99.0, cv2.PSNR(back.image, image)))
        print(
            f"{codec!r:<50} {statistics.median(sizes):>9,.0f} "
            f"{statistics.median(enc) * 1e3:>10.2f} {statistics.median(dec) * 1e3:>10.2f} "
            f"{statistics.median(psnr):>8.1f}"
        )


if __name__ == "__main__":
    main()
