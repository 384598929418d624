/**
 * The Redis backend: one hub across processes and machines.
 *
 * Per publish, ONE Lua script takes the next id (INCR), appends the event to
 * its topic's Stream (exact MAXLEN, TTL), and PUBLISHes it: atomic, so an
 * event is either stored and sent or neither, and ids come in one order
 * across every instance. Each instance holds one subscription per topic
 * with local subscribers and delivers what Redis sends, in the order Redis
 * sends it. History is read with XRANGE after the client's id; whether
 * anything after it was trimmed is exact (Redis 7 `max-deleted-entry-id`).
 * An id never names two events: when Redis shows a seq below what this
 * instance handed out or saw (a failover to a lagging replica, an older
 * snapshot), a new epoch starts, once, whichever instance notices first.
 * Publishes are bounded in time and the subscriber connection is probed.
 * See docs/redis.md for the key and message formats and what each
 * deployment guarantees.
 */
import { Redis, type RedisOptions } from 'ioredis'
import { mergeBySeq, type Backend, type BackendHost, type BackendStats, type HistoryLimits, type HistoryRead, type HubEvent } from '../backend.js'
import { formatId, newEpoch } from '../ids.js'
import {
  FST_ERR_SSEHUB_BACKEND_TIMEOUT, FST_ERR_SSEHUB_BACKEND_UNAVAILABLE, FST_ERR_SSEHUB_OPTION_INVALID,
  FST_ERR_SSEHUB_PUBLISH_NOT_REPLICATED, FST_ERR_SSEHUB_REDIS_UNREACHABLE
} from '../errors.js'

/** Options of `redisBackend()`. */
export interface RedisBackendOptions {
  /**
   * Where Redis is (`redis://`, `rediss://` for TLS, with user and password
   * for ACLs). Ignored when `redis` is given.
   * @default 'redis://127.0.0.1:6379'
   */
  url?: string
  /**
   * An ioredis client to use for commands instead of opening one. The plugin
   * opens one more connection for subscriptions (`redis.duplicate()`), and
   * closes only that one.
   */
  redis?: Redis
  /** Extra ioredis options for the connections the plugin opens (TLS, Sentinel, timeouts). */
  redisOptions?: RedisOptions
  /**
   * Prefix of every key and pub/sub channel, so several apps share a Redis.
   * Letters, digits, `_ . : -`. Keys carry it as a hash tag (`{prefix}`).
   * @default 'sse'
   */
  prefix?: string
  /**
   * The longest a publish waits for Redis (the script, and the replicas'
   * acknowledgement under `durable`), in ms. Past it the publish is refused
   * with `FST_ERR_SSEHUB_BACKEND_TIMEOUT` (503); the event may still be
   * published once Redis answers. Also how long the subscriber connection
   * may leave a liveness probe unanswered before the stall is reported.
   * (History reads are not bounded by it; ioredis's own `commandTimeout`
   * in `redisOptions` would bound every command.)
   * @default 2000
   */
  commandTimeout?: number
  /**
   * How often the subscriber connection is probed (a `PING`, which Redis
   * answers in subscribed mode), in ms. A probe unanswered for
   * `commandTimeout` is a stall: `stats().backend.connected` turns false,
   * one warning is logged, publishes are refused at once, and when Redis
   * answers again every stream catches up from history. A stall is reported
   * at most `probeInterval + commandTimeout` after it began. 0 turns probing off.
   * @default 1000
   */
  probeInterval?: number
  /**
   * How long `register()` (the backend's start) waits for Redis, in ms,
   * before failing with `FST_ERR_SSEHUB_REDIS_UNREACHABLE`, which names the
   * address and the last connection error. Keep it under Fastify's
   * `pluginTimeout` (10 s by default).
   * @default 5000
   */
  startTimeout?: number
  /**
   * Durable publish: a publish resolves only once `replicas` replicas
   * acknowledged it (Redis `WAIT`, at most `timeout` ms), else it is refused
   * with `FST_ERR_SSEHUB_PUBLISH_NOT_REPLICATED` (503), although the event is
   * stored on the primary and may have been delivered. With Sentinel, an
   * acknowledged event survives the failover to any replica that
   * acknowledged it. `timeout` must be below `commandTimeout`.
   * @default undefined (a publish resolves once the primary ran it)
   */
  durable?: { replicas: number, timeout?: number }
}

const PREFIX = /^[A-Za-z0-9_.:-]{1,64}$/
/** Reconnect backoff: 50 ms, 100 ms, ... up to 2 s, forever. */
const retryStrategy = (attempt: number): number => Math.min(attempt * 50, 2_000)

// Every script that may start an epoch takes these keys first:
// KEYS[1] epoch, [2] seq, [3] clock (zset time -> seq), [4] clock-last,
// [5] tops (zset topic -> its last seq, plus the member LF..epoch at +inf).
// A new epoch starts ids at 1 with an empty clock and no topic marks; topic
// streams are per epoch ({P}:t:<epoch>:<topic>), so nothing of the old
// history can be read as the new one's. tops holds a copy of the epoch and,
// as its highest finite score, the last seq handed out: an evicted epoch or
// seq key is restored from it instead of costing a new epoch.
const NEW_EPOCH = `
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
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
// ARGV: expected epoch, candidate epoch, event, data, channel, maxlen, ttl ms,
//   pubsub channel, topic, the highest seq the caller has seen in its epoch
// Returns { seq, epoch }; seq 0 means "the epoch is not yours": switch to it and retry.
const PUBLISH = NEW_EPOCH + `
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
  elseif ttl > 0 then
    local s = redis.call('ZRANGEBYSCORE', KEYS[3], now - ttl, '+inf', 'LIMIT', 0, 1)
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
redis.call('XADD', KEYS[6], 'MAXLEN', maxlen, seq .. '-0', 'e', ARGV[3], 'd', ARGV[4], 'c', ARGV[5], 't', now)
if maxlen == 0 then maxdel = seq end
if maxdel > 0 then
  if maxdel > seq then maxdel = seq end
  redis.call('XSETID', KEYS[6], seq .. '-0', 'MAXDELETEDID', maxdel .. '-0')
end
redis.call('ZADD', KEYS[5], seq, ARGV[9])
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[6], ttl)
  local last = tonumber(redis.call('GET', KEYS[4]) or '0')
  if now - last >= 1000 then
    redis.call('SET', KEYS[4], now)
    redis.call('ZADD', KEYS[3], now, seq)
    redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - ttl - 60000)
    -- A topic whose last event is older than a sample taken ttl ago has
    -- expired as a whole: its mark is no longer needed.
    local old = redis.call('ZREVRANGEBYSCORE', KEYS[3], now - ttl, '-inf', 'LIMIT', 0, 1)
    if #old > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', '(' .. old[1]) end
  end
end
redis.call('PUBLISH', ARGV[8], e .. '\\n' .. seq .. '\\n' .. ARGV[9] .. '\\n' .. ARGV[5] .. '\\n' .. ARGV[3] .. '\\n' .. ARGV[4])
return {seq, e}
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
// ARGV: expected epoch, after seq, ttl ms, then the topic names (as in tops)
// Returns {'epoch'} | {'trimmed', head} | {'ok', head, entries of topic 1, entries of topic 2, ...}
// One script, so one consistent snapshot of every topic: nothing is
// published between the reads of two topics.
const READ = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {'epoch'} end
local after = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])
local head = tonumber(redis.call('GET', KEYS[2]) or '0')
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
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
    elseif ttl > 0 then
      local s = redis.call('ZRANGEBYSCORE', KEYS[3], now - ttl, '+inf', 'LIMIT', 0, 1)
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
    if ttl > 0 and #entries > 0 then
      local fields = entries[1][2]
      for i = 1, #fields, 2 do
        if fields[i] == 't' and tonumber(fields[i + 1]) <= now - ttl then return {'trimmed', head} end
      end
    end
    out[#out + 1] = entries
  end
end
return out
`

interface Scripts {
  sseInit: (...args: string[]) => Promise<[string, number]>
  ssePublish: (...args: Array<string | number>) => Promise<[number, string]>
  sseRead: (...args: Array<string | number>) => Promise<[string, number?, ...Array<Array<[string, string[]]>>]>
  sseSwitch: (...args: string[]) => Promise<string>
}

/** How many epochs an instance remembers having left: messages still in flight from them are dropped, never followed. */
const RETIRED = 16

/** The Redis backend; see the module note. */
export class RedisBackend implements Backend {
  epoch = ''
  private host: BackendHost | null = null
  private limits: HistoryLimits | null = null
  private cmd: Redis | null = null
  private sub: Redis | null = null
  private readonly ownsCmd: boolean
  private readonly prefix: string
  private readonly keys: { epoch: string, seq: string, clock: string, clockLast: string, tops: string }
  /** Pub/sub channel of a topic -> the promise of its SUBSCRIBE taking effect. */
  private readonly topics = new Map<string, Promise<void>>()
  /** Pattern of a channel's topics -> the promise of its PSUBSCRIBE taking effect. */
  private readonly patterns = new Map<string, Promise<void>>()
  /** The highest seq handed to the hub in this epoch: Redis sends in order, so anything at or below is a repeat. */
  private lastDelivered = 0
  /** The raw message of `lastDelivered`: a topic matched by a subscription and a pattern arrives twice, identical. */
  private lastMessage = ''
  /**
   * The highest seq this instance published, delivered or read as the head
   * in this epoch. Redis showing a lower one means it went backwards: those
   * ids were handed out, so a new epoch starts.
   */
  private highest = 0
  /** Epochs this instance left, newest last. */
  private readonly retired: string[] = []
  /** A compare-and-set epoch switch in flight, so one noticing starts one. */
  private switching: Promise<void> | null = null
  /** This process's id on the control channel, so it drops its own broadcasts. */
  private readonly instance = newEpoch()
  private readonly controlChannel: string
  private down = false
  private closing = false
  /** The subscriber connection left a probe unanswered: Redis (or the connection) stalls. */
  private stalled = false
  private probeTimer: NodeJS.Timeout | null = null
  /** When the unanswered probe was sent (0: none out). */
  private probeSent = 0
  /** The last connection error, named if start gives up. */
  private lastError: Error | null = null
  private readonly commandTimeout: number
  private readonly probeInterval: number
  private readonly startTimeout: number
  private readonly durable: { replicas: number, timeout: number } | null
  /** The WAIT shared by the durable publishes of one turn. */
  private waitInTurn: Promise<number> | null = null

  constructor (private readonly options: RedisBackendOptions) {
    const prefix = options.prefix ?? 'sse'
    if (!PREFIX.test(prefix)) throw new FST_ERR_SSEHUB_OPTION_INVALID('prefix', 'must be 1 to 64 letters, digits, "_", ".", ":" or "-"')
    this.prefix = prefix
    this.ownsCmd = options.redis === undefined
    const tag = `{${prefix}}`
    this.keys = { epoch: `${tag}:epoch`, seq: `${tag}:seq`, clock: `${tag}:clock`, clockLast: `${tag}:clock-last`, tops: `${tag}:tops` }
    this.controlChannel = `${prefix}:ctl`
    this.commandTimeout = ms('commandTimeout', options.commandTimeout, 2_000, 1)
    this.probeInterval = ms('probeInterval', options.probeInterval, 1_000, 0)
    this.startTimeout = ms('startTimeout', options.startTimeout, 5_000, 1)
    const durable = options.durable
    if (durable === undefined) {
      this.durable = null
    } else {
      if (durable === null || typeof durable !== 'object' || !Number.isSafeInteger(durable.replicas) || durable.replicas < 1) {
        throw new FST_ERR_SSEHUB_OPTION_INVALID('durable', 'must be { replicas: a whole number >= 1, timeout?: ms }')
      }
      const timeout = ms('durable.timeout', durable.timeout, Math.min(500, this.commandTimeout - 1), 1)
      if (timeout >= this.commandTimeout) throw new FST_ERR_SSEHUB_OPTION_INVALID('durable.timeout', `must be below commandTimeout (${this.commandTimeout} ms)`)
      this.durable = { replicas: durable.replicas, timeout }
    }
  }

  /** A topic's history stream in the current epoch: an old epoch's history can never be read as the new one's. */
  private topicKey (topic: string): string {
    return `{${this.prefix}}:t:${this.epoch}:${topic}`
  }

  /** `P:m:<channel>|<topic>`: one channel-wide PSUBSCRIBE (`P:m:<channel>|*`) matches all topics of a channel. */
  private pubsubChannel (topic: string, channel: string): string {
    return `${this.prefix}:m:${channel}|${topic}`
  }

  /** The keys every epoch-starting script takes first. */
  private epochKeys (): string[] {
    const k = this.keys
    return [k.epoch, k.seq, k.clock, k.clockLast, k.tops]
  }

  async start (host: BackendHost, limits: HistoryLimits): Promise<void> {
    this.host = host
    this.limits = limits
    const connection: RedisOptions = {
      retryStrategy,
      // Fail fast while Redis is away: a publish is refused, never queued
      // (a queued one could land after the app gave up on it), and never
      // resent after a reconnect (it may already have run).
      enableOfflineQueue: false,
      autoResendUnfulfilledCommands: false,
      maxRetriesPerRequest: 0,
      // Publishes issued in the same tick go to Redis in one write, so Redis
      // runs them together and sends their messages to every instance in one
      // write too: subscribers get them in one event-loop turn, one socket
      // write each, instead of one per publish.
      enableAutoPipelining: true,
      // No ioredis commandTimeout by default: a history read of a large
      // replay may take longer than a publish may wait, and a timed-out read
      // would cost the stream its catch-up. A publish has its own bound
      // (publish()), which also covers a client passed in as `redis`.
      ...this.options.redisOptions
    }
    const cmd = this.options.redis ?? new Redis(this.options.url ?? 'redis://127.0.0.1:6379', connection)
    this.cmd = cmd
    // Subscriptions are restored by hand after a reconnect, so the hub can
    // catch up from history only once they are in effect. No command
    // timeout here: a timed-out SUBSCRIBE would leave ioredis unsure what
    // the connection follows; liveness is probed instead (probe()).
    const sub = cmd.duplicate({ ...connection, autoResubscribe: false, enableOfflineQueue: true, enableAutoPipelining: false, commandTimeout: undefined })
    this.sub = sub
    const scripts = cmd as unknown as Redis & Scripts
    if (typeof scripts.sseSwitch !== 'function') {
      cmd.defineCommand('ssePublish', { numberOfKeys: 6, lua: PUBLISH })
      cmd.defineCommand('sseRead', { lua: READ })
      cmd.defineCommand('sseInit', { numberOfKeys: 5, lua: INIT })
      cmd.defineCommand('sseSwitch', { numberOfKeys: 5, lua: SWITCH })
    }

    for (const client of [cmd, sub]) {
      client.on('error', (err: Error) => {
        this.lastError = err
        if (!this.down && !this.closing && this.epoch !== '') host.log.error({ err }, 'fastify-sse-hub: redis error')
      })
      client.on('close', () => this.lost())
    }
    sub.on('message', (channel: string, message: string) => {
      if (channel === this.controlChannel) this.onControl(message)
      else this.onMessage(message)
    })
    // A topic followed both exactly and by a channel-wide pattern arrives
    // twice; onMessage drops the second by seq.
    sub.on('pmessage', (_pattern: string, _channel: string, message: string) => this.onMessage(message))
    sub.on('ready', () => { if (this.down) void this.recover() })
    cmd.on('ready', () => { if (this.down) void this.recover() })

    let timer: NodeJS.Timeout | undefined
    const gaveUp = new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => reject(new FST_ERR_SSEHUB_REDIS_UNREACHABLE(this.address(), this.startTimeout, this.lastError?.message ?? 'no answer')), this.startTimeout)
    })
    try {
      await Promise.race([gaveUp, (async () => {
        await Promise.all([ready(cmd), ready(sub)])
        const [epoch, seq] = await scripts.sseInit(...this.epochKeys(), newEpoch())
        this.epoch = epoch
        // The head seen now: Redis later showing less went backwards.
        this.highest = Math.max(seq, 0)
        await sub.subscribe(this.controlChannel)
      })()])
    } catch (err) {
      // Leave nothing reconnecting behind a failed register.
      this.closing = true
      sub.disconnect()
      if (this.ownsCmd) cmd.disconnect()
      throw err
    } finally {
      clearTimeout(timer)
    }
    void this.checkEviction()
    if (this.probeInterval > 0) {
      this.probeTimer = setInterval(() => this.probe(), this.probeInterval)
      this.probeTimer.unref()
    }
  }

  /** Where Redis is, for errors: the URL without its password, or the Sentinels and master name. */
  private address (): string {
    const o = { ...this.options.redis?.options, ...this.options.redisOptions }
    if (Array.isArray(o.sentinels) && o.sentinels.length > 0) {
      return `sentinels ${o.sentinels.map(s => `${s.host ?? '127.0.0.1'}:${s.port ?? 26379}`).join(',')} (master "${o.name ?? ''}")`
    }
    if (this.options.redis !== undefined) return `${o.host ?? '127.0.0.1'}:${o.port ?? 6379}`
    try {
      const url = new URL(this.options.url ?? 'redis://127.0.0.1:6379')
      url.password = ''
      url.username = ''
      return url.toString()
    } catch {
      return 'the configured url'
    }
  }

  /**
   * Evicted keys cost resets (history) or a new epoch (ids); say so once at
   * start. CONFIG may be refused (managed Redis, ACLs): then nothing is said.
   */
  private async checkEviction (): Promise<void> {
    try {
      const reply = await (this.cmd as Redis).config('GET', 'maxmemory-policy') as string[]
      const policy = reply[1]
      if (policy !== undefined && policy !== 'noeviction') {
        this.host?.log.warn({ policy }, `fastify-sse-hub: Redis maxmemory-policy is "${policy}", not "noeviction": ` +
          'evicted history costs subscribers a reset and an evicted epoch or seq key a new epoch (a reset of every stream); ' +
          'set maxmemory-policy noeviction, or give Redis the room it needs (docs/redis.md, Eviction)')
      }
    } catch {}
  }

  private onControl (message: string): void {
    const at = message.indexOf('\n')
    if (at < 0 || message.slice(0, at) === this.instance) return
    this.host?.control(message.slice(at + 1))
  }

  private lost (): void {
    // Before start resolves, start() reports: no warnings, no recovery.
    if (this.closing || this.down || this.epoch === '') return
    this.down = true
    this.stalled = false
    this.host?.log.warn({ prefix: this.prefix }, 'fastify-sse-hub: redis connection lost; publishes are refused until it is back')
  }

  /** Both connections are back: check the epoch and the seq, restore subscriptions, then let the hub catch up. */
  private async recover (): Promise<void> {
    const cmd = this.cmd as Redis & Scripts
    const sub = this.sub as Redis
    if (cmd.status !== 'ready' || sub.status !== 'ready' || !this.down || this.closing) return
    this.down = false
    try {
      const [epoch, seq] = await cmd.sseInit(...this.epochKeys(), newEpoch())
      // A Redis that is behind what this instance saw (failover to a
      // lagging replica, an older snapshot) would hand those ids out again.
      if (epoch === this.epoch && seq < this.highest) await this.leave(epoch)
      else if (epoch === this.epoch) this.highest = Math.max(this.highest, seq)
      else await this.adopt(epoch)
      await sub.subscribe(this.controlChannel, ...this.topics.keys())
      if (this.patterns.size > 0) await sub.psubscribe(...this.patterns.keys())
    } catch (err) {
      // Lost again while recovering: the next 'ready' starts over.
      this.down = true
      this.host?.log.warn({ err }, 'fastify-sse-hub: redis recovery interrupted; retrying')
      return
    }
    this.host?.log.info({ prefix: this.prefix }, 'fastify-sse-hub: redis connection recovered; streams catch up from history')
    this.host?.interrupted()
  }

  /** Follows the epoch Redis is on; one this instance already left is left again, never followed back. */
  private async adopt (epoch: string): Promise<void> {
    if (epoch === this.epoch) return
    if (this.retired.includes(epoch)) await this.leave(epoch)
    else this.switchEpoch(epoch)
  }

  /**
   * Redis is on `epoch` but its ids there can no longer be trusted: start a
   * new epoch if Redis is still on it (compare-and-set, so the first
   * instance to notice wins), and follow whatever epoch Redis is on then.
   */
  private leave (epoch: string): Promise<void> {
    this.switching ??= (async () => {
      try {
        const now = await (this.cmd as Redis & Scripts).sseSwitch(...this.epochKeys(), epoch, newEpoch())
        if (now !== this.epoch) this.switchEpoch(now)
      } finally {
        this.switching = null
      }
    })()
    return this.switching
  }

  /**
   * Redis has a new history (flushed, replaced, or behind what was seen):
   * every stream is reset onto it, once per epoch, whatever number of
   * publishes and messages in flight say so.
   */
  private switchEpoch (epoch: string): void {
    if (epoch === this.epoch || this.retired.includes(epoch)) return
    const old = this.epoch
    this.retired.push(old)
    if (this.retired.length > RETIRED) this.retired.shift()
    this.epoch = epoch
    this.lastDelivered = 0
    this.lastMessage = ''
    this.highest = 0
    this.host?.log.warn({ from: old, to: epoch }, 'fastify-sse-hub: redis history was replaced (new epoch); streams get reset')
    this.host?.epochChanged(old)
  }

  private onMessage (message: string): void {
    // epoch \n seq \n topic \n channel \n event \n data (data is JSON: no raw LF)
    let at = 0
    const next = (): string => {
      const end = message.indexOf('\n', at)
      const part = message.slice(at, end)
      at = end + 1
      return part
    }
    const epoch = next()
    const seq = Number(next())
    const topic = next()
    const channel = next()
    const event = next()
    const data = message.slice(at)
    if (epoch !== this.epoch) {
      // Still in flight from an epoch this instance left: not news.
      if (this.retired.includes(epoch)) return
      this.switchEpoch(epoch)
    }
    if (seq <= this.lastDelivered) {
      // The same publish matched by a subscription and a pattern: a copy.
      if (seq === this.lastDelivered && message === this.lastMessage) return
      // Redis sends in seq order: a seq again, or a lower one, means it went
      // backwards and handed out ids it had handed out before.
      if (this.switching === null) {
        this.host?.log.warn({ epoch, seq, delivered: this.lastDelivered }, 'fastify-sse-hub: redis sent an id it had sent before (failover or restore lost writes); starting a new epoch')
        this.leave(epoch).catch(() => {})
      }
      return
    }
    this.lastDelivered = seq
    this.lastMessage = message
    if (seq > this.highest) this.highest = seq
    this.host?.deliver({ id: formatId(epoch, seq), seq, topic, channel, event, data })
  }

  async publish (topic: string, event: string, data: string, payload: unknown, channel: string): Promise<HubEvent> {
    const cmd = this.cmd as Redis & Scripts
    // Only the command connection matters here: events published while the
    // subscriber connection is away are in history, and streams catch up.
    if (cmd.status !== 'ready') throw new FST_ERR_SSEHUB_BACKEND_UNAVAILABLE('redis is not connected')
    if (this.stalled) throw new FST_ERR_SSEHUB_BACKEND_UNAVAILABLE('redis stopped answering')
    let timer: NodeJS.Timeout | undefined
    const timedOut = new Promise<never>((_resolve, reject) => {
      // Timers run before I/O in a loop iteration: after a long turn the
      // reply may be waiting unread. Give the poll phase its chance first.
      timer = setTimeout(() => setImmediate(() => reject(new FST_ERR_SSEHUB_BACKEND_TIMEOUT(this.commandTimeout))), this.commandTimeout)
    })
    try {
      return await Promise.race([timedOut, this.publishOnce(cmd, topic, event, data, payload, channel)])
    } finally {
      clearTimeout(timer)
    }
  }

  private async publishOnce (cmd: Redis & Scripts, topic: string, event: string, data: string, payload: unknown, channel: string): Promise<HubEvent> {
    const limits = this.limits as HistoryLimits
    for (let attempt = 0; attempt < 3; attempt++) {
      let result: [number, string]
      let acked: Promise<number> | null = null
      try {
        const run = cmd.ssePublish(
          ...this.epochKeys(), this.topicKey(topic),
          this.epoch, newEpoch(), event, data, channel, limits.history, limits.historyTtl, this.pubsubChannel(topic, channel), topic, this.highest)
        // Issued after the script on the same connection: it covers it.
        if (this.durable !== null) acked = this.replicated(cmd)
        result = await run
      } catch (err) {
        acked?.catch(() => {})
        throw uncertain(err as Error, this.commandTimeout)
      }
      const [seq, epoch] = result
      if (seq > 0) {
        if (epoch === this.epoch && seq > this.highest) this.highest = seq
        if (acked !== null) await this.checkReplicated(acked)
        return { id: formatId(epoch, seq), seq: Number(seq), topic, channel, event, data }
      }
      acked?.catch(() => {})
      await this.adopt(epoch)
    }
    throw new FST_ERR_SSEHUB_BACKEND_UNAVAILABLE('the epoch kept changing')
  }

  /**
   * One `WAIT` for the durable publishes of a turn, sent after their scripts
   * (the auto-pipeline of the turn is written first, in setImmediate order).
   */
  private replicated (cmd: Redis): Promise<number> {
    if (this.waitInTurn !== null) return this.waitInTurn
    const durable = this.durable as { replicas: number, timeout: number }
    const wait = new Promise<number>((resolve, reject) => {
      setImmediate(() => {
        this.waitInTurn = null
        cmd.wait(durable.replicas, durable.timeout).then(resolve, reject)
      })
    })
    this.waitInTurn = wait
    return wait
  }

  private async checkReplicated (acked: Promise<number>): Promise<void> {
    const durable = this.durable as { replicas: number, timeout: number }
    let count: number
    try {
      count = await acked
    } catch (err) {
      throw uncertain(err as Error, this.commandTimeout)
    }
    if (count < durable.replicas) throw new FST_ERR_SSEHUB_PUBLISH_NOT_REPLICATED(count, durable.replicas, durable.timeout)
  }

  /**
   * The liveness probe: a PING on the subscriber connection. Unanswered for
   * `commandTimeout`, it is a stall (reported once). If the command
   * connection still answers while the subscriber does not, that connection
   * is wedged and is reconnected; when the probe is answered, every stream
   * catches up from history.
   */
  private probe (): void {
    const sub = this.sub as Redis
    if (this.closing || this.down || sub.status !== 'ready') return
    const now = Date.now()
    if (this.probeSent !== 0) {
      if (!this.stalled && now - this.probeSent >= this.commandTimeout) this.stall(now - this.probeSent)
      if (this.stalled) this.checkWedged()
      return
    }
    this.probeSent = now
    const sent = now
    const check = setTimeout(() => setImmediate(() => {
      if (this.probeSent === sent && !this.stalled && !this.down && !this.closing) this.stall(Date.now() - sent)
    }), this.commandTimeout)
    check.unref()
    sub.ping().then(() => {
      clearTimeout(check)
      if (this.probeSent !== sent) return
      this.probeSent = 0
      if (!this.stalled) return
      this.stalled = false
      if (this.down || this.closing) return
      this.host?.log.info({ prefix: this.prefix, stalledMs: Date.now() - sent }, 'fastify-sse-hub: redis answers again; streams catch up from history')
      this.host?.interrupted()
    }, () => {
      // The connection closed: lost() and recover() take it from here.
      clearTimeout(check)
      if (this.probeSent === sent) this.probeSent = 0
    })
  }

  private stall (ms: number): void {
    this.stalled = true
    this.host?.log.warn({ prefix: this.prefix, ms }, 'fastify-sse-hub: redis stopped answering; publishes are refused and streams catch up once it answers')
  }

  private wedgeCheck = false
  private checkWedged (): void {
    if (this.wedgeCheck) return
    this.wedgeCheck = true
    const sent = this.probeSent
    ;(this.cmd as Redis).ping().then(() => new Promise<void>(resolve => {
      // Redis answers the command connection. If the subscriber connection
      // still has not answered a while later (a paused or stopped Redis
      // answers both at once), that connection is wedged (a half-open
      // socket after a failover): a fresh one recovers, then streams catch up.
      const later = setTimeout(() => {
        if (this.probeSent === sent && this.stalled && !this.closing && !this.down) {
          this.host?.log.warn({ prefix: this.prefix }, 'fastify-sse-hub: redis subscriber connection is wedged; reconnecting it')
          this.probeSent = 0
          ;(this.sub as Redis).disconnect(true)
        }
        resolve()
      }, this.commandTimeout)
      later.unref()
    }), () => {}).finally(() => { this.wedgeCheck = false })
  }

  subscribe (topic: string, channel: string): Promise<void> {
    const name = this.pubsubChannel(topic, channel)
    let pending = this.topics.get(name)
    if (pending === undefined) {
      pending = (this.sub as Redis).subscribe(name).then(() => {}, (err: Error) => {
        // Not fatal: recover() subscribes every known topic once Redis is back.
        this.host?.log.warn({ err, topic }, 'fastify-sse-hub: redis subscribe failed; retried on reconnect')
      })
      this.topics.set(name, pending)
    }
    return pending
  }

  unsubscribe (topic: string, channel: string): void {
    const name = this.pubsubChannel(topic, channel)
    if (!this.topics.delete(name) || this.closing) return
    ;(this.sub as Redis).unsubscribe(name).catch(() => {})
  }

  subscribeChannel (channel: string): Promise<void> {
    const pattern = `${this.prefix}:m:${channel}|*`
    let pending = this.patterns.get(pattern)
    if (pending === undefined) {
      pending = (this.sub as Redis).psubscribe(pattern).then(() => {}, (err: Error) => {
        this.host?.log.warn({ err, channel }, 'fastify-sse-hub: redis psubscribe failed; retried on reconnect')
      })
      this.patterns.set(pattern, pending)
    }
    return pending
  }

  unsubscribeChannel (channel: string): void {
    const pattern = `${this.prefix}:m:${channel}|*`
    if (!this.patterns.delete(pattern) || this.closing) return
    ;(this.sub as Redis).punsubscribe(pattern).catch(() => {})
  }

  /**
   * One consistent read of `topics` (one script). Then a PING on the
   * subscriber connection: Redis answers it after every message it queued
   * there before, so when this resolves, every event of a subscribed topic at
   * or below the head has been delivered (the contract's barrier).
   */
  async read (topics: readonly string[], after: number): Promise<HistoryRead> {
    const cmd = this.cmd as Redis & Scripts
    const epoch = this.epoch
    const keys = [this.keys.epoch, this.keys.seq, this.keys.clock, this.keys.tops, ...topics.map(t => this.topicKey(t))]
    const reply = await cmd.sseRead(keys.length, ...keys, epoch, after, (this.limits as HistoryLimits).historyTtl, ...topics)
    await (this.sub as Redis).ping()
    const status = reply[0]
    const head = Number(reply[1] ?? 0)
    // A head read counts as seen: a store that later shows less went backwards.
    if (status !== 'epoch' && epoch === this.epoch && head > this.highest) this.highest = head
    if (status !== 'ok') return { head, events: [], trimmed: true }
    const lists: HubEvent[][] = []
    for (let i = 0; i < topics.length; i++) {
      const list: HubEvent[] = []
      for (const [id, fields] of (reply[i + 2] as Array<[string, string[]]> | undefined) ?? []) list.push(this.entryToEvent(topics[i], id, fields, epoch, -Infinity) as HubEvent)
      lists.push(list)
    }
    return { head, events: mergeBySeq(lists), trimmed: false }
  }

  /** A stream entry as an event; null if it is older than `oldest` (ms). */
  private entryToEvent (topic: string, id: string, fields: string[], epoch: string, oldest: number): HubEvent | null {
    const seq = Number(id.slice(0, id.indexOf('-')))
    let event = ''
    let data = ''
    let channel = ''
    let at = 0
    for (let i = 0; i < fields.length; i += 2) {
      if (fields[i] === 'e') event = fields[i + 1]
      else if (fields[i] === 'd') data = fields[i + 1]
      else if (fields[i] === 'c') channel = fields[i + 1]
      else if (fields[i] === 't') at = Number(fields[i + 1])
    }
    if (at <= oldest) return null
    return { id: formatId(epoch, seq), seq, topic, channel, event, data }
  }

  async latest (topic: string, count: number): Promise<HubEvent[]> {
    if (count <= 0) return []
    const cmd = this.cmd as Redis
    const epoch = this.epoch
    const [stored, entries] = await Promise.all([
      cmd.get(this.keys.epoch),
      cmd.xrevrange(this.topicKey(topic), '+', '-', 'COUNT', count)
    ])
    if (stored !== epoch) return []
    const ttl = (this.limits as HistoryLimits).historyTtl
    const oldest = ttl > 0 ? Date.now() - ttl : -Infinity
    const events: HubEvent[] = []
    for (let i = entries.length - 1; i >= 0; i--) {
      const ev = this.entryToEvent(topic, entries[i][0], entries[i][1], epoch, oldest)
      if (ev !== null) events.push(ev)
    }
    return events
  }

  async broadcast (message: string): Promise<void> {
    const cmd = this.cmd as Redis
    if (cmd.status !== 'ready') throw new FST_ERR_SSEHUB_BACKEND_UNAVAILABLE('redis is not connected')
    await cmd.publish(this.controlChannel, this.instance + '\n' + message)
  }

  /**
   * Head reads asked for in one tick share one GET: they would travel in
   * the same auto-pipelined write anyway, so the answer is the same, and a
   * burst of 10,000 connecting subscribers costs one command instead of 10,000.
   */
  head (): Promise<number> {
    if (this.headInTick !== null) return this.headInTick
    const read = this.readHead()
    this.headInTick = read
    process.nextTick(() => { this.headInTick = null })
    return read
  }

  private headInTick: Promise<number> | null = null

  private async readHead (): Promise<number> {
    if (this.down) return this.lastDelivered
    const epoch = this.epoch
    try {
      const head = Number(await (this.cmd as Redis).get(this.keys.seq) ?? 0)
      // A head read across an epoch change belongs to neither epoch.
      if (this.epoch === epoch && head > this.highest) this.highest = head
      return head
    } catch {
      return this.lastDelivered
    }
  }

  stats (): BackendStats {
    const connected = this.cmd?.status === 'ready' && this.sub?.status === 'ready' && !this.stalled
    return { kind: 'redis', connected, historyEvents: 0, historyBytes: 0, topics: this.topics.size }
  }

  async close (): Promise<void> {
    this.closing = true
    if (this.probeTimer !== null) clearInterval(this.probeTimer)
    await this.quit(this.sub)
    if (this.ownsCmd) await this.quit(this.cmd)
  }

  /** QUIT if Redis is there (bounded), then drop the socket: closing never waits on a Redis that is gone. */
  private async quit (client: Redis | null): Promise<void> {
    if (client === null) return
    if (client.status === 'ready') {
      let timer: NodeJS.Timeout | undefined
      await Promise.race([
        client.quit().catch(() => {}),
        new Promise<void>(resolve => { timer = setTimeout(resolve, 1_000) })
      ])
      clearTimeout(timer)
    }
    client.disconnect()
  }
}

/** A whole number of ms in range, or the default. */
function ms (name: string, value: number | undefined, fallback: number, min: number): number {
  if (value === undefined) return fallback
  if (!Number.isSafeInteger(value) || value < min || value > 2_147_483_647) throw new FST_ERR_SSEHUB_OPTION_INVALID(name, `must be a whole number of milliseconds from ${min}, got ${String(value)}`)
  return value
}

/** A publish that failed after it may have reached Redis: the caller must not assume nothing was published. */
function uncertain (err: Error, timeout: number): Error {
  if (String((err as { code?: string }).code).startsWith('FST_ERR_SSEHUB_')) return err
  if (err.message === 'Command timed out') return new FST_ERR_SSEHUB_BACKEND_TIMEOUT(timeout)
  return new FST_ERR_SSEHUB_BACKEND_UNAVAILABLE(err.message)
}

function ready (client: Redis): Promise<void> {
  if (client.status === 'ready') return Promise.resolve()
  return new Promise((resolve) => client.once('ready', () => resolve()))
}

/**
 * The Redis backend: `fastify.register(ssePlugin, { backend: redisBackend({ url, prefix }) })`.
 * Needs Redis 7 or later and the `ioredis` package.
 */
export function redisBackend (options: RedisBackendOptions = {}): Backend {
  return new RedisBackend(options)
}
