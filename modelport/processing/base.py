"""What every processor shares: the model it serves, the step interface, per-item failures.

A processor is a plain synchronous callable from a batch (a list, one item per request) to a list
of the same length. An item that cannot be processed is returned as its :class:`ModelportError`
instead of raising, so one bad request never fails its batch-mates; :func:`run_steps` skips failed
items in later steps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

from modelport.errors import InferenceError, ModelportError
from modelport.manifest import ModelManifest, TensorSpec
from modelport.tensors import Arrays

__all__ = ["ProcessingContext", "Processor", "map_items", "run_steps", "without_batch_dim"]

T = TypeVar("T")


@dataclass(frozen=True)
class ProcessingContext:
    """The model version a processor serves: its directory (files, custom code) and manifest."""

    directory: Path
    manifest: ModelManifest | None = None

    def input_spec(self, name: str | None) -> TensorSpec | None:
        """The manifest's spec of input ``name`` (``None``: the first input), if known."""
        return _find(self.manifest.inputs if self.manifest else (), name)

    def output_spec(self, name: str | None) -> TensorSpec | None:
        """The manifest's spec of output ``name`` (``None``: the first output), if known."""
        return _find(self.manifest.outputs if self.manifest else (), name)


def _find(specs: tuple[TensorSpec, ...], name: str | None) -> TensorSpec | None:
    if name is None:
        return specs[0] if specs else None
    return next((s for s in specs if s.name == name), None)


class Processor(Protocol):
    """One step: a batch in, a batch of the same length out (failed items as their error)."""

    def __call__(self, items: Sequence[object], /) -> list[object]: ...


def map_items(function: Callable[[object], T], items: Sequence[object]) -> list[T | ModelportError]:
    """``function`` on each item; a ``ModelportError`` it raises becomes that item's result."""
    results: list[T | ModelportError] = []
    for item in items:
        try:
            results.append(function(item))
        except ModelportError as exc:
            results.append(exc)
    return results


def run_steps(steps: Sequence[Processor], items: Sequence[object]) -> list[object]:
    """Run ``steps`` in order; each sees only the items no earlier step failed."""
    results = list(items)
    for step in steps:
        live = [i for i, r in enumerate(results) if not isinstance(r, ModelportError)]
        if not live:
            break
        outputs = step([results[i] for i in live])
        if len(outputs) != len(live):
            raise InferenceError(f"processor {step!r} returned {len(outputs)} items for a batch of {len(live)}")
        for index, output in zip(live, outputs, strict=True):
            results[index] = output
    return results


def without_batch_dim(tensors: Arrays, specs: Sequence[TensorSpec]) -> Arrays:
    """One request's tensors for a model without a batch dimension (``max_batch_size: 0``, Triton's
    densenet_onnx: ``data_0`` 3x224x224): the batch dimension of 1 the processors made goes where the model's
    input has one dimension less (an input of shape ``1x3x224x224`` keeps it)."""
    ranks = {s.name: len(s.shape) for s in specs}
    return {
        name: value[0] if name in ranks and value.ndim == ranks[name] + 1 and len(value) == 1 else value
        for name, value in tensors.items()
    }
