"""A TorchServe handler that streams (``send_intermediate_predict_response``), served by modelport as by a real
TorchServe 0.12: over HTTP the responses' bodies in turn, with the first one's status and headers; over gRPC one
``StreamPredictions`` message per response, and TorchServe's unary ``Predictions`` the first response only."""

from __future__ import annotations

import asyncio
import contextlib
import queue
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import grpc
import httpx
import pytest

from modelport.cli import main
from modelport.serving.torchserve_grpc import SERVICE, messages
from modelport.torchserve_process import TorchServeOptions, TorchServePorts, archive, running_torchserve
from tests.serving.processes import serving

pytestmark = [pytest.mark.torchserve, pytest.mark.slow]

STREAMER = """
from ts.handler_utils.utils import send_intermediate_predict_response


def _text(row):
    value = row.get("data") or row.get("body")
    return value.decode() if isinstance(value, (bytes, bytearray)) else str(value)


def handle(data, context):
    if data is None:
        return None
    texts = [_text(row) for row in data]
    for step in range(3):
        for i in range(len(data)):
            context.set_response_header(i, "x-step", str(step))
        tokens = [f"{text}-tok{step} " for text in texts]
        send_intermediate_predict_response(tokens, context.request_ids, "Intermediate Prediction success", 200, context)
    return [f"{text}-done" for text in texts]
"""

# streams its first response, then waits for the test to create the file the request names before it answers
WAITER = """
import os
import time

from ts.handler_utils.utils import send_intermediate_predict_response


def handle(data, context):
    if data is None:
        return None
    body = data[0].get("data") or data[0].get("body")
    go = body.decode()
    send = send_intermediate_predict_response
    send(["first "], context.request_ids, "Intermediate Prediction success", 200, context)
    deadline = time.monotonic() + 30
    while not os.path.exists(go) and time.monotonic() < deadline:
        time.sleep(0.01)
    send(["second "], context.request_ids, "Intermediate Prediction success", 200, context)
    if go.endswith("fail"):
        raise RuntimeError("after streaming")
    return ["last" if os.path.exists(go) else "timed out"]
"""

M = messages()
REQUEST, RESPONSE = M["PredictionsRequest"], M["PredictionResponse"]


class Server(NamedTuple):
    http: str
    grpc: str


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server, Path]]:
    """(TorchServe, modelport) serving the streaming archive (batches of one, as TorchServe registers it)."""
    work = tmp_path_factory.mktemp("streaming")
    (work / "streamer.py").write_text(STREAMER)
    (work / "w.bin").write_bytes(b"x")
    mar = archive(work / "w.bin", work / "streamer.py", "streamer", work / "store")
    repo = work / "repo"
    assert main(["import-mar", str(mar), "--repository", str(repo), "--quiet"]) == 0
    command = ["import-mar", str(mar), "--repository", str(repo), "--name", "batched", "--max-batch-size", "4"]
    assert main([*command, "--quiet"]) == 0
    (work / "waiter.py").write_text(WAITER)
    waiter = archive(work / "w.bin", work / "waiter.py", "waiter", work / "store")
    for name, extra in (("waiter", ""), ("waiter-workers", "workers: 1\n")):
        assert main(["import-mar", str(waiter), "--repository", str(repo), "--name", name, "--quiet"]) == 0
        (repo / name / "config.yaml").write_text((repo / name / "config.yaml").read_text() + extra)
    config = repo / "batched" / "config.yaml"  # in a worker process, batches gathered for 200 ms
    config.write_text(config.read_text() + "workers: 1\nmax_queue_delay_ms: 200\n")
    ports = TorchServePorts.free()
    with contextlib.ExitStack() as stack:
        ts = stack.enter_context(running_torchserve(mar, work / "ts", TorchServeOptions(batch_size=1, ports=ports)))
        mine = stack.enter_context(serving(repo, log=work / "server.log"))
        yield Server(ts.inference, f"127.0.0.1:{ports.grpc_inference}"), Server(mine.url, mine.grpc), work


def _http(server: Server, model: str, body: bytes) -> tuple[int, bytes, dict[str, str]]:
    response = httpx.post(f"{server.http}/predictions/{model}", content=body, timeout=60)
    headers = {k: v for k, v in response.headers.items() if k in ("x-step", "ts_stream_next")}
    return response.status_code, response.content, headers


def _grpc(server: Server, method: str, request: Any) -> Any:
    with grpc.insecure_channel(server.grpc) as channel:
        pair = {"request_serializer": REQUEST.SerializeToString, "response_deserializer": RESPONSE.FromString}
        if method == "StreamPredictions":
            return [r.prediction for r in channel.unary_stream(f"/{SERVICE}/{method}", **pair)(request, timeout=60)]
        return channel.unary_unary(f"/{SERVICE}/{method}", **pair)(request, timeout=60).prediction


def test_a_streaming_handler_answers_as_torchserve(servers: tuple[Server, Server, Path]) -> None:
    theirs, mine, _ = servers
    expected = (200, b"hi-tok0 hi-tok1 hi-tok2 hi-done", {"x-step": "0", "ts_stream_next": "true"})
    assert _http(theirs, "streamer", b"hi") == _http(mine, "streamer", b"hi") == expected
    request = REQUEST(model_name="streamer", input={"data": b"yo"})
    parts = [b"yo-tok0 ", b"yo-tok1 ", b"yo-tok2 ", b"yo-done"]
    assert _grpc(theirs, "StreamPredictions", request) == _grpc(mine, "StreamPredictions", request) == parts
    # TorchServe's unary call answers the first response (and its worker then fails the rest: called last here)
    assert _grpc(theirs, "Predictions", request) == _grpc(mine, "Predictions", request) == b"yo-tok0 "


async def test_each_request_of_a_batch_gets_its_own_stream_from_a_worker_process(
    servers: tuple[Server, Server, Path],
) -> None:
    _, mine, work = servers
    async with httpx.AsyncClient(base_url=mine.http, timeout=60) as client:
        replies = await asyncio.gather(*(client.post("/predictions/batched", content=t) for t in (b"a", b"b", b"c")))
        assert [r.content for r in replies] == [f"{t}-tok0 {t}-tok1 {t}-tok2 {t}-done".encode() for t in "abc"]
        v2 = {"inputs": [{"name": "data", "datatype": "BYTES", "shape": [1], "data": ["v2"]}]}
        answer = (await client.post("/v2/models/batched/infer", json=v2)).json()
        assert answer["outputs"][0]["data"] == [
            "v2-tok0 v2-tok1 v2-tok2 v2-done"
        ]  # the bytes a TorchServe client reads
        metrics = (await client.get("/metrics")).text
    counts = {
        line.split()[0].split("_")[-1].split("{")[0]: float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith(("modelport_batch_size_count{", "modelport_batch_size_sum{")) and 'model="batched"' in line
    }
    assert counts["sum"] == 4 and counts["count"] < 4, metrics  # 4 rows; the 3 concurrent ones shared a batch
    assert "Traceback" not in (work / "server.log").read_text()


def test_worker_protocol_frames_decode_as_torchserve_encodes_them() -> None:
    from ts.protocol.otf_message_handler import create_predict_response

    from modelport.errors import InvalidArgumentError
    from modelport.runtimes.handler_request import Reply, decode_predict_response, split_chunks

    frame = bytes(create_predict_response([b"\x00raw", {"k": 1}], {0: "id-a", 1: "id-b"}, "ok", 206))
    assert decode_predict_response(frame) == [
        ("id-a", Reply(b"\x00raw", 206)),
        ("id-b", Reply(b'{\n  "k": 1\n}', 206)),
    ]
    for broken in (frame[:-3], frame[:9], b""):
        with pytest.raises(InvalidArgumentError, match="malformed"):
            decode_predict_response(broken)
    assert split_chunks(b"abcdef", (1, 2)) == [b"a", b"bc", b"def"] and split_chunks(b"ab", ()) == [b"ab"]


@pytest.mark.parametrize("model", ["waiter", "waiter-workers"])
@pytest.mark.parametrize("path", ["fast", "asgi"])
def test_intermediate_responses_reach_the_client_before_the_handler_returns(
    servers: tuple[Server, Server, Path], tmp_path: Path, model: str, path: str
) -> None:
    _, mine, _ = servers
    go = tmp_path / "go"
    headers = {"Expect": "100-continue"} if path == "asgi" else {}  # a request uvicorn's ASGI cycle answers
    with httpx.stream("POST", f"{mine.http}/predictions/{model}", content=str(go), headers=headers, timeout=60) as r:
        assert r.status_code == 200 and r.headers["transfer-encoding"] == "chunked"
        assert "content-length" not in r.headers and r.headers["ts_stream_next"] == "true"
        parts = r.iter_raw()
        assert next(parts) == b"first "  # while the handler still waits for the file
        go.touch()
        assert b"".join(parts) == b"second last"


def test_a_handler_that_fails_after_streaming_cuts_the_response_short(servers: tuple[Server, Server, Path]) -> None:
    _, mine, work = servers
    fail = work / "go-fail"
    fail.touch()
    with (
        pytest.raises(httpx.RemoteProtocolError),
        httpx.stream("POST", f"{mine.http}/predictions/waiter", content=str(fail), timeout=60) as r,
    ):
        r.read()  # not a complete response: the client can tell it from a whole one
    fine = work / "go-fine"
    fine.touch()
    after = httpx.post(f"{mine.http}/predictions/waiter", content=str(fine), timeout=60)
    assert after.status_code == 200 and after.content == b"first second last"  # the server serves on


def test_an_http_1_0_client_reads_the_stream_to_the_end_of_the_connection(
    servers: tuple[Server, Server, Path], tmp_path: Path
) -> None:
    _, mine, _ = servers
    go = tmp_path / "go"
    go.touch()
    host, port = mine.http.removeprefix("http://").rsplit(":", 1)
    body = str(go).encode()
    request = b"POST /predictions/waiter HTTP/1.0\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    with socket.create_connection((host, int(port)), timeout=60) as conn:
        conn.sendall(request)
        answer = b"".join(iter(lambda: conn.recv(65536), b""))  # until the server closes
    head, _, content = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"transfer-encoding" not in head.lower()
    assert content == b"first second last"


@pytest.mark.parametrize("model", ["waiter", "waiter-workers"])
def test_stream_predictions_sends_each_response_as_the_handler_sends_it(
    servers: tuple[Server, Server, Path], tmp_path: Path, model: str
) -> None:
    _, mine, _ = servers
    go = tmp_path / "go"
    with grpc.insecure_channel(mine.grpc) as channel:
        pair = {"request_serializer": REQUEST.SerializeToString, "response_deserializer": RESPONSE.FromString}
        call = channel.unary_stream(f"/{SERVICE}/StreamPredictions", **pair)
        answers = call(REQUEST(model_name=model, input={"data": str(go).encode()}, sequence_id="s1"), timeout=60)
        first = next(answers)
        assert first.prediction == b"first "  # the handler still waits for the file
        go.touch()
        assert [a.prediction for a in answers] == [b"second ", b"last"]
        fail = tmp_path / "go-fail"
        fail.touch()
        failing = call(REQUEST(model_name=model, input={"data": str(fail).encode()}), timeout=60)
        with pytest.raises(grpc.RpcError) as failed:
            list(failing)
        assert failed.value.code() == grpc.StatusCode.UNAVAILABLE and "Prediction failed" in failed.value.details()


def test_stream_predictions2_sends_each_response_as_the_handler_sends_it(
    servers: tuple[Server, Server, Path], tmp_path: Path
) -> None:
    _, mine, _ = servers
    first_go, second_go = tmp_path / "one", tmp_path / "two"
    pending: queue.Queue[Any] = queue.Queue()
    with grpc.insecure_channel(mine.grpc) as channel:
        pair = {"request_serializer": REQUEST.SerializeToString, "response_deserializer": RESPONSE.FromString}
        call = channel.stream_stream(f"/{SERVICE}/StreamPredictions2", **pair)
        answers = call(iter(pending.get, None), timeout=60)
        pending.put(REQUEST(model_name="waiter", input={"data": str(first_go).encode()}))
        assert next(answers).prediction == b"first "  # the handler still waits for the file
        first_go.touch()
        assert [next(answers).prediction for _ in range(2)] == [b"second ", b"last"]
        pending.put(REQUEST(model_name="nobody", input={"data": b"x"}))  # a failure answers its status, and goes on
        assert "Model not found: nobody" in next(answers).status.message
        pending.put(REQUEST(model_name="waiter", input={"data": str(second_go).encode()}))
        assert next(answers).prediction == b"first "
        second_go.touch()
        pending.put(None)
        assert [a.prediction for a in answers] == [b"second ", b"last"]
