-- The settlement import's check that each paired line's payment exists
-- (migration 0014, kanal_statement_entries_inserted) probes payments by key,
-- so it runs with sequential scans off, as the payment path does since 0013:
-- a plan cached while payments looked empty (analyzed at go-live) must not
-- read every payment for each import later.
alter function kanal_statement_entries_inserted() set enable_seqscan = off;
