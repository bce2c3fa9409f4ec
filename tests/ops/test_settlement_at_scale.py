"""Settlement at scale: importing one day's statement reads that day's
payments, not every payment ever made (migration 0019).

Without an index on `posted_at` and `reversed_at`, the lookup of a
statement's payments read the whole payments table on every import, so an
import's cost grew with the ledger's age, not with the file. The test fills
the ledger with many days of payments and counts, with PostgreSQL's own
per-transaction block counters (not timing), the blocks of `payments` and
its indexes that a day's lookup reads. The control drops the two indexes
inside a transaction that is rolled back: then the lookup reads most of them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from gateway.domain.periods import WIB
from gateway.ops import reconcile
from gateway.ops.statements import render
from tests.ops.conftest import tampering

DAYS = 120
PAYMENTS_PER_DAY = 800
REVERSED_EVERY = 97  # one payment in 97 is reversed a day after it was posted

_FILL = """
insert into payments (channel, idempotency_key, bill_id, payment_code, npp, amount_rupiah, bank_reference,
                      status, posted_at, reversed_at)
select 'snap:OLDBANK', 'OLD-' || g, 100000000 + g, lpad(g::text, 11, '0'), 'NPP-OLD', 100000 + g, 'OLD' || g,
       case when g % $3 = 0 then 'reversed' else 'posted' end, at,
       case when g % $3 = 0 then at + interval '1 day' end
  from generate_series(1, $2::int) g,
       lateral (select $1::timestamptz + (g - 1) * (interval '1 day' / $4::int)) t(at)
"""

_EDGES = """
insert into payments (channel, idempotency_key, bill_id, payment_code, npp, amount_rupiah, bank_reference,
                      status, posted_at)
values ('snap:OLDBANK', 'EDGE-before', 200000001, '99999999991', 'NPP-OLD', 1, 'EDGE1', 'posted', $1::timestamptz - interval '1 microsecond'),
       ('snap:OLDBANK', 'EDGE-first', 200000002, '99999999992', 'NPP-OLD', 2, 'EDGE2', 'posted', $1::timestamptz),
       ('snap:OLDBANK', 'EDGE-after', 200000003, '99999999993', 'NPP-OLD', 3, 'EDGE3', 'posted', $2::timestamptz)
"""

_PAYMENT_RELATIONS = """
select c.oid from pg_class c
 where c.oid = 'payments'::regclass or c.oid in (select indexrelid from pg_index where indrelid = 'payments'::regclass)
"""


async def _lookup(conn, day: dt.date, *, without_indexes: bool) -> tuple[list, int, int]:
    """(the day's expected payments, blocks of payments and its indexes the
    lookup read, blocks of the table itself), in a transaction that is rolled back."""
    tx = conn.transaction()
    await tx.start()
    try:
        # Parallel workers count their reads in their own backends: one backend.
        await conn.execute("set local max_parallel_workers_per_gather = 0")
        if without_indexes:
            await conn.execute("drop index payments_posted_at_brin, payments_reversed_at")
        relations = [r["oid"] for r in await conn.fetch(_PAYMENT_RELATIONS)]
        before = await conn.fetchval("select sum(pg_stat_get_xact_blocks_fetched(o)) from unnest($1::oid[]) o", relations)
        rows = await reconcile.expected_payments(conn, day, day)
        read = await conn.fetchval("select sum(pg_stat_get_xact_blocks_fetched(o)) from unnest($1::oid[]) o", relations) - before
        held = await conn.fetchval("select pg_relation_size('payments') / 8192")
        return [tuple(r) for r in rows], int(read), int(held)
    finally:
        await tx.rollback()


async def test_a_days_import_reads_that_day_not_the_whole_ledger(pool, clock, paid_ledger):
    day = clock().astimezone(WIB).date()
    day_start, day_end = reconcile.window(day, day)
    async with tampering(pool) as conn:  # history, fast: no bills behind these payments
        await conn.execute(_FILL, day_start - dt.timedelta(days=DAYS), DAYS * PAYMENTS_PER_DAY, REVERSED_EVERY,
                           PAYMENTS_PER_DAY)
        await conn.execute(_EDGES, day_start, day_end)
    await pool.execute("vacuum analyze payments")  # what autovacuum does after such a load

    async with pool.acquire() as conn:
        found, read, held = await _lookup(conn, day, without_indexes=False)
        control, control_read, _ = await _lookup(conn, day, without_indexes=True)

    # The same rows either way: the ledger's four payments of the day, its
    # reversal, the old payments reversed on this day, the first instant of
    # the day, and nothing a microsecond outside it.
    assert found == control
    keys = {r[2] for r in found}
    assert {"key-0", "key-1", "key-2", "key-3", "EDGE-first"} <= keys
    assert not keys & {"EDGE-before", "EDGE-after"}
    reversed_today = [r for r in found if r[0] == "debit" and r[2].startswith("OLD-")]
    assert len(reversed_today) >= PAYMENTS_PER_DAY // REVERSED_EVERY - 1
    assert not [r for r in found if r[0] == "credit" and r[2].startswith("OLD-")]  # every old credit is before the day

    # A day of 121 is read, not the ledger: a few block ranges of the table
    # (and of its indexes). The control, without the two indexes, reads
    # every block of the table.
    assert held > 1_000
    assert read < held / 10, (read, held)
    assert control_read >= held, (control_read, held)

    # And the import itself, through the whole path, pairs exactly the day.
    statement = await reconcile.ledger_statement(pool, day, day, channel_prefix="snap:BANKKALBAR",
                                                 statement_ref="STMT-SCALE")
    raw = render(dataclasses.replace(statement, account="BANKKALBAR-SETTLEMENT"), "camt.053")
    summary, created = await reconcile.import_statement(pool, raw, channel_prefix="snap:BANKKALBAR")
    assert created
    assert (summary["matched"], summary["bank_only"], summary["ledger_only"]) == (len(statement.lines), 0, 0)
    assert len(statement.lines) == 2  # key-0 and key-2 (key-1 and key-3 went through ISO 8583)
