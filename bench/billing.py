"""Billing N workers of one employer (wage report -> bill lines), in rows per
second, next to a raw COPY of the same rows into the same table, same run."""

from __future__ import annotations

import datetime as dt
import time

from bench.common import Server
from gateway.domain.periods import WIB, Period
from gateway.service import employers as svc
from gateway.store import database


async def run(server: Server, *, workers: int) -> dict:
    url = await server.new_database("billing")
    pool = await database.create_pool(url, size_min=1, size_max=2, statement_timeout_ms=600_000)
    try:
        now = dt.datetime.now(dt.UTC)
        period = Period.from_date(now.astimezone(WIB).date()) - 1
        async with pool.acquire() as conn, conn.transaction():
            await svc.register_employer(conn, "BILL0001", "Bench billing", "6171", "large", 3)
            employer = await conn.fetchrow("select * from employers where npp = 'BILL0001'")
            rows = [
                svc.ParticipantRow(i + 1, f"{60_000_000_000 + i:011d}", f"617101{1 + i % 28:02d}{1 + i % 12:02d}{70 + i % 30:02d}{i % 10000:04d}", f"W{i}", 2_900_000 + (i * 7919) % 20_000_000, "PU")
                for i in range(workers)
            ]
            await svc.insert_participants(conn, employer, rows)
        # Kanal: compute every line from the rate tables and write the bill.
        started = time.perf_counter()
        async with pool.acquire() as conn, conn.transaction():
            bill_id, _ = await svc.submit_wage_report(conn, employer, str(period), {}, now, 90)
        kanal_s = time.perf_counter() - started
        lines = await pool.fetch(
            """select line_no, npp, participant_id, program, basis_rupiah, employer_rupiah, worker_rupiah,
                      government_rupiah, late_fee_source_bill_id, late_fee_months
                 from bill_lines where bill_id = $1 order by line_no""",
            bill_id,
        )
        total = await pool.fetchval("select total_rupiah from bills where id = $1", bill_id)
        # Baseline: the same rows, already computed, COPYed into the same table.
        records = [tuple(r) for r in lines]
        started = time.perf_counter()
        async with pool.acquire() as conn, conn.transaction():
            copy_bill = await conn.fetchval(
                """insert into bills (payment_code, npp, kind, period, due_date, expires_at, total_rupiah, line_count)
                   values ('99999999990', 'BILL0001', 'PU', $1, current_date, now(), $2, $3) returning id""",
                str(period - 1), total, len(records),
            )
            await conn.copy_records_to_table(
                "bill_lines",
                records=[(copy_bill, *r) for r in records],
                columns=["bill_id", "line_no", "npp", "participant_id", "program", "basis_rupiah", "employer_rupiah",
                         "worker_rupiah", "government_rupiah", "late_fee_source_bill_id", "late_fee_months"],
            )
        copy_s = time.perf_counter() - started
    finally:
        await pool.close()
    kanal_rows_s = len(records) / kanal_s
    copy_rows_s = len(records) / copy_s
    return {
        "workers": workers,
        "bill_lines": len(records),
        "kanal_seconds": round(kanal_s, 3),
        "kanal_rows_per_second": round(kanal_rows_s),
        "kanal_workers_per_second": round(workers / kanal_s),
        "copy_seconds": round(copy_s, 3),
        "copy_rows_per_second": round(copy_rows_s),
        "ratio_to_copy": round(kanal_rows_s / copy_rows_s, 3),
    }
