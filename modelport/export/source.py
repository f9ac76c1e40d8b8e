"""Source models: what an export converts, and the reference its artifacts must match."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from modelport.errors import InvalidArgumentError, NotFoundError, SourceError, SpecError
from modelport.export.factory import call_factory, is_factory, python_file_error
from modelport.export.options import ExportOptions
from modelport.manifest import TensorSpec
from modelport.runtimes.base import Arrays

__all__ = ["LoadedModel", "SourceModel", "check_input_specs", "load_source", "path_sha256"]


class SourceModel(Protocol):
    """A loaded source model: its framework, tensors, and a reference ``predict``."""

    framework: Literal["torch", "tf", "onnx"]
    kind: str
    location: str
    sha256: str | None
    inputs: tuple[TensorSpec, ...]
    output_names: tuple[str, ...]
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


def load_source(options: ExportOptions) -> SourceModel:
    """Load the source named by ``options.source`` (a path, ``module:factory`` or object)."""
    source = options.source
    if not isinstance(source, str | Path):
        return _load_object(source, options)
    text = str(source)
    path = Path(text)
    if path.is_dir():
        from modelport.export.tf_source import load_tf_path

        return load_tf_path(path, options)
    if path.is_file():
        if path.suffix == ".py":
            raise python_file_error(path)
        if path.suffix == ".onnx":
            from modelport.export.onnx_source import load_onnx_file

            return load_onnx_file(path, options)
        if path.suffix in (".keras", ".h5"):
            from modelport.export.tf_source import load_tf_path

            return load_tf_path(path, options)
        from modelport.export.torch_source import load_torch_file

        return load_torch_file(path, options)
    if is_factory(text):
        return _load_factory(text, options)
    raise NotFoundError(
        f"source {text!r} not found: give a .keras file, a SavedModel directory, a TorchScript .pt, "
        "a torch.export .pt2, an .onnx file, or a PyTorch package.module:factory"
    )


def _load_object(obj: Any, options: ExportOptions) -> SourceModel:
    if _framework_of(obj) == "torch":
        from modelport.export.torch_source import wrap_torch_module

        return wrap_torch_module(obj, options, kind="module", location=type(obj).__qualname__)
    if _framework_of(obj) == "tf":
        from modelport.export.tf_source import wrap_tf_object

        return wrap_tf_object(obj, options, type(obj).__qualname__)
    raise SourceError(
        f"source object of type {type(obj).__qualname__} is neither a torch.nn.Module nor a Keras/TF model"
    )


def _load_factory(target: str, options: ExportOptions) -> SourceModel:
    """A ``module:factory`` source: the factory's model, wrapped by its framework (torch: + ``--weights``)."""
    model = call_factory(target)
    framework = _framework_of(model)
    if framework == "torch":
        from modelport.export.torch_source import wrap_torch_factory

        return wrap_torch_factory(model, target, options)
    if framework == "tf":
        if options.weights is not None:
            raise InvalidArgumentError(
                f"--weights loads a PyTorch state_dict; {target} returned a Keras/TF model, "
                "whose factory loads its own weights (model.load_weights(...))"
            )
        from modelport.export.tf_source import wrap_tf_object

        return wrap_tf_object(model, options, target)
    raise SourceError(
        f"factory {target} returned {type(model).__qualname__}, not a torch.nn.Module or a Keras/TF model"
    )


def _framework_of(obj: Any) -> str | None:
    """The framework of a model object, by the packages its classes come from (user subclasses included)."""
    packages = {c.__module__.split(".")[0] for c in type(obj).__mro__}
    if "torch" in packages:
        return "torch"
    if packages & {"keras", "tensorflow", "tf_keras"} or hasattr(obj, "signatures") or hasattr(obj, "_tf_api_names"):
        return "tf"
    return None


def check_input_specs(
    given: tuple[TensorSpec, ...], found: tuple[TensorSpec, ...], where: str
) -> tuple[TensorSpec, ...]:
    """Reconcile flag specs with the specs a source carries; flags must agree with the model."""
    if not given:
        return found
    if not found:
        return given
    if [s.name for s in given] != [s.name for s in found]:
        raise SpecError(
            f"--input names {[s.name for s in given]} do not match the inputs of {where}: {[s.name for s in found]}"
        )
    for spec, model_spec in zip(given, found, strict=True):
        if len(spec.shape) != len(model_spec.shape) or any(
            m != -1 and g != m for g, m in zip(spec.shape, model_spec.shape, strict=True)
        ):
            raise SpecError(f"--input {spec.describe()} does not match {where}, which takes {model_spec.describe()}")
    return given


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
