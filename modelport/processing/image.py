"""Image preprocessing with Pillow, reproducing torchvision's PIL code paths exactly.

``resize``, ``center_crop`` and ``to_array`` follow ``torchvision.transforms`` (``Resize``,
``CenterCrop``, ``ToTensor``, ``Normalize``) on PIL images: the same output sizes, rounding,
zero padding and float32 arithmetic, so a model trained with those transforms sees the same
tensor. Decoding is defensive: the byte and pixel limits are checked before any pixel is
decoded, and every malformed payload is an ``InvalidArgumentError`` naming the input.
"""

from __future__ import annotations

import base64
import binascii
import functools
import io
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from modelport.errors import InvalidArgumentError, PayloadTooLargeError, SpecError, summarize
from modelport.manifest import TensorSpec
from modelport.processing.base import ProcessingContext, map_items
from modelport.processing.spec import ImageStep, Size
from modelport.tensors import Arrays, lookup_dtype

__all__ = ["ImageProcessor", "center_crop", "decode_image", "resize", "to_array"]

FILTERS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}
CHANNELS = {"RGB": 3, "RGBA": 4, "L": 1, "LA": 2}


def decode_image(data: object, step: ImageStep, name: str) -> Image.Image:
    """Decode ``data`` (bytes) to a loaded image in ``step.mode``, enforcing the step's limits."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InvalidArgumentError(f"input {name!r}: expected image bytes, got {type(data).__name__}")
    size = memoryview(data).nbytes
    if size == 0:
        raise InvalidArgumentError(f"input {name!r}: empty payload (0 bytes), expected an image")
    if size > step.max_bytes:
        raise PayloadTooLargeError(f"input {name!r}: image of {size} bytes is over the limit of {step.max_bytes}")
    image = _open(bytes(data), step, name)
    width, height = image.size
    if width * height > step.max_pixels:
        raise InvalidArgumentError(
            f"input {name!r}: image of {width}x{height} pixels is over the limit of {step.max_pixels} pixels"
        )
    try:
        image.load()
        if step.exif_transpose:
            image = ImageOps.exif_transpose(image)
        return image if image.mode == step.mode else image.convert(step.mode)
    except Exception as exc:  # decoders raise OSError, ValueError, SyntaxError, struct.error...: all bad input
        raise InvalidArgumentError(f"input {name!r}: cannot decode the image ({summarize(exc)})") from None


def _open(data: bytes, step: ImageStep, name: str, encoded: bool = False) -> Image.Image:
    """Read the header only (Pillow decodes lazily), in the allowed formats; an image's base64 text is
    read as the image, as TorchServe's vision handlers read a text payload (``{"data": "<base64>"}``)."""
    try:
        return Image.open(io.BytesIO(data), formats=list(step.formats))
    except Image.DecompressionBombError:
        raise InvalidArgumentError(
            f"input {name!r}: image dimensions are over Pillow's decompression-bomb limit"
        ) from None
    except UnidentifiedImageError:
        decoded = None if encoded else _base64(data)
        if decoded is not None:
            return _open(decoded, step, name, encoded=True)
        raise InvalidArgumentError(
            f"input {name!r}: not an image in an accepted format ({', '.join(step.formats)})"
            + (", nor the base64 text of one" if encoded else "")
        ) from None
    except Exception as exc:  # a header that parses partway
        raise InvalidArgumentError(f"input {name!r}: unreadable image header ({summarize(exc)})") from None


_BASE64 = re.compile(rb"[A-Za-z0-9+/]+={0,2}")


def _base64(data: bytes) -> bytes | None:
    """``data`` decoded when it is base64 text (standard alphabet, padded; surrounding whitespace allowed)."""
    text = data.strip()
    if not text or len(text) % 4 or not _BASE64.fullmatch(text):
        return None
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error:
        return None


def resize(image: Image.Image, size: Size, interpolation: str = "bilinear") -> Image.Image:
    """``transforms.Resize(size)`` on a PIL image: an int sets the shorter side, ``(h, w)`` both."""
    width, height = image.size
    if isinstance(size, int):
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = size, int(size * long / short)
        new_w, new_h = (new_short, new_long) if width <= height else (new_long, new_short)
    else:
        new_h, new_w = size
    if (new_w, new_h) == (width, height):
        return image
    return image.resize((new_w, new_h), FILTERS[interpolation])


def center_crop(image: Image.Image, size: Size) -> Image.Image:
    """``transforms.CenterCrop(size)`` on a PIL image, zero-padding sides smaller than the crop."""
    crop_h, crop_w = (size, size) if isinstance(size, int) else size
    width, height = image.size
    if crop_w > width or crop_h > height:
        border = (
            (crop_w - width) // 2 if crop_w > width else 0,
            (crop_h - height) // 2 if crop_h > height else 0,
            (crop_w - width + 1) // 2 if crop_w > width else 0,
            (crop_h - height + 1) // 2 if crop_h > height else 0,
        )
        bands = len(image.getbands())
        image = ImageOps.expand(image, border=border, fill=(0,) * bands if bands > 1 else 0)
        width, height = image.size
        if (crop_w, crop_h) == (width, height):
            return image
    top = round((height - crop_h) / 2.0)  # torchvision: int(round(...)); Python's round is already int
    left = round((width - crop_w) / 2.0)
    return image.crop((left, top, left + crop_w, top + crop_h))


def to_array(
    image: Image.Image,
    scale: float,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    channels_first: bool = False,
) -> np.ndarray[Any, np.dtype[np.float32]]:
    """``ToTensor`` then ``Normalize``, HWC (or CHW): ``pixels * scale`` rounded once to float32, then
    ``(x - mean) / std`` in float32 (bit-identical to torchvision's ``div(255)`` and ``sub_/div_``).

    A byte has 256 values, so each channel's arithmetic is done once per value, in a lookup table,
    and the image is one gather per channel (no float64 image, no temporaries, no transpose copy)."""
    pixels = np.asarray(image, dtype=np.uint8)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    channels = pixels.shape[2]
    tables = _tables(float(scale), tuple(mean) if mean is not None and std is not None else None, tuple(std or ()))
    shape = (channels, *pixels.shape[:2]) if channels_first else pixels.shape
    out: np.ndarray[Any, np.dtype[np.float32]] = np.empty(shape, np.float32)
    for c in range(channels):
        table = tables[c % len(tables)]
        np.take(table, pixels[:, :, c], out=out[c] if channels_first else out[:, :, c])
    return out


@functools.lru_cache(maxsize=64)
def _tables(
    scale: float, mean: tuple[float, ...] | None, std: tuple[float, ...]
) -> tuple[np.ndarray[Any, np.dtype[np.float32]], ...]:
    """Per channel, what each byte value becomes (one table for every channel without mean/std)."""
    values = (np.arange(256, dtype=np.float64) * scale).astype(np.float32)
    if mean is None:
        return (values,)
    return tuple(
        (np.subtract(values, np.float32(m)) / np.float32(s)).astype(np.float32) for m, s in zip(mean, std, strict=True)
    )


class ImageProcessor:
    """The ``image`` step: one image per item in, ``{input: array}`` with a batch dim of 1 out."""

    def __init__(self, step: ImageStep, context: ProcessingContext) -> None:
        spec = context.input_spec(step.input)
        if step.input is not None and context.manifest is not None and spec is None:
            names = ", ".join(s.name for s in context.manifest.inputs)
            raise SpecError(f"image step: the model has no input {step.input!r} (inputs: {names})")
        step = _in_model_dtype(step, spec)
        self.step = step
        self.name = step.input or (spec.name if spec else "input")
        self.layout = step.layout or _default_layout(spec, context)
        self.mean, self.std = (step.mean, step.std) if step.mean is not None else _spec_norm(spec)
        if not step.normalize:
            self.mean, self.std = None, None
        if self.mean is not None and len(self.mean) not in (1, CHANNELS[step.mode]):
            raise SpecError(
                f"image step for {self.name!r}: {len(self.mean)} mean/std values for mode {step.mode} "
                f"({CHANNELS[step.mode]} channels)"
            )
        self.dtype = lookup_dtype(step.dtype).np_dtype()
        if np.issubdtype(self.dtype, np.integer):
            _check_integer_values(self, step)

    def __call__(self, items: Sequence[object], /) -> list[object]:
        """Each item's tensors, or its error."""
        return list(map_items(self.process, items))

    def process(self, data: object) -> Arrays:
        """One image's tensors: ``{input: array}`` shaped ``(1, C, H, W)`` or ``(1, H, W, C)``."""
        image = decode_image(data, self.step, self.name)
        if self.step.resize is not None:
            image = resize(image, self.step.resize, self.step.interpolation)
        if self.step.center_crop is not None:
            image = center_crop(image, self.step.center_crop)
        values = to_array(image, self.step.scale, self.mean, self.std, channels_first=self.layout == "NCHW")
        return {self.name: values[None] if self.dtype == np.float32 else values[None].astype(self.dtype)}


def _check_integer_values(processor: ImageProcessor, step: ImageStep) -> None:
    """An integer ``dtype`` holds the values exactly (whole numbers in its range), or the step is refused:
    a cast would truncate ``pixel / 255`` to 0 or wrap 200 around in int8."""
    mean, std = processor.mean, processor.std
    tables = _tables(float(step.scale), tuple(mean) if mean is not None and std is not None else None, tuple(std or ()))
    values = np.concatenate(tables)
    info = np.iinfo(processor.dtype)
    if not (np.all(values == np.floor(values)) and values.min() >= info.min and values.max() <= info.max):
        raise SpecError(
            f"image step for {processor.name!r}: dtype {step.dtype} cannot hold the pixel values it makes "
            f"({values.min():g} to {values.max():g} with scale {step.scale:g}"
            f"{' and mean/std' if mean is not None else ''}); an integer dtype takes whole values in "
            f"{info.min}..{info.max} (uint8 pixels: scale 1, normalize: false)"
        )


def _in_model_dtype(step: ImageStep, spec: TensorSpec | None) -> ImageStep:
    """A step that names no ``dtype`` makes the model input's (a uint8 model's pixels, ``scale`` 1 unless given):
    float32 for a uint8 model made every request a 400 no client could fix."""
    if "dtype" in step.model_fields_set or spec is None:
        return step
    dtype = lookup_dtype(spec.dtype)
    if not (dtype.is_float or dtype.is_integer) or dtype.name == step.dtype:
        return step
    unscaled = dtype.is_integer and "scale" not in step.model_fields_set
    return step.model_copy(update={"dtype": dtype.name, **({"scale": 1.0} if unscaled else {})})


def _default_layout(spec: TensorSpec | None, context: ProcessingContext) -> str:
    """The manifest's layout, else the source framework's (TensorFlow/Keras images are NHWC, as the edge
    bundle reads them), else NCHW (PyTorch's, and most ONNX models')."""
    if spec is not None and spec.layout in ("NCHW", "NHWC"):
        return spec.layout
    framework = context.manifest.source.framework if context.manifest is not None else None
    return "NHWC" if framework == "tf" and spec is not None and len(spec.shape) == 4 else "NCHW"


def _spec_norm(spec: TensorSpec | None) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
    return (spec.mean, spec.std) if spec is not None and spec.mean is not None else (None, None)
