"""TorchServe handler for system (e): the KServe v2 JSON body in, a v2-shaped JSON body out.

Batching is TorchServe's (``batchSize``/``maxBatchDelay``): ``handle`` receives the requests of one
batch, stacks their inputs, runs the TorchScript model once and splits the result per request.
Threads come from ``MODELPORT_BENCH_THREADS`` (default 1, matching the other systems).
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import torch

try:
    import orjson
except ImportError:  # pragma: no cover - the worker runs in modelport's venv, which has orjson
    orjson = None


class V2JsonHandler:
    """Minimal handler: ``initialize`` loads ``model.pt``; ``handle`` does one batch."""

    def __init__(self) -> None:
        self.model: Any = None

    def initialize(self, context: Any) -> None:
        """Load the TorchScript archive from the model directory."""
        threads = int(os.environ.get("MODELPORT_BENCH_THREADS", "1"))
        if threads:
            torch.set_num_threads(threads)
        model_dir = context.system_properties.get("model_dir")
        self.model = torch.jit.load(os.path.join(model_dir, "model.pt"), map_location="cpu").eval()

    def handle(self, data: list[dict[str, Any]], context: Any) -> list[bytes]:
        """One output body per request of the batch."""
        arrays = [_decode(row.get("data") if row.get("data") is not None else row.get("body")) for row in data]
        sizes = [a.shape[0] for a in arrays]
        with torch.inference_mode():
            out = self.model(torch.from_numpy(np.concatenate(arrays))).numpy()
        bodies, start = [], 0
        for size in sizes:
            part = out[start : start + size]
            start += size
            bodies.append(_encode(part))
        return bodies


def _decode(payload: Any) -> np.ndarray[Any, Any]:
    if isinstance(payload, (bytes, bytearray)):
        payload = orjson.loads(payload) if orjson is not None else json.loads(payload)
    item = payload["inputs"][0]
    return np.asarray(item["data"], dtype=np.float32).reshape(item["shape"])


def _encode(part: np.ndarray[Any, Any]) -> bytes:
    response = {"outputs": [{"name": "y", "shape": list(part.shape), "datatype": "FP32", "data": part.ravel()}]}
    if orjson is not None:
        return orjson.dumps(response, option=orjson.OPT_SERIALIZE_NUMPY)
    response["outputs"][0]["data"] = part.ravel().tolist()
    return json.dumps(response).encode()


_service = V2JsonHandler()


def handle(data: list[dict[str, Any]] | None, context: Any) -> list[bytes] | None:
    """TorchServe's module-level entry point."""
    if _service.model is None:
        _service.initialize(context)
    if data is None:
        return None
    return _service.handle(data, context)
