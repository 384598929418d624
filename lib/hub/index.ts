/**
 * `fastify.sse`: the hub of one plugin instance, a thin facade over its
 * parts, one concern each:
 *
 *   topics.ts     the topics followed here (the only caller of backend.subscribe)
 *   fanout.ts     backend deliveries -> one shared packet per topic per turn
 *   catch-up.ts   resume, fresh start and outage catch-up from one consistent read
 *   admission.ts  reply.sse(): caps, authorize, snapshots, shedding
 *   tags.ts       tags and targeted disconnect
 *   listeners.ts  in-process subscribe()
 *   runs.ts       run(): producers publishing a generation, ended by one `end`
 *   metrics.ts    stats() as Prometheus text
 *
 * The backend and the channels are handed small host objects, not the hub.
 */
import { EventEmitter } from 'node:events'
import type { FastifyBaseLogger, FastifyReply } from 'fastify'
import type { Backend, BackendHost, HubEvent } from '../backend.js'
import { channelOf, ChannelImpl, type Channel, type ChannelHost, type ChannelOptions, type EventMap, type Subscribable, type Topic } from '../channel.js'
import { oversize } from '../encoder.js'
import {
  FST_ERR_SSEHUB_CHANNEL_DUPLICATE,
  FST_ERR_SSEHUB_CLOSED,
  FST_ERR_SSEHUB_EVENT_TOO_LARGE,
  FST_ERR_SSEHUB_TAG_INVALID,
  FST_ERR_SSEHUB_TOPIC_INVALID
} from '../errors.js'
import type { Pump } from '../pump.js'
import type { CloseReason, SseSource, SseStream } from '../stream.js'
import { Admission, type Target } from './admission.js'
import { CatchUp } from './catch-up.js'
import { Fanout, TURN_BYTES } from './fanout.js'
import { Listeners } from './listeners.js'
import type { Member } from './state.js'
import { prometheus } from './metrics.js'
import { Runs, type Producer, type Run } from './runs.js'
import type { HubSettings, SseHubEvents, SseReplyOptions, SseStats } from './stats.js'
import { assertTag, Tags } from './tags.js'
import { TopicRegistry } from './topics.js'

export { HEAD_EVENT } from '../encoder.js'
export type { SseStats, SseReplyOptions, SseHubEvents, ResetReason } from './stats.js'
export type { Run, RunEnd, RunEndReason, RunOutcome, Producer } from './runs.js'

/**
 * `fastify.sse`: the hub of this plugin instance. It is an EventEmitter:
 * `fastify.sse.on('connect', stream => ...)` and
 * `fastify.sse.on('disconnect', (stream, reason) => ...)` for custom accounting.
 */
export class SseHub extends EventEmitter<SseHubEvents> {
  private readonly pump: Pump
  private readonly backend: Backend
  private readonly log: FastifyBaseLogger
  private readonly channels = new Map<string, ChannelImpl>()
  private readonly topics: TopicRegistry
  private readonly inProcess: Listeners
  private readonly fanout: Fanout
  private readonly catchUp: CatchUp
  private readonly tags: Tags
  private readonly admission: Admission
  private readonly runs: Runs
  private readonly settings: HubSettings
  private published = 0
  private expired = 0
  private closed = false

  /** @internal What channels bound to this hub publish and listen through. */
  readonly channelHost: ChannelHost
  /** @internal What the backend delivers to and reports through. */
  readonly backendHost: BackendHost

  /** @internal Created by the plugin. */
  constructor (pump: Pump, backend: Backend, settings: HubSettings, log: FastifyBaseLogger) {
    super()
    this.pump = pump
    this.backend = backend
    this.log = log
    this.settings = settings
    const logger = (): FastifyBaseLogger => this.log
    this.topics = new TopicRegistry(backend, logger)
    this.inProcess = new Listeners(this.topics, logger)
    this.fanout = new Fanout(this.topics, this.inProcess, pump)
    this.catchUp = new CatchUp(backend)
    this.tags = new Tags(stream => stream.end('disconnect', pump.reconnectDelay()))
    pump.source = this.fanout
    this.admission = new Admission({
      pump,
      backend,
      settings,
      topics: this.topics,
      tags: this.tags,
      catchUp: this.catchUp,
      resolve: s => this.resolve(s),
      connected: stream => this.emit('connect', stream),
      subscribe: (member, list) => this.admission.subscribe(member, list),
      unsubscribe: (member, list) => this.admission.unsubscribe(member, list),
      closed: (member, reason) => this.memberClosed(member, reason)
    })
    this.runs = new Runs({
      backend,
      log,
      maxEventBytes: pump.options.maxEventBytes,
      published: () => {
        this.published++
        return this.fanout.turnBytes > TURN_BYTES ? this.pump.flushed() : undefined
      }
    })
    this.channelHost = {
      publish: (topic, event, data, json) => this.publish(topic, event, data, json),
      listen: (channel, key, event, handler) => this.inProcess.listen(channel, key, event, handler)
    }
    const fanout = this.fanout
    this.backendHost = {
      log,
      deliver: (ev, payload) => fanout.deliver(ev, payload),
      interrupted: () => {
        for (const member of this.topics.members()) this.catchUp.start(member, [...member.topics], { kind: 'last' }).catch(noop)
      },
      epochChanged: oldEpoch => {
        this.catchUp.epochChanged(this.topics.members(), oldEpoch)
        fanout.dropBatches()
      },
      control: message => {
        const tag = Tags.parseControl(message)
        if (tag !== null) this.tags.disconnect(tag, this.admission.pending)
      }
    }
  }

  /**
   * Declares a channel on this hub, or attaches one made with
   * `defineChannel()`. Schemas are compiled now; a duplicate or overlapping
   * name, or an invalid definition, throws a coded error at once.
   */
  channel<const N extends string, E extends EventMap> (name: N, options: ChannelOptions<E, N>): Channel<N, E>
  channel<N extends string, E extends EventMap> (definition: Channel<N, E>): Channel<N, E>
  channel (nameOrDefinition: unknown, options?: ChannelOptions<EventMap>): Channel<any, any> {
    const channel = nameOrDefinition instanceof ChannelImpl
      ? nameOrDefinition
      : new ChannelImpl(nameOrDefinition as string, options as ChannelOptions<EventMap>)
    if (channel.host !== null && channel.host !== this.channelHost) {
      throw new FST_ERR_SSEHUB_CHANNEL_DUPLICATE(channel.name)
    }
    for (const other of this.channels.values()) {
      if (other !== channel && (other.name === channel.name || other.overlaps(channel))) {
        throw new FST_ERR_SSEHUB_CHANNEL_DUPLICATE(other.name === channel.name ? channel.name : `${channel.name}" overlaps "${other.name}`)
      }
    }
    channel.host = this.channelHost
    this.channels.set(channel.name, channel)
    const own = channel.history
    if (own !== null) {
      const s = this.settings
      this.backend.channelHistory?.(channel.name, { limit: own.limit ?? s.history, ttl: own.ttl ?? s.historyTtl, bytes: own.bytes ?? s.maxHistoryBytes })
    }
    return channel as unknown as Channel<any, any>
  }

  /**
   * Starts a producer run on `topic`: `producer(signal)` is called once, and
   * every `{ event, data }` it yields is validated and published to the
   * topic, in order, with an id each. The run always ends with one `end`
   * event (`{ reason: 'complete' | 'cancelled' | 'error' | 'lost' }`), the
   * topic's last: when the producer returns or throws, when it is cancelled
   * from any instance (`cancel(topic)`), or when its instance dies or closes.
   * Followers use `reply.sse({ subscribe: [topic], since: 'start', until })`.
   * One run per topic at a time: `run.started` rejects with
   * `FST_ERR_SSEHUB_RUN_ACTIVE` while another runs.
   */
  run<E extends EventMap, N extends string> (topic: Topic<E, N> | Channel<N, E>, producer: Producer<E>): Run {
    if (this.closed) throw new FST_ERR_SSEHUB_CLOSED()
    return this.runs.start(this.resolve(topic as Subscribable), producer as unknown as Producer)
  }

  /**
   * Cancels the run on `topic`, whichever instance runs it: its `end` event
   * (`reason: 'cancelled'`) is published at once, the producer's signal
   * aborts, and anything it yields after is refused. Resolves to whether a
   * run was running.
   */
  async cancel (topic: Subscribable): Promise<boolean> {
    return await this.runs.cancel(this.resolve(topic))
  }

  /**
   * @internal A validated, serialised event, handed to the backend. Not
   * `async`: the backend's promise and one `then` are all a publish makes.
   */
  private publish (topic: Subscribable, event: string, data: unknown, json: string): Promise<string> {
    if (this.closed) return Promise.reject(new FST_ERR_SSEHUB_CLOSED())
    const max = this.pump.options.maxEventBytes
    const bytes = oversize(event, json, max)
    if (bytes > 0) return Promise.reject(new FST_ERR_SSEHUB_EVENT_TOO_LARGE(bytes, max))
    try {
      return this.backend.publish(topic.key, event, json, data, (channelOf(topic) as ChannelImpl).name).then(this.afterPublish)
    } catch (err) {
      return Promise.reject(err)
    }
  }

  private readonly afterPublish = (ev: HubEvent): string | Promise<string> => {
    this.published++
    // An awaited publish loop yields to the flush every TURN_BYTES, so it
    // becomes many turns, not one giant write per socket.
    if (this.fanout.turnBytes > TURN_BYTES) return this.pump.flushed().then(() => ev.id)
    return ev.id
  }

  /** @internal The body of `reply.sse()`. */
  reply (reply: FastifyReply, source: SseSource | SseReplyOptions | undefined): SseStream {
    return this.admission.reply(reply, source)
  }

  private resolve (s: Subscribable): Target {
    const channel = channelOf(s)
    if (channel === null) {
      throw new FST_ERR_SSEHUB_TOPIC_INVALID(String((s as { name?: string })?.name ?? s), 'subscribe takes channels declared with fastify.sse.channel() and their topics')
    }
    if (channel.host !== this.channelHost) {
      throw new FST_ERR_SSEHUB_TOPIC_INVALID(channel.name, 'the channel is not declared on this hub; pass it to fastify.sse.channel() first')
    }
    if (s === channel && channel.paramNames.length > 0) {
      throw new FST_ERR_SSEHUB_TOPIC_INVALID(channel.name, `subscribe to a topic: channel.topic({ ${channel.paramNames.join(', ')} })`)
    }
    return { channel, key: s.key, params: s.params }
  }

  /** A stream ended: drop its subscriptions, tags and client slot. */
  private memberClosed (member: Member, reason: CloseReason): void {
    for (const topic of member.topics.slice()) this.topics.unlink(member, topic)
    member.holding = null
    this.tags.remove(member.stream)
    this.admission.release(member)
    if (reason === 'expired') this.expired++
    else if (reason === 'disconnect') this.tags.disconnected++
    if (member.announced) this.emit('disconnect', member.stream, reason)
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
    const ended = this.tags.disconnect(selector.tag, this.admission.pending)
    await this.backend.broadcast?.(JSON.stringify({ disconnect: selector.tag }))
    return ended
  }

  /** Live counts for this process; see {@link SseStats}. */
  stats (): SseStats {
    const p = this.pump
    const b = this.backend.stats()
    return {
      openStreams: p.streams.size,
      streamsOpened: p.opened,
      subscriptions: this.topics.subscriptions,
      topics: this.topics.size,
      channels: this.topics.channelCounts(),
      published: this.published,
      deliveries: this.fanout.deliveries,
      slowClientCuts: p.slowClientCuts,
      shed: this.admission.shed,
      shedPerClient: this.admission.shedPerClient,
      expired: this.expired,
      disconnected: this.tags.disconnected,
      resumes: this.catchUp.resumes,
      resets: this.catchUp.resets,
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
    return prometheus(this.stats())
  }

  /** Ends every open stream (each told to reconnect after a jittered delay) and refuses further publishes. `fastify.close()` calls this. */
  async close (): Promise<void> {
    if (this.closed) return
    this.closed = true
    await this.runs.close()
    this.pump.shutdown()
    // Module-level definitions may be attached again by a new app (a restart in tests, say).
    for (const channel of this.channels.values()) if (channel.host === this.channelHost) channel.host = null
  }
}

const noop = (): void => {}
