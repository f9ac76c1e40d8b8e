"""What every repository backend shares: the interface, name rules, the cache folder and secret redaction."""

from __future__ import annotations

import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Protocol

__all__ = [
    "CACHE_ENV",
    "CONFIG_FILE",
    "MODEL_NAME",
    "SECRET_ENV",
    "VERSION_NAME",
    "RedactSecrets",
    "Repository",
    "default_cache_dir",
    "is_url",
    "redact",
]

MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
VERSION_NAME = re.compile(r"^[0-9]{1,18}$")  # ASCII digits only ("²".isdigit() is True), no 5000-digit int()
CONFIG_FILE = "config.yaml"  # REPO/<model>/config.yaml, the model's serving config
CACHE_ENV = "MODELPORT_CACHE_DIR"
# the providers' standard variables whose values must never reach a log line or an error message
SECRET_ENV = (
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AZURE_STORAGE_KEY",
    "AZURE_STORAGE_ACCOUNT_KEY",  # adlfs reads these two (the Azure CLI's names are the ones above and below)
    "AZURE_STORAGE_CLIENT_SECRET",
    "AZURE_STORAGE_CONNECTION_STRING",
    "AZURE_STORAGE_SAS_TOKEN",
    "AZURE_CLIENT_SECRET",
)
# the parts of an Azure connection string that are secrets on their own (an error may quote one without the rest)
_CONNECTION_SECRETS = ("AccountKey", "SharedAccessSignature")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
# credential headers as an SDK's debug log prints them (botocore: 'X-Amz-Security-Token': b'...'): an IRSA or
# instance-role session token is in no environment variable, so only its header name can find it
_SECRET_HEADER = re.compile(
    r"""(?i)((?:x-amz-security-token|authorization|x-goog-api-key)['"]?\s*[:=]\s*b?['"]?)([^'",}\s][^'",}]*)"""
)


class Repository(Protocol):
    """Where a model repository is stored, as the server reads it: models, versions, and local copies.

    ``models`` and ``versions`` list what is there now (a version is there once its manifest is);
    ``fetch`` returns a local folder whose files match the manifest's sha256. Methods that reach a
    remote store raise ``UnavailableError`` when it cannot be reached; call them off the event loop.
    """

    @property
    def location(self) -> str:
        """The repository as the user named it (no credentials)."""
        ...

    def models(self, refresh: bool = True) -> list[str]:
        """Model names; ``refresh=False``: the names of the last listing, without I/O for a remote store."""
        ...

    def versions(self, model: str) -> list[int]:
        """The model's version numbers that have a manifest."""
        ...

    def config_dir(self, model: str) -> Path:
        """A local folder holding the model's current ``config.yaml`` (if it has one)."""
        ...

    def stamp(self, model: str, version: int) -> str:
        """Changes when the version's manifest (which lists every file's sha256) changes."""
        ...

    def path(self, model: str, version: int) -> Path:
        """Where the version's files are (or go) on this machine."""
        ...

    def fetch(self, model: str, version: int, stamp: str) -> Path:
        """The version's verified local folder: every file the manifest lists has its sha256 (once per stamp)."""
        ...

    def release(self, directory: Path) -> None:
        """A fetched folder no served version uses any more (a remote store's cache drops it)."""
        ...


def is_url(repository: str | Path) -> bool:
    """Whether ``repository`` names a store by URL (``s3://``, ``gs://``, ``az://``, ``file://``...)."""
    return isinstance(repository, str) and bool(_URL.match(repository))


def default_cache_dir() -> Path:
    """``$MODELPORT_CACHE_DIR``, else ``~/.cache/modelport`` when it can be created, else the system temp."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "modelport"
    try:
        home.mkdir(parents=True, exist_ok=True)
    except OSError:
        return Path(tempfile.gettempdir()) / f"modelport-cache-{os.getuid()}"
    return home


def redact(text: str) -> str:
    """``text`` with the value of every credential variable in the environment, and of every credential
    header (``X-Amz-Security-Token``, ``Authorization``, ``X-Goog-Api-Key``), replaced by ``***``."""
    for value in _secrets():
        if len(value) >= 4:
            text = text.replace(value, "***")
    return _SECRET_HEADER.sub(r"\1***", text)


class RedactSecrets(logging.Filter):
    """A handler filter that applies :func:`redact` to every record's message and traceback: the stores' SDKs
    log request headers (session tokens included) at debug level, where modelport's own errors cannot help."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: the handler reports it as logging does, the caller goes on
            return True
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return True


def _secrets() -> list[str]:
    """The credential values in the environment, longest first (a connection string before the key inside it)."""
    values = [os.environ.get(name, "") for name in SECRET_ENV]
    for part in os.environ.get("AZURE_STORAGE_CONNECTION_STRING", "").split(";"):
        key, _, value = part.partition("=")
        if key.strip() in _CONNECTION_SECRETS:
            values.append(value)
    return sorted(values, key=len, reverse=True)
