"""The reversal side of the posting engine, and outbox writes.

Payments are posted by the `kanal_pay_batch` and `kanal_pay` SQL functions
(migrations 0002, 0010, 0018), in micro-batches (gateway/store/batching.py). Reversals are rare and go through
here, inside the caller's transaction with the payment row locked: the
reversing entry, coverage restored, counters and outbox events. Shared (hot)
accounts are never updated in place: postings are appended, balances are sums
(docs/ledger.md).
"""

from __future__ import annotations

import datetime as dt

import asyncpg

EVENTS_CHANNEL = "kanal_events"

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
    # The workers' coverage rows first, in the payments' order (migration
    # 0018), and read after the wait: a payment of another month still being
    # written has committed its months by then, and the new last paid month
    # counts them. That rests on READ COMMITTED (each statement its own
    # snapshot), the isolation every Kanal transaction runs at.
    await conn.execute("select kanal_lock_coverage(array[$1::bigint])", payment["bill_id"])
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


async def write_events_many(conn: asyncpg.Connection, npp: str, topic: str, payloads: list[dict]) -> None:
    """One outbox row per payload, in order, in one statement, and one wake-up."""
    if not payloads:
        return
    await conn.execute(
        """insert into outbox (topic, npp, payload)
           select $1, $2, p from unnest($3::jsonb[]) with ordinality as t(p, o) order by o""",
        topic, npp, payloads,
    )
    await conn.execute("select pg_notify($1, $2)", EVENTS_CHANNEL, topic)
