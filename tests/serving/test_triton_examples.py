"""What Triton's own example clients (tritonclient's ``src/python/examples``) do, against modelport.

Each test follows one family of the examples call for call (the same client calls, arguments, models and checks,
the models built as a user would: ``tests/serving/triton_models.py``), so a difference a Triton user would meet
running an example against modelport fails here: the server's name, the words of an error the example looks for,
the raw output contents the explicit-content examples read, the model-control config override.
"""

from __future__ import annotations

import asyncio
import json
import queue
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from modelport.serving.dataplane import EXTENSIONS, SYSTEM_SHARED_MEMORY
from tests.serving.processes import Served, serving
from tests.serving.triton_models import build_repository

pytestmark = pytest.mark.torch  # the example models are exported from PyTorch

INPUT0 = np.arange(16, dtype=np.int32)[None]
INPUT1 = np.ones((1, 16), dtype=np.int32)


@pytest.fixture(scope="module")
def repository(tmp_path_factory) -> Path:
    return build_repository(tmp_path_factory.mktemp("triton") / "repo", tmp_path_factory.mktemp("work"))


@pytest.fixture(scope="module")
def server(repository) -> Iterator[Served]:
    with serving(repository, timeout=120) as served:
        yield served


def _http(server: Served, **options: Any) -> Any:
    import tritonclient.http as httpclient

    return httpclient.InferenceServerClient(server.url.removeprefix("http://"), **options)


def _grpc(server: Served, **options: Any) -> Any:
    import tritonclient.grpc as grpcclient

    return grpcclient.InferenceServerClient(server.grpc, **options)


def _simple_inputs(
    module: Any, first: np.ndarray = INPUT0, second: np.ndarray = INPUT1, binary: tuple[bool, bool] | None = None
) -> list[Any]:
    """INPUT0 and INPUT1 (HTTP: each as JSON or binary data when ``binary`` says)."""
    inputs = [module.InferInput("INPUT0", [1, 16], "INT32"), module.InferInput("INPUT1", [1, 16], "INT32")]
    for tensor, value, flag in zip(inputs, (first, second), binary or (None, None), strict=True):
        tensor.set_data_from_numpy(value, **({} if flag is None else {"binary_data": flag}))
    return inputs


def _check_sum_and_difference(result: Any, first: np.ndarray = INPUT0, second: np.ndarray = INPUT1) -> None:
    assert np.array_equal(result.as_numpy("OUTPUT0"), first + second)
    assert np.array_equal(result.as_numpy("OUTPUT1"), first - second)


@pytest.mark.parametrize("compression", [None, "gzip", "deflate"])
def test_simple_http_infer_client(server, compression):
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    client = _http(server)
    second = np.full((1, 16), -1, dtype=np.int32)
    inputs = _simple_inputs(httpclient, INPUT0, second, binary=(False, True))
    outputs = [
        httpclient.InferRequestedOutput("OUTPUT0", binary_data=True),
        httpclient.InferRequestedOutput("OUTPUT1", binary_data=False),
    ]
    options = {"query_params": {"test_1": 1, "test_2": 2}, "headers": {"X-Example": "simple"}}
    compressed = {"request_compression_algorithm": compression, "response_compression_algorithm": compression}
    _check_sum_and_difference(client.infer("simple", inputs, outputs=outputs, **options, **compressed), INPUT0, second)
    assert len(client.get_inference_statistics(model_name="simple", headers=options["headers"])["model_stats"]) == 1
    _check_sum_and_difference(client.infer("simple", inputs, outputs=None, **options, **compressed), INPUT0, second)
    with pytest.raises(InferenceServerException) as unknown:
        client.infer("wrong_model_name", inputs, outputs=outputs)
    assert unknown.value.message().startswith("Request for unknown model")


@pytest.mark.parametrize("compression", [None, "gzip", "deflate"])
def test_simple_grpc_infer_client(server, compression):
    import tritonclient.grpc as grpcclient

    client = _grpc(server)
    inputs = _simple_inputs(grpcclient)
    outputs = [grpcclient.InferRequestedOutput("OUTPUT0"), grpcclient.InferRequestedOutput("OUTPUT1")]
    result = client.infer(
        model_name="simple",
        inputs=inputs,
        outputs=outputs,
        client_timeout=60,
        headers={"test": "1"},
        compression_algorithm=compression,
    )
    assert len(client.get_inference_statistics(model_name="simple").model_stats) == 1
    _check_sum_and_difference(result)
    _check_sum_and_difference(client.infer("simple", inputs, outputs=None, compression_algorithm=compression))


def test_simple_http_and_grpc_async_infer_clients(server):
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    http = _http(server, concurrency=4)
    pending = [http.async_infer("simple", _simple_inputs(httpclient), request_id=str(i)) for i in range(4)]
    results = [p.get_result() for p in pending]
    assert [r.get_response()["id"] for r in results] == ["0", "1", "2", "3"]
    for result in results:
        _check_sum_and_difference(result)
    answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client = _grpc(server)
    for i in range(3):
        client.async_infer(
            "simple",
            _simple_inputs(grpcclient),
            callback=lambda result, error: answers.put((result, error)),
            request_id=str(i),
        )
    got = [answers.get(timeout=60) for _ in range(3)]
    assert all(error is None for _, error in got)
    assert sorted(result.get_response().id for result, _ in got) == ["0", "1", "2"]
    for result, _ in got:
        _check_sum_and_difference(result)


def test_simple_http_and_grpc_aio_infer_clients(server):
    import tritonclient.grpc.aio as grpcaio
    import tritonclient.http.aio as httpaio

    async def run() -> None:
        async with httpaio.InferenceServerClient(server.url.removeprefix("http://")) as client:
            assert await client.is_server_live() and await client.is_model_ready("simple")
            _check_sum_and_difference(await client.infer("simple", _simple_inputs(httpaio)))
            assert (await client.get_model_config("simple"))["max_batch_size"] == 8
        async with grpcaio.InferenceServerClient(server.grpc) as client:
            assert (await client.get_server_metadata()).name == "triton"
            _check_sum_and_difference(await client.infer("simple", _simple_inputs(grpcaio)))

            async def requests() -> Any:
                for i in range(3):
                    yield {"model_name": "simple", "inputs": _simple_inputs(grpcaio), "request_id": str(i)}

            ids = []
            async for result, error in client.stream_infer(requests()):
                assert error is None
                _check_sum_and_difference(result)
                ids.append(result.get_response().id)
            assert sorted(ids) == ["0", "1", "2"]

    asyncio.run(run())


def _strings(values: np.ndarray) -> np.ndarray:
    return np.array([str(v).encode() for v in values.ravel()], dtype=np.object_).reshape(values.shape)


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_simple_string_infer_clients(server, transport):
    if transport == "http":
        import tritonclient.http as triton

        client = _http(server)
        inputs = [triton.InferInput("INPUT0", [1, 16], "BYTES"), triton.InferInput("INPUT1", [1, 16], "BYTES")]
        inputs[0].set_data_from_numpy(_strings(INPUT0), binary_data=True)
        inputs[1].set_data_from_numpy(_strings(INPUT1), binary_data=False)
        outputs = [
            triton.InferRequestedOutput("OUTPUT0", binary_data=True),
            triton.InferRequestedOutput("OUTPUT1", binary_data=False),
        ]
    else:
        import tritonclient.grpc as triton

        client = _grpc(server)
        inputs = [triton.InferInput("INPUT0", [1, 16], "BYTES"), triton.InferInput("INPUT1", [1, 16], "BYTES")]
        inputs[0].set_data_from_numpy(_strings(INPUT0))
        inputs[1].set_data_from_numpy(_strings(INPUT1))
        outputs = [triton.InferRequestedOutput("OUTPUT0"), triton.InferRequestedOutput("OUTPUT1")]
    result = client.infer(model_name="simple_string", inputs=inputs, outputs=outputs)
    assert [int(x) for x in result.as_numpy("OUTPUT0")[0]] == list(INPUT0[0] + 1)
    assert [int(x) for x in result.as_numpy("OUTPUT1")[0]] == list(INPUT0[0] - 1)


@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize("element", [b"he\x00llo", b"\x00\x01\x02\x03"])
def test_http_string_identity_of_null_characters_and_blobs(server, binary, element):
    import tritonclient.http as httpclient

    client = _http(server)
    sent = np.array([element] * 16, dtype=np.object_ if element.startswith(b"he") else np.bytes_).reshape(1, 16)
    inputs = [httpclient.InferInput("INPUT0", list(sent.shape), "BYTES")]
    inputs[0].set_data_from_numpy(sent, binary_data=binary)
    output = httpclient.InferRequestedOutput("OUTPUT0", binary_data=binary)
    got = client.infer(model_name="simple_identity", inputs=inputs, outputs=[output]).as_numpy("OUTPUT0")
    if sent.dtype == np.object_:
        expected = got if binary else np.array([bytes(str(x), encoding="utf-8") for x in got.ravel()], dtype=object)
        assert np.array_equal(sent, expected.reshape(1, 16))
    else:
        assert np.array_equal(sent, np.char.encode(got.astype(str)))


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_simple_health_metadata(server, transport):
    from tritonclient.utils import InferenceServerException

    if transport == "http":
        client = _http(server)
        assert client.is_server_live(query_params={"test_1": 1, "test_2": 2})
        metadata = client.get_server_metadata()
        name, extensions = metadata["name"], metadata["extensions"]
        model = client.get_model_metadata("simple", query_params={"test_1": 1, "test_2": 2})
        assert model["name"] == "simple" and model["platform"] == "onnxruntime_onnx"  # what Triton says of ONNX
    else:
        client = _grpc(server)
        assert client.is_server_live(headers={"test": "1", "dummy": "2"})
        metadata = client.get_server_metadata()
        name, extensions = metadata.name, list(metadata.extensions)
        assert client.get_model_metadata("simple", headers={"test": "1", "dummy": "2"}).name == "simple"
        assert client.get_model_config("simple").config.name == "simple"
    assert client.is_server_ready() and client.is_model_ready("simple")
    assert name == "triton" and list(extensions) == [*EXTENSIONS, SYSTEM_SHARED_MEMORY]
    with pytest.raises(InferenceServerException) as unknown:
        client.get_model_metadata("wrong_model_name")
    assert "Request for unknown model" in unknown.value.message()


def _raw_stub(server: Served) -> Any:
    from tritonclient.grpc import service_pb2_grpc

    return service_pb2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(server.grpc))


@pytest.mark.parametrize(("model", "datatype"), [("simple", "INT32"), ("simple_int8", "INT8")])
def test_grpc_explicit_int_content_clients(server, model, datatype):
    from tritonclient.grpc import service_pb2

    stub, dtype = _raw_stub(server), np.dtype(datatype.lower())
    request = service_pb2.ModelInferRequest(model_name=model, model_version="")
    for name, values in (("INPUT0", list(range(16))), ("INPUT1", [1] * 16)):
        tensor = request.inputs.add(name=name, datatype=datatype, shape=[1, 16])
        tensor.contents.int_contents[:] = values
    request.outputs.add(name="OUTPUT0")
    request.outputs.add(name="OUTPUT1")
    response = stub.ModelInfer(request)
    results = [
        np.resize(np.frombuffer(raw, dtype=dtype), list(output.shape))
        for output, raw in zip(response.outputs, response.raw_output_contents, strict=True)
    ]
    assert len(results) == 2
    assert results[0][0].tolist() == [i + 1 for i in range(16)] and results[1][0].tolist() == [i - 1 for i in range(16)]
    if model == "simple_int8":
        request.model_version = "wrong_specification"
        expected = "failed to get model version from specified version string 'wrong_specification'"
    else:  # typed contents and raw_input_contents in one request
        request.raw_input_contents.extend([np.array(range(8)).tobytes()])
        request.inputs[0].contents.int_contents[:] = list(range(8, 16))
        expected = "contents field must not be specified when using raw_input_contents for 'INPUT0' for model 'simple'"
    with pytest.raises(grpc.RpcError) as refused:
        stub.ModelInfer(request)
    assert expected in str(refused.value)


def test_grpc_explicit_byte_content_client(server):
    from tritonclient import utils
    from tritonclient.grpc import service_pb2

    request = service_pb2.ModelInferRequest(model_name="simple_string", model_version="")
    first = request.inputs.add(name="INPUT0", datatype="BYTES", shape=[1, 16])
    first.contents.bytes_contents.extend(str(i).encode("utf-8") for i in range(16))
    second = request.inputs.add(name="INPUT1", datatype="BYTES", shape=[1, 16])
    second.contents.bytes_contents.extend([b"1"] * 16)
    request.outputs.add(name="OUTPUT0")
    request.outputs.add(name="OUTPUT1")
    response = _raw_stub(server).ModelInfer(request)
    results = [
        np.resize(utils.deserialize_bytes_tensor(raw), list(output.shape))
        for output, raw in zip(response.outputs, response.raw_output_contents, strict=True)
    ]
    assert [int(x) for x in results[0][0]] == [i + 1 for i in range(16)]
    assert [int(x) for x in results[1][0]] == [i - 1 for i in range(16)]


def test_grpc_client_with_the_generated_stub(server, repository, tmp_path):
    """``grpc_client.py``: health, metadata, config and a raw 1072812-byte input through the bare stub."""
    from tritonclient.grpc import service_pb2

    from tests.user_cli import run_modelport

    # its model takes an NHWC image named "input" and answers "InceptionV3/Predictions/Softmax"
    exported = run_modelport(
        "export", "tests.serving.triton_models:classifier", "--format", "onnx",
        "--input", "input:float32:-1x299x299x3", "--repository", str(tmp_path / "repo"), "--name", "densenet_onnx",
        "--name-template", "{name}", "--quiet", cwd=tmp_path,
    )  # fmt: skip
    assert exported.returncode == 0, exported.stdout + exported.stderr
    with serving(tmp_path / "repo", timeout=120) as served:
        stub, name = _raw_stub(served), "densenet_onnx"
        assert stub.ServerLive(service_pb2.ServerLiveRequest()).live
        assert stub.ServerReady(service_pb2.ServerReadyRequest()).ready
        assert stub.ModelReady(service_pb2.ModelReadyRequest(name=name, version="")).ready
        assert stub.ServerMetadata(service_pb2.ServerMetadataRequest()).name == "triton"
        assert stub.ModelMetadata(service_pb2.ModelMetadataRequest(name=name, version="")).name == name
        assert stub.ModelConfig(service_pb2.ModelConfigRequest(name=name, version="")).config.platform
        request = service_pb2.ModelInferRequest(model_name=name, model_version="", id="my request id")
        request.inputs.add(name="input", datatype="FP32", shape=[1, 299, 299, 3])
        request.outputs.add(name="InceptionV3/Predictions/Softmax")
        request.raw_input_contents.extend([bytes(1072812 * "a", "utf-8")])
        response = stub.ModelInfer(request)
    assert response.id == "my request id" and list(response.outputs[0].shape) == [1, 1001]
    probabilities = np.frombuffer(response.raw_output_contents[0], dtype="<f4")
    assert probabilities.shape == (1001,) and abs(float(probabilities.sum()) - 1) < 1e-4


def test_simple_grpc_custom_args_and_keepalive_clients(server):
    import tritonclient.grpc as grpcclient

    channel_args = [
        ("grpc.max_send_message_length", 1024 * 1024),
        ("grpc.max_receive_message_length", 1024 * 1024),
        ("grpc.keepalive_time_ms", 2**31 - 1),
        ("grpc.keepalive_timeout_ms", 20000),
        ("grpc.keepalive_permit_without_calls", False),
        ("grpc.http2.max_pings_without_data", 2),
        ("grpc.dns_enable_srv_queries", 1),
    ]
    keepalive = grpcclient.KeepAliveOptions(
        keepalive_time_ms=2**31 - 1,
        keepalive_timeout_ms=20000,
        keepalive_permit_without_calls=False,
        http2_max_pings_without_data=2,
    )
    for client in (_grpc(server, channel_args=channel_args), _grpc(server, keepalive_options=keepalive)):
        _check_sum_and_difference(client.infer("simple", _simple_inputs(grpcclient), headers={"test": "1"}))


def test_sequence_requests_are_refused_not_run_without_their_state(server):
    """Triton's sequence examples (``simple_grpc_sequence_stream_infer_client``, ``simple_http_sequence_sync_infer
    _client``) need a stateful model: modelport hosts none, so a request naming a sequence is a clear error (a
    stateless model answering it would silently answer without the sequence's accumulated state)."""
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
    with _grpc(server) as client:
        client.start_stream(callback=lambda result, error: answers.put((result, error)))
        client.async_stream_infer(
            "simple", _simple_inputs(grpcclient), request_id="1000_1", sequence_id=1000, sequence_start=True
        )
        result, error = answers.get(timeout=60)
        client.stop_stream()
    assert result is None and "has no sequence batching" in str(error)
    with pytest.raises(InferenceServerException) as refused:
        _http(server).infer("simple", _simple_inputs(httpclient), sequence_id="abc", sequence_end=True)
    assert refused.value.status() == "400" and "(sequence_id, sequence_end)" in refused.value.message()
    with pytest.raises(InferenceServerException) as refused:
        _grpc(server).infer("simple", _simple_inputs(grpcclient), sequence_id=7)
    assert refused.value.status() == "StatusCode.INVALID_ARGUMENT"
    _check_sum_and_difference(_grpc(server).infer("simple", _simple_inputs(grpcclient), sequence_id=0))


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_trace_settings_are_a_clear_error_and_log_settings_read(server, transport):
    from tritonclient.utils import InferenceServerException

    client = _http(server) if transport == "http" else _grpc(server)
    for call in (client.get_trace_settings, lambda: client.update_trace_settings(settings={"trace_level": ["OFF"]})):
        with pytest.raises(InferenceServerException) as refused:
            call()
        assert refused.value.status() in ("501", "StatusCode.UNIMPLEMENTED")
        assert "modelport does not implement trace settings" in refused.value.message()
    assert _log_settings(client, transport) == DEFAULT_LOG_SETTINGS  # --log-level info
    with pytest.raises(InferenceServerException) as refused:  # changing them is model control
        client.update_log_settings({"log_info": False})
    assert refused.value.status() in ("403", "StatusCode.PERMISSION_DENIED")


DEFAULT_LOG_SETTINGS = {
    "log_file": "",
    "log_info": True,
    "log_warning": True,
    "log_error": True,
    "log_verbose_level": 0,
    "log_format": "default",
}


def _log_settings(client: Any, transport: str, update: dict[str, Any] | None = None) -> dict[str, Any]:
    if transport == "http":
        return dict(client.update_log_settings(update) if update else client.get_log_settings())
    response = client.update_log_settings(update, as_json=True) if update else client.get_log_settings(as_json=True)
    return {k: next(iter(v.values())) if v else None for k, v in response["settings"].items()}


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_log_settings_switch_the_servers_severities(repository, tmp_path, transport):
    """Triton's logging extension: with log_info off, the INFO line a model load writes is not written; on again,
    it is; a log file or another format is refused, not ignored."""
    from tritonclient.utils import InferenceServerException

    log = tmp_path / "server.log"
    with serving(repository, "--model-control", log=log, timeout=120) as served:
        client = _http(served) if transport == "http" else _grpc(served)
        loaded = "simple_identity version 1: READY"  # the INFO line of a load (the reload restarts the model)
        assert _log_settings(client, transport, {"log_info": False}) == {**DEFAULT_LOG_SETTINGS, "log_info": False}
        before = len(log.read_bytes())
        client.load_model("simple_identity", config='{"max_batch_size": 4}')
        assert loaded not in log.read_bytes()[before:].decode()
        assert _log_settings(client, transport, {"log_info": True, "log_verbose_level": 1})["log_verbose_level"] == 1
        before = len(log.read_bytes())
        client.load_model("simple_identity")
        assert loaded in log.read_bytes()[before:].decode()
        refusals = [{"log_file": "/tmp/x.log"}, {"log_format": "ISO8601"}]
        refusals += [{"log_warning": 1}] if transport == "http" else []  # gRPC's bool_param makes 1 a bool
        for refused_setting in refusals:
            with pytest.raises(InferenceServerException) as refused:
                client.update_log_settings(refused_setting)
            assert refused.value.status() in ("400", "StatusCode.INVALID_ARGUMENT"), refused_setting
        assert _log_settings(client, transport)["log_verbose_level"] == 1


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_simple_model_control(repository, tmp_path, transport):
    """``simple_{http,grpc}_model_control.py``: the index, load, a config override (malformed, then good), unload,
    and an unknown model."""
    from tritonclient.utils import InferenceServerException

    shutil.copytree(repository, tmp_path / "repo")
    with serving(tmp_path / "repo", "--model-control", timeout=120) as served:
        client = _http(served) if transport == "http" else _grpc(served)
        index = client.get_model_repository_index()
        assert len(index if transport == "http" else index.models) == 4

        def max_batch_size() -> int:
            config = client.get_model_config("simple")
            return int(config["max_batch_size"] if transport == "http" else config.config.max_batch_size)

        client.load_model("simple")
        assert client.is_model_ready("simple") and max_batch_size() == 8
        with pytest.raises(InferenceServerException) as malformed:
            client.load_model("simple", config='"parameters": {"config": {{"max_batch_size": "16"}}}')
        assert "failed to load" in malformed.value.message()
        client.load_model("simple", config='{"max_batch_size":"16"}')
        assert max_batch_size() == 16 and client.is_model_ready("simple")
        _check_sum_and_difference(client.infer("simple", _simple_inputs(_module(transport))))
        with pytest.raises(InferenceServerException) as fixed:  # what the manifest says cannot be overridden
            client.load_model("simple", config=json.dumps({"max_batch_size": 4, "platform": "tensorflow_savedmodel"}))
        assert "changes ['platform']" in fixed.value.message()
        assert max_batch_size() == 16
        client.load_model("simple")  # a load without an override: config.yaml's again
        assert max_batch_size() == 8
        client.unload_model("simple", unload_dependents=True)
        assert not client.is_model_ready("simple")
        with pytest.raises(InferenceServerException) as unknown:
            client.load_model("wrong_model_name")
        assert "failed to load" in unknown.value.message()
        assert client.is_server_live()


def _module(transport: str) -> Any:
    if transport == "http":
        import tritonclient.http as triton
    else:
        import tritonclient.grpc as triton
    return triton
