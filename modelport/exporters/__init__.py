"""Export: source model -> deployable artifacts, each validated against the source."""

from __future__ import annotations

from modelport.exporters.options import FORMATS, QUANTIZATIONS, ExportOptions, Variant
from modelport.exporters.pipeline import export
from modelport.exporters.report import ExportReport, ReportRow

__all__ = ["FORMATS", "QUANTIZATIONS", "ExportOptions", "ExportReport", "ReportRow", "Variant", "export"]
