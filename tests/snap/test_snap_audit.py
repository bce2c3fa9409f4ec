"""Fixes from an integrator's audit of the SNAP adapter, each as the bank sees
it over HTTP: the Authorization scheme's case, the field a refusal names, the
admin API's conflict field, and a repeated paymentRequestId with "0.00"."""

from __future__ import annotations

import pytest
from snap_support import signed

from bank_adapters.snap.client import INQUIRY_PATH

# ------------------------------------------- Authorization scheme's case ----


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "bEaReR"])
async def test_the_bearer_scheme_is_accepted_in_any_case(bank, bills, scheme):
    """RFC 9110 11.1: an authentication scheme is case-insensitive."""
    bill = await bills.create()
    text, headers = await signed(bank, INQUIRY_PATH, {**bank.virtual_account(bill.payment_code), "inquiryRequestId": "case-0001"})
    token = headers["Authorization"].removeprefix("Bearer ")
    headers["Authorization"] = f"{scheme} {token}"
    response = await bank.send(INQUIRY_PATH, text, headers)
    assert response.code == "2002400", response.body


async def test_another_scheme_is_still_token_format(bank, bills):
    bill = await bills.create()
    text, headers = await signed(bank, INQUIRY_PATH, {**bank.virtual_account(bill.payment_code), "inquiryRequestId": "case-0002"})
    headers["Authorization"] = "Basic x"
    response = await bank.send(INQUIRY_PATH, text, headers)
    assert (response.code, response.rule) == ("4012401", "token-format")
