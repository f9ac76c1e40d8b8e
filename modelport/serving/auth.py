"""Optional authentication: one token for inference, a separate one for model control.

A request presents its token as ``Authorization: Bearer <token>`` or ``X-API-Key: <token>``
(HTTP headers, or the same keys in gRPC metadata). Tokens are compared as SHA-256 digests with
``hmac.compare_digest``: constant time, and the comparison does not reveal the token's length.
Health probes (HTTP live/ready, KServe's ``/``, ``/ping``, gRPC health, KServe ServerLive/ServerReady,
TorchServe's gRPC Ping), ``/metrics``, ``/openapi.json`` and gRPC reflection stay open; everything else needs the
inference token, and load/unload (and TorchServe's register/scale/set-default/unregister, over HTTP or gRPC) need
the control token.
Key files are re-read when they change, so a token rotates without a restart (:mod:`modelport.serving.tokens`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

import grpc

from modelport.errors import UnauthenticatedError
from modelport.serving.grpc_status import abort
from modelport.serving.settings import ServerSettings
from modelport.serving.tokens import FixedKey, Key, KeyFile, digest

__all__ = ["AuthInterceptor", "Scope", "Tokens", "grpc_scope", "http_scope", "presented_token"]

Scope = Literal["inference", "control"]

OPEN_HTTP = frozenset({"/", "/v2/health/live", "/v2/health/ready", "/ping", "/metrics", "/openapi.json"})
_WRITES = frozenset({"POST", "PUT", "DELETE", "PATCH"})
_OPEN_GRPC_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.v1alpha.ServerReflection/")
_OPEN_GRPC_METHODS = frozenset(
    {
        "/inference.GRPCInferenceService/ServerLive",
        "/inference.GRPCInferenceService/ServerReady",
        "/org.pytorch.serve.grpc.inference.InferenceAPIsService/Ping",  # TorchServe's /ping, open as on HTTP
    }
)
# TorchServe's gRPC management writes (its ListModels and DescribeModel take the inference token, as GET /models)
_TORCHSERVE_WRITES = ("RegisterModel", "ScaleWorker", "SetDefault", "UnregisterModel")
_CONTROL_GRPC = frozenset(
    {
        "/inference.GRPCInferenceService/RepositoryModelLoad",
        "/inference.GRPCInferenceService/RepositoryModelUnload",
        "/inference.GRPCInferenceService/LogSettings",  # one method reads and changes them
        "/tensorflow.serving.ModelService/HandleReloadConfigRequest",
        *(f"/org.pytorch.serve.grpc.management.ManagementAPIsService/{m}" for m in _TORCHSERVE_WRITES),
    }
)


def _key(value: str, file: str, flag: str, grace_s: float) -> Key | None:
    if file:
        return KeyFile(file, f"{flag}-file", grace_s)
    return FixedKey(digest(value)) if value else None


@dataclass(frozen=True)
class Tokens:
    """The token each scope needs (None: that scope is open).

    ``check`` and ``enabled`` run on every request and stay cheap: a fixed key is one digest compare,
    a key file adds a clock read (the file is looked at about once a second, see :class:`KeyFile`).
    """

    inference: Key | None = None
    control: Key | None = None

    @classmethod
    def from_settings(cls, settings: ServerSettings) -> Tokens:
        """Tokens from ``--api-key`` / ``--control-key`` or their ``-file`` variants (files re-read on change)."""
        grace = settings.token_grace_s
        return cls(
            inference=_key(settings.api_key, settings.api_key_file, "api-key", grace),
            control=_key(settings.control_key, settings.control_key_file, "control-key", grace),
        )

    @property
    def enabled(self) -> bool:
        """Whether any scope needs a token."""
        return self.inference is not None or self.control is not None

    def check(self, scope: Scope, presented: str | None) -> None:
        """Raise :class:`UnauthenticatedError` unless ``presented`` is the token ``scope`` needs."""
        expected = self.inference if scope == "inference" else self.control
        if expected is None:
            return
        what = "the API key" if scope == "inference" else "the model-control key"
        if not presented:
            raise UnauthenticatedError(f"this server needs {what}: send 'Authorization: Bearer <token>'")
        if not expected.matches(digest(presented)):
            raise UnauthenticatedError(f"the token is not {what}")


def presented_token(authorization: str | None, api_key: str | None) -> str | None:
    """The token of ``Authorization: Bearer <token>``, else of ``X-API-Key``."""
    if authorization:
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return api_key.strip() if api_key else None


def http_scope(path: str, method: str = "GET") -> Scope | None:
    """Which token an HTTP request needs (None: open). Unknown paths need the inference token; TorchServe's
    register, scale, set-default and unregister (``POST|PUT|DELETE /models...``) the control token."""
    if path in OPEN_HTTP:
        return None
    if path.startswith("/v2/repository/models/") and path.endswith(("/load", "/unload")):
        return "control"
    if path == "/v2/logging" and method in _WRITES:
        return "control"
    if (path == "/models" or path.startswith("/models/")) and method in _WRITES and not path.endswith("/invoke"):
        return "control"  # (POST /models/{m}/invoke: SageMaker's prediction, torchserve_legacy)
    return "inference"


def grpc_scope(method: str) -> Scope | None:
    """Which token a gRPC method (``/package.Service/Method``) needs (None: open)."""
    if method in _OPEN_GRPC_METHODS or method.startswith(_OPEN_GRPC_SERVICES):
        return None
    return "control" if method in _CONTROL_GRPC else "inference"


class AuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Checks ``authorization`` / ``x-api-key`` metadata; a refused call ends with its UnauthenticatedError."""

    def __init__(self, tokens: Tokens) -> None:
        self.tokens = tokens

    async def intercept_service(self, continuation: Callable[[Any], Awaitable[Any]], details: Any) -> Any:
        needed = grpc_scope(details.method)
        handler = await continuation(details)
        if needed is None or handler is None or not self.tokens.enabled:
            return handler
        metadata: Iterable[tuple[str, Any]] = details.invocation_metadata or ()
        values = {k.lower(): v for k, v in metadata if isinstance(v, str)}
        try:
            self.tokens.check(needed, presented_token(values.get("authorization"), values.get("x-api-key")))
        except UnauthenticatedError as exc:
            return _refusal(handler, exc)
        return handler


def _refusal(handler: Any, error: UnauthenticatedError) -> Any:
    """A handler of the same kind as ``handler`` that ends the call with ``error``."""

    async def unary(_: Any, context: Any) -> Any:
        await abort(context, error)

    async def streaming(_: Any, context: Any) -> AsyncIterator[Any]:
        await abort(context, error)
        yield None  # pragma: no cover (abort raises)

    make = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }[(handler.request_streaming, handler.response_streaming)]
    return make(
        streaming if handler.response_streaming else unary,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
