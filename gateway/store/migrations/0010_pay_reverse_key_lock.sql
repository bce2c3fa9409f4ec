-- A payment and the reversal of the same key, racing, must never both win.
--
-- Before this migration a reversal that found no payment wrote its tombstone
-- without waiting for a payment of the same key still being written, and
-- that payment, having checked for tombstones before the reversal committed,
-- was posted anyway: the bank was told "reversed" (ISO 8583 0410 00) and the
-- ledger kept the money. A crash produces exactly that: the gateway dies
-- while PostgreSQL finishes its statement, and the bank reverses on the
-- restarted gateway. tests/reliability/test_races.py shows it.
--
-- The fix: both sides take a transaction-scoped advisory lock on the key
-- (pg_advisory_xact_lock(hashtext(channel), hashtext(key))) before deciding,
-- so one waits for the other's commit and then sees its row. kanal_pay takes
-- it only on the path that inserts, after the bill lock; everything else is
-- unchanged from 0002_posting_function.sql.

create or replace function kanal_pay(
    p_channel text, p_key text, p_code text, p_amount bigint, p_reference text, p_now timestamptz
) returns kanal_pay_result
language plpgsql as $$
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
          join journal_entries j on j.payment_id = p.id and j.kind = 'payment'
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
            select coalesce(pp.name, e.name) into r.payer_name
              from bills b join employers e on e.npp = b.npp left join participants pp on pp.id = b.participant_id
             where b.id = prior.bill_id;
            r.details := kanal_bill_details(prior.bill_id);
            return r;
        end if;
        if exists (select 1 from reversal_tombstones where channel = p_channel and idempotency_key = p_key) then
            r.outcome := 'reversed';
            r.amount_rupiah := p_amount;
            return r;
        end if;

        select b.id, b.payment_code, b.npp, b.period, b.status, b.total_rupiah, b.expires_at,
               coalesce(pp.name, e.name) as payer_name
          into bill
          from bills b join employers e on e.npp = b.npp left join participants pp on pp.id = b.participant_id
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
              from bill_lines l join participants pp on pp.id = l.participant_id
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
      join accounts a on a.code = x.code
     where x.amount <> 0;

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
        select pc.participant_id, pc.program, pc.regency_code, pc.segment, pc.last_paid_period
          from participant_coverage pc join ins using (participant_id, program)
         where pc.last_paid_period is null or pc.last_paid_period < bill.period
           for update of pc
    ), upd as (
        update participant_coverage pc set last_paid_period = bill.period
          from old where pc.participant_id = old.participant_id and pc.program = old.program
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
    r.details := kanal_bill_details(bill.id);
    return r;
end $$;
