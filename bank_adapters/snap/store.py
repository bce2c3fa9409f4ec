"""The SNAP adapter's own tables (migrations/0001_partners.sql), in SQL.

JSON goes in and out as text (`$n::text::jsonb`, `col::text`) so that this
code works whatever codecs the gateway registers on its pool.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import secrets
from dataclasses import asdict, dataclass
from typing import Any

import asyncpg

from bank_adapters.exchanges import ExchangeRow
from bank_adapters.grouping import MicroBatcher, settle, settle_all
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
    """`field` is what is taken: "partner_id" or "client_key"."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


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
        # snap_partners_pkey (partner_id) or snap_partners_client_key_key (migrations/0001_partners.sql)
        field = "client_key" if "client_key" in (error.constraint_name or "") else "partner_id"
        taken = "client key" if field == "client_key" else "partner id"
        raise PartnerExists(f"a partner with this {taken} is already registered ({error.constraint_name})", field) from None
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


@dataclass(frozen=True, slots=True)
class Authorization:
    """What `authorize` read (and claimed) in one round trip."""

    owner: TokenOwner | None
    faults: str | None  # the partner's inbound fault profile as JSON text; None when there is none
    claimed: bool | None  # None: no claim was made (not asked, or the token does not pass)
    inquiry_request_id: str | None  # the last inquiry on the virtual account asked about


class Authorizer(MicroBatcher):
    """Reads, for each signed transaction, the token's owner, the partner's
    fault profile and, when asked, claims X-EXTERNAL-ID and reads the VA's
    last inquiry: concurrent requests share one statement (and one commit),
    as in the posting batcher (migrations/0004_authorize.sql). A database
    round trip is the largest cost of a request on the database side, more
    than the work it carries. Limits, with units: `requests_per_group_max`,
    `groups_in_flight_max`."""

    task_name = "kanal-snap-authorizer"

    def __init__(self, pool: asyncpg.Pool, *, requests_per_group_max: int = 128, groups_in_flight_max: int = 2) -> None:
        super().__init__(group_size_max=requests_per_group_max, group_wait_ms=0, groups_in_flight_max=groups_in_flight_max)
        self.pool = pool

    async def authorize(
        self,
        token: str,
        partner_id: str,
        *,
        claim: bool,
        day: dt.date,
        external_id: str,
        fingerprint: str,
        virtual_account_no: str | None = None,
    ) -> Authorization:
        """`claimed` is False when the partner already used `external_id` on
        `day` for a different request (the same path and body hash is a
        retry, not a reuse); None when no claim was made (`claim` false, or
        the token is unknown, expired or another partner's)."""
        row = await self._submit((token_digest(token), partner_id, claim, day, external_id, fingerprint, virtual_account_no))
        owner = None if row["token_partner_id"] is None else TokenOwner(row["token_partner_id"], row["token_expired"])
        found = row["claimed_fingerprint"]
        return Authorization(
            owner=owner,
            faults=row["faults"],
            claimed=None if found is None else found == fingerprint,
            inquiry_request_id=row["inquiry_request_id"],
        )

    async def _execute(self, group: list[tuple]) -> None:
        try:
            columns = [list(column) for column in zip(*(values for values, _ in group), strict=True)]
            rows = await self.pool.fetch(_AUTHORIZE, *columns)
            assert len(rows) == len(group), (len(rows), len(group))
        except Exception as error:
            if len(group) == 1:
                settle(group[0][1], error=error)
                return
            # Nothing of the group committed (one statement): each request
            # alone, so that one that cannot be read fails only itself.
            await asyncio.gather(*(self._execute([item]) for item in group))
            return
        except BaseException as error:  # cancellation: nobody may wait forever
            settle_all((future for _, future in group), error)
            raise
        for row, (_, future) in zip(rows, group, strict=True):
            settle(future, result=row)


_AUTHORIZE = "select * from snap_authorize($1, $2, $3, $4, $5, $6, $7)"


async def remember_inquiry(pool: asyncpg.Pool, partner_id: str, virtual_account_no: str, inquiry_request_id: str) -> None:
    """Committed without waiting for the WAL flush, as the external id claim
    (migrations/0004_authorize.sql): the inquiry's exchange row, committed
    synchronously before the answer, flushes it."""
    await pool.execute(
        """with async_commit as (select set_config('synchronous_commit', 'off', true))
           insert into snap_inquiries (partner_id, virtual_account_no, inquiry_request_id)
           select $1, $2, $3 from async_commit
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
    response_body: str = "{}"  # JSON text, as sent
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
    # The ledger posted this request's payment (a synchronous commit, after the claim).
    posted: bool = False


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
        response_body=exchange.response_body,
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
