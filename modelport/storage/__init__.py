"""Model repositories where they are stored: a local folder, or an object store by URL, behind one interface.

``open_repository("repo")`` reads a folder in place; ``open_repository("s3://bucket/prefix")`` (or
``gs://``, ``az://``, ``file://``) lists the store through fsspec and fetches each version into a local
cache before it loads. Either way a version's files are checked against the sha256 its manifest records.
"""

from __future__ import annotations

from pathlib import Path

from modelport.storage.base import (
    CACHE_ENV,
    CONFIG_FILE,
    RedactSecrets,
    Repository,
    default_cache_dir,
    is_url,
    redact,
)
from modelport.storage.local import LocalRepository, fingerprint
from modelport.storage.objects import ObjectRepository
from modelport.storage.verify import Verified, verify_files

__all__ = [
    "CACHE_ENV",
    "CONFIG_FILE",
    "LocalRepository",
    "ObjectRepository",
    "RedactSecrets",
    "Repository",
    "Verified",
    "default_cache_dir",
    "fingerprint",
    "is_url",
    "open_repository",
    "open_store",
    "redact",
    "verify_files",
]


def open_repository(repository: str | Path, cache_dir: str | Path | None = None) -> Repository:
    """The backend for a folder (``Path`` or a plain string) or a store URL; ``cache_dir`` holds fetched versions."""
    if not is_url(repository):
        return LocalRepository(Path(repository))
    return open_store(str(repository), cache_dir)


def open_store(url: str, cache_dir: str | Path | None = None) -> ObjectRepository:
    """The object-store backend for ``url`` (fsspec and the store's package are imported here, not before)."""
    return ObjectRepository(url, Path(cache_dir) if cache_dir else default_cache_dir())
