"""A go-live burst after the empty ledger was analyzed: payments and wage
reports must still find their rows by index, not by reading the whole table
(migrations 0013, 0015 and 0018).

The user-visible symptom was CPU: every payment read every earlier payment,
entry and posting, several times, until autovacuum re-analyzed the grown
tables. The test reads PostgreSQL's own scan counters, so it does not depend
on timing.
"""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from bank_adapters.base import PayCommand, PayOutcome
from gateway.domain.periods import Period
from gateway.service import employers as employer_service
from gateway.service.errors import Conflict
from gateway.service.payments import PaymentsService
from gateway.store import database
from tests.conftest import make_nik

BILL_TABLES = ("bills", "bill_lines")
LEDGER_TABLES = ("payments", "journal_entries", "postings", "reversal_tombstones", "coverage_months")
# What migrations 0013 and 0018 set, removed again (the control).
RESET_SQL = """
    alter function kanal_pay_batch(text[], text[], text[], bigint[], text[], timestamptz[]) reset enable_seqscan;
    alter function kanal_pay(text, text, text, bigint, text, timestamptz) reset enable_seqscan;
    alter function kanal_bill_details(bigint) reset enable_seqscan;
    alter function kanal_check_touched_entries() reset enable_seqscan;
    alter function kanal_check_new_entry() reset enable_seqscan;
"""


async def _reported(pool: asyncpg.Pool, conn: asyncpg.Connection, *, counted: str, inserted: int) -> None:
    """Return once `conn`'s backend has flushed its statistics (it is told to
    flush at its next idle moment; we wait until `counted` shows `inserted`
    rows)."""
    await conn.execute("select pg_stat_force_next_flush()")
    for _ in range(300):
        if await pool.fetchval("select n_tup_ins from pg_stat_user_tables where relname = $1", counted) >= inserted:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the backend never reported its statistics")


async def _scan_counters(
    pool: asyncpg.Pool, conn: asyncpg.Connection, tables, *, counted: str, inserted: int
) -> dict[str, tuple[int, int]]:
    """(sequential scans, index scans) per table once `conn`'s backend has
    flushed its statistics."""
    await _reported(pool, conn, counted=counted, inserted=inserted)
    rows = await pool.fetch(
        "select relname, seq_scan, coalesce(idx_scan, 0) as idx_scan from pg_stat_user_tables where relname = any($1)",
        list(tables),
    )
    return {r["relname"]: (r["seq_scan"], r["idx_scan"]) for r in rows}


async def _burst(database_url: str, pool: asyncpg.Pool, bills: list, clock, first_key: int) -> dict[str, int]:
    """Pay `bills` concurrently over one connection (so one backend's cached
    plans serve them all); return the sequential scans they caused per table."""
    one = await database.create_pool(database_url, size_min=1, size_max=1)
    try:
        async with one.acquire() as conn:
            already = await pool.fetchval("select count(*) from payments")
            before = await _scan_counters(pool, conn, LEDGER_TABLES, counted="payments", inserted=already)
        service = PaymentsService(one, clock=clock)
        results = await asyncio.gather(*(
            service.pay(PayCommand(b.payment_code, b.total_rupiah, "test:BANK", f"k{first_key + n}", f"R{n}"))
            for n, b in enumerate(bills)
        ))
        await service.close()
        assert [r.outcome for r in results] == [PayOutcome.POSTED] * len(bills)
        async with one.acquire() as conn:
            after = await _scan_counters(pool, conn, LEDGER_TABLES, counted="payments", inserted=already + len(bills))
    finally:
        await one.close()
    assert sum(after[t][1] - before[t][1] for t in LEDGER_TABLES) > 0, "the payments used no index at all"
    return {t: after[t][0] - before[t][0] for t in LEDGER_TABLES}


async def test_payments_after_analyzing_an_empty_ledger_scan_no_ledger_table(database_url, pool, bills, clock):
    created = [await bills.create(workers=2) for _ in range(16)]
    await pool.execute("vacuum analyze")  # the ledger is empty: its statistics now say "no rows"

    scans = await _burst(database_url, pool, created[:8], clock, 0)
    assert scans == dict.fromkeys(LEDGER_TABLES, 0)

    # The same burst with the functions' setting removed scans the ledger:
    # this is what the test guards against.
    await pool.execute(RESET_SQL)
    scans = await _burst(database_url, pool, created[8:], clock, 100)
    assert scans["payments"] > 0, scans


async def test_wage_reports_after_analyzing_an_empty_bills_table_scan_no_bill(database_url, pool, clock):
    """Employer after employer reports wages; each report's reads and its
    bills' checks probe by key, whatever the empty bills table's statistics
    said (before 0015 every report read every bill and bill line issued)."""
    period = str(Period.from_date(clock().date()) - 1)
    employers = []
    async with pool.acquire() as conn, conn.transaction():
        for e in range(8):
            npp = f"PLAN{e:04d}"
            await employer_service.register_employer(conn, npp, f"Plan {e}", "6171", "small", 2)
            employer = await conn.fetchrow("select * from employers where npp = $1", npp)
            await employer_service.insert_participants(conn, employer, [
                employer_service.ParticipantRow(
                    n + 1, f"{70_000_000_000 + e * 100 + n:011d}", make_nik(e * 100 + n), f"Worker {n}",
                    3_000_000 + n, "BPU" if n % 2 else "PU")
                for n in range(6)
            ])
            employers.append(employer)
    await pool.execute("vacuum analyze")  # no bill yet: "bills and bill_lines hold no rows"

    one = await database.create_pool(database_url, size_min=1, size_max=1)
    try:
        async with one.acquire() as conn:
            before = await _scan_counters(pool, conn, BILL_TABLES, counted="bills", inserted=0)
            for employer in employers:
                async with conn.transaction():
                    pu, bpu = await employer_service.submit_wage_report(conn, employer, period, {}, clock(), 90)
                assert pu is not None and len(bpu) == 3
            after = await _scan_counters(pool, conn, BILL_TABLES, counted="bills", inserted=8 * 4)
            # The setting is the report's own: the connection's next statements plan freely again,
            # also in a transaction that goes on after a refused report.
            assert await conn.fetchval("select current_setting('enable_seqscan')") == "on"
            async with conn.transaction():
                with pytest.raises(Conflict):
                    await employer_service.submit_wage_report(conn, employers[0], period, {}, clock(), 90)
                assert await conn.fetchval("select current_setting('enable_seqscan')") == "on"
    finally:
        await one.close()
    assert {t: after[t][0] - before[t][0] for t in BILL_TABLES} == {"bills": 0, "bill_lines": 0}
    assert await pool.fetchval("select count(*) from bills") == 32



async def _index_entries_read(pool: asyncpg.Pool, conn: asyncpg.Connection, *, inserted: int) -> dict[str, int]:
    """Index entries read per table, once `conn`'s backend has reported."""
    await _reported(pool, conn, counted="payments", inserted=inserted)
    rows = await pool.fetch(
        """select relname, sum(idx_tup_read)::bigint as read from pg_stat_user_indexes
            where relname = any($1) group by relname""",
        list(LEDGER_TABLES),
    )
    return {r["relname"]: r["read"] for r in rows}


async def test_a_batch_reads_its_own_rows_not_the_ledger(database_url, pool, bills, clock):
    """Set-based batches (migration 0018) join the batch to the ledger. With the
    statistics of an empty ledger the planner may read a whole index once per
    batch or per item instead of probing it by key: the balance check once read
    every posting ever made for each batch. Counted in index entries read, a
    batch must read about its own rows, however many the ledger holds."""
    employer, _, kpjs = await bills.create_employer(workers=100, segment="BPU")
    await bills.report(employer, "", kpjs, bills.default_period())
    created = await pool.fetch(
        "select payment_code, total_rupiah from bills where npp = $1 order by payment_code", employer["npp"]
    )
    assert len(created) == 100
    await pool.execute("vacuum analyze")  # the ledger is empty: its statistics now say "no rows"
    # Tombstones the statistics do not know about (reversals of payments that never came).
    await pool.execute(
        """insert into reversal_tombstones (channel, idempotency_key)
           select 'test:BANK', 'gone' || g from generate_series(1, 2000) g"""
    )

    one = await database.create_pool(database_url, size_min=1, size_max=1)
    try:
        service = PaymentsService(one, clock=clock)

        async def pay(rows, first_key):
            results = await asyncio.gather(*(
                service.pay(PayCommand(r["payment_code"], r["total_rupiah"], "test:BANK", f"k{first_key + n}", "R"))
                for n, r in enumerate(rows)
            ))
            assert [r.outcome for r in results] == [PayOutcome.POSTED] * len(rows)

        await pay(created[:90], 0)  # the ledger grows; its statistics still say "empty"
        async with one.acquire() as conn:
            before = await _index_entries_read(pool, conn, inserted=90)
        await pay(created[90:], 90)
        await service.close()
        async with one.acquire() as conn:
            after = await _index_entries_read(pool, conn, inserted=100)
    finally:
        await one.close()
    read = {t: after.get(t, 0) - before.get(t, 0) for t in LEDGER_TABLES}
    # Ten payments: three postings, one entry and one payment each, read a few
    # times over by the checks. The ledger before them holds 270 postings, 90
    # payments and 2,000 tombstones.
    assert read["postings"] <= 10 * 10, read
    assert read["payments"] <= 10 * 10, read
    assert read["journal_entries"] <= 10 * 10, read
    assert read["reversal_tombstones"] <= 10 * 2, read
