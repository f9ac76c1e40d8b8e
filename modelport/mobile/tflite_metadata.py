"""TFLite Metadata (what Android Studio ML Model Binding and the Task Library read), without tflite-support.

tflite-support pins protobuf 3.20 and cannot share an environment with TF 2.21, so the
metadata flatbuffer is written and read here with the ``flatbuffers`` runtime, following
``metadata_schema.fbs`` of tensorflow/tflite-support (schema 1.x, file identifier ``M001``).
Only this subset of the schema is written; each table lists its fields by slot (field id):

    ModelMetadata       0 name:string  1 description:string  2 version:string
                        3 subgraph_metadata:[SubGraphMetadata]  4 author:string  5 license:string
                        6 associated_files:[AssociatedFile]  7 min_parser_version:string
    SubGraphMetadata    0 name  1 description  2 input_tensor_metadata:[TensorMetadata]
                        3 output_tensor_metadata:[TensorMetadata]  4 associated_files
    TensorMetadata      0 name  1 description  2 dimension_names:[string]  3 content:Content
                        4 process_units:[ProcessUnit]  5 stats:Stats  6 associated_files
    Content             0 content_properties_type:ubyte  1 content_properties (union)  2 range
    ContentProperties   1 FeatureProperties {}  2 ImageProperties {0 color_space:byte}
    ProcessUnit         0 options_type:ubyte  1 options (union ProcessUnitOptions)
    ProcessUnitOptions  1 NormalizationOptions {0 mean:[float]  1 std:[float]}
    Stats               0 max:[float]  1 min:[float]
    AssociatedFile      0 name  1 description  2 type:byte (2 = TENSOR_AXIS_LABELS)  3 locale

The metadata goes into the model as a new ``buffers`` entry named by a ``metadata`` entry
``TFLITE_METADATA`` (TFLite ``schema.fbs``: Model 4 buffers, 6 metadata); associated files
are appended to the .tflite as an uncompressed zip, as tflite-support's MetadataPopulator does.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from typing import Any, Literal

import flatbuffers  # type: ignore[import-untyped]
import numpy as np
from flatbuffers import number_types
from flatbuffers.table import Table  # type: ignore[import-untyped]

from modelport.errors import InvalidArgumentError, UnsupportedError
from modelport.runtimes.base import import_framework

__all__ = [
    "METADATA_NAME",
    "AssociatedFile",
    "ModelMetadata",
    "TensorMetadata",
    "associated_files",
    "embed_metadata",
    "metadata_to_bytes",
    "parse_metadata",
    "read_metadata",
]

METADATA_NAME = "TFLITE_METADATA"
FILE_IDENTIFIER = b"M001"
TENSOR_AXIS_LABELS = 2
COLOR_SPACES = {"RGB": 1, "GRAYSCALE": 2}
_FEATURE, _IMAGE = 1, 2  # ContentProperties union members
_NORMALIZATION = 1  # ProcessUnitOptions union member


@dataclass(frozen=True)
class AssociatedFile:
    """A file zipped onto the model (``type`` 2 = TENSOR_AXIS_LABELS)."""

    name: str
    description: str = ""
    type: int = TENSOR_AXIS_LABELS


@dataclass(frozen=True)
class TensorMetadata:
    """How one input or output tensor is described: content, normalization, value range, files."""

    name: str
    description: str = ""
    content: Literal["feature", "image"] = "feature"
    color_space: Literal["RGB", "GRAYSCALE"] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    min: tuple[float, ...] | None = None
    max: tuple[float, ...] | None = None
    files: tuple[AssociatedFile, ...] = ()


@dataclass(frozen=True)
class ModelMetadata:
    """The model-level record: name, description, version and its input/output tensors."""

    name: str
    description: str
    version: str
    inputs: tuple[TensorMetadata, ...]
    outputs: tuple[TensorMetadata, ...]
    author: str = ""
    license: str = ""
    min_parser_version: str = "1.0.0"


# ---- writing -------------------------------------------------------------------------------------------------


def metadata_to_bytes(metadata: ModelMetadata) -> bytes:
    """Serialize ``metadata`` as a ``M001`` flatbuffer."""
    b = flatbuffers.Builder(1024)
    inputs = _vector(b, [_tensor(b, t) for t in metadata.inputs])
    outputs = _vector(b, [_tensor(b, t) for t in metadata.outputs])
    subgraph = _table(b, 5, {0: _str(b, metadata.name), 2: inputs, 3: outputs})
    root = _table(
        b,
        8,
        {
            0: _str(b, metadata.name),
            1: _str(b, metadata.description),
            2: _str(b, metadata.version),
            3: _vector(b, [subgraph]),
            4: _str(b, metadata.author),
            5: _str(b, metadata.license),
            7: _str(b, metadata.min_parser_version),
        },
    )
    b.Finish(root, file_identifier=FILE_IDENTIFIER)
    return bytes(b.Output())


def _tensor(b: flatbuffers.Builder, tensor: TensorMetadata) -> int:
    if tensor.content == "image":
        b.StartObject(2)
        b.PrependInt8Slot(0, COLOR_SPACES[tensor.color_space or "RGB"], 0)
        properties = b.EndObject()
    else:
        b.StartObject(0)
        properties = b.EndObject()
    b.StartObject(3)
    b.PrependUint8Slot(0, _IMAGE if tensor.content == "image" else _FEATURE, 0)
    b.PrependUOffsetTRelativeSlot(1, properties, 0)
    content = b.EndObject()
    units = None
    if tensor.mean is not None and tensor.std is not None:
        options = _table(b, 2, {0: _floats(b, tensor.mean), 1: _floats(b, tensor.std)})
        b.StartObject(2)
        b.PrependUint8Slot(0, _NORMALIZATION, 0)
        b.PrependUOffsetTRelativeSlot(1, options, 0)
        units = _vector(b, [b.EndObject()])
    stats = None
    if tensor.min is not None or tensor.max is not None:
        stats = _table(b, 2, {0: _floats(b, tensor.max), 1: _floats(b, tensor.min)})
    files = _vector(b, [_file(b, f) for f in tensor.files]) if tensor.files else None
    fields = {0: _str(b, tensor.name), 1: _str(b, tensor.description), 3: content, 4: units, 5: stats, 6: files}
    return _table(b, 7, fields)


def _file(b: flatbuffers.Builder, file: AssociatedFile) -> int:
    name, description = _str(b, file.name), _str(b, file.description)
    b.StartObject(4)
    _slot(b, 0, name)
    _slot(b, 1, description)
    b.PrependInt8Slot(2, file.type, 0)
    return int(b.EndObject())


def _table(b: flatbuffers.Builder, slots: int, fields: dict[int, int | None]) -> int:
    """A table of offset fields (strings, vectors, tables) created beforehand."""
    b.StartObject(slots)
    for slot, offset in fields.items():
        _slot(b, slot, offset)
    return int(b.EndObject())


def _slot(b: flatbuffers.Builder, slot: int, offset: int | None) -> None:
    if offset is not None:
        b.PrependUOffsetTRelativeSlot(slot, offset, 0)


def _str(b: flatbuffers.Builder, text: str | None) -> int | None:
    return int(b.CreateString(text)) if text else None


def _vector(b: flatbuffers.Builder, offsets: list[int]) -> int:
    b.StartVector(4, len(offsets), 4)
    for offset in reversed(offsets):
        b.PrependUOffsetTRelative(offset)
    return int(b.EndVector())


def _floats(b: flatbuffers.Builder, values: tuple[float, ...] | None) -> int | None:
    if values is None:
        return None
    b.StartVector(4, len(values), 4)
    for value in reversed(values):
        b.PrependFloat32(value)
    return int(b.EndVector())


# ---- reading -------------------------------------------------------------------------------------------------


def parse_metadata(data: bytes) -> ModelMetadata:
    """Read a ``M001`` metadata flatbuffer back into :class:`ModelMetadata` (the subset above)."""
    if data[4:8] != FILE_IDENTIFIER:
        raise InvalidArgumentError(f"not a TFLite metadata flatbuffer (identifier {data[4:8]!r}, expected M001)")
    buf = bytearray(data)
    root = Table(buf, flatbuffers.encode.Get(flatbuffers.packer.uoffset, buf, 0))
    subgraphs = _tables(root, 3)
    subgraph = subgraphs[0] if subgraphs else None
    return ModelMetadata(
        name=_read_str(root, 0),
        description=_read_str(root, 1),
        version=_read_str(root, 2),
        inputs=tuple(_read_tensor(t) for t in _tables(subgraph, 2)) if subgraph else (),
        outputs=tuple(_read_tensor(t) for t in _tables(subgraph, 3)) if subgraph else (),
        author=_read_str(root, 4),
        license=_read_str(root, 5),
        min_parser_version=_read_str(root, 7),
    )


def _read_tensor(tab: Table) -> TensorMetadata:
    content = _sub(tab, 3)
    kind = _scalar(content, 0, number_types.Uint8Flags) if content else 0
    color = None
    if content is not None and kind == _IMAGE:
        properties = _sub(content, 1)
        code = _scalar(properties, 0, number_types.Int8Flags) if properties else 0
        color = next((name for name, value in COLOR_SPACES.items() if value == code), None)
    mean = std = None
    for unit in _tables(tab, 4):
        if _scalar(unit, 0, number_types.Uint8Flags) == _NORMALIZATION:
            options = _sub(unit, 1)
            mean, std = _read_floats(options, 0), _read_floats(options, 1)
    stats = _sub(tab, 5)
    return TensorMetadata(
        name=_read_str(tab, 0),
        description=_read_str(tab, 1),
        content="image" if kind == _IMAGE else "feature",
        color_space=color,  # type: ignore[arg-type]
        mean=mean,
        std=std,
        min=_read_floats(stats, 1) if stats else None,
        max=_read_floats(stats, 0) if stats else None,
        files=tuple(
            AssociatedFile(_read_str(f, 0), _read_str(f, 1), _scalar(f, 2, number_types.Int8Flags))
            for f in _tables(tab, 6)
        ),
    )


def _offset(tab: Table, slot: int) -> int:
    return int(tab.Offset(4 + 2 * slot))


def _read_str(tab: Table, slot: int) -> str:
    o = _offset(tab, slot)
    return tab.String(o + tab.Pos).decode() if o else ""


def _scalar(tab: Table, slot: int, flags: Any) -> int:
    o = _offset(tab, slot)
    return int(tab.Get(flags, o + tab.Pos)) if o else 0


def _sub(tab: Table, slot: int) -> Table | None:
    o = _offset(tab, slot)
    return Table(tab.Bytes, tab.Indirect(o + tab.Pos)) if o else None


def _tables(tab: Table | None, slot: int) -> list[Table]:
    o = _offset(tab, slot) if tab is not None else 0
    if tab is None or not o:
        return []
    start = tab.Vector(o)
    return [Table(tab.Bytes, tab.Indirect(start + 4 * i)) for i in range(tab.VectorLen(o))]


def _read_floats(tab: Table | None, slot: int) -> tuple[float, ...] | None:
    o = _offset(tab, slot) if tab is not None else 0
    if tab is None or not o:
        return None
    return tuple(float(v) for v in tab.GetVectorAsNumpy(number_types.Float32Flags, o))


# ---- the .tflite file ----------------------------------------------------------------------------------------


def embed_metadata(model: bytes, metadata: ModelMetadata, files: dict[str, bytes]) -> bytes:
    """The model with ``metadata`` in its ``TFLITE_METADATA`` buffer and ``files`` zipped onto its end."""
    declared = {f.name for t in (*metadata.inputs, *metadata.outputs) for f in t.files}
    if declared != set(files):
        raise InvalidArgumentError(f"associated files {sorted(files)} do not match the metadata's {sorted(declared)}")
    schema = import_framework("ai_edge_litert.schema_py_generated", "tflite")
    tree: Any = schema.ModelT.InitFromPackedBuf(bytearray(model), 0)
    if any(buffer.offset for buffer in tree.buffers or []):
        raise UnsupportedError("the model keeps its weights outside the flatbuffer (> 2 GB); metadata cannot be added")
    data = np.frombuffer(metadata_to_bytes(metadata), dtype=np.uint8)
    entry = next((m for m in tree.metadata or [] if _name(m.name) == METADATA_NAME), None)
    if entry is not None:  # replace: the old buffer is reused, so tensor buffer indices stay valid
        tree.buffers[entry.buffer].data = data
    else:
        buffer = schema.BufferT()
        buffer.data = data
        tree.buffers.append(buffer)
        entry = schema.MetadataT()
        entry.name, entry.buffer = METADATA_NAME, len(tree.buffers) - 1
        tree.metadata = [*(tree.metadata or []), entry]
    builder = flatbuffers.Builder(len(model) + len(data) + 4096)
    builder.Finish(tree.Pack(builder), file_identifier=b"TFL3")
    out = io.BytesIO(bytes(builder.Output()))
    if files:
        out.seek(0, io.SEEK_END)
        with zipfile.ZipFile(out, "a", compression=zipfile.ZIP_STORED) as archive:
            for name, content in files.items():
                archive.writestr(name, content)
    return out.getvalue()


def read_metadata(model: bytes) -> ModelMetadata | None:
    """The ``TFLITE_METADATA`` of a .tflite file's bytes, or None when it has none."""
    schema = import_framework("ai_edge_litert.schema_py_generated", "tflite")
    root: Any = schema.Model.GetRootAs(bytearray(model), 0)
    for i in range(root.MetadataLength()):
        entry = root.Metadata(i)
        if _name(entry.Name()) == METADATA_NAME:
            return parse_metadata(root.Buffers(entry.Buffer()).DataAsNumpy().tobytes())
    return None


def associated_files(model: bytes) -> dict[str, bytes]:
    """The files zipped onto a .tflite (empty when there are none)."""
    try:
        with zipfile.ZipFile(io.BytesIO(model)) as archive:
            return {name: archive.read(name) for name in archive.namelist()}
    except zipfile.BadZipFile:
        return {}


def _name(value: str | bytes | None) -> str:
    return value.decode() if isinstance(value, bytes) else (value or "")
