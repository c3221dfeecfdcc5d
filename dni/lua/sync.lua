-- Bring a pool's Redis state in line with SQL: rebuild it after Redis lost it, or apply a new
-- set of active slots after `dni load`. Idempotent; a concurrent caller finds the work done.
-- KEYS: meta, free, busy, holders, visitors, seen, stats, visits, starts, probation (as in
--       lease.lua)
-- ARGV[1] version of the active slot set
-- ARGV[2] now_ms
-- ARGV[3] lowest lease seq allowed from now on (the highest seq SQL knows)
-- ARGV[4] JSON {"slots": {slot: last_released_ms}, "live": [{slot, l, v, s, e}]}
--         live leases are only read when the pool is rebuilt from nothing; they come back
--         as full leases (SQL does not know which were on probation).
-- Run by one caller per pool at a time (`dni.pools.sync_pool_once`).
-- Returns "rebuilt", "updated" or "current".
local meta, free, busy, holders_key, visitors, seen, visits, probation =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[8], KEYS[10]
local current = redis.call('HGET', meta, 'version')
if current == ARGV[1] then
  return 'current'
end
local now = tonumber(ARGV[2])
local spec = cjson.decode(ARGV[4])
local outcome = 'updated'

if not current then
  outcome = 'rebuilt'
  redis.call('DEL', free, busy, holders_key, visitors, visits, probation)
  for slot, released in pairs(spec.slots) do
    redis.call('ZADD', free, released, slot)
  end
  local grouped = {}
  for _, lease in ipairs(spec.live) do
    local slot = tostring(lease.slot)
    if spec.slots[slot] and lease.e >= now then
      grouped[slot] = grouped[slot] or {}
      table.insert(grouped[slot], {l = lease.l, v = lease.v, s = lease.s, e = lease.e})
      redis.call('ZREM', free, slot)
      redis.call('ZADD', busy, 'GT', lease.e, slot)
      redis.call('HSET', visitors, lease.v, slot)
      redis.call('HSET', visits, lease.s, slot)
    end
  end
  for slot, list in pairs(grouped) do
    redis.call('HSET', holders_key, slot, cjson.encode(list))
  end
else
  -- Retire slots that are no longer active: their leases end now.
  for _, slot in ipairs(redis.call('ZRANGE', free, 0, -1)) do
    if not spec.slots[slot] then redis.call('ZREM', free, slot) end
  end
  for _, slot in ipairs(redis.call('ZRANGE', busy, 0, -1)) do
    if not spec.slots[slot] then
      local raw = redis.call('HGET', holders_key, slot)
      if raw then
        for _, h in ipairs(cjson.decode(raw)) do
          if redis.call('HGET', visitors, h.v) == slot then redis.call('HDEL', visitors, h.v) end
          if redis.call('HGET', visits, h.s) == slot then redis.call('HDEL', visits, h.s) end
          redis.call('HSET', seen, h.l, now .. ':' .. now)
        end
      end
      redis.call('HDEL', holders_key, slot)
      redis.call('ZREM', busy, slot)
      redis.call('ZREM', probation, slot)
    end
  end
  for slot, released in pairs(spec.slots) do
    if not redis.call('ZSCORE', free, slot) and not redis.call('ZSCORE', busy, slot) then
      redis.call('ZADD', free, released, slot)
    end
  end
end

local seq = tonumber(redis.call('HGET', meta, 'seq') or '0')
if tonumber(ARGV[3]) > seq then
  redis.call('HSET', meta, 'seq', ARGV[3])
end
redis.call('HSET', meta, 'version', ARGV[1])
return outcome
