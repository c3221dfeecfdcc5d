-- Take everything from a hash of pending updates and empty it, atomically, so that several
-- flushers (one per web worker) never write the same update twice or lose one.
-- KEYS[1] the hash; no ARGV. Returns HGETALL's flat list.
local all = redis.call('HGETALL', KEYS[1])
if #all > 0 then
  redis.call('DEL', KEYS[1])
end
return all
