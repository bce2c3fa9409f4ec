from datetime import date

import pytest

from gateway.domain.money import DomainError
from gateway.domain.periods import WIB, Period, Segment, due_date, next_working_day


def test_parse_and_format_round_trip():
    period = Period.parse("2025-06")
    assert period == Period(2025, 6)
    assert str(period) == "2025-06"
    assert str(Period(2000, 1)) == "2000-01"


@pytest.mark.parametrize(
    "text",
    ["2025-6", "2025-13", "2025-00", "1999-12", "2101-01", "25-06", " 2025-06", "2025-06 ",
     "2025-06-01", "2025/06", "\uff12\uff10\uff12\uff15-06", "", "abcd-ef"],
)
def test_parse_rejects_anything_but_strict_yyyy_mm(text):
    with pytest.raises(DomainError) as error:
        Period.parse(text)
    assert error.value.field == "period"
    assert "expected YYYY-MM, e.g. 2025-06" in str(error.value)


def test_parse_rejects_non_strings():
    with pytest.raises(DomainError):
        Period.parse(202506)  # type: ignore[arg-type]


def test_constructor_validates():
    with pytest.raises(DomainError):
        Period(2025, 13)
    with pytest.raises(DomainError):
        Period(True, 1)  # type: ignore[arg-type]


def test_boundary_years_accepted():
    assert Period.parse("2000-01") < Period.parse("2100-12")


def test_ordering_is_chronological():
    assert Period(2024, 12) < Period(2025, 1) < Period(2025, 2)
    assert sorted([Period(2025, 3), Period(2024, 11), Period(2025, 1)]) == [
        Period(2024, 11), Period(2025, 1), Period(2025, 3)
    ]


def test_arithmetic_across_year_ends():
    assert Period(2025, 12).next() == Period(2026, 1)
    assert Period(2026, 1).prev() == Period(2025, 12)
    assert Period(2025, 6) + 7 == Period(2026, 1)
    assert Period(2025, 6) + -6 == Period(2024, 12)
    assert Period(2026, 1) - Period(2025, 6) == 7
    assert Period(2025, 6) - Period(2026, 1) == -7
    assert Period(2025, 2) - 3 == Period(2024, 11)


def test_from_date_and_first_day():
    assert Period.from_date(date(2025, 7, 31)) == Period(2025, 7)
    assert Period(2025, 7).first_day() == date(2025, 7, 1)


@pytest.mark.parametrize(
    ("day", "expected"),
    [
        (date(2025, 7, 14), date(2025, 7, 14)),  # Monday
        (date(2025, 7, 18), date(2025, 7, 18)),  # Friday
        (date(2025, 7, 19), date(2025, 7, 21)),  # Saturday -> Monday
        (date(2025, 7, 20), date(2025, 7, 21)),  # Sunday -> Monday
        (date(2025, 5, 31), date(2025, 6, 2)),  # Saturday at a month end
    ],
)
def test_next_working_day(day, expected):
    assert next_working_day(day) == expected


@pytest.mark.parametrize(
    ("period", "segment", "expected"),
    [
        ("2025-06", "PU", date(2025, 7, 15)),  # Tuesday: unchanged
        ("2025-02", "PU", date(2025, 3, 17)),  # 15 March 2025 is a Saturday
        ("2025-05", "PU", date(2025, 6, 16)),  # 15 June 2025 is a Sunday
        ("2025-12", "PU", date(2026, 1, 15)),  # crosses the year end
        ("2025-07", "BPU", date(2025, 7, 15)),  # BPU: the same month
        ("2025-03", "BPU", date(2025, 3, 17)),  # Saturday
        ("2025-06", "BPU", date(2025, 6, 16)),  # Sunday
    ],
)
def test_due_date(period, segment, expected):
    assert due_date(Period.parse(period), segment) == expected
    assert due_date(Period.parse(period), Segment(segment)) == expected


def test_due_date_rejects_unknown_segment():
    with pytest.raises(DomainError) as error:
        due_date(Period(2025, 6), "XX")
    assert error.value.field == "segment"


def test_wib_is_pontianak():
    assert WIB.key == "Asia/Pontianak"
