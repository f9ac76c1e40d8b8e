"""A model repository in an object store (S3, GCS, Azure Blob, ``file://``...) through fsspec.

fsspec gives one interface over every store (and ``file://``), with each store's own package
(s3fs, gcsfs, adlfs) installed as an extra. Credentials come only from the provider's standard
environment and config files (``AWS_ACCESS_KEY_ID``, ``AWS_ENDPOINT_URL``, ...), never from the URL,
and their values are redacted from every message. A version is fetched into a local cache folder
per manifest and verified there before it loads; a version is only there once its manifest is,
which publishing uploads last.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import posixpath
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from modelport.errors import DependencyError, InvalidArgumentError, ModelportError, UnavailableError, summarize
from modelport.manifest import MANIFEST_FILE, file_sha256, read_manifest
from modelport.storage.base import CONFIG_FILE, MODEL_NAME, VERSION_NAME, redact
from modelport.storage.verify import Verified

__all__ = ["ObjectRepository"]

log = logging.getLogger(__name__)


def _filesystem(url: str) -> tuple[Any, str]:
    """The fsspec file system of ``url`` (listings never cached: every poll sees the store as it is) and its root."""
    if urlsplit(url).password is not None or "@" in urlsplit(url).netloc:
        raise InvalidArgumentError(
            "credentials in a repository URL are refused: use the provider's environment "
            "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, GOOGLE_APPLICATION_CREDENTIALS, AZURE_STORAGE_*...)"
        )
    try:
        import fsspec.core
    except ImportError:
        raise DependencyError("object-store repositories need fsspec: pip install 'modelport[s3]'") from None
    try:
        folders = {"auto_mkdir": True} if urlsplit(url).scheme == "file" else {}  # object stores have no folders
        fs, root = fsspec.core.url_to_fs(url, use_listings_cache=False, skip_instance_cache=True, **folders)
    except ImportError as exc:
        extra = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs", "az": "azure", "abfs": "azure"}
        name = extra.get(urlsplit(url).scheme, "s3")
        raise DependencyError(f"{url}: {exc} (pip install 'modelport[{name}]')") from None
    except ValueError as exc:
        raise InvalidArgumentError(f"{url}: {exc}") from None
    return fs, str(root).rstrip("/")


class ObjectRepository:
    """``URL/<model>/<version>/`` in an object store, fetched into ``cache_dir`` before it loads."""

    def __init__(self, url: str, cache_dir: Path) -> None:
        self.url = url.rstrip("/")
        self.fs, self.root = _filesystem(self.url)
        self.cache = cache_dir / hashlib.sha256(self.url.encode()).hexdigest()[:16]
        self._names: list[str] = []
        self._verified = Verified()

    @property
    def location(self) -> str:
        return self.url

    @contextlib.contextmanager
    def _reaching(self, what: str) -> Iterator[None]:
        """Store errors become UnavailableError (retried by the next poll), with credentials redacted."""
        try:
            yield
        except ModelportError:
            raise
        except Exception as exc:
            raise UnavailableError(redact(f"{self.url}: cannot {what}: {summarize(exc)}")) from None

    def models(self, refresh: bool = True) -> list[str]:
        if not refresh:
            return list(self._names)
        with self._reaching("list the repository"):
            try:
                entries = self.fs.ls(self.root, detail=True)
            except FileNotFoundError:
                entries = self._missing_root()
        names = (posixpath.basename(str(e["name"]).rstrip("/")) for e in entries if e.get("type") == "directory")
        self._names = sorted(n for n in names if MODEL_NAME.match(n) and ".." not in n)
        return list(self._names)

    def _missing_root(self) -> list[dict[str, Any]]:
        """An empty prefix is an empty repository; a missing bucket (or folder) is a store problem."""
        if self._container_exists():
            return []
        raise UnavailableError(f"{self.url}: the repository's bucket or folder does not exist")

    def _container_exists(self) -> bool:
        """Whether the bucket (container; a local store's parent folder) holding the repository still exists."""
        container = posixpath.dirname(self.root) if "file" in self.fs.protocol else self.root.split("/")[0]
        return bool(container != self.root and container and self.fs.exists(container)) or self.fs.exists(self.root)

    def versions(self, model: str) -> list[int]:
        prefix = f"{self.root}/{model}/"
        with self._reaching(f"list model {model!r}"):
            try:
                keys = [str(k) for k in self.fs.find(prefix.rstrip("/"))]
            except FileNotFoundError:
                keys = []
            # nothing, and the bucket gone since the repository was listed (deleted mid-poll): a store to wait for,
            # not a model without versions (whose loaded versions would be unloaded)
            if not keys and not self._container_exists():
                raise UnavailableError(f"{self.url}: the repository's bucket or folder does not exist")
        numbers = []
        for key in keys:
            parts = key[len(prefix) :].split("/") if key.startswith(prefix) else []
            if len(parts) == 2 and parts[1] == MANIFEST_FILE and VERSION_NAME.match(parts[0]):
                numbers.append(int(parts[0]))
        return sorted(numbers)

    def config_dir(self, model: str) -> Path:
        folder = self.cache / model
        folder.mkdir(parents=True, exist_ok=True)
        data = self._read(f"{model}/{CONFIG_FILE}", missing_ok=True)
        if data is None:
            (folder / CONFIG_FILE).unlink(missing_ok=True)
        else:
            _write_atomic(folder / CONFIG_FILE, data)
        return folder

    def stamp(self, model: str, version: int) -> str:
        return hashlib.sha256(self._read(f"{model}/{version}/{MANIFEST_FILE}") or b"").hexdigest()

    def path(self, model: str, version: int) -> Path:
        return self.cache / model / str(version)

    def fetch(self, model: str, version: int, stamp: str) -> Path:
        manifest_bytes = self._read(f"{model}/{version}/{MANIFEST_FILE}") or b""
        stamp = hashlib.sha256(manifest_bytes).hexdigest()  # what is there now, if it changed since the listing
        directory = self.path(model, version) / stamp[:16]
        directory.mkdir(parents=True, exist_ok=True)
        _write_atomic(directory / MANIFEST_FILE, manifest_bytes)
        listed = read_manifest(directory).files
        prefix = f"{self.root}/{model}/{version}/"
        with self._reaching(f"fetch {model}/{version}"):
            for key in self.fs.find(prefix.rstrip("/")):
                relative = str(key)[len(prefix) :]
                if relative == MANIFEST_FILE or not _safe(relative):
                    continue
                local = directory / relative
                if relative in listed and local.is_file() and file_sha256(local) == listed[relative]:
                    continue  # cached by an earlier fetch of this manifest
                local.parent.mkdir(parents=True, exist_ok=True)
                partial = local.with_name(f".{local.name}.{os.getpid()}.part")
                self.fs.get_file(str(key), str(partial))
                os.replace(partial, local)
        self._verified.check(directory, stamp)
        return directory

    def release(self, directory: Path) -> None:
        if directory.resolve().is_relative_to(self.cache.resolve()) and directory != self.cache:
            self._verified.forget(directory)
            shutil.rmtree(directory, ignore_errors=True)

    def upload(self, local_root: Path) -> list[str]:
        """Upload a local repository tree; every manifest goes last, so no version is visible half uploaded."""
        files = sorted(p for p in local_root.rglob("*") if p.is_file())
        ordered = [p for p in files if p.name != MANIFEST_FILE] + [p for p in files if p.name == MANIFEST_FILE]
        uploaded = []
        with self._reaching("upload"):
            for path in ordered:
                relative = path.relative_to(local_root).as_posix()
                self.fs.put_file(str(path), f"{self.root}/{relative}")
                uploaded.append(relative)
        return uploaded

    def _read(self, relative: str, missing_ok: bool = False) -> bytes | None:
        with self._reaching(f"read {relative}"):
            try:
                return bytes(self.fs.cat_file(f"{self.root}/{relative}"))
            except FileNotFoundError:
                if missing_ok:
                    return None
                raise


def _safe(relative: str) -> bool:
    """A key below a version that maps to a file inside its folder."""
    parts = relative.split("/")
    ok = bool(relative) and not relative.startswith("/") and all(p not in ("", ".", "..") for p in parts)
    if not ok:
        log.warning("object key %r does not map to a file inside its version: skipped", relative)
    return ok


def _write_atomic(path: Path, data: bytes) -> None:
    partial = path.with_name(f".{path.name}.{os.getpid()}.part")
    partial.write_bytes(data)
    os.replace(partial, path)
