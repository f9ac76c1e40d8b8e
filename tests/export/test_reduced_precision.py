"""Models that compute in float16 are gated with float16's tolerance, not float32's.

A PyTorch ``model.half()`` exported to ONNX differs from itself by an ulp or two of float16 (onnxruntime
accumulates otherwise: 0.002 on outputs near 4), which float32's atol 1e-4 / rtol 1e-3 called a mismatch: every
ONNX variant of a half model was rejected. A Keras model under a ``mixed_float16`` policy computes in float16 too,
even when its last layer answers float32.

TFLite's builtin ops mostly take float32: such a model's TFLite conversion fails with the converter's own words
(a float16 ``tf.MatMul`` "is neither a custom op nor a flex op"); the row now says the model computes in float16
and how to convert it, while the other formats publish.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import modelport
from modelport.manifest import TensorSpec, read_manifest
from modelport.parity import default_gate
from modelport.runtimes import open_runtime


def _half_mlp() -> Any:
    import torch
    from torch import nn

    torch.manual_seed(0)
    layers = [nn.Linear(64, 256), nn.GELU(), nn.LayerNorm(256), nn.Linear(256, 256), nn.GELU(), nn.Linear(256, 64)]
    return nn.Sequential(*layers).half().eval()


def _mixed_precision_mlp() -> Any:
    import keras

    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        keras.utils.set_random_seed(0)
        x = keras.Input((10,), name="x")
        h = keras.layers.Dense(32, activation="gelu")(x)
        y = keras.layers.Activation("linear", dtype="float32", name="logits")(keras.layers.Dense(3)(h))
        return keras.Model(x, y)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_the_gate_of_a_float16_source_is_float16s_and_quantized_gates_keep_theirs():
    gate = default_gate("onnx", None, compute_dtype="float16")
    assert (gate.kind, gate.atol, gate.rtol) == ("tolerance", 1e-2, 1e-2)
    assert default_gate("onnx", None, compute_dtype="float32").atol == 1e-4
    assert default_gate("tflite", "dynamic-int8", compute_dtype="float16").atol == 1e-1
    assert default_gate("onnx", None, atol=1e-3, compute_dtype="float16").atol == 1e-3  # --atol still wins


@pytest.mark.torch
@pytest.mark.tflite
def test_a_half_model_exports_to_onnx_and_answers_its_source(tmp_path):
    import torch

    model = _half_mlp()
    report = modelport.export(
        source=model,
        repository=tmp_path,
        name="half",
        formats=("onnx", "torchscript", "tflite"),
        inputs=(TensorSpec.parse("x:float16:-1x64"),),
        quiet=True,
    )
    statuses = {r.variant: r.status for r in report.rows}
    assert statuses == {"onnx": "pass", "torchscript": "pass", "tflite": "ERROR"}, report.rows
    tflite = report.rows.pop()  # litert-torch cannot lower a float16 LayerNorm
    assert "the model computes in float16" in tflite.message and "model.float()" in tflite.message, tflite.message
    x = np.random.default_rng(5).standard_normal((4, 64)).astype(np.float16)
    with torch.inference_mode():
        expected = model(torch.from_numpy(x)).numpy().astype(np.float32)
    for row in report.rows:
        manifest = read_manifest(Path(row.path))
        assert manifest.parity is not None and (manifest.parity.atol, manifest.parity.rtol) == (1e-2, 1e-2)
        assert [s.describe() for s in manifest.outputs] == ["output_0:float16:-1x64"]
        runtime = open_runtime(Path(row.path), manifest)
        try:
            actual = runtime.predict({"x": x})["output_0"]
        finally:
            runtime.unload()
        assert actual.dtype == np.float16
        np.testing.assert_allclose(actual.astype(np.float32), expected, atol=1e-2, rtol=1e-2, err_msg=row.variant)


@pytest.mark.tf
@pytest.mark.tflite
def test_a_keras_mixed_precision_model_is_gated_as_float16(tmp_path):
    report = modelport.export(
        source=_mixed_precision_mlp(), repository=tmp_path, name="mixed", formats=("savedmodel", "tflite"), quiet=True
    )
    row, tflite = report.rows
    assert (row.status, tflite.status) == ("pass", "ERROR"), report.rows
    assert "tf.MatMul" in tflite.message and "the model computes in float16" in tflite.message, tflite.message
    assert "float32 policy" in tflite.message, tflite.message
    manifest = read_manifest(Path(row.path))
    assert [s.describe() for s in manifest.outputs] == ["logits:float32:-1x3"]  # float32 out, float16 inside
    assert manifest.parity is not None and manifest.parity.atol == 1e-2
