"""tune.html: the candidates' table, the Pareto plot (throughput vs p99, the SLO line) and each knob's effect."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from modelport.loadtest.html import figure, page, table
from modelport.loadtest.plots import pyplot, to_png
from modelport.tune.result import Measurement, TuneResult
from modelport.tune.table import HEADER, table_rows, verdict

__all__ = ["knob_effects", "pareto", "write_html"]


def _point(m: Measurement) -> tuple[float, float] | None:
    """(req/s, p99 ms) at the candidate's ceiling under the SLO, else at its fastest measured level."""
    level = m.best_level or (max(m.levels, key=lambda lv: lv.rps) if m.levels else None)
    if level is None or level.p99_ms == float("inf"):
        return None
    return level.rps, level.p99_ms


def _front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The Pareto front: no other point has more throughput and less latency."""
    front = [p for p in points if not any(q[0] >= p[0] and q[1] <= p[1] and q != p for q in points)]
    return sorted(front)


def _slo_line(result: TuneResult) -> float | None:
    for slo in result.options.parsed_slos:
        if slo.metric == "p99" and slo.op.startswith("<"):
            return slo.threshold
    return None


def pareto(result: TuneResult) -> bytes:
    """Every candidate at its ceiling: met the SLO (filled) or not (hollow), the front, winner, default, SLO."""
    plt = pyplot()
    figure_, axis = plt.subplots(figsize=(11, 5.5))
    met = [p for m in result.measurements if m.best_level and (p := _point(m))]
    missed = [p for m in result.measurements if not m.best_level and (p := _point(m))]
    if met:
        axis.scatter(*zip(*met, strict=True), color="C0", label="met the SLO (at its ceiling)")
    if missed:
        axis.scatter(*zip(*missed, strict=True), facecolors="none", edgecolors="C3", label="met no SLO level")
    front = _front(met)
    if len(front) > 1:
        axis.plot(*zip(*front, strict=True), "--", color="C0", alpha=0.6, label="Pareto front")
    for m, name, style in ((result.best, "winner", "*"), (result.default, "default", "s")):
        point = _point(m) if m is not None else None
        if point is not None:
            axis.scatter([point[0]], [point[1]], marker=style, s=180, color="C2" if name == "winner" else "C1")
            axis.annotate(name, point, textcoords="offset points", xytext=(6, 6))
    line = _slo_line(result)
    if line is not None:
        axis.axhline(line, color="C3", linestyle=":", label=f"SLO p99 < {line:g} ms")
    axis.set_xlabel("max throughput under the SLO (req/s)")
    axis.set_ylabel("p99 latency at that throughput (ms)")
    axis.grid(True, alpha=0.3)
    axis.legend(fontsize=8)
    return to_png(figure_)


def knob_effects(result: TuneResult) -> bytes | None:
    """For every knob with more than one measured value: each candidate's req/s under the SLO by that value."""
    knobs = [(name, values) for name, values in result.space.knobs if len(values) > 1]
    if not knobs or not result.measurements:
        return None
    plt = pyplot()
    widths = [max(1.0, len(values) / 4) if name == "variant" else 1.0 for name, values in knobs]
    figure_, axes = plt.subplots(
        1, len(knobs), figsize=(min(2.6 * sum(widths), 18), 4.6), squeeze=False, gridspec_kw={"width_ratios": widths}
    )
    for axis, (name, values) in zip(axes[0], knobs, strict=True):
        labels = _variant_labels(values) if name == "variant" else [_label(v) for v in values]
        for i, value in enumerate(values):
            ys = [m.max_rps_under_slo or 0.0 for m in result.measurements if m.candidate.assignment[name] == value]
            axis.scatter([i] * len(ys), ys, alpha=0.6, color="C0")
            if ys:
                axis.plot([i - 0.25, i + 0.25], [max(ys)] * 2, color="C2")
        axis.set_xticks(range(len(values)), labels, rotation=90 if name == "variant" else 0, fontsize=7)
        axis.set_title(name, fontsize=9)
        axis.set_xlim(-0.5, len(values) - 0.5)
    axes[0][0].set_ylabel("req/s under the SLO (0 = none)")
    return to_png(figure_)


def _variant_labels(values: tuple[Any, ...]) -> list[str]:
    """Variant names without the family prefix they share (``digits-torch-onnx`` -> ``onnx``)."""
    parts = [str(v).split("-") for v in values]
    shared = 0
    while all(len(p) > shared + 1 and p[shared] == parts[0][shared] for p in parts):
        shared += 1
    return ["-".join(p[shared:]) for p in parts]


def _label(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value) or "none"
    return f"{value:g}" if isinstance(value, float) else str(value)


def write_html(result: TuneResult, path: Path) -> Path:
    """The whole report in one file (plots inlined)."""
    o = result.options
    rows = table_rows(result)
    sections = [
        f"<p>Family <code>{html.escape(o.family)}</code> in <code>{html.escape(str(o.repository))}</code>, "
        f"protocol {o.protocol}, server pinned to CPUs {o.cpu_list}, concurrency sweep "
        f"{', '.join(str(u) for u in o.levels)} ({o.level_s:g} s per level, first {o.warmup_s:g} s excluded), "
        f"search {o.search}, objective {o.objective}, SLO {html.escape(', '.join(o.slos))}.</p>",
        '<pre style="white-space: pre-wrap">' + html.escape("\n".join(verdict(result))) + "</pre>",
        table(HEADER, rows, ["ok" if r[0].startswith("*") else ("fail" if r[3] == "-" else "") for r in rows]),
        figure(pareto(result), "Throughput vs p99 latency, every candidate (Pareto front, SLO line)"),
        figure(knob_effects(result), "Each knob's effect: req/s under the SLO of the candidates with each value"),
    ]
    if result.space.excluded:
        items = "".join(f"<li>{html.escape(line)}</li>" for line in result.space.excluded)
        sections.append(f"<h2>Variants kept out by the accuracy floor</h2><ul>{items}</ul>")
    path.write_text(page(f"Tuning: {o.family}", sections))
    return path
