"""The bundle report: one row per variant (size, parity, agreement, accuracy, model and image/text->label p50)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from modelport.sizes import format_bytes

__all__ = ["BundleReport", "BundleRow", "render_bundle_table"]


@dataclass(frozen=True)
class BundleRow:
    """One bundled variant."""

    variant: str
    file: str
    size_bytes: int
    source_max_abs_error: float  # bundled file vs the source model's golden outputs, measured here
    top1_agreement: float | None  # vs the source, as recorded by the export (golden + eval inputs)
    accuracy: float | None  # on --eval-data, measured here; else the export's record
    eval_samples: int | None
    latency_p50_ms: float  # batch 1 on this machine
    parity: str  # the export's gate: "pass" or "allowed" (--allow-mismatch)
    image_p50_ms: float | None = None  # decode -> input tensor of the raw samples, on this machine
    end_to_end_p50_ms: float | None = None  # decode -> label of the raw samples, on this machine


@dataclass
class BundleReport:
    """What ``modelport bundle`` produced."""

    family: str
    directory: str
    archive: str
    rows: list[BundleRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # warnings: what the bundle cannot check
    raw: str = "image"  # what the raw samples are: image or text (the end-to-end column's name)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def render_bundle_table(report: BundleReport) -> str:
    """The rows as an aligned table, with where the bundle and its zip are."""
    head = (
        "variant",
        "file",
        "size",
        "parity",
        "max abs err vs source (golden)",
        "top-1 agree",
        "accuracy",
        "model p50",
        f"{report.raw}->label p50",
    )
    rows = [head]
    for r in report.rows:
        samples = f" (n={r.eval_samples})" if r.eval_samples else ""
        rows.append(
            (
                r.variant,
                r.file,
                format_bytes(r.size_bytes),
                r.parity,
                f"{r.source_max_abs_error:.2e}",
                _pct(r.top1_agreement),
                _pct(r.accuracy) + samples,
                f"{r.latency_p50_ms:.3f} ms",
                "-" if r.end_to_end_p50_ms is None else f"{r.end_to_end_p50_ms:.3f} ms",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.extend(f"warning: {note}" for note in report.notes)
    lines.append(f"bundle: {report.directory}  zip: {report.archive}")
    return "\n".join(lines)
