"""Staging, publishing and rejecting artifacts in the model repository.

A variant is assembled in ``REPO/.staging/<model>/<version>/`` and, once its gate
is decided, renamed atomically into ``REPO/<model>/<version>/`` (servable) or
``REPO/.rejected/<model>/<version>/`` (kept for inspection, never served).
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from modelport.errors import InvalidArgumentError
from modelport.exporters.artifact import ARTIFACT_FILES, Artifact, ConvertContext
from modelport.exporters.options import ExportOptions, Variant
from modelport.exporters.rejection import REJECTED_DIR
from modelport.golden import GOLDEN_FILE, GoldenCase, save_golden
from modelport.manifest import (
    MANIFEST_FILE,
    ModelManifest,
    ParityRecord,
    Quantization,
    SourceInfo,
    TensorSpec,
    file_sha256,
    write_manifest,
)
from modelport.sizes import artifact_bytes

__all__ = ["Staged", "check_free", "check_repository", "discard", "model_name", "next_version", "publish", "stage"]


@dataclass(frozen=True)
class Staged:
    """A variant assembled in the staging area, not yet servable."""

    directory: Path
    manifest: ModelManifest
    repository: Path
    size_bytes: int


def model_name(options: ExportOptions, variant: Variant) -> str:
    """The repository name of one variant (``--name-template``, default ``{name}-{variant}``)."""
    return options.name_template.format(name=options.name, variant=variant.name)


def next_version(options: ExportOptions, variants: list[Variant]) -> int:
    """One more than the highest version any of this export's models has (1 for new models)."""
    highest = 0
    for variant in variants:
        folder = options.folder / model_name(options, variant)
        if folder.is_dir():
            highest = max([highest, *(int(p.name) for p in folder.iterdir() if p.name.isdigit())])
    return highest + 1


def check_repository(folder: Path) -> None:
    """Refuse, before the source is loaded, a repository that cannot be created or written."""
    existing = next((p for p in (folder, *folder.parents) if p.exists()), Path("."))
    if not existing.is_dir():
        inside = "" if existing == folder else f" (it would be inside {existing}, a file)"
        raise InvalidArgumentError(f"--repository {folder} is not a folder{inside}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InvalidArgumentError(f"--repository {folder}: {existing} is not writable")


def check_free(options: ExportOptions, variants: list[Variant], version: int) -> None:
    """Refuse, before any conversion, to overwrite a version that is already published."""
    for variant in variants:
        final = options.folder / model_name(options, variant) / str(version)
        if final.exists():
            raise InvalidArgumentError(f"{final} already exists; pass another --version or omit it for the next one")


def stage(
    ctx: ConvertContext,
    variant: Variant,
    artifact: Artifact,
    model: str,
    version: int,
    outputs: tuple[TensorSpec, ...],
    cases: list[GoldenCase],
) -> Staged:
    """Copy the artifact, golden vectors and a manifest into the staging directory."""
    repository = ctx.options.folder
    final = repository / model / str(version)
    if final.exists():
        raise InvalidArgumentError(f"{final} already exists; pass another --version or omit it for the next one")
    directory = repository / ".staging" / model / str(version)
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    if artifact.path.is_dir():
        shutil.copytree(artifact.path, directory, dirs_exist_ok=True)
    else:
        shutil.copyfile(artifact.path, directory / ARTIFACT_FILES[variant.format])
    save_golden(directory / GOLDEN_FILE, cases)
    fixed = {s.shape[0] for s in artifact.inputs if s.shape and s.shape[0] != -1}
    varying = ctx.data_dependent
    if len(fixed) == 1 and _batchable(ctx.source.inputs):  # a static-batch artifact returns that batch
        batch = fixed.pop()
        outputs = tuple(
            o.model_copy(update={"shape": (batch, *o.shape[1:])}) if _batched(o, varying) else o for o in outputs
        )
    if artifact.inputs and all(-1 not in s.shape for s in artifact.inputs):
        outputs = tuple(_observed_shape(o, cases, varying) for o in outputs)
    manifest = _manifest(ctx, variant, artifact, model, version, outputs)
    rows = _rows_follow_batch(cases) and ctx.rows_independent and all(dim for _, dim in varying)
    if manifest.max_batch_size and not rows:
        manifest = manifest.model_copy(update={"max_batch_size": 0})
    write_manifest(manifest, directory)
    return Staged(directory, manifest, repository, artifact_bytes(directory))


def _observed_shape(spec: TensorSpec, cases: list[GoldenCase], varying: frozenset[tuple[str, int]]) -> TensorSpec:
    """An artifact of static input shapes (litert-torch's) answers static outputs: the shape its golden cases
    show, not the source's dynamic dims (a 1x8 token input answers 1x8x40 logits, not 1x-1x40), but for the dims
    whose size the input's values choose (``varying``)."""
    shapes = {c.outputs[spec.name].shape for c in cases if spec.name in c.outputs}
    if len(shapes) != 1:
        return spec
    (shape,) = shapes
    if len(shape) != len(spec.shape):
        return spec
    dims = tuple(-1 if (spec.name, i) in varying else d for i, d in enumerate(shape))
    return spec.model_copy(update={"shape": dims})


def publish(staged: Staged, parity: ParityRecord, options: ExportOptions) -> Path:
    """Record parity and checksums, then move the version to the repository or aside."""
    files = {
        str(p.relative_to(staged.directory)): file_sha256(p)
        for p in sorted(staged.directory.rglob("*"))
        if p.is_file() and p.name != MANIFEST_FILE
    }
    manifest = staged.manifest.model_copy(update={"parity": parity, "files": files})
    write_manifest(manifest, staged.directory)
    servable = parity.passed or options.allow_mismatch
    root = staged.repository if servable else staged.repository / REJECTED_DIR
    target = root / manifest.name / str(manifest.version)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        shutil.rmtree(target)
    os.replace(staged.directory, target)
    _remove_empty(staged.directory.parent, staged.repository)
    return target


def _manifest(
    ctx: ConvertContext, variant: Variant, artifact: Artifact, model: str, version: int, outputs: tuple[TensorSpec, ...]
) -> ModelManifest:
    from modelport._version import __version__

    source = ctx.source
    batchable = _batchable(artifact.inputs)
    quantization = None
    if variant.quantization:
        calibrated = variant.quantization in ("full-int8", "static-int8")
        quantization = Quantization(
            method=variant.quantization,
            calibration=(str(ctx.options.calibration_data or "eval/golden inputs") if calibrated else None),
            calibration_samples=sum(len(next(iter(b.values()))) for b in ctx.calibration) if calibrated else None,
        )
    return ModelManifest(
        name=model,
        version=version,
        family=ctx.options.name,
        variant=variant.name,
        format=variant.format,
        artifact=ARTIFACT_FILES[variant.format],
        platform=artifact.platform,
        inputs=artifact.inputs,
        outputs=outputs,
        native_names=artifact.native_names,
        max_batch_size=ctx.options.max_batch_size if batchable else 0,
        source=SourceInfo(framework=source.framework, kind=source.kind, location=source.location, sha256=source.sha256),
        quantization=quantization,
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        modelport_version=__version__,
    )


def _batchable(inputs: tuple[TensorSpec, ...]) -> bool:
    """Every input has a dynamic first dim, the batch (a model without one keeps its outputs' first dims)."""
    return all(s.shape and s.shape[0] == -1 for s in inputs)


def _batched(spec: TensorSpec, varying: frozenset[tuple[str, int]]) -> bool:
    return bool(spec.shape) and spec.shape[0] == -1 and (spec.name, 0) not in varying


def _rows_follow_batch(cases: list[GoldenCase]) -> bool:
    """Every output has the batch as its first dimension. The server splits a batch's outputs by rows, so a
    model with an output that does not (a flattened or data-dependent length) is served one request a call."""
    return all(v.ndim > 0 and v.shape[0] == case.batch_size for case in cases for v in case.outputs.values())


def discard(staged: Staged | None) -> None:
    """Remove a staged version whose validation failed (an error, not a gate: nothing to keep aside)."""
    if staged is None or not staged.directory.exists():
        return
    shutil.rmtree(staged.directory, ignore_errors=True)
    _remove_empty(staged.directory.parent, staged.repository)


def _remove_empty(folder: Path, stop: Path) -> None:
    while folder != stop and folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
        folder = folder.parent
