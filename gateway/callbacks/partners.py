"""Which partner ids name a partner, so that a typo in `kanal conformance`,
`kanal faults` or their HTTP routes is refused instead of answered for a
partner nobody is.

A partner is known when it is
- registered with the SNAP adapter (the snap_partners table);
- an ISO 8583 link's partner: named in KANAL_ADAPTERS__ISO8583__PARTNER_IDS,
  or iso8583-<acquirer> for an acquirer the link's profile accepts (any
  acquirer when the profile lists none);
- the portal's virtual bank, KANAL-PORTAL-VBANK, before its first payment too;
- or has left a trace: an exchange, a partner callback endpoint, a fault profile.

The ISO 8583 names also come from the database: each gateway notes its
link's partners at start (configured_partners, migration 0026), so a shell
without the gateway's KANAL_ADAPTERS__ISO8583__PARTNER_IDS knows them as
soon as a gateway configured with them has started on the same database.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any

import asyncpg

from gateway.service.errors import NotFound


class UnknownPartner(NotFound):
    """No partner has this id; the message lists those that are registered."""


_TRACES = """
select exists (select 1 from partner_exchanges where partner_id = $1)
    or exists (select 1 from callback_endpoints where owner_kind = 'partner' and owner_id = $1)
    or exists (select 1 from callback_partner_faults where partner_id = $1)
    or exists (select 1 from partner_inbound_faults where partner_id = $1)
    or exists (select 1 from configured_partners where partner_id = $1)
"""


def _iso8583_names(settings: Any) -> tuple[list[str], bool]:
    """The ISO 8583 partner ids the configured link knows, and whether it
    accepts any acquirer (then every iso8583-<digits> is one)."""
    if settings is None:
        return [], False
    from gateway.runtime import adapter_settings

    values: Mapping[str, Any] = adapter_settings(settings, "iso8583")
    names, any_acquirer = _iso8583_names_of(str(values.get("profile", "bank_kalbar")), str(values.get("partner_ids", "")))
    return list(names), any_acquirer


@functools.lru_cache(maxsize=8)
def _iso8583_names_of(profile_name: str, partner_ids: str) -> tuple[tuple[str, ...], bool]:
    try:
        from bank_adapters.iso8583 import load_profile, parse_partner_ids, partner_names

        named = parse_partner_ids(partner_ids)
        profile = load_profile(profile_name)
    except (ImportError, ValueError):  # no ISO 8583 adapter, or one that cannot start
        return (), False
    return tuple(partner_names(profile, named)), not profile.acquirers


async def _snap_partners(pool: asyncpg.Pool) -> list[str]:
    if not await pool.fetchval("select to_regclass('snap_partners') is not null"):
        return []
    return [r["partner_id"] for r in await pool.fetch("select partner_id from snap_partners order by partner_id")]


def _built_in() -> list[str]:
    """Partners every gateway has, registered on first use: the portal's
    virtual bank (gateway/portal/virtual_bank.py)."""
    from gateway.portal.virtual_bank import PARTNER_ID

    return [PARTNER_ID]


async def _configured(pool: asyncpg.Pool) -> list[str]:
    """The partners a gateway's adapters noted at start (migration 0026)."""
    if not await pool.fetchval("select to_regclass('configured_partners') is not null"):
        return []
    return [r["partner_id"] for r in await pool.fetch("select partner_id from configured_partners order by partner_id")]


async def registered(pool: asyncpg.Pool, settings: Any) -> list[str]:
    """The partner ids registered (SNAP) or configured (ISO 8583, in this
    process's settings or by a gateway that started on this database), sorted."""
    iso_names, _ = _iso8583_names(settings)
    return sorted(set(await _snap_partners(pool)) | set(iso_names) | set(await _configured(pool)) | set(_built_in()))


async def require(pool: asyncpg.Pool, partner_id: str, settings: Any) -> None:
    """Raise UnknownPartner unless `partner_id` names a partner."""
    iso_names, any_acquirer = _iso8583_names(settings)
    if partner_id in iso_names or partner_id in _built_in() or (
        any_acquirer and re.fullmatch(r"iso8583-[0-9]{1,11}", partner_id)
    ):
        return
    if await pool.fetchval(_TRACES, partner_id):
        return
    snap = await _snap_partners(pool)
    if partner_id in snap:
        return
    known = sorted(set(snap) | set(iso_names) | set(await _configured(pool)))
    listed = ", ".join(known[:20]) + (f" and {len(known) - 20} more" if len(known) > 20 else "") if known else "none"
    if any_acquirer:
        listed += " (and iso8583-<acquirer> for any ISO 8583 acquirer)"
    # A gateway notes its ISO 8583 names at start (migration 0026); before
    # one has started on this database, they come from this process's settings.
    listed += ("; an ISO 8583 partner is known once a gateway configured with it has started on this database, "
               "or from KANAL_ADAPTERS__ISO8583__PARTNER_IDS here")
    raise UnknownPartner(
        f"no partner {partner_id}; registered: {listed}",
        [{"field": "partner_id", "problem": "no such partner"}],
    )
