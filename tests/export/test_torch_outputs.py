"""PyTorch modules that return a dict: its keys name the outputs, and every format keeps each with its value.

litert-torch names a dict's outputs by its keys and its signature lists them sorted; the keys
here are not in alphabetical order, so pairing outputs by sorted name would swap them (and the
parity gate would reject the TFLite variant for shapes [1, 4] vs [1, 2]).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import modelport
from modelport.manifest import read_manifest
from modelport.runtimes import open_runtime

pytestmark = [pytest.mark.torch, pytest.mark.tflite]


def _dict_model(output_names: tuple[str, ...] = ()) -> object:
    import torch
    from torch import nn

    class TwoHeads(nn.Module):
        input_specs = ("x:float32:-1x6",)

        def __init__(self) -> None:
            super().__init__()
            self.score = nn.Linear(6, 2)
            self.feat = nn.Linear(6, 4)

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"score": self.score(x), "feat": self.feat(x)}

    torch.manual_seed(0)
    model = TwoHeads().eval()
    if output_names:
        model.output_names = output_names
    return model


def _expected(model: object, x: np.ndarray) -> list[np.ndarray]:
    import torch

    with torch.no_grad():
        result = model(torch.from_numpy(x))  # type: ignore[operator]
    return [result["score"].numpy(), result["feat"].numpy()]


@pytest.mark.parametrize(("given", "names"), [((), ("score", "feat")), (("b", "a"), ("b", "a"))])
def test_dict_outputs_keep_their_names_and_values_in_every_format(tmp_path, given, names):
    model = _dict_model(given)
    report = modelport.export(
        source=model, repository=tmp_path, name="heads", formats=("onnx", "torchscript", "tflite"), quiet=True
    )
    assert {r.variant: r.status for r in report.rows} == {"onnx": "pass", "torchscript": "pass", "tflite": "pass"}
    x = np.random.default_rng(3).standard_normal((1, 6)).astype(np.float32)
    score, feat = _expected(model, x)
    for row in report.rows:
        directory = Path(row.path)
        manifest = read_manifest(directory)
        assert [(o.name, o.shape[1:]) for o in manifest.outputs] == [(names[0], (2,)), (names[1], (4,))], row.variant
        runtime = open_runtime(directory, manifest)
        try:
            actual = runtime.predict({"x": x})
        finally:
            runtime.unload()
        np.testing.assert_allclose(actual[names[0]], score, atol=1e-5, err_msg=row.variant)
        np.testing.assert_allclose(actual[names[1]], feat, atol=1e-5, err_msg=row.variant)
