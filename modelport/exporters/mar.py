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

import json
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

from modelport.errors import InvalidArgumentError, NotFoundError, SourceError, UnsupportedError
from modelport.exporters.mar_handler import (
    builtin_handler,
    custom_handler_file,
    default_inputs,
    import_handler_archive,
    keep_builtin_handler,
    update_config,
)
from modelport.exporters.options import ExportOptions
from modelport.exporters.pipeline import export
from modelport.exporters.report import ExportReport
from modelport.exporters.upload import export_to_store

__all__ = ["MarArchive", "import_mar", "read_mar"]

_MANIFEST = "MAR-INF/MANIFEST.json"


@dataclass(frozen=True)
class MarArchive:
    """What an archive's MANIFEST.json says about its model."""

    name: str
    version: str
    serialized_file: str
    handler: str
    model_file: str


def read_mar(path: Path) -> tuple[MarArchive, dict[str, bytes]]:
    """The archive's manifest and its files (name -> bytes); refuses paths that leave the archive."""
    if not path.exists():
        raise NotFoundError(f"{path}: no such model archive")
    files = _read_files(path)
    if _MANIFEST not in files:
        raise SourceError(f"{path} is not a TorchServe model archive: {_MANIFEST} is missing")
    try:
        model = json.loads(files[_MANIFEST])["model"]
    except (ValueError, KeyError, TypeError) as exc:
        raise SourceError(f"{path}: {_MANIFEST} is not a valid archive manifest ({exc})") from None
    archive = MarArchive(
        name=str(model.get("modelName", "")),
        version=str(model.get("modelVersion", "1.0")),
        serialized_file=str(model.get("serializedFile", "")),
        handler=str(model.get("handler", "")),
        model_file=str(model.get("modelFile", "")),
    )
    return archive, files


def import_mar(
    mar: Path, options: ExportOptions, remote: str | None = None, handler_batch_size: int | None = None
) -> ExportReport:
    """Export the archive's serialized model into ``options.repository`` (name defaults to the archive's);
    a store URL as the repository is written locally, then uploaded (manifests last). A custom handler's
    batches hold ``handler_batch_size`` requests (default: the archive's ``batchSize``, else 1, as TorchServe)."""
    if not isinstance(options.repository, Path):
        return export_to_store(options, lambda local: import_mar(mar, local, remote, handler_batch_size))
    archive, files = read_mar(mar)
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
        report = export(run)
    for row in report.rows:
        if row.published and builtin is not None and not remote:
            model_dir = options.folder / row.model
            keep_builtin_handler(model_dir, model_dir / str(row.version), builtin, files, archive.serialized_file)
        if row.published and remote:
            update_config(options.folder / row.model, {"runtime": "torchserve", "remote": _remote(remote, archive)})
    return report


def _read_files(path: Path) -> dict[str, bytes]:
    if path.is_dir():
        return {p.relative_to(path).as_posix(): p.read_bytes() for p in path.rglob("*") if p.is_file()}
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                return {_safe(i.filename, path): archive.read(i) for i in archive.infolist() if not i.is_dir()}
        if tarfile.is_tarfile(path):
            with tarfile.open(path) as archive:
                files = {_safe(m.name, path): _extract(archive, m) for m in archive.getmembers() if m.isfile()}
            return _strip_top_folder(files)
    except (zipfile.BadZipFile, tarfile.TarError, OSError) as exc:
        raise SourceError(f"{path}: cannot read the archive: {exc}") from None
    raise SourceError(f"{path} is neither a .mar (zip), a .tar.gz archive nor an archive directory")


def _strip_top_folder(files: dict[str, bytes]) -> dict[str, bytes]:
    """tgz archives hold one top folder named after the model."""
    if _MANIFEST in files:
        return files
    tops = {name.split("/", 1)[0] for name in files}
    if len(tops) == 1 and f"{next(iter(tops))}/{_MANIFEST}" in files:
        return {name.split("/", 1)[1]: data for name, data in files.items()}
    return files


def _safe(name: str, path: Path) -> str:
    parts = PurePosixPath(name).parts
    if not parts or name.startswith("/") or ".." in parts:
        raise SourceError(f"{path}: archive member {name!r} escapes the archive")
    return "/".join(parts)


def _extract(archive: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    handle = archive.extractfile(member)
    return handle.read() if handle is not None else b""


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
