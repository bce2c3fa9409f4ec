"""A CSV or uniform camt statement is imported while it is read: each piece
of entries is paired and written while the next is read (issue 9). What is
stored, and what is refused, must be exactly what reading the whole file
first gives; and the statement's row, written before its lines now, may
change only in the transaction that inserts it (migration 0017)."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import gc

import asyncpg
import pytest
from structlog.testing import capture_logs

from gateway.domain.periods import WIB
from gateway.ops import reconcile
from gateway.ops.statements import Line, StatementError, parse, render, stream

PIECE = 2  # entries per piece: every statement below is several pieces


async def bank_statement(pool, clock, paid_ledger):
    """The ledger's own statement with what a bank gets wrong: a payment it
    never received, one it got short, one it lists twice (in different
    pieces), and money the ledger knows nothing about. Every line has the
    same shape (a bank reference and a remittance), so the file is uniform."""
    day = clock().astimezone(WIB).date()
    statement = await reconcile.ledger_statement(pool, day, day, statement_ref="STMT-STREAM")
    credits = [line for line in statement.lines if line.direction == "credit"]
    debits = [line for line in statement.lines if line.direction == "debit"]
    assert len(credits) == 4 and len(debits) == 1
    lines = [
        dataclasses.replace(credits[1], amount_rupiah=credits[1].amount_rupiah - 1000),  # short by Rp1.000
        credits[2],
        Line("credit", 77_000, day, "BREF-STRAY", "PRQ-STRAY", "", "IURAN BPJSTK 99999999999"),
        credits[3],
        debits[0],
        credits[2],  # listed twice: the second finds its payment taken
        Line("credit", 5_000, day, "BREF-STRAY-2", "PRQ-STRAY-2", "", "IURAN BPJSTK 99999999998"),
    ]  # credits[0] is missing: ledger_only
    return dataclasses.replace(statement, lines=lines)


def stored(items: list[dict]) -> list[tuple]:
    return [(i["item_no"], i["kind"], i["matched_on"], i["direction"], i["line_no"], i["bank_amount_rupiah"],
             i["payment_id"], i["npp"], i["ledger_amount_rupiah"]) for i in items]


def result(summary: dict) -> tuple:
    return tuple(summary[k] for k in ("entries", "matched", "bank_only", "ledger_only", "amount_mismatch",
                                      "bank_credit_rupiah", "bank_debit_rupiah", "from_date", "to_date"))


async def table_counts(pool) -> list[int]:
    """Rows in ops_statements, ops_statement_entries, ops_reconciliation_ledger_only."""
    return list(await pool.fetchrow(
        """select (select count(*) from ops_statements), (select count(*) from ops_statement_entries),
                  (select count(*) from ops_reconciliation_ledger_only)"""))


def read_whole(logs: list[dict]) -> list[str]:
    return [entry["reason"] for entry in logs if entry["event"] == "statement_read_whole"]


@pytest.fixture
def pieces_written(monkeypatch) -> list[int]:
    """The sizes of the pieces an import reads from `stream` (empty when it
    reads the file whole)."""
    sizes: list[int] = []
    real = reconcile.stream

    def counted(*args, **kwargs):
        streaming = real(*args, **kwargs)
        if streaming is not None:
            pieces = streaming.pieces

            def counted_pieces(n):
                for lines in pieces(n):
                    sizes.append(len(lines))
                    yield lines

            streaming.pieces = counted_pieces
        return streaming

    monkeypatch.setattr(reconcile, "stream", counted)
    return sizes


async def import_whole(pool, camt: bytes) -> dict:
    """The same camt statement without its period (FrToDt), under another
    id: a file `stream` declines, so it is read whole before anything is
    stored."""
    start, end = camt.index(b"<FrToDt>"), camt.index(b"</FrToDt>") + len(b"</FrToDt>")
    whole = (camt[:start] + camt[end:]).replace(b"<Id>STMT-STREAM</Id>", b"<Id>STMT-WHOLE</Id>")
    assert stream(whole) is None
    summary, created = await reconcile.import_statement(pool, whole)
    assert created and summary["statement_ref"] == "STMT-WHOLE"
    return summary


async def test_a_streamed_import_stores_what_reading_the_file_whole_stores(pool, clock, paid_ledger, pieces_written):
    statement = await bank_statement(pool, clock, paid_ledger)
    camt = render(statement, "camt.053")
    with capture_logs() as logs:
        summary, created = await reconcile.import_statement(pool, camt, entries_per_piece=PIECE)
    assert created and read_whole(logs) == []
    assert pieces_written == [2, 2, 2, 1]  # 7 entries, 2 a piece: it streamed
    whole = await import_whole(pool, camt)
    assert result(summary) == result(whole)
    assert (summary["matched"], summary["bank_only"], summary["ledger_only"], summary["amount_mismatch"]) == (3, 3, 1, 1)
    assert summary["entries"] == 7
    streamed_items = await reconcile.items(pool, summary["id"])
    assert stored(streamed_items) == stored(await reconcile.items(pool, whole["id"]))
    # The line listed twice: the first takes the payment, the second is the bank's alone.
    twice = [i for i in streamed_items if i["bank_reference"] == statement.lines[1].bank_reference]
    assert [(i["line_no"], i["kind"]) for i in twice] == [(2, "matched"), (6, "bank_only")]


async def test_a_line_booked_outside_the_period_is_read_whole(pool, clock, paid_ledger):
    statement = await bank_statement(pool, clock, paid_ledger)
    late = dataclasses.replace(statement.lines[-1], booked_on=statement.to_date + dt.timedelta(days=1))
    statement = dataclasses.replace(statement, lines=[*statement.lines[:-1], late])
    camt = render(statement, "camt.053")  # FrToDt still says one day
    with capture_logs() as logs:
        summary, created = await reconcile.import_statement(pool, camt, entries_per_piece=PIECE)
    assert created and read_whole(logs) == ["a line is booked outside the statement's period"]
    whole = parse(camt)
    assert (summary["from_date"], summary["to_date"]) == (whole.from_date.isoformat(), whole.to_date.isoformat())
    assert summary["to_date"] == late.booked_on.isoformat()
    pairing = reconcile.pair(whole, await reconcile.expected_payments(pool, whole.from_date, whole.to_date))
    assert (summary["matched"], summary["bank_only"], summary["ledger_only"]) == \
        (pairing.counts["matched"], pairing.counts["bank_only"], pairing.counts["ledger_only"])


async def test_a_later_entry_of_another_shape_is_read_whole(pool, clock, paid_ledger):
    statement = await bank_statement(pool, clock, paid_ledger)
    camt = render(statement, "camt.053")
    last = camt.rindex(b"<NtryDtls>")
    camt = camt[:last] + b"<AddtlNtryInf>IURAN</AddtlNtryInf>" + camt[last:]
    with capture_logs() as logs:
        summary, created = await reconcile.import_statement(pool, camt, entries_per_piece=PIECE)
    assert created and read_whole(logs) == ["an entry is not shaped as the first"]
    whole = await import_whole(pool, render(statement, "camt.053"))
    assert result(summary) == result(whole)
    assert stored(await reconcile.items(pool, summary["id"])) == stored(await reconcile.items(pool, whole["id"]))


async def test_a_refusal_in_the_last_piece_writes_nothing(pool, clock, paid_ledger):
    statement = await bank_statement(pool, clock, paid_ledger)
    camt = render(statement, "camt.053")
    last = camt.rindex(b"<Ntry>")
    camt = camt[:last] + camt[last:].replace(b".00</Amt>", b".50</Amt>")
    with pytest.raises(StatementError) as whole:
        parse(camt)
    assert "Ntry[7]" in whole.value.detail and "fraction of a rupiah" in whole.value.detail
    before = await table_counts(pool)
    with capture_logs() as logs, pytest.raises(StatementError) as refused:
        await reconcile.import_statement(pool, camt, entries_per_piece=PIECE)
    assert (refused.value.detail, refused.value.errors) == (whole.value.detail, whole.value.errors)
    assert read_whole(logs) == []  # refused while streaming, not after reading the file whole
    assert await table_counts(pool) == before


async def test_a_csv_statement_streams_to_what_the_camt_one_stores(pool, clock, paid_ledger, pieces_written):
    statement = await bank_statement(pool, clock, paid_ledger)
    csv = render(statement, "csv")
    with capture_logs() as logs:
        summary, created = await reconcile.import_statement(pool, csv, entries_per_piece=PIECE, statement_ref="STMT-CSV")
    assert created and read_whole(logs) == []
    assert pieces_written == [2, 2, 2, 1]
    whole = await import_whole(pool, render(statement, "camt.053"))
    assert result(summary) == result(whole)
    assert stored(await reconcile.items(pool, summary["id"])) == stored(await reconcile.items(pool, whole["id"]))


@pytest.mark.parametrize(("last_row", "problem"), [
    ("2025-10-02,sideways,1000", "line 9, direction: 'sideways' is not credit or debit"),
    ("02/10/2025,credit,1000", "line 9, booking_date: '02/10/2025' is not a date (YYYY-MM-DD)"),
    ("2025-10-02,credit,10.50", "line 9.amount_rupiah: 10.50 has a fraction of a rupiah"),
    ("2025-10-02,credit,1E+1000000", "line 9.amount_rupiah: 1E+1000000 is too large; amounts have at most 18 digits"),
    ("2025-10-02,credit,Infinity", "line 9.amount_rupiah: 'Infinity' is not an amount"),
    ("2025-10-02,credit,1000,R,E,1,x,extra", "line 9: more fields than columns"),
    ('2025-10-02,credit,1000,R,E,,"' + "x" * 200_000 + '"', "line 9: the CSV cannot be read: field larger than"),
])
async def test_a_csv_refusal_in_the_last_piece_writes_nothing(pool, clock, paid_ledger, last_row, problem):
    # The bad row is booked on the ledger's own day: a statement may cover at most 366 days.
    last_row = last_row.replace("2025-10-02", clock().astimezone(WIB).date().isoformat())
    csv = render(await bank_statement(pool, clock, paid_ledger), "csv") + last_row.encode() + b"\n"
    with pytest.raises(StatementError) as whole:
        parse(csv)
    assert whole.value.detail.startswith(problem)
    before = await table_counts(pool)
    with pytest.raises(StatementError) as refused:
        await reconcile.import_statement(pool, csv, entries_per_piece=PIECE)
    assert (refused.value.detail, refused.value.errors) == (whole.value.detail, whole.value.errors)
    assert await table_counts(pool) == before


async def test_the_same_file_imported_twice_at_once_is_stored_once(pool, clock, paid_ledger):
    camt = render(await bank_statement(pool, clock, paid_ledger), "camt.053")
    (first, first_created), (second, second_created) = await asyncio.gather(
        reconcile.import_statement(pool, camt, entries_per_piece=PIECE),
        reconcile.import_statement(pool, camt, entries_per_piece=PIECE),
    )
    assert sorted([first_created, second_created]) == [False, True]
    assert first == second
    assert await table_counts(pool) == [1, 7, 1]


# ------------------------------------------------ migration 0017, plain SQL --

INSERT = """insert into ops_statements (sha256, format, statement_ref, from_date, to_date, entries, matched,
                                        bank_only, ledger_only, amount_mismatch, bank_credit_rupiah, bank_debit_rupiah)
            values (sha256($1::bytea), 'csv', $1::text, current_date, current_date, 0, 0, 0, 0, 0, 0, 0) returning id"""
RESULT = "update ops_statements set entries = 1, matched = 1, bank_credit_rupiah = 5000 where id = $1"


async def test_the_inserting_transaction_alone_writes_the_result(pool):
    async with pool.acquire() as conn, conn.transaction():
        statement_id = await conn.fetchval(INSERT, b"S-1")
        await conn.execute(RESULT, statement_id)
    assert (await pool.fetchrow("select entries, matched, bank_credit_rupiah from ops_statements where id = $1",
                                statement_id)) == (1, 1, 5000)
    # Committed: never again.
    for sql in (RESULT, "update ops_statements set matched = 0, bank_only = 1 where id = $1",
                "delete from ops_statements where id = $1"):
        with pytest.raises(asyncpg.CheckViolationError, match="written once by its import"):
            await pool.execute(sql, statement_id)


@pytest.mark.parametrize("sql", [
    "update ops_statements set statement_ref = 'OTHER' where id = $1",
    "update ops_statements set to_date = to_date + 1 where id = $1",
    "update ops_statements set sha256 = sha256('x'::bytea) where id = $1",
    "delete from ops_statements where id = $1",
])
async def test_the_inserting_transaction_cannot_change_what_the_statement_is(pool, sql):
    async with pool.acquire() as conn, conn.transaction():
        statement_id = await conn.fetchval(INSERT, b"S-2")
        with pytest.raises(asyncpg.CheckViolationError, match="written once by its import"):
            await conn.execute(sql, statement_id)


async def test_the_result_is_written_once_even_by_its_own_transaction(pool):
    # Once it holds a result (entries > 0) the row is a committed statement's
    # look-alike: after transaction ids wrap around, an xmin alone would not tell.
    async with pool.acquire() as conn, conn.transaction():
        statement_id = await conn.fetchval(INSERT, b"S-5")
        await conn.execute(RESULT, statement_id)
        with pytest.raises(asyncpg.CheckViolationError, match="written once by its import"):
            await conn.execute("update ops_statements set bank_credit_rupiah = 1 where id = $1", statement_id)


async def test_the_result_still_has_to_add_up(pool):
    async with pool.acquire() as conn, conn.transaction():
        statement_id = await conn.fetchval(INSERT, b"S-3")
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute("update ops_statements set entries = 2, matched = 1 where id = $1", statement_id)


async def test_a_row_inserted_in_a_savepoint_is_not_the_transaction_s_own(pool):
    async with pool.acquire() as conn, conn.transaction():
        async with conn.transaction():  # a savepoint: its own (sub)transaction id
            statement_id = await conn.fetchval(INSERT, b"S-4")
        with pytest.raises(asyncpg.CheckViolationError, match="written once by its import"):
            await conn.execute(RESULT, statement_id)



async def test_a_cancelled_import_writes_nothing_and_leaves_the_service_working(pool, clock, paid_ledger):
    """A client that goes away mid-import (its request task cancelled) while a
    piece is being written: nothing stays, the garbage collector runs again,
    and the same file imports afterwards."""
    camt = render(await bank_statement(pool, clock, paid_ledger), "camt.053")
    statement = parse(camt)
    before = await table_counts(pool)
    importing: list[asyncio.Task] = []

    def pieces():
        yield statement.lines[:2]
        yield statement.lines[2:4]
        importing[0].cancel()  # lands at the import's next await, with pieces sent or in flight
        yield statement.lines[4:]

    importing.append(asyncio.create_task(reconcile._store(pool, statement, pieces(), "", "")))
    with pytest.raises(asyncio.CancelledError):
        await importing[0]
    assert gc.isenabled()
    assert await table_counts(pool) == before
    summary, created = await reconcile.import_statement(pool, camt)
    assert created and summary["entries"] == 7
