"""Security: optional tokens (inference and, separately, model control) on HTTP and gRPC; TLS on both with a
certificate the test makes; nothing from a request or a repository file is unpickled or evaluated; no
repository entry (symlink, ``..``, a manifest's file names) leads outside the repository root.
"""

from __future__ import annotations

import ast
import os
import pickle
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pydantic
import pytest

from modelport.serving.auth import Tokens, grpc_scope, http_scope, presented_token
from modelport.serving.rest import create_app
from modelport.serving.server import build
from modelport.serving.settings import ServerSettings
from tests.serving import fakes
from tests.serving.processes import ROOT, free_port, serving

INFERENCE_KEY = "inference-key-0123456789"
CONTROL_KEY = "control-key-9876543210"
BODY = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}


# --- tokens ---------------------------------------------------------------------------------------------------


def test_token_parsing_and_scopes(tmp_path):
    assert presented_token("Bearer abc", None) == "abc" and presented_token("bearer  abc ", None) == "abc"
    assert presented_token("Basic abc", "k") == "k" and presented_token(None, None) is None
    assert http_scope("/v2/health/ready") is None and http_scope("/metrics") is None and http_scope("/ping") is None
    assert http_scope("/v2/models/m/infer") == "inference" and http_scope("/anything/else") == "inference"
    assert http_scope("/v2/repository/models/m/load") == "control"
    assert http_scope("/v2/repository/models/m/unload") == "control"
    assert http_scope("/v2/logging", "POST") == "control" and http_scope("/v2/logging") == "inference"
    assert grpc_scope("/grpc.health.v1.Health/Check") is None
    assert grpc_scope("/inference.GRPCInferenceService/ServerReady") is None
    assert grpc_scope("/inference.GRPCInferenceService/ModelInfer") == "inference"
    assert grpc_scope("/tensorflow.serving.PredictionService/Predict") == "inference"
    assert grpc_scope("/inference.GRPCInferenceService/RepositoryModelLoad") == "control"
    assert grpc_scope("/inference.GRPCInferenceService/SystemSharedMemoryRegister") == "inference"
    assert grpc_scope("/inference.GRPCInferenceService/LogSettings") == "control"  # reads and changes them
    assert grpc_scope("/org.pytorch.serve.grpc.inference.InferenceAPIsService/Ping") is None
    assert grpc_scope("/org.pytorch.serve.grpc.inference.InferenceAPIsService/Predictions") == "inference"
    key_file = tmp_path / "key"
    key_file.write_text(INFERENCE_KEY + "\n")  # as a mounted Kubernetes secret may end
    tokens = Tokens.from_settings(ServerSettings(repository=tmp_path, api_key_file=str(key_file)))
    assert tokens.enabled and tokens.control is None
    tokens.check("inference", INFERENCE_KEY)
    tokens.check("control", None)
    assert INFERENCE_KEY not in repr(ServerSettings(repository=tmp_path, api_key=INFERENCE_KEY))


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"model_control": True, "api_key": "k"}, "needs its own --control-key"),
        ({"tls_certfile": "cert.pem"}, "go together"),
        ({"api_key": "k", "api_key_file": "f"}, "not both"),
    ],
)
def test_unsafe_settings_are_refused(settings, message):
    with pytest.raises(pydantic.ValidationError, match=message):
        ServerSettings(repository=Path("."), **settings)


# --- HTTP, in process -----------------------------------------------------------------------------------------


@pytest.fixture
async def guarded(tmp_path) -> AsyncIterator[httpx.AsyncClient]:
    repo = tmp_path / "repo"
    fakes.write_model(repo, "echo")
    settings = ServerSettings(repository=repo, api_key=INFERENCE_KEY, control_key=CONTROL_KEY, model_control=True)
    plane = build(settings)
    await plane.start()
    transport = httpx.ASGITransport(app=create_app(plane))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http
    await plane.close()


BEARER = {"Authorization": f"Bearer {INFERENCE_KEY}"}
PROTECTED = [
    ("POST", "/v2/models/echo/infer", BODY),
    ("GET", "/v2/models/echo", None),
    ("GET", "/v2/models/echo/ready", None),
    ("GET", "/v2", None),
    ("GET", "/v2/repository/index", None),
    ("POST", "/v1/models/echo:predict", {"instances": [[1, 2, 3]]}),
    ("GET", "/v1/models/echo", None),
    ("POST", "/predictions/echo", [1, 2, 3]),
    ("GET", "/models", None),
    ("GET", "/v2/systemsharedmemory/status", None),
    ("POST", "/v2/systemsharedmemory/unregister", None),
    ("GET", "/no/such/path", None),  # 401, not 404: nothing about the server is told without the token
]


@pytest.mark.parametrize(("method", "path", "body"), PROTECTED, ids=[p for _, p, _ in PROTECTED])
async def test_http_needs_the_inference_token(guarded, method, path, body):
    missing = await guarded.request(method, path, json=body)
    assert missing.status_code == 401 and missing.headers["www-authenticate"].startswith("Bearer")
    assert "Authorization: Bearer" in missing.json()["error"]
    wrong = await guarded.request(method, path, json=body, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.json() == {"error": "the token is not the API key"}
    control = await guarded.request(method, path, json=body, headers={"Authorization": f"Bearer {CONTROL_KEY}"})
    assert control.status_code == 401, "the control key is a separate key, not a master key"
    good = await guarded.request(method, path, json=body, headers=BEARER)
    assert good.status_code == (404 if path == "/no/such/path" else 200), good.text
    via_header = await guarded.request(method, path, json=body, headers={"X-API-Key": INFERENCE_KEY})
    assert via_header.status_code == good.status_code


async def test_probes_and_metrics_stay_open(guarded):
    for path in ("/", "/v2/health/live", "/v2/health/ready", "/ping", "/metrics", "/openapi.json"):
        assert (await guarded.get(path)).status_code == 200, path


async def test_model_control_needs_the_control_token(guarded):
    unload = "/v2/repository/models/echo/unload"
    assert (await guarded.post(unload)).status_code == 401
    assert (await guarded.post(unload, headers=BEARER)).status_code == 401, "the inference key cannot unload"
    control = {"Authorization": f"Bearer {CONTROL_KEY}"}
    assert (await guarded.post(unload, headers=control)).status_code == 200
    assert (await guarded.post("/v2/repository/models/echo/load", headers=control)).status_code == 200
    assert (await guarded.post("/v2/models/echo/infer", json=BODY, headers=BEARER)).status_code == 200


async def test_model_control_is_off_unless_enabled(tmp_path):
    fakes.write_model(tmp_path, "echo")
    plane = build(ServerSettings(repository=tmp_path, control_key=CONTROL_KEY))
    transport = httpx.ASGITransport(app=create_app(plane))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        response = await http.post("/v2/repository/models/echo/load", headers={"X-API-Key": CONTROL_KEY})
    assert response.status_code == 403 and "--model-control" in response.json()["error"]


# --- TLS and gRPC tokens against a real server ----------------------------------------------------------------


def _certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for localhost / 127.0.0.1 (the openssl CLI: no extra Python package)."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory) -> Iterator[tuple[str, str, Path]]:
    """A TLS server with both tokens and TF Serving's gRPC API: (https URL, gRPC address, CA file)."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = _certificate(folder)
    repo = folder / "repo"
    fakes.write_model(repo, "echo")
    control_file = folder / "control-key"
    control_file.write_text(CONTROL_KEY)
    flags = ["--tls-certfile", str(cert), "--tls-keyfile", str(key), "--control-key-file", str(control_file)]
    flags += ["--model-control", "--tfserving-grpc"]
    env = {"MODELPORT_API_KEY": INFERENCE_KEY}
    with serving(repo, *flags, env=env, log=folder / "server.log", tls_ca=cert) as server:
        yield server.url, server.grpc, cert


@pytest.mark.tf
def test_https_with_the_generated_certificate(tls_server):
    url, _, cert = tls_server
    with httpx.Client(base_url=url, verify=str(cert), timeout=10) as http:
        assert http.get("/v2/health/ready").status_code == 200, "probes need no token"
        assert http.post("/v2/models/echo/infer", json=BODY).status_code == 401
        answer = http.post("/v2/models/echo/infer", json=BODY, headers=BEARER)
        assert answer.status_code == 200 and answer.json()["outputs"][0]["data"] == [2, 4, 6]
    with pytest.raises(httpx.ConnectError):  # a client that does not trust the certificate
        httpx.get(f"{url}/v2/health/ready", timeout=5)
    plain = url.replace("https://", "http://")
    with pytest.raises(httpx.TransportError):  # plain HTTP on the TLS port gets no HTTP answer
        httpx.get(f"{plain}/v2/health/ready", timeout=5)


@pytest.mark.tf
def test_tritonclient_grpc_over_tls_with_tokens(tls_server):
    import tritonclient.grpc as triton

    _, address, cert = tls_server
    client = triton.InferenceServerClient(url=address, ssl=True, root_certificates=str(cert))
    assert client.is_server_ready(), "ServerReady is a probe: no token"
    value = np.array([[1, 2, 3]], np.float32)
    inputs = [triton.InferInput("x", [1, 3], "FP32").set_data_from_numpy(value)]
    with pytest.raises(triton.InferenceServerException) as info:
        client.infer("echo", inputs)
    assert info.value.status() == "StatusCode.UNAUTHENTICATED"
    with pytest.raises(triton.InferenceServerException) as info:
        client.infer("echo", inputs, headers={"authorization": "Bearer wrong"})
    assert info.value.status() == "StatusCode.UNAUTHENTICATED" and "not the API key" in info.value.message()
    result = client.infer("echo", inputs, headers={"authorization": f"Bearer {INFERENCE_KEY}"})
    assert result.as_numpy("y").tolist() == [[2, 4, 6]]
    with pytest.raises(triton.InferenceServerException) as info:
        client.unload_model("echo", headers={"x-api-key": INFERENCE_KEY})
    assert info.value.status() == "StatusCode.UNAUTHENTICATED", "the inference key cannot unload"
    client.load_model("echo", headers={"x-api-key": CONTROL_KEY})
    client.close()


@pytest.mark.tf
def test_tfserving_grpc_and_health_over_tls_with_tokens(tls_server):
    import tensorflow as tf
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    _, address, cert = tls_server
    credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
    with grpc.secure_channel(address, credentials) as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert health.status == health_pb2.HealthCheckResponse.SERVING, "health needs no token"
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "echo"
        request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([[1, 2, 3]], np.float32)))
        with pytest.raises(grpc.RpcError) as info:
            stub.Predict(request, timeout=10)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        reply = stub.Predict(request, timeout=10, metadata=[("authorization", f"Bearer {INFERENCE_KEY}")])
        assert tf.make_ndarray(reply.outputs["y"]).tolist() == [[2, 4, 6]]
    with grpc.insecure_channel(address) as channel:  # plaintext against the TLS port
        with pytest.raises(grpc.RpcError) as info:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_unreadable_certificate_is_a_clear_startup_error(tmp_path):
    command = [
        sys.executable,
        "-m",
        "modelport.cli",
        "serve",
        str(tmp_path),
        "--http-port",
        str(free_port()),
        "--tls-certfile",
        str(tmp_path / "missing.pem"),
        "--tls-keyfile",
        str(tmp_path / "key.pem"),
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)}
    )
    assert done.returncode == 2 and "--tls-certfile" in done.stderr and "cannot read" in done.stderr, done.stderr


# --- nothing is unpickled or evaluated ------------------------------------------------------------------------

UNSAFE_CALLS = {"eval", "exec", "compile", "__import__"}
UNSAFE_MODULE_CALLS = {
    ("pickle", "load"),
    ("pickle", "loads"),
    ("marshal", "loads"),
    ("marshal", "load"),
    ("dill", "load"),
    ("dill", "loads"),
    ("cloudpickle", "loads"),
    ("joblib", "load"),
    ("yaml", "load"),
    ("yaml", "unsafe_load"),
}


def _calls(tree: ast.AST) -> Iterator[tuple[ast.Call, str]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node, ast.unparse(node.func)


def test_no_code_path_unpickles_or_evaluates():
    """np.load never with allow_pickle (False is numpy's default), torch.load never without weights_only=True
    (torch's default); and no pickle, marshal, eval, exec or yaml.load anywhere in the package."""
    problems, loads = [], 0
    for path in sorted((ROOT / "modelport").rglob("*.py")):
        for call, name in _calls(ast.parse(path.read_text())):
            where = f"{path.relative_to(ROOT)}:{call.lineno} {name}"
            keywords = {k.arg: ast.unparse(k.value) for k in call.keywords}
            if name in UNSAFE_CALLS or tuple(name.rsplit(".", 1)[-2:]) in UNSAFE_MODULE_CALLS:
                problems.append(where)
            if name.endswith("np.load") or name == "numpy.load":
                loads += 1
                problems += [f"{where} allow_pickle"] if keywords.get("allow_pickle", "False") != "False" else []
            if name.endswith("torch.load"):
                loads += 1
                problems += [f"{where} weights_only"] if keywords.get("weights_only", "True") != "True" else []
    assert not problems, problems
    assert loads >= 3, "the scan found the loads it is meant to check"


class _Boom:
    """Unpickling this writes a marker file: proof that something unpickled it."""

    marker = ""

    def __reduce__(self):
        return (Path(self.marker).write_text, ("unpickled!",))


async def test_a_pickled_golden_file_is_refused_not_unpickled(tmp_path):
    marker = tmp_path / "marker"
    _Boom.marker = str(marker)
    directory = fakes.write_model(tmp_path / "repo", "evil")
    np.savez(directory / "golden.npz", **{"case0/inputs/x": np.array([_Boom()], dtype=object)})
    plane = build(ServerSettings(repository=tmp_path / "repo"))
    await plane.start()
    ready, reason = plane.model_ready("evil")
    await plane.close()
    assert not ready and "pickle" in reason.lower(), reason
    assert not marker.exists(), "the golden file was unpickled"


@pytest.mark.torch
def test_torch_weights_are_loaded_with_weights_only(tmp_path):
    import torch

    from modelport.errors import SourceError
    from modelport.exporters.torch_source import _load_weights

    marker = tmp_path / "marker"
    _Boom.marker = str(marker)
    weights = tmp_path / "weights.pt"
    with weights.open("wb") as handle:
        pickle.dump({"w": _Boom()}, handle)
    with pytest.raises(SourceError, match="weights_only=True"):
        _load_weights(torch, torch.nn.Linear(1, 1), weights)
    assert not marker.exists(), "torch.load unpickled an arbitrary object"


def test_a_pickle_as_request_body_is_just_a_bad_request(tmp_path):
    from modelport.errors import InvalidArgumentError
    from modelport.serving.v2 import decode_request

    with pytest.raises(InvalidArgumentError, match="not valid JSON"):
        decode_request(pickle.dumps(_Boom()), None)


# --- the repository root cannot be escaped --------------------------------------------------------------------


@pytest.fixture
def escape_repo(tmp_path) -> Path:
    """A repository whose entries try to reach a model that lies outside it."""
    outside = tmp_path / "outside"
    fakes.write_model(outside, "secret")
    repo = tmp_path / "repo"
    fakes.write_model(repo, "echo")
    (repo / "evil").symlink_to(outside / "secret")  # a model directory that is a symlink out
    (repo / "echo" / "2").symlink_to(outside / "secret" / "1")  # a version directory that is a symlink out
    bad = fakes.write_model(repo, "sneaky")  # a manifest whose artifact lies outside its version directory
    manifest = (bad / "modelport.json").read_text().replace('"model.onnx"', '"../../../outside/secret/1/model.onnx"')
    (bad / "modelport.json").write_text(manifest)
    return repo


async def test_repository_entries_cannot_lead_outside_the_root(escape_repo):
    settings = ServerSettings(repository=escape_repo, model_control=True)
    plane = build(settings)
    await plane.start()
    transport = httpx.ASGITransport(app=create_app(plane))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            index = (await http.get("/v2/repository/index")).json()
            assert {row["name"] for row in index} == {"echo", "sneaky"}, index
            assert [row.get("version") for row in index if row["name"] == "echo"] == ["1"], "the symlinked version"
            assert (await http.get("/v2/models/evil")).status_code == 404
            sneaky = (await http.get("/v2/models/sneaky/ready")).json()
            assert sneaky["ready"] is False and "lies outside the version directory" in sneaky["reason"]
            for name, status in (("evil", 404), ("..%2Foutside%2Fsecret", 404), ("%2E%2E", 400), ("...", 400)):
                response = await http.post(f"/v2/repository/models/{name}/load")
                assert response.status_code == status, (name, response.text)
            served = [v.directory for e in plane.manager.models.values() for v in e.versions.values()]
            assert "evil" not in plane.manager.models and served
            assert all(d.resolve().is_relative_to(escape_repo.resolve()) for d in served), served
    finally:
        await plane.close()
