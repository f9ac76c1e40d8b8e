"""A stateful TorchServe handler (sequence batching: ``sequenceBatching: true`` in its model config, state kept by
``context.get_sequence_id``) answers as on a real TorchServe 0.12: the requests that name one sequence
(``ts_request_sequence_id``) add up in one handler's state even when the config asks for several workers, and
each request that names none starts a sequence of its own (``ts-seq-<uuid>``). Over gRPC, ``StreamPredictions2``'s
``sequence_id`` names the sequence (no response carries it back); a model without sequence batching sees none."""

from __future__ import annotations

import contextlib
import json
import queue
from collections.abc import Iterator
from typing import Any, NamedTuple

import grpc
import httpx
import pytest

from modelport.cli import main
from modelport.serving.torchserve_grpc import SERVICE, messages
from modelport.torchserve_process import TorchServeOptions, TorchServePorts, archive, running_torchserve
from tests.serving.processes import serving

pytestmark = [pytest.mark.torchserve, pytest.mark.slow]

HANDLER = """
totals = {}


def handle(data, context):
    if data is None:
        return None
    answers = []
    for i, row in enumerate(data):
        sequence = context.get_sequence_id(i)
        value = row.get("data") or row.get("body")
        totals[sequence] = totals.get(sequence, 0) + int(value)
        answers.append({"new": sequence.startswith("ts-seq-"), "total": totals[sequence]})
    return answers
"""

PLAIN = """
def handle(data, context):
    return None if data is None else [str(context.get_sequence_id(i)) for i in range(len(data))]
"""

M = messages()
REQUEST, RESPONSE = M["PredictionsRequest"], M["PredictionResponse"]

CONFIG = """
minWorkers: 2
maxWorkers: 2
batchSize: 4
maxBatchDelay: 5
sequenceBatching: true
sequenceMaxIdleMSec: 60000
maxNumSequence: 16
"""


class Server(NamedTuple):
    http: str
    grpc: str


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server]]:
    """(TorchServe, modelport) serving the stateful archive as ``counter`` and one without sequences, ``plain``."""
    work = tmp_path_factory.mktemp("sequences")
    (work / "counter.py").write_text(HANDLER)
    (work / "plain.py").write_text(PLAIN)
    (work / "model-config.yaml").write_text(CONFIG)
    (work / "w.bin").write_bytes(b"x")
    config = work / "model-config.yaml"
    mar = archive(work / "w.bin", work / "counter.py", "counter", work / "store", config_file=config)
    plain = archive(work / "w.bin", work / "plain.py", "plain", work / "store")
    repo = work / "repo"
    for archived in (mar, plain):
        assert main(["import-mar", str(archived), "--repository", str(repo), "--quiet"]) == 0
    ports = TorchServePorts.free()
    options = TorchServeOptions(batch_size=4, ports=ports, also=(plain.name,))
    with contextlib.ExitStack() as stack:
        ts = stack.enter_context(running_torchserve(mar, work / "ts", options))
        mine = stack.enter_context(serving(repo, log=work / "server.log"))
        yield Server(ts.inference, f"127.0.0.1:{ports.grpc_inference}"), Server(mine.url, mine.grpc)


def _answers(server: Server, bodies: list[bytes], headers: dict[str, str]) -> list[tuple[int, Any]]:
    replies = [httpx.post(f"{server.http}/predictions/counter", content=b, headers=headers, timeout=60) for b in bodies]
    return [(r.status_code, r.json(), r.headers.get("content-type")) for r in replies]


def test_requests_of_one_sequence_share_its_state(servers: tuple[Server, Server]) -> None:
    theirs, mine = servers
    named = {"ts_request_sequence_id": "seq_0"}
    expected = [(200, {"new": False, "total": total}, None) for total in (1, 3, 6)]  # no type: the handler set none
    assert _answers(theirs, [b"1", b"2", b"3"], named) == _answers(mine, [b"1", b"2", b"3"], named) == expected


def test_each_request_without_a_sequence_starts_its_own(servers: tuple[Server, Server]) -> None:
    theirs, mine = servers
    expected = [(200, {"new": True, "total": 5}, None)] * 3
    assert _answers(theirs, [b"5"] * 3, {}) == _answers(mine, [b"5"] * 3, {}) == expected


def _paced(server: Server, sequence: str, bodies: list[bytes]) -> list[tuple[Any, bool, bool]]:
    """``StreamPredictions2``: each request sent once the one before was answered (TorchServe's sequence)."""
    pending: queue.Queue[Any] = queue.Queue()
    requests = iter(pending.get, None)
    pending.put(_request(sequence, bodies[0]))
    pair = {"request_serializer": REQUEST.SerializeToString, "response_deserializer": RESPONSE.FromString}
    with grpc.insecure_channel(server.grpc) as channel:
        answers = channel.stream_stream(f"/{SERVICE}/StreamPredictions2", **pair)(requests, timeout=60)
        got = []
        for body in [*bodies[1:], None]:
            answer = next(answers)
            got.append((json.loads(answer.prediction), answer.HasField("sequence_id"), answer.HasField("status")))
            pending.put(
                None if body is None else REQUEST(model_name="counter", sequence_id=sequence, input={"data": body})
            )
    return got


def _request(sequence: str, body: bytes) -> Any:
    return REQUEST(model_name="counter", sequence_id=sequence, input={"data": body})


def test_stream_predictions2_names_the_sequence(servers: tuple[Server, Server]) -> None:
    theirs, mine = servers
    expected = [({"new": False, "total": total}, False, False) for total in (1, 3, 6)]
    assert _paced(theirs, "g1", [b"1", b"2", b"3"]) == _paced(mine, "g1", [b"1", b"2", b"3"]) == expected


def test_a_model_without_sequence_batching_gets_no_sequence_id(servers: tuple[Server, Server]) -> None:
    pair = {"request_serializer": REQUEST.SerializeToString, "response_deserializer": RESPONSE.FromString}
    request = REQUEST(model_name="plain", sequence_id="g2", input={"data": b"x"})
    answers = []
    for server in servers:
        with grpc.insecure_channel(server.grpc) as channel:
            answer = channel.unary_unary(f"/{SERVICE}/Predictions", **pair)(request, timeout=60)
        answers.append((answer.prediction, answer.HasField("sequence_id")))
    assert answers == [(b"None", False)] * 2
