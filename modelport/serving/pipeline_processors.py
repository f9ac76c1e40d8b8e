"""How a pipeline's processor steps fit the models around them (see :mod:`modelport.serving.pipeline`).

A model's own processors are built for its manifest: the token ids in its integer dtype, an image in its
layout and normalization, a classifier reading its first output. A pipeline's processor steps get the same
defaults from their neighbours: a ``pre`` step from the manifest of the model input it feeds, a ``post``
step from its first mapped tensor. Errors about a payload name the pipeline's input the client sent.
Postprocessors' JSON (a ``post`` step's, a processed step model's) is answered decoded where a protocol
answers JSON, and Triton's classification extension names classes from the pipeline folder's labels file.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from modelport.errors import ModelportError
from modelport.manifest import ModelManifest, TensorSpec
from modelport.processing import (
    ArgmaxStep,
    ProcessingContext,
    ProcessingSpec,
    SegmentationStep,
    ThresholdStep,
    TopKStep,
)
from modelport.processing.labels import Labels, find_labels
from modelport.serving.application import OUTPUT, naming_the_payload, renaming_inputs
from modelport.serving.pipeline_spec import PipelineSpec, PipelineStep
from modelport.serving.types import ModelMetadata

__all__ = [
    "ManifestOf",
    "as_named_by_the_pipeline",
    "as_sent_to_the_pipeline",
    "class_labels",
    "fed_inputs",
    "json_tensors",
    "reading_defaults",
]

log = logging.getLogger(__name__)

ManifestOf = Callable[[str, str | None], ModelManifest | None]
"""A step model's manifest by name and version (None: it takes payloads, or has none)."""

_READERS = (TopKStep, ArgmaxStep, ThresholdStep, SegmentationStep)


def reading_defaults(step: PipelineStep) -> ProcessingSpec:
    """A step's processors; a ``post`` classifier or segmenter that names no output reads the step's first
    mapped tensor (a model's processors read its manifest's first output)."""
    assert step.processors is not None
    first = next(iter(step.input_map))
    post = tuple(
        s.model_copy(update={"output": first}) if isinstance(s, _READERS) and s.output is None else s
        for s in step.processors.post
    )
    return step.processors.model_copy(update={"post": post})


def fed_inputs(manifest_of: ManifestOf, spec: PipelineSpec, step: PipelineStep) -> ModelManifest | None:
    """The first model manifest that a ``pre`` step feeds, its inputs renamed as the step names its outputs
    (only those it feeds); None when it feeds no model step that takes tensors."""
    found: list[TensorSpec] = []
    manifest: ModelManifest | None = None
    for mine, tensor in step.output_map.items():
        for consumer in spec.steps:
            theirs = next((m for m, t in consumer.input_map.items() if t == tensor), None)
            if consumer.model is None or theirs is None:
                continue
            version = str(consumer.version) if consumer.version is not None else None
            model = manifest_of(consumer.model, version)
            fed = next((s for s in model.inputs if s.name == theirs), None) if model is not None else None
            if fed is not None:
                manifest = manifest or model
                found.append(fed.model_copy(update={"name": mine}))
                break
    if manifest is None:
        return None
    return manifest.model_copy(update={"inputs": tuple(found), "outputs": ()})


def as_sent_to_the_pipeline(error: ModelportError, step: PipelineStep, inputs: set[str]) -> ModelportError:
    """A model step's error about an input the pipeline took from its client, naming it as the client did."""
    names = {mine: theirs for mine, theirs in step.input_map.items() if theirs in inputs}
    return renaming_inputs(error, {mine: f"input {theirs!r}" for mine, theirs in names.items()})


def as_named_by_the_pipeline(error: ModelportError, step: PipelineStep) -> ModelportError:
    """A ``pre`` step's error about a payload, naming the pipeline's input the client sent (not the tensor the
    processor makes of it, a name the client never saw)."""
    (payload,) = step.input_map.values()
    return naming_the_payload(error, payload, list(step.output_map), also_made=False)


def json_tensors(spec: PipelineSpec, models: dict[int, ModelMetadata]) -> frozenset[str]:
    """The pipeline tensors that are rows of JSON: made by a ``post`` processors step, or the ``output`` of a
    step model with postprocessors of its own."""
    made: set[str] = set()
    for index, step in enumerate(spec.steps):
        meta = models.get(index)
        if step.processors is not None and step.processors.post:
            made.update(step.output_map.values())
        elif meta is not None and meta.processed and (OUTPUT, "string") in {(t.name, t.dtype) for t in meta.outputs}:
            made.update(tensor for mine, tensor in step.output_map.items() if mine == OUTPUT)
    return frozenset(made)


def class_labels(spec: PipelineSpec, directory: Path | None) -> dict[str, Labels]:
    """The class names of Triton's classification extension on the pipeline's outputs: its folder's
    ``index_to_name.json`` or ``labels.txt``, as a model version's (none if unreadable)."""
    if directory is None:
        return {}
    try:
        labels = find_labels(None, ProcessingContext(directory), None)
    except ModelportError as exc:
        log.warning("pipeline %s: no class labels: %s", directory, exc.message)
        return {}
    return {t.name: labels for t in spec.outputs}
