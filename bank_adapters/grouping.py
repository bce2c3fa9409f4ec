"""Micro-batching: concurrent callers hand over items; one task at a time
gathers what is queued into a group and runs it as one database statement;
each caller awaits its own item's future.

Used by the posting batcher (gateway/store/batching.py: group commit) and the
exchange log (bank_adapters/exchanges.py). Limits, with units: `group_size_max`
items per group, `group_wait_ms` waited for stragglers only while another
group is in flight (an idle system adds no delay), `groups_in_flight_max`
groups running at once.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any


class MicroBatcher:
    """Subclasses implement `_execute(group)`, which must settle every item's
    future (the future is the item's last element)."""

    task_name = "kanal-micro-batcher"

    def __init__(self, *, group_size_max: int, group_wait_ms: int, groups_in_flight_max: int) -> None:
        assert group_size_max >= 1 and groups_in_flight_max >= 1 and group_wait_ms >= 0
        self.group_size_max = group_size_max
        self.group_wait_ms = group_wait_ms
        self.groups_in_flight_max = groups_in_flight_max
        self._queue: collections.deque[tuple] = collections.deque()
        self._runner: asyncio.Task | None = None
        self._slots: asyncio.Semaphore | None = None
        self._in_flight: set[asyncio.Task] = set()

    async def _submit(self, *item: Any) -> Any:
        """Queue `item` and wait for its result."""
        future = asyncio.get_running_loop().create_future()
        self._queue.append((*item, future))
        # The runner exits when the queue is empty, so an idle batcher holds
        # no task; the next item starts a new one.
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run(), name=self.task_name)
        return await future

    async def drain(self) -> None:
        """Wait for every item handed over so far to be settled."""
        while (self._runner is not None and not self._runner.done()) or self._in_flight:
            await asyncio.gather(*([self._runner] if self._runner else []), *self._in_flight, return_exceptions=True)

    async def _run(self) -> None:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.groups_in_flight_max)
        while self._queue:
            await self._slots.acquire()
            if self.group_wait_ms and self._in_flight and len(self._queue) < self.group_size_max:
                await asyncio.sleep(self.group_wait_ms / 1000)
            group = [self._queue.popleft() for _ in range(min(len(self._queue), self.group_size_max))]
            if not group:
                self._slots.release()
                break
            task = asyncio.create_task(self._execute(group))
            self._in_flight.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task) -> None:
        self._in_flight.discard(task)
        assert self._slots is not None
        self._slots.release()

    async def _execute(self, group: list[tuple]) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


def settle(future: asyncio.Future, *, result: Any = None, error: BaseException | None = None) -> None:
    """Answer a waiter unless it is gone (a cancelled caller)."""
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def settle_all(futures, error: BaseException) -> None:
    """Every waiter hears `error`; a cancellation (not an Exception) reaches
    them as CancelledError, so that nobody waits forever."""
    answer = error if isinstance(error, Exception) else asyncio.CancelledError()
    for future in futures:
        settle(future, error=answer)
