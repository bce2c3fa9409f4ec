"""Live ops figures for the dashboard: `GET /ops/stream` (server-sent events).

One sampler task per gateway process, awake only while someone listens,
reads every `sample_interval_ms`: payments accepted (and so payments per
second), callback deliveries by status (from their counters); and every
`health_interval_ms` the ledger checks' verdicts (without their rows). The
checks read whole tables, which takes longer as the ledger grows: they run
on a task of their own, one run at a time, and every message carries the
latest verdicts with when they were checked, how long it took and when the
next run is due. The checks take at most `health_busy_percent_max` of the
time: after a run of 20 s the next waits 180 s, not the 30 s interval, so
that on a ledger the size of the province they read whole tables (and hold a
snapshot that vacuum must wait for) a tenth of the time at most. Until the
first run ends the health is `checking`; a run that fails (a statement
timeout on a large ledger, the database gone) is reported with its error next
to the last verdicts, and tried again after the same wait. Each
message is the full current state, as on the coverage stream, with the last
`history_samples_max` payments-per-second samples so that a page opened now
draws its chart at once. Listener queues are bounded like the coverage
stream's: a slow page misses steps, never the current state.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import time

import asyncpg
import structlog

from gateway.callbacks import store as callback_store
from gateway.domain.periods import WIB
from gateway.ops import checks

log = structlog.get_logger("kanal.ops.live")


class OpsHub:
    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        sample_interval_ms: int = 1000,
        health_interval_ms: int = 30_000,
        health_busy_percent_max: int = 10,
        first_health_wait_ms: int = 2_000,
        fresh_health_wait_ms: int = 5_000,
        history_samples_max: int = 60,
        listener_queue_events_max: int = 8,
        listeners_max: int = 100,
    ) -> None:
        self.pool = pool
        self.sample_interval_ms = sample_interval_ms
        self.health_interval_ms = health_interval_ms
        if not 0 < health_busy_percent_max <= 100:
            raise ValueError(f"health_busy_percent_max must be 1 to 100, not {health_busy_percent_max}")
        self.health_busy_percent_max = health_busy_percent_max
        self.first_health_wait_ms = first_health_wait_ms
        self.fresh_health_wait_ms = fresh_health_wait_ms
        self.listener_queue_events_max = listener_queue_events_max
        self.listeners_max = listeners_max
        self.history: collections.deque[dict] = collections.deque(maxlen=history_samples_max)
        self._listeners: set[asyncio.Queue] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._last: tuple[float, int] | None = None
        self._health: dict | None = None
        self._health_at = 0.0  # when the last run ended (monotonic seconds)
        self._health_wait_s = 0.0  # from then until the next run may start
        self._health_task: asyncio.Task | None = None
        self.sequence = 0

    def subscribe(self) -> asyncio.Queue | None:
        if len(self._listeners) >= self.listeners_max:
            return None
        queue: asyncio.Queue = asyncio.Queue(maxsize=self.listener_queue_events_max)
        self._listeners.add(queue)
        self._wake.set()
        return queue

    def unsubscribe(self, queue: asyncio.Queue) -> None:
        self._listeners.discard(queue)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="kanal-ops-hub")

    async def stop(self) -> None:
        for task in (self._task, self._health_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    def _health_due(self, now: float) -> bool:
        """True when the verdicts held are not the latest there should be:
        a run is going, or the wait after the last one is over (or none ran)."""
        task = self._health_task
        return task is None or not task.done() or now - self._health_at >= self._health_wait_s

    def _check_health_if_due(self, now: float) -> None:
        """Start a run of the ledger checks unless one is running, or the last
        one ended less than `_health_wait_s` ago (a run that takes longer
        than the interval is not followed by another at once: the checks hold
        a snapshot while they run, which keeps vacuum from cleaning up)."""
        task = self._health_task
        if task is not None and (not task.done() or now - self._health_at < self._health_wait_s):
            return
        self._health_task = asyncio.create_task(self._check_health(), name="kanal-ops-health")

    async def _check_health(self) -> None:
        started = time.monotonic()
        try:
            report = await checks.run_checks(self.pool, checks.Limits(rows_max=0))
        except Exception as error:  # noqa: BLE001 - reported on the dashboard, tried again later
            # The full error goes to the log; the unauthenticated stream gets its class only.
            log.warning("ops_health_failed", error=repr(error))
            last = self._health or {"checked_at": None, "checks": []}
            self._health = {
                **last,
                "status": "error",  # the verdicts shown are the last good run's, not a pass now
                "error": type(error).__name__,
                "error_at": dt.datetime.now(WIB).isoformat(timespec="seconds"),
            }
        else:
            self._health = {**report.summary(), "check_seconds": round(time.monotonic() - started, 3)}
        finally:
            # The wait counts from the end of a run, and grows with its length.
            self._health_at = time.monotonic()
            self._health_wait_s = self.health_wait_s(self._health_at - started)
            if self._health is not None:  # None: cancelled before a first verdict
                next_check_at = dt.datetime.now(WIB) + dt.timedelta(seconds=self._health_wait_s)
                self._health["next_check_at"] = next_check_at.isoformat()

    def health_wait_s(self, run_s: float) -> float:
        """Seconds from the end of a run of `run_s` to the next: the interval,
        or longer, so that runs take at most `health_busy_percent_max` of the time."""
        return max(self.health_interval_ms / 1000, run_s * (100 / self.health_busy_percent_max - 1))

    def health(self) -> dict:
        """The latest verdicts; `checking` before the first run ends."""
        return self._health or {"status": "checking", "checked_at": None, "checks": []}

    async def _run(self) -> None:
        while True:
            if not self._listeners:
                self._last = None  # a rate across an idle gap would mislead
                self._wake.clear()
                await self._wake.wait()
            try:
                message = await self.sample()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - the stream must outlive any one sample
                log.warning("ops_sample_failed", error=repr(error))
            else:
                for queue in self._listeners:
                    if queue.full():
                        while not queue.empty():
                            queue.get_nowait()
                    queue.put_nowait(message)
            await asyncio.sleep(self.sample_interval_ms / 1000)

    async def sample(self, *, advance: bool = True) -> dict:
        """The current figures. `advance` (the sampler's own calls) moves the
        payments-per-second history on; a one-off read leaves it alone."""
        async with self.pool.acquire() as conn:
            # Payment ids are an identity: the highest is the number accepted,
            # give or take the ids of batches that rolled back.
            accepted = await conn.fetchval("select coalesce(max(id), 0) from payments")
            deliveries = None
            if await conn.fetchval("select to_regclass('callback_counts') is not null"):
                # From the counters (migration 0022): a few rows, however many deliveries there are.
                deliveries = (await callback_store.status_counts(conn))["deliveries"]
        now = time.monotonic()
        generated_at = dt.datetime.now(WIB)
        per_second = self.history[-1]["per_second"] if self.history else 0.0
        if advance:
            per_second = 0.0
            if self._last is not None and now > self._last[0]:
                per_second = max(0, accepted - self._last[1]) / (now - self._last[0])
            self._last = (now, accepted)
            self.history.append({"at": generated_at.isoformat(timespec="seconds"), "per_second": round(per_second, 1)})
            self.sequence += 1
        due = self._health_due(now)
        self._check_health_if_due(now)  # starts no second run while one is going
        health = None
        if not advance and due and self._health_task is not None:
            # A one-off read (GET /ops/summary) with verdicts that are due:
            # no sampler may be running (no dashboard open), so the read waits
            # for the run it started (or the one going), for at most
            # `fresh_health_wait_ms` (`first_health_wait_ms` before any
            # verdict), then answers the last verdicts marked `stale`.
            first = self._health is None
            wait_ms = self.first_health_wait_ms if first else self.fresh_health_wait_ms
            stale = False
            try:
                async with asyncio.timeout(wait_ms / 1000):  # not wait_for (see callbacks/worker.py)
                    await asyncio.shield(self._health_task)
            except TimeoutError:
                stale = True
            except Exception:  # noqa: BLE001, S110 - the run reports its own failure in the verdicts
                pass
            health = {**self.health(), "stale": stale}
        elif not advance:
            health = {**self.health(), "stale": False}
        return {
            "sequence": self.sequence,
            "generated_at": generated_at.isoformat(),
            "payments": {"accepted": accepted, "per_second": round(per_second, 1), "history": list(self.history)},
            "health": health if health is not None else self.health(),
            "deliveries": deliveries,
        }
