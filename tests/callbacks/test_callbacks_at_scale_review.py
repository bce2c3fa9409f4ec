"""Reproducers from the independent review of d9d1e2c, "Callbacks at scale"
(migration 0022); each failed on d9d1e2c.

1. The 24-hour default window of the conformance report reached the CLI and
   the exports: `kanal conformance P --fail-on-error` without --since passed
   once a broken exchange was a day old, and "the whole report as a
   download" held the last day only.
2. 0022 kept `paused` in step with the endpoint's status in store.enable and
   store.disable only: an endpoint enabled by any other statement (a gateway
   not upgraded yet, an operator's UPDATE) kept its backlog paused, never
   claimed again, and a not-upgraded worker that claimed one could not record
   it and sent it again on every poll. Migration 0023 does it in a trigger.
3. replay-failed on an enabled endpoint took no lock on it: a disable
   committed while the replay ran left the replayed deliveries pending and
   unpaused on a disabled endpoint, at the front of the claim's index.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import subprocess
import sys

from gateway.callbacks import service, store
from tests.integration.upgrades import database_before

SECRET = "whsec_" + "A" * 40

_ENDPOINT = """
insert into callback_endpoints (id, owner_kind, owner_id, url, event_types, secret)
values ($1, 'partner', 'BANKREVIEW', 'http://127.0.0.1:9/hook', array['payment.posted'], $2)
"""

_DELIVERIES = """
insert into callback_deliveries (endpoint_id, outbox_id, event_id, topic, payload, event_at, sequence, next_attempt_at)
select $1, $2::bigint + g, gen_random_uuid(), 'payment.posted', '{}', now(), $2::bigint + g, now() - interval '1 minute'
  from generate_series(1, $3::int) g
"""



# ----------------------------------------------------------------------------
# The conformance report's default window.

_EXCHANGE = """
insert into partner_exchanges (at, channel, partner_id, service_code, path, external_id, request_body, answered,
                               http_status, response_code, rule, duration_ms)
values ($2, 'snap', $1, '25', '/v1.0/transfer-va/payment', $3, '{}', true, 200, '2002500', $4, 3.0)
"""


async def test_a_ci_gate_without_since_still_judges_every_exchange(callback_gateway, api, database_url):
    """`kanal conformance P --fail-on-error` (no --since) exited 1 when any
    exchange ever broke a rule; with d9d1e2c's 24-hour default it exits 0 once
    the broken exchange is a day old: a CI gate that turns green silently. The
    exports are "the whole report as a download" (docs/callbacks.md) and
    silently dropped the same exchange."""
    pool = callback_gateway.pool
    now = dt.datetime.now(dt.UTC)
    await pool.execute(_EXCHANGE, "BANKGATE", now - dt.timedelta(days=3), "1", "signature")  # broke a rule
    await pool.execute(_EXCHANGE, "BANKGATE", now - dt.timedelta(minutes=5), "2", None)  # passed

    env = {**os.environ, "DATABASE_URL": database_url}
    cli = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "gateway.cli", "conformance", "BANKGATE", "--fail-on-error", "--format", "json"],
        capture_output=True, text=True, env=env, timeout=60,
    )
    assert cli.returncode == 1, (cli.returncode, cli.stderr)
    assert json.loads(cli.stdout)["summary"]["exchanges"] == 2

    for export in ("conformance.json",):
        data = await api("GET", f"/api/v1/partners/BANKGATE/{export}", expect=200)
        assert (data["since"], data["summary"]["exchanges"], data["summary"]["conformant"]) == (None, 2, False)
    html = await api("GET", "/api/v1/partners/BANKGATE/conformance.html", expect=200)
    assert "1 exchange(s) broke a rule" in html

    # The browsable page keeps its 24-hour default, and says so.
    page = await api("GET", "/api/v1/partners/BANKGATE/conformance", expect=200)
    assert page["summary"]["exchanges"] == 1
    since = dt.datetime.fromisoformat(page["since"])
    assert dt.timedelta(hours=23, minutes=59) < now - since < dt.timedelta(hours=24, minutes=1)
    assert page["until"] is None


# ----------------------------------------------------------------------------
# `paused` kept by the database, whoever changes the endpoint's status.

# The statements of the gateway before 0022 (d9d1e2c^:gateway/callbacks/store.py
# and worker.py): what a process not upgraded yet runs against the upgraded
# schema during a rolling upgrade, and what an operator's UPDATE does.
_OLD_ENABLE = "update callback_endpoints set status = 'enabled', disabled_reason = null, disabled_at = null where id = $1"
_OLD_DISABLE = """update callback_endpoints set status = 'disabled', disabled_reason = $2, disabled_at = now()
                   where id = $1 and status = 'enabled'"""
_OLD_CLAIM = """
select d.id from callback_deliveries d join callback_endpoints e on e.id = d.endpoint_id
 where d.status = 'pending' and d.next_attempt_at <= now() and e.status = 'enabled'
 order by d.next_attempt_at, d.id limit 1 for update of d skip locked
"""
_OLD_DELIVERED = "update callback_deliveries set status = 'delivered', finished_at = now() where id = $1"


async def test_an_endpoint_enabled_by_any_statement_sends_its_paused_deliveries(pool):
    """0022 pauses a disabled endpoint's backlog and unpauses it only in
    store.enable. Enabled any other way (a gateway not upgraded yet during a
    rolling upgrade, or an operator's UPDATE), the endpoint kept its
    deliveries paused: new workers never claimed them, and an old worker
    claimed one, sent it, and failed to record it (paused and delivered breaks
    callback_deliveries_paused_pending), so it sent it again on every poll."""
    await pool.execute(_ENDPOINT, "ep_rolling", SECRET)
    await pool.execute(_DELIVERIES, "ep_rolling", 0, 3)
    async with pool.acquire() as conn, conn.transaction():
        await store.disable(conn, "ep_rolling", "the receiver is down")
    assert await pool.fetchval("select count(*) from callback_deliveries where paused") == 3

    await pool.execute(_OLD_ENABLE, "ep_rolling")
    assert await pool.fetchval("select count(*) from callback_deliveries where paused") == 0
    async with pool.acquire() as new_worker, new_worker.transaction():
        assert (await new_worker.fetchrow(store.CLAIM_SQL))["endpoint_id"] == "ep_rolling"
    async with pool.acquire() as old_worker, old_worker.transaction():
        claimed = await old_worker.fetchval(_OLD_CLAIM)
        await old_worker.execute(_OLD_DELIVERED, claimed)  # raised CheckViolationError before the fix

    # And disabled the old way, the backlog is paused all the same.
    await pool.execute(_OLD_DISABLE, "ep_rolling", "by an old gateway")
    assert await pool.fetchval("select count(*) from callback_deliveries where paused") == 2
    assert await pool.fetchrow(store.CLAIM_SQL) is None


async def test_the_upgrade_unpauses_what_an_enable_without_the_trigger_left_paused(admin_url):
    """A database at 0022 where an endpoint was enabled by a statement that
    did not unpause its deliveries: 0023 unpauses them."""
    async with database_before(admin_url, lambda version: version.startswith("gateway/") and version >= "gateway/0023") as old:
        await old.conn.execute(_ENDPOINT, "ep_gap", SECRET)
        await old.conn.execute(_DELIVERIES, "ep_gap", 0, 4)
        await old.conn.execute(_OLD_DISABLE, "ep_gap", "down")
        await old.conn.execute("update callback_deliveries set paused = true")  # as 0022's disable() did
        await old.conn.execute(_OLD_ENABLE, "ep_gap")
        assert await old.conn.fetchrow(store.CLAIM_SQL) is None  # stranded
        assert (await old.upgrade())[0] == "gateway/0023_pause_with_the_endpoint.sql"  # then every later one
        assert await old.conn.fetchval("select count(*) from callback_deliveries where paused") == 0
        assert (await old.conn.fetchrow(store.CLAIM_SQL))["endpoint_id"] == "ep_gap"


# ----------------------------------------------------------------------------
# replay-failed against a concurrent disable.


async def _lock_waiter(pool, since: set[int]) -> int:
    for _ in range(500):
        pids = {r["pid"] for r in await pool.fetch("select pid from pg_stat_activity where wait_event_type = 'Lock'")}
        if pids - since:
            return (pids - since).pop()
        await asyncio.sleep(0.01)
    raise AssertionError("nothing waited for a lock")


async def test_replay_failed_racing_a_disable_leaves_no_unpaused_backlog(pool):
    """replay-failed on an enabled endpoint took no lock on it: a disable
    committed while the replay's UPDATE ran paused the endpoint's pending
    deliveries as its snapshot saw them, without the replayed ones (still
    failed to it), which then committed pending and unpaused on a disabled
    endpoint. Every claim walks such rows (their next_attempt_at is the
    replay's, at the front of the claim's index) until the endpoint is enabled
    again: the walk 0022 removed, for as many rows as were replayed."""
    await pool.execute(_ENDPOINT, "ep_race", SECRET)
    await pool.execute(_DELIVERIES, "ep_race", 0, 3)
    await pool.execute("update callback_deliveries set status = 'failed', finished_at = now()")
    first = await pool.fetchval("select min(id) from callback_deliveries")
    async with pool.acquire() as holder:
        # Something holds one failed delivery (here, a transaction in the
        # way), so that the replay's UPDATE is under way when the disable runs.
        tx = holder.transaction()
        await tx.start()
        await holder.execute("select 1 from callback_deliveries where id = $1 for update", first)
        before = {r["pid"] for r in await pool.fetch("select pid from pg_stat_activity where wait_event_type = 'Lock'")}
        replay = asyncio.create_task(service.replay_failed(pool, "ep_race"))
        replay_pid = await _lock_waiter(pool, before)
        disable = asyncio.create_task(service.set_enabled(pool, "ep_race", False))
        for _ in range(50):  # the disable either commits (before the fix) or waits for the replay
            if disable.done():
                break
            waiting = await pool.fetchval(
                "select count(*) from pg_stat_activity where wait_event_type = 'Lock' and pid <> $1 and pid <> all($2::int[])",
                replay_pid, list(before),
            )
            if waiting:
                break
            await asyncio.sleep(0.02)
        await tx.commit()
    assert (await asyncio.wait_for(replay, 10))["replayed"] == 3
    assert (await asyncio.wait_for(disable, 10))["status"] == "disabled"
    stranded = await pool.fetchval(
        """select count(*) from callback_deliveries d join callback_endpoints e on e.id = d.endpoint_id
            where e.status = 'disabled' and d.status = 'pending' and not d.paused"""
    )
    assert stranded == 0


async def test_a_replay_of_a_delivery_being_sent_does_not_deadlock_with_its_worker(pool):
    """Guard (passes on d9d1e2c): a worker holds a delivery while it sends;
    its endpoint is disabled meanwhile (the pause skips the held row), and the
    delivery is replayed. The replay takes the endpoint (enabling it), then
    waits for the delivery; the worker's answer is a 410 and it disables the
    endpoint, delivery then endpoint, the other order. No deadlock: the
    endpoint is disabled as far as the worker's snapshot sees, so its
    UPDATE ... WHERE status = 'enabled' matches nothing and waits for
    nothing."""
    await pool.execute(_ENDPOINT, "ep_busy", SECRET)
    await pool.execute(_DELIVERIES, "ep_busy", 0, 2)
    async with pool.acquire() as worker:
        tx = worker.transaction()
        await tx.start()
        claimed = await worker.fetchrow(store.CLAIM_SQL)
        async with pool.acquire() as admin, admin.transaction():
            await store.disable(admin, "ep_busy", "by its owner")
        replay = asyncio.create_task(service.replay_delivery(pool, claimed["id"]))
        # The replay waits for the worker's delivery (and, before the fix,
        # holds the endpoint while it waits).
        for _ in range(500):
            waiting = await pool.fetchval(
                "select pid from pg_stat_activity where wait_event_type = 'Lock' and query like '%callback_deliveries%'"
            )
            if waiting:
                break
            await asyncio.sleep(0.01)
        assert waiting, "the replay never waited for the worker's delivery"
        # The worker's attempt ends in a 410, as Deliverer._conclude does it.
        await worker.execute("update callback_deliveries set status = 'gone', finished_at = now() where id = $1", claimed["id"])
        await store.disable(worker, "ep_busy", f"the receiver answered 410 Gone to delivery {claimed['id']}")
        await tx.commit()
    view = await asyncio.wait_for(replay, 10)
    assert view["status"] == "pending"
    assert await pool.fetchval("select status from callback_endpoints where id = 'ep_busy'") == "enabled"
    assert await pool.fetchval("select count(*) from callback_deliveries where paused") == 0
