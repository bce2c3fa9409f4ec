"""Reading statements fast without reading them differently.

camt entries are read by element position (`_read_camt`), with xsdata binding
the document's frame and one entry of each shape. These tests hold that
reading to the full xsdata binding of the whole document
(`_parse_camt_bindings`, the reading every camt file got before), on
generated statements and on entry shapes the generator never writes, and
check that a bad entry deep in a large file is refused with its position.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.ops.statements import (
    Line,
    Statement,
    StatementError,
    _bindings,
    _parse_camt_bindings,
    _read_camt,
    _root_kind,
    _xml_kind,
    _xml_root,
    parse,
    render,
)

DAY = dt.date(2025, 10, 1)
NS = {"camt.053": "urn:iso:std:iso:20022:tech:xsd:camt.053.001.02",
      "camt.054": "urn:iso:std:iso:20022:tech:xsd:camt.054.001.02"}
# Characters XML 1.0 can carry (no controls, no lone surrogates).
xml_text = st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=12)


def by_bindings(raw: bytes) -> Statement:
    """The whole document bound by xsdata, every entry read from its bindings."""
    kind, version = _xml_kind(raw)
    statement = _parse_camt_bindings(raw, kind, version, _bindings(kind, version))
    return statement


def same_reading(raw: bytes) -> Statement:
    root = _xml_root(raw)
    kind, version = _root_kind(root)
    by_position = _read_camt(root, kind, version, _bindings(kind, version))
    assert by_position is not None, "the document was left to the bindings path"
    assert by_position == by_bindings(raw), "position reading and bindings reading differ"
    assert dataclasses.replace(parse(raw), sha256=b"") == by_position
    return by_position


lines_strategy = st.lists(
    st.builds(
        Line,
        direction=st.sampled_from(["credit", "debit"]),
        amount_rupiah=st.integers(1, 10**15),
        booked_on=st.dates(dt.date(2024, 1, 1), dt.date(2026, 12, 31)),
        bank_reference=xml_text,
        end_to_end_id=xml_text,
        payment_code=st.sampled_from(["", "12345678901", "00000000017"]),
        remittance=xml_text,
    ),
    min_size=1, max_size=25,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=lines_strategy, fmt=st.sampled_from(["camt.053", "camt.054"]))
def test_generated_statements_read_as_the_bindings_read_them(lines, fmt):
    statement = Statement("csv", "STMT-1", "ACCT-1", min(l.booked_on for l in lines), max(l.booked_on for l in lines), lines)
    read = same_reading(render(statement, fmt))
    assert [(l.direction, l.amount_rupiah, l.booked_on, l.bank_reference) for l in read.lines] == \
        [(l.direction, l.amount_rupiah, l.booked_on, l.bank_reference) for l in lines]


def document(entries: str, kind: str = "camt.053", namespace: str | None = None) -> bytes:
    namespace = namespace or NS[kind]
    group, report = ("BkToCstmrStmt", "Stmt") if kind == "camt.053" else ("BkToCstmrDbtCdtNtfctn", "Ntfctn")
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><Document xmlns="{namespace}"><{group}>'
        "<GrpHdr><MsgId>M1</MsgId><CreDtTm>2025-10-02T01:00:00+07:00</CreDtTm></GrpHdr>"
        f"<{report}><Id>S-HANDMADE</Id><CreDtTm>2025-10-02T01:00:00+07:00</CreDtTm>"
        "<Acct><Id><Othr><Id>KALBAR-01</Id></Othr></Id></Acct>"
        f"{entries}</{report}></{group}></Document>"
    ).encode()


def entry(inner: str, *, amount: str = "1500.00", direction: str = "CRDT",
          booking: str = "<Dt>2025-10-01</Dt>", ref: str = "<AcctSvcrRef>E-REF</AcctSvcrRef>") -> str:
    return (f'<Ntry><Amt Ccy="IDR">{amount}</Amt><CdtDbtInd>{direction}</CdtDbtInd><Sts>BOOK</Sts>'
            f"<BookgDt>{booking}</BookgDt>{ref}<BkTxCd/>{inner}</Ntry>")


def test_entry_shapes_the_generator_never_writes_read_as_the_bindings_read_them():
    batch = entry(
        "<NtryDtls><TxDtls><Refs><EndToEndId>PRQ-1</EndToEndId></Refs>"
        '<AmtDtls><TxAmt><Amt Ccy="IDR">1000</Amt></TxAmt></AmtDtls><RmtInf><Ustrd>IURAN BPJSTK 12345678901</Ustrd></RmtInf></TxDtls>'
        '<TxDtls><Refs><AcctSvcrRef>T-REF</AcctSvcrRef></Refs><AmtDtls><TxAmt><Amt Ccy="IDR"> 500.0 </Amt></TxAmt></AmtDtls>'
        "<RmtInf><Ustrd>first</Ustrd><Ustrd/><Strd><CdtrRefInf><Ref>RF18539007547034</Ref></CdtrRefInf></Strd><Strd/></RmtInf>"
        "</TxDtls></NtryDtls>"
    )
    no_details = entry("<AddtlNtryInf>SETORAN 98765432109</AddtlNtryInf>", direction=" DBIT ", amount="700")
    late_evening = entry("<NtryDtls><TxDtls/></NtryDtls>", booking="<DtTm>2025-10-01T18:30:00Z</DtTm>", ref="")
    read = same_reading(document(batch + no_details + late_evening + batch))
    assert [(l.direction, l.amount_rupiah, l.bank_reference, l.end_to_end_id, l.payment_code) for l in read.lines] == [
        ("credit", 1000, "E-REF", "PRQ-1", "12345678901"),  # a batch: one line per transaction
        ("credit", 500, "T-REF", "", ""),
        ("debit", 700, "E-REF", "", "98765432109"),  # no details: the entry is the line
        ("credit", 1500, "", "", ""),  # one transaction without an amount takes the entry's
        ("credit", 1000, "E-REF", "PRQ-1", "12345678901"),
        ("credit", 500, "T-REF", "", ""),
    ]
    assert read.lines[1].remittance == "first  RF18539007547034"
    assert read.lines[3].booked_on == dt.date(2025, 10, 2)  # 18:30 UTC is past midnight in Pontianak
    assert (read.statement_ref, read.account) == ("S-HANDMADE", "KALBAR-01")


def test_a_later_version_with_amounts_on_the_transaction_reads_the_same():
    inner = ('<NtryDtls><TxDtls><Refs><EndToEndId>PRQ-8</EndToEndId></Refs><Amt Ccy="IDR">250000</Amt>'
             "<CdtDbtInd>CRDT</CdtDbtInd><RmtInf><Ustrd>IURAN BPJSTK 12345678901</Ustrd></RmtInf></TxDtls></NtryDtls>")
    raw = document(entry(inner, amount="250000.00").replace("<Sts>BOOK</Sts>", "<Sts><Cd>BOOK</Cd></Sts>"),
                   namespace="urn:iso:std:iso:20022:tech:xsd:camt.053.001.08")
    read = same_reading(raw)
    assert [(l.amount_rupiah, l.end_to_end_id, l.payment_code) for l in read.lines] == [(250000, "PRQ-8", "12345678901")]


def test_a_file_of_ever_new_entry_shapes_is_bound_whole_and_reads_the_same():
    # Entry k carries k remittance lines: 300 shapes, past what reading by position is worth.
    entries = "".join(entry("<NtryDtls><TxDtls><RmtInf>" + "<Ustrd>IURAN BPJSTK 12345678901</Ustrd>" * k
                            + "</RmtInf></TxDtls></NtryDtls>") for k in range(1, 301))
    raw = document(entries)
    root = _xml_root(raw)
    assert _read_camt(root, *_root_kind(root), _bindings(*_root_kind(root))) is None
    read = parse(raw)
    assert dataclasses.replace(read, sha256=b"") == by_bindings(raw)
    assert len(read.lines) == 300
    assert read.lines[1].remittance == "IURAN BPJSTK 12345678901 IURAN BPJSTK 12345678901"


def big_statement(fmt: str = "camt.053", count: int = 5000) -> bytes:
    lines = [Line("credit", 100_000 + n, DAY, f"BR{n:09d}", f"PRQ-{n}", f"{n:011d}") for n in range(1, count + 1)]
    return render(Statement("csv", "STMT-BIG", "KALBAR-01", DAY, DAY, lines), fmt)


def corrupt(raw: bytes, n: int, old: bytes, new: bytes) -> bytes:
    """Replace `old` by `new` inside the n-th entry only."""
    start = -1
    for _ in range(n):
        start = raw.index(b"<Ntry>", start + 1)
    end = raw.index(b"</Ntry>", start)
    assert old in raw[start:end]
    return raw[:start] + raw[start:end].replace(old, new, 1) + raw[end:]


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        (b"<EndToEndId>", b"<Nonsense/><EndToEndId>",
         r"does not follow its schema: Ntry\[4321\]: Unknown property .*TransactionReferences2:.*Nonsense"),
        (b'<Amt Ccy="IDR">104321.00</Amt><CdtDbtInd>', b"<CdtDbtInd>",
         r"does not follow its schema: Ntry\[4321\]: .*missing 1 required keyword-only argument: 'amt'"),
        (b"<CdtDbtInd>CRDT</CdtDbtInd>", b"<CdtDbtInd>CREDIT</CdtDbtInd>", r"Ntry\[4321\]\.CdtDbtInd: 'CREDIT' is not CRDT or DBIT"),
        (b"<Dt>2025-10-01</Dt>", b"<Dt>2025-10-32</Dt>", r"Ntry\[4321\]\.BookgDt\.Dt: '2025-10-32' is not an ISO date"),
        (b'<TxAmt><Amt Ccy="IDR">', b'<TxAmt><Amt Ccy="USD">', r"Ntry\[4321\]\.TxDtls\[1\]\.Amt: currency USD"),
        (b"<TxAmt><Amt Ccy=\"IDR\">104321.00", b"<TxAmt><Amt Ccy=\"IDR\">104321.50",
         r"Ntry\[4321\]\.TxDtls\[1\]\.Amt: 104321\.50 has a fraction of a rupiah"),
    ],
)
def test_a_bad_entry_deep_in_a_big_file_is_refused_with_its_position(old, new, problem):
    with pytest.raises(StatementError, match=problem):
        parse(corrupt(big_statement(), 4321, old, new))


def test_a_schema_error_anywhere_wins_over_a_value_error_in_an_earlier_entry():
    # As when the whole document was bound before any entry was read.
    raw = corrupt(big_statement(count=300), 10, b'<TxAmt><Amt Ccy="IDR">', b'<TxAmt><Amt Ccy="USD">')
    raw = corrupt(raw, 250, b"<EndToEndId>", b"<Nonsense/><EndToEndId>")
    with pytest.raises(StatementError, match=r"Ntry\[250\]: Unknown property"):
        parse(raw)


def test_two_statements_in_one_file_are_still_refused_as_before():
    raw = document(entry("")).replace(b"</Stmt>", b"</Stmt><Stmt><Id>S2</Id><CreDtTm>2025-10-02T01:00:00+07:00</CreDtTm>"
                                                   b"<Acct><Id><Othr><Id>K</Id></Othr></Id></Acct></Stmt>")
    with pytest.raises(StatementError, match="the document has 2 Stmt blocks"):
        parse(raw)


@pytest.mark.parametrize(
    "prolog",
    [
        "<!--" + "x" * 40_000 + '--><!DOCTYPE Document [<!ENTITY a "b">]>',  # past the first chunk read
        '<!DOCTYPE Document SYSTEM "file:///etc/passwd">',
        '<!DOCTYPE d [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>',
    ],
)
def test_a_dtd_is_refused_wherever_the_prolog_puts_it(prolog):
    raw = big_statement(count=3).replace(b"<Document", prolog.encode() + b"<Document", 1)
    with pytest.raises(StatementError, match="DTDs and entities are not allowed"):
        parse(raw)


def test_csv_columns_in_any_order_with_bom_and_crlf_read_the_same():
    canonical = big_statement("csv", count=50)
    header, *rows = canonical.decode().splitlines()
    columns = header.split(",")
    order = list(reversed(range(len(columns))))
    shuffled = "\r\n".join(",".join(row.split(",")[i] for i in order) for row in [header, *rows]) + "\r\n"
    assert parse(b"\xef\xbb\xbf" + shuffled.encode()).lines == parse(canonical).lines
