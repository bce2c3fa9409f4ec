"""A hypothesis-driven SNAP fuzzer over real HTTP: random bodies and headers,
signed (so they pass authentication and reach validation and the ledger) and
unsigned or tampered (so they exercise the refusals).

Whatever arrives, the gateway answers in SNAP's own terms: never a 5xx, a
JSON body whose `responseCode` is 7 digits starting with the HTTP status, and
money moves only for a payment it answered 2002500.

The ISO 8583 counterparts are tests/iso8583/test_iso8583_fuzz_codec.py
(decoder properties) and tests/iso8583/test_iso8583_load.py::
test_fuzz_thousands_of_hostile_frames_no_crash_no_hang_no_posting (hostile
frames over real sockets).
"""

from __future__ import annotations

import json
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bank_adapters.snap.client import (
    INQUIRY_PATH,
    PAYMENT_PATH,
    STATUS_PATH,
    TOKEN_PATH,
    SnapClient,
    dumps,
)
from tests.reliability.support import register_partner

SERVICES = [INQUIRY_PATH, PAYMENT_PATH, STATUS_PATH]
HEADER_TEXT = st.text(alphabet=string.printable.strip() + " ", max_size=80)
JSON_LEAF = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**20), 10**20), st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
)
JSON_VALUE = st.recursive(JSON_LEAF, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4), max_leaves=12)
FUZZ = settings(
    max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)


@pytest.fixture
async def fuzz_bank(gateway_server, bills):
    """Bank Kalbar registered on the gateway, one open bill, and the answers seen."""
    credentials = await register_partner(gateway_server.url, partner_id="FUZZBANK", admin_token=gateway_server.admin_token)
    bill = await bills.create(workers=1)
    async with SnapClient(gateway_server.url, credentials) as client:
        await client.token()
        yield client, bill, []


@st.composite
def snap_requests(draw, client: SnapClient, bill) -> tuple[str, bytes, dict[str, str], bool]:
    path = draw(st.sampled_from(SERVICES))
    body: object
    if path == PAYMENT_PATH:
        body = client.payment_body(bill.payment_code, bill.total_rupiah, draw(st.text(string.hexdigits, min_size=1, max_size=64)))
    else:
        body = {**client.virtual_account(bill.payment_code), "inquiryRequestId": "fz1", "paymentRequestId": "fz1"}
    shape = draw(st.sampled_from(["mutate", "mutate", "replace", "bytes"]))
    if shape == "mutate":
        for _ in range(draw(st.integers(1, 3))):
            key = draw(st.sampled_from(sorted(body) + ["extra"]))
            if draw(st.booleans()) and key in body:
                del body[key]
            else:
                body[key] = draw(JSON_VALUE)
    elif shape == "replace":
        body = draw(JSON_VALUE)
    raw = draw(st.binary(max_size=200)) if shape == "bytes" else dumps(body).encode("utf-8")
    signed = draw(st.booleans())
    return path, raw, {"signed": signed, "header_changes": draw(st.dictionaries(
        st.sampled_from(["X-TIMESTAMP", "X-SIGNATURE", "X-PARTNER-ID", "X-EXTERNAL-ID", "CHANNEL-ID", "Authorization", "Content-Type"]),
        st.one_of(st.none(), HEADER_TEXT), max_size=2,
    ))}, signed


async def send(client: SnapClient, path: str, raw: bytes, plan: dict) -> tuple[int, dict]:
    token = await client.token()
    text = raw.decode("utf-8", errors="replace")
    headers = client.signed(path, text if plan["signed"] else text + " tampered", token)
    for name, value in plan["header_changes"].items():
        if value is None:
            headers.pop(name, None)
        else:
            headers[name] = value
    async with client.session.post(client.base_url + client.url_path(path), data=raw, headers=headers) as response:
        payload = await response.read()
        return response.status, json.loads(payload)


@FUZZ
@given(data=st.data())
async def test_random_snap_requests_are_answered_in_snap_terms_and_move_no_money_unless_approved(
    data, fuzz_bank, gateway_server
):
    client, bill, approved = fuzz_bank
    path, raw, plan, _ = data.draw(snap_requests(client, bill))
    status, body = await send(client, path, raw, plan)
    code = body.get("responseCode", "")
    assert status < 500, body
    assert len(code) == 7 and code.isdigit() and code.startswith(str(status)), body
    if path == PAYMENT_PATH and code == "2002500":
        approved.append(body["virtualAccountData"]["paymentRequestId"])
    posted = await gateway_server.pool.fetch("select idempotency_key from payments where status = 'posted'")
    assert [r["idempotency_key"] for r in posted] == approved[:1] and len(posted) <= 1


@settings(FUZZ, max_examples=100)
@given(
    headers=st.dictionaries(st.sampled_from(["X-TIMESTAMP", "X-CLIENT-KEY", "X-SIGNATURE", "Content-Type"]), HEADER_TEXT, max_size=4),
    body=st.one_of(JSON_VALUE.map(dumps), st.text(max_size=100)),
)
async def test_random_token_requests_never_issue_a_token_or_a_5xx(headers, body, fuzz_bank):
    client, _, _ = fuzz_bank
    async with client.session.post(client.base_url + client.url_path(TOKEN_PATH), data=body.encode(), headers=headers) as response:
        payload = json.loads(await response.read())
    assert response.status in (400, 401, 429), payload
    assert payload["responseCode"].startswith(str(response.status)) and payload["responseCode"][3:5] == "73"
    assert "accessToken" not in payload
