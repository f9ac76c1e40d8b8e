"""TorchServe's gRPC inference API (``org.pytorch.serve.grpc.inference.InferenceAPIsService``) on the gRPC port.

No package ships its Python stubs, so the messages are built here from a ``FileDescriptorProto`` matching
TorchServe 0.12's ``inference.proto`` (field numbers, the ``map<string, bytes> input``, proto3 ``optional``
fields) and served through a generic handler. ``Predictions`` is ``POST /predictions/{m}[/{v}]``
(``torchserve_api.predict``): a handler model gets the ``input`` map as its request fields, as TorchServe's
frontend hands them over; a tensor or processed model takes the ``data`` (or ``body``) entry as the HTTP body.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, empty_pb2, message_factory
from google.rpc import status_pb2

from modelport.errors import InvalidArgumentError, ModelportError, NotFoundError, VersionLabelError
from modelport.runtimes.handler_request import Field, split_chunks
from modelport.serving.dataplane import DataPlane
from modelport.serving.errors import GENERIC_MESSAGE, http_status, public_message
from modelport.serving.torchserve_api import Payload, error_kind, predict

__all__ = ["SERVICE", "add_torchserve_service", "descriptor_file", "messages"]

log = logging.getLogger("modelport.serving.grpc")

SERVICE = "org.pytorch.serve.grpc.inference.InferenceAPIsService"
_PACKAGE = "org.pytorch.serve.grpc.inference"
_F = descriptor_pb2.FieldDescriptorProto


def _field(name: str, number: int, kind: int, **more: Any) -> Any:
    return _F(name=name, number=number, type=kind, label=more.pop("label", _F.LABEL_OPTIONAL), json_name=name, **more)


def _optional(message: Any, name: str, number: int, kind: int, **more: Any) -> None:
    """A proto3 ``optional`` field: a field in its own synthetic oneof ``_name``."""
    message.oneof_decl.add(name=f"_{name}")
    index = len(message.oneof_decl) - 1
    message.field.append(_field(name, number, kind, oneof_index=index, proto3_optional=True, **more))


def _file() -> Any:
    proto = descriptor_pb2.FileDescriptorProto(
        name="torchserve/inference.proto",  # not TorchServe's path: no clash with a client's generated module
        package=_PACKAGE,
        syntax="proto3",
        dependency=["google/protobuf/empty.proto", "google/rpc/status.proto"],
    )
    request = proto.message_type.add(name="PredictionsRequest")
    request.field.append(_field("model_name", 1, _F.TYPE_STRING))
    request.field.append(_field("model_version", 2, _F.TYPE_STRING))
    entry = request.nested_type.add(name="InputEntry")
    entry.options.map_entry = True
    entry.field.append(_field("key", 1, _F.TYPE_STRING))
    entry.field.append(_field("value", 2, _F.TYPE_BYTES))
    request.field.append(
        _field(
            "input", 3, _F.TYPE_MESSAGE, label=_F.LABEL_REPEATED, type_name=f".{_PACKAGE}.PredictionsRequest.InputEntry"
        )
    )
    _optional(request, "sequence_id", 4, _F.TYPE_STRING)
    response = proto.message_type.add(name="PredictionResponse")
    response.field.append(_field("prediction", 1, _F.TYPE_BYTES))
    _optional(response, "sequence_id", 2, _F.TYPE_STRING)
    _optional(response, "status", 3, _F.TYPE_MESSAGE, type_name=".google.rpc.Status")
    health = proto.message_type.add(name="TorchServeHealthResponse")
    health.field.append(_field("health", 1, _F.TYPE_STRING))
    service = proto.service.add(name="InferenceAPIsService")  # for reflection (grpcurl, ...)
    request_type, response_type = f".{_PACKAGE}.PredictionsRequest", f".{_PACKAGE}.PredictionResponse"
    service.method.add(
        name="Ping", input_type=".google.protobuf.Empty", output_type=f".{_PACKAGE}.TorchServeHealthResponse"
    )
    service.method.add(name="Predictions", input_type=request_type, output_type=response_type)
    service.method.add(
        name="StreamPredictions", input_type=request_type, output_type=response_type, server_streaming=True
    )
    service.method.add(
        name="StreamPredictions2",
        input_type=request_type,
        output_type=response_type,
        client_streaming=True,
        server_streaming=True,
    )
    return proto


def descriptor_file() -> Any:
    """The service's file, for a reflection pool (``grpc_v2.reflection_pool``)."""
    return _file()


def messages() -> dict[str, Any]:
    """The message classes by name (``PredictionsRequest``, ``PredictionResponse``, ``TorchServeHealthResponse``),
    in a pool of their own: a client's generated ``inference_pb2`` in the same process does not clash."""
    pool = descriptor_pool.DescriptorPool()
    for module in (any_pb2, empty_pb2, status_pb2):
        pool.Add(descriptor_pb2.FileDescriptorProto.FromString(module.DESCRIPTOR.serialized_pb))
    pool.Add(_file())
    names = ("PredictionsRequest", "PredictionResponse", "TorchServeHealthResponse")
    built = {n: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.{n}")) for n in names}
    return built


_MESSAGES = messages()
_REQUEST, _RESPONSE, _HEALTH = (
    _MESSAGES[n] for n in ("PredictionsRequest", "PredictionResponse", "TorchServeHealthResponse")
)
_EMPTY = empty_pb2.Empty


def add_torchserve_service(server: Any, plane: DataPlane) -> str:
    """Register TorchServe's inference service on ``server``; returns its full name (for reflection)."""
    unary = grpc.unary_unary_rpc_method_handler
    handlers = {
        "Ping": unary(_ping(plane), _EMPTY.FromString, _HEALTH.SerializeToString),
        "Predictions": unary(_predictions(plane), _REQUEST.FromString, _RESPONSE.SerializeToString),
        "StreamPredictions": grpc.unary_stream_rpc_method_handler(
            _stream(plane), _REQUEST.FromString, _RESPONSE.SerializeToString
        ),
        "StreamPredictions2": grpc.stream_stream_rpc_method_handler(
            _stream2(plane), _REQUEST.FromString, _RESPONSE.SerializeToString
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    return SERVICE


def _ping(plane: DataPlane) -> Any:
    async def ping(request: Any, context: Any) -> Any:
        status = "Healthy" if plane.ready() else "Unhealthy"
        return _HEALTH(health=_PING.format(status=status))

    return ping


# TorchServe's health string, as its frontend writes it (pretty-printed JSON)
_PING = '{{\n  "status": "{status}"\n}}'


# TorchServe 0.12's GRPCUtils.getGRPCStatusCode: an HTTP status (a handler's, a job's) as a gRPC status
_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.ABORTED,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    416: grpc.StatusCode.OUT_OF_RANGE,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    499: grpc.StatusCode.CANCELLED,
    501: grpc.StatusCode.UNIMPLEMENTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def _refusal(error: Exception, model: str) -> tuple[grpc.StatusCode, str]:
    """An error as TorchServe's gRPC API reports it: an unknown model or version is ``INTERNAL`` (as TorchServe
    sends it), anything else the status of its HTTP status; the details are the message, a newline and
    TorchServe's exception class. An error that is not one of ours is logged with its traceback."""
    if not isinstance(error, ModelportError):
        log.error("unhandled error in a TorchServe gRPC call", exc_info=error)
        return grpc.StatusCode.INTERNAL, f"{GENERIC_MESSAGE}\n{_HTTP}InternalServerException"
    message = public_message(error)
    if message == _NO_NAME:  # TorchServe's own details for it
        return grpc.StatusCode.INTERNAL, f"{message}\nBadRequestException.()"
    if isinstance(error, VersionLabelError):
        return grpc.StatusCode.INTERNAL, f"{message}\n{_ARCHIVE}ModelVersionNotFoundException"
    if isinstance(error, NotFoundError):
        return grpc.StatusCode.INTERNAL, f"Model not found: {model}\n{_ARCHIVE}ModelNotFoundException"
    status = http_status(error)
    code = _CODES.get(status, grpc.StatusCode.INTERNAL if status >= 500 else grpc.StatusCode.FAILED_PRECONDITION)
    return code, f"{message}\n{_HTTP}{error_kind(error, status)}"


_HTTP, _ARCHIVE = "org.pytorch.serve.http.", "org.pytorch.serve.archive.model."
_NO_NAME = "Parameter model_name is required."


async def _answer(plane: DataPlane, request: Any, context: Any) -> list[Any]:
    """One prediction's responses; an error ends the call with TorchServe's status and details."""
    try:
        return await _predict(plane, request)
    except Exception as exc:
        await context.abort(*_refusal(exc, request.model_name))
    raise AssertionError("unreachable: abort raises")


async def _predict(plane: DataPlane, request: Any) -> list[Any]:
    """One ``PredictionsRequest`` answered, as ``POST /predictions/{model}[/{version}]``: one response, or one
    per part of a streaming handler's answer (``send_intermediate_predict_response``)."""
    if not request.model_name:
        raise InvalidArgumentError(_NO_NAME)
    reply = await predict(plane, request.model_name, request.model_version or None, _payload(request))
    return [_response(part) for part in split_chunks(reply.body, reply.chunks)]


def _payload(request: Any) -> Payload:
    """The ``input`` map as TorchServe's frontend hands it on: each entry a request field of that name (a handler
    model's); a tensor or processed model reads the ``data`` entry (or ``body``, or the only one) as its body. The
    ``sequence_id`` is the sequence of a stateful handler's request (``context.get_sequence_id``)."""
    fields = tuple(Field(name, "", bytes(value)) for name, value in request.input.items())
    named = {f.name: f.value for f in fields}
    body = named.get("data", named.get("body", fields[0].value if len(fields) == 1 else None))
    return Payload(b"" if body is None else body, "", [], fields, request.sequence_id)


def _predictions(plane: DataPlane) -> Any:
    async def predictions(request: Any, context: Any) -> Any:
        return (await _answer(plane, request, context))[0]  # a streaming handler's first response, as TorchServe's

    return predictions


def _stream(plane: DataPlane) -> Any:
    """One message, or one per response of a streaming handler as it sends them; a failure, even after some were
    sent, ends the call with TorchServe's status and details."""

    async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
        try:
            async for answer in _responses(plane, request):
                yield answer
        except Exception as exc:
            await context.abort(*_refusal(exc, request.model_name))

    return stream


def _stream2(plane: DataPlane) -> Any:
    """Each request answered in order (a streaming handler's responses as it sends them); a failed one answers its
    ``status`` (and the stream goes on)."""

    async def stream(requests: Any, context: Any) -> AsyncIterator[Any]:
        async for request in requests:
            try:
                async for answer in _responses(plane, request):
                    yield answer
            except Exception as exc:
                code, details = _refusal(exc, request.model_name)
                yield _failed(code.value[0], details)

    return stream


async def _responses(plane: DataPlane, request: Any) -> AsyncIterator[Any]:
    """A request's responses as they come: one, or each of a streaming handler's."""
    if not request.model_name:
        raise InvalidArgumentError(_NO_NAME)
    reply = await predict(plane, request.model_name, request.model_version or None, _payload(request), stream=True)
    yield _response(reply.body)
    if reply.stream is not None:
        try:
            async for body in reply.stream:
                yield _response(body)
        finally:  # a call cancelled mid-stream: its request leaves its batch if it has not run
            await reply.stream.aclose()  # type: ignore[attr-defined]  # an async generator


def _response(prediction: bytes) -> Any:
    return _RESPONSE(prediction=prediction)  # no sequence_id: TorchServe 0.12 sends none back, even for a sequence


def _failed(code: int, message: str) -> Any:
    return _RESPONSE(status={"code": code, "message": message})  # google.rpc.Status of the service's own pool
