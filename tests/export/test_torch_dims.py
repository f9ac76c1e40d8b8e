"""PyTorch models whose dims are not what a batch of rows suggests, exported as a user would.

- a 3-operand ``torch.einsum``: opt_einsum chose the contraction order from the example's sizes and torch.export
  (``Dim.AUTO``) silently fixed the batch at the example's 2; the pt2 row was "unexpected failure: AssertionError:
  Guard failed: a.size()[0] == 2". The order is no longer chosen from the sizes, and a model whose code does fix a
  dynamic dim gets an error that names the dim and the ``--input`` that exports it;
- an output that does not follow the batch (a constant vector of 3) was recorded as ``[-1]`` (``[1]`` in a
  static-batch TFLite variant): its metadata said one thing and the answers another;
- an int64 result (an argmax) of a float-input model was INT32 in the TFLite variant's answers (litert-torch
  computes it in int32) while its metadata said INT64.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import modelport
from modelport.manifest import read_manifest
from modelport.runtimes import open_runtime
from tests.export import zoo

pytestmark = [pytest.mark.torch, pytest.mark.tflite]


def _bilinear() -> Any:
    import torch

    class Bilinear(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.randn(3, 4, 5))

        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return torch.einsum("bi,oij,bj->bo", a, self.w, b)

    torch.manual_seed(0)
    return Bilinear().eval()


def _pairs() -> Any:
    import torch

    class Pairs(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.shape[0] == 2:  # the same answer, but torch.export keeps the branch of its example's batch
                return x * 2.0
            return x + x

    return Pairs().eval()


def _with_constant() -> Any:
    import torch

    class WithConstant(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(4, 2)
            self.register_buffer("prior", torch.tensor([0.5, 0.25, 0.25]))

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return self.fc(x), self.prior * 1.0  # one value per row, and the same 3 values for any batch

    torch.manual_seed(0)
    return WithConstant().eval()


def _answer(directory: Path, inputs: dict[str, np.ndarray[Any, Any]]) -> dict[str, np.ndarray[Any, Any]]:
    runtime = open_runtime(directory, read_manifest(directory))
    try:
        return runtime.predict(inputs)
    finally:
        runtime.unload()


def test_an_einsum_model_exports_to_pt2_with_a_dynamic_batch(tmp_path):
    import torch

    model = _bilinear()
    report = modelport.export(
        source=model, repository=tmp_path, name="bil", formats=("pt2",), inputs=["a:float32:-1x4", "b:float32:-1x5"]
    )
    (row,) = report.rows
    assert row.status == "pass", row.message
    assert read_manifest(Path(row.path)).inputs[0].shape == (-1, 4)
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((5, 4), np.float32), rng.standard_normal((5, 5), np.float32)
    expected = model(torch.from_numpy(a), torch.from_numpy(b)).detach().numpy()
    np.testing.assert_allclose(_answer(Path(row.path), {"a": a, "b": b})["output_0"], expected, rtol=1e-5, atol=1e-5)


def test_a_dynamic_dim_torch_export_fixes_is_named_with_the_input_that_exports_it(tmp_path):
    report = modelport.export(
        source=_pairs(), repository=tmp_path, name="pairs", formats=("pt2", "onnx"), inputs=["x:float32:-1x4"]
    )
    rows = {r.variant: r for r in report.rows}
    assert rows["pt2"].status == "ERROR"
    assert "dim 0 of input 'x' static (the example's 2)" in rows["pt2"].message, rows["pt2"].message
    assert "--input x:float32:2x4" in rows["pt2"].message
    assert rows["onnx"].status == "pass", rows["onnx"].message
    assert not (tmp_path / "pairs-pt2").exists()


def test_an_output_that_does_not_follow_the_batch_keeps_its_size_in_the_manifest(tmp_path):
    report = modelport.export(
        source=_with_constant(),
        repository=tmp_path,
        name="prior",
        formats=("onnx", "tflite"),
        inputs=["x:float32:-1x4"],
        output_names=("logits", "prior"),
    )
    rows = {r.variant: r for r in report.rows}
    assert {v: r.status for v, r in rows.items()} == {"onnx": "pass", "tflite": "pass"}, report.rows
    shapes = {v: {o.name: o.shape for o in read_manifest(Path(r.path)).outputs} for v, r in rows.items()}
    assert shapes == {"onnx": {"logits": (-1, 2), "prior": (3,)}, "tflite": {"logits": (1, 2), "prior": (3,)}}
    assert read_manifest(Path(rows["onnx"].path)).max_batch_size == 0  # its rows cannot be split by request
    x = np.ones((2, 4), np.float32)
    answer = _answer(Path(rows["onnx"].path), {"x": x})
    assert answer["logits"].shape == (2, 2)
    np.testing.assert_allclose(answer["prior"], [0.5, 0.25, 0.25])


def test_an_int64_result_of_a_float_model_answers_int64_in_tflite(tmp_path):
    import torch

    model = zoo.torch_argmax()
    report = modelport.export(
        source=model, repository=tmp_path, name="am", formats=("tflite",), inputs=["x:float32:-1x4"]
    )
    (row,) = report.rows
    assert row.status == "pass", row.message
    manifest = read_manifest(Path(row.path))
    assert {o.name: o.dtype for o in manifest.outputs} == {"label": "int64", "scores": "float32"}
    x = np.random.default_rng(0).standard_normal((1, 4)).astype(np.float32)
    answer = _answer(Path(row.path), {"x": x})  # LiteRT computes it as int32 (litert-torch without x64)
    assert answer["label"].dtype == np.int64, answer["label"].dtype
    assert answer["label"].tolist() == model(torch.from_numpy(x))["label"].tolist()
