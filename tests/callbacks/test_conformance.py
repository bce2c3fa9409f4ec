"""The conformance report: browsable API, JSON export, a self-contained HTML
page in a real headless browser, and `kanal conformance --fail-on-error`."""

from __future__ import annotations

import asyncio
import json

import pytest

from bank_adapters.snap.client import SnapClient
from tests.callbacks.test_cli import kanal as _kanal
from tests.snap.snap_support import register_partner, signed

INQUIRY = "/v1.0/transfer-va/inquiry"


async def _session(callback_gateway, bills, partner_id: str, *, mistakes: bool) -> SnapClient:
    """A bank's session: a good inquiry and payment, a business decline, a
    magic fault, and (with mistakes) a bad signature and a wrongly padded
    partnerServiceId."""
    bank = SnapClient(callback_gateway.url, await register_partner(callback_gateway, partner_id=partner_id))
    bill = await bills.create(workers=1)
    inquiry = await bank.inquiry(bill.payment_code)
    assert (await bank.pay(bill.payment_code, bill.total_rupiah, inquiry.request_id)).ok
    assert (await bank.inquiry("00000000000")).rule == "bill-unknown"
    assert (await bank.inquiry("99999999955")).case == "50000"
    if mistakes:
        text, headers = await signed(bank, INQUIRY, {**bank.virtual_account(bill.payment_code), "inquiryRequestId": "x1"})
        headers["X-SIGNATURE"] = headers["X-SIGNATURE"][::-1]
        assert (await bank.send(INQUIRY, text, headers)).rule == "signature"
        body = {**bank.virtual_account(bill.payment_code), "inquiryRequestId": "x2"}
        body["partnerServiceId"] = body["partnerServiceId"].replace(" ", "0")
        body["virtualAccountNo"] = body["partnerServiceId"] + bill.payment_code
        text, headers = await signed(bank, INQUIRY, body)
        assert (await bank.send(INQUIRY, text, headers)).rule == "partner-service-id-padding"
    await bank.close()
    return bank


async def test_browsable_api_and_json_export(callback_gateway, api, bills):
    await _session(callback_gateway, bills, "BANKCONF", mistakes=True)
    page = await api("GET", "/api/v1/partners/BANKCONF/conformance?since=1h", expect=200)
    summary = page["summary"]
    assert summary["fail"] == 2 and summary["fault"] == 1 and summary["conformant"] is False
    assert summary["pass"] == 4  # token, inquiry, payment, bill-unknown decline
    assert {r["rule"] for r in summary["failed_rules"]} == {"signature", "partner-service-id-padding"}
    failing = await api("GET", "/api/v1/partners/BANKCONF/conformance?verdict=fail", expect=200)
    assert [x["rule"] for x in failing["exchanges"]] == ["partner-service-id-padding", "signature"]
    shown = failing["exchanges"][1]
    assert shown["request"]["headers"]["X-PARTNER-ID"] == "BANKCONF" and shown["response"]["code"] == "4012400"
    assert "HMAC-SHA512" in shown["rule_description"]
    first = await api("GET", "/api/v1/partners/BANKCONF/conformance?limit=2", expect=200)
    assert len(first["exchanges"]) == 2 and first["next"]
    rest = await api("GET", first["next"], expect=200)
    assert rest["exchanges"][0]["id"] < first["exchanges"][-1]["id"]
    export = await api("GET", "/api/v1/partners/BANKCONF/conformance.json", expect=200)
    assert export["summary"] == summary and len(export["exchanges"]) == summary["exchanges"]
    assert [x["verdict"] for x in export["exchanges"]].count("fault") == 1
    refused = await api("GET", "/api/v1/partners/BANKCONF/conformance?since=yesterday", expect=422)
    assert refused["errors"][0]["field"] == "since"
    # A window that ends before it begins holds nothing: refused, not an empty report.
    for path in ("conformance", "conformance.json"):
        backwards = await api("GET", f"/api/v1/partners/BANKCONF/{path}?since=1h&until=2h", expect=422)
        assert backwards["errors"][0]["field"] == "until" and "before since" in backwards["errors"][0]["problem"]
    # A duration too long for the calendar is out of range, not "neither ISO 8601 nor a duration".
    huge = await api("GET", "/api/v1/partners/BANKCONF/conformance?since=99999999d", expect=422)
    assert "out of range" in huge["errors"][0]["problem"]
    await api("GET", "/api/v1/partners/BANKCONF/conformance", token="not-admin", expect=401)


async def test_html_report_opens_in_a_browser_and_shows_failed_rules(callback_gateway, bills, browser, artifacts):
    await _session(callback_gateway, bills, "BANKHTML", mistakes=True)
    context = await browser.new_context(extra_http_headers={"Authorization": f"Bearer {callback_gateway.admin_token}"})
    page = await context.new_page()
    outside: list[str] = []
    page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(callback_gateway.url) else None)
    try:
        response = await page.goto(f"{callback_gateway.url}/api/v1/partners/BANKHTML/conformance.html?since=1h")
        assert response.status == 200
        rules = await page.locator("#failed-rules tr.failed-rule code").all_inner_texts()
        assert sorted(rules) == ["partner-service-id-padding", "signature"]
        assert await page.locator("#status").inner_text() == "2 exchange(s) broke a rule"
        assert await page.locator("#count-fail").inner_text() == "2"
        assert await page.locator("tr.exchange.fail").count() == 2
        await page.screenshot(path=str(artifacts / "conformance-report.png"), full_page=True)
    finally:
        await context.close()
    assert outside == [], "the page is self-contained"




async def test_cli_fails_the_pipeline_on_a_broken_rule(callback_gateway, bills, database_url, tmp_path):
    await _session(callback_gateway, bills, "BANKBAD", mistakes=True)
    await _session(callback_gateway, bills, "BANKGOOD", mistakes=False)
    bad = await asyncio.to_thread(_kanal, database_url, "conformance", "BANKBAD", "--since", "1h", "--fail-on-error")
    good = await asyncio.to_thread(_kanal, database_url, "conformance", "BANKGOOD", "--since", "1h", "--fail-on-error")
    assert bad.returncode == 1, bad.stderr
    assert "signature" in bad.stdout and "partner-service-id-padding" in bad.stdout
    assert good.returncode == 0, good.stdout + good.stderr
    assert "Every exchange followed the protocol." in good.stdout
    report = tmp_path / "bad.json"
    written = await asyncio.to_thread(_kanal, database_url, "conformance", "BANKBAD", "--format", "json", "-o", str(report))
    assert written.returncode == 0  # no --fail-on-error: a report, not a gate
    assert json.loads(report.read_text())["summary"]["fail"] == 2
    future = await asyncio.to_thread(_kanal, database_url, "conformance", "BANKBAD", "--since", "2999-01-01T00:00:00Z", "--fail-on-error")
    assert future.returncode == 0 and "0 exchanges" in future.stdout
    wrong = await asyncio.to_thread(_kanal, database_url, "conformance", "BANKBAD", "--since", "last tuesday")
    assert wrong.returncode == 2 and "--since" not in wrong.stdout and "neither an ISO 8601 time" in wrong.stderr
    backwards = await asyncio.to_thread(
        _kanal, database_url, "conformance", "BANKBAD", "--since", "1h", "--until", "2h", "--fail-on-error"
    )
    assert backwards.returncode == 2 and "before since" in backwards.stderr


@pytest.mark.parametrize("partner", ["a" * 37, "BANK%20X"])
async def test_bad_partner_id_is_refused(callback_gateway, api, partner):
    refused = await api("GET", f"/api/v1/partners/{partner}/conformance", expect=422)
    assert refused["errors"][0]["field"] == "partner_id"
