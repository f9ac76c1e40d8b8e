"""A request's parent (the W3C ``traceparent``/``tracestate`` it carried) and its sampling decision, without the
SDK's objects where the configuration is a standard one.

The SDK's way costs ~8-10 µs a request, sampled or not (a ``Context``, a ``NonRecordingSpan`` and a
``SpanContext`` per request, then the sampler's ``SamplingResult``). The standard samplers' decisions are a
comparison on the trace id bits or on the parent's sampled flag, and the W3C header is one regular expression:
:func:`standard` recognises those samplers (by their own description of themselves, with their
``should_sample`` not overridden) and :func:`parse_traceparent` reads the header as the SDK's propagator does.
Anything else (a custom sampler, other propagators) keeps the SDK's path: see ``OtelTracing.begin``.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    Sampler,
    StaticSampler,
    TraceIdRatioBased,
)
from opentelemetry.trace import TraceState

__all__ = [
    "LOW_BITS",
    "ZERO_SPAN",
    "ZERO_TRACE",
    "Parent",
    "StandardSampler",
    "parse_traceparent",
    "reads_w3c_only",
    "standard",
]

LOW_BITS: Final = (1 << 64) - 1  # the trace id bits the ratio samplers compare
# the SDK propagator's own pattern (TraceContextTextMapPropagator), and its limits
_TRACEPARENT = re.compile(r"^[ \t]*([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(?:(-.*)|[ \t]*)$")
_MAX_TRACEPARENT = 512
_MAX_TRACESTATE = 512
ZERO_TRACE: Final = "0" * 32  # an invalid trace id, as W3C and the SDK have it
ZERO_SPAN: Final = "0" * 16  # an invalid span id
_W3C_FIELDS = frozenset({"traceparent", "tracestate", "baggage"})  # tracecontext and baggage: the default


Parent = tuple[str, str, int, str]
"""A caller's span as its ``traceparent`` names it: trace id (32 hex digits), span id (16), trace flags, and the
``tracestate`` header as the SDK re-writes it ("" for none)."""


def parse_traceparent(traceparent: str, tracestate: Sequence[str] = ()) -> Parent | None:
    """The parent a W3C ``traceparent`` (and its ``tracestate`` headers) name, or None where the SDK's propagator
    would find none (malformed, version ``ff``, extra fields in version 00, zero ids, too long)."""
    if len(traceparent) > _MAX_TRACEPARENT:
        return None
    match = _TRACEPARENT.search(traceparent)
    if match is None:
        return None
    version, trace_id, span_id, flags, rest = match.groups()
    if trace_id == ZERO_TRACE or span_id == ZERO_SPAN or version == "ff" or (version == "00" and rest):
        return None
    return trace_id, span_id, int(flags, 16), _trace_state(tracestate) if tracestate else ""


def _trace_state(headers: Sequence[str]) -> str:
    """The ``tracestate`` as the SDK keeps it: dropped whole when too long, invalid entries left out."""
    if sum(len(header) for header in headers) + len(headers) - 1 > _MAX_TRACESTATE:
        return ""
    return TraceState.from_header(list(headers)).to_header()


def reads_w3c_only(fields: frozenset[str]) -> bool:
    """Whether propagators with these header ``fields`` read what :func:`parse_traceparent` reads (the W3C trace
    context, maybe baggage, which no sampling decision or span here reads), so that it can stand in for them."""
    return "traceparent" in fields and fields <= _W3C_FIELDS


@dataclass(frozen=True, slots=True)
class StandardSampler:
    """A standard sampler's decision: with a parent, its sampled flag (``parent_based``); else the trace id's low
    64 bits below ``bound`` (``TraceIdRatioBased``'s own bound; 2**64 always, 0 never)."""

    bound: int
    parent_based: bool

    def sampled(self, trace_id: int, parent_flags: int | None) -> bool:
        """The decision for the trace ``trace_id`` whose parent has ``parent_flags`` (None: no parent)."""
        if parent_flags is not None and self.parent_based:
            return bool(parent_flags & 1)
        return (trace_id & LOW_BITS) < self.bound


def standard(sampler: Sampler) -> StandardSampler | None:
    """``sampler`` as a :class:`StandardSampler` when it is one of the samplers ``OTEL_TRACES_SAMPLER`` names
    (always_on, always_off, traceidratio and their parentbased_ forms); None for any other."""
    if isinstance(sampler, ParentBased):
        if type(sampler).should_sample is not ParentBased.should_sample:
            return None
        description: str = sampler.get_description()  # type: ignore[no-untyped-call]
        for root in _roots(description):
            decision = _root(root)
            if decision is not None and ParentBased(root).get_description() == description:  # type: ignore[no-untyped-call]
                return StandardSampler(decision.bound, parent_based=True)
        return None
    return _root(sampler)


def _roots(description: str) -> list[Sampler]:
    """The roots a ParentBased sampler's description may name."""
    found = re.match(r"ParentBased\{root:TraceIdRatioBased\{([^}]*)\}", description)
    roots: list[Sampler] = [ALWAYS_ON, ALWAYS_OFF]
    if found is not None:
        with contextlib.suppress(ValueError):  # not a rate this sampler was made with
            roots.append(TraceIdRatioBased(float(found.group(1))))
    return roots


def _root(sampler: Sampler) -> StandardSampler | None:
    if isinstance(sampler, TraceIdRatioBased) and type(sampler).should_sample is TraceIdRatioBased.should_sample:
        return StandardSampler(sampler.bound, parent_based=False)
    if isinstance(sampler, StaticSampler) and type(sampler).should_sample is StaticSampler.should_sample:
        always = sampler.get_description() == ALWAYS_ON.get_description()
        return StandardSampler(1 << 64 if always else 0, parent_based=False)
    return None
