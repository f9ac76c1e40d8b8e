"""Reduced-precision TFLite from a PyTorch source: AI Edge Quantizer on litert-torch's float model.

litert-torch's own ``quant_config`` takes either a PT2E quantizer (torch.ao-era, applied before
lowering) or a recipe for its Edge Generative API models only; for a converted ``.tflite`` the
LiteRT tooling's post-training path is AI Edge Quantizer (``ai_edge_quantizer``, installed
with litert-torch), which litert-torch itself calls for its generative recipes. So the float32
variant is converted once and each method is one AEQ recipe on it:

- ``float16``: weight-only float16 (``float_casting``; FC/conv/embedding weights, float compute)
- ``dynamic-int8``: ``dynamic_wi8_afp32`` (int8 channelwise weights, activations quantized at run time)
- ``full-int8``: ``static_wi8_ai8`` calibrated on ``ctx.calibration`` (float inputs and outputs
  become int8, as TFLiteConverter's full int8 does; the runtime (de)quantizes)

What AEQ cannot quantize is refused with the reason: a recipe that quantizes nothing, or a
full-int8 model in which AEQ left ops computing in float32 (it wraps ops it does not support
in dequantize/quantize pairs), which would not be integer-only.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

import numpy as np

from modelport.errors import ConversionError, InvalidArgumentError
from modelport.exporters.artifact import ARTIFACT_FILES, Artifact, ConvertContext, frameworks
from modelport.golden import take_rows
from modelport.runtimes.base import Arrays, import_framework
from modelport.tensors import shape_matches

__all__ = ["RECIPES", "quantize_litert", "reduced_precision_tensors"]

SIGNATURE = "serving_default"
# method -> the AEQ recipe's name (a function in ai_edge_quantizer.recipe, or the float16 one below)
RECIPES = {"float16": "weight_only_fp16", "dynamic-int8": "dynamic_wi8_afp32", "full-int8": "static_wi8_ai8"}
_WEIGHT_ONLY_FP16 = [
    {
        "regex": ".*",
        "operation": "*",
        "algorithm_key": "float_casting",
        "op_config": {
            "weight_tensor_config": {"num_bits": 16, "dtype": "FLOAT"},
            "compute_precision": "FLOAT",
            "explicit_dequantize": True,
        },
    }
]
_BOUNDARY_OPS = frozenset({"QUANTIZE", "DEQUANTIZE", "CAST"})  # conversions, not float compute
_MAX_CALIBRATION_SAMPLES = 256


def quantize_litert(ctx: ConvertContext, method: str) -> Artifact:
    """Quantize the litert-torch float32 artifact with AEQ's recipe for ``method``."""
    import_framework("litert_torch", "torch-tflite")
    aeq = import_framework("ai_edge_quantizer.quantizer", "torch-tflite")
    base = ctx.base("tflite")
    quantizer = aeq.Quantizer(str(base.path), _recipe(method))
    calibration = None
    if quantizer.need_calibration:
        samples = _calibration_samples(ctx, base)
        calibration = quantizer.calibrate({SIGNATURE: samples}, num_threads=os.cpu_count() or 1)
    flatbuffer = bytes(quantizer.quantize(calibration, enable_progress_report=False).quantized_model)
    _check_quantized(method, base.path.read_bytes(), flatbuffer)
    path = ctx.subdir(f"tflite-{method}") / ARTIFACT_FILES["tflite"]
    path.write_bytes(flatbuffer)
    platform = {
        **base.platform,
        **frameworks("ai_edge_quantizer"),
        "quantization": method,
        "quantizer": "ai_edge_quantizer",
        "recipe": RECIPES[method],
    }
    return Artifact(path, base.inputs, base.native_names, platform, base.notes)


def _recipe(method: str) -> Any:
    if method == "float16":
        return _WEIGHT_ONLY_FP16
    recipes = import_framework("ai_edge_quantizer.recipe", "torch-tflite")
    return getattr(recipes, RECIPES[method])()


def _calibration_samples(ctx: ConvertContext, base: Artifact) -> list[Arrays]:
    """The calibration rows as the float artifact's static-shaped inputs, keyed by its signature names."""
    native = base.native_names
    samples = [
        {native.get(s.name, s.name): _cast(part[s.name], s.dtype) for s in base.inputs}
        for part in _parts(ctx.calibration, base.inputs[0].shape[0])
        if all(shape_matches(s.shape, part[s.name].shape) for s in base.inputs)
    ]
    if not samples:
        shapes = ", ".join(s.describe() for s in base.inputs)
        raise InvalidArgumentError(
            f"no calibration sample fits the tflite inputs ({shapes}): give --calibration-data of that shape "
            "or choose the shape with --tflite-shape"
        )
    return samples[:_MAX_CALIBRATION_SAMPLES]


def _parts(batches: list[Arrays], batch: int) -> list[Arrays]:
    """The calibration batches cut into parts of the artifact's static batch size (a remainder is left out)."""
    parts = []
    for arrays in batches:
        rows = len(next(iter(arrays.values())))
        parts += [take_rows(arrays, start, start + batch) for start in range(0, rows - batch + 1, batch)]
    return parts


def _cast(values: np.ndarray[Any, Any], dtype: str) -> np.ndarray[Any, Any]:
    return np.ascontiguousarray(values.astype(dtype, copy=False))


def _check_quantized(method: str, before: bytes, after: bytes) -> None:
    """Refuse a model AEQ did not quantize, or (full-int8) left partly in float32."""
    float_ops, quantized = _float_compute(after), reduced_precision_tensors(after) - reduced_precision_tensors(before)
    if quantized == 0:
        raise ConversionError(
            f"ai_edge_quantizer {RECIPES[method]}: no op of this model can be quantized this way "
            f"(its ops: {_names(_float_compute(before))})"
        )
    if method == "full-int8" and float_ops:
        raise ConversionError(
            f"ai_edge_quantizer {RECIPES[method]} cannot quantize {_names(float_ops)}: they stay float32, "
            "so the model would not be integer-only (dynamic-int8 and float16 quantize its weights)"
        )


def _names(ops: Counter[str]) -> str:
    return ", ".join(f"{name} x{count}" if count > 1 else name for name, count in sorted(ops.items())) or "none"


def _float_compute(flatbuffer: bytes) -> Counter[str]:
    """Ops with a float32 input or output, beyond the (de)quantize/cast conversions."""
    found: Counter[str] = Counter()
    for name, types in _ops(flatbuffer):
        if name not in _BOUNDARY_OPS and "FLOAT32" in types:
            found[name] += 1
    return found


def reduced_precision_tensors(flatbuffer: bytes) -> int:
    """Tensors of a reduced-precision type (int8/int16/float16) anywhere in the model."""
    return sum(1 for _, types in _ops(flatbuffer) for t in types if t in ("INT8", "INT16", "FLOAT16"))


def _ops(flatbuffer: bytes) -> list[tuple[str, list[str]]]:
    """Every op of every subgraph: its builtin name and the types of its input and output tensors."""
    schema = import_framework("ai_edge_litert.schema_py_generated", "tflite")
    ops_by_code = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    types_by_code = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    model = schema.ModelT.InitFromPackedBuf(flatbuffer, 0)
    found = []
    for graph in model.subgraphs or []:
        for op in graph.operators or []:
            code = model.operatorCodes[op.opcodeIndex]
            name = ops_by_code.get(max(code.builtinCode, code.deprecatedBuiltinCode), "CUSTOM")
            tensors = [i for i in [*op.inputs, *op.outputs] if i >= 0]
            found.append((name, [types_by_code[graph.tensors[i].type] for i in tensors]))
    return found
