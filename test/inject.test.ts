/**
 * A stream that ends by itself works under `app.inject()` (light-my-request),
 * the way most Fastify apps test their routes, and is logged when it closes.
 */
import t from 'tap'
import { createParser, type EventSourceMessage } from 'eventsource-parser'
import { makeApp } from './helpers/index.js'

t.test('inject on an iterable stream returns 200, the SSE headers and both events, and logs the close', async t => {
  const { app, logs } = await makeApp(t, app => {
    app.get('/s', (req, reply) => {
      reply.sse(async function * () {
        yield { event: 'a', data: 1 }
        yield { data: 'x' }
      }())
    })
  }, { listen: false })

  const res = await app.inject({ method: 'GET', url: '/s' })
  t.equal(res.statusCode, 200)
  t.equal(res.headers['content-type'], 'text/event-stream; charset=utf-8')
  t.match(String(res.headers['cache-control']), /no-cache/)
  t.match(String(res.headers['cache-control']), /no-transform/)
  t.equal(res.headers['x-accel-buffering'], 'no')
  t.equal(res.headers['content-length'], undefined)

  const events: EventSourceMessage[] = []
  const retries: number[] = []
  const parser = createParser({ onEvent: e => { events.push(e) }, onRetry: r => { retries.push(r) } })
  parser.feed(res.payload)
  t.same(events, [
    { event: 'a', data: '1', id: undefined },
    { event: undefined, data: 'x', id: undefined }
  ], 'the payload parses as the two events')
  t.equal(retries.length, 1, 'one retry: at the start')

  const closed = logs.filter(l => l.msg === 'sse stream closed')
  t.equal(closed.length, 1, 'one close line')
  t.type(closed[0]?.responseTime, 'number')
  t.ok(Number.isFinite(closed[0]?.responseTime) && (closed[0]?.responseTime as number) >= 0, 'responseTime is a duration in ms')
  t.equal(closed[0]?.reason, 'end', 'closed because the iterable ended')
  t.equal(app.sse.stats().openStreams, 0)
})
