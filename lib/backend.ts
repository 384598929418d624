/**
 * The Backend interface the hub talks to. A backend assigns ids, keeps
 * history and carries events to every process; it knows nothing of HTTP,
 * streams or channels' schemas. The hub never knows which backend it runs on.
 */
import type { FastifyBaseLogger } from 'fastify'
import type { HistoryAfter, HistoryLimits } from './history.js'

export type { HistoryAfter, HistoryLimits } from './history.js'

/** One published event as the backend carries it. */
export interface HubEvent {
  /** The hub id: `<epoch>-<seq>`, opaque ASCII of at most 64 bytes. */
  readonly id: string
  /** The sequence number inside the id: strictly increasing across all topics of the hub. */
  readonly seq: number
  /** The topic key (`ticker`, `rooms/a`). */
  readonly topic: string
  /** The name of the channel the topic belongs to (`ticker`, `rooms/:roomId`). */
  readonly channel?: string
  /** The event name. */
  readonly event: string
  /** The payload as JSON text, serialised once by the publisher. */
  readonly data: string
  /** The payload object, when published in this process (spares local listeners a parse). */
  payload?: unknown
  /** The SSE frame, built at most once per process and shared by every stream and replay. */
  frame?: Buffer
}

/** What the hub gives a backend when it starts. */
export interface BackendHost {
  /**
   * Takes the events of every topic this process subscribed to, each exactly
   * once, in strictly increasing `seq` order across all topics.
   */
  deliver: (event: HubEvent) => void
  /**
   * Tells the hub that events of subscribed topics may have been missed (for
   * example a broken connection to the broker). The hub resumes every stream
   * from history, or signals `reset` where history no longer covers the gap.
   */
  interrupted: () => void
  /**
   * Tells the hub that the backend's history was replaced (a new epoch: the
   * broker was flushed or swapped). Every stream gets `reset` and follows the
   * new epoch from its start. `oldEpoch` is the epoch streams were on.
   */
  epochChanged: (oldEpoch: string) => void
  /** A control message another process broadcast (never this process's own). */
  control: (message: string) => void
  /** Fastify's logger: backends log here and never throw into the app. */
  readonly log: FastifyBaseLogger
}

/**
 * A hub backend. The contract, which every backend passes in the shared
 * contract tests:
 * - `start()` resolves once `epoch` is known and `publish` may be called.
 * - `publish()` assigns the next id (strictly increasing across all topics of
 *   the hub, in one order shared by every process), stores the event in
 *   history, and carries it to every process that subscribed to its topic;
 *   it resolves to the stored event, or rejects with nothing stored.
 * - `subscribe(topic)` makes this process receive the topic's events through
 *   `host.deliver`; it is called once per topic however many local
 *   subscribers, and `unsubscribe(topic)` once when the last leaves. A
 *   backend may deliver more than was subscribed (the memory backend
 *   delivers everything); the hub drops what nobody here follows.
 * - `after(topic, seq)` returns the events of `topic` with a higher seq, in
 *   order, or says that some were trimmed.
 * - `head()` is the highest seq assigned so far.
 * - `close()` releases what the backend opened.
 */
export interface Backend {
  /** The epoch carried by every id: a new one means a new history, so old ids get `reset`. */
  readonly epoch: string
  /** Starts the backend with the hub's bounds. */
  start: (host: BackendHost, limits: HistoryLimits) => Promise<void>
  /** Publishes one serialised event; see the interface note. */
  publish: (topic: string, event: string, data: string, payload: unknown, channel: string) => Promise<HubEvent>
  /** Starts delivering `topic` (of channel `channel`) to this process; resolves once it is in effect. */
  subscribe: (topic: string, channel: string) => Promise<void>
  /** Stops delivering `topic` (of channel `channel`) to this process. */
  unsubscribe: (topic: string, channel: string) => void
  /**
   * Starts delivering every topic of channel `channel` (for channel-wide
   * listeners); with `subscribe` on some of them too, each event still
   * arrives once. Resolves once it is in effect.
   */
  subscribeChannel: (channel: string) => Promise<void>
  /** Stops `subscribeChannel`. */
  unsubscribeChannel: (channel: string) => void
  /** The events after `seq` on `topic`, or `trimmed`. */
  after: (topic: string, seq: number) => Promise<HistoryAfter>
  /** The newest `count` events of `topic` still in history, oldest first. */
  latest: (topic: string, count: number) => Promise<HubEvent[]>
  /** Sends a control message to every other process of the hub (none on a single-process backend). */
  broadcast: (message: string) => Promise<void>
  /** The highest seq assigned so far. */
  head: () => Promise<number>
  /** Counts for `stats()`. */
  stats: () => BackendStats
  /** Releases connections and timers the backend opened. */
  close: () => Promise<void>
}

/** A backend's part of `stats()`. */
export interface BackendStats {
  /** `memory`, `redis`, ... */
  kind: string
  /** Whether the backend can publish now. */
  connected: boolean
  /** Events held in this process's history (0 where history lives elsewhere). */
  historyEvents: number
  /** Bytes of history held in this process (0 where history lives elsewhere). */
  historyBytes: number
  /** Topics the backend tracks in this process. */
  topics: number
}

const ID = /^([a-z0-9]{1,24})-(\d{1,16})$/

/** The id of `seq` in `epoch`. */
export function formatId (epoch: string, seq: number): string {
  return epoch + '-' + seq
}

/** Splits a hub id into epoch and seq; null if it is not one. */
export function parseId (id: string): { epoch: string, seq: number } | null {
  const m = ID.exec(id)
  if (m === null) return null
  const seq = Number(m[2])
  return Number.isSafeInteger(seq) ? { epoch: m[1], seq } : null
}

/** A fresh epoch: the time in base 36 and a random tail, unique per history. */
export function newEpoch (): string {
  return Date.now().toString(36) + Math.floor(Math.random() * 36 ** 4).toString(36).padStart(4, '0')
}
