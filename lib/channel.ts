/**
 * Typed channel definitions: a name (or a topic template such as
 * `rooms/:roomId`) and a map of event names to TypeBox schemas (`typebox`
 * 1.x or `@sinclair/typebox` 0.34), compiled once.
 * Payloads are checked here and serialised here, once per publish.
 */
import type { FastifyRequest } from 'fastify'
import type { Authorize, Channel, ChannelHistoryOptions, ChannelOptions, EventMap, EventMeta, Subscribable } from './channel-types.js'
import { compile, type Checker } from './typebox.js'
import {
  FST_ERR_SSEHUB_CHANNEL_INVALID,
  FST_ERR_SSEHUB_EVENT_UNKNOWN,
  FST_ERR_SSEHUB_PAYLOAD_INVALID,
  FST_ERR_SSEHUB_TOPIC_INVALID
} from './errors.js'

export type {
  EventMap, ParamNames, TopicParams, EventMeta, EventHandler, Payloads, ChannelParams, Authorize, EventOf, Snapshot,
  ChannelHistoryOptions, ChannelOptions, Subscribable, Topic, ChannelBase, Channel
} from './channel-types.js'

/** The hub side a bound channel talks to. */
export interface ChannelHost {
  publish: (topic: Subscribable, event: string, data: unknown, json: string) => Promise<string>
  listen: (channel: AnyChannel, key: string | null, event: string, handler: (data: unknown, meta: EventMeta) => void) => () => void
}

/** A channel of any shape (the runtime class behind every typed view). */
export type AnyChannel = ChannelImpl

const NAME_SEGMENT = /^[A-Za-z0-9_.-]+$/
const PARAM_SEGMENT = /^:[A-Za-z_][A-Za-z0-9_]*$/
const EVENT_NAME = /^[A-Za-z_][A-Za-z0-9_.:-]{0,63}$/
/**
 * Names the hub or EventSource itself uses: `reset` is the hub's gap signal,
 * `end` the last event of a producer run; `open`/`error` would fire
 * EventSource's own handlers.
 */
const RESERVED_EVENTS = new Set(['reset', 'end', 'open', 'error', 'sse-hub:head'])
/** Topic handles a channel keeps for reuse, at most. */
const TOPIC_HANDLES = 16_384
// Control characters are exactly what this refuses.
// eslint-disable-next-line no-control-regex
const UNSAFE_PARAM = /[/\x00-\x1f\x7f-\x9f]/

interface CompiledEvent {
  readonly name: string
  readonly check: Checker
  /** `event: <name>\nid: ` — the frame head, built once. */
  readonly head: string
}

/** The one runtime class behind every channel and its typed views; use the `Channel` type. */
export class ChannelImpl implements Subscribable {
  readonly name: string
  readonly events: EventMap
  readonly authorize: Authorize | null
  readonly snapshot: ((request: FastifyRequest, params: Record<string, string>) => unknown) | null
  readonly paramNames: readonly string[]
  readonly segments: readonly string[]
  readonly compiled: ReadonlyMap<string, CompiledEvent>
  readonly key: string
  readonly params: Readonly<Record<string, string>> = Object.freeze({})
  /** The channel's own history bounds, as declared (the hub fills in the rest). */
  readonly history: Readonly<ChannelHistoryOptions> | null
  host: ChannelHost | null = null
  /** Topic handles made, by their parameter values joined with "/" (see `topic()`). */
  private handles: Map<string, TopicImpl> | null = null

  get channel (): ChannelImpl { return this }

  constructor (name: string, options: ChannelOptions<EventMap>) {
    if (typeof name !== 'string' || name.length === 0 || name.length > 128) {
      throw new FST_ERR_SSEHUB_CHANNEL_INVALID(String(name), 'the name must be a string of 1 to 128 characters')
    }
    const segments = name.split('/')
    const paramNames: string[] = []
    for (const segment of segments) {
      if (PARAM_SEGMENT.test(segment)) {
        const param = segment.slice(1)
        if (paramNames.includes(param)) throw new FST_ERR_SSEHUB_CHANNEL_INVALID(name, `parameter ":${param}" appears twice`)
        // As an object key it would set the prototype, and every topic would share one key.
        if (param === '__proto__') throw new FST_ERR_SSEHUB_CHANNEL_INVALID(name, 'a parameter cannot be named "__proto__"; choose another name')
        paramNames.push(param)
      } else if (!NAME_SEGMENT.test(segment)) {
        throw new FST_ERR_SSEHUB_CHANNEL_INVALID(name, `segment "${segment}" must be letters, digits, "_", "." or "-", or a parameter like ":roomId"`)
      }
    }
    if (options === null || typeof options !== 'object' || options.events === null || typeof options.events !== 'object') {
      throw new FST_ERR_SSEHUB_CHANNEL_INVALID(name, 'options.events must map event names to TypeBox schemas')
    }
    if (options.authorize !== undefined && typeof options.authorize !== 'function') {
      throw new FST_ERR_SSEHUB_CHANNEL_INVALID(name, 'options.authorize must be a function (request, params) => boolean')
    }
    if (options.snapshot !== undefined && typeof options.snapshot !== 'function') {
      throw new FST_ERR_SSEHUB_CHANNEL_INVALID(name, 'options.snapshot must be a function (request, params) => ({ event, data })')
    }
    const compiled = new Map<string, CompiledEvent>()
    for (const [event, schema] of Object.entries(options.events)) {
      if (!EVENT_NAME.test(event)) {
        throw new FST_ERR_SSEHUB_CHANNEL_INVALID(name, `event name "${event}" must start with a letter or "_" and hold only letters, digits, "_", ".", ":" or "-" (at most 64)`)
      }
      if (RESERVED_EVENTS.has(event)) {
        throw new FST_ERR_SSEHUB_CHANNEL_INVALID(name, `event name "${event}" is reserved (reset, end and sse-hub:head are the hub's own; open and error are EventSource's own events)`)
      }
      if (schema === null || typeof schema !== 'object') {
        throw new FST_ERR_SSEHUB_CHANNEL_INVALID(name, `the schema of event "${event}" does not compile (it must be a TypeBox schema, from typebox or @sinclair/typebox)`)
      }
      let check: Checker
      try {
        check = compile(schema)
      } catch (err) {
        throw new FST_ERR_SSEHUB_CHANNEL_INVALID(name, `the schema of event "${event}" does not compile (${(err as Error).message})`)
      }
      compiled.set(event, { name: event, check, head: `event: ${event}\nid: ` })
    }
    if (compiled.size === 0) throw new FST_ERR_SSEHUB_CHANNEL_INVALID(name, 'declare at least one event')
    this.history = readHistory(name, options.history)
    this.name = name
    this.events = options.events
    this.authorize = options.authorize ?? null
    this.snapshot = (options.snapshot as ChannelImpl['snapshot'] | undefined) ?? null
    this.segments = segments
    this.paramNames = paramNames
    this.compiled = compiled
    this.key = name
  }

  /** True when this channel's topics could share a key with `other`'s (same length, every segment equal or a parameter). */
  overlaps (other: ChannelImpl): boolean {
    if (other.segments.length !== this.segments.length) return false
    return this.segments.every((s, i) => s === other.segments[i] || s[0] === ':' || other.segments[i][0] === ':')
  }

  topic (params: Record<string, string>): TopicImpl {
    if (this.paramNames.length === 0) {
      throw new FST_ERR_SSEHUB_TOPIC_INVALID(this.name, 'this channel has no parameters; publish to it and subscribe to it directly')
    }
    if (params === null || typeof params !== 'object') {
      throw new FST_ERR_SSEHUB_TOPIC_INVALID(this.name, `expected parameters { ${this.paramNames.join(', ')} }`)
    }
    // Handles are immutable, so one made for these values before is handed
    // out again: a publish to a known topic makes no handle, key or check.
    // Values are joined with "/", which no valid value holds, so a join
    // names one tuple of values (an invalid tuple is never cached).
    const names = this.paramNames
    let id: unknown = (params as Record<string, unknown>)[names[0]]
    for (let i = 1; i < names.length && typeof id === 'string'; i++) {
      const value = (params as Record<string, unknown>)[names[i]]
      id = typeof value === 'string' ? id + '/' + value : undefined
    }
    if (typeof id === 'string') {
      const hit = this.handles?.get(id)
      if (hit !== undefined) return hit
    }
    const values: Record<string, string> = Object.create(null)
    for (const param of this.paramNames) {
      const value = (params as Record<string, unknown>)[param]
      if (typeof value !== 'string' || value.length === 0 || value.length > 128) {
        throw new FST_ERR_SSEHUB_TOPIC_INVALID(this.name, `parameter "${param}" must be a string of 1 to 128 characters`)
      }
      if (UNSAFE_PARAM.test(value)) {
        throw new FST_ERR_SSEHUB_TOPIC_INVALID(this.name, `parameter "${param}" must not contain "/" or control characters`)
      }
      values[param] = value
    }
    const key = this.segments.map(s => s[0] === ':' ? values[s.slice(1)] : s).join('/')
    const handle = new TopicImpl(this, key, Object.freeze(values))
    const handles = this.handles ??= new Map()
    // Bounded: past TOPIC_HANDLES distinct topics the cache starts over.
    if (handles.size >= TOPIC_HANDLES) handles.clear()
    handles.set(id as string, handle)
    return handle
  }

  /**
   * Serialises `data` once and checks what will actually be sent: the JSON
   * form, parsed back, against the schema of `event`. So `toJSON()` cannot
   * swap in something unchecked, and a value JSON cannot carry (BigInt, a
   * cycle, `undefined`) is refused with the same coded 400, not a TypeError.
   * Properties the schema does not name pass through when the schema allows
   * them (TypeBox objects do unless declared `additionalProperties: false`,
   * which refuses them). Returns the JSON and the value subscribers will see.
   */
  serialize (event: string, data: unknown): { json: string, value: unknown } {
    const compiled = this.compiled.get(event)
    if (compiled === undefined) throw new FST_ERR_SSEHUB_EVENT_UNKNOWN(this.name, String(event))
    let json: string | undefined
    try {
      json = JSON.stringify(data)
    } catch (err) {
      this.refuse(compiled, event, data)
      throw new FST_ERR_SSEHUB_PAYLOAD_INVALID(event, this.name, '/', `cannot be sent as JSON (${(err as Error).message})`)
    }
    if (json === undefined) throw new FST_ERR_SSEHUB_PAYLOAD_INVALID(event, this.name, '/', `${typeof data} has no JSON form`)
    // Plain JSON (a parsed body, a literal) is its own JSON form: check it as
    // is. Anything else (toJSON, Dates, class instances, NaN, undefined
    // members) is checked as what will actually be sent.
    const value: unknown = isPlainJson(data, 0) ? data : JSON.parse(json)
    this.refuse(compiled, event, value)
    return { json, value }
  }

  /** Throws the coded error naming the first bad field of `value`, if any. */
  private refuse (compiled: CompiledEvent, event: string, value: unknown): void {
    const first = compiled.check(value)
    if (first === null) return
    throw new FST_ERR_SSEHUB_PAYLOAD_INVALID(event, this.name, first.path || '/', first.message)
  }

  /** @internal The frame head of `event`, built once at definition. */
  head (event: string): string {
    return (this.compiled.get(event) as CompiledEvent).head
  }

  publish (event: string, data: unknown): Promise<string> {
    return publishTo(this, event, data)
  }

  subscribe (event: string, handler: (data: unknown, meta: EventMeta) => void): () => void {
    return listenTo(this, this.paramNames.length === 0 ? this.key : null, event, handler)
  }
}

/** One topic of a templated channel (the runtime class behind `Topic`). */
export class TopicImpl implements Subscribable {
  constructor (readonly channel: ChannelImpl, readonly key: string, readonly params: Readonly<Record<string, string>>) {}

  publish (event: string, data: unknown): Promise<string> {
    return publishTo(this, event, data)
  }

  subscribe (event: string, handler: (data: unknown, meta: EventMeta) => void): () => void {
    return listenTo(this.channel, this.key, event, handler)
  }
}

/**
 * True if `JSON.parse(JSON.stringify(value))` is structurally `value`: plain
 * objects and arrays (no toJSON, no undefined members), strings, booleans,
 * null and finite numbers. Deeper than 64 levels counts as not plain.
 */
function isPlainJson (value: unknown, depth: number): boolean {
  switch (typeof value) {
    case 'string':
    case 'boolean':
      return true
    case 'number':
      return Number.isFinite(value)
    case 'object': {
      if (value === null) return true
      if (depth > 64) return false
      if (Array.isArray(value)) {
        for (let i = 0; i < value.length; i++) if (!isPlainJson(value[i], depth + 1)) return false
        return true
      }
      const proto = Object.getPrototypeOf(value)
      if (proto !== Object.prototype && proto !== null) return false
      if ('toJSON' in value) return false
      for (const key in value) {
        if (!isPlainJson((value as Record<string, unknown>)[key], depth + 1)) return false
      }
      return true
    }
    default:
      return false
  }
}

const HISTORY_RANGES: Record<keyof ChannelHistoryOptions, [number, number]> = {
  limit: [0, 10_000_000],
  ttl: [0, 2 ** 31 - 1],
  bytes: [0, Number.MAX_SAFE_INTEGER]
}

function readHistory (name: string, history: ChannelHistoryOptions | undefined): Readonly<ChannelHistoryOptions> | null {
  if (history === undefined) return null
  if (history === null || typeof history !== 'object') {
    throw new FST_ERR_SSEHUB_CHANNEL_INVALID(name, 'options.history must be an object { limit?, ttl?, bytes? }')
  }
  const out: ChannelHistoryOptions = {}
  for (const key of Object.keys(history) as Array<keyof ChannelHistoryOptions>) {
    const range = HISTORY_RANGES[key]
    if (range === undefined || !Object.hasOwn(HISTORY_RANGES, key)) {
      throw new FST_ERR_SSEHUB_CHANNEL_INVALID(name, `options.history.${String(key)} is not a history bound (limit, ttl, bytes)`)
    }
    const value = history[key]
    if (value === undefined) continue
    if (typeof value !== 'number' || !Number.isInteger(value) || value < range[0] || value > range[1]) {
      throw new FST_ERR_SSEHUB_CHANNEL_INVALID(name, `options.history.${key} must be a whole number from ${range[0]} to ${range[1]}, got ${String(value)}`)
    }
    out[key] = value
  }
  return Object.freeze(out)
}

/** @internal The channel behind a plain channel or a topic handed in by a user; null if it is neither. */
export function channelOf (s: unknown): ChannelImpl | null {
  if (s instanceof ChannelImpl) return s
  if (s instanceof TopicImpl) return s.channel
  return null
}

function publishTo (topic: ChannelImpl | TopicImpl, event: string, data: unknown): Promise<string> {
  const channel = topic.channel
  if (channel.paramNames.length > 0 && topic === channel) {
    return Promise.reject(new FST_ERR_SSEHUB_TOPIC_INVALID(channel.name, `publish to a topic: channel.topic({ ${channel.paramNames.join(', ')} }).publish(...)`))
  }
  try {
    const { json, value } = channel.serialize(event, data)
    return hostOf(channel).publish(topic, event, value, json)
  } catch (err) {
    return Promise.reject(err)
  }
}

function listenTo (channel: ChannelImpl, key: string | null, event: string, handler: (data: unknown, meta: EventMeta) => void): () => void {
  if (!channel.compiled.has(event)) throw new FST_ERR_SSEHUB_EVENT_UNKNOWN(channel.name, String(event))
  if (typeof handler !== 'function') throw new FST_ERR_SSEHUB_CHANNEL_INVALID(channel.name, 'subscribe(event, handler) needs a handler function')
  return hostOf(channel).listen(channel, key, event, handler)
}

function hostOf (channel: ChannelImpl): ChannelHost {
  if (channel.host === null) {
    throw new FST_ERR_SSEHUB_CHANNEL_INVALID(channel.name, 'it is not attached to a hub yet; pass it to fastify.sse.channel() first')
  }
  return channel.host
}

/**
 * Declares a channel without an app, so its definition (and its types) can
 * live in a module that servers, workers and browser code all import.
 * Attach it with `fastify.sse.channel(definition)` before publishing.
 */
export function defineChannel<const N extends string, E extends EventMap> (name: N, options: ChannelOptions<E, N>): Channel<N, E> {
  return new ChannelImpl(name, options as unknown as ChannelOptions<EventMap>) as unknown as Channel<N, E>
}
