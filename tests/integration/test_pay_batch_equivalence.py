"""kanal_pay_batch (migration 0018) against kanal_pay applied to the items one
after the other: a differential test.

The same world (employers with PU and BPU workers, bills for four months, some
with late-fee lines, payments committed earlier, one of them reversed,
reversal tombstones) is the starting state of every batch. Each random batch
runs twice from it: once through kanal_pay_batch, once as kanal_pay calls in
array order; each run is its own transaction, checked as at commit (`set
constraints all immediate` fires the deferred balance check), snapshotted
and rolled back. The answers and everything written must be the same, except
surrogate ids and the order in which they are handed out: rows are compared
by (channel, idempotency_key), never by id. A few batches are also committed
into two copies of the world (CREATE DATABASE ... TEMPLATE), so commit itself
and the NOTIFY wake-up are compared too.

The batches must reach every branch; the test counts what it reached and
fails if a kind never appeared, so it cannot quietly become trivial.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import random
import uuid
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import asyncpg
import pytest

from bank_adapters.base import ReverseCommand, ReverseOutcome
from gateway.domain.periods import WIB
from gateway.service import employers as employer_service
from gateway.service.payments import PaymentsService
from gateway.store import database
from tests.conftest import TestClock, make_kpj, make_nik, make_npp

SEED = 20250310
BATCHES = 320
COMMITTED_BATCHES = 6

# The world's timeline (Asia/Pontianak): each month is reported after it ends,
# later reports carry late fees (DENDA) for the employer's earlier open bills.
REPORTS = (
    ("2024-11", dt.datetime(2024, 12, 5, 10, tzinfo=WIB)),
    ("2024-12", dt.datetime(2025, 1, 20, 10, tzinfo=WIB)),
    ("2025-01", dt.datetime(2025, 2, 20, 10, tzinfo=WIB)),
    ("2025-02", dt.datetime(2025, 3, 5, 10, tzinfo=WIB)),
)
HISTORY_AT = dt.datetime(2025, 3, 6, 9, tzinfo=WIB)
# Batches pay "now" (most bills payable; BPU 2024-11 already expired) or
# "late" (the 2024-11 bills expired). A bill reported after its due date
# counts its 90 days from the report: PU and BPU 2024-12 (reported on
# 2025-01-20) are payable until 2025-04-20, BPU 2025-01 until 2025-05-21.
PAY_NOW = dt.datetime(2025, 3, 10, 11, tzinfo=WIB)
PAY_LATE = dt.datetime(2025, 4, 20, 11, tzinfo=WIB)

CHANNEL_A = "test:BANKA"
CHANNEL_B = "test:BANKB"
CHANNEL_NEW = "test:NEWBANK"  # no clearing account until a batch posts on it
UNKNOWN_CODE = "99999999999"
# Unknown codes that sort before every billed code and after (the batcher
# sorts by code: an unknown code ahead of a payable bill under the same key
# once got the wrong answer, tests/reliability/test_pay_batch_review3.py).
UNKNOWN_CODES = ("00000000000", UNKNOWN_CODE)  # serial 0 is never issued

# (size class, regency, workers' segments)
EMPLOYERS = (
    ("large", "6171", ("PU", "PU", "PU")),
    ("medium", "6104", ("PU", "PU")),
    ("micro", "6171", ("PU",)),
    ("small", "6106", ("BPU", "BPU", "BPU")),
    ("large", "6104", ("PU", "PU", "BPU")),
)

OUTCOMES = ("posted", "replayed", "conflict", "reversed", "unknown_code", "paid_bill", "expired", "wrong_amount")

_BATCH_SQL = """
select * from kanal_pay_batch($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::timestamptz[])
 order by n
"""
_BATCH_UNORDERED_SQL = """
select * from kanal_pay_batch($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::timestamptz[])
"""
_ONE_SQL = "select * from kanal_pay($1, $2, $3, $4, $5, $6)"

_PAYMENTS_SQL = """
select id, channel, idempotency_key, bill_id, payment_code, npp, amount_rupiah, bank_reference, status,
       posted_at, reversed_at
  from payments
"""
_ENTRIES_SQL = """
select j.id, p.channel, p.idempotency_key, j.kind, j.npp, j.created_at, r.kind as reverses_kind
  from journal_entries j
  join payments p on p.id = j.payment_id
  left join journal_entries r on r.id = j.reverses_entry_id
"""
_POSTINGS_SQL = """
select p.channel, p.idempotency_key, j.kind, a.code, s.npp, s.amount_rupiah
  from postings s
  join journal_entries j on j.id = s.entry_id
  join payments p on p.id = j.payment_id
  join accounts a on a.id = s.account_id
"""
_BILLS_SQL = "select id, payment_code, status from bills"
_COVERAGE_MONTHS_SQL = """
select m.participant_id, m.program, m.period, m.npp, p.channel, p.idempotency_key
  from coverage_months m join payments p on p.id = m.payment_id
"""
_PARTICIPANT_COVERAGE_SQL = """
select participant_id, program, npp, regency_code, segment, last_paid_period from participant_coverage
"""
_COVERAGE_DELTAS_SQL = """
select d.regency_code, d.program, d.segment, d.last_paid_period, d.delta, p.channel, p.idempotency_key
  from coverage_deltas d left join payments p on p.id = d.payment_id
"""
_OUTBOX_SQL = "select topic, npp, payload from outbox"
_ACCOUNTS_SQL = "select code, kind, npp from accounts"
_TOMBSTONES_SQL = "select channel, idempotency_key from reversal_tombstones"

_WORLD_BILLS_SQL = """
select b.id, b.payment_code, b.npp, b.kind, b.period, b.total_rupiah, b.expires_at, b.status,
       coalesce(array_agg(distinct array[l.participant_id::text, l.program])
                filter (where l.participant_id is not null), '{}') as pairs,
       count(distinct l.participant_id) as workers,
       bool_or(l.program = 'DENDA') as denda
  from bills b join bill_lines l on l.bill_id = b.id
 group by b.id
 order by b.id
"""
_LAST_PAID_SQL = "select participant_id, program, last_paid_period from participant_coverage"


# ------------------------------------------------------------------ world ----


@dataclass
class Bill:
    id: int
    code: str
    npp: str
    kind: str
    period: str
    total: int
    expires_at: dt.datetime
    status: str
    pairs: frozenset[tuple[int, str]]
    workers: int
    denda: bool


@dataclass
class Committed:
    channel: str
    key: str
    code: str
    amount: int
    status: str


@dataclass
class World:
    bills: list[Bill]
    by_code: dict[str, Bill]
    committed: list[Committed]
    tombstones: list[tuple[str, str]]
    taken: set[tuple[str, str]]
    last_paid: dict[tuple[int, str], str | None]
    channels_with_clearing: set[str]


@dataclass(frozen=True)
class Item:
    channel: str
    key: str
    code: str
    amount: int
    reference: str | None
    now: dt.datetime
    kind: str  # how the generator made it, for the branch counts


async def _add_employer(conn: asyncpg.Connection, n: int, size: str, regency: str, segments: tuple[str, ...]):
    registered = await employer_service.register_employer(conn, make_npp(900 + n), f"PT Setara {n}", regency, size, 2)
    employer = await conn.fetchrow("select * from employers where npp = $1", registered.employer["npp"])
    rows = []
    for i, segment in enumerate(segments):
        k = 9_000_000 + n * 100 + i
        wage = 5_000_000 + i * 250_000 if segment == "PU" else 2_000_000 + i * 100_000
        rows.append(employer_service.ParticipantRow(i + 1, make_kpj(k), make_nik(k, regency), f"Pekerja {k}", wage, segment))
    result = await employer_service.add_participants(conn, employer, rows, "all_or_nothing")
    assert result.errors == [], result.errors
    return employer


async def build_world(pool: asyncpg.Pool) -> World:
    """Employers, four months of bills (late fees on the later PU bills), and a
    history: payments committed on two channels (a newer month of a worker
    paid before its older ones), one payment reversed, two tombstones."""
    async with pool.acquire() as conn:
        employers = []
        for n, (size, regency, segments) in enumerate(EMPLOYERS):
            async with conn.transaction():
                employers.append(await _add_employer(conn, n, size, regency, segments))
        for period, at in REPORTS:
            for employer in employers:
                async with conn.transaction():
                    await employer_service.submit_wage_report(conn, employer, period, {}, at, 90)
        rows = await conn.fetch(_WORLD_BILLS_SQL)
    codes = {(r["npp"], r["kind"], r["period"]): r["payment_code"] for r in rows if r["kind"] == "PU"}
    bpu = sorted((r["id"], r["period"], r["payment_code"]) for r in rows if r["kind"] == "BPU")
    e1, e2, e3 = (employers[i]["npp"] for i in range(3))
    history = [
        (CHANNEL_A, "hist-e2-feb", codes[(e2, "PU", "2025-02")]),  # newer month first: the batch pays older ones
        (CHANNEL_A, "hist-reversed", codes[(e1, "PU", "2024-12")]),  # reversed below: the bill is open again
        (CHANNEL_B, "hist-e3-jan", codes[(e3, "PU", "2025-01")]),
        (CHANNEL_B, "hist-bpu-feb", next(code for _, period, code in bpu if period == "2025-02")),
    ]
    totals = {r["payment_code"]: r["total_rupiah"] for r in rows}
    async with pool.acquire() as conn:
        for channel, key, code in history:
            async with conn.transaction():
                row = await conn.fetchrow(_ONE_SQL, channel, key, code, totals[code], "REF-" + key, HISTORY_AT)
            assert row["outcome"] == "posted", (key, row["outcome"])
    service = PaymentsService(pool, clock=TestClock(HISTORY_AT + dt.timedelta(hours=1)))
    assert (await service.reverse(ReverseCommand(CHANNEL_A, "hist-reversed"))).outcome == ReverseOutcome.REVERSED
    tombstones = [(CHANNEL_A, "tomb-a"), (CHANNEL_NEW, "tomb-new")]
    for channel, key in tombstones:
        assert (await service.reverse(ReverseCommand(channel, key))).outcome == ReverseOutcome.UNKNOWN
    await service.close()

    rows = await pool.fetch(_WORLD_BILLS_SQL)
    bills = [
        Bill(
            r["id"], r["payment_code"], r["npp"], r["kind"], r["period"], r["total_rupiah"], r["expires_at"],
            r["status"], frozenset((int(p), program) for p, program in r["pairs"]), r["workers"], r["denda"],
        )
        for r in rows
    ]
    payments = await pool.fetch(_PAYMENTS_SQL)
    committed = [
        Committed(p["channel"], p["idempotency_key"], p["payment_code"], p["amount_rupiah"], p["status"]) for p in payments
    ]
    last_paid = {(r["participant_id"], r["program"]): r["last_paid_period"] for r in await pool.fetch(_LAST_PAID_SQL)}
    accounts = {r["code"] for r in await pool.fetch(_ACCOUNTS_SQL)}
    world = World(
        bills=bills,
        by_code={b.code: b for b in bills},
        committed=committed,
        tombstones=tombstones,
        taken={(c.channel, c.key) for c in committed} | set(tombstones),
        last_paid=last_paid,
        channels_with_clearing={c for c in (CHANNEL_A, CHANNEL_B, CHANNEL_NEW) if "clearing:" + c in accounts},
    )
    # The world has what the batches need.
    assert CHANNEL_NEW not in world.channels_with_clearing
    assert any(b.denda and b.status == "open" for b in bills)
    assert any(b.kind == "BPU" for b in bills) and any(b.kind == "PU" and b.workers > 1 for b in bills)
    assert {c.status for c in committed} == {"posted", "reversed"}
    return world


# ---------------------------------------------------------------- batches ----


# How items are made, with weights; see BatchMaker.item.
ITEM_KINDS = {
    "fresh": 30,
    "fresh_wrong_amount": 5,
    "fresh_late": 6,
    "same_bill_new_key": 8,
    "sibling_bill": 12,
    "dup_key_same": 6,
    "dup_key_other_code": 5,
    "dup_key_other_amount": 3,
    "committed_replay": 4,
    "committed_conflict": 3,
    "committed_reversed": 3,
    "tombstone": 3,
    "unknown_code": 4,
}


class BatchMaker:
    """Random batches, seeded. Items are drawn so that every branch of
    kanal_pay and every reason for an item not to be "plain" comes up."""


    def __init__(self, world: World, seed: int) -> None:
        self.world = world
        self.rng = random.Random(seed)
        self.serial = 0
        self.kinds = list(ITEM_KINDS)
        self.weights = list(ITEM_KINDS.values())

    def fresh_key(self) -> str:
        self.serial += 1
        return f"k{self.serial}"

    def channel(self) -> str:
        return self.rng.choices((CHANNEL_A, CHANNEL_B, CHANNEL_NEW), (45, 35, 20))[0]

    def reference(self, key: str) -> str | None:
        return self.rng.choices(("REF-" + key, "", None, "R" * 250 + key), (80, 8, 6, 6))[0]

    def batch(self, size: int) -> list[Item]:
        items: list[Item] = []
        while len(items) < size:
            item = self.item(self.rng.choices(self.kinds, self.weights)[0], items)
            if item is not None:
                items.append(item)
        if self.rng.random() < 0.5:
            # The batcher's order (gateway/store/batching.py).
            items.sort(key=lambda i: (i.code, i.channel, i.key))
        return items

    def item(self, kind: str, earlier: list[Item]) -> Item | None:
        rng, world = self.rng, self.world
        key = self.fresh_key()
        bill = rng.choice(world.bills)
        channel, code, amount, now = self.channel(), bill.code, bill.total, PAY_NOW
        if kind == "fresh_wrong_amount":
            amount = bill.total + rng.choice((-1, 1, -bill.total + 1))
        elif kind == "fresh_late":
            now = PAY_LATE
        elif kind in ("same_bill_new_key", "sibling_bill", "dup_key_same", "dup_key_other_code", "dup_key_other_amount"):
            if not earlier:
                return None
            first = rng.choice(earlier)
            if kind == "same_bill_new_key":
                code, amount = first.code, world.by_code[first.code].total if first.code in world.by_code else first.amount
            elif kind == "sibling_bill":
                # Another bill covering one of the same workers (another month).
                first_bill = world.by_code.get(first.code)
                siblings = [b for b in world.bills if first_bill and b is not first_bill and b.pairs & first_bill.pairs]
                if not siblings:
                    return None
                sibling = rng.choice(siblings)
                code, amount = sibling.code, sibling.total
            elif kind == "dup_key_same":
                channel, key, code, amount, now = first.channel, first.key, first.code, first.amount, first.now
            elif kind == "dup_key_other_code":
                channel, key = first.channel, first.key
            else:
                channel, key, code, amount = first.channel, first.key, first.code, first.amount + 1
        elif kind in ("committed_replay", "committed_conflict", "committed_reversed"):
            wanted = "reversed" if kind == "committed_reversed" else "posted"
            prior = rng.choice([c for c in world.committed if c.status == wanted])
            channel, key = prior.channel, prior.key
            if kind != "committed_conflict" or rng.random() < 0.3:
                code, amount = prior.code, prior.amount
            if kind == "committed_conflict" and code == prior.code:
                amount = prior.amount + 7
        elif kind == "tombstone":
            channel, key = rng.choice(world.tombstones)
        elif kind == "unknown_code":
            code = rng.choice(UNKNOWN_CODES)
            amount = rng.choice((10_000, bill.total))
        if rng.random() < 0.05:
            now = PAY_LATE if now == PAY_NOW else PAY_NOW
        return Item(channel, key, code, amount, self.reference(key), now, kind)


def plain_items(world: World, items: list[Item]) -> set[int]:
    """The items 0018 writes set-based, by its header's definition; n from 1."""
    keys: set[tuple[str, str]] = set()
    codes: set[str] = set()
    covered: set[tuple[int, str]] = set()
    plain = set()
    for n, item in enumerate(items, start=1):
        bill = world.by_code.get(item.code)
        pairs = bill.pairs if bill else frozenset()
        if (
            (item.channel, item.key) not in keys
            and item.code not in codes
            and (item.channel, item.key) not in world.taken
            and bill is not None
            and bill.status == "open"
            and bill.expires_at > item.now
            and bill.total == item.amount
            and not pairs & covered
        ):
            plain.add(n)
        keys.add((item.channel, item.key))
        codes.add(item.code)
        covered |= pairs
    return plain


def two_payable_bills(world: World) -> tuple[Bill, Bill]:
    """A PU bill with late fees and a BPU bill, both payable at PAY_NOW."""
    payable = [b for b in world.bills if b.status == "open" and b.expires_at > PAY_NOW]
    pu = next(b for b in payable if b.kind == "PU" and b.denda and b.workers > 1)
    bpu = next(b for b in payable if b.kind == "BPU")
    return pu, bpu


def batch_sizes(rng: random.Random, count: int) -> list[int]:
    sizes = [0, 1, 1, 2]
    while len(sizes) < count:
        sizes.append(rng.choice((1, 2, 3, 4, 5, 6, 6, 8, 8, 10, 12)))
    return sizes


# ------------------------------------------------------------- the runs ----


def _arrays(items: list[Item]) -> list[list]:
    return [
        [i.channel for i in items],
        [i.key for i in items],
        [i.code for i in items],
        [i.amount for i in items],
        [i.reference for i in items],
        [i.now for i in items],
    ]


async def run_batch(conn: asyncpg.Connection, items: list[Item]) -> list[asyncpg.Record]:
    rows = await conn.fetch(_BATCH_SQL, *_arrays(items))
    assert [r["n"] for r in rows] == list(range(1, len(items) + 1))
    return rows


async def run_sequential(conn: asyncpg.Connection, items: list[Item]) -> list[asyncpg.Record]:
    return [
        await conn.fetchrow(_ONE_SQL, i.channel, i.key, i.code, i.amount, i.reference, i.now) for i in items
    ]


VARIANTS = {"batch": run_batch, "sequential": run_sequential}


def _multiset(rows) -> Counter:
    return Counter(tuple(r) for r in rows)


async def snapshot(conn: asyncpg.Connection, results: list[asyncpg.Record]) -> dict:
    """Everything a user or ops could notice, with ids replaced by keys."""
    payments = await conn.fetch(_PAYMENTS_SQL)
    key_of = {p["id"]: (p["channel"], p["idempotency_key"]) for p in payments}
    entries = await conn.fetch(_ENTRIES_SQL)
    entry_of = {e["id"]: (e["channel"], e["idempotency_key"], e["kind"]) for e in entries}

    def answer(r: asyncpg.Record) -> tuple:
        return (
            r["outcome"],
            r["amount_rupiah"],
            r["payer_name"],
            json.dumps(r["details"]),
            r["period"],
            r["due_date"],
            None if r["payment_id"] is None else key_of[r["payment_id"]],
            None if r["entry_id"] is None else entry_of[r["entry_id"]],
            r["posted_at"],
        )

    outbox = []
    for row in await conn.fetch(_OUTBOX_SQL):
        payload = dict(row["payload"])
        if payload.get("payment_id") is not None:
            payload["payment_id"] = list(key_of[payload["payment_id"]])
        outbox.append((row["topic"], row["npp"], json.dumps(payload, sort_keys=True)))
    return {
        "answers": [answer(r) for r in results],
        "payments": _multiset(tuple(p)[1:] for p in payments),
        "bills": _multiset(await conn.fetch(_BILLS_SQL)),
        "journal_entries": _multiset(tuple(e)[1:] for e in entries),
        "postings": _multiset(await conn.fetch(_POSTINGS_SQL)),
        "coverage_months": _multiset(await conn.fetch(_COVERAGE_MONTHS_SQL)),
        "participant_coverage": _multiset(await conn.fetch(_PARTICIPANT_COVERAGE_SQL)),
        "coverage_deltas": _multiset(await conn.fetch(_COVERAGE_DELTAS_SQL)),
        "outbox": Counter(outbox),
        "accounts": _multiset(await conn.fetch(_ACCOUNTS_SQL)),
        "reversal_tombstones": _multiset(await conn.fetch(_TOMBSTONES_SQL)),
    }


async def run_and_roll_back(pool: asyncpg.Pool, variant: str, items: list[Item]) -> dict:
    async with pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        try:
            results = await VARIANTS[variant](conn, items)
            # What commit would check: the deferred balance check of every new entry.
            await conn.execute("set constraints all immediate")
            return await snapshot(conn, results)
        finally:
            await transaction.rollback()


def differences(batch: dict, sequential: dict) -> dict:
    """Per part, what only the batch and only the sequential run produced."""
    found = {}
    for name, b in sequential.items():
        a = batch[name]
        if a == b:
            continue
        if isinstance(a, Counter):
            found[name] = {"only_batch": sorted(map(repr, a - b)), "only_sequential": sorted(map(repr, b - a))}
        elif len(a) != len(b):
            found[name] = {"batch": a, "sequential": b}
        else:
            found[name] = [(n, x, y) for n, (x, y) in enumerate(zip(a, b, strict=True), start=1) if x != y]
    return found


def _describe(items: list[Item]) -> list[tuple]:
    return [(i.kind, i.channel, i.key, i.code, i.amount, i.now.isoformat()) for i in items]


# --------------------------------------------------------------- counting ----


@dataclass
class Reached:
    counts: Counter = field(default_factory=Counter)

    def see(self, world: World, items: list[Item], answers: list[tuple]) -> None:
        """Count outcomes and the situations the brief names, from the
        sequential answers (the reference)."""
        counts = self.counts
        if not items:
            counts["empty batch"] += 1
        if len(items) == 1:
            counts["batch of one"] += 1
        plain = plain_items(world, items)
        posted_pairs: dict[tuple[int, str], str] = {}
        for n, (item, answer) in enumerate(zip(items, answers, strict=True), start=1):
            outcome = answer[0]
            counts["outcome " + outcome] += 1
            counts["item " + item.kind + " -> " + outcome] += 1
            earlier = items[: n - 1]
            same_key = [e for e in earlier if (e.channel, e.key) == (item.channel, item.key)]
            if any(e.code == item.code for e in same_key):
                counts["same key twice in a batch, same code"] += 1
            if any(e.code != item.code for e in same_key):
                counts["same key twice in a batch, different codes"] += 1
            if any(e.code == item.code and e.key != item.key for e in earlier):
                counts["two keys for one bill in a batch"] += 1
            if (item.channel, item.key) in world.taken and item.kind.startswith(("committed", "tombstone")):
                counts["committed key " + item.kind + " -> " + outcome] += 1
            if n in plain:
                assert outcome == "posted", (n, _describe(items))
                counts["posted set-based (plain)"] += 1
            elif outcome == "posted":
                counts["posted through kanal_pay"] += 1
            bill = world.by_code.get(item.code)
            if outcome == "paid_bill" and bill.status == "paid":
                counts["paid_bill for a bill paid before the batch"] += 1
            if outcome != "posted":
                continue
            if any(c.code == bill.code and c.status == "reversed" for c in world.committed):
                counts["posted a bill whose payment was reversed"] += 1
            if item.channel not in world.channels_with_clearing and not any(
                e.channel == item.channel and a[0] == "posted" for e, a in zip(earlier, answers, strict=False)
            ):
                counts["posted on a channel without a clearing account"] += 1
            if bill.kind == "PU" and bill.workers > 1:
                counts["posted PU bill with several workers"] += 1
            if bill.kind == "BPU":
                counts["posted BPU bill"] += 1
            if bill.denda:
                counts["posted bill with DENDA lines"] += 1
            if bill.status == "open" and any(
                world.last_paid.get(pair) is not None and world.last_paid[pair] > bill.period for pair in bill.pairs
            ):
                counts["posted older month than one committed"] += 1
            shared = [posted_pairs[pair] for pair in bill.pairs if pair in posted_pairs]
            if shared:
                counts["two posted bills of a batch cover one worker"] += 1
                if any(period > bill.period for period in shared):
                    counts["worker paid for an older month after a newer one in a batch"] += 1
            for pair in bill.pairs:
                posted_pairs[pair] = max(posted_pairs.get(pair, bill.period), bill.period)


MUST_REACH = (
    *("outcome " + o for o in OUTCOMES),
    "empty batch",
    "batch of one",
    "same key twice in a batch, same code",
    "same key twice in a batch, different codes",
    "two keys for one bill in a batch",
    "committed key committed_replay -> replayed",
    "committed key committed_conflict -> conflict",
    "committed key committed_reversed -> reversed",
    "committed key tombstone -> reversed",
    "posted set-based (plain)",
    "posted through kanal_pay",
    "posted on a channel without a clearing account",
    "posted PU bill with several workers",
    "posted BPU bill",
    "posted bill with DENDA lines",
    "posted older month than one committed",
    "posted a bill whose payment was reversed",
    "paid_bill for a bill paid before the batch",
    "two posted bills of a batch cover one worker",
    "worker paid for an older month after a newer one in a batch",
)


# ------------------------------------------------------------------ tests ----


async def test_the_snapshot_runs_the_deferred_balance_check(pool):
    """The runs are checked as at commit: `set constraints all immediate`
    fires journal_entries_balanced, so an unbalanced batch could not pass."""
    world = await build_world(pool)
    bill = next(b for b in world.bills if b.status == "open")
    async with pool.acquire() as conn:
        with pytest.raises(asyncpg.CheckViolationError, match="does not balance"):
            async with conn.transaction():
                payment = await conn.fetchval(
                    """insert into payments (channel, idempotency_key, bill_id, payment_code, npp, amount_rupiah, status)
                       values ('probe', 'probe', $1, $2, $3, $4, 'posted') returning id""",
                    bill.id, bill.code, bill.npp, bill.total,
                )
                await conn.execute("insert into journal_entries (kind, payment_id, npp) values ('payment', $1, 'X')", payment)
                await conn.execute("set constraints all immediate")
                pytest.fail("the deferred check did not run")


async def test_pay_batch_equals_kanal_pay_item_by_item(pool):
    world = await build_world(pool)
    maker = BatchMaker(world, SEED)
    reached = Reached()
    mismatches = []
    for number, size in enumerate(batch_sizes(maker.rng, BATCHES)):
        items = maker.batch(size)
        batch = await run_and_roll_back(pool, "batch", items)
        sequential = await run_and_roll_back(pool, "sequential", items)
        reached.see(world, items, sequential["answers"])
        found = differences(batch, sequential)
        if found:
            mismatches.append((number, _describe(items), found))
    assert mismatches == [], f"{len(mismatches)} of {BATCHES} batches differ; the first: {mismatches[:2]}"
    missing = [name for name in MUST_REACH if reached.counts[name] == 0]
    assert missing == [], (missing, dict(reached.counts))
    print("\nbranches reached:", json.dumps(dict(sorted(reached.counts.items())), indent=1))


async def test_committed_batches_equal_committed_kanal_pay_with_their_wake_up(admin_url, database_url):
    """A few batches committed for real, each into its own copy of the world,
    with a listener on kanal_events: commit (and its deferred checks) passes
    in both, the rows are the same, and so is the NOTIFY wake-up."""
    world_pool = await database.create_pool(database_url, size_min=1, size_max=2)
    try:
        world = await build_world(world_pool)
    finally:
        await world_pool.close()
    world_name = urlsplit(database_url).path.lstrip("/")
    maker = BatchMaker(world, SEED + 1)
    # An empty batch, one whose every posting is plain (only the set-based
    # statement notifies), then random ones.
    first, second = two_payable_bills(world)
    batches = [
        [],
        [
            Item(CHANNEL_NEW, "c-1", first.code, first.total, "R1", PAY_NOW, "fresh"),
            Item(CHANNEL_A, "c-2", second.code, second.total, "R2", PAY_NOW, "fresh"),
        ],
        *(maker.batch(size) for size in (9, 12, 10, 12)[: COMMITTED_BATCHES - 2]),
    ]
    assert plain_items(world, batches[1]) == {1, 2}
    notified = Counter()
    admin = await asyncpg.connect(admin_url)
    try:
        for items in batches:
            states = {}
            for variant in VARIANTS:
                name = f"kanal_equiv_{uuid.uuid4().hex[:12]}"
                await admin.execute(f'create database "{name}" template "{world_name}"')
                try:
                    states[variant] = await _run_and_commit(database.database_url_with_name(admin_url, name), variant, items)
                finally:
                    await admin.execute(f'drop database if exists "{name}" with (force)')
            assert differences(states["batch"], states["sequential"]) == {}, _describe(items)
            posted = any(a[0] == "posted" for a in states["sequential"]["answers"])
            assert states["sequential"]["notified"] == (["payment.posted"] if posted else [])
            notified[posted] += 1
    finally:
        await admin.close()
    assert notified[True] >= 2 and notified[False] >= 1, notified


async def _run_and_commit(url: str, variant: str, items: list[Item]) -> dict:
    heard: list[str] = []
    listener = await asyncpg.connect(url)
    pool = await database.create_pool(url, size_min=1, size_max=1)
    try:
        await listener.add_listener("kanal_events", lambda *args: heard.append(args[3]))
        async with pool.acquire() as conn:
            async with conn.transaction():
                results = await VARIANTS[variant](conn, items)
            state = await snapshot(conn, results)
        # The wake-up is delivered after commit; a round trip on the listener
        # lets it arrive.
        for _ in range(20):
            await listener.execute("select 1")
            if heard:
                break
            await asyncio.sleep(0.01)
        state["notified"] = heard
        return state
    finally:
        await pool.close()
        await listener.close()


async def test_results_are_numbered_in_item_order_and_mismatched_arrays_are_refused(pool):
    world = await build_world(pool)
    first, second = two_payable_bills(world)
    # Interleaved: items 2 and 4 are plain, 1, 3 and 5 go through kanal_pay.
    items = [
        Item(CHANNEL_A, "n-1", UNKNOWN_CODE, 1000, None, PAY_NOW, "unknown_code"),
        Item(CHANNEL_A, "n-2", first.code, first.total, "R2", PAY_NOW, "fresh"),
        Item(CHANNEL_A, "n-3", first.code, first.total, "R3", PAY_NOW, "same_bill_new_key"),
        Item(CHANNEL_B, "n-4", second.code, second.total, "R4", PAY_NOW, "fresh"),
        Item(CHANNEL_A, "n-2", first.code, first.total, "R2", PAY_NOW, "dup_key_same"),
    ]
    assert plain_items(world, items) == {2, 4}
    async with pool.acquire() as conn:
        # As the function returns them, without the batcher's ORDER BY: each
        # n exactly once (the plain items' answers come first).
        transaction = conn.transaction()
        await transaction.start()
        try:
            unordered = await conn.fetch(_BATCH_UNORDERED_SQL, *_arrays(items))
        finally:
            await transaction.rollback()
        assert sorted(r["n"] for r in unordered) == [1, 2, 3, 4, 5]
        async with conn.transaction():
            rows = await run_batch(conn, items)
    assert [(r["n"], r["outcome"]) for r in rows] == [
        (1, "unknown_code"), (2, "posted"), (3, "paid_bill"), (4, "posted"), (5, "replayed"),
    ]
    assert rows[4]["payment_id"] == rows[1]["payment_id"]
    assert {(r["n"], r["outcome"]) for r in unordered} == {(r["n"], r["outcome"]) for r in rows}
    arrays = _arrays(items)
    for index in range(len(arrays)):
        for wrong in (arrays[index][:-1], [*arrays[index], arrays[index][0]]):
            mismatched = [wrong if i == index else a for i, a in enumerate(arrays)]
            with pytest.raises(asyncpg.InvalidParameterValueError, match="kanal_pay_batch: the arrays differ in length"):
                await pool.fetch(_BATCH_SQL, *mismatched)
    assert await pool.fetchval("select count(*) from payments where idempotency_key like 'n-%'") == 2
