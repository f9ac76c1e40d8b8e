"""Remote runtimes: a model whose config.yaml points at another server (TorchServe or TF Serving API).

The fast tests point ``runtime: torchserve`` at a second modelport server, which speaks
TorchServe's inference API; ``tests/serving/test_torchserve.py`` does the same against a real
TorchServe and the TF Serving test below uses modelport's own TF Serving gRPC endpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from modelport.errors import InvalidArgumentError
from modelport.serving.settings import read_model_config
from tests.serving import fakes
from tests.serving.processes import free_port, serving, wait_until

X = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]


def _remote(kind: str, address: str, model: str) -> dict[str, Any]:
    return {"runtime": kind, "remote": {"address": address, "model": model, "health_interval_s": 0.2}}


def _infer(url: str, model: str) -> httpx.Response:
    body = {"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP32", "data": X}]}
    return httpx.post(f"{url}/v2/models/{model}/infer", json=body, timeout=30)


def _ready(url: str, model: str) -> int:
    return httpx.get(f"{url}/v2/models/{model}/ready", timeout=5).status_code


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"runtime": "torchserve"}, "go together"),
        ({"remote": {"address": "http://127.0.0.1:1"}}, "go together"),
        ({"runtime": "tfserving", "remote": {"model": "m"}}, "remote.address"),
        ({"runtime": "torchserve", "remote": {"address": "http://h", "timeout_ms": 0}}, "remote.timeout_ms"),
    ],
)
def test_remote_config_is_checked(tmp_path: Path, config: dict[str, Any], message: str) -> None:
    import yaml

    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(InvalidArgumentError, match=message):
        read_model_config(tmp_path)


def test_torchserve_runtime_forwards_reports_health_and_recovers(tmp_path: Path) -> None:
    """Backend up: same answers as the backend and golden check passed; down: 503 and not ready;
    back on the same port: ready and answering again, without restarting the front server."""
    backend_repo, front_repo = tmp_path / "backend", tmp_path / "front"
    fakes.write_model(backend_repo, "echo")
    ports = (free_port(), free_port())
    address = f"http://127.0.0.1:{ports[0]}"
    fakes.write_model(front_repo, "fwd", config=_remote("torchserve", address, "echo"))
    with serving(backend_repo, ports=ports) as backend, serving(front_repo) as front:
        direct, forwarded = _infer(backend.url, "echo"), _infer(front.url, "fwd")
        assert forwarded.status_code == 200, forwarded.text
        assert [o["data"] for o in forwarded.json()["outputs"]] == [o["data"] for o in direct.json()["outputs"]]
        one = httpx.post(f"{front.url}/predictions/fwd", json=X[0], timeout=10)
        assert one.json() == {"y": [2.0, 4.0, 6.0], "n": 12.0}
        meta = httpx.get(f"{front.url}/v2/models/fwd", timeout=5).json()
        assert meta["parameters"]["providers"] == [f"torchserve:{address}"]
        backend.process.terminate()
        backend.process.wait(30)
        # while it drained, the backend's /ping said 500; once it is gone the front says unreachable
        wait_until(lambda: "unreachable" in _infer(front.url, "fwd").text, timeout=15, what="backend unreachable")
        down = _infer(front.url, "fwd")
        assert down.status_code == 503, down.text
        assert "unreachable" in down.json()["error"]
        assert int(down.headers["retry-after"]) >= 1
        wait_until(lambda: _ready(front.url, "fwd") == 503)
        health = httpx.get(f"{front.url}/v2/health/ready", timeout=5)
        assert health.status_code == 200, "one remote being down must not make the whole server unready"
        with serving(backend_repo, ports=ports):
            wait_until(lambda: _ready(front.url, "fwd") == 200)
            again = _infer(front.url, "fwd")
            assert again.status_code == 200, again.text
            assert np.allclose(again.json()["outputs"][0]["data"], np.asarray(X).ravel() * 2)


def test_remote_down_at_start_is_not_ready_then_recovers_by_polling(tmp_path: Path) -> None:
    backend_repo, front_repo = tmp_path / "backend", tmp_path / "front"
    fakes.write_model(backend_repo, "echo")
    ports = (free_port(), free_port())
    fakes.write_model(front_repo, "fwd", config=_remote("torchserve", f"http://127.0.0.1:{ports[0]}", "echo"))
    with serving(front_repo, "--poll-interval-s", "0.3") as front:
        assert _ready(front.url, "fwd") == 503
        index = httpx.post(f"{front.url}/v2/repository/index", json={}, timeout=5).json()
        assert "unreachable" in index[0]["reason"]
        with serving(backend_repo, ports=ports):
            wait_until(lambda: _ready(front.url, "fwd") == 200)
            assert _infer(front.url, "fwd").status_code == 200


def test_unknown_remote_model_is_not_ready_with_the_reason(tmp_path: Path) -> None:
    backend_repo, front_repo = tmp_path / "backend", tmp_path / "front"
    fakes.write_model(backend_repo, "echo")
    ports = (free_port(), free_port())
    fakes.write_model(front_repo, "ghost", config=_remote("torchserve", f"http://127.0.0.1:{ports[0]}", "nope"))
    with serving(backend_repo, ports=ports), serving(front_repo) as front:
        assert _infer(front.url, "ghost").status_code == 503
        ready = httpx.get(f"{front.url}/v2/models/ghost/ready", timeout=5)
        assert ready.status_code == 503
        assert "Model not found: nope" in ready.text  # the remote's words (TorchServe's)


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, "invalid_argument"),
        (404, "unavailable"),
        (503, "unavailable"),
        (429, "unavailable"),
        (504, "deadline_exceeded"),
        (500, "inference_failed"),
    ],
)
def test_torchserve_remote_statuses_map_to_error_codes(status: int, code: str) -> None:
    from modelport.runtimes.torchserve import _remote_error

    response = httpx.Response(status, json={"code": status, "type": "X", "message": "remote says no"})
    error = _remote_error(response, "http://ts:8080")
    assert error.code == code
    assert "remote says no" in error.message


@pytest.mark.tf
def test_tfserving_runtime_forwards_to_a_tfserving_grpc_endpoint(tmp_path: Path, digits_repo: Any) -> None:
    """``runtime: tfserving`` against modelport's own TF Serving gRPC API (no TF Serving binary here):
    same outputs as the backend model, then 503 when it stops and recovery when it returns."""
    import shutil

    import yaml

    front_repo = tmp_path / "front"
    (front_repo / "remote-digits").mkdir(parents=True)
    shutil.copytree(digits_repo.root / "digits-onnx" / "1", front_repo / "remote-digits" / "1")
    ports = (free_port(), free_port())
    config = _remote("tfserving", f"127.0.0.1:{ports[1]}", "digits-onnx")
    (front_repo / "remote-digits" / "config.yaml").write_text(yaml.safe_dump(config))
    image = np.random.default_rng(0).random((3, 1, 8, 8), dtype=np.float32)
    body = {"inputs": [{"name": "image", "shape": [3, 1, 8, 8], "datatype": "FP32", "data": image.ravel().tolist()}]}
    with serving(digits_repo.root, "--tfserving-grpc", ports=ports) as backend, serving(front_repo) as front:
        direct = httpx.post(f"{backend.url}/v2/models/digits-onnx/infer", json=body, timeout=30).json()
        forwarded = httpx.post(f"{front.url}/v2/models/remote-digits/infer", json=body, timeout=30)
        assert forwarded.status_code == 200, forwarded.text
        np.testing.assert_allclose(forwarded.json()["outputs"][0]["data"], direct["outputs"][0]["data"], rtol=1e-6)
        backend.process.terminate()
        backend.process.wait(60)
        down = httpx.post(f"{front.url}/v2/models/remote-digits/infer", json=body, timeout=30)
        assert down.status_code == 503, down.text
        wait_until(lambda: _ready(front.url, "remote-digits") == 503)
        with serving(digits_repo.root, "--tfserving-grpc", ports=ports):
            wait_until(lambda: _ready(front.url, "remote-digits") == 200, timeout=60)
            again = httpx.post(f"{front.url}/v2/models/remote-digits/infer", json=body, timeout=30)
            assert again.status_code == 200, again.text
