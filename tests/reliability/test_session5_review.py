"""Fourth review of session 5 (3cf4a96..7106aa1): SNAP migration 0006's
snap_authorize against 0004's, and the settings the docs say the functions run
with.

`test_snap_authorize_0006_answers_and_claims_what_0004_did` runs one grid of
requests (every token kind x claim x partner x virtual account, faults present
and absent, an external id claimed twice in one group, earlier claims retried
and reused) through 0006's function and through 0004's body (loaded in a
transaction that is rolled back, with 0005's setting), and compares the
answers and the claims row by row.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import asyncpg

REPO = Path(__file__).resolve().parents[2]
SNAP_0004 = (REPO / "bank_adapters/snap/migrations/0004_authorize.sql").read_text(encoding="utf-8")
SNAP_0005 = (REPO / "bank_adapters/snap/migrations/0005_authorize_plans_without_statistics.sql").read_text(
    encoding="utf-8"
)
AUTHORIZE_SQL = "select * from snap_authorize($1::bytea[], $2, $3, $4, $5, $6, $7) order by n"
CLAIMS_SQL = "select partner_id, day, external_id, fingerprint from snap_external_ids order by 1, 2, 3"
SETTINGS_SQL = "select coalesce(proconfig, '{}') from pg_proc where proname = $1"
DAY = dt.date(2025, 9, 1)

TOKENS = {
    "p1": hashlib.sha256(b"review5-p1").digest(),
    "p1_expired": hashlib.sha256(b"review5-p1-expired").digest(),
    "p2": hashlib.sha256(b"review5-p2").digest(),
    "unknown": hashlib.sha256(b"review5-unknown").digest(),
}


async def _world(pool: asyncpg.Pool) -> None:
    for partner in ("R5A", "R5B"):
        await pool.execute(
            """insert into snap_partners (partner_id, client_key, client_secret, public_key_pem, channel_id,
                                          partner_service_id, padding, signature_encoding, timestamp_tolerance_s)
               values ($1, $1 || '-key', 'secret', 'pem', '95221', '   12345', 'spaces', 'base64', 900)""",
            partner,
        )
    for name, partner, expires in (
        ("p1", "R5A", dt.timedelta(days=1)),
        ("p1_expired", "R5A", dt.timedelta(days=-1)),
        ("p2", "R5B", dt.timedelta(days=1)),
    ):
        await pool.execute(
            "insert into snap_tokens (token_sha256, partner_id, expires_at) values ($1, $2, now() + $3)",
            TOKENS[name], partner, expires,
        )
    await pool.execute(
        """insert into partner_inbound_faults (partner_id, profile) values ('R5A', '{"drop": 0.5}'::jsonb)"""
    )
    await pool.execute(
        """insert into snap_inquiries (partner_id, virtual_account_no, inquiry_request_id)
           values ('R5A', 'va-known', 'inq-a'), ('R5B', 'va-known', 'inq-b')"""
    )
    # Claims from earlier requests: one to retry (same fingerprint), one to reuse.
    await pool.execute(
        """insert into snap_external_ids (partner_id, day, external_id, fingerprint)
           values ('R5A', $1, 'old', 'fp-old'), ('R5B', $1, 'old', 'fp-old')""",
        DAY,
    )


def _groups() -> list[list[tuple]]:
    """Groups of (token, partner, claim, external id, fingerprint, virtual account)."""
    grid = []
    i = 0
    for token in TOKENS:
        for partner in ("R5A", "R5B", "R5X"):
            for claim in (True, False):
                for va in ("va-known", "va-none", None):
                    i += 1
                    grid.append((token, partner, claim, f"g{i}", f"fp{i}", va))
    twice = [
        # The same external id twice (and three times) in one group: first
        # claims it, the second is a retry, the third a reuse.
        ("p1", "R5A", True, "dup", "fp-dup", "va-known"),
        ("p1", "R5A", True, "dup", "fp-dup", "va-known"),
        ("p1", "R5A", True, "dup", "fp-other", None),
        # An expired token's request, then a valid one, for one id.
        ("p1_expired", "R5A", True, "dup2", "fp-x", "va-known"),
        ("p1", "R5A", True, "dup2", "fp-y", "va-known"),
        # Earlier claims: retry and reuse, for each partner and another partner's token.
        ("p1", "R5A", True, "old", "fp-old", "va-known"),
        ("p1", "R5A", True, "old", "fp-new", "va-none"),
        ("p2", "R5B", True, "old", "fp-old", None),
        ("p2", "R5A", True, "old", "fp-old", "va-known"),
        ("p1", "R5A", False, "old", "fp-old", "va-known"),
    ]
    return [grid[: len(grid) // 2], grid[len(grid) // 2 :], twice, grid[:5] + twice[:2]]


async def _run(conn: asyncpg.Connection) -> tuple[list, list]:
    answers = []
    for group in _groups():
        rows = await conn.fetch(
            AUTHORIZE_SQL,
            [TOKENS[t] for t, *_ in group],
            [g[1] for g in group],
            [g[2] for g in group],
            [DAY] * len(group),
            [g[3] for g in group],
            [g[4] for g in group],
            [g[5] for g in group],
        )
        answers.append([tuple(r) for r in rows])
    return answers, [tuple(r) for r in await conn.fetch(CLAIMS_SQL)]


async def test_snap_authorize_0006_answers_and_claims_what_0004_did(pool):
    await _world(pool)
    async with pool.acquire() as conn:
        results = {}
        for version in ("0006", "0004+0005"):
            transaction = conn.transaction()
            await transaction.start()
            try:
                if version != "0006":
                    await conn.execute(SNAP_0004)
                    await conn.execute(SNAP_0005)
                results[version] = await _run(conn)
            finally:
                await transaction.rollback()
    new, old = results["0006"], results["0004+0005"]
    assert new[1] == old[1]
    for group, (a, b) in enumerate(zip(new[0], old[0], strict=True)):
        assert a == b, group
    # The grid reached what it is for: faults shown, claims made, retries,
    # reuses, inquiries found and missing.
    flat = [row for group in new[0] for row in group]
    assert any(r[3] is not None for r in flat) and any(r[3] is None for r in flat)
    assert any(r[5] is not None for r in flat) and any(r[4] is not None and r[5] is None for r in flat)
    assert any(r[2] for r in flat) and any(r[1] is None for r in flat)


async def test_snap_authorize_keeps_sequential_scans_off(pool):
    """CREATE OR REPLACE FUNCTION resets a function's SET options: 0006 must
    restate 0005's enable_seqscan = off (it does, in its SET clause)."""
    settings = await pool.fetchval(SETTINGS_SQL, "snap_authorize")
    assert "enable_seqscan=off" in settings
    assert "plan_cache_mode=force_generic_plan" in settings
