"""The OpenTelemetry side of :mod:`modelport.serving.tracing`, imported only once tracing is on: per request, the
sampling decision, the ids, the W3C trace context in and out, and a sampled request's spans as records.

Leans on the SDK for configuration: the sampler and the ids are a ``TracerProvider``'s (``OTEL_TRACES_SAMPLER`` /
``_ARG``), what a request carries in is read by the configured propagators (``OTEL_PROPAGATORS``, default W3C
trace context and baggage); what goes out on a response is the W3C ``traceparent`` (and ``tracestate``) only.
Exporters, resource and batching: :mod:`modelport.serving.tracing_spans`.

Cheap by construction (an overhead-bound model serves a request in ~60-100 µs of CPU; an SDK span costs ~15 µs
to make and as much again to encode): the configured sampler decides once per request, before anything is made
(a standard sampler and W3C propagation without the SDK's objects: :mod:`~modelport.serving.tracing_sampling`);
an unsampled request is an :class:`UnsampledSpan`: its ids as the sampler saw them (a new trace id stays an int),
formatted only into its response's ``traceparent`` (flags as the SDK would set them), and nothing else. A
sampled request's spans are plain tuples (:mod:`~modelport.serving.tracing_records`, ids as hex strings)
made when each ends, with explicit times; the exporter process encodes and exports them. The request in
flight is this module's own context variable, not the OpenTelemetry context: spans made by other
instrumentation do not nest under it.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextvars import ContextVar
from os import register_at_fork, urandom
from typing import Any, Final

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import Decision
from opentelemetry.trace import SpanContext, SpanKind, StatusCode, TraceFlags, TraceState
from opentelemetry.util.types import AttributeValue

from modelport.serving.requestid import REQUEST_ID
from modelport.serving.tracing_records import COMPACT, Attributes, ChildRecord, Compact, EventRecord, Record
from modelport.serving.tracing_sampling import (
    LOW_BITS,
    ZERO_SPAN,
    ZERO_TRACE,
    parse_traceparent,
    reads_w3c_only,
    standard,
)
from modelport.serving.tracing_spans import (
    Recorder,
    Sink,
    SpanProcessors,
    exporter_kinds,
    processors,
    resource,
)

__all__ = ["CURRENT", "ERROR", "OK", "HttpSpan", "OtelTracing", "RequestSpan", "RequestTrace", "UnsampledSpan", "start"]

Send = Callable[[dict[str, Any]], Awaitable[None]]
CURRENT: Final[ContextVar[RequestSpan | UnsampledSpan | None]] = ContextVar("modelport_request_span", default=None)
"""The request being served (its span), set by :meth:`OtelTracing.http_exchange` and the gRPC interceptor."""
_NO_PARENT = otel_context.Context()
_SERVER: Final = SpanKind.SERVER.value
_INTERNAL: Final = SpanKind.INTERNAL.value
ERROR: Final = StatusCode.ERROR.value  # a span status code: StatusCode's value
_SAMPLED: Final = int(TraceFlags.SAMPLED)
_RANDOM: Final = int(TraceFlags.RANDOM_TRACE_ID)
_FLAGS: Final = tuple(f"-{flags:02x}" for flags in range(256))  # a traceparent's end, by its flags (one byte)
Status = tuple[int, str]  # a span's status: StatusCode's value, description
OK: Final[Status] = (StatusCode.UNSET.value, "")
_NO_ATTRIBUTES: Final[Attributes] = {}
_POOL_BYTES: Final = 4096  # random bytes drawn at once by HexIds: 8192 hex digits, the ids of 170 requests
# the names the hot path reads are Final, so the compiled module reads them as C statics, not from its globals
# dict (~150 instructions a name each time); the context variables' methods bound once (no method lookup a call)
_request_id: Final = REQUEST_ID.get
_current: Final = CURRENT.get
_set_current: Final = CURRENT.set
_reset_current: Final = CURRENT.reset
_now: Final = time.time_ns


def hex_id(number: int, digits: int) -> str:
    """``number`` as ``digits`` hex digits, zero-padded (a trace id: 32, a span id: 16). ``f"{number:032x}"``
    in the compiled module is a ``str.format`` call that parses its template each time (~4x the CPU)."""
    try:
        return number.to_bytes(digits // 2, "big").hex()
    except OverflowError:  # a custom id generator's id outside W3C's range: written whole, as format would
        return f"{number:0{digits}x}"


class _Propagated:
    """What names a request's span to whoever comes next: the W3C headers of its response."""

    __slots__ = ()
    trace_state: str  # the tracestate header ("" for none)

    def traceparent(self) -> bytes:
        """The ``traceparent`` header's value (each kind of span keeps its ids its own way)."""
        raise NotImplementedError

    def headers(self) -> list[tuple[bytes, bytes]]:
        """The W3C ``traceparent`` (and ``tracestate``) that name this span, as HTTP headers of the response."""
        parent = (b"traceparent", self.traceparent())
        return [parent, (b"tracestate", self.trace_state.encode())] if self.trace_state else [parent]

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """:meth:`headers` as gRPC metadata."""
        return tuple((k.decode(), v.decode()) for k, v in self.headers())


class UnsampledSpan(_Propagated):
    """A request the sampler left out: its ids (hex), for its response's ``traceparent`` and its log records."""

    __slots__ = ("flags", "span_id", "trace_id", "trace_state")

    def __init__(self, trace_id: str, span_id: str, flags: int, trace_state: str = "") -> None:
        self.trace_id, self.span_id, self.flags, self.trace_state = trace_id, span_id, flags, trace_state

    def traceparent(self) -> bytes:
        return f"00-{self.trace_id}-{self.span_id}{_FLAGS[self.flags]}".encode()


class HexIds:
    """Random ids in hex, never all zeros (as the SDK's ``RandomIdGenerator``'s), from :data:`_POOL_BYTES` random
    bytes drawn at once from the operating system (``os.urandom``): a request's ids are two slices of one string.
    Drawn one at a time as the SDK does (``random.getrandbits``), each id cost its draw, an int's ``to_bytes`` and
    its ``hex()``: ~4.5k of the ~29k instructions tracing added to a request at 100% sampling (callgrind of the
    real server); drawn in bulk through ``getrandbits``, the int conversions still cost ~1.9k. Called on the event
    loop's thread only."""

    __slots__ = ("at", "digits")

    def __init__(self) -> None:
        self.digits, self.at = "", 0
        register_at_fork(after_in_child=self.forget)  # a forked child draws its own (as random reseeds in one)

    def forget(self) -> None:
        """Drop the digits drawn: the next id draws anew."""
        self.digits, self.at = "", 0

    def take(self, count: int) -> str:
        """``count`` hex digits (16: a span id, 32: a trace id), not all zeros."""
        at = self.at
        end = at + count
        if end > len(self.digits):
            self.digits = urandom(_POOL_BYTES).hex()
            at, end = 0, count
        self.at = end
        found = self.digits[at:end]
        if found in (ZERO_SPAN, ZERO_TRACE):  # (a span id: one in 2**64) redrawn, as the SDK does
            return self.take(count)
        return found


class RequestSpan(_Propagated):
    """A sampled request's SERVER span while it is served: its ids, and what its span will say.

    Mutable by nature: the route, model and outcome are learnt while the request runs. What every request has
    (the attributes of :data:`~modelport.serving.tracing_records.Compact`, its ``validate`` and first ``queue``
    span) is kept in slots, recorded as one flat tuple when it ends; ``attributes`` and ``children`` hold the rest.
    It is also the context manager of its own ``validate`` span (:meth:`OtelTracing.validation`)."""

    __slots__ = (
        "attributes",
        "batch_requests",
        "batch_rows",
        "batch_start",
        "children",
        "ended",
        "enqueued",
        "flags",
        "kind",
        "method",
        "model",
        "name",
        "outcome",
        "parent_id",
        "path",
        "protocol",
        "request_id",
        "route",
        "span_id",
        "start_ns",
        "status",
        "trace_id",
        "trace_state",
        "validate_end",
        "validate_start",
        "version",
    )

    def __init__(
        self,
        trace_id: str,  # 32 hex digits
        span_id: str,  # 16 hex digits
        flags: int,  # W3C trace flags: sampled, random trace id
        trace_state: str,
        parent_id: str,  # the caller's span (16 hex digits; "": none)
        name: str,
        kind: int,
        start_ns: int,
        attributes: Attributes | None,  # its own dict: the attributes that are not slots (None: none yet)
    ) -> None:
        self.trace_id, self.span_id, self.flags, self.trace_state = trace_id, span_id, flags, trace_state
        self.parent_id, self.name, self.kind, self.start_ns = parent_id, name, kind, start_ns
        self.attributes, self.ended = attributes, False
        # its INTERNAL spans but validate and the first queue (None: none; made when needed, as ``attributes``:
        # each container made per request costs its allocation and the collector's visits)
        self.children: list[ChildRecord] | None = None
        self.method: str | None = None
        self.path: str | None = None
        self.request_id: str | None = None
        self.route: str | None = None
        self.model: str | None = None
        self.version: str | None = None
        self.protocol: str | None = None
        self.outcome: str | None = None
        self.status = 0  # the HTTP status answered (0: none)
        self.validate_start = self.validate_end = 0
        self.enqueued = self.batch_start = self.batch_rows = self.batch_requests = 0  # its queue span (0: none)

    @property
    def context(self) -> SpanContext:
        """Its ids as the SDK's span context."""
        state = TraceState.from_header([self.trace_state]) if self.trace_state else None
        return SpanContext(int(self.trace_id, 16), int(self.span_id, 16), False, TraceFlags(self.flags), state)

    def traceparent(self) -> bytes:
        return f"00-{self.trace_id}-{self.span_id}{_FLAGS[self.flags]}".encode()

    def compact(self, end_ns: int, status: Status) -> Compact:
        """Its record, ending at ``end_ns`` with ``status``."""
        return (
            COMPACT,
            self.name,
            self.kind,
            self.trace_id,
            self.span_id,
            self.flags,
            self.trace_state,
            self.parent_id,
            self.start_ns,
            end_ns,
            status[0],
            status[1],
            self.attributes or None,
            self.method,
            self.path,
            self.request_id,
            self.route,
            self.model,
            self.version,
            self.protocol,
            self.outcome,
            self.status,
            self.validate_start,
            self.validate_end,
            self.enqueued,
            self.batch_start,
            self.batch_rows,
            self.batch_requests,
            self.children or None,
        )

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        """An attribute beyond the slots'."""
        if self.attributes is None:
            self.attributes = {}
        self.attributes[key] = value

    def add_child(self, child: ChildRecord) -> None:
        """A span under this one, recorded with it."""
        if self.children is None:
            self.children = []
        self.children.append(child)

    def __enter__(self) -> RequestSpan:
        self.validate_start = _now()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, _: object) -> None:
        if error is None:
            self.validate_end = _now()
        else:  # a failed validation: a span of its own, with its exception (as any child's)
            self.add_child(_failed("validate", self.validate_start, {}, kind, error))


RequestTrace = tuple[RequestSpan, int]
"""A sampled request as its batch sees it: its span (the parent of its ``queue`` span, what the batch span links
to) and when it was queued (ns)."""


def start(exporter: SpanExporter | None, environ: Mapping[str, str]) -> OtelTracing:
    """Tracing whose spans go to ``exporter`` in this process (tests), or else to the exporters ``environ`` names,
    in an exporter process (:mod:`modelport.serving.tracing_process`; none for ``OTEL_TRACES_EXPORTER=none``)."""
    provider = TracerProvider(shutdown_on_exit=False)  # sampler and ids: OTEL_TRACES_SAMPLER(_ARG), ...
    sink: Sink
    if exporter is not None:
        sink = SpanProcessors(processors([exporter]), resource(), provider.id_generator)
    elif kinds := exporter_kinds(environ):
        from modelport.serving.tracing_process import ExporterProcess

        sink = ExporterProcess(kinds, environ)
    else:
        sink = SpanProcessors([], resource(), provider.id_generator)
    return OtelTracing(provider, Recorder(sink))


class OtelTracing:
    """The configured sampler and ids of a tracer provider; sampled spans recorded into ``recorder``."""

    def __init__(self, provider: TracerProvider, recorder: Recorder) -> None:
        self.sampler, self.ids = provider.sampler, provider.id_generator
        self.random = _RANDOM if self.ids.is_trace_id_random() else 0
        self.recorder = recorder
        self.record: Callable[[Record | Compact], None] = recorder.append
        # the headers the configured propagators read (OTEL_PROPAGATORS): only those are decoded and extracted
        names = propagate.get_global_textmap().fields
        self.fields: frozenset[str | bytes] = frozenset({*names, *(name.encode("latin-1") for name in names)})
        # the standard sampler and W3C propagation decide without the SDK's objects (tracing_sampling.py)
        self.fast = standard(self.sampler) if reads_w3c_only(frozenset(names)) else None
        self.bound, self.parent_based = (self.fast.bound, self.fast.parent_based) if self.fast else (0, False)
        # the bound as 16 hex digits: a trace id's low half (hex, lowercase, one width) compared as text sorts as
        # its number does; "g" is above every hex digit (2**64: always sampled)
        self.below = "g" if self.bound > LOW_BITS else hex_id(self.bound, 16)
        self.pool = HexIds() if type(self.ids) is RandomIdGenerator else None  # else the configured generator's

    def flush(self, timeout_s: float) -> bool:
        """Export the finished spans now: whether they were, within ``timeout_s``."""
        return self.recorder.flush(timeout_s)

    def shutdown(self) -> None:
        """Export what is left and stop."""
        self.recorder.close()

    def begin(
        self, name: str, kind: SpanKind, carrier: Mapping[str, str], attributes: Attributes
    ) -> RequestSpan | UnsampledSpan:
        """A request's span under what ``carrier`` names, sampled or not as the sampler decides (as the SDK's
        ``start_span`` would: same ids, flags and trace state)."""
        if self.fast is None:
            return self._begin_sdk(name, kind, carrier, attributes)
        traceparent = carrier.get("traceparent") if carrier else None
        tracestate = carrier.get("tracestate") if traceparent is not None else None
        return self._begin(name, kind.value, traceparent, tracestate, attributes)

    def _begin(
        self, name: str, kind: int, traceparent: str | None, tracestate: str | None, attributes: Attributes
    ) -> RequestSpan | UnsampledSpan:
        """:meth:`begin` with a standard sampler and W3C propagation: no SDK object, a comparison decides, and an
        unsampled request formats nothing."""
        parent = None
        if traceparent is not None:
            parent = parse_traceparent(traceparent, () if tracestate is None else (tracestate,))
        if parent is None:
            pool = self.pool
            if pool is not None:
                trace_id = pool.take(32)
                sampled = trace_id[16:] < self.below
            else:
                number = self.ids.generate_trace_id()
                trace_id, sampled = hex_id(number, 32), number & LOW_BITS < self.bound
            parent_id, flags, state = "", self.random, ""
        else:
            trace_id, parent_id, flags, state = parent
            sampled = flags & 1 == 1 if self.parent_based else trace_id[16:] < self.below
            flags &= _RANDOM
        span_id = self.pool.take(16) if self.pool is not None else hex_id(self.ids.generate_span_id(), 16)
        if not sampled:
            return UnsampledSpan(trace_id, span_id, flags, state)
        own = dict(attributes) if attributes else None
        return RequestSpan(trace_id, span_id, _SAMPLED | flags, state, parent_id, name, kind, _now(), own)

    def _begin_sdk(
        self, name: str, kind: SpanKind, carrier: Mapping[str, str], attributes: Attributes
    ) -> RequestSpan | UnsampledSpan:
        """:meth:`begin` through the configured propagators and sampler (not the standard ones)."""
        parent_context, parent = _NO_PARENT, None
        if carrier:
            parent_context = propagate.extract(carrier)
            parent = trace.get_current_span(parent_context).get_span_context()
        if parent is not None and parent.is_valid:
            trace_id, parent_id, random = parent.trace_id, parent.span_id, parent.trace_flags & _RANDOM
        else:
            trace_id, parent_id, random = self.ids.generate_trace_id(), 0, self.random
        decision = self.sampler.should_sample(parent_context, trace_id, name, kind, attributes)
        state = decision.trace_state.to_header() if decision.trace_state else ""
        span_id = self.ids.generate_span_id()
        if decision.decision is not Decision.RECORD_AND_SAMPLE:
            return UnsampledSpan(hex_id(trace_id, 32), hex_id(span_id, 16), random, state)
        ids, attributes = (hex_id(trace_id, 32), hex_id(span_id, 16)), {**attributes, **decision.attributes}
        start_ns, parent_hex = _now(), hex_id(parent_id, 16) if parent_id else ""
        return RequestSpan(*ids, _SAMPLED | random, state, parent_hex, name, kind.value, start_ns, attributes)

    def end(self, request: RequestSpan | UnsampledSpan, status: Status = OK) -> None:
        """Record ``request``'s span (and its children) if it is sampled, ending now."""
        if isinstance(request, RequestSpan):
            request.ended = True
            self.record(request.compact(_now(), status))

    def child(self, parent: RequestSpan, child: ChildRecord) -> None:
        """Record a span under ``parent`` (sampled): with it, or on its own once ``parent`` has ended."""
        if not parent.ended:
            parent.add_child(child)
            return
        name, start, end, attributes, code, description, events, links = child
        ids = (parent.trace_id, "", parent.flags, parent.trace_state, parent.span_id, False)
        self.record((name, _INTERNAL, *ids, start, end, attributes, code, description, events, links, ()))

    def span(self, name: str, attributes: Mapping[str, Any]) -> _Child | None:
        """A span under the current request while a block runs, when that request is sampled."""
        current = _current()
        if not isinstance(current, RequestSpan):
            return None
        return _Child(self, current, name, dict(attributes))

    def validation(self) -> RequestSpan | _Child | None:
        """The current request's ``validate`` span while a block runs (the request itself: it keeps the times; a
        second validation, a pipeline's next model, is a span of its own), when that request is sampled; else
        None."""
        current = _current()
        if not isinstance(current, RequestSpan):
            return None
        return _Child(self, current, "validate", {}) if current.validate_start else current

    def annotate(self, model: str, version: str, protocol: str) -> None:
        """The model version and protocol, on the current span."""
        current = _current()
        if isinstance(current, RequestSpan):
            current.model, current.version, current.protocol = model, version, protocol

    def outcome(self, code: str) -> None:
        """``success`` or the error code, on the current span."""
        current = _current()
        if isinstance(current, RequestSpan):
            current.outcome = code

    def trace_id(self) -> str:
        """The current trace id as 32 hex digits, or ``-``."""
        current = _current()
        return current.trace_id if current is not None else "-"

    def enqueued(self) -> RequestTrace | None:
        """The current request as its batch will see it (None when it is not sampled)."""
        current = _current()
        if not isinstance(current, RequestSpan):
            return None
        return (current, _now())

    def record_batch(
        self, traces: Sequence[RequestTrace | None], rows: int, seconds: float, runs: int, failed: bool
    ) -> None:
        """The ``queue`` span of each sampled request (enqueued until the batch started: kept on the request, or
        a child of its own after the first), and the ``batch`` span (the child of the first, linked to all of
        them); nothing when none of its requests is sampled."""
        sampled = [t for t in traces if t is not None]
        if not sampled:
            return
        end = _now()
        start = end - int(seconds * 1e9)
        count = len(traces)
        for request, enqueued in sampled:
            started = start if start > enqueued else enqueued
            if request.enqueued or request.ended:  # a second model's queue (a pipeline), or a request gone
                sizes: Attributes = {"modelport.batch.size": rows, "modelport.batch.requests": count}
                self.child(request, ("queue", enqueued, started, sizes, *OK, (), ()))
            else:
                request.enqueued, request.batch_start = enqueued, started
                request.batch_rows, request.batch_requests = rows, count
        first = sampled[0][0]
        attributes: Attributes = {
            "modelport.batch.size": rows,
            "modelport.batch.requests": count,
            "modelport.batch.runs": runs,
            "modelport.batch.failed": failed,
        }
        if first.model is not None and first.version is not None:
            attributes["modelport.model"], attributes["modelport.version"] = first.model, first.version
        links = tuple([(r.trace_id, r.span_id, r.flags, r.trace_state) for r, _ in sampled])
        code, description = (ERROR, "a request of the batch failed") if failed else OK
        ids = (first.trace_id, "", first.flags, first.trace_state, first.span_id, False)
        self.record(("batch", _INTERNAL, *ids, start, end, attributes, code, description, (), links, ()))

    def http_exchange(
        self,
        method: str,
        path: str,
        headers: list[tuple[bytes, bytes]],
        scope: dict[str, Any] | None,
        send: Send | None,
    ) -> HttpSpan:
        """The HTTP request's SERVER span, current until it ends; named by its route once known: by
        :meth:`http_route`, or from the ASGI ``scope`` the routed app leaves it in (None: no scope, as for
        ``serving/httpproto.py``'s requests)."""
        if self.fast is None:
            fields = self.fields
            carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in headers if k in fields}
            base: Attributes = {"http.request.method": method, "url.path": path}
            request = self.begin(method, SpanKind.SERVER, carrier, base)
        else:
            traceparent = tracestate = None
            for key, value in headers:  # (the last of each, as a dict of them would keep)
                if key == b"traceparent":
                    traceparent = value
                elif key == b"tracestate":
                    tracestate = value
            request = self._begin(
                method,
                _SERVER,
                None if traceparent is None else traceparent.decode("latin-1"),
                None if tracestate is None else tracestate.decode("latin-1"),
                _NO_ATTRIBUTES,
            )
        if isinstance(request, RequestSpan):
            request.method, request.path, request.request_id = method, path, _request_id()
        return HttpSpan(self, request, scope, send)

    def http_route(self, template: str) -> None:
        """Name the current SERVER span ``METHOD template``."""
        current = _current()
        if isinstance(current, RequestSpan):
            current.name = f"{current.method or ''} {template}"
            current.route = template


class HttpSpan:
    """An HTTP request's span while it is answered: ``send`` adds its ``traceparent`` to the response (and notes
    the status); :meth:`end` ends it."""

    __slots__ = ("_send", "_token", "request", "scope", "status", "tracing")

    def __init__(
        self,
        tracing: OtelTracing,
        request: RequestSpan | UnsampledSpan,
        scope: dict[str, Any] | None,
        send: Send | None,
    ) -> None:
        self.tracing, self.request, self.scope, self._send = tracing, request, scope, send
        self.status = 0
        self._token = _set_current(request)

    def send(self, message: dict[str, Any]) -> Awaitable[None]:
        """The ASGI ``send`` of the response: the wrapped one's awaitable (no coroutine of its own to make and
        run per message), the span's headers added to the response's start."""
        if message["type"] == "http.response.start":
            self.status = message["status"]
            message["headers"] = [*message.get("headers", ()), *self.request.headers()]
        assert self._send is not None, "a span opened without a send is answered with answered()"
        return self._send(message)

    def answered(self, status: int) -> list[tuple[bytes, bytes]]:
        """For a response written without :meth:`send` (``serving/httpproto.py`` writes it whole): note its
        ``status`` and return the headers to add to it (the span's ``traceparent``)."""
        self.status = status
        return self.request.headers()

    def end(self) -> None:
        """End the span (in the context it began in): its status from the response sent, or none."""
        _reset_current(self._token)
        self.finish()

    def finish(self) -> None:
        """:meth:`end`, for a request answered in an asyncio task of its own: the context the span was made
        current in ends with the task, so it is left as it is (a context variable's reset: ~1.3k instructions)."""
        request = self.request
        if isinstance(request, RequestSpan):
            self.tracing.end(request, _http_finished(request, self.scope, self.status))


class _Child:
    """A span under ``parent`` for the duration of a block, recorded when the block ends (an exception marks it
    failed). Not current itself: what runs inside is still the request's."""

    __slots__ = ("attributes", "name", "parent", "start_ns", "tracing")

    def __init__(self, tracing: OtelTracing, parent: RequestSpan, name: str, attributes: Attributes) -> None:
        self.tracing, self.parent, self.name, self.attributes = tracing, parent, name, attributes
        self.start_ns = 0

    def __enter__(self) -> _Child:
        self.start_ns = _now()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, _: object) -> None:
        if error is None:
            child: ChildRecord = (self.name, self.start_ns, _now(), self.attributes, *OK, (), ())
        else:
            child = _failed(self.name, self.start_ns, self.attributes, kind, error)
        self.tracing.child(self.parent, child)


def _failed(
    name: str, start: int, attributes: Attributes, kind: type[BaseException] | None, error: BaseException
) -> ChildRecord:
    """A span that ends now with ``error``: failed, with its ``exception`` event."""
    end = _now()
    status = f"{kind.__name__ if kind else ''}: {error}"
    return (name, start, end, attributes, ERROR, status, (_exception_event(error, end),), ())


def _exception_event(error: BaseException, when: int) -> EventRecord:
    """The semantic conventions' ``exception`` event, as ``Span.record_exception`` writes it."""
    attributes: Attributes = {
        "exception.type": type(error).__qualname__,
        "exception.message": str(error),
        "exception.stacktrace": "".join(traceback.format_exception(error)),
        "exception.escaped": False,
    }
    return ("exception", attributes, when)


def _http_finished(request: RequestSpan, scope: dict[str, Any] | None, status: int) -> Status:
    """Status code, route of the routed app (Starlette leaves it in the scope); the span's status."""
    if scope is not None:
        route = scope.get("route")  # (a getattr on None raises and catches an AttributeError: ~4k instructions)
        path = getattr(route, "path", None) if route is not None else None
        if isinstance(path, str):
            request.name = f"{scope['method']} {path}"
            request.route = path
    request.status = status
    if status >= 500 or not status:
        return (ERROR, f"HTTP {status}" if status else "no response")
    return OK
