"""Whether a bundle's processing makes the tensors its model takes, and what to set where it does not.

The server validates every request's tensors against the manifest before batching; on the device LiteRT would
resize the model's input to whatever it is given. So the bundle builder checks the server's tensors of each
``--sample``, and of a probe where the step alone fixes the shape (a text step's width, an image step that resizes
to ``[h, w]`` or crops): without samples a bundle whose every image or text fails on the device was built.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from modelport.errors import InvalidArgumentError, ModelportError
from modelport.manifest import ModelManifest, TensorSpec
from modelport.processing.base import ProcessingContext, without_batch_dim
from modelport.processing.pipeline import Processors, build_processors, check_text_feeds
from modelport.processing.spec import ImageStep, ProcessingSpec, TextStep
from modelport.tensors import Arrays, format_shape, lookup_dtype, shape_matches

__all__ = ["as_served", "check_tensors", "probe", "probe_feeds"]

Decoder = ImageStep | TextStep
_MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}


def as_served(tensors: Arrays, manifest: ModelManifest) -> Arrays:
    """The processors' tensors as the server runs them: a model without a batch dimension (``max_batch_size: 0``)
    takes them without the batch dimension of 1 the processors made, where its input has one dimension less."""
    return tensors if manifest.max_batch_size else without_batch_dim(tensors, manifest.inputs)


def check_tensors(label: str, tensors: Arrays, manifest: ModelManifest, decoder: Decoder | None) -> None:
    """Refuse tensors the model does not take, naming the input, both shapes and (where it can tell) what to set."""
    extra = sorted(set(tensors) - {spec.name for spec in manifest.inputs})
    if extra:  # LiteRT's signature runner: "Invalid Input name"
        takes = ", ".join(spec.name for spec in manifest.inputs)
        raise InvalidArgumentError(
            f"{label}: the processors make {extra}, which {manifest.name} does not take (it takes {takes})"
        )
    for spec in manifest.inputs:
        value = tensors.get(spec.name)
        if value is None:
            raise InvalidArgumentError(
                f"{label}: the processors make {sorted(tensors)}, not the model's input {spec.name!r}"
            )
        if not shape_matches(spec.shape, value.shape):
            raise InvalidArgumentError(
                f"{label}: the processors make input {spec.name!r} of shape {format_shape(value.shape)}, "
                f"but {manifest.name} takes {spec.describe()}: "
                + (_hint(decoder, spec, value.shape) or "do the processors belong to this model?")
            )
        if value.dtype != lookup_dtype(spec.dtype).np_dtype():
            step = f"set the {decoder.kind} step's dtype: {spec.dtype}" if decoder else "do they belong to this model?"
            raise InvalidArgumentError(
                f"{label}: the processors make input {spec.name!r} as {value.dtype}, but {manifest.name} takes "
                f"{spec.describe()}: {step}"
            )


def probe(spec: ProcessingSpec, manifest: ModelManifest, directory: Path, built: Processors | None = None) -> None:
    """Run a probe text or image through the processors (``built``, else made from ``spec``) and check what they
    make (an image's size where the step alone fixes it, its layout and mode always): the bundle builder (with or
    without ``--sample``) and the server when it loads the version (else every request would be a 400)."""
    check_text_feeds(spec, manifest)
    processors = built if built is not None else build_processors(spec, ProcessingContext(directory, manifest))
    _probe(spec, manifest, processors, feeds_only=False)


def probe_feeds(spec: ProcessingSpec, manifest: ModelManifest, built: Processors) -> None:
    """:func:`probe` for a pipeline's ``pre`` step: ``manifest`` holds the model inputs it feeds, named as the step
    names its tensors; what else it makes goes to other steps, so only those are checked."""
    _probe(spec, manifest, built, feeds_only=True)


def _probe(spec: ProcessingSpec, manifest: ModelManifest, processors: Processors, feeds_only: bool) -> None:
    decoder = next((step for step in spec.pre if isinstance(step, ImageStep | TextStep)), None)
    if decoder is None:
        return
    payload = b"a probe text" if isinstance(decoder, TextStep) else _probe_image()
    [tensors] = processors.preprocess([payload])
    if isinstance(tensors, ModelportError):
        return
    if feeds_only:
        tensors = {fed.name: tensors[fed.name] for fed in manifest.inputs if fed.name in tensors}
    served = as_served(tensors, manifest)
    if isinstance(decoder, ImageStep) and not _fixed_size(decoder):
        _check_channels(served, manifest, decoder)  # the size follows each image; the layout and mode do not
        served = _sized_as_the_model(served, manifest, decoder)
    check_tensors(f"{decoder.kind} step", served, manifest, decoder)


def _fixed_size(step: ImageStep) -> bool:
    return step.center_crop is not None or isinstance(step.resize, tuple)


def _check_channels(tensors: Arrays, manifest: ModelManifest, step: ImageStep) -> None:
    """An image step that keeps each image's size still fixes the channel axis: a model that takes another layout
    or colour mode would refuse every image (an NHWC step before an NCHW model was ready, and every request a 400)."""
    channels, other = (-1, -3) if step.layout == "NHWC" else (-3, -1)
    for spec in manifest.inputs:
        made = tensors.get(spec.name)
        if made is None or made.ndim != len(spec.shape) or made.ndim < 3:
            continue  # check_tensors names these
        want, have = spec.shape[channels], made.shape[channels]
        if want in (-1, have):
            continue
        if spec.shape[other] == have:
            hint = f"set layout: {'NCHW' if step.layout == 'NHWC' else 'NHWC'}"
        else:
            hint = f"set mode: {_MODES[want]}" if want in _MODES else "do the processors belong to this model?"
        raise InvalidArgumentError(
            f"image step: the processors make input {spec.name!r} of shape {format_shape(made.shape)} ({step.layout}, "
            f"{have} channels), but {manifest.name} takes {spec.describe()}: {hint}"
        )


def _sized_as_the_model(tensors: Arrays, manifest: ModelManifest, step: ImageStep) -> Arrays:
    """The probe's tensors with the model's fixed height and width: clients may send images of that size."""
    axes = (-3, -2) if step.layout == "NHWC" else (-2, -1)
    sized = dict(tensors)
    for spec in manifest.inputs:
        made = tensors.get(spec.name)
        if made is None or made.ndim != len(spec.shape) or made.ndim < 3:
            continue
        shape = list(made.shape)
        for axis in axes:
            shape[axis] = spec.shape[axis] if spec.shape[axis] > 0 else shape[axis]
        sized[spec.name] = np.broadcast_to(np.zeros((), made.dtype), tuple(shape))
    return sized


def _probe_image() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 48)).save(buffer, "PNG")
    return buffer.getvalue()


def _hint(decoder: Decoder | None, spec: TensorSpec, made: tuple[int, ...]) -> str | None:
    if isinstance(decoder, TextStep):
        return _text_hint(spec.shape)
    if isinstance(decoder, ImageStep):
        return _image_hint(decoder, spec.shape, made)
    return None


def _text_hint(shape: tuple[int, ...]) -> str | None:
    """What to set when a text step's width is not the model's fixed sequence length (a TFLite model's, pinned)."""
    if not shape or shape[-1] == -1:
        return None
    return (
        f"the model takes exactly {shape[-1]} tokens a text: set the text step's max_length: {shape[-1]} "
        "and padding: max_length"
    )


def _image_hint(step: ImageStep, shape: tuple[int, ...], made: tuple[int, ...]) -> str | None:
    """The layout, colour mode or size that would make the model's image input (axes counted from the end, so a
    model without a batch dimension reads alike)."""
    if len(shape) != len(made) or len(shape) < 3:
        return None
    channels, size = (-1, (-3, -2)) if step.layout == "NHWC" else (-3, (-2, -1))
    other, other_size = (-3, (-2, -1)) if step.layout == "NHWC" else (-1, (-3, -2))
    want_size, made_size = tuple(shape[a] for a in size), tuple(made[a] for a in size)
    if shape[other] == made[channels] and tuple(shape[a] for a in other_size) == made_size:
        flipped = "NCHW" if step.layout == "NHWC" else "NHWC"
        return f"the image step makes {step.layout} but the model's input is {flipped}: set layout: {flipped}"
    if shape[channels] != made[channels] and shape[channels] in _MODES:
        return f"the model takes {shape[channels]}-channel images: set mode: {_MODES[shape[channels]]}"
    if -1 not in want_size and want_size != made_size:
        h, w = want_size
        return f"the model takes {h}x{w} images (height x width): resize (and center_crop) to [{h}, {w}]"
    return None
