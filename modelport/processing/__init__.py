"""Processors: request payloads (images, text) -> model inputs, and model outputs -> responses.

A model's processing is declared as data (:class:`ProcessingSpec`, the ``processors:`` section of
its ``config.yaml``) and built for one model version with :func:`build_processors`::

    spec = ProcessingSpec(pre=(ImageStep(resize=256, center_crop=224),), post=(TopKStep(k=5),))
    processors = build_processors(spec, ProcessingContext(version_dir, manifest))
    inputs = processors.preprocess([jpeg_bytes, png_bytes])       # [{"image": (1, 3, 224, 224)}, ...]
    responses = processors.postprocess(outputs_per_request)       # [{"cat": 0.91, ...}, ...]

Processors take a batch (one item per request) and return one result per item; an item that
cannot be processed comes back as its ``ModelportError`` (a 4xx for bad payloads) without failing
the rest. Importing this package imports neither Pillow nor ``tokenizers``.
"""

from __future__ import annotations

from modelport.processing.base import ProcessingContext, Processor
from modelport.processing.pipeline import Processors, build_processors, check_text_feeds
from modelport.processing.spec import (
    ArgmaxStep,
    CustomStep,
    DetectionStep,
    IdentityStep,
    ImageStep,
    ProcessingSpec,
    SegmentationStep,
    TextStep,
    ThresholdStep,
    TopKStep,
)
from modelport.processing.torchserve import TORCHSERVE_HANDLERS, torchserve_equivalent

__all__ = [
    "TORCHSERVE_HANDLERS",
    "ArgmaxStep",
    "CustomStep",
    "DetectionStep",
    "IdentityStep",
    "ImageStep",
    "ProcessingContext",
    "ProcessingSpec",
    "Processor",
    "Processors",
    "SegmentationStep",
    "TextStep",
    "ThresholdStep",
    "TopKStep",
    "build_processors",
    "check_text_feeds",
    "torchserve_equivalent",
]
