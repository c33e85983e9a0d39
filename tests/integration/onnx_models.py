"""Small ONNX models for the tests and benchmarks, built with the ``onnx`` helper API.

Every builder writes a model to ``path`` and returns the path; weights come from a seeded
generator, so a model is the same on every run. Nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

Dims = Sequence[int | str | None]

#: An opset and IR version every onnxruntime of the last years runs.
OPSET = 17
IR_VERSION = 8


def _save(
    path: Path,
    nodes: list[onnx.NodeProto],
    inputs: list[onnx.ValueInfoProto],
    outputs: list[onnx.ValueInfoProto],
    weights: Mapping[str, np.ndarray],
    metadata: Mapping[str, str] | None = None,
) -> Path:
    initializers = [numpy_helper.from_array(value, name) for name, value in weights.items()]
    graph = helper.make_graph(nodes, path.stem, inputs, outputs, initializers)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="aioflow-tests"
    )
    model.ir_version = IR_VERSION
    if metadata:
        helper.set_model_props(model, dict(metadata))
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


def _float(name: str, dims: Dims) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(dims))


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def mlp(
    path: Path,
    *,
    features: int = 8,
    hidden: int = 4,
    batch: int | str = "batch",
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """``y = relu(x @ w + b)``: input ``x`` [batch, features], output ``y`` [batch, hidden].

    ``batch`` is the first dimension: a name (dynamic) or a fixed size."""
    rng = _rng(1)
    weights = {
        "w": rng.standard_normal((features, hidden)).astype(np.float32),
        "b": rng.standard_normal(hidden).astype(np.float32),
    }
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["xw"]),
        helper.make_node("Add", ["xw", "b"], ["pre"]),
        helper.make_node("Relu", ["pre"], ["y"]),
    ]
    return _save(
        path,
        nodes,
        [_float("x", [batch, features])],
        [_float("y", [batch, hidden])],
        weights,
        metadata,
    )


def conv(
    path: Path,
    *,
    channels: int = 3,
    height: int | str = 8,
    width: int | str = "W",
    layers: int = 1,
    filters: int = 4,
) -> Path:
    """``layers`` 3x3 convolutions with ReLU (padding 1): input ``images`` [batch, channels,
    height, width], output ``features`` [batch, filters, height, width]. A name for ``height``
    or ``width`` makes it free."""
    rng = _rng(2)
    nodes = []
    weights: dict[str, np.ndarray] = {}
    previous, depth = "images", channels
    for layer in range(layers):
        w, b, out = f"w{layer}", f"b{layer}", f"conv{layer}"
        scale = 1.0 / np.sqrt(9 * depth)
        weights[w] = (rng.standard_normal((filters, depth, 3, 3)) * scale).astype(np.float32)
        weights[b] = (rng.standard_normal(filters) * 0.1).astype(np.float32)
        nodes.append(helper.make_node("Conv", [previous, w, b], [out], pads=[1, 1, 1, 1]))
        relu = "features" if layer == layers - 1 else f"relu{layer}"
        nodes.append(helper.make_node("Relu", [out], [relu]))
        previous, depth = relu, filters
    return _save(
        path,
        nodes,
        [_float("images", ["batch", channels, height, width])],
        [_float("features", ["batch", filters, height, width])],
        weights,
    )


def two_in_two_out(path: Path) -> Path:
    """Inputs ``a`` [batch, 4] float32 and ``b`` [batch, 4] float32; outputs ``sum`` = a + b and
    ``scaled`` = (a * b) @ w [batch, 2]."""
    weights = {"w": _rng(3).standard_normal((4, 2)).astype(np.float32)}
    nodes = [
        helper.make_node("Add", ["a", "b"], ["sum"]),
        helper.make_node("Mul", ["a", "b"], ["prod"]),
        helper.make_node("MatMul", ["prod", "w"], ["scaled"]),
    ]
    return _save(
        path,
        nodes,
        [_float("a", ["batch", 4]), _float("b", ["batch", 4])],
        [_float("sum", ["batch", 4]), _float("scaled", ["batch", 2])],
        weights,
    )
