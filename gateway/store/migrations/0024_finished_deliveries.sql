-- The ledger check delivery_failure_rate reads the deliveries finished in its
-- window (an hour by default), not every delivery ever made.
--
-- It runs on the dashboard's schedule and on every `kanal check`. Its
-- statements ask for `status <> 'pending' and finished_at > now() - window`
-- (the counts) and `status in ('failed', 'gone') and finished_at > ...` (the
-- rows it lists); no index had finished_at, so each read the whole table:
-- months of deliveries to count an hour's. This index holds the finished
-- deliveries by when they finished; a delivery enters it on the update that
-- finishes it (status and finished_at change together, and status is in
-- other indexes already, so that update was not a HOT one before either).
--
-- Built in the migration's transaction: writes to callback_deliveries wait
-- for the build (about a second per million deliveries on a laptop).
-- tests/callbacks/test_callbacks_at_scale.py counts the blocks the check
-- reads with this index and without it.

create index callback_deliveries_finished on callback_deliveries (finished_at) where status <> 'pending';
