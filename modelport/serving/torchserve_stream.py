"""A streaming TorchServe handler's responses, sent to an HTTP client as they come.

The handler sends intermediate responses (``send_intermediate_predict_response``) before it returns its final
one. The request names a stream (``runtimes/handler_request.py``: ``open_stream``); the handler's runtime hands
each intermediate response to it from the thread it runs on (or from its worker process's pipe), and this module
turns them into the HTTP reply: the first response's status and headers with its body, then every later body as
it arrives, the final one last, as TorchServe writes them as chunks. A handler that sends nothing ahead of its
final response is answered as any other (one body, a Content-Length).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

from modelport.runtimes.handler_request import Reply, TorchServeRequest, close_stream, open_stream, split_chunks

__all__ = ["streamed"]

Infer = Callable[[TorchServeRequest], Awaitable[Reply]]


async def streamed(infer: Infer, request: TorchServeRequest) -> tuple[Reply, AsyncIterator[bytes] | None]:
    """``infer(request)``, naming a stream: the final reply and None when the handler sent nothing ahead of it;
    else the first intermediate response and the bodies that follow it (the final one's last)."""
    loop = asyncio.get_running_loop()
    parts: asyncio.Queue[Reply] = asyncio.Queue()

    def arrived(reply: Reply) -> None:  # on the handler's thread
        loop.call_soon_threadsafe(parts.put_nowait, reply)

    token = open_stream(arrived)
    task = asyncio.ensure_future(infer(request._replace(stream=token)))
    try:
        first = await _next(parts, task)
    except BaseException:
        task.cancel()
        close_stream(token)
        raise
    if first is None:  # it did not stream (or failed before it did): the reply as it is, or its error
        close_stream(token)
        return task.result(), None
    return first, _rest(parts, task, token)


async def _next(parts: asyncio.Queue[Reply], task: asyncio.Future[Reply]) -> Reply | None:
    """The next intermediate response, or None once the handler has returned (its responses were all queued
    before: they come from the same thread, or the same pipe, ahead of the result)."""
    if not parts.empty():
        return parts.get_nowait()
    if task.done():
        return None
    getter = asyncio.ensure_future(parts.get())
    try:
        await asyncio.wait((getter, task), return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not getter.done():
            getter.cancel()
    if getter.done() and not getter.cancelled():
        return getter.result()
    return None if parts.empty() else parts.get_nowait()


async def _rest(parts: asyncio.Queue[Reply], task: asyncio.Future[Reply], token: str) -> AsyncIterator[bytes]:
    """The bodies after the first: each intermediate one as it comes, then the rest of the final reply (which
    holds every response: those not taken from the queue yet come from it, in order)."""
    sent = 1
    try:
        while (part := await _next(parts, task)) is not None:
            sent += 1
            yield part.body
        final = task.result()  # the handler's failure, after it streamed: the caller cuts the response short
        for body in split_chunks(final.body, final.chunks)[sent:]:
            yield body
    finally:
        close_stream(token)
        if not task.done():  # the client went away: the request leaves its batch, if it has not run yet
            task.cancel()
            task.add_done_callback(_retrieved)


def _retrieved(task: asyncio.Future[Reply]) -> None:
    """Take a cancelled request's outcome, so that asyncio does not log it as never retrieved."""
    if not task.cancelled():
        task.exception()
