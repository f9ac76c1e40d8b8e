"""Reduced-precision TFLite variants: float16, dynamic-range int8, full int8."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from modelport.errors import UnsupportedError
from modelport.export.artifact import Artifact, ConvertContext
from modelport.export.tf_convert import tflite_artifact
from modelport.runtimes.base import import_framework
from modelport.tensors import lookup_dtype

__all__ = ["quantize_tflite"]


def quantize_tflite(ctx: ConvertContext, method: str) -> Artifact:
    """TFLiteConverter post-training quantization; full int8 calibrates on ``ctx.calibration``."""
    if ctx.source.framework != "tf":
        raise UnsupportedError(f"tflite {method} quantization needs a TensorFlow/Keras source (this one is PyTorch)")
    tf = import_framework("tensorflow", "tf")

    def configure(converter: Any) -> None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if method == "float16":
            converter.target_spec.supported_types = [tf.float16]
        elif method == "full-int8":
            converter.representative_dataset = lambda: _representative(ctx)
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            if all(lookup_dtype(s.dtype).is_float for s in ctx.source.inputs):
                converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8

    artifact = tflite_artifact(ctx, f"tflite-{method}", configure)
    return Artifact(
        artifact.path, artifact.inputs, artifact.native_names, {**artifact.platform, "quantization": method}
    )


def _representative(ctx: ConvertContext) -> Iterator[dict[str, np.ndarray[Any, Any]]]:
    """One-row samples keyed by the SavedModel signature's input names."""
    native = ctx.base("savedmodel").native_names
    for batch in ctx.calibration:
        rows = next(iter(batch.values())).shape[0]
        for i in range(rows):
            yield {native.get(name, name): value[i : i + 1] for name, value in batch.items()}
