-- A site's visit state in one atomic step: start or continue a visit, touch it on a heartbeat,
-- or attach an event to it. Every key lives under the site's hash tag {site:ID}; keys built
-- here from KEYS[1]'s prefix share its Cluster slot.
-- Keys under the prefix P = "dni:{site:ID}:":
--   P.."visit:"..id     JSON state {visit, visitor, fingerprint, pools, static, url, pages}
--                       or {"next": id} once a newer visit of the same visitor replaced it
--   P.."visitor:"..vid  the visitor's current visit id
--   P.."seen"           hash visit -> JSON {t, p, u}: heartbeats waiting for SQL
--   P.."rows"           hash visit -> JSON visit row waiting for SQL
--   P.."events"         hash event id -> JSON event waiting for SQL
--   P.."rate:"..ip      new visits started from one address in the current window
--   P.."net:"..network  new visits started from one network (/24, /48) in the current window
-- KEYS[1] P (any key name; only its prefix up to the tag is used)
-- ARGV[1] mode: "start", "touch" or "event"; ARGV[2] now_ms; ARGV[3] ttl seconds
-- start: ARGV[4] visitor, ARGV[5] url, ARGV[6] fingerprint, ARGV[7] "1" when the URL is
--        tagged, ARGV[8] new state JSON, ARGV[9] new visit row JSON, ARGV[10] ip,
--        ARGV[11] rate limit, ARGV[12] rate window seconds, ARGV[13] the address's network,
--        ARGV[14] network rate limit
--        -> {"continue", state} | {"new", state} | {"limited"}
-- touch: ARGV[4] visit id, ARGV[5] url ("" keeps the page) -> {"ok", state} | {"gone"}
-- event: ARGV[4] visit id, ARGV[5] event id, ARGV[6] event JSON -> {"ok"} | {"gone"}
local P = KEYS[1]
local mode, now, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])

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

if mode == 'touch' then
  local state = follow(ARGV[4])
  if not state then return {'gone'} end
  return {'ok', save(state, ARGV[5])}
end

if mode == 'event' then
  if not follow(ARGV[4]) then return {'gone'} end
  redis.call('HSET', P .. 'events', ARGV[5], ARGV[6])
  return {'ok'}
end

-- start
local visitor, url = ARGV[4], ARGV[5]
local current = redis.call('GET', P .. 'visitor:' .. visitor)
local state = nil
if current then state = follow(current) end
if state and (ARGV[7] ~= '1' or state.fingerprint == ARGV[6]) then
  return {'continue', save(state, url)}
end

-- Both counters are checked before either counts: a refused visit costs no budget.
local limits = {{P .. 'rate:' .. ARGV[10], tonumber(ARGV[11])},
                {P .. 'net:' .. ARGV[13], tonumber(ARGV[14])}}
for _, limit in ipairs(limits) do
  if tonumber(redis.call('GET', limit[1]) or '0') >= limit[2] then
    return {'limited'}
  end
end
for _, limit in ipairs(limits) do
  redis.call('INCR', limit[1])
  redis.call('EXPIRE', limit[1], tonumber(ARGV[12]), 'NX')
end

local fresh = cjson.decode(ARGV[8])
redis.call('SET', P .. 'visit:' .. fresh.visit, ARGV[8], 'EX', ttl)
redis.call('SET', P .. 'visitor:' .. visitor, fresh.visit, 'EX', ttl)
redis.call('HSET', P .. 'rows', fresh.visit, ARGV[9])
if state then
  redis.call('SET', P .. 'visit:' .. state.visit, cjson.encode({next = fresh.visit}), 'EX', ttl)
end
return {'new', ARGV[8]}
