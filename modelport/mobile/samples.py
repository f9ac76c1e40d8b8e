"""The processing a bundle carries, and its golden raw samples answered by the server's pipeline.

The model's declared processors (``processors:`` of its ``config.yaml``, or ``--processors FILE``)
are written into ``bundle.json`` resolved for the bundled model: the image step names its input,
layout and mean/std, the text step its tokenizer (copied into the bundle), pad id and dtype, the
classifier step its output and the bundle's labels file, so the device needs no defaults of its own.
Each ``--sample`` file (an image, or UTF-8 text) is copied into the bundle and answered, one request
at a time, by the server's pipeline (``modelport.processing`` + the model through
``modelport.runtimes``): the answer ``modelport_edge.py verify`` checks the device's processing against.

Without ``--sample`` there are no raw samples: the golden inputs are tensors after resize, crop and
normalization (or token ids), which cannot be turned back into the file a user would send, so the
bundle report says the device-side processing goes unchecked.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from modelport.errors import InvalidArgumentError, ModelportError
from modelport.mobile.describe import LABELS_FILE
from modelport.mobile.options import BundleOptions
from modelport.mobile.sources import VariantSource
from modelport.processing import ProcessingContext, ProcessingSpec, build_processors
from modelport.processing.config import expand_handler
from modelport.processing.fitting import as_served, check_tensors, probe
from modelport.processing.labels import DEFAULT_LABEL_FILES
from modelport.processing.spec import ArgmaxStep, CustomStep, ImageStep, TextStep, ThresholdStep, TopKStep
from modelport.runtimes.base import Arrays, open_runtime

__all__ = [
    "SAMPLES_DIR",
    "TOKENIZER_FILE",
    "BundleProcessing",
    "bundle_processing",
    "declared_processing",
    "labels_file",
]

SAMPLES_DIR = "samples"
TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "config.yaml"
_CLASSIFIERS = (TopKStep, ArgmaxStep, ThresholdStep)


@dataclass(frozen=True)
class BundleProcessing:
    """What bundle.json says about processing, and the server's inputs of each raw sample."""

    spec: dict[str, Any] | None = None  # bundle.json "processing"
    samples: list[dict[str, Any]] = field(default_factory=list)  # bundle.json "samples": file and response
    inputs: list[Arrays] = field(default_factory=list)  # each sample's tensors, as the server made them
    notes: tuple[str, ...] = ()  # for the bundle report: what the bundle cannot check


def bundle_processing(
    options: BundleOptions,
    first: VariantSource,
    declared: ProcessingSpec | None,
    inputs: list[dict[str, Any]],
    out: Path,
) -> BundleProcessing:
    """The resolved ``declared`` processing of ``first``, its tokenizer and samples copied under ``out``."""
    if declared is None:
        if options.samples:
            raise InvalidArgumentError(
                "--sample needs processors: declare them in the model's config.yaml or pass --processors FILE"
            )
        return BundleProcessing()
    spec = _resolve(declared, first, inputs, out, _definition_path(options, first).parent)
    files = _copy_samples(options.samples, out)
    decoder = next((step.kind for step in spec.pre if isinstance(step, ImageStep | TextStep)), None)
    probe(spec, first.manifest, out)
    if not files:
        return BundleProcessing(spec.model_dump(mode="json"), notes=_unchecked(decoder))
    if decoder is None:
        raise InvalidArgumentError("--sample files are raw images or texts: the processors need an image or text step")
    tensors, responses = _server_answers(spec, first, out, files)
    samples = [{"file": name, "response": response} for name, response in zip(files, responses, strict=True)]
    return BundleProcessing(spec.model_dump(mode="json"), samples, tensors)


def _unchecked(decoder: str | None) -> tuple[str, ...]:
    if decoder is None:
        return ()
    what = "images" if decoder == "image" else "UTF-8 texts"
    return (
        f"no --sample: the bundle carries no raw {what}, so verify cannot check the device's {decoder} processing "
        f"against the server's (golden inputs are model tensors, not files); pass a few --sample files",
    )


def _definition_path(options: BundleOptions, first: VariantSource) -> Path:
    return options.processors or first.directory.parent / CONFIG_FILE


def declared_processing(options: BundleOptions, first: VariantSource) -> ProcessingSpec | None:
    """``--processors FILE`` (a ``processors:`` section or the steps), else the model's config.yaml."""
    path = _definition_path(options, first)
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
    except ValidationError as exc:  # one line, in the server's words for the same config.yaml
        error = exc.errors()[0]
        loc = ("processors", *error["loc"]) if "processors" in data else error["loc"]
        where = ".".join(str(p) for p in loc) or "(top level)"
        raise InvalidArgumentError(f"{path}: invalid at {where}: {error['msg']}") from None
    except ValueError as exc:
        raise InvalidArgumentError(f"{path}: invalid processors: {exc}") from None


def labels_file(declared: ProcessingSpec | None, first: VariantSource) -> Path | None:
    """The labels the server's classifier step reads: the step's file, else (without manifest labels)
    ``index_to_name.json`` or ``labels.txt`` in the version directory; None when the manifest's apply."""
    step = next((s for s in declared.post if isinstance(s, _CLASSIFIERS)), None) if declared else None
    if step is not None and step.labels:
        return first.directory / step.labels
    if any(s.labels for s in first.manifest.outputs):
        return None
    return next((first.directory / n for n in DEFAULT_LABEL_FILES if (first.directory / n).is_file()), None)


def _resolve(
    spec: ProcessingSpec, first: VariantSource, inputs: list[dict[str, Any]], out: Path, beside: Path
) -> ProcessingSpec:
    """Every default the server would take from the manifest, made explicit for the device."""
    if any(isinstance(step, CustomStep) for step in (*spec.pre, *spec.post)):
        raise InvalidArgumentError("a custom processing step is server code: it cannot travel in an edge bundle")
    server_only = next((step.kind for step in spec.post if not isinstance(step, _CLASSIFIERS)), None)
    if server_only is not None:  # the device would answer top-k classes where the server answers this
        raise InvalidArgumentError(
            f"the {server_only} step runs on the server only (the device answers topk, argmax and threshold steps): "
            "pass --processors FILE without it (EdgeModel.run() answers the model's tensors on the device)"
        )
    context = ProcessingContext(first.directory, first.manifest)
    labels = (out / LABELS_FILE).is_file()
    pre = tuple(
        _image(step, context, inputs)
        if isinstance(step, ImageStep)
        else _text(step, first, out, beside)
        if isinstance(step, TextStep)
        else step
        for step in spec.pre
    )
    post = tuple(_classifier(step, first, labels) if isinstance(step, _CLASSIFIERS) else step for step in spec.post)
    return spec.model_copy(update={"pre": pre, "post": post})


def _text(step: TextStep, first: VariantSource, out: Path, beside: Path) -> TextStep:
    """The tokenizer copied into the bundle (from the version directory, else beside the processors
    definition), with the pad id and dtype the server resolves (none where the model's inputs differ: int32 ids
    and an int64 mask; the device then takes each input's, as the server does)."""
    from modelport.processing.text import TextProcessor

    found = next((d / step.tokenizer for d in (first.directory, beside) if (d / step.tokenizer).is_file()), None)
    if found is None:
        raise InvalidArgumentError(
            f"text step: no tokenizer {step.tokenizer} in {first.directory} or {beside}; put the model's "
            "tokenizer.json in its version directory"
        )
    shutil.copyfile(found, out / TOKENIZER_FILE)
    processor = TextProcessor(
        step.model_copy(update={"tokenizer": TOKENIZER_FILE}), ProcessingContext(out, first.manifest)
    )
    resolved = {dtype.name for dtype in processor.dtypes.values()}
    dtype = resolved.pop() if len(resolved) == 1 else None
    return step.model_copy(update={"tokenizer": TOKENIZER_FILE, "pad_id": processor.pad_id, "dtype": dtype})


def _image(step: ImageStep, context: ProcessingContext, inputs: list[dict[str, Any]]) -> ImageStep:
    from modelport.processing.image import ImageProcessor

    name = step.input or inputs[0]["name"]
    layout = step.layout or next((s.get("layout") for s in inputs if s["name"] == name), None)
    known = layout if layout in ("NCHW", "NHWC") else None
    processor = ImageProcessor(step.model_copy(update={"input": name, "layout": known}), context)
    resolved = {"input": processor.name, "layout": processor.layout, "mean": processor.mean, "std": processor.std}
    return step.model_copy(update={**resolved, "dtype": processor.step.dtype, "scale": processor.step.scale})


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
    """The server's tensors and responses for each sample, each its own request (a text padded to the
    longest pads to its own length, as on the device): its processors around the reference model."""
    processors = build_processors(spec, ProcessingContext(out, first.manifest))
    decoder = next((step for step in spec.pre if isinstance(step, ImageStep | TextStep)), None)
    tensors = [processors.preprocess([(out / name).read_bytes()])[0] for name in files]
    for name, result in zip(files, tensors, strict=True):
        if isinstance(result, ModelportError):
            raise InvalidArgumentError(f"--sample {name}: the server's processing refuses it: {result.message}")
    arrays = [as_served(t, first.manifest) for t in tensors if not isinstance(t, ModelportError)]
    for name, sample in zip(files, arrays, strict=True):
        check_tensors(f"--sample {name}", sample, first.manifest, decoder)
    runtime = open_runtime(first.directory, first.manifest)
    try:
        outputs = [runtime.predict(dict(x)) for x in arrays]
    finally:
        runtime.unload()
    if not first.manifest.max_batch_size:  # the server's rows: each output under a batch dimension of 1
        outputs = [{k: v[None] for k, v in row.items()} for row in outputs]
    if not spec.post:  # the server answers the model's outputs: as JSON, {output: [[...]]}
        return arrays, [{k: v.tolist() for k, v in row.items()} for row in outputs]
    return arrays, processors.postprocess(outputs)
