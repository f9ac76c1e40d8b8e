"""OpenTelemetry traces, opt-in; a no-op behind one boolean when off.

Tracing is on when the server is started with ``--tracing`` (``MODELPORT_TRACING=true``), or when the
standard variables ask for traces: ``OTEL_TRACES_EXPORTER`` set to anything but ``none``, or an OTLP endpoint
(``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``), unless started with ``--no-tracing``
(``MODELPORT_TRACING=false``). ``OTEL_SDK_DISABLED=true`` turns it
off whatever else is set. When it is off, ``ENABLED`` is False, neither the OpenTelemetry SDK nor an exporter is
imported, and the hooks below return at once: callers on the hot path test ``tracing.ENABLED`` first.

When it is on, :mod:`modelport.serving.tracing_otel` does the work, configured by the standard variables: the
SDK's sampler and ids in this process (a standard sampler decided without the SDK's objects:
:mod:`modelport.serving.tracing_sampling`), and in an exporter process beside it
(:mod:`modelport.serving.tracing_process`), fed span records, OTLP encoded from them
(:mod:`modelport.serving.tracing_otlp`) and sent by the SDK's OTLP exporters (gRPC or HTTP/protobuf):

* one SERVER span per HTTP request (``serving/front.py``) and per unary gRPC call (an interceptor), the child
  of the W3C ``traceparent``/``tracestate`` the client sent; the response carries its own ``traceparent``
  (an HTTP header; gRPC trailing metadata);
* under it, ``validate`` (the manifest check), ``queue`` (enqueued until its batch started) and whatever the
  processors wrap in :func:`span` (``preprocess``, ``postprocess``);
* one ``batch`` span per batch run, linked to every sampled request span it served (the child of the first).

``OTEL_PYTHON_EXCLUDED_URLS`` (OpenTelemetry's Python instrumentations' variable: comma-separated regular
expressions, each searched in the request's path) leaves matching HTTP requests untraced: no span, no
``traceparent`` on the response; e.g. ``OTEL_PYTHON_EXCLUDED_URLS="health,^/ping$,^/metrics$"`` for the probes.
``OTEL_PYTHON_GRPC_EXCLUDED_SERVICES`` (the gRPC instrumentation's: comma-separated full service names) does the
same for gRPC calls, e.g. ``grpc.health.v1.Health`` for the gRPC health probes.

The sampler decides once per request; an unsampled one costs its ids and its ``traceparent``, nothing more. A
sampled one costs a few tuples here; encoding and exporting them cost the exporter process.

Attributes: ``modelport.model``, ``modelport.version``, ``modelport.protocol``, ``modelport.outcome``,
``modelport.batch.size`` (rows), ``modelport.batch.requests``, ``modelport.request_id``, and the semantic
conventions' ``http.*`` / ``rpc.*``. Log records get ``trace_id`` (:class:`TraceIdFilter`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from modelport.errors import DependencyError, InvalidArgumentError

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

    from modelport.serving.settings import ServerSettings
    from modelport.serving.tracing_otel import HttpSpan, OtelTracing, RequestTrace

__all__ = [
    "ENABLED",
    "TraceIdFilter",
    "annotate",
    "attach",
    "configure",
    "detach",
    "enqueued",
    "flush",
    "grpc_interceptor",
    "http_exchange",
    "http_request",
    "http_route",
    "outcome",
    "record_batch",
    "shutdown",
    "span",
    "validation",
    "wanted",
]

ENABLED = False
"""Whether tracing is on in this process: the one check the hot path makes."""

_active: OtelTracing | None = None
_excluded: re.Pattern[str] | None = None  # OTEL_PYTHON_EXCLUDED_URLS
_excluded_services: frozenset[str] = frozenset()  # OTEL_PYTHON_GRPC_EXCLUDED_SERVICES
_NULL = contextlib.nullcontext()
_TRUE = ("1", "true", "yes", "on")

Send = Callable[[dict[str, Any]], Awaitable[None]]


def wanted(settings: ServerSettings, environ: Mapping[str, str] = os.environ) -> bool:
    """Whether ``settings`` and the ``OTEL_*`` variables ask for traces (the rule in this module's docstring)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() in _TRUE:
        return False
    if settings.tracing is not None:  # --tracing / --no-tracing (MODELPORT_TRACING) decide
        return settings.tracing
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return bool(environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def configure(
    settings: ServerSettings, exporter: SpanExporter | None = None, environ: Mapping[str, str] = os.environ
) -> bool:
    """Turn tracing on if :func:`wanted` (or an ``exporter`` is given: tests); returns whether it is on.

    Without ``exporter``, the exporters come from ``OTEL_TRACES_EXPORTER`` (otlp, console, none) and the OTLP
    protocol from ``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`` / ``OTEL_EXPORTER_OTLP_PROTOCOL``."""
    global ENABLED, _active, _excluded, _excluded_services
    if exporter is None and not wanted(settings, environ):
        return False
    excluded = _excluded_paths(environ.get("OTEL_PYTHON_EXCLUDED_URLS", ""))
    shutdown()
    try:
        from modelport.serving import tracing_otel
    except ImportError as exc:
        needs = "pip install 'modelport[tracing]'"
        raise DependencyError(f"tracing needs the OpenTelemetry SDK: {needs} ({exc})") from None
    _active = tracing_otel.start(exporter, environ)
    _excluded = excluded
    services = environ.get("OTEL_PYTHON_GRPC_EXCLUDED_SERVICES", "").split(",")
    _excluded_services = frozenset(s.strip().lstrip("/") for s in services if s.strip())
    ENABLED = True
    return True


def _excluded_paths(patterns: str) -> re.Pattern[str] | None:
    """``OTEL_PYTHON_EXCLUDED_URLS`` (comma-separated regular expressions) as one search; None when empty."""
    parts = [p.strip() for p in patterns.split(",") if p.strip()]
    try:
        return re.compile("|".join(f"(?:{p})" for p in parts)) if parts else None
    except re.error as exc:
        raise InvalidArgumentError(
            f"OTEL_PYTHON_EXCLUDED_URLS={patterns!r}: not a list of regular expressions: {exc}"
        ) from None


def flush(timeout_s: float = 10.0) -> bool:
    """Export every finished span now (tests; a no-op when off): whether they were. Takes at most ``timeout_s``
    and no longer than the exports do: an unreachable collector ends it once its export fails (within the
    exporter's ``OTEL_EXPORTER_OTLP_TIMEOUT`` and ``OTEL_BSP_EXPORT_TIMEOUT``)."""
    return _active.flush(timeout_s) if _active is not None else True


def shutdown() -> None:
    """Flush the spans still queued and turn tracing off (the server calls it once it has drained)."""
    global ENABLED, _active
    active, _active, ENABLED = _active, None, False
    if active is not None:
        active.shutdown()


def attach(loop: asyncio.AbstractEventLoop) -> None:
    """Ship the spans from ``loop`` (the server's event loop; called on it) instead of a thread of their own, until
    :func:`detach` (called on it before it stops); a no-op when off."""
    if (active := _active) is not None:
        active.recorder.attach(loop)


def detach() -> None:
    """Stop shipping the spans from the event loop :func:`attach` named (what is left goes at :func:`shutdown`)."""
    if (active := _active) is not None:
        active.recorder.detach()


def span(name: str, **attributes: str | int | float | bool) -> contextlib.AbstractContextManager[object]:
    """A child span of the current request's, e.g. ``with tracing.span("preprocess", step="resize"):`` around a
    processor; a no-op when tracing is off or the current request is not sampled. Made when the block ends;
    spans opened inside it are its siblings, not its children."""
    if (active := _active) is None:  # (each read of a global: a dict lookup in the compiled module too)
        return _NULL
    return active.span(name, attributes) or _NULL


def validation() -> contextlib.AbstractContextManager[object] | None:
    """The current request's ``validate`` span, to run its validation in (``with``; a second one is a span like
    :func:`span`'s), or None when tracing is off or the request is not sampled: the caller then validates
    without one (a no-op context manager's ``__enter__`` and ``__exit__`` ran as Python code on every request
    that was not sampled: ~2.5k of the ~20k instructions 1% sampling added to a request)."""
    return active.validation() if (active := _active) is not None else None


def annotate(model: str, version: str, protocol: str) -> None:
    """Name the model version and protocol on the current request's span."""
    if (active := _active) is not None:
        active.annotate(model, version, protocol)


def outcome(code: str) -> None:
    """Record the request's outcome (``success`` or an error code) on its span."""
    if (active := _active) is not None:
        active.outcome(code)


def enqueued() -> RequestTrace | None:
    """What the batcher keeps of a request it queues: its span context and when (None: not sampled, or off)."""
    return active.enqueued() if (active := _active) is not None else None


def record_batch(traces: Sequence[RequestTrace | None], rows: int, seconds: float, runs: int, failed: bool) -> None:
    """A batch that ran for ``seconds`` (ending now): its span, linked to its sampled requests, and their
    ``queue`` spans (enqueued until the batch started)."""
    if (active := _active) is not None:
        active.record_batch(traces, rows, seconds, runs, failed)


def http_request(scope: dict[str, Any], send: Send | None) -> HttpSpan | None:
    """Open the HTTP request's SERVER span (None when off): answer through its ``send``, which adds the response's
    ``traceparent`` header (or, ``send`` None, add its ``answered(status)`` headers to a response written whole),
    then call its ``end()``, in the same context (a ``finally``)."""
    if (active := _active) is None or (_excluded is not None and _excluded.search(scope["path"])):
        return None
    return active.http_exchange(scope["method"], scope["path"], scope["headers"], scope, send)


def http_exchange(method: str, path: str, headers: list[tuple[bytes, bytes]]) -> HttpSpan | None:
    """:func:`http_request` for a request read without an ASGI scope and answered whole in an asyncio task of its
    own (``serving/httpproto.py``): add its ``answered(status)`` headers to the response, then call its
    ``finish()`` (the span stays current in the task's context, which ends with the task)."""
    if (active := _active) is None or (_excluded is not None and _excluded.search(path)):
        return None
    return active.http_exchange(method, path, headers, None, None)


def http_route(template: str) -> None:
    """Name the current HTTP span after the route template it matched (``POST /v2/models/{model}/infer``)."""
    if (active := _active) is not None:
        active.http_route(template)


def grpc_interceptor() -> Any:
    """The gRPC server interceptor that opens each unary call's SERVER span, but for the services
    ``OTEL_PYTHON_GRPC_EXCLUDED_SERVICES`` names (None when off)."""
    if _active is None:
        return None
    from modelport.serving.tracing_grpc import Interceptor

    return Interceptor(_active, _excluded_services)


class TraceIdFilter(logging.Filter):
    """Adds ``record.trace_id``: the current span's trace id (32 hex digits), or ``-`` outside a traced request."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.trace_id = active.trace_id() if (active := _active) is not None else "-"
        return True
