-- Lease a slot of one pool to a visit, or renew the visitor's lease: one atomic step.
-- KEYS[1] meta     hash: version (of the active slot set), seq (last lease number)
-- KEYS[2] free     zset: slot -> when it was last released (ms); lowest = least recently
-- KEYS[3] busy     zset: slot -> when its newest holder's lease expires (ms)
-- KEYS[4] holders  hash: slot -> JSON list of {l = lease seq, v = visitor, s = visit, e = expiry}
-- KEYS[5] visitors hash: visitor -> slot it holds
-- KEYS[6] seen     hash: lease seq -> "last_seen_ms:expires_ms", drained to SQL in batches
-- KEYS[7] stats    hash: counters (leases, renewals, released, overflow_fallback, ...)
-- ARGV: version, now_ms, lease_ms, visitor, visit, overflow ("fallback" | "share"), max_reclaim
-- Returns {"resync"} when the pool must be (re)built from SQL first; {"fallback"} when the
-- pool is exhausted; otherwise {outcome, slot, seq, shared, ended_seq} with outcome one of
-- "new", "renewed", "shared" and ended_seq the visitor's previous lease (0 if none ended).
local meta, free, busy, holders_key, visitors, seen, stats =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
if redis.call('HGET', meta, 'version') ~= ARGV[1] then
  return {'resync'}
end
local now = tonumber(ARGV[2])
local expires = now + tonumber(ARGV[3])
local visitor, visit = ARGV[4], ARGV[5]

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

-- A slot whose every lease has expired goes back to the free set, released at its expiry.
local expired = redis.call('ZRANGEBYSCORE', busy, '-inf', '(' .. now, 'LIMIT', 0, tonumber(ARGV[7]))
for _, slot in ipairs(expired) do
  local released_at = redis.call('ZSCORE', busy, slot)
  for _, h in ipairs(read_holders(slot)) do
    if redis.call('HGET', visitors, h.v) == slot then
      redis.call('HDEL', visitors, h.v)
    end
  end
  redis.call('HDEL', holders_key, slot)
  redis.call('ZREM', busy, slot)
  redis.call('ZADD', free, released_at, slot)
  redis.call('HINCRBY', stats, 'released', 1)
end

-- Sticky: a visitor holding a live lease keeps its slot.
local held = redis.call('HGET', visitors, visitor)
if held then
  local list = read_holders(held)
  local mine = nil
  for i, h in ipairs(list) do
    if h.v == visitor then mine = i end
  end
  if mine and list[mine].e >= now then
    local h = list[mine]
    local outcome, ended = 'renewed', 0
    if h.s ~= visit then
      -- The same visitor started a new visit: the old lease ends now, a new one starts.
      redis.call('HSET', seen, h.l, now .. ':' .. now)
      ended = h.l
      h.l = redis.call('HINCRBY', meta, 'seq', 1)
      h.s = visit
      outcome = 'new'
      redis.call('HINCRBY', stats, 'leases', 1)
    else
      redis.call('HINCRBY', stats, 'renewals', 1)
    end
    h.e = expires
    redis.call('HSET', seen, h.l, now .. ':' .. expires)
    write_holders(held, list)
    redis.call('ZADD', busy, 'GT', expires, held)
    local shared = 0
    if #list > 1 then shared = 1 end
    return {outcome, held, h.l, shared, ended}
  end
  -- Stale: the lease lapsed while another sharer kept the slot alive.
  redis.call('HDEL', visitors, visitor)
  if mine then
    table.remove(list, mine)
    write_holders(held, list)
  end
end

local function take(slot, outcome, shared)
  local seq = redis.call('HINCRBY', meta, 'seq', 1)
  local list = read_holders(slot)
  table.insert(list, {l = seq, v = visitor, s = visit, e = expires})
  write_holders(slot, list)
  redis.call('ZADD', busy, 'GT', expires, slot)
  redis.call('HSET', visitors, visitor, slot)
  redis.call('HINCRBY', stats, 'leases', 1)
  local in_use = redis.call('ZCARD', busy)
  if in_use > tonumber(redis.call('HGET', stats, 'peak') or '0') then
    redis.call('HSET', stats, 'peak', in_use)
  end
  return {outcome, slot, seq, shared, 0}
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
