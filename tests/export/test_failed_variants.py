"""Variants that convert but cannot be validated: the reason, and nothing left behind in the repository.

- ``F.fold`` converts with litert-torch to a STABLEHLO_SCATTER that LiteRT cannot run: the row said
  "unexpected failure: RuntimeError: ..."; it now says LiteRT cannot run the model (and the server's load would);
- a variant that failed after it was staged (the runtime could not load it, or failed on a golden input: the pt2
  program of an EmbeddingBag with per-sample weights refuses a batch of 1) stayed in ``REPO/.staging/``;
- that refusal was "unexpected failure: AssertionError: Guard failed: ..." (a 500 when served): it is a refused
  request now, naming the shapes.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import modelport
from modelport.errors import RejectedInputError
from modelport.manifest import read_manifest
from modelport.runtimes import open_runtime

pytestmark = [pytest.mark.torch, pytest.mark.tflite]


def _fold() -> Any:
    import torch
    from torch.nn import functional

    class Fold(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            patches = functional.unfold(x, kernel_size=2, stride=2)
            return functional.fold(patches * 0.5, output_size=(4, 4), kernel_size=2, stride=2)

    return Fold().eval()


def _weighted_bag() -> Any:
    import torch

    class WeightedBag(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bag = torch.nn.EmbeddingBag(10, 4, mode="sum")

        def forward(self, ids: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
            return self.bag(ids, per_sample_weights=weights)

    torch.manual_seed(0)
    return WeightedBag().eval()


def test_a_model_litert_cannot_run_says_so_and_leaves_nothing_staged(tmp_path):
    report = modelport.export(
        source=_fold(), repository=tmp_path, name="fold", formats=("tflite", "onnx"), inputs=["x:float32:-1x2x4x4"]
    )
    rows = {r.variant: r for r in report.rows}
    assert rows["tflite"].status == "ERROR"
    assert rows["tflite"].message.startswith("LiteRT cannot run this model: "), rows["tflite"].message
    assert "STABLEHLO_SCATTER" in rows["tflite"].message
    assert rows["onnx"].status == "pass", rows["onnx"].message
    assert sorted(p.name for p in tmp_path.iterdir()) == [".reports", "fold-onnx"]


def test_a_variant_that_fails_on_a_golden_input_leaves_nothing_staged(tmp_path):
    # torch.export's program of an EmbeddingBag with per-sample weights guards the batch to be at least 2
    report = modelport.export(
        source=_weighted_bag(),
        repository=tmp_path,
        name="bag",
        formats=("pt2", "torchscript"),
        inputs=["ids:int64:-1x-1:0..10", "weights:float32:-1x-1"],
    )
    rows = {r.variant: r for r in report.rows}
    assert rows["pt2"].status == "ERROR"
    assert re.match(
        r"the torch\.export program refuses inputs of these shapes \(ids \[1, \d+\], weights \[1, \d+\]\): "
        r"Guard failed: ",
        rows["pt2"].message,
    ), rows["pt2"].message
    assert rows["torchscript"].status == "pass", rows["torchscript"].message
    assert sorted(p.name for p in tmp_path.iterdir()) == [".reports", "bag-torchscript"]


def test_inputs_a_published_pt2_program_guards_against_are_a_rejected_request(tmp_path):
    report = modelport.export(
        source=_weighted_bag(),
        repository=tmp_path,
        name="bag",
        formats=("pt2",),
        inputs=["ids:int64:-1x-1:0..10", "weights:float32:-1x-1"],
        batch_sizes=(2, 3),  # the golden batches it takes
    )
    (row,) = report.rows
    assert row.status == "pass", row.message
    runtime = open_runtime(Path(row.path), read_manifest(Path(row.path)))
    try:
        assert runtime.predict({"ids": np.ones((2, 4), np.int64), "weights": np.ones((2, 4), np.float32)})
        with pytest.raises(
            RejectedInputError, match=r"refuses inputs of these shapes \(ids \[1, 4\], weights \[1, 4\]\)"
        ):
            runtime.predict({"ids": np.ones((1, 4), np.int64), "weights": np.ones((1, 4), np.float32)})
    finally:
        runtime.unload()
