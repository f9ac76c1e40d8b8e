"""The one HTTP error handler: every error of the HTTP port becomes a response here.

The status comes from ``serving/errors.py``; the body is ``{"error": message}`` unless the route
that failed belongs to a protocol with its own error body (TorchServe's), which its
:class:`ProtocolRoute` names. Routing errors (404, 405) and unexpected exceptions (500, traceback
logged, generic message) keep the common body.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from modelport.errors import ModelportError, PayloadTooLargeError, UnauthenticatedError, UnavailableError
from modelport.serving.errors import GENERIC_MESSAGE, http_status, public_message
from modelport.serving.httputil import json_response

__all__ = ["ERROR_HANDLERS", "ErrorBody", "ProtocolRoute", "error_body", "error_response"]

log = logging.getLogger("modelport.serving.rest")

ErrorBody = Callable[[ModelportError, int], Response]
"""Renders an error, given its HTTP status, in a protocol's error body."""


def error_body(error: ModelportError, status: int) -> Response:
    """``{"error": message}`` (KServe v2, TF Serving), with ``Retry-After`` when the server is busy."""
    headers = {"Retry-After": str(max(1, round(error.retry_after)))} if isinstance(error, UnavailableError) else None
    return json_response({"error": public_message(error)}, status, headers)


class ProtocolRoute(Route):
    """A route whose errors are answered in its protocol's own error body."""

    def __init__(self, path: str, endpoint: Callable[..., Any], *, methods: list[str], render: ErrorBody) -> None:
        super().__init__(path, endpoint, methods=methods)
        self.render = render


async def error_response(request: Request, exc: Exception) -> Response:
    """The response to any exception raised while answering ``request`` (or refusing it, as auth does)."""
    if isinstance(exc, ModelportError):
        return _modelport_error(request, exc)
    if isinstance(exc, HTTPException):  # routing: a path no route matches, a wrong method
        return json_response({"error": exc.detail}, exc.status_code, dict(exc.headers or {}))
    log.exception("unhandled error")
    return json_response({"error": GENERIC_MESSAGE}, 500)


def _modelport_error(request: Request, error: ModelportError) -> Response:
    route = request.scope.get("route")
    render = route.render if isinstance(route, ProtocolRoute) else error_body
    response = render(error, http_status(error))
    if isinstance(error, PayloadTooLargeError):
        response.headers["Connection"] = "close"  # the rest of an oversized body is not read to keep it alive
    if isinstance(error, UnauthenticatedError):
        response.headers["WWW-Authenticate"] = 'Bearer realm="modelport"'
    return response


# Both ASGI apps of the HTTP port (the Starlette front and FastAPI behind it) take this one table: each
# app catches what its own routes raise. Exception goes to Starlette's outermost middleware (500s).
ERROR_HANDLERS: dict[Any, Callable[[Request, Exception], Any]] = {
    ModelportError: error_response,
    HTTPException: error_response,
    Exception: error_response,
}
