"""The Lua scripts of the Redis backend: each runs atomically inside Redis.

Pub/sub payloads start with one byte naming the event:
    m<head JSON>\n<data JSON>   head = [seq, ts, user, client_id, ref or ""]
    j<[user, client_id]>        presence join
    l<[user, client_id]>        presence leave
    b<[user, client_id]>\n<raw bytes>   binary relay
    c<[action, user or null]>   kick a user's connections, or close the room
History entries (one Redis Stream per room, entry id ``<seq>-0``) hold
``h`` = [seq, ts, user, client_id] and ``d`` = the data JSON.
"""

# KEYS: seq, history, channel. ARGV: user, client_id, ref, data, history size, TTL (ms).
# One script, so no two messages share a seq, and history order is publish order.
# A room forgets its history and seq after the TTL without messages.
PUBLISH = """
local seq = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
local now = redis.call('TIME')
local ts = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
if tonumber(ARGV[5]) > 0 then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], seq .. '-0',
             'h', cjson.encode({seq, ts, ARGV[1], ARGV[2]}), 'd', ARGV[4])
  redis.call('PEXPIRE', KEYS[2], ARGV[6])
end
local head = cjson.encode({seq, ts, ARGV[1], ARGV[2], ARGV[3]})
redis.call('PUBLISH', KEYS[3], 'm' .. head .. '\\n' .. ARGV[4])
return seq
"""

# KEYS: presence, node members, channel. ARGV: client_id, user, node id, item id.
# Idempotent: re-registering a member after Redis lost its data announces it only
# if it was missing.
JOIN = """
redis.call('HSET', KEYS[2], ARGV[4] .. '\\n' .. ARGV[1], ARGV[2])
if redis.call('HSET', KEYS[1], ARGV[1], cjson.encode({ARGV[2], ARGV[3]})) == 1 then
  redis.call('PUBLISH', KEYS[3], 'j' .. cjson.encode({ARGV[2], ARGV[1]}))
  return 1
end
return 0
"""

# KEYS: presence, node members, channel. ARGV: client_id, user, item id.
LEAVE = """
redis.call('HDEL', KEYS[2], ARGV[3] .. '\\n' .. ARGV[1])
if redis.call('HDEL', KEYS[1], ARGV[1]) == 1 then
  redis.call('PUBLISH', KEYS[3], 'l' .. cjson.encode({ARGV[2], ARGV[1]}))
  return 1
end
return 0
"""

# Remove every member of a node that stopped heart-beating, with a leave event each.
# KEYS: node set, node heartbeat, node members. ARGV: node id, key prefix, force.
# SREM makes it happen once however many nodes notice; keys of rooms are derived
# here, so this backend needs a single Redis (not Redis Cluster).
REAP = """
if ARGV[3] ~= '1' and redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
if redis.call('SREM', KEYS[1], ARGV[1]) == 0 and ARGV[3] ~= '1' then return -1 end
local entries = redis.call('HGETALL', KEYS[3])
local count = 0
for i = 1, #entries, 2 do
  local sep = string.find(entries[i], '\\n', 1, true)
  local item = string.sub(entries[i], 1, sep - 1)
  local cid = string.sub(entries[i], sep + 1)
  if redis.call('HDEL', ARGV[2] .. 'presence:' .. item, cid) == 1 then
    redis.call('PUBLISH', ARGV[2] .. 'room:' .. item,
               'l' .. cjson.encode({entries[i + 1], cid}))
    count = count + 1
  end
end
redis.call('DEL', KEYS[3])
return count
"""

# KEYS: seq. ARGV: a seq this process has seen. After Redis lost its data (a restart
# without persistence), never hand out a seq that members have already seen.
RESEED = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1])
  return 1
end
return 0
"""
