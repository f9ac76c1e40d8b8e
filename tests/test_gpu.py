"""CUDA paths: the ONNX Runtime CUDA/TensorRT providers and torch on cuda. They skip without a GPU.

They need only torch (and onnx/onnxruntime for the ONNX case): the digits CNN is exported untrained, with
seeded weights, so the borrowed GPU machine (no TensorFlow, no scikit-learn; ``scripts/gpu_check.sh``) runs them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from modelport.manifest import read_manifest
from modelport.parity import verify_golden
from modelport.runtimes import RuntimeOptions, open_runtime


def _cuda_torch() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def _cuda_onnxruntime() -> bool:
    try:
        import onnxruntime
    except ImportError:
        return False
    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


@pytest.fixture(scope="module")
def torch_digits(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``export(fmt)``: the version directory of the untrained digits CNN exported to ``fmt`` (once per format)."""
    import torch

    import modelport

    root = tmp_path_factory.mktemp("gpu-repo")

    def export(fmt: str) -> Path:
        directory = root / f"digits-{fmt}" / "1"
        if not directory.exists():
            torch.manual_seed(0)
            modelport.export(
                source="examples.digits.torch_model:cnn", repository=root, name="digits", formats=(fmt,), quiet=True
            )
        return directory

    return export


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda_onnxruntime(), reason="onnxruntime has no CUDA provider here (install modelport[gpu])")
def test_onnx_on_cuda_reproduces_golden_vectors(torch_digits):
    directory = torch_digits("onnx")
    manifest = read_manifest(directory)
    runtime = open_runtime(directory, manifest, RuntimeOptions(device="cuda"))
    assert runtime.providers[0] in ("TensorrtExecutionProvider", "CUDAExecutionProvider"), runtime.providers
    assert verify_golden(runtime.predict, directory, manifest).passed


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda_torch(), reason="torch sees no CUDA device")
@pytest.mark.parametrize("variant", ["torchscript", "pt2"])
def test_torch_on_cuda_reproduces_golden_vectors(torch_digits, variant):
    directory = torch_digits(variant)
    manifest = read_manifest(directory)
    runtime = open_runtime(directory, manifest, RuntimeOptions(device="cuda"))
    record = verify_golden(runtime.predict, directory, manifest)
    assert record.passed, record
    out = runtime.predict({"image": np.zeros((2, 1, 8, 8), np.float32)})
    assert out["logits"].shape == (2, 10)
