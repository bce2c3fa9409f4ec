-- Exchanges and inbound fault profiles moved to the gateway's partner_exchanges
-- and partner_inbound_faults (gateway migration 0011, which runs first and
-- copies what these tables held), so that every channel shares them.
drop table if exists snap_exchanges;
drop table if exists snap_faults;
