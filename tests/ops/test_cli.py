"""`kanal check`, `kanal statement`, `kanal reconcile` and `kanal reconciliations`
run as a user runs them: a subprocess against the configured database."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import sys

from gateway.domain.periods import WIB
from tests.ops.conftest import tampering


async def kanal(database_url: str, *args: str) -> tuple[int, str, str]:
    env = {**os.environ, "KANAL_DATABASE_URL": database_url, "KANAL_LOG_FORMAT": "json"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from gateway.cli import main; main()", *args,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    return process.returncode, out.decode(), err.decode()


async def test_check_exits_non_zero_on_a_violation_and_names_the_row(database_url, pool, paid_ledger):
    code, out, err = await kanal(database_url, "check", "--only", "entries_balance", "--only", "trial_balance")
    assert code == 0, err
    assert "healthy" in out
    entry_id = paid_ledger.payments[0].journal_entry_id
    async with tampering(pool) as conn:
        await conn.execute(
            "update postings set amount_rupiah = amount_rupiah - 10 where id = (select min(id) from postings where entry_id = $1)",
            entry_id,
        )
    code, out, _ = await kanal(database_url, "check")
    assert code == 1
    assert f"entry_id={entry_id}" in out and "VIOLATIONS: entries_balance, trial_balance" in out
    code, out, _ = await kanal(database_url, "check", "--json", "--only", "entries_balance")
    assert code == 1
    assert json.loads(out)["checks"][0]["rows"][0]["entry_id"] == entry_id


async def test_statement_then_reconcile_then_export(database_url, paid_ledger, clock, tmp_path):
    today = clock().astimezone(WIB).date().isoformat()
    xml = tmp_path / "stmt.xml"
    code, _, err = await kanal(database_url, "statement", today, "--format", "camt.053", "-o", str(xml))
    assert code == 0, err
    # Plant one discrepancy: the bank booked payment REF000001 for 1 rupiah more.
    amount = paid_ledger.payments[1].amount_rupiah
    text = xml.read_text()
    assert text.count(f'<Amt Ccy="IDR">{amount}.00</Amt>') == 2
    xml.write_text(text.replace(f'<Amt Ccy="IDR">{amount}.00</Amt>', f'<Amt Ccy="IDR">{amount + 1}.00</Amt>'))
    items_csv = tmp_path / "items.csv"
    code, out, err = await kanal(
        database_url, "reconcile", str(xml), "--export", str(items_csv), "--fail-on-discrepancy"
    )
    assert code == 1, err
    assert "5 lines: 4 matched, 0 in bank not ledger, 0 in ledger not bank, 1 amount mismatch" in out
    assert f"payment={paid_ledger.payments[1].payment_id}" in out
    with items_csv.open() as f:
        kinds = sorted(row["kind"] for row in csv.DictReader(f))
    assert kinds == ["amount_mismatch", "matched", "matched", "matched", "matched"]
    code, out, _ = await kanal(database_url, "reconcile", str(xml))
    assert code == 0 and "already imported: nothing changed" in out
    code, out, _ = await kanal(database_url, "reconciliations", "list", "--json")
    assert [r["amount_mismatch"] for r in json.loads(out)] == [1]
    code, out, _ = await kanal(database_url, "reconciliations", "export", "1", "--format", "json")
    assert code == 0 and len(json.loads(out)["items"]) == 5


async def test_reconcile_refuses_a_bad_file_with_the_reason(database_url, tmp_path):
    bad = tmp_path / "bank.csv"
    bad.write_text("booking_date,amount_rupiah\n2025-10-01,12.5\n")
    code, _, err = await kanal(database_url, "reconcile", str(bad))
    assert code == 1
    assert "line 2.amount_rupiah: 12.5 has a fraction of a rupiah" in err


async def test_coverage_ranks_by_the_exact_ratio_then_by_regency_code(database_url, payments, bills):
    """Melawi 80/76707 (10.43 bp) covers more than Bengkayang 92/96229 (9.56 bp):
    both round to 10 bp, and Bengkayang came first by the snapshot's order."""
    from bank_adapters.base import PayCommand, PayOutcome

    for n, (code, workers) in enumerate((("6107", 92), ("6110", 80))):
        info = await bills.create(workers=workers, regency_code=code)
        result = await payments.pay(PayCommand(info.payment_code, info.total_rupiah, "snap:BANKKALBAR", f"COV-{n}", f"RC{n:05d}"))
        assert result.outcome == PayOutcome.POSTED
    status, out, err = await kanal(database_url, "coverage")
    assert status == 0, err
    codes = [line.split()[0] for line in out.splitlines() if line.startswith("  ")]
    assert codes[:2] == ["6110", "6107"], out
    assert codes[2:] == sorted(codes[2:]), out  # the rest tie at 0: by regency code
