"""A synthetic Kalbar at any scale, seeded with set-based SQL.

The province's workforce (Sakernas 2025, via BPJS TK Kalbar) is 1,819,430:
800,904 formal + 864,518 informal + 154,008 construction. A run of N workers
keeps that mix (largest-remainder rounding, so the parts sum to N), and each
part is split over the 14 regencies by 2020 population share
(`workforce_by_regency`; regency workforce is not published).

- Formal and construction workers are wage earners (PU) of employers drawn by
  size class (micro 1-4, small 5-19, medium 20-99, large 100+ workers, the BPS
  bands) with a JKK risk class (construction: III to V).
- Informal workers are BPU participants, registered through a collective
  ("wadah": a cooperative or an association), one BPU bill each per month.
- A baseline share of each regency's workers is already protected when the
  simulation starts (31.63 % by default, a parameter): whole employers for PU,
  individuals for BPU. Their last paid month is set to the latest month due,
  with the matching coverage counters, as if paid through another channel
  before the go-live. No payment rows are invented for it.

Everything is drawn from one `random.Random(seed)` in a fixed order, so the
same seed and size give the same province. Rows are generated in Python and
written with COPY; the derived rows (JHT accounts, coverage rows, counters)
with one INSERT ... SELECT each.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import asyncpg

from gateway.domain import coverage as coverage_rules
from gateway.domain import dues
from gateway.domain.periods import Segment
from gateway.domain.regencies import PROVINCE_WORKFORCE, regencies, workforce_by_regency

FORMAL_WORKERS = 800_904
INFORMAL_WORKERS = 864_518
CONSTRUCTION_WORKERS = 154_008
assert FORMAL_WORKERS + INFORMAL_WORKERS + CONSTRUCTION_WORKERS == PROVINCE_WORKFORCE

# Workers per employer by size class (BPS bands); the upper bound of "large"
# is a choice, so that a few thousand workers still make several employers.
SIZE_BANDS: dict[str, tuple[int, int]] = {"micro": (1, 4), "small": (5, 19), "medium": (20, 99), "large": (100, 1500)}
# Share of formal workers by employer size, in percent (assumption: most wage
# earners work for medium and large employers; Kalbar's plantations are large).
FORMAL_WORKERS_BY_SIZE_PERCENT = {"micro": 8, "small": 17, "medium": 30, "large": 45}
CONSTRUCTION_WORKERS_BY_SIZE_PERCENT = {"micro": 0, "small": 25, "medium": 40, "large": 35}
FORMAL_RISK_WEIGHTS = {1: 30, 2: 30, 3: 20, 4: 12, 5: 8}
CONSTRUCTION_RISK_WEIGHTS = {3: 30, 4: 40, 5: 30}
WADAH_MEMBERS_RANGE = (50, 400)  # BPU members per collective

# Kalbar's 2025 provincial minimum wage is Rp2,878,286 a month.
WAGE_FLOOR_RUPIAH = 2_878_286
BPU_INCOME_RANGE_RUPIAH = (1_000_000, 6_000_000)

FIRST_NAMES = (
    "Agus", "Budi", "Citra", "Dewi", "Eka", "Fajar", "Gita", "Hendra", "Indah", "Joko", "Kartika", "Lestari",
    "Made", "Nur", "Oktavia", "Putri", "Rizky", "Sari", "Taufik", "Utami", "Wahyu", "Yuni", "Zainal", "Ahmad",
    "Siti", "Andi", "Rina", "Imelda", "Antonius", "Yohana", "Hasan", "Lina", "Bong", "Mei", "Akim", "Yosef",
)
LAST_NAMES = (
    "Saputra", "Wijaya", "Santoso", "Pratama", "Lestari", "Hidayat", "Kurniawan", "Setiawan", "Nugroho",
    "Siregar", "Hakim", "Tan", "Lim", "Syahrani", "Alamsyah", "Ramadhan", "Purnomo", "Gunawan", "Dayak",
)
FORMAL_KINDS = ("Sawit", "Karet", "Logistik", "Niaga", "Perikanan", "Tambang", "Jasa", "Kopi", "Kayu", "Hotel")
WADAH_KINDS = ("Koperasi Nelayan", "Koperasi Tani", "Paguyuban Ojek", "Asosiasi Pedagang", "Kelompok Pengrajin")

KINDS = ("formal", "informal", "construction")


def split_largest_remainder(total: int, weights: dict[str, int]) -> dict[str, int]:
    """`total` split by integer weights, parts summing exactly to `total`
    (ties go to the key that sorts first)."""
    whole = sum(weights.values())
    quotas = {k: divmod(total * w, whole) for k, w in weights.items()}
    parts = {k: q for k, (q, _) in quotas.items()}
    for k in sorted(quotas, key=lambda k: (-quotas[k][1], k))[: total - sum(parts.values())]:
        parts[k] += 1
    return parts


def workforce_mix(workers: int) -> dict[str, int]:
    """Formal, informal and construction workers for a province of `workers`."""
    return split_largest_remainder(
        workers, {"formal": FORMAL_WORKERS, "informal": INFORMAL_WORKERS, "construction": CONSTRUCTION_WORKERS}
    )


@dataclass
class Employer:
    npp: str
    name: str
    regency_code: str
    size_class: str
    jkk_risk_class: int
    kind: str  # formal, construction or informal (a BPU collective)
    workers: int
    compliant: bool = False  # protected at the start (baseline)
    first_serial: int = 0  # its workers' KPJs are kpj_for(first_serial ..  first_serial + workers - 1)


@dataclass
class Province:
    """What was seeded: enough for the simulator to decide who pays, without
    reading the database back."""

    workers: int
    seed: int
    employers: list[Employer] = field(default_factory=list)
    # Regency -> seeded workers, and per kind.
    workforce: dict[str, int] = field(default_factory=dict)
    by_kind: dict[str, int] = field(default_factory=dict)
    # BPU participants protected at the start, by KPJ.
    compliant_bpu_kpjs: set[str] = field(default_factory=set)
    baseline_protected: int = 0


def _weighted(rng: random.Random, weights: dict) -> object:
    keys = list(weights)
    return rng.choices(keys, weights=[weights[k] for k in keys])[0]


def _employers_for(
    rng: random.Random, kind: str, regency_code: str, workers: int, next_serial: Callable[[], int], regency_name: str
) -> list[Employer]:
    """Employers of one kind in one regency, `workers` workers in all."""
    out: list[Employer] = []
    if workers <= 0:
        return out
    if kind == "informal":
        low, high = WADAH_MEMBERS_RANGE
        remaining = workers
        while remaining > 0:
            members = min(remaining, rng.randint(low, high))
            serial = next_serial()
            out.append(
                Employer(f"SM{serial:06d}", f"{rng.choice(WADAH_KINDS)} {regency_name} {serial}", regency_code, "micro", 1, kind, members)
            )
            remaining -= members
        return out
    by_size = split_largest_remainder(
        workers, FORMAL_WORKERS_BY_SIZE_PERCENT if kind == "formal" else CONSTRUCTION_WORKERS_BY_SIZE_PERCENT
    )
    risk_weights = FORMAL_RISK_WEIGHTS if kind == "formal" else CONSTRUCTION_RISK_WEIGHTS
    for size, (low, high) in SIZE_BANDS.items():
        remaining = by_size.get(size, 0)
        while remaining > 0:
            n = rng.randint(low, high)
            if remaining - n < low:  # the last employer of the band takes the rest
                n = remaining
            serial = next_serial()
            label = "Konstruksi" if kind == "construction" else rng.choice(FORMAL_KINDS)
            out.append(
                Employer(
                    f"SM{serial:06d}", f"PT {label} {regency_name} {serial}", regency_code, size,
                    int(_weighted(rng, risk_weights)), kind, n,
                )
            )
            remaining -= n
    return out


def plan_province(workers: int, seed: int, baseline_coverage_basis_points: int) -> Province:
    """Employers per regency, kind and size, and who is protected at the start.
    Pure: no database."""
    rng = random.Random(seed)
    province = Province(workers=workers, seed=seed)
    mix = workforce_mix(workers)
    province.by_kind = mix
    splits = {kind: workforce_by_regency(mix[kind]) for kind in KINDS}
    serial = iter(range(1, 10**6))
    for regency in sorted(regencies(), key=lambda r: r.kemendagri_code):
        code = regency.kemendagri_code
        province.workforce[code] = sum(splits[kind][code] for kind in KINDS)
        for kind in KINDS:
            province.employers.extend(_employers_for(rng, kind, code, splits[kind][code], lambda: next(serial), regency.name))
    serial_next = 1
    for employer in province.employers:
        employer.first_serial = serial_next
        serial_next += employer.workers
    # Baseline: per regency, whole PU employers in a seeded order, each taken
    # if it still fits under the regency's PU share.
    for regency in sorted(regencies(), key=lambda r: r.kemendagri_code):
        code = regency.kemendagri_code
        pu = [e for e in province.employers if e.regency_code == code and e.kind != "informal"]
        target = (sum(e.workers for e in pu) * baseline_coverage_basis_points + 5_000) // 10_000
        rng.shuffle(pu)
        covered = 0
        for employer in pu:
            if covered + employer.workers <= target:
                employer.compliant = True
                covered += employer.workers
        province.baseline_protected += covered
    return province


def kpj_for(serial: int) -> str:
    return f"{62_000_000_000 + serial:011d}"


def _api_key_digest() -> bytes:
    # Simulated employers get a random, never-shown key: a guessable key on a
    # database someone may later serve would be a hole.
    return hashlib.sha256(os.urandom(32)).digest()


@dataclass
class _Serials:
    participant: int = 0


def _participant_rows(rng: random.Random, employer: Employer, serials: _Serials) -> list[tuple]:
    rows = []
    segment = "BPU" if employer.kind == "informal" else "PU"
    for _ in range(employer.workers):
        serials.participant += 1
        n = serials.participant
        female = rng.random() < 0.45
        day = rng.randint(1, 28) + (40 if female else 0)
        nik = f"{employer.regency_code}01{day:02d}{rng.randint(1, 12):02d}{rng.randint(60, 99):02d}{n % 10_000:04d}"
        if segment == "PU":
            # Wages: floor plus a skewed spread (most near the floor), in thousands.
            wage = WAGE_FLOOR_RUPIAH + int(rng.expovariate(1 / 2_500)) * 1_000
            wage = min(wage, 60_000_000)
        else:
            low, high = BPU_INCOME_RANGE_RUPIAH
            wage = rng.randrange(low, high, 50_000)
        name = f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"
        assert n - employer.first_serial < employer.workers, (employer.npp, n)
        rows.append((kpj_for(n), employer.npp, nik, name, wage, segment, employer.regency_code))
    return rows


async def seed_province(
    pool: asyncpg.Pool,
    province: Province,
    *,
    baseline_coverage_basis_points: int,
    as_of: dt.date,
    progress: Callable[[int], None] | None = None,
) -> None:
    """Write the planned province: employers, participants, JHT accounts,
    coverage rows and the baseline. Participants go in chunks of
    `chunk_workers_max` rows so memory stays bounded at province scale."""
    rng = random.Random(province.seed + 1)
    chunk_workers_max = 50_000
    async with pool.acquire() as conn:
        if await conn.fetchval("select exists (select 1 from employers)"):
            raise RuntimeError("the database already has employers: the simulator seeds an empty database")
        await conn.copy_records_to_table(
            "employers",
            records=[(e.npp, e.name, e.regency_code, e.size_class, e.jkk_risk_class, _api_key_digest()) for e in province.employers],
            columns=["npp", "name", "regency_code", "size_class", "jkk_risk_class", "api_key_sha256"],
        )
        serials = _Serials()
        chunk: list[tuple] = []
        bpu_baseline: dict[str, int] = {}
        for code in province.workforce:
            bpu = sum(e.workers for e in province.employers if e.regency_code == code and e.kind == "informal")
            bpu_baseline[code] = (bpu * baseline_coverage_basis_points + 5_000) // 10_000
        bpu_by_regency: dict[str, list[str]] = {}

        async def flush() -> None:
            if chunk:
                await conn.copy_records_to_table(
                    "participants",
                    records=chunk,
                    columns=["kpj", "npp", "nik", "name", "wage_rupiah", "segment", "regency_code"],
                )
                if progress:
                    progress(len(chunk))
                chunk.clear()

        for employer in province.employers:
            rows = _participant_rows(rng, employer, serials)
            if employer.kind == "informal":
                bpu_by_regency.setdefault(employer.regency_code, []).extend(r[0] for r in rows)
            chunk.extend(rows)
            if len(chunk) >= chunk_workers_max:
                await flush()
        await flush()
        for code in sorted(bpu_by_regency):
            kpjs = bpu_by_regency[code]
            chosen = rng.sample(kpjs, min(len(kpjs), bpu_baseline[code]))
            province.compliant_bpu_kpjs.update(chosen)
            province.baseline_protected += len(chosen)
        async with conn.transaction():
            await conn.execute(
                "insert into accounts (code, kind, npp) select 'jht:' || kpj, 'liability', npp from participants"
            )
            sizes = list(SIZE_BANDS)
            await conn.execute(
                """insert into participant_coverage (participant_id, program, npp, regency_code, segment)
                   select p.id, prog, p.npp, p.regency_code, p.segment
                     from participants p
                     join employers e on e.npp = p.npp
                     join (select unnest($1::text[]) as size_class, unnest($2::text[]) as programs) s
                       on s.size_class = e.size_class
                    cross join lateral unnest(
                        case when p.segment = 'BPU' then array['JKK','JKM'] else string_to_array(s.programs, ',') end
                    ) as prog""",
                sizes,
                [",".join(str(p) for p in dues.programs_for(size)) for size in sizes],
            )
            await mark_baseline(conn, province, as_of)


async def mark_baseline(conn: asyncpg.Connection, province: Province, as_of: dt.date) -> None:
    """Protected at the start: last paid period = the latest month due on
    `as_of`, with the matching counter buckets (no payment behind them)."""
    pu_period = str(coverage_rules.latest_due_period(as_of, Segment.PU))
    bpu_period = str(coverage_rules.latest_due_period(as_of, Segment.BPU))
    await conn.execute(
        "update participant_coverage set last_paid_period = $1 where segment = 'PU' and npp = any($2::text[])",
        pu_period,
        [e.npp for e in province.employers if e.compliant],
    )
    await conn.execute(
        """update participant_coverage c set last_paid_period = $1
             from participants p where p.id = c.participant_id and p.kpj = any($2::text[])""",
        bpu_period,
        sorted(province.compliant_bpu_kpjs),
    )
    await conn.execute(
        """insert into coverage_deltas (regency_code, program, segment, last_paid_period, delta)
           select regency_code, program, segment, last_paid_period, count(*)
             from participant_coverage where last_paid_period is not null
            group by 1, 2, 3, 4 order by 1, 2, 3, 4"""
    )
