"""The parity gate must be able to fail: perturbed and mis-converted artifacts are caught."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import modelport
from modelport.exporters.rejection import publish_hint
from modelport.manifest import OutputParity, TensorSpec, read_manifest
from modelport.parity import Gate, compare, default_gate, verify_golden
from modelport.runtimes import open_runtime

LOGITS = (TensorSpec(name="logits", dtype="float32", shape=(-1, 3)),)


def test_compare_catches_a_perturbed_output():
    expected = [{"logits": np.array([[1.0, 2.0, 3.0]], dtype=np.float32)}]
    actual = [{"logits": np.array([[1.0, 2.0, 3.01]], dtype=np.float32)}]
    record = compare(LOGITS, expected, actual, default_gate("onnx", None), (1,))
    assert not record.passed
    assert record.outputs[0].max_abs_error == pytest.approx(0.01, rel=1e-3)
    assert compare(LOGITS, expected, expected, default_gate("onnx", None), (1,)).passed


def test_agreement_gate_counts_top1_flips():
    rng = np.random.default_rng(0)
    expected = rng.standard_normal((100, 3)).astype(np.float32)
    flipped = expected.copy()
    flipped[:2] = -flipped[:2]  # at least one row changes its top-1 class
    gate = Gate("agreement", atol=10.0, rtol=0.0, min_agreement=0.99)
    record = compare(LOGITS, [{"logits": expected}], [{"logits": flipped}], gate, (100,))
    assert record.outputs[0].top1_agreement is not None and record.outputs[0].top1_agreement < 0.99
    assert not record.passed


def test_shape_mismatch_fails_with_detail():
    expected = [{"logits": np.zeros((2, 3), np.float32)}]
    record = compare(LOGITS, expected, [{"logits": np.zeros((2, 4), np.float32)}], default_gate("onnx", None), (2,))
    assert not record.passed and "expected shape [2, 3], got shape [2, 4]" in (record.outputs[0].detail or "")


def test_values_wrong_by_their_own_size_are_not_offered_looser_tolerances_alone(tmp_path):
    """litert-torch lowers F.interpolate(scale_factor=0.5, mode="nearest") to a resize that samples the other
    pixel of each pair: errors as large as the values, for which "looser --atol/--rtol" was the only advice."""
    expected = [{"logits": np.array([[0.0, 2.0, 4.0]], np.float32)}]
    wrong = compare(
        LOGITS, expected, [{"logits": np.array([[1.0, 3.0, 5.0]], np.float32)}], default_gate("tflite", None), (1,)
    )
    hint = publish_hint(wrong, tmp_path)
    assert hint.startswith("output 'logits' is off by up to 1e+04 times its own values: the artifact computes"), hint
    assert "looser --atol/--rtol (its max abs error is 1)" in hint
    rounded = compare(
        LOGITS, expected, [{"logits": np.array([[0.0, 2.01, 4.0]], np.float32)}], default_gate("tflite", None), (1,)
    )
    assert not rounded.passed and publish_hint(rounded, tmp_path).startswith(f"kept in {tmp_path}, not served")


def test_nan_where_the_source_has_a_number_fails():
    expected = [{"logits": np.ones((1, 3), np.float32)}]
    actual = [{"logits": np.array([[1.0, np.nan, 1.0]], np.float32)}]
    assert not compare(LOGITS, expected, actual, default_gate("onnx", None), (1,)).passed


@pytest.mark.torch
def test_traced_branch_fails_torchscript_and_is_kept_aside(tmp_path):
    report = modelport.export(
        source="tests.export.branchy:frozen_scale",
        repository=tmp_path,
        name="branchy",
        formats=("torchscript",),
        quiet=True,
    )
    (row,) = report.rows
    assert row.status == "FAIL" and not report.ok
    assert "output 'output_0' max abs error" in row.message
    assert not (tmp_path / "branchy-torchscript").exists(), "a failing artifact must not be servable"
    rejected = tmp_path / ".rejected" / "branchy-torchscript" / "1"
    manifest = read_manifest(rejected)
    assert manifest.parity is not None and not manifest.parity.passed


@pytest.mark.torch
def test_allow_mismatch_publishes_and_records_it(tmp_path):
    report = modelport.export(
        source="tests.export.branchy:frozen_scale",
        repository=tmp_path,
        name="branchy",
        formats=("torchscript",),
        allow_mismatch=True,
        quiet=True,
    )
    assert report.rows[0].status == "allowed"
    manifest = read_manifest(tmp_path / "branchy-torchscript" / "1")
    assert manifest.parity is not None and manifest.parity.allow_mismatch and not manifest.parity.passed


@pytest.mark.torch
@pytest.mark.tflite
def test_tolerance_override_can_fail_a_float_artifact(tmp_path):
    report = modelport.export(
        source="tests.export.branchy:small",
        repository=tmp_path,
        name="s",
        formats=("onnx", "tflite"),
        atol=0.0,
        rtol=0.0,
        quiet=True,
    )
    statuses = {r.variant: r.status for r in report.rows}
    # bit-exact is too strict for at least one of the converted graphs; each is judged on its own
    assert "FAIL" in statuses.values(), statuses
    assert all(s in ("pass", "FAIL") for s in statuses.values())


@pytest.mark.torch
def test_a_source_whose_outputs_ignore_its_inputs_is_noted_on_every_row(tmp_path):
    report = modelport.export(
        source="tests.export.branchy:saturated", repository=tmp_path, name="c", formats=("onnx", "pt2"), quiet=True
    )
    assert [r.status for r in report.rows] == ["pass", "pass"]  # constants agree: the gate says nothing
    for row in report.rows:
        assert any("the same outputs for every golden input" in note for note in row.notes), row.notes
    report = modelport.export(source="tests.export.branchy:small", repository=tmp_path, name="s", formats=("onnx",))
    assert not any("golden input" in note for note in report.rows[0].notes)


@pytest.mark.torch
def test_one_failing_converter_does_not_lose_the_others(tmp_path):
    report = modelport.export(
        source="tests.export.branchy:sign_branch",
        repository=tmp_path,
        name="b",
        formats=("onnx", "torchscript", "pt2"),
        quiet=True,
    )
    rows = {r.variant: r for r in report.rows}
    # an `if` on a tensor: torch.export (pt2) cannot follow it; onnx and torchscript come from torch.jit.script
    assert {v: r.status for v, r in rows.items()} == {"onnx": "pass", "torchscript": "pass", "pt2": "ERROR"}
    assert rows["pt2"].message.startswith("GuardOnDataDependentSymNode")
    assert "branches on a tensor's value" in rows["pt2"].message
    (note,) = rows["onnx"].notes
    assert note.startswith("exported with the TorchScript-based ONNX exporter from torch.jit.script")
    assert "cause: GuardOnDataDependentSymNode" in note
    assert (tmp_path / "b-onnx").is_dir() and (tmp_path / "b-torchscript").is_dir()
    assert not (tmp_path / "b-pt2").exists()
    assert all("\x1b[" not in r.message and "\n" not in r.message for r in rows.values())


@pytest.mark.torch
@pytest.mark.tflite
def test_unsupported_operator_names_converter_and_op(tmp_path):
    report = modelport.export(
        source="tests.export.branchy:unique_op",
        repository=tmp_path,
        name="u",
        formats=("torchscript", "tflite"),
        quiet=True,
    )
    rows = {r.variant: r for r in report.rows}
    assert rows["torchscript"].status == "pass"
    assert rows["tflite"].status == "ERROR"
    assert rows["tflite"].message.startswith("torch_convert.to_tflite: unsupported operator aten._unique2")


@pytest.mark.tf
@pytest.mark.tflite
def test_an_op_tflite_lacks_in_a_keras_model_is_named(tmp_path):
    import keras

    codes = keras.Input((2,), dtype="int64", name="codes")
    counts = keras.layers.CategoryEncoding(num_tokens=6, output_mode="count")(codes)  # tf.DenseBincount
    model = keras.Model(codes, keras.layers.Dense(1)(counts))
    report = modelport.export(source=model, repository=tmp_path, name="c", formats=("savedmodel", "tflite"), quiet=True)
    rows = {r.variant: r for r in report.rows}
    assert rows["savedmodel"].status == "pass", rows["savedmodel"].message
    assert rows["tflite"].status == "ERROR"
    assert rows["tflite"].message.startswith("tf_convert.to_tflite: unsupported operator tf.DenseBincount: "), rows[
        "tflite"
    ].message


@pytest.mark.torch
def test_a_perturbed_published_artifact_fails_its_golden_check(digits, tmp_path):
    import onnx
    from onnx import numpy_helper

    report = modelport.export(
        source="examples.digits.torch_model:cnn",
        weights=digits.torch_weights,
        repository=tmp_path,
        name="d",
        formats=("onnx",),
        quiet=True,
    )
    directory = Path(report.rows[0].path)
    manifest = read_manifest(directory)
    model = onnx.load(str(directory / "model.onnx"))
    weights = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    perturbed = numpy_helper.to_array(weights) * 1.01
    weights.CopyFrom(numpy_helper.from_array(perturbed, weights.name))
    onnx.save(model, str(directory / "model.onnx"))
    record = verify_golden(open_runtime(directory, manifest).predict, directory, manifest)
    assert not record.passed
    assert isinstance(record.outputs[0], OutputParity) and record.outputs[0].max_abs_error > manifest.parity.atol


def test_a_crashing_converter_process_becomes_a_conversion_error():
    from modelport.errors import ConversionError
    from modelport.exporters.artifact import run_tool

    with pytest.raises(ConversionError, match=r"crashed \(SIGSEGV\)"):
        run_tool(["-c", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"], "test converter")


@pytest.mark.tf
@pytest.mark.tflite
def test_full_int8_calibration_cannot_take_the_export_down(tmp_path):
    """TF's calibrator segfaults on some graphs (Keras LSTM here); it runs in a child process."""
    from tests.export import zoo

    report = modelport.export(
        source=zoo.keras_rnn(),
        repository=tmp_path,
        name="r",
        formats=("tflite",),
        quantize=("float16", "full-int8"),
        quiet=True,
    )
    rows = {r.variant: r for r in report.rows}
    assert rows["tflite"].status == "pass" and rows["tflite-float16"].status == "pass"
    assert rows["tflite-full-int8"].status in ("pass", "FAIL", "ERROR"), rows["tflite-full-int8"]
    assert (tmp_path / ".reports" / "r.json").exists(), "the report is written whatever happened"


@pytest.mark.torch
def test_a_version_published_with_allow_mismatch_loads_when_it_does_as_at_export(tmp_path):
    """The server's golden check holds such a version to what the export recorded, not to the gate it failed:
    it serves; the same artifact against a record of a better export is not ready, saying both."""
    from modelport.manifest import write_manifest
    from modelport.serving.model import load_version
    from modelport.serving.settings import ModelConfig, ServerSettings

    modelport.export(
        source="tests.export.branchy:frozen_scale",
        repository=tmp_path,
        name="branchy",
        formats=("torchscript",),
        allow_mismatch=True,
        quiet=True,
    )
    directory = tmp_path / "branchy-torchscript" / "1"
    settings = ServerSettings(repository=tmp_path)
    loaded = load_version("branchy-torchscript", 1, directory, "", settings, ModelConfig())
    assert loaded.execution is not None, loaded.reason
    for runtime in loaded.execution.runtimes:
        runtime.unload()

    manifest = read_manifest(directory)
    assert manifest.parity is not None and not manifest.parity.passed
    better = tuple(o.model_copy(update={"max_abs_error": 0.0}) for o in manifest.parity.outputs)
    write_manifest(
        manifest.model_copy(update={"parity": manifest.parity.model_copy(update={"outputs": better})}), directory
    )
    refused = load_version("branchy-torchscript", 1, directory, "", settings, ModelConfig())
    assert refused.execution is None
    assert "worse than at export (--allow-mismatch)" in refused.reason and "at export: " in refused.reason
