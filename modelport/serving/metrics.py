"""Prometheus metrics of one server: requests, latencies, batching, queues, models."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from modelport.serving.batching import BatchStats
from modelport.serving.histograms import LocalCounter, LocalHistogram
from modelport.serving.statistics import Statistics

__all__ = ["Metrics", "VersionGauges"]

_LATENCY = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class Metrics:
    """All metrics live in this object's own registry (several servers can share a process).

    With several worker processes (``PROMETHEUS_MULTIPROC_DIR`` set) counters and histograms are
    summed across workers; model readiness and queue depth are the answering worker's own.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        labels = ("model", "version")
        self._shared = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        # one process: histograms and hot counters in plain Python (serving/histograms.py);
        # workers share prometheus_client's files
        histogram: Any = Histogram if self._shared else LocalHistogram
        counter: Any = Counter if self._shared else LocalCounter  # the counters a request or a batch increments
        self.requests = counter(
            "modelport_requests", "Inference requests", (*labels, "protocol", "outcome"), registry=r
        )
        self.request_seconds = histogram(
            "modelport_request_duration_seconds",
            "End-to-end request latency",
            (*labels, "protocol"),
            buckets=_LATENCY,
            registry=r,
        )
        self.queue_seconds = histogram(
            "modelport_queue_duration_seconds",
            "Time a request waited for its batch",
            labels,
            buckets=_LATENCY,
            registry=r,
        )
        self.compute_seconds = histogram(
            "modelport_compute_duration_seconds", "Model execution time per batch", labels, buckets=_LATENCY, registry=r
        )
        self.preprocess_seconds = histogram(
            "modelport_preprocess_duration_seconds",
            "Time decoding one request's payloads (images, text) into tensors",
            labels,
            buckets=_LATENCY,
            registry=r,
        )
        self.postprocess_seconds = histogram(
            "modelport_postprocess_duration_seconds",
            "Time turning one request's output tensors into its response",
            labels,
            buckets=_LATENCY,
            registry=r,
        )
        self.batch_size = histogram(
            "modelport_batch_size", "Rows per executed batch", labels, buckets=_BATCH, registry=r
        )
        self.batch_requests = histogram(
            "modelport_batch_requests", "Requests per executed batch", labels, buckets=_BATCH, registry=r
        )
        self.inline_batches = counter(
            "modelport_inline_batches",
            "Batches run on the event loop instead of a worker thread (compute below inline_below_ms)",
            labels,
            registry=r,
        )
        self.in_flight = Gauge(
            "modelport_inflight_requests", "Requests being handled", registry=r, multiprocess_mode="livesum"
        )
        self.worker_requests = Gauge(
            "modelport_worker_requests",
            "Inference requests this worker process handled (per pid with --workers)",
            registry=r,
            multiprocess_mode="all",
        )
        self.repository_polls = Counter(
            "modelport_repository_polls",
            "Repository polls by result: ok, unreachable (the store; what is loaded serves on), error",
            ("result",),
            registry=r,
        )
        self.statistics = Statistics()  # Triton's statistics extension, per process
        self._outcomes: dict[tuple[str, ...], Any] = {}
        self._latencies: dict[tuple[str, ...], Any] = {}
        self._batches: dict[tuple[str, str], _BatchChildren] = {}
        self._in_flight = self._handled = 0
        if not self._shared:  # one process: the gauges are read at scrape time, not written per request
            self.in_flight.set_function(lambda: self._in_flight)
            self.worker_requests.set_function(lambda: self._handled)
        self.exposition = self._exposition()

    def request_started(self) -> None:
        """An inference request reached the data plane: in flight, and counted for this worker."""
        self._in_flight += 1
        self._handled += 1
        if self._shared:  # the other workers' /metrics read these from files: written now
            self.in_flight.inc()
            self.worker_requests.inc()

    def request_finished(self, label: tuple[str, str, str], seconds: float) -> None:
        """A request of (model, version, protocol) left the data plane after ``seconds``."""
        self._in_flight -= 1
        if self._shared:
            self.in_flight.dec()
        self.latency(label).observe(seconds)

    def _exposition(self) -> CollectorRegistry:
        """What /metrics shows: this registry, or every worker's metrics when there are several."""
        shared = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if not shared:
            ProcessCollector(registry=self.registry)
            return self.registry
        exposition = CollectorRegistry()
        MultiProcessCollector(exposition, path=shared)  # type: ignore[no-untyped-call]
        ProcessCollector(registry=exposition)
        return exposition

    def outcome(self, label: tuple[str, str, str], outcome: str) -> Any:
        """The request counter of (model, version, protocol) and an outcome, cached: it is per request."""
        key = (*label, outcome)
        child = self._outcomes.get(key)
        if child is None:
            child = self._outcomes[key] = self.requests.labels(*key)
        return child

    def latency(self, label: tuple[str, str, str]) -> Any:
        """The end-to-end latency histogram of (model, version, protocol), cached."""
        child = self._latencies.get(label)
        if child is None:
            child = self._latencies[label] = self.request_seconds.labels(*label)
        return child

    def observe_batch(self, model: str, version: int, stats: BatchStats) -> None:
        """Batcher callback: batch size, per-request queue time, compute time."""
        self.statistics.batch(model, version, stats)
        key = (model, str(version))
        children = self._batches.get(key)
        if children is None:  # label lookups cost more than the observations: once per version
            children = self._batches[key] = _BatchChildren(
                self.batch_size.labels(*key),
                self.batch_requests.labels(*key),
                self.compute_seconds.labels(*key),
                self.queue_seconds.labels(*key),
                self.inline_batches.labels(*key),
            )
        children.size.observe(stats.rows)
        children.requests.observe(stats.requests)
        children.compute.observe(stats.compute_seconds)
        if stats.inline:
            children.inline.inc()
        for wait in stats.queue_seconds:
            children.queue.observe(wait)

    def watch(self, versions: Callable[[], Iterable[VersionGauges]]) -> None:
        """Queue depth and capacity, readiness and load time of every served version, read at scrape time."""
        self.exposition.register(_ModelCollector(versions))


@dataclass(frozen=True, slots=True)
class _BatchChildren:
    """One version's batch metrics, labelled once."""

    size: Any
    requests: Any
    compute: Any
    queue: Any
    inline: Any


@dataclass(frozen=True)
class VersionGauges:
    """What /metrics says of one served version: its queue depth and bound, readiness, load time, and how
    often its worker processes were restarted (handler models with ``workers: N``)."""

    model: str
    version: int
    queue_depth: int
    queue_capacity: int
    ready: bool
    load_seconds: float
    worker_restarts: int = 0


class _ModelCollector(Collector):
    def __init__(self, versions: Callable[[], Iterable[VersionGauges]]) -> None:
        self._versions = versions

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        depth = GaugeMetricFamily("modelport_queue_depth", "Requests waiting for a batch", labels=["model", "version"])
        capacity = GaugeMetricFamily(
            "modelport_queue_capacity",
            "Queue bound: more waiting requests are refused (0: not loaded)",
            labels=["model", "version"],
        )
        ready = GaugeMetricFamily("modelport_model_ready", "1 when the version serves", labels=["model", "version"])
        load = GaugeMetricFamily(
            "modelport_model_load_seconds", "Load + golden check time", labels=["model", "version"]
        )
        restarts = CounterMetricFamily(
            "modelport_worker_restarts",
            "Handler worker processes restarted after a crash or a timeout",
            labels=["model", "version"],
        )
        for v in self._versions():
            key = [v.model, str(v.version)]
            depth.add_metric(key, v.queue_depth)
            capacity.add_metric(key, v.queue_capacity)
            ready.add_metric(key, 1.0 if v.ready else 0.0)
            load.add_metric(key, v.load_seconds)
            restarts.add_metric(key, v.worker_restarts)
        yield from (depth, capacity, ready, load, restarts)
