"""What every framework's source model shares: the protocol, the common fields, spec and hash helpers."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from modelport.errors import SpecError
from modelport.manifest import TensorSpec
from modelport.runtimes.base import Arrays

__all__ = ["LoadedModel", "SourceModel", "check_input_specs", "laid_out", "path_sha256"]


class SourceModel(Protocol):
    """A loaded source model: its framework, tensors, and a reference ``predict``."""

    framework: Literal["torch", "tf", "onnx"]
    kind: str
    location: str
    sha256: str | None
    inputs: tuple[TensorSpec, ...]
    output_names: tuple[str, ...]
    output_keys: tuple[str, ...]
    vocabulary: tuple[str, ...]
    string_samples: dict[str, tuple[bytes, ...]]
    compute_dtype: str
    model: Any

    def predict(self, inputs: Arrays) -> Arrays: ...


@dataclass
class LoadedModel:
    """The fields every framework's source shares; subclasses add ``framework`` and ``predict``."""

    model: Any
    kind: str
    location: str
    inputs: tuple[TensorSpec, ...]
    output_names: tuple[str, ...]
    sha256: str | None = None
    # the model's own keys for its outputs, in output order (a returned dict's), where converters name them so
    output_keys: tuple[str, ...] = ()
    # strings the model knows (a Keras StringLookup's or TextVectorization's): golden string inputs are drawn from them
    vocabulary: tuple[str, ...] = ()
    # values a string input's golden inputs are drawn from (the tf.Example protos a SavedModel signature parses)
    string_samples: dict[str, tuple[bytes, ...]] = field(default_factory=dict)
    # the float type the model computes in: float16 or bfloat16 for a half model or a Keras mixed-precision policy
    compute_dtype: str = "float32"


def check_input_specs(
    given: tuple[TensorSpec, ...], found: tuple[TensorSpec, ...], where: str
) -> tuple[TensorSpec, ...]:
    """Reconcile flag specs with the specs a source carries; flags must agree with the model (in any order:
    the result is in the model's)."""
    if not given:
        return found
    if not found:
        return given
    if sorted(s.name for s in given) != sorted(s.name for s in found):
        raise SpecError(
            f"--input names {[s.name for s in given]} do not match the inputs of {where}: {[s.name for s in found]}"
        )
    by_name = {s.name: s for s in given}
    given = tuple(by_name[s.name] for s in found)  # in the model's order, whatever order the flags came in
    for spec, model_spec in zip(given, found, strict=True):
        if (
            spec.dtype != model_spec.dtype
            or len(spec.shape) != len(model_spec.shape)
            or any(m != -1 and g != m for g, m in zip(spec.shape, model_spec.shape, strict=True))
        ):
            raise SpecError(f"--input {spec.describe()} does not match {where}, which takes {model_spec.describe()}")
    return given


def laid_out(specs: tuple[TensorSpec, ...], layouts: dict[str, str], where: str) -> tuple[TensorSpec, ...]:
    """The inputs with the layouts ``--layout`` gives them (what Triton's model configuration reports as an
    input's ``format``). A layout counts the batch dimension: the input has its rank, or one less for an input
    without a batch dimension (Triton's ``max_batch_size: 0``: ``data_0`` 3x224x224 is NCHW)."""
    by_name = {s.name: s for s in specs}
    unknown = [name for name in layouts if name not in by_name]
    if unknown:
        raise SpecError(f"--layout names {unknown}, which {where} does not take: its inputs are {list(by_name)}")
    for name, layout in layouts.items():
        spec = by_name[name]
        unbatched = not spec.shape or spec.shape[0] != -1
        if len(spec.shape) != len(layout) and not (unbatched and len(spec.shape) == len(layout) - 1):
            raise SpecError(
                f"--layout {name}:{layout} does not fit {spec.describe()}: {layout} has {len(layout)} dims "
                f"({len(layout) - 1} for an input without a batch dimension)"
            )
    return tuple(s.model_copy(update={"layout": layouts[s.name]}) if s.name in layouts else s for s in specs)


def failed_inputs(inputs: Arrays, specs: tuple[TensorSpec, ...]) -> str:
    """The shapes a source failed on (``ids[1, 8], mask[1, 8]``), and, when some came from dynamic dims past the
    batch (filled with a default size), how to pin those dims to the sizes the model was made for."""
    shapes = ", ".join(f"{s.name}{list(inputs[s.name].shape)}" for s in specs)
    dynamic = [s for s in specs if -1 in s.shape[1:]]
    if not dynamic:
        return shapes
    pins = " ".join(
        f"--input {s.name}:{s.dtype}:{'x'.join([str(s.shape[0]), *('N' if d == -1 else str(d) for d in s.shape[1:])])}"
        for s in dynamic
    )
    elsewhere = [s.name for s in dynamic if s.shape[0] != -1]
    batch = (
        f"; the batch is the first dim of every input: {', '.join(elsewhere)} with a dynamic dim after a fixed first "
        f"one (an RNN's initial state, layers x batch x hidden?) takes the batch pinned, in every input"
        if elsewhere and any(s.shape[:1] == (-1,) for s in specs)
        else ""
    )
    return (
        f"{shapes} (their dynamic dims drawn at a default size; a model made for fixed sizes takes them pinned: "
        f"{pins}; one that takes other sizes than these, golden inputs of sizes it takes: --dynamic-sizes N,M{batch})"
    )


def path_sha256(path: Path) -> str:
    """sha256 over a file, or over every file of a directory in sorted order."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        with file.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()
