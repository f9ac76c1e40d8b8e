"""HTTP conformance of the inference routes through a real ``modelport serve`` (uvicorn on a socket): what clients
see today (keep-alive, pipelining, HTTP/1.0, ``Connection: close``, chunked and trickled bodies, ``Expect:
100-continue``, 413s, clients that go away, error bodies, headers) and real clients (tritonclient, requests, curl).

One server per module, with an API key (every request here presents it, except the 401 cases), over the fake
``echo`` model (y = 2x, n = row sums of y) and ``slow`` (the same, 0.3 s a batch). Pinned from the current
server, so that a replacement of the HTTP hot path shows any change a client could see. Covered elsewhere and not
repeated: a declared (no ``Expect``) or streamed oversized v2 body against a real server, and error messages by
protocol (test_bad_input); the same error bodies over ASGI, without a socket (test_front_door, test_security).
"""

from __future__ import annotations

import email.utils
import http.client
import io
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import httpx
import numpy as np
import orjson
import pytest
import requests
import tritonclient.http as triton

from modelport.serving.rest import create_app
from modelport.serving.server import build
from modelport.serving.settings import ServerSettings
from tests.serving import fakes
from tests.serving.processes import Served, curl, serving, wait_until

KEY = "conformance-key-0123456789"
AUTH = f"Bearer {KEY}"
LIMIT = 65536  # --max-body-bytes


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("conformance")
    fakes.write_model(root / "repo", "echo")
    fakes.write_model(root / "repo", "slow", runtime="SlowRuntime")
    log = root / "server.log"
    with serving(root / "repo", "--max-body-bytes", str(LIMIT), env={"MODELPORT_API_KEY": KEY}, log=log) as served:
        yield served
        assert served.process.poll() is None, "the server died"
    assert "Traceback" not in log.read_text(), "the server logged an unhandled error"


@dataclass(frozen=True)
class Call:
    """One inference request and the exact response body it gets."""

    id: str
    path: str
    body: bytes
    answer: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()
    answer_headers: tuple[tuple[str, str], ...] = ()


def calls(row: list[float], model: str = "echo") -> list[Call]:
    """The same input ``row`` on each inference protocol: v2 JSON, v2 binary, TF Serving, TorchServe."""
    y = [2.0 * v for v in row]
    n = sum(y)
    outputs = [{"name": "y", "datatype": "FP32", "shape": [1, 3]}, {"name": "n", "datatype": "FP32", "shape": [1]}]
    v2 = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": row}]}
    v2_answer = {"model_name": model, "model_version": "1", "outputs": outputs}
    json_answer = {**v2_answer, "outputs": [{**outputs[0], "data": y}, {**outputs[1], "data": [n]}]}
    binary_header = orjson.dumps(
        {
            "inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "parameters": {"binary_data_size": 12}}],
            "parameters": {"binary_data_output": True},
        }
    )
    sized = [{**o, "parameters": {"binary_data_size": 4 * o["shape"][-1]}} for o in outputs]
    binary_answer = orjson.dumps({**v2_answer, "outputs": sized})
    return [
        Call("v2-json", f"/v2/models/{model}/infer", orjson.dumps(v2), orjson.dumps(json_answer)),
        Call(
            "v2-binary",
            f"/v2/models/{model}/infer",
            binary_header + np.array(row, "<f4").tobytes(),
            binary_answer + np.array([*y, n], "<f4").tobytes(),
            "application/octet-stream",
            (("Inference-Header-Content-Length", str(len(binary_header))),),
            (("inference-header-content-length", str(len(binary_answer))),),
        ),
        Call(
            "tfserving",
            f"/v1/models/{model}:predict",
            orjson.dumps({"instances": [row]}),
            orjson.dumps({"predictions": [{"y": y, "n": n}]}),
        ),
        Call("torchserve", f"/predictions/{model}", orjson.dumps(row), orjson.dumps({"y": y, "n": n})),
    ]


CALLS = calls([1.0, 2.0, 3.0])
CALL_IDS = [c.id for c in CALLS]


def head(call: Call, *extra: str, version: str = "1.1", length: int | None = -1) -> bytes:
    """The request line and headers of ``call`` (with the API key), ``extra`` header lines added; ``length`` is
    the Content-Length declared (-1: the body's; None: none, for a chunked body)."""
    lines = [f"POST {call.path} HTTP/{version}", "Host: 127.0.0.1", f"Authorization: {AUTH}"]
    lines += [f"{k}: {v}" for k, v in call.headers]
    if length is not None:
        lines.append(f"Content-Length: {len(call.body) if length == -1 else length}")
    return ("\r\n".join([*lines, *extra]) + "\r\n\r\n").encode()


class Stream:
    """A raw connection read as a sequence of responses by http.client's own parser (which takes a socket's
    ``makefile``): one buffered reader shared by every response, so that pipelined answers are not lost."""

    def __init__(self, source: socket.socket | BinaryIO) -> None:
        self.file = source.makefile("rb") if isinstance(source, socket.socket) else source

    def makefile(self, mode: str) -> Any:
        return _Unclosed(self.file)

    def response(self) -> tuple[http.client.HTTPResponse, bytes]:
        """The next response (any ``100 Continue`` before it skipped) and its body."""
        answer = http.client.HTTPResponse(self)  # type: ignore[arg-type]  # duck-typed: only makefile is used
        answer.begin()
        return answer, answer.read()

    def closed_by_server(self) -> bool:
        """Nothing more comes and the server closed (a reset counts: it may close with bytes of ours unread)."""
        try:
            return self.file.read() == b""
        except ConnectionResetError:
            return True


class _Unclosed:
    """A file whose ``close`` leaves it open: http.client closes its reader after each response."""

    def __init__(self, file: Any) -> None:
        self._file = file

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)

    def close(self) -> None:
        pass


@pytest.fixture
def connect(server) -> Iterator[Any]:
    """Opens raw TCP connections to the server (Nagle off: each ``send`` is its own segment); closes them after."""
    opened: list[socket.socket] = []
    host, port = server.url.removeprefix("http://").split(":")

    def open_one() -> socket.socket:
        sock = socket.create_connection((host, int(port)), timeout=10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        opened.append(sock)
        return sock

    yield open_one
    for sock in opened:
        sock.close()


def assert_answers(call: Call, response: http.client.HTTPResponse, body: bytes) -> None:
    assert response.status == 200, body
    assert body == call.answer
    assert response.getheader("content-type") == call.content_type
    assert response.getheader("content-length") == str(len(body))


# --- connections ----------------------------------------------------------------------------------------------


def test_twenty_requests_on_one_keep_alive_connection(server):
    host, port = server.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    first = None
    for i in range(20):
        call = calls([float(i), 1.0, 2.0])[i % 4]
        connection.request("POST", call.path, call.body, {"Authorization": AUTH, **dict(call.headers)})
        response = connection.getresponse()
        assert_answers(call, response, response.read())
        assert response.getheader("connection") is None and not response.will_close
        first = first or connection.sock
        assert connection.sock is first, f"request {i} needed a new connection"
    connection.close()


@pytest.mark.parametrize("protocol", range(4), ids=CALL_IDS)
def test_three_pipelined_requests_are_answered_in_order(connect, protocol):
    sent = [calls([float(i), 0.0, 1.0])[protocol] for i in range(3)]
    sock = connect()
    sock.sendall(b"".join(head(c, f"X-Request-ID: pipe-{i}") + c.body for i, c in enumerate(sent)))
    stream = Stream(sock)
    for i, call in enumerate(sent):
        response, body = stream.response()
        assert_answers(call, response, body)
        assert response.getheader("x-request-id") == f"pipe-{i}"


@pytest.mark.parametrize("asked", [(), ("Connection: keep-alive",)], ids=["plain", "keep-alive-asked"])
def test_http_1_0_gets_its_answer_and_the_connection_closed(connect, asked):
    """uvicorn answers an HTTP/1.0 request in HTTP/1.1 and closes the connection, keep-alive asked or not."""
    call = CALLS[3]
    sock = connect()
    sock.sendall(head(call, *asked, version="1.0") + call.body)
    stream = Stream(sock)
    response, body = stream.response()
    assert_answers(call, response, body)
    assert response.version == 11 and response.getheader("connection") == "close"
    assert stream.closed_by_server()


@pytest.mark.parametrize("call", CALLS, ids=CALL_IDS)
def test_connection_close_is_honoured(connect, call):
    sock = connect()
    sock.sendall(head(call, "Connection: close") + call.body)
    stream = Stream(sock)
    response, body = stream.response()
    assert_answers(call, response, body)
    assert response.getheader("connection") == "close"
    assert stream.closed_by_server()


# --- request bodies -------------------------------------------------------------------------------------------


def chunked(body: bytes, size: int) -> bytes:
    pieces = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in pieces) + b"0\r\n\r\n"


@pytest.mark.parametrize("call", CALLS, ids=CALL_IDS)
def test_a_chunked_body_is_read_whole(connect, call):
    sock = connect()
    sock.sendall(head(call, "Transfer-Encoding: chunked", length=None))
    encoded = chunked(call.body, 7)
    for i in range(0, len(encoded), 5):  # chunk boundaries and segment boundaries differ
        sock.sendall(encoded[i : i + 5])
    response, body = Stream(sock).response()
    assert_answers(call, response, body)


@pytest.mark.parametrize("call", CALLS, ids=CALL_IDS)
def test_expect_100_continue_gets_100_then_the_answer(connect, call):
    sock = connect()
    stream = Stream(sock)
    sock.sendall(head(call, "Expect: 100-continue"))
    assert stream.file.readline() == b"HTTP/1.1 100 Continue\r\n", "the server must invite the body"
    assert stream.file.readline() == b"\r\n"
    sock.sendall(call.body)
    response, body = stream.response()
    assert_answers(call, response, body)


@pytest.mark.parametrize("call", CALLS, ids=CALL_IDS)
def test_a_request_trickled_in_three_byte_pieces(connect, call):
    sock = connect()
    request = head(call) + call.body
    for i in range(0, len(request), 3):
        sock.sendall(request[i : i + 3])
    response, body = Stream(sock).response()
    assert_answers(call, response, body)


# --- limits ---------------------------------------------------------------------------------------------------

OVERSIZED = [c for c in CALLS if c.id != "v2-binary"]  # one per protocol


def too_large(call: Call, message: str) -> bytes:
    """The 413 body of ``call``'s protocol (TorchServe's has none: its answer to a body over max_request_size)."""
    return b"" if call.id == "torchserve" else orjson.dumps({"error": message})


@pytest.mark.parametrize("call", OVERSIZED, ids=[c.id for c in OVERSIZED])
def test_a_declared_oversized_body_with_expect_gets_413_and_no_100_continue(connect, call):
    sock = connect()
    sock.sendall(head(call, "Expect: 100-continue", length=LIMIT + 1))
    sent = sock.makefile("rb").read()  # to the end: the server closes after a 413
    assert sent.startswith(b"HTTP/1.1 413 "), "413 at once, no 100 Continue"
    response, body = Stream(io.BytesIO(sent)).response()
    expected = too_large(call, f"the request body ({LIMIT + 1} bytes) exceeds the limit of {LIMIT} bytes")
    assert body == expected and sent.endswith(body), "nothing after the 413"
    content_type = None if call.id == "torchserve" else "application/json"
    assert response.getheader("connection") == "close" and response.getheader("content-type") == content_type


@pytest.mark.parametrize("call", OVERSIZED, ids=[c.id for c in OVERSIZED])
def test_a_chunked_body_over_the_limit_gets_413(connect, call):
    sock = connect()
    sock.sendall(head(call, "Transfer-Encoding: chunked", length=None))
    sock.sendall(chunked(b" " * (LIMIT + 1), 8192))  # a few socket buffers at most: sent before the server closes
    stream = Stream(sock)
    response, body = stream.response()
    assert response.status == 413
    assert body == too_large(call, f"the request body exceeds the limit of {LIMIT} bytes")
    assert response.getheader("connection") == "close"
    assert stream.closed_by_server()


# --- clients that go away -------------------------------------------------------------------------------------


def in_flight(server: Served) -> float:
    for line in httpx.get(f"{server.url}/metrics").text.splitlines():
        if line.startswith("modelport_inflight_requests "):
            return float(line.split()[1])
    raise AssertionError("no modelport_inflight_requests")


def assert_still_serves(server: Served, call: Call) -> None:
    answer = httpx.post(
        server.url + call.path, content=call.body, headers={"Authorization": AUTH, **dict(call.headers)}
    )
    assert answer.status_code == 200 and answer.content == call.answer
    assert server.process.poll() is None


@pytest.mark.parametrize("call", CALLS, ids=CALL_IDS)
def test_a_client_gone_mid_body_leaves_the_server_serving(server, connect, call):
    sock = connect()
    sock.sendall(head(call, length=1000) + call.body[:10])
    sock.close()
    assert_still_serves(server, call)


def test_a_client_gone_while_its_request_is_queued_leaves_the_server_serving(server, connect):
    call = calls([1.0, 2.0, 3.0], model="slow")[0]
    sock = connect()
    sock.sendall(head(call) + call.body)
    wait_until(lambda: in_flight(server) >= 1, timeout=10, what="the request in flight")
    sock.close()
    assert_still_serves(server, call)
    wait_until(lambda: in_flight(server) == 0, timeout=10, what="no request left in flight")


# --- error responses ------------------------------------------------------------------------------------------

NOT_JSON = "unexpected character, expected a string key: line 1 column 2 (char 1)"
NO_KEY = {"error": "this server needs the API key: send 'Authorization: Bearer <token>'"}


@dataclass(frozen=True)
class Refusal:
    id: str
    method: str
    path: str
    status: int
    answer: dict[str, Any]
    auth: str | None = AUTH
    body: bytes = b"{nope"
    header: tuple[str, str] | None = None


# TorchServe 0.12's routing errors, as a real one sends them (tests/serving/test_torchserve_handlers.py compares)
TS_405 = {
    "code": 405,
    "type": "MethodNotAllowedException",
    "message": "Requested method is not allowed, please refer to API document.",
}
TS_404 = {
    "code": 404,
    "type": "ResourceNotFoundException",
    "message": "Requested resource is not found, please refer to API document.",
}

REFUSALS = [
    Refusal(
        "v2-bad-json",
        "POST",
        "/v2/models/echo/infer",
        400,
        {"error": f"the request body is not valid JSON: {NOT_JSON}"},
    ),
    Refusal("tf-bad-json", "POST", "/v1/models/echo:predict", 400, {"error": f"JSON Parse error: {NOT_JSON}"}),
    Refusal(
        "ts-bad-json",
        "POST",
        "/predictions/echo",
        400,
        {
            "code": 400,
            "type": "BadRequestException",
            "message": f"the body is not JSON ({NOT_JSON}); send a JSON tensor or a dict of inputs",
        },
    ),
    Refusal(
        "v2-unknown",
        "POST",
        "/v2/models/nope/infer",
        404,
        {"error": "Request for unknown model: 'nope' is not found"},
        body=CALLS[0].body,
    ),
    Refusal(
        "tf-unknown",
        "POST",
        "/v1/models/nope:predict",
        404,
        {"error": "Servable not found for request: Latest(nope)"},
        body=CALLS[2].body,
    ),
    Refusal(
        "ts-unknown",
        "POST",
        "/predictions/nope",
        404,
        {"code": 404, "type": "ModelNotFoundException", "message": "Model not found: nope"},  # TorchServe 0.12's
        body=CALLS[3].body,
    ),
    Refusal("v2-405", "GET", "/v2/models/echo/infer", 405, {"error": "Method Not Allowed"}, header=("allow", "POST")),
    Refusal("tf-405", "GET", "/v1/models/echo:predict", 405, {"error": "Method Not Allowed"}, header=("allow", "POST")),
    Refusal("ts-405", "GET", "/predictions/echo", 405, TS_405, header=("allow", "POST, PUT")),
    Refusal("ts-ping-405", "DELETE", "/ping", 405, TS_405, header=("allow", "GET, HEAD")),
    Refusal("ts-404", "POST", "/predictions", 404, TS_404, body=CALLS[3].body),
    *(
        Refusal(f"{name}-401", "POST", path, 401, NO_KEY, None, header=("www-authenticate", 'Bearer realm="modelport"'))
        for name, path in [
            ("v2", "/v2/models/echo/infer"),
            ("tf", "/v1/models/echo:predict"),
            ("ts", "/predictions/echo"),
        ]
    ),
    Refusal(
        "v2-wrong-key",
        "POST",
        "/v2/models/echo/infer",
        401,
        {"error": "the token is not the API key"},
        "Bearer nope",
        header=("www-authenticate", 'Bearer realm="modelport"'),
    ),
]


def request_of(refusal: Refusal) -> dict[str, Any]:
    """The httpx ``request`` arguments of ``refusal``."""
    return {
        "method": refusal.method,
        "url": refusal.path,
        "content": refusal.body if refusal.method == "POST" else None,
        "headers": {"Authorization": refusal.auth} if refusal.auth else {},
    }


def assert_refused(refusal: Refusal, answer: httpx.Response) -> None:
    """The exact status, body and headers (but the request id and uvicorn's own ``date`` and ``server``)."""
    assert (answer.status_code, answer.content) == (refusal.status, orjson.dumps(refusal.answer)), refusal.id
    headers = {"content-type": "application/json", "content-length": str(len(answer.content))}
    if refusal.header is not None:
        headers[refusal.header[0]] = refusal.header[1]
    assert answer.headers["x-request-id"]
    assert {k: v for k, v in answer.headers.items() if k not in ("x-request-id", "date", "server")} == headers


@pytest.mark.parametrize("refusal", REFUSALS, ids=[r.id for r in REFUSALS])
def test_error_responses_keep_their_status_headers_and_exact_body(server, refusal):
    """No ``connection`` header: an error answer keeps the connection."""
    with httpx.Client(base_url=server.url) as http:
        assert_refused(refusal, http.request(**request_of(refusal)))


async def test_the_asgi_app_refuses_alike(tmp_path):
    """The in-process app (no socket, no uvicorn: what test_front_door and test_security drive) gives the same
    refusals, byte for byte."""
    fakes.write_model(tmp_path, "echo")
    plane = build(ServerSettings(repository=tmp_path, api_key=KEY, max_body_bytes=LIMIT))
    await plane.start()
    try:
        transport = httpx.ASGITransport(app=create_app(plane))
        async with httpx.AsyncClient(transport=transport, base_url="http://asgi") as http:
            for refusal in REFUSALS:
                assert_refused(refusal, await http.request(**request_of(refusal)))
    finally:
        await plane.close()


# --- headers --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("call", CALLS, ids=CALL_IDS)
def test_response_headers(server, call):
    with httpx.Client(base_url=server.url, headers={"Authorization": AUTH, **dict(call.headers)}) as http:
        given = http.post(call.path, content=call.body, headers={"X-Request-ID": "conformance-7"})
        made = [http.post(call.path, content=call.body).headers["x-request-id"] for _ in range(2)]
    assert given.headers["x-request-id"] == "conformance-7"
    assert made[0] and made[1] and made[0] != made[1] and "conformance-7" not in made
    assert given.headers["content-type"] == call.content_type
    assert given.headers["content-length"] == str(len(call.answer)) and given.content == call.answer
    assert given.headers["server"] == "uvicorn"
    assert email.utils.parsedate_to_datetime(given.headers["date"]).tzname() == "UTC"
    for name, value in call.answer_headers:
        assert given.headers[name] == value
    expected = {"date", "server", "content-type", "content-length", "x-request-id", *dict(call.answer_headers)}
    assert set(given.headers) == expected


# --- real clients ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_tritonclient_http_several_calls_on_its_keep_alive_pool(server, binary):
    client = triton.InferenceServerClient(url=server.url.removeprefix("http://"))
    try:
        for i in range(6):
            x = np.array([[i, i + 1, i + 2]], np.float32)
            inputs = [triton.InferInput("x", [1, 3], "FP32")]
            inputs[0].set_data_from_numpy(x, binary_data=binary)
            outputs = [triton.InferRequestedOutput(n, binary_data=binary) for n in ("y", "n")]
            result = client.infer("echo", inputs, outputs=outputs, request_id=f"t-{i}", headers={"Authorization": AUTH})
            assert result.get_response()["id"] == f"t-{i}"
            assert np.array_equal(result.as_numpy("y"), 2 * x)
            assert np.array_equal(result.as_numpy("n"), (2 * x).sum(axis=1))
    finally:
        client.close()


def test_requests_session_reuses_one_connection(server):
    sockets: list[tuple[str, int]] = []  # each answer's local address, read before its body (hooks run first)

    def record(response: requests.Response, **_: Any) -> None:
        sockets.append(response.raw.connection.sock.getsockname())

    with requests.Session() as session:
        session.headers["Authorization"] = AUTH
        session.hooks["response"].append(record)
        for _ in range(3):
            for call in CALLS:
                answer = session.post(server.url + call.path, data=call.body, headers=dict(call.headers), timeout=10)
                assert answer.status_code == 200 and answer.content == call.answer
                assert answer.headers["content-type"] == call.content_type
    assert len(sockets) == 3 * len(CALLS)
    assert len(set(sockets)) == 1, "every request went over the first connection"


def test_curl_upload_and_data_binary(server, tmp_path):
    """``curl -T`` (a PUT of the file) on TorchServe predictions; ``curl --data-binary`` on every route."""
    key = ("-H", f"Authorization: {AUTH}")
    for call in CALLS:
        (tmp_path / call.id).write_bytes(call.body)
        extra = [a for k, v in call.headers for a in ("-H", f"{k}: {v}")]
        sent = curl(*key, *extra, "--data-binary", f"@{tmp_path / call.id}", server.url + call.path)
        assert sent == call.answer, call.id
    torchserve = CALLS[-1]
    assert curl(*key, "-T", str(tmp_path / torchserve.id), server.url + torchserve.path) == torchserve.answer
