"""KServe v2 REST over the in-process app and fake runtimes."""

from __future__ import annotations

import gzip
import json
import struct
import zlib

import numpy as np
import orjson
import pytest

X = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]


def _infer_body(data=X, datatype="FP32", shape=(2, 3), **extra):
    return {"inputs": [{"name": "x", "shape": list(shape), "datatype": datatype, "data": data}], **extra}


async def test_health_and_server_metadata(client):
    assert (await client.get("/v2/health/live")).json() == {"live": True}
    assert (await client.get("/v2/health/ready")).status_code == 200
    meta = (await client.get("/v2")).json()
    assert meta["name"] == "triton" and "binary_tensor_data" in meta["extensions"]


async def test_model_metadata_with_and_without_version(client):
    meta = (await client.get("/v2/models/echo")).json()
    assert meta["versions"] == ["1", "2"] and meta["parameters"]["version"] == "2"
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}]
    assert (await client.get("/v2/models/echo/versions/1")).json()["parameters"]["version"] == "1"
    assert (await client.get("/v2/models/echo/versions/1/ready")).json()["ready"] is True
    assert (await client.get("/v2/models/nope")).status_code == 404
    response = await client.get("/v2/models/echo/versions/9")
    assert response.status_code == 404 and "version 9 is not found" in response.json()["error"]


async def test_a_model_failing_its_golden_check_is_not_ready_and_says_why(client):
    response = await client.get("/v2/models/wrong/ready")
    assert response.status_code == 503
    assert response.json()["reason"].startswith("golden check failed")
    meta = (await client.get("/v2/models/wrong")).json()
    assert meta["parameters"]["state"] == "FAILED" and "max abs error" in meta["parameters"]["reason"]
    broken = (await client.get("/v2/models/broken/ready")).json()
    assert "model file is corrupt" in broken["reason"]
    infer = await client.post("/v2/models/wrong/infer", json=_infer_body())
    assert infer.status_code == 503 and "is failed; GET /v2/models/wrong/versions/1/ready" in infer.json()["error"]
    assert (await client.get("/v2/models/echo/ready")).status_code == 200, "the rest of the repository serves"


async def test_infer_json_echoes_id_and_computes(client):
    response = await client.post("/v2/models/echo/infer", json=_infer_body(id="req-7"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == "req-7" and body["model_name"] == "echo" and body["model_version"] == "2"
    outputs = {o["name"]: o for o in body["outputs"]}
    assert outputs["y"] == {"name": "y", "datatype": "FP32", "shape": [2, 3], "data": [2, 4, 6, 8, 10, 12]}
    assert outputs["n"]["data"] == [12, 30]


async def test_requested_outputs_and_version_routing(client):
    body = _infer_body(outputs=[{"name": "n"}])
    response = await client.post("/v2/models/echo/versions/1/infer", json=body)
    assert [o["name"] for o in response.json()["outputs"]] == ["n"] and response.json()["model_version"] == "1"
    bad = await client.post("/v2/models/echo/infer", json=_infer_body(outputs=[{"name": "zzz"}]))
    assert bad.status_code == 400 and "no outputs ['zzz']" in bad.json()["error"]


async def test_binary_request_and_response(client):
    x = np.array(X, dtype=np.float32)
    header = orjson.dumps(
        {
            "inputs": [
                {"name": "x", "shape": [2, 3], "datatype": "FP32", "parameters": {"binary_data_size": x.nbytes}}
            ],
            "outputs": [{"name": "y", "parameters": {"binary_data": True}}, {"name": "n"}],
        }
    )
    response = await client.post(
        "/v2/models/echo/infer",
        content=header + x.tobytes(),
        headers={"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"},
    )
    assert response.status_code == 200, response.text
    length = int(response.headers["inference-header-content-length"])
    head = orjson.loads(response.content[:length])
    y_meta, n_meta = head["outputs"]
    assert y_meta["parameters"]["binary_data_size"] == 24 and "data" not in y_meta
    y = np.frombuffer(response.content[length:], dtype=np.float32).reshape(y_meta["shape"])
    assert np.array_equal(y, x * 2) and n_meta["data"] == [12.0, 30.0]


async def test_binary_data_output_for_all_outputs(client):
    response = await client.post(
        "/v2/models/ints/infer",
        json=_infer_body(data=[1, 2, 3, 4, 5, 6], datatype="INT32", parameters={"binary_data_output": True}),
    )
    length = int(response.headers["inference-header-content-length"])
    raw = response.content[length:]
    assert np.array_equal(np.frombuffer(raw[:24], np.int32), [2, 4, 6, 8, 10, 12])
    assert np.array_equal(np.frombuffer(raw[24:], np.int32), [12, 30])


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (_infer_body(datatype="INT32", data=[1, 2, 3, 4, 5, 6]), "datatype INT32 does not match the model's FP32"),
        (_infer_body(shape=(3, 2)), "shape [3, 2] does not match [-1, 3]"),
        (_infer_body(shape=(2, 4)), "needs 8 elements, the data has 6"),
        (
            {"inputs": [{"name": "z", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]},
            "missing ['x'], unexpected ['z']",
        ),
        (_infer_body(datatype="FP99"), "unknown datatype 'FP99'"),
        (_infer_body(shape=(-2, 3)), "must hold non-negative integers"),
        (_infer_body(data=[1, 2, "a", 4, 5, 6]), "FP32 data must be numbers"),
        (_infer_body(data=[1] * 27, shape=(9, 3)), "batch size 9 exceeds the model's max_batch_size 8"),
        ({"inputs": []}, "non-empty 'inputs' list"),
        (_infer_body(shape=[1_000_000_000, 1_000_000_000]), "needs 1000000000000000000 elements"),
    ],
)
async def test_bad_requests_get_400_naming_the_problem(client, body, message):
    response = await client.post("/v2/models/echo/infer", json=body)
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]


async def test_malformed_bodies(client):
    assert (await client.post("/v2/models/echo/infer", content=b"{nope")).status_code == 400
    header = orjson.dumps(
        {"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP32", "parameters": {"binary_data_size": 24}}]}
    )
    short = await client.post(
        "/v2/models/echo/infer",
        content=header + b"\0" * 10,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert short.status_code == 400 and "does not fit the binary data" in short.json()["error"]
    deep = (
        b'{"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP32", "data": '
        + b"[" * 100000
        + b"]" * 100000
        + b"}]}"
    )
    assert (await client.post("/v2/models/echo/infer", content=deep)).status_code == 400


async def test_oversized_body_is_413(client, plane):
    limit = plane.settings.max_body_bytes
    response = await client.post("/v2/models/echo/infer", content=b" " * (limit + 1))
    assert response.status_code == 413


async def test_a_model_that_raises_gets_a_generic_500(client):
    response = await client.post("/v2/models/failing/infer", json=_infer_body())
    # golden check ran FailingRuntime at load, so the model is not ready: 503 naming the load failure
    assert response.status_code == 503 and "secret" not in response.text


async def test_unknown_model_is_404(client):
    response = await client.post("/v2/models/../../etc/infer", json=_infer_body())
    assert response.status_code == 404


async def test_repository_control(client):
    index = (await client.get("/v2/repository/index")).json()
    assert {"name": "echo", "version": "2", "state": "READY", "reason": ""} in index
    ready = (await client.post("/v2/repository/index", json={"ready": True})).json()
    assert {r["name"] for r in ready} == {"echo", "ints"}
    assert (await client.post("/v2/repository/index", content=b"")).status_code == 200  # no body: no options
    assert (await client.post("/v2/repository/index", content=b" \n")).status_code == 400  # blanks are not JSON
    assert (await client.post("/v2/repository/models/echo/unload")).status_code == 200
    assert (await client.post("/v2/models/echo/infer", json=_infer_body())).status_code == 404
    assert (await client.post("/v2/repository/models/echo/load")).status_code == 200
    assert (await client.post("/v2/models/echo/infer", json=_infer_body())).status_code == 200
    assert (await client.post("/v2/repository/models/..%2Fx/load")).status_code in (400, 404)
    assert (await client.post("/v2/repository/models/missing/load")).status_code == 404


async def test_model_control_is_off_by_default(repo):
    import httpx

    from modelport.serving.rest import create_app
    from modelport.serving.server import build
    from modelport.serving.settings import ServerSettings

    plane = build(ServerSettings(repository=repo))
    transport = httpx.ASGITransport(app=create_app(plane))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        response = await http.post("/v2/repository/models/echo/unload")
    assert response.status_code == 403 and "--model-control" in response.json()["error"]


async def test_metrics_show_batches_and_requests(client):
    await client.post("/v2/models/echo/infer", json=_infer_body())
    text = (await client.get("/metrics")).text
    assert 'modelport_requests_total{model="echo",outcome="success",protocol="v2",version="2"} 1.0' in text
    assert 'modelport_batch_size_bucket{le="2.0",model="echo",version="2"} 1.0' in text
    assert 'modelport_model_ready{model="wrong",version="1"} 0.0' in text
    assert 'modelport_queue_capacity{model="echo",version="2"} 512.0' in text  # ServerSettings.max_queue_size
    assert 'modelport_queue_capacity{model="wrong",version="1"} 0.0' in text  # not loaded: no queue
    assert "process_resident_memory_bytes" in text and "modelport_queue_depth" in text


async def test_bytes_tensors_round_trip_in_binary_form():
    from modelport.serving.v2 import InferRequest, InferResponse, decode_request, encode_response

    items = [b"a", b"", "\u00e9".encode()]
    raw = b"".join(struct.pack("<I", len(i)) + i for i in items)
    header = orjson.dumps(
        {"inputs": [{"name": "s", "shape": [3], "datatype": "BYTES", "parameters": {"binary_data_size": len(raw)}}]}
    )
    request = decode_request(header + raw, len(header))
    assert list(request.inputs["s"]) == items
    body, length = encode_response(
        InferResponse("m", "1", {"s": request.inputs["s"]}), InferRequest({}, binary_output=True)
    )
    assert length is not None and body[length:] == raw


async def test_request_ids_are_echoed_or_made(client):
    given = await client.get("/v2/health/live", headers={"X-Request-ID": "abc-123"})
    assert given.headers["x-request-id"] == "abc-123"
    made = await client.get("/v2/health/live", headers={"X-Request-ID": "bad id!" * 20})
    made_id = made.headers["x-request-id"]
    assert made_id != "abc-123" and len(made_id) >= 14
    again = (await client.get("/v2/health/live")).headers["x-request-id"]
    assert again != made_id, "ids are unique"


def test_json_logs_carry_the_request_id(capsys):
    import json
    import logging

    from modelport.serving.requestid import REQUEST_ID
    from modelport.serving.server import configure_logging
    from modelport.serving.settings import ServerSettings

    configure_logging(ServerSettings(repository=".", log_json=True))
    token = REQUEST_ID.set("rid-1")
    try:
        logging.getLogger("modelport.test").warning("hello %s", "there")
    finally:
        REQUEST_ID.reset(token)
        logging.getLogger().handlers.clear()
    record = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert record["request_id"] == "rid-1" and record["message"] == "hello there" and record["level"] == "warning"


async def test_tfserving_rest_takes_and_gives_nan_and_infinity_tokens(client):
    """TF Serving's REST API allows NaN, Infinity and -Infinity in request and response JSON ("JSON conformance")."""
    body = b'{"instances": [[NaN, Infinity, -Infinity], [1e39, 1, 2]]}'
    response = await client.post("/v1/models/echo:predict", content=body)
    assert response.status_code == 200, response.text
    assert response.text.startswith('{"predictions":[{"y":[NaN,Infinity,-Infinity],"n":NaN},{"y":[Infinity,2.0,4.0]')
    rows = json.loads(response.text)["predictions"]
    y = [[np.nan, np.inf, -np.inf], [np.inf, 2, 4]]
    assert np.array_equal([row["y"] for row in rows], y, equal_nan=True)
    assert np.array_equal([row["n"] for row in rows], [np.nan, np.inf], equal_nan=True)
    columns = await client.post("/v1/models/echo:predict", content=b'{"inputs": [[1, 2, 3]]}')
    assert columns.text == '{"outputs":{"y":[[2.0,4.0,6.0]],"n":[12.0]}}', "finite outputs: orjson's bytes"
    response = await client.post("/v1/models/echo:predict", content=b'{"instances": [[Nan, 1, 2]]}')
    assert response.status_code == 400 and response.json()["error"].startswith("JSON Parse error: unexpected character")


async def test_v2_json_takes_and_gives_nan_and_infinity_tokens(client):
    """As Triton does: NaN and +-Infinity in and out of JSON data (orjson alone would write null)."""
    body = b'{"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [NaN, 1e39, -Infinity]}]}'
    response = await client.post("/v2/models/echo/infer", content=body)
    assert response.status_code == 200, response.text
    outputs = {o["name"]: o["data"] for o in json.loads(response.text)["outputs"]}
    assert '"data":[NaN,Infinity,-Infinity]' in response.text
    assert np.array_equal(outputs["y"], [np.nan, np.inf, -np.inf], equal_nan=True) and np.isnan(outputs["n"][0])


async def test_classification_of_a_batch_output_with_one_value_a_row(client):
    """Output n is [batch] (Triton: dims [1]): each row is classified on its own, [batch, 1], not the rows together."""
    body = _infer_body(outputs=[{"name": "n", "parameters": {"classification": 3}}])
    response = await client.post("/v2/models/echo/infer", json=body)
    assert response.status_code == 200, response.text
    (output,) = response.json()["outputs"]
    assert output["shape"] == [2, 1] and output["data"] == ["12.000000:0", "30.000000:0"]


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_compressed_request_bodies_are_decoded_on_every_protocol(client, encoding):
    # Triton takes gzip/deflate bodies (tritonclient's request_compression_algorithm); so does every route here
    compress = gzip.compress if encoding == "gzip" else zlib.compress
    headers = {"Content-Encoding": encoding}
    v2 = await client.post("/v2/models/echo/infer", content=compress(orjson.dumps(_infer_body())), headers=headers)
    assert v2.status_code == 200 and v2.json()["outputs"][0]["data"] == [2, 4, 6, 8, 10, 12], v2.text
    tfs = await client.post("/v1/models/echo:predict", content=compress(b'{"instances": [[1, 2, 3]]}'), headers=headers)
    assert tfs.status_code == 200 and tfs.json()["predictions"][0]["y"] == [2, 4, 6], tfs.text
    ts = await client.post("/predictions/echo", content=compress(b"[1, 2, 3]"), headers=headers)
    assert ts.status_code == 200 and ts.json()["y"] == [2, 4, 6], ts.text


async def test_compressed_bodies_that_are_bombs_corrupt_or_unknown_are_refused(client, plane):
    limit = plane.settings.max_body_bytes
    bomb = gzip.compress(b" " * (limit + 1))  # a few KB on the wire
    refused = await client.post("/v2/models/echo/infer", content=bomb, headers={"Content-Encoding": "gzip"})
    assert refused.status_code == 413 and "decompressed" in refused.json()["error"], refused.text
    body = gzip.compress(orjson.dumps(_infer_body()))
    for content, encoding, words in [
        (body[: len(body) // 2], "gzip", "truncated"),
        (b"not gzip at all", "gzip", "does not decode"),
        (body, "br", "Content-Encoding 'br' is not supported"),
    ]:
        answer = await client.post("/v2/models/echo/infer", content=content, headers={"Content-Encoding": encoding})
        assert answer.status_code == 400 and words in answer.json()["error"], answer.text
    answer = await client.post("/predictions/echo", content=b"garbage", headers={"Content-Encoding": "deflate"})
    assert answer.status_code == 400 and answer.json()["type"] == "BadRequestException", answer.text


@pytest.mark.parametrize(("api", "kind"), [("classify", "classification"), ("regress", "regression")])
async def test_tfserving_classify_and_regress_of_a_predict_model_answer_tf_servings_400(client, api, kind):
    # a model that is not a SavedModel has one signature, serving_default, a predict one (TF Serving's answer to a
    # SavedModel without a classification or regression signature); the examples are not even read
    answer = await client.post(f"/v1/models/echo/versions/1:{api}", json={"examples": [{"x": [1.0, 2.0, 3.0]}]})
    assert answer.status_code == 400, answer.text  # was 405 Method Not Allowed: the status route took the path
    assert answer.json()["error"] == (
        f"Expected {kind} signature method_name to be tensorflow/serving/{api}. Was: tensorflow/serving/predict"
    )


async def test_torchserve_names_a_missing_version_as_torchserve_does(client):
    # TorchServe: 404 ModelVersionNotFoundException for a version of a known model, ModelNotFound for the model
    for answer in (await client.post("/predictions/echo/7", json=[1, 2, 3]), await client.get("/models/echo/7")):
        assert answer.status_code == 404, answer.text
        assert answer.json() == {
            "code": 404,
            "type": "ModelVersionNotFoundException",
            "message": "Model version: 7 does not exist for model: echo",
        }
    unknown = await client.post("/predictions/nope/1", json=[1, 2, 3])
    assert unknown.status_code == 404 and unknown.json()["type"] == "ModelNotFoundException", unknown.text


async def test_torchserve_describes_a_version_by_its_label_as_predictions_take_it(tmp_path):
    import httpx

    from modelport.serving.rest import create_app
    from modelport.serving.server import build
    from modelport.serving.settings import ServerSettings
    from tests.serving import fakes

    fakes.write_model(tmp_path, "echo", config={"version_policy": {"all": True}, "version_labels": {"1.0": 2}})
    fakes.write_model(tmp_path, "echo", version=2)
    plane = build(ServerSettings(repository=tmp_path))
    await plane.start()
    transport = httpx.ASGITransport(app=create_app(plane))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        predicted = await http.post("/predictions/echo/1.0", json=[1, 2, 3])
        described = await http.get("/models/echo/1.0")
        missing = await http.get("/models/echo/3.0")
    await plane.close()
    assert predicted.status_code == 200, predicted.text
    assert described.status_code == 200 and [d["modelVersion"] for d in described.json()] == ["2"], described.text
    assert missing.status_code == 404 and missing.json()["type"] == "ModelVersionNotFoundException", missing.text
