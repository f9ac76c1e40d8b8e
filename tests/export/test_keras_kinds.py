"""Sequential, functional and subclassed Keras models export to every TF format, from the CLI and the API."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import modelport
from modelport.manifest import read_manifest
from tests.export import keras_kinds
from tests.user_cli import run_modelport

pytestmark = [pytest.mark.tf, pytest.mark.tflite]

TF_FORMATS = ("savedmodel", "tflite", "onnx")


def _statuses(report: modelport.ExportReport) -> dict[str, str]:
    return {r.variant: r.status for r in report.rows}


def _cli_export(cwd: Path, source: str, *extra: str) -> tuple[int, str, str]:
    done = run_modelport(
        "export",
        source,
        "--format",
        ",".join(TF_FORMATS),
        "--repository",
        "repo",
        "--name",
        "m",
        "--quiet",
        *extra,
        cwd=cwd,
    )
    return done.returncode, done.stdout, done.stderr


def _error_line(stderr: str) -> str:
    """The CLI's one-line error: the last line, and the only one that starts with ``modelport export: error:``."""
    lines = stderr.splitlines()
    assert [ln for ln in lines if ln.startswith("modelport export: error:")] == lines[-1:], stderr
    return lines[-1]


@pytest.mark.parametrize("build", [keras_kinds.sequential, keras_kinds.functional])
def test_keras_file_exports_through_the_cli(tmp_path, build):
    build().save(tmp_path / "model.keras")
    code, out, err = _cli_export(tmp_path, "model.keras")
    assert code == 0, err
    assert "Traceback" not in err
    rows = [line.split() for line in out.splitlines() if line.startswith(TF_FORMATS)]
    assert {row[0]: row[-1] for row in rows} == dict.fromkeys(TF_FORMATS, "pass"), out
    manifest = read_manifest(tmp_path / "repo" / "m-tflite" / "1")
    assert [s.describe() for s in manifest.inputs] == ["x:float32:-1x6"]


def test_subclassed_model_through_a_cli_factory(tmp_path):
    (tmp_path / "net.py").write_text(keras_kinds.FACTORY_FILE)
    code, _, err = _cli_export(tmp_path, "net.py:make_model")
    assert code == 2, err
    error = _error_line(err)
    assert error.startswith("modelport export: error: net.py:make_model: this Keras model (Classifier) records no")
    assert "pass --input NAME:DTYPE:SHAPE" in error
    code, _, err = _cli_export(tmp_path, "net.py:make_model", "--input", keras_kinds.INPUT)
    assert code == 0, err
    manifest = read_manifest(tmp_path / "repo" / "m-onnx" / "1")
    assert manifest.source.kind == "keras" and manifest.source.location == "net.py:make_model"
    assert [s.describe() for s in manifest.outputs] == ["output_0:float32:-1x3"]


def test_subclassed_keras_file_says_how_to_export_it(tmp_path):
    model = keras_kinds.subclassed()
    model(np.zeros((1, keras_kinds.FEATURES), np.float32))  # built: Keras saves its weights
    model.save(tmp_path / "sub.keras")
    code, _, err = _cli_export(tmp_path, "sub.keras", "--input", keras_kinds.INPUT)
    assert code == 1, err
    error = _error_line(err)
    assert "Could not locate class 'Classifier'" in error and "export it from a factory" in error


def test_keras_factory_refuses_torch_weights(tmp_path):
    (tmp_path / "net.py").write_text(keras_kinds.FACTORY_FILE)
    (tmp_path / "w.pt").write_bytes(b"")
    code, _, err = _cli_export(tmp_path, "net.py:make_model", "--weights", "w.pt")
    assert code == 2 and "--weights loads a PyTorch state_dict" in _error_line(err), err


@pytest.mark.parametrize(
    ("build", "inputs", "pattern"),
    [
        (keras_kinds.sequential, (), "probs:float32:-1x3"),  # the last layer's name
        (keras_kinds.functional, (), "logits:float32:-1x3"),
        (keras_kinds.subclassed, (keras_kinds.INPUT,), "output_0:float32:-1x3"),  # as in Keras' SavedModel
        (keras_kinds.sequential_without_input, (keras_kinds.INPUT,), r"dense(_\d+)?:float32:-1x3"),
    ],
    ids=["sequential", "functional", "subclassed", "sequential-without-input"],
)
def test_keras_objects_export_through_the_api(tmp_path, build, inputs, pattern):
    report = modelport.export(
        source=build(), repository=tmp_path, name="m", formats=TF_FORMATS, inputs=inputs, quiet=True
    )
    assert _statuses(report) == dict.fromkeys(TF_FORMATS, "pass"), [r.message for r in report.rows]
    manifest = read_manifest(Path(report.rows[0].path))
    (spec,) = manifest.inputs
    assert spec.describe().endswith(":float32:-1x6"), spec
    (output,) = manifest.outputs
    assert re.fullmatch(pattern, output.describe()), output.describe()


@pytest.mark.parametrize("build", [keras_kinds.subclassed, keras_kinds.sequential_without_input])
def test_keras_model_without_recorded_inputs_asks_for_them(tmp_path, build):
    with pytest.raises(modelport.ModelportError, match=r"records no input shapes .* pass --input NAME:DTYPE:SHAPE"):
        modelport.export(source=build(), repository=tmp_path, name="m", formats=("savedmodel",), quiet=True)


def test_dict_outputs_keep_their_names_and_values(tmp_path):
    """Each output's values under its own name: the SavedModel reproduces the source (a swap failed parity)."""
    model = keras_kinds.dict_outputs()
    report = modelport.export(source=model, repository=tmp_path, name="m", formats=("savedmodel",), quiet=True)
    assert _statuses(report) == {"savedmodel": "pass"}, [r.message for r in report.rows]
    manifest = read_manifest(Path(report.rows[0].path))
    # named by the dict's keys (as TF Serving's signature names them), in the model's own order
    assert [o.describe() for o in manifest.outputs] == ["scores/probs:float32:-1x3", "cls:int32:-1"]
    golden = np.load(Path(report.rows[0].path) / "golden.npz")
    inputs = [golden[k] for k in ("case0/inputs/dense.input-1", "case0/inputs/ids_in")]
    expected = model(inputs)
    assert np.array_equal(golden["case0/outputs/cls"], np.asarray(expected["cls"]))
    assert np.allclose(golden["case0/outputs/scores/probs"], np.asarray(expected["scores/probs"]))


def test_a_keras_error_is_reported_with_its_cause(tmp_path):
    report = modelport.export(
        source=keras_kinds.invalid_layer_name(), repository=tmp_path, name="m", formats=("savedmodel",), quiet=True
    )
    (row,) = report.rows
    assert row.status == "ERROR" and "'logits:out' is not a valid scope name" in row.message, row.message
