"""Callbacks at scale: what a callback statement reads grows with what it
answers, not with every delivery ever made (migration 0022).

Each test fills the tables as months of traffic leave them and counts, with
PostgreSQL's own per-transaction block counters (not timing), the blocks a
statement reads, next to a control: the statement as it was before (the
counts by GROUP BY, the summary without a window), or the same statement
without the migration's index (dropped, and the old one put back, in a
transaction that is rolled back). The answers must be the same either way.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import json
import os
import subprocess
import sys

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from bank_adapters.base import PayCommand, PayOutcome
from gateway.callbacks import conformance, service, store
from gateway.domain.periods import Period
from gateway.ops import checks
from tests.integration.upgrades import database_before

SECRET = "whsec_" + "A" * 40

_ENDPOINT = """
insert into callback_endpoints (id, owner_kind, owner_id, url, event_types, secret)
values ($1, 'partner', 'BANKSCALE', 'http://127.0.0.1:9/hook', array['payment.posted'], $2)
"""

# `n` deliveries of one endpoint in one statement, as a history leaves them:
# status and next_attempt_at from the arguments, one attempt each when
# finished. Triggers stay on: the counters see every row.
_DELIVERIES = """
insert into callback_deliveries (endpoint_id, outbox_id, event_id, topic, npp, payload, event_at, sequence, status,
                                 attempts, round_attempts, next_attempt_at, finished_at)
select $1, $2::bigint + g, gen_random_uuid(), 'payment.posted', 'NPP-' || (g % 5000),
       '{"payment_code": "00000000001", "amount_rupiah": 150000}', $4::timestamptz, $2::bigint + g, $5,
       case when $5 = 'pending' then 0 else 1 end, case when $5 = 'pending' then 0 else 1 end,
       $4::timestamptz + g * interval '1 millisecond', case when $5 <> 'pending' then $4::timestamptz end
  from generate_series(1, $3::int) g
"""

_ATTEMPTS = """
insert into callback_attempts (delivery_id, endpoint_id, npp, attempt, outcome, http_status, latency_ms, worker)
select id, endpoint_id, npp, 1,
       case status when 'delivered' then 'delivered' when 'failed' then 'exhausted' when 'gone' then 'gone'
                   else 'dropped' end,
       case status when 'delivered' then 200 when 'gone' then 410 when 'failed' then 503 end, 12, 'history'
  from callback_deliveries where status <> 'pending'
"""

_RELATIONS = """
select c.oid from pg_class c
 where c.oid = any($1::regclass[])
    or c.oid in (select indexrelid from pg_index where indrelid = any($1::regclass[]))
"""

_BLOCKS_READ = "select sum(pg_stat_get_xact_blocks_fetched(o)) from unnest($1::oid[]) o"

_RECOUNT = """
select 'delivery' as kind, status, count(*) as n from callback_deliveries group by status
union all
select 'attempt', outcome, count(*) from callback_attempts group by outcome
"""


async def _measured(conn, tables: list[str], statement, *, before=(), indexes: bool = True) -> tuple[object, int]:
    """(what `statement(conn)` answered, blocks of `tables` and their indexes
    it read), in a transaction that is rolled back after the `before`
    statements (a control's index changes) ran."""
    tx = conn.transaction()
    await tx.start()
    try:
        # Parallel workers count their reads in their own backends: one backend.
        await conn.execute("set local max_parallel_workers_per_gather = 0")
        for sql in before:
            await conn.execute(sql)
        relations = [r["oid"] for r in await conn.fetch(_RELATIONS, tables)]
        if not indexes:
            relations = [r["oid"] for r in await conn.fetch("select unnest($1::regclass[])::oid as oid", tables)]
        start = await conn.fetchval(_BLOCKS_READ, relations)
        answer = await statement(conn)
        return answer, int(await conn.fetchval(_BLOCKS_READ, relations) - start)
    finally:
        await tx.rollback()


async def _blocks(pool, table: str) -> int:
    return await pool.fetchval("select pg_relation_size($1::regclass) / 8192", table)


def _recounted(rows) -> dict[str, dict[str, int]]:
    counts = {"deliveries": dict.fromkeys(store.DELIVERY_STATUSES, 0), "attempts": dict.fromkeys(store.ATTEMPT_OUTCOMES, 0)}
    for r in rows:
        counts["deliveries" if r["kind"] == "delivery" else "attempts"][r["status"]] = r["n"]
    return counts


async def _history(pool, endpoint_id: str, first_outbox_id: int, statuses: dict[str, int], start: dt.datetime) -> None:
    """Deliveries of `endpoint_id` in these statuses, interleaved by id the
    way months of traffic leave them (many small runs per status)."""
    runs = 20
    offset = first_outbox_id
    for run in range(runs):
        for status, n in statuses.items():
            count = n // runs + (1 if run < n % runs else 0)
            if count:
                at = start + dt.timedelta(hours=run)
                await pool.execute(_DELIVERIES, endpoint_id, offset, count, at, status)
                offset += count


# ------------------------------------------------------------------ 1 -------


async def test_the_counts_by_status_read_the_counters_not_the_tables(pool):
    await pool.execute(_ENDPOINT, "ep_history", SECRET)
    start = dt.datetime.now(dt.UTC) - dt.timedelta(days=90)
    await _history(pool, "ep_history", 0, {"delivered": 60_000, "failed": 600, "gone": 20, "dropped": 300, "pending": 50}, start)
    await pool.execute(_ATTEMPTS)
    # Row by row, as workers and replays change them: 25 pending delivered,
    # the failed, gone and dropped ones replayed.
    await pool.execute("""update callback_deliveries set status = 'delivered', finished_at = now()
                           where id in (select id from callback_deliveries where status = 'pending' order by id limit 25)""")
    assert await store.replay_failed(pool, "ep_history") == 920
    recount = _recounted(await pool.fetch(_RECOUNT))
    assert recount["deliveries"] == {"pending": 945, "delivered": 60_025, "failed": 0, "gone": 0, "dropped": 0}
    assert recount["attempts"] == {"delivered": 60_000, "retry": 0, "gone": 20, "exhausted": 600, "dropped": 300}
    assert await store.status_counts(pool) == recount  # before any fold: totals + deltas

    while await store.fold_counts(pool, 7):  # a few at a time: each fold keeps the sums
        assert await store.status_counts(pool) == recount
    assert await pool.fetchval("select count(*) from callback_count_deltas") == 0
    await pool.execute("vacuum analyze callback_deliveries, callback_attempts, callback_count_deltas")

    tables = ["callback_deliveries", "callback_attempts", "callback_count_totals", "callback_count_deltas"]
    async with pool.acquire() as conn:
        counts, read = await _measured(conn, tables, store.status_counts)
        recounted, recount_read = await _measured(conn, tables, lambda c: c.fetch(_RECOUNT))
    assert counts == _recounted(recounted) == recount
    held = await _blocks(pool, "callback_deliveries") + await _blocks(pool, "callback_attempts")
    assert held > 2_000
    assert read < 10, read  # the totals' one page
    assert recount_read >= held, (recount_read, held)  # what the dashboard read every second


async def test_the_dashboard_and_metrics_show_the_counts_of_a_real_run(callback_gateway, api, bills, make_receiver, clock):
    """Real deliveries (a retry, a 410, a replay), then an endpoint deleted with
    its history: /metrics and /ops/summary show what a recount of the rows
    gives, and the gateway folds the deltas in the background."""
    pool = callback_gateway.pool
    ok = await make_receiver(script=collections.deque([500]))
    gone = await make_receiver(script=collections.deque([410]))
    employer, api_key, kpjs = await bills.create_employer(workers=1)
    endpoints = []
    for receiver in (ok, gone):
        endpoint = await api("POST", f"/api/v1/employers/{employer['npp']}/callbacks/endpoints", token=api_key,
                             json_body={"url": receiver.url, "event_types": ["payment.posted"]}, expect=201)
        receiver.secrets.append(endpoint["secret"])
        endpoints.append(endpoint)
    this_month = Period.from_date(clock().date())
    for n, back in enumerate((2, 1), start=1):
        info = await bills.report(employer, api_key, kpjs, str(this_month - back))
        result = await callback_gateway.payments.pay(PayCommand(info.payment_code, info.total_rupiah, "test:BANK", f"k{n}", f"R{n}"))
        assert result.outcome == PayOutcome.POSTED
        await ok.wait_for(lambda n=n: len(ok.ids()) == n)
        await gone.wait_for(lambda: len(gone.deliveries) == 1)  # the first: 410, and the endpoint is disabled

    async def settled() -> dict:
        for _ in range(200):
            if not await pool.fetchval("select count(*) from callback_deliveries where status = 'pending' and not paused"):
                break
            await asyncio.sleep(0.05)
        return _recounted(await pool.fetch(_RECOUNT))

    async def shown() -> tuple[dict, dict]:
        async with aiohttp.ClientSession() as http:
            async with http.get(callback_gateway.url + "/metrics") as response:
                families = {f.name: f for f in text_string_to_metric_families(await response.text())}
            async with http.get(callback_gateway.url + "/ops/summary") as response:
                summary = await response.json()
        metrics = {
            "deliveries": {s.labels["status"]: int(s.value) for s in families["kanal_callback_deliveries"].samples},
            "attempts": {s.labels["outcome"]: int(s.value) for s in families["kanal_callback_attempts"].samples},
        }
        return metrics, summary["deliveries"]

    recount = await settled()
    # ok: a 500 then 200, and the second event; gone: 410, disabled, its second event waits.
    assert recount["deliveries"] == {"pending": 1, "delivered": 2, "failed": 0, "gone": 1, "dropped": 0}
    assert recount["attempts"] == {"delivered": 2, "retry": 1, "gone": 1, "exhausted": 0, "dropped": 0}
    metrics, dashboard = await shown()
    assert metrics == recount and dashboard == recount["deliveries"]

    await api("POST", f"/api/v1/callbacks/endpoints/{endpoints[1]['id']}/replay-failed", token=api_key, expect=200)
    await gone.wait_for(lambda: len(gone.deliveries) == 3)
    recount = await settled()
    assert recount["deliveries"] == {"pending": 0, "delivered": 4, "failed": 0, "gone": 0, "dropped": 0}
    metrics, dashboard = await shown()
    assert metrics == recount and dashboard == recount["deliveries"]

    await api("DELETE", f"/api/v1/callbacks/endpoints/{endpoints[0]['id']}", token=api_key, expect=204)
    recount = await settled()
    assert recount["deliveries"]["delivered"] == 2 and recount["attempts"]["retry"] == 0
    metrics, dashboard = await shown()
    assert metrics == recount and dashboard == recount["deliveries"]
    for _ in range(100):  # the gateway folds every second by default
        if await pool.fetchval("select count(*) from callback_count_deltas") == 0:
            break
        await asyncio.sleep(0.1)
    assert await pool.fetchval("select count(*) from callback_count_deltas") == 0
    assert (await shown())[0] == recount


# ------------------------------------------------------------------ 2 -------

# The claim's index before migration 0022, for the control.
_OLD_CLAIM_INDEX = (
    "drop index callback_deliveries_claim",
    "create index callback_deliveries_due on callback_deliveries (next_attempt_at, id) where status = 'pending'",
    "analyze callback_deliveries",
)


async def _claim(conn):
    row = await conn.fetchrow(store.CLAIM_SQL)
    return row and (row["endpoint_id"], row["id"])


async def test_a_claim_passes_over_no_disabled_endpoints_backlog(pool):
    await pool.execute(_ENDPOINT, "ep_live", SECRET)
    await pool.execute(_ENDPOINT, "ep_dead", SECRET)
    now = dt.datetime.now(dt.UTC)
    # A receiver down for days: 30,000 deliveries came due before the live
    # endpoint's two, then it was disabled.
    await pool.execute(_DELIVERIES, "ep_dead", 0, 30_000, now - dt.timedelta(days=2), "pending")
    await pool.execute(_DELIVERIES, "ep_live", 100_000, 2, now - dt.timedelta(seconds=5), "pending")
    async with pool.acquire() as conn, conn.transaction():
        await store.disable(conn, "ep_dead", "the receiver is down")
    assert await pool.fetchval("select count(*) from callback_deliveries where paused") == 30_000
    await pool.execute("vacuum analyze callback_deliveries")
    first_live = await pool.fetchval("select min(id) from callback_deliveries where endpoint_id = 'ep_live'")

    async with pool.acquire() as conn:
        claimed, read = await _measured(conn, ["callback_deliveries"], _claim)
        control, control_read = await _measured(conn, ["callback_deliveries"], _claim, before=_OLD_CLAIM_INDEX)
    assert claimed == control == ("ep_live", first_live)
    backlog = await _blocks(pool, "callback_deliveries")
    assert backlog > 500
    assert read < 10, read
    assert control_read >= backlog * 0.9, (control_read, backlog)  # the backlog's every page, under the old index

    # Two workers at once take two deliveries, each its own (skip locked);
    # a third finds nothing else due: the backlog waits.
    async with pool.acquire() as one, pool.acquire() as two, one.transaction(), two.transaction():
        assert {await _claim(one), await _claim(two)} == {("ep_live", first_live), ("ep_live", first_live + 1)}
        assert await _claim(pool) is None

    # Enabled again, the backlog is due, oldest first (it came due first);
    # disabled again, it waits again.
    first_dead = await pool.fetchval("select min(id) from callback_deliveries where endpoint_id = 'ep_dead'")
    async with pool.acquire() as conn, conn.transaction():
        await store.enable(conn, "ep_dead")
    assert await pool.fetchval("select count(*) from callback_deliveries where paused") == 0
    assert await _claim(pool) == ("ep_dead", first_dead)
    async with pool.acquire() as conn, conn.transaction():
        await store.disable(conn, "ep_dead", "again")
    assert await _claim(pool) == ("ep_live", first_live)


async def test_a_delivery_being_sent_when_its_endpoint_is_disabled_is_not_sent_again(pool):
    """Pausing skips what a worker holds; the claim's join still keeps a
    disabled endpoint's unpaused delivery out, and enabling sends it."""
    await pool.execute(_ENDPOINT, "ep_busy", SECRET)
    now = dt.datetime.now(dt.UTC)
    await pool.execute(_DELIVERIES, "ep_busy", 0, 3, now - dt.timedelta(minutes=1), "pending")
    async with pool.acquire() as worker, worker.transaction():
        held = await _claim(worker)
        async with pool.acquire() as admin, admin.transaction():
            await store.disable(admin, "ep_busy", "by its owner")
        assert await pool.fetchval("select count(*) from callback_deliveries where paused") == 2
    assert await _claim(pool) is None  # the held one is unpaused, but its endpoint is disabled
    await service.replay_delivery(pool, held[1])  # re-enables, unpauses the other two
    assert await pool.fetchval("select count(*) from callback_deliveries where paused") == 0
    assert await _claim(pool) is not None


# ------------------------------------------------------------------ 3 -------

_EXCHANGES = """
insert into partner_exchanges (at, channel, partner_id, service_code, path, external_id, request_body, answered,
                               http_status, response_code, rule, duration_ms)
select $2::timestamptz + (g - 1) * ($3::timestamptz - $2::timestamptz) / $4::int, 'snap', $1, '25',
       '/v1.0/transfer-va/payment', g::text, '{}', true, 200, '2002500',
       case when g % $5::int = 0 then 'signature' end, 3.0
  from generate_series(1, $4::int) g
"""


async def test_a_conformance_summary_reads_its_window_not_the_partners_history(pool):
    now = dt.datetime.now(dt.UTC)
    # 90 days of a bank's traffic, then the last day's: 48 exchanges, 4 failed.
    await pool.execute(_EXCHANGES, "BANKBUSY", now - dt.timedelta(days=90), now - dt.timedelta(days=1, minutes=1), 100_000, 50)
    await pool.execute(_EXCHANGES, "BANKBUSY", now - dt.timedelta(hours=23), now, 48, 12)
    await pool.execute("vacuum analyze partner_exchanges")
    since = conformance.default_since(None, now)
    assert since == now - dt.timedelta(hours=24)

    def summary(since_at):
        return lambda conn: conformance.summary(conn, "BANKBUSY", since=since_at, until=None)

    async with pool.acquire() as conn:
        window, read = await _measured(conn, ["partner_exchanges"], summary(since))
        history, history_read = await _measured(conn, ["partner_exchanges"], summary(None))
    assert (window["exchanges"], window["fail"], window["pass"]) == (48, 4, 44)
    assert (history["exchanges"], history["fail"]) == (100_048, 2_004)
    held = await _blocks(pool, "partner_exchanges")
    assert held > 1_000
    assert read < 20, read
    assert history_read >= held, (history_read, held)  # what a report without `since` read


async def test_the_browsable_conformance_page_covers_the_last_24_hours_unless_asked(callback_gateway, api, database_url):
    pool = callback_gateway.pool
    now = dt.datetime.now(dt.UTC)
    await pool.execute(_EXCHANGES, "BANKWIN", now - dt.timedelta(days=2), now - dt.timedelta(days=2), 1, 1)  # failed
    await pool.execute(_EXCHANGES, "BANKWIN", now - dt.timedelta(hours=1), now - dt.timedelta(hours=1), 1, 2)  # passed
    page = await api("GET", "/api/v1/partners/BANKWIN/conformance", expect=200)
    assert (page["summary"]["exchanges"], page["summary"]["conformant"]) == (1, True)
    assert [x["verdict"] for x in page["exchanges"]] == ["pass"]
    longer = await api("GET", "/api/v1/partners/BANKWIN/conformance?since=3d", expect=200)
    assert (longer["summary"]["exchanges"], longer["summary"]["fail"]) == (2, 1)
    since = dt.datetime.fromisoformat(page["since"])
    assert dt.timedelta(hours=23, minutes=59) < now - since < dt.timedelta(hours=24, minutes=1)
    # The exports, read once per report, cover every exchange without since
    # (review of d9d1e2c: "the whole report as a download").
    export = await api("GET", "/api/v1/partners/BANKWIN/conformance.json", expect=200)
    assert (export["since"], export["summary"]["exchanges"], export["summary"]["fail"]) == (None, 2, 1)
    # The page's export links carry the window the page shows, not the path alone.
    for shown, exchanges in ((page, 1), (longer, 2)):
        linked = await api("GET", shown["export"]["json"], expect=200)
        assert (linked["since"], linked["summary"]["exchanges"]) == (shown["since"], exchanges)
        assert shown["export"]["html"].split("?")[1] == shown["export"]["json"].split("?")[1]
    # Up to a time, without since: the 24 hours before it.
    earlier = await api("GET", f"/api/v1/partners/BANKWIN/conformance?until={(now - dt.timedelta(days=1)).isoformat().replace('+', '%2B')}",
                        expect=200)
    assert (earlier["summary"]["exchanges"], earlier["summary"]["fail"]) == (1, 1)

    env = {**os.environ, "DATABASE_URL": database_url}
    cli = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "gateway.cli", "conformance", "BANKWIN", "--format", "json"],
        capture_output=True, text=True, env=env, timeout=60,
    )
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["summary"]["exchanges"] == 2  # every exchange, as the exports


# ------------------------------------------------------------------ 4 -------


async def test_replay_failed_reads_the_failed_deliveries_not_the_endpoints_history(pool):
    await pool.execute(_ENDPOINT, "ep_flaky", SECRET)
    await _history(pool, "ep_flaky", 0, {"delivered": 100_000, "failed": 30, "gone": 5, "dropped": 5, "pending": 20},
                   dt.datetime.now(dt.UTC) - dt.timedelta(days=90))
    await pool.execute("vacuum analyze callback_deliveries")

    async def replay(conn):
        return await store.replay_failed(conn, "ep_flaky")

    # The table's own blocks: each replayed delivery also writes an entry in
    # every index, which costs the same with the index or without.
    async with pool.acquire() as conn:
        replayed, read = await _measured(conn, ["callback_deliveries"], replay, indexes=False)
        control, control_read = await _measured(
            conn, ["callback_deliveries"], replay, before=("drop index callback_deliveries_undelivered",), indexes=False
        )
    assert replayed == control == 40
    held = await _blocks(pool, "callback_deliveries")
    assert held > 2_000
    assert read < 15 * replayed, (read, held, control_read)  # each one read, and a page found for its new version
    assert control_read >= held * 0.9, (control_read, held, read)  # every page of the endpoint's history


# ------------------------------------------------------------- upgrade -----


async def test_the_upgrade_counts_the_rows_there_and_pauses_disabled_backlogs(admin_url):
    """A database with deliveries from before 0022: the counters start at the
    rows' counts, and a disabled endpoint's pending deliveries are paused."""
    async with database_before(admin_url, lambda version: version.startswith("gateway/") and version >= "gateway/0022") as old:
        await old.conn.execute(_ENDPOINT, "ep_up", SECRET)
        await old.conn.execute(_ENDPOINT, "ep_off", SECRET)
        start = dt.datetime.now(dt.UTC) - dt.timedelta(days=3)
        for endpoint_id, first, status, n in (("ep_up", 0, "delivered", 500), ("ep_up", 500, "failed", 7),
                                              ("ep_up", 600, "pending", 3), ("ep_off", 700, "pending", 40)):
            await old.conn.execute(_DELIVERIES, endpoint_id, first, n, start, status)
        await old.conn.execute(_ATTEMPTS)
        await old.conn.execute("update callback_endpoints set status = 'disabled', disabled_at = now() where id = 'ep_off'")
        applied = await old.upgrade()  # 0022, 0023 and every later one
        assert applied[:2] == ["gateway/0022_callbacks_at_scale.sql", "gateway/0023_pause_with_the_endpoint.sql"]
        assert await store.status_counts(old.conn) == _recounted(await old.conn.fetch(_RECOUNT))
        assert (await store.status_counts(old.conn))["deliveries"]["pending"] == 43
        paused = await old.conn.fetch("select endpoint_id, count(*) as n from callback_deliveries where paused group by 1")
        assert [tuple(r) for r in paused] == [("ep_off", 40)]
        assert (await _claim(old.conn))[0] == "ep_up"


async def test_one_fan_out_is_one_statement_and_one_count_per_status(pool):
    """The relay writes a batch's deliveries in one INSERT, so the counters'
    statement trigger adds one delta per status, not one per delivery; the
    deliveries keep the outbox's order, their faults and their sequence."""
    await pool.execute(_ENDPOINT, "ep_fanout", SECRET)
    await pool.execute(
        """insert into callback_endpoints (id, owner_kind, owner_id, url, event_types, secret, faults)
           values ('ep_fanout_dup', 'partner', 'BANKSCALE', 'http://127.0.0.1:9/hook', array['payment.posted'], $1,
                   '{"duplicate_percent": 100}')""",
        SECRET,
    )
    await pool.execute(
        """insert into outbox (topic, npp, payload)
           select 'payment.posted', 'NPP-' || g, '{"amount_rupiah": 150000}' from generate_series(1, 40) g"""
    )
    before = await pool.fetchval("select count(*) from callback_count_deltas")
    result = await store.relay_once(pool, batch_size_max=100, horizon_s=0)
    assert result.deliveries == 80
    deltas = await pool.fetch("select kind, status, delta from callback_count_deltas offset $1", before)
    assert [(d["kind"], d["status"], d["delta"]) for d in deltas] == [("delivery", "pending", 80)]
    rows = await pool.fetch(
        """select d.endpoint_id, d.sequence, d.faults, o.id as outbox_id
             from callback_deliveries d join outbox o on o.event_id = d.event_id order by d.id"""
    )
    assert [(r["outbox_id"], r["endpoint_id"]) for r in rows] == sorted((r["outbox_id"], r["endpoint_id"]) for r in rows)
    for endpoint_id in ("ep_fanout", "ep_fanout_dup"):
        assert [r["sequence"] for r in rows if r["endpoint_id"] == endpoint_id] == list(range(1, 41))
    assert {tuple(r["faults"]) for r in rows if r["endpoint_id"] == "ep_fanout"} == {()}
    assert {tuple(r["faults"]) for r in rows if r["endpoint_id"] == "ep_fanout_dup"} == {("duplicated",)}


async def test_the_documented_rebuild_restores_counters_that_missed_rows(pool):
    """Rows written with triggers off are not counted; the rebuild in
    docs/callbacks.md, run as written, makes the counters a recount again."""
    from pathlib import Path

    await pool.execute(_ENDPOINT, "ep_rebuild", SECRET)
    await _history(pool, "ep_rebuild", 1, {"delivered": 300, "failed": 20, "pending": 40}, dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("set local session_replication_role = replica")  # a hand-written repair
        await conn.execute(_DELIVERIES, "ep_rebuild", 10_000, 25, dt.datetime(2026, 2, 1, tzinfo=dt.UTC), "gone")
        await conn.execute(_ATTEMPTS)
    recount = _recounted(await pool.fetch(_RECOUNT))
    assert await store.status_counts(pool) != recount  # the repair's rows are missing
    # The ledger check `callback_counters` names what differs.
    (found,) = (await checks.run_checks(pool, only=["callback_counters"])).checks
    assert found.verdict == checks.VIOLATION
    assert {(r["kind"], r["status"], r["counter"], r["recount"]) for r in found.rows} == {
        ("delivery", "gone", 0, 25), ("attempt", "delivered", 0, 300), ("attempt", "exhausted", 0, 20),
        ("attempt", "gone", 0, 25),
    }
    doc = (Path(__file__).parents[2] / "docs" / "callbacks.md").read_text()
    section = doc.split("### Rebuilding the delivery counters", 1)[1]
    rebuild = section.split("```sql\n", 1)[1].split("```", 1)[0]
    async with pool.acquire() as conn:
        await conn.execute(rebuild)
    assert await store.status_counts(pool) == recount
    (found,) = (await checks.run_checks(pool, only=["callback_counters"])).checks
    assert (found.verdict, found.rows) == (checks.OK, [])


# ------------------------------------------------- delivery failure rate -----


async def test_the_failure_rate_check_reads_the_last_hours_deliveries_not_every_one(pool):
    """Migration 0024: the check counts and lists the deliveries finished in
    its window through an index on finished_at."""
    await pool.execute(_ENDPOINT, "ep_months", SECRET)
    await _history(pool, "ep_months", 0, {"delivered": 60_000, "failed": 900, "gone": 100, "pending": 40},
                   dt.datetime.now(dt.UTC) - dt.timedelta(days=90))
    # The last hour's: 200 delivered, 16 failed and 4 gone (9.09 % failed).
    await _history(pool, "ep_months", 100_000, {"delivered": 200, "failed": 16, "gone": 4},
                   dt.datetime.now(dt.UTC) - dt.timedelta(minutes=30))
    await pool.execute("vacuum analyze callback_deliveries")
    limits = checks.Limits()

    async def check(conn):
        return await checks.delivery_failure_rate(conn, limits)

    async with pool.acquire() as conn:
        result, read = await _measured(conn, ["callback_deliveries"], check)
        control, control_read = await _measured(
            conn, ["callback_deliveries"], check, before=("drop index callback_deliveries_finished",)
        )
    assert result.as_dict() == control.as_dict()
    assert result.verdict == checks.VIOLATION
    assert (result.figures["delivered"], result.figures["failed"], result.figures["pending"]) == (200, 20, 40)
    assert result.figures["failure_basis_points"] == 909
    assert result.rows_total == 20 and len(result.rows) == 20
    held = await _blocks(pool, "callback_deliveries")
    assert held > 1_000
    assert read < 60, (read, held, control_read)
    assert control_read >= held, (control_read, held, read)  # every page, to count the last hour's
