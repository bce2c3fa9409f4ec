"""Ledger health: invariant checks recomputed from scratch in SQL.

Each check answers a verdict and the rows that break it, so that an operator
can go straight to the entry, payment, bill or bucket at fault:

| check | what must hold |
|---|---|
| `entries_balance` | every journal entry's postings sum to zero, and it has at least two |
| `trial_balance` | all postings together sum to zero |
| `payment_equals_bill` | a standing payment's amount equals its bill's total, and the bill is marked paid |
| `bill_paid_once` | a bill has one standing payment if it is paid, none if it is open |
| `funds_equal_lines` | each payment's postings per fund (and JHT, late fees, the government receivable) equal its bill's lines |
| `coverage_counters` | the append-only coverage counters equal a recount of the participant rows, bucket by bucket |
| `outbox_lag` | the callback relay has taken every outbox event older than `outbox_lag_seconds_max` |
| `delivery_failure_rate` | failed callback deliveries stay under `delivery_failure_basis_points_max` of the finished ones |
| `callback_counters` | the delivery and attempt counters (migration 0022) equal a recount of the rows, status by status |

The database already enforces most of these on every write (triggers, unique
indexes: docs/ledger.md). These checks are what catches what slipped past
them anyway: a disabled trigger, a restored backup, a hand-written UPDATE.

The last three read the callbacks tables (migrations 0003_callbacks.sql and
0022_callbacks_at_scale.sql). When those tables do not exist the checks
answer `skipped` and say why.

Every check is a read-only query; `run_checks` runs them in one REPEATABLE
READ transaction so that they all see the same snapshot.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field

import asyncpg

from gateway.domain.periods import WIB

OK = "ok"
VIOLATION = "violation"
SKIPPED = "skipped"


@dataclass(frozen=True)
class Limits:
    """Thresholds for the checks that are rates or ages rather than identities."""

    rows_max: int = 50  # offending rows listed per check; `rows_total` still counts them all
    outbox_lag_seconds_max: int = 300
    delivery_failure_basis_points_max: int = 500  # 5.00 %
    delivery_window_seconds: int = 3600  # deliveries finished within this window count
    delivery_sample_min: int = 10  # fewer finished deliveries than this: too few to judge


@dataclass
class CheckResult:
    name: str
    title: str
    verdict: str
    detail: str
    rows: list[dict] = field(default_factory=list)
    rows_total: int = 0
    figures: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class HealthReport:
    checked_at: dt.datetime
    checks: list[CheckResult]

    @property
    def healthy(self) -> bool:
        return all(c.verdict != VIOLATION for c in self.checks)

    @property
    def violations(self) -> list[str]:
        return [c.name for c in self.checks if c.verdict == VIOLATION]

    def as_dict(self) -> dict:
        return {
            "status": "ok" if self.healthy else "violation",
            "checked_at": self.checked_at.isoformat(),
            "violations": self.violations,
            "checks": [c.as_dict() for c in self.checks],
        }

    def summary(self) -> dict:
        """Verdicts without rows: what the dashboard and metrics show."""
        return {
            "status": "ok" if self.healthy else "violation",
            "checked_at": self.checked_at.isoformat(),
            "checks": [
                {"name": c.name, "title": c.title, "verdict": c.verdict, "detail": c.detail, "rows_total": c.rows_total}
                for c in self.checks
            ],
        }


def _described(summary: str, *, callbacks: bool = False):
    """What a check holds, in a few words (`kanal check --help` lists them),
    and whether it reads the callbacks tables (skipped without them)."""

    def mark(check):
        check.summary = summary
        check.needs_callbacks = callbacks
        return check

    return mark


def _rows(records: list[asyncpg.Record]) -> list[dict]:
    out = []
    for record in records:
        row = {}
        for key, value in record.items():
            row[key] = value.isoformat() if isinstance(value, dt.datetime | dt.date) else value
        out.append(row)
    return out


async def _offending(
    conn: asyncpg.Connection, name: str, title: str, sql: str, limits: Limits, *args, ok: str, bad: str
) -> CheckResult:
    """Run `sql` (which lists offending rows) and count and cap them."""
    records = await conn.fetch(f"select * from ({sql}) q limit {int(limits.rows_max)}", *args)
    total = len(records)
    if total >= limits.rows_max:  # there may be more than were listed: count them all
        total = await conn.fetchval(f"select count(*) from ({sql}) q", *args)
    rows = _rows(records)
    if total == 0:
        return CheckResult(name, title, OK, ok)
    return CheckResult(name, title, VIOLATION, bad.format(n=total), rows, total)


# ------------------------------------------------------------ the checks ----


@_described("every entry balances")
async def entries_balance(conn: asyncpg.Connection, limits: Limits) -> CheckResult:
    sql = """
        select e.id as entry_id, e.kind, e.payment_id, e.npp,
               count(p.id)::int as postings, coalesce(sum(p.amount_rupiah), 0)::bigint as sum_rupiah
          from journal_entries e left join postings p on p.entry_id = e.id
         group by e.id
        having coalesce(sum(p.amount_rupiah), 0) <> 0 or count(p.id) < 2
         order by e.id"""
    return await _offending(
        conn, "entries_balance", "Every journal entry balances", sql, limits,
        ok="every entry's postings sum to zero",
        bad="{n} journal entries do not sum to zero or have fewer than two postings",
    )


@_described("the trial balance is zero")
async def trial_balance(conn: asyncpg.Connection, limits: Limits) -> CheckResult:
    by_kind = await conn.fetch(
        """select a.kind, coalesce(sum(p.amount_rupiah), 0)::bigint as sum_rupiah
             from postings p join accounts a on a.id = p.account_id group by a.kind order by a.kind"""
    )
    total = sum(r["sum_rupiah"] for r in by_kind)
    figures = {"total_rupiah": total, "by_kind": {r["kind"]: r["sum_rupiah"] for r in by_kind}}
    title = "The trial balance is zero"
    if total == 0:
        return CheckResult("trial_balance", title, OK, "debits equal credits over all postings", figures=figures)
    # Name the postings that carry the difference: those of unbalanced entries.
    records = await conn.fetch(
        f"""select p.id as posting_id, p.entry_id, a.code as account, p.npp, p.amount_rupiah
              from postings p join accounts a on a.id = p.account_id
             where p.entry_id in (select entry_id from postings group by entry_id having sum(amount_rupiah) <> 0)
             order by p.entry_id, p.id limit {int(limits.rows_max)}"""
    )
    rows_total = len(records)
    if rows_total >= limits.rows_max:  # there may be more than were listed: count them all
        rows_total = await conn.fetchval(
            """select count(*) from postings
                where entry_id in (select entry_id from postings group by entry_id having sum(amount_rupiah) <> 0)"""
        )
    return CheckResult(
        "trial_balance", title, VIOLATION,
        f"all postings sum to {total} rupiah instead of 0", _rows(records), rows_total, figures,
    )


@_described("each posted payment equals its bill")
async def payment_equals_bill(conn: asyncpg.Connection, limits: Limits) -> CheckResult:
    sql = """
        select p.id as payment_id, p.payment_code, p.npp, p.bill_id, p.amount_rupiah,
               b.total_rupiah as bill_total_rupiah, b.status as bill_status
          from payments p join bills b on b.id = p.bill_id
         where p.status = 'posted' and (p.amount_rupiah <> b.total_rupiah or b.status <> 'paid')
         order by p.id"""
    return await _offending(
        conn, "payment_equals_bill", "Each posted payment equals its bill", sql, limits,
        ok="every standing payment equals its bill's total",
        bad="{n} standing payments differ from their bill or their bill is not marked paid",
    )


@_described("no bill is paid twice")
async def bill_paid_once(conn: asyncpg.Connection, limits: Limits) -> CheckResult:
    sql = """
        select b.id as bill_id, b.payment_code, b.npp, b.status as bill_status,
               count(p.id)::int as standing_payments, coalesce(array_agg(p.id order by p.id) filter (where p.id is not null), '{}') as payment_ids
          from bills b left join payments p on p.bill_id = b.id and p.status = 'posted'
         where b.status = 'paid' or p.id is not null
         group by b.id
        having count(p.id) <> case when b.status = 'paid' then 1 else 0 end
         order by b.id"""
    return await _offending(
        conn, "bill_paid_once", "No bill is paid twice", sql, limits,
        ok="every paid bill has exactly one standing payment, every open bill none",
        bad="{n} bills have a number of standing payments that does not match their status",
    )


# Each payment's postings, netted over its entries and grouped into what a bill
# line pays for, against what its bill's lines say (zero once reversed).
_FUNDS_SQL = """
with ledger as (
    select e.payment_id,
           case when a.code like 'jht:%' then 'jht'
                when a.code like 'clearing:%' then 'clearing'
                else a.code end as bucket,
           sum(p.amount_rupiah)::bigint as amount
      from postings p
      join journal_entries e on e.id = p.entry_id
      join accounts a on a.id = p.account_id
     group by 1, 2
), lines as (
    select bill_id,
           sum(employer_rupiah + worker_rupiah) filter (where program = 'JKK') as jkk,
           sum(employer_rupiah + worker_rupiah) filter (where program = 'JKM') as jkm,
           sum(employer_rupiah + worker_rupiah) filter (where program = 'JP') as jp,
           sum(employer_rupiah + worker_rupiah) filter (where program = 'JKP') as jkp,
           sum(employer_rupiah + worker_rupiah) filter (where program = 'JHT') as jht,
           sum(employer_rupiah + worker_rupiah) filter (where program = 'DENDA') as denda,
           sum(government_rupiah) as government
      from bill_lines group by bill_id
), expected as (
    select pay.id as payment_id, x.bucket, (x.amount * case when pay.status = 'posted' then 1 else 0 end)::bigint as amount
      from payments pay
      join lines l on l.bill_id = pay.bill_id
     cross join lateral (values
        ('clearing', pay.amount_rupiah),
        ('fund:JKK', -coalesce(l.jkk, 0)),
        ('fund:JKM', -coalesce(l.jkm, 0)),
        ('fund:JP', -coalesce(l.jp, 0)),
        ('fund:JKP', -coalesce(l.jkp, 0) - coalesce(l.government, 0)),
        ('jht', -coalesce(l.jht, 0)),
        ('income:late_fees', -coalesce(l.denda, 0)),
        ('receivable:government:JKP', coalesce(l.government, 0))
     ) as x(bucket, amount)
)
select coalesce(x.payment_id, g.payment_id) as payment_id, pay.bill_id, pay.payment_code, pay.npp,
       coalesce(x.bucket, g.bucket) as account, coalesce(g.amount, 0) as ledger_rupiah,
       coalesce(x.amount, 0) as billed_rupiah
  from expected x
  full join ledger g on g.payment_id = x.payment_id and g.bucket = x.bucket
  join payments pay on pay.id = coalesce(x.payment_id, g.payment_id)
 where coalesce(g.amount, 0) <> coalesce(x.amount, 0)
 order by 1, 5
"""


@_described("fund totals equal the bill lines")
async def funds_equal_lines(conn: asyncpg.Connection, limits: Limits) -> CheckResult:
    return await _offending(
        conn, "funds_equal_lines", "Fund totals equal the bill lines", _FUNDS_SQL, limits,
        ok="every payment credited each fund exactly its bill's lines",
        bad="{n} (payment, account) pairs differ from the bill's lines",
    )


@_described("coverage counters equal a recount")
async def coverage_counters(conn: asyncpg.Connection, limits: Limits) -> CheckResult:
    # Bucket by bucket, over all time: the counters (folded totals and the
    # deltas not folded yet, migration 0020) must add up to the number of
    # participants whose last paid period is that bucket. Stronger than
    # comparing "protected as of today", and it names the bucket.
    sql = """
        with counters as (
            select regency_code, program, segment, last_paid_period, sum(n)::bigint as n
              from coverage_buckets group by 1, 2, 3, 4
        ), recount as (
            select regency_code, program, segment, last_paid_period, count(*)::bigint as n
              from participant_coverage where last_paid_period is not null group by 1, 2, 3, 4
        )
        select coalesce(c.regency_code, r.regency_code) as regency_code, coalesce(c.program, r.program) as program,
               coalesce(c.segment, r.segment) as segment,
               coalesce(c.last_paid_period, r.last_paid_period) as last_paid_period,
               coalesce(c.n, 0) as counter, coalesce(r.n, 0) as recount
          from counters c
          full join recount r using (regency_code, program, segment, last_paid_period)
         where coalesce(c.n, 0) <> coalesce(r.n, 0)
         order by 1, 2, 3, 4"""
    return await _offending(
        conn, "coverage_counters", "Coverage counters equal a recount", sql, limits,
        ok="every counter bucket equals the participants it counts",
        bad="{n} counter buckets differ from a recount of participant_coverage",
    )


async def _table_exists(conn: asyncpg.Connection, name: str) -> bool:
    return await conn.fetchval("select to_regclass($1) is not null", name)


# The outbox rows the callback relay has still to take: after its cursor, or
# after the earliest endpoint's starting point if that is later, as the relay
# itself reads them (callbacks/store.py relay_once). With no endpoint there are
# none, and nothing is read: the relay's cursor does not move then, and every
# event ever written would otherwise count as waiting.
OUTBOX_WAITING_SQL = """
  from outbox o
 where o.id > (select greatest(r.cursor, e.floor)
                 from callback_relay r, (select min(from_outbox_id) as floor from callback_endpoints) e
                where r.id = 1 and e.floor is not null)
   and not exists (select 1 from callback_relayed r where r.outbox_id = o.id)"""


@_described("the outbox is relayed", callbacks=True)
async def outbox_lag(conn: asyncpg.Connection, limits: Limits) -> CheckResult:
    title = "The outbox is relayed"
    figures = {
        "events": await conn.fetchval("select coalesce(max(id), 0) from outbox"),
        "lag_seconds_max": limits.outbox_lag_seconds_max,
    }
    if not await _table_exists(conn, "callback_relay"):
        return CheckResult(
            "outbox_lag", title, SKIPPED,
            "no outbox relay is installed (table callback_relay is absent): nothing consumes the outbox yet",
            figures=figures,
        )
    if not await conn.fetchval("select exists (select 1 from callback_endpoints)"):
        # Without a single endpoint the relay has nobody to relay to and does
        # not move its cursor: events waiting then are not lag.
        return CheckResult(
            "outbox_lag", title, OK, "no callback endpoints are registered: no event waits for the relay",
            figures=figures,
        )
    pending = await conn.fetchrow(
        """select count(*)::bigint as backlog,
                  coalesce(extract(epoch from now() - min(o.created_at)), 0)::float8 as lag_seconds"""
        + OUTBOX_WAITING_SQL
    )
    figures.update(backlog=pending["backlog"], lag_seconds=round(pending["lag_seconds"], 3))
    sql = """
        select o.id as outbox_id, o.event_id::text as event_id, o.topic, o.npp, o.created_at,
               round(extract(epoch from now() - o.created_at))::bigint as age_seconds
""" + OUTBOX_WAITING_SQL + """
           and o.created_at < now() - make_interval(secs => $1)
         order by o.id"""
    result = await _offending(
        conn, "outbox_lag", title, sql, limits, float(limits.outbox_lag_seconds_max),
        ok=f"{pending['backlog']} events waiting, none older than {limits.outbox_lag_seconds_max} s",
        bad="{n} outbox events have waited longer than " + f"{limits.outbox_lag_seconds_max} s for the relay",
    )
    result.figures = figures
    return result


@_described("callback deliveries succeed", callbacks=True)
async def delivery_failure_rate(conn: asyncpg.Connection, limits: Limits) -> CheckResult:
    title = "Callback deliveries succeed"
    if not await _table_exists(conn, "callback_deliveries"):
        return CheckResult(
            "delivery_failure_rate", title, SKIPPED,
            "callbacks are not installed (table callback_deliveries is absent)",
        )
    # 'failed' (retries exhausted) and 'gone' (the receiver answered 410) are
    # failures; 'dropped' is a fault an integrator ordered, so it is counted
    # apart and judged neither way.
    counts = await conn.fetchrow(
        """select count(*) filter (where status = 'delivered')::bigint as delivered,
                  count(*) filter (where status in ('failed', 'gone'))::bigint as failed,
                  count(*) filter (where status = 'dropped')::bigint as dropped,
                  (select count(*) from callback_deliveries where status = 'pending')::bigint as pending
             from callback_deliveries
            where status <> 'pending' and finished_at > now() - make_interval(secs => $1)""",
        float(limits.delivery_window_seconds),
    )
    finished = counts["delivered"] + counts["failed"]
    rate_bp = (counts["failed"] * 10_000 + finished // 2) // finished if finished else 0
    figures = dict(counts) | {
        "failure_basis_points": rate_bp,
        "failure_percent": f"{rate_bp // 100}.{rate_bp % 100:02d}",
        "window_seconds": limits.delivery_window_seconds,
        "failure_basis_points_max": limits.delivery_failure_basis_points_max,
    }
    if finished < limits.delivery_sample_min:
        return CheckResult(
            "delivery_failure_rate", title, OK,
            f"{finished} deliveries finished in the last {limits.delivery_window_seconds} s: "
            f"too few to judge (fewer than {limits.delivery_sample_min})",
            figures=figures,
        )
    if rate_bp <= limits.delivery_failure_basis_points_max:
        return CheckResult(
            "delivery_failure_rate", title, OK,
            f"{figures['failure_percent']}% of {finished} finished deliveries failed", figures=figures,
        )
    records = await conn.fetch(
        f"""select id as delivery_id, endpoint_id, event_id::text as event_id, topic, npp, status, attempts,
                   last_http_status, last_error, finished_at
              from callback_deliveries
             where status in ('failed', 'gone') and finished_at > now() - make_interval(secs => $1)
             order by id limit {int(limits.rows_max)}""",
        float(limits.delivery_window_seconds),
    )
    max_bp = limits.delivery_failure_basis_points_max
    return CheckResult(
        "delivery_failure_rate", title, VIOLATION,
        f"{figures['failure_percent']}% of {finished} finished deliveries failed "
        f"(limit {max_bp // 100}.{max_bp % 100:02d}%)",
        _rows(records), counts["failed"], figures,
    )


@_described("callback counters equal a recount", callbacks=True)
async def callback_counters(conn: asyncpg.Connection, limits: Limits) -> CheckResult:
    # What /metrics and the dashboard show (the folded totals and the deltas
    # not folded yet) against a recount, status by status. Rows written with
    # triggers off are what this catches (docs/callbacks.md: rebuilding).
    title = "Callback counters equal a recount"
    if not await _table_exists(conn, "callback_counts"):
        return CheckResult(
            "callback_counters", title, SKIPPED,
            "callback counters are not installed (view callback_counts is absent)",
        )
    sql = """
        with recount as (
            select 'delivery' as kind, status, count(*)::bigint as n from callback_deliveries group by status
            union all
            select 'attempt', outcome, count(*)::bigint from callback_attempts group by outcome
        )
        select coalesce(c.kind, r.kind) as kind, coalesce(c.status, r.status) as status,
               coalesce(c.n, 0) as counter, coalesce(r.n, 0) as recount
          from callback_counts c
          full join recount r using (kind, status)
         where coalesce(c.n, 0) <> coalesce(r.n, 0)
         order by 1, 2"""
    return await _offending(
        conn, "callback_counters", title, sql, limits,
        ok="every delivery status and attempt outcome counter equals a recount",
        bad="{n} callback counters differ from a recount (docs/callbacks.md: rebuilding the counters)",
    )


CHECKS: tuple[Callable[[asyncpg.Connection, Limits], Awaitable[CheckResult]], ...] = (
    entries_balance,
    trial_balance,
    payment_equals_bill,
    bill_paid_once,
    funds_equal_lines,
    coverage_counters,
    outbox_lag,
    delivery_failure_rate,
    callback_counters,
)
CHECK_NAMES = tuple(check.__name__ for check in CHECKS)


async def run_checks(
    pool: asyncpg.Pool, limits: Limits | None = None, *, only: list[str] | None = None
) -> HealthReport:
    """Run the checks (all, or those named in `only`) on one snapshot."""
    limits = limits or Limits()
    unknown = set(only or ()) - set(CHECK_NAMES)
    if unknown:
        raise ValueError(f"unknown checks {sorted(unknown)}; known: {', '.join(CHECK_NAMES)}")
    results = []
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        checked_at = await conn.fetchval("select now()")
        for check in CHECKS:
            if only and check.__name__ not in only:
                continue
            results.append(await check(conn, limits))
    return HealthReport(checked_at.astimezone(WIB), results)
