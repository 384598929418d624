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
 * See docs/redis.md for the key and message formats.
 */
import { Redis, type RedisOptions } from 'ioredis'
import { mergeBySeq, type Backend, type BackendHost, type BackendStats, type HistoryLimits, type HistoryRead, type HubEvent } from '../backend.js'
import { formatId, newEpoch } from '../ids.js'
import { FST_ERR_SSEHUB_BACKEND_UNAVAILABLE, FST_ERR_SSEHUB_OPTION_INVALID } from '../errors.js'

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
}

const PREFIX = /^[A-Za-z0-9_.:-]{1,64}$/
/** Reconnect backoff: 50 ms, 100 ms, ... up to 2 s, forever. */
const retryStrategy = (attempt: number): number => Math.min(attempt * 50, 2_000)

// KEYS: epoch, seq, topic stream, clock (zset time -> seq), clock-last
// ARGV: expected epoch, candidate epoch, event, data, channel, maxlen, ttl ms, pubsub channel, topic
// Returns { seq, epoch }; seq 0 means "the epoch is not yours": switch to it and retry.
const PUBLISH = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local e = redis.call('GET', KEYS[1])
if not e then
  -- A new epoch starts the clock at seq 0: nothing older can have expired.
  redis.call('SET', KEYS[1], ARGV[2])
  redis.call('ZADD', KEYS[4], now, 0)
  e = ARGV[2]
end
if e ~= ARGV[1] then return {0, e} end
local ttl = tonumber(ARGV[7])
local fresh = redis.call('EXISTS', KEYS[3]) == 0
local bound = 0
if fresh and ttl > 0 then
  local s = redis.call('ZRANGEBYSCORE', KEYS[4], now - ttl, '+inf', 'LIMIT', 0, 1)
  if #s > 0 then bound = tonumber(s[1]) else bound = tonumber(redis.call('GET', KEYS[2]) or '0') end
end
local seq = redis.call('INCR', KEYS[2])
-- XADD's own MAXLEN trimming does not move max-deleted-entry-id (Redis 7.0),
-- so find what this append pushes out and record it: resumes from below it
-- must get reset, never a partial replay.
local maxlen = tonumber(ARGV[6])
local maxdel = 0
if fresh then maxdel = bound end
local len = redis.call('XLEN', KEYS[3])
if len > 0 and len >= maxlen then
  local cut = redis.call('XRANGE', KEYS[3], '-', '+', 'COUNT', len - maxlen + 1)
  maxdel = tonumber(string.match(cut[#cut][1], '^(%d+)'))
end
redis.call('XADD', KEYS[3], 'MAXLEN', maxlen, seq .. '-0', 'e', ARGV[3], 'd', ARGV[4], 'c', ARGV[5], 't', now)
if maxlen == 0 then maxdel = seq end
if maxdel > 0 then
  if maxdel > seq then maxdel = seq end
  redis.call('XSETID', KEYS[3], seq .. '-0', 'MAXDELETEDID', maxdel .. '-0')
end
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[3], ttl)
  local last = tonumber(redis.call('GET', KEYS[5]) or '0')
  if now - last >= 1000 then
    redis.call('SET', KEYS[5], now)
    redis.call('ZADD', KEYS[4], now, seq)
    redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - ttl - 60000)
  end
end
redis.call('PUBLISH', ARGV[8], e .. '\\n' .. seq .. '\\n' .. ARGV[9] .. '\\n' .. ARGV[5] .. '\\n' .. ARGV[3] .. '\\n' .. ARGV[4])
return {seq, e}
`

// KEYS: epoch, clock; ARGV: candidate epoch. Creates the epoch (and starts
// the clock at seq 0) if there is none; returns the epoch.
const INIT = `
if redis.call('SET', KEYS[1], ARGV[1], 'NX') then
  local t = redis.call('TIME')
  redis.call('ZADD', KEYS[2], tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), 0)
end
return redis.call('GET', KEYS[1])
`

// KEYS: epoch, seq, clock, then one stream key per topic
// ARGV: expected epoch, after seq, ttl ms
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
for k = 4, #KEYS do
  local key = KEYS[k]
  if redis.call('EXISTS', key) == 0 then
    -- No key: never published, or expired ttl after its last publish. Any
    -- event it held was published before now - ttl, so at or below the first
    -- clock sample after that time (or the head, if there is none).
    local bound = 0
    if ttl > 0 then
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
  sseInit: (...args: string[]) => Promise<string>
  ssePublish: (...args: Array<string | number>) => Promise<[number, string]>
  sseRead: (...args: Array<string | number>) => Promise<[string, number?, ...Array<Array<[string, string[]]>>]>
}

/** The Redis backend; see the module note. */
export class RedisBackend implements Backend {
  epoch = ''
  private host: BackendHost | null = null
  private limits: HistoryLimits | null = null
  private cmd: Redis | null = null
  private sub: Redis | null = null
  private readonly ownsCmd: boolean
  private readonly prefix: string
  private readonly keys: { epoch: string, seq: string, clock: string, clockLast: string }
  /** Pub/sub channel of a topic -> the promise of its SUBSCRIBE taking effect. */
  private readonly topics = new Map<string, Promise<void>>()
  /** Pattern of a channel's topics -> the promise of its PSUBSCRIBE taking effect. */
  private readonly patterns = new Map<string, Promise<void>>()
  /** The highest seq handed to the hub in this epoch: Redis sends in order, so anything at or below is a repeat. */
  private lastDelivered = 0
  /** This process's id on the control channel, so it drops its own broadcasts. */
  private readonly instance = newEpoch()
  private readonly controlChannel: string
  private down = false
  private closing = false

  constructor (private readonly options: RedisBackendOptions) {
    const prefix = options.prefix ?? 'sse'
    if (!PREFIX.test(prefix)) throw new FST_ERR_SSEHUB_OPTION_INVALID('prefix', 'must be 1 to 64 letters, digits, "_", ".", ":" or "-"')
    this.prefix = prefix
    this.ownsCmd = options.redis === undefined
    const tag = `{${prefix}}`
    this.keys = { epoch: `${tag}:epoch`, seq: `${tag}:seq`, clock: `${tag}:clock`, clockLast: `${tag}:clock-last` }
    this.controlChannel = `${prefix}:ctl`
  }

  private topicKey (topic: string): string {
    return `{${this.prefix}}:t:${topic}`
  }

  /** `P:m:<channel>|<topic>`: one channel-wide PSUBSCRIBE (`P:m:<channel>|*`) matches all topics of a channel. */
  private pubsubChannel (topic: string, channel: string): string {
    return `${this.prefix}:m:${channel}|${topic}`
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
      ...this.options.redisOptions
    }
    const cmd = this.options.redis ?? new Redis(this.options.url ?? 'redis://127.0.0.1:6379', connection)
    this.cmd = cmd
    // Subscriptions are restored by hand after a reconnect, so the hub can
    // catch up from history only once they are in effect.
    const sub = cmd.duplicate({ ...connection, autoResubscribe: false, enableOfflineQueue: true, enableAutoPipelining: false })
    this.sub = sub
    const scripts = cmd as unknown as Redis & Scripts
    if (typeof scripts.ssePublish !== 'function') {
      cmd.defineCommand('ssePublish', { numberOfKeys: 5, lua: PUBLISH })
      cmd.defineCommand('sseRead', { lua: READ })
      cmd.defineCommand('sseInit', { numberOfKeys: 2, lua: INIT })
    }

    for (const client of [cmd, sub]) {
      client.on('error', (err: Error) => {
        if (!this.down && !this.closing) host.log.error({ err }, 'fastify-sse-hub: redis error')
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

    await Promise.all([ready(cmd), ready(sub)])
    this.epoch = await this.ensureEpoch()
    await sub.subscribe(this.controlChannel)
  }

  private onControl (message: string): void {
    const at = message.indexOf('\n')
    if (at < 0 || message.slice(0, at) === this.instance) return
    this.host?.control(message.slice(at + 1))
  }

  /** The epoch in Redis, creating one if there is none. */
  private async ensureEpoch (): Promise<string> {
    return await (this.cmd as Redis & Scripts).sseInit(this.keys.epoch, this.keys.clock, newEpoch())
  }

  private lost (): void {
    if (this.closing || this.down) return
    this.down = true
    this.host?.log.warn({ prefix: this.prefix }, 'fastify-sse-hub: redis connection lost; publishes are refused until it is back')
  }

  /** Both connections are back: check the epoch, restore subscriptions, then let the hub catch up. */
  private async recover (): Promise<void> {
    const cmd = this.cmd as Redis
    const sub = this.sub as Redis
    if (cmd.status !== 'ready' || sub.status !== 'ready' || !this.down || this.closing) return
    this.down = false
    try {
      const epoch = await this.ensureEpoch()
      if (epoch !== this.epoch) this.switchEpoch(epoch)
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

  /** Redis has a new history (flushed or replaced): every stream is reset onto it. */
  private switchEpoch (epoch: string): void {
    const old = this.epoch
    this.epoch = epoch
    this.lastDelivered = 0
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
    if (epoch !== this.epoch) this.switchEpoch(epoch)
    if (seq <= this.lastDelivered) return
    this.lastDelivered = seq
    this.host?.deliver({ id: formatId(epoch, seq), seq, topic, channel, event, data })
  }

  async publish (topic: string, event: string, data: string, payload: unknown, channel: string): Promise<HubEvent> {
    const cmd = this.cmd as Redis & Scripts
    // Only the command connection matters here: events published while the
    // subscriber connection is away are in history, and streams catch up.
    if (cmd.status !== 'ready') throw new FST_ERR_SSEHUB_BACKEND_UNAVAILABLE('redis is not connected')
    const limits = this.limits as HistoryLimits
    for (let attempt = 0; attempt < 3; attempt++) {
      let result: [number, string]
      try {
        result = await cmd.ssePublish(
          this.keys.epoch, this.keys.seq, this.topicKey(topic), this.keys.clock, this.keys.clockLast,
          this.epoch, newEpoch(), event, data, channel, limits.history, limits.historyTtl, this.pubsubChannel(topic, channel), topic)
      } catch (err) {
        throw new FST_ERR_SSEHUB_BACKEND_UNAVAILABLE((err as Error).message)
      }
      const [seq, epoch] = result
      if (seq > 0) return { id: formatId(epoch, seq), seq: Number(seq), topic, channel, event, data }
      this.switchEpoch(epoch)
    }
    throw new FST_ERR_SSEHUB_BACKEND_UNAVAILABLE('the epoch kept changing')
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
    const keys = [this.keys.epoch, this.keys.seq, this.keys.clock, ...topics.map(t => this.topicKey(t))]
    const reply = await cmd.sseRead(keys.length, ...keys, epoch, after, (this.limits as HistoryLimits).historyTtl)
    await (this.sub as Redis).ping()
    const status = reply[0]
    const head = Number(reply[1] ?? 0)
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
    try {
      return Number(await (this.cmd as Redis).get(this.keys.seq) ?? 0)
    } catch {
      return this.lastDelivered
    }
  }

  stats (): BackendStats {
    const connected = this.cmd?.status === 'ready' && this.sub?.status === 'ready'
    return { kind: 'redis', connected, historyEvents: 0, historyBytes: 0, topics: this.topics.size }
  }

  async close (): Promise<void> {
    this.closing = true
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
