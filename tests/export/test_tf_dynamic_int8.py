"""TFLiteConverter's dynamic-range int8 skips weights under 1024 elements: a model with none larger is refused.

Such a ``tflite-dynamic-int8`` variant used to be published, bit-identical to the float32 one
(same size, max abs error 0), as if it had been quantized; the PyTorch path (AI Edge Quantizer)
already refused a recipe that quantizes nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import modelport

pytestmark = [pytest.mark.tf, pytest.mark.tflite]


def _dense(width: int) -> Any:
    import keras

    keras.utils.set_random_seed(0)
    x = keras.Input((32,), name="x")
    h = keras.layers.Dense(width, activation="relu")(x)
    return keras.Model(x, keras.layers.Dense(3, name="logits")(h))


def test_a_model_too_small_to_quantize_is_an_error_row(tmp_path):
    report = modelport.export(
        source=_dense(8), repository=tmp_path, name="s", formats=("tflite",), quantize=("dynamic-int8",), quiet=True
    )
    rows = {r.variant: r for r in report.rows}
    assert rows["tflite"].status == "pass"
    assert rows["tflite-dynamic-int8"].status == "ERROR"
    assert "quantized no weight of this model" in rows["tflite-dynamic-int8"].message
    assert not (tmp_path / "s-tflite-dynamic-int8").exists()


def test_a_model_with_a_large_weight_is_quantized(tmp_path):
    report = modelport.export(
        source=_dense(64),
        repository=tmp_path,
        name="l",
        formats=("tflite",),
        quantize=("dynamic-int8",),
        min_agreement=0.9,  # random weights: near-ties flip (98.5% here); the point is that it is quantized
        quiet=True,
    )
    rows = {r.variant: r for r in report.rows}
    assert rows["tflite-dynamic-int8"].status == "pass", rows["tflite-dynamic-int8"].message
    float_size = (Path(rows["tflite"].path) / "model.tflite").stat().st_size
    assert (Path(rows["tflite-dynamic-int8"].path) / "model.tflite").stat().st_size < float_size
