"""Live coverage: `GET /api/v1/stream/coverage` (server-sent events).

One LISTEN connection per gateway process wakes on every committed posting
(NOTIFY is sent in the posting's transaction, so only commits are heard),
recomputes the coverage snapshot once per burst (`debounce_ms`), and fans it
out to every listener.

Slow listeners never slow posting: each has a bounded queue
(`listener_queue_events_max`). Every message is the full current state, so
when a listener's queue is full the stale messages are dropped and only the
newest snapshot is kept: a slow client misses intermediate steps, never the
current truth. A client that reconnects gets the current state first, so it
catches up by reconnecting (EventSource does this by itself).
"""

from __future__ import annotations

import asyncio
import contextlib
import json

import asyncpg
import structlog
from aiohttp import web
from aiohttp_sse import sse_response

from gateway.service import coverage
from gateway.service.payments import Clock, utc_now
from gateway.store.ledger import EVENTS_CHANNEL

log = structlog.get_logger("kanal.stream")


class EventHub:
    def __init__(
        self,
        pool: asyncpg.Pool,
        database_url: str,
        *,
        workforce: int,
        baseline_participants: int = 0,
        clock: Clock = utc_now,
        listener_queue_events_max: int = 8,
        debounce_ms: int = 50,
        listeners_max: int = 1000,
    ) -> None:
        self.pool = pool
        self.database_url = database_url
        self.workforce = workforce
        self.baseline_participants = baseline_participants
        self.clock = clock
        self.listener_queue_events_max = listener_queue_events_max
        self.debounce_ms = debounce_ms
        self.listeners_max = listeners_max
        self._listeners: set[asyncio.Queue] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.dropped_messages = 0
        self.sequence = 0

    async def snapshot(self) -> dict:
        snap = await coverage.snapshot(
            self.pool, self.clock(), workforce=self.workforce, baseline_participants=self.baseline_participants
        )
        snap["sequence"] = self.sequence
        return snap

    def subscribe(self) -> asyncio.Queue:
        if len(self._listeners) >= self.listeners_max:
            raise web.HTTPServiceUnavailable(text=f"at most {self.listeners_max} live listeners")
        queue: asyncio.Queue = asyncio.Queue(maxsize=self.listener_queue_events_max)
        self._listeners.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue) -> None:
        self._listeners.discard(queue)

    @property
    def listener_count(self) -> int:
        return len(self._listeners)

    def publish(self, message: dict) -> None:
        for queue in self._listeners:
            if queue.full():
                # Full state supersedes: drop what is stale, keep the newest.
                while not queue.empty():
                    queue.get_nowait()
                    self.dropped_messages += 1
            queue.put_nowait(message)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="kanal-event-hub")

    async def stop(self) -> None:
        # Tell every open stream to end now, so that a server shutting down
        # does not wait for clients that may never read again.
        for queue in self._listeners:
            while not queue.empty():
                queue.get_nowait()
            queue.put_nowait(None)
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            conn = None
            try:
                conn = await asyncpg.connect(self.database_url)
                await conn.add_listener(EVENTS_CHANNEL, lambda *_: self._wake.set())
                while True:
                    await self._wake.wait()
                    await asyncio.sleep(self.debounce_ms / 1000)
                    self._wake.clear()
                    if self._listeners:
                        self.sequence += 1
                        self.publish(await self.snapshot())
            except asyncio.CancelledError:
                raise
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
                log.warning("event_hub_reconnect", error=repr(error))
                await asyncio.sleep(1)
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()


def hub_routes(hub_key) -> web.RouteTableDef:
    routes = web.RouteTableDef()

    @routes.get("/api/v1/stream/coverage")
    async def stream_coverage(request: web.Request) -> web.StreamResponse:
        hub: EventHub = request.app[hub_key]
        queue = hub.subscribe()
        try:
            async with sse_response(request, ping_interval=15) as sse:
                first = await hub.snapshot()
                await sse.send(json.dumps(first), event="coverage", id=str(first["sequence"]))
                while sse.is_connected():
                    message = await queue.get()
                    if message is None:  # the gateway is stopping
                        break
                    await sse.send(json.dumps(message), event="coverage", id=str(message["sequence"]))
                return sse
        finally:
            hub.unsubscribe(queue)

    @routes.get("/api/v1/coverage")
    async def coverage_now(request: web.Request) -> web.Response:
        hub: EventHub = request.app[hub_key]
        return web.json_response(await hub.snapshot())

    return routes
