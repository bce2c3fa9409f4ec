-- The partners a running gateway's adapters are configured with, so that
-- every process reading the database knows them (session 8's review).
--
-- An ISO 8583 link's partner ids come from the gateway's settings
-- (KANAL_ADAPTERS__ISO8583__PARTNER_IDS, and iso8583-<acquirer> for the
-- acquirers its profile serves). `kanal faults` and `kanal conformance`
-- refuse a partner id that names no partner, and a shell without the
-- gateway's settings did not know these until the link carried an exchange.
-- Each gateway now records its adapters' configured partners at start; a row
-- stays after the setting changes, as a partner's exchanges do.
--
-- gateway/callbacks/partners.py reads it; bank_adapters/exchanges.py writes it.

create table configured_partners (
    partner_id     text primary key check (partner_id ~ '^[A-Za-z0-9_.-]{1,36}$' and partner_id not in ('.', '..')),
    adapter        text not null check (length(adapter) between 1 and 40),
    configured_at  timestamptz not null default now()
);
