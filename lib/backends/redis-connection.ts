/**
 * The Redis backend's connections: the command and subscriber connections,
 * and what keeps them honest. It starts them (bounded by `startTimeout`),
 * reports a lost connection and recovers from it (epoch and seq checked,
 * subscriptions restored, then the hub catches up), probes the subscriber
 * connection for stalls and wedges, and follows the epoch Redis is on: a
 * new epoch (flushed, replaced, or behind what this instance saw) resets
 * every stream once. The data path (publish, read, subscribe) is the
 * backend's (redis.ts), built on this.
 */
import { Redis, type RedisOptions } from 'ioredis'
import type { BackendHost, HistoryLimits } from '../backend.js'
import { newEpoch } from '../ids.js'
import { FST_ERR_SSEHUB_REDIS_UNREACHABLE } from '../errors.js'
import { redisSettings, type RedisBackendOptions } from './redis-options.js'
import { defineScripts, type Scripts } from './redis-scripts.js'

/** Reconnect backoff: 50 ms, 100 ms, ... up to 2 s, forever. */
const retryStrategy = (attempt: number): number => Math.min(attempt * 50, 2_000)

/** How many epochs an instance remembers having left: messages still in flight from them are dropped, never followed. */
const RETIRED = 16

/** The connections of the Redis backend and their supervision; see the module note. */
export abstract class RedisConnection {
  epoch = ''
  /** @internal */
  protected host: BackendHost | null = null
  /** @internal */
  protected limits: HistoryLimits | null = null
  /** @internal */
  protected cmd: Redis | null = null
  /** @internal */
  protected sub: Redis | null = null
  /** @internal */
  protected readonly ownsCmd: boolean
  /** @internal */
  protected readonly prefix: string
  /** @internal */
  protected readonly keys: { epoch: string, seq: string, clock: string, clockLast: string, tops: string }
  /** @internal Pub/sub channel of a topic -> the promise of its SUBSCRIBE taking effect. */
  protected readonly topics = new Map<string, Promise<void>>()
  /** @internal Pattern of a channel's topics -> the promise of its PSUBSCRIBE taking effect. */
  protected readonly patterns = new Map<string, Promise<void>>()
  /** @internal The highest seq handed to the hub in this epoch: Redis sends in order, so anything at or below is a repeat. */
  protected lastDelivered = 0
  /** @internal The raw message of `lastDelivered`: a topic matched by a subscription and a pattern arrives twice, identical. */
  protected lastMessage = ''
  /**
   * The highest seq this instance published, delivered or read as the head
   * in this epoch. Redis showing a lower one means it went backwards: those
   * ids were handed out, so a new epoch starts.
   * @internal
   */
  protected highest = 0
  /** @internal Epochs this instance left, newest last. */
  protected readonly retired: string[] = []
  /** @internal A compare-and-set epoch switch in flight, so one noticing starts one. */
  protected switching: Promise<void> | null = null
  /** @internal This process's id on the control channel, so it drops its own broadcasts. */
  protected readonly instance = newEpoch()
  /** @internal */
  protected readonly controlChannel: string
  /** @internal */
  protected down = false
  /** @internal */
  protected closing = false
  /** @internal The subscriber connection left a probe unanswered: Redis (or the connection) stalls. */
  protected stalled = false
  /** @internal */
  protected probeTimer: NodeJS.Timeout | null = null
  /** @internal When the unanswered probe was sent (0: none out). */
  protected probeSent = 0
  /** @internal The last connection error, named if start gives up. */
  protected lastError: Error | null = null
  /** @internal */
  protected readonly noticeChannel: string
  /** @internal */
  protected readonly commandTimeout: number
  /** @internal */
  protected readonly probeInterval: number
  /** @internal */
  protected readonly startTimeout: number
  /** @internal */
  protected readonly durable: { replicas: number, timeout: number } | null
  /** @internal */
  protected readonly runLease: number

  /** @internal */
  protected readonly options: RedisBackendOptions

  constructor (options: RedisBackendOptions) {
    this.options = options
    const settings = redisSettings(options)
    const prefix = settings.prefix
    this.prefix = prefix
    this.ownsCmd = options.redis === undefined
    const tag = `{${prefix}}`
    this.keys = { epoch: `${tag}:epoch`, seq: `${tag}:seq`, clock: `${tag}:clock`, clockLast: `${tag}:clock-last`, tops: `${tag}:tops` }
    this.controlChannel = `${prefix}:ctl`
    this.noticeChannel = `${tag}:runs`
    this.commandTimeout = settings.commandTimeout
    this.probeInterval = settings.probeInterval
    this.startTimeout = settings.startTimeout
    this.durable = settings.durable
    this.runLease = settings.runLease
  }

  /** @internal A message of a topic (or a channel pattern) on the subscriber connection. */
  protected abstract onMessage (message: string): void
  /** @internal A notice to run owners (`{P}:runs`). */
  protected abstract onNotice (message: string): void
  /** @internal Started: begin the backend's own timers. */
  protected abstract started (): void

  /** @internal The keys every epoch-starting script takes first. */
  protected epochKeys (): string[] {
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
      else if (channel === this.noticeChannel) this.onNotice(message)
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
    this.started()
    if (this.probeInterval > 0) {
      this.probeTimer = setInterval(() => this.probe(), this.probeInterval)
      this.probeTimer.unref()
    }
  }

  /** @internal Where Redis is, for errors: the URL without its password, or the Sentinels and master name. */
  protected address (): string {
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
   * @internal
   */
  protected async checkEviction (): Promise<void> {
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

  /** @internal */
  protected onControl (message: string): void {
    const at = message.indexOf('\n')
    if (at < 0 || message.slice(0, at) === this.instance) return
    this.host?.control(message.slice(at + 1))
  }

  /** @internal */
  protected lost (): void {
    // Before start resolves, start() reports: no warnings, no recovery.
    if (this.closing || this.down || this.epoch === '') return
    this.down = true
    this.stalled = false
    this.host?.log.warn({ prefix: this.prefix }, 'fastify-sse-hub: redis connection lost; publishes are refused until it is back')
  }

  /** @internal Both connections are back: check the epoch and the seq, restore subscriptions, then let the hub catch up. */
  protected async recover (): Promise<void> {
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

  /** @internal Follows the epoch Redis is on; one this instance already left is left again, never followed back. */
  protected async adopt (epoch: string): Promise<void> {
    if (epoch === this.epoch) return
    if (this.retired.includes(epoch)) await this.leave(epoch)
    else this.switchEpoch(epoch)
  }

  /**
   * Redis is on `epoch` but its ids there can no longer be trusted: start a
   * new epoch if Redis is still on it (compare-and-set, so the first
   * instance to notice wins), and follow whatever epoch Redis is on then.
   * @internal
   */
  protected leave (epoch: string): Promise<void> {
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
   * @internal
   */
  protected switchEpoch (epoch: string): void {
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

  /**
   * The liveness probe: a PING on the subscriber connection. Unanswered for
   * `commandTimeout`, it is a stall (reported once). If the command
   * connection still answers while the subscriber does not, that connection
   * is wedged and is reconnected; when the probe is answered, every stream
   * catches up from history.
   * @internal
   */
  protected probe (): void {
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

  /** @internal */
  protected stall (ms: number): void {
    this.stalled = true
    this.host?.log.warn({ prefix: this.prefix, ms }, 'fastify-sse-hub: redis stopped answering; publishes are refused and streams catch up once it answers')
  }

  /** @internal */
  protected wedgeCheck = false
  /** @internal */
  protected checkWedged (): void {
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

  async close (): Promise<void> {
    this.closing = true
    if (this.probeTimer !== null) clearInterval(this.probeTimer)
    await this.quit(this.sub)
    if (this.ownsCmd) await this.quit(this.cmd)
  }

  /** @internal QUIT if Redis is there (bounded), then drop the socket: closing never waits on a Redis that is gone. */
  protected async quit (client: Redis | null): Promise<void> {
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
