"""Signed SNAP payments over HTTP and ISO 8583 payments over TCP, against a
gateway running in its own process (`kanal serve`), next to a bare aiohttp
server and pgbench TPC-B measured in the same run on the same machine."""

from __future__ import annotations

import itertools
import os
import sys

import aiohttp
import asyncpg

from bank_adapters.iso8583.client import Iso8583Client
from bank_adapters.snap import protocol
from bank_adapters.snap.client import Credentials, SnapClient
from bench.common import (
    CheckpointSampler,
    CpuMeter,
    Server,
    background_during,
    background_work,
    bpu_bills,
    closed_loop,
    free_port,
    settle_after_setup,
    settle_between_phases,
    subprocess_server,
    warm_up,
)
from gateway.store import database

ADMIN_TOKEN = "adm_bench_token"


# Paid before each timed run, untimed (bench.common.warm_up): ten per connection.
WARMUP_PAYMENTS = 320


def _split(bills: list) -> tuple[list, list]:
    return bills[:WARMUP_PAYMENTS], bills[WARMUP_PAYMENTS:]


def gateway_env(url: str, http_port: int, iso_port: int) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": url,
        "KANAL_HTTP_PORT": str(http_port),
        "KANAL_ISO8583_PORT": str(iso_port),
        "KANAL_ADMIN_TOKEN": ADMIN_TOKEN,
        "KANAL_LOG_LEVEL": "warning",
        "KANAL_LOG_FORMAT": "json",
        "KANAL_POOL_SIZE_MAX": "32",
        # Connected before the first request, as pgbench's clients are: a
        # gateway sized for this load would be configured so.
        "KANAL_POOL_SIZE_MIN": "32",
        # The benchmark is a bank in a hurry, not an attack.
        "KANAL_ADAPTERS__SNAP__REQUESTS_PER_SECOND_MAX": "1000000",
    }


async def register_bank(base: str) -> Credentials:
    private_pem, public_pem = protocol.generate_key_pair()
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{base}/snap/admin/partners",
            json={"partner_id": "BANKKALBAR", "client_key": "bench-key", "public_key": public_pem},
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        ) as r:
            created = await r.json()
            if r.status != 201:
                raise RuntimeError(f"partner registration failed: {created}")
    return Credentials(
        partner_id=created["partner_id"], client_key=created["client_key"], client_secret=created["client_secret"],
        private_key_pem=private_pem, channel_id=created["channel_id"], partner_service_id=created["partner_service_id"],
        encoding=created["encoding"],
    )


# The SNAP run's windows, in seconds: throughput and p99 of each next to what
# the checkpointer and the WAL did in it (bench.common.CheckpointSampler).
SNAP_WINDOW_S = 5.0


async def checkpoint_timeout(url: str, seconds: int | None) -> None:
    """Set the server's checkpoint_timeout (None: back to its configured
    value). ALTER SYSTEM needs a superuser: the embedded server's role is one."""
    conn = await asyncpg.connect(url)
    try:
        if seconds is None:
            await conn.execute("alter system reset checkpoint_timeout")
        else:
            # ALTER SYSTEM takes no parameters; `seconds` is an int, checked here.
            await conn.execute(f"alter system set checkpoint_timeout = '{int(seconds)}s'")
        await conn.execute("select pg_reload_conf()")
    finally:
        await conn.close()


async def run(
    server: Server, *, payments: int, concurrency: int, iso_payments: int, checkpoint_timeout_s: int | None = None
) -> dict:
    url = await server.new_database("adapters")
    pool = await database.create_pool(url, size_min=1, size_max=4)
    try:
        snap_warm, snap_bills = _split(await bpu_bills(pool, WARMUP_PAYMENTS + payments, npp="SNAPBNCH"))
        iso_one_warm, iso_one = _split(await bpu_bills(pool, WARMUP_PAYMENTS + iso_payments, npp="ISO1BNCH"))
        iso_eight_warm, iso_eight = _split(await bpu_bills(pool, WARMUP_PAYMENTS + iso_payments, npp="ISO8BNCH"))
        # As pgbench -i does: autovacuum catching up with the load must not run during the measurement.
        await settle_after_setup(pool)
    finally:
        await pool.close()
    http_port, iso_port = free_port(), free_port()
    out: dict = {"concurrency": concurrency}
    kanal = [sys.executable, "-m", "gateway.cli", "serve"]
    with subprocess_server(kanal, gateway_env(url, http_port, iso_port), "Kanal serving on") as gateway:
        base = f"http://127.0.0.1:{http_port}"
        credentials = await register_bank(base)
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=connector) as session:
            bank = SnapClient(base, credentials, session=session, timeout_s=30)
            await bank.token()

            async def snap_pay(bill) -> bool:
                code, total = bill
                response = await bank.pay(code, total)
                return response.ok

            warmed = await warm_up(snap_warm, concurrency, snap_pay)
            if checkpoint_timeout_s is not None:
                await checkpoint_timeout(url, checkpoint_timeout_s)
            try:
                background = await background_work(url)
                meter = CpuMeter(gateway.pid, server)
                async with CheckpointSampler(url) as sampler:
                    snap = await closed_loop(snap_bills, concurrency, snap_pay, seconds_max=max(60.0, payments / 500))
                background = background_during(background, await background_work(url))
            finally:
                if checkpoint_timeout_s is not None:
                    await checkpoint_timeout(url, None)
        out["snap"] = {
            **snap.summary(), **meter.per_operation(snap.operations), **warmed, **background,
            "checkpoint_timeout_s": checkpoint_timeout_s,
            "windows": sampler.windows(snap, SNAP_WINDOW_S),
        }

        async def iso_run(warm, bills, links: int):
            clients = [Iso8583Client("127.0.0.1", iso_port, timeout_ms=30_000) for _ in range(links)]
            for client in clients:
                await client.connect()
            chooser = itertools.cycle(clients)
            try:
                async def iso_pay(bill) -> bool:
                    code, total = bill
                    reply = await next(chooser).pay(code, total)
                    return reply.approved

                # Each link carries several messages in flight, as a bank switch does.
                warmed = await warm_up(warm, max(links * 4, 8), iso_pay)
                meter = CpuMeter(gateway.pid, server)
                result = await closed_loop(bills, max(links * 4, 8), iso_pay)
                return {**result.summary(), **meter.per_operation(result.operations), **warmed}
            finally:
                for client in clients:
                    await client.close()

        # Each phase starts from a settled database (the SNAP phase leaves
        # autovacuum work behind it that would be counted against ISO 8583).
        await settle_between_phases(url)
        out["iso8583_one_link"] = await iso_run(iso_one_warm, iso_one, 1)
        await settle_between_phases(url)
        out["iso8583_eight_links"] = await iso_run(iso_eight_warm, iso_eight, 8)

    bare_port = free_port()
    with subprocess_server([sys.executable, "-m", "bench.bare_server", str(bare_port)], dict(os.environ), "bare server ready") as bare_server:
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=connector) as session:
            target = f"http://127.0.0.1:{bare_port}/snap/v1.0/transfer-va/payment"
            body = b'{"partnerServiceId":"   12345","customerNo":"00000000011"}'

            async def bare(_item) -> bool:
                async with session.post(target, data=body, headers={"Content-Type": "application/json"}) as r:
                    await r.read()
                    return r.status == 200

            warmed = await warm_up(list(range(WARMUP_PAYMENTS)), concurrency, bare)
            meter = CpuMeter(bare_server.pid)
            bare_result = await closed_loop(list(range(payments * 2)), concurrency, bare)
        out["bare_aiohttp"] = {**bare_result.summary(), **meter.per_operation(bare_result.operations), **warmed}
    return out
