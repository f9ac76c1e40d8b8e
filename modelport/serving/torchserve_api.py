"""TorchServe's inference API and the read side of its management API, on modelport's HTTP port.

``POST /predictions/{m}[/{v}]`` takes one instance as a JSON tensor (nested list, without the
batch dimension) or a dict of named inputs, or raw bytes for a single string input (the body, or the one part
of a ``multipart/form-data`` body: ``curl -F data=@x.json``, perf_analyzer's ``--service-kind torchserve``), and answers
with that instance's output as JSON, as TorchServe's default handlers do; a body that already has
the batch dimension is a batch, answered row by row. Errors use TorchServe's shape
``{"code": ..., "type": ..., "message": ...}``, routing errors included: a method a path of these routes does not
take is TorchServe's ``405 MethodNotAllowedException`` and a path under them that names nothing (``/predictions``,
``/ping/x``, ``/models/m/1/x``) its ``404 ResourceNotFoundException``, with TorchServe 0.12's own messages.

A model with processors (``serving/application.py``) takes payloads as TorchServe's handlers do: the
raw body (``curl -T cat.jpg``, any content type but JSON and multipart), ``multipart/form-data``
(``curl -F data=@cat.jpg``; each part one row) or JSON (a string, a list of strings, or
``{"data": ...}``). One payload is answered with its response (``{"tabby": 0.71, ...}``), several
with the list of their responses, in order.

A model served by its archive's custom handler (format ``handler``, ``runtimes/handler.py``) gets each
request as TorchServe's frontend hands it over (:func:`handler_requests`: the body as input ``body``, each
multipart part or form field under its own name, the request headers) and answers the handler's response as
TorchServe does: its bytes, with the content type, status and headers the handler set (else
``application/json`` when they are JSON); several files under one name are several requests, answered with
the list of their responses. ``/predictions/{m}/1.0`` names the version labelled with the archive's version.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from functools import partial
from typing import Any
from urllib.parse import parse_qsl

import numpy as np
import orjson
from starlette.requests import Request
from starlette.responses import Response

from modelport.errors import (
    HandlerError,
    InvalidArgumentError,
    MethodNotAllowedError,
    ModelportError,
    NoRouteError,
    NotFoundError,
    PayloadTooLargeError,
    VersionLabelError,
)
from modelport.runtimes.base import Arrays
from modelport.runtimes.handler import INPUT as HANDLER_INPUT
from modelport.runtimes.handler import OUTPUT as HANDLER_OUTPUT
from modelport.runtimes.handler_request import (
    DESCRIBE_HEADER,
    EXPLAIN_HEADER,
    Field,
    TorchServeRequest,
    decode_reply,
    encode_request,
)
from modelport.runtimes.handler_request import Reply as HandlerReply
from modelport.serving.dataplane import DataPlane
from modelport.serving.errors import public_message
from modelport.serving.front import BodyReader, HotRoute, RequestHead
from modelport.serving.httperrors import ProtocolRoute, Reply, json_reply
from modelport.serving.httputil import json_response, json_tensor
from modelport.serving.multipart import is_multipart, multipart_fields, multipart_parts
from modelport.serving.pipeline import FORMAT as PIPELINE_FORMAT
from modelport.serving.tfserving_rest import predict_response, row_problem
from modelport.serving.torchserve_describe import archive_url, described_version
from modelport.serving.torchserve_stream import streamed
from modelport.serving.types import InferRequest, ModelMetadata, TensorMetadata, VersionState
from modelport.tensors import lookup_dtype

log = logging.getLogger(__name__)

__all__ = [
    "TORCHSERVE_HOT_ROUTES",
    "Payload",
    "describe_model",
    "error_body",
    "error_kind",
    "handler_requests",
    "model_page",
    "parse_instance",
    "parse_payloads",
    "predict",
    "torchserve_routes",
]

_TYPES = {
    404: "ModelNotFoundException",
    400: "BadRequestException",
    503: "ServiceUnavailableException",
    504: "RequestTimeoutException",
    413: "BadRequestException",
}


# TorchServe 0.12's routing errors, type and message as it sends them (its management API's 405s, any API's 404s)
_ROUTING = {
    MethodNotAllowedError: (
        "MethodNotAllowedException",
        "Requested method is not allowed, please refer to API document.",
    ),
    NoRouteError: ("ResourceNotFoundException", "Requested resource is not found, please refer to API document."),
}


def error_body(error: ModelportError, status: int) -> Reply:
    """TorchServe's error body; like TorchServe, no ``Retry-After`` on a 503. A handler's failure is, as in
    TorchServe, an ``InternalServerException`` whatever its status."""
    if isinstance(error, PayloadTooLargeError):  # over max_request_size: TorchServe's 413 has no body
        return Reply(status, b"", b"")
    routing = _ROUTING.get(type(error))
    if routing is not None and (not isinstance(error, MethodNotAllowedError) or error.allowed):  # (not a write API
        # the server was started without: its message says which flag turns it on)
        return json_reply({"code": status, "type": routing[0], "message": routing[1]}, status)
    return json_reply({"code": status, "type": error_kind(error, status), "message": public_message(error)}, status)


def error_kind(error: ModelportError, status: int) -> str:
    """The TorchServe exception an error is (for the HTTP ``status`` it maps to)."""
    if isinstance(error, HandlerError):
        return "InternalServerException"
    if isinstance(error, VersionLabelError):
        return "ModelVersionNotFoundException"
    return _TYPES.get(status, "InternalServerException")


def torchserve_routes(plane: DataPlane) -> list[ProtocolRoute]:
    """/ping, /models (paged), /models/{m}[/{v}|/all] (predictions are hot routes)."""

    async def ping(_: Request) -> Response:
        healthy = plane.ready()
        return json_response({"status": "Healthy" if healthy else "Unhealthy"}, 200 if healthy else 500)

    async def models(request: Request) -> Response:
        return json_response(model_page(plane.model_names(), request.query_params, partial(archive_url, plane)))

    async def describe(request: Request) -> Response:
        model, wanted = request.path_params["model"], request.path_params.get("version")
        customized = request.query_params.get("customized", "").lower() == "true"
        return json_response(await describe_model(plane, model, wanted, customized))

    return [
        ProtocolRoute("/ping", ping, methods=["GET"], render=error_body),
        ProtocolRoute("/models", models, methods=["GET"], render=error_body),
        ProtocolRoute("/models/{model}", describe, methods=["GET"], render=error_body),
        ProtocolRoute("/models/{model}/{version}", describe, methods=["GET"], render=error_body),
        *(ProtocolRoute(path, _no_route, methods=_ANY, render=error_body) for path in _UNDER),
    ]


async def describe_model(plane: DataPlane, model: str, wanted: str | None, customized: bool) -> list[dict[str, Any]]:
    """``GET /models/{model}[/{wanted}]`` (and the gRPC ``DescribeModel``): the default version (``wanted`` None),
    every one (``all``) or one (a number or the archive's version label); ``customized``: with the handler's
    ``describe_handle()`` answer as ``customizedMetadata``."""
    try:
        details = plane.model_details(model)
    except NotFoundError:
        raise NotFoundError(f"Model not found: {model}") from None  # TorchServe's ModelNotFoundException
    if wanted is None:  # TorchServe describes the default version; "all" every one
        wanted = str(plane.model_metadata(model).status.version)
    if wanted != "all" and not wanted.isdigit():  # a label, as /predictions/{m}/1.0
        with contextlib.suppress(VersionLabelError):
            wanted = plane.resolve_version(model, label=wanted)
    versions = [d for d in details if wanted in ("all", str(d.status.version))]
    if not versions:  # the model exists (model_details): TorchServe's answer for a version it lacks
        raise VersionLabelError(f"Model version: {wanted} does not exist for model: {model}")
    described = [described_version(d, plane.settings.request_timeout_s) for d in versions]
    if customized:
        for row, version in zip(described, versions, strict=True):
            if version.format == "handler" and version.status.state is VersionState.READY:
                row["customizedMetadata"] = await _customized(plane, model, str(version.status.version))
    return described


# paths under TorchServe's routes that name nothing: its 404, not the common one (after the routes above)
_UNDER = (
    "/predictions",
    "/predictions/{rest:path}",
    "/explanations",
    "/explanations/{rest:path}",
    "/ping/{rest:path}",
    "/models/{model}/{version}/{rest:path}",
)
_ANY = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]


async def _no_route(_: Request) -> Response:
    raise NoRouteError("Not Found")


def model_page(
    names: list[str], params: Mapping[str, str], url: Callable[[str], str] = lambda name: name
) -> dict[str, Any]:
    """One page of ``GET /models?limit=N&next_page_token=T`` as TorchServe pages it: ``limit`` 1..100 (else 100),
    the token an offset, ``nextPageToken`` whenever the page reaches ``limit`` (even on the last page); each
    model's ``modelUrl`` is ``url(name)`` (:func:`archive_url`)."""
    limit, offset = _number(params.get("limit"), 100), max(0, _number(params.get("next_page_token"), 0))
    limit = limit if 0 <= limit <= 100 else 100
    last = offset + limit
    page: dict[str, Any] = {}
    if last <= len(names):
        page["nextPageToken"] = str(last)
    page["models"] = [{"modelName": n, "modelUrl": url(n)} for n in names[offset:last]]
    return page


def _number(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default  # as TorchServe's NumberUtils.parseInt


async def _predictions(plane: DataPlane, head: RequestHead, read: BodyReader) -> Reply:
    """``POST|PUT /predictions/{model}[/{version}]``."""
    model, version = head.params["model"], head.params.get("version")
    content_type = head.header(b"content-type") or ""
    payload = Payload(await read(plane.settings.max_body_bytes), content_type, head.headers)
    return await predict(plane, model, version, payload, stream=True)


@dataclass(frozen=True)
class Payload:
    """One prediction request as TorchServe's frontend receives it: the body, its content type and the headers;
    ``fields``, when given, are the handler's request fields themselves (TorchServe's gRPC ``input`` map)."""

    body: bytes
    content_type: str = ""
    headers: list[tuple[bytes, bytes]] = dataclass_field(default_factory=list)
    fields: tuple[Field, ...] | None = None
    sequence: str = ""  # TorchServe's gRPC sequence_id: a stateful handler's sequence (context.get_sequence_id)
    explain: bool = False  # an explanation (/explanations, KServe's explain), not a prediction
    params: tuple[Field, ...] = ()  # query parameters, a handler's fields ahead of the body's (torchserve_legacy)


async def predict(
    plane: DataPlane, model: str, version_text: str | None, payload: Payload, stream: bool = False
) -> Reply:
    """TorchServe's prediction of ``model`` (``version_text``: a number, an archive's version label or None),
    answered as its HTTP API answers it; shared by the HTTP and gRPC APIs. With ``stream``, a streaming handler's
    responses after the first are the reply's ``stream``, sent as they come (``serving/torchserve_stream.py``)."""
    try:
        version = _version(plane, model, version_text)
        meta = plane.serving_metadata(model, version)
    except NotFoundError:  # (looked up only when a lookup failed: nothing on the hot path)
        if not _known(plane, model):  # TorchServe 0.12's words (InferenceRequestHandler.predict), not the v2 API's
            raise NotFoundError(f"Model not found: {model}") from None
        version = _version(plane, model, version_text)  # a label it does not have raises TorchServe's words
        if version is None or not _lacks_version(plane, model, version):
            raise
        raise VersionLabelError(f"Model version: {version} does not exist for model: {model}") from None
    if meta.format == "handler":
        return await _handler_predictions(plane, model, version, payload, stream)
    if payload.explain:  # TorchServe's answer when the handler cannot explain (BaseHandler without captum)
        log.warning("%s cannot explain: explanations run a TorchServe handler's explain_handle", model)
        raise HandlerError("Prediction failed")
    parse = parse_payloads if _takes_payloads(meta) else parse_instance
    inputs, batched = parse(payload.body, payload.content_type, meta.inputs)
    response = await plane.infer(model, version, InferRequest(inputs=inputs), "torchserve")
    if response.results is not None:  # a postprocessor's responses, as TorchServe's handlers answer
        return json_reply(response.results if batched else response.results[0])
    outputs, json_outputs = response.outputs, response.json_outputs
    # a model without a batch dimension answers all its outputs (its first dims are no rows, even where they agree;
    # a pipeline has no max_batch_size of its own: its steps batch)
    unbatched = meta.max_batch_size == 0 and meta.format != PIPELINE_FORMAT
    if batched and len(outputs) > 1 and (unbatched or row_problem(outputs)):
        return json_reply(predict_response(outputs, row_format=False, json_outputs=json_outputs)["outputs"])
    if batched:
        return json_reply(predict_response(outputs, row_format=True, json_outputs=json_outputs)["predictions"])
    first = {k: v[:1] for k, v in outputs.items()}  # a slice, not v[0][None]: BYTES rows are not arrays
    return json_reply(predict_response(first, row_format=True, json_outputs=json_outputs)["predictions"][0])


async def _handler_predictions(
    plane: DataPlane, model: str, version: str | None, payload: Payload, stream: bool
) -> Reply:
    """A custom handler's model: the request goes to the handler as TorchServe's frontend hands it over
    (``handler_requests``), and the handler's response is answered as TorchServe answers it."""
    if payload.fields is not None:
        requests = [TorchServeRequest(payload.fields, (), sequence=payload.sequence)]
    else:
        requests = handler_requests(payload.body, payload.content_type, _marked(payload.headers, payload.explain))
        requests = [r._replace(fields=(*payload.params, *r.fields)) for r in requests] if payload.params else requests
    if len(requests) == 1 and stream:
        first, rest = await streamed(lambda r: _handler_infer(plane, model, version, r), requests[0])
        return _handler_reply(first)._replace(stream=rest)
    if len(requests) == 1:
        return _handler_reply(await _handler_infer(plane, model, version, requests[0]))
    # several requests, each on its own (the model may take batches of one), answered as the list of them
    replies = await asyncio.gather(*(_handler_infer(plane, model, version, r) for r in requests))
    return json_reply([_decoded(r.body) for r in replies])


async def _handler_infer(plane: DataPlane, model: str, version: str | None, request: TorchServeRequest) -> HandlerReply:
    inputs = {HANDLER_INPUT: np.array([encode_request(request)], dtype=object)}
    response = await plane.infer(model, version, InferRequest(inputs=inputs), "torchserve")
    return decode_reply(bytes(response.outputs[HANDLER_OUTPUT].ravel()[0]))


async def _customized(plane: DataPlane, model: str, version: str) -> Any:
    """What the handler answers TorchServe's describe request (``describe_handle()``) when it is a JSON object;
    anything else (``None``, ``BaseHandler``'s default; text; a list) ``{}``, as TorchServe 0.12 shows it."""
    reply = await _handler_infer(plane, model, version, TorchServeRequest((), ((DESCRIBE_HEADER, "True"),)))
    answer = _decoded(reply.body)
    return answer if isinstance(answer, dict) else {}


def _known(plane: DataPlane, model: str) -> bool:
    """Whether the repository serves ``model`` (whatever its versions' states)."""
    try:
        plane.model_versions(model)
    except NotFoundError:
        return False
    return True


def _lacks_version(plane: DataPlane, model: str, version: str) -> bool:
    """Whether ``model`` is served, but not its ``version`` (TorchServe's ModelVersionNotFoundException)."""
    try:
        return version not in {str(status.version) for status in plane.model_versions(model)}
    except NotFoundError:
        return False


def _version(plane: DataPlane, model: str, version: str | None) -> str | None:
    """The version a path names: a number is modelport's; anything else (TorchServe's ``1.0``) a version label
    (``import-mar`` labels an archive's version with its ``modelVersion``)."""
    if version is None or version.isdigit():
        return version
    try:
        return plane.resolve_version(model, None, label=version)
    except VersionLabelError:
        raise VersionLabelError(f"Model version: {version} does not exist for model: {model}") from None


def _marked(headers: list[tuple[bytes, bytes]], explain: bool) -> list[tuple[bytes, bytes]]:
    """The headers with TorchServe's ``explain`` header, which its frontend sets whatever the client sent."""
    kept = [(k, v) for k, v in headers if k.lower() != EXPLAIN_HEADER.encode()]
    return [*kept, (EXPLAIN_HEADER.encode(), b"True" if explain else b"False")]


def handler_requests(body: bytes, content_type: str, headers: list[tuple[bytes, bytes]]) -> list[TorchServeRequest]:
    """The request(s) TorchServe's frontend makes of a body: the raw or JSON body as input ``body``; each
    ``multipart/form-data`` part, or each ``application/x-www-form-urlencoded`` field, as an input of its own
    name. Several parts that all share one name (``curl -F data=@a.jpg -F data=@b.jpg``) are several requests,
    answered with the list of their responses (TorchServe would keep the last part only)."""
    sent = tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in headers)
    media = content_type.split(";", 1)[0].strip().lower()
    if is_multipart(content_type):
        fields = [Field(p.name, p.content_type, p.data) for p in multipart_fields(body, content_type)]
        if len(fields) > 1 and len({f.name for f in fields}) == 1:
            return [TorchServeRequest((f,), sent) for f in fields]
    elif media == "application/x-www-form-urlencoded":
        pairs = parse_qsl(body.decode("latin-1"), encoding="utf-8")
        fields = [Field(name, "", value.encode()) for name, value in pairs]
    else:
        fields = [Field("body", content_type, body)]
    return [TorchServeRequest(tuple(fields), sent)]


_NOT_FORWARDED = frozenset({"content-type", "content-length", "transfer-encoding", "connection", "date", "server"})


def _handler_reply(reply: HandlerReply) -> Reply:
    """The status, content type and headers the handler set (else 200, and no content type: TorchServe sends none)."""
    content_type = reply.content_type.encode("latin-1")
    headers = tuple(
        (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers if k.lower() not in _NOT_FORWARDED
    )
    return Reply(reply.status, reply.body, content_type, headers, reply.chunks)


def _decoded(answer: bytes) -> Any:
    try:
        return orjson.loads(answer)
    except orjson.JSONDecodeError:
        return answer.decode(errors="replace")


TORCHSERVE_HOT_ROUTES = [
    HotRoute(path, frozenset({"POST", "PUT"}), _predictions, render=error_body)
    for path in ("/predictions/{model}", "/predictions/{model}/{version}")
]
"""Predictions, answered by the inference front in TorchServe's error body."""


def parse_instance(body: bytes, content_type: str, tensors: tuple[TensorMetadata, ...]) -> tuple[Arrays, bool]:
    """One instance (a batch of one) or, when the body has the batch dimension, a batch."""
    if is_multipart(content_type):
        body, content_type = _one_part(body, content_type)
    specs = {t.name: t for t in tensors}
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


def _one_part(body: bytes, content_type: str) -> tuple[bytes, str]:
    """The contents and Content-Type of a multipart body's one part: the instance, as a file or a form field."""
    parts = multipart_fields(body, content_type)
    if len(parts) != 1:
        raise InvalidArgumentError(f"a multipart body holds one part, the instance; got {len(parts)}")
    return parts[0].data, parts[0].content_type


def _takes_payloads(meta: ModelMetadata) -> bool:
    """A model with processors whose input is payloads (images, text), not tensors."""
    return meta.processed and len(meta.inputs) == 1 and meta.inputs[0].dtype == "string"


def parse_payloads(body: bytes, content_type: str, tensors: tuple[TensorMetadata, ...]) -> tuple[Arrays, bool]:
    """A processed model's payloads as its one BYTES input, and whether there are several (answered as a list)."""
    if is_multipart(content_type):
        rows: list[Any] = list(multipart_parts(body, content_type))
        several = len(rows) > 1
    elif "json" in content_type:
        rows, several = _json_payloads(body)
    else:
        rows, several = [body], False
    return {tensors[0].name: np.array([_payload(r) for r in rows], dtype=object)}, several


def _json_payloads(body: bytes) -> tuple[list[Any], bool]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidArgumentError(f"the body is not JSON ({exc}); send the payload as the raw body") from None
    if isinstance(data, dict) and len(data) == 1:
        data = next(iter(data.values()))  # {"data": ...} or {"body": ...}, as TorchServe's handlers read
    if isinstance(data, list) and data:
        return data, True
    return [data], False


def _payload(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    raise InvalidArgumentError(f"a payload must be text or a file, not JSON {type(value).__name__}")


def _only(specs: dict[str, TensorMetadata]) -> str:
    if len(specs) != 1:
        raise InvalidArgumentError(f"the model takes {len(specs)} inputs {list(specs)}: send a dict of them")
    return next(iter(specs))


def _tensor(value: Any, spec: TensorMetadata) -> np.ndarray[Any, Any]:
    return json_tensor(spec.name, value, lookup_dtype(spec.dtype))
