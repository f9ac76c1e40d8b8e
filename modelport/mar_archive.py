"""TorchServe model archives: a ``.mar`` (zip), a ``.tar.gz`` (one top folder named after the model, or none)
or a no-archive folder, each holding ``MAR-INF/MANIFEST.json``.

Read by ``modelport import-mar`` (every file: ``read_mar``) and by the management API's registration, which
only needs the model's name and version (``read_manifest``: one member read, however large the archive).
"""

from __future__ import annotations

import json
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from modelport.errors import NotFoundError, SourceError

__all__ = ["MANIFEST", "MarArchive", "read_manifest", "read_mar"]

MANIFEST = "MAR-INF/MANIFEST.json"


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
    _exists(path)
    files = _strip_top_folder(_guarded(path, _read_files))
    if MANIFEST not in files:
        raise SourceError(f"{path} is not a TorchServe model archive: {MANIFEST} is missing")
    return _archive(path, files[MANIFEST]), files


def read_manifest(path: Path) -> MarArchive:
    """The archive's manifest alone."""
    _exists(path)
    return _archive(path, _guarded(path, _read_manifest))


def _exists(path: Path) -> None:
    if not path.exists():
        raise NotFoundError(f"{path}: no such model archive")


def _archive(path: Path, manifest: bytes) -> MarArchive:
    try:
        model = json.loads(manifest)["model"]
        return MarArchive(
            name=_text(model, "modelName", ""),
            version=_text(model, "modelVersion", "1.0"),
            serialized_file=_text(model, "serializedFile", ""),
            handler=_text(model, "handler", ""),
            model_file=_text(model, "modelFile", ""),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SourceError(f"{path}: {MANIFEST} is not a valid archive manifest ({exc})") from None


def _text(model: dict[str, Any], key: str, default: str) -> str:
    value = model.get(key)
    return default if value is None or value == "" else str(value)


def _guarded(path: Path, read: Any) -> Any:
    """``read(path)``, with an unreadable archive as a SourceError."""
    try:
        return read(path)
    except (zipfile.BadZipFile, tarfile.TarError, OSError) as exc:
        raise SourceError(f"{path}: cannot read the archive: {exc}") from None


def _read_files(path: Path) -> dict[str, bytes]:
    if path.is_dir():
        return {p.relative_to(path).as_posix(): p.read_bytes() for p in path.rglob("*") if p.is_file()}
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            return {_safe(i.filename, path): archive.read(i) for i in archive.infolist() if not i.is_dir()}
    if tarfile.is_tarfile(path):
        with tarfile.open(path) as archive:
            return {_safe(m.name, path): _extract(archive, m) for m in archive.getmembers() if m.isfile()}
    raise _not_an_archive(path)


def _read_manifest(path: Path) -> bytes:
    if path.is_dir():
        manifest = path / MANIFEST
        if not manifest.is_file():
            raise _missing(path)
        return manifest.read_bytes()
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = [i.filename for i in archive.infolist() if not i.is_dir()]
            return archive.read(_manifest_member(names, path))
    if tarfile.is_tarfile(path):
        with tarfile.open(path) as archive:
            members = {m.name: m for m in archive.getmembers() if m.isfile()}
            return _extract(archive, members[_manifest_member(list(members), path)])
    raise _not_an_archive(path)


def _manifest_member(names: list[str], path: Path) -> str:
    """The manifest's member name: at the top, or under the one top folder (as ``_strip_top_folder`` reads it)."""
    if MANIFEST in names:
        return MANIFEST
    tops = {name.split("/", 1)[0] for name in names}
    if len(tops) == 1 and f"{next(iter(tops))}/{MANIFEST}" in names:
        return f"{next(iter(tops))}/{MANIFEST}"
    raise _missing(path)


def _strip_top_folder(files: dict[str, bytes]) -> dict[str, bytes]:
    """tgz archives hold one top folder named after the model."""
    if MANIFEST in files:
        return files
    tops = {name.split("/", 1)[0] for name in files}
    if len(tops) == 1 and f"{next(iter(tops))}/{MANIFEST}" in files:
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


def _missing(path: Path) -> SourceError:
    return SourceError(f"{path} is not a TorchServe model archive: {MANIFEST} is missing")


def _not_an_archive(path: Path) -> SourceError:
    return SourceError(f"{path} is neither a .mar (zip), a .tar.gz archive nor an archive directory")
