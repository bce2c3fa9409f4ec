"""Monthly dues ("iuran") of BPJS Ketenagakerjaan, computed from rate tables.

The rules and their sources are in ``shared/domain/contributions.md``. Rates and
the JP wage cap change over time, so they live in ``RATE_SCHEDULES`` (data keyed
by the first contribution period they apply to), never in the arithmetic.

Rounding (assumption, contributions.md: "each program's amount per participant
is rounded half up to the whole rupiah; a bill's total is the sum of its
rounded lines"): each program's amount per participant is round(basis * the
program's rate), half up. A program two parties share (JHT, JP) is split by
rounding the worker's share half up on its own (``worker_share_rule``: what a
payroll deducts from the wage); the employer pays the program's amount minus
that, so JHT is always round(wage * 5.7%) and JP round(capped wage * 3%). The
government share and each JKP carve-out are rounded half up on their own; a
fund that gives up a carve-out keeps "its total minus the carve-out", so the
amount the employer pays for JKK is exactly round(wage * risk rate) whatever
the carve-out's rounding did.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date
from enum import StrEnum
from itertools import pairwise

from gateway.domain.money import (
    BASIS_POINTS_PER_WHOLE,
    DomainError,
    divide_half_up,
    percent_of,
    require_int,
)
from gateway.domain.periods import Period, Segment, parse_segment

__all__ = [
    "BPU_DISCOUNTS_2026",
    "BPU_DISCOUNT_2026_JKK",
    "BPU_DISCOUNT_2026_JKM",
    "BPU_MINIMUM_MONTHLY_DUES_RUPIAH",
    "JKK_LABOUR_INTENSIVE_DISCOUNT_2025",
    "LATE_FEE_BASIS_POINTS_PER_MONTH",
    "RATE_SCHEDULES",
    "DuesLine",
    "Program",
    "RateOverride",
    "RateSchedule",
    "Segment",
    "SizeClass",
    "bpu_lines",
    "late_fee_rupiah",
    "months_late",
    "programs_for",
    "pu_lines",
    "rate_schedule_for",
    "worker_share_rule",
]


class Program(StrEnum):
    JKK = "JKK"  # Jaminan Kecelakaan Kerja: work accidents.
    JKM = "JKM"  # Jaminan Kematian: death benefit.
    JHT = "JHT"  # Jaminan Hari Tua: old-age savings.
    JP = "JP"  # Jaminan Pensiun: pension.
    JKP = "JKP"  # Jaminan Kehilangan Pekerjaan: job-loss protection.


class SizeClass(StrEnum):
    MICRO = "micro"
    SMALL = "small"
    MEDIUM = "medium"
    LARGE = "large"


# Fixed order of lines on a bill, so bills and tests compare element by element.
PROGRAM_ORDER: tuple[Program, ...] = (
    Program.JKK,
    Program.JKM,
    Program.JHT,
    Program.JP,
    Program.JKP,
)

# Perpres 109/2013 art. 6: which programs each employer size must enrol.
_PROGRAMS_BY_SIZE: dict[SizeClass, tuple[Program, ...]] = {
    SizeClass.LARGE: PROGRAM_ORDER,
    SizeClass.MEDIUM: PROGRAM_ORDER,
    SizeClass.SMALL: (Program.JKK, Program.JKM, Program.JHT),
    SizeClass.MICRO: (Program.JKK, Program.JKM),
}


def _parse_size_class(size_class: object) -> SizeClass:
    try:
        return SizeClass(size_class)
    except ValueError:
        raise DomainError(
            "size_class", f"unknown size class {size_class!r}; expected micro, small, medium or large"
        ) from None


def programs_for(size_class: SizeClass | str) -> tuple[Program, ...]:
    """Programs an employer of ``size_class`` enrols, in bill order."""
    return _PROGRAMS_BY_SIZE[_parse_size_class(size_class)]


@dataclass(frozen=True)
class RateSchedule:
    """All rates in force from ``first_period`` until the next schedule starts."""

    first_period: Period
    # JKK by risk class I..V (PP 44/2015 art. 16).
    jkk_basis_points_by_risk_class: tuple[int, int, int, int, int]
    jkm_basis_points: int
    jht_employer_basis_points: int
    jht_worker_basis_points: int
    jp_employer_basis_points: int
    jp_worker_basis_points: int
    jp_wage_cap_rupiah: int
    jkp_government_basis_points: int
    jkp_government_wage_cap_rupiah: int
    # Employer money booked to JKP out of JKK and JKM when the employer enrols JKP.
    jkp_from_jkk_basis_points: int
    jkp_from_jkm_basis_points: int
    bpu_jkk_basis_points: int
    bpu_jkk_minimum_rupiah: int
    bpu_jkk_maximum_rupiah: int
    bpu_jkm_flat_rupiah: int
    # Optional BPU JHT at 2% of declared income: assumption, not verified.
    bpu_jht_basis_points: int


_SCHEDULE_2023_03 = RateSchedule(
    first_period=Period(2023, 3),
    jkk_basis_points_by_risk_class=(24, 54, 89, 127, 174),
    jkm_basis_points=30,
    jht_employer_basis_points=370,
    jht_worker_basis_points=200,
    jp_employer_basis_points=200,
    jp_worker_basis_points=100,
    jp_wage_cap_rupiah=9_559_600,
    jkp_government_basis_points=22,
    jkp_government_wage_cap_rupiah=5_000_000,
    jkp_from_jkk_basis_points=14,  # PP 49/2023 art. 16A
    jkp_from_jkm_basis_points=10,  # PP 37/2021: JKP 0.46% = 0.22 + 0.14 + 0.10
    bpu_jkk_basis_points=100,
    bpu_jkk_minimum_rupiah=10_000,
    bpu_jkk_maximum_rupiah=207_000,
    bpu_jkm_flat_rupiah=6_800,
    bpu_jht_basis_points=200,
)

RATE_SCHEDULES: tuple[RateSchedule, ...] = (
    _SCHEDULE_2023_03,
    # JP cap indexed each March (PP 45/2015 art. 29).
    replace(_SCHEDULE_2023_03, first_period=Period(2024, 3), jp_wage_cap_rupiah=10_042_300),
    # PP 6/2025: JKP 0.36% from 7 Feb 2025; the 0.10 taken from JKM is dropped.
    # Applied to the whole 2025-02 contribution period (the month's dues are one bill).
    replace(
        _SCHEDULE_2023_03,
        first_period=Period(2025, 2),
        jp_wage_cap_rupiah=10_042_300,
        jkp_from_jkm_basis_points=0,
    ),
    replace(
        _SCHEDULE_2023_03,
        first_period=Period(2025, 3),
        jp_wage_cap_rupiah=10_547_400,
        jkp_from_jkm_basis_points=0,
    ),
    replace(
        _SCHEDULE_2023_03,
        first_period=Period(2026, 3),
        jp_wage_cap_rupiah=11_086_300,
        jkp_from_jkm_basis_points=0,
    ),
)
# Lookup walks the table in order: a mis-sorted edit must fail at import.
assert all(a.first_period < b.first_period for a, b in pairwise(RATE_SCHEDULES))


def _require_period(period: object) -> Period:
    if not isinstance(period, Period):
        raise DomainError("period", f"must be a Period, got {period!r}; e.g. Period.parse('2025-06')")
    return period


def rate_schedule_for(period: Period) -> RateSchedule:
    """The schedule in force for contribution ``period``."""
    _require_period(period)
    in_force = [s for s in RATE_SCHEDULES if s.first_period <= period]
    if not in_force:
        raise DomainError("period", f"no rate table before {RATE_SCHEDULES[0].first_period}")
    return in_force[-1]


@dataclass(frozen=True)
class RateOverride:
    """A time-limited multiplier on one program's rate (e.g. a government discount).

    Overrides are opt-in: the caller decides an employer or participant
    qualifies (sector, size) and passes the override; nothing is applied by
    default. The multiplier scales every rate of the program, including the
    JKK/JKM carve-outs booked to JKP (assumption: the regulations halve "the
    JKK contribution" without saying how the JKP recomposition is split).
    """

    name: str
    program: Program
    first_period: Period
    last_period: Period
    multiplier_numerator: int
    multiplier_denominator: int
    segment: Segment
    min_workers: int = 0

    def __post_init__(self) -> None:
        Program(self.program)
        parse_segment(self.segment)
        _require_period(self.first_period)
        _require_period(self.last_period)
        if self.last_period < self.first_period:
            raise DomainError("last_period", f"{self.last_period} is before first_period {self.first_period}")
        require_int("multiplier_numerator", self.multiplier_numerator, minimum=0)
        require_int("multiplier_denominator", self.multiplier_denominator, minimum=1)
        require_int("min_workers", self.min_workers, minimum=0)

    def applies_to(
        self, program: Program, period: Period, segment: Segment, employer_workers: int | None = None
    ) -> bool:
        """Whether this override changes ``program``'s rate for ``period``.

        ``employer_workers=None`` means the caller has already checked the
        employer's size (it chose to pass the override).
        """
        if program != self.program or segment != self.segment:
            return False
        if not self.first_period <= period <= self.last_period:
            return False
        return employer_workers is None or employer_workers >= self.min_workers


# PP 7/2025, extended by PP 36/2025: JKK halved for six labour-intensive
# industries with 50 or more workers, contribution months Feb 2025 to Jan 2026.
JKK_LABOUR_INTENSIVE_DISCOUNT_2025 = RateOverride(
    name="PP 7/2025 + PP 36/2025 labour-intensive JKK discount",
    program=Program.JKK,
    first_period=Period(2025, 2),
    last_period=Period(2026, 1),
    multiplier_numerator=1,
    multiplier_denominator=2,
    segment=Segment.PU,
    min_workers=50,
)

# PP 50/2025 halves BPU JKK and JKM for some sectors in 2026. Assumption: the
# whole calendar year 2026; the exact months were not verified.
BPU_DISCOUNT_2026_JKK = RateOverride(
    name="PP 50/2025 BPU JKK discount",
    program=Program.JKK,
    first_period=Period(2026, 1),
    last_period=Period(2026, 12),
    multiplier_numerator=1,
    multiplier_denominator=2,
    segment=Segment.BPU,
)
BPU_DISCOUNT_2026_JKM = replace(
    BPU_DISCOUNT_2026_JKK, name="PP 50/2025 BPU JKM discount", program=Program.JKM
)
BPU_DISCOUNTS_2026: tuple[RateOverride, ...] = (BPU_DISCOUNT_2026_JKK, BPU_DISCOUNT_2026_JKM)


@dataclass(frozen=True)
class _Multiplier:
    numerator: int = 1
    denominator: int = 1

    def share(self, basis_rupiah: int, rate_basis_points: int) -> int:
        """basis * rate * multiplier, rounded half up once (not twice)."""
        return divide_half_up(
            basis_rupiah * rate_basis_points * self.numerator,
            BASIS_POINTS_PER_WHOLE * self.denominator,
        )

    def scale(self, amount_rupiah: int) -> int:
        return divide_half_up(amount_rupiah * self.numerator, self.denominator)


def _multipliers(
    overrides: Sequence[RateOverride],
    period: Period,
    segment: Segment,
    employer_workers: int | None,
) -> dict[Program, _Multiplier]:
    multipliers = {program: _Multiplier() for program in Program}
    for override in overrides:
        if not isinstance(override, RateOverride):
            raise DomainError("overrides", f"must contain RateOverride values, got {override!r}")
        for program in Program:
            if override.applies_to(program, period, segment, employer_workers):
                # Two overlapping overrides compound (both were passed on purpose).
                current = multipliers[program]
                multipliers[program] = _Multiplier(
                    current.numerator * override.multiplier_numerator,
                    current.denominator * override.multiplier_denominator,
                )
    return multipliers


@dataclass(frozen=True)
class DuesLine:
    """One fund's share of one participant's monthly dues.

    Lines are per fund (where the money goes), so the JKK line holds only what
    JKK keeps; the JKK money booked to JKP is on the JKP line. ``basis_rupiah``
    is the wage (or declared income) the billed shares are computed on; for JKP
    that is the full wage (the carve-outs), while its government share uses
    min(wage, Rp5,000,000).
    """

    program: Program
    basis_rupiah: int
    employer_rupiah: int
    worker_rupiah: int
    government_rupiah: int

    def __post_init__(self) -> None:
        for name in ("basis_rupiah", "employer_rupiah", "worker_rupiah", "government_rupiah"):
            # A negative share is a bug in the rules, never bad user input.
            assert isinstance(getattr(self, name), int) and getattr(self, name) >= 0, (name, self)

    @property
    def billed_rupiah(self) -> int:
        """What the payer is billed; the government share is a receivable from
        the government, not part of the employer's bill."""
        return self.employer_rupiah + self.worker_rupiah


def worker_share_rule(
    multiplier: _Multiplier, basis_rupiah: int, employer_basis_points: int, worker_basis_points: int
) -> tuple[int, int]:
    """(employer, worker) shares of a program both pay: the program's amount is
    round(basis * (employer + worker rate)), half up, once; the worker's share
    is rounded half up on its own and the employer pays the rest.

    The split is an assumption (contributions.md fixes only the program's
    rounded amount): e.g. JP on Rp4,000,080 is round(120,002.4) = 120,002,
    the worker's 1% round(40,000.8) = 40,001, the employer's 80,001."""
    program_rupiah = multiplier.share(basis_rupiah, employer_basis_points + worker_basis_points)
    worker_rupiah = multiplier.share(basis_rupiah, worker_basis_points)
    return program_rupiah - worker_rupiah, worker_rupiah


def _require_positive_rupiah(field: str, value: object) -> int:
    require_int(field, value)
    if value <= 0:  # type: ignore[operator]
        raise DomainError(field, f"must be a positive whole number of rupiah, got {value:,}")
    return value  # type: ignore[return-value]


def pu_lines(
    period: Period,
    size_class: SizeClass | str,
    jkk_risk_class: int,
    wage_rupiah: int,
    overrides: Sequence[RateOverride] = (),
    *,
    employer_workers: int | None = None,
) -> tuple[DuesLine, ...]:
    """Dues lines for one wage earner (PU) for one month, in ``PROGRAM_ORDER``.

    ``employer_workers``, when given, is checked against each override's
    ``min_workers``; when omitted the caller vouches for eligibility.
    """
    schedule = rate_schedule_for(period)
    programs = programs_for(size_class)
    require_int("jkk_risk_class", jkk_risk_class)
    if not 1 <= jkk_risk_class <= 5:
        raise DomainError("jkk_risk_class", f"must be 1 to 5 (risk class I to V), got {jkk_risk_class}")
    _require_positive_rupiah("wage_rupiah", wage_rupiah)
    if employer_workers is not None:
        require_int("employer_workers", employer_workers, minimum=1)
    multiplier = _multipliers(overrides, period, Segment.PU, employer_workers)
    jkp_enrolled = Program.JKP in programs

    # JKK and JKM: the employer pays the full rate; with JKP enrolled part of it
    # is booked to JKP. Both carve-outs are on the full wage (no ceiling).
    jkk_total = multiplier[Program.JKK].share(
        wage_rupiah, schedule.jkk_basis_points_by_risk_class[jkk_risk_class - 1]
    )
    jkk_carve = multiplier[Program.JKK].share(wage_rupiah, schedule.jkp_from_jkk_basis_points) if jkp_enrolled else 0
    jkm_total = multiplier[Program.JKM].share(wage_rupiah, schedule.jkm_basis_points)
    jkm_carve = multiplier[Program.JKM].share(wage_rupiah, schedule.jkp_from_jkm_basis_points) if jkp_enrolled else 0
    jp_basis_rupiah = min(wage_rupiah, schedule.jp_wage_cap_rupiah)
    jkp_government_basis_rupiah = min(wage_rupiah, schedule.jkp_government_wage_cap_rupiah)
    jht_employer, jht_worker = worker_share_rule(
        multiplier[Program.JHT], wage_rupiah, schedule.jht_employer_basis_points, schedule.jht_worker_basis_points
    )
    jp_employer, jp_worker = worker_share_rule(
        multiplier[Program.JP], jp_basis_rupiah, schedule.jp_employer_basis_points, schedule.jp_worker_basis_points
    )

    candidates = {
        Program.JKK: DuesLine(Program.JKK, wage_rupiah, jkk_total - jkk_carve, 0, 0),
        Program.JKM: DuesLine(Program.JKM, wage_rupiah, jkm_total - jkm_carve, 0, 0),
        Program.JHT: DuesLine(Program.JHT, wage_rupiah, jht_employer, jht_worker, 0),
        Program.JP: DuesLine(Program.JP, jp_basis_rupiah, jp_employer, jp_worker, 0),
        Program.JKP: DuesLine(
            Program.JKP,
            wage_rupiah,
            jkk_carve + jkm_carve,
            0,
            multiplier[Program.JKP].share(jkp_government_basis_rupiah, schedule.jkp_government_basis_points),
        ),
    }
    return tuple(candidates[program] for program in PROGRAM_ORDER if program in programs)


BPU_MINIMUM_MONTHLY_DUES_RUPIAH = 16_800  # JKK minimum 10,000 + JKM 6,800


def bpu_lines(
    period: Period,
    declared_income_rupiah: int,
    with_jht: bool = False,
    overrides: Sequence[RateOverride] = (),
) -> tuple[DuesLine, ...]:
    """Dues lines for one informal worker (BPU) for one month: JKK, JKM, optional JHT.

    The participant pays everything, so every share is in ``worker_rupiah``.
    A discount override applies after the JKK clamp (it halves the dues
    actually owed; assumption).
    """
    schedule = rate_schedule_for(period)
    _require_positive_rupiah("declared_income_rupiah", declared_income_rupiah)
    if not isinstance(with_jht, bool):
        raise DomainError("with_jht", f"must be true or false, got {with_jht!r}")
    multiplier = _multipliers(overrides, period, Segment.BPU, None)

    jkk_undiscounted_rupiah = min(
        max(percent_of(declared_income_rupiah, schedule.bpu_jkk_basis_points), schedule.bpu_jkk_minimum_rupiah),
        schedule.bpu_jkk_maximum_rupiah,
    )
    lines = [
        DuesLine(Program.JKK, declared_income_rupiah, 0, multiplier[Program.JKK].scale(jkk_undiscounted_rupiah), 0),
        DuesLine(
            Program.JKM, declared_income_rupiah, 0, multiplier[Program.JKM].scale(schedule.bpu_jkm_flat_rupiah), 0
        ),
    ]
    if with_jht:
        jht_rupiah = multiplier[Program.JHT].share(declared_income_rupiah, schedule.bpu_jht_basis_points)
        lines.append(DuesLine(Program.JHT, declared_income_rupiah, 0, jht_rupiah, 0))
    return tuple(lines)


LATE_FEE_BASIS_POINTS_PER_MONTH = 200  # 2% of the late dues per month late


def months_late(due: date, as_of: date) -> int:
    """Months of lateness charged when paying on ``as_of`` for a deadline ``due``.

    Any day past the deadline counts as a first month; each further whole month
    elapsed after ``due`` adds one (due 2025-07-15: 07-16 -> 1, 08-15 -> 1,
    08-16 -> 2).
    """
    if as_of <= due:
        return 0
    whole_months = (as_of.year - due.year) * 12 + (as_of.month - due.month)
    if as_of.day <= due.day:
        whole_months -= 1
    return 1 + whole_months


def late_fee_rupiah(dues_rupiah: int, months_late: int) -> int:
    """Late fee ("denda"): 2% of the late dues per month late, rounded half up."""
    require_int("dues_rupiah", dues_rupiah, minimum=0)
    require_int("months_late", months_late, minimum=0)
    return percent_of(dues_rupiah, LATE_FEE_BASIS_POINTS_PER_MONTH * months_late)
