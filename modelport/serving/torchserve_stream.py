"""A streaming TorchServe handler's responses, sent to an HTTP or gRPC client as they come.

The handler sends intermediate responses (``send_intermediate_predict_response``) before it returns its final
one. The request names a stream (``runtimes/handler_request.py``: ``open_stream``); the handler's runtime hands
each intermediate response to it from the thread it runs on (or from its worker process's pipe), and this module
turns them into the reply: the first response's status and headers with its body, then every later body as it
arrives, the final one last, as TorchServe writes them as chunks. A handler that sends nothing ahead of its final
response is answered as any other (one body).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable

from modelport.runtimes.handler_request import Reply, TorchServeRequest, close_stream, open_stream, split_chunks

__all__ = ["streamed"]

Infer = Callable[[TorchServeRequest], Awaitable[Reply]]


async def streamed(infer: Infer, request: TorchServeRequest) -> tuple[Reply, AsyncIterator[bytes] | None]:
    """``infer(request)``, naming a stream: the final reply and None when the handler sent nothing ahead of it;
    else the first intermediate response and the bodies that follow it (the final one's last)."""
    stream = _Stream(asyncio.get_running_loop())
    token = open_stream(stream.arrived)
    stream.task = asyncio.ensure_future(infer(request._replace(stream=token)))
    stream.task.add_done_callback(stream.wake)
    try:
        first = await stream.next()
    except BaseException:
        stream.task.cancel()
        close_stream(token)
        raise
    if first is None:  # it did not stream (or failed before it did): the reply as it is, or its error
        close_stream(token)
        return stream.task.result(), None
    return first, _rest(stream, token)


class _Stream:
    """The intermediate responses that arrived and not taken yet, and the request's task."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.parts: deque[Reply] = deque()
        self.waiter: asyncio.Future[None] | None = None
        self.task: asyncio.Future[Reply] = loop.create_future()

    def arrived(self, reply: Reply) -> None:
        """An intermediate response (on the handler's thread)."""
        self.loop.call_soon_threadsafe(self._queue, reply)

    def _queue(self, reply: Reply) -> None:
        self.parts.append(reply)
        self.wake()

    def wake(self, _: object = None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def next(self) -> Reply | None:
        """The next intermediate response, or None once the handler has returned (its responses were all queued
        before: they come from the same thread, or the same pipe, ahead of the result)."""
        while not self.parts and not self.task.done():
            self.waiter = self.loop.create_future()
            await self.waiter
        return self.parts.popleft() if self.parts else None


async def _rest(stream: _Stream, token: str) -> AsyncIterator[bytes]:
    """The bodies after the first: each intermediate one as it comes, then the rest of the final reply (which
    holds every response: those not taken yet come from it, in order)."""
    sent = 1
    try:
        while (part := await stream.next()) is not None:
            sent += 1
            yield part.body
        final = stream.task.result()  # the handler's failure, after it streamed: the caller cuts the answer short
        for body in split_chunks(final.body, final.chunks)[sent:]:
            yield body
    finally:
        close_stream(token)
        if not stream.task.done():  # the client went away: the request leaves its batch, if it has not run yet
            stream.task.cancel()
            stream.task.add_done_callback(_retrieved)


def _retrieved(task: asyncio.Future[Reply]) -> None:
    """Take a cancelled request's outcome, so that asyncio does not log it as never retrieved."""
    if not task.cancelled():
        task.exception()
