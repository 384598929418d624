/**
 * fastify-sse-hub: Server-Sent Events for Fastify, with typed pub/sub channels.
 * The plugin shell: options, decorators, type augmentation, shutdown.
 */
import fp from 'fastify-plugin'
import type { FastifyInstance, FastifyPluginCallback, FastifyReply } from 'fastify'
import { normalizeOptions, type SseHubOptions } from './options.js'
import { Pump, SseStream, type SseSource } from './stream.js'
import { SseHub } from './hub.js'
import { FST_ERR_SSEHUB_ALREADY_REGISTERED, FST_ERR_SSEHUB_REPLY_SENT, FST_ERR_SSEHUB_SOURCE_INVALID } from './errors.js'

/** Options of `reply.sse(options)`. */
export interface SseReplyOptions {}

declare module 'fastify' {
  interface FastifyReply {
    /**
     * Turns this reply into an event stream and returns its handle.
     * - `reply.sse()`: an open stream to `send()` to by hand;
     * - `reply.sse(iterable)`: every value of an (async) iterable is sent as
     *   one event, paced by the socket; the response ends when the iterable
     *   ends, and `return()` is called on it if the client goes away first;
     * - `reply.sse(options)`: see {@link SseReplyOptions}.
     * A `HEAD` request gets the headers and an empty body.
     */
    sse: (source?: SseSource | SseReplyOptions) => SseStream
  }
  interface FastifyInstance {
    /** The hub of fastify-sse-hub: stats and shutdown of this process's streams. */
    sse: SseHub
  }
}

/** Keys Fastify itself reads from register options; not ours to check. */
const REGISTER_KEYS = new Set(['prefix', 'logLevel', 'logSerializers'])

const plugin: FastifyPluginCallback<SseHubOptions> = (fastify: FastifyInstance, opts, done) => {
  if (fastify.hasReplyDecorator('sse') || fastify.hasDecorator('sse')) {
    done(new FST_ERR_SSEHUB_ALREADY_REGISTERED())
    return
  }
  const own: Record<string, unknown> = {}
  for (const [key, value] of Object.entries(opts ?? {})) if (!REGISTER_KEYS.has(key)) own[key] = value
  const options = normalizeOptions(own as SseHubOptions)
  const pump = new Pump(options)
  const hub = new SseHub(pump)

  fastify.decorate('sse', hub)
  fastify.decorateReply('sse', function sse (this: FastifyReply, source?: SseSource | SseReplyOptions): SseStream {
    if (this.sent || this.raw.headersSent) throw new FST_ERR_SSEHUB_REPLY_SENT()
    let iterable: SseSource | null = null
    if (source !== undefined) {
      if (source === null || typeof source !== 'object') {
        throw new FST_ERR_SSEHUB_SOURCE_INVALID(source === null ? 'null' : typeof source)
      }
      if (Symbol.asyncIterator in source || Symbol.iterator in source) iterable = source as SseSource
    }
    const stream = new SseStream(pump, this.request, this)
    this.hijack()
    stream.open(this)
    if (pump.closing) {
      // Only reached with return503OnClosing: false. A 503 would make a
      // native EventSource give up for good; a retry and an end do not.
      stream.shutdown(pump.jitteredRetry(options.retry === false ? 3_000 : options.retry, options.shutdownJitter))
    } else if (iterable !== null) {
      void stream.pipeFrom(iterable)
    }
    return stream
  })

  // preClose, not onClose: onClose waits for in-flight requests, and a stream
  // never finishes by itself.
  fastify.addHook('preClose', (hookDone) => {
    pump.shutdown()
    hookDone()
  })
  done()
}

/**
 * The plugin: `fastify.register(ssePlugin, options)`. Adds `reply.sse()` and
 * `fastify.sse`. See {@link SseHubOptions} for the options.
 */
export const ssePlugin = fp(plugin, { fastify: '5.x', name: 'fastify-sse-hub' })
export default ssePlugin
export { ssePlugin as fastifySseHub }

export { SseStream, type SseSource, type CloseReason } from './stream.js'
export { SseHub, type SseStats } from './hub.js'
export type { SseHubOptions } from './options.js'
export type { SseMessage } from './encoder.js'
export * as errors from './errors.js'
