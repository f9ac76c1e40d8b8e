"""What a bundle says about its tensors: layout, normalization, labels, and their TFLite Metadata."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modelport.errors import InvalidArgumentError, NotFoundError
from modelport.manifest import ModelManifest, TensorSpec
from modelport.mobile.modelport_edge import channel_axis
from modelport.mobile.options import BundleOptions
from modelport.mobile.tflite_metadata import AssociatedFile, ModelMetadata, TensorMetadata
from modelport.parity import is_classifier
from modelport.processing.labels import read_labels as read_indexed_labels

__all__ = ["LABELS_FILE", "bundle_inputs", "bundle_outputs", "model_metadata", "read_labels"]

LABELS_FILE = "labels.txt"


def bundle_inputs(manifest: ModelManifest, options: BundleOptions) -> list[dict[str, Any]]:
    """Input specs for bundle.json: layout (the manifest's, else the framework's for 4-D) and mean/std."""
    specs = []
    for spec in manifest.inputs:
        layout = spec.layout or _default_layout(spec, manifest.source.framework)
        mean, std = (options.mean, options.std) if options.mean is not None else (spec.mean, spec.std)
        entry: dict[str, Any] = {"name": spec.name, "dtype": spec.dtype, "shape": list(spec.shape), "layout": layout}
        if mean is not None and std is not None:
            _check_channels(spec, layout, len(mean))
            entry.update(mean=list(mean), std=list(std))
        if spec.value_range is not None:
            entry["value_range"] = list(spec.value_range)
        specs.append(entry)
    return specs


def _default_layout(spec: TensorSpec, framework: str) -> str | None:
    if len(spec.shape) == 4 and spec.dtype.startswith("float"):
        return "NCHW" if framework == "torch" else "NHWC"
    return None


def _check_channels(spec: TensorSpec, layout: str | None, count: int) -> None:
    if count == 1:
        return
    axis = channel_axis(layout, len(spec.shape))
    channels = spec.shape[axis] if spec.shape else 0
    if channels != count:
        raise InvalidArgumentError(
            f"--mean/--std give {count} values but input {spec.name!r} ({spec.describe()}, layout {layout}) "
            f"has {channels} channels; give 1 value or one per channel"
        )


def _scores(spec: TensorSpec, manifest: ModelManifest) -> bool:
    """Class scores: ``[batch, classes]``, or ``[classes]`` from a model without a batch dimension."""
    unbatched = not manifest.max_batch_size and len(spec.shape) == 1 and spec.dtype.startswith("float")
    return is_classifier(spec) or (unbatched and spec.shape[0] > 1)


def bundle_outputs(manifest: ModelManifest, labels: list[str]) -> list[dict[str, Any]]:
    """Output specs for bundle.json; the first classifier output carries the labels file."""
    specs, labelled = [], False
    for spec in manifest.outputs:
        entry: dict[str, Any] = {"name": spec.name, "dtype": spec.dtype, "shape": list(spec.shape)}
        if _scores(spec, manifest):
            entry["classifier"] = True
            if labels and not labelled:
                entry["labels"] = LABELS_FILE
                labelled = True
        specs.append(entry)
    return specs


def read_labels(
    options: BundleOptions, manifest: ModelManifest, directory: Path, processing: Path | None = None
) -> list[str]:
    """``--labels FILE``, else the processing's labels file (``labels.txt`` or TorchServe's
    ``index_to_name.json``), else the manifest's, else class indices; checked against the classes (a file the
    server reads may name fewer: it answers the others by their index, and so does the bundle)."""
    classifier = next((s for s in manifest.outputs if _scores(s, manifest)), None)
    declared = directory / classifier.labels if classifier and classifier.labels else None
    path = options.labels or processing or declared
    if path is None:
        return [str(i) for i in range(classifier.shape[-1])] if classifier and classifier.shape[-1] > 0 else []
    if not path.is_file():
        raise NotFoundError(f"labels file {path} not found")
    if classifier is None:
        raise InvalidArgumentError(
            f"labels file {path} given but {manifest.name} has no classifier output ([batch, classes], or [classes] "
            "without a batch dimension)"
        )
    if path.suffix == ".json":
        return _indexed_labels(path, classifier.shape[-1])
    names = read_indexed_labels(path)  # line i names class i, as the server reads it
    count, classes = max(names.names, default=-1) + 1, classifier.shape[-1]
    served = options.labels is None and count < classes  # the server's own file: it answers the rest by index
    if classes > 0 and count != classes and not served:
        raise InvalidArgumentError(
            f"labels file {path} has {count} labels but output {classifier.name!r} has {classes} classes"
        )
    return [names(i) for i in range(max(count, classes))]


def _indexed_labels(path: Path, classes: int) -> list[str]:
    """``index_to_name.json`` read as the server reads it; a class without a name is its index."""
    names = read_indexed_labels(path)
    count = classes if classes > 0 else max(names.names, default=-1) + 1
    outside = sorted(i for i in names.names if not 0 <= i < count)
    if outside:
        raise InvalidArgumentError(f"labels file {path} names class {outside[0]}, but the model has {count} classes")
    return [names(i) for i in range(count)]


def model_metadata(
    manifest: ModelManifest,
    variant: str,
    inputs: list[dict[str, Any]],
    outputs: list[dict[str, Any]],
    order: tuple[list[str], list[str]],
    processing: dict[str, Any] | None = None,
) -> ModelMetadata:
    """TFLite Metadata for one variant; tensors in the model's own input/output order (``order``).

    An input filled by the bundle's image step is described by that step: its colour space and its
    normalization in pixel units (``(pixel - mean) / std``, what the Task Library applies)."""
    by_name = {s["name"]: s for s in (*inputs, *outputs)}
    for step in (processing or {}).get("pre", []):
        if step["kind"] == "image" and step["input"] in by_name:
            by_name[step["input"]] = _with_image_step(by_name[step["input"]], step)
    source = manifest.source
    return ModelMetadata(
        name=manifest.family,
        description=(
            f"{manifest.family} ({variant}), exported by modelport from a {source.framework} {source.kind} "
            f"({source.location}); golden vectors and checksums in bundle.json"
        ),
        version=f"{manifest.version} ({variant})",
        inputs=tuple(_tensor(by_name[n], is_input=True) for n in order[0]),
        outputs=tuple(_tensor(by_name[n], is_input=False) for n in order[1]),
        author="modelport",
    )


def _with_image_step(spec: dict[str, Any], step: dict[str, Any]) -> dict[str, Any]:
    """The input as the image step makes it: ``pixel * scale`` then ``(x - mean) / std`` is
    ``(pixel - mean / scale) / (std / scale)``, NormalizationOptions in pixel units; in the step's layout
    (a uint8 input has none of its own: the step's NHWC makes it an image to the Task Library)."""
    scale = step["scale"]
    mean, std = step["mean"] or [0.0], step["std"] or [1.0]
    return {
        **spec,
        "layout": step["layout"] or spec.get("layout"),
        "mean": [m / scale for m in mean],
        "std": [s / scale for s in std],
        "color_space": "GRAYSCALE" if step["mode"] in ("L", "LA") else "RGB",
    }


def _tensor(spec: dict[str, Any], is_input: bool) -> TensorMetadata:
    shape, layout = spec["shape"], spec.get("layout")
    image = is_input and layout == "NHWC" and len(shape) == 4 and shape[3] in (1, 3)
    described = f"{spec['dtype']} {shape}" + (f" {layout}" if layout else "")
    value_range = spec.get("value_range")
    return TensorMetadata(
        name=spec["name"],
        description=("class scores, " if spec.get("classifier") else "") + described,
        content="image" if image else "feature",
        color_space=spec.get("color_space", "GRAYSCALE" if shape[3] == 1 else "RGB") if image else None,
        mean=tuple(spec["mean"]) if "mean" in spec else None,
        std=tuple(spec["std"]) if "std" in spec else None,
        min=(value_range[0],) if value_range else None,
        max=(value_range[1],) if value_range else None,
        files=(AssociatedFile(LABELS_FILE, "one label per class, in output order"),) if "labels" in spec else (),
    )
