/**
 * Apps for the Redis fault suites: one templated channel `rooms/:id` with
 * payload `{ n }`, `GET /s?t=a,b` following rooms a and b, and a publisher
 * that keeps the log of acknowledged publishes (the oracle) and the payload
 * numbers of refused ones (which may still have been published).
 */
import { Type } from '@sinclair/typebox'
import type { FastifyInstance } from 'fastify'
import { makeApp, SseClient, type T } from './index.js'
import { redisBackend, type RedisBackendOptions } from '../../lib/redis.js'
import type { Acked, Got } from './redis.js'

const N = Type.Object({ n: Type.Number() })

export interface Oracle {
  acked: Acked[]
  /** Payload numbers of refused publishes, with the refusal's code. */
  refused: Map<number, string>
  /** The longest a publish took (ms), acknowledged or refused. */
  longestMs: number
}

export function oracle (): Oracle {
  return { acked: [], refused: new Map(), longestMs: 0 }
}

export async function roomsApp (t: T, backend: RedisBackendOptions, log: Oracle) {
  let room!: ReturnType<typeof declare>
  function declare (app: FastifyInstance) {
    return app.sse.channel('rooms/:id', { events: { e: N } })
  }
  const made = await makeApp(t, app => {
    room = declare(app)
    app.get('/s', (req, reply) => {
      const names = String((req.query as { t?: string }).t ?? 'a').split(',')
      return reply.sse({ subscribe: names.map(id => room.topic({ id })) })
    })
  }, { plugin: { backend: redisBackend(backend) } })
  /** Publishes `n` on room `topic`; records it as acknowledged or refused; never throws. */
  async function publish (topic: string, n: number): Promise<string | null> {
    const began = performance.now()
    try {
      const id = await room.topic({ id: topic }).publish('e', { n })
      log.acked.push({ id, n, topic })
      return id
    } catch (err) {
      log.refused.set(n, (err as { code?: string }).code ?? String(err))
      return null
    } finally {
      log.longestMs = Math.max(log.longestMs, performance.now() - began)
    }
  }
  /** Opens a subscriber of `topics`; resolves once its head (or first event) arrived. */
  async function subscribe (topics: string[], lastEventId?: string): Promise<SseClient> {
    const c = await SseClient.open(`${made.url}/s?t=${topics.join(',')}`, lastEventId === undefined ? {} : { 'last-event-id': lastEventId })
    t.teardown(() => c.close())
    // A resume may have nothing to send yet; a fresh subscriber always gets its head.
    if (lastEventId === undefined) await c.until('head', () => c.heads.length > 0 || c.events.length > 0, 10_000)
    return c
  }
  return { ...made, room, publish, subscribe }
}

/** A client's events as the sequence checker takes them. */
export function got (c: SseClient): Got[] {
  return c.events.map(e => ({ id: e.id, event: e.event, data: e.data }))
}

/** The id a client started from: its head event, or the Last-Event-ID it resumed with. */
export function startOf (c: SseClient, resumedFrom?: string): string | undefined {
  return resumedFrom ?? c.heads[0]?.id
}
