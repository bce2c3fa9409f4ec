-- Settlement import: each statement line carries its own pairing; only the
-- payments the bank did not list keep rows of their own.
--
-- Until now an import wrote every line twice: the entry, and a
-- reconciliation item naming that line, with three foreign keys (statement,
-- entry, payment: three probes and a row lock per row) and two indexes. That
-- was most of PostgreSQL's work in an import (issue 9). Now:
--
-- * ops_statement_entries gains the pairing: kind (matched, bank_only,
--   amount_mismatch), matched_on, payment_id, npp and ledger_amount_rupiah.
--   They are null on a line written without a reconciliation (kind null);
--   the bank's amount is the line's amount_rupiah.
-- * ops_reconciliation_ledger_only holds the ledger_only items, with their
--   item number.
-- * ops_reconciliation_items is a view over both, with the same columns,
--   values and item numbers as the table it replaces: per statement, credits
--   first, then debits; within each, the lines in line order, then the
--   ledger_only payments in their order.
--
-- The same guarantees as before:
-- * the kind / matched_on / amount checks of the items, now on the entries
--   (their constraint names: ops_statement_entries_pairing_*);
-- * immutability: the entries' and the new table's triggers, as before;
-- * a paired line's payment exists: checked once per INSERT statement over
--   its rows (kanal_statement_entries_inserted), foreign_key_violation (23503)
--   naming ops_statement_entries_payment_id_fkey, as a foreign key would;
--   deleting, re-keying or truncating a payment that a line names is refused
--   with foreign_key_violation / feature_not_supported, as migration 0012
--   does for bills (same helpers, same READ COMMITTED rule). The line's
--   statement keeps its foreign key; the item's reference to its line is now
--   the row itself.
--
-- tests/ops/test_pairing_constraints.py writes each bad row with plain SQL and
-- asserts the refusal; tests/integration/test_upgrade_settlement_pairing.py
-- upgrades a database with imported statements and compares the items.

alter table ops_statement_entries
    add column kind                  text,
    add column matched_on            text,
    add column payment_id            bigint,
    add column npp                   text,
    add column ledger_amount_rupiah  bigint,
    add constraint ops_statement_entries_pairing_kind
        check (kind in ('matched', 'bank_only', 'amount_mismatch')),
    add constraint ops_statement_entries_pairing_matched_on
        check (matched_on in ('bank_reference', 'end_to_end_id', 'payment_code')),
    -- A line without a reconciliation has no pairing at all.
    add constraint ops_statement_entries_pairing_unreconciled
        check (kind is not null or (matched_on is null and payment_id is null and npp is null
                                    and ledger_amount_rupiah is null)),
    add constraint ops_statement_entries_pairing_payment
        check ((kind = 'bank_only') = (payment_id is null)),
    add constraint ops_statement_entries_pairing_key
        check ((matched_on is null) = (kind = 'bank_only')),
    add constraint ops_statement_entries_pairing_ledger_amount
        check ((ledger_amount_rupiah is null) = (payment_id is null)),
    add constraint ops_statement_entries_pairing_matched_amount
        check (kind <> 'matched' or amount_rupiah = ledger_amount_rupiah),
    add constraint ops_statement_entries_pairing_mismatched_amount
        check (kind <> 'amount_mismatch' or amount_rupiah <> ledger_amount_rupiah);

create table ops_reconciliation_ledger_only (
    statement_id          bigint not null references ops_statements,
    item_no               int not null check (item_no >= 1),
    direction             text not null check (direction in ('credit', 'debit')),
    payment_id            bigint not null references payments,
    npp                   text,
    ledger_amount_rupiah  bigint,
    primary key (statement_id, item_no)
);
create trigger ops_reconciliation_ledger_only_immutable before update or delete on ops_reconciliation_ledger_only
    for each row execute function kanal_ops_immutable();

-- ------------------------------------------------------ the lines' payments --

create function kanal_statement_entries_inserted() returns trigger language plpgsql as $$
declare
    me xid;
    missing_payment bigint;
begin
    if current_setting('transaction_isolation') <> 'read committed' then
        -- See kanal_lock_referencing_tables (0012): lock first, then look.
        me := xid(pg_current_xact_id());
        perform 1 from payments p where p.id in (select payment_id from new_entries) and p.xmin <> me for key share;
    end if;
    select n.payment_id into missing_payment
      from new_entries n
     where n.payment_id is not null and not exists (select 1 from payments p where p.id = n.payment_id)
     limit 1;
    if missing_payment is not null then
        perform kanal_raise_missing_reference('ops_statement_entries', 'ops_statement_entries_payment_id_fkey',
                                              'payment_id', missing_payment::text, 'payments');
    end if;
    return null;
end $$;
create trigger ops_statement_entries_references after insert on ops_statement_entries
    referencing new table as new_entries for each statement execute function kanal_statement_entries_inserted();

-- Payments are never deleted by Kanal (their postings reference them too),
-- so no index serves this check: a removal scans the entries once per
-- statement.
create function kanal_payments_removed() returns trigger language plpgsql as $$
declare
    still bigint;
begin
    perform kanal_lock_referencing_tables('payments', '{ops_statement_entries}');
    select e.payment_id into still
      from ops_statement_entries e
     where e.payment_id in (select id from gone_payments)
       and not exists (select 1 from payments p where p.id = e.payment_id)
     limit 1;
    if still is not null then
        perform kanal_raise_still_referenced('payments', 'ops_statement_entries_payment_id_fkey', 'id', still::text,
                                             'ops_statement_entries');
    end if;
    return null;
end $$;
create trigger payments_still_paired after delete on payments
    referencing old table as gone_payments for each statement execute function kanal_payments_removed();

create function kanal_payment_rekeyed() returns trigger language plpgsql as $$
begin
    perform kanal_lock_referencing_tables('payments', '{ops_statement_entries}');
    if not exists (select 1 from payments where id = old.id)
       and exists (select 1 from ops_statement_entries where payment_id = old.id) then
        perform kanal_raise_still_referenced('payments', 'ops_statement_entries_payment_id_fkey', 'id', old.id::text,
                                             'ops_statement_entries');
    end if;
    return null;
end $$;
create trigger payments_key_still_paired after update of id on payments
    for each row when (old.id is distinct from new.id) execute function kanal_payment_rekeyed();

create function kanal_payments_truncated() returns trigger language plpgsql as $$
begin
    perform kanal_lock_referencing_tables('payments', '{ops_statement_entries}');
    if exists (select 1 from ops_statement_entries where payment_id is not null) then
        raise exception 'cannot truncate table "payments": table "ops_statement_entries" references it'
            using errcode = 'feature_not_supported', hint = 'Truncate table "ops_statement_entries" at the same time.';
    end if;
    return null;
end $$;
create trigger payments_truncated_while_paired after truncate on payments
    for each statement execute function kanal_payments_truncated();

-- ---------------------------------------------------------- existing items --

alter table ops_statement_entries disable trigger ops_statement_entries_immutable;
update ops_statement_entries e
   set kind = i.kind, matched_on = i.matched_on, payment_id = i.payment_id, npp = i.npp,
       ledger_amount_rupiah = i.ledger_amount_rupiah
  from ops_reconciliation_items i
 where i.statement_id = e.statement_id and i.line_no = e.line_no;
alter table ops_statement_entries enable trigger ops_statement_entries_immutable;
insert into ops_reconciliation_ledger_only (statement_id, item_no, direction, payment_id, npp, ledger_amount_rupiah)
select statement_id, item_no, direction, payment_id, npp, ledger_amount_rupiah
  from ops_reconciliation_items where kind = 'ledger_only';

create view ops_reconciliation_items_v as
select statement_id,
       (row_number() over (partition by statement_id order by direction = 'debit', line_no is null, ordinal))::int as item_no,
       kind, matched_on, direction, line_no, payment_id, npp, bank_amount_rupiah, ledger_amount_rupiah
  from (select statement_id, kind, matched_on, direction, line_no, payment_id, npp,
               amount_rupiah as bank_amount_rupiah, ledger_amount_rupiah, line_no as ordinal
          from ops_statement_entries
         where kind is not null
        union all
        select statement_id, 'ledger_only', null, direction, null, payment_id, npp, null, ledger_amount_rupiah, item_no
          from ops_reconciliation_ledger_only) as items;

-- Every item reads back exactly as it was stored, number included: else the
-- upgrade stops here and changes nothing.
do $$
declare
    differing bigint;
begin
    select count(*) into differing from (
        (select * from ops_reconciliation_items except all select * from ops_reconciliation_items_v)
        union all
        (select * from ops_reconciliation_items_v except all select * from ops_reconciliation_items)
    ) as d;
    if differing > 0 then
        raise exception 'migration 0014: % reconciliation item rows would read back differently', differing
            using errcode = 'data_exception',
                  hint = 'Items were written outside Kanal''s import (two items on one line, or numbers out of order).';
    end if;
end $$;

drop table ops_reconciliation_items;
alter view ops_reconciliation_items_v rename to ops_reconciliation_items;
