"""TF Serving REST API over the data plane: model status, metadata, ``:predict``, ``:classify``, ``:regress``.

Row (``instances``) and columnar (``inputs``) requests, named or unnamed single inputs,
``{"b64": ...}`` strings, ``signature_name``, responses shaped as TF Serving shapes them
(``predictions`` / ``outputs``) and its error body ``{"error": ...}``. An input named ``<name>_bytes``
(the convention for binary inputs) is input ``<name>``; a model with a postprocessor answers each
row's response (``{"predictions": [{"tabby": 0.71, ...}]}``).
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from modelport.errors import InvalidArgumentError, NotFoundError, UnimplementedError, VersionLabelError
from modelport.runtimes.base import Arrays
from modelport.serving.dataplane import DataPlane
from modelport.serving.front import BodyReader, HotRoute, RequestHead
from modelport.serving.httperrors import JSON, Reply, json_reply
from modelport.serving.httputil import json_tensor, loads, numbers_dumps
from modelport.serving.tfserving_examples import (
    PREDICT,
    classification_signature,
    classify,
    examples_from_json,
    regress,
    regression_signature,
    servable_metadata,
    served_versions,
    signature_name,
)
from modelport.serving.types import (
    InferRequest,
    ModelMetadata,
    Signature,
    TensorMetadata,
    VersionState,
    VersionStatus,
)
from modelport.tensors import TF_DTYPES, lookup_dtype

__all__ = [
    "SIGNATURE",
    "TFSERVING_HOT_ROUTES",
    "graph_name",
    "missing_version",
    "parse_predict",
    "predict_response",
    "row_problem",
    "signature_json",
    "squeezed",
    "tensor_info",
    "tfserving_routes",
    "unsqueezed",
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
        "name": graph_name(tensor),
    }


def graph_name(tensor: TensorMetadata) -> str:
    """The graph tensor's name, ``x:0`` (a signature's names carry their output index already)."""
    return tensor.native_name if ":" in tensor.native_name else f"{tensor.native_name}:0"


def signature_json(signature: Signature) -> dict[str, Any]:
    """A SignatureDef as TF Serving's metadata JSON writes it."""

    def info(tensor: TensorMetadata) -> dict[str, Any]:
        found = tensor_info(tensor)
        if tensor.signature_key in signature.unranked:
            found["tensor_shape"] = {"dim": [], "unknown_rank": True}
        return found

    return {
        "inputs": {t.tfserving_key: info(t) for t in signature.inputs},
        "outputs": {t.tfserving_key: info(t) for t in signature.outputs},
        "method_name": signature.method_name,
    }


def missing_version(model: str, version: str) -> NotFoundError:
    """TF Serving's GetModelStatus answer for a version its model does not have (REST and gRPC)."""
    return NotFoundError(f"Could not find version {version} of model {model}")


def _version_for(plane: DataPlane, model: str, params: dict[str, str], method: str, suffix: str) -> str | None:
    """The version a path names: ``/versions/{v}``, ``/labels/{l}`` (config.yaml) or none (the default).

    A version that is not a number, or a path naming both a version and a label, is TF Serving's malformed request
    (its paths take ``versions/(\\d+)`` or ``labels/...``, not both), one past int64 a version it cannot convert, a
    label the model does not define its InvalidArgument: all 400s in its words (``method`` and ``suffix`` rebuild
    the request line it quotes)."""
    version, label = params.get("version"), params.get("label")
    if version is not None and (label is not None or not (version.isascii() and version.isdigit())):
        labelled = "" if label is None else f"/labels/{label}"
        raise InvalidArgumentError(
            f"Malformed request: {method} /v1/models/{model}/versions/{version}{labelled}{suffix}"
        )
    if version is not None and int(version) >= 2**63:
        raise InvalidArgumentError(f"Failed to convert version: {version} to numeric.")
    try:
        return plane.resolve_version(model, version, label)
    except VersionLabelError as exc:  # TF Serving's errors::InvalidArgument (a 404 on TorchServe's routes)
        raise InvalidArgumentError(str(exc)) from None


def tfserving_routes(plane: DataPlane) -> list[Route]:
    """GET status and metadata, with ``/versions/{v}`` and ``/labels/{l}`` forms (``:predict`` is a hot route)."""

    async def status(request: Request) -> Response:
        model = request.path_params["model"]
        wanted = _version_for(plane, model, request.path_params, "GET", "")
        versions = served_versions(plane, model)
        if wanted is not None:
            versions = [v for v in versions if str(v.version) == wanted]
            if not versions:
                raise missing_version(model, wanted)
        # KServe v1's model readiness shares this path: its clients read "ready" (TF Serving's, the status list)
        ready = plane.model_ready(model, wanted)[0]
        return _json({"model_version_status": [_status(v) for v in versions], "name": model, "ready": ready})

    async def metadata(request: Request) -> Response:
        model = request.path_params["model"]
        version = _version_for(plane, model, request.path_params, "GET", "/metadata")
        meta = servable_metadata(plane, model, version, serving=False)
        found = plane.signatures(model, version) if meta.format is not None else ()
        signatures = found or (Signature(SIGNATURE, PREDICT, meta.inputs, meta.outputs),)
        return _json(
            {
                "model_spec": {"name": model, "signature_name": "", "version": str(meta.status.version)},
                "metadata": {"signature_def": {"signature_def": {s.name: signature_json(s) for s in signatures}}},
            }
        )

    routes = []
    for prefix in (*_PREFIXES, _BOTH):
        routes += [
            Route(prefix, status, methods=["GET"]),
            Route(prefix + "/metadata", metadata, methods=["GET"]),
        ]
    return routes


async def _predict(plane: DataPlane, head: RequestHead, read: BodyReader) -> Reply:
    """``POST .../{model}[/versions/{v}|/labels/{l}]:predict``."""
    model = head.params["model"]
    version = _version_for(plane, model, head.params, "POST", ":predict")
    meta = servable_metadata(plane, model, version)
    body = _body(await read(plane.settings.max_body_bytes))
    signature = _other_signature(plane, model, version, body)
    if signature is not None:
        inputs, row_format = parse_predict(body, signature.inputs, signature.name)
        answer = await plane.infer(model, version, InferRequest(inputs, signature=signature.name), "tfserving-rest")
        content = numbers_dumps(predict_response(answer.outputs, row_format), answer.outputs.values())
        return Reply(200, content, JSON)  # TF Serving's "JSON conformance": NaN and Infinity as tokens
    inputs, row_format = parse_predict(body, meta.inputs)
    del body
    inputs, added = unsqueezed(inputs, meta)
    response = await plane.infer(model, version, InferRequest(inputs=inputs), "tfserving-rest")
    if response.results is not None:
        return json_reply({"predictions" if row_format else "outputs": response.results})
    keys = {t.name: t.tfserving_key for t in meta.outputs}  # the signature's keys, as TF Serving answers
    outputs = {keys.get(name, name): value for name, value in squeezed(response.outputs, added).items()}
    body = predict_response(outputs, row_format, tuple(keys.get(n, n) for n in response.json_outputs))
    return Reply(200, numbers_dumps(body, outputs.values()), JSON)


_LABEL = "/v1/models/{model}/labels/{label}"
_PREFIXES = ("/v1/models/{model}", "/v1/models/{model}/versions/{version}", _LABEL)
_BOTH = "/v1/models/{model}/versions/{version}/labels/{label}"  # TF Serving's malformed request: a 400, not a 404


def unsqueezed(inputs: Arrays, meta: ModelMetadata) -> tuple[Arrays, int]:
    """A SavedModel's inputs given without trailing dims of size 1 of their shapes, with them, and how many.

    TF Serving feeds TensorFlow the tensor a request shapes, and a TF1 graph takes ``[3]`` for its ``[-1, 1]`` x
    (TF Serving's quickstart sends ``{"instances": [1.0, 2.0, 5.0]}`` to half_plus_two and reads ``[2.5, 3.0,
    4.5]``): such inputs get the missing dims (as many for every input), so validation and batching apply, and
    :func:`squeezed` takes as many off the outputs, as TensorFlow's element-wise answer would have them.
    """
    if meta.format != "savedmodel":
        return inputs, 0
    shapes = {t.name: t.shape for t in meta.inputs}
    missing = {len(shapes[n]) - v.ndim for n, v in inputs.items() if n in shapes and v.ndim}
    added = missing.pop() if len(missing) == 1 else 0
    if added <= 0 or any(n not in shapes or shapes[n][v.ndim :] != (1,) * added for n, v in inputs.items()):
        return inputs, 0
    return {n: v.reshape(v.shape + (1,) * added) for n, v in inputs.items()}, added


def squeezed(outputs: Arrays, added: int) -> Arrays:
    """Outputs without the ``added`` trailing dims of size 1 that :func:`unsqueezed` gave the inputs."""
    if not added:
        return outputs
    ones = (1,) * added
    return {
        n: v.reshape(v.shape[:-added]) if v.ndim > added and v.shape[-added:] == ones else v for n, v in outputs.items()
    }


def _other_signature(plane: DataPlane, model: str, version: str | None, body: Any) -> Signature | None:
    """The SavedModel signature a predict body names when it is not ``serving_default`` (None: the manifest's)."""
    name = body.get("signature_name", "") if isinstance(body, dict) else ""
    if not name or name == SIGNATURE or not isinstance(name, str):
        return None
    found = {s.name: s for s in plane.signatures(model, version)}
    if name not in found:
        raise InvalidArgumentError(f'Serving signature name: "{name}" not found in signature def')
    return found[name]


async def _classify(plane: DataPlane, head: RequestHead, read: BodyReader) -> Reply:
    """``POST ...:classify``: ``{"results": [[[label, score], ...], ...]}``."""
    model = head.params["model"]
    version = _version_for(plane, model, head.params, "POST", ":classify")
    body = _body(await read(plane.settings.max_body_bytes))
    signature = classification_signature(plane, model, version, signature_name(body))
    answer = await classify(plane, model, version, signature, examples_from_json(body), "tfserving-rest")
    rows = [[[_text(label or b""), score or 0.0] for label, score in row] for row in answer.results]
    return json_reply({"results": rows})


async def _regress(plane: DataPlane, head: RequestHead, read: BodyReader) -> Reply:
    """``POST ...:regress``: ``{"results": [value, ...]}``."""
    model = head.params["model"]
    version = _version_for(plane, model, head.params, "POST", ":regress")
    body = _body(await read(plane.settings.max_body_bytes))
    signature = regression_signature(plane, model, version, signature_name(body))
    answer = await regress(plane, model, version, signature, examples_from_json(body), "tfserving-rest")
    return json_reply({"results": answer.results})


async def _explain_refused(plane: DataPlane, head: RequestHead, read: BodyReader) -> Reply:
    raise UnimplementedError("KServe v1's :explain API is not implemented; modelport serves :predict")


_APIS = {"predict": _predict, "classify": _classify, "regress": _regress, "explain": _explain_refused}

TFSERVING_HOT_ROUTES = [
    HotRoute(prefix + f":{api}", frozenset({"POST"}), handler)
    for prefix in (*_PREFIXES, _BOTH)
    for api, handler in _APIS.items()
    if api != "explain" or prefix == _LABEL  # (the others: serving/torchserve_explain.py)
]
"""``:predict``, ``:classify`` and ``:regress``, answered by the inference front, and ``:explain`` (KServe v1,
whose ``:predict`` is TF Serving's) refused with 501 (``:explain`` of a TorchServe handler's model by name or
version: its explanation, ``serving/torchserve_explain.py``)."""


def _status(status: VersionStatus) -> dict[str, Any]:
    error = (
        {"error_code": "OK", "error_message": ""}
        if status.state is not VersionState.FAILED
        else {"error_code": "UNKNOWN", "error_message": status.reason}
    )
    return {"version": str(status.version), "state": _STATES.get(status.state.value, "UNKNOWN"), "status": error}


def _body(raw: bytes) -> Any:
    """The parsed JSON body (the caller drops it once decoded: Python lists take ~30 bytes a number)."""
    try:
        return loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidArgumentError(f"JSON Parse error: {exc}") from None


def parse_predict(body: Any, tensors: tuple[TensorMetadata, ...], signature: str = SIGNATURE) -> tuple[Arrays, bool]:
    """Inputs of a predict request (by manifest name), and whether it used the row format. The request names
    them by the SavedModel signature's keys, as TF Serving does (the manifest's names are taken too).
    ``signature``: the signature ``tensors`` belong to, the one the body must name (or leave out)."""
    if not isinstance(body, dict):
        raise InvalidArgumentError("JSON Value: the request must be a JSON object with 'instances' or 'inputs'")
    named = body.get("signature_name", SIGNATURE) or SIGNATURE
    if named != signature:
        raise InvalidArgumentError(f'Serving signature name: "{named}" not found in signature def')
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
