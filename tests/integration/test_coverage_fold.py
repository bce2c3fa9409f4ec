"""Coverage counters folded into totals (migration 0020).

Payments append deltas; the gateway folds them into one total per bucket in
the background. What a user sees must not change: the coverage counts as of
any date, before, during and after folds, equal a recount of the workers
themselves, also while payments and reversals post and two folds race. And
reading the coverage must cost what the buckets hold, not every delta ever
written (counted with PostgreSQL's own block counters, not timing).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random

import aiohttp

from bank_adapters.base import PayCommand, PayOutcome, ReverseCommand
from gateway.domain.periods import Period
from gateway.ops.checks import OK, run_checks
from gateway.service import coverage
from gateway.service.payments import PaymentsService
from tests.ops.conftest import tampering

# From before the oldest bill to well after the newest: every threshold moves.
AS_OF = [dt.date(2025, 1, 1) + dt.timedelta(days=45 * k) for k in range(28)]


async def _counts(pool) -> list[dict]:
    return [await coverage.protected_counts(pool, day) for day in AS_OF]


async def _recounts(pool) -> list[dict]:
    return [await coverage.recount(pool, day) for day in AS_OF]


async def _counters_ok(pool) -> None:
    (result,) = (await run_checks(pool, only=["coverage_counters"])).checks
    assert result.verdict == OK, result.rows


async def _ledger(bills, payments, clock, *, employers: int, name: str) -> list[tuple]:
    """Employers of several regencies and segments, each paying two months;
    returns the paid (channel, key) pairs."""
    paid = []
    this_month = Period.from_date(clock().date())
    for n in range(employers):
        regency = ("6171", "6101", "6104", "6112")[n % 4]
        employer, api_key, kpjs = await bills.create_employer(
            workers=2 + n % 3, regency_code=regency, segment="BPU" if n % 3 == 2 else "PU"
        )
        for back in (2, 1):
            info = await bills.report(employer, api_key, kpjs, str(this_month - back))
            key = f"{name}-{n}-{back}"
            result = await payments.pay(PayCommand(info.payment_code, info.total_rupiah, "test:BANK", key, f"R{n}{back}"))
            assert result.outcome == PayOutcome.POSTED
            paid.append(("test:BANK", key))
    return paid


async def test_folding_keeps_every_count(pool, bills, payments, clock):
    paid = await _ledger(bills, payments, clock, employers=6, name="first")
    await payments.reverse(ReverseCommand(*paid[-1]))  # a later month undone: the worker falls back a month
    before = await _counts(pool)
    assert before == await _recounts(pool)
    assert any(before)
    deltas = await pool.fetchval("select count(*) from coverage_deltas")
    assert deltas > 10

    # A few deltas at a time: buckets are merged into totals piece by piece.
    moved_total = 0
    while moved := await coverage.fold_deltas(pool, 7):
        moved_total += moved
        assert await _counts(pool) == before
    assert moved_total == deltas
    assert await pool.fetchval("select count(*) from coverage_deltas") == 0
    assert await pool.fetchval("select count(*) from coverage_totals") > 0
    await _counters_ok(pool)

    # Payments after the fold count on top of the totals.
    more = await _ledger(bills, payments, clock, employers=2, name="more")
    assert len(more) == 4
    assert await _counts(pool) == await _recounts(pool) != before
    await _counters_ok(pool)


async def test_folds_racing_payments_and_reversals(pool, bills, clock):
    service = PaymentsService(pool, clock=clock)
    this_month = Period.from_date(clock().date())
    work = []
    for n in range(12):
        employer, api_key, kpjs = await bills.create_employer(workers=1 + n % 4, regency_code=("6171", "6102")[n % 2])
        for back in (3, 2, 1):
            info = await bills.report(employer, api_key, kpjs, str(this_month - back))
            work.append((info, f"race-{n}-{back}"))
    random.Random(9).shuffle(work)

    async def pay_and_sometimes_reverse(info, key: str) -> None:
        result = await service.pay(PayCommand(info.payment_code, info.total_rupiah, "test:BANK", key, key))
        assert result.outcome == PayOutcome.POSTED
        if key.endswith("-2"):
            await service.reverse(ReverseCommand("test:BANK", key))

    # Waves of concurrent payments; two folds race each wave, moving what the
    # waves before it committed (and nothing of what is being written).
    moved = []
    for start in range(0, len(work), 6):
        *_, one, two = await asyncio.gather(
            *(pay_and_sometimes_reverse(info, key) for info, key in work[start:start + 6]),
            coverage.fold_deltas(pool, 5),
            coverage.fold_deltas(pool, 5),
        )
        moved += [one, two]
    await service.close()
    assert sum(moved[2:]) > 0  # the waves after the first found deltas to fold
    assert await _counts(pool) == await _recounts(pool)
    await _counters_ok(pool)
    while await coverage.fold_deltas(pool, 1000):
        pass
    assert await _counts(pool) == await _recounts(pool)
    await _counters_ok(pool)


async def _blocks_read_by_a_coverage_read(pool, as_of: dt.date) -> tuple[dict, int]:
    async with pool.acquire() as conn, conn.transaction():
        relations = ["coverage_deltas", "coverage_totals"]
        sql = "select sum(pg_stat_get_xact_blocks_fetched(r::regclass)) from unnest($1::text[]) r"
        before = await conn.fetchval(sql, relations)
        counts = await coverage.protected_counts(conn, as_of)
        return counts, int(await conn.fetchval(sql, relations) - before)


async def test_reading_the_coverage_costs_the_buckets_not_the_history(pool, bills, payments, clock):
    await _ledger(bills, payments, clock, employers=3, name="history")
    today = clock().date()
    counts = await coverage.protected_counts(pool, today)
    assert counts == await coverage.recount(pool, today) and counts
    # A long history: 200,000 deltas that cancel out within their buckets
    # (each payment's -1 and +1), as months of payments leave behind.
    async with tampering(pool) as conn:
        await conn.execute(
            """insert into coverage_deltas (regency_code, program, segment, last_paid_period, delta)
               select '6171', 'JKK', 'PU', to_char(date '2024-01-01' + (g / 2 % 24) * interval '1 month', 'YYYY-MM'),
                      case when g % 2 = 0 then 1 else -1 end
                 from generate_series(0, 199999) g"""
        )
    await pool.execute("vacuum analyze coverage_deltas")
    history_counts, history_read = await _blocks_read_by_a_coverage_read(pool, today)
    assert history_counts == counts
    held = await pool.fetchval("select pg_relation_size('coverage_deltas') / 8192")
    assert history_read >= held > 500

    while await coverage.fold_deltas(pool, 50_000):
        pass
    await pool.execute("vacuum coverage_deltas")  # what autovacuum does after the folds
    folded_counts, folded_read = await _blocks_read_by_a_coverage_read(pool, today)
    assert folded_counts == counts
    assert folded_read < 10, folded_read
    await _counters_ok(pool)


async def test_the_gateway_folds_in_the_background(gateway_server, bills, clock):
    info = await bills.create(workers=3)
    result = await gateway_server.payments.pay(PayCommand(info.payment_code, info.total_rupiah, "test:BANK", "bg-1", "R1"))
    assert result.outcome == PayOutcome.POSTED
    pool = gateway_server.pool
    for _ in range(100):  # the default interval is 1 s
        if await pool.fetchval("select count(*) from coverage_deltas") == 0:
            break
        await asyncio.sleep(0.1)
    assert await pool.fetchval("select count(*) from coverage_deltas") == 0
    assert await pool.fetchval("select coalesce(sum(n), 0) from coverage_totals where program = 'JKK'") == 3
    async with aiohttp.ClientSession() as http, http.get(f"{gateway_server.url}/api/v1/coverage") as response:
        assert response.status == 200
        body = await response.json()
    assert body["province"]["protected"] == 3, body
