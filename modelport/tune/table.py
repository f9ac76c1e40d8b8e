"""The candidates' table (terminal and HTML), one candidate's progress line, and the verdict under it."""

from __future__ import annotations

from collections import Counter

from modelport.tune.result import Confirmation, Measurement, TuneResult, closest_miss
from modelport.tune.space import accuracy_of

__all__ = ["HEADER", "NOISY", "candidate_line", "objective_line", "render_table", "table_rows", "verdict"]

NOISY = 1.3  # confirming rounds of one configuration further apart than this are called noisy

HEADER = ["", "variant", "settings", "req/s in SLO", "p50 ms", "p99 ms", "peak RSS MB", "accuracy", "top-1 agr", "note"]


def _opt(value: float | None, spec: str) -> str:
    return "-" if value is None else f"{value:{spec}}"


def candidate_line(m: Measurement) -> str:
    """One measured candidate in a line (progress output)."""
    if m.error:
        return f"failed: {m.error.splitlines()[0]}"
    best = m.best_level
    if best is None:
        worst = m.levels[0] if m.levels else None
        missed = "; ".join(r.detail for r in worst.slos if not r.passed) if worst else "no level measured"
        return f"no level met the SLO ({missed}) [{m.wall_s:.0f}s]"
    extra = " (load generator bound)" if m.loadgen_bound else ""
    return (
        f"{best.rps:.0f} req/s at users={best.users}, p50 {best.p50_ms:.2f} ms, p99 {best.p99_ms:.2f} ms, "
        f"peak RSS {_opt(m.rss_mb, '.0f')} MB{extra} [{m.wall_s:.0f}s]"
    )


def table_rows(result: TuneResult) -> list[list[str]]:
    """Every candidate, best score first; * marks the winner, D the default, >= a generator-bound ceiling."""
    order = sorted(result.measurements, key=lambda m: -(result.score(m) or float("-inf")))
    rows = []
    for m in order:
        best = m.best_level
        variant = result.space.variants.get(m.candidate.variant)
        accuracy, agreement = accuracy_of(variant.manifest) if variant else (None, None)
        mark = ("*" if result.best is m else "") + ("D" if result.default is m else "")
        note = m.error.splitlines()[0][:60] if m.error else ("load generator bound" if m.loadgen_bound else "")
        rows.append(
            [
                mark,
                m.candidate.variant,
                m.candidate.settings(),
                (">=" if m.loadgen_bound else "") + _opt(m.max_rps_under_slo, ".0f"),
                _opt(best.p50_ms if best else None, ".2f"),
                _opt(best.p99_ms if best else None, ".2f"),
                _opt(m.rss_mb, ".0f"),
                _opt(None if accuracy is None else 100 * accuracy, ".1f"),
                _opt(None if agreement is None else 100 * agreement, ".1f"),
                note or ("met no SLO level" if best is None else ""),
            ]
        )
    return rows


def render_table(result: TuneResult) -> str:
    """The candidates as an aligned text table, then the verdict."""
    rows = table_rows(result)
    widths = [max(len(c) for c in column) for column in zip(HEADER, *rows, strict=True)]
    lines = ["  ".join(_cells(r, widths)) for r in (HEADER, *rows)]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines + verdict(result))


def _cells(row: list[str], widths: list[int]) -> list[str]:
    return [
        c.ljust(w) if i < 3 or i == len(row) - 1 else c.rjust(w)
        for i, (c, w) in enumerate(zip(row, widths, strict=True))
    ]


def verdict(result: TuneResult) -> list[str]:
    """The winner, the default, the confirmed ratio, and every caveat of the measurement."""
    o = result.options
    lines = [
        f"* = winner, D = default; SLO {', '.join(o.slos)}; objective {o.objective}; server on CPUs {o.cpu_list}; "
        f"{len(result.measurements)} of {result.space.size} candidate(s) measured in {result.search_s:.0f}s "
        f"({result.stopped})"
    ]
    if not result.loadgen_cpus:
        lines.append("the load generator shared the server's CPUs (none spare): absolute req/s are a lower bound")
    if any(m.loadgen_bound for m in result.measurements):
        lines.append("some candidates were load-generator bound (see notes): their ceilings are the generator's")
    if result.best is None:
        return [*lines, *_miss(result)]
    if result.default is not None and result.best.candidate == result.default.candidate:
        lines.append("the default configuration won: nothing to change (--apply writes nothing)")
    c = result.confirmation
    if c is not None:
        ratio = f"{c.ratio:.2f}x" if c.ratio is not None else "n/a (the default met the SLO at no level)"
        lines.append(
            f"confirmed in {len(c.best)} interleaved round(s): winner {c.best_rps:.0f} req/s vs default "
            f"{c.default_rps:.0f} req/s under the SLO (medians): {ratio}"
        )
        lines.extend(objective_line(c))
        if result.confirmed_loss:
            lines.append("the winner lost to the default when re-measured: keep the default (--apply writes nothing)")
        if c.spread > NOISY:
            lines.append(
                f"the rounds of one configuration differ up to {c.spread:.1f}x: the machine is noisy (other "
                "processes on the CPUs); more --confirm-rounds, or a quiet machine, before trusting the ratio"
            )
    return lines


def _miss(result: TuneResult) -> list[str]:
    found = closest_miss(list(result.measurements), result.options.parsed_slos)
    if found is None:
        errors = Counter(m.error for m in result.measurements if m.error)
        if not errors:
            return ["no candidate met the SLO, and none could be measured"]
        (error, count), total = errors.most_common(1)[0], len(result.measurements)
        return [f"no candidate met the SLO, and none could be measured ({count} of {total} failed): {error}"]
    m, level = found
    missed = "; ".join(r.detail for r in level.slos if not r.passed)
    return [
        f"no candidate met the SLO; closest: {m.candidate.variant} {m.candidate.settings()} at users={level.users}: "
        f"{missed}"
    ]


def objective_line(c: Confirmation) -> list[str]:
    """For min-p99 / min-memory, the figure the winner won on, re-measured (req/s are not what it won on)."""
    if c.objective == "max-rps":
        return []
    best, default = c.median_score(c.best), c.median_score(c.default)
    what, unit = ("p99 at the lightest qualifying level", "ms") if c.objective == "min-p99" else ("peak RSS", "MB")
    shown = [f"{-value:.2f} {unit}" if value is not None else "no SLO level met" for value in (best, default)]
    return [f"{c.objective}: winner {shown[0]} vs default {shown[1]} {what} (medians)"]
