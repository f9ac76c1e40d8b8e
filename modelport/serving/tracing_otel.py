"""The OpenTelemetry side of :mod:`modelport.serving.tracing`, imported only once tracing is on.

Leans on the SDK for configuration: the sampler comes from ``OTEL_TRACES_SAMPLER``/``_ARG`` (``TracerProvider``
reads them), the resource from ``OTEL_SERVICE_NAME``/``OTEL_RESOURCE_ATTRIBUTES`` (``Resource.create``; the
service is ``modelport`` unless they name it), the batching from ``OTEL_BSP_*`` (``BatchSpanProcessor``), the
exporter's endpoint, headers, TLS and timeout from ``OTEL_EXPORTER_OTLP_*``, and what a request carries in from
``OTEL_PROPAGATORS`` (default W3C trace context and baggage). What goes out on a response is the W3C
``traceparent`` (and ``tracestate``) only.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from modelport._version import __version__
from modelport.errors import InvalidArgumentError
from modelport.serving.requestid import REQUEST_ID

__all__ = ["OtelTracing", "RequestTrace", "exporters_from_env"]

Send = Callable[[dict[str, Any]], Awaitable[None]]
_NULL = nullcontext()
# gRPC codes that are the server's failure, not the client's (the semantic conventions' list for SERVER spans)
_GRPC_SERVER_ERRORS = frozenset({2, 4, 12, 13, 14, 15})


@dataclass(frozen=True, slots=True)
class RequestTrace:
    """A sampled request as its batch sees it: its context (the parent of its ``queue`` span), its span
    context (what the batch span links to), when it was queued, and its model version."""

    context: otel_context.Context
    span_context: trace.SpanContext
    enqueued_ns: int
    model: AttributeValue | None
    version: AttributeValue | None


def exporters_from_env(environ: Mapping[str, str]) -> list[SpanExporter]:
    """The exporters ``OTEL_TRACES_EXPORTER`` names (default ``otlp``; ``console``; ``none``: none)."""
    names = [n.strip().lower() for n in environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",") if n.strip()]
    exporters: list[SpanExporter] = []
    for name in names:
        if name == "otlp":
            exporters.append(_otlp_exporter(environ))
        elif name == "console":
            exporters.append(ConsoleSpanExporter())
        elif name != "none":
            raise InvalidArgumentError(f"OTEL_TRACES_EXPORTER={name}: modelport exports to otlp, console or none")
    return exporters


def _otlp_exporter(environ: Mapping[str, str]) -> SpanExporter:
    """OTLP over gRPC or HTTP/protobuf (the default, as the specification says), by the protocol variables."""
    protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
    protocol = (protocol or "http/protobuf").strip().lower()
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        return GrpcExporter()
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

        return HttpExporter()
    raise InvalidArgumentError(f"OTLP protocol {protocol!r}: modelport exports over grpc or http/protobuf")


def _resource() -> Resource:
    """The SDK's resource (environment included), named ``modelport`` with its version unless it says otherwise."""
    resource = Resource.create()
    defaults: dict[str, AttributeValue] = {}
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        defaults["service.name"] = "modelport"
    if "service.version" not in resource.attributes:
        defaults["service.version"] = __version__
    return resource.merge(Resource(defaults)) if defaults else resource


class OtelTracing:
    """A tracer provider with a batch span processor per exporter, and the spans the server makes."""

    def __init__(self, exporters: Sequence[SpanExporter]) -> None:
        self.provider = TracerProvider(resource=_resource())  # sampler: OTEL_TRACES_SAMPLER(_ARG)
        for exporter in exporters:
            self.provider.add_span_processor(BatchSpanProcessor(exporter))
        self.tracer = self.provider.get_tracer("modelport", __version__)

    def flush(self, timeout_s: float) -> None:
        """Export the finished spans now."""
        self.provider.force_flush(int(timeout_s * 1000))

    def shutdown(self) -> None:
        """Flush and stop the processors."""
        self.provider.shutdown()

    def child(self, name: str, attributes: Mapping[str, AttributeValue]) -> AbstractContextManager[object]:
        """A span under the current one, when that one is sampled."""
        if not trace.get_current_span().is_recording():
            return _NULL
        return _Current(self.tracer.start_span(name, attributes=attributes))

    def annotate(self, model: str, version: str, protocol: str) -> None:
        """The model version and protocol, on the current span."""
        span = trace.get_current_span()
        if span.is_recording():
            span.set_attributes(
                {"modelport.model": model, "modelport.version": version, "modelport.protocol": protocol}
            )

    def outcome(self, code: str) -> None:
        """``success`` or the error code, on the current span."""
        trace.get_current_span().set_attribute("modelport.outcome", code)

    def trace_id(self) -> str:
        """The current trace id as 32 hex digits, or ``-``."""
        found = trace.get_current_span().get_span_context()
        return format(found.trace_id, "032x") if found.is_valid else "-"

    def enqueued(self) -> RequestTrace | None:
        """The current request as its batch will see it (None when it is not sampled)."""
        span = trace.get_current_span()
        if not span.is_recording():
            return None
        attributes: Mapping[str, AttributeValue] = getattr(span, "attributes", None) or {}
        return RequestTrace(
            otel_context.get_current(),
            span.get_span_context(),
            time.time_ns(),
            attributes.get("modelport.model"),
            attributes.get("modelport.version"),
        )

    def record_batch(
        self, traces: Sequence[RequestTrace | None], rows: int, seconds: float, runs: int, failed: bool
    ) -> None:
        """The ``queue`` span of each sampled request, and the ``batch`` span (the child of the first, linked to
        all of them); nothing when none of its requests is sampled."""
        sampled = [t for t in traces if t is not None]
        if not sampled:
            return
        end = time.time_ns()
        start = end - int(seconds * 1e9)
        sizes = {"modelport.batch.size": rows, "modelport.batch.requests": len(traces)}
        for request in sampled:
            queued = self.tracer.start_span("queue", request.context, attributes=sizes, start_time=request.enqueued_ns)
            queued.end(end_time=max(start, request.enqueued_ns))
        first = sampled[0]
        attributes: dict[str, AttributeValue] = {**sizes, "modelport.batch.runs": runs}
        attributes["modelport.batch.failed"] = failed
        if first.model is not None and first.version is not None:
            attributes.update({"modelport.model": first.model, "modelport.version": first.version})
        links = [Link(t.span_context) for t in sampled]
        batch = self.tracer.start_span("batch", first.context, attributes=attributes, links=links, start_time=start)
        if failed:
            batch.set_status(Status(StatusCode.ERROR, "a request of the batch failed"))
        batch.end(end_time=end)

    async def http_server(self, scope: dict[str, Any], send: Send, answer: Callable[[Send], Awaitable[None]]) -> None:
        """The HTTP request's SERVER span around ``answer``, named by its route once known.

        Made with ``start_span`` and an explicit attach (no generator-based context manager) and the outgoing
        ``traceparent`` formatted here: an unsampled request pays for little more than its ids."""
        method = scope["method"]
        parent = propagate.extract({k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]})
        attributes = {"http.request.method": method, "url.path": scope["path"]}
        attributes["modelport.request_id"] = REQUEST_ID.get()
        span = self.tracer.start_span(method, parent, SpanKind.SERVER, attributes)
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        stamp = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in _outgoing(span).items()]
        status = 0

        async def traced_send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), *stamp]
            await send(message)

        try:
            await answer(traced_send)
        finally:
            _http_finished(span, scope, status)
            span.end()
            otel_context.detach(token)

    def http_route(self, template: str) -> None:
        """Name the current SERVER span ``METHOD template``."""
        span = trace.get_current_span()
        if span.is_recording():
            method = str(getattr(span, "attributes", {}).get("http.request.method", ""))
            span.update_name(f"{method} {template}")
            span.set_attribute("http.route", template)

    def interceptor(self) -> grpc.aio.ServerInterceptor:
        """The gRPC interceptor of this tracer."""
        return _Interceptor(self)

    def traced_unary(self, behaviour: Callable[[Any, Any], Awaitable[Any]], method: str) -> Callable[..., Any]:
        """``behaviour`` inside a SERVER span, whose ``traceparent`` goes out in the trailing metadata."""
        name = method.lstrip("/")
        service, _, rpc = name.rpartition("/")
        base = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": rpc}

        async def call(request: Any, context: Any) -> Any:
            carrier = {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
            with self.tracer.start_as_current_span(
                name,
                propagate.extract(carrier),
                SpanKind.SERVER,
                base,
                record_exception=False,
                set_status_on_exception=False,
            ) as span:  # an abort raises: _grpc_finished judges its code
                context.set_trailing_metadata(tuple(_outgoing(span).items()))
                try:
                    return await behaviour(request, context)
                finally:
                    _grpc_finished(span, context)

        return call


class _Interceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Wraps each unary-unary handler in :meth:`OtelTracing.traced_unary` (streams are left as they are)."""

    def __init__(self, tracing: OtelTracing) -> None:
        self._tracing = tracing
        self._last: dict[str, tuple[Any, Any]] = {}  # per method: the handler last wrapped, and its wrapper

    async def intercept_service(self, continuation: Callable[[Any], Awaitable[Any]], details: Any) -> Any:
        handler = await continuation(details)
        if handler is None or handler.request_streaming or handler.response_streaming:
            return handler
        last = self._last.get(details.method)
        if last is None or last[0] is not handler:  # the handler differs for a refused call (authentication)
            wrapped = grpc.unary_unary_rpc_method_handler(
                self._tracing.traced_unary(handler.unary_unary, details.method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
            last = self._last[details.method] = (handler, wrapped)
        return last[1]


class _Current:
    """``span`` as the current span until the block ends, then ended (an exception marks it failed)."""

    def __init__(self, span: trace.Span) -> None:
        self.span = span
        self.token: object = None

    def __enter__(self) -> trace.Span:
        self.token = otel_context.attach(trace.set_span_in_context(self.span))
        return self.span

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, _: object) -> None:
        if error is not None:
            self.span.record_exception(error)
            self.span.set_status(Status(StatusCode.ERROR, f"{kind.__name__ if kind else ''}: {error}"))
        self.span.end()
        otel_context.detach(self.token)  # type: ignore[arg-type]


def _outgoing(span: trace.Span) -> dict[str, str]:
    """The W3C ``traceparent`` (and ``tracestate``) that names ``span``, for the response."""
    found = span.get_span_context()
    headers = {"traceparent": f"00-{found.trace_id:032x}-{found.span_id:016x}-{found.trace_flags:02x}"}
    if found.trace_state:
        headers["tracestate"] = found.trace_state.to_header()
    return headers


def _http_finished(span: trace.Span, scope: dict[str, Any], status: int) -> None:
    """Status code, route of the routed app (Starlette leaves it in the scope) and error status."""
    if not span.is_recording():
        return
    path = getattr(scope.get("route"), "path", None)
    if isinstance(path, str):
        span.update_name(f"{scope['method']} {path}")
        span.set_attribute("http.route", path)
    if status:
        span.set_attribute("http.response.status_code", status)
    if status >= 500 or not status:
        span.set_status(Status(StatusCode.ERROR, f"HTTP {status}" if status else "no response"))


def _grpc_finished(span: trace.Span, context: Any) -> None:
    """The call's status code (an abort has set it; None means OK) and error status."""
    if not span.is_recording():
        return
    found = context.code()
    code = 0 if found is None else int(found.value[0] if isinstance(found, grpc.StatusCode) else found)
    span.set_attribute("rpc.grpc.status_code", code)
    if code in _GRPC_SERVER_ERRORS:
        span.set_status(Status(StatusCode.ERROR, f"gRPC status {code}"))
