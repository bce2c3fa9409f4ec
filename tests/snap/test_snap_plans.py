"""snap_authorize (one round trip per group of signed requests) probes its
tables by key even after they were analyzed empty (snap migration 0005),
read from PostgreSQL's own scan counters: no timing involved."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib

from gateway.store import database

TABLES = ("snap_tokens", "snap_external_ids", "snap_inquiries")
AUTHORIZE_SQL = "select * from snap_authorize($1::bytea[], $2, $3, $4, $5, $6, $7)"
RESET_SQL = "alter function snap_authorize(bytea[], text[], boolean[], date[], text[], text[], text[]) reset enable_seqscan"


async def _scans(pool, conn) -> dict[str, tuple[int, int]]:
    """(sequential, index) scans per table, once `conn`'s backend flushed."""
    before = await pool.fetchval("select sum(seq_scan + coalesce(idx_scan, 0)) from pg_stat_user_tables where relname = 'snap_tokens'")
    await conn.execute("select pg_stat_force_next_flush()")
    for _ in range(200):
        await asyncio.sleep(0.05)
        rows = await pool.fetch(
            "select relname, seq_scan, coalesce(idx_scan, 0) as idx from pg_stat_user_tables where relname = any($1)", list(TABLES)
        )
        counters = {r["relname"]: (r["seq_scan"], r["idx"]) for r in rows}
        if sum(counters["snap_tokens"]) != before:
            return counters
    raise AssertionError("the backend never reported its statistics")


async def _authorize_groups(database_url: str, pool) -> dict[str, int]:
    """Ten groups of 20 payments (unknown tokens: every probe still runs) on
    one connection; the sequential scans they caused per table."""
    n = 20
    one = await database.create_pool(database_url, size_min=1, size_max=1)
    try:
        async with one.acquire() as conn:
            await conn.fetch(AUTHORIZE_SQL, [b"\x00" * 32], ["P"], [True], [dt.date(2025, 9, 1)], ["x"], ["f"], ["1"])
            before = await _scans(pool, conn)
            for group in range(10):
                await conn.fetch(
                    AUTHORIZE_SQL,
                    [hashlib.sha256(f"{group}-{i}".encode()).digest() for i in range(n)],
                    ["BANKKALBAR"] * n, [True] * n, [dt.date(2025, 9, 1)] * n,
                    [f"{group:04d}{i:04d}" for i in range(n)], ["fp"] * n, [f"8800{i:011d}" for i in range(n)],
                )
            after = await _scans(pool, conn)
    finally:
        await one.close()
    assert after["snap_tokens"][1] > before["snap_tokens"][1] or after["snap_tokens"][0] > before["snap_tokens"][0]
    return {t: after[t][0] - before[t][0] for t in TABLES}


async def test_authorize_probes_by_key_after_its_tables_were_analyzed_empty(database_url, pool):
    await pool.execute("vacuum analyze")
    assert await _authorize_groups(database_url, pool) == dict.fromkeys(TABLES, 0)
    # Without the function's setting the same groups scan the token table:
    # what the test guards against.
    await pool.execute(RESET_SQL)
    assert (await _authorize_groups(database_url, pool))["snap_tokens"] > 0
