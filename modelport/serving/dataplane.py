"""The one data plane: every transport calls these methods; they know nothing of HTTP or gRPC."""

from __future__ import annotations

import time
from typing import Any

from modelport._version import __version__
from modelport.errors import (
    InvalidArgumentError,
    ModelNotReadyError,
    ModelportError,
    NotFoundError,
    PermissionDeniedError,
    UnavailableError,
)
from modelport.manifest import ModelManifest, TensorSpec
from modelport.serving.manager import ModelManager
from modelport.serving.metrics import Metrics
from modelport.serving.model import ServedVersion, VersionState
from modelport.serving.modelconfig import ModelConfiguration, model_configuration
from modelport.serving.settings import ServerSettings
from modelport.serving.statistics import VersionStatistics
from modelport.serving.v2 import InferRequest, InferResponse
from modelport.tensors import lookup_dtype

__all__ = ["EXTENSIONS", "DataPlane"]

# Triton's names for the protocol extensions this server implements (GET /v2, gRPC ServerMetadata)
EXTENSIONS = ("binary_tensor_data", "model_repository", "model_configuration", "statistics", "parameters")


class DataPlane:
    """Health, metadata, inference and repository control, transport-agnostic."""

    def __init__(self, manager: ModelManager, settings: ServerSettings, metrics: Metrics) -> None:
        self.manager = manager
        self.settings = settings
        self.metrics = metrics
        self.started = False
        self.draining = False
        self.in_flight = 0

    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        """Ready once the repository is loaded and until shutdown starts."""
        return self.started and not self.draining

    def server_metadata(self) -> dict[str, Any]:
        return {"name": "modelport", "version": __version__, "extensions": list(EXTENSIONS)}

    def model_ready(self, name: str, version: str | None = None) -> tuple[bool, str]:
        return self.manager.get(name, version).readiness()

    def model_metadata(self, name: str, version: str | None = None) -> dict[str, Any]:
        served = self.manager.get(name, version)
        entry = self.manager.models[name]
        data: dict[str, Any] = {"name": name, "versions": [str(v) for v in sorted(entry.versions)]}
        manifest = served.manifest
        if manifest is not None:
            data["platform"] = f"modelport_{manifest.format}"
            data["inputs"] = [_tensor_metadata(s) for s in manifest.inputs]
            data["outputs"] = [_tensor_metadata(s) for s in manifest.outputs]
        data["parameters"] = _parameters(served, manifest)
        return data

    async def infer(self, name: str, version: str | None, request: InferRequest, protocol: str) -> InferResponse:
        """Validate against the manifest, batch, run, and keep the requested outputs."""
        started = time.perf_counter()
        label = (name, version or "default", protocol)
        served: ServedVersion | None = None
        succeeded = False
        self.in_flight += 1
        self.metrics.in_flight.inc()
        self.metrics.worker_requests.inc()
        try:
            if self.draining:
                raise UnavailableError("the server is shutting down", retry_after=5.0)
            served = self.manager.get(name, version)
            label = (name, str(served.version), protocol)
            served.validate(request.inputs)
            wanted = _requested_names(served, request)
            batcher, execution = served.batcher, served.execution
            if batcher is None or execution is None:
                raise ModelNotReadyError(f"model {name!r} version {served.version} is not ready")
            outputs = await batcher.submit(request.inputs, execution.limits.timeout_s)
            response = InferResponse(name, str(served.version), {k: outputs[k] for k in wanted}, id=request.id)
            self.metrics.outcome(label, "success").inc()
            succeeded = True
            return response
        except ModelportError as exc:
            self.metrics.outcome(label, exc.code).inc()
            raise
        finally:
            self.in_flight -= 1
            self.metrics.in_flight.dec()
            elapsed = time.perf_counter() - started
            self.metrics.latency(label).observe(elapsed)
            if served is not None:
                self.metrics.statistics.request(name, served.version, elapsed, succeeded)

    def model_manifest(self, name: str, version: str | None = None) -> tuple[ModelManifest, int]:
        """The manifest and version number of a READY model version (for protocol adapters)."""
        served = self.manager.get(name, version)
        return served.require_ready(), served.version

    def model_versions(self, name: str) -> list[tuple[int, str, str]]:
        """(version, state, reason) of every served version of a model."""
        entry = self.manager.models.get(name)
        if entry is None:
            raise NotFoundError(f"unknown model {name!r}")
        return [(v.version, v.state.value, v.reason) for v in sorted(entry.versions.values(), key=lambda v: v.version)]

    def model_config(self, name: str, version: str | None = None) -> ModelConfiguration:
        """How a loaded model version is served: tensors, batching, instances, version policy."""
        served = self.manager.get(name, version)
        return model_configuration(served, self.manager.models[name].config, self.settings)

    def model_statistics(self, name: str = "", version: str = "") -> list[VersionStatistics]:
        """Statistics of the ready versions of every model (``name`` empty), of one model, or of one version."""
        if version and not name:
            raise InvalidArgumentError("statistics of a version need the model's name")
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
        return [self.metrics.statistics.snapshot(v.name, v.version) for v in ready]

    def repository_index(self, ready_only: bool = False) -> list[dict[str, Any]]:
        rows = self.manager.index()
        return [r for r in rows if r["state"] == "READY"] if ready_only else rows

    def require_control(self) -> None:
        """Model control (load/unload) is off unless the server was started with it."""
        if not self.settings.model_control:
            raise PermissionDeniedError("model control is disabled; start the server with --model-control")

    async def load(self, name: str) -> None:
        await self.manager.load(name)

    async def unload(self, name: str) -> None:
        await self.manager.unload(name)


def _tensor_metadata(spec: TensorSpec) -> dict[str, Any]:
    return {"name": spec.name, "datatype": lookup_dtype(spec.dtype).v2, "shape": list(spec.shape)}


def _parameters(served: ServedVersion, manifest: ModelManifest | None) -> dict[str, Any]:
    params: dict[str, Any] = {"state": served.state.value, "version": str(served.version)}
    if served.reason:
        params["reason"] = served.reason
    if served.execution is not None and served.execution.providers:
        params["providers"] = list(served.execution.providers)
    if manifest is not None:
        params.update(format=manifest.format, variant=manifest.variant, max_batch_size=manifest.max_batch_size)
        if manifest.parity is not None:
            params["parity_passed"] = manifest.parity.passed
    return params


def _requested_names(served: ServedVersion, request: InferRequest) -> list[str]:
    manifest = served.require_ready()
    names = [s.name for s in manifest.outputs]
    if not request.outputs:
        return names
    unknown = [o.name for o in request.outputs if o.name not in names]
    if unknown:
        raise InvalidArgumentError(f"model {served.name!r} has no outputs {unknown}; it has {names}")
    return [o.name for o in request.outputs]
