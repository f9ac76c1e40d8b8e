"""The HTTP port's front door: one pure ASGI app for request ids, authentication and inference.

Inference routes (KServe v2 infer, TF Serving ``:predict``, TorchServe predictions) are answered
here without Starlette's routing, middleware stack or ``Request``/``Response`` objects: the path is
matched once, the body read straight from ``receive`` under its limit, and the reply sent in two
messages. Measured with ``benchmarks/serving.py``, those layers cost about as much of the event loop
as the data plane's own work for a small model. Everything else (health, metadata, repository,
metrics, TorchServe management) goes on to the routed FastAPI app, with the same request id and
authentication. Errors of either path become responses through ``serving/httperrors.py``.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from modelport.errors import PayloadTooLargeError
from modelport.serving import tracing
from modelport.serving.auth import Tokens, http_scope, presented_token
from modelport.serving.dataplane import DataPlane
from modelport.serving.httperrors import ErrorBody, Reply, error_body, error_reply, method_not_allowed
from modelport.serving.requestid import REQUEST_ID, request_id_of

__all__ = ["BodyReader", "HotRoute", "HttpFront", "RequestHead", "read_limited"]

ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]
BodyReader = Callable[[int], Awaitable[bytes]]
"""Reads the request body, refusing (413) one over the given number of bytes."""


class RequestHead(NamedTuple):
    """What an inference handler may read of the request besides its body: path parameters and headers."""

    params: dict[str, str]
    headers: list[tuple[bytes, bytes]]

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


_REMEMBERED = 512  # (method, path) pairs whose routing HttpFront keeps


class _DisconnectedError(Exception):
    """The client went away before its body was read: nothing to answer."""


class HttpFront:
    """The ASGI app of the HTTP port: ``routes`` answered directly, the rest by ``routed``."""

    def __init__(self, plane: DataPlane, routed: ASGIApp, routes: Sequence[HotRoute], tokens: Tokens) -> None:
        self.plane = plane
        self.routed = routed
        self.tokens = tokens
        self._routes = [(route.pattern, route) for route in routes]
        self._matched: dict[tuple[str, str], tuple[HotRoute | None, dict[str, str], list[str]]] = {}

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
            route, params, allowed = self._match(scope["method"], scope["path"])
            try:  # refused before routing (auth, 405): the common error body, as for every path
                if self.tokens.enabled:
                    self._authenticate(scope)
                if route is None and allowed:
                    raise method_not_allowed(allowed)
            except Exception as exc:
                await _send(send, error_reply(exc), stamp)
                return
            if route is None:  # the routed app answers its own errors (and re-raises what it answered with a 500)
                await self.routed(scope, receive, _stamped(send, stamp))
                return
            if tracing.ENABLED:
                tracing.http_route(route.template)
            try:
                head = RequestHead(params, scope["headers"])
                reply = await route.handler(self.plane, head, lambda limit: read_limited(scope, receive, limit))
            except _DisconnectedError:
                return
            except Exception as exc:
                reply = error_reply(exc, route.render)
            await _send(send, reply, stamp)
        finally:
            if traced is not None:
                traced.end()
            REQUEST_ID.reset(token)

    def _match(self, method: str, path: str) -> tuple[HotRoute | None, dict[str, str], list[str]]:
        """The route, its path parameters and (no route for the method) the methods the path takes; the paths
        clients keep calling are remembered (a few hundred at most: any path may be asked once)."""
        known = self._matched.get((method, path))
        if known is not None:
            return known[0], dict(known[1]), known[2]
        found = self._search(method, path)
        if len(self._matched) < _REMEMBERED:
            self._matched[(method, path)] = found[0], dict(found[1]), found[2]
        return found

    def _search(self, method: str, path: str) -> tuple[HotRoute | None, dict[str, str], list[str]]:
        allowed: list[str] = []
        for pattern, route in self._routes:
            found = pattern.match(path)
            if found is None:
                continue
            if method in route.methods:
                return route, found.groupdict(), []
            allowed += route.methods
        return None, {}, sorted(set(allowed))

    def _authenticate(self, scope: dict[str, Any]) -> None:
        needed = http_scope(scope["path"])
        if needed is None:
            return
        authorization = api_key = None
        for key, value in scope["headers"]:
            if key == b"authorization":
                authorization = value.decode("latin-1")
            elif key == b"x-api-key":
                api_key = value.decode("latin-1")
        self.tokens.check(needed, presented_token(authorization, api_key))


async def read_limited(scope: dict[str, Any], receive: Any, limit: int) -> bytes:
    """The request body from ASGI ``receive``, refusing (413) anything over ``limit`` before reading it all."""
    for key, value in scope["headers"]:
        if key == b"content-length" and value.isdigit() and (len(value) > 18 or int(value) > limit):
            raise PayloadTooLargeError(f"the request body ({value.decode()} bytes) exceeds the limit of {limit} bytes")
    chunks: list[bytes] = []
    total = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _DisconnectedError
        chunk = message.get("body", b"")
        total += len(chunk)
        if total > limit:
            raise PayloadTooLargeError(f"the request body exceeds the limit of {limit} bytes")
        if chunk:
            chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _send(send: Any, reply: Reply, stamp: tuple[bytes, bytes]) -> None:
    headers = [
        (b"content-type", reply.content_type),
        (b"content-length", str(len(reply.body)).encode()),
        stamp,
        *reply.headers,
    ]
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": reply.body})


def _stamped(send: Any, stamp: tuple[bytes, bytes]) -> Any:
    """``send`` that adds the request id header to the response."""

    async def send_with_id(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", []), stamp]
        await send(message)

    return send_with_id
