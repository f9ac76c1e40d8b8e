"""One served model version: its runtimes, golden check at load, request validation, batcher."""

from __future__ import annotations

import enum
import hashlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from modelport.errors import (
    InvalidArgumentError,
    ModelNotReadyError,
    ModelportError,
    SpecError,
    UnavailableError,
    summarize,
)
from modelport.manifest import MANIFEST_FILE, ModelManifest, TensorSpec, read_manifest
from modelport.parity import verify_golden
from modelport.runtimes import Runtime, RuntimeOptions, open_runtime
from modelport.runtimes.base import Arrays, runtime_health
from modelport.serving.batching import Batcher, BatchPolicy, BatchStats
from modelport.serving.settings import ModelConfig, ServerSettings
from modelport.tensors import DataType, dtype_of_array, format_range, lookup_dtype, shape_matches, value_outside

__all__ = ["ServedVersion", "VersionState", "fingerprint", "load_version", "make_batcher"]

log = logging.getLogger(__name__)


class VersionState(enum.Enum):
    LOADING = "LOADING"
    READY = "READY"
    FAILED = "FAILED"
    UNLOADING = "UNLOADING"


def fingerprint(directory: Path) -> str:
    """Changes when the version's manifest (which lists every file's sha256) changes."""
    path = directory / MANIFEST_FILE
    stat = path.stat()
    return hashlib.sha256(path.read_bytes() + str(stat.st_mtime_ns).encode()).hexdigest()


@dataclass
class ServedVersion:
    """A model version as the server holds it; only READY versions take requests."""

    name: str
    version: int
    directory: Path
    manifest: ModelManifest | None
    fingerprint: str
    state: VersionState = VersionState.LOADING
    reason: str = ""
    runtimes: list[Runtime] = field(default_factory=list)
    providers: list[str] = field(default_factory=list)
    load_seconds: float = 0.0
    batcher: Batcher | None = None
    policy: BatchPolicy | None = None
    timeout_s: float = 30.0
    finite_only: bool = False  # config.yaml finite_inputs: NaN/Inf in a float input is a 400
    retry: bool = False  # failed because something it needs was unavailable: the next sync tries again

    def require_ready(self) -> ModelManifest:
        if self.state is not VersionState.READY or self.manifest is None or self.batcher is None:
            hint = f"; GET /v2/models/{self.name}/versions/{self.version}/ready says why" if self.reason else ""
            raise ModelNotReadyError(f"model {self.name!r} version {self.version} is {self.state.value.lower()}{hint}")
        healthy, reason = runtime_health(self.runtimes[0])
        if not healthy:
            raise UnavailableError(f"model {self.name!r} version {self.version}: {reason}", retry_after=2.0)
        return self.manifest

    def readiness(self) -> tuple[bool, str]:
        """Whether this version takes requests now, and why not."""
        if self.state is not VersionState.READY or not self.runtimes:
            return False, self.reason
        return runtime_health(self.runtimes[0])

    def validate(self, inputs: Arrays) -> None:
        """Check a request against the manifest before it may join a batch."""
        manifest = self.require_ready()
        expected = {s.name: s for s in manifest.inputs}
        missing = [n for n in expected if n not in inputs]
        extra = [n for n in inputs if n not in expected]
        if missing or extra:
            raise InvalidArgumentError(
                f"model {self.name!r} takes inputs {list(expected)}; missing {missing}, unexpected {extra}"
            )
        batch_sizes = set()
        for name, value in inputs.items():
            spec = expected[name]
            got = dtype_of_array(value)
            if got.name != spec.dtype:
                want = lookup_dtype(spec.dtype).v2
                raise SpecError(f"input {name!r}: datatype {got.v2} does not match the model's {want}")
            if not shape_matches(spec.shape, value.shape):
                raise SpecError(f"input {name!r}: shape {list(value.shape)} does not match {list(spec.shape)}")
            self._check_values(spec, got, value)
            if manifest.max_batch_size and value.ndim:
                batch_sizes.add(value.shape[0])
        if len(batch_sizes) > 1:
            raise SpecError(f"inputs disagree on the batch size: {sorted(batch_sizes)}")
        if batch_sizes and max(batch_sizes) > manifest.max_batch_size:
            raise SpecError(
                f"batch size {max(batch_sizes)} exceeds the model's max_batch_size {manifest.max_batch_size}"
            )
        if batch_sizes and min(batch_sizes) < 1:
            raise SpecError("the batch is empty")

    def _check_values(self, spec: TensorSpec, dtype: DataType, value: np.ndarray[Any, Any]) -> None:
        """NaN/Inf when the config forbids them, and values outside the manifest's range."""
        if self.finite_only and dtype.is_float and not np.isfinite(value).all():
            raise SpecError(f"input {spec.name!r}: NaN or Inf values; the model accepts only finite numbers")
        if spec.value_range is None or not (dtype.is_integer or dtype.is_float):
            return
        outside = value_outside(value, *spec.value_range)
        if outside is not None:
            index, found = outside
            allowed = format_range(*spec.value_range, integer=dtype.is_integer)
            where = f"input {spec.name!r}: value {found} at index {list(index)}"
            raise SpecError(f"{where} is outside the model's value range ({allowed})")


def load_version(version: ServedVersion, settings: ServerSettings, config: ModelConfig) -> None:
    """Blocking: read the manifest, open the runtimes and run the golden check; sets the state."""
    started = time.perf_counter()
    try:
        manifest = version.manifest or read_manifest(version.directory)
        _check_inside(version.directory, manifest)
        version.manifest = manifest
        options = RuntimeOptions(
            device=config.device or settings.device,
            intra_op_threads=config.intra_op_threads
            if config.intra_op_threads is not None
            else settings.intra_op_threads,
            providers=settings.providers,
            remote=config.remote.target(version.name) if config.remote else None,
            onnx_arena=config.onnx_arena or settings.onnx_arena,
        )
        count = config.instances or settings.instances
        version.runtimes = [open_runtime(version.directory, manifest, options, config.runtime) for _ in range(count)]
        version.providers = list(getattr(version.runtimes[0], "providers", []))
        if settings.golden_check:
            _check_golden(version, manifest)
        version.state, version.reason = VersionState.READY, ""
    except ModelportError as exc:
        _fail(version, exc.message)
        version.retry = isinstance(exc, UnavailableError)
    except Exception as exc:  # a corrupt artifact must not take the server down
        _fail(version, f"cannot load: {summarize(exc)}")
    version.load_seconds = time.perf_counter() - started


def _check_inside(directory: Path, manifest: ModelManifest) -> None:
    """Every file the manifest names lies inside the version directory (symlinks resolved)."""
    root = directory.resolve()
    for name in (manifest.artifact, "golden.npz", *manifest.files):
        if not (directory / name).resolve().is_relative_to(root):
            raise ModelNotReadyError(f"{name!r} lies outside the version directory {directory}: refused")


def _check_golden(version: ServedVersion, manifest: ModelManifest) -> None:
    record = verify_golden(version.runtimes[0].predict, version.directory, manifest)
    if not record.passed:
        failing = [o for o in record.outputs if not o.passed]
        details = ", ".join(
            f"{o.name} max abs error {o.max_abs_error:.3g}"
            + (f" top-1 agreement {100 * o.top1_agreement:.1f}%" if o.top1_agreement is not None else "")
            for o in failing
        )
        raise ModelNotReadyError(f"golden check failed ({record.gate} gate atol={record.atol:g}): {details}")


def _fail(version: ServedVersion, reason: str) -> None:
    version.state, version.reason = VersionState.FAILED, reason
    for runtime in version.runtimes:
        runtime.unload()
    version.runtimes = []
    log.error("model %s version %s is not ready: %s", version.name, version.version, reason)


def make_batcher(version: ServedVersion, settings: ServerSettings, config: ModelConfig, observe: Any) -> Batcher:
    """The version's batcher; call from the event loop once the version is READY."""
    manifest = version.manifest
    if manifest is None:
        raise ModelNotReadyError(f"model {version.name!r} version {version.version} has no manifest")
    limit = (
        manifest.max_batch_size
        if config.max_batch_size is None
        else min(config.max_batch_size, manifest.max_batch_size)
    )
    policy = BatchPolicy(
        max_batch_size=limit,
        max_queue_delay_s=(
            config.max_queue_delay_ms if config.max_queue_delay_ms is not None else settings.max_queue_delay_ms
        )
        / 1000,
        max_queue_size=config.max_queue_size or settings.max_queue_size,
        preferred_batch_sizes=config.preferred_batch_sizes,
        inline_below_s=(config.inline_below_ms if config.inline_below_ms is not None else settings.inline_below_ms)
        / 1000,
    )
    version.policy = policy
    version.timeout_s = (config.timeout_ms / 1000) if config.timeout_ms else settings.request_timeout_s
    version.finite_only = config.finite_inputs

    def observer(stats: BatchStats) -> None:
        observe(version, stats)

    return Batcher([r.predict for r in version.runtimes], policy, observer)
