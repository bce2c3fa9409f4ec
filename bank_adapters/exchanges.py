"""The exchange log every adapter writes for the conformance report
(`partner_exchanges`, read by gateway/callbacks/conformance.py).

Rows are written in groups: concurrent `record()` calls share one INSERT of
many rows, so a busy link costs the database one statement per group rather
than one per message, and each caller still returns only once its row is
stored (a test, or a bank's CI asking for its report right after an answer,
finds the row). The same pattern as the posting batcher, for a table that
holds no money. Limits, with units: `rows_per_insert_max`, `inserts_in_flight_max`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pydantic_core
from aiohttp import web

from bank_adapters.grouping import MicroBatcher, settle, settle_all

REQUEST_BODY_CHARS_MAX = 16_384

# Set on an HTTP request by an adapter that wrote the request's one log line
# itself (with the exchange's fields): the gateway's middleware then writes
# none, so that every request still has exactly one line.
request_logged_key = web.RequestKey("kanal_request_logged", bool)

_INSERT = """
with commit_mode as (
    select case when $17 then set_config('synchronous_commit', 'off', true) end
)
insert into partner_exchanges (channel, partner_id, service_code, path, external_id, request_headers, request_body,
                               answered, http_status, response_code, response_body, rule, detail, fault, duration_ms, at)
select channel, partner_id, service_code, path, external_id, request_headers::jsonb, request_body,
       answered, http_status, response_code, response_body::jsonb, rule, detail, fault, duration_ms, at
  from unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
              $8::bool[], $9::int[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[], $15::float8[],
              $16::timestamptz[])
       as t(channel, partner_id, service_code, path, external_id, request_headers, request_body,
            answered, http_status, response_code, response_body, rule, detail, fault, duration_ms, at)
       cross join commit_mode
"""


@dataclass(slots=True)
class ExchangeRow:
    channel: str
    partner_id: str | None
    service_code: str
    path: str
    external_id: str | None
    request_headers: dict[str, Any]
    request_body: str
    answered: bool
    http_status: int | None
    response_code: str
    response_body: dict[str, Any] | str  # str: JSON text already encoded
    rule: str | None = None
    detail: str | None = None
    fault: str | None = None
    duration_ms: float = 0.0
    # When the request arrived (rows are written after the answer, and in groups).
    at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))

    def columns(self) -> tuple:
        """The row as stored. A bank can send what PostgreSQL cannot store
        (NUL in text, \\u0000 in JSON): it is stored as U+2400 (the symbol for
        NUL), so that the row is kept and does not fail the insert of the
        other banks' rows in its group."""
        return (
            self.channel,
            _text(self.partner_id),
            self.service_code,
            _text(self.path),
            _text(self.external_id),
            _storable_json(_json(self.request_headers)),
            _text(self.request_body[:REQUEST_BODY_CHARS_MAX]),
            self.answered,
            self.http_status,
            _text(self.response_code),
            _storable_json(self.response_body if isinstance(self.response_body, str) else _json(self.response_body)),
            _text(self.rule),
            _text(self.detail),
            _text(self.fault),
            max(self.duration_ms, 0.0),
            self.at,
        )


NUL_STORED_AS = "\u2400"
# \u0000 in JSON text, not preceded by an escaped backslash (\\u0000 is a backslash, then "u0000").
_JSON_NUL = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")


def _text(value: str | None) -> str | None:
    return value.replace("\x00", NUL_STORED_AS) if value is not None and "\x00" in value else value


def _storable_json(text: str) -> str:
    return _JSON_NUL.sub(r"\1\\u2400", text) if "\\u0000" in text else text


def _json(value: dict[str, Any]) -> str:
    """Compact JSON text (as json.dumps with ensure_ascii=False), encoded by pydantic-core."""
    return pydantic_core.to_json(value).decode("utf-8")


class ExchangeLog(MicroBatcher):
    task_name = "kanal-exchange-log"

    def __init__(self, pool: asyncpg.Pool, *, rows_per_insert_max: int = 256, inserts_in_flight_max: int = 2) -> None:
        super().__init__(group_size_max=rows_per_insert_max, group_wait_ms=0, groups_in_flight_max=inserts_in_flight_max)
        self.pool = pool

    async def record(self, row: ExchangeRow, *, after_durable_write: bool = False) -> None:
        """Store one row; returns once it is committed (raises if it could not be).

        `after_durable_write`: the exchange's own effects were made durable by a
        later synchronous commit (a payment's), so nothing but this row can be
        lost in a crash. A group made only of such rows commits without waiting
        for its WAL flush: it is visible as soon as it is committed, so a bank
        reading its report after the answer finds it; a database crash in the
        next fraction of a second can lose the row, never the payment. Any
        other row in the group makes the group wait, as every row did before."""
        await self._submit((row.columns(), after_durable_write))

    async def _execute(self, group: list[tuple]) -> None:
        columns = list(zip(*(values for (values, _), _ in group), strict=True))
        without_flush = all(after_durable_write for (_, after_durable_write), _ in group)
        try:
            await self.pool.execute(_INSERT, *(list(c) for c in columns), without_flush)
        except Exception as error:  # noqa: BLE001 - every waiter hears it, each row tried alone first
            if len(group) > 1:
                # Nothing of the group was stored (one statement): each row
                # alone, so that a row that cannot be stored fails only itself.
                await asyncio.gather(*(self._execute([item]) for item in group))
                return
            settle_all((future for _, future in group), error)
            return
        except BaseException as error:  # cancellation: every waiter hears it
            settle_all((future for _, future in group), error)
            raise
        for _, future in group:
            settle(future)


async def record_configured_partners(pool: asyncpg.Pool, adapter: str, partner_ids: list[str]) -> None:
    """Note, for every process that reads this database, the partners this
    adapter is configured with (migration 0026): `kanal faults` and `kanal
    conformance` run from a shell without the gateway's settings then know
    them. Done once at start; a failure is logged, never fatal."""
    if not partner_ids:
        return
    await pool.execute(
        """insert into configured_partners (partner_id, adapter)
           select unnest($1::text[]), $2
           on conflict (partner_id) do update set adapter = excluded.adapter, configured_at = now()""",
        sorted(set(partner_ids)),
        adapter,
    )
