"""A torch.export ``.pt2`` program as the source: its dynamic dims, input names and dict outputs carry over.

The program below has int64 ids and a bool mask with a dynamic batch and sequence length, and
returns a dict. Its input specs used to come from its example inputs only (``input_0:int64:2x7``:
every artifact static at batch 2), its TFLite conversion failed ("Calling eval() is not supported
yet", a .pt2 module has no ``eval``), and TorchScript failed on the dict result (strict tracing).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import modelport
from modelport.manifest import read_manifest
from modelport.runtimes import open_runtime

pytestmark = [pytest.mark.torch, pytest.mark.tflite]


def _program(path: Path) -> Any:
    import torch
    from torch import nn

    class Pooler(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(10, 4)
            self.head = nn.Linear(4, 3)

        def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
            keep = mask.unsqueeze(-1).to(torch.float32)
            pooled = (self.embed(ids) * keep).sum(1) / (keep.sum(1) + 1.0)
            return {"scores": self.head(pooled), "pooled": pooled}

    torch.manual_seed(0)
    model = Pooler().eval()
    batch, length = torch.export.Dim("batch"), torch.export.Dim("length")
    examples = (torch.randint(0, 10, (2, 7)), torch.rand(2, 7) < 0.5)
    dynamic = ({0: batch, 1: length}, {0: batch, 1: length})
    torch.export.save(torch.export.export(model, examples, dynamic_shapes=dynamic), str(path))
    return model


def test_a_pt2_program_keeps_its_dynamic_dims_names_and_outputs(tmp_path):
    import torch

    model = _program(tmp_path / "pooler.pt2")
    report = modelport.export(
        source=str(tmp_path / "pooler.pt2"),
        repository=tmp_path / "repo",
        name="p",
        formats=("onnx", "torchscript", "pt2", "tflite"),
        quiet=True,
    )
    assert {r.variant: r.status for r in report.rows} == dict.fromkeys(("onnx", "torchscript", "pt2", "tflite"), "pass")
    rows = {r.variant: Path(r.path) for r in report.rows}
    rng = np.random.default_rng(4)
    for variant, directory in rows.items():
        manifest = read_manifest(directory)
        shape = (1, 8) if variant == "tflite" else (-1, -1)  # litert-torch converts at static shapes
        assert [s.describe() for s in manifest.inputs] == [
            f"ids:int64:{'x'.join(map(str, shape))}",
            f"mask:bool:{'x'.join(map(str, shape))}",
        ], variant
        assert [o.name for o in manifest.outputs] == ["scores", "pooled"], variant
        batch, length = (1, 8) if variant == "tflite" else (5, 11)  # not a golden shape
        ids, mask = rng.integers(0, 10, (batch, length)), rng.random((batch, length)) < 0.5
        with torch.no_grad():
            expected = model(torch.from_numpy(ids), torch.from_numpy(mask))
        runtime = open_runtime(directory, manifest)
        try:
            actual = runtime.predict({"ids": ids, "mask": mask})
        finally:
            runtime.unload()
        for name in ("scores", "pooled"):
            np.testing.assert_allclose(actual[name], expected[name].numpy(), atol=1e-5, err_msg=variant)
