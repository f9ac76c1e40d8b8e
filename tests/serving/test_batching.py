"""The batcher, driven by events: requests pile up while the model is busy, then run as one batch."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from modelport.errors import DeadlineExceededError, InferenceError, UnavailableError
from modelport.serving.batching import Batcher, BatchPolicy, BatchStats


class Model:
    """Blocks each call until released; records batch sizes."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.batches: list[int] = []
        self.calls = threading.Semaphore(0)

    def __call__(self, inputs):
        self.calls.release()
        assert self.release.wait(10), "test never released the model"
        x = inputs["x"]
        self.batches.append(x.shape[0])
        return {"y": x * 2}


def _x(rows: int, value: float = 1.0, width: int = 3) -> dict[str, np.ndarray]:
    return {"x": np.full((rows, width), value, dtype=np.float32)}


async def _started(model: Model, count: int = 1) -> None:
    for _ in range(count):
        await asyncio.to_thread(model.calls.acquire)


async def _queued(batcher: Batcher, depth: int) -> None:
    while batcher.depth < depth:
        await asyncio.sleep(0)


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
