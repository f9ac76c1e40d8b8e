"""The processing pool: processors run off the event loop, concurrent requests' calls sharing one trip.

Each request's processing is one call, ``function(items)``, exactly as if it ran alone (a text step pads to
the longest of its own request's texts, a custom step sees only its own request's items, a call that raises
fails only its request). What concurrent requests share is the trip to a pool thread and back: a call that
arrives while every thread is busy queues, and the next free thread takes its share of the queue (all of it
with one thread, an even split with several, at most ``max_group`` calls) as one work item, runs the calls one
after another and hands their outcomes back to the event loop at once. An idle pool takes a call at once: no
delay is added to wait for company. Under load that is one thread hop per group instead of one per request.

A stage (one model version's ``pre`` or ``post``) whose last calls took less than the inline threshold (their
median against ``batching.inline_threshold_s``: softmax and top-k over a thousand scores take tens of
microseconds, a hop to a thread and back costs more) runs on the event loop itself, as the batcher runs cheap
batches; a stage never timed yet runs in the pool.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from modelport.errors import UnavailableError
from modelport.serving.batching import inline_threshold_s

__all__ = ["MAX_GROUP", "Outcome", "ProcessingPool"]

# calls per work item at most: a group's first call waits for its last, and the model can batch one group while
# the next decodes (8 against 64: the same CPU per request within 2%, a lower p99 at c=32; app_serving.py)
MAX_GROUP = 8
# a stage's cost is the median of its last calls' wall time: a call in the pool that waited for the GIL (or a
# thread preempted) looks slower than it is, and a median lets a few of those pass
_RECENT = 8

Function = Callable[[list[Any]], Sequence[Any]]


@dataclass(frozen=True)
class Outcome:
    """One call's results (``None`` when it raised ``error``) and how long it ran."""

    results: list[Any] | None
    error: Exception | None
    seconds: float


@dataclass(frozen=True)
class _Call:
    function: Function
    items: list[Any]
    future: asyncio.Future[Outcome]


class ProcessingPool:
    """``threads`` pool threads; :meth:`run` one call, grouped with the calls queued beside it."""

    def __init__(self, threads: int, inline_below_s: float | None = None, max_group: int = MAX_GROUP) -> None:
        self.threads = threads
        self.groups = 0  # work items sent to the pool (each one group of calls)
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="modelport-process")
        self._inline_below_s = inline_threshold_s(None) if inline_below_s is None else inline_below_s
        self._max_group = max_group
        self._queue: deque[_Call] = deque()
        self._busy = 0
        self._recent: dict[Hashable, deque[float]] = {}  # per stage: its last calls' seconds

    @property
    def queued(self) -> int:
        """Calls waiting for a free thread."""
        return len(self._queue)

    def close(self) -> None:
        """Stop the pool once the calls under way finish."""
        self._executor.shutdown(wait=True)

    async def run(self, stage: Hashable, function: Function, items: list[Any]) -> Outcome:
        """``function(items)``, on the loop when ``stage`` is cheap, else in the pool (see the module docstring)."""
        recent = self._recent.get(stage)
        if recent is None:
            recent = self._recent[stage] = deque(maxlen=_RECENT)
        if recent and sorted(recent)[len(recent) // 2] < self._inline_below_s:
            outcome = _execute(function, items)
        else:
            loop = asyncio.get_running_loop()
            call = _Call(function, items, loop.create_future())
            self._queue.append(call)
            if self._busy < self.threads:
                self._dispatch(loop)
            outcome = await call.future
        recent.append(outcome.seconds)
        return outcome

    def _dispatch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Send the next group of queued calls (skipping those nobody waits for any more) to a free thread."""
        share = -(-len(self._queue) // self.threads)  # ceil: an even split, threads finishing later take the rest
        group = [self._queue.popleft() for _ in range(min(share, self._max_group))]
        group = [call for call in group if not call.future.done()]
        if not group:
            return
        try:
            work = loop.run_in_executor(self._executor, _execute_group, [(c.function, c.items) for c in group])
        except RuntimeError:  # the pool is shut down (the server is stopping): no caller waits forever, each gets a 503
            stopping = UnavailableError("the server is stopping: retry on another replica")
            for call in group:
                call.future.set_result(Outcome(None, stopping, 0.0))
            return
        self._busy += 1
        self.groups += 1
        work.add_done_callback(functools.partial(self._finished, group, loop))

    def _finished(
        self, group: list[_Call], loop: asyncio.AbstractEventLoop, work: asyncio.Future[list[Outcome]]
    ) -> None:
        self._busy -= 1
        if work.cancelled() or work.exception() is not None:  # only what _execute does not catch (BaseException)
            error = RuntimeError("the processing pool failed")
            outcomes = [Outcome(None, error, 0.0)] * len(group)
        else:
            outcomes = work.result()
        for call, outcome in zip(group, outcomes, strict=True):
            if not call.future.done():  # a request that timed out or was cancelled meanwhile
                call.future.set_result(outcome)
        while self._queue and self._busy < self.threads:
            self._dispatch(loop)


def _execute(function: Function, items: list[Any]) -> Outcome:
    started = time.perf_counter()
    try:
        results = list(function(items))
    except Exception as exc:  # the caller decides: a request's 4xx, or a processor fault
        return Outcome(None, exc, time.perf_counter() - started)
    return Outcome(results, None, time.perf_counter() - started)


def _execute_group(calls: list[tuple[Function, list[Any]]]) -> list[Outcome]:
    return [_execute(function, items) for function, items in calls]
