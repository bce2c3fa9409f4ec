import random
from pathlib import Path

import pytest

from gateway.domain.codes import (
    make_payment_code,
    nik_regency_code,
    validate_kpj,
    validate_nik,
    validate_npp,
    validate_payment_code,
)
from gateway.domain.money import DomainError
from gateway.domain.regencies import (
    BASELINE_COVERED_PARTICIPANTS_JULY_2025,
    PROVINCE_COVERAGE_TARGET_BASIS_POINTS,
    PROVINCE_WORKFORCE,
    regencies,
    regency_by_bps_code,
    regency_by_code,
    workforce_by_regency,
)

# --- payment codes ------------------------------------------------------------


def test_payment_code_shape():
    code = make_payment_code(1)
    assert code == "00000000013"
    assert len(make_payment_code(9_999_999_999)) == 11
    assert validate_payment_code(code) == code


@pytest.mark.parametrize("serial", [0, -1, 10_000_000_000, True])
def test_payment_code_serial_range(serial):
    with pytest.raises(DomainError) as error:
        make_payment_code(serial)
    assert error.value.field == "serial"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("1234567890", "must be 11 digits, got 10"),
        ("123456789012", "must be 11 digits, got 12"),
        ("1234567890A", "digits 0-9 only"),
        ("12345 67890", "digits 0-9 only"),
        ("\u0661" * 11, "digits 0-9 only"),  # Arabic-Indic digits
        ("", "digits 0-9 only"),
        ("00000000000", "never issued"),
    ],
)
def test_payment_code_format_errors(text, problem):
    with pytest.raises(DomainError) as error:
        validate_payment_code(text)
    assert error.value.field == "payment_code"
    assert problem in error.value.problem


def test_payment_code_bad_check_digit():
    code = make_payment_code(1_234_567)
    wrong = code[:-1] + str((int(code[-1]) + 1) % 10)
    with pytest.raises(DomainError) as error:
        validate_payment_code(wrong)
    assert "check digit" in error.value.problem


def test_every_single_digit_error_and_adjacent_transposition_is_refused():
    rng = random.Random(20250915)
    for _ in range(300):
        code = make_payment_code(rng.randint(1, 9_999_999_999))
        assert validate_payment_code(code) == code
        for position in range(len(code)):
            for digit in "0123456789":
                if digit != code[position]:
                    typo = code[:position] + digit + code[position + 1 :]
                    with pytest.raises(DomainError):
                        validate_payment_code(typo)
        for position in range(len(code) - 1):
            a, b = code[position], code[position + 1]
            if a != b:
                swapped = code[:position] + b + a + code[position + 2 :]
                with pytest.raises(DomainError):
                    validate_payment_code(swapped)


def test_damm_catches_the_09_90_swap_luhn_misses():
    code = make_payment_code(900)  # ...0900 + check
    swapped = code.replace("0900", "9000", 1)
    assert swapped != code
    with pytest.raises(DomainError):
        validate_payment_code(swapped)


# --- NIK ------------------------------------------------------------------------


def test_valid_kalbar_nik():
    assert validate_nik("6171011708450001") == "6171011708450001"  # man born 17-08-1945
    assert validate_nik("6171015708450001") == "6171015708450001"  # woman: day + 40
    assert nik_regency_code("6171015708450001") == "6171"


def test_nik_regency_code_is_the_home_affairs_code():
    # Home Affairs 6107 is Bengkayang (BPS 6102).
    assert regency_by_code(nik_regency_code("6107010101900001")).name == "Bengkayang"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("617101170845000", "must be 16 digits, got 15"),
        ("61710117084500012", "must be 16 digits, got 17"),
        ("61710117084500A1", "digits 0-9 only"),
        ("6171013208450001", "birth date"),  # day 32
        ("6171017208450001", "birth date"),  # woman, day 72 - 40 = 32
        ("6171010013450001", "birth date"),  # month 13
        ("6171010008450001", "birth date"),  # month 00
        ("9971011708450001", "province/regency"),
    ],
)
def test_invalid_nik_reasons(text, problem):
    with pytest.raises(DomainError) as error:
        validate_nik(text)
    assert error.value.field == "nik"
    assert problem in error.value.problem


# --- KPJ and NPP -----------------------------------------------------------------


def test_kpj():
    assert validate_kpj("12345678901") == "12345678901"
    for bad in ("1234567890", "123456789012", "1234567890X"):
        with pytest.raises(DomainError) as error:
            validate_kpj(bad)
        assert error.value.field == "kpj"


def test_npp():
    assert validate_npp("JJ0P4391") == "JJ0P4391"
    assert validate_npp("jj0p4391") == "JJ0P4391"  # accepted, upper-cased
    assert validate_npp("12345678") == "12345678"
    for bad in ("JJ0P439", "JJ0P43910", "JJ0P-391", "JJ0P 391", "ÄJ0P4391"):
        with pytest.raises(DomainError) as error:
            validate_npp(bad)
        assert error.value.field == "npp"


# --- regencies -------------------------------------------------------------------


def test_fourteen_regencies():
    rows = regencies()
    assert len(rows) == 14
    assert sum(r.population_sp2020 for r in rows) == 5_414_390
    assert regencies() is rows  # cached


@pytest.mark.parametrize(
    ("bps_code", "kemendagri_code", "name"),
    [
        ("6102", "6107", "Bengkayang"),
        ("6103", "6108", "Landak"),
        ("6104", "6102", "Mempawah"),
        ("6105", "6103", "Sanggau"),
        ("6106", "6104", "Ketapang"),
        ("6107", "6105", "Sintang"),
        ("6108", "6106", "Kapuas Hulu"),
    ],
)
def test_codes_that_differ_between_bps_and_home_affairs(bps_code, kemendagri_code, name):
    assert regency_by_code(kemendagri_code).name == name
    assert regency_by_code(kemendagri_code).bps_code == bps_code
    assert regency_by_bps_code(bps_code).kemendagri_code == kemendagri_code


def test_bps_6102_is_bengkayang_but_home_affairs_6102_is_mempawah():
    assert regency_by_bps_code("6102").name == "Bengkayang"
    assert regency_by_code("6102").name == "Mempawah"


def test_shared_codes():
    assert regency_by_code("6171").name == "Pontianak"
    assert regency_by_code("6171").kind == "kota"
    assert regency_by_code("6112").name == "Kubu Raya"


@pytest.mark.parametrize("code", ["6113", "6199", "61", "", "3171"])
def test_unknown_regency(code):
    with pytest.raises(DomainError) as error:
        regency_by_code(code)
    assert error.value.field == "regency_code"
    assert "6171 (Pontianak)" in error.value.problem


def test_province_figures():
    assert PROVINCE_WORKFORCE == 1_819_430
    assert PROVINCE_COVERAGE_TARGET_BASIS_POINTS == 5_956
    assert BASELINE_COVERED_PARTICIPANTS_JULY_2025 == 575_504


@pytest.mark.parametrize("total", [PROVINCE_WORKFORCE, 0, 1, 13, 14, 15, 1_000_003])
def test_workforce_split_sums_exactly(total):
    parts = workforce_by_regency(total)
    assert sum(parts.values()) == total
    assert set(parts) == {r.kemendagri_code for r in regencies()}
    assert all(part >= 0 for part in parts.values())


def test_workforce_split_follows_population():
    parts = workforce_by_regency()
    assert max(parts, key=parts.__getitem__) == "6171"  # Pontianak, the most populous
    assert min(parts, key=parts.__getitem__) == "6111"  # Kayong Utara, the least
    pontianak = regency_by_code("6171").population_sp2020
    assert abs(parts["6171"] - PROVINCE_WORKFORCE * pontianak / 5_414_390) < 1


SHARED_CSV = Path(__file__).parents[2].parent / "shared/data/kalbar_regencies.csv"
PACKAGED_CSV = Path(__file__).parents[2] / "gateway/data/kalbar_regencies.csv"


@pytest.mark.skipif(not SHARED_CSV.exists(), reason="shared data directory not present")
def test_packaged_csv_matches_the_shared_data():
    assert PACKAGED_CSV.read_bytes() == SHARED_CSV.read_bytes()
