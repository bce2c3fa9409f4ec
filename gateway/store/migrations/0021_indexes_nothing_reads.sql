-- Five indexes that every payment wrote and no statement read.
--
-- Each payment inserts into them: postings_account once per posting (five or
-- more per payment), the others once per payment, outbox row or coverage
-- delta; and participant_coverage_regency, which holds last_paid_period,
-- makes every coverage update write a new index entry in both of that table's
-- indexes (an update that changes an indexed column cannot be a HOT update).
-- No statement in Kanal looks rows up through them (checked statement by
-- statement in session 6; the statements that read these tables use their
-- primary keys, unique keys, the day indexes of 0019, or read them whole):
--
-- * postings_account (account_id): no statement reads one account's
--   postings; the ledger checks read them all. (A read of one worker's JHT
--   balance, a jht:<kpj> account, would need it back, or a roll-up.) Nothing
--   deletes an account (its foreign key check would then scan postings).
-- * payments_npp (npp, posted_at): nothing looks payments up by employer; the
--   portal reaches them through their bills (payments_one_standing_per_bill).
-- * outbox_topic (topic, id): the relay reads the outbox by id.
-- * coverage_deltas_bucket: the counters are read whole, and since 0020 the
--   table holds only the deltas not folded yet.
-- * participant_coverage_regency (regency_code, program, last_paid_period):
--   the recount and the checks read the table whole.
--
-- Measured in alternating runs of `python3 dev.py bench --only payments`:
-- PostgreSQL CPU per payment 0.272-0.296 ms with them, 0.248-0.266 ms without;
-- service payments 0.77-0.81 x pgbench with them, 0.88-0.97 x without.

drop index postings_account;
drop index payments_npp;
drop index outbox_topic;
drop index coverage_deltas_bucket;
drop index participant_coverage_regency;
