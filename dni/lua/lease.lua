-- Lease a slot of one pool to a visit, or renew the visit's lease: one atomic step.
-- KEYS[1] meta      hash: version (of the active slot set), seq (last lease number)
-- KEYS[2] free      zset: slot -> when it was last released (ms); lowest = least recently
-- KEYS[3] busy      zset: slot -> when its newest holder's lease expires (ms)
-- KEYS[4] holders   hash: slot -> JSON list of {l = lease seq, v = visitor, s = visit,
--                   e = expiry, p = 1 while on probation}
-- KEYS[5] visitors  hash: visitor -> slot it holds
-- KEYS[6] seen      hash: lease seq -> "last_seen_ms:expires_ms", drained to SQL in batches
-- KEYS[7] stats     hash: counters (leases, released, peak, evicted, overflow_fallback,
--                   overflow_share)
-- KEYS[8] visits    hash: visit -> slot it holds
-- KEYS[9] starts    hash: lease seq -> JSON lease start, removed once it is in SQL
-- KEYS[10] probation zset: slot -> start (ms) of its only holder's lease while that lease is
--                   on probation (not renewed by a heartbeat yet); at most one entry per slot
-- ARGV: version, now_ms, lease_ms, visitor, visit, overflow ("fallback" | "share"),
--       max_reclaim, mode ("lease": keep or take a slot; "renew": only extend a held one),
--       probation_ms (how long a new lease has to heartbeat before it may be taken back),
--       max_sharers (holders per slot)
-- A new lease is on probation until its first renew, the page's heartbeat. A new visit that
-- finds no free slot takes the slot of the oldest lease still on probation after
-- probation_ms, before any overflow: leases that never heartbeat hold a pool only while
-- nobody else needs it, and heartbeating visits are never evicted.
-- Returns {"resync"} when the pool must be (re)built from SQL first, {"lost"} when mode is
-- "renew" and the visit holds nothing, {"fallback"} when the pool is exhausted; otherwise
-- {outcome, slot, seq, shared} with outcome "new", "renewed" or "shared".
local meta, free, busy, holders_key, visitors, seen, stats, visits, starts, probation =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10]
if redis.call('HGET', meta, 'version') ~= ARGV[1] then
  return {'resync'}
end
local now = tonumber(ARGV[2])
local expires = now + tonumber(ARGV[3])
local visitor, visit, mode = ARGV[4], ARGV[5], ARGV[8]
local unproven_before, max_sharers = now - tonumber(ARGV[9]), tonumber(ARGV[10])

local function forget(h, slot)
  if redis.call('HGET', visitors, h.v) == slot then redis.call('HDEL', visitors, h.v) end
  if redis.call('HGET', visits, h.s) == slot then redis.call('HDEL', visits, h.s) end
end

-- A slot's live holders; expired ones are dropped (and forgotten) on every read, so a slot
-- kept busy by sharers never accumulates them.
local function read_holders(slot)
  local raw = redis.call('HGET', holders_key, slot)
  if not raw then return {} end
  local live = {}
  for _, h in ipairs(cjson.decode(raw)) do
    if h.e >= now then table.insert(live, h) else forget(h, slot) end
  end
  return live
end

-- Store a slot's holders; busy then holds the newest expiry among them.
local function write_holders(slot, list)
  if #list == 0 then
    redis.call('HDEL', holders_key, slot)
    return
  end
  local newest = 0
  for _, h in ipairs(list) do
    if h.e > newest then newest = h.e end
  end
  redis.call('HSET', holders_key, slot, cjson.encode(list))
  redis.call('ZADD', busy, newest, slot)
end

-- End a holder's lease now (it was taken back), in Redis and, via seen, in SQL.
local function evict(h, slot)
  forget(h, slot)
  redis.call('HSET', seen, h.l, now .. ':' .. now)
  redis.call('HINCRBY', stats, 'evicted', 1)
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
  read_holders(slot)  -- forgets them all: every one has expired
  redis.call('HDEL', holders_key, slot)
  redis.call('ZREM', busy, slot)
  redis.call('ZREM', probation, slot)
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
  if mine then
    local h = list[mine]
    local outcome = 'renewed'
    if mode == 'renew' and h.p then
      -- The page heartbeats: the lease is off probation and can no longer be taken back.
      h.p = nil
      redis.call('ZREM', probation, held)
    end
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
    local shared = 0
    if #list > 1 then shared = 1 end
    if outcome == 'new' then
      start(h.l, held, shared)
    else
      redis.call('HSET', seen, h.l, now .. ':' .. h.e)
    end
    return {outcome, held, h.l, shared}
  end
  -- Stale: the lease lapsed while another sharer kept the slot alive (read_holders forgot it).
  write_holders(held, list)
end
if mode == 'renew' then
  return {'lost'}
end

-- Give `slot` to this visit on probation, after `list` (its other live holders).
local function take(slot, list, outcome)
  local seq = redis.call('HINCRBY', meta, 'seq', 1)
  local shared = 0
  if #list > 0 then shared = 1 end
  table.insert(list, {l = seq, v = visitor, s = visit, e = expires, p = 1})
  write_holders(slot, list)
  if shared == 0 then
    redis.call('ZADD', probation, now, slot)
  else
    redis.call('ZREM', probation, slot)  -- a shared slot is never taken back whole
  end
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
  return take(picked[1], {}, 'new')
end

-- No free slot: take back the slot of the oldest lease that had its chance to heartbeat.
local unproven = redis.call('ZRANGEBYSCORE', probation, '-inf', unproven_before, 'LIMIT', 0, 1)
if #unproven > 0 then
  local slot = unproven[1]
  redis.call('ZREM', probation, slot)
  for _, h in ipairs(read_holders(slot)) do evict(h, slot) end
  redis.call('HDEL', holders_key, slot)
  return take(slot, {}, 'new')
end

if ARGV[6] == 'share' then
  -- Overflow: share the slot whose holders were active least recently, making room in it by
  -- ending the lease that would expire first.
  local victim = redis.call('ZRANGE', busy, 0, 0)
  if #victim > 0 then
    local slot = victim[1]
    local list = read_holders(slot)
    if #list >= max_sharers then
      table.sort(list, function(a, b) return a.e < b.e end)
      evict(list[1], slot)
      table.remove(list, 1)
    end
    if #list == 0 then return take(slot, list, 'new') end  -- expired, not reclaimed yet
    redis.call('HINCRBY', stats, 'overflow_share', 1)
    return take(slot, list, 'shared')
  end
end
redis.call('HINCRBY', stats, 'overflow_fallback', 1)
return {'fallback'}
