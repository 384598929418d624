/**
 * The default backend: one process, history in memory. Ids carry an epoch
 * made at start, so a client resuming after a restart gets `reset`.
 */
import type { Backend, BackendHost, BackendStats, HubEvent } from '../backend.js'
import { formatId, newEpoch } from '../backend.js'
import { History, type HistoryAfter, type HistoryLimits } from '../history.js'

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
    const ev: HubEvent = { id: formatId(this.epoch, ++this.seq), seq: this.seq, topic, channel, event, data, payload }
    ;(this.store as History).append(ev, Date.now())
    ;(this.host as BackendHost).deliver(ev)
    return ev
  }

  async subscribe (topic: string): Promise<void> {
    (this.store as History).setSubscribed(topic, true)
  }

  unsubscribe (topic: string): void {
    if (!this.closed) (this.store as History).setSubscribed(topic, false)
  }

  /** Every event is delivered in this process anyway. */
  async subscribeChannel (): Promise<void> {}

  unsubscribeChannel (): void {}

  async after (topic: string, seq: number): Promise<HistoryAfter> {
    return (this.store as History).after(topic, seq, Date.now())
  }

  async latest (topic: string, count: number): Promise<HubEvent[]> {
    return (this.store as History).latest(topic, count, Date.now())
  }

  async broadcast (): Promise<void> {}

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
