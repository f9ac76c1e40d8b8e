"""The processing definition: plain, frozen data that says how requests become tensors and back.

A :class:`ProcessingSpec` holds two lists of steps. ``pre`` turns each request's payload (image
bytes, text) into the model's input tensors; ``post`` turns each request's output tensors into the
response (``{label: probability}`` dicts, masks, boxes). Steps are tagged by ``kind`` so the same
definition round-trips through ``config.yaml``, JSON (:meth:`ProcessingSpec.to_json`) and, later,
the manifest and edge bundles. Nothing here imports Pillow or ``tokenizers``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from modelport.errors import InvalidArgumentError
from modelport.tensors import lookup_dtype

__all__ = [
    "ArgmaxStep",
    "CustomStep",
    "DetectionStep",
    "IdentityStep",
    "ImageStep",
    "PostStep",
    "PreStep",
    "ProcessingSpec",
    "SegmentationStep",
    "TextStep",
    "ThresholdStep",
    "TopKStep",
]

Interpolation = Literal["nearest", "bilinear", "bicubic", "lanczos", "box", "hamming"]
ImageFormat = Literal["JPEG", "PNG", "WEBP", "BMP", "GIF"]
Activation = Literal["softmax", "sigmoid", "none"]
Size = int | tuple[int, int]


class _Step(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _positive_size(value: Size | None) -> Size | None:
    sizes = (value,) if isinstance(value, int) else (value or ())
    if any(s < 1 for s in sizes):
        raise ValueError(f"sizes must be positive, got {value}")
    return value


class ImageStep(_Step):
    """Decode an image and make it the model's input, as torchvision's PIL transforms would.

    Order: decode (first frame) -> EXIF orientation -> colour ``mode`` -> ``resize`` (an int: the
    shorter side, like ``transforms.Resize(int)``; ``[h, w]``: exactly) -> ``center_crop`` (padding
    with zeros when larger, like ``transforms.CenterCrop``) -> ``* scale`` -> ``(x - mean) / std``
    -> ``layout`` and ``dtype``, with a batch dimension of 1. ``mean``/``std`` default to the
    manifest's for the input (in the units after ``scale``); ``normalize: false`` skips them.
    A size may also be written as torchvision takes it, ``[256]`` for ``256``. ``scale`` defaults to
    1/255 for a float ``dtype`` and to 1 (the pixel values themselves) for an integer one.
    """

    kind: Literal["image"] = "image"
    input: str | None = Field(None, description="model input to fill (default: the manifest's first input)")
    formats: tuple[ImageFormat, ...] = ("JPEG", "PNG", "WEBP", "BMP", "GIF")
    max_bytes: int = Field(20 * 1024 * 1024, ge=1)
    max_pixels: int = Field(40_000_000, ge=1, description="width x height, checked from the header before decoding")
    exif_transpose: bool = True
    mode: Literal["RGB", "RGBA", "L", "LA"] = "RGB"
    resize: Size | None = None
    interpolation: Interpolation = "bilinear"
    center_crop: Size | None = None
    scale: float = 1 / 255
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    normalize: bool = True
    layout: Literal["NCHW", "NHWC"] | None = Field(
        None, description="default: the manifest's, else NHWC for a TensorFlow/Keras model, else NCHW"
    )
    dtype: str = "float32"

    @model_validator(mode="before")
    @classmethod
    def _integer_pixels_unscaled(cls, data: object) -> object:
        if isinstance(data, dict) and "scale" not in data and _is_integer(data.get("dtype", "float32")):
            return {**data, "scale": 1.0}
        return data

    @field_validator("resize", "center_crop", mode="before")
    @classmethod
    def _one_value_is_an_int(cls, value: object) -> object:
        """torchvision's ``Resize([256])`` and ``CenterCrop([224])`` are ``Resize(256)``, ``CenterCrop(224)``."""
        return value[0] if isinstance(value, list | tuple) and len(value) == 1 else value

    @field_validator("resize", "center_crop")
    @classmethod
    def _positive(cls, value: Size | None) -> Size | None:
        return _positive_size(value)

    @field_validator("layout", mode="before")
    @classmethod
    def _layout_in_any_case(cls, value: object) -> object:
        """``nhwc`` is ``NHWC``, as ``modelport export --layout pixels:nhwc`` takes it."""
        return value.upper() if isinstance(value, str) else value

    @field_validator("dtype")
    @classmethod
    def _numeric_dtype(cls, value: str) -> str:
        dtype = lookup_dtype(value)
        if not (dtype.is_float or dtype.is_integer):
            raise ValueError(f"an image becomes a numeric tensor, not {dtype.name}")
        return dtype.name

    @model_validator(mode="after")
    def _mean_with_std(self) -> ImageStep:
        if (self.mean is None) != (self.std is None):
            raise ValueError("mean and std go together")
        if self.mean is not None and self.std is not None:
            if len(self.mean) != len(self.std):
                raise ValueError(f"mean has {len(self.mean)} values but std has {len(self.std)}")
            if any(s == 0 for s in self.std):
                raise ValueError("std values must be non-zero")
        return self


def _is_integer(dtype: object) -> bool:
    try:
        return isinstance(dtype, str) and lookup_dtype(dtype).is_integer
    except InvalidArgumentError:
        return False  # the field validator names the bad dtype


class TextStep(_Step):
    """Tokenize text with a Hugging Face ``tokenizer.json`` into ids, attention mask and token types.

    Texts longer than ``max_length`` tokens are truncated, or refused with a 400 when
    ``truncation`` is false. ``padding``: every item to ``max_length``, or to the longest item of
    the batch. Each produced tensor goes to the model input named here (``null`` = not produced), in
    ``dtype`` (default: the manifest's dtype of that input, else int64).
    """

    kind: Literal["text"] = "text"
    tokenizer: str = Field("tokenizer.json", description="path relative to the model version directory")
    max_length: int = Field(128, ge=1)
    truncation: bool = True
    padding: Literal["max_length", "longest"] = "max_length"
    add_special_tokens: bool = True
    pad_id: int | None = Field(None, ge=0, description="default: the tokenizer's padding id, else [PAD], else 0")
    input_ids: str = "input_ids"
    attention_mask: str | None = "attention_mask"
    token_type_ids: str | None = None
    dtype: Literal["int64", "int32"] | None = None


class CustomStep(_Step):
    """Trusted code: ``module:callable`` from ``module.py`` in the model version directory.

    The callable takes the batch (a list, one item per request) and returns a list of the same length;
    an item may be returned as a ``ModelportError`` instance to fail that request alone.
    """

    kind: Literal["custom"] = "custom"
    callable: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*:[A-Za-z_][A-Za-z0-9_]*$")


class _Classifier(_Step):
    output: str | None = Field(None, description="model output to read (default: the manifest's first output)")
    activation: Activation = "none"
    labels: str | None = Field(None, description="index_to_name.json or labels.txt (default: manifest, then either)")


class TopKStep(_Classifier):
    """The ``k`` best classes as ``{label: score}``, best first (TorchServe's image_classifier);
    ``k: null`` gives every class in index order (TorchServe's text_classifier)."""

    kind: Literal["topk"] = "topk"
    k: int | None = Field(5, ge=1)


class ArgmaxStep(_Classifier):
    """The best class as ``{"label": name, "index": i, "score": s}``."""

    kind: Literal["argmax"] = "argmax"


class ThresholdStep(_Classifier):
    """Multi-label: every class scoring at least ``threshold`` as ``{label: score}``, best first."""

    kind: Literal["threshold"] = "threshold"
    threshold: float = 0.5


class IdentityStep(_Step):
    """The output tensors as nested lists, ``{name: [...]}`` (all outputs, or the ones named)."""

    kind: Literal["identity"] = "identity"
    outputs: tuple[str, ...] = ()


class SegmentationStep(_Step):
    """TorchServe's image_segmenter: softmax over classes, then per pixel ``[class, score]`` (H x W x 2)."""

    kind: Literal["segmentation"] = "segmentation"
    output: str | None = None


class DetectionStep(_Step):
    """TorchServe's object_detector: ``[{label: [x1, y1, x2, y2], "score": s}, ...]`` above ``threshold``."""

    kind: Literal["detection"] = "detection"
    boxes: str = "boxes"
    classes: str = "labels"
    scores: str = "scores"
    threshold: float = 0.5
    labels: str | None = None


PreStep = Annotated[ImageStep | TextStep | CustomStep, Field(discriminator="kind")]
PostStep = Annotated[
    TopKStep | ArgmaxStep | ThresholdStep | IdentityStep | SegmentationStep | DetectionStep | CustomStep,
    Field(discriminator="kind"),
]
_DECODERS = ("image", "text")
_FORMATTERS = ("topk", "argmax", "threshold", "identity", "segmentation", "detection")


class ProcessingSpec(_Step):
    """Pre- and postprocessing of one model: ``pre`` runs before batching, ``post`` after the split."""

    pre: tuple[PreStep, ...] = ()
    post: tuple[PostStep, ...] = ()

    @model_validator(mode="after")
    def _one_decoder_one_formatter(self) -> ProcessingSpec:
        if sum(step.kind in _DECODERS for step in self.pre) > 1:
            raise ValueError("pre holds at most one image or text step")
        kinds = [step.kind for step in self.post]
        formatters = [i for i, kind in enumerate(kinds) if kind in _FORMATTERS]
        if len(formatters) > 1:
            raise ValueError(f"post holds at most one of {', '.join(_FORMATTERS)}; got {len(formatters)}")
        return self

    def to_json(self) -> str:
        """The definition as JSON (defaults included, so a reader needs no defaults of its own)."""
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str | bytes) -> ProcessingSpec:
        """Read a definition written by :meth:`to_json`; a bad one is an ``InvalidArgumentError``."""
        try:
            return cls.model_validate_json(text)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "(top level)"
            raise InvalidArgumentError(f"processing definition: invalid at {where}: {first['msg']}") from None
