-- Settlement: a day's payments are found without reading every payment.
--
-- A settlement import looks up the payments posted, and those reversed, in
-- the statement's days (reconcile.expected_payments), and `kanal statement`
-- reads the same (reconcile.ledger_statement). Neither column had an index:
-- `posted_at` only as the second column of payments_npp, `reversed_at` none.
-- So every import read the whole payments table (a parallel sequential scan
-- for the reversals, all of payments_npp for the postings), and its cost grew
-- with every payment ever made, not with the statement: at 1,000,000
-- payments over a year, 72 ms for one day's lookup; with these indexes 4 ms
-- (docs/performance.md, "Settlement at scale").
--
-- * posted_at: a BRIN index. Payments are appended in the order they are
--   posted, so a block range summary (its earliest and latest posted_at)
--   finds a day's blocks. It costs a payment next to nothing: a new row goes
--   to the table's last, not yet summarized, block range, and the summary is
--   made later by autovacuum (autosummarize), not by the payment. A B-tree
--   would add an index insert to every payment, the hot path.
-- * reversed_at: a partial B-tree over reversed payments only. A payment's
--   insert adds nothing to it (reversed_at is null); a reversal, rare, adds
--   one entry. The lookup's `reversed_at >= $1` implies `is not null`, so
--   the planner can use it.
--
-- tests/ops/test_settlement_at_scale.py counts the blocks a day's lookup
-- reads in a ledger of many days, with these indexes and without.

create index payments_posted_at_brin on payments using brin (posted_at) with (autosummarize = on);
create index payments_reversed_at on payments (reversed_at) where reversed_at is not null;
