"""Bank settlement statements: read CSV and ISO 20022 camt.053 / camt.054, and
write them (for tests, benchmarks and `kanal statement`).

camt XML is checked against typed bindings generated from the official ISO
20022 schemas (`pyiso20022`, parsed by `xsdata`): an element the schema does
not know, or a missing required one, is an error, not a silent skip. Every
version of camt.053.001.xx and camt.054.001.xx that `pyiso20022` ships is
accepted; the version is taken from the document's namespace. Before that,
`defusedxml` refuses DTDs and entities (no XXE, no entity bombs).

Binding every entry with xsdata cost ~0.3 ms an entry (1.5 s for 5,000), so
entries are read in two steps (`_read_camt`): the document without its
entries, and one entry of each distinct shape (element names, nesting,
attribute names), are bound by xsdata exactly as before, which decides what
the schema refuses; then every entry's values are read from the C
ElementTree by position, the same way `_entry_lines` reads the bindings.
Anything that reader does not cover (several statements in a file, a
namespaced attribute, a shape whose reading disagrees with the bindings)
goes through the full binding path (`_parse_camt_bindings`) unchanged.

Every amount becomes whole rupiah (`int`): a statement in another currency,
or an amount with a fraction of a rupiah, is refused with the line named.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import gc
import hashlib
import importlib
import io
import re
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from operator import attrgetter
from xml.sax.saxutils import escape

import defusedxml.ElementTree as safe_xml
from defusedxml import DefusedXmlException

STATEMENT_BYTES_MAX = 32 * 1_048_576
STATEMENT_ENTRIES_MAX = 200_000
FORMATS = ("csv", "camt.053", "camt.054")
CSV_COLUMNS = ("booking_date", "direction", "amount_rupiah", "bank_reference", "end_to_end_id", "payment_code", "remittance")
CSV_REQUIRED = ("booking_date", "amount_rupiah")
_PAYMENT_CODE = re.compile(r"(?<![0-9])([0-9]{11})(?![0-9])")
_PAYMENT_CODE_FULL = re.compile(r"[0-9]{11}")
_NAMESPACE = re.compile(r"^\{urn:iso:std:iso:20022:tech:xsd:(camt\.05[34])\.001\.([0-9]{2})\}Document$")
# Amount texts that are plainly whole rupiah ("150000", "150000.00"): read
# without Decimal. 18 digits keep int() far from Python's digit limit.
_WHOLE_AMOUNT = re.compile(r"([1-9][0-9]{0,17})(?:\.0*)?")
_WHOLE_AMOUNT_DIGITS_MAX = 18
# What an accepted amount looks like once its value passed every other check:
# ASCII digits, and a fraction (known to be zero by then). Not an exponent ("1.23457E+06",
# which a spreadsheet writes for 1,234,567 and would read back as 1,234,570),
# not "1_000", not digits of other scripts: Decimal takes them all.
_PLAIN_AMOUNT = re.compile(r"\+?[0-9]+(?:\.[0-9]*)?")
# The days a statement may cover: the ledger's window of a day ends at the
# next midnight, which Python cannot hold after 9999-12-30.
STATEMENT_DAY_MIN = dt.date(1900, 1, 1)
STATEMENT_DAY_MAX = dt.date(9999, 12, 30)
_ISO_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_LEADING_BLANKS = re.compile(rb"[\xef\xbb\xbf \t\r\n]*")
_PROLOG_READ_BYTES = 1024
_CSV_DIRECTIONS = {"": "credit", "c": "credit", "crdt": "credit", "credit": "credit",
                   "d": "debit", "dbit": "debit", "debit": "debit"}


class StatementError(ValueError):
    """The file is not a statement we can read; `errors` name where and why."""

    def __init__(self, detail: str, errors: list[dict] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or [{"field": "statement", "problem": detail}]


# Not frozen: a frozen dataclass sets each field through object.__setattr__,
# 2.5 us a line against 0.3 (12 ms of a 5,000-line import). Nothing changes
# a line after it is read.
@dataclass(slots=True)
class Line:
    direction: str  # "credit" (money in: a payment) or "debit" (money out: a reversal)
    amount_rupiah: int
    booked_on: dt.date
    bank_reference: str = ""  # the bank's own reference (AcctSvcrRef)
    end_to_end_id: str = ""  # the payer's reference (EndToEndId): SNAP paymentRequestId
    payment_code: str = ""  # the 11-digit kode iuran, from the remittance text when not given
    remittance: str = ""


@dataclass
class Statement:
    format: str
    statement_ref: str
    account: str
    from_date: dt.date
    to_date: dt.date
    lines: list[Line] = field(default_factory=list)
    sha256: bytes = b""


def payment_code_in(text: str) -> str:
    match = _PAYMENT_CODE.search(text or "")
    return match.group(1) if match else ""


def whole_rupiah(value: object, where: str) -> int:
    if type(value) is str and len(value) <= _WHOLE_AMOUNT_DIGITS_MAX and value.isascii() and value.isdigit() \
            and value[0] != "0":
        return int(value)  # the common case, without Decimal: same result
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise StatementError(f"{where}: {value!r} is not an amount", [{"field": where, "problem": "not a number"}]) from None
    if not amount.is_finite():  # Infinity, NaN, sNaN
        raise StatementError(f"{where}: {str(value).strip()!r} is not an amount",
                             [{"field": where, "problem": "not a number"}])
    if amount != amount.to_integral_value():
        raise StatementError(
            f"{where}: {value} has a fraction of a rupiah; rupiah amounts are whole",
            [{"field": where, "problem": "must be a whole number of rupiah"}],
        )
    if amount <= 0:
        raise StatementError(f"{where}: {value} must be positive (the direction says credit or debit)",
                             [{"field": where, "problem": "must be greater than 0"}])
    if amount.adjusted() >= _WHOLE_AMOUNT_DIGITS_MAX:  # before int(): 1E+1000000 would take minutes
        raise StatementError(f"{where}: {value} is too large; amounts have at most {_WHOLE_AMOUNT_DIGITS_MAX} digits",
                             [{"field": where, "problem": f"at most {_WHOLE_AMOUNT_DIGITS_MAX} digits"}])
    text = str(value).strip()  # a Decimal (camt, as xsdata read it) says "1.5E+3" for "1.5E3"
    if not _PLAIN_AMOUNT.fullmatch(text):
        raise StatementError(
            f"{where}: {text!r} is not written in plain digits; write whole rupiah such as 150000 or 150000.00",
            [{"field": where, "problem": "expected plain digits (no exponent, separator or other script)"}],
        )
    return int(amount)


def statement_day(day: dt.date, where: str, text: str | None = None) -> dt.date:
    """`day`, refused (naming `where`) outside the days a statement may cover."""
    if not STATEMENT_DAY_MIN <= day <= STATEMENT_DAY_MAX:
        raise StatementError(
            f"{where}: {text or day.isoformat()!r} is outside the days a statement may cover "
            f"({STATEMENT_DAY_MIN.isoformat()} to {STATEMENT_DAY_MAX.isoformat()})",
            [{"field": where, "problem": f"must be from {STATEMENT_DAY_MIN.isoformat()} to {STATEMENT_DAY_MAX.isoformat()}"}],
        )
    return day


def _csv_day(text: str) -> dt.date | None:
    """A CSV booking date: exactly YYYY-MM-DD (Python's fromisoformat also
    takes 20251001 and 2025-W40-3), None when it is not one."""
    if not _ISO_DAY.fullmatch(text):
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        return None


def detect_format(raw: bytes) -> str:
    if _looks_like_csv(raw):
        return "csv"
    return _xml_kind(raw)[0]


def _looks_like_csv(raw: bytes) -> bool:
    start = _LEADING_BLANKS.match(raw).end()  # not raw.lstrip(): that copies the file
    return raw[start:start + 1] != b"<"


def parse(raw: bytes, fmt: str | None = None, *, statement_ref: str = "", account: str = "") -> Statement:
    """Read a statement. `fmt` None or "auto" detects it; `statement_ref` and
    `account` name a CSV statement (camt files carry their own)."""
    fmt = _format_given(raw, fmt)
    with collector_paused():
        statement = _parse_csv(raw, statement_ref, account) if fmt == "csv" else _parse_camt(raw, fmt)
    if len(statement.lines) > STATEMENT_ENTRIES_MAX:
        raise StatementError(f"the statement has {len(statement.lines)} entries; the limit is {STATEMENT_ENTRIES_MAX}")
    statement.sha256 = hashlib.sha256(raw).digest()
    if not statement.statement_ref:
        statement.statement_ref = f"{statement.format}:{statement.sha256.hex()[:16]}"
    return statement


def _format_given(raw: bytes, fmt: str | None) -> str | None:
    """What `parse` refuses before reading: "csv", a camt kind, or None for
    XML whose namespace says which camt."""
    if len(raw) > STATEMENT_BYTES_MAX:
        raise StatementError(f"the statement is {len(raw)} bytes; the limit is {STATEMENT_BYTES_MAX} bytes")
    if not raw or raw.isspace():  # as `not raw.strip()`, without copying the file
        raise StatementError("the statement is empty")
    if fmt in (None, "", "auto"):
        fmt = "csv" if _looks_like_csv(raw) else None  # XML: the document's namespace says which camt
    elif fmt not in FORMATS:
        raise StatementError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)} or auto",
                             [{"field": "format", "problem": f"expected one of {', '.join(FORMATS)}"}])
    return fmt


_collector_pauses = 0
_collector_was_enabled = False


@contextlib.contextmanager
def collector_paused():
    """Reading and reconciling a statement makes a few objects per line and
    frees none of them while it runs (a camt tree is ~100,000 elements for
    5,000 entries), so the cyclic garbage collector would only re-walk live
    objects, and promote them until a full collection runs: pausing it for
    the read measured camt 190 -> 117 ms for 5,000 entries, and for a
    streamed import (which awaits between pieces) Python's CPU 67 -> 60 ms.

    Pauses nest (an import's pause holds its pieces' pauses, two imports may
    overlap): collection resumes when the last one ends, and only if it ran
    before the first. Across an await, other coroutines of this thread run
    paused too, for as long as the import runs (about 0.1 s for 5,000
    lines); what cycles they leave is collected when it resumes. Objects
    are still freed by reference counting meanwhile."""
    global _collector_pauses, _collector_was_enabled
    if _collector_pauses == 0:
        _collector_was_enabled = gc.isenabled()
        gc.disable()
    _collector_pauses += 1
    try:
        yield
    finally:
        _collector_pauses -= 1
        if _collector_pauses == 0 and _collector_was_enabled:
            gc.enable()


# ------------------------------------------------------------------- CSV ----


def _parse_csv(raw: bytes, statement_ref: str, account: str) -> Statement:
    """Rows are read by column position (csv.reader) rather than as dicts, and
    each distinct booking date is parsed once: ~3x faster, same rules."""
    table = _CsvTable.read(raw)
    lines = table.lines(table.rows, 1)
    if table.split_error is not None:
        raise table.split_error
    if not lines:
        raise StatementError("the CSV has a header but no entries")
    days = {line.booked_on for line in lines}
    return Statement("csv", statement_ref.strip(), account.strip(), min(days), max(days), lines)


@dataclass
class _CsvTable:
    """A CSV statement's rows (lists of fields, blank rows included), and
    where each column is. What stopped the csv module splitting the rest
    (`split_error`) and a NUL (`nul_line`, which PostgreSQL text cannot hold)
    are refused in line order, after what the lines before them hold."""

    rows: list[list[str]]
    width: int
    at: tuple[int, ...]  # the positions of CSV_COLUMNS
    split_error: StatementError | None = None  # after the last row
    nul_line: int = 0  # the line number of the first line with a NUL, 0: none
    dates: dict = field(default_factory=dict)  # booking_date text -> date, parsed once each

    @classmethod
    def read(cls, raw: bytes) -> _CsvTable:
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as error:
            raise StatementError(f"the CSV is not UTF-8: {error}") from None
        reader = csv.reader(io.StringIO(text))
        rows: list[list[str]] = []
        header = None
        try:
            header = [h.strip() for h in next(reader, [])]
            missing = [c for c in CSV_REQUIRED if c not in header]
            unknown = [c for c in header if c not in CSV_COLUMNS]
            if missing or unknown:
                problems = [{"field": c, "problem": "required column is missing"} for c in missing]
                problems += [{"field": c, "problem": f"unknown column; known: {', '.join(CSV_COLUMNS)}"} for c in unknown]
                raise StatementError("the CSV header " + "; ".join(f"{p['field']}: {p['problem']}" for p in problems),
                                     problems)
            rows.extend(reader)
        except csv.Error as error:  # a field over the csv module's limit (128 KiB)
            where = "line 1" if header is None else f"line {sum(1 for row in rows if row) + 2}"
            split_error = StatementError(f"{where}: the CSV cannot be read: {error}",
                                         [{"field": where, "problem": str(error)}])
            if header is None:
                raise split_error from None
        else:
            split_error = None
        nul_line = 0
        if "\x00" in text:
            n = 1
            for row in rows:
                if row:
                    n += 1
                    if any("\x00" in value for value in row):
                        nul_line = n
                        break
        width = len(header)
        # A column named twice: the last one counts (as a dict of the row would
        # have it). A column not in the header reads as "": its position is past
        # any row's end.
        position = dict.fromkeys(CSV_COLUMNS, width) | {name: i for i, name in enumerate(header)}
        return cls(rows, width, tuple(position[c] for c in CSV_COLUMNS), split_error, nul_line)

    def lines(self, rows: list[list[str]], n: int) -> list[Line]:
        """The lines of `rows`; `n` is the line number of the non-blank row
        before them (1: the header)."""
        at_date, at_direction, at_amount, at_bank_ref, at_e2e, at_code, at_remittance = self.at
        width, dates, nul_line = self.width, self.dates, self.nul_line
        lines = []
        for row in rows:
            if not row:
                continue  # a blank line is not an entry, nor counted
            n += 1
            if n == nul_line:
                raise StatementError(f"line {n}: a field holds a NUL character",
                                     [{"field": f"line {n}", "problem": "NUL (\\x00) is not allowed"}])
            size = len(row)
            if size > width:
                raise StatementError(f"line {n}: more fields than columns", [{"field": f"line {n}", "problem": "too many fields"}])
            booking = row[at_date].strip() if at_date < size else ""
            booked_on = dates.get(booking)
            if booked_on is None:
                booked_on = _csv_day(booking)
                if booked_on is None:
                    raise StatementError(
                        f"line {n}, booking_date: {booking!r} is not a date (YYYY-MM-DD)",
                        [{"field": f"line {n}.booking_date", "problem": "expected YYYY-MM-DD"}],
                    )
                dates[booking] = statement_day(booked_on, f"line {n}.booking_date", booking)
            given = row[at_direction].strip() if at_direction < size else ""
            direction = _CSV_DIRECTIONS.get(given.lower())
            if direction is None:
                raise StatementError(
                    f"line {n}, direction: {given!r} is not credit or debit",
                    [{"field": f"line {n}.direction", "problem": "expected credit (C) or debit (D)"}],
                )
            code = row[at_code].strip() if at_code < size else ""
            if code and not _PAYMENT_CODE_FULL.fullmatch(code):
                raise StatementError(f"line {n}, payment_code: {code!r} is not 11 digits",
                                     [{"field": f"line {n}.payment_code", "problem": "expected 11 digits"}])
            amount = whole_rupiah(row[at_amount].strip() if at_amount < size else "", f"line {n}.amount_rupiah")
            lines.append(_line(direction, amount, booked_on,
                               row[at_bank_ref].strip() if at_bank_ref < size else "",
                               row[at_e2e].strip() if at_e2e < size else "",
                               code,
                               row[at_remittance].strip() if at_remittance < size else ""))
        return lines

    def days(self) -> tuple[dt.date, dt.date] | None:
        """The first and last booking day, None when a row has no date (the
        rows read in order say which error comes first) or there is no row."""
        at_date = self.at[0]
        texts = {row[at_date].strip() if at_date < len(row) else "" for row in self.rows if row}
        days = [_csv_day(text) for text in texts]
        if None in days or not all(STATEMENT_DAY_MIN <= day <= STATEMENT_DAY_MAX for day in days):
            return None
        return (min(days), max(days)) if days else None


def _line(direction, amount, booked_on, bank_reference, end_to_end_id, code, remittance) -> Line:
    return Line(
        direction, amount, booked_on, bank_reference[:200], end_to_end_id[:200],
        code or payment_code_in(remittance) or payment_code_in(end_to_end_id), remittance[:500],
    )


# ------------------------------------------------------------------ camt ----


def _xml_root(raw: bytes) -> ET.Element:
    """The parsed document. `defusedxml` reads the prolog (DTDs and entity
    declarations can only appear before the root element) and refuses a DTD;
    the document itself is then built by the C ElementTree parser, which with
    no DTD has no entity to expand or fetch. defusedxml's pure-Python tree
    builder took ~0.25 s for a 5,000-entry statement."""
    _refuse_dtd(raw)
    try:
        return ET.fromstring(raw)
    except ET.ParseError as error:
        raise StatementError(f"the XML is not well-formed: {error}") from None


def _refuse_dtd(raw: bytes) -> None:
    try:
        for _ in safe_xml.iterparse(_Trickle(raw), events=("start",), forbid_dtd=True):
            break  # the root element has started: past the prolog
    except DefusedXmlException as error:
        raise StatementError(f"the XML is refused: {type(error).__name__} (DTDs and entities are not allowed)") from None
    except safe_xml.ParseError:
        pass  # not well-formed: the full parse says where


class _Trickle:
    """`raw` handed out `_PROLOG_READ_BYTES` at a time, so that the
    pure-Python parser reading the prolog stops soon after the root starts."""

    def __init__(self, raw: bytes) -> None:
        self.raw, self.at = raw, 0

    def read(self, size: int = -1) -> bytes:
        chunk = self.raw[self.at:self.at + _PROLOG_READ_BYTES]
        self.at += len(chunk)
        return chunk


def _root_kind(root: ET.Element) -> tuple[str, str]:
    match = _NAMESPACE.match(root.tag)
    if not match:
        raise StatementError(
            f"the XML root is {root.tag}; expected an ISO 20022 camt.053 or camt.054 Document "
            "(namespace urn:iso:std:iso:20022:tech:xsd:camt.053.001.xx or camt.054.001.xx)"
        )
    return match.group(1), match.group(2)


def _xml_kind(raw: bytes) -> tuple[str, str]:
    return _root_kind(_xml_root(raw))


def _bindings(kind: str, version: str):
    module = f"pyiso20022.camt.{kind.replace('.', '_')}_001_{version}"
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError:
        raise StatementError(f"{kind}.001.{version} is not a version we can read") from None


def _bind(xml: bytes, clazz, kind: str, version: str, where: str = ""):
    """xsdata binds `xml` to `clazz`; what it refuses is a schema error, named
    at `where` (an entry) when given."""
    from xsdata.exceptions import ParserError
    from xsdata.formats.dataclass.parsers import XmlParser

    try:
        return XmlParser(context=_xml_context()).from_bytes(xml, clazz)
    except (ParserError, ValueError, TypeError) as error:
        detail = f"the {kind}.001.{version} document does not follow its schema: {where + ': ' if where else ''}{error}"
        raise StatementError(detail, [{"field": where, "problem": detail}] if where else None) from None


def _parse_camt(raw: bytes, fmt: str | None) -> Statement:
    _refuse_dtd(raw)
    statement = _read_camt_uniform(raw, fmt)
    return statement if statement is not None else _parse_camt_tree(raw, fmt)


def _parse_camt_tree(raw: bytes, fmt: str | None) -> Statement:
    """The careful reader: the element tree by position, else the bindings
    over the whole document."""
    root = _xml_root(raw)
    kind, version = _root_kind(root)
    if fmt is not None and kind != fmt:
        raise StatementError(f"the format was given as {fmt}, but the document is {kind}.001.{version}")
    bindings = _bindings(kind, version)
    statement = _read_camt(root, kind, version, bindings)
    return statement if statement is not None else _parse_camt_bindings(raw, kind, version, bindings)


def _parse_camt_bindings(raw: bytes, kind: str, version: str, bindings) -> Statement:
    """The whole document bound by xsdata, every entry read from its bindings:
    the reference reading, and the path for what `_read_camt` leaves to it."""
    document = _bind(raw, bindings.Document, kind, version)
    if kind == "camt.053":
        reports = document.bk_to_cstmr_stmt.stmt
    else:
        reports = document.bk_to_cstmr_dbt_cdt_ntfctn.ntfctn
    _one_report(reports, kind)
    report = reports[0]
    lines: list[Line] = []
    for n, entry in enumerate(report.ntry, start=1):
        lines += _entry_lines(entry, n)
    return _statement(kind, report, lines)


def _one_report(reports: list, kind: str) -> None:
    if len(reports) != 1:
        what = "Stmt" if kind == "camt.053" else "Ntfctn"
        raise StatementError(f"the document has {len(reports)} {what} blocks; import them one statement per file")


def _statement(kind: str, report, lines: list[Line]) -> Statement:
    period = _period(report)
    if not lines and period is None:
        raise StatementError("the statement has no entries, and no period (FrToDt) to say which days it covers",
                             [{"field": "FrToDt", "problem": "required when the statement has no entries"}])
    days = {line.booked_on for line in lines}
    for n, line in enumerate(lines, start=1):
        if not STATEMENT_DAY_MIN <= line.booked_on <= STATEMENT_DAY_MAX:
            statement_day(line.booked_on, f"line {n}.BookgDt")
    if period is not None:
        from_date, to_date = period
        for name, value in (("FrDtTm", from_date), ("ToDtTm", to_date)):
            if not isinstance(value, dt.date):  # xsdata kept a text it could not convert
                raise StatementError(f"FrToDt.{name}: {value!r} is not an ISO date and time",
                                     [{"field": f"FrToDt.{name}", "problem": "not a date and time"}])
            statement_day(value, f"FrToDt.{name}")
        if not lines and from_date > to_date:
            raise StatementError(f"FrToDt: {from_date.isoformat()} is after {to_date.isoformat()}",
                                 [{"field": "FrToDt", "problem": "FrDtTm is after ToDtTm"}])
        from_date, to_date = min([from_date, *days]), max([to_date, *days])
    else:
        from_date, to_date = min(days), max(days)
    return Statement(kind, report.id, _account(report.acct), from_date, to_date, lines)


def _period(report) -> tuple | None:
    """FrToDt's first and last day (None without both); either may still be
    a text that xsdata could not convert."""
    period = getattr(report, "fr_to_dt", None)
    if period is None or period.fr_dt_tm is None or period.to_dt_tm is None:
        return None
    return _date_or_value(period.fr_dt_tm), _date_or_value(period.to_dt_tm)


def _date_or_value(value):
    """`_as_date`, or `value` itself when Python has no such date (year 0)."""
    try:
        return _as_date(value)
    except (ValueError, OverflowError):
        return value


def _as_date(value) -> dt.date:
    if hasattr(value, "to_datetime"):
        value = value.to_datetime()
    elif hasattr(value, "to_date"):
        return value.to_date()
    if isinstance(value, dt.datetime):
        from gateway.domain.periods import WIB

        return value.astimezone(WIB).date() if value.tzinfo else value.date()
    return value


def _account(account) -> str:
    ident = account.id
    if getattr(ident, "iban", None):
        return ident.iban
    other = getattr(ident, "othr", None)
    return other.id if other is not None else ""


def _amount(amount, where: str) -> int:
    if amount.ccy != "IDR":
        raise StatementError(f"{where}: currency {amount.ccy}; Kanal settles in IDR only",
                             [{"field": where, "problem": "currency must be IDR"}])
    return whole_rupiah(amount.value, where)


def _tx_amount(tx):
    direct = getattr(tx, "amt", None)
    if direct is not None:
        return direct
    details = getattr(tx, "amt_dtls", None)
    if details is not None and getattr(details, "tx_amt", None) is not None:
        return details.tx_amt.amt
    return None


def _remittance(tx) -> str:
    info = getattr(tx, "rmt_inf", None)
    if info is None:
        return ""
    parts = list(info.ustrd or [])
    for structured in getattr(info, "strd", None) or []:
        ref = getattr(structured, "cdtr_ref_inf", None)
        if ref is not None and getattr(ref, "ref", None):
            parts.append(ref.ref)
    return " ".join(parts)


def _entry_lines(entry, n: int) -> list[Line]:
    where = f"Ntry[{n}]"
    direction = {"CRDT": "credit", "DBIT": "debit"}[_code(entry.cdt_dbt_ind)]
    booked = entry.bookg_dt
    if booked is None:
        raise StatementError(f"{where}: BookgDt is missing", [{"field": f"{where}.BookgDt", "problem": "required"}])
    booked_on = _date_or_value(booked.dt if booked.dt is not None else booked.dt_tm)
    entry_ref = entry.acct_svcr_ref or ""
    transactions = [tx for details in entry.ntry_dtls for tx in details.tx_dtls]
    if not transactions:
        return [_line(direction, _amount(entry.amt, f"{where}.Amt"), booked_on, entry_ref, "", "",
                      " ".join(entry.addtl_ntry_inf or []) if isinstance(entry.addtl_ntry_inf, list) else (entry.addtl_ntry_inf or ""))]
    lines = []
    for t, tx in enumerate(transactions, start=1):
        amount = _tx_amount(tx)
        if amount is None:
            if len(transactions) > 1:
                raise StatementError(f"{where}.TxDtls[{t}]: a batch entry's transactions need their own Amt")
            amount = entry.amt
        refs = tx.refs
        lines.append(_line(
            direction,
            _amount(amount, f"{where}.TxDtls[{t}].Amt"),
            booked_on,
            (refs.acct_svcr_ref if refs is not None and refs.acct_svcr_ref else entry_ref) or "",
            (refs.end_to_end_id if refs is not None else "") or "",
            "",
            _remittance(tx),
        ))
    return lines


def _code(value) -> str:
    return getattr(value, "value", value)


# ------------------------------------------------- camt, read by position ----

_TAG = attrgetter("tag")
# Element.keys, not .attrib: reading .attrib gives an element without
# attributes a new dict (25 ms for 5,000 entries; keys() 9 ms).
_ATTRIBUTE_NAMES = ET.Element.keys
_GROUPS = {"camt.053": ("BkToCstmrStmt", "Stmt"), "camt.054": ("BkToCstmrDbtCdtNtfctn", "Ntfctn")}
# Each new shape costs one xsdata binding and a check (~0.5 ms): past this
# many, reading by position saves nothing, and the file is bound whole.
_ENTRY_SHAPES_MAX = 256
_DIRECTIONS = {"CRDT": "credit", "DBIT": "debit"}
_XML_CONTEXT = None


def _xml_context():
    """xsdata's class metadata, built once per class rather than once per parse."""
    global _XML_CONTEXT
    if _XML_CONTEXT is None:
        from xsdata.formats.dataclass.context import XmlContext

        _XML_CONTEXT = XmlContext()
    return _XML_CONTEXT


def _read_camt(root: ET.Element, kind: str, version: str, bindings) -> Statement | None:
    """The statement read from the parsed tree, or None to leave the document
    to `_parse_camt_bindings`. Two passes, so that a schema error anywhere
    wins over a value error in an earlier entry, as when the whole document
    was bound first."""
    frame = _camt_frame(root, kind, version, bindings)
    if frame is None:
        return None
    bound_report, entries, entry_class, ns = frame
    readers: dict[tuple, _EntryReader] = {}
    shaped = []
    for n, entry in enumerate(entries, start=1):
        elements = list(entry.iter())
        # What xsdata's verdict depends on: element names and nesting (preorder
        # names and child counts fix the tree), and attribute names.
        shape = (tuple(map(_TAG, elements)), tuple(map(len, elements)), tuple(map(tuple, map(_ATTRIBUTE_NAMES, elements))))
        reader = readers.get(shape)
        if reader is None:
            if len(readers) == _ENTRY_SHAPES_MAX:
                return None
            reader = _EntryReader.for_shape(entry, elements, n, entry_class, ns, kind, version, bindings)
            if reader is None:
                return None
            readers[shape] = reader
        shaped.append((reader, elements))
    lines: list[Line] = []
    for n, (reader, elements) in enumerate(shaped, start=1):
        lines += reader.lines(elements, n)
    return _statement(kind, bound_report, lines)


def _camt_frame(root: ET.Element, kind: str, version: str, bindings):
    """(the report's bindings, its entries, the entry class, the namespace in
    braces), the frame bound by xsdata; None when it is not one group with
    one report, or `_without_entries` declines."""
    ns = root.tag[: root.tag.index("}") + 1]
    group_name, report_name = _GROUPS[kind]
    if len(root) != 1 or root[0].tag != ns + group_name:
        return None
    group = root[0]
    reports = [child for child in group if child.tag == ns + report_name]
    if len(reports) != 1:
        return None
    report = reports[0]
    entry_tag = ns + "Ntry"
    entries = [child for child in report if child.tag == entry_tag]
    frame = _without_entries(root, group, report, entry_tag)
    if frame is None:
        return None
    document = _bind(ET.tostring(frame), bindings.Document, kind, version)
    bound_group = document.bk_to_cstmr_stmt if kind == "camt.053" else document.bk_to_cstmr_dbt_cdt_ntfctn
    bound_report = (bound_group.stmt if kind == "camt.053" else bound_group.ntfctn)[0]
    entry_class = _xml_context().build(type(bound_report)).elements[entry_tag][0].clazz
    # Built in the document's namespace, as when bound inside the document:
    # xsdata's messages name classes by it.
    _xml_context().build(entry_class, ns[1:-1])
    return bound_report, entries, entry_class, ns


def _without_entries(root: ET.Element, group: ET.Element, report: ET.Element, entry_tag: str) -> ET.Element | None:
    """The document's frame (header, statement fields, balances) without its
    entries, for xsdata; None when an attribute is namespaced (an xsi:type
    names a prefix that writing the frame out again would lose)."""
    bare_report = ET.Element(report.tag, report.attrib)
    bare_report.extend(child for child in report if child.tag != entry_tag)
    bare_group = ET.Element(group.tag, group.attrib)
    bare_group.extend(bare_report if child is report else child for child in group)
    bare_root = ET.Element(root.tag, root.attrib)
    bare_root.append(bare_group)
    for element in bare_root.iter():
        if any(name.startswith("{") for name in element.attrib):
            return None
    return bare_root


def _xml_value(text: str, clazz):
    """`text` converted as xsdata converts it, or None where xsdata could not
    (it would keep the text and warn)."""
    from xsdata.formats.converter import ConverterError, converter

    try:
        return converter.deserialize(text, [clazz])
    except ConverterError:
        return None


@dataclass(frozen=True)
class _TxPositions:
    """Where one TxDtls's values sit in its entry's element list (None: absent)."""

    amount: int | None  # TxDtls/Amt, else TxDtls/AmtDtls/TxAmt/Amt
    bank_reference: int | None  # Refs/AcctSvcrRef
    end_to_end_id: int | None  # Refs/EndToEndId
    remittance: int | None  # RmtInf
    unstructured: tuple[int, ...]  # RmtInf/Ustrd
    creditor_refs: tuple[int, ...]  # RmtInf/Strd/CdtrRefInf/Ref


@dataclass
class _EntryReader:
    """Reads the entries of one shape by element position, with the same
    rules, order of checks and messages as `_entry_lines` (which reads an
    entry's bindings)."""

    bindings: object
    amount: int
    direction: int
    booking: int | None
    booking_date: int | None
    booking_time: int | None
    bank_reference: int | None
    additional: tuple[int, ...]
    additional_is_list: bool
    transactions: tuple[_TxPositions, ...]
    # Converted once per distinct text: a statement's dates and codes repeat.
    directions: dict = field(default_factory=dict)
    days: dict = field(default_factory=dict)

    @classmethod
    def for_shape(cls, entry, elements, n, entry_class, ns, kind, version, bindings) -> _EntryReader | None:
        """Bind this entry with xsdata, which refuses what the schema refuses
        (unknown, missing or repeated elements, missing attributes: the shape
        alone decides), then check that reading it by position gives what its
        bindings give; None if not."""
        from xsdata.exceptions import ConverterWarning

        tail, entry.tail = entry.tail, None
        try:
            xml = ET.tostring(entry)
        finally:
            entry.tail = tail
        with warnings.catch_warnings():
            # A value xsdata cannot convert stays text; `lines` checks the values it reads.
            warnings.simplefilter("ignore", ConverterWarning)
            bound = _bind(xml, entry_class, kind, version, f"Ntry[{n}]")
        index = {id(element): i for i, element in enumerate(elements)}

        def at(parent, *path):
            found = parent.find("/".join(ns + step for step in path)) if parent is not None else None
            return None if found is None else index[id(found)]

        def each(parent, *path):
            if parent is None:
                return ()
            return tuple(index[id(found)] for found in parent.findall("/".join(ns + step for step in path)))

        transactions = []
        for details in entry.findall(ns + "NtryDtls"):
            for tx in details.findall(ns + "TxDtls"):
                refs, remittance = tx.find(ns + "Refs"), tx.find(ns + "RmtInf")
                direct = at(tx, "Amt")
                transactions.append(_TxPositions(
                    amount=direct if direct is not None else at(tx, "AmtDtls", "TxAmt", "Amt"),
                    bank_reference=at(refs, "AcctSvcrRef"),
                    end_to_end_id=at(refs, "EndToEndId"),
                    remittance=at(tx, "RmtInf"),
                    unstructured=each(remittance, "Ustrd"),
                    creditor_refs=each(remittance, "Strd", "CdtrRefInf", "Ref"),
                ))
        booking = entry.find(ns + "BookgDt")
        reader = cls(
            bindings,
            amount=at(entry, "Amt"),
            direction=at(entry, "CdtDbtInd"),
            booking=at(entry, "BookgDt"),
            booking_date=at(booking, "Dt"),
            booking_time=at(booking, "DtTm"),
            bank_reference=at(entry, "AcctSvcrRef"),
            additional=each(entry, "AddtlNtryInf"),
            additional_is_list=isinstance(bound.addtl_ntry_inf, list),
            transactions=tuple(transactions),
        )
        return reader if reader._agrees(bound, elements, n) else None

    def _agrees(self, bound, elements, n) -> bool:
        """Position reading and bindings reading give the same lines, or the
        same refusal. Where the bindings reading breaks on a value it cannot
        use (a direction that is not CRDT/DBIT, a date that is no date), a
        refusal that names it is the better answer, and is kept."""
        try:
            ours, our_error = self.lines(elements, n), None
        except StatementError as error:
            ours, our_error = None, error.detail
        try:
            theirs, their_error = _entry_lines(bound, n), None
        except StatementError as error:
            theirs, their_error = None, error.detail
        except (KeyError, TypeError, AttributeError, ValueError):
            return our_error is not None
        if theirs is not None and not all(isinstance(line.booked_on, dt.date) for line in theirs):
            return our_error is not None
        return ours == theirs and our_error == their_error

    def lines(self, elements: list, n: int) -> list[Line]:
        text = elements[self.direction].text
        direction = self.directions.get(text) or self._direction(text, n)
        booked_on = self._booked_on(elements, n)
        entry_ref = (elements[self.bank_reference].text or "") if self.bank_reference is not None else ""
        transactions = self.transactions
        if not transactions:
            if self.additional_is_list:
                remittance = " ".join(elements[i].text or "" for i in self.additional)
            else:
                remittance = (elements[self.additional[0]].text or "") if self.additional else ""
            return [_line(direction, self._rupiah(elements[self.amount], n, None), booked_on, entry_ref, "", "",
                          remittance)]
        lines = []
        for t, tx in enumerate(transactions, start=1):
            amount = tx.amount
            if amount is None:
                if len(transactions) > 1:
                    raise StatementError(f"Ntry[{n}].TxDtls[{t}]: a batch entry's transactions need their own Amt")
                amount = self.amount
            bank_reference = elements[tx.bank_reference].text if tx.bank_reference is not None else None
            end_to_end_id = elements[tx.end_to_end_id].text if tx.end_to_end_id is not None else None
            remittance = ""
            if tx.remittance is not None:
                parts = [elements[i].text or "" for i in tx.unstructured]
                parts += [elements[i].text for i in tx.creditor_refs if elements[i].text]
                remittance = " ".join(parts)
            lines.append(_line(direction, self._rupiah(elements[amount], n, t), booked_on,
                               bank_reference or entry_ref, end_to_end_id or "", "", remittance))
        return lines

    def _direction(self, text: str | None, n: int) -> str:
        """CdtDbtInd as xsdata converts it (surrounding blanks allowed)."""
        direction = _DIRECTIONS.get(_code(_xml_value(text or "", self.bindings.CreditDebitCode)))
        if direction is None:
            raise StatementError(f"Ntry[{n}].CdtDbtInd: {text!r} is not CRDT or DBIT",
                                 [{"field": f"Ntry[{n}].CdtDbtInd", "problem": "expected CRDT or DBIT"}])
        self.directions[text] = direction
        return direction

    def _booked_on(self, elements: list, n: int) -> dt.date:
        """BookgDt/Dt, else BookgDt/DtTm (its day in Asia/Pontianak)."""
        if self.booking is None:
            raise StatementError(f"Ntry[{n}]: BookgDt is missing", [{"field": f"Ntry[{n}].BookgDt", "problem": "required"}])
        return self._booked_on_texts(
            elements[self.booking_date].text if self.booking_date is not None else None,
            elements[self.booking_time].text if self.booking_time is not None else None, n)

    def _booked_on_texts(self, date_text: str | None, time_text: str | None, n: int) -> dt.date:
        for text, name in ((date_text, "Dt"), (time_text, "DtTm")):
            if text is None:
                continue  # absent, or empty: xsdata reads both as no value
            day = self.days.get((name, text))
            if day is None:
                from xsdata.models.datatype import XmlDate, XmlDateTime

                value = _date_or_value(_xml_value(text, XmlDate if name == "Dt" else XmlDateTime))
                if not isinstance(value, dt.date):  # not a date, or none Python can hold (year 0)
                    raise StatementError(f"Ntry[{n}].BookgDt.{name}: {text!r} is not an ISO date",
                                         [{"field": f"Ntry[{n}].BookgDt.{name}", "problem": "not a date"}])
                day = self.days[(name, text)] = value
            return day
        raise StatementError(f"Ntry[{n}].BookgDt: neither Dt nor DtTm is given",
                             [{"field": f"Ntry[{n}].BookgDt", "problem": "Dt or DtTm required"}])

    @staticmethod
    def _rupiah(element: ET.Element, n: int, t: int | None) -> int:
        return _EntryReader._rupiah_text(element.get("Ccy"), element.text, n, t)

    @staticmethod
    def _rupiah_text(currency: str | None, text: str | None, n: int, t: int | None) -> int:
        if currency == "IDR" and text is not None:
            whole = _WHOLE_AMOUNT.fullmatch(text)
            if whole is not None:
                return int(whole.group(1))  # "150000.00": the common case, without Decimal
        where = f"Ntry[{n}].Amt" if t is None else f"Ntry[{n}].TxDtls[{t}].Amt"
        if currency != "IDR":
            raise StatementError(f"{where}: currency {currency}; Kanal settles in IDR only",
                                 [{"field": where, "problem": "currency must be IDR"}])
        if text is None:
            return whole_rupiah(None, where)  # xsdata reads an empty amount as None
        # As xsdata converts it: a Decimal, or the text itself when it is no number.
        value = _xml_value(text, Decimal)
        return whole_rupiah(text if value is None else value, where)


    def column_lines(self, rows: list[tuple], plan: _RowPlan) -> list[Line] | None:
        """`row_lines` for the common entry (one transaction, every value
        plain), a column at a time in C; None when any value is not plain,
        and `row_lines` then reads the file (and refuses the first bad value)."""
        if len(self.transactions) != 1 or self.booking is None or self.booking_date is None:
            return None
        tx = self.transactions[0]
        if len(tx.unstructured) > 1 or tx.creditor_refs:
            return None
        group, currency = plan.text_group, plan.currency_group
        amount_at = tx.amount if tx.amount is not None else self.amount
        if currency[amount_at] is None:
            return None
        columns = list(zip(*rows))
        count = len(rows)
        currencies = columns[currency[amount_at]]
        if currencies.count("IDR") != count:
            return None
        amounts = columns[group[amount_at]]
        # Joined by NUL, which no XML text holds (a line end inside an amount
        # once read as two amounts, and shifted every later one).
        joined = "\x00".join(amounts) + "\x00"
        if _PLAIN_AMOUNTS.fullmatch(joined) is None:
            return None
        amounts = list(map(int, joined.replace(".00", "").split("\x00")[:-1]))
        if len(amounts) != count:
            return None
        directions = columns[group[self.direction]]
        if not set(directions) <= _DIRECTIONS.keys():
            return None
        directions = list(map(_DIRECTIONS.__getitem__, directions))
        dates = columns[group[self.booking_date]]
        day_of = {}
        for text in set(dates):
            if not text:
                return None
            try:
                day_of[text] = self._booked_on_texts(text, None, 1)
            except StatementError:
                return None
        days = list(map(day_of.__getitem__, dates))
        empty = ("",) * count
        entry_refs = columns[group[self.bank_reference]] if self.bank_reference is not None else empty
        references = columns[group[tx.bank_reference]] if tx.bank_reference is not None else empty
        if "" in references:
            references = [reference or entry_ref for reference, entry_ref in zip(references, entry_refs)]
        end_to_end = columns[group[tx.end_to_end_id]] if tx.end_to_end_id is not None else empty
        remittances = empty
        if tx.remittance is not None and tx.unstructured:
            remittances = columns[group[tx.unstructured[0]]]
        if max(map(len, references)) > 200 or max(map(len, end_to_end)) > 200 or max(map(len, remittances)) > 500:
            return None
        # The payment code as `_line` finds it: in the remittance, else in the end-to-end id.
        codes = _FIRST_PAYMENT_CODE.findall("\x00".join(remittances) + "\x00")
        if "" in codes:
            fallback = _FIRST_PAYMENT_CODE.findall("\x00".join(end_to_end) + "\x00")
            codes = [code or other for code, other in zip(codes, fallback)]
        return list(map(Line, directions, amounts, days, references, end_to_end, codes, remittances))

    def row_lines(self, rows: list[tuple], plan: _RowPlan, first: int = 1) -> list[Line]:
        """`lines` for every entry of a uniform file, from `plan`'s captured
        texts ("" stands for no text, as ElementTree's None): same rules,
        same order of checks, same messages."""
        group, currency = plan.text_group, plan.currency_group
        at_direction = group[self.direction]
        at_date = group[self.booking_date] if self.booking_date is not None else None
        at_time = group[self.booking_time] if self.booking_time is not None else None
        at_entry_ref = group[self.bank_reference] if self.bank_reference is not None else None
        at_additional = tuple(group[p] for p in self.additional)
        at_amount = (currency[self.amount], group[self.amount])

        def of(position):
            return group[position] if position is not None else None

        transactions = tuple(
            (t, (currency[tx.amount], group[tx.amount]) if tx.amount is not None else None,
             of(tx.bank_reference), of(tx.end_to_end_id), tx.remittance is not None,
             tuple(group[p] for p in tx.unstructured), tuple(group[p] for p in tx.creditor_refs))
            for t, tx in enumerate(self.transactions, start=1))
        several = len(transactions) > 1
        directions, days, rupiah = self.directions, self.days, self._rupiah_text
        whole_amount = _WHOLE_AMOUNT.fullmatch
        lines: list[Line] = []
        append = lines.append
        for n, row in enumerate(rows, start=first):
            text = row[at_direction] or None
            direction = directions.get(text) or self._direction(text, n)
            if self.booking is None:
                raise StatementError(f"Ntry[{n}]: BookgDt is missing",
                                     [{"field": f"Ntry[{n}].BookgDt", "problem": "required"}])
            date_text = row[at_date] or None if at_date is not None else None
            booked_on = days.get(("Dt", date_text)) if date_text is not None else None
            if booked_on is None:
                booked_on = self._booked_on_texts(date_text, row[at_time] or None if at_time is not None else None, n)
            entry_ref = row[at_entry_ref] if at_entry_ref is not None else ""
            if not transactions:
                if self.additional_is_list:
                    remittance = " ".join(row[g] for g in at_additional)
                else:
                    remittance = row[at_additional[0]] if at_additional else ""
                append(_line(direction, _row_rupiah(row, at_amount, n, None, rupiah, whole_amount), booked_on,
                             entry_ref, "", "", remittance))
                continue
            for t, amount, at_ref, at_e2e, has_remittance, unstructured, creditor_refs in transactions:
                if amount is None:
                    if several:
                        raise StatementError(f"Ntry[{n}].TxDtls[{t}]: a batch entry's transactions need their own Amt")
                    amount = at_amount
                remittance = ""
                if has_remittance:
                    parts = [row[g] for g in unstructured]
                    parts += [row[g] for g in creditor_refs if row[g]]
                    remittance = " ".join(parts)
                append(_line(direction, _row_rupiah(row, amount, n, t, rupiah, whole_amount), booked_on,
                             (row[at_ref] if at_ref is not None else "") or entry_ref,
                             row[at_e2e] if at_e2e is not None else "", "", remittance))
        return lines


def _row_rupiah(row: tuple, at: tuple, n: int, t: int | None, rupiah, whole_amount) -> int:
    at_currency, at_text = at
    text = row[at_text]
    if at_currency is not None and row[at_currency] == "IDR" and text:
        whole = whole_amount(text)
        if whole is not None:
            return int(whole.group(1))
    return rupiah(row[at_currency] if at_currency is not None else None, text or None, n, t)


# ------------------------------------------- camt, uniform files as text ----
#
# A bank's statement is usually one entry shape repeated: the same elements,
# attributes, nesting and order in every entry, only texts and attribute
# values differ. For such a file the tree is not built at all. The entries
# are found in the text, and one regular expression, made from the first
# entry's markup with a group for each text the reader needs, reads them all
# in C. That expression matches only an entry whose markup is the first
# entry's, byte for byte outside texts and attribute values, so matching all
# entries, back to back, proves them all of the first entry's shape (which
# xsdata binds and `_EntryReader.for_shape` checks, as on the tree path).
# Nothing is refused before the whole file is known well-formed, so that what
# is not well-formed XML is refused exactly as before (by the tree path):
# ElementTree parses the frame with the first entry; the other entries'
# markup is the first entry's (the expression), and their texts and
# attribute values hold nothing an XML parser refuses (`_plain_content`).
# That replaced a full expat pass (3.3 ms per 1,000 entries, against 1).
# Only plain files take this path: UTF-8, no comments, CDATA sections or
# processing instructions after the XML declaration, namespaces declared on
# the root only, a default namespace, entries as `<Ntry>`. Anything else
# goes to the tree path, which reads it as before.

# Amounts "150000.00", each ended by "\x00" (XML cannot carry it, so no value has one).
_PLAIN_AMOUNTS = re.compile(r"(?:[1-9][0-9]{0,17}\.00\x00)*")
_FIRST_PAYMENT_CODE = re.compile(r"(?:[^\x00]*?(?<![0-9])([0-9]{11})(?![0-9]))?[^\x00]*\x00")
_MARKUP = re.compile(r"""<(?:[^>"']|"[^"]*"|'[^']*')*>|[^<]+""")
_START_TAG = re.compile(r"""<([^\s/>]+)((?:\s+[^\s=/>]+\s*=\s*(?:"[^"]*"|'[^']*'))*)\s*(/?)>""")
_TAG_ATTRIBUTE = re.compile(r"""(\s+)([^\s=/>]+)(\s*=\s*)(?:"([^"]*)"|'([^']*)')""")
_DECLARED_ENCODING = re.compile(r"""encoding\s*=\s*["']([^"']*)["']""")
_REFERENCE = re.compile(r"&(?:(amp|lt|gt|quot|apos)|#([0-9]+)|#x([0-9a-fA-F]+));")
_ENTITIES = {"amp": "&", "lt": "<", "gt": ">", "quot": '"', "apos": "'"}
_ATTRIBUTE_BLANKS = re.compile(r"\r\n|[\r\n\t]")


def _unescaped(match: re.Match) -> str:
    name, decimal, hexadecimal = match.groups()
    return _ENTITIES[name] if name else chr(int(decimal) if decimal else int(hexadecimal, 16))


def _xml_text(raw: str) -> str:
    """Character data as the XML parser gives it: line ends as \\n, references replaced."""
    if "\r" in raw:
        raw = raw.replace("\r\n", "\n").replace("\r", "\n")
    return _REFERENCE.sub(_unescaped, raw) if "&" in raw else raw


def _xml_attribute(raw: str) -> str:
    """An attribute value as the XML parser gives it (CDATA normalization)."""
    return _REFERENCE.sub(_unescaped, _ATTRIBUTE_BLANKS.sub(" ", raw))


@dataclass(frozen=True)
class _RowPlan:
    pattern: re.Pattern
    text_group: dict  # element position -> index in a match's groups of its text
    currency_group: dict  # amount position -> index of its Ccy value, None when it has none
    attribute_groups: frozenset  # indexes that hold attribute values


def _row_plan(entry_text: str, reader: _EntryReader | None, element_count: int | None) -> _RowPlan | None:
    """The expression matching entries marked up as `entry_text` (the first
    entry, verbatim), with groups for the texts and currencies `reader`
    reads (none without a reader); None for markup it does not cover."""
    wanted: set = set()
    amounts: set = set()
    if reader is not None:
        wanted = {reader.direction, reader.amount, reader.booking_date, reader.booking_time, reader.bank_reference,
                  *reader.additional}
        amounts = {reader.amount}
        for tx in reader.transactions:
            wanted |= {tx.amount, tx.bank_reference, tx.end_to_end_id, *tx.unstructured, *tx.creditor_refs}
            amounts.add(tx.amount)
    wanted.discard(None)
    amounts.discard(None)
    parts: list[str] = []
    text_group: dict[int, int] = {}
    currency_group: dict[int, int | None] = {}
    attribute_groups = set()
    groups = 0
    position = -1
    for token in _MARKUP.findall(entry_text):
        if not token.startswith("<"):
            continue  # texts are matched by what follows each tag
        if token.startswith("</"):
            parts.append(re.escape(token) + "[^<]*")
            continue
        tag = _START_TAG.fullmatch(token)
        if tag is None:
            return None
        position += 1
        parts.append("<" + re.escape(tag.group(1)))
        currency_group[position] = None
        for blank, name, equals, double, single in _TAG_ATTRIBUTE.findall(tag.group(2)):
            if double is None or single:
                return None  # single quotes: left to the tree path
            parts.append(re.escape(blank + name + equals) + '"')
            if name == "Ccy" and position in amounts:
                parts.append('([^"<]*)"')
                currency_group[position] = groups
                attribute_groups.add(groups)
                groups += 1
            else:
                parts.append('[^"<]*"')
        closing = re.escape(token[len(tag.group(1)) + 1 + len(tag.group(2)):])
        parts.append(closing)
        if tag.group(3):  # <X/>: no text
            parts.append("[^<]*")
            if position in wanted:
                text_group[position] = -1  # the empty group at the end
        elif position in wanted:
            parts.append("([^<]*)")
            text_group[position] = groups
            groups += 1
        else:
            parts.append("[^<]*")
    if element_count is not None and position + 1 != element_count:
        return None
    parts.append("()")  # always "": the text of an element written <X/>
    empty = groups
    text_group = {p: (empty if g == -1 else g) for p, g in text_group.items()}
    return _RowPlan(re.compile("".join(parts)), text_group, currency_group, frozenset(attribute_groups))


# Characters XML 1.0 does not allow in a document: control characters other
# than tab and line ends (as UTF-8 bytes), and U+FFFE / U+FFFF.
_NOT_XML_BYTES = bytes(b for b in range(32) if b not in (9, 10, 13))
_NOT_XML_CHARACTERS = (b"\xef\xbf\xbe", b"\xef\xbf\xbf")
# Past this many decimal digits (leading zeros aside) no reference names a character.
_REFERENCE_DIGITS_MAX = 7


def _xml_character(code: int) -> bool:
    return code in (0x9, 0xA, 0xD) or 0x20 <= code <= 0xD7FF or 0xE000 <= code <= 0xFFFD or 0x10000 <= code <= 0x10FFFF


def _plain_content(raw: bytes, region: str) -> bool:
    """Nothing in the texts and attribute values of `region` (the entries)
    that makes an XML parser refuse the file: no character XML forbids, no
    "]]>", and every "&" a predefined entity or a reference to a character
    XML allows. Checked on the whole file (outside the entries, ElementTree
    parses the frame anyway), so more files are declined than need be, never
    fewer. Malformed UTF-8 and surrogates were refused by the decoder; the
    markup is checked by the row plan (`_Uniform.rows`)."""
    # Each search for a rare byte first (memchr), then for the sequence.
    if len(raw.translate(None, _NOT_XML_BYTES)) != len(raw) or (b"]" in raw and b"]]>" in raw):
        return False
    if b"\xef" in raw and any(character in raw for character in _NOT_XML_CHARACTERS):
        return False
    if b"&" not in raw:
        return True
    ampersands = region.count("&")
    references = _REFERENCE.findall(region)
    if len(references) != ampersands:  # an "&" that starts no reference
        return False
    for name, decimal, hexadecimal in references:
        if not name:
            digits = (decimal or hexadecimal).lstrip("0") or "0"
            if len(digits) > _REFERENCE_DIGITS_MAX or not _xml_character(int(digits, 10 if decimal else 16)):
                return False
    return True


class NotStreamable(Exception):
    """Found while streaming a statement (`StatementStream.pieces`): the file
    has to be read whole, by `parse`. Nothing read so far may be kept."""


def _entry_rows(plan: _RowPlan, text: str, start: int, end: int, markup: int) -> list[tuple] | None:
    """The captured texts of the entries in text[start:end]; None unless that
    text is exactly entries marked up as the first one (`markup` "<" each).
    A match's texts and attribute values hold no "<", so each match holds
    as many "<" as the first entry: with as many "<" in the text as in its
    matches, there is no other markup, and the matches are the entries, back
    to back (texts between them aside). Starting at a "<Ntry>", the text
    starts with a match."""
    rows = plan.pattern.findall(text, start, end)
    if not rows or text.count("<", start, end) != len(rows) * markup:
        return None
    if not isinstance(rows[0], tuple):
        rows = [(value,) for value in rows]
    attributes = plan.attribute_groups
    converted = text.find("&", start, end) >= 0 or text.find("\r", start, end) >= 0
    if not converted and attributes:  # an attribute value's tab or line end reads as a space
        values = "".join([row[g] for row in rows for g in attributes])
        converted = "\n" in values or "\t" in values
    if converted:
        rows = [tuple(_xml_attribute(v) if g in attributes else _xml_text(v) for g, v in enumerate(row))
                for row in rows]
    return rows


@dataclass
class _Uniform:
    """A plain camt file whose first entry xsdata bound and the reader
    understood, with the row plan made from it. Its entries are read a piece
    at a time (`rows`, `lines`); a piece whose markup is not the first
    entry's makes the file not uniform."""

    kind: str
    report: object  # the report's bindings (frame only)
    reader: _EntryReader
    plan: _RowPlan
    text: str
    first: int  # where the first entry starts
    first_end: int  # where it ends
    end: int  # where the last entry ends
    markup: int  # "<" in one entry

    def pieces(self, entries: int | None) -> list[tuple[int, int]]:
        """The entries cut into pieces of about `entries` each (None: one),
        each starting at a "<Ntry>"."""
        estimated = (self.end - self.first) // (self.first_end - self.first)  # entries, if all as long as the first
        if entries is None or estimated <= entries:
            return [(self.first, self.end)]
        cuts = -(-estimated // entries)
        step = (self.end - self.first) / cuts
        pieces, start = [], self.first
        for k in range(1, cuts):
            at = self.text.find("<Ntry>", max(start + 1, self.first + int(k * step)), self.end)
            if at < 0:
                break
            pieces.append((start, at))
            start = at
        pieces.append((start, self.end))
        return pieces

    def rows(self, start: int, end: int) -> list[tuple] | None:
        return _entry_rows(self.plan, self.text, start, end, self.markup)

    def lines(self, rows: list[tuple], entries_before: int) -> list[Line]:
        lines = self.reader.column_lines(rows, self.plan)
        return lines if lines is not None else self.reader.row_lines(rows, self.plan, first=entries_before + 1)

    def all_uniform(self, pieces: list[tuple[int, int]]) -> bool:
        return all(_entry_rows(self.plan, self.text, start, end, self.markup) is not None for start, end in pieces)


    def each(self, entries_per_piece: int | None) -> Iterator[list[Line]]:
        """The lines, a piece at a time; NotStreamable when the file is not
        uniform after all. A value the reader refuses is refused only once
        every later piece is known uniform: otherwise the tree path reads the
        file and decides."""
        pieces = self.pieces(entries_per_piece)
        entries = 0
        for i, (start, end) in enumerate(pieces):
            with collector_paused():
                rows = self.rows(start, end)
                if rows is None:
                    raise NotStreamable("an entry is not shaped as the first")
                try:
                    lines = self.lines(rows, entries)
                except Exception:  # only once every later piece is known uniform (so well-formed)
                    if self.all_uniform(pieces[i + 1:]):
                        raise
                    raise NotStreamable("an entry is not shaped as the first") from None
            entries += len(rows)
            yield lines

    def read(self, entries_per_piece: int | None = None) -> list[Line] | None:
        """Every line (`each`); None when the file is not uniform after all."""
        try:
            return [line for lines in self.each(entries_per_piece) for line in lines]
        except NotStreamable:
            return None


def _uniform_camt(raw: bytes, fmt: str | None) -> _Uniform | None:
    """The uniform reading of a plain camt file (see above), or None for
    anything else (the tree path reads it). Refuses only what the tree path
    refuses, with the same message, and only once the whole file is known
    well-formed: the frame and first entry by ElementTree, the entries by
    `_plain_content` here and their markup by `_Uniform.rows`."""
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    start = 1 if text.startswith("\ufeff") else 0
    if text.startswith("<?xml", start):
        declaration_end = text.find("?>", start)
        if declaration_end < 0:
            return None
        encoding = _DECLARED_ENCODING.search(text, start, declaration_end)
        if encoding is not None and encoding.group(1).lower() not in ("utf-8", "utf8"):
            return None
        start = declaration_end + 2
    first = text.find("<Ntry>")
    if first < 0:
        return None
    first_end = text.find("</Ntry>", first) + len("</Ntry>")
    last_end = text.rfind("</Ntry>") + len("</Ntry>")
    if first_end < len("</Ntry>") or text.count("<Ntry>", first, first_end) != 1:
        return None
    # No comment, CDATA section, DTD or processing instruction: looked for
    # outside the entries, which hold no markup but the first entry's (`_entry_rows`).
    if any(markup in part for part in (text[start:first_end], text[last_end:]) for markup in ("<?", "<!")) \
            or "<!" in text[:start]:
        return None
    root_at = text.find("<", start)
    root = _MARKUP.match(text, root_at) if root_at >= 0 else None
    # Namespaces declared on the root only: looked for outside the entries too.
    if root is None or root.end() > first or not text.startswith("<Document", root_at) \
            or "xmlns" in text[root.end():first_end] or "xmlns" in text[last_end:]:
        return None
    if not _plain_content(raw, text[first:last_end]):
        return None
    try:
        small = ET.fromstring((text[:first_end] + text[last_end:]).encode())  # the frame and the first entry
    except ET.ParseError:
        return None
    markup = text.count("<", first, first_end)

    def only_entries() -> bool:
        """Nothing but entries shaped as the first between the first and the
        last: then the file is well-formed, and an error the frame or the
        first entry shows is the file's."""
        plain = _row_plan(text[first:first_end], None, None)
        return plain is not None and _entry_rows(plain, text, first, last_end, markup) is not None

    try:
        kind, version = _root_kind(small)
        if fmt is not None and kind != fmt:
            raise StatementError(f"the format was given as {fmt}, but the document is {kind}.001.{version}")
        bindings = _bindings(kind, version)
        frame = _camt_frame(small, kind, version, bindings)
        if frame is None:
            return None
        bound_report, entries, entry_class, ns = frame
        if len(entries) != 1:
            return None
        elements = list(entries[0].iter())
        reader = _EntryReader.for_shape(entries[0], elements, 1, entry_class, ns, kind, version, bindings)
    except Exception:  # a refusal, or a crash: either only once the file is known well-formed
        if not only_entries():
            return None
        raise
    if reader is None:
        return None
    plan = _row_plan(text[first:first_end], reader, len(elements))
    if plan is None:
        return None
    return _Uniform(kind, bound_report, reader, plan, text, first, first_end, last_end, markup)


def _read_camt_uniform(raw: bytes, fmt: str | None, entries_per_piece: int | None = None) -> Statement | None:
    """The statement of a plain file whose entries all have one shape, read
    without building its tree; None for anything else (the tree path reads
    it). Refuses only what the tree path refuses, with the same message.
    `entries_per_piece` reads it as `stream` does (the same statement)."""
    uniform = _uniform_camt(raw, fmt)
    if uniform is None:
        return None
    lines = uniform.read(entries_per_piece)
    return None if lines is None else _statement(uniform.kind, uniform.report, lines)


# ------------------------------------------------------------- streaming ----
#
# A settlement import writes each line as soon as it is read, so that
# PostgreSQL stores one piece of the file while Python reads the next
# (`reconcile.import_statement`). That needs, before the first line, what
# the whole file decides: the statement's days (to fetch the payments its
# lines pair with), its id and account.
# * A uniform camt file with a period (FrToDt) has them in its frame. Any
#   surprise later (a piece not uniform, a line booked outside the period)
#   raises NotStreamable, and the file is read whole instead.
# * A CSV file is split into rows first (csv, in C), its distinct booking
#   dates give the days; the rows are then made lines a piece at a time.
# Either way the statement, its lines and every refusal are exactly `parse`'s.

STREAM_ENTRIES_PER_PIECE = 500


@dataclass
class StatementStream:
    statement: Statement  # the header: format, id, account, days, SHA-256; no lines
    _pieces: Callable[[int], Iterator[list[Line]]]

    def pieces(self, entries_per_piece: int = STREAM_ENTRIES_PER_PIECE) -> Iterator[list[Line]]:
        """The lines, a piece of about `entries_per_piece` entries at a time,
        in order. Raises StatementError as `parse` would (the same first
        refusal) and NotStreamable when the file must be read whole after all."""
        return self._pieces(entries_per_piece)


def stream(raw: bytes, fmt: str | None = None, *, statement_ref: str = "", account: str = "") -> StatementStream | None:
    """The statement as `parse` reads it, its lines to come a piece at a
    time (a CSV file, or a uniform camt file with a period); None for any
    other file (read it with `parse`). Refuses what `parse` refuses before
    any line."""
    fmt = _format_given(raw, fmt)
    digest = _sha256_meanwhile(raw)
    with collector_paused():
        return _stream_csv(raw, statement_ref, account, digest) if fmt == "csv" else _stream_camt(raw, fmt, digest)


_hashing: ThreadPoolExecutor | None = None


def _sha256_meanwhile(raw: bytes) -> Future:
    """The file's SHA-256, computed on a helper thread while this one reads
    the file: hashlib lets go of the GIL for large buffers (1.6 ms of a
    5,000-entry camt file's reading)."""
    global _hashing
    if _hashing is None:
        _hashing = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kanal-sha256")
    return _hashing.submit(lambda: hashlib.sha256(raw).digest())


def _stream_csv(raw: bytes, statement_ref: str, account: str, digest: Future) -> StatementStream | None:
    table = _CsvTable.read(raw)
    days = table.days()
    if days is None or table.split_error is not None or sum(1 for row in table.rows if row) > STATEMENT_ENTRIES_MAX:
        return None  # `parse` says why
    sha256 = digest.result()
    statement = Statement("csv", statement_ref.strip() or f"csv:{sha256.hex()[:16]}", account.strip(), *days, [], sha256)

    def pieces(rows_per_piece: int) -> Iterator[list[Line]]:
        rows, n = table.rows, 1
        for start in range(0, len(rows), rows_per_piece):
            with collector_paused():
                lines = table.lines(rows[start:start + rows_per_piece], n)
            n += len(lines)
            if lines:
                yield lines

    return StatementStream(statement, pieces)


def _stream_camt(raw: bytes, fmt: str | None, digest: Future) -> StatementStream | None:
    _refuse_dtd(raw)
    uniform = _uniform_camt(raw, fmt)
    if uniform is None:
        return None
    period = _period(uniform.report)
    if period is None or not all(isinstance(day, dt.date) for day in period) or period[0] > period[1] \
            or period[0] < STATEMENT_DAY_MIN or period[1] > STATEMENT_DAY_MAX:
        return None  # `parse` says why
    try:
        account_id = _account(uniform.report.acct)
    except (AttributeError, TypeError):
        return None
    sha256 = digest.result()
    statement = Statement(uniform.kind, uniform.report.id or f"{uniform.kind}:{sha256.hex()[:16]}", account_id,
                          *period, [], sha256)

    def pieces(entries_per_piece: int) -> Iterator[list[Line]]:
        lines_read = 0
        for lines in uniform.each(entries_per_piece):
            days = {line.booked_on for line in lines}
            if min(days) < statement.from_date or max(days) > statement.to_date:
                raise NotStreamable("a line is booked outside the statement's period")
            lines_read += len(lines)
            if lines_read > STATEMENT_ENTRIES_MAX:
                raise NotStreamable("more lines than a statement may have")  # `parse` says how many
            yield lines

    return StatementStream(statement, pieces)


# --------------------------------------------------------------- writing ----


def render(statement: Statement, fmt: str) -> bytes:
    if fmt == "csv":
        return render_csv(statement.lines)
    if fmt in ("camt.053", "camt.054"):
        return render_camt(statement, fmt)
    raise ValueError(f"unknown format {fmt!r}")


def render_csv(lines: list[Line]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for line in lines:
        writer.writerow([line.booked_on.isoformat(), line.direction, line.amount_rupiah, line.bank_reference,
                         line.end_to_end_id, line.payment_code, line.remittance])
    return out.getvalue().encode()


def render_camt(statement: Statement, fmt: str, *, created_at: dt.datetime | None = None) -> bytes:
    """camt.053.001.02 (end-of-day statement) or camt.054.001.02 (notification),
    one entry per line, references in TxDtls/Refs, the kode iuran in Ustrd."""
    created = (created_at or dt.datetime.now(dt.UTC)).replace(microsecond=0).isoformat()
    e = lambda text: escape(str(text))
    entries = []
    for n, line in enumerate(statement.lines, start=1):
        remittance = line.remittance or (f"IURAN BPJSTK {line.payment_code}" if line.payment_code else "")
        refs = ""
        if line.bank_reference:
            refs += f"<AcctSvcrRef>{e(line.bank_reference)}</AcctSvcrRef>"
        refs += f"<EndToEndId>{e(line.end_to_end_id or 'NOTPROVIDED')}</EndToEndId>"
        entries.append(
            f"<Ntry><NtryRef>{n}</NtryRef><Amt Ccy=\"IDR\">{line.amount_rupiah}.00</Amt>"
            f"<CdtDbtInd>{'CRDT' if line.direction == 'credit' else 'DBIT'}</CdtDbtInd><Sts>BOOK</Sts>"
            f"<BookgDt><Dt>{line.booked_on.isoformat()}</Dt></BookgDt>"
            + (f"<AcctSvcrRef>{e(line.bank_reference)}</AcctSvcrRef>" if line.bank_reference else "")
            + "<BkTxCd><Prtry><Cd>VA</Cd></Prtry></BkTxCd>"
            f"<NtryDtls><TxDtls><Refs>{refs}</Refs>"
            f"<AmtDtls><TxAmt><Amt Ccy=\"IDR\">{line.amount_rupiah}.00</Amt></TxAmt></AmtDtls>"
            + (f"<RmtInf><Ustrd>{e(remittance)}</Ustrd></RmtInf>" if remittance else "")
            + "</TxDtls></NtryDtls></Ntry>"
        )
    account = f"<Acct><Id><Othr><Id>{e(statement.account or 'KANAL-SETTLEMENT')}</Id></Othr></Id><Ccy>IDR</Ccy></Acct>"
    period = (
        f"<FrToDt><FrDtTm>{statement.from_date.isoformat()}T00:00:00+07:00</FrDtTm>"
        f"<ToDtTm>{statement.to_date.isoformat()}T23:59:59+07:00</ToDtTm></FrToDt>"
    )
    header = f"<GrpHdr><MsgId>{e(statement.statement_ref)}</MsgId><CreDtTm>{created}</CreDtTm></GrpHdr>"
    ref = f"<Id>{e(statement.statement_ref)}</Id><CreDtTm>{created}</CreDtTm>"
    if fmt == "camt.053":
        # An end-of-day statement carries its balances: opening 0 (a settlement
        # account swept daily) and closing = credits - debits.
        net = sum(line.amount_rupiah if line.direction == "credit" else -line.amount_rupiah for line in statement.lines)
        balances = "".join(
            f"<Bal><Tp><CdOrPrtry><Cd>{code}</Cd></CdOrPrtry></Tp><Amt Ccy=\"IDR\">{abs(amount)}.00</Amt>"
            f"<CdtDbtInd>{'CRDT' if amount >= 0 else 'DBIT'}</CdtDbtInd><Dt><Dt>{day.isoformat()}</Dt></Dt></Bal>"
            for code, amount, day in (("OPBD", 0, statement.from_date), ("CLBD", net, statement.to_date))
        )
        body = f"<BkToCstmrStmt>{header}<Stmt>{ref}{period}{account}{balances}{''.join(entries)}</Stmt></BkToCstmrStmt>"
        namespace = "camt.053.001.02"
    else:
        body = (f"<BkToCstmrDbtCdtNtfctn>{header}<Ntfctn>{ref}{period}{account}{''.join(entries)}</Ntfctn>"
                "</BkToCstmrDbtCdtNtfctn>")
        namespace = "camt.054.001.02"
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Document xmlns="urn:iso:std:iso:20022:tech:xsd:{namespace}">'
            f"{body}</Document>\n").encode()
