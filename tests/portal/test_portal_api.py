"""The portal's helpers over real sockets against a real PostgreSQL: workbook
uploads judged by the employer API's own rules, the bill PDF, the sandbox
virtual bank paying through the real SNAP adapter, history and arrears."""

from __future__ import annotations

import datetime as dt

from gateway.domain.periods import WIB, Period
from gateway.portal import virtual_bank
from gateway.runtime import Gateway
from tests.conftest import RunningGateway, test_settings
from tests.portal.conftest import XLSX, call, pdf_text_and_image, workbook_bytes


async def participant_kpjs(pool, npp: str) -> set[str]:
    return {r["kpj"] for r in await pool.fetch("select kpj from participants where npp = $1", npp)}


async def test_page_is_served_without_any_third_party_origin(gateway_server):
    status, body, headers = await call(gateway_server, "GET", "/portal/")
    assert status == 200
    html = body.decode()
    assert 'src="/portal/static/portal.js"' in html and 'href="/portal/static/portal.css"' in html
    assert "http://" not in html and "https://" not in html  # no CDN
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    status, script, _ = await call(gateway_server, "GET", "/portal/static/portal.js")
    assert status == 200 and b"Rp" in script
    status, _, headers = await call(gateway_server, "GET", "/portal", allow_redirects=False)
    assert status == 302 and headers["Location"] == "/portal/"


async def test_portal_helpers_need_the_employer_key(gateway_server):
    for method, path in [
        ("GET", "/portal/api/me"),
        ("GET", "/portal/api/history"),
        ("POST", "/portal/api/participants/upload"),
        ("GET", "/portal/api/bills/12345678901/pdf"),
        ("POST", "/portal/api/bills/12345678901/virtual-bank"),
    ]:
        status, body, headers = await call(gateway_server, method, path, key="kanal_sk_not_a_key")
        assert status == 401, (path, body)
        assert headers["Content-Type"].startswith("application/problem+json")
        assert body["errors"][0]["field"] == "Authorization"


async def test_xlsx_with_planted_errors_saves_nothing_and_names_each_row_and_field(gateway_server, bills, planted):
    employer, key, _ = await bills.create_employer(workers=1)
    before = await participant_kpjs(gateway_server.pool, employer["npp"])
    status, body, _ = await call(
        gateway_server,
        "POST",
        "/portal/api/participants/upload",
        key,
        data=planted.content,
        headers={"Content-Type": XLSX},
    )
    assert status == 422, body
    assert body["saved"] == 0 and body["rejected"] == 4 and body["format"] == "xlsx"
    # Data row n is sheet row n + 1 (the header is row 1).
    found = {(e["row"] + body["header_rows"], e["field"]) for e in body["errors"]}
    assert found == {(row, field) for row, (field, _) in planted.errors.items()}
    problems = {e["field"]: e["problem"] for e in body["errors"]}
    assert "16 digits" in problems["nik"]
    assert "no decimals" in problems["wage"]
    assert "PU or BPU" in problems["segment"]
    assert "duplicate of row 1" in problems["kpj"]
    # Every row is echoed for display, numbers as the employer typed them.
    assert [r["row"] for r in body["rows"]] == [1, 2, 3, 4, 5, 6, 7]
    assert body["rows"][0]["kpj"] == planted.valid_kpjs[0] and body["rows"][0]["wage"] == "5000000"
    assert await participant_kpjs(gateway_server.pool, employer["npp"]) == before


async def test_keep_valid_saves_exactly_the_valid_rows(gateway_server, bills, planted):
    employer, key, existing = await bills.create_employer(workers=1)
    status, body, _ = await call(
        gateway_server,
        "POST",
        "/portal/api/participants/upload?mode=keep_valid",
        key,
        data=planted.content,
        headers={"Content-Type": XLSX},
    )
    assert status == 201, body
    assert body["saved"] == 3 and body["rejected"] == 4
    assert await participant_kpjs(gateway_server.pool, employer["npp"]) == {
        *existing,
        *planted.valid_kpjs,
    }


async def test_a_fixed_csv_after_a_refused_workbook_saves_every_row(gateway_server, bills, planted):
    employer, key, _ = await bills.create_employer(workers=0)
    status, body, _ = await call(
        gateway_server,
        "POST",
        "/portal/api/participants/upload",
        key,
        data=planted.content,
        headers={"Content-Type": XLSX},
    )
    assert status == 422
    rows = body["rows"]
    for error in body["errors"]:
        field, fixed = planted.errors[error["row"] + 1]
        rows[error["row"] - 1][field] = fixed
    text = "kpj,nik,name,wage,segment\n" + "".join(
        f"{r['kpj']},{r['nik']},{r['name']},{r['wage']},{r['segment']}\n" for r in rows
    )
    status, body, _ = await call(
        gateway_server,
        "POST",
        "/portal/api/participants/upload",
        key,
        data=text.encode(),
        headers={"Content-Type": "text/csv"},
    )
    assert status == 201, body
    assert body["saved"] == 7 and body["errors"] == []
    assert len(await participant_kpjs(gateway_server.pool, employer["npp"])) == 7


async def test_a_large_upload_echoes_only_its_wrong_rows(gateway_server, bills, planted, monkeypatch):
    from gateway.portal import http as portal_http

    monkeypatch.setattr(portal_http, "PREVIEW_ROWS_MAX", 5)  # 7 rows, 4 wrong
    _, key, _ = await bills.create_employer(workers=0)
    status, body, _ = await call(
        gateway_server,
        "POST",
        "/portal/api/participants/upload",
        key,
        data=planted.content,
        headers={"Content-Type": XLSX},
    )
    assert status == 422
    assert body["rows_complete"] is False
    assert [r["row"] + 1 for r in body["rows"]] == sorted(planted.errors)


async def test_unreadable_uploads_are_refused_with_the_field_at_fault(gateway_server, bills):
    _, key, _ = await bills.create_employer(workers=0)
    cases = [
        (b"PK\x03\x04 not really a zip", XLSX, "file"),
        (b"", "text/csv", "file"),
        (b"kpj,nik\n1,2\n", "text/csv", "header"),
        (workbook_bytes([]), "application/pdf", "Content-Type"),
    ]
    for data, content_type, field in cases:
        status, body, _ = await call(
            gateway_server,
            "POST",
            "/portal/api/participants/upload",
            key,
            data=data,
            headers={"Content-Type": content_type},
        )
        assert status == 422, (field, body)
        assert body["errors"][0]["field"] == field, body
    status, body, _ = await call(
        gateway_server,
        "POST",
        "/portal/api/participants/upload?mode=some",
        key,
        data=b"x",
        headers={"Content-Type": "text/csv"},
    )
    assert status == 422 and body["errors"][0]["field"] == "mode"


async def test_bill_pdf_renders_with_the_payment_code_and_total(gateway_server, bills, artifacts):
    bill = await bills.create(workers=3)
    status, content, headers = await call(
        gateway_server,
        "GET",
        f"/portal/api/bills/{bill.payment_code}/pdf",
        bill.api_key,
    )
    assert status == 200
    assert headers["Content-Type"] == "application/pdf"
    assert f"tagihan-{bill.payment_code}.pdf" in headers["Content-Disposition"]
    text = pdf_text_and_image(content, artifacts / "portal-bill-api.png")
    assert bill.payment_code in text
    total = f"Rp{bill.total_rupiah:,}".replace(",", ".")
    assert total in text
    assert "JKK" in text and "JHT" in text
    assert (artifacts / "portal-bill-api.png").stat().st_size > 5000
    # Another employer's key does not reveal the bill.
    _, other_key, _ = await bills.create_employer(workers=1)
    status, _, _ = await call(gateway_server, "GET", f"/portal/api/bills/{bill.payment_code}/pdf", other_key)
    assert status == 404


async def test_virtual_bank_pays_through_the_snap_adapter_and_reuses_its_partner(gateway_server, bills):
    pool = gateway_server.pool
    first = await bills.create(workers=2)
    status, body, _ = await call(
        gateway_server,
        "POST",
        f"/portal/api/bills/{first.payment_code}/virtual-bank",
        first.api_key,
    )
    assert status == 200, body
    assert body["paid_rupiah"] == first.total_rupiah
    assert [x["step"] for x in body["exchanges"]] == ["inquiry", "payment"]
    assert body["response_code"] == "2002500"
    payment = await pool.fetchrow(
        "select channel, amount_rupiah from payments where payment_code = $1",
        first.payment_code,
    )
    assert payment["channel"] == f"snap:{virtual_bank.PARTNER_ID}"
    assert payment["amount_rupiah"] == first.total_rupiah
    # The SNAP adapter logged a token, an inquiry and a payment exchange.
    services = {
        r["service_code"]
        for r in await pool.fetch(
            "select service_code from partner_exchanges where channel = 'snap' and partner_id = $1",
            virtual_bank.PARTNER_ID,
        )
    }
    assert {"73", "24", "25"} <= services
    # Each worker is protected now (the employer API's own view).
    status, worker, _ = await call(gateway_server, "GET", f"/api/v1/participants/{first.kpjs[0]}", first.api_key)
    assert {c["state"] for c in worker["coverage"]} == {"active"}
    # Paid twice: refused before the bank is bothered.
    status, body, _ = await call(
        gateway_server,
        "POST",
        f"/portal/api/bills/{first.payment_code}/virtual-bank",
        first.api_key,
    )
    assert status == 409 and body["errors"][0]["problem"] == "already paid"
    # A second bill reuses the same partner.
    second = await bills.create(workers=1)
    status, body, _ = await call(
        gateway_server,
        "POST",
        f"/portal/api/bills/{second.payment_code}/virtual-bank",
        second.api_key,
    )
    assert status == 200, body
    assert await pool.fetchval("select count(*) from portal_virtual_banks") == 1
    assert (
        await pool.fetchval(
            "select count(*) from snap_partners where partner_id = $1",
            virtual_bank.PARTNER_ID,
        )
        == 1
    )


async def test_an_expired_bill_is_refused_by_the_snap_adapter_and_the_reason_shown(gateway_server, bills):
    this_month = Period.from_date(dt.datetime.now(dt.UTC).astimezone(WIB).date())
    # Reported on time and due about five months ago: past the 90 days a payment code stays payable.
    old = await bills.create(workers=1, period=str(this_month - 6), on_time=True)
    status, body, _ = await call(
        gateway_server, "POST", f"/portal/api/bills/{old.payment_code}/virtual-bank", old.api_key
    )
    assert status == 502, body
    assert body["detail"].startswith("SNAP inquiry answered 404")
    assert "expired" in body["errors"][0]["problem"].lower()
    assert await gateway_server.pool.fetchval("select count(*) from payments") == 0


async def test_virtual_bank_is_refused_outside_the_sandbox(database_url, clock, bills):
    gateway = Gateway(settings=test_settings(sandbox=False), database_url=database_url, clock=clock)
    await gateway.start(migrate_first=False)
    try:
        server = RunningGateway(gateway)
        bill = await bills.create(workers=1)
        status, body, _ = await call(
            server,
            "POST",
            f"/portal/api/bills/{bill.payment_code}/virtual-bank",
            bill.api_key,
        )
        assert status == 403
        assert body["errors"] == [{"field": "sandbox", "problem": "off"}]
        assert await server.pool.fetchval("select count(*) from payments") == 0
        status, config, _ = await call(server, "GET", "/portal/api/config")
        assert config["sandbox"] is False
    finally:
        await gateway.stop()


async def test_history_lists_payments_and_arrears_with_accrued_late_fees(gateway_server, bills):
    employer, key, kpjs = await bills.create_employer(workers=2)
    this_month = Period.from_date(dt.datetime.now(dt.UTC).astimezone(WIB).date())
    late = await bills.report(employer, key, kpjs, str(this_month - 3))
    paid = await bills.report(employer, key, kpjs, str(this_month - 1))
    status, body, _ = await call(
        gateway_server,
        "POST",
        f"/portal/api/bills/{paid.payment_code}/virtual-bank",
        key,
    )
    assert status == 200, body
    status, history, _ = await call(gateway_server, "GET", "/portal/api/history", key)
    assert status == 200
    by_code = {b["payment_code"]: b for b in history["bills"]}
    assert by_code[paid.payment_code]["status"] == "paid"
    assert by_code[paid.payment_code]["paid_rupiah"] == paid.total_rupiah
    assert by_code[paid.payment_code]["channel"] == f"snap:{virtual_bank.PARTNER_ID}"
    assert [a["payment_code"] for a in history["arrears"]] == [late.payment_code]
    arrear = history["arrears"][0]
    assert arrear["months_late"] >= 1
    # The later bill already charged the fee accrued until it was issued.
    assert arrear["late_fee_charged_rupiah"] > 0
    assert arrear["late_fee_accrued_rupiah"] >= 0
    assert history["arrears_total_rupiah"] == late.total_rupiah + arrear["late_fee_accrued_rupiah"]


async def test_upload_names_every_problem_of_a_row_even_after_a_bad_wage(gateway_server, bills):
    employer, key, existing = await bills.create_employer(workers=1)
    before = await participant_kpjs(gateway_server.pool, employer["npp"])
    text = (
        "kpj,nik,name,wage,segment\n"
        "123,abc,,-5,XX\n"
        f"{existing[0]},6171011708900042,Budi,4250000.5,PU\n"  # registered KPJ behind a bad wage
    )
    status, body, _ = await call(
        gateway_server,
        "POST",
        "/portal/api/participants/upload",
        key,
        data=text.encode(),
        headers={"Content-Type": "text/csv"},
    )
    assert status == 422, body
    assert [(e["row"], e["field"]) for e in body["errors"]] == [
        (1, "kpj"),
        (1, "nik"),
        (1, "name"),
        (1, "wage"),
        (1, "segment"),
        (2, "kpj"),
        (2, "wage"),
    ]
    assert body["errors"][5]["problem"] == "already registered"
    assert body["saved"] == 0 and body["rejected"] == 2
    # The page shows each row as typed next to its errors.
    assert [r["row"] for r in body["rows"]] == [1, 2] and body["rows"][0]["wage"] == "-5"
    assert await participant_kpjs(gateway_server.pool, employer["npp"]) == before


async def _pdf_text(server, bill, tmp_path) -> str:
    status, content, _ = await call(server, "GET", f"/portal/api/bills/{bill.payment_code}/pdf", bill.api_key)
    assert status == 200
    return pdf_text_and_image(content, tmp_path / "bill.png")


async def test_bill_pdf_prints_the_last_payable_day_not_the_day_it_stops(gateway_server, bills, tmp_path):
    bill = await bills.create(workers=1)
    expires_at = await gateway_server.pool.fetchval("select expires_at from bills where id = $1", bill.bill_id)
    # expires_at is the start of a day in WIB: the day before is the last one a bank takes it.
    stops = expires_at.astimezone(WIB)
    assert (stops.hour, stops.minute) == (0, 0)
    last_day = stops.date() - dt.timedelta(days=1)
    text = await _pdf_text(gateway_server, bill, tmp_path)
    assert last_day.isoformat() in text, text
    assert stops.date().isoformat() not in text, text
    assert "BELUM DIBAYAR / UNPAID" in text and "EXPIRED" not in text


async def test_bill_pdf_marks_an_expired_bill_as_expired(gateway_server, bills, tmp_path):
    this_month = Period.from_date(dt.datetime.now(dt.UTC).astimezone(WIB).date())
    old = await bills.create(workers=1, period=str(this_month - 6), on_time=True)
    text = await _pdf_text(gateway_server, old, tmp_path)
    assert "KEDALUWARSA / EXPIRED" in text
    assert "BELUM DIBAYAR" not in text and "UNPAID" not in text
