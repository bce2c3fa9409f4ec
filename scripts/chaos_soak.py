"""Chaos soak: the CI crash tests, longer and harder. Not run by CI.

A private embedded PostgreSQL, one gateway process (or `--workers N`), SNAP
and ISO 8583 virtual banks paying and retrying as their protocols say; every
`--fault-every-s` seconds a fault: kill -9 of the gateway (then a new one on
the same ports) or a PostgreSQL restart, alternating. At the end: every bill a
bank believes paid is paid exactly once, no other is, `kanal check` is clean.

    python scripts/chaos_soak.py                         # about 2 minutes
    python scripts/chaos_soak.py --bills-per-bank 500 --snap-banks 16 --iso-links 8 --fault-every-s 5
    python scripts/chaos_soak.py --workers 2             # faults against kanal serve --workers 2

Exit status 0 when every check holds; the log of each gateway start is kept
in the printed temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bank_adapters.iso8583.client import Iso8583Client
from bank_adapters.snap.client import SnapClient
from tests.conftest import BillFactory, TestClock
from tests.reliability.conftest import PrivatePostgres
from tests.reliability.support import (
    GatewayProcess,
    assert_exactly_once,
    iso_pay_until_known,
    register_partner,
    snap_pay_until_known,
)


async def soak(args: argparse.Namespace) -> int:
    from bank_adapters.registry import load_adapters
    from gateway.runtime import prepare_database
    from gateway.store import database

    folder = Path(tempfile.mkdtemp(prefix="kanal-soak-"))
    print(f"logs in {folder}", flush=True)
    postgres = await asyncio.to_thread(PrivatePostgres)
    pool = None
    gateway = None
    try:
        await prepare_database(postgres.url, load_adapters(), embedded=True)
        pool = await database.create_pool(postgres.url, size_min=1, size_max=8)
        factory = BillFactory(pool, TestClock())
        gateway = GatewayProcess(postgres.url, folder / "gateway.log", workers=args.workers)
        await gateway.start_ready()
        snap_bills = [[await factory.create(workers=2) for _ in range(args.bills_per_bank)] for _ in range(args.snap_banks)]
        iso_bills = [[await factory.create(workers=2) for _ in range(args.bills_per_bank)] for _ in range(args.iso_links)]
        credentials = [await register_partner(gateway.url) for _ in range(args.snap_banks)]
        verdicts = []
        faults = collections.Counter()

        async def snap_bank(creds, bills):
            async with SnapClient(gateway.url, creds, timeout_s=5, retries_max=0) as client:
                for bill in bills:
                    verdicts.append(await snap_pay_until_known(client, bill.payment_code, bill.total_rupiah, uuid.uuid4().hex))

        async def iso_link(index, bills):
            client = Iso8583Client("127.0.0.1", gateway.iso_port, timeout_ms=5000, reconnect_attempts_max=3)
            try:
                for n, bill in enumerate(bills):
                    policy = "advice" if (index + n) % 2 == 0 else "reverse"
                    verdicts.append(await iso_pay_until_known(client, bill.payment_code, bill.total_rupiah, on_doubt=policy))
            finally:
                await client.close()

        async def chaos(done: asyncio.Event):
            n = 0
            while not done.is_set():
                await asyncio.sleep(args.fault_every_s)
                if done.is_set():
                    return
                if n % 2 == 0:
                    gateway.kill9()
                    faults["kill -9"] += 1
                    await gateway.start_ready()
                else:
                    await postgres.restart_after(1.0)
                    faults["postgres restart"] += 1
                n += 1

        started = time.monotonic()
        done = asyncio.Event()
        chaos_task = asyncio.create_task(chaos(done))
        await asyncio.gather(
            *(snap_bank(c, b) for c, b in zip(credentials, snap_bills, strict=True)),
            *(iso_link(i, b) for i, b in enumerate(iso_bills)),
        )
        done.set()
        await chaos_task
        elapsed = time.monotonic() - started
        await pool.expire_connections()
        await assert_exactly_once(pool, verdicts)
        retried = sum(v.uncertain_answers > 0 for v in verdicts)
        print(
            f"{len(verdicts)} bills in {elapsed:.0f} s, faults {dict(faults)}, {sum(v.paid for v in verdicts)} paid, "
            f"{retried} settled after retries; exactly once and kanal check clean",
            flush=True,
        )
        return 0
    finally:
        if gateway is not None:
            gateway.stop()
        if pool is not None:
            pool.terminate()
        await asyncio.to_thread(postgres.close)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--snap-banks", type=int, default=8, help="concurrent SNAP banks [8]")
    parser.add_argument("--iso-links", type=int, default=4, help="concurrent ISO 8583 links [4]")
    parser.add_argument("--bills-per-bank", type=int, default=150, help="bills each bank or link pays [150]")
    parser.add_argument("--fault-every-s", type=float, default=8.0, help="seconds between faults [8]")
    parser.add_argument("--workers", type=int, default=None, help="run kanal serve --workers N [1 process]")
    sys.exit(asyncio.run(soak(parser.parse_args())))


if __name__ == "__main__":
    main()
