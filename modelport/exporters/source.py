"""Loading a source model: by path, ``module:factory`` or object, dispatched to its framework's module."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modelport.errors import InvalidArgumentError, NotFoundError, SourceError
from modelport.exporters.factory import call_factory, is_factory, python_file_error
from modelport.exporters.options import ExportOptions
from modelport.exporters.source_model import SourceModel, laid_out

__all__ = ["load_source"]


def load_source(options: ExportOptions) -> SourceModel:
    """Load the source named by ``options.source`` (a path, ``module:factory`` or object), its inputs laid out
    as ``options.layouts`` says."""
    source = _load(options)
    if options.layouts:
        source.inputs = laid_out(source.inputs, options.layouts, source.location)
    return source


def _load(options: ExportOptions) -> SourceModel:
    source = options.source
    if not isinstance(source, str | Path):
        return _load_object(source, options)
    text = str(source)
    path = Path(text)
    if path.is_dir():
        from modelport.exporters.tf_source import load_tf_path

        return load_tf_path(path, options)
    if path.is_file():
        if path.suffix == ".py":
            raise python_file_error(path)
        if path.suffix == ".onnx":
            from modelport.exporters.onnx_source import load_onnx_file

            return load_onnx_file(path, options)
        if path.suffix in (".keras", ".h5"):
            from modelport.exporters.tf_source import load_tf_path

            return load_tf_path(path, options)
        from modelport.exporters.torch_source import load_torch_file

        return load_torch_file(path, options)
    if is_factory(text):
        return _load_factory(text, options)
    raise NotFoundError(
        f"source {text!r} not found: give a .keras file, a SavedModel directory, a TorchScript .pt, "
        "a torch.export .pt2, an .onnx file, or a PyTorch package.module:factory"
    )


def _load_object(obj: Any, options: ExportOptions) -> SourceModel:
    if _framework_of(obj) == "torch":
        from modelport.exporters.torch_source import wrap_torch_module

        return wrap_torch_module(obj, options, kind="module", location=type(obj).__qualname__)
    if _framework_of(obj) == "tf":
        from modelport.exporters.tf_source import wrap_tf_object

        return wrap_tf_object(obj, options, type(obj).__qualname__)
    raise SourceError(
        f"source object of type {type(obj).__qualname__} is neither a torch.nn.Module nor a Keras/TF model"
    )


def _load_factory(target: str, options: ExportOptions) -> SourceModel:
    """A ``module:factory`` source: the factory's model, wrapped by its framework (torch: + ``--weights``)."""
    model = call_factory(target)
    framework = _framework_of(model)
    if framework == "torch":
        from modelport.exporters.torch_source import wrap_torch_factory

        return wrap_torch_factory(model, target, options)
    if framework == "tf":
        if options.weights is not None:
            raise InvalidArgumentError(
                f"--weights loads a PyTorch state_dict; {target} returned a Keras/TF model, "
                "whose factory loads its own weights (model.load_weights(...))"
            )
        from modelport.exporters.tf_source import wrap_tf_object

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
