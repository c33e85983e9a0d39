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

On a GPU (onnxruntime-gpu installed in place of onnxruntime, see docs/onnx.md), ``--providers
cuda`` runs both sides on the CUDA execution provider, each with and without IO binding
(``session.io_binding()`` / ``OnnxModel(io_binding=...)``), for batch sizes 1 to 32:

    python benchmarks/bench_onnx.py --providers cuda --json benchmarks/results/onnx_cuda.json

It exits with status 2 and says why when CUDA is not there or the session would not run on it
(onnxruntime-gpu silently falls back to the CPU when its CUDA libraries cannot load).
``--io-binding`` adds the bound variants on the CPU too (the same code path as on CUDA, with
the device ``cpu``), which is how the CUDA path is exercised on a machine without a GPU.
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

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
#: --providers -> (onnxruntime providers, the device IO binding uses)
PROVIDERS: dict[str, tuple[list[str], str]] = {"cpu": ([CPU], "cpu"), "cuda": ([CUDA, CPU], "cuda")}
BATCHES = {"cpu": (1, 8), "cuda": (1, 2, 4, 8, 16, 32)}


class Unavailable(Exception):
    """The provider asked for cannot run here."""


def check_provider(kind: str, path: Path) -> None:
    """Raise :class:`Unavailable` unless a session on ``kind`` really runs there."""
    if kind != "cuda":
        return
    available = ort.get_available_providers()
    if CUDA not in available:
        msg = (
            f"CUDAExecutionProvider is not available (onnxruntime {ort.__version__} has "
            f"{', '.join(available)}): install onnxruntime-gpu in place of onnxruntime "
            "(pip uninstall onnxruntime; pip install 'aioflow[gpu]'), on a machine with a GPU"
        )
        raise Unavailable(msg)
    session = ort.InferenceSession(str(path), providers=PROVIDERS["cuda"][0])
    if session.get_providers()[0] != CUDA:
        msg = (
            "onnxruntime-gpu is installed but the session runs on "
            f"{session.get_providers()[0]}: its CUDA libraries (CUDA, cuDNN) cannot be loaded"
        )
        raise Unavailable(msg)


def clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def since(start: tuple[float, float]) -> tuple[float, float]:
    wall, cpu = clock()
    return wall - start[0], cpu - start[1]


def direct(
    path: Path, items: list[np.ndarray], batch: int, *, kind: str = "cpu", bind: bool = False
) -> Measured:
    """What a hand-written loop does: stack ``batch`` items, run; bound: the inputs copied to
    the device once, the outputs allocated there and copied back."""
    start = clock()
    providers, device = PROVIDERS[kind]
    options = OnnxModel.default_session_options()
    session = ort.InferenceSession(str(path), options, providers=providers)
    name = session.get_inputs()[0].name
    out_names = [o.name for o in session.get_outputs()]
    outputs: list[Any] = []
    for first in range(0, len(items), batch):
        group = items[first : first + batch]
        x = group[0][np.newaxis] if batch == 1 else np.stack(group)
        if bind:
            binding = session.io_binding()
            binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(x, device, 0))
            for out in out_names:
                binding.bind_output(out, device, 0)
            session.run_with_iobinding(binding)
            y = binding.copy_outputs_to_cpu()[0]
        else:
            (y,) = session.run(None, {name: x})
        outputs.extend(y)
    return outputs, *since(start)


def with_aioflow(
    runner: asyncio.Runner,
    path: Path,
    items: list[np.ndarray],
    batch: int,
    *,
    kind: str = "cpu",
    bind: bool | None = None,
) -> Measured:
    """On ``runner``'s loop: one event loop for every aioflow run, as in a service, so that the
    loop's own start and close stay out of the timings (``asyncio.Runner.run`` also spends
    ~10 ms on leaving when the result holds arrays: it builds a repr of the main task)."""

    async def timed_run() -> Measured:
        start = clock()
        opts = af.Batch(batch, 0.002) if batch > 1 else None
        model = OnnxModel(path, batch=opts, providers=PROVIDERS[kind][0], io_binding=bind)
        pipe = af.Pipeline(model)
        outputs = await pipe.run(items)
        if model.providers_used[0] != PROVIDERS[kind][0][0]:
            msg = f"OnnxModel ran on {model.providers_used[0]}, not {PROVIDERS[kind][0][0]}"
            raise AssertionError(msg)
        return outputs, *since(start)

    return runner.run(timed_run())


def variants(runner: asyncio.Runner, kind: str, io_binding: bool) -> list[tuple[str, Variant]]:
    """(name, variant): ``direct`` and ``aioflow`` on ``kind``, unbound; with ``io_binding``,
    ``direct bound`` and ``aioflow bound`` too. On CUDA, ``aioflow`` is ``io_binding=False``
    (OnnxModel binds by default there)."""
    out: list[tuple[str, Variant]] = [
        ("direct", functools.partial(direct, kind=kind, bind=False)),
        ("aioflow", functools.partial(with_aioflow, runner, kind=kind, bind=False)),
    ]
    if io_binding:
        out += [
            ("direct bound", functools.partial(direct, kind=kind, bind=True)),
            ("aioflow bound", functools.partial(with_aioflow, runner, kind=kind, bind=True)),
        ]
    return out


def measure(
    path: Path, items: list[np.ndarray], *, kind: str, io_binding: bool, batches: tuple[int, ...],
    reps: int,
) -> dict[str, Any]:  # fmt: skip
    rates: dict[str, list[float]] = {}
    paired: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}
    n = len(items)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        sides = variants(runner, kind, io_binding)
        for rep in range(reps + 1):  # the first repetition warms up, is not counted
            for batch in batches:
                turn = sides if rep % 2 == 0 else sides[::-1]  # alternate who goes first
                runs = {side: fn(path, items, batch) for side, fn in turn}
                expected = runs["direct"][0]
                for side, (got, _, _) in runs.items():
                    if len(got) != n:
                        msg = f"{side}: {len(got)} outputs for {n} items"
                        raise AssertionError(msg)
                    if rep == 0:
                        for a, b in zip(got[:16], expected[:16], strict=True):
                            np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)
                if rep == 0:
                    continue
                key = f"b={batch}"
                for side, (_, wall, cpu_s) in runs.items():
                    rates.setdefault(f"{side} {key}", []).append(n / wall)
                    cpu.setdefault(f"{side} {key}", []).append(cpu_s / n)
                for bound in ("", " bound"):
                    if f"aioflow{bound}" in runs:
                        ratio = runs[f"direct{bound}"][1] / runs[f"aioflow{bound}"][1]
                        paired.setdefault(f"{key}{bound}", []).append(ratio)
    return {
        "items_per_s": {k: statistics.median(v) for k, v in rates.items()},
        "ratio": {k: statistics.median(v) for k, v in paired.items()},
        "cpu_ms_per_item": {k: 1000 * statistics.median(v) for k, v in cpu.items()},
        "runs": rates,
        "ratios": paired,
    }


def print_results(res: dict[str, Any], batches: tuple[int, ...], header: str) -> None:
    print(header)
    med, ratios = res["items_per_s"], res["ratio"]
    for bound in ("", " bound"):
        if f"b={batches[0]}{bound}" not in ratios:
            continue
        for batch in batches:
            key = f"b={batch}{bound}"
            d, a = med[f"direct{bound} b={batch}"], med[f"aioflow{bound} b={batch}"]
            spread = ", ".join(f"{r:.3f}" for r in sorted(res["ratios"][key]))
            label = f"batch {batch}{bound}:"
            print(
                f"  {label:18} direct {d:8.1f}   aioflow {a:8.1f}   "
                f"ratio {ratios[key]:5.3f} (per repetition: {spread})"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--model", choices=["conv", "ocr"], default="conv")
    parser.add_argument("--providers", choices=sorted(PROVIDERS), default="cpu")
    parser.add_argument(
        "--io-binding",
        action="store_true",
        help="also the IO-bound variants (always on with --providers cuda)",
    )
    parser.add_argument("--batches", help="comma-separated batch sizes (cpu: 1,8; cuda: 1..32)")
    parser.add_argument("--items", type=int, default=400)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--json", help="write the results to this file")
    args = parser.parse_args()
    kind = args.providers
    io_binding = args.io_binding or kind == "cuda"
    batches = tuple(int(b) for b in args.batches.split(",")) if args.batches else BATCHES[kind]
    with tempfile.TemporaryDirectory() as tmp:
        if args.model == "ocr":
            path, shape = ocr_model()
        else:
            path, shape = conv_model(Path(tmp) / "conv.onnx")
        try:
            check_provider(kind, path)
        except Unavailable as exc:
            print(f"bench_onnx.py --providers {kind}: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
        rng = np.random.default_rng(1)
        items = [rng.random(shape, dtype=np.float32) for _ in range(args.items)]
        res = measure(
            path, items, kind=kind, io_binding=io_binding, batches=batches, reps=args.reps
        )
    threads = OnnxModel.default_session_options().intra_op_num_threads
    print_results(
        res,
        batches,
        f"model {args.model} {shape} on {kind}, {args.items} items, {threads} intra-op threads, "
        f"medians of {args.reps} repetitions (items/s); load average {os.getloadavg()[0]:.2f}",
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
            "providers": kind,
            "batches": list(batches),
            "item_shape": list(shape),
            "items": args.items,
            **res,
        }
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)


if __name__ == "__main__":
    main()
