"""The configuration a model version is served with (Triton's model configuration extension), as one value."""

from __future__ import annotations

from dataclasses import dataclass

from modelport.errors import ModelNotReadyError
from modelport.manifest import ModelManifest, TensorSpec
from modelport.serving.application import external_tensors
from modelport.serving.model import Execution, ServedVersion
from modelport.serving.settings import ModelConfig, ServerSettings, VersionPolicy

__all__ = ["EnsembleStep", "ModelConfiguration", "model_configuration"]


@dataclass(frozen=True)
class EnsembleStep:
    """One step of a pipeline as Triton's ensemble scheduling names it: a model (version -1: its default)
    and its maps, step tensor -> pipeline tensor. A processors step is named ``preprocess``/``postprocess``."""

    model_name: str
    model_version: int
    input_map: dict[str, str]
    output_map: dict[str, str]


@dataclass(frozen=True)
class ModelConfiguration:
    """What one served model version is and how it is batched and run (no wire shapes).

    Tensors keep the manifest's full shapes (batch dimension included); ``max_batch_size`` is the
    limit the batcher applies (the manifest's, capped by ``config.yaml``; 0 = no batch dimension).
    ``device`` is ``cpu``, ``cuda[:N]``, or ``remote`` for a model another server runs. A pipeline
    (format ``pipeline``) has its ``ensemble`` steps; it batches in its steps' models, not itself.
    """

    name: str
    version: int
    format: str
    artifact: str
    max_batch_size: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    preferred_batch_sizes: tuple[int, ...]
    max_queue_delay_us: int
    max_queue_size: int
    instances: int
    device: str
    version_policy: VersionPolicy
    ensemble: tuple[EnsembleStep, ...] = ()


def model_configuration(served: ServedVersion, config: ModelConfig, settings: ServerSettings) -> ModelConfiguration:
    """The configuration of a version that has loaded (a version that failed to load has none)."""
    manifest, execution = served.manifest, served.execution
    if manifest is None or execution is None:
        raise ModelNotReadyError(f"model {served.name!r} version {served.version} is {served.state.value.lower()}")
    return ModelConfiguration(
        name=served.name,
        version=served.version,
        format=manifest.format,
        artifact=manifest.artifact,
        max_batch_size=execution.policy.max_batch_size,
        inputs=_tensors(manifest, execution, inputs=True),
        outputs=_tensors(manifest, execution, inputs=False),
        preferred_batch_sizes=execution.policy.preferred_batch_sizes,
        max_queue_delay_us=round(execution.policy.max_queue_delay_s * 1e6),
        max_queue_size=execution.policy.max_queue_size,
        instances=len(execution.runtimes),
        device=_device(execution.providers, config, settings),
        version_policy=config.version_policy,
    )


def _tensors(manifest: ModelManifest, execution: Execution, inputs: bool) -> tuple[TensorSpec, ...]:
    """The tensors clients send and get, as the metadata shows them: a model with processors takes and answers
    BYTES payloads, its own tensors are hidden behind them."""
    if execution.processors is None:
        return manifest.inputs if inputs else tuple(_labelled(spec, execution) for spec in manifest.outputs)
    shown = external_tensors(execution.processors, manifest)[0 if inputs else 1]
    return tuple(TensorSpec(name=t.name, dtype=t.dtype, shape=t.shape) for t in shown)


def _labelled(spec: TensorSpec, execution: Execution) -> TensorSpec:
    """An output with the labels file the version found for it (``labels.txt`` beside the model, as Triton's
    ``label_filename`` names one), where the manifest names none."""
    found = execution.labels.get(spec.name)
    return spec.model_copy(update={"labels": found.file}) if found and found.file and not spec.labels else spec


def _device(providers: tuple[str, ...], config: ModelConfig, settings: ServerSettings) -> str:
    if config.remote is not None:
        return "remote"
    device = config.device or settings.device
    if device.startswith("cuda") and providers and providers[0] == "CPUExecutionProvider":
        return "cpu"  # onnxruntime-gpu without its CUDA libraries runs on the CPU
    return device
