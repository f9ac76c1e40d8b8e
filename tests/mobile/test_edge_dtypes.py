"""An edge bundle answers in the dtypes its bundle.json declares, as the server does.

litert-torch computes an int64 result of a float-input model (an argmax) in int32: ``predict`` answered int32
while bundle.json (and the server) said int64.
"""

from __future__ import annotations

import numpy as np
import pytest

import modelport
from modelport.mobile import modelport_edge as edge
from modelport.mobile.builder import build_bundle
from modelport.mobile.options import BundleOptions
from tests.export import zoo

pytestmark = [pytest.mark.tflite, pytest.mark.torch]


def test_an_int64_result_is_answered_as_int64_on_the_device(tmp_path):
    import torch

    model = zoo.torch_argmax()
    report = modelport.export(
        source=model, repository=tmp_path / "repo", name="am", formats=("tflite",), inputs=["x:float32:-1x4"]
    )
    assert [r.status for r in report.rows] == ["pass"], report.rows
    build_bundle(BundleOptions(target=tmp_path / "repo" / "am", out=tmp_path / "bundle", quiet=True))
    opened = edge.EdgeModel.open(tmp_path / "bundle")
    assert {o["name"]: o["dtype"] for o in opened.outputs} == {"label": "int64", "scores": "float32"}
    x = np.random.default_rng(0).standard_normal((1, 4)).astype(np.float32)
    answer = opened.predict({"x": x})
    assert answer["label"].dtype == np.int64 and answer["scores"].dtype == np.float32
    assert answer["label"].tolist() == model(torch.from_numpy(x))["label"].tolist()
