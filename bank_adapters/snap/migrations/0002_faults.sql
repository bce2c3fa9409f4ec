-- Inbound fault profiles per partner (set through the gateway's faults API or
-- `kanal faults set`), and which fault, if any, shaped each exchange.

create table if not exists snap_faults (
    partner_id  text primary key check (length(partner_id) between 1 and 36),
    profile     jsonb not null,
    updated_at  timestamptz not null default now()
);

alter table snap_exchanges add column if not exists fault text;
