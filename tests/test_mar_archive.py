"""TorchServe archives read the same way by import-mar (every file) and registration (the manifest alone)."""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from pathlib import Path

import pytest

from modelport.errors import NotFoundError, SourceError
from modelport.mar_archive import MANIFEST, read_manifest, read_mar

_MODEL = {"model": {"modelName": "mnist", "modelVersion": "2.0", "serializedFile": "m.pt", "handler": "h.py"}}
_FILES = {MANIFEST: json.dumps(_MODEL).encode(), "m.pt": b"PK\x03\x04weights", "h.py": b"def handle(d, c): ...\n"}


def _write(path: Path, kind: str, files: dict[str, bytes], top: str = "") -> Path:
    if kind == "dir":
        for name, data in files.items():
            (path / top / name).parent.mkdir(parents=True, exist_ok=True)
            (path / top / name).write_bytes(data)
        return path / top if top else path
    if kind == "zip":
        with zipfile.ZipFile(path, "w") as archive:
            for name, data in files.items():
                archive.writestr(f"{top}{name}", data)
        return path
    with tarfile.open(path, "w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(f"{top}{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize(("kind", "top"), [("zip", ""), ("zip", "mnist/"), ("tgz", ""), ("tgz", "mnist/"), ("dir", "")])
def test_both_readers_find_the_manifest_and_agree(tmp_path: Path, kind: str, top: str) -> None:
    path = _write(tmp_path / f"mnist.{kind}", kind, _FILES, top) if kind != "dir" else _write(tmp_path, kind, _FILES)
    archive, files = read_mar(path)
    assert (archive.name, archive.version, archive.serialized_file, archive.handler) == ("mnist", "2.0", "m.pt", "h.py")
    assert files["m.pt"] == _FILES["m.pt"] and files["h.py"] == _FILES["h.py"]  # top folder stripped
    assert read_manifest(path) == archive


def test_version_defaults_to_1_0_and_a_null_name_is_empty(tmp_path: Path) -> None:
    manifest = json.dumps({"model": {"modelName": None, "serializedFile": "m.pt"}}).encode()
    archive = read_manifest(_write(tmp_path / "a.mar", "zip", {MANIFEST: manifest}))
    assert (archive.name, archive.version) == ("", "1.0")


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"m.pt": b"x"}, "MANIFEST.json is missing"),
        ({MANIFEST: b"{not json"}, "not a valid archive manifest"),
        ({MANIFEST: b'["model"]'}, "not a valid archive manifest"),
    ],
)
def test_bad_archives_are_source_errors_naming_the_path(tmp_path: Path, files: dict[str, bytes], message: str) -> None:
    path = _write(tmp_path / "bad.mar", "zip", files)
    for read in (read_mar, read_manifest):
        with pytest.raises(SourceError, match=message) as caught:
            read(path)
        assert str(path) in str(caught.value)


def test_not_an_archive_missing_and_escaping_members(tmp_path: Path) -> None:
    junk = tmp_path / "junk.mar"
    junk.write_bytes(b"neither zip nor tar")
    for read in (read_mar, read_manifest):
        with pytest.raises(SourceError, match=r"neither a \.mar"):
            read(junk)
        with pytest.raises(NotFoundError, match="no such model archive"):
            read(tmp_path / "absent.mar")
    escaping = _write(tmp_path / "evil.tgz", "tgz", {**_FILES, "../evil.py": b"x"})
    with pytest.raises(SourceError, match="escapes the archive"):
        read_mar(escaping)
