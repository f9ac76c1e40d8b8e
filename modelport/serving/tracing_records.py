"""Span records: what the serving process makes of a sampled request, and what the exporters read.

A :data:`Record` is a finished span and its children as plain values (JSON carries them to the exporter
process). A sampled request's SERVER span is shipped as a :data:`Compact` record instead: one flat tuple of its
ids, times, the attributes every request has and the times of its ``validate`` and ``queue`` spans, with no dict,
list or child tuple made per request in the serving process (each object made there costs the event loop's core
its allocation, its garbage collection and its serialization). :func:`expand` makes the :data:`Record` of a
compact one where the spans are encoded: in the exporter process, or in the in-process sink tests use.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from opentelemetry.util.types import AttributeValue

__all__ = [
    "COMPACT",
    "NAMED",
    "Attributes",
    "ChildRecord",
    "Compact",
    "EventRecord",
    "LinkRecord",
    "Received",
    "Record",
    "expand",
]

Attributes = dict[str, AttributeValue]
EventRecord = tuple[str, Attributes, int]  # name, attributes, time (ns)
LinkRecord = tuple[str, str, int, str]  # trace id, span id (hex), trace flags, trace state (its header, "" for none)
ChildRecord = tuple[
    str,  # 0 name
    int,  # 1 start (ns since the epoch)
    int,  # 2 end
    Attributes,  # 3
    int,  # 4 status code (StatusCode's value)
    str,  # 5 status description
    tuple[EventRecord, ...],  # 6
    tuple[LinkRecord, ...],  # 7
]
"""A span under a record's own (INTERNAL; its id is made where it is exported: nothing here refers to it)."""
Record = tuple[
    str,  # 0 name
    int,  # 1 kind (SpanKind's value)
    str,  # 2 trace id (32 hex digits)
    str,  # 3 span id (16 hex digits; "": made where it is exported)
    int,  # 4 trace flags
    str,  # 5 trace state (its header, "" for none)
    str,  # 6 parent span id (16 hex digits; "": a root span)
    bool,  # 7 whether the parent is remote (the caller's)
    int,  # 8 start (ns since the epoch)
    int,  # 9 end
    Attributes,  # 10
    int,  # 11 status code (StatusCode's value)
    str,  # 12 status description
    tuple[EventRecord, ...],  # 13
    tuple[LinkRecord, ...],  # 14
    Sequence[ChildRecord],  # 15 its children
]
"""A finished span and its children as the serving process makes them: plain values only."""
COMPACT = 0
"""The first item of a :data:`Compact` record (a :data:`Record`'s is its name, a string)."""
Compact = tuple[
    int,  # 0 COMPACT
    str,  # 1 name
    int,  # 2 kind (SpanKind's value)
    str,  # 3 trace id (32 hex digits)
    str,  # 4 span id (16 hex digits)
    int,  # 5 trace flags
    str,  # 6 trace state (its header, "" for none)
    str,  # 7 parent span id (the caller's, 16 hex digits; "": a root span)
    int,  # 8 start (ns since the epoch)
    int,  # 9 end
    int,  # 10 status code (StatusCode's value)
    str,  # 11 status description
    Attributes | None,  # 12 attributes beyond the named ones below (gRPC's, a sampler's), or None
    str | None,  # 13 http.request.method (None: not set, as for the named ones below)
    str | None,  # 14 url.path
    str | None,  # 15 modelport.request_id
    str | None,  # 16 http.route
    str | None,  # 17 modelport.model
    str | None,  # 18 modelport.version
    str | None,  # 19 modelport.protocol
    str | None,  # 20 modelport.outcome
    int,  # 21 http.response.status_code (0: none)
    int,  # 22 its validate span's start (0: no such span)
    int,  # 23 its end
    int,  # 24 its queue span's start: when it was enqueued (0: no such span)
    int,  # 25 its end: when its batch started
    int,  # 26 the queue span's modelport.batch.size (rows)
    int,  # 27 its modelport.batch.requests
    Sequence[ChildRecord] | None,  # 28 its other children (processors' spans, a failed validation), or None
]
"""A sampled request's SERVER span and its ``validate`` and ``queue`` children, flat (:func:`expand`)."""
Received = Sequence[Any]
"""A record (or one of its parts) as a sink may get it: from the exporter process's pipe, JSON has made its
tuples lists. What reads records takes this type, so that the compiled modules (``native.py``) check no tuple
type."""

NAMED = (
    (13, "http.request.method"),
    (14, "url.path"),
    (15, "modelport.request_id"),
    (16, "http.route"),
    (17, "modelport.model"),
    (18, "modelport.version"),
    (19, "modelport.protocol"),
    (20, "modelport.outcome"),
)
"""The string attributes a :data:`Compact` record keeps by position: (index, key), in the order
:func:`expand` adds them (after its extra ones, before ``http.response.status_code``)."""


def expand(received: Received) -> Received:
    """The :data:`Record` of a :data:`Compact` record (any other record as it is)."""
    if received[0] != COMPACT:
        return received
    extra: Attributes | None = received[12]
    attributes: Attributes = dict(extra) if extra else {}
    for index, key in NAMED:
        value = received[index]
        if value is not None:
            attributes[key] = value
    if received[21]:
        attributes["http.response.status_code"] = received[21]
    children: list[Any] = []
    if received[23]:
        children.append(("validate", received[22], received[23], {}, 0, "", (), ()))
    if received[28]:
        children += received[28]
    if received[24]:
        sizes: Attributes = {"modelport.batch.size": received[26], "modelport.batch.requests": received[27]}
        children.append(("queue", received[24], received[25], sizes, 0, "", (), ()))
    name, kind, trace_id, span_id, flags, state, parent_id, start, end, code, description = received[1:12]
    return (
        name,
        kind,
        trace_id,
        span_id,
        flags,
        state,
        parent_id,
        True,
        start,
        end,
        attributes,
        code,
        description,
        (),
        (),
        children,
    )
