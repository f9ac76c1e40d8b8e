"""ONNX Runtime for ``.onnx`` and ``.ort`` artifacts; reports the providers in use."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from modelport.errors import UnsupportedError
from modelport.manifest import ModelManifest
from modelport.runtimes.base import Arrays, RuntimeOptions, import_framework

__all__ = ["OnnxRuntime", "choose_providers"]

log = logging.getLogger(__name__)

_GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


def choose_providers(requested: tuple[str, ...], device: str, available: list[str]) -> list[str]:
    """Providers to ask for: the requested ones (must exist), else GPU ones on ``cuda``, then CPU."""
    missing = [p for p in requested if p not in available]
    if missing:
        raise UnsupportedError(
            f"execution providers {missing} are not available in this onnxruntime (has: {available})"
        )
    if requested:
        chosen = list(requested)
    elif device.startswith("cuda"):
        chosen = [p for p in _GPU_PROVIDERS if p in available]
    else:
        chosen = []
    return [*chosen, "CPUExecutionProvider"] if "CPUExecutionProvider" not in chosen else chosen


class OnnxRuntime:
    """Runs an ONNX or ORT-format model with onnxruntime."""

    def __init__(self, directory: Path, manifest: ModelManifest, options: RuntimeOptions) -> None:
        self.path = directory / manifest.artifact
        self.manifest = manifest
        self.options = options
        self.session: Any = None
        self.providers: list[str] = []

    def load(self) -> None:
        ort = import_framework("onnxruntime", "cpu")
        session_options = ort.SessionOptions()
        session_options.log_severity_level = 3
        if self.options.intra_op_threads:
            session_options.intra_op_num_threads = self.options.intra_op_threads
        wanted = choose_providers(self.options.providers, self.options.device, ort.get_available_providers())
        self.session = ort.InferenceSession(str(self.path), session_options, providers=wanted)
        self.providers = list(self.session.get_providers())
        log.info("%s: onnxruntime providers in use: %s", self.manifest.name, self.providers)

    def predict(self, inputs: Arrays) -> Arrays:
        feed = {self.manifest.native(spec.name): inputs[spec.name] for spec in self.manifest.inputs}
        names = [self.manifest.native(spec.name) for spec in self.manifest.outputs]
        values = self.session.run(names, feed)
        return {spec.name: value for spec, value in zip(self.manifest.outputs, values, strict=True)}

    def unload(self) -> None:
        self.session = None
