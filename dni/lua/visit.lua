-- A site's visit in one atomic step: start or continue a visit and lease its numbers, touch it
-- and renew its leases on a heartbeat, or attach an event to it. Every key lives under the
-- site's hash tag {site:ID}; keys built here from KEYS[1]'s prefix share its Cluster slot.
-- Loaded after lease.lua, which dni.store.Scripts wraps as `lease_slot(KEYS, ARGV)`.
-- Keys under the prefix P = "dni:{site:ID}:":
--   P.."visit:"..id     JSON state {visit, visitor, fingerprint, pools, static, url, pages}
--                       or {"next": id} once a newer visit of the same visitor replaced it
--   P.."visitor:"..vid  the visitor's current visit id
--   P.."seen"           hash visit -> JSON {t, p, u}: heartbeats waiting for SQL
--   P.."rows"           hash visit -> JSON visit row waiting for SQL
--   P.."events"         hash event id -> JSON event waiting for SQL
--   P.."rate:"..ip      new visits started from one address in the current window
--   P.."net:"..network  new visits started from one network (/24, /48) in the current window
--   P.."pool:"..id..":"..name   a pool's keys, as lease.lua lists them
-- KEYS[1] P (any key name; only its prefix up to the tag is used)
-- ARGV[1] mode: "start", "touch" or "event"; ARGV[2] now_ms; ARGV[3] ttl seconds
-- start and touch: ARGV[4] pools JSON {pool id: [version, lease_ms, overflow, probation_ms]}
--        of the site's pools, ARGV[5] max_reclaim, ARGV[6] max_sharers
-- start: ARGV[7] visitor, ARGV[8] url, ARGV[9] fingerprint, ARGV[10] "1" when the URL is
--        tagged, ARGV[11] new state JSON, ARGV[12] new visit row JSON, ARGV[13] ip,
--        ARGV[14] rate limit, ARGV[15] rate window seconds, ARGV[16] the address's network,
--        ARGV[17] network rate limit
--        -> {"continue" | "new", state, leases...} | {"limited"}
-- touch: ARGV[7] visit id, ARGV[8] url ("" keeps the page) -> {"ok", state, leases...} | {"gone"}
--        A visit replaced by a newer one, or whose lease lapsed, leases again.
-- event: ARGV[4] visit id, ARGV[5] event id, ARGV[6] event JSON -> {"ok"} | {"gone"}
-- leases: one {pool id, outcome, slot, seq} per pool of the state that ARGV[4] names; outcome
--        as lease_slot returns it.
-- Either mode first checks that Redis holds each pool it would lease at ARGV[4]'s version; if
-- not it changes nothing and returns {"resync", "", {pool id, "resync", 0, 0}...}: the caller
-- rebuilds those pools and calls again, leaving out of ARGV[4] any it could not rebuild.
local P = KEYS[1]
local mode, now, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
-- The site's pools, decoded once per call (start and touch only: ARGV[4] is the visit id of an
-- event).
local SPEC = nil
if mode ~= 'event' then SPEC = cjson.decode(ARGV[4]) end
local POOL_KEYS = {'meta', 'free', 'busy', 'holders', 'visitors', 'seen', 'stats', 'visits',
                   'starts', 'probation'}

local function load(id)
  local raw = redis.call('GET', P .. 'visit:' .. id)
  if not raw then return nil end
  return cjson.decode(raw)
end

-- The live state of visit `id`, following "replaced by" links a few hops.
local function follow(id)
  for _ = 1, 3 do
    local state = load(id)
    if not state then return nil end
    if not state['next'] then return state end
    id = state['next']
  end
  return nil
end

local function save(state, url)
  if url ~= '' and url ~= state.url then
    state.url = url
    state.pages = state.pages + 1
  end
  local encoded = cjson.encode(state)
  redis.call('SET', P .. 'visit:' .. state.visit, encoded, 'EX', ttl)
  redis.call('EXPIRE', P .. 'visitor:' .. state.visitor, ttl)
  redis.call('HSET', P .. 'seen', state.visit,
    cjson.encode({t = now, p = state.pages, u = state.url}))
  return encoded
end

-- Pools of `list` (ids) that ARGV[4] names but Redis does not hold at that version, as
-- "resync" replies; nil when there are none.
local function resync(list)
  local reply = {'resync', ''}
  for _, pool in ipairs(list) do
    local spec = SPEC[tostring(pool)]
    if spec and redis.call('HGET', P .. 'pool:' .. pool .. ':meta', 'version') ~= spec[1] then
      table.insert(reply, {pool, 'resync', 0, 0})
    end
  end
  if #reply > 2 then return reply end
  return nil
end

-- Lease (or, with renew, only extend) one slot in each of the state's pools; a renew that
-- finds the visit's lease gone leases anew. Appends {pool, outcome, slot, seq} to `reply`.
local function lease_pools(state, renew, reply)
  -- Lua's cjson reads an empty JSON list as an empty table either way.
  for _, pool in ipairs(state.pools) do
    local spec = SPEC[tostring(pool)]
    if spec then
      local keys = {}
      for i, name in ipairs(POOL_KEYS) do keys[i] = P .. 'pool:' .. pool .. ':' .. name end
      local function call(how)
        return lease_slot(keys, {spec[1], now, spec[2], state.visitor, state.visit, spec[3],
                                 ARGV[5], how, spec[4], ARGV[6]})
      end
      local result = {'lost'}
      if renew then result = call('renew') end
      if result[1] == 'lost' then result = call('lease') end
      table.insert(reply, {pool, result[1], result[2] or 0, result[3] or 0})
    end
  end
  return reply
end

if mode == 'touch' then
  local state = follow(ARGV[7])
  if not state then return {'gone'} end
  local stale = resync(state.pools)
  if stale then return stale end
  local encoded = save(state, ARGV[8])
  return lease_pools(state, state.visit == ARGV[7], {'ok', encoded})
end

if mode == 'event' then
  if not follow(ARGV[4]) then return {'gone'} end
  redis.call('HSET', P .. 'events', ARGV[5], ARGV[6])
  return {'ok'}
end

-- start
local visitor, url = ARGV[7], ARGV[8]
local current = redis.call('GET', P .. 'visitor:' .. visitor)
local state = nil
if current then state = follow(current) end
local continuing = state and (ARGV[10] ~= '1' or state.fingerprint == ARGV[9])
local fresh = cjson.decode(ARGV[11])
local stale = resync(continuing and state.pools or fresh.pools)
if stale then return stale end
if continuing then
  local encoded = save(state, url)
  return lease_pools(state, false, {'continue', encoded})
end

-- Both counters are checked before either counts: a refused visit costs no budget.
local limits = {{P .. 'rate:' .. ARGV[13], tonumber(ARGV[14])},
                {P .. 'net:' .. ARGV[16], tonumber(ARGV[17])}}
for _, limit in ipairs(limits) do
  if tonumber(redis.call('GET', limit[1]) or '0') >= limit[2] then
    return {'limited'}
  end
end
for _, limit in ipairs(limits) do
  redis.call('INCR', limit[1])
  redis.call('EXPIRE', limit[1], tonumber(ARGV[15]), 'NX')
end

redis.call('SET', P .. 'visit:' .. fresh.visit, ARGV[11], 'EX', ttl)
redis.call('SET', P .. 'visitor:' .. visitor, fresh.visit, 'EX', ttl)
redis.call('HSET', P .. 'rows', fresh.visit, ARGV[12])
if state then
  redis.call('SET', P .. 'visit:' .. state.visit, cjson.encode({next = fresh.visit}), 'EX', ttl)
end
return lease_pools(fresh, false, {'new', ARGV[11]})
