-- SNAP BI adapter tables. Money never lives here: payments go through the
-- gateway's PaymentsPort. These tables hold who may call us and what they sent.

create table if not exists snap_partners (
    partner_id              text primary key check (length(partner_id) between 1 and 36),
    client_key              text not null unique check (length(client_key) between 1 and 128),
    -- HMAC-SHA512 key. Symmetric, so it is stored as is; shown once at creation.
    client_secret           text not null,
    public_key_pem          text not null,
    channel_id              text not null check (length(channel_id) between 1 and 5),
    partner_service_id      text not null check (length(partner_service_id) = 8),
    padding                 text not null check (padding in ('spaces', 'zeros')),
    signature_encoding      text not null check (signature_encoding in ('base64', 'hex')),
    timestamp_tolerance_s   integer not null check (timestamp_tolerance_s between 1 and 86400),
    -- null: follow the gateway's sandbox setting.
    sandbox                 boolean,
    -- null: the adapter's default (setting requests_per_second_max).
    requests_per_second_max integer check (requests_per_second_max > 0),
    bank_code               text not null default '',
    profile                 text not null default '',
    created_at              timestamptz not null default now()
);

-- Bearer tokens of service 73, by the SHA-256 of the token (the token itself
-- is never stored).
create table if not exists snap_tokens (
    token_sha256 bytea primary key,
    partner_id   text not null references snap_partners (partner_id) on delete cascade,
    expires_at   timestamptz not null,
    created_at   timestamptz not null default now()
);
create index if not exists snap_tokens_expires_at on snap_tokens (expires_at);

-- X-EXTERNAL-ID is unique per partner per day (the WIB day of X-TIMESTAMP).
-- The request's fingerprint (path and body hash) lets an identical retry
-- through while a different request reusing the id gets 409.
create table if not exists snap_external_ids (
    partner_id   text not null,
    day          date not null,
    external_id  text not null,
    fingerprint  text not null,
    created_at   timestamptz not null default now(),
    primary key (partner_id, day, external_id)
);

-- The last successful inquiry per partner and virtual account: a payment that
-- follows it must carry its inquiryRequestId as paymentRequestId.
create table if not exists snap_inquiries (
    partner_id         text not null,
    virtual_account_no text not null,
    inquiry_request_id text not null,
    inquired_at        timestamptz not null default now(),
    primary key (partner_id, virtual_account_no)
);

-- Every exchange, accepted or refused, for the conformance report.
create table if not exists snap_exchanges (
    id               bigint generated always as identity primary key,
    at               timestamptz not null default now(),
    partner_id       text,
    service_code     text not null,
    path             text not null,
    external_id      text,
    request_headers  jsonb not null,
    request_body     text not null,
    http_status      integer not null,
    response_code    text not null,
    response_body    jsonb not null,
    verdict          text not null check (verdict in ('accepted', 'refused')),
    rule             text,
    duration_ms      double precision not null
);
create index if not exists snap_exchanges_partner_at on snap_exchanges (partner_id, at);
