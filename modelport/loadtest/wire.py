"""The few calls the load-test driver itself makes (metadata, one pre-flight request, /metrics).

Plain ``urllib`` and ``grpc`` with raw bytes: the driver never needs more, and the load itself
is sent by locust in its own process.
"""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from modelport.errors import UnavailableError

__all__ = ["HttpReply", "grpc_call", "http_call", "reply_json"]


@dataclass(frozen=True)
class HttpReply:
    """Status and body of one HTTP exchange."""

    status: int
    body: bytes

    def text(self, limit: int = 300) -> str:
        return self.body[:limit].decode("utf-8", "replace").strip()


def http_call(
    url: str, body: bytes | None = None, headers: dict[str, str] | None = None, timeout: float = 30
) -> HttpReply:
    """GET (no body) or POST ``url``; any HTTP status is a reply, an unreachable server an error."""
    request = urllib.request.Request(url, data=body, headers=headers or {}, method="GET" if body is None else "POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return HttpReply(response.status, response.read())
    except urllib.error.HTTPError as exc:
        return HttpReply(exc.code, exc.read())
    except http.client.HTTPException as exc:  # a peer that does not speak HTTP/1.x: a gRPC (HTTP/2) port
        raise UnavailableError(f"cannot reach {url}: the answer is not HTTP/1.1 ({type(exc).__name__})") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UnavailableError(f"cannot reach {url}: {reason}") from None


def reply_json(reply: HttpReply) -> Any:
    """The JSON body of a reply, or None when it is not JSON."""
    try:
        return json.loads(reply.body)
    except ValueError:
        return None


def grpc_call(
    target: str, method: str, request: bytes, timeout: float = 30, metadata: tuple[tuple[str, str], ...] = ()
) -> bytes:
    """One unary call with pre-serialized bytes; ``grpc.RpcError`` propagates to the caller."""
    import grpc

    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(method)
        reply: bytes = call(request, timeout=timeout, metadata=metadata or None)
        return reply
