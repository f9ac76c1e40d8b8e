"""Converted artifacts, the conversion context, and the converter registry."""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from modelport.errors import ConversionError, ModelportError, UnsupportedError, summarize
from modelport.exporters.options import ExportOptions, Variant
from modelport.exporters.source_model import SourceModel
from modelport.golden import random_inputs
from modelport.manifest import TensorSpec
from modelport.runtimes.base import Arrays

__all__ = [
    "ARTIFACT_FILES",
    "Artifact",
    "ConvertContext",
    "convert_variant",
    "describe_failure",
    "frameworks",
    "map_native",
    "quiet_output",
    "run_tool",
    "supported_formats",
]

ARTIFACT_FILES = {
    "onnx": "model.onnx",
    "ort": "model.ort",
    "torchscript": "model.pt",
    "pt2": "model.pt2",
    "tflite": "model.tflite",
    "savedmodel": "saved_model.pb",
}

_CONVERTERS = {
    ("torch", "onnx"): "modelport.exporters.torch_convert:to_onnx",
    ("torch", "torchscript"): "modelport.exporters.torch_convert:to_torchscript",
    ("torch", "pt2"): "modelport.exporters.torch_convert:to_pt2",
    ("torch", "tflite"): "modelport.exporters.torch_convert:to_tflite",
    ("torch", "ort"): "modelport.exporters.onnx_tools:to_ort",
    ("tf", "savedmodel"): "modelport.exporters.tf_convert:to_savedmodel",
    ("tf", "tflite"): "modelport.exporters.tf_convert:to_tflite",
    ("tf", "onnx"): "modelport.exporters.tf_convert:to_onnx",
    ("tf", "ort"): "modelport.exporters.onnx_tools:to_ort",
    ("onnx", "onnx"): "modelport.exporters.onnx_source:copy_onnx",
    ("onnx", "ort"): "modelport.exporters.onnx_tools:to_ort",
}
_QUANTIZERS = {
    ("onnx", "dynamic-int8"): "modelport.exporters.onnx_tools:quantize_onnx",
    ("onnx", "static-int8"): "modelport.exporters.onnx_tools:quantize_onnx",
    ("tflite", "float16"): "modelport.exporters.tflite_quantize:quantize_tflite",
    ("tflite", "dynamic-int8"): "modelport.exporters.tflite_quantize:quantize_tflite",
    ("tflite", "full-int8"): "modelport.exporters.tflite_quantize:quantize_tflite",
}


@dataclass(frozen=True)
class Artifact:
    """A converted model in the work directory, described as the version dir will hold it."""

    path: Path
    inputs: tuple[TensorSpec, ...]
    native_names: dict[str, str] = field(default_factory=dict)
    platform: dict[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()  # what the user should know about this artifact (e.g. a pinned input shape)


@dataclass
class ConvertContext:
    """What converters share: the source, options, a work dir and already-built base artifacts."""

    source: SourceModel
    options: ExportOptions
    workdir: Path
    calibration: list[Arrays]
    # (output, dim) pairs whose size the input's values choose (pipeline._data_dependent_dims): dynamic everywhere
    data_dependent: frozenset[tuple[str, int]] = frozenset()
    # whether a batch's rows answer as each row alone (pipeline._rows_independent): else served one request a call
    rows_independent: bool = True
    _built: dict[str, Artifact] = field(default_factory=dict)

    def example_inputs(self, batch: int = 2, dynamic: int | None = None) -> Arrays:
        """Inputs to trace with: random, batch 2 (so the batch dim is not specialised to 1)."""
        rng = np.random.default_rng(self.options.seed)
        sizes = dynamic or self.options.dynamic_sizes[0]
        return random_inputs(self.source.inputs, batch, sizes, rng, self.source.vocabulary, self.source.string_samples)

    def base(self, fmt: str) -> Artifact:
        """The float artifact of ``fmt``, converted once and reused by variants built on it."""
        if fmt not in self._built:
            self._built[fmt] = _call(_CONVERTERS, (self.source.framework, fmt), self, fmt)
        return self._built[fmt]

    def subdir(self, name: str) -> Path:
        path = self.workdir / name
        path.mkdir(parents=True, exist_ok=True)
        return path


def supported_formats(framework: str) -> tuple[str, ...]:
    """The formats a source framework can be exported to."""
    return tuple(fmt for fw, fmt in _CONVERTERS if fw == framework)


def convert_variant(ctx: ConvertContext, variant: Variant) -> Artifact:
    """Convert (and quantize) one variant, wrapping converter failures in ``ConversionError``."""
    if variant.quantization is None:
        return ctx.base(variant.format)
    return _call(_QUANTIZERS, (variant.format, variant.quantization), ctx, variant.quantization)


def _call(table: dict[tuple[str, str], str], key: tuple[str, str], ctx: ConvertContext, arg: str) -> Artifact:
    target = table.get(key)
    if target is None:
        raise UnsupportedError(f"{key[1]} is not available for {key[0]} (supported: {_supported(table, key[0])})")
    module_name, _, attr = target.partition(":")
    function: Callable[[ConvertContext, str], Artifact] = getattr(importlib.import_module(module_name), attr)
    try:
        with quiet_output(enabled=ctx.options.quiet_converters):
            return function(ctx, arg)
    except ModelportError:
        raise
    except Exception as exc:
        raise ConversionError(f"{module_name.rsplit('.', 1)[-1]}.{attr}: {describe_failure(exc)}") from exc


@contextlib.contextmanager
def quiet_output(enabled: bool) -> Iterator[None]:
    """Silence converters' own prints and logs (fd level: several write from C++)."""
    if not enabled:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            logging.disable(previous)


def _supported(table: dict[tuple[str, str], str], first: str) -> str:
    return ", ".join(b for a, b in table if a == first) or "none"


_OP_PATTERNS = (
    r"'(tf\.\w+)' op is neither a custom op nor a flex op",  # TFLiteConverter, builtin ops only
    r"(?:operator|op|Operator|Op)[\s:]+['\"`]?([A-Za-z_][\w:.]*)['\"`]?\s+(?:is\s+)?not\s+supported",
    r"[Uu]nsupported (?:op|operator|ops)[^:]*:\s*['\"`]?([\w:.,\s]+?)['\"`]?(?:\.|$|\n)",
    r"No (?:conversion|lowering|decomposition) (?:rule|function)? ?for ['\"`]?([\w:.]+)",
    r"(aten[.:]{1,2}[\w.]+)",
)


def describe_failure(exc: BaseException) -> str:
    """One line: the error, its root cause when wrapped, and the failing op when a message reveals it."""
    chain = [exc]
    while chain[-1].__cause__ is not None and len(chain) < 10:
        chain.append(chain[-1].__cause__)
    text = summarize(exc) + (f" (cause: {summarize(chain[-1])})" if len(chain) > 1 else "")
    for error in chain:
        for pattern in _OP_PATTERNS:
            match = re.search(pattern, str(error))
            if match:
                return f"unsupported operator {match.group(1).strip()}: {text}"
    return text


def map_native(
    specs: tuple[TensorSpec, ...] | tuple[str, ...], native: list[str], keys: tuple[str, ...] = ()
) -> dict[str, str]:
    """Map manifest names to an artifact's names: by the source's own output ``keys`` when the artifact
    uses them (converters name a returned dict's outputs by its keys, listed sorted), identical when the
    names agree, else by order."""
    names = [s.name if isinstance(s, TensorSpec) else s for s in specs]
    if keys and len(keys) == len(names) and sorted(keys) == sorted(native):
        return {name: key for name, key in zip(names, keys, strict=True) if name != key}
    if set(names) == set(native):
        return {}
    if len(names) != len(native):
        raise ConversionError(f"the artifact has tensors {native}, expected {len(names)}: {names}")
    from modelport.exporters.tf_source import natural_key

    return dict(zip(names, sorted(native, key=natural_key), strict=True))


def run_tool(args: list[str], what: str, timeout: float = 900) -> str:
    """Run a converter CLI (``python -m ...``) as a subprocess; its errors become ``ConversionError``."""
    try:
        done = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise ConversionError(f"{what} timed out after {timeout:.0f}s") from None
    if done.returncode < 0:
        raise ConversionError(f"{what} crashed ({signal.Signals(-done.returncode).name}); other variants go on")
    if done.returncode != 0:
        output = (done.stderr or done.stdout).strip().splitlines()
        tail = ([ln for ln in output if "error" in ln.lower()] or output or ["no output"])[-1]
        raise ConversionError(f"{what} failed: {describe_failure(RuntimeError(tail))}")
    return done.stdout + done.stderr


def frameworks(*modules: str) -> dict[str, str]:
    """Versions of the named, already-imported modules for the manifest's platform record."""
    versions: dict[str, str] = {}
    for name in modules:
        module: Any = sys.modules.get(name)
        if module is not None:
            versions[name] = str(getattr(module, "__version__", "unknown"))
    return versions
