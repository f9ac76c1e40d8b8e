"""The processing pool: calls queued behind a busy thread share one work item, each still its own call (its
own items, its own result or error); an idle pool adds no wait; cheap stages run on the event loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from modelport.errors import InvalidArgumentError, UnavailableError
from modelport.serving.errors import http_status
from modelport.serving.processing_pool import ProcessingPool
from tests.serving.fakes import Gate
from tests.serving.processes import until


@pytest.fixture
async def pool() -> AsyncIterator[ProcessingPool]:
    processing = ProcessingPool(1, inline_below_s=0.0)  # never inline: every call goes to the one thread
    yield processing
    processing.close()


async def _busy(pool: ProcessingPool, gate: Gate) -> asyncio.Task[Any]:
    """A call holding the pool's one thread."""
    held = asyncio.create_task(pool.run("gate", gate, ["held"]))
    assert await asyncio.to_thread(gate.holding.wait, 30)
    return held


def doubled(items: Sequence[object]) -> list[object]:
    return [2 * item for item in items]  # type: ignore[operator]


def picky(items: Sequence[object]) -> list[object]:
    """Refuses negative items (their own 4xx) and explodes on 13 (a processor fault)."""
    if 13 in items:
        raise RuntimeError("thirteen")
    return [InvalidArgumentError(f"item {i} is negative") if i < 0 else i for i in items]  # type: ignore[operator]


async def test_calls_queued_behind_a_busy_thread_go_in_one_work_item(pool):
    gate = Gate()
    held = await _busy(pool, gate)
    calls = [asyncio.create_task(pool.run("double", doubled, [i, i + 100])) for i in range(8)]
    await until(lambda: pool.queued == 8, what="8 calls queued")
    gate.opened.set()
    outcomes = await asyncio.gather(*calls)
    assert [o.results for o in outcomes] == [[2 * i, 2 * i + 200] for i in range(8)]  # each call its own items
    assert all(o.error is None and o.seconds >= 0 for o in outcomes)
    assert (await held).results == ["held"]
    assert pool.groups == 2  # the gate's work item, then the 8 queued calls in one


async def test_a_group_holds_at_most_max_group_calls():
    pool, gate = ProcessingPool(1, inline_below_s=0.0, max_group=3), Gate()
    try:
        held = await _busy(pool, gate)
        calls = [asyncio.create_task(pool.run("double", doubled, [i])) for i in range(7)]
        await until(lambda: pool.queued == 7, what="7 calls queued")
        gate.opened.set()
        outcomes = await asyncio.gather(*calls)
        await held
    finally:
        pool.close()
    assert [o.results for o in outcomes] == [[2 * i] for i in range(7)]
    assert pool.groups == 1 + 3  # the gate, then 3 + 3 + 1 calls


async def test_an_idle_pool_runs_each_call_at_once(pool):
    for i in range(3):
        assert (await pool.run("double", doubled, [i])).results == [2 * i]
    assert pool.groups == 3 and pool.queued == 0


async def test_a_bad_item_or_a_raising_call_fails_only_its_own_call_in_a_group(pool):
    gate = Gate()
    held = await _busy(pool, gate)
    batches = [[1, 2], [3, -4], [13, 5], [6]]
    calls = [asyncio.create_task(pool.run("picky", picky, batch)) for batch in batches]
    await until(lambda: pool.queued == len(batches), what="the calls queued")
    gate.opened.set()
    good, refused, raised, alone = await asyncio.gather(*calls)
    await held
    assert good.results == [1, 2] and alone.results == [6]
    assert refused.results is not None and isinstance(refused.results[1], InvalidArgumentError)
    assert raised.results is None and isinstance(raised.error, RuntimeError)
    assert pool.groups == 2


async def test_a_call_nobody_waits_for_any_more_is_not_run(pool):
    gate, ran = Gate(), threading.Event()

    def marks(items: Sequence[object]) -> list[object]:
        ran.set()
        return list(items)

    held = await _busy(pool, gate)
    abandoned = asyncio.create_task(pool.run("marks", marks, [1]))
    await until(lambda: pool.queued == 1, what="the call queued")
    abandoned.cancel()
    gate.opened.set()
    await held
    assert (await pool.run("double", doubled, [1])).results == [2]  # the pool serves on
    assert not ran.is_set()


async def test_a_cheap_stage_runs_on_the_event_loop_after_its_first_call():
    pool = ProcessingPool(1, inline_below_s=10.0)  # anything is cheap
    threads: list[int] = []

    def where(items: Sequence[object]) -> list[object]:
        threads.append(threading.get_ident())
        return list(items)

    try:
        for _ in range(3):
            await pool.run("where", where, [0])
    finally:
        pool.close()
    loop_thread = threading.get_ident()
    assert threads[0] != loop_thread  # not timed yet: in the pool
    assert threads[1:] == [loop_thread, loop_thread]
    assert pool.groups == 1


async def test_a_call_after_close_fails_at_once_as_unavailable_instead_of_waiting():
    pool = ProcessingPool(1, inline_below_s=0.0)
    pool.close()
    outcome = await asyncio.wait_for(pool.run("double", doubled, [1]), 10)
    assert outcome.results is None and isinstance(outcome.error, UnavailableError)  # a 503, not a processor fault
    assert http_status(outcome.error) == 503
