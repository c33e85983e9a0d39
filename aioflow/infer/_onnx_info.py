"""What a model looks like from outside: its inputs, outputs, dtypes, shapes and batch axis.

Public names are re-exported by :mod:`aioflow.infer.onnx` and carry that module's name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np

__all__ = ["Dim", "ModelInfo", "TensorSpec"]

#: One dimension of a declared shape: a size, a symbolic name (``"batch"``), or None (unknown).
Dim = int | str | None

_NO_VERSION: Final = 2**63 - 1  # what onnxruntime reports for a model without a version

# onnxruntime type strings -> numpy dtypes (tensor types numpy cannot hold are left out: no check)
_INTS = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")
_DTYPES: Final[dict[str, np.dtype[Any]]] = {
    f"tensor({name})": np.dtype(dtype)
    for name, dtype in (
        *((n, n) for n in _INTS),
        ("float", "float32"),
        ("float16", "float16"),
        ("double", "float64"),
        ("bool", "bool"),
    )
}


# -- model description ------------------------------------------------------------------------


def _is_free(dim: Dim) -> bool:
    """A dimension whose size the model does not fix (symbolic, unknown, or negative)."""
    return not isinstance(dim, int) or dim < 0


def _dim_text(dim: Dim) -> str:
    if isinstance(dim, str):
        return dim
    if dim is None or dim < 0:
        return "?"
    return str(dim)


def _dims(shape: Sequence[Dim]) -> str:
    return f"[{', '.join(map(_dim_text, shape))}]"


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One input or output of a model, as declared in the model.

    Attributes:
        name: the input's or output's name.
        type: onnxruntime's type string (``"tensor(float)"``, ``"seq(map(int64,tensor(float)))"``).
        dtype: the numpy dtype of a tensor, or None (not a tensor, or no numpy equivalent).
        shape: the declared dimensions, batch axis included: ints for fixed sizes, names for
            symbolic ones (``"batch"``, ``"W"``), None for unknown ones.

    >>> spec = TensorSpec("images", "tensor(float)", np.dtype("float32"), ("batch", 3, "H", "W"))
    >>> str(spec)
    'images: float32 [batch, 3, H, W]'
    """

    name: str
    type: str
    dtype: np.dtype[Any] | None
    shape: tuple[Dim, ...]

    @property
    def is_tensor(self) -> bool:
        """Whether this is a tensor (not a sequence or a map)."""
        return self.type.startswith("tensor(")

    def __str__(self) -> str:
        dtype = self.dtype.name if self.dtype is not None else self.type
        return f"{self.name}: {dtype} {_dims(self.shape)}"


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What a model declares: its inputs and outputs (in order) and its metadata.

    Attributes:
        inputs: name -> :class:`TensorSpec`, in the model's order.
        outputs: name -> :class:`TensorSpec`, in the model's order.
        metadata: the model's custom metadata (``metadata_props``: class labels, strides, ...).
        producer: the tool that wrote the model (``"pytorch"``), or "".
        graph_name: the graph's name, or "".
        description: the model's doc string, or "".
        version: the model's version, or None when it has none.
    """

    inputs: Mapping[str, TensorSpec]
    outputs: Mapping[str, TensorSpec]
    metadata: Mapping[str, str] = field(default_factory=dict)
    producer: str = ""
    graph_name: str = ""
    description: str = ""
    version: int | None = None


def _specs(args: Sequence[Any]) -> dict[str, TensorSpec]:
    specs: dict[str, TensorSpec] = {}
    for arg in args:
        shape = tuple(d if isinstance(d, int | str) else None for d in (arg.shape or ()))
        specs[arg.name] = TensorSpec(arg.name, arg.type, _DTYPES.get(arg.type), shape)
    return specs


def _read_info(session: Any) -> ModelInfo:
    meta = session.get_modelmeta()
    version = meta.version
    return ModelInfo(
        inputs=_specs(session.get_inputs()),
        outputs=_specs(session.get_outputs()),
        metadata=dict(meta.custom_metadata_map),
        producer=meta.producer_name,
        graph_name=meta.graph_name,
        description=meta.description,
        version=version if isinstance(version, int) and 0 <= version < _NO_VERSION else None,
    )


@dataclass(frozen=True, slots=True)
class _Layout:
    """How items map onto the model's inputs and outputs (decided at setup)."""

    batch_axis: bool  # items lack the first dimension; aioflow adds it
    max_batch: int | None  # most items per call: None (any), or 1 (item by item)
    split: tuple[bool, ...]  # per selected output: has the batch axis, to split per item
    why_single: str  # with max_batch == 1: why the model cannot take several items


def _layout(info: ModelInfo, outputs: Sequence[str]) -> _Layout:
    """Decide the batch axis. The first dimension of every input is the batch axis when it is
    free (symbolic or unknown) or 1. A free batch axis takes any number of items; a fixed one of
    1 takes them one at a time. Selected outputs with the batch axis (first dimension free, or 1
    on a fixed-batch model) are split per item; the others are returned whole, which also means
    one item per call."""
    inputs = list(info.inputs.values())
    lacking = [s for s in inputs if not (s.shape and (_is_free(s.shape[0]) or s.shape[0] == 1))]
    if lacking:
        why = f"input {lacking[0].name!r} {_dims(lacking[0].shape)} has no batch axis"
        return _Layout(False, 1, tuple(False for _ in outputs), why)
    free = all(_is_free(s.shape[0]) for s in inputs)
    split = []
    for name in outputs:
        spec = info.outputs[name]
        first = spec.shape[0] if spec.shape and spec.is_tensor else 0
        split.append(_is_free(first) if free else first == 1)
    if not free:
        one = next(s for s in inputs if s.shape[0] == 1)
        why = f"input {one.name!r} {_dims(one.shape)} has a fixed batch size of 1"
        return _Layout(True, 1, tuple(split), why)
    whole = [info.outputs[n] for n, s in zip(outputs, split, strict=True) if not s]
    if whole:
        why = f"output {whole[0].name!r} {_dims(whole[0].shape)} has no batch axis to split"
        return _Layout(True, 1, tuple(split), why)
    return _Layout(True, None, tuple(split), "")


for _public in (TensorSpec, ModelInfo):
    _public.__module__ = "aioflow.infer.onnx"
