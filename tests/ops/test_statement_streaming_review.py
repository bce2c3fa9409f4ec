"""Independent review of streamed statement imports (abdf1af..5ec6ba8):
reproducers for the defects it found. Each test failed on 5ec6ba8 and
passes since the fixes that followed."""

from __future__ import annotations

import asyncio
import datetime as dt
import gc

import pytest

from gateway.ops import reconcile
from gateway.ops.statements import Line, Statement, StatementError, parse, render

DAY = dt.date(2025, 10, 1)
CSV_HEADER = b"booking_date,direction,amount_rupiah,remittance\n"


def camt(lines: list[Line], ref: str = "STMT-REVIEW") -> bytes:
    return render(Statement("camt.053", ref, "ACC-1", DAY, DAY, lines), "camt.053")


async def table_counts(pool) -> list[int]:
    return list(await pool.fetchrow(
        """select (select count(*) from ops_statements), (select count(*) from ops_statement_entries),
                  (select count(*) from ops_reconciliation_ledger_only)"""))


async def test_a_cancel_while_the_payments_are_looked_up_is_a_clean_cancel(pool, monkeypatch):
    """`_reconcile_into` starts the payments lookup as a task, then awaits
    `asyncio.sleep(0)`. A cancel arriving there (client gone, server
    shutdown after shutdown_timeout, an asyncio.timeout around the import)
    leaves the lookup task running on the connection: the transaction's
    ROLLBACK then fails with InterfaceError ("another operation is in
    progress"), which replaces the CancelledError, and the pool has to
    terminate the connection. The writer task has the same hazard handled
    (`_write_lines`); the lookup task does not."""
    raw = camt([Line("credit", 1000 + i, DAY, f"R{i}", f"E{i}", "", "x") for i in range(10)])
    real = reconcile.expected_payments

    def cancel_here(*args, **kwargs):
        asyncio.current_task().cancel()  # delivered at the next await: the sleep(0) after create_task
        return real(*args, **kwargs)

    monkeypatch.setattr(reconcile, "expected_payments", cancel_here)
    with pytest.raises(asyncio.CancelledError):
        await asyncio.create_task(reconcile.import_statement(pool, raw))
    monkeypatch.undo()
    assert gc.isenabled()
    assert await table_counts(pool) == [0, 0, 0]
    summary, created = await reconcile.import_statement(pool, raw)
    assert created and summary["entries"] == 10


async def test_a_broken_csv_claiming_an_imported_statement_id_is_refused_as_parse_refuses(pool):
    """Streaming inserts the statement's row before reading any line; when
    the statement id is taken, `_existing` raises StatementConflict (409)
    without reading the file. Before (and when read whole) the file's own
    error came first (422): docs/ops.md says the refusals are parse's."""
    good = CSV_HEADER + b"2025-10-01,credit,1000,a\n2025-10-01,credit,2000,b\n"
    await reconcile.import_statement(pool, good, statement_ref="S-1")
    broken = good + b"2025-10-01,credit,10.50,c\n"
    with pytest.raises(StatementError) as whole:
        parse(broken, statement_ref="S-1")
    with pytest.raises(StatementError) as refused:
        await reconcile.import_statement(pool, broken, statement_ref="S-1")
    assert type(refused.value) is StatementError  # not reconcile.StatementConflict
    assert refused.value.detail == whole.value.detail == \
        "line 4.amount_rupiah: 10.50 has a fraction of a rupiah; rupiah amounts are whole"


def test_a_csv_refuses_the_first_bad_line_before_a_later_oversized_field():
    """`_CsvTable.read` splits every row before any is checked, so a field
    over the csv module's 128 KiB limit on a later line is reported instead
    of the first bad line (abdf1af reported line 3). docs/ops.md: "the
    first error in line order is the one reported"."""
    raw = CSV_HEADER + b"2025-10-01,credit,1000,a\n2025-10-01,sideways,1000,b\n" \
        + b'2025-10-01,credit,1000,"' + b"x" * 200_000 + b'"\n'
    with pytest.raises(StatementError) as refused:
        parse(raw, "csv")
    assert refused.value.detail == "line 3, direction: 'sideways' is not credit or debit"


@pytest.mark.parametrize("amount", ["0E+30", "-5E+20"])
def test_a_zero_or_negative_amount_is_not_called_too_large(amount):
    """whole_rupiah checks the digit count before the sign: "0E+30" (zero)
    and "-5E+20" are now "too large; amounts have at most 18 digits";
    abdf1af said "must be positive"."""
    with pytest.raises(StatementError) as refused:
        parse(CSV_HEADER + f"2025-10-01,credit,{amount},a\n".encode(), "csv")
    assert "must be positive" in refused.value.detail


# Pre-existing (also at abdf1af), still reachable: bad input that crashes
# with a database error instead of a StatementError (HTTP 500, not 422).

async def test_bank_totals_beyond_bigint_are_refused_not_crashed(pool):
    """Every amount has at most 18 digits now, but bank_credit_rupiah is a
    bigint: 11 lines of 999,999,999,999,999,999 overflow it; asyncpg raises
    DataError at the final UPDATE, after every line was COPYed."""
    big = 999_999_999_999_999_999
    raw = camt([Line("credit", big, DAY, f"R{i}", f"E{i}", "", "x") for i in range(11)])
    with pytest.raises(StatementError):
        await reconcile.import_statement(pool, raw)
    assert await table_counts(pool) == [0, 0, 0]


async def test_a_nul_in_a_csv_field_is_refused_not_crashed(pool):
    """Python's csv (3.11+) keeps NUL; PostgreSQL text cannot hold it: the
    writer task's COPY raises CharacterNotInRepertoireError."""
    raw = CSV_HEADER + b"2025-10-01,credit,1000,a\x00b\n"
    with pytest.raises(StatementError):
        await reconcile.import_statement(pool, raw, fmt="csv")
    assert await table_counts(pool) == [0, 0, 0]
