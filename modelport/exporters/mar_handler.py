"""What ``import-mar`` keeps of an archive's handler.

- A built-in handler (``image_classifier``, ``image_segmenter``, ``object_detector``, ``text_classifier``):
  the serialized model is exported as usual, and the model's ``config.yaml`` gets
  ``processors: {handler: NAME}`` (the equivalent processors, ``modelport.processing.torchserve``), with
  the archive's extra files (``index_to_name.json``...) copied into the version directory. The handler
  fixes what the model sees, so ``--input`` may be left out where the handler fixes the shape:
  ``image_classifier`` and ``image_segmenter`` -> ``input:float32:-1x3x224x224`` (Resize 256, CenterCrop
  224). ``object_detector`` (images of any size) and ``text_classifier`` (token ids of any length) still
  need ``--input``.
- A custom handler file in the archive (a ``BaseHandler`` subclass or a module-level ``handle``): the
  archive is unpacked as the version directory and served by ``modelport.runtimes.handler`` (format
  ``handler``): one BYTES input ``data``, one BYTES output ``output``. Eager-mode archives (model file +
  state dict) work this way, the handler building the model. No golden vectors are recorded (there is no
  reference to compare against); ``--sample FILE`` (repeatable) records golden raw samples instead: each
  file's bytes with the handler's responses (``samples.json``, ``modelport.samples``), re-checked at load.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from modelport.errors import ConflictError, InvalidArgumentError
from modelport.exporters.options import ExportOptions
from modelport.exporters.report import ExportReport, ReportRow
from modelport.manifest import ModelManifest, SourceInfo, TensorSpec, file_sha256, write_manifest
from modelport.processing.torchserve import TORCHSERVE_HANDLERS
from modelport.samples import payload_batch, record_samples
from modelport.sizes import artifact_bytes

__all__ = [
    "BATCH_DELAY_MS",
    "BUILTIN_INPUTS",
    "RESPONSE_TIMEOUT_S",
    "archive_batch_size",
    "builtin_handler",
    "custom_handler_file",
    "default_inputs",
    "import_handler_archive",
    "keep_builtin_handler",
    "label_archive_version",
]

INPUT = "data"  # modelport.runtimes.handler.INPUT
RESPONSE_TIMEOUT_S = 120  # TorchServe's default responseTimeout (its default_response_timeout)
BATCH_DELAY_MS = 100  # TorchServe's default maxBatchDelay
_IMAGE_224 = (TensorSpec(name="input", dtype="float32", shape=(-1, 3, 224, 224)),)
BUILTIN_INPUTS: dict[str, tuple[TensorSpec, ...]] = {"image_classifier": _IMAGE_224, "image_segmenter": _IMAGE_224}


def builtin_handler(handler: str) -> str | None:
    """The built-in handler an archive names (``image_classifier`` or ``ts.torch_handler.image_classifier``)."""
    name = handler.removeprefix("ts.torch_handler.")
    return name if name in TORCHSERVE_HANDLERS else None


def custom_handler_file(handler: str, files: dict[str, bytes]) -> str | None:
    """The archive's handler file (``handler.py`` of ``handler.py:function``), if the archive holds one."""
    module = handler.split(":", 1)[0].removesuffix(".py").split("/")[-1]
    name = f"{module}.py"
    return name if module and name in files else None


def default_inputs(options: ExportOptions, handler: str) -> ExportOptions:
    """``options`` with the input the built-in ``handler`` feeds its model, unless ``--input`` gave one."""
    from dataclasses import replace

    if options.inputs or handler not in BUILTIN_INPUTS:
        return options
    return replace(options, inputs=BUILTIN_INPUTS[handler])


def keep_builtin_handler(
    model_dir: Path, version_dir: Path, handler: str, files: dict[str, bytes], serialized: str
) -> None:
    """``processors: {handler: NAME}`` in ``config.yaml``; the archive's other files under ``archive/``."""
    for name, data in files.items():
        if name == serialized:
            continue
        target = version_dir / "archive" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    if "index_to_name.json" in files:
        (version_dir / "index_to_name.json").write_bytes(files["index_to_name.json"])
    update_config(model_dir, {"processors": {"handler": handler}})


def update_config(model_dir: Path, values: dict[str, Any]) -> None:
    """Merge ``values`` into the model's ``config.yaml``."""
    path = model_dir / "config.yaml"
    config: dict[str, Any] = (yaml.safe_load(path.read_text()) if path.exists() else {}) or {}
    config.update(values)
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def import_handler_archive(
    mar: Path, handler: str, files: dict[str, bytes], options: ExportOptions, batch_size: int | None = None
) -> ExportReport:
    """Unpack the archive as a new version served by its custom handler (format ``handler``). Its batches
    hold up to ``batch_size`` requests (``--max-batch-size``), else the ``batchSize`` of the archive's
    ``--config-file``, else TorchServe's default 1: handlers written for TorchServe often handle only
    ``data[0]``, and TorchServe batches only when the model is registered with a batch size. The config's
    ``maxBatchDelay`` becomes ``max_queue_delay_ms`` in the model's ``config.yaml`` when batches hold more than one."""
    options = replace(options, max_batch_size=batch_size or archive_batch_size(files) or 1)
    version = options.version or _next_version(options.folder / options.name)
    final = options.folder / options.name / str(version)
    if final.exists():
        raise InvalidArgumentError(f"{final} already exists; pass another --version or omit it for the next one")
    staging = options.folder / ".staging" / options.name / str(version)
    if staging.exists():
        shutil.rmtree(staging)
    for name, data in files.items():
        target = staging / PurePosixPath(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    manifest = _manifest(mar, staging, version, options)
    if options.samples:
        _record_samples(staging, manifest, options.samples)
        manifest = _manifest(mar, staging, version, options)  # the samples' files too
    write_manifest(manifest, staging)
    final.parent.mkdir(parents=True, exist_ok=True)
    size = artifact_bytes(staging)
    os.replace(staging, final)
    label_archive_version(options.folder / options.name, version, files)
    serving = archive_serving_config(files, options.max_batch_size)
    if serving:
        update_config(options.folder / options.name, serving)
    report = ExportReport(options.name, str(mar), "torch", str(options.repository))
    note = f"custom handler {handler}: served by modelport.runtimes.handler, " + (
        f"{len(options.samples)} golden raw samples" if options.samples else "no golden vectors (--sample FILE)"
    )
    notes = (note, *_requirements_note(files, final))
    report.rows.append(ReportRow("handler", options.name, version, "pass", size, path=str(final), notes=notes))
    report.write(options.folder / ".reports" / f"{options.name}.json")
    return report


def label_archive_version(model_dir: Path, version: int, files: dict[str, bytes]) -> None:
    """The archive's ``modelVersion`` (``1.0``) as a version label of ``version`` in ``config.yaml``, so that
    TorchServe's ``/predictions/{m}/1.0`` keeps naming this archive (an integer names modelport's version). An
    archive of a model that already has archive versions joins them, as TorchServe serves every version it
    registered: ``version_policy`` lists them all, and the first stays the default version."""
    label = str(_archive_model(files).get("modelVersion") or "")
    if not label or label.isdigit():
        return
    path = model_dir / "config.yaml"
    config: dict[str, Any] = (yaml.safe_load(path.read_text()) if path.exists() else {}) or {}
    labels = {**(config.get("version_labels") or {}), label: version}
    values: dict[str, Any] = {"version_labels": labels}
    earlier = sorted({v for v in labels.values() if isinstance(v, int) and v != version})
    policy = config.get("version_policy")
    if earlier and (policy is None or (isinstance(policy, dict) and "specific" in policy)):
        listed = (policy or {}).get("specific") or earlier
        values["version_policy"] = {"specific": sorted({*listed, version})}
        values["default_version"] = config.get("default_version") or earlier[0]
    update_config(model_dir, values)


def refuse_registered(model_dir: Path, files: dict[str, bytes]) -> None:
    """An archive whose version (``1.0``) is already a version of the model is refused, as TorchServe answers a
    second registration of it (409 ``Model version 1.0 is already registered for model m``): importing it again
    would add a version and move the label to it."""
    label = str(_archive_model(files).get("modelVersion") or "")
    path = model_dir / "config.yaml"
    if not label or label.isdigit() or not path.is_file():
        return
    config = yaml.safe_load(path.read_text()) or {}
    number = (config.get("version_labels") or {}).get(label) if isinstance(config, dict) else None
    if isinstance(number, int) and (model_dir / str(number)).is_dir():
        raise ConflictError(
            f"Model version {label} is already registered for model {model_dir.name} (as version {number}; "
            f"remove {model_dir / str(number)} to import it again)"
        )


def _archive_model(files: dict[str, bytes]) -> dict[str, Any]:
    try:
        model = json.loads(files.get("MAR-INF/MANIFEST.json", b"{}")).get("model", {})
    except (ValueError, AttributeError):
        return {}
    return model if isinstance(model, dict) else {}


def _archive_config(files: dict[str, bytes]) -> dict[str, Any]:
    """The archive's model config file (``torch-model-archiver --config-file``), or {}."""
    try:
        config = yaml.safe_load(files.get(str(_archive_model(files).get("configFile") or ""), b"")) or {}
    except (ValueError, AttributeError, yaml.YAMLError):
        return {}
    return config if isinstance(config, dict) else {}


def archive_batch_size(files: dict[str, bytes]) -> int | None:
    """``batchSize`` in the archive's model config file, if any."""
    size = _archive_config(files).get("batchSize")
    return size if isinstance(size, int) and not isinstance(size, bool) and size >= 1 else None


def archive_batch_delay_ms(files: dict[str, bytes]) -> float | None:
    """``maxBatchDelay`` (ms) in the archive's model config file, if any: how long TorchServe waits to fill a batch."""
    delay = _archive_config(files).get("maxBatchDelay")
    return float(delay) if isinstance(delay, int | float) and not isinstance(delay, bool) and delay >= 0 else None


def archive_serving_config(files: dict[str, bytes], batch_size: int) -> dict[str, Any]:
    """What the archive's model config file says about serving, as ``config.yaml`` keys: ``maxBatchDelay`` (ms;
    with batches of one TorchServe's default 100 without one, which TorchServe's describe shows and nothing waits
    for) -> ``max_queue_delay_ms``, ``responseTimeout`` (s) -> ``timeout_ms`` (else TorchServe's 120 s, not the
    server's shorter default: a handler TorchServe waited 2 minutes for is not cut short), ``maxWorkers`` ->
    ``max_workers`` (shown by describe: modelport does not scale up by itself), ``minWorkers`` above 1 ->
    ``instances``, except for a
    stateful model (``sequenceBatching: true``): TorchServe keeps each sequence on one worker, modelport's batches go
    to any instance, so one instance holds every sequence's state."""
    config, values = _archive_config(files), {}
    delay_ms = archive_batch_delay_ms(files)
    if delay_ms is not None or batch_size == 1:  # TorchServe waits this long to fill a batch
        values["max_queue_delay_ms"] = delay_ms if delay_ms is not None else float(BATCH_DELAY_MS)
    most = _positive(config.get("maxWorkers"))
    if most is not None and most.is_integer():
        values["max_workers"] = int(most)
    timeout = _positive(config.get("responseTimeout"))  # else TorchServe's default (default_response_timeout)
    values["timeout_ms"] = 1000.0 * (timeout if timeout is not None else RESPONSE_TIMEOUT_S)
    workers = _positive(config.get("minWorkers"))
    stateful = config.get("sequenceBatching") is True
    if workers is not None and workers > 1 and float(workers).is_integer() and not stateful:
        values["instances"] = int(workers)
    return values


def _positive(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) and value > 0 else None


def _requirements_note(files: dict[str, bytes], version_dir: Path) -> tuple[str, ...]:
    """A warning when the archive has a ``--requirements-file``: modelport does not pip install it."""
    name = str(_archive_model(files).get("requirementsFile") or "")
    if not name:
        return ()
    return (
        f"the archive's requirements file {name} is not installed (modelport does not pip install a handler's "
        f"dependencies, as TorchServe's install_py_dep_per_model does): pip install -r {version_dir / name}",
    )


def _record_samples(staging: Path, manifest: ModelManifest, files: tuple[Path, ...]) -> None:
    """Run the handler once on each ``--sample`` file and record its responses (modelport.samples)."""
    from modelport.runtimes import open_runtime

    runtime = open_runtime(staging, manifest)
    try:
        record_samples(staging, files, lambda data: runtime.predict(payload_batch(INPUT, data)))
    finally:
        runtime.unload()


def _manifest(mar: Path, staging: Path, version: int, options: ExportOptions) -> ModelManifest:
    from modelport._version import __version__

    files = {p.relative_to(staging).as_posix(): file_sha256(p) for p in sorted(staging.rglob("*")) if p.is_file()}
    return ModelManifest(
        name=options.name,
        version=version,
        family=options.name,
        variant="handler",
        format="handler",
        artifact="MAR-INF/MANIFEST.json",
        platform=_archive_platform(mar, staging),
        inputs=(TensorSpec(name=INPUT, dtype="string", shape=(-1,)),),
        outputs=(TensorSpec(name="output", dtype="string", shape=(-1,)),),
        max_batch_size=options.max_batch_size,
        source=SourceInfo(
            framework="torch", kind="mar", location=str(mar), sha256=file_sha256(mar) if mar.is_file() else None
        ),
        files=files,
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        modelport_version=__version__,
    )


def _archive_platform(mar: Path, staging: Path) -> dict[str, str]:
    """The archive's file name and runtime (``python``, ``python3``), as TorchServe's describe API shows them."""
    try:
        runtime = json.loads((staging / "MAR-INF" / "MANIFEST.json").read_text()).get("runtime")
    except (OSError, ValueError, AttributeError):
        runtime = None
    return {"mar": mar.name, "mar_runtime": runtime if isinstance(runtime, str) and runtime else "python"}


def _next_version(folder: Path) -> int:
    if not folder.is_dir():
        return 1
    return max([0, *(int(p.name) for p in folder.iterdir() if p.name.isdigit())]) + 1
