"""Reconciliation of generated bank statements with planted discrepancies."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from bank_adapters.base import PayCommand, PayOutcome, ReverseCommand
from gateway.domain.periods import WIB
from gateway.ops import reconcile
from gateway.ops.statements import Line, StatementError, parse, render

TABLES = ("ops_statements", "ops_statement_entries", "ops_reconciliation_items")


@pytest.fixture
async def ledger(payments, bills, clock):
    """Six payments over two channels; the last one reversed the same day."""
    results = []
    for n in range(6):
        info = await bills.create(workers=2)
        channel = "snap:BANKKALBAR" if n % 2 == 0 else "iso8583:123"
        result = await payments.pay(PayCommand(info.payment_code, info.total_rupiah, channel, f"PRQ-{n}", f"BREF{n:05d}"))
        assert result.outcome == PayOutcome.POSTED
        results.append(result)
    assert (await payments.reverse(ReverseCommand("iso8583:123", "PRQ-5"))).payment_id == results[5].payment_id
    return results


def today(clock) -> dt.date:
    return clock().astimezone(WIB).date()


async def planted_statement(pool, clock, ledger):
    """The bank's view with three planted discrepancies, and what must be found."""
    statement = await reconcile.ledger_statement(pool, today(clock), today(clock), statement_ref="STMT-PLANTED")
    by_ref = {(line.bank_reference, line.direction): line for line in statement.lines}
    missing, wrong_amount, code_only = ledger[0], ledger[1], ledger[2]
    lines = []
    for line in statement.lines:
        key = (line.bank_reference, line.direction)
        if key == ("BREF00000", "credit"):
            continue  # 1. the bank never received payment 0
        if key == ("BREF00001", "credit"):
            line = dataclasses.replace(line, amount_rupiah=line.amount_rupiah - 1000)  # 2. short by Rp1.000
        if key == ("BREF00002", "credit"):
            line = dataclasses.replace(line, bank_reference="", end_to_end_id="")  # paired on the payment code alone
        lines.append(line)
    # 3. money the ledger knows nothing about
    lines.append(Line("credit", 77_000, today(clock), "BREF-STRAY", "PRQ-STRAY", "", "IURAN BPJSTK 99999999999"))
    assert ("BREF00005", "debit") in by_ref  # the reversal is on the statement too
    expected = {
        ("ledger_only", "credit", missing.payment_id),
        ("amount_mismatch", "credit", wrong_amount.payment_id),
        ("bank_only", "credit", None),
    }
    return dataclasses.replace(statement, lines=lines), expected, code_only


@pytest.mark.parametrize("fmt", ["csv", "camt.053", "camt.054"])
async def test_planted_discrepancies_are_found_exactly(pool, clock, ledger, fmt):
    statement, expected, code_only = await planted_statement(pool, clock, ledger)
    raw = render(statement, fmt)
    summary, created = await reconcile.import_statement(pool, raw, statement_ref="STMT-PLANTED", account="KALBAR-01")
    assert created
    assert summary["format"] == fmt
    items = await reconcile.items(pool, summary["id"])
    found = {(i["kind"], i["direction"], i["payment_id"]) for i in items if i["kind"] != "matched"}
    assert found == expected
    assert (summary["matched"], summary["bank_only"], summary["ledger_only"], summary["amount_mismatch"]) == (5, 1, 1, 1)
    matched = {i["payment_id"]: i for i in items if i["kind"] == "matched"}
    # Everything else matched, the reversal as a debit, and each on the strongest key it had.
    assert set(matched) == {p.payment_id for p in ledger[2:]} | {ledger[5].payment_id}
    assert ("debit", ledger[5].payment_id) in {(i["direction"], i["payment_id"]) for i in items if i["kind"] == "matched"}
    assert matched[code_only.payment_id]["matched_on"] == "payment_code"
    assert {i["matched_on"] for i in items if i["kind"] == "matched" and i["payment_id"] != code_only.payment_id} == {"bank_reference"}
    mismatch = next(i for i in items if i["kind"] == "amount_mismatch")
    assert mismatch["difference_rupiah"] == -1000 and mismatch["payment_code"] == ledger[1].payment_code
    stray = next(i for i in items if i["kind"] == "bank_only")
    assert (stray["bank_reference"], stray["bank_amount_rupiah"]) == ("BREF-STRAY", 77_000)


async def test_importing_the_same_statement_twice_changes_nothing(pool, clock, ledger):
    statement, _, _ = await planted_statement(pool, clock, ledger)
    raw = render(statement, "camt.053")
    first, created = await reconcile.import_statement(pool, raw)
    counts = [await pool.fetchval(f"select count(*) from {t}") for t in TABLES]
    again, created_again = await reconcile.import_statement(pool, raw)
    assert created and not created_again
    assert again == first
    assert [await pool.fetchval(f"select count(*) from {t}") for t in TABLES] == counts
    # A different file claiming the same statement is refused, and writes nothing.
    altered = render(dataclasses.replace(statement, lines=statement.lines[:-1]), "camt.053")
    with pytest.raises(reconcile.StatementConflict, match="STMT-PLANTED"):
        await reconcile.import_statement(pool, altered)
    assert [await pool.fetchval(f"select count(*) from {t}") for t in TABLES] == counts


async def test_a_channel_prefix_limits_what_the_ledger_expects(pool, clock, ledger):
    statement = await reconcile.ledger_statement(pool, today(clock), today(clock), channel_prefix="snap:")
    assert {line.bank_reference for line in statement.lines} == {"BREF00000", "BREF00002", "BREF00004"}
    summary, _ = await reconcile.import_statement(pool, render(statement, "csv"), channel_prefix="snap:")
    assert (summary["matched"], summary["ledger_only"], summary["bank_only"]) == (3, 0, 0)


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (b"booking_date,amount_rupiah\n2025-10-01,12.50\n", "fraction of a rupiah"),
        (b"booking_date,amount_rupiah\n01/10/2025,1000\n", "line 2, booking_date"),
        (b"booking_date,amount,x\n", "amount_rupiah: required column is missing"),
        (b"booking_date,amount_rupiah,direction\n2025-10-01,1000,sideways\n", "not credit or debit"),
        (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]><x>&a;</x>', "DTDs and entities"),
        (b"<Document xmlns='urn:example'/>", "expected an ISO 20022 camt.053 or camt.054"),
        (b"<Document xmlns='urn:iso:std:iso:20022:tech:xsd:camt.053.001.02'><BkToCstmrStmt><Nonsense/></BkToCstmrStmt></Document>",
         "does not follow its schema"),
    ],
)
async def test_bad_statements_are_refused_precisely_and_write_nothing(pool, raw, problem):
    with pytest.raises(StatementError, match=problem):
        await reconcile.import_statement(pool, raw)
    assert await pool.fetchval("select count(*) from ops_statements") == 0


def test_camt_in_another_currency_is_refused():
    raw = render(
        reconcile.Statement("camt.054", "S1", "A", dt.date(2025, 10, 1), dt.date(2025, 10, 1),
                            [Line("credit", 1000, dt.date(2025, 10, 1), "R1")]),
        "camt.054",
    ).replace(b'Ccy="IDR"', b'Ccy="EUR"')
    with pytest.raises(StatementError, match="currency EUR"):
        parse(raw)


STRAY_LINES = 20_000


async def test_a_large_statement_reconciles_as_exactly_as_a_small_one(pool, clock, ledger):
    """The planted statement with 20,000 unknown credits spread through it:
    the planted discrepancies are still found exactly, every stray line is
    bank_only, and camt.053 and CSV give the same items, line for line."""
    statement, expected, code_only = await planted_statement(pool, clock, ledger)
    strays = [Line("credit", 10_000 + k, today(clock), f"STRAY{k:06d}", f"PRQ-STRAY-{k}", "", "") for k in range(STRAY_LINES)]
    step = STRAY_LINES // len(statement.lines)
    lines = []
    for n, line in enumerate(statement.lines):
        lines += strays[n * step:(n + 1) * step] + [line]
    lines += strays[len(statement.lines) * step:]
    big = dataclasses.replace(statement, statement_ref="STMT-BIG", lines=lines)
    found_by_format = {}
    for fmt in ("camt.053", "csv"):
        summary, created = await reconcile.import_statement(pool, render(big, fmt), statement_ref="STMT-BIG")
        assert created and summary["entries"] == len(lines)
        assert (summary["matched"], summary["bank_only"], summary["ledger_only"], summary["amount_mismatch"]) == \
            (5, 1 + STRAY_LINES, 1, 1)
        assert summary["bank_credit_rupiah"] == sum(line.amount_rupiah for line in lines if line.direction == "credit")
        items = await reconcile.items(pool, summary["id"])
        planted = {(i["kind"], i["direction"], i["payment_id"]) for i in items
                   if i["kind"] != "matched" and not (i["bank_reference"] or "").startswith("STRAY")}
        assert planted == expected
        assert {i["kind"] for i in items if (i["bank_reference"] or "").startswith("STRAY")} == {"bank_only"}
        assert next(i for i in items if i["payment_id"] == code_only.payment_id)["matched_on"] == "payment_code"
        found_by_format[fmt] = [
            (i["kind"], i["direction"], i["matched_on"], i["line_no"], i["payment_id"], i["bank_amount_rupiah"],
             i["ledger_amount_rupiah"], i["bank_reference"], i["payment_code"],
             # camt has no empty EndToEndId: the renderer writes the ISO placeholder
             "" if i["end_to_end_id"] == "NOTPROVIDED" else i["end_to_end_id"])
            for i in items
        ]
    assert found_by_format["camt.053"] == found_by_format["csv"]


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        (b"<EndToEndId>", b"<Nonsense/><EndToEndId>", r"does not follow its schema: Ntry\[19999\]: Unknown property"),
        (b"<CdtDbtInd>CRDT</CdtDbtInd>", b"<CdtDbtInd>MAYBE</CdtDbtInd>", r"Ntry\[19999\]\.CdtDbtInd: 'MAYBE'"),
    ],
)
async def test_a_bad_entry_deep_in_a_large_statement_is_named_and_nothing_is_written(pool, clock, ledger, old, new, problem):
    statement = await reconcile.ledger_statement(pool, today(clock), today(clock), statement_ref="STMT-BAD")
    strays = [Line("credit", 10_000 + k, today(clock), f"STRAY{k:06d}", f"PRQ-STRAY-{k}") for k in range(STRAY_LINES)]
    raw = render(dataclasses.replace(statement, lines=statement.lines + strays), "camt.053")
    bad_at = 19_999
    start = -1
    for _ in range(bad_at):
        start = raw.index(b"<Ntry>", start + 1)
    end = raw.index(b"</Ntry>", start)
    raw = raw[:start] + raw[start:end].replace(old, new, 1) + raw[end:]
    with pytest.raises(StatementError, match=problem):
        await reconcile.import_statement(pool, raw)
    assert [await pool.fetchval(f"select count(*) from {t}") for t in TABLES] == [0, 0, 0]
