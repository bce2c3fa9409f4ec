"""The participant ledger: exactly-once posting, balance, reversal, coverage."""

from __future__ import annotations

import asyncio
import datetime as dt
import json

import aiohttp
import asyncpg
import pytest

from bank_adapters.base import (
    InquiryOutcome,
    PayCommand,
    PayOutcome,
    ReverseCommand,
    ReverseOutcome,
    StatusOutcome,
)
from gateway.domain.periods import WIB, Period
from gateway.service import coverage
from tests.integration.ledger_checks import assert_ledger_invariants


def pay(bill, key: str, amount: int | None = None, channel: str = "test:BANK") -> PayCommand:
    return PayCommand(bill.payment_code, bill.total_rupiah if amount is None else amount, channel, key, f"REF-{key}")


async def balances(pool) -> dict[str, int]:
    rows = await pool.fetch(
        """select a.code, coalesce(sum(p.amount_rupiah), 0)::bigint as balance
             from accounts a left join postings p on p.account_id = a.id group by a.code"""
    )
    return {r["code"]: r["balance"] for r in rows}


async def coverage_state(pool) -> list:
    return [tuple(r) for r in await pool.fetch("select participant_id, program, last_paid_period from participant_coverage order by 1, 2")]


async def test_200_concurrent_payments_of_one_bill_post_once(payments, bills, pool):
    bill = await bills.create(workers=5)
    results = await asyncio.gather(*(payments.pay(pay(bill, f"k{i}")) for i in range(200)))
    outcomes = [r.outcome for r in results]
    assert outcomes.count(PayOutcome.POSTED) == 1
    assert outcomes.count(PayOutcome.PAID_BILL) == 199
    assert await pool.fetchval("select count(*) from journal_entries") == 1
    assert await pool.fetchval("select count(*) from payments") == 1
    await assert_ledger_invariants(pool)


async def test_same_key_raced_200_times_posts_once_and_replays(payments, bills, pool):
    bill = await bills.create(workers=2)
    results = await asyncio.gather(*(payments.pay(pay(bill, "same-key")) for _ in range(200)))
    outcomes = [r.outcome for r in results]
    assert outcomes.count(PayOutcome.POSTED) == 1
    assert outcomes.count(PayOutcome.REPLAYED) == 199
    assert len({r.payment_id for r in results}) == 1


async def test_1000_payments_from_50_tasks_keep_every_invariant(payments, bills, pool, clock):
    created = []
    for _ in range(40):
        employer, key, kpjs = await bills.create_employer(workers=2, regency_code="6171")
        created.append((employer, key, kpjs))
    # 1,000 distinct bills: 40 employers x the 25 months ending last month.
    last = Period.from_date(clock().astimezone(WIB).date()) - 1
    periods = [str(last - i) for i in range(25)]
    all_bills = []
    for employer, key, kpjs in created:
        for period in periods:
            all_bills.append(await bills.report(employer, key, kpjs, period))
    queue: asyncio.Queue = asyncio.Queue()
    for b in all_bills:
        queue.put_nowait(b)

    async def worker(n: int) -> list:
        out = []
        while not queue.empty():
            b = queue.get_nowait()
            out.append(await payments.pay(pay(b, f"w{n}-{b.payment_code}")))
        return out

    # Old months' bills would be refused as expired today: pay as of a day
    # before the oldest one's due date, when every bill is still payable.
    clock.set(dt.datetime.combine(Period.parse(periods[-1]).first_day(), dt.time(), WIB) + dt.timedelta(days=40))
    results = [r for batch in await asyncio.gather(*(worker(n) for n in range(50))) for r in batch]
    assert len(results) == 1000
    assert all(r.outcome == PayOutcome.POSTED for r in results), {r.outcome for r in results}
    assert await pool.fetchval("select count(*) from journal_entries") == 1000
    await assert_ledger_invariants(pool, clock())
    total_paid = sum(b.total_rupiah for b in all_bills)
    clearing = await pool.fetchval(
        "select sum(p.amount_rupiah) from postings p join accounts a on a.id = p.account_id where a.code = 'clearing:test:BANK'"
    )
    assert clearing == total_paid


async def test_replay_with_a_different_amount_is_refused_and_posts_nothing(payments, bills, pool):
    bill = await bills.create()
    first = await payments.pay(pay(bill, "k1"))
    assert first.outcome == PayOutcome.POSTED
    before = await balances(pool)
    refused = await payments.pay(pay(bill, "k1", amount=bill.total_rupiah + 1))
    assert refused.outcome == PayOutcome.CONFLICT
    assert await balances(pool) == before
    assert await pool.fetchval("select count(*) from journal_entries") == 1


async def test_partial_and_over_payments_are_refused(payments, bills, pool):
    bill = await bills.create()
    for amount in (bill.total_rupiah - 1, bill.total_rupiah + 1, 1):
        result = await payments.pay(pay(bill, f"amount-{amount}", amount=amount))
        assert result.outcome == PayOutcome.WRONG_AMOUNT
        assert result.amount_rupiah == bill.total_rupiah  # what is owed, to explain the refusal
    assert await pool.fetchval("select count(*) from payments") == 0


async def test_unknown_and_expired_codes(payments, bills, pool, clock):
    assert (await payments.pay(PayCommand("99999999999", 1000, "test:BANK", "x"))).outcome == PayOutcome.UNKNOWN_CODE
    assert (await payments.inquire("99999999999")).outcome == InquiryOutcome.UNKNOWN
    bill = await bills.create()
    clock.advance(days=200)
    assert (await payments.inquire(bill.payment_code)).outcome == InquiryOutcome.EXPIRED
    assert (await payments.pay(pay(bill, "late"))).outcome == PayOutcome.EXPIRED
    assert await pool.fetchval("select count(*) from payments") == 0


async def test_reversal_restores_balances_and_coverage_exactly(payments, bills, pool):
    bill = await bills.create(workers=4)
    balances_before = await balances(pool)
    coverage_before = await coverage_state(pool)
    snapshot_before = await coverage.protected_counts(pool, dt.datetime.now(WIB).date())
    assert (await payments.pay(pay(bill, "k1"))).outcome == PayOutcome.POSTED
    assert await coverage_state(pool) != coverage_before
    reversed_ = await payments.reverse(ReverseCommand("test:BANK", "k1"))
    assert reversed_.outcome == ReverseOutcome.REVERSED
    after = await balances(pool)
    assert {k: v for k, v in after.items() if v} == {k: v for k, v in balances_before.items() if v}
    assert await coverage_state(pool) == coverage_before
    assert await coverage.protected_counts(pool, dt.datetime.now(WIB).date()) == snapshot_before
    again = await payments.reverse(ReverseCommand("test:BANK", "k1"))
    assert again.outcome == ReverseOutcome.ALREADY_REVERSED
    assert await pool.fetchval("select count(*) from journal_entries where kind = 'reversal'") == 1
    status = await payments.status("test:BANK", "k1")
    assert status.outcome == StatusOutcome.REVERSED
    # the bill is open again and can be paid under a new key
    assert (await payments.pay(pay(bill, "k2"))).outcome == PayOutcome.POSTED
    await assert_ledger_invariants(pool)


async def test_reversal_of_unknown_payment_is_answered_and_blocks_the_late_payment(payments, bills, pool):
    bill = await bills.create()
    result = await payments.reverse(ReverseCommand("test:BANK", "never-seen"))
    assert result.outcome == ReverseOutcome.UNKNOWN
    assert await pool.fetchval("select count(*) from journal_entries") == 0
    late = await payments.pay(pay(bill, "never-seen"))
    assert late.outcome == PayOutcome.REVERSED
    assert await pool.fetchval("select count(*) from payments") == 0


async def test_status_reports_exactly_what_was_committed(payments, bills):
    bill = await bills.create()
    assert (await payments.status("test:BANK", "k1")).outcome == StatusOutcome.NOT_FOUND
    posted = await payments.pay(pay(bill, "k1"))
    status = await payments.status("test:BANK", "k1")
    assert status.outcome == StatusOutcome.POSTED
    assert (status.payment_id, status.amount_rupiah, status.payment_code) == (posted.payment_id, bill.total_rupiah, bill.payment_code)


async def test_coverage_switches_on_in_the_payment_transaction(payments, bills, pool, clock):
    bill = await bills.create(workers=3, regency_code="6106")
    as_of = clock().astimezone(WIB).date()
    assert (await coverage.protected_counts(pool, as_of)).get(("6106", "JKK"), 0) == 0
    await payments.pay(pay(bill, "k1"))
    counts = await coverage.protected_counts(pool, as_of)
    assert counts[("6106", "JKK")] == 3 and counts[("6106", "JP")] == 3
    # Time alone turns protection to lapsed: 5 months later nothing new was paid.
    later = (clock() + dt.timedelta(days=155)).astimezone(WIB).date()
    assert (await coverage.protected_counts(pool, later)).get(("6106", "JKK"), 0) == 0
    assert await coverage.protected_counts(pool, later) == await coverage.recount(pool, later)


async def test_ledger_rejects_unbalanced_entries_and_edits(pool, payments, bills):
    bill = await bills.create()
    await payments.pay(pay(bill, "k1"))
    entry = await pool.fetchval("select id from journal_entries limit 1")
    account = await pool.fetchval("select id from accounts where code = 'fund:JKK'")
    with pytest.raises(asyncpg.CheckViolationError, match="does not balance"):
        await pool.execute("insert into postings (entry_id, account_id, npp, amount_rupiah) values ($1, $2, 'X', 5)", entry, account)
    with pytest.raises(asyncpg.CheckViolationError, match="append-only"):
        await pool.execute("update postings set amount_rupiah = amount_rupiah + 1 where entry_id = $1", entry)
    with pytest.raises(asyncpg.CheckViolationError, match="append-only"):
        await pool.execute("delete from journal_entries where id = $1", entry)
    # An entry whose postings never come is refused at commit.
    other = await bills.create()
    async with pool.acquire() as conn:
        with pytest.raises(asyncpg.CheckViolationError, match="does not balance"):
            async with conn.transaction():
                payment = await conn.fetchval(
                    """insert into payments (channel, idempotency_key, bill_id, payment_code, npp, amount_rupiah, status)
                       values ('t', 'k', $1, $2, $3, $4, 'posted') returning id""",
                    other.bill_id, other.payment_code, other.npp, other.total_rupiah,
                )
                await conn.execute("insert into journal_entries (kind, payment_id, npp) values ('payment', $1, 'X')", payment)
    assert await pool.fetchval("select count(*) from payments") == 1


async def test_sse_listener_sees_the_coverage_change_within_one_second(gateway_server, bills):
    bill = await bills.create(workers=2, regency_code="6171")
    async with aiohttp.ClientSession() as http:
        async with http.get(gateway_server.url + "/api/v1/stream/coverage", timeout=aiohttp.ClientTimeout(total=10)) as stream:
            assert stream.headers["Content-Type"].startswith("text/event-stream")

            async def next_event() -> dict:
                data = []
                while True:
                    line = (await stream.content.readline()).decode().rstrip("\r\n")
                    if line.startswith("data:"):
                        data.append(line[5:].strip())
                    elif line == "" and data:
                        return json.loads("".join(data))

            first = await asyncio.wait_for(next_event(), 5)
            pontianak = next(r for r in first["regencies"] if r["regency_code"] == "6171")
            assert pontianak["programs"]["JKK"] == 0
            result = await gateway_server.payments.pay(pay(bill, "sse-1"))
            assert result.outcome == PayOutcome.POSTED
            # The promise: the change is seen within one second. Other
            # events may publish snapshots meanwhile; the first one showing the
            # payment must arrive in time.
            async def change_seen() -> dict:
                while True:
                    event = await next_event()
                    row = next(r for r in event["regencies"] if r["regency_code"] == "6171")
                    if row["programs"]["JKK"] != 0:
                        return event

            update = await asyncio.wait_for(change_seen(), 1.0)
            pontianak = next(r for r in update["regencies"] if r["regency_code"] == "6171")
    assert pontianak["programs"]["JKK"] == 2
    assert update["province"]["protected"] == 2
