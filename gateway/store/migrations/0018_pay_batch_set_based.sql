-- Group commit, set-based: a micro-batch of payments is decided and written
-- with a handful of statements for the whole batch instead of about fifteen
-- per payment.
--
-- kanal_pay_batch takes the batch as arrays (in the batcher's order: payment
-- code, channel, key) and answers one row per item, numbered n from 1. It
-- gives every item exactly the outcome and the rows that applying kanal_pay
-- (migration 0010) to the items one after the other, in that order, would:
--
-- * Items that can only post, and whose decision no other item of the batch
--   can change, are written together ("the plain items"). An item is plain
--   when it is the batch's first item with its (channel, key) and with its
--   payment code; no payment and no reversal tombstone holds its key; its bill
--   is open, not expired and billed for exactly its amount; and no earlier
--   item's bill covers one of its bill's (participant, program) pairs.
-- * Every other item (a replay, a second payment of one bill, a wrong amount,
--   a key a reversal got to, a worker two bills of the batch cover...) goes
--   through kanal_pay itself, one after the other in batch order, after the
--   plain items are written.
--
-- Why the order does not change any answer: a plain item shares no key, no
-- bill and no covered worker with any earlier item, so nothing an earlier
-- item does can change its decision or its writes, and nothing it does can
-- change an earlier item's. Each later item is still decided after it, as
-- before. Ids (payments, entries, outbox rows) are handed out in a different
-- order within the batch; nothing reads meaning into that order.
--
-- The locks are the ones kanal_pay takes, in the same order across batches:
-- every bill of the batch first, in payment-code order, then the plain items'
-- keys (pg_advisory_xact_lock, shared with the reversal: migration 0010), then
-- a fresh look for a payment or tombstone of those keys that committed
-- meanwhile (such an item goes to kanal_pay instead).
--
-- Every constraint applies as before: the unique indexes, the balance trigger
-- on the postings statement, the per-entry balance check at commit.

-- The balance check after each INSERT into postings now sees a whole batch's
-- postings at once. Written as a join, the planner was free to read every
-- posting ever made once per statement: after the empty ledger was analyzed
-- (docs/ledger.md, "Plans that do not depend on table statistics") it did,
-- 43 ms for a batch of 32 payments on 15,000 postings. A lateral aggregate is
-- a probe per entry whatever the statistics say. It refuses the same entries
-- with the same error as 0001's check.
create or replace function kanal_check_touched_entries() returns trigger
language plpgsql set enable_seqscan = off as $$
declare
    bad record;
begin
    select t.entry_id, s.total, s.n into bad
      from (select distinct entry_id from new_postings) t
     cross join lateral (select sum(p.amount_rupiah) as total, count(*) as n
                           from postings p where p.entry_id = t.entry_id) s
     where s.total <> 0 or s.n < 2
     limit 1;
    if found then
        raise exception 'journal entry % does not balance: % postings summing to %', bad.entry_id, bad.n, bad.total
            using errcode = 'check_violation';
    end if;
    return null;
end $$;

-- Whether a payment or a reversal tombstone holds (channel, key). A function
-- called per item, so each is a probe by key even where the tables'
-- statistics say they are empty (as a join, the planner then reads the whole
-- index once per item).
create function kanal_key_taken(p_channel text, p_key text) returns boolean
language plpgsql stable set enable_seqscan = off as $$
begin
    return exists (select 1 from payments where channel = p_channel and idempotency_key = p_key)
        or exists (select 1 from reversal_tombstones where channel = p_channel and idempotency_key = p_key);
end $$;

create type kanal_pay_batch_result as (
    n              bigint,
    outcome        text,
    payment_id     bigint,
    entry_id       bigint,
    posted_at      timestamptz,
    amount_rupiah  bigint,
    payer_name     text,
    details        jsonb
);

create function kanal_pay_batch(
    p_channels text[], p_keys text[], p_codes text[], p_amounts bigint[], p_references text[], p_nows timestamptz[]
) returns setof kanal_pay_batch_result
language plpgsql set enable_seqscan = off as $$
declare
    v_plain bigint[];
    v_item bigint;
begin
    if cardinality(p_codes) is distinct from cardinality(p_channels)
       or cardinality(p_codes) is distinct from cardinality(p_keys)
       or cardinality(p_codes) is distinct from cardinality(p_amounts)
       or cardinality(p_codes) is distinct from cardinality(p_references)
       or cardinality(p_codes) is distinct from cardinality(p_nows) then
        raise exception 'kanal_pay_batch: the arrays differ in length' using errcode = 'invalid_parameter_value';
    end if;

    -- Every bill of the batch, in payment-code order (kanal_pay's order).
    perform 1 from bills b where b.payment_code = any(p_codes) order by b.payment_code for update of b;

    -- The plain items.
    with item as (
        select i.n, i.channel, i.key, i.code, i.amount, i.now,
               min(i.n) over (partition by i.channel, i.key) as first_of_key,
               min(i.n) over (partition by i.code) as first_of_code
          from unnest(p_channels, p_keys, p_codes, p_amounts, p_nows)
               with ordinality as i(channel, key, code, amount, now, n)
    ), covered as (
        -- Each item's (participant, program) pairs, as kanal_pay covers them.
        select distinct t.n, l.participant_id, l.program
          from item t
          join bills b on b.payment_code = t.code
          join bill_lines l on l.bill_id = b.id
         where l.participant_id is not null
    ), shared as (
        select c.n
          from (select n, min(n) over (partition by participant_id, program) as first_n from covered) c
         where c.n > c.first_n
    )
    select coalesce(array_agg(t.n order by t.n), '{}')
      into v_plain
      from item t
      join bills b on b.payment_code = t.code
     cross join lateral kanal_key_taken(t.channel, t.key) taken
     where t.n = t.first_of_key and t.n = t.first_of_code
       and b.status = 'open' and b.expires_at > t.now and b.total_rupiah = t.amount
       and not taken
       and t.n not in (select s.n from shared s);

    if cardinality(v_plain) > 0 then
        -- Their keys, then a fresh look (this statement's snapshot is newer
        -- than the locks): a key a payment or reversal took meanwhile goes to
        -- kanal_pay, which answers it.
        perform pg_advisory_xact_lock(hashtext(i.channel), hashtext(i.key))
           from unnest(p_channels, p_keys) with ordinality as i(channel, key, n)
          where i.n = any(v_plain)
          order by i.n;
        select coalesce(array_agg(i.n order by i.n), '{}')
          into v_plain
          from unnest(p_channels, p_keys) with ordinality as i(channel, key, n)
         cross join lateral kanal_key_taken(i.channel, i.key) taken
         where i.n = any(v_plain) and not taken;
    end if;

    if cardinality(v_plain) > 0 then
        insert into accounts (code, kind)
        select distinct 'clearing:' || i.channel, 'asset'
          from unnest(p_channels) with ordinality as i(channel, n)
         where i.n = any(v_plain)
        on conflict (code) do nothing;

        return query
        with c as (
            select i.n, i.channel, i.key, i.amount, i.reference, i.now,
                   b.id as bill_id, b.payment_code, b.npp, b.period, coalesce(pp.name, e.name) as payer_name
              from unnest(p_channels, p_keys, p_amounts, p_references, p_nows)
                   with ordinality as i(channel, key, amount, reference, now, n)
              join bills b on b.payment_code = p_codes[i.n]
              join employers e on e.npp = b.npp
              left join participants pp on pp.id = b.participant_id
             where i.n = any(v_plain)
        ), paid_bills as (
            update bills b set status = 'paid' from c where b.id = c.bill_id
        ), pay as (
            insert into payments (channel, idempotency_key, bill_id, payment_code, npp, amount_rupiah,
                                  bank_reference, status, posted_at)
            select c.channel, c.key, c.bill_id, c.payment_code, c.npp, c.amount,
                   left(coalesce(c.reference, ''), 200), 'posted', c.now
              from c order by c.n
            returning id, bill_id, posted_at
        ), entry as (
            insert into journal_entries (kind, payment_id, npp, created_at)
            select 'payment', pay.id, c.npp, c.now from pay join c using (bill_id) order by c.n
            returning id, payment_id
        ), line as (
            select l.bill_id, l.program, l.participant_id,
                   l.employer_rupiah + l.worker_rupiah as paid, l.government_rupiah as government
              from bill_lines l
             where l.bill_id in (select c.bill_id from c)
        ), allocation as (
            -- kanal_pay's postings, for every bill at once: clearing debited
            -- the total; funds, each worker's JHT account and late-fee income
            -- credited; the government's JKP share a receivable.
            select c.bill_id, 1 as part, 'clearing:' || c.channel as code, c.amount
              from c
            union all
            select bill_id, 2, 'fund:' || program, -sum(paid)::bigint
              from line where program in ('JKK', 'JKM', 'JP', 'JKP')
             group by bill_id, program
            union all
            select l.bill_id, 3, 'jht:' || pp.kpj, -sum(l.paid)::bigint
              from line l join participants pp on pp.id = l.participant_id
             where l.program = 'JHT'
             group by l.bill_id, pp.kpj
            union all
            select bill_id, 4, 'income:late_fees', -sum(paid)::bigint
              from line where program = 'DENDA'
             group by bill_id
            union all
            select bill_id, 5, 'receivable:government:JKP', sum(government)::bigint
              from line group by bill_id
            union all
            select bill_id, 6, 'fund:JKP', -sum(government)::bigint
              from line group by bill_id
        ), posting as (
            insert into postings (entry_id, account_id, npp, amount_rupiah)
            select entry.id, a.id, c.npp, x.amount
              from allocation x
              join c using (bill_id)
              join pay using (bill_id)
              join entry on entry.payment_id = pay.id
              join accounts a on a.code = x.code
             where x.amount <> 0
             order by c.n, x.part, x.code
        ), covering as (
            select distinct c.n, pay.id as payment_id, c.period, c.npp, l.participant_id, l.program
              from line l join c using (bill_id) join pay using (bill_id)
             where l.participant_id is not null
        ), month as (
            insert into coverage_months (participant_id, program, period, payment_id, npp)
            select participant_id, program, period, payment_id, npp from covering
            on conflict do nothing
            returning participant_id, program, period, payment_id
        ), old as (
            -- No two plain items cover the same (participant, program).
            select pc.participant_id, pc.program, pc.regency_code, pc.segment, pc.last_paid_period,
                   month.period, month.payment_id
              from participant_coverage pc join month using (participant_id, program)
             where pc.last_paid_period is null or pc.last_paid_period < month.period
               for update of pc
        ), moved as (
            update participant_coverage pc set last_paid_period = old.period
              from old where pc.participant_id = old.participant_id and pc.program = old.program
        ), delta as (
            select payment_id, regency_code, program, segment, last_paid_period as bucket, -count(*)::int as delta
              from old where last_paid_period is not null group by 1, 2, 3, 4, 5
            union all
            select payment_id, regency_code, program, segment, period, count(*)::int
              from old group by 1, 2, 3, 4, 5
        ), written as (
            insert into coverage_deltas (regency_code, program, segment, last_paid_period, delta, payment_id)
            select regency_code, program, segment, bucket, delta, payment_id from delta where delta <> 0
            returning payment_id, regency_code, program
        ), touched as (
            select payment_id, array_agg(distinct regency_code order by regency_code) as regencies,
                   array_agg(distinct program order by program) as programs
              from written group by payment_id
        ), event as (
            insert into outbox (topic, npp, payload)
            select x.topic, x.npp, x.payload
              from (
                    select c.n, 1 as part, 'payment.posted' as topic, c.npp, jsonb_build_object(
                               'payment_id', pay.id, 'payment_code', c.payment_code, 'npp', c.npp,
                               'period', c.period, 'amount_rupiah', c.amount, 'channel', c.channel,
                               'bank_reference', coalesce(c.reference, ''), 'posted_at', pay.posted_at) as payload
                      from c join pay using (bill_id)
                    union all
                    select c.n, 2, 'coverage.changed', c.npp, jsonb_build_object(
                               'regencies', to_jsonb(t.regencies), 'programs', to_jsonb(t.programs),
                               'payment_id', pay.id)
                      from c join pay using (bill_id) join touched t on t.payment_id = pay.id
                   ) x
             order by x.n, x.part
        ), billed as (
            -- kanal_bill_details for every bill at once.
            select d.bill_id,
                   jsonb_agg(jsonb_build_array(d.program, d.amount)
                             order by array_position(array['JKK','JKM','JHT','JP','JKP','DENDA'], d.program)) as details
              from (select bill_id, program, sum(paid)::bigint as amount
                      from line group by bill_id, program having sum(paid) > 0) d
             group by d.bill_id
        )
        select c.n, 'posted'::text, pay.id, entry.id, pay.posted_at, c.amount, c.payer_name,
               coalesce(billed.details, '[]'::jsonb)
          from c
          join pay using (bill_id)
          join entry on entry.payment_id = pay.id
          left join billed using (bill_id);

        -- Identical notifications in one transaction are folded into one.
        perform pg_notify('kanal_events', 'payment.posted');
    end if;

    -- Everything else, one after the other, in batch order.
    for v_item in
        select x.n from generate_series(1, coalesce(cardinality(p_codes), 0)) as x(n)
         where not (x.n = any(v_plain)) order by x.n
    loop
        return query
        select v_item, r.* from kanal_pay(p_channels[v_item], p_keys[v_item], p_codes[v_item],
                                          p_amounts[v_item], p_references[v_item], p_nows[v_item]) r;
    end loop;
end $$;
