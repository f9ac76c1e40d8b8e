"""TorchServe's gRPC management API (``org.pytorch.serve.grpc.management.ManagementAPIsService``) on the gRPC port.

The messages are built from a ``FileDescriptorProto`` matching TorchServe 0.12's ``management.proto``, as
``torchserve_grpc.py`` builds the inference API's. Each method is its REST twin (``torchserve_api.py`` reads,
``torchserve_management.py`` writes) and answers ``msg`` as TorchServe does: the describe and list JSON
(pretty-printed, as its Gson), or the write's status message. ``ListModels`` and ``DescribeModel`` always answer;
``RegisterModel``, ``ScaleWorker``, ``SetDefault`` and ``UnregisterModel`` need ``--model-control`` (and the
control key, ``auth.py``). Errors carry TorchServe 0.12's status code and details (the message, a newline and
TorchServe's exception class): an unknown model or version ``NOT_FOUND`` (``INTERNAL`` for a ``customized``
describe, as TorchServe's), a bad request or archive
``INVALID_ARGUMENT``, a write without model control ``PERMISSION_DENIED`` ``Model API disabled``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from modelport.errors import InvalidArgumentError, MethodNotAllowedError, ModelportError
from modelport.serving.dataplane import DataPlane
from modelport.serving.errors import GENERIC_MESSAGE, http_status, public_message
from modelport.serving.torchserve_api import describe_model, model_page
from modelport.serving.torchserve_describe import archive_url
from modelport.serving.torchserve_management import (
    exception_name,
    register_model,
    scale_workers,
    set_default,
    unregister_model,
)

__all__ = [
    "MANAGEMENT_SERVICE",
    "WRITES",
    "add_management_service",
    "management_descriptor_file",
    "management_messages",
]

log = logging.getLogger("modelport.serving.grpc")

MANAGEMENT_SERVICE = "org.pytorch.serve.grpc.management.ManagementAPIsService"
WRITES = ("RegisterModel", "ScaleWorker", "SetDefault", "UnregisterModel")
_PACKAGE = "org.pytorch.serve.grpc.management"
_F = descriptor_pb2.FieldDescriptorProto
_S, _I, _B = _F.TYPE_STRING, _F.TYPE_INT32, _F.TYPE_BOOL

# management.proto's messages: (field name, type) in field-number order
_FIELDS: dict[str, list[tuple[str, int]]] = {
    "ManagementResponse": [("msg", _S)],
    "DescribeModelRequest": [("model_name", _S), ("model_version", _S), ("customized", _B)],
    "ListModelsRequest": [("limit", _I), ("next_page_token", _I)],
    "RegisterModelRequest": [
        ("batch_size", _I),
        ("handler", _S),
        ("initial_workers", _I),
        ("max_batch_delay", _I),
        ("model_name", _S),
        ("response_timeout", _I),
        ("runtime", _S),
        ("synchronous", _B),
        ("url", _S),
        ("s3_sse_kms", _B),
        ("startup_timeout", _I),
    ],
    "ScaleWorkerRequest": [
        ("model_name", _S),
        ("model_version", _S),
        ("max_worker", _I),
        ("min_worker", _I),
        ("number_gpu", _I),
        ("synchronous", _B),
        ("timeout", _I),
    ],
    "SetDefaultRequest": [("model_name", _S), ("model_version", _S)],
    "UnregisterModelRequest": [("model_name", _S), ("model_version", _S)],
}


def _file() -> Any:
    proto = descriptor_pb2.FileDescriptorProto(
        name="torchserve/management.proto", package=_PACKAGE, syntax="proto3"
    )  # not TorchServe's path: no clash with a client's generated module
    for name, fields in _FIELDS.items():
        message = proto.message_type.add(name=name)
        for number, (field, kind) in enumerate(fields, start=1):
            message.field.append(_F(name=field, number=number, type=kind, label=_F.LABEL_OPTIONAL, json_name=field))
    service = proto.service.add(name="ManagementAPIsService")  # for reflection (grpcurl, ...)
    for method in ("DescribeModel", "ListModels", "RegisterModel", "ScaleWorker", "SetDefault", "UnregisterModel"):
        service.method.add(
            name=method, input_type=f".{_PACKAGE}.{method}Request", output_type=f".{_PACKAGE}.ManagementResponse"
        )
    return proto


def management_descriptor_file() -> Any:
    """The service's file, for a reflection pool (``grpc_v2.reflection_pool``)."""
    return _file()


def management_messages() -> dict[str, Any]:
    """The message classes by name (``ManagementResponse``, ``DescribeModelRequest``, ...), in a pool of their
    own: a client's generated ``management_pb2`` in the same process does not clash."""
    pool = descriptor_pool.DescriptorPool()
    pool.Add(_file())
    return {n: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.{n}")) for n in _FIELDS}


_MESSAGES = management_messages()
_RESPONSE = _MESSAGES["ManagementResponse"]
_Method = Callable[[DataPlane, Any], Awaitable[str]]


def add_management_service(server: Any, plane: DataPlane) -> str:
    """Register TorchServe's management service on ``server``; returns its full name (for reflection)."""
    methods: dict[str, tuple[str, _Method]] = {
        "DescribeModel": ("DescribeModelRequest", _describe),
        "ListModels": ("ListModelsRequest", _list),
        "RegisterModel": ("RegisterModelRequest", _register),
        "ScaleWorker": ("ScaleWorkerRequest", _scale),
        "SetDefault": ("SetDefaultRequest", _set_default),
        "UnregisterModel": ("UnregisterModelRequest", _unregister),
    }
    handlers = {
        name: grpc.unary_unary_rpc_method_handler(
            _answering(plane, method), _MESSAGES[request].FromString, _RESPONSE.SerializeToString
        )
        for name, (request, method) in methods.items()
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(MANAGEMENT_SERVICE, handlers),))
    return MANAGEMENT_SERVICE


def _answering(plane: DataPlane, method: _Method) -> Any:
    async def call(request: Any, context: Any) -> Any:
        try:
            return _RESPONSE(msg=await method(plane, request))
        except Exception as exc:
            if not isinstance(exc, ModelportError):
                log.exception("unhandled error in a TorchServe gRPC management call")
            code, details = _refusal(exc)
            if code is grpc.StatusCode.NOT_FOUND and _customized(request):
                code = grpc.StatusCode.INTERNAL  # TorchServe's: it asks the handler, and the job finds no model
            await context.abort(code, details)
        raise AssertionError("unreachable: abort raises")

    return call


def _customized(request: Any) -> bool:
    """A ``DescribeModel`` that asks the handler (``customized``, one version)."""
    return bool(getattr(request, "customized", False)) and request.model_version != "all"


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2)  # TorchServe's Gson pretty-printing


async def _describe(plane: DataPlane, request: Any) -> str:
    version = request.model_version or None
    return _pretty(await describe_model(plane, request.model_name, version, _customized(request)))


async def _list(plane: DataPlane, request: Any) -> str:
    params = {"limit": str(request.limit), "next_page_token": str(request.next_page_token)}
    return _pretty(model_page(plane.model_names(), params, partial(archive_url, plane)))


def _given(request: Any, *names: str) -> dict[str, str]:
    """The request's fields as the REST API's query parameters: a zero or empty field is not given (TorchServe's
    ``GRPCUtils.getRegisterParam``); a bool is always given (``false`` is proto3's default, and TorchServe's)."""
    params = {name: getattr(request, name) for name in names}
    return {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in params.items() if v or v is False}


async def _register(plane: DataPlane, request: Any) -> str:
    names = ("url", "model_name", "batch_size", "max_batch_delay", "initial_workers", "handler", "runtime")
    return (await register_model(plane, _given(request, *names, "synchronous"))).message


async def _scale(plane: DataPlane, request: Any) -> str:
    params = _given(request, "min_worker", "max_worker", "synchronous")
    return (await scale_workers(plane, request.model_name, request.model_version or None, params)).message


async def _set_default(plane: DataPlane, request: Any) -> str:
    return (await set_default(plane, request.model_name, request.model_version)).message


async def _unregister(plane: DataPlane, request: Any) -> str:
    if not request.model_name:  # TorchServe's words (its check names the wrong parameter)
        raise InvalidArgumentError("Parameter url is required. (modelport: UnregisterModel needs a model_name)")
    return (await unregister_model(plane, request.model_name, request.model_version or None)).message


# TorchServe 0.12's ManagementImpl: the status each of its exceptions ends a call with
_CODES = {
    "ModelNotFoundException": grpc.StatusCode.NOT_FOUND,
    "ModelVersionNotFoundException": grpc.StatusCode.NOT_FOUND,
    "BadRequestException": grpc.StatusCode.INVALID_ARGUMENT,
    "InvalidModelException": grpc.StatusCode.INVALID_ARGUMENT,
    "DownloadArchiveException": grpc.StatusCode.INVALID_ARGUMENT,
}
_ARCHIVE = "org.pytorch.serve.archive."
_PACKAGES = {
    "ModelNotFoundException": f"{_ARCHIVE}model.",
    "ModelVersionNotFoundException": f"{_ARCHIVE}model.",
    "InvalidModelException": f"{_ARCHIVE}model.",
    "ModelException": f"{_ARCHIVE}model.",
    "DownloadArchiveException": _ARCHIVE,
}


def _refusal(error: Exception) -> tuple[grpc.StatusCode, str]:
    """An error as TorchServe's ``ManagementImpl`` sends it: its status, and the message, a newline and the
    exception's class as details. Without model control: ``PERMISSION_DENIED`` ``Model API disabled``."""
    if not isinstance(error, ModelportError):
        return grpc.StatusCode.INTERNAL, f"{GENERIC_MESSAGE}\norg.pytorch.serve.http.InternalServerException"
    if isinstance(error, MethodNotAllowedError):
        hint = "Model API disabled (modelport: start the server with --model-control)"
        return grpc.StatusCode.PERMISSION_DENIED, f"{hint}\n{_ARCHIVE}model.ModelException"
    status = http_status(error)
    kind = exception_name(error, status)
    message = public_message(error)
    code = _CODES.get(kind, grpc.StatusCode.INTERNAL if status >= 500 else grpc.StatusCode.UNKNOWN)
    return code, f"{message}\n{_PACKAGES.get(kind, 'org.pytorch.serve.http.')}{kind}"
