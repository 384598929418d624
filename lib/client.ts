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
import type {
  ResetReason, ConnectionState, ChannelLike, ClientEventMeta, EventHandlers, ResetInfo, EventSourceLike, EventSourceConstructor, SubscribeOptions, Subscription, FollowEnd, StorageLike, FollowOptions, FetchInitLike, Follow
} from './client-types.js'

export type {
  ResetReason, ConnectionState, ChannelLike, EventsOf, EventNames, EventData, ClientEventMeta, EventHandlers, ResetInfo, EventSourceLike, EventSourceConstructor, SubscribeOptions, ReconnectOptions, Subscription, RunEndReason, FollowEnd, StorageLike, FollowOptions, FetchInitLike, FetchResponseLike, Follow
} from './client-types.js'

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
