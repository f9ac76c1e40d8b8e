"""Where an error becomes a gRPC status: every servicer (KServe v2, TF Serving) runs its calls through
``guard``, and interceptors that refuse a call (authentication, undecodable bytes) ``abort`` with a typed
error; ``serving/errors.py`` picks the status."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import grpc

from modelport.errors import InvalidArgumentError, ModelportError, summarize
from modelport.serving.errors import GENERIC_MESSAGE, grpc_status, public_message

__all__ = ["DecodeGuard", "Undecodable", "abort", "guard"]

log = logging.getLogger("modelport.serving.grpc")
T = TypeVar("T")


async def abort(context: Any, error: ModelportError) -> NoReturn:
    """End the call with ``error``'s gRPC status and public message."""
    await context.abort(grpc.StatusCode[grpc_status(error)], public_message(error))
    raise AssertionError("unreachable: abort raises")


async def guard(context: Any, call: Callable[[], Awaitable[T]]) -> T:
    """Run one RPC; errors become their gRPC status once, here."""
    try:
        return await call()
    except ModelportError as exc:
        await abort(context, exc)
    except Exception:
        log.exception("unhandled error in a gRPC call")
        await context.abort(grpc.StatusCode.INTERNAL, GENERIC_MESSAGE)
    raise AssertionError("unreachable: abort raises")


class Undecodable:
    """What a lenient deserializer returns for bytes that do not parse as the request message."""

    def __init__(self, error: str) -> None:
        self.error = error


class DecodeGuard(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Bytes that do not parse as the method's request message are INVALID_ARGUMENT, not gRPC's UNKNOWN.

    The request streams named in ``lenient_streams`` get an :class:`Undecodable` instead, for the servicer
    to answer in the stream (which goes on); other streaming methods are left as they are.
    """

    def __init__(self, lenient_streams: frozenset[str] = frozenset()) -> None:
        self._lenient_streams = lenient_streams
        self._guarded: dict[str, Any] = {}

    async def intercept_service(self, continuation: Callable[[Any], Awaitable[Any]], details: Any) -> Any:
        handler = await continuation(details)
        if handler is None:
            return handler
        if details.method not in self._guarded:
            if details.method in self._lenient_streams:
                self._guarded[details.method] = grpc.stream_stream_rpc_method_handler(
                    handler.stream_stream,
                    request_deserializer=_lenient(handler.request_deserializer),
                    response_serializer=handler.response_serializer,
                )
            elif handler.request_streaming or handler.response_streaming:
                return handler
            else:
                self._guarded[details.method] = _guard_decoding(handler, details.method)
        return self._guarded[details.method]


def _lenient(parse: Callable[[bytes], Any] | None) -> Callable[[bytes], Any]:
    """A deserializer that returns an ``Undecodable`` instead of raising."""

    def deserialize(data: bytes) -> Any:
        try:
            return parse(data) if parse else data
        except Exception as exc:
            return Undecodable(summarize(exc))

    return deserialize


def _guard_decoding(handler: Any, method: str) -> Any:
    behaviour = handler.unary_unary

    async def call(request: Any, context: Any) -> Any:
        if isinstance(request, Undecodable):
            await abort(context, InvalidArgumentError(f"{method}: undecodable request ({request.error})"))
        return await behaviour(request, context)

    return grpc.unary_unary_rpc_method_handler(
        call,
        request_deserializer=_lenient(handler.request_deserializer),
        response_serializer=handler.response_serializer,
    )
