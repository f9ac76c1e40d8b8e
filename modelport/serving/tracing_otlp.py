"""OTLP straight from span records, in the exporter process: the serialized ``ExportTraceServiceRequest`` of
:data:`~modelport.serving.tracing_records.Record` s, batched as the SDK's ``BatchSpanProcessor`` batches
(``OTEL_BSP_*``), and sent by the SDK's OTLP exporters' own transports, configured by the
``OTEL_EXPORTER_OTLP_*`` variables (endpoint, headers, timeout, compression, certificates; retries).

The SDK's way (a ``ReadableSpan`` per span, then its encoder) cost ~40 µs of CPU a span here; ``opentelemetry-proto``'s
messages made straight from the records (upb), ~13, most of it making a message per span and copying each
attribute's message into it. So a span is written by hand (:class:`Encoder`): the dozen ``Span`` fields the
records fill, in field-number order as upb writes them, with the attributes, the resource and the scope serialized
by ``opentelemetry-proto`` once and reused as bytes (protobuf's wire format is a concatenation of fields), and the
rare events by its messages. A compact record (a sampled request's) is written straight from its places: no
expanded record, no attribute dict; its string attributes' fields by hand, the request id's (new each time) too
(``tracing_capacity.py``, MLP at c=32, 100% sampling: the exporter's CPU from 22.1 to 17.0 µs a request). The
bytes are the SDK's encoder's for the same spans, serialized by upb (tested).
"""

from __future__ import annotations

import logging
import math
import os
import struct
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from random import getrandbits
from typing import Any, Final, Protocol

import requests
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource as ResourceMessage
from opentelemetry.proto.trace.v1.trace_pb2 import Span, SpanFlags
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from requests.utils import get_netrc_auth

from modelport.serving.tracing_records import COMPACT, NAMED, Attributes, Received, expand
from modelport.serving.tracing_spans import SCOPE

__all__ = ["Batches", "Encoder", "Payload", "Sender", "senders", "settle_environment"]

# Final: the compiled module (native.py) keeps these in C statics, not in its globals' dict, looked up each use
_LOCAL: Final = int(SpanFlags.SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK)
_REMOTE: Final = _LOCAL | SpanFlags.SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK
_INTERNAL: Final = int(Span.SpanKind.SPAN_KIND_INTERNAL)
_log = logging.getLogger(__name__)
_FIXED32: Final = struct.Struct("<I").pack
_FIXED64: Final = struct.Struct("<Q").pack
_ONE_BYTE: Final = [bytes((n,)) for n in range(0x80)]  # the varints of 0-127
_TWO_BYTES: Final[dict[int, bytes]] = {}  # those of 128-16383 met so far (a span's length, mostly)
_NO_STATUS: Final = b"\x7a\x00"  # Span.status (15), present and empty: UNSET, no message
_TIMES: Final = struct.Struct("<BQBQ").pack  # start_time_unix_nano (7), end_time_unix_nano (8): fixed64 each
_KINDS: Final = [b"\x30" + bytes((kind,)) for kind in range(6)]  # Span.kind (6): SpanKind's value + 1
_UNSET_ENDS: Final = {flags: _NO_STATUS + b"\x85\x01" + _FIXED32(flags) for flags in (_LOCAL, _REMOTE)}  # flags (16)


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


def _varint(value: int) -> bytes:
    """A protobuf varint (unsigned)."""
    if value < 0x80:
        return _ONE_BYTE[value]
    if value < 0x4000:  # two bytes: kept (at most 16,256)
        found = _TWO_BYTES.get(value)
        if found is None:
            found = _TWO_BYTES[value] = bytes((value & 0x7F | 0x80, value >> 7))
        return found
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: its tag, the payload's length, the payload."""
    return tag + _varint(len(payload)) + payload


_KNOWN_MAX: Final = 4096  # attribute fields kept for reuse; all forgotten at once beyond this


class _Known:
    """Each attribute as its serialized ``Span.attributes`` field (9), made by ``opentelemetry-proto`` once per
    distinct key and value: most repeat (model, route, status)."""

    def __init__(self) -> None:
        self._made: dict[tuple[str, type, Any], bytes] = {}

    def __call__(self, attributes: Attributes) -> list[bytes]:
        made, found = self._made, []
        for key, value in attributes.items():
            kind = type(value)
            if kind is list or kind is tuple:  # arrays: rare, and a list is no key
                found.append(_key_value(key, value))
                continue
            known = (key, kind, value)  # the type: True, 1 and 1.0 are equal keys of a dict
            field = made.get(known)
            if field is None:
                field = _key_value(key, value)
                if len(made) >= _KNOWN_MAX:
                    made.clear()
                made[known] = field
            found.append(field)
        return found


def _key_value(key: str, value: Any) -> bytes:
    return _field(b"\x4a", KeyValue(key=key, value=_value(value)).SerializeToString())


def _string_prefix(key: str) -> bytes:
    """The start of the ``KeyValue`` of ``key`` (not empty) with a string value: its key (1), its value's tag (2)."""
    encoded = key.encode()
    return b"\x0a" + _varint(len(encoded)) + encoded + b"\x12"


def _string_field(prefix: bytes, value: str) -> bytes:
    """A ``Span.attributes`` field (9) of a string value, ``prefix`` its key's (:func:`_string_prefix`): what
    ``_key_value`` makes through ``opentelemetry-proto``, without a message (``AnyValue.string_value`` (1) is in
    a oneof: written even when empty)."""
    encoded = value.encode()
    any_value = b"\x0a" + _varint(len(encoded)) + encoded
    return _field(b"\x4a", prefix + _varint(len(any_value)) + any_value)


class _Named:
    """The attribute fields of a :data:`~modelport.serving.tracing_records.Compact` record's string attributes,
    written straight from their places in it (no dict made); each key's fields kept for reuse but the request
    id's (one per request)."""

    __slots__ = ("key", "made", "prefix")

    def __init__(self, key: str) -> None:
        self.key, self.prefix = key, _string_prefix(key)
        self.made: dict[str, bytes] | None = None if key == "modelport.request_id" else {}

    def field(self, value: Any) -> bytes:
        if type(value) is not str:  # (not from the serving process's own slots)
            return _key_value(self.key, value)
        made = self.made
        if made is None:
            return _string_field(self.prefix, value)
        found = made.get(value)
        if found is None:
            found = _string_field(self.prefix, value)
            if len(made) >= _KNOWN_MAX:
                made.clear()
            made[value] = found
        return found


class Encoder:
    """Records to OTLP spans, and spans to an export request under this process's resource and scope; the span
    ids of a record's children are made here, by ``ids`` (``OTEL_PYTHON_ID_GENERATOR``, as in the server)."""

    def __init__(self, resource: Resource, ids: IdGenerator) -> None:
        self.ids, self.attributes = ids, _Known()
        self.random_ids = type(ids) is RandomIdGenerator
        named = tuple(_Named(key) for _, key in NAMED)  # read at NAMED's places by _compact
        self.head, self.request_id, self.tail = named[:2], named[2], named[3:]
        self._statuses: dict[int, bytes] = {}  # http.response.status_code's field, by status
        self._sizes: dict[tuple[int, int], bytes] = {}  # a queue span's attribute fields, by rows and requests
        self._names: dict[str, bytes] = {}  # Span.name's field (5), by name
        self._states: dict[str, bytes] = {}  # Span.trace_state's (3)
        self._heads: dict[tuple[Any, ...], bytes] = {}  # a compact record's attributes before its request id's
        self._tails: dict[tuple[Any, ...], bytes] = {}  # and after it (_run)
        # ResourceSpans.resource (1) and .schema_url (3), ScopeSpans.scope (1): the same in every request
        message = ResourceMessage(attributes=_attributes(dict(resource.attributes))).SerializeToString()
        self.resource = _field(b"\x0a", message)
        self.resource_schema = _field(b"\x1a", resource.schema_url.encode()) if resource.schema_url else b""
        scope = InstrumentationScope(name=SCOPE.name, version=SCOPE.version or "").SerializeToString()
        self.scope = _field(b"\x0a", scope)

    def spans(self, record: Received) -> list[bytes]:
        """The spans of ``record``, each a ``ScopeSpans.spans`` field: its own, then its children's, under it
        (their ids made here)."""
        if record[0] == COMPACT:
            if record[12] is None:  # no attribute beyond its named ones
                return self._compact(record)
            record = expand(record)
        name, kind, trace_hex, span_hex, _, state, parent_hex, remote, start, end, attributes = record[:11]
        code, description, events, links, children = record[11:]
        trace_id = bytes.fromhex(trace_hex)
        span_id = bytes.fromhex(span_hex) if span_hex else self._span_id()
        parent, flags = bytes.fromhex(parent_hex) if parent_hex else b"", _REMOTE if remote else _LOCAL
        own = self._span(
            trace_id,
            span_id,
            parent,
            state,
            kind + 1,
            flags,
            name,
            start,
            end,
            attributes,
            code,
            description,
            events,
            links,
        )
        return [own, *[self._child(trace_id, span_id, state, child) for child in children]]

    def _child(self, trace_id: bytes, parent: bytes, state: str, child: Received) -> bytes:
        """The span of a :data:`~modelport.serving.tracing_records.ChildRecord` under ``parent``."""
        name, start, end, attributes, code, description, events, links = child
        return self._under(trace_id, parent, state, name, start, end, attributes, code, description, events, links)

    def _under(
        self,
        trace_id: bytes,
        parent: bytes,
        state: str,
        name: str,
        start: int,
        end: int,
        attributes: Any,
        code: int = 0,
        description: str = "",
        events: Sequence[Any] = (),
        links: Sequence[Any] = (),
    ) -> bytes:
        """An INTERNAL span under ``parent`` (its id made here)."""
        span_id = self._span_id()
        return self._span(
            trace_id,
            span_id,
            parent,
            state,
            _INTERNAL,
            _LOCAL,
            name,
            start,
            end,
            attributes,
            code,
            description,
            events,
            links,
        )

    def _compact(self, record: Received) -> list[bytes]:
        """The spans of a :data:`~modelport.serving.tracing_records.Compact` record with no extra attributes, as
        those of its :func:`~modelport.serving.tracing_records.expand` ed record, with no dict, record or tuple
        made: its attribute fields are written here, already bytes (in :meth:`spans` the exporter's CPU went ~30%
        to expanding compact records and making their attributes' fields, the request id's through a message)."""
        at: list[Any] = record if type(record) is list else list(record)  # (JSON's lists: read as lists)
        trace_id, span_id = bytes.fromhex(at[3]), bytes.fromhex(at[4])
        parent, state = bytes.fromhex(at[7]) if at[7] else b"", at[6]
        # NAMED's order: method and path, the request id, then route ... outcome (the SDK's encoding, tested)
        fields = self._run(self._heads, self.head, (at[13], at[14]))
        if (request_id := at[15]) is not None:
            fields += self.request_id.field(request_id)
        fields += self._run(self._tails, self.tail, (at[16], at[17], at[18], at[19], at[20], at[21]))
        name, kind, start, end, code, description = (
            at[1],
            at[2] + 1,
            at[8],
            at[9],
            at[10],
            at[11],
        )
        own = self._span(
            trace_id,
            span_id,
            parent,
            state,
            kind,
            _REMOTE,
            name,
            start,
            end,
            fields,
            code,
            description,
            (),
            (),
        )
        spans = [own]
        if at[23]:
            spans.append(self._under(trace_id, span_id, state, "validate", at[22], at[23], b""))
        spans += [self._child(trace_id, span_id, state, child) for child in at[28] or ()]
        if at[24]:
            sizes = self._queue_sizes(at[26], at[27])
            spans.append(self._under(trace_id, span_id, state, "queue", at[24], at[25], sizes))
        return spans

    def _run(self, made: dict[tuple[Any, ...], bytes], named: tuple[_Named, ...], values: tuple[Any, ...]) -> bytes:
        """The attribute fields of a run of a compact record's named attributes, ``values`` (then, for the last
        run, ``http.response.status_code``, 0 for none), kept for reuse by ``values``: they repeat together
        (method and path; route, model, version, protocol, outcome and status)."""
        try:
            found = made.get(values)
        except TypeError:  # an unhashable value (not from the serving process's own slots)
            found = None
        if found is None:
            fields = [one.field(value) for one, value in zip(named, values, strict=False) if value is not None]
            if len(values) > len(named) and (status := values[-1]):
                fields.append(self._status(status))
            found = b"".join(fields)
            # kept only for strings (and an int status): 1, 1.0 and True are one key, written three ways
            kept = all(v is None or type(v) is str for v in values[: len(named)])
            if kept and (len(values) == len(named) or type(values[-1]) is int):
                if len(made) >= _KNOWN_MAX:
                    made.clear()
                made[values] = found
        return found

    def _status(self, status: int) -> bytes:
        found = self._statuses.get(status)
        if found is None:
            found = self._statuses[status] = _key_value("http.response.status_code", status)
        return found

    def _queue_sizes(self, rows: int, requests: int) -> bytes:
        key = (rows, requests)
        found = self._sizes.get(key)
        if found is None:
            if len(self._sizes) >= _KNOWN_MAX:
                self._sizes.clear()
            found = _key_value("modelport.batch.size", rows) + _key_value("modelport.batch.requests", requests)
            self._sizes[key] = found
        return found

    def _span_id(self) -> bytes:
        if self.random_ids:  # what RandomIdGenerator does, without its frames
            while not (found := getrandbits(64)):
                pass
            return found.to_bytes(8, "big")
        return self.ids.generate_span_id().to_bytes(8, "big")

    def request(self, spans: Sequence[bytes]) -> bytes:
        """One serialized export request of ``spans`` (:meth:`spans`' fields): one resource, one scope."""
        scope_spans = self.scope + b"".join(spans)
        return _field(b"\x0a", self.resource + _field(b"\x12", scope_spans) + self.resource_schema)

    def _span(
        self,
        trace_id: bytes,
        span_id: bytes,
        parent: bytes,  # b"": a root span
        state: str,
        kind: int,  # SpanKind's value + 1: the protocol's 0 is "unspecified"
        flags: int,
        name: str,
        start: int,
        end: int,
        attributes: Any,  # a dict, or its fields written already (bytes: a compact record's)
        code: int,
        description: str,
        events: Sequence[Any],
        links: Sequence[Any],
    ) -> bytes:
        """A span as a ``ScopeSpans.spans`` field (2): the fields it has, in field-number order (the name, the
        trace state and the end of an unset status kept as bytes: they repeat)."""
        out = [b"", b"\x0a\x10", trace_id, b"\x12\x08", span_id]  # its tag, then trace_id (1), span_id (2)
        if state:
            out.append(_known_field(self._states, b"\x1a", state))
        if parent:
            out += (b"\x22\x08", parent)
        if name:
            out.append(_known_field(self._names, b"\x2a", name))
        out.append(_KINDS[kind])
        if start and end:
            out.append(_TIMES(0x39, start, 0x41, end))
        elif start:
            out += (b"\x39", _FIXED64(start))
        elif end:
            out += (b"\x41", _FIXED64(end))
        if type(attributes) is bytes:  # its fields, written already (a compact record's)
            out.append(attributes)
        elif attributes:
            out += self.attributes(attributes)
        out += [_field(b"\x5a", _event(event).SerializeToString()) for event in events]
        out += [_link(link) for link in links]
        if code or description:
            out += (_status(code, description), b"\x85\x01", _FIXED32(flags))
        else:  # flags (16): never 0 (whether the parent is remote is known)
            out.append(_UNSET_ENDS[flags] if flags in _UNSET_ENDS else _NO_STATUS + b"\x85\x01" + _FIXED32(flags))
        size = 0
        for part in out:
            size += len(part)
        out[0] = b"\x12" + _varint(size)  # ScopeSpans.spans (2): its tag and length, then it, in one copy
        return b"".join(out)


def _known_field(made: dict[str, bytes], tag: bytes, value: str) -> bytes:
    """The length-delimited field ``tag`` of the string ``value``, from ``made`` (made there when new)."""
    found = made.get(value)
    if found is None:
        found = _field(tag, value.encode())
        if len(made) >= _KNOWN_MAX:
            made.clear()
        made[value] = found
    return found


def _status(code: int, description: str) -> bytes:
    message = _field(b"\x12", description.encode()) if description else b""
    return _field(b"\x7a", message + (b"\x18" + _varint(code) if code else b""))


def _event(event: Received) -> Span.Event:
    name, attributes, when = event
    return Span.Event(name=name, time_unix_nano=when, attributes=_attributes(attributes))


_LINK_HEAD: Final = b"\x6a\x21\x0a\x10".hex()  # Span.links (13), 33 bytes; its trace_id (1), 16 bytes
_LINK_SPAN: Final = b"\x12\x08".hex()  # its span_id (2), 8 bytes
_LINK_FLAGS: Final = (b"\x35" + _FIXED32(_LOCAL)).hex()  # its flags (6)


def _link(link: Received) -> bytes:
    """A ``Span.links`` field (13): trace id, span id, flags (the SDK's encoder writes no trace state on links)."""
    trace_hex: str = link[0]
    span_hex: str = link[1]
    return bytes.fromhex(f"{_LINK_HEAD}{trace_hex}{_LINK_SPAN}{span_hex}{_LINK_FLAGS}")  # one call, one copy


@dataclass(frozen=True, slots=True)
class Payload:
    """A serialized export request and how many spans it holds."""

    body: bytes
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
        session = getattr(self.exporter._client._transport, "_session", None)
        if isinstance(session, requests.Session):
            settle_environment(session, self.exporter._client._endpoint)

    def send(self, payload: Payload, timeout_s: float) -> bool:
        client = self.exporter._client
        client._timeout = min(self.timeout_s, timeout_s)
        return bool(client.export(payload.body).success)

    def close(self) -> None:
        self.exporter.shutdown()  # type: ignore[no-untyped-call]


class _GrpcExporter(GrpcExporter):
    """The SDK's OTLP/gRPC exporter (channel, metadata, compression, timeout, retries), given requests made here:
    its mixin's ``_translate_data`` and ``_count_data`` are the hooks each signal's exporter fills in. Its stub
    takes a message: the request is parsed back (upb, in C: ~1 µs a span)."""

    def _translate_data(self, data: Payload) -> ExportTraceServiceRequest:  # type: ignore[override]
        request: ExportTraceServiceRequest = ExportTraceServiceRequest.FromString(data.body)
        return request

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


def settle_environment(session: requests.Session, url: str) -> None:
    """Have ``session`` read from the environment once, now, what requests reads again for every request it
    sends to ``url`` while ``trust_env`` is set: the proxies (``HTTPS_PROXY``, ``NO_PROXY``...), the CA bundle
    (``REQUESTS_CA_BUNDLE``, ``CURL_CA_BUNDLE``) and a ``.netrc`` login. Each post decoded every environment
    variable three times (``urllib.request.getproxies_environment``) and looked for the ``.netrc`` file: with ~80
    variables, 60% of a post's CPU in the exporter process, ~1.1 ms of 1.8 for 512 spans; a Kubernetes pod has
    more (a few for each service in its namespace). The SDK reads its ``OTEL_*`` variables once, at start, too. The
    environment's CA bundle is taken where the exporter names no certificate; its own
    (``OTEL_EXPORTER_OTLP_CERTIFICATE``) stays, where requests would let the bundle override it
    (psf/requests#3829)."""
    settings = session.merge_environment_settings(url, {}, None, session.verify, session.cert)
    session.proxies, session.verify = settings["proxies"], settings["verify"]
    if session.auth is None:
        session.auth = get_netrc_auth(url)
    session.trust_env = False


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
        self._queue: list[bytes] = []  # spans, encoded
        self._ready = threading.Condition()
        self._sending = threading.Lock()  # one batch at a time: the thread's, or a flush's
        self._stop = False
        self._sender = threading.Thread(target=self._run, name="modelport-otlp", daemon=True)
        self._sender.start()

    def write(self, records: Sequence[Received]) -> None:
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
        self._sender.join()
        with self._sending:
            self._send()
        for target in self.targets:
            target.close()
