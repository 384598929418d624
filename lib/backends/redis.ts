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
import { mergeBySeq, type Backend, type BackendHost, type BackendStats, type ChannelHistory, type HistoryLimits, type HistoryRead, type HubEvent } from '../backend.js'
import { formatId, newEpoch } from '../ids.js'
import { int } from '../options.js'
import { defineScripts, type Scripts } from './redis-scripts.js'
import { RedisRuns } from './redis-runs.js'
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
  /**
   * The lease of a producer run (`fastify.sse.run()`), in ms: the instance
   * running it renews it every third of this; when that instance dies (or
   * loses Redis for longer), another instance ends the run with
   * `end { reason: 'lost' }` about 1.5 x this after the last renewal (every
   * instance sweeps expired leases every half of this), and the stale
   * producer can publish nothing more into it.
   * @default 5000
   */
  runLease?: number
}

const PREFIX = /^[A-Za-z0-9_.:-]{1,64}$/
/** Reconnect backoff: 50 ms, 100 ms, ... up to 2 s, forever. */
const retryStrategy = (attempt: number): number => Math.min(attempt * 50, 2_000)

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
  /** Channels with history bounds of their own. */
  private readonly bounds = new Map<string, ChannelHistory>()
  private readonly noticeChannel: string
  /** Producer runs across instances (redis-runs.ts). */
  readonly runs: RedisRuns

  constructor (private readonly options: RedisBackendOptions) {
    const prefix = options.prefix ?? 'sse'
    if (!PREFIX.test(prefix)) throw new FST_ERR_SSEHUB_OPTION_INVALID('prefix', 'must be 1 to 64 letters, digits, "_", ".", ":" or "-"')
    this.prefix = prefix
    this.ownsCmd = options.redis === undefined
    const tag = `{${prefix}}`
    this.keys = { epoch: `${tag}:epoch`, seq: `${tag}:seq`, clock: `${tag}:clock`, clockLast: `${tag}:clock-last`, tops: `${tag}:tops` }
    this.controlChannel = `${prefix}:ctl`
    this.noticeChannel = `${tag}:runs`
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
    const backend = this
    this.runs = new RedisRuns({
      get cmd () { return backend.cmd as (Redis & Scripts) | null },
      get log () { return backend.host?.log ?? null },
      runKeyHead: `${tag}:run:`,
      leasesKey: `${tag}:leases`,
      noticeChannel: this.noticeChannel,
      keepMs: channel => Math.abs(this.boundsOf(channel).historyTtl),
      publishRun: (script, keys, args, topic, event, data, channel) => this.publishBounded(script, keys, args, topic, event, data, channel)
    }, ms('runLease', options.runLease, 5_000, 3))
  }

  channelHistory (channel: string, bounds: ChannelHistory): void {
    this.bounds.set(channel, bounds)
  }

  /**
   * The count and age bounds of `channel`'s topics: its own (a negative ttl
   * tells the publish script the topic expires whole after its last event),
   * else the plugin's.
   */
  private boundsOf (channel: string): { history: number, historyTtl: number } {
    const own = this.bounds.get(channel)
    if (own !== undefined) return { history: own.limit, historyTtl: -own.ttl }
    return this.limits as HistoryLimits
  }

  /** The longest ttl of any channel (0 if one keeps events forever): how long topic marks must be kept. */
  private markTtl (): number {
    let ttl = (this.limits as HistoryLimits).historyTtl
    for (const own of this.bounds.values()) {
      if (ttl === 0 || own.ttl === 0) return 0
      ttl = Math.max(ttl, own.ttl)
    }
    return ttl
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
    const scripts = defineScripts(cmd)

    for (const client of [cmd, sub]) {
      client.on('error', (err: Error) => {
        this.lastError = err
        if (!this.down && !this.closing && this.epoch !== '') host.log.error({ err }, 'fastify-sse-hub: redis error')
      })
      client.on('close', () => this.lost())
    }
    sub.on('message', (channel: string, message: string) => {
      if (channel === this.controlChannel) this.onControl(message)
      else if (channel === this.noticeChannel) this.runs.notice(message)
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
        await sub.subscribe(this.controlChannel, this.noticeChannel)
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
    this.runs.start()
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
      await sub.subscribe(this.controlChannel, this.noticeChannel, ...this.topics.keys())
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

  publish (topic: string, event: string, data: string, _payload: unknown, channel: string): Promise<HubEvent> {
    return this.publishBounded('ssePublish', [], [], topic, event, data, channel) as Promise<HubEvent>
  }

  /** A publish, or a run's publish or end (redis-runs.ts), bounded in time; null when a run's script found it fenced. */
  private async publishBounded (script: 'ssePublish' | 'ssePublishRun' | 'sseEndRun', keys: string[], args: Array<string | number>,
    topic: string, event: string, data: string, channel: string): Promise<HubEvent | null> {
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
      return await Promise.race([timedOut, this.publishOnce(cmd, script, keys, args, topic, event, data, channel)])
    } finally {
      clearTimeout(timer)
    }
  }

  /**
   * Runs a publishing script (a publish, or a run's publish or end, which
   * take `keys` and `args` after a publish's own), switching epochs and
   * retrying as Redis says; null when a run's script found it fenced.
   */
  private async publishOnce (cmd: Redis & Scripts, script: 'ssePublish' | 'ssePublishRun' | 'sseEndRun', keys: string[], args: Array<string | number>,
    topic: string, event: string, data: string, channel: string): Promise<HubEvent | null> {
    const bounds = this.boundsOf(channel)
    for (let attempt = 0; attempt < 3; attempt++) {
      let result: [number, string]
      let acked: Promise<number> | null = null
      try {
        const run = cmd[script](
          ...this.epochKeys(), this.topicKey(topic), ...keys,
          this.epoch, newEpoch(), event, data, channel, bounds.history, bounds.historyTtl, this.pubsubChannel(topic, channel), topic, this.highest,
          this.markTtl(), ...args)
        // Issued after the script on the same connection: it covers it.
        if (this.durable !== null) acked = this.replicated(cmd)
        result = await run
      } catch (err) {
        acked?.catch(() => {})
        throw uncertain(err as Error, this.commandTimeout)
      }
      const [seq, epoch] = result
      if (seq < 0) return null
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
    return this.follow(this.topics, this.pubsubChannel(topic, channel), 'subscribe', { topic })
  }

  unsubscribe (topic: string, channel: string): void {
    const name = this.pubsubChannel(topic, channel)
    if (!this.topics.delete(name) || this.closing) return
    ;(this.sub as Redis).unsubscribe(name).catch(() => {})
  }

  subscribeChannel (channel: string): Promise<void> {
    return this.follow(this.patterns, `${this.prefix}:m:${channel}|*`, 'psubscribe', { channel })
  }

  /**
   * SUBSCRIBE (or PSUBSCRIBE) `name` once, however many callers: the promise
   * of it taking effect is kept in `map`. A failure is not fatal: recover()
   * subscribes every known name once Redis is back.
   */
  private follow (map: Map<string, Promise<void>>, name: string, command: 'subscribe' | 'psubscribe', what: object): Promise<void> {
    let pending = map.get(name)
    if (pending === undefined) {
      pending = (this.sub as Redis)[command](name).then(() => {}, (err: Error) => {
        this.host?.log.warn({ err, ...what }, `fastify-sse-hub: redis ${command} failed; retried on reconnect`)
      })
      map.set(name, pending)
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
    const reply = await cmd.sseRead(keys.length, ...keys, epoch, after, (this.limits as HistoryLimits).historyTtl, ...topics, this.markTtl())
    await (this.sub as Redis).ping()
    const status = reply[0]
    const head = Number(reply[1] ?? 0)
    // A head read counts as seen: a store that later shows less went backwards.
    if (status !== 'epoch' && epoch === this.epoch && head > this.highest) this.highest = head
    if (status !== 'ok') return { head, events: [], trimmed: true }
    const lists: HubEvent[][] = []
    for (let i = 0; i < topics.length; i++) {
      const list: HubEvent[] = []
      for (const [id, fields] of (reply[i + 2] as Array<[string, string[]]> | undefined) ?? []) list.push(this.entryToEvent(topics[i], id, fields, epoch, -Infinity, -Infinity) as HubEvent)
      lists.push(list)
    }
    return { head, events: mergeBySeq(lists), trimmed: false }
  }

  /**
   * A stream entry as an event; null once past its deadline (its channel's
   * ttl, written with it; for an entry without one, older than `oldest` ms).
   */
  private entryToEvent (topic: string, id: string, fields: string[], epoch: string, oldest: number, now = Date.now()): HubEvent | null {
    const seq = Number(id.slice(0, id.indexOf('-')))
    let event = ''
    let data = ''
    let channel = ''
    let at = 0
    let deadline = -1
    for (let i = 0; i < fields.length; i += 2) {
      if (fields[i] === 'e') event = fields[i + 1]
      else if (fields[i] === 'd') data = fields[i + 1]
      else if (fields[i] === 'c') channel = fields[i + 1]
      else if (fields[i] === 't') at = Number(fields[i + 1])
      else if (fields[i] === 'x') deadline = Number(fields[i + 1])
    }
    if (deadline < 0 ? at <= oldest : (deadline > 0 && deadline <= now)) return null
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
    this.runs.stop()
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
  return value === undefined ? fallback : int(name, value, min, 2 ** 31 - 1)
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
