/**
 * `fastify-sse-hub/redis`: the Redis backend, and a publisher for processes
 * that publish without Fastify (workers, cron jobs) through the same
 * channel definitions. Imports ioredis; apps that never import this entry
 * do not need it.
 */
import type { FastifyBaseLogger } from 'fastify'
import { ChannelImpl, channelOf, type Channel, type EventMap, type Subscribable } from './channel.js'
import { RedisBackend, redisBackend, type RedisBackendOptions } from './backends/redis.js'
import { defaults } from './options.js'
import { oversize } from './encoder.js'
import { FST_ERR_SSEHUB_CHANNEL_DUPLICATE, FST_ERR_SSEHUB_CLOSED, FST_ERR_SSEHUB_EVENT_TOO_LARGE } from './errors.js'

export { redisBackend, RedisBackend, type RedisBackendOptions }

/** Options of `createPublisher()`: where Redis is, and the history bounds the app uses. */
export interface PublisherOptions extends RedisBackendOptions {
  /** Must match the app's `history` option: the publish applies it to Redis. @default 1000 */
  history?: number
  /** Must match the app's `historyTtl` option. @default 600000 */
  historyTtl?: number
  /** Largest framed event accepted. @default 1048576 */
  maxEventBytes?: number
  /** Where Redis errors and outages are logged. @default console */
  log?: Pick<FastifyBaseLogger, 'info' | 'warn' | 'error'>
}

/** Publishes typed, validated events to a Redis-backed hub from any process. */
export class Publisher {
  private readonly channels = new Map<string, ChannelImpl>()
  private closed = false

  /** @internal Use `createPublisher()`. */
  constructor (private readonly backend: RedisBackend, private readonly maxEventBytes: number) {}

  /**
   * Attaches a channel made with `defineChannel()`: its `publish()` then goes
   * through this publisher. Returns the channel.
   */
  channel<N extends string, E extends EventMap> (definition: Channel<N, E>): Channel<N, E> {
    const channel = definition as unknown as ChannelImpl
    if (!(channel instanceof ChannelImpl)) throw new TypeError('fastify-sse-hub: publisher.channel() takes a channel made with defineChannel()')
    if (channel.host !== null && channel.host !== this) throw new FST_ERR_SSEHUB_CHANNEL_DUPLICATE(channel.name)
    channel.host = this
    this.channels.set(channel.name, channel)
    return definition
  }

  /** @internal ChannelHost. */
  async publish (topic: Subscribable, event: string, data: unknown, json: string): Promise<string> {
    if (this.closed) throw new FST_ERR_SSEHUB_CLOSED()
    const bytes = oversize(event, json, this.maxEventBytes)
    if (bytes > 0) throw new FST_ERR_SSEHUB_EVENT_TOO_LARGE(bytes, this.maxEventBytes)
    const ev = await this.backend.publish(topic.key, event, json, data, (channelOf(topic) as ChannelImpl).name)
    return ev.id
  }

  /** @internal ChannelHost: listening needs a hub; a publisher only publishes. */
  listen (): () => void {
    throw new TypeError('fastify-sse-hub: a publisher cannot subscribe; subscribe through the app\'s fastify.sse')
  }

  /** Closes the publisher's Redis connections (not a client passed in as `redis`). */
  async close (): Promise<void> {
    if (this.closed) return
    this.closed = true
    for (const channel of this.channels.values()) if (channel.host === this) channel.host = null
    await this.backend.close()
  }
}

/**
 * Connects to Redis and returns a publisher. Attach the channel definitions
 * the app uses (`publisher.channel(ticker)`), then `ticker.publish(...)`
 * validates, serialises and publishes exactly as it would in the app.
 */
export async function createPublisher (options: PublisherOptions = {}): Promise<Publisher> {
  const backend = new RedisBackend(options)
  const log = options.log ?? console
  const host = {
    log: log as FastifyBaseLogger,
    deliver: () => {},
    interrupted: () => {},
    epochChanged: () => {},
    control: () => {}
  }
  await backend.start(host, {
    history: options.history ?? defaults.history,
    historyTtl: options.historyTtl ?? defaults.historyTtl,
    maxHistoryBytes: defaults.maxHistoryBytes,
    maxIdleTopics: defaults.maxIdleTopics
  })
  return new Publisher(backend, options.maxEventBytes ?? defaults.maxEventBytes)
}
