/**
 * The default backend: one process, history in memory. Ids carry an epoch
 * made at start, so a client resuming after a restart gets `reset`.
 */
import { mergeBySeq, type Backend, type BackendHost, type BackendStats, type HistoryLimits, type HistoryRead, type HubEvent } from '../backend.js'
import { formatId, newEpoch } from '../ids.js'
import { History } from './memory-history.js'

/** The in-process backend; `memoryBackend()` is the default of the plugin. */
export class MemoryBackend implements Backend {
  epoch = ''
  private seq = 0
  private host: BackendHost | null = null
  private store: History | null = null
  private closed = false

  async start (host: BackendHost, limits: HistoryLimits): Promise<void> {
    this.host = host
    this.store = new History(limits)
    this.epoch = newEpoch()
  }

  async publish (topic: string, event: string, data: string, payload: unknown, channel: string): Promise<HubEvent> {
    const seq = ++this.seq
    const ev: HubEvent = { id: formatId(this.epoch, seq), seq, topic, channel, event, data }
    ;(this.store as History).append(ev, Date.now())
    ;(this.host as BackendHost).deliver(ev, payload)
    return ev
  }

  async subscribe (topic: string): Promise<void> {
    (this.store as History).setSubscribed(topic, true)
  }

  unsubscribe (topic: string): void {
    if (!this.closed) (this.store as History).setSubscribed(topic, false)
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

/** The in-process backend (the default): history in this process's memory. */
export function memoryBackend (): Backend {
  return new MemoryBackend()
}
