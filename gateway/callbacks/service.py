"""Callback use cases shared by the HTTP API and the CLI: register endpoints,
rotate secrets, enable, replay, and set fault profiles. Each is one
transaction; errors are ServiceErrors naming the field."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import asyncpg
from pydantic import BaseModel, ValidationError

from gateway.callbacks import signing, store
from gateway.callbacks.faults import OutboundFaults
from gateway.callbacks.settings import CallbackSettings
from gateway.service.errors import Conflict, Invalid, NotFound
# The wire models live in schemas/ (they also make /openapi.json); re-exported
# here under the names the CLI and tests already use.
from schemas.callbacks import (  # noqa: F401
    DOT_SEGMENT_PARTNER_IDS,
    EVENT_TYPES,
    PARTNER_ID_PATTERN,
    URL_CHARS_MAX,
    EndpointChange,
    EndpointIn,
    EventType,
)

PARTNER_ID = re.compile(PARTNER_ID_PATTERN)


def parse(model: type[BaseModel], data: Any) -> Any:
    """Validate or raise Invalid naming each field."""
    try:
        return model.model_validate(data)
    except ValidationError as error:
        errors = [
            {"field": ".".join(str(p) for p in e["loc"]) or "body", "problem": "unknown field; remove it" if e["type"] == "extra_forbidden" else e["msg"]}
            for e in error.errors(include_url=False)
        ]
        raise Invalid("; ".join(f"{e['field']}: {e['problem']}" for e in errors), errors) from None


def check_partner_id(partner_id: str) -> str:
    if not PARTNER_ID.fullmatch(partner_id):
        raise Invalid.field("partner_id", "must be 1 to 36 letters, digits, '.', '_' or '-'")
    if partner_id in DOT_SEGMENT_PARTNER_IDS:
        raise Invalid.field("partner_id", f"{partner_id!r} cannot be used: in a URL path it means a folder, not a partner")
    return partner_id


async def register(
    pool: asyncpg.Pool, settings: CallbackSettings, *, owner_kind: str, owner_id: str, data: EndpointIn
) -> dict[str, Any]:
    """A new endpoint and its secret (shown here and on rotation only)."""
    npp = owner_id if owner_kind == "employer" else data.npp
    if owner_kind == "employer" and data.npp not in (None, owner_id):
        raise Invalid.field("npp", f"an employer's endpoint receives its own events only ({owner_id})")
    secret = signing.generate_secret()
    async with pool.acquire() as conn, conn.transaction():
        # Serialise registrations per owner so the count limit holds.
        await conn.execute("select pg_advisory_xact_lock(hashtext('callback_endpoints:' || $1 || ':' || $2))", owner_kind, owner_id)
        if await store.count_endpoints(conn, owner_kind, owner_id) >= settings.endpoints_per_owner_max:
            raise Conflict(
                f"{owner_id} already has {settings.endpoints_per_owner_max} endpoints (KANAL_CALLBACKS_ENDPOINTS_PER_OWNER_MAX); delete one first",
                [{"field": "url", "problem": "endpoint limit reached"}],
            )
        try:
            row = await store.insert_endpoint(
                conn, owner_kind=owner_kind, owner_id=owner_id, npp=npp, url=data.url,
                event_types=list(data.event_types), description=data.description, secret=secret,
            )
        except asyncpg.ForeignKeyViolationError:
            raise Invalid.field("npp", f"no employer {npp}") from None
    return {**store.endpoint_view(row), "secret": secret}


async def endpoint_or_404(pool: asyncpg.Pool | asyncpg.Connection, endpoint_id: str) -> asyncpg.Record:
    row = await store.endpoint(pool, endpoint_id)
    if row is None:
        raise NotFound(f"no callback endpoint {endpoint_id}", [{"field": "endpoint_id", "problem": "unknown"}])
    return row


async def change(pool: asyncpg.Pool, endpoint_id: str, data: EndpointChange) -> dict[str, Any]:
    row = await pool.fetchrow(
        f"""update callback_endpoints e set url = coalesce($2, url), event_types = coalesce($3, event_types),
                  description = coalesce($4, description)
             where e.id = $1 returning {store.ENDPOINT_COLUMNS}""",
        endpoint_id, data.url, data.event_types, data.description,
    )
    if row is None:
        await endpoint_or_404(pool, endpoint_id)
    return store.endpoint_view(row)


async def delete(pool: asyncpg.Pool, endpoint_id: str) -> None:
    if await pool.fetchval("delete from callback_endpoints where id = $1 returning id", endpoint_id) is None:
        await endpoint_or_404(pool, endpoint_id)


async def rotate_secret(pool: asyncpg.Pool, settings: CallbackSettings, endpoint_id: str) -> dict[str, Any]:
    """A new secret; the old one keeps signing for rotation_overlap_s."""
    secret = signing.generate_secret()
    overlap_s = settings.rotation_overlap_s
    row = await pool.fetchrow(
        f"""update callback_endpoints e set previous_secret = case when $3 > 0 then secret end,
                  previous_secret_expires_at = case when $3 > 0 then now() + make_interval(secs => $3) end,
                  secret = $2
             where e.id = $1 returning {store.ENDPOINT_COLUMNS}""",
        endpoint_id, secret, float(overlap_s),
    )
    if row is None:
        await endpoint_or_404(pool, endpoint_id)
    return {**store.endpoint_view(row), "secret": secret}


async def set_enabled(pool: asyncpg.Pool, endpoint_id: str, enabled: bool) -> dict[str, Any]:
    async with pool.acquire() as conn, conn.transaction():
        await endpoint_or_404(conn, endpoint_id)
        if enabled:
            await store.enable(conn, endpoint_id)
        else:
            await store.disable(conn, endpoint_id, "disabled by its owner")
        return store.endpoint_view(await store.endpoint(conn, endpoint_id))


async def replay_delivery(pool: asyncpg.Pool, delivery_id: int) -> dict[str, Any]:
    """Send one delivery again now (whatever its state); re-enables its endpoint."""
    unknown = NotFound(f"no delivery {delivery_id}", [{"field": "delivery_id", "problem": "unknown"}])
    async with pool.acquire() as conn, conn.transaction():
        endpoint_id = await conn.fetchval("select endpoint_id from callback_deliveries where id = $1", delivery_id)
        if endpoint_id is None:
            raise unknown
        # Enabling first takes the endpoint, then its paused deliveries, in
        # the order every enable does (store.enable).
        await store.enable(conn, endpoint_id)
        if await store.replay_delivery(conn, delivery_id) is None:
            raise unknown  # deleted with its endpoint meanwhile
        return store.delivery_view(await store.delivery(conn, delivery_id))


async def replay_failed(pool: asyncpg.Pool, endpoint_id: str) -> dict[str, Any]:
    """Send every failed, gone or dropped delivery of an endpoint again; re-enables it."""
    async with pool.acquire() as conn, conn.transaction():
        # The endpoint's row first, enabled or not: a disable that comes in
        # meanwhile waits for this replay, then pauses what it replayed. (Taken
        # only when disabled, a disable paused what its snapshot saw, the
        # replayed rows still failed to it, and they stayed unpaused on a
        # disabled endpoint: every claim walked them.) The failed, gone and
        # dropped deliveries this takes next are never held by a worker.
        if await conn.fetchval("select id from callback_endpoints where id = $1 for no key update", endpoint_id) is None:
            await endpoint_or_404(conn, endpoint_id)
        await store.enable(conn, endpoint_id)
        count = await store.replay_failed(conn, endpoint_id)
    return {"endpoint_id": endpoint_id, "replayed": count}


async def delivery_with_attempts(pool: asyncpg.Pool, delivery_id: int) -> tuple[asyncpg.Record, dict[str, Any]]:
    row = await store.delivery(pool, delivery_id)
    if row is None:
        raise NotFound(f"no delivery {delivery_id}", [{"field": "delivery_id", "problem": "unknown"}])
    view = store.delivery_view(row)
    view["attempt_log"] = [store.attempt_view(a) for a in await store.attempts(pool, delivery_id)]
    return row, view


# ------------------------------------------------------------- faults --


async def set_endpoint_faults(pool: asyncpg.Pool, endpoint_id: str, data: Any) -> dict[str, Any]:
    profile = parse(OutboundFaults, data)
    value = "{}" if profile.is_empty() else profile.model_dump_json()
    if await pool.fetchval("update callback_endpoints set faults = $2::text::jsonb where id = $1 returning id", endpoint_id, value) is None:
        await endpoint_or_404(pool, endpoint_id)
    return {"endpoint_id": endpoint_id, "outbound": profile.model_dump()}


async def set_partner_faults(pool: asyncpg.Pool, partner_id: str, data: Any) -> dict[str, Any]:
    """{"inbound": {...}, "outbound": {...}}: either may be omitted (unchanged) or {} (cleared)."""
    from bank_adapters.snap import faults as snap_faults

    check_partner_id(partner_id)
    if not isinstance(data, dict) or not set(data) <= {"inbound", "outbound"}:
        raise Invalid.field("body", 'must be {"inbound": {...}, "outbound": {...}}; either may be left out')
    outbound = inbound = None
    if "outbound" in data:
        outbound = parse(OutboundFaults, data["outbound"]).model_copy()
    if "inbound" in data:
        try:
            inbound = snap_faults.InboundFaults.model_validate(data["inbound"])
        except ValidationError as error:
            errors = [{"field": "inbound." + ".".join(str(p) for p in e["loc"]), "problem": e["msg"]} for e in error.errors(include_url=False)]
            raise Invalid("; ".join(f"{e['field']}: {e['problem']}" for e in errors), errors) from None
    async with pool.acquire() as conn, conn.transaction():
        if outbound is not None:
            if outbound.is_empty():
                await conn.execute("delete from callback_partner_faults where partner_id = $1", partner_id)
            else:
                await conn.execute(
                    """insert into callback_partner_faults (partner_id, faults) values ($1, $2::text::jsonb)
                       on conflict (partner_id) do update set faults = excluded.faults, updated_at = now()""",
                    partner_id, outbound.model_dump_json(),
                )
        if inbound is not None:
            await snap_faults.store_profile(conn, partner_id, inbound)
    return await partner_faults(pool, partner_id)


async def partner_faults(pool: asyncpg.Pool, partner_id: str) -> dict[str, Any]:
    from bank_adapters.snap import faults as snap_faults

    check_partner_id(partner_id)
    text = await pool.fetchval("select faults::text from callback_partner_faults where partner_id = $1", partner_id)
    outbound = OutboundFaults.model_validate_json(text) if text else OutboundFaults()
    inbound = await snap_faults.load_profile(pool, partner_id)
    return {"partner_id": partner_id, "inbound": inbound.model_dump(), "outbound": outbound.model_dump()}


def parse_window(since_text: str | None, until_text: str | None, now: dt.datetime) -> tuple[dt.datetime | None, dt.datetime | None]:
    """`since` and `until` (parse_since), refused when `until` comes before
    `since`: such a window holds nothing, and an empty report would read as
    "no exchanges" (a CI gate passing) rather than as the typo it is."""
    since, until = parse_since(since_text, now, "since"), parse_since(until_text, now, "until")
    if since is not None and until is not None and until < since:
        raise Invalid.field("until", f"{until.isoformat()} is before since ({since.isoformat()}): the window holds nothing")
    return since, until


def parse_since(text: str | None, now: dt.datetime, field: str = "since") -> dt.datetime | None:
    """An ISO 8601 instant (with offset, or UTC assumed) or a duration back from
    now: 90s, 15m, 24h, 7d. An instant PostgreSQL cannot be sent (before year
    1 or after 9999 once in UTC) is refused like a malformed one, never a 500."""
    if text is None or text == "":
        return None
    match = re.fullmatch(r"([0-9]+)([smhd])", text.strip())
    try:
        if match:
            unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[match.group(2)]
            return now - dt.timedelta(**{unit: int(match.group(1))})
        value = dt.datetime.fromisoformat(text.strip())
        value = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        value.astimezone(dt.UTC)  # what the driver does: out of range raises here, not in the query
        return value
    except OverflowError:
        raise Invalid.field(field, f"{text!r} is out of range: a time between years 1 and 9999") from None
    except ValueError:
        raise Invalid.field(field, f"{text!r} is neither an ISO 8601 time (2025-09-24T10:00:00+07:00) nor a duration (90s, 15m, 24h, 7d)") from None
