/**
 * fastify-sse-hub/testing: a subscribe stream, which never ends by itself,
 * tested through inject (no port), as the README's "Testing" section shows.
 */
import t from 'tap'
import { Type } from '@sinclair/typebox'
import { collectEvents, injectSse } from '../lib/testing.js'
import { makeApp, waitFor } from './helpers/index.js'

async function appWithTicker (t: Tap.Test) {
  const closes: string[] = []
  const Price = Type.Object({ symbol: Type.String(), price: Type.Number() })
  let ticker = null as unknown as ReturnType<typeof declare>
  const declare = (app: Parameters<Parameters<typeof makeApp>[1]>[0]) => app.sse.channel('ticker', { events: { price: Price } })
  const { app } = await makeApp(t, app => {
    ticker = declare(app)
    const secret = app.sse.channel('secret', { events: { x: Type.String() }, authorize: () => false })
    app.sse.on('disconnect', (stream, reason) => { closes.push(reason) })
    app.get('/ticker', (req, reply) => { reply.sse({ subscribe: [ticker] }) })
    app.get('/secret', (req, reply) => { reply.sse({ subscribe: [secret] }) })
    app.get('/count', (req, reply) => { reply.sse([{ event: 'n', data: 1 }, { event: 'n', data: 2 }, { data: 'three' }]) })
  }, { listen: false })
  return { app, ticker, closes }
}

t.test('injectSse: a subscribe stream opens, receives what is published after, and closes as a client leaving', async t => {
  const { app, ticker, closes } = await appWithTicker(t)
  const stream = await injectSse(app, '/ticker')
  t.equal(stream.statusCode, 200)
  t.equal(stream.headers['content-type'], 'text/event-stream; charset=utf-8')
  const first = await ticker.publish('price', { symbol: 'ACME', price: 1 })
  const second = await ticker.publish('price', { symbol: 'ACME', price: 2 })
  const events = await stream.take(2)
  t.same(events, [
    { event: 'price', data: { symbol: 'ACME', price: 1 }, id: first },
    { event: 'price', data: { symbol: 'ACME', price: 2 }, id: second }
  ], 'both events, data parsed, ids as publish returned them (the hub\'s head marker skipped)')
  t.equal(app.sse.stats().openStreams, 1)
  stream.close()
  await waitFor('the server to see the client leave', () => closes.length === 1, wake => {
    const on = (): void => wake()
    app.sse.on('disconnect', on)
    return () => app.sse.off('disconnect', on)
  })
  t.same(closes, ['client'], 'closed on the server with reason client')
  t.equal(app.sse.stats().openStreams, 0)

  // Resume: a new stream with the first id gets the second event from history.
  const resumed = await injectSse(app, { url: '/ticker', lastEventId: first })
  t.same(await resumed.take(1), [{ event: 'price', data: { symbol: 'ACME', price: 2 }, id: second }], 'lastEventId resumes from history')
  resumed.close()
})

t.test('takes pending together get successive events, in order', async t => {
  const { app, ticker } = await appWithTicker(t)
  const stream = await injectSse(app, '/ticker')
  t.teardown(() => stream.close())
  const a = stream.take(1)
  const b = stream.take(1)
  await ticker.publish('price', { symbol: 'A', price: 1 })
  await ticker.publish('price', { symbol: 'B', price: 2 })
  const [[first], [second]] = await Promise.all([a, b])
  t.same([first.data, second.data], [{ symbol: 'A', price: 1 }, { symbol: 'B', price: 2 }])
  t.equal(stream.events.length, 2, 'events holds everything received')
})

t.test('collectEvents: a stream that produces by itself, in one call', async t => {
  const { app } = await appWithTicker(t)
  t.same(await collectEvents(app, '/count', 3), [
    { event: 'n', data: 1 },
    { event: 'n', data: 2 },
    { event: 'message', data: 'three' }
  ], 'three events; an unnamed one is "message"; non-JSON data stays text')
})

t.test('a refusal is a plain response: status and body', async t => {
  const { app } = await appWithTicker(t)
  const stream = await injectSse(app, '/secret')
  t.equal(stream.statusCode, 403)
  t.match(JSON.parse(await stream.body()), { code: 'FST_ERR_SSEHUB_FORBIDDEN' })
  await t.rejects(stream.take(1), /the stream ended after 0 of the 1 events/, 'take() on an ended response says so at once')
})

t.test('take() is bounded: too few events reject with what did arrive', async t => {
  const { app, ticker } = await appWithTicker(t)
  const stream = await injectSse(app, { url: '/ticker', timeout: 200 })
  t.teardown(() => stream.close())
  await ticker.publish('price', { symbol: 'A', price: 1 })
  await t.rejects(stream.take(2), /1 of the 2 events asked for arrived within 200 ms: \[\{"event":"price"/)
})
