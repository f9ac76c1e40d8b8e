"""A PyTorch model litert-torch converts but LiteRT cannot open is told so in its own terms.

``torch.sort`` / ``torch.topk`` lower to ``STABLEHLO_SORT``, which ai-edge-litert 2.3's interpreter has no kernel
for: the row said LiteRT's own "Didn't find op for builtin opcode ... Are you using an old TFLite binary with a
newer model?", though no newer LiteRT runs it.
"""

from __future__ import annotations

from typing import Any

import pytest

import modelport
from modelport.manifest import TensorSpec

pytestmark = [pytest.mark.torch, pytest.mark.tflite]


def _sorted_scores() -> Any:
    import torch

    class TopScores(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.sort(x, dim=1, descending=True).values[:, :2]

    return TopScores().eval()


def test_an_op_without_a_litert_kernel_is_named_with_the_torch_ops_behind_it(tmp_path):
    report = modelport.export(
        source=_sorted_scores(),
        repository=tmp_path,
        name="top",
        formats=("onnx", "tflite"),
        inputs=(TensorSpec.parse("x:float32:-1x6"),),
        quiet=True,
    )
    rows = {r.variant: r for r in report.rows}
    assert rows["onnx"].status == "pass", rows["onnx"].message
    message = rows["tflite"].message
    assert rows["tflite"].status == "ERROR"
    assert "STABLEHLO_SORT (torch.sort and torch.topk lower to it)" in message, message
    assert "has no kernel for" in message and "old TFLite binary" not in message, message
