"""When an exchange row may commit without waiting for its WAL flush
(bank_adapters/exchanges.py, `after_durable_write`).

A posted payment's commit waited for the flush, and that flush covers the
external id claim made before it: its exchange row is all that a database
crash could still take, so its group commits without waiting for its own
flush. Every other row waits, and so does any group that holds one. What is
observed is PostgreSQL's own WAL positions: right after a commit that waited,
everything inserted is flushed; right after one that did not, the row's WAL
is usually still unflushed (the WAL writer flushes it within a fraction of a
second, so each side is tried a few times).
"""

from __future__ import annotations

import asyncio

import asyncpg

from bank_adapters.exchanges import ExchangeLog, ExchangeRow

TRIES = 5


def _row(n: int) -> ExchangeRow:
    return ExchangeRow(
        channel="snap", partner_id="BANKKALBAR", service_code="25", path="/snap/v1.0/transfer-va/payment",
        external_id=str(n), request_headers={}, request_body="{}", answered=True, http_status=200,
        response_code="2002500", response_body="{}",
    )


async def _unflushed_after(pool: asyncpg.Pool, record) -> bool:
    """Record, then look at once whether WAL was inserted past the flush."""
    await record()
    return await pool.fetchval("select pg_current_wal_insert_lsn() > pg_current_wal_flush_lsn()")


async def _log(pool: asyncpg.Pool) -> ExchangeLog:
    log = ExchangeLog(pool)
    await log.record(_row(0))  # the table's first row writes more than itself
    return log


async def test_a_posted_payments_row_commits_without_waiting_for_its_flush(pool):
    log = await _log(pool)
    unflushed = [await _unflushed_after(pool, lambda n=n: log.record(_row(n), after_durable_write=True))
                 for n in range(1, TRIES + 1)]
    assert unflushed.count(True) >= TRIES - 1, unflushed  # one try may come after the WAL writer's flush
    # Committed all the same: a bank reading its report right after the answer finds the row.
    assert await pool.fetchval("select count(*) from partner_exchanges") == 1 + TRIES


async def test_any_other_row_waits_for_its_flush_and_so_does_its_group(pool):
    log = await _log(pool)
    alone = [await _unflushed_after(pool, lambda n=n: log.record(_row(n))) for n in range(1, TRIES + 1)]

    async def mixed_group(n: int) -> None:
        # Handed over together, the two rows share one INSERT and one commit.
        await asyncio.gather(log.record(_row(100 + n), after_durable_write=True), log.record(_row(200 + n)))

    mixed = [await _unflushed_after(pool, lambda n=n: mixed_group(n)) for n in range(TRIES)]
    assert alone.count(False) >= TRIES - 1, alone  # one try may see another process's WAL
    assert mixed.count(False) >= TRIES - 1, mixed
    assert await pool.fetchval("select count(*) from partner_exchanges") == 1 + 3 * TRIES
    inserts = await pool.fetch("select count(*) from partner_exchanges group by xmin")
    assert sorted(r["count"] for r in inserts) == [1] * (1 + TRIES) + [2] * TRIES  # each pair in one INSERT
