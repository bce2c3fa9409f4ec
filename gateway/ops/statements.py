"""Bank settlement statements: read CSV and ISO 20022 camt.053 / camt.054, and
write them (for tests, benchmarks and `kanal statement`).

camt XML is read through typed bindings generated from the official ISO 20022
schemas (`pyiso20022`, parsed by `xsdata`): an element the schema does not
know, or a missing required one, is an error, not a silent skip. Every
version of camt.053.001.xx and camt.054.001.xx that `pyiso20022` ships is
accepted; the version is taken from the document's namespace. Before that,
`defusedxml` refuses DTDs and entities (no XXE, no entity bombs).

Every amount becomes whole rupiah (`int`): a statement in another currency,
or an amount with a fraction of a rupiah, is refused with the line named.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import importlib
import io
import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from xml.sax.saxutils import escape

import defusedxml.ElementTree as safe_xml
from defusedxml import DefusedXmlException

STATEMENT_BYTES_MAX = 32 * 1_048_576
STATEMENT_ENTRIES_MAX = 200_000
FORMATS = ("csv", "camt.053", "camt.054")
CSV_COLUMNS = ("booking_date", "direction", "amount_rupiah", "bank_reference", "end_to_end_id", "payment_code", "remittance")
CSV_REQUIRED = ("booking_date", "amount_rupiah")
_PAYMENT_CODE = re.compile(r"(?<![0-9])([0-9]{11})(?![0-9])")
_NAMESPACE = re.compile(r"^\{urn:iso:std:iso:20022:tech:xsd:(camt\.05[34])\.001\.([0-9]{2})\}Document$")


class StatementError(ValueError):
    """The file is not a statement we can read; `errors` name where and why."""

    def __init__(self, detail: str, errors: list[dict] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or [{"field": "statement", "problem": detail}]


@dataclass(frozen=True)
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
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise StatementError(f"{where}: {value!r} is not an amount", [{"field": where, "problem": "not a number"}]) from None
    if amount != amount.to_integral_value():
        raise StatementError(
            f"{where}: {value} has a fraction of a rupiah; rupiah amounts are whole",
            [{"field": where, "problem": "must be a whole number of rupiah"}],
        )
    if amount <= 0:
        raise StatementError(f"{where}: {value} must be positive (the direction says credit or debit)",
                             [{"field": where, "problem": "must be greater than 0"}])
    return int(amount)


def detect_format(raw: bytes) -> str:
    head = raw.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    if head != b"<":
        return "csv"
    return _xml_kind(raw)[0]


def parse(raw: bytes, fmt: str | None = None, *, statement_ref: str = "", account: str = "") -> Statement:
    """Read a statement. `fmt` None or "auto" detects it; `statement_ref` and
    `account` name a CSV statement (camt files carry their own)."""
    if len(raw) > STATEMENT_BYTES_MAX:
        raise StatementError(f"the statement is {len(raw)} bytes; the limit is {STATEMENT_BYTES_MAX} bytes")
    if not raw.strip():
        raise StatementError("the statement is empty")
    fmt = detect_format(raw) if fmt in (None, "", "auto") else fmt
    if fmt not in FORMATS:
        raise StatementError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)} or auto",
                             [{"field": "format", "problem": f"expected one of {', '.join(FORMATS)}"}])
    statement = _parse_csv(raw, statement_ref, account) if fmt == "csv" else _parse_camt(raw, fmt)
    if len(statement.lines) > STATEMENT_ENTRIES_MAX:
        raise StatementError(f"the statement has {len(statement.lines)} entries; the limit is {STATEMENT_ENTRIES_MAX}")
    statement.sha256 = hashlib.sha256(raw).digest()
    if not statement.statement_ref:
        statement.statement_ref = f"{fmt}:{statement.sha256.hex()[:16]}"
    return statement


# ------------------------------------------------------------------- CSV ----


def _parse_csv(raw: bytes, statement_ref: str, account: str) -> Statement:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise StatementError(f"the CSV is not UTF-8: {error}") from None
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in reader.fieldnames or []]
    missing = [c for c in CSV_REQUIRED if c not in header]
    unknown = [c for c in header if c not in CSV_COLUMNS]
    if missing or unknown:
        problems = [{"field": c, "problem": "required column is missing"} for c in missing]
        problems += [{"field": c, "problem": f"unknown column; known: {', '.join(CSV_COLUMNS)}"} for c in unknown]
        raise StatementError("the CSV header " + "; ".join(f"{p['field']}: {p['problem']}" for p in problems), problems)
    reader.fieldnames = header
    lines = []
    for n, row in enumerate(reader, start=2):
        if None in row:
            raise StatementError(f"line {n}: more fields than columns", [{"field": f"line {n}", "problem": "too many fields"}])
        values = dict.fromkeys(CSV_COLUMNS, "") | {key: (value or "").strip() for key, value in row.items()}
        get = values.get
        try:
            booked_on = dt.date.fromisoformat(get("booking_date"))
        except ValueError:
            raise StatementError(
                f"line {n}, booking_date: {get('booking_date')!r} is not a date (YYYY-MM-DD)",
                [{"field": f"line {n}.booking_date", "problem": "expected YYYY-MM-DD"}],
            ) from None
        direction = {"": "credit", "c": "credit", "crdt": "credit", "credit": "credit",
                     "d": "debit", "dbit": "debit", "debit": "debit"}.get(get("direction").lower())
        if direction is None:
            raise StatementError(
                f"line {n}, direction: {get('direction')!r} is not credit or debit",
                [{"field": f"line {n}.direction", "problem": "expected credit (C) or debit (D)"}],
            )
        code = get("payment_code")
        if code and not re.fullmatch(r"[0-9]{11}", code):
            raise StatementError(f"line {n}, payment_code: {code!r} is not 11 digits",
                                 [{"field": f"line {n}.payment_code", "problem": "expected 11 digits"}])
        lines.append(_line(direction, whole_rupiah(get("amount_rupiah"), f"line {n}.amount_rupiah"), booked_on,
                           get("bank_reference"), get("end_to_end_id"), code, get("remittance")))
    if not lines:
        raise StatementError("the CSV has a header but no entries")
    days = [line.booked_on for line in lines]
    return Statement("csv", statement_ref.strip(), account.strip(), min(days), max(days), lines)


def _line(direction, amount, booked_on, bank_reference, end_to_end_id, code, remittance) -> Line:
    return Line(
        direction, amount, booked_on, bank_reference[:200], end_to_end_id[:200],
        code or payment_code_in(remittance) or payment_code_in(end_to_end_id), remittance[:500],
    )


# ------------------------------------------------------------------ camt ----


def _xml_kind(raw: bytes) -> tuple[str, str]:
    try:
        root = safe_xml.fromstring(raw, forbid_dtd=True)
    except DefusedXmlException as error:
        raise StatementError(f"the XML is refused: {type(error).__name__} (DTDs and entities are not allowed)") from None
    except safe_xml.ParseError as error:
        raise StatementError(f"the XML is not well-formed: {error}") from None
    match = _NAMESPACE.match(root.tag)
    if not match:
        raise StatementError(
            f"the XML root is {root.tag}; expected an ISO 20022 camt.053 or camt.054 Document "
            "(namespace urn:iso:std:iso:20022:tech:xsd:camt.053.001.xx or camt.054.001.xx)"
        )
    return match.group(1), match.group(2)


def _bindings(kind: str, version: str):
    module = f"pyiso20022.camt.{kind.replace('.', '_')}_001_{version}"
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError:
        raise StatementError(f"{kind}.001.{version} is not a version we can read") from None


def _parse_camt(raw: bytes, fmt: str) -> Statement:
    from xsdata.exceptions import ParserError
    from xsdata.formats.dataclass.parsers import XmlParser

    kind, version = _xml_kind(raw)
    if kind != fmt:
        raise StatementError(f"the format was given as {fmt}, but the document is {kind}.001.{version}")
    bindings = _bindings(kind, version)
    try:
        document = XmlParser().from_bytes(raw, bindings.Document)
    except (ParserError, ValueError, TypeError) as error:
        raise StatementError(f"the {kind}.001.{version} document does not follow its schema: {error}") from None
    if kind == "camt.053":
        reports = document.bk_to_cstmr_stmt.stmt
    else:
        reports = document.bk_to_cstmr_dbt_cdt_ntfctn.ntfctn
    if len(reports) != 1:
        what = "Stmt" if kind == "camt.053" else "Ntfctn"
        raise StatementError(f"the document has {len(reports)} {what} blocks; import them one statement per file")
    report = reports[0]
    lines: list[Line] = []
    for n, entry in enumerate(report.ntry, start=1):
        lines += _entry_lines(entry, n)
    if not lines:
        raise StatementError("the statement has no entries")
    days = [line.booked_on for line in lines]
    from_date, to_date = min(days), max(days)
    period = getattr(report, "fr_to_dt", None)
    if period is not None and period.fr_dt_tm is not None and period.to_dt_tm is not None:
        from_date, to_date = _as_date(period.fr_dt_tm), _as_date(period.to_dt_tm)
        from_date, to_date = min(from_date, *days), max(to_date, *days)
    return Statement(kind, report.id, _account(report.acct), from_date, to_date, lines)


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
    booked_on = _as_date(booked.dt if booked.dt is not None else booked.dt_tm)
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
