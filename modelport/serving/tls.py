"""TLS for both transports from one PEM certificate (chain) and key: uvicorn's ssl options, gRPC credentials.

With ``--tls-client-ca`` both ports also require a client certificate signed by that CA (mutual TLS):
a client without one, with one from another CA or with an expired one fails the handshake.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import grpc

from modelport.errors import InvalidArgumentError
from modelport.serving.settings import ServerSettings

__all__ = ["grpc_credentials", "uvicorn_ssl"]


def _read(path: str, flag: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise InvalidArgumentError(f"--{flag} {path}: cannot read: {exc.strerror}") from None
    if b"-----BEGIN " not in data:
        raise InvalidArgumentError(f"--{flag} {path}: not a PEM file")
    return data


def uvicorn_ssl(settings: ServerSettings) -> dict[str, Any]:
    """``ssl_*`` options for ``uvicorn.Config`` (empty without TLS); the files are checked first."""
    if not settings.tls_certfile:
        return {}
    _read(settings.tls_certfile, "tls-certfile")
    _read(settings.tls_keyfile, "tls-keyfile")
    options: dict[str, Any] = {"ssl_certfile": settings.tls_certfile, "ssl_keyfile": settings.tls_keyfile}
    if settings.tls_client_ca:
        _read(settings.tls_client_ca, "tls-client-ca")
        options.update(ssl_ca_certs=settings.tls_client_ca, ssl_cert_reqs=ssl.CERT_REQUIRED)
    return options


def grpc_credentials(settings: ServerSettings) -> Any:
    """Server credentials for ``add_secure_port``, or None without TLS."""
    if not settings.tls_certfile:
        return None
    key = _read(settings.tls_keyfile, "tls-keyfile")
    chain = _read(settings.tls_certfile, "tls-certfile")
    if not settings.tls_client_ca:
        return grpc.ssl_server_credentials([(key, chain)])
    client_ca = _read(settings.tls_client_ca, "tls-client-ca")
    return grpc.ssl_server_credentials([(key, chain)], root_certificates=client_ca, require_client_auth=True)
