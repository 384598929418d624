/**
 * The Redis backend's Lua scripts: each runs atomically, so an event is
 * stored and sent or neither, an epoch starts once, and a read sees one
 * consistent snapshot of several topics. Key and message formats: docs/redis.md.
 */
import type { Redis } from 'ioredis'

/** Redis server time in ms, as every script reads it. */
const NOW_MS = `
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
`

// Every script that may start an epoch takes these keys first:
// KEYS[1] epoch, [2] seq, [3] clock (zset time -> seq), [4] clock-last,
// [5] tops (zset topic -> its last seq, plus the member LF..epoch at +inf).
// A new epoch starts ids at 1 with an empty clock and no topic marks; topic
// streams are per epoch ({P}:t:<epoch>:<topic>), so nothing of the old
// history can be read as the new one's. tops holds a copy of the epoch and,
// as its highest finite score, the last seq handed out: an evicted epoch or
// seq key is restored from it instead of costing a new epoch.
const NEW_EPOCH = NOW_MS + `
local function new_epoch(epoch, now)
  redis.call('SET', KEYS[1], epoch)
  redis.call('SET', KEYS[2], 0)
  redis.call('DEL', KEYS[3], KEYS[4], KEYS[5])
  redis.call('ZADD', KEYS[3], now, 0)
  redis.call('ZADD', KEYS[5], '+inf', '\\n' .. epoch)
end
-- The epoch, restored from tops if only its key is gone; nil if both are.
local function get_epoch()
  local e = redis.call('GET', KEYS[1])
  if e then return e end
  local m = redis.call('ZRANGEBYSCORE', KEYS[5], '+inf', '+inf', 'LIMIT', 0, 1)
  if #m == 0 then return nil end
  e = string.sub(m[1], 2)
  redis.call('SET', KEYS[1], e)
  return e
end
-- The last seq handed out, restored from tops if only its key is gone; -1 if both are.
local function get_seq()
  local s = redis.call('GET', KEYS[2])
  if s then return tonumber(s) end
  if redis.call('EXISTS', KEYS[5]) == 0 then return -1 end
  local top = redis.call('ZREVRANGEBYSCORE', KEYS[5], '(+inf', '-inf', 'WITHSCORES', 'LIMIT', 0, 1)
  local seq = 0
  if #top > 0 then seq = tonumber(top[2]) end
  redis.call('SET', KEYS[2], seq)
  return seq
end
`

// KEYS: the five above, then [6] the topic stream
// ARGV: expected epoch, candidate epoch, event, data, channel, maxlen, ttl ms
//   (the stream's expiry after this publish, and each entry's deadline; a
//   negative ttl is a channel's own: the topic expires whole, |ttl| after its
//   last event, and entries get no deadline of their own),
//   pubsub channel, topic, the highest seq the caller has seen in its epoch,
//   mark ttl ms (the longest ttl of any channel, 0 if one keeps events
//   forever: how long topic marks and clock samples must be kept)
// Returns { seq, epoch }; seq 0 means "the epoch is not yours": switch to it and retry.
const PUBLISH_EVENT = NEW_EPOCH + `
local function publish_event()
local now = now_ms()
local e = get_epoch()
if not e then
  -- Flushed or replaced: a new history.
  new_epoch(ARGV[2], now)
  return {0, ARGV[2]}
end
if e ~= ARGV[1] then return {0, e} end
local seq = get_seq()
if seq < 0 or seq < tonumber(ARGV[10]) then
  -- The store went backwards inside the epoch (failover to a lagging
  -- replica, an older snapshot, an evicted seq): the next ids were already
  -- handed out. Start a new epoch, once: callers still on the old one are
  -- told to switch by the check above.
  new_epoch(ARGV[2], now)
  return {0, ARGV[2]}
end
local ttl = tonumber(ARGV[7])
local keyttl = math.abs(ttl)
local markttl = tonumber(ARGV[11])
local fresh = redis.call('EXISTS', KEYS[6]) == 0
local bound = 0
if fresh then
  -- The key may have held events that are gone (expired after ttl, or
  -- evicted): resumes from below the last of them must get reset.
  local last = redis.call('ZSCORE', KEYS[5], ARGV[9])
  if last then
    bound = tonumber(last)
  elseif redis.call('EXISTS', KEYS[5]) == 0 then
    -- The marks themselves are gone (evicted): nothing below the head is known.
    bound = seq
  elseif markttl > 0 then
    local s = redis.call('ZRANGEBYSCORE', KEYS[3], now - markttl, '+inf', 'LIMIT', 0, 1)
    if #s > 0 then bound = tonumber(s[1]) else bound = seq end
  end
end
seq = redis.call('INCR', KEYS[2])
-- XADD's own MAXLEN trimming does not move max-deleted-entry-id (Redis 7.0),
-- so find what this append pushes out and record it: resumes from below it
-- must get reset, never a partial replay.
local maxlen = tonumber(ARGV[6])
local maxdel = 0
if fresh then maxdel = bound end
local len = redis.call('XLEN', KEYS[6])
if len > 0 and len >= maxlen then
  local cut = redis.call('XRANGE', KEYS[6], '-', '+', 'COUNT', len - maxlen + 1)
  maxdel = tonumber(string.match(cut[#cut][1], '^(%d+)'))
end
local deadline = 0
if ttl > 0 then deadline = now + ttl end
redis.call('XADD', KEYS[6], 'MAXLEN', maxlen, seq .. '-0', 'e', ARGV[3], 'd', ARGV[4], 'c', ARGV[5], 't', now, 'x', deadline)
if maxlen == 0 then maxdel = seq end
if maxdel > 0 then
  if maxdel > seq then maxdel = seq end
  redis.call('XSETID', KEYS[6], seq .. '-0', 'MAXDELETEDID', maxdel .. '-0')
end
redis.call('ZADD', KEYS[5], seq, ARGV[9])
if keyttl > 0 then
  redis.call('PEXPIRE', KEYS[6], keyttl)
else
  redis.call('PERSIST', KEYS[6])
end
if markttl > 0 then
  local last = tonumber(redis.call('GET', KEYS[4]) or '0')
  if now - last >= 1000 then
    redis.call('SET', KEYS[4], now)
    redis.call('ZADD', KEYS[3], now, seq)
    redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - markttl - 60000)
    -- A topic whose last event is older than a sample taken the longest
    -- ttl ago has expired as a whole: its mark is no longer needed.
    local old = redis.call('ZREVRANGEBYSCORE', KEYS[3], now - markttl, '-inf', 'LIMIT', 0, 1)
    if #old > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', '(' .. old[1]) end
  end
end
redis.call('PUBLISH', ARGV[8], e .. '\\n' .. seq .. '\\n' .. ARGV[9] .. '\\n' .. ARGV[5] .. '\\n' .. ARGV[3] .. '\\n' .. ARGV[4])
return {seq, e}
end
`

const PUBLISH = PUBLISH_EVENT + `
return publish_event()
`

// Runs (fastify.sse.run). A run's record {P}:run:<topic> is a hash: token,
// state (running | ended), channel, lost (the data of the end event the
// sweeper publishes if the owner dies); {P}:leases ranks running runs' topics
// by lease expiry (ms, Redis time).

// KEYS: the five epoch keys, [6] the topic stream, [7] the run record;
// ARGV: as PUBLISH, then [12] the run's token.
// Returns { -1, '' } when the run is not running under that token (fenced).
const PUBLISH_RUN = PUBLISH_EVENT + `
local r = redis.call('HMGET', KEYS[7], 'token', 'state')
if r[1] ~= ARGV[12] or r[2] ~= 'running' then return {-1, ''} end
local res = publish_event()
if res[1] > 0 then redis.call('HSETNX', KEYS[7], 'first', res[1]) end
return res
`

// KEYS: as PUBLISH_RUN, then [8] leases, [9] the runs notice channel (a
// pub/sub channel, passed as a key so the script declares everything it touches).
// ARGV: as PUBLISH (event 'end', its data), then [12] the run's token ('' for
// any), [13] the reason told to the owner ('' for none), [14] the record's
// ttl ms after the end (0: no expiry). Ends the run and publishes its end,
// atomically; { -1, '' } when it was not running (under that token).
const END_RUN = PUBLISH_EVENT + `
local r = redis.call('HMGET', KEYS[7], 'token', 'state')
if r[2] ~= 'running' or (ARGV[12] ~= '' and r[1] ~= ARGV[12]) then return {-1, ''} end
local res = publish_event()
if res[1] > 0 then
  redis.call('HSET', KEYS[7], 'state', 'ended', 'by', ARGV[13])
  redis.call('ZREM', KEYS[8], ARGV[9])
  local keep = tonumber(ARGV[14])
  if keep > 0 then redis.call('PEXPIRE', KEYS[7], keep) else redis.call('PERSIST', KEYS[7]) end
  if ARGV[13] ~= '' then redis.call('PUBLISH', KEYS[9], ARGV[9] .. '\\n' .. r[1] .. '\\n' .. ARGV[13]) end
end
return res
`

// KEYS: [1] the run record, [2] leases. ARGV: topic, token, channel, lost data, lease ms.
// Returns 1 when the run is claimed, 0 when one is still running.
const BEGIN_RUN = NOW_MS + `
if redis.call('HGET', KEYS[1], 'state') == 'running' then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'token', ARGV[2], 'state', 'running', 'channel', ARGV[3], 'lost', ARGV[4])
redis.call('ZADD', KEYS[2], now_ms() + tonumber(ARGV[5]), ARGV[1])
return 1
`

// KEYS: [1] leases, then one run record per topic. ARGV: lease ms, then per
// topic: topic, token. Extends the lease of each run still running under its
// token; returns, per topic, 1 (renewed) or 0 (ended or taken: stop it).
const RENEW_RUNS = NOW_MS + `
local until_ms = now_ms() + tonumber(ARGV[1])
local out = {}
for k = 2, #KEYS do
  local topic = ARGV[2 * (k - 1)]
  local r = redis.call('HMGET', KEYS[k], 'token', 'state')
  if r[1] == ARGV[2 * (k - 1) + 1] and r[2] == 'running' then
    redis.call('ZADD', KEYS[1], 'XX', until_ms, topic)
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
`

// KEYS: [1] leases. ARGV: prefix-tagged run key head ('{P}:run:'), claim ms, at most how many.
// Claims runs whose lease expired (pushes their lease by the claim time, so
// one instance at a time ends each) and returns { topic, token, channel, lost } each.
const SWEEP_RUNS = NOW_MS + `
local now = now_ms()
local out = {}
for _, topic in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))) do
  local r = redis.call('HMGET', ARGV[1] .. topic, 'token', 'state', 'channel', 'lost')
  if r[2] ~= 'running' then
    redis.call('ZREM', KEYS[1], topic)
  else
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), topic)
    out[#out + 1] = {topic, r[1], r[3], r[4]}
  end
end
return out
`

// KEYS: the five above. ARGV: candidate epoch. Creates the epoch if there is
// none; returns { epoch, seq } (seq -1: the seq key and tops are gone: the
// next publish starts a new epoch).
const INIT = NEW_EPOCH + `
local e = get_epoch()
if not e then
  new_epoch(ARGV[1], now_ms())
  e = ARGV[1]
end
return {e, get_seq()}
`

// KEYS: the five above. ARGV: the epoch to leave, candidate epoch.
// Starts a new epoch only if Redis is still on the one to leave (or has
// none), so whichever instance notices first wins and the rest adopt its
// epoch. Returns the epoch Redis is on.
const SWITCH = NEW_EPOCH + `
local e = get_epoch()
if not e or e == ARGV[1] then
  new_epoch(ARGV[2], now_ms())
  return ARGV[2]
end
return e
`

// KEYS: epoch, seq, clock, tops, then one stream key per topic
// ARGV: expected epoch, after seq, ttl ms (of entries without their own
// deadline), then the topic names (as in tops), then the mark ttl (as PUBLISH's)
// Returns {'epoch'} | {'trimmed', head} | {'ok', head, entries of topic 1, entries of topic 2, ...}
// One script, so one consistent snapshot of every topic: nothing is
// published between the reads of two topics.
const READ = NOW_MS + `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {'epoch'} end
local after = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])
local markttl = tonumber(ARGV[#ARGV])
local head = tonumber(redis.call('GET', KEYS[2]) or '0')
local now = now_ms()
local out = {'ok', head}
for k = 5, #KEYS do
  local key = KEYS[k]
  if redis.call('EXISTS', key) == 0 then
    -- No key: never published, or gone (expired ttl after its last publish,
    -- or evicted). Its mark in tops is its last seq; without marks at all,
    -- nothing below the head is known; else any event it held was published
    -- before now - ttl, so at or below the first clock sample after that.
    local bound = 0
    local last = redis.call('ZSCORE', KEYS[4], ARGV[k - 1])
    if last then
      bound = tonumber(last)
    elseif redis.call('EXISTS', KEYS[4]) == 0 then
      bound = head
    elseif markttl > 0 then
      local s = redis.call('ZRANGEBYSCORE', KEYS[3], now - markttl, '+inf', 'LIMIT', 0, 1)
      if #s > 0 then bound = tonumber(s[1]) else bound = head end
    end
    if after < bound then return {'trimmed', head} end
    out[#out + 1] = {}
  else
    local info = redis.call('XINFO', 'STREAM', key)
    local maxdel = '0-0'
    for i = 1, #info, 2 do
      if info[i] == 'max-deleted-entry-id' then maxdel = info[i + 1] end
    end
    if after < tonumber(string.match(maxdel, '^(%d+)')) then return {'trimmed', head} end
    local entries = redis.call('XRANGE', key, '(' .. after .. '-0', '+')
    if #entries > 0 then
      -- The first entry after the id is past its deadline (its channel's
      -- ttl; entries written without one: the plugin's): it is gone.
      local fields = entries[1][2]
      local at, deadline = nil, nil
      for i = 1, #fields, 2 do
        if fields[i] == 't' then at = tonumber(fields[i + 1]) end
        if fields[i] == 'x' then deadline = tonumber(fields[i + 1]) end
      end
      if deadline == nil and ttl > 0 and at ~= nil then deadline = at + ttl end
      if deadline ~= nil and deadline > 0 and deadline <= now then return {'trimmed', head} end
    end
    out[#out + 1] = entries
  end
end
return out
`

/** The scripts as ioredis commands on the command connection. */
export interface Scripts {
  sseInit: (...args: string[]) => Promise<[string, number]>
  ssePublish: (...args: Array<string | number>) => Promise<[number, string]>
  sseRead: (...args: Array<string | number>) => Promise<[string, number?, ...Array<Array<[string, string[]]>>]>
  sseSwitch: (...args: string[]) => Promise<string>
  ssePublishRun: (...args: Array<string | number>) => Promise<[number, string]>
  sseEndRun: (...args: Array<string | number>) => Promise<[number, string]>
  sseBeginRun: (...args: Array<string | number>) => Promise<number>
  sseRenewRuns: (...args: Array<string | number>) => Promise<number[]>
  sseSweepRuns: (...args: Array<string | number>) => Promise<Array<[string, string, string, string]>>
}

/** Defines the scripts on `cmd` (once per connection). */
export function defineScripts (cmd: Redis): Redis & Scripts {
  const scripts = cmd as Redis & Scripts
  if (typeof scripts.sseSweepRuns !== 'function') {
    cmd.defineCommand('ssePublish', { numberOfKeys: 6, lua: PUBLISH })
    cmd.defineCommand('sseRead', { lua: READ })
    cmd.defineCommand('sseInit', { numberOfKeys: 5, lua: INIT })
    cmd.defineCommand('sseSwitch', { numberOfKeys: 5, lua: SWITCH })
    cmd.defineCommand('ssePublishRun', { numberOfKeys: 7, lua: PUBLISH_RUN })
    cmd.defineCommand('sseEndRun', { numberOfKeys: 9, lua: END_RUN })
    cmd.defineCommand('sseBeginRun', { numberOfKeys: 2, lua: BEGIN_RUN })
    cmd.defineCommand('sseRenewRuns', { lua: RENEW_RUNS })
    cmd.defineCommand('sseSweepRuns', { numberOfKeys: 1, lua: SWEEP_RUNS })
  }
  return scripts
}
