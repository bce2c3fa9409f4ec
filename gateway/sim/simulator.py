"""`kanal simulate`: a go-live of Kanal in Kalbar, month by month.

1. Plan and seed a province of N workers (`population`), with a baseline of
   protected workers.
2. Start the gateway in this process (`gateway.runtime.Gateway`, the same one
   `kanal serve` runs) on ephemeral ports, with a clock the simulator moves.
3. For each month: on the 1st every employer submits its wage report
   (formal employers for last month, BPU collectives for this month; a late
   fee appears by itself on the bill of an employer whose earlier bill is
   still open past its deadline); then, day by day, virtual banks pay bills
   through the real SNAP BI and ISO 8583 adapters over real sockets: a rush
   in the days before the 15th, late payers in the next month, duplicates,
   advices and reversals.
4. Report: coverage per regency before and after, every answer the banks got,
   the ledger's figures and the health verdict of `kanal check`'s checks.

Every choice is drawn from one `random.Random(seed)` in a fixed order
(employers in NPP order, bills in (NPP, KPJ, period) order), never from the
order in which concurrent requests finish, so the same seed, scenario and size
give the same summary (`SimulationReport.summary()`). Timings differ.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import random
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import asyncpg
import structlog

from gateway.domain.periods import WIB, Period
from gateway.domain.regencies import regencies
from gateway.runtime import Gateway
from gateway.service import coverage as coverage_service
from gateway.service import employers as employer_service
from gateway.settings import Settings
from gateway.sim import population
from gateway.sim.banks import Outcomes, Payment, VirtualBanks
from gateway.sim.scenario import Scenario

log = structlog.get_logger("kanal.sim")

REPORT_HOUR_WIB = 7  # wage reports go in on the 1st at 07:00 WIB
PAYMENT_HOUR_WIB = 10
LAST_PAYMENT_DAY = 28  # every month has it
LATE_PAYMENT_DAYS = (3, 12)  # late payers pay in the next month, after its wage report has charged the fee
BILL_EXPIRY_DAYS_AFTER_DUE = 90


class SimClock:
    """The gateway's clock: the simulator sets it; nothing else moves it."""

    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def set_day(self, day: dt.date, hour: int) -> None:
        self.now = dt.datetime.combine(day, dt.time(hour), WIB).astimezone(dt.UTC)


class Bar(Protocol):
    def update(self, n: int) -> None: ...


ProgressFactory = Callable[[str, int], contextlib.AbstractContextManager[Bar]]


class _NoBar:
    def update(self, n: int) -> None:
        pass


@contextlib.contextmanager
def no_progress(_label: str, _total: int) -> Iterator[Bar]:
    yield _NoBar()


@dataclass
class RegencyCoverage:
    regency_code: str
    name: str
    workforce: int
    protected_before: int
    protected_after: int

    @staticmethod
    def percent(part: int, whole: int) -> str:
        bp = coverage_service.basis_points(part, whole)
        return f"{bp // 100}.{bp % 100:02d}"

    def as_dict(self) -> dict:
        return {
            "regency_code": self.regency_code,
            "name": self.name,
            "workforce": self.workforce,
            "protected_before": self.protected_before,
            "protected_after": self.protected_after,
            "coverage_before_percent": self.percent(self.protected_before, self.workforce),
            "coverage_after_percent": self.percent(self.protected_after, self.workforce),
        }


@dataclass
class SimulationReport:
    scenario: str
    seed: int
    workers: int
    employers: int
    periods: list[str]
    by_kind: dict[str, int]
    coverage: list[RegencyCoverage]
    outcomes: list[dict]
    ledger: dict
    health: dict
    months: list[dict] = field(default_factory=list)
    timings_s: dict[str, float] = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        return self.health.get("verdict") == "clean"

    def province(self) -> dict:
        workforce = sum(r.workforce for r in self.coverage)
        before = sum(r.protected_before for r in self.coverage)
        after = sum(r.protected_after for r in self.coverage)
        return {
            "workforce": workforce,
            "protected_before": before,
            "protected_after": after,
            "coverage_before_percent": RegencyCoverage.percent(before, workforce),
            "coverage_after_percent": RegencyCoverage.percent(after, workforce),
        }

    def summary(self) -> dict:
        """Everything but the timings and the checks' wording (which quotes
        live figures such as the outbox backlog): equal for equal seeds."""
        health = {
            **self.health,
            "checks": [{k: v for k, v in c.items() if k != "detail"} for c in self.health.get("checks", [])],
        }
        return {
            "scenario": self.scenario,
            "seed": self.seed,
            "workers": self.workers,
            "employers": self.employers,
            "periods": self.periods,
            "by_kind": self.by_kind,
            "province": self.province(),
            "coverage": [r.as_dict() for r in self.coverage],
            "months": self.months,
            "outcomes": self.outcomes,
            "ledger": self.ledger,
            "health": health,
        }

    def as_dict(self) -> dict:
        return {**self.summary(), "health": self.health, "timings_s": self.timings_s}


@dataclass(frozen=True)
class _Bill:
    id: int
    payment_code: str
    total_rupiah: int
    npp: str
    kpj: str | None
    period: str
    due_date: dt.date


@dataclass
class _Scheduled:
    day: dt.date
    payment: Payment


class Simulation:
    def __init__(self, scenario: Scenario, *, seed: int, progress: ProgressFactory = no_progress) -> None:
        self.scenario = scenario
        self.seed = seed
        self.rng = random.Random(seed)
        self.progress = progress
        self.outcomes = Outcomes()
        self.first_period = scenario.first_period
        start = self.first_period.first_day()
        self.clock = SimClock(dt.datetime.combine(start, dt.time(REPORT_HOUR_WIB - 1), WIB).astimezone(dt.UTC))
        self.pending: list[_Scheduled] = []  # late payments carried into a later month
        self.reference_serial = 0
        self.months: list[dict] = []

    # ------------------------------------------------------------------ run --

    async def run(self, database_url: str, *, settings: Settings | None = None, migrate_first: bool = True) -> SimulationReport:
        scenario = self.scenario
        timings: dict[str, float] = {}
        started = time.perf_counter()
        province = population.plan_province(scenario.workers, self.seed, scenario.baseline_coverage_basis_points)
        self.province = province
        self.compliant_npps = {e.npp for e in province.employers if e.compliant}
        self.employers_by_npp = {e.npp: e for e in province.employers}
        settings = settings or Settings(
            host="127.0.0.1", http_port=0, iso8583_port=0, sandbox=False,
            admin_token=secrets.token_urlsafe(24), pool_size_max=max(20, scenario.load.concurrency + 4),
        )
        gateway = Gateway(settings=settings, database_url=database_url, clock=self.clock)
        await gateway.start(migrate_first=migrate_first)
        banks = VirtualBanks(scenario.banks, self.outcomes)
        try:
            refuse_banks_not_served(scenario, gateway)
            pool = gateway.pool
            with self.progress("Seeding Kalbar", scenario.workers) as bar:
                await population.seed_province(
                    pool, province, baseline_coverage_basis_points=scenario.baseline_coverage_basis_points,
                    as_of=self._today(), progress=bar.update,
                )
            timings["seed"] = round(time.perf_counter() - started, 3)
            before = await coverage_service.protected_counts(pool, self._today())
            await banks.start(gateway, pool, concurrency=scenario.load.concurrency)
            periods = []
            for month in range(scenario.months):
                period = self.first_period + month
                periods.append(str(period))
                month_started = time.perf_counter()
                await self._month(pool, banks, period, timings)
                timings[f"month {period}"] = round(time.perf_counter() - month_started, 3)
            self.clock.set_day(date_in(self.first_period + (scenario.months - 1), LAST_PAYMENT_DAY), 23)
            after = await coverage_service.protected_counts(pool, self._today())
            drain_started = time.perf_counter()
            self.outbox_backlog_at_end = await drain_outbox(pool, self.progress)
            timings["outbox drain"] = round(time.perf_counter() - drain_started, 3)
            checks_started = time.perf_counter()
            health = await ledger_health(pool)
            timings["checks"] = round(time.perf_counter() - checks_started, 3)
            ledger = await ledger_figures(pool)
        finally:
            await banks.close()
            await gateway.stop()
        timings["total"] = round(time.perf_counter() - started, 3)
        names = {r.kemendagri_code: r.name for r in regencies()}
        coverage_rows = [
            RegencyCoverage(
                code, names[code], province.workforce[code],
                before.get((code, coverage_service.HEADLINE_PROGRAM), 0),
                after.get((code, coverage_service.HEADLINE_PROGRAM), 0),
            )
            for code in sorted(province.workforce)
        ]
        return SimulationReport(
            scenario=scenario.name, seed=self.seed, workers=scenario.workers, employers=len(province.employers),
            periods=periods, by_kind=province.by_kind, coverage=coverage_rows, outcomes=self.outcomes.rows(),
            ledger=ledger, health=health, months=self.months, timings_s=timings,
        )

    def _today(self) -> dt.date:
        return self.clock().astimezone(WIB).date()

    # ---------------------------------------------------------------- month --

    async def _month(self, pool: asyncpg.Pool, banks: VirtualBanks, period: Period, timings: dict[str, float]) -> None:
        self.clock.set_day(period.first_day(), REPORT_HOUR_WIB)
        started = time.perf_counter()
        issued = await self._wage_reports(pool, period)
        timings[f"{period} wage reports"] = round(time.perf_counter() - started, 3)
        new_bills = await self._bills_issued_since(pool, issued["first_bill_id"])
        # One pass: `s not in scheduled` compared every carried payment with every
        # scheduled one (quadratic; minutes a month for the whole province).
        scheduled, later = [], []
        for s in self.pending:
            (scheduled if (s.day.year, s.day.month) == (period.year, period.month) else later).append(s)
        self.pending = later
        scheduled += self._decide(new_bills, period)
        late_fees = await pool.fetchval(
            """select coalesce(sum(l.employer_rupiah), 0)::bigint from bill_lines l join bills b on b.id = l.bill_id
                where l.program = 'DENDA' and b.id >= $1""",
            issued["first_bill_id"],
        )
        by_day: dict[dt.date, list[Payment]] = {}
        for item in scheduled:
            by_day.setdefault(item.day, []).append(item.payment)
        started = time.perf_counter()
        with self.progress(f"Payments {period}", len(scheduled)) as bar:
            for day in sorted(by_day):
                self.clock.set_day(day, PAYMENT_HOUR_WIB)
                await self._send(banks, by_day[day], bar)
        timings[f"{period} payments"] = round(time.perf_counter() - started, 3)
        self.months.append(
            {
                "period": str(period),
                "wage_reports": issued["reports"],
                "bills_issued": len(new_bills),
                "late_fee_rupiah": late_fees,
                "payments_sent": len(scheduled),
                "rush_payments": self._rush_count,
                "late_payments_carried_over": len(self.pending),
            }
        )

    async def _wage_reports(self, pool: asyncpg.Pool, period: Period) -> dict:
        """Every employer reports: formal ones last month, BPU collectives this month."""
        first_bill_id = await pool.fetchval("select coalesce(max(id), 0) + 1 from bills")
        behaviour = self.scenario.behaviour
        jobs = []
        for employer in self.province.employers:  # planned order: deterministic
            report_period = period if employer.kind == "informal" else period - 1
            overrides: dict[str, int] = {}
            if employer.kind != "informal" and self.rng.randrange(100) < behaviour.wage_change_percent:
                changed = self.rng.randint(1, min(3, employer.workers))
                for offset in sorted(self.rng.sample(range(employer.workers), changed)):
                    overrides[population.kpj_for(employer.first_serial + offset)] = (
                        population.WAGE_FLOOR_RUPIAH + self.rng.randrange(0, 12_000_000, 1_000)
                    )
            jobs.append((employer.npp, str(report_period), overrides))
        semaphore = asyncio.Semaphore(self.scenario.load.report_concurrency)
        with self.progress(f"Wage reports {period}", len(jobs)) as bar:

            async def report(npp: str, period_text: str, overrides: dict[str, int]) -> None:
                async with semaphore:
                    async with pool.acquire() as conn, conn.transaction():
                        employer = await conn.fetchrow("select * from employers where npp = $1", npp)
                        await employer_service.submit_wage_report(
                            conn, employer, period_text, overrides, self.clock(), BILL_EXPIRY_DAYS_AFTER_DUE
                        )
                    bar.update(1)

            await _gather_bounded([report(*job) for job in jobs])
        return {"first_bill_id": first_bill_id, "reports": len(jobs)}

    async def _bills_issued_since(self, pool: asyncpg.Pool, first_bill_id: int) -> list[_Bill]:
        rows = await pool.fetch(
            """select b.id, b.payment_code, b.total_rupiah, b.npp, p.kpj, b.period, b.due_date
                 from bills b left join participants p on p.id = b.participant_id
                where b.id >= $1
                order by b.npp, p.kpj nulls first, b.period""",
            first_bill_id,
        )
        return [_Bill(**dict(r)) for r in rows]

    def _decide(self, bills: list[_Bill], period: Period) -> list[_Scheduled]:
        """Who pays which new bill, when, through which bank and how: drawn in
        bill order from the run's RNG."""
        behaviour = self.scenario.behaviour
        rng = self.rng
        banks = [b for b in self.scenario.banks if b.share_percent > 0]
        weights = [b.share_percent for b in banks]
        scheduled: list[_Scheduled] = []
        self._rush_count = 0
        for bill in bills:
            payer = bill.kpj if bill.kpj is not None else bill.npp
            compliant_set = self.province.compliant_bpu_kpjs if bill.kpj is not None else self.compliant_npps
            draw = rng.randrange(100)
            if payer not in compliant_set:
                if draw >= behaviour.activation_percent:
                    continue
                compliant_set.add(payer)  # joins this month and keeps paying
            elif draw >= behaviour.compliant_pay_percent:
                continue  # skips this month: the bill stays open (a late fee follows for PU)
            bank = rng.choices(banks, weights=weights)[0]
            due = bill.due_date
            if rng.randrange(100) < behaviour.late_percent:
                next_month = period + 1
                day = date_in(next_month, rng.randint(*LATE_PAYMENT_DAYS))
            elif rng.randrange(100) < behaviour.rush_percent:
                day = due - dt.timedelta(days=rng.randrange(behaviour.rush_days))
                self._rush_count += 1
            else:
                first = 2
                last = max(first, due.day - behaviour.rush_days)
                day = date_in(period, rng.randint(first, last))
            iso = bank.protocol == "iso8583"
            reverse = iso and rng.randrange(100) < behaviour.reversal_percent
            self.reference_serial += 1
            payment = Payment(
                payment_code=bill.payment_code,
                amount_rupiah=bill.total_rupiah,
                bank=bank.name,
                reference=f"{self.seed % 1000:03d}{self.reference_serial:09d}",
                inquire=rng.randrange(100) < behaviour.inquiry_percent,
                duplicate=rng.randrange(100) < behaviour.duplicate_percent,
                advice=rng.randrange(100) < behaviour.advice_percent,
                reverse=reverse,
                pay_again_after_reversal=reverse and rng.randrange(2) == 0,
            )
            item = _Scheduled(day, payment)
            if (day.year, day.month) == (period.year, period.month):
                scheduled.append(item)
            else:
                self.pending.append(item)
        return scheduled

    async def _send(self, banks: VirtualBanks, payments: list[Payment], bar: Bar) -> None:
        """One day's payments, `concurrency` at a time, paced to `rate_per_second`."""
        load = self.scenario.load
        semaphore = asyncio.Semaphore(load.concurrency)
        interval_s = 1 / load.rate_per_second if load.rate_per_second else 0.0
        next_start = time.monotonic()

        async def one(payment: Payment) -> None:
            try:
                await banks.pay(payment)
            finally:
                semaphore.release()
                bar.update(1)

        tasks = []
        for payment in payments:
            await semaphore.acquire()
            if interval_s:
                delay = next_start - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                next_start = max(next_start, time.monotonic() - 1.0) + interval_s
            tasks.append(asyncio.create_task(one(payment)))
        await asyncio.gather(*tasks)


class SimulationRefused(ValueError):
    """A scenario the gateway it runs against cannot carry out: raised before
    anything is seeded."""


def refuse_banks_not_served(scenario: Scenario, gateway: Gateway) -> None:
    """An ISO 8583 bank whose acquirer (DE32) the gateway's profile does not
    serve would be refused at logon, after the whole province was seeded."""
    from bank_adapters.iso8583.handler import acquirer_code

    for n, bank in enumerate(scenario.banks):
        if bank.protocol != "iso8583":
            continue
        profile = gateway.adapter("iso8583").profile
        if profile is not None and profile.acquirers and acquirer_code(bank.acquirer) not in profile.acquirers:
            raise SimulationRefused(
                f"banks[{n}].acquirer: {bank.name}'s acquirer {bank.acquirer} is not served by the gateway's ISO 8583 "
                f"profile {profile.name!r}, which takes {', '.join(sorted(profile.acquirers))}"
            )


async def _gather_bounded(coroutines: list) -> None:
    """Await them all; the first failure is raised after the rest finish."""
    results = await asyncio.gather(*coroutines, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result


def date_in(period: Period, day: int) -> dt.date:
    return dt.date(period.year, period.month, day)


# ------------------------------------------------------------- the verdict --

OUTBOX_DRAIN_SECONDS_MAX = 600  # how long the end of a run waits for the callback relay to catch up
OUTBOX_STALL_SECONDS_MAX = 20  # ...and gives up sooner when the backlog stops shrinking
OUTBOX_POLL_SECONDS = 1.0
# Checks about money and coverage; the others (outbox relay, callback deliveries) are about operations.
LEDGER_CHECKS = frozenset(
    {"entries_balance", "trial_balance", "payment_equals_bill", "bill_paid_once", "funds_equal_lines", "coverage_counters"}
)


async def drain_outbox(pool: asyncpg.Pool, progress: ProgressFactory = no_progress) -> int:
    """Wait until the gateway's callback relay has taken every outbox event,
    as an operator would before running `kanal check` after a burst (a
    month's bills arrive as tens of thousands of events at once). Waits at
    most `OUTBOX_DRAIN_SECONDS_MAX`, and stops after `OUTBOX_STALL_SECONDS_MAX`
    without progress (a relay with no callback endpoints takes nothing).
    Returns the backlog left."""
    from gateway.ops.checks import run_checks

    async def backlog() -> int:
        report = await run_checks(pool, only=["outbox_lag"])
        return report.checks[0].figures.get("backlog") or 0

    left = await backlog()
    if not left:
        return 0
    if await pool.fetchval(
        "select to_regclass('callback_endpoints') is not null and not exists (select 1 from callback_endpoints)"
    ):
        return left  # no subscriber: the relay takes nothing, waiting would not help
    deadline = time.monotonic() + OUTBOX_DRAIN_SECONDS_MAX
    last_progress = time.monotonic()
    with progress("Outbox relay catching up", left) as bar:
        while left and time.monotonic() < deadline and time.monotonic() - last_progress < OUTBOX_STALL_SECONDS_MAX:
            await asyncio.sleep(OUTBOX_POLL_SECONDS)
            now_left = await backlog()
            if now_left < left:
                bar.update(left - now_left)
                last_progress = time.monotonic()
            left = now_left
    return left


async def ledger_health(pool: asyncpg.Pool) -> dict:
    """`kanal check`'s invariant checks (gateway.ops.checks) on one snapshot."""
    from gateway.ops.checks import run_checks

    report = await run_checks(pool)
    ledger_ok = all(c.verdict != "violation" for c in report.checks if c.name in LEDGER_CHECKS)
    return {
        "verdict": "clean" if report.healthy else "violations",
        # The money-and-coverage checks alone, for a run whose operations checks complain.
        "ledger_verdict": "clean" if ledger_ok else "violations",
        "source": "gateway.ops.checks.run_checks",
        "checks": [
            {"name": c.name, "verdict": c.verdict, "detail": c.detail, "rows_total": c.rows_total} for c in report.checks
        ],
    }


async def ledger_figures(pool: asyncpg.Pool) -> dict:
    row = await pool.fetchrow(
        """select (select count(*) from bills)::bigint as bills,
                  (select count(*) from bills where status = 'paid')::bigint as bills_paid,
                  (select count(*) from bills where status = 'open')::bigint as bills_open,
                  (select count(*) from payments where status = 'posted')::bigint as payments_posted,
                  (select count(*) from payments where status = 'reversed')::bigint as payments_reversed,
                  (select coalesce(sum(amount_rupiah), 0) from payments where status = 'posted')::bigint as posted_rupiah,
                  (select count(*) from bill_lines where program = 'DENDA')::bigint as late_fee_lines,
                  (select coalesce(sum(employer_rupiah), 0) from bill_lines where program = 'DENDA')::bigint as late_fee_rupiah,
                  (select count(*) from journal_entries)::bigint as journal_entries"""
    )
    return dict(row)
