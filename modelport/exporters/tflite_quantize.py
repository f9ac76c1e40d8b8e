"""Reduced-precision TFLite variants: float16, dynamic-range int8, full int8.

A TensorFlow/Keras source goes through TFLiteConverter's post-training quantization; a
PyTorch source through AI Edge Quantizer on litert-torch's float model (``litert_quantize``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from modelport.errors import ConversionError
from modelport.exporters.artifact import Artifact, ConvertContext
from modelport.exporters.tf_convert import tflite_artifact
from modelport.exporters.tflite_recipe import TFLiteRecipe
from modelport.tensors import lookup_dtype

__all__ = ["quantize_tflite"]


def quantize_tflite(ctx: ConvertContext, method: str) -> Artifact:
    """Post-training quantization of the source's TFLite model; full int8 calibrates on ``ctx.calibration``."""
    if ctx.source.framework == "torch":
        from modelport.exporters.litert_quantize import quantize_litert

        return quantize_litert(ctx, method)
    recipe = TFLiteRecipe(method=method)
    if method == "full-int8":
        recipe = TFLiteRecipe(
            method=method,
            calibration=_calibration_file(ctx),
            int8_inputs=all(lookup_dtype(s.dtype).is_float for s in ctx.source.inputs),
        )
    artifact = tflite_artifact(ctx, f"tflite-{method}", recipe)
    if method == "dynamic-int8":
        _check_weights_quantized(artifact.path)
    return Artifact(
        artifact.path, artifact.inputs, artifact.native_names, {**artifact.platform, "quantization": method}
    )


def _check_weights_quantized(path: Path) -> None:
    """TFLiteConverter's dynamic range quantization skips weights under 1024 elements: refuse a model
    in which it quantized none (it would be the float32 model under another name), as for PyTorch."""
    from modelport.exporters.litert_quantize import reduced_precision_tensors

    if reduced_precision_tensors(path.read_bytes()) == 0:
        raise ConversionError(
            "TFLiteConverter dynamic-int8 quantized no weight of this model (it keeps weights under 1024 "
            "elements in float32): the variant would be the float32 model; float16 and full-int8 quantize it"
        )


def _calibration_file(ctx: ConvertContext) -> Path:
    """The calibration batches as one .npz keyed by the SavedModel signature's input names."""
    native = ctx.base("savedmodel").native_names
    path = ctx.workdir / "calibration.npz"
    if not path.exists():
        names = list(ctx.calibration[0])
        arrays = {native.get(n, n): np.concatenate([b[n] for b in ctx.calibration]) for n in names}
        np.savez(path, **arrays)  # type: ignore[arg-type]
    return path
