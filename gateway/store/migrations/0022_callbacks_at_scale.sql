-- Callbacks at the province's scale: what a callback statement reads grows
-- with what it answers, not with every delivery and attempt ever written.
--
-- Millions of payments make millions of deliveries and attempts. Session 6's
-- audit found statements that read them all, or all of an endpoint's
-- (measured with EXPLAIN (ANALYZE, BUFFERS) on 600,000 deliveries):
--
-- 1. The deliveries by status and the attempts by outcome, counted with
--    GROUP BY over both tables: every second on the ops dashboard while a
--    page is open, and on every /metrics scrape (17,255 + 6,173 blocks).
-- 2. The workers' claim walked the due pending deliveries in next_attempt_at
--    order and dropped, one by one, those whose endpoint is disabled: with a
--    disabled endpoint holding 100,000 due deliveries, each claim read them
--    all (2,889 blocks) before it found one to send.
-- 3. A partner's conformance summary without `since` read the partner's
--    whole history: it gets a default window in code, no schema change.
-- 4. replay-failed read every delivery of the endpoint (its history) to find
--    the failed ones (3,018 blocks for 2,000 failed among 100,000).
--
-- tests/callbacks/test_callbacks_at_scale.py counts the blocks each of these
-- reads on a large history, with this migration's indexes and without.

-- 1. Counters --------------------------------------------------------------
--
-- The counts are kept as counters, the way migration 0020 keeps coverage:
-- every change of a delivery's status, and every attempt, appends a delta
-- row (append-only: two workers never queue on one counter row), and the
-- gateway folds the deltas into one total per (kind, status) in the
-- background. A reader sums the totals and the deltas not folded yet, in one
-- statement, and gets exactly what a GROUP BY over the tables would give:
-- * a delta is written by a trigger in the transaction that changes the row,
--   so a snapshot sees the row's state and its delta together or neither;
-- * a fold deletes the deltas it moves and adds them to the totals in one
--   transaction (0020's argument, unchanged); one fold runs at a time;
-- * bulk changes write one delta per status per statement (statement
--   triggers with transition tables): a history loaded with one INSERT, or
--   an endpoint deleted with its deliveries and their attempts;
-- * a TRUNCATE resets the counters of what it emptied.
-- Not counted: rows written while triggers are off (session_replication_role
-- = replica, as a hand-written repair may do); the counts then differ from the
-- rows until the counters are rebuilt (see docs/callbacks.md).
--
-- `pending` is counted the same way as the terminal states: a disabled
-- endpoint's backlog can be as large as any of them, so counting it through
-- its index would grow with that backlog every second.

create table callback_count_totals (
    -- 'delivery': deliveries by status; 'attempt': attempts by outcome.
    kind    text not null check (kind in ('delivery', 'attempt')),
    status  text not null,
    n       bigint not null,
    primary key (kind, status)
);

create table callback_count_deltas (
    id      bigint generated always as identity primary key,
    kind    text not null check (kind in ('delivery', 'attempt')),
    status  text not null,
    delta   bigint not null
);

create function kanal_count_deliveries() returns trigger language plpgsql as $$
begin
    if TG_OP = 'INSERT' then
        insert into callback_count_deltas (kind, status, delta)
        select 'delivery', status, count(*) from new_rows group by status;
    elsif TG_OP = 'DELETE' then
        insert into callback_count_deltas (kind, status, delta)
        select 'delivery', status, -count(*) from old_rows group by status;
    else  -- a row's status changed (the trigger's WHEN)
        insert into callback_count_deltas (kind, status, delta)
        values ('delivery', old.status, -1), ('delivery', new.status, 1);
    end if;
    return null;
end $$;

create trigger callback_deliveries_count_insert after insert on callback_deliveries
    referencing new table as new_rows for each statement execute function kanal_count_deliveries();
create trigger callback_deliveries_count_delete after delete on callback_deliveries
    referencing old table as old_rows for each statement execute function kanal_count_deliveries();
-- Row by row: a statement trigger cannot name columns, and would copy every
-- retry's update (next_attempt_at) into its transition tables.
create trigger callback_deliveries_count_status after update of status on callback_deliveries
    for each row when (old.status is distinct from new.status) execute function kanal_count_deliveries();

create function kanal_count_attempts() returns trigger language plpgsql as $$
begin
    if TG_OP = 'INSERT' then
        insert into callback_count_deltas (kind, status, delta)
        select 'attempt', outcome, count(*) from new_rows group by outcome;
    else
        insert into callback_count_deltas (kind, status, delta)
        select 'attempt', outcome, -count(*) from old_rows group by outcome;
    end if;
    return null;
end $$;

create trigger callback_attempts_count_insert after insert on callback_attempts
    referencing new table as new_rows for each statement execute function kanal_count_attempts();
create trigger callback_attempts_count_delete after delete on callback_attempts
    referencing old table as old_rows for each statement execute function kanal_count_attempts();
-- An attempt's outcome never changes once written (the worker inserts it last).

-- Moves up to p_rows of the oldest committed deltas into the totals; returns
-- how many it moved (0 when another fold is running). As 0020's coverage fold.
create function kanal_fold_callback_counts(p_rows int) returns bigint language plpgsql as $$
declare
    moved_rows bigint;
begin
    if not pg_try_advisory_xact_lock(hashtextextended('kanal_fold_callback_counts', 0)) then
        return 0;
    end if;
    with moved as (
        delete from callback_count_deltas d
         where d.id = any (array(select id from callback_count_deltas order by id limit p_rows))
        returning d.kind, d.status, d.delta
    ), added as (
        insert into callback_count_totals as t (kind, status, n)
        select kind, status, sum(delta) from moved group by 1, 2
            on conflict (kind, status) do update set n = t.n + excluded.n
        returning 1
    )
    select count(*) into moved_rows from moved;
    return moved_rows;
end $$;

-- TRUNCATE fires no row or delete triggers: it empties the counters of the
-- table it empties. It waits for a running fold (the fold's lock, taken
-- here as a wait), so that no fold adds back what it just cleared; writers of
-- the table are already held off by TRUNCATE's own lock.
create function kanal_count_reset() returns trigger language plpgsql as $$
begin
    perform pg_advisory_xact_lock(hashtextextended('kanal_fold_callback_counts', 0));
    delete from callback_count_deltas where kind = TG_ARGV[0];
    delete from callback_count_totals where kind = TG_ARGV[0];
    return null;
end $$;

create trigger callback_deliveries_count_truncate after truncate on callback_deliveries
    for each statement execute function kanal_count_reset('delivery');
create trigger callback_attempts_count_truncate after truncate on callback_attempts
    for each statement execute function kanal_count_reset('attempt');

-- What the ops dashboard and /metrics read.
create view callback_counts as
    select kind, status, sum(n)::bigint as n
      from (select kind, status, n from callback_count_totals
            union all
            select kind, status, delta from callback_count_deltas) buckets
     group by kind, status;

-- The counters start from the rows as they are. The triggers above were
-- created first: CREATE TRIGGER locks each table against writes until this
-- migration commits, so no row is counted twice or missed in between.
insert into callback_count_totals (kind, status, n)
select 'delivery', status, count(*) from callback_deliveries group by status
union all
select 'attempt', outcome, count(*) from callback_attempts group by outcome;

-- 2. The claim passes over no disabled endpoint's backlog ------------------
--
-- An index cannot look at another table, so a delivery carries whether it
-- waits for its endpoint: `paused`. Disabling an endpoint pauses its pending
-- deliveries, the relay writes new ones paused while it stays disabled, and
-- enabling it (or a replay, which enables) unpauses them, each in the
-- transaction that changes the endpoint, after taking the endpoint's row
-- (gateway/callbacks/store.py). The claim's index holds the unpaused pending
-- deliveries only, in next_attempt_at order, so a claim reads from the
-- front of the due ones and stops at the first it can lock, as before.
--
-- The claim still joins the endpoint and takes only enabled ones: a delivery
-- that a worker was sending when its endpoint was disabled is skipped by the
-- pause (it is locked) and stays unpaused. A claim may pass over those few
-- (at most one per worker at that moment), never over the backlog. The
-- other way round, paused on an enabled endpoint, would never be sent: that
-- is why only the endpoint's own transactions, holding its row, write it.

alter table callback_deliveries add column paused boolean not null default false;
alter table callback_deliveries add constraint callback_deliveries_paused_pending check (not paused or status = 'pending');

update callback_deliveries d set paused = true
  from callback_endpoints e
 where e.id = d.endpoint_id and e.status = 'disabled' and d.status = 'pending';

create index callback_deliveries_claim on callback_deliveries (next_attempt_at, id)
    where status = 'pending' and not paused;
-- The claim's old index: nothing else needs it. (The ledger check
-- delivery_failure_rate counts the pending deliveries too, every 30 s on the
-- dashboard; that count now reads the pending entries of the index below.)
drop index callback_deliveries_due;

-- 4. An endpoint's undelivered deliveries -------------------------------------
--
-- replay-failed looks up an endpoint's failed, gone and dropped deliveries;
-- pausing and unpausing look up its pending ones. Through
-- callback_deliveries_endpoint they read every delivery the endpoint ever
-- had. This index holds the undelivered ones only, by endpoint and status, so
-- each reads the rows it changes. A delivered row leaves it on its last
-- update (delivered is where nearly every delivery ends).
create index callback_deliveries_undelivered on callback_deliveries (endpoint_id, status, id)
    where status <> 'delivered';
