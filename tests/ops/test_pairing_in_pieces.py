"""Pairing a statement a piece at a time (as a streamed import does) gives
exactly what pairing it whole gives: a line's pairing depends only on the
lines before it. Random statements and ledgers, with the cases that make the
greedy order matter: references listed twice, references shared by two
payments, lines that only an end-to-end id or a payment code can pair,
amounts that differ, debits, and payments no line lists."""

from __future__ import annotations

import datetime as dt
import random

from gateway.ops.reconcile import Pairer, pair
from gateway.ops.statements import Line, Statement

DAY = dt.date(2025, 10, 1)
CASES = 400


def random_ledger_and_statement(rng: random.Random) -> tuple[list[dict], Statement]:
    payments = []
    for n in range(rng.randrange(0, 40)):
        payments.append({
            "direction": rng.choice(["credit", "credit", "credit", "debit"]),
            "id": n + 1,
            "idempotency_key": f"PRQ-{rng.randrange(30)}",
            "payment_code": f"{rng.randrange(20):011d}",
            "npp": f"NPP{rng.randrange(5)}",
            "amount_rupiah": rng.choice([1000, 2000, 3000]),
            "bank_reference": rng.choice(["", f"BR{rng.randrange(25)}"]),
        })
    payments.sort(key=lambda p: (p["direction"], p["id"]))  # as expected_payments orders them
    lines = []
    for _ in range(rng.randrange(1, 50)):
        p = rng.choice(payments) if payments and rng.random() < 0.8 else None
        if p is None:
            lines.append(Line(rng.choice(["credit", "debit"]), rng.choice([1000, 5000]), DAY, f"BR{rng.randrange(40)}",
                              f"PRQ-{rng.randrange(40)}", rng.choice(["", f"{rng.randrange(30):011d}"])))
            continue
        key = rng.random()
        lines.append(Line(
            p["direction"],
            p["amount_rupiah"] if rng.random() < 0.85 else p["amount_rupiah"] + 500,
            DAY,
            p["bank_reference"] if key < 0.6 else "",
            p["idempotency_key"] if 0.3 < key < 0.8 else "",
            p["payment_code"] if key > 0.5 else "",
        ))
    return payments, Statement("csv", "S", "A", DAY, DAY, lines)


def test_pairing_in_pieces_is_pairing_whole():
    rng = random.Random(20251125)
    kinds_seen: set[str] = set()
    keys_seen: set[str] = set()
    for case in range(CASES):
        payments, statement = random_ledger_and_statement(rng)
        whole = pair(statement, payments)
        pairer = Pairer(payments)
        lines: list = []
        at = 0
        while at < len(statement.lines):
            size = rng.randrange(1, 6)
            lines += pairer.pair(statement.lines[at:at + size])
            at += size
        assert lines == whole.lines, case
        assert pairer.ledger_only() == whole.ledger_only, case
        assert pairer.counts == whole.counts, case
        kinds_seen |= {pairing[0] for pairing in lines} | ({"ledger_only"} if whole.ledger_only else set())
        keys_seen |= {pairing[1] for pairing in lines if pairing[1]}
    # The generator reaches every verdict, so the comparison covers them all.
    assert kinds_seen == {"matched", "bank_only", "amount_mismatch", "ledger_only"}
    assert keys_seen == {"bank_reference", "end_to_end_id", "payment_code"}
