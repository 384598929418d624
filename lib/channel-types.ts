/**
 * The public types of channels: event maps and their payloads, topic
 * templates and their params, channel options, and the typed views
 * (`Channel`, `Topic`) over the one runtime class in channel.ts.
 */
import type { FastifyRequest } from 'fastify'
import type { Schema, Static } from './types.js'

/** Event names to the TypeBox schemas of their payloads (`typebox` 1.x or `@sinclair/typebox` 0.34). */
export type EventMap = Record<string, Schema>

/** The parameter names of a topic template: `'rooms/:roomId'` gives `'roomId'`. */
export type ParamNames<S extends string> =
  S extends `${string}:${infer P}/${infer Rest}` ? P | ParamNames<Rest>
    : S extends `${string}:${infer P}` ? P : never

/** The parameters of a topic template: `'rooms/:roomId'` gives `{ roomId: string }`. */
export type TopicParams<S extends string> = { [K in ParamNames<S>]: string }

/** What server-side handlers learn about an event besides its payload. */
export interface EventMeta {
  /** The hub id of the event (what browsers see as `lastEventId`). */
  id: string
  /** The event name. */
  event: string
  /** The topic it was published to: the channel name, or the template filled in (`rooms/a`). */
  topic: string
}

/** A server-side handler of one event, typed from its schema. */
export type EventHandler<E extends EventMap, K extends keyof E> = (data: Payloads<E>[K & string], meta: EventMeta) => void

/**
 * Each event's payload type, as `Static` of its schema. The `as K` keeps
 * `Payloads<E>[K]` an index into payloads computed per concrete schema:
 * without it the checker rewrites it to `Static<E[K]>` with `K` still
 * generic, and expanding TypeBox 1.x's `Static` over that is too deep.
 */
export type Payloads<E extends EventMap> = { [K in keyof E as K]: Static<E[K]> }

/**
 * The parameters `authorize` and `snapshot` get for a channel named `N`:
 * `{ roomId: string }` for `'rooms/:roomId'`, `{}` for a plain channel, and
 * any string keys where the name is not known to the type checker.
 */
export type ChannelParams<N extends string> = string extends N ? Record<string, string> : TopicParams<N>

/**
 * Decides whether `request` may subscribe to a topic; `params` are the topic's
 * parameters (empty for a plain channel), typed from the channel's name
 * template. Return (or resolve) `false` to refuse: the request is answered
 * 403 before any stream opens.
 */
export type Authorize<N extends string = string> = (request: FastifyRequest, params: ChannelParams<N>) => boolean | Promise<boolean>

/** One of a channel's events with its payload: `{ event: 'token', data: { text: 'hi' } }`. */
export type EventOf<E extends EventMap> = { [K in keyof E & string]: { event: K, data: Payloads<E>[K] } }[keyof E & string]

/** What a channel's `snapshot` returns: one of its events, sent first to a fresh subscriber. */
export type Snapshot<E extends EventMap> = EventOf<E>

/**
 * History bounds of a channel's own (`history` of `channel()` options); each
 * one left out takes the plugin's value.
 */
export interface ChannelHistoryOptions {
  /** Events kept per topic (default: the plugin's `history`). From 0 to 10,000,000. */
  limit?: number
  /**
   * Ms a topic's history is kept after its last event, then dropped whole:
   * a generation stays complete while it runs and this long after its end
   * (unlike the plugin's `historyTtl`, which ages each event on its own);
   * 0 keeps it until the other bounds drop it (default: the plugin's
   * `historyTtl`).
   */
  ttl?: number
  /**
   * Bytes of history for all topics of this channel together, counted as
   * `maxHistoryBytes` is, in a budget of their own: other channels never
   * evict these topics' events, nor these theirs (default: the plugin's
   * `maxHistoryBytes`). Backends that keep history in this process only.
   */
  bytes?: number
}

/** The second argument of `channel()` / `defineChannel()`. */
export interface ChannelOptions<E extends EventMap, N extends string = string> {
  /** Event names (letters, digits, `_ . : -`; not `reset`, `end`, `open` or `error`) to the TypeBox schemas of their payloads. */
  events: E
  /** Per-subscription access check; see {@link Authorize}. Default: everyone may subscribe. */
  authorize?: Authorize<N>
  /**
   * The current state of a topic, sent first to a subscriber that connects
   * without `Last-Event-ID`, as one of the channel's events (validated like
   * a publish). It carries the id of the hub's head when the subscriber
   * joined, and live events follow from exactly there. Called in the same
   * event-loop turn as the head is read: a synchronous function (or one
   * that reads state before it awaits) sees exactly the events up to that
   * id. If it throws or rejects, only that stream closes, logged.
   */
  snapshot?: (request: FastifyRequest, params: ChannelParams<N>) => Snapshot<E> | Promise<Snapshot<E>>
  /**
   * History bounds for this channel's topics instead of the plugin-wide
   * `history`, `historyTtl` and `maxHistoryBytes`: for instance, keep a
   * whole generation of tokens for an hour (`{ limit: 100_000, ttl: 3_600_000 }`)
   * without keeping every other channel's events as long. Idle topics of
   * such a channel are bounded by its `bytes` and `ttl`, not `maxIdleTopics`.
   */
  history?: ChannelHistoryOptions
}

/** Something a stream can subscribe to: a plain channel or one topic of a templated channel. */
export interface Subscribable {
  /** The topic key: the channel name, or the template filled in (`rooms/a`). */
  readonly key: string
  /** The topic parameters (empty for a plain channel). */
  readonly params: Readonly<Record<string, string>>
}

export interface Topic<E extends EventMap = EventMap, N extends string = string> extends Subscribable {
  readonly channel: Channel<N, E>
  /**
   * Validates `data` against the event's schema, then publishes it to every
   * subscriber of this topic. Resolves to the event's id. An invalid payload
   * rejects with `FST_ERR_SSEHUB_PAYLOAD_INVALID` (status 400) and nothing is
   * stored or sent.
   */
  publish: <K extends keyof E & string>(event: K, data: Payloads<E>[K]) => Promise<string>
  /** Runs `handler` in this process for every `event` published to this topic; returns the unsubscribe function. */
  subscribe: <K extends keyof E & string>(event: K, handler: EventHandler<E, K>) => () => void
}

export interface ChannelBase<N extends string, E extends EventMap> {
  /** The channel name or topic template. */
  readonly name: N
  /** The event map this channel was declared with. */
  readonly events: E
  /** The topic of this channel for `params`; each value is checked (1-128 characters, no `/`, no control characters). */
  topic: (params: TopicParams<N>) => Topic<E, N>
  /**
   * Runs `handler` in this process for every `event` of this channel, on
   * every topic (`meta.topic` says which); returns the unsubscribe function.
   */
  subscribe: <K extends keyof E & string>(event: K, handler: EventHandler<E, K>) => () => void
}

/**
 * A declared channel. A plain one (no `:params` in its name) is itself its
 * only topic: publish to it and subscribe streams to it directly. A templated
 * one is used through `channel.topic(params)`.
 */
export type Channel<N extends string = string, E extends EventMap = EventMap> =
  [ParamNames<N>] extends [never]
    ? ChannelBase<N, E> & Subscribable & Pick<Topic<E, N>, 'publish'>
    : ChannelBase<N, E>
