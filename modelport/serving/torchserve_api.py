"""TorchServe's inference API and the read side of its management API, on modelport's HTTP port.

``POST /predictions/{m}[/{v}]`` takes one instance as a JSON tensor (nested list, without the
batch dimension) or a dict of named inputs, or raw bytes for a single string input, and answers
with that instance's output as JSON, as TorchServe's default handlers do; a body that already has
the batch dimension is a batch, answered row by row. Errors use TorchServe's shape
``{"code": ..., "type": ..., "message": ...}``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from modelport.errors import InvalidArgumentError, ModelportError, NotFoundError
from modelport.manifest import ModelManifest, TensorSpec
from modelport.runtimes.base import Arrays
from modelport.serving.dataplane import DataPlane
from modelport.serving.errors import http_status, public_message
from modelport.serving.httputil import json_response, json_tensor, read_body
from modelport.serving.tfserving_rest import predict_response
from modelport.serving.v2 import InferRequest
from modelport.tensors import lookup_dtype

__all__ = ["torchserve_routes"]

_TYPES = {
    404: "ModelNotFoundException",
    400: "BadRequestException",
    503: "ServiceUnavailableException",
    504: "RequestTimeoutException",
    413: "BadRequestException",
}


def _error(exc: ModelportError) -> Response:
    status = http_status(exc)
    kind = _TYPES.get(status, "InternalServerException")
    close = {"Connection": "close"} if status == 413 else None  # the rest of the body is not read
    return json_response({"code": status, "type": kind, "message": public_message(exc)}, status, close)


def torchserve_routes(plane: DataPlane) -> list[Route]:
    """/ping, /predictions/{m}[/{v}], /models, /models/{m}[/{v}]."""

    async def ping(_: Request) -> Response:
        healthy = plane.ready()
        return json_response({"status": "Healthy" if healthy else "Unhealthy"}, 200 if healthy else 500)

    async def predictions(request: Request) -> Response:
        model, version = request.path_params["model"], request.path_params.get("version")
        try:
            manifest, _ = plane.model_manifest(model, version)
            content_type = request.headers.get("content-type", "")
            # no name for the body: a JSON body is freed once parsed, not held while the request waits for its batch
            inputs, batched = parse_instance(
                await read_body(request, plane.settings.max_body_bytes), content_type, manifest
            )
            response = await plane.infer(model, version, InferRequest(inputs=inputs), "torchserve")
        except ModelportError as exc:
            return _error(exc)
        outputs = response.outputs if batched else {k: v[0] for k, v in response.outputs.items()}
        if batched:
            return json_response(predict_response(outputs, row_format=True)["predictions"])
        plain = predict_response({k: v[None] for k, v in outputs.items()}, row_format=True)["predictions"][0]
        return json_response(plain)

    async def models(_: Request) -> Response:
        names = sorted(plane.manager.models)
        return json_response({"models": [{"modelName": n, "modelUrl": n} for n in names]})

    async def describe(request: Request) -> Response:
        model, wanted = request.path_params["model"], request.path_params.get("version")
        try:
            versions = [v for v in plane.model_versions(model) if wanted in (None, "all", str(v[0]))]
            if not versions:
                raise NotFoundError(f"model {model!r} has no version {wanted!r}")
        except ModelportError as exc:
            return _error(exc)
        return json_response([_describe(plane, model, *v) for v in versions])

    return [
        Route("/ping", ping, methods=["GET"]),
        Route("/predictions/{model}", predictions, methods=["POST", "PUT"]),
        Route("/predictions/{model}/{version}", predictions, methods=["POST", "PUT"]),
        Route("/models", models, methods=["GET"]),
        Route("/models/{model}", describe, methods=["GET"]),
        Route("/models/{model}/{version}", describe, methods=["GET"]),
    ]


def _describe(plane: DataPlane, model: str, version: int, state: str, reason: str) -> dict[str, Any]:
    served = plane.manager.get(model, str(version))
    policy = served.policy
    return {
        "modelName": model,
        "modelVersion": str(version),
        "modelUrl": str(served.directory),
        "runtime": served.manifest.format if served.manifest else "unknown",
        "minWorkers": len(served.runtimes),
        "maxWorkers": len(served.runtimes),
        "batchSize": policy.max_batch_size if policy else 0,
        "maxBatchDelay": round(1000 * policy.max_queue_delay_s) if policy else 0,
        "loadedAtStartup": True,
        "workers": [
            {
                "id": str(i),
                "status": "READY" if state == "READY" else "UNLOADING" if state == "UNLOADING" else "FAILED",
                "gpu": plane.settings.device.startswith("cuda"),
            }
            for i in range(max(1, len(served.runtimes)))
        ],
        **({"reason": reason} if reason else {}),
    }


def parse_instance(body: bytes, content_type: str, manifest: ModelManifest) -> tuple[Arrays, bool]:
    """One instance (a batch of one) or, when the body has the batch dimension, a batch."""
    specs = {s.name: s for s in manifest.inputs}
    if "json" not in content_type and len(specs) == 1 and next(iter(specs.values())).dtype == "string":
        return {next(iter(specs)): np.array([body], dtype=object)}, False
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidArgumentError(f"the body is not JSON ({exc}); send a JSON tensor or a dict of inputs") from None
    if isinstance(data, dict) and set(data) - set(specs) <= {"data", "body"} and len(data) == 1 and len(specs) == 1:
        data = next(iter(data.values()))  # {"data": tensor}, as TorchServe clients often send
    values = data if isinstance(data, dict) else {_only(specs): data}
    missing = [n for n in specs if n not in values]
    if missing or set(values) - set(specs):
        raise InvalidArgumentError(f"the model takes inputs {list(specs)}; got {sorted(values)}")
    arrays = {n: _tensor(values[n], specs[n]) for n in specs}
    batched = all(a.ndim == len(specs[n].shape) for n, a in arrays.items())
    return (arrays if batched else {n: a[None] for n, a in arrays.items()}), batched


def _only(specs: dict[str, TensorSpec]) -> str:
    if len(specs) != 1:
        raise InvalidArgumentError(f"the model takes {len(specs)} inputs {list(specs)}: send a dict of them")
    return next(iter(specs))


def _tensor(value: Any, spec: TensorSpec) -> np.ndarray[Any, Any]:
    dtype = lookup_dtype(spec.dtype)
    if dtype.name == "string" and not isinstance(value, list):
        value = [value]
    return json_tensor(spec.name, value, dtype)
