package rediscluster

import "github.com/redis/rueidis"

// The Lua scripts that change the shared state: each runs atomically in Redis, in one round trip. Keys are built
// from the prefix (ARGV[1]) inside the scripts, so these need a standalone Redis (or Sentinel), not a Redis
// Cluster. Times are Redis's own clock (TIME), in milliseconds, so that no decision compares the clocks of two
// machines.
//
// Keys, under the prefix:
//
//	epoch        string  a random id, written once: if it disappears or changes, Redis lost its data
//	node:<id>    string  the node's incarnation (random per process start), with the lease as its expiry
//	nodes        zset    node ids scored by the end of their lease
//	n:<id>       set     the names held by sessions of node <id> (read in chunks by the node's cleanup pass)
//	u:<name>     hash    node, inc, sid, tok (SHA-256 of the resume token), peer, cid (caller id), idx (its
//	                     member of idx), orph (end of the resume grace, only once its node is gone)
//	idx          zset    all scores 0; members "<folded name>\0<name>", in list order
//	orphans      zset    names of gone nodes' users, scored by the end of their resume grace
//	pv           string  a counter bumped by every change a user list can show (a name listed or unlisted, a
//	                     busy flag changed): nodes with watched lists poll it (PresenceVersion)
//
// A record counts as live while node:<its node> holds its inc. A record of a node whose lease ran out may be
// taken over with its token (a resume on another node) until its grace ends, then by anyone.

const luaNow = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`

// claimScript: ARGV prefix, name, idx member, node, inc, sid, token hash presented ("" for none), new token
// hash, caller id. Returns {"claimed"}, {"taken"}, or {"resumed", old node, old sid, peer, peer node, peer sid,
// caller id}.
var claimScript = rueidis.NewLuaScript(luaNow + `
local p, name = ARGV[1], ARGV[2]
local ukey = p .. 'u:' .. name
local rec = redis.call('HMGET', ukey, 'node', 'inc', 'sid', 'tok', 'peer', 'cid', 'orph', 'idx')
local function fresh()
  if rec[1] then
    redis.call('SREM', p .. 'n:' .. rec[1], name)
    if rec[8] then redis.call('ZREM', p .. 'idx', rec[8]) end
    redis.call('DEL', ukey)
  end
  redis.call('HSET', ukey, 'node', ARGV[4], 'inc', ARGV[5], 'sid', ARGV[6], 'tok', ARGV[8], 'peer', '',
    'cid', ARGV[9], 'idx', ARGV[3])
  redis.call('SADD', p .. 'n:' .. ARGV[4], name)
  redis.call('ZADD', p .. 'idx', 0, ARGV[3])
  redis.call('ZREM', p .. 'orphans', name)
  redis.call('INCR', p .. 'pv')
  return {'claimed'}
end
if not rec[1] then return fresh() end
local live = redis.call('GET', p .. 'node:' .. rec[1]) == rec[2]
if not live then
  local orph = tonumber(rec[7])
  if orph and orph <= now then return fresh() end
end
if ARGV[7] == '' or ARGV[7] ~= rec[4] then return {'taken'} end
local peer, pnode, psid = rec[5] or '', '', ''
if peer ~= '' then
  local pr = redis.call('HMGET', p .. 'u:' .. peer, 'node', 'sid')
  pnode, psid = pr[1] or '', pr[2] or ''
end
redis.call('SREM', p .. 'n:' .. rec[1], name)
redis.call('HSET', ukey, 'node', ARGV[4], 'inc', ARGV[5], 'sid', ARGV[6])
redis.call('HDEL', ukey, 'orph')
redis.call('ZREM', p .. 'orphans', name)
redis.call('SADD', p .. 'n:' .. ARGV[4], name)
return {'resumed', rec[1], rec[3] or '', peer, pnode, psid, rec[6] or '0'}
`)

// releaseScript: ARGV prefix, name, node, sid. Deletes the record if that session still holds it.
var releaseScript = rueidis.NewLuaScript(`
local p, name = ARGV[1], ARGV[2]
local ukey = p .. 'u:' .. name
local r = redis.call('HMGET', ukey, 'node', 'sid', 'idx')
if r[1] ~= ARGV[3] or r[2] ~= ARGV[4] then return 0 end
redis.call('DEL', ukey)
redis.call('SREM', p .. 'n:' .. ARGV[3], name)
if r[3] then redis.call('ZREM', p .. 'idx', r[3]) end
redis.call('ZREM', p .. 'orphans', name)
redis.call('INCR', p .. 'pv')
return 1
`)

// setPeerScript: ARGV prefix, name, node, sid, peer.
var setPeerScript = rueidis.NewLuaScript(`
local ukey = ARGV[1] .. 'u:' .. ARGV[2]
local r = redis.call('HMGET', ukey, 'node', 'sid', 'peer')
if r[1] ~= ARGV[3] or r[2] ~= ARGV[4] then return 0 end
redis.call('HSET', ukey, 'peer', ARGV[5])
if ((r[3] or '') ~= '') ~= (ARGV[5] ~= '') then redis.call('INCR', ARGV[1] .. 'pv') end
return 1
`)

// locateScript: ARGV prefix, name. Returns {node, sid} of a live record, or {}. It only reads, but is sent as
// EVALSHA like the others, not as EVALSHA_RO (Redis 7.0 and later): tandem runs on Redis 6.2.
var locateScript = rueidis.NewLuaScript(`
local p = ARGV[1]
local r = redis.call('HMGET', p .. 'u:' .. ARGV[2], 'node', 'inc', 'sid', 'orph')
if not r[1] or r[4] then return {} end
if redis.call('GET', p .. 'node:' .. r[1]) ~= r[2] then return {} end
return {r[1], r[3]}
`)

// listScript: ARGV prefix, folded prefix, limit. Returns {total, more (0/1), name, busy (0/1), ...}. Sent as
// EVALSHA (see locateScript).
var listScript = rueidis.NewLuaScript(`
local p, limit = ARGV[1], tonumber(ARGV[3])
local m = redis.call('ZRANGE', p .. 'idx', '[' .. ARGV[2], '[' .. ARGV[2] .. '\255', 'BYLEX', 'LIMIT', 0, limit + 1)
local out = {redis.call('ZCARD', p .. 'idx'), 0}
if #m > limit then out[2] = 1 end
for i = 1, math.min(#m, limit) do
  local name = string.sub(m[i], string.find(m[i], '\0', 1, true) + 1)
  local peer = redis.call('HGET', p .. 'u:' .. name, 'peer')
  out[#out + 1] = name
  if peer and peer ~= '' then out[#out + 1] = 1 else out[#out + 1] = 0 end
end
return out
`)

// heartbeatScript: ARGV prefix, node, inc, lease ms, a new epoch (used if there is none). Renews the node's
// lease; returns {epoch, held}: held is 1 when the lease was still this incarnation's, 0 when it had run out
// (or another incarnation had it), in which case this node must register its users again.
var heartbeatScript = rueidis.NewLuaScript(luaNow + `
local p, node, inc = ARGV[1], ARGV[2], ARGV[3]
local epoch = redis.call('GET', p .. 'epoch')
if not epoch then
  redis.call('SET', p .. 'epoch', ARGV[5])
  epoch = ARGV[5]
end
local held = 0
if redis.call('GET', p .. 'node:' .. node) == inc then held = 1 end
redis.call('SET', p .. 'node:' .. node, inc, 'PX', ARGV[4])
redis.call('ZADD', p .. 'nodes', now + tonumber(ARGV[4]), node)
return {epoch, held}
`)

// registerScript: ARGV prefix, name, idx member, node, inc, sid, token hash, caller id, peer. Puts a user of this
// node back in the shared state (after it was lost, or the node's lease ran out): returns 1, or 0 when the name
// is held by another session (live, or in its resume grace): then this node's session gives way.
var registerScript = rueidis.NewLuaScript(luaNow + `
local p, name = ARGV[1], ARGV[2]
local ukey = p .. 'u:' .. name
local r = redis.call('HMGET', ukey, 'node', 'inc', 'sid', 'orph', 'idx')
if r[1] and r[3] ~= ARGV[6] then
  local live = redis.call('GET', p .. 'node:' .. r[1]) == r[2]
  local orph = tonumber(r[4])
  if live or not orph or orph > now then return 0 end
end
if r[1] then
  redis.call('SREM', p .. 'n:' .. r[1], name)
  if r[5] then redis.call('ZREM', p .. 'idx', r[5]) end
end
redis.call('HSET', ukey, 'node', ARGV[4], 'inc', ARGV[5], 'sid', ARGV[6], 'tok', ARGV[7], 'peer', ARGV[9],
  'cid', ARGV[8], 'idx', ARGV[3])
redis.call('HDEL', ukey, 'orph')
redis.call('SADD', p .. 'n:' .. ARGV[4], name)
redis.call('ZADD', p .. 'idx', 0, ARGV[3])
redis.call('ZREM', p .. 'orphans', name)
redis.call('INCR', p .. 'pv')
return 1
`)

// sweepScript: ARGV prefix, grace ms. Marks the users of nodes whose lease ran out as orphans (their resume
// grace starts), forgets those nodes, and deletes the orphans whose grace is over. Any node may run it, any
// number of times: it is idempotent. Returns the live nodes' ids.
var sweepScript = rueidis.NewLuaScript(luaNow + `
local p, grace = ARGV[1], tonumber(ARGV[2])
for _, d in ipairs(redis.call('ZRANGEBYSCORE', p .. 'nodes', '-inf', now)) do
  if redis.call('EXISTS', p .. 'node:' .. d) == 0 then
    for _, name in ipairs(redis.call('SMEMBERS', p .. 'n:' .. d)) do
      local ukey = p .. 'u:' .. name
      local r = redis.call('HMGET', ukey, 'node', 'orph')
      if r[1] == d and not r[2] then
        redis.call('HSET', ukey, 'orph', now + grace)
        redis.call('ZADD', p .. 'orphans', now + grace, name)
      end
    end
    redis.call('DEL', p .. 'n:' .. d)
    redis.call('ZREM', p .. 'nodes', d)
  end
end
for _, name in ipairs(redis.call('ZRANGEBYSCORE', p .. 'orphans', '-inf', now)) do
  local ukey = p .. 'u:' .. name
  local r = redis.call('HMGET', ukey, 'node', 'inc', 'orph', 'idx')
  local orph = tonumber(r[3])
  if r[1] and orph and orph <= now and redis.call('GET', p .. 'node:' .. r[1]) ~= r[2] then
    redis.call('DEL', ukey)
    redis.call('SREM', p .. 'n:' .. r[1], name)
    if r[4] then redis.call('ZREM', p .. 'idx', r[4]) end
    redis.call('INCR', p .. 'pv')
  end
  redis.call('ZREM', p .. 'orphans', name)
end
return redis.call('ZRANGEBYSCORE', p .. 'nodes', now, '+inf')
`)

// leaveScript: ARGV prefix, node, inc, release (1/0). A node leaving: its lease ends now; with release, its
// users' names are freed at once (a clean shutdown), else they become orphans with their resume grace (a drain).
var leaveScript = rueidis.NewLuaScript(luaNow + `
local p, node, inc = ARGV[1], ARGV[2], ARGV[3]
if redis.call('GET', p .. 'node:' .. node) ~= inc then return 0 end
if ARGV[4] == '1' then
  for _, name in ipairs(redis.call('SMEMBERS', p .. 'n:' .. node)) do
    local ukey = p .. 'u:' .. name
    local r = redis.call('HMGET', ukey, 'node', 'inc', 'idx')
    if r[1] == node and r[2] == inc then
      redis.call('DEL', ukey)
      if r[3] then redis.call('ZREM', p .. 'idx', r[3]) end
      redis.call('ZREM', p .. 'orphans', name)
      redis.call('INCR', p .. 'pv')
    end
  end
  redis.call('DEL', p .. 'n:' .. node)
  redis.call('ZREM', p .. 'nodes', node)
  redis.call('DEL', p .. 'node:' .. node)
else
  redis.call('DEL', p .. 'node:' .. node)
  redis.call('ZADD', p .. 'nodes', now - 1, node)
end
return 1
`)

// cleanupScanScript: ARGV prefix, node, cursor, count. One step of an SSCAN of n:<node>, with each name's
// session: returns {next cursor, name, sid, ...}, sid "" when the name's record is not this node's (gone, or
// taken over by another node): a stale member of the set. Read-only; sent as EVAL (cleanup.go).
const cleanupScanScript = `
local p, node = ARGV[1], ARGV[2]
local res = redis.call('SSCAN', p .. 'n:' .. node, ARGV[3], 'COUNT', ARGV[4])
local out = {res[1]}
for _, name in ipairs(res[2]) do
  local r = redis.call('HMGET', p .. 'u:' .. name, 'node', 'sid')
  out[#out + 1] = name
  if r[1] == node and r[2] then out[#out + 1] = r[2] else out[#out + 1] = '' end
end
return out
`

// cleanupScript: ARGV prefix, node, then pairs of name and sid. Frees each name whose record is still this
// node's and still held by that sid (the hub found no session of it: Local.Orphans), as releaseScript does; a
// pair whose sid is "" only drops the name from n:<node> if its record is not this node's. Returns how many
// records it deleted. Sent as EVAL (cleanup.go).
const cleanupScript = `
local p, node = ARGV[1], ARGV[2]
local set = p .. 'n:' .. node
local freed = 0
for i = 3, #ARGV - 1, 2 do
  local name, sid = ARGV[i], ARGV[i + 1]
  local ukey = p .. 'u:' .. name
  local r = redis.call('HMGET', ukey, 'node', 'sid', 'idx')
  if r[1] ~= node then
    redis.call('SREM', set, name)
  elseif sid ~= '' and r[2] == sid then
    redis.call('DEL', ukey)
    redis.call('SREM', set, name)
    if r[3] then redis.call('ZREM', p .. 'idx', r[3]) end
    redis.call('ZREM', p .. 'orphans', name)
    redis.call('INCR', p .. 'pv')
    freed = freed + 1
  end
end
return freed
`

// holdersScript: ARGV prefix, then names. For each name, the node and session id its record has: returns {node,
// sid, ...}, both "" when there is no record. Read-only; sent as EVAL (cleanup.go: the check of this node's own
// users).
const holdersScript = `
local p = ARGV[1]
local out = {}
for i = 2, #ARGV do
  local r = redis.call('HMGET', p .. 'u:' .. ARGV[i], 'node', 'sid')
  out[#out + 1] = r[1] or ''
  out[#out + 1] = r[2] or ''
end
return out
`
