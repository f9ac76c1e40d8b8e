"""The processing a bundle carries, and its golden raw samples answered by the server's pipeline.

The model's declared processors (``processors:`` of its ``config.yaml``, or ``--processors FILE``)
are written into ``bundle.json`` resolved for the bundled model: the image step names its input,
layout and mean/std, the classifier step its output and the bundle's labels file, so the device
needs no defaults of its own. Each ``--sample`` file is copied into the bundle and answered by the
server's pipeline (``modelport.processing`` + the model through ``modelport.runtimes``), the
answer ``modelport_edge.py verify`` checks the device's own processing against.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from modelport.errors import InvalidArgumentError, ModelportError
from modelport.mobile.describe import LABELS_FILE
from modelport.mobile.options import BundleOptions
from modelport.mobile.sources import VariantSource
from modelport.processing import ProcessingContext, ProcessingSpec, build_processors
from modelport.processing.config import expand_handler
from modelport.processing.spec import ArgmaxStep, CustomStep, ImageStep, ThresholdStep, TopKStep
from modelport.runtimes.base import Arrays, open_runtime

__all__ = ["SAMPLES_DIR", "BundleProcessing", "bundle_processing"]

SAMPLES_DIR = "samples"
CONFIG_FILE = "config.yaml"


@dataclass(frozen=True)
class BundleProcessing:
    """What bundle.json says about processing, and the server's inputs of each raw sample."""

    spec: dict[str, Any] | None = None  # bundle.json "processing"
    samples: list[dict[str, Any]] = field(default_factory=list)  # bundle.json "samples": file and response
    inputs: list[Arrays] = field(default_factory=list)  # each sample's tensors, as the server made them


def bundle_processing(
    options: BundleOptions, first: VariantSource, inputs: list[dict[str, Any]], out: Path
) -> BundleProcessing:
    """The resolved processing of ``first`` and its samples copied under ``out``; none when undeclared."""
    declared = _declared(options, first)
    if declared is None:
        if options.samples:
            raise InvalidArgumentError(
                "--sample needs processors: declare them in the model's config.yaml or pass --processors FILE"
            )
        return BundleProcessing()
    spec = _resolve(declared, first, inputs, (out / LABELS_FILE).is_file())
    files = _copy_samples(options.samples, out)
    if not files:
        return BundleProcessing(spec.model_dump(mode="json"))
    if not any(isinstance(step, ImageStep) for step in spec.pre):
        raise InvalidArgumentError("--sample files are images: the processors need an image step")
    tensors, responses = _server_answers(spec, first, out, files)
    samples = [{"file": name, "response": response} for name, response in zip(files, responses, strict=True)]
    return BundleProcessing(spec.model_dump(mode="json"), samples, tensors)


def _declared(options: BundleOptions, first: VariantSource) -> ProcessingSpec | None:
    """``--processors FILE`` (a ``processors:`` section or the steps), else the model's config.yaml."""
    path = options.processors or first.directory.parent / CONFIG_FILE
    if not path.is_file():
        if options.processors is not None:
            raise InvalidArgumentError(f"--processors {path}: no such file")
        return None
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, OSError) as exc:
        raise InvalidArgumentError(f"{path}: cannot read: {exc}") from None
    if not isinstance(data, dict) or (options.processors is None and "processors" not in data):
        return None
    value = data.get("processors", data)
    try:
        return ProcessingSpec.model_validate(expand_handler(value))
    except ValueError as exc:
        raise InvalidArgumentError(f"{path}: invalid processors: {exc}") from None


def _resolve(spec: ProcessingSpec, first: VariantSource, inputs: list[dict[str, Any]], labels: bool) -> ProcessingSpec:
    """Every default the server would take from the manifest, made explicit for the device."""
    if any(isinstance(step, CustomStep) for step in (*spec.pre, *spec.post)):
        raise InvalidArgumentError("a custom processing step is server code: it cannot travel in an edge bundle")
    context = ProcessingContext(first.directory, first.manifest)
    pre = tuple(_image(step, context, inputs) if isinstance(step, ImageStep) else step for step in spec.pre)
    post = tuple(
        _classifier(step, first, labels) if isinstance(step, TopKStep | ArgmaxStep | ThresholdStep) else step
        for step in spec.post
    )
    return spec.model_copy(update={"pre": pre, "post": post})


def _image(step: ImageStep, context: ProcessingContext, inputs: list[dict[str, Any]]) -> ImageStep:
    from modelport.processing.image import ImageProcessor

    name = step.input or inputs[0]["name"]
    layout = step.layout or next((s.get("layout") for s in inputs if s["name"] == name), None)
    known = layout if layout in ("NCHW", "NHWC") else None
    processor = ImageProcessor(step.model_copy(update={"input": name, "layout": known}), context)
    return step.model_copy(
        update={"input": processor.name, "layout": processor.layout, "mean": processor.mean, "std": processor.std}
    )


def _classifier(step: TopKStep | ArgmaxStep | ThresholdStep, first: VariantSource, labels: bool) -> Any:
    output = step.output or next((s.name for s in first.manifest.outputs), None)
    return step.model_copy(update={"output": output, "labels": LABELS_FILE if labels else None})


def _copy_samples(samples: tuple[Path, ...], out: Path) -> list[str]:
    names = []
    for index, path in enumerate(samples):
        if not path.is_file():
            raise InvalidArgumentError(f"--sample {path}: no such file")
        name = f"{SAMPLES_DIR}/{index}-{path.name}"
        (out / SAMPLES_DIR).mkdir(exist_ok=True)
        shutil.copyfile(path, out / name)
        names.append(name)
    return names


def _server_answers(
    spec: ProcessingSpec, first: VariantSource, out: Path, files: list[str]
) -> tuple[list[Arrays], list[object]]:
    """The server's tensors and responses for each sample: its processors around the reference model."""
    processors = build_processors(spec, ProcessingContext(out, first.manifest))
    tensors = processors.preprocess([(out / name).read_bytes() for name in files])
    for name, result in zip(files, tensors, strict=True):
        if isinstance(result, ModelportError):
            raise InvalidArgumentError(f"--sample {name}: the server's processing refuses it: {result.message}")
    arrays = [t for t in tensors if not isinstance(t, ModelportError)]
    runtime = open_runtime(first.directory, first.manifest)
    try:
        outputs = [runtime.predict(dict(x)) for x in arrays]
    finally:
        runtime.unload()
    return arrays, processors.postprocess(outputs)
