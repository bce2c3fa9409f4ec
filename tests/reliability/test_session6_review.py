"""Reproducers from the independent review of session 6 (each failed before
its fix).

1. A fold of `rows_max` deltas read every delta in the table (its batch,
   written `id in (subquery)`, was planned as a hash semi-join over a
   sequential scan): draining a backlog cost the square of its size.
2. The coverage folder died on an error asyncpg raises when a session is cut
   mid-statement (InternalClientError, not one of the classes it caught), and
   then `Gateway.stop` re-raised it and never closed the pool.
(Two more findings were about migration 0019's first draft, a BRIN index:
tests/ops/test_settlement_at_scale.py now fills the ledger as reversals and
vacuum leave it, and from 5,000 employers.)
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import asyncpg

from gateway.runtime import Gateway
from tests.conftest import test_settings
from tests.ops.conftest import tampering

_FILL = """insert into coverage_deltas (regency_code, program, segment, last_paid_period, delta)
           select '6171', 'JKK', 'PU', '2024-01', case when g % 2 = 0 then 1 else -1 end
             from generate_series(1, 500000) g"""


async def _a_fold(pool, rows_max: int) -> tuple[int, int]:
    """(deltas moved, tuples of coverage_deltas the fold read)."""
    async with pool.acquire() as conn, conn.transaction():
        moved = await conn.fetchval("select kanal_fold_coverage_deltas($1)", rows_max)
        read = await conn.fetchval(
            """select pg_stat_get_xact_tuples_returned('coverage_deltas'::regclass)
                    + pg_stat_get_xact_tuples_fetched('coverage_deltas'::regclass)"""
        )
        return moved, read


async def test_a_fold_reads_its_batch_not_the_table(pool):
    for _ in range(2):
        async with tampering(pool) as conn:
            await conn.execute(_FILL)
    await pool.execute("vacuum analyze coverage_deltas")
    for _ in range(7):  # past plpgsql's five custom plans: its generic plan too
        moved, read = await _a_fold(pool, 50_000)
        assert moved == 50_000
        assert read <= 3 * moved, f"a fold of {moved} deltas read {read} tuples of coverage_deltas (table: 1,000,000)"


async def test_the_folder_survives_the_database_cutting_its_sessions(admin_url, database_url, clock):
    """Connections refused and every session cut, a few times (as
    tests/ops/test_http.py does to readyz). The folder must still be folding
    afterwards, and Gateway.stop must still shut everything down."""
    gateway = Gateway(settings=test_settings(coverage_fold_interval_ms=10), database_url=database_url, clock=clock)
    await gateway.start(migrate_first=False)
    name = urlsplit(database_url).path.lstrip("/")
    admin = await asyncpg.connect(admin_url)
    try:
        for _ in range(20):
            await admin.execute(f'alter database "{name}" allow_connections false')
            await admin.execute("select pg_terminate_backend(pid) from pg_stat_activity where datname = $1", name)
            await asyncio.sleep(0.1)
            await admin.execute(f'alter database "{name}" allow_connections true')
            await asyncio.sleep(0.1)
            assert not gateway.coverage_folder.done(), gateway.coverage_folder.exception()
        # Still folding: a delta written now is folded within a few intervals.
        async with tampering(gateway.pool) as conn:
            await conn.execute(
                "insert into coverage_deltas (regency_code, program, segment, last_paid_period, delta)"
                " values ('6171', 'JKK', 'PU', '2024-01', 1)"
            )
        for _ in range(200):
            if await gateway.pool.fetchval("select count(*) from coverage_deltas") == 0:
                break
            await asyncio.sleep(0.05)
        assert await gateway.pool.fetchval("select count(*) from coverage_deltas") == 0
    finally:
        await admin.execute(f'alter database "{name}" allow_connections true')
        await admin.close()
        await gateway.stop()
    assert gateway.pool.is_closing()
