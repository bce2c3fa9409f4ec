-- The payment path's lookups must use their indexes whatever the table
-- statistics say.
--
-- A fresh deployment whose empty ledger is analyzed (a manual ANALYZE, a
-- `vacuumdb --analyze` after the migrations, autovacuum on a quiet day) tells
-- the planner that payments, journal_entries and postings hold no rows. Plans
-- made in the first minutes of traffic then scan those tables whole, and they
-- are cached per connection: by kanal_pay's PL/pgSQL statements, the balance
-- triggers, and the foreign-key checks fired inside kanal_pay. Every payment
-- read every earlier posting, payment and entry several times over, until
-- autovacuum analyzed the grown tables and the plans were made again. Measured
-- on a go-live burst of 20,000 payments: 3.1 ms of PostgreSQL CPU per payment
-- instead of 0.6 ms for the first 10,000 (docs/performance.md).
--
-- Every lookup on this path is by key (a payment by its key, a bill by its
-- code, an entry's postings, a worker's coverage rows), so none of them ever
-- wants a sequential scan. Turning sequential scans off for the duration of
-- these functions makes the planner take the index whatever it believes about
-- the table's size; plans made inside them are made that way, including the
-- foreign-key checks their statements fire. The setting is restored when each
-- function returns. Bulk paths (billing, reconciliation, ops queries) keep the
-- planner's free choice.

alter function kanal_pay(text, text, text, bigint, text, timestamptz) set enable_seqscan = off;
alter function kanal_bill_details(bigint) set enable_seqscan = off;
-- The balance checks: per statement (inside kanal_pay and the reversal) and
-- per new entry at commit (outside any function's setting).
alter function kanal_check_touched_entries() set enable_seqscan = off;
alter function kanal_check_new_entry() set enable_seqscan = off;
