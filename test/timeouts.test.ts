/**
 * Fastify's timeouts must not cut a live stream (checklist I-05): with
 * connectionTimeout, requestTimeout and handlerTimeout all at 200 ms and no
 * heartbeat, a stream silent for a full second is still open and delivers.
 */
import t from 'tap'
import { makeApp, SseClient } from './helpers/index.js'

const TIMEOUT_MS = 200
/** How long the stream stays silent: five times the timeouts. */
const SILENCE_MS = 1_000

t.test('a stream silent for longer than connection, request and handler timeouts stays open', async t => {
  const { app, url } = await makeApp(t, app => {
    app.get('/s', (req, reply) => {
      const s = reply.sse()
      s.send({ event: 'one', data: 1 })
      // The silence under test: a server-side timer, not a wait in the test.
      const timer = setTimeout(() => s.send({ event: 'two', data: 2 }), SILENCE_MS)
      s.onClose(() => clearTimeout(timer))
    })
    // Control: a hijacked response that writes once and then stays silent,
    // with nothing turning the socket timeout off.
    app.get('/control', (req, reply) => {
      reply.hijack()
      reply.raw.writeHead(200, { 'content-type': 'text/plain' })
      reply.raw.write('x')
    })
  }, {
    plugin: { heartbeat: false },
    fastify: { connectionTimeout: TIMEOUT_MS, requestTimeout: TIMEOUT_MS, handlerTimeout: TIMEOUT_MS }
  })

  // The control proves the timeouts are live in this app: the same silence
  // gets a connection cut, so the stream below survives only because the
  // plugin disables the socket timeout for it.
  const control = await SseClient.open(url + '/control')
  t.teardown(() => control.close())
  t.equal(await control.waitEnd(SILENCE_MS * 3), 'error', 'control: a silent hijacked response is cut by the socket timeout')

  const c = await SseClient.open(url + '/s')
  t.teardown(() => c.close())
  t.equal(c.status, 200)
  await c.waitEvents(1)
  t.equal(c.events[0].event, 'one')
  const firstAt = Date.now()
  await c.waitEvents(2, SILENCE_MS * 5)
  const silence = Date.now() - firstAt
  t.same(c.events.map(e => [e.event, e.data]), [['one', '1'], ['two', '2']], 'both events arrived')
  t.ok(silence >= SILENCE_MS - 50, `the stream really was silent for ${silence} ms`)
  t.equal(c.ending, null, 'the body did not end')
  t.same(c.comments, [], 'no heartbeat kept it alive')
  t.equal(app.sse.stats().openStreams, 1, 'the server still counts the stream open')
})
