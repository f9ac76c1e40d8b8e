"""The load-test report: ``report.json``, ``report.csv`` and the text table printed at the end."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelport.loadtest.results import LevelResult

__all__ = ["LoadTestReport", "render_levels", "write_csv", "write_json"]


@dataclass
class LoadTestReport:
    """Every level of one run against one model, with the SLOs it was held to."""

    target: dict[str, Any]
    levels: list[LevelResult]
    slos: tuple[str, ...]
    out: Path
    started_at: str
    files: dict[str, str] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(level.passed for level in self.levels)

    @property
    def max_rps_under_slo(self) -> float | None:
        """The highest throughput among the levels that met every SLO."""
        good = [level.rps for level in self.levels if level.passed and level.requests]
        return max(good) if good else None

    def failed_slos(self) -> list[str]:
        """One line per SLO that failed on a level, saying by how much."""
        return [
            f"{s.slo} at {level.level.label}: {s.detail}{_failed_requests(level) if s.metric == 'error_rate' else ''}"
            for level in self.levels
            for s in level.slos
            if not s.passed
        ]

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "started_at": self.started_at,
            "slos": list(self.slos),
            "passed": self.passed,
            "failed_slos": self.failed_slos(),
            "max_rps_under_slo": self.max_rps_under_slo,
            "levels": [level.to_json() for level in self.levels],
            "files": self.files,
        }


def _failed_requests(level: LevelResult) -> str:
    """How many requests failed and the most frequent reason, for an error-rate miss."""
    if not level.requests:
        return " (no request completed)"
    top = max(level.errors.items(), key=lambda item: item[1], default=None)
    reason = f"; most often ({top[1]}x): {top[0]}" if top else ""
    return f" ({level.failures} of {level.requests} requests failed{reason})"


def write_json(report: LoadTestReport, path: Path) -> Path:
    path.write_text(json.dumps(report.to_json(), indent=2) + "\n")
    return path


_CSV_COLUMNS = [
    "users",
    "target_rps",
    "duration_s",
    "requests",
    "failures",
    "error_rate",
    "rps",
    "p50_ms",
    "p90_ms",
    "p95_ms",
    "p99_ms",
    "max_ms",
    "mean_ms",
    "server_queue_mean_ms",
    "server_compute_mean_ms",
    "server_mean_batch_size",
    "slos_passed",
]


def write_csv(report: LoadTestReport, path: Path) -> Path:
    """One row per level."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(_CSV_COLUMNS)
        for level in report.levels:
            lat, server = level.latency_ms, level.server or {}
            writer.writerow(
                [
                    level.level.users,
                    level.level.rps or "",
                    f"{level.duration_s:.2f}",
                    level.requests,
                    level.failures,
                    f"{level.error_rate:.6f}",
                    f"{level.rps:.2f}",
                    *(f"{lat[k]:.3f}" for k in ("p50", "p90", "p95", "p99", "max", "mean")),
                    _mean(server.get("queue_ms")),
                    _mean(server.get("compute_ms")),
                    _mean(server.get("batch_size")),
                    level.passed,
                ]
            )
    return path


def _mean(histogram: dict[str, Any] | None) -> str:
    return f"{histogram['mean']:.3f}" if histogram else ""


def render_levels(report: LoadTestReport) -> str:
    """The per-level table: client latencies and throughput beside the server's queue/compute/batch view."""
    header = (
        f"{'level':<18} {'requests':>9} {'fail%':>6} {'req/s':>8} {'p50':>7} {'p90':>7} {'p99':>7} {'max':>7}"
        f" | {'queue':>6} {'compute':>7} {'batch':>5}  SLO"
    )
    lines = [header, "-" * len(header)]
    for level in report.levels:
        lat, server = level.latency_ms, level.server or {}
        queue, compute, batch = (server.get(k) for k in ("queue_ms", "compute_ms", "batch_size"))
        verdict = ("met" if level.passed else "missed") if level.slos else "-"
        lines.append(
            f"{level.level.label:<18} {level.requests:>9} {100 * level.error_rate:>6.2f} {level.rps:>8.1f}"
            f" {lat['p50']:>7.2f} {lat['p90']:>7.2f} {lat['p99']:>7.2f} {lat['max']:>7.1f}"
            f" | {_ms(queue):>6} {_ms(compute):>7} {_num(batch):>5}  {verdict}"
        )
    lines.append("latencies in ms (client side); queue/compute: server-side means in ms; batch: mean rows per batch")
    return "\n".join(lines)


def _ms(histogram: dict[str, Any] | None) -> str:
    return f"{histogram['mean']:.2f}" if histogram else "-"


def _num(histogram: dict[str, Any] | None) -> str:
    return f"{histogram['mean']:.1f}" if histogram else "-"
