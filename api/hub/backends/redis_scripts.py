"""The Lua scripts of the Redis backend: each runs atomically inside Redis.

Per room (``<prefix><kind>:<item_id>``):
    meta       hash: ``e`` the epoch, ``s`` the latest seq. One key, so a Redis that
               lost the seq lost the epoch with it, and the next script to touch the
               room starts a new epoch: a seq can never be reused under an old epoch.
    history    Stream, entry id ``<seq>-0``: ``h`` = [seq, ts, user, client_id, ref, id]
               (ref for the sender's ack after a gap fill; "" when none) and ``d`` = data.
    presence   hash client_id -> [user, node].
    ucount     hash user -> connections, and ``users``, a sorted set of the same users
               (score 0, so ordered by name): who is in the room, one entry per user,
               paged by name for HTTP presence without reading the whole room.
    dedup      ``dedup:<item_id>\\n<id>\\n<user>`` -> "epoch\\nseq\\nts\\nclient_id", one
               key per publish id, expiring after the dedup window.
Pub/sub payloads on the room's channel start with one byte naming the event:
    m<epoch>\\n<head JSON>\\n<data JSON>   head = [seq, ts, user, client_id, ref, id]
    j<[user, client_id]>        presence join
    l<[user, client_id]>        presence leave
    b<[user, client_id]>\\n<raw bytes>   binary relay
    c<[action, user or null]>   kick a user's connections, or close the room
"""

# Starts a new epoch for a room whose meta is gone (or whose seq went backwards): a
# new name (the caller's node id and Redis' clock, so never one used before), the old
# epoch's history dropped, and numbering continued after ``floor`` (the highest seq
# the caller delivered), so that v1 clients resuming without an epoch see a gap.
_NEW_EPOCH = """
local function new_epoch(meta, history, node, floor, ttl)
  local now = redis.call('TIME')
  local e = node .. string.format('%x%05x', tonumber(now[1]), tonumber(now[2]))
  redis.call('DEL', history)
  redis.call('HSET', meta, 'e', e, 's', floor)
  redis.call('PEXPIRE', meta, ttl)
  return e
end
"""

# KEYS: meta, history, channel, dedup key (meta again when no id), closed mark.
# ARGV: user, client_id, ref, data, history size, TTL (ms), id ('' for none),
#       dedup window (ms), node, floor.
# Returns {0, seq, epoch} for a new message, {1, seq, epoch, ts, client_id, data
# or false} when the id was already published in this epoch (nothing is written),
# or {2} when the item is closed (nothing is written).
PUBLISH = (
    _NEW_EPOCH
    + """
if redis.call('EXISTS', KEYS[5]) == 1 then return {2} end
local e = redis.call('HGET', KEYS[1], 'e')
if not e then e = new_epoch(KEYS[1], KEYS[2], ARGV[9], ARGV[10], ARGV[6]) end
local id = ARGV[7]
if id ~= '' then
  local prior = redis.call('GET', KEYS[4])
  if prior then
    local pe, ps, pts, pcid = string.match(prior, '^(.-)\\n(%d+)\\n(%d+)\\n(.*)$')
    if pe == e then
      local found = redis.call('XRANGE', KEYS[2], ps .. '-0', ps .. '-0')
      local data = false
      if found[1] then data = found[1][2][4] end
      return {1, tonumber(ps), e, tonumber(pts), pcid, data}
    end
  end
end
local seq = redis.call('HINCRBY', KEYS[1], 's', 1)
redis.call('PEXPIRE', KEYS[1], ARGV[6])
local now = redis.call('TIME')
local ts = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local head = cjson.encode({seq, ts, ARGV[1], ARGV[2], ARGV[3], id})
if tonumber(ARGV[5]) > 0 then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], seq .. '-0', 'h', head, 'd', ARGV[4])
  redis.call('PEXPIRE', KEYS[2], ARGV[6])
end
if id ~= '' then
  redis.call('SET', KEYS[4], e .. '\\n' .. seq .. '\\n' .. ts .. '\\n' .. ARGV[2], 'PX', ARGV[8])
end
redis.call('PUBLISH', KEYS[3], 'm' .. e .. '\\n' .. head .. '\\n' .. ARGV[4])
return {0, seq, e}
"""
)

# KEYS: meta, history, presence. ARGV: node, floor, TTL (ms), since (-1: no replay),
# the client's epoch ('' for none), page size, '1' to read presence.
# Returns {epoch, seq, presence as a flat list (empty unless asked)} without a replay,
# else {epoch, seq, presence, recovered (0/1), first page of entries}. Presence is read
# once per process and room (at subscribe), never per join: a room can be large.
SNAPSHOT = (
    _NEW_EPOCH
    + """
local e = redis.call('HGET', KEYS[1], 'e')
if not e then e = new_epoch(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3]) end
local seq = tonumber(redis.call('HGET', KEYS[1], 's'))
local presence = {}
if ARGV[7] == '1' then presence = redis.call('HGETALL', KEYS[3]) end
local since = tonumber(ARGV[4])
if since < 0 then return {e, seq, presence} end
local recovered = 1
if since > seq or (ARGV[5] ~= '' and ARGV[5] ~= e) then
  since = 0
  recovered = 0
end
if recovered == 1 and since < seq then
  local oldest = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
  local oldest_seq = seq + 1
  if oldest[1] then oldest_seq = tonumber(string.match(oldest[1][1], '^(%d+)')) end
  if since + 1 < oldest_seq then recovered = 0 end
end
local page = {}
if since < seq and tonumber(ARGV[6]) > 0 then
  page = redis.call('XRANGE', KEYS[2], (since + 1) .. '-0', seq .. '-0', 'COUNT', ARGV[6])
end
return {e, seq, presence, recovered, page}
"""
)

# KEYS: meta, history. ARGV: epoch, after, upto, page size.
# A page of history, or nil when the room is no longer in that epoch.
HISTORY = """
if redis.call('HGET', KEYS[1], 'e') ~= ARGV[1] then return nil end
return redis.call('XRANGE', KEYS[2], (tonumber(ARGV[2]) + 1) .. '-0', ARGV[3] .. '-0',
                  'COUNT', ARGV[4])
"""

# KEYS: meta, history. ARGV: the epoch and the highest seq this process delivered,
# node, TTL (ms). After a reconnect: the room's epoch and seq, starting a new epoch if
# the meta is gone (Redis came back empty) or its seq is below what was delivered (Redis
# came back from an older snapshot, or an AOF that missed the last writes).
RESYNC = (
    _NEW_EPOCH
    + """
local e = redis.call('HGET', KEYS[1], 'e')
local seq = tonumber(redis.call('HGET', KEYS[1], 's') or '0')
if not e or (e == ARGV[1] and seq < tonumber(ARGV[2])) then
  return {new_epoch(KEYS[1], KEYS[2], ARGV[3], ARGV[2], ARGV[4]), tonumber(ARGV[2])}
end
return {e, seq}
"""
)

# KEYS: node heartbeat, node set. ARGV: TTL (ms), node id.
# 1 when this node was not registered: it was reaped (its heartbeat lapsed) or Redis
# lost its data. Either way its members must be registered again.
HEARTBEAT = """
redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
return redis.call('SADD', KEYS[2], ARGV[2])
"""

# KEYS: presence, node members, channel, ucount, users. ARGV: client_id, user, node
# id, item id. Idempotent: re-registering a member after Redis lost its data announces
# it only if it was missing. O(log N): nothing of the room is read.
JOIN = """
redis.call('HSET', KEYS[2], ARGV[4] .. '\\n' .. ARGV[1], ARGV[2])
if redis.call('HSET', KEYS[1], ARGV[1], cjson.encode({ARGV[2], ARGV[3]})) == 1 then
  if redis.call('HINCRBY', KEYS[4], ARGV[2], 1) == 1 then
    redis.call('ZADD', KEYS[5], 0, ARGV[2])
  end
  redis.call('PUBLISH', KEYS[3], 'j' .. cjson.encode({ARGV[2], ARGV[1]}))
  return 1
end
return 0
"""

# One connection of ``user`` is gone from ucount and users (its presence entry was).
_USER_LEFT = """
local function user_left(ucount, users, user)
  if redis.call('HINCRBY', ucount, user, -1) <= 0 then
    redis.call('HDEL', ucount, user)
    redis.call('ZREM', users, user)
  end
end
"""

# KEYS: presence, node members, channel, ucount, users. ARGV: client_id, user, item id.
LEAVE = (
    _USER_LEFT
    + """
redis.call('HDEL', KEYS[2], ARGV[3] .. '\\n' .. ARGV[1])
if redis.call('HDEL', KEYS[1], ARGV[1]) == 1 then
  user_left(KEYS[4], KEYS[5], ARGV[2])
  redis.call('PUBLISH', KEYS[3], 'l' .. cjson.encode({ARGV[2], ARGV[1]}))
  return 1
end
return 0
"""
)

# KEYS: users, ucount. ARGV: after ('' from the start), limit.
# {user count, {user, connections, ...}} for at most ``limit`` users after ``after``.
PRESENCE = """
local low = '-'
if ARGV[1] ~= '' then low = '(' .. ARGV[1] end
local names = redis.call('ZRANGE', KEYS[1], low, '+', 'BYLEX', 'LIMIT', 0, ARGV[2])
local page = {}
for i, name in ipairs(names) do
  page[2 * i - 1] = name
  page[2 * i] = tonumber(redis.call('HGET', KEYS[2], name) or '0')
end
return {redis.call('ZCARD', KEYS[1]), page}
"""

# Remove every member of a node that stopped heart-beating, with a leave event each.
# KEYS: node set, node heartbeat, node members. ARGV: node id, key prefix, force.
# SREM makes it happen once however many nodes notice; keys of rooms are derived
# here, so this backend needs a single Redis (not Redis Cluster).
REAP = (
    _USER_LEFT
    + """
if ARGV[3] ~= '1' and redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
if redis.call('SREM', KEYS[1], ARGV[1]) == 0 and ARGV[3] ~= '1' then return -1 end
local entries = redis.call('HGETALL', KEYS[3])
local count = 0
for i = 1, #entries, 2 do
  local sep = string.find(entries[i], '\\n', 1, true)
  local item = string.sub(entries[i], 1, sep - 1)
  local cid = string.sub(entries[i], sep + 1)
  if redis.call('HDEL', ARGV[2] .. 'presence:' .. item, cid) == 1 then
    user_left(ARGV[2] .. 'ucount:' .. item, ARGV[2] .. 'users:' .. item, entries[i + 1])
    redis.call('PUBLISH', ARGV[2] .. 'room:' .. item,
               'l' .. cjson.encode({entries[i + 1], cid}))
    count = count + 1
  end
end
redis.call('DEL', KEYS[3])
return count
"""
)
