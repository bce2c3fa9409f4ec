"""Ops over HTTP on a real gateway: health, reconciliation, /metrics, readiness."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
from urllib.parse import urlsplit

import aiohttp
import asyncpg
from prometheus_client.parser import text_string_to_metric_families

from bank_adapters.base import PayCommand, PayOutcome
from gateway.domain.periods import WIB
from gateway.observability import observe_response
from gateway.ops import reconcile
from gateway.ops.statements import render
from tests.conftest import Gateway, test_settings
from tests.ops.conftest import ADMIN, tampering


async def pay(server, bills, n: int, channel: str = "snap:BANKKALBAR", **kwargs):
    info = await bills.create(workers=2, **kwargs)
    result = await server.payments.pay(PayCommand(info.payment_code, info.total_rupiah, channel, f"K{n}", f"R{n:06d}"))
    assert result.outcome == PayOutcome.POSTED
    return result


async def test_ledger_health_over_http(gateway_server, bills):
    first = await pay(gateway_server, bills, 1)
    async with aiohttp.ClientSession() as http:
        async with http.get(gateway_server.url + "/ops/health/ledger") as response:
            assert response.status == 401
            assert response.content_type == "application/problem+json"
        async with http.get(gateway_server.url + "/ops/health/ledger", headers=ADMIN) as response:
            body = await response.json()
            assert response.status == 200, body
            assert body["status"] == "ok" and body["violations"] == []
            assert {c["name"] for c in body["checks"]} >= {"entries_balance", "trial_balance", "coverage_counters"}
        async with tampering(gateway_server.pool) as conn:
            await conn.execute("update payments set amount_rupiah = 1 where id = $1", first.payment_id)
        async with http.get(gateway_server.url + "/ops/health/ledger", headers=ADMIN) as response:
            body = await response.json()
            assert response.status == 503
            assert body["violations"] == ["payment_equals_bill", "funds_equal_lines"]
            bad = next(c for c in body["checks"] if c["name"] == "payment_equals_bill")
            assert bad["rows"][0]["payment_id"] == first.payment_id
        async with http.get(gateway_server.url + "/ops/health/ledger?check=nonsense", headers=ADMIN) as response:
            assert response.status == 422
            assert "unknown checks" in (await response.json())["detail"]


async def test_reconciliation_over_http(gateway_server, bills, clock):
    for n in range(3):
        await pay(gateway_server, bills, n)
    today = clock().astimezone(WIB).date()
    statement = await reconcile.ledger_statement(gateway_server.pool, today, today, statement_ref="STMT-HTTP")
    raw = render(statement, "camt.054")
    url = gateway_server.url + "/ops/reconciliations"
    async with aiohttp.ClientSession() as http:
        async with http.post(url, data=raw) as response:
            assert response.status == 401
        async with http.post(url, data=raw, headers=ADMIN | {"Content-Type": "application/xml"}) as response:
            created = await response.json()
            assert response.status == 201, created
            assert (created["format"], created["matched"], created["discrepancies"]) == ("camt.054", 3, 0)
            assert created["already_imported"] is False
        async with http.post(url, data=raw, headers=ADMIN) as response:
            again = await response.json()
            assert response.status == 200 and again["already_imported"] is True and again["id"] == created["id"]
        async with http.get(url, headers=ADMIN) as response:
            listed = (await response.json())["statements"]
            assert [s["id"] for s in listed] == [created["id"]]
        async with http.get(f"{url}/{created['id']}?kind=matched", headers=ADMIN) as response:
            detail = await response.json()
            assert len(detail["items"]) == 3 and {i["kind"] for i in detail["items"]} == {"matched"}
        async with http.get(f"{url}/{created['id']}/items.csv", headers=ADMIN) as response:
            assert response.content_type == "text/csv"
            rows = list(csv.DictReader(io.StringIO(await response.text())))
            assert sorted(r["bank_reference"] for r in rows) == ["R000000", "R000001", "R000002"]
        async with http.post(url + "?format=csv", data=b"booking_date,amount_rupiah\n2025-10-01,1.5\n", headers=ADMIN) as response:
            problem = await response.json()
            assert response.status == 422
            assert problem["errors"][0]["field"] == "line 2.amount_rupiah"
        async with http.get(f"{url}/999999", headers=ADMIN) as response:
            assert response.status == 404


async def test_metrics_parse_with_the_prometheus_parser(gateway_server, bills):
    for n in range(3):
        await pay(gateway_server, bills, n, regency_code="6104")
    observe_response("snap", "2002500")
    observe_response("snap", "2002500")
    observe_response("iso8583", "00")
    async with aiohttp.ClientSession() as http:
        async with http.get(gateway_server.url + "/api/v1/coverage") as response:
            assert response.status == 200
        async with http.get(gateway_server.url + "/no/such/page") as response:
            assert response.status == 404
        async with http.get(gateway_server.url + "/metrics") as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain")
            text = await response.text()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
    assert samples[("kanal_adapter_responses_total", (("adapter", "snap"), ("code", "2002500")))] == 2
    assert samples[("kanal_adapter_responses_total", (("adapter", "iso8583"), ("code", "00")))] == 1
    assert samples[("kanal_http_responses_total", (("prefix", "/api"), ("status", "200")))] == 1
    assert samples[("kanal_http_responses_total", (("prefix", "unmatched"), ("status", "404")))] == 1
    assert samples[("kanal_posting_seconds_count", (("operation", "pay"), ("outcome", "posted")))] == 3
    assert families["kanal_posting_batch_size"].type == "histogram"
    assert samples[("kanal_posting_batch_size_count", ())] >= 1
    assert samples[("kanal_posting_batch_size_sum", ())] == 3  # every payment went through some batch
    assert samples[("kanal_coverage_protected", (("regency", "Ketapang"), ("regency_code", "6104")))] == 6
    ketapang = (("regency", "Ketapang"), ("regency_code", "6104"))
    workforce = samples[("kanal_coverage_workforce", ketapang)]
    assert samples[("kanal_coverage_ratio", ketapang)] == 6 / workforce  # exact, not 0 basis points / 10,000
    assert samples[("kanal_province_coverage_target_ratio", ())] == 0.5956
    assert samples[("kanal_outbox_events", ())] >= 6
    if "kanal_outbox_backlog_events" in families:
        # No callback endpoint is registered: no event waits for the relay
        # (it counted every event ever written, reading the whole outbox).
        assert samples[("kanal_outbox_backlog_events", ())] == 0
        assert samples[("kanal_outbox_lag_seconds", ())] == 0
    if "kanal_callback_deliveries" in families:  # callbacks installed: their gauges are there too
        assert families["kanal_callback_deliveries"].type == "gauge"


async def test_readiness_fails_while_postgresql_is_unreachable(admin_url, database_url, clock):
    """Its own database, its own gateway: the other tests never notice."""
    gateway = Gateway(settings=test_settings(), database_url=database_url, clock=clock)
    await gateway.start(migrate_first=False)
    name = urlsplit(database_url).path.lstrip("/")
    admin = await asyncpg.connect(admin_url)
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(gateway.url + "/readyz") as response:
                assert response.status == 200
            # The database stops accepting connections and every session is cut.
            await admin.execute(f'alter database "{name}" allow_connections false')
            await admin.execute("select pg_terminate_backend(pid) from pg_stat_activity where datname = $1", name)
            # Every answer now is "not ready". (The first one can be a 500: a pool
            # connection cut mid-operation raises asyncpg's InternalClientError,
            # which readyz does not catch yet; see docs/ops.md.)
            statuses = []
            for _ in range(3):
                async with http.get(gateway.url + "/readyz") as response:
                    statuses.append(response.status)
                    body = await response.json()
            assert all(status >= 500 for status in statuses), statuses
            assert statuses[-1] == 503 and body["status"] == "unavailable", body
            async with http.get(gateway.url + "/healthz") as response:
                assert response.status == 200  # alive, just not ready
            await admin.execute(f'alter database "{name}" allow_connections true')
            async with http.get(gateway.url + "/readyz") as response:
                assert response.status == 200
    finally:
        await admin.execute(f'alter database "{name}" allow_connections true')
        await admin.close()
        await gateway.stop()


async def _summary_health(http, server) -> dict:
    async with http.get(server.url + "/ops/summary") as response:
        assert response.status == 200
        return (await response.json())["health"]


async def test_summary_without_a_dashboard_answers_the_due_check_not_the_previous_one(gateway_server, bills):
    """No /ops/stream listener, so no sampler: a read of /ops/summary whose
    verdicts are due waits for the fresh run instead of answering the last."""
    from gateway.ops.http import ops_hub_key

    hub = gateway_server.gateway.app[ops_hub_key]
    hub.health_interval_ms = 200
    first = await pay(gateway_server, bills, 1)
    async with aiohttp.ClientSession() as http:
        health = await _summary_health(http, gateway_server)
        assert health["status"] == "ok"
        async with tampering(gateway_server.pool) as conn:
            amount = await conn.fetchval("select amount_rupiah from payments where id = $1", first.payment_id)
            await conn.execute("update payments set amount_rupiah = 1 where id = $1", first.payment_id)
        await asyncio.sleep(hub._health_wait_s + 0.05)  # the verdicts are due
        health = await _summary_health(http, gateway_server)
        assert health["status"] == "violation", health
        assert health["stale"] is False
        assert dt.datetime.fromisoformat(health["next_check_at"]) > dt.datetime.fromisoformat(health["checked_at"])
        async with tampering(gateway_server.pool) as conn:
            await conn.execute("update payments set amount_rupiah = $2 where id = $1", first.payment_id, amount)
        await asyncio.sleep(hub._health_wait_s + 0.05)
        health = await _summary_health(http, gateway_server)
        assert health["status"] == "ok", health
    assert hub._listeners == set()  # nobody listened: the reads did the checking


async def test_summary_answers_the_previous_verdicts_as_stale_when_the_check_is_slow(database_url, gateway_server, bills):
    from gateway.ops.http import ops_hub_key

    hub = gateway_server.gateway.app[ops_hub_key]
    hub.health_interval_ms = 200
    hub.fresh_health_wait_ms = 100
    await pay(gateway_server, bills, 1)
    async with aiohttp.ClientSession() as http:
        good = await _summary_health(http, gateway_server)
        assert good["status"] == "ok"
        await asyncio.sleep(hub._health_wait_s + 0.05)
        blocker = await asyncpg.connect(database_url)
        tx = blocker.transaction()
        await tx.start()
        await blocker.execute("lock table postings in access exclusive mode")
        try:
            health = await _summary_health(http, gateway_server)
            run = hub._health_task
            again = await _summary_health(http, gateway_server)
            assert hub._health_task is run  # the second read waits on the same run, starts none
        finally:
            await tx.rollback()
            await blocker.close()
        for h in (health, again):
            assert h["stale"] is True
            assert h["status"] == "ok" and h["checked_at"] == good["checked_at"]
        await asyncio.wait_for(run, 30)
