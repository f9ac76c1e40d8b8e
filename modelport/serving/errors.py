"""The one mapping from error codes to HTTP statuses, and the one to gRPC status codes."""

from __future__ import annotations

from modelport.errors import ModelportError

__all__ = ["GENERIC_MESSAGE", "grpc_status", "http_status", "public_message"]

GENERIC_MESSAGE = "internal server error"

_HTTP = {
    "invalid_argument": 400,
    "invalid_spec": 400,
    "rejected_input": 400,
    "unsupported": 400,
    "not_found": 404,
    "unknown_label": 404,
    "not_ready": 503,
    "unavailable": 503,
    "deadline_exceeded": 504,
    "payload_too_large": 413,
    "unauthenticated": 401,
    "permission_denied": 403,
    "unimplemented": 501,
}


_GRPC = {
    "invalid_argument": "INVALID_ARGUMENT",
    "invalid_spec": "INVALID_ARGUMENT",
    "rejected_input": "INVALID_ARGUMENT",
    "unsupported": "INVALID_ARGUMENT",
    "not_found": "NOT_FOUND",
    "unknown_label": "INVALID_ARGUMENT",  # TF Serving's gRPC answer; over REST the label is a path that names nothing
    "not_ready": "UNAVAILABLE",
    "unavailable": "UNAVAILABLE",
    "deadline_exceeded": "DEADLINE_EXCEEDED",
    "payload_too_large": "RESOURCE_EXHAUSTED",
    "unauthenticated": "UNAUTHENTICATED",
    "permission_denied": "PERMISSION_DENIED",
    "unimplemented": "UNIMPLEMENTED",
}


# 5xx codes whose message tells the client about the server's state, never its internals
_STATE_5XX = frozenset({"not_ready", "unavailable", "deadline_exceeded", "unimplemented"})


def grpc_status(error: ModelportError) -> str:
    """gRPC status code name for an error (``grpc.StatusCode[name]``); anything not listed is INTERNAL."""
    return _GRPC.get(error.code, "INTERNAL")


def http_status(error: ModelportError) -> int:
    """HTTP status for an error; anything not listed is a 500."""
    return _HTTP.get(error.code, 500)


def public_message(error: ModelportError) -> str:
    """The message a client may see: 5xx never leaks internals."""
    visible = http_status(error) < 500 or error.code in _STATE_5XX
    return error.message if visible else GENERIC_MESSAGE
