"""TF Serving REST API over the data plane: model status, metadata and ``:predict``.

Row (``instances``) and columnar (``inputs``) requests, named or unnamed single inputs,
``{"b64": ...}`` strings, ``signature_name``, responses shaped as TF Serving shapes them
(``predictions`` / ``outputs``) and its error body ``{"error": ...}``. An input named ``<name>_bytes``
(the convention for binary inputs) is input ``<name>``; a model with a postprocessor answers each
row's response (``{"predictions": [{"tabby": 0.71, ...}]}``).
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from modelport.errors import InvalidArgumentError, NotFoundError, UnimplementedError
from modelport.runtimes.base import Arrays
from modelport.serving.dataplane import DataPlane
from modelport.serving.front import BodyReader, HotRoute, RequestHead
from modelport.serving.httperrors import JSON, Reply, json_reply
from modelport.serving.httputil import finite, json_tensor, loads, non_finite_dumps
from modelport.serving.types import InferRequest, TensorMetadata, VersionState, VersionStatus
from modelport.tensors import TF_DTYPES, lookup_dtype

__all__ = [
    "SIGNATURE",
    "TFSERVING_HOT_ROUTES",
    "missing_version",
    "parse_predict",
    "predict_response",
    "row_problem",
    "tensor_info",
    "tfserving_routes",
]

SIGNATURE = "serving_default"
_STATES = {"READY": "AVAILABLE", "LOADING": "LOADING", "UNLOADING": "UNLOADING", "FAILED": "END"}


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


def tensor_info(tensor: TensorMetadata) -> dict[str, Any]:
    """A TensorInfo as TF Serving's metadata JSON writes it."""
    dims = [{"size": str(d), "name": ""} for d in tensor.shape]
    return {
        "dtype": TF_DTYPES[tensor.dtype],
        "tensor_shape": {"dim": dims, "unknown_rank": False},
        "name": f"{tensor.native_name}:0",
    }


def missing_version(model: str, version: str) -> NotFoundError:
    """TF Serving's GetModelStatus answer for a version its model does not have (REST and gRPC)."""
    return NotFoundError(f"Could not find version {version} of model {model}")


def _version_for(plane: DataPlane, model: str, params: dict[str, str]) -> str | None:
    """The version a path names: ``/versions/{v}``, ``/labels/{l}`` (config.yaml) or none (the default)."""
    return plane.resolve_version(model, params.get("version"), params.get("label"))


def tfserving_routes(plane: DataPlane) -> list[Route]:
    """GET status and metadata, with ``/versions/{v}`` and ``/labels/{l}`` forms (``:predict`` is a hot route)."""

    async def status(request: Request) -> Response:
        model = request.path_params["model"]
        wanted = _version_for(plane, model, request.path_params)
        versions = plane.model_versions(model)
        if wanted is not None:
            versions = [v for v in versions if str(v.version) == wanted]
            if not versions:
                raise missing_version(model, wanted)
        # KServe v1's model readiness shares this path: its clients read "ready" (TF Serving's, the status list)
        ready = plane.model_ready(model, wanted)[0]
        return _json({"model_version_status": [_status(v) for v in versions], "name": model, "ready": ready})

    async def metadata(request: Request) -> Response:
        model = request.path_params["model"]
        meta = plane.model_metadata(model, _version_for(plane, model, request.path_params), ready_only=True)
        signature = {
            "inputs": {t.tfserving_key: tensor_info(t) for t in meta.inputs},
            "outputs": {t.tfserving_key: tensor_info(t) for t in meta.outputs},
            "method_name": "tensorflow/serving/predict",
        }
        return _json(
            {
                "model_spec": {"name": model, "signature_name": "", "version": str(meta.status.version)},
                "metadata": {"signature_def": {"signature_def": {SIGNATURE: signature}}},
            }
        )

    routes = []
    for prefix in _PREFIXES:
        routes += [
            Route(prefix, status, methods=["GET"]),
            Route(prefix + "/metadata", metadata, methods=["GET"]),
        ]
    return routes


async def _predict(plane: DataPlane, head: RequestHead, read: BodyReader) -> Reply:
    """``POST .../{model}[/versions/{v}|/labels/{l}]:predict``."""
    model = head.params["model"]
    version = _version_for(plane, model, head.params)
    meta = plane.serving_metadata(model, version)
    inputs, row_format = _decode_predict(await read(plane.settings.max_body_bytes), meta.inputs)
    response = await plane.infer(model, version, InferRequest(inputs=inputs), "tfserving-rest")
    if response.results is not None:
        return json_reply({"predictions" if row_format else "outputs": response.results})
    keys = {t.name: t.tfserving_key for t in meta.outputs}  # the signature's keys, as TF Serving answers
    outputs = {keys.get(name, name): value for name, value in response.outputs.items()}
    body = predict_response(outputs, row_format, tuple(keys.get(n, n) for n in response.json_outputs))
    if all(finite(v) for v in outputs.values()):
        return json_reply(body)
    return Reply(200, non_finite_dumps(body), JSON)  # TF Serving's "JSON conformance"


_PREFIXES = ("/v1/models/{model}", "/v1/models/{model}/versions/{version}", "/v1/models/{model}/labels/{label}")


def _unimplemented(api: str) -> Callable[[DataPlane, RequestHead, BodyReader], Awaitable[Reply]]:
    owner = "KServe v1" if api == "explain" else "TF Serving"

    async def refuse(plane: DataPlane, head: RequestHead, read: BodyReader) -> Reply:
        raise UnimplementedError(f"{owner}'s :{api} API is not implemented; modelport serves :predict")

    return refuse


TFSERVING_HOT_ROUTES = [
    HotRoute(prefix + f":{api}", frozenset({"POST"}), _predict if api == "predict" else _unimplemented(api))
    for prefix in _PREFIXES
    for api in ("predict", "classify", "regress", "explain")
    if api != "explain" or "{label}" in prefix  # (the others: serving/torchserve_explain.py)
]
"""``:predict``, answered by the inference front; ``:classify``, ``:regress`` (TF Serving) and ``:explain``
(KServe v1, whose ``:predict`` is TF Serving's) refused with 501 (``:explain`` of a TorchServe handler's model
by name or version: its explanation, ``serving/torchserve_explain.py``)."""


def _status(status: VersionStatus) -> dict[str, Any]:
    error = (
        {"error_code": "OK", "error_message": ""}
        if status.state is not VersionState.FAILED
        else {"error_code": "UNKNOWN", "error_message": status.reason}
    )
    return {"version": str(status.version), "state": _STATES.get(status.state.value, "UNKNOWN"), "status": error}


def _decode_predict(raw: bytes, tensors: tuple[TensorMetadata, ...]) -> tuple[Arrays, bool]:
    """The body's tensors; the body and its parsed JSON (Python lists: ~30 bytes a number) are freed on return,
    not held while the request waits for its batch."""
    try:
        body = loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidArgumentError(f"JSON Parse error: {exc}") from None
    return parse_predict(body, tensors)


def parse_predict(body: Any, tensors: tuple[TensorMetadata, ...]) -> tuple[Arrays, bool]:
    """Inputs of a predict request (by manifest name), and whether it used the row format. The request names
    them by the SavedModel signature's keys, as TF Serving does (the manifest's names are taken too)."""
    if not isinstance(body, dict):
        raise InvalidArgumentError("JSON Value: the request must be a JSON object with 'instances' or 'inputs'")
    signature = body.get("signature_name", SIGNATURE) or SIGNATURE
    if signature != SIGNATURE:
        raise InvalidArgumentError(f'Serving signature name: "{signature}" not found in signature def')
    if ("instances" in body) == ("inputs" in body):
        raise InvalidArgumentError(
            "Missing 'inputs' or 'instances' key"
            if "instances" not in body
            else "Both 'inputs' and 'instances' keys are present; use one"
        )
    specs = {t.tfserving_key: t for t in tensors}
    aliases = {t.name: t.tfserving_key for t in tensors if t.name != t.tfserving_key}
    if "instances" in body:
        rows = body["instances"]
        if not isinstance(rows, list) or not rows:
            raise InvalidArgumentError("'instances' must be a non-empty list")
        if all(isinstance(r, dict) and not _is_b64(r) for r in rows):
            rows = [_unalias(row, specs, aliases) for row in rows]
            for row in rows:
                _no_extra(row, specs)
            return {s.name: _array([_field(r, n) for r in rows], s) for n, s in specs.items()}, True
        return {_single(specs): _array(rows, next(iter(specs.values())))}, True
    columns = body["inputs"]
    if isinstance(columns, dict) and not _is_b64(columns):
        columns = _unalias(columns, specs, aliases)
        missing = [n for n in specs if n not in columns]
        if missing:
            raise InvalidArgumentError(f"inputs {missing} are missing (the model takes {list(specs)})")
        _no_extra(columns, specs)
        return {s.name: _array(columns[n], s) for n, s in specs.items()}, False
    return {_single(specs): _array(columns, next(iter(specs.values())))}, False


def _unalias(given: dict[str, Any], specs: dict[str, TensorMetadata], aliases: dict[str, str]) -> dict[str, Any]:
    """``<name>_bytes`` as ``<name>`` where the model has an input ``<name>`` (and none named ``<name>_bytes``),
    and an input's manifest name as its signature key (``aliases``)."""
    renamed = {k: k.removesuffix("_bytes") for k in given if k not in specs and k.removesuffix("_bytes") in specs}
    renamed.update({k: aliases[k] for k in given if k not in specs and k in aliases and aliases[k] not in given})
    return {renamed.get(k, k): v for k, v in given.items()} if renamed else given


def _single(specs: dict[str, TensorMetadata]) -> str:
    if len(specs) != 1:
        raise InvalidArgumentError(f"the model takes {len(specs)} inputs {list(specs)}: name them")
    return next(iter(specs.values())).name


def _no_extra(given: dict[str, Any], specs: dict[str, TensorMetadata]) -> None:
    extra = sorted(set(given) - set(specs))
    if extra:
        raise InvalidArgumentError(f"unexpected inputs {extra} (the model takes {list(specs)})")


def _field(row: dict[str, Any], name: str) -> Any:
    if name not in row:
        raise InvalidArgumentError(f"an instance has no input {name!r}")
    return row[name]


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"b64"}


def _array(value: Any, spec: TensorMetadata) -> np.ndarray[Any, Any]:
    return json_tensor(spec.name, value, lookup_dtype(spec.dtype))


def predict_response(outputs: Arrays, row_format: bool, json_outputs: tuple[str, ...] = ()) -> dict[str, Any]:
    """``predictions`` (rows) or ``outputs`` (columns), one output unnamed, several named; the elements of
    ``json_outputs`` (JSON text in BYTES: postprocessors' answers) as the JSON values they hold."""
    plain = {name: _json_texts(value) if name in json_outputs else _plain(value) for name, value in outputs.items()}
    if not row_format:
        return {"outputs": next(iter(plain.values())) if len(plain) == 1 else plain}
    if len(plain) == 1:
        return {"predictions": next(iter(plain.values()))}
    problem = row_problem(outputs)
    if problem:
        raise InvalidArgumentError(f"{problem} (the columnar 'inputs' format returns such outputs)")
    rows = len(next(iter(outputs.values())))
    return {"predictions": [{name: value[i] for name, value in plain.items()} for i in range(rows)]}


def row_problem(outputs: Arrays) -> str:
    """Why ``outputs`` cannot be answered as rows (one output 0-d, or first dims that differ), as TF Serving
    says it; empty when they can."""
    rows = 0
    for name, value in outputs.items():
        if value.ndim == 0:
            return f"Tensor name: {name} has no shape information"
        if rows and value.shape[0] != rows:
            return f"Tensor name: {name} has inconsistent batch size: {value.shape[0]} expecting: {rows}"
        rows = value.shape[0]
    return ""


def _json_texts(value: np.ndarray[Any, Any]) -> Any:
    """A BYTES tensor of JSON texts as nested lists of the values they hold."""
    return _decoded_json(value.tolist())


def _decoded_json(value: Any) -> Any:
    return [_decoded_json(v) for v in value] if isinstance(value, list) else orjson.loads(value)


def _plain(value: np.ndarray[Any, Any]) -> Any:
    if value.dtype.kind in ("O", "S"):
        return _text(value.tolist())
    if value.dtype.name in ("float16", "bfloat16"):
        return value.astype(np.float32).tolist()
    return value.tolist()


def _text(value: Any) -> Any:
    if isinstance(value, list):
        return [_text(v) for v in value]
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return {"b64": base64.b64encode(value).decode()}
    return value
