import t from 'tap'
import { Type } from '@sinclair/typebox'
import { makeApp, SseClient } from './helpers/index.js'

t.test('publish reaches subscribers; resume replays; unknown id resets', async t => {
  const { url, app } = await makeApp(t, app => {
    const ticker = app.sse.channel('ticker', {
      events: { price: Type.Object({ symbol: Type.String(), price: Type.Number() }) }
    })
    app.get('/ticker', (req, reply) => reply.sse({ subscribe: [ticker] }))
    app.post('/p', async (req) => ({ id: await ticker.publish('price', req.body as { symbol: string, price: number }) }))
  })
  const a = await SseClient.open(url + '/ticker')
  await a.until('head id', () => a.text.includes('id: '))
  const ids: string[] = []
  for (let i = 0; i < 5; i++) {
    const r = await fetch(url + '/p', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ symbol: 'X', price: i }) })
    ids.push((await r.json() as { id: string }).id)
  }
  await a.waitEvents(5)
  t.same(a.events.map(e => e.id), ids)
  t.same(a.events.map(e => e.event), Array(5).fill('price'))
  a.close()
  const b = await SseClient.open(url + '/ticker', { 'last-event-id': ids[1] })
  await b.waitEvents(3)
  t.same(b.events.map(e => e.id), ids.slice(2))
  const c = await SseClient.open(url + '/ticker?lastEventId=zzz')
  await c.waitEvents(1)
  t.equal(c.events[0].event, 'reset')
  t.same(JSON.parse(c.events[0].data), { lastEventId: 'zzz', reason: 'unknown' })
  t.equal(c.events[0].id, ids[4])
  const bad = await fetch(url + '/p', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ symbol: 'X', price: 'no' }) })
  t.equal(bad.status, 400)
  t.match(await bad.json(), { code: 'FST_ERR_SSEHUB_PAYLOAD_INVALID', message: /\/price/ })
  t.match(app.sse.stats(), { openStreams: 2, published: 5, resumes: 1, resets: 1 })
  b.close(); c.close()
})
