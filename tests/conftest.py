"""Shared fixtures: a real PostgreSQL and a real gateway on real sockets.

- With DATABASE_URL set, tests use that server (the role must be allowed to
  CREATE DATABASE); otherwise one embedded PostgreSQL is started for the whole
  test session in a temporary directory and deleted at the end.
- The schema is migrated once into a template database; each test gets a
  fresh database copied from it (CREATE DATABASE ... TEMPLATE), so tests never
  see each other's rows.
- `gateway_server` runs the same `Gateway` that `kanal serve` runs, on an
  ephemeral HTTP port and an ephemeral ISO 8583 port, in sandbox mode.
- `bills.create()` makes an employer with workers and a wage report; its
  default period is the previous month (relative to the test clock), so the
  bill is payable and not expired.
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from bank_adapters.registry import load_adapters
from gateway.domain.periods import WIB, Period
from gateway.runtime import Gateway, all_migrations
from gateway.service import employers as employer_service
from gateway.service.payments import PaymentsService
from gateway.settings import Settings
from gateway.store import database, migrate

TEMPLATE_DB = f"kanal_template_{os.getpid()}"


class TestClock:
    """A clock tests can move. Starts at the real current time."""

    __test__ = False  # not a test class, despite its name

    def __init__(self, now: dt.datetime | None = None) -> None:
        self.now = now or dt.datetime.now(dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **kwargs) -> None:
        self.now += dt.timedelta(**kwargs)

    def set(self, now: dt.datetime) -> None:
        self.now = now


@pytest.fixture(scope="session")
def admin_url() -> str:
    url = os.environ.get("DATABASE_URL")
    if url:
        yield url
        return
    folder = Path(tempfile.mkdtemp(prefix="kanal-test-pg-"))
    server = database.start_embedded(folder / "pgdata", delete_on_exit=True)
    yield server.admin_url
    server.stop()


@pytest.fixture(scope="session")
async def template_url(admin_url: str) -> str:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'drop database if exists "{TEMPLATE_DB}" with (force)')
        await conn.execute(f'create database "{TEMPLATE_DB}"')
    finally:
        await conn.close()
    url = database.database_url_with_name(admin_url, TEMPLATE_DB)
    conn = await asyncpg.connect(url)
    try:
        await migrate.apply_migrations(conn, all_migrations(load_adapters()))
    finally:
        await conn.close()
    yield url
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'drop database if exists "{TEMPLATE_DB}" with (force)')
    finally:
        await conn.close()


@pytest.fixture
async def database_url(admin_url: str, template_url: str) -> str:
    name = f"kanal_test_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'create database "{name}" template "{TEMPLATE_DB}"')
    finally:
        await conn.close()
    yield database.database_url_with_name(admin_url, name)
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'drop database if exists "{name}" with (force)')
    finally:
        await conn.close()


@pytest.fixture
async def pool(database_url: str) -> asyncpg.Pool:
    p = await database.create_pool(database_url, size_min=1, size_max=20)
    yield p
    await p.close()


@pytest.fixture
def clock() -> TestClock:
    return TestClock()


@pytest.fixture
def payments(pool: asyncpg.Pool, clock: TestClock) -> PaymentsService:
    return PaymentsService(pool, clock=clock)


def test_settings(**overrides) -> Settings:
    values = dict(
        host="127.0.0.1",
        http_port=0,
        iso8583_port=0,
        sandbox=True,
        admin_token="adm_test_token",
        log_format="json",
        pool_size_max=20,
    )
    values.update(overrides)
    return Settings(**values)


test_settings.__test__ = False  # a helper, not a test


@dataclass
class RunningGateway:
    gateway: Gateway

    @property
    def url(self) -> str:
        return self.gateway.url

    @property
    def pool(self) -> asyncpg.Pool:
        return self.gateway.pool

    @property
    def admin_token(self) -> str:
        return self.gateway.settings.admin_token.get_secret_value()

    @property
    def sandbox(self) -> bool:
        return self.gateway.settings.sandbox

    @property
    def iso_port(self) -> int | None:
        try:
            return self.gateway.adapter("iso8583").port
        except StopIteration:
            return None

    @property
    def payments(self) -> PaymentsService:
        return self.gateway.payments


@pytest.fixture
async def gateway_server(database_url: str, clock: TestClock) -> RunningGateway:
    gateway = Gateway(settings=test_settings(), database_url=database_url, clock=clock)
    await gateway.start(migrate_first=False)
    try:
        yield RunningGateway(gateway)
    finally:
        await gateway.stop()


# ------------------------------------------------------------------ data ----

_serial = itertools.count(1)


def make_nik(n: int, regency: str = "6171", female: bool = False) -> str:
    """A valid NIK: Kalbar regency, district 01, a birth date, a serial."""
    day = 1 + n % 28 + (40 if female else 0)
    month = 1 + n % 12
    year = 70 + n % 30
    return f"{regency}01{day:02d}{month:02d}{year:02d}{n % 10000:04d}"


def make_kpj(n: int) -> str:
    return f"{61_000_000_000 + n:011d}"


def make_npp(n: int) -> str:
    return f"KB{n:06d}"


@dataclass
class BillInfo:
    payment_code: str
    total_rupiah: int
    npp: str
    period: str
    bill_id: int
    api_key: str
    kpjs: list[str]


class BillFactory:
    def __init__(self, pool: asyncpg.Pool, clock: TestClock) -> None:
        self.pool = pool
        self.clock = clock

    def default_period(self) -> str:
        return str(Period.from_date(self.clock().astimezone(WIB).date()) - 1)

    async def create_employer(
        self, *, workers: int = 3, size_class: str = "large", jkk_risk_class: int = 2, regency_code: str = "6171",
        wage_rupiah: int = 5_000_000, segment: str = "PU",
    ) -> tuple[asyncpg.Record, str, list[str]]:
        n = next(_serial)
        async with self.pool.acquire() as conn, conn.transaction():
            registered = await employer_service.register_employer(
                conn, make_npp(n), f"PT Uji {n}", regency_code, size_class, jkk_risk_class
            )
            employer = await conn.fetchrow("select * from employers where npp = $1", registered.employer["npp"])
            rows = []
            for i in range(workers):
                k = n * 100_000 + i
                rows.append(employer_service.ParticipantRow(i + 1, make_kpj(k), make_nik(k, regency_code), f"Pekerja {k}", wage_rupiah + i * 1000, segment))
            result = await employer_service.add_participants(conn, employer, rows, "all_or_nothing")
            assert result.errors == [], result.errors
        return employer, registered.api_key, [r.kpj for r in rows]

    async def create(
        self, *, workers: int = 3, period: str | None = None, on_time: bool = False, **employer_kwargs
    ) -> BillInfo:
        employer, api_key, kpjs = await self.create_employer(workers=workers, **employer_kwargs)
        return await self.report(employer, api_key, kpjs, period or self.default_period(), on_time=on_time)

    async def report(self, employer, api_key: str, kpjs: list[str], period: str, *, on_time: bool = False) -> BillInfo:
        """The employer's wage report for `period`, made now (the clock's time),
        or with `on_time` on the first day after the month at 10:00 WIB: an old
        month reported on time has expired by now, where the same month
        reported today counts its payable days from today."""
        now = self.clock()
        if on_time:
            now = dt.datetime.combine((Period.parse(period) + 1).first_day(), dt.time(10), WIB).astimezone(dt.UTC)
        async with self.pool.acquire() as conn, conn.transaction():
            pu_id, bpu_ids = await employer_service.submit_wage_report(conn, employer, period, {}, now, 90)
            bill_id = pu_id if pu_id is not None else bpu_ids[0]
            row = await conn.fetchrow("select payment_code, total_rupiah from bills where id = $1", bill_id)
        return BillInfo(row["payment_code"], row["total_rupiah"], employer["npp"], period, bill_id, api_key, kpjs)


@pytest.fixture
def bills(pool: asyncpg.Pool, clock: TestClock, request) -> BillFactory:
    # With a running gateway, bills go into the gateway's database (the same one).
    return BillFactory(pool, clock)



# --------------------------------------------------------------- browser ----

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
async def browser():
    """Debian's Chromium driven by Playwright (`python3 dev.py test` installs
    the package when it can). Missing Chromium skips the browser tests on a
    developer machine and fails them on CI."""
    if not Path(CHROMIUM).exists():
        message = "Debian's chromium is not installed (apt-get install chromium); python3 dev.py test installs it as root"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        await chromium.close()


@pytest.fixture
def artifacts() -> Path:
    """Where tests write screenshots and other things a person may look at."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
