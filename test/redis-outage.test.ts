// Redis outages never cost a silent gap: streams stay open; a cut
// subscription catches up from the stream history; a Redis that comes back
// empty (new epoch) gets every stream a reset; publishes during an outage
// are refused with a coded error.
import t from 'tap'
import { Type } from '@sinclair/typebox'
import type { FastifyInstance } from 'fastify'
import type { Channel } from '../lib/index.js'
import { makeApp, SseClient } from './helpers/index.js'
import { RedisServer, redisSkip, epochOf } from './helpers/redis.js'
import { redisBackend } from '../lib/redis.js'

const skip = redisSkip()
const Tick = Type.Object({ n: Type.Number() })

async function twoApps (t: Parameters<Parameters<typeof t.test>[1]>[0], redis: RedisServer) {
  const channels = new Map<FastifyInstance, Channel<'ticks', { tick: typeof Tick }>>()
  const setup = (app: FastifyInstance): void => {
    const ticks = app.sse.channel('ticks', { events: { tick: Tick } })
    channels.set(app, ticks)
    app.get('/s', (req, reply) => reply.sse({ subscribe: [ticks] }))
  }
  const a = await makeApp(t, setup, { plugin: { backend: redisBackend({ url: redis.url }) } })
  const b = await makeApp(t, setup, { plugin: { backend: redisBackend({ url: redis.url }) } })
  return { a, b, pubA: channels.get(a.app)! }
}

t.test('the subscriber connection is killed while publishing: streams get exactly what they missed', { skip }, async t => {
  const redis = await new RedisServer().start()
  t.teardown(() => redis.stop())
  const { a, b, pubA } = await twoApps(t, redis)
  const client = await SseClient.open(b.url + '/s')
  await client.until('head', () => client.text.includes('id: '))

  const admin = redis.client()
  t.teardown(() => admin.quit())
  const published: string[] = []
  let killed = false
  // Publish steadily from A; part-way, cut every pub/sub connection (B's subscriber).
  for (let i = 0; i < 300; i++) {
    published.push(await pubA.publish('tick', { n: i }))
    if (i === 100) {
      await admin.client('KILL', 'TYPE', 'pubsub')
      killed = true
    }
    if (i % 10 === 0) await new Promise<void>(resolve => setImmediate(resolve))
  }
  t.ok(killed)
  await client.waitEvents(300, 20_000)
  t.same(client.events.map(e => e.id), published, 'every event once, in order, across the cut')
  t.equal(client.ending, null, 'the stream stayed open')
  t.equal(b.app.sse.stats().resets, 0, 'no reset was needed: history covered the gap')
  t.ok(b.logs.some(l => /redis connection lost/.test(l.msg)), 'the outage was logged')
  t.ok(b.logs.some(l => /redis connection recovered/.test(l.msg)), 'the recovery was logged')
  client.close()
  void a
})

t.test('Redis dies and comes back empty: publishes are refused meanwhile, then every stream is reset onto the new epoch', { skip }, async t => {
  const redis = await new RedisServer().start()
  t.teardown(() => redis.stop())
  const { a, b, pubA } = await twoApps(t, redis)
  const client = await SseClient.open(b.url + '/s')
  await client.until('head', () => client.text.includes('id: '))
  const before = await pubA.publish('tick', { n: 1 })
  await client.waitEvents(1)
  t.equal(client.events[0].id, before)

  await redis.kill()
  await a.untilLog('A notices the outage', l => /redis connection lost/.test(l.msg))
  t.equal(a.app.sse.stats().backend.connected, false, 'stats say Redis is away')
  await t.rejects(pubA.publish('tick', { n: 2 }), { code: 'FST_ERR_SSEHUB_BACKEND_UNAVAILABLE', statusCode: 503 })
  t.equal(client.ending, null, 'streams stay open during the outage')

  await redis.start()
  await a.untilLog('A recovers', l => /redis connection recovered/.test(l.msg), 15_000)
  await b.untilLog('B recovers', l => /redis connection recovered/.test(l.msg), 15_000)
  t.equal(a.app.sse.stats().backend.connected, true)
  const after = await pubA.publish('tick', { n: 3 })
  await client.waitEvents(3, 10_000)
  const [first, reset, next] = client.events
  t.equal(first.id, before)
  t.equal(reset.event, 'reset')
  t.match(JSON.parse(reset.data), { reason: 'epoch', lastEventId: before })
  t.not(epochOf(reset.id ?? ''), epochOf(before), 'the reset carries the new epoch')
  t.equal(next.id, after, 'then the new epoch\'s events')
  t.same(client.events.slice(3), [], 'nothing else')
  client.close()
})

t.test('FLUSHALL: the next event comes after a reset', { skip }, async t => {
  const redis = await new RedisServer().start()
  t.teardown(() => redis.stop())
  const { b, pubA } = await twoApps(t, redis)
  const client = await SseClient.open(b.url + '/s')
  await client.until('head', () => client.text.includes('id: '))
  const old = await pubA.publish('tick', { n: 1 })
  await client.waitEvents(1)
  const admin = redis.client()
  t.teardown(() => admin.quit())
  await admin.flushall()
  const fresh = await pubA.publish('tick', { n: 2 })
  await client.waitEvents(3)
  t.equal(client.events[1].event, 'reset')
  t.match(JSON.parse(client.events[1].data), { reason: 'epoch', lastEventId: old })
  t.equal(client.events[2].id, fresh)
  // An id from before the flush is from another epoch now.
  const late = await SseClient.open(b.url + '/s', { 'last-event-id': old })
  await late.waitEvents(1)
  t.match(JSON.parse(late.events[0].data), { reason: 'epoch' })
  client.close(); late.close()
})
