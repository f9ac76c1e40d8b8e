"""ONNX Runtime for ``.onnx`` and ``.ort`` artifacts; reports the providers in use."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from modelport.errors import UnsupportedError
from modelport.manifest import ModelManifest
from modelport.runtimes.base import Arrays, RuntimeOptions, import_framework, rejected_input

__all__ = ["OnnxRuntime", "choose_providers", "status_message"]

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
        self._invalid_argument: tuple[type[Exception], ...] = ()  # set by load()

    def load(self) -> None:
        ort = import_framework("onnxruntime", "cpu")
        session_options = ort.SessionOptions()
        session_options.log_severity_level = 3
        if self.options.intra_op_threads:
            session_options.intra_op_num_threads = self.options.intra_op_threads
        wanted = choose_providers(self.options.providers, self.options.device, ort.get_available_providers())
        self.session = ort.InferenceSession(str(self.path), session_options, providers=wanted)
        self.providers = list(self.session.get_providers())
        state = import_framework("onnxruntime.capi.onnxruntime_pybind11_state", "cpu")
        self._invalid_argument = (state.InvalidArgument,)  # a Gather index out of bounds, among others
        log.info("%s: onnxruntime providers in use: %s", self.manifest.name, self.providers)

    def predict(self, inputs: Arrays) -> Arrays:
        feed = {self.manifest.native(spec.name): inputs[spec.name] for spec in self.manifest.inputs}
        names = [self.manifest.native(spec.name) for spec in self.manifest.outputs]
        try:
            values = self.session.run(names, feed)
        except self._invalid_argument as exc:
            raise rejected_input(status_message(str(exc))) from exc
        return {spec.name: value for spec, value in zip(self.manifest.outputs, values, strict=True)}

    def unload(self) -> None:
        self.session = None


def status_message(text: str) -> str:
    """What an onnxruntime error says about the values, without its prefix and node name.

    ``[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Non-zero status code returned while running Gather
    node. Name:'/embed/Gather' Status Message: indices element out of data bounds, idx=5000 ...``
    """
    _, found, status = text.rpartition("Status Message:")
    return status if found else text.rpartition("INVALID_ARGUMENT :")[2]
