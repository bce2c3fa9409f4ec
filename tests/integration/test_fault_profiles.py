"""Inbound fault profiles read for concurrent ISO 8583 messages in one
statement (bank_adapters/faults.py: ProfileReader): each message gets its own
partner's profile, and a profile stored before a read is the one it sees."""

from __future__ import annotations

import asyncio

from bank_adapters.faults import InboundFaults, ProfileReader, store_profile


async def test_concurrent_reads_get_their_own_partner_s_latest_profile(pool):
    await store_profile(pool, "BANKA", InboundFaults(latency_ms=100))
    await store_profile(pool, "BANKB", InboundFaults(server_error_percent=50))
    reader = ProfileReader(pool, reads_per_group_max=16)
    partners = ["BANKA", "BANKB", "NOPROFILE"] * 20
    profiles = await asyncio.gather(*(reader.read(p) for p in partners))
    expected = {"BANKA": InboundFaults(latency_ms=100), "BANKB": InboundFaults(server_error_percent=50),
                "NOPROFILE": InboundFaults()}
    assert profiles == [expected[p] for p in partners]

    # A change committed before the next read is seen by it (no cache).
    await store_profile(pool, "BANKA", InboundFaults(lost_response_percent=100))
    await store_profile(pool, "BANKB", InboundFaults())
    assert await asyncio.gather(reader.read("BANKA"), reader.read("BANKB")) == [
        InboundFaults(lost_response_percent=100), InboundFaults()
    ]
