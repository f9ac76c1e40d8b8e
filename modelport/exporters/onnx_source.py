"""ONNX files as a source: specs read from the graph, onnxruntime as the reference.

An ONNX source exports to ``onnx`` (the file itself, validated like any artifact), ``ort`` and
the ONNX quantizations; it is how ``modelport import-mar`` brings in archives whose serialized
file is ONNX, and how a user with only an ``.onnx`` file gets golden vectors and a manifest.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from modelport.errors import SourceError, summarize
from modelport.exporters.artifact import ARTIFACT_FILES, Artifact, ConvertContext, frameworks
from modelport.exporters.options import ExportOptions
from modelport.exporters.source_model import LoadedModel, check_input_specs, failed_inputs, path_sha256
from modelport.manifest import TensorSpec
from modelport.runtimes.base import Arrays, import_framework
from modelport.runtimes.onnx import from_ort_strings, to_ort_strings
from modelport.tensors import lookup_dtype

__all__ = ["OnnxSource", "copy_onnx", "load_onnx_file"]


@dataclass
class OnnxSource(LoadedModel):
    """An onnxruntime session over the source file; inputs and outputs by their graph names."""

    framework: Literal["torch", "tf", "onnx"] = "onnx"

    def predict(self, inputs: Arrays) -> Arrays:
        feed = {
            s.name: to_ort_strings(s.name, inputs[s.name]) if s.dtype == "string" else inputs[s.name]
            for s in self.inputs
        }
        try:
            values = self.model.run(list(self.output_names), feed)
        except Exception as exc:
            raise SourceError(
                f"the ONNX source failed on inputs {failed_inputs(inputs, self.inputs)}: {summarize(exc)}"
            ) from exc
        return {
            n: from_ort_strings(v) if v.dtype == object else v for n, v in zip(self.output_names, values, strict=True)
        }


def load_onnx_file(path: Path, options: ExportOptions) -> OnnxSource:
    """Open ``path`` with onnxruntime; ``--input`` flags may pin dynamic dims, names must agree."""
    ort = import_framework("onnxruntime", "cpu")
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise SourceError(f"cannot load {path} as ONNX: {summarize(exc)}") from exc
    found = tuple(_spec(arg) for arg in session.get_inputs())
    inputs = check_input_specs(options.inputs, found, str(path))
    outputs = tuple(arg.name for arg in session.get_outputs())
    if options.output_names and tuple(options.output_names) != outputs:
        raise SourceError(f"{path} has outputs {list(outputs)}: ONNX sources keep their graph's output names")
    return OnnxSource(session, "onnx", str(path), inputs, outputs, path_sha256(path))


def copy_onnx(ctx: ConvertContext, _: str) -> Artifact:
    """The source file itself is the ``onnx`` artifact (validated against the source like any other)."""
    path = ctx.subdir("onnx") / ARTIFACT_FILES["onnx"]
    shutil.copyfile(ctx.source.location, path)
    import_framework("onnxruntime", "cpu")
    return Artifact(path, ctx.source.inputs, {}, frameworks("onnxruntime"))


def _spec(arg: Any) -> TensorSpec:
    shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in arg.shape)
    try:
        dtype = lookup_dtype(arg.type).name
    except Exception as exc:
        raise SourceError(f"ONNX input {arg.name!r} has type {arg.type}, which modelport does not serve") from exc
    return TensorSpec(name=arg.name, dtype=dtype, shape=shape)
