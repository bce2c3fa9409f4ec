"""Payments per second through the payments service (no HTTP), N concurrent
tasks, next to pgbench TPC-B with the same number of clients, same server,
same run."""

from __future__ import annotations

import itertools

from bank_adapters.base import PayCommand, PayOutcome
from bench.common import settle_after_setup, Server, bpu_bills, closed_loop, pgbench_tpcb, postgres_cpu_s
from gateway.service.payments import PaymentsService
from gateway.store import database


async def run(server: Server, *, payments: int, concurrency: int, pgbench_seconds: int) -> dict:
    url = await server.new_database("payments")
    pool = await database.create_pool(url, size_min=concurrency, size_max=concurrency)
    try:
        bills = await bpu_bills(pool, payments)
        await settle_after_setup(pool)
        service = PaymentsService(pool)
        keys = itertools.count()

        async def pay(bill) -> bool:
            code, total = bill
            result = await service.pay(PayCommand(code, total, "bench:BANK", f"k{next(keys)}", "REF"))
            return result.outcome == PayOutcome.POSTED

        cpu_before = postgres_cpu_s(server)
        result = await closed_loop(bills, concurrency, pay)
        kanal_pg_ms = (postgres_cpu_s(server) - cpu_before) * 1000 / max(result.operations, 1)
        posted = await pool.fetchval("select count(*) from payments where status = 'posted'")
    finally:
        await pool.close()
    cpu_before = postgres_cpu_s(server)
    tps, transactions = pgbench_tpcb(server, clients=concurrency, seconds=pgbench_seconds)
    pgbench_pg_ms = (postgres_cpu_s(server) - cpu_before) * 1000 / max(transactions, 1)
    summary = {**result.summary(), "postgres_cpu_ms_per_op": round(kanal_pg_ms, 3)}
    return {
        "concurrency": concurrency,
        "kanal": summary,
        "posted_in_database": posted,
        "pgbench_tpcb_tps": round(tps, 1),
        # PostgreSQL CPU per TPC-B transaction (pgbench's own client CPU not counted).
        "pgbench_postgres_cpu_ms_per_op": round(pgbench_pg_ms, 3) if server.embedded is not None else None,
        "ratio_to_pgbench": round(result.per_second / tps, 3),
    }
