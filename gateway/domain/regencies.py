"""West Kalimantan's 14 regencies and cities, and province workforce figures.

Two code systems exist: BPS (Statistics Indonesia) and Kemendagri (Home
Affairs). The wire field ``regency_code`` and the NIK use the Home Affairs code;
several Kalbar regencies have different numbers in the two systems (BPS 6102 is
Bengkayang, Home Affairs 6102 is Mempawah), so lookups are by name of system.
"""

from __future__ import annotations

import csv
import functools
import io
from dataclasses import dataclass
from importlib import resources

from gateway.domain.money import DomainError, require_int

# Sakernas 2025 via BPJS TK Kalbar (Sept 2025): 800,904 formal + 864,518
# informal + 154,008 construction.
PROVINCE_WORKFORCE = 1_819_430
PROVINCE_COVERAGE_TARGET_BASIS_POINTS = 5956  # 59.56%, the province's 2025 target
BASELINE_COVERED_PARTICIPANTS_JULY_2025 = 575_504  # 31.63% of the workforce
PROVINCE_POPULATION_SP2020 = 5_414_390
REGENCY_COUNT = 14


@dataclass(frozen=True)
class Regency:
    bps_code: str
    kemendagri_code: str
    name: str
    kind: str  # "kabupaten" (regency) or "kota" (city)
    population_sp2020: int


@functools.cache
def regencies() -> tuple[Regency, ...]:
    """All 14, in the packaged CSV's order (BPS code order)."""
    text = resources.files("gateway").joinpath("data/kalbar_regencies.csv").read_text(encoding="utf-8")
    rows = tuple(
        Regency(
            bps_code=row["bps_code"],
            kemendagri_code=row["kemendagri_code"],
            name=row["name"],
            kind=row["kind"],
            population_sp2020=int(row["population_sp2020"]),
        )
        for row in csv.DictReader(io.StringIO(text))
    )
    # A truncated or edited data file must fail loudly, not skew every split.
    assert len(rows) == REGENCY_COUNT, len(rows)
    assert len({r.kemendagri_code for r in rows}) == REGENCY_COUNT
    assert sum(r.population_sp2020 for r in rows) == PROVINCE_POPULATION_SP2020
    return rows


@functools.cache
def _by_kemendagri_code() -> dict[str, Regency]:
    return {r.kemendagri_code: r for r in regencies()}


def regency_by_code(code: str) -> Regency:
    """Look up by Home Affairs (Kemendagri) code, the ``regency_code`` on the wire."""
    regency = _by_kemendagri_code().get(code) if isinstance(code, str) else None
    if regency is None:
        raise DomainError(
            "regency_code",
            f"unknown regency {code!r}; expected one of Kalbar's 14 Home Affairs codes, e.g. 6171 (Pontianak)",
        )
    return regency


def regency_by_bps_code(code: str) -> Regency:
    """Look up by BPS code (statistics tables), never the wire code."""
    for regency in regencies():
        if regency.bps_code == code:
            return regency
    raise DomainError("bps_code", f"unknown BPS code {code!r}; expected one of Kalbar's 14, e.g. 6171")


def workforce_by_regency(total: int = PROVINCE_WORKFORCE) -> dict[str, int]:
    """Split ``total`` workers across regencies by 2020 population share.

    Assumption: regency workforce is not published, so it is taken as
    proportional to population. Largest-remainder rounding makes the parts sum
    exactly to ``total``; ties go to the lower Home Affairs code. Keyed by Home
    Affairs code.
    """
    require_int("total", total, minimum=0)
    rows = sorted(regencies(), key=lambda r: r.kemendagri_code)
    population = sum(r.population_sp2020 for r in rows)
    quotas = {r.kemendagri_code: divmod(total * r.population_sp2020, population) for r in rows}
    parts = {code: quotient for code, (quotient, _) in quotas.items()}
    leftover = total - sum(parts.values())
    by_remainder = sorted(quotas, key=lambda code: (-quotas[code][1], code))
    for code in by_remainder[:leftover]:
        parts[code] += 1
    return parts
