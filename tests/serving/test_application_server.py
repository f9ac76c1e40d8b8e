"""Images and text through a real ``modelport serve``: curl uploads, Triton's own clients (HTTP and gRPC BYTES)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http

from tests.serving.applications import add_colors, add_sentiment, expected_colors
from tests.serving.processes import Served, curl, serving
from tests.serving.test_applications import BLUE, RED, solid


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[tuple[Served, Path]]:
    root = tmp_path_factory.mktemp("appserver")
    repo = root / "repo"
    repo.mkdir()
    add_colors(repo)
    add_colors(repo, "raw", processors=None)
    add_sentiment(repo)
    (root / "red.png").write_bytes(solid(RED))
    (root / "blue.png").write_bytes(solid(BLUE))
    log = root / "server.log"
    with serving(repo, log=log, timeout=120) as served:
        yield served, root
    assert "Traceback" not in log.read_text(), "the server logged a traceback"


def _curl(*arguments: str) -> object:
    return json.loads(curl(*arguments))


def test_curl_raw_upload_and_multipart(server):
    assert shutil.which("curl") is not None, "curl is part of every machine this project runs on"
    served, root = server
    url = f"{served.url}/predictions/colors-onnx"
    one = _curl("-T", str(root / "red.png"), url)
    assert isinstance(one, dict) and np.allclose(list(one.values()), list(expected_colors(RED).values()), atol=1e-5)
    several = _curl("-F", f"data=@{root / 'red.png'}", "-F", f"data=@{root / 'blue.png'}", url)
    assert isinstance(several, list) and [next(iter(r)) for r in several] == ["red", "blue"]


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_triton_clients_send_bytes_and_read_json_rows(server, transport):
    served, _ = server
    module = triton_http if transport == "http" else triton_grpc
    url = served.url.removeprefix("http://") if transport == "http" else served.grpc
    client = module.InferenceServerClient(url=url)
    images = module.InferInput("image", [2], "BYTES")
    images.set_data_from_numpy(np.array([solid(RED), solid(BLUE)], dtype=object))
    rows = [json.loads(r) for r in client.infer("colors-onnx", [images]).as_numpy("output")]
    assert [next(iter(r)) for r in rows] == ["red", "blue"]
    text = module.InferInput("text", [1], "BYTES")
    text.set_data_from_numpy(np.array([b"the cat sat on the mat"], dtype=object))
    (answer,) = client.infer("sentiment-onnx", [text]).as_numpy("output")
    assert set(json.loads(answer)) == {"negative", "positive"}
    meta = client.get_model_metadata("colors-onnx")
    inputs = meta["inputs"] if transport == "http" else [{"name": t.name, "datatype": t.datatype} for t in meta.inputs]
    assert [(t["name"], t["datatype"]) for t in inputs] == [("image", "BYTES")]
    client.close()


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_triton_classification_extension(server, transport):
    served, _ = server
    module = triton_http if transport == "http" else triton_grpc
    url = served.url.removeprefix("http://") if transport == "http" else served.grpc
    client = module.InferenceServerClient(url=url)
    pixels = np.zeros((1, 3, 32, 32), np.float32)
    pixels[0, 0] = 1.0  # red
    tensor = module.InferInput("pixels", list(pixels.shape), "FP32")
    tensor.set_data_from_numpy(pixels)
    wanted = module.InferRequestedOutput("logits", class_count=3)
    classes = client.infer("raw-onnx", [tensor], outputs=[wanted]).as_numpy("logits")
    assert classes.shape == (1, 3)
    assert [c.decode() for c in classes[0]] == [f"{1.0:f}:0:red", f"{2 / 3:f}:3:dark", f"{0.0:f}:1:green"]
    client.close()


def _config(client: object, name: str, transport: str) -> dict:
    if transport == "http":
        return client.get_model_config(name)  # type: ignore[attr-defined,no-any-return]
    return client.get_model_config(name, as_json=True)["config"]  # type: ignore[attr-defined,no-any-return]


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_model_config_shows_the_tensors_clients_send_as_the_metadata_does(server, transport):
    # Triton's config and metadata name the same tensors; a processed model's own (pixels, logits) are hidden
    served, _ = server
    module = triton_http if transport == "http" else triton_grpc
    url = served.url.removeprefix("http://") if transport == "http" else served.grpc
    client = module.InferenceServerClient(url=url)
    config = _config(client, "colors-onnx", transport)
    tensors = [(t["name"], t["data_type"], [int(d) for d in t["dims"]]) for t in (*config["input"], *config["output"])]
    assert tensors == [("image", "TYPE_STRING", [1]), ("output", "TYPE_STRING", [1])], config
    assert "reshape" in config["input"][0], "one payload per row: Triton's dims [1] with reshape to []"
    assert [t["name"] for t in _config(client, "raw-onnx", transport)["input"]] == ["pixels"], "no processors"
    client.close()
