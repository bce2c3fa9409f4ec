"""Reproducers from session 7's hostile-input pass over every HTTP route
(each failed before its fix): answers of 5xx to inputs that are the caller's
mistake, which must be refused in the caller's own protocol, naming the
field, and write nothing."""

from __future__ import annotations

import asyncio
import dataclasses
import json

import aiohttp
import asyncpg
from yarl import URL

from bank_adapters.exchanges import ExchangeLog, ExchangeRow
from bank_adapters.snap.client import (
    INQUIRY_PATH,
    PAYMENT_PATH,
    STATUS_PATH,
    SnapClient,
)
from tests.snap.snap_support import register_partner

# Deeper than the interpreter's recursion limit: json.loads raises RecursionError.
NESTED = b'{"a":' * 5000 + b"1" + b"}" * 5000


async def _send(server, method: str, path: str, headers: dict, data: bytes | None = None) -> tuple[int, dict | str]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, URL(server.url + path, encoded=True), headers=headers, data=data) as response,
    ):
        text = await response.text()
    try:
        return response.status, json.loads(text)
    except ValueError:
        return response.status, text


def _admin(server) -> dict:
    return {"Authorization": f"Bearer {server.admin_token}"}


# ------------------------------------------------ 1. JSON nested too deep ----


async def test_json_nested_too_deep_is_a_400_naming_the_body(gateway_server, bills):
    bill = await bills.create(workers=1)
    await register_partner(gateway_server, partner_id="NESTBANK")  # an unknown partner's faults are a 404 before the body is read
    api = {"Authorization": f"Bearer {bill.api_key}", "Content-Type": "application/json"}
    admin = {**_admin(gateway_server), "Content-Type": "application/json"}
    for method, path, headers in [
        ("POST", "/api/v1/employers", {"Content-Type": "application/json"}),
        ("POST", f"/api/v1/employers/{bill.npp}/participants", api),
        ("POST", f"/api/v1/employers/{bill.npp}/wage-reports", api),
        ("POST", f"/api/v1/employers/{bill.npp}/callbacks/endpoints", api),
        ("PUT", "/api/v1/partners/NESTBANK/faults", admin),
    ]:
        status, body = await _send(gateway_server, method, path, headers, NESTED)
        assert status == 400, (path, status, body)  # as any malformed JSON
        assert body["errors"] == [{"field": "body", "problem": "malformed JSON"}], (path, body)
    status, body = await _send(gateway_server, "POST", "/snap/admin/partners", admin, NESTED)
    assert (status, body["field"]) == (400, "body"), body


async def test_snap_body_nested_too_deep_is_400xx01_naming_the_body(gateway_server, bills):
    """Before the body is validated, the payment service reads its
    virtualAccountNo (and, in sandbox, every service its magic values) with
    json.loads: the RecursionError was a 500xx00 General Error."""
    credentials = await register_partner(gateway_server, partner_id="NESTSNAP")
    bill = await bills.create(workers=1)
    async with SnapClient(gateway_server.url, credentials) as bank:
        token = await bank.token()
        for path, service in [(INQUIRY_PATH, "24"), (PAYMENT_PATH, "25"), (STATUS_PATH, "26")]:
            for raw in [NESTED, b'{"virtualAccountNo":' + b"[" * 5000 + b"]" * 5000 + b"}"]:
                headers = bank.signed(path, raw.decode(), token)
                async with bank.session.post(bank.base_url + bank.url_path(path), data=raw, headers=headers) as response:
                    body = await response.json()
                assert (response.status, body["responseCode"]) == (400, f"400{service}01"), (path, body)
                assert body["additionalInfo"]["field"] == "body", body
        assert await gateway_server.pool.fetchval("select status from bills where payment_code = $1", bill.payment_code) == "open"


# ------------------------------------------- 3. NUL in a SNAP body's text ----


async def test_snap_text_with_nul_is_400xx01_naming_the_field_and_pays_nothing(gateway_server, bills):
    """PostgreSQL text cannot hold NUL: inquiryRequestId (remembered), and
    paymentRequestId and referenceNo (the ledger's keys) were 500xx00."""
    credentials = await register_partner(gateway_server, partner_id="NULSNAP")
    bill = await bills.create(workers=1)
    async with SnapClient(gateway_server.url, credentials) as bank:
        token = await bank.token()
        va = bank.virtual_account(bill.payment_code)
        cases = [
            (INQUIRY_PATH, "24", {**va, "inquiryRequestId": "a\u0000b"}, "inquiryRequestId"),
            (STATUS_PATH, "26", {**va, "paymentRequestId": "a\u0000b"}, "paymentRequestId"),
            (PAYMENT_PATH, "25", bank.payment_body(bill.payment_code, bill.total_rupiah, "a\u0000b"), "paymentRequestId"),
            (PAYMENT_PATH, "25", {**bank.payment_body(bill.payment_code, bill.total_rupiah, "nul1"), "referenceNo": "\u0000"}, "referenceNo"),
            (PAYMENT_PATH, "25", {**bank.payment_body(bill.payment_code, bill.total_rupiah, "nul2"), "trxId": "t\u0000"}, "trxId"),
        ]
        for path, service, body, field in cases:
            raw = json.dumps(body)
            async with bank.session.post(bank.base_url + bank.url_path(path), data=raw, headers=bank.signed(path, raw, token)) as response:
                answer = await response.json()
            assert (response.status, answer["responseCode"]) == (400, f"400{service}01"), (field, answer)
            assert answer["additionalInfo"]["field"] == field, answer
    assert await gateway_server.pool.fetchval("select status from bills where payment_code = $1", bill.payment_code) == "open"
    assert await gateway_server.pool.fetchval("select count(*) from payments where bill_id = $1", bill.bill_id) == 0


# ---------------------------------- 4. NUL in an employer's or worker's name ----

CSV_HEADER = "kpj,nik,name,wage,segment\n"


async def test_a_name_with_nul_is_a_422_naming_the_field_and_saves_nothing(gateway_server, bills):
    bill = await bills.create(workers=1)
    pool = gateway_server.pool
    json_type = {"Content-Type": "application/json"}
    registration = {"npp": "NU000001", "name": "PT\u0000Nul", "regency_code": "6171", "size_class": "small", "jkk_risk_class": 1}
    status, body = await _send(gateway_server, "POST", "/api/v1/employers", json_type, json.dumps(registration).encode())
    assert status == 422, body
    assert body["errors"][0]["field"] == "name", body
    assert await pool.fetchval("select count(*) from employers where npp = 'NU000001'") == 0

    api = {"Authorization": f"Bearer {bill.api_key}"}
    before = await pool.fetchval("select count(*) from participants where npp = $1", bill.npp)
    worker = {"kpj": "61999999981", "nik": "6171011708900081", "name": "A\u0000B", "wage": 1000}
    for payload, field in [(worker, "name"), ({"participants": [worker], "mode": "keep_valid"}, "participants.0.name")]:
        status, body = await _send(gateway_server, "POST", f"/api/v1/employers/{bill.npp}/participants", {**api, **json_type},
                                   json.dumps(payload).encode())
        assert status == 422, body
        assert body["errors"][0]["field"] == field, body
    row = CSV_HEADER + "61999999981,6171011708900081,A\x00B,1000,PU\n"
    for path in [f"/api/v1/employers/{bill.npp}/participants.csv", "/portal/api/participants/upload"]:
        for mode, expected in [("all_or_nothing", 422), ("keep_valid", 200)]:
            status, body = await _send(gateway_server, "POST", f"{path}?mode={mode}", {**api, "Content-Type": "text/csv"}, row.encode())
            assert status == expected, (path, mode, body)
            assert [(e["row"], e["field"]) for e in body["errors"]] == [(1, "name")], body
    assert await pool.fetchval("select count(*) from participants where npp = $1", bill.npp) == before


# ------------------------------------------ 5. NUL in a bill's or worker's id ----


async def test_a_path_id_with_nul_is_a_404(gateway_server, bills):
    """/api/v1/bills/%00 and friends asked PostgreSQL for a code holding NUL: 500."""
    bill = await bills.create(workers=1)
    api = {"Authorization": f"Bearer {bill.api_key}"}
    for method, path in [
        ("GET", "/api/v1/bills/{}"), ("GET", "/api/v1/participants/{}"),
        ("GET", "/portal/api/bills/{}/pdf"), ("POST", "/portal/api/bills/{}/virtual-bank"),
    ]:
        for value in ["%00", f"{bill.payment_code}%00", "%C2%B2"]:
            status, body = await _send(gateway_server, method, path.format(value), api)
            assert status == 404, (path, value, body)
    status, body = await _send(gateway_server, "GET", f"/api/v1/bills/{bill.payment_code}", api)
    assert status == 200, body
    status, body = await _send(gateway_server, "GET", f"/api/v1/participants/{bill.kpjs[0]}", api)
    assert status == 200, body


# ------------------------------------------- 6. a non-ASCII digit in /ops ----


async def test_ops_integer_query_with_a_superscript_digit_is_a_422_naming_it(gateway_server):
    """str.isdigit() admits "²", which int() refuses: /ops/reconciliations
    answered 500, /ops/health/ledger a 422 that named the wrong field (check)."""
    admin = _admin(gateway_server)
    for path, name in [
        ("/ops/reconciliations", "limit"), ("/ops/reconciliations", "before_id"),
        ("/ops/health/ledger", "rows_max"), ("/ops/health/ledger", "outbox_lag_seconds_max"),
    ]:
        status, body = await _send(gateway_server, "GET", f"{path}?{name}=%C2%B2", admin)
        assert status == 422, (path, name, body)
        assert body["errors"][0]["field"] == name, body


# ----------------------------------------- 7. a CSV wage beyond any rupiah ----


async def test_a_csv_wage_beyond_the_api_limit_is_a_row_error(gateway_server, bills):
    """The JSON API refuses a wage above 10**12; the CSV reader took any
    number of digits, and a wage past bigint was a 500."""
    bill = await bills.create(workers=1)
    api = {"Authorization": f"Bearer {bill.api_key}", "Content-Type": "text/csv"}
    before = await gateway_server.pool.fetchval("select count(*) from participants where npp = $1", bill.npp)
    for wage in ["99999999999999999999999", str(10**12 + 1)]:
        rows = CSV_HEADER + f"61999999971,6171011708900071,Pekerja,{wage},PU\n"
        for path in [f"/api/v1/employers/{bill.npp}/participants.csv", "/portal/api/participants/upload"]:
            for mode, expected in [("all_or_nothing", 422), ("keep_valid", 200)]:
                status, body = await _send(gateway_server, "POST", f"{path}?mode={mode}", api, rows.encode())
                assert status == expected, (path, mode, wage, body)
                assert [(e["row"], e["field"]) for e in body["errors"]] == [(1, "wage")], body
    assert await gateway_server.pool.fetchval("select count(*) from participants where npp = $1", bill.npp) == before


# ------------------------------- 8. what PostgreSQL cannot store, in the log ----


async def test_a_body_postgresql_cannot_store_is_still_logged_and_fails_no_other_row(gateway_server, bills):
    """A raw NUL byte in a SNAP body (refused: not JSON) made its exchange
    row unstorable, and its group's INSERT failed: the rows of every other
    request written with it were lost too. It is stored with U+2400, and a
    bank paying at the same moment keeps its row."""
    credentials = await register_partner(gateway_server, partner_id="NULLOG")
    bill = await bills.create(workers=1)
    async with SnapClient(gateway_server.url, credentials) as bank:
        token = await bank.token()
        raw = '{"partnerServiceId":"\x00"}'

        async def hostile() -> dict:
            headers = bank.signed(PAYMENT_PATH, raw, token)
            async with bank.session.post(bank.base_url + bank.url_path(PAYMENT_PATH), data=raw.encode(),
                                         headers=headers) as response:
                return await response.json()

        refused, paid = await asyncio.gather(hostile(), bank.pay(bill.payment_code, bill.total_rupiah))
    assert refused["responseCode"] == "4002501", refused
    assert paid.ok, paid
    rows = await gateway_server.pool.fetch(
        "select request_body, response_code from partner_exchanges where partner_id = 'NULLOG' and service_code = '25'"
    )
    assert sorted(r["response_code"] for r in rows) == ["2002500", "4002501"]
    assert '{"partnerServiceId":"\u2400"}' in [r["request_body"] for r in rows]


async def test_a_row_that_cannot_be_stored_fails_only_itself(pool):
    log = ExchangeLog(pool)
    good = ExchangeRow(channel="iso8583", partner_id="A", service_code="payment", path="0200", external_id="1",
                       request_headers={}, request_body="{}", answered=True, http_status=None, response_code="00",
                       response_body={"37": "ok"})
    # Past what `columns()` makes storable: a response code over the column's check.
    bad = dataclasses.replace(good, external_id="2", response_code="x" * 10_000, channel="not-a-channel")
    echoed = dataclasses.replace(good, external_id="3", response_body={"37": "rr\u0000n"}, request_body="\u0000")
    results = await asyncio.gather(*(log.record(row) for row in (good, bad, echoed)), return_exceptions=True)
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], asyncpg.PostgresError)
    rows = await pool.fetch("select external_id, request_body, response_body::text as body from partner_exchanges order by external_id")
    assert [(r["external_id"], r["request_body"], r["body"]) for r in rows] == [
        ("1", "{}", '{"37": "ok"}'), ("3", "\u2400", '{"37": "rr\u2400n"}'),
    ]
