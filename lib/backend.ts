/**
 * The Backend contract: what the hub asks of the store and transport behind
 * it, and what it gives back. A backend assigns ids, keeps history and
 * carries events to every process; it knows nothing of HTTP, streams or
 * channels' schemas, and the hub never knows which backend it runs on.
 *
 * Every backend proves it keeps this contract by running the shared suite
 * of `fastify-sse-hub/testing` (`backendContract`).
 */
import type { FastifyBaseLogger } from 'fastify'

export { formatId, parseId, newEpoch } from './ids.js'

/** One published event as the backend carries it. Immutable once made. */
export interface HubEvent {
  /** The hub id: `<epoch>-<seq>`, opaque ASCII of at most 64 bytes. */
  readonly id: string
  /** The sequence number inside the id: strictly increasing across all topics of the hub. */
  readonly seq: number
  /** The topic key (`ticker`, `rooms/a`). */
  readonly topic: string
  /** The name of the channel the topic belongs to (`ticker`, `rooms/:roomId`). */
  readonly channel: string
  /** The event name. */
  readonly event: string
  /** The payload as JSON text, serialised once by the publisher. */
  readonly data: string
}

/** The history bounds a backend applies, from the plugin options. */
export interface HistoryLimits {
  /** Events kept per topic. */
  history: number
  /** Age in ms after which an event leaves history; 0 keeps events until other bounds drop them. */
  historyTtl: number
  /** Bytes of history kept for the whole hub (backends that hold history in this process). */
  maxHistoryBytes: number
  /** Topics with history but no subscriber kept at most (backends that hold history in this process). */
  maxIdleTopics: number
}

/**
 * History bounds of one channel's topics, declared with the channel
 * (`history: { limit, ttl, bytes }`): they replace the plugin's bounds for
 * that channel, so a long generation can be kept whole without changing
 * other channels.
 */
export interface ChannelHistory {
  /** Events kept per topic. */
  limit: number
  /**
   * Ms a topic's history is kept after its LAST event, then dropped whole (a
   * generation is kept while it runs and this long after its end); 0 keeps
   * it until the other bounds drop it.
   */
  ttl: number
  /** Bytes of history for all topics of the channel together (backends that hold history in this process), in a budget of its own. */
  bytes: number
}

/** One consistent read of the history of some topics. */
export interface HistoryRead {
  /**
   * The highest seq assigned in the whole hub at the moment of the read. Every
   * event of the topics read with a seq in (after, head] is in `events` (unless
   * `trimmed`); every later one is delivered live.
   */
  head: number
  /** The events of the topics read with a seq in (after, head], merged in seq order. Empty when `trimmed`. */
  events: HubEvent[]
  /** True when some event of these topics after `after` is no longer in history: the caller must signal a gap. */
  trimmed: boolean
}

/** What the hub gives a backend when it starts. */
export interface BackendHost {
  /**
   * Takes the events of every topic this process subscribed to, each exactly
   * once, in strictly increasing `seq` order across all topics. `payload` is
   * the published object when the event was published in this process (it
   * spares local listeners a parse); the backend must not keep it.
   */
  deliver: (event: HubEvent, payload?: unknown) => void
  /**
   * Tells the hub that events of subscribed topics may have been missed (a
   * broken or stalled connection to the broker). The hub brings every stream
   * up to date from history, or signals `reset` where history no longer
   * covers the gap.
   */
  interrupted: () => void
  /**
   * Tells the hub that the backend's history was replaced (a new epoch: the
   * broker was flushed, swapped, or went backwards). Every stream gets one
   * `reset` and follows the new epoch from its start. Called once per change.
   */
  epochChanged: (oldEpoch: string) => void
  /** A control message another process broadcast (never this process's own). */
  control: (message: string) => void
  /** Fastify's logger: backends log here and never throw into the app. */
  readonly log: FastifyBaseLogger
}

/**
 * A hub backend. The contract (`backendContract` checks each point):
 * - `start()` resolves once `epoch` is known and `publish` may be called.
 * - `publish()` assigns the next id (strictly increasing across all topics of
 *   the hub, in one order shared by every process; never an id an earlier
 *   event had), stores the event in history, and carries it to every process
 *   that subscribed to its topic; it resolves to the stored event, or
 *   rejects with a coded error.
 * - `subscribe(topic)` makes this process receive the topic's events through
 *   `host.deliver`; the hub calls it once per topic however many local
 *   subscribers, and `unsubscribe(topic)` once when the last leaves. A
 *   backend may deliver more than was subscribed; the hub drops what nobody
 *   here follows.
 * - `read(topics, after)` is ONE consistent snapshot of those topics'
 *   history (see {@link HistoryRead}); when it resolves, every event of a
 *   subscribed topic with a seq at or below its `head` has already been
 *   handed to `host.deliver`.
 * - `head()` is the highest seq assigned so far.
 * - `close()` releases what the backend opened.
 *
 * Optional capabilities: `subscribeChannel`/`unsubscribeChannel` (channel-wide
 * listeners across processes) and `broadcast` (control messages across
 * processes); a single-process backend leaves them out.
 */
export interface Backend {
  /** The epoch carried by every id: a new one means a new history, so old ids get `reset`. */
  readonly epoch: string
  /** Starts the backend with the hub's bounds. */
  start: (host: BackendHost, limits: HistoryLimits) => Promise<void>
  /** Publishes one serialised event; `payload` is only passed back to this process's `host.deliver`. */
  publish: (topic: string, event: string, data: string, payload: unknown, channel: string) => Promise<HubEvent>
  /** Starts delivering `topic` (of channel `channel`) to this process; resolves once it is in effect. */
  subscribe: (topic: string, channel: string) => Promise<void>
  /** Stops delivering `topic` (of channel `channel`) to this process. */
  unsubscribe: (topic: string, channel: string) => void
  /** One consistent read of `topics` after `after`; see {@link HistoryRead}. */
  read: (topics: readonly string[], after: number) => Promise<HistoryRead>
  /** The newest `count` events of `topic` still in history, oldest first. */
  latest: (topic: string, count: number) => Promise<HubEvent[]>
  /** The highest seq assigned so far. */
  head: () => Promise<number>
  /** Counts for `stats()`. */
  stats: () => BackendStats
  /** Releases connections and timers the backend opened. */
  close: () => Promise<void>
  /**
   * Starts delivering every topic of channel `channel` (for channel-wide
   * listeners); with `subscribe` on some of them too, each event still
   * arrives once. Resolves once it is in effect.
   */
  subscribeChannel?: (channel: string) => Promise<void>
  /** Stops `subscribeChannel`. */
  unsubscribeChannel?: (channel: string) => void
  /** Sends a control message to every other process of the hub. */
  broadcast?: (message: string) => Promise<void>
  /**
   * Applies `bounds` to the history of every topic of channel `channel`
   * from now on, instead of the plugin-wide limits. The hub calls it when a
   * channel that declares `history` is attached, before its first publish.
   */
  channelHistory?: (channel: string, bounds: ChannelHistory) => void
  /** Producer runs (`fastify.sse.run()`); see {@link RunStore}. */
  readonly runs?: RunStore
}

/**
 * The backend's side of producer runs (`fastify.sse.run()`): one run at a
 * time per topic, a fence so a producer whose run was ended cannot publish
 * into it again, and the terminal event published in the same atomic step
 * that ends a run, so followers always see the end and nothing after it.
 */
export interface RunStore {
  /**
   * Claims `topic` for a run owned by this process. Resolves to the run's
   * fence token, or null when a run on `topic` is still running.
   * `lost` is the data (JSON) of the `end` event to publish if this process
   * dies while the run is running (a backend spanning processes detects
   * that through a lease, and publishes it itself).
   */
  begin: (topic: string, channel: string, lost: string) => Promise<string | null>
  /** Publishes as the run holding `token`; rejects with `FST_ERR_SSEHUB_RUN_ENDED` once that run has ended. */
  publish: (token: string, topic: string, event: string, data: string, payload: unknown, channel: string) => Promise<HubEvent>
  /**
   * Ends the run on `topic` (only the one holding `token`, when given) and
   * publishes `event` with `data` as its last event, atomically. Resolves to
   * that event, or null when no such run was running.
   */
  end: (topic: string, token: string | null, event: string, data: string, channel: string) => Promise<HubEvent | null>
  /** Whether a run on `topic` is running, has ended (and its record is still kept), or is unknown. */
  state: (topic: string) => Promise<'running' | 'ended' | null>
  /** The seq of the first event of the last run on `topic` (0: none yet, or no record). */
  first: (topic: string) => Promise<number>
  /**
   * Set by the hub: the backend calls it when a run owned by this process
   * was ended by another (`cancelled`), or lost its lease (`lost`), so its
   * producer stops.
   */
  onEnded: ((topic: string, token: string, reason: 'cancelled' | 'lost') => void) | null
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

/** Merges per-topic lists, each in seq order, into one list in seq order. */
export function mergeBySeq (lists: HubEvent[][]): HubEvent[] {
  let nonEmpty = 0
  let only: HubEvent[] = []
  for (const list of lists) {
    if (list.length > 0) {
      nonEmpty++
      only = list
    }
  }
  if (nonEmpty <= 1) return only
  return lists.flat().sort((a, b) => a.seq - b.seq)
}
