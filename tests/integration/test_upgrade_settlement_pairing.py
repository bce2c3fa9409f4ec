"""Upgrading a database with imported statements to migration 0014 (the
pairing moves onto the statement lines): every reconciliation reads back
exactly as before, JSON and CSV, item numbers, order and kind filters."""

from __future__ import annotations

import dataclasses

import asyncpg

from bank_adapters.base import PayCommand, PayOutcome, ReverseCommand
from gateway.domain.periods import WIB
from gateway.ops import reconcile
from gateway.ops.statements import Line, parse, render
from gateway.service.payments import PaymentsService
from gateway.store import database
from tests.conftest import BillFactory, TestClock
from tests.integration.upgrades import OldDatabase, database_before

PAIRING_MIGRATION = "gateway/0014_pairing_on_statement_entries.sql"
# Today's PaymentsService writes the old database's payments, so the old
# database has the posting functions it calls, as they answer today (0018's,
# and 0025's answer with the bill's period and due date); neither changes
# anything 0014 reads.
PAYMENT_PATHS = ("gateway/0018_pay_batch_set_based.sql", "gateway/0025_pay_answers_period_and_due_date.sql")


def _from_pairing_on(version: str) -> bool:
    return version.startswith("gateway/") and version >= PAIRING_MIGRATION and version not in PAYMENT_PATHS

# The reading of the items before 0014, word for word.
# The items as read from the tables before 0014. A ledger_only item shows its
# payment's bank reference, as reconcile.items() reads it since session 9.
OLD_ITEMS_SQL = """
    select i.item_no, i.kind, i.matched_on, i.direction, i.line_no, e.booked_on,
           coalesce(e.bank_reference, p.bank_reference) as bank_reference,
           e.end_to_end_id, coalesce(nullif(e.payment_code, ''), p.payment_code) as payment_code,
           i.bank_amount_rupiah, i.payment_id, p.channel, p.idempotency_key, i.npp, i.ledger_amount_rupiah,
           coalesce(i.bank_amount_rupiah, 0) - coalesce(i.ledger_amount_rupiah, 0) as difference_rupiah
      from ops_reconciliation_items i
      left join ops_statement_entries e on e.statement_id = i.statement_id and e.line_no = i.line_no
      left join payments p on p.id = i.payment_id
     where i.statement_id = $1 and ($2::text is null or i.kind = $2)
     order by i.item_no"""


async def _import_the_old_way(conn: asyncpg.Connection, raw: bytes, **names) -> int:
    """What import_statement wrote before 0014: the lines, and one item per
    line and per unpaired payment."""
    statement = parse(raw, **names)
    payments = await reconcile.expected_payments(conn, statement.from_date, statement.to_date)
    items = reconcile.match(statement, payments)
    counts = {kind: sum(1 for i in items if i.kind == kind) for kind in reconcile.KINDS}
    async with conn.transaction():
        statement_id = await conn.fetchval(
            """insert into ops_statements (sha256, format, statement_ref, account, from_date, to_date, entries, matched,
                   bank_only, ledger_only, amount_mismatch, bank_credit_rupiah, bank_debit_rupiah)
               values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) returning id""",
            statement.sha256, statement.format, statement.statement_ref, statement.account, statement.from_date,
            statement.to_date, len(statement.lines), counts["matched"], counts["bank_only"], counts["ledger_only"],
            counts["amount_mismatch"],
            sum(line.amount_rupiah for line in statement.lines if line.direction == "credit"),
            sum(line.amount_rupiah for line in statement.lines if line.direction == "debit"),
        )
        await conn.copy_records_to_table(
            "ops_statement_entries",
            records=[(statement_id, n, line.direction, line.amount_rupiah, line.booked_on, line.bank_reference,
                      line.end_to_end_id, line.payment_code, line.remittance)
                     for n, line in enumerate(statement.lines, start=1)],
            columns=["statement_id", "line_no", "direction", "amount_rupiah", "booked_on", "bank_reference",
                     "end_to_end_id", "payment_code", "remittance"],
        )
        await conn.copy_records_to_table(
            "ops_reconciliation_items",
            records=[(statement_id, n, i.kind, i.matched_on, i.direction, i.line_no, i.payment_id, i.npp,
                      i.bank_amount_rupiah, i.ledger_amount_rupiah) for n, i in enumerate(items, start=1)],
            columns=["statement_id", "item_no", "kind", "matched_on", "direction", "line_no", "payment_id", "npp",
                     "bank_amount_rupiah", "ledger_amount_rupiah"],
        )
    return statement_id


async def _old_items(conn, statement_id: int, kind: str | None = None) -> list[dict]:
    rows = await conn.fetch(OLD_ITEMS_SQL, statement_id, kind)
    return [{k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in r.items()} for r in rows]


async def test_upgrade_keeps_every_reconciliation_item(admin_url):
    async with database_before(admin_url, _from_pairing_on) as old:
        await _upgrade_keeps_every_reconciliation_item(old)


async def _upgrade_keeps_every_reconciliation_item(old: OldDatabase) -> None:
    conn = old.conn
    pool = await database.create_pool(old.url, size_min=1, size_max=4)
    try:

        # A ledger: eight payments, two of them reversed the same day.
        clock = TestClock()
        bills, payments = BillFactory(pool, clock), PaymentsService(pool, clock=clock)
        paid = []
        for n in range(8):
            info = await bills.create(workers=2)
            result = await payments.pay(PayCommand(info.payment_code, info.total_rupiah, "snap:BANKKALBAR", f"UP-{n}",
                                                   f"UPREF{n:04d}"))
            assert result.outcome == PayOutcome.POSTED
            paid.append(result)
        for n in (6, 7):
            await payments.reverse(ReverseCommand("snap:BANKKALBAR", f"UP-{n}"))
        await payments.close()
        today = clock().astimezone(WIB).date()
        agreed = await reconcile.ledger_statement(pool, today, today, statement_ref="UP-AGREED")
        # Every kind, both directions: payment 0 and reversal 7 missing, payment 1 short, payment 2 by
        # code alone, and two lines the ledger does not know (a credit and a debit).
        lines = []
        for line in agreed.lines:
            key = (line.bank_reference, line.direction)
            if key in {("UPREF0000", "credit"), ("UPREF0007", "debit")}:
                continue
            if key == ("UPREF0001", "credit"):
                line = dataclasses.replace(line, amount_rupiah=line.amount_rupiah - 500)
            if key == ("UPREF0002", "credit"):
                line = dataclasses.replace(line, bank_reference="", end_to_end_id="")
            lines.append(line)
        lines.insert(2, Line("credit", 77_000, today, "UP-STRAY", "", "", "IURAN BPJSTK 99999999999"))
        lines.insert(0, Line("debit", 12_000, today, "UP-STRAY-D"))
        planted = dataclasses.replace(agreed, statement_ref="UP-PLANTED", lines=lines)
        old_ids = [
            await _import_the_old_way(conn, render(planted, "camt.053")),
            await _import_the_old_way(conn, render(agreed, "csv"), statement_ref="UP-AGREED"),
        ]
        kinds = (None, *reconcile.KINDS)
        before = {(i, kind): await _old_items(conn, i, kind) for i in old_ids for kind in kinds}
        assert {item["kind"] for item in before[(old_ids[0], None)]} == set(reconcile.KINDS)
        assert {item["direction"] for item in before[(old_ids[0], "ledger_only")]} == {"credit", "debit"}
        summaries = [await reconcile.get_statement(conn, i) for i in old_ids]

        assert sorted(await old.upgrade()) == sorted(old.later)

        for i, summary in zip(old_ids, summaries):
            assert await reconcile.get_statement(conn, i) == summary
            for kind in kinds:
                assert await reconcile.items(conn, i, kind) == before[(i, kind)], (i, kind)
            assert reconcile.items_csv(await reconcile.items(conn, i)) == reconcile.items_csv(before[(i, None)])
        # Only the payments the bank did not list keep rows of their own.
        assert await conn.fetchval("select count(*) from ops_reconciliation_ledger_only") == 2
        # A statement imported after the upgrade reads as the same statement imported before it.
        summary, created = await reconcile.import_statement(pool, render(planted, "camt.053").replace(
            b"UP-PLANTED", b"UP-PLANTED-AGAIN"))
        assert created
        assert await reconcile.items(pool, summary["id"]) == before[(old_ids[0], None)]
    finally:
        await pool.close()


async def test_an_upgrade_that_would_change_an_item_stops_and_changes_nothing(admin_url):
    """Items written outside Kanal's import (here: numbers out of line order)
    cannot be carried over exactly: the upgrade refuses instead of
    renumbering them."""
    async with database_before(admin_url, _from_pairing_on) as old:
        conn = old.conn
        statement_id = await conn.fetchval(
            """insert into ops_statements (sha256, format, statement_ref, from_date, to_date, entries, matched,
                   bank_only, ledger_only, amount_mismatch, bank_credit_rupiah, bank_debit_rupiah)
               values (sha256('x'), 'csv', 'HAND', current_date, current_date, 2, 0, 2, 0, 0, 3000, 0) returning id""")
        await conn.execute(
            """insert into ops_statement_entries (statement_id, line_no, direction, amount_rupiah, booked_on)
               values ($1, 1, 'credit', 1000, current_date), ($1, 2, 'credit', 2000, current_date)""", statement_id)
        await conn.execute(
            """insert into ops_reconciliation_items (statement_id, item_no, kind, direction, line_no, bank_amount_rupiah)
               values ($1, 1, 'bank_only', 'credit', 2, 2000), ($1, 2, 'bank_only', 'credit', 1, 1000)""", statement_id)
        try:
            await old.upgrade()
        except asyncpg.DataError as error:
            assert "would read back differently" in str(error)
        else:
            raise AssertionError("the upgrade renumbered items")
        assert await conn.fetchval("select count(*) from ops_reconciliation_items") == 2
        assert await conn.fetchval("select to_regclass('ops_reconciliation_ledger_only') is null")
