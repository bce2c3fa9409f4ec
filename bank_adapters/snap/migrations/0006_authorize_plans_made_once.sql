-- snap_authorize's two statements take the group as arrays. Left to choose,
-- PostgreSQL re-plans such statements for every call while their custom plan
-- looks cheaper than the generic one, as it does for small groups (the
-- usual: SNAP's authorize groups average 2-3 requests). Its plans probe by
-- key only (0005), so one plan per connection serves every group; the
-- gateway's kanal_pay_batch does the same (gateway migration 0018).
alter function snap_authorize(bytea[], text[], boolean[], date[], text[], text[], text[])
    set plan_cache_mode = force_generic_plan;
