"""The one mapping from error codes to HTTP statuses, and the one to gRPC status codes."""

from __future__ import annotations

from modelport.errors import HandlerError, ModelportError

__all__ = ["GENERIC_MESSAGE", "grpc_status", "http_status", "public_message"]

GENERIC_MESSAGE = "internal server error"

_HTTP = {
    "invalid_argument": 400,
    "invalid_spec": 400,
    "rejected_input": 400,
    "unsupported": 400,
    "not_found": 404,
    "unknown_label": 404,  # TorchServe's ModelVersionNotFoundException (TF Serving's REST routes raise their 400)
    "no_route": 404,
    "method_not_allowed": 405,
    "not_ready": 503,
    "unavailable": 503,
    "deadline_exceeded": 504,
    "client_closed": 499,  # nginx's "client closed request": counted and logged, never sent
    "payload_too_large": 413,
    "unauthenticated": 401,
    "permission_denied": 403,
    "unimplemented": 501,
    "invalid_archive": 400,
    "archive_download": 400,
    "conflict": 409,
    "region_exists": 400,  # Triton's HTTP answer to its ALREADY_EXISTS
}


_GRPC = {
    "invalid_argument": "INVALID_ARGUMENT",
    "invalid_spec": "INVALID_ARGUMENT",
    "rejected_input": "INVALID_ARGUMENT",
    "unsupported": "INVALID_ARGUMENT",
    "not_found": "NOT_FOUND",
    "no_route": "UNIMPLEMENTED",
    "method_not_allowed": "UNIMPLEMENTED",
    "unknown_label": "INVALID_ARGUMENT",  # TF Serving's gRPC answer (its REST one is the same InvalidArgument: 400)
    "not_ready": "UNAVAILABLE",
    "unavailable": "UNAVAILABLE",
    "deadline_exceeded": "DEADLINE_EXCEEDED",
    "client_closed": "CANCELLED",
    "payload_too_large": "RESOURCE_EXHAUSTED",
    "unauthenticated": "UNAUTHENTICATED",
    "permission_denied": "PERMISSION_DENIED",
    "unimplemented": "UNIMPLEMENTED",
    "invalid_archive": "INVALID_ARGUMENT",
    "archive_download": "INVALID_ARGUMENT",
    "conflict": "ALREADY_EXISTS",
    "region_exists": "ALREADY_EXISTS",
}


# 5xx codes whose message tells the client about the server's state, never its internals
_STATE_5XX = frozenset({"not_ready", "unavailable", "deadline_exceeded", "unimplemented"})


# a TorchServe handler's status (its PredictionException's, or TorchServe's 503/507) over gRPC
_HANDLER_GRPC = {503: "UNAVAILABLE", 507: "RESOURCE_EXHAUSTED", 504: "DEADLINE_EXCEEDED"}


def grpc_status(error: ModelportError) -> str:
    """gRPC status code name for an error (``grpc.StatusCode[name]``); anything not listed is INTERNAL."""
    if isinstance(error, HandlerError):
        return "INVALID_ARGUMENT" if error.status < 500 else _HANDLER_GRPC.get(error.status, "INTERNAL")
    return _GRPC.get(error.code, "INTERNAL")


def http_status(error: ModelportError) -> int:
    """HTTP status for an error; anything not listed is a 500. A TorchServe handler's error keeps its status."""
    if isinstance(error, HandlerError):
        return error.status
    return _HTTP.get(error.code, 500)


def public_message(error: ModelportError) -> str:
    """The message a client may see: 5xx never leaks internals (a handler's message is meant for clients)."""
    visible = http_status(error) < 500 or error.code in _STATE_5XX or isinstance(error, HandlerError)
    return error.message if visible else GENERIC_MESSAGE
