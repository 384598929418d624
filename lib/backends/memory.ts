/**
 * The default backend: one process, history in memory. Ids carry an epoch
 * made at start, so a client resuming after a restart gets `reset`.
 */
import { randomUUID } from 'node:crypto'
import { mergeBySeq, type Backend, type BackendHost, type BackendStats, type ChannelHistory, type HistoryLimits, type HistoryRead, type HubEvent, type RunStore } from '../backend.js'
import { FST_ERR_SSEHUB_RUN_ENDED } from '../errors.js'
import { formatId, newEpoch } from '../ids.js'
import { History } from './memory-history.js'

/** The in-process backend; `memoryBackend()` is the default of the plugin. */
export class MemoryBackend implements Backend {
  epoch = ''
  private seq = 0
  private host: BackendHost | null = null
  private store: History | null = null
  private closed = false
  /** Channel name -> its own history bounds. */
  private readonly bounds = new Map<string, ChannelHistory>()
  private limits: HistoryLimits | null = null
  readonly runs: MemoryRuns = new MemoryRuns(this)

  async start (host: BackendHost, limits: HistoryLimits): Promise<void> {
    this.host = host
    this.limits = limits
    this.store = new History(limits, seq => formatId(this.epoch, seq))
    for (const [channel, bounds] of this.bounds) this.store.setChannel(channel, bounds)
    this.epoch = newEpoch()
  }

  channelHistory (channel: string, bounds: ChannelHistory): void {
    this.bounds.set(channel, bounds)
    this.store?.setChannel(channel, bounds)
  }

  /** @internal How long an ended run of `channel` is remembered: as long as its events stay in history. */
  keepMs (channel: string): number {
    const ttl = this.bounds.get(channel)?.ttl ?? this.limits?.historyTtl ?? 0
    return ttl === 0 ? Infinity : ttl
  }

  async publish (topic: string, event: string, data: string, payload: unknown, channel: string): Promise<HubEvent> {
    const seq = ++this.seq
    const ev: HubEvent = { id: formatId(this.epoch, seq), seq, topic, channel, event, data }
    ;(this.store as History).append(ev, Date.now())
    ;(this.host as BackendHost).deliver(ev, payload)
    return ev
  }

  async subscribe (topic: string, channel: string): Promise<void> {
    (this.store as History).setSubscribed(topic, true, channel)
  }

  unsubscribe (topic: string, channel: string): void {
    if (!this.closed) (this.store as History).setSubscribed(topic, false, channel)
  }

  /** Synchronous, so consistent: nothing is published between the topics' reads. */
  async read (topics: readonly string[], after: number): Promise<HistoryRead> {
    const store = this.store as History
    const now = Date.now()
    const lists: HubEvent[][] = []
    for (const topic of topics) {
      const r = store.after(topic, after, now)
      if (r.trimmed) return { head: this.seq, events: [], trimmed: true }
      lists.push(r.events)
    }
    return { head: this.seq, events: mergeBySeq(lists), trimmed: false }
  }

  async latest (topic: string, count: number): Promise<HubEvent[]> {
    return (this.store as History).latest(topic, count, Date.now())
  }

  async head (): Promise<number> {
    return this.seq
  }

  stats (): BackendStats {
    const store = this.store as History
    return { kind: 'memory', connected: !this.closed, historyEvents: store.events, historyBytes: store.bytes, topics: store.topicCount }
  }

  async close (): Promise<void> {
    this.closed = true
  }
}

interface RunRecord {
  token: string
  running: boolean
  /** The seq of its first event; 0 before it. */
  first: number
  /** When it ended (ms), for forgetting it once its history has expired. */
  endedAt: number
  keepMs: number
}

/** Ended runs remembered at most (the oldest are forgotten first). */
const MAX_ENDED_RUNS = 100_000

/** Runs in one process: a record per topic, its fence token, and the end published in the same step as the record ends. */
class MemoryRuns implements RunStore {
  private readonly records = new Map<string, RunRecord>()
  private ended = 0
  onEnded: ((topic: string, token: string) => void) | null = null

  constructor (private readonly backend: MemoryBackend) {}

  async begin (topic: string, channel: string): Promise<string | null> {
    const record = this.get(topic)
    if (record?.running === true) return null
    if (record !== undefined) {
      this.records.delete(topic)
      this.ended--
    }
    const token = randomUUID()
    this.records.set(topic, { token, running: true, first: 0, endedAt: 0, keepMs: this.backend.keepMs(channel) })
    return token
  }

  publish (token: string, topic: string, event: string, data: string, payload: unknown, channel: string): Promise<HubEvent> {
    const record = this.records.get(topic)
    if (record === undefined || !record.running || record.token !== token) return Promise.reject(new FST_ERR_SSEHUB_RUN_ENDED(topic))
    const published = this.backend.publish(topic, event, data, payload, channel)
    if (record.first === 0) published.then(ev => { if (record.first === 0) record.first = ev.seq }, noop)
    return published
  }

  async end (topic: string, token: string | null, event: string, data: string, channel: string): Promise<HubEvent | null> {
    const record = this.records.get(topic)
    if (record === undefined || !record.running || (token !== null && record.token !== token)) return null
    record.running = false
    record.endedAt = Date.now()
    // Re-inserted, so the map stays in order of ending and the oldest are forgotten first.
    this.records.delete(topic)
    this.records.set(topic, record)
    if (++this.ended > MAX_ENDED_RUNS) this.forgetOldest()
    return await this.backend.publish(topic, event, data, undefined, channel)
  }

  async first (topic: string): Promise<number> {
    return this.get(topic)?.first ?? 0
  }

  async state (topic: string): Promise<'running' | 'ended' | null> {
    const record = this.get(topic)
    return record === undefined ? null : record.running ? 'running' : 'ended'
  }

  /** The record of `topic`, or undefined once an ended one has outlived its history. */
  private get (topic: string): RunRecord | undefined {
    const record = this.records.get(topic)
    if (record !== undefined && !record.running && Date.now() - record.endedAt > record.keepMs) {
      this.records.delete(topic)
      this.ended--
      return undefined
    }
    return record
  }

  private forgetOldest (): void {
    for (const [topic, record] of this.records) {
      if (record.running) continue
      this.records.delete(topic)
      this.ended--
      return
    }
  }
}

/** The in-process backend (the default): history in this process's memory. */
export function memoryBackend (): Backend {
  return new MemoryBackend()
}

const noop = (): void => {}
