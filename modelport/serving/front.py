"""The HTTP port's front door: one pure ASGI app for request ids, authentication and inference.

Inference routes (KServe v2 infer, TF Serving ``:predict``, TorchServe predictions) are answered
here without Starlette's routing, middleware stack or ``Request``/``Response`` objects: the path is
matched once, the body read straight from ``receive`` under its limit, and the reply sent in two
messages. Measured with ``benchmarks/serving.py``, those layers cost about as much of the event loop
as the data plane's own work for a small model. Everything else (health, metadata, repository,
metrics, TorchServe management) goes on to the routed FastAPI app, with the same request id and
authentication. Errors of either path become responses through ``serving/httperrors.py``.

Simple inference requests do not even come here as ASGI: ``serving/httpproto.py`` answers them from
uvicorn's HTTP protocol through :meth:`HttpFront.reply`, the same code this app runs for them.

A client that goes away once its body is read (``receive`` says ``http.disconnect``) has its request cancelled,
on either path: one waiting for its batch leaves it without being computed, the data plane counts it as
``client_closed``, and its span gets nginx's 499 (``CLIENT_CLOSED_STATUS``); nothing is answered.
"""

from __future__ import annotations

import asyncio
import logging
import re
import zlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from modelport.errors import ClientClosedError, InvalidArgumentError, PayloadTooLargeError
from modelport.serving import tracing
from modelport.serving.auth import Tokens, http_scope, presented_token
from modelport.serving.dataplane import DataPlane
from modelport.serving.errors import http_status
from modelport.serving.httperrors import ErrorBody, Reply, error_body, error_reply, method_not_allowed
from modelport.serving.requestid import REQUEST_ID, request_id_of

__all__ = [
    "CLIENT_CLOSED_STATUS",
    "BodyReader",
    "DisconnectedError",
    "HotRequest",
    "HotRoute",
    "HttpFront",
    "RequestHead",
    "check_declared_length",
    "read_limited",
    "reply_headers",
    "send_reply",
]

log = logging.getLogger("modelport.serving.http")

ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]
BodyReader = Callable[[int], Awaitable[bytes]]
"""Reads the request body, refusing (413) one over the given number of bytes."""


class RequestHead(NamedTuple):
    """What an inference handler may read of the request besides its body: path parameters, headers and the
    client's host (None: a Unix socket)."""

    params: dict[str, str]
    headers: list[tuple[bytes, bytes]]
    client: str | None = None

    def header(self, name: bytes) -> str | None:
        """The first value of a header (``name`` lower case), or None."""
        for key, value in self.headers:
            if key == name:
                return value.decode("latin-1")
        return None


Handler = Callable[[DataPlane, RequestHead, BodyReader], Awaitable[Reply]]


@dataclass(frozen=True)
class HotRoute:
    """An inference route: a path template (``{name}`` segments), its methods, handler and error body."""

    template: str
    methods: frozenset[str]
    handler: Handler
    render: ErrorBody = error_body

    @property
    def pattern(self) -> re.Pattern[str]:
        return re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", template_escape(self.template)) + "$")


def template_escape(template: str) -> str:
    """A path template with its literal parts regex-escaped (``{name}`` kept)."""
    parts = re.split(r"(\{\w+\})", template)
    return "".join(p if p.startswith("{") else re.escape(p) for p in parts)


class Allowed(NamedTuple):
    """The methods a path's inference routes take (for a 405) and the error body of their protocol."""

    methods: tuple[str, ...]
    render: ErrorBody


_REMEMBERED = 512  # (method, path) pairs whose routing HttpFront keeps
# On the ASGI path, a request still unanswered this long after its body was read gets a task watching ``receive``
# for its client's disconnect (_Disconnects): one from the start would cost every request ~10 us of CPU.
WATCH_AFTER_S = 0.02


class DisconnectedError(Exception):
    """The client went away before its body was read: nothing to answer."""


CLIENT_CLOSED_STATUS = http_status(ClientClosedError("the client went away"))
"""The status a request whose client went away is recorded with (its span's; nothing is sent): 499."""


class HotRequest(NamedTuple):
    """A request for an inference route: the route, its path parameters, method, path, headers and the client's
    host (None: a Unix socket)."""

    route: HotRoute
    params: dict[str, str]
    method: str
    path: str
    headers: list[tuple[bytes, bytes]]
    client: str | None


class HttpFront:
    """The ASGI app of the HTTP port: ``routes`` answered directly, the rest by ``routed``."""

    def __init__(self, plane: DataPlane, routed: ASGIApp, routes: Sequence[HotRoute], tokens: Tokens) -> None:
        self.plane = plane
        self.routed = routed
        self.tokens = tokens
        self._routes = [(route.pattern, route) for route in routes]
        self._matched: dict[tuple[str, str], tuple[HotRoute | None, dict[str, str], Allowed | None]] = {}
        self._disconnects = _Disconnects()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.routed(scope, receive, send)
            return
        request_id = request_id_of(scope["headers"])
        token = REQUEST_ID.set(request_id)
        stamp = (b"x-request-id", request_id.encode())
        traced = tracing.http_request(scope, send) if tracing.ENABLED else None  # its SERVER span (tracing.py)
        if traced is not None:
            send = traced.send
        try:  # one coroutine level for the whole request: the handler's await is the next one
            path, headers = scope["path"], scope["headers"]
            route, params, allowed = self._match(scope["method"], path)
            if route is not None:
                client = scope.get("client")
                request = HotRequest(route, params, scope["method"], path, headers, client[0] if client else None)
                try:
                    reply = await self._reply_while_connected(request, receive)
                except ClientClosedError:  # nobody to answer
                    if traced is not None:
                        traced.answered(CLIENT_CLOSED_STATUS)
                    return
            else:  # refused before routing (auth, 405); a 405 in the body of the protocol whose path it is
                reply = self._refusal(scope["method"], path, headers, allowed)
                if reply is None:  # the routed app answers its own errors (and re-raises what it answered with a 500)
                    await self.routed(scope, receive, _stamped(send, stamp))
                    return
            if reply is not None:
                await send_reply(send, reply, stamp)
        finally:
            if traced is not None:
                traced.end()
            REQUEST_ID.reset(token)

    async def _reply_while_connected(self, request: HotRequest, receive: Any) -> Reply | None:
        """:meth:`reply`, cancelled if the client goes away once its body is read (:class:`_Disconnects` watches
        ``receive`` for ``http.disconnect``): then ClientClosedError."""
        task = asyncio.current_task()
        assert task is not None
        watched = False

        async def read(limit: int) -> bytes:
            nonlocal watched
            body = await read_limited(request.headers, receive, limit)
            self._disconnects.watch(task, receive)
            watched = True
            return body

        try:
            return await self.reply(request, read)
        except asyncio.CancelledError:
            if not (watched and self._disconnects.forget(task)):
                raise  # not the client's doing (the server is stopping)
            watched = False
            task.uncancel()
            raise ClientClosedError("the client went away while its request was served") from None
        finally:
            if watched:
                self._disconnects.forget(task)

    def hot(self, method: str, path: str) -> tuple[HotRoute, dict[str, str]] | None:
        """The inference route that answers ``method path`` and its path parameters, or None."""
        route, params, _ = self._match(method, path)
        return None if route is None else (route, params)

    async def reply(self, request: HotRequest, read: BodyReader) -> Reply | None:
        """An inference route's reply (authentication, handler, its errors), whichever path the request came
        by (this ASGI app or ``serving/httpproto.py``); None when the client went away before its body."""
        refusal = self._refusal(request.method, request.path, request.headers, None)
        if refusal is not None:
            return refusal
        route = request.route
        if tracing.ENABLED:
            tracing.http_route(route.template)
        try:
            head = RequestHead(request.params, request.headers, request.client)
            return await route.handler(self.plane, head, decoding(request.headers, read))
        except DisconnectedError:
            return None
        except Exception as exc:
            return error_reply(exc, route.render)

    def _refusal(
        self, method: str, path: str, headers: list[tuple[bytes, bytes]], allowed: Allowed | None
    ) -> Reply | None:
        """The reply refusing a request before routing (authentication, then a wrong method), or None."""
        try:
            if self.tokens.enabled:
                self._authenticate(method, path, headers)
        except Exception as exc:
            return error_reply(exc)
        if allowed:
            return error_reply(method_not_allowed(list(allowed.methods)), allowed.render)
        return None

    def _match(self, method: str, path: str) -> tuple[HotRoute | None, dict[str, str], Allowed | None]:
        """The route, its path parameters and (no route for the method) the methods the path takes; the paths
        clients keep calling are remembered (a few hundred at most: any path may be asked once)."""
        known = self._matched.get((method, path))
        if known is not None:
            return known[0], dict(known[1]), known[2]
        found = self._search(method, path)
        if len(self._matched) < _REMEMBERED:
            self._matched[(method, path)] = found[0], dict(found[1]), found[2]
        return found

    def _search(self, method: str, path: str) -> tuple[HotRoute | None, dict[str, str], Allowed | None]:
        allowed: list[str] = []
        render: ErrorBody | None = None
        for pattern, route in self._routes:
            found = pattern.match(path)
            if found is None:
                continue
            if method in route.methods:
                return route, found.groupdict(), None
            allowed += route.methods
            render = render or route.render
        return None, {}, Allowed(tuple(sorted(set(allowed))), render) if render else None

    def _authenticate(self, method: str, path: str, headers: list[tuple[bytes, bytes]]) -> None:
        needed = http_scope(path, method)
        if needed is None:
            return
        authorization = api_key = None
        for key, value in headers:
            if key == b"authorization":
                authorization = value.decode("latin-1")
            elif key == b"x-api-key":
                api_key = value.decode("latin-1")
        self.tokens.check(needed, presented_token(authorization, api_key))


class _Disconnects:
    """The ASGI path's inference requests in flight, each watched for its client's disconnect once it has waited
    :data:`WATCH_AFTER_S` since its body was read (a task on ``receive``): most are answered sooner, and a task or
    a timer each would cost every request several microseconds; one timer serves them all."""

    def __init__(self) -> None:
        self._waiting: dict[asyncio.Task[Any], tuple[Any, float]] = {}  # not watched yet: receive, since when
        self._watchers: dict[asyncio.Task[Any], asyncio.Task[None]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def watch(self, task: asyncio.Task[Any], receive: Any) -> None:
        """Watch ``task``'s client (its body read now): ``task`` is cancelled if it goes away."""
        loop = task.get_loop()
        self._waiting[task] = (receive, loop.time())
        if self._timer is None or self._loop is not loop:  # (a new loop: tests that run an app on several)
            self._loop, self._timer = loop, loop.call_later(WATCH_AFTER_S, self._sweep)

    def forget(self, task: asyncio.Task[Any]) -> bool:
        """Stop watching ``task``; whether its client went away (its watcher cancelled it)."""
        self._waiting.pop(task, None)
        watcher = self._watchers.pop(task, None)
        if watcher is None:
            return False
        gone = watcher.done() and not watcher.cancelled()
        watcher.cancel()
        return gone

    def _sweep(self) -> None:
        loop, self._timer = self._loop, None
        assert loop is not None
        due = loop.time() - WATCH_AFTER_S
        for task, (receive, since) in list(self._waiting.items()):
            if since <= due:
                del self._waiting[task]
                self._watchers[task] = loop.create_task(_cancel_on_disconnect(receive, task))
        if self._waiting:
            self._timer = loop.call_later(WATCH_AFTER_S, self._sweep)


async def _cancel_on_disconnect(receive: Any, task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` when ASGI ``receive`` says the client disconnected (called once the body is read: the next
    message is ``http.disconnect``, whenever it comes; a server that sends anything else leaves it at that)."""
    if (await receive())["type"] == "http.disconnect":
        task.cancel()


def check_declared_length(headers: list[tuple[bytes, bytes]], limit: int) -> None:
    """Refuse (413) a body whose ``Content-Length`` is over ``limit``, before reading any of it."""
    for key, value in headers:
        if key == b"content-length" and value.isdigit() and (len(value) > 18 or int(value) > limit):
            raise PayloadTooLargeError(f"the request body ({value.decode()} bytes) exceeds the limit of {limit} bytes")


async def read_limited(headers: list[tuple[bytes, bytes]], receive: Any, limit: int) -> bytes:
    """The request body from ASGI ``receive``, refusing (413) anything over ``limit`` before reading it all."""
    check_declared_length(headers, limit)
    chunks: list[bytes] = []
    total = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise DisconnectedError
        chunk = message.get("body", b"")
        total += len(chunk)
        if total > limit:
            raise PayloadTooLargeError(f"the request body exceeds the limit of {limit} bytes")
        if chunk:
            chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


# Content-Encoding of request bodies, as Triton takes them (tritonclient's request_compression_algorithm)
_ENCODINGS = {b"gzip": 16 + zlib.MAX_WBITS, b"x-gzip": 16 + zlib.MAX_WBITS, b"deflate": zlib.MAX_WBITS}


def decoding(headers: list[tuple[bytes, bytes]], read: BodyReader) -> BodyReader:
    """``read``, undoing the body's ``Content-Encoding`` (gzip, deflate); ``limit`` bounds the decoded body too."""
    encoding = next((value for key, value in headers if key == b"content-encoding"), b"").strip().lower()
    if encoding in (b"", b"identity"):
        return read

    async def read_decoded(limit: int) -> bytes:
        body = await read(limit)
        wbits = _ENCODINGS.get(encoding)
        if wbits is None:
            name = encoding.decode("latin-1")
            raise InvalidArgumentError(f"Content-Encoding {name!r} is not supported (gzip, deflate)")
        return _inflate(body, wbits, limit)

    return read_decoded


def _inflate(data: bytes, wbits: int, limit: int) -> bytes:
    decoder = zlib.decompressobj(wbits)
    try:
        body = decoder.decompress(data, limit + 1)  # never more than the limit: a small bomb stays small
    except zlib.error as exc:
        raise InvalidArgumentError(f"the request body does not decode as its Content-Encoding says ({exc})") from None
    if len(body) > limit:
        raise PayloadTooLargeError(f"the decompressed request body exceeds the limit of {limit} bytes")
    if not decoder.eof:
        raise InvalidArgumentError("the compressed request body is truncated")
    return body


def reply_headers(reply: Reply, stamp: tuple[bytes, bytes]) -> list[tuple[bytes, bytes]]:
    """The response headers of ``reply``: its content type (none when it has none, as a TorchServe handler's answer
    whose handler set none) and length, the request id (``stamp``), its own."""
    length = (b"content-length", str(len(reply.body)).encode())
    if not reply.content_type:
        return [length, stamp, *reply.headers]
    return [(b"content-type", reply.content_type), length, stamp, *reply.headers]


async def send_reply(send: Any, reply: Reply, stamp: tuple[bytes, bytes]) -> None:
    """Send ``reply`` through ASGI ``send``, in two messages (a streamed reply: one per body, without a length)."""
    if reply.stream is not None:
        await _send_streamed(send, reply, stamp)
        return
    await send({"type": "http.response.start", "status": reply.status, "headers": reply_headers(reply, stamp)})
    await send({"type": "http.response.body", "body": reply.body})


async def _send_streamed(send: Any, reply: Reply, stamp: tuple[bytes, bytes]) -> None:
    """A streaming TorchServe handler's reply: each body as it comes (the server chunks it); a failure after the
    first body leaves the response unfinished (the server closes the connection)."""
    assert reply.stream is not None
    headers = [*([(b"content-type", reply.content_type)] if reply.content_type else []), stamp, *reply.headers]
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": reply.body, "more_body": True})
    try:
        async for body in reply.stream:
            await send({"type": "http.response.body", "body": body, "more_body": True})
    except Exception as exc:
        log.warning("the handler failed after it streamed part of its answer (%s): response cut short", exc)
        return
    finally:
        await reply.stream.aclose()  # type: ignore[attr-defined]  # an async generator
    await send({"type": "http.response.body", "body": b"", "more_body": False})


def _stamped(send: Any, stamp: tuple[bytes, bytes]) -> Any:
    """``send`` that adds the request id header to the response."""

    async def send_with_id(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", []), stamp]
        await send(message)

    return send_with_id
