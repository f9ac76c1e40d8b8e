"""KServe's own Python SDK (``kserve.InferenceRESTClient`` / ``InferenceGRPCClient``) against modelport.

kserve is not installed in CI, so these tests send the exact requests kserve 0.21.0's clients send (captured
with an ``httpx.MockTransport``) and assert what the clients read from the answers. The v2 REST and gRPC calls
(``infer``, ``is_server_live``/``is_server_ready``/``is_model_ready``) worked already; the v1 ones did not, and
gRPC answers to typed inputs came raw, which kserve's ``InferOutput.data`` does not read.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from modelport.serving.grpc_v2 import build_grpc_server, encode_grpc_response
from modelport.serving.server import build
from modelport.serving.settings import ServerSettings
from modelport.serving.types import InferResponse
from tests.serving import fakes

# what kserve 0.21.0's InferenceRESTClient (httpx 0.29) sends on every request
KSERVE_HEADERS = {"accept": "*/*", "accept-encoding": "gzip, deflate", "user-agent": "python-httpx/0.29.0"}


def _error_message(answer: httpx.Response) -> str:
    """The message kserve puts in its HTTPStatusError: the body's "error", read only from a body whose
    content-type is exactly application/json."""
    assert answer.headers["content-type"] == "application/json", answer.headers
    message = answer.json()["error"]
    assert isinstance(message, str)
    return message


async def test_v1_server_liveness_is_the_root(client):
    # RESTConfig(protocol="v1").is_server_live: GET {base}/, then response.json().get("status").lower() == "alive"
    answer = await client.get("/", headers=KSERVE_HEADERS)
    assert answer.status_code == 200, answer.text  # was 404
    assert answer.json()["status"].lower() == "alive"


async def test_v1_model_readiness_answers_ready(client):
    # RESTConfig(protocol="v1").is_model_ready: GET {base}/v1/models/{m}; False on 503, raises on other errors,
    # else response.json().get("ready") (it was None: TF Serving's status body alone has no "ready")
    answer = await client.get("/v1/models/echo", headers=KSERVE_HEADERS)
    assert answer.status_code == 200, answer.text
    assert answer.json()["ready"] is True and answer.json()["name"] == "echo"
    assert [v["state"] for v in answer.json()["model_version_status"]] == ["AVAILABLE", "AVAILABLE"]  # TF Serving's
    failed = await client.get("/v1/models/wrong", headers=KSERVE_HEADERS)  # its golden check failed: not ready
    assert failed.status_code == 200 and failed.json()["ready"] is False, failed.text
    one = (await client.get("/v1/models/echo/versions/1", headers=KSERVE_HEADERS)).json()
    assert one["ready"] is True and [v["version"] for v in one["model_version_status"]] == ["1"]
    unknown = await client.get("/v1/models/nope", headers=KSERVE_HEADERS)
    assert unknown.status_code == 404 and _error_message(unknown) == "Could not find any versions of model nope"


async def test_v1_predict_answers_kserve_v1(client):
    # RESTConfig(protocol="v1").infer(base, dict, model_name="echo"): orjson body, content-type application/json;
    # the answer is returned as the parsed JSON
    answer = await client.post(
        "/v1/models/echo:predict",
        content=b'{"instances":[[1.0,2.0,3.0]]}',
        headers={**KSERVE_HEADERS, "content-type": "application/json"},
    )
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"predictions": [{"y": [2, 4, 6], "n": 12}]}


async def test_v1_explain_is_a_clear_501(client):
    # RESTConfig(protocol="v1").explain(base, "echo", dict): modelport has no explainers; the client raises
    # HTTPStatusError with the body's "error" (it was 405 Method Not Allowed, with no message)
    answer = await client.post(
        "/v1/models/echo:explain",
        content=b'{"instances":[[1.0,2.0,3.0]]}',
        headers={**KSERVE_HEADERS, "content-type": "application/json"},
    )
    assert answer.status_code == 501, answer.text
    assert _error_message(answer) == "KServe v1's :explain API is not implemented; modelport serves :predict"


async def test_explanations_of_a_model_without_a_torchserve_handler(client):
    # a TorchServe handler's model explains (tests/serving/test_torchserve_handlers.py); any other model answers
    # KServe v2's explain with the same clear 501, and TorchServe's /explanations as TorchServe answers a handler
    # that cannot explain
    body = b'{"inputs":[{"name":"x","shape":[1,3],"datatype":"FP32","data":[1,2,3]}]}'
    for path in ("/v2/models/echo/explain", "/v2/models/echo/versions/1/explain"):
        answer = await client.post(path, content=body, headers={"content-type": "application/json"})
        assert answer.status_code == 501, answer.text
        assert _error_message(answer) == "KServe v2's explain API is not implemented; modelport serves /infer"
    answer = await client.post("/explanations/echo", content=b"[1, 2, 3]")
    assert answer.status_code == 503, answer.text
    assert answer.json() == {"code": 503, "type": "InternalServerException", "message": "Prediction failed"}
    missing = await client.post("/explanations/nope", content=b"[1, 2, 3]")
    assert (missing.status_code, missing.json()["type"]) == (404, "ModelNotFoundException"), missing.text


async def test_v2_binary_infer_as_the_kserve_client_sends_it(client):
    # InferInput("x", [1, 3], "FP32").set_data_from_numpy(...) (binary by default) in InferRequest("echo", ...,
    # request_id="r1"); InferResponse.from_bytes reads "model_name", "id", each output's "data" (JSON here)
    header = (
        b'{"id":"r1","model_name":"echo","inputs":[{"name":"x","shape":[1,3],"datatype":"FP32",'
        b'"parameters":{"binary_data_size":12}}]}'
    )
    answer = await client.post(
        "/v2/models/echo/infer",
        content=header + b"\x00\x00\x80?\x00\x00\x00@\x00\x00@@",
        headers={
            **KSERVE_HEADERS,
            "inference-header-content-length": str(len(header)),
            "content-type": "application/octet-stream",
        },
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["model_name"] == "echo" and body["id"] == "r1"
    outputs = {o["name"]: (o["datatype"], o["shape"], o["data"]) for o in body["outputs"]}
    assert outputs == {"y": ("FP32", [1, 3], [2.0, 4.0, 6.0]), "n": ("FP32", [1], [12.0])}


# InferRequest("identity", [...], request_id=...).to_grpc().SerializeToString() of kserve 0.21.0, typed: the inputs
# given as data lists, InferInput("in_int64", [2, 3], "INT64", data=[1, 2, 3, 4, 5, 6]), then BOOL
# [True, False, True, False, False, True], BYTES ["a", "", "é", "x", "yy", "zzz"], FP32 [1.5, -2, 3, 0, 7, -1]
TYPED = (
    b"\n\x08identity\x1a\x02k1*\x1f\n\x08in_int64\x12\x05INT64\x1a\x02\x02\x03*\x08\x1a\x06\x01\x02\x03\x04\x05\x06"
    b"*\x1d\n\x07in_bool\x12\x04BOOL\x1a\x02\x02\x03*\x08\n\x06\x01\x00\x01\x00\x00\x01*-\n\tin_string\x12\x05BYTES"
    b"\x1a\x02\x02\x03*\x15B\x01aB\x00B\x02\xc3\xa9B\x01xB\x02yyB\x03zzz*2\n\nin_float32\x12\x04FP32\x1a\x02\x02\x03"
    b"*\x1a2\x18\x00\x00\xc0?\x00\x00\x00\xc0\x00\x00@@\x00\x00\x00\x00\x00\x00\xe0@\x00\x00\x80\xbf"
)
# the same client, InferInput("in_int64", [2, 3], "INT64").set_data_from_numpy(np.arange(6).reshape(2, 3)): raw
RAW = (
    b'\n\x08identity\x1a\x02k2*-\n\x08in_int64\x12\x05INT64\x1a\x02\x02\x03"\x16\n\x10binary_data_size\x12\x02\x100'
    b":0" + b"".join(i.to_bytes(8, "little") for i in range(6))
)


@pytest.fixture
async def grpc_stub(tmp_path: Path) -> AsyncIterator[Any]:
    fakes.write_identity_model(tmp_path, "identity", ["int64", "bool", "string", "float32"])
    plane = build(ServerSettings(repository=tmp_path, golden_check=False, max_queue_delay_ms=0))
    await plane.start()
    server, _ = build_grpc_server(plane)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield service_pb2_grpc.GRPCInferenceServiceStub(channel)
    finally:
        await server.stop(grace=None)
        await plane.close()


async def test_grpc_typed_inputs_are_answered_in_typed_contents_and_raw(grpc_stub):
    # InferResponse.from_grpc gives each output's .data from its typed contents only ([] for raw outputs, which
    # only as_numpy() reads); kserve's server answers typed inputs in typed contents. Triton answers raw whatever
    # came, and its explicit-content examples read raw_output_contents only: both are there
    reply = await grpc_stub.ModelInfer(service_pb2.ModelInferRequest.FromString(TYPED))
    assert reply.id == "k1" and reply.model_name == "identity"
    raw = dict(zip([o.name for o in reply.outputs], reply.raw_output_contents, strict=True))
    assert raw["out_in_int64"] == np.arange(1, 7, dtype="<i8").tobytes() and raw["out_in_bool"] == bytes(
        [1, 0, 1, 0, 0, 1]
    )
    outputs = {o.name: (o.datatype, list(o.shape), o.contents) for o in reply.outputs}
    assert outputs["out_in_int64"][:2] == ("INT64", [2, 3])
    assert list(outputs["out_in_int64"][2].int64_contents) == [1, 2, 3, 4, 5, 6]
    assert list(outputs["out_in_bool"][2].bool_contents) == [True, False, True, False, False, True]
    assert list(outputs["out_in_string"][2].bytes_contents) == [b"a", b"", "é".encode(), b"x", b"yy", b"zzz"]
    assert list(outputs["out_in_float32"][2].fp32_contents) == [1.5, -2.0, 3.0, 0.0, 7.0, -1.0]


async def test_grpc_raw_inputs_are_answered_raw(grpc_stub):
    # as Triton answers them (tritonclient sends raw inputs and reads raw outputs only)
    request = service_pb2.ModelInferRequest.FromString(RAW)
    request.inputs.add(name="in_bool", datatype="BOOL", shape=[2, 3])
    request.raw_input_contents.append(bytes([1, 0, 1, 0, 0, 1]))
    request.inputs.add(name="in_string", datatype="BYTES", shape=[2, 3])
    request.raw_input_contents.append(b"".join(len(s).to_bytes(4, "little") + s for s in [b"a"] * 6))
    request.inputs.add(name="in_float32", datatype="FP32", shape=[2, 3])
    request.raw_input_contents.append(np.ones(6, "<f4").tobytes())
    reply = await grpc_stub.ModelInfer(request)
    assert [len(o.contents.ListFields()) for o in reply.outputs] == [0, 0, 0, 0]
    index = [o.name for o in reply.outputs].index("out_in_int64")
    assert reply.raw_output_contents[index] == RAW[-48:]


def test_typed_answers_fall_back_to_raw_for_datatypes_without_contents():
    # FP16 and BF16 have no typed contents field: kserve's server answers all outputs raw then, and so does modelport
    outputs = {"half": np.ones((1, 2), np.float16), "n": np.arange(2, dtype=np.int32)}
    reply = encode_grpc_response(InferResponse("m", "1", outputs), "r", typed=True)
    assert len(reply.raw_output_contents) == 2 and reply.raw_output_contents[0] == np.ones(2, "<f2").tobytes()
    assert [len(o.contents.ListFields()) for o in reply.outputs] == [0, 0]
    typed = encode_grpc_response(InferResponse("m", "1", {"n": outputs["n"]}), "r", typed=True)
    assert list(typed.outputs[0].contents.int_contents) == [0, 1]
    assert list(typed.raw_output_contents) == [np.arange(2, dtype="<i4").tobytes()]


async def test_kserve_lists_its_models(client):
    # KServe's model server: GET /v1/models and GET /v2/models answer {"models": [names]} (was 404)
    for path in ("/v1/models", "/v2/models"):
        answer = await client.get(path, headers=KSERVE_HEADERS)
        assert answer.status_code == 200, (path, answer.text)
        assert answer.json() == {"models": ["broken", "echo", "failing", "ints", "wrong"]}
