/**
 * The hub behind `fastify.sse`: channels -> subscribers fan-out, resume,
 * authorisation, load shedding and stats. It talks to a Backend for ids,
 * history and transport, and never knows which one.
 *
 * The hot path: a publish is validated and serialised once (channel.ts),
 * carried by the backend, framed once here, and appended to its topic's
 * batch for this event-loop turn. At the flush, each topic's batch becomes
 * ONE packet (one allocation) that every subscriber's socket is handed as is.
 */
import { EventEmitter } from 'node:events'
import type { FastifyReply } from 'fastify'
import type { Backend, BackendHost, HubEvent } from './backend.js'
import { formatId, parseId } from './backend.js'
import {
  channelOf,
  ChannelImpl,
  type Channel,
  type ChannelHost,
  type ChannelOptions,
  type EventMap,
  type EventMeta,
  type Subscribable
} from './channel.js'
import { packetOf, type Packet } from './encoder.js'
import {
  FST_ERR_SSEHUB_CHANNEL_DUPLICATE,
  FST_ERR_SSEHUB_CLOSED,
  FST_ERR_SSEHUB_EVENT_TOO_LARGE,
  FST_ERR_SSEHUB_FORBIDDEN,
  FST_ERR_SSEHUB_PAYLOAD_INVALID,
  FST_ERR_SSEHUB_REPLY_OPTION_INVALID,
  FST_ERR_SSEHUB_SOURCE_INVALID,
  FST_ERR_SSEHUB_TAG_INVALID,
  FST_ERR_SSEHUB_TOPIC_INVALID
} from './errors.js'
import type { HistoryLimits } from './history.js'
import { SseStream, type CloseReason, type Pump, type SseSource } from './stream.js'

/** Why a resume could not replay what the client missed. */
export type ResetReason = 'unknown' | 'trimmed' | 'epoch'

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
   */
  since?: number
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
  /** Streams cut for holding more than `maxBufferedBytes` unsent. */
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

/** The hub's options, normalised. */
export interface HubSettings extends HistoryLimits {
  maxConnections: number
  maxLifetime: number
  maxStreamsPerClient: number
  clientKey: (request: FastifyReply['request']) => string
}

/** The events `fastify.sse` emits, for custom accounting. */
export interface SseHubEvents {
  /** A stream opened (after authorisation). */
  connect: [stream: SseStream]
  /** A stream ended, and why. */
  disconnect: [stream: SseStream, reason: CloseReason]
}

/** The event that tells a fresh subscriber its starting id; reserved, so no channel declares it. */
export const HEAD_EVENT = 'sse-hub:head'

const TAG = /^[\x21-\x7e](?:[\x20-\x7e]{0,126}[\x21-\x7e])?$/
const MAX_TAGS = 32
const MAX_SINCE = 10_000

/** A snapshot call's outcome, captured at once so a rejection is never left unhandled. */
type SnapshotOutcome = { ok: true, channel: ChannelImpl, value: unknown } | { ok: false, error: unknown }

type Listener = (data: unknown, meta: EventMeta) => void

/** @internal The reply has been answered (or hijacked): nothing more may be written through Fastify. */
export function answered (reply: FastifyReply): boolean {
  return reply.sent || reply.raw.headersSent
}

/** What a fresh subscriber is given before live events, and whether its topics were already live. */
interface Intro {
  since: number
  snapshots: Array<Promise<SnapshotOutcome>>
  /** Every topic's backend subscription was in effect before the head was read: nothing to read between head and live. */
  live: boolean
}

/** A topic with subscribers or listeners in this process. */
class LocalTopic {
  readonly subs = new Set<Subscriber>()
  listeners: Map<string, Set<Listener>> | null = null
  batch: HubEvent[] = []
  dirty = false
  /** Resolves once the backend delivers this topic's events: history may be read only after. */
  ready: Promise<void> = Promise.resolve()
  /** The backend's subscription is in effect (set when `ready` resolves without error). */
  live = false
  constructor (readonly key: string, readonly channel: ChannelImpl) {}

  get idle (): boolean {
    return this.subs.size === 0 && this.listeners === null
  }
}

/** A stream's subscriptions. */
class Subscriber {
  /** The topics it follows: an array (of one, mostly), lighter than a Set per stream. */
  readonly topics: LocalTopic[] = []
  /** The highest seq this stream has been given: nothing at or below it is sent again. */
  lastSeq = 0
  /** While catching up: live events held back until history has been written. */
  holding: HubEvent[] | null = null
  holdingBytes = 0
  /** Batches of several topics this turn, merged by seq at the flush. */
  pending: HubEvent[][] | null = null
  /** Catch-ups run one at a time, in order: the last one's promise while it runs, else null. */
  chain: Promise<void> | null = null
  constructor (readonly stream: SseStream) {}
}

/**
 * `fastify.sse`: the hub of this plugin instance. It is an EventEmitter:
 * `fastify.sse.on('connect', stream => ...)` and
 * `fastify.sse.on('disconnect', (stream, reason) => ...)` for custom accounting.
 */
export class SseHub extends EventEmitter<SseHubEvents> implements ChannelHost, BackendHost {
  /** @internal */
  readonly pump: Pump
  /** @internal */
  readonly backend: Backend
  private readonly settings: HubSettings
  private readonly channels = new Map<string, ChannelImpl>()
  private readonly topics = new Map<string, LocalTopic>()
  /** Listeners of every topic of a templated channel: channel name -> event -> handlers. */
  private readonly channelListeners = new Map<string, Map<string, Set<Listener>>>()
  private readonly counts = new Map<ChannelImpl, { topics: number, subscribers: number }>()
  private dirtyTopics: LocalTopic[] = []
  private multi: Subscriber[] = []
  private listenerEvents: HubEvent[] = []
  private subscriptions = 0
  private published = 0
  private deliveries = 0
  private shed = 0
  private shedPerClient = 0
  private expired = 0
  private disconnected = 0
  /** Tag -> the open streams carrying it. */
  private readonly tagged = new Map<string, Set<SseStream>>()
  /** Client key -> its open (or opening) streams, for maxStreamsPerClient. */
  private readonly perClient = new Map<string, number>()
  /** Streams admitted and still being authorised: they count against maxConnections. */
  private opening = 0
  /** Counts disconnect({ tag }) calls; with disconnectedAt, tells streams still being authorised that they were meant too. */
  private disconnectClock = 0
  private readonly disconnectedAt = new Map<string, number>()
  private resumes = 0
  private resets = 0
  private closed = false
  /** Bumped when the backend's epoch changes: catch-ups begun before it stop writing. */
  private generation = 0

  /** @internal Created by the plugin. */
  constructor (pump: Pump, backend: Backend, settings: HubSettings) {
    super()
    this.pump = pump
    this.backend = backend
    this.settings = settings
    pump.beforeFlush = () => this.flushTopics()
    pump.onStreamClosed = (stream, reason) => this.streamClosed(stream, reason)
    pump.link = this
  }

  /** @internal The logger backends write to (set by the plugin). */
  log!: BackendHost['log']

  /**
   * Declares a channel on this hub, or attaches one made with
   * `defineChannel()`. Schemas are compiled now; a duplicate or overlapping
   * name, or an invalid definition, throws a coded error at once.
   */
  channel<const N extends string, E extends EventMap> (name: N, options: ChannelOptions<E>): Channel<N, E>
  channel<N extends string, E extends EventMap> (definition: Channel<N, E>): Channel<N, E>
  channel (nameOrDefinition: unknown, options?: ChannelOptions<EventMap>): Channel<any, any> { // eslint-disable-line @typescript-eslint/no-explicit-any
    const channel = nameOrDefinition instanceof ChannelImpl
      ? nameOrDefinition
      : new ChannelImpl(nameOrDefinition as string, options as ChannelOptions<EventMap>)
    if (channel.host !== null && channel.host !== this) {
      throw new FST_ERR_SSEHUB_CHANNEL_DUPLICATE(channel.name)
    }
    for (const other of this.channels.values()) {
      if (other !== channel && (other.name === channel.name || other.overlaps(channel))) {
        throw new FST_ERR_SSEHUB_CHANNEL_DUPLICATE(other.name === channel.name ? channel.name : `${channel.name}" overlaps "${other.name}`)
      }
    }
    channel.host = this
    this.channels.set(channel.name, channel)
    return channel as unknown as Channel<any, any> // eslint-disable-line @typescript-eslint/no-explicit-any
  }

  /** @internal ChannelHost: hands a validated, serialised event to the backend. */
  async publish (topic: Subscribable, event: string, data: unknown, json: string): Promise<string> {
    if (this.closed) throw new FST_ERR_SSEHUB_CLOSED()
    const channel = channelOf(topic) as ChannelImpl
    // Framed size: the JSON plus names and an id of at most 64 bytes.
    const bytes = Buffer.byteLength(json) + event.length + 96
    if (bytes > this.pump.options.maxEventBytes) throw new FST_ERR_SSEHUB_EVENT_TOO_LARGE(bytes, this.pump.options.maxEventBytes)
    const ev = await this.backend.publish(topic.key, event, json, data, channel.name)
    this.published++
    return ev.id
  }

  /** @internal ChannelHost: an in-process listener. */
  listen (channel: ChannelImpl, key: string | null, event: string, handler: Listener): () => void {
    let set: Set<Listener>
    if (key === null) {
      let byEvent = this.channelListeners.get(channel.name)
      if (byEvent === undefined) {
        this.channelListeners.set(channel.name, byEvent = new Map())
        this.backend.subscribeChannel(channel.name).catch(err => {
          this.log.error({ err, channel: channel.name }, 'fastify-sse-hub: backend channel subscribe failed')
        })
      }
      let s = byEvent.get(event)
      if (s === undefined) byEvent.set(event, s = new Set())
      set = s
    } else {
      const topic = this.localTopic(key, channel)
      topic.listeners ??= new Map()
      let s = topic.listeners.get(event)
      if (s === undefined) topic.listeners.set(event, s = new Set())
      set = s
    }
    set.add(handler)
    return () => {
      set.delete(handler)
      if (key === null) {
        const byEvent = this.channelListeners.get(channel.name)
        if (byEvent !== undefined && [...byEvent.values()].every(s => s.size === 0)) {
          this.channelListeners.delete(channel.name)
          this.backend.unsubscribeChannel(channel.name)
        }
      } else {
        const topic = this.topics.get(key)
        if (topic?.listeners != null && [...topic.listeners.values()].every(s => s.size === 0)) {
          topic.listeners = null
          this.maybeDrop(topic)
        }
      }
    }
  }

  /** @internal BackendHost: an event of a subscribed topic, in id order. Framed once, batched per topic. */
  deliver (ev: HubEvent): void {
    const topic = this.topics.get(ev.topic)
    const hasChannelListeners = ev.channel !== undefined && this.channelListeners.has(ev.channel)
    if (hasChannelListeners || (topic !== undefined && topic.listeners !== null)) {
      this.listenerEvents.push(ev)
    } else {
      // Only listeners use the payload object; history must not keep it alive.
      ev.payload = undefined
    }
    if (topic === undefined && !hasChannelListeners) return
    if (topic !== undefined && topic.subs.size > 0) {
      frameOf(ev)
      topic.batch.push(ev)
      if (!topic.dirty) {
        topic.dirty = true
        this.dirtyTopics.push(topic)
      }
    }
    this.pump.requestFlush()
  }

  /** @internal BackendHost: events may have been missed; every stream catches up from history. */
  interrupted (): void {
    for (const sub of this.allSubscribers()) this.catchUp(sub, [...sub.topics], null, null).catch(() => {})
  }

  /** @internal BackendHost: a new epoch. Every stream is told `reset`, then follows the new epoch from its start. */
  epochChanged (oldEpoch: string): void {
    this.generation++
    const head = formatId(this.backend.epoch, 0)
    for (const sub of this.allSubscribers()) {
      if (sub.stream.ended) continue
      sub.holding = sub.holding === null ? null : []
      sub.holdingBytes = 0
      sub.pending = null
      sub.stream.push(resetFrame(head, formatId(oldEpoch, sub.lastSeq), 'epoch'))
      sub.lastSeq = 0
      this.resets++
    }
    // Batches framed in the old epoch must not reach anyone now.
    for (const topic of this.dirtyTopics) topic.batch = []
  }

  private allSubscribers (): Set<Subscriber> {
    const subs = new Set<Subscriber>()
    for (const topic of this.topics.values()) for (const sub of topic.subs) subs.add(sub)
    return subs
  }

  /** Runs first in each flush: listeners, then each dirty topic's batch to its subscribers. */
  private flushTopics (): void {
    if (this.listenerEvents.length > 0) this.runListeners()
    const topics = this.dirtyTopics
    if (topics.length === 0) return
    this.dirtyTopics = []
    for (let t = 0; t < topics.length; t++) {
      const topic = topics[t]
      const batch = topic.batch
      topic.batch = []
      topic.dirty = false
      // A topic dropped this turn keeps its place in the list with nothing to send.
      if (batch.length === 0) continue
      const first = batch[0].seq
      const last = batch[batch.length - 1].seq
      let packet: Packet | null = null
      for (const sub of topic.subs) {
        if (sub.holding !== null) {
          this.hold(sub, batch)
        } else if (sub.topics.length === 1) {
          if (first > sub.lastSeq) {
            // The fast path: one shared packet, handed to the socket as is.
            packet ??= packetOfBatch(batch)
            sub.stream.writeShared(packet)
            sub.lastSeq = last
          } else {
            this.pushAfter(sub, batch)
          }
        } else {
          if (sub.pending === null) {
            sub.pending = [batch]
            this.multi.push(sub)
          } else {
            sub.pending.push(batch)
          }
        }
      }
      this.deliveries += batch.length * topic.subs.size
    }
    if (this.multi.length > 0) {
      const multi = this.multi
      this.multi = []
      for (const sub of multi) {
        const pending = sub.pending as HubEvent[][]
        sub.pending = null
        // Several topics in one turn: merge by seq so ids reach the client in order.
        this.pushAfter(sub, pending.length === 1 ? pending[0] : pending.flat().sort(bySeq))
      }
    }
  }

  private runListeners (): void {
    const events = this.listenerEvents
    this.listenerEvents = []
    for (const ev of events) {
      const meta: EventMeta = { id: ev.id, event: ev.event, topic: ev.topic }
      const topicSet = this.topics.get(ev.topic)?.listeners?.get(ev.event)
      const channelSet = ev.channel === undefined ? undefined : this.channelListeners.get(ev.channel)?.get(ev.event)
      if (topicSet === undefined && channelSet === undefined) continue
      const payload = ev.payload === undefined ? JSON.parse(ev.data) : ev.payload
      ev.payload = undefined
      for (const set of [topicSet, channelSet]) {
        if (set === undefined) continue
        for (const fn of set) {
          try {
            fn(payload, meta)
          } catch (err) {
            this.log.error({ err, topic: ev.topic, event: ev.event }, 'fastify-sse-hub: a subscribe() handler threw')
          }
        }
      }
    }
  }

  /** Queues the events of `events` above the stream's last seq, in order. */
  private pushAfter (sub: Subscriber, events: HubEvent[]): void {
    const stream = sub.stream
    for (let i = 0; i < events.length; i++) {
      const ev = events[i]
      if (ev.seq <= sub.lastSeq) continue
      stream.push(frameOf(ev))
      sub.lastSeq = ev.seq
    }
  }

  private hold (sub: Subscriber, events: HubEvent[]): void {
    const holding = sub.holding as HubEvent[]
    for (const ev of events) {
      holding.push(ev)
      sub.holdingBytes += (ev.frame as Buffer).length
    }
    if (sub.holdingBytes > this.pump.options.maxBufferedBytes) sub.stream.cut()
  }

  /** @internal The body of `reply.sse()`. */
  reply (reply: FastifyReply, source: SseSource | SseReplyOptions | undefined): SseStream {
    let iterable: SseSource | null = null
    let options: SseReplyOptions = {}
    if (source !== undefined) {
      if (source === null || typeof source !== 'object') {
        throw new FST_ERR_SSEHUB_SOURCE_INVALID(source === null ? 'null' : typeof source)
      }
      if (Symbol.asyncIterator in source || Symbol.iterator in source) iterable = source as SseSource
      else options = source as SseReplyOptions
    }
    const { follow, tags, lifetime, since } = this.readReplyOptions(options)
    const targets = follow.map(s => this.resolve(s))
    const stream = new SseStream(this.pump, reply.request, reply)
    const request = reply.request

    let clientKey: string | null = null
    if (this.settings.maxStreamsPerClient !== Infinity) {
      clientKey = String(this.settings.clientKey(request))
      if ((this.perClient.get(clientKey) ?? 0) >= this.settings.maxStreamsPerClient) {
        this.shedPerClient++
        return this.turnAway(reply, stream)
      }
    }
    if (this.pump.closing || this.pump.streams.size + this.opening >= this.settings.maxConnections) {
      if (!this.pump.closing) this.shed++
      return this.turnAway(reply, stream)
    }
    if (clientKey !== null) {
      // Counted from now, so a burst waiting on async authorisation cannot overshoot.
      stream.clientKey = clientKey
      this.perClient.set(clientKey, (this.perClient.get(clientKey) ?? 0) + 1)
    }

    const admitted = this.disconnectClock
    const begin = (): void => {
      // A disconnect({ tag }) that ran while this stream was being
      // authorised must reach it too: turn it away instead of opening it.
      if (admitted !== this.disconnectClock && tags.some(tag => (this.disconnectedAt.get(tag) ?? -1) > admitted)) {
        this.releaseClient(stream)
        this.turnAway(reply, stream, 'disconnect')
        return
      }
      this.start(reply, stream, targets, iterable, tags, lifetime, since)
    }
    let decided: boolean | Promise<boolean>
    try {
      decided = this.authorize(reply, targets)
    } catch (err) {
      this.abandon(stream)
      throw err
    }
    if (decided === true) {
      begin()
    } else if (decided === false) {
      this.refuse(reply, stream, targets)
    } else {
      this.opening++
      decided.then(ok => {
        try {
          if (stream.ended) return
          if (ok) begin()
          else this.refuse(reply, stream, targets)
        } finally {
          this.settled()
        }
      }, err => {
        this.settled()
        this.abandon(stream)
        if (!answered(reply)) reply.send(err)
      })
    }
    return stream
  }

  /** Checks the options of `reply.sse(options)`, throwing a coded error for a bad one. */
  private readReplyOptions (options: SseReplyOptions): { follow: Subscribable[], tags: string[], lifetime: number, since: number } {
    const follow = options.subscribe ?? []
    if (!Array.isArray(follow)) throw new FST_ERR_SSEHUB_REPLY_OPTION_INVALID('subscribe', 'must be an array of channels and topics')
    const tags = options.tags ?? []
    if (!Array.isArray(tags)) throw new FST_ERR_SSEHUB_TAG_INVALID(`${typeof tags} (tags must be an array)`)
    if (tags.length > MAX_TAGS) throw new FST_ERR_SSEHUB_TAG_INVALID(`${tags.length} tags (at most ${MAX_TAGS})`)
    for (const tag of tags) assertTag(tag)
    let lifetime = this.settings.maxLifetime === 0 ? Infinity : this.settings.maxLifetime
    if (options.maxLifetime !== undefined) {
      const ms = options.maxLifetime
      if (typeof ms !== 'number' || !Number.isInteger(ms) || ms < 1 || ms > 2 ** 31 - 1) {
        throw new FST_ERR_SSEHUB_REPLY_OPTION_INVALID('maxLifetime', `must be a whole number of ms from 1 to 2147483647, got ${String(ms)}`)
      }
      lifetime = Math.min(lifetime, ms)
    }
    const since = options.since === undefined ? 0 : options.since
    if (typeof since !== 'number' || !Number.isInteger(since) || since > 0 || since < -MAX_SINCE) {
      throw new FST_ERR_SSEHUB_REPLY_OPTION_INVALID('since', `must be a whole number from -${MAX_SINCE} to -1 (the newest N events), got ${String(since)}`)
    }
    return { follow, tags, lifetime, since }
  }

  /** Over a limit: 200, a jittered retry, an end. A non-200 would make a native EventSource give up for good. */
  private turnAway (reply: FastifyReply, stream: SseStream, reason: CloseReason = 'shed'): SseStream {
    reply.hijack()
    stream.open(reply, false)
    stream.shutdown(this.pump.jitteredRetry(this.pump.retryBase(), this.pump.options.shutdownJitter), reason)
    return stream
  }

  /** An async authorisation finished; with none pending, the record of recent disconnects is no longer needed. */
  private settled (): void {
    if (--this.opening === 0) this.disconnectedAt.clear()
  }

  private start (reply: FastifyReply, stream: SseStream, targets: Target[], iterable: SseSource | null, tags: string[], lifetime: number, since: number): void {
    // Gone, or answered meanwhile (the handler threw while authorisation was pending: Fastify sent the error).
    if (reply.raw.destroyed || answered(reply)) {
      this.abandon(stream)
      return
    }
    reply.hijack()
    stream.open(reply)
    if (stream.ended) {
      this.abandon(stream)
      return
    }
    if (tags.length > 0) {
      stream.tags = tags
      for (const tag of tags) {
        let set = this.tagged.get(tag)
        if (set === undefined) this.tagged.set(tag, set = new Set())
        set.add(stream)
      }
    }
    if (lifetime !== Infinity) this.pump.expireAfter(stream, lifetime)
    stream.announced = true
    this.emit('connect', stream)
    if (targets.length > 0) {
      const sub = new Subscriber(stream)
      stream.hubState = sub
      const asked = stream.lastEventId ?? stream.invalidLastEventId ?? null
      // A fresh subscriber starts at the head as of now: asked for before
      // anything else, so every later publish of this process comes after
      // it; snapshots are taken in the same turn, so they match that head.
      const start = asked === null ? this.backend.head() : null
      // Every topic's subscription already in effect before that head read:
      // any event after the head arrives live (and is held until the head is
      // known), so there is no history to read in between.
      const live = start !== null && targets.every(t => this.topics.get(t.key)?.live === true)
      const snapshots = asked === null ? this.takeSnapshots(reply, targets) : []
      this.attach(sub, targets)
      this.catchUp(sub, targets.map(t => this.topics.get(t.key) as LocalTopic), asked, start, { since, snapshots, live }).catch(() => {})
    }
    if (iterable !== null) void stream.pipeFrom(iterable)
  }

  private takeSnapshots (reply: FastifyReply, targets: Target[]): Array<Promise<SnapshotOutcome>> {
    const out: Array<Promise<SnapshotOutcome>> = []
    for (const target of targets) {
      const fn = target.channel.snapshot
      if (fn === null) continue
      const channel = target.channel
      let result: Promise<unknown>
      try {
        result = Promise.resolve(fn(reply.request, { ...target.params }))
      } catch (error) {
        result = Promise.reject(error)
      }
      out.push(result.then(value => ({ ok: true as const, channel, value }), error => ({ ok: false as const, error })))
    }
    return out
  }

  /** A stream that never opened: give back what was counted for it. */
  private abandon (stream: SseStream): void {
    stream.abandon()
    this.releaseClient(stream)
  }

  private releaseClient (stream: SseStream): void {
    const key = stream.clientKey
    if (key === null) return
    stream.clientKey = null
    const n = (this.perClient.get(key) ?? 1) - 1
    if (n <= 0) this.perClient.delete(key)
    else this.perClient.set(key, n)
  }

  /** A stream ended: drop its subscriptions, tags and client count. */
  private streamClosed (stream: SseStream, reason: CloseReason): void {
    const sub = stream.hubState as Subscriber | null
    if (sub !== null) {
      const topics = sub.topics.splice(0)
      for (const topic of topics) this.unlink(sub, topic)
      sub.holding = null
    }
    for (const tag of stream.tags) {
      const set = this.tagged.get(tag)
      if (set !== undefined && set.delete(stream) && set.size === 0) this.tagged.delete(tag)
    }
    this.releaseClient(stream)
    if (reason === 'expired') this.expired++
    else if (reason === 'disconnect') this.disconnected++
    if (stream.announced) this.emit('disconnect', stream, reason)
  }

  /**
   * Ends every stream tagged `tag`, in this process and (on a backend that
   * spans several) in every other: for logout, a ban, a permission change.
   * Each gets a jittered `retry:` and a clean end; its reconnect goes
   * through authentication again. Resolves to the number ended here.
   */
  async disconnect (selector: { tag: string }): Promise<number> {
    if (selector === null || typeof selector !== 'object') throw new FST_ERR_SSEHUB_TAG_INVALID(String(selector))
    assertTag(selector.tag)
    const ended = this.disconnectHere(selector.tag)
    await this.backend.broadcast(JSON.stringify({ disconnect: selector.tag }))
    return ended
  }

  private disconnectHere (tag: string): number {
    if (this.opening > 0) this.disconnectedAt.set(tag, ++this.disconnectClock)
    const set = this.tagged.get(tag)
    if (set === undefined) return 0
    let n = 0
    for (const stream of [...set]) {
      if (stream.ended) continue
      stream.shutdown(this.pump.jitteredRetry(this.pump.retryBase(), this.pump.options.retryJitter), 'disconnect')
      n++
    }
    return n
  }

  /** @internal BackendHost: a control message from another process. */
  control (message: string): void {
    let parsed: unknown
    try {
      parsed = JSON.parse(message)
    } catch {
      return
    }
    const tag = (parsed as { disconnect?: unknown } | null)?.disconnect
    if (typeof tag === 'string' && TAG.test(tag)) this.disconnectHere(tag)
  }

  private refuse (reply: FastifyReply, stream: SseStream, targets: Target[]): void {
    this.abandon(stream)
    if (answered(reply)) return
    const names = targets.map(t => t.key).join(', ')
    reply.code(403).send(new FST_ERR_SSEHUB_FORBIDDEN(names))
  }

  /** true / false when every check is synchronous, else a promise of the verdict. */
  private authorize (reply: FastifyReply, targets: Target[]): boolean | Promise<boolean> {
    let pending: Array<Promise<boolean>> | null = null
    for (const target of targets) {
      const check = target.channel.authorize
      if (check === null) continue
      const verdict: unknown = check(reply.request, { ...target.params })
      if (verdict === true) continue
      // Only true admits: a forgotten return or a truthy non-boolean refuses.
      if (typeof (verdict as Promise<unknown> | null)?.then !== 'function') return false
      pending ??= []
      pending.push(verdict as Promise<boolean>)
    }
    if (pending === null) return true
    return Promise.all(pending).then(all => all.every(v => v === true))
  }

  /** @internal `stream.subscribe()`: authorise, attach, then catch up from the stream's last id. */
  async subscribeStream (stream: SseStream, list: Subscribable[]): Promise<void> {
    const targets = list.map(s => this.resolve(s))
    const verdict = await this.authorize({ request: stream.request } as FastifyReply, targets)
    if (!verdict) throw new FST_ERR_SSEHUB_FORBIDDEN(targets.map(t => t.key).join(', '))
    if (stream.ended) return
    let sub = stream.hubState as Subscriber | null
    let start: Promise<number> | null = null
    if (sub === null) {
      sub = new Subscriber(stream)
      stream.hubState = sub
      start = this.backend.head()
    }
    const fresh = targets.filter(t => !(sub as Subscriber).topics.includes(this.topics.get(t.key) as LocalTopic))
    if (fresh.length === 0) return
    this.attach(sub, fresh)
    await this.catchUp(sub, fresh.map(t => this.topics.get(t.key) as LocalTopic), null, start)
  }

  /** @internal `stream.unsubscribe()`. */
  unsubscribeStream (stream: SseStream, list: Subscribable[]): void {
    const sub = stream.hubState as Subscriber | null
    if (sub === null) return
    for (const s of list) {
      const topic = this.topics.get(this.resolve(s).key)
      if (topic !== undefined && sub.topics.includes(topic)) this.unlink(sub, topic)
    }
  }

  private attach (sub: Subscriber, targets: Target[]): void {
    sub.holding ??= []
    for (const target of targets) {
      const topic = this.localTopic(target.key, target.channel)
      if (topic.subs.has(sub)) continue
      topic.subs.add(sub)
      sub.topics.push(topic)
      this.subscriptions++
      this.countsOf(topic.channel).subscribers++
    }
  }

  /**
   * Brings `sub` up to date on `topics`, then lets live events through.
   * Live events arriving meanwhile are held and merged in by seq, so none is
   * lost or sent twice. From where:
   * - `start` (a head read when the stream subscribed): a fresh stream, told
   *   that id first, so a client dropping before its first event resumes there;
   * - `asked` (the client's Last-Event-ID at open): checked first; an
   *   unknown or foreign id, or a gap history no longer covers, sends `reset`
   *   (with the hub's head as its id) instead of replaying;
   * - neither: from the stream's last seq (mid-stream subscribe, outage).
   */
  private catchUp (
    sub: Subscriber,
    topics: LocalTopic[],
    asked: string | null,
    start: Promise<number> | null,
    intro: Intro = { since: 0, snapshots: [], live: false }
  ): Promise<void> {
    const atOpen = asked !== null
    sub.holding ??= []
    const run = async (): Promise<void> => {
      const stream = sub.stream
      const generation = this.generation
      // History and the head are read only once every topic's subscription
      // is in effect: an event is then either in what is read, or delivered live.
      await Promise.all(topics.map(t => t.ready))
      let reason: ResetReason | null = null
      let from = sub.lastSeq
      if (start !== null) {
        from = await start
        if (generation !== this.generation || stream.ended) return
        await this.introduce(sub, topics, from, intro, generation)
        if (generation !== this.generation || stream.ended) return
        sub.lastSeq = from
      } else if (atOpen) {
        const id = stream.lastEventId === undefined ? null : parseId(stream.lastEventId)
        if (id === null) reason = 'unknown'
        else if (id.epoch !== this.backend.epoch) reason = 'epoch'
        else if (id.seq > await this.backend.head()) reason = 'unknown'
        else from = id.seq
      }
      let missed: HubEvent[] = []
      if (reason === null && !intro.live) {
        const results = await Promise.all(topics.map(t => this.backend.after(t.key, from)))
        if (results.some(r => r.trimmed)) reason = 'trimmed'
        else missed = results.length === 1 ? results[0].events : results.flatMap(r => r.events).sort(bySeq)
      }
      if (generation !== this.generation) return
      if (reason !== null) {
        const head = await this.backend.head()
        if (stream.ended || generation !== this.generation) return
        stream.push(resetFrame(formatId(this.backend.epoch, head), asked ?? formatId(this.backend.epoch, from), reason))
        sub.lastSeq = Math.max(sub.lastSeq, head)
        this.resets++
      } else {
        sub.lastSeq = from
        await this.replay(sub, missed, generation)
        if (atOpen) this.resumes++
      }
    }
    const done = (sub.chain ?? Promise.resolve()).then(run).then(() => this.release(sub), (err) => {
      // Held events must not go out past history that was never read: that
      // would be a silent gap. Close instead; the client resumes from its last id.
      sub.holding = null
      if (!sub.stream.ended) {
        sub.stream.request.log.error({ err }, 'fastify-sse-hub: could not bring the stream up to date (history, head or snapshot); closing it so the client resumes')
        sub.stream.close()
      }
      throw err
    })
    // The chain is kept only while a catch-up runs: an idle stream holds no promise.
    const clear = (): void => { if (sub.chain === tail) sub.chain = null }
    const tail: Promise<void> = done.then(clear, clear)
    sub.chain = tail
    return done
  }

  /**
   * What a fresh subscriber gets before live events: the newest `-since`
   * events of each topic (up to `head`), then each channel's snapshot with
   * the head's id, or the head's id alone. Its last id is then `head`.
   */
  private async introduce (sub: Subscriber, topics: LocalTopic[], head: number, intro: Intro, generation: number): Promise<void> {
    const stream = sub.stream
    const headId = formatId(this.backend.epoch, head)
    if (intro.since < 0) {
      const lists = await Promise.all(topics.map(t => this.backend.latest(t.key, -intro.since)))
      const events = lists.flat().filter(ev => ev.seq <= head).sort(bySeq)
      sub.lastSeq = 0
      await this.replay(sub, events, generation)
    }
    const frames: Buffer[] = []
    for (const outcome of await Promise.all(intro.snapshots)) {
      if (!outcome.ok) throw outcome.error
      const { channel, value } = outcome
      const snapshot = value as { event?: unknown, data?: unknown } | null
      if (snapshot === null || typeof snapshot !== 'object' || typeof snapshot.event !== 'string') {
        throw new FST_ERR_SSEHUB_PAYLOAD_INVALID('snapshot', channel.name, '/', 'snapshot() must return { event, data }')
      }
      const { json } = channel.serialize(snapshot.event, snapshot.data)
      frames.push(Buffer.from(channel.head(snapshot.event) + headId + '\ndata: ' + json + '\n\n'))
    }
    if (stream.ended || generation !== this.generation) return
    // An event with (empty) data, not an id-only block: only Chromium adopts
    // the id of a block that dispatches nothing; eventsource, Firefox and
    // Safari need a dispatched event. Nobody listens for this name.
    if (frames.length === 0) frames.push(Buffer.from(`event: ${HEAD_EVENT}\nid: ${headId}\ndata:\n\n`))
    for (const frame of frames) stream.push(frame)
  }

  /** Writes `events` above the stream's last seq, paced by the socket. */
  private async replay (sub: Subscriber, events: HubEvent[], generation = this.generation): Promise<void> {
    const stream = sub.stream
    for (let i = 0; i < events.length; i++) {
      if (stream.ended || generation !== this.generation) return
      const ev = events[i]
      if (ev.seq <= sub.lastSeq) continue
      stream.push(frameOf(ev))
      sub.lastSeq = ev.seq
      if (stream.saturated) await stream.writable()
    }
  }

  /** Ends a catch-up: writes what was held back (paced), then lets live events through. */
  private async release (sub: Subscriber): Promise<void> {
    for (;;) {
      const held = sub.holding
      if (held === null || sub.stream.ended) return
      if (held.length === 0) {
        sub.holding = null
        sub.holdingBytes = 0
        return
      }
      sub.holding = []
      sub.holdingBytes = 0
      await this.replay(sub, held.sort(bySeq))
    }
  }

  private unlink (sub: Subscriber, topic: LocalTopic): void {
    topic.subs.delete(sub)
    const i = sub.topics.indexOf(topic)
    if (i !== -1) sub.topics.splice(i, 1)
    this.subscriptions--
    this.countsOf(topic.channel).subscribers--
    this.maybeDrop(topic)
  }

  private localTopic (key: string, channel: ChannelImpl): LocalTopic {
    let topic = this.topics.get(key)
    if (topic === undefined) {
      const created = new LocalTopic(key, channel)
      topic = created
      this.topics.set(key, topic)
      this.countsOf(channel).topics++
      topic.ready = this.backend.subscribe(key, channel.name).then(() => { created.live = true }, err => {
        this.log.error({ err, topic: key }, 'fastify-sse-hub: backend subscribe failed')
      })
    }
    return topic
  }

  private maybeDrop (topic: LocalTopic): void {
    if (!topic.idle || this.topics.get(topic.key) !== topic) return
    this.topics.delete(topic.key)
    this.countsOf(topic.channel).topics--
    if (topic.dirty) {
      topic.batch = []
      // Left in dirtyTopics; flushTopics sees no subscribers and skips it.
    }
    this.backend.unsubscribe(topic.key, topic.channel.name)
  }

  private countsOf (channel: ChannelImpl): { topics: number, subscribers: number } {
    let c = this.counts.get(channel)
    if (c === undefined) this.counts.set(channel, c = { topics: 0, subscribers: 0 })
    return c
  }

  private resolve (s: Subscribable): Target {
    const channel = channelOf(s)
    if (channel === null) {
      throw new FST_ERR_SSEHUB_TOPIC_INVALID(String((s as { name?: string })?.name ?? s), 'subscribe takes channels declared with fastify.sse.channel() and their topics')
    }
    if (channel.host !== this) {
      throw new FST_ERR_SSEHUB_TOPIC_INVALID(channel.name, 'the channel is not declared on this hub; pass it to fastify.sse.channel() first')
    }
    if (s === channel && channel.paramNames.length > 0) {
      throw new FST_ERR_SSEHUB_TOPIC_INVALID(channel.name, `subscribe to a topic: channel.topic({ ${channel.paramNames.join(', ')} })`)
    }
    return { channel, key: s.key, params: s.params }
  }

  /** Live counts for this process; see {@link SseStats}. */
  stats (): SseStats {
    const p = this.pump
    const b = this.backend.stats()
    const channels: SseStats['channels'] = {}
    for (const [channel, c] of this.counts) channels[channel.name] = { topics: c.topics, subscribers: c.subscribers }
    return {
      openStreams: p.streams.size,
      streamsOpened: p.opened,
      subscriptions: this.subscriptions,
      topics: this.topics.size,
      channels,
      published: this.published,
      deliveries: this.deliveries,
      slowClientCuts: p.slowClientCuts,
      shed: this.shed,
      shedPerClient: this.shedPerClient,
      expired: this.expired,
      disconnected: this.disconnected,
      resumes: this.resumes,
      resets: this.resets,
      historyEvents: b.historyEvents,
      historyBytes: b.historyBytes,
      writes: p.writes,
      heartbeats: p.heartbeats,
      backend: { kind: b.kind, connected: b.connected }
    }
  }

  /**
   * The counts of `stats()` in the Prometheus text format (version 0.0.4),
   * names prefixed `sse_hub_`: mount it as a route
   * (`app.get('/metrics', (req, reply) => reply.type('text/plain; version=0.0.4').send(app.sse.metrics()))`).
   */
  metrics (): string {
    const s = this.stats()
    const out: string[] = []
    const metric = (name: string, type: 'gauge' | 'counter', help: string, samples: Array<[string, number]>): void => {
      out.push(`# HELP sse_hub_${name} ${help}`, `# TYPE sse_hub_${name} ${type}`)
      for (const [labels, value] of samples) out.push(`sse_hub_${name}${labels} ${value}`)
    }
    const one = (value: number): Array<[string, number]> => [['', value]]
    metric('open_streams', 'gauge', 'Streams open now.', one(s.openStreams))
    metric('subscriptions', 'gauge', 'Stream subscriptions to topics now.', one(s.subscriptions))
    metric('topics', 'gauge', 'Topics with subscribers or listeners in this process.', one(s.topics))
    metric('history_events', 'gauge', 'Events held in this process\'s history.', one(s.historyEvents))
    metric('history_bytes', 'gauge', 'Bytes of history held in this process, counted from above.', one(s.historyBytes))
    metric('backend_connected', 'gauge', 'Whether the backend can publish (1) or not (0).', [[`{kind="${escapeLabel(s.backend.kind)}"}`, s.backend.connected ? 1 : 0]])
    const channels = Object.entries(s.channels)
    metric('channel_topics', 'gauge', 'Topics of a channel with subscribers in this process.', channels.map(([name, c]) => [`{channel="${escapeLabel(name)}"}`, c.topics]))
    metric('channel_subscribers', 'gauge', 'Subscriptions to a channel\'s topics in this process.', channels.map(([name, c]) => [`{channel="${escapeLabel(name)}"}`, c.subscribers]))
    metric('streams_opened_total', 'counter', 'Streams opened.', one(s.streamsOpened))
    metric('published_total', 'counter', 'Events published from this process.', one(s.published))
    metric('deliveries_total', 'counter', 'Events handed to streams (events x subscribers).', one(s.deliveries))
    metric('slow_client_cuts_total', 'counter', 'Streams cut for holding more than maxBufferedBytes unsent.', one(s.slowClientCuts))
    metric('shed_total', 'counter', 'Streams turned away over maxConnections.', one(s.shed))
    metric('shed_per_client_total', 'counter', 'Streams turned away over maxStreamsPerClient.', one(s.shedPerClient))
    metric('expired_total', 'counter', 'Streams ended at the end of their lifetime.', one(s.expired))
    metric('disconnected_total', 'counter', 'Streams ended by disconnect({ tag }).', one(s.disconnected))
    metric('resumes_total', 'counter', 'Streams resumed from history.', one(s.resumes))
    metric('resets_total', 'counter', 'Streams sent a reset instead of a replay.', one(s.resets))
    metric('writes_total', 'counter', 'Socket writes.', one(s.writes))
    metric('heartbeats_total', 'counter', 'Heartbeat comments written.', one(s.heartbeats))
    return out.join('\n') + '\n'
  }

  /** Ends every open stream (each told to reconnect after a jittered delay) and refuses further publishes. `fastify.close()` calls this. */
  async close (): Promise<void> {
    if (this.closed) return
    this.closed = true
    this.pump.shutdown()
    // Module-level definitions may be attached again by a new app (a restart in tests, say).
    for (const channel of this.channels.values()) if (channel.host === this) channel.host = null
  }
}

interface Target {
  channel: ChannelImpl
  key: string
  params: Readonly<Record<string, string>>
}

function escapeLabel (value: string): string {
  return value.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')
}

function assertTag (tag: unknown): void {
  if (typeof tag !== 'string' || !TAG.test(tag)) throw new FST_ERR_SSEHUB_TAG_INVALID(JSON.stringify(tag) ?? String(tag))
}

function bySeq (a: HubEvent, b: HubEvent): number {
  return a.seq - b.seq
}

/** The event's SSE frame, built once per process and cached on the event. */
function frameOf (ev: HubEvent): Buffer {
  if (ev.frame === undefined) {
    ev.frame = Buffer.from('event: ' + ev.event + '\nid: ' + ev.id + '\ndata: ' + ev.data + '\n\n')
  }
  return ev.frame
}

function packetOfBatch (batch: HubEvent[]): Packet {
  let bytes = 0
  const frames = new Array<Buffer>(batch.length)
  for (let i = 0; i < batch.length; i++) {
    frames[i] = batch[i].frame as Buffer
    bytes += frames[i].length
  }
  return packetOf(frames, bytes)
}

function resetFrame (headId: string, asked: string, reason: ResetReason): Buffer {
  return Buffer.from(`event: reset\nid: ${headId}\ndata: ${JSON.stringify({ lastEventId: asked.slice(0, 64), reason })}\n\n`)
}
