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

import asyncpg

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
        assert message["health"] == {"status": "checking", "checked_at": None, "checks": []}
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
        assert "QueryCanceledError" in failed["error"] and failed["error_at"]

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
