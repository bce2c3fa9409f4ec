"""The docs page, opened in a real headless Chromium."""


async def test_docs_page_renders_in_chromium(gateway_server, browser, artifacts):
    page = await browser.new_page()
    try:
        await page.goto(gateway_server.url + "/docs")
        heading = await page.text_content("h1")
        assert "Kanal API" in heading
        assert await page.locator("code", has_text="/api/v1/employers/{npp}/wage-reports").count() >= 1
        assert await page.locator("code", has_text="/api/v1/partners/{partner_id}/conformance.html").count() >= 1
        await page.screenshot(path=str(artifacts / "docs.png"), full_page=True)
    finally:
        await page.close()
    assert (artifacts / "docs.png").stat().st_size > 1000
