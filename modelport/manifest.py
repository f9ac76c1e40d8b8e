"""The manifest (``modelport.json``): the contract between export, serving and mobile.

A manifest describes one servable artifact in ``REPO/<model>/<version>/``: its
format, tensors, source, parity record, quantization and the sha256 of every file.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from modelport.errors import ManifestError, SpecError
from modelport.tensors import Shape, format_shape, lookup_dtype, parse_shape

__all__ = [
    "MANIFEST_FILE",
    "SCHEMA_VERSION",
    "ModelManifest",
    "OutputParity",
    "ParityRecord",
    "Quantization",
    "SourceInfo",
    "TensorSpec",
    "file_sha256",
    "read_manifest",
    "write_manifest",
]

MANIFEST_FILE = "modelport.json"
SCHEMA_VERSION = 1
Format = Literal["onnx", "ort", "torchscript", "pt2", "savedmodel", "tflite", "handler"]


class _Frozen(BaseModel):
    # "constants": an infinite error (a missing output) is written as Infinity, not null
    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_inf_nan="constants")


class TensorSpec(_Frozen):
    """Name, data type and shape (``-1`` = dynamic) of one model input or output."""

    name: str = Field(min_length=1)
    dtype: str
    shape: Shape
    layout: Literal["NCHW", "NHWC", "NCW", "NWC"] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    labels: str | None = None
    # LOW..HIGH, enforced by the server before batching: integers LOW <= v < HIGH (``0..1000`` holds
    # 1000 token ids), floats LOW <= v <= HIGH (``0..1`` holds 1.0); golden inputs are drawn from it
    value_range: tuple[float, float] | None = None

    @field_validator("dtype")
    @classmethod
    def _canonical_dtype(cls, value: str) -> str:
        return lookup_dtype(value).name

    @field_validator("shape")
    @classmethod
    def _valid_dims(cls, value: Shape) -> Shape:
        if any(d < -1 for d in value):
            raise ValueError(f"dimensions must be >= -1, got {list(value)}")
        return value

    @classmethod
    def parse(cls, text: str) -> TensorSpec:
        """Parse ``name:dtype:shape[:low..high]``, e.g. ``image:float32:-1x1x8x8``."""
        parts = text.split(":")
        if len(parts) not in (3, 4) or not parts[0]:
            raise SpecError(
                f"input spec {text!r} does not parse; expected NAME:DTYPE:SHAPE[:LOW..HIGH], "
                "e.g. image:float32:-1x1x8x8 or ids:int64:-1x-1:0..1000"
            )
        value_range = _parse_range(text, parts[3]) if len(parts) == 4 else None
        dtype = lookup_dtype(parts[1]).name
        return cls(name=parts[0], dtype=dtype, shape=parse_shape(parts[2]), value_range=value_range)

    def describe(self) -> str:
        """``name:dtype:shape``, the flag syntax."""
        return f"{self.name}:{self.dtype}:{format_shape(self.shape)}"

    def describe_range(self) -> str:
        """``name:dtype:shape[:low..high]``: the whole ``--input`` flag, value range included."""
        if self.value_range is None:
            return self.describe()
        low, high = (str(int(v)) if float(v).is_integer() else repr(v) for v in self.value_range)
        return f"{self.describe()}:{low}..{high}"


def _parse_range(text: str, part: str) -> tuple[float, float]:
    low, sep, high = part.partition("..")
    try:
        if not sep:
            raise ValueError
        return float(low), float(high)
    except ValueError:
        raise SpecError(f"input spec {text!r}: value range {part!r} must look like 0..1000") from None


class OutputParity(_Frozen):
    """Parity of one output of an artifact against the source model."""

    name: str
    max_abs_error: float
    max_rel_error: float
    top1_agreement: float | None = None
    passed: bool
    detail: str | None = None


class ParityRecord(_Frozen):
    """How an artifact compared with its source on the golden inputs."""

    gate: Literal["tolerance", "agreement"]
    atol: float
    rtol: float
    min_agreement: float | None = None
    batch_sizes: tuple[int, ...]
    outputs: tuple[OutputParity, ...]
    passed: bool
    allow_mismatch: bool = False
    accuracy: float | None = None
    source_accuracy: float | None = None


class Quantization(_Frozen):
    """How a reduced-precision variant was made."""

    method: Literal["float16", "dynamic-int8", "full-int8", "static-int8"]
    calibration: str | None = None
    calibration_samples: int | None = None


class SourceInfo(_Frozen):
    """Where the artifact came from."""

    framework: Literal["torch", "tf", "onnx"]
    kind: str
    location: str
    sha256: str | None = None


class ModelManifest(_Frozen):
    """Everything the server, the bundle builder and ``inspect`` need about one artifact."""

    schema_version: int = SCHEMA_VERSION
    name: str = Field(min_length=1)
    version: int = Field(ge=1)
    family: str
    variant: str
    format: Format
    artifact: str
    platform: dict[str, str] = {}
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    native_names: dict[str, str] = {}
    max_batch_size: int = Field(default=0, ge=0)
    source: SourceInfo
    parity: ParityRecord | None = None
    quantization: Quantization | None = None
    files: dict[str, str] = {}
    created_at: str = ""
    modelport_version: str = ""

    def native(self, name: str) -> str:
        """The artifact's own name for manifest tensor ``name``."""
        return self.native_names.get(name, name)

    def signature_key(self, name: str) -> str:
        """The key of tensor ``name`` in the artifact's TF ``serving_default`` signature (what TF Serving names
        it by): a SavedModel's native name; empty for the other formats, which TF Serving does not serve."""
        return self.native(name) if self.format == "savedmodel" else ""


def file_sha256(path: Path) -> str:
    """sha256 of a file, streamed."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(manifest: ModelManifest, directory: Path) -> Path:
    """Write ``modelport.json`` into ``directory`` and return its path."""
    path = directory / MANIFEST_FILE
    path.write_text(manifest.model_dump_json(indent=2, exclude_none=True) + "\n")
    return path


def read_manifest(directory: Path) -> ModelManifest:
    """Read and validate ``directory/modelport.json``."""
    path = directory / MANIFEST_FILE
    try:
        data: Any = json.loads(path.read_text())
    except FileNotFoundError:
        raise ManifestError(f"{path}: no manifest (not a modelport model version directory)") from None
    except (OSError, ValueError) as exc:
        raise ManifestError(f"{path}: cannot read manifest: {exc}") from None
    try:
        return ModelManifest.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ManifestError(f"{path}: invalid manifest at {where}: {first['msg']}") from None
