"""TF Serving's Classify and Regress over a SavedModel's signatures, for its REST and gRPC adapters.

The examples (tf.Example protos, serialized; the context's features merged into each, as TF Serving merges an
``ExampleListWithContext``) are fed to the signature's one input (``inputs``); its ``classes``/``scores`` become
one list of ``(label, score)`` per example, its ``outputs`` one value per example. Signatures are looked up and
checked as TF Serving checks them (``classifier.cc``, ``regressor.cc``), in its words.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelport.errors import InvalidArgumentError, NotFoundError
from modelport.serving.dataplane import DataPlane
from modelport.serving.types import InferRequest, ModelMetadata, Signature, VersionStatus

__all__ = [
    "CLASSIFY",
    "PREDICT",
    "REGRESS",
    "Answer",
    "Classes",
    "classification_signature",
    "classify",
    "examples_from_json",
    "find_signature",
    "merged_examples",
    "regress",
    "regression_signature",
    "servable_metadata",
    "served_versions",
    "signature_name",
]

PREDICT = "tensorflow/serving/predict"
CLASSIFY = "tensorflow/serving/classify"
REGRESS = "tensorflow/serving/regress"
_DEFAULT = "serving_default"

Classes = list[list[tuple[bytes | None, float | None]]]
"""Per example, its classes as ``(label, score)``; None where the signature has no ``classes`` / ``scores``."""


@dataclass(frozen=True)
class Answer:
    """What Classify or Regress answered: the version that ran it, the signature's name, the results."""

    version: str
    signature: str
    results: Any


def served_versions(plane: DataPlane, model: str) -> list[VersionStatus]:
    """A model's versions for GetModelStatus; a model not served is TF Serving's NOT_FOUND in its words."""
    try:
        return plane.model_versions(model)
    except NotFoundError:
        raise NotFoundError(f"Could not find any versions of model {model}") from None


def servable_metadata(plane: DataPlane, model: str, version: str | None, serving: bool = True) -> ModelMetadata:
    """The metadata of the version a Predict, Classify, Regress or GetModelMetadata names (``serving``: the
    data plane's per-version copy, for requests); a model or version not served is TF Serving's NOT_FOUND, the
    DebugString of its ServableRequest (clients and probes look for it: ``Latest(m)``, ``Specific(m, 7)``)."""
    try:
        return plane.serving_metadata(model, version) if serving else plane.model_metadata(model, version, True)
    except NotFoundError:
        request = f"Latest({model})" if version is None else f"Specific({model}, {version})"
        raise NotFoundError(f"Servable not found for request: {request}") from None


def find_signature(plane: DataPlane, model: str, version: str | None, name: str) -> Signature:
    """The signature ``name`` (empty: ``serving_default``) of a ready version, as TF Serving finds it. A model that
    is not a SavedModel has one predict signature, ``serving_default``."""
    name = name or _DEFAULT
    meta = servable_metadata(plane, model, version)
    found = {s.name: s for s in plane.signatures(model, version)}
    if not found:
        found = {_DEFAULT: Signature(_DEFAULT, PREDICT, meta.inputs, meta.outputs)}
    if name not in found:
        raise InvalidArgumentError(f"No signature was found with the name: {name}")
    return found[name]


def classification_signature(plane: DataPlane, model: str, version: str | None, name: str) -> Signature:
    """The classification signature ``name`` names, checked as TF Serving checks it (before any example is read)."""
    signature = _checked(find_signature(plane, model, version, name), CLASSIFY, "classification")
    if not any(t.name in ("classes", "scores") for t in signature.outputs):
        raise InvalidArgumentError(
            'Expected classification signature outputs to contain at least one of "classes" or "scores". '
            f"Signature was: {signature.name}"
        )
    return signature


def regression_signature(plane: DataPlane, model: str, version: str | None, name: str) -> Signature:
    """The regression signature ``name`` names, checked as TF Serving checks it."""
    signature = _checked(find_signature(plane, model, version, name), REGRESS, "regression")
    if not any(t.name == "outputs" for t in signature.outputs):
        raise InvalidArgumentError(f"No regression outputs found in SignatureDef: {signature.name}")
    return signature


async def classify(
    plane: DataPlane, model: str, version: str | None, signature: Signature, examples: list[bytes], protocol: str
) -> Answer:
    """Classify: ``classes`` and/or ``scores`` of the signature, ``[examples, classes]`` each."""
    version_run, outputs = await _run(plane, model, version, signature, examples, protocol)
    classes, scores = outputs.get("classes"), outputs.get("scores")
    width = 0
    for key, value, kind in (("classes", classes, "OSU"), ("scores", scores, "f")):
        if value is None:
            continue
        if value.ndim != 2:
            raise InvalidArgumentError(f"Expected Tensor shape: [batch_size num_classes] but got {list(value.shape)}")
        if value.dtype.kind not in kind:
            raise InvalidArgumentError(f"Expected {key} Tensor of DT_{'STRING' if key == 'classes' else 'FLOAT'}")
        _batch(key, value, len(examples))
        if width and value.shape[1] != width:
            raise InvalidArgumentError(
                f"Tensors class and score should match in dim_size(1). Got {width} vs. {value.shape[1]}"
            )
        width = value.shape[1]
    results: Classes = [
        [
            (
                _label(classes[i, c]) if classes is not None else None,
                float(scores[i, c]) if scores is not None else None,
            )
            for c in range(width)
        ]
        for i in range(len(examples))
    ]
    return Answer(version_run, signature.name, results)


async def regress(
    plane: DataPlane, model: str, version: str | None, signature: Signature, examples: list[bytes], protocol: str
) -> Answer:
    """Regress: the signature's ``outputs``, one float per example (``[examples]`` or ``[examples, 1]``)."""
    version_run, outputs = await _run(plane, model, version, signature, examples, protocol)
    value = outputs["outputs"]
    if not (value.ndim == 1 or (value.ndim == 2 and value.shape[1] == 1)):
        raise InvalidArgumentError(
            f"Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got {list(value.shape)}"
        )
    if value.dtype.kind != "f":
        raise InvalidArgumentError(f"Expected output Tensor of DT_FLOAT. Got: {value.dtype.name}")
    _batch("outputs", value, len(examples))
    return Answer(version_run, signature.name, [float(v) for v in value.reshape(-1)])


def _checked(signature: Signature, method: str, kind: str) -> Signature:
    if signature.method_name != method:
        raise InvalidArgumentError(
            f"Expected {kind} signature method_name to be {method}. Was: {signature.method_name}"
        )
    if len(signature.inputs) != 1:
        raise InvalidArgumentError("Expected one input Tensor.")
    if signature.inputs[0].name != "inputs":
        raise InvalidArgumentError(f"No {kind} inputs found in SignatureDef: {signature.name}")
    return signature


async def _run(
    plane: DataPlane, model: str, version: str | None, signature: Signature, examples: list[bytes], protocol: str
) -> tuple[str, dict[str, np.ndarray[Any, Any]]]:
    if not examples:
        raise InvalidArgumentError("Input is empty.")
    feed = {"inputs": np.array(examples, dtype=object)}
    answer = await plane.infer(model, version, InferRequest(feed, signature=signature.name), protocol)
    return answer.model_version, answer.outputs


def _batch(key: str, value: np.ndarray[Any, Any], examples: int) -> None:
    if value.shape[0] != examples:
        raise InvalidArgumentError(f"Expected {key} output batch size of {examples}. Got: {value.shape[0]}")


def _label(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def merged_examples(context: bytes | None, examples: list[bytes]) -> list[bytes]:
    """Serialized examples, each with the serialized context before it: protobuf merges concatenated messages, so
    the example's own features win over the context's of the same name (TF Serving's ExampleListWithContext)."""
    return examples if context is None else [context + e for e in examples]


def signature_name(body: Any) -> str:
    """The ``signature_name`` of a REST ``:classify`` / ``:regress`` body (empty: the default)."""
    if not isinstance(body, dict):
        raise InvalidArgumentError("JSON Value: the request must be a JSON object with 'examples'")
    name = body.get("signature_name", "")
    if not isinstance(name, str):
        raise InvalidArgumentError("'signature_name' key must be a string value.")
    return name


def examples_from_json(body: dict[str, Any]) -> list[bytes]:
    """The serialized examples of a REST ``:classify`` / ``:regress`` body (checked by :func:`signature_name`):
    ``{"signature_name": ..., "context": {...}, "examples": [{...}, ...]}``."""
    if "examples" not in body:
        raise InvalidArgumentError("When method is classify, key 'examples' is expected and was not found")
    examples = body["examples"]
    if not isinstance(examples, list):
        raise InvalidArgumentError("Expecting 'examples' value to be an list/array")
    if not examples:
        raise InvalidArgumentError("'examples' value is an empty array")
    context = _example(body["context"]).SerializeToString() if "context" in body else None
    return merged_examples(context, [_example(e).SerializeToString() for e in examples])


def _example(value: Any) -> Any:
    """A JSON object as a tf.Example, each value (or list of values) one feature, typed as TF Serving types them."""
    from tensorflow.core.example import example_pb2  # TensorFlow is loaded: only SavedModels get here

    if not isinstance(value, dict):
        raise InvalidArgumentError(f"Example must be JSON object but got JSON {_json_type(value)}")
    example = example_pb2.Example()
    for name, content in value.items():
        feature = example.features.feature[name]
        for item in content if isinstance(content, list) else [content]:
            _add(feature, name, item)
    return example


def _add(feature: Any, name: str, value: Any) -> None:
    item: int | float | bytes
    if isinstance(value, bool):
        kind, item = "int64_list", int(value)
    elif isinstance(value, int):
        if not -(2**63) <= value < 2**63:
            raise InvalidArgumentError(f"Feature: {name} has uint64 element. Only int64 is supported.")
        kind, item = "int64_list", value
    elif isinstance(value, float):
        kind, item = "float_list", value
    elif isinstance(value, str):
        kind, item = "bytes_list", value.encode()
    elif isinstance(value, dict) and set(value) == {"b64"} and isinstance(value["b64"], str):
        kind, item = "bytes_list", _b64(value["b64"])
    else:
        raise InvalidArgumentError(f"Feature: {name} has element with unexpected JSON type: {_json_type(value)}")
    current = feature.WhichOneof("kind")
    if current not in (None, kind):
        raise InvalidArgumentError(
            f"Unexpected element type in feature: {name} expecting type: {current.removesuffix('_list')}"
        )
    getattr(feature, kind).value.append(item)


def _b64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidArgumentError(f"Unable to base64 decode: {text[:40]}") from None


def _json_type(value: Any) -> str:
    kinds = ((type(None), "null"), (bool, "bool"), (int, "int"), (float, "float"), (str, "string"), (list, "array"))
    return next((name for kind, name in kinds if isinstance(value, kind)), "object")
