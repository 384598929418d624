/**
 * Plugin options: one frozen set of defaults, merged and checked once at
 * `register()`. A bad option throws there with a coded error, never per request.
 */
import { FST_ERR_SSEHUB_OPTION_INVALID } from './errors.js'
import type { FastifyRequest } from 'fastify'
import type { Backend } from './backend.js'
import { memoryBackend } from './backends/memory.js'

/** Options of `fastify.register(ssePlugin, options)`. */
export interface SseHubOptions {
  /**
   * Milliseconds of silence after which a stream gets a `:` comment, so
   * proxies and load balancers do not cut it as idle; `false` disables.
   * One shared timer serves every stream; a stream is never silent longer
   * than this, and streams that carry traffic get no pings.
   * @default 15000
   */
  heartbeat?: number | false
  /**
   * Base reconnection delay in ms sent as `retry:` when a stream opens;
   * `false` sends none (browsers then use their own default: 3 s in Chromium
   * and Safari, 5 s in Firefox).
   * @default 3000
   */
  retry?: number | false
  /**
   * Up to this many ms, chosen at random per stream, are added to `retry`,
   * so clients cut off together do not come back together.
   * @default 1000
   */
  retryJitter?: number
  /**
   * On `fastify.close()`, every stream is told `retry: retry + random(0..shutdownJitter)`
   * before it ends, so a restarting fleet's clients return spread over this window.
   * @default 10000
   */
  shutdownJitter?: number
  /**
   * Largest event, in bytes once framed, that `send()` or a publish accepts;
   * a larger one is refused with `FST_ERR_SSEHUB_EVENT_TOO_LARGE` before
   * anything is written.
   * @default 1048576 (1 MiB)
   */
  maxEventBytes?: number
  /**
   * Unsent bytes of its own a connection may hold before the server cuts it
   * as a slow client (it reconnects and resumes): what `send()` and
   * replays queue for it alone, never more than this plus one write. Hub
   * events shared with other subscribers count once in memory; a
   * connection holding more than this in all is watched, and cut after
   * `slowClientTimeout` without progress or past 16 times this.
   * Must be at least `maxEventBytes`.
   * @default 4194304 (4 MiB)
   */
  maxBufferedBytes?: number
  /**
   * A stream holding more than `maxBufferedBytes` unsent that makes no
   * progress (its client reads nothing) for this many ms is cut as a slow
   * client. A client that keeps reading is never cut for a burst that it
   * shares with other subscribers, however large, up to 16 times
   * `maxBufferedBytes` unsent; see the README's "Slow clients".
   * @default 5000
   */
  slowClientTimeout?: number
  /**
   * Events kept per topic for `Last-Event-ID` resume. A client that missed
   * more gets a `reset` event instead of a silent gap.
   * @default 1000
   */
  history?: number
  /**
   * Milliseconds an event stays in history; 0 keeps events until the other
   * bounds drop them.
   * @default 600000 (10 minutes)
   */
  historyTtl?: number
  /**
   * Bytes of history for the whole hub, counted from above: each event's
   * payload twice (its JSON and its SSE frame) plus about 320 bytes, and
   * about 360 bytes per topic that holds history. Past it, the oldest events
   * go first.
   * @default 67108864 (64 MiB)
   */
  maxHistoryBytes?: number
  /**
   * Topics that hold history but have no subscriber in this process, kept at
   * most; past it the one idle longest is freed (a later resume on it gets
   * `reset`). Bounds the memory of publishing to many distinct topics.
   * @default 10000
   */
  maxIdleTopics?: number
  /**
   * Open streams this process accepts. Past it, a new stream is answered 200
   * with a jittered `retry:` (`retry` + random(0..`shutdownJitter`)) and ended
   * at once, so clients come back later; a non-200 would make a native
   * EventSource give up for good. Counted as `shed` in stats.
   * @default Infinity
   */
  maxConnections?: number
  /**
   * Where ids, history and cross-process delivery live.
   * @default memoryBackend() (this process only)
   */
  backend?: Backend
  /**
   * The longest a stream may live, in ms; 0 for no limit. When it is up the
   * stream ends cleanly with a jittered `retry:`, so the client reconnects,
   * goes through authentication again (an expired token is refused there)
   * and resumes without loss. `reply.sse({ maxLifetime })` can shorten it
   * per stream, for example to an access token's expiry.
   * @default 0
   */
  maxLifetime?: number
  /**
   * Open streams per client key (see `clientKey`); past it, a new stream is
   * shed like over `maxConnections`: 200, a jittered `retry:`, an end.
   * Counted as `shedPerClient` in stats.
   * @default Infinity
   */
  maxStreamsPerClient?: number
  /**
   * What counts as one client for `maxStreamsPerClient`.
   * @default (request) => request.ip
   */
  clientKey?: (request: FastifyRequest) => string
}

/** The options after defaults and checks: every field present. */
export interface NormalizedOptions {
  readonly heartbeat: number | false
  readonly retry: number | false
  readonly retryJitter: number
  readonly shutdownJitter: number
  readonly maxEventBytes: number
  readonly maxBufferedBytes: number
  readonly slowClientTimeout: number
  readonly history: number
  readonly historyTtl: number
  readonly maxHistoryBytes: number
  readonly maxIdleTopics: number
  readonly maxConnections: number
  readonly backend: Backend | null
  readonly maxLifetime: number
  readonly maxStreamsPerClient: number
  readonly clientKey: (request: FastifyRequest) => string
}

/** The defaults, frozen; documented on {@link SseHubOptions}. */
export const defaults: NormalizedOptions = Object.freeze({
  heartbeat: 15_000,
  retry: 3_000,
  retryJitter: 1_000,
  shutdownJitter: 10_000,
  maxEventBytes: 1024 * 1024,
  maxBufferedBytes: 4 * 1024 * 1024,
  slowClientTimeout: 5_000,
  history: 1_000,
  historyTtl: 600_000,
  maxHistoryBytes: 64 * 1024 * 1024,
  maxIdleTopics: 10_000,
  maxConnections: Infinity,
  backend: null,
  maxLifetime: 0,
  maxStreamsPerClient: Infinity,
  clientKey: (request: FastifyRequest): string => request.ip
})

const MAX_MS = 2 ** 31 - 1

/** `value` if it is a whole number from `min` to `max`, else a coded `FST_ERR_SSEHUB_OPTION_INVALID` naming `name`. */
export function int (name: string, value: unknown, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw new FST_ERR_SSEHUB_OPTION_INVALID(name, `must be a whole number from ${min} to ${max}, got ${String(value)}`)
  }
  return value
}

function intOrFalse (name: string, value: unknown, min: number, max: number): number | false {
  if (value === false) return false
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw new FST_ERR_SSEHUB_OPTION_INVALID(name, `must be false or a whole number from ${min} to ${max}, got ${String(value)}`)
  }
  return value
}

/** Merges `options` over the defaults and checks every field. */
export function normalizeOptions (options: SseHubOptions = {}): NormalizedOptions {
  if (options === null || typeof options !== 'object') {
    throw new FST_ERR_SSEHUB_OPTION_INVALID('options', `must be an object, got ${options === null ? 'null' : typeof options}`)
  }
  const known = new Set(Object.keys(defaults))
  for (const key of Object.keys(options)) {
    if (!known.has(key)) throw new FST_ERR_SSEHUB_OPTION_INVALID(key, `is not an option; known options are ${[...known].join(', ')}`)
  }
  // An option given as undefined means its default, as its type says.
  const given: Record<string, unknown> = {}
  for (const [key, value] of Object.entries(options)) if (value !== undefined) given[key] = value
  const o = { ...defaults, ...given } as NormalizedOptions
  const result: NormalizedOptions = {
    heartbeat: intOrFalse('heartbeat', o.heartbeat, 10, MAX_MS),
    retry: intOrFalse('retry', o.retry, 0, MAX_MS),
    retryJitter: int('retryJitter', o.retryJitter, 0, MAX_MS),
    shutdownJitter: int('shutdownJitter', o.shutdownJitter, 0, MAX_MS),
    maxEventBytes: int('maxEventBytes', o.maxEventBytes, 64, 2 ** 30),
    maxBufferedBytes: int('maxBufferedBytes', o.maxBufferedBytes, 64, 2 ** 32),
    slowClientTimeout: int('slowClientTimeout', o.slowClientTimeout, 100, MAX_MS),
    history: int('history', o.history, 0, 10_000_000),
    historyTtl: int('historyTtl', o.historyTtl, 0, MAX_MS),
    maxHistoryBytes: int('maxHistoryBytes', o.maxHistoryBytes, 0, Number.MAX_SAFE_INTEGER),
    maxIdleTopics: int('maxIdleTopics', o.maxIdleTopics, 0, Number.MAX_SAFE_INTEGER),
    maxConnections: o.maxConnections === Infinity ? Infinity : int('maxConnections', o.maxConnections, 0, Number.MAX_SAFE_INTEGER),
    backend: o.backend ?? memoryBackend(),
    maxLifetime: int('maxLifetime', o.maxLifetime, 0, MAX_MS),
    maxStreamsPerClient: o.maxStreamsPerClient === Infinity ? Infinity : int('maxStreamsPerClient', o.maxStreamsPerClient, 1, Number.MAX_SAFE_INTEGER),
    clientKey: o.clientKey
  }
  if (typeof result.clientKey !== 'function') throw new FST_ERR_SSEHUB_OPTION_INVALID('clientKey', 'must be a function (request) => string')
  const b = result.backend as Partial<Backend> | null
  if (b === null || typeof b !== 'object' || typeof b.start !== 'function' || typeof b.publish !== 'function' || typeof b.read !== 'function') {
    throw new FST_ERR_SSEHUB_OPTION_INVALID('backend', 'must be a backend such as memoryBackend() or redisBackend({ url })')
  }
  if (result.maxBufferedBytes < result.maxEventBytes) {
    throw new FST_ERR_SSEHUB_OPTION_INVALID('maxBufferedBytes', `must be at least maxEventBytes (${result.maxEventBytes}), got ${result.maxBufferedBytes}`)
  }
  return Object.freeze(result)
}
