"""Real exports of the example digits CNNs to every format, checked end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import modelport
from modelport.exporters import ExportOptions, ExportReport
from modelport.manifest import file_sha256, read_manifest
from modelport.parity import verify_golden
from modelport.runtimes import open_runtime

TORCH_VARIANTS = {
    "onnx",
    "torchscript",
    "pt2",
    "tflite",
    "ort",
    "tflite-float16",
    "tflite-dynamic-int8",
    "tflite-full-int8",
    "onnx-dynamic-int8",
    "onnx-static-int8",
}
KERAS_VARIANTS = {
    "savedmodel",
    "tflite",
    "onnx",
    "ort",
    "tflite-float16",
    "tflite-dynamic-int8",
    "tflite-full-int8",
    "onnx-dynamic-int8",
    "onnx-static-int8",
}


@pytest.fixture(scope="module")
def torch_export(digits_repo) -> tuple[ExportReport, Path]:
    return digits_repo.torch, digits_repo.root


@pytest.fixture(scope="module")
def keras_export(digits_repo) -> tuple[ExportReport, Path]:
    return digits_repo.keras, digits_repo.root


def _published(report: ExportReport) -> dict[str, Path]:
    return {row.variant: Path(row.path) for row in report.rows}


@pytest.mark.torch
@pytest.mark.tflite
def test_torch_digits_every_format_passes(torch_export):
    report, repo = torch_export
    assert {r.variant for r in report.rows} == TORCH_VARIANTS
    assert [r.variant for r in report.rows if r.status != "pass"] == [], [r.message for r in report.rows]
    assert report.ok
    assert report.source_accuracy is not None and report.source_accuracy >= 0.95
    for row in report.rows:
        assert row.accuracy is not None and row.accuracy >= 0.95, row
        assert row.top1_agreement is not None and row.top1_agreement >= 0.99, row
        assert row.path == str(repo / f"digits-{row.variant}" / "1")


@pytest.mark.torch
@pytest.mark.tflite
def test_torch_tflite_quantized_digits_stay_within_a_point_of_float32(torch_export):
    """AI Edge Quantizer's variants of the litert-torch model: smaller, and accurate to 1 point on eval data."""
    report, _ = torch_export
    rows = {r.variant: r for r in report.rows}
    baseline = rows["tflite"].accuracy
    assert baseline is not None and report.source_accuracy is not None
    for variant in ("tflite-float16", "tflite-dynamic-int8", "tflite-full-int8"):
        row = rows[variant]
        assert row.accuracy is not None and abs(row.accuracy - baseline) <= 0.01, (variant, row.accuracy, baseline)
        assert abs(row.accuracy - report.source_accuracy) <= 0.01, (variant, row.accuracy, report.source_accuracy)
    sizes = {v: rows[v].size_bytes for v in ("tflite", "tflite-float16", "tflite-dynamic-int8", "tflite-full-int8")}
    assert sizes["tflite-dynamic-int8"] < sizes["tflite-float16"] < sizes["tflite"], sizes
    assert sizes["tflite-full-int8"] < sizes["tflite"] / 3, sizes
    full = read_manifest(Path(rows["tflite-full-int8"].path))
    assert full.platform["recipe"] == "static_wi8_ai8" and full.inputs[0].dtype == "float32"
    assert full.quantization is not None and full.quantization.calibration_samples


@pytest.mark.tf
@pytest.mark.tflite
def test_keras_digits_every_format_passes(keras_export):
    report, _ = keras_export
    assert {r.variant for r in report.rows} == KERAS_VARIANTS
    assert [(r.variant, r.message) for r in report.rows if r.status != "pass"] == []
    assert all(r.accuracy is not None and r.accuracy >= 0.95 for r in report.rows)
    sizes = {r.variant: r.size_bytes for r in report.rows}
    assert sizes["tflite-dynamic-int8"] < sizes["tflite-float16"] < sizes["tflite"]


@pytest.mark.torch
@pytest.mark.tf
@pytest.mark.parametrize("which", ["torch_export", "keras_export"])
def test_published_versions_are_complete_and_reproduce_their_golden_vectors(which, request):
    report, _ = request.getfixturevalue(which)
    for variant, directory in _published(report).items():
        manifest = read_manifest(directory)
        assert manifest.variant == variant and manifest.parity is not None and manifest.parity.passed
        assert manifest.files, variant
        for name, digest in manifest.files.items():
            assert file_sha256(directory / name) == digest, f"{variant}: {name} checksum"
        assert (directory / manifest.artifact).exists()
        runtime = open_runtime(directory, manifest)
        record = verify_golden(runtime.predict, directory, manifest)
        assert record.passed, (variant, record)
        assert set(record.batch_sizes) == ({1} if manifest.inputs[0].shape[0] == 1 else {1, 3}), variant


@pytest.mark.torch
def test_torch_manifests_describe_the_model(torch_export):
    report, _ = torch_export
    paths = _published(report)
    onnx = read_manifest(paths["onnx"])
    assert [s.describe() for s in onnx.inputs] == ["image:float32:-1x1x8x8"]
    assert [s.describe() for s in onnx.outputs] == ["logits:float32:-1x10"]
    assert onnx.max_batch_size == 64 and onnx.source.framework == "torch" and onnx.source.sha256
    assert onnx.platform["exporter"] == "dynamo" and onnx.platform["opset"] == "18"
    tflite = read_manifest(paths["tflite"])  # litert-torch: static shapes, so no batching
    assert tflite.inputs[0].shape == (1, 1, 8, 8) and tflite.max_batch_size == 0
    static = read_manifest(paths["onnx-static-int8"])
    assert static.quantization is not None and static.quantization.method == "static-int8"
    assert static.parity is not None and static.parity.gate == "agreement"


@pytest.mark.tf
@pytest.mark.tflite
def test_keras_layouts(keras_export):
    report, repo = keras_export
    paths = _published(report)
    saved = paths["savedmodel"]
    assert (saved / "saved_model.pb").exists() and (saved / "variables").is_dir(), "TF Serving layout"
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(paths["tflite-full-int8"] / "model.tflite")).get_signature_runner()
    assert [d["dtype"] for d in runner.get_input_details().values()] == [np.int8]
    assert read_manifest(paths["tflite-full-int8"]).inputs[0].dtype == "float32", "clients keep sending floats"
    saved_report = json.loads((repo / ".reports" / "kdigits.json").read_text())
    assert saved_report["ok"] is True and len(saved_report["rows"]) == len(KERAS_VARIANTS)


@pytest.mark.torch
def test_artifacts_are_sources_too(torch_export, tmp_path):
    """A TorchScript file and a .pt2 program export onward with their own parity checks."""
    report, _ = torch_export
    paths = _published(report)
    for variant, spec in (("torchscript", "image:float32:-1x1x8x8"), ("pt2", None)):
        source = paths[variant] / read_manifest(paths[variant]).artifact
        options = ExportOptions(
            source=str(source),
            repository=tmp_path,
            name=f"from-{variant}",
            formats=("onnx",),
            inputs=(modelport.TensorSpec.parse(spec),) if spec else (),
            quiet=True,
        )
        result = modelport.export(options)
        assert [(r.variant, r.status) for r in result.rows] == [("onnx", "pass")], result.rows


@pytest.mark.tf
def test_savedmodel_directory_and_keras_object_sources(keras_export, digits, tmp_path):
    report, _ = keras_export
    saved = _published(report)["savedmodel"]
    result = modelport.export(
        source=str(saved), repository=tmp_path, name="from-saved", formats=("tflite",), quiet=True
    )
    assert [(r.variant, r.status) for r in result.rows] == [("tflite", "pass")]
    assert read_manifest(Path(result.rows[0].path)).inputs[0].describe() == "image:float32:-1x8x8x1"

    import keras

    model = keras.models.load_model(digits.keras_model)
    result = modelport.export(
        source=model, repository=tmp_path, name="from-object", formats=("savedmodel",), quiet=True
    )
    assert [(r.variant, r.status) for r in result.rows] == [("savedmodel", "pass")]


@pytest.mark.torch
def test_next_export_takes_the_next_version(digits, tmp_path):
    common = {
        "source": "examples.digits.torch_model:cnn",
        "weights": digits.torch_weights,
        "repository": tmp_path,
        "name": "d",
        "formats": ("torchscript",),
        "quiet": True,
    }
    assert modelport.export(**common).rows[0].version == 1
    assert modelport.export(**common).rows[0].version == 2
    assert sorted(p.name for p in (tmp_path / "d-torchscript").iterdir()) == ["1", "2"]
    with pytest.raises(modelport.ModelportError, match="already exists"):
        modelport.export(**common, version=2)
