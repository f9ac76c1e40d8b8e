"""TensorFlow sources: Keras models (``.keras``/objects), SavedModel directories, ``tf.Module``."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from modelport.errors import SourceError, SpecError, summarize
from modelport.exporters.options import ExportOptions
from modelport.exporters.source_model import LoadedModel, check_input_specs, failed_inputs, path_sha256
from modelport.exporters.tf_examples import example_samples, parses_examples
from modelport.golden import random_inputs
from modelport.manifest import TensorSpec
from modelport.runtimes.base import Arrays, import_framework
from modelport.runtimes.savedmodel import SERVING_SIGNATURE

__all__ = ["TFSource", "load_tf_path", "natural_key", "recorded_inputs", "wrap_tf_object"]


@dataclass
class TFSource(LoadedModel):
    """A Keras model or a SavedModel signature, called with inputs keyed by name."""

    framework: Literal["torch", "tf", "onnx"] = "tf"
    signature: Any = None

    def predict(self, inputs: Arrays) -> Arrays:
        tf = import_framework("tensorflow", "tf")
        try:
            if self.signature is not None:
                result = self.signature(**{s.name: tf.constant(inputs[s.name]) for s in self.inputs})
                values = [result[k] for k in sorted(result, key=natural_key)]
            else:
                out = self.call_keras(inputs)
                values = [out[k] for k in self.output_keys or sorted(out)] if isinstance(out, dict) else out
        except Exception as exc:
            raise SourceError(
                f"the source model failed on inputs {failed_inputs(inputs, self.inputs)}: {summarize(exc)}"
            ) from exc
        arrays = [np.asarray(v) for v in values]
        if len(arrays) != len(self.output_names):
            raise SpecError(f"the model returns {len(arrays)} outputs but {len(self.output_names)} names are known")
        return dict(zip(self.output_names, arrays, strict=True))

    def call_keras(self, inputs: Arrays) -> dict[str, Any] | list[Any]:
        """Call the Keras model (one input: the tensor; several: a list, or a dict for a model built on a dict
        of inputs, whose keys need not be the inputs' names); a dict result keeps its keys."""
        structure = _structure(self.model, "input")
        if isinstance(structure, dict):
            out = self.model({k: inputs[_clean(t.name)] for k, t in structure.items()}, training=False)
        else:
            args = [inputs[s.name] for s in self.inputs]
            out = self.model(args if len(args) > 1 else args[0], training=False)
        if isinstance(out, dict):
            return dict(out)
        return list(out) if isinstance(out, list | tuple) else [out]


def _vocabulary(model: Any) -> tuple[str, ...]:
    """The words of the model's StringLookup and TextVectorization layers (nested models included), so that golden
    string inputs are not all out of vocabulary (every row would get the same answer, and parity would say little)."""
    keras = import_framework("keras", "tf")
    kinds = (keras.layers.StringLookup, keras.layers.TextVectorization)
    words: dict[str, None] = {}
    for layer in _nested_layers(model):
        if isinstance(layer, kinds):
            vocabulary = layer.get_vocabulary()
            words.update((w.decode() if isinstance(w, bytes) else str(w), None) for w in vocabulary)
    return tuple(w for w in words if w and w not in ("[UNK]", "[MASK]"))


def _nested_layers(model: Any) -> Iterator[Any]:
    for layer in getattr(model, "layers", ()):
        yield layer
        yield from _nested_layers(layer)


def load_tf_path(path: Path, options: ExportOptions) -> TFSource:
    """Load a ``.keras``/``.h5`` file or a SavedModel directory."""
    if path.is_dir():
        if not (path / "saved_model.pb").exists():
            raise SourceError(f"{path} is a directory but not a SavedModel (no saved_model.pb)")
        tf = import_framework("tensorflow", "tf")
        try:
            loaded = tf.saved_model.load(str(path))
        except Exception as exc:
            raise SourceError(f"cannot load SavedModel {path}: {summarize(exc)}") from exc
        _refuse_composite(path, loaded)
        source = _from_signature(loaded, options, "savedmodel", str(path))
    else:
        keras = import_framework("keras", "tf")
        try:
            model = keras.models.load_model(str(path), compile=False)
        except Exception as exc:
            raise SourceError(f"cannot load Keras model {path}: {summarize(exc)}{_custom_hint(exc)}") from exc
        source = _from_keras(model, options, str(path))
    source.sha256 = path_sha256(path)
    return source


def wrap_tf_object(obj: Any, options: ExportOptions, location: str) -> TFSource:
    """Wrap a Keras model (functional, Sequential or subclassed), a loaded SavedModel or a ``tf.Module``."""
    keras = import_framework("keras", "tf")
    if isinstance(obj, keras.Model):
        return _from_keras(obj, options, location)
    if SERVING_SIGNATURE not in getattr(obj, "signatures", {}):
        call = getattr(obj, "__call__", None)  # noqa: B004 (a tf.function, not any callable)
        if call is None or not hasattr(call, "get_concrete_function") or not getattr(call, "input_signature", None):
            raise SourceError(
                "a tf.Module source needs a serving_default signature or a tf.function __call__ with input_signature"
            )
    return _from_signature(obj, options, "module", location)


def recorded_inputs(model: Any) -> list[Any]:
    """The symbolic inputs a Keras model records: a functional or built Sequential model's, else none."""
    try:
        return list(model.inputs or ())
    except AttributeError:  # subclassed models, and Sequential models built without an Input
        return []


def _from_keras(model: Any, options: ExportOptions, location: str) -> TFSource:
    # the batch dim is dynamic, as in the SavedModel Keras exports (a Sequential built by a call records its batch)
    found = tuple(
        TensorSpec(name=_clean(t.name), dtype=str(t.dtype), shape=(-1, *(_dim(d) for d in t.shape[1:])))
        for t in recorded_inputs(model)
    )
    if _named_by_keras(found, options.inputs) and not isinstance(_structure(model, "input"), dict):
        # Keras named them itself (a Sequential built without keras.Input): the flags name them, in order
        found = tuple(f.model_copy(update={"name": g.name}) for f, g in zip(found, options.inputs, strict=True))
    inputs = check_input_specs(options.inputs, found, location)
    if not inputs:
        raise SpecError(
            f"{location}: this Keras model ({type(model).__qualname__}) records no input shapes (a subclassed model, "
            "or a Sequential without keras.Input); pass --input NAME:DTYPE:SHAPE, e.g. --input x:float32:-1x4 "
            "(inputs=[...] in the Python API)"
        )
    outputs = _structure(model, "output")
    keys = tuple(str(k) for k in outputs) if isinstance(outputs, dict) else ()
    names = options.output_names or keys or _keras_output_names(model, inputs, options)
    return TFSource(
        model,
        "keras",
        location,
        inputs,
        tuple(names),
        output_keys=keys,
        vocabulary=_vocabulary(model),
        compute_dtype=_compute_dtype(model),
    )


def _compute_dtype(model: Any) -> str:
    """The reduced float type a Keras model or one of its layers computes in (a ``mixed_float16`` policy), else
    float32: its outputs may still be float32 (a final float32 layer), its values carry float16's rounding."""
    dtypes = {str(getattr(getattr(m, "dtype_policy", None), "compute_dtype", "")) for m in (model, *model.layers)}
    reduced = sorted(dtypes & {"float16", "bfloat16"})
    return reduced[0] if reduced else "float32"


_KERAS_NAMES = re.compile(r"(?:keras_tensor|input_layer)(?:_\d+)?")


def _named_by_keras(found: tuple[TensorSpec, ...], given: tuple[TensorSpec, ...]) -> bool:
    """Whether ``found``'s names are ones Keras made up (``keras_tensor_3``: no ``keras.Input(name=...)``) and
    ``given`` names as many inputs otherwise."""
    return (
        bool(found)
        and len(found) == len(given)
        and all(_KERAS_NAMES.fullmatch(f.name) for f in found)
        and [f.name for f in found] != [g.name for g in given]
    )


def _structure(model: Any, side: Literal["input", "output"]) -> Any:
    """A functional model's ``input``/``output`` structure (a dict when it was built on one); None if it has none."""
    try:
        return getattr(model, side)
    except (AttributeError, ValueError):  # subclassed models, Sequential models never built
        return None


def _keras_output_names(model: Any, inputs: tuple[TensorSpec, ...], options: ExportOptions) -> tuple[str, ...]:
    """Functional: its output layers' names; Sequential: its last layer's; subclassed: what a call returns.
    A dict of outputs is in Keras' order, sorted by key (``output_names`` and the SavedModel signature agree)."""
    keras = import_framework("keras", "tf")
    names = getattr(model, "output_names", None)
    if names:
        return tuple(names)
    if isinstance(model, keras.Sequential) and model.layers:
        return (model.layers[-1].name,)
    probe = TFSource(model, "keras", "", inputs, ())
    sample = random_inputs(inputs, 1, options.dynamic_sizes[0], np.random.default_rng(options.seed))
    try:
        values = probe.call_keras(sample)
    except Exception as exc:
        raise SourceError(f"the source model failed on inputs {_describe(inputs)}: {summarize(exc)}") from exc
    return tuple(sorted(values)) if isinstance(values, dict) else tuple(f"output_{i}" for i in range(len(values)))


def _from_signature(obj: Any, options: ExportOptions, kind: str, location: str) -> TFSource:
    signatures = getattr(obj, "signatures", {})
    signature = signatures.get(SERVING_SIGNATURE) if signatures else None
    if signature is None:
        signature = obj.__call__.get_concrete_function()
    specs = signature.structured_input_signature[1]
    if not specs:
        args = signature.structured_input_signature[0]
        _refuse_composite_specs(location, args)
        specs = {s.name: s for s in args}
    _refuse_composite_specs(location, tuple(specs.values()))
    given = {s.name: s for s in options.inputs}
    parsed = parses_examples(signature) and sum(s.dtype == "string" for s in specs.values()) == 1
    found = tuple(_signature_input(name, spec, given, location, parsed) for name, spec in sorted(specs.items()))
    inputs = check_input_specs(options.inputs, found, location)
    outputs = sorted(signature.structured_outputs, key=natural_key)
    names = options.output_names or tuple(outputs)
    examples = example_samples(signature, options.seed) if parsed else ()
    samples = {s.name: examples for s in inputs if s.dtype == "string" and examples}
    return TFSource(obj, kind, location, inputs, tuple(names), string_samples=samples, signature=signature)


_COMPOSITE = re.compile(r'type_spec_class_name: "(Ragged|Sparse)TensorSpec"')
_COMPONENTS = {"Ragged": "the values and row splits", "Sparse": "the indices, values and dense shape"}
_COMPOSITE_SPECS = ("RaggedTensorSpec", "SparseTensorSpec")
_DENSE_ONLY = (
    "modelport exports and serves dense tensors only (random components are no valid tensor, and a batch of requests "
    "would join their components wrongly): export a signature of dense tensors instead, e.g. a padded tensor and its "
    "lengths (tf.RaggedTensor.from_tensor(x, lengths=n) inside) or a SparseTensor's dense tensor"
)


def _refuse_composite(path: Path, loaded: Any) -> None:
    """A serving signature over a RaggedTensor or SparseTensor, which a SavedModel flattens into its component
    tensors (``x``: the values, ``x_1``: the row splits...): random golden components are no valid tensor ("Graph
    execution error"), and a batch of requests would concatenate row splits. Say so, and what to export instead."""
    from tensorflow.core.protobuf import saved_model_pb2

    signature = getattr(loaded, "signatures", {}).get(SERVING_SIGNATURE)
    names = set(signature.structured_input_signature[1]) if signature is not None else set()
    flattened = sorted(n for n in names if f"{n}_1" in names)
    if not flattened:
        return
    model = saved_model_pb2.SavedModel.FromString((path / "saved_model.pb").read_bytes())
    functions = [f for g in model.meta_graphs for f in g.object_graph_def.concrete_functions.values()]
    found = {m.group(1) for f in functions for m in _COMPOSITE.finditer(str(f.canonicalized_input_signature))}
    if not found:
        return
    kind = " or ".join(f"a {k}Tensor" for k in sorted(found))
    components = ", ".join(sorted(n for n in names if n == flattened[0] or n.startswith(f"{flattened[0]}_")))
    parts = " or ".join(_COMPONENTS[k] for k in sorted(found))
    raise SourceError(
        f"{path}: its {SERVING_SIGNATURE} signature takes {kind}, which the SavedModel flattens into its component "
        f"tensors ({components}: {parts}); {_DENSE_ONLY}"
    )


def _refuse_composite_specs(location: str, specs: Any) -> None:
    """A tf.function signature (of a tf.Module object) that takes a RaggedTensor or SparseTensor: said as for a
    SavedModel, where it failed with "'RaggedTensorSpec' object has no attribute 'name'"."""
    composite = sorted({type(s).__name__ for s in specs if type(s).__name__ in _COMPOSITE_SPECS})
    if composite:
        kind = " or ".join(f"a {name.removesuffix('Spec')}" for name in composite)
        raise SourceError(f"{location}: its input signature takes {kind}; {_DENSE_ONLY}")


def _signature_input(name: str, spec: Any, given: dict[str, TensorSpec], location: str, parsed: bool) -> TensorSpec:
    """A signature input as a spec; one of unknown rank (a TF1 placeholder without a shape) takes its shape from
    ``--input``, or, the serialized tf.Example protos a signature parses (``parsed``), is a batch of them."""
    if spec.shape.rank is None:
        if parsed and spec.dtype.name == "string" and name not in given:
            return TensorSpec(name=name, dtype="string", shape=(-1,))
        if name not in given:
            raise SpecError(
                f"{location}: input {name!r} ({spec.dtype.name}) has an unknown rank in the signature; pass its shape "
                f"with --input, e.g. --input {name}:{spec.dtype.name}:-1"
            )
        return given[name]
    return TensorSpec(name=name, dtype=spec.dtype.name, shape=tuple(-1 if d is None else int(d) for d in spec.shape))


def natural_key(name: str) -> tuple[Any, ...]:
    """Sort ``output_2`` before ``output_10``."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))


def _clean(name: str) -> str:
    return name.split(":")[0]


def _describe(specs: tuple[TensorSpec, ...]) -> str:
    return ", ".join(s.describe() for s in specs)


def _custom_hint(exc: Exception) -> str:
    if "Could not locate" not in str(exc):
        return ""
    return (
        "; a custom (subclassed) model or layer is rebuilt from its Python code: export it from a factory "
        "that returns the model instead, e.g. SOURCE net.py:make_model"
    )


def _dim(d: Any) -> int:
    return -1 if d is None else int(d)
