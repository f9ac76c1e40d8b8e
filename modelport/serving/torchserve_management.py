"""The write side of TorchServe's management API, on modelport's HTTP port (with ``--model-control``).

``POST /models?url=...`` registers an archive (``registry.py``), ``PUT /models/{m}[/{v}]?min_worker=N`` scales,
``PUT /models/{m}/{v}/set-default`` sets the default version and ``DELETE /models/{m}[/{v}]`` unregisters,
answered with TorchServe 0.12's statuses and bodies: ``{"status": ...}`` on success, 202 ``Processing worker
updates...`` for asynchronous requests, and ``{"code", "type", "message"}`` errors (409
``ConflictStatusException``, 404 ``ModelNotFoundException`` / ``ModelVersionNotFoundException``, 405
``MethodNotAllowedException`` without model control, as TorchServe without ``enable_model_api``).
Each write is one function (``register_model``, ``scale_workers``, ``set_default``, ``unregister_model``) that the
gRPC management API (``torchserve_grpc_management.py``) answers too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from modelport.errors import (
    ArchiveDownloadError,
    ConflictError,
    InvalidArchiveError,
    InvalidArgumentError,
    MethodNotAllowedError,
    ModelportError,
    PermissionDeniedError,
    VersionLabelError,
)
from modelport.serving.dataplane import DataPlane
from modelport.serving.errors import public_message
from modelport.serving.httperrors import ProtocolRoute, Reply, json_reply
from modelport.serving.httputil import json_response
from modelport.serving.types import ArchiveRegistration

__all__ = [
    "PROCESSING",
    "Answer",
    "exception_name",
    "management_error",
    "management_routes",
    "register_model",
    "registration",
    "scale_workers",
    "set_default",
    "unregister_model",
]

_UNSUPPORTED = ("handler", "runtime")  # TorchServe may override the archive's; modelport serves the archive's
_TYPES: list[tuple[type[ModelportError], str]] = [
    (ArchiveDownloadError, "DownloadArchiveException"),
    (InvalidArchiveError, "InvalidModelException"),
    (ConflictError, "ConflictStatusException"),
    (MethodNotAllowedError, "MethodNotAllowedException"),
    (VersionLabelError, "ModelVersionNotFoundException"),
    (PermissionDeniedError, "InvalidModelVersionException"),  # the default version while others remain
]
_BY_STATUS = {400: "BadRequestException", 404: "ModelNotFoundException", 503: "ServiceUnavailableException"}
PROCESSING = "Processing worker updates..."


def exception_name(error: ModelportError, status: int) -> str:
    """The TorchServe exception an error of its management API is (for the HTTP ``status`` it maps to)."""
    kind = next((name for cls, name in _TYPES if isinstance(error, cls)), None)
    return kind or _BY_STATUS.get(status, "InternalServerException")


def management_error(error: ModelportError, status: int) -> Reply:
    """TorchServe's error body for the management API."""
    return json_reply({"code": status, "type": exception_name(error, status), "message": public_message(error)}, status)


@dataclass(frozen=True)
class Answer:
    """What a write of TorchServe's management API answers: the HTTP status and TorchServe's status message."""

    message: str
    status: int = 200


async def register_model(plane: DataPlane, params: Mapping[str, str], inputs: tuple[str, ...] = ()) -> Answer:
    """``POST /models?url=...`` (and the gRPC ``RegisterModel``): register an archive of the model store."""
    plane.require_model_api()
    registered = await plane.register_archive(registration(params, inputs))
    if registered.workers is None:
        return Answer(PROCESSING, 202)
    workers = f"{registered.workers} initial workers"
    return Answer(f'Model "{registered.name}" Version: {registered.label} registered with {workers}')


async def scale_workers(plane: DataPlane, model: str, version: str | None, params: Mapping[str, str]) -> Answer:
    """``PUT /models/{m}[/{v}]?min_worker=N`` (and ``ScaleWorker``): run that many instances."""
    plane.require_model_api()
    workers = _workers(params)
    synchronous = _bool(params, "synchronous", default=False)
    most = max(workers, _int(params, "max_worker") or 0)  # TorchServe's maxWorkers: max_worker, else min_worker
    await plane.scale_model(model, version, (workers, most), synchronous)
    if not synchronous:
        return Answer(PROCESSING, 202)
    which = f", version: {version}" if version is not None else ""
    return Answer(f"Workers scaled to {workers} for model: {model}{which}")


async def set_default(plane: DataPlane, model: str, version: str) -> Answer:
    """``PUT /models/{m}/{v}/set-default`` (and ``SetDefault``)."""
    plane.require_model_api()
    await plane.set_default_version(model, version)
    return Answer(f'Default version successfully updated for model "{model}" to "{version}"')


async def unregister_model(plane: DataPlane, model: str, version: str | None) -> Answer:
    """``DELETE /models/{m}[/{v}]`` (and ``UnregisterModel``)."""
    plane.require_model_api()
    await plane.unregister_model(model, version)
    return Answer(f'Model "{model}" unregistered')


def management_routes(plane: DataPlane) -> list[ProtocolRoute]:
    """POST /models, PUT /models/{m}[/{v}], PUT /models/{m}/{v}/set-default, DELETE /models/{m}[/{v}]."""

    def answered(answer: Answer) -> Response:
        return json_response({"status": answer.message}, answer.status)

    async def register(request: Request) -> Response:
        query = request.query_params
        return answered(await register_model(plane, query, tuple(query.getlist("input"))))

    async def scale(request: Request) -> Response:
        model, version = request.path_params["model"], request.path_params.get("version")
        return answered(await scale_workers(plane, model, version, request.query_params))

    async def default(request: Request) -> Response:
        return answered(await set_default(plane, request.path_params["model"], request.path_params["version"]))

    async def unregister(request: Request) -> Response:
        model = request.path_params["model"]
        return answered(await unregister_model(plane, model, request.path_params.get("version")))

    def route(path: str, endpoint: object, method: str) -> ProtocolRoute:
        return ProtocolRoute(path, endpoint, methods=[method], render=management_error)  # type: ignore[arg-type]

    return [
        route("/models", register, "POST"),
        route("/models/{model}", scale, "PUT"),
        route("/models/{model}/{version}", scale, "PUT"),
        route("/models/{model}/{version}/set-default", default, "PUT"),
        route("/models/{model}", unregister, "DELETE"),
        route("/models/{model}/{version}", unregister, "DELETE"),
    ]


def registration(params: Mapping[str, str], inputs: tuple[str, ...] = ()) -> ArchiveRegistration:
    """The registration a ``POST /models`` query asks for; ``inputs``: its ``input`` parameters (modelport's own,
    ``import-mar --input``: the input specs of an archive whose model does not record them)."""
    url = params.get("url", "")
    if not url:
        raise InvalidArgumentError("Parameter url is required.")
    overridden = [name for name in _UNSUPPORTED if params.get(name)]
    if overridden:
        raise InvalidArgumentError(
            f"Parameter {overridden[0]} is not supported: modelport serves the archive with its own handler"
        )
    workers = _int(params, "initial_workers")
    if workers is not None and workers < 1:
        raise InvalidArgumentError("Parameter initial_workers must be at least 1: modelport serves what it registers")
    delay = _int(params, "max_batch_delay")
    return ArchiveRegistration(
        url=url,
        model_name=params.get("model_name") or None,
        batch_size=_int(params, "batch_size"),
        max_batch_delay_ms=float(delay) if delay is not None else None,
        initial_workers=workers,
        synchronous=_bool(params, "synchronous", default=True),
        inputs=inputs,
    )


def _workers(params: Mapping[str, str]) -> int:
    """``min_worker`` (else ``max_worker``, else 1): modelport runs that many instances."""
    least, most = _int(params, "min_worker"), _int(params, "max_worker")
    if least is not None and most is not None and most < least:
        raise InvalidArgumentError("max_worker cannot be less than min_worker.")  # TorchServe's words
    workers = least if least is not None else most if most is not None else 1
    if workers < 1:
        raise InvalidArgumentError("Parameter min_worker must be at least 1: unregister the model to stop serving it")
    return workers


def _int(params: Mapping[str, str], name: str) -> int | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    try:
        number = int(value)
    except ValueError:
        raise InvalidArgumentError(f"Parameter {name} must be an integer, not {value!r}") from None
    if number < 0:
        raise InvalidArgumentError(f"Parameter {name} must not be negative")
    return number


def _bool(params: Mapping[str, str], name: str, default: bool) -> bool:
    value = params.get(name)
    return default if value is None else value.lower() == "true"  # Java's Boolean.parseBoolean, as TorchServe
