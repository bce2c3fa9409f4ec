"""The SNAP adapter's own tables (migrations/0001_partners.sql), in SQL.

JSON goes in and out as text (`$n::text::jsonb`, `col::text`) so that this
code works whatever codecs the gateway registers on its pool.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import asdict, dataclass
from typing import Any

import asyncpg

from bank_adapters.exchanges import ExchangeRow
from bank_adapters.snap import protocol

CLIENT_SECRET_BYTES = 32
ACCESS_TOKEN_BYTES = 32


@dataclass(frozen=True, slots=True)
class Partner:
    partner_id: str
    client_key: str
    client_secret: str
    public_key_pem: str
    channel_id: str
    partner_service_id: str  # 8 characters, padded
    padding: str  # "spaces" or "zeros"
    signature_encoding: str  # "base64" or "hex"
    timestamp_tolerance_s: int
    sandbox: bool | None
    requests_per_second_max: int | None
    bank_code: str
    profile: str

    def public_view(self) -> dict[str, Any]:
        """Everything but the secret: what `partner list` and the ops API show."""
        view = asdict(self)
        del view["client_secret"]
        view["encoding"] = view.pop("signature_encoding")
        return view


class PartnerExists(Exception):
    pass


_PARTNER_COLUMNS = """partner_id, client_key, client_secret, public_key_pem, channel_id,
    partner_service_id, padding, signature_encoding, timestamp_tolerance_s, sandbox,
    requests_per_second_max, bank_code, profile"""


def _partner(row: asyncpg.Record | None) -> Partner | None:
    return None if row is None else Partner(**{key: row[key] for key in Partner.__slots__})


async def insert_partner(
    pool: asyncpg.Pool,
    *,
    partner_id: str,
    client_key: str,
    public_key_pem: str,
    channel_id: str,
    partner_service_id: str,
    padding: str,
    signature_encoding: str,
    timestamp_tolerance_s: int,
    sandbox: bool | None,
    requests_per_second_max: int | None,
    bank_code: str = "",
    profile: str = "",
) -> Partner:
    """Register a partner with a freshly generated client secret."""
    client_secret = secrets.token_urlsafe(CLIENT_SECRET_BYTES)
    try:
        row = await pool.fetchrow(
            f"""insert into snap_partners ({_PARTNER_COLUMNS})
                values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
                returning {_PARTNER_COLUMNS}""",
            partner_id,
            client_key,
            client_secret,
            public_key_pem,
            channel_id,
            partner_service_id,
            padding,
            signature_encoding,
            timestamp_tolerance_s,
            sandbox,
            requests_per_second_max,
            bank_code,
            profile,
        )
    except asyncpg.UniqueViolationError as error:
        raise PartnerExists(
            f"a partner with this partner id or client key is already registered ({error.constraint_name})"
        ) from None
    partner = _partner(row)
    assert partner is not None
    return partner


async def list_partners(pool: asyncpg.Pool) -> list[Partner]:
    rows = await pool.fetch(f"select {_PARTNER_COLUMNS} from snap_partners order by partner_id")
    return [p for p in map(_partner, rows) if p is not None]


async def partner_by_client_key(pool: asyncpg.Pool, client_key: str) -> Partner | None:
    return _partner(await pool.fetchrow(f"select {_PARTNER_COLUMNS} from snap_partners where client_key = $1", client_key))


async def partner_by_id(pool: asyncpg.Pool, partner_id: str) -> Partner | None:
    return _partner(await pool.fetchrow(f"select {_PARTNER_COLUMNS} from snap_partners where partner_id = $1", partner_id))


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


async def issue_token(pool: asyncpg.Pool, partner_id: str, ttl_s: int) -> str:
    token = secrets.token_urlsafe(ACCESS_TOKEN_BYTES)
    async with pool.acquire() as conn, conn.transaction():
        # Housekeeping rides on issuance: a partner's expired tokens go here.
        await conn.execute("delete from snap_tokens where partner_id = $1 and expires_at < now()", partner_id)
        await conn.execute(
            "insert into snap_tokens (token_sha256, partner_id, expires_at) values ($1, $2, now() + make_interval(secs => $3))",
            token_digest(token),
            partner_id,
            float(ttl_s),
        )
    return token


@dataclass(frozen=True, slots=True)
class TokenOwner:
    partner_id: str
    expired: bool


async def token_owner_and_faults(pool: asyncpg.Pool, token: str, partner_id: str) -> tuple[TokenOwner | None, str | None]:
    """The token's owner and the partner's inbound fault profile (JSON text,
    None when there is none), in one round trip: every transaction needs both."""
    row = await pool.fetchrow(
        """select t.partner_id, t.expires_at <= now() as expired,
                  (select profile::text from partner_inbound_faults where partner_id = $2) as faults
             from (select 1) one left join snap_tokens t on t.token_sha256 = $1""",
        token_digest(token),
        partner_id,
    )
    owner = None if row["partner_id"] is None else TokenOwner(row["partner_id"], row["expired"])
    return owner, row["faults"]


_CLAIM = """with claimed as (
               insert into snap_external_ids (partner_id, day, external_id, fingerprint)
               values ($1, $2, $3, $4)
               on conflict do nothing
               returning fingerprint),
           found as (
               select fingerprint from claimed
               union all
               select fingerprint from snap_external_ids
                where partner_id = $1 and day = $2 and external_id = $3
               limit 1)
           select (select fingerprint from found) as fingerprint,
                  (select inquiry_request_id from snap_inquiries
                    where partner_id = $1 and virtual_account_no = $5) as inquiry_request_id"""


async def claim_external_id(
    pool: asyncpg.Pool, partner_id: str, day: dt.date, external_id: str, fingerprint: str, virtual_account_no: str | None = None
) -> tuple[bool, str | None]:
    """Record an X-EXTERNAL-ID; False when the partner already used it that day
    for a different request (same path and body hash is a retry, not a reuse).
    Also reads, in the same round trip, the last inquiry id on
    `virtual_account_no` (a payment needs it next)."""
    row = await pool.fetchrow(_CLAIM, partner_id, day, external_id, fingerprint, virtual_account_no)
    fingerprint_found = row["fingerprint"]
    if fingerprint_found is None:
        # A concurrent claim of the same id committed while ours waited on it:
        # this statement's snapshot predates it, a new statement sees it.
        fingerprint_found = await pool.fetchval(
            "select fingerprint from snap_external_ids where partner_id = $1 and day = $2 and external_id = $3",
            partner_id,
            day,
            external_id,
        )
    return fingerprint_found == fingerprint, row["inquiry_request_id"]


async def remember_inquiry(pool: asyncpg.Pool, partner_id: str, virtual_account_no: str, inquiry_request_id: str) -> None:
    await pool.execute(
        """insert into snap_inquiries (partner_id, virtual_account_no, inquiry_request_id)
           values ($1, $2, $3)
           on conflict (partner_id, virtual_account_no)
           do update set inquiry_request_id = excluded.inquiry_request_id, inquired_at = now()""",
        partner_id,
        virtual_account_no,
        inquiry_request_id,
    )


async def last_inquiry(pool: asyncpg.Pool, partner_id: str, virtual_account_no: str) -> str | None:
    return await pool.fetchval(
        "select inquiry_request_id from snap_inquiries where partner_id = $1 and virtual_account_no = $2",
        partner_id,
        virtual_account_no,
    )


@dataclass(slots=True)
class Exchange:
    service_code: str
    path: str
    request_headers: dict[str, str]
    request_body: str
    http_status: int = 0
    response_code: str = ""
    response_body: dict[str, Any] | None = None
    rule: str | None = None
    partner_id: str | None = None
    external_id: str | None = None
    duration_ms: float = 0.0
    fault: str | None = None  # the injected fault that shaped this exchange, if any
    # Set once the partner is authenticated: what the response is signed with.
    signing: tuple[str, str, str] | None = None  # (client secret, encoding, access token); never logged
    plan: Any = None  # bank_adapters.snap.faults.Plan
    # (virtualAccountNo as sent, its last inquiry id) read with the external id claim.
    last_inquiry: tuple[str, str | None] | None = None


def exchange_row(exchange: Exchange) -> ExchangeRow:
    """The conformance log's row for one SNAP exchange (http_status 0: unanswered)."""
    answered = exchange.http_status != 0
    return ExchangeRow(
        channel="snap",
        partner_id=exchange.partner_id,
        service_code=exchange.service_code,
        path=exchange.path,
        external_id=exchange.external_id,
        request_headers=exchange.request_headers,
        request_body=exchange.request_body,
        answered=answered,
        http_status=exchange.http_status if answered else None,
        response_code=exchange.response_code,
        response_body=exchange.response_body or {},
        rule=exchange.rule,
        fault=exchange.fault,
        duration_ms=exchange.duration_ms,
        at=dt.datetime.now(dt.UTC) - dt.timedelta(milliseconds=exchange.duration_ms),
    )


async def forget_old(pool: asyncpg.Pool, *, external_id_days_kept: int = 2) -> None:
    """Drop expired tokens and external ids too old to collide (housekeeping)."""
    await pool.execute("delete from snap_tokens where expires_at < now() - interval '1 hour'")
    today = protocol.wib_day(dt.datetime.now(dt.UTC))
    await pool.execute("delete from snap_external_ids where day < $1", today - dt.timedelta(days=external_id_days_kept))
