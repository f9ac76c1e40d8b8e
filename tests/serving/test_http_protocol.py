"""The HTTP protocol's fast path (``serving/httpproto.py``) through real uvicorn servers on free ports.

Each server runs in the test's event loop over fake runtimes, so a test can hold a model (``fakes.GATE``) and
watch the server's connections and tasks. Responses are compared byte for byte with the same server's ASGI
path (``http_fast_path=False``), and a spy on :class:`_Exchange` says which path answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import uvicorn
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from modelport.serving import httpproto, tracing
from modelport.serving.dataplane import DataPlane
from modelport.serving.server import _uvicorn_config, build
from modelport.serving.settings import ServerSettings
from tests.serving import fakes
from tests.serving.processes import until

LIMIT = 4096
BODY = json.dumps({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}).encode()
EXPECTED = {"name": "y", "shape": [1, 3], "datatype": "FP32", "data": [2.0, 4.0, 6.0]}


class Running:
    """A server in this event loop: its port, uvicorn's server (connections, tasks) and its data plane."""

    def __init__(self, port: int, server: uvicorn.Server, plane: DataPlane) -> None:
        self.port, self.server, self.plane = port, server, plane

    @property
    def state(self) -> Any:
        return self.server.server_state

    async def exchange(self, raw: bytes, responses: int = 1) -> list[bytes]:
        """Send ``raw`` on a new connection and read ``responses`` responses, each whole."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.write(raw)
        try:
            return [await read_response(reader) for _ in range(responses)]
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def running(repo: Path, fast: bool = True, **settings: Any) -> AsyncIterator[Running]:
    options = ServerSettings(
        repository=repo, grpc_port=-1, max_queue_delay_ms=0, max_body_bytes=LIMIT, http_fast_path=fast, **settings
    )
    plane = build(options)
    await plane.start()
    server = uvicorn.Server(_uvicorn_config(options, plane))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    await until(lambda: server.started or task.done(), what="the server started")
    try:
        yield Running(sock.getsockname()[1], server, plane)
    finally:
        fakes.GATE.set()
        server.should_exit = True
        await task
        await plane.close()


async def read_response(reader: asyncio.StreamReader) -> bytes:
    """One whole response (its head, then ``content-length`` bytes of body), after any 100 Continue."""
    head = await reader.readuntil(b"\r\n\r\n")
    if head.startswith(b"HTTP/1.1 100 "):
        return head + await read_response(reader)
    length = next(
        int(line.split(b":")[1]) for line in head.lower().split(b"\r\n") if line.startswith(b"content-length")
    )
    return head + await reader.readexactly(length)


def without_date(response: bytes) -> bytes:
    return b"\r\n".join(line for line in response.split(b"\r\n") if not line.startswith(b"date: "))


def body_of(response: bytes) -> Any:
    return json.loads(response.split(b"\r\n\r\n", 1)[1])


def post(path: str, body: bytes = BODY, *headers: str, version: str = "1.1") -> bytes:
    lines = [f"POST {path} HTTP/{version}", "Host: test", "X-Request-ID: fixed-id", *headers]
    if not any(h.lower().startswith("transfer-encoding") for h in headers):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def chunked(body: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(body[i : i + 1000]), body[i : i + 1000]) for i in range(0, len(body), 1000))


def binary_body() -> tuple[bytes, int]:
    header = json.dumps(
        {
            "inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "parameters": {"binary_data_size": 12}}],
            "outputs": [{"name": "y", "parameters": {"binary_data": True}}],
        }
    ).encode()
    return header + struct.pack("<3f", 1, 2, 3), len(header)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    fakes.write_model(root, "echo", config={"version_policy": {"all": True}})
    fakes.write_model(root, "echo", version=2)
    fakes.GATE.set()
    return root


def complaints(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What uvicorn, asyncio or the protocol logged at warning or above."""
    names = ("uvicorn", "asyncio", "modelport.serving.http")
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith(names)]


@pytest.fixture
def answered(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths the fast path answered (a spy on ``_Exchange.answer``)."""
    paths: list[str] = []
    answer = httpproto._Exchange.answer

    async def spy(self: Any) -> None:
        paths.append(self.request.path)
        await answer(self)

    monkeypatch.setattr(httpproto._Exchange, "answer", spy)
    return paths


def _cases() -> list[Any]:
    binary, header_length = binary_body()
    big = json.dumps({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [0.5] * 2000}]}).encode()
    return [
        pytest.param(post("/v2/models/echo/infer"), 200, True, id="v2-json"),
        pytest.param(
            post("/v2/models/echo/infer", binary, f"Inference-Header-Content-Length: {header_length}"),
            200,
            True,
            id="v2-binary",
        ),
        pytest.param(post("/v2/models/echo/versions/2/infer"), 200, True, id="v2-version"),
        pytest.param(post("/v1/models/echo:predict", b'{"instances": [[1, 2, 3]]}'), 200, True, id="tfserving"),
        pytest.param(post("/predictions/echo", b'{"x": [1, 2, 3]}', "Content-Type: application/json"), 200, True),
        pytest.param(post("/v2/models/echo/infer", b"{not json"), 400, True, id="400"),
        pytest.param(post("/v2/models/nope/infer"), 404, True, id="404"),
        pytest.param(post("/predictions/nope", b"{}"), 404, True, id="torchserve-404"),
        pytest.param(post("/v2/models/echo/infer", big), 413, True, id="413-content-length"),
        pytest.param(post("/predictions/echo", big), 413, True, id="torchserve-413"),
        pytest.param(b"GET /v2/models/echo/infer HTTP/1.1\r\nHost: t\r\nX-Request-ID: fixed-id\r\n\r\n", 405, False),
        pytest.param(post("/v2/models/echo/infer", version="1.0"), 200, True, id="http-1.0"),
        pytest.param(post("/v2/models/echo/infer", BODY, "Connection: close"), 200, True, id="connection-close"),
        pytest.param(post("/v2/models/echo/infer", BODY, "Expect: 100-continue"), 200, False, id="expect"),
        pytest.param(
            post("/v2/models/echo/infer", chunked(BODY) + b"0\r\n\r\n", "Transfer-Encoding: chunked"),
            200,
            False,
            id="chunked",
        ),
        pytest.param(
            post("/v2/models/echo/infer", chunked(big) + b"0\r\n\r\n", "Transfer-Encoding: chunked"),
            413,
            False,
            id="413-body-size",
        ),
        pytest.param(b"GET /v2/health/ready HTTP/1.1\r\nHost: t\r\nX-Request-ID: fixed-id\r\n\r\n", 200, False),
    ]


@pytest.mark.parametrize(("raw", "status", "fast"), _cases())
async def test_the_fast_path_answers_byte_for_byte_as_the_asgi_path(repo, answered, raw, status, fast):
    async with running(repo, fast=False) as plain:
        expected = (await plain.exchange(raw))[0]
    assert answered == []
    async with running(repo) as server:
        got = (await server.exchange(raw))[0]
    assert answered == ([raw.split(b" ")[1].decode()] if fast else [])
    assert got.rsplit(b"HTTP/1.1 ", 1)[1].startswith(b"%d " % status)  # after any 100 Continue
    assert without_date(got) == without_date(expected)


@pytest.mark.parametrize("path", ["/v2/models/echo/infer", "/v2/repository/index"])
async def test_authentication_refusals_are_the_same_on_both_paths(repo, answered, path):
    raw = post(path, BODY)
    responses = []
    for fast in (False, True):
        async with running(repo, fast=fast, api_key="secret") as server:
            responses.append((await server.exchange(raw))[0])
    assert responses[0].startswith(b"HTTP/1.1 401 ") and b"www-authenticate: Bearer" in responses[0]
    assert without_date(responses[1]) == without_date(responses[0])
    assert answered == ([path] if path.endswith("infer") else [])


async def test_keep_alive_answers_many_requests_on_one_connection(repo, answered):
    async with running(repo) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        for _ in range(5):
            writer.write(post("/v2/models/echo/infer"))
            response = await read_response(reader)
            assert response.startswith(b"HTTP/1.1 200 ") and body_of(response)["outputs"][0] == EXPECTED
        assert len(server.state.connections) == 1
        writer.close()
    assert len(answered) == 5


@pytest.mark.parametrize("fast", [True, False], ids=["fast-path", "asgi"])
async def test_an_idle_keep_alive_connection_is_closed_after_the_timeout_and_a_busy_one_is_not(repo, fast):
    async with running(repo, fast=fast) as server:
        server.server.config.timeout_keep_alive = 1  # what each new connection's protocol reads (uvicorn: an int)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        loop = asyncio.get_running_loop()
        started = loop.time()
        last = started
        while last - started < 2.0:  # busy for twice the timeout, never idle for a tenth of it
            await asyncio.sleep(0.05)  # paces the requests on purpose: idle gaps, each far shorter than the timeout
            writer.write(post("/v2/models/echo/infer"))
            assert (await read_response(reader)).startswith(b"HTTP/1.1 200 ")
            last = loop.time()  # (the server's response ended a little before)
        assert await asyncio.wait_for(reader.read(), 10) == b"", "closed once idle"
        assert loop.time() - last >= 0.9, "not before the timeout"
        writer.close()


async def test_pipelined_requests_are_answered_in_order_across_both_paths(repo, answered):
    inputs = [[float(i), 0.0, 0.0] for i in range(4)]
    raw = b""
    for i, data in enumerate(inputs):
        body = json.dumps({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": data}]}).encode()
        raw += post("/v2/models/echo/infer", body).replace(b"fixed-id", b"id-%d" % i)
        if i == 1:  # one request for the routed (ASGI) app in the middle
            raw += b"GET /v2/health/live HTTP/1.1\r\nHost: t\r\nX-Request-ID: live\r\n\r\n"
    async with running(repo) as server:
        responses = await server.exchange(raw, responses=5)
    ids = [line for r in responses for line in r.split(b"\r\n") if line.startswith(b"x-request-id")]
    assert ids == [b"x-request-id: " + i for i in (b"id-0", b"id-1", b"live", b"id-2", b"id-3")]
    outputs = [body_of(r)["outputs"][0]["data"][0] for i, r in enumerate(responses) if i != 2]
    assert outputs == [2.0 * i for i in range(4)]
    assert len(answered) == 4


@pytest.mark.parametrize(
    "ask", [post("/v2/models/echo/infer", version="1.0"), post("/v2/models/echo/infer", BODY, "Connection: close")]
)
async def test_http_1_0_and_connection_close_close_the_connection_after_the_response(repo, answered, ask):
    async with running(repo) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(ask)
        response = await read_response(reader)
        assert b"connection: close\r\n" in response and body_of(response)["outputs"][0] == EXPECTED
        assert await reader.read() == b"", "the server closes the connection"
        writer.close()
    assert len(answered) == 1


@pytest.fixture
def received(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of each piece of body the fast path received."""
    sizes: list[int] = []
    take = httpproto._Exchange.received

    def spy(self: Any, chunk: bytes) -> None:
        sizes.append(len(chunk))
        take(self, chunk)

    monkeypatch.setattr(httpproto._Exchange, "received", spy)
    return sizes


async def test_a_body_that_arrives_in_slow_pieces_is_gathered(repo, answered, received):
    raw = post("/v2/models/echo/infer")
    head, body = raw[: raw.index(b"\r\n\r\n") + 4], raw[raw.index(b"\r\n\r\n") + 4 :]
    async with running(repo) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(head)
        for i in range(0, len(body), 20):
            writer.write(body[i : i + 20])
            await writer.drain()
            await until(lambda i=i: sum(received) == min(i + 20, len(body)), what="the piece received")
        response = await read_response(reader)
        writer.close()
    assert body_of(response)["outputs"][0] == EXPECTED
    assert len(received) == -(-len(body) // 20)


async def test_a_client_gone_mid_body_leaves_the_server_serving(repo, answered, received, caplog):
    async with running(repo) as server:
        _, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(post("/v2/models/echo/infer")[:-10])
        await until(lambda: bool(received), what="part of the body received")
        writer.close()
        await until(lambda: not server.state.connections and not server.state.tasks, what="the request dropped")
        response = (await server.exchange(post("/v2/models/echo/infer")))[0]
    assert body_of(response)["outputs"][0] == EXPECTED
    assert complaints(caplog) == []


@pytest.mark.parametrize("fast", [True, False])
async def test_a_client_gone_while_its_request_is_queued_leaves_the_server_serving(repo, answered, caplog, fast):
    async with running(repo, fast=fast) as server:
        fakes.GATE.clear()  # the first request holds the model: the second waits in the connection's pipeline
        _, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(post("/v2/models/echo/infer") * 2)
        await until(lambda: any(c.pipeline for c in server.state.connections), what="the second request queued")
        writer.close()  # unseen while the connection reads nothing (uvicorn pauses it while a request is queued)
        fakes.GATE.set()
        await until(lambda: not server.state.connections and not server.state.tasks, what="the connection dropped")
        response = (await server.exchange(post("/v2/models/echo/infer")))[0]
    assert body_of(response)["outputs"][0] == EXPECTED
    assert len(answered) == (3 if fast else 0)
    assert complaints(caplog) == []


def metric_samples(page: bytes, name: str, **labels: str) -> list[float]:
    """The values of ``name``'s samples on a /metrics page whose labels include ``labels``."""
    found = []
    for family in text_string_to_metric_families(page.split(b"\r\n\r\n", 1)[1].decode()):
        found += [s.value for s in family.samples if s.name == name and labels.items() <= s.labels.items()]
    return found


async def until_closed_by_client(server: Running, gone: socket.socket, in_flight: int) -> None:
    """Close ``gone`` (a raw socket whose request waits for its batch) and wait until the server dropped it."""
    await until(lambda: server.plane.in_flight == in_flight + 1, what="the request in the data plane")
    gone.close()
    await until(lambda: server.plane.in_flight == in_flight, what="the request dropped")


@pytest.mark.parametrize("fast", [True, False])
async def test_a_client_gone_while_its_request_waits_for_its_batch_is_not_computed(repo, answered, caplog, fast):
    """A raw socket sends a request and closes while the model is busy: the request leaves the queue, is counted
    as client_closed, and the model computes the other two requests' rows only."""
    path = "/v2/models/echo/versions/1/infer"
    async with running(repo, fast=fast, inline_below_ms=0) as server:
        fakes.BATCH_LOG.clear()
        fakes.GATE.clear()  # the first request's batch holds the model: the next one waits for it
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(post(path))
        gone = socket.create_connection(("127.0.0.1", server.port))
        await until(lambda: server.plane.in_flight == 1, what="the first request in the data plane")
        gone.sendall(post(path))
        await until_closed_by_client(server, gone, in_flight=1)
        fakes.GATE.set()
        first = await read_response(reader)
        writer.close()
        last = (await server.exchange(post(path)))[0]
        page = (await server.exchange(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n"))[0]
    assert body_of(first)["outputs"][0] == body_of(last)["outputs"][0] == EXPECTED
    counted = {"model": "echo", "version": "1", "protocol": "v2"}
    assert metric_samples(page, "modelport_requests_total", outcome="client_closed", **counted) == [1.0]
    assert metric_samples(page, "modelport_requests_total", outcome="success", **counted) == [2.0]
    assert metric_samples(page, "modelport_batch_size_sum", model="echo", version="1") == [2.0], "rows computed"
    assert fakes.BATCH_LOG == [1, 1]
    assert len(answered) == (3 if fast else 0)
    assert complaints(caplog) == []


@pytest.mark.parametrize("fast", [True, False])
async def test_the_span_of_a_request_whose_client_went_away_says_client_closed(repo, fast):
    exporter = InMemorySpanExporter()
    assert tracing.configure(ServerSettings(repository=repo), exporter)
    try:
        async with running(repo, fast=fast, inline_below_ms=0) as server:
            fakes.GATE.clear()
            gone = socket.create_connection(("127.0.0.1", server.port))
            gone.sendall(post("/v2/models/echo/infer"))
            await until_closed_by_client(server, gone, in_flight=0)
            fakes.GATE.set()
        tracing.flush()
        spans = [s for s in exporter.get_finished_spans() if s.name == "POST /v2/models/{model}/infer"]
    finally:
        tracing.shutdown()
    assert len(spans) == 1 and spans[0].attributes is not None
    assert spans[0].attributes["modelport.outcome"] == "client_closed"
    assert spans[0].attributes["http.response.status_code"] == 499
    assert spans[0].status.is_ok


async def test_a_failure_outside_the_front_drops_the_connection_and_is_logged(repo, monkeypatch, caplog):
    async def broken(self: Any, status: int, headers: Any, body: bytes) -> None:
        raise RuntimeError("broken")

    async with running(repo) as server:
        monkeypatch.setattr(httpproto._Exchange, "write", broken)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(post("/v2/models/echo/infer"))
        assert await reader.read() == b"", "the connection is dropped"
        writer.close()
        monkeypatch.undo()
        response = (await server.exchange(post("/v2/models/echo/infer")))[0]
    assert body_of(response)["outputs"][0] == EXPECTED
    assert "exception while answering an inference request" in caplog.text


async def test_tritonclient_and_requests_work_through_the_fast_path(repo, answered):
    import tritonclient.http as triton

    def clients(port: int) -> tuple[Any, ...]:
        client = triton.InferenceServerClient(f"127.0.0.1:{port}")
        x = np.array([[1, 2, 3]], dtype=np.float32)
        found = []
        for binary in (False, True):
            tensor = triton.InferInput("x", [1, 3], "FP32")
            tensor.set_data_from_numpy(x, binary_data=binary)
            output = triton.InferRequestedOutput("y", binary_data=binary)
            found.append(client.infer("echo", [tensor], outputs=[output]).as_numpy("y"))
        client.close()
        reply = requests.post(f"http://127.0.0.1:{port}/v2/models/echo/infer", data=BODY, timeout=10)
        return (*found, reply.status_code, reply.json()["outputs"][0])

    async with running(repo) as server:
        as_json, as_binary, status, output = await asyncio.to_thread(clients, server.port)
    assert as_json.tolist() == as_binary.tolist() == [[2, 4, 6]]
    assert (status, output) == (200, EXPECTED)
    assert len(answered) == 3


async def test_a_traced_request_on_the_fast_path_returns_its_span_traceparent(repo, answered):
    exporter = InMemorySpanExporter()
    assert tracing.configure(ServerSettings(repository=repo), exporter)
    try:
        async with running(repo) as server:
            traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            response = (await server.exchange(post("/v2/models/echo/infer", BODY, f"traceparent: {traceparent}")))[0]
        tracing.flush()
        spans = [s for s in exporter.get_finished_spans() if s.name == "POST /v2/models/{model}/infer"]
    finally:
        tracing.shutdown()
    assert len(spans) == 1 and spans[0].context is not None
    span_id = format(spans[0].context.span_id, "016x")
    assert f"traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-{span_id}-01\r\n".encode() in response
    assert spans[0].attributes is not None and spans[0].attributes["http.response.status_code"] == 200
    assert body_of(response)["outputs"][0] == EXPECTED and len(answered) == 1


async def test_an_untested_uvicorn_release_serves_every_request_through_asgi(repo, answered, monkeypatch, caplog):
    monkeypatch.setattr(uvicorn, "__version__", "0.99.0")
    async with running(repo) as server:
        response = (await server.exchange(post("/v2/models/echo/infer")))[0]
    assert response.startswith(b"HTTP/1.1 200 ") and body_of(response)["outputs"][0] == EXPECTED
    assert answered == [], "uvicorn's own protocol answered"
    assert any("uvicorn 0.99.0 is not a release the HTTP fast path is tested with" in m for m in complaints(caplog))
    assert httpproto.http_protocol(True) == "httptools" and httpproto.http_protocol(False) == "httptools"
    monkeypatch.setattr(uvicorn, "__version__", "0.54.0")
    assert httpproto.http_protocol(True) is httpproto.FastHttpProtocol
