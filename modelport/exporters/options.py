"""Options of one export run, parsed once from flags or given through the API."""

from __future__ import annotations

import operator
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelport.errors import InvalidArgumentError, SpecError
from modelport.manifest import TensorSpec
from modelport.storage import is_url
from modelport.tensors import parse_shape

__all__ = [
    "FORMATS",
    "QUANTIZATIONS",
    "ExportOptions",
    "Variant",
    "parse_formats",
    "parse_input_specs",
    "parse_layouts",
    "parse_quantizations",
    "parse_tflite_shapes",
]

FORMATS = ("onnx", "torchscript", "pt2", "savedmodel", "tflite", "ort")
QUANTIZATIONS = {
    "float16": ("tflite",),
    "dynamic-int8": ("tflite", "onnx"),
    "full-int8": ("tflite",),
    "static-int8": ("onnx",),
}


@dataclass(frozen=True)
class Variant:
    """One artifact an export produces: a format, optionally quantized."""

    format: str
    quantization: str | None = None

    @property
    def name(self) -> str:
        return f"{self.format}-{self.quantization}" if self.quantization else self.format


@dataclass(frozen=True)
class ExportOptions:
    """Everything one export needs; ``source`` is a path/``module:factory`` or a model object."""

    source: Any
    repository: Path | str  # a folder, or an object-store URL (s3://bucket/prefix): see :attr:`folder`
    name: str
    formats: tuple[str, ...] = ("all",)
    version: int | None = None
    weights: Path | None = None
    inputs: tuple[TensorSpec, ...] = ()
    output_names: tuple[str, ...] = ()
    quantize: tuple[str, ...] = ()
    calibration_data: Path | None = None
    eval_data: Path | None = None
    batch_sizes: tuple[int, ...] = (1, 3)
    dynamic_sizes: tuple[int, ...] = (8, 5)
    atol: float | None = None
    rtol: float | None = None
    min_agreement: float = 0.99
    allow_mismatch: bool = False
    legacy_onnx: bool = False
    opset: int = 18
    max_batch_size: int = 64
    name_template: str = "{name}-{variant}"
    seed: int = 0
    quiet: bool = False
    quiet_converters: bool = True
    tflite_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    layouts: dict[str, str] = field(default_factory=dict)  # input name -> NCHW, NHWC, NCW or NWC (--layout)
    extra: dict[str, str] = field(default_factory=dict)
    samples: tuple[Path, ...] = ()  # import-mar --sample: golden raw inputs (modelport.samples)

    def __post_init__(self) -> None:
        # the Python API takes str paths and comma lists too; normalise them once here
        for name in ("repository", "weights", "calibration_data", "eval_data"):
            value = getattr(self, name)
            if isinstance(value, str) and not (name == "repository" and is_url(value)):
                object.__setattr__(self, name, Path(value))
        if isinstance(self.formats, str):
            object.__setattr__(self, "formats", parse_formats(self.formats))
        if isinstance(self.quantize, str):
            object.__setattr__(self, "quantize", parse_quantizations(self.quantize))
        object.__setattr__(self, "inputs", parse_input_specs(self.inputs))
        object.__setattr__(self, "output_names", _names(self.output_names))
        object.__setattr__(self, "tflite_shapes", parse_tflite_shapes(self.tflite_shapes))
        object.__setattr__(self, "layouts", parse_layouts(self.layouts))
        if not self.name or "/" in self.name or self.name.startswith("."):
            raise InvalidArgumentError(f"model name {self.name!r} is not a valid repository name")
        if self.version is not None and self.version < 1:
            raise InvalidArgumentError(f"version must be a positive integer, got {self.version}")
        if not self.batch_sizes or any(b < 1 for b in self.batch_sizes):
            raise InvalidArgumentError(f"batch sizes must be positive, got {list(self.batch_sizes)}")
        if not self.dynamic_sizes or any(d < 1 for d in self.dynamic_sizes):
            raise InvalidArgumentError(f"dynamic sizes must be positive, got {list(self.dynamic_sizes)}")
        if not 0.0 <= self.min_agreement <= 1.0:
            raise InvalidArgumentError(f"min agreement must be in [0, 1], got {self.min_agreement}")

    @property
    def folder(self) -> Path:
        """The repository folder; an object-store URL is published through a local one (exporters.upload)."""
        if not isinstance(self.repository, Path):
            raise InvalidArgumentError(f"{self.repository} is a store URL, not a folder")
        return self.repository


def parse_formats(text: str) -> tuple[str, ...]:
    """Parse ``onnx,tflite`` (or ``all``), rejecting unknown names."""
    names = tuple(n.strip().lower() for n in text.split(",") if n.strip())
    if not names:
        raise InvalidArgumentError("no format given; use --format with any of: " + ", ".join(FORMATS))
    unknown = [n for n in names if n not in (*FORMATS, "all")]
    if unknown:
        raise InvalidArgumentError(f"unknown format {unknown[0]!r}; expected any of: all, {', '.join(FORMATS)}")
    return names


def parse_quantizations(text: str) -> tuple[str, ...]:
    """Parse ``float16,dynamic-int8``, rejecting unknown methods."""
    names = tuple(n.strip().lower() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in QUANTIZATIONS]
    if unknown:
        raise InvalidArgumentError(f"unknown quantization {unknown[0]!r}; expected any of: {', '.join(QUANTIZATIONS)}")
    return names


def parse_input_specs(value: Any) -> tuple[TensorSpec, ...]:
    """Input specs given as ``TensorSpec`` objects or the CLI's spec strings (``image:float32:-1x1x8x8``)."""
    items = (value,) if isinstance(value, str | TensorSpec) else value
    try:
        items = tuple(items)
    except TypeError:
        items = (value,)
    specs = []
    for item in items:
        if isinstance(item, TensorSpec):
            specs.append(item)
        elif isinstance(item, str):
            specs.append(TensorSpec.parse(item))
        else:
            raise SpecError(
                f"inputs takes spec strings like 'image:float32:-1x1x8x8' or modelport.TensorSpec objects, "
                f"got {type(item).__module__}.{type(item).__qualname__}: {item!r}"
            )
    return tuple(specs)


def _names(value: Any) -> tuple[str, ...]:
    """Output names as a tuple or a comma list."""
    names = tuple(n.strip() for n in value.split(",") if n.strip()) if isinstance(value, str) else tuple(value)
    if not all(isinstance(n, str) for n in names):
        raise InvalidArgumentError(f"output_names takes names (strings), got {list(names)!r}")
    return names


def parse_tflite_shapes(value: Any) -> dict[str, tuple[int, ...]]:
    """Chosen static TFLite input shapes: ``["ids:1x128"]`` (the flag's form) or ``{"ids": (1, 128)}``."""
    if isinstance(value, Mapping):
        pairs = list(value.items())
    elif isinstance(value, str):
        pairs = [_split(value)]
    elif isinstance(value, list | tuple | set):
        pairs = [_split(v) for v in value]
    else:
        raise SpecError(f"tflite_shapes takes ['ids:1x128', ...] or {{'ids': (1, 128)}}, got {value!r}")
    return {str(name): _static_dims(str(name), shape) for name, shape in pairs}


def _split(text: Any) -> tuple[str, str]:
    name, sep, shape = str(text).partition(":")
    if not sep or not name or not shape:
        raise SpecError(f"--tflite-shape takes NAME:SHAPE, e.g. ids:1x128; got {text!r}")
    return name, shape


def _static_dims(name: str, shape: Any) -> tuple[int, ...]:
    try:
        dims = parse_shape(shape) if isinstance(shape, str) else tuple(operator.index(d) for d in shape)
    except TypeError:
        dims = ()
    if not dims or any(d < 1 for d in dims):
        raise SpecError(
            f"--tflite-shape {name}:{shape if isinstance(shape, str) else repr(shape)}: "
            "give every dim as a positive integer (a TFLite shape is static), e.g. ids:1x128"
        )
    return dims


LAYOUTS = ("NCHW", "NHWC", "NCW", "NWC")


def parse_layouts(value: Any) -> dict[str, str]:
    """Input layouts: ``["data_0:NCHW"]`` (the ``--layout`` flag's form) or ``{"data_0": "NCHW"}``."""
    if isinstance(value, Mapping):
        pairs = [(str(k), str(v)) for k, v in value.items()]
    elif isinstance(value, str):
        pairs = [_split_layout(value)]
    elif isinstance(value, list | tuple | set):
        pairs = [_split_layout(v) for v in value]
    else:
        raise SpecError(f"layouts takes ['data_0:NCHW', ...] or {{'data_0': 'NCHW'}}, got {value!r}")
    layouts: dict[str, str] = {}
    for name, layout in pairs:
        if layout.upper() not in LAYOUTS:
            raise SpecError(f"--layout {name}:{layout}: the layout is one of {', '.join(LAYOUTS)}")
        if name in layouts and layouts[name] != layout.upper():
            raise SpecError(f"--layout {name} is given twice: {layouts[name]} and {layout.upper()}")
        layouts[name] = layout.upper()
    return layouts


def _split_layout(text: Any) -> tuple[str, str]:
    name, sep, layout = str(text).rpartition(":")
    if not sep or not name or not layout:
        raise SpecError(f"--layout takes NAME:LAYOUT, e.g. data_0:NCHW or input:NHWC; got {text!r}")
    return name, layout
