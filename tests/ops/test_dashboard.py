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


async def test_times_in_wib_and_numbers_in_the_pages_language_whatever_the_browser(gateway_server, bills, browser):
    """A browser in New York with an Indonesian locale: the health card's times
    are Pontianak's, labelled WIB, and the English page groups its numbers the
    English way (1,819,430 next to 0.06%), not id-ID's 1.819.430."""
    import datetime as dt
    import re

    import aiohttp

    await _pay(gateway_server, bills, 1, "6104", 3)
    context = await browser.new_context(timezone_id="America/New_York", locale="id-ID")
    page = await context.new_page()
    try:
        await page.goto(gateway_server.url + "/ops/")
        await page.wait_for_selector("#checks li[data-check='entries_balance'].ok")
        await page.wait_for_selector("#province-protected[data-value='3']")
        async with aiohttp.ClientSession() as http:
            async with http.get(gateway_server.url + "/ops/summary") as response:
                health = (await response.json())["health"]  # not due yet: the verdicts the page shows
            async with http.get(gateway_server.url + "/api/v1/coverage") as response:
                coverage = await response.json()
        when = await page.text_content("#health-at")
        workforce = await page.text_content("#province-workforce")
        protected = await page.text_content("#province-protected")
        gauge = await page.text_content("#province-percent")
        target = await page.text_content("#province-target")
    finally:
        await context.close()

    def hms(iso: str) -> str:
        return dt.datetime.fromisoformat(iso).astimezone(dt.timezone(dt.timedelta(hours=7))).strftime("%H:%M:%S")

    # The numbers first: each half of this test failed on its own before its fix.
    province = coverage["province"]
    assert workforce == f"{province['workforce']:,}"  # 1,819,430: English grouping
    assert f"checked {hms(health['checked_at'])} WIB" in when, when
    assert f"next at {hms(health['next_check_at'])} WIB" in when, when
    assert re.search(r"\d\d:\d\d:\d\d WIB", when)
    assert protected == "3"
    bp = province["coverage_basis_points"]
    assert gauge == f"{bp // 100}.{bp % 100:02d}%" and target == "target 59.56%"
