"""TFLite input shapes: a pinned dynamic dim is a note on the report row, and the user can choose the shape."""

from __future__ import annotations

from pathlib import Path

import pytest

import modelport
from modelport.errors import InvalidArgumentError, SpecError
from modelport.exporters.options import ExportOptions
from modelport.manifest import read_manifest
from tests.export import keras_kinds
from tests.user_cli import run_modelport

TEXT_MODEL = """\
import torch


class Bag(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(50, 8)
        self.head = torch.nn.Linear(8, 3)

    def forward(self, ids):
        return self.head(self.embed(ids).mean(dim=1))


def make_model():
    torch.manual_seed(0)
    return Bag().eval()
"""


def _export_text(cwd: Path, *extra: str) -> tuple[int, str, str]:
    args = ["export", "text.py:make_model", "--input", "ids:int64:-1x-1:0..50", "--format", "tflite"]
    done = run_modelport(*args, "--repository", "repo", "--name", "text", "--quiet", *extra, cwd=cwd)
    return done.returncode, done.stdout, done.stderr


@pytest.mark.torch
@pytest.mark.tflite
def test_torch_tflite_pins_dynamic_dims_with_a_note_and_takes_a_chosen_shape(tmp_path):
    (tmp_path / "text.py").write_text(TEXT_MODEL)
    code, out, err = _export_text(tmp_path)
    assert code == 0, err
    assert (
        "tflite: note: input 'ids' has the fixed shape 1x8 in this artifact (the source takes -1x-1): "
        "other shapes are refused; choose it with --tflite-shape ids:SHAPE"
    ) in out.splitlines()
    code, out, err = _export_text(tmp_path, "--tflite-shape", "ids:1x128")
    assert code == 0, err
    assert "note:" not in out
    manifest = read_manifest(tmp_path / "repo" / "text-tflite" / "2")
    assert [s.describe() for s in manifest.inputs] == ["ids:int64:1x128"]
    assert manifest.parity is not None and manifest.parity.passed and manifest.parity.batch_sizes == (1,)


@pytest.mark.tf
@pytest.mark.tflite
def test_keras_tflite_takes_a_chosen_shape(tmp_path):
    report = modelport.export(
        source=keras_kinds.functional(),
        repository=tmp_path,
        name="k",
        formats=("savedmodel", "tflite"),
        tflite_shapes={"x": (2, keras_kinds.FEATURES)},
        quiet=True,
    )
    rows = {r.variant: r for r in report.rows}
    assert rows["tflite"].status == "pass" and rows["savedmodel"].status == "pass", report.rows
    assert rows["tflite"].notes == () and rows["savedmodel"].notes == ()
    tflite = read_manifest(Path(rows["tflite"].path))
    assert [s.describe() for s in tflite.inputs] == ["x:float32:2x6"]
    assert [s.describe() for s in read_manifest(Path(rows["savedmodel"].path)).inputs] == ["x:float32:-1x6"]


@pytest.mark.tf
@pytest.mark.tflite
def test_keras_inputs_declared_like_a_chosen_one_take_its_shape(tmp_path):
    """ids and a mask, both -1x-1, and --tflite-shape ids:1x12: the Keras model was re-exported with the mask
    still dynamic, its golden inputs drew the mask at 1x8, and the source failed on them (incompatible shapes)."""
    import keras

    keras.utils.set_random_seed(0)
    ids = keras.Input((None,), dtype="int32", name="ids")
    mask = keras.Input((None,), dtype="int32", name="mask")
    weights = keras.ops.expand_dims(keras.ops.cast(mask, "float32"), -1)
    pooled = keras.ops.sum(keras.layers.Embedding(50, 4)(ids) * weights, axis=1)
    model = keras.Model([ids, mask], keras.layers.Dense(3)(pooled))
    report = modelport.export(
        source=model,
        repository=tmp_path,
        name="bag",
        formats=("tflite",),
        inputs=["ids:int32:-1x-1:0..50", "mask:int32:-1x-1:0..2"],
        tflite_shapes={"ids": (1, 12)},
        quiet=True,
    )
    (row,) = report.rows
    assert row.status == "pass", row
    assert [s.describe_range() for s in read_manifest(Path(row.path)).inputs] == [
        "ids:int32:1x12:0..50",
        "mask:int32:1x12:0..2",
    ]
    assert row.notes == (
        "input 'mask' has the fixed shape 1x12 in this artifact, the shape chosen for 'ids' (--tflite-shape ids:...), "
        "which is declared alike (-1x-1): other shapes are refused",
    ), row.notes


@pytest.mark.torch
@pytest.mark.parametrize(
    ("formats", "shape", "error", "message"),
    [
        (("onnx",), "x:1x4", InvalidArgumentError, "--tflite-shape applies to the tflite format, which is not in"),
        (("tflite",), "y:1x4", SpecError, r"--tflite-shape y: the model has no such input \(its inputs: x\)"),
        (("tflite",), "x:1x5", SpecError, "--tflite-shape x:1x5 does not fit the input x:float32:-1x4"),
        (("tflite",), "x:1x4x1", SpecError, "does not fit the input"),
    ],
)
def test_chosen_shapes_that_do_not_apply_fail_before_converting(tmp_path, formats, shape, error, message):
    with pytest.raises(error, match=message):
        modelport.export(
            source="tests.export.branchy:small",
            repository=tmp_path,
            name="s",
            formats=formats,
            tflite_shapes=[shape],
            quiet=True,
        )
    assert not (tmp_path / "s-tflite").exists()


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (["ids:1x128"], {"ids": (1, 128)}),
        ("ids:1x128", {"ids": (1, 128)}),
        ({"ids": (1, 128), "mask": "1x128"}, {"ids": (1, 128), "mask": (1, 128)}),
    ],
)
def test_tflite_shapes_option_forms(given, expected):
    options = ExportOptions(source="m.keras", repository=Path("r"), name="m", tflite_shapes=given)
    assert options.tflite_shapes == expected


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (["ids"], "--tflite-shape takes NAME:SHAPE, e.g. ids:1x128; got 'ids'"),
        (["ids:1x-1"], "--tflite-shape ids:1x-1: give every dim as a positive integer"),
        ({"ids": (0, 4)}, r"--tflite-shape ids:\(0, 4\): give every dim"),
        (7, "tflite_shapes takes"),
    ],
)
def test_tflite_shapes_option_errors(given, message):
    with pytest.raises(SpecError, match=message):
        ExportOptions(source="m.keras", repository=Path("r"), name="m", tflite_shapes=given)


@pytest.mark.tf
def test_chosen_shapes_need_a_keras_or_torch_source(tmp_path):
    import tensorflow as tf

    class Double(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
        def __call__(self, x):
            return {"y": 2.0 * x}

    with pytest.raises(modelport.ModelportError, match="--tflite-shape needs a PyTorch or Keras source: a module"):
        modelport.export(
            source=Double(), repository=tmp_path, name="d", formats=("tflite",), tflite_shapes=["x:1x3"], quiet=True
        )


@pytest.mark.torch
@pytest.mark.tflite
@pytest.mark.parametrize(("chosen", "expected"), [({}, (1, 8, 3)), ({"ids": (2, 5)}, (2, 5, 3))])
def test_a_static_tflite_artifact_declares_the_output_shape_it_answers(tmp_path, chosen, expected):
    """Per-token logits of ids -1x-1: the artifact takes 1x8 (or the chosen shape) and answers 1x8x3, which its
    manifest (and so the server's metadata) said was 1x-1x3."""
    import torch

    torch.manual_seed(0)
    tagger = torch.nn.Sequential(torch.nn.Embedding(50, 8), torch.nn.Linear(8, 3)).eval()
    report = modelport.export(
        source=tagger,
        repository=tmp_path,
        name="tagger",
        formats=("tflite", "onnx"),
        inputs=["ids:int64:-1x-1:0..50"],
        tflite_shapes=chosen,
        quiet=True,
    )
    rows = {r.variant: r for r in report.rows}
    assert {v: r.status for v, r in rows.items()} == {"tflite": "pass", "onnx": "pass"}, report.rows
    (tflite,) = read_manifest(Path(rows["tflite"].path)).outputs
    assert tflite.shape == expected
    (onnx,) = read_manifest(Path(rows["onnx"].path)).outputs
    assert onnx.shape == (-1, -1, 3)  # dynamic inputs keep dynamic outputs


def test_inputs_declared_like_a_chosen_one_take_its_shape():
    """A mask beside its ids (both -1x-1): given only the ids' shape, the mask kept the default 1x8 and the
    conversion failed inside the model ("Attempting to broadcast a dimension of length 8")."""
    from modelport.exporters.tflite_shapes import filled_shapes
    from modelport.manifest import TensorSpec

    specs = tuple(
        TensorSpec.parse(s) for s in ("ids:int64:-1x-1", "mask:int64:-1x-1", "types:int64:-1x-1", "x:float32:-1x4")
    )
    shapes = {s.name: s.shape for s in filled_shapes(specs, {"ids": (2, 16)}, batch=1, dynamic=8)}
    assert shapes == {"ids": (2, 16), "mask": (2, 16), "types": (2, 16), "x": (1, 4)}
    shapes = {s.name: s.shape for s in filled_shapes(specs, {"ids": (2, 16), "mask": (3, 5)}, batch=1, dynamic=8)}
    assert shapes == {"ids": (2, 16), "mask": (3, 5), "types": (2, 16), "x": (1, 4)}
