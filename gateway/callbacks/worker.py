"""Delivery workers and the outbox relay loop.

A worker takes one due delivery with `FOR UPDATE SKIP LOCKED` and keeps the
row locked while it sends, records the attempt and decides what comes next,
then commits. Any number of workers in any number of processes share the
work this way: a locked delivery is skipped, never sent twice at once. A
worker killed mid-send releases its lock when PostgreSQL sees its connection
close; the delivery is then taken by another worker (at least once).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import socket
import time
from dataclasses import dataclass

import aiohttp
import asyncpg
import structlog

from gateway.callbacks import faults as fault_rules
from gateway.callbacks import schedule, signing, store
from gateway.callbacks.settings import CallbackSettings
from gateway.store import folding

log = structlog.get_logger("kanal.callbacks")

USER_AGENT = "Kanal-Webhooks/1"


def event_body(row: asyncpg.Record) -> bytes:
    """The JSON a receiver gets: the same bytes on every attempt and replay."""
    return (
        '{"id":' + json.dumps(store.webhook_id(row["event_id"]))
        + ',"type":' + json.dumps(row["topic"])
        + ',"timestamp":' + json.dumps(row["event_at"].isoformat())
        + ',"data":' + row["payload"] + "}"
    ).encode("utf-8")


@dataclass(slots=True)
class Sent:
    http_status: int | None
    latency_ms: int
    excerpt: str
    error: str | None
    retry_after: str | None


class Deliverer:
    """Sends due deliveries; `run()` is one worker's loop."""

    def __init__(self, pool: asyncpg.Pool, settings: CallbackSettings, *, name: str = "", wake: asyncio.Event | None = None) -> None:
        self.pool = pool
        self.settings = settings
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.wake = wake or asyncio.Event()
        self.rng = random.Random()
        self._session: aiohttp.ClientSession | None = None
        # The delivery each worker is handling, by worker name (hold_back).
        self._claimed: dict[str, int] = {}

    async def __aenter__(self) -> Deliverer:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.settings.timeout_ms / 1000),
                headers={"User-Agent": USER_AGENT},
            )
        return self._session

    async def run(self, worker_name: str) -> None:
        while True:
            try:
                did = await self.deliver_one(worker_name)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
                log.warning("callbacks.worker_error", worker=worker_name, error=repr(error))
                await self.hold_back(worker_name, error)
                did = False
            except Exception as error:  # a bug must not stop deliveries for good; it is logged loudly
                log.exception("callbacks.worker_failed", worker=worker_name)
                await self.hold_back(worker_name, error)
                did = False
            if not did:
                self.wake.clear()
                # Not asyncio.wait_for: on Python 3.11 a cancellation (the gateway
                # stopping) that comes in the turn the wake does is dropped, and
                # the loop would run on while stop() waits for it.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.settings.poll_interval_ms / 1000):
                        await self.wake.wait()

    async def hold_back(self, worker_name: str, error: BaseException) -> None:
        """The fallback of deliver_one's own hold, for an error that took the
        connection with it (the claim's lock is gone then, so another worker
        may send the delivery once before this lands). The delivery a worker
        was handling when `error` rolled its attempt back stays pending, due
        now, first in the claim order: without a hold,
        the next poll sent it again, and again, as fast as the workers poll,
        ahead of every other delivery. It waits `unrecorded_attempt_hold_ms`
        instead, with the error in `last_error`. The receiver may have got the
        request: at least once, as always."""
        delivery_id = self._claimed.pop(worker_name, None)
        if delivery_id is None:
            return
        try:
            await self._hold(self.pool, delivery_id, error)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as failed:  # the database is down: nothing to hold
            log.warning("callbacks.hold_back_failed", worker=worker_name, delivery=delivery_id, error=repr(failed))
        else:
            log.warning("callbacks.delivery_held_back", worker=worker_name, delivery=delivery_id,
                        hold_ms=self.settings.unrecorded_attempt_hold_ms)

    async def _hold(self, conn: asyncpg.Connection | asyncpg.Pool, delivery_id: int, error: BaseException) -> None:
        await conn.execute(
            """update callback_deliveries
                  set next_attempt_at = now() + make_interval(secs => $2), last_error = $3
                where id = $1 and status = 'pending'""",
            delivery_id,
            self.settings.unrecorded_attempt_hold_ms / 1000,
            f"Kanal could not record the attempt ({type(error).__name__}); held back "
            f"{self.settings.unrecorded_attempt_hold_ms} ms",
        )

    async def deliver_one(self, worker_name: str = "") -> bool:
        """Send the next due delivery, if any; True when one was handled."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(store.CLAIM_SQL)
            if row is None:
                return False
            self._claimed[worker_name] = row["id"]
            try:
                # A savepoint: whatever fails while sending and recording rolls
                # back to here, and the claim's row lock is kept while the hold
                # is written, so no other worker sends the delivery meanwhile.
                async with conn.transaction():
                    await self._attempt(conn, row, worker_name)
            except Exception as error:  # not CancelledError: the gateway stopping rolls everything back
                if conn.is_closed() or isinstance(error, (OSError, asyncpg.InterfaceError)):
                    raise  # the connection is gone: run() holds the delivery back through the pool
                if isinstance(error, asyncpg.PostgresError):
                    log.warning("callbacks.worker_error", worker=worker_name, delivery=row["id"], error=repr(error))
                else:  # a bug must not stop deliveries for good; it is logged loudly
                    log.exception("callbacks.worker_failed", worker=worker_name, delivery=row["id"])
                await self._hold(conn, row["id"], error)
                self._claimed.pop(worker_name, None)
                log.warning("callbacks.delivery_held_back", worker=worker_name, delivery=row["id"],
                            hold_ms=self.settings.unrecorded_attempt_hold_ms)
                return False
        # Committed: the attempt is recorded.
        self._claimed.pop(worker_name, None)
        return True

    async def _attempt(self, conn: asyncpg.Connection, row: asyncpg.Record, worker_name: str) -> None:
        """Send the claimed delivery (twice under a duplicate fault) and record
        each attempt and the delivery's next state."""
        body = event_body(row)
        secrets_in_use = [row["secret"]] + ([row["previous_secret"]] if row["previous_secret"] else [])
        first_ever = row["attempts"] == 0 and row["replays"] == 0
        sends = 2 if first_ever and fault_rules.DUPLICATE in row["faults"] else 1
        attempt = row["attempts"]
        result: Sent | None = None
        for copy in range(sends):
            attempt += 1
            result = await self._send(row["url"], secrets_in_use, store.webhook_id(row["event_id"]), body)
            verdict = schedule.classify(result.http_status)
            fault = fault_rules.DUPLICATE if copy == 1 else None
            if copy == sends - 1:
                outcome = await self._conclude(conn, row, verdict, result)
            else:
                outcome = verdict.value if verdict is not schedule.Verdict.GONE else "gone"
            await conn.execute(
                """insert into callback_attempts (delivery_id, endpoint_id, npp, attempt, outcome, http_status,
                                                  latency_ms, response_excerpt, error, fault, worker)
                   values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)""",
                row["id"], row["endpoint_id"], row["npp"], attempt, outcome, result.http_status,
                result.latency_ms, result.excerpt, result.error, fault, worker_name or self.name,
            )
        assert result is not None
        await conn.execute(
            """update callback_deliveries set attempts = $2, round_attempts = round_attempts + 1,
                      last_http_status = $3, last_error = $4 where id = $1""",
            row["id"], attempt, result.http_status, result.error,
        )
        log.info(
            "callbacks.attempt",
            delivery=row["id"],
            endpoint=row["endpoint_id"],
            webhook_id=store.webhook_id(row["event_id"]),
            type=row["topic"],
            attempt=attempt,
            http_status=result.http_status,
            latency_ms=result.latency_ms,
            error=result.error,
            worker=worker_name or self.name,
        )

    async def _conclude(self, conn: asyncpg.Connection, row: asyncpg.Record, verdict: schedule.Verdict, result: Sent) -> str:
        """Decide the delivery's next state after its attempt; the attempt's outcome."""
        if verdict is schedule.Verdict.DELIVERED:
            await conn.execute("update callback_deliveries set status = 'delivered', finished_at = now() where id = $1", row["id"])
            return "delivered"
        if verdict is schedule.Verdict.GONE:
            await conn.execute("update callback_deliveries set status = 'gone', finished_at = now() where id = $1", row["id"])
            await store.disable(conn, row["endpoint_id"], f"the receiver answered 410 Gone to delivery {row['id']}")
            return "gone"
        retry_after_ms = schedule.parse_retry_after_ms(result.retry_after, self.settings.retry_after_ms_max)
        wait_ms = schedule.next_wait_ms(
            self.settings.retry_schedule_ms,
            row["round_attempts"] + 1,
            jitter_percent=self.settings.jitter_percent,
            retry_after_ms=retry_after_ms if result.http_status == 429 else None,
            rng=self.rng,
        )
        if wait_ms is None:
            await conn.execute("update callback_deliveries set status = 'failed', finished_at = now() where id = $1", row["id"])
            await store.disable(
                conn,
                row["endpoint_id"],
                f"delivery {row['id']} failed {self.settings.attempts_max} attempts in a row "
                f"(last: {result.http_status or result.error})",
            )
            return "exhausted"
        await conn.execute(
            "update callback_deliveries set next_attempt_at = now() + make_interval(secs => $2) where id = $1",
            row["id"],
            wait_ms / 1000,
        )
        return "retry"

    async def _send(self, url: str, secrets_in_use: list[str], webhook_id: str, body: bytes) -> Sent:
        headers = signing.headers(secrets_in_use, webhook_id, int(time.time()), body)
        headers["Content-Type"] = "application/json"
        started = time.perf_counter()
        limit = self.settings.response_excerpt_chars_max
        try:
            async with self.session.post(url, data=body, headers=headers, allow_redirects=False) as response:
                raw = await response.content.read(limit * 4 + 4)
                excerpt = _storable(raw.decode("utf-8", errors="replace"))[:limit]
                return Sent(response.status, _ms_since(started), excerpt, None, response.headers.get("Retry-After"))
        except TimeoutError:
            return Sent(None, _ms_since(started), "", f"timeout after {self.settings.timeout_ms} ms", None)
        except (aiohttp.ClientError, ValueError) as error:
            # ValueError: a host the resolver cannot encode (an empty or too
            # long label, "a..b", raises UnicodeError from getaddrinfo). Such
            # a URL was accepted before registration checked hosts; it is a
            # failed attempt like any unreachable receiver, not a bug that
            # rolls the attempt back and sends again at once.
            return Sent(None, _ms_since(started), "", _storable(f"{type(error).__name__}: {error}")[:500], None)


def _storable(text: str) -> str:
    """The receiver's text as PostgreSQL can store it: NUL, which text cannot
    hold, as U+2400 (as the exchanges do). A NUL left in made the attempt's
    insert fail: the attempt was rolled back, the delivery stayed due, and the
    workers sent it again at once, over and over, ahead of every other
    delivery."""
    return text.replace("\x00", "\u2400") if "\x00" in text else text


def _ms_since(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)


async def relay_loop(pool: asyncpg.Pool, settings: CallbackSettings, wake: asyncio.Event) -> None:
    """Fan outbox rows out into deliveries, and wake the local workers."""
    while True:
        try:
            result = await store.relay_once(pool, batch_size_max=settings.relay_batch_size_max, horizon_s=settings.relay_horizon_s)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
            log.warning("callbacks.relay_error", error=repr(error))
            result = store.RelayResult(0, 0)
        except Exception:
            log.exception("callbacks.relay_failed")
            result = store.RelayResult(0, 0)
        if result.deliveries:
            wake.set()
        if result.events < settings.relay_batch_size_max:
            await asyncio.sleep(settings.poll_interval_ms / 1000)


async def fold_counts_forever(pool: asyncpg.Pool, settings: CallbackSettings) -> None:
    """Fold the delivery and attempt count deltas every
    `counts_fold_interval_ms`, `counts_fold_rows_max` at a time, until
    cancelled (gateway/store/folding.py: a failed fold is logged as
    `callbacks.counts_fold_failed` and tried again)."""
    await folding.fold_forever(
        lambda rows: store.fold_counts(pool, rows), interval_ms=settings.counts_fold_interval_ms,
        rows_max=settings.counts_fold_rows_max, failed_event="callbacks.counts_fold_failed",
    )


async def run_all(pool: asyncpg.Pool, settings: CallbackSettings, *, workers: int, relay: bool, name: str = "") -> None:
    """The relay (optional) and `workers` delivery workers, until cancelled."""
    deliverer = Deliverer(pool, settings, name=name)
    tasks = []
    try:
        async with asyncio.TaskGroup() as group:
            if relay:
                tasks.append(group.create_task(relay_loop(pool, settings, deliverer.wake), name="callbacks-relay"))
            for index in range(workers):
                worker_name = f"{deliverer.name}/{index}"
                tasks.append(group.create_task(deliverer.run(worker_name), name=f"callbacks-worker-{index}"))
            log.info("callbacks.started", workers=workers, relay=relay, name=deliverer.name)
    finally:
        await deliverer.close()
