-- Ops: bank settlement statements and their reconciliation against the ledger.
--
-- A statement is stored once: the file's SHA-256 is unique, so importing the
-- same file again changes nothing, and a different file claiming the same
-- statement (format, account, statement id) is refused. Its entries and the
-- reconciliation's result are written in the import's transaction and never
-- change afterwards.

create table ops_statements (
    id                   bigint generated always as identity primary key,
    sha256               bytea not null unique check (length(sha256) = 32),
    format               text not null check (format in ('csv', 'camt.053', 'camt.054')),
    statement_ref        text not null check (length(statement_ref) between 1 and 200),
    account              text not null default '' check (length(account) <= 100),
    file_name            text not null default '' check (length(file_name) <= 255),
    -- The days (Asia/Pontianak) the statement covers: ledger payments posted
    -- or reversed on these days are expected in it.
    from_date            date not null,
    to_date              date not null,
    -- Only payments on channels starting with this prefix are expected ('' = all).
    channel_prefix       text not null default '' check (length(channel_prefix) <= 80),
    entries              int not null check (entries >= 0),
    matched              int not null check (matched >= 0),
    bank_only            int not null check (bank_only >= 0),
    ledger_only          int not null check (ledger_only >= 0),
    amount_mismatch      int not null check (amount_mismatch >= 0),
    bank_credit_rupiah   bigint not null check (bank_credit_rupiah >= 0),
    bank_debit_rupiah    bigint not null check (bank_debit_rupiah >= 0),
    imported_at          timestamptz not null default now(),
    unique (format, account, statement_ref),
    check (from_date <= to_date),
    check (matched + bank_only + amount_mismatch = entries)
);

create table ops_statement_entries (
    statement_id    bigint not null references ops_statements,
    line_no         int not null check (line_no >= 1),
    direction       text not null check (direction in ('credit', 'debit')),
    amount_rupiah   bigint not null check (amount_rupiah > 0),
    booked_on       date not null,
    bank_reference  text not null default '' check (length(bank_reference) <= 200),
    end_to_end_id   text not null default '' check (length(end_to_end_id) <= 200),
    payment_code    text not null default '' check (payment_code = '' or payment_code ~ '^[0-9]{11}$'),
    remittance      text not null default '' check (length(remittance) <= 500),
    primary key (statement_id, line_no)
);

create table ops_reconciliation_items (
    statement_id          bigint not null references ops_statements,
    item_no               int not null check (item_no >= 1),
    kind                  text not null check (kind in ('matched', 'bank_only', 'ledger_only', 'amount_mismatch')),
    -- Which key tied the bank's line to the payment.
    matched_on            text check (matched_on in ('bank_reference', 'end_to_end_id', 'payment_code')),
    direction             text not null check (direction in ('credit', 'debit')),
    line_no               int,
    payment_id            bigint references payments,
    npp                   text,
    bank_amount_rupiah    bigint,
    ledger_amount_rupiah  bigint,
    primary key (statement_id, item_no),
    foreign key (statement_id, line_no) references ops_statement_entries (statement_id, line_no),
    check ((kind = 'bank_only') = (payment_id is null)),
    check ((kind = 'ledger_only') = (line_no is null)),
    check ((matched_on is null) = (kind in ('bank_only', 'ledger_only'))),
    check (kind <> 'matched' or bank_amount_rupiah = ledger_amount_rupiah),
    check (kind <> 'amount_mismatch' or bank_amount_rupiah <> ledger_amount_rupiah)
);
create index ops_reconciliation_items_payment on ops_reconciliation_items (payment_id) where payment_id is not null;
create index ops_reconciliation_items_kind on ops_reconciliation_items (statement_id, kind, item_no);

create function kanal_ops_immutable() returns trigger language plpgsql as $$
begin
    raise exception '% is written once by its import: import a corrected statement instead', tg_table_name
        using errcode = 'check_violation';
end $$;
create trigger ops_statements_immutable before update or delete on ops_statements
    for each row execute function kanal_ops_immutable();
create trigger ops_statement_entries_immutable before update or delete on ops_statement_entries
    for each row execute function kanal_ops_immutable();
create trigger ops_reconciliation_items_immutable before update or delete on ops_reconciliation_items
    for each row execute function kanal_ops_immutable();
