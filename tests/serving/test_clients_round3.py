"""Real clients, round 3: the calls of tritonclient and tensorflow-serving-api no other test made, answered as
Triton 2.x and TF Serving 2.x answer them.

- ``ModelStreamInfer``: a stream's answers come in the order of its requests, errors included, as Triton answers a
  model that is not decoupled (its ``stream_infer_handler.cc`` queues each response behind the ones before it).
- TF Serving REST: a version label the model does not define is its InvalidArgument (400, not 404), and a path
  naming both a version and a label its malformed request (``http_rest_api_util.cc``'s paths take one or the other).
- TF Serving gRPC: ``output_filter`` checked as ``predict_util.cc`` checks it, in its words (an alias the signature
  lacks, one named twice), and ``ModelService.HandleReloadConfigRequest`` answered, not a Python exception.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc.aio as triton_aio
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from modelport.serving.dataplane import DataPlane
from tests.serving import fakes
from tests.serving.inprocess import grpc_served_in_process
from tests.serving.processes import Served, serving, until


def _failed(plane: DataPlane, model: str) -> float:
    """modelport_requests_total of ``model`` over the v2 stream with any outcome but success."""
    page = generate_latest(plane.metrics.exposition).decode()
    samples = [s for f in text_string_to_metric_families(page) for s in f.samples]
    return sum(
        s.value
        for s in samples
        if s.name == "modelport_requests_total"
        and s.labels.get("model") == model
        and s.labels.get("protocol") == "v2-grpc-stream"
        and s.labels.get("outcome") != "success"
    )


def _echo_inputs(value: float, columns: int = 3) -> list[Any]:
    tensor = triton_aio.InferInput("x", [1, columns], "FP32")
    tensor.set_data_from_numpy(np.full((1, columns), value, dtype=np.float32))
    return [tensor]


async def test_a_stream_answers_in_the_order_of_its_requests_errors_included(repo):
    """The first request waits for its batch (echo held) while the ones after it fail at once and one more runs on
    another model: the answers still come first to last, each with its request id where it has one, as Triton
    answers (tritonclient hands a stream error over without its request id: the order is all a client has)."""
    async with grpc_served_in_process(repo) as (plane, address):
        client = triton_aio.InferenceServerClient(address)
        fakes.GATE.clear()
        held = False

        async def requests() -> AsyncIterator[dict[str, Any]]:
            nonlocal held
            yield {"model_name": "echo", "model_version": "1", "inputs": _echo_inputs(1), "request_id": "first"}
            await until(lambda: plane.in_flight == 1, what="the first request held in its batch")
            held = True
            yield {"model_name": "nope", "inputs": _echo_inputs(2), "request_id": "unknown"}
            yield {"model_name": "ints", "inputs": _echo_inputs(3, columns=4), "request_id": "bad-shape"}
            await until(lambda: _failed(plane, "ints") == 1, what="the bad request refused while the first waits")
            fakes.GATE.set()
            yield {"model_name": "echo", "model_version": "2", "inputs": _echo_inputs(4), "request_id": "last"}

        answers = []
        async for result, error in client.stream_infer(requests()):
            answers.append((result.get_response().id if result else None, str(error) if error else None))
        await client.close()
    assert held
    assert [a[0] for a in answers] == ["first", None, None, "last"], answers
    assert "unknown model: 'nope'" in str(answers[1][1]) and "input 'x'" in str(answers[2][1]), answers


@pytest.fixture(scope="module")
def tf_served(tmp_path_factory) -> Iterator[Served]:
    """echo (y = 2x, n = row sums) with the label ``stable``, over TF Serving's REST and gRPC APIs."""
    root = tmp_path_factory.mktemp("round3") / "repo"
    fakes.write_model(root, "echo", config={"version_labels": {"stable": 1}})
    with serving(root, "--tfserving-grpc", "--no-golden-check", timeout=120) as served:
        yield served


X = [[1.0, 2.0, 3.0]]


@pytest.mark.tf
@pytest.mark.parametrize(
    ("method", "path", "status", "error"),
    [
        ("POST", "/v1/models/echo/labels/canary:predict", 400, "Unrecognized servable version label: canary"),
        ("GET", "/v1/models/echo/labels/canary", 400, "Unrecognized servable version label: canary"),
        ("GET", "/v1/models/echo/labels/canary/metadata", 400, "Unrecognized servable version label: canary"),
        (
            "POST",
            "/v1/models/echo/versions/1/labels/stable:predict",
            400,
            "Malformed request: POST /v1/models/echo/versions/1/labels/stable:predict",
        ),
        ("GET", "/v1/models/echo/versions/1/labels/stable", 400, "Malformed request: GET /v1/models/echo/versions/1"),
        ("GET", "/v1/models/echo/versions/1/labels/stable/metadata", 400, "/labels/stable/metadata"),
        ("POST", "/v1/models/echo/labels/stable:predict", 200, None),
        ("GET", "/v1/models/echo/labels/stable/metadata", 200, None),
    ],
)
def test_tfserving_rest_labels_are_answered_as_tf_serving_answers(tf_served, method, path, status, error):
    response = httpx.request(method, tf_served.url + path, json={"instances": X} if method == "POST" else None)
    assert response.status_code == status, response.text
    if error is None:
        assert "error" not in response.json()
    else:
        assert set(response.json()) == {"error"} and error in response.json()["error"], response.text


def test_torchserve_keeps_its_404_for_a_version_it_lacks(tf_served):
    """The label's 400 is TF Serving's: TorchServe's predictions answer an unknown version with its own 404."""
    response = httpx.post(tf_served.url + "/predictions/echo/canary", json={"x": X})
    assert response.status_code == 404 and response.json()["type"] == "ModelVersionNotFoundException"


def _predict(output_filter: list[str], **spec: Any) -> Any:
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest(output_filter=output_filter)
    request.model_spec.name = "echo"
    for key, value in spec.items():
        setattr(request.model_spec, key, value)
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array(X, dtype=np.float32)))
    return request


def _stubs(served: Served) -> tuple[Any, Any, grpc.Channel]:
    from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

    channel = grpc.insecure_channel(served.grpc)
    return (
        prediction_service_pb2_grpc.PredictionServiceStub(channel),
        model_service_pb2_grpc.ModelServiceStub(channel),
        channel,
    )


@pytest.mark.tf
@pytest.mark.parametrize(
    ("output_filter", "error"),
    [
        (["zz"], "output tensor alias not found in signature: zz Outputs expected to be in the set {n,y}."),
        (["y", "y"], "duplicate output tensor alias: y"),
        (["n", "zz"], "output tensor alias not found in signature: zz Outputs expected to be in the set {n,y}."),
    ],
)
def test_tfserving_grpc_output_filter_errors_are_tf_servings(tf_served, output_filter, error):
    predictions, _, channel = _stubs(tf_served)
    with channel, pytest.raises(grpc.RpcError) as refused:
        predictions.Predict(_predict(output_filter), timeout=30)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details() == error


@pytest.mark.tf
def test_tfserving_grpc_output_filter_and_version_label_select(tf_served):
    import tensorflow as tf

    predictions, _, channel = _stubs(tf_served)
    with channel:
        reply = predictions.Predict(_predict(["n"], version_label="stable"), timeout=30)
    assert list(reply.outputs) == ["n"] and reply.model_spec.version.value == 1
    assert tf.make_ndarray(reply.outputs["n"]).tolist() == [12.0]


@pytest.mark.tf
def test_tfserving_handle_reload_config_request_is_answered_not_crashed(tf_served):
    """TF Serving's INVALID_ARGUMENT for a config that is not a model list; a model list: UNIMPLEMENTED saying why
    (it was grpc's "Unexpected <class 'NotImplementedError'>" of the generated servicer)."""
    from tensorflow_serving.apis import model_management_pb2

    _, models, channel = _stubs(tf_served)
    listed = model_management_pb2.ReloadConfigRequest()
    entry = listed.config.model_config_list.config.add(
        name="echo", base_path="/models/echo", model_platform="tensorflow"
    )
    assert entry.name == "echo"
    with channel:
        with pytest.raises(grpc.RpcError) as refused:
            models.HandleReloadConfigRequest(model_management_pb2.ReloadConfigRequest(), timeout=30)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert refused.value.details() == (
            "ServerModelConfig type not supported by HandleReloadConfigRequest. "
            "Only ModelConfigList is currently supported"
        )
        with pytest.raises(grpc.RpcError) as refused:
            models.HandleReloadConfigRequest(listed, timeout=30)
        assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert "modelport does not implement HandleReloadConfigRequest" in refused.value.details()
        assert "NotImplementedError" not in refused.value.details()


def test_handle_reload_config_request_takes_the_control_token():
    """A change to what the server serves is model control, as v2's load/unload: the control token, not inference's."""
    from modelport.serving.auth import grpc_scope

    assert grpc_scope("/tensorflow.serving.ModelService/HandleReloadConfigRequest") == "control"
    assert grpc_scope("/tensorflow.serving.ModelService/GetModelStatus") == "inference"
