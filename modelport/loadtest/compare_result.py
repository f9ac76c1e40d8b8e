"""What ``compare`` produces: the variants it found and each one's row (read by the report writers)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from modelport.golden import GOLDEN_FILE, load_golden
from modelport.loadtest.options import CompareOptions
from modelport.loadtest.report import LoadTestReport
from modelport.loadtest.results import LevelResult
from modelport.manifest import ModelManifest, TensorSpec
from modelport.sizes import artifact_bytes

__all__ = ["CompareResult", "Variant", "VariantResult", "request_specs"]

_CONFIG_FILE = "config.yaml"  # the model's serving config (modelport.serving.settings.CONFIG_FILE)


@dataclass(frozen=True)
class Variant:
    """One exported variant: its model directory, latest version and manifest."""

    directory: Path
    version: int
    manifest: ModelManifest

    @property
    def name(self) -> str:
        return self.directory.name

    @property
    def version_dir(self) -> Path:
        return self.directory / str(self.version)

    @property
    def size_bytes(self) -> int:
        return artifact_bytes(self.version_dir)


def request_specs(variant: Variant) -> tuple[TensorSpec, ...]:
    """The variant's inputs as its manifest knows them and the served metadata does not say: the value range
    the server enforces (token ids, masks) and, for dims left dynamic past the batch, the golden inputs' sizes.
    None for a model with processors (it takes payloads, not these tensors): its served metadata applies."""
    config = variant.directory / _CONFIG_FILE
    if config.is_file() and "processors" in (yaml.safe_load(config.read_text()) or {}):
        return ()
    golden = variant.version_dir / GOLDEN_FILE
    first = load_golden(golden)[0].inputs if golden.is_file() else {}
    specs = []
    for spec in variant.manifest.inputs:
        sizes = first[spec.name].shape if spec.name in first else spec.shape
        shape = tuple(d if d != -1 or i == 0 else int(sizes[i]) for i, d in enumerate(spec.shape))
        specs.append(spec.model_copy(update={"shape": shape}))
    return tuple(specs)


@dataclass
class VariantResult:
    """A variant's row of the shoot-out: its manifest facts, load time and load test (or why none)."""

    variant: Variant
    load_seconds: float | None = None
    report: LoadTestReport | None = None
    error: str = ""

    def to_json(self) -> dict[str, Any]:
        m = self.variant.manifest
        parity = m.parity
        return {
            "model": self.variant.name,
            "variant": m.variant,
            "format": m.format,
            "quantization": m.quantization.method if m.quantization else None,
            "size_bytes": self.variant.size_bytes,
            "load_seconds": self.load_seconds,
            "parity_max_abs_error": max((o.max_abs_error for o in parity.outputs), default=None) if parity else None,
            "parity_passed": parity.passed if parity else None,
            "top1_agreement": _agreement(m),
            "accuracy": parity.accuracy if parity else None,
            "source_accuracy": parity.source_accuracy if parity else None,
            "max_rps": max((lv.rps for lv in self.report.levels), default=None) if self.report else None,
            "max_rps_under_slo": self.report.max_rps_under_slo if self.report else None,
            "levels": [_level_row(lv) for lv in (self.report.levels if self.report else [])],
            "report": str(self.report.out / "report.html") if self.report else None,
            "error": self.error,
        }

    def failed_requests(self, max_error_rate: float) -> list[str]:
        """One line per level whose share of failed requests is above ``max_error_rate``."""
        levels = self.report.levels if self.report else []
        return [
            f"{self.variant.name} at {lv.level.label}: {lv.failures} of {lv.requests} requests failed"
            f" ({100 * lv.error_rate:.3g}%, --max-error-rate {100 * max_error_rate:g}%)"
            for lv in levels
            if lv.error_rate > max_error_rate
        ]


def _level_row(level: LevelResult) -> dict[str, Any]:
    return {
        "users": level.level.users,
        "rps": level.rps,
        "p50": level.latency_ms["p50"],
        "p99": level.latency_ms["p99"],
        "error_rate": level.error_rate,
        "slo_passed": level.passed,
    }


def _agreement(manifest: ModelManifest) -> float | None:
    values = (
        [o.top1_agreement for o in manifest.parity.outputs if o.top1_agreement is not None] if manifest.parity else []
    )
    return min(values) if values else None


@dataclass
class CompareResult:
    """Every variant's row, plus where the reports went."""

    options: CompareOptions
    rows: list[VariantResult] = field(default_factory=list)
    html: Path | None = None

    @property
    def ok(self) -> bool:
        """Every selected variant served and was load-tested, none with more failed requests than allowed."""
        return all(row.report is not None for row in self.rows) and not self.failed_requests()

    def failed_requests(self) -> list[str]:
        """Each variant's levels whose failed requests are above ``--max-error-rate``."""
        return [line for row in self.rows for line in row.failed_requests(self.options.max_error_rate)]
