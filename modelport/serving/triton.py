"""Triton's JSON shapes of the model configuration and statistics extensions.

The HTTP adapter answers with these dicts as they are; the gRPC adapter parses them into the
``ModelConfig`` / ``ModelStatisticsResponse`` messages, so both transports say the same thing.
Field names are the protobuf ones, integers are JSON numbers (as Triton's HTTP server writes them).
"""

from __future__ import annotations

from typing import Any

from modelport.manifest import TensorSpec
from modelport.serving.modelconfig import ModelConfiguration
from modelport.serving.settings import VersionPolicy
from modelport.serving.statistics import Duration, VersionStatistics
from modelport.tensors import lookup_dtype

__all__ = ["PLATFORMS", "config_json", "metadata_platform", "statistics_json"]

# modelport format -> (Triton platform, Triton backend), as Triton names them; Triton has platforms for
# ONNX, TorchScript and SavedModel only, other formats leave it empty (as Triton's backend-only models do)
PLATFORMS = {
    "onnx": ("onnxruntime_onnx", "onnxruntime"),
    "ort": ("onnxruntime_onnx", "onnxruntime"),
    "torchscript": ("pytorch_libtorch", "pytorch"),
    "pt2": ("", "pytorch"),
    "savedmodel": ("tensorflow_savedmodel", "tensorflow"),
    "tflite": ("", "tflite"),
}
PIPELINE = "pipeline"  # modelport.serving.pipeline.FORMAT
_FORMATS = {"NCHW": "FORMAT_NCHW", "NHWC": "FORMAT_NHWC"}


def metadata_platform(model_format: str) -> str:
    """The ``platform`` of a model's v2 metadata as Triton answers it: the configuration's platform, else its
    backend (``pytorch``, ``tflite``, a custom runtime's ``onnx``...), ``ensemble`` for a pipeline."""
    if model_format == PIPELINE:
        return "ensemble"
    platform, backend = PLATFORMS.get(model_format, ("", model_format))
    return platform or backend


def config_json(config: ModelConfiguration) -> dict[str, Any]:
    """A model version's configuration as Triton's ``GET /v2/models/{m}/config`` returns it."""
    if config.format == PIPELINE:
        return _ensemble_json(config)
    platform, backend = PLATFORMS.get(config.format, ("", config.format))
    batched = config.max_batch_size > 0
    data: dict[str, Any] = {
        "name": config.name,
        "platform": platform,
        "backend": backend,
        "version_policy": _version_policy(config.version_policy),
        "max_batch_size": config.max_batch_size,
        "input": [_tensor(spec, batched, is_input=True) for spec in config.inputs],
        "output": [_tensor(spec, batched, is_input=False) for spec in config.outputs],
        "instance_group": [_instance_group(config)],
        "default_model_filename": config.artifact,
    }
    if batched:  # Triton batches only models with a batch dimension
        data["dynamic_batching"] = {
            "preferred_batch_size": list(config.preferred_batch_sizes),
            "max_queue_delay_microseconds": config.max_queue_delay_us,
            "default_queue_policy": {"max_queue_size": config.max_queue_size},
        }
    return data


def _ensemble_json(config: ModelConfiguration) -> dict[str, Any]:
    """A pipeline as Triton shows an ensemble: platform ``ensemble``, its own tensors (batch dimension
    included: it batches in its steps), and ``ensemble_scheduling`` with each step's maps."""
    steps = [
        {
            "model_name": s.model_name,
            "model_version": s.model_version,
            "input_map": s.input_map,
            "output_map": s.output_map,
        }
        for s in config.ensemble
    ]
    return {
        "name": config.name,
        "platform": "ensemble",
        "backend": "",
        "version_policy": _version_policy(config.version_policy),
        "max_batch_size": 0,
        "input": [_tensor(spec, False, is_input=True) for spec in config.inputs],
        "output": [_tensor(spec, False, is_input=False) for spec in config.outputs],
        "ensemble_scheduling": {"step": steps},
    }


def _data_type(dtype: str) -> str:
    v2 = lookup_dtype(dtype).v2
    return "TYPE_STRING" if v2 == "BYTES" else f"TYPE_{v2}"


def _tensor(spec: TensorSpec, batched: bool, is_input: bool) -> dict[str, Any]:
    """Dims without the batch dimension when the model batches, as Triton writes them; one value per row
    (shape ``[batch]``) is Triton's ``dims: [1]`` with ``reshape: {shape: []}``."""
    dims = list(spec.shape[1:] if batched and spec.shape else spec.shape)
    data: dict[str, Any] = {"name": spec.name, "data_type": _data_type(spec.dtype), "dims": dims or [1]}
    if not dims:
        data["reshape"] = {"shape": []}
    if is_input:  # as Triton writes every input's; export --layout records NCHW / NHWC
        data["format"] = _FORMATS.get(spec.layout or "", "FORMAT_NONE")
    if not is_input and spec.labels:
        data["label_filename"] = spec.labels
    return data


def _version_policy(policy: VersionPolicy) -> dict[str, Any]:
    if policy.all:
        return {"all": {}}
    if policy.specific:
        return {"specific": {"versions": list(policy.specific)}}
    return {"latest": {"num_versions": policy.latest or 1}}


def _instance_group(config: ModelConfiguration) -> dict[str, Any]:
    group: dict[str, Any] = {"name": config.name, "count": config.instances}
    if config.device == "remote":
        group["kind"] = "KIND_MODEL"
    elif config.device.startswith("cuda"):
        _, _, index = config.device.partition(":")
        group.update(kind="KIND_GPU", gpus=[int(index or 0)])
    else:
        group["kind"] = "KIND_CPU"
    return group


def statistics_json(stats: list[VersionStatistics]) -> dict[str, Any]:
    """Statistics as Triton's ``GET /v2/models[/{m}[/versions/{v}]]/stats`` returns them."""
    return {"model_stats": [_version_statistics(s) for s in stats]}


def _duration(value: Duration) -> dict[str, int]:
    return {"count": value.count, "ns": value.ns}


def _version_statistics(stats: VersionStatistics) -> dict[str, Any]:
    # the batcher times input assembly, the model and output splitting as one span: compute_infer;
    # compute_input and compute_output count the same requests with no time of their own
    untimed = _duration(Duration(stats.compute.count, 0))
    return {
        "name": stats.name,
        "version": str(stats.version),
        "last_inference": stats.last_inference_ms,
        "inference_count": stats.inference_count,
        "execution_count": stats.execution_count,
        "inference_stats": {
            "success": _duration(stats.success),
            "fail": _duration(stats.fail),
            "queue": _duration(stats.queue),
            "compute_input": untimed,
            "compute_infer": _duration(stats.compute),
            "compute_output": untimed,
            "cache_hit": _duration(Duration()),
            "cache_miss": _duration(Duration()),
        },
        "batch_stats": [
            {
                "batch_size": b.batch_size,
                "compute_input": _duration(Duration(b.compute.count, 0)),
                "compute_infer": _duration(b.compute),
                "compute_output": _duration(Duration(b.compute.count, 0)),
            }
            for b in stats.batches
        ],
    }
