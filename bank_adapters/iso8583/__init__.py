"""ISO 8583 host-to-host bank adapter: a TCP server speaking a profile's dialect.

`adapter_factory()` is the entry point (`kanal.bank_adapters` group). Settings
(`KANAL_ADAPTERS__ISO8583__<KEY>`, strings) are described in docs/iso8583.md:
port, profile, reuse_port, frame_bytes_max, idle_timeout_ms, connections_max,
message_deadline_ms, link_messages_in_flight_max, write_timeout_ms,
logon_required, cutoff_window_local.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from bank_adapters.base import AdapterContext

from .handler import Handler, Limits
from .profile import Profile, load_profile, parse_bool
from .server import Iso8583Server, ServerLimits, SettingsError

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
            raise SettingsError(f"iso8583 setting port={port_text!r}: expected 0 (any free port) to 65535")
        self.profile = load_profile(str(settings.get("profile", DEFAULT_PROFILE))).with_overrides(settings)
        limits = ServerLimits.from_settings(settings)
        handler = Handler(self.profile, context.payments, Limits(message_deadline_ms=limits.message_deadline_ms))
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
        await self.server.start()

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()
            self.server = None


def adapter_factory() -> Iso8583Adapter:
    return Iso8583Adapter()
