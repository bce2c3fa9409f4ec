-- What signed SNAP transactions need from the database before they are
-- decided, for a group of concurrent requests in one statement, one round
-- trip and at most one commit (bank_adapters/snap/store.py: Authorizer):
-- who owns each access token, the partner's inbound fault profile, the claim
-- of each X-EXTERNAL-ID and (for a payment) the virtual account's last
-- inquiry id. Item i of the result answers item i of the arrays (column n).
--
-- A claim is made only when the caller says every check that needs no
-- database passed (p_claim: signature, timestamp window, rate) and the token
-- is this partner's and unexpired, so that a forged or refused request
-- never burns an external id. Claims are inserted in key order, so two
-- groups claiming the same ids cannot deadlock. An id claimed twice in one
-- group behaves as two requests in a row: the first claims it, the second
-- is a retry (same fingerprint) or a reuse.
--
-- The claims commit without waiting for their WAL flush (synchronous_commit
-- off, for this transaction only). Nothing is lost by it: the adapter
-- answers a request only after the request's row in partner_exchanges is
-- committed synchronously, and that later flush writes the WAL up to and
-- past the claim's commit record (a payment's own commit flushes it too).
-- Only a request left unanswered by a database crash can lose its claim,
-- and the bank retries that one.
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
) language plpgsql as $$
begin
    if true = any (p_claim) then
        perform set_config('synchronous_commit', 'off', true);
        insert into snap_external_ids (partner_id, day, external_id, fingerprint)
        select u.partner_id, u.day, u.external_id, u.fingerprint
          from unnest(p_token_sha256, p_partner_id, p_claim, p_day, p_external_id, p_fingerprint)
               with ordinality as u(token_sha256, partner_id, claim, day, external_id, fingerprint, n)
          join snap_tokens t on t.token_sha256 = u.token_sha256
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
           f.profile::text,
           e.fingerprint,
           i.inquiry_request_id
      from unnest(p_token_sha256, p_partner_id, p_claim, p_day, p_external_id, p_fingerprint, p_virtual_account_no)
           with ordinality as u(token_sha256, partner_id, claim, day, external_id, fingerprint, virtual_account_no, n)
      left join snap_tokens t on t.token_sha256 = u.token_sha256
      left join partner_inbound_faults f on f.partner_id = u.partner_id
      left join snap_external_ids e
             on u.claim and t.partner_id = u.partner_id and t.expires_at > now()
            and e.partner_id = u.partner_id and e.day = u.day and e.external_id = u.external_id
      left join snap_inquiries i
             on e.partner_id is not null and u.virtual_account_no is not null
            and i.partner_id = u.partner_id and i.virtual_account_no = u.virtual_account_no
     order by u.n;
end
$$;
