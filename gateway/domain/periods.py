"""Contribution periods (months), payment deadlines and the simulator's time zone."""

from __future__ import annotations

import re
import zoneinfo
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from enum import StrEnum

from gateway.domain.money import DomainError, require_int

# West Kalimantan runs on Western Indonesia Time (UTC+7); deadlines are local dates.
WIB = zoneinfo.ZoneInfo("Asia/Pontianak")

YEAR_MIN = 2000
YEAR_MAX = 2100
DUE_DAY_OF_MONTH = 15

# ASCII flag: \d would otherwise accept Arabic-Indic and other Unicode digits.
_PERIOD_PATTERN = re.compile(r"(\d{4})-(\d{2})", re.ASCII)
_PERIOD_HINT = "expected YYYY-MM, e.g. 2025-06"


class Segment(StrEnum):
    """Participant segment. Defined here (and re-exported by ``dues``) because
    deadlines depend on it and ``dues`` already imports this module."""

    PU = "PU"  # Penerima Upah: wage earners, billed through their employer.
    BPU = "BPU"  # Bukan Penerima Upah: informal workers paying for themselves.


def parse_segment(segment: object) -> Segment:
    try:
        return Segment(segment)
    except ValueError:
        raise DomainError("segment", f"unknown segment {segment!r}; expected PU or BPU") from None


@dataclass(frozen=True, order=True)
class Period:
    """A contribution month. Field order (year, month) makes ordering chronological."""

    year: int
    month: int

    def __post_init__(self) -> None:
        require_int("period", self.year)
        require_int("period", self.month)
        if not YEAR_MIN <= self.year <= YEAR_MAX or not 1 <= self.month <= 12:
            raise DomainError(
                "period",
                f"year must be {YEAR_MIN}-{YEAR_MAX} and month 01-12, got "
                f"{self.year}-{self.month:02d}; {_PERIOD_HINT}",
            )

    @classmethod
    def parse(cls, text: str) -> Period:
        match = _PERIOD_PATTERN.fullmatch(text) if isinstance(text, str) else None
        if match is None:
            raise DomainError("period", f"{text!r} is not a period; {_PERIOD_HINT}")
        return cls(int(match.group(1)), int(match.group(2)))

    @classmethod
    def from_date(cls, day: date) -> Period:
        return cls(day.year, day.month)

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

    @property
    def _month_index(self) -> int:
        return self.year * 12 + (self.month - 1)

    @classmethod
    def _from_month_index(cls, index: int) -> Period:
        return cls(index // 12, index % 12 + 1)

    def __add__(self, months: int) -> Period:
        if isinstance(months, bool) or not isinstance(months, int):
            return NotImplemented
        return Period._from_month_index(self._month_index + months)

    def __sub__(self, other: Period | int) -> int | Period:  # type: ignore[override]
        """``Period - Period`` is the number of months between them;
        ``Period - int`` steps back that many months."""
        if isinstance(other, Period):
            return self._month_index - other._month_index
        if isinstance(other, int) and not isinstance(other, bool):
            return self + (-other)
        return NotImplemented

    def next(self) -> Period:
        return self + 1

    def prev(self) -> Period:
        return self + (-1)

    def first_day(self) -> date:
        return date(self.year, self.month, 1)


def next_working_day(day: date) -> date:
    """``day`` itself on a weekday; the following Monday on a Saturday or Sunday.

    Indonesian public holidays (cuti bersama included) are NOT modelled: the
    calendar changes by ministerial decree every year, so a deadline on a
    holiday stays on that holiday in this simulator.
    """
    weekday = day.weekday()  # Monday 0 .. Sunday 6
    if weekday >= 5:
        return day + timedelta(days=7 - weekday)
    return day


def due_date(period: Period, segment: Segment | str) -> date:
    """Payment deadline of ``period``'s dues.

    PU (employers) pay by the 15th of the following month; BPU (informal
    workers) by the 15th of the same month; a weekend deadline moves to Monday.
    """
    segment = parse_segment(segment)
    billing_month = period.next() if segment is Segment.PU else period
    return next_working_day(date(billing_month.year, billing_month.month, DUE_DAY_OF_MONTH))


def bill_expires_at(due: date, expiry_days_after_due: int, issued_on: date | None = None) -> datetime:
    """When a bill due on `due` stops being payable: the start of the day
    (Asia/Pontianak) after the `expiry_days_after_due`-th day past its due
    date. A bill issued after its due date (`issued_on`, the WIB day of its
    wage report: arrears reported late) counts those days from its issue
    instead, so that it is never born expired and can be paid, late fee and
    all."""
    start = max(due, issued_on) if issued_on is not None else due
    return datetime.combine(start + timedelta(days=expiry_days_after_due + 1), time(), WIB)
