"""The gRPC side of :mod:`modelport.serving.tracing_otel`: the server interceptor that opens each unary call's
SERVER span. Kept out of the compiled hot path (``native.py``): gRPC's asyncio server calls what it is given
from Cython, and a compiled coroutine handed to it crashed the process; its own C core costs far more than
this wrapper anyway."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from opentelemetry.trace import SpanKind

from modelport.serving.tracing_otel import CURRENT, ERROR, OK, OtelTracing, RequestSpan, Status
from modelport.serving.tracing_records import Attributes

__all__ = ["Interceptor", "traced_unary"]

# gRPC codes that are the server's failure, not the client's (the semantic conventions' list for SERVER spans)
_GRPC_SERVER_ERRORS = frozenset({2, 4, 12, 13, 14, 15})


def traced_unary(
    tracing: OtelTracing, behaviour: Callable[[Any, Any], Awaitable[Any]], method: str
) -> Callable[..., Any]:
    """``behaviour`` inside a SERVER span, whose ``traceparent`` goes out in the trailing metadata."""
    name = method.lstrip("/")
    service, _, rpc = name.rpartition("/")
    base: Attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": rpc}

    async def call(request: Any, context: Any) -> Any:
        fields = tracing.fields
        carrier = {k: v for k, v in (context.invocation_metadata() or ()) if k in fields and isinstance(v, str)}
        span = tracing.begin(name, SpanKind.SERVER, carrier, base)
        token = CURRENT.set(span)
        context.set_trailing_metadata(span.metadata())
        cancelled = False
        try:  # an abort raises: _finished judges its code
            return await behaviour(request, context)
        except asyncio.CancelledError:  # the client cancelled the call (or its deadline passed): no status set
            cancelled = True
            raise
        finally:
            CURRENT.reset(token)
            if isinstance(span, RequestSpan):
                tracing.end(span, _finished(span, context, cancelled))

    return call


class Interceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Wraps each unary-unary handler in :func:`traced_unary` (streams, and the methods of the ``excluded``
    services, are left as they are)."""

    def __init__(self, tracing: OtelTracing, excluded: frozenset[str] = frozenset()) -> None:
        self._tracing = tracing
        self._excluded = excluded
        self._last: dict[str, tuple[Any, Any]] = {}  # per method: the handler last wrapped, and its wrapper

    async def intercept_service(self, continuation: Callable[[Any], Awaitable[Any]], details: Any) -> Any:
        handler = await continuation(details)
        if handler is None or handler.request_streaming or handler.response_streaming:
            return handler
        if self._excluded and details.method.lstrip("/").rpartition("/")[0] in self._excluded:
            return handler
        last = self._last.get(details.method)
        if last is None or last[0] is not handler:  # the handler differs for a refused call (authentication)
            wrapped = grpc.unary_unary_rpc_method_handler(
                traced_unary(self._tracing, handler.unary_unary, details.method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
            last = self._last[details.method] = (handler, wrapped)
        return last[1]


def _finished(request: RequestSpan, context: Any, cancelled: bool = False) -> Status:
    """The call's status code (an abort has set it; None means OK, or CANCELLED for a ``cancelled`` call); the
    span's status."""
    found = context.code()
    if found is None and cancelled:
        found = grpc.StatusCode.CANCELLED
    code = 0 if found is None else int(found.value[0] if isinstance(found, grpc.StatusCode) else found)
    request.set_attribute("rpc.grpc.status_code", code)
    return (ERROR, f"gRPC status {code}") if code in _GRPC_SERVER_ERRORS else OK
