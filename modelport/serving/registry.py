"""Model registration on the repository: TorchServe's register, scale, set-default and unregister.

Registering an archive runs ``modelport import-mar`` in a subprocess (serving never imports the exporters),
which adds the archive as the model's next version in the repository, then writes what TorchServe's
registration says into the model's ``config.yaml``: the versions served (``version_policy: specific``), the
default version (the first one registered, as in TorchServe), the archive's version as a label
(``/predictions/{m}/1.0``), the batch delay and the instances. Scaling writes ``instances`` (``workers``
where the model's handler already runs in worker processes) and loads the model's versions afresh. The
repository must be a local folder; ``config.yaml`` is per model, so batching and instances are too.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import yaml

from modelport.errors import (
    ArchiveDownloadError,
    ConflictError,
    DeadlineExceededError,
    InvalidArchiveError,
    ModelNotReadyError,
    ModelportError,
    NotFoundError,
    PermissionDeniedError,
    UnimplementedError,
    VersionLabelError,
)
from modelport.mar_archive import MANIFEST, read_manifest
from modelport.serving.manager import ModelEntry, ModelManager
from modelport.serving.settings import CONFIG_FILE, ServerSettings
from modelport.serving.types import ArchiveRegistration, Registered, VersionState

__all__ = ["Registry", "archive_identity"]

_BATCH_DELAY_MS = 100.0  # TorchServe's default max_batch_delay of a registration
log = logging.getLogger(__name__)

_IMPORT_TIMEOUT_S = 900.0  # an export with its parity check; a hung one must not hold the registrations' lock


class Registry:
    """Registers archives into the manager's repository and changes how registered models are served."""

    def __init__(self, settings: ServerSettings, manager: ModelManager) -> None:
        self.settings = settings
        self.manager = manager
        self._lock = asyncio.Lock()  # one registration at a time: each takes the model's next version
        self._tasks: set[asyncio.Task[Any]] = set()  # asynchronous requests, kept until they finish

    async def register(self, request: ArchiveRegistration) -> Registered:
        """Import the archive as the model's next version and serve it (``synchronous``: once it is READY)."""
        root = self._root()
        path = self.locate(request.url)
        name, label = await asyncio.to_thread(archive_identity, path, request.url)
        name = request.model_name or name
        if not name:
            raise InvalidArchiveError("Model name is not defined.")
        self.manager.check_name(name)
        work = self._register(request, root, path, name, label)
        if not request.synchronous:
            self._background(work, f"registering {request.url}")
            return Registered(name, label)
        return await work

    def locate(self, url: str) -> Path:
        """The archive ``url`` names: a ``file://`` URL, an absolute path, or a path in the model store."""
        scheme = urlparse(url).scheme
        if scheme == "file":
            path = Path(unquote(urlparse(url).path))
        elif scheme and len(scheme) > 1:  # not a Windows drive letter
            raise ArchiveDownloadError(
                f"Failed to download archive from: {url} (modelport registers archives from its model store, "
                "an absolute path or a file:// URL)"
            )
        else:
            path = Path(url)
            if not path.is_absolute():
                if ".." in path.parts:
                    raise InvalidArchiveError(f"Relative path is not allowed in url: {url}")
                path = self._store() / path
        if not path.exists():
            raise NotFoundError(f"Model not found at: {url}")
        return path

    async def scale(self, name: str, version: str | None, workers: tuple[int, int], synchronous: bool) -> None:
        """Run ``workers[0]`` instances of every version of ``name`` (config.yaml is per model); ``workers[1]`` is
        TorchServe's ``maxWorkers`` (``max_workers``, which its describe API shows)."""
        self._root()
        entry = self._entry(name)
        if version is not None:
            self._number(entry, version, f"Model version: {version} does not exist for model: {name}")
        key = "workers" if entry.config.workers is not None else "instances"
        values = {key: workers[0], "max_workers": workers[1]}
        await asyncio.to_thread(_update_config, self._folder(name), values)
        work = self._restart(name)
        if synchronous:
            await work
        else:
            self._background(work, f"scaling {name}")

    async def set_default(self, name: str, version: str) -> None:
        """Make ``version`` (a number or the archive's label) the model's default version."""
        self._root()
        entry = self._entry(name)
        number = self._number(entry, version, f"Model version {version} does not exist for model {name}")
        await asyncio.to_thread(_update_config, self._folder(name), {"default_version": number})
        async with self._lock:
            await self.manager.load(name)

    async def unregister(self, name: str, version: str | None) -> None:
        """Stop serving one version (default: the default one); the default one only when it is the last."""
        self._root()
        entry = self._entry(name)
        default = entry.default().version
        number = default if version is None else self._number(entry, version, _missing(name, version))
        remaining = sorted(set(entry.versions) - {number})
        if number == default and remaining:
            raise PermissionDeniedError(f"Cannot remove default version for model {name}")
        labels = {k: v for k, v in entry.config.version_labels.items() if v != number}
        async with self._lock:
            if remaining:
                policy = {"version_policy": {"specific": remaining}, "version_labels": labels}
                await asyncio.to_thread(_update_config, self._folder(name), policy)
                await self.manager.load(name)
            else:
                await asyncio.to_thread(_update_config, self._folder(name), {"version_labels": labels})
                await self.manager.unload(name)

    async def _register(
        self, request: ArchiveRegistration, root: Path, path: Path, name: str, label: str
    ) -> Registered:
        async with self._lock:
            if self._registered(name, label):
                raise ConflictError(f"Model version {label} is already registered for model {name}")
            before = _versions(root / name)
            await _import(path, root, name, request)
            added = _versions(root / name) - before
            if not added:
                raise InvalidArchiveError(f"importing {request.url} added no version of model {name}")
            number = max(added)
            await asyncio.to_thread(
                _update_config, root / name, self._registration_config(request, name, number, label)
            )
            entry = await self.manager.load(name)
        served = entry.versions.get(number)
        if served is None or served.state is not VersionState.READY:
            reason = served.reason if served is not None else entry.error
            raise ModelNotReadyError(f"model {name} version {label} was registered but did not load: {reason}")
        workers = len(served.execution.runtimes) if served.execution is not None else 0
        return Registered(name, label, workers)

    def _registration_config(self, request: ArchiveRegistration, name: str, number: int, label: str) -> dict[str, Any]:
        """What config.yaml says once ``number`` is registered: served beside the versions served now, the
        default unchanged (the first version registered is the default, as in TorchServe)."""
        entry = self.manager.models.get(name)
        served = sorted(entry.versions) if entry is not None else []
        config = _read_config(self._root() / name)
        values: dict[str, Any] = {
            "version_policy": {"specific": [*served, number]},
            "default_version": entry.default().version if entry is not None and served else number,
        }
        if label and not label.isdigit():
            values["version_labels"] = {**(config.get("version_labels") or {}), label: number}
        if request.max_batch_delay_ms is not None:
            values["max_queue_delay_ms"] = request.max_batch_delay_ms
        elif config.get("max_queue_delay_ms") is None:  # TorchServe's default max_batch_delay (what describe shows)
            values["max_queue_delay_ms"] = _BATCH_DELAY_MS
        if request.initial_workers is not None:
            values["workers" if config.get("workers") is not None else "instances"] = request.initial_workers
        return values

    def _registered(self, name: str, label: str) -> bool:
        entry = self.manager.models.get(name)
        if entry is None:
            return False
        number = int(label) if label.isdigit() else entry.config.version_labels.get(label)
        return number in entry.versions

    async def _restart(self, name: str) -> None:
        async with self._lock:
            await self.manager.load(name, restart=True)

    def _background(self, work: Coroutine[Any, Any, Any], what: str) -> None:
        """Run an asynchronous request's work after answering it; its failure is logged."""

        def done(task: asyncio.Task[Any]) -> None:
            self._tasks.discard(task)
            if not task.cancelled() and task.exception() is not None:
                log.error("%s failed: %s", what, getattr(task.exception(), "message", task.exception()))

        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(done)

    def _entry(self, name: str) -> ModelEntry:
        entry = self.manager.models.get(name)
        if entry is None or entry.config.pipeline is not None or not entry.versions:
            raise NotFoundError(f"Model not found: {name}")
        return entry

    def _number(self, entry: ModelEntry, version: str, missing: str) -> int:
        """The served version ``version`` names: modelport's number or the archive's label (``1.0``)."""
        number = int(version) if version.isdigit() else entry.config.version_labels.get(version)
        if number is None or number not in entry.versions:
            raise VersionLabelError(missing)
        return number

    def _root(self) -> Path:
        if not isinstance(self.settings.repository, Path):
            raise UnimplementedError(
                "registering, scaling and unregistering models need a local repository folder; "
                f"this server's repository is {self.settings.repository}"
            )
        return self.settings.repository

    def _folder(self, name: str) -> Path:
        return self._root() / name

    def _store(self) -> Path:
        return Path(self.settings.model_store) if self.settings.model_store else self._root()


_INPUT_HINT = (  # the HTTP API's own parameter: TorchServe's gRPC RegisterModelRequest has no field for it
    "input=NAME:DTYPE:SHAPE in the query of HTTP's POST /models (repeatable, one per input), "
    "e.g. /models?url=m.mar&input=x:float32:-1x4"
)


def _missing(name: str, version: str) -> str:
    return f"Model version: {version} does not exist for model: {name}"


def archive_identity(path: Path, url: str = "") -> tuple[str, str]:
    """The ``modelName`` and ``modelVersion`` of an archive (a .mar, a .tar.gz or a no-archive folder)."""
    try:
        archive = read_manifest(path)
    except ModelportError:
        raise InvalidArchiveError(
            f"Model name is not defined. ({url or path.name} is not a model archive with {MANIFEST})"
        ) from None
    return archive.name, archive.version


async def _import(path: Path, root: Path, name: str, request: ArchiveRegistration) -> None:
    """``modelport import-mar`` in a subprocess; its one-line error is the registration's."""
    command = [sys.executable, "-m", "modelport", "import-mar", str(path), "--repository", str(root)]
    command += [
        "--name",
        name,
        "--quiet",
        *(["--max-batch-size", str(request.batch_size)] if request.batch_size else []),
    ]
    command += [f"--input={spec}" for spec in request.inputs]
    try:  # not the loop's subprocess_exec: uvloop's forks (libuv), and the child of a server whose gRPC and torch
        # threads are busy then died with SIGSEGV before its exec (1 gRPC registration in 4); subprocess uses vfork
        process = await asyncio.to_thread(
            subprocess.run, command, capture_output=True, timeout=_IMPORT_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:  # (run killed it)
        raise DeadlineExceededError(f"importing {path.name} took over {_IMPORT_TIMEOUT_S:g}s: stopped") from None
    out, err = process.stdout, process.stderr
    if process.returncode != 0:
        lines = (err.strip() or out.strip()).decode(errors="replace").splitlines()
        log.error("import-mar %s exited with %s: %s", path, process.returncode, (err or out).decode(errors="replace"))
        reason = lines[-1].removeprefix("modelport import-mar: error: ") if lines else "import-mar failed"
        if "--input" in reason:  # import-mar's advice names its flag: a registration gives the specs in its query
            reason += f"; register it with {_INPUT_HINT}"
        raise InvalidArchiveError(f"the archive cannot be served: {reason}")


def _versions(folder: Path) -> set[int]:
    return {int(p.name) for p in folder.iterdir() if p.name.isdigit()} if folder.is_dir() else set()


def _read_config(folder: Path) -> dict[str, Any]:
    path = folder / CONFIG_FILE
    data = yaml.safe_load(path.read_text()) if path.exists() else None
    return data if isinstance(data, dict) else {}


def _update_config(folder: Path, values: dict[str, Any]) -> None:
    """Merge ``values`` into the model's config.yaml (written whole, then renamed into place)."""
    config = {**_read_config(folder), **values}
    if "instances" in values:
        config.pop("workers", None)
    if "workers" in values:
        config.pop("instances", None)
    folder.mkdir(parents=True, exist_ok=True)
    staged = folder / f".{CONFIG_FILE}.tmp"
    staged.write_text(yaml.safe_dump(config, sort_keys=False))
    staged.replace(folder / CONFIG_FILE)
