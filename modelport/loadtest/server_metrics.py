"""The server's side of a load test: its Prometheus ``/metrics`` before and after, as deltas.

Queue time, compute time and batch sizes come from modelport's histograms; for another server
without them the section is simply absent.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from modelport.errors import ModelportError
from modelport.loadtest.wire import http_call

__all__ = ["Scrape", "scrape", "server_view"]

_QUEUE = "modelport_queue_duration_seconds"
_COMPUTE = "modelport_compute_duration_seconds"
_BATCH = "modelport_batch_size"
_REQUESTS = "modelport_requests_total"
_LOAD = "modelport_model_load_seconds"


@dataclass(frozen=True)
class Scrape:
    """One scrape: every sample keyed by (sample name, sorted labels)."""

    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]

    def select(self, name: str, model: str, version: str | None) -> dict[tuple[tuple[str, str], ...], float]:
        """Samples of ``name`` for one model (and version, when given)."""
        found = {}
        for (sample, labels), value in self.samples.items():
            tags = dict(labels)
            if sample == name and tags.get("model") == model and version in (None, tags.get("version")):
                found[labels] = value
        return found


def scrape(url: str, timeout: float = 10) -> Scrape:
    """GET ``url`` (a Prometheus text endpoint) and parse it."""
    reply = http_call(url, timeout=timeout)
    if reply.status != 200:
        raise ModelportError(f"GET {url}: HTTP {reply.status}")
    samples = {}
    try:
        for family in text_string_to_metric_families(reply.body.decode("utf-8", "replace")):
            for sample in family.samples:
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = float(sample.value)
    except ValueError as exc:  # the parser's only complaint about text that is not the exposition format
        raise ModelportError(f"GET {url}: not Prometheus metrics ({str(exc)[:80]})") from None
    return Scrape(samples)


def server_view(before: Scrape, after: Scrape, model: str, version: str | None) -> dict[str, Any]:
    """Queue time, compute time (ms), batch-size distribution and request outcomes between two scrapes."""
    view: dict[str, Any] = {
        "queue_ms": _histogram(before, after, _QUEUE, model, version, 1000.0),
        "compute_ms": _histogram(before, after, _COMPUTE, model, version, 1000.0),
        "batch_size": _histogram(before, after, _BATCH, model, version, 1.0),
        "requests_by_outcome": _outcomes(before, after, model, version),
    }
    load = after.select(_LOAD, model, version)
    if load:
        view["load_seconds"] = max(load.values())
    return view


def _summed(scrape_: Scrape, name: str, model: str, version: str | None, key: str) -> dict[str, float]:
    """Sum over versions/protocols of samples of ``name``, keyed by the label ``key`` ('' for none)."""
    totals: dict[str, float] = defaultdict(float)
    for labels, value in scrape_.select(name, model, version).items():
        totals[dict(labels).get(key, "")] += value
    return dict(totals)


def _histogram(before: Scrape, after: Scrape, name: str, model: str, version: str | None, scale: float) -> Any:
    """Count, mean, p50/p90/p99 (interpolated in buckets) and the per-bucket counts of a histogram delta."""
    start, end = (_summed(s, name + "_bucket", model, version, "le") for s in (before, after))
    count = sum(after.select(name + "_count", model, version).values()) - sum(
        before.select(name + "_count", model, version).values()
    )
    total = sum(after.select(name + "_sum", model, version).values()) - sum(
        before.select(name + "_sum", model, version).values()
    )
    if count <= 0:
        return None
    bounds = sorted((float(le), end[le] - start.get(le, 0.0)) for le in end)
    per_bucket, previous = {}, 0.0
    for upper, cumulative in bounds:
        label = "+Inf" if math.isinf(upper) else f"{upper * scale:g}"
        per_bucket[label] = cumulative - previous
        previous = cumulative
    return {
        "count": count,
        "mean": total / count * scale,
        "p50": _quantile(bounds, count, 0.50) * scale,
        "p90": _quantile(bounds, count, 0.90) * scale,
        "p99": _quantile(bounds, count, 0.99) * scale,
        "buckets": per_bucket,
    }


def _quantile(bounds: list[tuple[float, float]], count: float, q: float) -> float:
    """Prometheus' histogram_quantile: linear within the bucket that holds the rank."""
    rank, lower, below = q * count, 0.0, 0.0
    for upper, cumulative in bounds:
        if cumulative >= rank:
            if math.isinf(upper):
                return lower
            inside = cumulative - below
            return lower + (upper - lower) * ((rank - below) / inside if inside else 0.0)
        lower, below = upper, cumulative
    return lower


def _outcomes(before: Scrape, after: Scrape, model: str, version: str | None) -> dict[str, float]:
    start = _summed(before, _REQUESTS, model, version, "outcome")
    end = _summed(after, _REQUESTS, model, version, "outcome")
    return {k: v - start.get(k, 0.0) for k, v in end.items() if v - start.get(k, 0.0)}
