"""Billing a whole province for one month in a few set-based statements.

`gateway.service.employers.submit_wage_report` bills one employer at a time:
it computes every line in Python and issues each BPU bill with its own
INSERT, COPY and outbox row. That is right for one employer's request, and
slow for 1.8 million workers (half of them BPU, one bill each). This module
does the same work for many employers at once, in PostgreSQL:

1. each participant's lines from the rate table in force (`dues.rate_schedule_for`:
   the rates are parameters, the SQL only does `divide_half_up` arithmetic the
   same way as `gateway.domain.dues`), and the late fees of open PU bills past
   their deadline (computed in Python by `dues.months_late` / `late_fee_rupiah`);
2. one bill per employer (PU) and per BPU participant, with payment codes from
   the same sequence and check digit (`codes.make_payment_code`);
3. `bills`, `bill_lines` and the `bill.created` outbox rows with one
   INSERT ... SELECT each, and one NOTIFY.

The result is the same as calling `submit_wage_report` for every employer
with no wage changes (tests/sim/test_billing.py compares them line by line).
Employers whose PU bill for the period exists already are skipped, and a BPU
participant already billed for the period is not billed again. Each call is
one transaction; `bill_province` splits the employers into `connections`
chunks that run side by side.

This is a proposal for gateway/service/employers.py (see the report of
issue 9): the simulator's benchmark uses it as it stands.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass

import asyncpg

from gateway.domain import codes, dues
from gateway.domain.periods import WIB, Period, Segment, due_date

ORDER = {str(p): n for n, p in enumerate(dues.PROGRAM_ORDER, start=1)}

_STAGE_SQL = """
create temp table sim_lines on commit drop as
with e as (
    select e.npp, e.size_class, e.jkk_risk_class, s.programs
      from employers e
      join (select unnest($2::text[]) as size_class, unnest($3::text[]) as programs) s using (size_class)
     where e.npp = any($1::text[])
       and not exists (select 1 from bills b where b.npp = e.npp and b.period = $4 and b.kind = 'PU')
), pu as (
    select p.id as participant_id, p.npp, p.wage_rupiah as w, e.jkk_risk_class, string_to_array(e.programs, ',') as programs,
           'JKP' = any(string_to_array(e.programs, ',')) as jkp
      from participants p join e using (npp)
     where p.segment = 'PU'
), pu_amounts as (
    select pu.*,
           (2 * w * ($5::int[])[jkk_risk_class] + 10000) / 20000 as jkk_total,
           case when jkp then (2 * w * $6::bigint + 10000) / 20000 else 0 end as jkk_carve,
           (2 * w * $7::bigint + 10000) / 20000 as jkm_total,
           case when jkp then (2 * w * $8::bigint + 10000) / 20000 else 0 end as jkm_carve,
           least(w, $13::bigint) as jp_basis,
           least(w, $15::bigint) as gov_basis
      from pu
)
select 'PU'::text as kind, a.npp, a.participant_id, x.program, x.ord, x.basis, x.employer_rupiah, x.worker_rupiah,
       x.government_rupiah, null::bigint as late_fee_source_bill_id, null::int as late_fee_months
  from pu_amounts a
 cross join lateral (values
    ('JKK', 1, a.w, a.jkk_total - a.jkk_carve, 0::bigint, 0::bigint),
    ('JKM', 2, a.w, a.jkm_total - a.jkm_carve, 0, 0),
    ('JHT', 3, a.w, (2 * a.w * $9::bigint + 10000) / 20000, (2 * a.w * $10::bigint + 10000) / 20000, 0),
    ('JP', 4, a.jp_basis, (2 * a.jp_basis * $11::bigint + 10000) / 20000, (2 * a.jp_basis * $12::bigint + 10000) / 20000, 0),
    ('JKP', 5, a.w, a.jkk_carve + a.jkm_carve, 0, (2 * a.gov_basis * $14::bigint + 10000) / 20000)
 ) as x(program, ord, basis, employer_rupiah, worker_rupiah, government_rupiah)
 where x.program = any(a.programs)
union all
select 'BPU', p.npp, p.id, x.program, x.ord, p.wage_rupiah, 0, x.worker_rupiah, 0, null, null
  from participants p
 cross join lateral (values
    ('JKK', 1, least(greatest((2 * p.wage_rupiah * $16::bigint + 10000) / 20000, $17::bigint), $18::bigint)),
    ('JKM', 2, $19::bigint)
 ) as x(program, ord, worker_rupiah)
 where p.npp = any($1::text[]) and p.segment = 'BPU'
   and not exists (select 1 from bills b where b.participant_id = p.id and b.period = $4)
"""

_BILLS_SQL = """
create temp table sim_bills on commit drop as
select row_number() over (order by npp, participant_id nulls first) as n, g.*
  from (select kind, npp, case when kind = 'BPU' then participant_id end as participant_id,
               sum(employer_rupiah + worker_rupiah)::bigint as total_rupiah, count(*)::int as line_count
          from sim_lines
         group by 1, 2, 3) g
"""

_INSERT_BILLS_SQL = """
create temp table sim_issued on commit drop as
with c as (select code, n from unnest($1::text[]) with ordinality as c(code, n)),
ins as (
    insert into bills (payment_code, npp, kind, participant_id, period, due_date, expires_at, total_rupiah, line_count)
    select c.code, s.npp, s.kind, s.participant_id, $2,
           case when s.kind = 'PU' then $3::date else $4::date end,
           case when s.kind = 'PU' then $5::timestamptz else $6::timestamptz end,
           s.total_rupiah, s.line_count
      from sim_bills s join c using (n)
     order by s.n
    returning id, payment_code, npp, kind, participant_id, total_rupiah, due_date
)
select * from ins
"""

_INSERT_LINES_SQL = """
insert into bill_lines (bill_id, line_no, npp, participant_id, program, basis_rupiah, employer_rupiah, worker_rupiah,
                        government_rupiah, late_fee_source_bill_id, late_fee_months)
select b.id, row_number() over (partition by b.id order by l.participant_id nulls last, l.late_fee_source_bill_id, l.ord),
       l.npp, case when l.program = 'DENDA' then null else l.participant_id end, l.program, l.basis, l.employer_rupiah,
       l.worker_rupiah, l.government_rupiah, l.late_fee_source_bill_id, l.late_fee_months
  from sim_lines l
  join sim_issued b on b.npp = l.npp and b.kind = l.kind
                   and coalesce(b.participant_id, 0) = case when l.kind = 'BPU' then l.participant_id else 0 end
"""

_OUTBOX_SQL = """
insert into outbox (topic, npp, payload)
select 'bill.created', npp,
       jsonb_build_object('payment_id', null, 'payment_code', payment_code, 'npp', npp, 'period', $1::text,
                          'kind', kind, 'total_rupiah', total_rupiah, 'due_date', due_date)
  from sim_issued order by id
"""

_LATE_SQL = """
select b.id, b.npp, b.due_date,
       (select coalesce(sum(employer_rupiah + worker_rupiah), 0) from bill_lines
         where bill_id = b.id and program <> 'DENDA')::bigint as dues,
       (select coalesce(sum(employer_rupiah), 0) from bill_lines
         where late_fee_source_bill_id = b.id)::bigint as charged
  from bills b
 where b.npp = any($1::text[]) and b.kind = 'PU' and b.status = 'open' and b.due_date < $2
   and exists (select 1 from sim_lines l where l.npp = b.npp and l.kind = 'PU')
 order by b.id
"""


@dataclass
class Billed:
    employers: int
    bills: int
    bill_lines: int
    total_rupiah: int
    seconds: dict[str, float]


def _expires_at(due: dt.date, expiry_days_after_due: int) -> dt.datetime:
    return dt.datetime.combine(due + dt.timedelta(days=expiry_days_after_due + 1), dt.time(), WIB)


def _rate_parameters(period: Period) -> list:
    s = dues.rate_schedule_for(period)
    sizes = [str(size) for size in dues.SizeClass]
    return [
        sizes,
        [",".join(str(p) for p in dues.programs_for(size)) for size in sizes],
        str(period),
        list(s.jkk_basis_points_by_risk_class),
        s.jkp_from_jkk_basis_points,
        s.jkm_basis_points,
        s.jkp_from_jkm_basis_points,
        s.jht_employer_basis_points,
        s.jht_worker_basis_points,
        s.jp_employer_basis_points,
        s.jp_worker_basis_points,
        s.jp_wage_cap_rupiah,
        s.jkp_government_basis_points,
        s.jkp_government_wage_cap_rupiah,
        s.bpu_jkk_basis_points,
        s.bpu_jkk_minimum_rupiah,
        s.bpu_jkk_maximum_rupiah,
        s.bpu_jkm_flat_rupiah,
    ]


async def bill_employers(
    conn: asyncpg.Connection, npps: list[str], period: Period, now: dt.datetime, expiry_days_after_due: int = 90
) -> Billed:
    """Issue the month's bills of `npps` in one transaction (see the module)."""
    import time

    seconds: dict[str, float] = {}
    mark = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal mark
        now_s = time.perf_counter()
        seconds[name] = round(seconds.get(name, 0.0) + now_s - mark, 3)
        mark = now_s

    today = now.astimezone(WIB).date()
    async with conn.transaction():
        await conn.execute(_STAGE_SQL, npps, *_rate_parameters(period))
        lap("lines")
        late = await conn.fetch(_LATE_SQL, npps, today)
        fees = []
        for bill in late:
            fee = dues.late_fee_rupiah(bill["dues"], dues.months_late(bill["due_date"], today)) - bill["charged"]
            if fee > 0:
                fees.append((bill["npp"], bill["dues"], fee, bill["id"], dues.months_late(bill["due_date"], today)))
        if fees:
            await conn.executemany(
                """insert into sim_lines (kind, npp, participant_id, program, ord, basis, employer_rupiah, worker_rupiah,
                                          government_rupiah, late_fee_source_bill_id, late_fee_months)
                   values ('PU', $1, null, 'DENDA', 9, $2, $3, 0, 0, $4, $5)""",
                fees,
            )
        lap("late_fees")
        await conn.execute(_BILLS_SQL)
        count = await conn.fetchval("select count(*) from sim_bills")
        serials = await conn.fetch("select nextval('payment_code_serial') as s from generate_series(1, $1)", count)
        lap("bills")
        payment_codes = await asyncio.to_thread(lambda: [codes.make_payment_code(r["s"]) for r in serials])
        lap("payment_codes")
        pu_due = due_date(period, Segment.PU)
        bpu_due = due_date(period, Segment.BPU)
        await conn.execute(
            _INSERT_BILLS_SQL, payment_codes, str(period), pu_due, bpu_due,
            _expires_at(pu_due, expiry_days_after_due), _expires_at(bpu_due, expiry_days_after_due),
        )
        lap("insert_bills")
        status = await conn.execute(_INSERT_LINES_SQL)
        lines = int(status.split()[-1])
        lap("insert_lines")
        await conn.execute(_OUTBOX_SQL, str(period))
        await conn.execute("select pg_notify('kanal_events', 'bill.created')")
        lap("outbox")
        totals = await conn.fetchrow("select count(*)::bigint as n, coalesce(sum(total_rupiah), 0)::bigint as total from sim_issued")
        employers = await conn.fetchval("select count(distinct npp) from sim_issued")
    lap("commit")  # the deferred bill-total triggers run here, one per bill
    return Billed(employers, totals["n"], lines, totals["total"], seconds)


async def bill_province(
    pool: asyncpg.Pool, period: Period, now: dt.datetime, *, connections: int = 2, expiry_days_after_due: int = 90
) -> Billed:
    """Every employer's bills for `period`, the employers split into
    `connections` chunks (contiguous in NPP order) billed side by side."""
    npps = [r["npp"] for r in await pool.fetch("select npp from employers order by npp")]
    size = -(-len(npps) // connections) if npps else 0
    chunks = [npps[i : i + size] for i in range(0, len(npps), size)] if size else []

    async def one(chunk: list[str]) -> Billed:
        async with pool.acquire() as conn:
            return await bill_employers(conn, chunk, period, now, expiry_days_after_due)

    results = await asyncio.gather(*(one(c) for c in chunks))
    seconds: dict[str, float] = {}
    for r in results:
        for k, v in r.seconds.items():
            seconds[k] = max(seconds.get(k, 0.0), v)
    return Billed(
        sum(r.employers for r in results), sum(r.bills for r in results), sum(r.bill_lines for r in results),
        sum(r.total_rupiah for r in results), seconds,
    )
