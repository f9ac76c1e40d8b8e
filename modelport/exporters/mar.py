"""``modelport import-mar``: bring a TorchServe model archive into the repository.

A ``.mar`` is a zip (or, with ``--archive-format no-archive``, a directory; or a ``.tar.gz``)
holding ``MAR-INF/MANIFEST.json``, the serialized model and the handler. The serialized file is
exported like any source (TorchScript ``.pt`` or ``.onnx``), so the imported model gets its
manifest, golden vectors and parity record. The handler is kept (``exporters.mar_handler``): a built-in
one becomes the model's processors, a custom handler file is served in-process by its own code. With
``remote`` set, the model's ``config.yaml`` points at the TorchServe that serves the archive, and
modelport forwards to it (``runtime: torchserve``) after checking the golden vectors against it.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

from modelport.errors import InvalidArgumentError, ModelportError, SourceError, UnsupportedError
from modelport.exporters.mar_handler import (
    builtin_handler,
    custom_handler_file,
    default_inputs,
    import_handler_archive,
    keep_builtin_handler,
    label_archive_version,
    refuse_registered,
    update_config,
)
from modelport.exporters.options import ExportOptions
from modelport.exporters.pipeline import export
from modelport.exporters.report import ExportReport
from modelport.exporters.upload import export_to_store
from modelport.mar_archive import MarArchive, read_mar

__all__ = ["MarArchive", "import_mar", "read_mar"]


def import_mar(
    mar: Path, options: ExportOptions, remote: str | None = None, handler_batch_size: int | None = None
) -> ExportReport:
    """Export the archive's serialized model into ``options.repository`` (name defaults to the archive's);
    a store URL as the repository is written locally, then uploaded (manifests last). A custom handler's
    batches hold ``handler_batch_size`` requests (default: the archive's ``batchSize``, else 1, as TorchServe)."""
    if not isinstance(options.repository, Path):
        return export_to_store(options, lambda local: import_mar(mar, local, remote, handler_batch_size))
    archive, files = read_mar(mar)
    refuse_registered(options.folder / options.name, files)
    handler_file = custom_handler_file(archive.handler, files)
    if handler_file is not None and not remote:
        return import_handler_archive(mar, archive.handler, files, options, handler_batch_size)
    if options.samples:
        raise UnsupportedError(
            "--sample records a custom handler's responses; this archive's model is exported to tensors "
            "(its golden vectors are recorded and checked as every export's)"
        )
    builtin = builtin_handler(archive.handler)
    if builtin is not None:
        options = default_inputs(options, builtin)
    if archive.model_file:
        raise UnsupportedError(
            f"{mar}: an eager-mode archive (model file {archive.model_file} + state_dict) needs its handler file "
            "in the archive (it builds the model); or archive a TorchScript (.pt) or ONNX (.onnx) serialized file"
        )
    kind = _kind(archive, files, mar)
    with tempfile.TemporaryDirectory(prefix="modelport-mar-") as work:
        source = Path(work) / f"model.{kind}"
        source.write_bytes(files[archive.serialized_file])
        formats = options.formats if options.formats != ("all",) else (("torchscript",) if kind == "pt" else ("onnx",))
        template = options.name_template if len(formats) > 1 else "{name}"
        run = replace(options, source=str(source), formats=formats, name_template=template)
        report = _export(run, source, f"{mar} ({archive.serialized_file})")
    for row in report.rows:
        if row.published:  # TorchServe's /predictions/{m}/1.0 names the archive's version, as for a handler archive
            label_archive_version(options.folder / row.model, row.version, files)
        if row.published and builtin is not None and not remote:
            model_dir = options.folder / row.model
            keep_builtin_handler(model_dir, model_dir / str(row.version), builtin, files, archive.serialized_file)
        if row.published and remote:
            update_config(options.folder / row.model, {"runtime": "torchserve", "remote": _remote(remote, archive)})
    return report


def _export(options: ExportOptions, source: Path, named: str) -> ExportReport:
    """``export`` of the model extracted to ``source``; an error names it in the archive (the file is gone)."""
    try:
        return export(options)
    except ModelportError as exc:
        raise type(exc)(str(exc).replace(str(source), named)) from None


def _kind(archive: MarArchive, files: dict[str, bytes], mar: Path) -> str:
    if not archive.serialized_file:
        raise SourceError(f"{mar}: the archive names no serializedFile")
    data = files.get(archive.serialized_file)
    if data is None:
        raise SourceError(f"{mar}: the serialized file {archive.serialized_file!r} is not in the archive")
    if archive.serialized_file.endswith(".onnx"):
        return "onnx"
    if data[:2] == b"PK":  # TorchScript archives are zip files
        return "pt"
    raise UnsupportedError(
        f"{mar}: {archive.serialized_file} is neither TorchScript nor ONNX (plain state_dicts and other "
        "formats cannot be served without their model code)"
    )


def _remote(address: str, archive: MarArchive) -> dict[str, str]:
    return {"address": address, "model": archive.name}


def check_remote(address: str) -> str:
    """``--remote`` must be an http(s) URL of TorchServe's inference API."""
    if not address.startswith(("http://", "https://")):
        raise InvalidArgumentError(f"--remote {address!r}: give TorchServe's inference URL, e.g. http://host:8080")
    return address.rstrip("/")
