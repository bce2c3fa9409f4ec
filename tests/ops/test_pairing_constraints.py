"""Since migration 0014 a statement line carries its own pairing, and only
ledger_only items have rows of their own. Every guarantee the old
ops_reconciliation_items table gave still refuses a bad row written with
plain SQL, as any code path could write it."""

from __future__ import annotations

import datetime as dt

import asyncpg
import pytest

from gateway.domain.periods import WIB
from gateway.ops import reconcile
from gateway.ops.statements import render

DAY = dt.date(2025, 10, 1)
COLUMNS = ["statement_id", "line_no", "direction", "amount_rupiah", "booked_on",
           "kind", "matched_on", "payment_id", "npp", "ledger_amount_rupiah"]


@pytest.fixture
async def imported(pool, paid_ledger, clock):
    """A statement imported by Kanal, and one of the ledger's payments."""
    today = clock().astimezone(WIB).date()
    statement = await reconcile.ledger_statement(pool, today, today, statement_ref="STMT-CHECKS")
    summary, created = await reconcile.import_statement(pool, render(statement, "csv"))
    assert created and summary["matched"] == 5  # four payments and one reversal
    payment = await pool.fetchrow("select id, npp, amount_rupiah from payments order by id limit 1")
    return summary["id"], payment


async def _write(pool, statement_id, *rows):
    """Lines 100, 101, … of the statement, in one COPY (as the import writes them)."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.copy_records_to_table(
            "ops_statement_entries",
            records=[(statement_id, 100 + n, "credit", amount, DAY, kind, key, payment_id, npp, ledger)
                     for n, (amount, kind, key, payment_id, npp, ledger) in enumerate(rows)],
            columns=COLUMNS,
        )


async def _entry_count(pool) -> int:
    return await pool.fetchval("select count(*) from ops_statement_entries")


async def test_good_pairings_are_accepted(pool, imported):
    statement_id, p = imported
    await _write(pool, statement_id,
                 (p["amount_rupiah"], "matched", "bank_reference", p["id"], p["npp"], p["amount_rupiah"]),
                 (p["amount_rupiah"] + 1, "amount_mismatch", "payment_code", p["id"], p["npp"], p["amount_rupiah"]),
                 (5000, "bank_only", None, None, None, None),
                 (5000, None, None, None, None, None))  # a line without a reconciliation
    items = await pool.fetch("select kind from ops_reconciliation_items where statement_id = $1 and line_no >= 100 "
                             "order by item_no", statement_id)
    assert [r["kind"] for r in items] == ["matched", "amount_mismatch", "bank_only"]


@pytest.mark.parametrize(
    ("row", "constraint"),
    [
        ((1000, "ledger_only", "bank_reference", "P", "N", 1000), "ops_statement_entries_pairing_kind"),
        ((1000, "paired", "bank_reference", "P", "N", 1000), "ops_statement_entries_pairing_kind"),
        ((1000, "matched", "npp", "P", "N", 1000), "ops_statement_entries_pairing_matched_on"),
        ((1000, "bank_only", None, "P", "N", 1000), "ops_statement_entries_pairing_payment"),
        ((1000, "matched", "bank_reference", None, None, None), "ops_statement_entries_pairing_payment"),
        ((1000, "matched", None, "P", "N", 1000), "ops_statement_entries_pairing_key"),
        ((1000, "bank_only", "payment_code", None, None, None), "ops_statement_entries_pairing_key"),
        ((1000, "matched", "bank_reference", "P", "N", None), "ops_statement_entries_pairing_ledger_amount"),
        ((1000, "matched", "bank_reference", "P", "N", 999), "ops_statement_entries_pairing_matched_amount"),
        ((1000, "amount_mismatch", "bank_reference", "P", "N", 1000), "ops_statement_entries_pairing_mismatched_amount"),
        ((1000, None, "bank_reference", None, None, None), "ops_statement_entries_pairing_unreconciled"),
        ((1000, None, None, None, "N", None), "ops_statement_entries_pairing_unreconciled"),
    ],
)
async def test_a_bad_pairing_is_refused_by_its_check(pool, imported, row, constraint):
    statement_id, p = imported
    row = tuple(p["id"] if v == "P" else p["npp"] if v == "N" else v for v in row)
    before = await _entry_count(pool)
    with pytest.raises(asyncpg.CheckViolationError) as refused:
        await _write(pool, statement_id, row)
    assert refused.value.constraint_name == constraint
    assert await _entry_count(pool) == before


async def test_a_line_naming_a_missing_payment_is_refused_as_a_foreign_key(pool, imported):
    statement_id, p = imported
    good = (p["amount_rupiah"], "matched", "bank_reference", p["id"], p["npp"], p["amount_rupiah"])
    bad = (1000, "matched", "bank_reference", 987_654_321, "KB000000", 1000)
    before = await _entry_count(pool)
    for rows in ((bad,), (good,) * 3000 + (bad,) + (good,) * 10):  # alone, and deep in a big COPY
        with pytest.raises(asyncpg.ForeignKeyViolationError) as refused:
            await _write(pool, statement_id, *rows)
        assert refused.value.constraint_name == "ops_statement_entries_payment_id_fkey"
        assert "987654321" in refused.value.detail
    # Under REPEATABLE READ too.
    async with pool.acquire() as conn:
        with pytest.raises(asyncpg.ForeignKeyViolationError):
            async with conn.transaction(isolation="repeatable_read"):
                await conn.execute(
                    """insert into ops_statement_entries (statement_id, line_no, direction, amount_rupiah, booked_on,
                           kind, matched_on, payment_id, npp, ledger_amount_rupiah)
                       values ($1, 200, 'credit', 1000, $2, 'matched', 'bank_reference', 987654321, 'X', 1000)""",
                    statement_id, DAY)
    assert await _entry_count(pool) == before


async def test_a_line_of_a_missing_statement_is_refused(pool, imported):
    _, p = imported
    with pytest.raises(asyncpg.ForeignKeyViolationError) as refused:
        await _write(pool, 987_654, (1000, "bank_only", None, None, None, None))
    assert refused.value.constraint_name == "ops_statement_entries_statement_id_fkey"


async def _ledger_only(pool, statement_id, item_no, payment_id, direction="credit"):
    await pool.execute(
        """insert into ops_reconciliation_ledger_only (statement_id, item_no, direction, payment_id, npp,
               ledger_amount_rupiah) values ($1, $2, $3, $4, 'KB000000', 1000)""",
        statement_id, item_no, direction, payment_id)


async def test_ledger_only_rows_keep_their_references_and_checks(pool, imported):
    statement_id, p = imported
    with pytest.raises(asyncpg.ForeignKeyViolationError, match="ops_reconciliation_ledger_only_payment_id_fkey"):
        await _ledger_only(pool, statement_id, 50, 987_654_321)
    with pytest.raises(asyncpg.ForeignKeyViolationError, match="ops_reconciliation_ledger_only_statement_id_fkey"):
        await _ledger_only(pool, 987_654, 50, p["id"])
    with pytest.raises(asyncpg.CheckViolationError):
        await _ledger_only(pool, statement_id, 50, p["id"], direction="sideways")
    with pytest.raises(asyncpg.CheckViolationError):
        await _ledger_only(pool, statement_id, 0, p["id"])
    await _ledger_only(pool, statement_id, 50, p["id"])
    with pytest.raises(asyncpg.UniqueViolationError):
        await _ledger_only(pool, statement_id, 50, p["id"])


async def test_lines_and_items_never_change(pool, imported):
    statement_id, p = imported
    await _ledger_only(pool, statement_id, 50, p["id"])
    for sql in ("update ops_statement_entries set kind = 'bank_only', matched_on = null, payment_id = null, npp = null, "
                "ledger_amount_rupiah = null where statement_id = $1",
                "delete from ops_statement_entries where statement_id = $1",
                "update ops_reconciliation_ledger_only set ledger_amount_rupiah = 1 where statement_id = $1",
                "delete from ops_reconciliation_ledger_only where statement_id = $1"):
        with pytest.raises(asyncpg.CheckViolationError, match="written once by its import"):
            await pool.execute(sql, statement_id)
    # The items are a view: nothing writes them directly.
    with pytest.raises(asyncpg.PostgresError):
        await pool.execute("insert into ops_reconciliation_items (statement_id, item_no, kind, direction) "
                           "values ($1, 99, 'bank_only', 'credit')", statement_id)


async def _payment_only_a_line_names(pool, imported) -> int:
    """A payment row (reversed, without postings) that only a statement line references."""
    statement_id, p = imported
    bill = await pool.fetchrow("select bill_id, payment_code, npp from payments where id = $1", p["id"])
    payment_id = await pool.fetchval(
        """insert into payments (channel, idempotency_key, bill_id, payment_code, npp, amount_rupiah, status, reversed_at)
           values ('test', 'ONLY-A-LINE', $1, $2, $3, 1000, 'reversed', now()) returning id""",
        bill["bill_id"], bill["payment_code"], bill["npp"])
    await _write(pool, statement_id, (1000, "matched", "bank_reference", payment_id, bill["npp"], 1000))
    return payment_id


async def test_a_payment_a_line_names_cannot_be_deleted_rekeyed_or_truncated(pool, imported):
    payment_id = await _payment_only_a_line_names(pool, imported)
    with pytest.raises(asyncpg.ForeignKeyViolationError) as refused:
        await pool.execute("delete from payments where id = $1", payment_id)
    assert refused.value.constraint_name == "ops_statement_entries_payment_id_fkey"
    with pytest.raises(asyncpg.ForeignKeyViolationError) as refused:
        await pool.execute("update payments set id = default where id = $1", payment_id)
    assert refused.value.constraint_name == "ops_statement_entries_payment_id_fkey"
    with pytest.raises(asyncpg.FeatureNotSupportedError, match="ops_statement_entries"):
        await pool.execute("truncate payments cascade")
    async with pool.acquire() as conn:
        with pytest.raises(asyncpg.FeatureNotSupportedError, match="READ COMMITTED"):
            async with conn.transaction(isolation="repeatable_read"):
                await conn.execute("delete from payments where id = $1", payment_id)
    assert await pool.fetchval("select count(*) from payments where id = $1", payment_id) == 1
    # A payment no line names can still go.
    spare = await pool.fetchval(
        """insert into payments (channel, idempotency_key, bill_id, payment_code, npp, amount_rupiah, status, reversed_at)
           select 'test', 'SPARE', bill_id, payment_code, npp, 1000, 'reversed', now() from payments where id = $1
           returning id""", payment_id)
    await pool.execute("delete from payments where id = $1", spare)
