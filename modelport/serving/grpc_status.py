"""Where an error becomes a gRPC status: every servicer (KServe v2, TF Serving) runs its calls through ``guard``."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from modelport.errors import ModelportError
from modelport.serving.errors import GENERIC_MESSAGE, grpc_status, public_message

__all__ = ["guard"]

log = logging.getLogger("modelport.serving.grpc")
T = TypeVar("T")


async def guard(context: Any, call: Callable[[], Awaitable[T]]) -> T:
    """Run one RPC; errors become their gRPC status once, here."""
    try:
        return await call()
    except ModelportError as exc:
        await context.abort(grpc.StatusCode[grpc_status(exc)], public_message(exc))
    except Exception:
        log.exception("unhandled error in a gRPC call")
        await context.abort(grpc.StatusCode.INTERNAL, GENERIC_MESSAGE)
    raise AssertionError("unreachable: abort raises")
