"""TorchServe's gRPC inference API: modelport (``import-mar`` + ``serve``) answers as a real TorchServe 0.12.

The ``probe`` and ``tiny`` archives of ``test_torchserve_handlers.py``, served by TorchServe (its gRPC inference
port) and by modelport (its gRPC port); each request goes to both: the same ``prediction`` bytes, or the same gRPC
status code and details. TorchServe 0.12's streaming methods are not compared: for a handler that does not stream,
its ``StreamPredictions`` kills the worker (a NullPointerException in its frontend) and ``StreamPredictions2``
fails with UNKNOWN unless the model uses sequence batching; ``test_torchserve_grpc.py`` tests modelport's.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any, NamedTuple

import grpc
import pytest
from google.protobuf import empty_pb2

from modelport.cli import main
from modelport.serving.torchserve_grpc import SERVICE, messages
from modelport.torchserve_process import TorchServeOptions, TorchServePorts, running_torchserve
from tests.serving.processes import serving
from tests.serving.test_torchserve_handlers import _archives

pytestmark = [pytest.mark.torchserve, pytest.mark.torch, pytest.mark.slow]

M = messages()
REQUEST, RESPONSE, HEALTH = M["PredictionsRequest"], M["PredictionResponse"], M["TorchServeHealthResponse"]


class Stub(NamedTuple):
    ping: Any
    predictions: Any


def _stub(channel: grpc.Channel) -> Stub:
    path = f"/{SERVICE}/"
    ping = channel.unary_unary(
        path + "Ping", request_serializer=empty_pb2.Empty.SerializeToString, response_deserializer=HEALTH.FromString
    )
    predictions = channel.unary_unary(
        path + "Predictions", request_serializer=REQUEST.SerializeToString, response_deserializer=RESPONSE.FromString
    )
    return Stub(ping, predictions)


@pytest.fixture(scope="module")
def stubs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stub, Stub]]:
    """(TorchServe's, modelport's) stubs, both serving ``probe`` and ``tiny`` (batch size 4)."""
    work = tmp_path_factory.mktemp("tsgrpc")
    mars = _archives(work)
    repo = work / "repo"
    for mar in mars:
        assert main(["import-mar", str(mar), "--repository", str(repo), "--max-batch-size", "4", "--quiet"]) == 0
    ports = TorchServePorts.free()
    options = TorchServeOptions(batch_size=4, also=tuple(m.name for m in mars[1:]), ports=ports)
    with contextlib.ExitStack() as stack:
        stack.enter_context(running_torchserve(mars[0], work / "ts", options))
        mine = stack.enter_context(serving(repo, log=work / "server.log"))
        theirs = stack.enter_context(grpc.insecure_channel(f"127.0.0.1:{ports.grpc_inference}"))
        ours = stack.enter_context(grpc.insecure_channel(mine.grpc))
        yield _stub(theirs), _stub(ours)


def _call(stub: Stub, request: Any, metadata: tuple[tuple[str, str], ...] = ()) -> tuple[grpc.StatusCode, Any]:
    """The status and the prediction (JSON parsed: the order of the ``input`` entries is the map's, which
    differs between Java and Python), or the error's details."""
    try:
        prediction = stub.predictions(request, timeout=60, metadata=metadata).prediction
    except grpc.RpcError as exc:
        return exc.code(), exc.details()
    try:
        return grpc.StatusCode.OK, json.loads(prediction)
    except ValueError:
        return grpc.StatusCode.OK, prediction


def test_ping_answers_torchserves_health_string(stubs: tuple[Stub, Stub]) -> None:
    theirs, mine = (s.ping(empty_pb2.Empty(), timeout=60).health for s in stubs)
    assert mine == theirs


PREDICTIONS: dict[str, dict[str, Any]] = {
    "JSON in data": {"model_name": "probe", "input": {"data": b'{"x": [1, 2]}'}},
    "raw bytes in body": {"model_name": "probe", "input": {"body": b"\x89PNG raw \x00 bytes"}},
    "several entries": {"model_name": "probe", "input": {"data": b"hello", "meta": b'{"k": 1}'}},
    "an empty entry": {"model_name": "probe", "input": {"data": b""}},
    "a sequence id": {"model_name": "probe", "input": {"data": b"x"}, "sequence_id": "s-1"},
    "a BaseHandler subclass": {"model_name": "tiny", "input": {"data": b"[1, 2, 3, 4]"}},
    "the archive's version": {"model_name": "tiny", "model_version": "1.0", "input": {"data": b'{"x": [4, 3, 2, 1]}'}},
    "the handler fails": {"model_name": "tiny", "input": {"data": b"not json"}},
    "an unknown model": {"model_name": "nobody", "input": {"data": b"x"}},
    "a missing version": {"model_name": "probe", "model_version": "2.0", "input": {"data": b"x"}},
    "no model name": {"input": {"data": b"x"}},
}


@pytest.mark.parametrize("request_", PREDICTIONS.values(), ids=PREDICTIONS.keys())
def test_predictions_answer_as_torchserve(stubs: tuple[Stub, Stub], request_: dict[str, Any]) -> None:
    theirs, mine = (_call(s, REQUEST(**request_)) for s in stubs)
    assert mine == theirs


def test_grpc_metadata_is_not_a_request_header_for_the_handler(stubs: tuple[Stub, Stub]) -> None:
    """TorchServe 0.12's gRPC frontend (``InferenceImpl.predictions``) does not read the call's metadata: the
    handler's ``context`` has no request header from it (the probe answers ``cmd:headers`` with their names);
    modelport does the same."""
    metadata = (("x-custom", "from-metadata"), ("x-request-id", "r-1"))
    for body in (b"x", b"cmd:headers"):
        request = REQUEST(model_name="probe", input={"body": body})
        theirs, mine = (_call(s, request, metadata) for s in stubs)
        assert theirs[0] is grpc.StatusCode.OK, theirs
        assert mine == theirs
    names = {name.lower() for name in theirs[1]["headers"]}  # (an input's content type is a "header" of its name)
    assert not names & {"x-custom", "x-request-id"}, theirs
