"""TFLite Metadata written with the flatbuffers schema reads back field for field, and LiteRT still runs."""

from __future__ import annotations

import numpy as np
import pytest

from modelport.errors import InvalidArgumentError
from modelport.golden import load_golden
from modelport.manifest import read_manifest
from modelport.mobile.tflite_metadata import (
    AssociatedFile,
    ModelMetadata,
    TensorMetadata,
    associated_files,
    embed_metadata,
    metadata_to_bytes,
    parse_metadata,
    read_metadata,
)

FULL = ModelMetadata(
    name="digits",
    description="a digits CNN",
    version="3 (float16)",
    inputs=(
        TensorMetadata("image", "float32 [-1, 8, 8, 3] NHWC", "image", "RGB", (0.5, 0.25, 0.125), (2.0, 3.0, 4.0)),
        TensorMetadata("extra", "a feature", min=(-1.0,), max=(1.0,)),
    ),
    outputs=(TensorMetadata("logits", "class scores", files=(AssociatedFile("labels.txt", "labels"),)),),
    author="modelport",
    license="Apache-2.0",
)


def test_every_written_field_reads_back():
    """Values are stored as float32 (the schema's type): these are exact in float32."""
    data = metadata_to_bytes(FULL)
    assert data[4:8] == b"M001", "the schema's file identifier"
    assert parse_metadata(data) == FULL


def test_parse_refuses_a_buffer_that_is_not_metadata():
    with pytest.raises(InvalidArgumentError, match="not a TFLite metadata flatbuffer"):
        parse_metadata(b"\x00" * 16)


def _litert_outputs(model: bytes, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_content=model).get_signature_runner("serving_default")
    return {k: np.array(v) for k, v in runner(**inputs).items()}


@pytest.mark.tflite
@pytest.mark.tf
@pytest.mark.torch
def test_bundled_models_carry_metadata_and_labels_and_still_run(digits_repo, bundles):
    for variant in ("float32", "float16", "dynamic-int8", "full-int8"):
        model = (bundles.keras / f"{variant}.tflite").read_bytes()
        meta = read_metadata(model)
        assert meta is not None, variant
        assert (meta.name, meta.version, meta.author) == ("kdigits", f"1 ({variant})", "modelport")
        (image,), (logits,) = meta.inputs, meta.outputs
        assert (image.name, image.content, image.color_space) == ("image", "image", "GRAYSCALE")
        assert (image.mean, image.std) == ((0.0,), (16.0,))
        assert (logits.name, logits.content) == ("logits", "feature")
        assert logits.files == (AssociatedFile("labels.txt", "one label per class, in output order", 2),)
        assert associated_files(model) == {"labels.txt": "".join(f"{i}\n" for i in range(10)).encode()}
    version = digits_repo.root / "kdigits-tflite" / "1"
    manifest = read_manifest(version)
    case = load_golden(version / "golden.npz")[0]
    feed = {manifest.native(k): v for k, v in case.inputs.items()}
    bundled = _litert_outputs((bundles.keras / "float32.tflite").read_bytes(), feed)
    original = _litert_outputs((version / "model.tflite").read_bytes(), feed)
    np.testing.assert_array_equal(bundled[manifest.native("logits")], original[manifest.native("logits")])


@pytest.mark.tflite
@pytest.mark.torch
def test_nchw_input_is_described_as_a_feature_with_its_value_range(bundles):
    meta = read_metadata((bundles.torch / "float32.tflite").read_bytes())
    assert meta is not None
    assert (meta.inputs[0].content, meta.inputs[0].min, meta.inputs[0].max) == ("feature", (0.0,), (1.0,))
    assert meta.inputs[0].mean is None


@pytest.mark.tflite
@pytest.mark.torch
def test_embedding_again_replaces_the_metadata_and_the_zip(digits_repo):
    from ai_edge_litert import schema_py_generated as schema

    original = (digits_repo.root / "digits-tflite" / "1" / "model.tflite").read_bytes()
    once = embed_metadata(original, FULL, {"labels.txt": b"a\n"})
    twice = embed_metadata(once, FULL, {"labels.txt": b"b\n"})
    model = schema.Model.GetRootAs(bytearray(twice), 0)
    names = [model.Metadata(i).Name() for i in range(model.MetadataLength())]
    assert names.count(b"TFLITE_METADATA") == 1
    assert model.BuffersLength() == schema.Model.GetRootAs(bytearray(once), 0).BuffersLength()
    assert read_metadata(twice) == FULL and associated_files(twice) == {"labels.txt": b"b\n"}
    with pytest.raises(InvalidArgumentError, match="do not match"):
        embed_metadata(original, FULL, {"other.txt": b""})


def test_a_uint8_image_input_is_an_image_in_the_image_steps_layout():
    """A Keras uint8 image model has no layout of its own in bundle.json (only float 4-D inputs get the framework's):
    its metadata said 'feature', which the Task Library does not feed images to; the image step says NHWC."""
    from modelport.manifest import ModelManifest, SourceInfo, TensorSpec
    from modelport.mobile.describe import model_metadata

    manifest = ModelManifest(
        name="u8-tflite",
        version=1,
        family="u8",
        variant="tflite",
        format="tflite",
        artifact="model.tflite",
        inputs=(TensorSpec(name="pixels", dtype="uint8", shape=(-1, 24, 24, 3)),),
        outputs=(TensorSpec(name="logits", dtype="float32", shape=(-1, 6)),),
        source=SourceInfo(framework="tf", kind="factory", location="m.py:f", sha256="ab" * 32),
    )
    inputs = [{"name": "pixels", "dtype": "uint8", "shape": [-1, 24, 24, 3], "layout": None}]
    outputs = [{"name": "logits", "dtype": "float32", "shape": [-1, 6]}]
    step = {"kind": "image", "input": "pixels", "layout": "NHWC", "mode": "RGB", "scale": 1.0, "mean": None}
    step["std"] = None
    metadata = model_metadata(manifest, "float32", inputs, outputs, (["pixels"], ["logits"]), {"pre": [step]})
    [tensor] = metadata.inputs
    assert (tensor.content, tensor.color_space, tensor.mean, tensor.std) == ("image", "RGB", (0.0,), (1.0,))
    assert tensor.description == "uint8 [-1, 24, 24, 3] NHWC"
