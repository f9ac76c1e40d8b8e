"""HTTP adapter: KServe v2 REST routes that only translate to and from the data plane."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route

from modelport._version import __version__
from modelport.errors import InvalidArgumentError
from modelport.serving.auth import AuthMiddleware, Tokens
from modelport.serving.dataplane import DataPlane
from modelport.serving.httperrors import ERROR_HANDLERS
from modelport.serving.httputil import json_response, read_body
from modelport.serving.openapi import install_openapi
from modelport.serving.requestid import RequestIdMiddleware
from modelport.serving.tfserving_rest import tfserving_routes
from modelport.serving.torchserve_api import torchserve_routes
from modelport.serving.triton import config_json, statistics_json
from modelport.serving.v2 import HEADER_LENGTH, decode_request, encode_response
from modelport.serving.v2_metadata import model_metadata_json, repository_index_json, server_metadata_json

__all__ = ["create_app"]


def _header_length(request: Request) -> int | None:
    value = request.headers.get(HEADER_LENGTH)
    if value is None:
        return None
    if not (value.isascii() and value.isdigit()) or len(value) > 18:
        raise InvalidArgumentError(f"Inference-Header-Content-Length must be a non-negative integer, got {value!r}")
    return int(value)


def create_app(plane: DataPlane) -> Starlette:
    """The HTTP application over one data plane.

    Inference is routed by a thin Starlette app in front; everything else is a FastAPI app mounted
    behind it. FastAPI's per-request parameter solving and middleware layers cost about as much as
    the rest of a small inference request (measured with benchmarks/serving.py). Each app catches
    what its own routes raise, so both take the one error table of ``serving/httperrors.py``.
    """
    api = FastAPI(
        title="modelport", version=__version__, docs_url=None, redoc_url=None, exception_handlers=ERROR_HANDLERS
    )
    _add_triton_extensions(api, plane)  # before the model metadata route, which would take /v2/models/stats
    _add_health(api, plane)
    _add_repository(api, plane)
    install_openapi(api)

    @api.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(plane.metrics.exposition), media_type=CONTENT_TYPE_LATEST)

    routes = [*_infer_routes(plane), *tfserving_routes(plane), *torchserve_routes(plane)]
    tokens = Tokens.from_settings(plane.settings)
    auth = [Middleware(AuthMiddleware, tokens=tokens)] if tokens.enabled else []
    app = Starlette(
        routes=routes,
        middleware=[Middleware(RequestIdMiddleware), *auth],
        exception_handlers=ERROR_HANDLERS,
    )
    # FastAPI answers what no inference route matches; unlike a catch-all Mount, a path an inference route
    # knows with another method stays a 405 (Allow: ...) instead of falling through to a 404
    app.router.default = api
    return app


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
    """Triton's model configuration and statistics extensions."""

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


def _infer_routes(plane: DataPlane) -> list[Route]:
    """``POST /v2/models/{model}[/versions/{version}]/infer``: JSON or the binary tensor extension."""

    async def infer(request: Request) -> Response:
        # no name for the body: a JSON body (several times its tensors' size) is freed once decoded, not held
        # while the request waits for its batch
        decoded = decode_request(await read_body(request, plane.settings.max_body_bytes), _header_length(request))
        protocol = "v2-binary" if request.headers.get(HEADER_LENGTH) is not None else "v2"
        params = request.path_params
        response = await plane.infer(params["model"], params.get("version"), decoded, protocol)
        content, header_length = encode_response(response, decoded)
        if header_length is None:
            return Response(content, media_type="application/json")
        return Response(
            content,
            media_type="application/octet-stream",
            headers={"Inference-Header-Content-Length": str(header_length)},
        )

    paths = ("/v2/models/{model}/infer", "/v2/models/{model}/versions/{version}/infer")
    return [Route(path, infer, methods=["POST"]) for path in paths]


def _json_options(body: bytes) -> Any:
    try:
        return orjson.loads(body) if body.strip() else {}
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
    async def load(model: str) -> Response:
        plane.require_control()
        await plane.load(model)
        return json_response({"name": model, "loaded": True})

    @app.post("/v2/repository/models/{model}/unload")
    async def unload(model: str) -> Response:
        plane.require_control()
        await plane.unload(model)
        return json_response({"name": model, "unloaded": True})
