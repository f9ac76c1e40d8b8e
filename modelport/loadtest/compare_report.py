"""The format shoot-out: the text table, compare.json, compare.csv and compare.html with plots."""

from __future__ import annotations

import csv
import html
import json
from typing import Any

from modelport.loadtest import plots
from modelport.loadtest.compare_result import CompareResult
from modelport.loadtest.html import figure, page, table
from modelport.loadtest.report import LoadTestReport
from modelport.sizes import format_bytes

__all__ = ["notes", "render_table", "table_rows", "write_compare"]


_ERROR_WIDTH = 72


def _error_cell(error: str) -> str:
    """An error's first line, its middle cut to fit the table: the start says what, the end why.

    compare.json keeps the whole text.
    """
    lines = error.strip().splitlines()
    first = lines[0].strip() if lines else ""
    if len(first) <= _ERROR_WIDTH:
        return first
    head = (_ERROR_WIDTH - 3) // 2
    return first[:head] + "..." + first[-(_ERROR_WIDTH - 3 - head) :]


def _opt(value: float | None, spec: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def table_rows(result: CompareResult) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the shoot-out (the same in the terminal, the CSV and the HTML)."""
    users = [level.users for level in result.options.levels]
    header = ["variant", "format", "size", "load s", "parity max|err|", "top-1 agr", "accuracy"]
    header += [f"u={u} p50/p99 ms" for u in users] + ["max req/s", "req/s in SLO"]
    rows = []
    for row in result.rows:
        data = row.to_json()
        cells = [
            row.variant.name,
            data["format"] + (f" {data['quantization']}" if data["quantization"] else ""),
            format_bytes(data["size_bytes"]),
            _opt(data["load_seconds"], ".2f"),
            _opt(data["parity_max_abs_error"], ".1e"),
            _opt(None if data["top1_agreement"] is None else 100 * data["top1_agreement"], ".1f", "%"),
            _opt(None if data["accuracy"] is None else 100 * data["accuracy"], ".1f", "%"),
        ]
        levels = {lv["users"]: lv for lv in data["levels"]}
        for u in users:
            lv = levels.get(u)
            cells.append(f"{lv['p50']:.2f}/{lv['p99']:.2f}" + ("" if lv["slo_passed"] else "*") if lv else "-")
        under_slo = _error_cell(row.error) if row.error else _opt(data["max_rps_under_slo"], ".0f")
        cells += [_opt(data["max_rps"], ".0f"), under_slo]
        rows.append(cells)
    return header, rows


def render_table(result: CompareResult) -> str:
    """The shoot-out as an aligned text table, followed by its notes."""
    header, rows = table_rows(result)
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=True)]
    lines = [_line(r, widths) for r in (header, *rows)]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines + notes(result))


def notes(result: CompareResult) -> list[str]:
    """How to read the table: load shape, the SLO, the source model's accuracy."""
    options = result.options
    lines = [
        f"protocol {options.protocol}, {options.duration_s:g} s per level, batch size {options.batch_size};"
        " * = a level that missed the SLO",
        f"req/s in SLO: the highest throughput of a level that met every SLO ({', '.join(options.slos) or 'none'})",
    ]
    sources = _source_accuracies(result)
    if len(sources) == 1:
        (source,) = sources.values()
        lines.append(f"source model accuracy on the eval data: {100 * source:.1f}% (accuracy and parity from export)")
    elif sources:
        each = ", ".join(f"{family} {100 * value:.1f}%" for family, value in sources.items())
        lines.append(f"source models' accuracy on the eval data: {each} (accuracy and parity from export)")
    return lines


def _line(cells: list[str], widths: list[int]) -> str:
    """Names left-aligned, numbers right-aligned."""
    return "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True)))


def _source_accuracies(result: CompareResult) -> dict[str, float]:
    """Each family's source model accuracy (the first variant that recorded it)."""
    found: dict[str, float] = {}
    for row in result.rows:
        parity = row.variant.manifest.parity
        if parity is not None and parity.source_accuracy is not None:
            found.setdefault(row.variant.manifest.family, parity.source_accuracy)
    return found


def _source_accuracy(result: CompareResult) -> float | None:
    values = list(_source_accuracies(result).values())
    return values[0] if len(values) == 1 else None


def write_compare(result: CompareResult) -> None:
    """compare.json, compare.csv and compare.html into the output directory."""
    out = result.options.out
    payload: dict[str, Any] = {
        "family": result.options.family,
        "families": list(result.options.families),
        "source_accuracies": _source_accuracies(result),
        "repository": str(result.options.repository),
        "protocol": result.options.protocol,
        "levels": [{"users": lv.users, "rps": lv.rps} for lv in result.options.levels],
        "duration_s": result.options.duration_s,
        "slos": list(result.options.slos),
        "max_error_rate": result.options.max_error_rate,
        "ok": result.ok,
        "failed_requests": result.failed_requests(),
        "source_accuracy": _source_accuracy(result),
        "variants": [row.to_json() for row in result.rows],
    }
    (out / "compare.json").write_text(json.dumps(payload, indent=2) + "\n")
    header, rows = table_rows(result)
    with (out / "compare.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    result.html = out / "compare.html"
    result.html.write_text(_html(result, header, rows))


def _series(name: str, report: LoadTestReport) -> plots.Curve:
    levels = report.levels
    return (
        name,
        [lv.rps for lv in levels],
        [lv.latency_ms["p99"] for lv in levels],
        [f"u={lv.level.users}" for lv in levels],
    )


def _html(result: CompareResult, header: list[str], rows: list[list[str]]) -> str:
    options = result.options
    tested = [r for r in result.rows if r.report is not None]
    series = [_series(r.variant.name, r.report) for r in tested if r.report is not None]
    under = [(r.report.max_rps_under_slo or 0.0) if r.report else 0.0 for r in result.rows]
    sizes = [r.variant.size_bytes / 1024 for r in result.rows]  # KB, as format_bytes counts them
    links = "".join(
        f'<li><a href="{html.escape(r.variant.name)}/report.html">{html.escape(r.variant.name)}</a></li>'
        for r in tested
    )
    sections = [
        f"<p>Repository <code>{html.escape(str(options.repository))}</code>, protocol {options.protocol}, "
        f"{options.duration_s:g} s per level, users {', '.join(str(lv.users) for lv in options.levels)}, "
        f"SLO: {html.escape(', '.join(options.slos) or 'none')}.</p>",
        table(header, rows, ["fail" if r.error else "" for r in result.rows]),
        "<pre>" + html.escape("\n".join(notes(result))) + "</pre>",
        figure(plots.curves(series, "p99 latency vs throughput, every variant"), "Latency vs throughput"),
        figure(
            plots.throughput_bars([r.variant.name for r in result.rows], under, sizes, "max req/s under the SLO"),
            "Throughput under the SLO and artifact size",
        ),
        f"<h2>Per-variant load-test reports</h2><ul>{links}</ul>",
    ]
    kind = "Framework" if len(options.families) > 1 else "Format"
    return page(f"{kind} shoot-out: {', '.join(options.families)}", sections)
