"""ISO 8583 host-to-host bank adapter: a TCP server speaking a profile's dialect.

`adapter_factory()` is the entry point (`kanal.bank_adapters` group). Settings
(`KANAL_ADAPTERS__ISO8583__<KEY>`, strings) are described in docs/iso8583.md:
port, profile, reuse_port, frame_bytes_max, idle_timeout_ms, connections_max,
message_deadline_ms, link_messages_in_flight_max, write_timeout_ms,
logon_required, cutoff_window_local, sandbox, magic_latency_ms, partner_ids.

Every message and its answer is kept in the gateway's `partner_exchanges`
(channel `iso8583`) for the conformance report, and inbound faults come from
the partner's profile (`partner_inbound_faults`) or, in sandbox, from magic
values (docs/callbacks.md).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from bank_adapters import faults
from bank_adapters.base import AdapterContext
from bank_adapters.exchanges import ExchangeLog, ExchangeRow, record_configured_partners
from schemas.callbacks import DOT_SEGMENT_PARTNER_IDS, PARTNER_ID_PATTERN

from .handler import FaultSettings, Handler, Limits, acquirer_code
from .profile import Profile, ProfileError, load_profile, parse_bool
from .server import Exchange, Iso8583Server, ServerLimits, SettingsError, whole_setting

log = structlog.get_logger("kanal.iso8583")

if TYPE_CHECKING:  # pragma: no cover
    from aiohttp import web

__all__ = ["Iso8583Adapter", "adapter_factory", "load_profile", "Profile"]

DEFAULT_PORT = "8583"
DEFAULT_PROFILE = "bank_kalbar"


class Iso8583Adapter:
    name = "iso8583"
    migrations_dir: Path | None = None  # all state lives behind the payments port

    def __init__(self) -> None:
        self.server: Iso8583Server | None = None
        self.profile: Profile | None = None

    @property
    def port(self) -> int | None:
        return self.server.port if self.server else None

    def http_app(self, context: AdapterContext) -> web.Application | None:
        return None

    async def start(self, context: AdapterContext) -> None:
        settings = context.settings
        port_text = str(settings.get("port", DEFAULT_PORT)).strip()
        if not port_text.isdigit() or int(port_text) > 65535:
            raise SettingsError(f"iso8583 setting port={port_text!r}: expected 0 (any free port) to 65535", key="port")
        try:
            profile = load_profile(str(settings.get("profile", DEFAULT_PROFILE)))
        except ProfileError as error:
            error.key = error.key or "profile"
            raise
        self.profile = profile.with_overrides(settings)
        limits = ServerLimits.from_settings(settings)
        pool = context.pool
        fault_settings = FaultSettings(
            profile_of=faults.ProfileReader(pool).read,
            sandbox=parse_bool("sandbox", settings.get("sandbox", context.sandbox)),
            magic_latency_ms=whole_setting("magic_latency_ms", settings.get("magic_latency_ms", "3000"), 0, 60_000),
            partner_ids=parse_partner_ids(str(settings.get("partner_ids", ""))),
        )
        handler = Handler(
            self.profile,
            context.payments,
            Limits(message_deadline_ms=limits.message_deadline_ms),
            fault_settings=fault_settings,
        )
        self.server = Iso8583Server(
            self.profile,
            handler,
            limits,
            context.host,
            int(port_text),
            reuse_port=parse_bool("reuse_port", settings.get("reuse_port", "false")),
        )
        observe = context.extras.get("observe_response")
        if observe is not None:
            self.server.observe_response = observe
        exchange_log = ExchangeLog(pool)
        self.server.record_exchange = lambda exchange: exchange_log.record(exchange_row(exchange))
        await self.server.start()
        await self._record_partners(pool, fault_settings.partner_ids)

    async def _record_partners(self, pool, partner_ids: Mapping[str, str]) -> None:
        """The link's partner ids, for processes without this gateway's
        settings (migration 0026): those named in partner_ids, and
        iso8583-<acquirer> for each other acquirer the profile serves."""
        assert self.profile is not None
        try:
            await record_configured_partners(pool, self.name, partner_names(self.profile, partner_ids))
        except Exception:  # a gateway serves banks whether or not this note was written
            log.exception("iso8583.partners_not_recorded")

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()
            self.server = None


def partner_names(profile: Profile, partner_ids: Mapping[str, str]) -> list[str]:
    """The partner ids a link with this profile answers for: those named in
    partner_ids (acquirer -> partner id), and iso8583-<acquirer> for each
    other acquirer the profile serves (none listed: any acquirer)."""
    names = list(partner_ids.values())
    names += [f"iso8583-{a}" for a in sorted({acquirer_code(a) for a in profile.acquirers}) if a not in partner_ids]
    return names


def parse_partner_ids(text: str) -> Mapping[str, str]:
    """`123=BANKKALBAR,456=OTHERBANK`: the partner each acquirer (DE32) is, so
    that its ISO 8583 exchanges and faults share the partner's SNAP report."""
    mapping: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        acquirer, sep, partner_id = (x.strip() for x in item.partition("="))
        if (not sep or not acquirer.isdigit() or not re.fullmatch(PARTNER_ID_PATTERN, partner_id)
                or partner_id in DOT_SEGMENT_PARTNER_IDS):
            raise SettingsError(
                f"iso8583 setting partner_ids item {item!r}: expected ACQUIRER=PARTNER_ID, e.g. 123=BANKKALBAR "
                "(a partner id is 1 to 36 letters, digits, '_', '.' or '-', and not '.' or '..')",
                key="partner_ids",
            )
        mapping[acquirer_code(acquirer)] = partner_id
    return mapping


def exchange_row(exchange: Exchange) -> ExchangeRow:
    """The conformance log's row for one message and its answer (or none)."""
    note, request, response = exchange.note, exchange.request, exchange.response
    stan_rrn = "/".join(x for x in (request.get("11", ""), request.get("37", "")) if x) or None
    return ExchangeRow(
        channel="iso8583",
        partner_id=note.partner_id,
        service_code=note.kind,
        path=request.get("t") or "????",
        external_id=stan_rrn,
        request_headers={"link": exchange.link_id},
        request_body=json.dumps(request, ensure_ascii=False),
        answered=response is not None,
        http_status=None,
        response_code=(response or {}).get("39", ""),
        response_body=response or {},
        rule=note.rule,
        detail=note.detail,
        fault=note.fault,
        duration_ms=exchange.duration_ms,
        at=dt.datetime.now(dt.UTC) - dt.timedelta(milliseconds=exchange.duration_ms),
    )


def adapter_factory() -> Iso8583Adapter:
    return Iso8583Adapter()
