"""Request ids: taken from ``X-Request-ID`` (or made), echoed in the response, attached to log records."""

from __future__ import annotations

import contextvars
import itertools
import logging
import re
import uuid
from typing import Any

__all__ = ["REQUEST_ID", "RequestIdFilter", "RequestIdMiddleware"]

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
_VALID = re.compile(rb"^[A-Za-z0-9._:-]{1,64}$")
# unique per process start, then a counter: a uuid4 per request costs a urandom call (~10 us)
_PREFIX = uuid.uuid4().hex[:12]
_COUNTER = itertools.count(1)


class RequestIdMiddleware:
    """Pure ASGI middleware (no per-request task or body buffering)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope["headers"] if k == b"x-request-id"), b"")
        request_id = given.decode() if _VALID.match(given) else f"{_PREFIX}-{next(_COUNTER):x}"
        token = REQUEST_ID.set(request_id)

        async def send_with_id(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            REQUEST_ID.reset(token)


class RequestIdFilter(logging.Filter):
    """Adds ``record.request_id`` (``-`` outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True
