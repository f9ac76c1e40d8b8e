"""Service-level objectives: ``p99<50ms``, ``error_rate<0.1%``, ``rps>200``, checked on measured levels."""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from modelport.errors import InvalidArgumentError

__all__ = ["SLO_METRICS", "Slo", "SloResult", "checked_slos", "parse_rate", "parse_slo"]

_LATENCIES = ("p50", "p90", "p95", "p99", "p999", "mean", "max")
SLO_METRICS = (*_LATENCIES, "rps", "error_rate")
_SYNTAX = re.compile(r"^\s*([a-z0-9_.]+)\s*(<=|>=|<|>)\s*([0-9]*\.?[0-9]+(?:e-?\d+)?)\s*(us|ms|s|%)?\s*$", re.I)
_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_TO_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


@dataclass(frozen=True)
class SloResult:
    """One objective on one level: the measured value and whether it held."""

    slo: str
    metric: str
    value: float
    threshold: float
    passed: bool
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {
            "slo": self.slo,
            "metric": self.metric,
            "value": self.value,
            "threshold": self.threshold,
            "passed": self.passed,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class Slo:
    """``metric op threshold``; latencies in ms, error_rate as a fraction, rps in requests/s."""

    text: str
    metric: str
    op: str
    threshold: float

    def check(self, measured: dict[str, float]) -> SloResult:
        """Evaluate against a level's ``{metric: value}`` (latencies in ms)."""
        value = measured[self.metric]
        passed = _OPS[self.op](value, self.threshold)
        return SloResult(self.text, self.metric, value, self.threshold, passed, self._detail(value, passed))

    def _detail(self, value: float, passed: bool) -> str:
        shown, limit = _show(self.metric, value), _show(self.metric, self.threshold)
        if passed:
            return f"{self.metric} {shown} {self.op} {limit}"
        if self.threshold == 0:
            return f"{self.metric} {shown}, objective {self.op} {limit}"
        over = abs(value - self.threshold) / abs(self.threshold)
        side = "over" if self.op.startswith("<") else "under"
        return f"{self.metric} {shown}, objective {self.op} {limit}: {100 * over:.1f}% {side}"


def _show(metric: str, value: float) -> str:
    if metric == "error_rate":
        return f"{100 * value:.3g}%"
    if metric == "rps":
        return f"{value:.1f} req/s"
    # two decimals, but a sub-0.1 ms objective (p99<1us) keeps its digits instead of reading as 0.00 ms
    return f"{value:.2f} ms" if value >= 0.1 or value == 0 else f"{value:.2g} ms"


def checked_slos(texts: tuple[str, ...], max_error_rate: float | None) -> tuple[Slo, ...]:
    """The ``--slo`` objectives plus the failed-request gate ``error_rate<=MAX``.

    ``max_error_rate`` None means 0 (any failed request fails the run, as locust's own
    ``--exit-code-on-error``) unless an objective on ``error_rate`` was given: that one decides then.
    """
    slos = tuple(parse_slo(text) for text in texts)
    if max_error_rate is None and any(s.metric == "error_rate" for s in slos):
        return slos
    limit = max_error_rate or 0.0
    if not 0 <= limit <= 1:
        raise InvalidArgumentError(f"--max-error-rate takes a fraction (0.01) or a percentage (1%), got {limit:g}")
    return (*slos, Slo(f"error_rate<={100 * limit:g}% (--max-error-rate)", "error_rate", "<=", limit))


def parse_rate(text: str, flag: str = "--max-error-rate") -> float:
    """``0``, ``0.01`` or ``1%`` -> a fraction in [0, 1]."""
    stripped = text.strip()
    try:
        value = float(stripped[:-1]) / 100 if stripped.endswith("%") else float(stripped)
    except ValueError:
        raise InvalidArgumentError(f"{flag} takes a fraction (0.01) or a percentage (1%), got {text!r}") from None
    if not 0 <= value <= 1:
        raise InvalidArgumentError(f"{flag} takes a fraction (0.01) or a percentage (1%), got {text!r}")
    return value


def parse_slo(text: str) -> Slo:
    """Parse ``p99<50ms``, ``mean<=2ms``, ``error_rate<0.1%``, ``rps>200``."""
    found = _SYNTAX.match(text)
    if not found:
        raise InvalidArgumentError(
            f"--slo {text!r} does not parse; expected METRIC<VALUE such as p99<50ms, error_rate<0.1%, rps>200 "
            f"(metrics: {', '.join(SLO_METRICS)})"
        )
    metric, op, number, unit = found.group(1).lower(), found.group(2), float(found.group(3)), found.group(4)
    unit = unit.lower() if unit else None
    if metric not in SLO_METRICS:
        raise InvalidArgumentError(
            f"--slo {text!r}: unknown metric {metric!r}; expected one of {', '.join(SLO_METRICS)}"
        )
    if metric in _LATENCIES:
        if unit not in (None, *_TO_MS):
            raise InvalidArgumentError(f"--slo {text!r}: a latency takes us, ms or s")
        return Slo(text, metric, op, number * _TO_MS[unit or "ms"])
    if metric == "error_rate":
        if unit not in (None, "%"):
            raise InvalidArgumentError(f"--slo {text!r}: an error rate is a fraction or a percentage")
        return Slo(text, metric, op, number / 100 if unit == "%" else number)
    if unit is not None:
        raise InvalidArgumentError(f"--slo {text!r}: rps takes a plain number of requests per second")
    return Slo(text, metric, op, number)
