"""Each ledger invariant check catches a deliberately corrupted row and names it."""

from __future__ import annotations

from gateway.ops.checks import CHECK_NAMES, OK, SKIPPED, VIOLATION, Limits, run_checks
from tests.ops.conftest import tampering


async def check(pool, name: str, **limits):
    report = await run_checks(pool, Limits(**limits), only=[name])
    (result,) = report.checks
    return result


async def test_a_healthy_ledger_passes_every_check(pool, paid_ledger):
    report = await run_checks(pool)
    assert [c.name for c in report.checks] == list(CHECK_NAMES)
    for result in report.checks:
        assert result.verdict in (OK, SKIPPED), result
        assert result.rows == []
    assert report.healthy and report.violations == []


async def test_entries_balance_names_the_unbalanced_entry(pool, paid_ledger):
    entry_id = paid_ledger.payments[1].journal_entry_id
    async with tampering(pool) as conn:
        posting_id = await conn.fetchval("select min(id) from postings where entry_id = $1", entry_id)
        await conn.execute("update postings set amount_rupiah = amount_rupiah + 1 where id = $1", posting_id)
    result = await check(pool, "entries_balance")
    assert result.verdict == VIOLATION
    assert result.rows_total == 1
    assert result.rows[0]["entry_id"] == entry_id and result.rows[0]["sum_rupiah"] == 1


async def test_entries_balance_names_an_entry_with_a_single_posting(pool, paid_ledger):
    entry_id = paid_ledger.payments[0].journal_entry_id
    async with tampering(pool) as conn:
        keep = await conn.fetchval("select min(id) from postings where entry_id = $1", entry_id)
        await conn.execute("delete from postings where entry_id = $1 and id <> $2", entry_id, keep)
    result = await check(pool, "entries_balance")
    assert [row["entry_id"] for row in result.rows] == [entry_id]
    assert result.rows[0]["postings"] == 1


async def test_trial_balance_names_the_postings_carrying_the_difference(pool, paid_ledger):
    entry_id = paid_ledger.payments[2].journal_entry_id
    async with tampering(pool) as conn:
        posting_id = await conn.fetchval(
            "select id from postings where entry_id = $1 order by id desc limit 1", entry_id
        )
        await conn.execute("delete from postings where id = $1", posting_id)
    result = await check(pool, "trial_balance")
    assert result.verdict == VIOLATION
    assert result.figures["total_rupiah"] != 0
    assert {row["entry_id"] for row in result.rows} == {entry_id}
    assert posting_id not in {row["posting_id"] for row in result.rows}
    # Every offending posting is counted, however few are listed (the audit
    # of session 8: rows_total was the number listed, 0 with rows_max=0).
    carrying = len(result.rows)
    assert carrying >= 2 and result.rows_total == carrying
    for rows_max in (1, 0):
        capped = await check(pool, "trial_balance", rows_max=rows_max)
        assert (len(capped.rows), capped.rows_total) == (rows_max, carrying)


async def test_payment_equals_bill_names_the_payment(pool, paid_ledger):
    payment = paid_ledger.payments[0]
    async with tampering(pool) as conn:
        await conn.execute("update payments set amount_rupiah = amount_rupiah - 500 where id = $1", payment.payment_id)
    result = await check(pool, "payment_equals_bill")
    assert result.verdict == VIOLATION
    assert result.rows == [
        {
            "payment_id": payment.payment_id,
            "payment_code": payment.payment_code,
            "npp": paid_ledger.bills[0].npp,
            "bill_id": paid_ledger.bills[0].bill_id,
            "amount_rupiah": payment.amount_rupiah - 500,
            "bill_total_rupiah": payment.amount_rupiah,
            "bill_status": "paid",
        }
    ]


async def test_bill_paid_once_names_a_bill_paid_twice(pool, paid_ledger):
    bill = paid_ledger.bills[1]
    async with tampering(pool) as conn:
        await conn.execute("drop index payments_one_standing_per_bill")
        second = await conn.fetchval(
            """insert into payments (channel, idempotency_key, bill_id, payment_code, npp, amount_rupiah, status)
               values ('snap:OTHER', 'dup-1', $1, $2, $3, $4, 'posted') returning id""",
            bill.bill_id, bill.payment_code, bill.npp, bill.total_rupiah,
        )
    result = await check(pool, "bill_paid_once")
    assert result.verdict == VIOLATION
    assert result.rows_total == 1
    row = result.rows[0]
    assert row["bill_id"] == bill.bill_id and row["standing_payments"] == 2
    assert row["payment_ids"] == [paid_ledger.payments[1].payment_id, second]


async def test_bill_paid_once_names_a_paid_bill_without_payment(pool, paid_ledger):
    # The reversed payment's bill went back to open; mark it paid again by hand.
    bill = paid_ledger.bills[3]
    async with tampering(pool) as conn:
        await conn.execute("update bills set status = 'paid' where id = $1", bill.bill_id)
    result = await check(pool, "bill_paid_once")
    assert [(r["bill_id"], r["standing_payments"]) for r in result.rows] == [(bill.bill_id, 0)]


async def test_funds_equal_lines_names_the_payment_and_the_funds(pool, paid_ledger):
    # Move 100 rupiah from JKK to JKM inside one entry: it still balances, the
    # trial balance is still zero, the payment still equals its bill.
    payment = paid_ledger.payments[0]
    async with tampering(pool) as conn:
        for code, delta in (("fund:JKK", 100), ("fund:JKM", -100)):
            await conn.execute(
                """update postings set amount_rupiah = amount_rupiah + $3
                    where entry_id = $1 and account_id = (select id from accounts where code = $2)""",
                payment.journal_entry_id, code, delta,
            )
    report = await run_checks(pool, only=["entries_balance", "trial_balance", "funds_equal_lines"])
    verdicts = {c.name: c.verdict for c in report.checks}
    assert verdicts == {"entries_balance": OK, "trial_balance": OK, "funds_equal_lines": VIOLATION}
    rows = report.checks[2].rows
    assert [(r["payment_id"], r["account"], r["ledger_rupiah"] - r["billed_rupiah"]) for r in rows] == [
        (payment.payment_id, "fund:JKK", 100),
        (payment.payment_id, "fund:JKM", -100),
    ]


async def test_funds_equal_lines_sees_a_line_added_to_a_paid_bill(pool, paid_ledger):
    bill = paid_ledger.bills[2]
    async with tampering(pool) as conn:
        await conn.execute(
            """insert into bill_lines (bill_id, line_no, npp, participant_id, program, basis_rupiah,
                                       employer_rupiah, worker_rupiah, government_rupiah)
               select bill_id, 999, npp, participant_id, 'JP', 1, 7000, 0, 0
                 from bill_lines where bill_id = $1 and program = 'JP' limit 1""",
            bill.bill_id,
        )
    result = await check(pool, "funds_equal_lines")
    assert [(r["bill_id"], r["account"], r["billed_rupiah"] - r["ledger_rupiah"]) for r in result.rows] == [
        (bill.bill_id, "fund:JP", -7000)
    ]


async def test_coverage_counters_names_the_bucket(pool, paid_ledger):
    async with tampering(pool) as conn:
        row = await conn.fetchrow(
            """select participant_id, program, regency_code, segment, last_paid_period
                 from participant_coverage where last_paid_period is not null order by participant_id limit 1"""
        )
        await conn.execute(
            "update participant_coverage set last_paid_period = null where participant_id = $1 and program = $2",
            row["participant_id"], row["program"],
        )
    result = await check(pool, "coverage_counters")
    assert result.verdict == VIOLATION
    (bad,) = result.rows
    assert (bad["regency_code"], bad["program"], bad["segment"], bad["last_paid_period"]) == (
        row["regency_code"], row["program"], row["segment"], row["last_paid_period"]
    )
    assert bad["counter"] == bad["recount"] + 1


async def test_coverage_counters_sees_a_forged_delta(pool, paid_ledger):
    await pool.execute(
        "insert into coverage_deltas (regency_code, program, segment, last_paid_period, delta) values ('6112', 'JKM', 'PU', '2020-01', 5)"
    )
    result = await check(pool, "coverage_counters")
    assert result.rows == [
        {"regency_code": "6112", "program": "JKM", "segment": "PU", "last_paid_period": "2020-01", "counter": 5, "recount": 0}
    ]


async def test_outbox_lag_names_a_stuck_event(pool, paid_ledger):
    stuck = await pool.fetchval(
        """insert into outbox (topic, npp, payload, created_at)
           values ('payment.posted', 'KB999999', '{}', now() - interval '2 hours') returning id"""
    )
    has_relay = await pool.fetchval("select to_regclass('callback_relay') is not null")
    result = await check(pool, "outbox_lag", outbox_lag_seconds_max=600)
    if not has_relay:
        assert result.verdict == SKIPPED and "callback_relay" in result.detail
        return
    # With no callback endpoint, nothing waits for the relay: not lag.
    assert result.verdict == OK and "no callback endpoints" in result.detail
    await pool.execute(
        """insert into callback_endpoints (owner_kind, owner_id, url, event_types, secret)
           values ('partner', 'BANKKALBAR', 'http://127.0.0.1:9/hook', array['payment.posted'],
                   'whsec_' || repeat('A', 32))"""
    )
    result = await check(pool, "outbox_lag", outbox_lag_seconds_max=600)
    # Everything else is younger than the limit; only the stuck row is named.
    assert result.verdict == VIOLATION
    assert [r["outbox_id"] for r in result.rows] == [stuck]
    assert result.rows[0]["age_seconds"] >= 7200
    # Once the relay has passed it, the lag is gone.
    await pool.execute("update callback_relay set cursor = $1", stuck)
    assert (await check(pool, "outbox_lag", outbox_lag_seconds_max=600)).verdict == OK


async def test_delivery_failure_rate_names_the_failed_deliveries(pool, paid_ledger):
    if not await pool.fetchval("select to_regclass('callback_deliveries') is not null"):
        result = await check(pool, "delivery_failure_rate")
        assert result.verdict == SKIPPED and "callback_deliveries" in result.detail
        return
    endpoint = await pool.fetchval(
        """insert into callback_endpoints (owner_kind, owner_id, url, event_types, secret)
           values ('partner', 'BANKKALBAR', 'http://127.0.0.1:9/hook', array['payment.posted'],
                   'whsec_' || repeat('A', 32)) returning id"""
    )
    events = await pool.fetch("select id, event_id, topic, npp, payload, created_at from outbox order by id limit 10")
    assert len(events) == 10
    ids = []
    for n, event in enumerate(events):
        status = "failed" if n < 2 else "delivered"
        ids.append(await pool.fetchval(
            """insert into callback_deliveries (endpoint_id, outbox_id, event_id, topic, npp, payload, event_at,
                                                sequence, status, attempts, finished_at, last_http_status)
               values ($1, $2, $3, $4, $5, $6, $7, $8, $9, 1, now(), $10) returning id""",
            endpoint, event["id"], event["event_id"], event["topic"], event["npp"], event["payload"],
            event["created_at"], n + 1, status, 503 if status == "failed" else 200,
        ))
    result = await check(pool, "delivery_failure_rate", delivery_failure_basis_points_max=1000)
    assert result.verdict == VIOLATION, result
    assert result.figures["failure_percent"] == "20.00"
    assert [r["delivery_id"] for r in result.rows] == ids[:2]
    assert {r["last_http_status"] for r in result.rows} == {503}
    # Under a more tolerant limit the same figures pass.
    assert (await check(pool, "delivery_failure_rate", delivery_failure_basis_points_max=2000)).verdict == OK
