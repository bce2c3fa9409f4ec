"""Settlement import: a bank statement of N lines, each a paid bill, parsed,
reconciled against the ledger and stored, in rows per second, next to a raw
COPY of the same rows into the same table, same run.

The ledger is built first (N bills paid through the payments service), the
statement is the one a bank that agrees with the ledger would send, in
camt.053 (the heaviest format to read) and CSV.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time

from bank_adapters.base import PayCommand
from bench.common import Server, bpu_bills
from gateway.domain.periods import WIB
from gateway.ops import reconcile
from gateway.ops.statements import parse, render
from gateway.service.payments import PaymentsService
from gateway.store import database

PAY_CONCURRENCY = 32


async def run(server: Server, *, rows: int) -> dict:
    url = await server.new_database("settlement")
    pool = await database.create_pool(url, size_min=1, size_max=8, statement_timeout_ms=600_000)
    payments = PaymentsService(pool)
    try:
        bills = await bpu_bills(pool, rows, npp="SETL0001")
        queue = list(enumerate(bills))

        async def payer() -> None:
            while queue:
                n, (code, amount) = queue.pop()
                await payments.pay(PayCommand(code, amount, "snap:BANKKALBAR", f"SETL-{n}", f"BR{n:09d}"))

        await asyncio.gather(*(payer() for _ in range(PAY_CONCURRENCY)))
        await payments.close()
        today = dt.datetime.now(dt.UTC).astimezone(WIB).date()
        statement = await reconcile.ledger_statement(pool, today, today, statement_ref="BENCH-STMT")
        assert len(statement.lines) == rows, (len(statement.lines), rows)
        results: dict = {"rows": rows}
        for fmt in ("camt.053", "csv"):
            raw = render(statement, fmt)
            started = time.perf_counter()
            summary, created = await reconcile.import_statement(pool, raw, account=f"BENCH-{fmt}")
            seconds = time.perf_counter() - started
            assert created and summary["matched"] == rows, summary
            results[fmt] = {
                "bytes": len(raw),
                "seconds": round(seconds, 3),
                "rows_per_second": round(rows / seconds),
            }
        # Parsing alone, to show where the time goes.
        started = time.perf_counter()
        parse(render(statement, "camt.053"))
        results["camt.053"]["parse_seconds"] = round(time.perf_counter() - started, 3)
        # Baseline: the same lines, already parsed, COPYed into the same table.
        statement_id = summary["id"]
        records = [
            (statement_id, rows + n, line.direction, line.amount_rupiah, line.booked_on, line.bank_reference,
             line.end_to_end_id, line.payment_code, line.remittance)
            for n, line in enumerate(statement.lines, start=1)
        ]
        started = time.perf_counter()
        async with pool.acquire() as conn, conn.transaction():
            await conn.copy_records_to_table(
                "ops_statement_entries", records=records,
                columns=["statement_id", "line_no", "direction", "amount_rupiah", "booked_on", "bank_reference",
                         "end_to_end_id", "payment_code", "remittance"],
            )
        copy_seconds = time.perf_counter() - started
    finally:
        await pool.close()
    copy_rows_s = rows / copy_seconds
    results["copy_seconds"] = round(copy_seconds, 3)
    results["copy_rows_per_second"] = round(copy_rows_s)
    results["ratio_to_copy"] = {fmt: round(results[fmt]["rows_per_second"] / copy_rows_s, 3) for fmt in ("camt.053", "csv")}
    return results
