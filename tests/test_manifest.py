from __future__ import annotations

import json

import pytest

from modelport.errors import ManifestError, SpecError
from modelport.manifest import (
    ModelManifest,
    OutputParity,
    ParityRecord,
    Quantization,
    SourceInfo,
    TensorSpec,
    read_manifest,
    write_manifest,
)


def _manifest() -> ModelManifest:
    return ModelManifest(
        name="digits-onnx",
        version=3,
        family="digits",
        variant="onnx-static-int8",
        format="onnx",
        artifact="model.onnx",
        platform={"opset": "18"},
        inputs=(TensorSpec(name="image", dtype="FP32", shape=(-1, 1, 8, 8), layout="NCHW", mean=(0.5,), std=(0.2,)),),
        outputs=(TensorSpec(name="logits", dtype="float32", shape=(-1, 10)),),
        native_names={"logits": "output_0"},
        max_batch_size=64,
        source=SourceInfo(framework="torch", kind="factory", location="m:f", sha256="ab" * 32),
        parity=ParityRecord(
            gate="agreement",
            atol=0.1,
            rtol=0.1,
            min_agreement=0.99,
            batch_sizes=(1, 3),
            outputs=(
                OutputParity(name="logits", max_abs_error=0.3, max_rel_error=0.1, top1_agreement=1.0, passed=True),
            ),
            passed=True,
            accuracy=0.98,
            source_accuracy=0.987,
        ),
        quantization=Quantization(method="static-int8", calibration="eval", calibration_samples=256),
        files={"model.onnx": "cd" * 32},
    )


def test_round_trip(tmp_path):
    manifest = _manifest()
    write_manifest(manifest, tmp_path)
    assert read_manifest(tmp_path) == manifest
    assert manifest.inputs[0].dtype == "float32"  # canonical name, whatever alias was given
    assert manifest.native("logits") == "output_0"
    assert manifest.native("image") == "image"


def test_missing_manifest_is_a_clear_error(tmp_path):
    with pytest.raises(ManifestError, match="no manifest"):
        read_manifest(tmp_path)


def test_broken_json(tmp_path):
    (tmp_path / "modelport.json").write_text("{not json")
    with pytest.raises(ManifestError, match="cannot read manifest"):
        read_manifest(tmp_path)


@pytest.mark.parametrize(
    ("change", "where"),
    [({"version": 0}, "version"), ({"format": "caffe"}, "format"), ({"unknown_field": 1}, "unknown_field")],
)
def test_invalid_fields_name_the_field(tmp_path, change, where):
    data = json.loads(_manifest().model_dump_json())
    data.update(change)
    (tmp_path / "modelport.json").write_text(json.dumps(data))
    with pytest.raises(ManifestError, match=f"at {where}"):
        read_manifest(tmp_path)


def test_tensor_spec_parsing():
    spec = TensorSpec.parse("ids:int64:-1x-1:0..1000")
    assert (spec.name, spec.dtype, spec.shape, spec.value_range) == ("ids", "int64", (-1, -1), (0.0, 1000.0))
    assert spec.describe() == "ids:int64:-1x-1"
    assert spec.describe_range() == "ids:int64:-1x-1:0..1000", "the whole flag, as `modelport inspect` shows it"
    assert TensorSpec.parse("x:float32:-1x2:-0.5..1").describe_range() == "x:float32:-1x2:-0.5..1"
    assert TensorSpec.parse("x:float32:-1x2").describe_range() == "x:float32:-1x2"


@pytest.mark.parametrize("text", ["image", "image:float32", ":float32:1", "x:float99:1", "x:float32:1:5", "x:f32:ax1"])
def test_bad_tensor_specs(text):
    with pytest.raises(SpecError):
        TensorSpec.parse(text)


def test_infinite_and_nan_errors_round_trip(tmp_path):
    failed = OutputParity(name="logits", max_abs_error=float("inf"), max_rel_error=float("nan"), passed=False)
    manifest = _manifest().model_copy(update={"parity": _manifest().parity.model_copy(update={"outputs": (failed,)})})
    write_manifest(manifest, tmp_path)
    loaded = read_manifest(tmp_path).parity.outputs[0]
    assert loaded.max_abs_error == float("inf") and loaded.max_rel_error != loaded.max_rel_error
