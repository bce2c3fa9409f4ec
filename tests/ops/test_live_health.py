"""The dashboard's ledger checks run on their own task (gateway/ops/live.py).

They read whole tables, so on a large ledger a run takes long, or hits the
statement timeout. Before, the per-second sampler ran them inline: the
figures stopped while they ran, and a run that failed was retried on every
sample, so the dashboard went silent for good. Here the checks are made to
wait on a lock the test holds: the figures must keep coming, one run at a
time, and a failed run must be reported, then retried after the interval.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time

import asyncpg
import pytest

from gateway.ops.live import OpsHub
from gateway.store import database

HANG_GUARD_S = 30  # not a timing assertion: only so that a regression fails instead of hanging


async def _sample(hub: OpsHub, **kwargs) -> dict:
    return await asyncio.wait_for(hub.sample(**kwargs), HANG_GUARD_S)


async def _postings_locked(database_url: str) -> tuple[asyncpg.Connection, asyncpg.transaction.Transaction]:
    blocker = await asyncpg.connect(database_url)
    tx = blocker.transaction()
    await tx.start()
    await blocker.execute("lock table postings in access exclusive mode")
    return blocker, tx


async def test_the_figures_keep_coming_while_the_checks_wait(database_url, pool, paid_ledger):
    hub = OpsHub(pool, health_interval_ms=60_000, first_health_wait_ms=100)
    blocker, tx = await _postings_locked(database_url)
    try:
        first = await _sample(hub)
        run = hub._health_task
        second = await _sample(hub)
        summary = await _sample(hub, advance=False)  # GET /ops/summary: waits briefly, then answers
    finally:
        await tx.rollback()
        await blocker.close()
    for message in (first, second, summary):
        assert message["payments"]["accepted"] >= 4
        checking = {"status": "checking", "checked_at": None, "checks": []}
        assert message["health"] == (checking if message is not summary else {**checking, "stale": True})
    assert second["sequence"] == first["sequence"] + 1
    assert hub._health_task is run  # one run at a time: the waiting one, not a new one per sample

    # The lock is gone: the same run finishes, and the next message has its verdicts.
    await asyncio.wait_for(run, HANG_GUARD_S)
    health = (await _sample(hub))["health"]
    assert health["status"] == "ok"
    assert health["checked_at"] and health["check_seconds"] >= 0
    assert {c["verdict"] for c in health["checks"]} <= {"ok", "skipped"} and health["checks"]
    await hub.stop()


async def test_a_failed_run_is_reported_and_tried_again(database_url, paid_ledger):
    # Statements that wait longer than 300 ms are cancelled, as a large ledger's checks would be.
    short = await database.create_pool(database_url, size_min=1, size_max=4, statement_timeout_ms=300)
    hub = OpsHub(short, health_interval_ms=200, first_health_wait_ms=0)
    try:
        blocker, tx = await _postings_locked(database_url)
        try:
            await _sample(hub)
            await asyncio.wait_for(hub._health_task, HANG_GUARD_S)
            failed = (await _sample(hub))["health"]
        finally:
            await tx.rollback()
            await blocker.close()
        assert failed["status"] == "error"
        assert failed["error"] == "QueryCanceledError" and failed["error_at"]  # the class only: the stream needs no token

        # Tried again after the interval, now without the lock: the verdicts replace the error.
        for _ in range(200):
            health = (await _sample(hub))["health"]
            if health["status"] == "ok":
                break
            await asyncio.sleep(0.05)
        assert health["status"] == "ok" and "error" not in health
    finally:
        await hub.stop()
        await short.close()


# Reproducers from the review of this change (each failed before its fix).


async def _verdict(hub: OpsHub, status: str) -> dict:
    for _ in range(400):
        health = (await _sample(hub))["health"]
        if health["status"] == status and "error" not in health:
            return health
        await asyncio.sleep(0.02)
    raise AssertionError(health)


async def test_a_failed_run_after_a_good_one_is_not_shown_as_all_checks_pass(database_url, paid_ledger):
    short = await database.create_pool(database_url, size_min=1, size_max=4, statement_timeout_ms=300)
    hub = OpsHub(short, health_interval_ms=200, first_health_wait_ms=0)
    try:
        good = await _verdict(hub, "ok")
        blocker, tx = await _postings_locked(database_url)
        try:
            await asyncio.sleep(hub._health_wait_s + 0.05)
            await _sample(hub)  # due: starts a run that times out on the lock
            await asyncio.wait_for(hub._health_task, HANG_GUARD_S)
            health = (await _sample(hub, advance=False))["health"]
        finally:
            await tx.rollback()
            await blocker.close()
        assert health["status"] == "error" and health["error"] == "QueryCanceledError"
        assert health["checks"] == good["checks"]  # the last verdicts, shown as such
    finally:
        await hub.stop()
        await short.close()


async def test_the_next_run_waits_the_interval_after_a_long_run(database_url, pool, paid_ledger):
    """A run longer than the interval (a large ledger) must not be followed by
    another at once: the checks would read whole tables back to back."""
    hub = OpsHub(pool, health_interval_ms=500, first_health_wait_ms=0)
    try:
        await _verdict(hub, "ok")
        await asyncio.sleep(hub._health_wait_s + 0.05)  # due again
        blocker, tx = await _postings_locked(database_url)
        try:
            await _sample(hub)
            long_run = hub._health_task
            await asyncio.sleep(1.5)  # the run waits on the lock longer than the interval
        finally:
            await tx.rollback()
            await blocker.close()
        await asyncio.wait_for(long_run, HANG_GUARD_S)
        ended = time.monotonic()
        await _sample(hub)
        assert hub._health_task is long_run, f"a new run started {time.monotonic() - ended:.3f} s after the last ended"
    finally:
        await hub.stop()


class _CutOnce:
    """The real pool, whose next acquire raises what asyncpg raises when a
    session is cut mid-statement (InternalClientError: not one of asyncpg's
    PostgresError or InterfaceError classes)."""

    def __init__(self, pool) -> None:
        self._pool, self.cut = pool, True

    def acquire(self):
        if self.cut:
            self.cut = False
            raise asyncpg.exceptions.InternalClientError("cannot switch to state 15; another operation is in progress")
        return self._pool.acquire()

    def __getattr__(self, name):
        return getattr(self._pool, name)


async def test_the_sampler_outlives_an_unexpected_database_error(pool, paid_ledger):
    hub = OpsHub(_CutOnce(pool), sample_interval_ms=20, health_interval_ms=60_000)
    await hub.start()
    queue = hub.subscribe()
    try:
        message = await asyncio.wait_for(queue.get(), HANG_GUARD_S)
        assert message["payments"]["accepted"] >= 4
        assert not hub._task.done()
    finally:
        hub.unsubscribe(queue)
        await hub.stop()


async def test_a_long_run_stretches_the_wait_to_keep_the_checks_to_a_tenth_of_the_time(database_url, pool, paid_ledger):
    """On a ledger the size of the province a run takes tens of seconds: with
    a fixed interval the checks would read whole tables much of the time.
    The wait after a run is nine times its length, or the interval if longer,
    and the dashboard says when the next run is due."""
    hub = OpsHub(pool, health_interval_ms=500, first_health_wait_ms=0)
    try:
        quick = await _verdict(hub, "ok")
        assert dt.datetime.fromisoformat(quick["next_check_at"]) > dt.datetime.fromisoformat(quick["checked_at"])
        await asyncio.sleep(hub._health_wait_s + 0.05)  # due again
        blocker, tx = await _postings_locked(database_url)
        try:
            await _sample(hub)
            long_run = hub._health_task
            await asyncio.sleep(1.0)  # the run waits on the lock: it lasts at least a second
        finally:
            await tx.rollback()
            await blocker.close()
        await asyncio.wait_for(long_run, HANG_GUARD_S)
        health = (await _sample(hub))["health"]
        assert health["check_seconds"] >= 1.0
        assert hub._health_wait_s >= 9 * 1.0  # not the 0.5 s interval
        checked = dt.datetime.fromisoformat(health["checked_at"])
        assert dt.datetime.fromisoformat(health["next_check_at"]) >= checked + dt.timedelta(seconds=9)
        await asyncio.sleep(0.6)  # longer than the interval: still no new run
        await _sample(hub)
        assert hub._health_task is long_run
    finally:
        await hub.stop()


def test_the_busy_share_must_be_a_percentage():
    no_pool = None  # the hub reads nothing until it runs
    with pytest.raises(ValueError, match="health_busy_percent_max"):
        OpsHub(no_pool, health_busy_percent_max=0)
    assert OpsHub(no_pool, health_busy_percent_max=50, health_interval_ms=10_000).health_wait_s(20.0) == 20.0
    assert OpsHub(no_pool, health_busy_percent_max=10).health_wait_s(20.0) == 180.0
    assert OpsHub(no_pool, health_busy_percent_max=10, health_interval_ms=30_000).health_wait_s(1.0) == 30.0
