"""The fast sampling decision and W3C parsing give the SDK's own answers."""

from __future__ import annotations

import random

import pytest
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
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
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from modelport.serving.tracing_sampling import parse_traceparent, reads_w3c_only, standard

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
