"""TorchServe's other inference routes, the ones that hand the request's query parameters to the handler.

TorchServe 0.12 answers, beside ``/predictions``, its legacy ``/{model}[/{version}]/predict`` (any method) and
SageMaker's ``POST /invocations[?model_name=m]`` (without ``model_name``: the one model served, else a 400) and
``POST /models/{model}/invoke``. On these (not on ``/predictions``) each query parameter is a field of the request
the handler gets, as bytes, before the body's fields (a body or part of the same name wins; a repeated parameter:
its last value), all checked against a real TorchServe (``tests/serving/test_torchserve_deployment.py``).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from modelport.errors import InvalidArgumentError
from modelport.runtimes.handler_request import Field
from modelport.serving.dataplane import DataPlane
from modelport.serving.httperrors import ProtocolRoute
from modelport.serving.httputil import read_body
from modelport.serving.torchserve_api import Payload, error_body, predict

__all__ = ["legacy_routes"]

_ANY = ["GET", "POST", "PUT", "DELETE", "PATCH"]


def legacy_routes(plane: DataPlane) -> list[ProtocolRoute]:
    """``POST /invocations``, ``POST /models/{model}/invoke``, ``/{model}[/{version}]/predict``."""

    async def invocations(request: Request) -> Response:
        model = request.query_params.get("model_name")
        if model is None:  # TorchServe's SageMaker route serves its one model without it
            names = plane.model_names()
            if len(names) != 1:
                raise InvalidArgumentError("Parameter model_name is required.")
            model = names[0]
        return await _answer(plane, request, model, None)

    async def invoke(request: Request) -> Response:
        return await _answer(plane, request, request.path_params["model"], None)

    async def legacy(request: Request) -> Response:
        return await _answer(plane, request, request.path_params["model"], request.path_params.get("version"))

    return [
        ProtocolRoute("/invocations", invocations, methods=["POST"], render=error_body),
        ProtocolRoute("/models/{model}/invoke", invoke, methods=["POST"], render=error_body),
        ProtocolRoute("/{model}/predict", legacy, methods=_ANY, render=error_body),
        ProtocolRoute("/{model}/{version}/predict", legacy, methods=_ANY, render=error_body),
    ]


async def _answer(plane: DataPlane, request: Request, model: str, version: str | None) -> Response:
    body = await read_body(request, plane.settings.max_body_bytes)
    params = dict(request.query_params.multi_items())  # the last value of a repeated one
    payload = Payload(
        body,
        request.headers.get("content-type", ""),
        list(request.headers.raw),
        params=tuple(Field(key, "", value.encode()) for key, value in params.items()),
    )
    return (await predict(plane, model, version, payload)).response()
