"""One served model version: loading it (runtimes, golden check) in one go, request validation, its batcher."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
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
from modelport.manifest import ModelManifest, OutputParity, TensorSpec, read_manifest
from modelport.parity import verify_golden
from modelport.processing import ProcessingContext, Processors, build_processors
from modelport.processing.fitting import probe
from modelport.processing.labels import Labels, find_labels
from modelport.runtimes import Runtime, RuntimeOptions, open_runtime
from modelport.runtimes.base import Arrays, runtime_health
from modelport.samples import SAMPLES_FILE, check_samples, payload_batch
from modelport.serving.batching import Batcher, BatchPolicy, BatchStats, inline_threshold_s
from modelport.serving.settings import ModelConfig, ServerSettings
from modelport.serving.types import ModelMetadata, VersionState
from modelport.tensors import DataType, dtype_of_array, format_range, lookup_dtype, shape_matches, value_outside

__all__ = [
    "Execution",
    "LoadedVersion",
    "RequestLimits",
    "ServedVersion",
    "VersionState",
    "load_version",
    "make_batcher",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RequestLimits:
    """What one request to a version may take: its timeout, and whether NaN/Inf float inputs are refused."""

    timeout_s: float
    finite_only: bool = False


@dataclass(frozen=True)
class Execution:
    """How a READY version runs requests: its open runtime instances, the providers in use, batching, limits.

    ``processors``: the version's pre/postprocessing (config.yaml's ``processors:``), built at load;
    ``labels``: each output's class names (its labels file, if any), for Triton's classification extension.
    """

    runtimes: tuple[Runtime, ...]
    providers: tuple[str, ...]
    policy: BatchPolicy
    limits: RequestLimits
    processors: Processors | None = None
    labels: dict[str, Labels] = field(default_factory=dict)
    max_workers: int = 0  # TorchServe's maxWorkers (config.yaml), shown by its describe API


@dataclass(frozen=True)
class LoadedVersion:
    """What loading one version left: READY with its ``execution``, or FAILED with a ``reason``.

    ``manifest`` is kept for a version whose runtimes then failed (its metadata still says what it is);
    ``retry`` marks a failure caused by something unavailable, which the next repository sync retries.
    """

    name: str
    version: int
    directory: Path
    fingerprint: str
    manifest: ModelManifest | None = None
    execution: Execution | None = None
    reason: str = ""
    retry: bool = False
    load_seconds: float = 0.0


class ServedVersion:
    """A loaded version in service: what loading produced (immutable), its batcher, and its state.

    Built once, on the event loop, from a :class:`LoadedVersion`; only ``state`` and ``reason`` change
    afterwards (a version being unloaded). Only READY versions take requests.
    """

    def __init__(self, loaded: LoadedVersion, observe: Callable[[BatchStats], None] | None = None) -> None:
        self.loaded = loaded
        self.batcher = make_batcher(loaded.execution, observe) if loaded.execution is not None else None
        self.state = VersionState.READY if loaded.execution is not None else VersionState.FAILED
        self.reason = loaded.reason
        self.started = datetime.now(UTC)  # TorchServe's describe shows it as its workers' startTime
        # what validate reads for every request, looked up once
        inputs = loaded.manifest.inputs if loaded.manifest is not None else ()
        self._specs = {spec.name: spec for spec in inputs}
        self._np_dtypes = {spec.name: lookup_dtype(spec.dtype).np_dtype() for spec in inputs}
        self.output_names = [spec.name for spec in loaded.manifest.outputs] if loaded.manifest is not None else []
        finite_only = loaded.execution is not None and loaded.execution.limits.finite_only
        self._value_checks = finite_only or any(spec.value_range is not None for spec in inputs)
        # its metadata as the inference adapters read it on every request (DataPlane.serving_metadata), made once
        self.serving_metadata: ModelMetadata | None = None

    @property
    def name(self) -> str:
        return self.loaded.name

    @property
    def version(self) -> int:
        return self.loaded.version

    @property
    def directory(self) -> Path:
        return self.loaded.directory

    @property
    def manifest(self) -> ModelManifest | None:
        return self.loaded.manifest

    @property
    def execution(self) -> Execution | None:
        return self.loaded.execution

    def require_ready(self) -> ModelManifest:
        """The manifest of a version that takes requests now; NotReady or Unavailable otherwise."""
        execution, manifest = self.loaded.execution, self.loaded.manifest
        if self.state is not VersionState.READY or execution is None or manifest is None or self.batcher is None:
            hint = f"; GET /v2/models/{self.name}/versions/{self.version}/ready says why" if self.reason else ""
            raise ModelNotReadyError(f"model {self.name!r} version {self.version} is {self.state.value.lower()}{hint}")
        healthy, reason = runtime_health(execution.runtimes[0])
        if not healthy:
            raise UnavailableError(f"model {self.name!r} version {self.version}: {reason}", retry_after=2.0)
        return manifest

    def readiness(self) -> tuple[bool, str]:
        """Whether this version takes requests now, and why not."""
        if self.state is not VersionState.READY or self.loaded.execution is None:
            return False, self.reason
        return runtime_health(self.loaded.execution.runtimes[0])

    def validate(self, inputs: Arrays) -> ModelManifest:
        """Check a request against the manifest before it may join a batch; the manifest of the ready version."""
        manifest = self.require_ready()
        expected = self._specs
        if inputs.keys() != expected.keys():
            missing = [n for n in expected if n not in inputs]
            extra = [n for n in inputs if n not in expected]
            raise InvalidArgumentError(
                f"model {self.name!r} takes inputs {list(expected)}; missing {missing}, unexpected {extra}"
            )
        batch_sizes: list[int] = []
        for name, value in inputs.items():
            spec = expected[name]
            if value.dtype != self._np_dtypes[name] or self._value_checks:  # the common case needs no lookup
                got = dtype_of_array(value)
                if got.name != spec.dtype:
                    want = lookup_dtype(spec.dtype).v2
                    raise SpecError(f"input {name!r}: datatype {got.v2} does not match the model's {want}")
            if not shape_matches(spec.shape, value.shape):
                if not (manifest.max_batch_size and spec.shape == (-1,) and value.shape[1:] == (1,)):
                    raise SpecError(f"input {name!r}: shape {list(value.shape)} does not match {list(spec.shape)}")
                # one value per row: Triton's configuration says dims [1] with reshape [], and its clients send [N, 1]
                value = inputs[name] = value.reshape(-1)
            if self._value_checks:
                self._check_values(spec, got, value)
            if manifest.max_batch_size and value.ndim:
                batch_sizes.append(value.shape[0])
        if batch_sizes:
            _check_batch(batch_sizes, manifest.max_batch_size)
        return manifest

    def _check_values(self, spec: TensorSpec, dtype: DataType, value: np.ndarray[Any, Any]) -> None:
        """NaN/Inf when the config forbids them, and integers outside the manifest's range.

        An integer range is a domain (token ids, class indices: out of it, a model fails or reads the
        wrong row); a float range only shapes the golden inputs, so float values are not refused."""
        finite_only = self.loaded.execution is not None and self.loaded.execution.limits.finite_only
        if finite_only and dtype.is_float and not np.isfinite(value).all():
            raise SpecError(f"input {spec.name!r}: NaN or Inf values; the model accepts only finite numbers")
        if spec.value_range is None or not dtype.is_integer:
            return
        outside = value_outside(value, *spec.value_range)
        if outside is not None:
            index, found = outside
            allowed = format_range(*spec.value_range, integer=dtype.is_integer)
            where = f"input {spec.name!r}: value {found} at index {list(index)}"
            raise SpecError(f"{where} is outside the model's value range ({allowed})")


def _check_batch(batch_sizes: list[int], max_batch_size: int) -> None:
    """The inputs' batch sizes agree, are not empty and do not exceed the model's largest."""
    size = batch_sizes[0]
    if len(batch_sizes) > 1 and any(other != size for other in batch_sizes):
        raise SpecError(f"inputs disagree on the batch size: {sorted(set(batch_sizes))}")
    if size > max_batch_size:
        raise SpecError(f"batch size {size} exceeds the model's max_batch_size {max_batch_size}")
    if size < 1:
        raise SpecError("the batch is empty")


def load_version(
    name: str, number: int, directory: Path, stamp: str, settings: ServerSettings, config: ModelConfig
) -> LoadedVersion:
    """Blocking: read the manifest, open the runtimes and run the golden check. Never raises: a version
    that cannot load comes back FAILED with its reason (a corrupt artifact must not take the server down)."""
    started = time.perf_counter()
    manifest: ModelManifest | None = None
    execution: Execution | None = None
    reason, retry = "", False
    try:
        read = read_manifest(directory)
        _check_inside(directory, read)
        manifest = read
        execution = _open(name, directory, manifest, settings, config)
    except ModelportError as exc:
        reason, retry = exc.message, isinstance(exc, UnavailableError)
    except Exception as exc:
        reason = f"cannot load: {summarize(exc)}"
    if execution is None:
        log.error("model %s version %s is not ready: %s", name, number, reason)
    seconds = time.perf_counter() - started
    return LoadedVersion(name, number, directory, stamp, manifest, execution, reason, retry, seconds)


def _open(
    name: str, directory: Path, manifest: ModelManifest, settings: ServerSettings, config: ModelConfig
) -> Execution:
    """The version's runtime instances, golden-checked; the opened ones are unloaded again if that fails."""
    options = RuntimeOptions(
        device=config.device or settings.device,
        intra_op_threads=config.intra_op_threads if config.intra_op_threads is not None else settings.intra_op_threads,
        providers=settings.providers,
        remote=config.remote.target(name) if config.remote else None,
        onnx_arena=config.onnx_arena or settings.onnx_arena,
        worker_process=config.workers is not None,
        timeout_s=_timeout_s(settings, config),
        max_response_bytes=settings.max_response_bytes,
        envelope=settings.service_envelope,
        decode_input=settings.decode_input_request,
    )
    if config.workers is not None and manifest.format != "handler":
        raise InvalidArgumentError(
            f"workers: runs TorchServe handlers in processes; a {manifest.format} model has none"
        )
    context = ProcessingContext(directory, manifest)
    spec = config.processors
    processors = build_processors(spec, context) if spec is not None and (spec.pre or spec.post) else None
    if spec is not None:
        probe(spec, manifest, directory, processors)  # processors that make what the model cannot take: not ready
    runtimes: list[Runtime] = []
    try:
        for _ in range(config.workers or config.instances or settings.instances):
            runtimes.append(open_runtime(directory, manifest, options, config.runtime))
        if settings.golden_check and manifest.parity is not None:  # handler archives have no reference
            _check_golden(runtimes[0], directory, manifest)
        if settings.golden_check:
            _check_samples(runtimes[0], directory, manifest)
    except BaseException:
        for runtime in runtimes:
            runtime.unload()
        raise
    return Execution(
        runtimes=tuple(runtimes),
        providers=tuple(getattr(runtimes[0], "providers", ())),
        policy=_policy(manifest, settings, config),
        limits=RequestLimits(
            timeout_s=options.timeout_s,
            finite_only=config.finite_inputs,
        ),
        processors=processors,
        labels={spec.name: _labels(context, spec.name) for spec in manifest.outputs},
        max_workers=config.max_workers or 0,
    )


def _timeout_s(settings: ServerSettings, config: ModelConfig) -> float:
    return (config.timeout_ms / 1000) if config.timeout_ms else settings.request_timeout_s


def _labels(context: ProcessingContext, output: str) -> Labels:
    """An output's labels file (the manifest's, else index_to_name.json or labels.txt); none if unreadable."""
    try:
        return find_labels(None, context, output)
    except ModelportError as exc:
        log.warning("model %s: no class labels for output %r: %s", context.directory, output, exc.message)
        return Labels()


def _check_inside(directory: Path, manifest: ModelManifest) -> None:
    """Every file the manifest names lies inside the version directory (symlinks resolved)."""
    root = directory.resolve()
    for name in (manifest.artifact, "golden.npz", *manifest.files):
        if not (directory / name).resolve().is_relative_to(root):
            raise ModelNotReadyError(f"{name!r} lies outside the version directory {directory}: refused")


# How much worse than at export an artifact published with --allow-mismatch may agree with its source at load
# (another thread count, another CPU): top-1 agreement by this share of the golden rows.
_AGREEMENT_SLACK = 0.02


def _check_golden(runtime: Runtime, directory: Path, manifest: ModelManifest) -> None:
    """The version's golden vectors through ``runtime``, judged by the export's gate; a version published with
    ``--allow-mismatch`` that failed its gate must instead do no worse than the export recorded (each output's
    error within the recorded one plus the gate's atol): it still proves the artifact is the one exported."""
    record = verify_golden(runtime.predict, directory, manifest)
    exported = manifest.parity
    if record.passed:
        return
    if exported is not None and exported.allow_mismatch and not exported.passed:
        then = {o.name: o for o in exported.outputs}
        worse = [o for o in record.outputs if o.name not in then or not _as_exported(o, then[o.name], record.atol)]
        if not worse:
            log.info("%s: golden check as at export (published with --allow-mismatch)", directory)
            return
        details = ", ".join(
            _parity_text(o) + (f" (at export: {_parity_text(then[o.name])})" if o.name in then else "") for o in worse
        )
        raise ModelNotReadyError(f"golden check failed: worse than at export (--allow-mismatch): {details}")
    details = ", ".join(_parity_text(o) for o in record.outputs if not o.passed)
    raise ModelNotReadyError(f"golden check failed ({record.gate} gate atol={record.atol:g}): {details}")


def _as_exported(now: OutputParity, then: OutputParity, atol: float) -> bool:
    if not now.max_abs_error <= then.max_abs_error + atol:  # NaN is worse
        return False
    if now.top1_agreement is None or then.top1_agreement is None:
        return True
    return now.top1_agreement >= then.top1_agreement - _AGREEMENT_SLACK


def _parity_text(output: OutputParity) -> str:
    agreement = output.top1_agreement
    return f"{output.name} max abs error {output.max_abs_error:.3g}" + (
        f" top-1 agreement {100 * agreement:.1f}%" if agreement is not None else ""
    )


def _check_samples(runtime: Runtime, directory: Path, manifest: ModelManifest) -> None:
    """The golden raw samples (``samples.json``, see modelport.samples), if any, through the runtime again."""
    if not (directory / SAMPLES_FILE).is_file():
        return
    if len(manifest.inputs) != 1 or manifest.inputs[0].dtype != "string":
        raise ModelNotReadyError("golden samples are raw payloads: the model must take one BYTES input")
    name = manifest.inputs[0].name
    problem = check_samples(directory, lambda data: runtime.predict(payload_batch(name, data)))
    if problem:
        raise ModelNotReadyError(f"golden sample check failed: {problem}")


def _policy(manifest: ModelManifest, settings: ServerSettings, config: ModelConfig) -> BatchPolicy:
    """The version's batching: the manifest's max batch size capped by config.yaml, else the server defaults."""
    limit = (
        manifest.max_batch_size
        if config.max_batch_size is None
        else min(config.max_batch_size, manifest.max_batch_size)
    )
    delay_ms = config.max_queue_delay_ms if config.max_queue_delay_ms is not None else settings.max_queue_delay_ms
    return BatchPolicy(
        max_batch_size=limit,
        max_queue_delay_s=delay_ms / 1000,
        max_queue_size=config.max_queue_size or settings.max_queue_size,
        preferred_batch_sizes=config.preferred_batch_sizes,
        inline_below_s=_inline_below_s(settings, config),
    )


def _inline_below_s(settings: ServerSettings, config: ModelConfig) -> float:
    if config.workers:  # a worker process is waited on from a thread, never from the event loop
        return 0.0
    return inline_threshold_s(
        config.inline_below_ms if config.inline_below_ms is not None else settings.inline_below_ms
    )


def make_batcher(execution: Execution, observe: Callable[[BatchStats], None] | None = None) -> Batcher:
    """The batcher over a READY version's runtime instances; call it from the event loop."""
    return Batcher([r.predict for r in execution.runtimes], execution.policy, observe)
