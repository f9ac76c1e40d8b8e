"""Request deadlines on the event loop: one timer for all the deadlines that come in order.

A batcher's queued requests all get the version's timeout, so their deadlines come in the order they
were queued: one timer, armed for the earliest, fails whatever has run out when it fires and re-arms
for the next. Answered requests leave the line as they reach its front. A timer per request (uvloop's
``call_later`` and ``cancel``) cost about 5 us each, at every queued request. A deadline that comes
out of order (a shorter timeout) gets a timer of its own.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from modelport.errors import DeadlineExceededError

__all__ = ["Deadlines", "expire"]

# uvloop's clock and timers count whole milliseconds: a timer may fire up to this much before its deadline
_CLOCK_SLACK = 0.001


def expire(future: asyncio.Future[Any], timeout: float) -> None:
    """Fail ``future`` with DeadlineExceeded unless it is done (a queued request is then skipped; a running
    one's result is dropped)."""
    if not future.done():
        future.set_exception(DeadlineExceededError(f"the request did not complete within {timeout:g}s"))


class Deadlines:
    """The deadlines of the requests waiting on one event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._line: deque[tuple[float, asyncio.Future[Any], float]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    def watch(self, future: asyncio.Future[Any], deadline: float, timeout: float) -> asyncio.TimerHandle | None:
        """Fail ``future`` at ``deadline`` (loop time; ``timeout`` names it); a deadline out of order returns
        its own timer, for the caller to cancel once the future is done."""
        line = self._line
        while line and line[0][1].done():
            line.popleft()
        if line and deadline < line[-1][0]:
            return self._loop.call_at(deadline, expire, future, timeout)
        line.append((deadline, future, timeout))
        if self._timer is None:
            self._timer = self._loop.call_at(deadline, self._sweep)
        return None

    def close(self) -> None:
        """Stop the timer (the futures still waiting are left as they are)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _sweep(self) -> None:
        """Fail the requests whose deadline has passed, then sleep until the next one's."""
        self._timer = None
        now, line = self._loop.time(), self._line
        while line:
            deadline, future, timeout = line[0]
            if not future.done() and deadline > now + _CLOCK_SLACK:
                self._timer = self._loop.call_at(deadline, self._sweep)
                return
            line.popleft()
            expire(future, timeout)
