"""HTTP adapter: KServe v2 REST routes that only translate to and from the data plane."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from modelport._version import __version__
from modelport.errors import InvalidArgumentError, UnimplementedError
from modelport.serving.auth import Tokens
from modelport.serving.dataplane import DataPlane
from modelport.serving.front import HttpFront
from modelport.serving.httperrors import ERROR_HANDLERS
from modelport.serving.httputil import json_response, read_body
from modelport.serving.openapi import install_openapi
from modelport.serving.shm import RegionStatus, local_peer
from modelport.serving.tfserving_rest import TFSERVING_HOT_ROUTES, tfserving_routes
from modelport.serving.torchserve_api import TORCHSERVE_HOT_ROUTES, torchserve_routes
from modelport.serving.torchserve_explain import EXPLAIN_HOT_ROUTES
from modelport.serving.torchserve_legacy import legacy_routes
from modelport.serving.torchserve_management import management_routes
from modelport.serving.triton import config_json, statistics_json
from modelport.serving.v2_http import INFER_ROUTES
from modelport.serving.v2_metadata import model_metadata_json, repository_index_json, server_metadata_json

__all__ = ["create_app"]


def create_app(plane: DataPlane) -> HttpFront:
    """The HTTP application over one data plane.

    Inference (v2, TF Serving ``:predict``, TorchServe predictions) is answered by the lean front of
    ``serving/front.py``; everything else by a FastAPI app behind it, whose per-request parameter
    solving and middleware layers would cost about as much as a small model's inference.
    """
    api = FastAPI(
        title="modelport", version=__version__, docs_url=None, redoc_url=None, exception_handlers=ERROR_HANDLERS
    )
    _add_triton_extensions(api, plane)  # before the model metadata route, which would take /v2/models/stats
    _add_health(api, plane)
    _add_kserve(api, plane)
    _add_repository(api, plane)
    _add_shared_memory(api, plane)
    _add_cuda_shared_memory(api, plane)
    install_openapi(api)

    @api.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(plane.metrics.exposition), media_type=CONTENT_TYPE_LATEST)

    # TorchServe's management routes before its others: those end with the 404s of the paths under them
    api.router.routes.extend([*tfserving_routes(plane), *management_routes(plane), *torchserve_routes(plane)])
    api.router.routes.extend(legacy_routes(plane))  # (last: /{model}/predict names no other route)
    hot = [*INFER_ROUTES, *TFSERVING_HOT_ROUTES, *TORCHSERVE_HOT_ROUTES, *EXPLAIN_HOT_ROUTES]
    return HttpFront(plane, api, hot, Tokens.from_settings(plane.settings))


def _add_kserve(app: FastAPI, plane: DataPlane) -> None:
    """What KServe's own model server adds to the protocols: its root liveness (v1's, which
    ``InferenceRESTClient.is_server_live`` reads with protocol v1) and its lists of models."""

    @app.get("/")
    async def root_live() -> Response:
        live = plane.live()
        return json_response({"status": "alive" if live else "not alive"}, 200 if live else 503)

    @app.get("/v1/models")
    @app.get("/v2/models")
    async def model_list() -> Response:
        return json_response({"models": plane.model_names()})


def _add_health(app: FastAPI, plane: DataPlane) -> None:
    @app.get("/v2/health/live")
    async def live() -> Response:
        return json_response({"live": plane.live()}, 200 if plane.live() else 503)

    @app.get("/v2/health/ready")
    async def ready() -> Response:
        return json_response({"ready": plane.ready()}, 200 if plane.ready() else 503)

    @app.get("/v2")
    async def server_metadata() -> Response:
        return json_response(server_metadata_json(plane.server_metadata()))

    @app.get("/v2/models/{model}")
    @app.get("/v2/models/{model}/versions/{version}")
    async def model_metadata(model: str, version: str | None = None) -> Response:
        return json_response(model_metadata_json(plane.model_metadata(model, version)))

    @app.get("/v2/models/{model}/ready")
    @app.get("/v2/models/{model}/versions/{version}/ready")
    async def model_ready(model: str, version: str | None = None) -> Response:
        ready, reason = plane.model_ready(model, version)
        body: dict[str, Any] = {"name": model, "ready": ready}
        if reason:
            body["reason"] = reason
        return json_response(body, 200 if ready else 503)


def _add_triton_extensions(app: FastAPI, plane: DataPlane) -> None:
    """Triton's model configuration, statistics and logging extensions (and its trace extension's refusal)."""

    @app.get("/v2/models/stats")
    async def all_model_statistics() -> Response:
        return json_response(statistics_json(plane.model_statistics()))

    @app.get("/v2/models/{model}/stats")
    @app.get("/v2/models/{model}/versions/{version}/stats")
    async def model_statistics(model: str, version: str = "") -> Response:
        return json_response(statistics_json(plane.model_statistics(model, version)))

    @app.get("/v2/models/{model}/config")
    @app.get("/v2/models/{model}/versions/{version}/config")
    async def model_config(model: str, version: str | None = None) -> Response:
        return json_response(config_json(plane.model_config(model, version)))

    @app.get("/v2/logging")
    async def log_settings() -> Response:
        return json_response(plane.log_settings())

    @app.post("/v2/logging")
    async def update_log_settings(request: Request) -> Response:
        settings = _json_options(await read_body(request, 64 * 1024))
        if not isinstance(settings, dict):
            raise InvalidArgumentError('the body must be a JSON object like {"log_info": false}')
        return json_response(plane.log_settings(settings))

    @app.api_route("/v2/trace/setting", methods=["GET", "POST"])
    @app.api_route("/v2/models/{model}/trace/setting", methods=["GET", "POST"])
    async def trace_settings() -> Response:
        raise UnimplementedError(
            "modelport does not implement trace settings (its traces are OpenTelemetry's, set by --tracing and the "
            "OTEL_* variables); GET /v2 lists its extensions"
        )


def _json_options(body: bytes) -> Any:
    try:
        return orjson.loads(body) if body else {}  # no body: no options; blanks are not JSON (Triton: 400)
    except orjson.JSONDecodeError as exc:
        raise InvalidArgumentError(f"the request body is not valid JSON: {exc}") from None


def _add_repository(app: FastAPI, plane: DataPlane) -> None:
    @app.get("/v2/repository/index")
    @app.post("/v2/repository/index")
    async def index(request: Request) -> Response:
        ready_only = False
        if request.method == "POST":
            body = await read_body(request, 64 * 1024)
            options = _json_options(body)
            if not isinstance(options, dict) or not isinstance(options.get("ready", False), bool):
                raise InvalidArgumentError('the body must be a JSON object like {"ready": true}')
            ready_only = options.get("ready", False)
        return json_response(repository_index_json(plane.repository_index(ready_only)))

    @app.post("/v2/repository/models/{model}/load")
    async def load(model: str, request: Request) -> Response:
        plane.require_control()
        options = _json_options(await read_body(request, plane.settings.max_body_bytes))
        parameters = options.get("parameters") if isinstance(options, dict) else None
        await plane.load(model, parameters if isinstance(parameters, dict) else None)
        return json_response({"name": model, "loaded": True})

    @app.post("/v2/repository/models/{model}/unload")
    async def unload(model: str, request: Request) -> Response:
        plane.require_control()
        options = _json_options(await read_body(request, 64 * 1024))
        parameters = options.get("parameters") if isinstance(options, dict) else None
        dependents = isinstance(parameters, dict) and parameters.get("unload_dependents") is True
        await plane.unload(model, dependents)
        return json_response({"name": model, "unloaded": True})


_SYSTEM = "/v2/systemsharedmemory"
_CUDA = "/v2/cudasharedmemory"


def _add_shared_memory(app: FastAPI, plane: DataPlane) -> None:
    """Triton's system shared memory extension, for clients on the server's host (``shm.local_peer``)."""
    regions = plane.shared_memory

    @app.get(f"{_SYSTEM}/status")
    async def system_status_all(request: Request) -> Response:
        return _status_response(regions.status("", _local(request)))

    @app.get(_SYSTEM + "/region/{region}/status")
    async def system_status(region: str, request: Request) -> Response:
        return _status_response(regions.status(region, _local(request)))

    @app.post(_SYSTEM + "/region/{region}/register", response_class=Response)
    async def system_register(region: str, request: Request) -> Response:
        local = _local(request)
        regions.check_local(local)  # before the body is read
        key, offset, byte_size = _registration(_json_options(await read_body(request, 64 * 1024)))
        regions.register(region, key, offset, byte_size, local)
        return Response()

    @app.post(f"{_SYSTEM}/unregister", response_class=Response)
    async def system_unregister_all(request: Request) -> Response:
        regions.unregister("", _local(request))
        return Response()

    @app.post(_SYSTEM + "/region/{region}/unregister", response_class=Response)
    async def system_unregister(region: str, request: Request) -> Response:
        regions.unregister(region, _local(request))
        return Response()


def _local(request: Request) -> bool:
    """Whether the client is on the server's host (a Unix socket, or a loopback address)."""
    return local_peer(request.client.host if request.client is not None else None)


def _add_cuda_shared_memory(app: FastAPI, plane: DataPlane) -> None:
    """Triton's CUDA shared memory extension, answered as a Triton without GPUs answers it: no region, a
    registration refused, an unregister with nothing to do (Triton's clients unregister before they begin)."""
    regions = plane.shared_memory

    @app.get(f"{_CUDA}/status")
    async def cuda_status_all() -> Response:
        return _status_response(regions.cuda_status())

    @app.get(_CUDA + "/region/{region}/status")
    async def cuda_status(region: str) -> Response:
        return _status_response(regions.cuda_status(region))

    @app.post(_CUDA + "/region/{region}/register", response_class=Response)
    async def cuda_register(region: str) -> Response:
        regions.cuda_register(region)
        return Response()

    @app.post(f"{_CUDA}/unregister", response_class=Response)
    async def cuda_unregister_all() -> Response:
        return Response()

    @app.post(_CUDA + "/region/{region}/unregister", response_class=Response)
    async def cuda_unregister(region: str) -> Response:
        return Response()


def _registration(body: Any) -> tuple[str, int, int]:
    """``{"key": ..., "offset": ..., "byte_size": ...}`` (offset optional, as Triton reads it)."""
    if not isinstance(body, dict):
        raise InvalidArgumentError('the body must be a JSON object like {"key": "/name", "byte_size": 64}')
    key, offset, size = body.get("key"), body.get("offset", 0), body.get("byte_size")
    if not isinstance(key, str):
        raise InvalidArgumentError("Shared memory register request has no 'key' string")
    return key, _count(offset, "offset"), _count(size, "byte_size")


def _count(value: Any, field: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidArgumentError(f"Shared memory register request needs '{field}' as a non-negative integer")
    return value


def _status_response(regions: list[RegionStatus]) -> Response:
    return json_response(
        [{"name": r.name, "key": r.key, "offset": r.offset, "byte_size": r.byte_size} for r in regions]
    )
