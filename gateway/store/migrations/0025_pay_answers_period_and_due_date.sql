-- A payment's answer carries its bill's period and due date, as an inquiry's
-- does: an ISO 8583 link renders them in the DE48 of a payment (0210) and an
-- advice (0230), where they were blank.
--
-- Both are read from the bill row the posting already reads (under its lock
-- when it posts, by id when it replays), so a payment costs no extra query or
-- round trip. They are filled on the answers that carry the payer's name and
-- the details (posted, replayed), and are null on the others.
--
-- kanal_pay and kanal_pay_batch are 0018's, with only these additions:
-- the two columns in the bill reads and at the end of both result types
-- (kanal_pay_batch answers `n, kanal_pay(...).*`, so the orders agree).

alter type kanal_pay_result add attribute period text, add attribute due_date date;
alter type kanal_pay_batch_result add attribute period text, add attribute due_date date;

create or replace function kanal_pay(
    p_channel text, p_key text, p_code text, p_amount bigint, p_reference text, p_now timestamptz
) returns kanal_pay_result
language plpgsql
set enable_seqscan = off set enable_hashjoin = off set enable_mergejoin = off set enable_material = off
as $$
declare
    r kanal_pay_result;
    prior record;
    bill record;
    attempts int := 0;
    v_payment bigint;
    v_entry bigint;
    v_posted timestamptz;
    v_regencies text[];
    v_programs text[];
begin
    loop
        attempts := attempts + 1;
        if attempts > 3 then
            raise exception 'kanal_pay: key % on % kept racing', p_key, p_channel;
        end if;
        -- A key seen before answers what it committed.
        select p.id, p.payment_code, p.amount_rupiah, p.status, p.posted_at, p.bill_id, j.id as entry_id
          into prior
          from payments p
          join lateral (select j.id from journal_entries j
                         where j.payment_id = p.id and j.kind = 'payment' offset 0) j on true
         where p.channel = p_channel and p.idempotency_key = p_key;
        if found then
            r.payment_id := prior.id;
            r.amount_rupiah := prior.amount_rupiah;
            if prior.payment_code <> p_code or prior.amount_rupiah <> p_amount then
                r.outcome := 'conflict';
                return r;
            end if;
            if prior.status = 'reversed' then
                r.outcome := 'reversed';
                return r;
            end if;
            r.outcome := 'replayed';
            r.entry_id := prior.entry_id;
            r.posted_at := prior.posted_at;
            select coalesce((select pp.name from participants pp where pp.id = b.participant_id),
                            (select e.name from employers e where e.npp = b.npp)),
                   b.period, b.due_date
              into r.payer_name, r.period, r.due_date
              from bills b
             where b.id = prior.bill_id;
            r.details := kanal_bill_details(prior.bill_id);
            return r;
        end if;
        if exists (select 1 from reversal_tombstones where channel = p_channel and idempotency_key = p_key) then
            r.outcome := 'reversed';
            r.amount_rupiah := p_amount;
            return r;
        end if;

        select b.id, b.payment_code, b.npp, b.period, b.due_date, b.status, b.total_rupiah, b.expires_at,
               coalesce((select pp.name from participants pp where pp.id = b.participant_id),
                        (select e.name from employers e where e.npp = b.npp)) as payer_name
          into bill
          from bills b
         where b.payment_code = p_code
           for update of b;
        if not found then
            r.outcome := 'unknown_code';
            r.amount_rupiah := p_amount;
            return r;
        end if;
        r.amount_rupiah := bill.total_rupiah;
        if bill.status = 'paid' then
            -- A concurrent request under the same key may have won the bill
            -- lock: a new statement's snapshot shows its committed payment.
            perform 1 from payments where channel = p_channel and idempotency_key = p_key;
            if found then
                continue;
            end if;
            r.outcome := 'paid_bill';
            return r;
        end if;
        if bill.expires_at <= p_now then
            r.outcome := 'expired';
            return r;
        end if;
        if p_amount <> bill.total_rupiah then
            r.outcome := 'wrong_amount';
            return r;
        end if;
        -- The key's lock, shared with the reversal (PaymentsService.reverse):
        -- a reversal that found no payment has committed its tombstone by now,
        -- and one still to come waits for this transaction and then sees the
        -- payment. Taken after the bill lock, so locks are always bill, then key.
        perform pg_advisory_xact_lock(hashtext(p_channel), hashtext(p_key));
        if exists (select 1 from reversal_tombstones where channel = p_channel and idempotency_key = p_key) then
            r.outcome := 'reversed';
            r.amount_rupiah := p_amount;
            return r;
        end if;
        begin
            insert into payments (channel, idempotency_key, bill_id, payment_code, npp, amount_rupiah,
                                  bank_reference, status, posted_at)
            values (p_channel, p_key, bill.id, bill.payment_code, bill.npp, p_amount,
                    left(coalesce(p_reference, ''), 200), 'posted', p_now)
            returning id, posted_at into v_payment, v_posted;
        exception when unique_violation then
            -- The same key committed meanwhile on another bill: answer from it.
            continue;
        end;
        exit;
    end loop;

    insert into accounts (code, kind) values ('clearing:' || p_channel, 'asset') on conflict (code) do nothing;
    update bills set status = 'paid' where id = bill.id;
    insert into journal_entries (kind, payment_id, npp, created_at)
    values ('payment', v_payment, bill.npp, p_now) returning id into v_entry;

    -- Every posting in one statement (the balance trigger checks the entry):
    -- clearing debited the total; funds, each worker's JHT account and
    -- late-fee income credited; the government's JKP share a receivable.
    insert into postings (entry_id, account_id, npp, amount_rupiah)
    select v_entry, a.id, bill.npp, x.amount
      from (
            select 'clearing:' || p_channel as code, p_amount as amount
            union all
            select 'fund:' || program, -sum(employer_rupiah + worker_rupiah)::bigint
              from bill_lines where bill_id = bill.id and program in ('JKK', 'JKM', 'JP', 'JKP')
             group by program
            union all
            select 'jht:' || pp.kpj, -sum(l.employer_rupiah + l.worker_rupiah)::bigint
              from bill_lines l
              join lateral (select pp.kpj from participants pp where pp.id = l.participant_id offset 0) pp on true
             where l.bill_id = bill.id and l.program = 'JHT'
             group by pp.kpj
            union all
            select 'income:late_fees', -coalesce(sum(employer_rupiah + worker_rupiah), 0)::bigint
              from bill_lines where bill_id = bill.id and program = 'DENDA'
            union all
            select 'receivable:government:JKP', coalesce(sum(government_rupiah), 0)::bigint
              from bill_lines where bill_id = bill.id
            union all
            select 'fund:JKP', -coalesce(sum(government_rupiah), 0)::bigint
              from bill_lines where bill_id = bill.id
           ) x
      join lateral (select a.id from accounts a where a.code = x.code offset 0) a on true
     where x.amount <> 0;

    -- The workers' coverage rows, locked in (participant, program) order
    -- before anything is read from them (migration 0018).
    perform kanal_lock_coverage(array[bill.id]);

    -- Coverage: record the paid months, move last_paid_period forward, and
    -- append counter deltas (-1 old bucket, +1 new) per regency and program.
    with lines as (
        select distinct participant_id, program from bill_lines
         where bill_id = bill.id and participant_id is not null
    ), ins as (
        insert into coverage_months (participant_id, program, period, payment_id, npp)
        select participant_id, program, bill.period, v_payment, bill.npp from lines
        on conflict do nothing
        returning participant_id, program
    ), old as (
        -- Locked above.
        select pc.tid, pc.participant_id, pc.program, pc.regency_code, pc.segment, pc.last_paid_period
          from ins
          join lateral (select pc.ctid as tid, pc.participant_id, pc.program, pc.regency_code, pc.segment,
                               pc.last_paid_period
                          from participant_coverage pc
                         where pc.participant_id = ins.participant_id and pc.program = ins.program
                        offset 0) pc on true
         where pc.last_paid_period is null or pc.last_paid_period < bill.period
    ), upd as (
        update participant_coverage pc set last_paid_period = bill.period
          from old where pc.ctid = old.tid
        returning 1
    ), deltas as (
        select regency_code, program, segment, last_paid_period as bucket, -count(*)::int as delta
          from old where last_paid_period is not null group by 1, 2, 3, 4
        union all
        select regency_code, program, segment, bill.period, count(*)::int from old group by 1, 2, 3
    ), written as (
        insert into coverage_deltas (regency_code, program, segment, last_paid_period, delta, payment_id)
        select regency_code, program, segment, bucket, delta, v_payment from deltas where delta <> 0
        returning regency_code, program
    )
    select array_agg(distinct regency_code order by regency_code), array_agg(distinct program order by program)
      into v_regencies, v_programs
      from written;

    insert into outbox (topic, npp, payload)
    values ('payment.posted', bill.npp, jsonb_build_object(
        'payment_id', v_payment, 'payment_code', bill.payment_code, 'npp', bill.npp, 'period', bill.period,
        'amount_rupiah', p_amount, 'channel', p_channel, 'bank_reference', coalesce(p_reference, ''),
        'posted_at', v_posted));
    if v_regencies is not null then
        insert into outbox (topic, npp, payload)
        values ('coverage.changed', bill.npp, jsonb_build_object(
            'regencies', to_jsonb(v_regencies), 'programs', to_jsonb(v_programs), 'payment_id', v_payment));
    end if;
    -- Identical notifications in one transaction are folded into one.
    perform pg_notify('kanal_events', 'payment.posted');

    r.outcome := 'posted';
    r.payment_id := v_payment;
    r.entry_id := v_entry;
    r.posted_at := v_posted;
    r.payer_name := bill.payer_name;
    r.period := bill.period;
    r.due_date := bill.due_date;
    r.details := kanal_bill_details(bill.id);
    return r;
end $$;

create or replace function kanal_pay_batch(
    p_channels text[], p_keys text[], p_codes text[], p_amounts bigint[], p_references text[], p_nows timestamptz[]
) returns setof kanal_pay_batch_result
language plpgsql
-- Every table is reached by key: a lookup per item (LATERAL ... OFFSET 0, a
-- subquery the planner cannot turn into a join) or a restriction on the
-- primary key. What is joined is the batch's own rows. Hash and merge joins,
-- materialized rescans and sequential scans stay off, so that a plan cached
-- while a table was small or analyzed empty still probes by key as the
-- table grows (migration 0013). The plans are made once per connection
-- (generic): left to choose, PostgreSQL planned the write statement again
-- on every small batch, which doubled the function's CPU for batches of 4.
set enable_seqscan = off set enable_hashjoin = off set enable_mergejoin = off set enable_material = off
set plan_cache_mode = force_generic_plan
as $$
declare
    v_plain bigint[];       -- the plain items' n, in batch order
    v_plain_bill bigint[];  -- their bills, in the same order
    v_live_bill bigint[];   -- the bills of every item that could post
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
        -- First of its key and first of its code among every item, billed or
        -- not: an unknown code ahead of a payable bill under the same key is
        -- answered before it, as one after the other.
        select i.n, i.channel, i.key, i.amount, i.now, b.id as bill_id,
               coalesce(b.status = 'open' and b.expires_at > i.now and b.total_rupiah = i.amount, false) as payable,
               min(i.n) over (partition by i.channel, i.key) as first_of_key,
               min(i.n) over (partition by i.code) as first_of_code
          from unnest(p_channels, p_keys, p_codes, p_amounts, p_nows)
               with ordinality as i(channel, key, code, amount, now, n)
          left join lateral (select b.id, b.status, b.expires_at, b.total_rupiah
                               from bills b where b.payment_code = i.code offset 0) b on true
    ), live as (
        -- The items kanal_pay could post: only they write coverage.
        select t.n, t.bill_id, t.n = t.first_of_key and t.n = t.first_of_code as first
          from item t
         where t.payable and not kanal_key_taken(t.channel, t.key)
    ), covered as (
        -- Each such bill's (participant, program) pairs, as kanal_pay covers
        -- them, under the first item that could post it.
        select x.n, l.participant_id, l.program
          from (select bill_id, min(n) as n from live group by bill_id) x
          join lateral (select l.participant_id, l.program from bill_lines l
                         where l.bill_id = x.bill_id and l.participant_id is not null offset 0) l on true
    ), shared as (
        select c.n
          from (select n, min(n) over (partition by participant_id, program) as first_n from covered) c
         where c.n > c.first_n
    )
    select coalesce(array_agg(v.n order by v.n) filter (where v.first and v.n not in (select s.n from shared s)),
                    '{}'),
           coalesce(array_agg(v.bill_id order by v.n) filter (where v.first and v.n not in (select s.n from shared s)),
                    '{}'),
           coalesce(array_agg(distinct v.bill_id), '{}')
      into v_plain, v_plain_bill, v_live_bill
      from live v;

    if cardinality(v_plain) > 0 then
        -- Their keys, then a fresh look (this statement's snapshot is newer
        -- than the locks): a key a payment or reversal took meanwhile goes to
        -- kanal_pay, which answers it.
        perform pg_advisory_xact_lock(hashtext(p_channels[p.n]), hashtext(p_keys[p.n]))
           from unnest(v_plain) with ordinality as p(n, o)
          order by p.o;
        select coalesce(array_agg(p.n order by p.o), '{}'), coalesce(array_agg(p.bill_id order by p.o), '{}')
          into v_plain, v_plain_bill
          from unnest(v_plain, v_plain_bill) with ordinality as p(n, bill_id, o)
         where not kanal_key_taken(p_channels[p.n], p_keys[p.n]);
    end if;

    -- The coverage rows of every worker an item of the batch could cover, in
    -- the one order, before any is read or moved: the plain items' and those
    -- kanal_pay decides below alike, so a batch takes them all at once, in
    -- (participant, program) order, and two batches queue instead of
    -- deadlocking. (Bills are locked and a taken key never frees, so no
    -- other item can post.)
    if cardinality(v_live_bill) > 0 then
        perform kanal_lock_coverage(v_live_bill);
    end if;

    if cardinality(v_plain) > 0 then
        insert into accounts (code, kind)
        select distinct 'clearing:' || p_channels[p.n], 'asset'
          from unnest(v_plain) as p(n)
        on conflict (code) do nothing;

        return query
        with c as (
            -- Ids are drawn here, in batch order, so every row below comes
            -- from c without joining the rows written before it. (The role
            -- that posts needs USAGE on the two identity sequences, which
            -- kanal_pay's inserts do not: without it every batch would fail
            -- and be retried item by item. Kanal runs as the schema's owner.)
            select p.n, p_channels[p.n] as channel, p_keys[p.n] as key, p_amounts[p.n] as amount,
                   p_references[p.n] as reference, p_nows[p.n] as now, b.id as bill_id, b.payment_code, b.npp,
                   b.period, b.due_date, b.payer_name,
                   nextval(pg_get_serial_sequence('payments', 'id')) as payment_id,
                   nextval(pg_get_serial_sequence('journal_entries', 'id')) as entry_id
              from unnest(v_plain, v_plain_bill) with ordinality as p(n, bill_id, o)
              join lateral (select b.id, b.payment_code, b.npp, b.period, b.due_date,
                                   coalesce((select pp.name from participants pp where pp.id = b.participant_id),
                                            (select e.name from employers e where e.npp = b.npp)) as payer_name
                              from bills b where b.id = p.bill_id offset 0) b on true
             order by p.o
        ), paid_bills as (
            update bills b set status = 'paid' where b.id = any(v_plain_bill)
        ), pay as (
            insert into payments (id, channel, idempotency_key, bill_id, payment_code, npp, amount_rupiah,
                                  bank_reference, status, posted_at)
            overriding system value
            select c.payment_id, c.channel, c.key, c.bill_id, c.payment_code, c.npp, c.amount,
                   left(coalesce(c.reference, ''), 200), 'posted', c.now
              from c order by c.n
        ), entry as (
            insert into journal_entries (id, kind, payment_id, npp, created_at)
            overriding system value
            select c.entry_id, 'payment', c.payment_id, c.npp, c.now from c order by c.n
        ), line as (
            select c.n, c.bill_id, c.entry_id, c.payment_id, c.npp, c.period, l.program, l.participant_id,
                   l.paid, l.government
              from c
              join lateral (select l.program, l.participant_id, l.employer_rupiah + l.worker_rupiah as paid,
                                   l.government_rupiah as government
                              from bill_lines l where l.bill_id = c.bill_id offset 0) l on true
        ), allocation as (
            -- kanal_pay's postings, for every bill at once: clearing debited
            -- the total; funds, each worker's JHT account and late-fee income
            -- credited; the government's JKP share a receivable.
            select c.n, c.entry_id, c.npp, 1 as part, 'clearing:' || c.channel as code, c.amount
              from c
            union all
            select n, entry_id, npp, 2, 'fund:' || program, -sum(paid)::bigint
              from line where program in ('JKK', 'JKM', 'JP', 'JKP')
             group by n, entry_id, npp, program
            union all
            select l.n, l.entry_id, l.npp, 3, 'jht:' || pp.kpj, -sum(l.paid)::bigint
              from line l
              join lateral (select pp.kpj from participants pp where pp.id = l.participant_id offset 0) pp on true
             where l.program = 'JHT'
             group by l.n, l.entry_id, l.npp, pp.kpj
            union all
            select n, entry_id, npp, 4, 'income:late_fees', -sum(paid)::bigint
              from line where program = 'DENDA'
             group by n, entry_id, npp
            union all
            select n, entry_id, npp, 5, 'receivable:government:JKP', sum(government)::bigint
              from line group by n, entry_id, npp
            union all
            select n, entry_id, npp, 6, 'fund:JKP', -sum(government)::bigint
              from line group by n, entry_id, npp
        ), posting as (
            insert into postings (entry_id, account_id, npp, amount_rupiah)
            select x.entry_id, a.id, x.npp, x.amount
              from allocation x
              join lateral (select a.id from accounts a where a.code = x.code offset 0) a on true
             where x.amount <> 0
             order by x.n, x.part, x.code
        ), month as (
            insert into coverage_months (participant_id, program, period, payment_id, npp)
            select distinct participant_id, program, period, payment_id, npp
              from line where participant_id is not null
            on conflict do nothing
            returning participant_id, program, period, payment_id
        ), old as (
            -- Locked above; no two plain items cover the same (participant, program).
            select pc.tid, pc.participant_id, pc.program, pc.regency_code, pc.segment, pc.last_paid_period,
                   month.period, month.payment_id
              from month
              join lateral (select pc.ctid as tid, pc.participant_id, pc.program, pc.regency_code, pc.segment,
                                   pc.last_paid_period
                              from participant_coverage pc
                             where pc.participant_id = month.participant_id and pc.program = month.program
                            offset 0) pc on true
             where pc.last_paid_period is null or pc.last_paid_period < month.period
        ), moved as (
            update participant_coverage pc set last_paid_period = old.period
              from old where pc.ctid = old.tid
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
                               'payment_id', c.payment_id, 'payment_code', c.payment_code, 'npp', c.npp,
                               'period', c.period, 'amount_rupiah', c.amount, 'channel', c.channel,
                               'bank_reference', coalesce(c.reference, ''), 'posted_at', c.now) as payload
                      from c
                    union all
                    select c.n, 2, 'coverage.changed', c.npp, jsonb_build_object(
                               'regencies', to_jsonb(t.regencies), 'programs', to_jsonb(t.programs),
                               'payment_id', c.payment_id)
                      from c join touched t on t.payment_id = c.payment_id
                   ) x
             order by x.n, x.part
        ), billed as (
            -- kanal_bill_details for every bill at once.
            select d.n,
                   jsonb_agg(jsonb_build_array(d.program, d.amount)
                             order by array_position(array['JKK','JKM','JHT','JP','JKP','DENDA'], d.program)) as details
              from (select n, program, sum(paid)::bigint as amount
                      from line group by n, program having sum(paid) > 0) d
             group by d.n
        )
        select c.n, 'posted'::text, c.payment_id, c.entry_id, c.now, c.amount, c.payer_name,
               coalesce(billed.details, '[]'::jsonb), c.period, c.due_date
          from c left join billed using (n);

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
