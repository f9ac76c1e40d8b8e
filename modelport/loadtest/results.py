"""One level's results: locust's totals (``--json-file``) with exact latencies from the recorder."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from modelport.loadtest.locust_process import LocustOutput
from modelport.loadtest.options import Level
from modelport.loadtest.slo import SloResult

__all__ = ["PERCENTILES", "LevelResult", "level_result"]

PERCENTILES = {"p50": 50.0, "p90": 90.0, "p95": 95.0, "p99": 99.0, "p999": 99.9}


@dataclass
class LevelResult:
    """Throughput, latencies (ms), errors and the server's view of one level."""

    level: Level
    duration_s: float
    requests: int
    failures: int
    rps: float
    latency_ms: dict[str, float]
    errors: dict[str, int]
    timeline: dict[str, list[float]]
    latency_source: str
    server: dict[str, Any] | None = None
    slos: list[SloResult] = field(default_factory=list)

    @property
    def error_rate(self) -> float:
        return self.failures / self.requests if self.requests else 1.0

    @property
    def passed(self) -> bool:
        return all(s.passed for s in self.slos)

    def measured(self) -> dict[str, float]:
        """The values SLOs are checked against."""
        return {**self.latency_ms, "rps": self.rps, "error_rate": self.error_rate}

    def to_json(self) -> dict[str, Any]:
        return {
            "users": self.level.users,
            "target_rps": self.level.rps,
            "duration_s": self.duration_s,
            "requests": self.requests,
            "failures": self.failures,
            "error_rate": self.error_rate,
            "rps": self.rps,
            "latency_ms": self.latency_ms,
            "latency_source": self.latency_source,
            "errors": self.errors,
            "server": self.server,
            "slos": [s.to_json() for s in self.slos],
            "passed": self.passed,
            "timeline": self.timeline,
        }


def level_result(level: Level, output: LocustOutput) -> LevelResult:
    """Totals from locust's JSON stats; percentiles from the recorder's exact samples when they agree."""
    requests = sum(int(s["num_requests"]) for s in output.stats)
    failures = sum(int(s["num_failures"]) for s in output.stats)
    starts = [float(s["start_time"]) for s in output.stats]
    ends = [float(s["last_request_timestamp"] or s["start_time"]) for s in output.stats]
    duration = max(ends) - min(starts) if output.stats else 0.0
    samples = output.samples
    exact = samples is not None and len(samples["latency_ms"]) == requests and requests > 0
    if exact and samples is not None:
        latency = _exact(samples["latency_ms"])
        timeline = _timeline(samples, min(starts))
    else:
        latency = _from_histogram(output.stats)
        timeline = {"t": [], "rps": [], "p50": [], "p90": [], "p99": [], "failures": []}
    errors = output.errors or ({"failures (see locust.log)": failures} if failures else {})
    return LevelResult(
        level=level,
        duration_s=duration,
        requests=requests,
        failures=failures,
        rps=requests / duration if duration > 0 else 0.0,
        latency_ms=latency,
        errors=errors,
        timeline=timeline,
        latency_source="exact" if exact else "locust histogram",
    )


def _exact(latency: np.ndarray[Any, Any]) -> dict[str, float]:
    values = {name: float(np.percentile(latency, q)) for name, q in PERCENTILES.items()}
    return {**values, "mean": float(latency.mean()), "min": float(latency.min()), "max": float(latency.max())}


def _from_histogram(stats: list[dict[str, Any]]) -> dict[str, float]:
    """Percentiles from locust's rounded response-time histogram (exact below 100 ms, then 10 ms steps)."""
    counts: dict[float, int] = {}
    for entry in stats:
        for rounded, count in entry["response_times"].items():
            counts[float(rounded)] = counts.get(float(rounded), 0) + int(count)
    total = sum(counts.values())
    if not total:
        return dict.fromkeys((*PERCENTILES, "mean", "min", "max"), 0.0)
    keys = sorted(counts)
    cumulative = np.cumsum([counts[k] for k in keys])
    values = {name: keys[int(np.searchsorted(cumulative, q / 100 * total))] for name, q in PERCENTILES.items()}
    mean = sum(float(s["total_response_time"]) for s in stats) / total
    return {**values, "mean": mean, "min": keys[0], "max": max(float(s["max_response_time"]) for s in stats)}


def _timeline(samples: dict[str, np.ndarray[Any, Any]], start: float) -> dict[str, list[float]]:
    """Per-second throughput and latency percentiles, in seconds since the level started.

    The last second is cut short by the end of the run; it is left out when there are others.
    """
    second = np.floor(samples["end"] - min(start, float(samples["end"].min()))).astype(np.int64)
    latency, failed = samples["latency_ms"], samples["failed"]
    timeline: dict[str, list[float]] = {"t": [], "rps": [], "p50": [], "p90": [], "p99": [], "failures": []}
    seconds = np.unique(second)
    for s in seconds[:-1] if len(seconds) > 2 else seconds:
        chosen = second == s
        timeline["t"].append(float(s))
        timeline["rps"].append(float(chosen.sum()))
        timeline["failures"].append(float(failed[chosen].sum()))
        for name in ("p50", "p90", "p99"):
            timeline[name].append(float(np.percentile(latency[chosen], PERCENTILES[name])))
    return timeline
