"""Employer use cases: register, add participants, report wages (issue bills),
read bills and participants. Each is one transaction."""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from gateway.domain import codes, coverage, dues
from gateway.domain.money import DomainError
from gateway.domain.periods import WIB, Period, bill_expires_at, due_date
from gateway.domain.regencies import regency_by_code
from gateway.service.errors import Conflict, Invalid, NotFound, ServiceError
from gateway.store.ledger import write_events, write_events_many
from schemas.text import NUL_PROBLEM

API_KEY_PREFIX = "kanal_sk_"


def hash_api_key(api_key: str) -> bytes:
    return hashlib.sha256(api_key.encode()).digest()


def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def _domain_invalid(error: DomainError) -> Invalid:
    return Invalid.field(error.field, error.problem)


# ---------------------------------------------------------------- register --


@dataclass(frozen=True)
class Registered:
    employer: dict
    api_key: str


def employer_view(row: asyncpg.Record | dict) -> dict:
    regency = regency_by_code(row["regency_code"])
    return {
        "npp": row["npp"],
        "name": row["name"],
        "regency_code": row["regency_code"],
        "regency_name": regency.name,
        "size_class": row["size_class"],
        "jkk_risk_class": row["jkk_risk_class"],
        "programs": [str(p) for p in dues.programs_for(dues.SizeClass(row["size_class"]))],
    }


async def registration_problems(
    conn: asyncpg.Connection | asyncpg.Pool, npp: str | None, regency_code: str | None
) -> list[dict]:
    """Every domain problem of a registration, in field order: the NPP's
    form, or that it is taken; the regency. None is a value the caller
    already refused: its checks are skipped. Reads only."""
    npp_problems: list[dict] = []
    regency_problems: list[dict] = []
    if npp is not None:
        try:
            npp = codes.validate_npp(npp)
        except DomainError as e:
            npp_problems.append({"field": e.field, "problem": e.problem})
            npp = None
    if regency_code is not None:
        try:
            regency_by_code(regency_code)
        except DomainError as e:
            regency_problems.append({"field": e.field, "problem": e.problem})
    if npp is not None and await conn.fetchval("select 1 from employers where npp = $1", npp):
        npp_problems.append({"field": "npp", "problem": "already registered"})
    return npp_problems + regency_problems


async def register_employer(
    conn: asyncpg.Connection, npp: str, name: str, regency_code: str, size_class: str, jkk_risk_class: int
) -> Registered:
    try:
        npp = codes.validate_npp(npp)
        regency_by_code(regency_code)
    except DomainError:
        # Name every problem at once, not the first one found.
        raise Invalid.many(await registration_problems(conn, npp, regency_code)) from None
    api_key = new_api_key()
    try:
        row = await conn.fetchrow(
            """insert into employers (npp, name, regency_code, size_class, jkk_risk_class, api_key_sha256)
               values ($1, $2, $3, $4, $5, $6) returning *""",
            npp,
            name,
            regency_code,
            size_class,
            jkk_risk_class,
            hash_api_key(api_key),
        )
    except asyncpg.UniqueViolationError:
        raise Conflict(f"an employer with npp {npp} is already registered", [{"field": "npp", "problem": "already registered"}]) from None
    return Registered(employer_view(row), api_key)


async def employer_for_key(conn: asyncpg.Connection | asyncpg.Pool, api_key: str) -> asyncpg.Record | None:
    return await conn.fetchrow("select * from employers where api_key_sha256 = $1", hash_api_key(api_key))


# ------------------------------------------------------------ participants --


PARTICIPANT_FIELDS = ("kpj", "nik", "name", "wage", "segment")
# A row's problems are reported in column order; "row" (the row as a whole) first.
_FIELD_RANK = {"row": -1, **{name: rank for rank, name in enumerate(PARTICIPANT_FIELDS)}}


def field_rank(field: str) -> int:
    return _FIELD_RANK.get(field, len(PARTICIPANT_FIELDS))


def in_row_order(errors: Sequence[dict]) -> list[dict]:
    """Row errors by row, then by column (kpj, nik, name, wage, segment)."""
    return sorted(errors, key=lambda e: (e["row"], field_rank(e["field"])))


@dataclass
class ParticipantRow:
    """One worker to add. A value of None was already refused by the caller
    (a wage that is not a number, a field the wire model rejected): the row
    is never saved, and the checks that need that value are skipped."""

    row: int
    kpj: str | None
    nik: str | None
    name: str | None
    wage: int | None
    segment: str | None


@dataclass
class AddResult:
    saved: int
    errors: list[dict]


@dataclass
class _Checked:
    valid: list[ParticipantRow]
    errors: list[dict]
    # The first row with each well-formed KPJ (NIK) of the upload.
    first_kpj: dict[str, int]
    first_nik: dict[str, int]


def _check_rows(rows: Sequence[ParticipantRow]) -> _Checked:
    """Every field of every row, and duplicates within the upload: a KPJ or
    NIK seen on an earlier row is a duplicate of that row, whatever else is
    wrong with either row, so one answer names every problem."""
    checked = _Checked([], [], {}, {})
    for r in rows:
        problems: list[dict] = []

        def refuse(field: str, problem: str, row: int = r.row, problems: list[dict] = problems) -> None:
            problems.append({"row": row, "field": field, "problem": problem})

        for field, validate, first_row in (("kpj", codes.validate_kpj, checked.first_kpj),
                                           ("nik", codes.validate_nik, checked.first_nik)):
            if getattr(r, field) is None:
                continue
            try:
                value = validate(getattr(r, field))
            except DomainError as e:
                refuse(e.field, e.problem)
                continue
            setattr(r, field, value)
            if value in first_row:
                refuse(field, f"duplicate of row {first_row[value]} in this upload")
            else:
                first_row[value] = r.row
        if r.name is not None:
            if not r.name or len(r.name) > 200:
                refuse("name", "must be 1 to 200 characters")
            elif "\x00" in r.name:  # PostgreSQL text cannot hold it
                refuse("name", NUL_PROBLEM)
        if r.segment is not None and r.segment not in ("PU", "BPU"):
            refuse("segment", f"{r.segment!r} is not PU or BPU")
        checked.errors.extend(problems)
        complete = None not in (r.kpj, r.nik, r.name, r.wage, r.segment)
        if complete and not problems:
            checked.valid.append(r)
    return checked


async def judge_rows(
    conn: asyncpg.Connection, employer: asyncpg.Record, rows: Sequence[ParticipantRow]
) -> tuple[list[ParticipantRow], list[dict]]:
    """The rows that may be saved, and every problem of every row: its
    fields, duplicates within the upload, and KPJs or NIKs already
    registered (looked up for each row whose KPJ or NIK is well formed, even
    when another of its fields is wrong). Reads only."""
    checked = _check_rows(rows)
    errors = checked.errors
    bad_rows: set[int] = set()
    if checked.first_kpj:
        taken = await conn.fetch(
            "select kpj from participants where kpj = any($1::text[])", list(checked.first_kpj)
        )
        for rec in taken:
            row = checked.first_kpj[rec["kpj"]]
            errors.append({"row": row, "field": "kpj", "problem": "already registered"})
            bad_rows.add(row)
    if checked.first_nik:
        taken = await conn.fetch(
            "select nik from participants where npp = $1 and nik = any($2::text[])",
            employer["npp"],
            list(checked.first_nik),
        )
        for rec in taken:
            row = checked.first_nik[rec["nik"]]
            errors.append({"row": row, "field": "nik", "problem": "already registered with this employer"})
            bad_rows.add(row)
    valid = [r for r in checked.valid if r.row not in bad_rows]
    return valid, in_row_order(errors)


async def add_participants(
    conn: asyncpg.Connection,
    employer: asyncpg.Record,
    rows: Sequence[ParticipantRow],
    mode: str,
    prior_errors: Sequence[dict] = (),
) -> AddResult:
    """Judge every row, then save: nothing if any row (or `prior_errors`, the
    caller's own row errors, e.g. a CSV wage that is not a number) is wrong,
    unless mode is keep_valid, which saves exactly the rows with no problem."""
    valid, errors = await judge_rows(conn, employer, rows)
    errors = in_row_order([*prior_errors, *errors])
    if errors and mode != "keep_valid":
        return AddResult(0, errors)
    if valid:
        await insert_participants(conn, employer, valid)
    return AddResult(len(valid), errors)


async def insert_participants(conn: asyncpg.Connection, employer: asyncpg.Record, rows: Sequence[ParticipantRow]) -> None:
    """Participants, their JHT savings accounts and their coverage rows, set-based."""
    npp = employer["npp"]
    regency = employer["regency_code"]
    employer_programs = [str(p) for p in dues.programs_for(dues.SizeClass(employer["size_class"]))]
    await conn.execute(
        """insert into participants (kpj, npp, nik, name, wage_rupiah, segment, regency_code)
           select kpj, $1, nik, name, wage, segment, $2
             from unnest($3::text[], $4::text[], $5::text[], $6::bigint[], $7::text[]) as t(kpj, nik, name, wage, segment)""",
        npp,
        regency,
        [r.kpj for r in rows],
        [r.nik for r in rows],
        [r.name for r in rows],
        [r.wage for r in rows],
        [r.segment for r in rows],
    )
    await conn.execute(
        """insert into accounts (code, kind, npp)
           select 'jht:' || kpj, 'liability', $1 from unnest($2::text[]) as t(kpj)""",
        npp,
        [r.kpj for r in rows],
    )
    # BPU participants are enrolled in JKK and JKM (JHT is optional and not
    # modelled as enrolment here); PU in what the employer's size requires.
    await conn.execute(
        """insert into participant_coverage (participant_id, program, npp, regency_code, segment)
           select p.id, prog, p.npp, p.regency_code, p.segment
             from participants p
            cross join lateral unnest(case when p.segment = 'BPU' then array['JKK','JKM'] else $3::text[] end) as prog
            where p.npp = $1 and p.kpj = any($2::text[])""",
        npp,
        [r.kpj for r in rows],
        employer_programs,
    )


# ------------------------------------------------------------ wage report --


def current_period(now: dt.datetime) -> Period:
    return Period.from_date(now.astimezone(WIB).date())


@dataclass
class IssuedBill:
    id: int
    payment_code: str


async def _next_payment_codes(conn: asyncpg.Connection, count: int) -> list[str]:
    serials = await conn.fetch("select nextval('payment_code_serial') as s from generate_series(1, $1)", count)
    return [codes.make_payment_code(r["s"]) for r in serials]


def _by_key(use_case):
    """Run `use_case(conn, ...)` in the caller's transaction with sequential
    scans off until it returns: an employer's report reads and writes by key,
    and its statements' cached plans must not scan every bill because the
    bills table was once analyzed empty (migration 0015 says why)."""

    @functools.wraps(use_case)
    async def run(conn: asyncpg.Connection, *args, **kwargs):
        previous = await conn.fetchval("select current_setting('enable_seqscan')")
        await conn.execute("select set_config('enable_seqscan', 'off', true)")
        try:
            result = await use_case(conn, *args, **kwargs)
        except ServiceError:
            # A refusal leaves the transaction usable: the caller may go on in it.
            # (A database error aborts it, and the setting goes with it.)
            await conn.execute("select set_config('enable_seqscan', $1, true)", previous)
            raise
        await conn.execute("select set_config('enable_seqscan', $1, true)", previous)
        return result

    return run


@dataclass
class WageReportCheck:
    period: Period | None
    participants: list[asyncpg.Record]
    # (order key, {field, problem}): period (0,), participants (1,), wages line n (2, n, 0)
    problems: list[tuple[tuple, dict]]
    # The period's PU bill, when it was already reported.
    already: str | None = None

    def all_problems(self) -> list[tuple[tuple, dict]]:
        """The problems, with "already reported" among them when there are others."""
        if self.already is None:
            return list(self.problems)
        return [*self.problems, ((0,), {"field": "period", "problem": f"already reported (payment_code {self.already})"})]

    def refuse(self) -> None:
        """Raise Invalid naming every problem, or Conflict when the period was
        already reported and nothing else is wrong."""
        if self.problems:
            raise Invalid.many([item for _, item in sorted(self.all_problems(), key=lambda pair: pair[0])])
        if self.already is not None:
            raise Conflict(
                f"the wage report for {self.period} was already submitted; its bill is {self.already}",
                [{"field": "period", "problem": f"already reported (payment_code {self.already})"}],
            )


async def check_wage_report(
    conn: asyncpg.Connection,
    employer: asyncpg.Record,
    period_text: str | None,
    kpjs: Sequence[tuple[int, str]],
    now: dt.datetime,
) -> WageReportCheck:
    """Every reason to refuse a wage report, found at once: the period (form,
    future, before the rate tables, already reported), an employer without
    participants, each wage line's unknown KPJ (`kpjs`: (line index, kpj)).
    A period_text of None was refused by the caller: its checks are skipped.
    Reads only."""
    problems: list[tuple[tuple, dict]] = []
    period = None
    if period_text is not None:
        try:
            period = Period.parse(period_text)
            if period > current_period(now):
                problems.append(
                    ((0,), {"field": "period", "problem": f"{period} is in the future; the latest reportable month is {current_period(now)}"})
                )
                period = None
            else:
                dues.rate_schedule_for(period)
        except DomainError as error:
            problems.append(((0,), {"field": error.field, "problem": error.problem}))
            period = None
    npp = employer["npp"]
    participants = await conn.fetch(
        "select id, kpj, wage_rupiah, segment from participants where npp = $1 order by id", npp
    )
    if not participants:
        problems.append(((1,), {"field": "participants", "problem": f"employer {npp} has no registered participants to report"}))
    else:
        known = {p["kpj"] for p in participants}
        for n, kpj in kpjs:
            if kpj not in known:
                problems.append(((2, n, 0), {"field": "wages", "problem": f"kpj {kpj} is not a participant of {npp}"}))
    already = None
    if period is not None:
        already = await conn.fetchval(
            "select payment_code from bills where npp = $1 and period = $2 and kind = 'PU'", npp, str(period)
        )
    return WageReportCheck(period, participants, problems, already)


# For a caller that refuses the report before submitting it (the HTTP route,
# when the model refused something too): in a transaction, with the report's
# own plans.
check_wage_report_by_key = _by_key(check_wage_report)


@_by_key
async def submit_wage_report(
    conn: asyncpg.Connection,
    employer: asyncpg.Record,
    period_text: str,
    wage_overrides: dict[str, int],
    now: dt.datetime,
    expiry_days_after_due: int,
) -> tuple[int | None, list[int]]:
    """Issue the employer's PU bill for the period (with late fees for earlier
    unpaid bills) and one bill per BPU participant. Returns bill ids."""
    # One report of an employer at a time: two months reported side by side
    # each read what earlier bills' late fees had already charged before the
    # other wrote its own, and both charged the same late fee. NO KEY UPDATE:
    # it does not wait for (nor block) the key-share locks of rows that
    # reference the employer (a payment, a participant).
    await conn.execute("select 1 from employers where npp = $1 for no key update", employer["npp"])
    check = await check_wage_report(conn, employer, period_text, list(enumerate(wage_overrides)), now)
    check.refuse()
    period, participants = check.period, check.participants
    npp = employer["npp"]
    size = dues.SizeClass(employer["size_class"])
    # Wage earners: one bill for the employer.
    pu_lines: list[tuple] = []
    try:
        for p in participants:
            if p["segment"] != "PU":
                continue
            wage = wage_overrides.get(p["kpj"], p["wage_rupiah"])
            for line in dues.pu_lines(period, size, employer["jkk_risk_class"], wage):
                pu_lines.append((p["id"], str(line.program), line.basis_rupiah, line.employer_rupiah, line.worker_rupiah, line.government_rupiah, None, None))
    except DomainError as error:
        raise _domain_invalid(error) from None
    pu_lines.extend(await _late_fee_lines(conn, npp, now))
    due = due_date(period, dues.Segment.PU)
    pu_bill_id = None
    if any(line[0] is not None for line in pu_lines):
        pu_bill_id = await _insert_bill(conn, npp, "PU", None, period, due, pu_lines, expiry_days_after_due, now)
    # Informal workers: a bill of their own each, all written in one
    # statement per table (the database checks each statement once).
    bpu_bills = []
    for p in participants:
        if p["segment"] != "BPU":
            continue
        income = wage_overrides.get(p["kpj"], p["wage_rupiah"])
        lines = [
            (p["id"], str(l.program), l.basis_rupiah, l.employer_rupiah, l.worker_rupiah, l.government_rupiah, None, None)
            for l in dues.bpu_lines(period, income)
        ]
        bpu_bills.append((p["id"], lines))
    bpu_ids = await _insert_bpu_bills(conn, npp, period, bpu_bills, expiry_days_after_due, now)
    if pu_bill_id is None and not bpu_ids:
        raise Conflict(f"every bill for {period} was already issued", [{"field": "period", "problem": "already reported"}])
    return pu_bill_id, bpu_ids


BILL_LINE_COLUMNS = [
    "bill_id", "line_no", "npp", "participant_id", "program", "basis_rupiah", "employer_rupiah",
    "worker_rupiah", "government_rupiah", "late_fee_source_bill_id", "late_fee_months",
]


def _nothing_to_bill(period: Period) -> Invalid:
    """A wage so small that every due rounds to Rp0 leaves nothing to pay:
    refused naming the wage rather than issued as an unpayable bill."""
    return Invalid.field(
        "wage",
        f"the {period} dues round to Rp0 (wage too small to bill); report a real monthly wage in whole rupiah",
    )


def _bill_created(payment_code: str, npp: str, period: Period, kind: str, total: int, due: dt.date) -> dict:
    """The bill.created event's payload."""
    return {"payment_id": None, "payment_code": payment_code, "npp": npp, "period": str(period), "kind": kind,
            "total_rupiah": total, "due_date": due.isoformat()}


async def _insert_bpu_bills(
    conn: asyncpg.Connection,
    npp: str,
    period: Period,
    bills: list[tuple[int, list[tuple]]],
    expiry_days_after_due: int,
    now: dt.datetime,
) -> list[int]:
    """Each BPU participant's bill for the period, unless it was issued
    before. Bill ids, in participant order, of the bills issued now."""
    if not bills:
        return []
    billed = await conn.fetch(
        # Matches the partial unique index bills_one_bpu_bill_per_period.
        "select participant_id from bills where participant_id = any($1::bigint[]) and period = $2 and kind = 'BPU'",
        [pid for pid, _ in bills], str(period),
    )
    already = {r["participant_id"] for r in billed}
    bills = [(pid, lines) for pid, lines in bills if pid not in already]
    if not bills:
        return []
    totals = {pid: sum(line[3] + line[4] for line in lines) for pid, lines in bills}
    if min(totals.values()) <= 0:
        raise _nothing_to_bill(period)
    due = due_date(period, dues.Segment.BPU)
    expires_at = bill_expires_at(due, expiry_days_after_due, now.astimezone(WIB).date())
    payment_codes = await _next_payment_codes(conn, len(bills))
    issued = await conn.fetch(
        """insert into bills (payment_code, npp, kind, participant_id, period, due_date, expires_at, total_rupiah, line_count)
           select code, $2, 'BPU', pid, $3, $4, $5, total, n
             from unnest($1::text[], $6::bigint[], $7::bigint[], $8::int[]) with ordinality as t(code, pid, total, n, o)
            order by o
           returning id, participant_id, payment_code, total_rupiah""",
        payment_codes, npp, str(period), due, expires_at,
        [pid for pid, _ in bills], [totals[pid] for pid, _ in bills], [len(lines) for _, lines in bills],
    )
    issued = sorted(issued, key=lambda r: r["id"])
    lines_of = dict(bills)
    await conn.copy_records_to_table(
        "bill_lines",
        records=[
            (bill["id"], n, npp, *line)
            for bill in issued
            for n, line in enumerate(lines_of[bill["participant_id"]], start=1)
        ],
        columns=BILL_LINE_COLUMNS,
    )
    await write_events_many(
        conn,
        npp,
        "bill.created",
        [
            _bill_created(bill["payment_code"], npp, period, "BPU", bill["total_rupiah"], due) for bill in issued
        ],
    )
    return [bill["id"] for bill in issued]


async def _late_fee_lines(conn: asyncpg.Connection, npp: str, now: dt.datetime) -> list[tuple]:
    """2% of a late bill's dues for each month late, less what earlier bills
    already charged for it (contributions.md: "2% of the late dues for each
    month late, [...] billed with a later month"). A bill still open is late
    until today; a bill paid after its due date was late until the day
    (WIB) of its payment, and owes the fee all the same."""
    today = now.astimezone(WIB).date()
    late = await conn.fetch(LATE_BILLS_SQL, npp, today, WIB.key)
    lines = []
    for bill in late:
        months, fee = late_fee_owed(bill["due_date"], bill["dues"], bill["charged"], bill["paid_at"], today)
        if fee > 0:
            lines.append((None, "DENDA", bill["dues"], fee, 0, 0, bill["id"], months))
    return lines


# A bill's dues, the late fees later bills charged for it, and when its
# standing payment (if any) was posted: what the late-fee rule reads, here and
# in the simulator's bulk billing (gateway/sim/billing.py), each with its own
# `where` naming the PU bills past their due date, still open or paid late.
LATE_BILL_COLUMNS_SQL = """
select b.id, b.npp, b.due_date, pay.posted_at as paid_at,
       (select coalesce(sum(employer_rupiah + worker_rupiah), 0) from bill_lines
         where bill_id = b.id and program <> 'DENDA')::bigint as dues,
       (select coalesce(sum(employer_rupiah), 0) from bill_lines
         where late_fee_source_bill_id = b.id)::bigint as charged
  from bills b
  left join lateral (select p.posted_at from payments p
                      where p.bill_id = b.id and p.status = 'posted' offset 0) pay on true
"""

# An employer's PU bills past their due date that owe (or owed) a late fee:
# still open, or paid after the due date (the payment's day in $3, WIB). $1 npp, $2 today.
LATE_BILLS_SQL = LATE_BILL_COLUMNS_SQL + """
 where b.npp = $1 and b.kind = 'PU' and b.due_date < $2
   and (b.status = 'open' or (pay.posted_at at time zone $3)::date > b.due_date)
 order by b.id
"""


def late_fee_owed(
    due: dt.date, dues_rupiah: int, charged_rupiah: int, paid_at: dt.datetime | None, today: dt.date
) -> tuple[int, int]:
    """(months late, late fee still owed) of a PU bill past its due date: 2%
    of its dues for each month late until its payment's day (WIB) when it was
    paid, else until today, less what later bills already charged for it.
    The one rule the wage report, the simulator's bulk billing and the
    portal's history all apply; the fee is 0 or less once fully charged."""
    until = today if paid_at is None else paid_at.astimezone(WIB).date()
    months = dues.months_late(due, until)
    return months, dues.late_fee_rupiah(dues_rupiah, months) - charged_rupiah


async def _insert_bill(
    conn: asyncpg.Connection,
    npp: str,
    kind: str,
    participant_id: int | None,
    period: Period,
    due: dt.date,
    lines: list[tuple],
    expiry_days_after_due: int,
    now: dt.datetime,
) -> int:
    total = sum(line[3] + line[4] for line in lines)
    if total <= 0:
        raise _nothing_to_bill(period)
    (payment_code,) = await _next_payment_codes(conn, 1)
    expires_at = bill_expires_at(due, expiry_days_after_due, now.astimezone(WIB).date())
    bill_id = await conn.fetchval(
        """insert into bills (payment_code, npp, kind, participant_id, period, due_date, expires_at, total_rupiah, line_count)
           values ($1, $2, $3, $4, $5, $6, $7, $8, $9) returning id""",
        payment_code,
        npp,
        kind,
        participant_id,
        str(period),
        due,
        expires_at,
        total,
        len(lines),
    )
    await conn.copy_records_to_table(
        "bill_lines",
        records=[(bill_id, n, npp, *line) for n, line in enumerate(lines, start=1)],
        columns=BILL_LINE_COLUMNS,
    )
    await write_events(
        conn,
        npp,
        "bill.created",
        _bill_created(payment_code, npp, period, kind, total, due),
        [],
    )
    return bill_id


# ------------------------------------------------------------------ reads --


async def bill_view(conn: asyncpg.Connection | asyncpg.Pool, bill_id: int, *, with_lines: bool) -> dict:
    bill = await conn.fetchrow(
        """select b.*, p.kpj from bills b left join participants p on p.id = b.participant_id where b.id = $1""", bill_id
    )
    totals = await conn.fetch(
        """select program, sum(employer_rupiah)::bigint as employer, sum(worker_rupiah)::bigint as worker,
                  sum(government_rupiah)::bigint as government
             from bill_lines where bill_id = $1 group by program
            order by array_position(array['JKK','JKM','JHT','JP','JKP','DENDA'], program)""",
        bill_id,
    )
    view = {
        "payment_code": bill["payment_code"],
        "period": bill["period"],
        "due_date": bill["due_date"],
        "total_rupiah": bill["total_rupiah"],
        "status": bill["status"],
        "kind": bill["kind"],
        "npp": bill["npp"],
        "kpj": bill["kpj"],
        "expires_at": bill["expires_at"],
        "late_fees_rupiah": sum(t["employer"] + t["worker"] for t in totals if t["program"] == "DENDA"),
        "government_rupiah": sum(t["government"] for t in totals),
        "totals": [
            {
                "program": t["program"],
                "employer_rupiah": t["employer"],
                "worker_rupiah": t["worker"],
                "government_rupiah": t["government"],
                "billed_rupiah": t["employer"] + t["worker"],
            }
            for t in totals
        ],
    }
    if with_lines:
        lines = await conn.fetch(
            """select p.kpj, l.program, l.basis_rupiah, l.employer_rupiah, l.worker_rupiah, l.government_rupiah,
                      s.payment_code as late_fee_source_payment_code, l.late_fee_months
                 from bill_lines l
                 left join participants p on p.id = l.participant_id
                 left join bills s on s.id = l.late_fee_source_bill_id
                where l.bill_id = $1 order by l.line_no""",
            bill_id,
        )
        view["lines"] = [dict(r) for r in lines]
    return view


async def participant_view(conn: asyncpg.Connection | asyncpg.Pool, kpj: str, now: dt.datetime) -> dict | None:
    if not (kpj.isascii() and kpj.isdigit()):  # a NUL would fail the query: no such participant
        return None
    p = await conn.fetchrow("select * from participants where kpj = $1", kpj)
    if p is None:
        return None
    rows = await conn.fetch(
        """select program, last_paid_period from participant_coverage where participant_id = $1
            order by array_position(array['JKK','JKM','JHT','JP','JKP'], program)""",
        p["id"],
    )
    segment = dues.Segment(p["segment"])
    as_of = now.astimezone(WIB).date()
    cover = []
    for r in rows:
        last = Period.parse(r["last_paid_period"]) if r["last_paid_period"] else None
        cover.append(
            {"program": r["program"], "state": str(coverage.protection_state(last, as_of, segment)), "last_paid_period": r["last_paid_period"]}
        )
    jkp_months = await conn.fetch(
        "select period from coverage_months where participant_id = $1 and program = 'JKP'", p["id"]
    )
    eligible = coverage.jkp_eligible([Period.parse(m["period"]) for m in jkp_months], Period.from_date(as_of))
    return {
        "kpj": p["kpj"],
        "nik": p["nik"],
        "name": p["name"],
        "wage": p["wage_rupiah"],
        "segment": p["segment"],
        "npp": p["npp"],
        "regency_code": p["regency_code"],
        "coverage": cover,
        "jkp_eligible": eligible,
    }


async def require_bill_of(conn, payment_code: str, npp: str) -> int:
    # Anything but digits (a NUL, which PostgreSQL text cannot hold) is unknown without asking it.
    if not (payment_code.isascii() and payment_code.isdigit()):
        raise NotFound(f"no bill with payment code {payment_code!r}", [{"field": "payment_code", "problem": "digits 0-9 only"}])
    bill_id = await conn.fetchval("select id from bills where payment_code = $1 and npp = $2", payment_code, npp)
    if bill_id is None:
        raise NotFound(f"no bill with payment code {payment_code} for this employer")
    return bill_id
