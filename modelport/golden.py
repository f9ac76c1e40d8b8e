"""Golden inputs and the source's outputs on them: made at export, re-checked everywhere."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modelport.errors import InvalidArgumentError, NotFoundError, SpecError
from modelport.manifest import TensorSpec
from modelport.tensors import Arrays, lookup_dtype, shape_matches

__all__ = [
    "GOLDEN_FILE",
    "GoldenCase",
    "concrete_shape",
    "load_golden",
    "load_npz_inputs",
    "random_inputs",
    "save_golden",
    "take_rows",
]

GOLDEN_FILE = "golden.npz"


@dataclass(frozen=True)
class GoldenCase:
    """One golden batch: inputs and the source model's outputs on them."""

    inputs: Arrays
    outputs: Arrays

    @property
    def batch_size(self) -> int:
        first = next(iter(self.inputs.values()))
        return int(first.shape[0]) if first.ndim else 1


def concrete_shape(spec: TensorSpec, batch: int, dynamic: int) -> tuple[int, ...]:
    """Fill dynamic dims: the first with ``batch``, the others with ``dynamic``."""
    return tuple((batch if i == 0 else dynamic) if d == -1 else d for i, d in enumerate(spec.shape))


def random_inputs(
    specs: tuple[TensorSpec, ...],
    batch: int,
    dynamic: int,
    rng: np.random.Generator,
    words: tuple[str, ...] = (),
    samples: Mapping[str, tuple[bytes, ...]] | None = None,
) -> Arrays:
    """Valid random inputs for ``specs`` (ints within the spec's value range, floats ~N(0,1), strings ``sN`` or,
    given the model's vocabulary ``words``, mostly its words; an ``attention_mask`` as a tokenizer pads). A string
    input with ``samples`` (values the model parses: serialized tf.Example protos) is drawn from them only."""
    arrays: Arrays = {}
    for spec in specs:
        shape = concrete_shape(spec, batch, dynamic)
        dtype = lookup_dtype(spec.dtype)
        low, high = spec.value_range or ((0.0, 1.0) if dtype.is_float else (0.0, 10.0))
        if _is_attention_mask(spec, dtype.is_float, low, high) and len(shape) == 2:
            arrays[spec.name] = _padding_mask(shape, rng).astype(dtype.np_dtype())
        elif dtype.name == "bool":
            arrays[spec.name] = rng.random(shape) < 0.5
        elif dtype.name == "string" and samples and spec.name in samples:
            picks = rng.integers(0, len(samples[spec.name]), math.prod(shape))
            arrays[spec.name] = np.array([samples[spec.name][k] for k in picks], dtype=object).reshape(shape)
        elif dtype.name == "string":
            arrays[spec.name] = _random_strings(shape, rng, words)
        elif dtype.is_integer:
            # the server's reading of LOW..HIGH for integers: LOW <= v < HIGH (tensors.value_outside)
            arrays[spec.name] = rng.integers(math.ceil(low), math.ceil(high), shape).astype(dtype.np_dtype())
        elif spec.value_range:
            arrays[spec.name] = rng.uniform(low, high, shape).astype(dtype.np_dtype())
        else:
            arrays[spec.name] = rng.standard_normal(shape).astype(dtype.np_dtype())
    # numpy draws a number, not an array, for a 0-d shape (a scalar input): np.ascontiguousarray would make it 1-d
    return {name: np.asarray(value) for name, value in arrays.items()}


def _is_attention_mask(spec: TensorSpec, is_float: bool, low: float, high: float) -> bool:
    """An input named like Hugging Face's ``attention_mask`` (``decoder_attention_mask``...) whose range holds 0
    and 1 (or that has none)."""
    in_range = spec.value_range is None or (low <= 0 and high >= (1 if is_float else 2))
    return spec.name.endswith("attention_mask") and spec.dtype != "string" and in_range


def _padding_mask(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray[Any, Any]:
    """Masks as a tokenizer pads: each row's first 1 to all positions are 1, the rest 0. A row of 0s, which a
    tokenizer never makes, masks every token: models answer it with numbers that mean nothing and that each
    format computes differently (BERT's ONNX export against PyTorch), which says nothing about parity."""
    rows, width = shape
    lengths = rng.integers(1, width + 1, rows) if width else np.zeros(rows, dtype=np.int64)
    return np.arange(width)[None, :] < lengths[:, None]


def _random_strings(shape: tuple[int, ...], rng: np.random.Generator, words: tuple[str, ...]) -> np.ndarray[Any, Any]:
    """Strings ``sN``; with a vocabulary, its words but one in four ``sN`` (most likely out of it)."""
    count = math.prod(shape)
    strings = [f"s{v}" for v in rng.integers(0, 100, count)]
    if words:
        picks = rng.integers(0, len(words), count)
        strings = [s if rng.random() < 0.25 else words[k] for s, k in zip(strings, picks, strict=True)]
    return np.array([s.encode() for s in strings], dtype=object).reshape(shape)


def take_rows(arrays: Arrays, start: int, stop: int) -> Arrays:
    """Rows ``start:stop`` of every array (the batch dimension)."""
    return {k: v[start:stop] for k, v in arrays.items()}


def load_npz_inputs(
    path: Path, specs: tuple[TensorSpec, ...], purpose: str
) -> tuple[Arrays, np.ndarray[Any, Any] | None]:
    """Read inputs keyed by input name (and optional ``labels``) from ``path``, checked against ``specs``."""
    if not path.exists():
        raise NotFoundError(f"{purpose} file {path} not found")
    try:
        data = dict(np.load(path, allow_pickle=False))
    except Exception as exc:
        raise InvalidArgumentError(f"{purpose} file {path} is not a readable .npz: {exc}") from None
    arrays: Arrays = {}
    for spec in specs:
        if spec.name not in data:
            raise SpecError(f"{purpose} file {path} has no array {spec.name!r} (has: {sorted(data)})")
        array = data[spec.name].astype(lookup_dtype(spec.dtype).np_dtype(), copy=False)
        if not shape_matches(tuple(-1 if i == 0 else d for i, d in enumerate(spec.shape)), array.shape):
            raise SpecError(f"{purpose} array {spec.name!r} has shape {list(array.shape)}, expected {spec.describe()}")
        arrays[spec.name] = array
    labels = data.get("labels")
    return arrays, labels


def save_golden(path: Path, cases: list[GoldenCase]) -> None:
    """Write cases as ``case{i}/inputs/{name}`` and ``case{i}/outputs/{name}``."""
    flat: dict[str, np.ndarray[Any, Any]] = {}
    for i, case in enumerate(cases):
        flat.update({f"case{i}/inputs/{k}": _storable(v) for k, v in case.inputs.items()})
        flat.update({f"case{i}/outputs/{k}": _storable(v) for k, v in case.outputs.items()})
    with path.open("wb") as handle:
        np.savez_compressed(handle, **flat)  # type: ignore[arg-type]


def load_golden(path: Path) -> list[GoldenCase]:
    """Read the cases written by :func:`save_golden`."""
    cases: dict[int, tuple[Arrays, Arrays]] = {}
    with np.load(path, allow_pickle=False) as data:
        for key in data.files:
            case, kind, name = key.split("/", 2)
            slot = cases.setdefault(int(case.removeprefix("case")), ({}, {}))
            value = data[key]
            slot[0 if kind == "inputs" else 1][name] = value.astype(object) if value.dtype.kind == "S" else value
    return [GoldenCase(*cases[i]) for i in sorted(cases)]


def _storable(array: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """String tensors are stored as fixed-width bytes: golden files never need pickle."""
    if array.dtype.kind in ("O", "U"):
        return np.asarray(
            [v if isinstance(v, bytes) else str(v).encode() for v in array.ravel()], dtype=np.bytes_
        ).reshape(array.shape)
    return array
