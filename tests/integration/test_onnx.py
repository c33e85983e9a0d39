"""``aioflow.infer.onnx.OnnxModel``: real onnxruntime sessions on small models built here.

Every model is built with the ``onnx`` helper API into ``tmp_path`` (see ``onnx_models``), and
every result is compared with a direct ``onnxruntime.InferenceSession.run`` on the same input.
Batches fill without reading the clock: the items are all queued before the block takes its
first, and ``max_wait`` is so long that a batch closes only when it is full or the stream ends.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import numpy as np
import onnx_models
import onnxruntime as ort
import pytest
from conftest import block_errors

import aioflow as af
from aioflow.infer.onnx import ModelInfo, OnnxModel, TensorSpec

pytestmark = pytest.mark.integration

#: A max_wait no test waits out.
LONG = 3600.0
CPU = "CPUExecutionProvider"


# -- helpers ----------------------------------------------------------------------------------


def direct(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The model's outputs for ``feeds`` (batch axis included), straight from onnxruntime."""
    session = ort.InferenceSession(str(path), providers=[CPU])
    return list(session.run(None, feeds))


def direct_one(path: Path, sample: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The outputs of one sample: the batch axis added to each input, removed from each output."""
    return [out[0] for out in direct(path, {k: v[np.newaxis] for k, v in sample.items()})]


def close(actual: Any, expected: Any) -> None:
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)


def images(n: int, width: int = 5, *, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((3, 8, width)).astype(np.float32) for _ in range(n)]


def loads(caplog: pytest.LogCaptureFixture, block: str) -> list[logging.LogRecord]:
    """The "loaded" records of ``block``: one per session opened."""
    return [
        r
        for r in caplog.records
        if r.name == "aioflow" and r.getMessage().startswith(f"block {block!r}: loaded")
    ]


@pytest.fixture
def mlp_path(tmp_path: Path) -> Path:
    return onnx_models.mlp(tmp_path / "mlp.onnx", metadata={"labels": "cat,dog,fox,owl"})


@pytest.fixture
def mlp_bytes(mlp_path: Path) -> bytes:
    return mlp_path.read_bytes()


@pytest.fixture
def conv_path(tmp_path: Path) -> Path:
    return onnx_models.conv(tmp_path / "conv.onnx")


@pytest.fixture
def pair_path(tmp_path: Path) -> Path:
    return onnx_models.two_in_two_out(tmp_path / "pair.onnx")


# -- results ----------------------------------------------------------------------------------


async def test_one_item_gives_what_onnxruntime_gives(mlp_path: Path) -> None:
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal(8).astype(np.float32) for _ in range(5)]
    out = await af.Pipeline(OnnxModel(mlp_path, name="mlp")).run(xs)
    assert len(out) == 5
    for x, y in zip(xs, out, strict=True):
        assert isinstance(y, np.ndarray)
        assert y.shape == (4,)
        close(y, direct_one(mlp_path, {"x": x})[0])


async def test_batched_outputs_equal_item_by_item_outputs(conv_path: Path) -> None:
    xs = images(16)
    model = OnnxModel(conv_path, batch=af.Batch(max_size=8, max_wait=LONG), name="conv")
    pipe = af.Pipeline(model)
    out = await pipe.run(xs)
    rec = pipe.statistics()["conv"]
    assert rec.batches == 2
    assert rec.mean_batch_size == 8
    unbatched = await af.Pipeline(OnnxModel(conv_path, name="conv")).run(xs)
    for x, batched_y, single_y in zip(xs, out, unbatched, strict=True):
        assert batched_y.shape == (4, 8, 5)
        close(batched_y, single_y)
        close(batched_y, direct_one(conv_path, {"images": x})[0])


async def test_a_batch_of_mixed_widths_gives_exact_results(conv_path: Path) -> None:
    widths = [5, 7, 5, 9, 7, 5, 7, 9]
    xs = [images(1, w, seed=i)[0] for i, w in enumerate(widths)]
    pipe = af.Pipeline(OnnxModel(conv_path, batch=af.Batch(8, LONG), name="conv"))
    out = await pipe.run(xs)
    assert pipe.statistics()["conv"].batch_sizes == {8: 1}
    for x, y in zip(xs, out, strict=True):
        assert y.shape == (4, 8, x.shape[-1])
        close(y, direct_one(conv_path, {"images": x})[0])


@pytest.mark.parametrize("batch", [None, af.Batch(4, LONG)], ids=["single", "batched"])
async def test_several_inputs_and_outputs_are_dicts(
    pair_path: Path, batch: af.Batch | None
) -> None:
    rng = np.random.default_rng(1)
    items = [
        {
            "a": rng.standard_normal(4).astype(np.float32),
            "b": rng.standard_normal(4).astype(np.float32),
        }
        for _ in range(6)
    ]
    out = await af.Pipeline(OnnxModel(pair_path, batch=batch, name="pair")).run(items)
    for item, y in zip(items, out, strict=True):
        assert isinstance(y, dict)
        assert list(y) == ["sum", "scaled"]
        assert y["sum"].shape == (4,)
        assert y["scaled"].shape == (2,)
        expected_sum, expected_scaled = direct_one(pair_path, item)
        close(y["sum"], expected_sum)
        close(y["scaled"], expected_scaled)


async def test_output_names_selects_outputs(pair_path: Path) -> None:
    item = {"a": np.ones(4, np.float32), "b": np.full(4, 2, np.float32)}
    one = await af.Pipeline(OnnxModel(pair_path, output_names="scaled")).run([item])
    listed = await af.Pipeline(OnnxModel(pair_path, output_names=["sum"])).run([item])
    _, expected_scaled = direct_one(pair_path, item)
    assert isinstance(one[0], np.ndarray)  # one name: an array
    close(one[0], expected_scaled)
    assert list(listed[0]) == ["sum"]  # a list of names: a dict
    close(listed[0]["sum"], np.full(4, 3, np.float32))


async def test_a_fixed_batch_of_one_runs_item_by_item(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = onnx_models.mlp(tmp_path / "fixed.onnx", batch=1)
    xs = [np.full(8, i, np.float32) for i in range(6)]
    caplog.set_level(logging.INFO, logger="aioflow")
    out = await af.Pipeline(OnnxModel(path, batch=af.Batch(3, LONG), name="fixed")).run(xs)
    for x, y in zip(xs, out, strict=True):
        assert y.shape == (4,)
        close(y, direct_one(path, {"x": x})[0])
    notes = [r.getMessage() for r in caplog.records if "one by one" in r.getMessage()]
    assert len(notes) == 1
    assert "fixed batch size of 1" in notes[0]
    assert "'fixed'" in notes[0]


async def test_a_model_without_batch_axis_takes_whole_inputs(tmp_path: Path) -> None:
    path = onnx_models.mlp(tmp_path / "pairs.onnx", batch=2)  # x: [2, 8], y: [2, 4]
    xs = [np.full((2, 8), i, np.float32) for i in range(3)]
    out = await af.Pipeline(OnnxModel(path, batch=af.Batch(3, LONG))).run(xs)
    for x, y in zip(xs, out, strict=True):
        assert y.shape == (2, 4)
        close(y, direct(path, {"x": x})[0])


async def test_io_binding_gives_the_same_results(conv_path: Path) -> None:
    xs = images(4)
    bound = await af.Pipeline(OnnxModel(conv_path, io_binding=True, batch=af.Batch(4, LONG))).run(
        xs
    )
    for x, y in zip(xs, bound, strict=True):
        close(y, direct_one(conv_path, {"images": x})[0])


async def test_a_model_given_as_bytes(mlp_path: Path, mlp_bytes: bytes) -> None:
    x = np.arange(8, dtype=np.float32)
    out = await af.Pipeline(OnnxModel(mlp_bytes, name="mlp")).run([x])
    close(out[0], direct_one(mlp_path, {"x": x})[0])


async def test_several_workers_keep_order(
    conv_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="aioflow")
    xs = images(12)
    out = await af.Pipeline(OnnxModel(conv_path, workers=2, name="conv")).run(xs)
    for x, y in zip(xs, out, strict=True):
        close(y, direct_one(conv_path, {"images": x})[0])
    assert len(loads(caplog, "conv")) == 1  # one record for both sessions
    assert "2 session(s)" in loads(caplog, "conv")[0].getMessage()


# -- wrong items ------------------------------------------------------------------------------

WRONG: dict[str, tuple[Callable[[], np.ndarray], list[str]]] = {
    "shape": (
        lambda: np.zeros((3, 9, 5), np.float32),
        [
            "input 'images'",
            "expected float32 [3, 8, W]",
            "got float32 (3, 9, 5)",
            "dimension 1 is 9",
        ],
    ),
    "dtype": (
        lambda: np.zeros((8, 5, 3), np.uint8),
        ["expected float32 [3, 8, W]", "got uint8 (8, 5, 3)", ".astype(np.float32)"],
    ),
    "batch axis": (
        lambda: np.zeros((1, 3, 8, 5), np.float32),
        ["got float32 (1, 3, 8, 5)", "without the batch axis: pass x[0]"],
    ),
}


@pytest.mark.parametrize("case", list(WRONG))
async def test_a_wrong_item_fails_with_expected_and_found(conv_path: Path, case: str) -> None:
    make, texts = WRONG[case]
    pipe = af.Pipeline(OnnxModel(conv_path, name="conv"))
    with pytest.raises(ExceptionGroup) as caught:
        await pipe.run([*images(2), make()])
    [err] = block_errors(caught.value)
    assert err.block == "conv"
    assert err.phase == "process"
    assert isinstance(err.__cause__, ValueError)
    message = str(err)
    assert "block 'conv'" in message
    for text in texts:
        assert text in message, message


async def test_skip_lets_the_good_items_through(conv_path: Path) -> None:
    xs = images(5)
    items: list[Any] = [*xs[:2], np.zeros((3, 9, 5), np.float32), *xs[2:]]
    pipe = af.Pipeline(OnnxModel(conv_path, on_error="skip", name="conv"))
    out = await pipe.run(items)
    assert len(out) == 5
    for x, y in zip(xs, out, strict=True):
        close(y, direct_one(conv_path, {"images": x})[0])
    rec = pipe.statistics()["conv"]
    assert rec.skipped == 1
    assert rec.completed == 5


async def test_with_batch_a_wrong_item_is_skipped_alone(conv_path: Path) -> None:
    # The model runs the items that fit; the wrong one fails alone, under on_error.
    xs = images(7)
    items: list[Any] = [*xs[:4], np.zeros((3, 8, 5), np.uint8), *xs[4:]]
    pipe = af.Pipeline(OnnxModel(conv_path, batch=af.Batch(4, LONG), on_error="skip", name="c"))
    out = await pipe.run(items)
    assert len(out) == 7
    for x, y in zip(xs, out, strict=True):
        close(y, direct_one(conv_path, {"images": x})[0])
    rec = pipe.statistics()["c"]
    assert rec.skipped == 1
    assert rec.completed == 7
    assert rec.balanced


async def test_with_batch_submit_fails_only_the_wrong_items_caller(conv_path: Path) -> None:
    xs = images(4)
    bad = np.zeros((3, 8, 5), np.float64)
    model = OnnxModel(conv_path, batch=af.Batch(8, 0.05), name="conv")
    async with af.Pipeline(model).open() as running:
        results = await asyncio.gather(
            *(running.submit(x) for x in [xs[0], xs[1], bad, xs[2], xs[3]]),
            return_exceptions=True,
        )
    err = results[2]
    assert isinstance(err, af.BlockError)
    assert err.block == "conv"
    assert "expected float32" in str(err)
    assert "float64" in str(err)
    for x, y in zip(xs, [results[0], results[1], results[3], results[4]], strict=True):
        assert isinstance(y, np.ndarray)
        close(y, direct_one(conv_path, {"images": x})[0])
    rec = running.statistics()["conv"]
    assert rec.failed == 1
    assert rec.completed == 4
    assert rec.mean_batch_size > 1  # they did share a batch


async def test_submit_fails_only_the_wrong_item(pair_path: Path) -> None:
    good = {"a": np.ones(4, np.float32), "b": np.ones(4, np.float32)}
    async with af.Pipeline(OnnxModel(pair_path, name="pair")).open() as running:
        with pytest.raises(af.BlockError) as caught:
            await running.submit({"a": np.ones(4, np.float32)})
        assert "missing ['b']" in str(caught.value)
        with pytest.raises(af.BlockError) as caught:
            await running.submit(np.ones(4, np.float32))
        assert "must be a dict name -> array" in str(caught.value)
        result = await running.submit(good)
    close(result["sum"], np.full(4, 2, np.float32))


# -- providers, loading, metadata -------------------------------------------------------------


async def test_auto_providers_pick_the_cpu_here(
    mlp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="aioflow")
    model = OnnxModel(mlp_path, name="mlp")
    assert not model.providers_used  # nothing is loaded before the run
    await af.Pipeline(model).run([np.zeros(8, np.float32)])
    assert model.providers_used == (CPU,)
    [record] = loads(caplog, "mlp")
    assert CPU in record.getMessage()
    assert str(mlp_path) in record.getMessage()


async def test_an_explicit_provider_list_is_honoured(mlp_path: Path) -> None:
    model = OnnxModel(mlp_path, providers=[(CPU, {})], intra_op_num_threads=1)
    await af.Pipeline(model).run([np.zeros(8, np.float32)])
    assert model.providers_used == (CPU,)


async def test_setup_loads_the_model_once_per_run(
    mlp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="aioflow")
    model = OnnxModel(mlp_path, batch=af.Batch(4, LONG), name="mlp")
    assert loads(caplog, "mlp") == []  # constructing loads nothing
    pipe = af.Pipeline(model)
    xs = [np.zeros(8, np.float32)] * 10
    await pipe.run(xs)
    assert len(loads(caplog, "mlp")) == 1
    await pipe.run(xs)
    assert len(loads(caplog, "mlp")) == 2


async def test_metadata_and_specs(mlp_path: Path, mlp_bytes: bytes) -> None:
    model = OnnxModel(mlp_path)
    with pytest.raises(RuntimeError, match=r"inspect\(path\)"):
        _ = model.inputs
    await af.Pipeline(model).run([np.zeros(8, np.float32)])
    assert model.metadata == {"labels": "cat,dog,fox,owl"}
    assert model.inputs == {
        "x": TensorSpec("x", "tensor(float)", np.dtype("float32"), ("batch", 8))
    }
    assert str(model.outputs["y"]) == "y: float32 [batch, 4]"
    info = OnnxModel.inspect(mlp_path)
    assert isinstance(info, ModelInfo)
    assert info == model.info
    assert info.producer == "aioflow-tests"
    assert info.graph_name == "mlp"
    assert OnnxModel.inspect(mlp_bytes) == info


async def test_an_unknown_output_name_fails_setup(pair_path: Path) -> None:
    pipe = af.Pipeline(OnnxModel(pair_path, output_names=["sum", "prod"], name="pair"))
    with pytest.raises(ExceptionGroup) as caught:
        await pipe.run([{"a": np.ones(4, np.float32), "b": np.ones(4, np.float32)}])
    [err] = block_errors(caught.value)
    assert err.phase == "setup"
    assert "['prod']" in str(err)
    assert "['sum', 'scaled']" in str(err)


async def test_a_broken_model_fails_setup_with_the_runtime_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.onnx"
    path.write_bytes(b"not a model")
    with pytest.raises(ExceptionGroup) as caught:
        await af.Pipeline(OnnxModel(path, name="broken")).run([1])
    [err] = block_errors(caught.value)
    assert err.phase == "setup"
    assert str(path) in str(err)
    assert isinstance(err.__cause__, RuntimeError)


# -- construction ------------------------------------------------------------------------------


def test_a_missing_file_is_refused_at_construction(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "model.onnx"
    with pytest.raises(af.GraphError, match="does not exist") as caught:
        OnnxModel(missing, name="det")
    assert str(missing) in str(caught.value)
    assert "'det'" in str(caught.value)
    with pytest.raises(af.GraphError, match="does not exist"):
        OnnxModel.inspect(missing)


BAD_OPTIONS: dict[str, tuple[Callable[[Path], OnnxModel], str]] = {
    "cuda not installed": (
        lambda p: OnnxModel(p, providers=["CUDAExecutionProvider"]),
        "pip install aioflow[gpu]",
    ),
    "providers": (lambda p: OnnxModel(p, providers=cast(Any, [42])), "'providers' must be 'auto'"),
    "threads": (lambda p: OnnxModel(p, intra_op_num_threads=0), "'intra_op_num_threads'"),
    "output names": (lambda p: OnnxModel(p, output_names=[]), "'output_names'"),
    "workers": (lambda p: OnnxModel(p, workers=0), "'workers'"),
    "a directory": (lambda p: OnnxModel(p.parent), "is not a file"),
    "empty bytes": (lambda p: OnnxModel(b""), "empty bytes"),
    "executor": (lambda p: OnnxModel(p, executor="async"), "executor='async'"),
}


@pytest.mark.parametrize("case", list(BAD_OPTIONS))
def test_bad_options_are_graph_errors(mlp_path: Path, case: str) -> None:
    make, text = BAD_OPTIONS[case]
    with pytest.raises(af.GraphError) as caught:
        make(mlp_path)
    assert text in str(caught.value)


def test_a_subclass_may_set_options_as_class_attributes(mlp_path: Path) -> None:
    class Embedder(OnnxModel):
        batch = af.Batch(8, 0.01)
        queue_size = 4

    model = Embedder(mlp_path)
    assert model.options.batch == af.Batch(8, 0.01)
    assert model.options.queue_size == 4
    assert model.block_name == "Embedder"
    assert model.options.executor == "thread"


# -- imports ----------------------------------------------------------------------------------


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_without_onnxruntime_the_import_error_names_the_extra() -> None:
    proc = _python(
        "import sys\n"
        "sys.modules['onnxruntime'] = None  # as if it were not installed\n"
        "import aioflow.infer  # the subpackage itself needs nothing\n"
        "import aioflow.infer.onnx\n"
    )
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError"), proc.stderr
    assert "pip install aioflow[onnx]" in last
    assert "aioflow[gpu]" in last


def test_importing_aioflow_infer_does_not_load_onnxruntime() -> None:
    proc = _python("import sys, aioflow.infer\nprint('onnxruntime' in sys.modules)")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"
