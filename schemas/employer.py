"""Wire models of the employer API (`/api/v1`). Names are snake_case and fixed:
integrators script against them. Add fields freely; never rename.

Numbers are strict: a wage of `12.5`, `"12000"` or `true` is refused, never
coerced. Money is whole rupiah in integers.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from schemas.text import WithoutNul

Rupiah = Annotated[StrictInt, Field(ge=0, le=10**15, description="whole rupiah")]
WAGE_RUPIAH_MAX = 10**12  # a wage or declared income, in JSON and in CSV


class Wire(WithoutNul):
    # NUL in any text field: a 422 naming the field (schemas/text.py).
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class EmployerRegistration(Wire):
    npp: str = Field(description="employer registration number: 8 letters or digits", examples=["JJ0P4391"])
    name: str = Field(min_length=1, max_length=200, examples=["PT Sawit Kapuas Lestari"])
    regency_code: str = Field(description="Home Affairs (Kemendagri) code of a Kalbar regency", examples=["6171"])
    size_class: Literal["micro", "small", "medium", "large"]
    jkk_risk_class: Annotated[StrictInt, Field(ge=1, le=5, description="JKK risk class 1 (lowest) to 5")]


class EmployerOut(Wire):
    npp: str
    name: str
    regency_code: str
    regency_name: str
    size_class: str
    jkk_risk_class: int
    programs: list[str]


class EmployerRegistered(EmployerOut):
    api_key: str = Field(description="shown once; send as `Authorization: Bearer <api_key>`")


class ParticipantIn(Wire):
    kpj: str = Field(description="participant number, 11 digits", examples=["61000000001"])
    nik: str = Field(description="national id, 16 digits", examples=["6171011708900001"])
    name: str = Field(min_length=1, max_length=200)
    wage: Annotated[StrictInt, Field(gt=0, le=WAGE_RUPIAH_MAX, description="monthly wage (PU) or declared income (BPU), whole rupiah")]
    segment: Literal["PU", "BPU"] = "PU"


class ParticipantsBatch(Wire):
    participants: list[ParticipantIn] = Field(min_length=1)
    mode: Literal["all_or_nothing", "keep_valid"] = Field(
        default="all_or_nothing",
        description="all_or_nothing: any invalid row saves nothing; keep_valid: valid rows are saved, invalid ones reported",
    )


class RowError(Wire):
    row: int = Field(description="1-based row number (CSV: data rows after the header)")
    field: str
    problem: str


class CoverageOut(Wire):
    program: str
    state: Literal["active", "grace", "lapsed", "none"]
    last_paid_period: str | None


class ParticipantOut(Wire):
    kpj: str
    nik: str
    name: str
    wage: int
    segment: str
    npp: str
    regency_code: str
    coverage: list[CoverageOut] = []
    jkp_eligible: bool = False


class ParticipantsResult(Wire):
    saved: int
    rejected: int
    mode: str
    errors: list[RowError] = []


class WageLine(Wire):
    kpj: str
    wage: Annotated[StrictInt, Field(gt=0, le=WAGE_RUPIAH_MAX)]


class WageReport(Wire):
    period: str = Field(description="contribution month, YYYY-MM", examples=["2025-06"])
    wages: list[WageLine] = Field(default=[], description="this month's wages where they differ from the registered wage")


class BillLineOut(Wire):
    kpj: str | None
    program: str
    basis_rupiah: int
    employer_rupiah: int
    worker_rupiah: int
    government_rupiah: int
    late_fee_source_payment_code: str | None = None
    late_fee_months: int | None = None


class ProgramTotal(Wire):
    program: str
    employer_rupiah: int
    worker_rupiah: int
    government_rupiah: int
    billed_rupiah: int


class BillOut(Wire):
    payment_code: str
    period: str
    due_date: dt.date
    total_rupiah: int
    status: str
    kind: str
    npp: str
    kpj: str | None = None
    expires_at: dt.datetime
    late_fees_rupiah: int
    government_rupiah: int
    totals: list[ProgramTotal]
    lines: list[BillLineOut] | None = None


class WageReportResult(BillOut):
    bpu_bills: list[BillOut] = []


class BillList(Wire):
    bills: list[BillOut]


class Problem(BaseModel):
    """RFC 9457 problem details, with the fields at fault."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    errors: list[dict] = []
