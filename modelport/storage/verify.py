"""Checking a version's files against the sha256 its manifest records, once per manifest."""

from __future__ import annotations

import threading
from pathlib import Path

from modelport.errors import ModelNotReadyError
from modelport.manifest import ModelManifest, file_sha256, read_manifest

__all__ = ["Verified", "verify_files"]


def verify_files(directory: Path, manifest: ModelManifest) -> None:
    """Every file the manifest lists is in ``directory`` (symlinks resolved) with the sha256 it records."""
    root = directory.resolve()
    for name, expected in sorted(manifest.files.items()):
        path = directory / name
        if not path.resolve().is_relative_to(root):
            raise ModelNotReadyError(f"artifact file {name!r} lies outside the version directory: refused")
        if not path.is_file():
            raise ModelNotReadyError(f"artifact file {name!r} is missing (the manifest lists it with its sha256)")
        actual = file_sha256(path)
        if actual != expected:
            raise ModelNotReadyError(
                f"artifact file {name!r} does not match its manifest: sha256 {actual[:16]}..., "
                f"the manifest records {expected[:16]}... (corrupt, or changed after export)"
            )


class Verified:
    """The version folders whose files were verified, by manifest stamp: files are hashed once per load."""

    def __init__(self) -> None:
        self._stamps: dict[Path, str] = {}
        self._lock = threading.Lock()

    def check(self, directory: Path, stamp: str) -> ModelManifest:
        """Read the manifest and verify the files, unless this folder was verified at this stamp."""
        manifest = read_manifest(directory)
        with self._lock:
            done = self._stamps.get(directory) == stamp
        if not done:
            verify_files(directory, manifest)
            with self._lock:
                self._stamps[directory] = stamp
        return manifest

    def forget(self, directory: Path) -> None:
        """A folder removed from the cache must be verified again if it comes back."""
        with self._lock:
            self._stamps.pop(directory, None)
