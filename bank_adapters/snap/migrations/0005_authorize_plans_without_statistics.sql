-- snap_authorize probes by key only (a token by its hash, a partner's fault
-- profile, an external id of a day, a virtual account's last inquiry), so it
-- runs with sequential scans off, as the ledger's payment path does
-- (gateway migration 0013): a token, external-id or inquiry table analyzed
-- while empty at go-live must not make the cached plan read every row for
-- each request until autovacuum analyzes it again. The setting is restored
-- when the function returns; the claim's synchronous_commit (set for the
-- transaction) is not affected.
alter function snap_authorize(bytea[], text[], boolean[], date[], text[], text[], text[]) set enable_seqscan = off;
