-- Settlement import: a statement's result is written after its lines.
--
-- An import now writes a statement's lines while it is still reading the
-- file (issue 9: PostgreSQL stores one piece while Python reads the next).
-- The lines reference their statement, so the statement's row is written
-- first, and its result (entries, matched, bank_only, ledger_only,
-- amount_mismatch, the bank's credit and debit totals) only once every line
-- is paired. Until now a statement's row could never change.
--
-- Now the transaction that inserted the row may update its result columns,
-- and nothing else:
-- * any other transaction's update, and any delete, is refused as before
--   (check_violation, "written once by its import"); so once the import
--   commits, the row never changes again;
-- * the identifying columns (id, sha256, format, statement_ref, account,
--   file_name, days, channel_prefix, imported_at) never change, not even in
--   that transaction;
-- * the table's checks still hold for every version of the row
--   (matched + bank_only + amount_mismatch = entries: the row is inserted
--   with no entries and no result, then updated with both).
--
-- "Inserted by this transaction" is the row's xmin being this transaction's
-- id; a row inserted in a subtransaction (a savepoint) has the
-- subtransaction's id, and is refused like any other. The row must also
-- still hold no result (entries = 0: every imported statement has at least
-- one line), so that after transaction ids wrap around, a transaction whose
-- id equals an old row's xmin still cannot rewrite that row.
-- tests/ops/test_statement_streaming.py writes and updates rows with plain SQL.

create function kanal_ops_statement_changed() returns trigger language plpgsql as $$
begin
    if tg_op = 'UPDATE'
       and (new.id, new.sha256, new.format, new.statement_ref, new.account, new.file_name, new.from_date,
            new.to_date, new.channel_prefix, new.imported_at)
           is not distinct from
           (old.id, old.sha256, old.format, old.statement_ref, old.account, old.file_name, old.from_date,
            old.to_date, old.channel_prefix, old.imported_at)
       and old.entries = 0
       and (select s.xmin from ops_statements s where s.id = old.id) = xid(pg_current_xact_id()) then
        return new;
    end if;
    raise exception '% is written once by its import: import a corrected statement instead', tg_table_name
        using errcode = 'check_violation';  -- as kanal_ops_immutable (0004), which a function cannot call
end $$;

drop trigger ops_statements_immutable on ops_statements;
create trigger ops_statements_immutable before update or delete on ops_statements
    for each row execute function kanal_ops_statement_changed();
