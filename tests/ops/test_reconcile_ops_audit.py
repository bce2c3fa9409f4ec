"""A reconciling ops engineer's audit of statements and reconciliation, each
finding reproduced as the engineer met it: over HTTP on a real gateway, or
through `kanal` run as a subprocess, against real PostgreSQL."""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
import json

import aiohttp
import pytest

from gateway.domain.periods import WIB
from gateway.ops import reconcile
from gateway.ops.statements import StatementError, parse, render
from tests.ops.conftest import ADMIN
from tests.ops.test_cli import kanal
from tests.ops.test_http import pay

COUNTS = """select (select count(*) from ops_statements), (select count(*) from ops_statement_entries),
                   (select count(*) from ops_reconciliation_ledger_only)"""


async def counts(pool) -> tuple:
    return tuple(await pool.fetchrow(COUNTS))


async def post_statement(server, raw: bytes, query: str = "") -> tuple[int, dict]:
    async with aiohttp.ClientSession() as http, \
            http.post(server.url + "/ops/reconciliations" + query, data=raw, headers=ADMIN) as response:
        return response.status, await response.json()


def one_line_camt(day: str) -> bytes:
    booked_on = dt.date.fromisoformat(day)
    statement = parse(b"booking_date,amount_rupiah\n2025-10-01,15000\n", "csv", statement_ref="S-END", account="A")
    line = dataclasses.replace(statement.lines[0], booked_on=booked_on)
    return render(dataclasses.replace(statement, lines=[line], from_date=booked_on, to_date=booked_on), "camt.053")


@pytest.mark.parametrize(("raw", "field"), [
    (b"booking_date,amount_rupiah\n2025-10-01,1000\n9999-12-31,1000\n", "line 3.booking_date"),
    (b"booking_date,amount_rupiah\n0001-01-01,1000\n", "line 2.booking_date"),
    ("camt 9999-12-31", "line 1.BookgDt"),
])
async def test_a_booking_date_at_the_ends_of_the_calendar_is_refused_not_a_500(gateway_server, raw, field):
    """9999-12-31 and 0001-01-01 are dates, but the ledger's window of such a
    day (midnight to midnight, Asia/Pontianak) is not a datetime Python or
    asyncpg can hold: the import answered 500 with a traceback in the log."""
    if isinstance(raw, str):
        raw = one_line_camt(raw.split()[1])
    before = await counts(gateway_server.pool)
    status, body = await post_statement(gateway_server, raw)
    assert status == 422, body
    assert body["errors"][0]["field"] == field
    assert "outside the days a statement may cover" in body["detail"]
    assert await counts(gateway_server.pool) == before


async def test_kanal_statement_refuses_a_day_it_cannot_cover_in_one_line(database_url):
    code, out, err = await kanal(database_url, "statement", "9999-12-31")
    assert code == 2 and out == ""
    assert "Invalid value for FROM_DATE: 9999-12-31 is outside the days a statement may cover" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("amount", ["1.23457E+06", "1e3", "1_000", "\uff11\uff12\uff13"])
async def test_an_amount_not_written_in_plain_digits_is_refused(gateway_server, amount):
    """A spreadsheet writes 1,234,567 as 1.23457E+06: that was read as
    Rp1.234.570 and reconciled as an amount mismatch, as were "1e3",
    "1_000" and full-width digits, which Decimal takes."""
    raw = f"booking_date,amount_rupiah\n2025-10-01,150000\n2025-10-01,{amount}\n".encode()
    before = await counts(gateway_server.pool)
    status, body = await post_statement(gateway_server, raw, "?statement_ref=S-AMOUNT")
    assert status == 422, body
    assert body["errors"] == [{"field": "line 3.amount_rupiah",
                               "problem": "expected plain digits (no exponent, separator or other script)"}]
    assert await counts(gateway_server.pool) == before


def test_a_camt_amount_with_an_exponent_is_refused():
    raw = one_line_camt("2025-10-01").replace(b">15000.00<", b">1.5E4<")
    with pytest.raises(StatementError) as refused:
        parse(raw)
    assert refused.value.errors[0]["field"] == "Ntry[1].TxDtls[1].Amt"
    assert "is not written in plain digits" in refused.value.detail


@pytest.mark.parametrize("day", ["20251001", "2025-W40-3", "2025-274"])
def test_a_csv_booking_date_must_be_written_yyyy_mm_dd(day):
    """Python 3.11's date.fromisoformat reads 20251001, 2025-W40-3 (a week
    date) and more: each was taken as 2025-10-01, while the refusal of any
    other text says YYYY-MM-DD."""
    with pytest.raises(StatementError) as refused:
        parse(f"booking_date,amount_rupiah\n{day},1000\n".encode(), "csv")
    assert refused.value.errors == [{"field": "line 2.booking_date", "problem": "expected YYYY-MM-DD"}]


async def test_a_camt_statement_with_no_entries_lists_every_payment_as_ledger_only(pool, clock, paid_ledger):
    """A bank that booked nothing on a day sends a statement with a period
    and no entries (`kanal statement` writes one too). It was refused ("the
    statement has no entries"), so the payments the bank never received
    could not be found."""
    today = clock().astimezone(WIB).date()
    empty = dataclasses.replace(await reconcile.ledger_statement(pool, today, today, statement_ref="S-EMPTY"), lines=[])
    summary, created = await reconcile.import_statement(pool, render(empty, "camt.053"))
    assert created
    expected = await pool.fetch(
        """select id from payments where posted_at >= $1 and posted_at < $2
           union all select id from payments where reversed_at >= $1 and reversed_at < $2""",
        *reconcile.window(today, today),
    )
    assert len(expected) == 5  # four payments, one of them reversed too
    assert (summary["entries"], summary["matched"], summary["ledger_only"], summary["discrepancies"]) == (0, 0, 5, 5)
    items = await reconcile.items(pool, summary["id"])
    assert sorted(i["payment_id"] for i in items) == sorted(r["id"] for r in expected)
    assert {i["kind"] for i in items} == {"ledger_only"}


def test_a_camt_statement_with_no_entries_and_no_period_is_refused_naming_the_period():
    statement = parse(b"booking_date,amount_rupiah\n2025-10-01,1000\n", "csv", statement_ref="S", account="A")
    raw = render(dataclasses.replace(statement, lines=[]), "camt.054")
    start, end = raw.index(b"<FrToDt>"), raw.index(b"</FrToDt>") + len(b"</FrToDt>")
    with pytest.raises(StatementError) as refused:
        parse(raw[:start] + raw[end:])
    assert refused.value.errors[0]["field"] == "FrToDt"


async def test_kanal_reconcile_json_prints_only_json(database_url, paid_ledger, clock, tmp_path):
    """The `statement_imported` log line went to standard output, before the
    JSON: `kanal reconcile --json | jq` failed on every new import."""
    today = clock().astimezone(WIB).date().isoformat()
    stmt = tmp_path / "stmt.csv"
    code, _, err = await kanal(database_url, "statement", today, "--format", "csv", "-o", str(stmt))
    assert code == 0, err
    code, out, err = await kanal(database_url, "reconcile", str(stmt), "--json")
    assert code == 0, err
    result = json.loads(out)
    assert (result["already_imported"], result["matched"], len(result["items"])) == (False, 5, 5)
    assert "statement_imported" in err


async def test_a_ledger_only_item_carries_the_payments_bank_reference(gateway_server, bills, clock):
    """A payment the bank's statement leaves out is what the engineer asks
    the bank about, by the bank's own reference: the export left that column
    empty for ledger_only items (it was read from the statement's line only)."""
    for n in range(2):
        await pay(gateway_server, bills, n)
    today = clock().astimezone(WIB).date()
    statement = await reconcile.ledger_statement(gateway_server.pool, today, today, statement_ref="S-MISSING")
    missing = statement.lines[0]
    status, created = await post_statement(gateway_server, render(dataclasses.replace(statement, lines=statement.lines[1:]), "csv"),
                                           "?statement_ref=S-MISSING")
    assert status == 201 and created["ledger_only"] == 1, created
    async with aiohttp.ClientSession() as http, \
            http.get(f"{gateway_server.url}/ops/reconciliations/{created['id']}/items.csv", headers=ADMIN) as response:
        rows = list(csv.DictReader(io.StringIO(await response.text())))
    ledger_only = [row for row in rows if row["kind"] == "ledger_only"]
    assert [(row["bank_reference"], row["line_no"], row["bank_amount_rupiah"]) for row in ledger_only] == \
        [(missing.bank_reference, "", "")]
    assert missing.bank_reference and ledger_only[0]["ledger_amount_rupiah"] == str(missing.amount_rupiah)


async def test_a_statement_id_too_long_names_its_field(gateway_server):
    status, body = await post_statement(gateway_server, b"booking_date,amount_rupiah\n2025-10-01,1000\n",
                                        "?statement_ref=" + "S" * 201)
    assert status == 422
    assert body["errors"] == [{"field": "statement_ref", "problem": "at most 200 characters"}]


async def test_kanal_reconciliations_export_of_an_id_past_bigint_is_a_usage_error(database_url):
    code, _, err = await kanal(database_url, "reconciliations", "export", "99999999999999999999")
    assert code == 2 and "Traceback" not in err
    assert "Invalid value for 'STATEMENT_ID'" in err


async def test_a_statement_of_another_account_is_refused_when_kanals_accounts_are_set(database_url, clock, tmp_path):
    """A camt statement of another bank account (Acct/Id OTHER-BANK-999) was
    paired against Kanal's ledger as if it were Kanal's own. With
    KANAL_SETTLEMENT_ACCOUNTS set it is refused naming `account`, and nothing
    is written; a CSV that names no account cannot be judged and is taken."""
    import os
    import subprocess
    import sys

    from gateway.runtime import Gateway
    from tests.conftest import RunningGateway, test_settings

    gateway = Gateway(settings=test_settings(settlement_accounts=("KANAL-SETTLEMENT", "KALBAR-2")), database_url=database_url,
                      clock=clock)
    await gateway.start(migrate_first=False)
    try:
        server = RunningGateway(gateway)
        csv_text = b"booking_date,amount_rupiah\n2025-10-01,15000\n"
        statement = parse(csv_text, "csv", statement_ref="S-ACCT", account="OTHER-BANK-999")
        other = render(statement, "camt.053")
        before = await counts(server.pool)
        status, body = await post_statement(server, other)
        assert status == 422, body
        assert body["errors"] == [{"field": "account", "problem": "not one of Kanal's settlement accounts: KANAL-SETTLEMENT, KALBAR-2"}]
        status, body = await post_statement(server, csv_text, "?statement_ref=S-ACCT-CSV&account=OTHER-BANK-999")
        assert status == 422 and body["errors"][0]["field"] == "account", body
        assert await counts(server.pool) == before
        ours = render(dataclasses.replace(statement, statement_ref="S-ACCT-OURS", account="KALBAR-2"), "camt.053")
        assert (await post_statement(server, ours))[0] == 201
        assert (await post_statement(server, csv_text, "?statement_ref=S-ACCT-NONE"))[0] == 201  # no account: taken
    finally:
        await gateway.stop()

    path = tmp_path / "other.xml"
    path.write_bytes(other)
    env = {**os.environ, "KANAL_DATABASE_URL": database_url, "KANAL_LOG_FORMAT": "json",
           "KANAL_SETTLEMENT_ACCOUNTS": "KANAL-SETTLEMENT, KALBAR-2"}
    done = subprocess.run([sys.executable, "-m", "gateway.cli", "reconcile", str(path)], env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 1 and "account 'OTHER-BANK-999' is not one of Kanal's settlement accounts" in done.stderr, done.stderr


async def test_a_statement_covering_more_than_a_year_is_refused(gateway_server):
    """A typo in a year (1926 for 2026) made a window of a hundred years, and
    every payment in the ledger was expected: refused naming the period."""
    before = await counts(gateway_server.pool)
    status, body = await post_statement(
        gateway_server, b"booking_date,amount_rupiah\n1926-11-25,1000\n2026-11-25,1000\n", "?statement_ref=S-TYPO"
    )
    assert status == 422, body
    assert body["errors"] == [{"field": "period", "problem": "1926-11-25 to 2026-11-25 is 36,526 days; at most 366"}]
    assert await counts(gateway_server.pool) == before
    status, _ = await post_statement(gateway_server, b"booking_date,amount_rupiah\n2025-11-25,1000\n2026-11-25,1000\n",
                                     "?statement_ref=S-YEAR")
    assert status == 201  # 366 days, the most a statement may cover
