-- The conformance log and inbound fault profiles belong to the partner, not to
-- one adapter: a bank that pays over SNAP and over an ISO 8583 link gets one
-- report and one place to order faults. These tables replace the SNAP
-- adapter's snap_exchanges and snap_faults (copied here when they exist; the
-- SNAP adapter's migration 0003 drops them afterwards).

create table if not exists partner_exchanges (
    id               bigint generated always as identity primary key,
    at               timestamptz not null default now(),
    channel          text not null check (channel ~ '^[a-z0-9_]{1,32}$'),
    partner_id       text,
    -- SNAP: the service code (24, 25, 26, 73); ISO 8583: the message kind
    -- (inquiry, payment, advice, reversal, status, network).
    service_code     text not null,
    -- SNAP: the request path; ISO 8583: the request MTI.
    path             text not null,
    -- SNAP: X-EXTERNAL-ID; ISO 8583: STAN/RRN.
    external_id      text,
    request_headers  jsonb not null default '{}',
    request_body     text not null,
    answered         boolean not null,
    -- SNAP only (null on other channels, 0 never stored).
    http_status      integer check (http_status between 100 and 599),
    response_code    text not null default '',
    response_body    jsonb not null default '{}',
    rule             text,
    -- What exactly broke the rule ("DE11, DE37 missing").
    detail           text,
    fault            text,
    duration_ms      double precision not null check (duration_ms >= 0)
);
create index if not exists partner_exchanges_partner_id on partner_exchanges (partner_id, id);
create index if not exists partner_exchanges_partner_at on partner_exchanges (partner_id, at);

create table if not exists partner_inbound_faults (
    partner_id  text primary key check (length(partner_id) between 1 and 36),
    profile     jsonb not null,
    updated_at  timestamptz not null default now()
);

do $$
begin
    if to_regclass('snap_exchanges') is not null then
        insert into partner_exchanges (at, channel, partner_id, service_code, path, external_id, request_headers,
                                       request_body, answered, http_status, response_code, response_body, rule,
                                       fault, duration_ms)
        select at, 'snap', partner_id, service_code, path, external_id, request_headers, request_body,
               http_status <> 0, nullif(http_status, 0), response_code, response_body, rule, fault,
               greatest(duration_ms, 0)
          from snap_exchanges order by id;
    end if;
    if to_regclass('snap_faults') is not null then
        insert into partner_inbound_faults (partner_id, profile, updated_at)
        select partner_id, profile, updated_at from snap_faults
        on conflict (partner_id) do nothing;
    end if;
end $$;
