"""modelport: export, serve, bundle and load-test PyTorch and TensorFlow models.

Importing this package loads no ML framework; each exporter and runtime imports
its framework when first used.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

# The subpackage is imported before the function of the same name is defined, so
# ``modelport.export`` stays the function (a package attribute is set only on first import).
from modelport import export as _export_package
from modelport.errors import ModelportError
from modelport.export import ExportOptions, ExportReport
from modelport.manifest import ModelManifest, TensorSpec, read_manifest, write_manifest

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
    return _export_package.export(options if options is not None else ExportOptions(**kwargs))
