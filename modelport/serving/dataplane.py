"""The one data plane: every transport calls these methods; they know nothing of HTTP or gRPC."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from typing import Any

from modelport._version import __version__
from modelport.errors import (
    ClientClosedError,
    InvalidArgumentError,
    MethodNotAllowedError,
    ModelNotReadyError,
    ModelportError,
    NotFoundError,
    PermissionDeniedError,
    UnavailableError,
    UnimplementedError,
    VersionLabelError,
)
from modelport.manifest import ModelManifest, TensorSpec
from modelport.runtimes.base import Arrays
from modelport.serving import logsettings, tracing
from modelport.serving.application import Applications, classify, external_tensors
from modelport.serving.batching import Batcher
from modelport.serving.config_override import read_override
from modelport.serving.manager import ModelManager, unknown_model
from modelport.serving.metrics import Metrics, VersionGauges
from modelport.serving.model import ServedVersion
from modelport.serving.modelconfig import ModelConfiguration, model_configuration
from modelport.serving.pipeline import VERSION, Pipeline, Pipelines
from modelport.serving.registry import Registry
from modelport.serving.settings import ServerSettings
from modelport.serving.shm import SharedMemory
from modelport.serving.statistics import VersionStatistics
from modelport.serving.types import (
    ArchiveRegistration,
    InferRequest,
    InferResponse,
    ModelDetails,
    ModelMetadata,
    Registered,
    RepositoryRow,
    ServerMetadata,
    Signature,
    TensorMetadata,
    VersionState,
    VersionStatus,
)

__all__ = ["EXTENSIONS", "DataPlane"]

# Triton's names for the protocol extensions this server implements (GET /v2, gRPC ServerMetadata)
EXTENSIONS = (
    "binary_tensor_data",
    "classification",
    "model_repository",
    "model_repository(unload_dependents)",  # pipelines that use the model go with it
    "model_configuration",
    "statistics",
    "parameters",
    "logging",
)
SYSTEM_SHARED_MEMORY = "system_shared_memory"
# one worker of --workers N: a registration would reach the worker that answers it, not the others
_WORKER_REFUSAL = (
    "system shared memory is not available with --workers N: a registration would reach only the worker that "
    "answers it (the kernel spreads connections across the workers) and requests answered by the others would not "
    "find the region; serve with --workers 1 to use shared memory"
)
_OFF = "system shared memory is off on this server (--no-shared-memory)"


class DataPlane:
    """Health, metadata, inference and repository control, transport-agnostic.

    The one door to the served models: adapters call these methods and get the values of
    ``serving/types.py`` back; only the plane talks to its :class:`ModelManager` (``manager``).
    Lifecycle: :meth:`start` loads the repository, :meth:`drain` stops taking requests and waits
    for the ones in flight, :meth:`close` unloads everything.
    """

    def __init__(self, settings: ServerSettings, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics if metrics is not None else Metrics()
        self.manager = ModelManager(settings, self.metrics.observe_batch)
        self.registry = Registry(settings, self.manager)  # TorchServe's register/scale/unregister
        self.applications = Applications(settings.processing_threads, self.metrics)  # models with processors
        self.pipelines = Pipelines(
            self.applications, settings.golden_check
        )  # models whose config.yaml declares pipeline:
        self.metrics.watch(self._gauges)
        # Triton's system shared memory regions; the adapters read and write tensors through it
        refusal = _WORKER_REFUSAL if settings.reuse_port else "" if settings.shared_memory else _OFF
        self.shared_memory = SharedMemory(refusal)
        self.in_flight = 0
        self._started = False
        self._draining = False
        self._idle = asyncio.Event()  # set when the last request in flight finishes while draining
        # serving_metadata's, per loaded version (an unloaded one's goes with it)

    async def start(self) -> None:
        """Load every model of the repository (one that fails is recorded, not fatal), then become ready."""
        await self.manager.load_all()
        await self._verify_pipelines()
        self._started = True

    async def watch_repository(self) -> None:
        """Hot reload: sync with the repository every ``poll_interval_s`` until cancelled."""
        await self.manager.poll_forever(lambda result: self.metrics.repository_polls.labels(result).inc())

    async def drain(self) -> int:
        """Stop being ready and refuse new requests (503), then wait up to ``drain_timeout_s`` for the
        requests in flight; returns how many are still running."""
        self._draining = True
        if self.in_flight:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), self.settings.drain_timeout_s)
        return self.in_flight

    async def close(self) -> None:
        """Unload every model (each batcher finishes its queued requests first), unmap shared memory regions."""
        await self.manager.close()
        self.applications.close()
        self.shared_memory.close()

    @property
    def draining(self) -> bool:
        """Whether :meth:`drain` has begun."""
        return self._draining

    def live(self) -> bool:
        """The process answers (liveness never depends on the models)."""
        return True

    def ready(self) -> bool:
        """Ready once the repository is loaded (a store that could not be listed at start: once a poll did)
        and until draining starts."""
        return self._started and self.manager.listed and not self._draining

    def server_metadata(self) -> ServerMetadata:
        """The server's name (Triton's unless ``--server-name`` says otherwise), version and protocol extensions
        (shared memory: where registrations are taken)."""
        shared = () if self.shared_memory.refusal else (SYSTEM_SHARED_MEMORY,)
        return ServerMetadata(self.settings.server_name, __version__, (*EXTENSIONS, *shared))

    def model_ready(self, name: str, version: str | None = None) -> tuple[bool, str]:
        """Whether a model version (default: the model's default version) takes requests now, and why not."""
        pipeline = self._pipeline(name, version)
        if pipeline is not None:
            status = pipeline.status(self)
            return status.state is VersionState.READY, status.reason
        return self.manager.get(name, version).readiness()

    def models_ready(self) -> dict[str, bool]:
        """Each loaded model's readiness (its default version's), for health services."""
        ready = {}
        for name in self.model_names():
            try:
                ready[name] = self.model_ready(name)[0]
            except ModelportError:
                ready[name] = False
        return ready

    def model_names(self) -> list[str]:
        """The names of the models the server holds (loaded or failed), sorted."""
        return sorted(self.manager.models)

    def resolve_version(self, name: str, version: str | None = None, label: str | None = None) -> str | None:
        """The version a request names: ``version`` as given, else the one ``label`` stands for (config.yaml's
        ``version_labels``, TF Serving's labels), else None (the default version)."""
        if version is not None or label is None:
            return version
        entry = self.manager.models.get(name)
        labels = entry.config.version_labels if entry is not None else {}
        if label not in labels:
            raise VersionLabelError(f"Unrecognized servable version label: {label}")
        return str(labels[label])

    def model_metadata(self, name: str, version: str | None = None, ready_only: bool = False) -> ModelMetadata:
        """What a model version is and how it is served; ``ready_only``: only a version that takes requests now."""
        pipeline = self._pipeline(name, version)
        if pipeline is not None:
            meta = pipeline.metadata(self)
            if ready_only and meta.status.state is not VersionState.READY:
                raise ModelNotReadyError(f"pipeline {name!r} is not ready: {meta.status.reason}")
            return meta
        served = self.manager.get(name, version)
        if ready_only:
            served.require_ready()
        return _metadata(served, tuple(sorted(self.manager.models[name].versions)))

    def serving_metadata(self, name: str, version: str | None = None) -> ModelMetadata:
        """:meth:`model_metadata` of a version that takes requests now (``ready_only``), for the inference
        adapters that read its tensors, format and processors on every request: made once per loaded version
        (those never change while it is loaded; ``versions`` is the model's list when it was first asked)."""
        if self._pipeline(name, version) is not None:
            return self.model_metadata(name, version, ready_only=True)
        served = self.manager.get(name, version)
        served.require_ready()
        meta = served.serving_metadata
        if meta is None:
            meta = served.serving_metadata = _metadata(served, tuple(sorted(self.manager.models[name].versions)))
        return meta

    async def infer(self, name: str, version: str | None, request: InferRequest, protocol: str) -> InferResponse:
        """Validate against the manifest, batch, run, and keep the requested outputs (a pipeline: run its steps).
        Counted, timed and traced the same way for models and pipelines. The transports cancel the call when
        the client goes away (a closed connection, a cancelled gRPC call): it is counted as ``client_closed``
        and its queued request leaves its batch."""
        started = time.perf_counter()
        label = (name, version or "default", protocol)
        number: int | None = None  # the version served, once known
        pipeline: Pipeline | None = None
        succeeded = False
        self.in_flight += 1
        self.metrics.request_started()
        try:
            if self._draining:
                raise UnavailableError("the server is shutting down", retry_after=5.0)
            pipeline = self._pipeline(name, version)
            served = self.manager.get(name, version) if pipeline is None else None
            number = served.version if served is not None else VERSION
            label = (name, str(number), protocol)
            if request.parameters:
                _refuse_sequence(name, request.parameters)
            if tracing.ENABLED:
                tracing.annotate(name, label[1], protocol)  # (not *label: a star call is a generic call)
            if served is None:
                assert pipeline is not None
                response = await pipeline.infer(self, request)
            elif request.signature:
                response = await _run_signature(served, request)
            elif served.execution is not None and served.execution.processors is not None:
                response = await self.applications.infer(served, request)
            else:  # the usual request: awaited here, not through _run (one coroutine level less per request)
                batcher, timeout, wanted = self._admit(served, request)
                response = _tensors_response(served, request, wanted, await batcher.submit(request.inputs, timeout))
            self.metrics.outcome(label, "success").inc()
            succeeded = True
            return response
        except ModelportError as exc:
            self.metrics.outcome(label, exc.code).inc()
            if tracing.ENABLED:
                tracing.outcome(exc.code)
            raise
        except asyncio.CancelledError:  # the transports cancel a request whose client went away
            self.metrics.outcome(label, ClientClosedError.code).inc()
            if tracing.ENABLED:
                tracing.outcome(ClientClosedError.code)
            raise
        finally:
            if tracing.ENABLED and succeeded:
                tracing.outcome("success")
            self.in_flight -= 1
            if self._draining and not self.in_flight:
                self._idle.set()
            elapsed = time.perf_counter() - started
            self.metrics.request_finished(label, elapsed)
            if number is not None:
                self.metrics.statistics.request(name, number, elapsed, succeeded)
            if pipeline is not None and succeeded:
                self.metrics.statistics.ensemble(name, VERSION, elapsed)

    def signatures(self, name: str, version: str | None = None) -> tuple[Signature, ...]:
        """Every signature of a ready SavedModel version, by name (none for other formats and pipelines)."""
        if self._pipeline(name, version) is not None:
            return ()
        served = self.manager.get(name, version)
        served.require_ready()
        execution = served.execution
        read = getattr(execution.runtimes[0], "signatures", None) if execution is not None else None
        return tuple(_signature(found) for found in read()) if read is not None else ()

    async def _run(self, served: ServedVersion, request: InferRequest) -> InferResponse:
        """One model version's request: through its processors when it has them, else tensors in and out."""
        if served.execution is not None and served.execution.processors is not None:
            return await self.applications.infer(served, request)
        batcher, timeout, wanted = self._admit(served, request)
        return _tensors_response(served, request, wanted, await batcher.submit(request.inputs, timeout))

    def _admit(self, served: ServedVersion, request: InferRequest) -> tuple[Batcher, float, list[str]]:
        """A model without processors: its request validated, with its batcher, timeout and the outputs wanted."""
        validating = tracing.validation() if tracing.ENABLED else None  # (None: not sampled)
        if validating is None:
            served.validate(request.inputs)
        else:
            with validating:
                served.validate(request.inputs)
        wanted = _requested_names(served, request)
        batcher, execution = served.batcher, served.execution
        if batcher is None or execution is None:
            raise ModelNotReadyError(f"model {served.name!r} version {served.version} is not ready")
        return batcher, execution.limits.timeout_s, wanted

    def step_manifest(self, name: str, version: str | None = None) -> ModelManifest | None:
        """The manifest whose inputs a pipeline step's model takes (None: it takes payloads, or has none)."""
        served = self.manager.get(name, version)
        execution = served.execution
        if execution is not None and execution.processors is not None and execution.processors.pre:
            return None
        return served.manifest

    async def infer_step(self, name: str, version: str | None, request: InferRequest) -> InferResponse:
        """A pipeline step's request to one of its models: that model's own path (validation, its batcher),
        counted in the model's statistics as Triton counts an ensemble's composing models."""
        served = self.manager.get(name, version)
        started, succeeded = time.perf_counter(), False
        try:
            response = await self._run(served, request)
            succeeded = True
            return response
        finally:
            self.metrics.statistics.request(served.name, served.version, time.perf_counter() - started, succeeded)

    async def _verify_pipelines(self) -> None:
        """Run the golden samples of every pipeline whose steps are ready (the models' ran as they loaded)."""
        for name in list(self.manager.models):
            pipeline = self._pipeline(name, None)
            if pipeline is not None:
                await pipeline.verify(self)

    def _pipeline(self, name: str, version: str | None) -> Pipeline | None:
        """The pipeline ``name`` (its one version, 1), or None when ``name`` is not a pipeline."""
        entry = self.manager.models.get(name)
        if entry is None or entry.config.pipeline is None:
            return None
        if version not in (None, "", str(VERSION)):
            raise NotFoundError(f"pipeline {name!r} has no version {version!r} (has: [{VERSION}])")
        return self.pipelines.get(name, entry.config.pipeline, entry.directory)

    def model_versions(self, name: str) -> list[VersionStatus]:
        """The state of every served version of a model, ascending."""
        pipeline = self._pipeline(name, None)
        if pipeline is not None:
            return [pipeline.status(self)]
        return [_status(v) for v in self._versions(name)]

    def model_details(self, name: str) -> list[ModelDetails]:
        """How every served version of a model runs, ascending."""
        pipeline = self._pipeline(name, None)
        if pipeline is not None:
            return [pipeline.details(self)]
        gpu = self.settings.device.startswith("cuda")
        return [_details(v, gpu) for v in self._versions(name)]

    def _versions(self, name: str) -> list[ServedVersion]:
        entry = self.manager.models.get(name)
        if entry is None:
            raise NotFoundError(unknown_model(name))
        return sorted(entry.versions.values(), key=lambda v: v.version)

    def model_config(self, name: str, version: str | None = None) -> ModelConfiguration:
        """How a loaded model version is served: tensors, batching, instances, version policy (a pipeline:
        its tensors and steps)."""
        pipeline = self._pipeline(name, version)
        if pipeline is not None:
            return pipeline.configuration()
        served = self.manager.get(name, version)
        return model_configuration(served, self.manager.models[name].config, self.settings)

    def model_statistics(self, name: str = "", version: str = "") -> list[VersionStatistics]:
        """Statistics of the ready versions of every model (``name`` empty), of one model, or of one version.

        Every model's include the ready pipelines', as Triton's include its ensembles' (perf_analyzer reads an
        ensemble's and its composing models' from them)."""
        if version and not name:
            raise InvalidArgumentError("statistics of a version need the model's name")
        pipeline = self._pipeline(name, version or None) if name else None
        if pipeline is not None:  # its requests; its steps count in their models' statistics
            return [self.metrics.statistics.snapshot(name, VERSION)]
        if name:
            served = self.manager.get(name, version or None)  # unknown: NotFound; still loading: Unavailable
            targets = [served] if version else list(self.manager.models[name].versions.values())
        else:
            targets = [v for entry in self.manager.models.values() for v in entry.versions.values()]
        ready = sorted((v for v in targets if v.state is VersionState.READY), key=lambda v: (v.name, v.version))
        if name and not ready:
            raise ModelNotReadyError(
                f"model {name!r} " + (f"version {version} is not ready" if version else "has no ready version")
            )
        found = [(v.name, v.version) for v in ready] + ([] if name else self._ready_pipelines())
        return [self.metrics.statistics.snapshot(n, number) for n, number in sorted(found)]

    def _ready_pipelines(self) -> list[tuple[str, int]]:
        """The (name, version) of every pipeline that serves now."""
        found = []
        for name in list(self.manager.models):
            pipeline = self._pipeline(name, None)
            if pipeline is not None and pipeline.status(self).state is VersionState.READY:
                found.append((name, VERSION))
        return found

    def repository_index(self, ready_only: bool = False) -> list[RepositoryRow]:
        """Every model of the repository with each of its versions (``ready_only``: the READY versions)."""
        rows = self.manager.index()
        for name, entry in self.manager.models.items():
            if entry.config.pipeline is not None:
                status = self.model_versions(name)[0]
                rows.append(RepositoryRow(name, status.state.value, status.reason, status.version))
        rows.sort(key=lambda row: row.name)  # stable: each model's versions stay in order
        return [r for r in rows if r.state == VersionState.READY.value] if ready_only else rows

    def require_control(self) -> None:
        """Model control (load/unload) is off unless the server was started with it."""
        if not self.settings.model_control:
            raise PermissionDeniedError("model control is disabled; start the server with --model-control")

    async def load(self, name: str, parameters: Mapping[str, object] | None = None) -> None:
        """Load (or reload) one model of the repository (model control). ``parameters``: the request's; Triton's
        ``config`` override changes what config.yaml says of batching and instances until the next load (see
        ``serving/config_override.py``); its ``file:`` overrides are refused, not ignored."""
        parameters = parameters or {}
        files = sorted(p for p in parameters if p.startswith("file:"))
        if files:
            raise UnimplementedError(
                f"failed to load {name!r}: loading with {', '.join(files)[:200]} (Triton's override of the model's "
                f"files) is not supported: modelport loads {name!r} from the repository"
            )
        override: dict[str, object] = {}
        if "config" in parameters:
            text = parameters["config"]
            if not isinstance(text, str | bytes):
                raise InvalidArgumentError(f"failed to load {name!r}: the config override must be a JSON string")
            text = text.decode() if isinstance(text, bytes) else text
            override = read_override(name, text, self._configuration(name))
        await self.manager.load(name, override)
        await self._verify_pipelines()
        wanted, served = override.get("max_batch_size"), self._configuration(name)
        if served is not None and wanted is not None and served.max_batch_size != wanted:
            raise InvalidArgumentError(
                f"failed to load {name!r} with max_batch_size {wanted}: the model was exported for batches of at most "
                f"{served.max_batch_size} (its manifest's max_batch_size), and it is loaded with that"
            )

    def _configuration(self, name: str) -> ModelConfiguration | None:
        """The configuration of a model's default version, None when it has none loaded."""
        try:
            return self.model_config(name)
        except ModelportError:
            return None

    async def unload(self, name: str, dependents: bool = False) -> None:
        """Unload every version of one model, letting its requests in flight finish (model control); with
        ``dependents`` (Triton's ``unload_dependents``), also the pipelines that have it as a step, as Triton
        unloads the ensembles that use a model."""
        await self.manager.unload(name)
        if dependents:
            for pipeline in self._dependents(name):
                await self.manager.unload(pipeline)

    def _dependents(self, name: str) -> list[str]:
        """The loaded pipelines with a step that runs model ``name``."""
        return [
            model
            for model, entry in sorted(self.manager.models.items())
            if entry.config.pipeline is not None and any(step.model == name for step in entry.config.pipeline.steps)
        ]

    def log_settings(self, settings: Mapping[str, object] | None = None) -> dict[str, Any]:
        """Triton's log settings (logging extension); ``settings`` to change (model control) are applied first."""
        if settings:
            self.require_control()
            return logsettings.update(settings)
        return logsettings.current()

    def require_model_api(self) -> None:
        """TorchServe's model API (register, scale, set-default, unregister) is off unless model control is on,
        refused as TorchServe 0.12 refuses it without ``enable_model_api``."""
        if not self.settings.model_control:
            raise MethodNotAllowedError(
                "Requested method is not allowed, please refer to API document. "
                "(modelport: start the server with --model-control)"
            )

    async def register_archive(self, request: ArchiveRegistration) -> Registered:
        """Import a model archive as the model's next version and serve it (model control)."""
        return await self.registry.register(request)

    async def scale_model(self, name: str, version: str | None, workers: tuple[int, int], synchronous: bool) -> None:
        """Run ``workers[0]`` instances of the model, ``workers[1]`` its TorchServe ``maxWorkers`` (model control)."""
        await self.registry.scale(name, version, workers, synchronous)

    async def set_default_version(self, name: str, version: str) -> None:
        """Serve ``version`` when a request names none (model control)."""
        await self.registry.set_default(name, version)

    async def unregister_model(self, name: str, version: str | None) -> None:
        """Stop serving a version of the model, by default its default version (model control)."""
        await self.registry.unregister(name, version)

    def _gauges(self) -> list[VersionGauges]:
        """What /metrics reports of each served version at scrape time."""
        return [
            VersionGauges(
                name,
                v.version,
                v.batcher.depth if v.batcher else 0,
                v.batcher.policy.max_queue_size if v.batcher else 0,
                v.state is VersionState.READY,
                v.loaded.load_seconds,
                sum(getattr(r, "restarts", 0) for r in v.execution.runtimes) if v.execution else 0,
            )
            for name, entry in self.manager.models.items()
            for v in entry.versions.values()
        ]


async def _run_signature(served: ServedVersion, request: InferRequest) -> InferResponse:
    """A request to one of a SavedModel's other signatures (``request.signature``), keyed by its keys: not batched
    (the signature is not the manifest's), run on a worker thread by the first instance."""
    execution = served.execution
    run = getattr(execution.runtimes[0], "run_signature", None) if execution is not None else None
    if run is None:
        raise InvalidArgumentError(f'Serving signature name: "{request.signature}" not found in signature def')
    outputs = await asyncio.to_thread(run, request.signature, request.inputs)
    return InferResponse(served.name, str(served.version), outputs, request.id)


def _signature(found: Any) -> Signature:
    """A runtime's SignatureDef (``runtimes/savedmodel.py``) as the data plane's :class:`Signature`."""

    def tensors(entries: Any) -> tuple[TensorMetadata, ...]:
        return tuple(TensorMetadata(key, dtype, shape or (), name, key) for key, dtype, shape, name in entries)

    unranked = frozenset(key for key, _, shape, _ in (*found.inputs, *found.outputs) if shape is None)
    return Signature(found.name, found.method_name, tensors(found.inputs), tensors(found.outputs), unranked)


def _status(served: ServedVersion) -> VersionStatus:
    return VersionStatus(served.version, served.state, served.reason)


def _tensors(manifest: ModelManifest, specs: tuple[TensorSpec, ...]) -> tuple[TensorMetadata, ...]:
    return tuple(
        TensorMetadata(s.name, s.dtype, tuple(s.shape), manifest.native(s.name), manifest.signature_key(s.name))
        for s in specs
    )


def _metadata(served: ServedVersion, versions: tuple[int, ...]) -> ModelMetadata:
    manifest, execution = served.manifest, served.execution
    providers = execution.providers if execution is not None else ()
    if manifest is None:
        return ModelMetadata(served.name, versions, _status(served), providers)
    inputs, outputs = _tensors(manifest, manifest.inputs), _tensors(manifest, manifest.outputs)
    processors = execution.processors if execution is not None else None
    if processors is not None:
        inputs, outputs = external_tensors(processors, manifest)
    return ModelMetadata(
        served.name,
        versions,
        _status(served),
        providers,
        format=manifest.format,
        variant=manifest.variant,
        max_batch_size=manifest.max_batch_size,
        parity_passed=manifest.parity.passed if manifest.parity is not None else None,
        inputs=inputs,
        outputs=outputs,
        processed=processors is not None,
    )


def _details(served: ServedVersion, gpu: bool) -> ModelDetails:
    execution, manifest = served.execution, served.manifest
    return ModelDetails(
        name=served.name,
        status=_status(served),
        directory=served.directory,
        format=manifest.format if manifest is not None else None,
        instances=len(execution.runtimes) if execution is not None else 0,
        max_batch_size=execution.policy.max_batch_size if execution is not None else 0,
        max_queue_delay_s=execution.policy.max_queue_delay_s if execution is not None else 0.0,
        gpu=gpu,
        started=served.started,
        pending=served.batcher.depth if served.batcher is not None else 0,
        queue_capacity=served.batcher.policy.max_queue_size if served.batcher is not None else 0,
        timeout_s=execution.limits.timeout_s if execution is not None else 0.0,
        platform=dict(manifest.platform) if manifest is not None else {},
        max_workers=execution.max_workers if execution is not None else 0,
    )


def _tensors_response(
    served: ServedVersion, request: InferRequest, wanted: list[str], outputs: Arrays
) -> InferResponse:
    """The batch's outputs for one request: the ones it asked for, classified where asked."""
    execution = served.execution
    assert execution is not None
    batched = served.manifest is not None and served.manifest.max_batch_size > 0
    selected = classify({k: outputs[k] for k in wanted}, request.outputs, execution.labels, batched)
    return InferResponse(served.name, str(served.version), selected, id=request.id)


def _requested_names(served: ServedVersion, request: InferRequest) -> list[str]:
    names = served.output_names
    if not request.outputs:
        return names
    unknown = [o.name for o in request.outputs if o.name not in names]
    if unknown:
        raise InvalidArgumentError(f"model {served.name!r} has no outputs {unknown}; it has {names}")
    return [o.name for o in request.outputs]


# Triton's sequence batcher's request parameters (a correlation id of 0 or "" means "no sequence")
_SEQUENCE_FLAGS = ("sequence_start", "sequence_end")


def _refuse_sequence(name: str, parameters: dict[str, object]) -> None:
    """Refuse a request that belongs to a Triton sequence: modelport serves no stateful v2 model (no sequence
    batcher keeps a sequence's state or routes it to one instance), and running it as a stateless request would
    answer it without its sequence's state, a silently wrong result."""
    named = [key for key in _SEQUENCE_FLAGS if parameters.get(key)]
    if parameters.get("sequence_id") not in (None, 0, ""):
        named.insert(0, "sequence_id")
    if named:
        raise InvalidArgumentError(
            f"model {name!r} has no sequence batching: modelport serves no stateful KServe v2 models, so a request "
            f"that is part of a sequence ({', '.join(named)}) is refused rather than run without its sequence's state"
        )
