-- A delivery is paused exactly while its endpoint is disabled, whoever
-- changes the endpoint's status (review of migration 0022).
--
-- 0022 paused and unpaused an endpoint's pending deliveries in
-- gateway/callbacks/store.py's enable() and disable() only. Any other
-- statement that changes the status left them as they were: a gateway not
-- upgraded yet during a rolling upgrade (its enable is a plain UPDATE), or an
-- operator's UPDATE. Enabled that way, an endpoint kept its backlog paused:
-- upgraded workers never claim a paused delivery, and a worker not upgraded
-- yet claimed one, sent it, and could not record it (a paused row cannot
-- leave `pending`: callback_deliveries_paused_pending), so it sent it again
-- on every poll. Nothing reported either.
--
-- Now a trigger on the endpoint's status does it, in the statement that
-- changes the status, so with the endpoint's row taken, as before:
-- * enabled: its paused deliveries are unpaused;
-- * disabled: its pending deliveries are paused, except those a worker holds
--   (it is sending them; waiting for it could deadlock with it, as 0022 says),
--   which the claim's join keeps out until the endpoint is enabled again.
-- The relay still writes a delivery paused when it finds its endpoint
-- disabled (it holds every endpoint's row while it writes).

create function kanal_pause_with_endpoint() returns trigger language plpgsql as $$
begin
    if new.status = 'enabled' then
        update callback_deliveries set paused = false
         where endpoint_id = new.id and status = 'pending' and paused;
    else
        update callback_deliveries set paused = true
         where id = any (array(select id from callback_deliveries
                                where endpoint_id = new.id and status = 'pending' and not paused
                                  for update skip locked));
    end if;
    return null;
end $$;

create trigger callback_endpoints_pause after update of status on callback_endpoints
    for each row when (old.status is distinct from new.status) execute function kanal_pause_with_endpoint();

-- Repair what the gap left: paused deliveries of an enabled endpoint.
update callback_deliveries d set paused = false
  from callback_endpoints e
 where e.id = d.endpoint_id and e.status = 'enabled' and d.paused;
