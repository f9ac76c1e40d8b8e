"""What a tune measures: each level of a candidate's sweep, each candidate, and how candidates are ranked."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from modelport.loadtest.slo import Slo, SloResult
from modelport.tune.options import Objective, TuneOptions
from modelport.tune.space import Candidate, Space

__all__ = [
    "LOADGEN_BOUND",
    "TUNE_FILE",
    "Confirmation",
    "LevelPoint",
    "Measurement",
    "TuneResult",
    "closest_miss",
    "score",
]

TUNE_FILE = "tune.json"
LOADGEN_BOUND = 0.85  # a generator process busier than this (CPU s per s) may be what limits the throughput


@dataclass(frozen=True)
class LevelPoint:
    """One concurrency level of a sweep, measured after its warm-up."""

    users: int
    rps: float
    latency_ms: dict[str, float]  # p50, p90, p95, p99, p999, mean, max
    error_rate: float
    requests: int
    loadgen_cpu: float  # the busiest generator process, CPU s per s
    server_cpu: float | None  # cores the server's processes used on average
    cpus_busy: float | None = None  # the server's CPUs' busy share, whoever ran on them
    slos: tuple[SloResult, ...] = ()

    @property
    def passed(self) -> bool:
        return all(s.passed for s in self.slos)

    @property
    def p50_ms(self) -> float:
        return self.latency_ms["p50"]

    @property
    def p99_ms(self) -> float:
        return self.latency_ms["p99"]

    def measured(self) -> dict[str, float]:
        """The values SLOs are checked against (latencies in ms)."""
        return {**self.latency_ms, "rps": self.rps, "error_rate": self.error_rate}

    def to_json(self) -> dict[str, Any]:
        return {
            "users": self.users,
            "rps": self.rps,
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "latency_ms": self.latency_ms,
            "error_rate": self.error_rate,
            "requests": self.requests,
            "loadgen_cpu": self.loadgen_cpu,
            "server_cpu": self.server_cpu,
            "cpus_busy": self.cpus_busy,
            "slos": [s.to_json() for s in self.slos],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LevelPoint:
        return cls(
            users=data["users"],
            rps=data["rps"],
            latency_ms=data["latency_ms"],
            error_rate=data["error_rate"],
            requests=data["requests"],
            loadgen_cpu=data["loadgen_cpu"],
            server_cpu=data["server_cpu"],
            cpus_busy=data.get("cpus_busy"),
            slos=tuple(SloResult(**s) for s in data.get("slos", ())),
        )


@dataclass(frozen=True)
class Measurement:
    """A candidate's sweep: its levels, the server's peak RSS, or why it could not be measured."""

    candidate: Candidate
    levels: tuple[LevelPoint, ...] = ()
    rss_mb: float | None = None
    error: str = ""
    wall_s: float = 0.0
    notes: tuple[str, ...] = field(default=())

    @property
    def best_level(self) -> LevelPoint | None:
        """The level with the most throughput among those that met every SLO."""
        passing = [lv for lv in self.levels if lv.passed]
        return max(passing, key=lambda lv: lv.rps) if passing else None

    @property
    def max_rps_under_slo(self) -> float | None:
        best = self.best_level
        return best.rps if best else None

    @property
    def loadgen_bound(self) -> bool:
        """The generator ran near a full core at the level that set the ceiling."""
        top = self.best_level or (max(self.levels, key=lambda lv: lv.rps) if self.levels else None)
        return top is not None and top.loadgen_cpu >= LOADGEN_BOUND

    def to_json(self) -> dict[str, Any]:
        best = self.best_level
        return {
            "key": self.candidate.key,
            "variant": self.candidate.variant,
            "config": self.candidate.config,
            "server_flags": {"workers": self.candidate.workers},
            "knobs": {k: list(v) if isinstance(v, tuple) else v for k, v in self.candidate.values},
            "max_rps_under_slo": self.max_rps_under_slo,
            "p50_ms": best.p50_ms if best else None,
            "p99_ms": best.p99_ms if best else None,
            "users_at_max": best.users if best else None,
            "rss_mb": self.rss_mb,
            "loadgen_bound": self.loadgen_bound,
            "error": self.error,
            "wall_s": self.wall_s,
            "notes": list(self.notes),
            "levels": [lv.to_json() for lv in self.levels],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Measurement:
        """Read back one entry of ``tune.json`` (``--resume``)."""
        values = tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in data["knobs"].items())
        return cls(
            candidate=Candidate(values),
            levels=tuple(LevelPoint.from_json(lv) for lv in data["levels"]),
            rss_mb=data["rss_mb"],
            error=data["error"],
            wall_s=data["wall_s"],
            notes=tuple(data.get("notes", ())),
        )


def score(measurement: Measurement, objective: Objective, target_rps: float | None = None) -> float | None:
    """Higher is better; None when the candidate met no SLO level (or never reached ``target_rps``)."""
    passing = [lv for lv in measurement.levels if lv.passed]
    if target_rps is not None:
        passing = [lv for lv in passing if lv.rps >= target_rps] if objective != "max-rps" else passing
    if not passing or measurement.error:
        return None
    if objective == "max-rps":
        return max(lv.rps for lv in passing)
    if objective == "min-p99":
        return -min(passing, key=lambda lv: lv.users).p99_ms  # at the lightest load that qualifies
    return -(measurement.rss_mb or 0.0)


def closest_miss(measurements: list[Measurement], slos: tuple[Slo, ...]) -> tuple[Measurement, LevelPoint] | None:
    """The candidate level that missed the SLOs by the least (its worst relative miss), for the error message."""
    best: tuple[float, Measurement, LevelPoint] | None = None
    for m in measurements:
        for level in m.levels:
            misses = [_relative_miss(r) for r in level.slos if not r.passed]
            worst = max(misses, default=0.0)
            if best is None or worst < best[0]:
                best = (worst, m, level)
    return (best[1], best[2]) if best else None


def _relative_miss(result: SloResult) -> float:
    if result.threshold == 0:
        return abs(result.value)
    return abs(result.value - result.threshold) / abs(result.threshold)


@dataclass(frozen=True)
class Confirmation:
    """The winner and the default re-measured in alternating rounds, each on a fresh server."""

    default: tuple[Measurement, ...]
    best: tuple[Measurement, ...]
    objective: Objective = "max-rps"  # what the winner won on, and so what it must keep winning on
    target_rps: float | None = None

    @property
    def default_rps(self) -> float:
        return statistics.median(m.max_rps_under_slo or 0.0 for m in self.default)

    @property
    def best_rps(self) -> float:
        return statistics.median(m.max_rps_under_slo or 0.0 for m in self.best)

    @property
    def spread(self) -> float:
        """The largest max/min ratio of one side's rounds (1.0: the rounds agreed exactly)."""
        spreads = [
            max(rps) / min(rps)
            for rps in ([m.max_rps_under_slo or 0.0 for m in side] for side in (self.default, self.best))
            if rps and min(rps) > 0
        ]
        return max(spreads, default=1.0)

    @property
    def ratio(self) -> float | None:
        """Tuned over default max req/s under the SLO (None when the default met the SLO at no level)."""
        return self.best_rps / self.default_rps if self.default_rps > 0 else None

    def median_score(self, side: tuple[Measurement, ...]) -> float | None:
        """The median of one side's scores on the objective (None when a round met no SLO level)."""
        scores = [score(m, self.objective, self.target_rps) for m in side]
        known = [s for s in scores if s is not None]
        return statistics.median(known) if known and len(known) == len(scores) else None

    @property
    def winner_lost(self) -> bool:
        """The winner measured worse than the default on the objective: fewer req/s under the SLO for
        max-rps, a higher p99 for min-p99, more memory for min-memory (medians of the rounds)."""
        if self.objective == "max-rps":
            return self.ratio is not None and self.ratio < 1.0
        best, default = self.median_score(self.best), self.median_score(self.default)
        return default is not None and (best is None or best < default)


@dataclass(frozen=True)
class TuneResult:
    """Every measured candidate, the winner and the default, the confirming rounds and the search's time."""

    options: TuneOptions
    space: Space
    measurements: tuple[Measurement, ...]
    best: Measurement | None
    default: Measurement | None
    confirmation: Confirmation | None
    search_s: float
    stopped: str  # "explored", "search done" or "budget"
    loadgen_cpus: tuple[int, ...]

    @property
    def ok(self) -> bool:
        """Some candidate met every SLO."""
        return self.best is not None

    @property
    def confirmed_loss(self) -> bool:
        """The confirming rounds measured the winner below the default (``--apply`` then writes nothing)."""
        c = self.confirmation
        return c is not None and c.winner_lost

    def score(self, measurement: Measurement) -> float | None:
        return score(measurement, self.options.objective, self.options.target_rps)
