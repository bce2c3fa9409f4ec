"""Settlement import: a bank statement of N lines, each a paid bill, parsed,
reconciled against the ledger and stored, in rows per second, next to a raw
COPY of the same rows into the same table, same run.

The ledger is built first (N bills paid through the payments service), the
statement is the one a bank that agrees with the ledger would send, in
camt.053 (the heaviest format to read) and CSV.

Each measure is taken `REPEATS` times, interleaved (camt.053 import, CSV
import, raw COPY), and the median is reported: on a shared machine one run
is noise. A one-line statement in each format is read first, so that no
measure includes importing the camt bindings (once per process). Every repeat imports a new statement (its own id, its lines
rotated by one, so the file differs), which is still fully matched.

CPU per 1,000 rows (this process, and the embedded PostgreSQL) is reported
too, summed over the repeats: unlike rows/s it hardly moves when other work
shares the machine, and it shows which side the time is spent on.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import statistics
import time
from contextlib import contextmanager

from bank_adapters.base import PayCommand
from bench.common import Server, bpu_bills, postgres_cpu_s
from gateway.domain.periods import WIB
from gateway.ops import reconcile
from gateway.ops.statements import parse, render
from gateway.service.payments import PaymentsService
from gateway.store import database

PAY_CONCURRENCY = 32
REPEATS = 7
FORMATS = ("camt.053", "csv", "camt.053 read whole")  # the last: streaming off, for comparison
ENTRY_COLUMNS = ["statement_id", "line_no", "direction", "amount_rupiah", "booked_on", "bank_reference",
                 "end_to_end_id", "payment_code", "remittance"]


@contextmanager
def measured(server: Server, wall: list[float], cpu: dict[str, float]):
    """Wall seconds into `wall`; this process's and PostgreSQL's CPU seconds
    added to `cpu` (PostgreSQL read outside the process clock: it scans /proc)."""
    postgres_before = postgres_cpu_s(server)
    process_before = time.process_time()
    started = time.perf_counter()
    yield
    wall.append(time.perf_counter() - started)
    cpu["process"] += time.process_time() - process_before
    cpu["postgres"] += postgres_cpu_s(server) - postgres_before


async def raw_copy(server: Server, conn, records: list[tuple], wall: list[float], cpu: dict[str, float]) -> None:
    """COPY and commit, measured, without the statement-level check Kanal's
    import relies on since migration 0014 (its transition table costs a raw
    COPY about 10 %, which would flatter the ratio). The table's foreign key
    to its statement stays, as before 0014. The trigger is turned back on
    before any import runs again."""
    await conn.execute("alter table ops_statement_entries disable trigger ops_statement_entries_references")
    try:
        with measured(server, wall, cpu):
            async with conn.transaction():
                await conn.copy_records_to_table("ops_statement_entries", records=records, columns=ENTRY_COLUMNS)
    finally:
        await conn.execute("alter table ops_statement_entries enable trigger ops_statement_entries_references")


def per_thousand_rows(cpu: dict[str, float], rows: int) -> dict:
    return {f"{side}_cpu_ms_per_1000_rows": round(seconds * 1000 * 1000 / rows, 2) for side, seconds in cpu.items()}


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
        seconds: dict[str, list[float]] = {fmt: [] for fmt in FORMATS}
        parse_seconds: dict[str, list[float]] = {fmt: [] for fmt in FORMATS}
        copy_seconds: list[float] = []
        cpu = {what: {"process": 0.0, "postgres": 0.0} for what in (*FORMATS, "copy")}
        for fmt in FORMATS:
            parse(render(dataclasses.replace(statement, lines=statement.lines[:1]), fmt.split()[0]))  # imports, once
        sizes = {}
        for repeat in range(REPEATS):
            lines = statement.lines[repeat:] + statement.lines[:repeat]
            variant = dataclasses.replace(statement, statement_ref=f"BENCH-STMT-{repeat}", lines=lines)
            for fmt in FORMATS:
                file_format, streamed = fmt.split()[0], not fmt.endswith("read whole")
                raw = render(variant, file_format)
                if not streamed:
                    raw = raw.replace(b"<Id>BENCH-STMT-", b"<Id>WHOLE-STMT-")  # a statement of its own
                sizes[fmt] = len(raw)
                with measured(server, seconds[fmt], cpu[fmt]):
                    summary, created = await reconcile.import_statement(pool, raw, account=f"BENCH-{fmt}",
                                                                        streamed=streamed)
                assert created and summary["matched"] == rows, summary
                # Parsing alone, to show where the time goes.
                started = time.perf_counter()
                parse(raw)
                parse_seconds[fmt].append(time.perf_counter() - started)
            # Baseline: the same lines, already parsed, COPYed into the same table.
            records = [
                (summary["id"], rows + n, line.direction, line.amount_rupiah, line.booked_on, line.bank_reference,
                 line.end_to_end_id, line.payment_code, line.remittance)
                for n, line in enumerate(lines, start=1)
            ]
            async with pool.acquire() as conn:
                await raw_copy(server, conn, records, copy_seconds, cpu["copy"])
    finally:
        await pool.close()
    copy_median = statistics.median(copy_seconds)
    results: dict = {"rows": rows, "repeats": REPEATS, "ratio_to_copy": {}}
    for fmt in FORMATS:
        median = statistics.median(seconds[fmt])
        results["ratio_to_copy"][fmt] = round(copy_median / median, 3)
        results[fmt] = {
            "bytes": sizes[fmt],
            "seconds": round(median, 3),
            "rows_per_second": round(rows / median),
            "parse_seconds": round(statistics.median(parse_seconds[fmt]), 3),
            "runs_seconds": [round(s, 3) for s in seconds[fmt]],
            **per_thousand_rows(cpu[fmt], rows * REPEATS),
        }
    results["copy_seconds"] = round(copy_median, 3)
    results["copy_runs_seconds"] = [round(s, 3) for s in copy_seconds]
    results["copy_rows_per_second"] = round(rows / copy_median)
    results["copy_cpu"] = per_thousand_rows(cpu["copy"], rows * REPEATS)
    copy_cpu_s = sum(cpu["copy"].values())
    # Same comparison in CPU (both sides together), steadier on a shared machine.
    results["cpu_ratio_to_copy"] = {fmt: round(copy_cpu_s / sum(cpu[fmt].values()), 3) for fmt in FORMATS}
    return results
