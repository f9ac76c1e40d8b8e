"""Postprocessing: model outputs of one request -> its response (TorchServe's response shapes).

Each item is one request's outputs, ``{name: array}`` with a batch dimension of 1, as the data
plane splits a batch back. Classifiers read one output, apply an activation and name classes
through a labels file; ``segmentation`` and ``detection`` reproduce TorchServe's built-in
image_segmenter and object_detector responses.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from modelport.errors import InferenceError, SpecError
from modelport.processing.base import ProcessingContext, map_items
from modelport.processing.labels import find_labels
from modelport.processing.spec import (
    ArgmaxStep,
    DetectionStep,
    IdentityStep,
    SegmentationStep,
    ThresholdStep,
    TopKStep,
)

__all__ = ["ClassifierProcessor", "DetectionProcessor", "IdentityProcessor", "SegmentationProcessor", "activate"]

FloatArray = np.ndarray[Any, np.dtype[np.floating[Any]]]
Classifier = TopKStep | ArgmaxStep | ThresholdStep


def activate(scores: np.ndarray[Any, Any], activation: str, axis: int = -1) -> FloatArray:
    """``softmax`` (along ``axis``), ``sigmoid`` or ``none``, in the scores' float type (float32 for ints)."""
    values = scores if np.issubdtype(scores.dtype, np.floating) else scores.astype(np.float32)
    if activation == "softmax":
        shifted = np.exp(values - values.max(axis=axis, keepdims=True))
        return shifted / shifted.sum(axis=axis, keepdims=True)  # type: ignore[no-any-return]
    if activation == "sigmoid":
        with np.errstate(over="ignore"):
            return 1 / (1 + np.exp(-values))  # type: ignore[no-any-return]
    return values


def _output(outputs: object, name: str) -> np.ndarray[Any, Any]:
    if not isinstance(outputs, dict) or not isinstance(outputs.get(name), np.ndarray):
        found = sorted(outputs) if isinstance(outputs, dict) else type(outputs).__name__
        raise InferenceError(f"postprocessing needs output {name!r}; got {found}")
    array: np.ndarray[Any, Any] = outputs[name]
    return array


def _one_row(array: np.ndarray[Any, Any], name: str) -> np.ndarray[Any, Any]:
    """The request's scores: the single row under a batch dimension of 1, flattened."""
    if array.ndim >= 2 and array.shape[0] != 1:
        raise InferenceError(f"output {name!r} of shape {list(array.shape)} holds more than one request's row")
    return array.reshape(-1)


def _output_name(name: str | None, context: ProcessingContext, what: str) -> str:
    spec = context.output_spec(name)
    if name is not None:
        if context.manifest is not None and spec is None:
            outputs = ", ".join(s.name for s in context.manifest.outputs)
            raise SpecError(f"{what} step: the model has no output {name!r} (outputs: {outputs})")
        return name
    if spec is None:
        raise SpecError(f"{what} step: name the output to read (no manifest to take the first output from)")
    return spec.name


class ClassifierProcessor:
    """``topk``, ``argmax`` and ``threshold``: one output's scores -> labelled classes."""

    def __init__(self, step: Classifier, context: ProcessingContext) -> None:
        self.step = step
        self.name = _output_name(step.output, context, step.kind)
        self.labels = find_labels(step.labels, context, self.name)
        self.format: Callable[[FloatArray], object] = {
            "topk": self._topk,
            "argmax": self._argmax,
            "threshold": self._threshold,
        }[step.kind]

    def __call__(self, items: Sequence[object], /) -> list[object]:
        """Each request's response."""
        return list(map_items(self.process, items))

    def process(self, outputs: object) -> object:
        """One request's response from its outputs."""
        scores = activate(_one_row(_output(outputs, self.name), self.name), self.step.activation)
        return self.format(scores)

    def _topk(self, scores: FloatArray) -> dict[str, float]:
        assert isinstance(self.step, TopKStep)
        if self.step.k is None:  # every class in index order (TorchServe's text_classifier)
            return {self.labels(i): float(s) for i, s in enumerate(scores.tolist())}
        return _named(self.labels, scores, _best(scores, self.step.k))

    def _argmax(self, scores: FloatArray) -> dict[str, object]:
        best = int(np.argmax(scores))
        return {"label": self.labels(best), "index": best, "score": float(scores[best])}

    def _threshold(self, scores: FloatArray) -> dict[str, float]:
        assert isinstance(self.step, ThresholdStep)
        return _named(self.labels, scores, _ranked(scores, np.flatnonzero(scores >= self.step.threshold)))


def _ranked(scores: FloatArray, indices: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """``indices`` (ascending) best score first, ties in index order (a stable sort of the scores, descending)."""
    return indices[np.argsort(-scores[indices], kind="stable")]


def _best(scores: FloatArray, k: int) -> np.ndarray[Any, Any]:
    """The indices of the ``k`` best scores, ranked as a stable descending sort of all of them ranks them: the
    classes scoring at least the k-th best (``argpartition``), sorted; the full sort where NaNs make it unclear."""
    if k >= len(scores):
        return _ranked(scores, np.arange(len(scores)))
    kth = scores[np.argpartition(-scores, k - 1)[k - 1]]
    candidates = np.flatnonzero(scores >= kth)
    if len(candidates) < k:  # NaN scores (they sort last)
        candidates = np.arange(len(scores))
    return _ranked(scores, candidates)[:k]


def _named(labels: Callable[[int], str], scores: FloatArray, indices: np.ndarray[Any, Any]) -> dict[str, float]:
    return {labels(i): s for i, s in zip(indices.tolist(), scores[indices].tolist(), strict=True)}


class IdentityProcessor:
    """The outputs as nested lists, without the batch dimension of 1."""

    def __init__(self, step: IdentityStep, context: ProcessingContext) -> None:
        self.names = step.outputs

    def __call__(self, items: Sequence[object], /) -> list[object]:
        """Each request's ``{name: nested list}``."""
        return list(map_items(self.process, items))

    def process(self, outputs: object) -> object:
        """One request's outputs as lists."""
        names = self.names or (tuple(outputs) if isinstance(outputs, dict) else ())
        arrays = {name: _output(outputs, name) for name in names}
        return {name: (a[0] if a.ndim and a.shape[0] == 1 else a).tolist() for name, a in arrays.items()}


class SegmentationProcessor:
    """TorchServe's image_segmenter: ``(1, K, H, W)`` scores -> ``H x W x [class, probability]``."""

    def __init__(self, step: SegmentationStep, context: ProcessingContext) -> None:
        self.name = _output_name(step.output, context, step.kind)

    def __call__(self, items: Sequence[object], /) -> list[object]:
        """Each request's ``[[[class, probability], ...], ...]``."""
        return list(map_items(self.process, items))

    def process(self, outputs: object) -> object:
        """One request's mask: the best class of every pixel and its probability, as floats."""
        scores = _output(outputs, self.name)
        if scores.ndim != 4 or scores.shape[0] != 1:
            raise InferenceError(f"output {self.name!r}: expected (1, classes, H, W), got {list(scores.shape)}")
        probabilities = activate(scores[0], "softmax", axis=0)
        best = probabilities.argmax(axis=0)
        return np.stack([best.astype(probabilities.dtype), probabilities.max(axis=0)], axis=-1).tolist()


class DetectionProcessor:
    """TorchServe's object_detector: boxes, classes and scores -> ``[{label: box, "score": s}, ...]``."""

    def __init__(self, step: DetectionStep, context: ProcessingContext) -> None:
        self.step = step
        self.labels = find_labels(step.labels, context, step.classes)

    def __call__(self, items: Sequence[object], /) -> list[object]:
        """Each request's detections above the threshold."""
        return list(map_items(self.process, items))

    def process(self, outputs: object) -> object:
        """One request's detections, in the model's order."""
        boxes, classes, scores = (
            _squeeze(_output(outputs, name), rank)
            for name, rank in ((self.step.boxes, 2), (self.step.classes, 1), (self.step.scores, 1))
        )
        if boxes.ndim != 2 or boxes.shape[1:] != (4,) or not len(boxes) == len(classes) == len(scores):
            shapes = [list(a.shape) for a in (boxes, classes, scores)]
            raise InferenceError(f"detection outputs: expected (n, 4), (n,), (n,); got {shapes}")
        keep = scores >= self.step.threshold
        return [
            {self.labels(int(c)): box, "score": float(s)}
            for box, c, s in zip(boxes[keep].tolist(), classes[keep].tolist(), scores[keep].tolist(), strict=True)
        ]


def _squeeze(array: np.ndarray[Any, Any], rank: int) -> np.ndarray[Any, Any]:
    """Drop a batch dimension of 1 (``(1, n, 4)`` -> ``(n, 4)``)."""
    return array[0] if array.ndim == rank + 1 and array.shape[0] == 1 else array
