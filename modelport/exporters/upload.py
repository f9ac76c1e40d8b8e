"""Publishing to an object store: export into a local work repository, then upload it, manifests last.

The work repository first mirrors the store's model and version names (empty folders), so version
numbering and the refusal to overwrite see what the store holds. Every file of a version is uploaded
before any manifest: a polling server sees a version only once it is complete.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable
from pathlib import Path

from modelport.exporters.options import ExportOptions
from modelport.exporters.report import ExportReport
from modelport.storage import ObjectRepository, open_store

__all__ = ["export_to_store"]


def export_to_store(options: ExportOptions, run: Callable[[ExportOptions], ExportReport]) -> ExportReport:
    """``run`` (an export or an import) into a local work repository, then upload what it wrote to
    ``options.repository`` (a store URL). The report names the store, and is uploaded with the versions."""
    url = str(options.repository).rstrip("/")
    store = open_store(url)
    if "file" in store.fs.protocol:  # a folder is made, as for a plain --repository path (a bucket never is)
        store.fs.makedirs(store.root, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="modelport-publish-") as work:
        local = Path(work)
        _mirror_versions(store, local)
        report = run(dataclasses.replace(options, repository=local))
        report.repository = url
        report.rows = [
            dataclasses.replace(row, path=row.path.replace(str(local), url, 1)) if row.path else row
            for row in report.rows
        ]
        report.write(local / ".reports" / f"{options.name}.json")
        store.upload(local)
    return report


def _mirror_versions(store: ObjectRepository, local: Path) -> None:
    for model in store.models():
        for version in store.versions(model):
            (local / model / str(version)).mkdir(parents=True, exist_ok=True)
