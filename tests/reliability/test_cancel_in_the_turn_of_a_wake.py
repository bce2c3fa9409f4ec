"""A loop that waits with a time limit must stop when cancelled, even when
what it waits for comes in the same turn of the event loop.

On Python 3.11, `asyncio.wait_for` returns the result and drops a
cancellation that arrives in the turn its awaitable completes. A delivery
worker waiting for its wake (a new event) with `wait_for` would then run on
after the gateway cancelled it, and `stop()` would wait for it forever. The
ISO 8583 client had the same flaw (tests/iso8583/test_iso8583_e2e.py); it
hung a CI run.
"""

from __future__ import annotations

import asyncio

import pytest

from gateway.callbacks.settings import CallbackSettings
from gateway.callbacks.worker import Deliverer

HANG_GUARD_S = 10  # not a timing assertion: a regression fails instead of hanging


async def test_a_delivery_worker_cancelled_in_the_turn_it_is_woken_stops(pool):
    deliverer = Deliverer(pool, CallbackSettings(poll_interval_ms=60_000))
    task = asyncio.create_task(deliverer.run("test"))
    try:
        for _ in range(1000):  # nothing is due: it goes to wait for its wake
            await asyncio.sleep(0.01)
            if deliverer.wake._waiters:  # asyncio.Event's own list of waiters
                break
        assert deliverer.wake._waiters, "the worker never waited for its wake"
        deliverer.wake.set()  # a new event, and the gateway stopping, in one turn
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, HANG_GUARD_S)
    finally:
        task.cancel()
        await deliverer.close()
