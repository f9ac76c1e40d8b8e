"""KServe's own Python SDK (``kserve.InferenceRESTClient`` / ``InferenceGRPCClient``) against modelport.

kserve is not installed in CI, so these tests send the exact requests kserve 0.21.0's clients send (captured
with an ``httpx.MockTransport``) and assert what the clients read from the answers. The v2 REST and gRPC calls
(``infer``, ``is_server_live``/``is_server_ready``/``is_model_ready``) worked already; the v1 ones did not.
"""

from __future__ import annotations

import httpx

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
    assert unknown.status_code == 404 and _error_message(unknown) == "unknown model 'nope'"


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
