"""Histograms (and counters) of one server process kept in plain Python, exposed as prometheus_client exposes its own.

prometheus_client's ``Histogram`` takes a lock for its sum and another for the bucket on every
observation, after a linear search of the buckets: about 0.7 us, and a request to a small model
makes five (its latency; a batch of one's rows, requests, compute and queue time). Every observation
here is made on the event loop of one process, so none of that is needed: :meth:`Child.observe` is a
bisect and two additions. The samples (``_bucket`` with ``le``, ``_count``, ``_sum``, ``_created``)
are the ones prometheus_client writes for a labelled histogram. With ``--workers`` the workers share
their metrics through files that only prometheus_client's own classes write: ``serving/metrics.py``
picks this class for one process only. :class:`LocalCounter` does the same for the counters a request
increments (prometheus_client's ``Counter.inc`` takes a lock too: ~0.4 us).
"""

from __future__ import annotations

import math
import os
import time
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

__all__ = ["Child", "CounterChild", "LocalCounter", "LocalHistogram"]

# prometheus_client's rule for its own metrics' ``_created`` samples
_CREATED = os.environ.get("PROMETHEUS_DISABLE_CREATED_SERIES", "False").lower() not in ("true", "1", "t")


class Child:
    """One label set's buckets (counts per bucket, not yet cumulative), sum and creation time."""

    __slots__ = ("_bounds", "counts", "created", "sum")

    def __init__(self, bounds: list[float]) -> None:
        self._bounds = bounds
        self.counts = [0] * len(bounds)
        self.sum = 0.0
        self.created = time.time()

    def observe(self, amount: float) -> None:
        """Count ``amount`` in the first bucket whose upper bound is at least it (``le``)."""
        self.counts[bisect_left(self._bounds, amount)] += 1
        self.sum += amount


C = TypeVar("C")


class _Family(Collector, Generic[C]):
    """A labelled family: its children by label values, made at first use by :meth:`_child`."""

    _kind = ""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str], registry: CollectorRegistry) -> None:
        self._name, self._documentation, self._labelnames = name, documentation, tuple(labelnames)
        self._children: dict[tuple[str, ...], C] = {}
        registry.register(self)

    def _child(self) -> C:
        raise NotImplementedError

    def labels(self, *values: str) -> C:
        """The child of these label values (made at first use)."""
        key = tuple(str(v) for v in values)
        child = self._children.get(key)
        if child is None:
            if len(key) != len(self._labelnames):
                raise ValueError(f"{self._name}: expected labels {self._labelnames}, got {key}")
            child = self._children[key] = self._child()
        return child

    def describe(self) -> Iterator[Metric]:
        """The family without samples: the registry refuses a second collector of the same names."""
        yield Metric(self._name, self._documentation, self._kind)


class LocalHistogram(_Family[Child]):
    """A labelled histogram with prometheus_client's interface for what modelport uses: ``labels(...).observe``."""

    _kind = "histogram"

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        buckets: Sequence[float],
        registry: CollectorRegistry,
    ) -> None:
        bounds = sorted(float(b) for b in buckets)
        if bounds[-1] != math.inf:
            bounds.append(math.inf)
        self._bounds = bounds
        self._le = [floatToGoString(b) for b in bounds]  # type: ignore[no-untyped-call]
        super().__init__(name, documentation, labelnames, registry)

    def _child(self) -> Child:
        return Child(self._bounds)

    def collect(self) -> Iterator[Metric]:
        """Every child's cumulative buckets, count, sum and creation time."""
        metric = Metric(self._name, self._documentation, self._kind)
        for values, child in list(self._children.items()):
            labels = dict(zip(self._labelnames, values, strict=True))
            total = 0.0
            for le, count in zip(self._le, list(child.counts), strict=True):
                total += count
                metric.add_sample(self._name + "_bucket", {**labels, "le": le}, total)
            metric.add_sample(self._name + "_count", labels, total)
            metric.add_sample(self._name + "_sum", labels, child.sum)
            if _CREATED:
                metric.add_sample(self._name + "_created", labels, child.created)
        yield metric


class CounterChild:
    """One label set's count and creation time."""

    __slots__ = ("created", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self.created = time.time()

    def inc(self, amount: float = 1.0) -> None:
        """Add ``amount`` (not negative: a counter only grows)."""
        if amount < 0:
            raise ValueError("counters can only be incremented by non-negative amounts")
        self.value += amount


class LocalCounter(_Family[CounterChild]):
    """A labelled counter with prometheus_client's interface for what modelport uses: ``labels(...).inc``."""

    _kind = "counter"

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str], registry: CollectorRegistry) -> None:
        super().__init__(name.removesuffix("_total"), documentation, labelnames, registry)  # as prometheus_client

    def _child(self) -> CounterChild:
        return CounterChild()

    def collect(self) -> Iterator[Metric]:
        """Every child's ``_total`` and creation time."""
        metric = Metric(self._name, self._documentation, self._kind)
        for values, child in list(self._children.items()):
            labels = dict(zip(self._labelnames, values, strict=True))
            metric.add_sample(self._name + "_total", labels, child.value)
            if _CREATED:
                metric.add_sample(self._name + "_created", labels, child.created)
        yield metric
