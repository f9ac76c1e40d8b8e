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

__all__ = ["check_tls", "grpc_credentials", "uvicorn_ssl"]

# what each file must hold (a PEM block of this kind), and how a failed load reads
_HOLDS = {"tls-certfile": b"CERTIFICATE-----", "tls-keyfile": b"PRIVATE KEY-----", "tls-client-ca": b"CERTIFICATE-----"}
_REASONS = {"KEY_VALUES_MISMATCH": "the private key is not the certificate's (key values mismatch)"}


def _read(path: str, flag: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise InvalidArgumentError(f"--{flag} {path}: cannot read: {exc.strerror}") from None
    if b"-----BEGIN " not in data:
        raise InvalidArgumentError(f"--{flag} {path}: not a PEM file")
    if _HOLDS[flag] not in data:
        raise InvalidArgumentError(f"--{flag} {path}: holds no PEM {_HOLDS[flag][:-5].decode().lower()}")
    return data


def check_tls(settings: ServerSettings) -> None:
    """Load the certificate, key and client CA as both servers will, so that a bad file is one clear error at
    start (not a traceback from uvicorn, nor OpenSSL asking a terminal for a key's passphrase)."""
    if not settings.tls_certfile:
        return
    _read(settings.tls_certfile, "tls-certfile")
    if b"ENCRYPTED" in _read(settings.tls_keyfile, "tls-keyfile"):
        raise InvalidArgumentError(
            f"--tls-keyfile {settings.tls_keyfile}: the key is encrypted (a passphrase), which modelport cannot "
            "read: decrypt it (openssl pkey -in KEY -out PLAIN) and protect the file instead"
        )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(settings.tls_certfile, settings.tls_keyfile)
    except ssl.SSLError as exc:
        reason = _REASONS.get(str(exc.reason), f"{exc.reason or exc}")
        raise InvalidArgumentError(
            f"--tls-certfile {settings.tls_certfile} with --tls-keyfile {settings.tls_keyfile}: {reason}"
        ) from None
    if settings.tls_client_ca:
        _read(settings.tls_client_ca, "tls-client-ca")
        try:
            context.load_verify_locations(cafile=settings.tls_client_ca)
        except ssl.SSLError as exc:
            raise InvalidArgumentError(f"--tls-client-ca {settings.tls_client_ca}: {exc.reason or exc}") from None


def uvicorn_ssl(settings: ServerSettings) -> dict[str, Any]:
    """``ssl_*`` options for ``uvicorn.Config`` (empty without TLS); the files are checked first."""
    if not settings.tls_certfile:
        return {}
    check_tls(settings)
    options: dict[str, Any] = {"ssl_certfile": settings.tls_certfile, "ssl_keyfile": settings.tls_keyfile}
    if settings.tls_client_ca:
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
