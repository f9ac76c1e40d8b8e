"""``modelport import-mar STORE [--ts-config config.properties]``: a TorchServe deployment, not one archive.

TorchServe serves a model store (a folder of archives) as its ``config.properties`` says: ``load_models`` (``all``,
or a list of ``file`` / ``name=file``), and per model and archive version the ``models`` JSON (``batchSize``,
``maxBatchDelay``, ``responseTimeout``, ``minWorkers``...). Each archive is imported as ``import-mar`` imports it,
into the model it serves (two archives of one model are two versions of it), and the model's ``config.yaml`` gets
what TorchServe 0.12 does with them (checked against a real one):

- an archive with its own model config (``--config-file``) is served by that config alone, TorchServe's defaults
  for what it leaves out (``responseTimeout`` 120 s); else the ``models`` entry of its name and version, else the
  defaults (``default_response_timeout``, batch size 1). ``batchSize`` becomes the version's batch size,
  ``maxBatchDelay`` ``max_queue_delay_ms`` (with batches of more than one), ``responseTimeout`` ``timeout_ms``,
  ``minWorkers`` above 1 ``instances`` (a built-in handler's model: ``batchSize`` its ``max_batch_size``);
  ``config.yaml`` being per model, the default version's values win;
- every version stays served (``version_policy: {specific: [...]}``) and the first archive loaded is the default
  version (``default_version``): TorchServe 0.12 loads the archives in ``load_models`` order (``all``: the store's
  listing, here by name) and does not apply ``defaultVersion`` at startup (the first one stays the default);
- a config snapshot (``model_snapshot``, TorchServe's ``logs/config/*-snapshot.cfg``: what its management API
  registered, scaled and set as default) is what TorchServe restarts from: its models and versions, each served by
  the snapshot's settings (over an archive's own model config), its ``defaultVersion`` the default version.

Server-wide settings are ``modelport serve`` flags, not model config: :func:`serve_flags` names them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from modelport.errors import InvalidArgumentError, ModelportError, NotFoundError, SourceError, UnsupportedError
from modelport.exporters.mar import import_mar
from modelport.exporters.mar_handler import BATCH_DELAY_MS as _BATCH_DELAY_MS
from modelport.exporters.mar_handler import RESPONSE_TIMEOUT_S, update_config
from modelport.exporters.options import ExportOptions
from modelport.exporters.report import ExportReport, ReportRow
from modelport.manifest import read_manifest as read_model_manifest
from modelport.mar_archive import MANIFEST, MarArchive, read_manifest, read_mar

__all__ = ["StoreArchive", "import_store", "is_model_store", "read_properties", "serve_flags", "store_archives"]

_SUFFIXES = (".mar", ".tar.gz", ".tgz", ".model")
_SERVER_DEFAULTS = {  # TorchServe 0.12's defaults of config.properties's server-wide settings
    "inference_address": "http://127.0.0.1:8080",
    "grpc_inference_port": "7070",
    "max_request_size": "6553500",
    "max_response_size": "6553500",
}


@dataclass(frozen=True)
class StoreArchive:
    """One archive TorchServe would load from the store, with the settings it would serve it by."""

    path: Path
    archive: MarArchive
    model: str  # the name it serves it by (``load_models`` ``name=file``, else the archive's modelName)
    settings: dict[str, Any]  # the ``models`` entry of (model, version), or the archive's own model config


def is_model_store(path: Path) -> bool:
    """A folder that is not itself a (no-archive) model archive."""
    return path.is_dir() and not (path / MANIFEST).is_file()


def read_properties(path: Path) -> dict[str, str]:
    """A Java properties file as TorchServe reads ``config.properties`` (and writes its snapshots): ``key=value``,
    ``key: value`` or ``key value`` lines, ``#``/``!`` comments, a trailing backslash continuing the value on the next
    line, and the escapes (``\\:``, ``\\=``, ``\\n``, ``\\uXXXX``...) a snapshot's JSON values are written with."""
    try:
        lines = path.read_text(encoding="latin-1").splitlines()
    except OSError as exc:
        raise NotFoundError(f"--ts-config {path}: {exc.strerror or exc}") from None
    properties: dict[str, str] = {}
    pending = ""
    for raw in lines:
        line = pending + raw.lstrip() if pending else raw.lstrip()
        if not pending and (not line or line[0] in "#!"):
            continue
        if (len(line) - len(line.rstrip("\\"))) % 2 == 1:  # an odd number of backslashes: the value goes on
            pending = line[:-1]
            continue
        pending = ""
        key, value = _split(line)
        properties[_unescape(key)] = _unescape(value).rstrip()
    return properties


def _split(line: str) -> tuple[str, str]:
    """The key (up to the first unescaped ``=``, ``:`` or blank) and the value (after it and its blanks)."""
    i = 0
    while i < len(line) and line[i] not in "=: \t\f":
        i += 2 if line[i] == "\\" else 1
    key, rest = line[:i], line[i:].lstrip(" \t\f")
    if rest[:1] in ("=", ":"):
        rest = rest[1:].lstrip(" \t\f")
    return key, rest


def _unescape(text: str) -> str:
    out, i = [], 0
    while i < len(text):
        char = text[i]
        if char != "\\" or i + 1 == len(text):
            out.append(char)
            i += 1
            continue
        code = text[i + 1]
        if code == "u" and len(text) >= i + 6:
            out.append(chr(int(text[i + 2 : i + 6], 16)))
            i += 6
            continue
        out.append({"n": "\n", "t": "\t", "r": "\r", "f": "\f"}.get(code, code))
        i += 2
    return "".join(out)


def store_archives(store: Path, properties: dict[str, str]) -> list[StoreArchive]:
    """The archives TorchServe loads: a snapshot's (``model_snapshot``: every model version it held), else those
    ``load_models`` names (``all`` when it is unset), in TorchServe's loading order."""
    _check_store(store)
    if properties.get("model_snapshot", "").strip():
        return _snapshot_archives(store, properties["model_snapshot"])
    models = _models_json(properties.get("models", ""))
    chosen = properties.get("load_models", "all").strip() or "all"
    entries: list[tuple[str | None, Path]]
    if chosen.lower() == "all":
        entries = [(None, p) for p in sorted(store.iterdir(), key=lambda p: p.name) if _is_archive(p)]
    else:
        entries = [_entry(store, item.strip()) for item in chosen.split(",") if item.strip()]
    found = []
    for name, path in entries:
        archive = read_manifest(path)
        model = name or archive.name or path.name.split(".", 1)[0]
        found.append(StoreArchive(path, archive, model, models.get(model, {}).get(archive.version) or {}))
    if not found:
        raise SourceError(f"{store}: no TorchServe model archive to import (load_models={chosen})")
    return found


def _check_store(store: Path) -> None:
    if not store.exists():
        raise NotFoundError(f"{store}: no such model store (a folder of TorchServe archives)")
    if not is_model_store(store):
        raise InvalidArgumentError(f"{store} is one archive, not a model store: --ts-config takes the store's folder")


def _snapshot_archives(store: Path, text: str) -> list[StoreArchive]:
    """A snapshot's models (TorchServe's ``logs/config/*-snapshot.cfg``): each version's ``marName`` in the store,
    served by the snapshot's settings (its ``defaultVersion`` names the default version)."""
    try:
        models = json.loads(text)["models"]
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidArgumentError(f"config.properties: model_snapshot is not a TorchServe snapshot ({exc})") from None
    found = []
    for model, versions in _models_json(json.dumps(models)).items():
        for version, settings in versions.items():
            where = f"the snapshot's {model} {version} marName"
            path = _entry(store, str(settings.get("marName") or ""), where)[1]
            found.append(StoreArchive(path, read_manifest(path), model, {**settings, "snapshot": True}))
            if found[-1].archive.version != version:
                raise SourceError(
                    f"{path}: the snapshot's {model} {version} is an archive of version {found[-1].archive.version}"
                )
    if not found:
        raise SourceError("config.properties: the snapshot holds no model")
    return found


def import_store(
    store: Path, options: ExportOptions, properties: dict[str, str], batch_size: int | None = None
) -> list[ExportReport]:
    """Import every archive of the store ``properties`` loads (``import_mar`` each), then write each model's
    serving settings, versions and default version into its ``config.yaml``."""
    options.folder  # noqa: B018 (a store URL is refused before any import: the config.yaml files are written here)
    if options.version is not None:
        raise InvalidArgumentError("--version names one archive's version: a model store's archives number theirs")
    reports: list[ExportReport] = []
    versions: dict[str, list[tuple[int, StoreArchive]]] = {}
    for item in store_archives(store, properties):
        settings = _serving(item, properties)
        size = batch_size or _count(settings.get("batchSize"))
        try:
            report = import_mar(item.path, replace(options, name=item.model), handler_batch_size=size)
        except ModelportError as exc:  # the other archives are imported: one that fails is its own report's row
            report = ExportReport(item.model, str(item.path), "torch", str(options.repository))
            report.rows.append(ReportRow("archive", item.model, 0, "ERROR", message=f"{item.path.name}: {exc}"))
        reports.append(report)
        for row in report.rows:
            if row.published:  # (under its own name: --format with several formats names one model each)
                versions.setdefault(row.model, []).append((row.version, item))
    for model, served in versions.items():
        _write_model_config(options.folder / model, served, properties, batch_size)
    return reports


def serve_flags(properties: dict[str, str]) -> tuple[list[str], list[str]]:
    """The ``modelport serve`` flags for ``config.properties``'s server-wide settings (TorchServe's defaults for
    the ones it leaves out: 127.0.0.1:8080, gRPC 7070, 6553500 bytes a request and a response), and notes on the
    ones modelport answers differently (one HTTP port for TorchServe's inference and management APIs, one gRPC
    port)."""
    flags, notes = [], []
    properties = {**_SERVER_DEFAULTS, **properties}
    address = properties["inference_address"]
    host, _, port = address.rpartition("://")[2].rpartition(":")
    if host:
        flags += ["--host", host.strip("[]"), "--http-port", port.strip("/")]
    if properties.get("max_request_size", "").isdigit():
        flags += ["--max-body-bytes", properties["max_request_size"]]
    if properties.get("max_response_size", "").isdigit():
        flags += ["--max-response-bytes", properties["max_response_size"]]
    if properties.get("decode_input_request", "").strip().lower() == "false":
        flags.append("--no-decode-input-request")
    if properties.get("service_envelope"):
        flags += ["--service-envelope", properties["service_envelope"]]
    if properties.get("grpc_inference_port", "").isdigit():
        flags += ["--grpc-port", properties["grpc_inference_port"]]
    notes.append("TorchServe's management API answers on modelport's HTTP port, and its gRPC one on the gRPC port")
    if properties.get("enable_model_api", "").lower() == "true":
        flags.append("--model-control")
    else:
        notes.append(
            "TorchServe takes set-default and scale-workers without enable_model_api; modelport takes them with "
            "--model-control (which also lets register and unregister through)"
        )
    return flags, notes


def _serving(item: StoreArchive, properties: dict[str, str]) -> dict[str, Any]:
    """What TorchServe serves the archive by: its own model config if it has one (TorchServe's defaults for the
    rest), else its ``models`` entry with ``default_response_timeout``."""
    own = _archive_config(item.path)
    if item.settings.get("snapshot"):  # what the snapshot says wins (registration parameters, scaling included)
        return {
            "batchSize": 1,
            "maxBatchDelay": _BATCH_DELAY_MS,
            "responseTimeout": RESPONSE_TIMEOUT_S,
            **item.settings,
        }
    if own is not None:
        return {"batchSize": 1, "maxBatchDelay": _BATCH_DELAY_MS, "responseTimeout": RESPONSE_TIMEOUT_S, **own}
    timeout = properties.get("default_response_timeout", "")
    defaults = {"batchSize": 1, "maxBatchDelay": _BATCH_DELAY_MS}
    defaults["responseTimeout"] = int(timeout) if timeout.isdigit() else RESPONSE_TIMEOUT_S
    workers = properties.get("default_workers_per_model", "")
    if workers.isdigit():
        defaults["minWorkers"] = int(workers)
    return {**defaults, **item.settings}


def _write_model_config(
    model_dir: Path, served: list[tuple[int, StoreArchive]], properties: dict[str, str], batch_size: int | None
) -> None:
    """``config.yaml`` is per model: the default version's serving values (a batch delay: the first batching
    version's when the default does not batch), every version served, the default one (a snapshot's
    ``defaultVersion``, else the first loaded)."""
    chosen = [v for v, item in served if item.settings.get("snapshot") and item.settings.get("defaultVersion") is True]
    default = chosen[0] if chosen else served[0][0]
    settings = {v: _serving(item, properties) for v, item in served}
    sizes = {v: batch_size or _count(s.get("batchSize")) for v, s in settings.items()}
    values: dict[str, Any] = {"timeout_ms": 1000.0 * float(settings[default]["responseTimeout"])}
    if read_model_manifest(model_dir / str(default)).format != "handler":  # (a handler's is its manifest's)
        values["max_batch_size"] = sizes[default]  # TorchServe's batches of a built-in handler's model
    batching = [v for v in (default, *settings) if sizes[v] > 1]  # (a batch of one waits for no delay)
    values["max_queue_delay_ms"] = float(settings[(batching or [default])[0]]["maxBatchDelay"])
    most = settings[default].get("maxWorkers")
    if isinstance(most, int) and not isinstance(most, bool) and most >= 1:
        values["max_workers"] = most  # what TorchServe's describe shows (modelport does not scale by itself)
    workers = settings[default].get("minWorkers")
    if isinstance(workers, int) and workers > 1 and settings[default].get("sequenceBatching") is not True:
        values["instances"] = workers
    values |= {"version_policy": {"specific": sorted(settings)}, "default_version": default}
    update_config(model_dir, values)


def _count(value: object) -> int:
    """A batch size as TorchServe reads one: a positive integer, else 1."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 1


def _archive_config(path: Path) -> dict[str, Any] | None:
    """The archive's own model config (``--config-file``), or None when it has none."""
    _, files = read_mar(path)
    manifest = json.loads(files[MANIFEST]).get("model", {})
    name = manifest.get("configFile") if isinstance(manifest, dict) else None
    if not name or name not in files:
        return None
    try:
        config = yaml.safe_load(files[name]) or {}
    except yaml.YAMLError:
        return None
    return config if isinstance(config, dict) else None


def _models_json(text: str) -> dict[str, dict[str, dict[str, Any]]]:
    if not text.strip():
        return {}
    try:
        models = json.loads(text)
    except ValueError as exc:
        raise InvalidArgumentError(f"config.properties: models is not JSON ({exc})") from None
    if not isinstance(models, dict):
        raise InvalidArgumentError("config.properties: models must be a JSON object of model names")
    return {str(k): v for k, v in models.items() if isinstance(v, dict)}


def _entry(store: Path, item: str, where: str = "load_models") -> tuple[str | None, Path]:
    """A ``load_models`` entry: ``file`` or ``name=file``, a file of the store (URLs are not downloaded)."""
    name, _, file = item.rpartition("=")
    if "://" in file:
        raise InvalidArgumentError(f"{where} {item}: modelport does not download archives; copy it into {store}")
    if file.endswith(".war"):
        raise UnsupportedError(f"{where} {item}: a workflow archive (.war) is not imported; import its models' .mar")
    path = store / file
    if not path.exists():
        raise NotFoundError(f"{where} {item}: {path} is not in the model store")
    return name or None, path


def _is_archive(path: Path) -> bool:
    if path.is_dir():
        return (path / MANIFEST).is_file()
    return path.name.endswith(_SUFFIXES)
