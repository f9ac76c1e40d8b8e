"""Where a sampled request's spans go once made: compact records, shipped in batches to where they are encoded and
exported, configured by the standard variables.

The serving process only makes records (:mod:`~modelport.serving.tracing_records`: plain tuples of ints,
hex-string ids, strings and attribute dicts; a sampled request's own span one flat :data:`Compact` tuple) and
appends them to a :class:`Recorder`, which ships them every few milliseconds (from the server's event loop, or
else a thread of its own) to a :class:`Sink`: :class:`SpanProcessors` in this process (an exporter object given:
tests; the SDK's spans, made from the records), or the exporter process of
:mod:`modelport.serving.tracing_process` (the exporters the variables name), where OTLP is encoded from the
records (:mod:`modelport.serving.tracing_otlp`), off the event loop's core.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from modelport._version import __version__
from modelport.errors import InvalidArgumentError
from modelport.serving.tracing_records import Attributes, Compact, Received, Record, expand

__all__ = [
    "SCOPE",
    "Recorder",
    "Sink",
    "SpanProcessors",
    "exporter_kinds",
    "processors",
    "readable",
    "resource",
]

SCOPE = InstrumentationScope("modelport", __version__)
SHIP_EVERY_S = 0.005  # while requests are traced: records shipped (and freed) while still in the core's caches
SHIP_IDLE_S = 0.05  # the wait after a tick that found nothing to ship (an idle server wakes 20 times a second)
CHUNK = 256  # records per shipment: bounds how long one holds the GIL
MAX_WAITING = 8192  # records waiting to be shipped beyond this are dropped (the exporter does not keep up)
_OK = Status(StatusCode.UNSET)
_log = logging.getLogger(__name__)


def readable(
    record: Received, resource: Resource, ids: IdGenerator, scope: InstrumentationScope = SCOPE
) -> list[ReadableSpan]:
    """The SDK spans ``record`` describes: its own, then its children's (new span ids from ``ids``)."""
    name, kind, trace_id, span_id, flags, state, parent_id, remote, start, end, attributes = record[:11]
    code, description, events, links, children = record[11:]
    trace_flags, trace_state, trace = TraceFlags(flags), _trace_state(state), int(trace_id, 16)
    own_id = int(span_id, 16) if span_id else ids.generate_span_id()
    context = SpanContext(trace, own_id, False, trace_flags, trace_state)
    parent = SpanContext(trace, int(parent_id, 16), remote, trace_flags, trace_state) if parent_id else None
    spans = [
        _span(
            name,
            SpanKind(kind),
            context,
            parent,
            resource,
            scope,
            (start, end, attributes, code, description, events, links),
        )
    ]
    for child in children:
        ids_of = SpanContext(trace, ids.generate_span_id(), False, trace_flags, trace_state)
        spans.append(_span(child[0], SpanKind.INTERNAL, ids_of, context, resource, scope, child[1:]))
    return spans


def _span(
    name: str,
    kind: SpanKind,
    context: SpanContext,
    parent: SpanContext | None,
    resource: Resource,
    scope: InstrumentationScope,
    body: Received,
) -> ReadableSpan:
    start, end, attributes, code, description, events, links = body
    return ReadableSpan(
        name,
        context,
        parent,
        resource,
        attributes,
        events=[Event(*event) for event in events],
        links=[
            Link(SpanContext(int(t, 16), int(s, 16), False, TraceFlags(f), _trace_state(ts))) for t, s, f, ts in links
        ],
        kind=kind,
        status=Status(StatusCode(code), description or None) if code else _OK,
        start_time=start,
        end_time=end,
        instrumentation_scope=scope,
    )


def _trace_state(header: str) -> TraceState | None:
    return TraceState.from_header([header]) if header else None


class Sink(Protocol):
    """Where shipped records go."""

    def write(self, records: Sequence[Received]) -> None: ...

    def flush(self, timeout_s: float) -> bool:
        """Export what it has been given within ``timeout_s``: whether it all went."""
        ...

    def close(self) -> None: ...


class SpanProcessors:
    """Records turned into SDK spans and handed to span processors (batch span processors: they export) here."""

    def __init__(self, targets: Sequence[SpanProcessor], resource: Resource, ids: IdGenerator) -> None:
        self.targets, self.resource, self.ids = tuple(targets), resource, ids

    def write(self, records: Sequence[Received]) -> None:
        if not self.targets:  # OTEL_TRACES_EXPORTER=none: nothing to make
            return
        for record in records:
            for span in readable(expand(record), self.resource, self.ids):
                for target in self.targets:
                    target.on_end(span)

    def flush(self, timeout_s: float) -> bool:
        flushed = [target.force_flush(int(timeout_s * 1000)) for target in self.targets]  # every one, come what may
        return all(flushed)

    def close(self) -> None:
        for target in self.targets:
            target.shutdown()


class Recorder:
    """Takes records from any thread (``append``: a list's own, the cheapest call there is) and ships them to its
    sink every :data:`SHIP_EVERY_S` (every :data:`SHIP_IDLE_S` after a tick with none), in chunks of
    :data:`CHUNK`: from a thread of its own, or, once :meth:`attach` ed to the server's event loop, from a timer
    on that loop (no thread to wake and no GIL to hand over every tick: ``perf`` of the server at 100% sampling
    put ~5% of tracing's cost in those switches). Shipping often is cheaper for the serving core than shipping
    in bulk: the records made in the last few milliseconds (a sampled request's span, its batch's) are still in
    its caches when they are encoded and freed, and their memory is reused hot (``tracing_capacity.py``, MLP at
    c=32, 100% sampling: 65.5 -> 60.4 us of CPU a request against shipping every 50 ms). A sink written to from
    the loop must not block (:class:`~modelport.serving.tracing_process.ExporterProcess` does not)."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        # a sink's writes that may leave bytes waiting (the exporter process's pipe): pumped at every tick
        self._pump: Callable[[], None] | None = getattr(sink, "pump", None)
        self._waiting: list[Record | Compact] = []
        self.append = self._waiting.append
        self.dropped = 0
        self._lock = threading.Lock()  # one shipment at a time: the records reach the sink in order
        self._stop = threading.Event()
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        self._shipper: threading.Thread | None = threading.Thread(target=self._run, name="modelport-spans", daemon=True)
        self._shipper.start()

    def _run(self) -> None:
        delay = SHIP_EVERY_S
        while not self._stop.wait(delay):
            delay = SHIP_EVERY_S if self._waiting else SHIP_IDLE_S
            self.ship()

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Ship from ``loop`` (called on its thread) instead of the shipping thread, until :meth:`detach`."""
        self._end_thread()
        if self._timer is None:
            self._timer = loop.call_later(SHIP_EVERY_S, self._tick, loop)

    def detach(self) -> None:
        """Stop shipping from the event loop (called on its thread, before it stops): what is recorded after is
        shipped by :meth:`flush` or :meth:`close`."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._closed:  # closed from another thread while attached
            return
        delay = SHIP_EVERY_S if self._waiting else SHIP_IDLE_S
        if self._lock.acquire(blocking=False):  # else a flush on another thread is shipping: the next tick
            try:
                self._ship()
            finally:
                self._lock.release()
        self._timer = loop.call_later(delay, self._tick, loop)

    def ship(self) -> None:
        """Hand every waiting record to the sink now (what is beyond :data:`MAX_WAITING` is dropped)."""
        with self._lock:
            self._ship()

    def _ship(self) -> None:
        waiting = self._waiting
        if not waiting:
            if self._pump is not None:
                with contextlib.suppress(OSError):  # a dead exporter process: its next write says so
                    self._pump()
            return
        excess = len(waiting) - MAX_WAITING
        if excess > 0:
            del waiting[:excess]  # each list operation is atomic: appends meanwhile are kept
            self._drop(excess, "the exporter does not keep up")
        while waiting:
            chunk = waiting[:CHUNK]
            del waiting[: len(chunk)]
            try:
                self.sink.write(chunk)
            except Exception as exc:  # a broken exporter never fails the requests it traces
                self._drop(len(chunk), f"the exporter failed: {exc!r}")

    def _drop(self, count: int, why: str) -> None:
        if not self.dropped:  # once: the exporter's own errors are logged where it runs
            _log.warning("tracing: spans dropped (%s); further drops are not logged", why)
        self.dropped += count

    def flush(self, timeout_s: float) -> bool:
        """Ship the waiting records and have the sink export them: whether it did, within ``timeout_s``."""
        with self._lock:  # nothing shipped meanwhile: the sink's flush follows the last records
            self._ship()
            try:
                return self.sink.flush(timeout_s)
            except Exception:  # tracing never fails what it traces
                _log.warning("tracing: the exporter could not flush", exc_info=True)
                return False

    def close(self) -> None:
        """Stop shipping: the records still waiting are shipped, then the sink is closed."""
        self._closed = True
        self._end_thread()
        self.ship()
        self.sink.close()

    def _end_thread(self) -> None:
        if self._shipper is not None:
            self._stop.set()
            self._shipper.join()
            self._shipper = None


def exporter_kinds(environ: Mapping[str, str]) -> list[str]:
    """The exporters ``OTEL_TRACES_EXPORTER`` names (default ``otlp``; ``console``; ``none``: none), OTLP by its
    protocol variables (HTTP/protobuf unless they say ``grpc``): ``otlp-http``, ``otlp-grpc``, ``console``."""
    names = [n.strip().lower() for n in environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",") if n.strip()]
    kinds: list[str] = []
    for name in names:
        if name == "otlp":
            kinds.append(_otlp_kind(environ))
        elif name == "console":
            kinds.append("console")
        elif name != "none":
            raise InvalidArgumentError(f"OTEL_TRACES_EXPORTER={name}: modelport exports to otlp, console or none")
    return kinds


def _otlp_kind(environ: Mapping[str, str]) -> str:
    protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
    protocol = (protocol or "http/protobuf").strip().lower()
    if protocol in ("grpc", "http/protobuf"):
        return "otlp-grpc" if protocol == "grpc" else "otlp-http"
    raise InvalidArgumentError(f"OTLP protocol {protocol!r}: modelport exports over grpc or http/protobuf")


def _exporter(kind: str) -> SpanExporter:
    """One exporter of :func:`exporter_kinds`, configured by the ``OTEL_EXPORTER_OTLP_*`` variables."""
    if kind == "otlp-grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        return GrpcExporter()
    if kind == "otlp-http":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

        return HttpExporter()
    return ConsoleSpanExporter()


def processors(exporters: Sequence[SpanExporter | str]) -> list[SpanProcessor]:
    """A batch span processor (sized by ``OTEL_BSP_*``) per exporter, given or named by its kind."""
    return [BatchSpanProcessor(_exporter(e) if isinstance(e, str) else e) for e in exporters]


class _Resource(Resource):
    """A resource whose hash is computed once: the OTLP encoder groups each span by its resource, and
    ``Resource.__hash__`` is a sorted JSON dump of the attributes (~4 µs a span). Immutable, so it holds."""

    def __init__(self, resource: Resource) -> None:
        super().__init__(resource.attributes, resource.schema_url)
        self._hash = super().__hash__()

    def __hash__(self) -> int:
        return self._hash


def resource() -> Resource:
    """The SDK's resource (``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``), named ``modelport`` with its
    version unless it says otherwise."""
    found = Resource.create()
    defaults: Attributes = {}
    if str(found.attributes.get("service.name", "")).startswith("unknown_service"):
        defaults["service.name"] = "modelport"
    if "service.version" not in found.attributes:
        defaults["service.version"] = __version__
    return _Resource(found.merge(Resource(defaults)) if defaults else found)
