"""The model repository as the server holds it: discovery, version policies, load/unload, hot reload."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelport.errors import InvalidArgumentError, ModelportError, NotFoundError, UnavailableError
from modelport.serving.batching import BatchStats
from modelport.serving.memory import release_freed_memory
from modelport.serving.model import LoadedVersion, ServedVersion, load_version
from modelport.serving.settings import ModelConfig, ServerSettings, read_model_config
from modelport.serving.types import RepositoryRow, VersionState
from modelport.storage import Repository, open_repository

__all__ = ["ModelEntry", "ModelManager", "unknown_model", "unknown_version"]

log = logging.getLogger(__name__)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_VERSION = re.compile(r"^[0-9]{1,18}$")  # ASCII digits only ("²".isdigit() is True), no 5000-digit int()
Observer = Callable[[str, int, BatchStats], None]  # (model, version, what one batch looked like)


@dataclass
class ModelEntry:
    """One model: its config and served versions (ascending)."""

    name: str
    config: ModelConfig
    versions: dict[int, ServedVersion] = field(default_factory=dict)
    error: str = ""
    directory: Path | None = None  # where its config.yaml lies (a pipeline's processors read files there)
    override: dict[str, Any] = field(default_factory=dict)  # a model-control load's config override, in force

    def default(self) -> ServedVersion:
        """The configured default version, else the highest READY one, else the highest."""
        if self.config.default_version in self.versions:
            return self.versions[self.config.default_version]
        if len(self.versions) == 1:  # the usual case, on every request: the one version, ready or not
            return next(iter(self.versions.values()))
        ready = [v for v in self.versions.values() if v.state is VersionState.READY]
        pool = ready or list(self.versions.values())
        if not pool:  # a config.yaml that does not parse: say why, not only that nothing serves
            reason = f": {self.error}" if self.error else ""
            raise NotFoundError(f"model {self.name!r} has no versions to serve{reason}")
        return max(pool, key=lambda v: v.version)


@dataclass(frozen=True)
class _Survey:
    """What the repository holds for one model now: its config and the stamps of the versions it wants."""

    config: ModelConfig
    stamps: dict[int, str]
    directory: Path


def unknown_model(name: str) -> str:
    """Triton's words for a model the server does not have (its examples and clients look for them)."""
    return f"Request for unknown model: {name!r} is not found"


def unknown_version(name: str, version: str, served: list[int]) -> str:
    """Triton's words for a version a model does not serve (a version string that is no number: its words for
    that), with the versions it does serve."""
    if not _VERSION.match(version):
        return (
            f"failed to get model version from specified version string {version!r}: version should be an "
            f"integral value > 0 (model {name!r}, served versions: {served})"
        )
    return f"Request for unknown model: {name!r} version {version} is not found (served versions: {served})"


class ModelManager:
    """Loads what the repository holds and keeps it in step with it (a folder or an object store)."""

    def __init__(self, settings: ServerSettings, observe: Observer) -> None:
        self.settings = settings
        self.store: Repository = open_repository(settings.repository, settings.cache_dir or None)
        self.models: dict[str, ModelEntry] = {}
        self._observe = observe
        self._lock = asyncio.Lock()
        self._unreachable = False  # the last poll could not reach the store (warned once per outage)
        self.loaded = False  # the first load_all has finished
        self.listed = False  # the repository was listed once (a store that was down at start: not yet)

    def get(self, name: str, version: str | None = None) -> ServedVersion:
        """The version a request targets; unknown names/versions are NotFound."""
        entry = self.models.get(name)
        if entry is None:
            if not self.loaded:  # the port is open (liveness) before the first load finishes
                raise UnavailableError("the server is still loading its models", retry_after=1.0)
            if not self.listed:  # unknown only once the repository says so
                raise UnavailableError(f"the repository {self.store.location} could not be listed yet", retry_after=1.0)
            raise NotFoundError(unknown_model(name))
        if not self.loaded and (
            not entry.versions or (version and version.isdigit() and int(version) not in entry.versions)
        ):
            raise UnavailableError(f"model {name!r} is still loading", retry_after=1.0)  # not a 404 to retry on
        if version is None or version == "":
            return entry.default()
        if not _VERSION.match(version) or int(version) not in entry.versions:
            raise NotFoundError(unknown_version(name, version, sorted(entry.versions)))
        return entry.versions[int(version)]

    async def load_all(self) -> None:
        """Load every model the repository holds (models that fail are recorded, not fatal; so is a store
        that cannot be reached yet: polling picks it up)."""
        try:
            await self.reload()
        except UnavailableError as exc:
            self._warn_unreachable(exc)
        self.loaded = True

    async def reload(self) -> None:
        """One pass over the repository: load new/changed versions, unload removed ones; never drops in-flight
        work. A store that cannot be reached raises UnavailableError before anything is unloaded."""
        async with self._lock:
            names = set(await asyncio.to_thread(self.store.models))
            self.listed = True
            for name in sorted(names | set(self.models)):
                if name in names:
                    await self._sync_model(name)
                else:
                    await self._drop(name)

    async def poll_forever(self, polled: Callable[[str], None] | None = None) -> None:
        """Reload every ``poll_interval_s``; while the store is unreachable, keep serving what is loaded.
        ``polled`` hears each pass's result: ok, unreachable or error."""
        while True:
            await asyncio.sleep(self.settings.poll_interval_s)
            result = await self._poll()
            if polled is not None:
                polled(result)

    async def _poll(self) -> str:
        try:
            await self.reload()
        except UnavailableError as exc:
            self._warn_unreachable(exc)
            return "unreachable"
        except Exception:  # a bad file must not stop polling
            log.exception("repository poll failed")
            return "error"
        if self._unreachable:
            log.warning("repository %s is reachable again", self.store.location)
            self._unreachable = False
        return "ok"

    def _warn_unreachable(self, exc: UnavailableError) -> None:
        if not self._unreachable:
            log.warning("repository poll: %s; serving what is loaded until it is back", exc.message)
        self._unreachable = True

    async def load(self, name: str, override: dict[str, Any] | None = None, restart: bool = False) -> ModelEntry:
        """Load (or reload) one model by name (model control API); ``restart``: load every version afresh
        (its config.yaml changed how it runs, e.g. its instances), swapping each when the new one is loaded.
        ``override``: config.yaml fields that hold until the next load (Triton's config override); a load whose
        override differs from the one in force restarts the versions."""
        self.check_name(name)
        names = await asyncio.to_thread(self.store.models)
        self.listed = True
        if name not in names:
            raise NotFoundError(f"failed to load {name!r}: the model is not in the repository {self.store.location}")
        async with self._lock:
            entry = self.models.setdefault(name, ModelEntry(name, ModelConfig()))
            override = override or {}
            restart = restart or override != entry.override
            entry.override = override
            await self._sync_model(name, restart)
        return self.models[name]

    async def unload(self, name: str) -> None:
        """Unload every version of one model, letting in-flight requests finish."""
        self.check_name(name)
        if name not in self.models:
            raise NotFoundError(f"model {name!r} is not loaded")
        async with self._lock:
            await self._drop(name)

    async def close(self) -> None:
        for name in list(self.models):
            await self._drop(name)

    def index(self) -> list[RepositoryRow]:
        """Every model of the repository (loaded or not; a store's as of its last listing) with its versions."""
        rows = []
        for name in sorted(set(self.store.models(refresh=False)) | set(self.models)):
            entry = self.models.get(name)
            if entry is None:
                rows.append(RepositoryRow(name, "UNAVAILABLE", "unloaded"))
                continue
            if entry.error:
                rows.append(RepositoryRow(name, "UNAVAILABLE", entry.error))
            rows += [RepositoryRow(name, v.state.value, v.reason, v.version) for v in entry.versions.values()]
        return rows

    def check_name(self, name: str) -> None:
        """Refuse (400) a name that cannot be a model folder."""
        if not _NAME.match(name) or ".." in name:
            raise InvalidArgumentError(f"invalid model name {name!r}")

    def _survey(self, name: str) -> _Survey:
        """Blocking: the model's config, and the stamp of each version its policy wants."""
        directory = self.store.config_dir(name)
        config = read_model_config(directory)
        wanted = config.version_policy.select(self.store.versions(name)) if config.pipeline is None else []
        return _Survey(config, {number: self.store.stamp(name, number) for number in wanted}, directory)

    async def _sync_model(self, name: str, restart: bool = False) -> None:
        entry = self.models.setdefault(name, ModelEntry(name, ModelConfig()))
        try:
            survey = await asyncio.to_thread(self._survey, name)
        except UnavailableError:
            raise
        except ModelportError as exc:
            entry.error = exc.message
            log.error("model %s: %s", name, exc.message)
            return
        config = survey.config.model_copy(update=entry.override) if entry.override else survey.config
        entry.config, entry.error, entry.directory = config, "", survey.directory
        for number, stamp in sorted(survey.stamps.items()):
            current = entry.versions.get(number)
            if current is not None and current.loaded.fingerprint == stamp and not current.loaded.retry and not restart:
                continue
            fresh = await self._load(name, number, stamp, entry.config)
            if fresh.loaded.retry and current is not None and current.state is VersionState.READY:
                continue  # the store or a remote is unavailable: the version serving now goes on serving
            entry.versions[number] = fresh  # swap first, then let the old one drain
            if current is not None:
                await self._close(current)
        await self._retire(entry, set(survey.stamps))
        if not entry.versions and not entry.error and entry.config.pipeline is None:  # a pipeline has no versions
            entry.error = "no versions with a manifest match the version policy"

    async def _retire(self, entry: ModelEntry, wanted: set[int]) -> None:
        """Unload versions the policy no longer wants, once a wanted one is READY (until then they serve)."""
        retired = sorted(set(entry.versions) - wanted)
        if not retired:
            return
        ready = any(entry.versions[n].state is VersionState.READY for n in wanted if n in entry.versions)
        if wanted and not ready:
            log.warning("model %s: versions %s serve until a newer version is ready", entry.name, retired)
            return
        for number in retired:
            await self._close(entry.versions.pop(number))

    async def _load(self, name: str, number: int, stamp: str, config: ModelConfig) -> ServedVersion:
        loaded = await asyncio.to_thread(self._fetch_and_load, name, number, stamp, config)
        await asyncio.to_thread(release_freed_memory)  # what only loading needed

        def observe(stats: BatchStats) -> None:
            self._observe(name, number, stats)

        version = ServedVersion(loaded, observe)
        log.info("model %s version %s: %s in %.2fs", name, number, version.state.value, loaded.load_seconds)
        return version

    def _fetch_and_load(self, name: str, number: int, stamp: str, config: ModelConfig) -> LoadedVersion:
        """Blocking: the version's verified local copy (sha256 of every file), then its runtimes."""
        try:
            directory = self.store.fetch(name, number, stamp)
        except ModelportError as exc:
            log.error("model %s version %s is not ready: %s", name, number, exc.message)
            retry = isinstance(exc, UnavailableError)
            return LoadedVersion(name, number, self.store.path(name, number), stamp, reason=exc.message, retry=retry)
        return load_version(name, number, directory, stamp, self.settings, config)

    async def _close(self, version: ServedVersion) -> None:
        version.state = VersionState.UNLOADING
        if version.batcher is not None:
            await version.batcher.close(self.settings.drain_timeout_s)
        if version.execution is not None:
            for runtime in version.execution.runtimes:
                await asyncio.to_thread(runtime.unload)
        in_use = any(v.directory == version.directory for e in self.models.values() for v in e.versions.values())
        if not in_use:
            await asyncio.to_thread(self.store.release, version.directory)
        await asyncio.to_thread(release_freed_memory)

    async def _drop(self, name: str) -> None:
        entry = self.models.pop(name, None)
        if entry is not None:
            for version in entry.versions.values():
                await self._close(version)
