"""A Kalbar seed: employers and workers spread over the 14 regencies by
population share, with wage reports and some bills already paid, so the demo
opens on a living province. Deterministic for a given `seed`."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg

from bank_adapters.base import PayCommand
from gateway.domain.periods import WIB, Period
from gateway.domain.regencies import regencies, workforce_by_regency
from gateway.service import employers as svc
from gateway.service.payments import PaymentsService

FIRST_NAMES = (
    "Agus", "Budi", "Citra", "Dewi", "Eka", "Fajar", "Gita", "Hendra", "Indah", "Joko", "Kartika", "Lestari",
    "Made", "Nur", "Oktavia", "Putri", "Rizky", "Sari", "Taufik", "Utami", "Wahyu", "Yuni", "Zainal", "Ahmad",
    "Siti", "Andi", "Rina", "Dayak", "Imelda", "Antonius", "Yohana", "Hasan", "Lina", "Bong", "Mei", "Akim",
)
LAST_NAMES = (
    "Saputra", "Wijaya", "Santoso", "Pratama", "Lestari", "Hidayat", "Kurniawan", "Setiawan", "Nugroho",
    "Siregar", "Hakim", "Tan", "Lim", "Syahrani", "Alamsyah", "Ramadhan", "Purnomo", "Gunawan",
)
EMPLOYER_KINDS = ("Sawit", "Karet", "Konstruksi", "Logistik", "Niaga", "Perikanan", "Tambang", "Jasa", "Kopi", "Kayu")
SIZE_MIX = (("micro", 30), ("small", 35), ("medium", 20), ("large", 15))
# Kalbar's 2025 provincial minimum wage is about Rp2.88 million a month.
WAGE_FLOOR_RUPIAH = 2_878_286


@dataclass
class SeedReport:
    employers: int
    participants: int
    bills: int
    paid: int
    api_keys: dict[str, str]  # npp -> key, for the demo's example


def _npp(n: int) -> str:
    return f"KB{n:06d}"


async def seed_kalbar(
    pool: asyncpg.Pool,
    payments: PaymentsService,
    *,
    employers: int = 300,
    workers: int = 3000,
    paid_share_percent: int = 40,
    seed: int = 2025,
    now: dt.datetime | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> SeedReport:
    rng = random.Random(seed)
    now = now or dt.datetime.now(dt.UTC)
    period = Period.from_date(now.astimezone(WIB).date()) - 1
    per_regency = workforce_by_regency(employers)
    regency_list = [r for r in regencies() for _ in range(per_regency[r.kemendagri_code])]
    rng.shuffle(regency_list)
    workers_per_employer = max(1, workers // max(1, employers))
    report = SeedReport(0, 0, 0, 0, {})
    serial = 0
    for n, regency in enumerate(regency_list, start=1):
        size = rng.choices([s for s, _ in SIZE_MIX], weights=[w for _, w in SIZE_MIX])[0]
        async with pool.acquire() as conn, conn.transaction():
            registered = await svc.register_employer(
                conn, _npp(n), f"PT {rng.choice(EMPLOYER_KINDS)} {regency.name} {n}", regency.kemendagri_code, size,
                rng.randint(1, 5),
            )
            employer = await conn.fetchrow("select * from employers where npp = $1", _npp(n))
            rows = []
            for i in range(workers_per_employer):
                serial += 1
                day = rng.randint(1, 28) + (40 if rng.random() < 0.45 else 0)
                nik = f"{regency.kemendagri_code}01{day:02d}{rng.randint(1, 12):02d}{rng.randint(60, 99):02d}{serial % 10000:04d}"
                wage = WAGE_FLOOR_RUPIAH + rng.randrange(0, 9_000_000, 1000)
                segment = "BPU" if size == "micro" and rng.random() < 0.5 else "PU"
                name = f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"
                rows.append(svc.ParticipantRow(i + 1, f"{61_000_000_000 + serial:011d}", nik, name, wage, segment))
            result = await svc.add_participants(conn, employer, rows, "keep_valid")
            pu_id, bpu_ids = await svc.submit_wage_report(conn, employer, str(period), {}, now, 90)
        report.employers += 1
        report.participants += result.saved
        report.api_keys[employer["npp"]] = registered.api_key
        for bill_id in [b for b in [pu_id, *bpu_ids] if b is not None]:
            report.bills += 1
            if rng.randrange(100) < paid_share_percent:
                bill = await pool.fetchrow("select payment_code, total_rupiah from bills where id = $1", bill_id)
                result_pay = await payments.pay(
                    PayCommand(bill["payment_code"], bill["total_rupiah"], "seed:BANKKALBAR", f"seed-{bill_id}", f"SEED{bill_id}")
                )
                report.paid += int(result_pay.succeeded)
        if progress:
            progress(n, len(regency_list))
    return report
