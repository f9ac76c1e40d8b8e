"""A model repository in a local folder: read in place, never copied."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from modelport.errors import ModelNotReadyError
from modelport.manifest import MANIFEST_FILE
from modelport.storage.base import MODEL_NAME, VERSION_NAME
from modelport.storage.verify import Verified

__all__ = ["LocalRepository", "fingerprint"]

log = logging.getLogger(__name__)


def fingerprint(directory: Path) -> str:
    """Changes when the version's manifest (which lists every file's sha256) changes."""
    path = directory / MANIFEST_FILE
    stat = path.stat()
    return hashlib.sha256(path.read_bytes() + str(stat.st_mtime_ns).encode()).hexdigest()


def _inside(path: Path, root: Path) -> bool:
    """Whether ``path``, symlinks resolved, lies inside ``root``: a repository entry cannot lead elsewhere."""
    inside = path.resolve().is_relative_to(root.resolve())
    if not inside:
        log.warning("%s resolves outside the repository %s: ignored", path, root)
    return inside


class LocalRepository:
    """``REPO/<model>/<version>/`` on this machine's file system."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._verified = Verified()

    @property
    def location(self) -> str:
        return str(self.root)

    def models(self, refresh: bool = True) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(
            p.name
            for p in self.root.iterdir()
            if p.is_dir() and MODEL_NAME.match(p.name) and ".." not in p.name and _inside(p, self.root)
        )

    def versions(self, model: str) -> list[int]:
        folder = self.root / model
        if not folder.is_dir():
            return []
        return [
            int(p.name)
            for p in folder.iterdir()
            if VERSION_NAME.match(p.name) and (p / MANIFEST_FILE).exists() and _inside(p, self.root)
        ]

    def config_dir(self, model: str) -> Path:
        return self.root / model

    def stamp(self, model: str, version: int) -> str:
        return fingerprint(self.path(model, version))

    def path(self, model: str, version: int) -> Path:
        return self.root / model / str(version)

    def fetch(self, model: str, version: int, stamp: str) -> Path:
        directory = self.path(model, version)
        if not _inside(directory, self.root):
            raise ModelNotReadyError(f"{directory} resolves outside the repository: refused")
        self._verified.check(directory, stamp)
        return directory

    def release(self, directory: Path) -> None:
        """Nothing to drop: the files are the repository's own."""
