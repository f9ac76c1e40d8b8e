"""Custom processors: trusted ``module:callable`` code from the model version directory."""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Callable, Sequence
from pathlib import Path

from modelport.errors import InferenceError, ModelportError, NotFoundError, SourceError, summarize
from modelport.processing.base import ProcessingContext
from modelport.processing.spec import CustomStep

__all__ = ["CustomProcessor", "load_callable"]

BatchFunction = Callable[[list[object]], Sequence[object]]


def load_callable(reference: str, directory: Path) -> BatchFunction:
    """Import ``module.py`` from ``directory`` (not from ``sys.path``) and return its ``callable``."""
    module_name, _, attribute = reference.partition(":")
    path = directory / f"{module_name}.py"
    if not path.is_file():
        raise NotFoundError(f"custom processor {reference!r}: no {path}")
    # a name unique per file, so two models' ``processing.py`` never share a module
    unique = f"modelport_custom_{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]}_{module_name}"
    spec = importlib.util.spec_from_file_location(unique, path)
    if spec is None or spec.loader is None:
        raise SourceError(f"custom processor {reference!r}: cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # the model's own code: any failure means the model cannot load
        raise SourceError(f"custom processor {reference!r}: importing {path} failed: {summarize(exc)}") from exc
    function = getattr(module, attribute, None)
    if not callable(function):
        raise SourceError(f"custom processor {reference!r}: {path} has no callable {attribute!r}")
    loaded: BatchFunction = function
    return loaded


class CustomProcessor:
    """Calls the loaded function with the batch; a ``ModelportError`` it raises fails the whole batch."""

    def __init__(self, step: CustomStep, context: ProcessingContext) -> None:
        self.reference = step.callable
        self.function = load_callable(step.callable, context.directory)

    def __repr__(self) -> str:
        return f"CustomProcessor({self.reference!r})"

    def __call__(self, items: Sequence[object], /) -> list[object]:
        """The function's results, checked to be one per item."""
        try:
            results = self.function(list(items))
        except ModelportError as exc:
            return [exc] * len(items)
        if isinstance(results, str | bytes) or not isinstance(results, Sequence):
            raise InferenceError(f"custom processor {self.reference!r} returned {type(results).__name__}, not a list")
        return list(results)
