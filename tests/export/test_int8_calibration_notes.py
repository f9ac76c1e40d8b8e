"""An int8 variant calibrated on random golden inputs says so in its report row.

A Keras model that normalizes its inputs (``Normalization`` adapted to data of mean 5, std 3) got a full-int8
variant calibrated on N(0, 1) golden inputs that passed its gate on those same inputs, with no word in the
report, and answered real inputs with errors of 2.4 (the outputs are about 1).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import modelport
from modelport.manifest import read_manifest
from modelport.runtimes import open_runtime

pytestmark = [pytest.mark.tf, pytest.mark.tflite]

NOTE = "calibrated and gated on random golden inputs"


def _normalizing() -> Any:
    import keras

    keras.utils.set_random_seed(0)
    x = keras.Input((4, 3), name="seq")
    norm = keras.layers.Normalization(axis=-1)
    norm.adapt(_real(64, 0))
    steps = keras.layers.LayerNormalization()(keras.layers.Dense(6, activation="relu")(norm(x)))
    return keras.Model(x, keras.layers.Dense(2, name="pooled")(keras.layers.GlobalAveragePooling1D()(steps)))


def _real(rows: int, seed: int) -> np.ndarray[Any, Any]:
    return np.random.default_rng(seed).normal(5.0, 3.0, (rows, 4, 3)).astype(np.float32)


def _error_on_real_inputs(model: Any, directory: Path) -> float:
    x = _real(16, 7)
    runtime = open_runtime(directory, read_manifest(directory))
    try:
        got = runtime.predict({"seq": x})["pooled"]
    finally:
        runtime.unload()
    return float(np.abs(got - np.asarray(model(x, training=False))).max())


def test_full_int8_calibrated_on_random_inputs_says_so_and_real_calibration_data_silences_it(tmp_path):
    model = _normalizing()
    np.savez(tmp_path / "calibration.npz", seq=_real(64, 1))
    rows = {}
    for name, extra in (("rand", {}), ("real", {"calibration_data": tmp_path / "calibration.npz"})):
        report = modelport.export(
            source=model,
            repository=tmp_path / "repo",
            name=name,
            formats=("tflite",),
            quantize=("full-int8",),
            min_agreement=0.9,  # two near-tied classes: a few rows of real data flip
            **extra,
        )
        rows[name] = next(r for r in report.rows if r.variant == "tflite-full-int8")
        assert rows[name].status == "pass", rows[name].message
    assert any(n.startswith(NOTE) and "--calibration-data" in n for n in rows["rand"].notes), rows["rand"].notes
    assert not any(n.startswith(NOTE) for n in rows["real"].notes), rows["real"].notes
    random_error = _error_on_real_inputs(model, Path(rows["rand"].path))
    real_error = _error_on_real_inputs(model, Path(rows["real"].path))
    assert real_error < random_error / 2, (real_error, random_error)  # what the note warns of
