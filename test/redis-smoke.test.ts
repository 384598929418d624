import t from 'tap'
import { Type } from '@sinclair/typebox'
import type { FastifyInstance } from 'fastify'
import { makeApp, SseClient } from './helpers/index.js'
import { RedisServer, redisSkip } from './helpers/redis.js'
import { redisBackend } from '../lib/redis.js'

const skip = redisSkip()

t.test('two instances share one hub through Redis', { skip }, async t => {
  const redis = await new RedisServer().start()
  t.teardown(() => redis.stop())
  const setup = (app: FastifyInstance): void => {
    const ticker = app.sse.channel('ticker', { events: { price: Type.Object({ p: Type.Number() }) } })
    app.get('/s', (req, reply) => reply.sse({ subscribe: [ticker] }))
    app.post('/p', async (req) => ({ id: await ticker.publish('price', req.body as { p: number }) }))
  }
  const a = await makeApp(t, setup, { plugin: { backend: redisBackend({ url: redis.url }) } })
  const b = await makeApp(t, setup, { plugin: { backend: redisBackend({ url: redis.url }) } })
  const onB = await SseClient.open(b.url + '/s')
  await onB.until('head', () => onB.text.includes('id: '))
  const ids: string[] = []
  for (let i = 0; i < 5; i++) {
    const r = await fetch(a.url + '/p', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ p: i }) })
    ids.push(((await r.json()) as { id: string }).id)
  }
  await onB.waitEvents(5)
  t.same(onB.events.map(e => e.id), ids, 'published on A, received on B in order')
  onB.close()
  const again = await SseClient.open(a.url + '/s', { 'last-event-id': ids[1] })
  await again.waitEvents(3)
  t.same(again.events.map(e => e.id), ids.slice(2), 'resumed on A with an id B delivered')
  t.match(a.app.sse.stats().backend, { kind: 'redis', connected: true })
  again.close()
})
