"""Triton's extensions through Triton's own clients, unchanged: model configuration, statistics, streaming
inference, the advertised extension list, and clean UNIMPLEMENTED answers for the rest (no traceback)."""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from tritonclient.grpc import service_pb2
from tritonclient.utils import InferenceServerException

from modelport.errors import InferenceError
from modelport.manifest import read_manifest
from modelport.serving.server import build
from modelport.serving.settings import ServerSettings
from modelport.serving.v2 import InferRequest
from tests.serving import fakes
from tests.serving.processes import Served, serving

TRANSPORTS = ["http", "grpc"]
IMPLEMENTED = {
    "binary_tensor_data",
    "classification",
    "model_repository",
    "model_repository(unload_dependents)",
    "model_configuration",
    "statistics",
    "parameters",
    "logging",
    "system_shared_memory",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[tuple[Served, Path]]:
    repo = tmp_path_factory.mktemp("triton") / "repo"
    echo = {"version_policy": {"all": True}, "instances": 2, "max_queue_delay_ms": 2, "preferred_batch_sizes": [2, 4]}
    fakes.write_model(repo, "echo", config=echo)
    fakes.write_model(repo, "echo", version=2)
    fakes.write_model(repo, "whole", max_batch_size=0)
    fakes.write_model(repo, "failing", runtime="FailingRuntime")  # fails its golden check: never ready
    log = repo.parent / "server.log"
    with serving(repo, log=log, timeout=60) as served:
        yield served, repo
    assert "Traceback" not in log.read_text(), "the server logged a traceback"


def _client(server: tuple[Served, Path], transport: str) -> Any:
    served = server[0]
    if transport == "http":
        return triton_http.InferenceServerClient(url=served.url.removeprefix("http://"))
    return triton_grpc.InferenceServerClient(url=served.grpc)


def _infer(client: Any, transport: str, model: str, x: np.ndarray, version: str = "") -> Any:
    module = triton_http if transport == "http" else triton_grpc
    tensor = module.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    return client.infer(model, [tensor], model_version=version)


def _get(message: Any, *path: str | int) -> Any:
    """A field of an HTTP JSON answer (dicts) or of a gRPC message, by the same path."""
    for key in path:
        message = message[key] if isinstance(message, (dict, list)) or isinstance(key, int) else getattr(message, key)
    return message


def _stats(client: Any, model: str, version: str = "") -> Any:
    answer = client.get_inference_statistics(model, version)
    entries = list(_get(answer, "model_stats"))
    assert len(entries) == 1
    return entries[0]


def _counts(entry: Any) -> dict[str, int]:
    counts = {k: int(_get(entry, k)) for k in ("inference_count", "execution_count", "last_inference")}
    for kind in ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output"):
        counts[kind] = int(_get(entry, "inference_stats", kind, "count"))
        counts[f"{kind}_ns"] = int(_get(entry, "inference_stats", kind, "ns"))
    for batch in _get(entry, "batch_stats"):
        counts[f"batch_{int(_get(batch, 'batch_size'))}"] = int(_get(batch, "compute_infer", "count"))
    return counts


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_server_metadata_lists_exactly_the_implemented_extensions(server, transport):
    client = _client(server, transport)
    assert set(_get(client.get_server_metadata(), "extensions")) == IMPLEMENTED
    client.close()


def _config_dict(client: Any, transport: str, model: str, version: str = "") -> dict[str, Any]:
    if transport == "http":
        config: dict[str, Any] = client.get_model_config(model, version)
        return config
    from google.protobuf.json_format import MessageToDict

    message = client.get_model_config(model, version).config
    return MessageToDict(message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)


def _dims(tensor: dict[str, Any]) -> list[int]:
    return [int(d) for d in tensor["dims"]]  # protobuf JSON writes int64 as strings


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_model_config_matches_the_manifest(server, transport):
    client = _client(server, transport)
    manifest = read_manifest(server[1] / "echo" / "2")
    config = _config_dict(client, transport, "echo")
    assert (config["name"], config["platform"], config["backend"]) == ("echo", "onnxruntime_onnx", "onnxruntime")
    assert int(config["max_batch_size"]) == manifest.max_batch_size == 8
    assert [(t["name"], t["data_type"], _dims(t)) for t in config["input"]] == [("x", "TYPE_FP32", [3])]
    outputs = {t["name"]: t for t in config["output"]}
    expected = [("y", "TYPE_FP32", [3]), ("n", "TYPE_FP32", [1])]
    assert [(n, t["data_type"], _dims(t)) for n, t in outputs.items()] == expected
    assert outputs["n"]["reshape"]["shape"] == []  # one value per row, as Triton writes it
    batching = config["dynamic_batching"]
    assert [int(s) for s in batching["preferred_batch_size"]] == [2, 4]
    assert int(batching["max_queue_delay_microseconds"]) == 2000
    assert [(g["kind"], g["count"]) for g in config["instance_group"]] == [("KIND_CPU", 2)]
    assert "all" in config["version_policy"] and config["default_model_filename"] == "model.onnx"
    client.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_model_config_without_batch_dimension_and_of_a_version(server, transport):
    client = _client(server, transport)
    whole = _config_dict(client, transport, "whole")
    assert int(whole["max_batch_size"]) == 0 and "dynamic_batching" not in whole
    assert [_dims(t) for t in whole["input"]] == [[-1, 3]]  # the whole shape when the model does not batch
    assert int(whole["version_policy"]["latest"]["num_versions"]) == 1
    assert _config_dict(client, transport, "echo", "1")["name"] == "echo"
    for model, version, status in (("nope", "", "404"), ("echo", "7", "404"), ("failing", "", "503")):
        with pytest.raises(InferenceServerException) as info:
            client.get_model_config(model, version)
        expected = {"404": "StatusCode.NOT_FOUND", "503": "StatusCode.UNAVAILABLE"}[status]
        assert info.value.status() in (status, expected), (model, version, info.value)
    client.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_statistics_count_every_request_exactly(server, transport):
    client = _client(server, transport)
    before = _counts(_stats(client, "echo", "1"))
    started_ms = time.time() * 1000
    for i in range(5):  # one request at a time: each is its own batch
        result = _infer(client, transport, "echo", np.full((1, 3), i, dtype=np.float32), version="1")
        assert np.array_equal(result.as_numpy("y"), np.full((1, 3), 2 * i, dtype=np.float32))
    _infer(client, transport, "echo", np.ones((3, 3), dtype=np.float32), version="1")
    with pytest.raises(InferenceServerException):
        _infer(client, transport, "echo", np.ones((1, 4), dtype=np.float32), version="1")  # wrong shape
    after = _counts(_stats(client, "echo", "1"))
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    assert (delta["success"], delta["fail"], delta["inference_count"], delta["execution_count"]) == (6, 1, 8, 6)
    assert (delta["queue"], delta["compute_infer"], delta["compute_input"], delta["compute_output"]) == (6, 6, 6, 6)
    assert (delta["batch_1"], delta["batch_3"]) == (5, 1)
    assert delta["success_ns"] > 0 and delta["fail_ns"] > 0 and delta["queue_ns"] > 0 and delta["compute_infer_ns"] > 0
    assert started_ms - 1000 <= after["last_inference"] <= time.time() * 1000 + 1000
    other = _counts(_stats(client, "echo", "2"))
    assert _counts(_stats(client, "echo", "2")) == other  # the other version's counters did not move
    client.close()


async def test_a_failed_execution_counts_as_a_failure_not_an_execution(tmp_path):
    fakes.write_model(tmp_path, "poison", runtime="PoisonRuntime")  # its failure logs a traceback: not in `server`
    plane = build(ServerSettings(repository=tmp_path, grpc_port=-1))
    await plane.start()
    try:
        with pytest.raises(InferenceError):
            await plane.infer("poison", None, InferRequest({"x": np.full((1, 3), 13, dtype=np.float32)}), "v2")
        await plane.infer("poison", None, InferRequest({"x": np.ones((2, 3), dtype=np.float32)}), "v2")
        [stats] = plane.model_statistics("poison")
        assert (stats.success.count, stats.fail.count, stats.execution_count, stats.inference_count) == (1, 1, 1, 2)
        assert (stats.queue.count, stats.compute.count) == (1, 1) and stats.fail.ns > 0
        assert [(b.batch_size, b.compute.count) for b in stats.batches] == [(2, 1)]
    finally:
        await plane.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_statistics_of_every_ready_model_and_errors(server, transport):
    client = _client(server, transport)
    entries = _get(client.get_inference_statistics(), "model_stats")
    listed = {(str(_get(e, "name")), str(_get(e, "version"))) for e in entries}
    assert listed == {("echo", "1"), ("echo", "2"), ("whole", "1")}  # not the model that failed to load
    assert {str(_get(e, "version")) for e in _get(client.get_inference_statistics("echo"), "model_stats")} == {"1", "2"}
    for model, version in (("nope", ""), ("echo", "9"), ("failing", "")):
        with pytest.raises(InferenceServerException):
            client.get_inference_statistics(model, version)
    client.close()


def test_streaming_inference_round_trip(server):
    client = _client(server, "grpc")
    answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    sent = {str(i): np.full((1, 3), i, dtype=np.float32) for i in range(6)}
    for request_id, x in [*sent.items(), ("bad", np.ones((1, 4), dtype=np.float32))]:
        tensor = triton_grpc.InferInput("x", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        client.async_stream_infer("echo", [tensor], request_id=request_id)
    got = [answers.get(timeout=30) for _ in range(len(sent) + 1)]
    client.stop_stream()
    results = {r.get_response().id: r for r, error in got if error is None}
    errors = [error for _, error in got if error is not None]
    assert set(results) == set(sent)
    for request_id, x in sent.items():
        assert np.array_equal(results[request_id].as_numpy("y"), 2 * x)
    assert len(errors) == 1 and "'x'" in errors[0].message() and "shape" in errors[0].message()
    client.close()


def test_undecodable_stream_request_is_answered_in_the_stream(server):
    with grpc.insecure_channel(server[0].grpc) as channel:
        stream = channel.stream_stream(
            "/inference.GRPCInferenceService/ModelStreamInfer",
            request_serializer=lambda data: data,
            response_deserializer=service_pb2.ModelStreamInferResponse.FromString,
        )
        answers = list(stream(iter([b"\xff\xff\xff"]), timeout=30))
    assert len(answers) == 1 and "undecodable" in answers[0].error_message


def _unimplemented_calls(client: Any) -> dict[str, Any]:
    return {
        "trace settings": lambda: client.get_trace_settings(),
        "trace settings update": lambda: client.update_trace_settings(settings={"trace_level": ["OFF"]}),
    }


def test_unimplemented_grpc_methods_answer_cleanly(server):
    client = _client(server, "grpc")
    for what, call in _unimplemented_calls(client).items():
        with pytest.raises(InferenceServerException) as info:
            call()
        assert info.value.status() == "StatusCode.UNIMPLEMENTED", what
        assert "modelport does not implement" in info.value.message(), what
    assert client.is_server_live()  # answered after every refusal above: their log lines are written
    client.close()
    log = server[1].parent / "server.log"
    assert "Traceback" not in log.read_text() and "NotImplementedError" not in log.read_text()


@pytest.fixture(scope="module")
def pipeline_server(tmp_path_factory) -> Iterator[tuple[Served, Path]]:
    """The README's pipeline (examples/pipeline/config.yaml) over two fake models."""
    repo = tmp_path_factory.mktemp("ensemble") / "repo"
    fakes.write_model(repo, "first")
    fakes.write_model(repo, "second")
    (repo / "quadruple").mkdir()
    (repo / "quadruple" / "config.yaml").write_text(PIPELINE_EXAMPLE.read_text())
    with serving(repo, log=repo.parent / "server.log", timeout=60) as served:
        yield served, repo


PIPELINE_EXAMPLE = Path(__file__).parents[2] / "examples" / "pipeline" / "config.yaml"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_pipelines_config_is_a_triton_ensemble(pipeline_server, transport):
    client = _client(pipeline_server, transport)
    config = _config_dict(client, transport, "quadruple")
    client.close()
    assert (config["name"], config["platform"], int(config["max_batch_size"])) == ("quadruple", "ensemble", 0)
    assert [(t["name"], t["data_type"], _dims(t)) for t in config["input"]] == [("x", "TYPE_FP32", [-1, 3])]
    assert [(t["name"], t["data_type"], _dims(t)) for t in config["output"]] == [
        ("quadrupled", "TYPE_FP32", [-1, 3]),
        ("top", "TYPE_STRING", [-1]),
    ]
    steps = [
        (s["model_name"], int(s["model_version"]), s["input_map"], s["output_map"])
        for s in config["ensemble_scheduling"]["step"]
    ]
    assert steps == [
        ("first", -1, {"x": "x"}, {"y": "doubled"}),
        ("second", -1, {"x": "doubled"}, {"y": "quadrupled"}),
    ]  # the topk processors step is no model: Triton's clients ask each step's model for its config and stats
    assert "instance_group" not in config or not config["instance_group"]
