"""An ONNX model with a string input and a string output (``StringNormalizer``) beside a float one, exported
with ``modelport export`` and served: onnxruntime takes str objects, never bytes, and gives str back.

``text`` STRING [batch] and ``x`` FP32 [batch, 4] in; ``lower`` STRING [batch] (ASCII lower case) and
``probs`` FP32 [batch, 4] (softmax) out.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

import modelport
from modelport.golden import load_golden
from tests.serving.processes import serving

TEXT = np.array([b"Hello", "Ünïcode ÄB".encode(), b""], dtype=object)
LOWER = np.array([b"hello", "Ünïcode Äb".encode(), b""], dtype=object)  # the C locale: ASCII only
X = np.array([[1, 2, 3, 4], [4, 3, 2, 1], [0, 0, 0, 9]], dtype=np.float32)


def _write_onnx(path: Path) -> Path:
    from onnx import TensorProto as T
    from onnx import helper, save

    graph = helper.make_graph(
        [
            helper.make_node("StringNormalizer", ["text"], ["lower"], case_change_action="LOWER", locale="C"),
            helper.make_node("Softmax", ["x"], ["probs"], axis=-1),
        ],
        "strings",
        [
            helper.make_tensor_value_info("text", T.STRING, ["batch"]),
            helper.make_tensor_value_info("x", T.FLOAT, ["batch", 4]),
        ],
        [
            helper.make_tensor_value_info("lower", T.STRING, ["batch"]),
            helper.make_tensor_value_info("probs", T.FLOAT, ["batch", 4]),
        ],
    )
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("strings")
    source = _write_onnx(folder / "strings.onnx")
    report = modelport.export(source=str(source), formats=("onnx",), repository=folder / "repo", name="s", quiet=True)
    assert [row.status for row in report.rows] == ["pass"], report.rows
    return folder / "repo"


@pytest.fixture(scope="module")
def server(repo) -> Iterator[tuple[str, str]]:
    with serving(repo, timeout=60) as served:
        yield served.url, served.grpc


def test_golden_outputs_are_the_lowered_text_not_its_repr(repo):
    for case in load_golden(repo / "s-onnx" / "1" / "golden.npz"):
        expected = [bytes(t).lower() for t in case.inputs["text"].ravel()]
        assert list(case.outputs["lower"].ravel()) == expected  # was b"b's85'": bytes went in as their repr


def test_the_model_passes_its_golden_check_when_served(server):
    ready = requests.get(f"{server[0]}/v2/models/s-onnx/ready", timeout=30)
    assert ready.status_code == 200, ready.text


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("transport", ["http-json", "http-binary", "grpc"])
def test_tritonclient_strings_and_classification(server, transport):
    if transport == "grpc":
        import tritonclient.grpc as triton

        client: Any = triton.InferenceServerClient(url=server[1])
        options: dict[str, bool] = {}
    else:
        import tritonclient.http as triton

        client = triton.InferenceServerClient(url=server[0].removeprefix("http://"))
        options = {"binary_data": transport == "http-binary"}
    inputs = [triton.InferInput("text", [3], "BYTES"), triton.InferInput("x", [3, 4], "FP32")]
    inputs[0].set_data_from_numpy(TEXT, **options)
    inputs[1].set_data_from_numpy(X, **options)
    outputs = [
        triton.InferRequestedOutput("lower", **options),
        triton.InferRequestedOutput("probs", class_count=1, **options),
    ]
    result = client.infer("s-onnx", inputs, outputs=outputs)
    lower = [x if isinstance(x, bytes) else x.encode() for x in result.as_numpy("lower").ravel()]
    assert lower == list(LOWER)
    top = [x if isinstance(x, bytes) else x.encode() for x in result.as_numpy("probs").ravel()]
    best = _softmax(X).max(axis=1)
    assert top == [f"{p:f}:{i}".encode() for p, i in zip(best, X.argmax(axis=1), strict=True)]
    client.close()


def test_text_that_is_not_utf8_is_a_400_naming_the_input(server):
    import tritonclient.http as triton

    client = triton.InferenceServerClient(url=server[0].removeprefix("http://"))
    inputs = [triton.InferInput("text", [1], "BYTES"), triton.InferInput("x", [1, 4], "FP32")]
    inputs[0].set_data_from_numpy(np.array([b"\xff\xfe"], dtype=object), binary_data=True)
    inputs[1].set_data_from_numpy(X[:1], binary_data=True)
    with pytest.raises(triton.InferenceServerException) as info:
        client.infer("s-onnx", inputs)
    assert info.value.status() == "400" and "input 'text': an ONNX string tensor holds UTF-8 text" in str(info.value)
    client.close()


def test_torchserve_and_tfserving_rest_instances(server):
    one = requests.post(f"{server[0]}/predictions/s-onnx", json={"text": "ABC", "x": X[0].tolist()}, timeout=30)
    assert one.status_code == 200, one.text  # a string and a row: one instance (was a 400, [1, 1] != [-1])
    assert one.json()["lower"] == "abc" and np.allclose(one.json()["probs"], _softmax(X[:1])[0])
    rows = [{"text": {"b64": "SGk="}, "x": X[1].tolist()}, {"text": "XY", "x": X[2].tolist()}]
    reply = requests.post(f"{server[0]}/v1/models/s-onnx:predict", json={"instances": rows}, timeout=30)
    assert reply.status_code == 200, reply.text
    assert [p["lower"] for p in reply.json()["predictions"]] == ["hi", "xy"]
