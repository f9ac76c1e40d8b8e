"""TensorFlow/Keras converters: SavedModel (TF Serving layout), TFLite, ONNX (tf2onnx)."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from modelport.errors import ConversionError
from modelport.exporters.artifact import ARTIFACT_FILES, Artifact, ConvertContext, frameworks, map_native, run_tool
from modelport.exporters.source_model import SourceModel
from modelport.exporters.tf_source import recorded_inputs
from modelport.exporters.tflite_limits import float16_failure
from modelport.exporters.tflite_recipe import TFLiteRecipe, convert, convert_isolated
from modelport.exporters.tflite_shapes import chosen_shapes, pinned_notes, with_followers
from modelport.manifest import TensorSpec
from modelport.runtimes.base import import_framework
from modelport.runtimes.savedmodel import SERVING_SIGNATURE
from modelport.tensors import Shape

__all__ = [
    "keras_input_signature",
    "savedmodel_native_names",
    "tflite_artifact",
    "to_onnx",
    "to_savedmodel",
    "to_tflite",
]


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
        signature = keras_input_signature(source)
        source.model.export(str(path), format="tf_saved_model", verbose=False, input_signature=signature)
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
    return {
        **map_native(ctx.source.inputs, inputs),
        **map_native(ctx.source.output_names, outputs, ctx.source.output_keys),
    }


def to_tflite(ctx: ConvertContext, _: str) -> Artifact:
    """Float32 TFLite from the SavedModel, builtin ops only (what LiteRT runs everywhere)."""
    return tflite_artifact(ctx, "tflite", TFLiteRecipe())


def tflite_artifact(ctx: ConvertContext, name: str, recipe: TFLiteRecipe) -> Artifact:
    """Convert the SavedModel following ``recipe``, into ``workdir/name``.

    Inputs keep their dynamic dims unless the user chose static shapes (``--tflite-shape``): the
    Keras source is then re-exported with them. TFLite lowers a recurrent layer's while loop (its
    TensorLists) only when the per-step element shape ``[batch, units]`` is static; for such a
    Keras model the batch is fixed to the first ``--batch-sizes`` value (the other dims stay
    dynamic), as the PyTorch TFLite export does, and the report row says so.
    """
    import_framework("tensorflow", "tf")
    chosen = with_followers(ctx.source.inputs, ctx.options.tflite_shapes)
    inputs, platform = chosen_shapes(ctx.source.inputs, chosen), frameworks("tensorflow")
    out = ctx.subdir(name) / ARTIFACT_FILES["tflite"]
    saved = _static_savedmodel(ctx, chosen, None) if chosen else ctx.base("savedmodel").path
    try:
        flatbuffer = _convert_tflite(saved, recipe, out)
    except Exception as exc:
        if _STATIC_ELEMENT_SHAPE not in str(exc) or ctx.source.kind != "keras":
            half = float16_failure(exc, ctx.source.compute_dtype, "the model built under the float32 policy")
            if half is None:
                raise
            raise half from exc
        batch = ctx.options.batch_sizes[0]
        flatbuffer = _convert_tflite(_static_savedmodel(ctx, chosen, batch), recipe, out)
        inputs = tuple(_with_batch(s, batch) for s in inputs)
        platform = {**platform, "static_batch": str(batch)}
    out.write_bytes(flatbuffer)
    notes = pinned_notes(ctx.source.inputs, inputs, ctx.options.tflite_shapes)
    return Artifact(out, inputs, tflite_native_names(ctx, out), platform, notes)


_STATIC_ELEMENT_SHAPE = "requires element_shape to be static"


def _convert_tflite(saved: Path, recipe: TFLiteRecipe, out: Path) -> bytes:
    return convert_isolated(saved, recipe, out) if recipe.isolated else convert(saved, recipe)


def _static_savedmodel(ctx: ConvertContext, chosen: Mapping[str, Shape], batch: int | None) -> Path:
    """The Keras source re-exported with the chosen input shapes and/or a fixed batch (once per export)."""
    path = ctx.workdir / ("savedmodel-static" + (f"-batch{batch}" if batch else ""))
    if not path.exists():
        signature = keras_input_signature(ctx.source, chosen, batch)
        ctx.source.model.export(str(path), format="tf_saved_model", verbose=False, input_signature=signature)
    return path


def keras_input_signature(
    source: SourceModel, fixed: Mapping[str, Shape] | None = None, batch: int | None = None
) -> Any:
    """The signature a Keras model is exported with: some inputs' shapes or the batch dim optionally fixed.

    Functional and Sequential models keep their own input structure (Keras' own signature);
    a subclassed model records none, so its signature comes from the source's input specs,
    shaped like its calls: one tensor, or a list of them.
    """
    tf = import_framework("tensorflow", "tf")
    if recorded_inputs(source.model):
        from keras.src.export.export_utils import get_input_signature

        structure = get_input_signature(source.model)
    else:
        specs = [tf.TensorSpec([None if d == -1 else d for d in s.shape], s.dtype, name=s.name) for s in source.inputs]
        structure = [specs[0]] if len(specs) == 1 else [specs]
    fixed = fixed or {}

    def shape(spec: Any) -> Any:
        if spec.name in fixed:
            return fixed[spec.name]
        return (batch, *spec.shape[1:]) if batch else spec.shape

    return tf.nest.map_structure(lambda s: tf.TensorSpec(shape(s), s.dtype, name=s.name), structure)


def _with_batch(spec: TensorSpec, batch: int) -> TensorSpec:
    return spec.model_copy(update={"shape": (batch, *spec.shape[1:])}) if spec.shape[:1] == (-1,) else spec


def tflite_native_names(ctx: ConvertContext, path: Path) -> dict[str, str]:
    """Map the source's tensor names onto the TFLite signature runner's keys."""
    litert = import_framework("ai_edge_litert.interpreter", "tflite")
    signature = litert.Interpreter(model_path=str(path)).get_signature_list()[SERVING_SIGNATURE]
    return {
        **map_native(ctx.source.inputs, signature["inputs"]),
        **map_native(ctx.source.output_names, signature["outputs"], ctx.source.output_keys),
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
    _repair_tf2onnx_graph(onnx, path)
    graph = onnx.load(str(path), load_external_data=False).graph
    native = {
        **map_native(ctx.source.inputs, [i.name for i in graph.input]),
        **map_native(ctx.source.output_names, [o.name for o in graph.output], ctx.source.output_keys),
    }
    versions = {**frameworks("tensorflow"), "opset": str(min(ctx.options.opset, 18)), "converter": "tf2onnx"}
    return Artifact(path, ctx.source.inputs, native, versions)


def _repair_tf2onnx_graph(onnx: Any, path: Path) -> None:
    """Translate ops tf2onnx copies into the ONNX graph untranslated; refuse any other unknown op.

    tf2onnx has no handler for ``Erfc`` (Keras' exact GELU) and, like for every op it cannot
    convert, still writes the model and exits 0: the model then fails to load in onnxruntime.
    """
    model = onnx.load(str(path))
    graphs = _graphs(model.graph)
    changed = False
    for graph in graphs:
        changed = _rewrite_erfc(onnx, graph) or changed
    unknown = sorted(
        {n.op_type for g in graphs for n in g.node if n.domain in ("", "ai.onnx") and not onnx.defs.has(n.op_type)}
    )
    if unknown:
        raise ConversionError(
            f"tf2onnx: unsupported operator {', '.join(unknown)} (left untranslated in the ONNX graph)"
        )
    if changed:
        onnx.save(model, str(path))


def _graphs(graph: Any) -> list[Any]:
    """``graph`` and every subgraph (loop and branch bodies) nested in it."""
    found = [graph]
    for node in graph.node:
        for attribute in node.attribute:
            for sub in [attribute.g] if attribute.HasField("g") else list(attribute.graphs):
                found += _graphs(sub)
    return found


def _rewrite_erfc(onnx: Any, graph: Any) -> bool:
    """``Erfc(x)`` -> ``CastLike(1, x) - Erf(x)`` in place; True when any node was rewritten."""
    nodes, rewrote = [], False
    for node in graph.node:
        if node.op_type != "Erfc" or node.domain not in ("", "ai.onnx"):
            nodes.append(node)
            continue
        x, y, base = node.input[0], node.output[0], node.output[0] + "/erfc"
        one = onnx.helper.make_tensor(base + "/one", onnx.TensorProto.FLOAT, [], [1.0])
        nodes += [
            onnx.helper.make_node("Erf", [x], [base + "/erf"], name=base + "/Erf"),
            onnx.helper.make_node("Constant", [], [base + "/one"], name=base + "/One", value=one),
            onnx.helper.make_node("CastLike", [base + "/one", x], [base + "/one_cast"], name=base + "/CastLike"),
            onnx.helper.make_node("Sub", [base + "/one_cast", base + "/erf"], [y], name=base + "/Sub"),
        ]
        rewrote = True
    if rewrote:
        del graph.node[:]
        graph.node.extend(nodes)
    return rewrote
