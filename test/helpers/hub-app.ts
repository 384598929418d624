/**
 * A hub app for resume tests: a plain channel `ticker` and a templated one
 * `rooms/:roomId`, one route that follows any mix of them, and a publisher
 * that records every event it published (id, seq, topic, n) as the oracle.
 *
 *   GET /follow?t=ticker,a,b   follows ticker, rooms/a and rooms/b
 *   (plus ?lastEventId=... for the query form of resume)
 */
import { Type } from '@sinclair/typebox'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import type { EventSourceMessage } from 'eventsource-parser'
import type { SseHubOptions, SseStream } from '../../lib/index.js'
import { makeApp, type T } from './index.js'

export const Ev = Type.Object({ topic: Type.String(), n: Type.Number(), pad: Type.Optional(Type.String()) })

export interface Published { id: string, seq: number, topic: string, n: number }

/** The seq inside a hub id `<epoch>-<seq>`. */
export function seqOf (id: string): number {
  const m = /^[a-z0-9]+-(\d+)$/.exec(id)
  if (m === null) throw new Error(`not a hub id: ${JSON.stringify(id)}`)
  return Number(m[1])
}

/** The hub events a client parsed, as { id, topic, n } (throws on anything that is not one). */
export function received (events: EventSourceMessage[]): Array<{ id: string, event: string, topic: string, n: number }> {
  return events.map(e => {
    const d = JSON.parse(e.data) as { topic?: string, n?: number }
    return { id: e.id as string, event: e.event as string, topic: d.topic as string, n: d.n as number }
  })
}

/** `roomAuthorize`: the `authorize` option of the `rooms/:roomId` channel. */
export async function hubApp (t: T, plugin: SseHubOptions = {}, roomAuthorize?: (request: FastifyRequest, params: Record<string, string>) => boolean | Promise<boolean>) {
  const streams: SseStream[] = []
  let ticker!: ReturnType<typeof declare>['ticker']
  let room!: ReturnType<typeof declare>['room']
  function declare (app: FastifyInstance) {
    const ticker = app.sse.channel('ticker', { events: { e: Ev } })
    const room = app.sse.channel('rooms/:roomId', { events: { e: Ev }, ...(roomAuthorize === undefined ? {} : { authorize: roomAuthorize }) })
    return { ticker, room }
  }
  const made = await makeApp(t, app => {
    ({ ticker, room } = declare(app))
    app.get('/follow', (req, reply) => {
      const names = String((req.query as { t?: string }).t ?? 'ticker').split(',')
      const stream = reply.sse({ subscribe: names.map(n => n === 'ticker' ? ticker : room.topic({ roomId: n })) })
      streams.push(stream)
      return stream
    })
  }, { plugin })
  const published: Published[] = []
  /** Publishes event number `n` on `topic` ('ticker' or a room id). */
  async function publish (topic: string, n: number, pad?: string): Promise<Published> {
    const data = pad === undefined ? { topic, n } : { topic, n, pad }
    const id = topic === 'ticker'
      ? await ticker.publish('e', data)
      : await room.topic({ roomId: topic }).publish('e', data)
    const p = { id, seq: seqOf(id), topic, n }
    published.push(p)
    return p
  }
  /** What a client following `topics` should get after `fromSeq`, in publish order. */
  function expected (topics: string[], fromSeq: number, toSeq = Infinity): Published[] {
    return published.filter(p => topics.includes(p.topic) && p.seq > fromSeq && p.seq <= toSeq)
  }
  return { ...made, ticker, room, publish, published, expected, streams }
}
