"""Callback tables in SQL (migrations/0003_callbacks.sql).

JSON goes in and out as text (`$n::text::jsonb`, `col::text`) so that this
code works whatever codecs the caller's pool registers.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any

import asyncpg

from gateway.callbacks import faults as fault_rules

ENDPOINT_COLUMNS = """e.id, e.owner_kind, e.owner_id, e.npp, e.url, e.event_types, e.description, e.status,
    e.disabled_reason, e.disabled_at, e.faults::text as faults, e.created_at,
    e.previous_secret_expires_at"""


def endpoint_view(row: asyncpg.Record) -> dict[str, Any]:
    """An endpoint without its secrets."""
    return {
        "id": row["id"],
        "owner": {"kind": row["owner_kind"], "id": row["owner_id"]},
        "npp": row["npp"],
        "url": row["url"],
        "event_types": list(row["event_types"]),
        "description": row["description"],
        "status": row["status"],
        "disabled_reason": row["disabled_reason"],
        "disabled_at": row["disabled_at"].isoformat() if row["disabled_at"] else None,
        "faults": json.loads(row["faults"]),
        "previous_secret_valid_until": (
            row["previous_secret_expires_at"].isoformat() if row["previous_secret_expires_at"] else None
        ),
        "created_at": row["created_at"].isoformat(),
    }


async def insert_endpoint(
    conn: asyncpg.Connection,
    *,
    owner_kind: str,
    owner_id: str,
    npp: str | None,
    url: str,
    event_types: list[str],
    description: str,
    secret: str,
) -> asyncpg.Record:
    return await conn.fetchrow(
        f"""insert into callback_endpoints as e (owner_kind, owner_id, npp, url, event_types, description, secret, from_outbox_id)
            values ($1, $2, $3, $4, $5, $6, $7, (select coalesce(max(id), 0) from outbox))
            returning {ENDPOINT_COLUMNS}""",
        owner_kind,
        owner_id,
        npp,
        url,
        event_types,
        description,
        secret,
    )


async def endpoint(conn: asyncpg.Connection | asyncpg.Pool, endpoint_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(f"select {ENDPOINT_COLUMNS} from callback_endpoints e where e.id = $1", endpoint_id)


async def endpoints(pool: asyncpg.Pool, owner_kind: str | None = None, owner_id: str | None = None) -> list[asyncpg.Record]:
    return await pool.fetch(
        f"""select {ENDPOINT_COLUMNS} from callback_endpoints e
             where ($1::text is null or e.owner_kind = $1) and ($2::text is null or e.owner_id = $2)
             order by e.created_at, e.id""",
        owner_kind,
        owner_id,
    )


async def count_endpoints(conn: asyncpg.Connection, owner_kind: str, owner_id: str) -> int:
    return await conn.fetchval(
        "select count(*) from callback_endpoints where owner_kind = $1 and owner_id = $2", owner_kind, owner_id
    )


# ------------------------------------------------------------------ relay --


@dataclass(frozen=True, slots=True)
class RelayResult:
    events: int  # outbox rows read
    deliveries: int  # deliveries created
    busy: bool = False  # another relay holds the cursor


async def relay_once(pool: asyncpg.Pool, *, batch_size_max: int, horizon_s: int, rng: random.Random | None = None) -> RelayResult:
    """Fan the next outbox rows out into deliveries, once per matching
    endpoint. One relay at a time holds the cursor; others skip, not wait."""
    rng = rng or random.Random()
    async with pool.acquire() as conn, conn.transaction():
        cursor = await conn.fetchval("select cursor from callback_relay where id = 1 for update skip locked")
        if cursor is None:
            return RelayResult(0, 0, busy=True)
        # Rows at or below every endpoint's starting point are nobody's: with
        # no endpoints the relay reads and writes nothing.
        floor = await conn.fetchval("select min(from_outbox_id) from callback_endpoints")
        if floor is None:
            return RelayResult(0, 0)
        cursor = max(cursor, floor)
        rows = await conn.fetch(
            """select o.id, o.event_id, o.topic, o.npp, o.payload::text as payload, o.created_at
                 from outbox o
                where o.id > $1 and not exists (select 1 from callback_relayed r where r.outbox_id = o.id)
                order by o.id
                limit $2""",
            cursor,
            batch_size_max,
        )
        created = 0
        if rows:
            created = await _fan_out(conn, rows, rng)
            await conn.execute(
                "insert into callback_relayed (outbox_id) select unnest($1::bigint[]) on conflict do nothing",
                [r["id"] for r in rows],
            )
        # Move the cursor past rows old enough that no lower id can still
        # appear, and never past a row not relayed yet.
        await conn.execute(
            """with settled as (
                   select least(
                       (select max(r.outbox_id) from callback_relayed r join outbox o on o.id = r.outbox_id
                         where o.created_at < now() - make_interval(secs => $2)),
                       (select min(o.id) - 1 from outbox o
                         where o.id > $1 and not exists (select 1 from callback_relayed r where r.outbox_id = o.id))
                   ) as upto
               ), moved as (
                   update callback_relay set cursor = settled.upto from settled
                    where id = 1 and settled.upto is not null and settled.upto > $1
                   returning cursor
               )
               delete from callback_relayed where outbox_id <= (select cursor from moved)""",
            cursor,
            float(horizon_s),
        )
        return RelayResult(len(rows), created)


async def _fan_out(conn: asyncpg.Connection, rows: list[asyncpg.Record], rng: random.Random) -> int:
    targets = await conn.fetch(
        """select e.id, e.owner_kind, e.npp, e.event_types, e.from_outbox_id, e.deliveries_created,
                  e.status = 'disabled' as disabled,
                  coalesce(nullif(e.faults, '{}'::jsonb), pf.faults, '{}'::jsonb)::text as faults
             from callback_endpoints e
             left join callback_partner_faults pf on e.owner_kind = 'partner' and pf.partner_id = e.owner_id
            order by e.id
              for update of e"""
    )
    if not targets:
        return 0
    sequences = {t["id"]: t["deliveries_created"] for t in targets}
    profiles = {t["id"]: fault_rules.OutboundFaults.model_validate_json(t["faults"]) for t in targets}
    records = []
    for row in rows:
        for target in targets:
            if row["topic"] not in target["event_types"] or row["id"] <= target["from_outbox_id"]:
                continue
            if target["npp"] is not None and row["npp"] != target["npp"]:
                continue
            sequences[target["id"]] += 1
            sequence = sequences[target["id"]]
            chosen, hold_ms = fault_rules.choose(profiles[target["id"]], sequence, rng)
            dropped = fault_rules.DROP in chosen
            # The endpoint's row is locked (above): it cannot be enabled
            # before these rows commit, and enabling then unpauses them.
            paused = target["disabled"] and not dropped
            records.append(
                (target["id"], row["id"], row["event_id"], row["topic"], row["npp"], row["payload"], row["created_at"],
                 sequence, "dropped" if dropped else "pending", float(hold_ms) / 1000, chosen, dropped, paused)
            )
    if not records:
        return 0
    # One statement for the whole fan-out, not executemany's one per row: the
    # counters' statement trigger (migration 0022) then writes one delta per
    # status, not one per delivery. The faults go as comma-joined names (a
    # text[] per row cannot be unnested from one array).
    columns = [list(column) for column in zip(*records, strict=True)]
    columns[10] = [",".join(chosen) for chosen in columns[10]]
    await conn.execute(
        """insert into callback_deliveries (endpoint_id, outbox_id, event_id, topic, npp, payload, event_at, sequence,
                                            status, next_attempt_at, faults, finished_at, paused)
           select endpoint_id, outbox_id, event_id, topic, npp, payload::jsonb, event_at, sequence,
                  status, now() + make_interval(secs => hold_s), coalesce(string_to_array(nullif(faults, ''), ','), '{}'),
                  case when dropped then now() end, paused
             from unnest($1::text[], $2::bigint[], $3::uuid[], $4::text[], $5::text[], $6::text[], $7::timestamptz[],
                         $8::bigint[], $9::text[], $10::float8[], $11::text[], $12::bool[], $13::bool[])
                  with ordinality as t(endpoint_id, outbox_id, event_id, topic, npp, payload, event_at, sequence,
                                       status, hold_s, faults, dropped, paused, n)
            order by n
           on conflict (endpoint_id, event_id) do nothing""",
        *columns,
    )
    await conn.executemany(
        "update callback_endpoints set deliveries_created = $2 where id = $1 and deliveries_created < $2",
        [(endpoint_id, sequence) for endpoint_id, sequence in sequences.items()],
    )
    return len(records)


# ------------------------------------------------------------- deliveries --

DELIVERY_STATUSES = ("pending", "delivered", "failed", "gone", "dropped")
ATTEMPT_OUTCOMES = ("delivered", "retry", "gone", "exhausted", "dropped")

# The due deliveries in next_attempt_at order, through the index of the
# unpaused pending ones (callback_deliveries_claim, migration 0022): a
# disabled endpoint's backlog is paused, so a claim never walks it. The join
# still checks the endpoint: the few deliveries that were being sent when
# their endpoint was disabled stay unpaused, and are passed over here.
CLAIM_SQL = """
select d.id, d.endpoint_id, d.event_id, d.topic, d.npp, d.payload::text as payload, d.event_at,
       d.round_attempts, d.attempts, d.replays, d.faults,
       e.url, e.secret,
       case when e.previous_secret_expires_at > now() then e.previous_secret end as previous_secret
  from callback_deliveries d
  join callback_endpoints e on e.id = d.endpoint_id
 where d.status = 'pending' and not d.paused and d.next_attempt_at <= now() and e.status = 'enabled'
 order by d.next_attempt_at, d.id
 limit 1
   for update of d skip locked
"""


DELIVERY_COLUMNS = """d.id, d.endpoint_id, d.event_id, d.topic, d.npp, d.status, d.sequence, d.attempts,
    d.round_attempts, d.replays, d.faults, d.next_attempt_at, d.last_http_status, d.last_error,
    d.created_at, d.finished_at, d.event_at"""


def delivery_view(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": row["id"],
        "endpoint_id": row["endpoint_id"],
        "event_id": webhook_id(row["event_id"]),
        "type": row["topic"],
        "npp": row["npp"],
        "status": row["status"],
        "sequence": row["sequence"],
        "attempts": row["attempts"],
        "replays": row["replays"],
        "faults": list(row["faults"]),
        "next_attempt_at": row["next_attempt_at"].isoformat() if row["status"] == "pending" else None,
        "last_http_status": row["last_http_status"],
        "last_error": row["last_error"],
        "event_at": row["event_at"].isoformat(),
        "created_at": row["created_at"].isoformat(),
        "finished_at": row["finished_at"].isoformat() if row["finished_at"] else None,
    }


def attempt_view(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "attempt": row["attempt"],
        "started_at": row["started_at"].isoformat(),
        "outcome": row["outcome"],
        "http_status": row["http_status"],
        "latency_ms": row["latency_ms"],
        "response_excerpt": row["response_excerpt"],
        "error": row["error"],
        "fault": row["fault"],
        "worker": row["worker"],
    }


def webhook_id(event_id: Any) -> str:
    """The webhook-id of an outbox event: "evt_" and the event's UUID (hex)."""
    return "evt_" + (event_id.hex if hasattr(event_id, "hex") else str(event_id).replace("-", ""))


async def delivery(pool: asyncpg.Pool | asyncpg.Connection, delivery_id: int) -> asyncpg.Record | None:
    return await pool.fetchrow(f"select {DELIVERY_COLUMNS} from callback_deliveries d where d.id = $1", delivery_id)


async def deliveries(
    pool: asyncpg.Pool, endpoint_id: str, *, status: str | None, limit: int, before_id: int | None
) -> list[asyncpg.Record]:
    return await pool.fetch(
        f"""select {DELIVERY_COLUMNS} from callback_deliveries d
             where d.endpoint_id = $1 and ($2::text is null or d.status = $2) and ($4::bigint is null or d.id < $4)
             order by d.id desc limit $3""",
        endpoint_id,
        status,
        limit,
        before_id,
    )


async def attempts(pool: asyncpg.Pool, delivery_id: int) -> list[asyncpg.Record]:
    return await pool.fetch("select * from callback_attempts where delivery_id = $1 order by id", delivery_id)


async def replay_delivery(conn: asyncpg.Connection, delivery_id: int) -> asyncpg.Record | None:
    """Send again now, on a fresh retry round and without faults."""
    return await conn.fetchrow(
        """update callback_deliveries set status = 'pending', round_attempts = 0, replays = replays + 1,
                  next_attempt_at = now(), finished_at = null, faults = '{}', paused = false
            where id = $1
        returning endpoint_id""",
        delivery_id,
    )


async def replay_failed(conn: asyncpg.Connection, endpoint_id: str) -> int:
    """Reads the failed, gone and dropped deliveries only, through the index of
    undelivered ones (migration 0022), not the endpoint's whole history."""
    rows = await conn.fetch(
        """update callback_deliveries set status = 'pending', round_attempts = 0, replays = replays + 1,
                  next_attempt_at = now(), finished_at = null, faults = '{}'
            where endpoint_id = $1 and status in ('failed', 'gone', 'dropped')
        returning id""",
        endpoint_id,
    )
    return len(rows)


# A disabled endpoint's pending deliveries are paused, out of the claim's
# index (migration 0022), by a trigger on the endpoint's status (migration
# 0023): in the statement that changes it, so with its row taken, whoever
# changes it. Pausing, unpausing and the relay's writes of paused rows (the
# relay takes every endpoint's row) happen one after the other. Deliveries a
# worker is sending are locked: pausing skips them (waiting could deadlock
# with that worker, which may be disabling the same endpoint), and they stay
# claimable, which costs a claim a row. Unpausing waits only for a replay of
# a paused delivery, and replays enable first, so they take the endpoint's
# row before any delivery's.


async def enable(conn: asyncpg.Connection, endpoint_id: str) -> None:
    """Enable the endpoint, unless it is already (an enabled endpoint's row is
    not even locked); its waiting deliveries are due again (unpaused by the
    trigger of migration 0023)."""
    await conn.execute(
        """update callback_endpoints set status = 'enabled', disabled_reason = null, disabled_at = null
            where id = $1 and status = 'disabled'""",
        endpoint_id,
    )


async def disable(conn: asyncpg.Connection, endpoint_id: str, reason: str) -> None:
    """Disable the endpoint, unless it is already; its pending deliveries wait
    (paused by the trigger of migration 0023)."""
    await conn.execute(
        """update callback_endpoints set status = 'disabled', disabled_reason = $2, disabled_at = now()
            where id = $1 and status = 'enabled'""",
        endpoint_id,
        reason,
    )


async def status_counts(conn: asyncpg.Connection | asyncpg.Pool) -> dict[str, dict[str, int]]:
    """Deliveries by status and attempts by outcome, every state present (0
    when none), from the counters of migration 0022: the same numbers as a
    GROUP BY over both tables, at the cost of a few rows."""
    counts: dict[str, dict[str, int]] = {
        "deliveries": dict.fromkeys(DELIVERY_STATUSES, 0),
        "attempts": dict.fromkeys(ATTEMPT_OUTCOMES, 0),
    }
    for row in await conn.fetch("select kind, status, n from callback_counts"):
        counts["deliveries" if row["kind"] == "delivery" else "attempts"][row["status"]] = row["n"]
    return counts


async def fold_counts(conn: asyncpg.Connection | asyncpg.Pool, rows_max: int) -> int:
    """Move up to `rows_max` of the oldest committed count deltas into the
    totals (one transaction); returns how many moved. The counts read before
    and after are the same."""
    return await conn.fetchval("select kanal_fold_callback_counts($1)", rows_max)
