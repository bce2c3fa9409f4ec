-- Bills and bill lines: the same refusals as before, checked once per
-- statement (and once per transaction at commit) instead of once per row.
--
-- Until now five foreign keys (bills -> employers, participants; bill_lines ->
-- bills twice, participants) ran one trigger per inserted row each, and the
-- bill-total constraint trigger one query per bill at commit: most of the
-- time of billing a whole province (six million lines, issue 9). The
-- triggers below refuse the same writes, with the same SQLSTATEs and
-- constraint names:
--
-- * an inserted bill or bill line whose employer, participant or bill does
--   not exist: foreign_key_violation (23503) at the end of the INSERT
--   statement, as the foreign key did (kanal_bills_inserted,
--   kanal_bill_lines_inserted: one query over the statement's rows).
-- * deleting or re-keying an employer, participant or bill that bills or bill
--   lines reference: foreign_key_violation at the end of the statement, as the
--   foreign key's NO ACTION did; truncating one while the referencing table
--   keeps rows: feature_not_supported, as a foreign key's TRUNCATE check.
--   Concurrency: see kanal_lock_referencing_tables. The one difference: under
--   REPEATABLE READ and SERIALIZABLE such a delete is refused even when
--   nothing references the row (a trigger cannot see rows committed after the
--   snapshot, as a foreign key can); nothing in Kanal deletes these rows.
-- * a new bill whose total or line count differs from its lines, or whose
--   lines never came: check_violation at commit, as before. Each INSERT
--   statement into bills widens an id range kept in the transaction-local
--   setting kanal.bill_totals_pending; at commit the first bill's deferred
--   trigger checks, in one query, every bill of that range this transaction
--   inserted (new column created_xact) and records the range in
--   kanal.bill_totals_checked; each other bill's trigger finds itself there
--   and returns. A bill claiming another created_xact, or outside the range,
--   is checked alone. These two settings belong to the triggers: a session
--   that writes kanal.bill_totals_checked itself skips the check, as one that
--   turns triggers off (session_replication_role) does.
--
-- tests/sim/test_bill_checks.py writes each bad row with plain SQL, one row
-- or thousands per statement, and asserts the refusal.

alter table bill_lines
    drop constraint bill_lines_bill_id_fkey,
    drop constraint bill_lines_participant_id_fkey,
    drop constraint bill_lines_late_fee_source_bill_id_fkey;
alter table bills
    drop constraint bills_npp_fkey,
    drop constraint bills_participant_id_fkey;
drop trigger bills_total_equals_lines on bills;
drop function kanal_check_bill_total();

-- ------------------------------------------------- inserted rows' references --

create function kanal_raise_missing_reference(p_table text, p_constraint text, p_column text, p_value text, p_parent text)
returns void language plpgsql as $$
begin
    raise exception 'insert or update on table "%" violates foreign key constraint "%"', p_table, p_constraint
        using errcode = 'foreign_key_violation', constraint = p_constraint, table = p_table,
              detail = format('Key (%s)=(%s) is not present in table "%s".', p_column, p_value, p_parent);
end $$;

-- One query per statement (a wage report inserts each BPU bill with its own
-- statement, so the fixed cost counts as much as the per-row one).
create function kanal_bills_inserted() returns trigger language plpgsql as $$
declare
    me xid;
    missing_npp text;
    missing_participant bigint;
    first_id bigint;
    last_id bigint;
    pending text;
    n int;
begin
    if current_setting('transaction_isolation') <> 'read committed' then
        -- See kanal_lock_referencing_tables: lock first, then look.
        me := xid(pg_current_xact_id());
        perform 1 from employers e where e.npp in (select npp from new_bills) and e.xmin <> me for key share;
        perform 1 from participants p where p.id in (select participant_id from new_bills) and p.xmin <> me for key share;
    end if;
    -- One pass over the statement's bills, each probed where it points.
    select min(n.id), max(n.id),
           min(n.npp) filter (where not exists (select 1 from employers e where e.npp = n.npp)),
           min(n.participant_id) filter (where n.participant_id is not null
                                           and not exists (select 1 from participants p where p.id = n.participant_id))
      into first_id, last_id, missing_npp, missing_participant
      from new_bills n;
    if missing_npp is not null then
        perform kanal_raise_missing_reference('bills', 'bills_npp_fkey', 'npp', missing_npp, 'employers');
    end if;
    if missing_participant is not null then
        perform kanal_raise_missing_reference('bills', 'bills_participant_id_fkey', 'participant_id',
                                              missing_participant::text, 'participants');
    end if;
    if first_id is null then
        return null;
    end if;
    -- Register the statement's bills for the total check at commit: one id
    -- range for the whole transaction.
    pending := coalesce(nullif(current_setting('kanal.bill_totals_pending', true), ''), first_id || ':' || last_id);
    n := length(set_config('kanal.bill_totals_pending',
                           least(split_part(pending, ':', 1)::bigint, first_id) || ':'
                           || greatest(split_part(pending, ':', 2)::bigint, last_id), true));
    return null;
end $$;
create trigger bills_references after insert on bills
    referencing new table as new_bills for each statement execute function kanal_bills_inserted();

create function kanal_bill_lines_inserted() returns trigger language plpgsql as $$
declare
    me xid;
    missing_bill bigint;
    missing_participant bigint;
    missing_source bigint;
begin
    if current_setting('transaction_isolation') <> 'read committed' then
        -- See kanal_lock_referencing_tables: lock first, then look.
        me := xid(pg_current_xact_id());
        perform 1 from bills b
         where b.id in (select bill_id from new_lines union select late_fee_source_bill_id from new_lines)
           and b.xmin <> me for key share;
        perform 1 from participants p where p.id in (select participant_id from new_lines) and p.xmin <> me for key share;
    end if;
    -- One pass over the statement's lines, each probed where it points (a
    -- wage report's COPY of a few lines and the province's millions alike;
    -- consecutive lines of a bill or a worker hit the same index pages).
    select l.bill_id, l.participant_id, l.late_fee_source_bill_id
      into missing_bill, missing_participant, missing_source
      from new_lines l
     where not exists (select 1 from bills b where b.id = l.bill_id)
        or (l.participant_id is not null and not exists (select 1 from participants p where p.id = l.participant_id))
        or (l.late_fee_source_bill_id is not null
            and not exists (select 1 from bills b where b.id = l.late_fee_source_bill_id))
     limit 1;
    if not found then
        return null;
    end if;
    -- Which of its references is missing.
    if exists (select 1 from bills b where b.id = missing_bill) then
        missing_bill := null;
    end if;
    if missing_participant is null or exists (select 1 from participants p where p.id = missing_participant) then
        missing_participant := null;
    end if;
    if missing_source is null or exists (select 1 from bills b where b.id = missing_source) then
        missing_source := null;
    end if;
    if missing_bill is not null then
        perform kanal_raise_missing_reference('bill_lines', 'bill_lines_bill_id_fkey', 'bill_id', missing_bill::text, 'bills');
    end if;
    if missing_participant is not null then
        perform kanal_raise_missing_reference('bill_lines', 'bill_lines_participant_id_fkey', 'participant_id',
                                              missing_participant::text, 'participants');
    end if;
    if missing_source is not null then
        perform kanal_raise_missing_reference('bill_lines', 'bill_lines_late_fee_source_bill_id_fkey', 'late_fee_source_bill_id',
                                              missing_source::text, 'bills');
    end if;
    return null;
end $$;
create trigger bill_lines_references after insert on bill_lines
    referencing new table as new_lines for each statement execute function kanal_bill_lines_inserted();

-- ----------------------------------------------------- referenced rows' side --

create function kanal_raise_still_referenced(p_parent text, p_constraint text, p_column text, p_value text, p_child text)
returns void language plpgsql as $$
begin
    raise exception 'update or delete on table "%" violates foreign key constraint "%" on table "%"', p_parent, p_constraint, p_child
        using errcode = 'foreign_key_violation', constraint = p_constraint, table = p_child,
              detail = format('Key (%s)=(%s) is still referenced from table "%s".', p_column, p_value, p_child);
end $$;

-- Called before a referenced row's removal is checked. Under READ COMMITTED
-- an inserting statement checks its references with a fresh snapshot and
-- keeps its ROW EXCLUSIVE lock on the referencing table until it ends, and
-- the remover takes SHARE on that table before it looks: whichever comes
-- second sees the other's committed work, so no row lock is needed on the
-- referenced rows (the foreign keys took one per inserted row). Under
-- REPEATABLE READ a snapshot older than the lock could miss a referencing
-- row committed meanwhile, so removals are refused there, and inserts lock
-- what they reference FOR KEY SHARE, as a foreign key does.
create function kanal_lock_referencing_tables(p_table text, p_referencing text[]) returns void language plpgsql as $$
declare
    child text;
begin
    if current_setting('transaction_isolation') <> 'read committed' then
        raise exception 'deleting or re-keying a row of % is checked only under READ COMMITTED', p_table
            using errcode = 'feature_not_supported',
                  hint = 'A row referencing it may have been committed after this transaction''s snapshot; run the change under READ COMMITTED.';
    end if;
    foreach child in array p_referencing loop
        execute format('lock table %I in share mode', child);
    end loop;
end $$;

create function kanal_bill_removed() returns trigger language plpgsql as $$
begin
    perform kanal_lock_referencing_tables('bills', '{bill_lines}');
    if exists (select 1 from bills where id = old.id) then
        return null;
    end if;
    if exists (select 1 from bill_lines where bill_id = old.id) then
        perform kanal_raise_still_referenced('bills', 'bill_lines_bill_id_fkey', 'id', old.id::text, 'bill_lines');
    end if;
    if exists (select 1 from bill_lines where late_fee_source_bill_id = old.id) then
        perform kanal_raise_still_referenced('bills', 'bill_lines_late_fee_source_bill_id_fkey', 'id', old.id::text, 'bill_lines');
    end if;
    return null;
end $$;
create trigger bills_still_referenced after delete on bills
    for each row execute function kanal_bill_removed();
create trigger bills_key_still_referenced after update of id on bills
    for each row when (old.id is distinct from new.id) execute function kanal_bill_removed();

create function kanal_participant_removed() returns trigger language plpgsql as $$
begin
    perform kanal_lock_referencing_tables('participants', '{bills,bill_lines}');
    if exists (select 1 from participants where id = old.id) then
        return null;
    end if;
    if exists (select 1 from bills where participant_id = old.id and kind = 'BPU') then
        perform kanal_raise_still_referenced('participants', 'bills_participant_id_fkey', 'id', old.id::text, 'bills');
    end if;
    if exists (select 1 from bill_lines where participant_id = old.id) then
        perform kanal_raise_still_referenced('participants', 'bill_lines_participant_id_fkey', 'id', old.id::text, 'bill_lines');
    end if;
    return null;
end $$;
create trigger participants_still_referenced after delete on participants
    for each row execute function kanal_participant_removed();
create trigger participants_key_still_referenced after update of id on participants
    for each row when (old.id is distinct from new.id) execute function kanal_participant_removed();

create function kanal_employer_removed() returns trigger language plpgsql as $$
begin
    perform kanal_lock_referencing_tables('employers', '{bills}');
    if exists (select 1 from employers where npp = old.npp) then
        return null;
    end if;
    if exists (select 1 from bills where npp = old.npp) then
        perform kanal_raise_still_referenced('employers', 'bills_npp_fkey', 'npp', old.npp, 'bills');
    end if;
    return null;
end $$;
create trigger employers_still_referenced after delete on employers
    for each row execute function kanal_employer_removed();
create trigger employers_key_still_referenced after update of npp on employers
    for each row when (old.npp is distinct from new.npp) execute function kanal_employer_removed();

-- TRUNCATE: the AFTER trigger runs once every table of the command is empty,
-- so truncating a table together with the tables referencing it still works.
create function kanal_truncated_while_referenced() returns trigger language plpgsql as $$
declare
    child text;
    still boolean;
begin
    perform kanal_lock_referencing_tables(tg_table_name, tg_argv);
    foreach child in array tg_argv loop
        execute format('select exists (select 1 from %I)', child) into still;
        if still then
            raise exception 'cannot truncate table "%": table "%" references it', tg_table_name, child
                using errcode = 'feature_not_supported', hint = format('Truncate table "%s" at the same time.', child);
        end if;
    end loop;
    return null;
end $$;
create trigger bills_truncated after truncate on bills
    for each statement execute function kanal_truncated_while_referenced('bill_lines');
create trigger participants_truncated after truncate on participants
    for each statement execute function kanal_truncated_while_referenced('bills', 'bill_lines');
create trigger employers_truncated after truncate on employers
    for each statement execute function kanal_truncated_while_referenced('bills');

-- ------------------------------------------------------ bill totals at commit --

-- The transaction that inserted each bill (the top-level one, whatever
-- savepoint it was in): the commit check tells this transaction's bills from
-- the others' bills between them by it. No rewrite: only new rows get it.
alter table bills add column created_xact xid8;
alter table bills alter column created_xact set default pg_current_xact_id();

-- The bills this transaction inserted with an id in [p_first, p_last] (with
-- p_everyone, every bill there) each have line_count lines summing to their
-- total.
create function kanal_check_bill_totals_between(p_first bigint, p_last bigint, p_everyone boolean) returns void
language plpgsql as $$
declare
    me xid8 := pg_current_xact_id();
    bad_id bigint;
    bad record;
begin
    select b.id into bad_id
      from bills b
      left join lateral (select sum(employer_rupiah + worker_rupiah) as total, count(*) as n
                           from bill_lines where bill_id = b.id) l on true
     where b.id between p_first and p_last and (p_everyone or b.created_xact = me)
       and (coalesce(l.total, 0) <> b.total_rupiah or coalesce(l.n, 0) <> b.line_count)
     order by b.id limit 1;
    if bad_id is not null then
        select b.id, b.total_rupiah, b.line_count, coalesce(sum(l.employer_rupiah + l.worker_rupiah), 0) as lines_total,
               count(l.bill_id) as lines_n into bad
          from bills b left join bill_lines l on l.bill_id = b.id
         where b.id = bad_id group by b.id;
        raise exception 'bill % total % (% lines) does not equal the sum of its lines % (% lines)',
            bad.id, bad.total_rupiah, bad.line_count, bad.lines_total, bad.lines_n
            using errcode = 'check_violation';
    end if;
end $$;

-- A bills INSERT statement forgets the range checked before it: only a check
-- made after its rows exist may vouch for them.
create function kanal_bills_inserting() returns trigger language plpgsql as $$
begin
    if coalesce(current_setting('kanal.bill_totals_checked', true), '') <> '' then
        perform set_config('kanal.bill_totals_checked', '', true);
    end if;
    return null;
end $$;
create trigger bills_forget_checked before insert on bills
    for each statement execute function kanal_bills_inserting();

-- Once per bill at commit. The first of this transaction's bills to fire
-- checks every bill the transaction inserted in the registered range, in one
-- query, and records the range as checked; each other bill of this
-- transaction in the range then returns at once (a bill inserted later, by a
-- new statement, finds the range forgotten). A bill outside it (checked early
-- with SET CONSTRAINTS ... IMMEDIATE, before its statement registered it) is
-- checked alone.
create function kanal_check_bill_totals_at_commit() returns trigger language plpgsql as $$
declare
    checked text;
    pending text;
begin
    if new.created_xact is distinct from pg_current_xact_id() then
        perform kanal_check_bill_totals_between(new.id, new.id, true);
        return null;
    end if;
    checked := coalesce(current_setting('kanal.bill_totals_checked', true), '');
    if checked <> '' and new.id between split_part(checked, ':', 1)::bigint and split_part(checked, ':', 2)::bigint then
        return null;
    end if;
    pending := coalesce(current_setting('kanal.bill_totals_pending', true), '');
    if pending <> '' then
        perform kanal_check_bill_totals_between(split_part(pending, ':', 1)::bigint, split_part(pending, ':', 2)::bigint, false);
        perform set_config('kanal.bill_totals_checked', pending, true);
        perform set_config('kanal.bill_totals_pending', '', true);
        if new.id between split_part(pending, ':', 1)::bigint and split_part(pending, ':', 2)::bigint then
            return null;
        end if;
    end if;
    perform kanal_check_bill_totals_between(new.id, new.id, true);
    return null;
end $$;
create constraint trigger bills_total_equals_lines after insert on bills
    deferrable initially deferred for each row execute function kanal_check_bill_totals_at_commit();
