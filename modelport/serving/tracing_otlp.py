"""OTLP straight from span records, in the exporter process: the ``opentelemetry-proto`` messages (the upb C
backend) made from each :data:`~modelport.serving.tracing_spans.Record`, batched as the SDK's
``BatchSpanProcessor`` batches (``OTEL_BSP_*``), and sent by the SDK's OTLP exporters' own transports, configured
by the ``OTEL_EXPORTER_OTLP_*`` variables (endpoint, headers, timeout, compression, certificates; retries).

The SDK's way (a ``ReadableSpan`` per span, then its encoder) cost ~40 µs of CPU a span here; this, ~12. The
messages are what the SDK's encoder writes for the same spans (flags, trace state, status, links, events).
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource as ResourceMessage
from opentelemetry.proto.trace.v1.trace_pb2 import Span, SpanFlags, Status
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.trace.id_generator import IdGenerator

from modelport.serving.tracing_spans import SCOPE, Attributes, EventRecord, LinkRecord, Record

__all__ = ["Batches", "Encoder", "Payload", "Sender", "senders"]

_LOCAL = SpanFlags.SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK
_REMOTE = _LOCAL | SpanFlags.SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK
_INTERNAL = Span.SpanKind.SPAN_KIND_INTERNAL
_log = logging.getLogger(__name__)
SpanParts = tuple[bytes, bytes, bytes, str, Any, int, Sequence[Any]]
"""A span to be encoded: trace id, span id, parent span id, trace state, kind, flags, and the rest of its record
(name, start, end, attributes, status code and description, events, links)."""


def _value(value: Any) -> AnyValue:
    """An attribute value as the SDK's encoder writes it."""
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, str):
        return AnyValue(string_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, list | tuple):
        return AnyValue(array_value=ArrayValue(values=[_value(v) for v in value]))
    return AnyValue(string_value=str(value))


def _attributes(attributes: Attributes) -> list[KeyValue]:
    return [KeyValue(key=key, value=_value(value)) for key, value in attributes.items()]


_KNOWN_MAX = 4096  # attribute messages kept for reuse; all forgotten at once beyond this


class _Known:
    """Attribute messages made once per distinct key and value: most repeat (model, route, status), and a span
    copies a message it is given for about a quarter of what making one costs."""

    def __init__(self) -> None:
        self._made: dict[tuple[str, type, Any], KeyValue] = {}

    def __call__(self, attributes: Attributes) -> list[KeyValue]:
        made, found = self._made, []
        for key, value in attributes.items():
            known = (key, type(value), value)  # the type: True, 1 and 1.0 are equal keys of a dict
            message = made.get(known) if not isinstance(value, list | tuple) else None
            if message is None:
                message = KeyValue(key=key, value=_value(value))
                if len(made) >= _KNOWN_MAX:
                    made.clear()
                if not isinstance(value, list | tuple):
                    made[known] = message
            found.append(message)
        return found


class Encoder:
    """Records to OTLP spans, and spans to an export request under this process's resource and scope; the span
    ids of a record's children are made here, by ``ids`` (``OTEL_PYTHON_ID_GENERATOR``, as in the server)."""

    def __init__(self, resource: Resource, ids: IdGenerator) -> None:
        self.ids, self.attributes = ids, _Known()
        self.resource = ResourceMessage(attributes=_attributes(dict(resource.attributes)))
        self.resource_schema = resource.schema_url
        self.scope = InstrumentationScope(name=SCOPE.name, version=SCOPE.version or "")

    def spans(self, record: Record) -> list[SpanParts]:
        """The spans of ``record``: its own, then its children's, under it (their ids made, not yet messages)."""
        name, kind, trace_hex, span_hex, _, state, parent_hex, remote, start, end, attributes = record[:11]
        code, description, events, links, children = record[11:]
        trace_id = bytes.fromhex(trace_hex)
        span_id = bytes.fromhex(span_hex) if span_hex else self._span_id()
        parent = bytes.fromhex(parent_hex) if parent_hex else b""
        own = (name, start, end, attributes, code, description, events, links)
        spans: list[SpanParts] = [(trace_id, span_id, parent, state, kind + 1, _REMOTE if remote else _LOCAL, own)]
        for child in children:
            spans.append((trace_id, self._span_id(), span_id, state, _INTERNAL, _LOCAL, child))
        return spans

    def _span_id(self) -> bytes:
        return self.ids.generate_span_id().to_bytes(8, "big")

    def request(self, spans: Sequence[SpanParts]) -> ExportTraceServiceRequest:
        """One export request of ``spans``, each made in place (upb copies a message given to a parent)."""
        request = ExportTraceServiceRequest()
        resource_spans = request.resource_spans.add(schema_url=self.resource_schema)
        resource_spans.resource.CopyFrom(self.resource)
        scope_spans = resource_spans.scope_spans.add()
        scope_spans.scope.CopyFrom(self.scope)
        add, known = scope_spans.spans.add, self.attributes
        for trace_id, span_id, parent, state, kind, flags, body in spans:
            name, start, end, attributes, code, description, events, links = body
            add(
                trace_id=trace_id,
                span_id=span_id,
                trace_state=state,
                parent_span_id=parent,
                name=name,
                kind=kind,  # SpanKind's value + 1: the protocol's 0 is "unspecified"
                start_time_unix_nano=start,
                end_time_unix_nano=end,
                attributes=known(attributes) if attributes else None,
                events=[_event(event) for event in events] if events else None,
                links=[_link(link) for link in links] if links else None,
                status=Status(code=code, message=description),
                flags=flags,
            )
        return request


def _event(event: EventRecord) -> Span.Event:
    name, attributes, when = event
    return Span.Event(name=name, time_unix_nano=when, attributes=_attributes(attributes))


def _link(link: LinkRecord) -> Span.Link:
    trace_hex, span_hex, _, _ = link  # the SDK's encoder writes no trace state on links
    return Span.Link(trace_id=bytes.fromhex(trace_hex), span_id=bytes.fromhex(span_hex), flags=_LOCAL)


@dataclass(frozen=True, slots=True)
class Payload:
    """An export request and how many spans it holds."""

    request: ExportTraceServiceRequest
    count: int


class Sender(Protocol):
    """Sends an export request within ``timeout_s`` (or its exporter's own timeout, if shorter; retries
    included): False when it failed."""

    def send(self, payload: Payload, timeout_s: float) -> bool: ...

    def close(self) -> None: ...


class _Http:
    """The SDK's OTLP/HTTP exporter's client (its session, endpoint, headers, compression, timeout, retries).

    Its client takes no timeout per export, only its own (``OTEL_EXPORTER_OTLP_TIMEOUT``, read once): each send
    sets it to the shorter of that and the caller's (one send at a time: :class:`Batches` holds a lock)."""

    def __init__(self) -> None:
        self.exporter = HttpExporter()
        self.timeout_s: float = self.exporter._client._timeout

    def send(self, payload: Payload, timeout_s: float) -> bool:
        client = self.exporter._client
        client._timeout = min(self.timeout_s, timeout_s)
        return bool(client.export(payload.request.SerializeToString()).success)

    def close(self) -> None:
        self.exporter.shutdown()  # type: ignore[no-untyped-call]


class _GrpcExporter(GrpcExporter):
    """The SDK's OTLP/gRPC exporter (channel, metadata, compression, timeout, retries), given requests made here:
    its mixin's ``_translate_data`` and ``_count_data`` are the hooks each signal's exporter fills in."""

    def _translate_data(self, data: Payload) -> ExportTraceServiceRequest:  # type: ignore[override]
        return data.request

    def _count_data(self, data: Payload) -> int:  # type: ignore[override]
        return data.count


class _Grpc:
    """The SDK's OTLP/gRPC exporter, its timeout bounded per send as :class:`_Http`'s."""

    def __init__(self) -> None:
        self.exporter = _GrpcExporter()
        self.timeout_s: float = self.exporter._timeout

    def send(self, payload: Payload, timeout_s: float) -> bool:
        self.exporter._timeout = min(self.timeout_s, timeout_s)
        return self.exporter._export(payload) is SpanExportResult.SUCCESS  # type: ignore[arg-type]

    def close(self) -> None:
        self.exporter.shutdown()


def senders(kinds: Sequence[str]) -> list[Sender]:
    """A sender per OTLP kind of :func:`~modelport.serving.tracing_spans.exporter_kinds` (others are skipped)."""
    made: dict[str, type[_Http] | type[_Grpc]] = {"otlp-http": _Http, "otlp-grpc": _Grpc}
    return [made[kind]() for kind in kinds if kind in made]


def _setting(environ: Mapping[str, str], name: str, default: int) -> int:
    try:
        return max(int(environ.get(name, default)), 0)
    except ValueError:
        return default


class Batches:
    """Spans queued and sent in batches from a thread of its own, as the SDK's ``BatchSpanProcessor`` does:
    every ``OTEL_BSP_SCHEDULE_DELAY`` ms or once ``OTEL_BSP_MAX_EXPORT_BATCH_SIZE`` wait, at most
    ``OTEL_BSP_MAX_QUEUE_SIZE`` waiting (beyond: dropped, counted), each export given at most
    ``OTEL_BSP_EXPORT_TIMEOUT`` ms (or its exporter's own timeout, if shorter)."""

    def __init__(self, encoder: Encoder, targets: Sequence[Sender], environ: Mapping[str, str] = os.environ) -> None:
        self.encoder, self.targets = encoder, tuple(targets)
        self.delay_s = _setting(environ, "OTEL_BSP_SCHEDULE_DELAY", 5000) / 1000
        self.size = _setting(environ, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512) or 512
        self.limit = max(_setting(environ, "OTEL_BSP_MAX_QUEUE_SIZE", 2048), self.size)
        self.export_timeout_s = (_setting(environ, "OTEL_BSP_EXPORT_TIMEOUT", 30000) or 30000) / 1000
        self.dropped = 0
        self._queue: list[SpanParts] = []
        self._ready = threading.Condition()
        self._sending = threading.Lock()  # one batch at a time: the thread's, or a flush's
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="modelport-otlp", daemon=True)
        self._thread.start()

    def write(self, records: Sequence[Record]) -> None:
        spans = [span for record in records for span in self.encoder.spans(record)]
        with self._ready:
            room = self.limit - len(self._queue)
            if len(spans) > room:
                self._drop(len(spans) - room)
                spans = spans[:room]
            self._queue += spans
            if len(self._queue) >= self.size:
                self._ready.notify()

    def _drop(self, count: int) -> None:
        if not self.dropped:
            _log.warning("tracing: spans dropped (the exporter does not keep up); further drops are not logged")
        self.dropped += count

    def _run(self) -> None:
        while True:
            with self._ready:
                self._ready.wait_for(lambda: self._stop or len(self._queue) >= self.size, self.delay_s)
                if self._stop:
                    return
            with self._sending:
                self._send(once=True)

    def _send(self, once: bool = False, deadline: float = math.inf) -> bool:
        """Send the queued spans batch by batch (one batch if ``once``), each export bounded by
        :attr:`export_timeout_s` and by ``deadline`` (``time.monotonic()``); False at the first export that
        fails or would start past ``deadline`` (what is still queued stays queued). The caller holds
        ``_sending``."""
        while True:
            timeout_s = min(self.export_timeout_s, deadline - time.monotonic())
            if timeout_s <= 0:
                return False
            with self._ready:
                batch = self._queue[: self.size]
                del self._queue[: len(batch)]
            if batch:
                payload = Payload(self.encoder.request(batch), len(batch))
                sent = [target.send(payload, timeout_s) for target in self.targets]
                if not all(sent):
                    _log.warning("tracing: an export of %d spans failed", len(batch))
                    return False
            if once or len(batch) < self.size:
                return True

    def flush(self, timeout_s: float) -> bool:
        """Send every span queued now within ``timeout_s``: False as soon as an export fails (an unreachable
        collector), or when the time is up."""
        deadline = time.monotonic() + timeout_s
        if not self._sending.acquire(timeout=max(timeout_s, 0)):
            return False
        try:
            return self._send(deadline=deadline)
        finally:
            self._sending.release()

    def close(self) -> None:
        """Send what is left, and stop."""
        with self._ready:
            self._stop = True
            self._ready.notify()
        self._thread.join()
        with self._sending:
            self._send()
        for target in self.targets:
            target.close()
