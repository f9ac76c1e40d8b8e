"""Mobile: the edge bundle builder and the standalone runtime (``modelport_edge.py``) that ships inside it.

Importing this package loads no ML framework; the builder imports LiteRT when it runs.
"""

from __future__ import annotations

from modelport.mobile.options import BundleOptions
from modelport.mobile.report import BundleReport, BundleRow

__all__ = ["BundleOptions", "BundleReport", "BundleRow", "build_bundle"]


def build_bundle(options: BundleOptions) -> BundleReport:
    """Build an edge bundle; see :func:`modelport.mobile.builder.build_bundle`."""
    from modelport.mobile.builder import build_bundle as build

    return build(options)
