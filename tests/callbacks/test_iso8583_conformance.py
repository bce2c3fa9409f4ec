"""The conformance report for an ISO 8583 link: every message recorded with
its verdict, the rule it broke and exactly what broke it; one report per
partner across SNAP and ISO 8583; the CLI gate and the HTML page."""

from __future__ import annotations

import asyncio

from bank_adapters.base import AdapterContext
from bank_adapters.iso8583 import adapter_factory, codec
from bank_adapters.iso8583.client import Iso8583Client
from bank_adapters.snap.client import SnapClient
from tests.callbacks.test_cli import kanal as _kanal
from tests.snap.snap_support import register_partner

PARTNER = "iso8583-123"


async def _exchanges(pool, partner_id: str, count: int, timeout_s: float = 10.0) -> None:
    """Wait until `count` exchanges of the partner are logged (they are written
    right after each answer goes out)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        n = await pool.fetchval("select count(*) from partner_exchanges where partner_id = $1", partner_id)
        if n >= count:
            return
        assert asyncio.get_running_loop().time() < deadline, f"{n} of {count} exchanges logged"
        await asyncio.sleep(0.05)


async def _session_with_mistakes(port: int, bills) -> int:
    """A link that makes six protocol mistakes among good messages; returns how
    many messages it sent."""
    bill = await bills.create(workers=1)
    async with Iso8583Client("127.0.0.1", port, logon=False) as bank:
        assert (await bank.pay(bill.payment_code, bill.total_rupiah)).code == "91"  # before logon
        assert (await bank.logon()).code == "00"
        assert (await bank.network("999")).code == "30"
        missing = bank.financial("0200", "payment", bill.payment_code, bill.total_rupiah)
        del missing["37"]
        assert (await bank.request(missing)).code == "30"
        assert (await bank.pay(bill.payment_code, bill.total_rupiah, **{"3": "990000"})).code == "30"
        assert (await bank.pay(bill.payment_code, bill.total_rupiah, **{"49": "840"})).code == "13"
        broken = bank.financial("0200", "payment", bill.payment_code, bill.total_rupiah)
        broken["4"] = "00000025000X"
        assert (await bank.request(broken)).code == "30"
        assert (await bank.inquiry("00000000000")).code == "14"  # a correct business decline
        assert (await bank.pay_bill(bill.payment_code)).code == "00"  # inquiry, then payment
    return 10


async def test_each_mistake_is_named_with_what_broke_it(callback_gateway, api, bills):
    sent = await _session_with_mistakes(callback_gateway.iso_port, bills)
    await _exchanges(callback_gateway.pool, PARTNER, sent)
    page = await api("GET", f"/api/v1/partners/{PARTNER}/conformance?since=1h", expect=200)
    summary = page["summary"]
    assert (summary["exchanges"], summary["pass"], summary["fail"]) == (sent, 4, 6)
    assert not summary["conformant"]
    assert {r["rule"] for r in summary["failed_rules"]} == {
        "logon", "network-code", "field-mandatory", "processing-code", "currency", "message-format",
    }
    failed = {x["rule"]: x for x in page["exchanges"] if x["verdict"] == "fail"}
    assert all(x["channel"] == "iso8583" and x["response"]["http_status"] is None for x in failed.values())
    assert failed["field-mandatory"]["detail"].startswith("DE37 missing")
    assert "DE3 990000" in failed["processing-code"]["detail"]
    assert "DE49 840" in failed["currency"]["detail"]
    assert "DE70 999" in failed["network-code"]["detail"]
    assert "4" in failed["message-format"]["detail"]
    assert failed["logon"]["response"]["code"] == "91" and failed["logon"]["service"] == "payment"
    assert all(x["rule_description"] for x in failed.values())
    declined = [x for x in page["exchanges"] if x["rule"] == "bill-unknown"]
    assert [x["verdict"] for x in declined] == ["pass"]
    # Faults show as faults, not failures.
    async with Iso8583Client("127.0.0.1", callback_gateway.iso_port) as bank:
        assert (await bank.inquiry("99999999955")).code == "96"
    await _exchanges(callback_gateway.pool, PARTNER, sent + 2)  # logon + inquiry
    faults = await api("GET", f"/api/v1/partners/{PARTNER}/conformance?verdict=fault", expect=200)
    assert [x["fault"] for x in faults["exchanges"]] == ["magic:server-error"]


async def test_the_cli_gate_fails_on_a_broken_iso_rule(callback_gateway, bills, database_url):
    sent = await _session_with_mistakes(callback_gateway.iso_port, bills)
    await _exchanges(callback_gateway.pool, PARTNER, sent)
    ran = await asyncio.to_thread(_kanal, database_url, "conformance", PARTNER, "--since", "1h", "--fail-on-error")
    assert ran.returncode == 1, ran.stderr
    assert "processing-code" in ran.stdout and "DE3 990000" in ran.stdout


async def test_one_report_per_partner_across_snap_and_iso8583(callback_gateway, api, bills):
    """With partner_ids, acquirer 123 is the SNAP partner BANKBOTH: its link's
    messages and its SNAP requests land in one report."""
    adapter = adapter_factory()
    context = AdapterContext(
        payments=callback_gateway.payments,
        pool=callback_gateway.pool,
        settings={"port": "0", "partner_ids": "123=BANKBOTH"},
        sandbox=True,
    )
    await adapter.start(context)
    try:
        bill = await bills.create(workers=1)
        async with SnapClient(callback_gateway.url, await register_partner(callback_gateway, partner_id="BANKBOTH")) as snap:
            assert (await snap.inquiry(bill.payment_code)).ok
        async with Iso8583Client("127.0.0.1", adapter.port) as link:
            assert (await link.pay_bill(bill.payment_code)).code == "00"
        await _exchanges(callback_gateway.pool, "BANKBOTH", 5)  # token, inquiry; logon, inquiry, payment
        await api("PUT", "/api/v1/partners/BANKBOTH/faults", json_body={"inbound": {"server_error_percent": 100}}, expect=200)
        async with Iso8583Client("127.0.0.1", adapter.port) as link:
            assert (await link.inquiry(bill.payment_code)).code == "96", "the partner's faults reach its ISO link"
    finally:
        await adapter.stop()
    report = await api("GET", "/api/v1/partners/BANKBOTH/conformance.json", expect=200)
    assert report["summary"]["conformant"]
    assert {x["channel"] for x in report["exchanges"]} == {"snap", "iso8583"}
    assert set(report["summary"]["by_service"]) >= {"access token", "inquiry", "iso8583 network", "iso8583 payment"}


async def test_html_report_shows_iso_rules_in_a_browser(callback_gateway, bills, browser, artifacts):
    sent = await _session_with_mistakes(callback_gateway.iso_port, bills)
    await _exchanges(callback_gateway.pool, PARTNER, sent)
    context = await browser.new_context(extra_http_headers={"Authorization": f"Bearer {callback_gateway.admin_token}"})
    page = await context.new_page()
    try:
        response = await page.goto(f"{callback_gateway.url}/api/v1/partners/{PARTNER}/conformance.html?since=1h")
        assert response.status == 200
        rules = await page.locator("#failed-rules tr.failed-rule code").all_inner_texts()
        assert sorted(rules) == sorted(["logon", "network-code", "field-mandatory", "processing-code", "currency", "message-format"])
        assert await page.locator("#status").inner_text() == "6 exchange(s) broke a rule"
        notes = await page.locator("tr.exchange.fail td:nth-child(6)").all_inner_texts()
        assert any(n.startswith("field-mandatory: DE37 missing") for n in notes)
        assert await page.locator("tr.exchange", has_text="iso8583 0200").count() >= 1
        await page.screenshot(path=str(artifacts / "conformance-iso8583.png"), full_page=True)
    finally:
        await context.close()


async def test_an_unreadable_frame_is_logged_under_the_links_partner(callback_gateway, bills):
    async with Iso8583Client("127.0.0.1", callback_gateway.iso_port) as bank:  # logs on: the link is acquirer 123's
        await bank.send_raw(codec.frame(b"0200" + b"0" * 5000))  # longer than frame_bytes_max
        assert (await bank.echo()).code == "00"
    await _exchanges(callback_gateway.pool, PARTNER, 3)
    row = await callback_gateway.pool.fetchrow(
        "select rule, detail, answered, response_code from partner_exchanges where partner_id = $1 and rule = 'frame-size'", PARTNER
    )
    assert row is not None and row["answered"] and row["response_code"] == "30"
    assert "frame_bytes_max" in row["detail"]


async def test_a_verdict_filter_pages_through_every_match(callback_gateway, api, bills):
    """Pages of one verdict are filtered before the limit: a page is full while
    more matches exist, and following `next` reaches every one of them."""
    sent = await _session_with_mistakes(callback_gateway.iso_port, bills)
    await _exchanges(callback_gateway.pool, PARTNER, sent)
    seen: list[int] = []
    path = f"/api/v1/partners/{PARTNER}/conformance?verdict=pass&limit=1"
    while path:
        page = await api("GET", path, expect=200)
        assert all(x["verdict"] == "pass" for x in page["exchanges"])
        seen += [x["id"] for x in page["exchanges"]]
        path = page["next"] and page["next"].replace(callback_gateway.url, "")
        assert len(seen) <= sent
    assert len(seen) == 4, "logon, unknown bill, inquiry and payment"
