"""Build runnable processors from a :class:`ProcessingSpec` for one model version.

The Pillow and ``tokenizers`` modules are imported here only when a spec has an image or a text
step. Everything is synchronous: the server runs :meth:`Processors.preprocess` and
:meth:`Processors.postprocess` in a worker pool, off the event loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from modelport.errors import InferenceError, ModelportError, SpecError
from modelport.manifest import ModelManifest
from modelport.processing.base import ProcessingContext, Processor, run_steps
from modelport.processing.spec import (
    ArgmaxStep,
    CustomStep,
    DetectionStep,
    IdentityStep,
    ImageStep,
    PostStep,
    PreStep,
    ProcessingSpec,
    SegmentationStep,
    TextStep,
    ThresholdStep,
    TopKStep,
)

__all__ = ["Processors", "build_processors", "build_step", "check_text_feeds"]


@dataclass(frozen=True)
class Processors:
    """The built pre- and postprocessing of one model version; safe to call from several threads."""

    spec: ProcessingSpec
    pre: tuple[Processor, ...]
    post: tuple[Processor, ...]

    def preprocess(self, items: Sequence[object]) -> list[dict[str, np.ndarray] | ModelportError]:
        """Request payloads -> each request's input tensors (batch dim 1), or its error."""
        return [_tensors(result) for result in run_steps(self.pre, items)]

    def postprocess(self, outputs: Sequence[object]) -> list[object]:
        """Each request's output tensors -> its response (JSON-able), or its error."""
        return run_steps(self.post, outputs)


def _tensors(result: object) -> dict[str, np.ndarray] | ModelportError:
    if isinstance(result, ModelportError):
        return result
    if isinstance(result, dict) and all(isinstance(k, str) and isinstance(v, np.ndarray) for k, v in result.items()):
        return result
    return InferenceError(f"preprocessing produced {type(result).__name__}, not named numpy arrays")


def build_step(step: PreStep | PostStep, context: ProcessingContext) -> Processor:
    """The processor for one step (imports Pillow / tokenizers only for image / text steps)."""
    if isinstance(step, ImageStep):
        from modelport.processing.image import ImageProcessor

        return ImageProcessor(step, context)
    if isinstance(step, TextStep):
        from modelport.processing.text import TextProcessor

        return TextProcessor(step, context)
    if isinstance(step, CustomStep):
        from modelport.processing.custom import CustomProcessor

        return CustomProcessor(step, context)
    return _build_post(step, context)


def _build_post(step: PostStep, context: ProcessingContext) -> Processor:
    from modelport.processing import postprocess

    if isinstance(step, TopKStep | ArgmaxStep | ThresholdStep):
        return postprocess.ClassifierProcessor(step, context)
    if isinstance(step, IdentityStep):
        return postprocess.IdentityProcessor(step, context)
    if isinstance(step, SegmentationStep):
        return postprocess.SegmentationProcessor(step, context)
    if isinstance(step, DetectionStep):
        return postprocess.DetectionProcessor(step, context)
    raise AssertionError(f"unhandled step kind {step.kind!r}")


def build_processors(spec: ProcessingSpec, context: ProcessingContext) -> Processors:
    """Build every step of ``spec`` for the model version in ``context`` (files are read now)."""
    return Processors(
        spec=spec,
        pre=tuple(build_step(step, context) for step in spec.pre),
        post=tuple(build_step(step, context) for step in spec.post),
    )


_TEXT_FIELDS = ("input_ids", "attention_mask", "token_type_ids")


def check_text_feeds(spec: ProcessingSpec, manifest: ModelManifest) -> None:
    """A model whose last ``pre`` step is ``text`` gets exactly the tensors that step makes: refuse, when the
    version loads, a model input it does not make or a tensor the model does not take (else every request
    would be a 400 its client cannot fix)."""
    if not spec.pre or not isinstance(spec.pre[-1], TextStep):
        return
    step = spec.pre[-1]
    made = {getattr(step, field): field for field in _TEXT_FIELDS if getattr(step, field) is not None}
    taken = [s.name for s in manifest.inputs]
    missing = [name for name in taken if name not in made]
    extra = [name for name in made if name not in taken]
    problems = [
        f"the model takes input {name!r}, which the text step does not make"
        + (f" (set {name}: {name} in it)" if name in _TEXT_FIELDS else "")
        for name in missing
    ]
    problems += [
        f"the text step makes {made[name]} as {name!r}, which the model does not take (set {made[name]}: null, "
        f"or name one of its inputs: {', '.join(taken)})"
        for name in extra
    ]
    if problems:
        raise SpecError(f"processors: {'; '.join(problems)}")
