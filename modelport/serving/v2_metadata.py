"""KServe v2 JSON shapes of the data plane's metadata: server, model, repository index.

The HTTP adapter answers with these dicts as they are; the gRPC adapter builds its messages from
the same dicts, so both transports say the same thing (as ``triton.py`` does for its extensions).
"""

from __future__ import annotations

from typing import Any

from modelport.serving.triton import metadata_platform
from modelport.serving.types import ModelMetadata, RepositoryRow, ServerMetadata, TensorMetadata
from modelport.tensors import lookup_dtype

__all__ = ["model_metadata_json", "repository_index_json", "server_metadata_json"]


def server_metadata_json(meta: ServerMetadata) -> dict[str, Any]:
    """``GET /v2``: name, version and extensions."""
    return {"name": meta.name, "version": meta.version, "extensions": list(meta.extensions)}


def model_metadata_json(meta: ModelMetadata) -> dict[str, Any]:
    """``GET /v2/models/{m}[/versions/{v}]``; modelport's own facts go in ``parameters``."""
    data: dict[str, Any] = {"name": meta.name, "versions": [str(v) for v in meta.versions]}
    if meta.format is not None:
        data["platform"] = metadata_platform(meta.format)  # Triton's words; parameters.format is modelport's
        data["inputs"] = [_tensor(t) for t in meta.inputs]
        data["outputs"] = [_tensor(t) for t in meta.outputs]
    data["parameters"] = _parameters(meta)
    return data


def repository_index_json(rows: list[RepositoryRow]) -> list[dict[str, Any]]:
    """``/v2/repository/index``: one entry per model version (a model with none loaded: no ``version``)."""
    return [_row(row) for row in rows]


def _tensor(tensor: TensorMetadata) -> dict[str, Any]:
    return {"name": tensor.name, "datatype": lookup_dtype(tensor.dtype).v2, "shape": list(tensor.shape)}


def _parameters(meta: ModelMetadata) -> dict[str, Any]:
    params: dict[str, Any] = {"state": meta.status.state.value, "version": str(meta.status.version)}
    if meta.status.reason:
        params["reason"] = meta.status.reason
    if meta.providers:
        params["providers"] = list(meta.providers)
    if meta.format is not None:
        params.update(format=meta.format, variant=meta.variant, max_batch_size=meta.max_batch_size)
        if meta.parity_passed is not None:
            params["parity_passed"] = meta.parity_passed
    return params


def _row(row: RepositoryRow) -> dict[str, Any]:
    if row.version is None:
        return {"name": row.name, "state": row.state, "reason": row.reason}
    return {"name": row.name, "version": str(row.version), "state": row.state, "reason": row.reason}
