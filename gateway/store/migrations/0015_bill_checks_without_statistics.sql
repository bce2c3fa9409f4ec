-- The bill checks of migration 0012 take their indexes whatever the table
-- statistics say, as the payment path does since 0013.
--
-- Their PL/pgSQL plans are cached per connection. An employer's wage report
-- writes a handful of rows per statement; when the bills table was analyzed
-- empty (a fresh deployment, a manual ANALYZE), the cached plans read every
-- bill and bill line for each report, so billing employer by employer slowed
-- down with every bill already issued: on a 300,000-worker province after an
-- ANALYZE of the empty bills table, a sample of 16,820 workers read 256 million
-- bill lines and 100 million bills.
--
-- With sequential scans off the planner still picks set-wide plans for the
-- province's millions of rows (full index scans, merge joins), and billing the
-- province costs the same PostgreSQL CPU (9.8 s for 300,000 workers, with and
-- without, docs/performance.md).

alter function kanal_bills_inserted() set enable_seqscan = off;
alter function kanal_bill_lines_inserted() set enable_seqscan = off;
alter function kanal_check_bill_totals_between(bigint, bigint, boolean) set enable_seqscan = off;
