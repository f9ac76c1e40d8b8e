"""The plain-Python histograms of one server process expose what prometheus_client's Histogram does."""

from __future__ import annotations

import re

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from modelport.serving.histograms import LocalCounter, LocalHistogram
from modelport.serving.metrics import Metrics

BUCKETS = (0.001, 0.01, 0.1, 1.0)
# on a bound, between bounds, below the first, above the last (+Inf), and the same value twice
VALUES = (0.001, 0.005, 0.0001, 3.5, 0.1, 0.1, 0.02)


def _page(kind: type, values: tuple[float, ...]) -> str:
    registry = CollectorRegistry()
    histogram = kind("h_seconds", "help text", ("model", "version"), buckets=BUCKETS, registry=registry)
    for value in values:
        histogram.labels("m", "1").observe(value)
    histogram.labels("other", "2").observe(0.5)
    page = generate_latest(registry).decode()
    return re.sub(r"(_created\{[^}]*\}) \S+", r"\1 T", page)  # creation times differ


def test_local_histogram_exposes_what_prometheus_client_does() -> None:
    assert _page(LocalHistogram, VALUES) == _page(Histogram, VALUES)
    assert 'h_seconds_bucket{le="0.01",model="m",version="1"} 3.0' in _page(LocalHistogram, VALUES)


def test_local_histogram_refuses_wrong_labels_and_a_second_registration() -> None:
    registry = CollectorRegistry()
    histogram = LocalHistogram("h_seconds", "help", ("model",), buckets=BUCKETS, registry=registry)
    with pytest.raises(ValueError, match="expected labels"):
        histogram.labels("m", "extra")
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        LocalHistogram("h_seconds", "help", ("model",), buckets=BUCKETS, registry=registry)


def test_one_process_keeps_histograms_in_python_and_workers_share_prometheus_files(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    single = Metrics()
    assert isinstance(single.request_seconds, LocalHistogram)
    assert isinstance(single.requests, LocalCounter)
    single.request_started()
    assert single.registry.get_sample_value("modelport_inflight_requests") == 1.0
    single.request_finished(("m", "1", "v2"), 0.003)
    labels = {"model": "m", "version": "1", "protocol": "v2"}
    assert single.registry.get_sample_value("modelport_inflight_requests") == 0.0
    assert single.registry.get_sample_value("modelport_worker_requests") == 1.0
    assert single.registry.get_sample_value("modelport_request_duration_seconds_count", labels) == 1.0
    assert single.registry.get_sample_value("modelport_request_duration_seconds_sum", labels) == 0.003
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    assert isinstance(Metrics().request_seconds, Histogram)
    assert isinstance(Metrics().requests, Counter)


def _counter_page(kind: type) -> str:
    registry = CollectorRegistry()
    counter = kind("c", "help text", ("model", "outcome"), registry=registry)
    counter.labels("m", "success").inc()
    counter.labels("m", "success").inc(3)
    counter.labels("m", "INVALID_ARGUMENT").inc()
    page = generate_latest(registry).decode()
    return re.sub(r"(_created\{[^}]*\}) \S+", r"\1 T", page)


def test_local_counter_exposes_what_prometheus_client_does() -> None:
    assert _counter_page(LocalCounter) == _counter_page(Counter)
    assert 'c_total{model="m",outcome="success"} 4.0' in _counter_page(LocalCounter)
    with pytest.raises(ValueError, match="non-negative"):
        LocalCounter("d", "help", ("model",), registry=CollectorRegistry()).labels("m").inc(-1)
