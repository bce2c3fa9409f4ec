"""The live dashboard in a real headless Chromium: numbers move when payments post."""

from __future__ import annotations

from bank_adapters.base import PayCommand, PayOutcome

PHONE = {"width": 390, "height": 844}


async def test_dashboard_updates_live_after_payments(gateway_server, bills, browser, artifacts):
    # Make the hub sample quickly so the test does not wait a second per step.
    from gateway.ops.http import ops_hub_key

    gateway_server.gateway.app[ops_hub_key].sample_interval_ms = 200
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        await page.goto(gateway_server.url + "/ops/")
        await page.wait_for_selector("#live[data-state='live']")
        await page.wait_for_selector("#board li >> nth=13")  # all 14 regencies ranked
        await page.wait_for_selector("#checks li[data-check='entries_balance'].ok")
        assert await page.get_attribute("#province-protected", "data-value") == "0"
        assert await page.get_attribute("#payments-accepted", "data-value") == "0"
        assert await page.text_content("#province-target") == "target 59.56%"

        for n, regency in enumerate(("6104", "6104", "6171")):
            info = await bills.create(workers=4, regency_code=regency)
            result = await gateway_server.payments.pay(
                PayCommand(info.payment_code, info.total_rupiah, "snap:BANKKALBAR", f"DASH-{n}", f"R{n}")
            )
            assert result.outcome == PayOutcome.POSTED

        # Coverage (SSE /api/v1/stream/coverage) and ops (SSE /ops/stream) both move.
        await page.wait_for_selector("#province-protected[data-value='12']")
        await page.wait_for_selector("#payments-accepted[data-value='3']")
        leader = page.locator("#board li").first
        assert await leader.get_attribute("data-regency") == "6104"  # Ketapang leads with 8 protected
        assert await leader.locator(".rank").text_content() == "1"
        assert await leader.locator(".protected").get_attribute("data-value") == "8"
        assert await page.locator("#board li").nth(1).get_attribute("data-regency") == "6171"
        sparkline = await page.get_attribute("#spark-line", "points")
        assert sparkline and len(sparkline.split()) >= 2
        await page.screenshot(path=str(artifacts / "ops-dashboard-desktop.png"), full_page=True)

        await page.set_viewport_size(PHONE)
        # Nothing overflows sideways on a phone.
        assert await page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        await page.screenshot(path=str(artifacts / "ops-dashboard-phone.png"), full_page=True)
    finally:
        await page.close()
    assert errors == []
    assert (artifacts / "ops-dashboard-desktop.png").stat().st_size > 10_000
    assert (artifacts / "ops-dashboard-phone.png").stat().st_size > 10_000


async def _pay(server, bills, n: int, code: str, workers: int) -> None:
    info = await bills.create(workers=workers, regency_code=code)
    result = await server.payments.pay(PayCommand(info.payment_code, info.total_rupiah, "snap:BANKKALBAR", f"DB-{n}", f"DB{n:05d}"))
    assert result.outcome == PayOutcome.POSTED


async def test_the_ranking_uses_the_exact_ratio_then_the_regency_code(gateway_server, bills, browser):
    """Melawi 80/76707 (10.43 bp) above Bengkayang 92/96229 (9.56 bp), both
    10 bp once rounded; the regencies that tie (none protected) by code, as
    `kanal coverage` ranks them, not by name."""
    for n, (code, workers) in enumerate((("6107", 92), ("6110", 80))):
        await _pay(gateway_server, bills, n, code, workers)
    page = await browser.new_page()
    try:
        await page.goto(gateway_server.url + "/ops/")
        await page.wait_for_selector("#province-protected[data-value='172']")
        codes = await page.eval_on_selector_all("#board li", "items => items.map((li) => li.dataset.regency)")
    finally:
        await page.close()
    assert codes[:2] == ["6110", "6107"]
    assert codes[2:] == sorted(codes[2:]) and len(codes) == 14
