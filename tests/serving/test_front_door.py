"""TF Serving REST and TorchServe APIs on the same HTTP port, over fake runtimes."""

from __future__ import annotations

import pytest

X = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]


async def test_tfserving_status_and_metadata(client):
    status = (await client.get("/v1/models/echo")).json()
    assert status == {
        "model_version_status": [
            {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}},
            {"version": "2", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}},
        ],
        "name": "echo",  # KServe v1's model readiness, on the same path
        "ready": True,
    }
    one = (await client.get("/v1/models/echo/versions/1")).json()
    assert [v["version"] for v in one["model_version_status"]] == ["1"]
    failed = (await client.get("/v1/models/wrong")).json()["model_version_status"][0]
    assert failed["state"] == "END" and failed["status"]["error_message"].startswith("golden check failed")
    meta = (await client.get("/v1/models/echo/metadata")).json()
    assert meta["model_spec"] == {"name": "echo", "signature_name": "", "version": "2"}
    signature = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert signature["inputs"]["x"]["dtype"] == "DT_FLOAT"
    assert signature["inputs"]["x"]["tensor_shape"]["dim"] == [{"size": "-1", "name": ""}, {"size": "3", "name": ""}]
    assert set(signature["outputs"]) == {"y", "n"}


async def test_tfserving_row_and_columnar_predict(client):
    rows = (await client.post("/v1/models/echo:predict", json={"instances": X})).json()
    assert rows == {"predictions": [{"y": [2, 4, 6], "n": 12}, {"y": [8, 10, 12], "n": 30}]}
    named = (await client.post("/v1/models/echo/versions/1:predict", json={"instances": [{"x": r} for r in X]})).json()
    assert named == rows
    columns = (await client.post("/v1/models/echo:predict", json={"inputs": {"x": X}})).json()
    assert columns == {"outputs": {"y": [[2, 4, 6], [8, 10, 12]], "n": [12, 30]}}
    unnamed = await client.post("/v1/models/echo:predict", json={"inputs": X, "signature_name": "serving_default"})
    assert unnamed.json() == columns


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("/v1/models/echo:predict", {"instances": X, "inputs": X}, 400, "Both 'inputs' and 'instances'"),
        ("/v1/models/echo:predict", {"nothing": 1}, 400, "Missing 'inputs' or 'instances'"),
        ("/v1/models/echo:predict", {"instances": X, "signature_name": "other"}, 400, '"other" not found'),
        ("/v1/models/echo:predict", {"instances": [[1, 2], [3, 4]]}, 400, "does not match"),
        ("/v1/models/echo:predict", {"instances": [["a", "b", "c"]]}, 400, "do not form a float32 tensor"),
        # TF Serving's words (its ServableRequest's DebugString): probes and clients look for them
        ("/v1/models/nope:predict", {"instances": X}, 404, "Servable not found for request: Latest(nope)"),
        (
            "/v1/models/echo/versions/9:predict",
            {"instances": X},
            404,
            "Servable not found for request: Specific(echo, 9)",
        ),
        ("/v1/models/echo/labels/stable:predict", {"instances": X}, 400, "Unrecognized servable version label"),
    ],
)
async def test_tfserving_errors_use_its_error_body(client, path, body, status, message):
    response = await client.post(path, json=body)
    assert response.status_code == status
    assert set(response.json()) == {"error"} and message in response.json()["error"]


async def test_tfserving_version_labels(repo, tmp_path):
    import httpx

    from modelport.serving.rest import create_app
    from modelport.serving.server import build
    from modelport.serving.settings import ServerSettings
    from tests.serving import fakes

    fakes.write_model(tmp_path / "r", "m", config={"version_policy": {"all": True}, "version_labels": {"stable": 1}})
    fakes.write_model(tmp_path / "r", "m", version=2)
    plane = build(ServerSettings(repository=tmp_path / "r"))
    await plane.start()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(plane)), base_url="http://t") as http:
            status = (await http.get("/v1/models/m/labels/stable")).json()["model_version_status"]
            assert [s["version"] for s in status] == ["1"]
            meta = (await http.get("/v1/models/m/labels/stable/metadata")).json()
            assert meta["model_spec"]["version"] == "1"
    finally:
        await plane.close()


async def test_torchserve_ping_predictions_and_models(client):
    assert (await client.get("/ping")).json() == {"status": "Healthy"}
    single = await client.post("/predictions/echo", json=[1.0, 2.0, 3.0])
    assert single.status_code == 200 and single.json() == {"y": [2, 4, 6], "n": 12}
    batch = await client.post("/predictions/echo/1", json=X)
    assert batch.json() == [{"y": [2, 4, 6], "n": 12}, {"y": [8, 10, 12], "n": 30}]
    wrapped = await client.post("/predictions/echo", json={"data": [1.0, 1.0, 1.0]})
    assert wrapped.json() == {"y": [2, 2, 2], "n": 6}
    models = (await client.get("/models")).json()["models"]
    assert {"modelName": "echo", "modelUrl": "echo"} in models
    described = (await client.get("/models/echo")).json()
    assert [d["modelVersion"] for d in described] == ["2"], "as TorchServe: the default version"
    described = (await client.get("/models/echo/all")).json()
    assert [d["modelVersion"] for d in described] == ["1", "2"] and described[0]["workers"][0]["status"] == "READY"
    assert [d["modelVersion"] for d in (await client.get("/models/echo/2")).json()] == ["2"]


@pytest.mark.parametrize(
    ("path", "body", "status", "kind"),
    [
        ("/predictions/nope", [1.0, 2.0, 3.0], 404, "ModelNotFoundException"),
        ("/predictions/echo", [1.0, 2.0], 400, "BadRequestException"),
        ("/predictions/echo", {"a": 1, "b": 2}, 400, "BadRequestException"),
        ("/predictions/wrong", [1.0, 2.0, 3.0], 503, "ServiceUnavailableException"),
    ],
)
async def test_torchserve_errors_use_its_error_shape(client, path, body, status, kind):
    response = await client.post(path, json=body)
    assert response.status_code == status
    data = response.json()
    assert set(data) == {"code", "type", "message"} and data["code"] == status and data["type"] == kind
    assert (await client.get("/models/nope")).json()["type"] == "ModelNotFoundException"


@pytest.mark.parametrize("path", ["/predictions/nope", "/predictions/nope/1.0", "/explanations/nope"])
async def test_an_unknown_model_is_torchserves_model_not_found(client, path):
    """TorchServe 0.12's words (InferenceRequestHandler.predict), not the KServe v2 API's Triton ones."""
    response = await client.post(path, json=[1.0, 2.0, 3.0])
    assert response.status_code == 404, response.text
    assert response.json() == {"code": 404, "type": "ModelNotFoundException", "message": "Model not found: nope"}


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", "/v2/models/echo/infer", "POST"),
        ("PUT", "/v2/models/echo/versions/1/infer", "POST"),
        ("GET", "/v1/models/echo:predict", "POST"),
        ("GET", "/predictions/echo", "POST, PUT"),
        ("DELETE", "/predictions/echo/1", "POST, PUT"),
    ],
)
async def test_inference_paths_answer_a_wrong_method_with_405_and_allow(client, method, path, allow):
    """In the protocol's own error body: TorchServe's MethodNotAllowedException on its paths."""
    answer = await client.request(method, path)
    assert answer.status_code == 405
    assert answer.headers["allow"] == allow
    if path.startswith("/predictions"):
        assert answer.json()["type"] == "MethodNotAllowedException" and answer.json()["code"] == 405
    else:
        assert answer.json() == {"error": "Method Not Allowed"}
    assert answer.headers["x-request-id"]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v2/models/echo/infer", {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}),
        ("/v1/models/echo:predict", {"instances": [[1.0, 2.0, 3.0]]}),
        ("/predictions/echo", [1.0, 2.0, 3.0]),
    ],
)
async def test_inference_routes_echo_request_ids_and_send_one_content_length(client, path, body):
    answer = await client.post(path, json=body, headers={"X-Request-ID": "req-7"})
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-request-id"] == "req-7"
    assert answer.headers["content-type"] == "application/json"
    assert int(answer.headers["content-length"]) == len(answer.content)


async def test_a_streamed_body_over_the_limit_is_refused_without_a_content_length(client, plane):
    limit = plane.settings.max_body_bytes

    async def chunks():
        for _ in range(limit // 65536 + 2):
            yield b"x" * 65536

    answer = await client.post("/v2/models/echo/infer", content=chunks())
    assert answer.status_code == 413
    assert "exceeds the limit" in answer.json()["error"]
    assert answer.headers["connection"] == "close"


async def test_an_unexpected_fault_on_an_inference_route_is_a_generic_500(client, plane, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(plane.shared_memory, "seen_from", broken)  # (Python: patchable from a compiled caller)
    body = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}
    answer = await client.post("/v2/models/echo/infer", json=body)
    assert answer.status_code == 500
    assert answer.json() == {"error": "internal server error"}
    assert "secret internals" in caplog.text, "the traceback is logged"


async def test_routing_of_repeated_paths_is_remembered_up_to_a_bound(client, plane):
    """The paths clients keep calling are routed once (the same answers after); any number of distinct paths
    leaves at most a bounded number remembered, and what a handler gets is its own copy of the parameters."""
    from modelport.serving.front import HttpFront
    from modelport.serving.rest import create_app

    front = create_app(plane)
    assert isinstance(front, HttpFront)
    first = front._match("POST", "/v2/models/echo/versions/2/infer")
    first[1]["model"] = "changed by a handler"
    route, params, allowed = front._match("POST", "/v2/models/echo/versions/2/infer")
    assert route is first[0] and params == {"model": "echo", "version": "2"} and allowed is None
    refused = front._match("GET", "/v2/models/echo/infer")[2]
    assert refused is not None and refused.methods == ("POST",)
    for i in range(2000):
        front._match("POST", f"/v2/models/m{i}/infer")
    assert len(front._matched) <= 512
    assert front._match("POST", "/v2/models/m1999/infer")[1] == {"model": "m1999"}  # past the bound: still routed
    for _ in range(2):  # the same answers, remembered or not
        assert (await client.post("/v2/models/echo/infer", json={"inputs": []})).status_code == 400
