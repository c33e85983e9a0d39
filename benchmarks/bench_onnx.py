"""OnnxModel in a pipeline against calling onnxruntime directly.

Both sides use the same model, the same session options
(``OnnxModel.default_session_options()``: one intra-op thread per usable CPU, no spinning), the
same batch size and the same inputs:

* direct: one ``InferenceSession``; for each group of ``batch`` items, ``np.stack`` them and
  ``session.run`` (what a hand-written loop does);
* aioflow: ``af.Pipeline(OnnxModel(path, batch=af.Batch(batch, max_wait)))`` run on the same
  items (for batch 1: no ``batch=`` at all, item by item).

Each timing includes opening the session, on both sides; the aioflow runs share one event loop
(as in a service), whose start and close are not timed. Within each repetition the variants run
back to back (direct, then aioflow, for each batch size), so a change in the machine's load hits
both; the medians of the rates and of the per-repetition ratios aioflow / direct are reported
(target: ratio >= 0.95). The first repetition warms up, checks that both sides give the same
outputs, and is not counted.

Models: ``conv`` (default), a few 3x3 convolutions on 3x64x64 built here with the ``onnx``
helper API; ``ocr``, the PP-OCR recognition model shipped in the ``rapidocr`` wheel (input
[N, 3, 48, W] float32), when it is installed.

    python benchmarks/bench_onnx.py [--model conv|ocr] [--items 400] [--reps 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import uvloop

import aioflow as af
from aioflow.infer.onnx import OnnxModel


def conv_model(path: Path, *, layers: int = 4, filters: int = 48) -> tuple[Path, tuple[int, ...]]:
    """``layers`` 3x3 convolutions with ReLU on [batch, 3, 64, 64]; returns (path, item shape)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, weights = [], []
    previous, depth = "images", 3
    for layer in range(layers):
        w = (rng.standard_normal((filters, depth, 3, 3)) / np.sqrt(9 * depth)).astype(np.float32)
        weights += [numpy_helper.from_array(w, f"w{layer}")]
        weights += [numpy_helper.from_array(np.zeros(filters, np.float32), f"b{layer}")]
        out = "features" if layer == layers - 1 else f"relu{layer}"
        nodes.append(
            helper.make_node(
                "Conv", [previous, f"w{layer}", f"b{layer}"], [f"c{layer}"], pads=[1] * 4
            )
        )
        nodes.append(helper.make_node("Relu", [f"c{layer}"], [out]))
        previous, depth = out, filters
    graph = helper.make_graph(
        nodes,
        "bench_conv",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, 64, 64])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", filters, 64, 64])],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path, (3, 64, 64)


def ocr_model() -> tuple[Path, tuple[int, ...]]:
    import importlib.resources

    resource = importlib.resources.files("rapidocr") / "models" / "PP-OCRv6_rec_small.onnx"
    return Path(str(resource)), (3, 48, 160)


#: A variant's outputs, wall seconds and CPU seconds (every thread of this process).
Measured = tuple[list[Any], float, float]
Variant = Callable[[Path, list[np.ndarray], int], Measured]


def clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def since(start: tuple[float, float]) -> tuple[float, float]:
    wall, cpu = clock()
    return wall - start[0], cpu - start[1]


def direct(path: Path, items: list[np.ndarray], batch: int) -> Measured:
    start = clock()
    options = OnnxModel.default_session_options()
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    outputs: list[Any] = []
    for first in range(0, len(items), batch):
        group = items[first : first + batch]
        x = group[0][np.newaxis] if batch == 1 else np.stack(group)
        (y,) = session.run(None, {name: x})
        outputs.extend(y)
    return outputs, *since(start)


def with_aioflow(
    runner: asyncio.Runner, path: Path, items: list[np.ndarray], batch: int
) -> Measured:
    """On ``runner``'s loop: one event loop for every aioflow run, as in a service, so that the
    loop's own start and close stay out of the timings (``asyncio.Runner.run`` also spends
    ~10 ms on leaving when the result holds arrays: it builds a repr of the main task)."""

    async def timed_run() -> Measured:
        start = clock()
        opts = af.Batch(batch, 0.002) if batch > 1 else None
        pipe = af.Pipeline(OnnxModel(path, batch=opts, providers=["CPUExecutionProvider"]))
        outputs = await pipe.run(items)
        return outputs, *since(start)

    return runner.run(timed_run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["conv", "ocr"], default="conv")
    parser.add_argument("--items", type=int, default=400)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--json", help="write the results to this file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.model == "ocr":
            path, shape = ocr_model()
        else:
            path, shape = conv_model(Path(tmp) / "conv.onnx")
        rng = np.random.default_rng(1)
        items = [rng.random(shape, dtype=np.float32) for _ in range(args.items)]
        rates: dict[str, list[float]] = {}
        paired: dict[str, list[float]] = {}
        cpu: dict[str, list[float]] = {}
        n = len(items)
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            sides: list[tuple[str, Variant]] = [
                ("direct", direct),
                ("aioflow", functools.partial(with_aioflow, runner)),
            ]
            for rep in range(args.reps + 1):  # the first repetition warms up, is not counted
                for batch in (1, 8):
                    turn = sides if rep % 2 == 0 else sides[::-1]  # alternate who goes first
                    runs = {side: fn(path, items, batch) for side, fn in turn}
                    expected, direct_wall, direct_cpu = runs["direct"]
                    got, flow_wall, flow_cpu = runs["aioflow"]
                    if len(got) != n or len(expected) != n:
                        msg = f"{len(got)} and {len(expected)} outputs for {n} items"
                        raise AssertionError(msg)
                    if rep == 0:
                        for a, b in zip(got[:16], expected[:16], strict=True):
                            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
                        continue
                    key = f"b={batch}"
                    rates.setdefault(f"direct {key}", []).append(n / direct_wall)
                    rates.setdefault(f"aioflow {key}", []).append(n / flow_wall)
                    paired.setdefault(key, []).append(direct_wall / flow_wall)
                    cpu.setdefault(f"direct {key}", []).append(direct_cpu / n)
                    cpu.setdefault(f"aioflow {key}", []).append(flow_cpu / n)
    med = {k: statistics.median(v) for k, v in rates.items()}
    ratios = {k: statistics.median(v) for k, v in paired.items()}
    cpu_ms = {k: 1000 * statistics.median(v) for k, v in cpu.items()}
    threads = OnnxModel.default_session_options().intra_op_num_threads
    print(
        f"model {args.model} {shape}, {args.items} items, {threads} intra-op threads, "
        f"medians of {args.reps} repetitions (items/s); load average {os.getloadavg()[0]:.2f}"
    )
    for batch in (1, 8):
        d, a = med[f"direct b={batch}"], med[f"aioflow b={batch}"]
        spread = ", ".join(f"{r:.3f}" for r in sorted(paired[f"b={batch}"]))
        print(
            f"  batch {batch}: direct {d:8.1f}   aioflow {a:8.1f}   "
            f"ratio {ratios[f'b={batch}']:5.3f} (per repetition: {spread})"
        )
        print(
            f"           CPU per item: direct {cpu_ms[f'direct b={batch}']:.3f} ms   "
            f"aioflow {cpu_ms[f'aioflow b={batch}']:.3f} ms"
        )
    if args.json:
        meta = {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "intra_op_num_threads": threads,
            "load_average": os.getloadavg(),
            "numpy": np.__version__,
            "onnxruntime": ort.__version__,
            "aioflow": af.__version__,
            "date": time.strftime("%Y-%m-%d"),
        }
        result = {
            "meta": meta,
            "model": args.model,
            "item_shape": list(shape),
            "items": args.items,
            "items_per_s": med,
            "ratio": ratios,
            "runs": rates,
            "ratios": paired,
            "cpu_ms_per_item": cpu_ms,
        }
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)


if __name__ == "__main__":
    main()
