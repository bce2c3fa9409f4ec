"""SNAP BI virtual-account request bodies as the bank sends them.

Field names are the wire's (camelCase). Lengths follow ../shared/domain/snap-va.md.
Unknown fields are ignored: banks add their own. Types are not coerced: a
number where a string is expected is a format error, as it is for the bank's
other billers.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from schemas.text import WithoutNul

__all__ = [
    "Amount",
    "FieldProblem",
    "InquiryRequest",
    "PaymentRequest",
    "StatusRequest",
    "TokenRequest",
    "ValidationError",
    "first_problem",
]


class _Wire(WithoutNul):
    # NUL is a format error here (the ledger keys on paymentRequestId, the
    # inquiry is remembered by inquiryRequestId): schemas/text.py.
    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)


class Amount(_Wire):
    value: str = Field(min_length=1, max_length=19)
    currency: str = Field(min_length=1, max_length=3)

    @field_validator("currency")
    @classmethod
    def _rupiah_only(cls, currency: str) -> str:
        if currency != "IDR":
            raise ValueError(f"currency {currency!r} is not accepted; only \"IDR\" is")
        return currency

    @field_validator("value")
    @classmethod
    def _two_zero_decimals(cls, value: str) -> str:
        from bank_adapters.snap.protocol import parse_rupiah  # the one amount rule

        parse_rupiah(value)
        return value


class TokenRequest(_Wire):
    grantType: Literal["client_credentials"]
    additionalInfo: dict[str, Any] | None = None


class _VirtualAccount(_Wire):
    partnerServiceId: str = Field(min_length=1, max_length=8)
    customerNo: str = Field(min_length=1, max_length=20, pattern=r"^[0-9]+$")
    virtualAccountNo: str = Field(min_length=1, max_length=28)
    additionalInfo: dict[str, Any] | None = None

    @field_validator("partnerServiceId")
    @classmethod
    def _eight_characters(cls, value: str) -> str:
        if len(value) != 8:
            raise ValueError(f"must be exactly 8 characters (left-padded), got {len(value)}")
        return value


class InquiryRequest(_VirtualAccount):
    inquiryRequestId: str = Field(min_length=1, max_length=128)
    trxDateInit: str | None = Field(default=None, max_length=25)
    channelCode: int | None = Field(default=None, ge=0, le=9999)
    language: str | None = Field(default=None, max_length=2)
    amount: Amount | None = None
    sourceBankCode: str | None = Field(default=None, max_length=3)
    passApp: str | None = Field(default=None, max_length=64)


class PaymentRequest(_VirtualAccount):
    paymentRequestId: str = Field(min_length=1, max_length=128)
    paidAmount: Amount
    totalAmount: Amount | None = None
    channelCode: int | None = Field(default=None, ge=0, le=9999)
    hashedSourceAccountNo: str | None = Field(default=None, max_length=32)
    sourceBankCode: str | None = Field(default=None, max_length=3)
    trxId: str | None = Field(default=None, max_length=64)
    trxDateTime: str | None = Field(default=None, max_length=25)
    referenceNo: str | None = Field(default=None, max_length=64)
    journalNum: str | None = Field(default=None, max_length=6)
    paymentType: str | None = Field(default=None, max_length=1)
    flagAdvise: Literal["Y", "N"] | None = None
    paidBills: str | None = Field(default=None, max_length=6)
    billDetails: list[dict[str, Any]] | None = Field(default=None, max_length=24)
    freeTexts: list[dict[str, Any]] | None = Field(default=None, max_length=25)


class StatusRequest(_VirtualAccount):
    paymentRequestId: str = Field(min_length=1, max_length=128)
    inquiryRequestId: str | None = Field(default=None, max_length=128)


class FieldProblem(BaseModel):
    """The first thing wrong with a body: which field, and whether it is
    missing (SNAP case 02) or malformed (case 01)."""

    field: str
    missing: bool
    reason: str


def first_problem(error: ValidationError) -> FieldProblem:
    """The problem to report, missing fields first, as the bank fixes them in that order."""
    problems = error.errors(include_url=False)
    problems.sort(key=lambda problem: not _is_missing(problem))
    problem = problems[0]
    field = ".".join(str(part) for part in problem["loc"]) or "body"
    reason = problem["msg"].removeprefix("Value error, ")
    if problem["type"] == "literal_error":
        reason = f"{reason}, got {problem.get('input')!r}"
    return FieldProblem(field=field, missing=_is_missing(problem), reason=reason)


def _is_missing(problem: Any) -> bool:
    if problem["type"] == "missing":
        return True
    # An empty string or a null where a value is required counts as missing.
    return problem.get("input", 0) in ("", None)
