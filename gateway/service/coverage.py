"""Coverage read models: protected participants per regency and program, as of
any date, and the province's universal-coverage figure.

Counts come from the counter buckets (participants by last paid period):
protected as of D = participants whose last paid period is at least
`oldest_protected_period(D)`. Payments append deltas to `coverage_deltas`;
the gateway folds them into `coverage_totals` in the background
(`fold_deltas`, migration 0020), and readers sum both (the `coverage_buckets`
view), so a read costs what the buckets hold, not every delta ever written.
`recount` computes the same from the participant rows themselves; ops health
checks compare the two.
"""

from __future__ import annotations

import asyncio
import datetime as dt

import asyncpg
import structlog

from gateway.domain import coverage as rules
from gateway.domain.periods import WIB, Segment
from gateway.domain.regencies import regencies, workforce_by_regency
from gateway.store import folding

log = structlog.get_logger("kanal.coverage")

PROGRAMS = ("JKK", "JKM", "JHT", "JP", "JKP")
# The headline "protected participants" count: every participant, PU or BPU,
# is enrolled in JKK, so its count is the number of protected people.
HEADLINE_PROGRAM = "JKK"


def _thresholds(as_of: dt.date) -> tuple[str, str]:
    return (
        str(rules.oldest_protected_period(as_of, Segment.PU)),
        str(rules.oldest_protected_period(as_of, Segment.BPU)),
    )


async def protected_counts(conn: asyncpg.Connection | asyncpg.Pool, as_of: dt.date) -> dict[tuple[str, str], int]:
    pu, bpu = _thresholds(as_of)
    rows = await conn.fetch(
        """select regency_code, program, sum(n)::bigint as n
             from coverage_buckets
            where last_paid_period >= case when segment = 'BPU' then $2 else $1 end
            group by regency_code, program""",
        pu,
        bpu,
    )
    return {(r["regency_code"], r["program"]): r["n"] for r in rows if r["n"]}


async def fold_deltas(conn: asyncpg.Connection | asyncpg.Pool, rows_max: int) -> int:
    """Move up to `rows_max` of the oldest committed deltas into the totals
    (one transaction); returns how many moved. Counts read before and after
    are the same: only where they are kept changes."""
    return await conn.fetchval("select kanal_fold_coverage_deltas($1)", rows_max)


async def fold_forever(pool: asyncpg.Pool, *, interval_ms: int, rows_max: int) -> None:
    """Fold the deltas every `interval_ms` milliseconds, `rows_max` at a time,
    until cancelled (gateway/store/folding.py: a failed fold is logged as
    `coverage_fold_failed` and tried again)."""
    await folding.fold_forever(
        lambda rows: fold_deltas(pool, rows), interval_ms=interval_ms, rows_max=rows_max,
        failed_event="coverage_fold_failed",
    )


async def recount(conn: asyncpg.Connection | asyncpg.Pool, as_of: dt.date) -> dict[tuple[str, str], int]:
    pu, bpu = _thresholds(as_of)
    rows = await conn.fetch(
        """select regency_code, program, count(*)::bigint as n
             from participant_coverage
            where last_paid_period >= case when segment = 'BPU' then $2 else $1 end
            group by regency_code, program""",
        pu,
        bpu,
    )
    return {(r["regency_code"], r["program"]): r["n"] for r in rows}


def basis_points(part: int, whole: int) -> int:
    """part/whole in hundredths of a percent, rounded half up, integers only."""
    return (part * 10_000 * 2 + whole) // (2 * whole) if whole else 0


async def snapshot(
    conn: asyncpg.Connection | asyncpg.Pool,
    now: dt.datetime,
    *,
    workforce: int,
    baseline_participants: int = 0,
    regency_codes: list[str] | None = None,
) -> dict:
    """The coverage picture the SSE stream and the dashboard show.

    Percentages are sent as basis points (integers) and as display strings;
    no float is involved.
    """
    as_of = now.astimezone(WIB).date()
    counts = await protected_counts(conn, as_of)
    split = workforce_by_regency(workforce)
    baseline_split = workforce_by_regency(baseline_participants) if baseline_participants else {}
    rows = []
    for regency in regencies():
        code = regency.kemendagri_code
        if regency_codes is not None and code not in regency_codes:
            continue
        programs = {p: counts.get((code, p), 0) for p in PROGRAMS}
        protected = programs[HEADLINE_PROGRAM] + baseline_split.get(code, 0)
        bp = basis_points(protected, split[code])
        rows.append(
            {
                "regency_code": code,
                "name": regency.name,
                "workforce": split[code],
                "protected": protected,
                "programs": programs,
                "coverage_basis_points": bp,
                "coverage_percent": f"{bp // 100}.{bp % 100:02d}",
            }
        )
    total_protected = sum(counts.get((r.kemendagri_code, HEADLINE_PROGRAM), 0) for r in regencies()) + baseline_participants
    bp = basis_points(total_protected, workforce)
    return {
        "as_of": as_of.isoformat(),
        "generated_at": now.isoformat(),
        "province": {
            "workforce": workforce,
            "protected": total_protected,
            "coverage_basis_points": bp,
            "coverage_percent": f"{bp // 100}.{bp % 100:02d}",
            "target_basis_points": 5956,
        },
        "regencies": rows,
    }
