"""``OnnxModel`` on a CUDA GPU: run by ``make test-gpu``, deselected by ``make test``.

These tests need onnxruntime-gpu (installed in place of onnxruntime: ``make test-gpu`` builds
its own environment, ``.venv-gpu``) and a GPU whose CUDA libraries load. Where either is
missing they FAIL, saying which; they never skip: a GPU run that tested nothing must not pass.
Every result is compared with a CPU session on the same input.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx_models
import onnxruntime as ort
import pytest

import aioflow as af
from aioflow.infer.onnx import OnnxModel

pytestmark = pytest.mark.gpu

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
#: A max_wait no test waits out: batches close when full or at the end of the stream.
LONG = 3600.0


@pytest.fixture(scope="module", autouse=True)
def _cuda_works(tmp_path_factory: pytest.TempPathFactory) -> None:
    available = ort.get_available_providers()
    if CUDA not in available:
        pytest.fail(
            f"CUDAExecutionProvider is not available: onnxruntime {ort.__version__} has "
            f"{', '.join(available)}; install onnxruntime-gpu in place of onnxruntime "
            "(`make test-gpu` does, in .venv-gpu) on a machine with an NVIDIA GPU"
        )
    path = onnx_models.conv(tmp_path_factory.mktemp("probe") / "probe.onnx")
    used = ort.InferenceSession(str(path), providers=[CUDA, CPU]).get_providers()
    if used[0] != CUDA:
        pytest.fail(
            f"onnxruntime-gpu is installed but a session runs on {used[0]}: the CUDA or cuDNN "
            "libraries cannot be loaded (see onnxruntime's CUDA requirements)"
        )


@pytest.fixture
def conv_path(tmp_path: Path) -> Path:
    return onnx_models.conv(tmp_path / "conv.onnx", height=32, width=32, layers=3, filters=16)


def on_cpu(path: Path, items: list[np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=[CPU])
    (out,) = session.run(None, {"images": np.stack(items)})
    return list(out)


def frames(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(4)
    return [rng.random((3, 32, 32), dtype=np.float32) for _ in range(n)]


@pytest.mark.parametrize("io_binding", [None, True, False])
@pytest.mark.parametrize("batch", [1, 8, 32])
async def test_a_model_runs_on_cuda_and_matches_the_cpu(
    conv_path: Path, io_binding: bool | None, batch: int
) -> None:
    items = frames(40)
    model = OnnxModel(
        conv_path,
        providers=[CUDA, CPU],
        io_binding=io_binding,
        batch=af.Batch(batch, LONG) if batch > 1 else None,
    )
    out = await af.Pipeline(model).run(items)
    assert model.providers_used[0] == CUDA
    assert len(out) == len(items)
    for got, want in zip(out, on_cpu(conv_path, items), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)


async def test_auto_picks_cuda_where_it_works(conv_path: Path) -> None:
    model = OnnxModel(conv_path)  # providers="auto"
    out = await af.Pipeline(model).run(frames(4))
    assert model.providers_used[0] == CUDA
    for got, want in zip(out, on_cpu(conv_path, frames(4)), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)
