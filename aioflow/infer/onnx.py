"""ONNX models as pipeline blocks, run by onnxruntime.

:class:`OnnxModel` is an :class:`af.Block <aioflow.Block>` that loads an ONNX model in ``setup``
and runs it on each item in the block's own thread (one device, one thread by default). An item
is one sample *without* the batch axis: an array for a single-input model, a dict
``name -> array`` for several inputs. Its output is likewise one sample: an array for a
single-output model, a dict for several. With ``batch=af.Batch(...)`` the block stacks items along
the model's batch axis, runs them in one call and splits the outputs back, so the blocks around it
see no difference.

Install with ``pip install aioflow[onnx]`` (CPU) or ``pip install aioflow[gpu]`` (CUDA,
onnxruntime-gpu); never both in one environment.

>>> import numpy as np, aioflow as af
>>> from aioflow.infer.onnx import OnnxModel
>>> model = OnnxModel("classifier.onnx", batch=af.Batch(8, 0.005))  # doctest: +SKIP
>>> af.run(af.Pipeline(model).run([np.zeros((3, 32, 32), np.float32)]))  # doctest: +SKIP
[array([...], dtype=float32)]
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import os
import queue
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, cast

import numpy as np

import aioflow as af

try:
    # By name: onnxruntime ships no type information, so the module is typed as Any here.
    ort: Any = importlib.import_module("onnxruntime")
except ImportError as exc:
    _msg = (
        "aioflow.infer.onnx needs onnxruntime: pip install aioflow[onnx] (CPU), or "
        "pip install aioflow[gpu] (CUDA, onnxruntime-gpu); never both in one environment"
    )
    raise ImportError(_msg, name="onnxruntime") from exc

from ._onnx_info import Dim, ModelInfo, TensorSpec, _dim_text, _dims, _is_free, _layout, _read_info

__all__ = ["Dim", "ModelInfo", "OnnxModel", "TensorSpec"]

logger = logging.getLogger("aioflow")

_CPU: Final = "CPUExecutionProvider"
_CUDA: Final = "CUDAExecutionProvider"

ProviderList = Sequence[str | tuple[str, Mapping[str, Any]]]


# -- the block --------------------------------------------------------------------------------


class OnnxModel(af.Block):
    """An ONNX model as a pipeline block, run by onnxruntime in the block's own thread.

    The model file is only checked at construction; each run loads it in ``setup`` (one
    ``InferenceSession`` per worker, in the block's thread so the event loop stays free) and
    frees it in ``teardown``.

    Items and outputs are single samples without the batch axis: an array for a single-input
    model (or a dict ``{name: array}``), a dict ``name -> array`` for several inputs; the output is
    an array for a single output, a dict ``name -> array`` for several. Each item is checked
    against the model's inputs (names, dtype, rank and fixed sizes; no implicit cast): a wrong
    item fails with a ``ValueError`` naming the block, the input, what was expected and what was
    found, which the pipeline handles per ``on_error``.

    The *batch axis* is the first dimension of every input when it is free (``"batch"``, unknown)
    or 1; aioflow adds it to each item and removes it from each output. A model whose inputs'
    first dimension is fixed to another size has no batch axis: an item is then the whole input,
    and outputs come whole.

    Batching (``batch=af.Batch(max_size, max_wait)``): items with equal shapes are stacked and
    run in one call; a batch holding several shapes (a free width) runs one call per shape, so
    results are exact, with no padding. A model that takes one item per call (fixed batch size 1,
    no batch axis, or an output without one) runs the batch's items one by one, and setup logs
    this once. As for any batched block, ``on_error`` applies to a whole batch: one bad item fails
    (or skips) the other items of its batch too.

    Args:
        path: the ``.onnx`` file, or the serialized model as ``bytes``.
        batch: ``af.Batch(max_size, max_wait)`` to stack items into one call (default: none).
        providers: ``"auto"`` (CUDA when it really works, else CPU), or onnxruntime's list of
            execution providers, names or ``(name, options)`` pairs, honoured as given, such as
            ``["CPUExecutionProvider"]`` or ``[("CUDAExecutionProvider", {"device_id": 1})]``.
        workers: items run at once (default 1); each worker has its own session.
        intra_op_num_threads: onnxruntime's threads per session (default: the CPUs this
            process may use, divided by ``workers``; see :meth:`default_session_options`).
        output_names: the outputs to compute: one name (the output is then an array) or a list
            of names (a dict); default: every output.
        session_options: an ``onnxruntime.SessionOptions`` to start from (its thread count is
            overridden only when ``intra_op_num_threads`` is given).
        io_binding: bind inputs and outputs to the device with ``io_binding()``; default (None):
            when CUDA runs the model.
        select: take the model's input from a richer item: a key (``"tensor"`` for a dict
            item or an attribute) or a callable item -> input. An item whose selection is None
            passes through untouched (it is not sent to the model). With ``select`` the block
            emits ``merge``'s result instead of the bare output.
        merge: put the output back into the item: a key (a new dict with that key added, or a
            dataclass copy with that field replaced; default ``"output"``) or a callable
            ``(item, output) -> new item``.
        **options: block options (``name``, ``queue_size``, ``on_error``, ``timeout``, ...).

    Attributes:
        path: the model's path (a :class:`~pathlib.Path`), or its bytes.
        providers_used: the execution providers of the loaded session, in precedence order
            (``("CPUExecutionProvider",)``); empty before the first setup.

    Raises:
        GraphError: the model file does not exist, or an option has a bad value (an execution
            provider that this onnxruntime lacks, ...).

    ``inputs``, ``outputs`` and ``metadata`` describe the model once it is loaded;
    :meth:`inspect` reads them without a pipeline.

    >>> import aioflow as af
    >>> model = OnnxModel("detect.onnx", batch=af.Batch(8, 0.005), name="det")  # doctest: +SKIP
    >>> boxes = af.run(af.Pipeline(model).run(frames))  # doctest: +SKIP
    >>> model.providers_used  # doctest: +SKIP
    ('CPUExecutionProvider',)
    """

    path: Path | bytes
    providers_used: tuple[str, ...]

    def __init__(
        self,
        path: str | os.PathLike[str] | bytes,
        *,
        batch: af.Batch | None = None,
        providers: str | ProviderList = "auto",
        workers: int | None = None,
        intra_op_num_threads: int | None = None,
        output_names: str | Sequence[str] | None = None,
        session_options: Any = None,
        io_binding: bool | None = None,
        select: str | Callable[[Any], Any] | None = None,
        merge: str | Callable[[Any, Any], Any] | None = None,
        **options: Any,
    ) -> None:
        # Only what is given: a subclass may set `batch` or `workers` as class attributes.
        if batch is not None:
            options["batch"] = batch
        if workers is not None:
            options["workers"] = workers
        super().__init__(**options)
        name = self.block_name

        def bad(option: str, expected: str, found: object) -> af.GraphError:
            return af.GraphError(
                f"block {name!r}: option {option!r} must be {expected}, got {found!r}"
            )

        self.path = _check_path(name, path)
        self._providers = _check_providers(name, providers)
        if intra_op_num_threads is not None and (
            isinstance(intra_op_num_threads, bool)
            or not isinstance(intra_op_num_threads, int)
            or intra_op_num_threads < 1
        ):
            raise bad("intra_op_num_threads", "None or an int >= 1", intra_op_num_threads)
        self._threads = intra_op_num_threads
        self._single_output = isinstance(output_names, str)
        if output_names is None:
            self._wanted: tuple[str, ...] | None = None
        elif isinstance(output_names, str):
            self._wanted = (output_names,)
        elif (
            isinstance(output_names, Sequence)
            and output_names
            and all(isinstance(n, str) for n in output_names)
            and len(set(output_names)) == len(output_names)
        ):
            self._wanted = tuple(output_names)
        else:
            raise bad("output_names", "None, a name, or a list of distinct names", output_names)
        if session_options is not None and not isinstance(session_options, ort.SessionOptions):
            raise bad("session_options", "None or an onnxruntime.SessionOptions", session_options)
        self._session_options = session_options
        if io_binding is not None and not isinstance(io_binding, bool):
            raise bad("io_binding", "None, True or False", io_binding)
        self._io_binding = io_binding
        self._batched = self.options.batch is not None
        self._select = _selector(name, select)
        self._merge = _merger(name, merge, select)
        self.providers_used = ()
        self._info: ModelInfo | None = None
        self._sessions: queue.SimpleQueue[Any] | None = None

    # -- what the model declares ---------------------------------------------------------------

    @staticmethod
    def inspect(path: str | os.PathLike[str] | bytes) -> ModelInfo:
        """Read a model's inputs, outputs and metadata without running a pipeline.

        It loads the model on the CPU (without optimizing it), so call it from a thread in
        async code when the model is large.

        Raises:
            GraphError: the file does not exist.
            RuntimeError: onnxruntime cannot load the model.

        >>> info = OnnxModel.inspect("detector.onnx")  # doctest: +SKIP
        >>> [str(spec) for spec in info.inputs.values()]  # doctest: +SKIP
        ['images: float32 [batch, 3, 640, 640]']
        """
        source = _check_path("OnnxModel.inspect", path)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        options.intra_op_num_threads = 1
        return _read_info(_open(source, options, [_CPU], "OnnxModel.inspect"))

    @staticmethod
    def default_session_options(
        *, workers: int = 1, intra_op_num_threads: int | None = None
    ) -> Any:
        """The ``onnxruntime.SessionOptions`` an OnnxModel uses unless given its own.

        ``intra_op_num_threads`` defaults to the CPUs this process may use divided by
        ``workers``, and the intra-op threads do not spin while they wait for work
        (``session.intra_op.allow_spinning = 0``): onnxruntime's default keeps them busy-waiting
        for a while after each run, taking the CPUs that the event loop and the pipeline's other
        blocks need between two calls. Use it to compare with direct onnxruntime calls, or as
        a start for ``session_options=``.

        >>> OnnxModel.default_session_options(intra_op_num_threads=2).intra_op_num_threads
        2
        """
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_num_threads or max(1, _usable_cpus() // workers)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return options

    @property
    def info(self) -> ModelInfo:
        """The loaded model's :class:`ModelInfo` (after setup; it stays after the run).

        Raises:
            RuntimeError: the model was not loaded yet (use :meth:`inspect` before a run).
        """
        if self._info is None:
            msg = (
                f"block {self.block_name!r}: the model is loaded when its pipeline starts; "
                "use OnnxModel.inspect(path) to read it before"
            )
            raise RuntimeError(msg)
        return self._info

    @property
    def inputs(self) -> Mapping[str, TensorSpec]:
        """The model's inputs, name -> :class:`TensorSpec` (after setup)."""
        return self.info.inputs

    @property
    def outputs(self) -> Mapping[str, TensorSpec]:
        """The model's outputs, name -> :class:`TensorSpec` (after setup)."""
        return self.info.outputs

    @property
    def metadata(self) -> Mapping[str, str]:
        """The model's custom metadata (``metadata_props``) (after setup)."""
        return self.info.metadata

    # -- lifecycle -----------------------------------------------------------------------------

    # A plain def on purpose: the runner calls it in the block's thread, so loading a model
    # (seconds, for a large one) never blocks the event loop. Block types setup as async.
    def setup(self) -> None:
        """Load the model: one session per worker, on the providers chosen (see the class)."""
        name = self.block_name
        workers = self.options.workers
        options = self._make_session_options()
        first, providers = self._open_first(options)
        self.providers_used = tuple(first.get_providers())
        info = _read_info(first)
        self._prepare(info, first)
        logger.info(
            "block %r: loaded %s on %s (%d session(s), %s intra-op threads each)",
            name,
            self._label(),
            ", ".join(self.providers_used),
            workers,
            options.intra_op_num_threads or "default",
            extra={"block": name},
        )
        sessions: queue.SimpleQueue[Any] = queue.SimpleQueue()
        sessions.put(first)
        for _ in range(workers - 1):
            sessions.put(_open(self.path, options, providers, name))
        self._sessions = sessions
        self._info = info

    def teardown(self) -> None:  # in the block's thread, as setup
        """Free the sessions (their memory, on the device too)."""
        self._sessions = None

    def _make_session_options(self) -> Any:
        options = self._session_options
        if options is None:
            return self.default_session_options(
                workers=self.options.workers, intra_op_num_threads=self._threads
            )
        if self._threads is not None:
            options.intra_op_num_threads = self._threads
        return options

    def _open_first(self, options: Any) -> tuple[Any, ProviderList]:
        """The first session, and the providers to open the others with."""
        name = self.block_name
        wanted = self._providers
        if wanted != "auto":
            given = _open(self.path, options, wanted, name)
            first = wanted[0][0] if isinstance(wanted[0], tuple) else wanted[0]
            if first not in given.get_providers():
                logger.warning(
                    "block %r: %s was asked for but onnxruntime runs the model on %s",
                    name,
                    first,
                    ", ".join(given.get_providers()),
                    extra={"block": name},
                )
            return given, wanted
        if _CUDA in ort.get_available_providers():
            # onnxruntime-gpu lists CUDA even where it cannot run (no GPU, no CUDA libraries)
            # and then quietly runs on the CPU: only the session's own providers tell.
            session: Any = None
            try:
                session = _open(self.path, options, [_CUDA, _CPU], name)
            except RuntimeError as exc:
                reason = str(exc)
            else:
                if session.get_providers()[0] == _CUDA:
                    return session, [_CUDA, _CPU]
                reason = "the session fell back to the CPU (no usable GPU or CUDA libraries)"
            logger.warning(
                "block %r: providers='auto': CUDA is installed but unusable: %s; using the CPU",
                name,
                reason,
                extra={"block": name},
            )
            if session is not None:
                return session, [_CPU]
        return _open(self.path, options, [_CPU], name), [_CPU]

    def _prepare(self, info: ModelInfo, first: Any) -> None:
        """Check the model against the options and decide how items map onto it."""
        name = self.block_name
        for spec in info.inputs.values():
            if not spec.is_tensor:
                msg = f"block {name!r}: input {spec.name!r} is {spec.type}; only tensors are fed"
                raise ValueError(msg)
        if self._wanted is None:
            outputs = tuple(info.outputs)
        else:
            unknown = [n for n in self._wanted if n not in info.outputs]
            if unknown:
                msg = (
                    f"block {name!r}: option 'output_names' names {unknown}, which the model "
                    f"lacks; its outputs are {list(info.outputs)}"
                )
                raise ValueError(msg)
            outputs = self._wanted
        self._output_names = list(outputs)
        self._as_array = self._single_output or (self._wanted is None and len(outputs) == 1)
        self._input_names = list(info.inputs)
        self._input_specs = list(info.inputs.values())
        self._layout = layout = _layout(info, outputs)
        batch = self.options.batch
        if batch is not None and batch.max_size > 1 and layout.max_batch == 1:
            logger.warning(
                "block %r: %s, so batch=%r runs its items one by one",
                name,
                layout.why_single,
                batch,
                extra={"block": name},
            )
        self._device = "cpu"
        self._device_id = 0
        if self.providers_used and self.providers_used[0] == _CUDA:
            self._device = "cuda"
            cuda_options = first.get_provider_options().get(_CUDA, {})
            self._device_id = int(cuda_options.get("device_id", 0))
        bind = self._io_binding if self._io_binding is not None else self._device == "cuda"
        # Non-tensor outputs (sequences, maps) cannot be bound to a device.
        self._bind = bind and all(info.outputs[n].is_tensor for n in outputs)

    # -- items ---------------------------------------------------------------------------------

    def process(self, item: Any) -> Any:
        """Run the model on one item, or (with ``batch=``) on a list of items."""
        select = self._select
        if select is None:
            if self._batched:
                return self._run_many(item)
            return self._run_one(item)
        merge = cast(Callable[[Any, Any], Any], self._merge)
        if not self._batched:
            sample = select(item)
            return item if sample is None else merge(item, self._run_one(sample))
        items: list[Any] = item
        results = list(items)  # items that select no input pass through untouched
        samples: list[Any] = []
        chosen: list[int] = []
        for i, one in enumerate(items):
            try:
                sample = select(one)
            except Exception as exc:  # this item fails alone (see _run_many)
                results[i] = exc
                continue
            if sample is not None:
                samples.append(sample)
                chosen.append(i)
        if chosen:
            outputs = self._run_many(samples)
            for i, output in zip(chosen, outputs, strict=True):
                results[i] = output if isinstance(output, Exception) else merge(items[i], output)
        return results

    def _run_one(self, item: Any) -> Any:
        return self._result(self._infer(self._one(self._feeds(item, None)), 1), 0)

    def _run_many(self, items: list[Any]) -> list[Any]:
        """One result per item; an item that does not fit the model gets its ValueError in its
        place (the block fails that item alone) and the others run."""
        layout = self._layout
        results: list[Any] = [None] * len(items)
        samples: dict[int, dict[str, np.ndarray[Any, Any]]] = {}
        for index, item in enumerate(items):
            try:
                samples[index] = self._feeds(item, (index, len(items)))
            except ValueError as exc:
                results[index] = exc
        if not layout.batch_axis:
            for index, sample in samples.items():
                results[index] = self._result(self._infer(sample, 1), 0)
            return results
        # Items stack only with their like: group by shape (a free width varies per item).
        groups: dict[tuple[tuple[int, ...], ...], list[int]] = {}
        for index, sample in samples.items():
            key = tuple(a.shape for a in sample.values())
            groups.setdefault(key, []).append(index)
        step = layout.max_batch
        for indices in groups.values():
            for chunk in _chunks(indices, step or len(indices)):
                if len(chunk) == 1:
                    feeds = self._one(samples[chunk[0]])
                else:
                    names = samples[chunk[0]]
                    feeds = {k: np.stack([samples[i][k] for i in chunk]) for k in names}
                outs = self._infer(feeds, len(chunk))
                for row, index in enumerate(chunk):
                    results[index] = self._result(outs, row)
        return results

    def _one(self, sample: dict[str, np.ndarray[Any, Any]]) -> dict[str, np.ndarray[Any, Any]]:
        """The feeds of a call on one item: the sample with the batch axis added, if any."""
        if not self._layout.batch_axis:
            return sample
        return {name: array[np.newaxis] for name, array in sample.items()}

    def _feeds(self, item: Any, where: tuple[int, int] | None) -> dict[str, np.ndarray[Any, Any]]:
        """The item as input name -> array, checked against the model (a sample: without the
        batch axis when the model has one)."""
        names = self._input_names
        if isinstance(item, Mapping):
            if item.keys() != set(names):
                missing = [n for n in names if n not in item]
                unknown = [k for k in item if k not in names]
                problem = f"missing {missing}" if missing else ""
                if unknown:
                    problem += ("; " if problem else "") + f"unknown {unknown}"
                msg = (
                    f"block {self.block_name!r}{_where(where)}: the item's inputs do not match "
                    f"the model's {names}: {problem}"
                )
                raise ValueError(msg)
            values = [item[n] for n in names]
        elif len(names) == 1:
            values = [item]
        else:
            msg = (
                f"block {self.block_name!r}{_where(where)}: the model takes {len(names)} inputs "
                f"{names}: an item must be a dict name -> array, got {type(item).__name__}"
            )
            raise ValueError(msg)
        feeds: dict[str, np.ndarray[Any, Any]] = {}
        for spec, value in zip(self._input_specs, values, strict=True):
            array = value if isinstance(value, np.ndarray) else np.asarray(value)
            problem = self._mismatch(spec, array)
            if problem:
                msg = (
                    f"block {self.block_name!r}{_where(where)}: input {spec.name!r}: expected "
                    f"{self._expected(spec)}, got {array.dtype} {tuple(array.shape)}: {problem}"
                )
                raise ValueError(msg)
            feeds[spec.name] = array
        return feeds

    def _sample_dims(self, spec: TensorSpec) -> tuple[Dim, ...]:
        return spec.shape[1:] if self._layout.batch_axis else spec.shape

    def _expected(self, spec: TensorSpec) -> str:
        dims = self._sample_dims(spec)
        dtype = spec.dtype.name if spec.dtype is not None else spec.type
        text = f"{dtype} {_dims(dims)} (model dims: {', '.join(map(_dim_text, spec.shape))}"
        if self._layout.batch_axis:
            text += "; one sample, without the batch axis"
        free = [_dim_text(d) for d in dims if _is_free(d)]
        if free:
            text += f"; {', '.join(free)} free"
        return text + ")"

    def _mismatch(self, spec: TensorSpec, array: np.ndarray[Any, Any]) -> str:
        """What is wrong with ``array`` for ``spec``, or ""."""
        dtype = spec.dtype
        if dtype is not None and array.dtype != dtype:
            return f"the dtype differs (no implicit cast: convert with .astype(np.{dtype.name}))"
        if spec.type == "tensor(string)" and array.dtype.kind not in "OUS":
            return "a string tensor is expected"
        dims = self._sample_dims(spec)
        if array.ndim != len(dims):
            text = f"expected {len(dims)} dimension(s), found {array.ndim}"
            if self._layout.batch_axis and array.ndim == len(dims) + 1 and array.shape[0] == 1:
                text += " (an item is one sample without the batch axis: pass x[0])"
            return text
        for axis, (want, got) in enumerate(zip(dims, array.shape, strict=True)):
            if not _is_free(want) and want != got:
                return f"dimension {axis} is {got}, expected {want}"
        return ""

    # -- running -------------------------------------------------------------------------------

    def _infer(self, feeds: dict[str, np.ndarray[Any, Any]], n: int) -> list[Any]:
        """Run the model once on ``n`` items' worth of ``feeds``; check the batch outputs."""
        sessions = self._sessions
        if sessions is None:
            msg = f"block {self.block_name!r}: the model is not loaded (setup has not run)"
            raise RuntimeError(msg)
        session = sessions.get()
        try:
            if self._bind:
                outs = self._run_bound(session, feeds)
            else:
                outs = session.run(self._output_names, feeds)
        except Exception as exc:
            msg = f"block {self.block_name!r}: onnxruntime failed running {self._label()}: {exc}"
            raise RuntimeError(msg) from exc
        finally:
            sessions.put(session)
        if self._layout.batch_axis:
            for name, out, split in zip(self._output_names, outs, self._layout.split, strict=True):
                if split and (not isinstance(out, np.ndarray) or out.ndim == 0 or len(out) != n):
                    found = np.shape(out)
                    msg = (
                        f"block {self.block_name!r}: output {name!r} has shape {found} for a "
                        f"call of {n} item(s): its first dimension "
                        f"({_dim_text(self.info.outputs[name].shape[0])}) is not the batch axis; "
                        "leave it out with output_names=..."
                    )
                    raise ValueError(msg)
        return list(outs)

    def _run_bound(self, session: Any, feeds: dict[str, np.ndarray[Any, Any]]) -> list[Any]:
        """Run with the inputs copied to the device once and the outputs allocated there."""
        device, device_id = self._device, self._device_id
        binding = session.io_binding()
        for name, array in feeds.items():
            value = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array), device, device_id)
            binding.bind_ortvalue_input(name, value)
        for name in self._output_names:
            binding.bind_output(name, device, device_id)
        session.run_with_iobinding(binding)
        return list(binding.copy_outputs_to_cpu())

    def _result(self, outs: list[Any], row: int) -> Any:
        """Item ``row``'s share of the outputs of one call."""
        values = [
            out[row] if split else out for out, split in zip(outs, self._layout.split, strict=True)
        ]
        if self._as_array:
            return values[0]
        return dict(zip(self._output_names, values, strict=True))

    def _label(self) -> str:
        if isinstance(self.path, bytes):
            return f"an ONNX model of {len(self.path)} bytes"
        return str(self.path)

    def __repr__(self) -> str:
        opts = self.options
        return (
            f"<OnnxModel block {opts.name!r} {self._label()} workers={opts.workers} "
            f"batch={opts.batch!r}>"
        )


# -- helpers ----------------------------------------------------------------------------------


def _selector(name: str, select: object) -> Callable[[Any], Any] | None:
    """``select=``: a key (of a dict item, or an attribute) or a callable item -> model input."""
    if select is None:
        return None
    if isinstance(select, str):
        key = select

        def by_key(item: Any) -> Any:
            if isinstance(item, Mapping):
                return item.get(key)
            return getattr(item, key, None)

        return by_key
    if callable(select):
        return cast(Callable[[Any], Any], select)
    msg = f"block {name!r}: option 'select' must be None, a key or a callable, got {select!r}"
    raise af.GraphError(msg)


def _merger(name: str, merge: object, select: object) -> Callable[[Any, Any], Any] | None:
    """``merge=``: a key to store the output under (a new dict, or a copy with the attribute
    replaced) or a callable (item, output) -> new item. Default with ``select``: the key
    ``"output"``."""
    if merge is None and select is None:
        return None
    if merge is None:
        merge = "output"
    if isinstance(merge, str):
        key = merge

        def by_key(item: Any, output: Any) -> Any:
            if isinstance(item, Mapping):
                return {**item, key: output}
            return dataclasses.replace(item, **{key: output})

        return by_key
    if callable(merge):
        return cast(Callable[[Any, Any], Any], merge)
    msg = f"block {name!r}: option 'merge' must be None, a key or a callable, got {merge!r}"
    raise af.GraphError(msg)


def _where(where: tuple[int, int] | None) -> str:
    if where is None:
        return ""
    index, size = where
    return f" (item {index} of a batch of {size})"


def _chunks(indices: list[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(indices), size):
        yield indices[start : start + size]


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _check_path(name: str, path: object) -> Path | bytes:
    who = name if name.startswith("OnnxModel.") else f"block {name!r}"
    if isinstance(path, bytes):
        if not path:
            msg = f"{who}: option 'path' is empty bytes; expected a serialized ONNX model"
            raise af.GraphError(msg)
        return path
    if not isinstance(path, str | os.PathLike):
        msg = (
            f"{who}: option 'path' must be a path to an .onnx file or the model's bytes, "
            f"got {type(path).__name__}"
        )
        raise af.GraphError(msg)
    resolved = Path(os.fspath(path))
    if not resolved.is_file():
        what = "is not a file" if resolved.exists() else "does not exist"
        msg = f"{who}: the ONNX model file {str(resolved)!r} {what}"
        raise af.GraphError(msg)
    return resolved


def _check_providers(name: str, providers: object) -> str | ProviderList:
    if providers == "auto":
        return "auto"
    entries = [providers] if isinstance(providers, str) else providers
    expected = (
        f"block {name!r}: option 'providers' must be 'auto' or a list of execution providers "
        f"(names, or (name, options) pairs), got {providers!r}"
    )
    if not isinstance(entries, Sequence) or not entries:
        raise af.GraphError(expected)
    available = ort.get_available_providers()
    checked: list[str | tuple[str, Mapping[str, Any]]] = []
    for entry in entries:
        if isinstance(entry, str):
            provider = entry
        elif (
            isinstance(entry, tuple)
            and len(entry) == 2
            and isinstance(entry[0], str)
            and isinstance(entry[1], Mapping)
        ):
            provider = entry[0]
        else:
            raise af.GraphError(expected)
        if provider not in available:
            hint = " (CUDA needs pip install aioflow[gpu])" if provider == _CUDA else ""
            msg = (
                f"block {name!r}: option 'providers' names {provider!r}, which this "
                f"onnxruntime does not have{hint}; it has {available}"
            )
            raise af.GraphError(msg)
        checked.append(entry)
    return checked


def _open(source: Path | bytes, options: Any, providers: ProviderList, who: str) -> Any:
    """An InferenceSession, with onnxruntime's errors made plain."""
    model = source if isinstance(source, bytes) else os.fspath(source)
    try:
        # enable_fallback=0: on a provider error onnxruntime would print to stdout and retry on
        # the CPU by itself; aioflow decides and logs that instead (see OnnxModel._open_first).
        return ort.InferenceSession(
            model,
            sess_options=options,
            providers=[(p[0], dict(p[1])) if isinstance(p, tuple) else p for p in providers],
            enable_fallback=0,
        )
    except Exception as exc:
        label = f"{len(source)} bytes" if isinstance(source, bytes) else str(source)
        prefix = who if who.startswith("OnnxModel.") else f"block {who!r}"
        msg = f"{prefix}: onnxruntime cannot load the ONNX model ({label}): {exc}"
        raise RuntimeError(msg) from exc
