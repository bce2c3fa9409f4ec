"""The posting engine: journal entries, postings, coverage and outbox rows.

Called inside the caller's transaction with the bill (or payment) row already
locked. Everything a payment changes is written here together: the payment,
its balanced journal entry, each worker's coverage, the coverage counters and
the outbox events. Shared (hot) accounts are never updated in place: postings
are appended, balances are sums (docs/ledger.md).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import asyncpg

from bank_adapters.base import PayCommand

EVENTS_CHANNEL = "kanal_events"

# One statement builds every posting of a payment from its bill lines: the
# bank's clearing account is debited the total; each program fund, each
# worker's JHT account and late-fee income are credited their billed share;
# the government's JKP share is a receivable debited against the JKP fund.
_POST_PAYMENT_POSTINGS = """
insert into postings (entry_id, account_id, npp, amount_rupiah)
select $1, a.id, $2, x.amount
  from (
        select 'clearing:' || $3 as code, $4::bigint as amount
        union all
        select 'fund:' || program, -sum(employer_rupiah + worker_rupiah)
          from bill_lines where bill_id = $5 and program in ('JKK', 'JKM', 'JP', 'JKP')
         group by program
        union all
        select 'jht:' || p.kpj, -sum(l.employer_rupiah + l.worker_rupiah)
          from bill_lines l join participants p on p.id = l.participant_id
         where l.bill_id = $5 and l.program = 'JHT'
         group by p.kpj
        union all
        select 'income:late_fees', -sum(employer_rupiah + worker_rupiah)
          from bill_lines where bill_id = $5 and program = 'DENDA'
        union all
        select 'receivable:government:JKP', sum(government_rupiah)
          from bill_lines where bill_id = $5
        union all
        select 'fund:JKP', -sum(government_rupiah)
          from bill_lines where bill_id = $5
       ) x
  join accounts a on a.code = x.code
 where x.amount <> 0
"""

# Coverage for every (worker, program) on the bill, in one statement: record
# the paid month, move last_paid_period forward, and append counter deltas
# (-1 from the old bucket, +1 to the new) aggregated per regency and program.
_COVER_PAID_MONTHS = """
with lines as (
    select distinct participant_id, program from bill_lines
     where bill_id = $1 and participant_id is not null
), ins as (
    insert into coverage_months (participant_id, program, period, payment_id, npp)
    select participant_id, program, $2, $3, $4 from lines
    on conflict do nothing
    returning participant_id, program
), old as (
    select pc.participant_id, pc.program, pc.regency_code, pc.segment, pc.last_paid_period
      from participant_coverage pc join ins using (participant_id, program)
     where pc.last_paid_period is null or pc.last_paid_period < $2
       for update of pc
), upd as (
    update participant_coverage pc set last_paid_period = $2
      from old where pc.participant_id = old.participant_id and pc.program = old.program
    returning 1
), deltas as (
    select regency_code, program, segment, last_paid_period as bucket, -count(*)::int as delta
      from old where last_paid_period is not null group by 1, 2, 3, 4
    union all
    select regency_code, program, segment, $2, count(*)::int from old group by 1, 2, 3
)
insert into coverage_deltas (regency_code, program, segment, last_paid_period, delta, payment_id)
select regency_code, program, segment, bucket, delta, $3 from deltas where delta <> 0
returning regency_code, program
"""

# The reverse: forget the payment's months, recompute each worker's
# last_paid_period from what remains, and append the opposite deltas.
_UNCOVER_PAID_MONTHS = """
with gone as (
    delete from coverage_months where payment_id = $1 returning participant_id, program
), old as (
    select pc.participant_id, pc.program, pc.regency_code, pc.segment, pc.last_paid_period,
           (select max(m.period) from coverage_months m
             where m.participant_id = pc.participant_id and m.program = pc.program and m.payment_id <> $1) as new_last
      from participant_coverage pc join gone using (participant_id, program)
       for update of pc
), changed as (
    select * from old where new_last is distinct from last_paid_period
), upd as (
    update participant_coverage pc set last_paid_period = changed.new_last
      from changed where pc.participant_id = changed.participant_id and pc.program = changed.program
    returning 1
), deltas as (
    select regency_code, program, segment, last_paid_period as bucket, -count(*)::int as delta
      from changed where last_paid_period is not null group by 1, 2, 3, 4
    union all
    select regency_code, program, segment, new_last, count(*)::int
      from changed where new_last is not null group by 1, 2, 3, 4
)
insert into coverage_deltas (regency_code, program, segment, last_paid_period, delta, payment_id)
select regency_code, program, segment, bucket, delta, $1 from deltas where delta <> 0
returning regency_code, program
"""


@dataclass(frozen=True)
class Posted:
    payment_id: int
    entry_id: int
    posted_at: dt.datetime


async def ensure_clearing_account(conn: asyncpg.Connection, channel: str) -> None:
    await conn.execute(
        "insert into accounts (code, kind) values ('clearing:' || $1, 'asset') on conflict (code) do nothing", channel
    )


async def post_payment(conn: asyncpg.Connection, bill: asyncpg.Record, command: PayCommand, now: dt.datetime) -> Posted:
    await ensure_clearing_account(conn, command.channel)
    payment = await conn.fetchrow(
        """insert into payments (channel, idempotency_key, bill_id, payment_code, npp, amount_rupiah,
                                 bank_reference, status, posted_at)
           values ($1, $2, $3, $4, $5, $6, $7, 'posted', $8)
           returning id, posted_at""",
        command.channel,
        command.idempotency_key,
        bill["id"],
        bill["payment_code"],
        bill["npp"],
        command.amount_rupiah,
        command.bank_reference[:200],
        now,
    )
    await conn.execute("update bills set status = 'paid' where id = $1", bill["id"])
    entry_id = await conn.fetchval(
        "insert into journal_entries (kind, payment_id, npp, created_at) values ('payment', $1, $2, $3) returning id",
        payment["id"],
        bill["npp"],
        now,
    )
    await conn.execute(
        _POST_PAYMENT_POSTINGS, entry_id, bill["npp"], command.channel, command.amount_rupiah, bill["id"]
    )
    touched = await conn.fetch(_COVER_PAID_MONTHS, bill["id"], bill["period"], payment["id"], bill["npp"])
    await write_events(
        conn,
        bill["npp"],
        "payment.posted",
        {
            "payment_id": payment["id"],
            "payment_code": bill["payment_code"],
            "npp": bill["npp"],
            "period": bill["period"],
            "amount_rupiah": command.amount_rupiah,
            "channel": command.channel,
            "bank_reference": command.bank_reference,
            "posted_at": payment["posted_at"].isoformat(),
        },
        touched,
    )
    return Posted(payment_id=payment["id"], entry_id=entry_id, posted_at=payment["posted_at"])


async def reverse_payment(conn: asyncpg.Connection, payment: asyncpg.Record, now: dt.datetime, reason: str) -> int:
    """Undo a standing payment with a reversing entry; returns the new entry id."""
    await conn.execute("select 1 from bills where id = $1 for update", payment["bill_id"])
    await conn.execute(
        "update payments set status = 'reversed', reversed_at = $2 where id = $1", payment["id"], now
    )
    await conn.execute("update bills set status = 'open' where id = $1", payment["bill_id"])
    original = await conn.fetchrow(
        "select id, npp from journal_entries where payment_id = $1 and kind = 'payment'", payment["id"]
    )
    entry_id = await conn.fetchval(
        """insert into journal_entries (kind, payment_id, npp, reverses_entry_id, created_at)
           values ('reversal', $1, $2, $3, $4) returning id""",
        payment["id"],
        original["npp"],
        original["id"],
        now,
    )
    await conn.execute(
        """insert into postings (entry_id, account_id, npp, amount_rupiah)
           select $1, account_id, npp, -amount_rupiah from postings where entry_id = $2 order by id""",
        entry_id,
        original["id"],
    )
    touched = await conn.fetch(_UNCOVER_PAID_MONTHS, payment["id"])
    await write_events(
        conn,
        original["npp"],
        "payment.reversed",
        {
            "payment_id": payment["id"],
            "payment_code": payment["payment_code"],
            "npp": original["npp"],
            "amount_rupiah": payment["amount_rupiah"],
            "reason": reason,
            "reversed_at": now.isoformat(),
        },
        touched,
    )
    return entry_id


async def write_events(
    conn: asyncpg.Connection, npp: str, topic: str, payload: dict, touched: list[asyncpg.Record]
) -> None:
    """Outbox rows in the posting's transaction, and a wake-up for listeners
    (NOTIFY is delivered only if the transaction commits)."""
    rows = [(topic, npp, payload)]
    regencies = sorted({r["regency_code"] for r in touched})
    if regencies:
        programs = sorted({r["program"] for r in touched})
        rows.append(
            ("coverage.changed", npp, {"regencies": regencies, "programs": programs, "payment_id": payload["payment_id"]})
        )
    await conn.executemany("insert into outbox (topic, npp, payload) values ($1, $2, $3)", rows)
    await conn.execute("select pg_notify($1, $2)", EVENTS_CHANNEL, topic)
