-- Outbound callbacks (Standard Webhooks): endpoints, one delivery per
-- (endpoint, event), every attempt logged, and the relay's cursor over the
-- outbox. Fault profiles for integrators live here too (outbound side; the
-- SNAP adapter keeps its inbound side in snap_faults).

create table callback_endpoints (
    id                  text primary key default ('ep_' || replace(gen_random_uuid()::text, '-', '')),
    -- Employers register their own endpoints (API key); banks and other
    -- partners register through the admin token.
    owner_kind          text not null check (owner_kind in ('employer', 'partner')),
    owner_id            text not null check (owner_id ~ '^[A-Za-z0-9_.-]{1,36}$'),
    -- An employer's endpoint sees that employer's events only; a partner's
    -- endpoint sees every employer's unless npp narrows it.
    npp                 text references employers (npp),
    url                 text not null check (url ~ '^https?://[^[:space:]]+$' and length(url) <= 2048),
    event_types         text[] not null check (
                            cardinality(event_types) between 1 and 4
                            and event_types <@ array['bill.created', 'payment.posted', 'payment.reversed', 'coverage.changed']),
    description         text not null default '' check (length(description) <= 200),
    secret              text not null check (secret ~ '^whsec_[A-Za-z0-9+/=]{32,}$'),
    -- During a rotation the old secret keeps signing too, until it expires.
    previous_secret     text check (previous_secret ~ '^whsec_[A-Za-z0-9+/=]{32,}$'),
    previous_secret_expires_at timestamptz,
    status              text not null default 'enabled' check (status in ('enabled', 'disabled')),
    disabled_reason     text,
    disabled_at         timestamptz,
    -- Outbound fault profile for this endpoint (see docs/callbacks.md); {} = none.
    faults              jsonb not null default '{}'::jsonb,
    -- Events already in the outbox when the endpoint was registered are not sent.
    from_outbox_id      bigint not null default 0,
    -- Deliveries fanned out to this endpoint so far (numbers each delivery).
    deliveries_created  bigint not null default 0 check (deliveries_created >= 0),
    created_at          timestamptz not null default now(),
    check (owner_kind <> 'employer' or npp = owner_id),
    check ((previous_secret is null) = (previous_secret_expires_at is null)),
    check ((status = 'disabled') = (disabled_at is not null))
);
create index callback_endpoints_owner on callback_endpoints (owner_kind, owner_id);

-- Outbound fault profile per partner: applies to every endpoint the partner
-- owns unless the endpoint has its own.
create table callback_partner_faults (
    partner_id  text primary key check (partner_id ~ '^[A-Za-z0-9_.-]{1,36}$'),
    faults      jsonb not null,
    updated_at  timestamptz not null default now()
);

create table callback_deliveries (
    id               bigint generated always as identity primary key,
    endpoint_id      text not null references callback_endpoints (id) on delete cascade,
    outbox_id        bigint not null,
    -- The outbox event id: the webhook-id, stable across retries and replays.
    event_id         uuid not null,
    topic            text not null,
    npp              text,
    payload          jsonb not null,
    event_at         timestamptz not null,
    sequence         bigint not null check (sequence >= 1),
    status           text not null default 'pending'
                         check (status in ('pending', 'delivered', 'failed', 'gone', 'dropped')),
    -- Attempts in the current round (a replay starts a new round) and overall.
    round_attempts   integer not null default 0 check (round_attempts >= 0),
    attempts         integer not null default 0 check (attempts >= 0),
    replays          integer not null default 0 check (replays >= 0),
    next_attempt_at  timestamptz not null default now(),
    -- Outbound faults chosen for this delivery when it was created.
    faults           text[] not null default '{}',
    last_http_status integer,
    last_error       text,
    created_at       timestamptz not null default now(),
    finished_at      timestamptz,
    unique (endpoint_id, event_id),
    check ((status = 'pending') = (finished_at is null))
);
create index callback_deliveries_due on callback_deliveries (next_attempt_at, id) where status = 'pending';
create index callback_deliveries_endpoint on callback_deliveries (endpoint_id, id);

create table callback_attempts (
    id                bigint generated always as identity primary key,
    delivery_id       bigint not null references callback_deliveries (id) on delete cascade,
    endpoint_id       text not null,
    npp               text,
    attempt           integer not null check (attempt >= 1),
    started_at        timestamptz not null default now(),
    -- delivered (2xx), retry (timeout, error, 5xx, 429 or any other status),
    -- gone (410), exhausted (the last retry failed), dropped (a fault).
    outcome           text not null check (outcome in ('delivered', 'retry', 'gone', 'exhausted', 'dropped')),
    http_status       integer,
    latency_ms        integer check (latency_ms >= 0),
    response_excerpt  text not null default '' check (length(response_excerpt) <= 1024),
    error             text,
    fault             text,
    worker            text not null default ''
);
create index callback_attempts_delivery on callback_attempts (delivery_id, id);

-- The relay's position in the outbox. Outbox ids are allocated before
-- commit, so a row with a lower id can become visible after a higher one:
-- the cursor only moves past rows older than the relay horizon, and rows
-- above it are remembered in callback_relayed until then.
create table callback_relay (
    id      smallint primary key check (id = 1),
    cursor  bigint not null check (cursor >= 0)
);
insert into callback_relay (id, cursor) values (1, 0);

create table callback_relayed (
    outbox_id bigint primary key
);
