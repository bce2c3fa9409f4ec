-- Employer portal: the sandbox "virtual bank" the portal pays through.
--
-- In sandbox mode the portal pays a bill by driving the real SNAP adapter as a
-- bank would. That bank is an ordinary SNAP partner (snap_partners, written by
-- bank_adapters.snap.partners.register in the same transaction as this row);
-- this table keeps the RSA private key the bank signs its token requests with,
-- so every gateway process, and the next start, reuses the same partner.
-- It is a simulated bank's key: never put a real bank's key here.
create table portal_virtual_banks (
    partner_id       text primary key check (length(partner_id) between 1 and 36),
    private_key_pem  text not null check (private_key_pem like '-----BEGIN PRIVATE KEY-----%'),
    created_at       timestamptz not null default now()
);
