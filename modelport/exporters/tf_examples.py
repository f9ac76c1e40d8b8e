"""Golden inputs for a SavedModel signature that parses serialized tf.Example protos (TF Serving's classify and
regress signatures, ``mnist_saved_model.py``'s ``serving_default``): random words do not parse, so the examples
are made from the features its ``ParseExampleV2`` op reads (dense keys with their dtypes and shapes, sparse keys).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from modelport.runtimes.base import import_framework

__all__ = ["example_samples", "parses_examples"]

_SAMPLES = 16
Feature = tuple[str, str, int]  # key, dtype name (float32, int64, string), number of values


def parses_examples(signature: Any) -> bool:
    """Whether the signature's graph parses a placeholder's strings as tf.Example protos."""
    return bool(_parse_ops(signature))


def example_samples(signature: Any, seed: int) -> tuple[bytes, ...]:
    """Serialized tf.Example protos with every feature the signature parses, random values (none ending in a zero
    byte: golden files store strings as fixed-width bytes, which drop trailing NULs); empty if it parses none."""
    features = [f for op in _parse_ops(signature) for f in _features(op)]
    if not features:
        return ()
    rng = np.random.default_rng(seed)
    return tuple(_example(features, rng) for _ in range(_SAMPLES))


def _parse_ops(signature: Any) -> list[Any]:
    graph = getattr(signature, "graph", None)
    if graph is None:
        return []
    return [op for op in graph.get_operations() if op.type == "ParseExampleV2" and _placeholder_fed(op.inputs[0])]


def _placeholder_fed(tensor: Any) -> bool:
    op = tensor.op
    while op.type == "Identity":
        op = op.inputs[0].op
    return bool(op.type == "Placeholder")


def _features(op: Any) -> list[Feature]:
    tf = import_framework("tensorflow", "tf")
    dense, sparse = _keys(tf, op.inputs[3]), _keys(tf, op.inputs[2])
    shapes = [[d.size for d in s.dim] for s in op.get_attr("dense_shapes")]
    found = [
        (key, dtype.name, math.prod(max(d, 1) for d in shape))
        for key, dtype, shape in zip(dense, op.get_attr("Tdense"), shapes, strict=True)
    ]
    return found + [(key, dtype.name, 2) for key, dtype in zip(sparse, op.get_attr("sparse_types"), strict=True)]


def _keys(tf: Any, tensor: Any) -> list[str]:
    if tensor.op.type != "Const":
        return []
    return [
        k.decode() if isinstance(k, bytes) else str(k) for k in tf.make_ndarray(tensor.op.get_attr("value")).ravel()
    ]


def _example(features: list[Feature], rng: np.random.Generator) -> bytes:
    from tensorflow.core.example import example_pb2

    example = example_pb2.Example()
    for key, dtype, count in features:
        feature = example.features.feature[key]
        if dtype == "string":
            feature.bytes_list.value.extend(f"s{k}".encode() for k in rng.integers(0, 100, count))
        elif dtype.startswith("int"):
            feature.int64_list.value.extend(rng.integers(1, 10, count).tolist())
        else:
            feature.float_list.value.extend(rng.uniform(0.05, 1.0, count).astype(np.float32).tolist())
    return bytes(example.SerializeToString())
