"""The batcher, driven by events: requests pile up while the model is busy, then run as one batch."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from modelport.errors import DeadlineExceededError, InferenceError, RejectedInputError, UnavailableError
from modelport.serving.batching import Batcher, BatchPolicy, BatchStats
from tests.serving import fakes
from tests.serving.processes import until


class Model:
    """Blocks each call until released; records batch sizes and each row's first value; then answers
    ``y = 2x`` or runs ``predict`` (a fake runtime's)."""

    def __init__(self, predict=None) -> None:
        self.release = threading.Event()
        self.batches: list[int] = []
        self.values: list[list[float]] = []
        self.calls = threading.Semaphore(0)
        self.predict = predict

    def __call__(self, inputs):
        self.calls.release()
        assert self.release.wait(10), "test never released the model"
        x = inputs["x"]
        self.batches.append(x.shape[0])
        self.values.append(x[:, 0].tolist())
        return self.predict(inputs) if self.predict else {"y": x * 2}


def _x(rows: int, value: float = 1.0, width: int = 3) -> dict[str, np.ndarray]:
    return {"x": np.full((rows, width), value, dtype=np.float32)}


async def _started(model: Model, count: int = 1) -> None:
    for _ in range(count):
        await asyncio.to_thread(model.calls.acquire)


async def _queued(batcher: Batcher, depth: int) -> None:
    await until(lambda: batcher.depth >= depth, what=f"{depth} queued requests")


async def test_requests_waiting_behind_a_busy_model_run_as_one_batch():
    model, stats = Model(), []
    batcher = Batcher([model], BatchPolicy(max_batch_size=16, max_queue_delay_s=0.0, max_queue_size=100), stats.append)
    first = asyncio.create_task(batcher.submit(_x(1, 0), timeout=10))
    await _started(model)
    rest = [asyncio.create_task(batcher.submit(_x(2, i), timeout=10)) for i in range(1, 6)]
    await _queued(batcher, 5)
    model.release.set()
    results = await asyncio.gather(first, *rest)
    assert model.batches == [1, 10]
    for i, result in enumerate(results):  # every request gets its own rows back
        assert np.array_equal(result["y"], _x(1 if i == 0 else 2, i)["x"] * 2)
    assert [s.rows for s in stats] == [1, 10] and [s.requests for s in stats] == [1, 5]
    await batcher.close()


async def test_batches_never_exceed_max_batch_size_and_keep_order():
    model = Model()
    batcher = Batcher([model], BatchPolicy(max_batch_size=4, max_queue_delay_s=0.0, max_queue_size=100))
    first = asyncio.create_task(batcher.submit(_x(1), timeout=10))
    await _started(model)
    rest = [asyncio.create_task(batcher.submit(_x(3, i), timeout=10)) for i in range(3)]
    await _queued(batcher, 3)
    model.release.set()
    await asyncio.gather(first, *rest)
    assert model.batches == [1, 3, 3, 3]
    await batcher.close()


async def test_different_shapes_are_not_mixed():
    model = Model()
    batcher = Batcher([model], BatchPolicy(max_batch_size=16, max_queue_delay_s=0.0, max_queue_size=100))
    first = asyncio.create_task(batcher.submit(_x(1), timeout=10))
    await _started(model)
    wide = asyncio.create_task(batcher.submit(_x(1, width=5), timeout=10))
    narrow = [asyncio.create_task(batcher.submit(_x(1), timeout=10)) for _ in range(2)]
    await _queued(batcher, 3)
    model.release.set()
    results = await asyncio.gather(first, wide, *narrow)
    assert results[1]["y"].shape == (1, 5)
    assert sorted(model.batches) == [1, 1, 2]
    await batcher.close()


async def test_queue_bound_rejects_with_unavailable():
    model = Model()
    batcher = Batcher([model], BatchPolicy(max_batch_size=4, max_queue_delay_s=0.0, max_queue_size=2))
    first = asyncio.create_task(batcher.submit(_x(1), timeout=10))
    await _started(model)
    queued = [asyncio.create_task(batcher.submit(_x(1), timeout=10)) for _ in range(2)]
    await _queued(batcher, 2)
    with pytest.raises(UnavailableError, match="queue is full") as info:
        await batcher.submit(_x(1), timeout=10)
    assert info.value.retry_after > 0
    model.release.set()
    await asyncio.gather(first, *queued)
    await batcher.close()


async def test_timeout_gives_deadline_exceeded_and_the_batch_goes_on():
    model = Model()
    batcher = Batcher([model], BatchPolicy(max_batch_size=4, max_queue_delay_s=0.0, max_queue_size=10))
    first = asyncio.create_task(batcher.submit(_x(1), timeout=10))
    await _started(model)
    with pytest.raises(DeadlineExceededError):
        await batcher.submit(_x(1), timeout=0.01)
    model.release.set()
    assert (await first)["y"].shape == (1, 3)
    await batcher.close()


async def test_queued_requests_expire_on_their_own_deadlines_in_or_out_of_order():
    """Deadlines in order share one timer (armed for the earliest); a shorter one out of order still comes first."""
    model = Model()
    batcher = Batcher([model], BatchPolicy(max_batch_size=8, max_queue_delay_s=0.0, max_queue_size=10))
    first = asyncio.create_task(batcher.submit(_x(1), timeout=10))
    await _started(model)
    slow = [asyncio.create_task(batcher.submit(_x(1, i), timeout=0.2)) for i in range(3)]
    await _queued(batcher, 3)
    with pytest.raises(DeadlineExceededError, match=r"within 0\.02s"):  # queued last, expires first
        await batcher.submit(_x(1), timeout=0.02)
    assert not any(task.done() for task in slow)
    for task in slow:
        with pytest.raises(DeadlineExceededError, match=r"within 0\.2s"):
            await task
    kept = asyncio.create_task(batcher.submit(_x(1, 7), timeout=10))  # after the sweep: queued and served
    await _queued(batcher, 1)
    model.release.set()
    assert (await first)["y"].shape == (1, 3)
    assert (await kept)["y"][0, 0] == 14
    await batcher.close()


async def test_a_failing_batch_fails_its_requests_only():
    calls = {"n": 0}

    def flaky(inputs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom")
        return {"y": inputs["x"]}

    batcher = Batcher([flaky], BatchPolicy(max_batch_size=4, max_queue_delay_s=0.0, max_queue_size=10))
    with pytest.raises(InferenceError, match="the model failed while predicting"):
        await batcher.submit(_x(1), timeout=10)
    assert (await batcher.submit(_x(2), timeout=10))["y"].shape == (2, 3)
    await batcher.close()


async def test_no_batch_dimension_means_one_request_per_call():
    model = Model()
    model.release.set()
    batcher = Batcher([model], BatchPolicy(max_batch_size=0, max_queue_delay_s=0.0, max_queue_size=10))
    results = await asyncio.gather(*(batcher.submit(_x(2), timeout=10) for _ in range(3)))
    assert model.batches == [2, 2, 2] and all(r["y"].shape == (2, 3) for r in results)
    await batcher.close()


async def test_two_instances_run_two_batches_at_once():
    first_model, second_model = Model(), Model()
    batcher = Batcher(
        [first_model, second_model], BatchPolicy(max_batch_size=1, max_queue_delay_s=0.0, max_queue_size=10)
    )
    tasks = [asyncio.create_task(batcher.submit(_x(1), timeout=10)) for _ in range(2)]
    await _started(first_model)
    await _started(second_model)  # both busy at the same time: real parallelism
    assert batcher.in_flight == 2
    first_model.release.set()
    second_model.release.set()
    await asyncio.gather(*tasks)
    await batcher.close()


async def test_closed_batcher_refuses_new_requests_after_finishing_queued_ones():
    model = Model()
    batcher = Batcher([model], BatchPolicy(max_batch_size=4, max_queue_delay_s=0.0, max_queue_size=10))
    running = asyncio.create_task(batcher.submit(_x(1), timeout=10))
    await _started(model)
    closing = asyncio.create_task(batcher.close(timeout=10))
    await asyncio.sleep(0)
    with pytest.raises(UnavailableError):
        await batcher.submit(_x(1), timeout=10)
    model.release.set()
    assert (await running)["y"].shape == (1, 3), "in-flight work finishes"
    await closing


def test_stats_type_is_exported():
    assert BatchStats(1, 1, (0.0,), 0.0, False).rows == 1


# --- a failing batch is split until each failure is one request's own ------------------------------------------


async def _one_batch(model: Model, values: list[float], stats: list[BatchStats] | None = None) -> list:
    """Submit one single-row request per value; they run as one batch of ``len(values)``; gather the outcomes."""
    policy = BatchPolicy(max_batch_size=len(values), max_queue_delay_s=10.0, max_queue_size=100)
    batcher = Batcher([model], policy, None if stats is None else stats.append)
    tasks = [asyncio.create_task(batcher.submit(_x(1, v), timeout=10)) for v in values]
    await _started(model)
    model.release.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    await batcher.close()
    return results


@pytest.mark.parametrize(
    ("runtime", "error", "says"),
    [
        (fakes.RejectingRuntime, RejectedInputError, f"the model rejected the input values: {fakes.REJECTED}"),
        (fakes.PoisonRuntime, InferenceError, "the model failed while predicting"),
    ],
)
async def test_a_request_that_fails_the_runtime_fails_alone_and_its_batch_mates_get_their_outputs(runtime, error, says):
    model, stats = Model(fakes.predictor(runtime)), []
    values = [1.0, 2.0, 3.0, 13.0, 5.0, 6.0, 7.0, 8.0]
    results = await _one_batch(model, values, stats)
    for value, result in zip(values, results, strict=True):
        if value == 13:
            assert isinstance(result, error) and result.message == says, result
            assert "secret" not in result.message
        else:
            assert np.array_equal(result["y"], _x(1, value)["x"] * 2), value
    # bisection: the batch, then halves of the half that holds the bad request, down to that request alone
    assert model.values == [values, values[:4], [1.0, 2.0], [3.0, 13.0], [3.0], [13.0], values[4:]]
    assert [(s.rows, s.requests, s.failed, s.runs) for s in stats] == [(8, 8, True, 7)]


async def test_a_model_that_fails_every_request_costs_2n_calls_and_log2_n_runs_per_request_not_n_squared(caplog):
    model, stats = Model(fakes.predictor(fakes.FailingRuntime)), []
    with caplog.at_level("INFO", logger="modelport.serving.batching"):
        results = await _one_batch(model, [float(v) for v in range(8)], stats)
    assert all(isinstance(r, InferenceError) and "secret" not in r.message for r in results)
    assert len(model.batches) == 2 * 8 - 1, "each split level runs every request once: 1 + 2 + 4 + 8 calls"
    assert sum(model.batches) == 8 * 4, "each request runs log2(8) + 1 times"
    assert stats[0].runs == 15 and stats[0].failed
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1, "the traceback is logged once per batch, not once per request"


async def test_unavailable_and_deadline_errors_are_not_re_run():
    def unavailable(inputs):
        raise UnavailableError("the remote server is down", retry_after=2.0)

    model = Model(unavailable)
    results = await _one_batch(model, [1.0, 2.0, 3.0])
    assert all(isinstance(r, UnavailableError) for r in results)
    assert model.batches == [3], "a failure that says nothing about the inputs is not split"


@pytest.mark.parametrize("how", ["timeout", "cancel"])
async def test_requests_that_time_out_or_are_cancelled_during_a_failed_batch_are_not_re_run(how):
    model = Model(fakes.predictor(fakes.RejectingRuntime))
    batcher = Batcher([model], BatchPolicy(max_batch_size=3, max_queue_delay_s=10.0, max_queue_size=10))
    bad = asyncio.create_task(batcher.submit(_x(1, 13), timeout=10))
    gone = asyncio.create_task(batcher.submit(_x(1, 2), timeout=0.2 if how == "timeout" else 10))
    good = asyncio.create_task(batcher.submit(_x(1, 3), timeout=10))
    await _started(model)  # the batch of three is running
    if how == "cancel":
        gone.cancel()
    with pytest.raises(DeadlineExceededError if how == "timeout" else asyncio.CancelledError):
        await gone
    model.release.set()
    with pytest.raises(RejectedInputError):
        await bad
    assert (await good)["y"].shape == (1, 3)
    assert model.values == [[13.0, 2.0, 3.0], [13.0], [3.0]], "the request that is gone never runs again"
    await batcher.close()


async def test_one_request_alone_in_a_failed_batch_is_re_run_before_it_is_blamed():
    """A batch of two whose other request timed out: the failure may be the gone one's, so run it alone."""
    calls = {"n": 0}

    def fails_once(inputs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("the gone request's fault")
        return {"y": inputs["x"] * 2}

    model = Model(fails_once)
    batcher = Batcher([model], BatchPolicy(max_batch_size=2, max_queue_delay_s=10.0, max_queue_size=10))
    gone = asyncio.create_task(batcher.submit(_x(1, 1), timeout=0.2))
    kept = asyncio.create_task(batcher.submit(_x(1, 2), timeout=10))
    await _started(model)
    with pytest.raises(DeadlineExceededError):
        await gone
    model.release.set()
    assert (await kept)["y"].tolist() == [[4.0, 4.0, 4.0]]
    assert model.values == [[1.0, 2.0], [2.0]]
    await batcher.close()


async def test_a_request_cancelled_while_it_waits_for_a_busy_model_never_runs():
    """The caller of the next batch's first request goes away while the model is busy: nothing of it runs."""
    model, stats = Model(), []
    batcher = Batcher([model], BatchPolicy(max_batch_size=4, max_queue_delay_s=0.0, max_queue_size=10), stats.append)
    first = asyncio.create_task(batcher.submit(_x(1, 1), timeout=10))
    await _started(model)
    gone = asyncio.create_task(batcher.submit(_x(1, 2), timeout=10))
    await _taken(batcher)  # the loop holds it for the next batch, waiting for the instance
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    model.release.set()
    assert (await first)["y"].shape == (1, 3)
    assert (await batcher.submit(_x(1, 3), timeout=10))["y"].tolist() == [[6.0, 6.0, 6.0]]
    assert model.values == [[1.0], [3.0]]
    assert [(s.rows, s.requests) for s in stats] == [(1, 1), (1, 1)]
    await batcher.close()


async def test_a_request_cancelled_while_its_batch_is_gathered_is_left_out_of_it_and_makes_room():
    """A queue delay holds the batch open; its first request's caller goes away meanwhile: the batch runs
    without it, once two more rows fill it (not one: the row that left takes no place)."""
    model, stats = Model(), []
    model.release.set()
    batcher = Batcher([model], BatchPolicy(max_batch_size=2, max_queue_delay_s=30.0, max_queue_size=10), stats.append)
    gone = asyncio.create_task(batcher.submit(_x(1, 1), timeout=60))
    await _taken(batcher)  # it waits in the batch being gathered, for 30 s or a second row
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    second = asyncio.create_task(batcher.submit(_x(1, 2), timeout=60))
    await _taken(batcher)  # in the batch, which still has room
    assert not second.done() and model.values == []
    third = await asyncio.wait_for(batcher.submit(_x(1, 3), timeout=60), 10)  # full now: no waiting out the 30 s
    assert (await second)["y"].tolist() == [[4.0, 4.0, 4.0]] and third["y"].tolist() == [[6.0, 6.0, 6.0]]
    assert model.values == [[2.0, 3.0]]
    assert [(s.rows, s.requests) for s in stats] == [(2, 2)]
    await batcher.close()


@pytest.mark.parametrize("how", ["cancel", "timeout"])
async def test_a_request_that_leaves_the_queue_frees_its_place_at_once(how):
    """The queue bound counts the requests still waiting: one cancelled or timed out makes room, and never runs."""
    model = Model()
    batcher = Batcher([model], BatchPolicy(max_batch_size=4, max_queue_delay_s=0.0, max_queue_size=1))
    first = asyncio.create_task(batcher.submit(_x(1, 1), timeout=10))
    await _started(model)
    held = asyncio.create_task(batcher.submit(_x(1, 2), timeout=10))
    await _taken(batcher)  # the loop holds it for the next batch
    gone = asyncio.create_task(batcher.submit(_x(1, 3), timeout=0.05 if how == "timeout" else 10))
    await _queued(batcher, 1)
    if how == "cancel":
        with pytest.raises(UnavailableError, match="queue is full"):
            await batcher.submit(_x(1, 4), timeout=10)
        gone.cancel()
    with pytest.raises(asyncio.CancelledError if how == "cancel" else DeadlineExceededError):
        await gone
    assert batcher.depth == 0
    late = asyncio.create_task(batcher.submit(_x(1, 5), timeout=10))
    await _queued(batcher, 1)
    model.release.set()
    await asyncio.gather(first, held, late)
    assert model.values == [[1.0], [2.0, 5.0]], "the request that left never runs"
    await batcher.close()


async def test_requests_that_leave_while_the_model_is_stuck_do_not_pile_up_in_the_queue():
    """Callers that give up while every instance is busy: their entries are swept out past the queue's bound."""
    model = Model()
    batcher = Batcher([model], BatchPolicy(max_batch_size=4, max_queue_delay_s=0.0, max_queue_size=3))
    first = asyncio.create_task(batcher.submit(_x(1, 1), timeout=10))
    await _started(model)
    kept = asyncio.create_task(batcher.submit(_x(1, 2), timeout=10))
    await _taken(batcher)
    waiting = asyncio.create_task(batcher.submit(_x(1, 3), timeout=10))
    for value in range(10, 30):
        gone = asyncio.create_task(batcher.submit(_x(1, value), timeout=10))
        await _queued(batcher, 2)
        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone
        assert batcher.depth == 1
        assert batcher._queue.qsize() + len(batcher._carry) <= 1 + 3 + 1, "swept once more than the bound left"
    model.release.set()
    await asyncio.gather(first, kept, waiting)
    assert model.values == [[1.0], [2.0, 3.0]]
    await batcher.close()


async def _taken(batcher: Batcher) -> None:
    """Until the batcher's loop has taken everything queued (it is gathering or running)."""
    await asyncio.sleep(0)
    await until(lambda: not batcher.depth, what="an empty queue")


async def test_a_queue_delay_holds_the_batch_open_until_it_fills():
    model = Model()
    model.release.set()
    batcher = Batcher([model], BatchPolicy(max_batch_size=4, max_queue_delay_s=30.0, max_queue_size=100))
    first = asyncio.create_task(batcher.submit(_x(1, 0), timeout=60))
    await _taken(batcher)  # the first request waits in the batch being gathered
    rest = [asyncio.create_task(batcher.submit(_x(1, i), timeout=60)) for i in range(1, 4)]
    await asyncio.wait_for(asyncio.gather(first, *rest), 10)  # full at 4 rows: no waiting out the 30 s
    assert model.batches == [4]
    await batcher.close()


async def test_a_lone_request_runs_once_its_queue_delay_runs_out():
    model, stats = Model(), []
    model.release.set()
    batcher = Batcher([model], BatchPolicy(max_batch_size=4, max_queue_delay_s=0.05, max_queue_size=100), stats.append)
    await batcher.submit(_x(1), timeout=10)
    assert model.batches == [1]
    assert stats[0].queue_seconds[0] >= 0.05 - 1e-3, "it may not run before its delay is over"
    await batcher.close()


@pytest.mark.parametrize(
    ("queued", "preferred", "batches"), [(2, (2,), [2, 2]), (4, (2,), [2, 2, 2]), (4, (2, 4), [2, 4])]
)
async def test_a_preferred_batch_size_runs_at_once_when_nothing_more_is_queued(queued, preferred, batches):
    """max_queue_delay 30 s: once the queue is drained, the largest preferred size that the gathered requests
    make runs at once (Triton's rule); the rest go back to the front of the queue."""
    model = Model()
    policy = BatchPolicy(max_batch_size=8, max_queue_delay_s=30.0, max_queue_size=100, preferred_batch_sizes=preferred)
    batcher = Batcher([model], policy)
    busy = asyncio.create_task(batcher.submit(_x(2), timeout=60))  # a preferred size: it runs at once
    await asyncio.wait_for(_started(model), 10)
    waiting = [asyncio.create_task(batcher.submit(_x(1, i), timeout=60)) for i in range(queued)]
    await _queued(batcher, queued - 1)  # the loop holds the first of them, waiting for the model
    model.release.set()
    await asyncio.wait_for(asyncio.gather(busy, *waiting), 10)
    assert model.batches == batches
    await batcher.close()


class Recorder:
    """An instant model that records the thread each batch ran on."""

    def __init__(self) -> None:
        self.threads: list[int] = []

    def __call__(self, inputs):
        self.threads.append(threading.get_ident())
        return {"y": inputs["x"] * 2}


@pytest.mark.parametrize(
    ("inline_below_s", "instances", "inline"),
    [(1.0, 1, [False, True, True]), (0.0, 1, [False, False, False]), (1.0, 2, [False, False, False])],
)
async def test_fast_batches_run_inline_on_the_event_loop_and_say_so(inline_below_s, instances, inline):
    """The first batch runs on a worker thread; once the compute average is under ``inline_below_s`` the
    next ones run on the event loop's own thread (never with 0, nor with several instances)."""
    models = [Recorder() for _ in range(instances)]
    stats: list[BatchStats] = []
    policy = BatchPolicy(max_batch_size=4, max_queue_delay_s=0.0, max_queue_size=10, inline_below_s=inline_below_s)
    batcher = Batcher(models, policy, stats.append)
    for _ in range(3):
        await batcher.submit(_x(1), timeout=10)
    loop_thread = threading.get_ident()
    threads = [t for model in models for t in model.threads]
    assert [t == loop_thread for t in threads] == inline
    assert [s.inline for s in stats] == inline
    await batcher.close()


def test_inline_batches_are_counted_in_metrics():
    from modelport.serving.metrics import Metrics

    metrics = Metrics()
    for inline in (False, True, True):
        metrics.observe_batch("m", 1, BatchStats(1, 1, (0.0,), 0.0001, False, 1, inline))
    assert metrics.registry.get_sample_value("modelport_inline_batches_total", {"model": "m", "version": "1"}) == 2


async def test_a_request_finding_the_batcher_idle_runs_at_once_and_a_burst_still_batches():
    """Once batches are inline-cheap, a lone request runs in its own coroutine (the batching loop never
    starts); requests that arrive in one pass of the event loop queue behind it and run as one batch."""
    model, stats = Recorder(), []
    policy = BatchPolicy(max_batch_size=16, max_queue_delay_s=0.0, max_queue_size=100, inline_below_s=1.0)
    batcher = Batcher([model], policy, stats.append)
    await batcher.submit(_x(1), timeout=10)  # timed on the worker thread: the loop runs it
    assert batcher._loop_task is not None
    batcher._loop_task.cancel()
    batcher._loop_task = None
    await asyncio.sleep(0)  # the pass that ran the first request is over
    lone = await batcher.submit(_x(1, 7.0), timeout=10)
    assert np.array_equal(lone["y"], _x(1, 14.0)["x"])
    assert batcher._loop_task is None, "the lone request did not go through the queue"
    assert stats[-1].inline and stats[-1].requests == 1
    await asyncio.sleep(0)
    burst = await asyncio.gather(*(batcher.submit(_x(1, float(i)), timeout=10) for i in range(8)))
    assert [r["y"][0, 0] for r in burst] == [2.0 * i for i in range(8)]
    assert [s.requests for s in stats[-2:]] == [1, 7], "the first runs at once, the other seven batch"
    await batcher.close()


@pytest.mark.parametrize(
    ("delay_s", "instances"),
    [(0.001, 1), (0.0, 2)],
)
async def test_a_delay_or_several_instances_keep_every_request_on_the_batching_loop(delay_s, instances):
    models = [Recorder() for _ in range(instances)]
    policy = BatchPolicy(max_batch_size=16, max_queue_delay_s=delay_s, max_queue_size=100, inline_below_s=1.0)
    batcher = Batcher(models, policy)
    for _ in range(3):
        await batcher.submit(_x(1), timeout=10)
        await asyncio.sleep(0)
    assert batcher._loop_task is not None
    await batcher.close()


@pytest.mark.parametrize(("cpus", "expected"), [({0}, 0.002), ({0, 1}, 0.0002)])
def test_the_inline_threshold_follows_the_cpus_unless_configured(monkeypatch, tmp_path, cpus, expected):
    from modelport.serving.batching import inline_threshold_s

    monkeypatch.setattr("os.sched_getaffinity", lambda _: cpus)
    monkeypatch.setattr("modelport.cpus.CGROUP_ROOT", tmp_path)  # no CPU limit, whatever the machine's cgroup
    assert inline_threshold_s(None) == expected
    assert inline_threshold_s(0.5) == 0.0005
    assert inline_threshold_s(0) == 0
    (tmp_path / "cpu.max").write_text("100000 100000")  # a container limited to one CPU: as one core
    assert inline_threshold_s(None) == 0.002
