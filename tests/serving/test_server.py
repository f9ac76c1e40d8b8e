"""The real server process on ephemeral ports: every format of both example models over v2 JSON and binary."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest

from modelport.manifest import read_manifest
from tests.serving.processes import Served, serving


@pytest.fixture(scope="module")
def served(digits_repo, tmp_path_factory) -> Iterator[Served]:
    """``modelport serve`` over both digits models, TF Serving gRPC on, batching with a 5 ms window."""
    env = {"MODELPORT_MAX_QUEUE_DELAY_MS": "5", "MODELPORT_TFSERVING_GRPC": "true"}
    log = tmp_path_factory.mktemp("server") / "server.log"
    with serving(digits_repo.root, env=env, log=log) as server:
        yield server


@pytest.fixture(scope="module")
def running_server(served) -> str:
    return served.url


@pytest.fixture(scope="module")
def grpc_port(served) -> int:
    return int(served.grpc.rsplit(":", 1)[1])


def _models(digits_repo) -> list[Path]:
    return sorted(p / "1" for p in digits_repo.root.iterdir() if not p.name.startswith("."))


@pytest.mark.torch
@pytest.mark.tf
@pytest.mark.tflite
def test_every_format_serves_golden_outputs_over_json_and_binary(running_server, digits_repo):
    served = []
    with httpx.Client(base_url=running_server, timeout=30) as http:
        for directory in _models(digits_repo):
            manifest = read_manifest(directory)
            golden = np.load(directory / "golden.npz")
            image = golden["case0/inputs/image"]
            expected = golden["case0/outputs/logits"]
            atol = 0.5 if manifest.quantization else 1e-3  # quantized variants: agreement-gated at export
            body = {
                "inputs": [
                    {"name": "image", "shape": list(image.shape), "datatype": "FP32", "data": image.ravel().tolist()}
                ]
            }
            response = http.post(f"/v2/models/{manifest.name}/infer", json=body)
            assert response.status_code == 200, (manifest.name, response.text)
            output = response.json()["outputs"][0]
            got = np.array(output["data"], np.float32).reshape(output["shape"])
            assert np.allclose(got, expected, atol=atol * max(1, np.abs(expected).max())), manifest.name
            assert np.argmax(got, 1).tolist() == np.argmax(expected, 1).tolist(), manifest.name

            header = orjson.dumps(
                {
                    "inputs": [
                        {
                            "name": "image",
                            "shape": list(image.shape),
                            "datatype": "FP32",
                            "parameters": {"binary_data_size": image.nbytes},
                        }
                    ],
                    "parameters": {"binary_data_output": True},
                }
            )
            raw = http.post(
                f"/v2/models/{manifest.name}/infer",
                content=header + image.astype("<f4").tobytes(),
                headers={"Inference-Header-Content-Length": str(len(header))},
            )
            assert raw.status_code == 200, (manifest.name, raw.text)
            length = int(raw.headers["inference-header-content-length"])
            binary = np.frombuffer(raw.content[length:], np.float32).reshape(expected.shape)
            assert np.array_equal(binary, got), f"{manifest.name}: binary and JSON answers differ"
            served.append(manifest.variant)
    assert len(served) == 19, served  # with the float16, dynamic-int8 and full-int8 TFLite from PyTorch


@pytest.mark.torch
@pytest.mark.tf
def test_concurrent_load_really_batches(running_server, digits_repo):
    """32 concurrent clients against one model: the batch-size histogram shows batches above 1."""
    import asyncio

    image = np.load(digits_repo.root / "digits-onnx" / "1" / "golden.npz")["case0/inputs/image"]
    body = orjson.dumps(
        {"inputs": [{"name": "image", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": image.ravel().tolist()}]}
    )

    async def load() -> list[int]:
        async with httpx.AsyncClient(base_url=running_server, timeout=30) as http:

            async def one() -> int:
                return (await http.post("/v2/models/digits-torchscript/infer", content=body)).status_code

            return await asyncio.gather(*(one() for _ in range(256)))

    statuses = asyncio.run(load())
    assert statuses.count(200) == 256
    metrics = httpx.get(f"{running_server}/metrics").text
    buckets = {}
    for line in metrics.splitlines():
        if line.startswith("modelport_batch_size_bucket{") and 'model="digits-torchscript"' in line:
            le = line.split('le="')[1].split('"')[0]
            buckets[le] = float(line.rsplit(" ", 1)[1])
    assert buckets["+Inf"] < 256, f"every request ran alone: {buckets}"
    assert buckets["+Inf"] - buckets["1.0"] > 0, buckets


@pytest.mark.torch
@pytest.mark.tf
@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_tritonclient_works_unchanged(running_server, digits_repo, binary):
    import tritonclient.http as triton

    client = triton.InferenceServerClient(url=running_server.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("kdigits-tflite-full-int8")
    metadata = client.get_model_metadata("digits-onnx")
    assert metadata["inputs"][0] == {"name": "image", "datatype": "FP32", "shape": [-1, 1, 8, 8]}
    golden = np.load(digits_repo.root / "digits-onnx" / "1" / "golden.npz")
    image, expected = golden["case1/inputs/image"], golden["case1/outputs/logits"]
    inputs = [triton.InferInput("image", list(image.shape), "FP32")]
    inputs[0].set_data_from_numpy(image, binary_data=binary)
    outputs = [triton.InferRequestedOutput("logits", binary_data=binary)]
    result = client.infer("digits-onnx", inputs, outputs=outputs, request_id="triton-1")
    assert result.get_response()["id"] == "triton-1"
    assert np.allclose(result.as_numpy("logits"), expected, atol=1e-4)
    client.close()


@pytest.mark.torch
@pytest.mark.tf
def test_tritonclient_grpc_works_unchanged(running_server, digits_repo, grpc_port):
    import tritonclient.grpc as triton

    client = triton.InferenceServerClient(url=f"127.0.0.1:{grpc_port}")
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("digits-pt2") and client.is_model_ready("digits-pt2", "1")
    meta = client.get_model_metadata("kdigits-savedmodel", as_json=True)
    assert meta["inputs"][0] == {"name": "image", "datatype": "FP32", "shape": ["-1", "8", "8", "1"]}
    assert client.get_server_metadata().name == "triton"
    for model in ("digits-onnx", "kdigits-tflite-full-int8", "digits-torchscript"):
        directory = digits_repo.root / model / "1"
        golden = np.load(directory / "golden.npz")
        image, expected = golden["case0/inputs/image"], golden["case0/outputs/logits"]
        inputs = [triton.InferInput("image", list(image.shape), "FP32")]
        inputs[0].set_data_from_numpy(image)
        result = client.infer(model, inputs, outputs=[triton.InferRequestedOutput("logits")], request_id="g-1")
        assert result.get_response().id == "g-1"
        got = result.as_numpy("logits")
        assert got.shape == expected.shape and np.argmax(got) == np.argmax(expected), model
    with pytest.raises(triton.InferenceServerException) as info:
        client.infer(
            "digits-onnx",
            [triton.InferInput("image", [1, 8, 8, 1], "FP32").set_data_from_numpy(np.zeros((1, 8, 8, 1), np.float32))],
        )
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT" and "does not match" in info.value.message()
    with pytest.raises(triton.InferenceServerException) as info:
        client.get_model_metadata("no-such-model")
    assert info.value.status() == "StatusCode.NOT_FOUND"
    index = client.get_model_repository_index(as_json=True)["models"]
    assert {"name": "digits-onnx", "version": "1", "state": "READY"} in index
    client.close()


@pytest.mark.torch
def test_grpc_health_and_reflection(running_server, grpc_port):
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        serving = health_pb2.HealthCheckResponse.SERVING
        assert health.Check(health_pb2.HealthCheckRequest(service="")).status == serving
        assert health.Check(health_pb2.HealthCheckRequest(service="digits-onnx")).status == serving
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        names = {s.name for r in stub.ServerReflectionInfo(iter([request])) for s in r.list_services_response.service}
    assert {"inference.GRPCInferenceService", "grpc.health.v1.Health"} <= names


@pytest.mark.torch
def test_reflection_describes_every_service_and_a_client_built_from_it_calls_torchserves(running_server, grpc_port):
    """As grpcurl does: list, describe every service (TorchServe's hand-built ones and TF Serving's too), then call
    TorchServe's Predictions with message classes made from what reflection sent."""
    import grpc
    from google.protobuf import descriptor_pool, message_factory
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        pool = descriptor_pool.DescriptorPool(database)
        methods = {name: [m.name for m in pool.FindServiceByName(name).methods] for name in database.get_services()}
        assert methods["org.pytorch.serve.grpc.inference.InferenceAPIsService"] == [
            "Ping",
            "Predictions",
            "StreamPredictions",
            "StreamPredictions2",
        ]
        assert "RegisterModel" in methods["org.pytorch.serve.grpc.management.ManagementAPIsService"]
        assert "Predict" in methods["tensorflow.serving.PredictionService"]
        assert "ModelInfer" in methods["inference.GRPCInferenceService"]
        predictions = pool.FindServiceByName("org.pytorch.serve.grpc.inference.InferenceAPIsService").methods_by_name[
            "Predictions"
        ]
        request, response = (
            message_factory.GetMessageClass(t) for t in (predictions.input_type, predictions.output_type)
        )
        call = channel.unary_unary(
            f"/{predictions.containing_service.full_name}/Predictions",
            request_serializer=request.SerializeToString,
            response_deserializer=response.FromString,
        )
        image = np.zeros((1, 8, 8), np.float32).tolist()  # one instance of digits-onnx's [-1, 1, 8, 8] input
        answer = call(request(model_name="digits-onnx", input={"data": json.dumps(image).encode()}), timeout=30)
    assert len(json.loads(answer.prediction)) == 10  # the ten logits


@pytest.mark.tf
@pytest.mark.torch
def test_tfserving_rest_and_torchserve_api_on_real_models(running_server, digits_repo):
    golden = np.load(digits_repo.root / "kdigits-savedmodel" / "1" / "golden.npz")
    image, expected = golden["case1/inputs/image"], golden["case1/outputs/logits"]
    with httpx.Client(base_url=running_server, timeout=30) as http:
        rows = http.post("/v1/models/kdigits-savedmodel:predict", json={"instances": image.tolist()}).json()
        assert np.allclose(rows["predictions"], expected, atol=1e-4)
        columns = http.post(
            "/v1/models/kdigits-savedmodel/versions/1:predict", json={"inputs": {"image": image.tolist()}}
        ).json()
        assert np.allclose(columns["outputs"], expected, atol=1e-4)
        status = http.get("/v1/models/kdigits-savedmodel").json()["model_version_status"]
        assert status[0]["state"] == "AVAILABLE"

        torch_golden = np.load(digits_repo.root / "digits-torchscript" / "1" / "golden.npz")
        one = torch_golden["case0/inputs/image"][0]
        answer = http.post("/predictions/digits-torchscript", json=one.tolist()).json()
        assert np.allclose(answer, torch_golden["case0/outputs/logits"][0], atol=1e-4)
        assert http.get("/ping").json() == {"status": "Healthy"}


@pytest.mark.tf
@pytest.mark.torch
def test_official_tfserving_grpc_stubs(running_server, digits_repo, grpc_port):
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import (
        get_model_metadata_pb2,
        get_model_status_pb2,
        model_service_pb2_grpc,
        predict_pb2,
        prediction_service_pb2_grpc,
    )

    golden = np.load(digits_repo.root / "kdigits-savedmodel" / "1" / "golden.npz")
    image, expected = golden["case1/inputs/image"], golden["case1/outputs/logits"]
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        predict = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "kdigits-savedmodel"
        request.model_spec.signature_name = "serving_default"
        request.inputs["image"].CopyFrom(tf.make_tensor_proto(image))
        request.output_filter.append("logits")
        reply = predict.Predict(request, timeout=30)
        assert reply.model_spec.version.value == 1
        # keyed as the SavedModel's serving_default signature keys it (Keras: output_0), as TF Serving answers
        key = read_manifest(digits_repo.root / "kdigits-savedmodel" / "1").native("logits")
        assert list(reply.outputs) == [key] and key == "output_0"
        assert np.allclose(tf.make_ndarray(reply.outputs[key]), expected, atol=1e-4)

        request.model_spec.version.value = 1
        request.model_spec.name = "kdigits-tflite-full-int8"
        agreement = np.argmax(tf.make_ndarray(predict.Predict(request).outputs["logits"]), 1)
        assert agreement.tolist() == np.argmax(expected, 1).tolist()

        meta_request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        meta_request.model_spec.name = "digits-onnx"
        meta = predict.GetModelMetadata(meta_request)
        signatures = get_model_metadata_pb2.SignatureDefMap()
        meta.metadata["signature_def"].Unpack(signatures)
        signature = signatures.signature_def["serving_default"]
        assert [d.size for d in signature.inputs["image"].tensor_shape.dim] == [-1, 1, 8, 8]

        status_request = get_model_status_pb2.GetModelStatusRequest()
        status_request.model_spec.name = "digits-pt2"
        status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(status_request)
        assert [(s.version, s.state) for s in status.model_version_status] == [(1, 30)]  # AVAILABLE

        request.model_spec.name = "missing"
        with pytest.raises(grpc.RpcError) as info:
            predict.Predict(request)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        request.model_spec.name = "kdigits-savedmodel"
        request.inputs["image"].CopyFrom(tf.make_tensor_proto(image[:, :4]))
        with pytest.raises(grpc.RpcError) as info:
            predict.Predict(request)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "does not match" in info.value.details()
