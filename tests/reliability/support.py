"""What the reliability tests share: gateway processes started as users start
them (`python -m gateway.cli serve`), a private PostgreSQL that a test may stop
and start, and virtual banks that retry exactly as their protocol says.

Virtual banks, and what "the bank believes paid" means for each:

- SNAP (`snap_pay_until_known`): send the payment; on no answer, a 5xx
  (500xx00, 504xx00) or a refused token request, ask service 26 for the
  paymentRequestId; when the status is not known either, repeat the payment
  with the same X-EXTERNAL-ID and paymentRequestId. It stops only on a
  definitive answer: 2002500 or a status 2002600 with paymentFlagStatus 00
  (paid), or a business refusal such as 404xx14 (not paid).
- ISO 8583 (`iso_pay_until_known`): send the 0200. On no answer, 68 or 96
  the bank either insists with a 0220 advice (0221 when repeated) until it
  is answered 00, or gives the money back with a 0400 reversal (0401 when
  repeated) until answered 00. Both carry the original's data in DE90, so
  the gateway keys them to the original payment.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from pathlib import Path

import aiohttp

from bank_adapters.iso8583.client import Iso8583Client, LinkDown, ResponseTimeout
from tests.snap.snap_support import register_partner as snap_register_partner
from bank_adapters.snap.client import (
    PAYMENT_PATH,
    Credentials,
    SnapClient,
    SnapError,
    new_external_id,
)

REPO = Path(__file__).resolve().parents[2]
ADMIN_TOKEN = "adm_reliability_token"
GATEWAY_READY_TIMEOUT_S = 60.0
# How long a virtual bank keeps trying before the test gives up on the gateway.
BANK_PERSISTENCE_S = 60.0
RETRY_BACKOFF_S = 0.2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ----------------------------------------------------------- processes ----


@dataclass
class GatewayProcess:
    """`python -m gateway.cli serve` in its own process group, as an operator runs it."""

    database_url: str
    log_path: Path
    http_port: int = field(default_factory=free_port)
    iso_port: int = field(default_factory=free_port)
    workers: int | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    # what tests/snap-style helpers expect of a server
    admin_token = ADMIN_TOKEN

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "KANAL_HOST": "127.0.0.1",
            "KANAL_HTTP_PORT": str(self.http_port),
            "KANAL_ISO8583_PORT": str(self.iso_port),
            "KANAL_ADMIN_TOKEN": ADMIN_TOKEN,
            "KANAL_SANDBOX": "true",
            "KANAL_LOG_FORMAT": "json",
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
        }

    def start(self) -> GatewayProcess:
        assert self.process is None or self.process.poll() is not None, "already running"
        command = [sys.executable, "-m", "gateway.cli", "serve"]
        if self.workers:
            command += ["--workers", str(self.workers)]
        self.starts += 1
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        log.write(f"\n----- start {self.starts} -----\n".encode())
        log.flush()
        self.process = subprocess.Popen(
            command, cwd=REPO, env=self.env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        return self

    async def wait_ready(self, timeout_s: float = GATEWAY_READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        async with aiohttp.ClientSession() as session:
            while True:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise AssertionError(f"gateway exited with {self.process.returncode}:\n{self.log_tail()}")
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.get(self.url + "/readyz", timeout=aiohttp.ClientTimeout(total=2)) as response:
                        if response.status == 200:
                            return
                if time.monotonic() > deadline:
                    raise AssertionError(f"gateway not ready within {timeout_s} s:\n{self.log_tail()}")
                await asyncio.sleep(0.1)

    async def start_ready(self) -> GatewayProcess:
        self.start()
        await self.wait_ready()
        return self

    def kill9(self) -> None:
        """SIGKILL the whole process group: no cleanup, no goodbye."""
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.kill9()
        # children of --workers share the group; none may outlive the test
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


# ---------------------------------------------------------------- SNAP ----

_partner_serial = itertools.count(1)


async def register_partner(
    base_url: str, partner_id: str | None = None, *, admin_token: str = ADMIN_TOKEN, **options
) -> Credentials:
    """Register a bank through the ops API with the admin token, as an operator
    would: the SNAP suite's helper, pointed at any gateway's URL."""
    server = SimpleNamespace(url=base_url, admin_token=admin_token)
    return await snap_register_partner(
        server, partner_id=partner_id or f"RBANK{next(_partner_serial):03d}", **options
    )


@dataclass
class Verdict:
    """What a virtual bank concluded about one bill, and how it got there."""

    payment_code: str
    paid: bool
    final_code: str
    attempts: int
    uncertain_answers: int  # no answer, 5xx, 68, 96: answers the protocol says to retry
    retriable_seen: list[str] = field(default_factory=list)  # "no-answer", SNAP codes 5xxxxxx, ISO 68/96


SNAP_RETRIABLE_HTTP = range(500, 600)


async def _snap_try(call) -> object | None:
    try:
        return await call
    except (aiohttp.ClientError, TimeoutError, SnapError, ConnectionError):
        return None


async def snap_pay_until_known(client: SnapClient, payment_code: str, amount_rupiah: int, request_id: str) -> Verdict:
    body = client.payment_body(payment_code, amount_rupiah, request_id)
    external_id = new_external_id()
    deadline = time.monotonic() + BANK_PERSISTENCE_S
    attempts = uncertain = 0
    seen: list[str] = []
    while time.monotonic() < deadline:
        attempts += 1
        response = await _snap_try(client.post(PAYMENT_PATH, body, external_id=external_id))
        if response is not None and response.http_status not in SNAP_RETRIABLE_HTTP:
            return Verdict(payment_code, response.ok, response.code, attempts, uncertain, seen)
        uncertain += 1
        seen.append("no-answer" if response is None else response.code)
        status = await _snap_try(client.status(payment_code, request_id))
        if status is not None and status.ok:
            flag = status.body["virtualAccountData"]["paymentFlagStatus"]
            return Verdict(payment_code, flag == "00", status.code, attempts, uncertain, seen)
        # Not found, or no answer: the payment may not have arrived. Repeat it.
        await asyncio.sleep(RETRY_BACKOFF_S)
    raise AssertionError(f"SNAP bank got no definitive answer for {payment_code} in {BANK_PERSISTENCE_S} s")


# ------------------------------------------------------------ ISO 8583 ----

ISO_RETRIABLE = {"68", "96"}


async def _iso_try(call) -> object | None:
    try:
        return await call
    except (LinkDown, ResponseTimeout, ConnectionError, OSError):
        return None


async def iso_pay_until_known(client: Iso8583Client, payment_code: str, amount_rupiah: int, *, on_doubt: str) -> Verdict:
    """`on_doubt`: "advice" (the bank keeps the customer's money and insists)
    or "reverse" (the bank gives it back and cancels)."""
    assert on_doubt in ("advice", "reverse")
    original = client.financial("0200", "payment", payment_code, amount_rupiah)
    reply = await _iso_try(client.request(original))
    attempts, uncertain = 1, 0
    seen: list[str] = []
    if reply is not None and reply.code not in ISO_RETRIABLE:
        return Verdict(payment_code, reply.approved, reply.code, attempts, uncertain, seen)
    deadline = time.monotonic() + BANK_PERSISTENCE_S
    while time.monotonic() < deadline:
        uncertain += 1
        seen.append("no-answer" if reply is None else reply.code)
        await asyncio.sleep(RETRY_BACKOFF_S)
        attempts += 1
        repeat = attempts > 2
        if on_doubt == "advice":
            reply = await _iso_try(client.advice(original, repeat=repeat))
        else:
            reply = await _iso_try(client.reverse(original, repeat=repeat))
        if reply is None or reply.code in ISO_RETRIABLE:
            continue
        if on_doubt == "advice":
            return Verdict(payment_code, reply.approved, reply.code, attempts, uncertain, seen)
        assert reply.approved, f"a reversal must be answered 00, got {reply.code}"
        return Verdict(payment_code, False, reply.code, attempts, uncertain, seen)
    raise AssertionError(f"ISO 8583 bank got no definitive answer for {payment_code} in {BANK_PERSISTENCE_S} s")


# ------------------------------------------------------------ the ledger --


async def assert_exactly_once(pool, verdicts: list[Verdict]) -> None:
    """Every bill a bank believes paid has exactly one standing payment; every
    bill it believes unpaid has none; the ledger's invariants hold."""
    from tests.integration.ledger_checks import assert_ledger_invariants

    rows = await pool.fetch(
        """select b.payment_code, b.status,
                  count(p.id) filter (where p.status = 'posted') as standing,
                  count(j.id) filter (where j.kind = 'payment') as entries
             from bills b
             left join payments p on p.bill_id = b.id
             left join journal_entries j on j.payment_id = p.id
            where b.payment_code = any($1::text[])
            group by b.payment_code, b.status""",
        [v.payment_code for v in verdicts],
    )
    ledger = {r["payment_code"]: r for r in rows}
    lost = [v.payment_code for v in verdicts if v.paid and ledger[v.payment_code]["standing"] != 1]
    unwanted = [v.payment_code for v in verdicts if not v.paid and ledger[v.payment_code]["standing"] != 0]
    assert lost == [], f"the bank believes these paid, the ledger does not: {lost}"
    assert unwanted == [], f"the bank believes these unpaid (refused or reversed), the ledger has them posted: {unwanted}"
    twice = await pool.fetch(
        """select bill_id from payments where status = 'posted' group by bill_id having count(*) > 1
           union all
           select payment_id from journal_entries group by payment_id, kind having count(*) > 1"""
    )
    assert twice == [], f"posted twice: {twice}"
    await assert_ledger_invariants(pool)
    await assert_kanal_check_clean(pool)


async def assert_kanal_check_clean(pool) -> None:
    """What `kanal check` runs (gateway/ops/checks.py): every verdict ok or skipped."""
    from gateway.ops.checks import run_checks

    report = await run_checks(pool)
    assert report.healthy, [check.as_dict() for check in report.checks if check.name in report.violations]
