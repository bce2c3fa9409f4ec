"""Late fees ("denda") on a later month's bill, against a real PostgreSQL.

contributions.md: "Late fee ("denda"): 2% of the late dues for each month
late, borne by the employer, billed with a later month." Dues paid after the
deadline are late dues, whether or not the next wage report came first.

Every bill here is the contributions.md worked example: a large employer, JKK
risk class II, one worker on Rp12,000,000, billed Rp1,101,222 a month
(64,800 JKK + 36,000 JKM + 684,000 JHT + 316,422 JP), due on the 15th of the
next month (2025-06 -> 2025-07-15, 2025-07 -> 2025-08-15).
"""

from __future__ import annotations

import datetime as dt

from bank_adapters.base import PayCommand, PayOutcome
from gateway.domain.periods import WIB
from gateway.service import employers as svc
from tests.conftest import make_kpj, make_nik

MONTHLY_DUES = 1_101_222


def wib(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=WIB)


async def _employer(pool, npp: str):
    async with pool.acquire() as conn, conn.transaction():
        await svc.register_employer(conn, npp, f"PT {npp}", "6171", "large", 2)
        employer = await conn.fetchrow("select * from employers where npp = $1", npp)
        row = svc.ParticipantRow(1, make_kpj(int(npp[-4:])), make_nik(int(npp[-4:])), "Budi", 12_000_000, "PU")
        result = await svc.add_participants(conn, employer, [row], "all_or_nothing")
        assert result.errors == []
    return employer


async def _report(pool, employer, period: str, now: dt.datetime) -> dict:
    async with pool.acquire() as conn, conn.transaction():
        bill_id, _ = await svc.submit_wage_report(conn, employer, period, {}, now, 90)
        return await svc.bill_view(conn, bill_id, with_lines=True)


async def _pay(payments, clock, bill: dict, at: dt.datetime, key: str) -> None:
    clock.set(at)
    result = await payments.pay(PayCommand(bill["payment_code"], bill["total_rupiah"], "test:bank", key))
    assert result.outcome == PayOutcome.POSTED


def _fees(bill: dict) -> list[tuple[str, int, int]]:
    return [
        (line["late_fee_source_payment_code"], line["late_fee_months"], line["employer_rupiah"])
        for line in bill["lines"]
        if line["program"] == "DENDA"
    ]


async def test_a_bill_paid_late_before_the_next_report_is_charged_its_late_fee(pool, clock, payments):
    employer = await _employer(pool, "LATE0101")
    june = await _report(pool, employer, "2025-06", wib(2025, 7, 1, 9))
    assert june["total_rupiah"] == MONTHLY_DUES and june["due_date"] == dt.date(2025, 7, 15)
    # Five days late: the first month late.
    await _pay(payments, clock, june, wib(2025, 7, 20, 10), "june")
    july = await _report(pool, employer, "2025-07", wib(2025, 8, 1, 9))
    # 2% of 1,101,222 = 22,024.44 -> 22,024.
    assert _fees(july) == [(june["payment_code"], 1, 22_024)]
    assert july["late_fees_rupiah"] == 22_024
    assert july["total_rupiah"] == MONTHLY_DUES + 22_024


async def test_a_payment_at_23_30_wib_on_the_due_date_is_on_time(pool, clock, payments):
    employer = await _employer(pool, "LATE0102")
    june = await _report(pool, employer, "2025-06", wib(2025, 7, 1, 9))
    # 2025-07-15 23:30 WIB is 16:30 UTC, still the due date in Pontianak.
    await _pay(payments, clock, june, wib(2025, 7, 15, 23, 30), "june")
    july = await _report(pool, employer, "2025-07", wib(2025, 8, 1, 9))
    assert _fees(july) == []
    assert july["total_rupiah"] == MONTHLY_DUES


async def test_a_bill_charged_while_open_and_paid_a_month_later_owes_the_second_month(pool, clock, payments):
    employer = await _employer(pool, "LATE0103")
    june = await _report(pool, employer, "2025-06", wib(2025, 7, 1, 9))
    # Still open at the July report, five days past its deadline: one month.
    july = await _report(pool, employer, "2025-07", wib(2025, 7, 20, 9))
    assert _fees(july) == [(june["payment_code"], 1, 22_024)]
    await _pay(payments, clock, july, wib(2025, 8, 10, 9), "july")  # on time (due 2025-08-15)
    # June paid on 2025-08-20: a whole month and five days late, two months.
    await _pay(payments, clock, june, wib(2025, 8, 20, 9), "june")
    august = await _report(pool, employer, "2025-08", wib(2025, 9, 1, 9))
    # 2 x 2% of 1,101,222 = 44,048.88 -> 44,049, of which 22,024 was charged in July.
    assert _fees(august) == [(june["payment_code"], 2, 22_025)]
    assert august["total_rupiah"] == MONTHLY_DUES + 22_025


async def test_a_payment_at_00_30_wib_the_day_after_the_due_date_is_late(pool, clock, payments):
    employer = await _employer(pool, "LATE0104")
    june = await _report(pool, employer, "2025-06", wib(2025, 7, 1, 9))
    # 2025-07-16 00:30 WIB is still 2025-07-15 in UTC: the WIB day counts.
    await _pay(payments, clock, june, wib(2025, 7, 16, 0, 30), "june")
    july = await _report(pool, employer, "2025-07", wib(2025, 8, 1, 9))
    assert _fees(july) == [(june["payment_code"], 1, 22_024)]


async def test_a_month_reported_late_is_payable_for_its_days_from_the_report(pool, clock, payments):
    """A month reported after its due date used to be born expired (90 days
    counted from the due date), so arrears could never be paid. Its 90 days
    now count from the WIB day of its report."""
    on_time, late = await _employer(pool, "LATE0105"), await _employer(pool, "LATE0106")
    # 2025-01 was due on 2025-02-17 (the 15th was a Saturday): 90 days after that
    # ended on 2025-05-18. Both reported on 2025-08-01, 90 days after which is 2025-10-30.
    first = await _report(pool, on_time, "2025-01", wib(2025, 8, 1, 9))
    second = await _report(pool, late, "2025-01", wib(2025, 8, 1, 9))
    assert first["due_date"] == dt.date(2025, 2, 17)
    last_payable_day = dt.date(2025, 10, 30)
    expires_at = await pool.fetchval("select expires_at from bills where payment_code = $1", first["payment_code"])
    assert expires_at == wib(2025, 10, 31)
    assert (expires_at.astimezone(WIB).date() - dt.date(2025, 8, 1)).days == 91
    # Payable until the last minute of its last day (WIB), refused a minute after.
    await _pay(payments, clock, first, wib(2025, 10, 30, 23, 59), "arrear-1")
    assert last_payable_day == wib(2025, 10, 30, 23, 59).date()
    clock.set(wib(2025, 10, 31, 0, 1))
    refused = await payments.pay(PayCommand(second["payment_code"], second["total_rupiah"], "test:bank", "arrear-2"))
    assert refused.outcome == PayOutcome.EXPIRED


async def test_two_reports_at_once_charge_a_late_bill_once(pool):
    """Two months reported side by side (two tabs, a retried request) each read
    the June bill's charged fees before the other had written its own: both
    charged June's full late fee."""
    import asyncio

    employer = await _employer(pool, "LATE0107")
    june = await _report(pool, employer, "2025-06", wib(2025, 7, 1, 9))
    now = wib(2025, 9, 1, 9)  # June (due 2025-07-15) open: two months late, 4%
    first = await pool.acquire()
    try:
        transaction = first.transaction()
        await transaction.start()
        await svc.submit_wage_report(first, employer, "2025-07", {}, now, 90)
        second = asyncio.create_task(_report(pool, employer, "2025-08", now))
        await asyncio.sleep(0.5)  # the second report runs while the first is uncommitted
        await transaction.commit()
        await asyncio.wait_for(second, 10)
    finally:
        await pool.release(first)
    charged = await pool.fetchval(
        "select sum(employer_rupiah) from bill_lines where late_fee_source_bill_id = (select id from bills where payment_code = $1)", june["payment_code"]
    )
    assert charged == 44_049  # 2 x 2% of 1,101,222 = 44,048.88, once
