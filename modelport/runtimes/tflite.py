"""TFLite runtime on LiteRT (``ai_edge_litert``), resizing inputs per request.

Fully int8-quantized models take and return int8 tensors; the manifest keeps the
model's float interface, and this runtime (de)quantizes with each tensor's own
scale and zero point, so clients send the same floats to every variant.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from modelport.errors import SourceError
from modelport.manifest import ModelManifest
from modelport.runtimes.base import INDEX_FAULT, Arrays, RuntimeOptions, import_framework, rejected_input

__all__ = ["TFLiteRuntime", "dequantize", "quantize"]


def quantize(values: np.ndarray[Any, Any], detail: dict[str, Any]) -> np.ndarray[Any, Any]:
    """Float -> the tensor's integer type with its scale and zero point."""
    scale, zero = _params(detail)
    info = np.iinfo(detail["dtype"])
    return np.clip(np.round(values / scale + zero), info.min, info.max).astype(detail["dtype"])


def dequantize(values: np.ndarray[Any, Any], detail: dict[str, Any]) -> np.ndarray[Any, Any]:
    """The tensor's integer type -> float32."""
    scale, zero = _params(detail)
    return ((values.astype(np.float32) - zero) * scale).astype(np.float32)


def _params(detail: dict[str, Any]) -> tuple[float, int]:
    params = detail.get("quantization_parameters", {})
    scales, zeros = params.get("scales", ()), params.get("zero_points", ())
    if len(scales) != 1:
        raise SourceError(f"tensor {detail.get('name')!r} is not per-tensor quantized (scales: {list(scales)})")
    return float(scales[0]), int(zeros[0])


class TFLiteRuntime:
    """Runs a ``.tflite`` model through its signature runner (one call at a time)."""

    def __init__(self, directory: Path, manifest: ModelManifest, options: RuntimeOptions) -> None:
        self.path = directory / manifest.artifact
        self.manifest = manifest
        self.options = options
        self.runner: Any = None
        self._lock = threading.Lock()

    def load(self) -> None:
        litert = import_framework("ai_edge_litert.interpreter", "tflite")
        threads = self.options.intra_op_threads or None
        interpreter = litert.Interpreter(model_path=str(self.path), num_threads=threads)
        signatures = interpreter.get_signature_list()
        if not signatures:
            raise SourceError(f"{self.path}: the model has no signature to run")
        key = "serving_default" if "serving_default" in signatures else next(iter(signatures))
        try:  # an op the converter wrote but LiteRT has no kernel for fails here, not on the first request
            interpreter.allocate_tensors()
        except RuntimeError as exc:
            raise SourceError(f"LiteRT cannot run this model: {exc}") from exc
        self.runner = interpreter.get_signature_runner(key)
        self.interpreter = interpreter
        self.in_details: dict[str, Any] = self.runner.get_input_details()
        self.out_details: dict[str, Any] = self.runner.get_output_details()

    def predict(self, inputs: Arrays) -> Arrays:
        feed = {}
        for spec in self.manifest.inputs:
            native = self.manifest.native(spec.name)
            value, detail = np.ascontiguousarray(inputs[spec.name]), self.in_details[native]
            feed[native] = quantize(value, detail) if _integer_for_float(value.dtype, detail) else value
        with self._lock:  # an interpreter is not re-entrant
            try:
                result = self.runner(**feed)
            except RuntimeError as exc:  # LiteRT: "gather index out of boundsNode number 0 (GATHER) failed to invoke."
                detail = str(exc).partition("Node number")[0]
                if not INDEX_FAULT.search(detail):
                    raise
                raise rejected_input(detail) from exc
        outputs: Arrays = {}
        for spec in self.manifest.outputs:
            native = self.manifest.native(spec.name)
            value, detail = np.array(result[native]), self.out_details[native]
            if _integer_for_float(np.dtype(spec.dtype), detail):
                value = dequantize(value, detail)
            elif _widens(value.dtype, spec.dtype):  # litert-torch's int32 for an int64 result (argmax) without x64
                value = value.astype(spec.dtype)
            outputs[spec.name] = value
        return outputs

    def unload(self) -> None:
        self.runner = None
        self.interpreter = None


_INTEGERS = ("int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64")


def _widens(have: np.dtype[Any], wanted: str) -> bool:
    """An integer result narrower than the manifest's integer dtype, which the answer must have."""
    return have.kind in "iu" and wanted in _INTEGERS and have != np.dtype(wanted) and np.can_cast(have, wanted, "safe")


def _integer_for_float(wanted: np.dtype[Any], detail: dict[str, Any]) -> bool:
    return wanted.kind == "f" and np.dtype(detail["dtype"]).kind in ("i", "u")
