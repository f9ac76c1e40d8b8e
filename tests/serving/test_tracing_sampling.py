"""The fast sampling decision and W3C parsing give the SDK's own answers."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    DEFAULT_OFF,
    DEFAULT_ON,
    ParentBased,
    ParentBasedTraceIdRatio,
    Sampler,
    TraceIdRatioBased,
)
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags, TraceState, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from modelport.serving.tracing_otel import HexIds, OtelTracing, RequestSpan, UnsampledSpan
from modelport.serving.tracing_sampling import parse_traceparent, reads_w3c_only, standard
from modelport.serving.tracing_spans import Recorder, SpanProcessors, resource

STANDARD = [
    ALWAYS_ON,
    ALWAYS_OFF,
    DEFAULT_ON,
    DEFAULT_OFF,
    TraceIdRatioBased(0.01),
    TraceIdRatioBased(0.5),
    TraceIdRatioBased(1 / 3),
    ParentBasedTraceIdRatio(0.01),
    ParentBasedTraceIdRatio(0.25),
    ParentBasedTraceIdRatio(0.0),
    ParentBasedTraceIdRatio(1.0),
]


@pytest.mark.parametrize("sdk", STANDARD, ids=lambda s: s.get_description()[:60])
def test_the_standard_samplers_decide_as_the_sdk_does_on_many_ids(sdk: Sampler):
    fast = standard(sdk)
    assert fast is not None
    draw = random.Random(sdk.get_description())
    for _ in range(3000):
        trace_id = draw.getrandbits(128) or 1
        flags = draw.choice([None, 0, 1, 2, 3])  # no parent, or one with these trace flags
        context = Context()
        if flags is not None:
            parent = SpanContext(trace_id, draw.getrandbits(64) or 1, True, TraceFlags(flags))
            context = set_span_in_context(NonRecordingSpan(parent), context)
        expected = sdk.should_sample(context, trace_id, "request").decision.is_sampled()
        assert fast.sampled(trace_id, flags) is expected, (hex(trace_id), flags)


class _Custom(Sampler):
    def should_sample(self, *args: object, **kwargs: object) -> object:  # type: ignore[override]
        raise AssertionError("not called")

    def get_description(self) -> str:
        return "CustomSampler"


class _Overridden(TraceIdRatioBased):
    def should_sample(self, *args: object, **kwargs: object) -> object:  # type: ignore[override]
        raise AssertionError("not called")


@pytest.mark.parametrize(
    "sampler",
    [
        _Custom(),
        _Overridden(0.5),
        ParentBased(ALWAYS_ON, remote_parent_not_sampled=ALWAYS_ON),
        ParentBased(_Custom()),
    ],
)
def test_other_samplers_keep_the_sdks_path(sampler: Sampler):
    assert standard(sampler) is None


HEADERS = [
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03",
    " \t00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01 ",
    "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
    "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
    "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
    "00-4bf92f3577b34da6a3ce929d0e0e473_-00f067aa0ba902b7-01",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01" + " " * 600,
    "",
    "garbage",
]


@pytest.mark.parametrize("header", HEADERS)
@pytest.mark.parametrize("state", [None, "k=v,other=w", "k=v,bad key=x", "x=" + "y" * 600])
def test_traceparent_is_read_as_the_sdks_propagator_reads_it(header: str, state: str | None):
    carrier = {"traceparent": header} if state is None else {"traceparent": header, "tracestate": state}
    found = TraceContextTextMapPropagator().extract(carrier)
    context = NonRecordingSpan(SpanContext(0, 0, False)).get_span_context()
    for value in found.values():
        context = value.get_span_context()
    expected = None
    if context.is_valid:
        trace_state = (context.trace_state or TraceState()).to_header()
        expected = (f"{context.trace_id:032x}", f"{context.span_id:016x}", int(context.trace_flags), trace_state)
    assert parse_traceparent(header, () if state is None else (state,)) == expected


def test_the_fast_path_stands_in_for_w3c_propagators_only():
    assert reads_w3c_only(frozenset({"traceparent", "tracestate", "baggage"}))
    assert reads_w3c_only(frozenset({"traceparent", "tracestate"}))
    assert not reads_w3c_only(frozenset({"baggage"}))
    assert not reads_w3c_only(frozenset({"traceparent", "tracestate", "b3"}))


@pytest.mark.parametrize(
    ("name", "arg"),
    [
        ("parentbased_always_on", None),
        ("parentbased_traceidratio", "0.01"),
        ("traceidratio", "0.3"),
        ("always_off", None),
    ],
)
def test_the_samplers_the_otel_variables_name_take_the_fast_path(monkeypatch, name, arg):
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", name)
    if arg is not None:
        monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", arg)
    found = standard(TracerProvider(shutdown_on_exit=False).sampler)
    assert found is not None
    assert found.parent_based is name.startswith("parentbased_")


class _Listed(IdGenerator):
    """Ids from a list: what a custom OTEL_PYTHON_ID_GENERATOR gives is what the spans carry."""

    def __init__(self, ids: list[int]) -> None:
        self.ids = ids

    def generate_span_id(self) -> int:
        return self.ids.pop(0)

    def generate_trace_id(self) -> int:
        return self.ids.pop(0)


@contextmanager
def _tracing(provider: TracerProvider) -> Iterator[OtelTracing]:
    found = OtelTracing(provider, Recorder(SpanProcessors([], resource(), provider.id_generator)))
    try:
        yield found
    finally:
        found.shutdown()


def test_a_new_requests_random_ids_are_sampled_by_their_trace_id_as_the_sdk_samples_them():
    sdk = TraceIdRatioBased(0.5)
    seen: set[str] = set()
    with _tracing(TracerProvider(sampler=sdk, shutdown_on_exit=False)) as tracing:
        spans = [tracing.begin("GET", SpanKind.SERVER, {}, {}) for _ in range(2000)]
    for span in spans:
        if isinstance(span, RequestSpan):
            trace_id, span_id = span.trace_id, span.span_id
        else:
            assert isinstance(span, UnsampledSpan)
            trace_id, span_id = span.trace_id, span.span_id
        assert len(trace_id) == 32 and len(span_id) == 16 and int(trace_id, 16) and int(span_id, 16)
        decision = sdk.should_sample(Context(), int(trace_id, 16), "GET").decision.is_sampled()
        assert isinstance(span, RequestSpan) is decision
        seen |= {trace_id, span_id}
    assert len(seen) == 4000  # every id its own
    assert 800 < sum(isinstance(span, RequestSpan) for span in spans) < 1200


def test_a_custom_id_generators_ids_are_the_ones_the_spans_carry():
    ids = _Listed([0xAB << 64 | 5, 7, 0xCD, 9, 2**80, 11])
    with _tracing(TracerProvider(sampler=ALWAYS_ON, id_generator=ids, shutdown_on_exit=False)) as tracing:
        new = tracing.begin("GET", SpanKind.SERVER, {}, {})
        caller = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
        under = tracing.begin("GET", SpanKind.SERVER, caller, {})
    with _tracing(TracerProvider(sampler=ALWAYS_OFF, id_generator=ids, shutdown_on_exit=False)) as tracing:
        left_out = tracing.begin("GET", SpanKind.SERVER, {}, {})
    assert isinstance(new, RequestSpan) and isinstance(under, RequestSpan)
    assert (new.trace_id, new.span_id) == (f"{0xAB << 64 | 5:032x}", f"{7:016x}")
    assert (under.trace_id, under.span_id, under.parent_id) == (
        caller["traceparent"][3:35],
        f"{0xCD:016x}",
        "00f067aa0ba902b7",
    )
    assert isinstance(left_out, UnsampledSpan)
    assert (left_out.trace_id, left_out.span_id) == (f"{9:032x}", f"{2**80:020x}")  # not cut, as format did
    assert left_out.traceparent() == f"00-{9:032x}-{2**80:020x}-00".encode()


def test_pooled_ids_are_slices_of_one_random_draw_and_never_all_zeros():
    pool = HexIds()
    ids = [pool.take(32 if i % 3 == 0 else 16) for i in range(3000)]  # across many draws
    assert all(len(found) == (32 if i % 3 == 0 else 16) and int(found, 16) for i, found in enumerate(ids))
    assert len(set(ids)) == len(ids)
    pool.digits, pool.at = "0" * 48 + "12" * 16 + "0" * 16, 0
    assert pool.take(32) == "0" * 16 + "12" * 8  # the zero id skipped
    assert pool.take(16) == "12" * 8
    redrawn = pool.take(16)  # zeros at the end: a new draw
    assert len(redrawn) == 16 and int(redrawn, 16) and pool.at == 16


def test_a_forked_child_draws_ids_of_its_own():
    pool = HexIds()
    pool.take(16)
    reading, writing = os.pipe()
    child = os.fork()
    if child == 0:  # the child: its next id, to the parent
        os.write(writing, pool.take(16).encode())
        os._exit(0)
    os.close(writing)
    os.waitpid(child, 0)
    theirs = os.read(reading, 64).decode()
    os.close(reading)
    assert len(theirs) == 16 and theirs != pool.take(16)  # not the parent's next slice
