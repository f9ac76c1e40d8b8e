"""The OpenTelemetry side of :mod:`modelport.serving.tracing`, imported only once tracing is on.

Leans on the SDK for configuration: the sampler comes from ``OTEL_TRACES_SAMPLER``/``_ARG`` (``TracerProvider``
reads them), the resource from ``OTEL_SERVICE_NAME``/``OTEL_RESOURCE_ATTRIBUTES`` (``Resource.create``; the
service is ``modelport`` unless they name it), the batching from ``OTEL_BSP_*`` (``BatchSpanProcessor``), the
exporter's endpoint, headers, TLS and timeout from ``OTEL_EXPORTER_OTLP_*``, and what a request carries in from
``OTEL_PROPAGATORS`` (default W3C trace context and baggage). What goes out on a response is the W3C
``traceparent`` (and ``tracestate``) only.

Cheap by construction (an overhead-bound model serves a request in ~100 µs; an SDK span costs ~15 µs to make
and as much again to encode): the configured sampler decides once per request, before anything is made; an
unsampled request gets ids and its ``traceparent`` (flags as the SDK would set them) and nothing else. A sampled
request's spans are not live SDK spans but their finished form (``ReadableSpan``), built with explicit times
when each ends and handed straight to the batch span processors. The request in flight is this module's own
context variable, not the OpenTelemetry context: spans made by other instrumentation do not nest under it.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import Decision
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.util.types import AttributeValue

from modelport._version import __version__
from modelport.errors import InvalidArgumentError
from modelport.serving.requestid import REQUEST_ID

__all__ = ["CURRENT", "OtelTracing", "RequestSpan", "RequestTrace", "exporters_from_env"]

Send = Callable[[dict[str, Any]], Awaitable[None]]
Attributes = dict[str, AttributeValue]
# gRPC codes that are the server's failure, not the client's (the semantic conventions' list for SERVER spans)
_GRPC_SERVER_ERRORS = frozenset({2, 4, 12, 13, 14, 15})
CURRENT: ContextVar[RequestSpan | None] = ContextVar("modelport_request_span", default=None)
"""The request being served (its span), set by :meth:`OtelTracing.http_server` and the gRPC interceptor."""
_OK = Status(StatusCode.UNSET)
_NO_PARENT = otel_context.Context()


@dataclass(slots=True)
class RequestSpan:
    """A request's SERVER span while it is served: its ids, and (sampled only) what its span will say.

    Mutable by nature: the route, model and outcome are learnt while the request runs."""

    context: SpanContext
    sampled: bool
    parent: SpanContext | None = None
    name: str = ""
    kind: SpanKind = SpanKind.SERVER
    start_ns: int = 0
    attributes: Attributes = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RequestTrace:
    """A sampled request as its batch sees it: its span (the parent of its ``queue`` span, what the batch
    span links to) and when it was queued."""

    request: RequestSpan
    enqueued_ns: int


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


class _Resource(Resource):
    """A resource whose hash is computed once: the OTLP encoder groups each span by its resource, and
    ``Resource.__hash__`` is a sorted JSON dump of the attributes (~4 µs a span). Immutable, so it holds."""

    def __init__(self, resource: Resource) -> None:
        super().__init__(resource.attributes, resource.schema_url)
        self._hash = super().__hash__()

    def __hash__(self) -> int:
        return self._hash


def _resource() -> Resource:
    """The SDK's resource (environment included), named ``modelport`` with its version unless it says otherwise."""
    resource = Resource.create()
    defaults: dict[str, AttributeValue] = {}
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        defaults["service.name"] = "modelport"
    if "service.version" not in resource.attributes:
        defaults["service.version"] = __version__
    return _Resource(resource.merge(Resource(defaults)) if defaults else resource)


class OtelTracing:
    """The configured sampler, ids and resource of a tracer provider, and batch span processors fed directly."""

    def __init__(self, exporters: Sequence[SpanExporter]) -> None:
        self.provider = TracerProvider(resource=_resource())  # sampler: OTEL_TRACES_SAMPLER(_ARG)
        # the SDK's sizes (OTEL_BSP_*): exports of 2048 from a 16384-span queue measured slower over OTLP/HTTP
        self.processors = [BatchSpanProcessor(exporter) for exporter in exporters]
        for processor in self.processors:
            self.provider.add_span_processor(processor)  # flushed and shut down with the provider
        self.sampler, self.ids = self.provider.sampler, self.provider.id_generator
        self.resource = self.provider.resource
        self.scope = InstrumentationScope("modelport", __version__)
        # the headers the configured propagators read (OTEL_PROPAGATORS): only those are decoded and extracted
        names = propagate.get_global_textmap().fields
        self.fields: frozenset[str | bytes] = frozenset({*names, *(name.encode("latin-1") for name in names)})

    def flush(self, timeout_s: float) -> None:
        """Export the finished spans now."""
        self.provider.force_flush(int(timeout_s * 1000))

    def shutdown(self) -> None:
        """Flush and stop the processors."""
        self.provider.shutdown()

    def begin(self, name: str, kind: SpanKind, carrier: Mapping[str, str], attributes: Attributes) -> RequestSpan:
        """A request's span under what ``carrier`` names, sampled or not as the sampler decides (as the SDK's
        ``start_span`` would: same ids, flags and trace state); current until :meth:`end`."""
        parent_context, parent = _NO_PARENT, None
        if carrier:
            parent_context = propagate.extract(carrier)
            parent = trace.get_current_span(parent_context).get_span_context()
        if parent is not None and parent.is_valid:
            trace_id, random_id = parent.trace_id, parent.trace_flags.random_trace_id
        else:
            parent, trace_id, random_id = None, self.ids.generate_trace_id(), self.ids.is_trace_id_random()
        decision = self.sampler.should_sample(parent_context, trace_id, name, kind, attributes)
        sampled = decision.decision is Decision.RECORD_AND_SAMPLE
        flags = (TraceFlags.SAMPLED if sampled else 0) | (TraceFlags.RANDOM_TRACE_ID if random_id else 0)
        ids = SpanContext(trace_id, self.ids.generate_span_id(), False, TraceFlags(flags), decision.trace_state)
        if not sampled:
            return RequestSpan(ids, False)
        return RequestSpan(ids, True, parent, name, kind, time.time_ns(), {**attributes, **decision.attributes})

    def end(self, request: RequestSpan, status: Status = _OK) -> None:
        """Export ``request``'s span if it is sampled, ending now."""
        if request.sampled:
            self._emit(
                ReadableSpan(
                    request.name,
                    request.context,
                    request.parent,
                    self.resource,
                    request.attributes,
                    kind=request.kind,
                    status=status,
                    start_time=request.start_ns,
                    end_time=time.time_ns(),
                    instrumentation_scope=self.scope,
                )
            )

    def child(self, parent: RequestSpan, name: str, start_ns: int, end_ns: int, **extra: Any) -> None:
        """A finished span under ``parent`` (sampled), from ``start_ns`` to ``end_ns``."""
        ids = SpanContext(parent.context.trace_id, self.ids.generate_span_id(), False, parent.context.trace_flags)
        self._emit(
            ReadableSpan(
                name,
                ids,
                parent.context,
                self.resource,
                start_time=start_ns,
                end_time=end_ns,
                instrumentation_scope=self.scope,
                **extra,
            )
        )

    def _emit(self, span: ReadableSpan) -> None:
        for processor in self.processors:
            processor.on_end(span)

    def span(self, name: str, attributes: Mapping[str, AttributeValue]) -> _Child | None:
        """A span under the current request while a block runs, when that request is sampled."""
        current = CURRENT.get()
        if current is None or not current.sampled:
            return None
        return _Child(self, current, name, dict(attributes))

    def annotate(self, model: str, version: str, protocol: str) -> None:
        """The model version and protocol, on the current span."""
        current = CURRENT.get()
        if current is not None and current.sampled:
            current.attributes.update(
                {"modelport.model": model, "modelport.version": version, "modelport.protocol": protocol}
            )

    def outcome(self, code: str) -> None:
        """``success`` or the error code, on the current span."""
        current = CURRENT.get()
        if current is not None and current.sampled:
            current.attributes["modelport.outcome"] = code

    def trace_id(self) -> str:
        """The current trace id as 32 hex digits, or ``-``."""
        current = CURRENT.get()
        return format(current.context.trace_id, "032x") if current is not None else "-"

    def enqueued(self) -> RequestTrace | None:
        """The current request as its batch will see it (None when it is not sampled)."""
        current = CURRENT.get()
        if current is None or not current.sampled:
            return None
        return RequestTrace(current, time.time_ns())

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
        sizes: Attributes = {"modelport.batch.size": rows, "modelport.batch.requests": len(traces)}
        for queued in sampled:
            self.child(queued.request, "queue", queued.enqueued_ns, max(start, queued.enqueued_ns), attributes=sizes)
        first = sampled[0].request
        attributes: Attributes = {**sizes, "modelport.batch.runs": runs, "modelport.batch.failed": failed}
        model, version = first.attributes.get("modelport.model"), first.attributes.get("modelport.version")
        if model is not None and version is not None:
            attributes.update({"modelport.model": model, "modelport.version": version})
        links = [Link(t.request.context) for t in sampled]
        status = Status(StatusCode.ERROR, "a request of the batch failed") if failed else _OK
        self.child(first, "batch", start, end, attributes=attributes, links=links, status=status)

    async def http_server(self, scope: dict[str, Any], send: Send, answer: Callable[[Send], Awaitable[None]]) -> None:
        """The HTTP request's SERVER span around ``answer``, named by its route once known."""
        method = scope["method"]
        fields = self.fields
        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"] if k in fields}
        attributes: Attributes = {"http.request.method": method, "url.path": scope["path"]}
        request = self.begin(method, SpanKind.SERVER, carrier, attributes)
        if request.sampled:
            request.attributes["modelport.request_id"] = REQUEST_ID.get()
        token = CURRENT.set(request)
        stamp = [(k.encode(), v.encode()) for k, v in _outgoing(request.context)]
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
            CURRENT.reset(token)
            if request.sampled:
                self.end(request, _http_finished(request, scope, status))

    def http_route(self, template: str) -> None:
        """Name the current SERVER span ``METHOD template``."""
        current = CURRENT.get()
        if current is not None and current.sampled:
            current.name = f"{current.attributes.get('http.request.method', '')} {template}"
            current.attributes["http.route"] = template

    def interceptor(self) -> grpc.aio.ServerInterceptor:
        """The gRPC interceptor of this tracer."""
        return _Interceptor(self)

    def traced_unary(self, behaviour: Callable[[Any, Any], Awaitable[Any]], method: str) -> Callable[..., Any]:
        """``behaviour`` inside a SERVER span, whose ``traceparent`` goes out in the trailing metadata."""
        name = method.lstrip("/")
        service, _, rpc = name.rpartition("/")
        base: Attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": rpc}

        async def call(request: Any, context: Any) -> Any:
            fields = self.fields
            carrier = {k: v for k, v in (context.invocation_metadata() or ()) if k in fields and isinstance(v, str)}
            span = self.begin(name, SpanKind.SERVER, carrier, base)
            token = CURRENT.set(span)
            context.set_trailing_metadata(_outgoing(span.context))
            try:  # an abort raises: _grpc_finished judges its code
                return await behaviour(request, context)
            finally:
                CURRENT.reset(token)
                if span.sampled:
                    self.end(span, _grpc_finished(span, context))

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


class _Child:
    """A span under ``parent`` for the duration of a block, made when the block ends (an exception marks it
    failed). Not current itself: what runs inside is still the request's."""

    __slots__ = ("attributes", "name", "parent", "start_ns", "tracing")

    def __init__(self, tracing: OtelTracing, parent: RequestSpan, name: str, attributes: Attributes) -> None:
        self.tracing, self.parent, self.name, self.attributes = tracing, parent, name, attributes
        self.start_ns = 0

    def __enter__(self) -> _Child:
        self.start_ns = time.time_ns()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, _: object) -> None:
        end, status = time.time_ns(), _OK
        events: tuple[Event, ...] = ()
        if error is not None:
            status = Status(StatusCode.ERROR, f"{kind.__name__ if kind else ''}: {error}")
            events = (_exception_event(error, end),)
        self.tracing.child(
            self.parent, self.name, self.start_ns, end, attributes=self.attributes, status=status, events=events
        )


def _exception_event(error: BaseException, when: int) -> Event:
    """The semantic conventions' ``exception`` event, as ``Span.record_exception`` writes it."""
    attributes: Attributes = {
        "exception.type": type(error).__qualname__,
        "exception.message": str(error),
        "exception.stacktrace": "".join(traceback.format_exception(error)),
        "exception.escaped": False,
    }
    return Event("exception", attributes, when)


def _outgoing(found: SpanContext) -> tuple[tuple[str, str], ...]:
    """The W3C ``traceparent`` (and ``tracestate``) that names a request's span, for the response."""
    parent = ("traceparent", f"00-{found.trace_id:032x}-{found.span_id:016x}-{found.trace_flags:02x}")
    return (parent, ("tracestate", found.trace_state.to_header())) if found.trace_state else (parent,)


def _http_finished(request: RequestSpan, scope: dict[str, Any], status: int) -> Status:
    """Status code, route of the routed app (Starlette leaves it in the scope); the span's status."""
    path = getattr(scope.get("route"), "path", None)
    if isinstance(path, str):
        request.name = f"{scope['method']} {path}"
        request.attributes["http.route"] = path
    if status:
        request.attributes["http.response.status_code"] = status
    if status >= 500 or not status:
        return Status(StatusCode.ERROR, f"HTTP {status}" if status else "no response")
    return _OK


def _grpc_finished(request: RequestSpan, context: Any) -> Status:
    """The call's status code (an abort has set it; None means OK); the span's status."""
    found = context.code()
    code = 0 if found is None else int(found.value[0] if isinstance(found, grpc.StatusCode) else found)
    request.attributes["rpc.grpc.status_code"] = code
    return Status(StatusCode.ERROR, f"gRPC status {code}") if code in _GRPC_SERVER_ERRORS else _OK
