"""Billing a whole province for one month in a few set-based statements.

`gateway.service.employers.submit_wage_report` bills one employer at a time:
it computes every line in Python and issues each BPU bill with its own
INSERT, COPY and outbox row. That is right for one employer's request, and
slow for 1.8 million workers (half of them BPU, one bill each). This module
does the same work for many employers at once, in PostgreSQL, per chunk of
employers in one transaction:

1. one row per participant to bill (`sim_people`) with the amount of each of
   its lines, from the rate table in force (`dues.rate_schedule_for`: the
   rates are parameters, the SQL only does `divide_half_up` arithmetic the
   same way as `gateway.domain.dues`), and the late fees of PU bills still
   open, or paid, after their deadline (computed in Python by
   `employers.late_fee_owed`);
2. one bill per employer (PU) and per BPU participant, numbered in the order
   the wage reports would issue them (NPP, then the PU bill, then BPU bills
   by participant); the payment codes (from the same sequence and check digit,
   `codes.make_payment_code`) and the bill ids (from the bills' identity
   sequence) are drawn for the whole chunk at once, chunk after chunk, so the
   codes and ids are the ones employer-by-employer billing would give;
3. `bills`, `bill_lines` (each participant's lines expanded from its row, no
   sort of the lines) and the `bill.created` outbox rows with one
   INSERT ... SELECT each, and one NOTIFY.

The result is the same as calling `submit_wage_report` for every employer
with no wage changes (tests/sim/test_billing.py compares them line by line).
Employers whose PU bill for the period exists already are skipped, and a BPU
participant already billed for the period is not billed again; the unique
indexes on bills refuse a second bill even from a concurrent run.
`bill_province` splits the employers into `connections` chunks of about as
many participants each, billed side by side. The database checks every row
written here as it checks the wage report's (migration 0012: once per
statement and once per transaction rather than once per row).

This is a proposal for gateway/service/employers.py (see the report of
issue 9): the simulator's benchmark uses it as it stands.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from dataclasses import dataclass, field

import asyncpg

from gateway.domain import codes, dues
from gateway.domain.periods import WIB, Period, Segment, bill_expires_at, due_date
from gateway.service.employers import LATE_BILL_COLUMNS_SQL, late_fee_owed

# Sorts and hashes over a chunk's rows (a million participants) stay in
# memory instead of spilling to temporary files; set for the billing
# transaction only.
WORK_MEM = "256MB"

# Employers to bill, numbered in NPP order (later joins and sorts use that
# number instead of comparing NPP text).
_EMPLOYERS_SQL = """
create temp table sim_employers on commit drop as
select row_number() over (order by e.npp)::int as e, e.npp, e.jkk_risk_class, s.programs_n,
       not exists (select 1 from bills b where b.npp = e.npp and b.period = $4 and b.kind = 'PU') as pu_open
  from employers e
  join (select unnest($2::text[]) as size_class, unnest($3::int[]) as programs_n) s using (size_class)
 where e.npp = any($1::text[])
"""

# One row per participant to bill, with the amount of each of its lines, and
# `rank`: its place among the employer's participants of its segment.
_PEOPLE_SQL = """
create temp table sim_people on commit drop as
with pu as (
    select e.e, p.id, p.wage_rupiah as w, e.programs_n,
           (2 * p.wage_rupiah * ($2::int[])[e.jkk_risk_class] + 10000) / 20000 as jkk_total,
           case when e.programs_n >= 5 then (2 * p.wage_rupiah * $3::bigint + 10000) / 20000 else 0 end as jkk_carve,
           (2 * p.wage_rupiah * $4::bigint + 10000) / 20000 as jkm_total,
           case when e.programs_n >= 5 then (2 * p.wage_rupiah * $5::bigint + 10000) / 20000 else 0 end as jkm_carve,
           least(p.wage_rupiah, $10::bigint) as jp_basis,
           least(p.wage_rupiah, $12::bigint) as gov_basis
      from participants p join sim_employers e using (npp)
     where p.segment = 'PU' and e.pu_open
), pu_lines as (
    select pu.*, jkk_total - jkk_carve as l1_er, jkm_total - jkm_carve as l2_er,
           -- dues.worker_share_rule: the program rounded once, the worker's share on its own, the employer the rest.
           (2 * w * ($6::bigint + $7::bigint) + 10000) / 20000 - (2 * w * $7::bigint + 10000) / 20000 as l3_er,
           (2 * w * $7::bigint + 10000) / 20000 as l3_wr,
           (2 * jp_basis * ($8::bigint + $9::bigint) + 10000) / 20000 - (2 * jp_basis * $9::bigint + 10000) / 20000 as l4_er,
           (2 * jp_basis * $9::bigint + 10000) / 20000 as l4_wr,
           jkk_carve + jkm_carve as l5_er, (2 * gov_basis * $11::bigint + 10000) / 20000 as l5_gov
      from pu
), people as (
    select e, false as bpu, id as participant_id, programs_n,
           w as basis, l1_er, 0::bigint as l1_wr, l2_er, 0::bigint as l2_wr, l3_er, l3_wr, jp_basis as l4_basis, l4_er, l4_wr,
           l5_er, l5_gov,
           l1_er + l2_er + case when programs_n >= 3 then l3_er + l3_wr else 0 end
                         + case when programs_n >= 4 then l4_er + l4_wr else 0 end
                         + case when programs_n >= 5 then l5_er else 0 end as total
      from pu_lines
    union all
    select e.e, true, p.id, 2, p.wage_rupiah,
           0, least(greatest((2 * p.wage_rupiah * $13::bigint + 10000) / 20000, $14::bigint), $15::bigint), 0, $16::bigint,
           0, 0, 0, 0, 0, 0, 0,
           least(greatest((2 * p.wage_rupiah * $13::bigint + 10000) / 20000, $14::bigint), $15::bigint) + $16::bigint
      from participants p join sim_employers e using (npp)
     where p.segment = 'BPU'
       and not exists (select 1 from bills b where b.participant_id = p.id and b.period = $1 and b.kind = 'BPU')
)
select people.*, row_number() over (partition by e, bpu order by participant_id)::int as rank from people
"""

# The wage report's late bills (employers.LATE_BILLS_SQL): open, or paid
# after their due date (the payment's day in $2, WIB).
_LATE_SQL = LATE_BILL_COLUMNS_SQL + """
 where b.npp in (select e.npp from sim_employers e where exists (select 1 from sim_people p where p.e = e.e and not p.bpu))
   and b.kind = 'PU' and b.due_date < $1
   and (b.status = 'open' or (pay.posted_at at time zone $2)::date > b.due_date)
 order by b.id
"""

_FEES_SQL = """
create temp table sim_fees on commit drop as
select e.e, f.source_bill_id, f.dues, f.fee, f.months
  from unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::int[]) as f(npp, source_bill_id, dues, fee, months)
  join sim_employers e using (npp)
"""

# Per employer: its PU bill (when it has wage earners to bill) and its BPU
# bills, numbered in the wage reports' order (NPP; the PU bill, then BPU
# bills by participant id) from `first_n`.
_BILLED_EMPLOYERS_SQL = """
create temp table sim_billed on commit drop as
select e.e, e.npp, e.programs_n, coalesce(p.pu_people, 0) as pu_people, coalesce(p.bpu_people, 0) as bpu_people,
       coalesce(p.pu_total, 0) + coalesce(f.fees, 0) as pu_total, coalesce(f.n, 0) as fees_n,
       1 + coalesce(sum(case when p.pu_people > 0 then 1 else 0 end + coalesce(p.bpu_people, 0))
                    over (order by e.e rows between unbounded preceding and 1 preceding), 0) as first_n
  from sim_employers e
  left join (select e, count(*) filter (where not bpu)::int as pu_people, count(*) filter (where bpu)::int as bpu_people,
                    sum(total) filter (where not bpu) as pu_total
               from sim_people group by e) p using (e)
  left join (select e, sum(fee) as fees, count(*)::int as n from sim_fees group by e) f using (e)
"""

_COUNT_SQL = """
select coalesce(sum(case when pu_people > 0 then 1 else 0 end + bpu_people), 0) from sim_billed
"""

# The bills, in their numbering order, and their bill.created events.
_INSERT_BILLS_SQL = """
with bills_to_issue as (
    select first_n as n, 'PU'::text as kind, npp, null::bigint as participant_id, pu_total as total_rupiah,
           pu_people * programs_n + fees_n as line_count
      from sim_billed where pu_people > 0
    union all
    select b.first_n + case when b.pu_people > 0 then 1 else 0 end + p.rank - 1, 'BPU', b.npp, p.participant_id, p.total, 2
      from sim_people p join sim_billed b using (e) where p.bpu
), issued as (
    insert into bills (id, payment_code, npp, kind, participant_id, period, due_date, expires_at, total_rupiah, line_count)
    overriding system value
    select k.id, k.code, t.npp, t.kind, t.participant_id, $3,
           case when t.kind = 'PU' then $4::date else $5::date end,
           case when t.kind = 'PU' then $6::timestamptz else $7::timestamptz end,
           t.total_rupiah, t.line_count
      from bills_to_issue t join unnest($1::bigint[], $2::text[]) with ordinality as k(id, code, n) using (n)
     order by t.n
    returning id, payment_code, npp, kind, total_rupiah, due_date
)
insert into outbox (topic, npp, payload)
select 'bill.created', npp,
       jsonb_build_object('payment_id', null, 'payment_code', payment_code, 'npp', npp, 'period', $3::text,
                          'kind', kind, 'total_rupiah', total_rupiah, 'due_date', due_date)
  from issued order by id
"""

# Each participant's lines come from its row: line k of an employer's j-th
# wage earner is line (j - 1) * programs + k of the employer's bill (the
# programs an employer enrols are the first `programs_n` of
# dues.PROGRAM_ORDER), and late fees follow, by the bill they charge for.
# $1 holds the bill ids by bill number.
_INSERT_LINES_SQL = """
insert into bill_lines (bill_id, line_no, npp, participant_id, program, basis_rupiah, employer_rupiah, worker_rupiah,
                        government_rupiah, late_fee_source_bill_id, late_fee_months)
select ($1::bigint[])[b.first_n + case when p.bpu then case when b.pu_people > 0 then 1 else 0 end + p.rank - 1 else 0 end],
       case when p.bpu then x.ord else (p.rank - 1) * p.programs_n + x.ord end,
       b.npp, p.participant_id, x.program, x.basis, x.employer_rupiah, x.worker_rupiah, x.government_rupiah, null, null
  from sim_people p
  join sim_billed b using (e)
 cross join lateral (values
    (1, 'JKK', p.basis, p.l1_er, p.l1_wr, 0::bigint),
    (2, 'JKM', p.basis, p.l2_er, p.l2_wr, 0),
    (3, 'JHT', p.basis, p.l3_er, p.l3_wr, 0),
    (4, 'JP', p.l4_basis, p.l4_er, p.l4_wr, 0),
    (5, 'JKP', p.basis, p.l5_er, 0, p.l5_gov)
 ) as x(ord, program, basis, employer_rupiah, worker_rupiah, government_rupiah)
 where x.ord <= p.programs_n
union all
select ($1::bigint[])[b.first_n], b.pu_people * b.programs_n + row_number() over (partition by f.e order by f.source_bill_id),
       b.npp, null, 'DENDA', f.dues, f.fee, 0, 0, f.source_bill_id, f.months
  from sim_fees f join sim_billed b using (e)
 where b.pu_people > 0
"""


@dataclass
class Billed:
    employers: int
    bills: int
    bill_lines: int
    total_rupiah: int
    seconds: dict[str, float] = field(default_factory=dict)


class _Turns:
    """Chunks draw their payment codes and bill ids one after the other, in
    chunk order, so that both follow the NPP order whatever chunk is ready
    first."""

    def __init__(self, chunks: int) -> None:
        self._done = [asyncio.Event() for _ in range(chunks)]

    async def wait(self, chunk: int) -> None:
        if chunk > 0:
            await self._done[chunk - 1].wait()

    def done(self, chunk: int) -> None:
        # Also when the chunk failed: the next one must not wait forever.
        self._done[chunk].set()


def _programs_per_size() -> tuple[list[str], list[int]]:
    """Each size class and how many programs it enrols. The SQL numbers lines
    by program position, which holds because every size class enrols a prefix
    of dues.PROGRAM_ORDER; a rule that breaks that must change the SQL."""
    sizes = [str(size) for size in dues.SizeClass]
    counts = []
    for size in sizes:
        programs = dues.programs_for(size)
        if programs != dues.PROGRAM_ORDER[: len(programs)]:
            raise NotImplementedError(f"{size} employers enrol {programs}, not a prefix of {dues.PROGRAM_ORDER}")
        counts.append(len(programs))
    return sizes, counts


def _rate_parameters(period: Period) -> list:
    s = dues.rate_schedule_for(period)
    sizes, counts = _programs_per_size()
    return [
        sizes,
        counts,
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


class _Laps:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._mark = time.perf_counter()

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = round(self.seconds.get(name, 0.0) + now - self._mark, 3)
        self._mark = now


async def _late_fees(conn: asyncpg.Connection, today: dt.date) -> None:
    """What each PU bill past its deadline, open or paid late, still owes in
    late fees, into sim_fees (the same rule as the wage report's
    `_late_fee_lines`)."""
    fees = []
    for bill in await conn.fetch(_LATE_SQL, today, WIB.key):
        months, fee = late_fee_owed(bill["due_date"], bill["dues"], bill["charged"], bill["paid_at"], today)
        if fee > 0:
            fees.append((bill["npp"], bill["id"], bill["dues"], fee, months))
    await conn.execute(_FEES_SQL, *(list(column) for column in zip(*fees, strict=True)) if fees else ([],) * 5)


async def _draw(conn: asyncpg.Connection, count: int) -> tuple[list[int], list[int]]:
    """`count` bill ids and payment-code serials, from the sequences every path
    uses."""
    rows = await conn.fetch(
        "select nextval(pg_get_serial_sequence('bills', 'id')) as id, nextval('payment_code_serial') as serial"
        "  from generate_series(1, $1)",
        count,
    )
    return [r["id"] for r in rows], [r["serial"] for r in rows]


async def bill_employers(
    conn: asyncpg.Connection,
    npps: list[str],
    period: Period,
    now: dt.datetime,
    expiry_days_after_due: int = 90,
    *,
    turns: _Turns | None = None,
    chunk: int = 0,
) -> Billed:
    """Issue the month's bills of `npps` in one transaction (see the module)."""
    laps = _Laps()
    today = now.astimezone(WIB).date()
    pu_due = due_date(period, Segment.PU)
    bpu_due = due_date(period, Segment.BPU)
    try:
        async with conn.transaction():
            await conn.execute(f"set local work_mem = '{WORK_MEM}'")
            rates = _rate_parameters(period)
            await conn.execute(_EMPLOYERS_SQL, npps, *rates[:3])
            await conn.execute(_PEOPLE_SQL, *rates[2:])
            await conn.execute("analyze sim_employers; analyze sim_people")
            laps("people")
            await _late_fees(conn, today)
            await conn.execute(_BILLED_EMPLOYERS_SQL)
            count = await conn.fetchval(_COUNT_SQL)
            laps("late_fees")
            if turns is not None:
                await turns.wait(chunk)
            laps("wait_turn")
            ids, serials = await _draw(conn, count)
            if turns is not None:
                turns.done(chunk)
            payment_codes = await asyncio.to_thread(lambda: [codes.make_payment_code(s) for s in serials])
            laps("draw_codes")
            status = await conn.execute(
                _INSERT_BILLS_SQL, ids, payment_codes, str(period), pu_due, bpu_due,
                bill_expires_at(pu_due, expiry_days_after_due, today), bill_expires_at(bpu_due, expiry_days_after_due, today),
            )
            if int(status.split()[-1]) != count:  # cannot happen; would leave drawn ids unused
                raise RuntimeError(f"{count} bills numbered, {status} written")
            await conn.execute("select pg_notify('kanal_events', 'bill.created')")
            laps("insert_bills")
            lines = int((await conn.execute(_INSERT_LINES_SQL, ids)).split()[-1])
            laps("insert_lines")
            totals = await conn.fetchrow(
                """select count(*) filter (where pu_people > 0 or bpu_people > 0)::int as employers,
                          (coalesce(sum(pu_total) filter (where pu_people > 0), 0)
                           + (select coalesce(sum(total), 0) from sim_people where bpu))::bigint as total
                     from sim_billed"""
            )
    finally:
        if turns is not None:
            turns.done(chunk)
    laps("commit")  # the bill-total check runs here, once for the chunk
    return Billed(totals["employers"], count, lines, totals["total"], laps.seconds)


def _chunks(workers_by_npp: list[tuple[str, int]], connections: int) -> list[list[str]]:
    """Employers in NPP order cut into `connections` runs of about as many
    participants each."""
    total = sum(n for _, n in workers_by_npp)
    target = -(-total // max(1, connections)) if total else 0
    chunks: list[list[str]] = [[]]
    held = 0
    for npp, n in workers_by_npp:
        if held >= target and len(chunks) < connections:
            chunks.append([])
            held = 0
        chunks[-1].append(npp)
        held += n
    return [c for c in chunks if c]


async def bill_province(
    pool: asyncpg.Pool, period: Period, now: dt.datetime, *, connections: int = 2, expiry_days_after_due: int = 90
) -> Billed:
    """Every employer's bills for `period`, the employers split into
    `connections` chunks (contiguous in NPP order) billed side by side."""
    rows = await pool.fetch(
        """select e.npp, coalesce(p.n, 0) as n from employers e
             left join (select npp, count(*) as n from participants group by npp) p using (npp)
            order by e.npp"""
    )
    chunks = _chunks([(r["npp"], r["n"]) for r in rows], connections)
    turns = _Turns(len(chunks))

    async def one(n: int, chunk: list[str]) -> Billed:
        async with pool.acquire() as conn:
            return await bill_employers(conn, chunk, period, now, expiry_days_after_due, turns=turns, chunk=n)

    results = await asyncio.gather(*(one(n, c) for n, c in enumerate(chunks)))
    seconds: dict[str, float] = {}
    for r in results:
        for k, v in r.seconds.items():
            seconds[k] = max(seconds.get(k, 0.0), v)
    return Billed(
        sum(r.employers for r in results), sum(r.bills for r in results), sum(r.bill_lines for r in results),
        sum(r.total_rupiah for r in results), seconds,
    )
