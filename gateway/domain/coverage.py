"""Protection states and JKP eligibility, derived from which months are paid.

Rules (contributions.md): with arrears of up to 3 months BPJS still pays JKK and
JKP benefits ("grace"); beyond that the employer carries the risk ("lapsed").
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime
from enum import StrEnum

from gateway.domain.money import DomainError
from gateway.domain.periods import Period, Segment, due_date, parse_segment

GRACE_MONTHS_MAX = 3
JKP_WINDOW_MONTHS = 24
JKP_PAID_MONTHS_MIN = 12
JKP_CONSECUTIVE_MONTHS_MIN = 6


class ProtectionState(StrEnum):
    ACTIVE = "active"  # the latest due month is paid
    GRACE = "grace"  # 1 to 3 due months unpaid; BPJS still pays benefits
    LAPSED = "lapsed"  # more than 3 unpaid; the employer pays benefits first
    NONE = "none"  # never paid


PROTECTED_STATES = frozenset({ProtectionState.ACTIVE, ProtectionState.GRACE})


def latest_due_period(as_of: date, segment: Segment | str) -> Period:
    """The latest contribution period whose deadline is on or before ``as_of``.

    Uses ``due_date`` so a deadline pushed past a weekend is honoured: a month
    is not overdue until its (shifted) deadline has arrived.
    """
    segment = parse_segment(segment)
    # A datetime is a date subclass but cannot be compared with one; the
    # caller must pick the local (WIB) calendar day itself.
    if not isinstance(as_of, date) or isinstance(as_of, datetime):
        raise DomainError("as_of", f"must be a date (for a datetime use .astimezone(WIB).date()), got {as_of!r}")
    period = Period.from_date(as_of)
    # as_of's own month is the latest period that could be due (BPU); a
    # deadline is at most ~1.6 months after its period starts, so three steps
    # back always reach a due period. The bound guards against a rules change.
    for _ in range(4):
        if due_date(period, segment) <= as_of:
            return period
        period = period.prev()
    raise AssertionError(f"no due period found near {as_of} for {segment}")


def protection_state(
    last_paid_period: Period | None, as_of: date, segment: Segment | str
) -> ProtectionState:
    """Protection of a participant whose latest paid month is ``last_paid_period``."""
    if last_paid_period is None:
        return ProtectionState.NONE
    months_unpaid = latest_due_period(as_of, segment) - last_paid_period
    if months_unpaid <= 0:
        return ProtectionState.ACTIVE
    if months_unpaid <= GRACE_MONTHS_MAX:
        return ProtectionState.GRACE
    return ProtectionState.LAPSED


def oldest_protected_period(as_of: date, segment: Segment | str) -> Period:
    """A participant whose last paid period is at or after this one is protected
    (active or grace): handy for counting coverage in SQL with one comparison."""
    return latest_due_period(as_of, segment) - GRACE_MONTHS_MAX


def jkp_eligible(paid_periods: Iterable[Period], as_of_period: Period) -> bool:
    """At least 12 paid months among the 24 ending at ``as_of_period`` (inclusive),
    at least 6 of them consecutive."""
    window_first = as_of_period - (JKP_WINDOW_MONTHS - 1)
    paid = {p for p in paid_periods if window_first <= p <= as_of_period}
    if len(paid) < JKP_PAID_MONTHS_MIN:
        return False
    longest_run = run = 0
    period = window_first
    for _ in range(JKP_WINDOW_MONTHS):
        run = run + 1 if period in paid else 0
        longest_run = max(longest_run, run)
        period = period.next()
    return longest_run >= JKP_CONSECUTIVE_MONTHS_MIN
