"""The employer API over real HTTP against a real PostgreSQL."""

from __future__ import annotations

import datetime as dt
import io
import random
from fractions import Fraction

import aiohttp
import pytest

from gateway.domain.periods import WIB, Period
from tests.conftest import make_kpj, make_nik

pytestmark = pytest.mark.asyncio


async def fingerprint(pool) -> dict[str, str]:
    """Every table's full content, hashed: equal fingerprints mean nothing was written."""
    tables = [r["tablename"] for r in await pool.fetch("select tablename from pg_tables where schemaname = 'public'")]
    out = {}
    for table in sorted(tables):
        out[table] = await pool.fetchval(f'select md5(coalesce(string_agg(t::text, \'|\' order by t::text), \'\')) from "{table}" t')
    out["payment_code_serial"] = str(await pool.fetchval("select last_value from payment_code_serial"))
    return out


def last_month() -> str:
    return str(Period.from_date(dt.datetime.now(WIB).date()) - 1)


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


async def register(http, base, npp="JJ0P4391", size="large", risk=2, regency="6171"):
    async with http.post(
        f"{base}/api/v1/employers",
        json={"npp": npp, "name": f"PT {npp}", "regency_code": regency, "size_class": size, "jkk_risk_class": risk},
    ) as r:
        assert r.status == 201, await r.text()
        body = await r.json()
    return body["api_key"], {"Authorization": f"Bearer {body['api_key']}"}


def csv_rows(n: int, start: int = 0, rng: random.Random | None = None) -> list[tuple]:
    rng = rng or random.Random(7)
    rows = []
    for i in range(start, start + n):
        rows.append((make_kpj(i), make_nik(i), f"Pekerja {i}", rng.choice([2_878_286, 4_999_999, 5_000_000, 5_000_001, 10_547_400, 12_000_000, rng.randrange(2_000_000, 40_000_000)]), "PU"))
    return rows


def to_csv(rows) -> str:
    return "kpj,nik,name,wage,segment\n" + "".join(",".join(str(c) for c in r) + "\n" for r in rows)


# Independent recomputation: the published rates as fractions, written out
# again here rather than imported, so a wrong table in the code fails.
JP_CAP = {(2025, 3): 10_547_400, (2026, 3): 11_086_300, (2024, 3): 10_042_300, (2023, 3): 9_559_600}


def jp_cap(period: Period) -> int:
    return max(cap for (y, m), cap in JP_CAP.items() if (y, m) <= (period.year, period.month))


def half_up(x: Fraction) -> int:
    return int((x + Fraction(1, 2)).__floor__())


def expected_billed(wage: int, period: Period, risk_percent: Fraction) -> int:
    jkk = half_up(wage * risk_percent / 100)
    jkm = half_up(wage * Fraction(30, 100) / 100)
    # Each program's amount per worker is rounded once (contributions.md, Rounding).
    jht = half_up(wage * Fraction(57, 10) / 100)
    capped = min(wage, jp_cap(period))
    jp = half_up(capped * 3 / Fraction(100))
    return jkk + jkm + jht + jp


async def test_5000_worker_csv_and_wage_report_bill_adds_up(gateway_server, http):
    base = gateway_server.url
    _, auth = await register(http, base)
    rows = csv_rows(5000)
    async with http.post(
        f"{base}/api/v1/employers/JJ0P4391/participants.csv", data=to_csv(rows), headers={**auth, "Content-Type": "text/csv"}
    ) as r:
        assert r.status == 201, await r.text()
        assert (await r.json())["saved"] == 5000
    period = last_month()
    async with http.post(f"{base}/api/v1/employers/JJ0P4391/wage-reports", json={"period": period}, headers=auth) as r:
        assert r.status == 201, await r.text()
        bill = await r.json()
    assert len(bill["payment_code"]) == 11 and bill["period"] == period
    lines = bill["lines"]
    assert bill["total_rupiah"] == sum(l["employer_rupiah"] + l["worker_rupiah"] for l in lines)
    # Per worker, the billed amount equals an independent recomputation.
    by_kpj: dict[str, int] = {}
    for line in lines:
        by_kpj[line["kpj"]] = by_kpj.get(line["kpj"], 0) + line["employer_rupiah"] + line["worker_rupiah"]
    p = Period.parse(period)
    for kpj, nik, name, wage, _ in rows:
        assert by_kpj[kpj] == expected_billed(wage, p, Fraction(54, 100)), (kpj, wage)
    # Government JKP share: 0.22% of the wage up to Rp5,000,000, not billed.
    assert bill["government_rupiah"] == sum(half_up(min(r[3], 5_000_000) * Fraction(22, 100) / 100) for r in rows)
    due = dt.date.fromisoformat(bill["due_date"])
    assert due.weekday() < 5 and due.day >= 15
    async with http.get(f"{base}/api/v1/bills/{bill['payment_code']}", headers=auth) as r:
        assert r.status == 200
        assert (await r.json())["total_rupiah"] == bill["total_rupiah"]


async def test_worked_example_over_http(gateway_server, http):
    base = gateway_server.url
    _, auth = await register(http, base, npp="WORKED01")
    async with http.post(
        f"{base}/api/v1/employers/WORKED01/participants",
        json={"kpj": "61000000001", "nik": "6171011708900001", "name": "Budi", "wage": 12_000_000, "segment": "PU"},
        headers=auth,
    ) as r:
        assert r.status == 201, await r.text()
    async with http.post(f"{base}/api/v1/employers/WORKED01/wage-reports", json={"period": "2025-06"}, headers=auth) as r:
        assert r.status == 201, await r.text()
        bill = await r.json()
    assert bill["total_rupiah"] == 1_101_222
    assert bill["due_date"] == "2025-07-15"
    totals = {t["program"]: t for t in bill["totals"]}
    assert totals["JKK"]["billed_rupiah"] + totals["JKP"]["employer_rupiah"] == 64_800
    assert totals["JKP"]["government_rupiah"] == 11_000
    assert totals["JP"]["employer_rupiah"] == 210_948 and totals["JP"]["worker_rupiah"] == 105_474


async def test_each_program_is_rounded_once_per_worker_over_http(gateway_server, http):
    """contributions.md: "each program's amount per participant is rounded half
    up to the whole rupiah; a bill's total is the sum of its rounded lines"."""
    base = gateway_server.url
    _, auth = await register(http, base, npp="ROUND001", size="large", risk=1)
    async with http.post(
        f"{base}/api/v1/employers/ROUND001/participants",
        json={"kpj": "61000000031", "nik": "6171011708900031", "name": "Rudi", "wage": 4_000_080, "segment": "PU"},
        headers=auth,
    ) as r:
        assert r.status == 201, await r.text()
    async with http.post(f"{base}/api/v1/employers/ROUND001/wage-reports", json={"period": "2025-06"}, headers=auth) as r:
        assert r.status == 201, await r.text()
        bill = await r.json()
    totals = {t["program"]: t for t in bill["totals"]}
    # JP 3% of 4,000,080 = 120,002.4 -> 120,002; the worker's 1% = 40,000.8 -> 40,001.
    assert (totals["JP"]["billed_rupiah"], totals["JP"]["worker_rupiah"]) == (120_002, 40_001)
    # JKK 0.24% 9,600 + JKM 0.30% 12,000 + JHT 5.7% 228,005 (228,004.56) + JP 120,002.
    assert bill["total_rupiah"] == 369_607


async def test_late_fee_on_next_bill(gateway_server, http):
    base = gateway_server.url
    _, auth = await register(http, base, npp="LATE0001")
    async with http.post(
        f"{base}/api/v1/employers/LATE0001/participants",
        json={"kpj": "61000000002", "nik": "6171011708900002", "name": "Sari", "wage": 12_000_000},
        headers=auth,
    ) as r:
        assert r.status == 201
    async with http.post(f"{base}/api/v1/employers/LATE0001/wage-reports", json={"period": "2025-06"}, headers=auth) as r:
        first = await r.json()
    async with http.post(f"{base}/api/v1/employers/LATE0001/wage-reports", json={"period": last_month()}, headers=auth) as r:
        second = await r.json()
    fees = [l for l in second["lines"] if l["program"] == "DENDA"]
    assert len(fees) == 1 and fees[0]["late_fee_source_payment_code"] == first["payment_code"]
    months = fees[0]["late_fee_months"]
    assert fees[0]["employer_rupiah"] == half_up(Fraction(1_101_222 * 2 * months, 100))
    assert second["late_fees_rupiah"] == fees[0]["employer_rupiah"]


async def test_informal_workers_reported_again_get_only_the_missing_bills(gateway_server, http):
    """Informal (BPU) workers each get a bill of their own. Reporting the month
    again bills only the worker added since; a third time is refused and
    writes nothing."""
    base = gateway_server.url
    _, auth = await register(http, base, npp="BPUAGAIN", size="micro")
    first_rows = [(make_kpj(900 + i), make_nik(900 + i), f"Mandiri {i}", 3_000_000 + i, "BPU") for i in range(3)]
    async with http.post(f"{base}/api/v1/employers/BPUAGAIN/participants.csv", data=to_csv(first_rows),
                         headers={**auth, "Content-Type": "text/csv"}) as r:
        assert r.status == 201, await r.text()
    period = last_month()
    async with http.post(f"{base}/api/v1/employers/BPUAGAIN/wage-reports", json={"period": period}, headers=auth) as r:
        assert r.status == 201, await r.text()
        first = await r.json()
    first_codes = [first["payment_code"]] + [b["payment_code"] for b in first["bpu_bills"]]
    assert len(set(first_codes)) == 3 and all(len(c) == 11 for c in first_codes)
    assert {l["kpj"] for b in [first, *first["bpu_bills"]] for l in b["lines"]} == {r[0] for r in first_rows}

    late = (make_kpj(903), make_nik(903), "Mandiri 3", 4_000_000, "BPU")
    async with http.post(f"{base}/api/v1/employers/BPUAGAIN/participants.csv", data=to_csv([late]),
                         headers={**auth, "Content-Type": "text/csv"}) as r:
        assert r.status == 201, await r.text()
    async with http.post(f"{base}/api/v1/employers/BPUAGAIN/wage-reports", json={"period": period}, headers=auth) as r:
        assert r.status == 201, await r.text()
        second = await r.json()
    assert second["bpu_bills"] == [] and {l["kpj"] for l in second["lines"]} == {late[0]}
    assert second["payment_code"] not in first_codes

    before = await fingerprint(gateway_server.pool)
    async with http.post(f"{base}/api/v1/employers/BPUAGAIN/wage-reports", json={"period": period}, headers=auth) as r:
        assert r.status == 409, await r.text()
        body = await r.json()
    assert body["errors"][0]["field"] == "period" and "already" in body["errors"][0]["problem"]
    assert await fingerprint(gateway_server.pool) == before
    async with http.get(f"{base}/api/v1/employers/BPUAGAIN/bills", headers=auth) as r:
        bills = (await r.json())["bills"]
    assert sorted(b["payment_code"] for b in bills) == sorted([*first_codes, second["payment_code"]])


async def test_keep_valid_mode_saves_exactly_the_valid_rows(gateway_server, http):
    base = gateway_server.url
    _, auth = await register(http, base, npp="KEEP0001")
    rows = csv_rows(5)
    bad = list(rows[2])
    bad[1] = "123"  # bad NIK
    rows[2] = tuple(bad)
    async with http.post(
        f"{base}/api/v1/employers/KEEP0001/participants.csv?mode=keep_valid", data=to_csv(rows), headers={**auth, "Content-Type": "text/csv"}
    ) as r:
        assert r.status == 201
        body = await r.json()
    assert body["saved"] == 4 and body["errors"] == [{"row": 3, "field": "nik", "problem": body["errors"][0]["problem"]}]
    async with http.get(f"{base}/api/v1/employers/KEEP0001/participants", headers=auth) as r:
        saved = {p["kpj"] for p in (await r.json())["participants"]}
    assert saved == {r[0] for i, r in enumerate(rows) if i != 2}


async def test_an_employer_key_cannot_touch_another_employer(gateway_server, http):
    base = gateway_server.url
    _, auth_a = await register(http, base, npp="AAAA0001")
    _, auth_b = await register(http, base, npp="BBBB0001")
    async with http.post(
        f"{base}/api/v1/employers/BBBB0001/participants",
        json={"kpj": "61000000009", "nik": "6171011708900009", "name": "B's worker", "wage": 5_000_000},
        headers=auth_b,
    ) as r:
        assert r.status == 201
    async with http.post(f"{base}/api/v1/employers/BBBB0001/wage-reports", json={"period": last_month()}, headers=auth_b) as r:
        b_bill = (await r.json())["payment_code"]
    before = await fingerprint(gateway_server.pool)
    attempts = [
        ("post", "/api/v1/employers/BBBB0001/participants", {"json": {"kpj": "61000000010", "nik": "6171011708900010", "name": "x", "wage": 1}}),
        ("post", "/api/v1/employers/BBBB0001/participants.csv", {"data": "kpj,nik,name,wage,segment\n", "headers": {"Content-Type": "text/csv"}}),
        ("get", "/api/v1/employers/BBBB0001/participants", {}),
        ("post", "/api/v1/employers/BBBB0001/wage-reports", {"json": {"period": "2025-06"}}),
        ("get", "/api/v1/employers/BBBB0001/bills", {}),
        ("get", f"/api/v1/bills/{b_bill}", {}),
        ("get", "/api/v1/participants/61000000009", {}),
    ]
    for method, path, kwargs in attempts:
        headers = {**auth_a, **kwargs.pop("headers", {})}
        async with http.request(method, base + path, headers=headers, **kwargs) as r:
            assert r.status in (403, 404), (path, r.status)
            body = await r.json()
            assert "BBBB0001" not in str(body.get("errors")) or r.status == 403
            assert "B's worker" not in await r.text()
    assert await fingerprint(gateway_server.pool) == before


MALFORMED = [
    # (name, method, path, kwargs, expected status, field named in the error)
    ("bad NIK", "post", "/participants", {"json": {"kpj": "61000000001", "nik": "61710117", "name": "x", "wage": 5000000}}, 422, "nik"),
    ("NIK with impossible birth date", "post", "/participants", {"json": {"kpj": "61000000001", "nik": "6171013913900001", "name": "x", "wage": 5000000}}, 422, "nik"),
    ("negative wage", "post", "/participants", {"json": {"kpj": "61000000001", "nik": "6171011708900001", "name": "x", "wage": -5}}, 422, "wage"),
    ("fractional wage", "post", "/participants", {"json": {"kpj": "61000000001", "nik": "6171011708900001", "name": "x", "wage": 5000000.5}}, 422, "wage"),
    ("wage as string", "post", "/participants", {"json": {"kpj": "61000000001", "nik": "6171011708900001", "name": "x", "wage": "5000000"}}, 422, "wage"),
    ("short KPJ", "post", "/participants", {"json": {"kpj": "6100", "nik": "6171011708900001", "name": "x", "wage": 5000000}}, 422, "kpj"),
    ("unknown segment", "post", "/participants", {"json": {"kpj": "61000000001", "nik": "6171011708900001", "name": "x", "wage": 5000000, "segment": "XX"}}, 422, "segment"),
    ("unknown field", "post", "/participants", {"json": {"kpj": "61000000001", "nik": "6171011708900001", "name": "x", "wage": 5000000, "salary": 1}}, 422, "salary"),
    ("duplicate KPJ in batch", "post", "/participants", {"json": {"participants": [
        {"kpj": "61000000001", "nik": "6171011708900001", "name": "x", "wage": 5000000},
        {"kpj": "61000000001", "nik": "6171011708900002", "name": "y", "wage": 5000000}]}}, 422, "kpj"),
    ("duplicate KPJ already registered", "post", "/participants", {"json": {"kpj": "61000000777", "nik": "6171011708900003", "name": "x", "wage": 5000000}}, 422, "kpj"),
    ("malformed JSON", "post", "/participants", {"data": "{not json", "headers": {"Content-Type": "application/json"}}, 400, "body"),
    ("wrong content type", "post", "/participants", {"data": "kpj=1", "headers": {"Content-Type": "application/x-www-form-urlencoded"}}, 415, "Content-Type"),
    ("body too large", "post", "/participants", {"data": "[" + "1," * 600_000 + "1]", "headers": {"Content-Type": "application/json"}}, 413, None),
    ("malformed CSV header", "post", "/participants.csv", {"data": "kpj;nik;name\n1;2;3\n", "headers": {"Content-Type": "text/csv"}}, 422, "header"),
    ("CSV with unbalanced quote", "post", "/participants.csv", {"data": 'kpj,nik,name,wage,segment\n61000000001,6171011708900001,"Budi,5000000,PU\n', "headers": {"Content-Type": "text/csv"}}, 422, None),
    ("CSV fractional wage", "post", "/participants.csv", {"data": "kpj,nik,name,wage,segment\n61000000001,6171011708900001,Budi,5000000.50,PU\n", "headers": {"Content-Type": "text/csv"}}, 422, "wage"),
    ("CSV wrong content type", "post", "/participants.csv", {"data": "kpj,nik,name,wage,segment\n", "headers": {"Content-Type": "application/json"}}, 415, "Content-Type"),
    ("wrong period format", "post", "/wage-reports", {"json": {"period": "06-2025"}}, 422, "period"),
    ("month 13", "post", "/wage-reports", {"json": {"period": "2025-13"}}, 422, "period"),
    ("future period", "post", "/wage-reports", {"json": {"period": "2099-01"}}, 422, "period"),
    ("period before rate tables", "post", "/wage-reports", {"json": {"period": "2020-01"}}, 422, "period"),
    ("wage override for unknown worker", "post", "/wage-reports", {"json": {"period": "2025-06", "wages": [{"kpj": "61000000555", "wage": 1000}]}}, 422, "wages"),
    ("missing key", "post", "/participants", {"json": {}, "no_auth": True}, 401, "Authorization"),
    ("wrong key", "get", "/bills", {"headers": {"Authorization": "Bearer kanal_sk_nope"}, "no_auth": True}, 401, "Authorization"),
]


async def test_registration_errors(gateway_server, http):
    base = gateway_server.url
    before = await fingerprint(gateway_server.pool)
    cases = [
        ({"npp": "JJ0P4391", "name": "x", "regency_code": "9999", "size_class": "large", "jkk_risk_class": 2}, "regency_code"),
        ({"npp": "JJ0P4391", "name": "x", "regency_code": "6171", "size_class": "huge", "jkk_risk_class": 2}, "size_class"),
        ({"npp": "JJ0P4391", "name": "x", "regency_code": "6171", "size_class": "large", "jkk_risk_class": 6}, "jkk_risk_class"),
        ({"npp": "J!", "name": "x", "regency_code": "6171", "size_class": "large", "jkk_risk_class": 2}, "npp"),
        ({"npp": "JJ0P4391", "regency_code": "6171", "size_class": "large", "jkk_risk_class": 2}, "name"),
    ]
    for body, field in cases:
        async with http.post(f"{base}/api/v1/employers", json=body) as r:
            assert r.status == 422, (body, await r.text())
            assert r.content_type == "application/problem+json"
            problem = await r.json()
            assert field in [e["field"] for e in problem["errors"]], problem
    assert await fingerprint(gateway_server.pool) == before


@pytest.mark.parametrize("case", MALFORMED, ids=[c[0] for c in MALFORMED])
async def test_malformed_requests_get_a_precise_4xx_and_write_nothing(gateway_server, http, case):
    name, method, suffix, kwargs, status, field = case
    kwargs = {k: (dict(v) if isinstance(v, dict) else v) for k, v in kwargs.items()}
    base = gateway_server.url
    _, auth = await register(http, base, npp="MALF0001")
    async with http.post(
        f"{base}/api/v1/employers/MALF0001/participants",
        json={"kpj": "61000000777", "nik": "6171011708900777", "name": "Existing", "wage": 5_000_000},
        headers=auth,
    ) as r:
        assert r.status == 201
    before = await fingerprint(gateway_server.pool)
    headers = {} if kwargs.pop("no_auth", False) else dict(auth)
    headers.update(kwargs.pop("headers", {}))
    if isinstance(kwargs.get("data"), str) and len(kwargs["data"]) > 1_000_000:
        kwargs["data"] = io.BytesIO(kwargs["data"].encode())
    async with http.request(method, f"{base}/api/v1/employers/MALF0001{suffix}", headers=headers, **kwargs) as r:
        assert r.status == status, (name, r.status, await r.text())
        problem = await r.json(content_type=None)
    assert problem["status"] == status and problem["detail"]
    if field:
        fields = [e["field"].split(".")[-1] for e in problem["errors"]] + [e["field"] for e in problem["errors"]]
        assert field in fields, (name, problem)
    assert await fingerprint(gateway_server.pool) == before, name


async def test_openapi_and_offline_docs(gateway_server, http):
    async with http.get(gateway_server.url + "/openapi.json") as r:
        spec = await r.json()
    assert spec["openapi"].startswith("3.")
    assert "/api/v1/employers/{npp}/wage-reports" in spec["paths"]
    props = spec["components"]["schemas"]["EmployerRegistration"]["properties"]
    assert set(props) >= {"npp", "name", "regency_code", "size_class", "jkk_risk_class"}
    async with http.get(gateway_server.url + "/docs") as r:
        page = await r.text()
    assert r.status == 200 and "wage-reports" in page and "http://" not in page.replace(gateway_server.url, "")


async def test_request_id_and_one_log_line_per_request(gateway_server, http):
    from structlog.testing import capture_logs

    with capture_logs() as logs:
        async with http.get(gateway_server.url + "/healthz", headers={"X-Request-ID": "abc-123"}) as r:
            assert r.headers["X-Request-ID"] == "abc-123"
    lines = [l for l in logs if l.get("event") == "request" and l.get("path") == "/healthz"]
    assert len(lines) == 1 and lines[0]["status"] == 200
