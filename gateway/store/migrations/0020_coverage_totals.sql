-- Coverage counters: the deltas are folded into totals, so that reading the
-- coverage costs what the buckets hold, not every delta ever written.
--
-- Each payment and reversal appends rows to coverage_deltas (migration
-- 0001): append-only, so that no payment ever queues on a hot counter row.
-- But every reader summed the whole table: the live coverage stream after
-- each burst of payments, GET /api/v1/coverage, every /metrics scrape. That
-- grows by several rows per payment (about 5 million a month at the
-- province's scale), and at 2,000,000 deltas one read took 147 ms.
--
-- Now the deltas are folded, a batch at a time, into coverage_totals: one row
-- per bucket (regency, program, segment, last paid period), a few thousand
-- rows in all. A reader sums the totals and the deltas not folded yet, in one
-- statement, and gets exactly the sum it got before:
-- * a fold deletes the deltas it moves and adds them to the totals in one
--   transaction, so a reader's snapshot sees each delta exactly once, either
--   as a delta or inside a total;
-- * a delta not yet committed is invisible to the fold and stays for the next
--   one (it is moved once it is among the oldest committed);
-- * one fold runs at a time (an advisory lock; a second returns at once), so
--   no delta is moved twice and no two folds wait on each other;
-- * payments keep appending deltas and never touch a totals row, and a fold
--   deletes only committed deltas, which nothing else locks.
--
-- The gateway folds in the background (`coverage_fold_interval_ms`,
-- `coverage_fold_rows_max`). A delta's payment_id and created_at are not kept
-- in the totals: nothing reads them, and the payment's own rows (entries,
-- coverage months) remain.
-- tests/integration/test_coverage_fold.py folds while payments and reversals
-- post, and compares every count with a recount of the participants.

create table coverage_totals (
    regency_code      text not null,
    program           text not null,
    segment           text not null,
    last_paid_period  text not null,
    n                 bigint not null,
    primary key (regency_code, program, segment, last_paid_period)
);

-- Moves up to p_rows of the oldest committed deltas into coverage_totals;
-- returns how many it moved (0 when another fold is running).
create function kanal_fold_coverage_deltas(p_rows int) returns bigint language plpgsql as $$
declare
    moved_rows bigint;
begin
    -- One fold at a time: each gateway process runs a folder, and a fold that
    -- finds another running has nothing to do. (An advisory lock on one
    -- bigint: a key space apart from the payments' two-integer key locks.)
    if not pg_try_advisory_xact_lock(hashtextextended('kanal_fold_coverage_deltas', 0)) then
        return 0;
    end if;
    -- The batch's ids as an array: each is a probe of the primary key. As an
    -- `in (subquery)` the planner made it a hash semi-join over every delta,
    -- so each fold read the whole table (review of session 6).
    with moved as (
        delete from coverage_deltas d
         where d.id = any (array(select id from coverage_deltas order by id limit p_rows))
        returning d.regency_code, d.program, d.segment, d.last_paid_period, d.delta
    ), added as (
        insert into coverage_totals as t (regency_code, program, segment, last_paid_period, n)
        select regency_code, program, segment, last_paid_period, sum(delta)
          from moved group by 1, 2, 3, 4
            on conflict (regency_code, program, segment, last_paid_period) do update set n = t.n + excluded.n
        returning 1
    )
    select count(*) into moved_rows from moved;
    return moved_rows;
end $$;

-- The counters, bucket by bucket: what every reader sums.
create view coverage_buckets as
    select regency_code, program, segment, last_paid_period, n from coverage_totals
    union all
    select regency_code, program, segment, last_paid_period, delta from coverage_deltas;
