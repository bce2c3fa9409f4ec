"""Fixes from an integrator's audit of the SNAP adapter, each as the bank sees
it over HTTP: the Authorization scheme's case, the field a refusal names, the
admin API's conflict field, and a repeated paymentRequestId with "0.00"."""

from __future__ import annotations

import aiohttp
import pytest
from snap_support import key_pair, signed

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


# ------------------------------------------------- admin API conflicts ----


async def _add_partner(server, **fields) -> tuple[int, dict]:
    payload = {"public_key": key_pair(0)[1], **fields}
    async with aiohttp.ClientSession() as session, session.post(
        f"{server.url}/snap/admin/partners", json=payload, headers={"Authorization": f"Bearer {server.admin_token}"}
    ) as response:
        return response.status, await response.json()


async def test_a_taken_client_key_is_named_client_key_and_a_taken_partner_id_partner_id(gateway_server):
    assert (await _add_partner(gateway_server, partner_id="BANKTAKEN", client_key="taken-key"))[0] == 201
    status, answer = await _add_partner(gateway_server, partner_id="BANKOTHER", client_key="taken-key")
    assert (status, answer["field"]) == (409, "client_key"), answer
    assert "client key" in answer["error"]
    status, answer = await _add_partner(gateway_server, partner_id="BANKTAKEN", client_key="fresh-key")
    assert (status, answer["field"]) == (409, "partner_id"), answer
    assert "partner id" in answer["error"]
