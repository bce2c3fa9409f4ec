"""The set-based province billing issues exactly what `submit_wage_report`
issues, employer by employer: same payment codes, totals, lines and late fees."""

from __future__ import annotations

import asyncio
import datetime as dt

import asyncpg

from bank_adapters.base import PayCommand, PayOutcome
from bank_adapters.registry import load_adapters
from gateway.domain.periods import WIB, Period
from gateway.runtime import prepare_database
from gateway.service import employers as employer_service
from gateway.service.payments import PaymentsService
from gateway.sim import billing, population
from gateway.store import database

PERIOD = Period(2025, 8)
BILLS_SQL = """
    select b.payment_code, b.npp, b.kind, p.kpj, b.period, b.due_date, b.expires_at, b.total_rupiah, b.line_count, b.status
      from bills b left join participants p on p.id = b.participant_id order by b.payment_code"""
LINES_SQL = """
    select b.payment_code, l.line_no, l.npp, p.kpj, l.program, l.basis_rupiah, l.employer_rupiah, l.worker_rupiah,
           l.government_rupiah, s.payment_code as source, l.late_fee_months
      from bill_lines l join bills b on b.id = l.bill_id left join participants p on p.id = l.participant_id
      left join bills s on s.id = l.late_fee_source_bill_id order by b.payment_code, l.line_no"""
OUTBOX_SQL = "select topic, npp, payload from outbox order by npp, payload->>'payment_code', topic, payload::text"


async def _seeded(url: str, province: population.Province):
    await prepare_database(url, load_adapters())
    pool = await database.create_pool(url, size_min=1, size_max=2)
    await population.seed_province(pool, province, baseline_coverage_basis_points=3163, as_of=dt.date(2025, 9, 1))
    return pool


async def _by_service(pool, period: Period, now: dt.datetime) -> None:
    for npp in [r["npp"] for r in await pool.fetch("select npp from employers order by npp")]:
        async with pool.acquire() as conn, conn.transaction():
            employer = await conn.fetchrow("select * from employers where npp = $1", npp)
            await employer_service.submit_wage_report(conn, employer, str(period), {}, now, 90)


async def _pay_every_third_pu_bill(pool, at: dt.datetime) -> None:
    payments = PaymentsService(pool, clock=lambda: at)
    try:
        rows = await pool.fetch("select payment_code, total_rupiah from bills where kind = 'PU' order by payment_code")
        for n, row in enumerate(rows[::3]):
            result = await payments.pay(PayCommand(row["payment_code"], row["total_rupiah"], "test:bank", f"late-{n}"))
            assert result.outcome == PayOutcome.POSTED
    finally:
        await payments.close()


async def test_set_based_billing_equals_the_wage_report_use_case_including_late_fees(fresh_database):
    """5,000 workers billed employer by employer through the use case, and the
    same province billed set-based in two, then three chunks side by side:
    the same bills (payment codes included), lines and events."""
    province = population.plan_province(5_000, seed=4, baseline_coverage_basis_points=3163)
    plan_again = population.plan_province(5_000, seed=4, baseline_coverage_basis_points=3163)
    service_pool = await _seeded(await fresh_database(), province)
    set_pool = await _seeded(await fresh_database(), plan_again)
    try:
        first = dt.datetime(2025, 9, 2, 8, tzinfo=WIB)
        await _by_service(service_pool, PERIOD, first)
        billed = await billing.bill_province(set_pool, PERIOD, first, connections=2)
        assert billed.bills == await set_pool.fetchval("select count(*) from bills") > 2_000
        # A month later every PU bill is past its deadline (2025-09-15) and carries a late fee:
        # those still open, and every third one, paid late on 2025-10-18, alike.
        paid_late = dt.datetime(2025, 10, 18, 8, tzinfo=WIB)
        for pool in (service_pool, set_pool):
            await _pay_every_third_pu_bill(pool, paid_late)
        later = dt.datetime(2025, 10, 20, 8, tzinfo=WIB)
        await _by_service(service_pool, PERIOD + 1, later)
        await billing.bill_province(set_pool, PERIOD + 1, later, connections=3)
        for sql in (BILLS_SQL, LINES_SQL, OUTBOX_SQL):
            expected = [tuple(r) for r in await service_pool.fetch(sql)]
            actual = [tuple(r) for r in await set_pool.fetch(sql)]
            assert actual == expected
        assert await set_pool.fetchval("select count(*) from bill_lines where program = 'DENDA'") > 0
        assert await set_pool.fetchval(
            """select count(*) from bill_lines l join bills s on s.id = l.late_fee_source_bill_id
                where l.program = 'DENDA' and s.status = 'paid'"""
        ) > 0
        # Billing again issues nothing twice.
        again = await billing.bill_province(set_pool, PERIOD + 1, later, connections=2)
        assert again.bills == 0
    finally:
        await service_pool.close()
        await set_pool.close()


async def test_two_runs_of_the_same_month_at_once_bill_each_worker_once(fresh_database):
    """Two province runs for one month at once (a retried job, two operators):
    the unique indexes on bills refuse the second bill, whichever chunk loses,
    and a third run afterwards completes what a refused chunk left."""
    province = population.plan_province(2_000, seed=5, baseline_coverage_basis_points=0)
    pool = await _seeded(await fresh_database(), province)
    try:
        now = dt.datetime(2025, 9, 2, 8, tzinfo=WIB)
        runs = await asyncio.gather(
            billing.bill_province(pool, PERIOD, now, connections=2),
            billing.bill_province(pool, PERIOD, now, connections=2),
            return_exceptions=True,
        )
        assert all(isinstance(r, (billing.Billed, asyncpg.UniqueViolationError)) for r in runs), runs
        await billing.bill_province(pool, PERIOD, now, connections=1)
        bills = await pool.fetchrow(
            """select count(*) filter (where kind = 'PU') as pu, count(*) filter (where kind = 'BPU') as bpu,
                      count(distinct participant_id) filter (where kind = 'BPU') as bpu_workers
                 from bills where period = $1""",
            str(PERIOD),
        )
        informal = [e for e in province.employers if e.kind == "informal"]
        assert bills["pu"] == len(province.employers) - len(informal)
        assert bills["bpu"] == bills["bpu_workers"] == sum(e.workers for e in informal)
        lines_per_worker = await pool.fetch(
            """select distinct count(*) as n from bill_lines l join bills b on b.id = l.bill_id
                where b.period = $1 group by l.participant_id""",
            str(PERIOD),
        )
        assert {r["n"] for r in lines_per_worker} <= {2, 3, 5}  # one set of lines per worker, never two
    finally:
        await pool.close()
