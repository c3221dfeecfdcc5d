-- Lease a slot of one pool to a visit, or renew the visit's lease: one atomic step.
-- KEYS[1] meta     hash: version (of the active slot set), seq (last lease number)
-- KEYS[2] free     zset: slot -> when it was last released (ms); lowest = least recently
-- KEYS[3] busy     zset: slot -> when its newest holder's lease expires (ms)
-- KEYS[4] holders  hash: slot -> JSON list of {l = lease seq, v = visitor, s = visit, e = expiry}
-- KEYS[5] visitors hash: visitor -> slot it holds
-- KEYS[6] seen     hash: lease seq -> "last_seen_ms:expires_ms", drained to SQL in batches
-- KEYS[7] stats    hash: counters (leases, released, peak, overflow_fallback, overflow_share)
-- KEYS[8] visits   hash: visit -> slot it holds
-- KEYS[9] starts   hash: lease seq -> JSON lease start, removed once it is in SQL
-- ARGV: version, now_ms, lease_ms, visitor, visit, overflow ("fallback" | "share"),
--       max_reclaim, mode ("lease": keep or take a slot; "renew": only extend a held one)
-- Returns {"resync"} when the pool must be (re)built from SQL first, {"lost"} when mode is
-- "renew" and the visit holds nothing, {"fallback"} when the pool is exhausted; otherwise
-- {outcome, slot, seq, shared} with outcome "new", "renewed" or "shared".
local meta, free, busy, holders_key, visitors, seen, stats, visits, starts =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9]
if redis.call('HGET', meta, 'version') ~= ARGV[1] then
  return {'resync'}
end
local now = tonumber(ARGV[2])
local expires = now + tonumber(ARGV[3])
local visitor, visit, mode = ARGV[4], ARGV[5], ARGV[8]

local function read_holders(slot)
  local raw = redis.call('HGET', holders_key, slot)
  if not raw then return {} end
  return cjson.decode(raw)
end

local function write_holders(slot, list)
  if #list == 0 then
    redis.call('HDEL', holders_key, slot)
  else
    redis.call('HSET', holders_key, slot, cjson.encode(list))
  end
end

local function forget(h, slot)
  if redis.call('HGET', visitors, h.v) == slot then redis.call('HDEL', visitors, h.v) end
  if redis.call('HGET', visits, h.s) == slot then redis.call('HDEL', visits, h.s) end
end

local function start(seq, slot, shared)
  redis.call('HSET', starts, seq, cjson.encode(
    {n = tonumber(slot), s = visit, v = visitor, t = now, e = expires, sh = shared}))
end

-- A slot whose every lease has expired goes back to the free set, released at its expiry.
-- Only a lease call needs free slots; a heartbeat (renew) skips this.
local expired = {}
if mode ~= 'renew' then
  expired = redis.call('ZRANGEBYSCORE', busy, '-inf', '(' .. now, 'LIMIT', 0, tonumber(ARGV[7]))
end
for _, slot in ipairs(expired) do
  local released_at = redis.call('ZSCORE', busy, slot)
  for _, h in ipairs(read_holders(slot)) do forget(h, slot) end
  redis.call('HDEL', holders_key, slot)
  redis.call('ZREM', busy, slot)
  redis.call('ZADD', free, released_at, slot)
  redis.call('HINCRBY', stats, 'released', 1)
end

-- Keep: the visit (renew) or the visitor (lease) holding a live lease keeps its slot.
local held
if mode == 'renew' then
  held = redis.call('HGET', visits, visit)
else
  held = redis.call('HGET', visitors, visitor)
end
if held then
  local list = read_holders(held)
  local mine = nil
  for i, h in ipairs(list) do
    if (mode == 'renew' and h.s == visit) or (mode ~= 'renew' and h.v == visitor) then mine = i end
  end
  if mine and list[mine].e >= now then
    local h = list[mine]
    local outcome = 'renewed'
    if h.s ~= visit then
      -- The same visitor started a new visit: the old lease ends now, a new one starts.
      redis.call('HSET', seen, h.l, now .. ':' .. now)
      redis.call('HDEL', visits, h.s)
      h.l = redis.call('HINCRBY', meta, 'seq', 1)
      h.s = visit
      outcome = 'new'
      redis.call('HSET', visits, visit, held)
      redis.call('HINCRBY', stats, 'leases', 1)
    end
    h.e = expires
    write_holders(held, list)
    redis.call('ZADD', busy, 'GT', expires, held)
    local shared = 0
    if #list > 1 then shared = 1 end
    if outcome == 'new' then
      start(h.l, held, shared)
    else
      redis.call('HSET', seen, h.l, now .. ':' .. expires)
    end
    return {outcome, held, h.l, shared}
  end
  -- Stale: the lease lapsed while another sharer kept the slot alive.
  if mine then
    forget(list[mine], held)
    table.remove(list, mine)
    write_holders(held, list)
  end
end
if mode == 'renew' then
  return {'lost'}
end

local function take(slot, outcome, shared)
  local seq = redis.call('HINCRBY', meta, 'seq', 1)
  local list = read_holders(slot)
  table.insert(list, {l = seq, v = visitor, s = visit, e = expires})
  write_holders(slot, list)
  redis.call('ZADD', busy, 'GT', expires, slot)
  redis.call('HSET', visitors, visitor, slot)
  redis.call('HSET', visits, visit, slot)
  redis.call('HINCRBY', stats, 'leases', 1)
  local in_use = redis.call('ZCARD', busy)
  if in_use > tonumber(redis.call('HGET', stats, 'peak') or '0') then
    redis.call('HSET', stats, 'peak', in_use)
  end
  start(seq, slot, shared)
  return {outcome, slot, seq, shared}
end

local picked = redis.call('ZRANGE', free, 0, 0)
if #picked > 0 then
  redis.call('ZREM', free, picked[1])
  return take(picked[1], 'new', 0)
end

if ARGV[6] == 'share' then
  -- Overflow: share the slot whose holders were active least recently.
  local victim = redis.call('ZRANGE', busy, 0, 0)
  if #victim > 0 then
    redis.call('HINCRBY', stats, 'overflow_share', 1)
    return take(victim[1], 'shared', 1)
  end
end
redis.call('HINCRBY', stats, 'overflow_fallback', 1)
return {'fallback'}
