"""Settlement at scale: importing one day's statement reads that day's
payments, not every payment ever made (migration 0019).

Without an index on `posted_at` and `reversed_at`, the lookup of a
statement's payments read the whole payments table on every import, so an
import's cost grew with the ledger's age, not with the file. The test fills
the ledger as months of traffic leave it: 120 days of payments from 5,000
employers, one in 97 reversed the next day (an UPDATE, whose dead row vacuum
then hands to later payments), and today's payments landing in those holes.
It counts, with PostgreSQL's own per-transaction block counters (not
timing), the blocks of `payments` and its indexes that a day's lookup
reads. Each control drops one of the two indexes inside a transaction that
is rolled back: then that half of the lookup reads the whole table.
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
REVERSED_EVERY = 97  # one payment in 97 is reversed the day after it was posted

_DAY = """
insert into payments (channel, idempotency_key, bill_id, payment_code, npp, amount_rupiah, bank_reference,
                      status, posted_at)
select 'snap:OLDBANK', $3 || '-' || g, $4::bigint + g, lpad(($4::bigint + g)::text, 11, '0'), 'NPP-' || (g % 5000),
       100000 + g, 'OLD' || g, 'posted', $1::timestamptz + (g - 1) * (interval '1 day' / $2::int)
  from generate_series(1, $2::int) g
"""

_REVERSE_THE_DAY = """
update payments set status = 'reversed', reversed_at = posted_at + interval '1 day'
 where channel = 'snap:OLDBANK' and posted_at >= $1 and posted_at < $1 + interval '1 day' and bill_id % $2 = 0
"""

_EDGES = """
insert into payments (channel, idempotency_key, bill_id, payment_code, npp, amount_rupiah, bank_reference,
                      status, posted_at)
values ('snap:OLDBANK', 'EDGE-before', 200000001, '99999999991', 'NPP-1', 1, 'EDGE1', 'posted', $1::timestamptz - interval '1 microsecond'),
       ('snap:OLDBANK', 'EDGE-first', 200000002, '99999999992', 'NPP-2', 2, 'EDGE2', 'posted', $1::timestamptz),
       ('snap:OLDBANK', 'EDGE-after', 200000003, '99999999993', 'NPP-3', 3, 'EDGE3', 'posted', $2::timestamptz)
"""

_PAYMENT_RELATIONS = """
select c.oid from pg_class c
 where c.oid = 'payments'::regclass or c.oid in (select indexrelid from pg_index where indrelid = 'payments'::regclass)
"""

_BLOCKS_READ = "select sum(pg_stat_get_xact_blocks_fetched(o)) from unnest($1::oid[]) o"


async def _lookup(conn, day: dt.date, *, dropped: str | None = None) -> tuple[list, int, int]:
    """(the day's expected payments, blocks of payments and its indexes the
    lookup read, blocks of the table itself), in a transaction that is
    rolled back; `dropped` names an index to do without."""
    tx = conn.transaction()
    await tx.start()
    try:
        # Parallel workers count their reads in their own backends: one backend.
        await conn.execute("set local max_parallel_workers_per_gather = 0")
        if dropped == "payments_posted_at":
            await conn.execute("drop index payments_posted_at")
        elif dropped == "payments_reversed_at":
            await conn.execute("drop index payments_reversed_at")
        relations = [r["oid"] for r in await conn.fetch(_PAYMENT_RELATIONS)]
        before = await conn.fetchval(_BLOCKS_READ, relations)
        rows = await reconcile.expected_payments(conn, day, day)
        read = await conn.fetchval(_BLOCKS_READ, relations) - before
        held = await conn.fetchval("select pg_relation_size('payments') / 8192")
        return [tuple(r) for r in rows], int(read), int(held)
    finally:
        await tx.rollback()


async def test_a_days_import_reads_that_day_not_the_whole_ledger(pool, clock, paid_ledger):
    day = clock().astimezone(WIB).date()
    day_start, day_end = reconcile.window(day, day)
    async with tampering(pool) as conn:  # history, fast: no bills behind these payments
        for k in range(DAYS, 0, -1):
            start = day_start - dt.timedelta(days=k)
            await conn.execute(_DAY, start, PAYMENTS_PER_DAY, f"OLD{k}", 100_000_000 + k * 10_000)
            await conn.execute(_REVERSE_THE_DAY, start - dt.timedelta(days=1), REVERSED_EVERY)
    await pool.execute("vacuum analyze payments")  # what autovacuum does: the reversals' old rows are free space now
    async with tampering(pool) as conn:  # an ordinary day: its payments land in those holes, all over the table
        await conn.execute(_DAY, day_start, PAYMENTS_PER_DAY, "TODAY", 900_000_000)
        await conn.execute(_REVERSE_THE_DAY, day_start - dt.timedelta(days=1), REVERSED_EVERY)
        await conn.execute(_EDGES, day_start, day_end)
    await pool.execute("analyze payments")

    async with pool.acquire() as conn:
        found, read, held = await _lookup(conn, day)
        no_posted, no_posted_read, _ = await _lookup(conn, day, dropped="payments_posted_at")
        no_reversed, no_reversed_read, _ = await _lookup(conn, day, dropped="payments_reversed_at")
        old_day = day - dt.timedelta(days=60)
        old, old_read, _ = await _lookup(conn, old_day)
        old_control, _, _ = await _lookup(conn, old_day, dropped="payments_posted_at")

    # The same rows with and without each index: the ledger's four payments of
    # the day, its reversal, today's payments, yesterday's reversals, the first
    # instant of the day, and nothing a microsecond outside it.
    assert found == no_posted == no_reversed
    assert old == old_control
    keys = {r[2] for r in found}
    assert {"key-0", "key-1", "key-2", "key-3", "EDGE-first"} <= keys
    assert not keys & {"EDGE-before", "EDGE-after"}
    assert len([r for r in found if r[0] == "credit" and r[2].startswith("TODAY-")]) == PAYMENTS_PER_DAY
    reversed_today = await pool.fetchval(
        "select count(*) from payments where idempotency_key like 'OLD1-%' and status = 'reversed'")
    assert len([r for r in found if r[0] == "debit" and r[2].startswith("OLD1-")]) == reversed_today > 0
    assert len([r for r in old if r[0] == "credit"]) == PAYMENTS_PER_DAY  # reversed or not, posted that day

    # A day 60 days back is read, not the ledger: a few blocks of the table
    # and of its indexes. Today's rows sit in holes all over the table, so its
    # lookup reads at most a block per row found, still not the table. Without
    # either index, that half of the lookup reads every block of the table.
    assert held > 1_000
    assert old_read < held / 10, (old_read, held)
    assert read <= len(found) + 50, (read, len(found), held)
    assert no_posted_read >= held, (no_posted_read, held)
    assert no_reversed_read >= held, (no_reversed_read, held)

    # And the import itself, through the whole path, pairs exactly the day.
    statement = await reconcile.ledger_statement(pool, day, day, channel_prefix="snap:BANKKALBAR",
                                                 statement_ref="STMT-SCALE")
    raw = render(dataclasses.replace(statement, account="BANKKALBAR-SETTLEMENT"), "camt.053")
    summary, created = await reconcile.import_statement(pool, raw, channel_prefix="snap:BANKKALBAR")
    assert created
    assert (summary["matched"], summary["bank_only"], summary["ledger_only"]) == (len(statement.lines), 0, 0)
    assert len(statement.lines) == 2  # key-0 and key-2 (key-1 and key-3 went through ISO 8583)
