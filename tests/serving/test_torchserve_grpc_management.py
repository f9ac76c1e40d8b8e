"""TorchServe's gRPC management API (``ManagementAPIsService``) on modelport's gRPC port.

The archives of ``test_torchserve_management.py`` (``tiny`` 1.0 and 2.0 in a model store, ``bad.mar``...): one
sequence of calls goes to a real TorchServe 0.12 (``enable_model_api``, its gRPC management port) and to
``modelport serve --model-control --model-store STORE``, and each answer must agree: the status code, the
details (TorchServe's message, which modelport may complete, and its exception class), the ``msg``: the same
status text, or the same JSON keys. Then modelport alone: the writes are refused without model control and
without the control key, and a model registered over gRPC serves predictions over gRPC.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from modelport.serving.auth import grpc_scope
from modelport.serving.torchserve_grpc import SERVICE as INFERENCE
from modelport.serving.torchserve_grpc import messages
from modelport.serving.torchserve_grpc_management import MANAGEMENT_SERVICE, WRITES, management_messages
from modelport.torchserve_process import TorchServeOptions, TorchServePorts, running_torchserve
from tests.serving.processes import serving
from tests.serving.test_torchserve_management import KEY, Store, make_store

M = management_messages()
REQUESTS = {
    "DescribeModel": "DescribeModelRequest",
    "ListModels": "ListModelsRequest",
    "RegisterModel": "RegisterModelRequest",
    "ScaleWorker": "ScaleWorkerRequest",
    "SetDefault": "SetDefaultRequest",
    "UnregisterModel": "UnregisterModelRequest",
}
Answer = tuple[grpc.StatusCode, str]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    return make_store(tmp_path_factory.mktemp("grpc-management"))


def _call(channel: grpc.Channel, method: str, metadata: tuple[tuple[str, str], ...] = (), **fields: Any) -> Answer:
    """The status and ``msg`` (or the error's details) of one management call."""
    request = M[REQUESTS[method]]
    stub = channel.unary_unary(
        f"/{MANAGEMENT_SERVICE}/{method}",
        request_serializer=request.SerializeToString,
        response_deserializer=M["ManagementResponse"].FromString,
    )
    try:
        return grpc.StatusCode.OK, stub(request(**fields), timeout=300, metadata=metadata).msg
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""


@contextlib.contextmanager
def _modelport(store: Store, repo: Path, *flags: str) -> Iterator[grpc.Channel]:
    repo.mkdir()
    log = repo.parent / f"{repo.name}.log"
    served = serving(repo, "--model-store", str(store.folder), *flags, log=log)
    with served as running, grpc.insecure_channel(running.grpc) as channel:
        yield channel


REGISTER_TINY = {"url": "tiny.mar", "initial_workers": 1, "synchronous": True, "batch_size": 4, "max_batch_delay": 50}
# every call both servers answer, in order (both serve first.mar when it starts)
SEQUENCE: list[tuple[str, dict[str, Any]]] = [
    ("ListModels", {}),
    ("ListModels", {"limit": 1}),
    ("DescribeModel", {"model_name": "first"}),
    ("DescribeModel", {"model_name": "nope"}),
    ("DescribeModel", {"model_name": "nope", "customized": True}),
    ("DescribeModel", {}),
    ("DescribeModel", {"model_name": "first", "model_version": "9.9"}),
    ("RegisterModel", REGISTER_TINY),
    ("RegisterModel", {"url": "tiny.mar", "initial_workers": 1, "synchronous": True}),
    ("RegisterModel", {"url": "tiny2.mar", "initial_workers": 1, "synchronous": True}),
    ("RegisterModel", {"url": "tiny.mar", "model_name": "other", "initial_workers": 1}),
    ("RegisterModel", {"url": "missing.mar"}),
    ("RegisterModel", {"url": "bad.mar"}),
    ("RegisterModel", {}),
    ("RegisterModel", {"url": "https://example.invalid/x.mar"}),
    ("ScaleWorker", {"model_name": "tiny", "min_worker": 2, "synchronous": True}),
    ("ScaleWorker", {"model_name": "tiny", "min_worker": 1, "max_worker": 1}),
    ("ScaleWorker", {"model_name": "tiny", "model_version": "2.0", "min_worker": 1, "synchronous": True}),
    ("ScaleWorker", {"model_name": "nope", "min_worker": 1}),
    ("ScaleWorker", {"model_name": "tiny", "model_version": "9.9", "min_worker": 1}),
    ("ScaleWorker", {"model_name": "tiny", "min_worker": 3, "max_worker": 1}),
    ("SetDefault", {"model_name": "tiny", "model_version": "2.0"}),
    ("SetDefault", {"model_name": "tiny", "model_version": "9.9"}),
    ("SetDefault", {"model_name": "nope", "model_version": "1.0"}),
    ("SetDefault", {"model_name": "tiny"}),
    ("DescribeModel", {"model_name": "tiny"}),
    ("DescribeModel", {"model_name": "tiny", "model_version": "all"}),
    ("DescribeModel", {"model_name": "tiny", "customized": True}),
    ("UnregisterModel", {"model_name": "tiny", "model_version": "2.0"}),
    ("UnregisterModel", {"model_name": "tiny", "model_version": "1.0"}),
    ("UnregisterModel", {"model_name": "tiny", "model_version": "9.9"}),
    ("UnregisterModel", {"model_name": "nope"}),
    ("UnregisterModel", {}),
    ("UnregisterModel", {"model_name": "tiny"}),
    ("DescribeModel", {"model_name": "tiny"}),
    ("ListModels", {"limit": 10}),
]


def _keys(value: Any) -> Any:
    """The shape of a JSON value: an object's keys (each with its value's shape), a list's items' shapes."""
    if isinstance(value, dict):
        return {k: _keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_keys(v) for v in value]
    return type(value).__name__


def _same(theirs: Answer, mine: Answer, what: str) -> None:
    assert mine[0] == theirs[0], what
    if theirs[0] is not grpc.StatusCode.OK:
        if theirs[1]:  # TorchServe's message (modelport may add to it), a newline and its exception class
            message, _, kind = theirs[1].partition("\n")
            assert mine[1].startswith(message) and mine[1].endswith(f"\n{kind}"), what
        return
    if not theirs[1].startswith(("[", "{")):
        assert mine[1] == theirs[1], what
        return
    expected, got = json.loads(theirs[1]), json.loads(mine[1])
    assert _keys(got) == _keys(expected), what
    if isinstance(expected, list):  # describe: the same versions (modelport's numbers: 1.0 is 1), batching
        assert [d["modelVersion"] for d in got] == [d["modelVersion"].split(".")[0] for d in expected], what
        assert [d["batchSize"] for d in got] == [d["batchSize"] for d in expected], what
        if len(expected) == 1:  # (modelport's workers are per model, TorchServe's per version)
            assert got[0]["minWorkers"] == expected[0]["minWorkers"], what
    else:  # a page: the same token, the same names
        assert got.get("nextPageToken") == expected.get("nextPageToken"), what
        assert [m["modelName"] for m in got["models"]] == [m["modelName"] for m in expected["models"]], what


@pytest.mark.torchserve
@pytest.mark.torch
@pytest.mark.slow
def test_answers_match_a_real_torchserve(store: Store, tmp_path: Path) -> None:
    ports = TorchServePorts.free()
    options = TorchServeOptions(batch_size=1, model_api=True, ports=ports)
    with contextlib.ExitStack() as stack:
        stack.enter_context(running_torchserve(store.first, tmp_path / "ts", options))
        theirs = stack.enter_context(grpc.insecure_channel(f"127.0.0.1:{ports.grpc_management}"))
        mine = stack.enter_context(_modelport(store, tmp_path / "repo", "--model-control"))
        first = _call(mine, "RegisterModel", url="first.mar", initial_workers=1, synchronous=True)
        assert first == (grpc.StatusCode.OK, 'Model "first" Version: 1.0 registered with 1 initial workers')
        for method, fields in SEQUENCE:
            answers = _call(theirs, method, **fields), _call(mine, method, **fields)
            _same(*answers, what=f"{method} {fields}: TorchServe {answers[0]}, modelport {answers[1]}")


# one call of each write, on the archive ``tiny``
WRITE_CALLS: list[tuple[str, dict[str, Any]]] = [
    ("RegisterModel", REGISTER_TINY),
    ("ScaleWorker", {"model_name": "tiny", "min_worker": 1}),
    ("SetDefault", {"model_name": "tiny", "model_version": "1.0"}),
    ("UnregisterModel", {"model_name": "tiny"}),
]


@pytest.mark.torch
@pytest.mark.slow
def test_writes_are_refused_without_model_control(store: Store, tmp_path: Path) -> None:
    with _modelport(store, tmp_path / "repo") as channel:
        for method, fields in WRITE_CALLS:
            code, details = _call(channel, method, **fields)
            assert code is grpc.StatusCode.PERMISSION_DENIED, (method, details)
            assert details.startswith("Model API disabled") and "--model-control" in details, details
            assert details.endswith("\norg.pytorch.serve.archive.model.ModelException"), details
        assert _call(channel, "ListModels", limit=10) == (grpc.StatusCode.OK, '{\n  "models": []\n}')
        code, details = _call(channel, "DescribeModel", model_name="tiny")
        assert code is grpc.StatusCode.NOT_FOUND, details
    assert not (tmp_path / "repo" / "tiny").exists(), "nothing was registered"


@pytest.mark.torch
@pytest.mark.slow
def test_writes_need_the_control_key_and_a_registered_model_serves(store: Store, tmp_path: Path) -> None:
    auth = (("authorization", f"Bearer {KEY}"),)
    with _modelport(store, tmp_path / "repo", "--model-control", "--control-key", KEY) as channel:
        for method, fields in WRITE_CALLS:
            code, details = _call(channel, method, **fields)
            assert code is grpc.StatusCode.UNAUTHENTICATED, (method, details)
            wrong = _call(channel, method, (("authorization", "Bearer wrong"),), **fields)
            assert wrong[0] is grpc.StatusCode.UNAUTHENTICATED, (method, wrong)
        assert not (tmp_path / "repo" / "tiny").exists(), "nothing was registered without the key"

        registered = _call(channel, "RegisterModel", auth, **REGISTER_TINY)
        assert registered == (grpc.StatusCode.OK, 'Model "tiny" Version: 1.0 registered with 1 initial workers')
        listed = _call(channel, "ListModels", limit=10)  # the read side needs no control key
        assert json.loads(listed[1]) == {"models": [{"modelName": "tiny", "modelUrl": "tiny.mar"}]}  # its archive
        described = json.loads(_call(channel, "DescribeModel", model_name="tiny", model_version="1.0")[1])
        assert [(d["modelVersion"], d["batchSize"], d["maxBatchDelay"]) for d in described] == [("1", 4, 50)]

        predictions = channel.unary_unary(
            f"/{INFERENCE}/Predictions",
            request_serializer=messages()["PredictionsRequest"].SerializeToString,
            response_deserializer=messages()["PredictionResponse"].FromString,
        )
        request = messages()["PredictionsRequest"](model_name="tiny", input={"data": b'{"x": [1, 2, 3, 4]}'})
        assert json.loads(predictions(request, timeout=120).prediction)["label"] == "dog"

        scaled = _call(channel, "ScaleWorker", auth, model_name="tiny", min_worker=2, synchronous=True)
        assert scaled == (grpc.StatusCode.OK, "Workers scaled to 2 for model: tiny")
        assert [len(d["workers"]) for d in json.loads(_call(channel, "DescribeModel", model_name="tiny")[1])] == [2]
        removed = _call(channel, "UnregisterModel", auth, model_name="tiny")
        assert removed == (grpc.StatusCode.OK, 'Model "tiny" unregistered')
        with pytest.raises(grpc.RpcError) as gone:
            predictions(request, timeout=60)
        assert gone.value.code() is grpc.StatusCode.INTERNAL, "TorchServe's status for an unknown model"


def test_management_writes_need_the_control_token_and_reads_the_inference_token() -> None:
    for method in WRITES:
        assert grpc_scope(f"/{MANAGEMENT_SERVICE}/{method}") == "control"
    for method in ("ListModels", "DescribeModel"):
        assert grpc_scope(f"/{MANAGEMENT_SERVICE}/{method}") == "inference"
