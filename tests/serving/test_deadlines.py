"""Request deadlines: in order they share one timer; out of order one gets its own; answered ones are left alone."""

from __future__ import annotations

import asyncio

import pytest

from modelport.errors import DeadlineExceededError
from modelport.serving.deadlines import Deadlines


async def test_in_order_deadlines_share_one_timer_and_a_shorter_one_gets_its_own() -> None:
    loop = asyncio.get_running_loop()
    deadlines = Deadlines(loop)
    now = loop.time()
    waiting = [loop.create_future() for _ in range(3)]
    assert [deadlines.watch(f, now + 0.05 + i * 0.01, 0.05) for i, f in enumerate(waiting)] == [None] * 3
    waiting[1].set_result("answered")
    shorter = loop.create_future()
    own = deadlines.watch(shorter, now + 0.01, 0.01)
    assert own is not None  # out of order: its own timer
    with pytest.raises(DeadlineExceededError, match=r"within 0\.01s"):
        await shorter
    assert not waiting[0].done()  # the shared timer waits for the earliest in-order deadline
    for future in (waiting[0], waiting[2]):
        with pytest.raises(DeadlineExceededError, match=r"within 0\.05s"):
            await future
    assert waiting[1].result() == "answered"
    later = loop.create_future()
    assert deadlines.watch(later, loop.time() + 10, 10) is None  # re-armed after the line emptied
    deadlines.close()
    later.cancel()
