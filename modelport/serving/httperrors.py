"""The one HTTP error mapping: every error of the HTTP port becomes a :class:`Reply` here.

The status comes from ``serving/errors.py``; the body is ``{"error": message}`` unless the route
that failed belongs to a protocol with its own error body (TorchServe's), which the route names
(a :class:`~modelport.serving.front.HotRoute`'s or a :class:`ProtocolRoute`'s ``render``). Routing
errors become :class:`~modelport.errors.MethodNotAllowedError` (405, a path of the protocol's routes with
another method) and :class:`~modelport.errors.NoRouteError` (404, a path under a protocol's catch-all
route) and take that protocol's body too; other paths, and unexpected exceptions (500, traceback logged,
generic message), keep the common body. The inference front sends replies itself; the routed FastAPI app registers
:func:`error_response` once, for everything its routes raise.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, NamedTuple

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route

from modelport.errors import (
    MethodNotAllowedError,
    ModelportError,
    NoRouteError,
    PayloadTooLargeError,
    UnauthenticatedError,
    UnavailableError,
)
from modelport.serving.errors import GENERIC_MESSAGE, http_status, public_message

__all__ = [
    "ERROR_HANDLERS",
    "JSON",
    "ErrorBody",
    "ProtocolRoute",
    "Reply",
    "error_body",
    "error_reply",
    "error_response",
    "json_reply",
    "method_not_allowed",
]

log = logging.getLogger("modelport.serving.rest")

JSON = b"application/json"


class Reply(NamedTuple):
    """An HTTP response before it is sent: status, encoded body, content type and extra headers (a named
    tuple: one is made per request, and a frozen dataclass costs twice as much to make)."""

    status: int
    body: bytes
    content_type: bytes = JSON
    headers: tuple[tuple[bytes, bytes], ...] = ()
    chunks: tuple[int, ...] = ()  # a streamed answer's parts ahead of its last one (``HandlerReply.chunks``)
    stream: AsyncIterator[bytes] | None = None  # the bodies that follow ``body``, sent as they come (chunked)

    def response(self) -> Response:
        """The same reply as a Starlette response (for the routed app)."""
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in self.headers}
        return Response(self.body, self.status, headers, media_type=self.content_type.decode() or None)


def json_reply(data: Any, status: int = 200, headers: tuple[tuple[bytes, bytes], ...] = ()) -> Reply:
    """orjson-encoded JSON reply."""
    return Reply(status, orjson.dumps(data), JSON, headers)


ErrorBody = Callable[[ModelportError, int], Reply]
"""Renders an error, given its HTTP status, in a protocol's error body."""


def error_body(error: ModelportError, status: int) -> Reply:
    """``{"error": message}`` (KServe v2, TF Serving), with ``Retry-After`` when the server is busy."""
    headers: tuple[tuple[bytes, bytes], ...] = ()
    if isinstance(error, UnavailableError):
        headers = ((b"retry-after", str(max(1, round(error.retry_after))).encode()),)
    return json_reply({"error": public_message(error)}, status, headers)


class ProtocolRoute(Route):
    """A route of the routed app whose errors are answered in its protocol's own error body."""

    def __init__(self, path: str, endpoint: Callable[..., Any], *, methods: list[str], render: ErrorBody) -> None:
        super().__init__(path, endpoint, methods=methods)
        self.render = render

    def matches(self, scope: Any) -> tuple[Match, Any]:
        """As a Route, naming itself in the scope (FastAPI's router names only its own APIRoutes)."""
        match, child = super().matches(scope)
        return match, ({**child, "route": self} if match is not Match.NONE else child)


def method_not_allowed(allowed: list[str]) -> MethodNotAllowedError:
    """A 405 naming the methods the path takes."""
    return MethodNotAllowedError("Method Not Allowed", tuple(allowed))


def _routing_error(exc: HTTPException) -> ModelportError | None:
    """Starlette's routing 404 and 405 as modelport's errors (so a protocol's route renders them)."""
    if exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        return MethodNotAllowedError(exc.detail, tuple(sorted(m.strip() for m in allowed.split(",") if m.strip())))
    if exc.status_code == 404:
        return NoRouteError(exc.detail)
    return None


def error_reply(exc: BaseException, render: ErrorBody = error_body) -> Reply:
    """The reply to any exception raised while answering a request (or refusing it, as auth does)."""
    if isinstance(exc, ModelportError):
        return _modelport_error(exc, render)
    if isinstance(exc, HTTPException):  # routing: a path no route matches, a wrong method
        routing = _routing_error(exc)
        if routing is not None:
            return _modelport_error(routing, render)
        extra = tuple((k.lower().encode(), v.encode()) for k, v in (exc.headers or {}).items())
        return json_reply({"error": exc.detail}, exc.status_code, extra)
    log.error("unhandled error", exc_info=exc)
    return json_reply({"error": GENERIC_MESSAGE}, 500)


def _modelport_error(error: ModelportError, render: ErrorBody) -> Reply:
    reply = render(error, http_status(error))
    extra: tuple[tuple[bytes, bytes], ...] = ()
    if isinstance(error, PayloadTooLargeError):
        extra = ((b"connection", b"close"),)  # the rest of an oversized body is not read to keep it alive
    if isinstance(error, UnauthenticatedError):
        extra = ((b"www-authenticate", b'Bearer realm="modelport"'),)
    if isinstance(error, MethodNotAllowedError) and error.allowed:
        extra = ((b"allow", ", ".join(error.allowed).encode()),)
    return Reply(reply.status, reply.body, reply.content_type, reply.headers + extra) if extra else reply


async def error_response(request: Request, exc: Exception) -> Response:
    """The routed app's handler: the route's protocol picks the error body."""
    route = request.scope.get("route")
    return error_reply(exc, route.render if isinstance(route, ProtocolRoute) else error_body).response()


# Registered once, on the routed FastAPI app (the inference front maps its own errors with error_reply).
# Exception goes to Starlette's outermost middleware (500s).
ERROR_HANDLERS: dict[Any, Callable[[Request, Exception], Any]] = {
    ModelportError: error_response,
    HTTPException: error_response,
    Exception: error_response,
}
