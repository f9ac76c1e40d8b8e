"""``--layout NAME:LAYOUT`` / ``layouts=``: an input's layout recorded at export, checked against the input."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelport.errors import SpecError
from modelport.exporters.options import ExportOptions
from modelport.exporters.source_model import laid_out
from modelport.manifest import TensorSpec, read_manifest
from tests.user_cli import run_modelport

BATCHED = TensorSpec(name="input", dtype="float32", shape=(-1, 299, 299, 3))
UNBATCHED = TensorSpec(name="data_0", dtype="float32", shape=(3, 224, 224))
GRAY = TensorSpec(name="gray", dtype="float32", shape=(-1, 224, 224))  # a batch of gray images: no channel dim
PLANE = TensorSpec(name="plane", dtype="float32", shape=(224, 224))


def _options(layouts: object) -> ExportOptions:
    return ExportOptions(source="m.keras", repository=Path("repo"), name="m", layouts=layouts)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "given", [["input:NHWC"], ("input:nhwc",), "input:NHWC", {"input": "NHWC"}], ids=["list", "tuple", "str", "dict"]
)
def test_layouts_take_flag_strings_or_a_mapping(given):
    assert _options(given).layouts == {"input": "NHWC"}


def test_a_name_with_colons_keeps_them():
    assert _options(["serving_default_input:0:NCHW"]).layouts == {"serving_default_input:0": "NCHW"}


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (["input:CHW"], "the layout is one of NCHW, NHWC, NCW, NWC"),
        (["input"], "--layout takes NAME:LAYOUT"),
        (["input:NCHW", "input:NHWC"], "given twice"),
    ],
)
def test_bad_layouts_say_what_is_expected(given, message):
    with pytest.raises(SpecError, match=message):
        _options(given)


def test_laid_out_sets_the_layout_of_the_named_inputs_only():
    other = TensorSpec(name="mask", dtype="bool", shape=(-1, 8))
    assert laid_out((BATCHED, other), {"input": "NHWC"}, "m") == (BATCHED.model_copy(update={"layout": "NHWC"}), other)


def test_an_input_without_batch_dimension_takes_a_layout_one_longer_than_its_rank():
    (spec,) = laid_out((UNBATCHED,), {"data_0": "NCHW"}, "m")
    assert spec.layout == "NCHW"


@pytest.mark.parametrize(
    ("spec", "layouts", "message"),
    [
        (BATCHED, {"image": "NHWC"}, r"--layout names \['image'\], which m does not take: its inputs are \['input'\]"),
        (BATCHED, {"input": "NCW"}, "--layout input:NCW does not fit input:float32:-1x299x299x3"),
        (GRAY, {"gray": "NCHW"}, "--layout gray:NCHW does not fit gray:float32:-1x224x224: NCHW has 4 dims"),
        (PLANE, {"plane": "NCHW"}, r"--layout plane:NCHW does not fit plane:float32:224x224: .*\(3 for an input"),
    ],
)
def test_a_layout_that_does_not_fit_the_inputs_is_refused(spec, layouts, message):
    with pytest.raises(SpecError, match=message):
        laid_out((spec,), layouts, "m")


def test_the_cli_refuses_a_layout_for_an_input_the_model_does_not_have(tmp_path):
    (tmp_path / "model.py").write_text("import torch\n\ndef make():\n    return torch.nn.Conv2d(3, 4, 3).eval()\n")
    done = run_modelport(
        "export", "model.py:make", "--input", "x:float32:-1x3x8x8", "--layout", "image:NCHW",
        "--format", "onnx", "--repository", "repo", "--name", "m", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode != 0
    assert "--layout names ['image']" in done.stderr and "its inputs are ['x']" in done.stderr
    assert not (tmp_path / "repo" / "m-onnx").exists()


@pytest.mark.torch
def test_a_model_without_batch_dimension_records_no_golden_batch_sizes(tmp_path):
    """densenet_onnx's data_0 3x224x224: the parity record said 'batch sizes [3]', the channels of its one case."""
    (tmp_path / "model.py").write_text("import torch\n\ndef make():\n    return torch.nn.Conv2d(3, 4, 3).eval()\n")
    done = run_modelport(
        "export", "model.py:make", "--input", "data_0:float32:3x8x8", "--layout", "data_0:NCHW",
        "--format", "onnx", "--repository", "repo", "--name", "m", "--quiet", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    manifest = read_manifest(tmp_path / "repo" / "m-onnx" / "1")
    assert manifest.parity is not None and manifest.parity.passed and manifest.parity.batch_sizes == ()
    shown = run_modelport("inspect", "repo/m-onnx/1", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "parity gate: tolerance atol=0.0001 rtol=0.001 no batch dimension" in shown.stdout.splitlines()
