/**
 * `fastify-sse-hub/client`: a small, typed subscriber to a hub's streams for
 * browsers, and for Node >= 20 with an injected EventSource constructor (for
 * example from the `eventsource` package).
 *
 * Its types come from the server's own channel definitions, through
 * TYPE-ONLY imports: nothing of Fastify, TypeBox or the hub is loaded at run
 * time, so a browser bundle that imports this module and the *types* of its
 * channels (`import type { ticker } from './channels.js'`) carries neither.
 *
 * ```ts
 * import { subscribe } from 'fastify-sse-hub/client'
 * import type { ticker } from './channels.js'
 *
 * const sub = subscribe<typeof ticker>('/ticker', {
 *   price: (data, meta) => render(data.symbol, data.price, meta.id),
 *   halt: (data) => showHalt(data.symbol)
 * }, { onReset: () => refetchPrices() })
 * ```
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

interface MessageLike {
  data?: unknown
  lastEventId?: unknown
  type?: string
}

const CLOSED = 2
/** The hub's first event on a fresh stream: no data, but its id is where a resume starts. */
const HEAD_EVENT = 'sse-hub:head'
const DEFAULT_DELAY = 1_000
const DEFAULT_MAX_DELAY = 30_000

function positive (value: unknown, name: string, fallback: number): number {
  if (value === undefined) return fallback
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) throw new TypeError(`fastify-sse-hub/client: options.reconnect.${name} must be a number of ms >= 0`)
  return value
}

/** Appends `lastEventId=<id>` to `url`'s query, before any `#fragment`. */
function withLastEventId (url: string, id: string): string {
  const hash = url.indexOf('#')
  const base = hash === -1 ? url : url.slice(0, hash)
  const fragment = hash === -1 ? '' : url.slice(hash)
  const sep = base.includes('?') ? (base.endsWith('?') || base.endsWith('&') ? '' : '&') : '?'
  return `${base}${sep}lastEventId=${encodeURIComponent(id)}${fragment}`
}

function toError (value: unknown): Error {
  return value instanceof Error ? value : new Error(String(value))
}

/**
 * Opens an event stream at `url` and calls `handlers[event](data, meta)` for
 * each event, with `data` parsed from JSON and typed from the channel
 * definitions `C` (a channel type, a topic type, or a union of them for a
 * stream that follows several). Handles the hub's `reset` with
 * `options.onReset`. Reconnection is the EventSource's own; the hub resumes
 * it from `Last-Event-ID` without loss or duplicates. Where the EventSource
 * gives up (a non-200 answer), the client opens a new one after a capped,
 * jittered backoff, resuming from its last id (`options.reconnect`).
 */
export function subscribe<C extends ChannelLike = never> (
  url: string | URL,
  handlers: EventHandlers<C>,
  options: SubscribeOptions = {}
): Subscription {
  return open(url, handlers as Record<string, unknown>, options, null)
}

/** What {@link follow} adds to a subscription's machinery. */
interface Hooks {
  /** Events handled here besides the channel's handlers (the hub's `end`). */
  extra: Array<[string, (data: unknown, id: string) => void]>
  /** An event with an id was handled (and the subscription is still open). */
  seen: (id: string) => void
  /** The EventSource gave up for good: find out why; `retry()` opens a new one after the backoff. */
  gaveUp: (retry: () => void) => void
}

function open (
  url: string | URL,
  handlers: Record<string, unknown>,
  options: SubscribeOptions,
  hooks: Hooks | null
): Subscription {
  if (handlers === null || typeof handlers !== 'object') throw new TypeError('fastify-sse-hub/client: handlers must be an object of event name -> function')
  const Ctor: EventSourceConstructor | undefined = options.EventSource ?? (globalThis as { EventSource?: EventSourceConstructor }).EventSource
  if (typeof Ctor !== 'function') {
    throw new TypeError('fastify-sse-hub/client: no EventSource here; pass one as options.EventSource (in Node, e.g. from the "eventsource" package)')
  }
  // Checked before anything connects: a throw here leaves nothing open.
  const table: Array<[string, (data: unknown, meta: ClientEventMeta) => void]> = []
  for (const name of Object.keys(handlers)) {
    const handler = (handlers as Record<string, unknown>)[name]
    if (handler === undefined) continue
    if (typeof handler !== 'function') throw new TypeError(`fastify-sse-hub/client: the handler of "${name}" must be a function`)
    if (name === 'reset' || name === 'open' || name === 'error') {
      throw new TypeError(`fastify-sse-hub/client: "${name}" is not a channel event (use options.${name === 'reset' ? 'onReset' : 'onStateChange'})`)
    }
    table.push([name, handler as (data: unknown, meta: ClientEventMeta) => void])
  }
  const base = String(url)
  let lastEventId: string | undefined
  if (options.lastEventId !== undefined && options.lastEventId !== null) {
    if (typeof options.lastEventId !== 'string') throw new TypeError('fastify-sse-hub/client: options.lastEventId must be a string')
    if (options.lastEventId !== '') lastEventId = options.lastEventId
  }
  const reconnect = options.reconnect === false ? null : options.reconnect ?? {}
  if (reconnect !== null && typeof reconnect !== 'object') throw new TypeError('fastify-sse-hub/client: options.reconnect must be false or { delay, maxDelay }')
  const delay = reconnect === null ? 0 : positive(reconnect.delay, 'delay', DEFAULT_DELAY)
  const maxDelay = reconnect === null ? 0 : Math.max(delay, positive(reconnect.maxDelay, 'maxDelay', DEFAULT_MAX_DELAY))
  const init: Record<string, unknown> = { ...options.eventSourceInit }
  if (options.withCredentials !== undefined) init.withCredentials = options.withCredentials

  let state: ConnectionState = 'connecting'
  let closed = false
  let attempts = 0
  let timer: ReturnType<typeof setTimeout> | undefined
  let href = ''
  let source!: EventSourceLike
  let listeners: Array<[string, (event: MessageLike) => void]> = []

  const setState = (next: ConnectionState): void => {
    if (next === state) return
    const previous = state
    state = next
    options.onStateChange?.(next, previous)
  }

  const fail = (err: unknown, event: string, id: string): void => {
    const error = toError(err)
    if (options.onError !== undefined) {
      options.onError(error, { event, id })
      return
    }
    setTimeout(() => { throw error }, 0)
  }

  /** Parses one message and runs `fn` with it; null data or a parse error goes to onError. */
  const dispatch = (name: string, ev: MessageLike, fn: (data: unknown, id: string) => void): void => {
    if (closed) return
    const id = typeof ev.lastEventId === 'string' ? ev.lastEventId : ''
    if (id !== '') lastEventId = id
    let data: unknown
    try {
      data = JSON.parse(String(ev.data))
    } catch (err) {
      fail(new Error(`fastify-sse-hub/client: the data of event "${name}" is not JSON (${toError(err).message})`), name, id)
      return
    }
    try {
      fn(data, id)
    } catch (err) {
      fail(err, name, id)
    }
    // After the handler, in the same task: a page that stores what it rendered there stores it with this id.
    if (!closed && id !== '') hooks?.seen(id)
  }

  const detach = (): void => {
    for (const [type, listener] of listeners) source.removeEventListener(type, listener)
    listeners = []
    source.close()
  }

  /** The EventSource gave up: a new one after the backoff, from the last id. */
  const retryLater = (): void => {
    detach()
    const ceiling = Math.min(maxDelay, delay * 2 ** Math.min(attempts, 30))
    attempts++
    // Jittered so that clients cut by one restart do not all return at once.
    const wait = ceiling * (0.5 + Math.random() / 2)
    timer = setTimeout(() => {
      timer = undefined
      if (!closed) connect()
    }, wait)
  }

  const connect = (): void => {
    // Sent as a query parameter: a new EventSource cannot send Last-Event-ID itself.
    href = lastEventId === undefined ? base : withLastEventId(base, lastEventId)
    source = new Ctor(href, init)
    const on = (type: string, listener: (event: MessageLike) => void): void => {
      listeners.push([type, listener])
      source.addEventListener(type, listener)
    }
    for (const [name, handler] of table) {
      on(name, ev => dispatch(name, ev, (data, id) => { handler(data, { id, event: name }) }))
    }
    for (const [name, handler] of hooks?.extra ?? []) on(name, ev => dispatch(name, ev, handler))
    on('reset', ev => dispatch('reset', ev, (data, id) => {
      const info = (data ?? {}) as Partial<ResetInfo>
      options.onReset?.({ lastEventId: String(info.lastEventId ?? ''), reason: info.reason as ResetReason, id })
    }))
    // Nobody handles it, but its id is where a resume of a quiet stream starts.
    on(HEAD_EVENT, ev => {
      if (closed || typeof ev.lastEventId !== 'string' || ev.lastEventId === '') return
      lastEventId = ev.lastEventId
      hooks?.seen(lastEventId)
    })
    on('open', () => {
      if (closed) return
      attempts = 0
      setState('open')
    })
    on('error', () => {
      if (closed) return
      if (source.readyState !== CLOSED) {
        setState('connecting')
      } else if (hooks !== null) {
        setState('connecting')
        detach()
        hooks.gaveUp(retryLater)
      } else if (reconnect === null) {
        setState('closed')
      } else {
        setState('connecting')
        retryLater()
      }
    })
  }
  connect()

  return {
    get url () { return href },
    get source () { return source },
    get state () { return state },
    get lastEventId () { return lastEventId },
    close () {
      if (closed) return
      closed = true
      if (timer !== undefined) clearTimeout(timer)
      timer = undefined
      detach()
      setState('closed')
    }
  }
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

/**
 * Why a follow failed. `code` is the hub's code where the server sent one
 * (`FST_ERR_SSEHUB_STREAM_NOT_FOUND` for a 404, `FST_ERR_SSEHUB_FORBIDDEN`
 * for a 403), else `FST_ERR_SSEHUB_CLIENT_HTTP` (another answer),
 * `FST_ERR_SSEHUB_CLIENT_NETWORK` or `FST_ERR_SSEHUB_CLIENT_CLOSED`.
 */
export class FollowError extends Error {
  /** The HTTP status, or null (network, closed). */
  readonly status: number | null
  readonly code: string
  /** The server's JSON answer, if it sent one. */
  readonly body: unknown
  constructor (message: string, code: string, status: number | null = null, body: unknown = undefined) {
    super(`fastify-sse-hub/client: ${message}`)
    this.name = 'FollowError'
    this.code = code
    this.status = status
    this.body = body
  }
}

const noop = (): void => {}

/**
 * Follows a generation (a run's topic, served by a route with
 * `reply.sse({ subscribe: [topic], since: 'start', until })`) to its end:
 * `handlers` get every event as with {@link subscribe}, and `finished`
 * resolves on the terminal event (one of `options.until`, or the hub's
 * `end`), after which the EventSource is closed. With `storageKey`, the last
 * id is kept in `sessionStorage` (or `options.storage`), so a reload
 * resumes exactly after it, and removed at the end. A `204` (the client
 * already had the end) resolves with `event: null`; a `404` (no such
 * generation, or expired) rejects with `FST_ERR_SSEHUB_STREAM_NOT_FOUND`.
 */
export function follow<C extends ChannelLike = never> (
  url: string | URL,
  handlers: EventHandlers<C>,
  options: FollowOptions<C> = {}
): Follow<C> {
  if (handlers === null || typeof handlers !== 'object') throw new TypeError('fastify-sse-hub/client: handlers must be an object of event name -> function')
  const until = new Set<string>(['end'])
  const given: unknown = options.until
  for (const name of (Array.isArray(given) ? given : given === undefined ? [] : [given]) as unknown[]) {
    if (typeof name !== 'string' || name === '') throw new TypeError('fastify-sse-hub/client: options.until must be an event name or an array of them')
    until.add(name)
  }
  let store: StorageLike | null = null
  const key = options.storageKey
  if (key !== undefined) {
    if (typeof key !== 'string' || key === '') throw new TypeError('fastify-sse-hub/client: options.storageKey must be a non-empty string')
    store = options.storage ?? (globalThis as { sessionStorage?: StorageLike }).sessionStorage ?? null
    if (store === null) throw new TypeError('fastify-sse-hub/client: no sessionStorage here; pass options.storage (anything with getItem, setItem, removeItem)')
  }
  const fetchFn = (options.fetch ?? options.eventSourceInit?.fetch ?? (globalThis as { fetch?: unknown }).fetch) as FollowOptions['fetch']
  if (typeof fetchFn !== 'function') throw new TypeError('fastify-sse-hub/client: no fetch here; pass options.fetch')

  const stored = (): string | undefined => {
    try {
      const id = store?.getItem(key as string)
      return typeof id === 'string' && id !== '' ? id : undefined
    } catch {
      return undefined
    }
  }
  // Storage can refuse (quota, privacy modes): the follow goes on, only a reload would start over.
  const write = (id: string | null): void => {
    if (store === null) return
    try {
      if (id === null) store.removeItem(key as string)
      else store.setItem(key as string, id)
    } catch {}
  }
  const resumedFrom = options.lastEventId !== undefined && options.lastEventId !== '' ? options.lastEventId : stored()

  let settled = false
  let succeed!: (end: FollowEnd<C>) => void
  let reject!: (err: FollowError) => void
  const finished = new Promise<FollowEnd<C>>((resolve, _reject) => { succeed = resolve; reject = _reject })
  let sub: Subscription | null = null
  let probing: AbortController | null = null
  const settle = (clear: boolean): boolean => {
    if (settled) return false
    settled = true
    probing?.abort()
    sub?.close()
    if (clear) write(null)
    return true
  }
  const end = (value: unknown): void => { if (settle(true)) succeed(value as FollowEnd<C>) }
  const fail = (err: FollowError, clear: boolean): void => { if (settle(clear)) reject(err) }

  const table: Record<string, unknown> = { ...handlers }
  for (const name of until) {
    if (name === 'end') continue
    const own = table[name]
    if (own !== undefined && typeof own !== 'function') throw new TypeError(`fastify-sse-hub/client: the handler of "${name}" must be a function`)
    table[name] = (data: unknown, meta: ClientEventMeta) => {
      try {
        if (typeof own === 'function') own(data, meta)
      } finally {
        end({ event: name, data, id: meta.id })
      }
    }
  }
  const reconnect = options.reconnect !== false

  /** The EventSource gave up: ask the server what it answers now. */
  const gaveUp = (retry: () => void): void => {
    if (settled) return
    const ac = probing = new AbortController()
    const id = sub?.lastEventId ?? resumedFrom
    const href = id === undefined ? String(url) : withLastEventId(String(url), id)
    const init: FetchInitLike = {
      headers: { accept: 'text/event-stream' },
      signal: ac.signal,
      credentials: options.withCredentials === true ? 'include' : 'same-origin'
    }
    const again = (err: FollowError): void => {
      if (reconnect) retry()
      else fail(err, false)
    }
    fetchFn(href, init).then(async res => {
      const status = res.status
      let body: unknown
      if (status === 200) await res.body?.cancel().catch(noop)
      else body = await res.json().catch(() => undefined)
      if (settled || ac.signal.aborted) return
      const code = typeof (body as { code?: unknown } | undefined)?.code === 'string' ? (body as { code: string }).code : 'FST_ERR_SSEHUB_CLIENT_HTTP'
      if (status === 204) end({ event: null, data: null, id: id ?? null })
      else if (status === 404) fail(new FollowError(`nothing to follow at ${href} (404: no such generation, or its history expired)`, code, status, body), true)
      else if (status >= 400 && status < 500 && status !== 408 && status !== 429) fail(new FollowError(`${href} answered ${status}`, code, status, body), false)
      else again(new FollowError(`${href} answered ${status}`, code, status, body))
    }, err => {
      if (settled || ac.signal.aborted) return
      again(new FollowError(`${href} is unreachable (${toError(err).message})`, 'FST_ERR_SSEHUB_CLIENT_NETWORK'))
    })
  }

  sub = open(url, table, { ...options, lastEventId: resumedFrom }, {
    extra: [['end', (data, id) => end({ event: 'end', data, id })]],
    seen: id => { if (!settled) write(id) },
    gaveUp
  })
  const current = sub
  return {
    finished,
    resumedFrom,
    get state () { return current.state },
    get lastEventId () { return current.lastEventId },
    get url () { return current.url },
    close () {
      if (settled) return
      // Whoever closes it expects this rejection: not an unhandled one.
      finished.catch(noop)
      fail(new FollowError('the follow was closed before the end', 'FST_ERR_SSEHUB_CLIENT_CLOSED'), false)
    }
  }
}
