"""Export: source model -> deployable artifacts, each validated against the source."""

from __future__ import annotations

from modelport.export.options import FORMATS, QUANTIZATIONS, ExportOptions, Variant
from modelport.export.pipeline import export
from modelport.export.report import ExportReport, ReportRow

__all__ = ["FORMATS", "QUANTIZATIONS", "ExportOptions", "ExportReport", "ReportRow", "Variant", "export"]
