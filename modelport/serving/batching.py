"""Dynamic batching: requests (already validated) are grouped up to a size or a delay.

A request that finds the batcher idle (greedy batching, nothing queued or running, inline-cheap
compute) runs at once in its own coroutine, as Triton's scheduler dispatches to an idle instance:
at low concurrency that saves the hops through the queue and the batching loop. Requests that
arrive together in one pass of the event loop still queue and batch.

One loop per model version takes a free runtime instance, gathers pending requests
with the same non-batch shapes until ``max_batch_size`` rows are reached or the first
request has waited ``max_queue_delay``, runs the batch on a worker thread, and splits
the outputs back by rows. A model without a batch dimension gets batches of one
request: the same code path.

A batch that fails is re-run in halves until every failure is one request's own, so one bad
request never fails its batch-mates: for n requests that costs at most 2n - 2 more runtime
calls, each request in at most ceil(log2 n) of them (a model that fails on everything costs
about twice its calls, not n^2). Which failure is the client's (a 400) is the runtime's call
(``RejectedInputError``); the batcher only splits. Failures that say nothing about the inputs
(unavailable, deadline exceeded) are not re-run, nor are requests that timed out meanwhile.

A request that leaves before its batch runs (its deadline passed, or its caller cancelled it: a client that went
away) is left out of the batch and makes room in it, and its place in the queue is free at once: it counts in no
bound or depth.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from modelport.cpus import usable_cpus
from modelport.errors import (
    DeadlineExceededError,
    InferenceError,
    InvalidArgumentError,
    ModelportError,
    UnavailableError,
    summarize,
)
from modelport.runtimes.base import Arrays
from modelport.serving import tracing
from modelport.serving.deadlines import Deadlines

__all__ = ["BatchPolicy", "BatchStats", "Batcher", "inline_threshold_s"]

log = logging.getLogger(__name__)

Predict = Callable[[Arrays], Arrays]

# Failures that say nothing about any request's values: re-running parts of the batch cannot help.
_NOT_ISOLATED = (UnavailableError, DeadlineExceededError)

# A batch whose compute (moving average) is shorter than this runs on the event loop itself: the
# round trip to a worker thread and back costs more than that (benchmarks/serving.py, MLP).
# ``BatchPolicy.inline_below_s`` (``--inline-below-ms``, config.yaml ``inline_below_ms``) overrides it.
INLINE_BELOW_S = 0.0002
# With one CPU a worker thread cannot compute beside the event loop: the hop is pure cost (GIL hand-offs,
# context switches) for anything short; the loop is still never blocked for longer than this.
INLINE_BELOW_ONE_CPU_S = 0.002


def inline_threshold_s(configured_ms: float | None) -> float:
    """The inline threshold in seconds: as configured, else by the CPUs this process may run on."""
    if configured_ms is not None:
        return configured_ms / 1000
    return INLINE_BELOW_ONE_CPU_S if usable_cpus() == 1 else INLINE_BELOW_S


@dataclass(frozen=True)
class BatchPolicy:
    """How one model version batches: rows per batch (0 = no batch dim), delay, queue bound."""

    max_batch_size: int
    max_queue_delay_s: float
    max_queue_size: int
    preferred_batch_sizes: tuple[int, ...] = ()
    # batches averaging less compute than this run on the event loop (one instance only; 0 = never)
    inline_below_s: float = INLINE_BELOW_S


class BatchStats(NamedTuple):
    """What one executed batch looked like, for metrics (a named tuple: one is made per batch).

    ``failed``: at least one of its requests failed; ``runs``: runtime calls it took (more than
    one when a failure was isolated by re-running halves), all counted in ``compute_seconds``;
    ``inline``: it ran on the event loop, not on a worker thread (``BatchPolicy.inline_below_s``).
    """

    rows: int
    requests: int
    queue_seconds: tuple[float, ...]
    compute_seconds: float
    failed: bool
    runs: int = 1
    inline: bool = False


# Where a request stands (_Pending.place): in the queue, taken from it (into a batch being gathered, or run at
# once), or gone from the queue before it was taken (cancelled, timed out): still in it, counted in no depth.
_TAKEN, _QUEUED, _LEFT = 0, 1, 2


class _Pending:
    """One queued request; ``key`` is set when it is queued (one that runs at once batches with nothing),
    ``trace`` is tracing.enqueued()'s span context when the request is sampled."""

    __slots__ = ("enqueued", "future", "inputs", "key", "place", "rows", "trace")

    def __init__(self, inputs: Arrays, rows: int, future: asyncio.Future[Arrays], enqueued: float) -> None:
        self.inputs = inputs
        self.rows = rows
        self.key: tuple[Any, ...] = ()
        self.future = future
        self.enqueued = enqueued
        self.trace: Any = None
        self.place = _TAKEN


class _Run:
    """One gathered batch on its runtime instance, with the re-runs that isolate its failures."""

    __slots__ = ("calls", "failed", "inline", "instance", "traced")

    def __init__(self, instance: Predict, inline: bool) -> None:
        self.instance = instance
        self.calls = 0
        self.failed = 0
        self.traced = False  # a fault's traceback is logged once per batch, not once per request
        self.inline = inline


class Batcher:
    """Queue, batch and run requests on ``len(instances)`` runtime instances."""

    def __init__(
        self, instances: list[Predict], policy: BatchPolicy, observe: Callable[[BatchStats], None] | None = None
    ) -> None:
        self.policy = policy
        self._observe = observe
        self._instances = instances
        self._executor = ThreadPoolExecutor(max_workers=len(instances), thread_name_prefix="modelport-infer")
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._carry: deque[_Pending] = deque()
        self._left = 0  # requests in the queue or the carry that left before they were taken (_LEFT)
        self._free: asyncio.Queue[Predict] = asyncio.Queue()
        for instance in instances:
            self._free.put_nowait(instance)
        self._running: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._closed = False
        self._compute_ewma = policy.inline_below_s  # start on the worker thread until a batch is timed
        self._hot = False  # a request ran at once during this pass of the event loop (see _idle)
        self._deadlines: Deadlines | None = None  # queued requests' deadlines, made on the loop at first use
        self._running_on: asyncio.AbstractEventLoop | None = None  # set at first use (see _event_loop)

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        """The loop the batcher runs on, found once: each ``get_running_loop()`` costs a getpid call (Python 3.11)."""
        loop = self._running_on
        if loop is None:
            loop = self._running_on = asyncio.get_running_loop()
        return loop

    @property
    def depth(self) -> int:
        """Requests waiting for a batch (not those that left: cancelled or timed out)."""
        return self._queue.qsize() + len(self._carry) - self._left

    @property
    def in_flight(self) -> int:
        """Batches executing now."""
        return len(self._running)

    async def submit(self, inputs: Arrays, timeout: float) -> Arrays:
        """Queue a validated request and wait for its outputs (at most ``timeout`` seconds)."""
        if self._closed:
            raise UnavailableError("the model version is being unloaded", retry_after=1.0)
        if self.depth >= self.policy.max_queue_size:
            raise UnavailableError("the model's request queue is full; retry later", retry_after=1.0)
        loop = self._event_loop()
        pending = _Pending(inputs, _rows(inputs, self.policy), loop.create_future(), loop.time())
        if tracing.ENABLED:
            pending.trace = tracing.enqueued()
        if self._idle():  # nothing to batch with: run it now, without the hops through the queue and the loop
            self._hot = True
            loop.call_soon(self._cool)
            await self._execute(self._free.get_nowait(), [pending])
            return pending.future.result()
        pending.key = _key(inputs, self.policy)  # what a queued request may share a batch by
        if self._loop_task is None:
            # an empty context: not the first request's (its request id and span would label every batch's logs)
            self._loop_task = loop.create_task(self._loop(), context=contextvars.Context())
        pending.place = _QUEUED
        self._queue.put_nowait(pending)
        if self._deadlines is None:
            self._deadlines = Deadlines(loop)
        timer = self._deadlines.watch(pending.future, pending.enqueued + timeout, timeout)
        try:
            return await pending.future
        finally:
            if timer is not None:
                timer.cancel()
            if pending.place == _QUEUED:  # cancelled (its caller went away) or timed out before a batch took it
                self._leave(pending)

    def _idle(self) -> bool:
        """Whether a request may run at once, inline: greedy batching (no delay to wait out; a batch of one has
        none), one instance and inline-cheap compute, nothing queued or running, and no request ran this way
        earlier in the same pass of the event loop (requests that arrive together still batch: the loop gathers
        them)."""
        return (
            not self._hot
            and (self.policy.max_queue_delay_s == 0 or self.policy.max_batch_size == 1)
            and len(self._instances) == 1
            and self._compute_ewma < self.policy.inline_below_s
            and not self._running
            and not self.depth
            and not self._free.empty()
        )

    def _cool(self) -> None:
        self._hot = False

    async def close(self, timeout: float = 30.0) -> None:
        """Refuse new requests, let queued and running ones finish (up to ``timeout``), then stop."""
        self._closed = True
        deadline = time.monotonic() + timeout
        while (self.depth or self._running) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if self._loop_task is not None:
            self._loop_task.cancel()
        if self._deadlines is not None:
            self._deadlines.close()
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _leave(self, pending: _Pending) -> None:
        """``pending`` left while queued: its place is free now; the queue is swept once more entries than its
        bound have left (they wait there while every instance is busy), so they never pile up."""
        pending.place = _LEFT
        pending.inputs = {}  # nothing of it is held while it waits to be skipped
        self._left += 1
        if self._left > self.policy.max_queue_size:
            self._sweep()

    def _sweep(self) -> None:
        """Drop the requests that left from the queue and the carry (their order kept)."""
        kept = [p for p in self._carry if p.place != _LEFT]
        self._carry = deque(kept)
        queued = [self._queue.get_nowait() for _ in range(self._queue.qsize())]
        for pending in queued:
            if pending.place != _LEFT:
                self._queue.put_nowait(pending)
        self._left = 0

    def _taken(self, pending: _Pending) -> _Pending:
        """``pending``, taken from the queue or the carry."""
        if pending.place == _LEFT:
            self._left -= 1
        pending.place = _TAKEN
        return pending

    async def _loop(self) -> None:
        while True:
            first = self._taken(self._carry.popleft() if self._carry else await self._queue.get())
            if first.future.done():
                continue
            instance = await self._free.get()
            if first.future.done():  # it left while every instance was busy
                self._free.put_nowait(instance)
                continue
            batch = [p for p in await self._gather(first) if not p.future.done()]  # without those that left
            if not batch:
                self._free.put_nowait(instance)
                continue
            task = self._event_loop().create_task(self._execute(instance, batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _gather(self, first: _Pending) -> list[_Pending]:
        """Add compatible requests to ``first`` until full, or until its delay runs out; requests that left
        meanwhile (cancelled, timed out) make room."""
        batch, rows = [first], first.rows
        limit = self.policy.max_batch_size
        if limit == 0:
            return batch
        loop = self._event_loop()
        deadline = first.enqueued + self.policy.max_queue_delay_s
        skipped: list[_Pending] = []
        while rows < limit or (rows := _live(batch)) < limit:  # full, unless requests that left make room
            if self.policy.preferred_batch_sizes and not (self._carry or self._queue.qsize()):
                cut = _preferred_cut(batch, self.policy.preferred_batch_sizes)
                if cut:  # nothing more queued: the largest preferred size runs now, not after the delay
                    skipped, batch = [*batch[cut:], *skipped], batch[:cut]
                    break
            item = await self._next(deadline - loop.time())
            if item is None:
                break
            if item.future.done():
                continue
            if item.key != first.key:
                skipped.append(item)
                continue
            if rows + item.rows > limit:
                rows = _live(batch)
                if rows + item.rows > limit:  # it does not fit: it starts the next batch
                    skipped.append(item)
                    break
            batch.append(item)
            rows += item.rows
        skipped = [p for p in skipped if not p.future.done()]  # back in the queue: gone from it if they leave
        for pending in skipped:
            pending.place = _QUEUED
        self._carry.extendleft(sorted(skipped, key=lambda p: p.enqueued, reverse=True))
        return batch

    async def _next(self, wait: float) -> _Pending | None:
        if self._carry:
            return self._taken(self._carry.popleft())
        if not self._queue.empty():
            return self._taken(self._queue.get_nowait())
        if wait <= 0:
            return None
        try:
            return self._taken(await asyncio.wait_for(self._queue.get(), wait))
        except TimeoutError:
            return None

    async def _execute(self, instance: Predict, batch: list[_Pending]) -> None:
        loop = self._event_loop()
        started, clock = loop.time(), time.perf_counter()  # uvloop's loop.time() counts whole milliseconds
        run = _Run(instance, self._compute_ewma < self.policy.inline_below_s and len(self._instances) == 1)
        try:
            await self._run(run, batch)
        finally:
            self._free.put_nowait(instance)
        elapsed = time.perf_counter() - clock
        self._compute_ewma = 0.8 * self._compute_ewma + 0.2 * elapsed / max(run.calls, 1)
        rows = batch[0].rows if len(batch) == 1 else sum([p.rows for p in batch])
        if tracing.ENABLED:  # the batch's span, linked to its requests' (serving/tracing.py)
            tracing.record_batch([p.trace for p in batch], rows, elapsed, run.calls, run.failed > 0)
        if self._observe is not None:
            waits = (started - batch[0].enqueued,) if len(batch) == 1 else tuple([started - p.enqueued for p in batch])
            self._observe(BatchStats(rows, len(batch), waits, elapsed, run.failed > 0, run.calls, run.inline))

    async def _run(self, run: _Run, batch: list[_Pending]) -> None:
        """Run ``batch`` and deliver its outputs; on failure, isolate the request(s) that caused it."""
        run.calls += 1
        try:
            inputs = batch[0].inputs if len(batch) == 1 else _concat([p.inputs for p in batch])
            if run.inline:
                outputs = run.instance(inputs)  # cheaper than the hop to a worker thread and back
            else:
                outputs = await self._event_loop().run_in_executor(self._executor, run.instance, inputs)
            _deliver(batch, outputs, self.policy)
        except Exception as exc:
            await self._isolate(run, batch, exc)

    async def _isolate(self, run: _Run, batch: list[_Pending], exc: Exception) -> None:
        """A failure of one request is its own; a batch's is bisected over the requests still waiting."""
        live = [p for p in batch if not p.future.done()]
        if len(batch) == 1 or isinstance(exc, _NOT_ISOLATED):
            _fail(run, live, exc)
            return
        if run.calls == 1:
            log.info("a batch of %d requests failed (%s): re-running it in halves", len(batch), summarize(exc))
        middle = (len(live) + 1) // 2
        for part in (live[:middle], live[middle:]):
            if part:
                await self._run(run, part)


def _fail(run: _Run, requests: list[_Pending], exc: Exception) -> None:
    """Fail ``requests`` with ``exc`` if it is one of ours, else with a generic error (traceback logged)."""
    error = exc if isinstance(exc, ModelportError) else InferenceError("the model failed while predicting")
    run.failed += len(requests)
    if isinstance(error, InvalidArgumentError):
        log.info("the model rejected a request: %s", error.message)
    elif run.traced:
        log.error("inference failed for %d more request(s) of the batch: %s", len(requests), summarize(exc))
    else:
        run.traced = True
        log.error("inference failed for %d request(s)", len(requests), exc_info=exc)
    for pending in requests:
        if not pending.future.done():
            pending.future.set_exception(error)


def _live(batch: list[_Pending]) -> int:
    """The rows of the requests of ``batch`` that still wait for it (those that left make room)."""
    return sum([p.rows for p in batch if not p.future.done()])


def _preferred_cut(batch: list[_Pending], preferred: tuple[int, ...]) -> int:
    """How many of ``batch``'s requests make up its largest preferred size (Triton's rule), or 0; requests that
    left count no rows."""
    cut, rows = 0, 0
    for count, pending in enumerate(batch, start=1):
        if not pending.future.done():
            rows += pending.rows
        if rows in preferred:
            cut = count
    return cut


def _rows(inputs: Arrays, policy: BatchPolicy) -> int:
    if policy.max_batch_size == 0:
        return 1
    return int(next(iter(inputs.values())).shape[0])


def _key(inputs: Arrays, policy: BatchPolicy) -> tuple[Any, ...]:
    """Requests can share a batch when every input has the same dtype and non-batch shape."""
    skip = 0 if policy.max_batch_size == 0 else 1
    if len(inputs) == 1:  # the usual case, once per queued request: no sort, no generator
        ((name, value),) = inputs.items()
        return ((name, value.dtype.str, value.shape[skip:]),)
    return tuple((name, value.dtype.str, value.shape[skip:]) for name, value in sorted(inputs.items()))


def _concat(parts: list[Arrays]) -> Arrays:
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


def _deliver(batch: list[_Pending], outputs: Arrays, policy: BatchPolicy) -> None:
    if len(batch) == 1:
        if not batch[0].future.done():
            batch[0].future.set_result(outputs)
        return
    start = 0
    for pending in batch:
        stop = start + pending.rows
        if not pending.future.done():
            pending.future.set_result({name: value[start:stop] for name, value in outputs.items()})
        start = stop
