"""Self-contained HTML reports: one file, plots inlined as PNG data URIs, no scripts."""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from modelport.loadtest import plots
from modelport.loadtest.report import LoadTestReport

__all__ = ["figure", "page", "table", "write_report_html"]

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
.fail { color: #b00; font-weight: bold; } .ok { color: #070; } code { background: #f5f5f5; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
"""


def page(title: str, sections: Sequence[str]) -> str:
    """A whole HTML document."""
    body = "\n".join(sections)
    return (
        f'<!doctype html>\n<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_STYLE}</style></head><body>\n<h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n"
    )


def table(header: Sequence[str], rows: Sequence[Sequence[object]], classes: Sequence[str] = ()) -> str:
    """An HTML table; ``classes`` gives each row a CSS class (ok / fail)."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        css = f' class="{classes[i]}"' if i < len(classes) and classes[i] else ""
        body.append(f"<tr{css}>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>")
    return f"<table><tr>{head}</tr>\n" + "\n".join(body) + "</table>"


def figure(png: bytes | None, caption: str) -> str:
    """An inlined PNG with its caption (nothing when there is no figure)."""
    if png is None:
        return ""
    data = base64.b64encode(png).decode()
    return f'<h2>{html.escape(caption)}</h2>\n<img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'


def write_report_html(report: LoadTestReport, path: Path) -> Path:
    """report.html: target, SLO verdict, per-level table and the plots."""
    target = report.target
    title = target.get("title") or f"Load test: {_subject(target)} over {target['protocol']}"
    sections = [
        f"<p><code>{html.escape(target['url'])}</code> {html.escape(str(target.get('endpoint') or ''))}, inputs "
        f"<code>{html.escape(', '.join(target['inputs']) or '(user locustfile)')}</code>, data "
        f"<code>{html.escape(target['data'])}</code>, {target['duration_s']:g} s per level, started "
        f"{html.escape(report.started_at)}</p>",
        _verdict(report),
        "<h2>Levels</h2>",
        _levels_table(report),
        figure(plots.timeline(report.levels), "Latency percentiles and throughput over time"),
        figure(plots.curves([_curve(report)], "latency vs throughput across the sweep"), "Latency vs throughput"),
        figure(plots.where_time_goes(report.levels), "Where the time goes: server queue and compute vs client p50"),
        figure(plots.batch_sizes(report.levels), "Server batch sizes"),
        _errors(report),
        f"<h2>Raw</h2><pre>{html.escape(json.dumps(report.target, indent=2))}</pre>",
    ]
    path.write_text(page(title, sections))
    return path


def _subject(target: dict[str, Any]) -> str:
    """What was load-tested: the model, else the user's locustfile (a run of its own users may name no model)."""
    if target.get("model") or not target.get("locustfile"):
        return str(target.get("model") or "")
    return f"locustfile {Path(target['locustfile']).name}"


def _curve(report: LoadTestReport) -> plots.Curve:
    levels = report.levels
    return (
        _subject(report.target),
        [lv.rps for lv in levels],
        [lv.latency_ms["p99"] for lv in levels],
        [f"u={lv.level.users}" for lv in levels],
    )


def _verdict(report: LoadTestReport) -> str:
    if not report.slos:
        return "<p>No SLOs were set.</p>"
    if report.passed:
        return f'<p class="ok">All SLOs held: {html.escape(", ".join(report.slos))}</p>'
    items = "".join(f"<li>{html.escape(line)}</li>" for line in report.failed_slos())
    return f'<p class="fail">SLOs failed:</p><ul class="fail">{items}</ul>'


def _levels_table(report: LoadTestReport) -> str:
    header = [
        "level",
        "requests",
        "failures",
        "req/s",
        "p50 ms",
        "p90 ms",
        "p95 ms",
        "p99 ms",
        "max ms",
        "server queue ms",
        "server compute ms",
        "mean batch",
        "SLO",
    ]
    rows, classes = [], []
    for lv in report.levels:
        lat, server = lv.latency_ms, lv.server or {}
        rows.append(
            [
                lv.level.label,
                lv.requests,
                lv.failures,
                f"{lv.rps:.1f}",
                *(f"{lat[k]:.2f}" for k in ("p50", "p90", "p95", "p99", "max")),
                *(_mean(server.get(k)) for k in ("queue_ms", "compute_ms", "batch_size")),
                ("met" if lv.passed else "missed") if lv.slos else "-",
            ]
        )
        classes.append("" if not lv.slos else ("ok" if lv.passed else "fail"))
    return table(header, rows, classes)


def _mean(histogram: dict[str, Any] | None) -> str:
    return f"{histogram['mean']:.2f}" if histogram else "-"


def _errors(report: LoadTestReport) -> str:
    rows = [[lv.level.label, error, count] for lv in report.levels for error, count in lv.errors.items()]
    return "<h2>Errors</h2>" + (table(["level", "error", "count"], rows) if rows else "<p>None.</p>")
