"""What every framework's source model shares: the protocol, the common fields, spec and hash helpers."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from modelport.errors import SpecError
from modelport.manifest import TensorSpec
from modelport.runtimes.base import Arrays

__all__ = ["LoadedModel", "SourceModel", "check_input_specs", "path_sha256"]


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


def failed_inputs(inputs: Arrays, specs: tuple[TensorSpec, ...]) -> str:
    """The shapes a source failed on (``ids[1, 8], mask[1, 8]``), and, when some came from dynamic dims past the
    batch (filled with a default size), how to pin those dims to the sizes the model was made for."""
    shapes = ", ".join(f"{s.name}{list(inputs[s.name].shape)}" for s in specs)
    dynamic = [s for s in specs if -1 in s.shape[1:]]
    if not dynamic:
        return shapes
    pins = " ".join(
        f"--input {s.name}:{s.dtype}:{'x'.join(['-1', *('N' if d == -1 else str(d) for d in s.shape[1:])])}"
        for s in dynamic
    )
    return (
        f"{shapes} (their dynamic dims drawn at the sizes of --dynamic-sizes, default 8,5: a model that needs other "
        f"sizes takes them there, one made for fixed sizes takes them pinned: {pins})"
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
