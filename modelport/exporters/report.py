"""The export report: one row per variant, printed as a table and written as JSON."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from modelport.sizes import format_bytes

__all__ = ["ExportReport", "ReportRow", "format_bytes", "render_table"]


@dataclass(frozen=True)
class ReportRow:
    """The outcome of one variant."""

    variant: str
    model: str
    version: int
    status: str  # "pass", "FAIL" (gate), "ERROR" (conversion), "allowed" (--allow-mismatch)
    size_bytes: int = 0
    max_abs_error: float | None = None
    top1_agreement: float | None = None
    accuracy: float | None = None
    seconds: float = 0.0
    path: str = ""
    message: str = ""
    notes: tuple[str, ...] = ()

    @property
    def published(self) -> bool:
        return self.status in ("pass", "allowed")


@dataclass
class ExportReport:
    """Everything an export produced; ``ok`` is False when any variant failed."""

    family: str
    source: str
    framework: str
    repository: str
    source_accuracy: float | None = None
    rows: list[ReportRow] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(row.published for row in self.rows)

    def to_json(self) -> str:
        data = asdict(self)
        data["ok"] = self.ok
        return json.dumps(data, indent=2)

    def write(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json() + "\n")
        return path


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def render_table(report: ExportReport) -> str:
    """The report as an aligned text table, failures explained below it."""
    head = ("variant", "model", "ver", "size", "max abs err", "top-1 agree", "accuracy", "time", "status")
    rows = [head]
    for r in report.rows:
        err = "-" if r.max_abs_error is None else f"{r.max_abs_error:.2e}"
        size = format_bytes(r.size_bytes) if r.size_bytes else "-"
        rows.append(
            (
                r.variant,
                r.model,
                str(r.version),
                size,
                err,
                _pct(r.top1_agreement),
                _pct(r.accuracy),
                f"{r.seconds:.2f}s",
                r.status,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if report.source_accuracy is not None:
        lines.append(f"source ({report.framework}) accuracy on eval data: {_pct(report.source_accuracy)}")
    lines += [f"{r.variant}: {r.message}" for r in report.rows if r.message]
    lines += [f"{r.variant}: note: {note}" for r in report.rows for note in r.notes]
    return "\n".join(lines)
