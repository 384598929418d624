/**
 * The public types of `fastify-sse-hub/client` (subscribe, follow and their
 * options), typed from the server's channel definitions through type-only
 * imports. Erased at build: the client entry still loads nothing at run time.
 */
import type { Schema as TSchema, Static } from './types.js'

/** Why the hub could not replay what a client missed; the same as the server's `ResetReason`. */
export type ResetReason = 'unknown' | 'trimmed' | 'epoch'

/** The connection, as the page sees it: `connecting` (or reconnecting), `open`, or `closed` for good. */
export type ConnectionState = 'connecting' | 'open' | 'closed'

/**
 * Anything that carries a channel's event map: a channel (`typeof ticker`),
 * or a topic of a templated one (`ReturnType<typeof room.topic>`).
 */
export type ChannelLike =
  | { readonly events: Record<string, TSchema> }
  | { readonly channel: { readonly events: Record<string, TSchema> } }

/** The event map of a channel or topic type. */
export type EventsOf<C> =
  C extends { readonly events: infer E } ? E
    : C extends { readonly channel: { readonly events: infer E } } ? E
      : never

/** The event names of `C`; of every member when `C` is a union (a stream that follows several channels). */
export type EventNames<C> = C extends unknown ? keyof EventsOf<C> & string : never

/** The payload type of `event` on `C`, as `Static<schema>`; a union where several channels of `C` declare it. */
export type EventData<C, K extends string> =
  C extends unknown
    ? EventsOf<C> extends infer E
      ? K extends keyof E ? (E[K] extends TSchema ? Static<E[K]> : never) : never
      : never
    : never

/** What a client handler learns about an event besides its payload. */
export interface ClientEventMeta<K extends string = string> {
  /** The hub id of the event (`<epoch>-<seq>`): what a later resume starts after. */
  id: string
  /** The event name. */
  event: K
}

/**
 * One handler per event of `C`, each typed from its schema. All optional.
 * Without a channel type (`C` = never) no handler is accepted: pass one,
 * as in `subscribe<typeof ticker>(...)`.
 */
export type EventHandlers<C> = [C] extends [never]
  ? { readonly [event: string]: never }
  : { [K in EventNames<C>]?: (data: EventData<C, K>, meta: ClientEventMeta<K>) => void }

/** What `onReset` is told: the hub could not replay the gap, so state should be fetched anew. */
export interface ResetInfo {
  /** The id the client asked to resume from (as the hub received it, at most 64 characters). */
  lastEventId: string
  /** Why the gap could not be replayed: `epoch` (the hub restarted with no history), `trimmed` or `unknown`. */
  reason: ResetReason
  /** The hub's head id at the reset: the stream goes on with the events published after it. */
  id: string
}

/** The part of an `EventSource` this client uses; the browser's and the `eventsource` package's both fit. */
export interface EventSourceLike {
  readonly readyState: number
  readonly url: string
  addEventListener: (type: string, listener: (event: any) => void) => void
  removeEventListener: (type: string, listener: (event: any) => void) => void
  close: () => void
}

/** An `EventSource` constructor: the browser's global, or one from a package in Node. */
export type EventSourceConstructor = new (url: string, init?: any) => EventSourceLike

/** Options of {@link subscribe}. */
export interface SubscribeOptions {
  /**
   * Resume after this id (one kept from an earlier session, e.g. with state
   * stored alongside it): sent as the `lastEventId` query parameter. Once
   * the stream has delivered events, reconnections send their own
   * `Last-Event-ID` header, which the hub prefers.
   */
  lastEventId?: string
  /**
   * Called when the hub says it cannot replay what was missed (`event: reset`):
   * the app should fetch its state again. Live events follow.
   */
  onReset?: (info: ResetInfo) => void
  /** Called on every change of {@link Subscription.state}. */
  onStateChange?: (state: ConnectionState, previous: ConnectionState) => void
  /**
   * Called when an event's data is not JSON, or a handler (or `onReset`)
   * throws. Without it, such an error is thrown again outside the stream's
   * dispatch, as an uncaught listener error would be.
   */
  onError?: (error: Error, meta: { event: string, id: string }) => void
  /** The `EventSource` constructor to use. @default globalThis.EventSource (browsers; Node >= 20 needs one passed in) */
  EventSource?: EventSourceConstructor
  /** Sends cookies on cross-origin streams (the EventSource `withCredentials` flag). @default false */
  withCredentials?: boolean
  /** More options for the EventSource constructor, e.g. `{ fetch }` for the `eventsource` package. */
  eventSourceInit?: Record<string, unknown>
  /**
   * What to do when the EventSource gives up for good (`readyState` CLOSED):
   * on any non-200 answer, such as a proxy's `502` while the app restarts,
   * and in some engines on a network error. By default the client opens a
   * new EventSource after a jittered, capped backoff (`delay` ms doubled
   * per failed attempt up to `maxDelay`, each wait a random 50 to 100 % of
   * that), resuming after its `lastEventId` (sent as the `lastEventId`
   * query parameter), so nothing is lost; the count starts again once a
   * stream opens. `false`: give up as the EventSource does (`state` becomes
   * `closed`).
   * @default { delay: 1000, maxDelay: 30000 }
   */
  reconnect?: false | ReconnectOptions
}

/** Backoff of {@link SubscribeOptions.reconnect}. */
export interface ReconnectOptions {
  /** The first wait, in ms, before a new EventSource is opened. @default 1000 */
  delay?: number
  /** The longest wait, in ms. @default 30000 */
  maxDelay?: number
}

/** A running subscription. */
export interface Subscription {
  /**
   * The URL the current EventSource was opened with (including the
   * `lastEventId` parameter: the option's, or after a reconnection by the
   * client, the id it resumed from).
   */
  readonly url: string
  /**
   * `connecting` (also between reconnections, and while the client waits to
   * open a new EventSource), `open`, or `closed` (by `close()`, or given up
   * by the EventSource when `reconnect` is `false`).
   */
  readonly state: ConnectionState
  /**
   * The id of the last event received (a handled one, the stream's head, or
   * the last reset), else the `lastEventId` option; `undefined` before either.
   */
  readonly lastEventId: string | undefined
  /** The current EventSource (a new one after each reconnection by the client). */
  readonly source: EventSourceLike
  /** Closes the stream for good: no handler is called after it. Safe to call twice. */
  close: () => void
}

/** Why a run ended, as the hub's `end` event says (the server's `RunEndReason`). */
export type RunEndReason = 'complete' | 'cancelled' | 'error' | 'lost'

/**
 * What {@link Follow.finished} resolves to: the event that ended the
 * generation, or `event: null` when the server answered `204` (the client's
 * last id already covered the end: a reload right after it, or an id kept
 * from a finished generation). Its handler, if any, has run first.
 */
export type FollowEnd<C> =
  | (C extends unknown ? { [K in EventNames<C>]: { event: K, data: EventData<C, K>, id: string } }[EventNames<C>] : never)
  | { event: 'end', data: { reason: RunEndReason }, id: string }
  | { event: null, data: null, id: string | null }

/** The part of `Storage` (sessionStorage, localStorage) that {@link follow} uses. */
export interface StorageLike {
  getItem: (key: string) => string | null
  setItem: (key: string, value: string) => void
  removeItem: (key: string) => void
}

/** Options of {@link follow}: those of {@link subscribe}, and these. */
export interface FollowOptions<C = never> extends SubscribeOptions {
  /**
   * The channel's event(s) that end a generation, as the route's `until`
   * (`reply.sse({ ..., until: 'done' })`): the follow resolves after the
   * first one. The hub's `end` always ends it too.
   */
  until?: EventNames<C> | ReadonlyArray<EventNames<C>>
  /**
   * Where to keep the last event id, so a reload continues exactly after it:
   * stored after every event (after its handler ran, in the same task),
   * read at the start (as `lastEventId`, unless that option is given), and
   * removed at the end (the terminal event, `204`, `404`). Keep what the
   * page rendered in the same handlers, in the same storage: the two then
   * always agree. Use one key per generation.
   */
  storageKey?: string
  /** The storage for `storageKey`. @default globalThis.sessionStorage (per tab: a second tab follows from the start) */
  storage?: StorageLike
  /**
   * The `fetch` used to learn why the EventSource gave up (`204`, `404`, a
   * proxy's `502`, ...), which an EventSource does not tell.
   * @default eventSourceInit.fetch, else globalThis.fetch
   */
  fetch?: (url: string, init: FetchInitLike) => Promise<FetchResponseLike>
}

/** What {@link follow} passes to `fetch`: the global one, or undici's, takes it. */
export interface FetchInitLike {
  headers: Record<string, string>
  signal: AbortSignal
  credentials: 'include' | 'same-origin'
}

/** The part of a `fetch` Response that {@link follow} reads. */
export interface FetchResponseLike {
  readonly status: number
  json: () => Promise<unknown>
  readonly body?: { cancel: () => Promise<void> } | null
}

/** A running follow of a generation. */
export interface Follow<C = never> {
  /**
   * Resolves once the generation ended (see {@link FollowEnd}), after its
   * handler ran; the EventSource is then closed, so it does not reconnect.
   * Rejects with a {@link FollowError}: `FST_ERR_SSEHUB_STREAM_NOT_FOUND`
   * (404: no such generation, or its history expired), another HTTP answer
   * that will not change (`FST_ERR_SSEHUB_CLIENT_HTTP`, e.g. 401 or 403),
   * `FST_ERR_SSEHUB_CLIENT_NETWORK` (unreachable, with `reconnect: false`
   * only: otherwise the client keeps trying and `state` says `connecting`),
   * or `FST_ERR_SSEHUB_CLIENT_CLOSED` after `close()`.
   */
  readonly finished: Promise<FollowEnd<C>>
  /** The id this follow started after (the option's, or the stored one); `undefined` when it followed from the start. */
  readonly resumedFrom: string | undefined
  /** As {@link Subscription.state}. */
  readonly state: ConnectionState
  /** As {@link Subscription.lastEventId}. */
  readonly lastEventId: string | undefined
  /** As {@link Subscription.url}. */
  readonly url: string
  /** Stops following; `finished` rejects with `FST_ERR_SSEHUB_CLIENT_CLOSED`. The stored id is kept, so a later follow resumes. */
  close: () => void
}
