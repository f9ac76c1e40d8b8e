"""TorchServe's explanations API: ``/explanations/{m}[/{v}]``, and KServe's explain as TorchServe maps it
(``/v1/models/{m}:explain``, ``/v2/models/{m}/explain``).

An explanation is a prediction request marked for explanation: the handler gets it as it gets a prediction
(the body as input ``body``, multipart parts and form fields under their names, the headers) with the header
``explain: True`` that TorchServe's frontend sets, so ``BaseHandler.handle`` calls ``explain_handle`` (a
prediction carries ``explain: False``, whatever the client sent). TorchServe's KServe routes hand the handler the
body as it came, as ``/explanations`` does. A model without a TorchServe handler cannot explain: on
``/explanations`` it is TorchServe's answer for a handler that cannot (503 ``Prediction failed``); on the KServe
routes modelport's 501, as before.
"""

from __future__ import annotations

from modelport.errors import ModelportError, NotFoundError, UnimplementedError
from modelport.serving.dataplane import DataPlane
from modelport.serving.front import BodyReader, Handler, HotRoute, RequestHead
from modelport.serving.httperrors import Reply
from modelport.serving.httperrors import error_body as plain_error_body
from modelport.serving.torchserve_api import Payload, error_body, predict

__all__ = ["EXPLAIN_HOT_ROUTES"]


async def _explanations(plane: DataPlane, head: RequestHead, read: BodyReader) -> Reply:
    """``POST|PUT /explanations/{model}[/{version}]``."""
    return await _explain(plane, head, read)


def _kserve_explain(api: str, instead: str) -> Handler:
    """``POST /v1/models/{m}[/versions/{v}]:explain`` and ``/v2/models/{m}[/versions/{v}]/explain``: a handler
    model's explanation, as TorchServe answers them; any other model's 501."""

    async def explain(plane: DataPlane, head: RequestHead, read: BodyReader) -> Reply:
        model, version = head.params["model"], head.params.get("version")
        try:
            meta = plane.serving_metadata(model, version if version is None or version.isdigit() else None)
        except NotFoundError:
            meta = None  # TorchServe's own answer for a model or version it lacks
        if meta is not None and meta.format != "handler":
            raise UnimplementedError(f"{api} API is not implemented; modelport serves {instead}")
        return await _explain(plane, head, read)

    return explain


async def _explain(plane: DataPlane, head: RequestHead, read: BodyReader) -> Reply:
    model, version = head.params["model"], head.params.get("version")
    body = await read(plane.settings.max_body_bytes)
    payload = Payload(body, head.header(b"content-type") or "", head.headers, explain=True)
    return await predict(plane, model, version, payload, stream=True)


def _kserve_error_body(error: ModelportError, status: int) -> Reply:
    """modelport's 501 for a model that is not a handler's; TorchServe's error body otherwise."""
    return (plain_error_body if isinstance(error, UnimplementedError) else error_body)(error, status)


EXPLAIN_HOT_ROUTES = [
    *(
        HotRoute(path, frozenset({"POST", "PUT"}), _explanations, render=error_body)
        for path in ("/explanations/{model}", "/explanations/{model}/{version}")
    ),
    *(
        HotRoute(path, frozenset({"POST"}), _kserve_explain(api, instead), render=_kserve_error_body)
        for path, api, instead in (
            ("/v1/models/{model}:explain", "KServe v1's :explain", ":predict"),
            ("/v1/models/{model}/versions/{version}:explain", "KServe v1's :explain", ":predict"),
            ("/v2/models/{model}/explain", "KServe v2's explain", "/infer"),
            ("/v2/models/{model}/versions/{version}/explain", "KServe v2's explain", "/infer"),
        )
    ),
]
"""Explanations (TorchServe's error body; KServe's 501 in modelport's)."""
