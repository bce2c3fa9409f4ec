from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.domain.dues import (
    BPU_DISCOUNTS_2026,
    BPU_MINIMUM_MONTHLY_DUES_RUPIAH,
    JKK_LABOUR_INTENSIVE_DISCOUNT_2025,
    LATE_FEE_BASIS_POINTS_PER_MONTH,
    DuesLine,
    Program,
    RateOverride,
    Segment,
    SizeClass,
    bpu_lines,
    late_fee_rupiah,
    months_late,
    programs_for,
    pu_lines,
)
from gateway.domain.money import DomainError, percent_of
from gateway.domain.periods import Period

P = Period.parse


def by_program(lines: tuple[DuesLine, ...]) -> dict[Program, DuesLine]:
    return {line.program: line for line in lines}


def billed(lines: tuple[DuesLine, ...]) -> int:
    return sum(line.billed_rupiah for line in lines)


# --- money -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "rate", "expected"),
    [
        (2_500, 54, 14),  # 13.5 -> 14
        (2_499, 54, 13),  # 13.4946
        (1, 5_000, 1),  # 0.5 -> 1
        (1, 4_999, 0),
        (12_000_000, 24, 28_800),
        (0, 570, 0),
    ],
)
def test_percent_of_rounds_half_up(amount, rate, expected):
    assert percent_of(amount, rate) == expected


def test_percent_of_rejects_negative_and_bool():
    with pytest.raises(DomainError):
        percent_of(-1, 24)
    with pytest.raises(DomainError):
        percent_of(True, 24)  # type: ignore[arg-type]


def test_domain_error_shape():
    error = DomainError("wage_rupiah", "must be positive")
    assert isinstance(error, ValueError)
    assert (error.field, error.problem, str(error)) == ("wage_rupiah", "must be positive", "wage_rupiah: must be positive")


# --- the worked example in contributions.md ----------------------------------


def test_worked_example():
    lines = pu_lines(P("2025-06"), SizeClass.LARGE, 2, 12_000_000)
    assert lines == (
        DuesLine(Program.JKK, 12_000_000, 48_000, 0, 0),
        DuesLine(Program.JKM, 12_000_000, 36_000, 0, 0),
        DuesLine(Program.JHT, 12_000_000, 444_000, 240_000, 0),
        DuesLine(Program.JP, 10_547_400, 210_948, 105_474, 0),
        DuesLine(Program.JKP, 12_000_000, 16_800, 0, 11_000),
    )
    line = by_program(lines)
    assert line[Program.JKK].billed_rupiah + line[Program.JKP].employer_rupiah == 64_800  # JKK 0.54%
    assert line[Program.JHT].billed_rupiah == 684_000
    assert line[Program.JP].billed_rupiah == 316_422
    assert line[Program.JKP].billed_rupiah == 16_800  # the government's 11,000 is not billed
    assert billed(lines) == 1_101_222


# --- JP wage cap, at every change ----------------------------------------------

JP_CAPS = [
    ("2023-03", 9_559_600, 191_192, 95_596),
    ("2024-02", 9_559_600, 191_192, 95_596),
    ("2024-03", 10_042_300, 200_846, 100_423),
    ("2025-02", 10_042_300, 200_846, 100_423),
    ("2025-03", 10_547_400, 210_948, 105_474),
    ("2026-02", 10_547_400, 210_948, 105_474),
    ("2026-03", 11_086_300, 221_726, 110_863),
    ("2030-01", 11_086_300, 221_726, 110_863),  # the last table stays in force
]


@pytest.mark.parametrize(("period", "cap", "employer", "worker"), JP_CAPS)
def test_jp_cap_at_and_above(period, cap, employer, worker):
    for wage in (cap, cap + 1, cap * 3):
        jp = by_program(pu_lines(P(period), "large", 1, wage))[Program.JP]
        assert (jp.basis_rupiah, jp.employer_rupiah, jp.worker_rupiah) == (cap, employer, worker)


@pytest.mark.parametrize(("period", "cap", "employer", "worker"), JP_CAPS)
def test_jp_just_below_cap_uses_the_wage(period, cap, employer, worker):
    wage = cap - 1
    jp = by_program(pu_lines(P(period), "large", 1, wage))[Program.JP]
    assert jp.basis_rupiah == wage
    assert jp.employer_rupiah == percent_of(wage, 200)
    assert jp.worker_rupiah == percent_of(wage, 100)


def test_jp_cap_below_and_at_cap_hundred_rupiah_apart():
    # 100 rupiah under the 2025-03 cap: 2% is 2 rupiah less, 1% is 1 less.
    jp = by_program(pu_lines(P("2025-03"), "large", 1, 10_547_300))[Program.JP]
    assert (jp.employer_rupiah, jp.worker_rupiah) == (210_946, 105_473)


def test_no_rate_table_before_2023_03():
    with pytest.raises(DomainError) as error:
        pu_lines(P("2023-02"), "large", 1, 5_000_000)
    assert error.value.field == "period"
    assert "no rate table before 2023-03" in str(error.value)
    with pytest.raises(DomainError):
        bpu_lines(P("2023-02"), 1_000_000)


# --- JKP recomposition ---------------------------------------------------------


def test_jkp_before_february_2025_is_46_basis_points():
    line = by_program(pu_lines(P("2025-01"), "large", 1, 5_000_000))
    jkp = line[Program.JKP]
    assert jkp.employer_rupiah == 7_000 + 5_000  # 0.14% from JKK + 0.10% from JKM
    assert jkp.government_rupiah == 11_000  # 0.22%
    assert jkp.employer_rupiah + jkp.government_rupiah == 23_000  # 0.46% of 5,000,000
    assert line[Program.JKM].employer_rupiah == 10_000  # JKM keeps 0.20%
    assert line[Program.JKK].employer_rupiah == 12_000 - 7_000  # JKK keeps 0.24 - 0.14


def test_jkp_from_february_2025_is_36_basis_points():
    line = by_program(pu_lines(P("2025-02"), "large", 1, 5_000_000))
    jkp = line[Program.JKP]
    assert jkp.employer_rupiah == 7_000
    assert jkp.employer_rupiah + jkp.government_rupiah == 18_000  # 0.36% of 5,000,000
    assert line[Program.JKM].employer_rupiah == 15_000  # JKM keeps its full 0.30%


def test_employer_pays_the_same_before_and_after_the_recomposition():
    # PP 6/2025 moved money between funds; the employer's bill did not change.
    assert billed(pu_lines(P("2025-01"), "large", 3, 8_000_000)) == billed(
        pu_lines(P("2025-02"), "large", 3, 8_000_000)
    )


@pytest.mark.parametrize(
    ("wage", "government"),
    [(4_000_000, 8_800), (4_999_999, 11_000), (5_000_000, 11_000), (5_000_001, 11_000), (50_000_000, 11_000)],
)
def test_jkp_government_share_ceiling(wage, government):
    jkp = by_program(pu_lines(P("2025-06"), "medium", 1, wage))[Program.JKP]
    assert jkp.government_rupiah == government
    assert jkp.employer_rupiah == percent_of(wage, 14)  # carve-out on the full wage


def test_jkp_carve_outs_are_on_the_full_wage():
    line = by_program(pu_lines(P("2024-06"), "large", 2, 30_000_000))
    assert line[Program.JKP].employer_rupiah == 42_000 + 30_000
    assert line[Program.JKP].government_rupiah == 11_000


# --- JKK risk classes and size classes ------------------------------------------


@pytest.mark.parametrize(
    ("risk_class", "jkk_total"), [(1, 24_000), (2, 54_000), (3, 89_000), (4, 127_000), (5, 174_000)]
)
def test_each_jkk_risk_class(risk_class, jkk_total):
    large = by_program(pu_lines(P("2025-06"), "large", risk_class, 10_000_000))
    assert large[Program.JKK].employer_rupiah == jkk_total - 14_000
    assert large[Program.JKP].employer_rupiah == 14_000
    micro = by_program(pu_lines(P("2025-06"), "micro", risk_class, 10_000_000))
    assert micro[Program.JKK].employer_rupiah == jkk_total  # no JKP: JKK keeps all


@pytest.mark.parametrize(
    ("size_class", "programs"),
    [
        ("large", ("JKK", "JKM", "JHT", "JP", "JKP")),
        ("medium", ("JKK", "JKM", "JHT", "JP", "JKP")),
        ("small", ("JKK", "JKM", "JHT")),
        ("micro", ("JKK", "JKM")),
    ],
)
def test_size_class_program_matrix(size_class, programs):
    assert programs_for(size_class) == programs
    assert programs_for(SizeClass(size_class)) == programs
    lines = pu_lines(P("2025-06"), size_class, 2, 12_000_000)
    assert tuple(line.program for line in lines) == programs


def test_without_jkp_jkk_and_jkm_keep_their_full_rate_even_before_2025_02():
    line = by_program(pu_lines(P("2025-01"), "small", 2, 12_000_000))
    assert line[Program.JKK].employer_rupiah == 64_800
    assert line[Program.JKM].employer_rupiah == 36_000
    assert billed(pu_lines(P("2025-01"), "small", 2, 12_000_000)) == 64_800 + 36_000 + 684_000


# --- rounding ----------------------------------------------------------------


def test_half_rupiah_cases_round_up():
    # 5,002,500 makes every percentage below land on exactly .5 rupiah.
    line = by_program(pu_lines(P("2025-01"), "large", 2, 5_002_500))
    assert line[Program.JKK] == DuesLine(Program.JKK, 5_002_500, 27_014 - 7_004, 0, 0)  # 27,013.5 - 7,003.5
    assert line[Program.JKM] == DuesLine(Program.JKM, 5_002_500, 15_008 - 5_003, 0, 0)  # 15,007.5 - 5,002.5
    assert line[Program.JHT] == DuesLine(Program.JHT, 5_002_500, 185_093, 100_050, 0)  # 285,142.5 - 100,050
    assert line[Program.JP] == DuesLine(Program.JP, 5_002_500, 100_050, 50_025, 0)
    assert line[Program.JKP] == DuesLine(Program.JKP, 5_002_500, 7_004 + 5_003, 0, 11_000)
    # The employer pays round(wage * 0.54%) for JKK however the carve-out rounded.
    assert line[Program.JKK].employer_rupiah + 7_004 == 27_014


def test_jht_is_one_rounded_program_amount_per_worker():
    # contributions.md: "each program's amount per participant is rounded half up".
    # Rp1,000,025: JHT 5.7% = 57,001.425 -> 57,001 (3.7% and 2% rounded apart would make 37,001 + 20,001 = 57,002).
    line = by_program(pu_lines(P("2025-06"), "small", 1, 1_000_025))
    assert line[Program.JHT].billed_rupiah == 57_001
    assert line[Program.JHT].worker_rupiah == 20_001  # 20,000.5: the worker's 2%, rounded on its own
    assert line[Program.JHT].employer_rupiah == 57_001 - 20_001
    # JKK 0.24% = 2,400.06 -> 2,400; JKM 0.30% = 3,000.075 -> 3,000.
    assert billed(pu_lines(P("2025-06"), "small", 1, 1_000_025)) == 2_400 + 3_000 + 57_001


def test_jp_is_one_rounded_program_amount_per_worker():
    # Rp4,000,080: JP 3% = 120,002.4 -> 120,002 (2% and 1% apart: 80,002 + 40,001 = 120,003).
    lines = pu_lines(P("2025-06"), "large", 1, 4_000_080)
    line = by_program(lines)
    assert line[Program.JP].billed_rupiah == 120_002
    assert (line[Program.JP].employer_rupiah, line[Program.JP].worker_rupiah) == (80_001, 40_001)
    # JKK 0.24% = 9,600.19 -> 9,600; JKM 12,000.24 -> 12,000; JHT 5.7% = 228,004.56 -> 228,005.
    assert billed(lines) == 9_600 + 12_000 + 228_005 + 120_002


def test_tiny_wage_half_cases():
    line = by_program(pu_lines(P("2025-06"), "large", 2, 2_500))
    assert line[Program.JKK].employer_rupiah == 14 - 4  # 13.5 -> 14, carve 3.5 -> 4
    assert line[Program.JKP].employer_rupiah == 4


# --- validation ----------------------------------------------------------------


@pytest.mark.parametrize("wage", [0, -1, True, "12000000"])
def test_wage_must_be_a_positive_int(wage):
    with pytest.raises(DomainError) as error:
        pu_lines(P("2025-06"), "large", 2, wage)
    assert error.value.field == "wage_rupiah"


@pytest.mark.parametrize("risk_class", [0, 6, True, "2"])
def test_risk_class_must_be_1_to_5(risk_class):
    with pytest.raises(DomainError) as error:
        pu_lines(P("2025-06"), "large", risk_class, 12_000_000)
    assert error.value.field == "jkk_risk_class"


def test_unknown_size_class():
    with pytest.raises(DomainError) as error:
        pu_lines(P("2025-06"), "huge", 2, 12_000_000)
    assert error.value.field == "size_class"


def test_period_must_be_a_period():
    with pytest.raises(DomainError) as error:
        pu_lines("2025-06", "large", 2, 12_000_000)  # type: ignore[arg-type]
    assert error.value.field == "period"


# --- overrides -----------------------------------------------------------------


def test_overrides_are_opt_in():
    assert pu_lines(P("2025-06"), "large", 2, 12_000_000) != pu_lines(
        P("2025-06"), "large", 2, 12_000_000, [JKK_LABOUR_INTENSIVE_DISCOUNT_2025]
    )


def test_labour_intensive_discount_halves_jkk_in_its_window():
    lines = pu_lines(P("2025-06"), "large", 2, 12_000_000, [JKK_LABOUR_INTENSIVE_DISCOUNT_2025])
    line = by_program(lines)
    assert line[Program.JKK].employer_rupiah + line[Program.JKP].employer_rupiah == 32_400
    assert line[Program.JKK].employer_rupiah == 24_000
    assert line[Program.JKP].employer_rupiah == 8_400
    assert line[Program.JKP].government_rupiah == 11_000  # untouched
    assert line[Program.JKM].employer_rupiah == 36_000  # untouched
    assert billed(lines) == 1_101_222 - 32_400


def test_labour_intensive_discount_rounds_half_rates_once():
    # Class III halved is 0.445%: 44,500 on 10,000,000 (not 44,000 or 45,000).
    line = by_program(pu_lines(P("2025-06"), "micro", 3, 10_000_000, [JKK_LABOUR_INTENSIVE_DISCOUNT_2025]))
    assert line[Program.JKK].employer_rupiah == 44_500


@pytest.mark.parametrize(("period", "applied"), [("2025-01", False), ("2025-02", True), ("2026-01", True), ("2026-02", False)])
def test_labour_intensive_discount_window(period, applied):
    plain = by_program(pu_lines(P(period), "micro", 2, 12_000_000))[Program.JKK].employer_rupiah
    discounted = by_program(pu_lines(P(period), "micro", 2, 12_000_000, [JKK_LABOUR_INTENSIVE_DISCOUNT_2025]))
    assert discounted[Program.JKK].employer_rupiah == (plain // 2 if applied else plain)


@pytest.mark.parametrize(("workers", "applied"), [(49, False), (50, True), (None, True)])
def test_labour_intensive_discount_minimum_workers(workers, applied):
    jkk = by_program(
        pu_lines(P("2025-06"), "micro", 2, 12_000_000, [JKK_LABOUR_INTENSIVE_DISCOUNT_2025], employer_workers=workers)
    )[Program.JKK]
    assert jkk.employer_rupiah == (32_400 if applied else 64_800)


def test_bpu_overrides_do_not_touch_pu_bills():
    assert pu_lines(P("2026-06"), "large", 2, 12_000_000, BPU_DISCOUNTS_2026) == pu_lines(
        P("2026-06"), "large", 2, 12_000_000
    )


def test_override_validation():
    with pytest.raises(DomainError):
        RateOverride("x", Program.JKK, P("2025-03"), P("2025-02"), 1, 2, Segment.PU)
    with pytest.raises(DomainError):
        RateOverride("x", Program.JKK, P("2025-02"), P("2025-03"), 1, 0, Segment.PU)


# --- BPU -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("income", "jkk"),
    [(1, 10_000), (999_999, 10_000), (1_000_000, 10_000), (1_500_000, 15_000), (1_000_050, 10_001),
     (20_700_000, 207_000), (20_700_001, 207_000), (100_000_000, 207_000)],
)
def test_bpu_jkk_clamps(income, jkk):
    lines = bpu_lines(P("2025-06"), income)
    assert lines == (
        DuesLine(Program.JKK, income, 0, jkk, 0),
        DuesLine(Program.JKM, income, 0, 6_800, 0),
    )
    assert billed(lines) >= BPU_MINIMUM_MONTHLY_DUES_RUPIAH


def test_bpu_minimum_is_16_800():
    assert billed(bpu_lines(P("2025-06"), 500_000)) == BPU_MINIMUM_MONTHLY_DUES_RUPIAH == 16_800


def test_bpu_optional_jht():
    lines = bpu_lines(P("2025-06"), 3_000_000, with_jht=True)
    assert lines[-1] == DuesLine(Program.JHT, 3_000_000, 0, 60_000, 0)
    assert billed(lines) == 30_000 + 6_800 + 60_000


@pytest.mark.parametrize(("period", "applied"), [("2025-12", False), ("2026-01", True), ("2026-12", True), ("2027-01", False)])
def test_bpu_discount_2026(period, applied):
    lines = by_program(bpu_lines(P(period), 1_000_000, overrides=BPU_DISCOUNTS_2026))
    expected = (5_000, 3_400) if applied else (10_000, 6_800)
    assert (lines[Program.JKK].worker_rupiah, lines[Program.JKM].worker_rupiah) == expected


def test_bpu_validation():
    with pytest.raises(DomainError) as error:
        bpu_lines(P("2025-06"), 0)
    assert error.value.field == "declared_income_rupiah"
    with pytest.raises(DomainError) as error:
        bpu_lines(P("2025-06"), 1_000_000, with_jht="yes")  # type: ignore[arg-type]
    assert error.value.field == "with_jht"


# --- late fees ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("as_of", "months"),
    [
        (date(2025, 7, 14), 0),
        (date(2025, 7, 15), 0),
        (date(2025, 7, 16), 1),
        (date(2025, 8, 15), 1),
        (date(2025, 8, 16), 2),
        (date(2025, 9, 15), 2),
        (date(2025, 9, 16), 3),
        (date(2026, 7, 16), 13),
    ],
)
def test_months_late(as_of, months):
    assert months_late(date(2025, 7, 15), as_of) == months


def test_months_late_at_a_month_end():
    assert months_late(date(2025, 1, 31), date(2025, 2, 28)) == 1
    assert months_late(date(2025, 1, 31), date(2025, 3, 1)) == 2


@pytest.mark.parametrize(
    ("dues", "months", "fee"),
    [(1_101_222, 0, 0), (1_101_222, 1, 22_024), (1_101_222, 3, 66_073), (25, 1, 1), (24, 1, 0), (100_000, 2, 4_000)],
)
def test_late_fee(dues, months, fee):
    assert LATE_FEE_BASIS_POINTS_PER_MONTH == 200
    assert late_fee_rupiah(dues, months) == fee


def test_late_fee_rejects_negative_months():
    with pytest.raises(DomainError) as error:
        late_fee_rupiah(100_000, -1)
    assert error.value.field == "months_late"


# --- properties -------------------------------------------------------------------

periods = st.builds(lambda offset: P("2023-03") + offset, st.integers(0, 12 * 6))


@given(
    period=periods,
    size_class=st.sampled_from(list(SizeClass)),
    risk_class=st.integers(1, 5),
    wage=st.integers(1, 500_000_000),
)
def test_pu_lines_properties(period, size_class, risk_class, wage):
    lines = pu_lines(period, size_class, risk_class, wage)
    assert billed(lines) == sum(line.employer_rupiah + line.worker_rupiah for line in lines)
    for line in lines:
        for share in (line.basis_rupiah, line.employer_rupiah, line.worker_rupiah, line.government_rupiah):
            assert type(share) is int and share >= 0
    line = by_program(lines)
    # Each program's amount per worker is rounded once (contributions.md).
    if Program.JHT in line:
        assert line[Program.JHT].billed_rupiah == percent_of(wage, 570)
    if Program.JP in line:
        assert line[Program.JP].billed_rupiah == percent_of(line[Program.JP].basis_rupiah, 300)
    risk_rate = (24, 54, 89, 127, 174)[risk_class - 1]
    jkk_carve = percent_of(wage, 14) if Program.JKP in line else 0
    assert line[Program.JKK].employer_rupiah + jkk_carve == percent_of(wage, risk_rate)
    if Program.JKP in line:
        jkm_carve = line[Program.JKP].employer_rupiah - jkk_carve
        assert line[Program.JKM].employer_rupiah + jkm_carve == percent_of(wage, 30)
        assert line[Program.JKP].government_rupiah <= 11_000


@given(period=periods, income=st.integers(1, 100_000_000), with_jht=st.booleans())
def test_bpu_lines_properties(period, income, with_jht):
    lines = bpu_lines(period, income, with_jht)
    assert billed(lines) >= BPU_MINIMUM_MONTHLY_DUES_RUPIAH
    assert all(line.employer_rupiah == 0 and line.government_rupiah == 0 for line in lines)
    assert all(type(line.worker_rupiah) is int for line in lines)
