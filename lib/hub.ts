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
  FST_ERR_SSEHUB_SOURCE_INVALID,
  FST_ERR_SSEHUB_TOPIC_INVALID
} from './errors.js'
import type { HistoryLimits } from './history.js'
import { SseStream, type Pump, type SseSource } from './stream.js'

/** Why a resume could not replay what the client missed. */
export type ResetReason = 'unknown' | 'trimmed' | 'epoch'

/** Options of `reply.sse(options)`. */
export interface SseReplyOptions {
  /** Channels (plain ones) and topics to follow on this stream. */
  subscribe?: Subscribable[]
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
}

type Listener = (data: unknown, meta: EventMeta) => void

/** A topic with subscribers or listeners in this process. */
class LocalTopic {
  readonly subs = new Set<Subscriber>()
  listeners: Map<string, Set<Listener>> | null = null
  batch: HubEvent[] = []
  dirty = false
  /** Resolves once the backend delivers this topic's events: history may be read only after. */
  ready: Promise<void> = Promise.resolve()
  constructor (readonly key: string, readonly channel: ChannelImpl) {}

  get idle (): boolean {
    return this.subs.size === 0 && this.listeners === null
  }
}

/** A stream's subscriptions. */
class Subscriber {
  readonly topics = new Set<LocalTopic>()
  /** The highest seq this stream has been given: nothing at or below it is sent again. */
  lastSeq = 0
  /** While catching up: live events held back until history has been written. */
  holding: HubEvent[] | null = null
  holdingBytes = 0
  /** Batches of several topics this turn, merged by seq at the flush. */
  pending: HubEvent[][] | null = null
  /** Catch-ups run one at a time, in order. */
  chain: Promise<void> = Promise.resolve()
  constructor (readonly stream: SseStream) {}
}

/** `fastify.sse`: the hub of this plugin instance. */
export class SseHub implements ChannelHost, BackendHost {
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
  private resumes = 0
  private resets = 0
  private closed = false
  /** Bumped when the backend's epoch changes: catch-ups begun before it stop writing. */
  private generation = 0

  /** @internal Created by the plugin. */
  constructor (pump: Pump, backend: Backend, settings: HubSettings) {
    this.pump = pump
    this.backend = backend
    this.settings = settings
    pump.beforeFlush = () => this.flushTopics()
    pump.onStreamClosed = (stream) => this.detach(stream.hubState as Subscriber)
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
      if (byEvent === undefined) this.channelListeners.set(channel.name, byEvent = new Map())
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
      if (key !== null) {
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
        } else if (sub.topics.size === 1) {
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
    let follow: Subscribable[] = []
    if (source !== undefined) {
      if (source === null || typeof source !== 'object') {
        throw new FST_ERR_SSEHUB_SOURCE_INVALID(source === null ? 'null' : typeof source)
      }
      if (Symbol.asyncIterator in source || Symbol.iterator in source) {
        iterable = source as SseSource
      } else if ((source as SseReplyOptions).subscribe !== undefined) {
        follow = (source as SseReplyOptions).subscribe as Subscribable[]
        if (!Array.isArray(follow)) throw new FST_ERR_SSEHUB_SOURCE_INVALID('options.subscribe that is not an array')
      }
    }
    const targets = follow.map(s => this.resolve(s))
    const stream = new SseStream(this.pump, reply.request, reply)

    if (this.pump.closing || this.pump.streams.size >= this.settings.maxConnections) {
      // Over capacity or shutting down: a native EventSource gives up for good
      // on any non-200, so answer 200, tell it when to retry, and end.
      if (!this.pump.closing) this.shed++
      reply.hijack()
      stream.open(reply)
      stream.shutdown(this.pump.jitteredRetry(this.retryBase(), this.pump.options.shutdownJitter))
      return stream
    }

    const decided = this.authorize(reply, targets)
    if (decided === true) {
      this.start(reply, stream, targets, iterable)
    } else if (decided === false) {
      this.refuse(reply, stream, targets)
    } else {
      decided.then(ok => {
        if (stream.ended) return
        if (ok) this.start(reply, stream, targets, iterable)
        else this.refuse(reply, stream, targets)
      }, err => {
        stream.abandon()
        reply.send(err)
      })
    }
    return stream
  }

  private start (reply: FastifyReply, stream: SseStream, targets: Target[], iterable: SseSource | null): void {
    if (reply.raw.destroyed) {
      stream.abandon()
      return
    }
    reply.hijack()
    stream.open(reply)
    if (stream.ended) return
    if (targets.length > 0) {
      const sub = new Subscriber(stream)
      stream.hubState = sub
      const asked = stream.lastEventId ?? stream.invalidLastEventId ?? null
      // A fresh subscriber starts at the head as of now: asked for before
      // anything else, so every later publish of this process comes after it.
      const start = asked === null ? this.backend.head() : null
      this.attach(sub, targets)
      this.catchUp(sub, targets.map(t => this.topics.get(t.key) as LocalTopic), asked, start).catch(() => {})
    }
    if (iterable !== null) void stream.pipeFrom(iterable)
  }

  private refuse (reply: FastifyReply, stream: SseStream, targets: Target[]): void {
    stream.abandon()
    const names = targets.map(t => t.key).join(', ')
    reply.code(403).send(new FST_ERR_SSEHUB_FORBIDDEN(names))
  }

  /** true / false when every check is synchronous, else a promise of the verdict. */
  private authorize (reply: FastifyReply, targets: Target[]): boolean | Promise<boolean> {
    let pending: Array<Promise<boolean>> | null = null
    for (const target of targets) {
      const check = target.channel.authorize
      if (check === null) continue
      const verdict = check(reply.request, { ...target.params })
      if (verdict === false) return false
      if (verdict !== true && verdict !== null && typeof (verdict as Promise<boolean>).then === 'function') {
        (pending ??= []).push(Promise.resolve(verdict))
      } else if (verdict !== true) {
        return false
      }
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
    const fresh = targets.filter(t => !(sub as Subscriber).topics.has(this.topics.get(t.key) as LocalTopic))
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
      if (topic !== undefined && sub.topics.has(topic)) this.unlink(sub, topic)
    }
  }

  private attach (sub: Subscriber, targets: Target[]): void {
    sub.holding ??= []
    for (const target of targets) {
      const topic = this.localTopic(target.key, target.channel)
      if (topic.subs.has(sub)) continue
      topic.subs.add(sub)
      sub.topics.add(topic)
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
  private catchUp (sub: Subscriber, topics: LocalTopic[], asked: string | null, start: Promise<number> | null): Promise<void> {
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
        sub.lastSeq = from
        stream.push(Buffer.from(`id: ${formatId(this.backend.epoch, from)}\n\n`))
      } else if (atOpen) {
        const id = stream.lastEventId === undefined ? null : parseId(stream.lastEventId)
        if (id === null) reason = 'unknown'
        else if (id.epoch !== this.backend.epoch) reason = 'epoch'
        else if (id.seq > await this.backend.head()) reason = 'unknown'
        else from = id.seq
      }
      let missed: HubEvent[] = []
      if (reason === null) {
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
    const done = sub.chain.then(run).then(() => this.release(sub), (err) => {
      // Held events must not go out past history that was never read: that
      // would be a silent gap. Close instead; the client resumes from its last id.
      sub.holding = null
      if (!sub.stream.ended) {
        sub.stream.request.log.error({ err }, 'fastify-sse-hub: catching up from history failed; closing the stream so the client resumes')
        sub.stream.close()
      }
      throw err
    })
    sub.chain = done.catch(() => {})
    return done
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

  /** Drops every subscription of a closed stream. */
  private detach (sub: Subscriber): void {
    for (const topic of [...sub.topics]) this.unlink(sub, topic)
    sub.holding = null
  }

  private unlink (sub: Subscriber, topic: LocalTopic): void {
    topic.subs.delete(sub)
    sub.topics.delete(topic)
    this.subscriptions--
    this.countsOf(topic.channel).subscribers--
    this.maybeDrop(topic)
  }

  private localTopic (key: string, channel: ChannelImpl): LocalTopic {
    let topic = this.topics.get(key)
    if (topic === undefined) {
      topic = new LocalTopic(key, channel)
      this.topics.set(key, topic)
      this.countsOf(channel).topics++
      topic.ready = this.backend.subscribe(key).catch(err => {
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
    this.backend.unsubscribe(topic.key)
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

  private retryBase (): number {
    return this.pump.options.retry === false ? 3_000 : this.pump.options.retry
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
      resumes: this.resumes,
      resets: this.resets,
      historyEvents: b.historyEvents,
      historyBytes: b.historyBytes,
      writes: p.writes,
      heartbeats: p.heartbeats,
      backend: { kind: b.kind, connected: b.connected }
    }
  }

  /** Ends every open stream (each told to reconnect after a jittered delay) and refuses further publishes. `fastify.close()` calls this. */
  async close (): Promise<void> {
    if (this.closed) return
    this.closed = true
    this.pump.shutdown()
  }
}

interface Target {
  channel: ChannelImpl
  key: string
  params: Readonly<Record<string, string>>
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
