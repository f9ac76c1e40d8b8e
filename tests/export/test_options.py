"""``ExportOptions`` takes what a Python user naturally passes, and says what it expects otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest

import modelport
from modelport.errors import SpecError
from modelport.exporters.options import ExportOptions
from modelport.manifest import TensorSpec, read_manifest

IMAGE = TensorSpec(name="image", dtype="float32", shape=(-1, 1, 8, 8))


def _options(**fields: object) -> ExportOptions:
    return ExportOptions(source="m.keras", repository=Path("repo"), name="m", **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "given",
    [
        ["image:float32:-1x1x8x8"],
        ("image:float32:-1x1x8x8",),
        "image:float32:-1x1x8x8",
        [IMAGE],
        IMAGE,
    ],
    ids=["list-of-strings", "tuple-of-strings", "one-string", "list-of-specs", "one-spec"],
)
def test_inputs_take_spec_strings_or_tensor_specs(given):
    assert _options(inputs=given).inputs == (IMAGE,)


def test_inputs_keep_the_value_range_of_a_spec_string():
    (spec,) = _options(inputs=["ids:int64:-1x-1:0..1000"]).inputs
    assert spec.shape == (-1, -1) and spec.value_range == (0.0, 1000.0)


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ([(1, 8, 8)], r"takes spec strings like 'image:float32:-1x1x8x8' or modelport.TensorSpec .* got builtins"),
        ([{"name": "x"}], r"got builtins.dict"),
        (3, r"got builtins.int: 3"),
        (["image:float32"], r"input spec 'image:float32' does not parse"),
    ],
)
def test_other_inputs_say_what_is_expected(given, message):
    with pytest.raises(SpecError, match=message):
        _options(inputs=given)


def test_output_names_take_a_comma_list():
    assert _options(output_names="logits, probs").output_names == ("logits", "probs")
    assert _options(output_names=["logits"]).output_names == ("logits",)


@pytest.mark.torch
def test_api_export_with_spec_strings(tmp_path):
    report = modelport.export(
        source="tests.export.branchy:small",
        repository=tmp_path,
        name="small",
        formats=("onnx",),
        inputs=["x:float32:-1x4"],
        quiet=True,
    )
    assert report.ok, report.rows
    assert [s.describe() for s in read_manifest(Path(report.rows[0].path)).inputs] == ["x:float32:-1x4"]


def _reduce_onnx(path: Path) -> str:
    """x [batch, 3] -> rowsum [batch] and total [] (one value for the whole batch)."""
    from onnx import TensorProto as T
    from onnx import helper, save

    graph = helper.make_graph(
        [
            helper.make_node("ReduceSum", ["x", "axis"], ["rowsum"], keepdims=0),
            helper.make_node("ReduceSum", ["x"], ["total"], keepdims=0),
        ],
        "reduce",
        [helper.make_tensor_value_info("x", T.FLOAT, ["batch", 3])],
        [
            helper.make_tensor_value_info("rowsum", T.FLOAT, ["batch"]),
            helper.make_tensor_value_info("total", T.FLOAT, []),
        ],
        [helper.make_tensor("axis", T.INT64, [1], [1])],
    )
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return str(path)


def test_a_scalar_output_of_a_batched_model_says_how_to_export_it(tmp_path):
    source = _reduce_onnx(tmp_path / "reduce.onnx")
    with pytest.raises(SpecError, match=r"outputs \['total'\] are 0-d .* \(--input x:float32:1x3\)"):
        modelport.export(source=source, formats=("onnx",), repository=tmp_path / "repo", name="r", quiet=True)
    report = modelport.export(
        source=source, formats=("onnx",), inputs=("x:float32:1x3",), repository=tmp_path / "repo", name="r", quiet=True
    )
    assert [row.status for row in report.rows] == ["pass"], report.rows
    assert read_manifest(Path(report.rows[0].path)).max_batch_size == 0
