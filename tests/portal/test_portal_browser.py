"""The employer's whole monthly cycle in a real headless Chromium against a
real gateway: register, upload a workbook with planted errors (nothing saved),
keep the valid rows, fix the rest in the page, report wages, read the bill,
download its PDF, pay it with the sandbox virtual bank over SNAP and watch
each worker's protection switch on live, then history and arrears, in both
languages, on a desktop and on a phone, by keyboard, every control labelled.

Screenshots go to test-artifacts/portal-*.png.
"""

from __future__ import annotations

import datetime as dt
import re

from gateway.domain.periods import WIB, Period
from gateway.store.ledger import EVENTS_CHANNEL
from tests.portal.conftest import pdf_text_and_image

DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
# Waiting for the page (not asserting on time): generous, never hit when it works.
WAIT_MS = 15_000

UNLABELLED_CONTROLS_JS = """() => {
  const shown = (e) => e.getClientRects().length > 0 && getComputedStyle(e).visibility !== 'hidden';
  const text = (ids) => ids.split(/\\s+/).map((id) => document.getElementById(id)?.textContent || '').join(' ');
  const bad = [];
  for (const e of document.querySelectorAll('input, select, textarea, button, a[href], [tabindex]')) {
    if (!shown(e) || e.tabIndex < 0) continue;
    let name = e.getAttribute('aria-label') || '';
    if (!name && e.getAttribute('aria-labelledby')) name = text(e.getAttribute('aria-labelledby'));
    if (!name && e.labels && e.labels.length) name = [...e.labels].map((l) => l.textContent).join(' ');
    if (!name && (e.tagName === 'BUTTON' || e.tagName === 'A')) name = e.textContent;
    if (!name.trim()) bad.push(e.outerHTML.slice(0, 160));
  }
  return bad;
}"""

ACTIVE_JS = """() => {
  const e = document.activeElement;
  if (!e || e === document.body) return null;
  return e.id || e.getAttribute('aria-label') || e.textContent.trim().slice(0, 60);
}"""


def rupiah(amount: int) -> str:
    return f"Rp{amount:,}".replace(",", ".")


async def assert_all_labelled(page) -> None:
    assert await page.evaluate(UNLABELLED_CONTROLS_JS) == []


async def tab_order(page, presses: int) -> list[str]:
    """Press Tab from the top of the page and record where focus lands."""
    # Focus the first thing on the page (the skip link), then walk on.
    await page.locator("a.skip").focus()
    seen = [await page.evaluate(ACTIVE_JS)]
    for _ in range(presses - 1):
        await page.keyboard.press("Tab")
        seen.append(await page.evaluate(ACTIVE_JS))
    return seen


async def release_streams(pool) -> None:
    """The SSE handler notices a closed page only when it next sends; wake it
    so the gateway's shutdown does not wait for it (see docs/portal.md)."""
    await pool.execute("select pg_notify($1, 'portal-test-closed')", EVENTS_CHANNEL)


async def press(page, locator, key: str = "Enter") -> None:
    """Activate a control from the keyboard, as someone without a mouse does."""
    await locator.focus()
    await page.keyboard.press(key)


async def sign_in(page, base_url: str, api_key: str) -> None:
    """Open the portal and sign in with an employer's key, from the keyboard."""
    await page.goto(base_url + "/portal/")
    await page.wait_for_selector("body[data-ready=true]")
    await page.get_by_label("API key", exact=True).fill(api_key)
    await page.get_by_label("API key", exact=True).press("Enter")
    await page.wait_for_selector("#portal:not([hidden])")


async def test_employer_journey_in_chromium(gateway_server, browser, artifacts, planted):
    pool = gateway_server.pool
    this_month = Period.from_date(dt.datetime.now(dt.UTC).astimezone(WIB).date())
    late_period, report_period = this_month - 3, this_month - 1
    context = await browser.new_context(viewport=DESKTOP, locale="id-ID", accept_downloads=True)
    page = await context.new_page()
    page.set_default_timeout(WAIT_MS)
    script_errors: list[str] = []
    page.on("pageerror", lambda error: script_errors.append(str(error)))
    # The page's own policy (default-src 'self') must never have to block anything of ours.
    page.on("console", lambda m: script_errors.append(m.text) if "Content Security Policy" in m.text else None)
    try:
        await page.goto(gateway_server.url + "/portal/")
        await page.wait_for_selector("body[data-ready=true]")
        assert await page.get_attribute("html", "lang") == "id"
        await assert_all_labelled(page)
        order = await tab_order(page, 14)
        # Skip link, both language buttons, the key, sign-in, then registration.
        for control in (
            "Langsung ke isi",
            "Bahasa Indonesia",
            "English",
            "api-key",
            "Masuk",
            "reg-npp",
            "reg-name",
            "reg-regency",
            "reg-size",
            "reg-risk",
            "Daftar",
        ):
            assert control in order, (control, " | ".join(str(o)[:30] for o in order))
        assert order.index("api-key") < order.index("reg-npp") < order.index("reg-risk")
        await page.screenshot(path=str(artifacts / "portal-01-welcome.png"), full_page=True)

        # --- register, by keyboard -------------------------------------------
        await page.get_by_label("NPP (nomor pendaftaran perusahaan)").fill("PT000001")
        await page.get_by_label("Nama perusahaan").fill("PT Sawit Kapuas Lestari")
        await page.get_by_label("Kabupaten/kota").select_option("6171")
        await page.get_by_label("Skala usaha").select_option("large")
        await page.get_by_label("Kelas risiko JKK").select_option("2")
        await press(page, page.get_by_role("button", name="Daftar", exact=True))
        key_box = page.get_by_label("Kunci API baru Anda")
        await key_box.wait_for()
        api_key = await key_box.input_value()
        assert api_key.startswith("kanal_sk_")
        await page.screenshot(path=str(artifacts / "portal-02-registered.png"), full_page=True)
        await press(page, page.get_by_role("button", name="Lanjutkan ke portal"), " ")
        await page.wait_for_selector("#portal:not([hidden])")
        assert await page.text_content("#employer-name") == "PT Sawit Kapuas Lestari"
        assert await page.evaluate(ACTIVE_JS) == "employer-name"  # focus follows the journey

        # --- a workbook with planted errors: nothing saved ---------------------
        await page.get_by_label("Berkas pekerja (.csv atau .xlsx)").set_input_files(
            files=[
                {
                    "name": "pekerja.xlsx",
                    "mimeType": "application/octet-stream",
                    "buffer": planted.content,
                }
            ]
        )
        await press(page, page.get_by_role("button", name="Unggah", exact=True))
        await page.wait_for_selector("#review:not([hidden])")
        assert "4 baris salah; belum ada yang disimpan" in await page.text_content("#upload-result")
        for sheet_row, (field, _) in planted.errors.items():
            row = page.locator(f"#review-table tr[data-row='{sheet_row}']")
            assert "row-bad" in await row.get_attribute("class")
            names = {"nik": "NIK", "wage": "Upah", "segment": "Segmen", "kpj": "KPJ"}
            cell = row.get_by_label(f"Baris {sheet_row}, {names[field]}")
            assert await cell.get_attribute("aria-invalid") == "true", (
                sheet_row,
                field,
            )
            described = await cell.get_attribute("aria-describedby")
            assert await page.locator(f"#{described}").text_content()
        # The duplicate is named by its sheet row, as the employer sees it.
        assert "duplicate of row 2" in await page.locator("#review-table tr[data-row='8']").text_content()
        for sheet_row in (2, 5, 7):
            assert await page.locator(f"#review-table tr[data-row='{sheet_row}'] input").count() == 0
        assert await pool.fetchval("select count(*) from participants where npp = 'PT000001'") == 0
        await assert_all_labelled(page)
        await page.screenshot(path=str(artifacts / "portal-03-planted-errors.png"), full_page=True)

        # --- keep the valid rows: exactly those are saved ----------------------
        await press(
            page,
            page.get_by_label("Simpan baris yang benar, tampilkan yang salah"),
            " ",
        )
        assert await page.get_by_label("Simpan baris yang benar, tampilkan yang salah").is_checked()
        await press(page, page.get_by_role("button", name="Unggah", exact=True))
        await page.wait_for_function(
            "() => document.querySelector('#upload-result').textContent.includes('3 pekerja tersimpan')"
        )
        saved = {r["kpj"] for r in await pool.fetch("select kpj from participants where npp = 'PT000001'")}
        assert saved == set(planted.valid_kpjs)
        assert sorted(
            int(r)
            for r in await page.locator("#review-table tbody tr").evaluate_all("rs => rs.map(r => r.dataset.row)")
        ) == sorted(planted.errors)

        # --- fix the rest in the page and upload again ------------------------
        names = {"nik": "NIK", "wage": "Upah", "segment": "Segmen", "kpj": "KPJ"}
        for sheet_row, (field, fixed) in planted.errors.items():
            await page.get_by_label(f"Baris {sheet_row}, {names[field]}").fill(fixed)
        await press(page, page.get_by_role("button", name="Unggah lagi baris yang diperbaiki"))
        await page.wait_for_function(
            "() => document.querySelector('#upload-result').textContent.includes('4 pekerja tersimpan')"
        )
        assert await page.locator("#review").is_hidden()
        assert await pool.fetchval("select count(*) from participants where npp = 'PT000001'") == 7
        await page.wait_for_function("() => document.querySelectorAll('#workers-table tbody tr').length === 7")
        await page.wait_for_function(
            "() => document.querySelectorAll('#workers-table .chip[data-state=none]').length === 7 * 5"
        )
        assert "0 dari 7 pekerja terlindungi" in await page.text_content("#protection-summary")

        # --- an old report left unpaid, then this month's: late fees -----------
        period_box = page.get_by_label("Periode (bulan)")
        assert await period_box.input_value() == str(report_period)  # the usual report is last month's
        await period_box.fill(str(late_period))
        await press(page, page.get_by_role("button", name="Kirim laporan"))
        await page.wait_for_function("() => document.querySelector('#history-table tbody tr') !== null")
        late_code = await page.text_content("#bill-code")
        await period_box.fill(str(report_period))
        await period_box.press("Enter")
        await page.wait_for_function(
            "code => document.querySelector('#bill-code').textContent !== code",
            arg=late_code,
        )
        bill = await pool.fetchrow(
            "select payment_code, total_rupiah from bills where npp = 'PT000001' and period = $1",
            str(report_period),
        )
        assert await page.text_content("#bill-code") == bill["payment_code"]
        assert await page.text_content("#bill-total") == rupiah(bill["total_rupiah"])
        assert re.fullmatch(r"Rp\d{1,3}(\.\d{3})+", await page.text_content("#bill-total-foot"))
        programs = await page.locator("#bill-totals tbody th").all_text_contents()
        assert programs == ["JKK", "JKM", "JHT", "JP", "JKP", "Denda"]
        jkp = page.locator("#bill-totals tbody tr", has=page.locator("th", has_text="JKP"))
        assert (await jkp.locator("td").nth(2).text_content()) != "Rp0"  # the government's share is shown
        assert "denda keterlambatan" in await page.text_content("#bill-late")
        await assert_all_labelled(page)
        await page.screenshot(path=str(artifacts / "portal-04-bill.png"), full_page=True)

        # --- the PDF a teller gets ------------------------------------------------
        async with page.expect_download() as download_info:
            await press(page, page.get_by_role("button", name="Unduh tagihan (PDF)"))
        download = await download_info.value
        assert download.suggested_filename == f"tagihan-{bill['payment_code']}.pdf"
        pdf_path = artifacts / "portal-bill.pdf"
        await download.save_as(str(pdf_path))
        text = pdf_text_and_image(pdf_path.read_bytes(), artifacts / "portal-05-bill-pdf.png")
        assert bill["payment_code"] in text
        assert rupiah(bill["total_rupiah"]) in text

        # --- the virtual bank pays over SNAP; protection switches on live --------
        updates_before = int(await page.get_attribute("#protection", "data-live-updates") or 0)
        await press(page, page.get_by_role("button", name="Bayar dengan bank virtual (sandbox)"))
        await page.wait_for_function("() => document.querySelector('#pay-result').textContent.startsWith('Lunas')")
        assert "payment 2002500" in await page.text_content("#pay-result")
        assert await page.text_content("#bill-status") == "Lunas"
        await page.wait_for_function(
            "() => document.querySelectorAll('#workers-table tr[data-protected=true]').length === 7"
        )
        assert (
            int(await page.get_attribute("#protection", "data-live-updates")) > updates_before
        )  # the SSE stream did it
        assert await page.locator("#workers-table .chip[data-state=active]").count() == 7 * 5
        assert "7 dari 7 pekerja terlindungi" in await page.text_content("#protection-summary")
        channel = await pool.fetchval("select channel from payments where payment_code = $1", bill["payment_code"])
        assert channel.startswith("snap:")
        await page.screenshot(path=str(artifacts / "portal-06-paid-protected.png"), full_page=True)

        # --- history and arrears, in English ------------------------------------
        await press(page, page.get_by_role("button", name="English"))
        assert await page.get_attribute("html", "lang") == "en"
        assert await page.text_content("#history-title") == "5. Payment history and arrears"
        assert await page.get_attribute("button.lang-btn[data-lang=en]", "aria-pressed") == "true"
        arrears = await page.text_content("#arrears")
        assert "Arrears: 1 bill(s) past due" in arrears and late_code in arrears
        assert "7 of 7 workers protected" in await page.text_content("#protection-summary")
        assert await page.locator("#history-table tr[data-status=paid]").count() == 1
        await assert_all_labelled(page)
        await page.screenshot(path=str(artifacts / "portal-07-history-en.png"), full_page=True)

        # Pay the arrears from the history, by keyboard.
        await press(page, page.get_by_role("button", name=f"View bill {late_code}"))
        await page.wait_for_function(
            "code => document.querySelector('#bill-code').textContent === code",
            arg=late_code,
        )
        await press(
            page,
            page.get_by_role("button", name="Pay with the virtual bank (sandbox)"),
            " ",
        )
        await page.wait_for_function("() => document.querySelector('#arrears').textContent.startsWith('No arrears.')")
        assert await page.locator("#history-table tr[data-status=paid]").count() == 2
        # Paid after its due date: its late fee comes on the next wage report's bill, and the page says so.
        assert "1 bill(s) paid after the due date" in await page.text_content("#arrears")

        # In the portal, Tab reaches every step's controls in order.
        order = await tab_order(page, 40)
        # A radio group is one Tab stop: its checked radio (keep_valid, chosen above).
        wanted = [
            "upload-file",
            "mode-keep",
            "Upload",
            "report-period",
            "Submit report",
            "download-pdf",
        ]
        for control in wanted:
            assert control in order, (control, " | ".join(str(o)[:30] for o in order))
        assert [order.index(c) for c in wanted] == sorted(order.index(c) for c in wanted)
        assert script_errors == []  # no uncaught exception in the page's script
    finally:
        await context.close()
        await release_streams(pool)

    # --- on a phone: sign in with the key, everything fits the screen ----------
    phone = await browser.new_context(
        viewport=PHONE,
        locale="en-US",
        is_mobile=True,
        has_touch=True,
        device_scale_factor=2,
    )
    page = await phone.new_page()
    page.set_default_timeout(WAIT_MS)
    try:
        await page.goto(gateway_server.url + "/portal/")
        await page.wait_for_selector("body[data-ready=true]")
        assert await page.get_attribute("html", "lang") == "en"
        await page.get_by_label("API key", exact=True).fill("kanal_sk_wrong")
        await page.get_by_label("API key", exact=True).press("Enter")
        await page.wait_for_selector("#api-key-error:not([hidden])")
        assert await page.get_attribute("#api-key", "aria-invalid") == "true"
        await page.screenshot(path=str(artifacts / "portal-08-phone-signin.png"), full_page=True)
        await page.get_by_label("API key", exact=True).fill(api_key)
        await page.get_by_label("API key", exact=True).press("Enter")
        await page.wait_for_function(
            "() => document.querySelectorAll('#workers-table tr[data-protected=true]').length === 7"
        )
        await press(page, page.get_by_role("button", name="Bahasa Indonesia"))
        await page.wait_for_function("() => document.querySelector('#arrears').textContent.startsWith('Tidak ada tunggakan.')")
        assert "1 tagihan dibayar setelah jatuh tempo" in await page.text_content("#arrears")
        overflow = await page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"the page is {overflow}px wider than the phone"
        await assert_all_labelled(page)
        await page.screenshot(path=str(artifacts / "portal-09-phone-portal.png"), full_page=True)
    finally:
        await phone.close()
        await release_streams(pool)


async def test_the_page_marks_every_wrong_cell_of_a_row_at_once(gateway_server, browser, bills):
    """A row whose wage is wrong shows its other wrong cells too, each with
    its problem, so the employer fixes the row in one go."""
    employer, api_key, _ = await bills.create_employer(workers=0)
    context = await browser.new_context(viewport=DESKTOP, locale="en-US")
    page = await context.new_page()
    page.set_default_timeout(WAIT_MS)
    try:
        await sign_in(page, gateway_server.url, api_key)
        await page.locator("#upload-file").set_input_files(
            files=[{"name": "workers.csv", "mimeType": "text/csv", "buffer": b"kpj,nik,name,wage,segment\n123,abc,,-5,XX\n"}]
        )
        await press(page, page.locator("#upload-form button[type=submit]"))
        await page.wait_for_selector("#review:not([hidden])")
        row = page.locator("#review-table tr[data-row='2']")
        for field in ("kpj", "nik", "name", "wage", "segment"):
            cell = row.locator(f"td[data-field='{field}'] input")
            assert await cell.get_attribute("aria-invalid") == "true", field
            described = await cell.get_attribute("aria-describedby")
            assert (await page.locator(f"#{described}").text_content()).strip(), field
        assert "must be positive" in await row.locator("td[data-field='wage']").text_content()
        assert await row.locator("td.problems li").count() == 5
        assert await gateway_server.pool.fetchval("select count(*) from participants where npp = $1", employer["npp"]) == 0
    finally:
        await context.close()
        await release_streams(gateway_server.pool)


LONG_NAME = "X" * 150
OVERFLOW_JS = "() => document.documentElement.scrollWidth - window.innerWidth"


async def test_long_names_fit_the_screen_and_dates_and_times_say_what_they_mean(gateway_server, browser, bills, artifacts):
    """A 150-character name with no space wraps instead of widening the page
    (desktop and phone); paid times say WIB; an expired bill says so and shows
    its last payable day, the day before its expires_at (the start of a WIB day)."""
    from tests.portal.conftest import call

    pool = gateway_server.pool
    employer, api_key, kpjs = await bills.create_employer(workers=2)
    await pool.execute("update employers set name = $2 where npp = $1", employer["npp"], LONG_NAME)
    await pool.execute("update participants set name = $2 where kpj = $1", kpjs[0], "Y" * 150)
    this_month = Period.from_date(dt.datetime.now(dt.UTC).astimezone(WIB).date())
    # Reported on time, five months ago: long past its 90 days. (A month reported
    # late counts its 90 days from its report: test_a_month_reported_late_is_payable.)
    old = await bills.report(employer, api_key, kpjs, str(this_month - 6), on_time=True)
    recent = await bills.report(employer, api_key, kpjs, str(this_month - 1))
    status, body, _ = await call(gateway_server, "POST", f"/portal/api/bills/{recent.payment_code}/virtual-bank", api_key)
    assert status == 200, body
    expires_at = await pool.fetchval("select expires_at from bills where id = $1", old.bill_id)
    last_day = expires_at.astimezone(WIB).date() - dt.timedelta(days=1)
    for name, viewport, extra in (
        ("desktop", DESKTOP, {}),
        ("phone", PHONE, {"is_mobile": True, "has_touch": True, "device_scale_factor": 2}),
    ):
        context = await browser.new_context(viewport=viewport, locale="en-US", **extra)
        page = await context.new_page()
        page.set_default_timeout(WAIT_MS)
        try:
            await sign_in(page, gateway_server.url, api_key)
            await page.wait_for_function("() => document.querySelectorAll('#history-table tbody tr').length === 2")
            await page.wait_for_function("() => document.querySelectorAll('#workers-table tbody tr').length === 2")
            assert await page.text_content("#employer-name") == LONG_NAME
            # The accrued fee is charged on the next wage report's bill, paid or not by then.
            assert "charged on the next wage report's bill; if this bill is paid before then, what accrued until the payment" in await page.text_content(
                "#arrears"
            )
            paid = page.locator(f"#history-table tr[data-code='{recent.payment_code}'] td").nth(5)
            assert re.search(r"\d{1,2}:\d{2}( [AP]M)? WIB · snap:", await paid.text_content()), await paid.text_content()
            expired_row = page.locator(f"#history-table tr[data-code='{old.payment_code}']")
            assert await expired_row.locator("td").nth(4).text_content() == "Expired"
            await press(page, page.get_by_role("button", name=f"View bill {old.payment_code}"))
            await page.wait_for_function(
                "code => document.querySelector('#bill-code').textContent === code", arg=old.payment_code
            )
            assert await page.text_content("#bill-status") == "Expired"
            assert await page.text_content("#bill-expires") == f"{last_day.day} {last_day:%B} {last_day.year}"  # en-GB, as formatDate
            await page.screenshot(path=str(artifacts / f"portal-long-name-{name}.png"), full_page=True)
            overflow = await page.evaluate(OVERFLOW_JS)
            assert overflow <= 0, f"{name}: the page is {overflow}px wider than the screen"
        finally:
            await context.close()
            await release_streams(pool)


async def test_a_bill_paid_late_shows_the_fee_the_next_report_will_charge(gateway_server, browser, clock):
    """contributions.md's worked example (Rp1,101,222 due 2025-07-15), paid on
    2025-07-20: one month late, 2% = Rp22,024, charged on the next wage
    report's bill. The history listed only unpaid bills as arrears, so the
    page said nothing of a fee the employer will be billed."""
    from bank_adapters.base import PayCommand, PayOutcome
    from gateway.service import employers as svc
    from tests.conftest import make_kpj, make_nik
    from tests.portal.conftest import call

    pool = gateway_server.pool
    async with pool.acquire() as conn, conn.transaction():
        registered = await svc.register_employer(conn, "LATEWEB1", "PT Telat", "6171", "large", 2)
        employer = await conn.fetchrow("select * from employers where npp = 'LATEWEB1'")
        row = svc.ParticipantRow(1, make_kpj(9901), make_nik(9901), "Budi", 12_000_000, "PU")
        assert (await svc.add_participants(conn, employer, [row], "all_or_nothing")).errors == []
        bill_id, _ = await svc.submit_wage_report(conn, employer, "2025-06", {}, dt.datetime(2025, 7, 1, 9, tzinfo=WIB), 90)
        june = await svc.bill_view(conn, bill_id, with_lines=False)
    assert june["total_rupiah"] == 1_101_222
    clock.set(dt.datetime(2025, 7, 20, 10, tzinfo=WIB).astimezone(dt.UTC))
    paid = await gateway_server.payments.pay(PayCommand(june["payment_code"], 1_101_222, "test:bank", "june-late"))
    assert paid.outcome == PayOutcome.POSTED

    status, history, _ = await call(gateway_server, "GET", "/portal/api/history", registered.api_key)
    assert status == 200
    assert history["arrears"] == []
    assert [(p["payment_code"], p["months_late"], p["late_fee_owed_rupiah"]) for p in history["paid_late"]] == [
        (june["payment_code"], 1, 22_024)
    ]
    assert history["paid_late_fees_rupiah"] == 22_024

    context = await browser.new_context(viewport=DESKTOP, locale="en-US")
    page = await context.new_page()
    page.set_default_timeout(WAIT_MS)
    try:
        await sign_in(page, gateway_server.url, registered.api_key)
        await page.wait_for_function("() => document.querySelector('#arrears').textContent.includes('paid after the due date')")
        text = await page.text_content("#arrears")
        assert "1 bill(s) paid after the due date: Rp22.024 of late fees" in text, text
    finally:
        await context.close()
