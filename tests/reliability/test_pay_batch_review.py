"""Review of migration 0018 (kanal_pay_batch): where the set-based batch did
not behave like kanal_pay applied to each item in order. Each test failed
before its fix, and is kept as a regression test.

Each test runs twice: `batch` is today's statement (the one PostingBatcher
sends), `per_item` is the statement it replaced (kanal_pay applied to each
item through a LATERAL join, gateway/store/batching.py before 0018), the
control. The deadlock and the plan were new in the first draft of 0018
(fixed there: kanal_lock_coverage, and lookups by key only); the reversal
race was older than 0018 and failed both ways (fixed for kanal_pay, the
batch and the reversal alike). The docstrings describe the defects as found.
"""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from bank_adapters.base import PayCommand, PayOutcome, ReverseCommand, ReverseOutcome
from gateway.domain.periods import WIB, Period
from gateway.store.batching import _BATCH_SQL
from tests.reliability.test_races import until_done_or_waiting_on_a_lock

# What PostingBatcher sent before migration 0018, word for word.
PER_ITEM_SQL = """
select t.n, r.*
  from unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::timestamptz[])
       with ordinality as t(channel, idempotency_key, payment_code, amount_rupiah, bank_reference, now, n)
 cross join lateral kanal_pay(t.channel, t.idempotency_key, t.payment_code, t.amount_rupiah,
                              t.bank_reference, t.now) r
 order by t.n
"""
STATEMENTS = {"batch": _BATCH_SQL, "per_item": PER_ITEM_SQL}
CHANNEL = "review:BANK"


async def _pay(conn: asyncpg.Connection, sql: str, bills: list, keys: list[str], now) -> list[asyncpg.Record]:
    """One micro-batch, as PostingBatcher sends it (sorted by payment code)."""
    order = sorted(range(len(bills)), key=lambda i: bills[i].payment_code)
    return await conn.fetch(
        sql,
        [CHANNEL] * len(bills),
        [keys[i] for i in order],
        [bills[i].payment_code for i in order],
        [bills[i].total_rupiah for i in order],
        ["rrn"] * len(bills),
        [now] * len(bills),
    )


async def _until_waiting_on_a_lock(pool: asyncpg.Pool, pids: list[int]) -> None:
    """Return once every backend in `pids` waits on a lock (bounded)."""
    for _ in range(1000):
        waiting = await pool.fetchval(
            "select count(*) from pg_stat_activity where pid = any($1::int[]) and wait_event_type = 'Lock'", pids
        )
        if waiting == len(pids):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the payments never all waited on a lock")


# ------------------------------------------------------------ deadlock ----


@pytest.mark.parametrize("statement", ["batch", "per_item"])
async def test_two_batches_paying_two_months_of_one_employer_do_not_deadlock(
    statement, database_url, pool, bills, clock
):
    """An employer's bank pays two months' bills at once and they land in two
    batches in flight (two gateways, or one gateway's two batches). Both
    bills cover the same workers, so both batches lock the same
    participant_coverage rows.

    kanal_pay locks them in an order that depends only on (participant,
    program), so the second payment queues behind the first. kanal_pay_batch
    locks them in the order the `covering` CTE produces them: a HashAggregate
    over (n, payment_id, period, npp, participant, program), so the order
    differs from payment to payment, and the two batches deadlock. Through
    PostingBatcher that is a batch that fails after deadlock_timeout and all
    of whose items (up to 64) are then retried one by one.

    To make the interleaving certain rather than a matter of timing, a third
    transaction holds every coverage row of the employer while both payments
    start: each payment then waits for it on the first row of its own order,
    and once it commits each takes that row and goes on through the rest. With
    one order for everyone both wait on the same row and simply queue. (With
    today's orders, both start on the same of the 500 rows only by chance,
    about once in 500 runs, and then the test passes.)"""
    sql = STATEMENTS[statement]
    employer, api_key, kpjs = await bills.create_employer(workers=100)
    latest = Period.from_date(clock().astimezone(WIB).date()) - 1
    january = await bills.report(employer, api_key, kpjs, str(latest - 1))
    february = await bills.report(employer, api_key, kpjs, str(latest))
    # The clearing account exists (the bank has paid before), so the two
    # payments do not queue on creating it.
    await pool.execute("insert into accounts (code, kind) values ('clearing:' || $1::text, 'asset')", CHANNEL)

    holder = await asyncpg.connect(database_url)
    payers = [await asyncpg.connect(database_url) for _ in range(2)]
    try:
        await holder.execute("begin")
        held = await holder.fetchval(
            """select count(*) from (select 1 from participant_coverage where npp = $1
                                     order by participant_id, program for update) l""",
            employer["npp"],
        )
        assert held == 100 * 5
        now = clock()
        tasks = [
            asyncio.create_task(_pay(payers[0], sql, [january], ["jan"], now)),
            asyncio.create_task(_pay(payers[1], sql, [february], ["feb"], now)),
        ]
        await _until_waiting_on_a_lock(pool, [p.get_server_pid() for p in payers])
        await holder.execute("commit")
        answers = await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        for conn in (holder, *payers):
            await conn.close()

    failures = [a for a in answers if isinstance(a, Exception)]
    assert failures == [], f"{statement}: {failures!r}"
    assert [rows[0]["outcome"] for rows in answers] == ["posted", "posted"]
    assert await pool.fetchval(
        "select count(*) from participant_coverage where npp = $1 and last_paid_period = $2",
        employer["npp"], str(latest),
    ) == 100 * 5


# --------------------------------------------------------------- plans ----

BILL_INDEXES = ("bills_pkey", "bills_payment_code_key")
# Index entries this transaction read from each index (not yet flushed to
# pg_stat_user_indexes, so exact and immediate).
READ_SQL = """
select c.relname, pg_stat_get_xact_tuples_returned(c.oid) as n
  from pg_class c where c.relname = any($1::text[])
"""


async def _bill_index_entries_read(conn: asyncpg.Connection, sql: str, bills: list, first_key: int, now) -> int:
    async with conn.transaction():
        before = {r["relname"]: r["n"] for r in await conn.fetch(READ_SQL, list(BILL_INDEXES))}
        rows = await _pay(conn, sql, bills, [f"plan-{first_key + i}" for i in range(len(bills))], now)
        after = {r["relname"]: r["n"] for r in await conn.fetch(READ_SQL, list(BILL_INDEXES))}
    assert [r["outcome"] for r in rows] == ["posted"] * len(bills)
    return sum(after[name] - before[name] for name in BILL_INDEXES)


@pytest.mark.parametrize("statement", ["batch", "per_item"])
async def test_a_batch_finds_its_bills_by_key_after_the_bills_table_grew(
    statement, database_url, pool, bills, clock
):
    """Go-live: the bills table is analyzed while (nearly) empty, the first
    batches are posted, then employers keep reporting and bills grow.

    kanal_pay finds each bill by its code: a probe, whatever the statistics
    said. kanal_pay_batch joins the batch's items to `bills` in three
    statements (the plain items' `covered` CTE, the `c` CTE, the `paid_bills`
    UPDATE ... FROM). From its sixth batch on, the connection runs the cached
    generic plan, made while bills was small: the `c` CTE is a hash join over
    a full index scan of bills_payment_code_key and `paid_bills` a merge join
    over a full index scan of bills_pkey (enable_seqscan = off does not stop
    either: they are index scans). The plan is kept while bills grows, so each
    batch of 4 payments reads every bill's entry in both indexes (about 6,100
    entries here) instead of a few per payment, until autovacuum happens to
    analyze bills and the plan is made again. Autovacuum is off for bills in
    this test only so that it cannot re-plan midway (a busy first hour before
    it gets there)."""
    sql = STATEMENTS[statement]
    await pool.execute("alter table bills set (autovacuum_enabled = off)")
    await pool.execute("vacuum analyze")  # no bill yet: "bills holds no rows"
    first = [await bills.create(workers=1) for _ in range(40)]
    now = clock()
    conn = await asyncpg.connect(database_url)  # one backend: one set of cached plans
    try:
        for i in range(0, len(first), 4):
            await _bill_index_entries_read(conn, sql, first[i:i + 4], i, now)
        # Three thousand more bills are issued (one employer's BPU workers).
        employer, api_key, kpjs = await bills.create_employer(workers=3000, segment="BPU")
        await bills.report(employer, api_key, kpjs, bills.default_period())
        assert await pool.fetchval("select count(*) from bills") == 40 + 3000
        later = [await bills.create(workers=1) for _ in range(4)]
        read = await _bill_index_entries_read(conn, sql, later, 1000, now)
    finally:
        await conn.close()
    # A probe per item and statement is a handful of entries per payment;
    # 25 per payment is generous. Reading the whole table is thousands.
    assert read <= 25 * len(later), f"{statement}: a batch of {len(later)} payments read {read} bill index entries"


# ------------------------------------------- coverage after a reversal ----


@pytest.mark.parametrize("statement", ["batch", "per_item"])
async def test_a_reversal_while_an_earlier_month_is_posted_leaves_that_month_covered(
    statement, database_url, pool, payments, bills, clock
):
    """Not new in 0018 (the control fails the same way), but 0018 copies it:
    last_paid_period is "the max of coverage_months" (migration 0001), and it
    is not after this race.

    February is paid; January's payment is being posted when February's
    payment is reversed. The payment does not lock the worker's coverage row
    (its period is not after last_paid_period, so the `old` CTE filters the
    row out before FOR UPDATE) and the reversal computes the new
    last_paid_period from the months its own snapshot sees, without
    January's uncommitted month. Neither waits for the other; afterwards
    January stands paid, its coverage_months rows exist, and
    last_paid_period is NULL: the worker shows as never covered and the
    coverage counters agree with that."""
    sql = STATEMENTS[statement]
    employer, api_key, kpjs = await bills.create_employer(workers=1)
    latest = Period.from_date(clock().astimezone(WIB).date()) - 1
    january = await bills.report(employer, api_key, kpjs, str(latest - 1))
    february = await bills.report(employer, api_key, kpjs, str(latest))
    paid = await payments.pay(PayCommand(february.payment_code, february.total_rupiah, CHANNEL, "feb", "rrn"))
    assert paid.outcome is PayOutcome.POSTED

    payer = await asyncpg.connect(database_url)
    try:
        await payer.execute("begin")
        rows = await _pay(payer, sql, [january], ["jan"], clock())
        assert rows[0]["outcome"] == "posted"
        # The reversal either finishes now (today) or waits for January's
        # payment to commit (what it should do); either way January commits next.
        reversal = asyncio.create_task(payments.reverse(ReverseCommand(CHANNEL, "feb", reason="0400")))
        await until_done_or_waiting_on_a_lock(pool, reversal, await pool.fetchval("select current_database()"))
        await payer.execute("commit")
        assert (await reversal).outcome is ReverseOutcome.REVERSED
    finally:
        await payer.close()

    months = await pool.fetch(
        """select m.program, max(m.period) as period from coverage_months m
             join payments p on p.id = m.payment_id and p.status = 'posted'
            group by m.program order by m.program"""
    )
    assert [r["period"] for r in months] == [str(latest - 1)] * len(months)
    coverage = await pool.fetch(
        "select program, last_paid_period from participant_coverage where npp = $1 order by program", employer["npp"]
    )
    assert [(r["program"], r["last_paid_period"]) for r in coverage] == [(r["program"], r["period"]) for r in months]
