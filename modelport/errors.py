"""The one error hierarchy of modelport.

Every error raised on purpose derives from :class:`ModelportError` and carries a
stable ``code``. Transports map codes to statuses in one place each
(``serving/errors.py`` for HTTP and gRPC); the CLI prints ``message`` on one line.

    ModelportError                 code "internal"
    ├── InvalidArgumentError       code "invalid_argument"   bad flags, specs, requests
    │   ├── SpecError              code "invalid_spec"       a tensor spec that does not parse/match
    │   ├── RejectedInputError     code "rejected_input"     values the runtime refused (an id past its table)
    │   ├── RegionExistsError      code "region_exists"      a shared memory region name registered twice
    │   └── InvalidArchiveError    code "invalid_archive"    a model archive that cannot be registered
    │       └── ArchiveDownloadError code "archive_download" an archive URL the server does not fetch
    ├── NotFoundError              code "not_found"          missing file, model or version
    │   ├── VersionLabelError      code "unknown_label"      a version label config.yaml does not define
    │   └── NoRouteError           code "no_route"           an HTTP path the server has no route for
    ├── MethodNotAllowedError      code "method_not_allowed" an HTTP method the path does not take, or a write
    │                                                         API the server was not started with
    ├── UnsupportedError           code "unsupported"        format/framework pairs, dtypes
    ├── SourceError                code "source_error"       a source model that cannot be loaded or run
    ├── ConversionError            code "conversion_failed"  a converter failed (names converter and op)
    ├── ParityError                code "parity_failed"      an artifact does not reproduce the source
    ├── ManifestError              code "invalid_manifest"   unreadable or inconsistent modelport.json
    ├── DependencyError            code "missing_dependency" an optional framework is not installed
    ├── ModelNotReadyError         code "not_ready"          a known model that is loading or failed to load
    ├── UnavailableError           code "unavailable"        overloaded (queue full) or shutting down
    ├── DeadlineExceededError      code "deadline_exceeded"  a request that timed out in the queue or model
    ├── ClientClosedError          code "client_closed"      the client went away before its answer (nginx's 499)
    ├── PayloadTooLargeError       code "payload_too_large"  a body over the server's limit
    ├── InferenceError             code "inference_failed"   the model raised while predicting
    ├── HandlerError               code "handler_failed"     a TorchServe handler failed: its status and message
    ├── PermissionDeniedError      code "permission_denied"  an operation the server does not allow
    ├── UnauthenticatedError       code "unauthenticated"    a request without the token its operation needs
    ├── ConflictError              code "conflict"           registering what is already registered
    └── UnimplementedError         code "unimplemented"      a protocol method the server does not implement
"""

from __future__ import annotations

import re

__all__ = [
    "ArchiveDownloadError",
    "ClientClosedError",
    "ConflictError",
    "ConversionError",
    "DeadlineExceededError",
    "DependencyError",
    "HandlerError",
    "InferenceError",
    "InvalidArchiveError",
    "InvalidArgumentError",
    "ManifestError",
    "MethodNotAllowedError",
    "ModelNotReadyError",
    "ModelportError",
    "NoRouteError",
    "NotFoundError",
    "ParityError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "RegionExistsError",
    "RejectedInputError",
    "SourceError",
    "SpecError",
    "UnauthenticatedError",
    "UnavailableError",
    "UnimplementedError",
    "UnsupportedError",
    "VersionLabelError",
    "summarize",
]


class ModelportError(Exception):
    """Base of every error modelport raises on purpose; ``code`` is stable."""

    code = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgumentError(ModelportError):
    """A flag, option or request that cannot be accepted as given."""

    code = "invalid_argument"


class SpecError(InvalidArgumentError):
    """A tensor spec that does not parse, or does not match the model."""

    code = "invalid_spec"


class RejectedInputError(InvalidArgumentError):
    """Values that passed validation but that the runtime refused (a token id past the vocabulary).

    Raised by a runtime for one request's inputs; the message says what was wrong without the
    framework's internals (node names, file paths)."""

    code = "rejected_input"


class NotFoundError(ModelportError):
    """A file, model or version that does not exist."""

    code = "not_found"


class VersionLabelError(NotFoundError):
    """A version label (TF Serving's ``/labels/{l}`` or ``version_label``) the model's config.yaml does not define."""

    code = "unknown_label"


class NoRouteError(NotFoundError):
    """An HTTP path no route of the server answers (the message is the common body's ``Not Found``)."""

    code = "no_route"


class MethodNotAllowedError(ModelportError):
    """An HTTP method the path does not take; ``allowed`` are the methods it does (the ``Allow`` header). Without
    ``allowed``: a write API the server was started without (TorchServe's model API when model control is off)."""

    code = "method_not_allowed"

    def __init__(self, message: str, allowed: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.allowed = allowed


class UnsupportedError(ModelportError):
    """A combination modelport does not support (format for a framework, dtype...)."""

    code = "unsupported"


class SourceError(ModelportError):
    """A source model that cannot be loaded, built or run."""

    code = "source_error"


class ConversionError(ModelportError):
    """A converter failed; the message names the converter and, when known, the op."""

    code = "conversion_failed"


class ParityError(ModelportError):
    """An artifact whose outputs do not match the source within tolerance."""

    code = "parity_failed"


class ManifestError(ModelportError):
    """A ``modelport.json`` that cannot be read or contradicts its files."""

    code = "invalid_manifest"


class DependencyError(ModelportError):
    """An optional dependency (framework, converter) is not installed."""

    code = "missing_dependency"


class ModelNotReadyError(ModelportError):
    """A model that exists but is loading, unloaded, or failed its load checks."""

    code = "not_ready"


class UnavailableError(ModelportError):
    """The server cannot take the request now: queue full or draining; retry after ``retry_after`` s."""

    code = "unavailable"

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class DeadlineExceededError(ModelportError):
    """A request that did not complete within its timeout."""

    code = "deadline_exceeded"


class ClientClosedError(ModelportError):
    """The client closed its connection or cancelled its call before the answer: nobody is left to answer.

    Never sent (there is no one to send it to); it names the outcome in metrics and traces, as nginx's 499 does.
    """

    code = "client_closed"


class PayloadTooLargeError(InvalidArgumentError):
    """A request body larger than the server accepts."""

    code = "payload_too_large"


class InferenceError(ModelportError):
    """The model raised while predicting; the message is generic, the traceback is logged."""

    code = "inference_failed"


class HandlerError(ModelportError):
    """A TorchServe handler that failed, answered as TorchServe answers it: ``status`` with a message meant
    for clients (TorchServe's own ``Prediction failed``..., or the message of the handler's
    ``PredictionException``); the traceback is logged where it was raised."""

    code = "handler_failed"
    status = 503  # TorchServe's for a handler that raised; a PredictionException's own code when it gave one

    def __init__(self, message: str, status: int = 503) -> None:
        super().__init__(message)
        self.status = status if 400 <= status <= 599 else 503


class PermissionDeniedError(ModelportError):
    """An operation the server is configured not to allow (e.g. model control when disabled)."""

    code = "permission_denied"


class UnauthenticatedError(ModelportError):
    """A request that lacks the API key / bearer token its operation needs, or presents a wrong one."""

    code = "unauthenticated"


class InvalidArchiveError(InvalidArgumentError):
    """A model archive (TorchServe ``.mar``) that cannot be registered: unreadable, unnamed, not importable."""

    code = "invalid_archive"


class ArchiveDownloadError(InvalidArchiveError):
    """An archive URL the server does not fetch (it registers archives from local paths only)."""

    code = "archive_download"


class RegionExistsError(InvalidArgumentError):
    """A shared memory region registered under a name already in use (Triton: HTTP 400, gRPC ALREADY_EXISTS)."""

    code = "region_exists"


class ConflictError(ModelportError):
    """Registering a model version that is already registered."""

    code = "conflict"


class UnimplementedError(ModelportError):
    """A protocol method the server does not implement (a Triton extension it does not advertise)."""

    code = "unimplemented"


def summarize(exc: BaseException) -> str:
    """``Type: first line`` of an exception, for one-line messages about third-party errors."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))  # converters colour their messages
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if len(lines) > 1 and _WRAPPER.match(lines[0]):  # Keras puts the cause under this header
        lines = lines[1:]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")


_WRAPPER = re.compile(r"Exception encountered when calling [\w.]+\(\)\.?$")
