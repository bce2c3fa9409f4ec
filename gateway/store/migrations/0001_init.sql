-- Kanal schema, version 1: employers, participants, bills, the double-entry
-- ledger, coverage and the outbox. Every table that grows with traffic carries
-- the employer (npp) so it can be distributed by it later without changing a
-- query. Constraints state what must never happen.

create table employers (
    npp             text primary key check (npp ~ '^[A-Z0-9]{8}$'),
    name            text not null check (length(name) between 1 and 200),
    regency_code    text not null check (regency_code ~ '^61[0-9]{2}$'),
    size_class      text not null check (size_class in ('micro', 'small', 'medium', 'large')),
    jkk_risk_class  smallint not null check (jkk_risk_class between 1 and 5),
    api_key_sha256  bytea not null unique,
    created_at      timestamptz not null default now()
);

create table participants (
    id              bigint generated always as identity primary key,
    kpj             text not null unique check (kpj ~ '^[0-9]{11}$'),
    npp             text not null references employers,
    nik             text not null check (nik ~ '^[0-9]{16}$'),
    name            text not null check (length(name) between 1 and 200),
    wage_rupiah     bigint not null check (wage_rupiah > 0),
    segment         text not null check (segment in ('PU', 'BPU')),
    regency_code    text not null,
    created_at      timestamptz not null default now()
);
create index participants_npp on participants (npp);
-- One person is one participant per employer.
create unique index participants_one_nik_per_employer on participants (npp, nik);

create sequence payment_code_serial;

create table bills (
    id              bigint generated always as identity primary key,
    payment_code    text not null unique check (payment_code ~ '^[0-9]{11}$'),
    npp             text not null references employers,
    kind            text not null check (kind in ('PU', 'BPU')),
    participant_id  bigint references participants,
    period          text not null check (period ~ '^[0-9]{4}-(0[1-9]|1[0-2])$'),
    due_date        date not null,
    expires_at      timestamptz not null,
    total_rupiah    bigint not null check (total_rupiah > 0),
    line_count      int not null check (line_count > 0),
    status          text not null default 'open' check (status in ('open', 'paid')),
    created_at      timestamptz not null default now(),
    check ((kind = 'BPU') = (participant_id is not null))
);
create unique index bills_one_pu_bill_per_period on bills (npp, period) where kind = 'PU';
create unique index bills_one_bpu_bill_per_period on bills (participant_id, period) where kind = 'BPU';
create index bills_npp on bills (npp, period);

create table bill_lines (
    bill_id                  bigint not null references bills,
    line_no                  int not null,
    npp                      text not null,
    participant_id           bigint references participants,
    program                  text not null check (program in ('JKK', 'JKM', 'JHT', 'JP', 'JKP', 'DENDA')),
    basis_rupiah             bigint not null check (basis_rupiah >= 0),
    employer_rupiah          bigint not null check (employer_rupiah >= 0),
    worker_rupiah            bigint not null check (worker_rupiah >= 0),
    government_rupiah        bigint not null check (government_rupiah >= 0),
    late_fee_source_bill_id  bigint references bills,
    late_fee_months          int check (late_fee_months > 0),
    primary key (bill_id, line_no),
    check ((program = 'DENDA') = (late_fee_source_bill_id is not null)),
    check ((program = 'DENDA') = (participant_id is null))
);
create index bill_lines_late_fee_source on bill_lines (late_fee_source_bill_id) where late_fee_source_bill_id is not null;

-- A bill's total is the sum of its billed lines, checked at commit.
create function kanal_check_bill_total() returns trigger language plpgsql as $$
declare
    lines_total bigint;
    lines_n int;
begin
    select coalesce(sum(employer_rupiah + worker_rupiah), 0), count(*)
      into lines_total, lines_n
      from bill_lines where bill_id = new.id;
    if lines_total <> new.total_rupiah or lines_n <> new.line_count then
        raise exception 'bill % total % (% lines) does not equal the sum of its lines % (% lines)',
            new.id, new.total_rupiah, new.line_count, lines_total, lines_n
            using errcode = 'check_violation';
    end if;
    return null;
end $$;
create constraint trigger bills_total_equals_lines after insert on bills
    deferrable initially deferred for each row execute function kanal_check_bill_total();

-- Bills never change once issued, except their status.
create function kanal_bill_immutable() returns trigger language plpgsql as $$
begin
    if (new.payment_code, new.npp, new.kind, new.participant_id, new.period, new.due_date, new.total_rupiah, new.line_count)
       is distinct from
       (old.payment_code, old.npp, old.kind, old.participant_id, old.period, old.due_date, old.total_rupiah, old.line_count) then
        raise exception 'bill % is immutable except for its status', old.id using errcode = 'check_violation';
    end if;
    return new;
end $$;
create trigger bills_immutable before update on bills for each row execute function kanal_bill_immutable();

create function kanal_append_only() returns trigger language plpgsql as $$
begin
    raise exception '% is append-only: write a correcting row instead', tg_table_name using errcode = 'check_violation';
end $$;
create trigger bill_lines_append_only before update or delete on bill_lines
    for each row execute function kanal_append_only();

-- ---------------------------------------------------------------- ledger ----

-- Signs: a posting's amount is positive for a debit and negative for a
-- credit; an entry's postings sum to zero.
create table accounts (
    id          bigint generated always as identity primary key,
    code        text not null unique,
    kind        text not null check (kind in ('asset', 'liability', 'income')),
    npp         text,
    created_at  timestamptz not null default now()
);

insert into accounts (code, kind) values
    ('fund:JKK', 'liability'),
    ('fund:JKM', 'liability'),
    ('fund:JHT', 'liability'),
    ('fund:JP', 'liability'),
    ('fund:JKP', 'liability'),
    ('income:late_fees', 'income'),
    ('receivable:government:JKP', 'asset');

create table payments (
    id               bigint generated always as identity primary key,
    channel          text not null check (length(channel) between 1 and 80),
    idempotency_key  text not null check (length(idempotency_key) between 1 and 200),
    bill_id          bigint not null references bills,
    payment_code     text not null,
    npp              text not null,
    amount_rupiah    bigint not null check (amount_rupiah > 0),
    bank_reference   text not null default '',
    status           text not null check (status in ('posted', 'reversed')),
    posted_at        timestamptz not null default now(),
    reversed_at      timestamptz,
    unique (channel, idempotency_key),
    check ((status = 'reversed') = (reversed_at is not null))
);
-- The heart of exactly-once: a bill has at most one standing payment.
create unique index payments_one_standing_per_bill on payments (bill_id) where status = 'posted';
create index payments_npp on payments (npp, posted_at);

-- A reversal that arrived before (or without) its payment: remembered so that
-- the payment, if it ever comes, is declined.
create table reversal_tombstones (
    channel          text not null,
    idempotency_key  text not null,
    created_at       timestamptz not null default now(),
    primary key (channel, idempotency_key)
);

create table journal_entries (
    id                 bigint generated always as identity primary key,
    kind               text not null check (kind in ('payment', 'reversal')),
    payment_id         bigint not null references payments,
    npp                text not null,
    reverses_entry_id  bigint unique references journal_entries,
    created_at         timestamptz not null default now(),
    check ((kind = 'reversal') = (reverses_entry_id is not null))
);
create unique index journal_one_payment_entry on journal_entries (payment_id) where kind = 'payment';
create unique index journal_one_reversal_entry on journal_entries (payment_id) where kind = 'reversal';

create table postings (
    id             bigint generated always as identity primary key,
    entry_id       bigint not null references journal_entries,
    account_id     bigint not null references accounts,
    npp            text not null,
    amount_rupiah  bigint not null check (amount_rupiah <> 0)
);
create index postings_entry on postings (entry_id);
create index postings_account on postings (account_id);

-- Every entry balances and has at least two postings, enforced by the
-- database: (1) at commit, for each new entry (so an entry whose postings
-- never came is refused); (2) after each INSERT statement into postings, for
-- every entry it touched (so postings slipped into an old entry are refused).
-- Postings of one entry are therefore inserted in one statement.
create function kanal_check_new_entry() returns trigger language plpgsql as $$
declare
    total numeric;
    n int;
begin
    select coalesce(sum(amount_rupiah), 0), count(*) into total, n from postings where entry_id = new.id;
    if total <> 0 or n < 2 then
        raise exception 'journal entry % does not balance: % postings summing to %', new.id, n, total
            using errcode = 'check_violation';
    end if;
    return null;
end $$;
create constraint trigger journal_entries_balanced after insert on journal_entries
    deferrable initially deferred for each row execute function kanal_check_new_entry();

create function kanal_check_touched_entries() returns trigger language plpgsql as $$
declare
    bad record;
begin
    select t.entry_id, sum(p.amount_rupiah) as total, count(*) as n into bad
      from (select distinct entry_id from new_postings) t
      join postings p on p.entry_id = t.entry_id
     group by t.entry_id
    having sum(p.amount_rupiah) <> 0 or count(*) < 2
     limit 1;
    if found then
        raise exception 'journal entry % does not balance: % postings summing to %', bad.entry_id, bad.n, bad.total
            using errcode = 'check_violation';
    end if;
    return null;
end $$;
create trigger postings_balanced after insert on postings
    referencing new table as new_postings
    for each statement execute function kanal_check_touched_entries();

create trigger journal_entries_append_only before update or delete on journal_entries
    for each row execute function kanal_append_only();
create trigger postings_append_only before update or delete on postings
    for each row execute function kanal_append_only();

-- ------------------------------------------------------------- coverage ----

-- One row per participant and enrolled program; last_paid_period is derived
-- state (the max of coverage_months), kept in the posting's transaction.
create table participant_coverage (
    participant_id    bigint not null references participants,
    program           text not null check (program in ('JKK', 'JKM', 'JHT', 'JP', 'JKP')),
    npp               text not null,
    regency_code      text not null,
    segment           text not null,
    last_paid_period  text,
    primary key (participant_id, program)
);
create index participant_coverage_regency on participant_coverage (regency_code, program, last_paid_period);

create table coverage_months (
    participant_id  bigint not null references participants,
    program         text not null,
    period          text not null,
    payment_id      bigint not null references payments,
    npp             text not null,
    primary key (participant_id, program, period)
);
create index coverage_months_payment on coverage_months (payment_id);

-- Counters as append-only deltas: how many participants of a regency and
-- program have a given last paid period. Inserts never queue on a hot row;
-- "protected as of D" is the sum over buckets recent enough for D, so a
-- state that changes with time alone needs no write.
create table coverage_deltas (
    id                bigint generated always as identity primary key,
    regency_code      text not null,
    program           text not null,
    segment           text not null,
    last_paid_period  text not null,
    delta             int not null check (delta <> 0),
    payment_id        bigint references payments,
    created_at        timestamptz not null default now()
);
create index coverage_deltas_bucket on coverage_deltas (regency_code, program, segment, last_paid_period);

-- --------------------------------------------------------------- outbox ----

create table outbox (
    id          bigint generated always as identity primary key,
    event_id    uuid not null unique default gen_random_uuid(),
    topic       text not null check (topic in ('bill.created', 'payment.posted', 'payment.reversed', 'coverage.changed')),
    npp         text,
    payload     jsonb not null,
    created_at  timestamptz not null default now()
);
create index outbox_topic on outbox (topic, id);
