"""TensorFlow/Keras converters: SavedModel (TF Serving layout), TFLite, ONNX (tf2onnx)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from modelport.export.artifact import ARTIFACT_FILES, Artifact, ConvertContext, frameworks, map_native, run_tool
from modelport.runtimes.base import import_framework
from modelport.runtimes.savedmodel import SERVING_SIGNATURE

__all__ = ["savedmodel_native_names", "tflite_artifact", "to_onnx", "to_savedmodel", "to_tflite"]


def to_savedmodel(ctx: ConvertContext, _: str) -> Artifact:
    """Write a SavedModel whose ``serving_default`` signature takes the source's inputs."""
    tf = import_framework("tensorflow", "tf")
    keras = import_framework("keras", "tf")
    path = ctx.workdir / "savedmodel"
    if path.exists():
        shutil.rmtree(path)
    source = ctx.source
    if source.kind == "savedmodel":
        shutil.copytree(source.location, path)
    elif isinstance(source.model, keras.Model):
        source.model.export(str(path), format="tf_saved_model", verbose=False)
    else:
        signature = getattr(source, "signature", None)
        tf.saved_model.save(source.model, str(path), signatures={SERVING_SIGNATURE: signature})
    native = savedmodel_native_names(ctx, path)
    return Artifact(path, source.inputs, native, frameworks("tensorflow", "keras"))


def savedmodel_native_names(ctx: ConvertContext, path: Path) -> dict[str, str]:
    """Map the source's tensor names onto the saved ``serving_default`` signature's keys."""
    tf = import_framework("tensorflow", "tf")
    signature = tf.saved_model.load(str(path)).signatures[SERVING_SIGNATURE]
    inputs = list(signature.structured_input_signature[1])
    outputs = list(signature.structured_outputs)
    return {**map_native(ctx.source.inputs, inputs), **map_native(ctx.source.output_names, outputs)}


def to_tflite(ctx: ConvertContext, _: str) -> Artifact:
    """Float32 TFLite from the SavedModel, builtin ops only (what LiteRT runs everywhere)."""
    return tflite_artifact(ctx, "tflite", lambda converter: None)


def tflite_artifact(ctx: ConvertContext, name: str, configure: Any) -> Artifact:
    """Convert the SavedModel with ``configure(converter)`` applied, into ``workdir/name``."""
    tf = import_framework("tensorflow", "tf")
    saved = ctx.base("savedmodel")
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved.path), signature_keys=[SERVING_SIGNATURE])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    configure(converter)
    flatbuffer = converter.convert()
    path = ctx.subdir(name) / ARTIFACT_FILES["tflite"]
    path.write_bytes(flatbuffer)
    return Artifact(path, ctx.source.inputs, tflite_native_names(ctx, path), frameworks("tensorflow"))


def tflite_native_names(ctx: ConvertContext, path: Path) -> dict[str, str]:
    """Map the source's tensor names onto the TFLite signature runner's keys."""
    litert = import_framework("ai_edge_litert.interpreter", "tflite")
    signature = litert.Interpreter(model_path=str(path)).get_signature_list()[SERVING_SIGNATURE]
    return {
        **map_native(ctx.source.inputs, signature["inputs"]),
        **map_native(ctx.source.output_names, signature["outputs"]),
    }


def to_onnx(ctx: ConvertContext, _: str) -> Artifact:
    """tf2onnx on the SavedModel's serving signature, run as a subprocess."""
    saved = ctx.base("savedmodel")
    path = ctx.subdir("onnx") / ARTIFACT_FILES["onnx"]
    args = [
        "-m",
        "tf2onnx.convert",
        "--saved-model",
        str(saved.path),
        "--signature_def",
        SERVING_SIGNATURE,
        "--opset",
        str(min(ctx.options.opset, 18)),
        "--output",
        str(path),
    ]
    run_tool(args, "tf2onnx")
    onnx = import_framework("onnx", "tf")
    graph = onnx.load(str(path), load_external_data=False).graph
    native = {
        **map_native(ctx.source.inputs, [i.name for i in graph.input]),
        **map_native(ctx.source.output_names, [o.name for o in graph.output]),
    }
    versions = {**frameworks("tensorflow"), "opset": str(min(ctx.options.opset, 18)), "converter": "tf2onnx"}
    return Artifact(path, ctx.source.inputs, native, versions)
