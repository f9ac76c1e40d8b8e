"""modelport: export, serve, bundle and load-test PyTorch and TensorFlow models.

Importing this package loads no ML framework and none of its parts: ``modelport.export`` (the
function), ``ExportOptions`` and ``ExportReport`` import the exporters on first use. The
exporters themselves live in the package ``modelport.exporters``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from modelport._version import __version__
from modelport.errors import ModelportError
from modelport.manifest import ModelManifest, TensorSpec, read_manifest, write_manifest

if TYPE_CHECKING:
    from modelport.exporters import ExportOptions, ExportReport

__all__ = [
    "ExportOptions",
    "ExportReport",
    "ModelManifest",
    "ModelportError",
    "TensorSpec",
    "__version__",
    "export",
    "read_manifest",
    "write_manifest",
]


def export(options: ExportOptions | None = None, /, **kwargs: Any) -> ExportReport:
    """Export a model to every requested format: pass ``ExportOptions`` or its fields as keywords.

    >>> modelport.export(source=keras_model, repository=Path("repo"), name="digits", formats=("onnx",))
    """
    from modelport import exporters

    return exporters.export(options if options is not None else exporters.ExportOptions(**kwargs))


def __getattr__(name: str) -> Any:
    """``ExportOptions`` and ``ExportReport``, imported from the exporters when first asked for."""
    if name in ("ExportOptions", "ExportReport"):
        from modelport import exporters

        return getattr(exporters, name)
    raise AttributeError(f"module 'modelport' has no attribute {name!r}")
