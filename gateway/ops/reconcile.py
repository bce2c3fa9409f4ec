"""Reconciliation: a bank's settlement statement against the ledger.

The statement covers days (Asia/Pontianak). Every payment posted on those
days is expected as a credit line, and every payment reversed on those days
as a debit line. Lines and payments are paired on the strongest key first
(ledger-notes.md):

1. the bank's reference (`AcctSvcrRef`, SNAP `referenceNo`, ISO 8583 RRN)
   equals the payment's `bank_reference`;
2. the payer's end-to-end id equals the payment's idempotency key (SNAP
   `paymentRequestId`) or its bank reference;
3. the 11-digit payment code (from the line, or found in its remittance text).

A pair whose amounts differ is an `amount_mismatch`; a line nothing pairs
with is `bank_only` (in the bank, not in the ledger); a payment nothing pairs
with is `ledger_only`. Everything else is `matched`.

The statement, its lines and the result are written in one transaction and
never change. The file's SHA-256 is unique: importing the same file again
answers the stored result and writes nothing. A different file that claims
an already imported statement (same format, account and statement id) is
refused as a conflict.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import datetime as dt
import io
import itertools
from collections.abc import Iterable
from dataclasses import dataclass

import asyncpg
import structlog

from gateway.domain.periods import WIB
from gateway.ops.statements import (
    STREAM_ENTRIES_PER_PIECE,
    Line,
    NotStreamable,
    Statement,
    StatementError,
    collector_paused,
    parse,
    stream,
)

log = structlog.get_logger("kanal.reconcile")

KINDS = ("matched", "bank_only", "ledger_only", "amount_mismatch")
TOTAL_RUPIAH_MAX = 2**63 - 1  # a statement's credits or debits: ops_statements.bank_*_rupiah are bigint
LIST_LIMIT_MAX = 500
ENTRY_COLUMNS = ["statement_id", "line_no", "direction", "amount_rupiah", "booked_on", "bank_reference",
                 "end_to_end_id", "payment_code", "remittance",
                 "kind", "matched_on", "payment_id", "npp", "ledger_amount_rupiah"]


class StatementConflict(StatementError):
    """Another file was already imported as this statement."""


@dataclass(slots=True)
class Item:
    kind: str
    direction: str
    matched_on: str | None = None
    line_no: int | None = None
    payment_id: int | None = None
    npp: str | None = None
    bank_amount_rupiah: int | None = None
    ledger_amount_rupiah: int | None = None


@dataclass(slots=True)
class Pairing:
    """The reconciliation as it is stored: each line's pairing, in line
    order, as (kind, matched_on, payment_id, npp, ledger_amount_rupiah)
    (the columns of ops_statement_entries), and the payments no line took,
    as (item_no, direction, payment_id, npp, ledger_amount_rupiah)
    (ops_reconciliation_ledger_only)."""

    lines: list[tuple]
    ledger_only: list[tuple]
    counts: dict[str, int]


def pair(statement: Statement, payments: list[asyncpg.Record | dict]) -> Pairing:
    """Pair the statement's lines with the expected ledger movements. Pure:
    `payments` are the rows `expected_payments` returns. Items are numbered
    credits first, then debits; within each, the lines in line order, then
    the unpaired payments in `payments` order."""
    pairer = Pairer(payments)
    lines = pairer.pair(statement.lines)
    ledger_only = pairer.ledger_only()
    return Pairing(lines, ledger_only, pairer.counts)


class Pairer:
    """`pair`, a piece of the statement at a time: `pair` each piece in line
    order, then `ledger_only` once. The same pairings as `pair` (a line's
    pairing depends only on the lines before it)."""

    def __init__(self, payments: list[asyncpg.Record | dict]) -> None:
        expected_of: dict[str, list] = {"credit": [], "debit": []}
        for p in payments:
            expected_of[p["direction"]].append(p)
        self._directions = {direction: _Direction(expected) for direction, expected in expected_of.items()}
        self.counts = dict.fromkeys(KINDS, 0)

    def pair(self, lines: list) -> list[tuple]:
        """Each line's (kind, matched_on, payment_id, npp, ledger_amount_rupiah)."""
        directions, counts = self._directions, self.counts
        return [directions[line.direction].take(line, counts) for line in lines]

    def ledger_only(self) -> list[tuple]:
        """The payments no line took, as (item_no, direction, payment_id, npp,
        ledger_amount_rupiah), numbered after all the lines of their direction."""
        rows: list[tuple] = []
        item_no = 0
        for direction in ("credit", "debit"):
            taken = self._directions[direction]
            item_no += taken.lines
            for p in taken.unpaired():
                item_no += 1
                rows.append((item_no, direction, p["id"], p["npp"], p["amount_rupiah"]))
        self.counts["ledger_only"] = len(rows)
        return rows


_BANK_ONLY = ("bank_only", None, None, None, None)


class _Direction:
    """Greedy, in line order: each line takes the first payment not yet taken
    on its strongest key that has one."""

    def __init__(self, expected: list) -> None:
        self.expected = expected
        self.lines = 0
        self.taken: set[int] = set()
        self.by_reference: dict[str, list] = {}
        for p in expected:
            if p["bank_reference"]:
                self.by_reference.setdefault(p["bank_reference"], []).append(p)
        # The weaker keys' indexes are built when a line first needs them: when
        # every line pairs on the bank's reference (a bank that agrees with the
        # ledger), never.
        self.weaker: list[dict[str, list]] = []

    def take(self, line, counts: dict[str, int]) -> tuple:
        self.lines += 1
        taken = self.taken
        found = _untaken(self.by_reference, line.bank_reference, taken)
        key = "bank_reference"
        if found is None:
            if not self.weaker:
                self.weaker = _weaker_indexes(self.expected)
            found, key = _untaken(self.weaker[0], line.end_to_end_id, taken), "end_to_end_id"
            if found is None:
                found, key = _untaken(self.weaker[1], line.payment_code, taken), "payment_code"
        if found is None:
            counts["bank_only"] += 1
            return _BANK_ONLY
        taken.add(found["id"])
        kind = "matched" if found["amount_rupiah"] == line.amount_rupiah else "amount_mismatch"
        counts[kind] += 1
        return kind, key, found["id"], found["npp"], found["amount_rupiah"]

    def unpaired(self) -> list:
        """The payments no line took, in `expected` order."""
        if len(self.taken) == len(self.expected):
            return []
        return [p for p in self.expected if p["id"] not in self.taken]


def _weaker_indexes(expected: list) -> list[dict[str, list]]:
    """Payments by end-to-end id (their idempotency key, or their bank
    reference) and by payment code, each list in `expected` order."""
    by_end_to_end: dict[str, list] = {}
    by_code: dict[str, list] = {}
    for p in expected:
        if p["bank_reference"]:
            by_end_to_end.setdefault(p["bank_reference"], []).append(p)
        by_end_to_end.setdefault(p["idempotency_key"], []).append(p)
        by_code.setdefault(p["payment_code"], []).append(p)
    return [by_end_to_end, by_code]


def match(statement: Statement, payments: list[asyncpg.Record | dict]) -> list[Item]:
    """The reconciliation's items, in item order (`pair`, one item a row)."""
    pairing = pair(statement, payments)
    items: list[Item] = []
    for direction in ("credit", "debit"):
        for n, (line, (kind, key, payment_id, npp, ledger)) in enumerate(zip(statement.lines, pairing.lines), start=1):
            if line.direction == direction:
                items.append(Item(kind, direction, key, n, payment_id, npp, line.amount_rupiah, ledger))
        items += [Item("ledger_only", direction, payment_id=payment_id, npp=npp, ledger_amount_rupiah=ledger)
                  for _, d, payment_id, npp, ledger in pairing.ledger_only if d == direction]
    return items


def _untaken(index: dict[str, list], value: str, taken: set[int]):
    """The first payment under `value` not yet paired; None without a value."""
    if value:
        for p in index.get(value, ()):
            if p["id"] not in taken:
                return p
    return None


def _like_prefix(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def window(from_date: dt.date, to_date: dt.date) -> tuple[dt.datetime, dt.datetime]:
    start = dt.datetime.combine(from_date, dt.time(), WIB)
    end = dt.datetime.combine(to_date + dt.timedelta(days=1), dt.time(), WIB)
    return start, end


async def expected_payments(
    conn: asyncpg.Connection | asyncpg.Pool, from_date: dt.date, to_date: dt.date, channel_prefix: str = ""
) -> list[asyncpg.Record]:
    """Credits: payments posted in the window. Debits: payments reversed in it."""
    start, end = window(from_date, to_date)
    like = _like_prefix(channel_prefix)
    return await conn.fetch(
        """select 'credit' as direction, id, idempotency_key, payment_code, npp, amount_rupiah, bank_reference
             from payments where posted_at >= $1 and posted_at < $2 and channel like $3
           union all
           select 'debit', id, idempotency_key, payment_code, npp, amount_rupiah, bank_reference
             from payments where reversed_at >= $1 and reversed_at < $2 and channel like $3
           order by 1, 2""",
        start, end, like,
    )


async def import_statement(
    pool: asyncpg.Pool,
    raw: bytes,
    *,
    fmt: str | None = None,
    statement_ref: str = "",
    account: str = "",
    channel_prefix: str = "",
    file_name: str = "",
    entries_per_piece: int = STREAM_ENTRIES_PER_PIECE,
    streamed: bool = True,
    settlement_accounts: tuple[str, ...] = (),
) -> tuple[dict, bool]:
    """Parse, reconcile and store a statement. Returns (summary, created):
    `created` is False when this very file had been imported before.

    A CSV file, or a uniform camt file with a period, is streamed: each
    piece of `entries_per_piece` entries is paired and written while the
    next is read, so that PostgreSQL stores lines while Python reads them.
    Any other file, or one that turns out not to stream (`NotStreamable`:
    that attempt is rolled back), is read whole first. Both store the same
    rows and refuse with the same errors. `streamed=False` reads every file
    whole first (the benchmark compares the two).

    With `settlement_accounts` (KANAL_SETTLEMENT_ACCOUNTS), a statement for
    another account is refused, naming `account`, before anything is written."""
    if len(channel_prefix) > 80:
        raise StatementError("channel_prefix is longer than 80 characters",
                             [{"field": "channel_prefix", "problem": "at most 80 characters"}])
    for name, value in (("statement_ref", statement_ref), ("account", account), ("channel_prefix", channel_prefix),
                        ("file_name", file_name)):
        if "\x00" in value:  # PostgreSQL text cannot hold it
            raise StatementError(f"{name} holds a NUL character", [{"field": name, "problem": "NUL is not allowed"}])
    streaming = stream(raw, fmt, statement_ref=statement_ref, account=account) if streamed else None
    if streaming is not None:
        try:
            _check_account(streaming.statement, settlement_accounts)
            _check_days(streaming.statement)
            return await _store(pool, streaming.statement, streaming.pieces(entries_per_piece), channel_prefix, file_name)
        except NotStreamable as reason:
            log.info("statement_read_whole", reason=str(reason))
    statement = parse(raw, fmt, statement_ref=statement_ref, account=account)
    _check_account(statement, settlement_accounts)
    _check_days(statement)
    return await _store(pool, statement, [statement.lines], channel_prefix, file_name)


# A statement covers a day, a week or a month: a year is the most it may. A
# typo in a year (1926 for 2026) made a window of a hundred years, whose
# every payment was expected and read.
STATEMENT_DAYS_MAX = 366


def _check_days(statement: Statement) -> None:
    days = (statement.to_date - statement.from_date).days + 1
    if days > STATEMENT_DAYS_MAX:
        raise StatementError(
            f"the statement covers {days:,} days ({statement.from_date} to {statement.to_date}); at most {STATEMENT_DAYS_MAX}",
            [{"field": "period", "problem": f"{statement.from_date} to {statement.to_date} is {days:,} days; at most {STATEMENT_DAYS_MAX}"}],
        )


def _check_account(statement: Statement, settlement_accounts: tuple[str, ...]) -> None:
    """A statement of another bank account would pair its lines against
    Kanal's ledger as if they were its own: refused when Kanal's accounts are
    configured. A CSV statement that names no account cannot be judged."""
    if settlement_accounts and statement.account and statement.account not in settlement_accounts:
        accounts = ", ".join(settlement_accounts)
        raise StatementError(
            f"account {statement.account!r} is not one of Kanal's settlement accounts ({accounts}; KANAL_SETTLEMENT_ACCOUNTS)",
            [{"field": "account", "problem": f"not one of Kanal's settlement accounts: {accounts}"}],
        )


async def _store(
    pool: asyncpg.Pool, statement: Statement, pieces: Iterable[list[Line]], channel_prefix: str, file_name: str,
) -> tuple[dict, bool]:
    """Reconcile and store `statement` (its lines come in `pieces`) in one
    transaction. The statement's row comes first (its lines reference it),
    its result last: migration 0017 lets the inserting transaction, and only
    it, write the result columns. The row is also the check that the file is
    new: when it conflicts, the file (or another claiming the statement) was
    imported before, or meanwhile."""
    for name, value, most in (("statement_ref", statement.statement_ref, 200), ("account", statement.account, 100)):
        if len(value) > most:
            raise StatementError(f"{name}: the statement's {name.replace('_', ' ')} is {len(value)} characters long; "
                                 f"at most {most}", [{"field": name, "problem": f"at most {most} characters"}])
    async with pool.acquire() as conn, conn.transaction():
        statement_id = await conn.fetchval(
            """insert into ops_statements (sha256, format, statement_ref, account, file_name, from_date, to_date,
                                           channel_prefix, entries, matched, bank_only, ledger_only, amount_mismatch,
                                           bank_credit_rupiah, bank_debit_rupiah)
               values ($1, $2, $3, $4, $5, $6, $7, $8, 0, 0, 0, 0, 0, 0, 0)
               on conflict do nothing returning id""",
            statement.sha256, statement.format, statement.statement_ref, statement.account, file_name[:255],
            statement.from_date, statement.to_date, channel_prefix,
        )
        if statement_id is None:
            try:
                existing = await _existing(conn, statement)
            except StatementConflict:  # another file claimed the statement: this file's own refusal comes first
                for _ in pieces:
                    pass
                raise
            assert existing is not None
            return existing, False
        with collector_paused():
            summary, counts = await _reconcile_into(conn, statement_id, statement, pieces, channel_prefix)
    log.info("statement_imported", statement_id=statement_id, format=statement.format,
             statement_ref=statement.statement_ref, **counts)
    return summary, True


async def _reconcile_into(
    conn: asyncpg.Connection, statement_id: int, statement: Statement, pieces: Iterable[list[Line]], channel_prefix: str,
) -> tuple[dict, dict[str, int]]:
    """Pair and write the lines, the ledger_only items and the statement's
    result; returns the statement's summary and the counts."""
    # The first piece is read while PostgreSQL looks up the payments.
    lookup = asyncio.create_task(expected_payments(conn, statement.from_date, statement.to_date, channel_prefix))
    pieces = iter(pieces)
    try:
        await asyncio.sleep(0)  # the lookup is sent
        first = next(pieces, None)
        payments = await lookup
    except BaseException as error:  # a refusal, or a cancellation: the lookup must be off the connection first
        if isinstance(error, asyncio.CancelledError):
            lookup.cancel()
        with contextlib.suppress(BaseException):
            await lookup
        raise
    if first is not None:
        pieces = itertools.chain([first], pieces)
    pairer = Pairer(payments)
    entries, credit_rupiah, debit_rupiah = await _write_lines(conn, statement_id, pieces, pairer)
    ledger_only = pairer.ledger_only()
    counts = pairer.counts
    summary = await conn.fetchrow(
        f"""update ops_statements
               set entries = $2, matched = $3, bank_only = $4, ledger_only = $5, amount_mismatch = $6,
                   bank_credit_rupiah = $7, bank_debit_rupiah = $8
             where id = $1
         returning {_SUMMARY_COLUMNS}""",
        statement_id, entries, counts["matched"], counts["bank_only"], counts["ledger_only"],
        counts["amount_mismatch"], credit_rupiah, debit_rupiah,
    )
    if ledger_only:
        await conn.copy_records_to_table(
            "ops_reconciliation_ledger_only", records=[(statement_id, *row) for row in ledger_only],
            columns=["statement_id", "item_no", "direction", "payment_id", "npp", "ledger_amount_rupiah"],
        )
    return _summary(summary), counts


async def _write_lines(
    conn: asyncpg.Connection, statement_id: int, pieces: Iterable[list[Line]], pairer: Pairer,
) -> tuple[int, int, int]:
    """Pair each piece and COPY it while the next piece is read: a writer
    task sends each piece as soon as it is paired and PostgreSQL is done with
    the COPY before, together with any other piece paired meanwhile (a COPY
    per piece or group of pieces, so that their foreign-key checks run then
    too, not all at the end). Returns (lines, the credits' rupiah,
    the debits' rupiah). On any error the writer finishes the piece it is
    sending, nothing more, before the error is raised."""
    queue: asyncio.Queue = asyncio.Queue()

    async def write() -> None:
        last = False
        while not last and (records := await queue.get()) is not None:
            # PostgreSQL was busy with the piece before: what waits goes as one COPY.
            while not queue.empty():
                more = queue.get_nowait()
                if more is None:
                    last = True
                    break
                records += more
            await conn.copy_records_to_table("ops_statement_entries", records=records, columns=ENTRY_COLUMNS)

    writer = asyncio.create_task(write())
    lines_written = credit_rupiah = debit_rupiah = 0
    try:
        for lines in pieces:  # reading the next piece: CPU, on this thread
            if writer.done():
                break  # a COPY failed: its error is raised below
            with collector_paused():
                pairs = pairer.pair(lines)
                records = [(statement_id, n, line.direction, line.amount_rupiah, line.booked_on, line.bank_reference,
                            line.end_to_end_id, line.payment_code, line.remittance, *pairing)
                           for n, line, pairing in zip(range(lines_written + 1, lines_written + len(lines) + 1),
                                                       lines, pairs)]
                credit = sum(line.amount_rupiah for line in lines if line.direction == "credit")
            lines_written += len(lines)
            credit_rupiah += credit
            debit_rupiah += sum(line.amount_rupiah for line in lines) - credit
            if max(credit_rupiah, debit_rupiah) > TOTAL_RUPIAH_MAX:
                direction = "credits" if credit_rupiah > TOTAL_RUPIAH_MAX else "debits"
                raise StatementError(f"the statement's {direction} add up to more than {TOTAL_RUPIAH_MAX:,} rupiah",
                                     [{"field": "statement", "problem": f"{direction} total over {TOTAL_RUPIAH_MAX}"}])
            queue.put_nowait(records)
            await asyncio.sleep(0)  # the writer sends this piece before the next is read
    except asyncio.CancelledError:
        writer.cancel()
        with contextlib.suppress(BaseException):
            await writer
        raise
    except BaseException:
        while not queue.empty():
            queue.get_nowait()
        queue.put_nowait(None)
        with contextlib.suppress(Exception):
            await writer
        raise
    queue.put_nowait(None)
    await writer  # raises what a COPY raised
    return lines_written, credit_rupiah, debit_rupiah


async def _existing(conn: asyncpg.Connection, statement: Statement) -> dict | None:
    row = await conn.fetchrow("select id from ops_statements where sha256 = $1", statement.sha256)
    if row is not None:
        return await get_statement(conn, row["id"])
    other = await conn.fetchval(
        "select id from ops_statements where format = $1 and account = $2 and statement_ref = $3",
        statement.format, statement.account, statement.statement_ref,
    )
    if other is not None:
        raise StatementConflict(
            f"statement {statement.statement_ref!r} of account {statement.account!r} ({statement.format}) was "
            f"already imported as reconciliation {other} from a different file; a corrected statement needs its own id",
            [{"field": "statement_ref", "problem": f"already imported from a different file (reconciliation {other})"}],
        )
    return None


_SUMMARY_COLUMNS = """id, format, statement_ref, account, file_name, from_date, to_date, channel_prefix, entries,
           matched, bank_only, ledger_only, amount_mismatch, bank_credit_rupiah, bank_debit_rupiah,
           encode(sha256, 'hex') as sha256, imported_at"""
_SUMMARY_SQL = f"select {_SUMMARY_COLUMNS} from ops_statements"


def _summary(row: asyncpg.Record) -> dict:
    out = dict(row)
    for key in ("from_date", "to_date", "imported_at"):
        out[key] = out[key].isoformat()
    out["discrepancies"] = out["bank_only"] + out["ledger_only"] + out["amount_mismatch"]
    return out


async def get_statement(conn: asyncpg.Connection | asyncpg.Pool, statement_id: int) -> dict | None:
    row = await conn.fetchrow(_SUMMARY_SQL + " where id = $1", statement_id)
    return _summary(row) if row is not None else None


async def list_statements(conn: asyncpg.Connection | asyncpg.Pool, *, limit: int = 50, before_id: int | None = None) -> list[dict]:
    limit = max(1, min(limit, LIST_LIMIT_MAX))
    rows = await conn.fetch(
        _SUMMARY_SQL + " where $1::bigint is null or id < $1 order by id desc limit $2", before_id, limit
    )
    return [_summary(r) for r in rows]


ITEM_COLUMNS = (
    "item_no", "kind", "matched_on", "direction", "line_no", "booked_on", "bank_reference", "end_to_end_id",
    "payment_code", "bank_amount_rupiah", "payment_id", "channel", "idempotency_key", "npp",
    "ledger_amount_rupiah", "difference_rupiah",
)


async def items(conn: asyncpg.Connection | asyncpg.Pool, statement_id: int, kind: str | None = None) -> list[dict]:
    rows = await conn.fetch(
        """select i.item_no, i.kind, i.matched_on, i.direction, i.line_no, e.booked_on,
                  coalesce(e.bank_reference, p.bank_reference) as bank_reference,
                  e.end_to_end_id, coalesce(nullif(e.payment_code, ''), p.payment_code) as payment_code,
                  i.bank_amount_rupiah, i.payment_id, p.channel, p.idempotency_key, i.npp, i.ledger_amount_rupiah,
                  coalesce(i.bank_amount_rupiah, 0) - coalesce(i.ledger_amount_rupiah, 0) as difference_rupiah
             from ops_reconciliation_items i
             left join ops_statement_entries e on e.statement_id = i.statement_id and e.line_no = i.line_no
             left join payments p on p.id = i.payment_id
            where i.statement_id = $1 and ($2::text is null or i.kind = $2)
            order by i.item_no""",
        statement_id, kind,
    )
    return [{k: (v.isoformat() if isinstance(v, dt.date) else v) for k, v in r.items()} for r in rows]


def items_csv(rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=ITEM_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row[k] is None else row[k]) for k in ITEM_COLUMNS})
    return out.getvalue()


async def ledger_statement(
    conn: asyncpg.Connection | asyncpg.Pool, from_date: dt.date, to_date: dt.date, *,
    channel_prefix: str = "", statement_ref: str = "", account: str = "",
) -> Statement:
    """The statement a bank would send for these days if it agreed with the
    ledger exactly: for demos, tests and benchmarks (`kanal statement`)."""
    lines = []
    rows = await conn.fetch(
        """select 'credit' as direction, amount_rupiah, posted_at as at, bank_reference, idempotency_key, payment_code
             from payments where posted_at >= $1 and posted_at < $2 and channel like $3
           union all
           select 'debit', amount_rupiah, reversed_at, bank_reference, idempotency_key, payment_code
             from payments where reversed_at >= $1 and reversed_at < $2 and channel like $3
           order by at""",
        *window(from_date, to_date), _like_prefix(channel_prefix),
    )
    for r in rows:
        lines.append(Line(r["direction"], r["amount_rupiah"], r["at"].astimezone(WIB).date(), r["bank_reference"],
                          r["idempotency_key"], r["payment_code"], f"IURAN BPJSTK {r['payment_code']}"))
    ref = statement_ref or f"KANAL-{from_date.isoformat()}" + (f"-{to_date.isoformat()}" if to_date != from_date else "")
    return Statement("csv", ref, account or "KANAL-SETTLEMENT", from_date, to_date, lines)
