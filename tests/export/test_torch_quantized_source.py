"""A model quantized by PyTorch itself (``torch.ao.quantization.quantize_dynamic``), exported as a user would.

Its Linear layers hold packed weights in a TorchScript object that torch.export cannot trace: the pt2 and tflite
rows said "AttributeError: __torch__.torch.classes.quantized.LinearPackedParamsBase ... does not have a field
with name '__obj_flatten__'". They now say which module it is and what to export instead; TorchScript, which
runs the quantized kernels, still publishes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import modelport
from modelport.manifest import read_manifest
from modelport.runtimes import open_runtime

pytestmark = [pytest.mark.torch, pytest.mark.tflite]


def _dynamically_quantized() -> Any:
    import torch

    torch.manual_seed(0)
    float_model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3)).eval()
    return torch.ao.quantization.quantize_dynamic(float_model, {torch.nn.Linear}, dtype=torch.qint8)


def test_a_torch_quantized_model_is_told_to_export_the_float_model_and_torchscript_still_publishes(tmp_path):
    import torch

    model = _dynamically_quantized()
    report = modelport.export(
        source=model, repository=tmp_path, name="q", formats=("torchscript", "pt2", "tflite"), inputs=["x:float32:-1x8"]
    )
    rows = {r.variant: r for r in report.rows}
    for variant in ("pt2", "tflite"):
        assert rows[variant].status == "ERROR"
        message = rows[variant].message
        assert "torch.ao quantized modules (e.g. '0': torch.ao.nn.quantized.dynamic" in message, message
        assert "export the float model" in message and "--quantize dynamic-int8" in message, message
    assert rows["torchscript"].status == "pass", rows["torchscript"].message
    directory = Path(rows["torchscript"].path)
    x = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
    runtime = open_runtime(directory, read_manifest(directory))
    try:
        answer = runtime.predict({"x": x})["output_0"]
    finally:
        runtime.unload()
    np.testing.assert_allclose(answer, model(torch.from_numpy(x)).numpy(), rtol=1e-5, atol=1e-6)
