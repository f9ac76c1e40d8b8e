"""Artifact sizes: one meaning and one format for the export report, ``inspect`` and ``compare``.

The size of a model version is its artifact's bytes: the model file(s) the manifest lists,
without the manifest itself and the golden vectors. KB and MB are 1024 and 1024 * 1024 bytes.
"""

from __future__ import annotations

from pathlib import Path

from modelport.golden import GOLDEN_FILE
from modelport.manifest import MANIFEST_FILE

__all__ = ["artifact_bytes", "format_bytes"]

_NOT_ARTIFACT = (MANIFEST_FILE, GOLDEN_FILE)


def artifact_bytes(version: Path) -> int:
    """Bytes of the model file(s) in the version directory ``version`` (manifest and golden vectors excluded)."""
    files = (p for p in version.rglob("*") if p.is_file())
    return sum(p.stat().st_size for p in files if p.relative_to(version).as_posix() not in _NOT_ARTIFACT)


def format_bytes(size: int) -> str:
    """``512 B``, ``1.9 KB``, ``1.2 MB``, ``3.4 GB``."""
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"
