"""Second review of migration 0018 (kanal_pay_batch, kanal_lock_coverage and
the kanal_pay copy), after the fixes of the first review. Each test failed
before its fix (in 0018: the batch locks every item's coverage rows at once,
and kanal_pay reaches every table by key) and is kept as a regression test;
the docstrings describe the defects as found.

`batch` is the statement PostingBatcher sends; `per_item` is the statement it
replaced (kanal_pay through a LATERAL join, tests/reliability/
test_pay_batch_review.py), the control where one is meaningful.
"""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from gateway.domain.periods import WIB, Period
from gateway.store.batching import _BATCH_SQL
from tests.reliability.test_pay_batch_review import (
    PER_ITEM_SQL,
    _until_waiting_on_a_lock,
)

STATEMENTS = {"batch": _BATCH_SQL, "per_item": PER_ITEM_SQL}
CHANNEL = "review2:BANK"


async def _pay(conn: asyncpg.Connection, sql: str, items: list[tuple], now) -> list[asyncpg.Record]:
    """One micro-batch of (bill, key) items, sorted as PostingBatcher sorts
    them: by payment code, then key."""
    items = sorted(items, key=lambda item: (item[0].payment_code, item[1]))
    return await conn.fetch(
        sql,
        [CHANNEL] * len(items),
        [key for _, key in items],
        [bill.payment_code for bill, _ in items],
        [bill.total_rupiah for bill, _ in items],
        ["rrn"] * len(items),
        [now] * len(items),
    )


# ------------------------------------------------------------ deadlock ----


async def test_a_batch_locks_its_kanal_pay_items_coverage_rows_in_the_one_order_too(
    database_url, pool, bills, clock
):
    """docs/ledger.md: "Coverage rows are locked in one order by everyone."
    Each call of kanal_lock_coverage is ordered, but a batch calls it once for
    its plain items and then once more for every item that goes through
    kanal_pay, and those come after *all* plain items, whatever their place
    in the batch. So a batch locks coverage rows in as many ordered phases as
    it has posting kanal_pay items, and the batch as a whole is not ordered.

    Employer E was registered before employer F, so E's worker sorts first.
    Batch 1 pays F's January (plain: F's rows) and E's January twice: under
    the key the bank had reversed before the payment came ("a-stale", a
    tombstone, so that item cannot post) and under the key it paid again
    with ("b-fresh": not the first item of its payment code, so it goes
    through kanal_pay, after the plain items: E's rows second). Batch 2 pays
    E's and F's February, both plain: E's rows, then F's. Batch 1 holds F's
    rows and wants E's, batch 2 holds E's and wants F's: PostgreSQL's
    deadlock detector aborts one of them after deadlock_timeout, and through
    PostingBatcher all its items are retried one by one.

    New in 0018 for this arrangement: before it, a batch locked coverage in
    item (payment-code) order, E's January before F's, like batch 2. (It had
    other cycles then: the first review's.) To make the interleaving certain,
    a third transaction holds the advisory lock of "b-fresh", so batch 1
    stops between its two phases while batch 2 starts."""
    latest = Period.from_date(clock().astimezone(WIB).date()) - 1
    e, e_key, e_kpjs = await bills.create_employer(workers=1)
    f, f_key, f_kpjs = await bills.create_employer(workers=1)
    e_january = await bills.report(e, e_key, e_kpjs, str(latest - 1))
    e_february = await bills.report(e, e_key, e_kpjs, str(latest))
    f_january = await bills.report(f, f_key, f_kpjs, str(latest - 1))
    f_february = await bills.report(f, f_key, f_kpjs, str(latest))
    await pool.execute("insert into accounts (code, kind) values ('clearing:' || $1::text, 'asset')", CHANNEL)
    await pool.execute("insert into reversal_tombstones (channel, idempotency_key) values ($1, 'a-stale')", CHANNEL)
    assert await pool.fetchval(
        """select max(participant_id) from participant_coverage where npp = $1""", e["npp"]
    ) < await pool.fetchval("""select min(participant_id) from participant_coverage where npp = $1""", f["npp"])

    holder = await asyncpg.connect(database_url)
    payers = [await asyncpg.connect(database_url) for _ in range(2)]
    now = clock()
    try:
        await holder.execute("begin")
        await holder.execute("select pg_advisory_xact_lock(hashtext($1), hashtext('b-fresh'))", CHANNEL)
        first = asyncio.create_task(
            _pay(payers[0], _BATCH_SQL, [(f_january, "f-jan"), (e_january, "a-stale"), (e_january, "b-fresh")], now)
        )
        await _until_waiting_on_a_lock(pool, [payers[0].get_server_pid()])
        second = asyncio.create_task(_pay(payers[1], _BATCH_SQL, [(e_february, "e-feb"), (f_february, "f-feb")], now))
        await _until_waiting_on_a_lock(pool, [p.get_server_pid() for p in payers])
        await holder.execute("commit")
        answers = await asyncio.gather(first, second, return_exceptions=True)
    finally:
        for conn in (holder, *payers):
            await conn.close()

    failures = [a for a in answers if isinstance(a, Exception)]
    assert failures == [], failures
    assert sorted(r["outcome"] for r in answers[0]) == ["posted", "posted", "reversed"]
    assert [r["outcome"] for r in answers[1]] == ["posted", "posted"]


# --------------------------------------------------------------- plans ----

# Index entries this transaction read (not yet flushed: exact and immediate).
READ_SQL = """
select c.relname, coalesce(sum(pg_stat_get_xact_tuples_returned(i.indexrelid)), 0)::bigint as n
  from pg_class c join pg_index i on i.indrelid = c.oid
 where c.relname = any($1::text[])
 group by c.relname
"""
GROWING = ["participants", "accounts"]


async def _entries_read(conn: asyncpg.Connection, sql: str, items: list[tuple], now) -> tuple[dict, list[str]]:
    async with conn.transaction():
        before = {r["relname"]: r["n"] for r in await conn.fetch(READ_SQL, GROWING)}
        rows = await _pay(conn, sql, items, now)
        after = {r["relname"]: r["n"] for r in await conn.fetch(READ_SQL, GROWING)}
    return {t: after[t] - before[t] for t in GROWING}, [r["outcome"] for r in rows]


@pytest.mark.parametrize("statement", ["batch", "per_item"])
async def test_kanal_pay_items_find_the_payer_and_accounts_by_key_after_participants_grew(
    statement, database_url, pool, bills, clock
):
    """docs/ledger.md (Group commit, 0018): "Every other table the batch reads
    (bills, bill lines, accounts, participants, coverage) is reached by a
    lookup per row the planner cannot turn into a join ... so a plan cached
    while a table was small still probes by key as it grows." True of the
    plain items' statement, not of the items that go through kanal_pay
    (a bank's retry of a key, a second month of one employer, every item of
    a batch retried alone after a fault): kanal_pay's statements are joins.

    Go-live: participants (and their JHT accounts) are analyzed while few
    employers are registered, the first batches carry replays and second
    months, then more employers register. The connection's cached generic
    plans of kanal_pay then read the whole participants index to find one
    bill's payer (a nested loop whose inner side is the whole index, filtered
    by `pp.id = b.participant_id`: the join in `bills b join employers e ...
    left join participants pp`, in the bill lock and in the replay's answer),
    and, when kanal_pay runs outside the batch's settings (`per_item`, and
    PostingBatcher's retry of each item alone), a hash join over the whole
    accounts index for the postings (`join accounts a on a.code = x.code`):
    one account per worker. Thousands of index entries per payment instead
    of a few, until autovacuum happens to analyze participants and accounts
    (off here for those two tables so it cannot re-plan midway).

    Not new in 0018 (kanal_pay is 0010's, the control fails too); 0018 says
    the batch no longer does it and copies kanal_pay as it was."""
    sql = STATEMENTS[statement]
    await pool.execute("alter table participants set (autovacuum_enabled = off)")
    await pool.execute("alter table accounts set (autovacuum_enabled = off)")
    latest = Period.from_date(clock().astimezone(WIB).date()) - 1
    months = []
    for _ in range(12):
        employer, api_key, kpjs = await bills.create_employer(workers=1)
        months.append((
            await bills.report(employer, api_key, kpjs, str(latest - 1)),
            await bills.report(employer, api_key, kpjs, str(latest)),
        ))
    await pool.execute("insert into accounts (code, kind) values ('clearing:' || $1::text, 'asset')", CHANNEL)
    await pool.execute("vacuum analyze")  # a dozen participants and accounts
    now = clock()
    conn = await asyncpg.connect(database_url)  # one backend: one set of cached plans
    try:
        for i, (january, february) in enumerate(months[:10]):
            # Both months of one employer, and a bank's retry of the first key.
            items = [(january, f"k{i}-jan"), (february, f"k{i}-feb"), (january, f"k{i}-jan")]
            _, outcomes = await _entries_read(conn, sql, items, now)
            assert sorted(outcomes) == ["posted", "posted", "replayed"]
        # Three thousand more workers register (one employer).
        await bills.create_employer(workers=3000)
        january, february = months[10]
        items = [(january, "late-jan"), (february, "late-feb"), (january, "late-jan")]
        read, outcomes = await _entries_read(conn, sql, items, now)
    finally:
        await conn.close()
    assert sorted(outcomes) == ["posted", "posted", "replayed"]
    # A probe per lookup is a few entries per item; 25 per item is generous.
    # Reading a whole index is thousands.
    limit = 25 * 3
    assert read["participants"] <= limit, f"{statement}: {read}"
    assert read["accounts"] <= limit, f"{statement}: {read}"
