"""ONNX follow-ups shared by both frameworks: ORT (mobile) format and int8 quantization."""

from __future__ import annotations

import shutil
from typing import Any

import numpy as np

from modelport.exporters.artifact import ARTIFACT_FILES, Artifact, ConvertContext, frameworks, run_tool
from modelport.runtimes.base import import_framework

__all__ = ["quantize_onnx", "to_ort"]


def to_ort(ctx: ConvertContext, _: str) -> Artifact:
    """ONNX Runtime Mobile's ``.ort`` flatbuffer, converted from the ONNX artifact."""
    onnx_artifact = ctx.base("onnx")
    workdir = ctx.subdir("ort")
    staged = workdir / ARTIFACT_FILES["onnx"]
    shutil.copyfile(onnx_artifact.path, staged)
    run_tool(
        [
            "-m",
            "onnxruntime.tools.convert_onnx_models_to_ort",
            str(staged),
            "--output_dir",
            str(workdir),
            "--optimization_style",
            "Fixed",
        ],
        "onnxruntime ORT conversion",
    )
    staged.unlink()
    produced = sorted(workdir.glob("*.ort"))
    path = workdir / ARTIFACT_FILES["ort"]
    produced[0].rename(path)
    for extra in workdir.glob("*.config"):
        extra.unlink()
    versions = {**onnx_artifact.platform, **frameworks("onnxruntime"), "optimization_style": "Fixed"}
    return Artifact(path, onnx_artifact.inputs, onnx_artifact.native_names, versions)


def quantize_onnx(ctx: ConvertContext, method: str) -> Artifact:
    """onnxruntime.quantization: dynamic int8 weights, or static QDQ int8 calibrated on ``ctx.calibration``."""
    quantization = import_framework("onnxruntime.quantization", "cpu")
    base = ctx.base("onnx")
    path = ctx.subdir(f"onnx-{method}") / ARTIFACT_FILES["onnx"]
    if method == "dynamic-int8":
        quantization.quantize_dynamic(str(base.path), str(path), weight_type=quantization.QuantType.QInt8)
    else:
        reader = _Reader([{base.native_names.get(k, k): v for k, v in b.items()} for b in ctx.calibration])
        quantization.quantize_static(
            str(base.path),
            str(path),
            reader,
            quant_format=quantization.QuantFormat.QDQ,
            activation_type=quantization.QuantType.QInt8,
            weight_type=quantization.QuantType.QInt8,
        )
    return Artifact(path, base.inputs, base.native_names, {**base.platform, "quantization": method})


class _Reader:
    """A CalibrationDataReader over calibration batches."""

    def __init__(self, batches: list[dict[str, np.ndarray[Any, Any]]]) -> None:
        self._items = iter(batches)

    def get_next(self) -> dict[str, np.ndarray[Any, Any]] | None:
        return next(self._items, None)
