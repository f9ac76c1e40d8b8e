"""TensorFlow sources beyond Keras files: a tf.Module object, and user calibration data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import modelport
from modelport.manifest import read_manifest


class Affine(tf.Module):
    """A plain tf.Module with a signature-carrying __call__ (no Keras)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = tf.Variable(np.arange(6, dtype=np.float32).reshape(3, 2) / 10)
        self.b = tf.Variable(np.array([0.5, -0.5], dtype=np.float32))

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
    def __call__(self, x):
        return {"y": tf.matmul(x, self.w) + self.b, "norm": tf.norm(x, axis=1)}


@pytest.mark.tf
@pytest.mark.tflite
def test_tf_module_object(tmp_path):
    report = modelport.export(
        source=Affine(), repository=tmp_path, name="affine", formats=("savedmodel", "tflite", "onnx"), quiet=True
    )
    assert {r.variant: r.status for r in report.rows} == {"savedmodel": "pass", "tflite": "pass", "onnx": "pass"}
    manifest = read_manifest(Path(report.rows[0].path))
    assert [s.describe() for s in manifest.inputs] == ["x:float32:-1x3"]
    assert [s.describe() for s in manifest.outputs] == ["norm:float32:-1", "y:float32:-1x2"]


@pytest.mark.tf
@pytest.mark.tflite
def test_full_int8_with_user_calibration_data(tmp_path, digits):
    report = modelport.export(
        source=str(digits.keras_model),
        repository=tmp_path,
        name="k",
        formats=("tflite",),
        quantize=("full-int8",),
        calibration_data=digits.eval_nhwc,
        quiet=True,
    )
    rows = {r.variant: r for r in report.rows}
    assert rows["tflite-full-int8"].status == "pass", rows["tflite-full-int8"].message
    manifest = read_manifest(Path(rows["tflite-full-int8"].path))
    assert manifest.quantization is not None
    assert manifest.quantization.calibration == str(digits.eval_nhwc)
    assert manifest.quantization.calibration_samples == 256


@pytest.mark.tf
def test_calibration_data_must_name_the_inputs(tmp_path, digits):
    bad = tmp_path / "bad.npz"
    np.savez(bad, pixels=np.zeros((4, 8, 8, 1), np.float32))
    with pytest.raises(modelport.ModelportError, match=r"has no array 'image' \(has: \['pixels'\]\)"):
        modelport.export(
            source=str(digits.keras_model),
            repository=tmp_path / "r",
            name="k",
            formats=("tflite",),
            quantize=("full-int8",),
            calibration_data=bad,
            quiet=True,
        )
