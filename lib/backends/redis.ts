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
 *
 * Files: redis-options.ts (the options), redis-connection.ts (the
 * connections, their supervision and the epoch), redis-scripts.ts (the Lua),
 * redis-runs.ts (producer runs); this file is the data path.
 */
import type { Redis } from 'ioredis'
import { mergeBySeq, type Backend, type BackendStats, type ChannelHistory, type HistoryLimits, type HistoryRead, type HubEvent } from '../backend.js'
import { formatId, newEpoch } from '../ids.js'
import type { Scripts } from './redis-scripts.js'
import { RedisRuns } from './redis-runs.js'
import { RedisConnection } from './redis-connection.js'
import type { RedisBackendOptions } from './redis-options.js'
import { FST_ERR_SSEHUB_BACKEND_TIMEOUT, FST_ERR_SSEHUB_BACKEND_UNAVAILABLE, FST_ERR_SSEHUB_PUBLISH_NOT_REPLICATED } from '../errors.js'

export type { RedisBackendOptions } from './redis-options.js'

/** The Redis backend; see the module note. */
export class RedisBackend extends RedisConnection implements Backend {
  /** The WAIT shared by the durable publishes of one turn. */
  private waitInTurn: Promise<number> | null = null
  /** Channels with history bounds of their own. */
  private readonly bounds = new Map<string, ChannelHistory>()
  /** Producer runs across instances (redis-runs.ts). */
  readonly runs: RedisRuns

  constructor (options: RedisBackendOptions) {
    super(options)
    const backend = this
    const tag = `{${this.prefix}}`
    this.runs = new RedisRuns({
      get cmd () { return backend.cmd as (Redis & Scripts) | null },
      get log () { return backend.host?.log ?? null },
      runKeyHead: `${tag}:run:`,
      leasesKey: `${tag}:leases`,
      noticeChannel: this.noticeChannel,
      keepMs: channel => Math.abs(this.boundsOf(channel).historyTtl),
      publishRun: (script, keys, args, topic, event, data, channel) => this.publishBounded(script, keys, args, topic, event, data, channel)
    }, this.runLease)
  }

  /** @internal */
  protected started (): void {
    this.runs.start()
  }

  /** @internal */
  protected onNotice (message: string): void {
    this.runs.notice(message)
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

  /** @internal */
  protected onMessage (message: string): void {
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

  override async close (): Promise<void> {
    this.runs.stop()
    await super.close()
  }
}

/** A publish that failed after it may have reached Redis: the caller must not assume nothing was published. */
function uncertain (err: Error, timeout: number): Error {
  if (String((err as { code?: string }).code).startsWith('FST_ERR_SSEHUB_')) return err
  if (err.message === 'Command timed out') return new FST_ERR_SSEHUB_BACKEND_TIMEOUT(timeout)
  return new FST_ERR_SSEHUB_BACKEND_UNAVAILABLE(err.message)
}

/**
 * The Redis backend: `fastify.register(ssePlugin, { backend: redisBackend({ url, prefix }) })`.
 * Needs Redis 7 or later and the `ioredis` package.
 */
export function redisBackend (options: RedisBackendOptions = {}): Backend {
  return new RedisBackend(options)
}
