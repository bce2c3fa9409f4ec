from datetime import date

import pytest

from gateway.domain.coverage import (
    PROTECTED_STATES,
    ProtectionState,
    jkp_eligible,
    latest_due_period,
    oldest_protected_period,
    protection_state,
)
from gateway.domain.periods import Period


@pytest.mark.parametrize(
    ("as_of", "segment", "expected"),
    [
        (date(2025, 7, 15), "PU", "2025-06"),  # deadline day itself counts
        (date(2025, 7, 14), "PU", "2025-05"),
        (date(2025, 3, 15), "PU", "2025-01"),  # 2025-02 due Monday 17 March
        (date(2025, 3, 16), "PU", "2025-01"),
        (date(2025, 3, 17), "PU", "2025-02"),
        (date(2026, 1, 15), "PU", "2025-12"),
        (date(2025, 7, 15), "BPU", "2025-07"),
        (date(2025, 7, 14), "BPU", "2025-06"),
        (date(2025, 6, 15), "BPU", "2025-05"),  # Sunday: 2025-06 due Monday 16 June
        (date(2025, 6, 16), "BPU", "2025-06"),
    ],
)
def test_latest_due_period(as_of, segment, expected):
    assert latest_due_period(as_of, segment) == Period.parse(expected)


@pytest.mark.parametrize(
    ("last_paid", "expected"),
    [
        (None, ProtectionState.NONE),
        ("2025-08", ProtectionState.ACTIVE),  # paid ahead
        ("2025-06", ProtectionState.ACTIVE),
        ("2025-05", ProtectionState.GRACE),  # 1 month unpaid
        ("2025-03", ProtectionState.GRACE),  # 3 months unpaid
        ("2025-02", ProtectionState.LAPSED),  # 4 months unpaid
        ("2023-01", ProtectionState.LAPSED),
    ],
)
def test_protection_state_boundaries(last_paid, expected):
    period = None if last_paid is None else Period.parse(last_paid)
    assert protection_state(period, date(2025, 7, 15), "PU") == expected


def test_protection_moves_on_the_deadline_not_before():
    # The day before 2025-06's deadline, paying up to 2025-05 is still active.
    assert protection_state(Period(2025, 5), date(2025, 7, 14), "PU") == ProtectionState.ACTIVE
    assert protection_state(Period(2025, 5), date(2025, 7, 15), "PU") == ProtectionState.GRACE
    assert protection_state(Period(2025, 3), date(2025, 7, 14), "PU") == ProtectionState.GRACE
    assert protection_state(Period(2025, 3), date(2025, 7, 15), "PU") == ProtectionState.GRACE
    assert protection_state(Period(2025, 3), date(2025, 8, 15), "PU") == ProtectionState.LAPSED


def test_protected_states():
    assert PROTECTED_STATES == {ProtectionState.ACTIVE, ProtectionState.GRACE}


def test_oldest_protected_period_agrees_with_protection_state():
    as_of = date(2025, 7, 15)
    oldest = oldest_protected_period(as_of, "PU")
    assert oldest == Period(2025, 3)
    assert protection_state(oldest, as_of, "PU") in PROTECTED_STATES
    assert protection_state(oldest.prev(), as_of, "PU") not in PROTECTED_STATES


def run(first: str, months: int) -> list[Period]:
    start = Period.parse(first)
    return [start + i for i in range(months)]


AS_OF = Period(2025, 12)  # window: 2024-01 .. 2025-12


@pytest.mark.parametrize(
    ("paid", "expected"),
    [
        (run("2025-01", 12), True),
        (run("2025-02", 11), False),  # 11 months
        (run("2024-01", 12), True),  # the window's first month counts
        (run("2023-12", 12), False),  # 2023-12 is outside: 11 in the window
        (run("2025-07", 6) + run("2024-01", 6), True),  # two runs of 6
        # 12 months in runs of 5, 5 and 2: none 6 long.
        (run("2024-01", 5) + run("2024-07", 5) + run("2025-01", 2), False),
        (run("2024-01", 6) + [Period(2024, 8) + 2 * i for i in range(6)], True),
        (run("2025-07", 12), False),  # only 6 not after as_of
        (run("2025-01", 11) * 2, False),  # duplicates count once
    ],
)
def test_jkp_eligibility(paid, expected):
    assert jkp_eligible(iter(paid), AS_OF) is expected


def test_jkp_eligibility_with_nothing_paid():
    assert jkp_eligible([], AS_OF) is False


def test_latest_due_period_wants_a_local_date():
    from datetime import datetime

    from gateway.domain.money import DomainError
    from gateway.domain.periods import WIB

    with pytest.raises(DomainError) as error:
        latest_due_period(datetime(2025, 7, 15, 9, tzinfo=WIB), "PU")
    assert error.value.field == "as_of"
