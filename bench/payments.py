"""Payments per second through the payments service (no HTTP), N concurrent
tasks, next to pgbench TPC-B with the same number of clients, same server,
same run.

Measured twice on fresh databases:
- `kanal`: the tables the setup loaded are analyzed, the ledger is left as a
  fresh deployment has it (never analyzed);
- `go_live`: the whole database is analyzed first, the empty ledger included,
  as a `vacuumdb --analyze` after the migrations would. Before migration 0013
  the payment path's cached plans then scanned the ledger tables whole until
  autovacuum re-analyzed them (about 5 x the PostgreSQL CPU per payment).
"""

from __future__ import annotations

import itertools

from bank_adapters.base import PayCommand, PayOutcome
from bench.common import (
    Server,
    bpu_bills,
    closed_loop,
    pgbench_tpcb,
    postgres_cpu_s,
    settle_after_setup,
)
from gateway.service.payments import PaymentsService
from gateway.store import database


async def _measure(server: Server, *, name: str, payments: int, concurrency: int, analyze_everything: bool) -> dict:
    url = await server.new_database(name)
    pool = await database.create_pool(url, size_min=concurrency, size_max=concurrency)
    try:
        bills = await bpu_bills(pool, payments)
        if analyze_everything:
            await pool.execute("vacuum analyze")
        else:
            await settle_after_setup(pool)
        service = PaymentsService(pool)
        keys = itertools.count()

        async def pay(bill) -> bool:
            code, total = bill
            result = await service.pay(PayCommand(code, total, "bench:BANK", f"k{next(keys)}", "REF"))
            return result.outcome == PayOutcome.POSTED

        cpu_before = postgres_cpu_s(server)
        result = await closed_loop(bills, concurrency, pay)
        pg_ms = (postgres_cpu_s(server) - cpu_before) * 1000 / max(result.operations, 1)
        await service.close()
        posted = await pool.fetchval("select count(*) from payments where status = 'posted'")
    finally:
        await pool.close()
    return {**result.summary(), "postgres_cpu_ms_per_op": round(pg_ms, 3), "posted_in_database": posted}


async def run(server: Server, *, payments: int, concurrency: int, pgbench_seconds: int) -> dict:
    kanal = await _measure(server, name="payments", payments=payments, concurrency=concurrency, analyze_everything=False)
    go_live = await _measure(server, name="payments_go_live", payments=payments, concurrency=concurrency,
                             analyze_everything=True)
    cpu_before = postgres_cpu_s(server)
    tps, transactions = pgbench_tpcb(server, clients=concurrency, seconds=pgbench_seconds)
    pgbench_pg_ms = (postgres_cpu_s(server) - cpu_before) * 1000 / max(transactions, 1)
    posted = kanal.pop("posted_in_database")
    return {
        "concurrency": concurrency,
        "kanal": kanal,
        "posted_in_database": posted,
        "go_live": go_live,
        "go_live_ratio_to_kanal": round(go_live["per_second"] / kanal["per_second"], 3) if kanal["per_second"] else None,
        "pgbench_tpcb_tps": round(tps, 1),
        # PostgreSQL CPU per TPC-B transaction (pgbench's own client CPU not counted).
        "pgbench_postgres_cpu_ms_per_op": round(pgbench_pg_ms, 3) if server.embedded is not None else None,
        "ratio_to_pgbench": round(kanal["per_second"] / tps, 3),
    }
