"""PyTorch models that trip torch.export or random golden inputs, exported as a user would.

- an op the torch.export-based ONNX exporter lacks (3-d ``scaled_dot_product_attention``: "only 4D query, key,
  and value are supported") used to be an ERROR row; the TorchScript-based exporter converts it, and the gate
  checks what it wrote;
- a submodule named ``meta`` (a metadata tower) clashes with ``torch.fx.GraphModule.meta``: torch.export wrote a
  program that does not load ("Node meta_weight target meta.weight references nonexistent attribute"); the
  error now names the attribute and says to rename it;
- golden inputs drawn at random can be ones the model is not defined on (a mask that masks a whole row: 0/0),
  and NaN golden outputs failed artifacts that answer a number there (PyTorch's fused attention does).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import modelport
from modelport.golden import load_golden
from modelport.manifest import TensorSpec, read_manifest

pytestmark = [pytest.mark.torch, pytest.mark.tflite]


def _attention() -> Any:
    import torch
    from torch import nn
    from torch.nn import functional

    class Attention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.qkv = nn.Linear(8, 24)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            q, k, v = self.qkv(x).chunk(3, -1)
            return functional.scaled_dot_product_attention(q, k, v)  # 3-d: (batch, tokens, features)

    torch.manual_seed(0)
    return Attention().eval()


def _two_towers() -> Any:
    import torch
    from torch import nn

    class TwoTowers(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.image = nn.Linear(4, 3)
            self.meta = nn.Linear(2, 3)  # torch.fx.GraphModule has a `meta` of its own

        def forward(self, image: torch.Tensor, meta: torch.Tensor) -> torch.Tensor:
            return self.image(image) + self.meta(meta)

    torch.manual_seed(0)
    return TwoTowers().eval()


def _masked_mean() -> Any:
    import torch
    from torch import nn

    class MaskedMean(nn.Module):
        def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            keep = mask.to(x.dtype)
            return (x * keep).sum(1, keepdim=True) / keep.sum(1, keepdim=True)  # 0/0 where a row is all masked

    return MaskedMean().eval()


def _specs(*texts: str) -> tuple[TensorSpec, ...]:
    return tuple(TensorSpec.parse(t) for t in texts)


def test_an_op_the_dynamo_onnx_exporter_lacks_is_exported_by_the_torchscript_one(tmp_path):
    report = modelport.export(
        source=_attention(),
        repository=tmp_path,
        name="attn",
        formats=("onnx",),
        inputs=_specs("x:float32:-1x-1x8"),
        quiet=True,
    )
    (row,) = report.rows
    assert row.status == "pass", row.message
    (note,) = row.notes
    assert "TorchScript-based ONNX exporter" in note and "scaled_dot_product_attention" in note, note
    assert read_manifest(Path(row.path)).platform["exporter"] == "legacy"


def test_a_submodule_named_like_a_graph_module_attribute_is_named_in_the_error(tmp_path):
    report = modelport.export(
        source=_two_towers(),
        repository=tmp_path,
        name="towers",
        formats=("onnx", "pt2", "tflite"),
        inputs=_specs("image:float32:-1x4", "meta:float32:-1x2"),
        quiet=True,
    )
    rows = {r.variant: r for r in report.rows}
    for variant in ("pt2", "tflite"):
        assert rows[variant].status == "ERROR"
        assert "'meta'" in rows[variant].message and "rename" in rows[variant].message, rows[variant].message
    assert rows["onnx"].status == "pass", rows["onnx"].message
    assert any("'meta'" in note for note in rows["onnx"].notes)


def test_golden_inputs_are_ones_the_source_answers_finite_values_for(tmp_path):
    report = modelport.export(
        source=_masked_mean(),
        repository=tmp_path,
        name="mean",
        formats=("onnx", "torchscript"),
        inputs=_specs("x:float32:-1x2", "mask:int64:-1x2:0..2"),  # a row is all masked a quarter of the time
        quiet=True,
    )
    assert {r.variant: r.status for r in report.rows} == {"onnx": "pass", "torchscript": "pass"}
    for row in report.rows:
        cases = load_golden(Path(row.path) / "golden.npz")
        assert [c.batch_size for c in cases] == [1, 3]
        for case in cases:  # (the first draws, this test's, held a masked row: their outputs were NaN)
            assert np.isfinite(case.outputs["output_0"]).all(), row.variant
            assert case.inputs["mask"].any(axis=1).all(), row.variant


def test_a_float64_model_that_tflite_cannot_run_is_told_to_convert_a_float32_copy(tmp_path):
    import torch

    torch.manual_seed(0)
    model = torch.nn.Linear(5, 4).double().eval()
    report = modelport.export(
        source=model,
        repository=tmp_path,
        name="f64",
        formats=("onnx", "tflite"),
        inputs=_specs("x:float64:-1x5"),
        quiet=True,
    )
    rows = {r.variant: r for r in report.rows}
    assert rows["onnx"].status == "pass", rows["onnx"].message
    assert rows["tflite"].status == "ERROR"
    assert "float64 (e.g. weight, bias)" in rows["tflite"].message and "model.float()" in rows["tflite"].message


def test_a_model_made_for_fixed_sizes_is_told_how_to_pin_its_dynamic_dims(tmp_path):
    import torch

    from modelport.errors import SourceError

    class Flatten4(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.reshape(-1, 4 * 3)  # made for 4 steps of 3 features

    with pytest.raises(SourceError) as caught:
        modelport.export(
            source=Flatten4(), repository=tmp_path, name="fixed", formats=("onnx",), inputs=_specs("x:float32:-1x-1x3")
        )
    assert re.search(r"failed on inputs x\[\d+, \d+, 3\] \(their dynamic dims", caught.value.message)
    assert "--input x:float32:-1xNx3" in caught.value.message
