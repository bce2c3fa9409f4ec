"""Every problem of a row or request is reported in one answer, in field
order, and a refused request writes nothing: an employer fixes everything
after one try, not one problem per try. Real HTTP, real PostgreSQL."""

from __future__ import annotations

import aiohttp
import pytest

from tests.conftest import make_kpj, make_nik
from tests.e2e.test_employer_api import fingerprint, last_month, register

pytestmark = pytest.mark.asyncio

CSV = {"Content-Type": "text/csv"}


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


def pairs(body: dict) -> list[tuple]:
    return [(e.get("row"), e["field"]) for e in body["errors"]]


async def add_one(http, base, npp, auth, n: int) -> tuple[str, str]:
    kpj, nik = make_kpj(n), make_nik(n)
    async with http.post(
        f"{base}/api/v1/employers/{npp}/participants",
        json={"kpj": kpj, "nik": nik, "name": "Terdaftar", "wage": 5_000_000},
        headers=auth,
    ) as r:
        assert r.status == 201, await r.text()
    return kpj, nik


# ------------------------------------------------------------------- CSV ----


async def test_csv_row_with_a_bad_wage_still_reports_its_other_cells(gateway_server, http):
    base = gateway_server.url
    _, auth = await register(http, base, npp="EVRY0001")
    before = await fingerprint(gateway_server.pool)
    data = "kpj,nik,name,wage,segment\n123,abc,,-5,XX\n"
    async with http.post(f"{base}/api/v1/employers/EVRY0001/participants.csv", data=data, headers={**auth, **CSV}) as r:
        assert r.status == 422, await r.text()
        assert r.content_type == "application/problem+json"
        body = await r.json()
    assert pairs(body) == [(1, "kpj"), (1, "nik"), (1, "name"), (1, "wage"), (1, "segment")]
    problems = {e["field"]: e["problem"] for e in body["errors"]}
    assert problems["wage"] == "'-5' must be positive"
    assert problems["kpj"] == "must be 11 digits, got 3"
    assert "PU or BPU" in problems["segment"]
    assert body["saved"] == 0 and body["rejected"] == 1 and body["mode"] == "all_or_nothing"
    assert body["title"] == "Invalid rows" and body["status"] == 422
    assert await fingerprint(gateway_server.pool) == before


async def test_csv_bad_wage_does_not_hide_a_registered_kpj_or_a_duplicate(gateway_server, http):
    base = gateway_server.url
    _, auth = await register(http, base, npp="EVRY0002")
    taken_kpj, taken_nik = await add_one(http, base, "EVRY0002", auth, 990_001)
    new_kpj, new_nik = make_kpj(990_002), make_nik(990_002)
    before = await fingerprint(gateway_server.pool)
    data = (
        "kpj,nik,name,wage,segment\n"
        f"{taken_kpj},{make_nik(990_003)},Budi,12.5,PU\n"  # row 1: bad wage and a registered KPJ
        f"{new_kpj},{taken_nik},Sari,abc,PU\n"  # row 2: bad wage and a NIK registered here
        f"{new_kpj},{new_nik},Agus,5000000,XX\n"  # row 3: KPJ of row 2, bad segment
    )
    async with http.post(f"{base}/api/v1/employers/EVRY0002/participants.csv", data=data, headers={**auth, **CSV}) as r:
        assert r.status == 422, await r.text()
        body = await r.json()
    assert body["errors"] == [
        {"row": 1, "field": "kpj", "problem": "already registered"},
        {"row": 1, "field": "wage", "problem": "'12.5' must be a whole number of rupiah (no decimals or separators)"},
        {"row": 2, "field": "nik", "problem": "already registered with this employer"},
        {"row": 2, "field": "wage", "problem": "'abc' must be a positive whole number of rupiah, digits only"},
        {"row": 3, "field": "kpj", "problem": "duplicate of row 2 in this upload"},
        {"row": 3, "field": "segment", "problem": "'XX' is not PU or BPU"},
    ]
    assert body["saved"] == 0 and body["rejected"] == 3
    assert await fingerprint(gateway_server.pool) == before


async def test_csv_keep_valid_reports_every_problem_and_saves_exactly_the_clean_rows(gateway_server, http):
    base = gateway_server.url
    _, auth = await register(http, base, npp="EVRY0003")
    taken_kpj, _ = await add_one(http, base, "EVRY0003", auth, 990_011)
    good = [(make_kpj(990_012 + i), make_nik(990_012 + i)) for i in range(2)]
    data = (
        "kpj,nik,name,wage,segment\n"
        f"{good[0][0]},{good[0][1]},Rina,4000000,PU\n"
        f"{taken_kpj},{make_nik(990_020)},,-1,PU\n"  # registered KPJ, no name, bad wage
        f"{good[1][0]},{good[1][1]},Fitri,3800000,BPU\n"
    )
    async with http.post(
        f"{base}/api/v1/employers/EVRY0003/participants.csv?mode=keep_valid", data=data, headers={**auth, **CSV}
    ) as r:
        assert r.status == 201, await r.text()
        body = await r.json()
    assert pairs(body) == [(2, "kpj"), (2, "name"), (2, "wage")]
    assert body["saved"] == 2 and body["rejected"] == 1
    async with http.get(f"{base}/api/v1/employers/EVRY0003/participants", headers=auth) as r:
        saved = {p["kpj"] for p in (await r.json())["participants"]}
    assert saved == {taken_kpj, good[0][0], good[1][0]}


# ------------------------------------------------------ JSON participants ----


async def test_json_worker_reports_model_and_domain_problems_together(gateway_server, http):
    base = gateway_server.url
    _, auth = await register(http, base, npp="EVRY0004")
    before = await fingerprint(gateway_server.pool)
    worker = {"kpj": "6100", "nik": "abc", "name": " ", "wage": -5, "segment": "XX"}
    async with http.post(f"{base}/api/v1/employers/EVRY0004/participants", json=worker, headers=auth) as r:
        assert r.status == 422, await r.text()
        assert r.content_type == "application/problem+json"
        body = await r.json()
    assert body["title"] == "Invalid request" and body["status"] == 422
    assert [e["field"] for e in body["errors"]] == ["kpj", "nik", "name", "wage", "segment"]
    assert body["errors"][0] == {"field": "kpj", "problem": "must be 11 digits, got 4"}
    assert body["errors"][1] == {"field": "nik", "problem": "must contain digits 0-9 only, got 'abc'"}
    assert body["detail"] == "; ".join(f"{e['field']}: {e['problem']}" for e in body["errors"])
    assert await fingerprint(gateway_server.pool) == before


async def test_json_batch_reports_every_row_in_order_and_saves_nothing(gateway_server, http):
    base = gateway_server.url
    _, auth = await register(http, base, npp="EVRY0005")
    taken_kpj, taken_nik = await add_one(http, base, "EVRY0005", auth, 990_031)
    first = {"kpj": make_kpj(990_032), "nik": make_nik(990_032), "name": "Budi", "wage": 5_000_000}
    batch = {
        "participants": [
            first,
            {"kpj": first["kpj"], "nik": taken_nik, "name": "Sari", "wage": "5"},  # duplicate KPJ, NIK taken, wage text
            7,  # not an object
            {"kpj": taken_kpj, "nik": make_nik(990_033), "name": "Agus", "wage": 5, "salary": 1},
        ],
        "mode": "keep_valid_please",
    }
    before = await fingerprint(gateway_server.pool)
    async with http.post(f"{base}/api/v1/employers/EVRY0005/participants", json=batch, headers=auth) as r:
        assert r.status == 422, await r.text()
        body = await r.json()
    assert [e["field"] for e in body["errors"]] == [
        "participants.1.kpj",
        "participants.1.nik",
        "participants.1.wage",
        "participants.2",
        "participants.3.kpj",
        "participants.3.salary",
        "mode",
    ]
    problems = [e["problem"] for e in body["errors"]]
    assert problems[0] == "duplicate of row 1 in this upload"
    assert problems[1] == "already registered with this employer"
    assert problems[4] == "already registered"
    assert problems[5] == "unknown field; remove it"
    assert await fingerprint(gateway_server.pool) == before


# ----------------------------------------------------------- registration ----


def employer(**fields) -> dict:
    return {"npp": "EVRY0100", "name": "PT Evry", "regency_code": "6171", "size_class": "large", "jkk_risk_class": 2, **fields}


async def post_registration(http, base, body) -> tuple[int, dict]:
    async with http.post(f"{base}/api/v1/employers", json=body) as r:
        assert r.content_type in ("application/problem+json", "application/json")
        return r.status, await r.json()


async def test_registration_reports_model_and_domain_problems_in_field_order(gateway_server, http):
    base = gateway_server.url
    before = await fingerprint(gateway_server.pool)
    body = employer(npp="x", name="", regency_code="9999", size_class="huge", jkk_risk_class=6, phone="0561")
    status, problem = await post_registration(http, base, body)
    assert status == 422, problem
    assert [e["field"] for e in problem["errors"]] == ["npp", "name", "regency_code", "size_class", "jkk_risk_class", "phone"]
    assert problem["errors"][0] == {"field": "npp", "problem": "must be 8 characters (e.g. JJ0P4391), got 1"}
    assert problem["errors"][2]["problem"].startswith("unknown regency '9999'")
    # The model accepted every value: the two domain problems still come together.
    status, problem = await post_registration(http, base, employer(npp="J!", regency_code="9999"))
    assert status == 422, problem
    assert [e["field"] for e in problem["errors"]] == ["npp", "regency_code"]
    assert problem["detail"] == "; ".join(f"{e['field']}: {e['problem']}" for e in problem["errors"])
    # A value the model refused is not checked again (no follow-on NPP problem).
    status, problem = await post_registration(http, base, employer(npp=12345678, size_class="huge"))
    assert status == 422 and [e["field"] for e in problem["errors"]] == ["npp", "size_class"], problem
    assert await fingerprint(gateway_server.pool) == before


async def test_registration_names_a_taken_npp_alongside_other_problems(gateway_server, http):
    base = gateway_server.url
    await register(http, base, npp="EVRY0101")
    before = await fingerprint(gateway_server.pool)
    status, problem = await post_registration(http, base, employer(npp="evry0101", size_class="huge"))
    assert status == 422, problem
    assert (problem["errors"][0]["field"], problem["errors"][0]["problem"]) == ("npp", "already registered")
    assert [e["field"] for e in problem["errors"]] == ["npp", "size_class"]
    status, problem = await post_registration(http, base, employer(npp="EVRY0101", regency_code="0000"))
    assert status == 422 and problem["errors"][:1] == [{"field": "npp", "problem": "already registered"}], problem
    assert [e["field"] for e in problem["errors"]] == ["npp", "regency_code"]
    # Taken and nothing else wrong: 409, as before.
    status, problem = await post_registration(http, base, employer(npp="EVRY0101"))
    assert status == 409 and problem["errors"] == [{"field": "npp", "problem": "already registered"}], problem
    assert await fingerprint(gateway_server.pool) == before


# ------------------------------------------------------------ wage report ----


async def post_report(http, base, npp, auth, body) -> tuple[int, dict]:
    async with http.post(f"{base}/api/v1/employers/{npp}/wage-reports", json=body, headers=auth) as r:
        return r.status, await r.json()


async def test_wage_report_reports_period_lines_and_model_problems_together(gateway_server, http):
    base = gateway_server.url
    _, auth = await register(http, base, npp="EVRY0200")
    k1, _ = await add_one(http, base, "EVRY0200", auth, 990_201)
    before = await fingerprint(gateway_server.pool)
    status, problem = await post_report(http, base, "EVRY0200", auth, {
        "period": "2020-01",
        "wages": [
            {"kpj": "61000000555", "wage": 1000},
            {"kpj": k1, "wage": 5},
            {"kpj": k1, "wage": 6},
            {"kpj": "61000000556", "wage": "7"},
        ],
    })
    assert status == 422, problem
    assert problem["title"] == "Invalid request"
    assert [(e["field"], e["problem"]) for e in problem["errors"]] == [
        ("period", "no rate table before 2023-03"),
        ("wages", "kpj 61000000555 is not a participant of EVRY0200"),
        ("wages.2.kpj", f"{k1} appears twice"),
        ("wages", "kpj 61000000556 is not a participant of EVRY0200"),
        ("wages.3.wage", "Input should be a valid integer"),
    ]
    # The model accepts it all: the period and every unknown KPJ, in line order.
    status, problem = await post_report(http, base, "EVRY0200", auth, {
        "period": "2020-01", "wages": [{"kpj": "61000000555", "wage": 1}, {"kpj": "61000000554", "wage": 1}],
    })
    assert status == 422, problem
    assert [e["problem"] for e in problem["errors"]] == [
        "no rate table before 2023-03",
        "kpj 61000000555 is not a participant of EVRY0200",
        "kpj 61000000554 is not a participant of EVRY0200",
    ]
    status, problem = await post_report(http, base, "EVRY0200", auth, {
        "period": "2099-01", "wages": [{"kpj": k1, "wage": 5}, {"kpj": k1, "wage": 6}],
    })
    assert status == 422 and [e["field"] for e in problem["errors"]] == ["period", "wages.1.kpj"], problem
    assert "in the future" in problem["errors"][0]["problem"]
    assert await fingerprint(gateway_server.pool) == before


async def test_wage_report_names_an_already_reported_period_among_other_problems(gateway_server, http):
    base = gateway_server.url
    _, auth = await register(http, base, npp="EVRY0201")
    await add_one(http, base, "EVRY0201", auth, 990_211)
    status, bill = await post_report(http, base, "EVRY0201", auth, {"period": last_month()})
    assert status == 201, bill
    before = await fingerprint(gateway_server.pool)
    status, problem = await post_report(http, base, "EVRY0201", auth, {
        "period": last_month(), "wages": [{"kpj": "61000000555", "wage": 1000}],
    })
    assert status == 422, problem
    assert problem["errors"] == [
        {"field": "period", "problem": f"already reported (payment_code {bill['payment_code']})"},
        {"field": "wages", "problem": "kpj 61000000555 is not a participant of EVRY0201"},
    ]
    status, problem = await post_report(http, base, "EVRY0201", auth, {"period": last_month()})
    assert status == 409 and problem["errors"][0]["field"] == "period", problem
    assert await fingerprint(gateway_server.pool) == before


async def test_wage_report_of_an_employer_without_workers_names_the_period_too(gateway_server, http):
    base = gateway_server.url
    _, auth = await register(http, base, npp="EVRY0202")
    before = await fingerprint(gateway_server.pool)
    status, problem = await post_report(http, base, "EVRY0202", auth, {
        "period": "2025-13", "wages": [{"kpj": "61000000555", "wage": 1000}],
    })
    assert status == 422, problem
    # No participants at all: each wage line's "not a participant" would only repeat it.
    assert [e["field"] for e in problem["errors"]] == ["period", "participants"]
    assert problem["errors"][1]["problem"] == "employer EVRY0202 has no registered participants to report"
    assert await fingerprint(gateway_server.pool) == before


# ------------------------------------------- review of the change (helper) ---


async def test_a_wage_report_with_every_wage_a_string_lists_each_line_once(gateway_server, http):
    """A common integrator mistake, 6,000 lines of it: each wage line is
    named once, in line order (the lookup of what the model refused was
    once quadratic in the lines, and held the event loop for ~10 s)."""
    base = gateway_server.url
    _, auth = await register(http, base, npp="RVWQ0001")
    lines = [{"kpj": make_kpj(600_000 + i), "wage": "5000000"} for i in range(6_000)]
    async with http.post(f"{base}/api/v1/employers/RVWQ0001/wage-reports",
                         json={"period": last_month(), "wages": lines}, headers=auth) as r:
        assert r.status == 422
        errors = (await r.json())["errors"]
    wage_errors = [e["field"] for e in errors if e["field"].endswith(".wage")]
    assert wage_errors == [f"wages.{n}.wage" for n in range(6_000)]


async def test_what_the_model_refused_is_looked_up_not_scanned():
    """value_given asks a few set lookups per value, however many errors the
    model reported: 20,000 errors and 20,000 values, counted."""
    from gateway.http.common import Refused, value_given

    class Counting(set):
        asked = 0

        def __contains__(self, item) -> bool:
            Counting.asked += 1
            return super().__contains__(item)

    class Scanned(Refused):
        """Counts the errors read one by one, as a scan of the list reads them."""

        read = 0

        def __iter__(self):
            for item in super().__iter__():
                Scanned.read += 1
                yield item

    refused = Scanned([(("wages", n, "wage"), {"field": f"wages.{n}.wage", "problem": "bad"}) for n in range(20_000)])
    refused.at, refused.above = Counting(refused.at), Counting(refused.above)
    Scanned.read = 0  # building the index read each error once
    raw = {"wages": [{"kpj": f" {n:011d} ", "wage": "5"} for n in range(20_000)]}
    kpjs = [value_given(raw, ("wages", n, "kpj"), refused) for n in range(20_000)]
    assert kpjs == [f"{n:011d}" for n in range(20_000)]
    assert [value_given(raw, ("wages", n, "wage"), refused) for n in (0, 19_999)] == [None, None]
    assert value_given(raw, ("wages",), refused) is None  # errors under it
    assert Scanned.read == 0  # no value read the list of errors
    assert 20_002 <= Counting.asked <= 20_002 * 4  # a few lookups per value: one per part of its location, and one more


async def test_a_refused_worker_is_judged_on_the_values_the_model_accepted(gateway_server, http):
    """The models strip Unicode white space, not U+001C-U+001F as Python's
    str.strip() does: a refused request's other values are judged as the
    model reads them."""
    base = gateway_server.url
    _, auth = await register(http, base, npp="RVWS0001")
    url = f"{base}/api/v1/employers/RVWS0001/participants"
    worker = {"kpj": make_kpj(710_001) + "\x1f", "nik": make_nik(710_001), "name": "\x1f", "wage": 0}
    async with http.post(url, json=worker, headers=auth) as r:
        assert r.status == 422
        with_bad_wage = {e["field"]: e["problem"] for e in (await r.json())["errors"]}
    async with http.post(url, json={**worker, "wage": 5_000_000}, headers=auth) as r:
        assert r.status == 422
        next_try = {e["field"]: e["problem"] for e in (await r.json())["errors"]}
    assert set(next_try) == {"kpj"}
    assert set(with_bad_wage) == {"kpj", "wage"}, with_bad_wage


async def test_a_csv_wage_of_5000_digits_is_a_422_naming_the_limit(gateway_server, http):
    base = gateway_server.url
    _, auth = await register(http, base, npp="RVWD0001")
    data = (f"kpj,nik,name,wage,segment\n{make_kpj(720_001)},{make_nik(720_001)},Budi,{'9' * 5000},PU\n"
            f"{make_kpj(720_002)},{make_nik(720_002)},Sari,{'0' * 5000}4500000,PU\n")
    async with http.post(f"{base}/api/v1/employers/RVWD0001/participants.csv", data=data,
                         headers={**auth, **CSV}) as r:
        assert r.status == 422, await r.text()
        body = await r.json()
    assert pairs(body) == [(1, "wage")]  # the second row's leading zeros are still Rp4,500,000
    assert "must be at most" in body["errors"][0]["problem"]
