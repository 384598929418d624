/**
 * The hub's public types: `reply.sse(options)`, `stats()`, its events.
 */
import type { FastifyRequest } from 'fastify'
import type { Subscribable } from '../channel.js'
import type { CloseReason, SseStream } from '../stream.js'

export type { ResetReason } from '../encoder.js'

/** Options of `reply.sse(options)`. */
export interface SseReplyOptions {
  /** Channels (plain ones) and topics to follow on this stream. */
  subscribe?: Subscribable[]
  /**
   * Labels for targeted disconnects (`fastify.sse.disconnect({ tag })`),
   * such as `user:42` or `tenant:acme`: at most 32, each 1 to 128 printable
   * ASCII characters.
   */
  tags?: string[]
  /** This stream's lifetime in ms (the shorter of this and the plugin's `maxLifetime` applies); see `maxLifetime`. */
  maxLifetime?: number
  /**
   * `-N`: a subscriber that connects without `Last-Event-ID` first gets the
   * newest N events of each followed topic still in history, in order, then
   * live events (Nchan's `first_message: -N`). From -1 to -10000.
   * `'start'`: every event of each followed topic still in history (a whole
   * generation of `fastify.sse.run()`, for a late joiner or a second viewer).
   * A client resuming with `Last-Event-ID` continues from its id instead.
   */
  since?: number | 'start'
  /**
   * Makes the response a follow of a finite stream: it ends right after an
   * event of one of these names, or the hub's `end` (the last event of every
   * `fastify.sse.run()`), which always ends it. A follow of a topic whose
   * last event in history is such an event, at or before the client's
   * `Last-Event-ID`, is answered `204` (a native EventSource then stops
   * reconnecting); a follow of a topic with nothing in history and no run
   * running is answered `404` `FST_ERR_SSEHUB_STREAM_NOT_FOUND` (never
   * started, or expired).
   */
  until?: string | string[]
}

/** Live counts for this process, cheap enough to read per request. */
export interface SseStats {
  /** Streams open now. */
  openStreams: number
  /** Streams opened since the plugin started. */
  streamsOpened: number
  /** Stream subscriptions to topics now (a stream on 3 topics counts 3). */
  subscriptions: number
  /** Topics with at least one subscriber or listener in this process. */
  topics: number
  /** Per channel name: its topics with subscribers here, and their subscriptions. */
  channels: Record<string, { topics: number, subscribers: number }>
  /** Events published from this process. */
  published: number
  /** Events handed to streams (events x subscribers). */
  deliveries: number
  /** Streams cut as slow clients (see `maxBufferedBytes` and `slowClientTimeout`). */
  slowClientCuts: number
  /** Streams turned away over `maxConnections` (told to retry later). */
  shed: number
  /** Streams turned away over `maxStreamsPerClient`. */
  shedPerClient: number
  /** Streams ended at the end of their lifetime (`maxLifetime`). */
  expired: number
  /** Streams ended by `disconnect({ tag })`. */
  disconnected: number
  /** Streams that resumed from history with `Last-Event-ID`. */
  resumes: number
  /** Streams that got a `reset` instead (the gap was not in history). */
  resets: number
  /** Events and bytes in this process's history (0 on backends that keep it elsewhere). */
  historyEvents: number
  historyBytes: number
  /** Socket writes made; each connection gets at most one per event-loop turn. */
  writes: number
  /** Heartbeat comments written to idle streams. */
  heartbeats: number
  /** The backend: its kind and whether it can publish now. */
  backend: { kind: string, connected: boolean }
}

/** The events `fastify.sse` emits, for custom accounting. */
export interface SseHubEvents {
  /** A stream opened (after authorisation). */
  connect: [stream: SseStream]
  /** A stream ended, and why. */
  disconnect: [stream: SseStream, reason: CloseReason]
}

/** @internal The hub's options, normalised. */
export interface HubSettings {
  maxConnections: number
  maxLifetime: number
  maxStreamsPerClient: number
  clientKey: (request: FastifyRequest) => string
  history: number
  historyTtl: number
  maxHistoryBytes: number
}
