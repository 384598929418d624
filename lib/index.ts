/**
 * fastify-sse-hub: Server-Sent Events for Fastify, with typed pub/sub channels.
 * The plugin shell: options, decorators, type augmentation, shutdown.
 */
import fp from 'fastify-plugin'
import type { FastifyInstance, FastifyPluginAsync, FastifyReply } from 'fastify'
import { normalizeOptions, type SseHubOptions } from './options.js'
import { Pump } from './pump.js'
import type { SseStream, SseSource } from './stream.js'
import { watchHandlers } from './handler-errors.js'
import { SseHub, type SseReplyOptions } from './hub/index.js'
import { answered } from './hub/admission.js'
import type { Backend } from './backend.js'
import { FST_ERR_SSEHUB_ALREADY_REGISTERED, FST_ERR_SSEHUB_REPLY_SENT } from './errors.js'

declare module 'fastify' {
  interface FastifyReply {
    /**
     * Turns this reply into an event stream and returns its handle.
     * - `reply.sse()`: an open stream to `send()` to by hand;
     * - `reply.sse(iterable)`: every value of an (async) iterable is sent as
     *   one event, paced by the socket; the response ends when the iterable
     *   ends, and `return()` is called on it if the client goes away first;
     * - `reply.sse({ subscribe: [channel, room.topic({ roomId })] })`: follows
     *   channels and topics, resuming from the client's `Last-Event-ID`.
     * A `HEAD` request gets the headers and an empty body.
     */
    sse: (source?: SseSource | SseReplyOptions) => SseStream
  }
  interface FastifyInstance {
    /** The hub of fastify-sse-hub: declare channels, read stats. */
    sse: SseHub
  }
}

/** Keys Fastify itself reads from register options; not ours to check. */
const REGISTER_KEYS = new Set(['prefix', 'logLevel', 'logSerializers'])

const plugin: FastifyPluginAsync<SseHubOptions> = async (fastify: FastifyInstance, opts) => {
  if (fastify.hasReplyDecorator('sse') || fastify.hasDecorator('sse')) throw new FST_ERR_SSEHUB_ALREADY_REGISTERED()
  // Fastify's own register keys are not ours to check; everything else is.
  let own: unknown = opts
  if (opts !== null && typeof opts === 'object') {
    own = {}
    for (const [key, value] of Object.entries(opts)) if (!REGISTER_KEYS.has(key)) (own as Record<string, unknown>)[key] = value
  }
  const options = normalizeOptions(own as SseHubOptions)
  const pump = new Pump(options)
  const backend = options.backend as Backend
  const hub = new SseHub(pump, backend, options, fastify.log)
  await backend.start(hub.backendHost, options)

  fastify.decorate('sse', hub)
  // A handler that fails after reply.sse() closes its stream (handler-errors.ts).
  const handlers = watchHandlers(fastify)
  fastify.decorateReply('sse', function sse (this: FastifyReply, source?: SseSource | SseReplyOptions): SseStream {
    if (answered(this)) throw new FST_ERR_SSEHUB_REPLY_SENT()
    handlers.opened(this)
    return hub.reply(this, source)
  })

  // preClose, not onClose: onClose waits for in-flight requests, and a stream
  // never finishes by itself.
  fastify.addHook('preClose', async () => { await hub.close() })
  fastify.addHook('onClose', async () => { await backend.close() })
}

/**
 * The plugin: `fastify.register(ssePlugin, options)`. Adds `reply.sse()` and
 * `fastify.sse`. See {@link SseHubOptions} for the options.
 */
export const ssePlugin = fp(plugin, { fastify: '5.x', name: 'fastify-sse-hub' })
export default ssePlugin
export { ssePlugin as fastifySseHub }

export { SseStream, type SseSource, type CloseReason } from './stream.js'
export {
  SseHub, HEAD_EVENT, type SseStats, type SseReplyOptions, type SseHubEvents, type ResetReason,
  type Run, type RunEnd, type RunEndReason, type RunOutcome, type Producer
} from './hub/index.js'
export type { SseHubOptions } from './options.js'
export {
  defineChannel,
  type Channel,
  type ChannelBase,
  type ChannelOptions,
  type Snapshot,
  type EventOf,
  type ChannelHistoryOptions,
  type Topic,
  type Subscribable,
  type EventMap,
  type EventMeta,
  type EventHandler,
  type Authorize,
  type TopicParams
} from './channel.js'
export { memoryBackend } from './backends/memory.js'
export { formatId, parseId } from './ids.js'
export type { Backend, BackendHost, BackendStats, HubEvent, HistoryRead, HistoryLimits, ChannelHistory, RunStore } from './backend.js'
export type { SseMessage } from './encoder.js'
export * as errors from './errors.js'
