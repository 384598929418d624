/**
 * A route handler that throws, or whose promise rejects, after `reply.sse()`:
 * Fastify can no longer answer (the reply is hijacked) and only logs a
 * warning, so the stream would stay open with nothing behind it. That stream
 * is closed instead (and the error logged): `SseStream.handlerFailed`.
 *
 * How the plugin learns of the error costs nothing on requests that never
 * call `reply.sse()`. Every route declared after the plugin has its handler
 * wrapped (an `onRoute` hook): a synchronous throw is caught and rethrown,
 * and the handler's promise is watched only once `reply.sse()` has been
 * called on that request. A route declared before the plugin was registered
 * cannot be wrapped; the first stream one opens subscribes to Fastify's
 * diagnostics channel for handler errors instead, for the plugin's lifetime.
 * That subscription is the fallback, not the default, because while it is on
 * Fastify builds a tracing store for EVERY request (`{ request, reply, ... }`)
 * and the collector then keeps each request's objects well past its end:
 * measured on a targeted-delivery run (benchmark/README.md), ~2.5 KB promoted
 * to the old generation per request and 14-17% of the CPU in GC, against
 * ~0.2 KB and 2% without it.
 */
import { subscribe, unsubscribe } from 'node:diagnostics_channel'
import type { FastifyInstance, FastifyReply, FastifyRequest, RouteOptions } from 'fastify'
import { streamOf } from './stream.js'

/** Per request: where its handler stands, as the wrapper and `reply.sse()` see it. */
const kState = Symbol('fastify-sse-hub.handler')
/** The wrapped handler is running its synchronous part. */
const RUNNING = 1
/** `reply.sse()` was called during that synchronous part. */
const CALLED = 2
/** The handler returned (and is watched if it needed to be): nothing left to do. */
const DONE = 3

type State = null | typeof RUNNING | typeof CALLED | typeof DONE | PromiseLike<unknown>
type Stateful = FastifyRequest & { [kState]: State }

/** Set in the config of every route whose handler is wrapped (Fastify binds handlers, so the function itself is not seen again). */
const kWatched = Symbol('fastify-sse-hub.watched')

const HANDLER_ERROR = 'tracing:fastify.request.handler:error'
let fallbackUsers = 0
/** The handler of `reply`'s request failed: its stream, if one opened, ends. */
function failed (reply: FastifyReply | undefined, err: unknown): void {
  streamOf(reply?.raw)?.handlerFailed(err)
}

function onHandlerError (message: unknown): void {
  const store = message as { reply?: FastifyReply, error?: unknown } | null
  failed(store?.reply, store?.error)
}

function isThenable (value: unknown): value is PromiseLike<unknown> {
  return value !== null && (typeof value === 'object' || typeof value === 'function') && typeof (value as { then?: unknown }).then === 'function'
}

/** Closes the reply's stream, if one opened, when `pending` rejects. */
function watch (pending: PromiseLike<unknown>, reply: FastifyReply): void {
  // The handler returned the stream itself: awaiting it means the stream's end, never a handler error.
  if (pending === streamOf(reply.raw)) return
  pending.then(undefined, (err: unknown) => { failed(reply, err) })
}

/** Installs the watch on `fastify`: every route declared from now on, in every context, has its handler wrapped. */
export function watchHandlers (fastify: FastifyInstance): { opened: (reply: FastifyReply) => void } {
  fastify.decorateRequest(kState as unknown as string, null)
  fastify.addHook('onRoute', (route: RouteOptions) => {
    const handler = route.handler
    const wrapped = function sseWatched (this: FastifyInstance, request: FastifyRequest, reply: FastifyReply): unknown {
      const req = request as Stateful
      req[kState] = RUNNING
      let result: unknown
      try {
        result = handler.call(this, request, reply)
      } catch (err) {
        req[kState] = DONE
        failed(reply, err)
        throw err
      }
      const state = req[kState] as State
      req[kState] = DONE
      if (isThenable(result)) {
        if (state === CALLED) watch(result, reply)
        // reply.sse() may still come after an await: it will watch this.
        else req[kState] = result
      }
      return result
    }
    route.handler = wrapped as typeof handler
    route.config = { ...route.config, [kWatched]: true }
  })
  let subscribed = false
  fastify.addHook('onClose', async () => {
    if (subscribed && --fallbackUsers === 0) unsubscribe(HANDLER_ERROR, onHandlerError)
  })
  return {
    /** `reply.sse()` was called on this reply. */
    opened (reply: FastifyReply): void {
      const req = reply.request as Stateful
      const state = req[kState] as State
      if (state === RUNNING) req[kState] = CALLED
      else if (state === null) {
        // Called before the handler ran (from a hook: once the stream opens,
        // Fastify does not run the handler), or on a route this plugin could
        // not wrap (declared before it): only the latter needs the fallback.
        if (!subscribed && (reply.request.routeOptions.config as { [kWatched]?: boolean } | undefined)?.[kWatched] !== true) {
          subscribed = true
          if (fallbackUsers++ === 0) subscribe(HANDLER_ERROR, onHandlerError)
        }
      } else if (isThenable(state)) {
        req[kState] = DONE
        watch(state, reply)
      }
    }
  }
}
