"""Ledger invariants, computed from scratch in SQL, for tests to assert after
operations (Blnk's list: money conserved, balances equal their postings,
refused operations change nothing, counters equal a recount)."""

from __future__ import annotations

import datetime as dt

from gateway.domain.periods import WIB
from gateway.service import coverage


async def assert_ledger_invariants(pool, now: dt.datetime | None = None) -> None:
    # 1. every entry balances, and the trial balance is zero
    unbalanced = await pool.fetch(
        "select entry_id, sum(amount_rupiah) from postings group by entry_id having sum(amount_rupiah) <> 0"
    )
    assert unbalanced == [], unbalanced
    assert await pool.fetchval("select coalesce(sum(amount_rupiah), 0) from postings") == 0
    # 2. each standing payment equals its bill; every paid bill has exactly one standing payment
    wrong = await pool.fetch(
        """select p.id from payments p join bills b on b.id = p.bill_id
            where p.status = 'posted' and (p.amount_rupiah <> b.total_rupiah or b.status <> 'paid')"""
    )
    assert wrong == [], wrong
    orphan = await pool.fetch(
        """select b.id from bills b where b.status = 'paid'
             and (select count(*) from payments p where p.bill_id = b.id and p.status = 'posted') <> 1"""
    )
    assert orphan == [], orphan
    # 3. fund credits equal the standing bills' lines
    funds = {
        r["code"]: -r["balance"]
        for r in await pool.fetch(
            """select a.code, coalesce(sum(p.amount_rupiah), 0)::bigint as balance from accounts a
                 left join postings p on p.account_id = a.id where a.code like 'fund:%' group by a.code"""
        )
    }
    lines = {
        r["program"]: r["billed"]
        for r in await pool.fetch(
            """select l.program, sum(l.employer_rupiah + l.worker_rupiah + case when l.program = 'JKP' then l.government_rupiah else 0 end)::bigint as billed
                 from bill_lines l join bills b on b.id = l.bill_id where b.status = 'paid' group by l.program"""
        )
    }
    for program in ("JKK", "JKM", "JP", "JKP"):
        gov = 0
        if program == "JKP":
            gov = await pool.fetchval(
                """select coalesce(sum(l.government_rupiah), 0) from bill_lines l join bills b on b.id = l.bill_id
                    where b.status = 'paid' and l.program <> 'JKP'"""
            )
        assert funds.get(f"fund:{program}", 0) == lines.get(program, 0) + gov, program
    jht_accounts = await pool.fetchval(
        """select -coalesce(sum(p.amount_rupiah), 0) from postings p join accounts a on a.id = p.account_id
            where a.code like 'jht:%'"""
    )
    assert jht_accounts == lines.get("JHT", 0)
    # 4. coverage counters equal a recount from the participant rows
    now = now or dt.datetime.now(dt.UTC)
    as_of = now.astimezone(WIB).date()
    assert await coverage.protected_counts(pool, as_of) == await coverage.recount(pool, as_of)
    # 5. coverage rows equal the months of standing payments
    stale = await pool.fetch(
        """select m.participant_id from coverage_months m join payments p on p.id = m.payment_id
            where p.status <> 'posted' limit 1"""
    )
    assert stale == []
