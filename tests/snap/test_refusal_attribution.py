"""A refusal decided before the partner is looked up (body size or encoding, a
missing or malformed header, the token's format; for service 73 its headers
and timestamp format) is the exchange of the partner the request names, when
that partner is registered: X-PARTNER-ID for services 24 to 26, X-CLIENT-KEY
for service 73. Before, these rows had no partner, and `kanal conformance
BANK --fail-on-error` passed a bank that left out headers."""

from __future__ import annotations

import asyncio
import json

import aiohttp
from snap_support import signed

from bank_adapters.snap.client import INQUIRY_PATH, TOKEN_BODY, token_headers
from tests.callbacks.test_cli import kanal

PARTNER = "BANKHDRS"


async def _send_bytes(bank, service_path: str, body: bytes, headers: dict[str, str]) -> dict:
    """POST raw bytes (a body that is not UTF-8 cannot go through SnapClient.send)."""
    url = bank.base_url + bank.url_path(service_path)
    async with aiohttp.ClientSession() as session, session.post(url, data=body, headers=headers) as response:
        return await response.json()


async def test_early_refusals_count_against_the_partner_the_request_names(gateway_server, make_bank, bills, database_url, tmp_path):
    bank = await make_bank(partner_id=PARTNER)
    bill = await bills.create()
    inquiry = {**bank.virtual_account(bill.payment_code), "inquiryRequestId": "hdr-0001"}
    sent: list[tuple[str, str]] = []  # (responseCode, rule) as the bank saw them

    async def send(text: str, headers: dict[str, str], path: str = INQUIRY_PATH) -> None:
        response = await bank.send(path, text, headers)
        sent.append((response.code, response.rule))

    text, headers = await signed(bank, INQUIRY_PATH, inquiry)
    del headers["CHANNEL-ID"]
    await send(text, headers)
    text, headers = await signed(bank, INQUIRY_PATH, inquiry, timestamp="2025-09-24T10:55:00")  # no offset
    await send(text, headers)
    text, headers = await signed(bank, INQUIRY_PATH, inquiry)
    headers["Authorization"] = "Basic x"
    await send(text, headers)
    text, headers = await signed(bank, INQUIRY_PATH, inquiry)
    answer = await _send_bytes(bank, INQUIRY_PATH, text.encode("utf-8") + b"\xff", headers)
    sent.append((answer["responseCode"], answer["additionalInfo"]["rule"]))
    text, headers = await signed(bank, INQUIRY_PATH, {**inquiry, "additionalInfo": {"padding": "x" * 70_000}})
    await send(text, headers)
    token = token_headers(bank.credentials.client_key, bank.credentials.private_key_pem)
    del token["X-TIMESTAMP"]
    await send(TOKEN_BODY, token, "/v1.0/access-token/b2b")
    token = token_headers(bank.credentials.client_key, bank.credentials.private_key_pem, "24/09/2025 10:55")
    await send(TOKEN_BODY, token, "/v1.0/access-token/b2b")
    assert sent == [
        ("4002402", "header-mandatory"),
        ("4002401", "header-format"),
        ("4012401", "token-format"),
        ("4002401", "body-encoding"),
        ("4002401", "body-size"),
        ("4007302", "header-mandatory"),
        ("4007301", "header-format"),
    ]

    report_path = tmp_path / "report.json"
    written = await asyncio.to_thread(kanal, database_url, "conformance", PARTNER, "--format", "json", "-o", str(report_path))
    assert written.returncode == 0, written.stderr
    report = json.loads(report_path.read_text())
    failed = [(x["response"]["code"], x["rule"]) for x in report["exchanges"] if x["verdict"] == "fail"]
    assert failed == sent
    assert report["summary"]["fail"] == len(sent) and report["summary"]["conformant"] is False
    assert {r["rule"]: r["count"] for r in report["summary"]["failed_rules"]} == {
        "header-mandatory": 2, "header-format": 2, "token-format": 1, "body-encoding": 1, "body-size": 1,
    }
    gate = await asyncio.to_thread(kanal, database_url, "conformance", PARTNER, "--since", "1h", "--fail-on-error")
    assert gate.returncode == 1, gate.stdout + gate.stderr
    for rule in ("header-mandatory", "header-format", "token-format", "body-encoding", "body-size"):
        assert rule in gate.stdout


async def test_a_refusal_naming_no_registered_partner_stays_unattributed(gateway_server, bank, bills):
    bill = await bills.create()
    inquiry = {**bank.virtual_account(bill.payment_code), "inquiryRequestId": "hdr-0002"}
    text, headers = await signed(bank, INQUIRY_PATH, inquiry)
    headers["X-PARTNER-ID"] = "NOSUCHBANK"
    del headers["CHANNEL-ID"]
    assert (await bank.send(INQUIRY_PATH, text, headers)).rule == "header-mandatory"
    token = token_headers("no-such-key", bank.credentials.private_key_pem)
    del token["X-TIMESTAMP"]
    assert (await bank.send("/v1.0/access-token/b2b", TOKEN_BODY, token)).rule == "header-mandatory"
    rows = await gateway_server.pool.fetch(
        """select service_code, partner_id, rule from partner_exchanges
            where request_headers->>'X-PARTNER-ID' = $1 or request_headers->>'X-CLIENT-KEY' = $2
            order by id""",
        "NOSUCHBANK", "no-such-key",
    )
    assert [(r["service_code"], r["partner_id"], r["rule"]) for r in rows] == [
        ("24", None, "header-mandatory"),
        ("73", None, "header-mandatory"),
    ]
