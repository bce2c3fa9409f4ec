"""A payment and its reversal racing under the same key.

This is what a crash produces: the bank hears nothing for its 0200, sends a
0400 reversal to the restarted gateway, while the crashed process's
statement is still running (PostgreSQL finishes a statement whose client is
gone, and commits it). Whatever the order, once the reversal is answered the
payment must not stand, and a payment arriving after it must be declined.
"""

from __future__ import annotations

import asyncio

from bank_adapters.base import PayCommand, PayOutcome, ReverseCommand, ReverseOutcome
from tests.integration.ledger_checks import assert_ledger_invariants
from tests.reliability.support import assert_kanal_check_clean

CHANNEL = "iso8583:123"


async def standing_payments(pool, bill_id: int) -> int:
    return await pool.fetchval("select count(*) from payments where bill_id = $1 and status = 'posted'", bill_id)


async def until_done_or_waiting_on_a_lock(pool, task: asyncio.Task, database: str) -> None:
    """Return once `task` finished or its statement waits on a lock (bounded)."""
    for _ in range(500):
        if task.done():
            return
        waiting = await pool.fetchval(
            "select count(*) from pg_stat_activity where datname = $1 and wait_event_type = 'Lock'", database
        )
        if waiting:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the reversal neither finished nor waited on a lock")


async def test_a_reversal_arriving_while_its_payment_commits_reverses_it(pool, payments, bills, clock):
    bill = await bills.create()
    database = await pool.fetchval("select current_database()")
    async with pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        # The crashed gateway's statement: posted, not yet committed.
        row = await conn.fetchrow(
            "select * from kanal_pay($1, $2, $3, $4, $5, $6)",
            CHANNEL, "k-inflight", bill.payment_code, bill.total_rupiah, "rrn", clock(),
        )
        assert row["outcome"] == "posted"
        reversal = asyncio.create_task(payments.reverse(ReverseCommand(CHANNEL, "k-inflight", reason="0400")))
        await until_done_or_waiting_on_a_lock(pool, reversal, database)
        await transaction.commit()
    result = await reversal
    # The reversal saw the payment once it committed, and undid it.
    assert result.outcome is ReverseOutcome.REVERSED
    assert await standing_payments(pool, bill.bill_id) == 0
    await assert_ledger_invariants(pool)


async def test_payments_and_reversals_of_the_same_keys_raced_never_leave_a_reversed_payment_standing(
    payments, bills, pool
):
    """Each key's 0200 and 0400 sent at once, 60 times: whichever wins, after
    the 0400 is answered 00 no payment under that key stands."""
    created = [await bills.create(workers=1) for _ in range(60)]

    async def race(index: int, bill) -> None:
        key = f"race-{index}"
        command = PayCommand(bill.payment_code, bill.total_rupiah, CHANNEL, key, "rrn")
        reverse = ReverseCommand(CHANNEL, key, reason="0400")
        if index % 2:
            paid, reversed_ = await asyncio.gather(payments.pay(command), payments.reverse(reverse))
        else:
            reversed_, paid = await asyncio.gather(payments.reverse(reverse), payments.pay(command))
        assert paid.outcome in (PayOutcome.POSTED, PayOutcome.REVERSED), paid
        assert reversed_.outcome in (ReverseOutcome.REVERSED, ReverseOutcome.UNKNOWN), reversed_

    await asyncio.gather(*(race(i, bill) for i, bill in enumerate(created)))
    standing = await pool.fetchval(
        "select count(*) from payments where status = 'posted' and idempotency_key like 'race-%'"
    )
    assert standing == 0
    # A late repeat of any of those payments is declined, never posted.
    late = await payments.pay(PayCommand(created[0].payment_code, created[0].total_rupiah, CHANNEL, "race-0", "rrn"))
    assert late.outcome is PayOutcome.REVERSED
    await assert_ledger_invariants(pool)
    await assert_kanal_check_clean(pool)
