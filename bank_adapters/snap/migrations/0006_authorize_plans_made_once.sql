-- snap_authorize (0004), reaching every table by key whatever its
-- statistics say, with its plans made once per connection.
--
-- 0005 turned sequential scans off, which does not stop a plan from reading
-- a whole index: made while the tables were small, the plan read the whole
-- snap_tokens primary key (a merge join, then a hash join) and every
-- inquiry row (materialized, rescanned per request) on every call: about
-- 100,000 token and 60,000 inquiry index entries for a group of 3 requests
-- at 60,000 rows each (tests/reliability/test_pay_batch_review3.py). Each
-- lookup is now a subquery the planner cannot turn into a join (LATERAL ...
-- OFFSET 0), with hash and merge joins and materialized rescans off, as the
-- gateway's payment functions (gateway migration 0018).
--
-- The statements take the group as arrays. Left to choose, PostgreSQL
-- re-plans such statements for every call while their custom plan looks
-- cheaper than the generic one, as it does for small groups (SNAP's
-- authorize groups average 2-3 requests); one plan per connection serves
-- every group. What the function reads, claims and answers is unchanged.
create or replace function snap_authorize(
    p_token_sha256 bytea[],
    p_partner_id text[],
    p_claim boolean[],
    p_day date[],
    p_external_id text[],
    p_fingerprint text[],
    p_virtual_account_no text[]
) returns table (
    n bigint,
    token_partner_id text,
    token_expired boolean,
    faults text,
    claimed_fingerprint text,
    inquiry_request_id text
) language plpgsql
set enable_seqscan = off set enable_hashjoin = off set enable_mergejoin = off set enable_material = off
set plan_cache_mode = force_generic_plan
as $$
begin
    if true = any (p_claim) then
        perform set_config('synchronous_commit', 'off', true);
        insert into snap_external_ids (partner_id, day, external_id, fingerprint)
        select u.partner_id, u.day, u.external_id, u.fingerprint
          from unnest(p_token_sha256, p_partner_id, p_claim, p_day, p_external_id, p_fingerprint)
               with ordinality as u(token_sha256, partner_id, claim, day, external_id, fingerprint, n)
          join lateral (select t.partner_id, t.expires_at from snap_tokens t
                         where t.token_sha256 = u.token_sha256 offset 0) t on true
         where u.claim and t.partner_id = u.partner_id and t.expires_at > now()
         order by u.partner_id, u.day, u.external_id, u.n
        on conflict do nothing;
    end if;
    -- A new statement, so a new snapshot: it sees this group's claims and
    -- those of concurrent requests that committed while the insert waited.
    return query
    select u.n,
           t.partner_id,
           t.expires_at <= now(),
           f.profile,
           e.fingerprint,
           i.inquiry_request_id
      from unnest(p_token_sha256, p_partner_id, p_claim, p_day, p_external_id, p_fingerprint, p_virtual_account_no)
           with ordinality as u(token_sha256, partner_id, claim, day, external_id, fingerprint, virtual_account_no, n)
      left join lateral (select t.partner_id, t.expires_at from snap_tokens t
                          where t.token_sha256 = u.token_sha256 offset 0) t on true
      left join lateral (select f.profile::text as profile from partner_inbound_faults f
                          where f.partner_id = u.partner_id offset 0) f on true
      left join lateral (select e.partner_id, e.fingerprint from snap_external_ids e
                          where u.claim and t.partner_id = u.partner_id and t.expires_at > now()
                            and e.partner_id = u.partner_id and e.day = u.day and e.external_id = u.external_id
                         offset 0) e on true
      left join lateral (select i.inquiry_request_id from snap_inquiries i
                          where e.partner_id is not null and u.virtual_account_no is not null
                            and i.partner_id = u.partner_id and i.virtual_account_no = u.virtual_account_no
                         offset 0) i on true
     order by u.n;
end
$$;
