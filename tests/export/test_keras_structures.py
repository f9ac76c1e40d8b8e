"""Keras functional models built on dicts: outputs named by the dict's keys, inputs keyed apart from their names.

A dict of outputs whose keys are neither sorted nor its layers' names used to get the layers'
names in the manifest and be paired with the converters' (sorted) keys the wrong way round, so
every variant failed its gate; a dict of inputs keyed by other names than the ``keras.Input``
names could not be called at all ("the source model failed on its inputs").
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


def _dict_outputs() -> Any:
    import keras

    keras.utils.set_random_seed(0)
    x = keras.Input((5,), name="x")
    h = keras.layers.Dense(8, activation="relu")(x)
    return keras.Model(x, {"zeta": keras.layers.Dense(2)(h), "alpha": keras.layers.Dense(4)(h)})


def _dict_inputs() -> Any:
    import keras

    keras.utils.set_random_seed(0)
    a = keras.Input((3,), name="inp_a")
    b = keras.Input((2,), name="inp_b")
    y = keras.layers.Dense(2, name="y")(keras.layers.Concatenate()([a, 2.0 * b]))
    return keras.Model({"second": b, "first": a}, y)


def _served(directory: Path, inputs: dict[str, np.ndarray[Any, Any]]) -> dict[str, np.ndarray[Any, Any]]:
    runtime = open_runtime(directory, read_manifest(directory))
    try:
        return runtime.predict(inputs)
    finally:
        runtime.unload()


@pytest.mark.parametrize(("given", "names"), [((), ("zeta", "alpha")), (("b", "a"), ("b", "a"))])
def test_dict_outputs_are_named_by_their_keys_and_keep_their_values(tmp_path, given, names):
    model = _dict_outputs()
    formats = ("savedmodel", "tflite", "onnx") if not given else ("savedmodel", "tflite")
    report = modelport.export(
        source=model, repository=tmp_path, name="d", formats=formats, output_names=given, quiet=True
    )
    assert {r.variant: r.status for r in report.rows} == dict.fromkeys(formats, "pass")
    x = np.random.default_rng(2).standard_normal((3, 5)).astype(np.float32)
    expected = {k: np.asarray(v) for k, v in model(x, training=False).items()}
    for row in report.rows:
        manifest = read_manifest(Path(row.path))
        assert [(o.name, o.shape) for o in manifest.outputs] == [(names[0], (-1, 2)), (names[1], (-1, 4))]
        actual = _served(Path(row.path), {"x": x})
        np.testing.assert_allclose(actual[names[0]], expected["zeta"], atol=1e-5, err_msg=row.variant)
        np.testing.assert_allclose(actual[names[1]], expected["alpha"], atol=1e-5, err_msg=row.variant)


def test_dict_inputs_keyed_apart_from_their_names(tmp_path):
    model = _dict_inputs()
    report = modelport.export(source=model, repository=tmp_path, name="i", formats=("savedmodel", "tflite"), quiet=True)
    assert {r.variant: r.status for r in report.rows} == {"savedmodel": "pass", "tflite": "pass"}, report.rows
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((2, 3)).astype(np.float32), rng.standard_normal((2, 2)).astype(np.float32)
    expected = np.asarray(model({"first": a, "second": b}, training=False))
    for row in report.rows:
        manifest = read_manifest(Path(row.path))
        assert [(i.name, i.shape) for i in manifest.inputs] == [("inp_a", (-1, 3)), ("inp_b", (-1, 2))]
        np.testing.assert_allclose(_served(Path(row.path), {"inp_a": a, "inp_b": b})["y"], expected, atol=1e-5)


def test_input_flags_in_another_order_than_the_models_are_taken_by_name(tmp_path):
    from modelport.manifest import TensorSpec

    given = (TensorSpec.parse("inp_b:float32:-1x2"), TensorSpec.parse("inp_a:float32:-1x3"))  # the model: a, b
    report = modelport.export(
        source=_dict_inputs(), repository=tmp_path, name="o", formats=("savedmodel",), inputs=given, quiet=True
    )
    assert [r.status for r in report.rows] == ["pass"], report.rows
    manifest = read_manifest(Path(report.rows[0].path))
    assert [(i.name, i.shape) for i in manifest.inputs] == [("inp_a", (-1, 3)), ("inp_b", (-1, 2))]


def test_a_sequential_built_without_an_input_takes_the_flags_name(tmp_path):
    import keras

    from modelport.manifest import TensorSpec

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.layers.Dense(4, activation="relu"), keras.layers.Dense(3)])
    model.build((None, 7))  # its input is named by Keras: keras_tensor_N
    report = modelport.export(
        source=model,
        repository=tmp_path,
        name="s",
        formats=("savedmodel", "tflite"),
        inputs=(TensorSpec.parse("features:float32:-1x7"),),
        quiet=True,
    )
    assert {r.variant: r.status for r in report.rows} == {"savedmodel": "pass", "tflite": "pass"}, report.rows
    x = np.random.default_rng(3).standard_normal((2, 7)).astype(np.float32)
    expected = np.asarray(model(x, training=False))
    for row in report.rows:
        manifest = read_manifest(Path(row.path))
        assert [i.name for i in manifest.inputs] == ["features"]
        (output,) = manifest.outputs
        np.testing.assert_allclose(_served(Path(row.path), {"features": x})[output.name], expected, atol=1e-5)
